//! Every metric the balancer exports. The backend label is a front-end's address, never a
//! client's.

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Balancer metrics.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    pub requests: IntCounterVec,
    pub upstream_errors: IntCounterVec,
    pub upstream_duration: HistogramVec,
    pub retries: IntCounter,
    pub no_backend: IntCounter,
    pub backends: IntGaugeVec,
    pub membership_changes: IntCounter,
    pub ejections: IntCounterVec,
    pub health_checks: IntCounterVec,
    pub denied: IntCounterVec,
    pub fail_open: IntCounter,
    pub tokens_issued: IntCounter,
    pub idle_connections: IntGauge,
}

impl Metrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            requests: IntCounterVec::new(
                Opts::new("livecast_proxy_requests_total", "Requests answered, by backend and status class"),
                &["backend", "status_class"],
            )?,
            upstream_errors: IntCounterVec::new(
                Opts::new("livecast_proxy_upstream_errors_total", "Failed upstream calls, by backend and kind"),
                &["backend", "kind"],
            )?,
            upstream_duration: HistogramVec::new(
                HistogramOpts::new(
                    "livecast_proxy_upstream_duration_seconds",
                    "Time from sending a request upstream to its response headers, by backend",
                )
                .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0]),
                &["backend"],
            )?,
            retries: IntCounter::new("livecast_proxy_retries_total", "Requests retried on another backend")?,
            no_backend: IntCounter::new(
                "livecast_proxy_no_backend_total",
                "Requests answered 503 because no backend was usable",
            )?,
            backends: IntGaugeVec::new(
                Opts::new("livecast_proxy_backends", "Backend addresses by lifecycle state"),
                &["state"],
            )?,
            membership_changes: IntCounter::new(
                "livecast_proxy_membership_changes_total",
                "Backend addresses added to or removed from discovery",
            )?,
            ejections: IntCounterVec::new(
                Opts::new("livecast_proxy_ejections_total", "Backends ejected, by detection (active, passive)"),
                &["detection"],
            )?,
            health_checks: IntCounterVec::new(
                Opts::new("livecast_proxy_health_checks_total", "Active health checks, by result"),
                &["result"],
            )?,
            denied: IntCounterVec::new(
                Opts::new(
                    "livecast_proxy_denied_total",
                    "Requests or connections refused, by reason (not_allowed, rate_limited, connection_cap, \
                     token_missing, token_invalid, token_expired, auth_refused, auth_unavailable)",
                ),
                &["reason"],
            )?,
            fail_open: IntCounter::new(
                "livecast_proxy_fail_open_total",
                "Requests sent to a backend not proven healthy because none was",
            )?,
            tokens_issued: IntCounter::new(
                "livecast_proxy_tokens_issued_total",
                "Playback tokens handed out at /api/token after the authentication service agreed",
            )?,
            idle_connections: IntGauge::new(
                "livecast_proxy_idle_connections",
                "Plain viewer connections idle between requests, kept in their worker's idle table",
            )?,
        };
        registry.register(Box::new(m.tokens_issued.clone()))?;
        registry.register(Box::new(m.idle_connections.clone()))?;
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.upstream_errors.clone()))?;
        registry.register(Box::new(m.upstream_duration.clone()))?;
        registry.register(Box::new(m.retries.clone()))?;
        registry.register(Box::new(m.no_backend.clone()))?;
        registry.register(Box::new(m.backends.clone()))?;
        registry.register(Box::new(m.membership_changes.clone()))?;
        registry.register(Box::new(m.ejections.clone()))?;
        registry.register(Box::new(m.health_checks.clone()))?;
        registry.register(Box::new(m.denied.clone()))?;
        registry.register(Box::new(m.fail_open.clone()))?;
        Ok(m)
    }
}
