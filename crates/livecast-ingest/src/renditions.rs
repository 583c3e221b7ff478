//! The renditions of a stream and its master playlist.
//!
//! A stream has renditions when its encoder publishes several names that group them
//! (`talk@720p`, `talk@360p`: the publisher-side ladder) or when `--ladder` transcodes a publish
//! of `talk` (the server-side ladder, see `ladder`). Each rendition is an ordinary publish with
//! its own directory (`talk@720p/`) and pipeline; what ties them together lives here:
//!
//! - **Aligned segments.** A rendition's segments are cut on the clock (see
//!   `Segmenter::align_to_clock`), and its first segment takes the media sequence number the
//!   group gave the segment that starts in the same clock slot, so segments with one number
//!   start at one frame in every rendition and a player switches at any boundary.
//! - **The master playlist**, `<stream>/master.m3u8` (RFC 8216 §4.3.4.2): one
//!   `EXT-X-STREAM-INF` per rendition that has a complete segment and has not ended, with
//!   BANDWIDTH and AVERAGE-BANDWIDTH measured from the segments written, CODECS, RESOLUTION
//!   and FRAME-RATE, highest bandwidth first. It is written only when a rendition exists, and
//!   again whenever what it says changes.
//! - **Rendition reports**: every rendition's playlist says where the others stand.
//!
//! On the viewers' side a rendition is served at `/hls/<stream>/<rendition>/`; the source of
//! a server-side ladder stays at `/hls/<stream>/index.m3u8`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use livecast_media::master::{MasterPlaylist, Variant};
use livecast_media::playlist::{RenditionReport, PLAYLIST_NAME};

/// The master playlist's file name in the stream's directory.
pub(crate) const MASTER_NAME: &str = "master.m3u8";

/// Segment starts kept per group for renditions that join later.
const STARTS_KEPT: usize = 32;

/// How far a joining rendition's presentation time may be from where the group's timeline
/// stands now before it is taken for another timeline (an encoder that restarted counts from
/// 0 again). A transcoder lags its source by a few seconds at most.
const TIMELINE_SLACK_MS: i64 = 10_000;

/// Where a segment of the group started.
#[derive(Debug, Clone, Copy)]
struct Start {
    /// Its clock slot (presentation time divided by the target duration).
    slot: i64,
    sequence: u64,
    /// Its presentation time, and when it was recorded: where the timeline stands now.
    pts_ms: i64,
    at: Instant,
}

/// What one rendition says about itself after a cut.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Facts {
    /// BANDWIDTH, AVERAGE-BANDWIDTH, CODECS, RESOLUTION, FRAME-RATE (the URI is the group's).
    pub variant: Variant,
    /// Its newest position: media sequence number and part index, if it has a playlist.
    pub position: Option<(u64, Option<u64>)>,
}

#[derive(Debug, Default)]
struct Group {
    /// By rendition name; the stream's own publish (the source of a server-side ladder) is "".
    members: BTreeMap<String, Facts>,
    /// Where recent segments started, by slot.
    starts: VecDeque<Start>,
    /// The master text last written.
    written: Option<String>,
}

/// Every stream's renditions.
#[derive(Debug)]
pub(crate) struct Renditions {
    hls_dir: PathBuf,
    /// The target duration: the length of a clock slot.
    target_ms: i64,
    groups: Mutex<HashMap<String, Group>>,
}

/// A media playlist's URI as the master lists it: `index.m3u8` for the stream's own publish,
/// `<rendition>/index.m3u8` for a rendition.
fn master_uri(rendition: &str) -> String {
    if rendition.is_empty() {
        PLAYLIST_NAME.to_string()
    } else {
        format!("{rendition}/{PLAYLIST_NAME}")
    }
}

/// The URI of rendition `to`'s playlist relative to rendition `from`'s.
fn relative_uri(from: &str, to: &str) -> String {
    if from.is_empty() {
        master_uri(to)
    } else {
        format!("../{}", master_uri(to))
    }
}

impl Renditions {
    /// Every stream's renditions under `hls_dir`, cut on a clock of `target_ms` slots.
    pub fn new(hls_dir: PathBuf, target_ms: i64) -> Self {
        Self {
            hls_dir,
            target_ms: target_ms.max(1),
            groups: Mutex::new(HashMap::new()),
        }
    }

    /// The clock slot of presentation time `pts_ms`.
    pub fn slot(&self, pts_ms: i64) -> i64 {
        pts_ms.div_euclid(self.target_ms)
    }

    /// The media sequence number for a publish of `rendition` whose first segment starts at
    /// presentation time `pts_ms`: the one the group gave (or is about to give) the segment
    /// starting in that clock slot. `None` when the group has no segments to go by, or when
    /// they are of another timeline (their encoder restarted, or this one did): those are
    /// forgotten.
    pub fn sequence_for(&self, stream: &str, rendition: &str, pts_ms: i64) -> Option<u64> {
        let mut groups = self.groups.lock().ok()?;
        let group = groups.get_mut(stream)?;
        let others = group.members.keys().any(|name| name != rendition);
        if !others {
            return None;
        }
        let newest = group.starts.iter().max_by_key(|s| s.at)?;
        let elapsed = i64::try_from(newest.at.elapsed().as_millis()).unwrap_or(i64::MAX);
        let timeline_now = newest.pts_ms.saturating_add(elapsed);
        if (pts_ms - timeline_now).abs() > TIMELINE_SLACK_MS {
            group.starts.clear();
            return None;
        }
        let slot = self.slot(pts_ms);
        let start = group.starts.iter().rev().find(|s| s.slot <= slot)?;
        Some(start.sequence + u64::from(slot > start.slot))
    }

    /// A segment of the group with number `sequence` started at presentation time `pts_ms`.
    pub fn segment_started(&self, stream: &str, pts_ms: i64, sequence: u64) {
        let Ok(mut groups) = self.groups.lock() else {
            return;
        };
        let slot = self.slot(pts_ms);
        let group = groups.entry(stream.to_string()).or_default();
        if group.starts.iter().any(|s| s.slot == slot) {
            return;
        }
        let at = group.starts.partition_point(|s| s.slot < slot);
        group.starts.insert(
            at,
            Start {
                slot,
                sequence,
                pts_ms,
                at: Instant::now(),
            },
        );
        while group.starts.len() > STARTS_KEPT {
            group.starts.pop_front();
        }
    }

    /// Records what `rendition` of `stream` says now, rewrites the master playlist if that
    /// changes it, and returns the reports of the other renditions for its own playlist.
    pub fn update(
        &self,
        stream: &str,
        rendition: &str,
        facts: Facts,
    ) -> std::io::Result<Vec<RenditionReport>> {
        let Ok(mut groups) = self.groups.lock() else {
            return Ok(Vec::new());
        };
        let group = groups.entry(stream.to_string()).or_default();
        // Positions change with every part; the master only with what it lists.
        let changed = group.members.get(rendition).map(|f| &f.variant) != Some(&facts.variant);
        group.members.insert(rendition.to_string(), facts);
        let reports = group
            .members
            .iter()
            .filter(|(name, _)| name.as_str() != rendition)
            .filter_map(|(name, other)| {
                let (last_msn, last_part) = other.position?;
                Some(RenditionReport {
                    uri: relative_uri(rendition, name),
                    last_msn,
                    last_part,
                })
            })
            .collect();
        if changed {
            self.write_master(stream, group)?;
        }
        Ok(reports)
    }

    /// `rendition` of `stream` ended: the master no longer lists it.
    pub fn ended(&self, stream: &str, rendition: &str) -> std::io::Result<()> {
        let Ok(mut groups) = self.groups.lock() else {
            return Ok(());
        };
        let Some(group) = groups.get_mut(stream) else {
            return Ok(());
        };
        if group.members.remove(rendition).is_none() {
            return Ok(());
        }
        if group.members.is_empty() {
            // The master stays as the last renditions left it: their playlists say they ended.
            groups.remove(stream);
            return Ok(());
        }
        self.write_master(stream, group)
    }

    /// The master as the group stands, if a rendition is listed.
    fn render(group: &Group) -> Option<String> {
        let has_rendition = group
            .members
            .iter()
            .any(|(name, facts)| !name.is_empty() && facts.variant.bandwidth > 0);
        if !has_rendition {
            return None;
        }
        let mut variants: Vec<Variant> = group
            .members
            .iter()
            .filter(|(_, facts)| facts.variant.bandwidth > 0)
            .map(|(name, facts)| Variant {
                uri: master_uri(name),
                ..facts.variant.clone()
            })
            .collect();
        variants.sort_by(|a, b| b.bandwidth.cmp(&a.bandwidth).then(a.uri.cmp(&b.uri)));
        Some(
            MasterPlaylist {
                variants,
                independent_segments: true,
            }
            .render(),
        )
    }

    /// Writes the master if its text changed; under the group's lock, so the newest text is
    /// the one left in place.
    fn write_master(&self, stream: &str, group: &mut Group) -> std::io::Result<()> {
        let Some(text) = Self::render(group) else {
            return Ok(());
        };
        if group.written.as_deref() == Some(text.as_str()) {
            return Ok(());
        }
        write_whole(&self.hls_dir.join(stream), MASTER_NAME, text.as_bytes())?;
        group.written = Some(text);
        Ok(())
    }
}

/// Writes `name` in `dir` whole: into a hidden file beside it, then renamed over it.
fn write_whole(dir: &Path, name: &str, data: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, dir.join(name))
}

/// The bit rates of a rendition's recent segments (those in its playlist window): BANDWIDTH is
/// the peak over segments at least half the target duration long (a rendition that joined
/// late starts with a short segment, mostly keyframe, whose rate says nothing about the
/// stream's), AVERAGE-BANDWIDTH the rate over all of them.
#[derive(Debug)]
pub(crate) struct BitRates {
    window: usize,
    min_ms: i64,
    /// (bytes, milliseconds) per segment, newest last.
    segments: VecDeque<(u64, i64)>,
}

impl BitRates {
    pub fn new(window: usize, target_ms: i64) -> Self {
        Self {
            window: window.max(3),
            min_ms: (target_ms / 2).max(1),
            segments: VecDeque::new(),
        }
    }

    /// A segment of `bytes` lasting `duration_ms` was written.
    pub fn add(&mut self, bytes: u64, duration_ms: i64) {
        if duration_ms <= 0 {
            return;
        }
        self.segments.push_back((bytes, duration_ms));
        while self.segments.len() > self.window {
            self.segments.pop_front();
        }
    }

    /// (peak, average) bits per second; `None` before the first segment.
    pub fn rates(&self) -> Option<(u64, u64)> {
        let rate = |bytes: u64, ms: i64| bytes * 8000 / ms.max(1) as u64;
        let (bytes, ms) = self
            .segments
            .iter()
            .fold((0, 0), |(b, m), (bytes, ms)| (b + bytes, m + ms));
        if ms == 0 {
            return None;
        }
        let average = rate(bytes, ms);
        let peak = self
            .segments
            .iter()
            .filter(|(_, ms)| *ms >= self.min_ms)
            .map(|(bytes, ms)| rate(*bytes, *ms))
            .max()
            .unwrap_or(average);
        Some((peak.max(average), average))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(bandwidth: u64, msn: u64) -> Facts {
        Facts {
            variant: Variant {
                bandwidth,
                resolution: Some((640, 360)),
                ..Variant::default()
            },
            position: Some((msn, Some(1))),
        }
    }

    #[test]
    fn the_master_lists_live_renditions_highest_first() {
        let dir = tempfile::tempdir().unwrap();
        let renditions = Renditions::new(dir.path().to_path_buf(), 2000);
        let master = dir.path().join("talk").join(MASTER_NAME);
        // The source alone makes no master.
        assert!(renditions
            .update("talk", "", facts(3_000_000, 5))
            .unwrap()
            .is_empty());
        assert!(!master.exists());
        let reports = renditions
            .update("talk", "360p", facts(800_000, 4))
            .unwrap();
        assert_eq!(
            reports,
            [RenditionReport {
                uri: "../index.m3u8".into(),
                last_msn: 5,
                last_part: Some(1)
            }]
        );
        let text = std::fs::read_to_string(&master).unwrap();
        let parsed = MasterPlaylist::parse(&text).unwrap();
        let uris: Vec<&str> = parsed.variants.iter().map(|v| v.uri.as_str()).collect();
        assert_eq!(uris, ["index.m3u8", "360p/index.m3u8"]);
        assert!(parsed.independent_segments);
        let reports = renditions.update("talk", "", facts(3_000_000, 6)).unwrap();
        assert_eq!(reports[0].uri, "360p/index.m3u8");
        renditions.ended("talk", "").unwrap();
        let parsed = MasterPlaylist::parse(&std::fs::read_to_string(&master).unwrap()).unwrap();
        assert_eq!(parsed.variants.len(), 1);
    }

    #[test]
    fn a_late_rendition_takes_the_sequence_number_of_its_slot() {
        // Slots of 1 s; the group's segments 10 and 11 started at 4 s and 6 s.
        let renditions = Renditions::new(PathBuf::from("/nonexistent"), 1000);
        assert_eq!(renditions.sequence_for("s", "a", 5000), None);
        renditions.segment_started("s", 4000, 10);
        renditions.segment_started("s", 6000, 11);
        // Only the rendition itself recorded starts: nothing to align with.
        if let Ok(mut groups) = renditions.groups.lock() {
            groups
                .get_mut("s")
                .unwrap()
                .members
                .insert("b".into(), Facts::default());
        }
        assert_eq!(renditions.sequence_for("s", "b", 6000), None);
        assert_eq!(renditions.sequence_for("s", "a", 6500), Some(11));
        assert_eq!(
            renditions.sequence_for("s", "a", 5000),
            Some(11),
            "a slot the others had no keyframe in: the next number"
        );
        assert_eq!(renditions.sequence_for("s", "a", 4000), Some(10));
        assert_eq!(
            renditions.sequence_for("s", "a", 9000),
            Some(12),
            "ahead of the others"
        );
        assert_eq!(
            renditions.sequence_for("s", "a", 1000),
            None,
            "older than any start"
        );
        // An encoder that restarted counts from 0 again: the old timeline's starts say
        // nothing about the new one, and are forgotten.
        renditions.segment_started("s", 120_000, 40);
        assert_eq!(renditions.sequence_for("s", "a", 500), None);
        assert_eq!(
            renditions.sequence_for("s", "a", 120_500),
            None,
            "forgotten"
        );
        renditions.segment_started("s", 0, 41);
        assert_eq!(renditions.sequence_for("s", "a", 1500), Some(42));
    }

    #[test]
    fn bandwidth_is_the_peak_of_full_segments() {
        let mut rates = BitRates::new(3, 2000);
        assert_eq!(rates.rates(), None);
        rates.add(100_000, 200); // a short first segment: 4 Mb/s
        rates.add(250_000, 2000); // 1 Mb/s
        rates.add(300_000, 2000); // 1.2 Mb/s
                                  // The short segment is left out of the peak, not of the average; BANDWIDTH is never
                                  // below AVERAGE-BANDWIDTH.
        let (peak, average) = rates.rates().unwrap();
        assert_eq!(average, 650_000 * 8000 / 4200);
        assert_eq!(peak, average);
        rates.add(500_000, 2000); // 2 Mb/s
        assert_eq!(rates.rates().unwrap().0, 2_000_000);
        for _ in 0..3 {
            rates.add(125_000, 2000);
        }
        // (the window of three holds only these now)
        assert_eq!(rates.rates(), Some((500_000, 500_000)), "the window slid");
    }
}
