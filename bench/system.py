#!/usr/bin/env python3
"""The whole system against the reference design: the largest audience each stack holds.

Three stacks run side by side on this machine, each with its own real-time ffmpeg publisher
of the same 720p30 2.5 Mb/s clip (2 s GOP):

  - reference: Debian's nginx with nginx-rtmp writing 2 s MPEG-TS segments (`hls on`), three
    nginx front-ends serving them statically (sendfile, access log on), an nginx balancer
    (`upstream`, keep-alive to the front-ends) in front;
  - livecast: `livecast up` (ingest, three front-ends, balancer, log shipper in one process)
    in the same plain mode, `--container ts --part-ms 0`, 2 s segments;
  - livecast-ll: `livecast up` in its default LL-HLS mode (fMP4, 250 ms parts; viewers hold
    blocking reloads). Its own line: the reference cannot do LL-HLS.

The audience is livecast-loadtest (viewers that play like hls.js). The audience is stepped
up (`--steps`) in the same run; at each step every stack still standing gets the same
audience in turn, the order alternating from step to step. A stack holds a step when its
audience played with a rebuffer ratio under 1 %, no error and every viewer started. The
server processes are pinned to `--server-cpus` and the load tester and publishers to
`--tool-cpus` (the first and the second core by default), and each stack may use at most
`--server-cores` of CPU time (a cgroup quota, 0.5 by default): on two cores the load tester
would otherwise run out of CPU (about 2,500 full-bitrate viewers on its one core) before
either stack does. CPU of each stack's server processes (all of them: origin or ingest,
front-ends, balancer, and livecast's shipper) over the held window gives CPU per
viewer-second. When the load tester is saturated (its own `trustworthy` verdict, or it used
90 % of its CPUs) the step cannot judge the servers and the stepping stops there.

Prints a line per run, then each stack's largest audience held, the ratio livecast /
reference, and CPU per viewer-second of each at the largest step both held.

Usage: python3 bench/system.py [--steps 250,500,750,1000,1250,1500,2000] [--hold 20] [--ramp 5]
                               [--server-cores 0.5] [--stacks reference,livecast,livecast-ll]
Needs: nginx, libnginx-mod-rtmp, ffmpeg (apt-get install nginx libnginx-mod-rtmp ffmpeg).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import build, free_port, make_clip, nginx_rtmp, ROOT, stop, wait_http  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
SETTLE = 4  # seconds after the ramp before the measured window


def tree(pid):
    """`pid` and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError):
            pass
    return out


def cpu_secs(roots):
    total = 0
    for pid in (p for r in roots for p in tree(r)):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime of all threads
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total / TICK


def cgroup_dir(name, cores):
    """A CPU cgroup allowing `cores` of CPU time (cgroup v1 `cpu.cfs_quota_us`, or v2
    `cpu.max`), or None where cgroups cannot be written here."""
    period = 100_000
    try:
        if os.path.exists("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"):
            d = f"/sys/fs/cgroup/cpu/livecast-bench-{name}"
            os.makedirs(d, exist_ok=True)
            with open(f"{d}/cpu.cfs_period_us", "w") as f:
                f.write(str(period))
            with open(f"{d}/cpu.cfs_quota_us", "w") as f:
                f.write(str(int(cores * period)))
            return d
        if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
            with open("/sys/fs/cgroup/cgroup.subtree_control", "w") as f:
                f.write("+cpu")
            d = f"/sys/fs/cgroup/livecast-bench-{name}"
            os.makedirs(d, exist_ok=True)
            with open(f"{d}/cpu.max", "w") as f:
                f.write(f"{int(cores * period)} {period}")
            return d
    except OSError:
        pass
    return None


def confine(cgroup, roots):
    """Moves every process of `roots` (and their children) into `cgroup`."""
    for pid in (p for r in roots for p in tree(r)):
        try:
            with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
                f.write(str(pid))
        except OSError:
            pass


def pinned(cpus, argv):
    return ["taskset", "-c", cpus] + argv if cpus else argv


def nginx(work, name, body, cpus, workers):
    """A plain nginx (no RTMP) with `body` inside `http { }`."""
    conf = os.path.join(work, f"{name}.conf")
    with open(conf, "w") as f:
        f.write(f"""daemon off;
worker_processes {workers};
pid {work}/{name}.pid;
error_log {work}/{name}-error.log;
worker_rlimit_nofile 65536;
events {{ worker_connections 16384; }}
http {{
  keepalive_requests 100000;
  keepalive_timeout 65s;
{body}
}}
""")
    return subprocess.Popen(pinned(cpus, ["nginx", "-p", work, "-c", conf, "-e", f"{work}/{name}-error.log"]))


def reference(work, cpus, workers):
    """nginx-rtmp origin, three nginx front-ends, an nginx balancer: (procs, rtmp port, url port)."""
    hls = os.path.join(work, "ref-hls")
    os.makedirs(hls)
    rtmp = free_port()
    procs = [nginx_rtmp(work, "ref-origin", rtmp, hls, wrap=pinned(cpus, []))]
    webs = []
    for i in range(3):
        port = free_port()
        webs.append(port)
        procs.append(nginx(work, f"ref-web{i + 1}", f"""
  sendfile on; tcp_nopush on;
  types {{ application/vnd.apple.mpegurl m3u8; video/mp2t ts; }}
  access_log {work}/ref-web{i + 1}-access.log combined buffer=64k flush=1s;
  server {{ listen 127.0.0.1:{port}; location /hls/ {{ alias {hls}/; }} }}""", cpus, 1))
    port = free_port()
    servers = "".join(f"server 127.0.0.1:{p};" for p in webs)
    procs.append(nginx(work, "ref-balancer", f"""
  access_log off;
  upstream web {{ {servers} keepalive 256; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://web;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_max_temp_file_size 0;
    }}
  }}""", cpus, workers))
    return procs, rtmp, port


def livecast(work, name, cpus, extra):
    """`livecast up` with its own directories and free ports: (procs, rtmp port, url port)."""
    rtmp, port, admin = free_port(), free_port(), free_port()
    d = os.path.join(work, name)
    proc = subprocess.Popen(pinned(cpus, [
        os.path.join(ROOT, "target", "release", "livecast"), "up",
        f"--rtmp-listen=127.0.0.1:{rtmp}", f"--listen=127.0.0.1:{port}",
        "--web-port=0", "--admin-host=127.0.0.1", "--admin-port=0",
        f"--hls-dir={d}/hls", f"--access-log-dir={d}/logs", f"--state-dir={d}/state",
        "--segment-secs=2", *extra]),
        stdout=open(os.path.join(work, f"{name}.log"), "w"), stderr=subprocess.STDOUT,
        env={**os.environ, "NO_COLOR": "1"})
    return [proc], rtmp, port


def run_step(tool, url, viewers, a, out):
    """Starts one audience against one stack; returns the load tester's process and run time."""
    total = a.ramp + SETTLE + a.hold + 2
    lt = subprocess.Popen(pinned(a.tool_cpus, [
        tool, "run", url, "--viewers", str(viewers), "--ramp", f"{a.ramp}s",
        "--duration", f"{total}s", "--out", out, "--progress-secs", "0"]),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return lt, total


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", default="250,500,750,1000,1250,1500,2000",
                    help="audience sizes, stepped up in this order")
    ap.add_argument("--hold", type=int, default=20, help="measured seconds at each step")
    ap.add_argument("--ramp", type=int, default=5, help="seconds over which each step's audience joins")
    ncpu = len(os.sched_getaffinity(0))
    ap.add_argument("--server-cpus", default="0" if ncpu >= 2 else "",
                    help="CPUs for the stacks' server processes (taskset list; empty: no pinning)")
    ap.add_argument("--tool-cpus", default="1" if ncpu >= 2 else "",
                    help="CPUs for the load tester and the publishers")
    ap.add_argument("--server-cores", type=float, default=0.5,
                    help="CPU time each stack may use, in cores (a cgroup quota; 0: no quota)")
    ap.add_argument("--stacks", default="reference,livecast,livecast-ll",
                    help="which stacks to run (livecast-ll is its own line)")
    a = ap.parse_args()
    steps = [int(s) for s in a.steps.split(",")]
    for tool in ("nginx", "ffmpeg", "taskset"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: apt-get install nginx libnginx-mod-rtmp ffmpeg util-linux")
    if not os.path.exists("/usr/lib/nginx/modules/ngx_rtmp_module.so"):
        raise SystemExit("nginx-rtmp is missing: apt-get install libnginx-mod-rtmp")
    bin_dir = build("livecast", "livecast-loadtest")
    tool = os.path.join(bin_dir, "livecast-loadtest")
    server_workers = len(a.server_cpus.split(",")) if a.server_cpus else ncpu
    work = tempfile.mkdtemp(prefix="livecast-system-")
    os.chmod(work, 0o755)  # nginx's workers (www-data) read the segments
    clip = os.path.join(ROOT, "target", "bench-clip-720p-60s.flv")
    make_clip(clip, 60)

    stacks = {}
    procs = []
    try:
        wanted = a.stacks.split(",")
        if "reference" in wanted:
            stacks["reference"] = reference(work, a.server_cpus, server_workers)
        if "livecast" in wanted:
            stacks["livecast"] = livecast(work, "livecast", a.server_cpus, ["--container=ts", "--part-ms=0"])
        if "livecast-ll" in wanted:
            stacks["livecast-ll"] = livecast(work, "livecast-ll", a.server_cpus, [])
        for roots, _, _ in stacks.values():
            procs += roots
        time.sleep(1)
        for name, (_, rtmp, _) in stacks.items():
            procs.append(subprocess.Popen(pinned(a.tool_cpus, [
                "ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", clip,
                "-c", "copy", "-f", "flv", f"rtmp://127.0.0.1:{rtmp}/live/bench"])))
        for name, (_, _, port) in stacks.items():
            wait_http(port, "/hls/bench/index.m3u8", timeout=30)
        time.sleep(8)  # a few segments of history, as a live stream has
        quota = "no CPU quota"
        if a.server_cores:
            groups = {name: cgroup_dir(name, a.server_cores) for name in stacks}
            if all(groups.values()):
                for name, (roots, _, _) in stacks.items():
                    confine(groups[name], [p.pid for p in roots])
                quota = f"each stack at most {a.server_cores} cores (cgroup quota)"
            else:
                quota = "no CPU quota (cgroups cannot be written here)"
        tool_cores = len(a.tool_cpus.split(",")) if a.tool_cpus else ncpu
        print(f"server processes on CPUs [{a.server_cpus or 'any'}], {quota}; load tester and "
              f"publishers on [{a.tool_cpus or 'any'}]; {a.ramp} s ramp, {a.hold} s measured per step")

        held = {name: None for name in stacks}  # largest step held
        failed = set()
        cpu_per = {name: {} for name in stacks}  # step -> CPU ms per viewer-second
        saturated = None
        for i, viewers in enumerate(steps):
            order = list(stacks) if i % 2 == 0 else list(reversed(stacks))
            for name in order:
                if name in failed:
                    continue
                roots, _, port = stacks[name]
                url = f"http://127.0.0.1:{port}/hls/bench/index.m3u8"
                out = os.path.join(work, f"out-{name}-{viewers}")
                lt, total = run_step(tool, url, viewers, a, out)
                time.sleep(a.ramp + SETTLE)
                c0, l0, t0 = cpu_secs([p.pid for p in roots]), cpu_secs([lt.pid]), time.monotonic()
                time.sleep(a.hold)
                cpu, wall = cpu_secs([p.pid for p in roots]) - c0, time.monotonic() - t0
                tool_busy = (cpu_secs([lt.pid]) - l0) / wall
                _, err = lt.communicate(timeout=total + 120)
                if lt.returncode not in (0, 1):
                    raise SystemExit(f"livecast-loadtest failed against {name}: {err.strip()}")
                s = json.load(open(os.path.join(out, "summary.json")))
                ok = s["rebuffer_ratio"] < 0.01 and not s["errors"] and s["never_started"] == 0
                # The load tester's own verdict, and whether it used (nearly) all its CPUs.
                trust = s["honesty"]["trustworthy"] and tool_busy < 0.9 * tool_cores
                per = cpu / (viewers * wall) * 1e3
                cpu_per[name][viewers] = per
                lat = s["latency_secs"]
                # nginx-rtmp writes no PROGRAM-DATE-TIME, so its viewers' latency is unknown.
                latency = f"{lat['p50']}/{lat['p99']} s" if lat["p50"] is not None else "n/a"
                errors = sum(s["errors"].values())
                errors = f"{errors} {dict(s['errors'])}" if errors else "0"
                print(f"  {viewers:5d} viewers  {name:12s} {'held' if ok else 'FAILED':6s} "
                      f"rebuffer {s['rebuffer_ratio']:.4f} stalls {s['stalls']:5d} "
                      f"errors {errors} never started {s['never_started']} "
                      f"latency p50/p99 {latency}  "
                      f"servers {cpu / wall:.2f} cores, {per:.3f} CPU-ms per viewer-second  "
                      f"load tester {tool_busy:.2f} cores, timer p99 {s['honesty']['timer_lateness_p99_ms']} ms"
                      f"{'' if trust else ' (load tester saturated)'}", flush=True)
                if not trust:
                    saturated = viewers
                    break
                if ok:
                    held[name] = viewers
                else:
                    failed.add(name)
            if saturated or len(failed) == len(stacks):
                break

        print()
        for name in stacks:
            h = held[name]
            more = "" if name in failed else " or more (never failed)"
            print(f"{name:12s} largest audience held: {h if h else 'none'}{more if h else ''}")
        if saturated:
            print(f"the load tester itself was saturated at {saturated} viewers: that step and those "
                  f"above it could not be judged (give it more CPUs with --tool-cpus, or the stacks "
                  f"less with --server-cores)")
        r, lc = held.get("reference"), held.get("livecast")
        if r and lc:
            print(f"livecast / reference, audience held: {lc / r:.2f}x"
                  f"{' (both at least; neither failed)' if not failed & {'reference', 'livecast'} else ''}")
        common = [v for v in steps if r and lc and v <= min(r, lc)]
        if common:
            v = common[-1]
            ref_cpu, lc_cpu = cpu_per["reference"][v], cpu_per["livecast"][v]
            line = (f"CPU per viewer-second at {v} viewers: reference {ref_cpu:.3f} ms, "
                    f"livecast {lc_cpu:.3f} ms (livecast / reference {lc_cpu / ref_cpu:.2f})")
            if "livecast-ll" in cpu_per and v in cpu_per["livecast-ll"]:
                line += f", livecast-ll {cpu_per['livecast-ll'][v]:.3f} ms"
            print(line)
    finally:
        stop(list(reversed(procs)), timeout=10)
        # The quota groups, empty once their processes are gone.
        for name in ("reference", "livecast", "livecast-ll"):
            for base in ("/sys/fs/cgroup/cpu", "/sys/fs/cgroup"):
                d = f"{base}/livecast-bench-{name}"
                if os.path.isdir(d):
                    try:
                        os.rmdir(d)
                    except OSError:
                        pass
        if not os.environ.get("KEEP"):
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
