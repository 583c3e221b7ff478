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
    /// How streams are written (the ingest's flags; --hls-dir is shared with the front-ends).
    #[command(flatten)]
    pub hls: livecast_ingest::config::HlsFlags,
    /// Who may publish (the ingest's flags).
    #[command(flatten)]
    pub publish: livecast_ingest::config::PublishFlags,
    /// The server-side rendition ladder (the ingest's flags).
    #[command(flatten)]
    pub ladder: livecast_ingest::ladder::LadderFlags,
    /// Who may watch and see the operator page (the balancer's flags).
    #[command(flatten)]
    pub access: livecast_proxy::config::AccessFlags,
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
        let mut ingest = livecast_ingest::Config::parse_from([
            "livecast-ingest".to_string(),
            format!("--rtmp-listen={}", args.rtmp_listen),
            format!("--admin-listen={}", admin(0)),
        ]);
        // The flag groups `livecast up` shares with the ingest, as given.
        ingest.hls = args.hls.clone();
        ingest.publish = args.publish.clone();
        ingest.ladder = args.ladder.clone();
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
                format!("--hls-dir={}", args.hls.hls_dir.display()),
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
        let mut proxy = livecast_proxy::Config::parse_from(proxy_args);
        // Set directly, not through the argument list: the secrets stay out of any command line.
        proxy.access = args.access.clone();
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
