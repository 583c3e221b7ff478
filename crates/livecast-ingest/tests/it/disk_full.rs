//! A full HLS volume: while nothing can be written, no segment is listed as media unless it
//! was written whole; the lost time is listed as EXT-X-GAP, the metrics and the log say the
//! volume is full, and the stream recovers by itself when space returns.
//!
//! The volume is a real size-limited tmpfs, which needs root (as the tests' Zabbix server does).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use livecast_media::playlist::MediaPlaylist;

use crate::support::{ffprobe, make_clip, publish, start_ingest, wait_until};

/// A tmpfs of `mb` megabytes mounted at `path` for the life of the value.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, mb: u32) -> Self {
        std::fs::create_dir_all(path).expect("mkdir");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(path)
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "mounting a tmpfs failed: the full-disk test needs root (scripts/test.sh runs as root)"
        );
        Self(path.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

async fn metric(admin: std::net::SocketAddr, name: &str) -> f64 {
    let text = crate::support::get(&format!("http://{admin}/metrics"))
        .await
        .body;
    String::from_utf8_lossy(&text)
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn playlist(hls: &Path) -> Option<MediaPlaylist> {
    MediaPlaylist::parse(&std::fs::read_to_string(hls.join("full/index.m3u8")).ok()?).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_volume_lists_gaps_never_short_media_and_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hls = dir.path().join("hls");
    let _volume = Tmpfs::mount(&hls, 12);
    let clip = make_clip(dir.path(), 24);
    let ingest = start_ingest(&hls, &["--window=30"]).await;
    let mut ffmpeg = publish(&clip, &format!("rtmp://{}/live/full", ingest.rtmp));

    wait_until("three segments", Duration::from_secs(20), || async {
        playlist(&hls).is_some_and(|p| p.segments.len() >= 3)
    })
    .await;
    // Fill the volume beside the stream's directory until nothing more fits.
    let filler = hls.join("filler");
    {
        let mut file = std::fs::File::create(&filler).expect("filler");
        let block = vec![0u8; 64 * 1024];
        while file.write_all(&block).is_ok() {}
    }
    wait_until(
        "the volume-full metric",
        Duration::from_secs(10),
        || async { metric(ingest.admin, "livecast_ingest_volume_full").await == 1.0 },
    )
    .await;
    wait_until("a gap segment", Duration::from_secs(15), || async {
        metric(ingest.admin, "livecast_ingest_gap_segments_total").await >= 1.0
    })
    .await;
    std::fs::remove_file(&filler).expect("free the volume");
    let status = ffmpeg.wait().await.expect("ffmpeg runs");
    assert!(status.success(), "ffmpeg publish failed");
    assert_eq!(
        metric(ingest.admin, "livecast_ingest_volume_full").await,
        0.0
    );
    assert!(
        metric(
            ingest.admin,
            "livecast_ingest_write_errors_total{kind=\"no_space\"}"
        )
        .await
            >= 1.0
    );

    wait_until("the last segment", Duration::from_secs(10), || async {
        playlist(&hls).is_some_and(|p| p.segments.iter().map(|s| s.duration).sum::<f64>() > 22.0)
    })
    .await;
    let listed = playlist(&hls).expect("playlist");
    let gaps: Vec<bool> = listed.segments.iter().map(|s| s.gap).collect();
    assert!(gaps.iter().any(|g| *g), "{gaps:?}");
    assert!(!gaps[..3].iter().any(|g| *g), "{gaps:?}");
    assert!(!gaps.last().copied().unwrap_or(true), "recovered: {gaps:?}");
    // Every segment listed as media decodes whole: its frames are its duration's.
    let stream_dir = hls.join("full");
    for segment in listed.segments.iter().filter(|s| !s.gap) {
        let mut bytes = std::fs::read(stream_dir.join(segment.map.as_deref().expect("fMP4 map")))
            .expect("init segment");
        bytes.extend(std::fs::read(stream_dir.join(&segment.uri)).expect("listed segment"));
        let probe = dir.path().join("probe.mp4");
        std::fs::write(&probe, bytes).expect("write");
        let (streams, _) = ffprobe(&probe.display().to_string());
        let frames = streams.iter().find(|s| s.0 == "video").map_or(0, |s| s.2);
        let expected = (segment.duration * 30.0).round() as u64;
        assert!(
            frames.abs_diff(expected) <= 1,
            "{} lists {} s but holds {frames} frames",
            segment.uri,
            segment.duration
        );
    }
    ingest.stop().await;
}
