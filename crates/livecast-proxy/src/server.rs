//! The accept loop and the service entry point.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use livecast_telemetry::{serve_admin, CancellationToken, Health, Registry};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;

use crate::backends::{Backends, Resolver};
use crate::config::split_host_port;
use crate::forward::Forwarder;
use crate::metrics::Metrics;
use crate::{Config, ProxyError};

/// A client must send its request headers within this time (slowloris protection).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for in-flight requests.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

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

/// Runs the balancer until `shutdown` is cancelled, then lets in-flight requests finish within
/// a deadline.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), ProxyError> {
    config.validate()?;
    let specs = config
        .backends
        .iter()
        .map(|b| split_host_port(b))
        .collect::<Result<Vec<_>, _>>()?;
    let registry = Registry::new();
    let metrics = Metrics::register(&registry)?;
    let health = Health::default();
    let admin = tokio::spawn(serve_admin(
        listeners.admin,
        registry,
        health.clone(),
        shutdown.clone(),
    ));
    let backends = Arc::new(Backends::default());
    // Resolve once before accepting, so the first viewers already have front-ends to go to.
    let mut resolver = Resolver::new(specs, backends.clone(), metrics.clone());
    resolver.resolve_once().await;
    tokio::spawn(resolver.run(
        Duration::from_secs(config.resolve_interval_secs),
        shutdown.clone(),
    ));
    let forwarder = Arc::new(Forwarder::new(
        backends,
        metrics,
        Duration::from_millis(config.connect_timeout_ms),
    ));
    tracing::info!(addr = %listeners.http.local_addr()?, backends = ?config.backends, "proxy listening");
    health.set_ready(true);
    let connections = TaskTracker::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listeners.http.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(serve_connection(stream, peer, forwarder.clone(), shutdown.clone()));
                }
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    health.set_ready(false);
    drop(listeners.http);
    connections.close();
    if tokio::time::timeout(DRAIN_DEADLINE, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("connections did not finish within the shutdown deadline");
    }
    admin
        .await
        .map_err(|e| ProxyError::Io(std::io::Error::other(e)))??;
    Ok(())
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    forwarder: Arc<Forwarder>,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |request| {
        let forwarder = forwarder.clone();
        async move { Ok::<_, Infallible>(forwarder.handle(request, peer).await) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "client connection ended with an error");
    }
}
