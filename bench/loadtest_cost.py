#!/usr/bin/env python3
"""The load tester's own cost: full-bitrate viewers per core, against an ffmpeg swarm.

A real live source: ffmpeg publishes a 720p30 2.5 Mb/s clip (2 s GOP) in real time to Debian's
nginx with nginx-rtmp, which writes 2 s MPEG-TS segments; nginx serves them statically on
loopback. Against that one playlist, in the same run:

  - the anchor: K processes of `ffmpeg -i URL -c copy -f null -`, what ffmpeg-based swarms run
    per viewer; CPU of all of them over a steady window;
  - livecast-loadtest with N viewers (plain HLS, 3 target durations behind the edge like hls.js);
    CPU and resident memory of its process over the same kind of window.

Prints viewers per core of each (viewers / cores used), the ratio (target >= 10x), memory per
viewer (target <= 64 KiB), the load tester's timer lateness p99 (target < 5 ms) and its
stall and error figures (a figure only counts when the audience played cleanly).

Usage: python3 bench/loadtest_cost.py [--viewers 1000] [--swarm 16] [--seconds 30]
Needs: nginx, libnginx-mod-rtmp, ffmpeg (apt-get install nginx libnginx-mod-rtmp ffmpeg).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, build, free_port, make_clip, nginx_rtmp, stop, wait_http  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_secs(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total / TICK


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def steady(pids, warm, window):
    """CPU seconds used by `pids` during `window` seconds after `warm` seconds."""
    time.sleep(warm)
    c0, t0 = cpu_secs(pids), time.monotonic()
    time.sleep(window)
    return cpu_secs(pids) - c0, time.monotonic() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--viewers", type=int, default=1000)
    ap.add_argument("--swarm", type=int, default=16)
    ap.add_argument("--seconds", type=int, default=30, help="measured window of each")
    a = ap.parse_args()
    for tool in ("nginx", "ffmpeg"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: apt-get install nginx libnginx-mod-rtmp ffmpeg")
    if not os.path.exists("/usr/lib/nginx/modules/ngx_rtmp_module.so"):
        raise SystemExit("nginx-rtmp is missing: apt-get install libnginx-mod-rtmp")
    bin_dir = build("livecast-loadtest")
    work = tempfile.mkdtemp(prefix="livecast-loadtest-cost-")
    os.chmod(work, 0o755)  # nginx's workers (www-data) read the segments
    clip = os.path.join(ROOT, "target", "bench-clip-720p-60s.flv")
    make_clip(clip, 60)
    hls = os.path.join(work, "hls")
    os.makedirs(hls)
    rtmp_port, http_port = free_port(), free_port()
    nginx = nginx_rtmp(work, "source", rtmp_port, hls, http=f"""
  sendfile on; tcp_nopush on; keepalive_requests 100000; access_log off;
  types {{ application/vnd.apple.mpegurl m3u8; video/mp2t ts; }}
  server {{ listen 127.0.0.1:{http_port}; location /hls/ {{ alias {hls}/; }} }}""")
    procs = [nginx]
    try:
        time.sleep(0.5)
        procs.append(subprocess.Popen(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", clip,
             "-c", "copy", "-f", "flv", f"rtmp://127.0.0.1:{rtmp_port}/live/bench"]))
        url = f"http://127.0.0.1:{http_port}/hls/bench/index.m3u8"
        wait_http(http_port, "/hls/bench/index.m3u8", timeout=30)
        time.sleep(8)  # a few segments of history, as a live stream has

        # The anchor: an ffmpeg per viewer.
        swarm = [subprocess.Popen(["ffmpeg", "-hide_banner", "-loglevel", "error", "-i", url,
                                   "-c", "copy", "-f", "null", "-"]) for _ in range(a.swarm)]
        cpu, wall = steady([p.pid for p in swarm], 8, a.seconds)
        alive = sum(p.poll() is None for p in swarm)
        for p in swarm:
            p.kill()
            p.wait()
        ffmpeg_cores = cpu / wall
        ffmpeg_per_core = alive / ffmpeg_cores if ffmpeg_cores else 0.0
        print(f"ffmpeg swarm: {alive} of {a.swarm} processes alive, {ffmpeg_cores:.3f} cores "
              f"-> {ffmpeg_per_core:.0f} viewers per core")

        # livecast-loadtest.
        out = os.path.join(work, "out")
        ramp = 10
        total = ramp + 8 + a.seconds + 4
        lt = subprocess.Popen(
            [os.path.join(bin_dir, "livecast-loadtest"), "run", url, "--viewers", str(a.viewers),
             "--ramp", f"{ramp}s", "--duration", f"{total}s", "--out", out, "--progress-secs", "0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(1)
        base_rss = rss_kib(lt.pid)
        cpu, wall = steady([lt.pid], ramp + 7, a.seconds)
        rss = rss_kib(lt.pid)
        _, err = lt.communicate(timeout=total + 60)
        summary = json.load(open(os.path.join(out, "summary.json")))
        lt_cores = cpu / wall
        lt_per_core = a.viewers / lt_cores if lt_cores else 0.0
        per_viewer = (rss - base_rss) / a.viewers
        print(f"livecast-loadtest: {a.viewers} viewers, {lt_cores:.3f} cores -> {lt_per_core:.0f} viewers per core; "
              f"RSS {rss / 1024:.1f} MiB ({base_rss / 1024:.1f} before the viewers) -> {per_viewer:.1f} KiB per viewer")
        print(f"  audience: {summary['bytes'] * 8 / 1e6 / summary['duration_secs']:.0f} Mb/s, "
              f"stalls {summary['stalls']}, rebuffer ratio {summary['rebuffer_ratio']}, "
              f"errors {summary['errors']}, never started {summary['never_started']}, "
              f"timer lateness p99 {summary['honesty']['timer_lateness_p99_ms']} ms")
        ratio = lt_per_core / ffmpeg_per_core if ffmpeg_per_core else float("inf")
        print(f"viewers per core: livecast-loadtest {lt_per_core:.0f} vs ffmpeg swarm {ffmpeg_per_core:.0f}: "
              f"ratio {ratio:.1f}x (targets: >= 1000 per core, >= 10x)")
        clean = summary["rebuffer_ratio"] < 0.01 and not summary["errors"] and summary["never_started"] == 0
        print(f"memory per viewer {per_viewer:.1f} KiB (target <= 64); timer lateness p99 "
              f"{summary['honesty']['timer_lateness_p99_ms']} ms (target < 5); audience played cleanly: {clean}")
    finally:
        stop(procs)
        if not os.environ.get("KEEP"):
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
