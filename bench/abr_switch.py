#!/usr/bin/env python3
"""Rendition switch time in the real player: hls.js in headless Chromium, livecast against
nginx-rtmp, the same two renditions from the same kind of encoder, the same throttle.

One ffmpeg per system publishes a test signal as two renditions with keyframes at the same
frames every second (640x360 at 1.5 Mb/s, 320x180 at 150 kb/s):
- livecast: `livecast up` with its defaults (fMP4, LL-HLS 250 ms parts, 2 s segments),
  publishes `abr@360p` and `abr@180p`; the player page plays `/hls/abr/master.m3u8`.
- nginx-rtmp: `hls_fragment 2s` with `hls_variant`, publishes `abr_360p` and `abr_180p`;
  a bare page with the same hls.js build and configuration plays nginx-rtmp's
  `/hls/abr.m3u8`.
e2e/abr.mjs waits for playback, throttles the page's network to --kbps through the DevTools
protocol and measures the time until hls.js plays the low rendition, then checks that
playback goes on for 8 s without a stall.

Runs the two one after the other, --rounds times, alternating the order; prints each switch
time and stall count, and the ratio of the medians livecast / nginx-rtmp (lower is faster).
Needs: ffmpeg, nginx + libnginx-mod-rtmp, chromium, `npm ci --prefix e2e` and the player's
`npm ci --prefix crates/livecast-web/player`.
Usage: bench/abr_switch.py [--rounds 3] [--kbps 600]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from common import ROOT, free_port, livecast_up, player_site, nginx_rtmp, stop, wait_http, wait_port

HLS_JS = os.path.join(ROOT, "crates", "livecast-web", "player", "node_modules", "hls.js", "dist", "hls.min.js")
OUTPUTS = (("360p", "640x360", "1500k"), ("180p", "320x180", "150k"))

# The player page's hls.js configuration, and what e2e/abr.mjs reads.
PAGE = """<!doctype html><meta charset="utf-8"><video id="video" muted autoplay playsinline></video>
<script src="/hls.min.js"></script><script>
const hls = new Hls({ lowLatencyMode: true, maxLiveSyncPlaybackRate: 1.5 });
window.livecast = { hls, levels: [], level: null, fatal: null, errors: [] };
hls.on(Hls.Events.MANIFEST_PARSED, (_e, d) => {
  window.livecast.levels = d.levels.map((l) => ({ height: l.height, bitrate: l.bitrate }));
});
hls.on(Hls.Events.LEVEL_SWITCHED, (_e, d) => { window.livecast.level = d.level; });
hls.on(Hls.Events.ERROR, (_e, d) => {
  window.livecast.errors.push(d.details);
  if (d.fatal) window.livecast.fatal = d.details;
});
hls.loadSource(new URLSearchParams(location.search).get("src"));
hls.attachMedia(document.getElementById("video"));
</script>
"""


def encoder(rtmp, names):
    """One ffmpeg publishing the test signal as the two renditions to rtmp://.../live/<name>."""
    command = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re",
               "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
               "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"]
    for (_, size, rate), name in zip(OUTPUTS, names):
        command += ["-map", "0:v", "-map", "1:a", "-s", size, "-c:v", "libx264", "-preset", "veryfast",
                    "-g", "30", "-keyint_min", "30", "-sc_threshold", "0", "-b:v", rate, "-maxrate", rate,
                    "-bufsize", rate, "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k", "-f", "flv",
                    f"rtmp://127.0.0.1:{rtmp}/live/{name}"]
    return subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def switch(url, kbps):
    out = subprocess.run(["node", os.path.join(ROOT, "e2e", "abr.mjs"), url], capture_output=True, text=True,
                         timeout=180, env={**os.environ, "THROTTLE_KBPS": str(kbps)})
    try:
        result = json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise SystemExit(f"abr.mjs gave no report: {out.stdout} {out.stderr}")
    if result.get("switchedAfterMs") is None:
        raise SystemExit(f"hls.js never switched down: {json.dumps(result)}")
    return result


def wait_file(path, timeout=40.0):
    deadline = time.time() + timeout
    while not os.path.exists(path):
        if time.time() > deadline:
            raise SystemExit(f"{path} never appeared")
        time.sleep(0.2)


def run_livecast(work, kbps):
    stack, rtmp, http = livecast_up(work)
    publisher = None
    try:
        wait_port(rtmp)
        wait_http(http, "/")
        publisher = encoder(rtmp, [f"abr@{name}" for name, _, _ in OUTPUTS])
        wait_file(os.path.join(work, "livecast", "hls", "abr", "master.m3u8"))
        time.sleep(4)
        return switch(f"http://127.0.0.1:{http}/?stream=abr", kbps)
    finally:
        stop([p for p in (publisher, stack) if p])


def run_nginx(work, kbps):
    rtmp, http = free_port(), free_port()
    root = os.path.join(work, "www")
    hls = os.path.join(root, "hls")
    os.makedirs(hls, exist_ok=True)
    shutil.copy(HLS_JS, root)
    with open(os.path.join(root, "abr.html"), "w") as f:
        f.write(PAGE)
    os.system(f"chmod -R a+rwX {work}")
    variants = "\n".join(f"      hls_variant _{name} BANDWIDTH={int(rate[:-1]) * 1000 + 100000};"
                         for name, _, rate in OUTPUTS)
    nginx = nginx_rtmp(work, "nginx-abr", rtmp, hls, live=variants, http=player_site(http, root))
    publisher = None
    try:
        wait_port(rtmp)
        wait_http(http, "/abr.html")
        publisher = encoder(rtmp, [f"abr_{name}" for name, _, _ in OUTPUTS])
        wait_file(os.path.join(hls, "abr.m3u8"))
        time.sleep(6)
        return switch(f"http://127.0.0.1:{http}/abr.html?src=/hls/abr.m3u8", kbps)
    finally:
        stop([p for p in (publisher, nginx) if p])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kbps", type=int, default=600, help="the throttle, between the two renditions' rates")
    args = parser.parse_args()
    for tool in ("ffmpeg", "nginx", "node", "chromium"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing")
    times = {"livecast": [], "nginx-rtmp": []}
    for round_ in range(args.rounds):
        order = [("nginx-rtmp", run_nginx), ("livecast", run_livecast)]
        for name, run in order if round_ % 2 == 0 else order[::-1]:
            work = tempfile.mkdtemp(prefix="livecast-abr-")
            os.chmod(work, 0o755)
            try:
                result = run(work, args.kbps)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            times[name].append(result["switchedAfterMs"] / 1000)
            print(f"round {round_ + 1} {name:<11} switched down {result['switchedAfterMs'] / 1000:5.1f} s after "
                  f"the throttle; stalls after the switch {result['stallsAfterSwitch']}, played "
                  f"{result['advanced']:.1f} s in the next 8 s", flush=True)
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, median in medians.items():
        print(f"{name:<11} switch time median {median:.1f} s (rounds {', '.join(f'{t:.1f}' for t in times[name])})")
    print(f"ratio livecast / nginx-rtmp switch time (median): {medians['livecast'] / medians['nginx-rtmp']:.3f}")


if __name__ == "__main__":
    sys.exit(main())
