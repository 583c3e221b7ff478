//! The player page in a real browser: headless Debian Chromium, driven by playwright-core,
//! plays a live stream with the self-hosted hls.js through the balancer.

use std::time::Duration;

use crate::support::{
    get, make_clip, parse_playlist, publish, start_stack, wait_until, workspace_dir,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hls_js_in_chromium_plays_through_the_proxy() {
    let driver = workspace_dir().join("e2e/play.mjs");
    assert!(
        workspace_dir()
            .join("e2e/node_modules/playwright-core")
            .exists(),
        "run `npm ci --prefix e2e` first (scripts/test.sh does)"
    );
    let stack = start_stack(2).await;
    let clip = make_clip(stack.dir.path(), 30);
    let mut publisher = publish(&clip, &stack.rtmp_url("live/browser"));
    let playlist_url = stack.url("/hls/browser/index.m3u8");
    wait_until("two segments", Duration::from_secs(15), || {
        let url = playlist_url.clone();
        async move {
            let r = get(&url).await;
            r.status == 200
                && parse_playlist(&String::from_utf8_lossy(&r.body))
                    .segments
                    .len()
                    >= 2
        }
    })
    .await;

    let artifacts = workspace_dir().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    let screenshot = artifacts.join("player.png");
    let _ = std::fs::remove_file(&screenshot);
    let output = tokio::process::Command::new("node")
        .env("EXPECT_VIEWERS", "1")
        .arg(&driver)
        .arg(stack.url("/?stream=browser"))
        .arg(&screenshot)
        .output()
        .await
        .expect("node must be installed");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "player did not play: {report} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(report.trim()).expect("json report");
    assert!(
        report["advanced"].as_f64().unwrap_or(0.0) >= 3.0,
        "{report}"
    );
    assert!(report["last"]["fatal"].is_null(), "{report}");
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
