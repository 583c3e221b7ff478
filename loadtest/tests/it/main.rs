//! The load tester against the real stack in-process (port 0), with a real ffmpeg publishing.

use std::path::Path;
use std::time::Duration;

use clap::Parser;
use livecast::{Stack, UpArgs};
use livecast_loadtest::RunArgs;
use livecast_telemetry::CancellationToken;

#[derive(Parser)]
struct Up {
    #[command(flatten)]
    up: UpArgs,
}

struct Running {
    proxy: std::net::SocketAddr,
    rtmp: std::net::SocketAddr,
    dir: tempfile::TempDir,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start(extra: &[&str]) -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args: Vec<String> = vec![
        "test".into(),
        "--rtmp-listen=127.0.0.1:0".into(),
        "--listen=127.0.0.1:0".into(),
        "--web-port=0".into(),
        "--admin-host=127.0.0.1".into(),
        "--admin-port=0".into(),
        "--web-replicas=2".into(),
        format!("--hls-dir={}", dir.path().join("hls").display()),
        format!("--access-log-dir={}", dir.path().join("logs").display()),
        format!("--state-dir={}", dir.path().join("logship").display()),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let stack = Stack::bind(&Up::parse_from(args).up)
        .await
        .expect("stack binds");
    let addrs = stack.addrs().clone();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(stack.run(shutdown.clone()));
    Running {
        proxy: addrs.proxy,
        rtmp: addrs.rtmp,
        dir,
        shutdown,
        task,
    }
}

/// Publishes a looping 640×360 test clip with a 2 s GOP, in real time.
fn publish(dir: &Path, rtmp: std::net::SocketAddr, stream: &str) -> tokio::process::Child {
    let clip = dir.join("clip.flv");
    let made = std::process::Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=30:duration=10",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100:duration=10",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-g",
            "60",
            "-keyint_min",
            "60",
            "-sc_threshold",
            "0",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-f",
            "flv",
        ])
        .arg(&clip)
        .status()
        .expect("ffmpeg must be installed (scripts/test.sh installs it)");
    assert!(made.success());
    tokio::process::Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-re",
            "-stream_loop",
            "-1",
            "-i",
        ])
        .arg(&clip)
        .args(["-c", "copy", "-f", "flv"])
        .arg(format!("rtmp://{rtmp}/live/{stream}"))
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg")
}

fn args(url: String, out: &Path, viewers: usize, secs: u64) -> RunArgs {
    RunArgs {
        url,
        viewers,
        duration: Duration::from_secs(secs),
        ramp: Duration::from_secs(1),
        out: out.to_path_buf(),
        max_stall_ratio: Some(0.0),
        max_error_rate: Some(0.0),
        progress_secs: 0,
    }
}

async fn wait_for_playlist(url: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let out = tokio::process::Command::new("curl")
            .args(["-fsS", "-o", "/dev/null", url])
            .status()
            .await;
        if out.is_ok_and(|s| s.success()) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} never appeared"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Every access-log line of the viewers (they send the player page's session cookie; curl and
/// the preflight request do not): (path, bytes).
fn logged(dir: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir.join("logs")).expect("logs") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("read");
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("json line");
            if v["livecast.session"].is_null() {
                continue;
            }
            out.push((
                v["url.path"].as_str().unwrap_or_default().to_string(),
                v["http.response.body.bytes"].as_u64().unwrap_or_default(),
            ));
        }
    }
    out
}

/// A small audience plays without a stall, and what the report counts is what the front-ends
/// logged: requests per type and bytes.
async fn audience_agrees_with_the_access_logs(extra: &[&str], blocking: bool) {
    let stack = start(extra).await;
    let mut publisher = publish(stack.dir.path(), stack.rtmp, "talk");
    let url = format!("http://{}/hls/talk/index.m3u8", stack.proxy);
    wait_for_playlist(&url).await;
    // Three segments of history, so viewers start where a player would.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let out = stack.dir.path().join("out");
    let summary = livecast_loadtest::run(&args(url, &out, 4, 12))
        .await
        .expect("run");
    let _ = publisher.kill().await;
    stack.shutdown.cancel();
    stack.task.await.expect("join").expect("clean stop");

    assert!(summary.passed, "{}", summary.text());
    assert_eq!(summary.stalls, 0, "{}", summary.text());
    assert_eq!(summary.never_started, 0);
    assert!(
        summary.startup_ms.p95.is_some_and(|ms| ms < 3000.0),
        "{}",
        summary.text()
    );
    let latency = summary
        .latency_secs
        .p50
        .expect("latency from PROGRAM-DATE-TIME");
    assert!((0.5..20.0).contains(&latency), "{}", summary.text());
    assert_eq!(summary.honesty.download_ratio, 1.0);
    let reloads = summary
        .requests
        .get("blocking_reload")
        .map_or(0, |r| r.count);
    assert_eq!(reloads > 0, blocking, "{}", summary.text());

    // The front-ends' access logs tell the same story.
    let lines = logged(stack.dir.path());
    let playlists = lines.iter().filter(|(p, _)| p.ends_with(".m3u8")).count() as u64;
    let inits = lines
        .iter()
        .filter(|(p, _)| p.ends_with("-init.mp4"))
        .count() as u64;
    let segments = lines
        .iter()
        .filter(|(p, _)| p.ends_with(".m4s") || p.ends_with(".ts"))
        .count() as u64;
    let count = |k: &str| summary.requests.get(k).map_or(0, |r| r.count);
    assert_eq!(playlists, count("playlist") + reloads, "playlists");
    assert_eq!(inits, count("init"));
    assert_eq!(
        segments,
        count("segment") + count("part"),
        "segments and parts (ranges of them)"
    );
    assert_eq!(
        count("part") > 0,
        blocking,
        "LL-HLS viewers fetch parts: {}",
        summary.text()
    );
    let logged_bytes: u64 = lines.iter().map(|(_, b)| *b).sum();
    assert_eq!(
        logged_bytes, summary.bytes,
        "bytes the front-ends sent and the report counted"
    );
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).expect("summary.json"))
            .expect("json");
    assert_eq!(written["viewers"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_hls_audience_agrees_with_the_access_logs() {
    audience_agrees_with_the_access_logs(&["--container=ts", "--part-ms=0"], false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_latency_audience_holds_blocking_reloads() {
    audience_agrees_with_the_access_logs(&[], true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_clear_error() {
    let stack = start(&[]).await;
    let out = stack.dir.path().join("out");
    let missing = livecast_loadtest::run(&args(
        format!("http://{}/hls/nope/index.m3u8", stack.proxy),
        &out,
        1,
        1,
    ))
    .await;
    let error = format!("{:#}", missing.expect_err("a 404 stream"));
    assert!(
        error.contains("404") && error.contains("no such stream"),
        "{error}"
    );
    let page = livecast_loadtest::run(&args(format!("http://{}/", stack.proxy), &out, 1, 1)).await;
    let error = format!("{:#}", page.expect_err("not a playlist"));
    assert!(error.contains("not an HLS playlist"), "{error}");
    let nothing =
        livecast_loadtest::run(&args("http://127.0.0.1:1/x.m3u8".into(), &out, 1, 1)).await;
    assert!(format!("{:#}", nothing.expect_err("nothing listens")).contains("cannot reach"));
    stack.shutdown.cancel();
    let _ = stack.task.await;
}
