//! The player page and the hls.js build embedded at compile time (see build.rs).

use axum::http::{header, HeaderValue};
use axum::response::{Html, IntoResponse};

const PAGE: &str = include_str!("player.html");
const HLS_JS: &[u8] = include_bytes!(env!("LIVECAST_HLSJS_PATH"));

pub(crate) async fn page() -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"))],
        Html(PAGE),
    )
}

pub(crate) async fn hls_js() -> impl IntoResponse {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/javascript; charset=utf-8"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
        ],
        HLS_JS,
    )
}
