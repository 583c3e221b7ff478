//! Renditions with real ffmpeg: a publisher-side ladder (one encoder publishing `talk@360p`
//! and `talk@180p`), the server-side ladder (`--ladder`) from one 720p publish, its child
//! killed and back, and `--ladder` without an ffmpeg. Each checks the master playlist through
//! the balancer the way a validator would: CODECS and RESOLUTION against what ffprobe decodes,
//! BANDWIDTH against the peak rate of the listed segments, aligned sequence numbers and
//! durations, rendition reports.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use livecast_media::master::MasterPlaylist;
use livecast_media::playlist::MediaPlaylist;

use crate::support::{encode_clip, get, publish, start_stack_with, wait_until, Running};

/// Width and height of the first video stream ffprobe decodes at `url`, and its frame count.
fn probe_video(url: &str) -> (u32, u32, u64) {
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-of",
            "json",
        ])
        .args(["-show_entries", "stream=width,height,nb_read_frames"])
        // A live playlist never ends: read the first 60 video frames.
        .args(["-read_intervals", "%+#60"])
        .arg(url)
        .output()
        .expect("ffprobe must be installed");
    assert!(
        out.status.success(),
        "ffprobe {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ffprobe json");
    let stream = &json["streams"][0];
    let frames = stream["nb_read_frames"]
        .as_str()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    (
        stream["width"].as_u64().unwrap_or(0) as u32,
        stream["height"].as_u64().unwrap_or(0) as u32,
        frames,
    )
}

async fn master(stack: &Running, stream: &str) -> Option<MasterPlaylist> {
    let fetched = get(&stack.url(&format!("/hls/{stream}/master.m3u8"))).await;
    if fetched.status != 200 {
        return None;
    }
    assert_eq!(fetched.content_type, "application/vnd.apple.mpegurl");
    MasterPlaylist::parse(std::str::from_utf8(&fetched.body).ok()?).ok()
}

async fn media(stack: &Running, path: &str) -> Option<MediaPlaylist> {
    let fetched = get(&stack.url(path)).await;
    (fetched.status == 200)
        .then(|| MediaPlaylist::parse(std::str::from_utf8(&fetched.body).ok()?).ok())
        .flatten()
}

/// Each variant's playlist URL path (`/hls/<stream>/<uri>`).
fn variant_path(stream: &str, uri: &str) -> String {
    format!("/hls/{stream}/{uri}")
}

/// Media sequence number → EXTINF of the complete, non-gap segments listed.
fn durations(playlist: &MediaPlaylist) -> BTreeMap<u64, f64> {
    playlist
        .segments
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.gap)
        .map(|(i, s)| (playlist.media_sequence + i as u64, s.duration))
        .collect()
}

/// Waits until every variant of `stream`'s master lists at least `segments` segments, and
/// checks what a validator checks: the same TARGETDURATION, segments with one number lasting
/// as long in every variant (a variant's first segment may be shorter: it joined late), a
/// rendition report for every other variant, BANDWIDTH within 10 % of the peak rate of the
/// listed segments at least half the target long.
async fn check_aligned(
    stack: &Running,
    stream: &str,
    variants: usize,
    segments: usize,
) -> MasterPlaylist {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    let master = 'wait: loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "every variant of {stream} lists {segments} segments in time"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Some(master) = master(stack, stream)
            .await
            .filter(|m| m.variants.len() == variants)
        else {
            continue;
        };
        for variant in &master.variants {
            match media(stack, &variant_path(stream, &variant.uri)).await {
                Some(p) if p.segments.len() >= segments => {}
                _ => continue 'wait,
            }
        }
        break master;
    };
    assert!(master.independent_segments);
    let mut listed = Vec::new();
    for variant in &master.variants {
        let path = variant_path(stream, &variant.uri);
        let playlist = media(stack, &path).await.expect("variant playlist");
        let others = master.variants.len() - 1;
        assert_eq!(
            playlist.rendition_reports.len(),
            others,
            "{path}: a report per other variant"
        );
        for report in &playlist.rendition_reports {
            let base = format!("http://x{path}");
            let resolved = join(&base, &report.uri);
            assert!(
                master
                    .variants
                    .iter()
                    .any(|v| resolved.ends_with(&format!("/hls/{stream}/{}", v.uri))),
                "{path}: report {} names a variant",
                report.uri
            );
        }
        // BANDWIDTH against the listed segments' peak rate.
        let target = playlist.target_duration as f64;
        let mut peak: f64 = 0.0;
        for segment in playlist
            .segments
            .iter()
            .filter(|s| !s.gap && s.duration >= target / 2.0)
        {
            let url = format!(
                "{}/{}",
                path.rsplit_once('/').expect("a path").0,
                segment.uri
            );
            let fetched = get(&stack.url(&url)).await;
            assert_eq!(fetched.status, 200, "{url}");
            peak = peak.max(fetched.body.len() as f64 * 8.0 / segment.duration);
        }
        let bandwidth = variant.bandwidth as f64;
        assert!(
            (bandwidth - peak).abs() <= 0.10 * peak,
            "{path}: BANDWIDTH {bandwidth} against a measured peak of {peak:.0}"
        );
        listed.push((path, playlist));
    }
    let (first_path, first) = &listed[0];
    for (path, playlist) in &listed[1..] {
        assert_eq!(playlist.target_duration, first.target_duration, "{path}");
        let (a, b) = (durations(first), durations(playlist));
        let common: Vec<u64> = a.keys().filter(|n| b.contains_key(n)).copied().collect();
        assert!(
            common.len() >= segments - 1,
            "{first_path} {a:?} and {path} {b:?} share numbers"
        );
        // Skip the first common number: one of the two may have started inside it.
        for n in &common[1..] {
            assert!(
                (a[n] - b[n]).abs() < 0.002,
                "segment {n} lasts {} in {first_path} and {} in {path}",
                a[n],
                b[n]
            );
        }
    }
    master
}

/// Resolves `uri` against `base` the way a player does (`..` included).
fn join(base: &str, uri: &str) -> String {
    let mut parts: Vec<&str> = base.rsplit_once('/').expect("a url").0.split('/').collect();
    for segment in uri.split('/') {
        match segment {
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    parts.join("/")
}

async fn metric(stack: &Running, name: &str) -> f64 {
    let text = get(&format!("http://{}/metrics", stack.addrs.ingest_admin)).await;
    String::from_utf8_lossy(&text.body)
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// One encoder publishing `stream` as several renditions (name, size, video rate) for
/// `seconds`, with keyframes at the same frames: what OBS with several outputs, or an ffmpeg
/// ladder, sends.
fn publish_ladder(
    stack: &Running,
    stream: &str,
    outputs: &[(&str, &str, &str)],
    seconds: u32,
) -> tokio::process::Child {
    let mut command = tokio::process::Command::new("ffmpeg");
    command
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-re",
            "-f",
            "lavfi",
            "-i",
        ])
        .arg(format!("testsrc2=size=640x360:rate=30:duration={seconds}"))
        .args(["-f", "lavfi", "-i"])
        .arg(format!(
            "sine=frequency=440:sample_rate=44100:duration={seconds}"
        ));
    for (name, size, rate) in outputs {
        command
            .args(["-map", "0:v", "-map", "1:a", "-s", size, "-c:v", "libx264"])
            .args(["-preset", "veryfast", "-g", "30", "-keyint_min", "30"])
            .args([
                "-sc_threshold",
                "0",
                "-b:v",
                rate,
                "-maxrate",
                rate,
                "-bufsize",
                rate,
            ])
            .args([
                "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k", "-f", "flv",
            ])
            .arg(stack.rtmp_url(&format!("live/{stream}@{name}")));
    }
    command
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg must be installed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hls_js_switches_down_to_the_low_rendition_when_throttled_and_keeps_playing() {
    let e2e = crate::support::workspace_dir().join("e2e");
    assert!(
        e2e.join("node_modules/playwright-core").exists(),
        "run `npm ci --prefix e2e` first (scripts/test.sh does)"
    );
    let stack = start_stack_with(1, &[]).await;
    let outputs = [("360p", "640x360", "1500k"), ("180p", "320x180", "150k")];
    let _encoder = publish_ladder(&stack, "abr", &outputs, 90);
    check_aligned(&stack, "abr", 2, 2).await;
    let output = tokio::process::Command::new("node")
        .env("THROTTLE_KBPS", "600")
        .arg(e2e.join("abr.mjs"))
        .arg(stack.url("/?stream=abr"))
        .output()
        .await
        .expect("node must be installed");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "hls.js did not switch down and keep playing: {report} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(report.trim()).expect("json report");
    let menu: Vec<&str> = report["menu"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m.as_str())
        .collect();
    assert_eq!(menu.len(), 3, "Auto and one entry per rendition: {menu:?}");
    assert!(menu[0].starts_with("Auto"), "{menu:?}");
    assert!(menu.iter().any(|m| m.starts_with("180p")), "{menu:?}");
    // The switch time is a figure for the notes, not a pass mark.
    println!(
        "switched down {} ms after the throttle",
        report["switchedAfterMs"]
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_publisher_side_ladder_makes_a_master_with_aligned_variants() {
    let stack = start_stack_with(1, &["--segment-secs=1"]).await;
    let outputs = [("360p", "640x360", "700k"), ("180p", "320x180", "200k")];
    let mut encoder = publish_ladder(&stack, "talk", &outputs, 14);

    let master = check_aligned(&stack, "talk", 2, 4).await;
    let uris: Vec<&str> = master.variants.iter().map(|v| v.uri.as_str()).collect();
    assert_eq!(
        uris,
        ["360p/index.m3u8", "180p/index.m3u8"],
        "highest first"
    );
    // The stream list shows the stream once, with its master and each variant's rates.
    let api: serde_json::Value =
        serde_json::from_slice(&get(&stack.url("/api/streams")).await.body).unwrap();
    let streams = api["streams"].as_array().unwrap();
    assert_eq!(streams.len(), 1, "{api}");
    assert_eq!(streams[0]["playlist"], "/hls/talk/master.m3u8");
    let renditions = streams[0]["renditions"].as_array().unwrap();
    assert_eq!(renditions.len(), 2);
    assert!(
        renditions
            .iter()
            .all(|r| r["bandwidth_bps"].as_u64().unwrap_or(0) > 0),
        "{api}"
    );
    // A rendition is served only under its stream's URL.
    assert_eq!(
        get(&stack.url("/hls/talk@360p/index.m3u8")).await.status,
        404
    );
    assert_eq!(
        get(&stack.url("/hls/talk/36%2F0p/index.m3u8")).await.status,
        404
    );
    for (variant, (_, size, _)) in master.variants.iter().zip(outputs) {
        let (w, h) = size.split_once('x').unwrap();
        let expected = (w.parse().unwrap(), h.parse().unwrap());
        assert_eq!(variant.resolution, Some(expected), "{}", variant.uri);
        let codecs = variant.codecs.as_deref().unwrap_or_default();
        assert!(
            codecs.starts_with("avc1.64") && codecs.ends_with(",mp4a.40.2"),
            "{codecs}"
        );
        assert!(variant
            .average_bandwidth
            .is_some_and(|a| a <= variant.bandwidth));
        assert!(
            variant.frame_rate.is_some_and(|f| (f - 30.0).abs() < 1.0),
            "{:?}",
            variant.frame_rate
        );
        let (w, h, frames) = probe_video(&stack.url(&variant_path("talk", &variant.uri)));
        assert_eq!(
            (w, h),
            expected,
            "ffprobe decodes {} at its size",
            variant.uri
        );
        assert!(frames > 30, "{frames} frames of {}", variant.uri);
    }
    let _ = encoder.wait().await;
    stack.stop().await;
}

/// An encoder that restarts (its timestamps begin at 0 again) within the reconnect grace: every
/// rendition continues after a discontinuity at once, and their numbers still agree. The
/// group's segment starts from before the restart belong to another timeline and must not
/// hold a rendition back until its new timestamps reach the old ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_encoder_continues_every_rendition_at_once() {
    let stack = start_stack_with(1, &["--segment-secs=1", "--reconnect-grace-secs=30"]).await;
    let outputs = [("360p", "640x360", "700k"), ("180p", "320x180", "200k")];
    let mut first = publish_ladder(&stack, "again", &outputs, 12);
    let _ = first.wait().await;
    let restarted = tokio::time::Instant::now();
    let _second = publish_ladder(&stack, "again", &outputs, 20);
    let resumed = |p: &MediaPlaylist| {
        p.segments
            .iter()
            .rposition(|s| s.discontinuity)
            .is_some_and(|at| p.segments.len() >= at + 3)
    };
    wait_until(
        "both renditions list two segments after the restart",
        Duration::from_secs(20),
        || async {
            let mut all = true;
            for name in ["360p", "180p"] {
                let path = format!("/hls/again/{name}/index.m3u8");
                all &= media(&stack, &path).await.is_some_and(|p| resumed(&p));
            }
            all
        },
    )
    .await;
    let took = restarted.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "the renditions came back {took:?} after the encoder (its first run lasted 12 s)"
    );
    let high = media(&stack, "/hls/again/360p/index.m3u8")
        .await
        .expect("360p");
    let low = media(&stack, "/hls/again/180p/index.m3u8")
        .await
        .expect("180p");
    let (a, b) = (high.next_sequence() as i64, low.next_sequence() as i64);
    assert!((a - b).abs() <= 1, "360p next {a}, 180p next {b}");
    stack.stop().await;
}

/// A 1280×720 clip of `seconds` with a keyframe every second.
fn clip_720p(dir: &Path, seconds: u32) -> std::path::PathBuf {
    let path = dir.join("clip-720p.flv");
    encode_clip(
        Path::new("ffmpeg"),
        &path,
        seconds,
        &[
            "-s",
            "1280x720",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "30",
            "-keyint_min",
            "30",
            "-sc_threshold",
            "0",
            "-b:v",
            "2500k",
        ],
    );
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_server_side_ladder_transcodes_one_publish_and_comes_back_when_killed() {
    // Three-second segments of one-second GOPs: a restarted transcoder joins at a keyframe that
    // starts a segment one time in three, so segments cut by length would not line up.
    let stack = start_stack_with(
        1,
        &["--ladder", "--reconnect-grace-secs=20", "--segment-secs=3"],
    )
    .await;
    let clip = clip_720p(stack.dir.path(), 40);
    let _publisher = publish(&clip, &stack.rtmp_url("live/hall"));

    let master = check_aligned(&stack, "hall", 3, 3).await;
    let listed: Vec<(&str, Option<(u32, u32)>)> = master
        .variants
        .iter()
        .map(|v| (v.uri.as_str(), v.resolution))
        .collect();
    assert_eq!(
        listed,
        [
            ("index.m3u8", Some((1280, 720))),
            ("480p/index.m3u8", Some((854, 480))),
            ("240p/index.m3u8", Some((426, 240))),
        ]
    );
    for variant in &master.variants[1..] {
        let (w, h, frames) = probe_video(&stack.url(&variant_path("hall", &variant.uri)));
        assert_eq!(
            Some((w, h)),
            variant.resolution,
            "ffprobe decodes {}",
            variant.uri
        );
        assert!(frames > 30);
        let codecs = variant.codecs.as_deref().unwrap_or_default();
        assert!(
            codecs.starts_with("avc1.4d") && codecs.ends_with(",mp4a.40.2"),
            "the ladder encodes Main profile: {codecs}"
        );
        assert!(
            variant.frame_rate.is_some_and(|f| (f - 30.0).abs() < 1.0),
            "the source's frame rate, no frames made up: {:?}",
            variant.frame_rate
        );
    }
    assert_eq!(
        metric(&stack, "livecast_ingest_ladder_processes").await,
        1.0
    );
    assert!(metric(&stack, "livecast_ingest_ladder_cpu_seconds_total").await > 0.0);

    // Kill the transcoder: it is started again, and its variants go on after a discontinuity
    // with the numbers the source has reached.
    let pid = ladder_pid("hall");
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    wait_until("the ladder restarts", Duration::from_secs(20), || async {
        metric(&stack, "livecast_ingest_ladder_restarts_total").await >= 1.0
    })
    .await;
    assert_ne!(ladder_pid("hall"), pid);
    wait_until(
        "the 240p variant resumes after a discontinuity",
        Duration::from_secs(30),
        || async {
            let Some(p) = media(&stack, "/hls/hall/240p/index.m3u8").await else {
                return false;
            };
            p.segments
                .iter()
                .position(|s| s.discontinuity)
                .is_some_and(|at| p.segments.len() > at + 1)
        },
    )
    .await;
    // After the restart, the 240p variant's segments have the source's numbers and lengths
    // again (its first one may be shorter: it joined inside it).
    wait_until(
        "two segments after the restart",
        Duration::from_secs(30),
        || async {
            let p = media(&stack, "/hls/hall/240p/index.m3u8").await.unwrap();
            let at = p
                .segments
                .iter()
                .rposition(|s| s.discontinuity)
                .unwrap_or(0);
            p.segments.len() >= at + 3
        },
    )
    .await;
    // The transcoder is behind its source: read it first, so the source lists what it does.
    let low = media(&stack, "/hls/hall/240p/index.m3u8").await.unwrap();
    let source = durations(&media(&stack, "/hls/hall/index.m3u8").await.unwrap());
    let resumed =
        low.media_sequence + low.segments.iter().rposition(|s| s.discontinuity).unwrap() as u64;
    let low = durations(&low);
    for n in (resumed + 1)..(resumed + 3) {
        let (a, b) = (source.get(&n), low.get(&n));
        assert!(
            a.zip(b).is_some_and(|(a, b)| (a - b).abs() < 0.002),
            "segment {n} after the restart: source {a:?}, 240p {b:?}\n{source:?}\n{low:?}"
        );
    }
    assert!(metric(&stack, "livecast_ingest_ladder_failures_total").await >= 1.0);
    stack.stop().await;
}

/// The pid of the ladder ffmpeg transcoding `stream`.
fn ladder_pid(stream: &str) -> u32 {
    let out = std::process::Command::new("pgrep")
        .args(["-f", &format!("live/{stream}@240p\\?ladder=")])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ladder process for {stream}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_ffmpeg_the_ladder_leaves_the_source_rendition_and_says_why() {
    let stack = start_stack_with(1, &["--ladder", "--ladder-ffmpeg=/nonexistent/ffmpeg"]).await;
    let clip = crate::support::make_clip(stack.dir.path(), 8);
    let mut publisher = publish(&clip, &stack.rtmp_url("live/solo"));
    wait_until("the source plays", Duration::from_secs(20), || async {
        media(&stack, "/hls/solo/index.m3u8")
            .await
            .is_some_and(|p| p.segments.len() >= 2)
    })
    .await;
    assert!(
        metric(
            &stack,
            "livecast_ingest_ladder_failures_total{reason=\"spawn\"}"
        )
        .await
            >= 1.0
    );
    assert_eq!(
        metric(&stack, "livecast_ingest_ladder_processes").await,
        0.0
    );
    assert!(
        master(&stack, "solo").await.is_none(),
        "no master without renditions"
    );
    let _ = publisher.wait().await;
    stack.stop().await;
}
