//! Shipper configuration: every flag also reads `LIVECAST_<FLAG>` from the environment.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use livecast_telemetry::LogArgs;

use crate::LogshipError;

/// Ships the front-ends' access logs and counts concurrent viewers.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "livecast-logship", version, about, long_about = None)]
pub struct Config {
    /// Address of the admin server (/metrics, /livez, /readyz, /api/viewers).
    #[arg(long, env = "LIVECAST_ADMIN_LISTEN", default_value = "0.0.0.0:9104")]
    pub admin_listen: SocketAddr,
    /// Directory holding the front-ends' access logs (see --include and --exclude).
    #[arg(long, env = "LIVECAST_LOG_DIR", default_value = "./data/logs")]
    pub log_dir: PathBuf,
    /// File names in the log directory to ship (`*` and `?` wildcards, comma-separated). The
    /// default covers the front-ends' own names and logrotate's (`.1`, `-YYYYMMDD`). A file
    /// being shipped is followed to its end whatever it is renamed to.
    #[arg(
        long,
        env = "LIVECAST_INCLUDE",
        value_delimiter = ',',
        default_value = "*.log,*.log.*,*.log-*"
    )]
    pub include: Vec<String>,
    /// File names never shipped, even when --include matches: compressed rotations are not text.
    #[arg(
        long,
        env = "LIVECAST_EXCLUDE",
        value_delimiter = ',',
        default_value = "*.gz,*.bz2,*.xz,*.zst,*.lz4,*.zip,*.Z"
    )]
    pub exclude: Vec<String>,
    /// Directory for checkpoints and the dead-letter file.
    #[arg(long, env = "LIVECAST_STATE_DIR", default_value = "./data/logship")]
    pub state_dir: PathBuf,
    /// Elasticsearch or OpenSearch base URL (http://HOST:9200 or https://HOST:9200); without it
    /// lines are only counted.
    #[arg(long, env = "LIVECAST_ELASTICSEARCH_URL")]
    pub elasticsearch_url: Option<String>,
    /// PEM file of the CAs to trust for an https:// Elasticsearch (a company CA); default: the
    /// system's bundle (/etc/ssl/certs/ca-certificates.crt).
    #[arg(long, env = "LIVECAST_ELASTICSEARCH_CA")]
    pub elasticsearch_ca: Option<PathBuf>,
    /// Index (or data stream) the documents go to.
    #[arg(
        long,
        env = "LIVECAST_ELASTICSEARCH_INDEX",
        default_value = "livecast-access"
    )]
    pub elasticsearch_index: String,
    /// Basic-auth user (with --elasticsearch-password).
    #[arg(
        long,
        env = "LIVECAST_ELASTICSEARCH_USER",
        requires = "elasticsearch_password"
    )]
    pub elasticsearch_user: Option<String>,
    /// Basic-auth password.
    #[arg(
        long,
        env = "LIVECAST_ELASTICSEARCH_PASSWORD",
        requires = "elasticsearch_user"
    )]
    pub elasticsearch_password: Option<String>,
    /// API key (sent as `Authorization: ApiKey <key>`), instead of basic auth.
    #[arg(
        long,
        env = "LIVECAST_ELASTICSEARCH_API_KEY",
        conflicts_with = "elasticsearch_user"
    )]
    pub elasticsearch_api_key: Option<String>,
    /// Compress `_bulk` bodies with gzip.
    #[arg(long, env = "LIVECAST_ELASTICSEARCH_GZIP", default_value_t = true, action = clap::ArgAction::Set)]
    pub elasticsearch_gzip: bool,
    /// Install the index template for the access-log fields (ECS types) before the first
    /// document, unless a template of the index's name exists.
    #[arg(long, env = "LIVECAST_ELASTICSEARCH_TEMPLATE", default_value_t = true, action = clap::ArgAction::Set)]
    pub elasticsearch_template: bool,
    /// Zabbix server or proxy trapper port (HOST:PORT, usually :10051) for viewer counts and
    /// request rates.
    #[arg(long, env = "LIVECAST_ZABBIX_SERVER")]
    pub zabbix_server: Option<String>,
    /// The Zabbix host the values belong to.
    #[arg(long, env = "LIVECAST_ZABBIX_HOST", default_value = "livecast")]
    pub zabbix_host: String,
    /// Item key prefix: values go to `<prefix>.viewers[<stream>]` (unsigned) and
    /// `<prefix>.requests[<stream>]` (float, requests per second), as trapper items.
    #[arg(long, env = "LIVECAST_ZABBIX_KEY_PREFIX", default_value = "livecast")]
    pub zabbix_key_prefix: String,
    /// Seconds between two Zabbix sends.
    #[arg(long, env = "LIVECAST_ZABBIX_INTERVAL_SECS", default_value_t = 60)]
    pub zabbix_interval_secs: u64,
    /// Also send `<prefix>.streams.discovery` (low-level discovery of `{#STREAM}`), which the
    /// template in deploy/zabbix turns into per-stream items and triggers.
    #[arg(long, env = "LIVECAST_ZABBIX_DISCOVERY", default_value_t = true, action = clap::ArgAction::Set)]
    pub zabbix_discovery: bool,
    /// The stream list (`http://HOST:PORT/api/streams`, the balancer's or a front-end's): live
    /// streams nobody watches are then reported to Zabbix too, with 0 viewers.
    #[arg(long, env = "LIVECAST_STREAMS_URL")]
    pub streams_url: Option<String>,
    /// Where closed (rotated, fully shipped) logs are archived before removal: `s3://bucket/prefix`
    /// (S3 or S3-compatible, configured by the usual AWS_* variables), or a directory
    /// (default: <state-dir>/archive).
    #[arg(long, env = "LIVECAST_ARCHIVE")]
    pub archive: Option<String>,
    /// A rotated log is archived once fully shipped and unchanged for this long.
    #[arg(long, env = "LIVECAST_ARCHIVE_AFTER_SECS", default_value_t = 60)]
    pub archive_after_secs: u64,
    /// Cap of the disk buffer (<state-dir>/spill) that takes batches while the sink is slow or
    /// down, in MiB; 0 turns spilling off (the logs are then the only buffer). When the cap
    /// forces a drop, the oldest spilled lines go, counted and logged.
    #[arg(long, env = "LIVECAST_SPILL_MAX_MB", default_value_t = 1024)]
    pub spill_max_mb: u64,
    /// A batch the sink has not acknowledged after this long switches shipping to the spill.
    #[arg(long, env = "LIVECAST_SPILL_AFTER_SECS", default_value_t = 5)]
    pub spill_after_secs: u64,
    /// Lines per `_bulk` request at most.
    #[arg(long, env = "LIVECAST_BATCH_LINES", default_value_t = 5000)]
    pub batch_lines: usize,
    /// A viewer counts as watching for this long after their last request.
    #[arg(long, env = "LIVECAST_VIEWER_WINDOW_SECS", default_value_t = 30)]
    pub viewer_window_secs: u64,
    /// Rescan interval when no file-system event arrives (network volumes send none).
    #[arg(long, env = "LIVECAST_POLL_INTERVAL_MS", default_value_t = 1000)]
    pub poll_interval_ms: u64,
    /// On shutdown, how long an unacknowledged batch may still be delivered.
    #[arg(long, env = "LIVECAST_DRAIN_SECS", default_value_t = 10)]
    pub drain_secs: u64,
    #[command(flatten)]
    pub log: LogArgs,
}

impl Config {
    /// The Elasticsearch URL, if one is set (an empty value, as compose files pass through,
    /// means none).
    pub fn elasticsearch(&self) -> Option<&str> {
        self.elasticsearch_url
            .as_deref()
            .filter(|u| !u.trim().is_empty())
    }

    /// The archive target: the flag, or the default directory.
    pub fn archive_target(&self) -> String {
        self.archive
            .clone()
            .filter(|a| !a.trim().is_empty())
            .unwrap_or_else(|| self.state_dir.join("archive").display().to_string())
    }

    /// The Zabbix trapper address, if one is set.
    pub fn zabbix(&self) -> Option<&str> {
        self.zabbix_server
            .as_deref()
            .filter(|s| !s.trim().is_empty())
    }

    /// The TLS client for an https:// Elasticsearch URL (None for http://).
    pub(crate) fn elasticsearch_tls(
        &self,
    ) -> Result<Option<tokio_rustls::TlsConnector>, LogshipError> {
        let https = self
            .elasticsearch()
            .is_some_and(|url| url.starts_with("https://"));
        if !https {
            return Ok(None);
        }
        match &self.elasticsearch_ca {
            Some(ca) => crate::tls::client(ca).map_err(LogshipError::Config),
            None => crate::tls::client(Path::new(crate::tls::SYSTEM_CA_BUNDLE)).map_err(|e| {
                LogshipError::Config(format!("{e}: give the CA with --elasticsearch-ca"))
            }),
        }
        .map(Some)
    }

    /// Checks values clap cannot check by type.
    pub fn validate(&self) -> Result<(), LogshipError> {
        if let Some(url) = self.elasticsearch() {
            let uri: http::Uri = url.parse().map_err(|_| {
                LogshipError::Config(format!("--elasticsearch-url is not a URL: {url:?}"))
            })?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
                return Err(LogshipError::Config(format!(
                    "--elasticsearch-url must be http(s)://HOST[:PORT][/PATH], got {url:?}"
                )));
            }
        }
        let index_ok = !self.elasticsearch_index.is_empty()
            && !self.elasticsearch_index.starts_with(['-', '_', '+'])
            && self
                .elasticsearch_index
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
        if !index_ok {
            return Err(LogshipError::Config(format!(
                "--elasticsearch-index must be a lower-case index name, got {:?}",
                self.elasticsearch_index
            )));
        }
        if let Some(server) = self.zabbix() {
            let ok = server.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !ok || self.zabbix_host.is_empty() || self.zabbix_interval_secs == 0 {
                return Err(LogshipError::Config(format!(
                    "--zabbix-server must be HOST:PORT (with a --zabbix-host and a positive interval), got {server:?}"
                )));
            }
        }
        if self.batch_lines == 0 || self.viewer_window_secs == 0 || self.poll_interval_ms == 0 {
            return Err(LogshipError::Config(
                "--batch-lines, --viewer-window-secs and --poll-interval-ms must be positive"
                    .into(),
            ));
        }
        Ok(())
    }
}
