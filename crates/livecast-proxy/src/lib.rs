//! livecast-proxy: the reverse-proxy load balancer in front of the HLS front-ends.
//!
//! Backends are given as `HOST:PORT` names and re-resolved on a short interval, because Docker's
//! DNS answers with a long TTL and `docker compose up --scale web=N` changes the set of
//! addresses behind one name. Requests are spread round robin; a GET or HEAD whose connection
//! attempt fails is retried once on another backend, so a dead front-end costs no viewer an
//! error.
//!
//! # Layout
//!
//! - [`config`]: flags and their validation.
//! - [`server`]: the accept loop and [`run`].
//! - `backends`: the resolved backend set, its refresh loop and the round-robin pick.
//! - `forward`: one request: header rewriting, upstream call, retry.
//! - `metrics`: every metric this crate exports.
//! - [`error`]: the crate's error type.

mod backends;
pub mod config;
pub mod error;
mod forward;
mod metrics;
pub mod server;

pub use config::Config;
pub use error::ProxyError;
pub use server::{run, Listeners};
