//! livecast-ingest: accepts RTMP publishes and writes each stream as HLS to a shared volume.
//!
//! Every publish gets its own pipeline task: the connection task parses RTMP and forwards FLV tag
//! bodies over a bounded channel, the pipeline cuts them into HLS segments and parts with
//! `livecast-media` and writes them and the playlist atomically (whole, then renamed in place).
//! Front-ends only ever see complete files.
//!
//! # Layout
//!
//! - [`config`]: flags and their validation.
//! - [`server`]: the accept loop, the admin server and [`run`].
//! - `connection`: one RTMP connection: handshake, session, publish admission.
//! - `pipeline`: one publish: segmenter, HLS writer, segment retirement.
//! - `ending`: when a stream whose publisher left ends (the reconnect grace).
//! - `files`: a stream directory's files: atomic writes, playlist spares, recycled media files.
//! - `metrics`: every metric this crate exports.
//! - [`error`]: the crate's error type.

mod auth;
pub mod chunk;
pub mod config;
mod connection;
mod ending;
pub mod error;
mod files;
mod metrics;
mod pipeline;
pub mod server;

pub use config::Config;
pub use error::IngestError;
pub use server::{run, Listeners};
