//! The access log: one JSON line per request, with Elastic Common Schema field names, written
//! to `<access-log-dir>/<instance>.log` by a single writer task.
//!
//! Requests never wait for the disk: lines go through a bounded channel, and a full channel
//! drops the line and counts it (`livecast_web_access_log_dropped_total`) rather than stalling
//! viewers. On shutdown the writer drains the channel and flushes before the process exits.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::server::App;

const QUEUE: usize = 65_536;

/// The sending side of the access log.
#[derive(Debug, Clone)]
pub(crate) struct AccessLog {
    lines: mpsc::Sender<String>,
}

impl AccessLog {
    /// Opens (appending) the log file and starts its writer. The writer ends, after a flush,
    /// when every `AccessLog` clone is dropped.
    pub async fn start(dir: &Path, instance: &str) -> std::io::Result<(Self, JoinHandle<()>)> {
        tokio::fs::create_dir_all(dir).await?;
        let path = dir.join(format!("{instance}.log"));
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let writer = tokio::spawn(write_lines(file, rx));
        tracing::info!(path = %path.display(), "access log open");
        Ok((Self { lines: tx }, writer))
    }
}

async fn write_lines(file: tokio::fs::File, mut rx: mpsc::Receiver<String>) {
    let mut out = tokio::io::BufWriter::with_capacity(64 * 1024, file);
    while let Some(line) = rx.recv().await {
        let mut result = out.write_all(line.as_bytes()).await;
        // Batch whatever else is queued, then flush once: lines reach the file promptly
        // without a write call per request under load.
        while let (Ok(()), Ok(line)) = (&result, rx.try_recv()) {
            result = out.write_all(line.as_bytes()).await;
        }
        if let Err(error) = result.and(out.flush().await) {
            tracing::error!(%error, "cannot write access log");
        }
    }
    let _ = out.flush().await;
}

/// Middleware: times the request, counts it and queues its access-log line.
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
    let client = client_ip(
        peer.ip(),
        request
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok()),
    );
    let user_agent = request
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    let bytes = http_body_len(&response);
    let class = livecast_telemetry::status_class(status);
    app.metrics
        .requests
        .with_label_values(&[route, class])
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

/// The viewer's address: a proxy on a loopback or private address (the balancer inside the
/// company network) is trusted to report it as the last `X-Forwarded-For` entry; anyone else's
/// header is ignored.
pub(crate) fn client_ip(peer: IpAddr, forwarded: Option<&str>) -> IpAddr {
    let trusted = match peer {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private(),
        IpAddr::V6(v6) => v6.is_loopback() || (v6.segments()[0] & 0xfe00) == 0xfc00,
    };
    if !trusted {
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
    fn forwarded_for_is_trusted_only_from_inside() {
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        let outsider: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(
            client_ip(proxy, Some("1.2.3.4, 10.1.2.3")),
            "10.1.2.3".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(outsider, Some("10.1.2.3")), outsider);
        assert_eq!(client_ip(proxy, Some("garbage")), proxy);
        assert_eq!(client_ip(proxy, None), proxy);
    }
}
