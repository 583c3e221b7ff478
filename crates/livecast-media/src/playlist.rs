//! The HLS media playlist (RFC 8216 §4.3.3): a model with a sliding window and its writer.
//!
//! The target duration is fixed when the playlist is created and never changes afterwards, as
//! §6.2.1 requires; callers cap segment lengths so that every EXTINF rounds to at most it.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::SystemTime;

/// One segment as the playlist lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct PlaylistSegment {
    /// URI relative to the playlist.
    pub uri: String,
    /// Duration in seconds.
    pub duration: f64,
    /// Wall-clock time of the segment's first frame, written as EXT-X-PROGRAM-DATE-TIME.
    pub program_date_time: Option<SystemTime>,
}

/// A live media playlist with a sliding window of segments.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaPlaylist {
    /// EXT-X-TARGETDURATION in whole seconds.
    pub target_duration: u64,
    /// Media sequence number of the first listed segment.
    pub media_sequence: u64,
    /// The listed segments, oldest first.
    pub segments: VecDeque<PlaylistSegment>,
    /// How many segments the window keeps; 0 keeps every segment (an event playlist).
    pub window: usize,
    /// Whether EXT-X-ENDLIST is written: the publisher has stopped.
    pub ended: bool,
}

impl MediaPlaylist {
    /// An empty live playlist.
    pub fn new(target_duration: u64, window: usize) -> Self {
        Self {
            target_duration: target_duration.max(1),
            media_sequence: 0,
            segments: VecDeque::new(),
            window,
            ended: false,
        }
    }

    /// The media sequence number the next pushed segment will get.
    pub fn next_sequence(&self) -> u64 {
        self.media_sequence + self.segments.len() as u64
    }

    /// Appends a segment and returns the ones that slid out of the window.
    pub fn push(&mut self, segment: PlaylistSegment) -> Vec<PlaylistSegment> {
        self.segments.push_back(segment);
        let mut removed = Vec::new();
        while self.window > 0 && self.segments.len() > self.window {
            if let Some(old) = self.segments.pop_front() {
                self.media_sequence += 1;
                removed.push(old);
            }
        }
        removed
    }

    /// Total duration of the listed segments in seconds.
    pub fn duration(&self) -> f64 {
        self.segments.iter().map(|s| s.duration).sum()
    }

    /// Writes the playlist text.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(128 + self.segments.len() * 96);
        out.push_str("#EXTM3U\n#EXT-X-VERSION:3\n");
        let _ = writeln!(out, "#EXT-X-TARGETDURATION:{}", self.target_duration);
        let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{}", self.media_sequence);
        for seg in &self.segments {
            if let Some(pdt) = seg.program_date_time {
                let _ = writeln!(
                    out,
                    "#EXT-X-PROGRAM-DATE-TIME:{}",
                    humantime::format_rfc3339_millis(pdt)
                );
            }
            let _ = writeln!(out, "#EXTINF:{:.3},\n{}", seg.duration, seg.uri);
        }
        if self.ended {
            out.push_str("#EXT-X-ENDLIST\n");
        }
        out
    }
}

/// Whether playlist text marks the end of its stream.
pub fn has_ended(text: &str) -> bool {
    text.lines().any(|l| l.trim_end() == "#EXT-X-ENDLIST")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn seg(i: u64) -> PlaylistSegment {
        PlaylistSegment {
            uri: format!("s{i}.ts"),
            duration: 2.002,
            program_date_time: Some(
                SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + i * 2000),
            ),
        }
    }

    #[test]
    fn window_slides_and_sequence_follows() {
        let mut pl = MediaPlaylist::new(2, 3);
        for i in 0..3 {
            assert!(pl.push(seg(i)).is_empty());
        }
        let removed = pl.push(seg(3));
        assert_eq!(removed, vec![seg(0)]);
        assert_eq!(pl.media_sequence, 1);
        assert_eq!(pl.next_sequence(), 4);
        let text = pl.render();
        assert!(text.starts_with(
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:1\n"
        ));
        assert!(text.contains(
            "#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:22.000Z\n#EXTINF:2.002,\ns1.ts\n"
        ));
        assert!(!has_ended(&text));
        pl.ended = true;
        assert!(has_ended(&pl.render()));
    }
}
