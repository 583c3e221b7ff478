#!/usr/bin/env python3
"""Transmux CPU and memory per stream: livecast-ingest against nginx-rtmp, same publishers.

N real ffmpeg publishers (`-re -c copy` of a 2.7 Mb/s 720p30 clip, 2 s GOP) publish at once
to one server. After --warmup seconds (long enough for both servers to start retiring old
segments, as they do for the rest of a live event) the server's CPU time (user + system, all
its processes, from /proc) is read, and again --seconds later; CPU per stream-second = CPU
seconds / (N * seconds). Memory per stream = (RSS at the end - RSS before the first publish) / N.

Systems, one after the other, for N = 10 and N = 50:
- nginx-rtmp (Debian's nginx + libnginx-mod-rtmp, one worker, hls on, 2 s fragments);
- livecast-ingest with `--container ts --part-ms 0` (the same output as nginx-rtmp);
- livecast-ingest with its defaults (fMP4, LL-HLS 250 ms parts: four extra files a second).

Each stream count runs --rounds rounds, each measuring nginx-rtmp right before the two livecast
modes; prints every round's ratio and the median ratio against nginx-rtmp.
Usage: bench/transmux_cpu.py [--seconds 30] [--warmup 30] [--streams 10,50] [--rounds 3]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from common import ROOT, build, free_port, make_clip, nginx_rtmp, wait_port

TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def tree(pid):
    """pid and its descendants."""
    pids = [pid]
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    pids.append(int(p))
            except OSError:
                pass
    return pids


def cpu_and_rss(pid):
    cpu, rss = 0.0, 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / TICK
            rss += int(fields[21]) * PAGE
        except OSError:
            pass
    return cpu, rss


def run(name, server_pid, port, clip, streams, seconds, warmup):
    time.sleep(1.0)
    _, rss0 = cpu_and_rss(server_pid)
    publishers = [
        subprocess.Popen(["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1",
                          "-i", clip, "-c", "copy", "-f", "flv", f"rtmp://127.0.0.1:{port}/live/s{i}"],
                         stdin=subprocess.DEVNULL)
        for i in range(streams)
    ]
    time.sleep(warmup)
    cpu0, _ = cpu_and_rss(server_pid)
    time.sleep(seconds)
    cpu1, rss1 = cpu_and_rss(server_pid)
    alive = sum(p.poll() is None for p in publishers)
    for p in publishers:
        p.kill()
    for p in publishers:
        p.wait()
    if alive != streams:
        raise SystemExit(f"{name}: only {alive} of {streams} publishers survived")
    per_stream_second = (cpu1 - cpu0) / (streams * seconds)
    per_stream_mb = (rss1 - rss0) / streams / 2**20
    print(f"{name:<22} streams={streams:<3} cpu={cpu1 - cpu0:7.2f}s  per stream-second={per_stream_second * 1000:6.3f} ms"
          f"  rss {rss0 / 2**20:6.1f} -> {rss1 / 2**20:6.1f} MiB  per stream={per_stream_mb:5.2f} MiB", flush=True)
    return per_stream_second, per_stream_mb


def nginx(work, clip, streams, seconds, warmup, round_):
    port = free_port()
    name = f"nginx-{streams}-{round_}"
    hls = os.path.join(work, name)
    os.makedirs(hls)
    os.chmod(hls, 0o777)
    server = nginx_rtmp(work, name, port, hls)
    try:
        wait_port(port)
        return run("nginx-rtmp", server.pid, port, clip, streams, seconds, warmup)
    finally:
        server.terminate()
        server.wait()


def livecast(work, binaries, clip, streams, seconds, warmup, label, flags, round_):
    port = free_port()
    hls = os.path.join(work, f"{label}-{streams}-{round_}")
    server = subprocess.Popen(
        [os.path.join(binaries, "livecast-ingest"), f"--rtmp-listen=127.0.0.1:{port}",
         f"--admin-listen=127.0.0.1:{free_port()}", f"--hls-dir={hls}"] + flags,
        stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        return run(label, server.pid, port, clip, streams, seconds, warmup)
    finally:
        server.terminate()
        server.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=30,
                        help="seconds of publishing before the CPU time is measured")
    parser.add_argument("--streams", default="10,50")
    parser.add_argument("--rounds", type=int, default=3,
                        help="anchor and livecast runs, interleaved; the median ratio is reported")
    args = parser.parse_args()
    for tool in ("ffmpeg", "nginx"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: apt-get install ffmpeg nginx libnginx-mod-rtmp")
    binaries = build("livecast-ingest")
    cache = os.path.join(ROOT, "target", "bench")
    os.makedirs(cache, exist_ok=True)
    clip = os.path.join(cache, "clip-720p-60s.flv")
    make_clip(clip, 60)
    work = tempfile.mkdtemp(prefix="livecast-cpu-")
    os.chmod(work, 0o777)
    try:
        modes = (("livecast ts", ["--container=ts", "--part-ms=0"]),
                 ("livecast fmp4+ll-hls", []))
        for streams in [int(s) for s in args.streams.split(",")]:
            # The machine's speed drifts over minutes: each round measures the anchor right
            # before the systems it is compared with, and the median round is reported.
            ratios = {label: [] for label, _ in modes}
            memory = {label: [] for label, _ in modes}
            for round_ in range(args.rounds):
                base_cpu, _ = nginx(work, clip, streams, args.seconds, args.warmup, round_)
                for label, flags in modes:
                    cpu, mem = livecast(work, binaries, clip, streams, args.seconds, args.warmup, label, flags,
                                        round_)
                    ratios[label].append(cpu / base_cpu)
                    memory[label].append(mem)
                    print(f"  round {round_ + 1}: {label}/nginx-rtmp at {streams} streams: cpu {cpu / base_cpu:.3f}",
                          flush=True)
            for label, _ in modes:
                runs = ", ".join(f"{r:.3f}" for r in ratios[label])
                print(f"  ratio {label}/nginx-rtmp at {streams} streams: cpu median {statistics.median(ratios[label]):.3f} "
                      f"(rounds {runs}; target <= 0.7)  memory per stream median "
                      f"{statistics.median(memory[label]):.2f} MiB (target <= 4)", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
