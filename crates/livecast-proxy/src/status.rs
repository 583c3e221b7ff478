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
use serde::Serialize;

use crate::client::control::ControlClient;
use crate::pool::{BackendStatus, Pool, State as BackendState};

#[cfg(test)]
mod auth_tests {
    use super::authorized;
    use axum::http::{header, HeaderMap, HeaderValue};

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn the_admin_token_is_taken_as_bearer_or_as_a_basic_password() {
        let token = "op-token-123";
        assert!(authorized(&with("Bearer op-token-123"), token));
        // "ops:op-token-123" and "ops:wrong"
        assert!(authorized(&with("Basic b3BzOm9wLXRva2VuLTEyMw=="), token));
        assert!(!authorized(&with("Basic b3BzOndyb25n"), token));
        assert!(!authorized(&with("Bearer op-token-12"), token));
        assert!(!authorized(&with("Basic !!!"), token));
        assert!(!authorized(&HeaderMap::new(), token));
    }
}

const PAGE: &str = include_str!("status.html");

#[derive(Clone)]
struct StatusState {
    pool: Arc<Pool>,
    client: ControlClient,
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

/// Routes merged into the admin router; with `token`, each asks for it.
pub(crate) fn router(
    pool: Arc<Pool>,
    client: ControlClient,
    viewers: Option<Arc<crate::viewers::ViewerFeed>>,
    admin_port: Option<u16>,
    token: Option<String>,
) -> Router {
    let routes = Router::new()
        .route("/status", get(|| async { Html(PAGE) }))
        .route("/api/status", get(status))
        .with_state(StatusState {
            pool,
            client,
            viewers,
            admin_port,
        });
    match token {
        Some(token) => {
            let token = Arc::new(token);
            routes.layer(axum::middleware::from_fn(
                move |request: axum::extract::Request, next: axum::middleware::Next| {
                    let token = token.clone();
                    async move {
                        if authorized(request.headers(), &token) {
                            next.run(request).await
                        } else {
                            (
                                axum::http::StatusCode::UNAUTHORIZED,
                                [(
                                    header::WWW_AUTHENTICATE,
                                    "Basic realm=\"livecast operator\"",
                                )],
                                "the operator page needs the admin token\n",
                            )
                                .into_response()
                        }
                    }
                },
            ))
        }
        None => routes,
    }
}

/// Whether the request carries the admin token: as a bearer token, or as the password of
/// HTTP Basic credentials (any user name). Compared in constant time.
fn authorized(headers: &axum::http::HeaderMap, token: &str) -> bool {
    use base64::Engine as _;
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let given = if let Some(bearer) = value.strip_prefix("Bearer ") {
        bearer.trim().as_bytes().to_vec()
    } else if let Some(basic) = value.strip_prefix("Basic ") {
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(basic.trim()) else {
            return false;
        };
        match decoded.iter().position(|b| *b == b':') {
            Some(colon) => decoded[colon + 1..].to_vec(),
            None => return false,
        }
    } else {
        return false;
    };
    // ring compares MACs in constant time; comparing the MACs of both compares them.
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"livecast-admin-token");
    let expected = ring::hmac::sign(&key, token.as_bytes());
    ring::hmac::verify(&key, &given, expected.as_ref()).is_ok()
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
    let bytes = state.client.body(uri, Duration::from_secs(2)).await?;
    serde_json::from_slice(&bytes).ok()
}
