//! Every metric the front-end exports.

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

/// Front-end metrics. Routes are a fixed set of names, never raw paths or client addresses.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub response_bytes: IntCounter,
    pub access_log_dropped: IntCounter,
    pub cache: IntCounterVec,
    pub cache_bytes: IntGauge,
    pub blocking: IntCounterVec,
    pub sendfile_bytes: IntCounter,
}

impl Metrics {
    /// Registers every metric, with `livecast_web_info{replica, version} 1` naming this
    /// front-end (Prometheus labels it by address; dashboards join on `instance` for the name).
    pub fn register(registry: &Registry, replica: &str) -> prometheus::Result<Self> {
        let info = prometheus::IntGaugeVec::new(
            Opts::new(
                "livecast_web_info",
                "This front-end's name (as in its access log) and version; always 1",
            ),
            &["replica", "version"],
        )?;
        info.with_label_values(&[replica, env!("CARGO_PKG_VERSION")])
            .set(1);
        registry.register(Box::new(info))?;
        let m = Self {
            requests: IntCounterVec::new(
                Opts::new(
                    "livecast_web_requests_total",
                    "HTTP requests answered, by route and status class",
                ),
                &["route", "status_class"],
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "livecast_web_request_duration_seconds",
                    "Time to answer a request, by route",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
                ]),
                &["route"],
            )?,
            response_bytes: IntCounter::new(
                "livecast_web_response_bytes_total",
                "Response body bytes sent",
            )?,
            access_log_dropped: IntCounter::new(
                "livecast_web_access_log_dropped_total",
                "Access-log lines dropped because the writer fell behind",
            )?,
            cache: IntCounterVec::new(
                Opts::new(
                    "livecast_web_cache_lookups_total",
                    "Segment cache lookups, by result (hit, miss)",
                ),
                &["result"],
            )?,
            cache_bytes: IntGauge::new(
                "livecast_web_cache_bytes",
                "Bytes of segments held in memory",
            )?,
            blocking: IntCounterVec::new(
                Opts::new(
                    "livecast_web_blocking_reloads_total",
                    "LL-HLS blocking playlist reloads, by outcome (served, timeout, too_far)",
                ),
                &["outcome"],
            )?,
            sendfile_bytes: IntCounter::new(
                "livecast_web_sendfile_bytes_total",
                "Response bytes the kernel sent from a cached file's twin, without a copy",
            )?,
        };
        registry.register(Box::new(m.sendfile_bytes.clone()))?;
        registry.register(Box::new(m.cache.clone()))?;
        registry.register(Box::new(m.cache_bytes.clone()))?;
        registry.register(Box::new(m.blocking.clone()))?;
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.duration.clone()))?;
        registry.register(Box::new(m.response_bytes.clone()))?;
        registry.register(Box::new(m.access_log_dropped.clone()))?;
        Ok(m)
    }
}
