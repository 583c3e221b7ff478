//! The summary a run writes (`summary.json`) and prints: what the audience saw, the honesty
//! checks that say whether the numbers can be trusted, and the thresholds that set the exit
//! code. A summary is built from the collector's histograms and counts and the viewers' own
//! totals, so the summaries of several shards add up to the summary of their sum (`merge`).

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::collect::{Counts, Hists};
use crate::stats::{Kind, ViewerStats};

/// Percentiles of one measure.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

impl Percentiles {
    /// From a histogram of microseconds, in units of `per` microseconds.
    fn of(h: &Histogram<u64>, per: f64) -> Self {
        let q = |q: f64| (!h.is_empty()).then(|| round3(h.value_at_quantile(q) as f64 / per));
        Self {
            p50: q(0.5),
            p95: q(0.95),
            p99: q(0.99),
            max: (!h.is_empty()).then(|| round3(h.max() as f64 / per)),
        }
    }
}

/// One request type's count and timings (successful requests).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestType {
    /// Requests made, failed ones included.
    pub count: u64,
    pub first_byte_ms: Percentiles,
    pub last_byte_ms: Percentiles,
}

/// Whether the run's own numbers hold together.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Honesty {
    /// Media seconds downloaded over media seconds the playback clocks account for (played,
    /// buffered at the end, decoded on the way to a start point): 1.0 unless media was
    /// downloaded and never played, or played without a download.
    pub download_ratio: f64,
    /// Media units downloaded a second time.
    pub duplicate_downloads: u64,
    /// Segments viewers skipped over (a sequence number between two fetched ones never fetched).
    pub skipped_segments: u64,
    /// Media bytes over what the variants' declared BANDWIDTH allows for the media seconds
    /// downloaded (a master playlist only; BANDWIDTH is a peak, so this is at most about 1).
    pub bytes_vs_bandwidth: Option<f64>,
    /// How late the tool's own 10 ms timer fired, p99 (over 5 ms: the machine was too busy
    /// for the timings to be trusted).
    pub timer_lateness_p99_ms: f64,
    pub trustworthy: bool,
}

/// Everything a run adds up; `merge` adds these across shards.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Tally {
    pub url: String,
    pub viewers: usize,
    pub duration_secs: f64,
    pub never_started: usize,
    pub counts: Counts,
    /// The viewers' own totals, summed.
    pub totals: ViewerStats,
    pub timer_lateness_p99_ms: f64,
    /// The run was stopped (SIGINT, SIGTERM) before its end; the figures cover it up to then.
    #[serde(default)]
    pub stopped_early: bool,
}

impl Tally {
    pub(crate) fn add_viewer(&mut self, v: &ViewerStats) {
        let t = &mut self.totals;
        t.stalls += v.stalls;
        t.stalled_secs += v.stalled_secs;
        t.short_waits += v.short_waits;
        t.short_wait_secs += v.short_wait_secs;
        t.played_secs += v.played_secs;
        t.played_media_secs += v.played_media_secs;
        t.media_downloaded_secs += v.media_downloaded_secs;
        t.media_accounted_secs += v.media_accounted_secs;
        t.duplicate_downloads += v.duplicate_downloads;
        t.skipped_segments += v.skipped_segments;
        t.switches_up += v.switches_up;
        t.switches_down += v.switches_down;
        t.media_bytes += v.media_bytes;
        t.declared_bits += v.declared_bits;
        self.viewers += 1;
        self.never_started += usize::from(!v.started);
    }

    /// Adds another shard's tally.
    pub fn add(&mut self, other: &Tally) {
        if self.url.is_empty() {
            self.url.clone_from(&other.url);
        }
        let viewers = (self.viewers, self.never_started);
        self.add_viewer(&other.totals);
        (self.viewers, self.never_started) =
            (viewers.0 + other.viewers, viewers.1 + other.never_started);
        self.duration_secs = self.duration_secs.max(other.duration_secs);
        self.timer_lateness_p99_ms = self.timer_lateness_p99_ms.max(other.timer_lateness_p99_ms);
        self.stopped_early |= other.stopped_early;
        let c = &mut self.counts;
        let o = &other.counts;
        for (map, from) in [
            (&mut c.requests, &o.requests),
            (&mut c.errors, &o.errors),
            (&mut c.frontends, &o.frontends),
        ] {
            for (k, n) in from {
                *map.entry(k.clone()).or_default() += n;
            }
        }
        c.bytes += o.bytes;
        c.hinted += o.hinted;
        c.stalls += o.stalls;
        c.switches += o.switches;
        let mut series: BTreeMap<u64, crate::collect::Sample> =
            c.series.drain(..).map(|s| (s.t, s)).collect();
        for s in &o.series {
            let e = series.entry(s.t).or_insert_with(|| crate::collect::Sample {
                t: s.t,
                ..Default::default()
            });
            e.viewers += s.viewers;
            e.requests += s.requests;
            e.errors += s.errors;
            e.bytes += s.bytes;
            e.stalls += s.stalls;
            // Percentiles do not add: `merge` recomputes them from the histogram logs.
            e.latency_p50 = e.latency_p50.or(s.latency_p50);
            e.latency_p99 = e.latency_p99.or(s.latency_p99);
            // Every shard asks the same shipper: its count is the whole audience's.
            e.shipper_viewers = e.shipper_viewers.max(s.shipper_viewers);
        }
        c.series = series.into_values().collect();
    }
}

/// `summary.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub url: String,
    pub viewers: usize,
    pub duration_secs: f64,
    pub requests: BTreeMap<String, RequestType>,
    pub errors: BTreeMap<String, u64>,
    pub error_rate: f64,
    pub bytes: u64,
    /// Requests by the front-end that answered.
    pub frontends: BTreeMap<String, u64>,
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
    /// Now − PROGRAM-DATE-TIME at the playhead.
    pub latency_secs: Percentiles,
    /// The playhead's distance to the newest media listed.
    pub edge_distance_secs: Percentiles,
    pub switches_up: u64,
    pub switches_down: u64,
    /// Early requests for preload-hinted parts (counted under `part`).
    pub preload_hints: u64,
    pub honesty: Honesty,
    pub passed: bool,
    pub failures: Vec<String>,
    /// Stopped (SIGINT, SIGTERM) before its end: the figures cover the run up to then.
    #[serde(default)]
    pub stopped_early: bool,
    /// What `merge` adds up (and the report's time series).
    pub tally: Tally,
}

/// Thresholds that fail a run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Thresholds {
    pub max_stall_ratio: Option<f64>,
    pub max_error_rate: Option<f64>,
}

impl Summary {
    pub(crate) fn build(tally: Tally, hists: &Hists, thresholds: Thresholds) -> Self {
        let t = &tally.totals;
        let c = &tally.counts;
        let mut requests = BTreeMap::new();
        for k in Kind::ALL {
            let count = c.requests.get(k.as_str()).copied().unwrap_or(0);
            if count == 0 {
                continue;
            }
            requests.insert(
                k.as_str().to_string(),
                RequestType {
                    count,
                    first_byte_ms: Percentiles::of(&hists.first[k.index()], 1000.0),
                    last_byte_ms: Percentiles::of(&hists.last[k.index()], 1000.0),
                },
            );
        }
        let all: u64 = c.requests.values().sum();
        let failed: u64 = c.errors.values().sum();
        let error_rate = if all > 0 {
            failed as f64 / all as f64
        } else {
            0.0
        };
        let watched = t.played_secs + t.stalled_secs;
        let rebuffer_ratio = if watched > 0.0 {
            t.stalled_secs / watched
        } else {
            0.0
        };
        let honesty = Honesty {
            download_ratio: if t.media_accounted_secs > 0.0 {
                round3(t.media_downloaded_secs / t.media_accounted_secs)
            } else {
                1.0
            },
            duplicate_downloads: t.duplicate_downloads,
            skipped_segments: t.skipped_segments,
            bytes_vs_bandwidth: (t.declared_bits > 0.0)
                .then(|| round3(t.media_bytes as f64 * 8.0 / t.declared_bits)),
            timer_lateness_p99_ms: round3(tally.timer_lateness_p99_ms),
            trustworthy: tally.timer_lateness_p99_ms <= 5.0,
        };
        let mut failures = Vec::new();
        if let Some(max) = thresholds.max_stall_ratio {
            if rebuffer_ratio > max {
                failures.push(format!("rebuffer ratio {rebuffer_ratio:.4} > {max}"));
            }
        }
        if let Some(max) = thresholds.max_error_rate {
            if error_rate > max {
                failures.push(format!(
                    "error rate {error_rate:.4} > {max} ({failed} of {all} requests)"
                ));
            }
        }
        if honesty.download_ratio > 1.01 || honesty.duplicate_downloads > 0 {
            failures.push(format!(
                "viewers downloaded media twice (download ratio {}, {} units again)",
                honesty.download_ratio, honesty.duplicate_downloads
            ));
        }
        Summary {
            url: tally.url.clone(),
            viewers: tally.viewers,
            duration_secs: round3(tally.duration_secs),
            requests,
            errors: c.errors.clone(),
            error_rate: round6(error_rate),
            bytes: c.bytes,
            frontends: c.frontends.clone(),
            startup_ms: Percentiles::of(&hists.startup, 1000.0),
            never_started: tally.never_started,
            stalls: t.stalls,
            stalled_secs: round3(t.stalled_secs),
            short_waits: t.short_waits,
            short_wait_secs: round3(t.short_wait_secs),
            rebuffer_ratio: round6(rebuffer_ratio),
            latency_secs: Percentiles::of(&hists.latency, 1e6),
            edge_distance_secs: Percentiles::of(&hists.edge, 1e6),
            switches_up: t.switches_up,
            switches_down: t.switches_down,
            preload_hints: c.hinted,
            honesty,
            passed: failures.is_empty(),
            failures,
            stopped_early: tally.stopped_early,
            tally,
        }
    }

    /// A few lines for people.
    pub fn text(&self) -> String {
        let count = |k: &str| self.requests.get(k).map_or(0, |r| r.count);
        let fmt = |p: Option<f64>| p.map_or("-".to_string(), |v| format!("{v:.2}"));
        let held = self
            .requests
            .get("blocking_reload")
            .map_or("-".to_string(), |r| fmt(r.first_byte_ms.p50));
        format!(
            "viewers {}  duration {:.0} s{}\nrequests: master {}, playlist {}, blocking reload {} (held p50 {} ms), init {}, segment {}, part {} ({} preload hints); errors {:?} (rate {})\n\
             startup ms p50 {} p95 {}; stalls {} ({:.1} s, rebuffer ratio {}), short waits {} ({:.2} s); latency s p50 {} p95 {} p99 {}; switches up {} down {}\n\
             front-ends: {:?}\n\
             honesty: download ratio {}, duplicates {}, skipped segments {}, timer lateness p99 {} ms ({})\nresult: {}",
            self.viewers, self.duration_secs,
            if self.stopped_early { " (stopped early)" } else { "" },
            count("master"), count("playlist"), count("blocking_reload"), held, count("init"), count("segment"), count("part"),
            self.preload_hints, self.errors, self.error_rate, fmt(self.startup_ms.p50), fmt(self.startup_ms.p95), self.stalls, self.stalled_secs,
            self.rebuffer_ratio, self.short_waits, self.short_wait_secs, fmt(self.latency_secs.p50), fmt(self.latency_secs.p95), fmt(self.latency_secs.p99),
            self.switches_up, self.switches_down, self.frontends,
            self.honesty.download_ratio, self.honesty.duplicate_downloads, self.honesty.skipped_segments, self.honesty.timer_lateness_p99_ms,
            if self.honesty.trustworthy { "trustworthy" } else { "NOT trustworthy: the machine was too busy" },
            if self.passed { "passed".to_string() } else { format!("FAILED: {}", self.failures.join("; ")) },
        )
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn round6(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(v: &ViewerStats) -> Tally {
        let mut t = Tally {
            timer_lateness_p99_ms: 1.0,
            ..Tally::default()
        };
        t.add_viewer(v);
        t
    }

    #[test]
    fn thresholds_and_honesty_decide_the_result() {
        let mut v = ViewerStats {
            started: true,
            played_secs: 99.0,
            stalled_secs: 1.0,
            media_downloaded_secs: 20.0,
            media_accounted_secs: 20.0,
            ..ViewerStats::default()
        };
        let t = Thresholds {
            max_stall_ratio: Some(0.02),
            max_error_rate: Some(0.0),
        };
        let hists = Hists::default();
        let s = Summary::build(tally(&v), &hists, t);
        assert!(s.passed, "{:?}", s.failures);
        assert!((s.rebuffer_ratio - 0.01).abs() < 1e-9);
        let strict = Thresholds {
            max_stall_ratio: Some(0.005),
            ..t
        };
        assert!(!Summary::build(tally(&v), &hists, strict).passed);
        // A viewer that downloads media twice is caught.
        v.media_downloaded_secs = 40.0;
        let mut late = tally(&v);
        late.timer_lateness_p99_ms = 9.0;
        let s = Summary::build(late, &hists, t);
        assert!(
            !s.passed && s.failures[0].contains("twice"),
            "{:?}",
            s.failures
        );
        assert!(!s.honesty.trustworthy, "9 ms timer lateness");
    }

    #[test]
    fn shards_add_up() {
        let v = ViewerStats {
            started: true,
            played_secs: 10.0,
            stalls: 1,
            ..ViewerStats::default()
        };
        let mut a = tally(&v);
        a.counts.requests.insert("part".into(), 5);
        a.counts.series.push(crate::collect::Sample {
            t: 3,
            viewers: 1,
            requests: 5,
            ..Default::default()
        });
        let mut b = a.clone();
        b.counts.series[0].t = 4;
        b.never_started = 1;
        let mut sum = Tally::default();
        sum.add(&a);
        sum.add(&b);
        assert_eq!(sum.viewers, 2);
        assert_eq!(sum.never_started, 1);
        assert_eq!(sum.totals.stalls, 2);
        assert_eq!(sum.counts.requests["part"], 10);
        assert_eq!(
            sum.counts.series.iter().map(|s| s.t).collect::<Vec<_>>(),
            [3, 4]
        );
    }
}
