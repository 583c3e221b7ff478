//! `/api/streams`: the streams that are live on the volume, with what an operator wants to see
//! (bitrate, age of the newest segment, and from the ingest's `.publish` file: uptime,
//! codecs, picture size, frame rate, keyframe interval and whether it suits the segments). The scan is cached for a second, so a page refresh
//! from every viewer does not turn into a directory walk each.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::IntoResponse;
use bytes::Bytes;
use livecast_media::playlist::MediaPlaylist;
use livecast_media::publish::{PublishInfo, PUBLISH_INFO_NAME};
use serde::Serialize;

use crate::app::App;

const CACHE_FOR: Duration = Duration::from_secs(1);

/// One live stream (or one of its renditions) as the API lists it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StreamInfo {
    /// The stream's name, or the rendition's (`720p`; `source` for the stream's own publish
    /// under a server-side ladder).
    pub name: String,
    /// What a player loads: the master playlist when the stream has renditions.
    pub playlist: String,
    /// Seconds since the playlist last changed (a new segment or part).
    pub last_update_age_secs: f64,
    /// Average bitrate of the listed segments, in bits per second.
    pub bitrate_bps: u64,
    /// Segments listed in the playlist.
    pub segments: usize,
    /// Whether the playlist offers Low-Latency HLS.
    pub low_latency: bool,
    /// Seconds since the publish began.
    pub uptime_secs: Option<u64>,
    pub video: Option<Video>,
    /// Audio codec (`aac`).
    pub audio: Option<String>,
    /// Set when the encoder's keyframe interval stretches the segments (what to change).
    pub keyframe_warning: Option<String>,
    /// The publisher's address: only in the operator list on the admin port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publisher: Option<String>,
    /// RFC 6381 codec strings, as the master playlist names them.
    pub codecs: Option<String>,
    /// Peak bits per second of recent segments (a rendition's BANDWIDTH in the master).
    pub bandwidth_bps: Option<u64>,
    /// The stream's renditions, highest first (empty without a master playlist).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub renditions: Vec<StreamInfo>,
}

/// The video track as the ingest measured it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Video {
    /// `h264`, `hevc` or `av1`.
    pub codec: String,
    pub width: u32,
    pub height: u32,
    pub frame_rate: Option<f64>,
    pub keyframe_interval_secs: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Body<'a> {
    streams: &'a [StreamInfo],
}

/// `/api/streams` on the admin port: the same list with each publisher's address, for the
/// balancer's operator page. Not cached: operators ask every few seconds, not thousands.
pub(crate) fn operator_router(dir: std::path::PathBuf) -> axum::Router {
    axum::Router::new().route(
        "/api/streams",
        axum::routing::get(move || {
            let dir = dir.clone();
            async move {
                let streams =
                    tokio::task::spawn_blocking(move || scan(&dir, SystemTime::now(), true))
                        .await
                        .unwrap_or_default();
                axum::Json(serde_json::json!({ "streams": streams }))
            }
        }),
    )
}

/// The cached JSON answer.
#[derive(Debug, Default)]
pub(crate) struct StreamList {
    cached: Mutex<Option<(Instant, Bytes)>>,
}

pub(crate) async fn list(State(app): State<Arc<App>>) -> axum::response::Response {
    let fresh = app.stream_list.cached.lock().ok().and_then(|c| {
        c.as_ref()
            .filter(|(at, _)| at.elapsed() < CACHE_FOR)
            .map(|(_, b)| b.clone())
    });
    let body = match fresh {
        Some(body) => body,
        None => {
            let dir = app.volume.root().to_path_buf();
            let streams = tokio::task::spawn_blocking(move || scan(&dir, SystemTime::now(), false))
                .await
                .unwrap_or_default();
            let body =
                Bytes::from(serde_json::to_vec(&Body { streams: &streams }).unwrap_or_default());
            if let Ok(mut c) = app.stream_list.cached.lock() {
                *c = Some((Instant::now(), body.clone()));
            }
            body
        }
    };
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    crate::http::cors(h);
    response
}

/// A stream is live when its playlist has no ENDLIST and changed within three target durations
/// (plus slack): a playlist left behind by a crashed ingest does not stay "live" forever.
/// Renditions (`<stream>@<rendition>/` on the volume) are listed under their stream, whose
/// `playlist` is then the master playlist; a stream published only as renditions is listed
/// with the facts of its highest one.
pub(crate) fn scan(dir: &Path, now: SystemTime, operator: bool) -> Vec<StreamInfo> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut streams: BTreeMap<String, StreamInfo> = BTreeMap::new();
    let mut renditions: BTreeMap<String, Vec<StreamInfo>> = BTreeMap::new();
    for entry in entries.filter_map(Result::ok) {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let Some((stream, rendition)) = livecast_media::publish::split_rendition(&name) else {
            continue;
        };
        let playlist = match rendition {
            Some(rendition) => format!("/hls/{stream}/{rendition}/index.m3u8"),
            None => format!("/hls/{stream}/index.m3u8"),
        };
        let Some(info) = live_playlist(&entry.path(), now, operator, playlist) else {
            continue;
        };
        match rendition {
            Some(rendition) => renditions
                .entry(stream.to_string())
                .or_default()
                .push(StreamInfo {
                    name: rendition.to_string(),
                    ..info
                }),
            None => {
                streams.insert(name.clone(), StreamInfo { name, ..info });
            }
        }
    }
    for (stream, mut list) in renditions {
        list.sort_by_key(|r| std::cmp::Reverse(r.bandwidth_bps));
        let master = format!("/hls/{stream}/master.m3u8");
        if !dir.join(&stream).join(crate::hls::MASTER).exists() {
            continue;
        }
        let entry = match streams.remove(&stream) {
            Some(mut source) => {
                // The stream's own publish is the source rendition of a server-side ladder.
                let mut own = StreamInfo {
                    name: "source".into(),
                    renditions: Vec::new(),
                    ..source.clone()
                };
                own.publisher = None;
                list.insert(0, own);
                source.renditions = list;
                source
            }
            None => {
                let Some(top) = list.first() else {
                    continue;
                };
                let mut top = top.clone();
                top.name = stream.clone();
                top.renditions = list;
                top
            }
        };
        streams.insert(
            stream,
            StreamInfo {
                playlist: master,
                ..entry
            },
        );
    }
    streams.into_values().collect()
}

/// The facts of one live media playlist in `stream_dir`, or `None` when it is not live.
fn live_playlist(
    stream_dir: &Path,
    now: SystemTime,
    operator: bool,
    url: String,
) -> Option<StreamInfo> {
    let path = stream_dir.join(crate::volume::PLAYLIST);
    let modified = std::fs::metadata(&path).ok()?.modified().ok()?;
    let playlist = MediaPlaylist::parse(&std::fs::read_to_string(&path).ok()?).ok()?;
    let age = now.duration_since(modified).unwrap_or_default();
    if playlist.ended || age > Duration::from_secs(3 * playlist.target_duration + 5) {
        return None;
    }
    let bytes: u64 = playlist
        .segments
        .iter()
        .filter_map(|s| std::fs::metadata(stream_dir.join(&s.uri)).ok())
        .map(|m| m.len())
        .sum();
    let seconds = playlist.duration();
    let publish = std::fs::read_to_string(stream_dir.join(PUBLISH_INFO_NAME))
        .ok()
        .map(|text| PublishInfo::parse(&text));
    let started = publish
        .as_ref()
        .map(|p| SystemTime::UNIX_EPOCH + Duration::from_millis(p.started_unix_ms));
    Some(StreamInfo {
        uptime_secs: started
            .and_then(|at| now.duration_since(at).ok())
            .map(|d| d.as_secs()),
        video: publish.as_ref().and_then(|p| {
            Some(Video {
                codec: p.video_codec.clone()?,
                width: p.width,
                height: p.height,
                frame_rate: p.frame_rate,
                keyframe_interval_secs: p.keyframe_interval_ms.map(|ms| ms as f64 / 1000.0),
            })
        }),
        audio: publish.as_ref().and_then(|p| p.audio_codec.clone()),
        codecs: publish.as_ref().and_then(|p| p.codecs.clone()),
        bandwidth_bps: publish.as_ref().and_then(|p| p.bandwidth),
        keyframe_warning: publish.as_ref().and_then(PublishInfo::keyframe_warning),
        publisher: publish
            .as_ref()
            .and_then(|p| p.publisher.clone())
            .filter(|_| operator),
        playlist: url,
        name: String::new(),
        last_update_age_secs: (age.as_secs_f64() * 1000.0).round() / 1000.0,
        bitrate_bps: if seconds > 0.0 {
            (bytes as f64 * 8.0 / seconds) as u64
        } else {
            0
        },
        segments: playlist.segments.len(),
        low_latency: playlist.part_target.is_some(),
        renditions: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_live_streams_only_with_bitrate() {
        let dir = tempfile::tempdir().unwrap();
        let live = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\na.ts\n";
        for (name, text) in [
            ("b", live),
            ("a", live),
            ("done", "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-ENDLIST\n"),
            (".hidden", live),
        ] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
            std::fs::write(dir.path().join(name).join("index.m3u8"), text).unwrap();
        }
        std::fs::write(dir.path().join("a/a.ts"), vec![0u8; 250_000]).unwrap();
        let started = SystemTime::now() - Duration::from_secs(90);
        let publish = PublishInfo {
            started_unix_ms: started
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64,
            segment_ms: 2000,
            video_codec: Some("h264".into()),
            width: 1280,
            height: 720,
            frame_rate: Some(30.0),
            keyframe_interval_ms: Some(4000),
            audio_codec: Some("aac".into()),
            publisher: Some("10.1.2.3:50123".into()),
            ..PublishInfo::default()
        };
        std::fs::write(
            dir.path().join("a").join(PUBLISH_INFO_NAME),
            publish.render(),
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("empty")).unwrap();
        let now = SystemTime::now();
        let found = scan(dir.path(), now, false);
        let names: Vec<_> = found.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(found[0].bitrate_bps, 1_000_000);
        assert_eq!(found[0].segments, 1);
        assert_eq!(found[0].uptime_secs, Some(90));
        let video = found[0].video.as_ref().unwrap();
        assert_eq!(
            (video.codec.as_str(), video.width, video.height),
            ("h264", 1280, 720)
        );
        assert_eq!(video.keyframe_interval_secs, Some(4.0));
        assert_eq!(found[0].audio.as_deref(), Some("aac"));
        assert!(found[0]
            .keyframe_warning
            .as_ref()
            .is_some_and(|w| w.contains("4.0 s")));
        assert!(found[1].video.is_none() && found[1].uptime_secs.is_none());
        // Viewers never see who publishes; the operator list on the admin port does.
        assert!(found[0].publisher.is_none());
        assert!(!serde_json::to_string(&found[0])
            .unwrap()
            .contains("publisher"));
        let operator = scan(dir.path(), now, true);
        assert_eq!(operator[0].publisher.as_deref(), Some("10.1.2.3:50123"));
        // Twelve seconds after the last write, a 2 s playlist is stale.
        assert!(scan(dir.path(), now + Duration::from_secs(12), false).is_empty());
    }

    #[test]
    fn renditions_are_listed_under_their_stream_with_the_master() {
        let dir = tempfile::tempdir().unwrap();
        let live = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\na.ts\n";
        for name in [
            "talk",
            "talk@480p",
            "talk@240p",
            "conf@720p",
            "conf@360p",
            "orphan@360p",
        ] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
            std::fs::write(dir.path().join(name).join("index.m3u8"), live).unwrap();
        }
        for (name, bandwidth) in [
            ("talk@480p", 1_300_000),
            ("talk@240p", 450_000),
            ("conf@720p", 2_800_000),
            ("conf@360p", 900_000),
        ] {
            let info = PublishInfo {
                bandwidth: Some(bandwidth),
                codecs: Some("avc1.4d401e,mp4a.40.2".into()),
                ..PublishInfo::default()
            };
            std::fs::write(dir.path().join(name).join(PUBLISH_INFO_NAME), info.render()).unwrap();
        }
        std::fs::write(dir.path().join("talk/master.m3u8"), "#EXTM3U\n").unwrap();
        std::fs::create_dir(dir.path().join("conf")).unwrap();
        std::fs::write(dir.path().join("conf/master.m3u8"), "#EXTM3U\n").unwrap();
        let found = scan(dir.path(), SystemTime::now(), false);
        let names: Vec<_> = found.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["conf", "talk"],
            "no master, no listing: orphan@360p is left out"
        );
        let conf = &found[0];
        assert_eq!(conf.playlist, "/hls/conf/master.m3u8");
        let listed: Vec<_> = conf
            .renditions
            .iter()
            .map(|r| (r.name.as_str(), r.playlist.as_str(), r.bandwidth_bps))
            .collect();
        assert_eq!(
            listed,
            [
                ("720p", "/hls/conf/720p/index.m3u8", Some(2_800_000)),
                ("360p", "/hls/conf/360p/index.m3u8", Some(900_000))
            ]
        );
        assert_eq!(conf.bandwidth_bps, Some(2_800_000));
        let talk = &found[1];
        assert_eq!(talk.playlist, "/hls/talk/master.m3u8");
        let names: Vec<_> = talk.renditions.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["source", "480p", "240p"]);
        assert_eq!(talk.renditions[0].playlist, "/hls/talk/index.m3u8");
    }
}
