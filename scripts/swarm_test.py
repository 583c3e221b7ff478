#!/usr/bin/env python3
"""The Swarm test: docker-compose.yml deployed as a stack on a real one-node Docker Swarm.

    scripts/docker-setup.sh && scripts/swarm_test.py

Makes this engine a one-node swarm (`docker swarm init` on loopback; left again at the end
unless it was a swarm already), builds the livecast image from the binaries the tests already
compiled (as scripts/docker_test.py does) plus a second tag of it, and deploys
`docker stack deploy -c docker-compose.yml -c scripts/docker/stack.test.yml` (the test file
only swaps Prometheus for Debian's and runs no Grafana, whose image cannot be had here).

Checks, in order: every service converges and is healthy; ffmpeg on the host publishes to the
stack's published RTMP port; player-like viewers (livecast-loadtest) and a few back-to-back
request loops watch through the published HTTP port; `docker service scale <stack>_web=4`
adds three front-ends that the balancer finds through Swarm's DNS (`web` answers with every
task's address, as `tasks.web` does) and that each take requests; a rolling update of the web
service to a new image tag (start-first, one task at a time, each new task healthy before an
old one stops) replaces all four. Target: 0 failed viewer requests through both. Prints one
line per step with its time, and the figures. Only loopback and the stack's own containers
are reached.
"""

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "bench"))
sys.path.insert(0, HERE)
from common import ROOT, free_port  # noqa: E402
from docker_test import (IMAGE, Failure, Hammer, build_image, check, publish, run,  # noqa: E402
                         step, wait_until)
from harness import Audience  # noqa: E402

STACK = "livecast-swarm"
STREAM = "swarm"
SERVICES = ["ingest", "web", "proxy", "logship", "prometheus"]
TAGS = ["livecast:swarm-1", "livecast:swarm-2"]


def swarm_state():
    return run(["docker", "info", "--format", "{{.Swarm.LocalNodeState}}"]).stdout.strip()


def images():
    """Two tags of the test image with different ids: the second is the first with a label,
    so that updating to it is a real image change."""
    run(["docker", "tag", IMAGE, TAGS[0]])
    run(["docker", "build", "-q", "-t", TAGS[1], "-"],
        input=f"FROM {TAGS[0]}\nLABEL org.opencontainers.image.version=swarm-2\n",
        env=dict(os.environ, DOCKER_BUILDKIT="0"))


def tasks(service, state="running"):
    """(task id, image, container id) of the service's tasks in `state`."""
    out = run(["docker", "service", "ps", f"{STACK}_{service}", "--no-trunc",
               "--filter", f"desired-state={state}", "--format", "{{.ID}} {{.Image}} {{.CurrentState}}"]).stdout
    rows = [line.split(" ", 2) for line in out.splitlines() if line.strip()]
    return [(tid, image, current) for tid, image, current in rows]


def container_of(task_id):
    out = run(["docker", "inspect", "--format", "{{.Status.ContainerStatus.ContainerID}}", task_id],
              check=False).stdout.strip()
    return out or None


def healthy(container):
    out = run(["docker", "inspect", "--format", "{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}",
               container], check=False).stdout.strip()
    return out in ("healthy", "none")


def converged():
    """Every service at its replica count with each task running and healthy."""
    out = run(["docker", "stack", "services", STACK, "--format", "{{.Name}} {{.Replicas}}"]).stdout
    counts = dict(line.split(" ", 1) for line in out.splitlines() if line.strip())
    for service in SERVICES:
        replicas = counts.get(f"{STACK}_{service}", "0/1").split(" ")[0]
        have, want = replicas.split("/")
        if have != want or want == "0":
            return False
        for tid, _, current in tasks(service):
            container = container_of(tid)
            if not current.startswith("Running") or not container or not healthy(container):
                return False
    return counts


def volume_dir(name):
    return run(["docker", "volume", "inspect", "-f", "{{.Mountpoint}}", f"{STACK}_{name}"]).stdout.strip()


def answering(logs_dir, since):
    """The front-ends (access log names) that logged a request at or after `since`."""
    hosts = set()
    for path in glob.glob(os.path.join(logs_dir, "*.log")):
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    if not line.endswith("\n"):
                        continue
                    doc = json.loads(line)
                    if doc.get("@timestamp", "") >= since:
                        hosts.add(doc.get("host.name") or os.path.basename(path))
                        break
        except OSError:
            continue
    return hosts


def utc(ts):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts))


def expect_no_failures(viewers, hammer, what):
    requests, failures, stalls, _ = viewers.totals()
    check(not failures, f"viewer requests failed during {what}: {failures} of {requests}; "
                        f"last: {viewers.failed()[-5:]}")
    check(not hammer.failures, f"{len(hammer.failures)} of {hammer.requests} back-to-back requests "
                               f"failed during {what}: {hammer.failures[:5]}")
    return requests, stalls


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="leave the stack (and the swarm) at the end")
    parser.add_argument("--viewers", type=int, default=8)
    a = parser.parse_args()
    ports = {k: free_port() for k in ("rtmp", "http", "prometheus", "grafana")}
    env = dict(os.environ, LIVECAST_IMAGE=TAGS[0], LIVECAST_RTMP_PORT=str(ports["rtmp"]),
               LIVECAST_HTTP_PORT=str(ports["http"]), LIVECAST_PROMETHEUS_PORT=str(ports["prometheus"]),
               LIVECAST_GRAFANA_PORT=str(ports["grafana"]))
    joined_swarm = False
    publisher = viewers = hammer = None
    figures = {}
    work = tempfile.mkdtemp(prefix="livecast-swarm-")
    try:
        build_image()
        images()
        if swarm_state() != "active":
            run(["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"])
            joined_swarm = True
        step(f"one-node swarm ({'made by this test' if joined_swarm else 'already there'})")

        started = time.monotonic()
        deploy = run(["docker", "stack", "deploy", "-c", "docker-compose.yml", "-c",
                      "scripts/docker/stack.test.yml", "--resolve-image", "never", STACK], env=env)
        step(f"docker stack deploy: {deploy.stdout.strip().splitlines()[-1]}")
        wait_until("every stack service converged and healthy", 180, converged, 1)
        figures["deploy_s"] = round(time.monotonic() - started, 1)
        step(f"every service converged and healthy after {figures['deploy_s']} s")

        publisher = publish(ports["rtmp"], ports["http"], STREAM)
        step("published from the host to the stack's RTMP port; the balancer lists the stream")

        logs_dir = volume_dir("logs")
        viewers = Audience(os.path.join(ROOT, "target", "debug", "livecast-loadtest"), ports["http"],
                           a.viewers, STREAM, work)
        hammer = Hammer(ports["http"], stream=STREAM)
        time.sleep(3)

        since = utc(time.time())
        started = time.monotonic()
        run(["docker", "service", "scale", "--detach=false", f"{STACK}_web=4"])
        check(len(tasks("web")) == 4, f"{len(tasks('web'))} web tasks after scaling to 4")
        hosts = wait_until("four front-ends answering viewers", 40,
                           lambda: h if len(h := answering(logs_dir, since)) >= 4 else None, 1)
        figures["scale_to_4_answering_s"] = round(time.monotonic() - started, 1)
        requests, stalls = expect_no_failures(viewers, hammer, "docker service scale web=4")
        figures["scale_requests"] = requests + hammer.requests
        step(f"docker service scale web=4: {sorted(hosts)} all answering after "
             f"{figures['scale_to_4_answering_s']} s; 0 failed of {requests} viewer requests "
             f"({stalls} stalls) and {hammer.requests} back-to-back requests")

        viewers.reset()
        hammer.close()
        hammer = Hammer(ports["http"], stream=STREAM)
        old = {tid for tid, _, _ in tasks("web")}
        since = utc(time.time())
        started = time.monotonic()
        run(["docker", "service", "update", "--detach=false", "--no-resolve-image",
             "--image", TAGS[1], f"{STACK}_web"], timeout=300)
        figures["rolling_update_s"] = round(time.monotonic() - started, 1)
        now = tasks("web")
        check(len(now) == 4 and all(image == TAGS[1] for _, image, _ in now),
              f"web tasks after the update: {now}")
        check(not old & {tid for tid, _, _ in now}, "an old task survived the update")
        # The update ends once the last new task has run its monitor period without failing.
        state = wait_until("the update to complete", 60, lambda: (s := run(
            ["docker", "service", "inspect", "--format", "{{.UpdateStatus.State}}", f"{STACK}_web"]
        ).stdout.strip()) != "updating" and s, 1)
        check(state == "completed", f"update state {state!r} (rolled back?)")
        time.sleep(4)  # viewers carry on over the new tasks
        hosts = answering(logs_dir, utc(time.time() - 3))
        check(len(hosts) == 4, f"front-ends answering after the update: {sorted(hosts)}")
        requests, stalls = expect_no_failures(viewers, hammer, "the rolling update")
        figures["update_requests"] = requests + hammer.requests
        step(f"rolling update of web to {TAGS[1]} (start-first, one at a time): "
             f"{figures['rolling_update_s']} s, 4 new tasks answering; 0 failed of {requests} "
             f"viewer requests ({stalls} stalls) and {hammer.requests} back-to-back requests")

        print(json.dumps({"figures": figures}), flush=True)
        step("all Swarm checks passed")
        return 0
    except Failure as failure:
        step(f"FAILED: {failure}")
        print(run(["docker", "stack", "ps", STACK, "--no-trunc"], check=False).stdout)
        for service in ("web", "proxy"):
            logs = run(["docker", "service", "logs", "--no-task-ids", "--tail", "40", f"{STACK}_{service}"],
                       check=False)
            print(logs.stdout[-6000:], logs.stderr[-3000:])
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
            teardown(joined_swarm)
        run(["rm", "-rf", work], check=False)


def teardown(leave):
    run(["docker", "stack", "rm", STACK], check=False)
    # The stack's containers stop in the background; its volumes can go once they have.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        left = run(["docker", "ps", "-aq", "--filter", f"label=com.docker.stack.namespace={STACK}"],
                   check=False).stdout.split()
        if not left:
            break
        time.sleep(1)
    volumes = run(["docker", "volume", "ls", "-q", "--filter", f"label=com.docker.stack.namespace={STACK}"],
                  check=False).stdout.split()
    if volumes:
        run(["docker", "volume", "rm", *volumes], check=False)
    if leave:
        run(["docker", "swarm", "leave", "--force"], check=False)


if __name__ == "__main__":
    sys.exit(main())
