//! The plain HTTP/1.1 viewer loop: keep-alive, framing of the answers it passes on, and the
//! hand-off to hyper for what it does not serve itself.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::{backend, raw, start, status, FakeDns, Proxy, TestBackend};

/// One answer read off a kept-alive connection: its head (lower-cased) and decoded body.
async fn answer(reader: &mut BufReader<TcpStream>, head_only: bool) -> (String, Vec<u8>) {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).await.expect("read") > 0,
            "closed: {head}"
        );
        if line == "\r\n" {
            break;
        }
        head.push_str(&line.to_ascii_lowercase());
    }
    let field = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
    };
    let mut body = Vec::new();
    if head_only {
        return (head, body);
    }
    if field("transfer-encoding:").as_deref() == Some("chunked") {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).await.expect("chunk size");
            let size = usize::from_str_radix(size.trim(), 16).expect("hex size");
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).await.expect("chunk");
            assert!(chunk.ends_with(b"\r\n"), "chunk without its CRLF");
            body.extend_from_slice(&chunk[..size]);
            if size == 0 {
                break;
            }
        }
    } else {
        let n: usize = field("content-length:")
            .expect("a length")
            .parse()
            .expect("number");
        body.resize(n, 0);
        reader.read_exact(&mut body).await.expect("body");
    }
    (head, body)
}

/// The balancer with `extra` flags in front of backend "a", and a connection to it.
async fn connected(extra: &[&str]) -> (TestBackend, Proxy, BufReader<TcpStream>) {
    let a = backend("a").await;
    let dns = FakeDns::default();
    dns.set("web", &[a.addr]);
    let proxy = start(&dns, extra).await;
    let stream = TcpStream::connect(proxy.addr).await.expect("connect");
    (a, proxy, BufReader::new(stream))
}

/// An idle kept-alive connection gives its buffers back after half a second; what it is sent
/// afterwards (whole, in pieces, pipelined) is served as before.
#[tokio::test]
async fn a_connection_that_idled_past_its_buffer_release_serves_on() {
    let (_a, _proxy, mut reader) = connected(&[]).await;
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    for round in 0..2 {
        reader
            .get_mut()
            .write_all(get(&format!("/before-{round}")).as_bytes())
            .await
            .expect("write");
        let (head, body) = answer(&mut reader, false).await;
        assert!(head.starts_with("http/1.1 200 ok"), "{head}");
        assert!(body.starts_with(b"a xff=127.0.0.1"), "{body:?}");
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    // A head that arrives in two pieces after the release.
    let request = get("/pieces");
    let (first, rest) = request.split_at(10);
    reader
        .get_mut()
        .write_all(first.as_bytes())
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(100)).await;
    reader
        .get_mut()
        .write_all(rest.as_bytes())
        .await
        .expect("write");
    let (head, _) = answer(&mut reader, false).await;
    assert!(head.starts_with("http/1.1 200 ok"), "{head}");
    tokio::time::sleep(Duration::from_millis(800)).await;
    // Two pipelined requests after the release.
    let two = format!("{}{}", get("/p1"), get("/p2"));
    reader
        .get_mut()
        .write_all(two.as_bytes())
        .await
        .expect("write");
    for _ in 0..2 {
        let (head, _) = answer(&mut reader, false).await;
        assert!(head.starts_with("http/1.1 200 ok"), "{head}");
    }
}

/// Idle viewers leave their tasks for their worker's idle table (`livecast_proxy_idle_connections`
/// counts them): each is served again when its next request comes, and closed when its
/// header timeout passes.
#[tokio::test]
async fn idle_viewers_are_parked_served_again_and_timed_out() {
    let (_a, proxy, first) = connected(&["--header-timeout-secs=3"]).await;
    let mut viewers = vec![first];
    for _ in 0..39 {
        let stream = TcpStream::connect(proxy.addr).await.expect("connect");
        viewers.push(BufReader::new(stream));
    }
    let idle = || async {
        let metrics = crate::get_path(proxy.admin, "/metrics").await;
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("livecast_proxy_idle_connections "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .expect("the idle gauge")
    };
    for round in 0..2 {
        for viewer in &mut viewers {
            let request = format!("GET /r{round} HTTP/1.1\r\nHost: x\r\n\r\n");
            viewer
                .get_mut()
                .write_all(request.as_bytes())
                .await
                .expect("write");
            let (head, body) = answer(viewer, false).await;
            assert!(head.starts_with("http/1.1 200 ok"), "{head}");
            assert!(body.starts_with(b"a xff=127.0.0.1"), "{body:?}");
        }
        assert!(idle().await < 40, "busy viewers are not parked");
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert_eq!(idle().await, 40, "round {round}");
    }
    // Past the header timeout counted from the last answer, every one is closed.
    tokio::time::sleep(Duration::from_millis(2600)).await;
    for viewer in &mut viewers {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(2), viewer.read(&mut byte)).await;
        assert!(matches!(read, Ok(Ok(0))), "{read:?}");
    }
    assert_eq!(idle().await, 0);
}

/// The header timeout of an idle connection counts from the end of its last answer, also when
/// it idled past the buffer release and a head then starts to arrive; shutdown closes an idle
/// connection at once.
#[tokio::test]
async fn an_idle_connection_is_timed_from_its_last_answer_and_closed_on_shutdown() {
    let (_a, _proxy, mut reader) = connected(&["--header-timeout-secs=2"]).await;
    reader
        .get_mut()
        .write_all(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let (head, _) = answer(&mut reader, false).await;
    assert!(head.starts_with("http/1.1 200 ok"), "{head}");
    let answered = tokio::time::Instant::now();
    // Past the release, a head starts and never ends.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    reader
        .get_mut()
        .write_all(b"GET /never HTTP/1.1\r\n")
        .await
        .expect("write");
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), reader.read_to_end(&mut rest))
        .await
        .expect("closed by the header timeout")
        .expect("read");
    let after = answered.elapsed();
    assert!(
        after >= Duration::from_millis(1900) && after < Duration::from_millis(2900),
        "closed {after:?} after the last answer; the timeout is 2 s from it"
    );

    let (_a, proxy, mut reader) = connected(&[]).await;
    reader
        .get_mut()
        .write_all(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    answer(&mut reader, false).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    proxy.shutdown.cancel();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(3), reader.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "an idle connection stayed open on shutdown");
}

#[tokio::test]
async fn one_connection_carries_gets_heads_chunks_and_a_handed_off_post() {
    let (_a, proxy, mut reader) = connected(&[]).await;
    // Two requests in one write (pipelined), then one at a time.
    reader
        .get_mut()
        .write_all(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nHEAD /two HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let (head, body) = answer(&mut reader, false).await;
    assert!(head.starts_with("http/1.1 200 ok"), "{head}");
    assert!(
        body.starts_with(b"a xff=127.0.0.1 proto=http rid="),
        "{:?}",
        String::from_utf8_lossy(&body)
    );
    assert!(
        head.contains("\r\ndate: "),
        "the front-end's date is passed on: {head}"
    );
    let (head, body) = answer(&mut reader, true).await;
    assert!(
        head.starts_with("http/1.1 200 ok") && head.contains("content-length: "),
        "{head}"
    );
    assert!(body.is_empty());

    // A chunked answer is passed on chunked, whole.
    reader
        .get_mut()
        .write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let (head, body) = answer(&mut reader, false).await;
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert_eq!(body, vec![b'x'; 10_000]);

    // A request with a body goes to hyper, which serves the rest of the connection.
    reader
        .get_mut()
        .write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        .await
        .expect("write");
    let (head, body) = answer(&mut reader, false).await;
    assert!(
        head.starts_with("http/1.1 200 ok") && head.contains("x-request-id: "),
        "{head}"
    );
    assert_eq!(body, b"hello");
    reader
        .get_mut()
        .write_all(b"GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let (head, body) = answer(&mut reader, false).await;
    assert!(head.starts_with("http/1.1 200 ok"), "{head}");
    assert!(body.starts_with(b"a xff=127.0.0.1 "));
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).await.expect("read");
    assert!(
        rest.is_empty(),
        "closed after the answer to Connection: close"
    );

    // HTTP/1.0 goes to hyper too.
    let r = raw(proxy.addr, "GET /old HTTP/1.0\r\nHost: x\r\n\r\n").await;
    assert_eq!(status(&r), "200", "{r}");
}

/// A front-end of the old school: no `Date`, and a body that runs until it closes.
async fn bare_front_end() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\nX-Request-Id: theirs\r\n\r\nuntil close")
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn answers_without_date_or_length_are_completed() {
    let dns = FakeDns::default();
    dns.set("web", &[bare_front_end().await]);
    let proxy = start(&dns, &[]).await;
    let stream = TcpStream::connect(proxy.addr).await.expect("connect");
    let mut reader = BufReader::new(stream);
    for _ in 0..2 {
        reader
            .get_mut()
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let (head, body) = answer(&mut reader, false).await;
        assert!(head.contains("\r\ndate: "), "a date is added: {head}");
        assert!(
            head.contains("transfer-encoding: chunked"),
            "framed for keep-alive: {head}"
        );
        assert!(
            !head.contains("theirs") && head.contains("x-request-id: "),
            "{head}"
        );
        assert!(
            !head.contains("connection: close"),
            "the front-end's close is its own: {head}"
        );
        assert_eq!(body, b"until close");
    }
}

#[tokio::test]
async fn bad_request_heads_get_400() {
    let a = backend("a").await;
    let dns = FakeDns::default();
    dns.set("web", &[a.addr]);
    let proxy = start(&dns, &[]).await;
    let r = raw(proxy.addr, "GET / HTTP/1.1\r\nHo st: x\r\n\r\n").await;
    assert_eq!(status(&r), "400", "{r}");
}

#[tokio::test]
async fn own_answers_to_head_carry_no_body() {
    let (_a, _proxy, mut reader) = connected(&["--allow-cidr=10.0.0.0/8"]).await;
    reader
        .get_mut()
        .write_all(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let (head, _) = answer(&mut reader, true).await;
    assert!(head.starts_with("http/1.1 403"), "{head}");
    // Had the HEAD answer carried its text, this would read it as a status line.
    let (head, body) = answer(&mut reader, false).await;
    assert!(head.starts_with("http/1.1 403"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("company network"));
}

#[tokio::test]
async fn shutdown_finishes_the_answer_in_flight_then_closes() {
    let (_a, proxy, mut reader) = connected(&[]).await;
    reader
        .get_mut()
        .write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    // The status line is here: the answer is in flight (its body takes a second).
    let mut line = String::new();
    reader.read_line(&mut line).await.expect("status line");
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    proxy.shutdown.cancel();
    let (head, body) = answer(&mut reader, false).await;
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert_eq!(body, vec![b'x'; 10_000], "the answer in flight is finished");
    // Closed at once, not when the drain deadline (10 s) ends the worker.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(3), reader.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "the connection stayed open after its answer"
    );
    assert!(rest.is_empty(), "then the connection is closed");
}

#[tokio::test]
async fn a_valid_token_does_not_open_the_stream_to_an_address_outside_the_allow_list() {
    let secret = "proxy-test-playback-secret-0123";
    let guard = livecast_proxy::playback::Playback::new(secret.as_bytes()).expect("secret");
    let claims =
        livecast_proxy::playback::claims_for("talk", Duration::from_secs(60), "ann@corp", None);
    let token = guard.mint(&claims).expect("token");
    let request = format!(
        "GET /hls/talk/index.m3u8?_HLS_msn=3&token={token} HTTP/1.1\r\nHost: x\r\n\
         X-Livecast-Viewer: mallory\r\n\r\n"
    );
    let secret_flag = format!("--playback-secret={secret}");
    let (_a, _proxy, mut reader) = connected(&["--allow-cidr=10.0.0.0/8", &secret_flag]).await;
    reader
        .get_mut()
        .write_all(request.as_bytes())
        .await
        .expect("write");
    let (head, body) = answer(&mut reader, false).await;
    assert!(head.starts_with("http/1.1 403"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("company network"));

    // Inside the list, the front-end gets the URL without the token and the token's viewer,
    // never the client's own header.
    let (_a, _proxy, mut reader) = connected(&[&secret_flag]).await;
    reader
        .get_mut()
        .write_all(request.as_bytes())
        .await
        .expect("write");
    let (head, body) = answer(&mut reader, false).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("set-cookie: livecast_playback="), "{head}");
    assert_eq!(
        String::from_utf8_lossy(&body),
        "uri=/hls/talk/index.m3u8?_HLS_msn=3 viewer=ann@corp"
    );
}

/// A front-end that counts the connections that carried a viewer's request (health checks
/// aside) and answers every request on them, kept alive.
async fn counting_front_end() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let counted = counted.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                let mut viewer = false;
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        if !viewer && buf.starts_with(b"GET /hls/") {
                            viewer = true;
                            counted.fetch_add(1, Ordering::SeqCst);
                        }
                        buf.drain(..end + 4);
                        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                        if s.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (addr, count)
}

/// Viewers that make one request per connection (players behind proxies that close, probes)
/// cost the front-end no new connection each: a closed viewer connection leaves its front-end
/// connection to the next viewer on the worker.
#[tokio::test]
async fn a_viewer_per_request_reuses_the_front_end_connection() {
    let (addr, count) = counting_front_end().await;
    let dns = FakeDns::default();
    dns.set("web", &[addr]);
    let proxy = start(&dns, &["--workers=1"]).await;
    for i in 0..5 {
        let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
        let request =
            format!("GET /hls/x/{i}.m3u8 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.expect("read");
        assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
        assert!(answer.ends_with(b"ok"), "{answer:?}");
    }
    assert_eq!(
        count.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "front-end connections opened for five viewers"
    );
}

/// Viewers that arrive together and keep their connections open share the front-end
/// connections of their worker: each answer's connection is free for the next viewer as soon
/// as it is passed on, not after the viewer has idled.
#[tokio::test]
async fn viewers_arriving_together_share_front_end_connections() {
    let (addr, count) = counting_front_end().await;
    let dns = FakeDns::default();
    dns.set("web", &[addr]);
    let proxy = start(&dns, &["--workers=1"]).await;
    let mut viewers = Vec::new();
    for i in 0..20 {
        let stream = TcpStream::connect(proxy.addr).await.expect("connect");
        let mut reader = BufReader::new(stream);
        let request = format!("GET /hls/x/{i}.m3u8 HTTP/1.1\r\nHost: x\r\n\r\n");
        reader
            .get_mut()
            .write_all(request.as_bytes())
            .await
            .expect("write");
        let (head, body) = answer(&mut reader, false).await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert_eq!(body, b"ok");
        // Kept open, well inside the half second after which a viewer idles.
        viewers.push(reader);
    }
    assert_eq!(
        count.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "front-end connections opened for 20 viewers who came one after another"
    );
}
