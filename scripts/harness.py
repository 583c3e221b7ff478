#!/usr/bin/env python3
"""Parts shared by the fault suite (chaos.py) and the Docker tests (docker_test.py).

- `Bulk`: an Elasticsearch stand-in (no Elasticsearch server can be installed on the machines
  this project is built on) that follows the contract the shipper uses: `_bulk` with NDJSON
  `create` actions and per-item statuses (201, 409 for an `_id` already there, 503 while
  down), and index templates (`PUT/GET/HEAD /_index_template/<name>`, with `?create=true`)
  checked as Elasticsearch checks them; a document whose field does not fit the mapping of a
  matching template is refused per item with Elasticsearch's `document_parsing_exception`.
  `GET /_stand_in/docs` returns what was stored (for tests).
  Run alone: `python3 scripts/harness.py bulk --listen 0.0.0.0:9200` (the Docker tests' stack).
- `Audience`: viewers that behave like players (livecast-loadtest, followed while it runs).
"""

import argparse
import ctypes
import fnmatch
import gzip
import http.client
import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# ---------------------------------------------------------------------------------------------
# Elasticsearch stand-in

TEMPLATE_KEYS = {"index_patterns", "template", "composed_of", "priority", "version", "_meta",
                 "data_stream", "allow_auto_create", "ignore_missing_component_templates",
                 "deprecated"}
TEMPLATE_BODY_KEYS = {"settings", "mappings", "aliases", "lifecycle"}
FIELD_TYPES = {"keyword", "constant_keyword", "wildcard", "text", "match_only_text", "long",
               "integer", "short", "byte", "unsigned_long", "double", "float", "half_float",
               "scaled_float", "boolean", "date", "date_nanos", "ip", "object", "flattened",
               "nested"}


def es_error(status, kind, reason):
    return status, {"error": {"root_cause": [{"type": kind, "reason": reason}], "type": kind,
                              "reason": reason}, "status": status}


def check_template(name, body):
    """None when Elasticsearch would accept `body` as index template `name`, else the error."""
    if not isinstance(body, dict):
        return es_error(400, "x_content_parse_exception", "request body is required")
    for key in body:
        if key not in TEMPLATE_KEYS:
            return es_error(400, "x_content_parse_exception",
                            f"[index_template] unknown field [{key}]")
    patterns = body.get("index_patterns")
    if isinstance(patterns, str):
        patterns = [patterns]
    if not patterns or not all(isinstance(p, str) and p for p in patterns):
        return es_error(400, "action_request_validation_exception",
                        "Validation Failed: 1: index patterns are missing;")
    template = body.get("template", {})
    for key in template:
        if key not in TEMPLATE_BODY_KEYS:
            return es_error(400, "x_content_parse_exception", f"[template] unknown field [{key}]")
    problem = check_properties(template.get("mappings", {}).get("properties", {}), "")
    if problem:
        return es_error(400, "mapper_parsing_exception", problem)
    return None


def check_properties(properties, prefix):
    for field, spec in properties.items():
        path = prefix + field
        if not isinstance(spec, dict):
            return f"Expected map for property [fields] on field [{path}]"
        kind = spec.get("type", "object")
        if kind not in FIELD_TYPES:
            return f"No handler for type [{kind}] declared on field [{path}]"
        if "properties" in spec:
            problem = check_properties(spec["properties"], path + ".")
            if problem:
                return problem
    return None


def flat_types(properties, prefix=""):
    """{"client.ip": "ip", ...} for every leaf field of a mapping."""
    out = {}
    for field, spec in properties.items():
        if "properties" in spec:
            out.update(flat_types(spec["properties"], prefix + field + "."))
        else:
            out[prefix + field] = spec.get("type", "object")
    return out


def flat_doc(doc, prefix=""):
    """A document's leaf values by dotted name (dotted keys and nested objects alike)."""
    out = {}
    for key, value in doc.items():
        if isinstance(value, dict):
            out.update(flat_doc(value, prefix + key + "."))
        else:
            out[prefix + key] = value
    return out


def fits(kind, value):
    """Whether Elasticsearch would index `value` into a field of type `kind`."""
    if value is None:
        return True
    if kind in ("long", "integer", "short", "byte", "unsigned_long"):
        return isinstance(value, int) and not isinstance(value, bool) or (
            isinstance(value, str) and re.fullmatch(r"-?\d+", value) is not None)
    if kind in ("double", "float", "half_float", "scaled_float"):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool) or value in ("true", "false")
    if kind == "ip":
        try:
            ipaddress.ip_address(value)
            return True
        except (TypeError, ValueError):
            return False
    if kind in ("date", "date_nanos"):
        if isinstance(value, int):
            return True
        try:
            datetime.fromisoformat(str(value).replace("Z", "+00:00"))
            return True
        except ValueError:
            return False
    if kind in ("keyword", "constant_keyword", "wildcard", "text", "match_only_text"):
        return not isinstance(value, (dict, list))
    return True


class Bulk(ThreadingHTTPServer):
    """See the module documentation."""

    daemon_threads = True

    def __init__(self, host="127.0.0.1", port=0):
        super().__init__((host, port), BulkHandler)
        self.docs = {}
        self.templates = {}
        self.lock = threading.Lock()
        self.down = False
        self.conflicts = 0
        self.refused = []
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def port(self):
        return self.server_address[1]

    def handle_error(self, request, client_address):
        # A shipper killed (-9, on purpose) resets its kept-alive connection: not an error.
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)

    def seqs(self):
        """How often each written sequence number arrived under a distinct id."""
        counts = {}
        with self.lock:
            for doc in self.docs.values():
                m = re.search(r"/seq-(\d+)\.", doc.get("url.path", ""))
                if m:
                    counts[int(m.group(1))] = counts.get(int(m.group(1)), 0) + 1
        return counts

    def mapping_for(self, index):
        """Leaf field types of the highest-priority template matching `index`."""
        best = None
        for template in self.templates.values():
            if any(fnmatch.fnmatchcase(index, p) for p in template["index_patterns"]):
                if best is None or template.get("priority", 0) > best.get("priority", 0):
                    best = template
        if best is None:
            return {}
        return flat_types(best.get("template", {}).get("mappings", {}).get("properties", {}))


class BulkHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _body(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        return body

    def do_HEAD(self):
        name = self._template_name()
        with self.server.lock:
            found = name is not None and name in self.server.templates
        self.send_response(200 if found else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        path = self.path.split("?")[0]
        server = self.server
        if path == "/_stand_in/docs":
            with server.lock:
                return self._answer(200, {"docs": list(server.docs.values()),
                                          "conflicts": server.conflicts,
                                          "refused": server.refused[-20:]})
        if path == "/":
            return self._answer(200, {"version": {"number": "8.19.0"}, "tagline": "stand-in"})
        name = self._template_name()
        if name is not None:
            with server.lock:
                template = server.templates.get(name)
            if template is None:
                return self._answer(*es_error(404, "resource_not_found_exception",
                                              f"index template matching [{name}] not found"))
            return self._answer(200, {"index_templates": [{"name": name, "index_template": template}]})
        self._answer(*es_error(404, "no_handler", f"no handler for {path}"))

    def do_PUT(self):
        name = self._template_name()
        body = self._body()
        if name is None:
            return self._answer(*es_error(405, "method_not_allowed", self.path))
        try:
            template = json.loads(body)
        except ValueError:
            return self._answer(*es_error(400, "x_content_parse_exception", "not JSON"))
        problem = check_template(name, template)
        if problem:
            return self._answer(*problem)
        create = "create=true" in self.path.partition("?")[2]
        with self.server.lock:
            if create and name in self.server.templates:
                return self._answer(*es_error(400, "illegal_argument_exception",
                                              f"index template [{name}] already exists"))
            if isinstance(template["index_patterns"], str):
                template["index_patterns"] = [template["index_patterns"]]
            self.server.templates[name] = template
        self._answer(200, {"acknowledged": True})

    def do_POST(self):
        body = self._body()
        server = self.server
        if server.down:
            return self._answer(503, {"error": "unavailable"})
        m = re.match(r"^/(?:([^/_][^/]*)/)?_bulk", self.path)
        if not m:
            return self._answer(*es_error(404, "no_handler", self.path))
        lines = body.decode().splitlines()
        items = []
        with server.lock:
            for action, source in zip(lines[0::2], lines[1::2]):
                meta = json.loads(action)["create"]
                doc_id = meta["_id"]
                index = meta.get("_index") or m.group(1) or ""
                doc = json.loads(source)
                mapping = server.mapping_for(index)
                wrong = [f for f, v in flat_doc(doc).items()
                         if f in mapping and not fits(mapping[f], v)]
                if wrong:
                    reason = (f"failed to parse field [{wrong[0]}] of type "
                              f"[{mapping[wrong[0]]}] in document with id '{doc_id}'")
                    server.refused.append(reason)
                    items.append({"create": {"_index": index, "_id": doc_id, "status": 400,
                                             "error": {"type": "document_parsing_exception",
                                                       "reason": reason}}})
                elif doc_id in server.docs:
                    server.conflicts += 1
                    items.append({"create": {"_index": index, "_id": doc_id, "status": 409,
                                             "error": {"type": "version_conflict_engine_exception"}}})
                else:
                    server.docs[doc_id] = doc
                    items.append({"create": {"_index": index, "_id": doc_id, "status": 201}})
        self._answer(200, {"took": 1, "errors": any(i["create"]["status"] != 201 for i in items),
                           "items": items})

    def _template_name(self):
        m = re.match(r"^/_index_template/([^/?]+)", self.path)
        return m.group(1) if m else None

    def _answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


# ---------------------------------------------------------------------------------------------
# Viewers


def metric(port, name, absent=None):
    """The value of the unlabelled Prometheus sample `name` at 127.0.0.1:`port`/metrics;
    None when nothing answers, `absent` when the sample is not there."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return absent


def _die_with_parent():
    """In the child before it runs: SIGTERM when the script that started it dies, even by
    kill -9, so an audience never outlives its run (an hour at most in any case)."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Audience:
    """Viewers that behave like players: livecast-loadtest (LL-HLS with blocking reloads,
    preload hints and parts, a playback clock per viewer, each with its own session cookie)
    run as a child process for as long as the audience lasts, and followed while it runs:
    its per-request file (`--requests-out`, flushed every second) answers what failed and when
    each viewer first fetched media of a new publishing session; its metrics
    (`--metrics-listen`) count stalls. `reset()` starts a new window for the next question.
    `close()` stops it with SIGTERM, after which `summary` holds its summary.json."""

    def __init__(self, binary, port, n, stream, work, name="audience"):
        # Not at the top: the Docker tests' stand-in container runs this file without bench/.
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
        from common import free_port

        self.viewers = list(range(n))
        self.work, self.name = work, name
        self.requests_path = os.path.join(work, f"{name}.ndjson")
        self.metrics_port = free_port()
        self.out = os.path.join(work, name)
        self.summary = None
        self.lock = threading.Lock()
        # Its clock: a request's `t_ms` counts from --start-at; this maps it onto ours.
        self.base = time.time() + 0.5
        self.mono_minus_wall = time.monotonic() - time.time()
        self.lines = []  # (monotonic time sent, viewer, type, url, error)
        # A failed early request for a preload-hinted part has its error kind as "hint <kind>".
        self.log = open(os.path.join(work, f"{name}.out"), "ab")
        self.proc = subprocess.Popen(
            [binary, "run", f"http://127.0.0.1:{port}/hls/{stream}/index.m3u8",
             f"--viewers={n}", "--duration=1h", "--ramp=0s", f"--out={self.out}",
             f"--requests-out={self.requests_path}", f"--metrics-listen=127.0.0.1:{self.metrics_port}",
             "--progress-secs=0", f"--start-at={self.base:.3f}"],
            stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        self.reset()
        threading.Thread(target=self._follow, daemon=True).start()
        deadline = time.monotonic() + 15
        while self._metric("livecast_loadtest_viewers") != n:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"livecast-loadtest did not start its {n} viewers "
                                   f"(exit {self.proc.poll()}; see {self.log.name})")
            time.sleep(0.1)

    def _follow(self):
        """Reads the per-request file as it grows, a whole line at a time."""
        while not os.path.exists(self.requests_path):
            if self.proc.poll() is not None:
                return
            time.sleep(0.1)
        with open(self.requests_path, encoding="utf-8") as f:
            partial = ""
            while True:
                chunk = f.readline()
                if not chunk:
                    if self.proc.poll() is not None and not partial:
                        return
                    time.sleep(0.2)
                    continue
                partial += chunk
                if not partial.endswith("\n"):
                    continue
                r = json.loads(partial)
                partial = ""
                sent = self.base + r["t_ms"] / 1000 + self.mono_minus_wall
                with self.lock:
                    error = r["error"] and (f"hint {r['error']}" if r.get("hinted") else r["error"])
                    self.lines.append((sent, r["viewer"], r["type"], r["url"], error))

    def _metric(self, name):
        return metric(self.metrics_port, name)

    def reset(self):
        """Starts a new window: what follows counts requests sent from now on."""
        self.since = time.monotonic()
        self.stalls_at = (self._metric("livecast_loadtest_stalls_total") or 0,
                          self._metric("livecast_loadtest_stalled_seconds_total") or 0)

    def _window(self):
        # A request is in the file within a second of its answer (the file is flushed every
        # second); one held past that (a blocking reload) is in the next window.
        time.sleep(1.2)
        with self.lock:
            return [line for line in self.lines if line[0] >= self.since]

    def totals(self):
        """(requests, failures by kind, stalls, stalled seconds) since the last reset. A kind
        is a status code or a transport failure, "hint ..." for a preload-hinted part."""
        window = self._window()
        failures = {}
        for _, _, _, _, error in window:
            if error:
                failures[error] = failures.get(error, 0) + 1
        stalls = (self._metric("livecast_loadtest_stalls_total") or 0) - self.stalls_at[0]
        stalled = (self._metric("livecast_loadtest_stalled_seconds_total") or 0) - self.stalls_at[1]
        return len(window), failures, int(stalls), stalled

    def failed(self):
        """The last failed requests since the last reset: (time, path, kind), oldest first."""
        return [(t, url, error) for t, _, _, url, error in self._window() if error][-20:]

    def _media(self):
        """(time, viewer, session) of every media fetched since the last reset."""
        for t, viewer, kind, url, error in self._window():
            if kind in ("segment", "part") and not error:
                yield t, viewer, url.rsplit("/", 1)[-1].split("-")[0]

    def resumed_after(self, since, old_sessions):
        """Seconds from `since` (time.monotonic()) until each viewer fetched media of a session
        not in `old_sessions`; None for a viewer that has not."""
        first = {}
        for t, viewer, session in self._media():
            if session not in old_sessions and t >= since:
                first[viewer] = min(first.get(viewer, t), t)
        return [first[v] - since if v in first else None for v in self.viewers]

    def sessions(self):
        return {session for _, _, session in self._media()}

    def close(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:
            with open(os.path.join(self.out, "summary.json")) as f:
                self.summary = json.load(f)
        except (OSError, ValueError):
            self.summary = None
        self.log.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    bulk = sub.add_parser("bulk", help="run the Elasticsearch stand-in")
    bulk.add_argument("--listen", default="127.0.0.1:9200", help="HOST:PORT")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    server = Bulk(host, int(port))
    print(f"Elasticsearch stand-in on {host}:{server.port}", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
