//! The shipper against an in-test Elasticsearch stand-in that follows the `_bulk` contract
//! (NDJSON, `create` with `_id`, per-item statuses, 409 for an id already there) and can be
//! scripted to fail. No Elasticsearch server can be installed on these machines.

mod delivery;
mod es;
mod zabbix;

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use clap::Parser;
use livecast_logship::{Config, Listeners};
use livecast_telemetry::CancellationToken;

/// A realistic access-log line with a sequence number in the path.
pub fn log_line(seq: usize, session: &str) -> String {
    format!(
        "{{\"@timestamp\":\"{}\",\"client.ip\":\"10.1.2.3\",\"http.request.method\":\"GET\",\"url.path\":\"/hls/cam/s-{seq}.ts\",\"http.response.status_code\":200,\"http.response.body.bytes\":716800,\"event.duration\":181000,\"user_agent.original\":\"Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0\",\"host.name\":\"web-1\",\"livecast.stream\":\"cam\",\"livecast.session\":\"{session}\"}}\n",
        humantime::format_rfc3339_millis(std::time::SystemTime::now())
    )
}

pub fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open log");
    f.write_all(text.as_bytes()).expect("append");
}

#[derive(Debug)]
pub struct Shipper {
    pub admin: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), livecast_logship::LogshipError>>,
}

pub async fn start(dir: &Path, es: Option<SocketAddr>, extra: &[&str]) -> Shipper {
    let url = es.map(|es| format!("http://{es}"));
    start_inner(dir, url.as_deref(), extra).await
}

/// Starts a shipper that sends to `url` (http:// or https://).
pub async fn start_with_url(dir: &Path, url: &str, extra: &[&str]) -> Shipper {
    start_inner(dir, Some(url), extra).await
}

async fn start_inner(dir: &Path, url: Option<&str>, extra: &[&str]) -> Shipper {
    let mut args = vec![
        "livecast-logship".to_string(),
        "--admin-listen=127.0.0.1:0".into(),
        format!("--log-dir={}", dir.join("logs").display()),
        format!("--state-dir={}", dir.join("state").display()),
        "--poll-interval-ms=100".into(),
        "--batch-lines=500".into(),
    ];
    if let Some(url) = url {
        args.push(format!("--elasticsearch-url={url}"));
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let config = Config::parse_from(args);
    let listeners = Listeners::bind(&config).await.expect("bind");
    let admin = listeners.admin.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(livecast_logship::run(config, listeners, shutdown.clone()));
    Shipper {
        admin,
        shutdown,
        task,
    }
}

pub async fn eventually<F: FnMut() -> bool>(what: &str, timeout: Duration, mut check: F) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// The value of one sample in the shipper's `/metrics` (0 when absent).
pub async fn metric(admin: SocketAddr, sample: &str) -> f64 {
    http_get(admin, "/metrics")
        .await
        .lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}
