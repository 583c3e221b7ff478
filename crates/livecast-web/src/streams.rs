//! `/api/streams`: the streams that are live on the volume.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;

use crate::hls::safe_component;
use crate::server::App;

/// One live stream as the API lists it.
#[derive(Debug, Serialize)]
pub(crate) struct StreamInfo {
    pub name: String,
    pub playlist: String,
    /// Seconds since the playlist last changed.
    pub playlist_age_secs: f64,
}

#[derive(Debug, Serialize)]
pub(crate) struct StreamList {
    pub streams: Vec<StreamInfo>,
}

pub(crate) async fn list(State(app): State<Arc<App>>) -> impl IntoResponse {
    let dir = app.hls_dir.clone();
    let streams = tokio::task::spawn_blocking(move || scan(&dir, SystemTime::now()))
        .await
        .unwrap_or_default();
    (
        [
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            ),
        ],
        Json(StreamList { streams }),
    )
}

/// A stream is live when its playlist has no ENDLIST and changed within three target durations
/// (plus slack): a playlist left behind by a crashed ingest does not stay "live" forever.
pub(crate) fn scan(dir: &Path, now: SystemTime) -> Vec<StreamInfo> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut streams: Vec<StreamInfo> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            if !safe_component(&name) {
                return None;
            }
            let path = entry.path().join("index.m3u8");
            let modified = std::fs::metadata(&path).ok()?.modified().ok()?;
            let text = std::fs::read_to_string(&path).ok()?;
            if livecast_media::playlist::has_ended(&text) {
                return None;
            }
            let age = now.duration_since(modified).unwrap_or_default();
            let target = target_duration(&text).unwrap_or(10);
            if age > Duration::from_secs(3 * target + 5) {
                return None;
            }
            Some(StreamInfo {
                playlist: format!("/hls/{name}/index.m3u8"),
                name,
                playlist_age_secs: (age.as_secs_f64() * 1000.0).round() / 1000.0,
            })
        })
        .collect();
    streams.sort_by(|a, b| a.name.cmp(&b.name));
    streams
}

fn target_duration(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("#EXT-X-TARGETDURATION:"))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_live_streams_only() {
        let dir = tempfile::tempdir().unwrap();
        let live = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\na.ts\n";
        for (name, text) in [
            ("b", live),
            ("a", live),
            ("done", "#EXTM3U\n#EXT-X-ENDLIST\n"),
            (".hidden", live),
        ] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
            std::fs::write(dir.path().join(name).join("index.m3u8"), text).unwrap();
        }
        std::fs::create_dir(dir.path().join("empty")).unwrap();
        let now = SystemTime::now();
        let names: Vec<_> = scan(dir.path(), now).into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["a", "b"]);
        // Eleven seconds after the last write, a 2 s playlist is stale.
        assert!(scan(dir.path(), now + Duration::from_secs(12)).is_empty());
    }
}
