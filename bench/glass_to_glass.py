#!/usr/bin/env python3
"""Live latency in the real player: hls.js in headless Chromium, livecast against nginx-rtmp.

A real ffmpeg publishes a 720p30 clip with a 2 s GOP in real time (`-re -c copy`). Viewers:
- livecast: `livecast up` (ingest with its defaults: fMP4, LL-HLS 250 ms parts; three
  front-ends behind the balancer); the player page /?stream=g2g, hls.js lowLatencyMode.
- nginx-rtmp: `hls_fragment 2s`, served by the same nginx over HTTP, a page with the same
  hls.js build and the same configuration (lowLatencyMode, catch-up up to 1.5x, as the
  livecast player page).
e2e/latency.mjs reads `hls.latency` (hls.js's distance from the live edge) once a second for
20 s after 10 s of playback, and for livecast also now - `hls.playingDate` (from
PROGRAM-DATE-TIME, i.e. from when the ingest received the frame).

Prints the medians and the ratio livecast / nginx-rtmp.
Needs: ffmpeg, nginx + libnginx-mod-rtmp, chromium, `npm ci --prefix e2e` and the player's
`npm ci --prefix crates/livecast-web/player`.
Usage: bench/glass_to_glass.py
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from common import ROOT, free_port, livecast_up, player_site, make_clip, nginx_rtmp, wait_http, wait_port

CLIP_SECONDS = 60
HLS_JS = os.path.join(ROOT, "crates", "livecast-web", "player", "node_modules", "hls.js", "dist", "hls.min.js")

PAGE = """<!doctype html><meta charset="utf-8"><video id="video" muted autoplay playsinline></video>
<script src="/hls.min.js"></script><script>
const hls = new Hls({ lowLatencyMode: true, maxLiveSyncPlaybackRate: 1.5 });
window.livecast = { hls };
hls.loadSource(new URLSearchParams(location.search).get("src"));
hls.attachMedia(document.getElementById("video"));
</script>
"""


def sample(url):
    out = subprocess.run(["node", os.path.join(ROOT, "e2e", "latency.mjs"), url],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "WARMUP": "10"})
    try:
        result = json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise SystemExit(f"latency.mjs failed: {out.stdout} {out.stderr}")
    if not result.get("ok"):
        raise SystemExit(f"no latency measured at {url}: {result}")
    return result


def publish(clip, port):
    return subprocess.Popen(["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-i", clip, "-c", "copy",
                             "-f", "flv", f"rtmp://127.0.0.1:{port}/live/g2g"])


def watch(server, clip, rtmp, http, ready_path, page):
    """Once `server` is up, publishes the clip, lets the first segment appear, samples the
    latency of `page`, and stops publisher and server."""
    try:
        wait_port(rtmp)
        wait_http(http, ready_path)
        publisher = publish(clip, rtmp)
        time.sleep(3)
        result = sample(f"http://127.0.0.1:{http}{page}")
        publisher.kill()
        return result
    finally:
        server.terminate()
        server.wait()


def run_livecast(work, clip):
    stack, rtmp, http = livecast_up(work)
    return watch(stack, clip, rtmp, http, "/", "/?stream=g2g")


def run_nginx(work, clip):
    rtmp, http = free_port(), free_port()
    root = os.path.join(work, "www")
    os.makedirs(os.path.join(root, "hls"))
    shutil.copy(HLS_JS, root)
    with open(os.path.join(root, "latency.html"), "w") as f:
        f.write(PAGE)
    os.system(f"chmod -R a+rwX {work}")
    nginx = nginx_rtmp(work, "nginx", rtmp, os.path.join(root, "hls"), http=player_site(http, root))
    return watch(nginx, clip, rtmp, http, "/latency.html", "/latency.html?src=/hls/g2g/index.m3u8")


def main():
    for tool in ("ffmpeg", "nginx", "node"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing")
    cache = os.path.join(ROOT, "target", "bench")
    os.makedirs(cache, exist_ok=True)
    clip = os.path.join(cache, f"clip-720p-{CLIP_SECONDS}s.flv")
    make_clip(clip, CLIP_SECONDS)
    work = tempfile.mkdtemp(prefix="livecast-g2g-")
    os.chmod(work, 0o755)  # nginx workers run as another user
    try:
        nginx_work = os.path.join(work, "nginx")
        os.makedirs(nginx_work)
        results = {"nginx-rtmp": run_nginx(nginx_work, clip), "livecast": run_livecast(work, clip)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("live latency in hls.js (headless Chromium), 720p30, 2 s GOP")
    medians = {}
    for name, r in results.items():
        medians[name] = statistics.median(r["latency"])
        pdt = f" now-playingDate median={statistics.median(r['pdt']):.3f}s" if r["pdt"] else ""
        print(f"{name:<12} hls.latency median={medians[name]:.3f}s min={min(r['latency']):.3f}s "
              f"max={max(r['latency']):.3f}s samples={len(r['latency'])} stalls={r['stalls']}{pdt}")
    print(f"ratio livecast/nginx-rtmp (median): {medians['livecast'] / medians['nginx-rtmp']:.3f}")
    print(f"target livecast <= 1.5 s: {'met' if medians['livecast'] <= 1.5 else 'NOT met'}")


if __name__ == "__main__":
    sys.exit(main())
