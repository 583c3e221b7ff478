//! Playlists and segments from the volume: content types, cache policy, and the server side of Low-Latency HLS (blocking playlist reload, delta updates, the
//! segment being built served as far as its byte-range parts are listed, preload-hinted parts).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use livecast_media::playlist::MediaPlaylist;

use crate::app::App;
use crate::http::{
    accepts_gzip, conditional, cors, ranged, requested_range, safe_component, unsatisfiable,
    validators,
};
use crate::volume::{entry_for, CachedFile, PlaylistEntry, PLAYLIST};

/// Content type and cache policy of a file the front-end serves, by extension.
pub(crate) struct Kind {
    pub content_type: &'static str,
    pub cache_control: &'static str,
}

/// Live playlists change every segment (or part): let caches keep them for at most a second.
const LIVE_PLAYLIST_CACHE: &str = "public, max-age=1";
/// A finished playlist no longer changes.
const ENDED_PLAYLIST_CACHE: &str = "public, max-age=60";
/// A blocking reload answers one client's delivery directive; nobody else should reuse it.
const BLOCKING_CACHE: &str = "no-store";
/// Segment and part names are unique per publishing session and written once.
const SEGMENT_CACHE: &str = "public, max-age=86400, immutable";
/// Upper bound on any wait, whatever the playlist's target duration says.
const MAX_WAIT: Duration = Duration::from_secs(30);

pub(crate) fn kind_of(file: &str) -> Option<Kind> {
    let ext = file.rsplit_once('.')?.1;
    let (content_type, cache_control) = match ext {
        "m3u8" => ("application/vnd.apple.mpegurl", LIVE_PLAYLIST_CACHE),
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

/// The master playlist's name in a stream's directory (written by the ingest when the stream
/// has renditions).
pub(crate) const MASTER: &str = "master.m3u8";

pub(crate) async fn serve(
    State(app): State<Arc<App>>,
    Path((stream, file)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if !safe_component(&stream) {
        return StatusCode::NOT_FOUND.into_response();
    }
    if file == MASTER {
        return master(&app, &stream, &headers).await;
    }
    serve_file(&app, &stream, &file, &query, &headers).await
}

/// `/hls/<stream>/<rendition>/<file>`: a rendition's files, from `<hls-dir>/<stream>@<rendition>/`
/// (the name it was published under).
pub(crate) async fn serve_rendition(
    State(app): State<Arc<App>>,
    Path((stream, rendition, file)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if !safe_component(&stream)
        || stream.contains(livecast_media::publish::RENDITION_SEPARATOR)
        || !livecast_media::publish::valid_rendition_name(&rendition)
    {
        return StatusCode::NOT_FOUND.into_response();
    }
    let dir = format!(
        "{stream}{}{rendition}",
        livecast_media::publish::RENDITION_SEPARATOR
    );
    serve_file(&app, &dir, &file, &query, &headers).await
}

/// A file of the stream directory `stream` (already checked to be a safe name).
async fn serve_file(
    app: &App,
    stream: &str,
    file: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Response {
    if !safe_component(file) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let Some(kind) = kind_of(file) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if file == PLAYLIST {
        return playlist(app, stream, query, headers).await;
    }
    if let Some(response) = growing_segment(app, stream, file, &kind, headers).await {
        return response;
    }
    match app.volume.file(stream, file).await {
        Ok(Some(found)) => file_response(&found, &kind, headers),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(error) => {
            tracing::warn!(%error, %stream, %file, "cannot read hls file");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Delivery directives of a playlist request (draft-pantos-hls-rfc8216bis §6.2.5).
#[derive(Debug, Default, PartialEq)]
struct Directives {
    msn: Option<u64>,
    part: Option<u64>,
    skip: bool,
}

impl Directives {
    fn parse(query: &HashMap<String, String>) -> Result<Self, &'static str> {
        let number = |key: &str| -> Result<Option<u64>, &'static str> {
            query
                .get(key)
                .map(|v| v.parse().map_err(|_| "delivery directive is not a number"))
                .transpose()
        };
        let d = Self {
            msn: number("_HLS_msn")?,
            part: number("_HLS_part")?,
            skip: match query.get("_HLS_skip").map(String::as_str) {
                None => false,
                Some("YES") | Some("v2") => true,
                Some(_) => return Err("_HLS_skip must be YES or v2"),
            },
        };
        if d.part.is_some() && d.msn.is_none() {
            return Err("_HLS_part without _HLS_msn");
        }
        Ok(d)
    }
}

/// What a blocking request asks of the current playlist.
#[derive(Debug, PartialEq)]
enum Wait {
    Ready,
    Pending,
    TooFarAhead,
}

fn evaluate(model: &MediaPlaylist, msn: u64, part: Option<u64>) -> Wait {
    if model.ended {
        return Wait::Ready;
    }
    let next = model.next_sequence();
    let last_complete = next.checked_sub(1);
    // §6.2.5.2: more than two segments ahead of the last one is a client error.
    if msn > last_complete.map_or(2, |l| l + 2) {
        return Wait::TooFarAhead;
    }
    if let (Some(part), Some(target)) = (part, model.part_target) {
        let limit = if target < 1.0 {
            (3.0 / target).ceil() as u64
        } else {
            3
        };
        let per_segment = (model.target_duration as f64 / target).ceil().max(1.0) as u64;
        let have = next * per_segment + model.pending_parts.len() as u64;
        let want = msn * per_segment + part + 1;
        if msn >= next && want > have + limit {
            return Wait::TooFarAhead;
        }
    }
    if msn < next {
        // §6.2.5.2: a part index past the last part of a complete segment asks for part 0 of
        // the segment after it.
        let listed = msn
            .checked_sub(model.media_sequence)
            .and_then(|i| model.segments.get(i as usize))
            .map_or(0, |s| s.parts.len());
        return match part {
            Some(p) if listed > 0 && p as usize >= listed => evaluate(model, msn + 1, Some(0)),
            _ => Wait::Ready,
        };
    }
    match part {
        Some(part) if msn == next && (part as usize) < model.pending_parts.len() => Wait::Ready,
        _ => Wait::Pending,
    }
}

async fn playlist(
    app: &App,
    stream: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Response {
    let directives = match Directives::parse(query) {
        Ok(d) => d,
        Err(reason) => return (StatusCode::BAD_REQUEST, format!("{reason}\n")).into_response(),
    };
    let view = app.volume.stream(stream).await;
    let mut rx = view.playlist.subscribe();
    let Some(mut entry) = rx.borrow_and_update().clone() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let blocking = directives.msn.is_some()
        && entry
            .model
            .as_ref()
            .and_then(|m| m.server_control.as_ref())
            .is_some_and(|c| c.can_block_reload);
    if let (true, Some(msn)) = (blocking, directives.msn) {
        let target = entry.model.as_ref().map_or(1, |m| m.target_duration);
        // §6.2.5.2: hold for at most three target durations.
        let deadline =
            tokio::time::Instant::now() + (Duration::from_secs(3 * target)).min(MAX_WAIT);
        loop {
            // A playlist that ended, or stopped offering blocking reloads (its publisher left
            // and the ingest waits for it), answers at once: the player then reloads it on
            // its own schedule instead of being answered 503 again and again.
            let state = entry
                .model
                .as_ref()
                .filter(|m| {
                    !m.ended
                        && m.server_control
                            .as_ref()
                            .is_some_and(|c| c.can_block_reload)
                })
                .map_or(Wait::Ready, |m| evaluate(m, msn, directives.part));
            match state {
                Wait::Ready => break,
                Wait::TooFarAhead => {
                    app.metrics.blocking.with_label_values(&["too_far"]).inc();
                    return (
                        StatusCode::BAD_REQUEST,
                        "delivery directive too far ahead\n",
                    )
                        .into_response();
                }
                Wait::Pending => {}
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => {
                    app.metrics.blocking.with_label_values(&["timeout"]).inc();
                    return (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "playlist did not advance in time\n",
                    )
                        .into_response();
                }
            }
            match rx.borrow_and_update().clone() {
                Some(next) => entry = next,
                None => return StatusCode::NOT_FOUND.into_response(),
            }
        }
        app.metrics.blocking.with_label_values(&["served"]).inc();
    }
    let delta;
    let served: &PlaylistEntry = match (&entry.model, directives.skip) {
        (Some(model), true)
            if model
                .server_control
                .as_ref()
                .is_some_and(|c| c.can_skip_until.is_some()) =>
        {
            let skipped = model.delta();
            delta = entry_for(Bytes::from(skipped.render()), Some(skipped), entry.modified);
            &delta
        }
        _ => &entry,
    };
    let ended = served.model.as_ref().is_some_and(|m| m.ended);
    let cache = if blocking {
        BLOCKING_CACHE
    } else if ended {
        ENDED_PLAYLIST_CACHE
    } else {
        LIVE_PLAYLIST_CACHE
    };
    playlist_response(served, headers, cache)
}

/// The master playlist: served like a playlist (validators, gzip, the live cache rule);
/// delivery directives do not apply to it and are ignored.
async fn master(app: &App, stream: &str, headers: &HeaderMap) -> Response {
    match app.volume.file(stream, MASTER).await {
        Ok(Some(found)) => {
            let entry = entry_for(found.body.clone(), None, found.modified);
            playlist_response(&entry, headers, LIVE_PLAYLIST_CACHE)
        }
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(error) => {
            tracing::warn!(%error, %stream, "cannot read the master playlist");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// A playlist's answer: 304 when the validators match, else the body (gzip when accepted).
fn playlist_response(served: &PlaylistEntry, headers: &HeaderMap, cache: &'static str) -> Response {
    let mut response = conditional(headers, &served.etag, served.modified).unwrap_or_else(|| {
        let gzip = accepts_gzip(headers) && !served.gzip.is_empty();
        let mut r = Response::new(Body::from(if gzip {
            served.gzip.clone()
        } else {
            served.body.clone()
        }));
        if gzip {
            r.headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        r
    });
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.apple.mpegurl"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    validators(h, &served.etag, served.modified);
    cors(h);
    response
}

/// How much of `file` the playlist lists while the file is the segment being built: the end
/// of its last listed part, or 0 when only the preload hint names it. `None` for any other
/// file (complete segments, and files that are not byte-range parts).
fn listed_so_far(model: &MediaPlaylist, file: &str) -> Option<u64> {
    if model.ended {
        return None;
    }
    let parts = model
        .pending_parts
        .iter()
        .filter(|p| p.uri == file)
        .filter_map(|p| p.byterange)
        .map(|r| r.end())
        .max();
    let hinted = model
        .preload_hint
        .as_ref()
        .filter(|h| h.uri == file && h.byterange_start.is_some())
        .map(|_| 0);
    parts.or(hinted)
}

/// Whether `model` names `file` anywhere: a segment, a part, the preload hint, an init map.
fn lists(model: &MediaPlaylist, file: &str) -> bool {
    let segment = |s: &livecast_media::playlist::PlaylistSegment| {
        s.uri == file || s.map.as_deref() == Some(file) || s.parts.iter().any(|p| p.uri == file)
    };
    model.segments.iter().any(segment)
        || model.pending_parts.iter().any(|p| p.uri == file)
        || model.preload_hint.as_ref().is_some_and(|h| h.uri == file)
        || model.map.as_deref() == Some(file)
}

/// Whether a live `model` has given up on `file`: names it nowhere, or lists it as a gap.
fn withdrawn(model: &MediaPlaylist, file: &str) -> bool {
    !model.ended && (!lists(model, file) || model.segments.iter().any(|s| s.uri == file && s.gap))
}

/// Requests of the segment being built, whose parts are byte ranges of it: a range within the
/// listed parts is answered at once; a range that starts where the listed parts end (the
/// preload-hinted part) waits until that part is listed and gets exactly it; a request for
/// the whole file waits until the segment is complete; a waiting request whose segment the
/// playlist takes back (listed as a gap, or no more) gets 404. Nothing past the listed bytes
/// is ever sent. A request for a file the view does not know, or for bytes past the hinted part,
/// first makes the view catch up with the volume once (another front-end may have served a
/// newer playlist). `None` when `file` is not in progress: the caller serves it as a complete
/// file.
async fn growing_segment(
    app: &App,
    stream: &str,
    file: &str,
    kind: &Kind,
    headers: &HeaderMap,
) -> Option<Response> {
    let view = app.volume.stream(stream).await;
    let mut rx = view.playlist.subscribe();
    let mut entry = rx.borrow_and_update().clone()?;
    let range = requested_range(headers);
    let target = entry.model.as_ref().map_or(1, |m| m.target_duration);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3 * target).min(MAX_WAIT);
    let (mut caught_up, mut waited) = (false, false);
    loop {
        let model = entry.model.as_ref()?;
        let listed = listed_so_far(model, file);
        // It was in progress and the playlist took it back (a write of it failed, or the
        // publish ended before it was listed):
        // what was asked for will never exist, and what is on disk is not a whole segment.
        if waited && listed.is_none() && withdrawn(model, file) {
            return Some(StatusCode::NOT_FOUND.into_response());
        }
        // A file this view does not know while the stream is live, or bytes past what it
        // lists: the viewer may have this from a newer playlist another front-end served.
        let ahead = match (listed, range) {
            (None, _) => !model.ended && !lists(model, file),
            (Some(listed), Some((start, _))) => start > listed,
            (Some(_), None) => false,
        };
        if ahead && !caught_up {
            caught_up = true;
            app.volume.catch_up(stream, &view, &entry).await;
            entry = rx.borrow_and_update().clone()?;
            continue;
        }
        let listed = listed?;
        match range {
            Some((start, _)) if start > listed => {
                return Some(unsatisfiable("*"));
            }
            Some((start, end)) if start < listed => {
                let last = end.unwrap_or(u64::MAX).min(listed - 1);
                return Some(match app.volume.prefix(stream, file, listed).await {
                    Ok(Some(found)) => growing_response(&found.body, start, last, kind),
                    Ok(None) => StatusCode::NOT_FOUND.into_response(),
                    Err(error) => {
                        tracing::warn!(%error, %stream, %file, "cannot read hls file");
                        StatusCode::INTERNAL_SERVER_ERROR.into_response()
                    }
                });
            }
            // The hinted part, or the whole segment: wait for the playlist to move on.
            _ => {}
        }
        waited = true;
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => entry = rx.borrow_and_update().clone()?,
            _ => return Some(StatusCode::NOT_FOUND.into_response()),
        }
    }
}

/// Bytes `start..=last` of a segment still being built. Its full length is not known yet
/// (`*`), and its validators would change with every part, so none are sent.
fn growing_response(body: &Bytes, start: u64, last: u64, kind: &Kind) -> Response {
    let Some(last) = (body.len() as u64).checked_sub(1).map(|end| last.min(end)) else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    if start > last {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let mut r = Response::new(Body::from(body.slice(start as usize..=last as usize)));
    *r.status_mut() = StatusCode::PARTIAL_CONTENT;
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{last}/*")) {
        h.insert(header::CONTENT_RANGE, v);
    }
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(kind.content_type),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(BLOCKING_CACHE),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    cors(h);
    r
}

fn file_response(file: &CachedFile, kind: &Kind, headers: &HeaderMap) -> Response {
    let mut response = match conditional(headers, &file.etag, file.modified) {
        Some(not_modified) => not_modified,
        None => ranged(&file.body, headers),
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(kind.content_type),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(kind.cache_control),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    validators(h, &file.etag, file.modified);
    cors(h);
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use livecast_media::playlist::{Part, PlaylistSegment, ServerControl};

    #[test]
    fn kinds() {
        assert_eq!(
            kind_of("index.m3u8").map(|k| k.content_type),
            Some("application/vnd.apple.mpegurl")
        );
        assert_eq!(kind_of("a.ts").map(|k| k.content_type), Some("video/mp2t"));
        assert_eq!(
            kind_of("a.m4s").map(|k| k.content_type),
            Some("video/iso.segment")
        );
        assert_eq!(
            kind_of("init.mp4").map(|k| k.content_type),
            Some("video/mp4")
        );
        assert!(kind_of("passwd").is_none());
        assert!(kind_of("x.html").is_none());
    }

    fn ll(segments: u64, pending: usize) -> MediaPlaylist {
        let mut pl = MediaPlaylist::new(2, 0);
        pl.part_target = Some(0.5);
        pl.server_control = Some(ServerControl {
            can_block_reload: true,
            ..Default::default()
        });
        for i in 0..segments {
            pl.push(PlaylistSegment {
                uri: format!("{i}.m4s"),
                duration: 2.0,
                ..Default::default()
            });
        }
        pl.pending_parts = pl_parts(segments, pending);
        pl
    }

    #[test]
    fn blocking_reload_rules() {
        let pl = ll(5, 2); // segments 0..=4 complete, parts 0 and 1 of segment 5 out
        assert_eq!(evaluate(&pl, 4, None), Wait::Ready);
        assert_eq!(evaluate(&pl, 5, None), Wait::Pending);
        assert_eq!(evaluate(&pl, 5, Some(1)), Wait::Ready);
        assert_eq!(evaluate(&pl, 5, Some(2)), Wait::Pending);
        assert_eq!(
            evaluate(&pl, 6, None),
            Wait::Pending,
            "last complete plus two may wait"
        );
        assert_eq!(evaluate(&pl, 7, None), Wait::TooFarAhead);
        // Part limit with 0.5 s parts: six parts ahead at most.
        assert_eq!(evaluate(&pl, 6, Some(3)), Wait::Pending);
        assert_eq!(evaluate(&pl, 6, Some(4)), Wait::TooFarAhead);
        let mut ended = ll(5, 0);
        ended.ended = true;
        assert_eq!(evaluate(&ended, 7, None), Wait::Ready);
        // Segment 4 was published as 4 parts: part 4 of it means part 0 of segment 5.
        let mut pl = ll(5, 0);
        pl.segments[4].parts = pl_parts(4, 4);
        assert_eq!(evaluate(&pl, 4, Some(3)), Wait::Ready);
        assert_eq!(evaluate(&pl, 4, Some(4)), Wait::Pending);
        pl.pending_parts = pl_parts(5, 1);
        assert_eq!(evaluate(&pl, 4, Some(4)), Wait::Ready);
    }

    fn pl_parts(segment: u64, count: usize) -> Vec<Part> {
        (0..count)
            .map(|p| Part {
                uri: format!("{segment}.{p}.m4s"),
                duration: 0.5,
                independent: p == 0,
                byterange: None,
            })
            .collect()
    }

    #[test]
    fn directives() {
        let q = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            Directives::parse(&q(&[
                ("_HLS_msn", "4"),
                ("_HLS_part", "1"),
                ("_HLS_skip", "YES")
            ])),
            Ok(Directives {
                msn: Some(4),
                part: Some(1),
                skip: true
            })
        );
        assert!(Directives::parse(&q(&[("_HLS_part", "1")])).is_err());
        assert!(Directives::parse(&q(&[("_HLS_msn", "x")])).is_err());
        assert!(Directives::parse(&q(&[("_HLS_skip", "maybe")])).is_err());
        assert_eq!(
            Directives::parse(&q(&[("other", "1")])),
            Ok(Directives::default())
        );
    }
}

/// Entry points for the `cargo fuzz` targets in `fuzz/`; not an API.
#[doc(hidden)]
pub mod fuzzing {
    use super::*;

    /// Feeds a viewer's query string, `Range` header and a playlist through the front-end's
    /// parsing: LL-HLS delivery directives, the range answer over the playlist's bytes, and
    /// the blocking-reload decision and delta update for the playlist.
    pub fn request(query: &str, range: &str, playlist: &str) {
        let pairs: HashMap<String, String> = query
            .split('&')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let directives = Directives::parse(&pairs);
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(range) {
            headers.insert(header::RANGE, value);
        }
        let body = Bytes::copy_from_slice(playlist.as_bytes());
        let answer = ranged(&body, &headers);
        assert!(answer.status() != StatusCode::INTERNAL_SERVER_ERROR);
        if let (Ok(model), Ok(d)) = (MediaPlaylist::parse(playlist), directives) {
            if let Some(msn) = d.msn {
                let _ = evaluate(&model, msn, d.part);
            }
            let _ = model.delta().render();
        }
    }
}
