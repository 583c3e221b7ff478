//! Enhanced RTMP: a modern FFmpeg (9, from the imageio-ffmpeg wheel; Debian's 5.1 cannot
//! publish HEVC or AV1 over RTMP) publishes libx265 + AAC (both containers) and SVT-AV1 + AAC
//! (fMP4); every frame must come back, read with ffprobe through the balancer.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::{encode_clip, ffprobe, get, start_stack_with, wait_until};

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

/// A clip of `codec` ("hevc" or "av1") with a 2 s GOP and AAC, as Enhanced FLV.
fn clip(ffmpeg: &Path, dir: &Path, codec: &str) -> PathBuf {
    let video: &[&str] = match codec {
        "hevc" => &[
            "-c:v",
            "libx265",
            "-preset",
            "ultrafast",
            "-x265-params",
            "keyint=60:min-keyint=60:scenecut=0:log-level=error",
        ],
        _ => &[
            "-c:v",
            "libsvtav1",
            "-preset",
            "12",
            "-g",
            "60",
            "-svtav1-params",
            "scd=0",
        ],
    };
    let path = dir.join(format!("{codec}.flv"));
    encode_clip(ffmpeg, &path, SECONDS, video);
    path
}

async fn publish_and_probe(codec: &str, container: &str) {
    let ffmpeg = ffmpeg9();
    let stack = start_stack_with(1, &[&format!("--container={container}")]).await;
    let clip = clip(&ffmpeg, stack.dir.path(), codec);
    let status = tokio::process::Command::new(&ffmpeg)
        .args(["-hide_banner", "-loglevel", "error", "-re", "-i"])
        .arg(&clip)
        .args(["-c", "copy", "-f", "flv"])
        .arg(stack.rtmp_url("live/enhanced"))
        .status()
        .await
        .expect("ffmpeg 9 publishes");
    assert!(status.success(), "the {codec} publish failed");
    let playlist = stack.url("/hls/enhanced/index.m3u8");
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
    assert_eq!(video.1, codec, "{container}: {streams:?}");
    assert_eq!(
        video.2,
        u64::from(SECONDS * 30),
        "{codec} in {container}: every frame decodes"
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
    publish_and_probe("hevc", "fmp4").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hevc_over_enhanced_rtmp_in_mpeg_ts() {
    publish_and_probe("hevc", "ts").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn av1_over_enhanced_rtmp_in_fmp4() {
    publish_and_probe("av1", "fmp4").await;
}
