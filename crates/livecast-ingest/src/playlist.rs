//! The playlist policy of one publish, apart from the files: what the playlist becomes with
//! every cut (segments, parts as byte ranges, the preload hint, parts dropped three target
//! durations behind the edge, the waiting state at the end), how media files are named, and
//! how long a file that left the playlist is held before it may be deleted. Nothing here
//! touches the volume; `pipeline` writes what this says, in the order `files` requires.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use livecast_media::playlist::{
    ByteRange, MediaPlaylist, Part as PlaylistPart, PlaylistSegment, PreloadHint, RenditionReport,
    ServerControl,
};
use livecast_media::segmenter::Segmenter;

/// Media sequence number of a new stream's first segment. Not 0: hls.js (1.6) takes a
/// playlist whose last segment is number 0 for one without segments and then polls instead of
/// sending blocking reloads, which costs a new viewer several seconds of latency.
pub(crate) const FIRST_SEQUENCE: u64 = 1;

/// What the configuration says about playlists.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// `--segment-secs`.
    pub segment_secs: f64,
    /// `--window`: segments listed (0 with `--record`: all of them).
    pub window: usize,
    /// `--record`: an EVENT playlist that keeps every segment.
    pub record: bool,
    /// `--reconnect-grace-secs` is 0: a publish that stops ends the stream at once.
    pub ends_at_once: bool,
}

/// One publish's playlist and the files it has let go of.
#[derive(Debug)]
pub(crate) struct LivePlaylist {
    settings: Settings,
    /// The per-session prefix of every media name.
    session: String,
    /// Media segments' extension (`m4s` or `ts`).
    extension: &'static str,
    /// Part target in seconds; `None` for plain HLS.
    part_target: Option<f64>,
    /// Created when the first segment is complete (its length fixes the target duration).
    playlist: Option<MediaPlaylist>,
    /// Media sequence number of the segment being built.
    sequence: u64,
    /// Parts of the segment being built.
    parts: Vec<PlaylistPart>,
    /// The playlist an earlier publish of the name left, continued by this one.
    previous: Option<MediaPlaylist>,
    /// Segments that left the playlist since the last [`LivePlaylist::retire`].
    leaving: Vec<PlaylistSegment>,
    /// Parts dropped from the playlist since the last [`LivePlaylist::retire`].
    dropped_parts: Vec<PlaylistPart>,
    /// Files out of the playlist, with the time after which they may be deleted.
    retired: VecDeque<(Instant, String)>,
}

impl LivePlaylist {
    pub fn new(
        settings: Settings,
        session: String,
        extension: &'static str,
        part_target: Option<f64>,
    ) -> Self {
        Self {
            settings,
            session,
            extension,
            part_target,
            playlist: None,
            sequence: FIRST_SEQUENCE,
            parts: Vec::new(),
            previous: None,
            leaving: Vec::new(),
            dropped_parts: Vec::new(),
            retired: VecDeque::new(),
        }
    }

    /// The media file of segment `sequence`: `<session>-<sequence>.<ext>`.
    pub fn name(&self, sequence: u64) -> String {
        format!("{}-{sequence}.{}", self.session, self.extension)
    }

    /// The file of the segment being built.
    pub fn segment_name(&self) -> String {
        self.name(self.sequence)
    }

    /// Media sequence number of the segment being built.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// A rendition's first segment takes the number its group gave the segment starting with
    /// it (see `renditions`). Only forward, and only before the first segment is listed: a
    /// number is never used twice, and a playlist continued from an earlier publish lists the
    /// numbers it skipped as gaps.
    pub fn align_sequence(&mut self, sequence: u64) {
        if self.playlist.is_none() && sequence > self.sequence {
            self.sequence = sequence;
        }
    }

    /// Where this rendition stands for the others' reports: the segment being built and its
    /// newest part, or the newest complete segment.
    pub fn position(&self) -> Option<(u64, Option<u64>)> {
        let playlist = self.playlist.as_ref()?;
        if let Some(last) = self.parts.len().checked_sub(1) {
            return Some((self.sequence, Some(last as u64)));
        }
        let last = playlist.segments.back()?;
        let part = last.parts.len().checked_sub(1).map(|p| p as u64);
        Some((self.sequence.checked_sub(1)?, part))
    }

    /// The other renditions' reports, written into the playlist from the next update on.
    pub fn set_reports(&mut self, reports: Vec<RenditionReport>) {
        if let Some(playlist) = self.playlist.as_mut() {
            playlist.rendition_reports = reports;
        }
    }

    /// The init segment's file: `<session>-init.mp4`.
    pub fn init_name(&self) -> String {
        format!("{}-init.mp4", self.session)
    }

    /// Continues `previous` (left by an earlier publish of the name): the next segment gets
    /// its next sequence number and is listed after a discontinuity.
    pub fn continue_from(&mut self, previous: MediaPlaylist) {
        self.sequence = previous.next_sequence();
        self.previous = Some(previous);
    }

    /// `name` may be deleted after `due`.
    pub fn retire_at(&mut self, due: Instant, name: String) {
        self.retired.push_back((due, name));
    }

    /// The init segment is written: the playlist maps it.
    pub fn set_map(&mut self, name: &str) {
        if let Some(playlist) = self.playlist.as_mut() {
            playlist.map = Some(name.to_owned());
        }
    }

    /// A part was appended to the segment being built at `offset`.
    pub fn add_part(&mut self, duration_ms: i64, independent: bool, length: u64, offset: u64) {
        self.parts.push(PlaylistPart {
            uri: self.segment_name(),
            duration: duration_ms as f64 / 1000.0,
            independent,
            byterange: Some(ByteRange { length, offset }),
        });
    }

    /// The segment being built lost media: the parts of it listed so far are taken back.
    pub fn drop_parts(&mut self) {
        self.parts.clear();
    }

    /// The segment being built is complete (`gap`: a write of it failed, so it is listed as
    /// EXT-X-GAP without parts). The first one creates the playlist (see [`new_playlist`]).
    pub fn complete_segment(
        &mut self,
        segmenter: &mut Segmenter,
        init: Option<String>,
        duration_ms: i64,
        program_date_time: Option<SystemTime>,
        gap: bool,
    ) {
        let continued = self.previous.is_some();
        if self.playlist.is_none() {
            let (mut playlist, dropped) = new_playlist(
                self.settings,
                self.part_target,
                duration_ms,
                init,
                self.previous.take(),
                self.sequence,
                segmenter,
            );
            self.leaving.extend(dropped);
            let (session, extension) = (&self.session, self.extension);
            self.leaving
                .extend(fill_skipped(&mut playlist, self.sequence, |sequence| {
                    format!("{session}-{sequence}.{extension}")
                }));
            self.playlist = Some(playlist);
        }
        let uri = self.segment_name();
        let Some(playlist) = self.playlist.as_mut() else {
            return;
        };
        if gap {
            self.parts.clear();
        }
        self.leaving.extend(playlist.push(PlaylistSegment {
            uri,
            duration: duration_ms as f64 / 1000.0,
            program_date_time,
            parts: std::mem::take(&mut self.parts),
            discontinuity: continued,
            gap,
            ..Default::default()
        }));
        self.sequence += 1;
    }

    /// The playlist after a cut, to be written (none before the first segment): the parts
    /// of the segment being built, the hint for the next part (none when `last`), old parts
    /// dropped; when `last`, the waiting state.
    ///
    /// While the segment being built is `broken` (a write of it failed), the next part there
    /// is will start the next segment, and the hint says so. A live LL-HLS playlist must not
    /// end on a segment's URI either: hls.js then takes that segment for the one being built
    /// and, when the next playlist lists the next segment, stops for good (`levelParsingError:
    /// media sequence mismatch`).
    pub fn render(&mut self, last: bool, broken: bool) -> Option<String> {
        // The next part goes at the end of the segment being built, or starts the next one.
        let hint = (!last && self.part_target.is_some()).then(|| {
            let (sequence, start) = if broken {
                (self.sequence + 1, 0)
            } else {
                let end = self.parts.last().and_then(|p| p.byterange);
                (self.sequence, end.map_or(0, |r| r.end()))
            };
            PreloadHint {
                uri: self.name(sequence),
                byterange_start: Some(start),
            }
        });
        let playlist = self.playlist.as_mut()?;
        playlist.pending_parts.clone_from(&self.parts);
        self.dropped_parts.extend(drop_old_parts(playlist));
        playlist.preload_hint = hint;
        if last {
            wait(playlist, self.settings.ends_at_once);
        }
        Some(playlist.render())
    }

    /// The playlist when the publish ended without a last cut, to be written.
    pub fn render_end(&mut self) -> Option<String> {
        let playlist = self.playlist.as_mut()?;
        wait(playlist, self.settings.ends_at_once);
        Some(playlist.render())
    }

    /// Holds what left the playlist since the last call, and returns the files whose hold is
    /// over at `now`. A segment is held for its duration plus the playlist's (RFC 8216
    /// §6.2.2); a part of its own for the playlist's duration (a byte-range part lives on in
    /// its segment).
    pub fn retire(&mut self, now: Instant) -> Vec<String> {
        let expired = self.take_expired(now);
        let hold = self
            .playlist
            .as_ref()
            .map_or(Duration::ZERO, |p| Duration::from_secs_f64(p.duration()));
        for old in std::mem::take(&mut self.leaving) {
            let due = now + hold + Duration::from_secs_f64(old.duration);
            self.retired.push_back((due, old.uri.clone()));
            self.retired.extend(
                old.parts
                    .into_iter()
                    .filter(|part| part.uri != old.uri)
                    .map(|part| (due, part.uri)),
            );
        }
        self.retired.extend(
            std::mem::take(&mut self.dropped_parts)
                .into_iter()
                .filter(|part| part.byterange.is_none())
                .map(|part| (now + hold, part.uri)),
        );
        expired
    }

    /// Every file still held, with its time, for the cleanup after the publish.
    pub fn take_retired(&mut self) -> Vec<(Instant, String)> {
        std::mem::take(&mut self.retired).into()
    }

    /// Takes the retired files whose time is up out of the queue.
    fn take_expired(&mut self, now: Instant) -> Vec<String> {
        // Parts and segments are retired with different holds; the queue is not sorted.
        let mut keep = VecDeque::with_capacity(self.retired.len());
        let mut expired = Vec::new();
        for (due, name) in std::mem::take(&mut self.retired) {
            if due <= now {
                expired.push(name);
            } else {
                keep.push_back((due, name));
            }
        }
        self.retired = keep;
        expired
    }
}

/// Lists the sequence numbers between a continued playlist's last segment and `sequence` as
/// EXT-X-GAP segments of the target duration (a rendition that was away while its group went
/// on), at most a window of them; returns the segments that left the window.
fn fill_skipped(
    playlist: &mut MediaPlaylist,
    sequence: u64,
    name: impl Fn(u64) -> String,
) -> Vec<PlaylistSegment> {
    let next = playlist.next_sequence();
    if sequence <= next {
        return Vec::new();
    }
    let mut left = Vec::new();
    let mut first = next;
    let window = playlist.window as u64;
    if window > 0 && sequence - next > window {
        // None of the listed segments would stay: the window starts afresh, its
        // discontinuities counted as gone.
        playlist.discontinuity_sequence +=
            playlist.segments.iter().filter(|s| s.discontinuity).count() as u64;
        left.extend(playlist.segments.drain(..));
        first = sequence - window;
        playlist.media_sequence = first;
    }
    let duration = playlist.target_duration as f64;
    for number in first..sequence {
        left.extend(playlist.push(PlaylistSegment {
            uri: name(number),
            duration,
            gap: true,
            ..Default::default()
        }));
    }
    left
}

/// A stopped publish's playlist: ENDLIST at once, or waiting for the publisher.
fn wait(playlist: &mut MediaPlaylist, ends_at_once: bool) {
    playlist.ended = ends_at_once;
    crate::ending::wait_for_publisher(playlist);
}

/// The playlist of a publish, created when its first segment is complete: the target duration
/// is the configured one or that segment's rounded length if longer (or the previous
/// playlist's, which this one continues), and later segments are cut before they could outgrow
/// it. Returns the playlist and the previous playlist's segments it does not continue.
fn new_playlist(
    settings: Settings,
    part_target: Option<f64>,
    first_ms: i64,
    init: Option<String>,
    previous: Option<MediaPlaylist>,
    first_sequence: u64,
    segmenter: &mut Segmenter,
) -> (MediaPlaylist, Vec<PlaylistSegment>) {
    let configured = settings.segment_secs.ceil() as u64;
    let first = (first_ms as f64 / 1000.0).round() as u64;
    let target = configured.max(first).max(1);
    let window = if settings.record { 0 } else { settings.window };
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
            fresh.media_sequence = previous.next_sequence().max(first_sequence);
            fresh.discontinuity_sequence = previous.discontinuity_sequence
                + previous.segments.iter().filter(|s| s.discontinuity).count() as u64;
            fresh
        }
        None => {
            let mut fresh = MediaPlaylist::new(target, window);
            fresh.media_sequence = first_sequence;
            fresh
        }
    };
    let target = playlist.target_duration;
    // EXTINF must round to at most the target duration; cut before it can.
    segmenter.set_max_duration((target * 1000 + 400) as u32);
    playlist.event = settings.record;
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

#[cfg(test)]
mod tests {
    use livecast_media::segmenter::Container;

    use super::*;

    const SETTINGS: Settings = Settings {
        segment_secs: 2.0,
        window: 3,
        record: false,
        ends_at_once: false,
    };

    fn ll(settings: Settings) -> (LivePlaylist, Segmenter) {
        let playlist = LivePlaylist::new(settings, "s".into(), "m4s", Some(0.5));
        (playlist, Segmenter::new(Container::Fmp4, 2000, 500))
    }

    /// Four 500 ms parts of 100 bytes, then the segment is complete.
    fn segment(playlist: &mut LivePlaylist, segmenter: &mut Segmenter, gap: bool) {
        for i in 0..4 {
            playlist.add_part(500, i == 0, 100, i * 100);
        }
        let init = Some("s-init.mp4".to_owned());
        playlist.complete_segment(segmenter, init, 2000, None, gap);
    }

    #[test]
    fn the_first_segment_makes_the_playlist_and_parts_are_byte_ranges_with_a_hint() {
        let (mut playlist, mut segmenter) = ll(SETTINGS);
        playlist.add_part(500, true, 100, 0);
        assert_eq!(
            playlist.render(false, false),
            None,
            "no playlist before a segment"
        );
        playlist.add_part(500, false, 120, 100);
        playlist.add_part(500, false, 80, 220);
        playlist.add_part(500, false, 100, 300);
        playlist.complete_segment(&mut segmenter, Some("s-init.mp4".into()), 2000, None, false);
        playlist.add_part(500, true, 90, 0);
        let text = playlist.render(false, false).unwrap();
        assert!(text.contains("#EXT-X-TARGETDURATION:2\n"), "{text}");
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:1\n"), "{text}");
        assert!(text.contains("#EXT-X-MAP:URI=\"s-init.mp4\""), "{text}");
        assert!(text.contains("CAN-BLOCK-RELOAD=YES"), "{text}");
        assert!(
            text.contains("#EXT-X-PART:DURATION=0.500,URI=\"s-1.m4s\",BYTERANGE=\"120@100\""),
            "{text}"
        );
        assert!(text.contains("s-1.m4s\n"), "{text}");
        // The part of segment 2 is listed, and the hint points past it.
        assert!(
            text.contains("URI=\"s-2.m4s\",INDEPENDENT=YES,BYTERANGE=\"90@0\""),
            "{text}"
        );
        assert!(
            text.contains("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"s-2.m4s\",BYTERANGE-START=90"),
            "{text}"
        );
        // While the segment being built is broken, the hint names the next segment's start.
        playlist.drop_parts();
        let broken = playlist.render(false, true).unwrap();
        assert!(!broken.contains("URI=\"s-2.m4s\""), "{broken}");
        assert!(
            broken.ends_with("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"s-3.m4s\",BYTERANGE-START=0\n"),
            "{broken}"
        );
        // The last cut offers no hint.
        let last = playlist.render(true, false).unwrap();
        assert!(
            !last.contains("PRELOAD-HINT") && !last.contains("#EXT-X-ENDLIST"),
            "{last}"
        );
        assert!(!last.contains("CAN-BLOCK-RELOAD=YES"), "{last}");
    }

    #[test]
    fn a_failed_segment_is_a_gap_without_parts() {
        let (mut playlist, mut segmenter) = ll(SETTINGS);
        segment(&mut playlist, &mut segmenter, false);
        segment(&mut playlist, &mut segmenter, true);
        let text = playlist.render(false, false).unwrap();
        let gap = text.split("s-1.m4s\n").nth(1).unwrap();
        assert!(gap.contains("#EXT-X-GAP"), "{text}");
        assert!(!gap.contains("#EXT-X-PART:"), "{text}");
    }

    #[test]
    fn segments_leaving_the_window_are_held_for_their_duration_and_the_playlists() {
        let (mut playlist, mut segmenter) = ll(SETTINGS);
        let start = Instant::now();
        for _ in 0..3 {
            segment(&mut playlist, &mut segmenter, false);
        }
        playlist.render(false, false);
        assert!(playlist.retire(start).is_empty());
        // The fourth segment pushes the first out of a window of three.
        segment(&mut playlist, &mut segmenter, false);
        playlist.render(false, false);
        assert!(playlist.retire(start).is_empty());
        let text = playlist.render(false, false).unwrap();
        assert!(!text.contains("s-1.m4s"), "{text}");
        // Held for 2 s (its own duration) + 6 s (the playlist's).
        assert!(playlist
            .retire(start + Duration::from_millis(7900))
            .is_empty());
        assert_eq!(playlist.retire(start + Duration::from_secs(8)), ["s-1.m4s"]);
        assert!(playlist.take_retired().is_empty());
    }

    #[test]
    fn parts_older_than_three_target_durations_are_dropped() {
        let (mut playlist, mut segmenter) = ll(Settings {
            window: 10,
            ..SETTINGS
        });
        for _ in 0..5 {
            segment(&mut playlist, &mut segmenter, false);
        }
        let text = playlist.render(false, false).unwrap();
        let parts_of = |n: u64| text.matches(&format!("URI=\"s-{n}.m4s\"")).count();
        // 2 s segments: those within 6 s of the edge keep their parts.
        assert_eq!(parts_of(1), 0, "{text}");
        assert_eq!((2..=5).map(parts_of).collect::<Vec<_>>(), [4; 4], "{text}");
    }

    #[test]
    fn a_continued_playlist_follows_on_after_a_discontinuity_or_starts_past_it() {
        let mut before = MediaPlaylist::new(2, 3);
        before.media_sequence = 40;
        before.map = Some("old-init.mp4".into());
        for n in 40..43 {
            before.push(PlaylistSegment {
                uri: format!("old-{n}.m4s"),
                duration: 2.0,
                ..Default::default()
            });
        }
        // Same target duration and container: continued.
        let (mut playlist, mut segmenter) = ll(SETTINGS);
        playlist.continue_from(before.clone());
        assert_eq!(playlist.segment_name(), "s-43.m4s");
        segment(&mut playlist, &mut segmenter, false);
        let text = playlist.render(false, false).unwrap();
        assert!(
            text.contains("old-42.m4s\n#EXT-X-DISCONTINUITY\n"),
            "{text}"
        );
        assert!(text.contains("s-43.m4s"), "{text}");
        // A longer target duration cannot continue it: a fresh playlist past its numbers,
        // and the old segments are retired.
        let (mut playlist, mut segmenter) = ll(Settings {
            segment_secs: 4.0,
            ..SETTINGS
        });
        playlist.continue_from(before);
        segment(&mut playlist, &mut segmenter, false);
        let text = playlist.render(false, false).unwrap();
        assert!(text.contains("#EXT-X-TARGETDURATION:4\n"), "{text}");
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:43\n"), "{text}");
        assert!(!text.contains("old-"), "{text}");
        playlist.retire(Instant::now());
        let held: Vec<String> = playlist
            .take_retired()
            .into_iter()
            .map(|(_, n)| n)
            .collect();
        assert_eq!(held, ["old-40.m4s", "old-41.m4s", "old-42.m4s"]);
    }

    #[test]
    fn a_rendition_starts_at_its_groups_number_and_lists_what_it_missed_as_gaps() {
        // A new rendition takes the number it is given.
        let (mut playlist, mut segmenter) = ll(SETTINGS);
        playlist.align_sequence(17);
        assert_eq!(playlist.segment_name(), "s-17.m4s");
        segment(&mut playlist, &mut segmenter, false);
        playlist.align_sequence(30);
        assert_eq!(playlist.sequence(), 18, "only before the first segment");
        let text = playlist.render(false, false).unwrap();
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:17\n"), "{text}");
        assert_eq!(playlist.position(), Some((17, Some(3))));

        // A rendition that comes back two numbers late: two gaps, then its segment.
        let mut before = MediaPlaylist::new(2, 3);
        before.media_sequence = 40;
        before.map = Some("old-init.mp4".into());
        for n in 40..43 {
            before.push(PlaylistSegment {
                uri: format!("old-{n}.m4s"),
                duration: 2.0,
                ..Default::default()
            });
        }
        let (mut playlist, mut segmenter) = ll(Settings {
            window: 5,
            ..SETTINGS
        });
        playlist.continue_from(before.clone());
        playlist.align_sequence(45);
        playlist.align_sequence(44);
        segment(&mut playlist, &mut segmenter, false);
        let parsed = MediaPlaylist::parse(&playlist.render(false, false).unwrap()).unwrap();
        let listed: Vec<(&str, bool, bool)> = parsed
            .segments
            .iter()
            .map(|s| (s.uri.as_str(), s.gap, s.discontinuity))
            .collect();
        assert_eq!(
            listed,
            [
                ("old-41.m4s", false, false),
                ("old-42.m4s", false, false),
                ("s-43.m4s", true, false),
                ("s-44.m4s", true, false),
                ("s-45.m4s", false, true),
            ]
        );
        assert_eq!(parsed.media_sequence, 41);

        // Away for longer than the window: a window of gaps, the old segments retired.
        let (mut playlist, mut segmenter) = ll(SETTINGS);
        playlist.continue_from(before);
        playlist.align_sequence(100);
        segment(&mut playlist, &mut segmenter, false);
        let parsed = MediaPlaylist::parse(&playlist.render(false, false).unwrap()).unwrap();
        assert_eq!(parsed.media_sequence, 98);
        assert_eq!(parsed.segments.len(), 3);
        assert!(parsed.segments[0].gap && parsed.segments[1].gap);
        assert!(!parsed.segments[2].gap && parsed.segments[2].discontinuity);
        playlist.retire(Instant::now());
        let held = playlist.take_retired().len();
        assert_eq!(held, 4, "three old segments and the gap that slid out");
    }

    #[test]
    fn the_end_waits_for_the_publisher_or_ends_at_once() {
        for (ends_at_once, endlist) in [(false, false), (true, true)] {
            let (mut playlist, mut segmenter) = ll(Settings {
                ends_at_once,
                ..SETTINGS
            });
            assert_eq!(playlist.render_end(), None);
            segment(&mut playlist, &mut segmenter, false);
            let text = playlist.render_end().unwrap();
            assert_eq!(text.contains("#EXT-X-ENDLIST"), endlist, "{text}");
            assert!(!text.contains("#EXT-X-PART:"), "{text}");
        }
    }
}
