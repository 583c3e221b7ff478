//! The access log: one JSON line per request, with Elastic Common Schema field names, written
//! to `<access-log-dir>/<instance>.log`.
//!
//! Requests never wait for the disk: each appends its line to an in-memory buffer, and one
//! writer task moves the buffer to the file every [`FLUSH_EVERY`] (sooner when it fills), so a
//! busy front-end pays one write call per batch rather than a write and a thread wake-up per
//! request. When the buffer is at its cap because the disk stalls, lines are dropped and
//! counted (`livecast_web_access_log_dropped_total`) rather than stalling viewers. The writer
//! rotates the file itself at a size limit (renaming it to `<instance>.<unix-millis>.log`, so a
//! shipper following by inode loses nothing) and reopens it when someone else moved it away.
//! On shutdown it writes what is left, flushes, and gives the file its rotated name: a closed
//! log is then archived by the shipper like any rotated one.
//!
//! The player page gives each viewer a first-party session cookie so that viewers behind one
//! company NAT can be told apart; the log carries it as `livecast.session` (null for clients
//! without one).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use livecast_telemetry::{CancellationToken, Cidr};
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::app::App;

/// Name of the session cookie.
pub(crate) const SESSION_COOKIE: &str = "livecast_session";
/// How long a line may wait in memory before it is written.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Buffered bytes that trigger an early write.
const FLUSH_AT: usize = 256 * 1024;
/// Buffered bytes beyond which lines are dropped (the disk is not keeping up).
const BUFFER_CAP: usize = 16 * 1024 * 1024;
/// How often the writer checks that its file is still the one at the log path.
const REOPEN_CHECK: Duration = Duration::from_secs(1);

/// The request side of the access log.
#[derive(Debug)]
pub(crate) struct AccessLog {
    buffer: Mutex<Vec<u8>>,
    wake: Notify,
}

impl AccessLog {
    /// Opens (appending) the log file and starts its writer, which writes everything buffered
    /// and ends once `stop` is cancelled.
    pub async fn start(
        dir: &Path,
        instance: &str,
        max_bytes: u64,
        stop: CancellationToken,
    ) -> std::io::Result<(Arc<Self>, JoinHandle<()>)> {
        tokio::fs::create_dir_all(dir).await?;
        let writer = Writer::open(dir.to_path_buf(), instance.to_string(), max_bytes).await?;
        tracing::info!(path = %writer.path.display(), "access log open");
        let log = Arc::new(Self {
            buffer: Mutex::new(Vec::with_capacity(FLUSH_AT)),
            wake: Notify::new(),
        });
        Ok((log.clone(), tokio::spawn(writer.run(log, stop))))
    }

    /// Queues one line; false when it had to be dropped.
    fn push(&self, line: &[u8]) -> bool {
        let mut buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        if buffer.len() + line.len() > BUFFER_CAP {
            return false;
        }
        buffer.extend_from_slice(line);
        if buffer.len() >= FLUSH_AT {
            self.wake.notify_one();
        }
        true
    }

    /// Puts lines the writer could not write back in front of those queued since.
    fn put_back(&self, lines: &[u8]) {
        let mut buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        let mut kept = Vec::with_capacity(lines.len() + buffer.len());
        kept.extend_from_slice(lines);
        kept.extend_from_slice(&buffer);
        *buffer = kept;
    }

    fn take(&self) -> Vec<u8> {
        let mut buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *buffer, Vec::with_capacity(FLUSH_AT))
    }
}

struct Writer {
    dir: PathBuf,
    instance: String,
    path: PathBuf,
    out: tokio::fs::File,
    written: u64,
    max_bytes: u64,
    checked: Instant,
}

impl Writer {
    async fn open(dir: PathBuf, instance: String, max_bytes: u64) -> std::io::Result<Self> {
        let path = dir.join(format!("{instance}.log"));
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await?;
        let written = file.metadata().await?.len();
        Ok(Self {
            dir,
            instance,
            path,
            out: file,
            written,
            max_bytes,
            checked: Instant::now(),
        })
    }

    async fn run(mut self, log: Arc<AccessLog>, stop: CancellationToken) {
        let mut failing = false;
        loop {
            let stopping = tokio::select! {
                () = stop.cancelled() => true,
                () = log.wake.notified() => false,
                () = tokio::time::sleep(FLUSH_EVERY) => false,
            };
            let batch = log.take();
            match self.write_batch(&batch).await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("the access log is written again");
                }
                Ok(()) => {}
                Err((error, done)) => {
                    // A full disk, say: the lines wait in memory (up to the buffer's cap,
                    // beyond which new lines are dropped and counted) and are tried again.
                    if !failing {
                        failing = true;
                        tracing::error!(%error, "cannot write the access log; lines are kept in memory until it can be");
                    }
                    if stopping {
                        tracing::error!(
                            lines = bytecount_lines(&batch[done..]),
                            "access-log lines lost at shutdown"
                        );
                    } else {
                        log.put_back(&batch[done..]);
                    }
                }
            }
            if stopping {
                break;
            }
            if let Err(error) = self.maybe_reopen().await {
                tracing::error!(%error, "cannot reopen access log");
            }
        }
        let _ = self.out.flush().await;
        // Closed for good: give the file its rotated name, so the shipper archives it once it
        // is shipped (a front-end removed by scale-in leaves nothing behind unarchived).
        if self.written > 0 {
            let rotated = self.rotated_name();
            match tokio::fs::rename(&self.path, &rotated).await {
                Ok(()) => tracing::info!(closed = %rotated.display(), "access log closed"),
                Err(error) => {
                    tracing::warn!(%error, "cannot give the closed access log its final name")
                }
            }
        }
    }

    fn rotated_name(&self) -> PathBuf {
        let millis = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        self.dir.join(format!("{}.{millis}.log", self.instance))
    }

    /// Writes whole lines, rotating before a line that would cross the size limit. On an
    /// error, returns how many bytes of `batch` were written whole; a line written in part is
    /// cut off the file again, so no broken line is left for the shipper.
    async fn write_batch(&mut self, batch: &[u8]) -> Result<(), (std::io::Error, usize)> {
        let mut rest = batch;
        let result = self.write_lines(&mut rest).await;
        result.map_err(|error| (error, batch.len() - rest.len()))
    }

    async fn write_lines(&mut self, batch: &mut &[u8]) -> std::io::Result<()> {
        while !batch.is_empty() {
            let room = self.max_bytes.saturating_sub(self.written) as usize;
            // The longest prefix of whole lines that fits; at least one line.
            let cut = match batch[..room.min(batch.len())]
                .iter()
                .rposition(|b| *b == b'\n')
            {
                Some(i) => i + 1,
                None if self.written == 0 || room >= batch.len() => batch
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(batch.len(), |i| i + 1),
                None => {
                    self.rotate().await?;
                    continue;
                }
            };
            // Flushed at once: tokio's file reports a failed write at the flush.
            let wrote = async {
                self.out.write_all(&batch[..cut]).await?;
                self.out.flush().await
            }
            .await;
            if let Err(error) = wrote {
                let _ = self.out.set_len(self.written).await;
                return Err(error);
            }
            self.written += cut as u64;
            *batch = &batch[cut..];
            if !batch.is_empty() {
                self.rotate().await?;
            }
        }
        self.out.flush().await
    }

    async fn rotate(&mut self) -> std::io::Result<()> {
        self.out.flush().await?;
        let rotated = self.rotated_name();
        tokio::fs::rename(&self.path, &rotated).await?;
        tracing::info!(rotated = %rotated.display(), "access log rotated");
        self.reopen().await
    }

    async fn reopen(&mut self) -> std::io::Result<()> {
        let fresh = Writer::open(self.dir.clone(), self.instance.clone(), self.max_bytes).await?;
        self.out = fresh.out;
        self.written = fresh.written;
        Ok(())
    }

    /// An external tool (logrotate) may have renamed or removed the file: follow the path.
    async fn maybe_reopen(&mut self) -> std::io::Result<()> {
        if self.checked.elapsed() < REOPEN_CHECK {
            return Ok(());
        }
        self.checked = Instant::now();
        let ours = self.out.metadata().await?;
        let moved = match tokio::fs::metadata(&self.path).await {
            Ok(there) => !same_file(&ours, &there),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => return Err(e),
        };
        if moved {
            self.reopen().await?;
        }
        Ok(())
    }
}

fn bytecount_lines(bytes: &[u8]) -> usize {
    bytes.iter().filter(|b| **b == b'\n').count()
}

#[cfg(unix)]
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    a.len() == b.len()
}

fn session_from(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_string())
        .filter(|v| v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Middleware: times the request, counts it, keeps the viewer's session cookie and queues its
/// access-log line.
pub(crate) async fn record(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let timestamp = SystemTime::now();
    let method = request.method().as_str().to_string();
    let path = request.uri().path().to_string();
    let route = route_label(
        request
            .extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str),
        &path,
    );
    let headers = request.headers();
    let client = client_ip(
        peer.ip(),
        headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()),
        &app.trusted_proxies,
    );
    // The balancer names a viewer whose signed token said who it is; only a trusted proxy's
    // word is taken.
    let viewer = viewer_from(
        headers,
        livecast_telemetry::any_contains(&app.trusted_proxies, peer.ip()),
    );
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // The player page hands out the session; the playlist and segment requests of hls.js
    // (same origin) carry it back. Players that never load the page (VLC, ffplay) have none,
    // and the shipper tells them apart by address and user agent instead: issuing a fresh
    // session on every cookie-less request would count each request as a viewer.
    let existing = session_from(headers);
    let issue = existing.is_none() && route == "player";
    let session = existing.or_else(|| issue.then(|| app.sessions.next_hex(2)));
    let mut response = next.run(request).await;
    if let Some(name) = &app.replica_header {
        response
            .headers_mut()
            .insert(livecast_telemetry::REPLICA_HEADER, name.clone());
    }
    if let (true, Some(session)) = (issue, &session) {
        let cookie =
            format!("{SESSION_COOKIE}={session}; Path=/; Max-Age=86400; HttpOnly; SameSite=Lax");
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    let bytes = http_body_len(&response);
    app.metrics
        .requests
        .with_label_values(&[route, livecast_telemetry::status_class(status)])
        .inc();
    app.metrics
        .duration
        .with_label_values(&[route])
        .observe(elapsed.as_secs_f64());
    app.metrics.response_bytes.inc_by(bytes);
    let stream = path
        .strip_prefix("/hls/")
        .and_then(|rest| rest.split('/').next())
        .filter(|s| !s.is_empty());
    let line = Line {
        timestamp: humantime::format_rfc3339_millis(timestamp),
        client_ip: client,
        method: &method,
        path: &path,
        status,
        bytes,
        duration_ns: elapsed.as_nanos() as u64,
        user_agent: user_agent.as_deref(),
        host: &app.instance,
        stream,
        session: session.as_deref(),
        viewer: viewer.as_deref(),
    };
    let mut line = serde_json::to_vec(&line).unwrap_or_default();
    line.push(b'\n');
    if !app.access_log.push(&line) {
        app.metrics.access_log_dropped.inc();
    }
    response
}

/// One access-log line, with Elastic Common Schema names.
#[derive(serde::Serialize)]
struct Line<'a> {
    #[serde(rename = "@timestamp", serialize_with = "display")]
    timestamp: humantime::Rfc3339Timestamp,
    #[serde(rename = "client.ip")]
    client_ip: IpAddr,
    #[serde(rename = "http.request.method")]
    method: &'a str,
    #[serde(rename = "url.path")]
    path: &'a str,
    #[serde(rename = "http.response.status_code")]
    status: u16,
    #[serde(rename = "http.response.body.bytes")]
    bytes: u64,
    /// Nanoseconds, as ECS defines it.
    #[serde(rename = "event.duration")]
    duration_ns: u64,
    #[serde(rename = "user_agent.original")]
    user_agent: Option<&'a str>,
    #[serde(rename = "host.name")]
    host: &'a str,
    #[serde(rename = "livecast.stream")]
    stream: Option<&'a str>,
    #[serde(rename = "livecast.session")]
    session: Option<&'a str>,
    /// The viewer's identity from a signed playback token (null without one).
    #[serde(rename = "user.name")]
    viewer: Option<&'a str>,
}

/// The header in which the balancer names the viewer.
pub(crate) const VIEWER_HEADER: &str = "x-livecast-viewer";

fn viewer_from(headers: &axum::http::HeaderMap, trusted: bool) -> Option<String> {
    if !trusted {
        return None;
    }
    headers
        .get(VIEWER_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._@+-:".contains(&b))
        })
        .map(str::to_string)
}

fn display<T: std::fmt::Display, S: serde::Serializer>(
    value: &T,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

fn route_label(matched: Option<&str>, path: &str) -> &'static str {
    match matched {
        Some("/hls/{stream}/{file}" | "/hls/{stream}/{rendition}/{file}")
            if path.ends_with(".m3u8") =>
        {
            "playlist"
        }
        Some("/hls/{stream}/{file}" | "/hls/{stream}/{rendition}/{file}") => "segment",
        Some("/api/streams") => "api",
        Some("/") => "player",
        Some(p) if p.starts_with("/assets") => "asset",
        _ => "other",
    }
}

fn http_body_len(response: &Response) -> u64 {
    use axum::body::HttpBody;
    response.body().size_hint().exact().unwrap_or(0)
}

/// The viewer's address: a trusted proxy reports it as the last `X-Forwarded-For` entry;
/// anyone else's header is ignored.
pub(crate) fn client_ip(peer: IpAddr, forwarded: Option<&str>, trusted: &[Cidr]) -> IpAddr {
    if !livecast_telemetry::any_contains(trusted, peer) {
        return peer;
    }
    forwarded
        .and_then(|h| h.rsplit(',').next())
        .and_then(|last| last.trim().parse().ok())
        .unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_is_trusted_only_from_trusted_proxies() {
        let trusted = Cidr::parse_list(livecast_telemetry::PRIVATE_RANGES).unwrap();
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        let outsider: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(
            client_ip(proxy, Some("1.2.3.4, 10.1.2.3"), &trusted),
            "10.1.2.3".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(outsider, Some("10.1.2.3"), &trusted), outsider);
        assert_eq!(client_ip(proxy, Some("garbage"), &trusted), proxy);
        assert_eq!(client_ip(proxy, None, &trusted), proxy);
        assert_eq!(
            client_ip(proxy, Some("10.1.2.3"), &[]),
            proxy,
            "an empty trust list trusts nobody"
        );
    }

    #[test]
    fn the_viewer_is_taken_only_from_a_trusted_proxy() {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(VIEWER_HEADER, HeaderValue::from_static("ann@corp.example"));
        assert_eq!(
            viewer_from(&headers, true).as_deref(),
            Some("ann@corp.example")
        );
        assert_eq!(viewer_from(&headers, false), None);
        headers.insert(VIEWER_HEADER, HeaderValue::from_static("a b"));
        assert_eq!(viewer_from(&headers, true), None);
    }

    #[test]
    fn session_cookies_are_read_back() {
        let a = livecast_telemetry::RandomIds::new().next_hex(2);
        let mut h = axum::http::HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("x=1; {SESSION_COOKIE}={a}")).unwrap(),
        );
        assert_eq!(session_from(&h), Some(a));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("livecast_session=<script>"),
        );
        assert_eq!(
            session_from(&h),
            None,
            "a forged cookie value is not logged"
        );
    }
}
