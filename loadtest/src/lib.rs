//! livecast-loadtest: an HLS audience that behaves like players, not a request counter.
//!
//! Each viewer is one task with its own keep-alive connection and session cookie. It starts
//! where hls.js starts (three target durations behind the live edge, or PART-HOLD-BACK on a
//! Low-Latency playlist), fetches the init segment and every segment once, reloads the playlist
//! as RFC 8216 §6.3.4 says (or holds a blocking reload, `_HLS_msn`, when the server offers
//! them), and keeps a playback clock: buffer = media downloaded − media played, so startup
//! time, stalls, rebuffer ratio and live latency (now − PROGRAM-DATE-TIME at the playhead) are
//! what a player would have shown. Live requests carry no artificial jitter.
//!
//! # Layout
//!
//! - [`config`]: the command line (`run URL --viewers N --duration D ...`).
//! - `viewer`: one viewer's loop and its playback clock.
//! - `stats`: what viewers record, and percentiles.
//! - [`report`]: the summary (`summary.json`), the honesty checks and the thresholds.
//! - `run`: preflight, ramp, the progress line, the timer-lateness probe.

mod abr;
mod collect;
pub mod config;
mod html;
mod metrics;
mod position;
pub mod report;
mod run;
pub mod scenario;
mod stats;
mod viewer;

pub use config::{Cli, Command, MergeArgs, RunArgs, Shard, ThresholdArgs, VariantChoice};
pub use report::Summary;
pub use run::{merge, run};
