//! Encoder → ingest → volume → front-ends → balancer → ffprobe: two streams at once as LL-HLS
//! on fMP4 (the default), and one as plain HLS on MPEG-TS.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use crate::support::{
    ffprobe, get, get_with, make_clip, parse_playlist, publish, start_stack_with, Fetched,
};

const CLIP_SECS: u32 = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_ll_hls_fmp4_streams_from_ffmpeg_play_through_the_proxy() {
    let seen = publish_and_check(&["alpha", "beta"], &[]).await;
    assert!(
        seen.parts >= 10 && seen.hints >= 5,
        "LL-HLS parts and preload hints were listed while live: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plain_hls_ts_stream_from_ffmpeg_plays_through_the_proxy() {
    let seen = publish_and_check(&["gamma"], &["--container=ts", "--part-ms=0"]).await;
    assert_eq!(seen.parts + seen.hints, 0, "no LL-HLS without parts");
}

/// What the LL-HLS side of the playlists showed while live.
#[derive(Debug, Default)]
struct Seen {
    parts: usize,
    hints: usize,
}

/// Checks a fetched segment, part or init segment by its container.
fn check_media(key: &str, fetched: &Fetched) {
    assert_eq!(fetched.status, 200, "{key}");
    check_body(key, fetched);
}

fn check_body(key: &str, fetched: &Fetched) {
    let body = &fetched.body;
    if key.ends_with(".ts") {
        assert_eq!(fetched.content_type, "video/mp2t", "{key}");
        assert!(!body.is_empty() && body.len().is_multiple_of(188), "{key}");
        assert_eq!(body[0], 0x47, "{key}");
    } else if key.ends_with(".m4s") {
        assert_eq!(fetched.content_type, "video/iso.segment", "{key}");
        assert_eq!(body.get(4..8), Some(&b"moof"[..]), "{key}");
    } else {
        assert!(key.ends_with("-init.mp4"), "{key}");
        assert_eq!(fetched.content_type, "video/mp4", "{key}");
        assert_eq!(body.get(4..8), Some(&b"ftyp"[..]), "{key}");
    }
}

async fn publish_and_check(streams: &[&'static str], flags: &[&str]) -> Seen {
    let stack = start_stack_with(2, flags).await;
    let clip = make_clip(stack.dir.path(), CLIP_SECS);
    let mut seen = Seen::default();
    let mut publishers: Vec<_> = streams
        .iter()
        .map(|name| publish(&clip, &stack.rtmp_url(&format!("live/{name}"))))
        .collect();

    // Watch the playlists through the proxy while the publish runs, as a player would.
    let mut target_durations: HashMap<&str, BTreeSet<u64>> = HashMap::new();
    let mut fetched: HashSet<String> = HashSet::new();
    let mut listed_live: HashSet<String> = HashSet::new();
    let mut described: HashMap<String, serde_json::Value> = HashMap::new();
    let mut finals = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(CLIP_SECS as u64 + 30);
    while finals.len() < streams.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "streams did not end in time"
        );
        let api = get(&stack.url("/api/streams")).await;
        let api: serde_json::Value = serde_json::from_slice(&api.body).expect("stream list json");
        for s in api["streams"].as_array().expect("streams array") {
            let name = s["name"].as_str().unwrap_or_default().to_string();
            if !s["video"].is_null() {
                described.insert(name.clone(), s.clone());
            }
            listed_live.insert(name);
        }
        for &name in streams {
            let response = get(&stack.url(&format!("/hls/{name}/index.m3u8"))).await;
            if response.status == 404 {
                continue;
            }
            assert_eq!(response.status, 200);
            assert_eq!(response.content_type, "application/vnd.apple.mpegurl");
            let playlist =
                parse_playlist(std::str::from_utf8(&response.body).expect("utf-8 playlist"));
            target_durations
                .entry(name)
                .or_default()
                .insert(playlist.target_duration.expect("TARGETDURATION"));
            if !playlist.ended {
                seen.parts += playlist.parts.len();
                seen.hints += usize::from(playlist.preload_hint.is_some());
            }
            let uris = playlist.segments.iter().map(|(_, uri)| uri);
            for uri in uris.chain(&playlist.map) {
                let key = format!("{name}/{uri}");
                if fetched.insert(key.clone()) {
                    check_media(&key, &get(&stack.url(&format!("/hls/{key}"))).await);
                }
            }
            // Parts are byte ranges of their segment, fetched as a player does: each is a
            // whole fragment (moof or TS packets) of exactly the listed length, also while
            // its segment is still being written.
            for (uri, range) in &playlist.parts {
                let (length, offset) = range.expect("parts are byte ranges");
                let key = format!("{name}/{uri}@{offset}");
                if fetched.insert(key.clone()) {
                    let range = format!("{offset}-{}", offset + length - 1);
                    let url = stack.url(&format!("/hls/{name}/{uri}"));
                    let part = get_with(&url, Some(&range)).await;
                    assert_eq!(part.status, 206, "{key}");
                    assert_eq!(part.body.len() as u64, length, "{key}");
                    check_body(uri, &part);
                }
            }
            if playlist.ended {
                finals.insert(name, playlist);
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Operators do: the front-ends' admin port lists each publisher's address.
    let operator = get(&format!("http://{}/api/streams", stack.addrs.web_admins[0])).await;
    let operator: serde_json::Value = serde_json::from_slice(&operator.body).expect("json");
    let publishers_seen: Vec<&str> = operator["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .filter_map(|s| s["publisher"].as_str())
        .collect();
    for &name in streams {
        let info = std::fs::read_to_string(stack.hls_dir().join(name).join(".publish"))
            .expect("the ingest's publish facts");
        assert!(info.contains("publisher=127.0.0.1:"), "{info}");
    }
    assert!(
        publishers_seen.iter().all(|p| p.starts_with("127.0.0.1:")),
        "{operator}"
    );
    for publisher in &mut publishers {
        assert!(
            publisher.wait().await.expect("ffmpeg exits").success(),
            "ffmpeg publish failed"
        );
    }

    assert_eq!(
        listed_live,
        streams
            .iter()
            .map(|s| s.to_string())
            .collect::<HashSet<_>>()
    );
    for &name in streams {
        // What the ingest measured reaches the stream list (and the operator page).
        let d = &described[name];
        assert_eq!(d["video"]["codec"], "h264", "{d}");
        assert_eq!(
            (d["video"]["width"].as_u64(), d["video"]["height"].as_u64()),
            (Some(640), Some(360)),
            "{d}"
        );
        let fps = d["video"]["frame_rate"].as_f64().expect("frame rate");
        assert!((29.0..=31.0).contains(&fps), "{d}");
        let keyframes = d["video"]["keyframe_interval_secs"]
            .as_f64()
            .expect("keyframe interval");
        assert!((1.9..=2.1).contains(&keyframes), "{d}");
        assert!(
            d["keyframe_warning"].is_null(),
            "a 2 s GOP suits 2 s segments: {d}"
        );
        assert_eq!(d["audio"], "aac");
        assert!(
            d.get("publisher").is_none(),
            "viewers never see who publishes: {d}"
        );
        assert!(
            d["uptime_secs"]
                .as_u64()
                .is_some_and(|t| t <= u64::from(CLIP_SECS) + 5),
            "{d}"
        );
        assert_eq!(
            target_durations[name],
            BTreeSet::from([2]),
            "TARGETDURATION of {name} never changes"
        );
        let playlist = &finals[name];
        assert_eq!(
            playlist.segments.len(),
            (CLIP_SECS / 2) as usize,
            "{name}: {playlist:?}"
        );
        let (last, full) = playlist.segments.split_last().expect("segments");
        for (duration, uri) in full {
            assert!(
                (1.9..=2.1).contains(duration),
                "{name}/{uri} lasts {duration}"
            );
        }
        assert!(
            (1.5..=2.5).contains(&last.0),
            "last segment lasts {}",
            last.0
        );

        let (streams, duration) = ffprobe(&stack.url(&format!("/hls/{name}/index.m3u8")));
        let video = streams
            .iter()
            .find(|s| s.0 == "video")
            .expect("a video stream");
        let audio = streams
            .iter()
            .find(|s| s.0 == "audio")
            .expect("an audio stream");
        assert_eq!(video.1, "h264");
        assert_eq!(
            video.2,
            u64::from(CLIP_SECS * 30),
            "every video frame decodes"
        );
        assert_eq!(audio.1, "aac");
        let expected_audio = f64::from(CLIP_SECS) * 44100.0 / 1024.0;
        assert!(
            (audio.2 as f64 - expected_audio).abs() < 5.0,
            "audio frames {}",
            audio.2
        );
        assert!(
            (duration - f64::from(CLIP_SECS)).abs() < 0.3,
            "duration {duration}"
        );
    }

    // Every request went through a front-end's access log.
    let logs = std::fs::read_dir(stack.dir.path().join("logs"))
        .expect("log dir")
        .map(|e| std::fs::read_to_string(e.expect("entry").path()).expect("log"))
        .collect::<String>();
    let first: serde_json::Value =
        serde_json::from_str(logs.lines().next().expect("a log line")).expect("json line");
    for field in [
        "@timestamp",
        "client.ip",
        "http.request.method",
        "url.path",
        "http.response.status_code",
    ] {
        assert!(!first[field].is_null(), "access log has {field}");
    }
    assert!(logs.contains(&format!("\"livecast.stream\":\"{}\"", streams[0])));
    stack.stop().await;
    seen
}
