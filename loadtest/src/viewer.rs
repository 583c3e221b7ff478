//! One viewer: its own keep-alive connections and session cookie, the master playlist and
//! variant choice, the media playlist loop and the playback clock.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use livecast_media::master::MasterPlaylist;
use livecast_media::playlist::{ByteRange, MediaPlaylist};
use livecast_telemetry::CancellationToken;

use crate::abr::{self, Estimator};
use crate::config::VariantChoice;
use crate::metrics::Live;
use crate::position::{
    available, end_of_list, position_at, resolve, start_position, with_query, Position, Unit,
};
use crate::stats::{Event, Kind, Recorder, Request, ViewerStats};

/// What hls.js buffers ahead at most (`maxBufferLength`).
const MAX_BUFFER_SECS: f64 = 30.0;
/// A wait for media shorter than this is not a stall (hls.js: `STALL_MINIMUM_DURATION_MS`).
const STALL_MIN: Duration = Duration::from_millis(250);
/// Retries back off like a player's: 1 s, doubling, at most 8 s.
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// Recent media units remembered to catch a second download of one.
const RECENT: usize = 64;
/// What a request cut off by an early stop returns; never recorded.
const STOPPED: &str = "stopped";

/// The playback clock: buffer = media downloaded − media played.
#[derive(Debug)]
pub(crate) struct Clock {
    buffer: f64,
    playing: bool,
    stalled_since: Option<Instant>,
    last: Instant,
    /// Playback rate: 1, or more while catching up with the live edge.
    rate: f64,
}

impl Clock {
    pub fn new(now: Instant) -> Self {
        Self {
            buffer: 0.0,
            playing: false,
            stalled_since: None,
            last: now,
            rate: 1.0,
        }
    }

    /// Plays from the buffer up to `now`; a buffer that runs dry starts a stall.
    pub fn advance(&mut self, now: Instant, stats: &mut ViewerStats) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        if !self.playing || self.stalled_since.is_some() {
            return;
        }
        let wanted = dt * self.rate;
        if self.buffer >= wanted {
            self.buffer -= wanted;
            stats.played_secs += dt;
            stats.played_media_secs += wanted;
        } else {
            let lasted = self.buffer / self.rate;
            stats.played_secs += lasted;
            stats.played_media_secs += self.buffer;
            let dry = now - Duration::from_secs_f64(dt - lasted);
            self.buffer = 0.0;
            self.stalled_since = Some(dry);
        }
    }

    /// Books a wait for media that ran from `since` to `now`: a stall when it lasted at least
    /// [`STALL_MIN`] (hls.js's own threshold, below which it does not call playback stalled and
    /// nobody sees it), else a short wait, counted apart.
    fn book(since: Instant, now: Instant, stats: &mut ViewerStats, out: &Outlet) {
        let waited = now.saturating_duration_since(since);
        if waited >= STALL_MIN {
            stats.stalls += 1;
            stats.stalled_secs += waited.as_secs_f64();
            out.live.stalls.inc();
            out.live.stalled_secs.inc_by(waited.as_secs_f64());
            out.recorder.send(Event::Stall);
        } else {
            stats.short_waits += 1;
            stats.short_wait_secs += waited.as_secs_f64();
        }
    }

    /// Media arrived: playback starts (or resumes) as soon as there is some, as hls.js does.
    pub fn add(&mut self, secs: f64, now: Instant, stats: &mut ViewerStats, out: &Outlet) {
        self.advance(now, stats);
        self.buffer += secs;
        if let Some(since) = self.stalled_since.take() {
            Self::book(since, now, stats, out);
        }
        self.playing = true;
    }

    pub fn buffer(&self) -> f64 {
        self.buffer
    }

    /// Sets the playback rate from the distance to the live edge, as hls.js's latency
    /// controller does in low-latency mode when `maxLiveSyncPlaybackRate` is above 1: only
    /// within one target duration of the target latency and with more than a second
    /// buffered, `2 / (1 + e^(-0.75 × distance))` rounded to 0.05, between 1 and the maximum.
    pub fn catch_up(&mut self, edge: f64, target: f64, target_duration: f64, max_rate: f64) {
        let distance = edge - target;
        self.rate = if max_rate > 1.0
            && distance > 0.05
            && distance < target + target_duration
            && self.buffer > 1.0
        {
            let rate = (2.0 / (1.0 + (-0.75 * distance).exp()) * 20.0).round() / 20.0;
            rate.clamp(1.0, max_rate.min(2.0))
        } else {
            1.0
        };
    }

    /// Ends the run: a stall still going counts up to `now`.
    pub fn finish(&mut self, now: Instant, stats: &mut ViewerStats, out: &Outlet) {
        if let Some(since) = self.stalled_since.take() {
            Self::book(since, now, stats, out);
        }
    }
}

/// Where a viewer's records go: the live counters and the collector.
#[derive(Debug, Clone)]
pub(crate) struct Outlet {
    pub live: Arc<Live>,
    pub recorder: Recorder,
    /// Cancelled when the run is stopped early (SIGINT, SIGTERM): every viewer leaves at once,
    /// its requests in flight dropped and not counted.
    pub stop: CancellationToken,
}

/// How a viewer plays, the same for a group of viewers.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub url: String,
    /// `url` is a master playlist.
    pub master: bool,
    pub variant: VariantChoice,
    /// Parts and blocking reloads when the playlist offers them (hls.js `lowLatencyMode`).
    pub low_latency: bool,
    /// hls.js `maxLiveSyncPlaybackRate` (1: no catch-up).
    pub max_live_sync_rate: f64,
    /// A test seam: download every media unit twice (the honesty checks must notice).
    pub download_twice: bool,
}

/// A response, or why there was none worth using.
struct Fetched {
    /// The body of a playlist (empty for media, which is counted, not kept).
    body: Bytes,
    /// Body bytes received.
    len: u64,
    first: Duration,
    last: Duration,
}

/// One viewer's connections and identity.
pub(crate) struct Viewer {
    id: u32,
    client: Client<HttpConnector, Empty<Bytes>>,
    cookie: String,
    out: Outlet,
}

/// A variant the viewer can play.
#[derive(Debug, Clone)]
struct Choice {
    url: String,
    bandwidth: u64,
}

impl Viewer {
    pub fn new(id: u32, session: u128, out: Outlet) -> Self {
        // Up to two connections, as a browser opens for the preload hint and the blocking
        // reload that run at the same time; one kept idle.
        // A fixed 16 KiB read buffer: hyper's adaptive one grows towards 400 KiB on a fast
        // link, per connection, which thousands of viewers cannot afford.
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(2)
            .http1_read_buf_exact_size(16 * 1024)
            .build_http();
        Self {
            id,
            client,
            cookie: format!("livecast_session={session:032x}"),
            out,
        }
    }

    /// Whether the viewer still watches: before its leave time and the run not stopped.
    fn before(&self, until: Instant) -> bool {
        Instant::now() < until && !self.out.stop.is_cancelled()
    }

    /// Sleeps until `at`, or until the viewer leaves, whichever comes first.
    async fn sleep_until(&self, at: Instant, until: Instant) {
        let wake = tokio::time::Instant::from_std(at.min(until));
        tokio::select! {
            () = tokio::time::sleep_until(wake) => {}
            () = self.out.stop.cancelled() => {}
        }
    }

    /// GET `url` and tell the collector about it: the body, or the error's kind (a status code
    /// or a transport failure).
    async fn get(
        &self,
        url: &str,
        kind: Kind,
        range: Option<(u64, Option<u64>)>,
        hinted: bool,
    ) -> Result<Fetched, String> {
        let started = Instant::now();
        let mut replica = None;
        let mut status = 0;
        let fetch = async {
            let uri: http::Uri = url.parse().map_err(|_| "bad_url".to_string())?;
            let mut request = http::Request::get(uri).header(http::header::COOKIE, &self.cookie);
            if let Some((start, end)) = range {
                let value = match end {
                    Some(end) => format!("bytes={start}-{end}"),
                    None => format!("bytes={start}-"),
                };
                request = request.header(http::header::RANGE, value);
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
            status = response.status().as_u16();
            replica = response
                .headers()
                .get(livecast_telemetry::REPLICA_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(Arc::<str>::from);
            // Media is counted as it streams in and dropped, as a player hands it to the
            // decoder: a viewer never holds a whole segment (memory per viewer stays small).
            let mut body = response.into_body();
            let (mut kept, mut len) = (Vec::new(), 0u64);
            let keep = matches!(kind, Kind::Master | Kind::Playlist | Kind::BlockingReload);
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|_| "body".to_string())?;
                if let Some(data) = frame.data_ref() {
                    len += data.len() as u64;
                    if keep {
                        kept.extend_from_slice(data);
                    }
                }
            }
            if !(200..300).contains(&status) {
                return Err(status.to_string());
            }
            Ok(Fetched {
                body: Bytes::from(kept),
                len,
                first,
                last: started.elapsed(),
            })
        };
        let outcome = tokio::select! {
            biased;
            () = self.out.stop.cancelled() => return Err(STOPPED.to_string()),
            outcome = fetch => outcome,
        };
        self.out.live.requests.inc();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let (first_ms, last_ms, bytes, error) = match &outcome {
            Ok(f) => (Some(ms(f.first)), Some(ms(f.last)), f.len, None),
            Err(e) => (None, None, 0, Some(e.clone())),
        };
        if error.is_some() {
            self.out.live.errors.inc();
        }
        self.out.live.bytes.inc_by(bytes);
        self.out.recorder.send(Event::Request(Request {
            viewer: self.id,
            kind,
            url: url.to_string(),
            sent_ms: self.out.recorder.since_start_ms(started),
            first_ms,
            last_ms,
            status,
            bytes,
            error,
            replica,
            hinted,
        }));
        outcome
    }

    /// The master playlist's variants, ascending by bandwidth; retried like a player until
    /// `until`.
    async fn variants(&self, plan: &Plan, until: Instant) -> Option<Vec<Choice>> {
        let mut backoff = Duration::from_secs(1);
        while self.before(until) {
            if let Ok(f) = self.get(&plan.url, Kind::Master, None, false).await {
                if let Ok(master) = MasterPlaylist::parse(&String::from_utf8_lossy(&f.body)) {
                    let mut out: Vec<Choice> = master
                        .variants
                        .iter()
                        .map(|v| Choice {
                            url: resolve(&plan.url, &v.uri),
                            bandwidth: v.bandwidth,
                        })
                        .collect();
                    if let VariantChoice::Index(i) = plan.variant {
                        // A fixed variant, in the master's own order.
                        return out.get(i).cloned().map(|c| vec![c]);
                    }
                    out.sort_by_key(|c| c.bandwidth);
                    return Some(out);
                }
            }
            self.sleep_until(Instant::now() + backoff, until).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        None
    }

    /// Watches `plan` until `until`; returns what this viewer saw.
    pub async fn watch(self, plan: Plan, until: Instant) -> ViewerStats {
        let mut stats = ViewerStats::default();
        let joined = Instant::now();
        let mut clock = Clock::new(joined);
        let variants = if plan.master {
            match self.variants(&plan, until).await {
                Some(v) => v,
                None => return stats,
            }
        } else {
            vec![Choice {
                url: plan.url.clone(),
                bandwidth: 0,
            }]
        };
        // hls.js starts on the highest variant the default estimate allows when it may switch.
        let mut current = match plan.variant {
            VariantChoice::Highest => variants.len() - 1,
            VariantChoice::Abr => abr::choose(
                &variants.iter().map(|c| c.bandwidth).collect::<Vec<_>>(),
                0,
                abr::DEFAULT_ESTIMATE,
            ),
            VariantChoice::Lowest | VariantChoice::Index(_) => 0,
        };
        let bandwidths: Vec<u64> = variants.iter().map(|c| c.bandwidth).collect();
        let mut estimator = Estimator::default();
        let mut url = variants[current].url.clone();
        let mut at: Option<Position> = None; // the next media to fetch
        let mut fetched_last: Option<u64> = None; // the newest segment any media came from
        let mut recent: std::collections::VecDeque<(usize, u64, Option<u64>)> =
            std::collections::VecDeque::with_capacity(RECENT);
        let mut init: Option<String> = None;
        let mut backoff = Duration::from_secs(1);
        let mut blocking = false;
        let mut reload = url.clone();
        // Media between the independent part a viewer must start decoding at and its start
        // point: decoded, not shown (hls.js seeks forward to the live sync point).
        let mut seek = 0.0f64;
        let (mut not_shown, mut gaps) = (0.0f64, 0.0f64);
        // After a variant switch: the wall-clock time up to which media is buffered.
        let mut resume: Option<SystemTime> = None;
        // The preload-hinted part fetched while the playlist reload was held.
        let mut hinted: Option<(String, u64, Result<Fetched, String>)> = None;
        // A blocking reload sent together with the preload hint, already answered.
        let mut pending: Option<Result<Fetched, String>> = None;
        'outer: while self.before(until) {
            let kind = if blocking {
                Kind::BlockingReload
            } else {
                Kind::Playlist
            };
            let loaded_at = Instant::now();
            let answer = match pending.take() {
                Some(answer) => answer,
                None => self.get(&reload, kind, None, false).await,
            };
            let text = match answer {
                Ok(f) => f.body,
                Err(_) => {
                    clock.advance(Instant::now(), &mut stats);
                    self.sleep_until(Instant::now() + backoff, until).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    reload = url.clone();
                    blocking = false;
                    hinted = None;
                    continue;
                }
            };
            backoff = Duration::from_secs(1);
            let Ok(playlist) = MediaPlaylist::parse(&String::from_utf8_lossy(&text)) else {
                self.out.recorder.send(Event::Request(Request {
                    viewer: self.id,
                    kind,
                    url: reload.clone(),
                    sent_ms: self.out.recorder.since_start_ms(loaded_at),
                    first_ms: None,
                    last_ms: None,
                    status: 200,
                    bytes: 0,
                    error: Some("bad_playlist".into()),
                    replica: None,
                    hinted: false,
                }));
                self.out.live.errors.inc();
                self.sleep_until(Instant::now() + backoff, until).await;
                reload = url.clone();
                blocking = false;
                continue;
            };
            // Parts when the playlist offers them and blocking reloads to wait for the next.
            let control = playlist.server_control.clone().unwrap_or_default();
            let can_block = control.can_block_reload && plan.low_latency;
            let parts = can_block && playlist.part_target.is_some();
            let from = match at {
                Some(at) => at,
                None => {
                    let (start, skip) = resume
                        .take()
                        .and_then(|t| position_at(&playlist, parts, t))
                        .unwrap_or_else(|| start_position(&playlist, parts));
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
            let mut unfetched = units.iter().map(|u| u.duration).sum::<f64>();
            for unit in units {
                clock.advance(Instant::now(), &mut stats);
                if clock.buffer() > MAX_BUFFER_SECS || !self.before(until) {
                    break;
                }
                if let Some(map) = unit
                    .map
                    .as_ref()
                    .filter(|m| init.as_deref() != Some(m.as_str()))
                {
                    if self
                        .get(&resolve(&url, map), Kind::Init, None, false)
                        .await
                        .is_ok()
                    {
                        init = Some(map.clone());
                    }
                }
                // The test seam fetches each unit a second time; every fetch goes through the
                // same bookkeeping, so the honesty checks see what a buggy viewer would do.
                let times = if plan.download_twice { 2 } else { 1 };
                for _ in 0..(if unit.gap { 0 } else { times }) {
                    let Some(fetched) = self.media(&url, &unit, &mut hinted).await else {
                        break;
                    };
                    let key = (current, unit.msn, unit.part);
                    if recent.contains(&key) {
                        stats.duplicate_downloads += 1;
                    }
                    if recent.len() == RECENT {
                        recent.pop_front();
                    }
                    recent.push_back(key);
                    if !stats.started {
                        stats.started = true;
                        self.out
                            .recorder
                            .send(Event::Startup(joined.elapsed().as_secs_f64() * 1000.0));
                    }
                    stats.media_downloaded_secs += unit.duration;
                    stats.media_bytes += fetched.len;
                    stats.declared_bits += variants[current].bandwidth as f64 * unit.duration;
                    estimator.sample(fetched.last.as_secs_f64(), fetched.len);
                }
                if !unit.gap && recent.back() != Some(&(current, unit.msn, unit.part)) {
                    break; // the fetch failed: try again after the next reload
                }
                unfetched -= unit.duration;
                let skipped = seek.min(unit.duration);
                seek -= skipped;
                not_shown += skipped;
                if unit.gap {
                    gaps += unit.duration;
                }
                clock.add(
                    unit.duration - skipped,
                    Instant::now(),
                    &mut stats,
                    &self.out,
                );
                let buffered_until = unit.pdt.map(|t| t + Duration::from_secs_f64(unit.duration));
                // Media skipped on the way to the start point is never at the playhead.
                if let Some(end) = buffered_until.filter(|_| skipped == 0.0) {
                    // The playhead is `buffer` seconds behind the end of this media.
                    let playhead = end
                        .checked_sub(Duration::from_secs_f64(clock.buffer()))
                        .unwrap_or(end);
                    if let Ok(behind) = SystemTime::now().duration_since(playhead) {
                        self.out.recorder.send(Event::Latency {
                            latency: behind.as_secs_f64(),
                            edge: clock.buffer() + unfetched,
                        });
                    }
                }
                fetched_last = Some(unit.msn);
                at = Some(unit.next);
                changed = true;
                // hls.js switches variants between segments.
                if plan.variant == VariantChoice::Abr && unit.next.part == 0 {
                    let next = abr::choose(&bandwidths, current, estimator.estimate());
                    if next != current {
                        if next > current {
                            stats.switches_up += 1;
                        } else {
                            stats.switches_down += 1;
                        }
                        self.out.recorder.send(Event::Switch);
                        current = next;
                        url = variants[current].url.clone();
                        reload = url.clone();
                        resume = buffered_until;
                        (at, fetched_last, init, hinted, pending) = (None, None, None, None, None);
                        blocking = false;
                        continue 'outer;
                    }
                }
            }
            hinted = None;
            let next = at.unwrap_or(from);
            if playlist.ended && next.msn >= end_of_list(&playlist) {
                break;
            }
            clock.advance(Instant::now(), &mut stats);
            if parts {
                let target = control
                    .part_hold_back
                    .unwrap_or(3.0 * playlist.part_target.unwrap_or(1.0));
                clock.catch_up(
                    clock.buffer() + unfetched.max(0.0),
                    target,
                    playlist.target_duration as f64,
                    plan.max_live_sync_rate,
                );
            }
            // Live refresh: a blocking reload for what comes next when the server offers them,
            // asking for a delta update when it can skip; else RFC 8216 §6.3.4: the target
            // duration after a change, half of it after none.
            blocking = can_block;
            if blocking {
                let mut query = if parts {
                    format!("_HLS_msn={}&_HLS_part={}", next.msn, next.part)
                } else {
                    format!("_HLS_msn={}", next.msn)
                };
                if control.can_skip_until.is_some() {
                    query.push_str("&_HLS_skip=YES");
                }
                reload = with_query(&url, &query);
                // The preload-hinted part is asked for at once, while the reload is held, as
                // hls.js does: it arrives as soon as the server has it.
                let hint = playlist
                    .preload_hint
                    .as_ref()
                    .filter(|_| parts && clock.buffer() <= MAX_BUFFER_SECS)
                    .and_then(|h| Some((h.uri.clone(), h.byterange_start?)));
                if let Some((uri, start)) = hint {
                    let hint_url = resolve(&url, &uri);
                    let hint_get = self.get(&hint_url, Kind::Part, Some((start, None)), true);
                    let reload_get = self.get(&reload, Kind::BlockingReload, None, false);
                    let (part, answer) = tokio::join!(hint_get, reload_get);
                    hinted = Some((uri, start, part));
                    // The reload already went out: its answer is read next time round.
                    pending = Some(answer);
                }
            } else {
                reload = url.clone();
                let wait = Duration::from_secs(playlist.target_duration.max(1));
                let wait = if changed { wait } else { wait / 2 };
                self.sleep_until(loaded_at + wait, until).await;
            }
        }
        let end = Instant::now().min(until);
        clock.advance(end, &mut stats);
        clock.finish(end, &mut stats, &self.out);
        // What the playback clock says became of the media: the honesty check compares it
        // with what was downloaded.
        stats.media_accounted_secs = stats.played_media_secs + clock.buffer() + not_shown - gaps;
        stats
    }

    /// Fetches one media unit: a whole segment, or a part as a byte range of its segment (or
    /// its own file). Uses the preload-hinted fetch when it is this part.
    async fn media(
        &self,
        url: &str,
        unit: &Unit,
        hinted: &mut Option<(String, u64, Result<Fetched, String>)>,
    ) -> Option<Fetched> {
        let range = unit.range.map(|r: ByteRange| (r.offset, Some(r.end() - 1)));
        let is_hint = hinted.as_ref().is_some_and(|(uri, start, _)| {
            *uri == unit.uri && Some(*start) == unit.range.map(|r| r.offset)
        });
        if is_hint {
            if let Some((_, _, Ok(f))) = hinted.take() {
                if unit.range.is_none_or(|r| r.length == f.len) {
                    return Some(f);
                }
            }
        }
        let kind = if unit.part.is_some() {
            Kind::Part
        } else {
            Kind::Segment
        };
        self.get(&resolve(url, &unit.uri), kind, range, false)
            .await
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outlet() -> (Outlet, tokio::sync::mpsc::UnboundedReceiver<Event>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let out = Outlet {
            live: Arc::new(Live::default()),
            recorder: Recorder::new(tx, Instant::now()),
            stop: CancellationToken::new(),
        };
        (out, rx)
    }

    #[test]
    fn the_clock_stalls_when_the_buffer_runs_dry_and_resumes_with_media() {
        let (out, mut rx) = outlet();
        let mut stats = ViewerStats::default();
        let t0 = Instant::now();
        let mut clock = Clock::new(t0);
        clock.add(2.0, t0, &mut stats, &out);
        clock.advance(t0 + Duration::from_secs(1), &mut stats);
        assert_eq!(stats.stalls, 0);
        clock.advance(t0 + Duration::from_secs(3), &mut stats);
        clock.add(2.0, t0 + Duration::from_secs(4), &mut stats, &out);
        assert_eq!(stats.stalls, 1, "dry at 2 s, playing again at 4 s");
        assert!(
            (stats.stalled_secs - 2.0).abs() < 1e-6,
            "{}",
            stats.stalled_secs
        );
        assert!(matches!(rx.try_recv(), Ok(Event::Stall)));
        assert!((stats.played_secs - 2.0).abs() < 1e-6);
        clock.advance(t0 + Duration::from_secs(5), &mut stats);
        assert!((stats.played_secs - 3.0).abs() < 1e-6);
        // Media 100 ms late is a short wait, not a stall.
        clock.advance(t0 + Duration::from_millis(6100), &mut stats);
        clock.add(1.0, t0 + Duration::from_millis(6200), &mut stats, &out);
        assert_eq!((stats.stalls, stats.short_waits), (1, 1));
        assert!(
            (stats.short_wait_secs - 0.2).abs() < 1e-6,
            "{}",
            stats.short_wait_secs
        );
    }

    #[test]
    fn catching_up_plays_faster_only_near_the_target_and_with_buffer() {
        let (out, _rx) = outlet();
        let mut stats = ViewerStats::default();
        let t0 = Instant::now();
        let mut clock = Clock::new(t0);
        clock.add(4.0, t0, &mut stats, &out);
        // Off by default (hls.js maxLiveSyncPlaybackRate 1).
        clock.catch_up(4.0, 1.5, 2.0, 1.0);
        assert_eq!(clock.rate, 1.0);
        // 2.5 s behind a 1.5 s target: 2 / (1 + e^-1.875) = 1.73, capped at 1.5.
        clock.catch_up(4.0, 1.5, 2.0, 1.5);
        assert_eq!(clock.rate, 1.5);
        clock.advance(t0 + Duration::from_secs(2), &mut stats);
        assert!((stats.played_media_secs - 3.0).abs() < 1e-6);
        assert!((stats.played_secs - 2.0).abs() < 1e-6);
        // Far behind (DVR range) or with little buffer: normal speed.
        clock.catch_up(10.0, 1.5, 2.0, 1.5);
        assert_eq!(clock.rate, 1.0);
    }
}
