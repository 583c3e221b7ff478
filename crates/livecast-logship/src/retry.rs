//! The retry policy of one batch's delivery: what may succeed later is sent again with
//! exponential backoff and full jitter; what never will goes to the dead-letter file.
//!
//! A delivery does not watch the shutdown token (only the driver, which reads the source,
//! does): the driver tells its deliveries through a [`Deadline`] how long they may still retry
//! once it has stopped reading.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::sink::Sink;
use crate::source::Line;
use crate::LogshipError;

/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Until when deliveries may retry: no limit until the driver sets one.
#[derive(Debug)]
pub(crate) struct Deadline(watch::Sender<Option<Instant>>);

impl Default for Deadline {
    fn default() -> Self {
        Self(watch::channel(None).0)
    }
}

impl Deadline {
    /// From now on, deliveries give up a retry that would start after `at`.
    pub fn set(&self, at: Instant) {
        self.0.send_replace(Some(at));
    }

    fn watch(&self) -> watch::Receiver<Option<Instant>> {
        self.0.subscribe()
    }
}

/// What a delivery needs besides its batch.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub metrics: Metrics,
    pub dead_letter_path: PathBuf,
}

/// The wait before attempt `attempt + 1` (`attempt` ≥ 1): 100 ms doubling up to
/// [`MAX_BACKOFF`], times a factor in [0.5, 1) from `random`, so that many shippers do not
/// retry in lock step.
pub(crate) fn backoff(attempt: u32, random: u64) -> Duration {
    let base = Duration::from_millis(100)
        .saturating_mul(1 << attempt.min(9))
        .min(MAX_BACKOFF);
    let factor = 0.5 + (random % 1000) as f64 / 2000.0;
    base.mul_f64(factor)
}

/// Delivers `pending` of `lines` to `sink`, retrying what may succeed later. Returns false
/// when the driver's deadline cut the retries short (nothing is checkpointed then).
pub(crate) async fn deliver<S: Sink>(
    sink: &S,
    lines: &[Line],
    mut pending: Vec<usize>,
    delivery: &Delivery,
    deadline: &Deadline,
) -> Result<bool, LogshipError> {
    let metrics = &delivery.metrics;
    let name = sink.name();
    let mut deadline = deadline.watch();
    let jitter = livecast_telemetry::RandomIds::new();
    let mut attempt = 0u32;
    while !pending.is_empty() {
        match sink.send(lines, &pending).await {
            Ok(outcome) => {
                metrics
                    .shipped
                    .with_label_values(&[name])
                    .inc_by(outcome.delivered as u64);
                metrics
                    .duplicates
                    .with_label_values(&[name])
                    .inc_by(outcome.already_there as u64);
                if !outcome.rejected.is_empty() {
                    metrics
                        .dead_lettered
                        .with_label_values(&[name])
                        .inc_by(outcome.rejected.len() as u64);
                    crate::dead_letter::append(
                        &delivery.dead_letter_path,
                        name,
                        lines,
                        &outcome.rejected,
                    )?;
                }
                metrics
                    .failed
                    .with_label_values(&[name])
                    .inc_by(outcome.retry.len() as u64);
                pending = outcome.retry;
            }
            Err(error) => {
                metrics
                    .failed
                    .with_label_values(&[name])
                    .inc_by(pending.len() as u64);
                if attempt.is_multiple_of(10) {
                    tracing::warn!(%error, sink = name, lines = pending.len(), "request failed; retrying");
                }
            }
        }
        if pending.is_empty() {
            break;
        }
        attempt += 1;
        let wait = backoff(attempt, jitter.next_u64());
        let stop_at = *deadline.borrow_and_update();
        match stop_at {
            Some(stop_at) if Instant::now() + wait > stop_at => return Ok(false),
            Some(_) => tokio::time::sleep(wait).await,
            None => {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    // The driver stopped reading: look at the deadline before waiting on.
                    changed = deadline.changed() => {
                        if changed.is_err() {
                            // The driver is gone; no deadline will come.
                            tokio::time::sleep(wait).await;
                        }
                    }
                }
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_with_jitter_below_the_base() {
        assert_eq!(backoff(1, 0), Duration::from_millis(100));
        assert_eq!(backoff(1, 999), Duration::from_micros(199_900));
        assert_eq!(backoff(3, 0), Duration::from_millis(400));
        for attempt in 9..40 {
            assert!(backoff(attempt, 999) < MAX_BACKOFF);
            assert!(backoff(attempt, 0) >= MAX_BACKOFF / 2);
        }
    }
}
