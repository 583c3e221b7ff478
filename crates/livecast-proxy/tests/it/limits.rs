//! Admission and limits: allow list, slowloris, oversized headers, rate limit, TLS with HTTP/2.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{backend, get_path, raw, start, status, FakeDns, Proxy, TestBackend, BIG, SEGMENT};

#[tokio::test]
async fn disallowed_address_gets_403() {
    let a = backend("a").await;
    let dns = FakeDns::default();
    dns.set("web", &[a.addr]);
    let proxy = start(&dns, &["--allow-cidr=10.0.0.0/8,192.168.0.0/16"]).await;
    let r = get_path(proxy.addr, "/hls/x/index.m3u8").await;
    assert_eq!(status(&r), "403");
    // A forged X-Forwarded-For from an untrusted client changes nothing.
    let r = raw(
        proxy.addr,
        "GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&r), "403");
    let metrics = get_path(proxy.admin, "/metrics").await;
    assert!(
        metrics.contains("livecast_proxy_denied_total{reason=\"not_allowed\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn slowloris_is_cut_off() {
    let a = backend("a").await;
    let dns = FakeDns::default();
    dns.set("web", &[a.addr]);
    let proxy = start(&dns, &["--header-timeout-secs=1"]).await;
    let mut socket = TcpStream::connect(proxy.addr).await.expect("connect");
    socket
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "connection still open after 5 s");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "closed after {:?}",
        started.elapsed()
    );
}

/// Sends `request`, then reads what came back before the connection closed.
async fn answer_to_oversized(addr: std::net::SocketAddr, request: Vec<u8>) -> String {
    let socket = TcpStream::connect(addr).await.expect("connect");
    let (mut read, mut write) = socket.into_split();
    // The whole request is written before the answer is read, as curl does: a server that
    // closes with unread bytes resets the connection, and the write fails.
    write
        .write_all(&request)
        .await
        .expect("the whole request is taken");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), read.read_to_end(&mut buf))
        .await
        .expect("closed");
    drop(write);
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn oversized_headers_are_refused() {
    let a = backend("a").await;
    let dns = FakeDns::default();
    dns.set("web", &[a.addr]);
    let proxy = start(&dns, &["--max-header-bytes=8192"]).await;
    let long = |n: usize| {
        format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(n)
        )
        .into_bytes()
    };
    let mut many = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..1000 {
        many.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    // A head over the byte limit, one of 8 MB that is still arriving when the answer goes
    // out,
    // and a small head with more lines than the parser takes: all 431.
    for (what, request) in [
        ("20 KB", long(20_000)),
        ("8 MB", long(8 << 20)),
        ("1000 lines", many),
    ] {
        let text = answer_to_oversized(proxy.addr, request).await;
        assert_eq!(status(&text), "431", "{what}: {text}");
        assert!(
            !text.contains("a xff"),
            "the request must not reach a backend"
        );
    }
}

#[tokio::test]
async fn rate_limit_answers_429() {
    let a = backend("a").await;
    let dns = FakeDns::default();
    dns.set("web", &[a.addr]);
    let proxy = start(&dns, &["--rate-limit-rps=5"]).await;
    let mut codes = Vec::new();
    for _ in 0..20 {
        codes.push(status(&get_path(proxy.addr, "/").await).to_string());
    }
    let ok = codes.iter().filter(|c| *c == "200").count();
    let limited = codes.iter().filter(|c| *c == "429").count();
    assert!(
        (10..=12).contains(&ok),
        "burst of ten plus refill: {codes:?}"
    );
    assert_eq!(ok + limited, 20);
}

/// A balancer terminating TLS with a fresh self-signed certificate for `localhost`, in front of
/// one backend; the backend and the directory of the certificate files live as long as the
/// returned values.
async fn tls_proxy() -> (TestBackend, Proxy, rcgen::CertifiedKey, tempfile::TempDir) {
    let a = backend("a").await;
    let dns = FakeDns::default();
    dns.set("web", &[a.addr]);
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).expect("write");
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).expect("write");
    let proxy = start(
        &dns,
        &[
            &format!("--tls-cert={}", cert_path.display()),
            &format!("--tls-key={}", key_path.display()),
        ],
    )
    .await;
    (a, proxy, cert, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_termination_speaks_http2() {
    let (_a, proxy, _cert, _dir) = tls_proxy().await;
    let url = format!("https://localhost:{}/hls/x/index.m3u8", proxy.addr.port());
    let out = tokio::process::Command::new("curl")
        .args([
            "-sk",
            "--http2",
            "--resolve",
            &format!("localhost:{}:127.0.0.1", proxy.addr.port()),
        ])
        .args(["-w", "\n%{http_version} %{http_code}", &url])
        .output()
        .await
        .expect("curl must be installed (scripts/test.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.ends_with("\n2 200"), "{text}");
    assert!(text.contains("proto=https"), "{text}");
    let out = tokio::process::Command::new("curl")
        .args([
            "-sk",
            "--http1.1",
            "--resolve",
            &format!("localhost:{}:127.0.0.1", proxy.addr.port()),
        ])
        .args(["-w", "\n%{http_version} %{http_code}", &url])
        .output()
        .await
        .expect("curl");
    assert!(String::from_utf8_lossy(&out.stdout).ends_with("\n1.1 200"));
}

/// nghttp2's load generator, a second HTTP/2 implementation besides curl's, gets every answer
/// on many streams at once: playlists ten streams deep on four connections, and segments
/// larger than any window, so they go out as the client's WINDOW_UPDATEs come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2load_gets_every_answer_over_many_streams() {
    let (_a, proxy, _cert, _dir) = tls_proxy().await;
    for (path, requests, size) in [
        ("/hls/x/index.m3u8", "2000", None),
        ("/segment", "80", Some(SEGMENT)),
    ] {
        let url = format!("https://127.0.0.1:{}{path}", proxy.addr.port());
        let out = tokio::process::Command::new("h2load")
            // Windows of 64 KiB per stream and 1 MiB per connection (h2load's own are 1 GiB),
            // which nghttp2 holds the balancer to.
            .args([
                "-n", requests, "-c", "4", "-m", "10", "-w", "16", "-W", "20", &url,
            ])
            .output()
            .await
            .expect("h2load must be installed (scripts/test.sh installs nghttp2-client)");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(text.contains("Application protocol: h2"), "{text}");
        assert!(
            text.contains(&format!("{requests} succeeded, 0 failed, 0 errored")),
            "{text}"
        );
        assert!(
            text.contains(&format!("status codes: {requests} 2xx")),
            "{text}"
        );
        if let Some(size) = size {
            // Every body whole: the data h2load counted is at least the bodies' bytes.
            let data: u64 = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("traffic:"))
                // "…, 53.41MB (56000000) data"
                .and_then(|l| l.strip_suffix(") data"))
                .and_then(|l| l.rsplit('(').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no data count in {text}"));
            let bodies = requests.parse::<u64>().unwrap() * size as u64;
            assert!(
                data >= bodies,
                "{data} bytes of data for {bodies} of bodies: {text}"
            );
        }
    }
}

/// A TLS 1.3 viewer that trusts `cert` and offers HTTP/1.1 alone (no ALPN), with a session
/// store of its own.
fn tls_viewer(cert: &rcgen::CertifiedKey) -> tokio_rustls::TlsConnector {
    use tokio_rustls::rustls::{self, client::ClientConfig, RootCertStore};
    let mut roots = RootCertStore::empty();
    roots.add(cert.cert.der().clone()).expect("root");
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

/// Reads one answer from `tls`: its head, and a body of the length the head gives, 16 KiB at
/// a time with `pause` after each read.
async fn read_answer<S: tokio::io::AsyncRead + Unpin>(
    tls: &mut S,
    pause: Duration,
) -> (String, Vec<u8>) {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let head_end = loop {
        if let Some(at) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = tls.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed within the head: {got:?}");
        got.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&got[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(str::to_string)
        })
        .and_then(|v| v.trim().parse().ok())
        .expect("a content-length");
    while got.len() < head_end + length {
        let n = tls.read(&mut buf).await.expect("read");
        assert!(
            n > 0,
            "closed after {} of {length} body bytes",
            got.len() - head_end
        );
        got.extend_from_slice(&buf[..n]);
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    (head, got.split_off(head_end))
}

/// HTTP/1.1 over TLS is served by the plain loop: the front-end hears `https`, and a large
/// answer to a viewer that reads slowly (so the balancer keeps finding its socket full)
/// arrives whole, with the kept-alive connection still serving the next request; a request
/// with a body is then handed to hyper on the same connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_over_tls_says_https_and_large_answers_arrive_whole() {
    let (_a, proxy, cert, _dir) = tls_proxy().await;
    let tcp = tokio::net::TcpStream::connect(proxy.addr)
        .await
        .expect("connect");
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut tls = tls_viewer(&cert)
        .connect(name, tcp)
        .await
        .expect("handshake");
    tls.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    // Read slowly, so the balancer keeps finding the socket full.
    let pace = Duration::from_micros(200);
    let (head, body) = tokio::time::timeout(Duration::from_secs(30), read_answer(&mut tls, pace))
        .await
        .expect("the whole answer within 30 s");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body.len(), BIG);
    tls.write_all(b"GET /who HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let (_, body) = tokio::time::timeout(
        Duration::from_secs(5),
        read_answer(&mut tls, Duration::ZERO),
    )
    .await
    .expect("the second answer on the same connection");
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("proto=https "), "{text}");
    // A request with a body: hyper takes the connection over, TLS session and all.
    tls.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        .await
        .expect("write");
    let (head, body) = tokio::time::timeout(
        Duration::from_secs(5),
        read_answer(&mut tls, Duration::ZERO),
    )
    .await
    .expect("hyper's answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(&body[..], b"hello");
}

/// A viewer's TLS 1.3 session resumes after hundreds of other viewers have connected since:
/// the balancer issues stateless tickets (a server-side cache of 256 sessions, rustls's
/// default, would have forgotten it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_sessions_resume_after_many_other_viewers() {
    use tokio_rustls::rustls::{self, HandshakeKind};

    let (_a, proxy, cert, _dir) = tls_proxy().await;
    // Each connector is one viewer, with its own session store.
    let viewer = || tls_viewer(&cert);
    let fetch = |connector: tokio_rustls::TlsConnector| async move {
        let tcp = tokio::net::TcpStream::connect(proxy.addr)
            .await
            .expect("connect");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let mut tls = connector.connect(name, tcp).await.expect("handshake");
        tls.write_all(b"GET /hls/x/index.m3u8 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        // Read the answer to its end: the session tickets come after the handshake.
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = tls.read(&mut buf).await {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
        assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
        tls.get_ref().1.handshake_kind()
    };
    let first = viewer();
    assert_eq!(fetch(first.clone()).await, Some(HandshakeKind::Full));
    for _ in 0..300 {
        fetch(viewer()).await;
    }
    assert_eq!(
        fetch(first).await,
        Some(HandshakeKind::Resumed),
        "the first viewer's session was forgotten"
    );
}
