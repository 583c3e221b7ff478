#!/usr/bin/env python3
"""The Docker tests: the stack from docker-compose.yml on a real Docker engine, as its users run it.

    scripts/docker-setup.sh && scripts/docker_test.py

The image is built from the binaries the tests already compiled (`--target prebuilt`, so the
workspace is not compiled a second time inside Docker); Prometheus is Debian's package in a
local image and the shipper ships to an Elasticsearch `_bulk` stand-in (scripts/harness.py)
running in the stack (scripts/docker/compose.test.yml). Grafana, Elasticsearch, Kibana and
Zabbix images cannot be had here: their part is checked by `docker-compose config` and by
running every Grafana panel's query against the stack's Prometheus.

Checks, in order: the compose file alone and with each optional file parses; on fresh volumes every service
becomes healthy without a restart; ffmpeg on the host publishes to the published RTMP port;
through the published HTTP port ffprobe finds video and audio, ffmpeg decodes them, the player
page plays in Chromium and shows the viewer count, /api/streams lists the stream; service logs
carry no ANSI codes; scaling 1 -> 3 -> 5 -> 2 while player-like viewers keep watching fails no
request, each new replica takes requests within 5 s of being healthy and answers a share of
them (counted from the access logs), Prometheus scrapes exactly the replicas there are; every
line a removed replica logged reaches the stand-in exactly once; replicas name themselves as
docker-compose ps does; the shipper installed its index template and no document was refused
by its mapping; every dashboard query has data; the Kibana objects fit the template; after
`docker-compose stop web` every line of the stopped replicas is shipped once and archived.

Prints one line per step with its time, and the figures the README quotes. Exits non-zero at
the first failed check, after `docker-compose down -v`. Only loopback and the project's own
containers are reached.
"""

import argparse
import glob
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from datetime import datetime

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "bench"))
sys.path.insert(0, HERE)
from common import ROOT, free_port, make_clip  # noqa: E402
from harness import Audience  # noqa: E402

PROJECT = "livecast-ci"
IMAGE = "livecast:test"
STREAM = "docker"
BINARIES = ["livecast", "livecast-ingest", "livecast-web", "livecast-proxy", "livecast-logship",
            "livecast-loadtest"]
SERVICES = ["ingest", "web", "proxy", "logship", "prometheus", "bulk"]
T0 = time.monotonic()


class Failure(Exception):
    pass


def step(text):
    print(f"[{time.monotonic() - T0:6.1f}s] {text}", flush=True)


def check(ok, text):
    if not ok:
        raise Failure(text)


def wait_until(what, timeout, probe, every=0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise Failure(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def run(args, **kw):
    kw.setdefault("check", True)
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    try:
        return subprocess.run(args, cwd=ROOT, **kw)
    except subprocess.CalledProcessError as e:
        raise Failure(f"{' '.join(args)} failed ({e.returncode}):\n{e.stdout}\n{e.stderr}") from e


class Compose:
    def __init__(self, env):
        self.env = dict(os.environ, **env)
        self.files = ["-f", "docker-compose.yml", "-f", "deploy/compose/loadtest.yml",
                      "-f", "scripts/docker/compose.test.yml"]

    def __call__(self, *args, **kw):
        return run(["docker-compose", "-p", PROJECT, *self.files, *args], env=self.env, **kw)

    def ids(self, service):
        return [i for i in self("ps", "-q", service).stdout.split() if i]


def inspect(container):
    return json.loads(run(["docker", "inspect", container]).stdout)[0]


def replica_name(container):
    """The name a front-end gives itself (its access log, `host.name`): the container's name,
    as `docker-compose ps` lists it (from Docker's reverse DNS)."""
    return inspect(container)["Name"].lstrip("/")


def volume_dir(name):
    return run(["docker", "volume", "inspect", "-f", "{{.Mountpoint}}", f"{PROJECT}_{name}"]).stdout.strip()


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


def prom(port, query):
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    try:
        _, body = http_get(url)
    except OSError:
        return None
    data = json.loads(body)
    return data["data"]["result"] if data.get("status") == "success" else None


def iso(ts):
    """Seconds since the epoch of an RFC 3339 timestamp (the access log's, Docker's; up to
    nanoseconds, which Python's parser does not take: cut to microseconds)."""
    m = re.match(r"^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", ts)
    if not m:
        raise Failure(f"not an RFC 3339 time: {ts!r}")
    frac = (m.group(2) or "0")[:6]
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    return datetime.fromisoformat(f"{m.group(1)}.{frac.ljust(6, '0')}{zone}").timestamp()


def access_lines(logs_dir, archive_dir, host):
    """Every line front-end `host` logged: its live or rotated log in the logs volume, or the
    copy the shipper archived."""
    lines = []
    seen = set()
    for path in sorted(glob.glob(os.path.join(logs_dir, f"{host}.*log")) +
                       glob.glob(os.path.join(archive_dir, "**", f"{host}.*log"), recursive=True)):
        name = os.path.basename(path)
        if name in seen:  # archived while we looked: the same file twice
            continue
        seen.add(name)
        with open(path, encoding="utf-8", errors="replace") as f:
            lines += [json.loads(line) for line in f if line.endswith("\n")]
    return lines


def build_image():
    step("building the image from the tests' binaries (--target prebuilt)")
    run(["cargo", "build", "--workspace", "--bins", "-q"], capture_output=False)
    staging = os.path.join(ROOT, "deploy", "docker", "prebuilt")
    staged = []
    try:
        for name in BINARIES:
            dst = os.path.join(staging, name)
            shutil.copy2(os.path.join(ROOT, "target", "debug", name), dst)
            run(["strip", "--strip-debug", dst])
            staged.append(dst)
        ca = "/etc/ssl/certs/ca-certificates.crt"
        if os.path.exists(ca):
            shutil.copy2(ca, os.path.join(staging, "ca-certificates.crt"))
            staged.append(os.path.join(staging, "ca-certificates.crt"))
        run(["docker", "build", "-q", "-f", "deploy/docker/Dockerfile", "--target", "prebuilt",
             "-t", IMAGE, "."], env=dict(os.environ, DOCKER_BUILDKIT="0"))
    finally:
        for path in staged:
            os.remove(path)
    size = int(run(["docker", "image", "inspect", "-f", "{{.Size}}", IMAGE]).stdout)
    info = inspect(IMAGE)
    check(info["Config"]["User"] == "livecast", f"image user {info['Config']['User']!r}")
    step(f"image {IMAGE}: {size / 1e6:.0f} MB (debug binaries, debug info stripped)")
    return size


def config_checks():
    step("docker-compose config: the file alone and with each file beside it")
    env = dict(os.environ)
    for extra in (None, "elastic", "zabbix", "loadtest"):
        args = ["docker-compose", "-f", "docker-compose.yml"]
        if extra:
            args += ["-f", f"deploy/compose/{extra}.yml"]
        out = run(args + ["config"], env=env).stdout
        check("profiles:" not in out, f"{extra}: a Compose profile (docker stack deploy refuses them)")
        if extra == "elastic":
            check("elasticsearch:" in out and "kibana:" in out, "elastic services")
        if extra == "zabbix":
            check("zabbix-server:" in out and "zabbix-web:" in out, "zabbix services")
        if extra == "loadtest":
            check("loadtest:" in out, "loadtest service")


def kibana_checks():
    """The Kibana saved objects (deploy/kibana, imported with Kibana's saved-objects API; no
    Kibana runs here): each line an object, every reference inside the file, every field they
    use mapped by the index template the shipper installs."""
    from harness import flat_types
    with open(os.path.join(ROOT, "deploy", "elasticsearch", "livecast-access.template.json")) as f:
        template = json.load(f)
    mapped = flat_types(template["template"]["mappings"]["properties"])
    with open(os.path.join(ROOT, "deploy", "kibana", "livecast.ndjson")) as f:
        objects = [json.loads(line) for line in f if line.strip()]
    ids = {(o["type"], o["id"]) for o in objects}
    used = set()
    for o in objects:
        for r in o["references"]:
            check((r["type"], r["id"]) in ids, f"{o['id']} refers to a missing {r}")
        attrs = o["attributes"]
        used.update(attrs.get("columns", []))
        used.update(x for sort in attrs.get("sort", []) for x in sort[:1])
        if "timeFieldName" in attrs:
            used.add(attrs["timeFieldName"])
        if "visState" in attrs:
            used.update(a["params"]["field"] for a in json.loads(attrs["visState"])["aggs"])
    unmapped = sorted(used - set(mapped))
    check(not unmapped, f"Kibana objects use fields the template does not map: {unmapped}")
    check(mapped.get("livecast.session") == "keyword", "unique viewers count sessions (a keyword)")
    step(f"Kibana saved objects: {len(objects)} objects, fields {sorted(used)} all mapped")


def healthy(compose, expect):
    """Every container of the project healthy (or running, without a health check)."""
    ids = [i for s in SERVICES for i in compose.ids(s)]
    if len(ids) < expect:
        return False
    for c in ids:
        state = inspect(c)["State"]
        if state.get("Health", {}).get("Status", "healthy") != "healthy" or not state["Running"]:
            return False
    return ids


def health_time(container):
    """Wall time at which the container's health check first passed."""
    for entry in inspect(container)["State"].get("Health", {}).get("Log", []):
        if entry["ExitCode"] == 0:
            return iso(entry["End"])
    return None


def scale(compose, n, ports, logs_dir, viewers):
    """Scales the front-ends to n; returns (new hosts with their join figures, removed hosts)."""
    before = {c: replica_name(c) for c in compose.ids("web")}
    started = time.time()
    compose("up", "-d", "--scale", f"web={n}", *SERVICES)
    after = {c: replica_name(c) for c in compose.ids("web")}
    check(len(after) == n, f"{len(after)} web containers after --scale web={n}")
    added = [c for c in after if c not in before]
    removed = [before[c] for c in before if c not in after]
    joined = []
    for c in added:
        host = after[c]

        def first_request():
            lines = access_lines(logs_dir, "/nonexistent", host)
            return lines[0] if lines else None
        first = wait_until(f"a first request on new replica {host}", 30, first_request, 0.2)
        ready = wait_until(f"{host} healthy", 60, lambda: health_time(c), 0.5)
        first_at = iso(first["@timestamp"])
        joined.append({"host": host, "from_scale_s": first_at - started,
                       "after_healthy_s": first_at - ready})
        check(first_at - ready <= 5.0,
              f"{host} took its first request {first_at - ready:.1f} s after being healthy (> 5 s)")
    step(f"--scale web={n}: " + (", ".join(
        f"{j['host']} first request {j['from_scale_s']:.1f} s after --scale "
        f"({j['after_healthy_s']:+.1f} s from healthy)" for j in joined) or
        f"removed {', '.join(removed)}"))
    want = n
    got = wait_until(f"Prometheus scraping {want} front-ends", 40, lambda: (
        (r := prom(ports["prometheus"], 'count(up{job="livecast-web"} == 1)')) and
        int(float(r[0]["value"][1])) == want and
        int(float(prom(ports["prometheus"], 'count(up{job="livecast-web"})')[0]["value"][1])) == want), 1)
    check(got, "prometheus count")
    step(f"Prometheus: count(up{{job=\"livecast-web\"}} == 1) = {want}")
    requests, failures, _, _ = viewers.totals()
    check(not failures, f"viewer requests failed while scaling to {n}: {failures} "
                        f"of {requests}; last: {viewers.failed()[-5:]}")
    return joined, removed


def publish(rtmp_port, http_port, stream):
    """ffmpeg on the host publishing a looped clip to the stack's RTMP port, once the balancer's
    /api/streams lists the stream."""
    clip = os.path.join(ROOT, "target", "docker-clip.flv")
    if not os.path.exists(clip):
        make_clip(clip, 20)
    publisher = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", clip,
         "-c", "copy", "-f", "flv", f"rtmp://127.0.0.1:{rtmp_port}/live/{stream}"],
        stdin=subprocess.DEVNULL)

    def listed():
        try:
            _, body = http_get(f"http://127.0.0.1:{http_port}/api/streams")
        except OSError:
            return False
        return any(s["name"] == stream for s in json.loads(body)["streams"])
    try:
        wait_until("/api/streams listing the stream", 60, listed)
    except Failure:
        publisher.kill()
        publisher.wait()
        raise
    return publisher


class Hammer:
    """A bounded request loop beside the viewers: a few connections asking for the playlist
    back to back, so that a replica leaving while it is still chosen shows up as failures."""

    def __init__(self, port, connections=4, stream=STREAM):
        self.port, self.stream, self.stop = port, stream, threading.Event()
        self.requests, self.failures, self.lock = 0, [], threading.Lock()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(connections)]
        for t in self.threads:
            t.start()

    def run(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self.stop.is_set():
            try:
                conn.request("GET", f"/hls/{self.stream}/index.m3u8")
                response = conn.getresponse()
                response.read()
                failed = None if response.status == 200 else str(response.status)
            except (OSError, http.client.HTTPException) as error:
                failed = type(error).__name__
                conn.close()
            with self.lock:
                self.requests += 1
                if failed:
                    self.failures.append((time.time(), failed))
            time.sleep(0.01)

    def close(self):
        self.stop.set()
        for t in self.threads:
            t.join()


def share_check(logs_dir, hosts, since, seconds):
    """Each replica answers a share of the viewers' requests over `seconds`."""
    time.sleep(seconds)
    counts = {}
    for host in hosts:
        counts[host] = sum(1 for line in access_lines(logs_dir, "/nonexistent", host)
                           if iso(line["@timestamp"]) >= since)
    total = sum(counts.values())
    check(total > 0, "no requests in the access logs")
    fair = total / len(hosts)
    check(all(c >= 0.3 * fair for c in counts.values()),
          f"requests per replica over {seconds} s: {counts} (each should have >= 30 % of a fair share)")
    step(f"requests per replica over {seconds} s: {counts}")


def every_line_shipped(logs_dir, archive_dir, bulk_port, hosts):
    """Every line each of `hosts` (front-ends that stopped) logged: its log closed and renamed,
    each line in the stand-in exactly once, the file archived."""
    key = lambda d: (d["@timestamp"], d["url.path"], d.get("livecast.session") or "")  # noqa: E731
    for host in hosts:
        check(not os.path.exists(os.path.join(logs_dir, f"{host}.log")),
              f"{host}'s access log was not closed and renamed")
        lines = access_lines(logs_dir, archive_dir, host)
        check(lines, f"no access log of {host}")
        want = sorted(map(key, lines))

        def docs():
            _, body = http_get(f"http://127.0.0.1:{bulk_port}/_stand_in/docs")
            return [d for d in json.loads(body)["docs"] if d.get("host.name") == host]
        try:
            wait_until(f"every line of {host} in the stand-in", 60,
                       lambda: sorted(map(key, docs())) == want, 1)
        except Failure:
            raise Failure(f"{host}: {len(lines)} lines logged, {len(docs())} documents")
        archived = wait_until(f"{host}'s log archived", 60, lambda: glob.glob(
            os.path.join(archive_dir, "**", f"{host}.*log"), recursive=True), 1)
        step(f"{host}: {len(lines)} lines logged, each in the stand-in once; "
             f"archived as {os.path.basename(archived[0])}")


def load_test(compose, hosts, viewers=10, shards=2):
    """livecast-loadtest in the stack's network, as the compose file ships it: `--scale
    loadtest=N` copies that take their shard from Docker's DNS, start together at
    LIVECAST_START_AT, and `merge` of their outputs."""
    start_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 10))
    compose.env.update({
        "LIVECAST_LOADTEST_SHARDS": str(shards), "LIVECAST_START_AT": start_at,
        "LIVECAST_VIEWERS": str(viewers), "LIVECAST_DURATION": "20s", "LIVECAST_RAMP": "4s",
        "LIVECAST_LOADTEST_URL": f"http://proxy:8080/hls/{STREAM}/index.m3u8",
        "LIVECAST_MAX_ERROR_RATE": "0",
    })
    compose("up", "-d", "--no-deps", "--scale", f"loadtest={shards}", "loadtest")
    ids = compose.ids("loadtest")
    check(len(ids) == shards, f"{len(ids)} load-test containers")
    codes = run(["docker", "wait", *ids], timeout=90).stdout.split()
    check(codes == ["0"] * shards, f"load-test exit codes {codes}: "
          + compose("logs", "--no-color", "--tail", "20", "loadtest", check=False).stdout)
    compose("run", "--rm", "--no-deps", "loadtest", "livecast-loadtest", "merge",
            *[f"/data/loadtest/run/shard-{i}" for i in range(shards)], "--out", "/data/loadtest/merged",
            "--max-error-rate", "0")
    with open(os.path.join(volume_dir("loadtest"), "merged", "summary.json")) as f:
        merged = json.load(f)
    check(merged["viewers"] == viewers, f"merged viewers {merged['viewers']}")
    check(not merged["errors"] and merged["never_started"] == 0, f"merged errors {merged['errors']}")
    check(set(merged["frontends"]) == set(hosts),
          f"front-ends that answered {sorted(merged['frontends'])}, replicas {sorted(hosts)}")
    compose("rm", "-f", "loadtest", check=False)
    step(f"load test in compose: {shards} shards from Docker's DNS, merged: {merged['viewers']} viewers, "
         f"{sum(r['count'] for r in merged['requests'].values())} requests over {sorted(merged['frontends'])}, "
         f"0 errors, startup p50 {merged['startup_ms']['p50']} ms, stalls {merged['stalls']}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="leave the stack running at the end")
    parser.add_argument("--viewers", type=int, default=8)
    a = parser.parse_args()
    ports = {k: free_port() for k in ("rtmp", "http", "prometheus", "bulk")}
    compose = Compose({
        "LIVECAST_IMAGE": IMAGE,
        "LIVECAST_PUBLISH_ADDRESS": "127.0.0.1",
        "LIVECAST_RTMP_PORT": str(ports["rtmp"]),
        "LIVECAST_HTTP_PORT": str(ports["http"]),
        "LIVECAST_PROMETHEUS_PORT": str(ports["prometheus"]),
        "LIVECAST_TEST_BULK_PORT": str(ports["bulk"]),
        "LIVECAST_ELASTICSEARCH_URL": "http://bulk:9200",
        "LIVECAST_ARCHIVE_AFTER_SECS": "5",
    })
    publisher = viewers = hammer = None
    figures = {}
    work = tempfile.mkdtemp(prefix="livecast-docker-")
    try:
        figures["image_bytes"] = build_image()
        config_checks()
        kibana_checks()
        compose("down", "-v", "--remove-orphans", check=False)

        step("docker-compose up -d on fresh volumes")
        compose("up", "-d", *SERVICES)
        ids = wait_until("every service healthy", 120, lambda: healthy(compose, len(SERVICES)), 1)
        restarts = {inspect(c)["Name"]: inspect(c)["RestartCount"] for c in ids}
        check(all(n == 0 for n in restarts.values()), f"restarted: {restarts}")
        users = {inspect(c)["Name"]: inspect(c)["Config"]["User"] for c in compose.ids("web")}
        check(all(u == "livecast" for u in users.values()), f"users {users}")
        livecast_ids = [i for svc in ("ingest", "web", "proxy", "logship") for i in compose.ids(svc)]
        hardening = {inspect(c)["Name"]: (inspect(c)["HostConfig"]["ReadonlyRootfs"],
                                          inspect(c)["HostConfig"]["CapDrop"],
                                          inspect(c)["HostConfig"]["SecurityOpt"])
                     for c in livecast_ids}
        check(all(ro and caps == ["ALL"] and "no-new-privileges:true" in (opts or [])
                  for ro, caps, opts in hardening.values()), f"hardening {hardening}")
        step("every livecast container: read-only root, no capabilities, no-new-privileges")
        step(f"healthy: {', '.join(sorted(inspect(c)['Name'].lstrip('/') for c in ids))}")

        publisher = publish(ports["rtmp"], ports["http"], STREAM)
        base = f"http://127.0.0.1:{ports['http']}"
        step("published from the host; /api/streams lists it through the balancer")

        playlist = f"{base}/hls/{STREAM}/index.m3u8"
        kinds = run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_type", "-of", "csv=p=0",
                     playlist]).stdout.split()
        check("video" in kinds and "audio" in kinds, f"ffprobe found {kinds}")
        run(["ffmpeg", "-v", "error", "-i", playlist, "-t", "4", "-f", "null", "-"])
        step(f"ffprobe through the balancer: {sorted(set(kinds))}; ffmpeg decoded 4 s")

        shot = os.path.join(ROOT, "target", "test-artifacts", "docker-player.png")
        os.makedirs(os.path.dirname(shot), exist_ok=True)
        played = run(["node", os.path.join(ROOT, "e2e", "play.mjs"), f"{base}/?stream={STREAM}", shot],
                     env=dict(os.environ, EXPECT_VIEWERS="1"), check=False)
        result = json.loads(played.stdout.strip().splitlines()[-1]) if played.stdout.strip() else {}
        check(played.returncode == 0 and result.get("ok"), f"the player page in Chromium: {played.stdout} {played.stderr}")
        step(f"Chromium played {result['advanced']:.1f} s through the balancer; "
             f"the page showed {result['last']['watching']!r}")

        logs = compose("logs", "--no-color").stdout
        check("\x1b[" not in logs, "ANSI escape codes in docker-compose logs")
        check("web listening" in logs, "the front-end's start-up line in docker-compose logs")
        step(f"docker-compose logs: {len(logs.splitlines())} lines, no ANSI codes")

        logs_dir, logship_dir = volume_dir("logs"), volume_dir("logship")
        viewers = Audience(os.path.join(ROOT, "target", "debug", "livecast-loadtest"), ports["http"],
                           a.viewers, STREAM, work)
        time.sleep(4)
        joined, _ = scale(compose, 3, ports, logs_dir, viewers)
        figures["joins"] = joined
        hosts = [replica_name(c) for c in compose.ids("web")]
        listed = set(re.findall(r"^(\S+_web_\d+)\s", compose("ps").stdout, re.M))
        check(set(hosts) == listed, f"access logs name {sorted(hosts)}, docker-compose ps lists {sorted(listed)}")
        step(f"replicas name themselves as docker-compose ps does: {sorted(hosts)}")
        share_check(logs_dir, hosts, time.time(), 10)
        more, _ = scale(compose, 5, ports, logs_dir, viewers)
        figures["joins"] += more
        hammer = Hammer(ports["http"])
        _, removed = scale(compose, 2, ports, logs_dir, viewers)
        check(len(removed) == 3, f"removed {removed}")
        time.sleep(6)  # viewers carry on over the shrunken pool
        hammer.close()
        check(not hammer.failures, f"{len(hammer.failures)} of {hammer.requests} back-to-back "
                                   f"requests failed during scale-in: {hammer.failures[:5]}")
        requests, failures, stalls, _ = viewers.totals()
        check(not failures, f"failed viewer requests: {failures} of {requests}")
        figures["viewer_requests"], figures["failed"] = requests + hammer.requests, 0
        step(f"scaling 1 -> 3 -> 5 -> 2: 0 failed of {requests} viewer requests ({stalls} stalls) "
             f"and of {hammer.requests} back-to-back requests during scale-in")

        archive_dir = os.path.join(logship_dir, "archive")
        every_line_shipped(logs_dir, archive_dir, ports["bulk"], removed)

        status, body = http_get(f"http://127.0.0.1:{ports['bulk']}/_index_template/livecast-access")
        template = json.loads(body)["index_templates"][0]["index_template"]
        check(template["index_patterns"] == ["livecast-access*"], f"template {template}")
        _, body = http_get(f"http://127.0.0.1:{ports['bulk']}/_stand_in/docs")
        stored = json.loads(body)
        check(not stored["refused"], f"documents refused by the template's mapping: {stored['refused']}")
        step(f"index template installed by the shipper; {len(stored['docs'])} documents, none refused by its mapping")

        with open(os.path.join(ROOT, "deploy", "grafana", "dashboards", "livecast.json")) as f:
            dashboard = json.load(f)
        empty = []
        queries = 0
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                expr = (target["expr"].replace("$__rate_interval", "30s")
                        .replace('=~"$stream"', '=~".*"'))
                queries += 1
                result = prom(ports["prometheus"], expr)
                if not result:
                    empty.append(f"{panel['title']}: {expr}")
        check(not empty, "dashboard queries without data:\n  " + "\n  ".join(empty))
        step(f"Grafana dashboard: all {queries} panel queries return data from the stack's Prometheus")

        load_test(compose, [replica_name(c) for c in compose.ids("web")])

        viewers.close()
        started = time.monotonic()
        remaining = [replica_name(c) for c in compose.ids("web")]
        compose("stop", "web")
        figures["stop_web_s"] = round(time.monotonic() - started, 1)
        step(f"docker-compose stop web: {figures['stop_web_s']} s for {len(remaining)} replicas")
        every_line_shipped(logs_dir, archive_dir, ports["bulk"], remaining)

        print(json.dumps({"figures": figures}, indent=None))
        step("all Docker checks passed")
        return 0
    except Failure as failure:
        step(f"FAILED: {failure}")
        try:
            print(compose("ps", check=False).stdout)
            print("\n".join(compose("logs", "--no-color", "--tail", "30", check=False).stdout.splitlines()[-120:]))
        except Failure:
            pass
        return 1
    finally:
        if viewers:
            viewers.close()
        if hammer:
            hammer.close()
        if publisher:
            publisher.kill()
            publisher.wait()
        if not a.keep:
            compose("down", "-v", "--remove-orphans", check=False)
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
