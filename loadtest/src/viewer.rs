//! One viewer: its own keep-alive connection and session cookie, the playlist loop and the
//! playback clock.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use livecast_media::playlist::{ByteRange, MediaPlaylist};

use crate::stats::{bump, Kind, Live, Timing, ViewerStats};

/// What hls.js buffers ahead at most (`maxBufferLength`).
const MAX_BUFFER_SECS: f64 = 30.0;
/// A wait for media shorter than this is not a stall (hls.js: `STALL_MINIMUM_DURATION_MS`).
const STALL_MIN: Duration = Duration::from_millis(250);
/// Retries back off like a player's: 1 s, doubling, at most 8 s.
const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// The playback clock: buffer = media downloaded − media played.
#[derive(Debug)]
pub(crate) struct Clock {
    buffer: f64,
    playing: bool,
    stalled_since: Option<Instant>,
    last: Instant,
}

impl Clock {
    pub fn new(now: Instant) -> Self {
        Self {
            buffer: 0.0,
            playing: false,
            stalled_since: None,
            last: now,
        }
    }

    /// Plays from the buffer up to `now`; a buffer that runs dry starts a stall.
    pub fn advance(&mut self, now: Instant, stats: &mut ViewerStats) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        if !self.playing || self.stalled_since.is_some() {
            return;
        }
        if self.buffer >= dt {
            self.buffer -= dt;
            stats.played_secs += dt;
        } else {
            stats.played_secs += self.buffer;
            let dry = now - Duration::from_secs_f64(dt - self.buffer);
            self.buffer = 0.0;
            self.stalled_since = Some(dry);
        }
    }

    /// Books a wait for media that ran from `since` to `now`: a stall when it lasted at least
    /// [`STALL_MIN`] (hls.js's own threshold, below which it does not call playback stalled and
    /// nobody sees it), else a short wait, counted apart.
    fn book(since: Instant, now: Instant, stats: &mut ViewerStats, live: &Live) {
        let waited = now.saturating_duration_since(since);
        if waited >= STALL_MIN {
            stats.stalls += 1;
            stats.stalled_secs += waited.as_secs_f64();
            bump(&live.stalls, 1);
        } else {
            stats.short_waits += 1;
            stats.short_wait_secs += waited.as_secs_f64();
        }
    }

    /// Media arrived: playback starts (or resumes) as soon as there is some, as hls.js does.
    pub fn add(&mut self, secs: f64, now: Instant, stats: &mut ViewerStats, live: &Live) {
        self.advance(now, stats);
        self.buffer += secs;
        if let Some(since) = self.stalled_since.take() {
            Self::book(since, now, stats, live);
        }
        self.playing = true;
    }

    pub fn buffer(&self) -> f64 {
        self.buffer
    }

    /// Ends the run: a stall still going counts up to `now`.
    pub fn finish(&mut self, now: Instant, stats: &mut ViewerStats, live: &Live) {
        if let Some(since) = self.stalled_since.take() {
            Self::book(since, now, stats, live);
        }
    }
}

/// One viewer's connection and identity.
pub(crate) struct Viewer {
    client: Client<HttpConnector, Empty<Bytes>>,
    cookie: String,
    live: Arc<Live>,
}

impl Viewer {
    pub fn new(session: u128, live: Arc<Live>) -> Self {
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(1)
            .build_http();
        Self {
            client,
            cookie: format!("livecast_session={session:032x}"),
            live,
        }
    }

    /// GET `url`: the body, or the error's kind (a status code or a transport failure).
    async fn get(
        &self,
        url: &str,
        kind: Kind,
        range: Option<ByteRange>,
        stats: &mut ViewerStats,
    ) -> Result<Bytes, String> {
        bump(&self.live.requests, 1);
        let started = Instant::now();
        let outcome = async {
            let uri: http::Uri = url.parse().map_err(|_| "bad_url".to_string())?;
            let mut request = http::Request::get(uri).header(http::header::COOKIE, &self.cookie);
            if let Some(r) = range {
                request = request.header(
                    http::header::RANGE,
                    format!("bytes={}-{}", r.offset, r.end() - 1),
                );
            }
            let request = request
                .body(Empty::new())
                .map_err(|_| "bad_url".to_string())?;
            let response =
                tokio::time::timeout(Duration::from_secs(30), self.client.request(request))
                    .await
                    .map_err(|_| "timeout".to_string())?
                    .map_err(|e| if e.is_connect() { "connect" } else { "request" }.to_string())?;
            let first = started.elapsed();
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|_| "body".to_string())?
                .to_bytes();
            if !status.is_success() {
                return Err(status.as_u16().to_string());
            }
            Ok((first, body))
        }
        .await;
        match outcome {
            Ok((first, body)) => {
                let timing = Timing {
                    first_ms: first.as_secs_f64() * 1000.0,
                    last_ms: started.elapsed().as_secs_f64() * 1000.0,
                };
                stats.requests.entry(kind).or_default().push(timing);
                stats.bytes += body.len() as u64;
                bump(&self.live.bytes, body.len() as u64);
                Ok(body)
            }
            Err(kind_of_error) => {
                *stats.errors.entry(kind_of_error.clone()).or_default() += 1;
                bump(&self.live.errors, 1);
                Err(kind_of_error)
            }
        }
    }

    /// Watches `url` until `until`; returns what this viewer saw.
    pub async fn watch(self, url: String, until: Instant) -> ViewerStats {
        let mut stats = ViewerStats::default();
        let joined = Instant::now();
        let mut clock = Clock::new(joined);
        let mut at: Option<Position> = None; // the next media to fetch
        let mut fetched_last: Option<u64> = None; // the newest segment any media came from
        let mut init: Option<String> = None;
        let mut backoff = Duration::from_secs(1);
        let mut blocking = false;
        let mut reload = url.clone();
        // Media between the independent part a viewer must start decoding at and its start
        // point: decoded, not shown (hls.js seeks forward to the live sync point).
        let mut seek = 0.0f64;
        while Instant::now() < until {
            let kind = if blocking {
                Kind::BlockingReload
            } else {
                Kind::Playlist
            };
            let loaded_at = Instant::now();
            let text = match self.get(&reload, kind, None, &mut stats).await {
                Ok(body) => body,
                Err(_) => {
                    clock.advance(Instant::now(), &mut stats);
                    sleep_until(Instant::now() + backoff, until).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    reload = url.clone();
                    blocking = false;
                    continue;
                }
            };
            backoff = Duration::from_secs(1);
            let Ok(playlist) = MediaPlaylist::parse(&String::from_utf8_lossy(&text)) else {
                *stats.errors.entry("bad_playlist".into()).or_default() += 1;
                bump(&self.live.errors, 1);
                sleep_until(Instant::now() + backoff, until).await;
                continue;
            };
            // Parts when the playlist offers them and blocking reloads to wait for the next.
            let can_block = playlist
                .server_control
                .as_ref()
                .is_some_and(|c| c.can_block_reload);
            let parts = can_block && playlist.part_target.is_some();
            let from = match at {
                Some(at) => at,
                None => {
                    let (start, skip) = start_position(&playlist, parts);
                    seek = skip;
                    *at.insert(start)
                }
            };
            let units = available(&playlist, from, parts);
            if let (Some(prev), Some(first)) = (fetched_last, units.first()) {
                if first.msn > prev + 1 {
                    stats.skipped_segments += first.msn - prev - 1;
                }
            }
            let mut changed = false;
            for unit in units {
                clock.advance(Instant::now(), &mut stats);
                if clock.buffer() > MAX_BUFFER_SECS || Instant::now() >= until {
                    break;
                }
                if let Some(map) = unit
                    .map
                    .as_ref()
                    .filter(|m| init.as_deref() != Some(m.as_str()))
                {
                    if self
                        .get(&resolve(&url, map), Kind::Init, None, &mut stats)
                        .await
                        .is_ok()
                    {
                        init = Some(map.clone());
                    }
                }
                if !unit.gap {
                    let kind = if unit.part.is_some() {
                        Kind::Part
                    } else {
                        Kind::Segment
                    };
                    if self
                        .get(&resolve(&url, &unit.uri), kind, unit.range, &mut stats)
                        .await
                        .is_err()
                    {
                        break;
                    }
                    let now = Instant::now();
                    stats
                        .startup_ms
                        .get_or_insert((now - joined).as_secs_f64() * 1000.0);
                    stats.media_downloaded_secs += unit.duration;
                    stats.media_distinct_secs += unit.duration;
                }
                let skipped = seek.min(unit.duration);
                seek -= skipped;
                clock.add(
                    unit.duration - skipped,
                    Instant::now(),
                    &mut stats,
                    &self.live,
                );
                // Media skipped on the way to the start point is never at the playhead.
                if let Some(pdt) = unit.pdt.filter(|_| skipped == 0.0) {
                    // The playhead is `buffer` seconds behind the end of this media.
                    let end = pdt + Duration::from_secs_f64(unit.duration);
                    let playhead = end
                        .checked_sub(Duration::from_secs_f64(clock.buffer()))
                        .unwrap_or(end);
                    if let Ok(behind) = SystemTime::now().duration_since(playhead) {
                        stats.latency_secs.push(behind.as_secs_f64());
                    }
                }
                fetched_last = Some(unit.msn);
                at = Some(unit.next);
                changed = true;
            }
            let next = at.unwrap_or(from);
            let last = playlist.media_sequence + playlist.segments.len() as u64;
            if playlist.ended && next.msn >= last {
                break;
            }
            clock.advance(Instant::now(), &mut stats);
            // Live refresh: a blocking reload for what comes next when the server offers them,
            // else RFC 8216 §6.3.4: the target duration after a change, half of it after none.
            blocking = can_block;
            if blocking {
                let query = if parts {
                    format!("_HLS_msn={}&_HLS_part={}", next.msn, next.part)
                } else {
                    format!("_HLS_msn={}", next.msn)
                };
                reload = with_query(&url, &query);
            } else {
                reload = url.clone();
                let wait = Duration::from_secs(playlist.target_duration.max(1));
                let wait = if changed { wait } else { wait / 2 };
                sleep_until(loaded_at + wait, until).await;
            }
        }
        clock.advance(Instant::now().min(until), &mut stats);
        clock.finish(Instant::now().min(until), &mut stats, &self.live);
        stats
    }
}

/// Where a viewer is: the segment (media sequence number) and the part within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    pub msn: u64,
    pub part: u64,
}

/// One thing to fetch: a whole segment or one of its parts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Unit {
    pub msn: u64,
    pub part: Option<u64>,
    pub uri: String,
    pub range: Option<ByteRange>,
    pub duration: f64,
    pub independent: bool,
    pub gap: bool,
    pub map: Option<String>,
    /// Wall-clock time of the unit's first frame, from PROGRAM-DATE-TIME.
    pub pdt: Option<SystemTime>,
    /// Where the viewer is once it has this.
    pub next: Position,
}

/// What `playlist` offers from `from` on, in playback order: parts where they are listed and
/// `parts` is on (the segment in progress included), whole segments otherwise.
pub(crate) fn available(playlist: &MediaPlaylist, from: Position, parts: bool) -> Vec<Unit> {
    let first = playlist.media_sequence;
    let last = first + playlist.segments.len() as u64; // the segment in progress, if any
    let mut out = Vec::new();
    let mut next_pdt = None;
    for msn in from.msn.max(first)..=last {
        let skip = if msn == from.msn { from.part } else { 0 };
        let (listed, seg) = if msn < last {
            let seg = &playlist.segments[(msn - first) as usize];
            (&seg.parts, Some(seg))
        } else {
            (&playlist.pending_parts, None)
        };
        let map = seg
            .and_then(|s| s.map.clone())
            .or_else(|| playlist.map.clone());
        let pdt = seg.and_then(|s| s.program_date_time).or(next_pdt);
        next_pdt = pdt
            .zip(seg)
            .map(|(t, s)| t + Duration::from_secs_f64(s.duration));
        if parts && !listed.is_empty() {
            let mut offset = 0.0;
            for (i, p) in listed.iter().enumerate() {
                let i = i as u64;
                if i >= skip {
                    let complete = seg.is_some() && i + 1 == listed.len() as u64;
                    out.push(Unit {
                        msn,
                        part: Some(i),
                        uri: p.uri.clone(),
                        range: p.byterange,
                        duration: p.duration,
                        independent: p.independent,
                        gap: false,
                        map: map.clone(),
                        pdt: pdt.map(|t| t + Duration::from_secs_f64(offset)),
                        next: if complete {
                            Position {
                                msn: msn + 1,
                                part: 0,
                            }
                        } else {
                            Position { msn, part: i + 1 }
                        },
                    });
                }
                offset += p.duration;
            }
        } else if let Some(seg) = seg.filter(|_| skip == 0) {
            out.push(Unit {
                msn,
                part: None,
                uri: seg.uri.clone(),
                range: None,
                duration: seg.duration,
                independent: true,
                gap: seg.gap,
                map,
                pdt,
                next: Position {
                    msn: msn + 1,
                    part: 0,
                },
            });
        }
        // A segment whose parts were partly fetched and are no longer listed is left: its
        // rest cannot be asked for, and the viewer goes on with the next one.
    }
    out
}

/// Where a player starts: PART-HOLD-BACK behind the live edge on a playlist with parts (at
/// the independent part at or before that point, where decoding can begin), else the segment
/// three target durations (or HOLD-BACK) behind; the first segment of an ended playlist.
///
/// Also returns how much media lies between that independent part and the start point: a
/// player decodes it but starts showing after it.
pub(crate) fn start_position(playlist: &MediaPlaylist, parts: bool) -> (Position, f64) {
    let first = Position {
        msn: playlist.media_sequence,
        part: 0,
    };
    if playlist.ended {
        return (first, 0.0);
    }
    let control = playlist.server_control.as_ref();
    let hold = if parts {
        control.and_then(|c| c.part_hold_back)
    } else {
        control.and_then(|c| c.hold_back)
    }
    .unwrap_or(3.0 * playlist.target_duration as f64);
    let units = available(playlist, first, parts);
    let mut behind = 0.0;
    let mut index = units.len();
    while index > 0 && behind < hold {
        index -= 1;
        behind += units[index].duration;
    }
    let mut skip = 0.0;
    while index > 0 && index < units.len() && !units[index].independent {
        index -= 1;
        skip += units[index].duration;
    }
    let start = units.get(index).map_or(first, |u| Position {
        msn: u.msn,
        part: u.part.unwrap_or(0),
    });
    (start, skip)
}

/// `reference` resolved against the playlist `base` URL (relative names, as livecast writes).
pub(crate) fn resolve(base: &str, reference: &str) -> String {
    if reference.contains("://") {
        return reference.to_string();
    }
    let base = base.split(['?', '#']).next().unwrap_or(base);
    if let Some(path) = reference.strip_prefix('/') {
        let origin_end = base.find("://").map_or(0, |i| i + 3);
        let host_end = base[origin_end..]
            .find('/')
            .map_or(base.len(), |i| origin_end + i);
        return format!("{}/{path}", &base[..host_end]);
    }
    match base.rfind('/') {
        Some(i) => format!("{}/{reference}", &base[..i]),
        None => reference.to_string(),
    }
}

fn with_query(url: &str, query: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{query}")
}

async fn sleep_until(at: Instant, until: Instant) {
    tokio::time::sleep_until(tokio::time::Instant::from_std(at.min(until))).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(segments: usize, text_extra: &str) -> MediaPlaylist {
        let mut text =
            format!("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:10\n{text_extra}");
        for i in 0..segments {
            text.push_str(&format!("#EXTINF:2.0,\ns-{i}.ts\n"));
        }
        MediaPlaylist::parse(&text).unwrap()
    }

    #[test]
    fn starts_where_hls_js_starts() {
        let at = |msn, part| Position { msn, part };
        // Plain HLS: three target durations (6 s, three segments) behind the edge.
        assert_eq!(start_position(&live(6, ""), false), (at(13, 0), 0.0));
        assert_eq!(
            start_position(&live(2, ""), false),
            (at(10, 0), 0.0),
            "a short playlist starts at its head"
        );
        let ended = MediaPlaylist::parse(
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\na.ts\n#EXTINF:2.0,\nb.ts\n#EXT-X-ENDLIST\n",
        )
        .unwrap();
        assert_eq!(start_position(&ended, false), (at(0, 0), 0.0));
    }

    /// An LL-HLS playlist as livecast writes it: parts as byte ranges of their segment, a
    /// keyframe starting each segment, two parts of the segment in progress.
    fn low_latency() -> MediaPlaylist {
        let mut text = String::from(
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PART-INF:PART-TARGET=0.5\n\
             #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.5\n#EXT-X-MEDIA-SEQUENCE:10\n",
        );
        for s in 10..13 {
            for p in 0..4 {
                let independent = if p == 0 { ",INDEPENDENT=YES" } else { "" };
                text.push_str(&format!(
                    "#EXT-X-PART:DURATION=0.5,URI=\"s-{s}.m4s\",BYTERANGE=\"100@{}\"{independent}\n",
                    p * 100
                ));
            }
            text.push_str(&format!("#EXTINF:2.0,\ns-{s}.m4s\n"));
        }
        text.push_str(
            "#EXT-X-PART:DURATION=0.5,URI=\"s-13.m4s\",BYTERANGE=\"100@0\",INDEPENDENT=YES\n",
        );
        text.push_str("#EXT-X-PART:DURATION=0.5,URI=\"s-13.m4s\",BYTERANGE=\"100@100\"\n");
        MediaPlaylist::parse(&text).unwrap()
    }

    #[test]
    fn low_latency_viewers_start_at_an_independent_part_and_follow_parts() {
        let playlist = low_latency();
        // 1.5 s back from the edge is part 3 of segment 12; the independent part before it
        // is the segment's first.
        let (start, skip) = start_position(&playlist, true);
        assert_eq!(start, Position { msn: 12, part: 0 });
        assert_eq!(skip, 1.5, "parts 0-2 of 12 are decoded, not shown");
        let units = available(&playlist, start, true);
        assert_eq!(
            units.len(),
            6,
            "four parts of 12, two of the segment in progress"
        );
        assert_eq!(
            units[3].next,
            Position { msn: 13, part: 0 },
            "after the last part of a complete segment"
        );
        assert_eq!(
            units[5].next,
            Position { msn: 13, part: 2 },
            "the next part of the one in progress"
        );
        assert_eq!(
            units[1].range,
            Some(ByteRange {
                length: 100,
                offset: 100
            })
        );
        assert!(
            units[4].pdt.is_none(),
            "no PROGRAM-DATE-TIME in this playlist"
        );
        // Without parts, whole segments only (and none for the segment in progress).
        let whole = available(&playlist, Position { msn: 11, part: 0 }, false);
        assert_eq!(whole.iter().map(|u| u.msn).collect::<Vec<_>>(), [11, 12]);
    }

    #[test]
    fn resolves_relative_names() {
        let base = "http://h:8080/hls/cam/index.m3u8?_HLS_msn=3";
        assert_eq!(resolve(base, "s-1.m4s"), "http://h:8080/hls/cam/s-1.m4s");
        assert_eq!(resolve(base, "/x/y.ts"), "http://h:8080/x/y.ts");
        assert_eq!(resolve(base, "http://o/z.ts"), "http://o/z.ts");
        assert_eq!(
            with_query("http://h/a.m3u8", "_HLS_msn=4"),
            "http://h/a.m3u8?_HLS_msn=4"
        );
    }

    #[test]
    fn the_clock_stalls_when_the_buffer_runs_dry_and_resumes_with_media() {
        let live = Live::default();
        let mut stats = ViewerStats::default();
        let t0 = Instant::now();
        let mut clock = Clock::new(t0);
        clock.add(2.0, t0, &mut stats, &live);
        clock.advance(t0 + Duration::from_secs(1), &mut stats);
        assert_eq!(stats.stalls, 0);
        clock.advance(t0 + Duration::from_secs(3), &mut stats);
        clock.add(2.0, t0 + Duration::from_secs(4), &mut stats, &live);
        assert_eq!(stats.stalls, 1, "dry at 2 s, playing again at 4 s");
        assert!(
            (stats.stalled_secs - 2.0).abs() < 1e-6,
            "{}",
            stats.stalled_secs
        );
        assert!((stats.played_secs - 2.0).abs() < 1e-6);
        clock.advance(t0 + Duration::from_secs(5), &mut stats);
        assert!((stats.played_secs - 3.0).abs() < 1e-6);
        // Media 100 ms late is a short wait, not a stall.
        clock.advance(t0 + Duration::from_millis(6100), &mut stats);
        clock.add(1.0, t0 + Duration::from_millis(6200), &mut stats, &live);
        assert_eq!((stats.stalls, stats.short_waits), (1, 1));
        assert!(
            (stats.short_wait_secs - 0.2).abs() < 1e-6,
            "{}",
            stats.short_wait_secs
        );
    }
}
