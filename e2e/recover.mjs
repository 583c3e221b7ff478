// Watches two viewers of one live stream in headless Chromium for a while and reports what
// they saw, one JSON line every 250 ms, so that the test driving the publisher can drop it and
// bring it back and see whether playback resumes by itself:
//   - "page": the livecast player page (/?stream=NAME);
//   - "plain": a bare page that plays the stream with hls.js and its default settings
//     (served at the same origin, loading the front-end's self-hosted hls.js).
// Usage: node recover.mjs <origin> <stream> <seconds>
// Each line: {"t": ms since start, "page": {time, played, fatal, restarts, status},
// "plain": {time, played, fatal}}. "played" is the media played since the start, summed over
// the samples: it keeps counting across a page's restart, which moves currentTime back, and a
// jump (a seek to the live edge) is not counted as played.
import { launchChromium } from "./chromium.mjs";

const [origin, stream, seconds] = process.argv.slice(2);
if (!origin || !stream || !seconds) {
  console.error("usage: node recover.mjs <origin> <stream> <seconds>");
  process.exit(2);
}
const playlist = `/hls/${stream}/index.m3u8`;
const plainPage = `<!doctype html><html><body><video id="video" muted playsinline></video>
<script src="/assets/hls.min.js"></script>
<script>
  window.state = { fatal: null, errors: [] };
  const video = document.getElementById("video");
  const hls = new Hls();
  hls.on(Hls.Events.ERROR, (_e, data) => {
    window.state.errors.push(data.details);
    if (data.fatal) window.state.fatal = data.details + (data.error ? ": " + data.error.message : "");
  });
  hls.loadSource(${JSON.stringify(playlist)});
  hls.attachMedia(video);
  video.play().catch(() => {});
</script></body></html>`;

const browser = await launchChromium();
try {
  const page = await browser.newPage();
  await page.goto(`${origin}/?stream=${encodeURIComponent(stream)}`);
  const plain = await browser.newPage();
  await plain.route(`${origin}/plain-hls-js.html`, (route) =>
    route.fulfill({ status: 200, contentType: "text/html", body: plainPage }));
  await plain.goto(`${origin}/plain-hls-js.html`);
  const started = Date.now();
  // Per viewer: the previous sample's currentTime and wall clock, and the media played so far.
  const progress = { page: { time: null, at: 0, played: 0 }, plain: { time: null, at: 0, played: 0 } };
  const account = (who, time, at) => {
    const p = progress[who];
    if (p.time !== null) {
      const moved = time - p.time;
      // Playback moves at most at hls.js's catch-up rate (below 2x); more than that is a seek.
      if (moved > 0 && moved <= 2 * ((at - p.at) / 1000) + 0.1) p.played += moved;
    }
    p.time = time;
    p.at = at;
    return p.played;
  };
  while (Date.now() - started < Number(seconds) * 1000) {
    const [p, q] = await Promise.all([
      page.evaluate(() => ({
        time: document.getElementById("video").currentTime,
        fatal: window.livecast.fatal,
        restarts: window.livecast.restarts,
        status: document.getElementById("status").textContent,
      })),
      plain.evaluate(() => ({
        time: document.getElementById("video").currentTime,
        fatal: window.state.fatal,
      })),
    ]);
    const at = Date.now();
    p.played = account("page", p.time, at);
    q.played = account("plain", q.time, at);
    console.log(JSON.stringify({ t: at - started, page: p, plain: q }));
    await new Promise((r) => setTimeout(r, 250));
  }
} finally {
  await browser.close();
}
