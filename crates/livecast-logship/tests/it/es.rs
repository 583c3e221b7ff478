//! The Elasticsearch `_bulk` stand-in.

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{post, put};
use axum::Router;

#[derive(Debug, Default)]
pub struct Stand {
    pub docs: Mutex<HashMap<String, serde_json::Value>>,
    /// Answer the next N requests with 503 (the sink is down).
    pub down_for: AtomicUsize,
    /// Answer every request with 503 while set.
    pub down: AtomicBool,
    /// Answer the next N items with 429 (per-item back-pressure).
    pub throttle_items: AtomicUsize,
    /// Reject documents whose text contains this with 400.
    pub reject: Mutex<Option<String>>,
    /// Delay every answer (widens the window between acknowledgement and checkpoint).
    pub delay_ms: AtomicUsize,
    pub requests: AtomicUsize,
    pub conflicts: AtomicUsize,
    /// Index templates by name, as `PUT _index_template/<name>` stored them.
    pub templates: Mutex<HashMap<String, serde_json::Value>>,
    /// What was asked, in order: "template" or "bulk".
    pub calls: Mutex<Vec<&'static str>>,
}

impl Stand {
    pub fn count(&self) -> usize {
        self.docs.lock().expect("lock").len()
    }
}

pub async fn start() -> (SocketAddr, Arc<Stand>) {
    let stand = Arc::new(Stand::default());
    let app = Router::new()
        .route("/_bulk", post(bulk))
        .route("/_index_template/{name}", put(template))
        .with_state(stand.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, stand)
}

/// `PUT _index_template/<name>[?create=true]`, answered as Elasticsearch answers it.
async fn template(
    State(stand): State<Arc<Stand>>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> (StatusCode, String) {
    stand.calls.lock().expect("lock").push("template");
    let Ok(template) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            r#"{"error":"x_content_parse_exception"}"#.into(),
        );
    };
    let mut templates = stand.templates.lock().expect("lock");
    if query.is_some_and(|q| q.contains("create=true")) && templates.contains_key(&name) {
        return (
            StatusCode::BAD_REQUEST,
            format!(
                r#"{{"error":{{"type":"illegal_argument_exception","reason":"index template [{name}] already exists"}},"status":400}}"#
            ),
        );
    }
    templates.insert(name, template);
    (StatusCode::OK, r#"{"acknowledged":true}"#.into())
}

async fn bulk(
    State(stand): State<Arc<Stand>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    stand.calls.lock().expect("lock").push("bulk");
    stand.requests.fetch_add(1, Ordering::SeqCst);
    let delay = stand.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay as u64)).await;
    }
    if stand.down.load(Ordering::SeqCst)
        || stand
            .down_for
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "{\"error\":\"unavailable\"}".into(),
        );
    }
    if headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/x-ndjson") {
        return (
            StatusCode::NOT_ACCEPTABLE,
            "{\"error\":\"content type\"}".into(),
        );
    }
    let text = if headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        == Some("gzip")
    {
        let mut out = String::new();
        if flate2::read::GzDecoder::new(&body[..])
            .read_to_string(&mut out)
            .is_err()
        {
            return (StatusCode::BAD_REQUEST, "{\"error\":\"gzip\"}".into());
        }
        out
    } else {
        String::from_utf8_lossy(&body).to_string()
    };
    if !text.ends_with('\n') {
        return (
            StatusCode::BAD_REQUEST,
            "{\"error\":\"the bulk request must be terminated by a newline\"}".into(),
        );
    }
    let mut lines = text.lines();
    let mut items = Vec::new();
    let reject = stand.reject.lock().expect("lock").clone();
    while let Some(action) = lines.next() {
        let Ok(action) = serde_json::from_str::<serde_json::Value>(action) else {
            return (StatusCode::BAD_REQUEST, "{\"error\":\"bad action\"}".into());
        };
        let Some(source) = lines.next() else {
            return (
                StatusCode::BAD_REQUEST,
                "{\"error\":\"action without document\"}".into(),
            );
        };
        let id = action["create"]["_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(!id.is_empty(), "every document has a deterministic id");
        assert!(action["create"]["_index"].is_string());
        let status = if stand
            .throttle_items
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            429
        } else if reject.as_deref().is_some_and(|r| source.contains(r)) {
            400
        } else {
            match serde_json::from_str::<serde_json::Value>(source) {
                Err(_) => 400,
                Ok(doc) => {
                    let mut docs = stand.docs.lock().expect("lock");
                    if docs.contains_key(&id) {
                        stand.conflicts.fetch_add(1, Ordering::SeqCst);
                        409
                    } else {
                        docs.insert(id.clone(), doc);
                        201
                    }
                }
            }
        };
        let error = match status {
            400 => {
                serde_json::json!({"type": "mapper_parsing_exception", "reason": "failed to parse"})
            }
            409 => {
                serde_json::json!({"type": "version_conflict_engine_exception", "reason": "document already exists"})
            }
            429 => {
                serde_json::json!({"type": "es_rejected_execution_exception", "reason": "rejected execution"})
            }
            _ => serde_json::Value::Null,
        };
        let mut item =
            serde_json::json!({"_index": "livecast-access", "_id": id, "status": status});
        if !error.is_null() {
            item["error"] = error;
        }
        items.push(serde_json::json!({ "create": item }));
    }
    let errors = items
        .iter()
        .any(|i| i["create"]["status"].as_u64().unwrap_or(0) >= 300);
    (
        StatusCode::OK,
        serde_json::json!({"took": 1, "errors": errors, "items": items}).to_string(),
    )
}

/// Puts TLS in front of the stand-in at `plain`, with a self-signed certificate for 127.0.0.1
/// written (PEM) to `ca`: a TLS-terminating relay, byte for byte.
pub async fn start_tls(plain: SocketAddr, ca: &std::path::Path) -> SocketAddr {
    use rustls_pki_types::pem::PemObject;
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("cert");
    std::fs::write(ca, cert.cert.pem()).expect("write ca");
    let key =
        rustls_pki_types::PrivateKeyDer::from_pem_slice(cert.key_pair.serialize_pem().as_bytes())
            .expect("key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut upstream) = tokio::net::TcpStream::connect(plain).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
            });
        }
    });
    addr
}
