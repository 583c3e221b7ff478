//! The HLS media playlist (RFC 8216 and draft-pantos-hls-rfc8216bis): one model that the
//! ingest writes and the front-ends read back, with the Low-Latency HLS tags (parts, preload
//! hints, server control) and delta updates.
//!
//! The target duration is fixed when the playlist is created and never changes afterwards, as
//! RFC 8216 §6.2.1 requires; callers cap segment lengths so that every EXTINF rounds to at most
//! it.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

/// One partial segment (EXT-X-PART).
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    /// URI relative to the playlist.
    pub uri: String,
    /// Duration in seconds.
    pub duration: f64,
    /// Whether the part starts with an independent frame.
    pub independent: bool,
    /// Where the part lies in the resource `uri` names (BYTERANGE), when parts are ranges of
    /// their segment's file rather than files of their own.
    pub byterange: Option<ByteRange>,
}

/// A byte range of a resource: `length@offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// Number of bytes.
    pub length: u64,
    /// Offset of the first byte.
    pub offset: u64,
}

impl ByteRange {
    /// The offset just past the range.
    pub fn end(&self) -> u64 {
        self.offset + self.length
    }
}

/// EXT-X-PRELOAD-HINT:TYPE=PART: the next part, announced before it exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreloadHint {
    /// URI relative to the playlist.
    pub uri: String,
    /// BYTERANGE-START: where the part will begin in that resource, for byte-range parts. The
    /// length is not known in advance, so BYTERANGE-LENGTH is never written.
    pub byterange_start: Option<u64>,
}

/// One segment as the playlist lists it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PlaylistSegment {
    /// URI relative to the playlist.
    pub uri: String,
    /// Duration in seconds.
    pub duration: f64,
    /// Wall-clock time of the segment's first frame, written as EXT-X-PROGRAM-DATE-TIME.
    pub program_date_time: Option<SystemTime>,
    /// EXT-X-DISCONTINUITY before this segment.
    pub discontinuity: bool,
    /// The parts the segment was published as (listed only for recent segments).
    pub parts: Vec<Part>,
    /// The init segment (EXT-X-MAP) this segment needs; the tag is written where it changes.
    pub map: Option<String>,
    /// EXT-X-GAP: the segment holds no media and players skip its time (its media could not
    /// be written whole). Its parts are not listed.
    pub gap: bool,
}

/// EXT-X-SERVER-CONTROL.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServerControl {
    /// CAN-BLOCK-RELOAD=YES.
    pub can_block_reload: bool,
    /// CAN-SKIP-UNTIL in seconds.
    pub can_skip_until: Option<f64>,
    /// PART-HOLD-BACK in seconds.
    pub part_hold_back: Option<f64>,
    /// HOLD-BACK in seconds.
    pub hold_back: Option<f64>,
}

/// An EXT-X-RENDITION-REPORT: where another rendition of the stream stands, so a player
/// switching to it can ask for the right part at once (draft-pantos-hls-rfc8216bis §4.4.5.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenditionReport {
    /// The rendition's media playlist, relative to this one.
    pub uri: String,
    /// Media sequence number of its last segment (or of the segment its last part is in).
    pub last_msn: u64,
    /// Index of its last part, with parts.
    pub last_part: Option<u64>,
}

/// A media playlist with a sliding window of segments.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaPlaylist {
    /// EXT-X-TARGETDURATION in whole seconds.
    pub target_duration: u64,
    /// Media sequence number of the first listed segment.
    pub media_sequence: u64,
    /// EXT-X-DISCONTINUITY-SEQUENCE.
    pub discontinuity_sequence: u64,
    /// The listed segments, oldest first.
    pub segments: VecDeque<PlaylistSegment>,
    /// How many segments the window keeps; 0 keeps every segment (an event playlist).
    pub window: usize,
    /// Whether EXT-X-ENDLIST is written: the publisher has stopped.
    pub ended: bool,
    /// EXT-X-PART-INF:PART-TARGET in seconds, for LL-HLS playlists.
    pub part_target: Option<f64>,
    /// EXT-X-SERVER-CONTROL.
    pub server_control: Option<ServerControl>,
    /// Parts of the segment being built, listed after the last complete segment.
    pub pending_parts: Vec<Part>,
    /// EXT-X-PRELOAD-HINT:TYPE=PART: the next part, announced before it exists.
    pub preload_hint: Option<PreloadHint>,
    /// EXT-X-MAP URI (fMP4 init segment) of new media: the pending parts and the segments
    /// pushed without a map of their own.
    pub map: Option<String>,
    /// EXT-X-PLAYLIST-TYPE EVENT (VOD once ended): segments are only ever appended (a
    /// recording); use with a window of 0.
    pub event: bool,
    /// Segments replaced by EXT-X-SKIP in a delta update.
    pub skipped: u64,
    /// Where the stream's other renditions stand.
    pub rendition_reports: Vec<RenditionReport>,
}

impl MediaPlaylist {
    /// An empty live playlist.
    pub fn new(target_duration: u64, window: usize) -> Self {
        Self {
            target_duration: target_duration.max(1),
            media_sequence: 0,
            discontinuity_sequence: 0,
            segments: VecDeque::new(),
            window,
            ended: false,
            part_target: None,
            server_control: None,
            pending_parts: Vec::new(),
            preload_hint: None,
            map: None,
            event: false,
            skipped: 0,
            rendition_reports: Vec::new(),
        }
    }

    /// The media sequence number the next pushed segment will get.
    pub fn next_sequence(&self) -> u64 {
        self.media_sequence + self.skipped + self.segments.len() as u64
    }

    /// Appends a segment and returns the ones that slid out of the window.
    pub fn push(&mut self, mut segment: PlaylistSegment) -> Vec<PlaylistSegment> {
        self.pending_parts.clear();
        if segment.map.is_none() {
            segment.map.clone_from(&self.map);
        }
        self.segments.push_back(segment);
        let mut removed = Vec::new();
        while self.window > 0 && self.segments.len() > self.window {
            if let Some(old) = self.segments.pop_front() {
                self.media_sequence += 1;
                if old.discontinuity {
                    // Its EXT-X-DISCONTINUITY leaves with it (RFC 8216 §6.2.2).
                    self.discontinuity_sequence += 1;
                }
                removed.push(old);
            }
        }
        removed
    }

    /// Total duration of the listed segments in seconds.
    pub fn duration(&self) -> f64 {
        self.segments.iter().map(|s| s.duration).sum()
    }

    /// The newest position the playlist holds as (media sequence number, part index): the last
    /// pending part, or the last complete segment with `u64::MAX` as its part index (a complete
    /// segment holds all of its parts). `None` for an empty playlist.
    pub fn last_position(&self) -> Option<(u64, u64)> {
        let next = self.next_sequence();
        if !self.pending_parts.is_empty() {
            return Some((next, self.pending_parts.len() as u64 - 1));
        }
        next.checked_sub(1)
            .filter(|_| !self.segments.is_empty())
            .map(|msn| (msn, u64::MAX))
    }

    /// A delta update (`_HLS_skip`): segments older than the server's skip boundary are
    /// replaced by EXT-X-SKIP. Returns the playlist unchanged when it cannot skip.
    pub fn delta(&self) -> MediaPlaylist {
        let mut delta = self.clone();
        let Some(until) = self.server_control.as_ref().and_then(|c| c.can_skip_until) else {
            return delta;
        };
        // Keep the newest segments that together reach the skip boundary; skip the rest.
        let mut kept = 0.0;
        let mut keep = 0;
        for seg in self.segments.iter().rev() {
            if kept >= until {
                break;
            }
            kept += seg.duration;
            keep += 1;
        }
        let skip = self.segments.len() - keep;
        if skip == 0 {
            return delta;
        }
        delta.segments.drain(..skip);
        delta.skipped = self.skipped + skip as u64;
        delta
    }

    fn version(&self) -> u8 {
        if self.skipped > 0 {
            9
        } else if self.part_target.is_some() || self.server_control.is_some() || self.map.is_some()
        {
            6
        } else {
            3
        }
    }

    /// Writes the playlist text.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(256 + self.segments.len() * 160);
        let _ = write!(out, "#EXTM3U\n#EXT-X-VERSION:{}\n", self.version());
        let _ = writeln!(out, "#EXT-X-TARGETDURATION:{}", self.target_duration);
        if let Some(control) = &self.server_control {
            out.push_str("#EXT-X-SERVER-CONTROL:");
            let mut attrs = Vec::new();
            if control.can_block_reload {
                attrs.push("CAN-BLOCK-RELOAD=YES".to_string());
            }
            if let Some(v) = control.can_skip_until {
                attrs.push(format!("CAN-SKIP-UNTIL={}", num(v)));
            }
            if let Some(v) = control.hold_back {
                attrs.push(format!("HOLD-BACK={}", num(v)));
            }
            if let Some(v) = control.part_hold_back {
                attrs.push(format!("PART-HOLD-BACK={}", num(v)));
            }
            out.push_str(&attrs.join(","));
            out.push('\n');
        }
        if let Some(part) = self.part_target {
            let _ = writeln!(out, "#EXT-X-PART-INF:PART-TARGET={}", num(part));
        }
        let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{}", self.media_sequence);
        if self.discontinuity_sequence > 0 {
            let _ = writeln!(
                out,
                "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
                self.discontinuity_sequence
            );
        }
        if self.event {
            // A finished recording is a VOD playlist; while it runs it is an event.
            let kind = if self.ended { "VOD" } else { "EVENT" };
            let _ = writeln!(out, "#EXT-X-PLAYLIST-TYPE:{kind}");
        }
        if self.skipped > 0 {
            let _ = writeln!(out, "#EXT-X-SKIP:SKIPPED-SEGMENTS={}", self.skipped);
        }
        // EXT-X-MAP is written before the first segment and wherever the init segment changes.
        let mut map: Option<&str> = None;
        for seg in &self.segments {
            if seg.discontinuity {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            write_map(&mut out, &mut map, seg.map.as_ref());
            if let Some(pdt) = seg.program_date_time {
                let _ = writeln!(
                    out,
                    "#EXT-X-PROGRAM-DATE-TIME:{}",
                    humantime::format_rfc3339_millis(pdt)
                );
            }
            for part in &seg.parts {
                render_part(&mut out, part);
            }
            if seg.gap {
                out.push_str("#EXT-X-GAP\n");
            }
            let _ = writeln!(out, "#EXTINF:{:.3},\n{}", seg.duration, seg.uri);
        }
        if !self.pending_parts.is_empty() || self.segments.is_empty() {
            write_map(&mut out, &mut map, self.map.as_ref());
        }
        for part in &self.pending_parts {
            render_part(&mut out, part);
        }
        if let Some(hint) = &self.preload_hint {
            let _ = write!(out, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}\"", hint.uri);
            if let Some(start) = hint.byterange_start {
                let _ = write!(out, ",BYTERANGE-START={start}");
            }
            out.push('\n');
        }
        for report in &self.rendition_reports {
            let _ = write!(
                out,
                "#EXT-X-RENDITION-REPORT:URI=\"{}\",LAST-MSN={}",
                report.uri, report.last_msn
            );
            if let Some(part) = report.last_part {
                let _ = write!(out, ",LAST-PART={part}");
            }
            out.push('\n');
        }
        if self.ended {
            out.push_str("#EXT-X-ENDLIST\n");
        }
        out
    }

    /// Parses playlist text written by [`MediaPlaylist::render`] (or any media playlist using
    /// the same tags; unknown tags are ignored).
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let mut lines = text.lines().map(str::trim_end);
        if lines.next() != Some("#EXTM3U") {
            return Err(ParseError("missing #EXTM3U"));
        }
        let mut pl = MediaPlaylist::new(1, 0);
        let mut target = None;
        let mut current = PlaylistSegment::default();
        let mut have_inf = false;
        for line in lines {
            if line.is_empty() {
                continue;
            }
            let Some(tag) = line.strip_prefix('#') else {
                if !have_inf {
                    return Err(ParseError("segment uri without #EXTINF"));
                }
                current.uri = line.to_string();
                let map = current.map.clone();
                pl.segments.push_back(std::mem::take(&mut current));
                current.map = map;
                have_inf = false;
                continue;
            };
            let (name, value) = tag.split_once(':').unwrap_or((tag, ""));
            match name {
                "EXT-X-TARGETDURATION" => {
                    target = Some(
                        value
                            .parse()
                            .map_err(|_| ParseError("bad TARGETDURATION"))?,
                    )
                }
                "EXT-X-MEDIA-SEQUENCE" => {
                    pl.media_sequence = value
                        .parse()
                        .map_err(|_| ParseError("bad MEDIA-SEQUENCE"))?
                }
                "EXT-X-DISCONTINUITY-SEQUENCE" => {
                    pl.discontinuity_sequence = value
                        .parse()
                        .map_err(|_| ParseError("bad DISCONTINUITY-SEQUENCE"))?
                }
                "EXT-X-DISCONTINUITY" => current.discontinuity = true,
                "EXT-X-GAP" => current.gap = true,
                "EXT-X-PROGRAM-DATE-TIME" => {
                    current.program_date_time = Some(
                        humantime::parse_rfc3339(value)
                            .map_err(|_| ParseError("bad PROGRAM-DATE-TIME"))?,
                    )
                }
                "EXTINF" => {
                    let d = value.split(',').next().unwrap_or_default();
                    current.duration = d.parse().map_err(|_| ParseError("bad EXTINF"))?;
                    have_inf = true;
                }
                "EXT-X-PART" => {
                    let attrs = attributes(value);
                    current.parts.push(Part {
                        uri: attr(&attrs, "URI")
                            .ok_or(ParseError("EXT-X-PART without URI"))?
                            .to_string(),
                        duration: attr(&attrs, "DURATION")
                            .and_then(|d| d.parse().ok())
                            .ok_or(ParseError("EXT-X-PART without DURATION"))?,
                        independent: attr(&attrs, "INDEPENDENT") == Some("YES"),
                        byterange: attr(&attrs, "BYTERANGE")
                            .map(|v| {
                                parse_byterange(
                                    v,
                                    previous_end(&current.parts, attr(&attrs, "URI")),
                                )
                            })
                            .transpose()?,
                    });
                }
                "EXT-X-PART-INF" => {
                    pl.part_target =
                        attr(&attributes(value), "PART-TARGET").and_then(|v| v.parse().ok());
                }
                "EXT-X-SERVER-CONTROL" => {
                    let attrs = attributes(value);
                    let float = |k| attr(&attrs, k).and_then(|v: &str| v.parse().ok());
                    pl.server_control = Some(ServerControl {
                        can_block_reload: attr(&attrs, "CAN-BLOCK-RELOAD") == Some("YES"),
                        can_skip_until: float("CAN-SKIP-UNTIL"),
                        part_hold_back: float("PART-HOLD-BACK"),
                        hold_back: float("HOLD-BACK"),
                    });
                }
                "EXT-X-PRELOAD-HINT" => {
                    let attrs = attributes(value);
                    if attr(&attrs, "TYPE") == Some("PART") {
                        pl.preload_hint = attr(&attrs, "URI").map(|uri| PreloadHint {
                            uri: uri.to_string(),
                            byterange_start: attr(&attrs, "BYTERANGE-START")
                                .and_then(|v| v.parse().ok()),
                        });
                    }
                }
                "EXT-X-MAP" => {
                    pl.map = attr(&attributes(value), "URI").map(str::to_string);
                    current.map.clone_from(&pl.map);
                }
                "EXT-X-SKIP" => {
                    pl.skipped = attr(&attributes(value), "SKIPPED-SEGMENTS")
                        .and_then(|v| v.parse().ok())
                        .ok_or(ParseError("bad EXT-X-SKIP"))?
                }
                "EXT-X-RENDITION-REPORT" => {
                    let attrs = attributes(value);
                    let number = |k| attr(&attrs, k).and_then(|v: &str| v.parse().ok());
                    if let (Some(uri), Some(last_msn)) = (attr(&attrs, "URI"), number("LAST-MSN")) {
                        pl.rendition_reports.push(RenditionReport {
                            uri: uri.to_string(),
                            last_msn,
                            last_part: number("LAST-PART"),
                        });
                    }
                }
                "EXT-X-ENDLIST" => pl.ended = true,
                "EXT-X-PLAYLIST-TYPE" => pl.event = matches!(value, "EVENT" | "VOD"),
                _ => {}
            }
        }
        // Parts after the last EXTINF belong to the segment still being built.
        pl.pending_parts = current.parts;
        pl.target_duration = target.ok_or(ParseError("missing TARGETDURATION"))?;
        Ok(pl)
    }
}

/// Why playlist text could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid playlist: {0}")]
pub struct ParseError(pub(crate) &'static str);

/// Writes EXT-X-MAP for `wanted` unless it is the map already in force.
fn write_map<'a>(out: &mut String, map: &mut Option<&'a str>, wanted: Option<&'a String>) {
    if let Some(uri) = wanted.filter(|w| Some(w.as_str()) != *map) {
        let _ = writeln!(out, "#EXT-X-MAP:URI=\"{uri}\"");
        *map = Some(uri);
    }
}

fn render_part(out: &mut String, part: &Part) {
    let _ = write!(
        out,
        "#EXT-X-PART:DURATION={:.3},URI=\"{}\"",
        part.duration, part.uri
    );
    if part.independent {
        out.push_str(",INDEPENDENT=YES");
    }
    if let Some(range) = part.byterange {
        let _ = write!(out, ",BYTERANGE=\"{}@{}\"", range.length, range.offset);
    }
    out.push('\n');
}

/// Where a part's byte range without an offset starts: right after the previous part of the
/// same resource (draft-pantos-hls-rfc8216bis §4.4.4.9), else at 0.
fn previous_end(parts: &[Part], uri: Option<&str>) -> u64 {
    parts
        .last()
        .filter(|p| Some(p.uri.as_str()) == uri)
        .and_then(|p| p.byterange)
        .map_or(0, |r| r.end())
}

/// `length[@offset]`.
fn parse_byterange(value: &str, default_offset: u64) -> Result<ByteRange, ParseError> {
    let bad = || ParseError("bad BYTERANGE");
    let (length, offset) = match value.split_once('@') {
        Some((l, o)) => (l, Some(o)),
        None => (value, None),
    };
    Ok(ByteRange {
        length: length.parse().map_err(|_| bad())?,
        offset: match offset {
            Some(o) => o.parse().map_err(|_| bad())?,
            None => default_offset,
        },
    })
}

/// Formats seconds without trailing zeros (3.000 → 3, 0.500 → 0.5).
fn num(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Splits an attribute list (`A=1,B="x,y"`) into pairs, honouring quotes.
pub(crate) fn attributes(list: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut rest = list;
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.split_once('"') {
                Some((v, tail)) => (v, tail.strip_prefix(',').unwrap_or(tail)),
                None => (quoted, ""),
            }
        } else {
            match after.split_once(',') {
                Some((v, tail)) => (v, tail),
                None => (after, ""),
            }
        };
        out.push((key.trim(), value));
        rest = next;
    }
    out
}

pub(crate) fn attr<'a>(attrs: &[(&str, &'a str)], key: &str) -> Option<&'a str> {
    attrs.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

/// File name of every stream's media playlist, next to its segments.
pub const PLAYLIST_NAME: &str = "index.m3u8";

/// The wall-clock time `delta_ms` after `wall` (before it when negative).
pub fn offset_time(wall: SystemTime, delta_ms: i64) -> SystemTime {
    if delta_ms >= 0 {
        wall + Duration::from_millis(delta_ms as u64)
    } else {
        wall - Duration::from_millis(delta_ms.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(i: u64) -> PlaylistSegment {
        PlaylistSegment {
            uri: format!("s{i}.ts"),
            duration: 2.002,
            program_date_time: Some(
                SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + i * 2000),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn gap_segments_round_trip() {
        let mut pl = MediaPlaylist::new(2, 0);
        pl.push(seg(0));
        pl.push(PlaylistSegment {
            gap: true,
            ..seg(1)
        });
        pl.push(seg(2));
        let text = pl.render();
        assert!(
            text.contains("#EXT-X-GAP\n#EXTINF:2.002,\ns1.ts\n"),
            "{text}"
        );
        assert_eq!(text.matches("#EXT-X-GAP").count(), 1, "{text}");
        let parsed = MediaPlaylist::parse(&text).expect("parse");
        let gaps: Vec<bool> = parsed.segments.iter().map(|s| s.gap).collect();
        assert_eq!(gaps, [false, true, false]);
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
        assert!(!MediaPlaylist::parse(&text).unwrap().ended);
        pl.ended = true;
        assert!(MediaPlaylist::parse(&pl.render()).unwrap().ended);
        assert_eq!(
            MediaPlaylist::parse(&pl.render()).unwrap().render(),
            pl.render()
        );
    }

    fn low_latency() -> MediaPlaylist {
        let mut pl = MediaPlaylist::new(2, 0);
        pl.part_target = Some(0.5);
        pl.server_control = Some(ServerControl {
            can_block_reload: true,
            can_skip_until: Some(12.0),
            part_hold_back: Some(1.5),
            hold_back: None,
        });
        for i in 0..10 {
            let mut s = seg(i);
            s.parts = (0..4)
                .map(|p| Part {
                    uri: format!("s{i}.{p}.m4s"),
                    duration: 0.5,
                    independent: p == 0,
                    byterange: None,
                })
                .collect();
            pl.push(s);
        }
        pl.pending_parts = vec![Part {
            uri: "s10.0.m4s".into(),
            duration: 0.5,
            independent: true,
            byterange: None,
        }];
        pl.preload_hint = Some(PreloadHint {
            uri: "s10.1.m4s".into(),
            byterange_start: None,
        });
        pl
    }

    #[test]
    fn byte_range_parts_round_trip() {
        let mut pl = MediaPlaylist::new(2, 0);
        pl.part_target = Some(0.5);
        let part = |offset, length| Part {
            uri: "s1.m4s".into(),
            duration: 0.5,
            independent: offset == 0,
            byterange: Some(ByteRange { length, offset }),
        };
        pl.pending_parts = vec![part(0, 1000), part(1000, 250)];
        pl.preload_hint = Some(PreloadHint {
            uri: "s1.m4s".into(),
            byterange_start: Some(1250),
        });
        let text = pl.render();
        assert!(text.contains(
            "#EXT-X-PART:DURATION=0.500,URI=\"s1.m4s\",BYTERANGE=\"250@1000\"\n\
             #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"s1.m4s\",BYTERANGE-START=1250\n"
        ));
        let parsed = MediaPlaylist::parse(&text).unwrap();
        assert_eq!(parsed, pl);
        // An offset left out continues the previous part of the same resource.
        let short = text.replace("\"250@1000\"", "\"250\"");
        assert_eq!(MediaPlaylist::parse(&short).unwrap(), pl);
        assert!(MediaPlaylist::parse(&text.replace("250@1000", "x@1")).is_err());
    }

    #[test]
    fn low_latency_tags_round_trip() {
        let pl = low_latency();
        let text = pl.render();
        assert!(text.contains(
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=12,PART-HOLD-BACK=1.5\n"
        ));
        assert!(text.contains("#EXT-X-PART-INF:PART-TARGET=0.5\n"));
        assert!(text.contains("#EXT-X-PART:DURATION=0.500,URI=\"s3.0.m4s\",INDEPENDENT=YES\n"));
        assert!(text.ends_with("#EXT-X-PART:DURATION=0.500,URI=\"s10.0.m4s\",INDEPENDENT=YES\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"s10.1.m4s\"\n"));
        let parsed = MediaPlaylist::parse(&text).unwrap();
        assert_eq!(parsed.render(), text);
        assert_eq!(parsed.last_position(), Some((10, 0)));
    }

    #[test]
    fn rendition_reports_round_trip_after_the_parts() {
        let mut pl = low_latency();
        pl.rendition_reports = vec![
            RenditionReport {
                uri: "../360p/index.m3u8".into(),
                last_msn: 10,
                last_part: Some(2),
            },
            RenditionReport {
                uri: "../index.m3u8".into(),
                last_msn: 9,
                last_part: None,
            },
        ];
        let text = pl.render();
        assert!(text.ends_with(
            "#EXT-X-RENDITION-REPORT:URI=\"../360p/index.m3u8\",LAST-MSN=10,LAST-PART=2\n\
             #EXT-X-RENDITION-REPORT:URI=\"../index.m3u8\",LAST-MSN=9\n"
        ));
        assert_eq!(MediaPlaylist::parse(&text).unwrap(), pl);
    }

    #[test]
    fn delta_update_skips_old_segments() {
        let pl = low_latency();
        let delta = pl.delta();
        // 12 s of skip boundary with 2 s segments: the newest six stay.
        assert_eq!(delta.segments.len(), 6);
        assert_eq!(delta.skipped, 4);
        assert_eq!(delta.next_sequence(), pl.next_sequence());
        let text = delta.render();
        assert!(text.contains("#EXT-X-VERSION:9\n"));
        assert!(text.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=4\n"));
        assert_eq!(MediaPlaylist::parse(&text).unwrap().skipped, 4);
    }

    #[test]
    fn discontinuities_carry_their_init_segment_and_count_when_they_leave() {
        let mut pl = MediaPlaylist::new(2, 3);
        pl.map = Some("a-init.mp4".into());
        pl.push(seg(0));
        pl.push(seg(1));
        pl.map = Some("b-init.mp4".into());
        pl.push(PlaylistSegment {
            discontinuity: true,
            ..seg(2)
        });
        pl.push(seg(3));
        let text = pl.render();
        // Segment 0 left without a tag: the sequence stays; the new map follows the tag.
        assert_eq!(pl.discontinuity_sequence, 0);
        assert!(text.contains("#EXT-X-MAP:URI=\"a-init.mp4\"\n#EXT-X-PROGRAM-DATE-TIME"));
        assert!(text.contains("#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"b-init.mp4\""));
        assert_eq!(text.matches("#EXT-X-MAP").count(), 2);
        let reparsed = |text: &str| MediaPlaylist {
            window: 3,
            ..MediaPlaylist::parse(text).unwrap()
        };
        assert_eq!(reparsed(&text), pl);
        pl.push(seg(4));
        pl.push(seg(5));
        // The segment with the tag left: the sequence counts it.
        assert_eq!(pl.discontinuity_sequence, 1);
        let text = pl.render();
        assert_eq!(text.matches("#EXT-X-MAP").count(), 1);
        assert!(!text.contains("#EXT-X-DISCONTINUITY\n"));
        assert_eq!(reparsed(&text), pl);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(MediaPlaylist::parse("hello").is_err());
        assert!(MediaPlaylist::parse("#EXTM3U\nseg.ts\n").is_err());
        assert!(MediaPlaylist::parse("#EXTM3U\n#EXTINF:x,\nseg.ts\n").is_err());
        assert!(MediaPlaylist::parse("#EXTM3U\n#EXTINF:1,\nseg.ts\n").is_err());
    }
}
