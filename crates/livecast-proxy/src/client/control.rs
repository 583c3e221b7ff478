//! The control plane's HTTP client: GETs to front-ends and to the shipper that are not a
//! viewer's (health checks, the status page's stream list, the viewer count). One type with
//! the same timeouts and error handling for all three.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// A small GET client; cloning shares its connections.
#[derive(Debug, Clone)]
pub(crate) struct ControlClient {
    client: Client<HttpConnector, Empty<Bytes>>,
}

/// An answer's head.
#[derive(Debug)]
pub(crate) struct Head {
    pub status: StatusCode,
    pub headers: HeaderMap,
}

impl ControlClient {
    /// Keeps connections alive between calls (the status page, the viewer count).
    pub fn pooled(connect_timeout: Duration) -> Self {
        Self::build(connect_timeout, true)
    }

    /// Opens a fresh connection for every call: a pooled one could hide a backend that
    /// stopped accepting (health checks).
    pub fn fresh(connect_timeout: Duration) -> Self {
        Self::build(connect_timeout, false)
    }

    fn build(connect_timeout: Duration, pooled: bool) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        let mut builder = Client::builder(TokioExecutor::new());
        if !pooled {
            builder.pool_max_idle_per_host(0);
        }
        Self {
            client: builder.build(connector),
        }
    }

    /// The head of `GET uri`, or `None` when no answer came within `timeout`.
    pub async fn head(&self, uri: Uri, timeout: Duration) -> Option<Head> {
        let response = tokio::time::timeout(timeout, self.client.get(uri))
            .await
            .ok()?
            .ok()?;
        let (parts, _) = response.into_parts();
        Some(Head {
            status: parts.status,
            headers: parts.headers,
        })
    }

    /// The body of a successful `GET uri`, or `None` for a failure, a non-2xx answer or no
    /// answer head within `timeout`.
    pub async fn body(&self, uri: Uri, timeout: Duration) -> Option<Bytes> {
        let response = tokio::time::timeout(timeout, self.client.get(uri))
            .await
            .ok()?
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        Some(response.into_body().collect().await.ok()?.to_bytes())
    }
}
