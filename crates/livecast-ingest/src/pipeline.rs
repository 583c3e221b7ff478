//! One publish: segmenter in, HLS files out.
//!
//! Media is written before the playlist that names it (see `files`), so a front-end never
//! reads a playlist naming bytes that are not there yet. Without parts, a segment is written
//! whole and renamed into place. With LL-HLS parts, a segment is one file that each part is
//! appended to, and the playlist lists a part as a byte range of it (EXT-X-PART BYTERANGE,
//! with a BYTERANGE-START preload hint for the next one): a part costs one write, not a file.
//! File names carry a per-session prefix so a restarted publish never reuses a name that a
//! cache may still hold: `<session>-init.mp4` and segments `<session>-<msn>.<ext>`. The
//! playlist is first written when the first segment is complete (its length fixes the target
//! duration); after that it is rewritten at every part. A segment that slid out of the
//! playlist is deleted only once it has been out for its own duration plus the playlist's
//! (RFC 8216 §6.2.2); parts are dropped from the playlist three target durations behind the
//! live edge.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use livecast_media::playlist::{offset_time, MediaPlaylist, PLAYLIST_NAME as PLAYLIST};
use livecast_media::segmenter::{Container, Cut, Segmenter};

use crate::files::{remove_quietly, StreamDir};
use crate::playlist::{LivePlaylist, Settings};
use crate::renditions::{BitRates, Facts};
use crate::shared::Shared;

/// An FLV tag body with its RTMP timestamp (milliseconds).
#[derive(Debug)]
pub(crate) enum MediaMessage {
    Video(u32, Bytes),
    Audio(u32, Bytes),
}

pub(crate) struct Pipeline {
    stream: String,
    /// This publish's number (see `Shared::latest`).
    publish: u64,
    /// The stream's directory on the volume.
    dir: PathBuf,
    shared: Arc<Shared>,
    container: Container,
    /// Part target in seconds; `None` writes plain HLS.
    part_target: Option<f64>,
    segmenter: Segmenter,
    /// What the playlist becomes and which files it let go of.
    playlist: LivePlaylist,
    /// The init segment's name once written (fMP4).
    init: Option<String>,
    /// Wall-clock anchor: (first media timestamp, when it arrived), for PROGRAM-DATE-TIME.
    anchor: Option<(i64, SystemTime)>,
    /// The stream directory's files. They are written on the stream's own task, as nginx
    /// does: a part or a playlist is a page-cache write of tens of kilobytes, and handing each
    /// to the blocking pool cost more in thread wake-ups than the write itself.
    files: StreamDir,
    /// Whether the directory is there and media is taken.
    open: bool,
    /// A write for the segment being built failed: it is listed as a gap, without parts.
    segment_broken: bool,
    writes: WriteErrors,
    errors_logged: u32,
    jumps_seen: u64,
    /// When this publish began (ms since the epoch), for `livecast_media::publish`.
    started_unix_ms: u64,
    publisher: std::net::SocketAddr,
    /// The stream this publish is a rendition of, if it is one (see `renditions`).
    rendition: Option<Rendition>,
}

/// A publish that is one rendition of a stream.
struct Rendition {
    /// The stream's name (`talk` for `talk@720p`).
    stream: String,
    /// The rendition's name; "" for the stream's own publish under a server-side ladder.
    name: String,
    /// Its first segment's number has been taken from the group.
    aligned: bool,
    /// Frames are held back until a keyframe whose segment number is free (see
    /// [`Pipeline::holds_back`]).
    holding: bool,
    /// Bytes of the segment being built.
    segment_bytes: u64,
    rates: BitRates,
}

impl Pipeline {
    pub fn new(stream: String, shared: Arc<Shared>, publisher: std::net::SocketAddr) -> Self {
        let dir = shared.config.hls.hls_dir.join(&stream);
        let target_ms = (shared.config.hls.segment_secs * 1000.0).round() as u32;
        let container = Container::from(shared.config.hls.container);
        let part_ms = shared.config.hls.part_ms;
        let mut segmenter = Segmenter::new(container, target_ms, part_ms);
        // A segment's file is its parts appended; its bytes are not needed a second time.
        segmenter.omit_segment_data();
        let rendition = match livecast_media::publish::split_rendition(&stream) {
            Some((name, Some(rendition))) => Some((name, rendition)),
            Some((name, None)) if shared.config.ladder.enabled() => Some((name, "")),
            _ => None,
        }
        .map(|(name, rendition)| {
            segmenter.align_to_clock();
            Rendition {
                stream: name.to_string(),
                name: rendition.to_string(),
                aligned: false,
                holding: true,
                segment_bytes: 0,
                rates: BitRates::new(shared.config.hls.window, i64::from(target_ms)),
            }
        });
        // Milliseconds since the epoch, in base 36: short, unique per session, sortable.
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let writes = WriteErrors {
            stream: stream.clone(),
            metrics: shared.metrics.clone(),
            failing: false,
        };
        let publish = shared.next_publish.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut latest) = shared.latest.lock() {
            latest.insert(stream.clone(), publish);
        }
        let part_target = (part_ms > 0).then(|| f64::from(part_ms) / 1000.0);
        let settings = Settings {
            segment_secs: shared.config.hls.segment_secs,
            window: shared.config.hls.window,
            record: shared.config.hls.record,
            ends_at_once: shared.config.hls.reconnect_grace_secs == 0,
        };
        Self {
            stream,
            publish,
            files: StreamDir::new(dir.clone()),
            dir,
            playlist: LivePlaylist::new(
                settings,
                base36(millis),
                container.extension(),
                part_target,
            ),
            shared,
            container,
            part_target,
            segmenter,
            init: None,
            anchor: None,
            open: false,
            segment_broken: false,
            writes,
            errors_logged: 0,
            jumps_seen: 0,
            started_unix_ms: u64::try_from(millis).unwrap_or(u64::MAX),
            publisher,
            rendition,
        }
    }

    /// Creates the stream's directory and picks up what an earlier publish of the name left
    /// there. Without a directory the publish goes on, and its media is dropped.
    pub async fn open(&mut self) {
        self.shared.metrics.streams_active.inc();
        match tokio::fs::create_dir_all(&self.dir).await {
            Ok(()) => {
                self.resume().await;
                self.open = true;
            }
            Err(error) => {
                tracing::error!(%error, dir = %self.dir.display(), "cannot create stream directory");
            }
        }
    }

    /// Takes one media message: whatever it completes is written before this returns.
    pub fn push(&mut self, message: MediaMessage) {
        if !self.open || self.holds_back(&message) {
            return;
        }
        let (ts, result) = match &message {
            MediaMessage::Video(ts, body) => (*ts, self.segmenter.push_video(*ts, body)),
            MediaMessage::Audio(ts, body) => (*ts, self.segmenter.push_audio(*ts, body)),
        };
        if self.anchor.is_none() {
            self.anchor = Some((i64::from(ts), SystemTime::now()));
        }
        if self.segmenter.jumps() > self.jumps_seen {
            self.jumps_seen = self.segmenter.jumps();
            tracing::warn!(
                rtmp_timestamp = ts,
                "publisher timestamps jumped; the stream continues one frame later"
            );
        }
        match result {
            Ok(Some(cut)) => self.publish(cut, false),
            Ok(None) => {}
            Err(error) => self.media_error(&error),
        }
    }

    /// The publish is over: the last segment is written, the name is free again and retired
    /// files are deleted when their time is up. The playlist waits for a publisher to come
    /// back and gets ENDLIST only if none does within the grace (see `ending`).
    pub fn close(mut self) {
        if self.open {
            match self.segmenter.finish() {
                Some(cut) => self.publish(cut, true),
                None => self.end_playlist(),
            }
        }
        self.shared.metrics.streams_active.dec();
        if let Ok(mut live) = self.shared.live.lock() {
            live.remove(&self.stream);
        }
        let grace = Duration::from_secs(self.shared.config.hls.reconnect_grace_secs);
        // Also when this publish wrote no playlist of its own: one it meant to continue may be
        // waiting on the volume.
        if self.open {
            if !grace.is_zero() {
                tracing::info!(
                    grace_secs = grace.as_secs(),
                    "publish stopped; the stream waits for its publisher"
                );
            }
            crate::ending::schedule(
                self.shared.clone(),
                self.stream.clone(),
                self.publish,
                grace,
            );
        }
        self.schedule_final_cleanup();
    }

    /// Picks up what an earlier publish of this name left on the volume (a reconnect, or a
    /// restart of the ingest): its playlist is continued after an EXT-X-DISCONTINUITY with the
    /// next media sequence number, and media files it no longer lists are retired.
    async fn resume(&mut self) {
        let text = match tokio::fs::read_to_string(self.dir.join(PLAYLIST)).await {
            Ok(text) => Some(text),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => {
                tracing::warn!(%error, "cannot read the previous playlist; starting a new one");
                None
            }
        };
        let previous = text.and_then(|text| match MediaPlaylist::parse(&text) {
            Ok(mut playlist) => {
                playlist.ended = false;
                playlist.pending_parts.clear();
                playlist.preload_hint = None;
                Some(playlist)
            }
            Err(error) => {
                tracing::warn!(%error, "previous playlist unreadable; starting a new one");
                None
            }
        });
        let mut listed = std::collections::HashSet::new();
        if let Some(previous) = &previous {
            tracing::info!(
                media_sequence = previous.next_sequence(),
                "continuing the stream's playlist after a discontinuity"
            );
            for segment in &previous.segments {
                listed.insert(segment.uri.clone());
                listed.extend(segment.map.iter().cloned());
                listed.extend(segment.parts.iter().map(|p| p.uri.clone()));
            }
        }
        // Whatever else is there (retired files of a process that stopped, temp files of an
        // interrupted write) is deleted once the old playlist could no longer name it.
        let hold = Duration::from_secs_f64(
            previous
                .as_ref()
                .map_or(0.0, MediaPlaylist::duration)
                .max(self.shared.config.hls.segment_secs * self.shared.config.hls.window as f64),
        );
        if let Ok(mut entries) = tokio::fs::read_dir(&self.dir).await {
            let due = Instant::now() + hold;
            while let Ok(Some(entry)) = entries.next_entry().await {
                let name = entry.file_name().to_string_lossy().into_owned();
                let media = [".ts", ".m4s", ".mp4", ".tmp"]
                    .iter()
                    .any(|ext| name.ends_with(ext));
                if media && !listed.contains(&name) {
                    self.playlist.retire_at(due, name);
                }
            }
        }
        if let Some(previous) = previous {
            self.playlist.continue_from(previous);
        }
        self.files.adopt_free_files();
    }

    fn media_error(&mut self, error: &livecast_media::MediaError) {
        self.shared.metrics.media_errors.inc();
        // A broken encoder can send thousands of bad frames; log the first few only.
        if self.errors_logged < 5 {
            self.errors_logged += 1;
            tracing::warn!(%error, "media message dropped");
        }
    }

    /// Writes what a cut produced: the init segment if it is new, the part (LL-HLS: appended
    /// to its segment's file), the segment when it is complete (without parts), then the
    /// playlist, then the files whose time is up.
    fn publish(&mut self, cut: Cut, last: bool) {
        self.align_first_segment(&cut);
        if self.init.is_none() {
            if let Some(init) = self.segmenter.init_segment() {
                let name = self.playlist.init_name();
                let written = self.files.write(&name, init);
                if self.writes.check(written, "init segment").is_some() {
                    self.playlist.set_map(&name);
                    self.init = Some(name);
                }
            }
            // Media without its init segment cannot be decoded.
            if self.container == Container::Fmp4 && self.init.is_none() {
                self.break_segment();
            }
        }
        let segment_name = self.playlist.segment_name();
        if self.part_target.is_some() && !self.segment_broken {
            let appended = self.files.append(&segment_name, &cut.part.data);
            match self.writes.check(appended, "part") {
                Some(offset) => {
                    let part = &cut.part;
                    let length = part.data.len() as u64;
                    self.playlist
                        .add_part(part.duration_ms, part.independent, length, offset);
                    self.shared.metrics.parts_written.inc();
                    if let Some(rendition) = self.rendition.as_mut() {
                        rendition.segment_bytes += length;
                    }
                }
                None => self.break_segment(),
            }
        }
        if let Some(segment) = cut.segment {
            self.write_publish_info();
            let program_date_time = self
                .anchor
                .map(|(first_ms, wall)| offset_time(wall, segment.start_ms - first_ms));
            // Written before it is listed: the playlist that names it is written below.
            let written = if self.segment_broken {
                // Not a byte more of it, and not its parts' leftovers, is worth keeping.
                self.files.abandon_segment();
                None
            } else if self.part_target.is_some() {
                self.writes.check(self.files.end_segment(), "segment")
            } else {
                self.writes
                    .check(self.files.write(&segment_name, &segment.data), "segment")
            };
            let gap = written.is_none();
            if gap {
                self.shared.metrics.gap_segments.inc();
            } else {
                self.shared.metrics.segments_written.inc();
            }
            if let Some(rendition) = self.rendition.as_mut() {
                let bytes = if self.part_target.is_some() {
                    rendition.segment_bytes
                } else {
                    segment.data.len() as u64
                };
                if !gap {
                    rendition.rates.add(bytes, segment.duration_ms);
                }
                rendition.segment_bytes = 0;
            }
            self.playlist.complete_segment(
                &mut self.segmenter,
                self.init.clone(),
                segment.duration_ms,
                program_date_time,
                gap,
            );
            self.segment_broken = false;
            self.record_segment_start();
        }
        if let Some(text) = self.playlist.render(last, self.segment_broken) {
            let written = self.files.write_playlist(text.as_bytes());
            self.writes.check_playlist(written, "playlist");
        }
        self.report_rendition();
        for name in self.playlist.retire(Instant::now()) {
            self.files.retire(&self.dir.join(name));
        }
    }

    /// A rendition that comes back (a restarted transcoder, a reconnecting encoder) may rejoin
    /// inside the segment it was cut off in, whose number its playlist has used already: it
    /// starts with the first keyframe of a segment whose number is still free, so its numbers
    /// stay those of its group. Until then its frames are dropped (sequence headers are kept).
    fn holds_back(&mut self, message: &MediaMessage) -> bool {
        let Some(rendition) = self.rendition.as_ref().filter(|r| r.holding) else {
            return false;
        };
        let keyframe_pts = match message {
            MediaMessage::Video(ts, body) => match livecast_media::flv::parse_video(body) {
                Ok(livecast_media::flv::VideoTag::Frame {
                    keyframe: true,
                    composition_ms,
                    ..
                }) => Some(i64::from(*ts) + i64::from(composition_ms)),
                Ok(livecast_media::flv::VideoTag::Frame { .. }) => return true,
                _ => return false,
            },
            MediaMessage::Audio(_, body) => {
                return !matches!(
                    livecast_media::flv::parse_audio(body),
                    Ok(livecast_media::flv::AudioTag::AacSequenceHeader(_)) | Err(_)
                );
            }
        };
        let Some(pts) = keyframe_pts else {
            return true;
        };
        let taken = self
            .shared
            .renditions
            .sequence_for(&rendition.stream, &rendition.name, pts)
            .is_some_and(|sequence| sequence < self.playlist.sequence());
        if let Some(rendition) = self.rendition.as_mut().filter(|_| !taken) {
            rendition.holding = false;
        }
        taken
    }

    /// A rendition's first cut: its first segment takes the number the group gave the segment
    /// starting in the same clock slot (see `renditions`), and its start is recorded.
    fn align_first_segment(&mut self, cut: &Cut) {
        let Some(rendition) = self.rendition.as_ref().filter(|r| !r.aligned) else {
            return;
        };
        let pts = cut
            .segment
            .as_ref()
            .map(|s| s.start_pts_ms)
            .or_else(|| self.segmenter.segment_start_pts_ms());
        let Some(pts) = pts else {
            return;
        };
        let renditions = &self.shared.renditions;
        if let Some(sequence) = renditions.sequence_for(&rendition.stream, &rendition.name, pts) {
            self.playlist.align_sequence(sequence);
            if self.playlist.sequence() != sequence {
                tracing::warn!(
                    sequence = self.playlist.sequence(),
                    group_sequence = sequence,
                    "this rendition's segment numbers are ahead of its stream's other renditions"
                );
            }
        }
        renditions.segment_started(&rendition.stream, pts, self.playlist.sequence());
        if let Some(rendition) = self.rendition.as_mut() {
            rendition.aligned = true;
        }
    }

    /// A rendition's next segment started: the group learns its slot and number.
    fn record_segment_start(&mut self) {
        let (Some(rendition), Some(pts)) = (
            self.rendition.as_ref(),
            self.segmenter.segment_start_pts_ms(),
        ) else {
            return;
        };
        self.shared
            .renditions
            .segment_started(&rendition.stream, pts, self.playlist.sequence());
    }

    /// Tells the group where this rendition stands and what it carries (the master playlist
    /// follows), and takes the other renditions' reports for the next playlist update.
    fn report_rendition(&mut self) {
        let Some(rendition) = self.rendition.as_ref() else {
            return;
        };
        let info = self.segmenter.info();
        let (bandwidth, average) = rendition.rates.rates().unwrap_or((0, 0));
        let facts = Facts {
            variant: livecast_media::master::Variant {
                uri: String::new(),
                bandwidth,
                average_bandwidth: (average > 0).then_some(average),
                codecs: info.codecs,
                resolution: (info.width > 0).then_some((info.width, info.height)),
                frame_rate: info.frame_rate,
            },
            position: self.playlist.position(),
        };
        let reports = self
            .shared
            .renditions
            .update(&rendition.stream, &rendition.name, facts);
        if let Some(reports) = self.writes.check_playlist(reports, "master playlist") {
            // Rendition reports are an LL-HLS tag; a playlist without parts has no use for them.
            if self.part_target.is_some() {
                self.playlist.set_reports(reports);
            }
        }
    }

    /// Leaves what the publish carries (codecs, size, frame rate, keyframe interval) beside
    /// the playlist for operators; refreshed with every segment. Not media: a failure here is
    /// logged once with the other write errors and does not touch the stream.
    fn write_publish_info(&mut self) {
        let mut info = livecast_media::publish::PublishInfo::new(
            self.started_unix_ms,
            (self.shared.config.hls.segment_secs * 1000.0).round() as u64,
            &self.segmenter.info(),
        );
        info.publisher = Some(self.publisher.to_string());
        if let Some((peak, average)) = self.rendition.as_ref().and_then(|r| r.rates.rates()) {
            info.bandwidth = Some(peak);
            info.average_bandwidth = Some(average);
        }
        let written = self.files.write_hidden(
            livecast_media::publish::PUBLISH_INFO_NAME,
            info.render().as_bytes(),
        );
        self.writes.check_playlist(written, "publish info");
    }

    /// The segment being built lost media: it will be listed as a gap, and the parts of it
    /// listed so far are taken back (a player that fetched them already has their media; the
    /// file keeps them for one that is about to).
    fn break_segment(&mut self) {
        self.segment_broken = true;
        self.files.cut_back_segment();
        self.playlist.drop_parts();
    }

    fn end_playlist(&mut self) {
        if let Some(text) = self.playlist.render_end() {
            let written = self.files.write_playlist(text.as_bytes());
            self.writes.check_playlist(written, "final playlist");
        }
    }

    /// Segments that left the window shortly before the end still have viewers; delete them when
    /// their time is up rather than at once.
    fn schedule_final_cleanup(&mut self) {
        let mut retired: Vec<_> = self
            .playlist
            .take_retired()
            .into_iter()
            .map(|(due, name)| (due, self.dir.join(name)))
            .collect();
        self.files.delete_free_files();
        if retired.is_empty() {
            return;
        }
        retired.sort_by_key(|(due, _)| *due);
        tokio::spawn(async move {
            for (due, path) in retired {
                tokio::time::sleep_until(due.into()).await;
                let _ = tokio::task::spawn_blocking(move || remove_quietly(&path)).await;
            }
        });
    }
}

/// Failed writes of one stream's files: counted, and logged once per run of them.
struct WriteErrors {
    stream: String,
    metrics: crate::metrics::Metrics,
    /// Writes are failing (logged once until one succeeds again).
    failing: bool,
}

impl WriteErrors {
    /// Counts a failed write and logs the first of a run of them, and the end of the run (the
    /// stream goes on; what the write held is listed as a gap, never as media). Only a media
    /// write ends a run: a playlist update can succeed on a full volume, in blocks its file
    /// already has.
    fn check<T>(&mut self, result: std::io::Result<T>, what: &str) -> Option<T> {
        self.count(result, what, true)
    }

    /// [`WriteErrors::check`] for a playlist update, which does not end a run of failures.
    fn check_playlist<T>(&mut self, result: std::io::Result<T>, what: &str) -> Option<T> {
        self.count(result, what, false)
    }

    fn count<T>(&mut self, result: std::io::Result<T>, what: &str, media: bool) -> Option<T> {
        let metrics = &self.metrics;
        match result {
            Ok(value) => {
                if self.failing && media {
                    self.failing = false;
                    metrics.volume_full.set(0);
                    tracing::info!(stream = %self.stream, "stream files are written again");
                }
                Some(value)
            }
            Err(error) => {
                let no_space = error.raw_os_error()
                    == Some(rustix::io::Errno::NOSPC.raw_os_error())
                    || error.kind() == std::io::ErrorKind::StorageFull;
                let kind = if no_space { "no_space" } else { "other" };
                metrics.write_errors.with_label_values(&[kind]).inc();
                if no_space {
                    metrics.volume_full.set(1);
                }
                if !self.failing {
                    self.failing = true;
                    if no_space {
                        tracing::error!(%error, what, stream = %self.stream, "the HLS volume is full: segments are listed as gaps until space returns");
                    } else {
                        tracing::error!(%error, what, stream = %self.stream, "cannot write stream file: segments are listed as gaps until writes succeed");
                    }
                }
                None
            }
        }
    }
}

fn base36(mut n: u128) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base36_names() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
    }
}
