//! livecast-web: the HLS front-end. Serves playlists and segments from the shared volume, the
//! player page with the stream list, and writes one JSON access-log line per request.
//!
//! The front-end never talks to ingest: the volume is the only coupling (see ARCHITECTURE.md). It
//! reads only below `--hls-dir`, and only names from a safe alphabet, so no request can reach
//! a file outside the volume.
//!
//! # Layout
//!
//! - [`config`]: flags and their validation.
//! - [`server`]: the router and [`run`].
//! - `app`: the state the handlers share.
//! - `volume`: the in-memory view of the volume, kept coherent by file-system events.
//! - `hls`: playlists and segments: content types, cache policy, LL-HLS blocking reload,
//!   delta updates and preload-hinted parts.
//! - `http`: HLS-agnostic HTTP helpers: safe path components, ranges, validators and
//!   conditional requests, gzip negotiation, CORS.
//! - `zerocopy`: large cached files kept with a read-only twin file and sent from it with
//!   `sendfile` on a corked socket.
//! - `streams`: `/api/streams`, the live streams found on the volume with bitrate, age and the
//!   ingest's publish facts (with publishers on the admin port).
//! - `player`: the player page and the embedded hls.js.
//! - `access_log`: the JSON access log (ECS names, session cookie, rotation) and its middleware.
//! - `metrics`: every metric this crate exports.
//! - [`error`]: the crate's error type.

mod access_log;
mod app;
pub mod config;
pub mod error;
mod hls;
mod http;
mod metrics;
mod player;
pub mod server;
mod streams;
mod volume;
mod zerocopy;

#[doc(hidden)]
pub use hls::fuzzing;

pub use config::Config;
pub use error::WebError;
pub use server::{run, Listeners};
