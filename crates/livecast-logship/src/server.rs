//! The shipping loop and the service entry point.

use std::io::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use livecast_telemetry::{serve_admin_with, CancellationToken, Health, Registry};
use notify::Watcher as _;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::elasticsearch::{authorization, Elasticsearch};
use crate::metrics::Metrics;
use crate::source::{Line, Source};
use crate::viewers::{Counts, Fields, Viewers};
use crate::{Config, LogshipError};

const SINK: &str = "elasticsearch";
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The sockets the service serves, bound by the caller (port 0 in tests).
#[derive(Debug)]
pub struct Listeners {
    /// Admin HTTP, with `/api/viewers`.
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds the addresses from the configuration.
    pub async fn bind(config: &Config) -> std::io::Result<Self> {
        Ok(Self {
            admin: TcpListener::bind(config.admin_listen).await?,
        })
    }
}

#[derive(Clone)]
struct AdminState {
    viewers: Arc<Mutex<Viewers>>,
    window: u64,
}

#[derive(serde::Serialize)]
struct ViewerReport {
    window_secs: u64,
    streams: std::collections::BTreeMap<String, Counts>,
}

async fn viewer_report(State(state): State<AdminState>) -> Json<ViewerReport> {
    let counts = state
        .viewers
        .lock()
        .map(|mut v| v.counts(SystemTime::now()))
        .unwrap_or_default();
    Json(ViewerReport {
        window_secs: state.window,
        streams: counts.into_iter().collect(),
    })
}

/// Runs the shipper until `shutdown` is cancelled: it then stops reading, lets the batch in
/// flight finish within `--drain-secs`, and checkpoints what was acknowledged.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), LogshipError> {
    config.validate()?;
    let registry = Registry::new();
    let metrics = Metrics::register(&registry)?;
    let health = Health::default();
    let viewers = Arc::new(Mutex::new(Viewers::new(Duration::from_secs(
        config.viewer_window_secs,
    ))));
    let admin_routes = Router::new()
        .route("/api/viewers", get(viewer_report))
        .with_state(AdminState {
            viewers: viewers.clone(),
            window: config.viewer_window_secs,
        });
    let admin_stop = CancellationToken::new();
    let admin = tokio::spawn(serve_admin_with(
        listeners.admin,
        registry,
        health.clone(),
        admin_routes,
        admin_stop.clone(),
    ));
    let sink = match config.elasticsearch() {
        Some(url) => Some(
            Elasticsearch::new(
                url,
                config.elasticsearch_index.clone(),
                authorization(
                    config.elasticsearch_user.as_deref(),
                    config.elasticsearch_password.as_deref(),
                    config.elasticsearch_api_key.as_deref(),
                ),
                config.elasticsearch_gzip,
            )
            .map_err(LogshipError::Config)?,
        ),
        None => None,
    };
    // The front-ends may start later; watching needs the directory to exist.
    std::fs::create_dir_all(&config.log_dir)?;
    let source = Source::open(config.log_dir.clone(), &config.state_dir)?;
    let dead_letter_path = config.state_dir.join("dead-letter.ndjson");
    let wake = Arc::new(Notify::new());
    let _watcher = watch(&config.log_dir, wake.clone());
    tokio::spawn(export_viewers(
        viewers.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));
    health.set_ready(true);
    tracing::info!(
        log_dir = %config.log_dir.display(),
        elasticsearch = config.elasticsearch().unwrap_or("(none: counting only)"),
        "logship running"
    );

    let mut shipper = Shipper {
        source,
        sink,
        viewers,
        metrics,
        dead_letter_path,
        wake,
        shutdown: shutdown.clone(),
        poll: Duration::from_millis(config.poll_interval_ms),
        drain: Duration::from_secs(config.drain_secs),
        batch_lines: config.batch_lines,
    };
    while !shutdown.is_cancelled() {
        match shipper.round().await {
            Ok(Round::Continue) => {}
            Ok(Round::Stop) => break,
            Err(error) => {
                // A full disk or a vanished file is no reason to stop shipping: nothing was
                // checkpointed, so the next round starts from the same place.
                tracing::error!(%error, "shipping round failed; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(shipper.poll) => {}
                }
            }
        }
    }
    health.set_ready(false);
    admin_stop.cancel();
    admin
        .await
        .map_err(|e| LogshipError::Io(std::io::Error::other(e)))??;
    Ok(())
}

enum Round {
    Continue,
    Stop,
}

/// The shipping loop's state.
struct Shipper {
    source: Source,
    sink: Option<Elasticsearch>,
    viewers: Arc<Mutex<Viewers>>,
    metrics: Metrics,
    dead_letter_path: std::path::PathBuf,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
    poll: Duration,
    drain: Duration,
    batch_lines: usize,
}

impl Shipper {
    /// One round: rescan, read a batch (or wait for more), count viewers, deliver, checkpoint.
    async fn round(&mut self) -> Result<Round, LogshipError> {
        let Shipper {
            source,
            sink,
            viewers,
            metrics,
            dead_letter_path,
            wake,
            shutdown,
            poll,
            drain,
            batch_lines,
        } = self;
        let (poll, drain) = (*poll, *drain);
        if let Err(error) = source.scan() {
            tracing::warn!(%error, "cannot list the log directory");
        }
        metrics.files.set(source.file_count() as i64);
        metrics.bytes_behind.set(source.bytes_behind() as i64);
        let lines = source.read(*batch_lines)?;
        if lines.is_empty() {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(Round::Stop),
                () = wake.notified() => {}
                () = tokio::time::sleep(poll) => {}
            }
            return Ok(Round::Continue);
        }
        metrics.lines_read.inc_by(lines.len() as u64);
        let mut good = Vec::with_capacity(lines.len());
        let mut malformed = Vec::new();
        if let Ok(mut v) = viewers.lock() {
            for (i, line) in lines.iter().enumerate() {
                match serde_json::from_slice::<Fields>(&line.bytes) {
                    Ok(fields) => {
                        v.observe(&fields);
                        good.push(i);
                    }
                    Err(error) => malformed.push((i, format!("not access-log json: {error}"))),
                }
            }
        }
        if !malformed.is_empty() {
            metrics.malformed.inc_by(malformed.len() as u64);
            dead_letter(dead_letter_path, "parse", &lines, &malformed)?;
        }
        let started = Instant::now();
        let delivered = match sink {
            Some(es) => {
                deliver(es, &lines, good, metrics, dead_letter_path, shutdown, drain).await?
            }
            None => true,
        };
        metrics
            .batch_seconds
            .observe(started.elapsed().as_secs_f64());
        if !delivered {
            tracing::warn!(
                lines = lines.len(),
                "shutdown before the sink acknowledged; the batch is sent again next start"
            );
            return Ok(Round::Stop);
        }
        source.commit(&lines)?;
        Ok(Round::Continue)
    }
}

/// Delivers `which` lines, retrying what may succeed later with exponential backoff and
/// jitter. Returns false when shutdown cut the retries short (nothing is checkpointed then).
async fn deliver(
    es: &Elasticsearch,
    lines: &[Line],
    mut pending: Vec<usize>,
    metrics: &Metrics,
    dead_letter_path: &Path,
    shutdown: &CancellationToken,
    drain: Duration,
) -> Result<bool, LogshipError> {
    let jitter = livecast_telemetry::RandomIds::new();
    let mut attempt = 0u32;
    let mut stop_at: Option<Instant> = None;
    while !pending.is_empty() {
        match es.send(lines, &pending).await {
            Ok(outcome) => {
                metrics
                    .shipped
                    .with_label_values(&[SINK])
                    .inc_by(outcome.delivered as u64);
                metrics
                    .duplicates
                    .with_label_values(&[SINK])
                    .inc_by(outcome.already_there as u64);
                if !outcome.rejected.is_empty() {
                    metrics
                        .dead_lettered
                        .with_label_values(&[SINK])
                        .inc_by(outcome.rejected.len() as u64);
                    dead_letter(dead_letter_path, SINK, lines, &outcome.rejected)?;
                }
                metrics
                    .failed
                    .with_label_values(&[SINK])
                    .inc_by(outcome.retry.len() as u64);
                pending = outcome.retry;
            }
            Err(error) => {
                metrics
                    .failed
                    .with_label_values(&[SINK])
                    .inc_by(pending.len() as u64);
                if attempt.is_multiple_of(10) {
                    tracing::warn!(%error, lines = pending.len(), "bulk request failed; retrying");
                }
            }
        }
        if pending.is_empty() {
            break;
        }
        attempt += 1;
        let base = Duration::from_millis(100)
            .saturating_mul(1 << attempt.min(9))
            .min(MAX_BACKOFF);
        // Full jitter in [base/2, base): many shippers do not retry in lock step.
        let factor = 0.5 + (jitter.next_u64() % 1000) as f64 / 2000.0;
        let wait = base.mul_f64(factor);
        if shutdown.is_cancelled() {
            let deadline = *stop_at.get_or_insert_with(|| Instant::now() + drain);
            if Instant::now() + wait > deadline {
                return Ok(false);
            }
            tokio::time::sleep(wait).await;
        } else {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = shutdown.cancelled() => { stop_at.get_or_insert_with(|| Instant::now() + drain); }
            }
        }
    }
    Ok(true)
}

/// Appends rejected lines, with the reason, to the dead-letter file and syncs it: a line leaves
/// the log only once it is safely somewhere else.
fn dead_letter(
    path: &Path,
    sink: &str,
    lines: &[Line],
    which: &[(usize, String)],
) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    for (i, reason) in which {
        let record = serde_json::json!({
            "sink": sink,
            "reason": reason,
            "id": lines[*i].id(),
            "line": String::from_utf8_lossy(&lines[*i].bytes),
        });
        writeln!(f, "{record}")?;
        tracing::warn!(sink, %reason, id = %lines[*i].id(), "line dead-lettered");
    }
    f.sync_all()
}

async fn export_viewers(
    viewers: Arc<Mutex<Viewers>>,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    loop {
        let counts = viewers
            .lock()
            .map(|mut v| v.counts(SystemTime::now()))
            .unwrap_or_default();
        for (stream, c) in counts {
            metrics
                .viewers
                .with_label_values(&[&stream])
                .set(c.concurrent as i64);
            metrics
                .viewers_peak
                .with_label_values(&[&stream])
                .set(c.peak as i64);
            metrics
                .viewers_unique
                .with_label_values(&[&stream])
                .set(c.unique as i64);
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// File-system events wake the loop at once; without them (network volumes) it polls.
fn watch(dir: &Path, wake: Arc<Notify>) -> Option<notify::RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !matches!(e.kind, notify::EventKind::Access(_))) {
            wake.notify_one();
        }
    })
    .ok()?;
    match watcher.watch(dir, notify::RecursiveMode::NonRecursive) {
        Ok(()) => Some(watcher),
        Err(error) => {
            tracing::info!(%error, dir = %dir.display(), "no file-system events; polling");
            None
        }
    }
}
