//! The front-end in-process on port 0 against a volume the test writes itself.

mod limits;
mod low_latency;
mod protocol;

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use livecast_telemetry::CancellationToken;
use livecast_web::{Config, Listeners};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub(crate) struct Web {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), livecast_web::WebError>>,
}

pub(crate) async fn start() -> Web {
    start_with(&[]).await
}

pub(crate) async fn start_with(extra: &[&str]) -> Web {
    let dir = tempfile::tempdir().expect("tempdir");
    let hls = dir.path().join("volume");
    std::fs::create_dir_all(hls.join("cam")).expect("mkdir");
    std::fs::write(
        hls.join("cam/index.m3u8"),
        "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\ns-0.ts\n",
    )
    .expect("write");
    std::fs::write(hls.join("cam/s-0.ts"), vec![0x47u8; 188 * 4]).expect("write");
    std::fs::write(hls.join("cam/.s-1.ts.tmp"), b"partial").expect("write");
    std::fs::write(dir.path().join("secret.m3u8"), "TOP SECRET").expect("write");
    let mut args = vec![
        "livecast-web".to_string(),
        "--listen=127.0.0.1:0".into(),
        "--admin-listen=127.0.0.1:0".into(),
        "--instance-name=test-web".into(),
    ];
    if !extra.iter().any(|a| a.starts_with("--access-log-dir")) {
        args.push(format!(
            "--access-log-dir={}",
            dir.path().join("logs").display()
        ));
    }
    if !extra.iter().any(|a| a.starts_with("--hls-dir")) {
        args.push(format!("--hls-dir={}", hls.display()));
    }
    if !extra.iter().any(|a| a.starts_with("--shutdown-delay-ms")) {
        args.push("--shutdown-delay-ms=0".into());
    }
    args.extend(extra.iter().map(|a| a.to_string()));
    let config = Config::parse_from(args);
    let listeners = Listeners::bind(&config).await.expect("bind");
    let addr = listeners.http.local_addr().expect("addr");
    let admin = listeners.admin.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(livecast_web::run(config, listeners, shutdown.clone()));
    Web {
        addr,
        admin,
        dir,
        shutdown,
        task,
    }
}

/// Sends a raw request (no client-side path normalisation) and returns status line, headers
/// and body as one string.
pub(crate) async fn raw(addr: SocketAddr, path: &str, extra: &str) -> String {
    let mut socket = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    socket.read_to_end(&mut response).await.expect("read");
    String::from_utf8_lossy(&response).to_string()
}

pub(crate) fn status(response: &str) -> &str {
    response.split_whitespace().nth(1).unwrap_or_default()
}

pub(crate) fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    response
        .lines()
        .take_while(|l| !l.is_empty())
        .find_map(|l| {
            l.split_once(": ")
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim())
        })
}

#[tokio::test]
async fn serves_hls_with_types_and_cache_headers() {
    let web = start().await;
    let playlist = raw(web.addr, "/hls/cam/index.m3u8", "").await;
    assert_eq!(status(&playlist), "200");
    assert_eq!(
        header(&playlist, "content-type"),
        Some("application/vnd.apple.mpegurl")
    );
    assert_eq!(
        header(&playlist, "cache-control"),
        Some("public, max-age=1")
    );
    assert_eq!(header(&playlist, "access-control-allow-origin"), Some("*"));
    let segment = raw(web.addr, "/hls/cam/s-0.ts", "").await;
    assert_eq!(status(&segment), "200");
    assert_eq!(header(&segment, "content-type"), Some("video/mp2t"));
    assert_eq!(header(&segment, "content-length"), Some("752"));
    assert!(header(&segment, "cache-control").is_some_and(|v| v.contains("immutable")));
    // The ingest's temp files and unknown types are never served.
    assert_eq!(
        status(&raw(web.addr, "/hls/cam/.s-1.ts.tmp", "").await),
        "404"
    );
    assert_eq!(
        status(&raw(web.addr, "/hls/cam/missing.ts", "").await),
        "404"
    );
    let page = raw(web.addr, "/", "").await;
    assert_eq!(status(&page), "200");
    assert!(page.contains("/assets/hls.min.js"));
    let lib = raw(web.addr, "/assets/hls.min.js", "").await;
    assert_eq!(status(&lib), "200");
    assert!(header(&lib, "content-type").is_some_and(|v| v.starts_with("text/javascript")));
    let api = raw(web.addr, "/api/streams", "").await;
    assert!(
        api.contains(r#"{"streams":[{"name":"cam","playlist":"/hls/cam/index.m3u8""#),
        "{api}"
    );
    web.shutdown.cancel();
    web.task.await.expect("join").expect("clean exit");
}

#[tokio::test]
async fn traversal_never_escapes_the_volume() {
    let web = start().await;
    for path in [
        "/hls/../secret.m3u8",
        "/hls/cam/../../secret.m3u8",
        "/hls/..%2fsecret.m3u8/x.m3u8",
        "/hls/cam/..%2F..%2Fsecret.m3u8",
        "/hls/%2e%2e/secret.m3u8",
        "/hls/%2E%2E/%2E%2E/etc/passwd",
        "/hls/cam/%2e%2e%2f%2e%2e%2fsecret.m3u8",
        "/hls/cam/..%5c..%5csecret.m3u8",
        "/hls/cam/%252e%252e%252fsecret.m3u8",
        "/hls/../../etc/passwd",
        "/hls//etc/passwd",
        "/hls/cam/%00.m3u8",
    ] {
        let response = raw(web.addr, path, "").await;
        let code = status(&response);
        assert!(code == "404" || code == "400", "{path} answered {code}");
        assert!(
            !response.contains("TOP SECRET") && !response.contains("root:"),
            "{path} leaked"
        );
    }
    web.shutdown.cancel();
    web.task.await.expect("join").expect("clean exit");
}

#[tokio::test]
async fn access_log_line_per_request_flushed_on_shutdown() {
    let web = start().await;
    let playlist = raw(
        web.addr,
        "/hls/cam/index.m3u8",
        "X-Forwarded-For: 10.9.8.7\r\nUser-Agent: probe/1\r\n",
    )
    .await;
    let missing = raw(web.addr, "/nope", "").await;
    for response in [&playlist, &missing] {
        assert!(
            response.contains("\r\nlivecast-replica: test-web\r\n"),
            "every answer names the front-end that gave it: {response}"
        );
    }
    // A balancer's readiness check on the viewer port is not a viewer: not logged.
    assert_eq!(status(&raw(web.addr, "/readyz", "").await), "200");
    let metrics = raw(web.admin, "/metrics", "").await;
    assert!(
        metrics.contains(r#"livecast_web_requests_total{route="playlist",status_class="2xx"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"livecast_web_info{replica="test-web",version=""#),
        "the replica's name for dashboards: {metrics}"
    );
    web.shutdown.cancel();
    web.task.await.expect("join").expect("clean exit");
    let log = read_logs(&web.dir.path().join("logs"));
    assert!(
        !web.dir.path().join("logs/test-web.log").exists(),
        "a stopped front-end leaves its log under a rotated name, ready for archiving"
    );
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(lines.len(), 2);
    let first = &lines[0];
    assert_eq!(
        first["client.ip"], "10.9.8.7",
        "loopback proxy's X-Forwarded-For is trusted"
    );
    assert_eq!(first["url.path"], "/hls/cam/index.m3u8");
    assert_eq!(first["http.response.status_code"], 200);
    assert_eq!(first["http.request.method"], "GET");
    assert_eq!(first["livecast.stream"], "cam");
    assert_eq!(first["user_agent.original"], "probe/1");
    assert_eq!(first["host.name"], "test-web");
    assert!(first["http.response.body.bytes"]
        .as_u64()
        .is_some_and(|b| b > 0));
    assert!(first["event.duration"].as_u64().is_some());
    assert_eq!(lines[1]["http.response.status_code"], 404);
}

#[tokio::test]
async fn readiness_follows_the_volume() {
    let web = start().await;
    let ready = |admin| async move { status(&raw(admin, "/readyz", "").await).to_string() };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while ready(web.admin).await != "200" {
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status(&raw(web.admin, "/livez", "").await), "200");
    web.shutdown.cancel();
    web.task.await.expect("join").expect("clean exit");
}

/// Every log file in `dir`, oldest name first, concatenated.
pub(crate) fn read_logs(dir: &std::path::Path) -> String {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .expect("log dir")
        .map(|e| e.expect("entry").path())
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("read log"))
        .collect()
}

impl Web {
    pub(crate) fn hls(&self) -> std::path::PathBuf {
        self.dir.path().join("volume")
    }

    /// Writes a file into the volume the way the ingest does: temp file, then rename.
    pub(crate) fn publish(&self, rel: &str, data: &[u8]) {
        let path = self.hls().join(rel);
        let tmp = path.with_file_name(format!(
            ".{}.tmp",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("x")
        ));
        std::fs::write(&tmp, data).expect("write temp");
        std::fs::rename(&tmp, &path).expect("rename");
    }

    /// Stops the front-end and hands back the directory so the test can read what it left.
    pub(crate) async fn stop(self) -> tempfile::TempDir {
        self.shutdown.cancel();
        self.task.await.expect("join").expect("clean exit");
        self.dir
    }
}

/// The binary as a container runs it: stdout is a pipe, so log lines go there as plain text,
/// without the ANSI colour codes that `docker compose logs` would show as garbage.
#[tokio::test]
async fn the_binary_logs_plain_text_to_stdout_when_it_is_not_a_terminal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_livecast-web"))
        .args(["--listen=127.0.0.1:0", "--admin-listen=127.0.0.1:0"])
        .arg(format!("--hls-dir={}", dir.path().display()))
        .arg(format!(
            "--access-log-dir={}",
            dir.path().join("logs").display()
        ))
        .env_remove("NO_COLOR")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn livecast-web");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&seen).contains("web listening") {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, stdout.read(&mut chunk))
            .await
            .expect("a start-up line on stdout within 10 s")
            .expect("read");
        assert!(n > 0, "stdout closed: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&chunk[..n]);
    }
    let _ = child.kill().await;
    let text = String::from_utf8_lossy(&seen);
    assert!(!text.contains('\u{1b}'), "ANSI escapes in {text:?}");
    assert!(text.contains(" INFO "), "{text}");
}
