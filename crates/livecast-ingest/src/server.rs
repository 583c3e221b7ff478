//! The service entry point and its worker threads.

use std::sync::Arc;
use std::time::Duration;

use livecast_telemetry::workers::{Accepted, Incoming};
use livecast_telemetry::{serve_admin, CancellationToken, Health, Registry};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;
use crate::shared::Shared;
use crate::{connection, Config, IngestError};

/// How long shutdown waits for publishes to close their playlists.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// The sockets the service serves, bound by the caller (port 0 in tests).
#[derive(Debug)]
pub struct Listeners {
    /// RTMP publishers.
    pub rtmp: TcpListener,
    /// RTMPS publishers, when `--rtmps-listen` is set.
    pub rtmps: Option<TcpListener>,
    /// Admin HTTP.
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds the addresses from the configuration.
    pub async fn bind(config: &Config) -> std::io::Result<Self> {
        Ok(Self {
            rtmp: TcpListener::bind(config.rtmp_listen).await?,
            rtmps: match config.publish.rtmps_listen {
                Some(addr) => Some(TcpListener::bind(addr).await?),
                None => None,
            },
            admin: TcpListener::bind(config.admin_listen).await?,
        })
    }
}

/// One worker thread: serves the connections it is given until shutdown, then lets every
/// publish write its last segment within a deadline.
/// With `tls`, connections are RTMPS.
async fn serve_worker(
    mut incoming: Incoming,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
) {
    let tasks = TaskTracker::new();
    while let Some(Accepted { stream, peer, load }) = incoming.accept().await {
        shared.metrics.connections.inc();
        let connection =
            connection::serve(stream, peer, shared.clone(), tls.clone(), shutdown.clone());
        tasks.spawn(async move {
            connection.await;
            drop(load);
        });
    }
    tasks.close();
    if tokio::time::timeout(DRAIN_DEADLINE, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("publishes did not finish within the shutdown deadline");
    }
}

/// Runs the ingest service until `shutdown` is cancelled, then lets every publish write its
/// last segment within a deadline. The playlists are not ended: a restart continues them.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), IngestError> {
    config.validate()?;
    // A keys file that cannot be read or a bad callback URL stops the start, before any port
    // is served.
    let auth = crate::auth::Auth::new(
        &config.publish.publish_allow,
        config.publish.stream_keys.as_deref(),
        config.publish.on_publish.as_deref(),
        crate::auth::FailureLimit {
            max: config.publish.publish_max_failures,
            window: Duration::from_secs(config.publish.publish_failure_window_secs),
        },
    )?;
    let tls = match (&config.publish.tls_cert, &config.publish.tls_key) {
        (Some(cert), Some(key)) => Some(TlsAcceptor::from(
            livecast_telemetry::tls::server_config(cert, key, &[]).map_err(IngestError::Config)?,
        )),
        _ => None,
    };
    std::fs::create_dir_all(&config.hls.hls_dir)?;
    let registry = Registry::new();
    let metrics = Metrics::register(&registry)?;
    let health = Health::default();
    let admin = tokio::spawn(serve_admin(
        listeners.admin,
        registry,
        health.clone(),
        shutdown.clone(),
    ));
    tracing::info!(
        rtmp = %listeners.rtmp.local_addr()?,
        rtmps = ?listeners.rtmps.as_ref().and_then(|l| l.local_addr().ok()),
        hls_dir = %config.hls.hls_dir.display(),
        "ingest listening"
    );
    tracing::info!("{}", auth.describe());
    let ladder_secret = if config.ladder.enabled() {
        crate::ladder::new_secret()?
    } else {
        String::new()
    };
    let rtmp_local = listeners.rtmp.local_addr().ok();
    let shared = Arc::new(Shared::new(
        config,
        auth,
        metrics,
        rtmp_local,
        ladder_secret,
    ));
    // Streams an earlier run left waiting for their publishers (a restart is not an end)
    // are ended when their grace runs out, unless a publisher comes back first.
    crate::ending::resume_waiting(&shared);
    health.set_ready(true);
    // Each connection lives on one worker thread with a runtime of its own, its publish's
    // pipeline included: reading, packaging and writing a stream never wakes another thread.
    let workers = livecast_telemetry::worker_count(shared.config.workers);
    let serve = |listener: TcpListener, tls: Option<TlsAcceptor>| {
        let shared = shared.clone();
        let stop = shutdown.clone();
        livecast_telemetry::serve_per_core(
            workers,
            listener,
            shutdown.clone(),
            move |incoming, _| serve_worker(incoming, shared.clone(), tls.clone(), stop.clone()),
        )
    };
    let rtmp = serve(listeners.rtmp, None);
    match (listeners.rtmps, tls) {
        (Some(listener), Some(tls)) => {
            let (plain, secure) = tokio::join!(rtmp, serve(listener, Some(tls)));
            plain?;
            secure?;
        }
        _ => rtmp.await?,
    }
    health.set_ready(false);
    admin
        .await
        .map_err(|e| IngestError::Io(std::io::Error::other(e)))??;
    Ok(())
}
