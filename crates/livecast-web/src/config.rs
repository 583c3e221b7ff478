//! Front-end configuration: every flag also reads `LIVECAST_<FLAG>` from the environment.

use std::net::SocketAddr;
use std::path::PathBuf;

use livecast_telemetry::{Cidr, LogArgs};

use crate::WebError;

/// HLS front-end: serves the shared volume, the player page and the stream list.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "livecast-web", version, about, long_about = None)]
pub struct Config {
    /// Address for viewers (usually reached through livecast-proxy).
    #[arg(long, env = "LIVECAST_LISTEN", default_value = "0.0.0.0:8081")]
    pub listen: SocketAddr,
    /// Address of the admin server (/metrics, /livez, /readyz).
    #[arg(long, env = "LIVECAST_ADMIN_LISTEN", default_value = "0.0.0.0:9102")]
    pub admin_listen: SocketAddr,
    /// Directory the ingest writes HLS to (mounted read-only is enough).
    #[arg(long, env = "LIVECAST_HLS_DIR", default_value = "./data/hls")]
    pub hls_dir: PathBuf,
    /// Directory for the JSON access log, written as <dir>/<instance-name>.log.
    #[arg(long, env = "LIVECAST_ACCESS_LOG_DIR", default_value = "./data/logs")]
    pub access_log_dir: PathBuf,
    /// Name of this front-end in logs and the access-log file name (default: the host name).
    #[arg(long, env = "LIVECAST_INSTANCE_NAME")]
    pub instance_name: Option<String>,
    /// Take the instance name from the reverse DNS of this host's address: under Docker that
    /// is the container's name (as `docker compose ps` shows it), not its id. Falls back to
    /// the host name.
    #[arg(long, env = "LIVECAST_INSTANCE_NAME_FROM_DNS", conflicts_with = "instance_name",
          default_value_t = false, action = clap::ArgAction::Set)]
    pub instance_name_from_dns: bool,
    /// Proxies whose X-Forwarded-For names the viewer (comma-separated CIDRs); anyone else's
    /// header is ignored and the peer address is logged.
    #[arg(long = "trusted-proxy", env = "LIVECAST_TRUSTED_PROXY", value_delimiter = ',',
          default_value = livecast_telemetry::PRIVATE_RANGES)]
    pub trusted_proxies: Vec<Cidr>,
    /// Memory for hot playlists and segments, in MiB.
    #[arg(long, env = "LIVECAST_CACHE_MB", default_value_t = 256)]
    pub cache_mb: usize,
    /// Rotate the access log when it reaches this size, in MiB (the old file gets a timestamp).
    #[arg(long, env = "LIVECAST_ACCESS_LOG_MAX_MB", default_value_t = 64)]
    pub access_log_max_mb: u64,
    /// Stay unready unless this front-end's version equals this (a rollout guard).
    #[arg(long, env = "LIVECAST_EXPECT_VERSION")]
    pub expect_version: Option<String>,
    /// On SIGTERM, report unready ("leaving") for this long before closing the listener, so
    /// balancers stop sending new requests first. The default covers a livecast balancer's
    /// worst case with its defaults: a check round every second that may wait up to a second
    /// on a hung backend, plus a second of margin.
    #[arg(long, env = "LIVECAST_SHUTDOWN_DELAY_MS", default_value_t = 3000)]
    pub shutdown_delay_ms: u64,
    /// After the delay, how long in-flight requests may take to finish.
    #[arg(long, env = "LIVECAST_DRAIN_SECS", default_value_t = 10)]
    pub drain_secs: u64,
    /// Time a viewer has to send a request's headers, counted from the connection's start or
    /// the end of the previous answer (so also how long a kept-alive connection may idle).
    #[arg(long, env = "LIVECAST_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    pub header_timeout_secs: u64,
    /// Viewer connections at once; beyond it, new ones wait in the listen queue.
    #[arg(long, env = "LIVECAST_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    #[command(flatten)]
    pub log: LogArgs,
}

impl Config {
    /// Checks values clap cannot check by type.
    pub fn validate(&self) -> Result<(), WebError> {
        if let Some(name) = &self.instance_name {
            let ok = !name.is_empty()
                && name.len() <= 64
                && !name.starts_with('.')
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !ok {
                return Err(WebError::Config(format!(
                    "--instance-name must be 1-64 characters of [A-Za-z0-9._-], got {name:?}"
                )));
            }
        }
        if self.header_timeout_secs == 0 || self.max_connections == 0 {
            return Err(WebError::Config(
                "--header-timeout-secs and --max-connections must be positive".into(),
            ));
        }
        if self.cache_mb == 0 || self.access_log_max_mb == 0 {
            return Err(WebError::Config(
                "--cache-mb and --access-log-max-mb must be positive".into(),
            ));
        }
        Ok(())
    }

    /// The instance name, or the host name when none was given.
    pub fn instance(&self) -> String {
        self.instance_name.clone().unwrap_or_else(hostname)
    }

    /// [`Config::instance`], asking the DNS first with `--instance-name-from-dns`.
    pub async fn resolve_instance(&self) -> String {
        if self.instance_name_from_dns {
            let host = hostname();
            match livecast_telemetry::naming::from_dns(&host).await {
                Some(name)
                    if name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) =>
                {
                    return name
                }
                _ => tracing::warn!(%host, "no name from reverse DNS; using the host name"),
            }
        }
        self.instance()
    }
}

fn hostname() -> String {
    livecast_telemetry::naming::hostname().unwrap_or_else(|| "web".to_string())
}
