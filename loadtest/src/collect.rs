//! The collector: one task that receives every viewer's events, keeps the run's histograms
//! (HdrHistogram, microseconds) and counts, writes a histogram interval log
//! (`histograms.hlog`, one interval a second, tagged by measure) and the per-request NDJSON
//! when asked, and samples a time series for the report.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use hdrhistogram::serialization::interval_log::{
    IntervalLogIterator, IntervalLogWriterBuilder, LogEntry, Tag,
};
use hdrhistogram::serialization::{Deserializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::metrics::Live;
use crate::stats::{Event, Kind};

/// Highest value a histogram holds: an hour, in microseconds (larger values saturate).
const MAX_MICROS: u64 = 3_600_000_000;

/// A histogram of durations in microseconds.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds")
}

/// Every histogram of a run, by measure.
#[derive(Debug, Clone)]
pub(crate) struct Hists {
    /// Time to first and to last byte of successful requests, by request kind.
    pub first: Vec<Histogram<u64>>,
    pub last: Vec<Histogram<u64>>,
    pub startup: Histogram<u64>,
    pub latency: Histogram<u64>,
    pub edge: Histogram<u64>,
}

impl Default for Hists {
    fn default() -> Self {
        Self {
            first: Kind::ALL.iter().map(|_| histogram()).collect(),
            last: Kind::ALL.iter().map(|_| histogram()).collect(),
            startup: histogram(),
            latency: histogram(),
            edge: histogram(),
        }
    }
}

impl Hists {
    /// Each histogram with its interval-log tag.
    fn tagged(&self) -> Vec<(String, &Histogram<u64>)> {
        let mut out = vec![
            ("startup".to_string(), &self.startup),
            ("latency".to_string(), &self.latency),
            ("edge".to_string(), &self.edge),
        ];
        for k in Kind::ALL {
            out.push((format!("{}.first", k.as_str()), &self.first[k.index()]));
            out.push((format!("{}.last", k.as_str()), &self.last[k.index()]));
        }
        out
    }

    fn by_tag(&mut self, tag: &str) -> Option<&mut Histogram<u64>> {
        match tag {
            "startup" => Some(&mut self.startup),
            "latency" => Some(&mut self.latency),
            "edge" => Some(&mut self.edge),
            _ => {
                let (kind, which) = tag.split_once('.')?;
                let k = Kind::ALL.into_iter().find(|k| k.as_str() == kind)?;
                match which {
                    "first" => Some(&mut self.first[k.index()]),
                    "last" => Some(&mut self.last[k.index()]),
                    _ => None,
                }
            }
        }
    }

    fn reset(&mut self) {
        for h in self.first.iter_mut().chain(self.last.iter_mut()) {
            h.reset();
        }
        self.startup.reset();
        self.latency.reset();
        self.edge.reset();
    }

    pub fn add(&mut self, other: &Hists) {
        for (tag, h) in other.tagged() {
            if let Some(mine) = self.by_tag(&tag) {
                let _ = mine.add(h);
            }
        }
    }
}

/// Interval histograms by (seconds since the base time, tag).
pub(crate) type Intervals = BTreeMap<(u64, String), Histogram<u64>>;

/// Reads an interval log written by a run (or a merge).
pub(crate) fn read_log(path: &Path) -> anyhow::Result<Intervals> {
    use base64::Engine as _;
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Intervals::new();
    let mut decoder = Deserializer::new();
    for entry in IntervalLogIterator::new(&bytes) {
        let entry = entry.map_err(|e| anyhow::anyhow!("{}: {e:?}", path.display()))?;
        let LogEntry::Interval(interval) = entry else {
            continue;
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(interval.encoded_histogram())
            .with_context(|| format!("{}: bad histogram encoding", path.display()))?;
        let h: Histogram<u64> = decoder
            .deserialize(&mut raw.as_slice())
            .map_err(|e| anyhow::anyhow!("{}: {e:?}", path.display()))?;
        let tag = interval
            .tag()
            .map(|t| t.as_str().to_string())
            .unwrap_or_default();
        let at = interval.start_timestamp().as_secs();
        let _ = out.entry((at, tag)).or_insert_with(histogram).add(&h);
    }
    Ok(out)
}

/// Every interval added up, per measure.
pub(crate) fn totals(intervals: &Intervals) -> Hists {
    let mut total = Hists::default();
    for ((_, tag), h) in intervals {
        if let Some(mine) = total.by_tag(tag) {
            let _ = mine.add(h);
        }
    }
    total
}

/// Writes `intervals` as an interval log (base time: the epoch plus nothing; timestamps are
/// seconds since the shards' common start).
pub(crate) fn write_log(path: &Path, intervals: &Intervals) -> anyhow::Result<()> {
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
    );
    let mut serializer = V2DeflateSerializer::new();
    {
        let mut log = IntervalLogWriterBuilder::new()
            .add_comment(
                "livecast-loadtest histograms (merged): microseconds; tags name the measure",
            )
            .begin_log_with(&mut file, &mut serializer)
            .context("writing the histogram log")?;
        for ((t, tag), h) in intervals {
            log.write_histogram(
                h,
                Duration::from_secs(*t),
                Duration::from_secs(1),
                Tag::new(tag),
            )
            .map_err(|e| anyhow::anyhow!("writing the histogram log: {e:?}"))?;
        }
    }
    file.flush()?;
    Ok(())
}

/// One second of the run, for the report's charts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Sample {
    /// Seconds since the run's base time (`--start-at`, else its start).
    pub t: u64,
    pub viewers: u64,
    pub requests: u64,
    pub errors: u64,
    pub bytes: u64,
    pub stalls: u64,
    pub latency_p50: Option<f64>,
    pub latency_p99: Option<f64>,
    /// The shipper's concurrent-viewer count at that second (`--viewers-url`).
    #[serde(default)]
    pub shipper_viewers: Option<u64>,
}

/// The counts the collector keeps.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Counts {
    /// Requests by kind, failed ones included.
    pub requests: BTreeMap<String, u64>,
    /// Failed requests by kind of failure (status code or transport error).
    pub errors: BTreeMap<String, u64>,
    /// Requests by the front-end that answered (`livecast-replica`), `unknown` when none said.
    pub frontends: BTreeMap<String, u64>,
    pub bytes: u64,
    /// Early requests for preload-hinted parts.
    pub hinted: u64,
    pub stalls: u64,
    pub switches: u64,
    pub series: Vec<Sample>,
}

/// What the collector hands back.
#[derive(Debug)]
pub(crate) struct Collected {
    pub hists: Hists,
    pub counts: Counts,
}

/// Where the collector writes.
#[derive(Debug, Clone)]
pub(crate) struct Sinks {
    pub hlog: PathBuf,
    pub requests_out: Option<PathBuf>,
    /// The interval log's base time: interval timestamps are seconds since it.
    pub base: SystemTime,
    /// Seconds from the base time to this run's start (its shard may start later).
    pub offset_secs: u64,
}

/// Runs until every viewer has dropped its sender.
pub(crate) async fn collect(
    mut rx: UnboundedReceiver<Event>,
    live: Arc<Live>,
    sinks: Sinks,
) -> anyhow::Result<Collected> {
    let mut hlog_file = std::io::BufWriter::new(
        std::fs::File::create(&sinks.hlog)
            .with_context(|| format!("cannot create {}", sinks.hlog.display()))?,
    );
    let mut serializer = V2DeflateSerializer::new();
    let base_secs = sinks
        .base
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let mut hlog = IntervalLogWriterBuilder::new()
        .add_comment("livecast-loadtest histograms: microseconds; tags name the measure")
        .with_start_time(sinks.base)
        .with_base_time(sinks.base)
        .begin_log_with(&mut hlog_file, &mut serializer)
        .context("writing the histogram log")?;
    let _ = base_secs;
    let mut requests_out = match &sinks.requests_out {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => None,
    };
    let mut total = Hists::default();
    let mut interval = Hists::default();
    let mut counts = Counts::default();
    let (mut i_requests, mut i_errors, mut i_bytes, mut i_stalls) = (0u64, 0u64, 0u64, 0u64);
    let mut second = sinks.offset_secs;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let micros = |ms: f64| (ms * 1000.0).round().max(1.0) as u64;
    loop {
        tokio::select! {
            event = rx.recv() => {
                let Some(event) = event else { break };
                match event {
                    Event::Request(r) => {
                        *counts.requests.entry(r.kind.as_str().to_string()).or_default() += 1;
                        let replica = r.replica.as_deref().unwrap_or("unknown").to_string();
                        *counts.frontends.entry(replica).or_default() += 1;
                        counts.bytes += r.bytes;
                        i_requests += 1;
                        i_bytes += r.bytes;
                        counts.hinted += u64::from(r.hinted);
                        if let Some(e) = &r.error {
                            *counts.errors.entry(e.clone()).or_default() += 1;
                            i_errors += 1;
                        }
                        if let (Some(first), Some(last)) = (r.first_ms, r.last_ms) {
                            interval.first[r.kind.index()].saturating_record(micros(first));
                            interval.last[r.kind.index()].saturating_record(micros(last));
                        }
                        if let Some(out) = requests_out.as_mut() {
                            let line = serde_json::json!({
                                "t_ms": (r.sent_ms * 1000.0).round() / 1000.0,
                                "viewer": r.viewer,
                                "type": r.kind.as_str(),
                                "url": r.url,
                                "status": r.status,
                                "first_byte_ms": r.first_ms,
                                "last_byte_ms": r.last_ms,
                                "bytes": r.bytes,
                                "error": r.error,
                                "replica": r.replica.as_deref(),
                                "hinted": r.hinted,
                            });
                            serde_json::to_writer(&mut *out, &line)?;
                            out.write_all(b"\n")?;
                        }
                    }
                    Event::Startup(ms) => interval.startup.saturating_record(micros(ms)),
                    Event::Latency { latency, edge } => {
                        interval.latency.saturating_record(micros(latency * 1000.0));
                        interval.edge.saturating_record(micros(edge * 1000.0));
                    }
                    Event::Stall => {
                        counts.stalls += 1;
                        i_stalls += 1;
                    }
                    Event::Switch => counts.switches += 1,
                }
            }
            _ = tick.tick() => {
                let secs = |us: u64| us as f64 / 1e6;
                let lat = &interval.latency;
                counts.series.push(Sample {
                    t: second,
                    viewers: live.viewers.get() as u64,
                    requests: i_requests,
                    errors: i_errors,
                    bytes: i_bytes,
                    stalls: i_stalls,
                    latency_p50: (!lat.is_empty()).then(|| secs(lat.value_at_quantile(0.5))),
                    latency_p99: (!lat.is_empty()).then(|| secs(lat.value_at_quantile(0.99))),
                    shipper_viewers: u64::try_from(live.shipper_viewers.get()).ok(),
                });
                write_interval(&mut hlog, &interval, second)?;
                // Each second's requests reach the file, so it can be followed during the run.
                if let Some(out) = requests_out.as_mut() {
                    out.flush()?;
                }
                total.add(&interval);
                interval.reset();
                (i_requests, i_errors, i_bytes, i_stalls) = (0, 0, 0, 0);
                second += 1;
            }
        }
    }
    // What arrived after the last tick belongs to the last second.
    write_interval(&mut hlog, &interval, second)?;
    total.add(&interval);
    if let Some(last) = counts.series.last_mut().filter(|_| i_requests > 0) {
        last.requests += i_requests;
        last.errors += i_errors;
        last.bytes += i_bytes;
        last.stalls += i_stalls;
    }
    drop(hlog);
    hlog_file.flush()?;
    if let Some(mut out) = requests_out {
        out.flush()?;
    }
    Ok(Collected {
        hists: total,
        counts,
    })
}

/// Writes each non-empty histogram of `interval` as second `second` of the log.
fn write_interval<W: std::io::Write, S: hdrhistogram::serialization::Serializer>(
    hlog: &mut hdrhistogram::serialization::interval_log::IntervalLogWriter<'_, '_, W, S>,
    interval: &Hists,
    second: u64,
) -> anyhow::Result<()>
where
    S::SerializeError: std::fmt::Debug,
{
    for (tag, h) in interval.tagged() {
        if !h.is_empty() {
            hlog.write_histogram(
                h,
                Duration::from_secs(second),
                Duration::from_secs(1),
                Tag::new(&tag),
            )
            .map_err(|e| anyhow::anyhow!("writing the histogram log: {e:?}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interval_log_reads_back_to_the_same_totals() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.hlog");
        let mut h = Hists::default();
        for v in 1..=1000u64 {
            h.latency.record(v * 1000).unwrap();
            h.first[Kind::Part.index()].record(v).unwrap();
        }
        {
            let mut file = std::fs::File::create(&path).unwrap();
            let mut ser = V2DeflateSerializer::new();
            let mut log = IntervalLogWriterBuilder::new()
                .with_base_time(SystemTime::UNIX_EPOCH + Duration::from_secs(100))
                .begin_log_with(&mut file, &mut ser)
                .unwrap();
            for (tag, hist) in h.tagged() {
                if !hist.is_empty() {
                    log.write_histogram(
                        hist,
                        Duration::from_secs(3),
                        Duration::from_secs(1),
                        Tag::new(&tag),
                    )
                    .unwrap();
                }
            }
        }
        let intervals = read_log(&path).unwrap();
        let back = totals(&intervals);
        assert_eq!(back.latency.len(), 1000);
        assert_eq!(
            back.latency.value_at_quantile(0.99),
            h.latency.value_at_quantile(0.99)
        );
        assert_eq!(back.first[Kind::Part.index()].len(), 1000);
        assert!(intervals.contains_key(&(3, "latency".to_string())));
        // Written again (as a merge does), it reads back the same.
        let again = dir.path().join("again.hlog");
        write_log(&again, &intervals).unwrap();
        assert_eq!(read_log(&again).unwrap(), intervals);
    }
}
