//! The whole livecast stack in one process, for machines without Docker: `livecast up` runs
//! the ingest, `--web-replicas` front-ends, the balancer and the log shipper with the
//! contract's defaults.
//!
//! The services are the same libraries the standalone binaries run; each keeps its own metrics
//! registry and admin port, exactly as it would in its own container.
//!
//! # Layout
//!
//! - [`UpArgs`]: the flags of `livecast up`.
//! - [`Stack`]: every listener bound (port 0 works, for tests), then [`Stack::run`].
//! - [`probe`]: `livecast probe URL`, the containers' health check.
//! - [`token`]: `livecast token`, a signed playback URL for a viewer.
//! - [`error`]: the umbrella's error type.

pub mod error;
pub mod probe;
pub mod token;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::Parser;
use livecast_telemetry::CancellationToken;

use crate::error::LivecastError;

/// Flags of `livecast up`.
#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// Address for RTMP publishers.
    #[arg(long, env = "LIVECAST_RTMP_LISTEN", default_value = "0.0.0.0:1935")]
    pub rtmp_listen: SocketAddr,
    /// Address for RTMPS publishers (RTMP over TLS); off unless given. Needs --tls-cert and
    /// --tls-key.
    #[arg(long, env = "LIVECAST_RTMPS_LISTEN", requires_all = ["tls_cert", "tls_key"])]
    pub rtmps_listen: Option<SocketAddr>,
    /// PEM certificate chain for --rtmps-listen.
    #[arg(long, env = "LIVECAST_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "LIVECAST_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Address for viewers (the balancer).
    #[arg(long, env = "LIVECAST_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Number of front-ends behind the balancer.
    #[arg(long, env = "LIVECAST_WEB_REPLICAS", default_value_t = 3)]
    pub web_replicas: usize,
    /// Port of the first front-end; replica i listens on 127.0.0.1:<web-port + i> (0: any free port).
    #[arg(long, env = "LIVECAST_WEB_PORT", default_value_t = 8081)]
    pub web_port: u16,
    /// Host of every admin server.
    #[arg(long, env = "LIVECAST_ADMIN_HOST", default_value = "0.0.0.0")]
    pub admin_host: IpAddr,
    /// First admin port: ingest on it, the first front-end on +1 (replica i on +1+10·i), the
    /// balancer on +2, the shipper on +3 (0: any free port).
    #[arg(long, env = "LIVECAST_ADMIN_PORT", default_value_t = 9101)]
    pub admin_port: u16,
    /// Directory for HLS output, shared by ingest and front-ends.
    #[arg(long, env = "LIVECAST_HLS_DIR", default_value = "./data/hls")]
    pub hls_dir: PathBuf,
    /// Directory for the front-ends' access logs.
    #[arg(long, env = "LIVECAST_ACCESS_LOG_DIR", default_value = "./data/logs")]
    pub access_log_dir: PathBuf,
    /// Directory for the shipper's checkpoints and dead letters.
    #[arg(long, env = "LIVECAST_STATE_DIR", default_value = "./data/logship")]
    pub state_dir: PathBuf,
    /// Elasticsearch or OpenSearch for the access logs (http://HOST:9200); without it the
    /// shipper only counts viewers.
    #[arg(long, env = "LIVECAST_ELASTICSEARCH_URL")]
    pub elasticsearch_url: Option<String>,
    /// Target segment length in seconds.
    #[arg(long, env = "LIVECAST_SEGMENT_SECS", default_value_t = 2.0)]
    pub segment_secs: f64,
    /// Segments listed in a live playlist.
    #[arg(long, env = "LIVECAST_WINDOW", default_value_t = 6)]
    pub window: usize,
    /// Segment container: fmp4 (CMAF) or ts (MPEG-TS).
    #[arg(long, env = "LIVECAST_CONTAINER", value_enum, default_value_t = livecast_ingest::config::ContainerArg::Fmp4)]
    pub container: livecast_ingest::config::ContainerArg,
    /// LL-HLS part length in milliseconds; 0 writes plain HLS without parts.
    #[arg(long, env = "LIVECAST_PART_MS", default_value_t = 250)]
    pub part_ms: u32,
    /// Seconds a stream waits for its publisher to come back before its playlist ends.
    #[arg(long, env = "LIVECAST_RECONNECT_GRACE_SECS", default_value_t = 60)]
    pub reconnect_grace_secs: u64,
    /// Keep every segment of a publish (EVENT playlist, VOD after the end).
    #[arg(long, env = "LIVECAST_RECORD")]
    pub record: bool,
    /// File of `<stream> <secret>` lines; publishes must carry `?key=<secret>`.
    #[arg(long, env = "LIVECAST_STREAM_KEYS")]
    pub stream_keys: Option<PathBuf>,
    /// http:// URL asked (form POST, like nginx-rtmp's on_publish) before every publish.
    #[arg(long, env = "LIVECAST_ON_PUBLISH")]
    pub on_publish: Option<String>,
    /// Secret of signed playback URLs: viewers then need a token (`livecast token`, or
    /// /api/token with --auth-url). At least 16 bytes; prefer the environment variable.
    #[arg(long, env = "LIVECAST_PLAYBACK_SECRET", hide_env_values = true)]
    pub playback_secret: Option<livecast_proxy::config::Secret>,
    /// http:// URL of the company's authentication service that vouches for viewers before
    /// /api/token hands them a token (as nginx's auth_request). Needs --playback-secret.
    #[arg(long, env = "LIVECAST_AUTH_URL", requires = "playback_secret")]
    pub auth_url: Option<String>,
    /// Credential of the balancer's operator page (/status on its admin port): the Basic
    /// password in a browser, or `Authorization: Bearer <token>`.
    #[arg(long, env = "LIVECAST_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<livecast_proxy::config::Secret>,
    /// Addresses publishers may come from (comma-separated CIDRs). Unset: loopback only while
    /// neither --stream-keys nor --on-publish is set, any address once one is.
    #[arg(
        long = "publish-allow-cidr",
        env = "LIVECAST_PUBLISH_ALLOW_CIDR",
        value_delimiter = ','
    )]
    pub publish_allow: Vec<livecast_telemetry::Cidr>,
}

/// Addresses the stack actually listens on.
#[derive(Debug, Clone)]
pub struct Addrs {
    /// RTMP.
    pub rtmp: SocketAddr,
    /// RTMPS, when `--rtmps-listen` is set.
    pub rtmps: Option<SocketAddr>,
    /// The balancer, where viewers go.
    pub proxy: SocketAddr,
    /// Each front-end.
    pub webs: Vec<SocketAddr>,
    /// Admin servers: ingest, each front-end, balancer.
    pub ingest_admin: SocketAddr,
    /// Admin servers of the front-ends.
    pub web_admins: Vec<SocketAddr>,
    /// Admin server of the balancer.
    pub proxy_admin: SocketAddr,
    /// Admin server of the shipper (with `/api/viewers`).
    pub logship_admin: SocketAddr,
}

/// The stack with every socket bound.
#[derive(Debug)]
pub struct Stack {
    ingest: (livecast_ingest::Config, livecast_ingest::Listeners),
    webs: Vec<(livecast_web::Config, livecast_web::Listeners)>,
    proxy: (livecast_proxy::Config, livecast_proxy::Listeners),
    logship: (livecast_logship::Config, livecast_logship::Listeners),
    addrs: Addrs,
}

/// An address to reach a local listener at (a wildcard bind is reached over loopback).
fn loopback(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::new(IpAddr::from([127, 0, 0, 1]), addr.port())
    } else {
        addr
    }
}

fn port_plus(base: u16, offset: u16) -> u16 {
    if base == 0 {
        0
    } else {
        base.saturating_add(offset)
    }
}

impl Stack {
    /// Validates the flags and binds every listener.
    pub async fn bind(args: &UpArgs) -> error::Result<Self> {
        if !(1..=64).contains(&args.web_replicas) {
            return Err(LivecastError::Config(format!(
                "--web-replicas must be between 1 and 64, got {}",
                args.web_replicas
            )));
        }
        let admin =
            |offset: u16| SocketAddr::new(args.admin_host, port_plus(args.admin_port, offset));
        let mut ingest_args = vec![
            "livecast-ingest".to_string(),
            format!("--rtmp-listen={}", args.rtmp_listen),
            format!("--admin-listen={}", admin(0)),
            format!("--hls-dir={}", args.hls_dir.display()),
            format!("--segment-secs={}", args.segment_secs),
            format!("--window={}", args.window),
            format!(
                "--container={}",
                clap::ValueEnum::to_possible_value(&args.container)
                    .map(|v| v.get_name().to_string())
                    .unwrap_or_default()
            ),
            format!("--part-ms={}", args.part_ms),
            format!("--reconnect-grace-secs={}", args.reconnect_grace_secs),
        ];
        if args.record {
            ingest_args.push("--record".into());
        }
        if let Some(keys) = &args.stream_keys {
            ingest_args.push(format!("--stream-keys={}", keys.display()));
        }
        if let Some(url) = &args.on_publish {
            ingest_args.push(format!("--on-publish={url}"));
        }
        if let (Some(listen), Some(cert), Some(key)) =
            (args.rtmps_listen, &args.tls_cert, &args.tls_key)
        {
            ingest_args.push(format!("--rtmps-listen={listen}"));
            ingest_args.push(format!("--tls-cert={}", cert.display()));
            ingest_args.push(format!("--tls-key={}", key.display()));
        }
        for range in &args.publish_allow {
            ingest_args.push(format!("--publish-allow-cidr={range}"));
        }
        let ingest = livecast_ingest::Config::parse_from(ingest_args);
        ingest.validate().map_err(LivecastError::config)?;
        let ingest_listeners =
            livecast_ingest::Listeners::bind(&ingest)
                .await
                .map_err(LivecastError::io(format!(
                    "cannot bind ingest on {} / {}",
                    ingest.rtmp_listen, ingest.admin_listen
                )))?;
        let mut webs = Vec::new();
        for i in 0..args.web_replicas {
            let listen = SocketAddr::new([127, 0, 0, 1].into(), port_plus(args.web_port, i as u16));
            let web = livecast_web::Config::parse_from([
                "livecast-web".to_string(),
                format!("--listen={listen}"),
                format!("--admin-listen={}", admin(1 + 10 * i as u16)),
                format!("--hls-dir={}", args.hls_dir.display()),
                format!("--access-log-dir={}", args.access_log_dir.display()),
                format!("--instance-name=web-{}", i + 1),
                // The balancer stops with them: there is nobody to tell to go elsewhere.
                "--shutdown-delay-ms=0".to_string(),
            ]);
            let listeners =
                livecast_web::Listeners::bind(&web)
                    .await
                    .map_err(LivecastError::io(format!(
                        "cannot bind front-end {} on {listen}",
                        i + 1
                    )))?;
            webs.push((web, listeners));
        }
        let web_addrs = webs
            .iter()
            .map(|(_, l)| l.http.local_addr())
            .collect::<std::io::Result<Vec<_>>>()?;
        let mut logship_args = vec![
            "livecast-logship".to_string(),
            format!("--admin-listen={}", admin(3)),
            format!("--log-dir={}", args.access_log_dir.display()),
            format!("--state-dir={}", args.state_dir.display()),
        ];
        if let Some(url) = &args.elasticsearch_url {
            logship_args.push(format!("--elasticsearch-url={url}"));
        }
        let logship = livecast_logship::Config::parse_from(logship_args);
        logship.validate().map_err(LivecastError::config)?;
        let logship_listeners =
            livecast_logship::Listeners::bind(&logship)
                .await
                .map_err(LivecastError::io(format!(
                    "cannot bind the shipper on {}",
                    logship.admin_listen
                )))?;
        let logship_admin = logship_listeners.admin.local_addr()?;
        let mut proxy_args = vec![
            "livecast-proxy".to_string(),
            format!("--listen={}", args.listen),
            format!("--admin-listen={}", admin(2)),
            format!(
                "--viewers-url=http://{}/api/viewers",
                loopback(logship_admin)
            ),
        ];
        proxy_args.extend(web_addrs.iter().map(|a| format!("--backend={a}")));
        if let Some(url) = &args.auth_url {
            proxy_args.push(format!("--auth-url={url}"));
        }
        let mut proxy = livecast_proxy::Config::parse_from(proxy_args);
        // Set directly, not through the argument list: the secret stays out of any command line.
        proxy.playback_secret = args.playback_secret.clone();
        proxy.admin_token = args.admin_token.clone();
        proxy.validate().map_err(LivecastError::config)?;
        let proxy_listeners =
            livecast_proxy::Listeners::bind(&proxy)
                .await
                .map_err(LivecastError::io(format!(
                    "cannot bind balancer on {}",
                    proxy.listen
                )))?;
        let addrs = Addrs {
            rtmp: ingest_listeners.rtmp.local_addr()?,
            rtmps: ingest_listeners
                .rtmps
                .as_ref()
                .map(|l| l.local_addr())
                .transpose()?,
            proxy: proxy_listeners.http.local_addr()?,
            ingest_admin: ingest_listeners.admin.local_addr()?,
            web_admins: webs
                .iter()
                .map(|(_, l)| l.admin.local_addr())
                .collect::<std::io::Result<Vec<_>>>()?,
            proxy_admin: proxy_listeners.admin.local_addr()?,
            logship_admin,
            webs: web_addrs,
        };
        Ok(Self {
            ingest: (ingest, ingest_listeners),
            webs,
            proxy: (proxy, proxy_listeners),
            logship: (logship, logship_listeners),
            addrs,
        })
    }

    /// Where the stack listens.
    pub fn addrs(&self) -> &Addrs {
        &self.addrs
    }

    /// Runs every service until `shutdown` is cancelled and all have drained.
    pub async fn run(self, shutdown: CancellationToken) -> error::Result<()> {
        let mut tasks = tokio::task::JoinSet::new();
        let (config, listeners) = self.ingest;
        let token = shutdown.clone();
        tasks.spawn(async move {
            livecast_ingest::run(config, listeners, token)
                .await
                .map_err(LivecastError::service("ingest"))
        });
        for (config, listeners) in self.webs {
            let token = shutdown.clone();
            tasks.spawn(async move {
                livecast_web::run(config, listeners, token)
                    .await
                    .map_err(LivecastError::service("front-end"))
            });
        }
        let (config, listeners) = self.proxy;
        let token = shutdown.clone();
        tasks.spawn(async move {
            livecast_proxy::run(config, listeners, token)
                .await
                .map_err(LivecastError::service("balancer"))
        });
        let (config, listeners) = self.logship;
        let token = shutdown.clone();
        tasks.spawn(async move {
            livecast_logship::run(config, listeners, token)
                .await
                .map_err(LivecastError::service("log shipper"))
        });
        tracing::info!(
            rtmp = %self.addrs.rtmp,
            rtmps = ?self.addrs.rtmps,
            viewers = %self.addrs.proxy,
            front_ends = self.addrs.webs.len(),
            "livecast is up: publish to rtmp://HOST:{}/live/<stream>, watch on http://HOST:{}/",
            self.addrs.rtmp.port(),
            self.addrs.proxy.port()
        );
        let mut first_error = None;
        while let Some(joined) = tasks.join_next().await {
            let result = joined
                .map_err(LivecastError::service("a service task"))
                .and_then(|r| r);
            if let Err(error) = result {
                tracing::error!(%error, "service stopped");
                // One service failing takes the stack down rather than leaving it half-working.
                shutdown.cancel();
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
