//! The load tester's own metrics: the live counters the progress line prints, also served
//! in the Prometheus text format with `--metrics-listen` (a long soak can be watched in the
//! same Grafana as the system under test).

use prometheus::{Counter, IntCounter, IntGauge, Registry};

/// Live counters of a run.
#[derive(Debug, Clone)]
pub(crate) struct Live {
    pub registry: Registry,
    /// Viewers watching now.
    pub viewers: IntGauge,
    pub requests: IntCounter,
    pub bytes: IntCounter,
    pub errors: IntCounter,
    pub stalls: IntCounter,
    /// Their time, booked when each ends.
    pub stalled_secs: Counter,
    /// The concurrent viewers the log shipper counts (`--viewers-url`); -1 until known.
    pub shipper_viewers: IntGauge,
}

impl Default for Live {
    fn default() -> Self {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("registered once");
            g
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("registered once");
            c
        };
        let viewers = gauge("livecast_loadtest_viewers", "Viewers watching now");
        let requests = counter(
            "livecast_loadtest_requests_total",
            "Requests answered or failed",
        );
        let bytes = counter(
            "livecast_loadtest_response_bytes_total",
            "Response body bytes received",
        );
        let errors = counter(
            "livecast_loadtest_errors_total",
            "Requests that failed (status or transport)",
        );
        let stalls = counter(
            "livecast_loadtest_stalls_total",
            "Waits for media of at least 250 ms",
        );
        let stalled_secs = Counter::new(
            "livecast_loadtest_stalled_seconds_total",
            "Time spent in those waits, counted when each ends",
        )
        .expect("valid metric");
        registry
            .register(Box::new(stalled_secs.clone()))
            .expect("registered once");
        let shipper_viewers = gauge(
            "livecast_loadtest_shipper_viewers",
            "Concurrent viewers the log shipper reports (-1: not asked or not known)",
        );
        shipper_viewers.set(-1);
        Self {
            shipper_viewers,
            registry,
            viewers,
            requests,
            bytes,
            errors,
            stalls,
            stalled_secs,
        }
    }
}
