//! The Elasticsearch / OpenSearch sink: `_bulk` with `create` and deterministic ids.
//!
//! Per item: 2xx is delivered, 409 means an earlier attempt already delivered it (a retry after
//! a crash), 429 and 5xx are retried, any other 4xx goes to the dead-letter file with the
//! reason. A whole request that fails (no connection, 429, 5xx) is retried as a whole.
//!
//! Before its first `_bulk` request the sink installs the index template
//! (`deploy/elasticsearch/livecast-access.template.json`, its pattern set to `<index>*`) with
//! `PUT _index_template/<index>?create=true`, as Filebeat and Vector users expect, so that
//! `client.ip` is an `ip`, `@timestamp` a date, paths and streams keywords and durations and
//! bytes numbers from the first document on. A template of that name already there is left as
//! it is (the operator's own); a refusal (no privilege, say) is logged and shipping goes on.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use crate::sink::{Outcome, Sink};
use crate::source::Line;
use crate::tls::Connector;

/// Why a whole `_bulk` request failed (it will be retried).
#[derive(Debug, thiserror::Error)]
pub(crate) enum BulkError {
    #[error("cannot reach elasticsearch: {0}")]
    Unreachable(String),
    #[error("elasticsearch answered {0}")]
    Status(StatusCode),
    #[error("unreadable _bulk response: {0}")]
    Response(String),
}

/// The index template for the access-log fields (see the module documentation).
const TEMPLATE: &str = include_str!("../../../deploy/elasticsearch/livecast-access.template.json");

#[derive(Debug)]
pub(crate) struct Elasticsearch {
    /// One client, its connections kept alive (plain or TLS).
    client: Client<Connector, Full<Bytes>>,
    /// `<url>/_bulk`.
    bulk_url: http::Uri,
    /// `--elasticsearch-index`: the data stream or index the lines go to.
    index: String,
    /// The `Authorization` header (basic or API key), if any.
    auth: Option<HeaderValue>,
    /// `--elasticsearch-gzip`: request bodies compressed.
    gzip: bool,
    /// `PUT` target and body of the index template, while it is still to be installed.
    template: Option<(http::Uri, Bytes)>,
    /// The template was installed, found already there, or refused for good.
    template_done: AtomicBool,
}

/// The template for `index`: the bundled one with its pattern set to `<index>*`.
pub(crate) fn template_for(index: &str) -> Bytes {
    let mut template: serde_json::Value =
        serde_json::from_str(TEMPLATE).expect("the bundled index template is JSON");
    template["index_patterns"] = serde_json::json!([format!("{index}*")]);
    Bytes::from(template.to_string())
}

#[derive(Deserialize)]
struct BulkResponse {
    #[serde(default)]
    items: Vec<std::collections::HashMap<String, BulkItem>>,
}

#[derive(Deserialize)]
struct BulkItem {
    status: u16,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

impl Elasticsearch {
    pub fn new(
        base: &str,
        index: String,
        auth: Option<HeaderValue>,
        gzip: bool,
        install_template: bool,
        tls: Option<tokio_rustls::TlsConnector>,
    ) -> Result<Self, String> {
        let base = base.trim_end_matches('/');
        let bad = |_| format!("bad elasticsearch url {base:?}");
        let bulk_url = format!("{base}/_bulk").parse().map_err(bad)?;
        let template = if install_template {
            let url = format!("{base}/_index_template/{index}?create=true")
                .parse()
                .map_err(bad)?;
            Some((url, template_for(&index)))
        } else {
            None
        };
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(Connector::new(tls)),
            bulk_url,
            index,
            auth,
            gzip,
            template_done: AtomicBool::new(template.is_none()),
            template,
        })
    }

    /// Sends `request` with `body` (and the credentials) and reads the whole answer within
    /// `timeout`.
    async fn call(
        &self,
        mut request: http::request::Builder,
        body: Bytes,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes), BulkError> {
        if let Some(auth) = &self.auth {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| BulkError::Response(e.to_string()))?;
        let response = tokio::time::timeout(timeout, self.client.request(request))
            .await
            .map_err(|_| BulkError::Unreachable("timed out".into()))?
            .map_err(|e| BulkError::Unreachable(e.to_string()))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| BulkError::Unreachable(e.to_string()))?
            .to_bytes();
        Ok((status, bytes))
    }

    /// Installs the index template unless that was done (or given up) already. An error
    /// means "try again later", like a failed `_bulk` request.
    async fn ensure_template(&self) -> Result<(), BulkError> {
        let Some((url, body)) = &self.template else {
            return Ok(());
        };
        if self.template_done.load(Ordering::Acquire) {
            return Ok(());
        }
        let request = Request::put(url.clone()).header(CONTENT_TYPE, "application/json");
        let (status, bytes) = self
            .call(request, body.clone(), Duration::from_secs(30))
            .await?;
        let text = String::from_utf8_lossy(&bytes);
        match status.as_u16() {
            200..=299 => {
                tracing::info!(template = %self.index, "index template installed");
            }
            400 if text.contains("already exists") => {
                tracing::info!(template = %self.index, "index template already there; kept as it is");
            }
            429 | 500..=599 => return Err(BulkError::Status(status)),
            _ => {
                tracing::warn!(
                    template = %self.index, %status, answer = %text,
                    "index template refused; shipping without it (fields get dynamic mappings)"
                );
            }
        }
        self.template_done.store(true, Ordering::Release);
        Ok(())
    }

    /// The NDJSON body for `lines` (selected by `which`).
    pub fn body(&self, lines: &[Line], which: &[usize]) -> Vec<u8> {
        let mut body = Vec::with_capacity(which.iter().map(|i| lines[*i].bytes.len() + 96).sum());
        for i in which {
            let line = &lines[*i];
            let _ = writeln!(
                body,
                "{{\"create\":{{\"_index\":\"{}\",\"_id\":\"{}\"}}}}",
                self.index,
                line.id()
            );
            body.extend_from_slice(&line.bytes);
            body.push(b'\n');
        }
        body
    }

    /// Sends `which` of `lines` in one `_bulk` request.
    async fn bulk(&self, lines: &[Line], which: &[usize]) -> Result<Outcome, BulkError> {
        self.ensure_template().await?;
        let mut body = self.body(lines, which);
        let mut request =
            Request::post(self.bulk_url.clone()).header(CONTENT_TYPE, "application/x-ndjson");
        if self.gzip {
            let mut gz = flate2::write::GzEncoder::new(
                Vec::with_capacity(body.len() / 4),
                flate2::Compression::fast(),
            );
            body = gz
                .write_all(&body)
                .and_then(|()| gz.finish())
                .map_err(|e| BulkError::Response(e.to_string()))?;
            request = request.header(CONTENT_ENCODING, "gzip");
        }
        let (status, bytes) = self
            .call(request, Bytes::from(body), Duration::from_secs(60))
            .await?;
        if !status.is_success() {
            return Err(BulkError::Status(status));
        }
        let parsed: BulkResponse =
            serde_json::from_slice(&bytes).map_err(|e| BulkError::Response(e.to_string()))?;
        if parsed.items.len() != which.len() {
            return Err(BulkError::Response(format!(
                "{} items for {} documents",
                parsed.items.len(),
                which.len()
            )));
        }
        let mut outcome = Outcome::default();
        for (item, index) in parsed.items.into_iter().zip(which) {
            let Some(result) = item.into_values().next() else {
                outcome.retry.push(*index);
                continue;
            };
            match result.status {
                200..=299 => outcome.delivered += 1,
                409 => outcome.already_there += 1,
                429 | 500..=599 => outcome.retry.push(*index),
                other => {
                    let reason = result
                        .error
                        .map_or_else(|| format!("status {other}"), |e| e.to_string());
                    outcome.rejected.push((*index, reason));
                }
            }
        }
        Ok(outcome)
    }
}

/// `Authorization` for basic auth or an API key.
pub(crate) fn authorization(
    user: Option<&str>,
    password: Option<&str>,
    api_key: Option<&str>,
) -> Option<HeaderValue> {
    if let Some(key) = api_key {
        return HeaderValue::from_str(&format!("ApiKey {key}")).ok();
    }
    let (user, password) = (user?, password?);
    HeaderValue::from_str(&format!(
        "Basic {}",
        base64(format!("{user}:{password}").as_bytes())
    ))
    .ok()
}

fn base64(data: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl Sink for Elasticsearch {
    type Error = BulkError;

    fn name(&self) -> &'static str {
        crate::metrics::SINK
    }

    async fn send(&self, lines: &[Line], which: &[usize]) -> Result<Outcome, BulkError> {
        self.bulk(lines, which).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_headers() {
        assert_eq!(
            authorization(Some("elastic"), Some("changeme"), None).unwrap(),
            "Basic ZWxhc3RpYzpjaGFuZ2VtZQ=="
        );
        assert_eq!(
            authorization(None, None, Some("abc")).unwrap(),
            "ApiKey abc"
        );
        assert!(authorization(None, None, None).is_none());
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
    }

    #[test]
    fn bulk_body_uses_create_and_stable_ids() {
        let es = Elasticsearch::new(
            "http://es:9200/",
            "livecast-access".into(),
            None,
            false,
            true,
            None,
        )
        .unwrap();
        let lines = vec![Line {
            file: 0xab,
            offset: 42,
            end: 50,
            bytes: b"{\"x\":1}".to_vec(),
        }];
        let body = String::from_utf8(es.body(&lines, &[0])).unwrap();
        assert_eq!(
            body,
            "{\"create\":{\"_index\":\"livecast-access\",\"_id\":\"00000000000000ab-42\"}}\n{\"x\":1}\n"
        );
        assert_eq!(es.bulk_url, "http://es:9200/_bulk");
        let (url, _) = es.template.as_ref().unwrap();
        assert_eq!(
            url,
            "http://es:9200/_index_template/livecast-access?create=true"
        );
    }

    #[test]
    fn the_template_maps_every_access_log_field_and_follows_the_index() {
        let template: serde_json::Value =
            serde_json::from_slice(&template_for("company-live")).unwrap();
        assert_eq!(
            template["index_patterns"],
            serde_json::json!(["company-live*"])
        );
        let props = &template["template"]["mappings"]["properties"];
        let kind = |path: &str| {
            let mut at = props;
            let parts: Vec<&str> = path.split('.').collect();
            for (i, part) in parts.iter().enumerate() {
                at = &at[part];
                if i + 1 < parts.len() {
                    at = &at["properties"];
                }
            }
            at["type"].as_str().unwrap_or_default().to_string()
        };
        for (field, expected) in [
            ("@timestamp", "date"),
            ("client.ip", "ip"),
            ("http.request.method", "keyword"),
            ("url.path", "keyword"),
            ("http.response.status_code", "long"),
            ("http.response.body.bytes", "long"),
            ("event.duration", "long"),
            ("user_agent.original", "keyword"),
            ("host.name", "keyword"),
            ("livecast.stream", "keyword"),
            ("livecast.session", "keyword"),
            ("user.name", "keyword"),
        ] {
            assert_eq!(kind(field), expected, "{field}");
        }
    }
}
