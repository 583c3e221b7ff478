//! The summary a run writes (`summary.json`) and prints: what the audience saw, the honesty
//! checks that say whether the numbers can be trusted, and the thresholds that set the exit
//! code.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::stats::{percentile, ViewerStats};

/// Percentiles of one measure.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Percentiles {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
}

impl Percentiles {
    fn of(mut values: Vec<f64>) -> Self {
        Self {
            p50: percentile(&mut values, 50.0).map(round3),
            p95: percentile(&mut values, 95.0).map(round3),
            p99: percentile(&mut values, 99.0).map(round3),
        }
    }
}

/// One request type's count and timings.
#[derive(Debug, Clone, Serialize)]
pub struct RequestType {
    pub count: u64,
    pub first_byte_ms: Percentiles,
    pub last_byte_ms: Percentiles,
}

/// Whether the run's own numbers hold together.
#[derive(Debug, Clone, Serialize)]
pub struct Honesty {
    /// Media seconds downloaded over distinct media seconds: 1.0 unless a viewer downloaded
    /// a segment twice.
    pub download_ratio: f64,
    /// Segments viewers skipped over (a sequence number between two fetched ones never fetched).
    pub skipped_segments: u64,
    /// How late the tool's own 10 ms timer fired, p99 (over 5 ms: the machine was too busy
    /// for the timings to be trusted).
    pub timer_lateness_p99_ms: f64,
    pub trustworthy: bool,
}

/// `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub url: String,
    pub viewers: usize,
    pub duration_secs: f64,
    pub requests: BTreeMap<String, RequestType>,
    pub errors: BTreeMap<String, u64>,
    pub error_rate: f64,
    pub bytes: u64,
    pub startup_ms: Percentiles,
    /// Viewers that never started playing.
    pub never_started: usize,
    /// Waits for media of at least 250 ms (what hls.js calls a stall), and their time.
    pub stalls: u64,
    pub stalled_secs: f64,
    /// Shorter waits (media a few frames late), and their time: not in the rebuffer ratio.
    pub short_waits: u64,
    pub short_wait_secs: f64,
    /// Stalled time over watched (played + stalled) time.
    pub rebuffer_ratio: f64,
    pub latency_secs: Percentiles,
    pub honesty: Honesty,
    pub passed: bool,
    pub failures: Vec<String>,
}

/// Thresholds that fail a run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Thresholds {
    pub max_stall_ratio: Option<f64>,
    pub max_error_rate: Option<f64>,
}

impl Summary {
    pub(crate) fn build(
        url: &str,
        duration_secs: f64,
        viewers: &[ViewerStats],
        timer_lateness_p99_ms: f64,
        thresholds: Thresholds,
    ) -> Self {
        let mut by_kind: BTreeMap<&'static str, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
        let mut errors: BTreeMap<String, u64> = BTreeMap::new();
        for v in viewers {
            for (kind, timings) in &v.requests {
                let entry = by_kind.entry(kind.as_str()).or_default();
                entry.0.extend(timings.iter().map(|t| t.first_ms));
                entry.1.extend(timings.iter().map(|t| t.last_ms));
            }
            for (kind, n) in &v.errors {
                *errors.entry(kind.clone()).or_default() += n;
            }
        }
        let ok: u64 = by_kind.values().map(|(f, _)| f.len() as u64).sum();
        let failed: u64 = errors.values().sum();
        let requests = by_kind
            .into_iter()
            .map(|(kind, (first, last))| {
                let count = first.len() as u64;
                let t = RequestType {
                    count,
                    first_byte_ms: Percentiles::of(first),
                    last_byte_ms: Percentiles::of(last),
                };
                (kind.to_string(), t)
            })
            .collect();
        let stalled: f64 = viewers.iter().map(|v| v.stalled_secs).sum();
        let played: f64 = viewers.iter().map(|v| v.played_secs).sum();
        let downloaded: f64 = viewers.iter().map(|v| v.media_downloaded_secs).sum();
        let distinct: f64 = viewers.iter().map(|v| v.media_distinct_secs).sum();
        let error_rate = if ok + failed > 0 {
            failed as f64 / (ok + failed) as f64
        } else {
            0.0
        };
        let rebuffer_ratio = if played + stalled > 0.0 {
            stalled / (played + stalled)
        } else {
            0.0
        };
        let honesty = Honesty {
            download_ratio: if distinct > 0.0 {
                round3(downloaded / distinct)
            } else {
                1.0
            },
            skipped_segments: viewers.iter().map(|v| v.skipped_segments).sum(),
            timer_lateness_p99_ms: round3(timer_lateness_p99_ms),
            trustworthy: timer_lateness_p99_ms <= 5.0,
        };
        let never_started = viewers.iter().filter(|v| v.startup_ms.is_none()).count();
        let mut failures = Vec::new();
        if let Some(max) = thresholds.max_stall_ratio {
            if rebuffer_ratio > max {
                failures.push(format!("rebuffer ratio {rebuffer_ratio:.4} > {max}"));
            }
        }
        if let Some(max) = thresholds.max_error_rate {
            if error_rate > max {
                failures.push(format!(
                    "error rate {error_rate:.4} > {max} ({failed} of {} requests)",
                    ok + failed
                ));
            }
        }
        if honesty.download_ratio > 1.0 + 1e-9 {
            failures.push(format!(
                "viewers downloaded media twice (ratio {})",
                honesty.download_ratio
            ));
        }
        Summary {
            url: url.to_string(),
            viewers: viewers.len(),
            duration_secs: round3(duration_secs),
            requests,
            errors,
            error_rate: round3(error_rate),
            bytes: viewers.iter().map(|v| v.bytes).sum(),
            startup_ms: Percentiles::of(viewers.iter().filter_map(|v| v.startup_ms).collect()),
            never_started,
            stalls: viewers.iter().map(|v| v.stalls).sum(),
            short_waits: viewers.iter().map(|v| v.short_waits).sum(),
            short_wait_secs: round3(viewers.iter().map(|v| v.short_wait_secs).sum()),
            stalled_secs: round3(stalled),
            rebuffer_ratio: (rebuffer_ratio * 1e6).round() / 1e6,
            latency_secs: Percentiles::of(
                viewers
                    .iter()
                    .flat_map(|v| v.latency_secs.iter().copied())
                    .collect(),
            ),
            honesty,
            passed: failures.is_empty(),
            failures,
        }
    }

    /// A few lines for people.
    pub fn text(&self) -> String {
        let count = |k: &str| self.requests.get(k).map_or(0, |r| r.count);
        let fmt = |p: Option<f64>| p.map_or("-".to_string(), |v| format!("{v:.2}"));
        format!(
            "viewers {}  duration {:.0} s\nrequests: playlist {}, blocking reload {}, init {}, segment {}, part {}; errors {:?} (rate {})\n\
             startup ms p50 {} p95 {}; stalls {} ({:.1} s, rebuffer ratio {}), short waits {} ({:.2} s); latency s p50 {} p95 {} p99 {}\n\
             honesty: download ratio {}, skipped segments {}, timer lateness p99 {} ms ({})\nresult: {}",
            self.viewers, self.duration_secs, count("playlist"), count("blocking_reload"), count("init"), count("segment"), count("part"),
            self.errors, self.error_rate, fmt(self.startup_ms.p50), fmt(self.startup_ms.p95), self.stalls, self.stalled_secs,
            self.rebuffer_ratio, self.short_waits, self.short_wait_secs, fmt(self.latency_secs.p50), fmt(self.latency_secs.p95), fmt(self.latency_secs.p99),
            self.honesty.download_ratio, self.honesty.skipped_segments, self.honesty.timer_lateness_p99_ms,
            if self.honesty.trustworthy { "trustworthy" } else { "NOT trustworthy: the machine was too busy" },
            if self.passed { "passed".to_string() } else { format!("FAILED: {}", self.failures.join("; ")) },
        )
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_and_honesty_decide_the_result() {
        let mut v = ViewerStats {
            played_secs: 99.0,
            stalled_secs: 1.0,
            media_downloaded_secs: 20.0,
            media_distinct_secs: 20.0,
            ..ViewerStats::default()
        };
        let t = Thresholds {
            max_stall_ratio: Some(0.02),
            max_error_rate: Some(0.0),
        };
        let s = Summary::build("u", 10.0, std::slice::from_ref(&v), 1.0, t);
        assert!(s.passed, "{:?}", s.failures);
        assert!((s.rebuffer_ratio - 0.01).abs() < 1e-9);
        let strict = Thresholds {
            max_stall_ratio: Some(0.005),
            ..t
        };
        assert!(!Summary::build("u", 10.0, std::slice::from_ref(&v), 1.0, strict).passed);
        // A viewer that downloads a segment twice is caught.
        v.media_downloaded_secs = 22.0;
        let s = Summary::build("u", 10.0, &[v], 9.0, t);
        assert!(
            !s.passed && s.failures[0].contains("twice"),
            "{:?}",
            s.failures
        );
        assert!(!s.honesty.trustworthy, "9 ms timer lateness");
    }
}
