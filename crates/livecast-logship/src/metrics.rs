//! Every metric the shipper exports.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// The `sink` label of the Elasticsearch/OpenSearch sink.
pub(crate) const SINK: &str = "elasticsearch";

/// Shipper metrics.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    pub lines_read: IntCounter,
    pub malformed: IntCounter,
    pub shipped: IntCounterVec,
    pub failed: IntCounterVec,
    pub dead_lettered: IntCounterVec,
    pub duplicates: IntCounterVec,
    pub bytes_behind: IntGauge,
    pub files: IntGauge,
    pub batch_seconds: Histogram,
    pub viewers: IntGaugeVec,
    pub viewers_peak: IntGaugeVec,
    pub viewers_unique: IntGaugeVec,
    pub zabbix_values: IntCounterVec,
    pub archived: IntCounter,
    pub lost_bytes: IntCounter,
    pub spill_bytes: IntGauge,
    pub spilled: IntCounter,
    pub spill_dropped: IntCounter,
}

impl Metrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            lines_read: IntCounter::new(
                "livecast_logship_lines_read_total",
                "Complete log lines read",
            )?,
            malformed: IntCounter::new(
                "livecast_logship_malformed_lines_total",
                "Lines that were not access-log JSON (dead-lettered)",
            )?,
            shipped: IntCounterVec::new(
                Opts::new(
                    "livecast_logship_lines_shipped_total",
                    "Lines acknowledged by a sink",
                ),
                &["sink"],
            )?,
            failed: IntCounterVec::new(
                Opts::new(
                    "livecast_logship_lines_failed_total",
                    "Line deliveries that failed and were retried",
                ),
                &["sink"],
            )?,
            dead_lettered: IntCounterVec::new(
                Opts::new(
                    "livecast_logship_lines_dead_lettered_total",
                    "Lines written to the dead-letter file instead of a sink",
                ),
                &["sink"],
            )?,
            duplicates: IntCounterVec::new(
                Opts::new(
                    "livecast_logship_lines_already_delivered_total",
                    "Lines a sink already had (409 on create): a retry after a crash",
                ),
                &["sink"],
            )?,
            bytes_behind: IntGauge::new(
                "livecast_logship_bytes_behind",
                "Log bytes not yet acknowledged",
            )?,
            files: IntGauge::new("livecast_logship_files", "Log files being followed")?,
            batch_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "livecast_logship_batch_seconds",
                    "Time to deliver one batch, retries included",
                )
                .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0]),
            )?,
            viewers: IntGaugeVec::new(
                Opts::new(
                    "livecast_viewers_concurrent",
                    "Viewers of a stream within the viewer window",
                ),
                &["stream"],
            )?,
            viewers_peak: IntGaugeVec::new(
                Opts::new(
                    "livecast_viewers_peak",
                    "Highest concurrent viewer count since start",
                ),
                &["stream"],
            )?,
            viewers_unique: IntGaugeVec::new(
                Opts::new("livecast_viewers_unique", "Distinct viewers since start"),
                &["stream"],
            )?,
            spill_bytes: IntGauge::new(
                "livecast_logship_spill_bytes",
                "Bytes in the disk buffer waiting for the sink",
            )?,
            spilled: IntCounter::new(
                "livecast_logship_lines_spilled_total",
                "Lines written to the disk buffer while the sink was slow or down",
            )?,
            spill_dropped: IntCounter::new(
                "livecast_logship_spill_dropped_lines_total",
                "Spilled lines dropped because the disk buffer reached --spill-max-mb",
            )?,
            lost_bytes: IntCounter::new(
                "livecast_logship_lost_bytes_total",
                "Log bytes removed by someone else before they were shipped",
            )?,
            archived: IntCounter::new(
                "livecast_logship_files_archived_total",
                "Closed logs copied to the archive and removed",
            )?,
            zabbix_values: IntCounterVec::new(
                Opts::new(
                    "livecast_logship_zabbix_values_total",
                    "Values sent to Zabbix, by result (processed, failed, unsent)",
                ),
                &["result"],
            )?,
        };
        // The one sink's series exist from the start (at 0), so dashboards and alerts on them
        // have data before the first failure rather than "no data".
        for per_sink in [&m.shipped, &m.failed, &m.dead_lettered, &m.duplicates] {
            per_sink.with_label_values(&[SINK]);
        }
        registry.register(Box::new(m.zabbix_values.clone()))?;
        registry.register(Box::new(m.archived.clone()))?;
        registry.register(Box::new(m.lost_bytes.clone()))?;
        registry.register(Box::new(m.spill_bytes.clone()))?;
        registry.register(Box::new(m.spilled.clone()))?;
        registry.register(Box::new(m.spill_dropped.clone()))?;
        registry.register(Box::new(m.lines_read.clone()))?;
        registry.register(Box::new(m.malformed.clone()))?;
        registry.register(Box::new(m.shipped.clone()))?;
        registry.register(Box::new(m.failed.clone()))?;
        registry.register(Box::new(m.dead_lettered.clone()))?;
        registry.register(Box::new(m.duplicates.clone()))?;
        registry.register(Box::new(m.bytes_behind.clone()))?;
        registry.register(Box::new(m.files.clone()))?;
        registry.register(Box::new(m.batch_seconds.clone()))?;
        registry.register(Box::new(m.viewers.clone()))?;
        registry.register(Box::new(m.viewers_peak.clone()))?;
        registry.register(Box::new(m.viewers_unique.clone()))?;
        Ok(m)
    }
}
