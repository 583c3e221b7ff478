#!/usr/bin/env python3
"""The fault suite: faults and hostile input against a whole stack on loopback, under load.

Starts the real services as separate processes (ingest, three front-ends, the balancer, the
shipper), a real ffmpeg publisher, and an audience of viewers that behave like players
(livecast-loadtest: each with its own session cookie, LL-HLS blocking reloads, preload hints
and parts, a playback clock that counts stalls). Then it breaks things one case at a time and prints, for each case, what
viewers saw: failed requests of total, stalls, seconds until playback resumed; for the
shipper, lines delivered of lines written and duplicates; and the RSS of every process before,
at the peak and after.

    scripts/chaos.py            # the long version (publisher away up to 30 s, sink down 60 s)
    scripts/chaos.py --short    # every case briefly (what CI runs)

Needs root for the full-disk cases (they mount size-limited tmpfs volumes), ffmpeg, and the
workspace built (`cargo build --bins`; the script runs it). Only loopback is used. Exits
non-zero when a case misses its target, after printing the whole table.
"""

import argparse
import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
from common import ROOT, free_port, make_clip, wait_http, wait_port  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Audience, Bulk, metric  # noqa: E402

STREAM = "chaos"


# ---------------------------------------------------------------------------------------------
# Processes


class Service:
    """One service process, with its output in the work directory."""

    def __init__(self, work, name, argv):
        self.work, self.name, self.argv = work, name, argv
        self.proc = None
        self.peak_kb = 0
        self.start()

    def start(self):
        log = open(os.path.join(self.work, f"{self.name}.out"), "ab")
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=log, env=env)

    def wait_port(self, port):
        wait_port(port, proc=self.proc, log=os.path.join(self.work, f"{self.name}.out"))

    def rss_kb(self):
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        kb = int(line.split()[1])
                        self.peak_kb = max(self.peak_kb, kb)
                        return kb
        except OSError:
            pass
        return 0

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout=20):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill9()

    def restart(self):
        self.stop()
        self.start()


class Relay:
    """A TCP relay in front of one front-end that can stop forwarding (a network cut: packets
    vanish, connections neither answer nor close)."""

    def __init__(self, target_port):
        self.target = target_port
        self.port = free_port()
        self.cut = threading.Event()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(512)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client):
        if self.cut.is_set():
            return  # accepted and never answered, never closed: a black hole
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
        except OSError:
            client.close()
            return
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                while self.cut.is_set():
                    time.sleep(0.05)  # held, as a cut link holds it
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class Tmpfs:
    """A size-limited tmpfs (needs root), so a full disk is a real full disk."""

    def __init__(self, path, mb):
        os.makedirs(path, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mb}m,mode=0777", "tmpfs", path], check=True)
        self.path = path

    def fill(self):
        filler = os.path.join(self.path, ".filler")
        # Opening, writing and the close's last flush can each meet the full disk.
        try:
            with open(filler, "wb") as f:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
        except OSError:
            pass
        return filler

    def close(self):
        subprocess.run(["umount", "-l", self.path], check=False)


# ---------------------------------------------------------------------------------------------
# Viewers


class Browsers(threading.Thread):
    """Two real players in headless Chromium for the whole run (e2e/recover.mjs): the player
    page and a bare hls.js page with default settings. Keeps their samples, so each case can
    be judged by what hls.js did: fatal errors, and the longest time the picture stood still."""

    def __init__(self, port, seconds):
        super().__init__(daemon=True)
        driver = os.path.join(ROOT, "e2e", "recover.mjs")
        if not os.path.isdir(os.path.join(ROOT, "e2e", "node_modules", "playwright-core")):
            raise SystemExit("run `npm ci --prefix e2e` first (scripts/test.sh does)")
        self.proc = subprocess.Popen(["node", driver, f"http://127.0.0.1:{port}", STREAM, str(seconds)],
                                     stdout=subprocess.PIPE, text=True)
        self.samples = []
        self.start()

    def run(self):
        for line in self.proc.stdout:
            try:
                v = json.loads(line)
            except ValueError:
                continue
            self.samples.append((time.monotonic(), v["page"], v["plain"]))

    def judge(self, since, until):
        """(fatal errors that began in [since, until], longest freeze in seconds, the first
        such error's text) per page. A page that stays failed counts once, where it failed."""
        out = {}
        for key in ("page", "plain"):
            ordered = [(t, page if key == "page" else plain) for t, page, plain in self.samples]
            began = [x["fatal"] for (_, before), (t, x) in zip([(0, {})] + ordered, ordered)
                     if since <= t <= until and x.get("fatal") and not before.get("fatal")]
            window = [(t, x) for t, x in ordered if since <= t <= until]
            fatal = len(began)
            longest, still_since, last_time = 0.0, None, None
            for t, x in window:
                if last_time is not None and x["time"] <= last_time + 0.01:
                    still_since = still_since or t
                    longest = max(longest, t - still_since)
                else:
                    still_since = None
                last_time = x["time"]
            out[key] = (fatal, round(longest, 1), began[0] if began else None)
        return out

    def close(self):
        self.proc.kill()


# ---------------------------------------------------------------------------------------------
# The stack


class Stack:
    def __init__(self, work, bins, hls_dir, log_dir, webs=3):
        self.work, self.bins = work, bins
        self.hls_dir, self.log_dir = hls_dir, log_dir
        self.rtmp, self.proxy_port = free_port(), free_port()
        self.admin = {}
        self.services = {}
        self.bulk = Bulk()
        self.ingest_argv = [
            f"{bins}/livecast-ingest", f"--rtmp-listen=127.0.0.1:{self.rtmp}",
            f"--admin-listen=127.0.0.1:{self._admin('ingest')}", f"--hls-dir={hls_dir}",
            "--reconnect-grace-secs=60", "--window=10"]
        self.services["ingest"] = Service(work, "ingest", self.ingest_argv)
        self.web_ports = []
        for i in range(webs):
            port = free_port()
            self.web_ports.append(port)
            self.services[f"web-{i}"] = Service(work, f"web-{i}", [
                f"{bins}/livecast-web", f"--listen=127.0.0.1:{port}",
                f"--admin-listen=127.0.0.1:{self._admin(f'web-{i}')}", f"--hls-dir={hls_dir}",
                f"--access-log-dir={log_dir}", f"--instance-name=web-{i}"])
        # Front-end 0 is reached through a relay that can cut the link.
        self.relay = Relay(self.web_ports[0])
        backends = [f"127.0.0.1:{self.relay.port}"] + [f"127.0.0.1:{p}" for p in self.web_ports[1:]]
        self.services["proxy"] = Service(work, "proxy", [
            f"{bins}/livecast-proxy", f"--listen=127.0.0.1:{self.proxy_port}",
            f"--admin-listen=127.0.0.1:{self._admin('proxy')}", f"--backend={','.join(backends)}"])
        self.services["logship"] = Service(work, "logship", [
            f"{bins}/livecast-logship", f"--admin-listen=127.0.0.1:{self._admin('logship')}",
            f"--log-dir={log_dir}", f"--state-dir={work}/logship-state",
            f"--elasticsearch-url=http://127.0.0.1:{self.bulk.port}", "--poll-interval-ms=200"])
        for port in self.web_ports:
            wait_http(port, "/readyz")
        self.services["ingest"].wait_port(self.rtmp)
        self.services["proxy"].wait_port(self.proxy_port)
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self):
        """Keeps every process's peak RSS."""
        while True:
            self.rss()
            time.sleep(0.5)

    def _admin(self, name):
        self.admin[name] = free_port()
        return self.admin[name]

    def metric(self, service, name):
        return metric(self.admin[service], name, absent=0.0)

    def rss(self):
        return {name: s.rss_kb() for name, s in self.services.items()}

    def close(self):
        for s in self.services.values():
            s.stop(5)
        self.bulk.shutdown()


class Publisher:
    def __init__(self, clip, rtmp):
        self.clip, self.rtmp = clip, rtmp
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1",
             "-i", self.clip, "-c", "copy", "-f", "flv", f"rtmp://127.0.0.1:{self.rtmp}/live/{STREAM}"],
            stdin=subprocess.DEVNULL)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def wait_until(what, timeout, check):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


# ---------------------------------------------------------------------------------------------
# Cases. Each returns a row: viewers' view of the case, and whether it met its target.


class Row(dict):
    pass


def viewers_row(case, crowd, hints_allowed=0, recover=None, note=""):
    """The row of a case judged by the audience: no request may fail, except, up to
    `hints_allowed`, early requests for preload-hinted parts that the ingest never listed
    (a write of it failed, or the publish or the ingest ended first). Those are answered
    404: the bytes past the listed parts may be a torn write or an older segment's."""
    requests, failures, stalls, stalled = crowd.totals()
    failed = sum(failures.values())
    hints = sum(n for kind, n in failures.items() if kind.startswith("hint "))
    if hints:
        note = f"{hints} hinted parts never listed (at most {hints_allowed:.0f}); {note}".rstrip("; ")
    row = Row(case=case, requests=requests, failed=failed, kinds=failures, stalls=stalls,
              stalled_s=round(stalled, 1), recover_s=recover, note=note)
    row["ok"] = failed == hints and hints <= hints_allowed
    return row


def case_web_kill9(stack, crowd, a):
    crowd.reset()
    time.sleep(a.settle)
    stack.services["web-1"].kill9()
    time.sleep(a.hold)
    stack.services["web-1"].start()
    wait_http(stack.web_ports[1], "/readyz")
    time.sleep(a.settle)
    return viewers_row("front-end kill -9", crowd)


def case_web_cold_restart(stack, crowd, a):
    crowd.reset()
    stack.services["web-2"].restart()
    wait_http(stack.web_ports[2], "/readyz")
    # A burst of new viewers arrives at once, some on the cold front-end.
    burst = Audience(os.path.join(stack.bins, "livecast-loadtest"), stack.proxy_port, a.burst, STREAM,
                     stack.work, name="burst")
    time.sleep(a.hold)
    row = viewers_row("front-end restart, cold cache, burst", crowd)
    r2, f2, _, _ = burst.totals()
    burst.close()
    row["requests"] += r2
    row["failed"] += sum(f2.values())
    row["ok"] = row["failed"] == 0
    row["note"] = f"{a.burst} viewers joined at once"
    return row


def publisher_returns(crowd, a, publisher, before, case):
    """Starts the publisher again and waits until every viewer fetched media of the new
    session; the case's target: each within 5 s of the publisher's return."""
    back = time.monotonic()
    publisher.start()
    wait_until("new media", a.hold + 15, lambda: all(t is not None for t in crowd.resumed_after(back, before)))
    times = [t for t in crowd.resumed_after(back, before) if t is not None]
    worst = round(max(times), 1) if len(times) == len(crowd.viewers) else None
    # The part being built when the publish (or the ingest) stopped may never be listed:
    # one hinted request per viewer.
    row = viewers_row(case, crowd, hints_allowed=len(crowd.viewers), recover=worst)
    row["ok"] = row["ok"] and worst is not None and worst <= 5.0
    return row


def case_publisher_drop(stack, crowd, a, publisher, away):
    crowd.reset()
    time.sleep(a.settle)
    before = crowd.sessions()
    publisher.kill()
    time.sleep(away)
    return publisher_returns(crowd, a, publisher, before, f"publisher away {away} s")


def case_ingest_restart(stack, crowd, a, publisher, how):
    crowd.reset()
    time.sleep(a.settle)
    before = crowd.sessions()
    publisher.kill()
    ingest = stack.services["ingest"]
    if how == "kill -9":
        ingest.kill9()
    else:
        ingest.stop()
    ingest.start()
    ingest.wait_port(stack.rtmp)
    return publisher_returns(crowd, a, publisher, before, f"ingest {how} + restart")


def case_net_cut(stack, crowd, a):
    crowd.reset()
    time.sleep(a.settle)
    stack.relay.cut.set()
    time.sleep(a.hold)
    stack.relay.cut.clear()
    time.sleep(a.settle)
    return viewers_row("network cut balancer -> one front-end", crowd)


def slowloris(port, n, seconds):
    socks = []
    for _ in range(n):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=2)
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            socks.append(s)
        except OSError:
            break
    deadline = time.monotonic() + seconds
    open_at_end = 0
    while time.monotonic() < deadline:
        for s in socks:
            try:
                s.sendall(b"X")
            except OSError:
                pass
        time.sleep(1)
    for s in socks:
        try:
            s.setblocking(False)
            if s.recv(1) == b"":
                continue
        except BlockingIOError:
            open_at_end += 1
        except OSError:
            continue
        finally:
            s.close()
    return len(socks), open_at_end


def case_slow_clients(stack, crowd, a):
    crowd.reset()
    results = {}
    threads = [
        threading.Thread(target=lambda k=k, p=p: results.__setitem__(k, slowloris(p, a.slow, a.slow_secs)))
        for k, p in (("balancer", stack.proxy_port), ("front-end", stack.web_ports[1]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    note = ", ".join(f"{k}: {o} of {n} still open after {a.slow_secs} s" for k, (n, o) in results.items())
    row = viewers_row("slow clients on both HTTP services", crowd, note=note)
    row["ok"] = row["ok"] and all(o == 0 for _, o in results.values())
    return row


def case_rtmp_abuse(stack, crowd, a):
    crowd.reset()
    segments = stack.metric("ingest", "livecast_ingest_segments_written_total")
    for i in range(50):
        try:
            with socket.create_connection(("127.0.0.1", stack.rtmp), timeout=2) as s:
                s.sendall(bytes([3 if i % 2 else 0x47]) + os.urandom(4096))
        except OSError:
            pass
    idle = [socket.create_connection(("127.0.0.1", stack.rtmp)) for _ in range(100)]
    time.sleep(a.hold)
    for s in idle:
        s.close()
    cut = stack.metric("ingest", "livecast_ingest_segments_written_total") - segments
    row = viewers_row("RTMP garbage + 100 idle handshakes beside a publisher", crowd,
                      note=f"{cut:.0f} segments cut meanwhile")
    row["ok"] = row["ok"] and cut >= max(1, a.hold // 3)
    return row


def case_hls_disk_full(stack, crowd, a, volume):
    crowd.reset()
    gaps_before = stack.metric("ingest", "livecast_ingest_gap_segments_total") or 0
    time.sleep(a.settle)
    filler = volume.fill()
    wait_until("volume full", 10, lambda: stack.metric("ingest", "livecast_ingest_volume_full") == 1)
    time.sleep(a.hold)
    if os.path.exists(filler):
        os.remove(filler)
    freed = time.monotonic()
    recovered = wait_until("writes again", 20, lambda: stack.metric("ingest", "livecast_ingest_volume_full") == 0)
    recover = round(time.monotonic() - freed, 1) if recovered else None
    gaps = (stack.metric("ingest", "livecast_ingest_gap_segments_total") or 0) - gaps_before
    time.sleep(a.settle)
    # A part whose write failed is never listed: the early request a viewer sent for it, as
    # the preload hint named it, fails. One per viewer per lost segment, and one for the
    # segment it was lost in.
    row = viewers_row("HLS disk full, then freed", crowd, hints_allowed=a.viewers * (gaps + 1),
                      recover=recover, note=f"{gaps:.0f} segments listed as gaps")
    row["ok"] = row["ok"] and recovered
    return row


def case_log_disk_full(stack, crowd, a, volume):
    crowd.reset()
    dropped = sum(stack.metric(f"web-{i}", "livecast_web_access_log_dropped_total") or 0 for i in range(3))
    filler = volume.fill()
    time.sleep(a.hold)
    if os.path.exists(filler):
        os.remove(filler)
    time.sleep(a.settle)
    lost = sum(stack.metric(f"web-{i}", "livecast_web_access_log_dropped_total") or 0 for i in range(3)) - dropped
    return viewers_row("log disk full, then freed", crowd,
                       note=f"{lost:.0f} access-log lines dropped (the rest waited in memory)")


# The shipper's cases run a shipper of their own on a directory a writer here appends to, so
# every line written is known.


def log_line(seq):
    return json.dumps({
        "@timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()), "client.ip": "10.0.0.1",
        "http.request.method": "GET", "url.path": f"/hls/{STREAM}/seq-{seq}.m4s",
        "http.response.status_code": 200, "http.response.body.bytes": 1000, "event.duration": 1000,
        "user_agent.original": "chaos", "host.name": "writer", "livecast.stream": STREAM,
        "livecast.session": "s"}) + "\n"


def rotate(scheme, d):
    log = os.path.join(d, "access.log")
    if scheme == "rename":
        os.rename(log, os.path.join(d, "access.log.1"))
    elif scheme == "copytruncate":
        shutil.copy(log, os.path.join(d, "access.log.1"))
        os.truncate(log, 0)
    elif scheme == "dateext":
        os.rename(log, os.path.join(d, time.strftime("access.log-%Y%m%d%H%M%S")))
    elif scheme == "delaycompress":
        one = os.path.join(d, "access.log.1")
        if os.path.exists(one):
            with open(one, "rb") as src, gzip.open(os.path.join(d, "access.log.2.gz"), "wb") as dst:
                dst.write(src.read())
            os.remove(one)
        os.rename(log, one)


def case_shipper(work, bins, a, scheme):
    d = tempfile.mkdtemp(dir=work, prefix=f"ship-{scheme}-")
    logs, state = os.path.join(d, "logs"), os.path.join(d, "state")
    os.makedirs(logs)
    bulk = Bulk()
    argv = [f"{bins}/livecast-logship", f"--admin-listen=127.0.0.1:{free_port()}", f"--log-dir={logs}",
            f"--state-dir={state}", f"--elasticsearch-url=http://127.0.0.1:{bulk.port}",
            "--poll-interval-ms=100", "--batch-lines=200"]
    shipper = Service(d, "logship", argv)
    written = 0
    rotations = 0
    rotated_upto = 0
    deadline = time.monotonic() + a.ship_secs
    killed = False
    while time.monotonic() < deadline:
        with open(os.path.join(logs, "access.log"), "a") as f:
            for _ in range(25):
                f.write(log_line(written))
                written += 1
        if written % 2000 == 0:
            if scheme == "sink down" and not killed:
                # The sink goes away for a while; the writer goes on writing meanwhile.
                bulk.down = True
                threading.Timer(a.sink_down, lambda: setattr(bulk, "down", False)).start()
                deadline = max(deadline, time.monotonic() + a.sink_down + 2)
                killed = True
            elif scheme != "sink down":
                if scheme == "delaycompress":
                    # logrotate compresses `.1` a period later; by then it is shipped.
                    wait_until("the older rotation shipped", 30, lambda: len(bulk.docs) >= rotated_upto)
                rotated_upto = written
                rotate(scheme, logs)
                rotations += 1
                # kill -9 right after the rotation, while lines are still in flight
                shipper.kill9()
                shipper.start()
        time.sleep(0.02)
    wait_until("everything shipped", 60, lambda: len(bulk.docs) >= written)
    time.sleep(1)
    counts = bulk.seqs()
    delivered = len(counts)
    dupes = sum(n - 1 for n in counts.values() if n > 1)
    peak = shipper.peak_kb
    shipper.stop()
    bulk.shutdown()
    what = (f"sink down {a.sink_down} s while lines are written" if scheme == "sink down"
            else f"shipper kill -9 after {scheme} rotation")
    return Row(case=what, requests=None, failed=None, kinds={}, stalls=None, stalled_s=None, recover_s=None,
               note=f"{rotations} rotations; {bulk.conflicts} re-sent lines answered 409",
               delivered=delivered, written=written, dupes=dupes,
               ok=delivered == written and dupes == 0)


# ---------------------------------------------------------------------------------------------


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--short", action="store_true", help="every case briefly (CI)")
    p.add_argument("--viewers", type=int, default=None)
    p.add_argument("--out", default=None, help="also write the table as JSON here")
    p.add_argument("--only", default="", help="skip the stack cases and run only the shipper cases "
                   "whose scheme contains this (rename, copytruncate, dateext, delaycompress, sink)")
    p.add_argument("--case", default="", help="run only the stack cases whose key contains this "
                   "(web-kill, web-restart, publisher-away-N, ingest-sigterm, ingest-kill, net-cut, "
                   "slow-clients, rtmp-abuse, hls-disk-full, log-disk-full), and no shipper case")
    a = p.parse_args()
    a.viewers = a.viewers or (10 if a.short else 40)
    a.settle, a.hold = (2, 4) if a.short else (4, 10)
    a.burst = 20 if a.short else 100
    a.slow, a.slow_secs = (200, 14) if a.short else (500, 32)
    a.aways = [1, 5] if a.short else [1, 5, 30]
    a.sink_down = 8 if a.short else 60
    a.ship_secs = 6 if a.short else 20
    if os.geteuid() != 0:
        raise SystemExit("the suite mounts tmpfs volumes for its full-disk cases: run it as root")

    subprocess.run(["cargo", "build", "--bins", "-q"], cwd=ROOT, check=True)
    bins = os.path.join(ROOT, "target", "debug")
    work = tempfile.mkdtemp(prefix="livecast-chaos-")
    clip = os.path.join(ROOT, "target", "chaos-clip.flv")
    make_clip(clip, 10)
    hls = Tmpfs(os.path.join(work, "hls"), 64)
    logs = Tmpfs(os.path.join(work, "logs"), 16)
    rows, rss = [], {}
    stack = crowd = publisher = browsers = None
    try:
        stack = Stack(work, bins, hls.path, logs.path)
        publisher = Publisher(clip, stack.rtmp)
        publisher.start()
        if not wait_until("a playlist", 20, lambda: os.path.exists(os.path.join(hls.path, STREAM, "index.m3u8"))):
            raise SystemExit("the publisher's stream never appeared")
        time.sleep(4)
        rss["before"] = stack.rss()
        crowd = Audience(os.path.join(bins, "livecast-loadtest"), stack.proxy_port, a.viewers, STREAM, work)
        browsers = Browsers(stack.proxy_port, 3600)
        time.sleep(a.settle + 6)
        cases = [
            ("web-kill", lambda: case_web_kill9(stack, crowd, a)),
            ("web-restart", lambda: case_web_cold_restart(stack, crowd, a)),
            *[(f"publisher-away-{w}", lambda w=w: case_publisher_drop(stack, crowd, a, publisher, w))
              for w in a.aways],
            ("ingest-sigterm", lambda: case_ingest_restart(stack, crowd, a, publisher, "SIGTERM")),
            ("ingest-kill", lambda: case_ingest_restart(stack, crowd, a, publisher, "kill -9")),
            ("net-cut", lambda: case_net_cut(stack, crowd, a)),
            ("slow-clients", lambda: case_slow_clients(stack, crowd, a)),
            ("rtmp-abuse", lambda: case_rtmp_abuse(stack, crowd, a)),
            ("hls-disk-full", lambda: case_hls_disk_full(stack, crowd, a, hls)),
            ("log-disk-full", lambda: case_log_disk_full(stack, crowd, a, logs)),
        ]
        if a.case and not any(a.case in key for key, _ in cases):
            raise SystemExit(f"no case matches --case {a.case}: {', '.join(key for key, _ in cases)}")
        cases = [case for key, case in cases if not a.only and a.case in key]
        for case in cases:
            since = time.monotonic()
            row = case()
            judged = browsers.judge(since, time.monotonic())
            row["hlsjs"] = judged
            for key, (fatal, _, first) in judged.items():
                if fatal:
                    row["note"] += f" {key} hls.js fatal: {first.splitlines()[0][:120]}"
                    # The whole text (hls.js puts both playlists in a sequence error).
                    print(f"  {key} hls.js fatal error, in full:\n    " + first.replace("\n", "\n    "),
                          flush=True)
            # The target is 0 fatal errors in every case (a player that stops for good needs
            # its viewer to reload the page).
            if any(f for f, _, _ in judged.values()):
                row["ok"] = False
            stack.rss()
            rows.append(row)
            print(f"  {row['case']}: {'ok' if row['ok'] else 'MISSED'}", flush=True)
        rss["peak"] = {name: s.peak_kb for name, s in stack.services.items()}
        browsers.close()
        crowd.close()
        time.sleep(2)
        rss["after"] = stack.rss()
    finally:
        if browsers:
            browsers.close()
        if crowd:
            crowd.close()
        if publisher:
            publisher.kill()
        if stack:
            stack.close()
        hls.close()
        logs.close()
    for scheme in ["rename", "copytruncate", "dateext", "delaycompress", "sink down"]:
        if a.case or (a.only and a.only not in scheme):
            continue
        row = case_shipper(work, bins, a, scheme)
        rows.append(row)
        print(f"  {row['case']}: {'ok' if row['ok'] else 'MISSED'}", flush=True)

    print()
    print(f"{'case':<58} {'failed/requests':>16} {'stalls':>7} {'recover s':>9} {'hls.js fatal':>12} "
          f"{'frozen s':>9}  {'lines':>13} {'dupes':>5}  result")
    for r in rows:
        req = f"{r['failed']}/{r['requests']}" if r["requests"] is not None else "-"
        stalls = "-" if r["stalls"] is None else f"{r['stalls']}"
        rec = "-" if r["recover_s"] is None else f"{r['recover_s']}"
        lines = f"{r['delivered']}/{r['written']}" if "written" in r else "-"
        dupes = f"{r['dupes']}" if "dupes" in r else "-"
        judged = r.get("hlsjs")
        fatal = f"{judged['page'][0]}/{judged['plain'][0]}" if judged else "-"
        frozen = f"{judged['page'][1]}/{judged['plain'][1]}" if judged else "-"
        print(f"{r['case']:<58} {req:>16} {stalls:>7} {rec:>9} {fatal:>12} {frozen:>9}  {lines:>13} {dupes:>5}  "
              f"{'ok' if r['ok'] else 'MISSED'}  {r['note']} {r['kinds'] or ''}")
    print("hls.js columns: the player page / a bare hls.js page with default settings, in Chromium")
    print()
    print("RSS (MB)      " + "  ".join(f"{n:>8}" for n in rss.get("before", {})))
    for when in ("before", "peak", "after"):
        if when in rss:
            print(f"{when:<13} " + "  ".join(f"{kb / 1024:>8.1f}" for kb in rss[when].values()))
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"rows": rows, "rss_kb": rss}, f, indent=1)
    shutil.rmtree(work, ignore_errors=True)
    missed = [r["case"] for r in rows if not r["ok"]]
    if missed:
        print("missed:", "; ".join(missed))
        sys.exit(1)


if __name__ == "__main__":
    main()
