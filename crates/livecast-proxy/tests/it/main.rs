//! The balancer in-process on port 0 in front of real HTTP backends, with a resolver seam so
//! tests change membership without DNS.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use axum::routing::get;
use axum::Router;
use clap::Parser;
use livecast_proxy::{Config, Listeners, Resolve};
use livecast_telemetry::CancellationToken;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

mod http1;
mod lifecycle;
mod limits;
mod process;

/// A resolver the test controls: name → addresses.
#[derive(Debug, Default, Clone)]
pub struct FakeDns(Arc<Mutex<HashMap<String, Vec<SocketAddr>>>>);

impl FakeDns {
    pub fn set(&self, name: &str, addrs: &[SocketAddr]) {
        self.0
            .lock()
            .expect("dns lock")
            .insert(name.to_string(), addrs.to_vec());
    }
}

impl Resolve for FakeDns {
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        _port: u16,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = std::io::Result<Vec<SocketAddr>>> + Send + 'a>,
    > {
        let found = self.0.lock().expect("dns lock").get(host).cloned();
        Box::pin(async move { found.ok_or_else(|| std::io::Error::other("no such name")) })
    }
}

/// A backend that answers with its name and what it saw; `/slow` streams ten chunks over a
/// second; `/fail` answers 503. Stops when `stop` is cancelled.
#[derive(Debug)]
pub struct TestBackend {
    pub addr: SocketAddr,
    pub stop: CancellationToken,
}

/// The length of the test backend's `/big` answer: more than loopback's socket buffers hold.
pub const BIG: usize = 16 << 20;
/// The length of its `/segment` answer, a live segment's size.
pub const SEGMENT: usize = 700_000;

pub async fn backend(name: &'static str) -> TestBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = Router::new()
        .route("/readyz", get(|| async { "ready" }))
        .route(
            "/slow",
            get(|| async {
                let chunks =
                    (0..10).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; 1000])));
                let stream = futures_stream(chunks, Duration::from_millis(100));
                axum::body::Body::from_stream(stream)
            }),
        )
        .route(
            "/hls/talk/{file}",
            get(|uri: axum::http::Uri, headers: HeaderMap| async move {
                let viewer = headers
                    .get("x-livecast-viewer")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_string();
                format!("uri={uri} viewer={viewer}")
            }),
        )
        .route("/big", get(|| async { vec![b'b'; BIG] }))
        .route("/segment", get(|| async { vec![b's'; SEGMENT] }))
        .route(
            "/echo",
            axum::routing::post(|body: bytes::Bytes| async move { body }),
        )
        .route(
            "/fail",
            get(|| async { (axum::http::StatusCode::SERVICE_UNAVAILABLE, "down") }),
        )
        .fallback(get(move |headers: HeaderMap| async move {
            let h = |k: &str| {
                headers
                    .get(k)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_string()
            };
            format!(
                "{name} xff={} proto={} rid={} hop={}",
                h("x-forwarded-for"),
                h("x-forwarded-proto"),
                h("x-request-id"),
                headers.contains_key("x-hop-secret")
            )
        }));
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(token.cancelled_owned())
            .await
    });
    TestBackend { addr, stop }
}

/// A stream of items with a pause before each.
fn futures_stream<T: Send + 'static>(
    items: impl Iterator<Item = T> + Send + 'static,
    pause: Duration,
) -> impl futures_core::Stream<Item = T> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        for item in items {
            tokio::time::sleep(pause).await;
            if tx.send(item).await.is_err() {
                return;
            }
        }
    });
    ReceiverStream(rx)
}

struct ReceiverStream<T>(tokio::sync::mpsc::Receiver<T>);

impl<T> futures_core::Stream for ReceiverStream<T> {
    type Item = T;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

/// An address where nothing listens: bound, then closed.
pub async fn dead_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr")
}

#[derive(Debug)]
pub struct Proxy {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub shutdown: CancellationToken,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Starts the balancer on `--backend web:80` resolved by `dns`, with fast health checks.
pub async fn start(dns: &FakeDns, extra: &[&str]) -> Proxy {
    let mut args = vec![
        "livecast-proxy".to_string(),
        "--listen=127.0.0.1:0".into(),
        "--admin-listen=127.0.0.1:0".into(),
        "--backend=web:80".into(),
        "--resolve-interval-secs=1".into(),
        "--health-interval-ms=100".into(),
        "--healthy-after=1".into(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let config = Config::parse_from(args);
    let listeners = Listeners::bind(&config).await.expect("bind");
    let addr = listeners.http.local_addr().expect("addr");
    let admin = listeners.admin.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    tokio::spawn(livecast_proxy::run_with_resolver(
        config,
        listeners,
        shutdown.clone(),
        Arc::new(dns.clone()),
    ));
    let proxy = Proxy {
        addr,
        admin,
        shutdown,
    };
    eventually("the proxy has a healthy backend", || async {
        status(&get_path(admin, "/readyz").await) == "200"
    })
    .await;
    proxy
}

pub async fn raw(addr: SocketAddr, request: &str) -> String {
    let mut socket = TcpStream::connect(addr).await.expect("connect");
    socket.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    socket.read_to_end(&mut response).await.expect("read");
    String::from_utf8_lossy(&response).to_string()
}

pub async fn get_path(addr: SocketAddr, path: &str) -> String {
    raw(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
    .await
}

pub fn status(response: &str) -> &str {
    response.split_whitespace().nth(1).unwrap_or_default()
}

pub fn body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn round_robin_spreads_and_headers_are_rewritten() {
    let (a, b) = (backend("a").await, backend("b").await);
    let dns = FakeDns::default();
    dns.set("web", &[a.addr, b.addr]);
    let proxy = start(&dns, &["--balance=round-robin"]).await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..20 {
        let r = get_path(proxy.addr, "/hls/x/index.m3u8").await;
        assert_eq!(status(&r), "200");
        *seen
            .entry(body(&r).split(' ').next().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    assert_eq!(seen.get("a"), Some(&10), "{seen:?}");
    assert_eq!(seen.get("b"), Some(&10), "{seen:?}");

    // An untrusted client's X-Forwarded-For and X-Request-Id are replaced; hop-by-hop headers
    // (and those Connection names) never reach the backend.
    let r = raw(
        proxy.addr,
        "GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 6.6.6.6\r\nX-Request-Id: forged\r\nConnection: close, x-hop-secret\r\nX-Hop-Secret: 1\r\n\r\n",
    )
    .await;
    let text = body(&r);
    assert!(
        text.contains("xff=127.0.0.1 ")
            && text.contains("proto=http ")
            && text.ends_with("hop=false"),
        "{text}"
    );
    assert!(
        !text.contains("rid=forged") && !text.contains("rid=- "),
        "{text}"
    );
    let rid = r
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .expect("request id echoed to the client");
    assert!(text.contains(&format!("rid={rid}")));
}

#[tokio::test]
async fn trusted_proxy_forwarding_is_believed() {
    let a = backend("a").await;
    let dns = FakeDns::default();
    dns.set("web", &[a.addr]);
    let proxy = start(
        &dns,
        &["--trusted-proxy=127.0.0.1/32", "--allow-cidr=10.0.0.0/8"],
    )
    .await;
    let r = raw(
        proxy.addr,
        "GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.1.2.3\r\nX-Request-Id: abc\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&r), "200", "{r}");
    assert!(
        body(&r).contains("xff=10.1.2.3, 127.0.0.1 ") && body(&r).contains("rid=abc"),
        "{r}"
    );
    // Without a forwarded address inside the allow list, loopback itself is not allowed.
    assert_eq!(status(&get_path(proxy.addr, "/").await), "403");
}

#[tokio::test]
async fn no_live_backend_is_a_clean_502() {
    let dead = dead_address().await;
    let dns = FakeDns::default();
    dns.set("web", &[dead]);
    let config = Config::parse_from([
        "livecast-proxy",
        "--listen=127.0.0.1:0",
        "--admin-listen=127.0.0.1:0",
        "--backend=web:80",
    ]);
    let listeners = Listeners::bind(&config).await.expect("bind");
    let addr = listeners.http.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    tokio::spawn(livecast_proxy::run_with_resolver(
        config,
        listeners,
        shutdown.clone(),
        Arc::new(dns),
    ));
    let response = get_path(addr, "/").await;
    assert!(status(&response) == "502", "{response}");
    assert!(
        !response.contains("refused"),
        "internal errors stay internal: {response}"
    );
    shutdown.cancel();
}
