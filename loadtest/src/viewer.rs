//! One viewer: its own keep-alive connection and session cookie, the playlist loop and the
//! playback clock.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use livecast_media::playlist::MediaPlaylist;

use crate::stats::{bump, Kind, Live, Timing, ViewerStats};

/// What hls.js buffers ahead at most (`maxBufferLength`).
const MAX_BUFFER_SECS: f64 = 30.0;
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
    pub fn advance(&mut self, now: Instant, stats: &mut ViewerStats, live: &Live) {
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
            stats.stalls += 1;
            bump(&live.stalls, 1);
        }
    }

    /// Media arrived: playback starts (or resumes) as soon as there is some, as hls.js does.
    pub fn add(&mut self, secs: f64, now: Instant, stats: &mut ViewerStats, live: &Live) {
        self.advance(now, stats, live);
        self.buffer += secs;
        if let Some(since) = self.stalled_since.take() {
            stats.stalled_secs += now.saturating_duration_since(since).as_secs_f64();
        }
        self.playing = true;
    }

    pub fn buffer(&self) -> f64 {
        self.buffer
    }

    /// Ends the run: a stall still going counts up to `now`.
    pub fn finish(&mut self, now: Instant, stats: &mut ViewerStats) {
        if let Some(since) = self.stalled_since.take() {
            stats.stalled_secs += now.saturating_duration_since(since).as_secs_f64();
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
    async fn get(&self, url: &str, kind: Kind, stats: &mut ViewerStats) -> Result<Bytes, String> {
        bump(&self.live.requests, 1);
        let started = Instant::now();
        let outcome = async {
            let uri: http::Uri = url.parse().map_err(|_| "bad_url".to_string())?;
            let request = http::Request::get(uri)
                .header(http::header::COOKIE, &self.cookie)
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
        let mut next: Option<u64> = None; // the next media sequence number to fetch
        let mut fetched_last: Option<u64> = None;
        let mut init: Option<String> = None;
        let mut backoff = Duration::from_secs(1);
        let mut blocking = false;
        let mut reload = url.clone();
        while Instant::now() < until {
            let kind = if blocking {
                Kind::BlockingReload
            } else {
                Kind::Playlist
            };
            let loaded_at = Instant::now();
            let text = match self.get(&reload, kind, &mut stats).await {
                Ok(body) => body,
                Err(_) => {
                    clock.advance(Instant::now(), &mut stats, &self.live);
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
            let first = playlist.media_sequence;
            let last = first + playlist.segments.len() as u64; // one past the newest
            let start = *next.get_or_insert_with(|| start_sequence(&playlist));
            let mut changed = false;
            let mut msn = start.max(first);
            if let Some(prev) = fetched_last {
                if msn > prev + 1 {
                    stats.skipped_segments += msn - prev - 1;
                }
            }
            while msn < last && Instant::now() < until {
                clock.advance(Instant::now(), &mut stats, &self.live);
                if clock.buffer() > MAX_BUFFER_SECS {
                    break;
                }
                let segment = &playlist.segments[(msn - first) as usize];
                let map = segment.map.clone().or_else(|| playlist.map.clone());
                if let Some(map) = map.filter(|m| init.as_deref() != Some(m.as_str())) {
                    if self
                        .get(&resolve(&url, &map), Kind::Init, &mut stats)
                        .await
                        .is_ok()
                    {
                        init = Some(map);
                    }
                }
                if segment.gap {
                    clock.add(segment.duration, Instant::now(), &mut stats, &self.live);
                } else if self
                    .get(&resolve(&url, &segment.uri), Kind::Segment, &mut stats)
                    .await
                    .is_err()
                {
                    break;
                } else {
                    let now = Instant::now();
                    stats
                        .startup_ms
                        .get_or_insert((now - joined).as_secs_f64() * 1000.0);
                    clock.add(segment.duration, now, &mut stats, &self.live);
                    stats.media_downloaded_secs += segment.duration;
                    if fetched_last.is_none_or(|p| msn > p) {
                        stats.media_distinct_secs += segment.duration;
                    }
                    if let Some(pdt) = segment.program_date_time {
                        // The playhead is `buffer` seconds behind the end of this segment.
                        let playhead = pdt
                            + Duration::from_secs_f64((segment.duration - clock.buffer()).max(0.0));
                        if let Ok(behind) = SystemTime::now().duration_since(playhead) {
                            stats.latency_secs.push(behind.as_secs_f64());
                        }
                    }
                }
                fetched_last = Some(msn);
                msn += 1;
                next = Some(msn);
                changed = true;
            }
            if playlist.ended && msn >= last {
                break;
            }
            clock.advance(Instant::now(), &mut stats, &self.live);
            // Live refresh: a blocking reload for the next segment when the server offers them,
            // else RFC 8216 §6.3.4: the target duration after a change, half of it after none.
            blocking = playlist
                .server_control
                .as_ref()
                .is_some_and(|c| c.can_block_reload);
            if blocking {
                reload = with_query(&url, &format!("_HLS_msn={msn}"));
            } else {
                reload = url.clone();
                let wait = Duration::from_secs(playlist.target_duration.max(1));
                let wait = if changed { wait } else { wait / 2 };
                sleep_until(loaded_at + wait, until).await;
            }
        }
        clock.advance(Instant::now().min(until), &mut stats, &self.live);
        clock.finish(Instant::now().min(until), &mut stats);
        stats
    }
}

/// Where a player starts: the segment holding the point PART-HOLD-BACK (LL-HLS) or three
/// target durations (plain HLS) behind the live edge; the first one of an ended playlist.
pub(crate) fn start_sequence(playlist: &MediaPlaylist) -> u64 {
    if playlist.ended {
        return playlist.media_sequence;
    }
    let hold = playlist
        .server_control
        .as_ref()
        .and_then(|c| {
            c.part_hold_back
                .filter(|_| playlist.part_target.is_some())
                .or(c.hold_back)
        })
        .unwrap_or(3.0 * playlist.target_duration as f64);
    let mut behind = 0.0;
    let mut index = playlist.segments.len();
    while index > 0 && behind < hold {
        index -= 1;
        behind += playlist.segments[index].duration;
    }
    playlist.media_sequence + index as u64
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
        // Plain HLS: three target durations (6 s, three segments) behind the edge.
        assert_eq!(start_sequence(&live(6, "")), 13);
        assert_eq!(
            start_sequence(&live(2, "")),
            10,
            "a short playlist starts at its head"
        );
        let ended = MediaPlaylist::parse("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\na.ts\n#EXTINF:2.0,\nb.ts\n#EXT-X-ENDLIST\n").unwrap();
        assert_eq!(start_sequence(&ended), 0);
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
        clock.advance(t0 + Duration::from_secs(1), &mut stats, &live);
        assert_eq!(stats.stalls, 0);
        clock.advance(t0 + Duration::from_secs(3), &mut stats, &live);
        assert_eq!(stats.stalls, 1, "dry at 2 s");
        clock.add(2.0, t0 + Duration::from_secs(4), &mut stats, &live);
        assert!(
            (stats.stalled_secs - 2.0).abs() < 1e-6,
            "{}",
            stats.stalled_secs
        );
        assert!((stats.played_secs - 2.0).abs() < 1e-6);
        clock.advance(t0 + Duration::from_secs(5), &mut stats, &live);
        assert!((stats.played_secs - 3.0).abs() < 1e-6);
    }
}
