#!/usr/bin/env python3
"""Transmux CPU and memory per stream: livecast-ingest against nginx-rtmp, same publishers.

nginx-rtmp and livecast-ingest run side by side, each with N real ffmpeg publishers of its own
(`-re -c copy` of a 2.7 Mb/s 720p30 clip, 2 s GOP), so that whatever else the machine does
meanwhile, both see it (measured one after the other, rounds of the same code scattered by
+-15 % on a 2-core VM). After --warmup seconds (long enough for both servers to start retiring
old segments, as they do for the rest of a live event) each server's CPU time (user + system,
all its processes, from /proc) is read, and again --seconds later; CPU per stream-second = CPU
seconds / (N * seconds). Memory per stream = (RSS at the end - RSS before the first publish) / N.

Anchor: nginx-rtmp (Debian's nginx + libnginx-mod-rtmp, one worker, hls on, 2 s fragments).
Compared, each in its own side-by-side run, for N = 10 and N = 50:
- livecast-ingest with `--container ts --part-ms 0` (the same output as nginx-rtmp);
- livecast-ingest with its defaults (fMP4, LL-HLS 250 ms parts: four extra files a second).
livecast-ingest runs with `--workers` threads (default 1, like nginx-rtmp's one worker; the
ingest's own default is one per CPU).

Each stream count runs --rounds rounds; prints every round's ratio and the median ratio.
Usage: bench/transmux_cpu.py [--seconds 30] [--warmup 30] [--streams 10,50] [--rounds 3] [--workers 1]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from common import free_port, ingest_against_nginx_rtmp, nginx_rtmp, wait_port

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


def run(systems, clip, streams, seconds, warmup):
    """Publishes to every system at once; systems: [(name, pid, port)]. Returns, per system,
    (CPU seconds per stream-second, RSS growth per stream in MiB)."""
    time.sleep(1.0)
    rss0 = {name: cpu_and_rss(pid)[1] for name, pid, _ in systems}
    publishers = [
        subprocess.Popen(["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1",
                          "-i", clip, "-c", "copy", "-f", "flv", f"rtmp://127.0.0.1:{port}/live/s{i}"],
                         stdin=subprocess.DEVNULL)
        for i in range(streams) for _, _, port in systems
    ]
    time.sleep(warmup)
    cpu0 = {name: cpu_and_rss(pid)[0] for name, pid, _ in systems}
    time.sleep(seconds)
    end = {name: cpu_and_rss(pid) for name, pid, _ in systems}
    alive = sum(p.poll() is None for p in publishers)
    for p in publishers:
        p.kill()
    for p in publishers:
        p.wait()
    if alive != len(publishers):
        raise SystemExit(f"only {alive} of {len(publishers)} publishers survived")
    results = {}
    for name, _, _ in systems:
        cpu1, rss1 = end[name]
        per_stream_second = (cpu1 - cpu0[name]) / (streams * seconds)
        per_stream_mb = (rss1 - rss0[name]) / streams / 2**20
        print(f"{name:<22} streams={streams:<3} cpu={cpu1 - cpu0[name]:7.2f}s  "
              f"per stream-second={per_stream_second * 1000:6.3f} ms  rss {rss0[name] / 2**20:6.1f} -> "
              f"{rss1 / 2**20:6.1f} MiB  per stream={per_stream_mb:5.2f} MiB", flush=True)
        results[name] = (per_stream_second, per_stream_mb)
    return results


def start_nginx(work, name):
    port = free_port()
    hls = os.path.join(work, name)
    os.makedirs(hls)
    os.chmod(hls, 0o777)
    return nginx_rtmp(work, name, port, hls), port


def start_livecast(work, binaries, name, flags):
    port = free_port()
    hls = os.path.join(work, name)
    server = subprocess.Popen(
        [os.path.join(binaries, "livecast-ingest"), f"--rtmp-listen=127.0.0.1:{port}",
         f"--admin-listen=127.0.0.1:{free_port()}", f"--hls-dir={hls}"] + flags,
        stderr=subprocess.DEVNULL)
    return server, port


def side_by_side(work, binaries, clip, streams, seconds, warmup, label, flags, round_):
    """nginx-rtmp and one livecast mode, each with its own `streams` publishers, at the same
    time: whatever the machine does meanwhile, both see it."""
    tag = f"{label.replace(' ', '-')}-{streams}-{round_}"
    servers = []
    try:
        servers.append(("nginx-rtmp",) + start_nginx(work, f"nginx-{tag}"))
        servers.append((label,) + start_livecast(work, binaries, f"livecast-{tag}", flags))
        for _, _, port in servers:
            wait_port(port)
        return run([(name, server.pid, port) for name, server, port in servers], clip, streams, seconds, warmup)
    finally:
        for _, server, _ in servers:
            server.terminate()
            server.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=30,
                        help="seconds of publishing before the CPU time is measured")
    parser.add_argument("--streams", default="10,50")
    parser.add_argument("--rounds", type=int, default=3,
                        help="side-by-side runs per mode; the median ratio is reported")
    parser.add_argument("--workers", type=int, default=1,
                        help="livecast-ingest --workers (nginx-rtmp runs one worker)")
    args = parser.parse_args()
    binaries, clip = ingest_against_nginx_rtmp()
    work = tempfile.mkdtemp(prefix="livecast-cpu-")
    os.chmod(work, 0o777)
    try:
        workers = [f"--workers={args.workers}"]
        modes = (("livecast ts", ["--container=ts", "--part-ms=0"] + workers),
                 ("livecast fmp4+ll-hls", workers))
        print(f"livecast-ingest --workers {args.workers}; nginx-rtmp worker_processes 1", flush=True)
        for streams in [int(s) for s in args.streams.split(",")]:
            ratios = {label: [] for label, _ in modes}
            memory = {label: [] for label, _ in modes}
            for round_ in range(args.rounds):
                for label, flags in modes:
                    results = side_by_side(work, binaries, clip, streams, args.seconds, args.warmup, label,
                                           flags, round_)
                    cpu, mem = results[label]
                    ratio = cpu / results["nginx-rtmp"][0]
                    ratios[label].append(ratio)
                    memory[label].append(mem)
                    print(f"  round {round_ + 1}: {label}/nginx-rtmp at {streams} streams: cpu {ratio:.3f}",
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
