//! One publish: segmenter in, HLS files out.
//!
//! Files are written whole and renamed into place (see `files`), media first and playlist
//! second, so a front-end never reads a partial file nor a playlist naming a file that is not
//! there yet.
//! File names carry a per-session prefix so a restarted publish never reuses a name that a
//! cache may still hold: `<session>-init.mp4`, segments `<session>-<msn>.<ext>` and LL-HLS parts
//! `<session>-<msn>.<part>.<ext>`. The playlist is first written when the first segment is
//! complete (its length fixes the target duration); after that it is rewritten at every part,
//! with a preload hint naming the next part. A segment that slid out of the playlist is deleted
//! only once it has been out for its own duration plus the playlist's (RFC 8216 §6.2.2); parts
//! are dropped from the playlist three target durations behind the live edge and deleted a
//! playlist's duration later.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use livecast_media::playlist::{
    offset_time, MediaPlaylist, Part as PlaylistPart, PlaylistSegment, ServerControl,
    PLAYLIST_NAME as PLAYLIST,
};
use livecast_media::segmenter::{Container, Cut, Segmenter};
use tokio::sync::mpsc;

use crate::files::{remove_quietly, StreamDir};
use crate::server::Shared;

/// An FLV tag body with its RTMP timestamp (milliseconds).
#[derive(Debug)]
pub(crate) enum MediaMessage {
    Video(u32, Bytes),
    Audio(u32, Bytes),
}

/// Media sequence number of a new stream's first segment. Not 0: hls.js (1.6) takes a
/// playlist whose last segment is number 0 for one without segments and then polls instead of
/// sending blocking reloads, which costs a new viewer several seconds of latency.
const FIRST_SEQUENCE: u64 = 1;

pub(crate) struct Pipeline {
    stream: String,
    dir: PathBuf,
    session: String,
    shared: Arc<Shared>,
    container: Container,
    /// Part target in seconds; `None` writes plain HLS.
    part_target: Option<f64>,
    segmenter: Segmenter,
    playlist: Option<MediaPlaylist>,
    /// Media sequence number of the segment being built.
    sequence: u64,
    /// Parts of the segment being built.
    parts: Vec<PlaylistPart>,
    /// The init segment's name once written (fMP4).
    init: Option<String>,
    /// The playlist found on the volume when the publish started, continued by this one.
    previous: Option<MediaPlaylist>,
    /// Wall-clock anchor: (first media timestamp, when it arrived), for PROGRAM-DATE-TIME.
    anchor: Option<(i64, SystemTime)>,
    /// Files out of the playlist, with the time after which they may be deleted.
    retired: VecDeque<(Instant, PathBuf)>,
    /// The stream directory's files; lent to the blocking pool while a cut is written.
    files: Option<StreamDir>,
    errors_logged: u32,
    jumps_seen: u64,
}

impl Pipeline {
    pub fn new(stream: String, shared: Arc<Shared>) -> Self {
        let dir = shared.config.hls_dir.join(&stream);
        let target_ms = (shared.config.segment_secs * 1000.0).round() as u32;
        let container = Container::from(shared.config.container);
        let part_ms = shared.config.part_ms;
        // Milliseconds since the epoch, in base 36: short, unique per session, sortable.
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        Self {
            stream,
            files: Some(StreamDir::new(dir.clone())),
            dir,
            session: base36(millis),
            shared,
            container,
            part_target: (part_ms > 0).then(|| f64::from(part_ms) / 1000.0),
            segmenter: Segmenter::new(container, target_ms, part_ms),
            playlist: None,
            sequence: FIRST_SEQUENCE,
            parts: Vec::new(),
            init: None,
            previous: None,
            anchor: None,
            retired: VecDeque::new(),
            errors_logged: 0,
            jumps_seen: 0,
        }
    }

    pub async fn run(mut self, mut media: mpsc::Receiver<MediaMessage>) {
        self.shared.metrics.streams_active.inc();
        if let Err(error) = tokio::fs::create_dir_all(&self.dir).await {
            tracing::error!(%error, dir = %self.dir.display(), "cannot create stream directory");
        } else {
            self.resume().await;
            while let Some(message) = media.recv().await {
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
                    Ok(Some(cut)) => self.publish(cut, false).await,
                    Ok(None) => {}
                    Err(error) => self.media_error(&error),
                }
            }
            match self.segmenter.finish() {
                Some(cut) => self.publish(cut, true).await,
                None => self.end_playlist().await,
            }
        }
        self.shared.metrics.streams_active.dec();
        if let Ok(mut live) = self.shared.live.lock() {
            live.remove(&self.stream);
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
            self.sequence = previous.next_sequence();
            tracing::info!(
                media_sequence = self.sequence,
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
                .max(self.shared.config.segment_secs * self.shared.config.window as f64),
        );
        if let Ok(mut entries) = tokio::fs::read_dir(&self.dir).await {
            let due = Instant::now() + hold;
            while let Ok(Some(entry)) = entries.next_entry().await {
                let name = entry.file_name().to_string_lossy().into_owned();
                let media = [".ts", ".m4s", ".mp4", ".tmp"]
                    .iter()
                    .any(|ext| name.ends_with(ext));
                if media && !listed.contains(&name) {
                    self.retired.push_back((due, entry.path()));
                }
            }
        }
        self.previous = previous;
        let _ = self.with_files(StreamDir::adopt_free_files).await;
    }

    fn media_error(&mut self, error: &livecast_media::MediaError) {
        self.shared.metrics.media_errors.inc();
        // A broken encoder can send thousands of bad frames; log the first few only.
        if self.errors_logged < 5 {
            self.errors_logged += 1;
            tracing::warn!(%error, "media message dropped");
        }
    }

    fn name(&self, sequence: u64, part: Option<usize>) -> String {
        let ext = self.container.extension();
        match part {
            Some(part) => format!("{}-{sequence}.{part}.{ext}", self.session),
            None => format!("{}-{sequence}.{ext}", self.session),
        }
    }

    /// Writes what a cut produced: the init segment if it is new, the part (LL-HLS), the
    /// segment when it is complete, then the playlist.
    async fn publish(&mut self, cut: Cut, last: bool) {
        let mut files: Vec<(String, Vec<u8>)> = Vec::with_capacity(3);
        if self.init.is_none() {
            if let Some(init) = self.segmenter.init_segment() {
                let name = format!("{}-init.mp4", self.session);
                files.push((name.clone(), init.to_vec()));
                self.init = Some(name);
            }
        }
        let mut wrote_part = false;
        if self.part_target.is_some() {
            let name = self.name(self.sequence, Some(self.parts.len()));
            self.parts.push(PlaylistPart {
                uri: name.clone(),
                duration: cut.part.duration_ms as f64 / 1000.0,
                independent: cut.part.independent,
            });
            files.push((name, cut.part.data));
            wrote_part = true;
        }
        let mut removed = Vec::new();
        let mut wrote_segment = false;
        if let Some(segment) = cut.segment {
            let name = self.name(self.sequence, None);
            let continued = self.previous.is_some();
            if self.playlist.is_none() {
                let (playlist, dropped) = new_playlist(
                    &self.shared.config,
                    self.part_target,
                    segment.duration_ms,
                    self.init.clone(),
                    self.previous.take(),
                    &mut self.segmenter,
                );
                self.playlist = Some(playlist);
                removed.extend(dropped);
            }
            let Some(playlist) = self.playlist.as_mut() else {
                return;
            };
            let program_date_time = self
                .anchor
                .map(|(first_ms, wall)| offset_time(wall, segment.start_ms - first_ms));
            removed.extend(playlist.push(PlaylistSegment {
                uri: name.clone(),
                duration: segment.duration_ms as f64 / 1000.0,
                program_date_time,
                parts: std::mem::take(&mut self.parts),
                discontinuity: continued,
                ..Default::default()
            }));
            files.push((name, segment.data));
            self.sequence += 1;
            wrote_segment = true;
        }
        let mut old_parts = Vec::new();
        let hint = (!last && self.part_target.is_some())
            .then(|| self.name(self.sequence, Some(self.parts.len())));
        let text = self.playlist.as_mut().map(|playlist| {
            playlist.pending_parts.clone_from(&self.parts);
            old_parts = drop_old_parts(playlist);
            playlist.ended = last;
            playlist.preload_hint = hint;
            playlist.render()
        });
        let hold = Duration::from_secs_f64(self.playlist.as_ref().map_or(0.0, |p| p.duration()));
        let now = Instant::now();
        let expired = self.take_expired(now);
        // One hand-off to the blocking pool per cut: new files, the playlist, then the files
        // whose time is up (after the playlist that no longer names them).
        let written = self
            .with_files(move |dir| {
                for (name, data) in &files {
                    dir.write(name, data)?;
                }
                if let Some(text) = text {
                    dir.write_playlist(text.as_bytes())?;
                }
                for path in &expired {
                    dir.retire(path);
                }
                Ok::<(), std::io::Error>(())
            })
            .await;
        match written {
            Ok(Ok(())) => {
                if wrote_part {
                    self.shared.metrics.parts_written.inc();
                }
                if wrote_segment {
                    self.shared.metrics.segments_written.inc();
                }
            }
            Ok(Err(error)) => tracing::error!(%error, "cannot write segment or playlist"),
            Err(error) => tracing::error!(%error, "segment writer task failed"),
        }
        for old in removed {
            let keep = hold + Duration::from_secs_f64(old.duration);
            self.retired
                .push_back((now + keep, self.dir.join(&old.uri)));
            for part in old.parts {
                self.retired
                    .push_back((now + keep, self.dir.join(part.uri)));
            }
        }
        for part in old_parts {
            self.retired
                .push_back((now + hold, self.dir.join(part.uri)));
        }
    }

    async fn end_playlist(&mut self) {
        let Some(playlist) = self.playlist.as_mut() else {
            return;
        };
        playlist.ended = true;
        playlist.preload_hint = None;
        playlist.pending_parts.clear();
        let text = playlist.render();
        let result = self
            .with_files(move |dir| dir.write_playlist(text.as_bytes()))
            .await;
        if !matches!(result, Ok(Ok(()))) {
            tracing::error!("cannot write final playlist");
        }
    }

    /// Runs `write` on the blocking pool with the stream directory's files.
    async fn with_files<T: Send + 'static>(
        &mut self,
        write: impl FnOnce(&mut StreamDir) -> T + Send + 'static,
    ) -> Result<T, tokio::task::JoinError> {
        let mut files = self
            .files
            .take()
            .unwrap_or_else(|| StreamDir::new(self.dir.clone()));
        let result: Result<_, tokio::task::JoinError> = Ok({
            let result = write(&mut files);
            (files, result)
        });
        result.map(|(files, result)| {
            self.files = Some(files);
            result
        })
    }

    /// Takes the retired files whose time is up out of the queue.
    fn take_expired(&mut self, now: Instant) -> Vec<PathBuf> {
        // Parts and segments are retired with different holds; the queue is not sorted.
        let mut keep = VecDeque::with_capacity(self.retired.len());
        let mut expired = Vec::new();
        for (due, path) in std::mem::take(&mut self.retired) {
            if due <= now {
                expired.push(path);
            } else {
                keep.push_back((due, path));
            }
        }
        self.retired = keep;
        expired
    }

    /// Segments that left the window shortly before the end still have viewers; delete them when
    /// their time is up rather than at once.
    fn schedule_final_cleanup(&mut self) {
        let mut retired: Vec<_> = std::mem::take(&mut self.retired).into();
        if let Some(mut files) = self.files.take() {
            tokio::task::spawn_blocking(move || files.delete_free_files());
        }
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

/// The playlist of a publish, created when its first segment is complete: the target duration
/// is the configured one or that segment's rounded length if longer (or the previous
/// playlist's, which this one continues), and later segments are cut before they could outgrow
/// it. Returns the playlist and the previous playlist's segments it does not continue.
fn new_playlist(
    config: &crate::Config,
    part_target: Option<f64>,
    first_ms: i64,
    init: Option<String>,
    previous: Option<MediaPlaylist>,
    segmenter: &mut Segmenter,
) -> (MediaPlaylist, Vec<PlaylistSegment>) {
    let configured = config.segment_secs.ceil() as u64;
    let first = (first_ms as f64 / 1000.0).round() as u64;
    let target = configured.max(first).max(1);
    let window = if config.record { 0 } else { config.window };
    let mut dropped = Vec::new();
    let mut playlist = match previous {
        // The target duration of a playlist never changes: continue it only if it fits, and
        // only in the same container (a TS segment after an EXT-X-MAP would inherit it).
        Some(mut previous)
            if previous.target_duration >= target && previous.map.is_some() == init.is_some() =>
        {
            previous.window = window;
            previous
        }
        Some(previous) => {
            dropped.extend(previous.segments.iter().cloned());
            // A new playlist that still never reuses a sequence number; the discontinuity
            // sequence moves past every discontinuity the old one had.
            let mut fresh = MediaPlaylist::new(target, window);
            fresh.media_sequence = previous.next_sequence();
            fresh.discontinuity_sequence = previous.discontinuity_sequence
                + previous.segments.iter().filter(|s| s.discontinuity).count() as u64;
            fresh
        }
        None => {
            let mut fresh = MediaPlaylist::new(target, window);
            fresh.media_sequence = FIRST_SEQUENCE;
            fresh
        }
    };
    let target = playlist.target_duration;
    // EXTINF must round to at most the target duration; cut before it can.
    segmenter.set_max_duration((target * 1000 + 400) as u32);
    playlist.event = config.record;
    playlist.map = init;
    if let Some(part) = part_target {
        playlist.part_target = Some(part);
        playlist.server_control = Some(ServerControl {
            can_block_reload: true,
            can_skip_until: Some(6.0 * target as f64),
            part_hold_back: Some(3.0 * part),
            hold_back: None,
        });
    } else {
        playlist.part_target = None;
        playlist.server_control = None;
    }
    (playlist, dropped)
}

/// Keeps EXT-X-PART tags only for segments within three target durations of the live edge
/// (draft-pantos-hls-rfc8216bis §6.2.2); returns the parts dropped from older segments.
fn drop_old_parts(playlist: &mut MediaPlaylist) -> Vec<PlaylistPart> {
    let horizon = 3.0 * playlist.target_duration as f64;
    let mut age: f64 = playlist.pending_parts.iter().map(|p| p.duration).sum();
    let mut dropped = Vec::new();
    for segment in playlist.segments.iter_mut().rev() {
        if age > horizon {
            dropped.append(&mut segment.parts);
        }
        age += segment.duration;
    }
    dropped
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
