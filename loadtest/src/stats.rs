//! What viewers record: per request type, per viewer, and the live counters of the progress
//! line.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// The kinds of request a viewer makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    Playlist,
    BlockingReload,
    Init,
    Segment,
    Part,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Playlist => "playlist",
            Kind::BlockingReload => "blocking_reload",
            Kind::Init => "init",
            Kind::Segment => "segment",
            Kind::Part => "part",
        }
    }
}

/// Time to first and last byte of one request, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub first_ms: f64,
    pub last_ms: f64,
}

/// One viewer's record.
#[derive(Debug, Default)]
pub(crate) struct ViewerStats {
    pub requests: BTreeMap<Kind, Vec<Timing>>,
    pub errors: BTreeMap<String, u64>,
    pub bytes: u64,
    pub startup_ms: Option<f64>,
    /// Waits for media of at least 250 ms, and their time.
    pub stalls: u64,
    pub stalled_secs: f64,
    /// Shorter waits (media a few frames late), and their time.
    pub short_waits: u64,
    pub short_wait_secs: f64,
    pub played_secs: f64,
    /// Now minus PROGRAM-DATE-TIME at the playhead, sampled at each segment.
    pub latency_secs: Vec<f64>,
    /// Media seconds of segments downloaded, and of distinct segments.
    pub media_downloaded_secs: f64,
    pub media_distinct_secs: f64,
    /// Segments skipped over (a sequence number never fetched between two fetched ones).
    pub skipped_segments: u64,
}

/// Counters the progress line reads while the run goes on.
#[derive(Debug, Default)]
pub(crate) struct Live {
    pub viewers: AtomicU64,
    pub requests: AtomicU64,
    pub bytes: AtomicU64,
    pub errors: AtomicU64,
    pub stalls: AtomicU64,
}

/// Adds `n` to a live counter.
pub(crate) fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// The `p`-th percentile (0–100) of `values`, nearest rank; `None` when empty.
pub(crate) fn percentile(values: &mut [f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    Some(values[rank.clamp(1, values.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&mut v, 50.0), Some(50.0));
        assert_eq!(percentile(&mut v, 99.0), Some(99.0));
        assert_eq!(percentile(&mut v, 100.0), Some(100.0));
        assert_eq!(percentile(&mut [], 50.0), None);
        assert_eq!(percentile(&mut [3.0], 1.0), Some(3.0));
    }
}
