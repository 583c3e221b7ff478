#!/usr/bin/env python3
"""Checks of the deployment files past one machine, as far as a machine without a cluster or
an AWS account allows (the Swarm stack runs for real in scripts/swarm_test.py).

    scripts/deploy_check.py [--only kubernetes,terraform,ansible,pipelines]

- kubernetes: `kubectl kustomize` renders deploy/k8s/base, overlays/example and loadtest;
  `kubernetes-validate --strict` accepts every object; checkov's Kubernetes checks pass (the
  accepted findings, each with its reason, are in deploy/checkov.yaml); the rendered objects
  keep the invariants (HPA on the adapter's metric and CPU, PDB, default-deny NetworkPolicy
  with the traffic ports only from their ranges, hardening, resources, internal load
  balancers with source ranges in the overlay).
- terraform: `terraform fmt -check -recursive`; the HCL parsed (python-hcl2) keeps the
  lifecycle's invariants (both hooks and their defaults, the event patterns, the rules
  targeting the SSM automation that runs the playbooks, IAM granting exactly the Auto Scaling
  calls the playbooks make, no public address, no 0.0.0.0/0 ingress, IMDSv2); checkov's
  Terraform checks pass. `terraform validate` and `plan` need the provider, whose registry
  cannot be reached here.
- ansible: `ansible-playbook --syntax-check`, `ansible-lint --offline`, and a real run of the
  lifecycle playbooks on this machine (`-i localhost, -c local`) with the real binaries: the
  Auto Scaling calls go to a recorder of the Query API (moto does not implement lifecycle
  actions) and the archive to moto's S3 server. A wrong expected version completes the
  action with ABANDON and starts nothing; the right one starts the front-end, waits for
  /readyz and completes with CONTINUE; the terminate playbook sends a heartbeat, stops the
  front-end (drain), waits until the shipper archived its access log to S3 and completes with
  CONTINUE; the archive holds exactly the lines the front-end wrote.
- pipelines: bitbucket-pipelines.yml and .github/workflows/ci.yml run .ci/run, build with
  scripts/release.sh and deploy with scripts/deploy.sh (every script they name exists);
  checkov's checks for both pass; `scripts/deploy.sh k8s` renders the overlay with the
  release's image and version (kubectl's apply replaced by its kustomize).

The tools come from PyPI (scripts/deploy-requirements.txt) into a virtualenv of their own,
$LIVECAST_DEPLOY_VENV (default /var/cache/livecast-deploy-venv), made on the first run.
Prints one line per check; exits non-zero at the first failure. Only loopback is reached.
"""

import argparse
import glob
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "bench"))
sys.path.insert(0, HERE)
from common import ROOT, free_port  # noqa: E402
from docker_test import Failure, check, step  # noqa: E402

VENV = os.environ.get("LIVECAST_DEPLOY_VENV", "/var/cache/livecast-deploy-venv")
REQUIREMENTS = os.path.join(ROOT, "scripts", "deploy-requirements.txt")


def run(args, cwd=ROOT, ok=(0,), **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    p = subprocess.run(args, cwd=cwd, **kw)
    if ok is not None and p.returncode not in ok:
        raise Failure(f"{' '.join(args)} exited {p.returncode}:\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}")
    return p


def passed(checkov_output):
    """checkov's "Passed checks: N" line."""
    m = re.search(r"Passed checks: \d+", checkov_output)
    return m.group(0) if m else "no checks"


def tool(name):
    return os.path.join(VENV, "bin", name)


def ensure_venv():
    """The tools' virtualenv, made (or remade when the requirements changed)."""
    with open(REQUIREMENTS, "rb") as f:
        want = hashlib.sha256(f.read()).hexdigest()
    stamp = os.path.join(VENV, ".livecast-requirements")
    try:
        with open(stamp) as f:
            if f.read().strip() == want:
                return
    except OSError:
        pass
    step(f"installing the validation tools into {VENV} (scripts/deploy-requirements.txt)")
    shutil.rmtree(VENV, ignore_errors=True)
    run([sys.executable, "-m", "venv", VENV])
    run([tool("pip"), "install", "--quiet", "--disable-pip-version-check", "-r", REQUIREMENTS])
    with open(stamp, "w") as f:
        f.write(want)


# ---------------------------------------------------------------------------------------------
# Kubernetes

def kustomize(path):
    if not shutil.which("kubectl"):
        raise Failure("kubectl is not installed (it renders the kustomizations)")
    return run(["kubectl", "kustomize", path]).stdout


def containers(obj):
    return obj["spec"]["template"]["spec"]["containers"]


def kubernetes(work):
    import yaml

    rendered = {}
    for name, path in (("base", "deploy/k8s/base"), ("overlay", "deploy/k8s/overlays/example"),
                       ("loadtest", "deploy/k8s/loadtest")):
        text = kustomize(path)
        out = os.path.join(work, "k8s", f"{name}.yaml")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, "w") as f:
            f.write(text)
        rendered[name] = [d for d in yaml.safe_load_all(text) if d]
        p = run([tool("kubernetes-validate"), "--strict", out], ok=None)
        check(p.returncode == 0, f"kubernetes-validate --strict {path}:\n{p.stdout}{p.stderr}")
        step(f"kubectl kustomize {path}: {len(rendered[name])} objects, kubernetes-validate --strict ok")

    p = run([tool("checkov"), "-d", os.path.join(work, "k8s"), "--framework", "kubernetes",
             "--skip-download", "--quiet", "--compact", "--config-file", "deploy/checkov.yaml"], ok=None)
    check(p.returncode == 0, f"checkov (Kubernetes) found what deploy/checkov.yaml does not explain:\n{p.stdout[-6000:]}")
    step(f"checkov, Kubernetes: {passed(p.stdout)}, no unexplained finding")

    for name in ("base", "overlay"):
        objs = rendered[name]
        by = {(o["kind"], o["metadata"]["name"]): o for o in objs}
        deployments = [o for o in objs if o["kind"] == "Deployment"]
        check(sorted(d["metadata"]["name"] for d in deployments) == ["ingest", "logship", "proxy", "web"],
              f"{name}: deployments")
        for d in deployments:
            pod = d["spec"]["template"]["spec"]
            label = d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
            check(pod.get("automountServiceAccountToken") is False, f"{name}/{label}: service-account token")
            check(pod["securityContext"].get("runAsNonRoot") is True, f"{name}/{label}: runAsNonRoot")
            ann = d["spec"]["template"]["metadata"].get("annotations", {})
            for c in pod["containers"]:
                res = c.get("resources", {})
                check(res.get("requests", {}).get("cpu") and res.get("requests", {}).get("memory")
                      and res.get("limits", {}).get("memory") and res.get("limits", {}).get("cpu"),
                      f"{name}/{label}: requests and limits")
                admin = [p["containerPort"] for p in c["ports"] if p["name"] == "admin"]
                check(admin and str(admin[0]) == ann.get("prometheus.io/port"),
                      f"{name}/{label}: Prometheus scrapes the admin port")
        # Front-ends: preStop inside the grace period; HPA; PDB.
        web = by[("Deployment", "web")]
        pod = web["spec"]["template"]["spec"]
        pre = pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
        check(pre[0] == "sleep" and int(pre[1]) < pod["terminationGracePeriodSeconds"],
              f"{name}: preStop {pre} shorter than the grace period")
        hpa = by[("HorizontalPodAutoscaler", "web")]
        check(hpa["apiVersion"] == "autoscaling/v2" and hpa["spec"]["scaleTargetRef"]["name"] == "web", "HPA target")
        check(hpa["spec"]["minReplicas"] >= 2, "HPA keeps two front-ends")
        metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
        external = metrics["External"]["external"]
        check(external["target"]["type"] == "AverageValue", "viewers per front-end is an AverageValue")
        check(metrics["Resource"]["resource"]["name"] == "cpu", "HPA on CPU")
        pdb = by[("PodDisruptionBudget", "web")]
        check(pdb["spec"]["selector"]["matchLabels"].items() <= web["spec"]["template"]["metadata"]["labels"].items(),
              "the PDB selects the front-ends")
        # Network policies: default deny, each pod covered, no open range, ports as designed.
        policies = [o for o in objs if o["kind"] == "NetworkPolicy"]
        check(any(p["spec"]["podSelector"] == {} and p["spec"]["policyTypes"] == ["Ingress"]
                  and not p["spec"].get("ingress") for p in policies), f"{name}: a default-deny policy")
        allowed = {}
        for p in policies:
            sel = p["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name")
            for rule in p["spec"].get("ingress", []):
                for peer in rule.get("from", []):
                    cidr = peer.get("ipBlock", {}).get("cidr")
                    check(cidr not in ("0.0.0.0/0", "::/0"), f"{name}: {p['metadata']['name']} admits {cidr}")
                for port in rule["ports"]:
                    allowed.setdefault(sel, set()).add(port["port"])
        check(allowed == {"proxy": {8080, 9103}, "ingest": {1935, 9101}, "web": {8081, 9102}, "logship": {9104}},
              f"{name}: ports the policies open {allowed}")
        web_policy = by[("NetworkPolicy", "web")]
        viewers_rule = [r for r in web_policy["spec"]["ingress"] if {"port": 8081, "protocol": "TCP"} in r["ports"]][0]
        check(viewers_rule["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "proxy"}}}],
              f"{name}: only the balancer reaches the front-ends")

    # The adapter rule serves the metric the HPA asks for, from the metric the shipper exports.
    with open(os.path.join(ROOT, "deploy/k8s/prometheus-adapter/values.yaml")) as f:
        values = yaml.safe_load(f)
    rule = values["rules"]["external"][0]
    hpa = [o for o in rendered["base"] if o["kind"] == "HorizontalPodAutoscaler"][0]
    external = [m for m in hpa["spec"]["metrics"] if m["type"] == "External"][0]["external"]
    check(rule["name"]["as"] == external["metric"]["name"], "the adapter's metric is the HPA's")
    with open(os.path.join(ROOT, "crates/livecast-logship/src/metrics.rs")) as f:
        check('"livecast_viewers_concurrent"' in f.read(), "the shipper exports livecast_viewers_concurrent")
    check("livecast_viewers_concurrent" in rule["seriesQuery"], "the adapter reads the shipper's gauge")

    overlay = rendered["overlay"]
    for o in overlay:
        if o["kind"] not in ("Namespace",):
            check(o["metadata"].get("namespace") == "livecast", f"overlay: {o['kind']} {o['metadata']['name']} namespace")
    for svc in ("proxy", "ingest"):
        s = [o for o in overlay if o["kind"] == "Service" and o["metadata"]["name"] == svc][0]
        check(s["spec"]["type"] == "LoadBalancer" and s["spec"]["loadBalancerSourceRanges"]
              and "0.0.0.0/0" not in s["spec"]["loadBalancerSourceRanges"], f"overlay: {svc} source ranges")
        check(s["metadata"]["annotations"].get("service.beta.kubernetes.io/aws-load-balancer-scheme") == "internal",
              f"overlay: {svc} load balancer is internal")
    images = {c["image"] for o in overlay if o["kind"] == "Deployment" for c in containers(o)}
    check(all(not i.endswith(":latest") and ":" in i for i in images), f"overlay images {images}")
    step("Kubernetes invariants: hardening, resources, scrape ports, preStop < grace, HPA (viewers per "
         "front-end from the adapter rule, CPU), PDB, default-deny policies with the traffic ports only, "
         "internal load balancers with source ranges in the overlay")


# ---------------------------------------------------------------------------------------------
# Terraform

TF = os.path.join(ROOT, "deploy", "aws", "terraform")
ANSIBLE = os.path.join(ROOT, "deploy", "aws", "ansible")


def flat(value):
    """python-hcl2's output with each attribute's value out of the one-element list it wraps
    it in; blocks stay lists of dicts."""
    if isinstance(value, dict):
        return {k: flat(v) for k, v in value.items()}
    if isinstance(value, list):
        if len(value) == 1 and not isinstance(value[0], dict):
            return flat(value[0])
        return [flat(v) for v in value]
    return value


def local(tf, name):
    """A `locals` value of the module."""
    for item in tf.get("locals", []):
        if name in item:
            value = item[name]
            return value[0] if isinstance(value, list) and len(value) == 1 else value
    raise Failure(f"no local {name}")


def as_list(value):
    return value if isinstance(value, list) else [value]


def blocks(tf, kind, name):
    """The resource (or data source) `name` of type `kind`, from python-hcl2's output."""
    for item in tf.get("resource", []):
        if kind in item and name in item[kind]:
            return item[kind][name]
    raise Failure(f"no resource {kind}.{name}")


def unquote(v):
    return v.strip('"') if isinstance(v, str) else v


def playbook_calls(playbook):
    """The `aws autoscaling <call>` commands a playbook makes (its own tasks and the task files
    it includes), as IAM action names."""
    texts = []
    with open(os.path.join(ANSIBLE, playbook)) as f:
        texts.append(f.read())
    for include in re.findall(r"include_tasks:\s*(\S+)", texts[0]):
        with open(os.path.join(ANSIBLE, include)) as f:
            texts.append(f.read())
    calls = set()
    for text in texts:
        for cmd in re.findall(r"'aws', 'autoscaling', '([a-z-]+)'", text):
            calls.add("autoscaling:" + "".join(w.capitalize() for w in cmd.split("-")))
    return calls


def terraform(work):
    import hcl2

    p = run(["terraform", "fmt", "-check", "-recursive", "deploy/aws/terraform"], ok=None)
    check(p.returncode == 0, f"terraform fmt -check: {p.stdout}{p.stderr}")
    tf = {}
    for path in sorted(glob.glob(os.path.join(TF, "*.tf"))):
        with open(path) as f:
            for key, value in hcl2.load(f).items():
                tf.setdefault(key, []).extend(flat(value) if isinstance(value, list) else [flat(value)])
    step(f"terraform fmt -check -recursive: ok; {len(glob.glob(os.path.join(TF, '*.tf')))} files parsed with python-hcl2")

    web = blocks(tf, "aws_autoscaling_group", "web")
    hooks = {h["lifecycle_transition"]: h for h in web["initial_lifecycle_hook"]}
    check(hooks["autoscaling:EC2_INSTANCE_LAUNCHING"]["default_result"] == "ABANDON", "launch hook default ABANDON")
    check(hooks["autoscaling:EC2_INSTANCE_TERMINATING"]["default_result"] == "CONTINUE", "terminate hook default CONTINUE")
    check(all("heartbeat_timeout" in h for h in hooks.values()), "hooks have a heartbeat timeout")
    check(as_list(web["target_group_arns"]) == ["${aws_lb_target_group.web.arn}"], "front-ends join the target group (when InService)")
    single = blocks(tf, "aws_autoscaling_group", "single")
    check(single["initial_lifecycle_hook"][0]["default_result"] == "ABANDON", "ingest/shipper launch hook")

    rules = local(tf, "lifecycle_rules")
    event_rule = blocks(tf, "aws_cloudwatch_event_rule", "lifecycle")
    pattern = event_rule["event_pattern"]
    check("aws.autoscaling" in pattern and "EC2 Instance-launch Lifecycle Action" in pattern
          and "EC2 Instance-terminate Lifecycle Action" in pattern, f"event pattern {pattern}")
    transitions = {(r["group"], r["transition"]) for r in rules.values()}
    check(("${aws_autoscaling_group.web.name}", "launch") in transitions
          and ("${aws_autoscaling_group.web.name}", "terminate") in transitions, "rules for both web hooks")
    target = blocks(tf, "aws_cloudwatch_event_target", "lifecycle")
    check("automation-definition/${aws_ssm_document.lifecycle.name}" in target["arn"], "the rule starts the SSM automation")
    check(target["role_arn"] == "${aws_iam_role.events.arn}", "EventBridge's role")
    template = target["input_transformer"][0]["input_template"]
    check("$.detail.EC2InstanceId" in str(target["input_transformer"][0]["input_paths"]) and "<instance>" in template,
          "the instance id reaches the automation")
    automation = blocks(tf, "aws_ssm_document", "lifecycle")
    check("aws_ssm_document.playbook.name" in automation["content"] and "aws:runCommand" in automation["content"],
          "the automation runs the playbook document")
    check("CompleteLifecycleAction" in automation["content"], "the automation answers the default when the command fails")
    playbook_doc = blocks(tf, "aws_ssm_document", "playbook")["content"]
    for rule in rules.values():
        check(os.path.exists(os.path.join(ANSIBLE, rule["playbook"])), f"playbook {rule['playbook']}")
        check(rule["playbook"] in playbook_doc, f"{rule['playbook']} allowed by the command document")
        check(rule["failure"] == ("ABANDON" if rule["transition"] == "launch" else "CONTINUE"),
              f"{rule}: failure result is the hook's default")
    check("ansible-playbook -i localhost, -c local /opt/livecast/ansible/{{Playbook}}" in playbook_doc,
          "the command runs the playbook where the user data installs it")

    # IAM: each role may make exactly the Auto Scaling calls its playbooks make.
    actions = local(tf, "lifecycle_actions")
    for role in ("web", "ingest", "logship"):
        books = {r["playbook"] for r in rules.values() if r["role"] == role}
        want = set().union(*(playbook_calls(b) for b in books))
        check(set(as_list(actions[role])) == want, f"IAM for {role}: {sorted(actions[role])}, playbooks call {sorted(want)}")
    step(f"lifecycle: launch hook ABANDON / terminate hook CONTINUE with heartbeats; {len(rules)} EventBridge rules "
         "on the lifecycle actions start the SSM automation that runs the playbooks; IAM grants exactly "
         + ", ".join(f"{r}: {sorted(as_list(actions[r]))}" for r in ("web", "ingest", "logship")))

    # The closed network.
    launch = blocks(tf, "aws_launch_template", "role")
    check(launch["network_interfaces"][0]["associate_public_ip_address"] is False, "no public IP")
    check(launch["metadata_options"][0]["http_tokens"] == "required", "IMDSv2")
    check(blocks(tf, "aws_lb", "viewers")["internal"] is True, "the load balancer is internal")
    for name in ("alb", "web", "ingest", "logship", "efs"):
        sg = blocks(tf, "aws_security_group", name)
        for rule in sg.get("ingress", []):
            cidrs = rule.get("cidr_blocks", [])
            check("0.0.0.0/0" not in str(cidrs) and "::/0" not in str(cidrs), f"{name}: open ingress {cidrs}")
            check(all(c in ("${var.company_cidrs}", "${var.encoder_cidrs}", "${var.monitoring_cidrs}")
                      for c in ([cidrs] if isinstance(cidrs, str) else cidrs)),
                  f"{name}: ingress from {cidrs}")
        for dyn in sg.get("dynamic", []):
            for rule in dyn.get("ingress", {}).get("content", []):
                check(rule["cidr_blocks"] == "${var.monitoring_cidrs}", f"{name}: dynamic ingress")
        for rule in sg.get("egress", []):
            check(as_list(rule.get("cidr_blocks")) == ["${var.vpc_cidr}"], f"{name}: egress leaves the VPC {rule}")
    rtmp = [r for r in blocks(tf, "aws_security_group", "ingest")["ingress"] if r["from_port"] == 1935][0]
    check(rtmp["cidr_blocks"] == "${var.encoder_cidrs}", "RTMP from the encoders only")
    https = blocks(tf, "aws_security_group", "alb")["ingress"][0]
    check(https["cidr_blocks"] == "${var.company_cidrs}" and https["from_port"] == 443, "HTTPS from the company only")

    # The user data gets every value it uses.
    with open(os.path.join(TF, "user-data.sh.tftpl")) as f:
        used = set(re.findall(r"\$\{([a-z_]+)\}", f.read()))
    given = set(re.findall(r"^\s+(\w+)\s+=", re.search(r"templatefile\([^{]*\{(.*?)\}\)\)", open(
        os.path.join(TF, "compute.tf")).read(), re.S).group(1), re.M))
    check(used <= given, f"user data uses {sorted(used - given)} that templatefile does not give")
    step("closed network: no public IP, internal ALB, HTTPS from company_cidrs only, RTMP from encoder_cidrs "
         "only, admin ports from monitoring_cidrs only, egress inside the VPC, IMDSv2; user data variables given")

    p = run([tool("checkov"), "-d", "deploy/aws/terraform", "--framework", "terraform", "--skip-download",
             "--quiet", "--compact", "--config-file", "deploy/checkov.yaml"], ok=None)
    check(p.returncode == 0, f"checkov (Terraform) found what deploy/checkov.yaml does not explain:\n{p.stdout[-6000:]}")
    step(f"checkov, Terraform: {passed(p.stdout)}, no unexplained finding")


# ---------------------------------------------------------------------------------------------
# Ansible, run for real

class Recorder:
    """The Auto Scaling Query API's lifecycle calls, as AWS answers them: a signed POST with
    Action=CompleteLifecycleAction or RecordLifecycleActionHeartbeat. An action must be
    pending (`expect`) for the instance and hook; completing it ends it, as on AWS."""

    def __init__(self):
        self.calls, self.pending, self.lock = [], set(), threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                form = {k: v[0] for k, v in urllib.parse.parse_qs(body).items()}
                status, xml = recorder.answer(form, self.headers.get("Authorization", ""))
                data = xml.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def expect(self, group, hook, instance):
        with self.lock:
            self.pending.add((group, hook, instance))

    @staticmethod
    def error(code, message):
        return 400, (f'<ErrorResponse xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/"><Error>'
                     f"<Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>"
                     f"<RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>")

    def answer(self, form, authorization):
        action = form.get("Action")
        if not authorization.startswith("AWS4-HMAC-SHA256 "):
            return 403, "<ErrorResponse><Error><Code>MissingAuthenticationToken</Code></Error></ErrorResponse>"
        if action not in ("CompleteLifecycleAction", "RecordLifecycleActionHeartbeat"):
            return self.error("InvalidAction", f"{action} is not recorded here")
        key = (form.get("AutoScalingGroupName"), form.get("LifecycleHookName"), form.get("InstanceId"))
        if not all(key):
            return self.error("ValidationError", "AutoScalingGroupName, LifecycleHookName and InstanceId are required")
        result = form.get("LifecycleActionResult")
        if action == "CompleteLifecycleAction" and result not in ("CONTINUE", "ABANDON"):
            return self.error("ValidationError", f"LifecycleActionResult {result!r}")
        with self.lock:
            if key not in self.pending:
                return self.error("ValidationError", f"No active Lifecycle Action found with instance ID {key[2]}")
            if action == "CompleteLifecycleAction":
                self.pending.discard(key)
            self.calls.append((action, *key, result))
        return 200, (f'<{action}Response xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/">'
                     f"<{action}Result/><ResponseMetadata><RequestId>00000000-0000-0000-0000-000000000000"
                     f"</RequestId></ResponseMetadata></{action}Response>")


def listening(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def ansible(work):
    env = dict(os.environ, PATH=f"{os.path.join(VENV, 'bin')}:{os.environ['PATH']}",
               ANSIBLE_LOCALHOST_WARNING="False", ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
               # The modules run with the tools' Python (this host may have several).
               ANSIBLE_PYTHON_INTERPRETER=tool("python"))
    p = run([tool("ansible-playbook"), "--syntax-check", "-i", "localhost,", "launch.yml", "terminate.yml"],
            cwd=ANSIBLE, env=env, ok=None)
    check(p.returncode == 0, f"ansible-playbook --syntax-check:\n{p.stdout}{p.stderr}")
    p = run([tool("ansible-lint"), "--offline", "--nocolor", "launch.yml", "terminate.yml"], cwd=ANSIBLE, env=env, ok=None)
    check(p.returncode == 0, f"ansible-lint --offline:\n{p.stdout}{p.stderr}")
    step("ansible-playbook --syntax-check and ansible-lint --offline (production profile): ok")

    bin_dir = os.path.join(ROOT, "target", "debug")
    if not all(os.path.exists(os.path.join(bin_dir, f"livecast-{b}")) for b in ("web", "logship")):
        run(["cargo", "build", "--bins", "-q", "-p", "livecast-web", "-p", "livecast-logship"])
    version = run([os.path.join(bin_dir, "livecast-web"), "--version"]).stdout.split()[-1]

    moto_port = free_port()
    moto = subprocess.Popen([tool("moto_server"), "-H", "127.0.0.1", "-p", str(moto_port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    recorder = Recorder()
    base = os.path.join(work, "host")
    data = os.path.join(base, "data")
    for d in ("hls", "logs", "logship"):
        os.makedirs(os.path.join(data, d))
    aws_env = {"AWS_ACCESS_KEY_ID": "livecast-test", "AWS_SECRET_ACCESS_KEY": "livecast-test",
               "AWS_DEFAULT_REGION": "eu-west-1", "AWS_REGION": "eu-west-1"}
    env.update(aws_env)
    ports = {"web": free_port(), "web_admin": free_port(), "logship_admin": free_port()}
    group, launch_hook, terminate_hook = "livecast-web", "livecast-web-launch", "livecast-web-terminate"

    def play(playbook, role, instance="", hook="", expected=version, extra=None):
        variables = {
            "livecast_role": role, "livecast_expected_version": expected, "livecast_bin_dir": bin_dir,
            "livecast_etc_dir": os.path.join(base, "etc"), "livecast_run_dir": os.path.join(base, "run"),
            "livecast_data_dir": data, "livecast_service_manager": "direct",
            "livecast_asg_name": group if hook else "", "livecast_lifecycle_hook": hook,
            "livecast_instance_id": instance, "livecast_region": "eu-west-1",
            "livecast_autoscaling_endpoint": recorder.url, "livecast_archive": "s3://livecast-archive/access",
            "livecast_ready_timeout_secs": 30, "livecast_archive_timeout_secs": 90,
            "livecast_admin_ports": {"web": ports["web_admin"], "logship": ports["logship_admin"],
                                     "ingest": 9101, "proxy": 9103},
            "livecast_extra_env": extra or {},
        }
        path = os.path.join(work, f"vars-{time.monotonic_ns()}.json")
        with open(path, "w") as f:
            json.dump(variables, f)
        return run([tool("ansible-playbook"), "-i", "localhost,", "-c", "local", playbook, "-e", f"@{path}"],
                   cwd=ANSIBLE, env=env, ok=None, timeout=300)

    web_env = {"LIVECAST_LISTEN": f"127.0.0.1:{ports['web']}",
               "LIVECAST_ADMIN_LISTEN": f"127.0.0.1:{ports['web_admin']}"}
    try:
        # The archive bucket in moto's S3.
        deadline = time.monotonic() + 20
        while not listening(moto_port):
            check(time.monotonic() < deadline and moto.poll() is None, "moto_server did not start")
            time.sleep(0.2)
        s3_env = {"AWS_ENDPOINT": f"http://127.0.0.1:{moto_port}", "AWS_ALLOW_HTTP": "true", **aws_env}
        import boto3
        s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{moto_port}", region_name="eu-west-1",
                          aws_access_key_id="livecast-test", aws_secret_access_key="livecast-test")
        s3.create_bucket(Bucket="livecast-archive", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})

        p = play("launch.yml", "logship", extra={"LIVECAST_ADMIN_LISTEN": f"127.0.0.1:{ports['logship_admin']}",
                                                 **s3_env})
        check(p.returncode == 0, f"launch.yml for the shipper:\n{p.stdout[-3000:]}")
        step(f"launch.yml (shipper, no lifecycle action): ready on :{ports['logship_admin']}, archiving to moto's S3")

        recorder.expect(group, launch_hook, "i-0wrongversion")
        p = play("launch.yml", "web", "i-0wrongversion", launch_hook, expected="9.9.9", extra=web_env)
        check(p.returncode != 0, "launch.yml passed with a wrong expected version")
        check(recorder.calls == [("CompleteLifecycleAction", group, launch_hook, "i-0wrongversion", "ABANDON")],
              f"lifecycle calls after the wrong version: {recorder.calls}")
        check(not listening(ports["web_admin"]) and not listening(ports["web"]),
              "the front-end was started despite the wrong version")
        check(not os.path.exists(os.path.join(base, "run", "livecast-web.pid")), "a pid file after the wrong version")
        step(f"launch.yml, expected 9.9.9 but livecast-web {version} installed: failed, ABANDON sent, nothing started")

        recorder.expect(group, launch_hook, "i-0right")
        started = time.monotonic()
        p = play("launch.yml", "web", "i-0right", launch_hook, extra=web_env)
        check(p.returncode == 0, f"launch.yml with the right version:\n{p.stdout[-3000:]}")
        check(recorder.calls[-1] == ("CompleteLifecycleAction", group, launch_hook, "i-0right", "CONTINUE"),
              f"lifecycle calls: {recorder.calls}")
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['web_admin']}/readyz", timeout=5) as r:
            check(r.status == 200, "readyz")
        step(f"launch.yml, version {version}: front-end started, /readyz 200, CONTINUE sent "
             f"({time.monotonic() - started:.1f} s)")

        paths = []
        for i in range(40):
            path = f"/hls/lifecycle-{i % 4}/index.m3u8" if i % 2 else "/api/streams"
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{ports['web']}{path}", timeout=5).read()
            except urllib.error.HTTPError:
                pass  # 404 for a stream nobody publishes: still a logged request
            paths.append(path)

        recorder.expect(group, terminate_hook, "i-0right")
        started = time.monotonic()
        p = play("terminate.yml", "web", "i-0right", terminate_hook, extra=web_env)
        check(p.returncode == 0, f"terminate.yml:\n{p.stdout[-3000:]}")
        check(recorder.calls[-2:] == [
            ("RecordLifecycleActionHeartbeat", group, terminate_hook, "i-0right", None),
            ("CompleteLifecycleAction", group, terminate_hook, "i-0right", "CONTINUE")],
            f"lifecycle calls: {recorder.calls}")
        check(not listening(ports["web"]), "the front-end still listens after terminate.yml")
        left = glob.glob(os.path.join(data, "logs", "i-0right*"))
        check(not left, f"logs left on the shared volume: {left}")
        took = time.monotonic() - started

        # What reached the archive: exactly the lines the front-end wrote.
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="livecast-archive", Prefix="access/").get("Contents", [])]
        check(keys and all("i-0right" in k for k in keys), f"archived objects {keys}")
        lines = []
        for key in keys:
            body = s3.get_object(Bucket="livecast-archive", Key=key)["Body"].read().decode()
            lines += [json.loads(line) for line in body.splitlines() if line.strip()]
        got = sorted(line["url.path"] for line in lines)
        check(got == sorted(paths), f"archived {len(got)} lines, the front-end answered {len(paths)} requests")
        step(f"terminate.yml: heartbeat, front-end stopped (drained), its log archived to S3 by the shipper "
             f"({len(keys)} object(s): {len(lines)} lines of {len(paths)} written, each once), CONTINUE sent "
             f"({took:.1f} s)")
    finally:
        for role in ("web", "logship"):
            pid = os.path.join(base, "run", f"livecast-{role}.pid")
            if os.path.exists(pid):
                run(["start-stop-daemon", "--stop", "--oknodo", "--retry", "TERM/10/KILL/5", "--pidfile", pid], ok=None)
        moto.send_signal(signal.SIGTERM)
        moto.wait(10)
        recorder.server.shutdown()
    check(not recorder.pending, f"lifecycle actions left unanswered: {recorder.pending}")


# ---------------------------------------------------------------------------------------------
# Pipelines

def pipelines(work):
    import yaml

    with open(os.path.join(ROOT, "bitbucket-pipelines.yml")) as f:
        bitbucket = yaml.safe_load(f)
    with open(os.path.join(ROOT, ".github", "workflows", "ci.yml")) as f:
        github = yaml.safe_load(f)
    commands = []
    for steps in [bitbucket["pipelines"]["default"], *bitbucket["pipelines"]["branches"].values()]:
        for s in steps:
            commands += s["step"]["script"]
    check(bitbucket["pipelines"]["default"][0]["step"]["script"] == [".ci/run"], "Bitbucket's test step runs .ci/run")
    for job in github["jobs"].values():
        commands += [s["run"] for s in job["steps"] if "run" in s]
    check(any(s.get("run") == ".ci/run" for s in github["jobs"]["test"]["steps"]), "GitHub's test job runs .ci/run")
    check(github["jobs"]["deploy"]["environment"] == "production", "GitHub's deploy is gated by an environment")
    named = set()
    for c in commands:
        named.update(re.findall(r"(?:^|\s|\$\()((?:\.ci|scripts)/[\w./-]+)", c))
    check({".ci/run", "scripts/release.sh", "scripts/deploy.sh"} <= named, f"scripts the pipelines call: {named}")
    for path in named:
        full = os.path.join(ROOT, path)
        check(os.path.isfile(full) and os.access(full, os.X_OK), f"{path} (named by a pipeline) is not an executable file")
    for target in re.findall(r"scripts/deploy\.sh (\w+)", " ".join(commands)):
        check(target in ("aws",), f"deploy target {target}")
    for script in ("scripts/release.sh", "scripts/deploy.sh"):
        run(["bash", "-n", script])
    p = run(["scripts/deploy.sh"], ok=None)
    check(p.returncode == 2 and "usage" in p.stderr, "scripts/deploy.sh without arguments")
    for framework, path in (("github_actions", ".github/workflows/ci.yml"), ("bitbucket_pipelines", "bitbucket-pipelines.yml")):
        p = run([tool("checkov"), "-f", path, "--framework", framework, "--skip-download", "--quiet", "--compact",
                 "--config-file", "deploy/checkov.yaml"], ok=None)
        check(p.returncode == 0, f"checkov {framework}:\n{p.stdout[-3000:]}")
    step(f"pipelines: both run .ci/run, then scripts/release.sh and scripts/deploy.sh ({len(named)} scripts, all "
         "executable); checkov's GitHub Actions and Bitbucket checks pass")

    # scripts/deploy.sh k8s with kubectl's apply replaced by kustomize: the overlay with the release.
    shim = os.path.join(work, "shim")
    os.makedirs(shim)
    real = shutil.which("kubectl")
    out = os.path.join(work, "applied.yaml")
    with open(os.path.join(shim, "kubectl"), "w") as f:
        f.write(f"#!/bin/sh\ncase \"$*\" in\n  'apply -k '*) exec {real} kustomize \"$3\" > {out} ;;\n"
                "  *' rollout status '*) exit 0 ;;\n  *) exit 3 ;;\nesac\n")
    os.chmod(os.path.join(shim, "kubectl"), 0o755)
    version = re.search(r'^version = "(.*)"$', open(os.path.join(ROOT, "Cargo.toml")).read(), re.M).group(1)
    run(["scripts/deploy.sh", "k8s", f"registry.corp.example/livecast:{version}-abc123"],
        env=dict(os.environ, PATH=f"{shim}:{os.environ['PATH']}"))
    docs = [d for d in yaml.safe_load_all(open(out)) if d]
    images = {c["image"] for d in docs if d["kind"] == "Deployment" for c in containers(d)}
    check(images == {f"registry.corp.example/livecast:{version}-abc123"}, f"deployed images {images}")
    release = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("livecast-release")]
    check(len(release) == 1 and release[0]["data"] == {"version": version}, f"release ConfigMap {release}")
    check(not os.path.exists(os.path.join(ROOT, "deploy/k8s/overlays/.release")), "deploy.sh left its kustomization")
    step(f"scripts/deploy.sh k8s: every container runs the new image, front-ends expect version {version}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="kubernetes,terraform,ansible,pipelines")
    a = parser.parse_args()
    ensure_venv()
    if os.path.realpath(sys.prefix) != os.path.realpath(VENV):
        os.execv(tool("python"), [tool("python"), os.path.abspath(__file__), *sys.argv[1:]])
    work = tempfile.mkdtemp(prefix="livecast-deploy-")
    try:
        for part in a.only.split(","):
            {"kubernetes": kubernetes, "terraform": terraform, "ansible": ansible, "pipelines": pipelines}[part](work)
        step("all deployment checks passed")
        return 0
    except Failure as failure:
        step(f"FAILED: {failure}")
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
