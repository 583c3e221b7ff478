//! The headers a proxy owns, for both servers and both clients: the hop-by-hop list and its
//! stripping, X-Forwarded-For/-Proto and the request id.

use std::net::IpAddr;

use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue};

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1); never forwarded.
pub(crate) const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];
pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Removes hop-by-hop headers, including any the `Connection` header names. Most messages
/// carry none, so one pass over the (few) names decides whether there is anything to do.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let hop = |k: &HeaderName| {
        // Standard names compare as enum values; only a custom name needs its text looked at.
        k == header::CONNECTION
            || k == header::PROXY_AUTHENTICATE
            || k == header::PROXY_AUTHORIZATION
            || k == header::TE
            || k == header::TRAILER
            || k == header::TRANSFER_ENCODING
            || k == header::UPGRADE
            || k.as_str() == "keep-alive"
    };
    if !headers.keys().any(hop) {
        return;
    }
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

/// The last address in X-Forwarded-For: the one the nearest proxy saw.
pub(crate) fn last_forwarded(headers: &HeaderMap) -> Option<IpAddr> {
    headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .last()
        .and_then(|ip| ip.trim().parse().ok())
}

/// Appends `peer` to X-Forwarded-For, joining any earlier values into one.
pub(crate) fn append_forwarded_for(headers: &mut HeaderMap, peer: &HeaderValue) {
    if !headers.contains_key(X_FORWARDED_FOR) {
        headers.insert(X_FORWARDED_FOR, peer.clone());
        return;
    }
    let mut value: Vec<u8> = Vec::new();
    for v in headers.get_all(X_FORWARDED_FOR) {
        value.extend_from_slice(v.as_bytes());
        value.extend_from_slice(b", ");
    }
    value.extend_from_slice(peer.as_bytes());
    if let Ok(value) = HeaderValue::from_bytes(&value) {
        headers.insert(X_FORWARDED_FOR, value);
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
        append_forwarded_for(&mut h, &HeaderValue::from_static("10.0.0.7"));
        append_forwarded_for(&mut h, &HeaderValue::from_static("127.0.0.1"));
        assert_eq!(h["x-forwarded-for"], "10.0.0.7, 127.0.0.1");
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.9"));
        append_forwarded_for(&mut h, &HeaderValue::from_static("::1"));
        assert_eq!(h["x-forwarded-for"], "10.0.0.7, 127.0.0.1, 10.0.0.9, ::1");
        assert_eq!(last_forwarded(&h), Some("::1".parse().unwrap()));
    }
}
