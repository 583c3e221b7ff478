#!/usr/bin/env python3
"""Log shipper throughput and memory: livecast-logship into an Elasticsearch `_bulk` stand-in.

The shipper runs pinned to one core (taskset) and ships --lines realistic access-log lines
(about 330 bytes each, as livecast-web writes them) into a stand-in that follows the `_bulk`
contract (gzip NDJSON in, one per-item status out) on the other core. Prints lines/s and MiB/s
(target >= 300k lines/s; Vector publishes 76.7 MiB/s file->tcp, fluent-bit 35, fluentd 26.1).

Then it measures peak memory while the sink is down: the stand-in answers 503 for
--down-secs while the whole backlog waits, then recovers; the shipper's peak RSS (VmHWM) is
printed (target <= 64 MB plus the buffer; the buffer is the disk spill, default cap 1 GiB,
which holds the whole backlog on disk, not in memory).

Usage: bench/logship.py [--lines 1000000] [--down-secs 10]
"""

import argparse
import http.server
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zlib

from common import build, free_port

ITEM = b'{"create":{"_index":"livecast-access","status":201}}'


class Stand:
    def __init__(self):
        self.lines = 0
        self.down_until = 0.0
        self.lock = threading.Lock()


def make_handler(stand):
    class Bulk(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            if time.monotonic() < stand.down_until:
                self.reply(503, b'{"error":"unavailable"}')
                return
            if self.headers.get("Content-Encoding") == "gzip":
                body = zlib.decompress(body, 31)
            n = body.count(b"\n") // 2
            with stand.lock:
                stand.lines += n
            self.reply(200, b'{"took":1,"errors":false,"items":[' + b",".join([ITEM] * n) + b"]}")

        def do_PUT(self):
            # The index template the shipper installs before its first _bulk request
            # (PUT /_index_template/<name>), acknowledged as Elasticsearch does.
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.reply(200, b'{"acknowledged":true}')

        def reply(self, status, payload):
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    return Bulk


def write_logs(path, count, start=0):
    ts = "2026-11-24T00:00:00.000Z"
    with open(path, "a") as f:
        for seq in range(start, start + count):
            f.write('{"@timestamp":"%s","client.ip":"10.1.%d.%d","http.request.method":"GET",'
                    '"url.path":"/hls/cam/s-%d.ts","http.response.status_code":200,'
                    '"http.response.body.bytes":716800,"event.duration":181000,'
                    '"user_agent.original":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/156.0",'
                    '"host.name":"web-1","livecast.stream":"cam","livecast.session":"%032x"}\n'
                    % (ts, seq % 250, seq % 199, seq, seq % 5000))


def vm_hwm_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def metric(admin, name):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def run_shipper(bin_dir, work, es_port, name, admin):
    state = os.path.join(work, f"state-{name}")
    return subprocess.Popen(
        ["taskset", "-c", "0", os.path.join(bin_dir, "livecast-logship"), f"--admin-listen=127.0.0.1:{admin}",
         f"--log-dir={work}/logs-{name}", f"--state-dir={state}", f"--elasticsearch-url=http://127.0.0.1:{es_port}"],
        env=dict(os.environ, RUST_LOG="warn", TOKIO_WORKER_THREADS="1"))


def wait_for(stand, target, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with stand.lock:
            if stand.lines >= target:
                return True
        time.sleep(0.01)
    return False


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lines", type=int, default=1_000_000)
    p.add_argument("--down-secs", type=int, default=10)
    args = p.parse_args()
    bin_dir = build("livecast-logship")
    work = tempfile.mkdtemp(prefix="livecast-logship-bench-")
    stand = Stand()
    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), make_handler(stand))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        os.sched_setaffinity(0, {1})
    except (AttributeError, OSError):
        pass

    # Throughput.
    os.makedirs(f"{work}/logs-rate")
    write_logs(f"{work}/logs-rate/web-1.log", args.lines)
    size = os.path.getsize(f"{work}/logs-rate/web-1.log")
    started = time.monotonic()
    shipper = run_shipper(bin_dir, work, port, "rate", free_port())
    ok = wait_for(stand, args.lines, 600)
    elapsed = time.monotonic() - started
    shipper.terminate()
    shipper.wait()
    if not ok:
        raise SystemExit(f"only {stand.lines} of {args.lines} lines arrived")
    rate = args.lines / elapsed
    print(f"throughput: {args.lines} lines ({size / 2**20:.0f} MiB) in {elapsed:.2f} s on one core: "
          f"{rate:,.0f} lines/s, {size / 2**20 / elapsed:.1f} MiB/s (target >= 300,000 lines/s)")

    # Memory while the sink is down.
    with stand.lock:
        stand.lines = 0
    os.makedirs(f"{work}/logs-down")
    write_logs(f"{work}/logs-down/web-1.log", args.lines)
    stand.down_until = time.monotonic() + args.down_secs
    admin = free_port()
    shipper = run_shipper(bin_dir, work, port, "down", admin)
    peak = 0
    while time.monotonic() < stand.down_until:
        peak = max(peak, vm_hwm_kb(shipper.pid))
        time.sleep(0.2)
    ok = wait_for(stand, args.lines, 600)
    peak = max(peak, vm_hwm_kb(shipper.pid))
    spilled = metric(admin, "livecast_logship_lines_spilled_total")
    dropped = metric(admin, "livecast_logship_spill_dropped_lines_total")
    shipper.terminate()
    shipper.wait()
    print(f"memory: sink down {args.down_secs} s with {args.lines} lines waiting, then back: "
          f"peak RSS {peak / 1024:.1f} MiB, all delivered: {ok}, lines through the disk spill: "
          f"{spilled:.0f}, dropped: {dropped:.0f} (target <= 64 MiB plus the buffer)")
    server.shutdown()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
