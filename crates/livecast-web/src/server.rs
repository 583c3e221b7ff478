//! The router and the service entry point.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::middleware;
use axum::routing::get;
use axum::Router;
use livecast_telemetry::{serve_admin, CancellationToken, Health, Registry};
use tokio::net::TcpListener;

use crate::access_log::{self, AccessLog};
use crate::metrics::Metrics;
use crate::{hls, player, streams, Config, WebError};

/// How often readiness re-checks that the volume is there.
const VOLUME_CHECK: Duration = Duration::from_secs(2);

/// The sockets the service serves, bound by the caller (port 0 in tests).
#[derive(Debug)]
pub struct Listeners {
    /// Viewers' HTTP.
    pub http: TcpListener,
    /// Admin HTTP.
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds the addresses from the configuration.
    pub async fn bind(config: &Config) -> std::io::Result<Self> {
        Ok(Self {
            http: TcpListener::bind(config.listen).await?,
            admin: TcpListener::bind(config.admin_listen).await?,
        })
    }
}

/// State shared by the handlers.
#[derive(Debug)]
pub(crate) struct App {
    pub hls_dir: PathBuf,
    pub instance: String,
    pub metrics: Metrics,
    pub access_log: AccessLog,
}

/// Builds the viewer-facing router.
pub(crate) fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(player::page))
        .route("/assets/hls.min.js", get(player::hls_js))
        .route("/api/streams", get(streams::list))
        .route("/hls/{stream}/{file}", get(hls::serve))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(middleware::from_fn_with_state(
            app.clone(),
            access_log::record,
        ))
        .with_state(app)
}

/// Runs the front-end until `shutdown` is cancelled: readiness drops first, in-flight requests
/// finish, then the access log is flushed.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), WebError> {
    config.validate()?;
    let instance = config.instance();
    let registry = Registry::new();
    let metrics = Metrics::register(&registry)?;
    let health = Health::default();
    let admin = tokio::spawn(serve_admin(
        listeners.admin,
        registry,
        health.clone(),
        shutdown.clone(),
    ));
    let (access_log, writer) = AccessLog::start(&config.access_log_dir, &instance).await?;
    let app = Arc::new(App {
        hls_dir: config.hls_dir.clone(),
        instance: instance.clone(),
        metrics,
        access_log,
    });
    tokio::spawn(watch_volume(
        config.hls_dir.clone(),
        health.clone(),
        shutdown.clone(),
    ));
    tracing::info!(addr = %listeners.http.local_addr()?, %instance, hls_dir = %config.hls_dir.display(), "web listening");
    let service = router(app).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listeners.http, service)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    // The router (and with it every access-log sender) is gone: the writer drains and flushes.
    let _ = writer.await;
    admin
        .await
        .map_err(|e| WebError::Io(std::io::Error::other(e)))??;
    Ok(())
}

/// Ready while the volume is mounted and readable; not ready once shutdown starts.
async fn watch_volume(dir: PathBuf, health: Health, shutdown: CancellationToken) {
    loop {
        let readable = tokio::fs::read_dir(&dir).await.is_ok();
        if health.is_ready() != readable {
            tracing::info!(ready = readable, dir = %dir.display(), "volume readiness changed");
        }
        health.set_ready(readable);
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(VOLUME_CHECK) => {}
        }
    }
    health.set_ready(false);
}
