//! livecast-logship: tails every front-end's access log, ships each line to Elasticsearch (or
//! OpenSearch) exactly once, and counts concurrent viewers per stream.
//!
//! Nothing is lost and nothing is duplicated: a line's offset is checkpointed only after the
//! sink acknowledged it, and every document carries a deterministic id (the file's fingerprint
//! and the line's offset), so a retry after a crash is answered 409 "already there". Files are
//! known by device and inode plus the fingerprint of their first line; checkpoints belong to
//! the fingerprint, which survives rename rotation and lets a copytruncate copy resume where
//! the original stopped.
//!
//! # Layout
//!
//! - [`config`]: flags and their validation.
//! - [`server`]: [`run`]: the wiring, the admin server (`/api/viewers`), the viewer gauges.
//! - `driver`: read → batch → deliver → acknowledge in order → checkpoint; its spill stage.
//! - `retry`: one batch's delivery: backoff with jitter, dead-lettering, the drain deadline.
//! - `sink`: the seam a destination implements ([`Sink`](sink) and its outcome).
//! - `dead_letter`: the file of lines no sink will take.
//! - `archive`: closed logs to object storage before they are removed.
//! - `source`: finding, identifying and reading log files; checkpoints.
//! - `spill`: the capped disk buffer used while the sink is slow or down.
//! - `elasticsearch`: the `_bulk` sink with per-item outcomes.
//! - `tls`: plain or rustls connections to Elasticsearch.
//! - `viewers`: the sliding-window viewer count.
//! - `zabbix`: the trapper-protocol sink: the periodic report of viewer counts and request rates.
//! - `metrics`: every metric this crate exports.
//! - [`error`]: the crate's error type.

mod archive;
pub mod config;
mod dead_letter;
mod driver;
mod elasticsearch;
pub mod error;
mod metrics;
mod retry;
pub mod server;
mod sink;
mod source;
mod spill;
mod tls;
mod viewers;
mod zabbix;

pub use config::Config;
pub use error::LogshipError;
pub use server::{run, Listeners};
