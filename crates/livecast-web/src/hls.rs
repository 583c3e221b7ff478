//! Playlists and segments from the volume.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::server::App;

/// Content type and cache policy of a file the front-end serves, by extension.
pub(crate) struct Kind {
    pub content_type: &'static str,
    pub cache_control: &'static str,
}

/// Live playlists change every segment: let caches keep them for at most a second.
const PLAYLIST_CACHE: &str = "public, max-age=1";
/// Segment names are unique per publishing session and written once: cache them for long.
const SEGMENT_CACHE: &str = "public, max-age=86400, immutable";

pub(crate) fn kind_of(file: &str) -> Option<Kind> {
    let ext = file.rsplit_once('.')?.1;
    let (content_type, cache_control) = match ext {
        "m3u8" => ("application/vnd.apple.mpegurl", PLAYLIST_CACHE),
        "ts" => ("video/mp2t", SEGMENT_CACHE),
        "m4s" => ("video/iso.segment", SEGMENT_CACHE),
        "mp4" => ("video/mp4", SEGMENT_CACHE),
        "aac" => ("audio/aac", SEGMENT_CACHE),
        _ => return None,
    };
    Some(Kind {
        content_type,
        cache_control,
    })
}

/// A path component the front-end is willing to open: a safe alphabet, no leading dot (which
/// excludes `.`, `..` and the ingest's hidden temp files), no separators.
pub(crate) fn safe_component(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

pub(crate) async fn serve(
    State(app): State<Arc<App>>,
    Path((stream, file)): Path<(String, String)>,
) -> Response {
    if !safe_component(&stream) || !safe_component(&file) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let Some(kind) = kind_of(&file) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let path = app.hls_dir.join(&stream).join(&file);
    match tokio::fs::read(&path).await {
        Ok(body) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(kind.content_type),
                ),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static(kind.cache_control),
                ),
                (
                    header::ACCESS_CONTROL_ALLOW_ORIGIN,
                    HeaderValue::from_static("*"),
                ),
            ],
            body,
        )
            .into_response(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            StatusCode::NOT_FOUND.into_response()
        }
        Err(error) => {
            tracing::warn!(%error, path = %path.display(), "cannot read hls file");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_and_kinds() {
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
        assert_eq!(
            kind_of("index.m3u8").map(|k| k.content_type),
            Some("application/vnd.apple.mpegurl")
        );
        assert_eq!(kind_of("a.ts").map(|k| k.content_type), Some("video/mp2t"));
        assert_eq!(
            kind_of("a.m4s").map(|k| k.content_type),
            Some("video/iso.segment")
        );
        assert!(kind_of("passwd").is_none());
        assert!(kind_of("x.html").is_none());
    }
}
