// Opens a livecast-loadtest report.html in headless Chromium, offline, and checks that its
// charts were drawn: every chart has a canvas, and each canvas has painted pixels.
// Usage: node report.mjs <report.html> <screenshot.png>
// Prints one JSON line with what it saw; exits 0 on success, 1 on failure.
import { launchChromium } from "./chromium.mjs";
import { pathToFileURL } from "node:url";

const [file, screenshot] = process.argv.slice(2);
if (!file || !screenshot) {
  console.error("usage: node report.mjs <report.html> <screenshot.png>");
  process.exit(2);
}
const EXPECT = Number(process.env.EXPECT_CHARTS || 6);

const browser = await launchChromium();
let result = { ok: false };
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 1800 } });
  const errors = [];
  const requests = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  // Self-contained: nothing but the file itself may be fetched.
  page.on("request", (r) => { if (!r.url().startsWith("file:")) requests.push(r.url()); });
  await page.goto(pathToFileURL(file).href);
  await page.waitForFunction(() => document.body.dataset.charts !== undefined, null, { timeout: 15000 });
  const seen = await page.evaluate(() => {
    const canvases = [...document.querySelectorAll("canvas")];
    const painted = canvases.map((c) => {
      const ctx = c.getContext("2d");
      const { data } = ctx.getImageData(0, 0, c.width, c.height);
      let n = 0;
      for (let i = 3; i < data.length; i += 4) if (data[i] > 0) n++;
      return n;
    });
    return { charts: canvases.length, painted, noData: document.querySelectorAll(".chart p").length,
             title: document.title, verdict: document.querySelector("p").textContent };
  });
  await page.screenshot({ path: screenshot, fullPage: true });
  result = { ...seen, errors, requests, screenshot };
  result.ok = seen.charts >= EXPECT && seen.painted.every((n) => n > 100) && errors.length === 0 &&
    requests.length === 0;
} catch (e) {
  result.error = String(e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
