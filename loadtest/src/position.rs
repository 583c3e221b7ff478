//! Where a viewer is in a media playlist and what it offers from there: the start position
//! hls.js would choose, the parts or segments to fetch next, the position after a variant
//! switch, and URL resolution.

use std::time::{Duration, SystemTime};

use livecast_media::playlist::{ByteRange, MediaPlaylist};

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
    let first = first_listed(playlist);
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
        msn: first_listed(playlist),
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

/// The sequence number of the first segment listed: a delta update (`_HLS_skip`) replaces the
/// oldest with EXT-X-SKIP, and MEDIA-SEQUENCE still names the first skipped one.
pub(crate) fn first_listed(playlist: &MediaPlaylist) -> u64 {
    playlist.media_sequence + playlist.skipped
}

/// The sequence number after the last complete segment listed.
pub(crate) fn end_of_list(playlist: &MediaPlaylist) -> u64 {
    first_listed(playlist) + playlist.segments.len() as u64
}

/// Where a viewer that has played up to wall-clock time `at` (PROGRAM-DATE-TIME) continues in
/// another variant: the last independent unit that starts at or before `at`, and how much of
/// it lies before `at` (decoded, not shown). `None` when the playlist carries no
/// PROGRAM-DATE-TIME or does not reach back to `at`.
pub(crate) fn position_at(
    playlist: &MediaPlaylist,
    parts: bool,
    at: SystemTime,
) -> Option<(Position, f64)> {
    let first = Position {
        msn: first_listed(playlist),
        part: 0,
    };
    let units = available(playlist, first, parts);
    let start = units
        .iter()
        .filter(|u| u.independent)
        .take_while(|u| u.pdt.is_some_and(|t| t <= at))
        .last()?;
    let skip = at
        .duration_since(start.pdt?)
        .unwrap_or_default()
        .as_secs_f64();
    let pos = Position {
        msn: start.msn,
        part: start.part.unwrap_or(0),
    };
    Some((pos, skip))
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

pub(crate) fn with_query(url: &str, query: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{query}")
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
    fn delta_updates_and_variant_switches_find_their_place() {
        // A delta update: MEDIA-SEQUENCE 10, three skipped, so the first listed is 13.
        let mut delta = live(3, "#EXT-X-SKIP:SKIPPED-SEGMENTS=3\n");
        delta.skipped = 3;
        assert_eq!(first_listed(&delta), 13);
        assert_eq!(end_of_list(&delta), 16);
        let units = available(&delta, Position { msn: 14, part: 0 }, false);
        assert_eq!(units.iter().map(|u| u.msn).collect::<Vec<_>>(), [14, 15]);
        assert_eq!(units[0].uri, "s-1.ts", "the second listed segment");

        // Switching to a variant whose segments are numbered differently: by wall-clock time.
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut text =
            String::from("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:500\n");
        for i in 0..4u64 {
            let t = humantime::format_rfc3339_millis(t0 + Duration::from_secs(2 * i));
            text.push_str(&format!(
                "#EXT-X-PROGRAM-DATE-TIME:{t}\n#EXTINF:2.0,\nv-{i}.ts\n"
            ));
        }
        let other = MediaPlaylist::parse(&text).unwrap();
        let (pos, skip) = position_at(&other, false, t0 + Duration::from_millis(4500)).unwrap();
        assert_eq!(pos, Position { msn: 502, part: 0 });
        assert!((skip - 0.5).abs() < 1e-6, "{skip}");
        assert!(position_at(&other, false, t0 - Duration::from_secs(1)).is_none());
        assert!(
            position_at(&live(3, ""), false, t0).is_none(),
            "no PROGRAM-DATE-TIME"
        );
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
}
