//! `/api/token`: the player page's way to a playback token. The balancer asks the company's
//! authentication service (`--auth-url`, as nginx's `auth_request`) with the viewer's own
//! `Cookie` and `Authorization` headers; a 2xx answer names the viewer in
//! `X-Auth-Request-User` (or `X-Auth-Request-Email`, as oauth2-proxy sets them), and the viewer
//! gets a token for the stream in the `livecast_playback` cookie. 401 is passed on (the page
//! sends the viewer to sign in), any other refusal is 403, and an unreachable service 503:
//! nobody is let in because the check could not be made.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::metrics::Metrics;
use crate::playback::{claims_for, cookie, valid_viewer, Playback};

/// How long the authentication service may take.
const AUTH_TIMEOUT: Duration = Duration::from_secs(5);
/// The headers of the viewer's request passed to the authentication service.
const PASSED: [HeaderName; 2] = [header::COOKIE, header::AUTHORIZATION];
/// Where the service names the viewer, in order of preference.
const IDENTITY: [&str; 2] = ["x-auth-request-user", "x-auth-request-email"];

/// The answer to `/api/token`.
#[derive(Debug)]
pub(crate) struct Issued {
    pub status: StatusCode,
    pub json: bool,
    pub body: Bytes,
    pub set_cookie: Option<HeaderValue>,
}

impl Issued {
    fn refusal(status: StatusCode, text: &'static str) -> Self {
        Self {
            status,
            json: false,
            body: Bytes::from_static(text.as_bytes()),
            set_cookie: None,
        }
    }
}

/// Hands out tokens for viewers the authentication service vouched for.
#[derive(Debug)]
pub(crate) struct Issuer {
    guard: Arc<Playback>,
    auth: Option<(hyper::Uri, Client<HttpConnector, Empty<Bytes>>)>,
    ttl: Duration,
    bind_address: bool,
    metrics: Metrics,
}

impl Issuer {
    pub fn new(
        guard: Arc<Playback>,
        auth_url: Option<&str>,
        ttl: Duration,
        bind_address: bool,
        metrics: Metrics,
    ) -> Self {
        let auth = auth_url.and_then(|u| u.parse().ok()).map(|uri| {
            let mut connector = HttpConnector::new();
            connector.set_connect_timeout(Some(AUTH_TIMEOUT));
            (uri, Client::builder(TokioExecutor::new()).build(connector))
        });
        Self {
            guard,
            auth,
            ttl,
            bind_address,
            metrics,
        }
    }

    fn deny(&self, reason: &str, status: StatusCode, text: &'static str) -> Issued {
        self.metrics.denied.with_label_values(&[reason]).inc();
        Issued::refusal(status, text)
    }

    /// Answers `/api/token?stream=<name>` for a viewer at `client` with `headers`.
    pub async fn issue(&self, query: Option<&str>, headers: &HeaderMap, client: IpAddr) -> Issued {
        let Some((uri, http)) = &self.auth else {
            return Issued::refusal(
                StatusCode::NOT_FOUND,
                "tokens are not handed out here: playback URLs come signed from the company portal\n",
            );
        };
        let stream = query
            .into_iter()
            .flat_map(|q| form_urlencoded::parse(q.as_bytes()))
            .find(|(k, _)| k == "stream")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        if !livecast_media::publish::valid_stream_name(&stream) {
            return Issued::refusal(StatusCode::BAD_REQUEST, "?stream=<name> is required\n");
        }
        let mut request = hyper::Request::get(uri.clone());
        for name in &PASSED {
            for value in headers.get_all(name) {
                request = request.header(name, value);
            }
        }
        let request = request
            .header("x-original-uri", format!("/hls/{stream}/"))
            .header("x-original-method", "GET")
            .header("x-forwarded-for", client.to_string())
            .header(header::USER_AGENT, "livecast-proxy")
            .body(Empty::new());
        let Ok(request) = request else {
            return self.deny("auth_refused", StatusCode::FORBIDDEN, "forbidden\n");
        };
        let answer = tokio::time::timeout(AUTH_TIMEOUT, async {
            let response = http.request(request).await?;
            let (parts, body) = response.into_parts();
            let _ = body.collect().await;
            Ok::<_, hyper_util::client::legacy::Error>(parts)
        })
        .await;
        let parts = match answer {
            Ok(Ok(parts)) => parts,
            Ok(Err(error)) => {
                tracing::error!(%error, "authentication service unreachable; no token");
                return self.deny(
                    "auth_unavailable",
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the authentication service cannot be reached\n",
                );
            }
            Err(_) => {
                tracing::error!("authentication service timed out; no token");
                return self.deny(
                    "auth_unavailable",
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the authentication service cannot be reached\n",
                );
            }
        };
        if parts.status == StatusCode::UNAUTHORIZED {
            return self.deny("auth_refused", StatusCode::UNAUTHORIZED, "sign in first\n");
        }
        if !parts.status.is_success() {
            return self.deny(
                "auth_refused",
                StatusCode::FORBIDDEN,
                "you may not watch this stream\n",
            );
        }
        let viewer = IDENTITY
            .iter()
            .find_map(|name| parts.headers.get(*name))
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .trim()
            .to_string();
        if !valid_viewer(&viewer) {
            tracing::warn!("the authentication service named a viewer a token cannot carry");
            return self.deny("auth_refused", StatusCode::FORBIDDEN, "forbidden\n");
        }
        let address = self.bind_address.then_some(client);
        let claims = claims_for(&stream, self.ttl, &viewer, address);
        let Ok(token) = self.guard.mint(&claims) else {
            return self.deny("auth_refused", StatusCode::FORBIDDEN, "forbidden\n");
        };
        self.metrics.tokens_issued.inc();
        tracing::info!(target: "livecast::audit", %stream, viewer = %viewer, %client, "playback token issued");
        let body = serde_json::json!({
            "stream": stream,
            "viewer": viewer,
            "expires": claims.expires,
            "renew_after_secs": self.ttl.as_secs() / 2,
        });
        Issued {
            status: StatusCode::OK,
            json: true,
            body: Bytes::from(body.to_string()),
            set_cookie: HeaderValue::from_str(&cookie(&stream, &token, self.ttl.as_secs())).ok(),
        }
    }
}
