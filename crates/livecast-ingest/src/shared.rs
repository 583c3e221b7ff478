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
    /// Every stream's renditions and master playlist.
    pub renditions: crate::renditions::Renditions,
    /// What admits the server-side ladder's own publishes (made at start, never logged).
    pub ladder_secret: String,
    /// Where the ladder publishes: the plain RTMP listener's address.
    pub rtmp_local: Option<std::net::SocketAddr>,
}

impl Shared {
    /// The state at start: nothing live, publishes numbered from 1.
    pub fn new(
        config: Config,
        auth: crate::auth::Auth,
        metrics: Metrics,
        rtmp_local: Option<std::net::SocketAddr>,
        ladder_secret: String,
    ) -> Self {
        Self {
            renditions: crate::renditions::Renditions::new(
                config.hls.hls_dir.clone(),
                (config.hls.segment_secs * 1000.0).round() as i64,
            ),
            ladder_secret,
            rtmp_local,
            config,
            auth,
            metrics,
            live: Mutex::new(HashSet::new()),
            latest: Mutex::new(HashMap::new()),
            next_publish: AtomicU64::new(1),
        }
    }

    /// rtmp://HOST:PORT/live where the ladder publishes its renditions.
    pub fn ladder_target(&self) -> Option<String> {
        self.rtmp_local.map(crate::ladder::target_for)
    }

    /// Whether a publish's query carries the ladder's secret (see `ladder`).
    pub fn is_ladder_publish(&self, query: &str) -> bool {
        !self.ladder_secret.is_empty()
            && form_urlencoded::parse(query.as_bytes()).any(|(k, v)| {
                k == "ladder" && crate::auth::constant_time_eq(&v, &self.ladder_secret)
            })
    }
}
