//! HTTP behaviour viewers and caches rely on: validators, ranges, gzip, CORS, session cookie,
//! cache coherence, log rotation, readiness and version guard.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{header, raw, start, start_with, status};

#[tokio::test]
async fn validators_ranges_gzip_and_preflight() {
    let web = start().await;
    let full = raw(web.addr, "/hls/cam/s-0.ts", "").await;
    let etag = header(&full, "etag").expect("etag").to_string();
    assert!(header(&full, "last-modified").is_some());
    assert_eq!(header(&full, "accept-ranges"), Some("bytes"));
    let again = raw(
        web.addr,
        "/hls/cam/s-0.ts",
        &format!("If-None-Match: {etag}\r\n"),
    )
    .await;
    assert_eq!(status(&again), "304");
    let lm = header(&full, "last-modified").expect("lm").to_string();
    assert_eq!(
        status(
            &raw(
                web.addr,
                "/hls/cam/s-0.ts",
                &format!("If-Modified-Since: {lm}\r\n")
            )
            .await
        ),
        "304"
    );

    let part = raw(web.addr, "/hls/cam/s-0.ts", "Range: bytes=100-299\r\n").await;
    assert_eq!(status(&part), "206");
    assert_eq!(header(&part, "content-range"), Some("bytes 100-299/752"));
    assert_eq!(header(&part, "content-length"), Some("200"));
    assert_eq!(
        status(&raw(web.addr, "/hls/cam/s-0.ts", "Range: bytes=900-\r\n").await),
        "416"
    );

    let gz = raw(web.addr, "/hls/cam/index.m3u8", "Accept-Encoding: gzip\r\n").await;
    assert_eq!(header(&gz, "content-encoding"), Some("gzip"));
    assert_eq!(header(&gz, "vary"), Some("Accept-Encoding"));
    let plain = raw(web.addr, "/hls/cam/index.m3u8", "").await;
    assert_eq!(header(&plain, "content-encoding"), None);
    let pl_etag = header(&plain, "etag").expect("etag").to_string();
    assert_eq!(
        status(
            &raw(
                web.addr,
                "/hls/cam/index.m3u8",
                &format!("If-None-Match: {pl_etag}\r\n")
            )
            .await
        ),
        "304"
    );

    let mut socket = tokio::net::TcpStream::connect(web.addr)
        .await
        .expect("connect");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    socket
        .write_all(b"OPTIONS /hls/cam/index.m3u8 HTTP/1.1\r\nHost: x\r\nOrigin: http://intranet\r\nAccess-Control-Request-Method: GET\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut pre = String::new();
    socket.read_to_string(&mut pre).await.expect("read");
    assert_eq!(status(&pre), "204");
    assert_eq!(header(&pre, "access-control-allow-origin"), Some("*"));
    assert!(header(&pre, "access-control-allow-headers").is_some_and(|h| h.contains("Range")));
    web.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_follows_file_events() {
    let web = start().await;
    let first = raw(web.addr, "/hls/cam/s-0.ts", "").await;
    assert_eq!(header(&first, "content-length"), Some("752"));
    // Served from memory the second time.
    raw(web.addr, "/hls/cam/s-0.ts", "").await;
    let metrics = raw(web.admin, "/metrics", "").await;
    assert!(
        metrics.contains("livecast_web_cache_lookups_total{result=\"hit\"} 1"),
        "{metrics}"
    );
    // Replaced on disk: the next answer is the new file, without any restart.
    web.publish("cam/s-0.ts", &[0x47u8; 188]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let now = raw(web.addr, "/hls/cam/s-0.ts", "").await;
        if header(&now, "content-length") == Some("188") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stale cache entry survived the change"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A playlist change is visible at once too.
    web.publish(
        "cam/index.m3u8",
        b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\ns-9.ts\n",
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while !raw(web.addr, "/hls/cam/index.m3u8", "")
        .await
        .contains("s-9.ts")
    {
        assert!(tokio::time::Instant::now() < deadline, "stale playlist");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    web.stop().await;
}

#[tokio::test]
async fn session_cookie_is_set_once_and_logged() {
    let web = start().await;
    // A cookie-less player (VLC, ffplay) gets no session: the shipper counts it by address.
    let bare = raw(web.addr, "/hls/cam/index.m3u8", "").await;
    assert_eq!(header(&bare, "set-cookie"), None);
    let page = raw(web.addr, "/", "").await;
    let cookie = header(&page, "set-cookie").expect("the player page hands out a session");
    assert!(cookie.starts_with("livecast_session=") && cookie.contains("HttpOnly"));
    let value = cookie.split(';').next().expect("pair").to_string();
    let second = raw(web.addr, "/hls/cam/s-0.ts", &format!("Cookie: {value}\r\n")).await;
    assert_eq!(
        header(&second, "set-cookie"),
        None,
        "a known viewer keeps its session"
    );
    let dir = web.stop().await;
    let log = crate::read_logs(&dir.path().join("logs"));
    let sessions: Vec<String> = log
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["livecast.session"]
                .to_string()
        })
        .collect();
    assert_eq!(sessions.len(), 3);
    assert_eq!(sessions[0], "null");
    assert_eq!(sessions[1], sessions[2]);
    assert_eq!(
        sessions[1],
        format!("\"{}\"", value.trim_start_matches("livecast_session="))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_rotates_by_size_and_follows_external_moves() {
    let web = start_with(&["--access-log-max-mb=1"]).await;
    let agent = format!("User-Agent: {}\r\n", "a".repeat(8000));
    for _ in 0..160 {
        raw(web.addr, "/hls/cam/index.m3u8", &agent).await;
    }
    let logs = web.dir.path().join("logs");
    let keep = web.dir.path().to_path_buf();
    // logrotate-style move: the writer must notice and write to a fresh file.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    raw(web.addr, "/nope", "").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    std::fs::rename(logs.join("test-web.log"), logs.join("moved.log")).expect("move");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    raw(web.addr, "/nope", "").await;
    raw(web.addr, "/after-move", "").await;
    let dir = web.stop().await;
    assert_eq!(dir.path(), keep);
    let mut total = 0;
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&logs).expect("dir") {
        let entry = entry.expect("entry");
        let text = std::fs::read_to_string(entry.path()).expect("read");
        assert!(text.ends_with('\n'), "no torn lines");
        total += text.lines().count();
        files.push(entry.file_name().into_string().expect("utf-8"));
        assert!(entry.metadata().expect("meta").len() <= 1024 * 1024 + 9000);
    }
    assert_eq!(total, 163, "every request logged exactly once: {files:?}");
    // One rotated by size, one closed at shutdown, and the file someone moved away.
    let rotated = files
        .iter()
        .filter(|f| f.starts_with("test-web.") && f.as_str() != "test-web.log")
        .count();
    assert_eq!(rotated, 2, "size rotation plus the closed log: {files:?}");
    assert!(files.iter().any(|f| f == "moved.log"));
    let moved = std::fs::read_to_string(logs.join("moved.log")).expect("moved file");
    assert!(
        !moved.contains("/after-move"),
        "lines after the move go to a fresh file"
    );
    assert!(crate::read_logs(&logs).contains("/after-move"));
}

#[tokio::test]
async fn version_guard_keeps_a_wrong_build_out_of_the_pool() {
    let web = start_with(&["--expect-version=0.0.0-other"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(status(&raw(web.admin, "/readyz", "").await), "503");
    assert_eq!(status(&raw(web.addr, "/readyz", "").await), "503");
    web.stop().await;
    let good = start_with(&[&format!("--expect-version={}", env!("CARGO_PKG_VERSION"))]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while status(&raw(good.addr, "/readyz", "").await) != "200" {
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    good.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_fails_readiness_first_then_drains() {
    let web = start_with(&["--shutdown-delay-ms=800"]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while status(&raw(web.addr, "/readyz", "").await) != "200" {
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    web.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Still serving during the delay, but telling balancers to go elsewhere, and that this is
    // a goodbye (one check is enough) rather than a blip.
    let ready = raw(web.addr, "/readyz", "").await;
    assert_eq!(status(&ready), "503");
    assert_eq!(
        header(&ready, "livecast-leaving"),
        Some("shutting down"),
        "{ready}"
    );
    assert_eq!(
        status(&raw(web.addr, "/hls/cam/index.m3u8", "").await),
        "200"
    );
    web.task.await.expect("join").expect("clean exit");
    assert!(
        tokio::net::TcpStream::connect(web.addr).await.is_err(),
        "listener closed after the drain"
    );
}

/// `--hls-dir` relative to the working directory (the default `./data/hls` is): a stream that
/// appears after the start is followed like any other.
#[tokio::test]
async fn a_relative_volume_path_follows_new_streams() {
    let probe = tempfile::tempdir().expect("tempdir");
    let cwd = std::env::current_dir().expect("cwd");
    let up = "../".repeat(cwd.components().count().saturating_sub(1));
    let relative = format!(
        "./{up}{}",
        probe.path().display().to_string().trim_start_matches('/')
    );
    let web = start_with(&[&format!("--hls-dir={relative}")]).await;
    let write = |text: &str| {
        std::fs::create_dir_all(probe.path().join("late")).expect("mkdir");
        let tmp = probe.path().join("late/.index.m3u8.tmp");
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, probe.path().join("late/index.m3u8")).expect("rename");
    };
    write("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\na-1.ts\n");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let first = raw(web.addr, "/hls/late/index.m3u8", "").await;
    assert!(first.contains("a-1.ts"), "{first}");
    write("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\na-1.ts\n#EXTINF:2.0,\na-2.ts\n");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        if raw(web.addr, "/hls/late/index.m3u8", "")
            .await
            .contains("a-2.ts")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the playlist change was missed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads one response with a Content-Length body from a kept-alive connection.
async fn read_response(socket: &mut tokio::net::TcpStream) -> (String, Vec<u8>) {
    use tokio::io::AsyncReadExt as _;
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = socket.read(&mut chunk).await.expect("read");
        assert!(n > 0, "connection closed before the head");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let len: usize = header(&head, "content-length")
        .expect("content-length")
        .parse()
        .expect("length");
    let mut body = buf.split_off(head_end);
    let mut rest = vec![0u8; len - body.len()];
    socket.read_exact(&mut rest).await.expect("body");
    body.extend_from_slice(&rest);
    (head, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_segments_go_out_whole_from_their_twin_file() {
    use tokio::io::AsyncWriteExt as _;
    let web = start().await;
    // Larger than the socket's send buffer: sendfile has to be resumed after short writes.
    let data: Vec<u8> = (0..3 * 1024 * 1024u32)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    std::fs::write(web.hls().join("cam/big.ts"), &data).expect("write");
    let mut socket = tokio::net::TcpStream::connect(web.addr)
        .await
        .expect("connect");
    let requests = [
        ("", 0..data.len()),
        ("", 0..data.len()),
        ("Range: bytes=1000000-1999999\r\n", 1_000_000..2_000_000),
    ];
    // One kept-alive connection: the first answer (a cache miss), the second (a hit), a range.
    for (extra, expected) in requests.iter().cloned() {
        let request = format!("GET /hls/cam/big.ts HTTP/1.1\r\nHost: x\r\n{extra}\r\n");
        socket.write_all(request.as_bytes()).await.expect("write");
        let (head, body) = read_response(&mut socket).await;
        assert!(status(&head) == "200" || status(&head) == "206", "{head}");
        assert!(body == data[expected], "{extra}: body differs");
    }
    let metrics = raw(web.admin, "/metrics", "").await;
    let sent: usize = requests.iter().map(|(_, r)| r.len()).sum();
    assert!(
        metrics.contains(&format!("livecast_web_sendfile_bytes_total {sent}\n")),
        "every body byte went out through sendfile: {metrics}"
    );
    web.stop().await;
}

/// The socket is corked while a large response is written; the tail must still go out at
/// once, not after the kernel's 200 ms cork ceiling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tail_of_a_large_response_is_not_held_back() {
    use tokio::io::AsyncWriteExt as _;
    let web = start().await;
    // Not a multiple of any packet size, so every response ends with a partial packet.
    let data: Vec<u8> = (0..100_003u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(web.hls().join("cam/tail.ts"), &data).expect("write");
    let mut socket = tokio::net::TcpStream::connect(web.addr)
        .await
        .expect("connect");
    let rounds = 20;
    let started = std::time::Instant::now();
    for _ in 0..rounds {
        let request = "GET /hls/cam/tail.ts HTTP/1.1\r\nHost: x\r\n\r\n";
        socket.write_all(request.as_bytes()).await.expect("write");
        let (head, body) = read_response(&mut socket).await;
        assert_eq!(status(&head), "200", "{head}");
        assert!(body == data, "body differs");
    }
    // A held tail costs 200 ms a response: 4 s for all of them.
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "{rounds} responses took {took:?}"
    );
    web.stop().await;
}

/// A full log disk: viewers are served all along, the lines wait in memory, and once there is
/// room every request is in the log exactly once, with no broken line. The log directory is a
/// real size-limited tmpfs (root, as the test command runs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_log_disk_keeps_lines_until_there_is_room() {
    let mount = tempfile::tempdir().expect("tempdir");
    let logs = mount.path().join("logs");
    std::fs::create_dir_all(&logs).expect("mkdir");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&logs)
        .status()
        .expect("mount runs");
    assert!(
        mounted.success(),
        "mounting a tmpfs needs root (scripts/test.sh runs as root)"
    );
    let web = start_with(&[&format!("--access-log-dir={}", logs.display())]).await;
    let filler = logs.join("filler");
    {
        use std::io::Write as _;
        let mut file = std::fs::File::create(&filler).expect("filler");
        while file.write_all(&[0u8; 4096]).is_ok() {}
    }
    let agent = format!("User-Agent: {}\r\n", "a".repeat(2000));
    for _ in 0..100 {
        let r = raw(web.addr, "/hls/cam/index.m3u8", &agent).await;
        assert_eq!(
            status(&r),
            "200",
            "viewers are served while the log disk is full"
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::remove_file(&filler).expect("free");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let dir = web.stop().await;
    let mut lines = 0;
    for entry in std::fs::read_dir(&logs).expect("dir") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("read");
        for line in text.lines() {
            let doc: serde_json::Value = serde_json::from_str(line).expect("whole JSON lines");
            assert_eq!(doc["url.path"], "/hls/cam/index.m3u8");
            lines += 1;
        }
    }
    drop(dir);
    let _ = std::process::Command::new("umount")
        .arg("-l")
        .arg(&logs)
        .status();
    assert_eq!(lines, 100, "every request logged exactly once");
}

/// A front-end that joins under load gets a burst of first requests at once: every one of
/// them finds the playlist (none answered 404 while the first load runs), and a large segment
/// that none of them has cached yet is read from the volume once, not once per request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_first_requests_finds_the_playlist_and_reads_a_segment_once() {
    const BURST: usize = 32;
    const SEGMENT: usize = 2 << 20;
    let web = start().await;
    std::fs::write(web.hls().join("cam/big.m4s"), vec![7u8; SEGMENT]).expect("write");
    // Let the write's own file events pass before the burst.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for path in ["/hls/cam/index.m3u8", "/hls/cam/big.m4s"] {
        // Every connection open and waiting first, then all the requests at once (as wrk's
        // connections do), so they all arrive while the first one is being answered.
        let mut sockets = Vec::new();
        for _ in 0..BURST {
            sockets.push(
                tokio::net::TcpStream::connect(web.addr)
                    .await
                    .expect("connect"),
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        for socket in &mut sockets {
            socket.write_all(request.as_bytes()).await.expect("write");
        }
        for mut socket in sockets {
            let mut answer = Vec::new();
            socket.read_to_end(&mut answer).await.expect("read");
            let answer = String::from_utf8_lossy(&answer);
            assert_eq!(
                status(&answer),
                "200",
                "{path}: {}",
                &answer[..answer.len().min(200)]
            );
            if path.ends_with(".m4s") {
                assert_eq!(header(&answer, "content-length"), Some("2097152"));
            }
        }
    }
    let metrics = raw(web.admin, "/metrics", "").await;
    assert!(
        metrics.contains(r#"livecast_web_cache_lookups_total{result="miss"} 1"#),
        "one read for the burst: {}",
        metrics
            .lines()
            .filter(|l| l.contains("cache_lookups"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    web.stop().await;
}

/// A stream's master playlist is served like a playlist (validators, gzip, the live cache
/// rule) with delivery directives ignored, and a rendition's files only under its stream's
/// URL (`/hls/<stream>/<rendition>/`), from `<stream>@<rendition>/` on the volume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_and_renditions_are_served_under_the_stream() {
    let web = start().await;
    let volume = web.dir.path().join("volume");
    std::fs::write(
        volume.join("cam/master.m3u8"),
        "#EXTM3U\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-STREAM-INF:BANDWIDTH=900000\nindex.m3u8\n\
         #EXT-X-STREAM-INF:BANDWIDTH=300000\n240p/index.m3u8\n",
    )
    .expect("write");
    std::fs::create_dir_all(volume.join("cam@240p")).expect("mkdir");
    std::fs::write(
        volume.join("cam@240p/index.m3u8"),
        "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nlow-0.ts\n",
    )
    .expect("write");
    std::fs::write(volume.join("cam@240p/low-0.ts"), vec![0x47u8; 188]).expect("write");

    let master = raw(web.addr, "/hls/cam/master.m3u8?_HLS_msn=99", "").await;
    assert_eq!(status(&master), "200", "no blocking on a master: {master}");
    assert_eq!(
        header(&master, "content-type"),
        Some("application/vnd.apple.mpegurl")
    );
    assert_eq!(header(&master, "cache-control"), Some("public, max-age=1"));
    assert!(master.ends_with("240p/index.m3u8\n"), "{master}");
    let etag = header(&master, "etag").expect("etag").to_string();
    let again = raw(
        web.addr,
        "/hls/cam/master.m3u8",
        &format!("If-None-Match: {etag}\r\n"),
    )
    .await;
    assert_eq!(status(&again), "304");
    let gz = raw(
        web.addr,
        "/hls/cam/master.m3u8",
        "Accept-Encoding: gzip\r\n",
    )
    .await;
    assert_eq!(header(&gz, "content-encoding"), Some("gzip"));

    let low = raw(web.addr, "/hls/cam/240p/index.m3u8", "").await;
    assert_eq!(status(&low), "200");
    assert!(low.contains("low-0.ts"), "{low}");
    assert_eq!(
        status(&raw(web.addr, "/hls/cam/240p/low-0.ts", "").await),
        "200"
    );
    for path in [
        "/hls/cam@240p/index.m3u8",
        "/hls/cam/240p%2F..%2Fx/index.m3u8",
        "/hls/cam/..%2Fcam/index.m3u8",
        "/hls/cam/240p@x/index.m3u8",
        "/hls/cam@240p/240p/index.m3u8",
        "/hls/cam/240p/.hidden.ts",
        "/hls/nothere/master.m3u8",
    ] {
        assert_eq!(status(&raw(web.addr, path, "").await), "404", "{path}");
    }
    // A rewritten master is served at once (the file watcher keeps the cache coherent).
    std::fs::write(
        volume.join("cam/.master.tmp"),
        "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nindex.m3u8\n",
    )
    .unwrap();
    std::fs::rename(
        volume.join("cam/.master.tmp"),
        volume.join("cam/master.m3u8"),
    )
    .unwrap();
    let mut fresh = String::new();
    for _ in 0..50 {
        fresh = raw(web.addr, "/hls/cam/master.m3u8", "").await;
        if fresh.contains("BANDWIDTH=1\n") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(fresh.contains("BANDWIDTH=1\n"), "{fresh}");
    web.stop().await;
}
