//! The backend pool: which front-ends exist (the addresses discovery found) and where each is
//! in its lifecycle, with its load and latency; [`balance`] chooses one for each request.
//!
//! Lifecycle: a new address is *pending* until its health check passes `healthy_after` times in
//! a row, then *healthy*. A healthy backend that fails `unhealthy_after` active checks, or
//! `eject_after_errors` requests in a row (connect errors and 5xx), is *ejected*; checks continue
//! and bring it back after `healthy_after` passes. A backend whose check answers that it is
//! shutting down (`livecast_telemetry::LEAVING_HEADER`) is *leaving* at once: it gets no new
//! request, not even when nothing else is healthy, so neither a first try nor a retry goes to
//! a replica that is on its way out; a later pass makes it pending again. An address that
//! disappears from DNS is *draining*: it gets no new requests and leaves the pool once its
//! in-flight requests are done.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use prometheus::{Histogram, IntCounter};

use serde::Serialize;
use tokio::sync::futures::Notified;
use tokio::sync::Notify;

use crate::metrics::Metrics;

mod balance;

pub use balance::Policy;

/// Where a backend is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Discovered, not yet proven healthy.
    Pending,
    /// In rotation.
    Healthy,
    /// Taken out after failures; probed until it recovers.
    Ejected,
    /// Gone from discovery; finishing its in-flight requests.
    Draining,
    /// Said it is shutting down; finishing its in-flight requests, never chosen.
    Leaving,
}

/// What one active health check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Pass,
    Fail,
    /// The backend answered that it is shutting down.
    Leaving,
}

impl State {
    /// Every state, for the per-state gauge.
    pub const ALL: [State; 5] = [
        State::Pending,
        State::Healthy,
        State::Ejected,
        State::Draining,
        State::Leaving,
    ];

    /// The label value of this state.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Healthy => "healthy",
            State::Ejected => "ejected",
            State::Draining => "draining",
            State::Leaving => "leaving",
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            1 => State::Healthy,
            2 => State::Ejected,
            3 => State::Draining,
            4 => State::Leaving,
            _ => State::Pending,
        }
    }
}

/// Thresholds of the lifecycle.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    pub healthy_after: u32,
    pub unhealthy_after: u32,
    pub eject_after_errors: u32,
}

/// One backend address.
#[derive(Debug)]
pub struct Backend {
    pub addr: SocketAddr,
    label: String,
    state: AtomicU8,
    inflight: AtomicUsize,
    /// Latency EWMA in microseconds.
    ewma_us: AtomicU64,
    /// When the EWMA last took a sample (`now_ms`): an estimate older than [`STALE_MS`] is
    /// not trusted, so a backend that lost every choice on one slow answer is tried again.
    sampled_ms: AtomicU64,
    successes: AtomicU32,
    failures: AtomicU32,
    errors: AtomicU32,
    requests: AtomicU64,
    /// This backend's metric children, looked up once instead of per request.
    handles: OnceLock<BackendMetrics>,
    /// Woken when the backend is ejected: requests still waiting for its answer go elsewhere.
    ejected: Notify,
}

/// Per-backend metric handles.
#[derive(Debug)]
pub struct BackendMetrics {
    pub duration: Histogram,
    /// Responses by status class: 1xx .. 5xx.
    pub by_class: [IntCounter; 5],
}

impl Backend {
    fn new(addr: SocketAddr) -> Self {
        Self {
            handles: OnceLock::new(),
            addr,
            label: addr.to_string(),
            state: AtomicU8::new(0),
            inflight: AtomicUsize::new(0),
            ewma_us: AtomicU64::new(0),
            sampled_ms: AtomicU64::new(0),
            successes: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            errors: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            ejected: Notify::new(),
        }
    }

    /// Resolves when this backend is next ejected. Counts from when it is called, not from
    /// its first poll: a request creates it before it sends, so an ejection while it sends
    /// is not missed.
    pub fn ejection(&self) -> Notified<'_> {
        self.ejected.notified()
    }

    /// The metric label of this backend (its address).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The metric handles of this backend.
    pub fn metrics(&self, metrics: &Metrics) -> &BackendMetrics {
        self.handles.get_or_init(|| BackendMetrics {
            duration: metrics.upstream_duration.with_label_values(&[&self.label]),
            by_class: ["1xx", "2xx", "3xx", "4xx", "5xx"]
                .map(|class| metrics.requests.with_label_values(&[&self.label, class])),
        })
    }

    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Acquire))
    }

    fn set_state(&self, state: State) -> bool {
        let new = state as u8;
        let old = self.state.swap(new, Ordering::AcqRel);
        if old != new {
            self.successes.store(0, Ordering::Relaxed);
            self.failures.store(0, Ordering::Relaxed);
            self.errors.store(0, Ordering::Relaxed);
            tracing::info!(backend = %self.addr, from = State::from_u8(old).as_str(), to = state.as_str(), "backend state changed");
            if state == State::Ejected {
                self.ejected.notify_waiters();
            }
        }
        old != new
    }

    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
    }
}

/// How long a latency estimate is trusted without a new sample.
const STALE_MS: u64 = 2000;

/// Milliseconds on a monotonic clock shared by every backend, from 1 (0 means "never").
fn now_ms() -> u64 {
    static EPOCH: OnceLock<std::time::Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(std::time::Instant::now);
    epoch.elapsed().as_millis() as u64 + 1
}

/// A request in flight on a backend; dropping it releases the slot.
#[derive(Debug)]
pub struct Lease {
    pub backend: Arc<Backend>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.backend.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The pool; see the module documentation.
#[derive(Debug)]
pub struct Pool {
    backends: RwLock<Arc<Vec<Arc<Backend>>>>,
    policy: Policy,
    thresholds: Thresholds,
    next: AtomicUsize,
    metrics: Metrics,
}

impl Pool {
    pub fn new(policy: Policy, thresholds: Thresholds, metrics: Metrics) -> Self {
        Self {
            backends: RwLock::new(Arc::new(Vec::new())),
            policy,
            thresholds,
            next: AtomicUsize::new(0),
            metrics,
        }
    }

    pub fn snapshot(&self) -> Arc<Vec<Arc<Backend>>> {
        self.backends.read().map(|b| b.clone()).unwrap_or_default()
    }

    /// Applies a discovery result: new addresses join as pending, vanished ones drain, a
    /// draining address that comes back is pending again. Returns (added, removed).
    pub fn set_members(&self, addrs: &BTreeSet<SocketAddr>) -> (usize, usize) {
        let current = self.snapshot();
        let mut next: Vec<Arc<Backend>> = Vec::with_capacity(addrs.len());
        let (mut added, mut removed) = (0, 0);
        for b in current.iter() {
            if addrs.contains(&b.addr) {
                if b.state() == State::Draining {
                    b.set_state(State::Pending);
                    added += 1;
                }
                next.push(b.clone());
            } else if b.state() != State::Draining {
                b.set_state(State::Draining);
                removed += 1;
                next.push(b.clone());
            } else {
                next.push(b.clone());
            }
        }
        for addr in addrs {
            if !current.iter().any(|b| b.addr == *addr) {
                tracing::info!(backend = %addr, "backend discovered");
                next.push(Arc::new(Backend::new(*addr)));
                added += 1;
            }
        }
        if let Ok(mut b) = self.backends.write() {
            *b = Arc::new(next);
        }
        self.prune();
        (added, removed)
    }

    /// Drops draining backends with nothing in flight.
    pub fn prune(&self) {
        let current = self.snapshot();
        if current
            .iter()
            .any(|b| b.state() == State::Draining && b.inflight() == 0)
        {
            let kept: Vec<_> = current
                .iter()
                .filter(|b| !(b.state() == State::Draining && b.inflight() == 0))
                .cloned()
                .collect();
            for b in current
                .iter()
                .filter(|b| b.state() == State::Draining && b.inflight() == 0)
            {
                tracing::info!(backend = %b.addr, "backend drained and removed");
            }
            if let Ok(mut b) = self.backends.write() {
                *b = Arc::new(kept);
            }
        }
        self.update_gauges();
    }

    pub fn update_gauges(&self) {
        let current = self.snapshot();
        for state in State::ALL {
            let n = current.iter().filter(|b| b.state() == state).count();
            self.metrics
                .backends
                .with_label_values(&[state.as_str()])
                .set(n as i64);
        }
    }

    /// Whether any backend is in rotation.
    pub fn has_healthy(&self) -> bool {
        self.snapshot().iter().any(|b| b.state() == State::Healthy)
    }

    /// Chooses a backend, skipping `exclude` (the one a retry moves away from). When nothing is
    /// healthy it fails open over pending and ejected backends rather than refuse everyone.
    pub fn pick(&self, exclude: Option<SocketAddr>) -> Option<Lease> {
        self.pick_at(exclude, now_ms())
    }

    fn pick_at(&self, exclude: Option<SocketAddr>, now_ms: u64) -> Option<Lease> {
        let all = self.backends.read().ok()?;
        let healthy = |b: &&Arc<Backend>| b.state() == State::Healthy && Some(b.addr) != exclude;
        let fallback = |b: &&Arc<Backend>| {
            matches!(b.state(), State::Pending | State::Ejected) && Some(b.addr) != exclude
        };
        let mut n = all.iter().filter(healthy).count();
        let usable: &dyn Fn(&&Arc<Backend>) -> bool = if n > 0 {
            &healthy
        } else {
            n = all.iter().filter(fallback).count();
            if n > 0 {
                self.metrics.fail_open.inc();
            }
            &fallback
        };
        let nth = |i: usize| all.iter().filter(|b| usable(b)).nth(i);
        let chosen = balance::choose(self.policy, &self.next, n, nth, now_ms)?;
        chosen.inflight.fetch_add(1, Ordering::AcqRel);
        chosen.requests.fetch_add(1, Ordering::Relaxed);
        Some(Lease {
            backend: chosen.clone(),
        })
    }

    /// Passive feedback from a proxied request. `latency` is `None` for an answer that was
    /// held on purpose (an LL-HLS blocking playlist reload): its wait says nothing about the
    /// backend's speed.
    pub fn observe(&self, backend: &Backend, latency: Option<Duration>, ok: bool) {
        if ok {
            if let Some(latency) = latency {
                let sample = latency.as_micros().min(u128::from(u64::MAX)) as u64;
                let old = backend.ewma_us.load(Ordering::Relaxed);
                let now = now_ms();
                let stale =
                    now.saturating_sub(backend.sampled_ms.load(Ordering::Relaxed)) > STALE_MS;
                // Weight 1/4 on the newest sample: reacts within a few requests, ignores
                // one-off spikes. A stale estimate is replaced, not averaged.
                let new = if old == 0 || stale {
                    sample
                } else {
                    (old * 3 + sample) / 4
                };
                backend.ewma_us.store(new, Ordering::Relaxed);
                backend.sampled_ms.store(now, Ordering::Relaxed);
            }
            // Read first: a store on every request would bounce the line between workers.
            if backend.errors.load(Ordering::Relaxed) != 0 {
                backend.errors.store(0, Ordering::Relaxed);
            }
            return;
        }
        let errors = backend.errors.fetch_add(1, Ordering::AcqRel) + 1;
        if backend.state() == State::Healthy && errors >= self.thresholds.eject_after_errors {
            tracing::warn!(backend = %backend.addr, errors, "ejecting backend after request errors");
            if backend.set_state(State::Ejected) {
                self.metrics.ejections.with_label_values(&["passive"]).inc();
            }
            self.update_gauges();
        }
    }

    /// Result of an active health check.
    pub fn health_result(&self, backend: &Backend, check: Check) {
        let state = backend.state();
        if state == State::Draining {
            return;
        }
        if check == Check::Leaving {
            backend.successes.store(0, Ordering::Relaxed);
            if backend.set_state(State::Leaving) && state == State::Healthy {
                self.metrics.ejections.with_label_values(&["leaving"]).inc();
            }
        } else if check == Check::Pass {
            backend.failures.store(0, Ordering::Relaxed);
            let passes = backend.successes.fetch_add(1, Ordering::AcqRel) + 1;
            if state != State::Healthy && passes >= self.thresholds.healthy_after {
                backend.set_state(State::Healthy);
            } else if state == State::Leaving {
                // Back (a restart on the same address): proven again like a new one.
                backend.set_state(State::Pending);
            }
        } else {
            backend.successes.store(0, Ordering::Relaxed);
            let fails = backend.failures.fetch_add(1, Ordering::AcqRel) + 1;
            if state == State::Healthy
                && fails >= self.thresholds.unhealthy_after
                && backend.set_state(State::Ejected)
            {
                self.metrics.ejections.with_label_values(&["active"]).inc();
            }
        }
        self.update_gauges();
    }

    /// The pool as the operator status page shows it.
    pub fn describe(&self) -> Vec<BackendStatus> {
        self.snapshot()
            .iter()
            .map(|b| BackendStatus {
                address: b.label.clone(),
                state: b.state(),
                inflight: b.inflight(),
                latency_ms: b.ewma_us.load(Ordering::Relaxed) as f64 / 1000.0,
                requests: b.requests.load(Ordering::Relaxed),
            })
            .collect()
    }
}

/// One backend on the status page.
#[derive(Debug, Serialize)]
pub struct BackendStatus {
    pub address: String,
    pub state: State,
    pub inflight: usize,
    pub latency_ms: f64,
    pub requests: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(policy: Policy) -> Pool {
        let metrics = Metrics::register(&prometheus::Registry::new()).unwrap();
        Pool::new(
            policy,
            Thresholds {
                healthy_after: 2,
                unhealthy_after: 2,
                eject_after_errors: 3,
            },
            metrics,
        )
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn lifecycle() {
        let p = pool(Policy::RoundRobin);
        p.set_members(&[addr(1), addr(2)].into());
        let b1 = p.snapshot()[0].clone();
        assert_eq!(b1.state(), State::Pending);
        p.health_result(&b1, Check::Pass);
        assert_eq!(b1.state(), State::Pending, "one pass is not enough");
        p.health_result(&b1, Check::Pass);
        assert_eq!(b1.state(), State::Healthy);
        // Only the healthy one is picked while another is pending.
        for _ in 0..4 {
            assert_eq!(p.pick(None).unwrap().backend.addr, addr(1));
        }
        // Passive ejection after three request errors, active recovery after two passes.
        for _ in 0..3 {
            p.observe(&b1, Some(Duration::ZERO), false);
        }
        assert_eq!(b1.state(), State::Ejected);
        p.health_result(&b1, Check::Pass);
        p.health_result(&b1, Check::Pass);
        assert_eq!(b1.state(), State::Healthy);
        // Vanishing drains; the lease keeps it until released.
        let lease = p.pick(None).unwrap();
        p.set_members(&[addr(2)].into());
        assert_eq!(b1.state(), State::Draining);
        assert!(
            p.pick(None).is_some_and(|l| l.backend.addr == addr(2)),
            "fail open to the pending one"
        );
        assert_eq!(p.snapshot().len(), 2);
        drop(lease);
        p.prune();
        assert_eq!(p.snapshot().len(), 1);
    }

    #[test]
    fn a_leaving_backend_is_never_chosen_even_to_fail_open() {
        let p = pool(Policy::RoundRobin);
        p.set_members(&[addr(1), addr(2)].into());
        let (b1, b2) = (p.snapshot()[0].clone(), p.snapshot()[1].clone());
        for b in [&b1, &b2] {
            p.health_result(b, Check::Pass);
            p.health_result(b, Check::Pass);
        }
        // One answer is enough: no waiting for `unhealthy_after` failures.
        p.health_result(&b1, Check::Leaving);
        assert_eq!(b1.state(), State::Leaving);
        for _ in 0..4 {
            assert_eq!(p.pick(None).unwrap().backend.addr, addr(2));
        }
        // A retry away from the other one does not land on the leaving one either.
        assert!(p.pick(Some(addr(2))).is_none());
        p.health_result(&b2, Check::Leaving);
        assert!(p.pick(None).is_none(), "no fail-open onto leaving replicas");
        // A leaving one that comes back (restarted on its address) is proven again.
        p.health_result(&b1, Check::Pass);
        assert_eq!(b1.state(), State::Pending);
        p.health_result(&b1, Check::Pass);
        p.health_result(&b1, Check::Pass);
        assert_eq!(b1.state(), State::Healthy);
        // Gone from discovery: draining, as any other.
        p.set_members(&[addr(1)].into());
        assert_eq!(b2.state(), State::Draining);
    }

    #[test]
    fn p2c_tries_again_a_backend_whose_one_slow_answer_is_stale() {
        let p = pool(Policy::P2c);
        p.set_members(&[addr(1), addr(2)].into());
        let (b1, b2) = (p.snapshot()[0].clone(), p.snapshot()[1].clone());
        for b in [&b1, &b2] {
            p.health_result(b, Check::Pass);
            p.health_result(b, Check::Pass);
        }
        // b1's only answer was slow (a cold read); b2 answers fast.
        p.observe(&b1, Some(Duration::from_millis(800)), true);
        p.observe(&b2, Some(Duration::from_millis(1)), true);
        let now = now_ms();
        let picked = |at: u64| {
            (0..50)
                .filter(|_| p.pick_at(None, at).unwrap().backend.addr == addr(1))
                .count()
        };
        assert_eq!(picked(now), 0, "a fresh slow estimate loses every choice");
        // b2 keeps getting samples; b1's estimate grows stale and b1 is chosen again.
        b2.sampled_ms.store(now + STALE_MS + 1, Ordering::Relaxed);
        assert!(
            picked(now + STALE_MS + 1) > 0,
            "a stale estimate counts as unknown"
        );
        // A held answer (a blocking reload) leaves the estimate alone.
        p.observe(&b2, None, true);
        assert_eq!(b2.ewma_us.load(Ordering::Relaxed), 1000);
    }

    #[test]
    fn p2c_spreads_over_replicas_that_differ_by_noise() {
        let p = pool(Policy::P2c);
        let members: BTreeSet<SocketAddr> = (1..=3).map(addr).collect();
        p.set_members(&members);
        let backends = p.snapshot();
        for (b, ms) in backends.iter().zip([3, 4, 5]) {
            p.health_result(b, Check::Pass);
            p.health_result(b, Check::Pass);
            p.observe(b, Some(Duration::from_millis(ms)), true);
        }
        let mut counts = [0usize; 3];
        for _ in 0..3000 {
            let lease = p.pick(None).unwrap();
            counts[usize::from(lease.backend.addr.port()) - 1] += 1;
        }
        assert!(counts.iter().all(|c| *c > 700), "{counts:?}");
        // A clearly slower one (10x) still loses its comparisons.
        p.observe(&backends[2], Some(Duration::from_millis(50)), true);
        p.observe(&backends[2], Some(Duration::from_millis(50)), true);
        p.observe(&backends[2], Some(Duration::from_millis(50)), true);
        p.observe(&backends[2], Some(Duration::from_millis(50)), true);
        let slow = (0..3000)
            .filter(|_| p.pick(None).unwrap().backend.addr == addr(3))
            .count();
        assert!(slow < 100, "{slow}");
    }

    #[test]
    fn least_outstanding_and_p2c_avoid_the_busy_backend() {
        for policy in [Policy::LeastOutstanding, Policy::P2c] {
            let p = pool(policy);
            p.set_members(&[addr(1), addr(2)].into());
            for b in p.snapshot().iter() {
                p.health_result(b, Check::Pass);
                p.health_result(b, Check::Pass);
            }
            let busy: Vec<_> = (0..5).map(|_| p.pick(None).unwrap()).collect();
            // Whatever the first picks were, the loads must stay balanced within one.
            let counts: Vec<usize> = p.snapshot().iter().map(|b| b.inflight()).collect();
            assert!(counts[0].abs_diff(counts[1]) <= 1, "{policy:?}: {counts:?}");
            drop(busy);
        }
    }
}
