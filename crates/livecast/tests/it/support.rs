//! Helpers shared by the system tests: start the stack, make a clip, publish it, fetch URLs.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use livecast::{Addrs, Stack, UpArgs};
use livecast_telemetry::CancellationToken;

#[derive(clap::Parser)]
struct Wrapper {
    #[command(flatten)]
    up: UpArgs,
}

/// A running stack; shuts down when dropped.
pub struct Running {
    pub addrs: Addrs,
    pub dir: tempfile::TempDir,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<livecast::error::Result<()>>>,
}

impl Running {
    pub fn hls_dir(&self) -> PathBuf {
        self.dir.path().join("hls")
    }

    pub fn rtmp_url(&self, app_and_stream: &str) -> String {
        format!("rtmp://{}/{app_and_stream}", self.addrs.rtmp)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addrs.proxy)
    }

    /// Stops the stack and waits for it to drain.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let result = tokio::time::timeout(Duration::from_secs(20), task).await;
            result
                .expect("stack drains in time")
                .expect("stack task")
                .expect("stack ran cleanly");
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn start_stack(replicas: usize) -> Running {
    start_stack_with(replicas, &[]).await
}

/// Starts the stack with extra `livecast up` flags.
pub async fn start_stack_with(replicas: usize, extra: &[&str]) -> Running {
    livecast_telemetry::init_logging(livecast_telemetry::LogFormat::Text);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = vec![
        "test".to_string(),
        "--rtmp-listen=127.0.0.1:0".into(),
        "--listen=127.0.0.1:0".into(),
        "--web-port=0".into(),
        "--admin-host=127.0.0.1".into(),
        "--admin-port=0".into(),
        format!("--web-replicas={replicas}"),
        format!("--hls-dir={}", dir.path().join("hls").display()),
        format!("--access-log-dir={}", dir.path().join("logs").display()),
        format!("--state-dir={}", dir.path().join("logship").display()),
    ];
    // Streams end a second after their publisher leaves unless a test says otherwise.
    if !extra
        .iter()
        .any(|a| a.starts_with("--reconnect-grace-secs"))
    {
        args.push("--reconnect-grace-secs=1".into());
    }
    args.extend(extra.iter().map(|a| a.to_string()));
    let args = Wrapper::parse_from(args).up;
    let stack = Stack::bind(&args).await.expect("stack binds");
    let addrs = stack.addrs().clone();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(stack.run(shutdown.clone()));
    Running {
        addrs,
        dir,
        shutdown,
        task: Some(task),
    }
}

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

/// A media playlist as the tests read it.
#[derive(Debug, Default)]
pub struct Playlist {
    pub target_duration: Option<u64>,
    pub segments: Vec<(f64, String)>,
    pub ended: bool,
    /// EXT-X-PART tags: URI and BYTERANGE (length, offset).
    pub parts: Vec<(String, Option<(u64, u64)>)>,
    pub map: Option<String>,
    pub preload_hint: Option<String>,
    pub part_target: Option<f64>,
}

fn quoted_attribute(attrs: &str, name: &str) -> Option<String> {
    let start = attrs.find(&format!("{name}=\""))? + name.len() + 2;
    let len = attrs[start..].find('"')?;
    Some(attrs[start..start + len].to_string())
}

fn uri_attribute(attrs: &str) -> Option<String> {
    quoted_attribute(attrs, "URI")
}

pub fn parse_playlist(text: &str) -> Playlist {
    let mut pl = Playlist::default();
    let mut duration = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            pl.target_duration = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            duration = v
                .trim_end_matches(',')
                .split(',')
                .next()
                .and_then(|d| d.parse().ok());
        } else if let Some(v) = line.strip_prefix("#EXT-X-PART:") {
            let range = quoted_attribute(v, "BYTERANGE").map(|r| {
                let (length, offset) = r.split_once('@').expect("BYTERANGE with an offset");
                (
                    length.parse().expect("length"),
                    offset.parse().expect("offset"),
                )
            });
            pl.parts.push((uri_attribute(v).expect("part URI"), range));
        } else if let Some(v) = line.strip_prefix("#EXT-X-MAP:") {
            pl.map = uri_attribute(v);
        } else if let Some(v) = line.strip_prefix("#EXT-X-PRELOAD-HINT:") {
            pl.preload_hint = uri_attribute(v);
        } else if let Some(v) = line.strip_prefix("#EXT-X-PART-INF:PART-TARGET=") {
            pl.part_target = v.trim().parse().ok();
        } else if line == "#EXT-X-ENDLIST" {
            pl.ended = true;
        } else if !line.starts_with('#') && !line.is_empty() {
            pl.segments.push((
                duration.take().expect("EXTINF before uri"),
                line.to_string(),
            ));
        }
    }
    pl
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

pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
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
