#!/usr/bin/env python3
"""Memory per viewer: idle kept-alive viewer connections on the balancer and on a front-end.

Balancer: --balancer-viewers connections (10,000 by default) to livecast-proxy and, in turn,
to HAProxy, both with 2 threads in front of the same nginx backend. Front-end: --web-viewers
connections (3,000) to livecast-web and to nginx (2 workers each) serving one stream. Each
connection fetches the stream's playlist once and then stays open and idle, as a player's
connection does between reloads. The figure is the server's proportional set size (PSS, the
sum over its processes, from /proc/PID/smaps_rollup) with the viewers connected minus before,
per connection, measured once the count has held still for three seconds.

Targets (issue 18): livecast-proxy <= HAProxy per connection (HAProxy documents about 50 kB);
a front-end <= 100 MB in all at 3,000 viewers of one stream.

Needs: haproxy, nginx (apt-get install haproxy nginx); two descriptors per balancer viewer
under `ulimit -n` for HAProxy (the viewer count is lowered to fit, and says so).
Usage: bench/memory.py [--balancer-viewers 10000] [--web-viewers 3000] [--pace N]
"""

import argparse
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from common import build, free_port, stop, wait_http
from frontend import make_volume

PATH = "/hls/bench/index.m3u8"
# Timeouts long enough that no idle viewer is closed while it is counted.
IDLE_SECS = 600


def pss_kb(pid):
    """PSS of `pid` and its children (nginx's workers), in kB."""
    pids = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            pids += [int(p) for p in f.read().split()]
    except OSError:
        pass
    total = 0
    for p in pids:
        with open(f"/proc/{p}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
    return total


def settle(pid, still=3, longest=20):
    """PSS once it has held still for `still` seconds in a row (at most `longest` s): an
    allocator gives memory back some time after it was freed (mimalloc a second after, when
    it next frees a page), and the figure is what the viewers cost from then on."""
    last = pss_kb(pid)
    held = 0
    for _ in range(longest):
        time.sleep(1)
        now = pss_kb(pid)
        held = held + 1 if abs(now - last) < 64 else 0
        last = now
        if held >= still:
            break
    return last


def connect_viewers(port, count):
    """Opens `count` connections, each fetching the playlist once; returns the open sockets."""
    request = f"GET {PATH} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    viewers = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = s.recv(65536)
            if not chunk:
                raise SystemExit(f"127.0.0.1:{port} closed a viewer before answering")
            answer += chunk
        if not answer.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"127.0.0.1:{port} answered {answer[:40]!r}")
        viewers.append(s)
    return viewers


def measure(name, pid, port, count, pace=0):
    """`pace`: viewers arrive in groups of this many, 0.3 s apart (0: all at once, one after
    the other)."""
    wait_http(port, PATH)
    before = settle(pid)
    viewers = []
    while len(viewers) < count:
        group = count - len(viewers) if pace <= 0 else min(pace, count - len(viewers))
        viewers += connect_viewers(port, group)
        if pace > 0:
            time.sleep(0.3)
    after = settle(pid)
    # Still open: the server kept every viewer.
    alive = sum(1 for s in viewers if not closed(s))
    for s in viewers:
        s.close()
    per = (after - before) / count
    print(f"  {name:<9} {count:>6} viewers: {before / 1024:7.1f} MiB -> {after / 1024:7.1f} MiB, "
          f"{per:6.1f} kB per connection, {alive} still open", flush=True)
    return per, after


def closed(sock):
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    finally:
        sock.setblocking(True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--balancer-viewers", type=int, default=10_000)
    p.add_argument("--web-viewers", type=int, default=3_000, help="0: no front-end run")
    p.add_argument("--pace", type=int, default=0,
                   help="viewers arrive in groups of this many, 0.3 s apart (default: all at once)")
    args = p.parse_args()
    for tool in ("nginx", "haproxy"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: apt-get install {tool}")
    # The servers inherit the limit. HAProxy reserves two descriptors per connection it may
    # hold (the viewer's and a server side), so the balancer's viewers are half of it.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, hard), hard))
    except (ValueError, OSError):
        pass
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    fit = (limit - 1000) // 2
    if args.balancer_viewers > fit:
        print(f"ulimit -n is {limit}: the balancer gets {fit} viewers, not {args.balancer_viewers} "
              f"(raise the hard limit for more)")
        args.balancer_viewers = fit
    need = max(args.balancer_viewers, args.web_viewers) + 1000
    bin_dir = build("livecast-proxy", "livecast-web")
    work = tempfile.mkdtemp(prefix="livecast-memory-")
    os.chmod(work, 0o777)
    hls = os.path.join(work, "hls")
    os.makedirs(hls)
    make_volume(hls)
    logs = os.path.join(work, "logs")
    os.makedirs(logs)
    subprocess.run(["chmod", "-R", "a+rwX", work], check=True)
    backend, nginx_web = free_port(), free_port()
    conf = os.path.join(work, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""daemon off;
worker_processes 2;
worker_rlimit_nofile {limit};
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
events {{ worker_connections {limit - 100}; }}
http {{
  access_log off;
  keepalive_timeout {IDLE_SECS}s;
  keepalive_requests 1000000;
  types {{ application/vnd.apple.mpegurl m3u8; video/mp2t ts; }}
  server {{ listen 127.0.0.1:{backend}; location /hls/ {{ alias {hls}/; }} location = /readyz {{ return 200; }} }}
  server {{ listen 127.0.0.1:{nginx_web}; location /hls/ {{ alias {hls}/; }} }}
}}
""")
    hconf = os.path.join(work, "haproxy.cfg")
    haproxy_port = free_port()
    with open(hconf, "w") as f:
        f.write(f"""global
  nbthread 2
  maxconn {args.balancer_viewers + 400}
defaults
  mode http
  timeout connect 1s
  timeout client {IDLE_SECS}s
  timeout server {IDLE_SECS}s
  timeout http-keep-alive {IDLE_SECS}s
  option http-keep-alive
  option forwardfor
frontend viewers
  bind 127.0.0.1:{haproxy_port}
  default_backend front_ends
backend front_ends
  http-reuse always
  server web1 127.0.0.1:{backend}
""")
    env = dict(os.environ, TOKIO_WORKER_THREADS="2", RUST_LOG="warn")
    nginx = subprocess.Popen(["nginx", "-p", work, "-c", conf, "-e", f"{work}/nginx-error.log"])
    procs = [nginx]
    try:
        wait_http(backend, PATH)
        print(f"memory per idle kept-alive viewer (PSS after minus before, 2 threads or workers each)")
        print(f"balancer, {args.balancer_viewers} viewers, same nginx backend:")
        proxy_port = free_port()
        proxy = subprocess.Popen(
            [os.path.join(bin_dir, "livecast-proxy"), f"--listen=127.0.0.1:{proxy_port}",
             f"--admin-listen=127.0.0.1:{free_port()}", f"--backend=127.0.0.1:{backend}",
             "--workers=2", f"--max-connections={need}", f"--header-timeout-secs={IDLE_SECS}"], env=env)
        procs.append(proxy)
        lc, _ = measure("livecast", proxy.pid, proxy_port, args.balancer_viewers, args.pace)
        stop([proxy])
        haproxy = subprocess.Popen(["haproxy", "-f", hconf, "-db"], stdout=subprocess.DEVNULL)
        procs.append(haproxy)
        hp, _ = measure("haproxy", haproxy.pid, haproxy_port, args.balancer_viewers, args.pace)
        stop([haproxy])
        ratio = f"{lc / hp:.2f}" if hp > 0 else "n/a (haproxy grew by nothing measurable)"
        print(f"  per connection livecast/haproxy: {ratio} (target <= 1.0)")
        if args.web_viewers <= 0:
            return 0
        print(f"front-end, {args.web_viewers} viewers of one stream:")
        web_port = free_port()
        web = subprocess.Popen(
            [os.path.join(bin_dir, "livecast-web"), f"--listen=127.0.0.1:{web_port}",
             f"--admin-listen=127.0.0.1:{free_port()}", f"--hls-dir={hls}", f"--access-log-dir={logs}",
             "--instance-name=bench", f"--max-connections={need}", f"--header-timeout-secs={IDLE_SECS}"],
            env=env)
        procs.append(web)
        lw, total = measure("livecast", web.pid, web_port, args.web_viewers, args.pace)
        stop([web])
        ng, _ = measure("nginx", nginx.pid, nginx_web, args.web_viewers, args.pace)
        ratio = f"{lw / ng:.2f}" if ng > 0 else "n/a (nginx grew by nothing measurable)"
        print(f"  per connection livecast/nginx: {ratio}; livecast-web in all: {total / 1024:.1f} MiB "
              f"(target <= 100 MiB)")
    finally:
        stop(procs)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
