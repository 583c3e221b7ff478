//! The load tester against the real stack in-process (port 0), with a real ffmpeg publishing.

mod k8s;

use std::path::Path;
use std::time::Duration;

use clap::Parser;
use livecast::{Stack, UpArgs};
use livecast_loadtest::{RunArgs, Shard, ThresholdArgs, VariantChoice};
use livecast_telemetry::CancellationToken;

#[derive(Parser)]
struct Up {
    #[command(flatten)]
    up: UpArgs,
}

struct Running {
    proxy: std::net::SocketAddr,
    logship_admin: std::net::SocketAddr,
    rtmp: std::net::SocketAddr,
    dir: tempfile::TempDir,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<livecast::error::Result<()>>,
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
        logship_admin: addrs.logship_admin,
        rtmp: addrs.rtmp,
        dir,
        shutdown,
        task,
    }
}

/// Publishes a looping 640×360 test clip with a 2 s GOP, in real time.
fn publish(dir: &Path, rtmp: std::net::SocketAddr, stream: &str) -> tokio::process::Child {
    publish_at(dir, rtmp, stream, "640x360", 1200)
}

/// Publishes a looping test clip of `size` at about `kbps` of video, 2 s GOP, in real time.
fn publish_at(
    dir: &Path,
    rtmp: std::net::SocketAddr,
    stream: &str,
    size: &str,
    kbps: u32,
) -> tokio::process::Child {
    let clip = dir.join(format!("clip-{size}-{kbps}.flv"));
    let source = format!("testsrc2=size={size}:rate=30:duration=10");
    let rate = format!("{kbps}k");
    let made = std::process::Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            &source,
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
            "-b:v",
            &rate,
            "-maxrate",
            &rate,
            "-bufsize",
            &rate,
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

/// A run that is never stopped early.
async fn run_to_end(args: &RunArgs) -> anyhow::Result<livecast_loadtest::Summary> {
    livecast_loadtest::run(args, CancellationToken::new()).await
}

fn args(url: String, out: &Path, viewers: usize, secs: u64) -> RunArgs {
    RunArgs {
        url,
        scenario: None,
        viewers,
        duration: Duration::from_secs(secs),
        ramp: Duration::from_secs(1),
        out: out.to_path_buf(),
        thresholds: ThresholdArgs {
            max_stall_ratio: Some(0.0),
            max_error_rate: Some(0.0),
        },
        shard: Shard {
            index: Some(0),
            count: 1,
        },
        start_at: None,
        progress_secs: 0,
        threads: 0,
        variant: VariantChoice::Abr,
        max_live_sync_rate: 1.0,
        requests_out: None,
        viewers_url: None,
        metrics_listen: None,
        download_twice: false,
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
    let mut a = args(url, &out, 4, 12);
    // The shipper's count beside the true one, and the tool's own metrics while it runs.
    a.viewers_url = Some(format!("http://{}/metrics", stack.logship_admin));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    a.metrics_listen = Some(port);
    let scrape = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(8)).await;
        let out = tokio::process::Command::new("curl")
            .args(["-fsS", &format!("http://{port}/metrics")])
            .output()
            .await
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).to_string()
    });
    let summary = run_to_end(&a).await.expect("run");
    let metrics = scrape.await.expect("scrape");
    assert!(
        metrics.contains("livecast_loadtest_viewers 4"),
        "the load tester's own metrics: {metrics}"
    );
    assert!(metrics.contains("livecast_loadtest_requests_total"));
    let shipper = summary
        .tally
        .counts
        .series
        .iter()
        .filter_map(|s| s.shipper_viewers)
        .max();
    // The shipper counts viewers by session cookie, and clients without one (the test's
    // curl, the load tester's preflight) by address and user agent.
    let cookieless = cookieless_clients(stack.dir.path());
    assert_eq!(
        shipper,
        Some(4 + cookieless),
        "the shipper counts the 4 viewers by their session cookies, plus {cookieless} cookie-less clients"
    );
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

    // Which front-end answered: both replicas, by the names they log under.
    let mut replicas: Vec<String> = lines_by_replica(stack.dir.path()).into_keys().collect();
    replicas.sort();
    let mut reported: Vec<String> = summary.frontends.keys().cloned().collect();
    reported.sort();
    assert_eq!(reported, replicas, "{}", summary.text());
    assert_eq!(replicas.len(), 2);
    assert_eq!(
        summary.frontends.values().sum::<u64>(),
        summary.requests.values().map(|r| r.count).sum::<u64>()
    );
    assert_eq!(
        summary.preload_hints > 0,
        blocking,
        "LL-HLS viewers ask for the preload-hinted part early: {}",
        summary.text()
    );
    // The report opens offline in Chromium with its charts drawn.
    let shot = artifacts().join(if blocking {
        "loadtest-report-ll.png"
    } else {
        "loadtest-report.png"
    });
    report_in_chromium(&out.join("report.html"), &shot).await;
    assert!(out.join("histograms.hlog").exists());
}

fn workspace_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

fn artifacts() -> std::path::PathBuf {
    let dir = workspace_dir().join("target/test-artifacts");
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir
}

/// Opens `report` in headless Chromium (e2e/report.mjs) and checks every chart has pixels.
async fn report_in_chromium(report: &Path, screenshot: &Path) {
    let driver = workspace_dir().join("e2e/report.mjs");
    assert!(
        workspace_dir()
            .join("e2e/node_modules/playwright-core")
            .exists(),
        "run `npm ci --prefix e2e` first (scripts/test.sh does)"
    );
    let output = tokio::process::Command::new("node")
        .arg(&driver)
        .arg(report)
        .arg(screenshot)
        .output()
        .await
        .expect("node must be installed");
    assert!(
        output.status.success(),
        "the report's charts were not drawn: {} {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(screenshot.exists());
}

/// Distinct clients without a session cookie in the access logs (address and user agent).
fn cookieless_clients(dir: &Path) -> u64 {
    let mut seen = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(dir.join("logs")).expect("logs") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("read");
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("json line");
            if v["livecast.session"].is_null()
                && v["url.path"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("/hls/"))
            {
                seen.insert((
                    v["client.ip"].to_string(),
                    v["user_agent.original"].to_string(),
                ));
            }
        }
    }
    seen.len() as u64
}

/// Access-log lines of the viewers per replica (`host.name`).
fn lines_by_replica(dir: &Path) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(dir.join("logs")).expect("logs") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("read");
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("json line");
            if v["livecast.session"].is_null() {
                continue;
            }
            let host = v["host.name"].as_str().unwrap_or_default().to_string();
            *out.entry(host).or_default() += 1;
        }
    }
    out
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
    let missing = run_to_end(&args(
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
    let page = run_to_end(&args(format!("http://{}/", stack.proxy), &out, 1, 1)).await;
    let error = format!("{:#}", page.expect_err("not a playlist"));
    assert!(error.contains("not an HLS playlist"), "{error}");
    let nothing = run_to_end(&args("http://127.0.0.1:1/x.m3u8".into(), &out, 1, 1)).await;
    assert!(format!("{:#}", nothing.expect_err("nothing listens")).contains("cannot reach"));
    stack.shutdown.cancel();
    let _ = stack.task.await;
}

/// A TCP relay in front of the balancer whose answers (balancer → viewer) are limited to
/// `rate` bytes a second per connection (0: no limit), like a thin office link.
struct Relay {
    addr: std::net::SocketAddr,
    rate: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

async fn relay(upstream: std::net::SocketAddr) -> Relay {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind relay");
    let addr = listener.local_addr().expect("addr");
    let rate = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let limit = rate.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let limit = limit.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut sw).await;
                    let _ = sw.shutdown().await;
                });
                let mut buf = vec![0u8; 4096];
                loop {
                    let n = match sr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    let rate = limit.load(Ordering::Relaxed);
                    if rate > 0 {
                        tokio::time::sleep(Duration::from_secs_f64(n as f64 / rate as f64)).await;
                    }
                }
                let _ = cw.shutdown().await;
            });
        }
    });
    Relay { addr, rate }
}

/// A viewer on a thin link (the relay) sees stalls, and the report counts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_front_end_makes_stalls_the_report_counts() {
    let stack = start(&["--container=ts", "--part-ms=0"]).await;
    let mut publisher = publish(stack.dir.path(), stack.rtmp, "slow");
    let direct = format!("http://{}/hls/slow/index.m3u8", stack.proxy);
    wait_for_playlist(&direct).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let relay = relay(stack.proxy).await;
    // About a third of the stream's bitrate (1.2 Mb/s video).
    relay
        .rate
        .store(50_000, std::sync::atomic::Ordering::Relaxed);
    let out = stack.dir.path().join("out-slow");
    let url = format!("http://{}/hls/slow/index.m3u8", relay.addr);
    let summary = run_to_end(&args(url, &out, 2, 16)).await.expect("run");
    let _ = publisher.kill().await;
    stack.shutdown.cancel();
    let _ = stack.task.await;
    assert!(summary.stalls > 0, "{}", summary.text());
    assert!(summary.rebuffer_ratio > 0.1, "{}", summary.text());
    assert!(!summary.passed, "--max-stall-ratio 0 fails the run");
    assert!(
        summary.failures.iter().any(|f| f.contains("rebuffer")),
        "{:?}",
        summary.failures
    );
}

/// The ABR viewer, like hls.js, starts low, moves up on a fast link and back down when the
/// link is throttled below the high variant's bitrate; it plays the master playlist the ingest
/// writes for a stream published in two renditions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abr_moves_down_when_the_link_is_throttled() {
    let stack = start(&["--container=ts", "--part-ms=0"]).await;
    let mut hi = publish_at(stack.dir.path(), stack.rtmp, "talk@hi", "640x360", 1500);
    let mut lo = publish_at(stack.dir.path(), stack.rtmp, "talk@lo", "320x180", 150);
    let relay = relay(stack.proxy).await;
    for name in ["hi", "lo"] {
        wait_for_playlist(&format!(
            "http://{}/hls/talk/{name}/index.m3u8",
            stack.proxy
        ))
        .await;
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    let master_url = format!("http://{}/hls/talk/master.m3u8", relay.addr);
    let text = tokio::process::Command::new("curl")
        .args(["-fsS", &master_url])
        .output()
        .await
        .expect("curl");
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    let master = livecast_media::master::MasterPlaylist::parse(&text).expect("master");
    let uris: Vec<&str> = master.variants.iter().map(|v| v.uri.as_str()).collect();
    assert_eq!(uris, ["hi/index.m3u8", "lo/index.m3u8"], "{text}");
    let rate = relay.rate.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(10)).await;
        // 800 kb/s: the low variant fits, the high one does not.
        rate.store(100_000, std::sync::atomic::Ordering::Relaxed);
    });
    let out = stack.dir.path().join("out-abr");
    let mut a = args(master_url, &out, 2, 34);
    a.thresholds.max_stall_ratio = None;
    let summary = run_to_end(&a).await.expect("run");
    let _ = hi.kill().await;
    let _ = lo.kill().await;
    stack.shutdown.cancel();
    let _ = stack.task.await;
    assert_eq!(summary.requests["master"].count, 2, "{}", summary.text());
    assert!(summary.switches_up >= 2, "both went up: {}", summary.text());
    assert!(
        summary.switches_down >= 2,
        "both came down: {}",
        summary.text()
    );
    assert_eq!(summary.errors.len(), 0, "{}", summary.text());
    let bw = summary
        .honesty
        .bytes_vs_bandwidth
        .expect("declared bandwidth");
    assert!(bw > 0.2 && bw < 1.2, "{}", summary.text());
    assert!(summary.honesty.download_ratio < 1.01, "{}", summary.text());
}

/// A viewer that downloads every segment twice is caught by the honesty checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_honesty_checks_catch_a_viewer_that_downloads_twice() {
    let stack = start(&[]).await;
    let mut publisher = publish(stack.dir.path(), stack.rtmp, "twice");
    let url = format!("http://{}/hls/twice/index.m3u8", stack.proxy);
    wait_for_playlist(&url).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let out = stack.dir.path().join("out-twice");
    let mut a = args(url, &out, 2, 8);
    a.download_twice = true;
    a.requests_out = Some(stack.dir.path().join("requests.ndjson"));
    let summary = run_to_end(&a).await.expect("run");
    let _ = publisher.kill().await;
    stack.shutdown.cancel();
    let _ = stack.task.await;
    assert!(!summary.passed, "{}", summary.text());
    assert!(
        summary.failures.iter().any(|f| f.contains("twice")),
        "{:?}",
        summary.failures
    );
    assert!(summary.honesty.download_ratio > 1.8, "{}", summary.text());
    assert!(summary.honesty.duplicate_downloads > 0);
    // One NDJSON line per request.
    let ndjson = std::fs::read_to_string(stack.dir.path().join("requests.ndjson")).expect("ndjson");
    let lines: Vec<serde_json::Value> = ndjson
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(
        lines.len() as u64,
        summary.requests.values().map(|r| r.count).sum::<u64>()
    );
    assert!(lines
        .iter()
        .all(|l| l["type"].is_string() && l["status"].is_u64()));
}

/// SIGTERM (or Ctrl-C) ends a run early, as k6 does: the viewers leave at once and the
/// summary of the run so far is written; the per-request file could be followed during it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_ends_the_run_early_with_its_summary() {
    let stack = start(&[]).await;
    let mut publisher = publish(stack.dir.path(), stack.rtmp, "cut");
    let url = format!("http://{}/hls/cut/index.m3u8", stack.proxy);
    wait_for_playlist(&url).await;
    let out = stack.dir.path().join("out-cut");
    let requests = stack.dir.path().join("cut.ndjson");
    // One plain HLS viewer: about a request a second, far less than fills a write buffer in
    // the eight seconds below.
    let scenario = stack.dir.path().join("cut.toml");
    std::fs::write(
        &scenario,
        "duration = \"120s\"\n[[steps]]\nviewers = 1\n[[mix]]\nweight = 1\nlow_latency = false\n",
    )
    .expect("write scenario");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_livecast-loadtest"))
        .args(["run", &url, "--progress-secs=0"])
        .arg("--scenario")
        .arg(&scenario)
        .arg("--out")
        .arg(&out)
        .arg("--requests-out")
        .arg(&requests)
        .kill_on_drop(true)
        .spawn()
        .expect("run livecast-loadtest");
    // Lines reach the file while the run goes (every second), not when a buffer fills or
    // at the end. The file is watched for up to 12 s: it must grow at least three times,
    // and the first time it is seen non-empty it must hold less than half a write buffer
    // (4 of 8 KiB; one viewer writes about 2 lines, 500 bytes, a second).
    let spawned = std::time::Instant::now();
    let (mut sizes, mut text) = (Vec::new(), String::new());
    while sizes.len() < 4 && spawned.elapsed() < Duration::from_secs(12) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = std::fs::read_to_string(&requests).unwrap_or_default();
        if now.len() != sizes.last().copied().unwrap_or(0) {
            sizes.push(now.len());
            text = now;
        }
    }
    assert!(
        sizes.len() >= 3 && sizes[0] < 4096,
        "in {:?}, {} grew to sizes {sizes:?} (bytes)",
        spawned.elapsed(),
        requests.display()
    );
    let during = text.lines().count();
    let signalled = std::time::Instant::now();
    let pid = child.id().expect("pid").to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(kill.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the run ends within 10 s of SIGTERM")
        .expect("wait");
    let stopped_in = signalled.elapsed();
    let _ = publisher.kill().await;
    stack.shutdown.cancel();
    let _ = stack.task.await;
    assert!(status.success(), "exit status {status}");
    let summary: livecast_loadtest::Summary =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).expect("summary.json"))
            .expect("summary");
    assert!(summary.stopped_early, "{}", summary.text());
    assert!(summary.duration_secs < 60.0, "{}", summary.text());
    assert_eq!(summary.viewers, 1, "{}", summary.text());
    // Requests cut off by the stop are not failures, and every counted one is in the file.
    assert!(summary.errors.is_empty(), "{}", summary.text());
    let lines = std::fs::read_to_string(&requests)
        .expect("ndjson")
        .lines()
        .count();
    let counted: u64 = summary.requests.values().map(|r| r.count).sum();
    assert_eq!(lines as u64, counted);
    assert!(lines >= during);
    assert!(out.join("report.html").exists());
    eprintln!("stopped {stopped_in:?} after SIGTERM, {counted} requests");
}

/// Two shards started for the same --start-at are one audience: `merge` (the binary) adds
/// them up, and the sum agrees with the front-ends' access logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_merge_into_one_report() {
    let stack = start(&[]).await;
    let mut publisher = publish(stack.dir.path(), stack.rtmp, "sharded");
    let url = format!("http://{}/hls/sharded/index.m3u8", stack.proxy);
    wait_for_playlist(&url).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let start_at = std::time::SystemTime::now() + Duration::from_secs(2);
    let shard = |index| {
        let mut a = args(url.clone(), &stack.dir.path().join("run"), 5, 8);
        a.shard = Shard {
            index: Some(index),
            count: 2,
        };
        a.start_at = Some(start_at);
        a
    };
    let (a, b) = (shard(0), shard(1));
    let (first, second) = tokio::join!(run_to_end(&a), run_to_end(&b));
    let (first, second) = (first.expect("shard 0"), second.expect("shard 1"));
    let _ = publisher.kill().await;
    stack.shutdown.cancel();
    let _ = stack.task.await;
    assert_eq!(
        (first.viewers, second.viewers),
        (3, 2),
        "viewers 0,2,4 and 1,3"
    );
    let merged_dir = stack.dir.path().join("merged");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_livecast-loadtest"))
        .arg("merge")
        .arg(stack.dir.path().join("run/shard-0"))
        .arg(stack.dir.path().join("run/shard-1"))
        .arg("--out")
        .arg(&merged_dir)
        .arg("--max-error-rate=0")
        .status()
        .expect("run merge");
    assert!(status.success(), "merge exit status {status}");
    let merged: serde_json::Value =
        serde_json::from_slice(&std::fs::read(merged_dir.join("summary.json")).expect("merged"))
            .expect("json");
    assert_eq!(merged["viewers"], 5);
    let count = |s: &livecast_loadtest::Summary| s.requests.values().map(|r| r.count).sum::<u64>();
    let merged_count: u64 = merged["requests"]
        .as_object()
        .expect("requests")
        .values()
        .map(|r| r["count"].as_u64().unwrap_or_default())
        .sum();
    assert_eq!(merged_count, count(&first) + count(&second));
    assert_eq!(merged_count, logged(stack.dir.path()).len() as u64);
    assert_eq!(merged["bytes"].as_u64(), Some(first.bytes + second.bytes));
    // The shards' seconds line up on the common start: the merged series is no longer.
    let series = merged["tally"]["counts"]["series"]
        .as_array()
        .expect("series");
    assert!(
        series.len()
            <= first
                .tally
                .counts
                .series
                .len()
                .max(second.tally.counts.series.len())
                + 1
    );
    assert!(merged["latency_secs"]["p99"].as_f64().is_some());
    assert!(merged_dir.join("report.html").exists() && merged_dir.join("histograms.hlog").exists());
    // Nonsense is refused with a clear message.
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_livecast-loadtest"))
        .args(["merge", "/nonexistent-dir"])
        .output()
        .expect("run merge");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("cannot read"));
}

/// A scenario file: a step of LL-HLS viewers, Poisson arrivals that come and go, and a plain
/// HLS kind of viewer on the same stream, all counted as the front-ends logged them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scenario_mixes_kinds_and_churns() {
    let stack = start(&[]).await;
    let mut publisher = publish(stack.dir.path(), stack.rtmp, "mixed");
    let url = format!("http://{}/hls/mixed/index.m3u8", stack.proxy);
    wait_for_playlist(&url).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let file = stack.dir.path().join("scenario.toml");
    std::fs::write(
        &file,
        "seed = 5\nduration = \"12s\"\n\
         [[steps]]\nviewers = 3\nramp = \"1s\"\n\
         [arrivals]\nrate = 1.0\nuntil = \"8s\"\nsession = \"fixed\"\nsession_mean = \"3s\"\n\
         [[mix]]\nweight = 1\n[[mix]]\nweight = 1\nlow_latency = false\n",
    )
    .expect("write scenario");
    let mut a = args(url, &stack.dir.path().join("out-mix"), 1, 60);
    a.scenario = Some(file);
    a.thresholds.max_stall_ratio = None;
    let summary = run_to_end(&a).await.expect("run");
    let _ = publisher.kill().await;
    stack.shutdown.cancel();
    let _ = stack.task.await;
    assert!(
        summary.duration_secs < 20.0,
        "the scenario's duration: {}",
        summary.text()
    );
    assert!(
        summary.viewers > 3,
        "arrivals join the step: {}",
        summary.text()
    );
    let count = |k: &str| summary.requests.get(k).map_or(0, |r| r.count);
    assert!(
        count("part") > 0 && count("segment") > 0,
        "both kinds: {}",
        summary.text()
    );
    assert!(count("blocking_reload") > 0 && count("playlist") > 0);
    assert_eq!(summary.errors.len(), 0, "{}", summary.text());
    assert_eq!(
        logged(stack.dir.path()).len() as u64,
        summary.requests.values().map(|r| r.count).sum::<u64>()
    );
    let peak = summary.tally.counts.series.iter().map(|s| s.viewers).max();
    assert!(peak.is_some_and(|p| p >= 3), "{peak:?}");
}
