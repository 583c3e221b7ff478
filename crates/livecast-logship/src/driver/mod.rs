//! The shipping driver: read → batch → deliver → acknowledge in order → checkpoint.
//!
//! Each round reads a batch from the [`Source`], feeds the viewer count, dead-letters lines
//! that are not access-log JSON and hands the rest to a delivery task (the [`retry`] policy
//! over the [`Sink`]). Up to [`IN_FLIGHT`] batches are on their way at once, but checkpoints
//! move in the order the batches were read, so a checkpoint never skips a line still on its
//! way. When the sink has not acknowledged a batch for `--spill-after-secs`, the [`spill`]
//! stage takes over: batches go to disk, the logs move on, and the spill is sent from there.
//!
//! Only the driver watches the shutdown token: on shutdown it stops reading and gives its
//! deliveries a deadline (`--drain-secs`) to finish; what is not acknowledged by then is read
//! again on the next start.
//!
//! [`retry`]: crate::retry

mod spill;

#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use livecast_telemetry::CancellationToken;
use tokio::sync::Notify;

use crate::archive::Archive;
use crate::metrics::Metrics;
use crate::retry::{Deadline, Delivery};
use crate::sink::Sink;
use crate::source::{Line, Source};
use crate::viewers::{Fields, Viewers};
use crate::LogshipError;

pub(crate) use spill::SpillStage;

/// How often idle rounds look for closed logs to archive.
const ARCHIVE_EVERY: Duration = Duration::from_secs(5);

/// What a round says of the loop.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Round {
    /// Go on with the next round.
    Continue,
    /// Shutdown: stop reading and [`Driver::finish`].
    Stop,
}

/// Batches sent but not yet acknowledged at most; sending the next batch while the sink works
/// on the last keeps both busy.
pub(crate) const IN_FLIGHT: usize = 4;

/// A delivery task: `Ok(true)` when the sink took everything, `Ok(false)` when the deadline
/// cut it short.
type DeliveryTask = tokio::task::JoinHandle<Result<bool, LogshipError>>;

/// A batch on its way: where to move the checkpoints once it is acknowledged.
struct Pending {
    /// (file, offset) just past the batch's last line in each file.
    ends: Vec<(u64, u64)>,
    /// When it was handed to the sink.
    started: Instant,
    delivery: DeliveryTask,
}

/// What ended a wait for the oldest batch in flight.
enum Woken {
    Finished(Result<Result<bool, LogshipError>, tokio::task::JoinError>),
    Stop,
    Again,
    Spill,
}

/// The shipping loop's state.
pub(crate) struct Driver<S: Sink> {
    /// The log files, what has been handed out of them and their checkpoints.
    pub source: Source,
    /// Where lines go; without one the driver only counts viewers.
    pub sink: Option<Arc<S>>,
    /// The disk buffer stage, when there is a sink and `--spill-max-mb` above zero.
    pub spill: Option<SpillStage>,
    /// The viewer count, fed from every line read.
    pub viewers: Arc<Mutex<Viewers>>,
    pub metrics: Metrics,
    /// What every delivery task needs (metrics, the dead-letter file).
    pub delivery: Delivery,
    /// How long deliveries may still retry once shutdown began; set by [`Driver::finish`].
    pub deadline: Arc<Deadline>,
    /// Signalled by the directory watcher when a log changes.
    pub wake: Arc<Notify>,
    /// Watched by the driver alone: it stops reading when this is cancelled.
    pub shutdown: CancellationToken,
    /// How often the directory is looked at without a wake-up.
    pub poll: Duration,
    /// `--drain-secs`: how long batches in flight may take after shutdown.
    pub drain: Duration,
    /// Most lines in one batch.
    pub batch_lines: usize,
    /// Batches handed to the sink, oldest first.
    in_flight: std::collections::VecDeque<Pending>,
    /// Where closed, fully shipped logs go.
    pub archive: Archive,
    /// When closed logs were last looked for.
    archived_at: Instant,
}

impl<S: Sink> Driver<S> {
    /// A driver with nothing in flight; `spill` comes from an earlier run if it is not empty.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        source: Source,
        sink: Option<Arc<S>>,
        spill: Option<SpillStage>,
        viewers: Arc<Mutex<Viewers>>,
        delivery: Delivery,
        wake: Arc<Notify>,
        shutdown: CancellationToken,
        archive: Archive,
    ) -> Self {
        Self {
            source,
            sink,
            spill,
            viewers,
            metrics: delivery.metrics.clone(),
            delivery,
            deadline: Arc::new(Deadline::default()),
            wake,
            shutdown,
            poll: Duration::from_millis(250),
            drain: Duration::from_secs(10),
            batch_lines: 1000,
            in_flight: std::collections::VecDeque::new(),
            archive,
            archived_at: Instant::now(),
        }
    }

    /// One round: rescan, read a batch (or wait for more), count viewers, hand the batch to the
    /// sink, and checkpoint every batch acknowledged so far, in order.
    pub async fn round(&mut self) -> Result<Round, LogshipError> {
        self.scan();
        if self.spill.as_ref().is_some_and(|stage| stage.active) {
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
            let spill_after = self.spill.as_ref().map(|stage| stage.after);
            let spill_at = spill_after.and_then(|after| {
                self.in_flight
                    .front()
                    .map(|p| tokio::time::Instant::from_std(p.started + after))
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
                            after = ?spill_after,
                            "the sink has not acknowledged a batch; spilling to disk until it catches up"
                        );
                        self.abandon_in_flight().await;
                        if let Some(stage) = self.spill.as_mut() {
                            stage.active = true;
                        }
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
            Some(sink) => self.spawn_delivery(sink, Arc::new(lines), good, None),
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
            crate::dead_letter::append(
                &self.delivery.dead_letter_path,
                "parse",
                lines,
                &malformed,
            )?;
        }
        Ok(good)
    }

    /// Sends `good` of `lines` in a task of its own; `done` is signalled when it ends.
    fn spawn_delivery(
        &self,
        sink: Arc<S>,
        lines: Arc<Vec<Line>>,
        good: Vec<usize>,
        done: Option<Arc<Notify>>,
    ) -> DeliveryTask {
        let (delivery, deadline) = (self.delivery.clone(), self.deadline.clone());
        tokio::spawn(async move {
            let result = crate::retry::deliver(&*sink, &lines, good, &delivery, &deadline).await;
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
    pub async fn archive_closed(&mut self) {
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
    pub async fn abandon_in_flight(&mut self) {
        for pending in self.in_flight.drain(..) {
            pending.delivery.abort();
            let _ = pending.delivery.await;
        }
        self.source.rewind();
    }

    /// On shutdown: gives the deliveries in flight the drain deadline, lets them finish and
    /// checkpoints what they delivered.
    pub async fn finish(&mut self) {
        self.deadline.set(Instant::now() + self.drain);
        if let Some(stage) = self.spill.as_mut() {
            stage.finish().await;
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

/// Sleeps until `at`, or forever without one.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
