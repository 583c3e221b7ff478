//! HTTP helpers that know nothing of HLS: safe path components, byte ranges, validators and
//! conditional requests, gzip negotiation, CORS.

use std::time::SystemTime;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;

/// A path component the front-end is willing to open: a safe alphabet, no leading dot (which
/// excludes `.`, `..` and the ingest's hidden temp files), no separators.
pub(crate) fn safe_component(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// A request's single `bytes=first-[last]` range; suffix and multiple ranges give `None`.
pub(crate) fn requested_range(headers: &HeaderMap) -> Option<(u64, Option<u64>)> {
    let spec = headers
        .get(header::RANGE)?
        .to_str()
        .ok()?
        .strip_prefix("bytes=")?
        .trim();
    let (first, last) = spec.split_once('-')?;
    let first = first.parse().ok()?;
    if last.is_empty() {
        return Some((first, None));
    }
    let last = last.parse().ok()?;
    (first <= last).then_some((first, Some(last)))
}

/// 416 for a range outside a body of `len` bytes (`*` while the length is not known yet).
pub(crate) fn unsatisfiable(len: &str) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
        r.headers_mut().insert(header::CONTENT_RANGE, v);
    }
    r
}

/// 304 when the client's validators match (If-None-Match wins over If-Modified-Since).
pub(crate) fn conditional(
    headers: &HeaderMap,
    etag: &str,
    modified: SystemTime,
) -> Option<Response> {
    let not_modified = if let Some(inm) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        inm.split(',')
            .map(str::trim)
            .any(|t| t == "*" || t.trim_start_matches("W/") == etag)
    } else if let Some(ims) = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
    {
        // HTTP dates have whole seconds.
        let secs = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        };
        secs(modified) <= secs(ims)
    } else {
        false
    };
    not_modified.then(|| {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    })
}

/// A single `bytes=` range as 206, an unsatisfiable one as 416, anything else the whole body.
pub(crate) fn ranged(body: &Bytes, headers: &HeaderMap) -> Response {
    let len = body.len() as u64;
    let Some(spec) = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
    else {
        return Response::new(Body::from(body.clone()));
    };
    if spec.contains(',') {
        // Multipart ranges are rare for media; RFC 9110 lets a server answer with the whole body.
        return Response::new(Body::from(body.clone()));
    }
    let last = len.saturating_sub(1);
    let range = match spec.trim().strip_prefix('-') {
        Some(suffix) => suffix
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .map(|n| (len.saturating_sub(n), last)),
        None => requested_range(headers).map(|(s, e)| (s, e.map_or(last, |e| e.min(last)))),
    };
    match range {
        Some((start, end)) if start < len && start <= end => {
            let mut r = Response::new(Body::from(body.slice(start as usize..=end as usize)));
            *r.status_mut() = StatusCode::PARTIAL_CONTENT;
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            r
        }
        _ => unsatisfiable(&len.to_string()),
    }
}

/// Whether the client takes gzip (`gzip` or `*` without `q=0`).
pub(crate) fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or_default().trim();
            let refused = parts.any(|p| matches!(p.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

/// The ETag and Last-Modified a later conditional request is checked against.
pub(crate) fn validators(h: &mut HeaderMap, etag: &str, modified: SystemTime) {
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(modified)) {
        h.insert(header::LAST_MODIFIED, v);
    }
}

/// CORS for players on other origins (players embedded in intranet pages).
pub(crate) fn cors(h: &mut HeaderMap) {
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Content-Length, Content-Range, ETag, Age, Date"),
    );
}

/// Answers a CORS preflight.
pub(crate) fn preflight() -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    cors(h);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Range, If-None-Match, If-Modified-Since, Accept-Encoding"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components() {
        for bad in [
            "",
            ".",
            "..",
            ".index.m3u8.tmp",
            "a/b",
            "a\\b",
            "%2e%2e",
            "a\0",
        ] {
            assert!(!safe_component(bad), "{bad:?}");
        }
        assert!(safe_component("mwtxd2bc-12.ts"));
    }

    #[test]
    fn ranges() {
        let body = Bytes::from_static(b"0123456789");
        let with = |r: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::RANGE, HeaderValue::from_str(r).unwrap());
            ranged(&body, &h)
        };
        let r = with("bytes=2-4");
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(r.headers()[header::CONTENT_RANGE], "bytes 2-4/10");
        assert_eq!(
            with("bytes=-3").headers()[header::CONTENT_RANGE],
            "bytes 7-9/10"
        );
        assert_eq!(
            with("bytes=8-").headers()[header::CONTENT_RANGE],
            "bytes 8-9/10"
        );
        assert_eq!(
            with("bytes=5-100").headers()[header::CONTENT_RANGE],
            "bytes 5-9/10"
        );
        assert_eq!(
            with("bytes=10-").status(),
            StatusCode::RANGE_NOT_SATISFIABLE
        );
        assert_eq!(
            with("bytes=4-2").status(),
            StatusCode::RANGE_NOT_SATISFIABLE
        );
        assert_eq!(with("bytes=0-1,3-4").status(), StatusCode::OK);
    }

    #[test]
    fn gzip_negotiation() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
            accepts_gzip(&h)
        };
        assert!(with("gzip, deflate, br"));
        assert!(with("br;q=1.0, gzip;q=0.8"));
        assert!(!with("gzip;q=0"));
        assert!(!with("br"));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }
}
