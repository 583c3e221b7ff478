//! Helpers shared by the system tests: start the stack, read playlists; making clips,
//! publishing them, fetching URLs and the ingest alone come from the ingest's own tests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use livecast::{Addrs, Stack, UpArgs};
use livecast_telemetry::CancellationToken;

#[path = "../../../livecast-ingest/tests/it/support.rs"]
mod publishing;
pub use publishing::*;

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

pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
