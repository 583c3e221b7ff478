//! Helpers of the ingest's tests, shared with the system tests (`crates/livecast/tests/it`),
//! which include this file: make a clip with Debian's ffmpeg, publish it, fetch URLs, probe
//! them with ffprobe, run the ingest alone on port 0.

// Each test binary uses its own part of these.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use livecast_telemetry::CancellationToken;

/// Makes an H.264 + AAC FLV clip (testsrc2 + sine, 30 fps, 2 s GOP) of `seconds` with Debian's
/// ffmpeg.
pub fn make_clip(dir: &Path, seconds: u32) -> PathBuf {
    make_clip_with_gop(dir, seconds, 60)
}

/// [`make_clip`] with a keyframe every `gop` frames.
pub fn make_clip_with_gop(dir: &Path, seconds: u32, gop: u32) -> PathBuf {
    let gop = gop.to_string();
    let h264 = [
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-g",
        &gop,
        "-keyint_min",
        &gop,
        "-sc_threshold",
        "0",
    ];
    let path = dir.join(format!("clip-{seconds}s-gop{gop}.flv"));
    encode_clip(Path::new("ffmpeg"), &path, seconds, &h264);
    path
}

/// Encodes a 640×360 30 fps testsrc2 + 440 Hz sine clip of `seconds` to the FLV file `path`
/// with `ffmpeg` (a path or a name on PATH) and the given video encoder flags; audio is AAC.
pub fn encode_clip(ffmpeg: &Path, path: &Path, seconds: u32, video: &[&str]) {
    let status = std::process::Command::new(ffmpeg)
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
        ])
        .arg(format!("testsrc2=size=640x360:rate=30:duration={seconds}"))
        .args(["-f", "lavfi", "-i"])
        .arg(format!(
            "sine=frequency=440:sample_rate=44100:duration={seconds}"
        ))
        .args(video)
        .args([
            "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k", "-f", "flv",
        ])
        .arg(path)
        .stderr(Stdio::null())
        .status()
        .expect("ffmpeg must be installed (scripts/test.sh installs it)");
    assert!(
        status.success(),
        "{} could not make {}",
        ffmpeg.display(),
        path.display()
    );
}

/// Publishes `clip` in real time (`-re -c copy`) to `url`.
pub fn publish(clip: &Path, url: &str) -> tokio::process::Child {
    tokio::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re", "-i"])
        .arg(clip)
        .args(["-c", "copy", "-f", "flv", url])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg must be installed (scripts/test.sh installs it)")
}

pub struct Fetched {
    pub status: u16,
    pub content_type: String,
    pub body: Bytes,
}

pub async fn get(url: &str) -> Fetched {
    get_with(url, None).await
}

/// GET with `Range: bytes=<range>` when given.
pub async fn get_with(url: &str, range: Option<&str>) -> Fetched {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut request = hyper::Request::get(url);
    if let Some(range) = range {
        request = request.header("range", format!("bytes={range}"));
    }
    let request = request.body(Empty::new()).expect("request");
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .expect("response within 10 s")
        .expect("request succeeds");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    Fetched {
        status,
        content_type,
        body,
    }
}

/// ffprobe's view of a URL: (codec_type, codec_name, frames) per stream and the duration.
pub fn ffprobe(url: &str) -> (Vec<(String, String, u64)>, f64) {
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-of", "json"])
        .args([
            "-show_entries",
            "stream=codec_type,codec_name,nb_read_frames:format=duration",
        ])
        .arg(url)
        .output()
        .expect("ffprobe must be installed");
    assert!(
        out.status.success(),
        "ffprobe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ffprobe json");
    let streams = json["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .map(|s| {
            (
                s["codec_type"].as_str().unwrap_or_default().to_string(),
                s["codec_name"].as_str().unwrap_or_default().to_string(),
                s["nb_read_frames"]
                    .as_str()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0),
            )
        })
        .collect();
    let duration = json["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0.0);
    (streams, duration)
}

pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The ingest service alone, on port 0.
pub struct Ingest {
    pub rtmp: std::net::SocketAddr,
    pub admin: std::net::SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), livecast_ingest::IngestError>>,
}

/// Starts the ingest on `hls` with extra flags.
pub async fn start_ingest(hls: &Path, extra: &[&str]) -> Ingest {
    let mut args = vec![
        "livecast-ingest".to_string(),
        "--rtmp-listen=127.0.0.1:0".into(),
        "--admin-listen=127.0.0.1:0".into(),
        format!("--hls-dir={}", hls.display()),
    ];
    // Streams end a second after their publisher leaves unless a test says otherwise.
    if !extra
        .iter()
        .any(|a| a.starts_with("--reconnect-grace-secs"))
    {
        args.push("--reconnect-grace-secs=1".into());
    }
    args.extend(extra.iter().map(|a| a.to_string()));
    let config = livecast_ingest::Config::parse_from(args);
    let listeners = livecast_ingest::Listeners::bind(&config)
        .await
        .expect("bind");
    let rtmp = listeners.rtmp.local_addr().expect("addr");
    let admin = listeners.admin.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(livecast_ingest::run(config, listeners, shutdown.clone()));
    Ingest {
        rtmp,
        admin,
        shutdown,
        task,
    }
}

impl Ingest {
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("join").expect("clean exit");
    }
}
