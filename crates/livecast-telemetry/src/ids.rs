//! Random identifiers (session cookies, request ids) without a dependency: std's randomly keyed
//! SipHash over a counter and the clock. Unpredictable enough to tell viewers apart; not meant
//! as secrets.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// A source of random 64-bit identifiers.
#[derive(Debug)]
pub struct RandomIds {
    keys: RandomState,
    counter: AtomicU64,
}

impl Default for RandomIds {
    fn default() -> Self {
        Self::new()
    }
}

impl RandomIds {
    /// A source with fresh random keys.
    pub fn new() -> Self {
        Self {
            keys: RandomState::new(),
            counter: AtomicU64::new(0),
        }
    }

    /// The next identifier.
    pub fn next_u64(&self) -> u64 {
        let mut h = self.keys.build_hasher();
        h.write_u64(self.counter.fetch_add(1, Ordering::Relaxed));
        h.write_u128(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        h.finish()
    }

    /// `words` identifiers as one lower-case hex string (16 characters each).
    pub fn next_hex(&self, words: usize) -> String {
        (0..words)
            .map(|_| format!("{:016x}", self.next_u64()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_and_sized() {
        let ids = RandomIds::new();
        let a = ids.next_hex(2);
        assert_eq!(a.len(), 32);
        assert_ne!(a, ids.next_hex(2));
    }
}
