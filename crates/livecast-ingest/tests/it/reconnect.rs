//! A publisher that leaves does not end its stream at once: the playlist waits for it (no
//! preload hint, no blocking reloads) for `--reconnect-grace-secs`, a publish that comes back
//! continues it, an ingest restart is not an end, and only a grace that runs out with nobody
//! publishing writes ENDLIST.

use std::path::Path;
use std::time::{Duration, Instant};

use livecast_media::playlist::MediaPlaylist;

use crate::support::{make_clip, publish, start_ingest, wait_until, Ingest};

fn read(hls: &Path) -> MediaPlaylist {
    let text = std::fs::read_to_string(hls.join("back/index.m3u8")).expect("playlist");
    MediaPlaylist::parse(&text).expect("parses")
}

/// Publishes `clip` to live/back, waits for ffmpeg to exit and for the last segment to be
/// listed (`segments` in all), and returns when that happened.
async fn publish_and_leave(ingest: &Ingest, clip: &Path, hls: &Path, segments: usize) -> Instant {
    let status = publish(clip, &format!("rtmp://{}/live/back", ingest.rtmp))
        .wait()
        .await
        .expect("ffmpeg runs");
    assert!(status.success(), "ffmpeg publish failed");
    left(hls, segments).await
}

/// Waits for the last segment of a publish that ended to be listed (`segments` in all) and
/// returns when that happened.
async fn left(hls: &Path, segments: usize) -> Instant {
    wait_until("the last segment", Duration::from_secs(10), || async {
        std::fs::read_to_string(hls.join("back/index.m3u8"))
            .ok()
            .and_then(|t| MediaPlaylist::parse(&t).ok())
            .is_some_and(|p| p.segments.len() == segments)
    })
    .await;
    Instant::now()
}

fn assert_waiting(playlist: &MediaPlaylist) {
    assert!(!playlist.ended, "ended too early: {playlist:?}");
    assert!(playlist.preload_hint.is_none(), "{playlist:?}");
    assert!(playlist.pending_parts.is_empty(), "{playlist:?}");
    assert!(
        playlist.segments.iter().all(|s| s.parts.is_empty()),
        "{playlist:?}"
    );
    let control = playlist.server_control.as_ref().expect("server control");
    assert!(!control.can_block_reload, "{playlist:?}");
    assert!(playlist.part_target.is_some(), "still LL-HLS");
}

async fn wait_for_endlist(hls: &Path, left: Instant, grace: Duration) {
    wait_until("ENDLIST", grace + Duration::from_secs(5), || async {
        read(hls).ended
    })
    .await;
    assert!(
        left.elapsed() >= grace - Duration::from_millis(300),
        "ended after {:?}, before the grace of {grace:?}",
        left.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_waits_for_its_publisher_and_ends_only_after_the_grace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hls = dir.path().join("hls");
    let clip = make_clip(dir.path(), 4);
    let grace = Duration::from_secs(5);
    let ingest = start_ingest(&hls, &["--reconnect-grace-secs=5", "--window=20"]).await;

    // The publisher leaves: the playlist waits for it.
    publish_and_leave(&ingest, &clip, &hls, 2).await;
    assert_waiting(&read(&hls));

    // It comes back within the grace: the same playlist goes on after a discontinuity, with
    // blocking reloads again while it publishes.
    let mut back = publish(&clip, &format!("rtmp://{}/live/back", ingest.rtmp));
    wait_until(
        "blocking reloads offered again",
        Duration::from_secs(10),
        || async {
            let p = read(&hls);
            p.segments.len() >= 3
                && p.server_control
                    .as_ref()
                    .is_some_and(|c| c.can_block_reload)
                && p.preload_hint.is_some()
        },
    )
    .await;
    let playlist = read(&hls);
    assert!(playlist.segments[2].discontinuity, "{playlist:?}");
    // What a killed ingest leaves: a playlist mid-publish, with blocking reloads and a hint
    // (written to the volume just before the restart below, so its grace is not over yet).
    let mid_publish = std::fs::read(hls.join("back/index.m3u8")).expect("read");
    assert!(!playlist.ended);
    assert!(back.wait().await.expect("ffmpeg runs").success());

    // It leaves again and stays away. The first departure's grace runs out about a second
    // later, while this one's has barely begun: only this one's may end the stream.
    let gone = left(&hls, 4).await;
    assert_waiting(&read(&hls));
    wait_for_endlist(&hls, gone, grace).await;

    // An ingest restart is not an end: the playlist waits, and the next run ends it when the
    // grace counted from its last change runs out.
    publish_and_leave(&ingest, &clip, &hls, 6).await;
    ingest.stop().await;
    let stopped = Instant::now();
    assert_waiting(&read(&hls));
    std::fs::create_dir_all(hls.join("crashed")).expect("mkdir");
    std::fs::write(hls.join("crashed/index.m3u8"), mid_publish).expect("write");
    let ingest = start_ingest(&hls, &["--reconnect-grace-secs=5", "--window=20"]).await;
    let crashed = || {
        MediaPlaylist::parse(
            &std::fs::read_to_string(hls.join("crashed/index.m3u8")).expect("playlist"),
        )
        .expect("parses")
    };
    // The ingest looks at the volume as it starts, a moment after its listeners are bound.
    wait_until(
        "the crashed stream waiting",
        Duration::from_secs(5),
        || async {
            crashed()
                .server_control
                .is_some_and(|c| !c.can_block_reload)
        },
    )
    .await;
    assert_waiting(&crashed());
    wait_for_endlist(&hls, stopped, grace).await;
    let ended = read(&hls);
    assert_eq!(ended.segments.len(), 6, "{ended:?}");
    ingest.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grace_of_zero_ends_the_stream_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hls = dir.path().join("hls");
    let clip = make_clip(dir.path(), 2);
    let ingest = start_ingest(&hls, &["--reconnect-grace-secs=0"]).await;
    publish_and_leave(&ingest, &clip, &hls, 1).await;
    wait_until("ENDLIST", Duration::from_secs(2), || async {
        read(&hls).ended
    })
    .await;
    ingest.stop().await;
}
