#!/usr/bin/env python3
"""The first publish after start: how late its segments and parts are listed, on an outside clock.

Each round starts a fresh stack and publishes to it as soon as its RTMP port accepts, then
publishes a second stream on the same stack; a real ffmpeg (`-re -c copy`) publishes the clip
through the RTMP relay of segment_latency.py, and a watcher polls the stream's playlist over
HTTP every 2 ms, through the viewers' entry point (livecast's balancer; for nginx-rtmp an nginx
`http` server on its HLS directory). Two clocks give each segment's lag:

  - outside: (listed) - (ffmpeg process started + the segment's last frame timestamp): what a
    viewer sees against the publisher's wall clock, ffmpeg's own start-up included;
  - relay:   (listed) - (the segment's last frame left the relay for the server).

The difference is spent before the media flows, and the script splits it: ffmpeg's start-up
(spawned -> connected), the server's handshake answer (C0C1 in -> S0S1 out), and the rest of
the RTMP set-up (connect, createStream, publish) up to the first media message. A constant
offset that only the first stream of a fresh stack shows points at the start; one that both
streams show points at the publisher.

Prints a line per stream, then per system the medians of both clocks for first and second
streams, and the ratio livecast / nginx-rtmp of the first stream's outside-clock median.
Needs: ffmpeg, nginx with libnginx-mod-rtmp (Debian: apt-get install nginx libnginx-mod-rtmp).
Usage: bench/first_publish.py [--rounds 4] [--seconds 12] [--systems livecast,nginx-rtmp]
"""

import argparse
import http.client
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from common import ROOT, build, free_port, make_clip, nginx_rtmp, stop, wait_port
from segment_latency import PlaylistWatcher, RtmpRelay, part_ends, segment_ends


class HttpPlaylistWatcher(PlaylistWatcher):
    """The playlist watcher of segment_latency.py, reading over HTTP (one kept-alive connection)."""

    def __init__(self, port, path):
        self.port = port
        self.conn = None
        super().__init__(path)

    def _read(self):
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            self.conn.request("GET", self.path)
            response = self.conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException):
            self.conn = None
            return None
        if response.status != 200:
            return None
        text = body.decode()
        if text == self._last:
            return None
        self._last = text
        return text


def publish(rtmp_port, http_port, stream, clip):
    """Publishes `clip` as `stream`; returns the lags on both clocks and the set-up breakdown."""
    relay = RtmpRelay(rtmp_port)
    watcher = HttpPlaylistWatcher(http_port, f"/hls/{stream}/index.m3u8")
    spawned = time.monotonic()
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-i", clip, "-c", "copy",
         "-f", "flv", f"rtmp://127.0.0.1:{relay.port}/live/{stream}"],
        check=True)
    time.sleep(1.0)
    watcher.stop.set()
    sent = relay.sent
    if not sent or len(watcher.order) < 2:
        raise SystemExit(f"{stream}: nothing measured (sent {len(sent)} messages, "
                         f"saw {len(watcher.order)} segments)")
    first_ts = min(ts for ts, _, _ in sent)
    first_media = min(t for _, _, t in sent)

    def clocks(ends):
        outside = [seen - (spawned + (ts - first_ts) / 1000.0) for seen, ts, _ in ends]
        relayed = [seen - t for seen, _, t in ends]
        return outside, relayed

    segments = clocks(segment_ends(sent, watcher))
    parts = clocks(part_ends(sent, watcher)) if watcher.parts else ([], [])
    setup = {
        "ffmpeg start": relay.accepted - spawned,
        "handshake answer": relay.first_reply - relay.accepted,
        "set-up to media": first_media - relay.first_reply,
    }
    return segments, parts, setup


def start_livecast(work, binary):
    rtmp, http_port = free_port(), free_port()
    proc = subprocess.Popen(
        [binary, "up", f"--rtmp-listen=127.0.0.1:{rtmp}", f"--listen=127.0.0.1:{http_port}",
         f"--hls-dir={work}/hls", f"--access-log-dir={work}/logs", f"--state-dir={work}/state",
         "--segment-secs=2", "--admin-host=127.0.0.1", "--admin-port=0", "--web-port=0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, rtmp, http_port


def start_nginx(work):
    rtmp, http_port = free_port(), free_port()
    hls = os.path.join(work, "hls")
    os.makedirs(hls)
    os.chmod(hls, 0o777)
    proc = nginx_rtmp(work, "nginx", rtmp, hls, http=f"""
  access_log off;
  server {{
    listen 127.0.0.1:{http_port};
    location /hls/ {{ alias {hls}/; add_header Cache-Control no-cache; }}
  }}""")
    return proc, rtmp, http_port


def median(values):
    return statistics.median(values) if values else float("nan")


def secs(value):
    """A lag for printing; `-` where the system has none (nginx-rtmp has no parts)."""
    return "-" if value != value else f"{value:.3f}s"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4, help="fresh starts per system")
    parser.add_argument("--seconds", type=int, default=12, help="clip length per stream")
    parser.add_argument("--systems", default="livecast,nginx-rtmp")
    args = parser.parse_args()
    systems = args.systems.split(",")
    for tool in ("ffmpeg", "nginx"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: apt-get install ffmpeg nginx libnginx-mod-rtmp")
    build("livecast")
    binary = os.path.join(ROOT, "target", "release", "livecast")
    cache = os.path.join(ROOT, "target", "bench")
    os.makedirs(cache, exist_ok=True)
    clip = os.path.join(cache, f"clip-720p-{args.seconds}s.flv")
    make_clip(clip, args.seconds)
    results = {name: {"first": [], "second": []} for name in systems}
    for round_ in range(args.rounds):
        # Alternate which system starts first: the machine's state drifts during a run.
        order = systems if round_ % 2 == 0 else systems[::-1]
        for name in order:
            work = tempfile.mkdtemp(prefix="livecast-bench-")
            os.chmod(work, 0o777)  # nginx workers may run as another user
            started = time.monotonic()
            proc, rtmp, http_port = start_livecast(work, binary) if name == "livecast" else start_nginx(work)
            try:
                wait_port(rtmp)
                ready = time.monotonic() - started
                for which, stream in (("first", "one"), ("second", "two")):
                    (seg_out, seg_relay), (part_out, part_relay), setup = publish(rtmp, http_port, stream, clip)
                    results[name][which].append((seg_out, seg_relay, part_out, part_relay, setup))
                    steps = " ".join(f"{k}={v * 1000:.0f}ms" for k, v in setup.items())
                    print(f"round {round_ + 1} {name:<10} {which:<6} port open after {ready * 1000:.0f}ms  "
                          f"segments outside={secs(median(seg_out))} relay={secs(median(seg_relay))}  "
                          f"parts outside={secs(median(part_out))} relay={secs(median(part_relay))}  {steps}",
                          flush=True)
            finally:
                stop([proc])
                shutil.rmtree(work, ignore_errors=True)

    print("\nmedian over rounds of each stream's median lag (s); outside clock includes ffmpeg's start-up")
    summary = {}
    for name in systems:
        for which in ("first", "second"):
            runs = results[name][which]
            seg_out = median([median(r[0]) for r in runs])
            seg_relay = median([median(r[1]) for r in runs])
            part_out = median([median(r[2]) for r in runs])
            setup = {k: median([r[4][k] for r in runs]) for k in runs[0][4]}
            summary[(name, which)] = seg_out
            steps = " ".join(f"{k}={v * 1000:.0f}ms" for k, v in setup.items())
            print(f"{name:<10} {which:<6} segments outside={secs(seg_out)} relay={secs(seg_relay)} "
                  f"parts outside={secs(part_out)}  {steps}")
            worst = max(median(r[0]) for r in runs)
            print(f"{'':<10} {'':<6} worst round outside={worst:.3f}")
    if "livecast" in systems and "nginx-rtmp" in systems:
        ratio = summary[("livecast", "first")] / summary[("nginx-rtmp", "first")]
        print(f"ratio livecast/nginx-rtmp, first stream, outside clock (median): {ratio:.3f}")
        gap = summary[("livecast", "first")] - summary[("livecast", "second")]
        print(f"livecast first - second stream, outside clock: {gap * 1000:.0f} ms "
              f"(target: no offset of its own, under 100 ms)")


if __name__ == "__main__":
    sys.exit(main())
