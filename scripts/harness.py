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
- `Viewer` / `Crowd`: viewers that behave like players (see `Viewer`).
"""

import argparse
import fnmatch
import gzip
import http.client
import ipaddress
import json
import random
import re
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


class Viewer(threading.Thread):
    """One viewer through the balancer, as a player behaves: reloads the live playlist every
    half target duration, starts three segments behind the live edge, fetches every new
    segment whole (skipping EXT-X-GAP ones), keeps a playback clock (buffer = media fetched -
    media played) and counts stalls. Sends its own session cookie, as the player page does."""

    def __init__(self, port, stop, stream):
        super().__init__(daemon=True)
        self.port, self.stop, self.stream = port, stop, stream
        self.session = "%032x" % random.getrandbits(128)
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        with getattr(self, "lock", threading.Lock()):
            self.requests = 0
            self.failures = {}
            self.failed = []  # (time, path, kind) of the last failures
            self.stalls = 0
            self.stalled_s = 0.0
            self.sessions_seen = {}  # segment-name session -> first time fetched

    def fail(self, kind, path=""):
        with self.lock:
            self.failures[kind] = self.failures.get(kind, 0) + 1
            self.failed = (self.failed + [(time.time(), path, kind)])[-20:]

    def get(self, conn, path):
        with self.lock:
            self.requests += 1
        try:
            conn.request("GET", path, headers={"Cookie": f"livecast_session={self.session}"})
            response = conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as error:
            self.fail(type(error).__name__, path)
            conn.close()
            return None
        if response.status != 200:
            self.fail(str(response.status), path)
            return None
        return body

    def run(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        fetched = set()
        buffer_s, playing, last_tick = 0.0, False, time.monotonic()
        stall_started = None
        while not self.stop.is_set():
            now = time.monotonic()
            if playing and stall_started is None:
                buffer_s -= now - last_tick
                if buffer_s <= 0:
                    stall_started, buffer_s = now, 0.0
                    with self.lock:
                        self.stalls += 1
            last_tick = now
            text = self.get(conn, f"/hls/{self.stream}/index.m3u8")
            segments = parse_segments(text.decode()) if text else []
            if not fetched and len(segments) > 3:
                fetched.update(uri for uri, _, _ in segments[:-3])
            for uri, duration, gap in segments:
                if uri in fetched:
                    continue
                fetched.add(uri)
                if gap:
                    buffer_s += duration  # a player skips the gap's time
                    continue
                if self.get(conn, f"/hls/{self.stream}/{uri}") is None:
                    continue
                buffer_s += duration
                playing = True
                session = uri.split("-")[0]
                with self.lock:
                    self.sessions_seen.setdefault(session, time.monotonic())
                # After a stall a player rebuffers: it plays on once it holds 1.5 segments.
                if stall_started is not None and buffer_s >= 1.5 * duration:
                    with self.lock:
                        self.stalled_s += time.monotonic() - stall_started
                    stall_started = None
                    last_tick = time.monotonic()
            time.sleep(0.5)


def parse_segments(text):
    """(uri, duration, gap) of every segment of a media playlist."""
    out, duration, gap = [], 0.0, False
    for line in text.splitlines():
        if line.startswith("#EXTINF:"):
            duration = float(line[8:].split(",")[0])
        elif line == "#EXT-X-GAP":
            gap = True
        elif line and not line.startswith("#"):
            out.append((line, duration, gap))
            gap = False
    return out


class Crowd:
    def __init__(self, port, n, stream):
        self.stop = threading.Event()
        self.viewers = [Viewer(port, self.stop, stream) for _ in range(n)]
        for v in self.viewers:
            v.start()

    def reset(self):
        for v in self.viewers:
            v.reset()

    def totals(self):
        requests = sum(v.requests for v in self.viewers)
        failures = {}
        for v in self.viewers:
            for k, n in v.failures.items():
                failures[k] = failures.get(k, 0) + n
        return requests, failures, sum(v.stalls for v in self.viewers), sum(v.stalled_s for v in self.viewers)

    def failed(self):
        """The last failed requests of every viewer: (time, path, kind), oldest first."""
        return sorted(f for v in self.viewers for f in v.failed)

    def resumed_after(self, since, old_sessions):
        """Seconds from `since` until each viewer fetched a segment of a new session."""
        times = []
        for v in self.viewers:
            new = [t for s, t in v.sessions_seen.items() if s not in old_sessions]
            times.append(min(new) - since if new else None)
        return times

    def sessions(self):
        seen = set()
        for v in self.viewers:
            seen.update(v.sessions_seen)
        return seen

    def close(self):
        self.stop.set()


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
