//! livecast-ingest: accepts RTMP publishes and writes each stream as HLS to a shared volume.
//!
//! A publish runs on its connection's task: the connection parses RTMP and hands each FLV tag
//! body to the publish's pipeline, which cuts segments and LL-HLS parts with `livecast-media`.
//! Media is written before the playlist that names it: a segment without parts is written
//! whole and renamed into place, parts are appended to their segment's file, and the playlist
//! is replaced atomically, so a slow disk slows the publisher (TCP pushes back) instead of
//! memory growing.
//! A front-end never reads a byte that a playlist does not yet name.
//!
//! # Layout
//!
//! - [`config`]: flags and their validation.
//! - [`server`]: the accept loop, the admin server and [`run`].
//! - `connection`: one RTMP connection: handshake, session, publish admission.
//! - `pipeline`: one publish: segmenter in, the files written in order out.
//! - `playlist`: the playlist policy of a publish (names, parts, hints, retirement holds).
//! - `shared`: the state every connection and pipeline shares (admission, metrics, live names).
//! - `ending`: when a stream whose publisher left ends (the reconnect grace).
//! - `files`: a stream directory's files: atomic writes, playlist spares, recycled media files.
//! - `renditions`: what ties a stream's renditions together: aligned segment numbers, the
//!   master playlist, rendition reports.
//! - [`ladder`]: the server-side ladder, an ffmpeg child per publish, supervised.
//! - `metrics`: every metric this crate exports.
//! - [`error`]: the crate's error type.

mod auth;
pub mod chunk;
pub mod config;
mod connection;
mod ending;
pub mod error;
mod files;
pub mod ladder;
mod metrics;
mod pipeline;
mod playlist;
mod renditions;
pub mod server;
mod shared;

pub use config::Config;
pub use error::IngestError;
pub use server::{run, Listeners};
