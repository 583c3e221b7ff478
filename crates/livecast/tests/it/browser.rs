//! The player page in a real browser: headless Debian Chromium, driven by playwright-core,
//! plays a live stream with the self-hosted hls.js through the balancer.

use std::time::Duration;

use crate::support::{
    get, make_clip, parse_playlist, publish, start_stack, start_stack_with, wait_until,
    workspace_dir,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hls_js_in_chromium_plays_through_the_proxy() {
    let stack = start_stack(2).await;
    let clip = make_clip(stack.dir.path(), 30);
    let mut publisher = publish(&clip, &stack.rtmp_url("live/browser"));
    wait_for_segments(&stack, "browser", 2).await;

    let artifacts = workspace_dir().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    let screenshot = artifacts.join("player.png");
    let _ = std::fs::remove_file(&screenshot);
    let url = stack.url("/?stream=browser");
    let report = plays(&url, &screenshot, &[("EXPECT_VIEWERS", "1")]).await;
    // The page shows the live count the shipper derived from the front-ends' access logs.
    assert!(
        report["last"]["viewers"].as_u64().unwrap_or(0) >= 1,
        "{report}"
    );
    assert!(
        report["last"]["watching"]
            .as_str()
            .unwrap_or("")
            .ends_with("watching"),
        "{report}"
    );
    assert!(
        std::fs::metadata(&screenshot)
            .expect("screenshot saved")
            .len()
            > 1000
    );
    publisher.kill().await.expect("stop ffmpeg");
    stack.stop().await;
}

/// The player page over HTTPS, as viewers who reach the balancer by TLS get it: Chromium
/// speaks HTTP/2 to livecast-proxy terminating TLS (here in front of the stack's own
/// balancer), and hls.js plays with every request of the page over HTTP/2.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hls_js_in_chromium_plays_over_http2_through_a_tls_balancer() {
    use clap::Parser;

    let stack = start_stack(1).await;
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("certificate");
    let (cert_path, key_path) = (
        stack.dir.path().join("tls-cert.pem"),
        stack.dir.path().join("tls-key.pem"),
    );
    std::fs::write(&cert_path, cert.pem()).expect("write");
    std::fs::write(&key_path, key.serialize_pem()).expect("write");
    let config = livecast_proxy::Config::parse_from([
        "livecast-proxy".to_string(),
        "--listen=127.0.0.1:0".to_string(),
        "--admin-listen=127.0.0.1:0".to_string(),
        format!("--backend={}", stack.addrs.proxy),
        format!("--tls-cert={}", cert_path.display()),
        format!("--tls-key={}", key_path.display()),
    ]);
    config.validate().expect("valid configuration");
    let listeners = livecast_proxy::Listeners::bind(&config)
        .await
        .expect("bind");
    let port = listeners.http.local_addr().expect("address").port();
    let stop = livecast_telemetry::CancellationToken::new();
    let tls_balancer = tokio::spawn(livecast_proxy::run(config, listeners, stop.clone()));

    let clip = make_clip(stack.dir.path(), 30);
    let mut publisher = publish(&clip, &stack.rtmp_url("live/h2"));
    wait_for_segments(&stack, "h2", 2).await;
    let artifacts = workspace_dir().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    let url = format!("https://127.0.0.1:{port}/?stream=h2");
    let screenshot = artifacts.join("player-h2.png");
    let report = plays(&url, &screenshot, &[("CHROMIUM_IGNORE_CERT_ERRORS", "1")]).await;
    let protocols = report["last"]["protocols"]
        .as_object()
        .expect("protocols counted");
    let h2 = protocols.get("h2").and_then(|n| n.as_u64()).unwrap_or(0);
    // The page, hls.js, the master and media playlists and their parts and segments.
    assert!(h2 >= 10, "{report}");
    assert_eq!(
        protocols.len(),
        1,
        "a request went over another protocol: {report}"
    );
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(15), tls_balancer)
        .await
        .expect("the TLS balancer drains in time")
        .expect("task")
        .expect("the TLS balancer ran cleanly");
    publisher.kill().await.expect("stop ffmpeg");
    stack.stop().await;
}

/// One sample of `e2e/recover.mjs`: each viewer's media played so far (across restarts and
/// seeks) and fatal error.
#[derive(Debug, Clone, Default)]
struct Seen {
    page_played: f64,
    page_fatal: Option<String>,
    page_restarts: u64,
    plain_played: f64,
    plain_fatal: Option<String>,
}

/// Starts `e2e/recover.mjs` on `stream` for `seconds` and returns its samples as they come.
fn watch(
    stack: &crate::support::Running,
    stream: &str,
    seconds: u32,
) -> (
    tokio::process::Child,
    tokio::sync::mpsc::UnboundedReceiver<Seen>,
) {
    use tokio::io::AsyncBufReadExt as _;
    assert!(
        workspace_dir()
            .join("e2e/node_modules/playwright-core")
            .exists(),
        "run `npm ci --prefix e2e` first (scripts/test.sh does)"
    );
    let mut child = tokio::process::Command::new("node")
        .arg(workspace_dir().join("e2e/recover.mjs"))
        .arg(stack.url(""))
        .arg(stream)
        .arg(seconds.to_string())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node must be installed");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let text = |v: &serde_json::Value| v.as_str().map(str::to_string);
            let seen = Seen {
                page_played: v["page"]["played"].as_f64().unwrap_or(0.0),
                page_fatal: text(&v["page"]["fatal"]),
                page_restarts: v["page"]["restarts"].as_u64().unwrap_or(0),
                plain_played: v["plain"]["played"].as_f64().unwrap_or(0.0),
                plain_fatal: text(&v["plain"]["fatal"]),
            };
            if tx.send(seen).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Reads samples until `done` holds for one, within `limit`; returns it.
async fn until(
    samples: &mut tokio::sync::mpsc::UnboundedReceiver<Seen>,
    what: &str,
    limit: Duration,
    done: impl Fn(&Seen) -> bool,
) -> Seen {
    let deadline = tokio::time::Instant::now() + limit;
    let mut last = Seen::default();
    loop {
        match tokio::time::timeout_at(deadline, samples.recv()).await {
            Ok(Some(seen)) if done(&seen) => return seen,
            Ok(Some(seen)) => last = seen,
            _ => panic!("timed out waiting for {what}; last seen {last:?}"),
        }
    }
}

/// Waits for the next sample and returns the newest one there is: the viewers' state now, not
/// a sample that waited in the channel since before.
async fn latest(samples: &mut tokio::sync::mpsc::UnboundedReceiver<Seen>) -> Seen {
    let mut seen = until(samples, "a sample", Duration::from_secs(5), |_| true).await;
    while let Ok(newer) = samples.try_recv() {
        seen = newer;
    }
    seen
}

async fn wait_for_segments(stack: &crate::support::Running, stream: &str, n: usize) {
    let url = stack.url(&format!("/hls/{stream}/index.m3u8"));
    wait_until("segments", Duration::from_secs(15), || {
        let url = url.clone();
        async move {
            let r = get(&url).await;
            r.status == 200
                && parse_playlist(&String::from_utf8_lossy(&r.body))
                    .segments
                    .len()
                    >= n
        }
    })
    .await;
}

/// Drops the publisher after playback is under way and brings it back after `away`; returns
/// the seconds the viewers took from the publisher's return to play two seconds of new media,
/// and the sample at that point. When the stream `ends` meanwhile, only the player page is
/// expected to come back (plain hls.js stops at the end), and only by starting again.
async fn drop_and_return(
    stack: &crate::support::Running,
    stream: &str,
    away: Duration,
    ends: bool,
) -> (f64, Seen) {
    let clip = make_clip(stack.dir.path(), 40);
    let url = stack.rtmp_url(&format!("live/{stream}"));
    let mut publisher = publish(&clip, &url);
    wait_for_segments(stack, stream, 2).await;
    let (mut node, mut samples) = watch(stack, stream, 90);
    let samples = &mut samples;
    until(samples, "playback", Duration::from_secs(30), |s| {
        s.page_played > 2.0 && (ends || s.plain_played > 2.0)
    })
    .await;
    // Gone without a word, as a crashed encoder or a lost network goes.
    publisher.kill().await.expect("kill ffmpeg");
    tokio::time::sleep(away).await;
    let stalled = latest(samples).await;
    let mut publisher = publish(&clip, &url);
    let back = tokio::time::Instant::now();
    let resumed = until(
        samples,
        "playback to resume",
        Duration::from_secs(30),
        |s| {
            s.page_played > stalled.page_played + 2.0
                && if ends {
                    s.page_restarts > stalled.page_restarts
                } else {
                    s.plain_played > stalled.plain_played + 2.0
                }
        },
    )
    .await;
    let seconds = back.elapsed().as_secs_f64();
    publisher.kill().await.expect("stop ffmpeg");
    let _ = node.kill().await;
    (seconds, resumed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn players_resume_by_themselves_when_the_publisher_returns() {
    let stack = start_stack_with(2, &["--reconnect-grace-secs=60"]).await;
    let (seconds, seen) = drop_and_return(&stack, "comeback", Duration::from_secs(3), false).await;
    eprintln!(
        "publisher away 3 s: both viewers played 2 s of new media {seconds:.1} s after its return"
    );
    // The playlist never ended, so neither page had to start again, and nothing was fatal.
    assert_eq!(seen.page_fatal, None, "{seen:?}");
    assert_eq!(seen.plain_fatal, None, "{seen:?}");
    assert_eq!(seen.page_restarts, 0, "{seen:?}");
    // Two seconds of media take two seconds to play; the rest is the wait for the stream.
    assert!(
        seconds < 10.0,
        "resumed {seconds:.1} s after the publisher's return"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_player_page_starts_again_when_an_ended_stream_returns() {
    let stack = start_stack_with(2, &["--reconnect-grace-secs=1"]).await;
    // Away for longer than the grace: the playlist ends, and the page waits for the stream.
    let (seconds, seen) = drop_and_return(&stack, "again", Duration::from_secs(6), true).await;
    eprintln!("stream ended and started again: the player page played 2 s of it {seconds:.1} s after the publisher's return");
    assert!(seen.page_restarts >= 1, "{seen:?}");
    assert!(
        seconds < 12.0,
        "resumed {seconds:.1} s after the publisher's return"
    );
    stack.stop().await;
}

/// Runs `e2e/play.mjs` on `url`, with `env` set for it; returns whether it saw playback, and
/// what it printed (its one-line JSON report, then anything on stderr).
async fn play_page(
    url: &str,
    screenshot: &std::path::Path,
    env: &[(&str, &str)],
) -> (bool, String) {
    assert!(
        workspace_dir()
            .join("e2e/node_modules/playwright-core")
            .exists(),
        "run `npm ci --prefix e2e` first (scripts/test.sh does)"
    );
    let output = tokio::process::Command::new("node")
        .envs(env.iter().copied())
        .arg(workspace_dir().join("e2e/play.mjs"))
        .arg(url)
        .arg(screenshot)
        .output()
        .await
        .expect("node must be installed");
    (
        output.status.success(),
        format!(
            "{} {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// Plays `url` with `e2e/play.mjs` and returns its report, which shows hls.js playing at least
/// 3 s with no fatal error.
async fn plays(url: &str, screenshot: &std::path::Path, env: &[(&str, &str)]) -> serde_json::Value {
    let (played, printed) = play_page(url, screenshot, env).await;
    assert!(played, "player did not play {url}: {printed}");
    let line = printed.lines().next().unwrap_or_default();
    let report: serde_json::Value = serde_json::from_str(line.trim()).expect("json report");
    assert!(
        report["advanced"].as_f64().unwrap_or(0.0) >= 3.0,
        "{report}"
    );
    assert!(report["last"]["fatal"].is_null(), "{report}");
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hls_js_plays_a_signed_link_and_nothing_without_one() {
    let secret = "browser-playback-secret-0123456789";
    let stack = start_stack_with(2, &[&format!("--playback-secret={secret}")]).await;
    let clip = make_clip(stack.dir.path(), 40);
    let mut publisher = publish(&clip, &stack.rtmp_url("live/signed"));
    let playlist = stack.hls_dir().join("signed/index.m3u8");
    wait_until("segments", Duration::from_secs(15), || {
        let listed = std::fs::read_to_string(&playlist)
            .map(|t| parse_playlist(&t).segments.len() >= 2)
            .unwrap_or(false);
        async move { listed }
    })
    .await;
    let guard = livecast_proxy::playback::Playback::new(secret.as_bytes()).expect("secret");
    let claims =
        livecast_proxy::playback::claims_for("signed", Duration::from_secs(600), "eve", None);
    let token = guard.mint(&claims).expect("token");
    let artifacts = workspace_dir().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");

    // LL-HLS in hls.js: the playlist with the link's token, every part and blocking reload
    // with the cookie the balancer answered it with.
    let url = stack.url(&format!("/?stream=signed&token={token}"));
    let (played, report) = play_page(
        &url,
        &artifacts.join("signed.png"),
        &[("PLAY_TIMEOUT_MS", "40000")],
    )
    .await;
    assert!(played, "the signed link did not play: {report}");
    // The same page without the token: refused, nothing plays.
    let url = stack.url("/?stream=signed");
    let (played, report) = play_page(
        &url,
        &artifacts.join("unsigned.png"),
        &[("PLAY_TIMEOUT_MS", "8000")],
    )
    .await;
    assert!(!played, "played without a token: {report}");
    publisher.kill().await.expect("stop ffmpeg");
    stack.stop().await;
}
