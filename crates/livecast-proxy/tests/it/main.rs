//! The balancer in-process on port 0 in front of real HTTP backends.

use std::net::SocketAddr;

use axum::http::HeaderMap;
use axum::routing::get;
use axum::Router;
use clap::Parser;
use livecast_proxy::{Config, Listeners};
use livecast_telemetry::CancellationToken;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A backend that answers with its name and the X-Forwarded-For it saw.
async fn backend(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = Router::new().fallback(get(move |headers: HeaderMap| async move {
        let xff = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string();
        let hop = headers.contains_key("x-hop-secret");
        format!("{name} xff={xff} hop={hop}")
    }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// An address where nothing listens: bound, then closed.
async fn dead_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr")
}

async fn start(backends: &[SocketAddr]) -> (SocketAddr, SocketAddr, CancellationToken) {
    let mut args = vec![
        "livecast-proxy".to_string(),
        "--listen=127.0.0.1:0".into(),
        "--admin-listen=127.0.0.1:0".into(),
    ];
    args.extend(backends.iter().map(|b| format!("--backend={b}")));
    let config = Config::parse_from(args);
    let listeners = Listeners::bind(&config).await.expect("bind");
    let addr = listeners.http.local_addr().expect("addr");
    let admin = listeners.admin.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    tokio::spawn(livecast_proxy::run(config, listeners, shutdown.clone()));
    (addr, admin, shutdown)
}

async fn raw(addr: SocketAddr, request: &str) -> String {
    let mut socket = TcpStream::connect(addr).await.expect("connect");
    socket.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    socket.read_to_end(&mut response).await.expect("read");
    String::from_utf8_lossy(&response).to_string()
}

async fn get_path(addr: SocketAddr, path: &str) -> String {
    raw(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
    .await
}

#[tokio::test]
async fn round_robin_and_retry_past_a_dead_backend() {
    let a = backend("a").await;
    let b = backend("b").await;
    let dead = dead_address().await;
    let (proxy, admin, shutdown) = start(&[a, dead, b]).await;
    let mut seen = std::collections::HashMap::new();
    for _ in 0..30 {
        let response = get_path(proxy, "/hls/x/index.m3u8").await;
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "a dead backend must cost no viewer an error: {response}"
        );
        let body = response.rsplit("\r\n\r\n").next().unwrap_or_default();
        *seen
            .entry(body.split(' ').next().unwrap_or_default().to_string())
            .or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "both live backends get traffic: {seen:?}");
    assert!(seen.values().all(|n| *n >= 10), "{seen:?}");
    let metrics = get_path(admin, "/metrics").await;
    assert!(
        metrics.contains("livecast_proxy_retries_total 10"),
        "{metrics}"
    );
    assert!(metrics.contains("livecast_proxy_backends 3"), "{metrics}");
    shutdown.cancel();
}

#[tokio::test]
async fn forwarded_for_is_appended_and_hop_headers_dropped() {
    let a = backend("a").await;
    let (proxy, _, shutdown) = start(&[a]).await;
    let response = raw(
        proxy,
        "GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.1.1.1\r\nConnection: close, x-hop-secret\r\nX-Hop-Secret: 1\r\n\r\n",
    )
    .await;
    assert!(
        response.ends_with("a xff=10.1.1.1, 127.0.0.1 hop=false"),
        "{response}"
    );
    shutdown.cancel();
}

#[tokio::test]
async fn no_live_backend_is_a_clean_502() {
    let dead = dead_address().await;
    let (proxy, _, shutdown) = start(&[dead]).await;
    let response = get_path(proxy, "/").await;
    assert!(response.starts_with("HTTP/1.1 502"), "{response}");
    assert!(
        !response.contains("Connection refused"),
        "internal errors stay internal: {response}"
    );
    shutdown.cancel();
}
