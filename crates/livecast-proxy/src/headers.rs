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
/// The viewer's name for the front-ends; only the balancer sets it.
pub(crate) const X_LIVECAST_VIEWER: HeaderName =
    HeaderName::from_static(crate::playback::VIEWER_HEADER);

/// Removes hop-by-hop headers, including any the `Connection` header names. Most messages
/// carry none, so one pass over the (few) names decides whether there is anything to do.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    for name in connection_named(headers) {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The names a message's `Connection` header lists: hop-by-hop too.
fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect()
}

/// Whether `name` is one of [`HOP_BY_HOP`]. Standard names compare as enum values; only a
/// custom name needs its text looked at.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::PROXY_AUTHENTICATE
        || name == header::PROXY_AUTHORIZATION
        || name == header::TE
        || name == header::TRAILER
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name.as_str() == "keep-alive"
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

/// The lines the balancer writes into a request it forwards, and which of the viewer's lines
/// it leaves out, worked out once so that the forwarded head is written in one pass over the
/// viewer's header map (the hyper side), which itself stays as it arrived.
pub(crate) struct ForFrontEnd {
    /// The balancer's own lines: viewer, X-Forwarded-For, -Proto, X-Request-Id, Host.
    own: [Option<(HeaderName, HeaderValue)>; 5],
    /// Names the viewer's `Connection` header lists (almost always none).
    named: Vec<HeaderName>,
    /// Whether `Content-Length` is left out (a GET's or HEAD's body is not sent on).
    drop_length: bool,
}

/// What a viewer's request is forwarded with.
pub(crate) struct Forwarding<'a> {
    /// The viewer's name for the front-ends, if the playback guard gave one.
    pub viewer: Option<HeaderValue>,
    /// Whether the peer is a trusted proxy, whose X-Forwarded-For and X-Request-Id are kept.
    pub trusted: bool,
    /// The peer's address, as X-Forwarded-For carries it.
    pub peer: &'a HeaderValue,
    pub tls: bool,
    /// The request's id: a trusted peer's, or a new one.
    pub request_id: HeaderValue,
    /// The request's authority (HTTP/2), the front-ends' `Host` where the viewer sent none.
    pub authority: Option<&'a str>,
    pub drop_length: bool,
}

impl ForFrontEnd {
    pub(crate) fn new(headers: &HeaderMap, f: Forwarding<'_>) -> Self {
        let named = connection_named(headers);
        let forwarded_for = if f.trusted && headers.contains_key(X_FORWARDED_FOR) {
            // Earlier values and this peer joined into one line.
            let mut value: Vec<u8> = Vec::new();
            for v in headers.get_all(X_FORWARDED_FOR) {
                value.extend_from_slice(v.as_bytes());
                value.extend_from_slice(b", ");
            }
            value.extend_from_slice(f.peer.as_bytes());
            HeaderValue::from_bytes(&value).unwrap_or_else(|_| f.peer.clone())
        } else {
            f.peer.clone()
        };
        let host = if headers.contains_key(header::HOST) {
            None
        } else {
            // HTTP/2 carries the host as :authority; HTTP/1.1 backends want a Host header.
            f.authority
                .and_then(|a| HeaderValue::from_str(a).ok())
                .map(|v| (header::HOST, v))
        };
        let proto = HeaderValue::from_static(if f.tls { "https" } else { "http" });
        ForFrontEnd {
            own: [
                f.viewer.map(|v| (X_LIVECAST_VIEWER, v)),
                Some((X_FORWARDED_FOR, forwarded_for)),
                Some((X_FORWARDED_PROTO, proto)),
                Some((X_REQUEST_ID, f.request_id)),
                host,
            ],
            named,
            drop_length: f.drop_length,
        }
    }

    /// Whether a line of the viewer's goes on to the front-end.
    fn keeps(&self, name: &HeaderName) -> bool {
        !(is_hop_by_hop(name)
            || (self.drop_length && name == header::CONTENT_LENGTH)
            // Only the balancer names the viewer, and it writes these lines itself.
            || name == X_LIVECAST_VIEWER
            || name == X_FORWARDED_FOR
            || name == X_FORWARDED_PROTO
            || name == X_REQUEST_ID
            || self.named.contains(name))
    }

    /// The lines the front-end gets: the viewer's that are kept, then the balancer's own.
    pub(crate) fn fields<'a>(
        &'a self,
        headers: &'a HeaderMap,
    ) -> impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)> {
        headers
            .iter()
            .filter(|(name, _)| self.keeps(name))
            .chain(self.own.iter().flatten().map(|(name, value)| (name, value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_lines_are_stripped() {
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
        h.append(
            "x-forwarded-for",
            HeaderValue::from_static("10.0.0.7, 127.0.0.1"),
        );
        h.append("x-forwarded-for", HeaderValue::from_static("::1"));
        assert_eq!(last_forwarded(&h), Some("::1".parse().unwrap()));
    }

    fn forwarded(headers: &HeaderMap, trusted: bool, get: bool) -> Vec<(String, String)> {
        let peer = HeaderValue::from_static("10.0.0.9");
        let plan = ForFrontEnd::new(
            headers,
            Forwarding {
                viewer: Some(HeaderValue::from_static("v1")),
                trusted,
                peer: &peer,
                tls: true,
                request_id: HeaderValue::from_static("id1"),
                authority: Some("live.example:8443"),
                drop_length: get,
            },
        );
        plan.fields(headers)
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
            .collect()
    }

    fn pairs(lines: &[(&str, &str)]) -> Vec<(String, String)> {
        lines
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    /// The head a front-end gets: the viewer's lines minus hop-by-hop ones (and those its
    /// `Connection` names) and minus the lines only the balancer writes, then the balancer's.
    #[test]
    fn what_a_front_end_gets() {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        h.insert(header::CONNECTION, HeaderValue::from_static("x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        h.insert("x-livecast-viewer", HeaderValue::from_static("forged"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("gopher"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.7"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.8"));
        h.insert("x-request-id", HeaderValue::from_static("theirs"));
        let ours = [
            ("x-livecast-viewer", "v1"),
            ("x-forwarded-proto", "https"),
            ("x-request-id", "id1"),
            ("host", "live.example:8443"),
        ];
        // An untrusted viewer's forwarding lines are replaced; a GET's length is dropped.
        let mut expected = pairs(&[("accept", "*/*")]);
        expected.extend(pairs(&ours[..1]));
        expected.extend(pairs(&[("x-forwarded-for", "10.0.0.9")]));
        expected.extend(pairs(&ours[1..]));
        assert_eq!(forwarded(&h, false, true), expected);
        // A trusted proxy's X-Forwarded-For is joined with the peer; another method keeps
        // its length.
        let mut expected = pairs(&[("accept", "*/*"), ("content-length", "3")]);
        expected.extend(pairs(&ours[..1]));
        expected.extend(pairs(&[(
            "x-forwarded-for",
            "10.0.0.7, 10.0.0.8, 10.0.0.9",
        )]));
        expected.extend(pairs(&ours[1..]));
        assert_eq!(forwarded(&h, true, false), expected);
        // A viewer's own Host stays.
        h.insert(header::HOST, HeaderValue::from_static("mine"));
        let lines = forwarded(&h, false, true);
        assert_eq!(lines.iter().filter(|(n, _)| n == "host").count(), 1);
        assert!(lines.contains(&("host".to_string(), "mine".to_string())));
    }
}
