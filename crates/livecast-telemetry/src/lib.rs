//! Shared plumbing for every livecast service, and nothing else: no domain logic lives here.
//!
//! # Layout
//!
//! - [`logging`]: `tracing` initialisation (`RUST_LOG`, `--log-format text|json`).
//! - [`admin`]: the admin router (`/metrics`, `/livez`, `/readyz`) and its server.
//! - [`cidr`]: address ranges for trust and allow lists.
//! - [`ids`]: random identifiers (sessions, request ids) without a dependency.
//! - [`linger`]: closing a connection without a reset that would destroy the last answer.
//! - [`naming`]: a container's name from Docker's reverse DNS of its own address.
//! - [`shutdown`]: a cancellation token cancelled on SIGTERM or SIGINT.
//! - [`workers`]: thread-per-core serving for the HTTP services.

pub mod admin;
pub mod cidr;
pub mod flags;
pub mod ids;
pub mod linger;
pub mod logging;
pub mod naming;
pub mod shutdown;
pub mod tls;
pub mod workers;

pub use admin::{serve_admin, serve_admin_with, Health, LEAVING_HEADER, REPLICA_HEADER};
pub use cidr::{any_contains, Cidr, PRIVATE_RANGES};
pub use flags::parse_flags;
pub use ids::RandomIds;
pub use linger::lingering_close;
pub use logging::{init_logging, LogArgs, LogFormat};
pub use prometheus::Registry;
pub use shutdown::shutdown_on_signals;
pub use tokio_util::sync::CancellationToken;
pub use workers::{serve_per_core, worker_count};

/// The status class label (`2xx`, `4xx`, ...) every service uses for request counters.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}
