//! The operator status page, on the admin port: every front-end as the balancer sees it, and
//! every live stream as a healthy front-end reports it (bitrate, uptime, codecs, picture size,
//! frame rate, keyframe interval and its warning) with its viewers now from the shipper. Data still flows one way: the balancer
//! asks a front-end (its downstream) like any viewer would; nothing calls the ingest.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use serde::Serialize;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::forward::Body;
use crate::pool::{BackendStatus, Pool, State as BackendState};

const PAGE: &str = include_str!("status.html");

#[derive(Clone)]
struct StatusState {
    pool: Arc<Pool>,
    client: Client<HttpConnector, Body>,
    viewers: Option<Arc<crate::viewers::ViewerFeed>>,
    admin_port: Option<u16>,
}

#[derive(Debug, Serialize)]
struct Status {
    front_ends: Vec<BackendStatus>,
    /// The stream list of one healthy front-end, or null when none answered.
    streams: Option<serde_json::Value>,
    /// The shipper's viewer report (`/api/viewers`), or null without one.
    viewers: Option<serde_json::Value>,
}

/// Routes merged into the admin router.
pub(crate) fn router(
    pool: Arc<Pool>,
    connect_timeout: Duration,
    viewers: Option<Arc<crate::viewers::ViewerFeed>>,
    admin_port: Option<u16>,
) -> Router {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    let client = Client::builder(TokioExecutor::new()).build(connector);
    Router::new()
        .route("/status", get(|| async { Html(PAGE) }))
        .route("/api/status", get(status))
        .with_state(StatusState {
            pool,
            client,
            viewers,
            admin_port,
        })
}

async fn status(State(state): State<StatusState>) -> impl IntoResponse {
    let streams = fetch_streams(&state).await;
    let viewers = state
        .viewers
        .as_ref()
        .and_then(|feed| feed.latest())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let body = Status {
        front_ends: state.pool.describe(),
        streams,
        viewers,
    };
    ([(header::CACHE_CONTROL, "no-cache")], axum::Json(body))
}

async fn fetch_streams(state: &StatusState) -> Option<serde_json::Value> {
    let backend = state
        .pool
        .snapshot()
        .iter()
        .find(|b| b.state() == BackendState::Healthy)
        .map(|b| b.addr)?;
    // The operator list (with publishers) lives on the front-end's admin port.
    let backend = match state.admin_port {
        Some(port) => std::net::SocketAddr::new(backend.ip(), port),
        None => backend,
    };
    let uri: hyper::Uri = format!("http://{backend}/api/streams").parse().ok()?;
    let request = http::Request::get(uri)
        .body(
            Empty::<Bytes>::new()
                .map_err(|never| match never {})
                .boxed(),
        )
        .ok()?;
    let response = tokio::time::timeout(Duration::from_secs(2), state.client.request(request))
        .await
        .ok()?
        .ok()?;
    let bytes = response.into_body().collect().await.ok()?.to_bytes();
    serde_json::from_slice(&bytes).ok()
}
