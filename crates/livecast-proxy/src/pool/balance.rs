//! How one backend is chosen among those in service: power of two choices over load and
//! latency, least outstanding requests, or round robin. The pool decides which backends are
//! candidates; this module only picks among them.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::{Backend, STALE_MS};

/// How the balancer spreads requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Policy {
    /// Power of two random choices, scoring each by in-flight requests and latency (EWMA).
    P2c,
    /// The backend with the fewest requests in flight.
    LeastOutstanding,
    /// Each backend in turn.
    RoundRobin,
}

/// Chooses one of the `n` candidates (`nth(i)` is the i-th) by `policy`; `cursor` is the
/// pool's turn counter for the policies that go round.
pub(super) fn choose<'a>(
    policy: Policy,
    cursor: &AtomicUsize,
    n: usize,
    nth: impl Fn(usize) -> Option<&'a Arc<Backend>>,
    now_ms: u64,
) -> Option<&'a Arc<Backend>> {
    match (n, policy) {
        (0, _) => None,
        (1, _) => nth(0),
        (n, Policy::RoundRobin) => nth(cursor.fetch_add(1, Ordering::Relaxed) % n),
        (n, Policy::LeastOutstanding) => {
            let start = cursor.fetch_add(1, Ordering::Relaxed) % n;
            (0..n)
                .filter_map(|i| nth((start + i) % n))
                .min_by_key(|b| b.inflight())
        }
        (n, Policy::P2c) => {
            let a = random() as usize % n;
            let mut b = random() as usize % (n - 1);
            if b >= a {
                b += 1;
            }
            let (x, y) = (nth(a)?, nth(b)?);
            let (sx, sy) = (score(x, now_ms), score(y, now_ms));
            // Only a clear difference decides: the estimate mixes playlists and segments,
            // so near-equal replicas differ by noise, and a strict comparison would send
            // nearly everything to whichever looked faster last (one replica of three
            // idle at light load). Within a factor of two, fewer requests in flight wins,
            // then the random order.
            if sy.saturating_mul(2) < sx {
                Some(y)
            } else if sx.saturating_mul(2) < sy || x.inflight() <= y.inflight() {
                Some(x)
            } else {
                Some(y)
            }
        }
    }
}

/// A backend's expected cost for one more request: its latency estimate times the requests
/// in flight plus one.
fn score(backend: &Backend, now_ms: u64) -> u64 {
    // Unknown latency counts as 1 ms so new backends are neither shunned nor flooded. A
    // stale estimate is unknown again: power-of-two choices never picks a backend whose
    // last answer was slow (a replica's first, cold read), so its estimate would never
    // get the sample that corrects it.
    let fresh = now_ms.saturating_sub(backend.sampled_ms.load(Ordering::Relaxed)) <= STALE_MS;
    let latency = if fresh {
        backend.ewma_us.load(Ordering::Relaxed).max(1000)
    } else {
        1000
    };
    latency.saturating_mul(backend.inflight() as u64 + 1)
}

thread_local! {
    /// Per-thread xorshift state for power-of-two choices, seeded from the clock and the
    /// thread's stack address so worker threads differ.
    static RNG: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let marker = 0u8;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    (0x9e37_79b9_7f4a_7c15 ^ (&marker as *const u8 as u64) ^ u64::from(nanos)) | 1
}

fn random() -> u64 {
    RNG.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        x
    })
}
