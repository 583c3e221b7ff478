//! The admin HTTP surface every service exposes on its admin port: `/metrics` in the
//! Prometheus text format, `/livez` (the process answers) and `/readyz` (the service wants
//! traffic).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The header a service that is shutting down puts on its `/readyz` answer, so that a balancer
/// takes it out of rotation at the first check instead of after several failed ones (as Envoy's
/// `x-envoy-immediate-health-check-fail`): a plain failure may be a blip, this is a goodbye.
pub const LEAVING_HEADER: &str = "livecast-leaving";

/// The header every front-end response carries with the replica's name (its access-log
/// `host.name`), so a viewer or a load test can tell which front-end answered, as a CDN's
/// `X-Served-By` does.
pub const REPLICA_HEADER: &str = "livecast-replica";

/// Readiness shared between a service and its admin router.
#[derive(Debug, Clone, Default)]
pub struct Health {
    ready: Arc<AtomicBool>,
    leaving: Arc<AtomicBool>,
}

impl Health {
    /// Marks the service ready (or not) for traffic.
    pub fn set_ready(&self, ready: bool) {
        let leaving = self.leaving.load(Ordering::SeqCst);
        self.ready.store(ready && !leaving, Ordering::SeqCst);
    }

    /// Marks the service as shutting down: unready for good, and `/readyz` says why
    /// (`LEAVING_HEADER`).
    pub fn set_leaving(&self) {
        self.leaving.store(true, Ordering::SeqCst);
        self.ready.store(false, Ordering::SeqCst);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct AdminState {
    registry: Registry,
    health: Health,
}

/// Builds the admin router.
pub fn router(registry: Registry, health: Health) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(AdminState { registry, health })
}

/// Serves the admin router on `listener` until `shutdown` is cancelled.
pub async fn serve_admin(
    listener: TcpListener,
    registry: Registry,
    health: Health,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_admin_with(listener, registry, health, Router::new(), shutdown).await
}

/// Serves the admin router plus a service's own operator routes.
pub async fn serve_admin_with(
    listener: TcpListener,
    registry: Registry,
    health: Health,
    extra: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(registry, health).merge(extra))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    let encoder = TextEncoder::new();
    let mut body = Vec::new();
    if let Err(error) = encoder.encode(&state.registry.gather(), &mut body) {
        tracing::error!(%error, "cannot encode metrics");
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            Vec::new(),
        );
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        body,
    )
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    readiness(&state.health)
}

/// `/readyz` alone, for a service that also answers it on its traffic port (so a balancer
/// checks the very port it sends to).
pub fn readiness_route<S: Clone + Send + Sync + 'static>(health: Health) -> Router<S> {
    Router::new()
        .route(
            "/readyz",
            get(|State(health): State<Health>| async move { readiness(&health) }),
        )
        .with_state(health)
}

fn readiness(health: &Health) -> axum::response::Response {
    if health.leaving.load(Ordering::SeqCst) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(LEAVING_HEADER, "shutting down")],
            "shutting down\n",
        )
            .into_response()
    } else if health.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}
