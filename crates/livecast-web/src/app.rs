//! The state every handler and the access-log middleware share.

use std::sync::Arc;

use livecast_telemetry::{Cidr, Health};

use crate::access_log::AccessLog;
use crate::metrics::Metrics;
use crate::streams::StreamList;
use crate::volume::Volume;

/// State shared by the handlers.
#[derive(Debug)]
pub(crate) struct App {
    /// The in-memory view of the HLS volume.
    pub volume: Arc<Volume>,
    /// This front-end's name (`--instance-name`, or one resolved at start), in logs and headers.
    pub instance: String,
    /// `instance` as the value of every response's `livecast-replica` header (none when the
    /// name is not a valid header value).
    pub replica_header: Option<axum::http::HeaderValue>,
    /// Every metric the front-end exports.
    pub metrics: Metrics,
    /// The JSON access log every request appends to.
    pub access_log: Arc<AccessLog>,
    /// Peers whose forwarding headers (client address, viewer) are believed.
    pub trusted_proxies: Vec<Cidr>,
    /// Where new viewers' session cookies come from.
    pub sessions: livecast_telemetry::RandomIds,
    /// The `/api/streams` answer, rebuilt when the volume changes.
    pub stream_list: StreamList,
    /// Readiness, shared with the admin port.
    pub health: Health,
}
