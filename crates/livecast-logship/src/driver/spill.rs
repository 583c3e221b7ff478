//! The spill stage: while the sink is slow or down, batches go to the capped disk buffer
//! ([`Spill`]) instead of waiting in memory, the logs move on, and spilled segments are sent
//! from disk (several at once, each removed once acknowledged) until the spill is empty and
//! the logs are read to their end; then the driver ships directly again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::{DeliveryTask, Driver, Round, ARCHIVE_EVERY, IN_FLIGHT};
use crate::sink::Sink;
use crate::spill::Spill;
use crate::LogshipError;

/// A spilled segment on its way.
pub(super) struct Draining {
    /// The segment's number in the spill.
    seq: u64,
    /// When it was handed to the sink.
    started: Instant,
    delivery: DeliveryTask,
}

/// The stage's state.
pub(crate) struct SpillStage {
    /// The disk buffer.
    spill: Spill,
    /// Batches go to the spill (and the spill to the sink) rather than to the sink.
    pub active: bool,
    /// A batch unacknowledged this long makes the stage active.
    pub after: Duration,
    /// Spilled segments on their way.
    draining: Vec<Draining>,
    /// Signalled by every spilled segment's delivery when it ends.
    drained: Arc<Notify>,
}

impl SpillStage {
    /// The stage over `spill`; active from the start when an earlier run left segments.
    pub fn new(spill: Spill, after: Duration) -> Self {
        let active = !spill.is_empty();
        if active {
            tracing::info!("batches spilled by an earlier run are sent first");
        }
        Self {
            spill,
            active,
            after,
            draining: Vec::new(),
            drained: Arc::new(Notify::new()),
        }
    }

    /// On shutdown: waits for the segments on their way (their deliveries have the driver's
    /// deadline) and removes those delivered.
    pub(super) async fn finish(&mut self) {
        for done in std::mem::take(&mut self.draining) {
            if let Ok(Ok(true)) = done.delivery.await {
                if let Err(error) = self.spill.remove(done.seq) {
                    tracing::warn!(%error, "cannot remove a delivered spill segment; it is sent again");
                }
            }
        }
    }
}

impl<S: Sink> Driver<S> {
    /// A round while spilling: send spilled segments (several at once, each removed when
    /// acknowledged), read the logs on into new segments, and leave spilling once the spill is
    /// sent and the logs are read to their end.
    pub(super) async fn spill_round(&mut self) -> Result<Round, LogshipError> {
        let Some(mut stage) = self.spill.take() else {
            return Ok(Round::Continue);
        };
        let result = match self.sink.clone() {
            Some(sink) => self.spill_round_with(sink, &mut stage).await,
            None => {
                stage.active = false;
                Ok(Round::Continue)
            }
        };
        self.spill = Some(stage);
        result
    }

    async fn spill_round_with(
        &mut self,
        sink: Arc<S>,
        stage: &mut SpillStage,
    ) -> Result<Round, LogshipError> {
        let SpillStage {
            spill,
            active,
            draining,
            drained,
            ..
        } = stage;
        let mut i = 0;
        while i < draining.len() {
            if !draining[i].delivery.is_finished() {
                i += 1;
                continue;
            }
            let done = draining.swap_remove(i);
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
            let busy: Vec<u64> = draining.iter().map(|d| d.seq).collect();
            let next: Vec<_> = spill
                .segments()
                .filter(|s| !busy.contains(&s.seq))
                .take(IN_FLIGHT.saturating_sub(draining.len()))
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
                let delivery =
                    self.spawn_delivery(sink.clone(), Arc::new(lines), all, Some(drained.clone()));
                draining.push(Draining {
                    seq: segment.seq,
                    started: Instant::now(),
                    delivery,
                });
            }
        }
        self.metrics.spill_bytes.set(spill.bytes() as i64);
        let lines = self.source.read(self.batch_lines)?;
        if lines.is_empty() {
            if spill.is_empty() && draining.is_empty() {
                // Caught up with the logs and the spill is sent.
                tracing::info!("spill buffer sent; shipping directly again");
                *active = false;
                return Ok(Round::Continue);
            }
            if self.archived_at.elapsed() >= ARCHIVE_EVERY {
                self.archive_closed().await;
            }
            tokio::select! {
                () = self.shutdown.cancelled() => return Ok(Round::Stop),
                () = drained.notified() => {}
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.poll) => {}
            }
            return Ok(Round::Continue);
        }
        let good = self.observe(&lines)?;
        let busy: Vec<u64> = draining.iter().map(|d| d.seq).collect();
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
}
