//! When a stream ends: not when its publisher's connection does.
//!
//! Publishers drop all the time (Wi-Fi, an encoder restart, a laptop lid), and encoders
//! unpublish on a restart just as they do at the end of an event, so neither a lost connection
//! nor an explicit unpublish ends a stream at once. When a publish stops, its playlist is left
//! *waiting*: complete segments only, no preload hint, and no `CAN-BLOCK-RELOAD`, so players
//! reload it every half target duration instead of holding blocking requests that would time
//! out (hls.js gives up after a few 503s). A publish of the name within
//! `--reconnect-grace-secs` continues the playlist after a discontinuity and players carry on.
//! Only when the grace runs out with no publisher does the playlist get `#EXT-X-ENDLIST`.
//!
//! The grace is counted from the playlist's last change, so a waiting stream left by an
//! earlier run of the ingest (a restart, a crash) is ended by the next run on time too; a
//! playlist a killed ingest left mid-publish is put into the waiting state when the next run
//! starts.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use livecast_media::playlist::{MediaPlaylist, PLAYLIST_NAME};

use crate::files::StreamDir;
use crate::shared::Shared;

/// Puts a playlist whose publisher left into the waiting state (see the module docs). Its
/// parts go too: hls.js takes a playlist with parts to announce the next segment, and when
/// that segment then comes from the returning publisher under a new session's name, it calls
/// the playlist inconsistent and stops for good (`levelParsingError`).
pub(crate) fn wait_for_publisher(playlist: &mut MediaPlaylist) {
    playlist.preload_hint = None;
    playlist.pending_parts.clear();
    for segment in &mut playlist.segments {
        segment.parts.clear();
    }
    if let Some(control) = playlist.server_control.as_mut() {
        control.can_block_reload = false;
    }
}

/// Ends `stream` after `grace` unless a publish of it came after publish number `publish`.
pub(crate) fn schedule(shared: Arc<Shared>, stream: String, publish: u64, grace: Duration) {
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        end_if_abandoned(&shared, &stream, publish);
    });
}

/// Schedules the end of every waiting stream on the volume, counting its grace from the
/// playlist's last change.
pub(crate) fn resume_waiting(shared: &Arc<Shared>) {
    let Ok(entries) = std::fs::read_dir(&shared.config.hls.hls_dir) else {
        return;
    };
    let grace = Duration::from_secs(shared.config.hls.reconnect_grace_secs);
    for entry in entries.flatten() {
        let path = entry.path().join(PLAYLIST_NAME);
        let Some(stream) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let Ok(mut playlist) = MediaPlaylist::parse(&text) else {
            continue;
        };
        if !playlist.ended {
            let age = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|m| SystemTime::now().duration_since(m).ok())
                .unwrap_or_default();
            // An ingest that was killed left the playlist as it was mid-publish, offering
            // blocking reloads and a preload hint that no one will answer.
            wait_for_publisher(&mut playlist);
            let rendered = playlist.render();
            if rendered != text {
                if let Err(error) = StreamDir::new(entry.path()).write_playlist(rendered.as_bytes())
                {
                    tracing::warn!(%error, stream, "cannot mark the stream as waiting");
                }
            }
            tracing::info!(
                stream,
                grace_left_secs = grace.saturating_sub(age).as_secs(),
                "a stream of an earlier run waits for its publisher"
            );
            schedule(shared.clone(), stream, 0, grace.saturating_sub(age));
        }
    }
}

fn end_if_abandoned(shared: &Shared, stream: &str, publish: u64) {
    // Held while the playlist is written: a publish of the name cannot start meanwhile.
    let Ok(live) = shared.live.lock() else {
        return;
    };
    let latest = shared
        .latest
        .lock()
        .map(|latest| latest.get(stream).copied().unwrap_or(0))
        .unwrap_or(u64::MAX);
    if live.contains(stream) || latest != publish {
        return;
    }
    match end(&shared.config.hls.hls_dir.join(stream)) {
        Ok(true) => {
            tracing::info!(
                stream,
                "stream ended: no publisher came back within the grace period"
            );
            if let Some((group, rendition)) = livecast_media::publish::split_rendition(stream) {
                if let Err(error) = shared
                    .renditions
                    .ended(group, rendition.unwrap_or_default())
                {
                    tracing::error!(%error, stream, "cannot rewrite the master playlist");
                }
            }
        }
        Ok(false) => {}
        Err(error) => tracing::error!(%error, stream, "cannot end the stream's playlist"),
    }
    drop(live);
}

/// Writes ENDLIST into the playlist in `dir`; false if there is none or it has ended.
fn end(dir: &Path) -> std::io::Result<bool> {
    let text = match std::fs::read_to_string(dir.join(PLAYLIST_NAME)) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(error) => return Err(error),
    };
    let mut playlist = MediaPlaylist::parse(&text).map_err(std::io::Error::other)?;
    if playlist.ended {
        return Ok(false);
    }
    wait_for_publisher(&mut playlist);
    playlist.ended = true;
    StreamDir::new(dir.to_path_buf()).write_playlist(playlist.render().as_bytes())?;
    Ok(true)
}
