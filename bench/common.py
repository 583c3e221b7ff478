"""Helpers shared by the benchmark scripts: ports, waiting, wrk runs and their parsing."""

import os
import random
import re
import shutil
import socket
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _ephemeral_range():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
            return low, high
    except (OSError, ValueError):
        return 32768, 60999


def free_port():
    """A loopback port nothing listens on, below the kernel's ephemeral range: a port from that
    range can be taken as the local end of any outgoing connection while a service is down
    (a restart), and then the service cannot bind it again."""
    low, _ = _ephemeral_range()
    top = min(low, 32768) - 1
    for _ in range(200):
        port = random.randint(10000, top)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise SystemExit(f"no free loopback port in 10000-{top}")


def wait_http(port, path="/", timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                if s.recv(16).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"127.0.0.1:{port}{path} did not answer 200")


def cpu_seconds(pid):
    """User + system CPU seconds of a process so far, all its threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def build(*packages):
    """Builds the packages' release binaries and returns their directory. With
    LIVECAST_BENCH_BIN set, uses the binaries in that directory instead (another build's, to
    compare two builds in one run of a script)."""
    given = os.environ.get("LIVECAST_BENCH_BIN")
    if given:
        return given
    args = ["cargo", "build", "--release", "-q"]
    for p in packages:
        args += ["-p", p]
    subprocess.run(args, cwd=ROOT, check=True)
    return os.path.join(ROOT, "target", "release")


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(url, threads, connections, seconds):
    """Runs wrk and returns (requests per second, p50 ms, p99 ms, errors)."""
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        check=True, capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = {}
    for pct, value, unit in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M):
        lat[pct] = float(value) * UNITS[unit]
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    return rps, lat.get("50", 0.0), lat.get("99", 0.0), errors


def check_wrk():
    if subprocess.run(["which", "wrk"], capture_output=True).returncode != 0:
        raise SystemExit("wrk is missing: apt-get install wrk")


def stop(procs, timeout=5.0):
    """Asks every process to stop, then kills those still running after `timeout` seconds."""
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()


def wait_port(port, timeout=10.0, proc=None, log=None):
    """Waits until something accepts on 127.0.0.1:`port`. Given the process that should listen
    there (and its output file), says so at once when it exits, with the end of its output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if proc is not None and proc.poll() is not None:
                break
            time.sleep(0.05)
    why = f"nothing listens on 127.0.0.1:{port}"
    if proc is not None:
        why += f" (process {proc.pid}: " + (
            f"exited with {proc.returncode})" if proc.poll() is not None else f"still running after {timeout} s)")
    if log is not None:
        try:
            with open(log, "rb") as f:
                tail = f.read()[-2000:].decode(errors="replace")
            why += f"\nlast output of {log}:\n{tail}"
        except OSError:
            pass
    raise SystemExit(why)


def player_site(port, root):
    """The `http { ... }` body of nginx_rtmp for a bare player page: `root` (the page, hls.js and
    nginx-rtmp's `hls/`) on 127.0.0.1:`port`, playlists not cached."""
    return f"""
  access_log off;
  types {{ application/vnd.apple.mpegurl m3u8; video/mp2t ts; text/html html; application/javascript js; }}
  server {{
    listen 127.0.0.1:{port};
    root {root};
    location /hls/ {{ add_header Cache-Control no-cache; }}
  }}"""


def livecast_up(work):
    """Starts `livecast up` (debug build of the workspace) on free loopback ports with its data
    under `work/livecast`; returns (process, rtmp port, viewer port)."""
    binaries = build("livecast")
    rtmp, http = free_port(), free_port()
    data = os.path.join(work, "livecast")
    stack = subprocess.Popen(
        [os.path.join(binaries, "livecast"), "up", f"--rtmp-listen=127.0.0.1:{rtmp}",
         f"--listen=127.0.0.1:{http}", "--web-port=0", "--admin-host=127.0.0.1", "--admin-port=0",
         f"--hls-dir={data}/hls", f"--access-log-dir={data}/logs", f"--state-dir={data}/logship"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return stack, rtmp, http


def make_clip(path, seconds):
    """A 720p30 H.264 (2.5 Mb/s, 2 s GOP) + AAC FLV clip, made once and cached."""
    if os.path.exists(path):
        return
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate=30:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={seconds}",
         "-c:v", "libx264", "-preset", "veryfast", "-b:v", "2500k", "-maxrate", "2700k", "-bufsize", "2700k",
         "-g", "60", "-keyint_min", "60", "-sc_threshold", "0", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-b:a", "128k", "-f", "flv", path],
        check=True)


def ingest_against_nginx_rtmp():
    """What the ingest-against-nginx-rtmp benchmarks start from: checks that ffmpeg and nginx
    are there, builds livecast-ingest, and makes (once) the 60 s 720p clip they publish.
    Returns (the binaries' directory, the clip's path)."""
    for tool in ("ffmpeg", "nginx"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: apt-get install ffmpeg nginx libnginx-mod-rtmp")
    binaries = build("livecast-ingest")
    cache = os.path.join(ROOT, "target", "bench")
    os.makedirs(cache, exist_ok=True)
    clip = os.path.join(cache, "clip-720p-60s.flv")
    make_clip(clip, 60)
    return binaries, clip


def nginx_rtmp(work, name, rtmp_port, hls_dir, http="", wrap=(), live=""):
    """Starts Debian's nginx with libnginx-mod-rtmp (one worker, `hls on`, 2 s fragments,
    nested per-stream directories, plus the directives `live` in that application) and an
    optional `http { ... }` body, its command line after `wrap` (e.g. a `taskset`); returns the
    process."""
    conf = os.path.join(work, f"{name}.conf")
    http_block = f"http {{\n{http}\n}}\n" if http else ""
    with open(conf, "w") as f:
        f.write(f"""load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
daemon off;
worker_processes 1;
pid {work}/{name}.pid;
error_log {work}/{name}-error.log;
worker_rlimit_nofile 16384;
events {{ worker_connections 8192; }}
rtmp {{
  server {{
    listen 127.0.0.1:{rtmp_port};
    chunk_size 4096;
    application live {{
      live on;
      hls on;
      hls_path {hls_dir};
      hls_nested on;
      hls_fragment 2s;
      hls_playlist_length 12s;
{live}
    }}
  }}
}}
{http_block}""")
    return subprocess.Popen([*wrap, "nginx", "-p", work, "-c", conf, "-e", f"{work}/{name}-error.log"])
