//! The access log: one JSON line per request, with Elastic Common Schema field names, written
//! to `<access-log-dir>/<instance>.log` by a single writer task.
//!
//! Requests never wait for the disk: lines go through a bounded channel, and a full channel
//! drops the line and counts it (`livecast_web_access_log_dropped_total`) rather than stalling
//! viewers. The writer rotates the file itself at a size limit (renaming it to
//! `<instance>.<unix-millis>.log`, so a shipper following by inode loses nothing) and reopens
//! it when someone else moved it away. On shutdown it drains the channel and flushes.
//!
//! Each viewer gets a first-party session cookie so that viewers behind one company NAT can
//! be told apart; the log carries it as `livecast.session`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use livecast_telemetry::Cidr;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::server::App;

const QUEUE: usize = 65_536;
/// Name of the session cookie.
pub(crate) const SESSION_COOKIE: &str = "livecast_session";
/// How often the writer checks that its file is still the one at the log path.
const REOPEN_CHECK: Duration = Duration::from_secs(1);

/// The sending side of the access log.
#[derive(Debug, Clone)]
pub(crate) struct AccessLog {
    lines: mpsc::Sender<String>,
}

impl AccessLog {
    /// Opens (appending) the log file and starts its writer. The writer ends, after a flush,
    /// when every `AccessLog` clone is dropped.
    pub async fn start(
        dir: &Path,
        instance: &str,
        max_bytes: u64,
    ) -> std::io::Result<(Self, JoinHandle<()>)> {
        tokio::fs::create_dir_all(dir).await?;
        let writer = Writer::open(dir.to_path_buf(), instance.to_string(), max_bytes).await?;
        let (tx, rx) = mpsc::channel(QUEUE);
        tracing::info!(path = %writer.path.display(), "access log open");
        Ok((Self { lines: tx }, tokio::spawn(writer.run(rx))))
    }
}

struct Writer {
    dir: PathBuf,
    instance: String,
    path: PathBuf,
    out: tokio::io::BufWriter<tokio::fs::File>,
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
            out: tokio::io::BufWriter::with_capacity(64 * 1024, file),
            written,
            max_bytes,
            checked: Instant::now(),
        })
    }

    async fn run(mut self, mut rx: mpsc::Receiver<String>) {
        while let Some(line) = rx.recv().await {
            let mut result = self.write(&line).await;
            // Batch whatever else is queued, then flush once: lines reach the file promptly
            // without a write call per request under load.
            while let (Ok(()), Ok(line)) = (&result, rx.try_recv()) {
                result = self.write(&line).await;
            }
            if let Err(error) = result.and(self.out.flush().await) {
                tracing::error!(%error, "cannot write access log");
            }
            if let Err(error) = self.maybe_reopen().await {
                tracing::error!(%error, "cannot reopen access log");
            }
        }
        let _ = self.out.flush().await;
    }

    async fn write(&mut self, line: &str) -> std::io::Result<()> {
        if self.written + line.len() as u64 > self.max_bytes && self.written > 0 {
            self.rotate().await?;
        }
        self.out.write_all(line.as_bytes()).await?;
        self.written += line.len() as u64;
        Ok(())
    }

    async fn rotate(&mut self) -> std::io::Result<()> {
        self.out.flush().await?;
        let millis = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let rotated = self.dir.join(format!("{}.{millis}.log", self.instance));
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
        let ours = self.out.get_ref().metadata().await?;
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
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let existing = session_from(headers);
    let session = existing.clone().unwrap_or_else(|| app.sessions.next_hex(2));
    let mut response = next.run(request).await;
    if existing.is_none() {
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
    let line = serde_json::json!({
        "@timestamp": humantime::format_rfc3339_millis(timestamp).to_string(),
        "client.ip": client.to_string(),
        "http.request.method": method,
        "url.path": path,
        "http.response.status_code": status,
        "http.response.body.bytes": bytes,
        "event.duration": elapsed.as_nanos() as u64,
        "user_agent.original": user_agent,
        "host.name": app.instance,
        "livecast.stream": stream,
        "livecast.session": session,
    });
    let mut line = line.to_string();
    line.push('\n');
    if app.access_log.lines.try_send(line).is_err() {
        app.metrics.access_log_dropped.inc();
    }
    response
}

fn route_label(matched: Option<&str>, path: &str) -> &'static str {
    match matched {
        Some("/hls/{stream}/{file}") if path.ends_with(".m3u8") => "playlist",
        Some("/hls/{stream}/{file}") => "segment",
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
