//! HEVC over Enhanced RTMP: a modern FFmpeg (9, from the imageio-ffmpeg wheel; Debian's 5.1
//! cannot publish HEVC over RTMP) publishes libx265 + AAC; both containers must carry every
//! frame, read back with ffprobe through the balancer.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::{ffprobe, get, start_stack_with, wait_until};

const SECONDS: u32 = 4;

/// The FFmpeg 9 binary of the imageio-ffmpeg wheel (scripts/test.sh installs it).
fn ffmpeg9() -> PathBuf {
    let out = Command::new("python3")
        .args([
            "-c",
            "import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())",
        ])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "FFmpeg 9 is missing: pip install imageio-ffmpeg (scripts/test.sh does): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn hevc_clip(ffmpeg: &Path, dir: &Path) -> PathBuf {
    let path = dir.join("hevc.flv");
    let status = Command::new(ffmpeg)
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
        ])
        .arg(format!("testsrc2=size=640x360:rate=30:duration={SECONDS}"))
        .args(["-f", "lavfi", "-i"])
        .arg(format!(
            "sine=frequency=440:sample_rate=48000:duration={SECONDS}"
        ))
        .args(["-c:v", "libx265", "-preset", "ultrafast", "-x265-params"])
        .arg("keyint=60:min-keyint=60:scenecut=0:log-level=error")
        .args(["-pix_fmt", "yuv420p", "-c:a", "aac", "-f", "flv"])
        .arg(&path)
        .status()
        .expect("ffmpeg 9 runs");
    assert!(status.success(), "could not make the HEVC clip");
    path
}

async fn publish_and_probe(container: &str) {
    let ffmpeg = ffmpeg9();
    let stack = start_stack_with(1, &[&format!("--container={container}")]).await;
    let clip = hevc_clip(&ffmpeg, stack.dir.path());
    let status = tokio::process::Command::new(&ffmpeg)
        .args(["-hide_banner", "-loglevel", "error", "-re", "-i"])
        .arg(&clip)
        .args(["-c", "copy", "-f", "flv"])
        .arg(stack.rtmp_url("live/hevc"))
        .status()
        .await
        .expect("ffmpeg 9 publishes");
    assert!(status.success(), "the HEVC publish failed");
    let playlist = stack.url("/hls/hevc/index.m3u8");
    wait_until("ENDLIST", Duration::from_secs(10), || {
        let playlist = playlist.clone();
        async move {
            let response = get(&playlist).await;
            response.status == 200
                && String::from_utf8_lossy(&response.body).contains("#EXT-X-ENDLIST")
        }
    })
    .await;
    let (streams, duration) = ffprobe(&playlist);
    let video = streams
        .iter()
        .find(|s| s.0 == "video")
        .expect("a video stream");
    assert_eq!(video.1, "hevc", "{container}: {streams:?}");
    assert_eq!(
        video.2,
        u64::from(SECONDS * 30),
        "{container}: every HEVC frame decodes"
    );
    let audio = streams
        .iter()
        .find(|s| s.0 == "audio")
        .expect("an audio stream");
    assert_eq!(audio.1, "aac");
    assert!(
        (duration - f64::from(SECONDS)).abs() < 0.3,
        "{container}: duration {duration}"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hevc_over_enhanced_rtmp_in_fmp4() {
    publish_and_probe("fmp4").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hevc_over_enhanced_rtmp_in_mpeg_ts() {
    publish_and_probe("ts").await;
}
