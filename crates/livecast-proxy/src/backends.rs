//! The set of backend addresses: resolved from names on an interval, picked round robin.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use livecast_telemetry::CancellationToken;

use crate::metrics::Metrics;

/// Resolved backends.
#[derive(Debug, Default)]
pub(crate) struct Backends {
    addrs: RwLock<Arc<Vec<SocketAddr>>>,
    next: AtomicUsize,
}

impl Backends {
    /// The current addresses in a stable order.
    pub fn snapshot(&self) -> Arc<Vec<SocketAddr>> {
        self.addrs.read().map(|a| a.clone()).unwrap_or_default()
    }

    /// Round robin: where this request starts in the snapshot.
    pub fn next_index(&self, len: usize) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % len.max(1)
    }

    /// Replaces the set; returns (added, removed).
    pub fn replace(&self, new: BTreeSet<SocketAddr>) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
        let old: BTreeSet<SocketAddr> = self.snapshot().iter().copied().collect();
        let added: Vec<_> = new.difference(&old).copied().collect();
        let removed: Vec<_> = old.difference(&new).copied().collect();
        if !added.is_empty() || !removed.is_empty() {
            if let Ok(mut addrs) = self.addrs.write() {
                *addrs = Arc::new(new.into_iter().collect());
            }
        }
        (added, removed)
    }
}

/// Re-resolves backend names and keeps [`Backends`] up to date.
#[derive(Debug)]
pub(crate) struct Resolver {
    specs: Vec<(String, u16)>,
    /// The last good answer per name: a name that fails to resolve keeps its previous
    /// addresses, so a DNS hiccup does not empty the pool.
    last_known: Vec<BTreeSet<SocketAddr>>,
    backends: Arc<Backends>,
    metrics: Metrics,
}

impl Resolver {
    pub fn new(specs: Vec<(String, u16)>, backends: Arc<Backends>, metrics: Metrics) -> Self {
        let last_known = vec![BTreeSet::new(); specs.len()];
        Self {
            specs,
            last_known,
            backends,
            metrics,
        }
    }

    /// Resolves every name once and applies the result.
    pub async fn resolve_once(&mut self) {
        for (i, (host, port)) in self.specs.iter().enumerate() {
            match tokio::net::lookup_host((host.as_str(), *port)).await {
                Ok(found) => self.last_known[i] = found.collect(),
                Err(error) => tracing::warn!(%error, backend = %host, "cannot resolve backend"),
            }
        }
        let all: BTreeSet<SocketAddr> = self.last_known.iter().flatten().copied().collect();
        let (added, removed) = self.backends.replace(all);
        for addr in &added {
            tracing::info!(backend = %addr, "backend added");
        }
        for addr in &removed {
            tracing::info!(backend = %addr, "backend removed");
        }
        self.metrics
            .membership_changes
            .inc_by((added.len() + removed.len()) as u64);
        self.metrics
            .backends
            .set(self.backends.snapshot().len() as i64);
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
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_reports_membership_changes() {
        let b = Backends::default();
        let a1: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let a2: SocketAddr = "127.0.0.1:2".parse().unwrap();
        assert_eq!(b.replace([a1, a2].into()), (vec![a1, a2], vec![]));
        assert_eq!(b.replace([a2].into()), (vec![], vec![a1]));
        assert_eq!(*b.snapshot(), vec![a2]);
        let picks: Vec<_> = (0..4).map(|_| b.next_index(2)).collect();
        assert_eq!(picks, [0, 1, 0, 1]);
    }
}
