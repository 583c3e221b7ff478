#!/usr/bin/env python3
"""Balancer throughput and added latency: livecast-proxy against HAProxy and nginx proxy_pass.

All three sit in front of the same backend (Debian nginx serving a live-style playlist) with
the same number of threads (HAProxy nbthread = nginx worker_processes = livecast's tokio
workers = --workers), keep-alive to the backend, and X-Forwarded-For added. wrk measures:

- throughput: req/s at --connections concurrent connections;
- added latency: p99 through the balancer minus p99 straight to the backend, at a light load
  (--latency-connections), where queueing does not hide the balancer's own cost;
- the tail under load: p50 and p99 with one wrk thread at each of --load-connections (32 and
  256 by default), the connections an LL-HLS audience holds open when every blocking reload
  returns at once (target: p99 <= HAProxy's, req/s >= HAProxy's).

Runs the throughput rounds, then the latency rounds; in each round HAProxy and livecast run
back to back, in alternating order. Prints each system's median over the rounds, the ratio
livecast / HAProxy round by round and its median (targets: req/s >= 1.0x HAProxy; added p99
<= HAProxy's, which is p99 livecast / HAProxy <= 1.0 since both add to the same backend), and
each balancer's own CPU time per request (median).

Needs: haproxy, nginx, wrk (apt-get install haproxy nginx wrk).
Usage: bench/balancer.py [--seconds 5] [--connections 64] [--workers 2] [--rounds 6]
                        [--object playlist|segment] [--load-connections 32,256]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

from common import build, check_wrk, cpu_seconds, free_port, wait_http, wrk

PLAYLIST = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:95\n" + "".join(
    f"#EXT-X-PROGRAM-DATE-TIME:2026-11-24T00:00:{i * 2:02d}.000Z\n#EXTINF:2.000,\ns-{95 + i}.ts\n" for i in range(6))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--latency-connections", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--load-connections", default="32,256",
                   help="comma-separated connection counts of the tail-under-load phase (empty: none)")
    p.add_argument("--object", choices=("playlist", "segment"), default="playlist",
                   help="what the viewers fetch: the live playlist, or a 700 KB MPEG-TS segment")
    args = p.parse_args()
    check_wrk()
    for tool in ("nginx", "haproxy"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: apt-get install {tool}")
    bin_dir = build("livecast-proxy")
    work = tempfile.mkdtemp(prefix="livecast-balancer-")
    os.chmod(work, 0o777)
    root = os.path.join(work, "www")
    os.makedirs(os.path.join(root, "hls", "bench"))
    with open(os.path.join(root, "hls", "bench", "index.m3u8"), "w") as f:
        f.write(PLAYLIST)
    segment = bytearray(os.urandom(700 * 1024))
    segment[::188] = b"\x47" * len(segment[::188])
    with open(os.path.join(root, "hls", "bench", "s-100.ts"), "wb") as f:
        f.write(segment)
    subprocess.run(["chmod", "-R", "a+rX", root], check=True)

    backend_port, nginx_port, haproxy_port, livecast_port = (free_port() for _ in range(4))
    conf = os.path.join(work, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""daemon off;
worker_processes {args.workers};
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  types {{ application/vnd.apple.mpegurl m3u8; video/mp2t ts; }}
  server {{
    listen 127.0.0.1:{backend_port};
    root {root};
    location = /readyz {{ return 200 "ready\\n"; }}
  }}
  upstream front_ends {{ server 127.0.0.1:{backend_port}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{nginx_port};
    location / {{
      proxy_pass http://front_ends;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }}
  }}
}}
""")
    hconf = os.path.join(work, "haproxy.cfg")
    with open(hconf, "w") as f:
        f.write(f"""global
  nbthread {args.workers}
  maxconn 8000
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
  option forwardfor
frontend viewers
  bind 127.0.0.1:{haproxy_port}
  default_backend front_ends
backend front_ends
  http-reuse always
  server web1 127.0.0.1:{backend_port}
""")
    procs = [subprocess.Popen(["nginx", "-p", work, "-c", conf, "-e", f"{work}/nginx-error.log"])]
    procs.append(subprocess.Popen(["haproxy", "-f", hconf, "-db"], stdout=subprocess.DEVNULL))
    env = dict(os.environ, TOKIO_WORKER_THREADS=str(args.workers), RUST_LOG="warn")
    procs.append(subprocess.Popen(
        [os.path.join(bin_dir, "livecast-proxy"), f"--listen=127.0.0.1:{livecast_port}",
         f"--admin-listen=127.0.0.1:{free_port()}", f"--backend=127.0.0.1:{backend_port}",
         f"--workers={args.workers}"], env=env))
    # The two balancers compared run next to each other in every round, in alternating order,
    # so the machine's drift (large on shared VMs) hits both alike.
    systems = {"haproxy": haproxy_port, "livecast": livecast_port, "nginx": nginx_port, "direct": backend_port}
    # The balancers' own CPU per request (nginx is left out: one nginx is both the backend and
    # the nginx balancer).
    own = {"haproxy": procs[1].pid, "livecast": procs[2].pid}
    path = "/hls/bench/index.m3u8" if args.object == "playlist" else "/hls/bench/s-100.ts"
    # Per system, every round's wrk figures and own CPU per request.
    throughput = {name: [] for name in systems}
    latency = {name: [] for name in systems}
    cpu_per_request = {name: [] for name in own}
    loads = [int(c) for c in args.load_connections.split(",") if c.strip()]
    # The tail under load: per connection count, per system, every round's wrk figures.
    under_load = {c: {name: [] for name in systems} for c in loads}
    phases = [("throughput", args.connections, 2, throughput),
              ("latency", args.latency_connections, 2, latency)]
    phases += [(f"load-c{c}", c, 1, under_load[c]) for c in loads]
    try:
        for port in systems.values():
            wait_http(port, path)
        for phase, connections, threads, figures in phases:
            for i in range(args.rounds):
                order = list(systems) if i % 2 == 0 else list(reversed(systems))
                for name in order:
                    if phase.startswith("load") and name not in own:
                        continue
                    cpu0 = cpu_seconds(own[name]) if name in own else 0.0
                    r = wrk(f"http://127.0.0.1:{systems[name]}{path}", threads, connections, args.seconds)
                    figures[name].append(r)
                    if phase == "throughput" and name in own:
                        cpu = cpu_seconds(own[name]) - cpu0
                        cpu_per_request[name].append(cpu / max(r[0] * args.seconds, 1) * 1e6)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait()
    median = statistics.median
    print(f"balancer: {path}, wrk -t2 -d{args.seconds}s, {args.workers} threads each, {args.rounds} rounds, medians")
    print(f"  {'system':<9} {'req/s @c' + str(args.connections):>14} {'errors':>7} {'p50 @c' + str(args.latency_connections):>10} "
          f"{'p99 @c' + str(args.latency_connections):>10} {'added p99':>10}")
    base = median(r[2] for r in latency["direct"])
    for name in ("direct", "haproxy", "nginx", "livecast"):
        rps = median(r[0] for r in throughput[name])
        errors = sum(r[3] for r in throughput[name] + latency[name])
        p50 = median(r[1] for r in latency[name])
        p99 = median(r[2] for r in latency[name])
        added = "" if name == "direct" else f"{p99 - base:8.3f}ms"
        print(f"  {name:<9} {rps:>14.0f} {errors:>7} {p50:>8.3f}ms {p99:>8.3f}ms {added:>10}")
    ratios = sorted(lc[0] / hp[0] for lc, hp in zip(throughput["livecast"], throughput["haproxy"]))
    print(f"  req/s livecast/haproxy round by round: {', '.join(f'{x:.2f}' for x in ratios)}; "
          f"median {median(ratios):.2f} (target >= 1.0); livecast/nginx median "
          f"{median(lc[0] / ng[0] for lc, ng in zip(throughput['livecast'], throughput['nginx'])):.2f}")
    lc_cpu, hp_cpu = median(cpu_per_request["livecast"]), median(cpu_per_request["haproxy"])
    print(f"  balancer CPU per request: livecast {lc_cpu:.2f} us, haproxy {hp_cpu:.2f} us, ratio {lc_cpu / hp_cpu:.2f}")
    added = {name: median(r[2] for r in latency[name]) - base for name in ("livecast", "haproxy", "nginx")}
    p99_ratios = sorted(lc[2] / hp[2] for lc, hp in zip(latency["livecast"], latency["haproxy"]))
    # Both balancers add to the same backend's latency, so livecast adds no more than HAProxy
    # exactly when its p99 is no higher; the ratio within a round is the figure drift spares.
    print(f"  added p99 (medians): livecast {added['livecast']:.3f} ms, haproxy {added['haproxy']:.3f} ms, "
          f"nginx {added['nginx']:.3f} ms")
    print(f"  p99 livecast/haproxy round by round: {', '.join(f'{x:.2f}' for x in p99_ratios)}; "
          f"median {median(p99_ratios):.2f} (target <= 1.0: added p99 no more than HAProxy's)")
    for c in loads:
        figures = under_load[c]
        lc, hp = figures["livecast"], figures["haproxy"]
        tail = sorted(a[2] / b[2] for a, b in zip(lc, hp))
        rate = sorted(a[0] / b[0] for a, b in zip(lc, hp))
        print(f"  under load, wrk -t1 -c{c}: livecast p50 {median(r[1] for r in lc):.3f} ms p99 "
              f"{median(r[2] for r in lc):.3f} ms, haproxy p50 {median(r[1] for r in hp):.3f} ms p99 "
              f"{median(r[2] for r in hp):.3f} ms")
        print(f"    p99 livecast/haproxy round by round: {', '.join(f'{x:.2f}' for x in tail)}; median "
              f"{median(tail):.2f} (target <= 1.0); req/s median {median(rate):.2f} (target >= 1.0); "
              f"errors {sum(r[3] for r in lc + hp)}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
