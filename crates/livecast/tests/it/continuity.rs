//! Continuity and recording: a publisher that reconnects continues its playlist after a
//! discontinuity, a restarted ingest resumes from the volume without reusing a name, and
//! `--record` keeps the whole event as a VOD playlist; a long stream recycles retired files.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::{
    ffprobe, make_clip, make_clip_with_gop, publish, start_ingest, wait_until, Ingest,
};
use livecast_media::playlist::MediaPlaylist;

/// Publishes `clip` to live/<name> and waits for the playlist's ENDLIST after ffmpeg exits.
async fn publish_once(ingest: &Ingest, clip: &Path, hls: &Path, name: &str) -> MediaPlaylist {
    let url = format!("rtmp://{}/live/{name}", ingest.rtmp);
    let status = publish(clip, &url).wait().await.expect("ffmpeg runs");
    assert!(status.success(), "ffmpeg publish failed");
    let path = hls.join(name).join("index.m3u8");
    wait_until("ENDLIST", Duration::from_secs(10), || {
        let path = path.clone();
        async move { std::fs::read_to_string(&path).is_ok_and(|t| t.contains("#EXT-X-ENDLIST")) }
    })
    .await;
    MediaPlaylist::parse(&std::fs::read_to_string(&path).expect("playlist")).expect("parses")
}

fn session_of(uri: &str) -> &str {
    uri.split('-').next().unwrap_or_default()
}

fn video_frames(playlist: &Path) -> u64 {
    let (streams, _) = ffprobe(&playlist.display().to_string());
    streams.iter().find(|s| s.0 == "video").map_or(0, |s| s.2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_continues_the_playlist_and_a_restart_resumes_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hls = dir.path().join("hls");
    let clip = make_clip(dir.path(), 4);
    let ingest = start_ingest(&hls, &[]).await;
    let first = publish_once(&ingest, &clip, &hls, "cont").await;
    assert_eq!(first.segments.len(), 2, "{first:?}");
    assert!(first.segments.iter().all(|s| !s.discontinuity));

    // The same publisher comes back: same playlist, a discontinuity, the next numbers.
    let second = publish_once(&ingest, &clip, &hls, "cont").await;
    let flags: Vec<bool> = second.segments.iter().map(|s| s.discontinuity).collect();
    assert_eq!(flags, [false, false, true, false], "{second:?}");
    assert_eq!(second.media_sequence, 1);
    assert_eq!(second.segments[0].uri, first.segments[0].uri);
    let sessions: Vec<&str> = second.segments.iter().map(|s| session_of(&s.uri)).collect();
    assert_ne!(sessions[1], sessions[2], "a new publish has a new session");
    assert!(second.segments[3].uri.ends_with("-4.m4s"), "{second:?}");
    assert_ne!(second.segments[1].map, second.segments[2].map);
    ingest.stop().await;

    // The ingest restarts on the same volume: the media sequence goes on, no name is reused.
    let ingest = start_ingest(&hls, &[]).await;
    let third = publish_once(&ingest, &clip, &hls, "cont").await;
    ingest.stop().await;
    assert_eq!(third.segments.len(), 6, "{third:?}");
    assert!(third.segments[5].uri.ends_with("-6.m4s"), "{third:?}");
    assert_eq!(third.segments.iter().filter(|s| s.discontinuity).count(), 2);
    let names: HashSet<&str> = third.segments.iter().map(|s| s.uri.as_str()).collect();
    assert_eq!(names.len(), 6);
    for segment in &third.segments {
        assert!(
            segment.program_date_time.is_some(),
            "PROGRAM-DATE-TIME on every segment"
        );
        assert!(
            hls.join("cont").join(&segment.uri).exists(),
            "{}",
            segment.uri
        );
    }
    // Every frame of each of the three publishes is there: each session's init segment and
    // segments decode to the whole clip.
    let mut sessions: Vec<&str> = third.segments.iter().map(|s| session_of(&s.uri)).collect();
    sessions.dedup();
    assert_eq!(sessions.len(), 3);
    for session in sessions {
        let mut bytes = Vec::new();
        let mine = third
            .segments
            .iter()
            .filter(|s| session_of(&s.uri) == session);
        for (i, segment) in mine.enumerate() {
            if i == 0 {
                let init = segment.map.as_ref().expect("EXT-X-MAP");
                bytes.extend(std::fs::read(hls.join("cont").join(init)).expect("init"));
            }
            bytes.extend(std::fs::read(hls.join("cont").join(&segment.uri)).expect("segment"));
        }
        let joined = dir.path().join(format!("{session}.mp4"));
        std::fs::write(&joined, bytes).expect("write");
        assert_eq!(video_frames(&joined), 4 * 30, "session {session}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_keeps_the_whole_event_as_a_vod_playlist() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hls = dir.path().join("hls");
    let clip = make_clip(dir.path(), 8);
    let ingest = start_ingest(&hls, &["--record", "--window=3"]).await;
    let playlist = publish_once(&ingest, &clip, &hls, "event").await;
    ingest.stop().await;
    let path: PathBuf = hls.join("event/index.m3u8");
    let text = std::fs::read_to_string(&path).expect("playlist");
    assert!(text.contains("#EXT-X-PLAYLIST-TYPE:VOD\n"), "{text}");
    assert_eq!(playlist.media_sequence, 1);
    assert_eq!(
        playlist.segments.len(),
        4,
        "all of the event, not the window of 3"
    );
    assert_eq!(video_frames(&path), 8 * 30);
}

/// A live stream (plain HLS) long enough for files to leave the window: the playlist never
/// names a file that is gone, retired media files are written over by new ones instead of new files being
/// created (the same inodes come back under new names), what is served decodes whole, and the
/// hidden free files are gone once the stream ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retired_files_are_recycled_and_the_playlist_never_names_a_missing_one() {
    use std::collections::HashMap;
    use std::os::unix::fs::MetadataExt as _;

    let dir = tempfile::tempdir().expect("tempdir");
    let hls = dir.path().join("hls");
    // 1 s GOP and segments: files leave the window early in the stream.
    let clip = make_clip_with_gop(dir.path(), 16, 30);
    // Without parts, segments are written whole: those are the files recycled.
    let ingest = start_ingest(&hls, &["--window=3", "--segment-secs=1", "--part-ms=0"]).await;
    let stream = hls.join("long");
    let url = format!("rtmp://{}/live/long", ingest.rtmp);
    let mut publisher = publish(&clip, &url);
    // Name -> inode of every media file seen on the volume.
    let mut seen: HashMap<String, u64> = HashMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let ended = loop {
        if let Ok(text) = std::fs::read_to_string(stream.join("index.m3u8")) {
            let playlist = MediaPlaylist::parse(&text).expect("parses");
            let named = playlist.segments.iter().flat_map(|s| {
                std::iter::once(&s.uri)
                    .chain(s.map.iter())
                    .chain(s.parts.iter().map(|p| &p.uri))
            });
            for name in named.chain(playlist.pending_parts.iter().map(|p| &p.uri)) {
                assert!(stream.join(name).exists(), "{name} is listed but missing");
            }
            if playlist.ended {
                break playlist;
            }
        }
        for entry in std::fs::read_dir(&stream).into_iter().flatten().flatten() {
            let name = entry.file_name().into_string().expect("utf-8");
            if !name.starts_with('.') && name.ends_with(".m4s") {
                if let Ok(meta) = entry.metadata() {
                    seen.insert(name, meta.ino());
                }
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the stream did not end"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(publisher.wait().await.expect("ffmpeg").success());
    let inodes: HashSet<u64> = seen.values().copied().collect();
    assert!(
        seen.len() >= 14 && inodes.len() * 3 < seen.len() * 2,
        "{} media files used {} inodes",
        seen.len(),
        inodes.len()
    );
    // What the last playlist names decodes whole: written-over files keep nothing old.
    let expected: f64 = ended.segments.iter().map(|s| s.duration).sum::<f64>() * 30.0;
    assert_eq!(
        video_frames(&stream.join("index.m3u8")),
        expected.round() as u64
    );
    wait_until("free files deleted", Duration::from_secs(5), || {
        let stream = stream.clone();
        async move {
            std::fs::read_dir(&stream)
                .expect("dir")
                .flatten()
                .all(|e| !e.file_name().to_string_lossy().starts_with(".free."))
        }
    })
    .await;
    ingest.stop().await;
}
