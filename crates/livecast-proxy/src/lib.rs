//! livecast-proxy: the reverse-proxy load balancer in front of the HLS front-ends.
//!
//! Backends are given as `HOST:PORT` names and re-resolved on a short interval, because Docker's
//! DNS answers with a long TTL and `docker compose up --scale web=N` changes the set of
//! addresses behind one name. Each address goes through a lifecycle (pending, healthy, ejected,
//! draining) driven by active checks of its readiness endpoint and by the outcome of real
//! requests. Requests go to healthy backends by power of two choices over in-flight load and
//! latency; a GET or HEAD that cannot connect, or gets 502/503 before any byte reached the
//! viewer, is retried once on another backend. Only the company network may watch.
//!
//! # Layout
//!
//! - [`config`]: flags and their validation.
//! - [`server`]: [`run`], the accept loop and connection cap; `server::h1` (plain HTTP/1.1
//!   viewers' GET and HEAD without hyper), `server::hyper` (HTTPS with HTTP/2 or HTTP/1.1, and
//!   what the plain loop hands over), `server::tls`.
//! - `forward`: the policy both servers follow: admission, own answers, fetch with retry,
//!   passive health feedback.
//! - `client`: `client::inline` (the HTTP/1.1 client for GET and HEAD), `client::hyper` (the
//!   other methods), `client::control` (health checks, status page, viewer count).
//! - `headers`: hop-by-hop stripping, X-Forwarded-For/-Proto, the request id.
//! - [`discovery`]: the resolver seam and the re-resolution loop.
//! - `pool`: which backends exist and their lifecycle ([`State`]); `pool::balance` chooses
//!   one ([`Policy`]).
//! - `health`: active health checks.
//! - `limits`: per-client rate limiting.
//! - [`playback`]: signed playback URLs (tokens, their check, the cookie).
//! - `issue`: `/api/token`, tokens for viewers the company's authentication service vouched for.
//! - `status`: the operator page on the admin port.
//! - `viewers`: the viewer count copied from the shipper for the player page.
//! - `metrics`: every metric this crate exports.
//! - [`error`]: the crate's error type.

mod client;
pub mod config;
pub mod discovery;
pub mod error;
mod forward;
mod headers;
mod health;
mod issue;
mod limits;
mod metrics;
pub mod playback;
mod pool;
pub mod server;
mod status;
mod viewers;

/// Entry points for the `cargo fuzz` targets in `fuzz/`; not an API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::client::inline::fuzzing::answer_head;
    pub use crate::server::h1::fuzzing::RequestHeads;
}

pub use config::Config;
pub use discovery::Resolve;
pub use error::ProxyError;
pub use pool::{Policy, State};
pub use server::{run, run_with_resolver, Listeners};
