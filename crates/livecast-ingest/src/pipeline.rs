//! One publish: segmenter in, HLS files out.
//!
//! Files are written to a temp name and renamed, segment first and playlist second, so a
//! front-end never reads a partial file nor a playlist naming a segment that is not there yet.
//! Segment names carry a per-session prefix so a restarted publish never reuses a name that a
//! cache may still hold. A segment that slid out of the playlist is deleted only once it has
//! been out for its own duration plus the playlist's (RFC 8216 §6.2.2).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use livecast_media::playlist::{
    offset_time, MediaPlaylist, PlaylistSegment, PLAYLIST_NAME as PLAYLIST,
};
use livecast_media::segmenter::{Segment, Segmenter};
use tokio::sync::mpsc;

use crate::server::Shared;

/// An FLV tag body with its RTMP timestamp (milliseconds).
#[derive(Debug)]
pub(crate) enum MediaMessage {
    Video(u32, Bytes),
    Audio(u32, Bytes),
}

pub(crate) struct Pipeline {
    stream: String,
    dir: PathBuf,
    session: String,
    shared: Arc<Shared>,
    segmenter: Segmenter,
    playlist: Option<MediaPlaylist>,
    /// Wall-clock anchor: (first media timestamp, when it arrived), for PROGRAM-DATE-TIME.
    anchor: Option<(i64, SystemTime)>,
    /// Files out of the playlist, with the time after which they may be deleted.
    retired: VecDeque<(Instant, PathBuf)>,
    errors_logged: u32,
}

impl Pipeline {
    pub fn new(stream: String, shared: Arc<Shared>) -> Self {
        let dir = shared.config.hls_dir.join(&stream);
        let target_ms = (shared.config.segment_secs * 1000.0).round() as u32;
        // Milliseconds since the epoch, in base 36: short, unique per session, sortable.
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        Self {
            stream,
            dir,
            session: base36(millis),
            shared,
            segmenter: Segmenter::new(target_ms),
            playlist: None,
            anchor: None,
            retired: VecDeque::new(),
            errors_logged: 0,
        }
    }

    pub async fn run(mut self, mut media: mpsc::Receiver<MediaMessage>) {
        self.shared.metrics.streams_active.inc();
        if let Err(error) = tokio::fs::create_dir_all(&self.dir).await {
            tracing::error!(%error, dir = %self.dir.display(), "cannot create stream directory");
        } else {
            while let Some(message) = media.recv().await {
                let (ts, result) = match &message {
                    MediaMessage::Video(ts, body) => (*ts, self.segmenter.push_video(*ts, body)),
                    MediaMessage::Audio(ts, body) => (*ts, self.segmenter.push_audio(*ts, body)),
                };
                if self.anchor.is_none() {
                    self.anchor = Some((i64::from(ts), SystemTime::now()));
                }
                match result {
                    Ok(Some(segment)) => self.publish(segment, false).await,
                    Ok(None) => {}
                    Err(error) => self.media_error(&error),
                }
            }
            match self.segmenter.finish() {
                Some(segment) => self.publish(segment, true).await,
                None => self.end_playlist().await,
            }
        }
        self.shared.metrics.streams_active.dec();
        if let Ok(mut live) = self.shared.live.lock() {
            live.remove(&self.stream);
        }
        self.schedule_final_cleanup();
    }

    fn media_error(&mut self, error: &livecast_media::MediaError) {
        self.shared.metrics.media_errors.inc();
        // A broken encoder can send thousands of bad frames; log the first few only.
        if self.errors_logged < 5 {
            self.errors_logged += 1;
            tracing::warn!(%error, "media message dropped");
        }
    }

    async fn publish(&mut self, segment: Segment, last: bool) {
        let playlist = self.playlist.get_or_insert_with(|| {
            let configured = self.shared.config.segment_secs.ceil() as u64;
            let first = (segment.duration_ms as f64 / 1000.0).round() as u64;
            let target = configured.max(first).max(1);
            // EXTINF must round to at most the target duration; cut before it can.
            self.segmenter
                .set_max_duration((target * 1000 + 400) as u32);
            MediaPlaylist::new(target, self.shared.config.window)
        });
        let sequence = playlist.next_sequence();
        let name = format!("{}-{sequence}.ts", self.session);
        let program_date_time = self
            .anchor
            .map(|(first_ms, wall)| offset_time(wall, segment.start_ms - first_ms));
        let removed = playlist.push(PlaylistSegment {
            uri: name.clone(),
            duration: segment.duration_ms as f64 / 1000.0,
            program_date_time,
            ..Default::default()
        });
        playlist.ended = last;
        let text = playlist.render();
        let hold = Duration::from_secs_f64(playlist.duration());
        let dir = self.dir.clone();
        let data = segment.data;
        let written = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            write_atomic(&dir, &name, &data)?;
            write_atomic(&dir, PLAYLIST, text.as_bytes())
        })
        .await;
        match written {
            Ok(Ok(())) => self.shared.metrics.segments_written.inc(),
            Ok(Err(error)) => tracing::error!(%error, "cannot write segment or playlist"),
            Err(error) => tracing::error!(%error, "segment writer task failed"),
        }
        let now = Instant::now();
        for old in removed {
            let keep = hold + Duration::from_secs_f64(old.duration);
            self.retired.push_back((now + keep, self.dir.join(old.uri)));
        }
        self.delete_expired(now).await;
    }

    async fn end_playlist(&mut self) {
        let Some(playlist) = self.playlist.as_mut() else {
            return;
        };
        playlist.ended = true;
        let text = playlist.render();
        let dir = self.dir.clone();
        let result =
            tokio::task::spawn_blocking(move || write_atomic(&dir, PLAYLIST, text.as_bytes()))
                .await;
        if !matches!(result, Ok(Ok(()))) {
            tracing::error!("cannot write final playlist");
        }
    }

    async fn delete_expired(&mut self, now: Instant) {
        while self.retired.front().is_some_and(|(due, _)| *due <= now) {
            if let Some((_, path)) = self.retired.pop_front() {
                remove_quietly(&path).await;
            }
        }
    }

    /// Segments that left the window shortly before the end still have viewers; delete them when
    /// their time is up rather than at once.
    fn schedule_final_cleanup(&mut self) {
        let retired = std::mem::take(&mut self.retired);
        if retired.is_empty() {
            return;
        }
        tokio::spawn(async move {
            for (due, path) in retired {
                tokio::time::sleep_until(due.into()).await;
                remove_quietly(&path).await;
            }
        });
    }
}

async fn remove_quietly(path: &Path) {
    if let Err(error) = tokio::fs::remove_file(path).await {
        if error.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(%error, path = %path.display(), "cannot delete retired segment");
        }
    }
}

/// Writes `name` in `dir` through a hidden temp file and a rename, so readers see either the old
/// file or the whole new one.
fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, dir.join(name))
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

    #[test]
    fn atomic_write_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic(dir.path(), "index.m3u8", b"#EXTM3U\n").unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["index.m3u8"]);
    }
}
