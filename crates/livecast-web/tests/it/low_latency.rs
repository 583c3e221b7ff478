//! The server side of Low-Latency HLS against playlists the test writes into the volume.

use std::time::{Duration, Instant};

use livecast_media::playlist::{MediaPlaylist, Part, PlaylistSegment, ServerControl};

use crate::{raw, start, status};

/// A LL-HLS playlist with `segments` complete segments and `parts` parts of the next one.
fn playlist(segments: u64, parts: usize) -> String {
    let mut pl = MediaPlaylist::new(2, 0);
    pl.part_target = Some(0.5);
    pl.server_control = Some(ServerControl {
        can_block_reload: true,
        can_skip_until: Some(6.0),
        part_hold_back: Some(1.5),
        hold_back: None,
    });
    for i in 0..segments {
        pl.push(PlaylistSegment {
            uri: format!("s{i}.m4s"),
            duration: 2.0,
            parts: (0..4)
                .map(|p| Part {
                    uri: format!("s{i}.{p}.m4s"),
                    duration: 0.5,
                    independent: p == 0,
                })
                .collect(),
            ..Default::default()
        });
    }
    pl.pending_parts = (0..parts)
        .map(|p| Part {
            uri: format!("s{segments}.{p}.m4s"),
            duration: 0.5,
            independent: p == 0,
        })
        .collect();
    pl.preload_hint = Some(format!("s{segments}.{parts}.m4s"));
    pl.render()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_reload_returns_as_soon_as_the_part_is_written() {
    let web = start().await;
    web.publish("cam/index.m3u8", playlist(4, 1).as_bytes());
    // Prime the front-end's view of the stream.
    assert_eq!(
        status(&raw(web.addr, "/hls/cam/index.m3u8", "").await),
        "200"
    );

    let addr = web.addr;
    let waiter = tokio::spawn(async move {
        let response = raw(addr, "/hls/cam/index.m3u8?_HLS_msn=4&_HLS_part=1", "").await;
        (Instant::now(), response)
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!waiter.is_finished(), "the request must wait for the part");
    let written = Instant::now();
    web.publish("cam/index.m3u8", playlist(4, 2).as_bytes());
    let (answered, response) = waiter.await.expect("join");
    let lag = answered.duration_since(written);
    assert_eq!(status(&response), "200", "{response}");
    assert!(response.contains("URI=\"s4.1.m4s\""), "{response}");
    assert!(crate::header(&response, "cache-control") == Some("no-store"));
    // Woken by the file-system event, not by a poll.
    assert!(
        lag < Duration::from_millis(100),
        "answered {lag:?} after the write"
    );

    // Two segments past the last complete one is allowed to wait; three is a client error.
    let started = Instant::now();
    let too_far = raw(web.addr, "/hls/cam/index.m3u8?_HLS_msn=7", "").await;
    assert_eq!(status(&too_far), "400");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "400 comes at once"
    );
    assert_eq!(
        status(&raw(web.addr, "/hls/cam/index.m3u8?_HLS_part=1", "").await),
        "400"
    );
    assert_eq!(
        status(&raw(web.addr, "/hls/cam/index.m3u8?_HLS_msn=abc", "").await),
        "400"
    );
    // An already available segment answers at once.
    let started = Instant::now();
    assert_eq!(
        status(&raw(web.addr, "/hls/cam/index.m3u8?_HLS_msn=2", "").await),
        "200"
    );
    assert!(started.elapsed() < Duration::from_millis(500));
    web.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_reload_is_bounded() {
    let web = start().await;
    web.publish("cam/index.m3u8", playlist(1, 0).as_bytes());
    let started = Instant::now();
    // Nothing more is written: after three target durations (6 s) the answer is 503.
    let response = raw(web.addr, "/hls/cam/index.m3u8?_HLS_msn=2", "").await;
    assert_eq!(status(&response), "503");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(6) && waited < Duration::from_secs(8),
        "{waited:?}"
    );
    web.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preload_hinted_part_waits_instead_of_404() {
    let web = start().await;
    web.publish("cam/index.m3u8", playlist(3, 2).as_bytes());
    assert_eq!(
        status(&raw(web.addr, "/hls/cam/index.m3u8", "").await),
        "200"
    );
    // A part nobody announced is a plain 404.
    assert_eq!(status(&raw(web.addr, "/hls/cam/s9.0.m4s", "").await), "404");
    let addr = web.addr;
    let waiter = tokio::spawn(async move { raw(addr, "/hls/cam/s3.2.m4s", "").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished());
    web.publish("cam/s3.2.m4s", b"part-bytes");
    let response = tokio::time::timeout(Duration::from_secs(2), waiter)
        .await
        .expect("served")
        .expect("join");
    assert_eq!(status(&response), "200");
    assert!(response.ends_with("part-bytes"));
    assert_eq!(
        crate::header(&response, "content-type"),
        Some("video/iso.segment")
    );
    web.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_updates_skip_old_segments() {
    let web = start().await;
    web.publish("cam/index.m3u8", playlist(8, 0).as_bytes());
    let full = raw(web.addr, "/hls/cam/index.m3u8", "").await;
    assert!(full.contains("s0.m4s") && !full.contains("EXT-X-SKIP"));
    let delta = raw(web.addr, "/hls/cam/index.m3u8?_HLS_skip=YES", "").await;
    assert_eq!(status(&delta), "200");
    assert!(
        delta.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=5\n"),
        "{delta}"
    );
    assert!(!delta.contains("\ns0.m4s\n") && delta.contains("\ns7.m4s\n"));
    assert!(delta.contains("#EXT-X-VERSION:9"));
    web.stop().await;
}
