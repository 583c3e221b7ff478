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
use crate::metrics::{Metrics, SINK};
use crate::source::{Line, Source};
use crate::spill::Spill;
use crate::viewers::{Counts, Fields, Viewers};
use crate::{Config, LogshipError};

const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often idle rounds look for closed logs to archive.
const ARCHIVE_EVERY: Duration = Duration::from_secs(5);

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
        Some(url) => Some(Arc::new(
            Elasticsearch::new(
                url,
                config.elasticsearch_index.clone(),
                authorization(
                    config.elasticsearch_user.as_deref(),
                    config.elasticsearch_password.as_deref(),
                    config.elasticsearch_api_key.as_deref(),
                ),
                config.elasticsearch_gzip,
                config.elasticsearch_template,
                config.elasticsearch_tls()?,
            )
            .map_err(LogshipError::Config)?,
        )),
        None => None,
    };
    let archive = crate::archive::Archive::open(
        &config.archive_target(),
        Duration::from_secs(config.archive_after_secs),
    )
    .map_err(LogshipError::Config)?;
    // The front-ends may start later; watching needs the directory to exist.
    std::fs::create_dir_all(&config.log_dir)?;
    let names = crate::source::Names {
        include: config.include.clone(),
        exclude: config.exclude.clone(),
    };
    let source = Source::open(config.log_dir.clone(), names, &config.state_dir)?;
    // Without a sink nothing waits, so nothing spills.
    let spill = match (&sink, config.spill_max_mb) {
        (Some(_), mb) if mb > 0 => Some(Spill::open(
            config.state_dir.join("spill"),
            mb.saturating_mul(1024 * 1024),
        )?),
        _ => None,
    };
    let dead_letter_path = config.state_dir.join("dead-letter.ndjson");
    let wake = Arc::new(Notify::new());
    let _watcher = watch(&config.log_dir, wake.clone());
    tokio::spawn(export_viewers(
        viewers.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));
    if let Some(server) = config.zabbix() {
        let streams_url = match config.streams_url.as_deref().filter(|u| !u.is_empty()) {
            Some(url) => Some(url.parse::<http::Uri>().map_err(|_| {
                LogshipError::Config(format!("--streams-url is not a URL: {url:?}"))
            })?),
            None => None,
        };
        tokio::spawn(crate::zabbix::report(
            crate::zabbix::Target {
                server: server.to_string(),
                host: config.zabbix_host.clone(),
                prefix: config.zabbix_key_prefix.clone(),
                interval: Duration::from_secs(config.zabbix_interval_secs),
                discovery: config.zabbix_discovery,
                streams_url,
            },
            viewers.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
    }
    health.set_ready(true);
    tracing::info!(
        log_dir = %config.log_dir.display(),
        elasticsearch = config.elasticsearch().unwrap_or("(none: counting only)"),
        "logship running"
    );

    let spilling = spill.as_ref().is_some_and(|s| !s.is_empty());
    if spilling {
        tracing::info!("batches spilled by an earlier run are sent first");
    }
    let mut shipper = Shipper {
        source,
        sink,
        spill,
        spilling,
        spill_after: Duration::from_secs(config.spill_after_secs),
        draining: Vec::new(),
        drained: Arc::new(Notify::new()),
        viewers,
        metrics,
        dead_letter_path,
        wake,
        shutdown: shutdown.clone(),
        poll: Duration::from_millis(config.poll_interval_ms),
        drain: Duration::from_secs(config.drain_secs),
        batch_lines: config.batch_lines,
        in_flight: std::collections::VecDeque::new(),
        archive,
        archived_at: Instant::now(),
    };
    while !shutdown.is_cancelled() {
        match shipper.round().await {
            Ok(Round::Continue) => {}
            Ok(Round::Stop) => break,
            Err(error) => {
                // A full disk or a vanished file is no reason to stop shipping: nothing was
                // checkpointed, so the next round starts from the same place.
                tracing::error!(%error, "shipping round failed; retrying");
                shipper.abandon_in_flight().await;
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(shipper.poll) => {}
                }
            }
        }
    }
    shipper.finish().await;
    shipper.archive_closed().await;
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

/// Batches sent but not yet acknowledged at most; sending the next batch while the sink works
/// on the last keeps both busy.
const IN_FLIGHT: usize = 4;

/// A batch on its way: where to move the checkpoints once it is acknowledged.
struct Pending {
    ends: Vec<(u64, u64)>,
    started: Instant,
    delivery: tokio::task::JoinHandle<Result<bool, LogshipError>>,
}

/// A spilled segment on its way.
struct Draining {
    seq: u64,
    started: Instant,
    delivery: tokio::task::JoinHandle<Result<bool, LogshipError>>,
}

/// What ended a wait for the oldest batch in flight.
enum Woken {
    Finished(Result<Result<bool, LogshipError>, tokio::task::JoinError>),
    Stop,
    Again,
    Spill,
}

/// The shipping loop's state.
struct Shipper {
    source: Source,
    sink: Option<Arc<Elasticsearch>>,
    /// The disk buffer, when there is a sink and a cap above zero.
    spill: Option<Spill>,
    /// Read batches go to the spill (and the spill to the sink) rather than to the sink.
    spilling: bool,
    /// A batch unacknowledged this long switches to spilling.
    spill_after: Duration,
    draining: Vec<Draining>,
    /// Signalled by every spilled segment's delivery when it ends.
    drained: Arc<Notify>,
    viewers: Arc<Mutex<Viewers>>,
    metrics: Metrics,
    dead_letter_path: std::path::PathBuf,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
    poll: Duration,
    drain: Duration,
    batch_lines: usize,
    in_flight: std::collections::VecDeque<Pending>,
    archive: crate::archive::Archive,
    archived_at: Instant,
}

impl Shipper {
    /// One round: rescan, read a batch (or wait for more), count viewers, hand the batch to the
    /// sink, and checkpoint every batch acknowledged so far, in order.
    async fn round(&mut self) -> Result<Round, LogshipError> {
        self.scan();
        if self.spilling {
            return self.spill_round().await;
        }
        let lines = if self.in_flight.len() < IN_FLIGHT {
            self.source.read(self.batch_lines)?
        } else {
            Vec::new()
        };
        if lines.is_empty() {
            // Nothing new to send: wait for the oldest batch, or for more lines.
            let full = self.in_flight.len() >= IN_FLIGHT;
            let spill_at = self.spill.as_ref().and_then(|_| {
                self.in_flight
                    .front()
                    .map(|p| tokio::time::Instant::from_std(p.started + self.spill_after))
            });
            if let Some(front) = self.in_flight.front_mut() {
                // Look at the directory again every poll interval even while a batch waits
                // for a sink that is down: a file removed meanwhile must be noticed.
                let woken = tokio::select! {
                    result = &mut front.delivery => Woken::Finished(result),
                    () = self.shutdown.cancelled() => Woken::Stop,
                    () = self.wake.notified(), if !full => Woken::Again,
                    () = tokio::time::sleep(self.poll) => Woken::Again,
                    () = sleep_until(spill_at) => Woken::Spill,
                };
                return match woken {
                    Woken::Finished(result) => match self.in_flight.pop_front() {
                        Some(pending) => self.settle(pending, result).await,
                        None => Ok(Round::Continue),
                    },
                    Woken::Stop => Ok(Round::Stop),
                    Woken::Again => Ok(Round::Continue),
                    Woken::Spill => {
                        tracing::warn!(
                            after = ?self.spill_after,
                            "the sink has not acknowledged a batch; spilling to disk until it catches up"
                        );
                        self.abandon_in_flight().await;
                        self.spilling = true;
                        Ok(Round::Continue)
                    }
                };
            }
            if self.archived_at.elapsed() >= ARCHIVE_EVERY {
                self.archive_closed().await;
            }
            tokio::select! {
                () = self.shutdown.cancelled() => return Ok(Round::Stop),
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.poll) => {}
            }
            return Ok(Round::Continue);
        }
        let good = self.observe(&lines)?;
        let ends = crate::source::ends(&lines);
        let delivery = match self.sink.clone() {
            Some(es) => self.spawn_delivery(es, Arc::new(lines), good, None),
            None => tokio::spawn(async { Ok(true) }),
        };
        self.in_flight.push_back(Pending {
            ends,
            started: Instant::now(),
            delivery,
        });
        // Checkpoint whatever has finished meanwhile, without waiting.
        while self
            .in_flight
            .front()
            .is_some_and(|p| p.delivery.is_finished())
        {
            if let Round::Stop = self.settle_oldest().await? {
                return Ok(Round::Stop);
            }
        }
        Ok(Round::Continue)
    }

    /// A round while spilling: send spilled segments (several at once, each removed when
    /// acknowledged), read the logs on into new segments, and leave spilling once the spill is
    /// sent and the logs are read to their end.
    async fn spill_round(&mut self) -> Result<Round, LogshipError> {
        let (Some(es), Some(mut spill)) = (self.sink.clone(), self.spill.take()) else {
            self.spilling = false;
            return Ok(Round::Continue);
        };
        let result = self.spill_round_with(es, &mut spill).await;
        self.spill = Some(spill);
        result
    }

    async fn spill_round_with(
        &mut self,
        es: Arc<Elasticsearch>,
        spill: &mut Spill,
    ) -> Result<Round, LogshipError> {
        let mut i = 0;
        while i < self.draining.len() {
            if !self.draining[i].delivery.is_finished() {
                i += 1;
                continue;
            }
            let done = self.draining.swap_remove(i);
            self.metrics
                .batch_seconds
                .observe(done.started.elapsed().as_secs_f64());
            match done.delivery.await {
                Ok(Ok(true)) => spill.remove(done.seq)?,
                Ok(Ok(false)) => {}
                Ok(Err(error)) => {
                    // Only local I/O fails a delivery (the dead-letter file); do not spin on it.
                    tracing::warn!(%error, "a spilled batch failed; it stays and is sent again");
                    tokio::time::sleep(self.poll).await;
                }
                Err(join) => tracing::warn!(%join, "a spilled batch's delivery ended"),
            }
        }
        if !self.shutdown.is_cancelled() {
            let busy: Vec<u64> = self.draining.iter().map(|d| d.seq).collect();
            let next: Vec<_> = spill
                .segments()
                .filter(|s| !busy.contains(&s.seq))
                .take(IN_FLIGHT.saturating_sub(self.draining.len()))
                .copied()
                .collect();
            for segment in next {
                let lines = match spill.read(&segment) {
                    Ok(lines) => lines,
                    Err(error) if error.kind() == std::io::ErrorKind::InvalidData => {
                        // It cannot get better: keep it aside for a person, count it, go on.
                        self.metrics.spill_dropped.inc_by(segment.lines as u64);
                        tracing::error!(%error, lines = segment.lines, "spill segment set aside as .corrupt");
                        spill.set_aside(segment.seq)?;
                        continue;
                    }
                    Err(error) => return Err(error.into()),
                };
                let all = (0..lines.len()).collect();
                let delivery = self.spawn_delivery(
                    es.clone(),
                    Arc::new(lines),
                    all,
                    Some(self.drained.clone()),
                );
                self.draining.push(Draining {
                    seq: segment.seq,
                    started: Instant::now(),
                    delivery,
                });
            }
        }
        self.metrics.spill_bytes.set(spill.bytes() as i64);
        let lines = self.source.read(self.batch_lines)?;
        if lines.is_empty() {
            if spill.is_empty() && self.draining.is_empty() {
                // Caught up with the logs and the spill is sent.
                tracing::info!("spill buffer sent; shipping directly again");
                self.spilling = false;
                return Ok(Round::Continue);
            }
            if self.archived_at.elapsed() >= ARCHIVE_EVERY {
                self.archive_closed().await;
            }
            tokio::select! {
                () = self.shutdown.cancelled() => return Ok(Round::Stop),
                () = self.drained.notified() => {}
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.poll) => {}
            }
            return Ok(Round::Continue);
        }
        let good = self.observe(&lines)?;
        let busy: Vec<u64> = self.draining.iter().map(|d| d.seq).collect();
        let dropped = spill.push(&lines, &good, &busy)?;
        self.metrics.spilled.inc_by(good.len() as u64);
        if dropped.lines > 0 {
            self.metrics.spill_dropped.inc_by(dropped.lines as u64);
            tracing::error!(
                lines = dropped.lines,
                bytes = dropped.bytes,
                "spill buffer full (--spill-max-mb): the oldest spilled lines are dropped"
            );
        }
        self.metrics.spill_bytes.set(spill.bytes() as i64);
        // The lines are on disk in the spill: the logs may move on.
        self.source.commit(&crate::source::ends(&lines))?;
        Ok(Round::Continue)
    }

    /// Counts what was read, feeds the viewer count and dead-letters lines that are not
    /// access-log JSON. Returns the indices of the good lines.
    fn observe(&mut self, lines: &[Line]) -> Result<Vec<usize>, LogshipError> {
        self.metrics.lines_read.inc_by(lines.len() as u64);
        let mut good = Vec::with_capacity(lines.len());
        let mut malformed = Vec::new();
        if let Ok(mut v) = self.viewers.lock() {
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
            self.metrics.malformed.inc_by(malformed.len() as u64);
            dead_letter(&self.dead_letter_path, "parse", lines, &malformed)?;
        }
        Ok(good)
    }

    /// Sends `good` of `lines` in a task of its own; `done` is signalled when it ends.
    fn spawn_delivery(
        &self,
        es: Arc<Elasticsearch>,
        lines: Arc<Vec<Line>>,
        good: Vec<usize>,
        done: Option<Arc<Notify>>,
    ) -> tokio::task::JoinHandle<Result<bool, LogshipError>> {
        let (metrics, path, shutdown, drain) = (
            self.metrics.clone(),
            self.dead_letter_path.clone(),
            self.shutdown.clone(),
            self.drain,
        );
        tokio::spawn(async move {
            let result = deliver(&es, &lines, good, &metrics, &path, &shutdown, drain).await;
            if let Some(done) = done {
                done.notify_one();
            }
            result
        })
    }

    /// Rescans the log directory and updates the file gauges.
    fn scan(&mut self) {
        match self.source.scan() {
            Ok(0) => {}
            Ok(lost) => {
                // Only someone else deleting a log before it was shipped loses lines; never
                // let that pass silently.
                self.metrics.lost_bytes.inc_by(lost);
                tracing::error!(
                    bytes = lost,
                    "a log file was removed before it was shipped; its rest is lost"
                );
            }
            Err(error) => tracing::warn!(%error, "cannot list the log directory"),
        }
        self.metrics.files.set(self.source.file_count() as i64);
        self.metrics
            .bytes_behind
            .set(self.source.bytes_behind() as i64);
    }

    /// Waits for the oldest batch and checkpoints it. Batches are acknowledged in the order they
    /// were read, so a checkpoint never skips a line that is still on its way.
    async fn settle_oldest(&mut self) -> Result<Round, LogshipError> {
        let Some(mut pending) = self.in_flight.pop_front() else {
            return Ok(Round::Continue);
        };
        let result = (&mut pending.delivery).await;
        self.settle(pending, result).await
    }

    /// Checkpoints a finished batch (the oldest one).
    async fn settle(
        &mut self,
        pending: Pending,
        result: Result<Result<bool, LogshipError>, tokio::task::JoinError>,
    ) -> Result<Round, LogshipError> {
        let delivered = match result {
            Ok(result) => result,
            Err(join) => Err(LogshipError::Io(std::io::Error::other(join))),
        };
        self.metrics
            .batch_seconds
            .observe(pending.started.elapsed().as_secs_f64());
        match delivered {
            Ok(true) => {
                self.source.commit(&pending.ends)?;
                Ok(Round::Continue)
            }
            Ok(false) => {
                tracing::warn!(
                    "shutdown before the sink acknowledged; the rest is sent again next start"
                );
                Ok(Round::Stop)
            }
            Err(error) => {
                // Later batches may still arrive, but their checkpoints wait for this one: send
                // everything unacknowledged again (the ids make that harmless).
                self.abandon_in_flight().await;
                Err(error)
            }
        }
    }

    /// Archives closed, fully shipped logs (at most every few seconds).
    async fn archive_closed(&mut self) {
        self.archived_at = Instant::now();
        let now = SystemTime::now();
        for path in self.source.fully_shipped() {
            if !self.archive.is_closed(&path, now) {
                continue;
            }
            match self.archive.archive(&path).await {
                Ok(()) => {
                    self.metrics.archived.inc();
                    tracing::info!(file = %path.display(), "closed log archived");
                }
                Err(error) => {
                    tracing::warn!(%error, file = %path.display(), "cannot archive a closed log; kept")
                }
            }
        }
    }

    /// Stops every batch in flight and rereads from the checkpoints.
    async fn abandon_in_flight(&mut self) {
        for pending in self.in_flight.drain(..) {
            pending.delivery.abort();
            let _ = pending.delivery.await;
        }
        self.source.rewind();
    }

    /// On shutdown: lets batches in flight finish (within the drain deadline, which the
    /// deliveries observe) and checkpoints them.
    async fn finish(&mut self) {
        for done in std::mem::take(&mut self.draining) {
            if let (Ok(Ok(true)), Some(spill)) = (done.delivery.await, self.spill.as_mut()) {
                if let Err(error) = spill.remove(done.seq) {
                    tracing::warn!(%error, "cannot remove a delivered spill segment; it is sent again");
                }
            }
        }
        while !self.in_flight.is_empty() {
            match self.settle_oldest().await {
                Ok(Round::Continue) => {}
                Ok(Round::Stop) | Err(_) => {
                    self.abandon_in_flight().await;
                    break;
                }
            }
        }
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

/// Sleeps until `at`, or forever without one.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
