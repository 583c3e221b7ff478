//! The viewer side: the service entry point, the accept loop and each connection's way in.
//!
//! - `h1`: the HTTP/1.1 loop that serves viewers' GET and HEAD without hyper, plain or over
//!   TLS.
//! - `h2`: the balancer's own HTTP/2, for viewers who choose it over TLS.
//! - `hyper`: hyper's side (what the HTTP/1.1 loop hands over), and the policy for requests
//!   in header maps that `h2` shares.
//! - `coalesce`: a TLS connection's writes gathered over one turn of its task.
//! - `idle`: each worker's table of idle plain connections, kept out of tasks.
//! - `tls`: the TLS acceptor.

mod coalesce;
pub(crate) mod h1;
mod h2;
pub(crate) mod hyper;
mod idle;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use livecast_telemetry::workers::{Accepted, Incoming};
use livecast_telemetry::{serve_admin_with, CancellationToken, Health, Registry};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

use self::hyper::Prefixed;
use crate::client::control::ControlClient;
use crate::client::Upstreams;
use crate::config::split_host_port;
use crate::discovery::{Discovery, DnsResolver, Resolve};
use crate::forward::{Admission, Forwarder};
use crate::health::HealthChecker;
use crate::limits::RateLimiter;
use crate::metrics::Metrics;
use crate::pool::{Pool, Thresholds};
use crate::{status, Config, ProxyError};

/// How long shutdown waits for in-flight requests.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// The sockets the service serves, bound by the caller (port 0 in tests).
#[derive(Debug)]
pub struct Listeners {
    /// Viewers' HTTP (or HTTPS with --tls-cert).
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

/// What every worker thread needs to serve viewers.
struct Shared {
    pool: Arc<Pool>,
    metrics: Metrics,
    admission: Arc<Admission>,
    connect_timeout: Duration,
    tls: Option<TlsAcceptor>,
    header_timeout: Duration,
    max_header_bytes: usize,
    slots: Arc<Semaphore>,
    viewers: Option<Arc<crate::viewers::ViewerFeed>>,
    shutdown: CancellationToken,
}

/// One worker thread's view: the shared state plus its own upstream client, whose pooled
/// connections live on this thread.
struct Connections {
    shared: Arc<Shared>,
    forwarder: Arc<Forwarder>,
    /// Idle front-end connections of the worker's idle viewers ([`Upstreams::park_idle`]).
    idle: crate::client::inline::IdleConns,
    /// The worker's idle plain viewer connections.
    parked: Arc<idle::Parked>,
    /// The worker's connection tasks, waited for on shutdown.
    tracker: TaskTracker,
}

/// Runs the balancer with the system resolver; see [`run_with_resolver`].
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), ProxyError> {
    run_with_resolver(config, listeners, shutdown, Arc::new(DnsResolver)).await
}

/// Runs the balancer until `shutdown` is cancelled, then lets in-flight requests finish within
/// a deadline. `resolver` turns backend names into addresses (tests pass their own).
pub async fn run_with_resolver(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
    resolver: Arc<dyn Resolve>,
) -> Result<(), ProxyError> {
    config.validate()?;
    let specs = config
        .backends
        .iter()
        .map(|b| split_host_port(b))
        .collect::<Result<Vec<_>, _>>()?;
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(tls::acceptor(cert, key)?),
        _ => None,
    };
    let playback = config.playback()?.map(Arc::new);
    let registry = Registry::new();
    let metrics = Metrics::register(&registry)?;
    let health = Health::default();
    let issuer = playback.as_ref().map(|guard| {
        Arc::new(crate::issue::Issuer::new(
            guard.clone(),
            config.access.auth_url.as_deref(),
            Duration::from_secs(config.access.playback_token_secs),
            config.access.playback_bind_address,
            metrics.clone(),
        ))
    });
    match (&playback, &config.access.auth_url) {
        (None, _) => {
            tracing::info!("playback open to the allowed addresses (no --playback-secret)")
        }
        (Some(_), Some(url)) => {
            tracing::info!(auth_url = %url, "playback needs a signed token; /api/token asks the authentication service")
        }
        (Some(_), None) => tracing::info!("playback needs a signed token from the company portal"),
    }
    let pool = Arc::new(Pool::new(
        config.balance,
        Thresholds {
            healthy_after: config.healthy_after,
            unhealthy_after: config.unhealthy_after,
            eject_after_errors: config.eject_after_errors,
        },
        metrics.clone(),
    ));
    let admission = Arc::new(Admission {
        allow: config.allow.clone(),
        trusted_proxies: config.trusted_proxies.clone(),
        rate: (config.rate_limit_rps > 0.0).then(|| RateLimiter::new(config.rate_limit_rps)),
        playback,
        issuer,
    });
    let connect_timeout = Duration::from_millis(config.connect_timeout_ms);
    // One pooled client for the control plane's calls that may reuse connections.
    let control = ControlClient::pooled(connect_timeout);
    let viewers = match &config.viewers_url {
        Some(url) => {
            let feed = Arc::new(crate::viewers::ViewerFeed::default());
            let uri = url
                .parse()
                .map_err(|_| ProxyError::Config(format!("bad --viewers-url {url:?}")))?;
            tokio::spawn(feed.clone().run(control.clone(), uri, shutdown.clone()));
            Some(feed)
        }
        None => None,
    };
    let admin = tokio::spawn(serve_admin_with(
        listeners.admin,
        registry,
        health.clone(),
        status::router(
            pool.clone(),
            control,
            viewers.clone(),
            config.backend_admin_port,
            config.access.admin_token.as_ref().map(|t| t.0.clone()),
        ),
        shutdown.clone(),
    ));

    // Discover and check once before accepting, so the first viewers find front-ends in service.
    let mut discovery = Discovery::new(specs, resolver, pool.clone(), metrics.clone());
    discovery.resolve_once().await;
    tokio::spawn(discovery.run(
        Duration::from_secs(config.resolve_interval_secs),
        shutdown.clone(),
    ));
    let checker = HealthChecker {
        pool: pool.clone(),
        path: config.health_path.clone(),
        interval: Duration::from_millis(config.health_interval_ms),
        timeout: Duration::from_millis(config.health_timeout_ms),
        metrics: metrics.clone(),
    };
    tokio::spawn(checker.run(shutdown.clone()));
    tokio::spawn(track_readiness(
        pool.clone(),
        health.clone(),
        shutdown.clone(),
    ));

    tracing::info!(
        addr = %listeners.http.local_addr()?,
        tls = tls.is_some(),
        backends = ?config.backends,
        balance = ?config.balance,
        "proxy listening"
    );
    let shared = Arc::new(Shared {
        pool,
        metrics,
        admission,
        connect_timeout,
        tls,
        header_timeout: Duration::from_secs(config.header_timeout_secs),
        max_header_bytes: config.max_header_bytes,
        slots: Arc::new(Semaphore::new(config.max_connections)),
        viewers,
        shutdown: shutdown.clone(),
    });
    let workers = livecast_telemetry::worker_count(config.workers);
    livecast_telemetry::serve_per_core(workers, listeners.http, shutdown, move |incoming, _| {
        accept_loop(incoming, shared.clone())
    })
    .await?;
    health.set_ready(false);
    admin
        .await
        .map_err(|e| ProxyError::Io(std::io::Error::other(e)))??;
    Ok(())
}

/// One worker thread: serves the connections it is given until shutdown, then lets them drain.
async fn accept_loop(mut incoming: Incoming, shared: Arc<Shared>) {
    let forwarder = Arc::new(
        Forwarder::new(
            shared.pool.clone(),
            shared.metrics.clone(),
            shared.admission.clone(),
            shared.connect_timeout,
        )
        .with_viewers(shared.viewers.clone()),
    );
    let tracker = TaskTracker::new();
    let connections = Arc::new(Connections {
        shared: shared.clone(),
        forwarder,
        idle: Default::default(),
        parked: Arc::new(idle::Parked::new(shared.metrics.idle_connections.clone())),
        tracker: tracker.clone(),
    });
    let resumer = connections.clone();
    let resume = move |idle: idle::Idle| {
        let connections = resumer.clone();
        resumer.tracker.spawn(serve_plain(
            idle.stream,
            idle.peer,
            connections,
            idle.held,
            Some(idle.since),
        ));
    };
    tracker.spawn(
        connections
            .parked
            .clone()
            .run(resume, shared.shutdown.clone()),
    );
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => break,
            accepted = incoming.accept() => {
                let Some(Accepted { stream, peer, load }) = accepted else {
                    break;
                };
                let Ok(slot) = shared.slots.clone().try_acquire_owned() else {
                    shared.metrics.denied.with_label_values(&["connection_cap"]).inc();
                    drop(stream);
                    continue;
                };
                tracker.spawn(connection(stream, peer, connections.clone(), (slot, load)));
            }
        }
    }
    drop(incoming);
    tracker.close();
    if tokio::time::timeout(DRAIN_DEADLINE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("connections did not finish within the shutdown deadline");
    }
}

/// The balancer is ready while it has a healthy front-end to send viewers to.
async fn track_readiness(pool: Arc<Pool>, health: Health, shutdown: CancellationToken) {
    loop {
        health.set_ready(pool.has_healthy());
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    health.set_ready(false);
}

/// One viewer connection's task, holding `held` (its connection slot and its worker's load
/// count) until it is done. A plain connection that idles leaves its task for its worker's
/// idle table, and gets a new one with its next request.
async fn connection<H: Send + 'static>(
    stream: TcpStream,
    peer: SocketAddr,
    connections: Arc<Connections>,
    held: H,
) {
    let _ = stream.set_nodelay(true);
    match &connections.shared.tls {
        None => serve_plain(stream, peer, connections, Box::new(held), None).await,
        // Boxed: the handshake's and the TLS session's state (kilobytes) would otherwise size
        // every plain viewer's task too.
        Some(acceptor) => {
            let upstreams = Arc::new(Upstreams::on_worker(connections.idle.clone()));
            Box::pin(serve_tls(stream, peer, acceptor, &connections, &upstreams)).await;
            upstreams.trim_idle();
            drop(held);
        }
    }
}

/// A plain connection from `waiting_since` on (see [`h1::serve`]): served by the plain loop
/// until it is done, handed to hyper, or idles; an idle one is parked in the worker's table,
/// and this task ends unless it is readable already.
async fn serve_plain(
    mut stream: TcpStream,
    peer: SocketAddr,
    connections: Arc<Connections>,
    mut held: idle::Held,
    mut waiting_since: Option<tokio::time::Instant>,
) {
    let shared = &connections.shared;
    let limits = h1::Limits {
        header_timeout: shared.header_timeout,
        max_header_bytes: shared.max_header_bytes,
    };
    loop {
        let upstreams = Arc::new(Upstreams::on_worker(connections.idle.clone()));
        let served = h1::serve(
            stream,
            peer,
            &connections.forwarder,
            &upstreams,
            limits,
            &shared.shutdown,
            waiting_since,
        )
        .await;
        // Its front-end connections went back to the worker's list as each answer ended: the
        // next viewer on this worker takes one rather than connecting (a viewer per request
        // costs no connect). Past the viewer's spell, the list is trimmed.
        let (idle, since) = match served {
            h1::Outcome::Idle(idle, since) => (idle, since),
            h1::Outcome::Done => return upstreams.trim_idle(),
            h1::Outcome::Handoff(stream, read) => {
                // Rare (methods other than GET and HEAD): boxed, so that the hyper
                // connection's state does not size every plain connection's task.
                Box::pin(hand_over(stream, read, peer, &connections, &upstreams)).await;
                return upstreams.trim_idle();
            }
        };
        upstreams.trim_idle();
        drop(upstreams);
        let parked = idle::Idle {
            stream: idle,
            peer,
            held,
            since,
        };
        let deadline = since + limits.header_timeout;
        match connections.parked.park(parked, deadline) {
            // Parked (or closed on shutdown): the table has it now.
            None => return,
            // Readable already: served on.
            Some(back) => {
                stream = back.stream;
                held = back.held;
                waiting_since = Some(since);
            }
        }
    }
}

/// A plain connection the plain loop handed over goes to hyper, with the bytes already read.
async fn hand_over(
    stream: TcpStream,
    read: bytes::BytesMut,
    peer: SocketAddr,
    connections: &Arc<Connections>,
    upstreams: &Arc<Upstreams>,
) {
    let io = TokioIo::new(Prefixed { read, stream });
    let drain = |_: &mut std::task::Context<'_>| std::task::Poll::Ready(Ok(()));
    hyper::serve(io, peer, connections, upstreams, false, drain).await;
}

/// An HTTPS connection: the handshake within the header timeout, then the protocol the viewer
/// chose by ALPN: the balancer's own HTTP/2, or HTTP/1.1 in the plain loop (and hyper for
/// what that does not serve).
async fn serve_tls(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: &TlsAcceptor,
    connections: &Arc<Connections>,
    upstreams: &Arc<Upstreams>,
) {
    let accepted =
        tokio::time::timeout(connections.shared.header_timeout, acceptor.accept(stream)).await;
    let mut tls_stream = match accepted {
        Ok(Ok(s)) => s,
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "tls handshake failed");
            return;
        }
        Err(_) => return,
    };
    if tls_stream.get_ref().1.alpn_protocol() == Some(b"h2".as_slice()) {
        return h2::serve(tls_stream, peer, connections, upstreams).await;
    }
    // HTTP/1.1: the plain loop's, until a request it does not serve hands the connection on.
    let shared = &connections.shared;
    let limits = h1::Limits {
        header_timeout: shared.header_timeout,
        max_header_bytes: shared.max_header_bytes,
    };
    let mut waiting_since = None;
    let (stream, read) = loop {
        let served = h1::serve(
            tls_stream,
            peer,
            &connections.forwarder,
            upstreams,
            limits,
            &shared.shutdown,
            waiting_since,
        )
        .await;
        match served {
            h1::Outcome::Done => return,
            h1::Outcome::Handoff(stream, read) => break (stream, read),
            // A TLS session does not park (`Viewer::PARKS`); were it to idle, it waits on.
            h1::Outcome::Idle(stream, since) => {
                tls_stream = stream;
                waiting_since = Some(since);
            }
        }
    };
    let (io, drain) = coalesce::split(Prefixed { read, stream });
    let io = TokioIo::new(io);
    let drain = |cx: &mut std::task::Context<'_>| drain.poll_drain(cx);
    hyper::serve(io, peer, connections, upstreams, true, drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain viewer's task (while it is busy; an idle one is parked without a task) is as
    /// large as its largest state: the plain loop's, not the TLS session's or hyper's (2.9 kB
    /// in a test build when they were inline).
    #[tokio::test]
    async fn a_plain_viewer_connection_task_is_small() {
        let (pool, metrics, admission) = h1::fuzzing::parts();
        let shared = Arc::new(Shared {
            pool: pool.clone(),
            metrics: metrics.clone(),
            admission: admission.clone(),
            connect_timeout: Duration::from_secs(1),
            tls: None,
            header_timeout: Duration::from_secs(1),
            max_header_bytes: 16 * 1024,
            slots: Arc::new(Semaphore::new(1)),
            viewers: None,
            shutdown: CancellationToken::new(),
        });
        let connections = Arc::new(Connections {
            forwarder: Arc::new(Forwarder::new(
                pool,
                metrics,
                admission,
                Duration::from_secs(1),
            )),
            shared: shared.clone(),
            idle: Default::default(),
            parked: Arc::new(idle::Parked::new(shared.metrics.idle_connections.clone())),
            tracker: TaskTracker::new(),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let peer = stream.peer_addr().unwrap();
        let slot = shared.slots.clone().try_acquire_owned().unwrap();
        let task = connection(stream, peer, connections, slot);
        let size = std::mem::size_of_val(&task);
        assert!(size <= 800, "a viewer connection's task is {size} bytes");
    }
}
