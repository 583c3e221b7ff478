//! The command line. Every flag also reads `LIVECAST_<FLAG>`, like the other binaries.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use livecast_telemetry::LogArgs;

/// An HLS audience that behaves like players.
#[derive(Debug, Parser)]
#[command(name = "livecast-loadtest", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Play URL (a media playlist) with N viewers for a while; write DIR/summary.json.
    Run(RunArgs),
}

/// Flags of `run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// The media playlist, e.g. http://HOST:8080/hls/talk/index.m3u8.
    pub url: String,
    /// Viewers at once (after the ramp).
    #[arg(long, env = "LIVECAST_VIEWERS", default_value_t = 10)]
    pub viewers: usize,
    /// How long the run lasts, ramp included (e.g. 60s, 5m).
    #[arg(long, env = "LIVECAST_DURATION", default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Viewers join evenly over this long (0s: all at once, a flash crowd).
    #[arg(long, env = "LIVECAST_RAMP", default_value = "0s", value_parser = parse_duration)]
    pub ramp: Duration,
    /// Where summary.json goes (created if missing).
    #[arg(long, env = "LIVECAST_OUT", default_value = "./loadtest-out")]
    pub out: PathBuf,
    /// Fail (exit 1) when the rebuffer ratio (stalled time / watched time) is above this.
    #[arg(long, env = "LIVECAST_MAX_STALL_RATIO")]
    pub max_stall_ratio: Option<f64>,
    /// Fail (exit 1) when the share of failed requests is above this (0: none may fail).
    #[arg(long, env = "LIVECAST_MAX_ERROR_RATE")]
    pub max_error_rate: Option<f64>,
    /// Seconds between progress lines on stderr (0: none).
    #[arg(long, env = "LIVECAST_PROGRESS_SECS", default_value_t = 1)]
    pub progress_secs: u64,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (write e.g. 30s, 5m)"))
}
