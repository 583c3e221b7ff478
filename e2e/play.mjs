// Opens the livecast player page in headless Chromium and checks that hls.js really plays:
// video.currentTime must advance by at least MIN_ADVANCE seconds with no fatal hls.js error.
// Usage: node play.mjs <player-url> <screenshot.png>
// Prints one JSON line with what it saw; exits 0 on success, 1 on failure.
import { launchChromium } from "./chromium.mjs";

const [url, screenshot] = process.argv.slice(2);
const MIN_ADVANCE = Number(process.env.MIN_ADVANCE || 3);
const TIMEOUT_MS = Number(process.env.PLAY_TIMEOUT_MS || 40000);
if (!url || !screenshot) {
  console.error("usage: node play.mjs <player-url> <screenshot.png>");
  process.exit(2);
}

const browser = await launchChromium();
let result = { ok: false };
try {
  const page = await browser.newPage();
  const consoleErrors = [];
  page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
  await page.goto(url);
  await page.waitForFunction(() => window.livecast && window.livecast.hls, null, { timeout: TIMEOUT_MS });
  const state = () => page.evaluate(() => {
    const v = document.getElementById("video");
    return { currentTime: v.currentTime, fatal: window.livecast.fatal, stream: window.livecast.stream,
             errors: window.livecast.errors.slice(-5), hlsVersion: window.Hls && Hls.version,
             viewers: window.livecast.viewers, watching: document.getElementById("watching").textContent,
             // How many of the page's requests went over each protocol ("h2", "http/1.1").
             protocols: performance.getEntriesByType("resource").reduce(
               (seen, e) => ({ ...seen, [e.nextHopProtocol]: (seen[e.nextHopProtocol] || 0) + 1 }), {}) };
  });
  // Measure from the first moment playback is under way.
  await page.waitForFunction(() => document.getElementById("video").currentTime > 0, null, { timeout: TIMEOUT_MS });
  const first = await state();
  const deadline = Date.now() + TIMEOUT_MS;
  let last = first;
  while (Date.now() < deadline && !last.fatal && last.currentTime - first.currentTime < MIN_ADVANCE) {
    await new Promise((r) => setTimeout(r, 250));
    last = await state();
  }
  // The viewer count arrives from the shipper within a few refreshes.
  if (process.env.EXPECT_VIEWERS) {
    const until = Date.now() + 15000;
    while (Date.now() < until && !((last = await state()).viewers >= 1)) {
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  await page.screenshot({ path: screenshot });
  const advanced = last.currentTime - first.currentTime;
  const viewersOk = !process.env.EXPECT_VIEWERS || last.viewers >= 1;
  result = { ok: !last.fatal && advanced >= MIN_ADVANCE && viewersOk, advanced, first, last, consoleErrors };
} catch (e) {
  result = { ok: false, error: String(e) };
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
