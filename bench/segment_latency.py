#!/usr/bin/env python3
"""Segment and part listing lag: livecast-ingest against nginx-rtmp, same ffmpeg publisher.

For each system, a real ffmpeg publishes the same clip in real time (`-re -c copy`) through a
small RTMP relay in this script. The relay forwards bytes untouched and notes when the last
byte of every audio/video message left for the server. A watcher polls the stream's playlist
every 2 ms and notes when each segment first appears. For every segment, the lag is:

    (time the segment appeared in the playlist) - (time its last frame was sent)

where a segment's last frame is the last message with a timestamp before the segment's end
(the cumulative EXTINF sum, snapped to the keyframe the server cut at). The final segment of
each run is left out: both servers close it only when the publisher stops.

The same is measured for livecast's LL-HLS parts (EXT-X-PART): a part's end is the sum of the
part durations from the first video frame; nginx-rtmp has no parts.

Prints median and p90 per system and the ratio livecast / nginx-rtmp. livecast runs with its
defaults (fMP4, 250 ms parts); `--container ts --part-ms 0` is the like-for-like setting.
Needs: ffmpeg, nginx with libnginx-mod-rtmp (Debian: apt-get install nginx libnginx-mod-rtmp).
Usage: bench/segment_latency.py [--seconds 40] [--livecast-args "--container ts --part-ms 0"]
"""

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from common import ROOT, free_port, make_clip, nginx_rtmp, wait_port


class RtmpRelay:
    """Forwards one publisher connection and timestamps completed media messages."""

    HANDSHAKE = 1 + 1536 + 1536

    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.sent = []  # (rtmp timestamp ms, keyframe or None for audio, monotonic time sent)
        self.accepted = None  # when the publisher's connection arrived
        self.first_reply = None  # when the server's first bytes (its handshake) came back
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        client, _ = self.listener.accept()
        self.accepted = time.monotonic()
        server = socket.create_connection(("127.0.0.1", self.upstream_port))
        # Toward the server the relay keeps Nagle's algorithm on, as ffmpeg's RTMP output does:
        # a message's header and body go out as separate writes, so a server that is slow to
        # acknowledge the header holds the body back, and the lag measured here includes that.
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        back = threading.Thread(target=self._pump_back, args=(server, client), daemon=True)
        back.start()
        buf = bytearray()
        skip = self.HANDSHAKE
        chunk_size = 128
        streams = {}  # csid -> dict(ts, delta, length, type, left, ext, body)
        while True:
            data = client.recv(65536)
            if not data:
                break
            server.sendall(data)
            now = time.monotonic()
            if skip:
                take = min(skip, len(data))
                skip -= take
                data = data[take:]
            buf += data
            pos = 0
            while True:
                start = pos
                if pos >= len(buf):
                    break
                b0 = buf[pos]
                fmt, csid = b0 >> 6, b0 & 0x3F
                pos += 1
                if csid == 0:
                    if pos + 1 > len(buf):
                        pos = start
                        break
                    csid = 64 + buf[pos]
                    pos += 1
                elif csid == 1:
                    if pos + 2 > len(buf):
                        pos = start
                        break
                    csid = 64 + buf[pos] + buf[pos + 1] * 256
                    pos += 2
                st = streams.setdefault(csid, {"ts": 0, "delta": 0, "length": 0, "type": 0, "left": 0, "ext": False, "body": bytearray()})
                hlen = (11, 7, 3, 0)[fmt]
                if pos + hlen > len(buf):
                    pos = start
                    break
                h = buf[pos:pos + hlen]
                pos += hlen
                field = int.from_bytes(h[0:3], "big") if fmt < 3 else None
                ext = field == 0xFFFFFF if fmt < 3 else st["ext"]
                if ext:
                    if pos + 4 > len(buf):
                        pos = start
                        break
                    field_ext = int.from_bytes(buf[pos:pos + 4], "big")
                    pos += 4
                    if fmt < 3:
                        field = field_ext
                new_message = st["left"] == 0
                if fmt == 0:
                    st["ts"], st["delta"] = field, 0
                    st["length"] = int.from_bytes(h[3:6], "big")
                    st["type"] = h[6]
                elif fmt == 1:
                    st["delta"] = field
                    st["length"] = int.from_bytes(h[3:6], "big")
                    st["type"] = h[6]
                elif fmt == 2:
                    st["delta"] = field
                if fmt < 3:
                    st["ext"] = ext
                if new_message:
                    if fmt in (1, 2) or fmt == 3:
                        st["ts"] += st["delta"]
                    st["left"] = st["length"]
                    st["body"] = bytearray()
                n = min(chunk_size, st["left"])
                if pos + n > len(buf):
                    pos = start
                    # Undo the header's effect: it will be parsed again with its payload.
                    if new_message and fmt in (1, 2, 3):
                        st["ts"] -= st["delta"]
                    if new_message:
                        st["left"] = 0
                    break
                st["body"] += buf[pos:pos + n]
                pos += n
                st["left"] -= n
                if st["left"] == 0:
                    kind, body = st["type"], st["body"]
                    if kind == 1 and len(body) >= 4:
                        chunk_size = int.from_bytes(body[:4], "big") & 0x7FFFFFFF
                    elif kind == 9 and len(body) >= 2 and body[1] == 1:
                        self.sent.append((st["ts"], (body[0] >> 4) == 1, now))
                    elif kind == 8 and len(body) >= 2 and body[1] == 1:
                        self.sent.append((st["ts"], None, now))
            del buf[:pos]
        server.close()
        client.close()

    def _pump_back(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if self.first_reply is None:
                    self.first_reply = time.monotonic()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass


class PlaylistWatcher:
    """Polls a playlist file and records when each segment first appears."""

    def __init__(self, path):
        self.path = path
        self.first_seen = {}  # uri -> monotonic time
        self.durations = {}  # uri -> EXTINF seconds
        self.order = []
        self.parts = []  # (uri and byte range, duration, first seen)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _read(self):
        """The playlist's text when it changed since the last call, else None."""
        st = os.stat(self.path)
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        if key == self._last:
            return None
        with open(self.path) as f:
            text = f.read()
        self._last = key
        return text

    def _run(self):
        self._last = None
        while not self.stop.is_set():
            try:
                now = time.monotonic()
                text = self._read()
                if text is not None:
                    duration = None
                    seen_parts = {uri for uri, _, _ in self.parts}
                    for line in text.splitlines():
                        if line.startswith("#EXT-X-PART:"):
                            attrs = dict(a.split("=", 1) for a in line[12:].split(",") if "=" in a)
                            # Byte-range parts share their segment's URI.
                            uri = attrs["URI"].strip('"') + "@" + attrs.get("BYTERANGE", "").strip('"')
                            if uri not in seen_parts:
                                self.parts.append((uri, float(attrs["DURATION"]), now))
                                seen_parts.add(uri)
                        if line.startswith("#EXTINF:"):
                            duration = float(line[8:].split(",")[0])
                        elif line and not line.startswith("#"):
                            if line not in self.first_seen:
                                self.first_seen[line] = now
                                self.durations[line] = duration
                                self.order.append(line)
            except FileNotFoundError:
                pass
            time.sleep(0.002)


def segment_ends(sent, watcher):
    """For every segment but the last: (time listed, timestamp of its last frame, time that frame
    was sent). The last one is left out: servers close it only when the publisher stops."""
    first_ts = min(ts for ts, _, _ in sent)
    keyframes = sorted(ts for ts, key, _ in sent if key)
    out = []
    elapsed = 0.0
    for uri in watcher.order[:-1]:
        elapsed += watcher.durations[uri]
        target = first_ts + elapsed * 1000.0
        end = min(keyframes, key=lambda k: abs(k - target))
        before = [(ts, t) for ts, _, t in sent if ts < end]
        if before:
            ts, t = max(before, key=lambda x: x[1])
            out.append((watcher.first_seen[uri], ts, t))
    return out


def part_ends(sent, watcher):
    """For every part but the last two: (time listed, timestamp of its last frame, time sent).
    Each part ends where the next begins; the first begins at the first video frame."""
    out = []
    start = min(ts for ts, key, _ in sent if key is not None)
    end = float(start)
    for _, duration, seen in watcher.parts[:-2]:
        end += duration * 1000.0
        before = [(ts, t) for ts, _, t in sent if ts < round(end)]
        if before:
            ts, t = max(before, key=lambda x: x[1])
            out.append((seen, ts, t))
    return out


def measure(name, rtmp_port, playlist, clip):
    relay = RtmpRelay(rtmp_port)
    watcher = PlaylistWatcher(playlist)
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-i", clip, "-c", "copy",
         "-f", "flv", f"rtmp://127.0.0.1:{relay.port}/live/bench"],
        check=True)
    time.sleep(1.0)
    watcher.stop.set()
    sent = relay.sent
    if not sent or not watcher.order:
        raise SystemExit(f"{name}: nothing measured (sent {len(sent)} messages, saw {len(watcher.order)} segments)")
    lags = [seen - t for seen, _, t in segment_ends(sent, watcher)]
    part_lags = [seen - t for seen, _, t in part_ends(sent, watcher)]
    return lags, part_lags


def summary(name, lags):
    lags = sorted(lags)
    p90 = lags[min(len(lags) - 1, int(len(lags) * 0.9))]
    print(f"{name:<12} segments={len(lags):<3} median={statistics.median(lags):.4f}s p90={p90:.4f}s "
          f"min={lags[0]:.4f}s max={lags[-1]:.4f}s")
    return statistics.median(lags)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=40, help="clip length per system")
    parser.add_argument("--livecast-args", default="", help="extra livecast-ingest flags")
    args = parser.parse_args()
    for tool in ("ffmpeg", "nginx"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: apt-get install ffmpeg nginx libnginx-mod-rtmp")
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "livecast-ingest"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="livecast-bench-")
    os.chmod(work, 0o777)  # nginx workers may run as another user
    cache = os.path.join(ROOT, "target", "bench")
    os.makedirs(cache, exist_ok=True)
    clip = os.path.join(cache, f"clip-720p-{args.seconds}s.flv")
    make_clip(clip, args.seconds)
    results = {}

    # nginx-rtmp, the reference this project replaces.
    port = free_port()
    hls = os.path.join(work, "nginx-hls")
    os.makedirs(hls)
    os.chmod(hls, 0o777)
    nginx = nginx_rtmp(work, "nginx", port, hls)
    try:
        wait_port(port)
        results["nginx-rtmp"], _ = measure("nginx-rtmp", port, os.path.join(hls, "bench", "index.m3u8"), clip)
    finally:
        nginx.terminate()
        nginx.wait()

    # livecast-ingest with the same segment length.
    port = free_port()
    hls = os.path.join(work, "livecast-hls")
    ingest = subprocess.Popen(
        [os.path.join(ROOT, "target", "release", "livecast-ingest"), f"--rtmp-listen=127.0.0.1:{port}",
         f"--admin-listen=127.0.0.1:{free_port()}", f"--hls-dir={hls}", "--segment-secs=2"]
        + args.livecast_args.split(),
        stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        results["livecast"], part_lags = measure("livecast", port, os.path.join(hls, "bench", "index.m3u8"), clip)
    finally:
        ingest.terminate()
        ingest.wait()

    print("segment listing lag: last frame sent -> segment listed in the playlist")
    medians = {name: summary(name, lags) for name, lags in results.items()}
    ratio = medians["livecast"] / medians["nginx-rtmp"]
    print(f"ratio livecast/nginx-rtmp (median): {ratio:.3f}")
    print(f"target livecast median <= 0.050 s: {'met' if medians['livecast'] <= 0.05 else 'NOT met'}")
    if part_lags:
        print("part listing lag (LL-HLS): last frame sent -> part listed in the playlist")
        part_median = summary("livecast", part_lags)
        print(f"target part median <= 0.050 s: {'met' if part_median <= 0.05 else 'NOT met'}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
