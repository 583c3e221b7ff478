//! Discovery: backend names are re-resolved on an interval (Docker's DNS answers with a TTL of
//! 600 s; trusting it would leave scaled replicas without traffic for ten minutes). The
//! resolver is a trait so tests can change membership without DNS.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use livecast_telemetry::CancellationToken;

use crate::metrics::Metrics;
use crate::pool::Pool;

/// Resolves a backend name.
pub trait Resolve: Send + Sync + std::fmt::Debug + 'static {
    /// Every address `host:port` stands for now.
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send + 'a>>;
}

/// The system resolver.
#[derive(Debug, Default)]
pub struct DnsResolver;

impl Resolve for DnsResolver {
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) })
    }
}

/// Keeps the pool's membership in line with what the names resolve to.
#[derive(Debug)]
pub(crate) struct Discovery {
    specs: Vec<(String, u16)>,
    /// The last good answer per name: a name that fails to resolve keeps its previous
    /// addresses, so a DNS hiccup does not empty the pool.
    last_known: Vec<BTreeSet<SocketAddr>>,
    resolver: Arc<dyn Resolve>,
    pool: Arc<Pool>,
    metrics: Metrics,
}

impl Discovery {
    pub fn new(
        specs: Vec<(String, u16)>,
        resolver: Arc<dyn Resolve>,
        pool: Arc<Pool>,
        metrics: Metrics,
    ) -> Self {
        let last_known = vec![BTreeSet::new(); specs.len()];
        Self {
            specs,
            last_known,
            resolver,
            pool,
            metrics,
        }
    }

    /// Resolves every name once and applies the result.
    pub async fn resolve_once(&mut self) {
        for (i, (host, port)) in self.specs.iter().enumerate() {
            match self.resolver.resolve(host, *port).await {
                Ok(found) => self.last_known[i] = found.into_iter().collect(),
                Err(error) => tracing::warn!(%error, backend = %host, "cannot resolve backend"),
            }
        }
        let all: BTreeSet<SocketAddr> = self.last_known.iter().flatten().copied().collect();
        let (added, removed) = self.pool.set_members(&all);
        self.metrics
            .membership_changes
            .inc_by((added + removed) as u64);
    }

    /// Resolves every `interval` until `shutdown`.
    pub async fn run(mut self, interval: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            self.resolve_once().await;
        }
    }
}
