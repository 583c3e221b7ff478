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

// Parsed once per process: the size of the variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Play URL (a master or media playlist) with N viewers for a while; write
    /// DIR/summary.json, DIR/report.html and DIR/histograms.hlog.
    Run(RunArgs),
    /// Combine the output directories of several shards (`run --shard I/N`) into one summary
    /// and report, from their summaries and histogram logs.
    Merge(MergeArgs),
}

/// Flags of `merge`.
#[derive(Debug, Clone, clap::Args)]
pub struct MergeArgs {
    /// The shards' output directories.
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    /// Where the merged summary.json, report.html and histograms.hlog go.
    #[arg(long, env = "LIVECAST_OUT", default_value = "./loadtest-merged")]
    pub out: PathBuf,
    #[command(flatten)]
    pub thresholds: ThresholdArgs,
}

/// Pass/fail thresholds: a run (or merge) that misses one exits with status 1.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct ThresholdArgs {
    /// Fail (exit 1) when the rebuffer ratio (stalled time / watched time) is above this.
    #[arg(long, env = "LIVECAST_MAX_STALL_RATIO")]
    pub max_stall_ratio: Option<f64>,
    /// Fail (exit 1) when the share of failed requests is above this (0: none may fail).
    #[arg(long, env = "LIVECAST_MAX_ERROR_RATE")]
    pub max_error_rate: Option<f64>,
}

/// Flags of `run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// A master or media playlist, e.g. http://HOST:8080/hls/talk/index.m3u8.
    #[arg(env = "LIVECAST_URL")]
    pub url: String,
    /// A load profile (TOML): steps, Poisson arrivals with session lengths, a mix of viewer
    /// kinds and streams. Replaces --viewers and --ramp; its `duration` replaces --duration.
    #[arg(long, env = "LIVECAST_SCENARIO")]
    pub scenario: Option<PathBuf>,
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
    #[command(flatten)]
    pub thresholds: ThresholdArgs,
    /// Run only this share of the audience: `I/N` plays viewers I, I+N, I+2N, ... of
    /// --viewers (0-based), so N copies started with the same --start-at are one run.
    /// `dns/N` takes I from the container's name in Docker's DNS (replica K of
    /// `docker compose up --scale loadtest=N` is I = K-1).
    #[arg(long, env = "LIVECAST_SHARD", default_value = "0/1")]
    pub shard: Shard,
    /// When the run starts (RFC 3339, e.g. 2026-12-02T10:00:00Z, or Unix seconds): every
    /// shard waits for it, so their ramps and time series line up. Default: at once.
    #[arg(long, env = "LIVECAST_START_AT", value_parser = parse_time)]
    pub start_at: Option<std::time::SystemTime>,
    /// Worker threads of the run (0: one per CPU). One thread holds thousands of
    /// full-bitrate viewers at the least CPU per viewer; with two, waking tasks across
    /// threads cost half as much again per viewer (bench/loadtest_cost.py). For more
    /// viewers than a core holds, run shards (`--shard`), a process per core.
    #[arg(long, env = "LIVECAST_THREADS", default_value_t = 1)]
    pub threads: usize,
    /// Seconds between progress lines on stderr (0: none).
    #[arg(long, env = "LIVECAST_PROGRESS_SECS", default_value_t = 1)]
    pub progress_secs: u64,
    /// Which variant of a master playlist: abr (as hls.js switches), lowest, highest, or its
    /// index in the master (0 is the first listed).
    #[arg(long, env = "LIVECAST_VARIANT", default_value = "abr")]
    pub variant: VariantChoice,
    /// Catch up with the live edge on Low-Latency playlists by playing faster, up to this rate
    /// (hls.js `maxLiveSyncPlaybackRate`; 1: never, its default).
    #[arg(long, env = "LIVECAST_MAX_LIVE_SYNC_RATE", default_value_t = 1.0)]
    pub max_live_sync_rate: f64,
    /// The log shipper's metrics (e.g. http://HOST:9104/metrics): its concurrent-viewer count
    /// (the sum of `livecast_viewers_concurrent`) is polled and charted beside the true one.
    #[arg(long, env = "LIVECAST_VIEWERS_URL")]
    pub viewers_url: Option<String>,
    /// Serve the load tester's own metrics (Prometheus text, `/metrics`) on this address.
    #[arg(long, env = "LIVECAST_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Write one JSON line per request to this file (NDJSON), flushed every second so that
    /// it can be followed while the run goes (`tail -f`).
    #[arg(long, env = "LIVECAST_REQUESTS_OUT")]
    pub requests_out: Option<PathBuf>,
    /// A test seam: every viewer downloads each segment and part twice (the report's honesty
    /// checks must catch it).
    #[arg(long, env = "LIVECAST_DOWNLOAD_TWICE", hide = true)]
    pub download_twice: bool,
}

/// How a viewer picks a variant of a master playlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VariantChoice {
    Abr,
    Lowest,
    Highest,
    Index(usize),
}

impl std::str::FromStr for VariantChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "abr" | "auto" => Ok(Self::Abr),
            "lowest" => Ok(Self::Lowest),
            "highest" => Ok(Self::Highest),
            n => n.parse().map(Self::Index).map_err(|_| {
                format!("{s:?}: write abr, lowest, highest or a variant's index (0, 1, ...)")
            }),
        }
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (write e.g. 30s, 5m)"))
}

/// A share of the audience: shard `index` of `count` (`index` from the DNS name when `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: Option<usize>,
    pub count: usize,
}

impl Shard {
    /// The shard's index, asking Docker's DNS for `dns/N`.
    pub async fn resolve(self) -> anyhow::Result<usize> {
        if let Some(index) = self.index {
            return Ok(index);
        }
        let host = livecast_telemetry::naming::hostname().unwrap_or_default();
        let name = livecast_telemetry::naming::from_dns(&host)
            .await
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "--shard dns/{}: no name for this container in the DNS",
                    self.count
                )
            })?;
        let index = replica_index(&name).ok_or_else(|| {
            anyhow::anyhow!(
                "--shard dns/{}: {name:?} does not end in a replica number",
                self.count
            )
        })?;
        if index >= self.count {
            anyhow::bail!(
                "--shard dns/{}: {name:?} is replica {} of {}",
                self.count,
                index + 1,
                self.count
            );
        }
        Ok(index)
    }
}

/// Replica K (`livecast-loadtest-3`, or `livecast_loadtest_3` under Compose v1) is index K-1.
fn replica_index(name: &str) -> Option<usize> {
    let digits = name.rsplit(['-', '_']).next()?;
    digits.parse::<usize>().ok()?.checked_sub(1)
}

impl std::str::FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?}: write I/N with 0 <= I < N (e.g. 0/4), or dns/N");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if count == 0 {
            return Err(bad());
        }
        if i.trim() == "dns" {
            return Ok(Self { index: None, count });
        }
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        if index >= count {
            return Err(bad());
        }
        Ok(Self {
            index: Some(index),
            count,
        })
    }
}

fn parse_time(s: &str) -> Result<std::time::SystemTime, String> {
    if let Ok(secs) = s.parse::<f64>() {
        return Ok(std::time::UNIX_EPOCH + Duration::from_secs_f64(secs.max(0.0)));
    }
    humantime::parse_rfc3339_weak(s)
        .map_err(|e| format!("{s:?}: {e} (write e.g. 2026-12-02T10:00:00Z or Unix seconds)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_and_start_times_parse() {
        assert_eq!(
            "1/4".parse(),
            Ok(Shard {
                index: Some(1),
                count: 4
            })
        );
        assert_eq!(
            "dns/3".parse(),
            Ok(Shard {
                index: None,
                count: 3
            })
        );
        assert_eq!(replica_index("livecast-loadtest-3"), Some(2));
        assert_eq!(replica_index("livecast_loadtest_1"), Some(0));
        assert_eq!(replica_index("loadtest"), None);
        assert!("4/4".parse::<Shard>().is_err());
        assert!("0/0".parse::<Shard>().is_err());
        assert!("x".parse::<Shard>().is_err());
        assert_eq!(
            parse_time("1700000000").unwrap(),
            std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
        );
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z").unwrap(),
            std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
        );
        assert!(parse_time("soon").is_err());
        assert_eq!("abr".parse(), Ok(VariantChoice::Abr));
        assert_eq!("2".parse(), Ok(VariantChoice::Index(2)));
        assert!("fast".parse::<VariantChoice>().is_err());
    }
}
