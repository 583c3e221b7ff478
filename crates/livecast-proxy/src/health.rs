//! Active health checks: every backend's readiness endpoint, on an interval.

use std::sync::Arc;
use std::time::Duration;

use livecast_telemetry::CancellationToken;

use crate::client::control::ControlClient;
use crate::metrics::Metrics;
use crate::pool::{Check, Pool, State};

/// Checks `GET http://<backend><path>` for every backend not draining; 2xx within `timeout`
/// passes, an answer with `livecast_telemetry::LEAVING_HEADER` (a front-end shutting down)
/// takes the backend out at once.
#[derive(Debug)]
pub(crate) struct HealthChecker {
    pub pool: Arc<Pool>,
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub metrics: Metrics,
}

impl HealthChecker {
    /// One round over the pool, all backends at once.
    pub async fn check_all(&self, client: &ControlClient) {
        let backends = self.pool.snapshot();
        let checks = backends
            .iter()
            .filter(|b| b.state() != State::Draining)
            .map(|b| {
                let uri = format!("http://{}{}", b.addr, self.path);
                async move {
                    let check = match uri.parse::<hyper::Uri>() {
                        Ok(uri) => match client.head(uri, self.timeout).await {
                            Some(head)
                                if head
                                    .headers
                                    .contains_key(livecast_telemetry::LEAVING_HEADER) =>
                            {
                                Check::Leaving
                            }
                            Some(head) if head.status.is_success() => Check::Pass,
                            _ => Check::Fail,
                        },
                        Err(_) => Check::Fail,
                    };
                    let result = if check == Check::Pass { "pass" } else { "fail" };
                    self.metrics
                        .health_checks
                        .with_label_values(&[result])
                        .inc();
                    self.pool.health_result(b, check);
                }
            });
        futures_join_all(checks).await;
        self.pool.prune();
    }

    pub async fn run(self, shutdown: CancellationToken) {
        // A fresh connection per check: a pooled one could hide a backend that stopped accepting.
        let client = ControlClient::fresh(self.timeout);
        // Rounds start on a fixed cadence (not an interval after the previous round ended), so
        // a front-end that starts leaving is seen within one interval unless a round runs long.
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            self.check_all(&client).await;
        }
    }
}

/// Runs futures concurrently on this task and waits for all of them.
async fn futures_join_all<F: std::future::Future<Output = ()>>(futures: impl Iterator<Item = F>) {
    let mut set: Vec<std::pin::Pin<Box<F>>> = futures.map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        set.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if set.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}
