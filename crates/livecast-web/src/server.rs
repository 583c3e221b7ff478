//! The router and the service entry point.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use axum::middleware;
use axum::routing::get;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use livecast_telemetry::{serve_admin_with, CancellationToken, Health, Registry};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tower_service::Service as _;

use crate::access_log::{self, AccessLog};
use crate::app::App;
use crate::metrics::Metrics;
use crate::streams::StreamList;
use crate::volume::Volume;
use crate::zerocopy::ZeroCopyStream;
use crate::{hls, http, player, streams, Config, WebError};

/// Socket send buffer for viewers: a 2 s segment at a few Mb/s fits in one write.
const SEND_BUFFER: usize = 1024 * 1024;
/// How often readiness re-checks that the volume is there.
const VOLUME_CHECK: Duration = Duration::from_secs(1);

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

/// Builds the viewer-facing router.
pub(crate) fn router(app: Arc<App>) -> Router {
    let preflight = || async { http::preflight() };
    Router::new()
        .route("/", get(player::page))
        .route("/assets/hls.min.js", get(player::hls_js))
        .route("/api/streams", get(streams::list).options(preflight))
        .route("/hls/{stream}/{file}", get(hls::serve).options(preflight))
        .route(
            "/hls/{stream}/{rendition}/{file}",
            get(hls::serve_rendition).options(preflight),
        )
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(middleware::from_fn_with_state(
            app.clone(),
            access_log::record,
        ))
        .with_state(app.clone())
        // Readiness on the viewer port too, so a balancer checks the very port it sends to.
        // Added after the access log: the balancer's checks (one a second from each balancer)
        // are not viewers, and would be shipped and counted as traffic.
        .merge(livecast_telemetry::admin::readiness_route(
            app.health.clone(),
        ))
}

/// Runs the front-end until `shutdown` is cancelled. Shutdown goes: readiness fails, the
/// listener stays open for `--shutdown-delay-ms` (balancers notice), in-flight requests get
/// `--drain-secs` to finish, then the access log is flushed.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), WebError> {
    config.validate()?;
    let instance = config.resolve_instance().await;
    let registry = Registry::new();
    let metrics = Metrics::register(&registry, &instance)?;
    let health = Health::default();
    let admin_stop = CancellationToken::new();
    let admin = tokio::spawn(serve_admin_with(
        listeners.admin,
        registry,
        health.clone(),
        streams::operator_router(config.hls_dir.clone()),
        admin_stop.clone(),
    ));
    let log_stop = CancellationToken::new();
    let (access_log, writer) = AccessLog::start(
        &config.access_log_dir,
        &instance,
        config.access_log_max_mb * 1024 * 1024,
        log_stop.clone(),
    )
    .await?;
    let volume = Volume::new(
        config.hls_dir.clone(),
        config.cache_mb * 1024 * 1024,
        metrics.clone(),
    );
    let watch_stop = CancellationToken::new();
    let (watching, watch_started) = tokio::sync::oneshot::channel();
    tokio::spawn(volume.clone().watch(watch_stop.clone(), watching));
    let _ = watch_started.await;
    let sendfile_bytes = metrics.sendfile_bytes.clone();
    let app = Arc::new(App {
        volume,
        instance: instance.clone(),
        replica_header: axum::http::HeaderValue::from_str(&instance).ok(),
        metrics,
        access_log,
        trusted_proxies: config.trusted_proxies.clone(),
        sessions: livecast_telemetry::RandomIds::new(),
        stream_list: StreamList::default(),
        health: health.clone(),
    });
    let version_ok = match &config.expect_version {
        Some(expected) if expected != env!("CARGO_PKG_VERSION") => {
            tracing::error!(%expected, running = env!("CARGO_PKG_VERSION"), "version mismatch: staying unready");
            false
        }
        _ => true,
    };
    tokio::spawn(watch_readiness(
        config.clone(),
        health.clone(),
        version_ok,
        shutdown.clone(),
    ));
    tracing::info!(addr = %listeners.http.local_addr()?, %instance, hls_dir = %config.hls_dir.display(), "web listening");

    let delay = Duration::from_millis(config.shutdown_delay_ms);
    let stop_accepting = shutdown.clone();
    let viewers = Viewers {
        router: router(app),
        header_timeout: Duration::from_secs(config.header_timeout_secs),
        slots: Arc::new(Semaphore::new(config.max_connections)),
        sendfile_bytes,
    };
    // Large segment writes gain from the work-stealing runtime (measured: thread-per-core was
    // about 10 % slower on 700 KB segments), unlike the balancer's many small requests.
    let server = tokio::spawn(async move {
        viewers
            .serve(listeners.http, async move {
                stop_accepting.cancelled().await;
                tokio::time::sleep(delay).await;
            })
            .await;
        Ok::<(), WebError>(())
    });
    shutdown.cancelled().await;
    // Readiness now answers "leaving", which takes this front-end out of a livecast balancer's
    // rotation at its next check; the listener stays open meanwhile.
    health.set_leaving();
    let deadline = delay + Duration::from_secs(config.drain_secs);
    let abort = server.abort_handle();
    match tokio::time::timeout(deadline, server).await {
        Ok(Ok(result)) => result?,
        Ok(Err(join)) => tracing::error!(error = %join, "web server task failed"),
        Err(_) => {
            tracing::warn!("requests still running after the drain deadline; closing them");
            abort.abort();
        }
    }
    watch_stop.cancel();
    // No request is running any more: the writer writes what is buffered and flushes.
    log_stop.cancel();
    let _ = writer.await;
    admin_stop.cancel();
    admin
        .await
        .map_err(|e| WebError::Io(std::io::Error::other(e)))??;
    Ok(())
}

/// The viewer side: accepts connections up to the cap and serves each with hyper, with a
/// deadline for every request head.
struct Viewers {
    router: Router,
    header_timeout: Duration,
    /// One permit per open connection (`--max-connections`).
    slots: Arc<Semaphore>,
    sendfile_bytes: prometheus::IntCounter,
}

impl Viewers {
    /// Accepts until `stop` completes, then asks every connection to finish its request in
    /// flight and close, and returns when all have.
    async fn serve(self, listener: TcpListener, stop: impl Future<Output = ()>) {
        let connections = TaskTracker::new();
        let closing = CancellationToken::new();
        tokio::pin!(stop);
        loop {
            // At the cap, new connections wait in the kernel's listen queue (a balancer's
            // connect then times out and it tries another front-end) instead of taking a
            // descriptor each.
            let slot = tokio::select! {
                () = &mut stop => break,
                slot = self.slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => break,
                },
            };
            let (tcp, peer) = tokio::select! {
                () = &mut stop => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Running out of file descriptors is transient; do not spin on it.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            // Without TCP_NODELAY the tail of a large segment waits for the viewer's delayed
            // ACK; a send buffer that holds a whole segment lets one write hand it to the kernel.
            let _ = tcp.set_nodelay(true);
            let _ = socket2::SockRef::from(&tcp).set_send_buffer_size(SEND_BUFFER);
            let io = TokioIo::new(ZeroCopyStream::new(tcp, self.sendfile_bytes.clone()));
            let router = self.router.clone();
            let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                router.clone().call(request.map(Body::new))
            });
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(self.header_timeout);
            let closing = closing.clone();
            connections.spawn(async move {
                let connection = builder.serve_connection(io, service);
                tokio::pin!(connection);
                tokio::select! {
                    _ = connection.as_mut() => {}
                    () = closing.cancelled() => {
                        connection.as_mut().graceful_shutdown();
                        let _ = connection.await;
                    }
                }
                drop(slot);
            });
        }
        drop(listener);
        closing.cancel();
        connections.close();
        connections.wait().await;
    }
}

/// Ready while the volume is mounted and readable and the version is the expected one; not
/// ready from the moment shutdown starts.
async fn watch_readiness(
    config: Config,
    health: Health,
    version_ok: bool,
    shutdown: CancellationToken,
) {
    loop {
        let readable = tokio::fs::read_dir(&config.hls_dir).await.is_ok();
        let ready = readable && version_ok;
        if health.is_ready() != ready {
            tracing::info!(ready, volume_readable = readable, "readiness changed");
        }
        health.set_ready(ready);
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(VOLUME_CHECK) => {}
        }
    }
    health.set_ready(false);
}
