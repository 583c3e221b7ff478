//! One proxied request: header rewriting, the upstream call, and the retry on another backend.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::backends::Backends;
use crate::metrics::Metrics;

/// Body type on both sides of the proxy.
pub(crate) type Body = BoxBody<Bytes, hyper::Error>;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1); never forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Forwards requests to the backends.
#[derive(Debug)]
pub(crate) struct Forwarder {
    client: Client<HttpConnector, Body>,
    backends: Arc<Backends>,
    metrics: Metrics,
}

impl Forwarder {
    pub fn new(backends: Arc<Backends>, metrics: Metrics, connect_timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self {
            client,
            backends,
            metrics,
        }
    }

    pub async fn handle(&self, request: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let addrs = self.backends.snapshot();
        if addrs.is_empty() {
            self.metrics.no_backend.inc();
            return plain(StatusCode::SERVICE_UNAVAILABLE, "no front-end available\n");
        }
        let (parts, body) = request.into_parts();
        let mut headers = parts.headers;
        strip_hop_by_hop(&mut headers);
        append_forwarded_for(&mut headers, peer);
        headers.insert(
            HeaderName::from_static("x-forwarded-proto"),
            HeaderValue::from_static("http"),
        );
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        // A GET or HEAD carries no body worth keeping and is safe to send twice; anything else
        // gets exactly one attempt with its body streamed through.
        let replayable = parts.method == Method::GET || parts.method == Method::HEAD;
        let mut body = if replayable { None } else { Some(body.boxed()) };
        let attempts = if replayable { addrs.len().min(2) } else { 1 };
        let start = self.backends.next_index(addrs.len());
        for attempt in 0..attempts {
            let addr = addrs[(start + attempt) % addrs.len()];
            let backend = addr.to_string();
            let upstream_body = body
                .take()
                .unwrap_or_else(|| Empty::new().map_err(|never| match never {}).boxed());
            let mut upstream = Request::new(upstream_body);
            *upstream.method_mut() = parts.method.clone();
            *upstream.headers_mut() = headers.clone();
            *upstream.uri_mut() = match format!("http://{addr}{path}").parse() {
                Ok(uri) => uri,
                Err(_) => return plain(StatusCode::BAD_REQUEST, "bad request target\n"),
            };
            let sent = Instant::now();
            match self.client.request(upstream).await {
                Ok(response) => {
                    self.metrics
                        .upstream_duration
                        .with_label_values(&[&backend])
                        .observe(sent.elapsed().as_secs_f64());
                    let status = response.status().as_u16();
                    self.metrics
                        .requests
                        .with_label_values(&[&backend, livecast_telemetry::status_class(status)])
                        .inc();
                    let (mut parts, body) = response.into_parts();
                    strip_hop_by_hop(&mut parts.headers);
                    return Response::from_parts(parts, body.boxed());
                }
                Err(error) if error.is_connect() => {
                    self.metrics
                        .upstream_errors
                        .with_label_values(&[&backend, "connect"])
                        .inc();
                    tracing::warn!(%backend, error = %error, "backend refused connection");
                    if attempt + 1 < attempts {
                        self.metrics.retries.inc();
                    }
                }
                Err(error) => {
                    self.metrics
                        .upstream_errors
                        .with_label_values(&[&backend, "request"])
                        .inc();
                    tracing::warn!(%backend, error = %error, "upstream request failed");
                    break;
                }
            }
        }
        self.metrics
            .requests
            .with_label_values(&["none", "5xx"])
            .inc();
        plain(StatusCode::BAD_GATEWAY, "front-end unavailable\n")
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from_static(text.as_bytes()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Removes hop-by-hop headers, including any the `Connection` header names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

fn append_forwarded_for(headers: &mut HeaderMap, peer: SocketAddr) {
    let ip = peer.ip().to_string();
    let value = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(existing) => format!("{existing}, {ip}"),
        None => ip,
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(HeaderName::from_static("x-forwarded-for"), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_forwarded_for() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        append_forwarded_for(&mut h, "10.0.0.7:1234".parse().unwrap());
        append_forwarded_for(&mut h, "127.0.0.1:1".parse().unwrap());
        assert_eq!(h["x-forwarded-for"], "10.0.0.7, 127.0.0.1");
    }
}
