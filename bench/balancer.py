#!/usr/bin/env python3
"""Balancer throughput and added latency: livecast-proxy against HAProxy and nginx proxy_pass.

All three sit in front of the same backend (Debian nginx serving a live-style playlist) with
the same number of threads (HAProxy nbthread = nginx worker_processes = livecast's tokio
workers = --workers), keep-alive to the backend, and X-Forwarded-For added. wrk measures:

- throughput: req/s at --connections concurrent connections;
- added latency: p99 through the balancer minus p99 straight to the backend, at a light load
  (--latency-connections), where queueing does not hide the balancer's own cost.

Prints the figures and the ratios livecast / HAProxy (targets: req/s >= 1.0x HAProxy,
added p99 <= HAProxy's), and each balancer's own CPU time per request in its best round.

Needs: haproxy, nginx, wrk (apt-get install haproxy nginx wrk).
Usage: bench/balancer.py [--seconds 10] [--connections 64] [--workers 2] [--rounds 2]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

from common import build, check_wrk, free_port, wait_http, wrk

PLAYLIST = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:95\n" + "".join(
    f"#EXT-X-PROGRAM-DATE-TIME:2026-11-24T00:00:{i * 2:02d}.000Z\n#EXTINF:2.000,\ns-{95 + i}.ts\n" for i in range(6))


def cpu_seconds(pid):
    """User + system CPU seconds of a process, all its threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--latency-connections", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
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
  types {{ application/vnd.apple.mpegurl m3u8; }}
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
    systems = {"direct": backend_port, "haproxy": haproxy_port, "nginx": nginx_port, "livecast": livecast_port}
    # The balancers' own CPU per request (nginx is left out: one nginx is both the backend and
    # the nginx balancer).
    own = {"haproxy": procs[1].pid, "livecast": procs[2].pid}
    cpu_per_request = {}
    path = "/hls/bench/index.m3u8"
    throughput, latency = {}, {}
    try:
        for port in systems.values():
            wait_http(port, path)
        for _ in range(args.rounds):
            for name, port in systems.items():
                cpu0 = cpu_seconds(own[name]) if name in own else 0.0
                r = wrk(f"http://127.0.0.1:{port}{path}", 2, args.connections, args.seconds)
                if name not in throughput or r[0] > throughput[name][0]:
                    throughput[name] = r
                    if name in own:
                        cpu = cpu_seconds(own[name]) - cpu0
                        cpu_per_request[name] = cpu / max(r[0] * args.seconds, 1) * 1e6
                r = wrk(f"http://127.0.0.1:{port}{path}", 2, args.latency_connections, args.seconds)
                if name not in latency or r[2] < latency[name][2]:
                    latency[name] = r
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait()
    print(f"balancer: wrk -t2 -d{args.seconds}s, {args.workers} threads each, best of {args.rounds}")
    print(f"  {'system':<9} {'req/s @c' + str(args.connections):>14} {'errors':>7} {'p50 @c' + str(args.latency_connections):>10} "
          f"{'p99 @c' + str(args.latency_connections):>10} {'added p99':>10}")
    base = latency["direct"][2]
    for name in systems:
        rps, _, _, errors = throughput[name]
        _, p50, p99, _ = latency[name]
        added = "" if name == "direct" else f"{p99 - base:8.3f}ms"
        print(f"  {name:<9} {rps:>14.0f} {errors:>7} {p50:>8.3f}ms {p99:>8.3f}ms {added:>10}")
    ratio = throughput["livecast"][0] / throughput["haproxy"][0]
    print(f"  req/s ratio livecast/haproxy: {ratio:.2f} (target >= 1.0); livecast/nginx: "
          f"{throughput['livecast'][0] / throughput['nginx'][0]:.2f}")
    print(f"  balancer CPU per request (best throughput round): livecast {cpu_per_request['livecast']:.2f} us, "
          f"haproxy {cpu_per_request['haproxy']:.2f} us, ratio {cpu_per_request['livecast'] / cpu_per_request['haproxy']:.2f}")
    print(f"  added p99: livecast {latency['livecast'][2] - base:.3f} ms, haproxy {latency['haproxy'][2] - base:.3f} ms, "
          f"nginx {latency['nginx'][2] - base:.3f} ms (target: livecast <= haproxy)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
