// Adaptive bitrate in a real player: opens the livecast player page on a stream with
// renditions in headless Chromium, checks the quality menu, lets hls.js play, then throttles
// the page's network through the DevTools protocol (Network.emulateNetworkConditions) to
// THROTTLE_KBPS and measures how long hls.js takes to switch down to the lowest rendition, and
// whether playback goes on without a stall afterwards.
// The page must expose its Hls instance as window.livecast.hls, the levels as
// window.livecast.levels ({height, bitrate}) and the current level as window.livecast.level, as
// the player page does.
// Usage: node abr.mjs <player-url>
// Prints one JSON line; exits 0 when hls.js switched down and kept playing, 1 otherwise.
import { launchChromium } from "./chromium.mjs";

const [url] = process.argv.slice(2);
const THROTTLE_KBPS = Number(process.env.THROTTLE_KBPS || 500);
const SWITCH_TIMEOUT_MS = Number(process.env.SWITCH_TIMEOUT_MS || 40000);
const KEEP_PLAYING_MS = Number(process.env.KEEP_PLAYING_MS || 8000);
if (!url) {
  console.error("usage: node abr.mjs <player-url>");
  process.exit(2);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const browser = await launchChromium();
let result = { ok: false };
try {
  const page = await browser.newPage();
  await page.goto(url);
  await page.waitForFunction(() => window.livecast && window.livecast.levels.length >= 2, null, { timeout: 40000 });
  // The player counts stalls: hls.js's buffer stall errors and the video's waiting events.
  await page.evaluate(() => {
    window.abr = { stalls: 0, switches: [] };
    document.getElementById("video").addEventListener("waiting", () => { window.abr.stalls += 1; });
    window.livecast.hls.on(Hls.Events.LEVEL_SWITCHED, (_e, d) => window.abr.switches.push([performance.now(), d.level]));
  });
  // The player page's quality menu (a bare page without one gives null).
  const menu = await page.evaluate(() => {
    const select = document.getElementById("quality");
    return select ? [...select.options].map((o) => o.textContent) : null;
  });
  const levels = await page.evaluate(() => window.livecast.levels);
  await page.waitForFunction(() => document.getElementById("video").currentTime > 2, null, { timeout: 40000 });
  const lowest = levels.reduce((best, l, i) => (l.bitrate < levels[best].bitrate ? i : best), 0);
  const before = await page.evaluate(() => window.livecast.level);

  const cdp = await page.context().newCDPSession(page);
  await cdp.send("Network.enable");
  await cdp.send("Network.emulateNetworkConditions", {
    offline: false,
    latency: 20,
    downloadThroughput: (THROTTLE_KBPS * 1000) / 8,
    uploadThroughput: -1,
  });
  const throttledAt = await page.evaluate(() => performance.now());
  let switchedAfterMs = null;
  const deadline = Date.now() + SWITCH_TIMEOUT_MS;
  while (Date.now() < deadline) {
    const level = await page.evaluate(() => window.livecast.level);
    if (level === lowest) {
      const at = await page.evaluate(
        (low) => (window.abr.switches.filter(([, l]) => l === low).pop() || [performance.now()])[0], lowest);
      switchedAfterMs = Math.max(0, at - throttledAt);
      break;
    }
    await sleep(250);
  }
  // Once on the low rendition, playback goes on at the throttled rate with no stall.
  const atSwitch = await page.evaluate(() => ({ t: document.getElementById("video").currentTime, stalls: window.abr.stalls }));
  await sleep(KEEP_PLAYING_MS);
  const after = await page.evaluate(() => ({
    t: document.getElementById("video").currentTime, stalls: window.abr.stalls, level: window.livecast.level,
    fatal: window.livecast.fatal, errors: window.livecast.errors.slice(-5),
  }));
  const advanced = after.t - atSwitch.t;
  // A stall is what a starved player shows (a `waiting` event or hls.js's buffer stall); the
  // position must also move on, but a busy machine decodes behind the wall clock (6.3 s in 8 s
  // seen with no stall), so most of the time, not all of it.
  result = {
    ok: switchedAfterMs !== null && after.level === lowest && !after.fatal
      && after.stalls === atSwitch.stalls && advanced >= (KEEP_PLAYING_MS / 1000) * 0.6,
    menu, levels, before, lowest, switchedAfterMs, advanced, stallsAfterSwitch: after.stalls - atSwitch.stalls,
    stallsBefore: atSwitch.stalls, after, throttleKbps: THROTTLE_KBPS,
  };
} catch (e) {
  result = { ok: false, error: String(e) };
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
