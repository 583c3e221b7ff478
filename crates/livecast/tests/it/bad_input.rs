//! Hostile or mistaken input: garbage on the RTMP port, a publish to the wrong application,
//! traversal through the proxy.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{get, make_clip, parse_playlist, publish, start_stack};

/// Writes `bytes` and returns once the server has closed the connection.
async fn closed_after(addr: std::net::SocketAddr, bytes: &[u8]) {
    let mut socket = TcpStream::connect(addr).await.expect("connect");
    // The server may close while we are still writing; that is the point.
    let _ = socket.write_all(bytes).await;
    let mut buf = vec![0u8; 65536];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "server kept a garbage connection open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_is_cut_off_without_disturbing_a_publisher() {
    let stack = start_stack(1).await;
    let clip = make_clip(stack.dir.path(), 6);
    let mut good = publish(&clip, &stack.rtmp_url("live/good"));
    let playlist = stack.hls_dir().join("good/index.m3u8");
    crate::support::wait_until("the first segment", Duration::from_secs(10), || {
        let exists = playlist.exists();
        async move { exists }
    })
    .await;

    // Not RTMP at all (wrong version byte).
    let mut noise: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    noise[0] = 0x47;
    closed_after(stack.addrs.rtmp, &noise).await;
    // A valid version byte and handshake length, then chunk-stream garbage.
    let mut after_handshake = vec![3u8];
    after_handshake.extend(std::iter::repeat_n(0u8, 1536 * 2));
    after_handshake.extend(std::iter::repeat_n(0xffu8, 4096));
    closed_after(stack.addrs.rtmp, &after_handshake).await;
    // An HTTP request on the RTMP port.
    closed_after(stack.addrs.rtmp, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;

    assert!(
        good.wait().await.expect("ffmpeg exits").success(),
        "publisher was disturbed"
    );
    // The stream ends once its (test-short) reconnect grace is over.
    crate::support::wait_until("ENDLIST", Duration::from_secs(10), || {
        let ended = std::fs::read_to_string(&playlist).is_ok_and(|t| parse_playlist(&t).ended);
        async move { ended }
    })
    .await;
    let text = std::fs::read_to_string(&playlist).expect("playlist");
    let parsed = parse_playlist(&text);
    assert_eq!(parsed.segments.len(), 3, "{text}");
    // The counter moves just after the files are renamed into place.
    let url = format!("http://{}/metrics", stack.addrs.ingest_admin);
    crate::support::wait_until("three segments counted", Duration::from_secs(5), || {
        let url = url.clone();
        async move {
            let metrics = get(&url).await;
            String::from_utf8_lossy(&metrics.body)
                .contains("livecast_ingest_segments_written_total 3\n")
        }
    })
    .await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publishing_to_another_app_is_refused_and_writes_nothing() {
    let stack = start_stack(1).await;
    let clip = make_clip(stack.dir.path(), 2);
    let status = tokio::time::timeout(
        Duration::from_secs(20),
        publish(&clip, &stack.rtmp_url("other/sneaky")).wait(),
    )
    .await
    .expect("ffmpeg gives up in time")
    .expect("ffmpeg runs");
    assert!(
        !status.success(),
        "ffmpeg must fail to publish to an unknown app"
    );
    let status = publish(&clip, &stack.rtmp_url("live/bad%2Fname"))
        .wait()
        .await
        .expect("ffmpeg runs");
    assert!(
        !status.success(),
        "a stream name with a separator is refused"
    );
    let entries: Vec<_> = std::fs::read_dir(stack.hls_dir())
        .expect("hls dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(
        entries.is_empty(),
        "nothing written for refused publishes: {entries:?}"
    );
    let metrics = get(&format!("http://{}/metrics", stack.addrs.ingest_admin)).await;
    let metrics = String::from_utf8_lossy(&metrics.body).to_string();
    assert!(
        metrics.contains("livecast_ingest_rejected_total{reason=\"unknown_app\"} 1"),
        "{metrics}"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_through_the_proxy_never_leaves_the_volume() {
    let stack = start_stack(1).await;
    std::fs::create_dir_all(stack.hls_dir().join("cam")).expect("mkdir");
    std::fs::write(stack.hls_dir().join("cam/index.m3u8"), "#EXTM3U\n").expect("write");
    std::fs::write(stack.dir.path().join("secret.m3u8"), "TOP SECRET").expect("write");
    for path in [
        "/hls/../secret.m3u8",
        "/hls/cam/../../secret.m3u8",
        "/hls/..%2fsecret.m3u8/x.m3u8",
        "/hls/cam/..%2f..%2fsecret.m3u8",
        "/hls/%2e%2e/secret.m3u8",
        "/hls/cam/%2e%2e%2f%2e%2e%2fsecret.m3u8",
        "/hls/..%5c..%5csecret.m3u8/x.ts",
        "/hls/../../etc/passwd",
        "/hls/%2e%2e/%2e%2e/etc/passwd",
    ] {
        let mut socket = TcpStream::connect(stack.addrs.proxy)
            .await
            .expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        socket.write_all(request.as_bytes()).await.expect("write");
        let mut response = String::new();
        socket.read_to_string(&mut response).await.expect("read");
        let status = response
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        assert!(
            status == "404" || status == "400",
            "{path} answered {status}"
        );
        assert!(
            !response.contains("TOP SECRET") && !response.contains("root:"),
            "{path} leaked"
        );
    }
    assert_eq!(get(&stack.url("/hls/cam/index.m3u8")).await.status, 200);
    stack.stop().await;
}
