// Samples hls.js's live latency in headless Chromium: opens a page that exposes its Hls
// instance as window.livecast.hls, waits WARMUP seconds of playback, then reads hls.latency
// (distance from the live edge) and, where the playlist has PROGRAM-DATE-TIME,
// Date.now() - hls.playingDate, once a second for SAMPLES seconds.
// Usage: node latency.mjs <page-url>   (env WARMUP, SAMPLES, CHROMIUM_PATH)
// Prints one JSON line: {ok, latency: [...], pdt: [...], stalls}.
import { chromium } from "playwright-core";

const [url] = process.argv.slice(2);
const WARMUP = Number(process.env.WARMUP || 8);
const SAMPLES = Number(process.env.SAMPLES || 20);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required"],
});
let result = { ok: false };
try {
  const page = await browser.newPage();
  await page.goto(url);
  await page.waitForFunction(
    () => window.livecast && window.livecast.hls && document.querySelector("video").currentTime > 0,
    null, { timeout: 30000 });
  await new Promise((r) => setTimeout(r, WARMUP * 1000));
  const latency = [], pdt = [];
  let stalls = 0, last = -1;
  for (let i = 0; i < SAMPLES; i++) {
    const s = await page.evaluate(() => {
      const hls = window.livecast.hls, v = document.querySelector("video");
      return { latency: hls.latency, date: hls.playingDate ? hls.playingDate.getTime() : null,
               now: Date.now(), time: v.currentTime };
    });
    if (Number.isFinite(s.latency)) latency.push(s.latency);
    if (s.date) pdt.push((s.now - s.date) / 1000);
    if (s.time <= last) stalls++;
    last = s.time;
    await new Promise((r) => setTimeout(r, 1000));
  }
  result = { ok: latency.length > 0, latency, pdt, stalls };
} catch (e) {
  result = { ok: false, error: String(e) };
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
