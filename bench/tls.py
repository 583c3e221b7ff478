#!/usr/bin/env python3
"""The balancer over TLS: livecast-proxy against HAProxy terminating TLS, same certificate, same backend.

Both balancers run with 2 threads in front of one nginx serving a live playlist and a 700 KB
segment, with the same P-256 certificate (made here with openssl), ALPN h2 and http/1.1, and
keep-alive to the backend. In alternating rounds:

  - HTTP/1.1 over TLS: wrk (one thread, --connections) on each object: req/s and p99;
  - HTTP/2: h2load (one thread, --connections, --streams concurrent streams each) on each
    object: req/s, p50 and p99 (from h2load's per-request log);
  - handshakes per second: `openssl s_time` (one client, one request per connection) with a
    full handshake each time (-new) and with TLS 1.3 session resumption (-reuse);
  - resumption: a Python client resumes a session after other clients' 600 handshakes (a
    server with a small session cache forgets it);
  - with `--tests fixed`: h2load once more on each object over HTTP/1.1 (--h1) and HTTP/2,
    at a set total rate that both balancers reach (--rate), and p50 and p99 there. The other
    tests run each balancer flat out, where the one that serves more also takes more of the
    machine from the load generator; at one rate the tails compare like for like. Printed
    beside the targets, not as one;
  - with `--tests cpu`: each round, h2load sends a fixed number of requests (--cpu-requests
    for the playlist, a fortieth of that for the segment) over HTTP/2 and over HTTP/1.1
    (--h1) to each balancer, and the CPU time the balancer's process spent on them (user and
    kernel, from /proc) is divided by the requests. Like the instructions below, a cost per
    request rather than a rate, but with the kernel's share in it. Printed beside the
    targets;
  - with `--tests instructions` (needs valgrind): each balancer once more, under callgrind, for
    a fixed number of HTTP/2 playlist requests (--requests, after a warm-up): user-space
    instructions per request and their ratio. Unlike req/s, that count does not move with
    what else the machine runs; it leaves out the kernel's share and what memory costs.

Prints each round's figures, the medians and the ratios livecast / HAProxy (req/s: higher is
better; p99: lower is better), and whether each target is met (issue 18: req/s >= 1.0x,
p99 <= HAProxy's, TLS 1.3 resumption works).
Needs: nginx, haproxy, wrk, h2load (apt-get install nginx haproxy wrk nghttp2-client), openssl.
Usage: bench/tls.py [--seconds 5] [--connections 32] [--streams 10] [--rounds 3]
                    [--tests h1,h2,handshakes,fixed,cpu,instructions] [--requests 20000]
                    [--rate 500] [--cpu-requests 40000]
"""

import argparse
import os
import re
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

from common import build, cpu_seconds, free_port, stop, wait_http, wrk
from frontend import make_volume

OBJECTS = {"playlist": "/hls/bench/index.m3u8", "segment": "/hls/bench/s-100.ts"}


def h2load(url, connections, streams, seconds, log, extra=()):
    """Runs h2load (with `extra` arguments); returns (requests per second, p50 ms, p99 ms,
    failed requests)."""
    out = subprocess.run(
        ["h2load", "-t1", f"-c{connections}", f"-m{streams}", f"-D{seconds}",
         f"--log-file={log}", *extra, url],
        check=True, capture_output=True, text=True).stdout
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))
    failed = int(re.search(r"requests: .*? (\d+) failed", out).group(1))
    # Each line: start time, status, time to the answer's end in microseconds (the last column).
    with open(log) as f:
        durations = sorted(int(line.split()[-1]) for line in f if line.strip())
    os.unlink(log)
    def at(q):
        return durations[min(len(durations) - 1, int(len(durations) * q))] / 1000.0 if durations else 0.0
    return rps, at(0.5), at(0.99), failed


def s_time(port, path, reuse, seconds):
    """Handshakes per second of one sequential client (openssl s_time), TLS 1.3."""
    out = subprocess.run(
        ["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-www", path, "-tls1_3",
         "-reuse" if reuse else "-new", "-time", str(seconds)],
        capture_output=True, text=True, stdin=subprocess.DEVNULL).stdout
    m = re.search(r"(\d+) connections in ([\d.]+)s", out)
    if not m:
        raise SystemExit(f"openssl s_time printed nothing usable:\n{out}")
    return int(m.group(1)) / float(m.group(2))


def resumes(port, others):
    """Whether a TLS 1.3 session survives `others` other clients' full handshakes."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_3

    def fetch(session=None):
        with socket.create_connection(("127.0.0.1", port)) as raw:
            with context.wrap_socket(raw, server_hostname="localhost", session=session) as s:
                s.sendall(b"GET /hls/bench/index.m3u8 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                while s.recv(65536):
                    pass
                return s.session, s.session_reused

    session, _ = fetch()
    for _ in range(others):
        fetch()
    _, reused = fetch(session)
    return reused


def cpu_per_request(pid, url, proto, requests, connections, streams):
    """Microseconds of CPU (user and kernel) process `pid` spends per request of `requests`
    sent by h2load over `proto` (h1: HTTP/1.1, one request at a time per connection)."""
    extra = ["--h1", "-m1"] if proto == "h1" else [f"-m{streams}"]
    before = cpu_seconds(pid)
    done = subprocess.run(["h2load", "-t1", f"-c{connections}", f"-n{requests}"] + extra + [url],
                          check=True, capture_output=True, text=True).stdout
    used = cpu_seconds(pid) - before
    if f"{requests} succeeded" not in done:
        raise SystemExit(f"not every request succeeded ({proto} {url}):\n{done}")
    return used * 1e6 / requests


def instructions(command, port, requests, connections, streams, work):
    """User-space instructions per HTTP/2 playlist request of `command` (a balancer listening
    with TLS on `port`) under callgrind: counted from zero after a warm-up of 2,000 requests."""
    out = os.path.join(work, "callgrind.%p")
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                             "--dump-instr=no"] + command,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"https://127.0.0.1:{port}{OBJECTS['playlist']}"
    load = ["h2load", "-t1", f"-c{connections}", f"-m{streams}"]
    try:
        deadline = time.monotonic() + 60
        while subprocess.run(load[:2] + ["-c1", "-n1", url], capture_output=True,
                             text=True).stdout.find("1 succeeded") < 0:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"{command[0]} did not serve under valgrind on port {port}")
            time.sleep(0.5)
        time.sleep(1.5)  # the balancer reports ready once its backend's health check passed
        subprocess.run(load + ["-n2000", url], check=True, capture_output=True)
        subprocess.run(["callgrind_control", "--zero", str(proc.pid)], check=True, capture_output=True)
        done = subprocess.run(load + [f"-n{requests}", url], check=True, capture_output=True,
                              text=True).stdout
        if f"{requests} succeeded" not in done:
            raise SystemExit(f"{command[0]}: not every request succeeded under valgrind:\n{done}")
        subprocess.run(["callgrind_control", "--dump", str(proc.pid)], check=True, capture_output=True)
        dump = out.replace("%p", str(proc.pid)) + ".1"
        deadline = time.monotonic() + 30
        while not os.path.exists(dump) and time.monotonic() < deadline:
            time.sleep(0.2)
        with open(dump) as f:
            total = next(int(line.split()[1]) for line in f if line.startswith(("summary:", "totals:")))
        return total / requests
    finally:
        stop([proc])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--streams", type=int, default=10, help="concurrent HTTP/2 streams per connection")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--tests", default="h1,h2,handshakes",
                   help="which of h1, h2, handshakes, fixed, cpu, instructions to run")
    p.add_argument("--cpu-requests", type=int, default=40000,
                   help="playlist requests per CPU measurement (--tests cpu); segments: a fortieth")
    p.add_argument("--rate", type=int, default=500,
                   help="total requests per second of --tests fixed (both balancers must reach it)")
    p.add_argument("--requests", type=int, default=20000,
                   help="HTTP/2 playlist requests counted under callgrind (--tests instructions)")
    p.add_argument("--objects", default="playlist,segment", help="which of playlist, segment to fetch")
    args = p.parse_args()
    tests = set(args.tests.split(","))
    objects = {name: OBJECTS[name] for name in args.objects.split(",")}
    for tool in ("nginx", "haproxy", "wrk", "h2load", "openssl"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: apt-get install nginx haproxy wrk nghttp2-client openssl")
    if "instructions" in tests and not shutil.which("callgrind_control"):
        raise SystemExit("valgrind is missing (--tests instructions): apt-get install valgrind")
    bin_dir = build("livecast-proxy")
    work = tempfile.mkdtemp(prefix="livecast-tls-")
    os.chmod(work, 0o777)
    hls = os.path.join(work, "hls")
    os.makedirs(hls)
    make_volume(hls)
    subprocess.run(["chmod", "-R", "a+rX", work], check=True)
    cert, key, both = (os.path.join(work, n) for n in ("cert.pem", "key.pem", "both.pem"))
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-subj", "/CN=localhost", "-days", "2", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    with open(both, "w") as f:
        f.write(open(cert).read() + open(key).read())

    backend, haproxy_port, livecast_port = free_port(), free_port(), free_port()
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
  server {{ listen 127.0.0.1:{backend}; location /hls/ {{ alias {hls}/; }} location = /readyz {{ return 200; }} }}
}}
""")
    def haproxy(port):
        """HAProxy's command line, serving TLS on `port`."""
        hconf = os.path.join(work, f"haproxy-{port}.cfg")
        with open(hconf, "w") as f:
            f.write(f"""global
  nbthread {args.workers}
  maxconn 8000
  ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
  option forwardfor
frontend viewers
  bind 127.0.0.1:{port} ssl crt {both} alpn h2,http/1.1
  default_backend front_ends
backend front_ends
  http-reuse always
  server web1 127.0.0.1:{backend}
""")
        return ["haproxy", "-f", hconf, "-db"]

    def livecast(port):
        """livecast-proxy's command line, serving TLS on `port`."""
        return [os.path.join(bin_dir, "livecast-proxy"), f"--listen=127.0.0.1:{port}",
                f"--admin-listen=127.0.0.1:{free_port()}", f"--backend=127.0.0.1:{backend}",
                f"--workers={args.workers}", f"--tls-cert={cert}", f"--tls-key={key}"]

    env = dict(os.environ, RUST_LOG="warn")
    procs = [subprocess.Popen(["nginx", "-p", work, "-c", conf, "-e", f"{work}/nginx-error.log"])]
    try:
        wait_http(backend, "/readyz")
        procs.append(subprocess.Popen(haproxy(haproxy_port), stdout=subprocess.DEVNULL))
        procs.append(subprocess.Popen(livecast(livecast_port), env=env))
        systems = {"livecast": livecast_port, "haproxy": haproxy_port}
        for port in systems.values():
            deadline = time.monotonic() + 10
            while subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-brief"],
                                 input="", capture_output=True, text=True).returncode != 0:
                if time.monotonic() > deadline:
                    raise SystemExit(f"nothing speaks TLS on 127.0.0.1:{port}")
                time.sleep(0.2)
        # The balancer reports ready once its backend's health check passed.
        time.sleep(1.5)
        figures = {}  # (test, system) -> list of (req/s or handshakes/s, p99 ms)
        at_one_rate = set()  # tests run at --rate: beside the targets, only their tails compare
        per_request = set()  # CPU per request: beside the targets, lower is better
        pids = {"haproxy": procs[1].pid, "livecast": procs[2].pid}

        def note(test, name, value, p99=None):
            figures.setdefault((test, name), []).append((value, p99))

        log = os.path.join(work, "h2load.log")
        for round_ in range(args.rounds):
            order = list(systems) if round_ % 2 == 0 else list(systems)[::-1]
            for name in order:
                port = systems[name]
                line = []
                for obj, path in objects.items():
                    url = f"https://127.0.0.1:{port}{path}"
                    if "h1" in tests:
                        rps, _, p99, errors = wrk(url, 1, args.connections, args.seconds)
                        if errors:
                            raise SystemExit(f"{name}: {errors} failed HTTP/1.1 requests")
                        note(f"http/1.1 {obj}", name, rps, p99)
                        line.append(f"h1 {obj} {rps:8.0f} req/s p99 {p99:6.2f} ms")
                    if "h2" in tests:
                        rps, p50, p99, failed = h2load(url, args.connections, args.streams, args.seconds, log)
                        if failed:
                            raise SystemExit(f"{name}: {failed} failed HTTP/2 requests")
                        note(f"http/2 {obj}", name, rps, p99)
                        line.append(f"h2 {obj} {rps:8.0f} req/s p50 {p50:6.2f} p99 {p99:6.2f} ms")
                    for proto in ("h1", "h2") if "fixed" in tests else ():
                        extra = [f"--rps={args.rate / args.connections:g}"]
                        extra += ["--h1"] if proto == "h1" else []
                        streams = 1 if proto == "h1" else args.streams
                        rps, p50, p99, failed = h2load(url, args.connections, streams, args.seconds,
                                                       log, extra)
                        if failed:
                            raise SystemExit(f"{name}: {failed} failed requests at a fixed rate")
                        if rps < 0.95 * args.rate:
                            raise SystemExit(f"{name}: {rps:.0f} req/s, short of --rate {args.rate} "
                                             f"({proto} {obj}): ask for less")
                        test = f"{proto} {obj} at {args.rate}/s"
                        at_one_rate.add(test)
                        note(test, name, rps, p99)
                        line.append(f"{proto} {obj} at {args.rate}/s p50 {p50:6.2f} p99 {p99:6.2f} ms")
                    for proto in ("h2", "h1") if "cpu" in tests else ():
                        requests = args.cpu_requests // (40 if obj == "segment" else 1)
                        pid = pids[name]
                        used = cpu_per_request(pid, url, proto, requests, args.connections, args.streams)
                        test = f"cpu {proto} {obj}"
                        per_request.add(test)
                        note(test, name, used)
                        line.append(f"cpu {proto} {obj} {used:7.1f} us/req")
                for reuse in (False, True) if "handshakes" in tests else ():
                    rate = s_time(port, OBJECTS["playlist"], reuse, args.seconds)
                    test = "handshakes resumed" if reuse else "handshakes full"
                    note(test, name, rate)
                    line.append(f"{test} {rate:6.0f}/s")
                print(f"round {round_ + 1} {name:<8} " + " | ".join(line), flush=True)

        counted = {}
        if "instructions" in tests:
            # One at a time, while the balancers measured above stand idle.
            for name, command in (("livecast", livecast), ("haproxy", haproxy)):
                port = free_port()
                counted[name] = instructions(command(port), port, args.requests,
                                             args.connections, args.streams, work)
                print(f"{name:<8} {counted[name]:8.0f} user-space instructions per HTTP/2 "
                      "playlist request (callgrind)", flush=True)
        print("\nmedians, ratio livecast / haproxy (req/s and handshakes/s: >= 1.0 is the target; "
              "p99: <= 1.0)")
        met = True
        for test in dict.fromkeys(t for t, _ in figures):
            lc, hp = figures[(test, "livecast")], figures[(test, "haproxy")]
            fixed = test in at_one_rate
            rate = statistics.median(v for v, _ in lc) / statistics.median(v for v, _ in hp)
            if test in per_request:
                print(f"  {test:<20} ratio {rate:5.2f} ({statistics.median(v for v, _ in lc):.1f} vs "
                      f"{statistics.median(v for v, _ in hp):.1f} us of CPU per request; lower is "
                      "better, beside the targets)")
                continue
            text = f"  {test:<20} " + ("          " if fixed else f"rate {rate:5.2f}")
            met &= fixed or rate >= 1.0
            if lc[0][1] is not None:
                tail = statistics.median(p for _, p in lc) / statistics.median(p for _, p in hp)
                text += f"  p99 {tail:5.2f} ({statistics.median(p for _, p in lc):.2f} vs " \
                        f"{statistics.median(p for _, p in hp):.2f} ms)"
                met &= fixed or tail <= 1.0
                text += " (beside the targets)" if fixed else ""
            print(text)
        if counted:
            print(f"  {'instructions/request':<20} ratio {counted['livecast'] / counted['haproxy']:5.2f}"
                  " (lower is better; the targets are req/s and p99)")
        for name, port in systems.items():
            ok = resumes(port, 600)
            met &= ok
            print(f"  {name:<8} resumes a TLS 1.3 session after 600 other clients: {'yes' if ok else 'NO'}")
        if all(test in at_one_rate | per_request for test, _ in figures):
            print("targets: not measured (they are the h1 and h2 tests' req/s and p99)")
        else:
            print(f"targets: {'met' if met else 'NOT all met'}")
    finally:
        stop(procs)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
