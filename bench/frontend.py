#!/usr/bin/env python3
"""Front-end throughput: livecast-web against Debian's nginx serving the same HLS files.

Both serve the same directory (a live-style playlist and a 700 KB MPEG-TS segment) with the
same number of worker threads (nginx worker_processes = livecast's tokio workers = --workers)
and both write an access log, as the reference design's front-ends did. wrk loads each in
turn with the same threads and connections; the script prints req/s, p50 and p99 per system
and file, and the ratio livecast / nginx (target >= 1.0).

Needs: nginx, wrk (apt-get install nginx wrk).
Usage: bench/frontend.py [--seconds 10] [--connections 64] [--workers 2] [--rounds 2]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

from common import build, check_wrk, free_port, wait_http, wrk


def make_volume(root):
    stream = os.path.join(root, "bench")
    os.makedirs(stream)
    segment = bytearray(os.urandom(700 * 1024))
    for i in range(0, len(segment), 188):
        segment[i] = 0x47
    with open(os.path.join(stream, "s-100.ts"), "wb") as f:
        f.write(segment)
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:2", "#EXT-X-MEDIA-SEQUENCE:95"]
    for i in range(95, 101):
        lines += [f"#EXT-X-PROGRAM-DATE-TIME:2026-11-24T00:00:{(i - 95) * 2:02d}.000Z", "#EXTINF:2.000,", f"s-{i}.ts"]
    with open(os.path.join(stream, "index.m3u8"), "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2, help="alternate the systems this many times; best run counts")
    args = p.parse_args()
    check_wrk()
    if not shutil.which("nginx"):
        raise SystemExit("nginx is missing: apt-get install nginx")
    bin_dir = build("livecast-web")
    work = tempfile.mkdtemp(prefix="livecast-frontend-")
    os.chmod(work, 0o777)
    hls = os.path.join(work, "hls")
    os.makedirs(hls)
    make_volume(hls)
    for d in ("nginx-logs", "livecast-logs"):
        os.makedirs(os.path.join(work, d))
        os.chmod(os.path.join(work, d), 0o777)
    subprocess.run(["chmod", "-R", "a+rX", hls], check=True)

    nginx_port = free_port()
    conf = os.path.join(work, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""daemon off;
worker_processes {args.workers};
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  types {{ application/vnd.apple.mpegurl m3u8; video/mp2t ts; }}
  access_log {work}/nginx-logs/access.log combined;
  server {{
    listen 127.0.0.1:{nginx_port};
    location /hls/ {{
      alias {hls}/;
      add_header Cache-Control "public, max-age=1";
      add_header Access-Control-Allow-Origin "*";
    }}
  }}
}}
""")
    nginx = subprocess.Popen(["nginx", "-p", work, "-c", conf, "-e", f"{work}/nginx-error.log"])
    web_port = free_port()
    env = dict(os.environ, TOKIO_WORKER_THREADS=str(args.workers), RUST_LOG="warn")
    web = subprocess.Popen(
        [os.path.join(bin_dir, "livecast-web"), f"--listen=127.0.0.1:{web_port}",
         f"--admin-listen=127.0.0.1:{free_port()}", f"--hls-dir={hls}",
         f"--access-log-dir={work}/livecast-logs", "--instance-name=bench"], env=env)
    systems = {"nginx": nginx_port, "livecast": web_port}
    results = {}
    try:
        for port in systems.values():
            wait_http(port, "/hls/bench/index.m3u8")
        for _ in range(args.rounds):
            for name, port in systems.items():
                for label, path in (("playlist", "/hls/bench/index.m3u8"), ("segment", "/hls/bench/s-100.ts")):
                    r = wrk(f"http://127.0.0.1:{port}{path}", 2, args.connections, args.seconds)
                    best = results.get((name, label))
                    if best is None or r[0] > best[0]:
                        results[(name, label)] = r
    finally:
        for proc in (nginx, web):
            proc.terminate()
            proc.wait()
    print(f"front-end throughput: wrk -t2 -c{args.connections} -d{args.seconds}s, {args.workers} workers each, best of {args.rounds}")
    for label in ("playlist", "segment"):
        for name in systems:
            rps, p50, p99, errors = results[(name, label)]
            print(f"  {label:<8} {name:<9} {rps:>10.0f} req/s  p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  errors {errors}")
        ratio = results[("livecast", label)][0] / results[("nginx", label)][0]
        print(f"  {label:<8} ratio livecast/nginx: {ratio:.2f} (target >= 1.0)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
