#!/usr/bin/env python3
"""Server-side ladder CPU: livecast-ingest --ladder against nginx-rtmp running the same ffmpeg
ladder through `exec` (the reference design's way), one 720p30 publish each.

Both make the same renditions of a 2.7 Mb/s 720p30 clip (`-re -c copy`, 2 s GOP): the source
as it is, 480p at 1.2 Mb/s and 240p at 400 kb/s, with the same ffmpeg and the same encoder
flags (livecast's pinned ladder command line: libx264 veryfast zerolatency Main, keyframes
where the source has them, audio copied). nginx-rtmp's `exec` pulls the stream back over RTMP
and pushes the three renditions into an `hls` application (`hls_nested`, 2 s fragments);
livecast-ingest feeds its ffmpeg child over stdin and ingests the two rungs it publishes back.
CPU is the whole process tree of each server (nginx master, worker and the ffmpeg it runs;
livecast-ingest and its ffmpeg), user + system from /proc, over --seconds after --warmup.
The transcode dominates both; the ratio shows what the wrapper around it costs.

livecast runs twice per round: with nginx-rtmp's output (MPEG-TS, no parts) and with its default
(fMP4 with LL-HLS parts). The three run one after the other, alternating (a ladder takes most of a core; two at once on
a 2-core machine would starve each other), --rounds times; prints each pair's ratio and the
median. Target: livecast / nginx-rtmp <= 1.0.
Usage: bench/ladder.py [--seconds 30] [--warmup 15] [--rounds 3]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from common import free_port, ingest_against_nginx_rtmp, wait_port

TICK = os.sysconf("SC_CLK_TCK")
RUNGS = ((480, 1200), (240, 400))


def descendants(pid):
    """pid and every process below it."""
    children = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(p))
            except OSError:
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu(pid):
    """CPU seconds of the tree: (all of it, its ffmpeg processes)."""
    total = transcoder = 0.0
    for p in descendants(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                name, rest = f.read().split("(", 1)[1].rsplit(")", 1)
            fields = rest.split()
            used = (int(fields[11]) + int(fields[12])) / TICK
            total += used
            if name == "ffmpeg":
                transcoder += used
        except OSError:
            pass
    return total, transcoder


def rung_flags(height, kbps):
    """livecast's pinned ladder encoder flags for one rung (crates/livecast-ingest/src/ladder.rs)."""
    return (f"-map 0:v:0 -map 0:a:0? -vf scale=-2:{height} -c:v libx264 -preset veryfast -tune zerolatency "
            f"-profile:v main -pix_fmt yuv420p -force_key_frames source -sc_threshold 0 -b:v {kbps}k "
            f"-maxrate {kbps + kbps // 10}k -bufsize {kbps * 2}k -c:a copy -f flv")


def start_nginx(work, port, hls):
    outputs = " ".join(f"{rung_flags(h, k)} rtmp://127.0.0.1:{port}/hls/$name_{h}p" for h, k in RUNGS)
    conf = os.path.join(work, "nginx-ladder.conf")
    with open(conf, "w") as f:
        f.write(f"""load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
daemon off;
worker_processes 1;
pid {work}/nginx-ladder.pid;
error_log {work}/nginx-ladder-error.log;
events {{ worker_connections 1024; }}
rtmp {{
  server {{
    listen 127.0.0.1:{port};
    chunk_size 4096;
    application live {{
      live on;
      exec ffmpeg -hide_banner -nostats -loglevel warning -i rtmp://127.0.0.1:{port}/live/$name
        -map 0:v:0 -map 0:a:0? -c copy -f flv rtmp://127.0.0.1:{port}/hls/$name_src {outputs};
    }}
    application hls {{
      live on;
      hls on;
      hls_path {hls};
      hls_nested on;
      hls_fragment 2s;
      hls_playlist_length 12s;
      hls_variant _src BANDWIDTH=2800000;
      hls_variant _480p BANDWIDTH=1400000;
      hls_variant _240p BANDWIDTH=500000;
    }}
  }}
}}
""")
    return subprocess.Popen(["nginx", "-p", work, "-c", conf, "-e", f"{work}/nginx-ladder-error.log"])


def start_livecast(binaries, port, hls, flags):
    ladder = ",".join(f"{h}:{k}" for h, k in RUNGS)
    return subprocess.Popen(
        [os.path.join(binaries, "livecast-ingest"), f"--rtmp-listen=127.0.0.1:{port}",
         f"--admin-listen=127.0.0.1:{free_port()}", f"--hls-dir={hls}", f"--ladder={ladder}"] + flags,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure(name, server, port, hls, clip, seconds, warmup, expect):
    """Publishes one stream for warmup + seconds; CPU seconds per stream-second of the tree."""
    wait_port(port)
    publisher = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", clip,
         "-c", "copy", "-f", "flv", f"rtmp://127.0.0.1:{port}/live/talk"], stdin=subprocess.DEVNULL)
    try:
        time.sleep(warmup)
        missing = [p for p in expect if not os.path.exists(os.path.join(hls, p))]
        if missing:
            raise SystemExit(f"{name}: no {missing} after {warmup} s: the ladder is not running")
        start, start_ffmpeg = cpu(server.pid)
        time.sleep(seconds)
        end, end_ffmpeg = cpu(server.pid)
        used, ffmpeg = end - start, end_ffmpeg - start_ffmpeg
        if publisher.poll() is not None:
            raise SystemExit(f"{name}: the publisher stopped")
    finally:
        publisher.kill()
        publisher.wait()
    per = (used / seconds, (used - ffmpeg) / seconds)
    print(f"{name:<26} cpu {used:6.2f} s over {seconds} s: {per[0]:.3f} s per stream-second "
          f"(ffmpeg {ffmpeg / seconds:.3f}, the server itself {(used - ffmpeg) / seconds:.3f})", flush=True)
    return per


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    binaries, clip = ingest_against_nginx_rtmp()
    # livecast in nginx-rtmp's output (MPEG-TS, no parts) and in its default (fMP4, LL-HLS parts).
    modes = {"livecast --ladder ts": ["--container=ts", "--part-ms=0"], "livecast --ladder ll-hls": []}
    ratios = {mode: [] for mode in modes}
    wrapper = {mode: [] for mode in modes}
    for round_ in range(args.rounds):
        work = tempfile.mkdtemp(prefix="livecast-ladder-")
        os.chmod(work, 0o777)
        try:
            results = {}
            # The order alternates from round to round: the machine drifts within a round too.
            order = ["nginx-rtmp exec", *modes]
            for name in order if round_ % 2 == 0 else order[::-1]:
                port = free_port()
                hls = os.path.join(work, name.replace(" ", "_"))
                os.makedirs(hls)
                os.chmod(hls, 0o777)
                if name.startswith("nginx"):
                    server = start_nginx(work, port, hls)
                    expect = [f"talk_{h}p/index.m3u8" for h, _ in RUNGS]
                else:
                    server = start_livecast(binaries, port, hls, modes[name])
                    expect = ["talk/master.m3u8"] + [f"talk@{h}p/index.m3u8" for h, _ in RUNGS]
                try:
                    results[name] = measure(name, server, port, hls, clip, args.seconds, args.warmup, expect)
                finally:
                    server.terminate()
                    server.wait()
                    # nginx-rtmp's exec'd ffmpeg outlives a terminated worker for a moment.
                    subprocess.run(["pkill", "-f", f"rtmp://127.0.0.1:{port}/"], check=False)
            for mode in modes:
                ratio = results[mode][0] / results["nginx-rtmp exec"][0]
                ratios[mode].append(ratio)
                wrapper[mode].append(results[mode][1] / results["nginx-rtmp exec"][1])
                print(f"  round {round_ + 1}: {mode} / nginx-rtmp exec cpu per stream-second {ratio:.3f} "
                      f"(the server without ffmpeg {wrapper[mode][-1]:.3f})", flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    for mode in modes:
        runs = ", ".join(f"{r:.3f}" for r in ratios[mode])
        print(f"ratio {mode} / nginx-rtmp exec: cpu median {statistics.median(ratios[mode]):.3f} "
              f"(rounds {runs}; target <= 1.0); the server without ffmpeg: median "
              f"{statistics.median(wrapper[mode]):.3f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
