//! The state every connection, pipeline and stream ending shares: the configuration, the
//! publish admission, the metrics, and which names are live.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use crate::metrics::Metrics;
use crate::Config;

/// State shared by every connection and pipeline.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The service's configuration, as validated at start.
    pub config: Config,
    /// Who may publish what (allow list, stream keys, callback, failure limits).
    pub auth: crate::auth::Auth,
    /// Every metric the ingest exports.
    pub metrics: Metrics,
    /// Names being published now; a second publisher of the same name is refused.
    pub live: Mutex<HashSet<String>>,
    /// The latest publish of each name, by number: a stream whose publisher left is ended
    /// only if no publish of its name came after (see `ending`).
    pub latest: Mutex<HashMap<String, u64>>,
    /// Number of the next publish (0 stands for one of an earlier run of the ingest).
    pub next_publish: AtomicU64,
}

impl Shared {
    /// The state at start: nothing live, publishes numbered from 1.
    pub fn new(config: Config, auth: crate::auth::Auth, metrics: Metrics) -> Self {
        Self {
            config,
            auth,
            metrics,
            live: Mutex::new(HashSet::new()),
            latest: Mutex::new(HashMap::new()),
            next_publish: AtomicU64::new(1),
        }
    }
}
