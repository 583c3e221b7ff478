//! The server side of Low-Latency HLS against playlists the test writes into the volume.

use std::time::{Duration, Instant};

use livecast_media::playlist::{
    ByteRange, MediaPlaylist, Part, PlaylistSegment, PreloadHint, ServerControl,
};

use crate::{raw, start, status};

/// Bytes of every part in the test playlists.
const PART_LEN: u64 = 10;

/// Part `p` of segment `segment` as a byte range of the segment's file, as the ingest lists it.
fn part(segment: u64, p: u64) -> Part {
    Part {
        uri: format!("s{segment}.m4s"),
        duration: 0.5,
        independent: p == 0,
        byterange: Some(ByteRange {
            length: PART_LEN,
            offset: p * PART_LEN,
        }),
    }
}

/// The bytes of part `p` of segment `segment`.
fn part_bytes(segment: u64, p: u64) -> String {
    format!("s{segment}p{p}------")
}

/// A LL-HLS playlist with `segments` complete segments and `parts` parts of the next one.
fn playlist(segments: u64, parts: u64) -> String {
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
            parts: (0..4).map(|p| part(i, p)).collect(),
            ..Default::default()
        });
    }
    pl.pending_parts = (0..parts).map(|p| part(segments, p)).collect();
    pl.preload_hint = Some(PreloadHint {
        uri: format!("s{segments}.m4s"),
        byterange_start: Some(parts * PART_LEN),
    });
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
    assert!(
        response.contains("URI=\"s4.m4s\",BYTERANGE=\"10@10\""),
        "{response}"
    );
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

/// Appends to a segment file in place, as the ingest does.
fn append(web: &crate::Web, rel: &str, data: &str) {
    use std::io::Write as _;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(web.hls().join(rel))
        .and_then(|mut f| f.write_all(data.as_bytes()))
        .expect("append");
}

fn range(from: &str) -> String {
    format!("Range: bytes={from}\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_segment_being_built_is_served_as_far_as_its_parts_are_listed() {
    let web = start().await;
    append(&web, "cam/s3.m4s", &(part_bytes(3, 0) + &part_bytes(3, 1)));
    // Half of the next part is on disk already, not yet listed.
    append(&web, "cam/s3.m4s", &part_bytes(3, 2)[..5]);
    web.publish("cam/index.m3u8", playlist(3, 2).as_bytes());
    let get = |from: Option<&str>| {
        let headers = from.map(range).unwrap_or_default();
        async move { raw(web.addr, "/hls/cam/s3.m4s", &headers).await }
    };
    let listed = get(Some("0-")).await;
    assert_eq!(status(&listed), "206", "{listed}");
    assert_eq!(
        crate::header(&listed, "content-range"),
        Some("bytes 0-19/*")
    );
    assert!(listed.ends_with(&(part_bytes(3, 0) + &part_bytes(3, 1))));
    assert_eq!(
        crate::header(&listed, "content-type"),
        Some("video/iso.segment")
    );
    let second = get(Some("10-19")).await;
    assert!(
        second.ends_with(&format!("\r\n\r\n{}", part_bytes(3, 1))),
        "{second}"
    );
    // Past the preload hint is not satisfiable; another stream's segment is not found.
    assert_eq!(status(&get(Some("30-")).await), "416");
    assert_eq!(
        status(&raw(web.addr, "/hls/cam/s9.m4s", &range("0-")).await),
        "404"
    );

    // The hinted part waits and then gets exactly that part; the whole segment waits for
    // the segment to be complete.
    let addr = web.addr;
    let hinted = tokio::spawn(async move { raw(addr, "/hls/cam/s3.m4s", &range("20-")).await });
    let whole = tokio::spawn(async move { raw(addr, "/hls/cam/s3.m4s", "").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!hinted.is_finished() && !whole.is_finished());
    append(&web, "cam/s3.m4s", &part_bytes(3, 2)[5..]);
    append(&web, "cam/s3.m4s", &part_bytes(3, 3)[..3]);
    web.publish("cam/index.m3u8", playlist(3, 3).as_bytes());
    let hinted = tokio::time::timeout(Duration::from_secs(2), hinted)
        .await
        .expect("served")
        .expect("join");
    assert_eq!(status(&hinted), "206", "{hinted}");
    assert_eq!(
        crate::header(&hinted, "content-range"),
        Some("bytes 20-29/*")
    );
    assert!(
        hinted.ends_with(&format!("\r\n\r\n{}", part_bytes(3, 2))),
        "{hinted}"
    );
    assert!(!whole.is_finished());
    append(&web, "cam/s3.m4s", &part_bytes(3, 3)[3..]);
    web.publish("cam/index.m3u8", playlist(4, 0).as_bytes());
    let whole = tokio::time::timeout(Duration::from_secs(2), whole)
        .await
        .expect("served")
        .expect("join");
    assert_eq!(status(&whole), "200", "{whole}");
    let all: String = (0..4).map(|p| part_bytes(3, p)).collect();
    assert!(whole.ends_with(&format!("\r\n\r\n{all}")), "{whole}");
    // Complete now: ranges are ordinary ones of a file of known length, and cacheable.
    let tail = get(Some("30-")).await;
    assert_eq!(
        crate::header(&tail, "content-range"),
        Some("bytes 30-39/40")
    );
    assert!(crate::header(&tail, "cache-control").is_some_and(|c| c.contains("immutable")));
    web.stop().await;
}

/// What the ingest lists when a write of the segment being built failed: its parts taken
/// back and no hint until the next segment; with `gap`, the segment is complete as a gap.
fn taken_back(segments: u64, gap: bool) -> String {
    let mut pl = MediaPlaylist::parse(&playlist(segments, 0)).expect("parse");
    pl.preload_hint = None;
    if gap {
        pl.push(PlaylistSegment {
            uri: format!("s{segments}.m4s"),
            duration: 2.0,
            gap: true,
            ..Default::default()
        });
    }
    pl.render()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_waiting_on_a_segment_the_playlist_takes_back_get_404() {
    for gap in [false, true] {
        let web = start().await;
        append(&web, "cam/s3.m4s", &(part_bytes(3, 0) + &part_bytes(3, 1)));
        web.publish("cam/index.m3u8", playlist(3, 2).as_bytes());
        let addr = web.addr;
        let hinted = tokio::spawn(async move { raw(addr, "/hls/cam/s3.m4s", &range("20-")).await });
        let whole = tokio::spawn(async move { raw(addr, "/hls/cam/s3.m4s", "").await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!hinted.is_finished() && !whole.is_finished());
        web.publish("cam/index.m3u8", taken_back(3, gap).as_bytes());
        for waiter in [hinted, whole] {
            let response = tokio::time::timeout(Duration::from_secs(1), waiter)
                .await
                .expect("answered at once")
                .expect("join");
            // Neither a range error nor the part-written file passed off as a whole segment.
            assert_eq!(status(&response), "404", "gap {gap}: {response}");
        }
        // The parts listed before are still there for a viewer that is about to fetch them.
        let first = raw(addr, "/hls/cam/s3.m4s", &range("0-9")).await;
        assert!(first.ends_with(&part_bytes(3, 0)), "{first}");
        web.stop().await;
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_blocking_reload_is_answered_when_the_publisher_leaves() {
    let web = start().await;
    web.publish("cam/index.m3u8", playlist(4, 1).as_bytes());
    assert_eq!(
        status(&raw(web.addr, "/hls/cam/index.m3u8", "").await),
        "200"
    );
    let addr = web.addr;
    let waiter = tokio::spawn(async move {
        let response = raw(addr, "/hls/cam/index.m3u8?_HLS_msn=5&_HLS_part=0", "").await;
        (Instant::now(), response)
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!waiter.is_finished(), "the request must wait for the part");
    // The ingest's playlist while it waits for the publisher: the last segment complete, no
    // hint, no blocking reloads offered.
    let mut waiting = MediaPlaylist::parse(&playlist(5, 0)).expect("parse");
    waiting.preload_hint = None;
    if let Some(control) = waiting.server_control.as_mut() {
        control.can_block_reload = false;
    }
    let written = Instant::now();
    web.publish("cam/index.m3u8", waiting.render().as_bytes());
    let (answered, response) = waiter.await.expect("join");
    assert_eq!(status(&response), "200", "{response}");
    assert!(!response.contains("CAN-BLOCK-RELOAD"), "{response}");
    // At once, not after three target durations with a 503.
    assert!(answered.duration_since(written) < Duration::from_secs(2));
    // Later reloads with directives are not held either.
    let started = Instant::now();
    let again = raw(web.addr, "/hls/cam/index.m3u8?_HLS_msn=5&_HLS_part=0", "").await;
    assert_eq!(status(&again), "200", "{again}");
    assert!(started.elapsed() < Duration::from_secs(1));
}

/// Rewrites a file in place through a hard link outside the volume: the bytes change, but the
/// front-end's watcher (which watches the volume's directories) sees no event, as when
/// another front-end's watcher ran first and this one's has not run yet.
fn write_unseen(web: &crate::Web, rel: &str, data: &str) {
    let link = web.hls().parent().expect("dir").join("unseen");
    let _ = std::fs::remove_file(&link);
    std::fs::hard_link(web.hls().join(rel), &link).expect("link");
    std::fs::write(&link, data).expect("write through the link");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_front_end_behind_the_volume_serves_what_another_front_end_listed() {
    let web = start().await;
    append(&web, "cam/s4.m4s", &part_bytes(4, 0));
    web.publish("cam/index.m3u8", playlist(4, 1).as_bytes());
    assert_eq!(
        status(&raw(web.addr, "/hls/cam/index.m3u8", "").await),
        "200"
    );
    // The volume moves on by two parts; this front-end has not seen it, but the viewer got
    // that playlist from another front-end and asks for its newest part here.
    append(&web, "cam/s4.m4s", &(part_bytes(4, 1) + &part_bytes(4, 2)));
    tokio::time::sleep(Duration::from_millis(200)).await;
    write_unseen(&web, "cam/index.m3u8", &playlist(4, 3));
    let newest = raw(web.addr, "/hls/cam/s4.m4s", &range("20-")).await;
    assert_eq!(status(&newest), "206", "{newest}");
    assert!(
        newest.ends_with(&format!("\r\n\r\n{}", part_bytes(4, 2))),
        "{newest}"
    );

    // The hint moves on to a segment file that does not exist yet: the hinted request waits
    // for its part instead of finding no such file.
    append(&web, "cam/s4.m4s", &part_bytes(4, 3));
    tokio::time::sleep(Duration::from_millis(200)).await;
    write_unseen(&web, "cam/index.m3u8", &playlist(5, 0));
    let addr = web.addr;
    let hinted = tokio::spawn(async move { raw(addr, "/hls/cam/s5.m4s", &range("0-")).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!hinted.is_finished(), "the hinted part is waited for");
    append(&web, "cam/s5.m4s", &part_bytes(5, 0));
    web.publish("cam/index.m3u8", playlist(5, 1).as_bytes());
    let hinted = tokio::time::timeout(Duration::from_secs(2), hinted)
        .await
        .expect("served")
        .expect("join");
    assert_eq!(status(&hinted), "206", "{hinted}");
    assert!(
        hinted.ends_with(&format!("\r\n\r\n{}", part_bytes(5, 0))),
        "{hinted}"
    );
    web.stop().await;
}
