//! Turns RTMP video and audio tag bodies into whole MPEG-TS segments.
//!
//! A segment is cut at the first keyframe at or after the target duration, so every segment
//! starts with a keyframe and its length follows the encoder's GOP. Once the playlist has fixed
//! its target duration, [`Segmenter::set_max_duration`] adds a safety cut so that no segment
//! can outgrow it, even when the encoder stops sending keyframes. Streams without video are
//! cut on audio frames.

use crate::aac::AacConfig;
use crate::avc::AvcConfig;
use crate::flv::{self, AudioTag, VideoTag};
use crate::timestamp::TimestampExtender;
use crate::ts::{Tracks, TsMuxer};
use crate::MediaError;

/// Milliseconds to 90 kHz ticks.
const MS_TO_90K: i64 = 90;

/// A finished segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// The MPEG-TS bytes, starting with PAT and PMT.
    pub data: Vec<u8>,
    /// Decode time of the first frame on the extended RTMP timeline, in milliseconds.
    pub start_ms: i64,
    /// Duration in milliseconds (up to the first frame of the next segment).
    pub duration_ms: i64,
    /// Whether the segment starts with a keyframe (or carries no video).
    pub independent: bool,
}

#[derive(Debug)]
struct Building {
    data: Vec<u8>,
    start_ms: i64,
    last_ms: i64,
    independent: bool,
}

/// Cuts a publish into segments; see the module documentation.
#[derive(Debug)]
pub struct Segmenter {
    target_ms: i64,
    max_ms: Option<i64>,
    clock: TimestampExtender,
    avc: Option<AvcConfig>,
    aac: Option<AacConfig>,
    muxer: Option<TsMuxer>,
    current: Option<Building>,
    /// Duration of the most recent frame step, used to close the last segment.
    last_step_ms: i64,
    scratch: Vec<u8>,
}

impl Segmenter {
    /// A segmenter aiming at `target_ms` per segment.
    pub fn new(target_ms: u32) -> Self {
        Self {
            target_ms: i64::from(target_ms.max(1)),
            max_ms: None,
            clock: TimestampExtender::default(),
            avc: None,
            aac: None,
            muxer: None,
            current: None,
            last_step_ms: 0,
            scratch: Vec::new(),
        }
    }

    /// Caps segment length: a segment that reaches `max_ms` is cut at the next video frame even
    /// if it is not a keyframe.
    pub fn set_max_duration(&mut self, max_ms: u32) {
        self.max_ms = Some(i64::from(max_ms));
    }

    /// The tracks of the program, once the first frame has fixed them.
    pub fn tracks(&self) -> Option<Tracks> {
        self.muxer.as_ref().map(TsMuxer::tracks)
    }

    /// Feeds one video tag body with its RTMP timestamp; returns a segment when this frame
    /// closed one.
    pub fn push_video(
        &mut self,
        timestamp: u32,
        body: &[u8],
    ) -> Result<Option<Segment>, MediaError> {
        match flv::parse_video(body)? {
            VideoTag::AvcSequenceHeader(record) => {
                self.avc = Some(AvcConfig::parse(record)?);
                Ok(None)
            }
            VideoTag::AvcEndOfSequence | VideoTag::Command => Ok(None),
            VideoTag::AvcFrame {
                keyframe,
                composition_ms,
                data,
            } => {
                let Some(avc) = self.avc.as_ref() else {
                    return Err(MediaError::Invalid("avc frame before its sequence header"));
                };
                let mut annex_b = std::mem::take(&mut self.scratch);
                annex_b.clear();
                avc.to_annex_b(data, keyframe, &mut annex_b)?;
                let dts = self.clock.extend(timestamp);
                self.ensure_muxer();
                let muxer_has_video = self.tracks().is_some_and(|t| t.video);
                if !muxer_has_video {
                    // The program was fixed without video; a late video track cannot join it.
                    self.scratch = annex_b;
                    return Ok(None);
                }
                let cut = match &self.current {
                    None => None,
                    Some(cur) => {
                        let elapsed = dts - cur.start_ms;
                        let due = elapsed >= self.target_ms && keyframe;
                        let forced = self.max_ms.is_some_and(|max| elapsed >= max);
                        (due || forced).then(|| self.close(dts))
                    }
                };
                let pts = dts + i64::from(composition_ms);
                let (cur, muxer) = self.open(dts, keyframe);
                muxer.write_video(&mut cur.data, to_90k(pts), to_90k(dts), keyframe, &annex_b);
                self.scratch = annex_b;
                Ok(cut.flatten())
            }
        }
    }

    /// Feeds one audio tag body with its RTMP timestamp; returns a segment when this frame
    /// closed one (only for streams without video).
    pub fn push_audio(
        &mut self,
        timestamp: u32,
        body: &[u8],
    ) -> Result<Option<Segment>, MediaError> {
        match flv::parse_audio(body)? {
            AudioTag::AacSequenceHeader(asc) => {
                self.aac = Some(AacConfig::parse(asc)?);
                Ok(None)
            }
            AudioTag::AacFrame(raw) => {
                let Some(aac) = self.aac else {
                    return Err(MediaError::Invalid("aac frame before its sequence header"));
                };
                if raw.is_empty() {
                    return Ok(None);
                }
                let header = aac.adts_header(raw.len())?;
                let ts = self.clock.extend(timestamp);
                self.ensure_muxer();
                let tracks = self.tracks().unwrap_or(Tracks {
                    video: false,
                    audio: false,
                });
                if !tracks.audio {
                    return Ok(None);
                }
                let cut = match &self.current {
                    Some(cur) if !tracks.video && ts - cur.start_ms >= self.target_ms => {
                        self.close(ts)
                    }
                    _ => None,
                };
                if tracks.video && self.current.is_none() {
                    // Audio before the first video frame would start the first segment without a
                    // keyframe; it is dropped until video begins.
                    return Ok(cut);
                }
                let mut frame = Vec::with_capacity(header.len() + raw.len());
                frame.extend_from_slice(&header);
                frame.extend_from_slice(raw);
                let (cur, muxer) = self.open(ts, true);
                muxer.write_audio(&mut cur.data, to_90k(ts), &frame);
                Ok(cut)
            }
        }
    }

    /// Closes the segment in progress at the end of a publish.
    pub fn finish(&mut self) -> Option<Segment> {
        let end = self.current.as_ref()?.last_ms + self.last_step_ms.max(1);
        self.close(end)
    }

    fn ensure_muxer(&mut self) {
        if self.muxer.is_none() {
            self.muxer = Some(TsMuxer::new(Tracks {
                video: self.avc.is_some(),
                audio: self.aac.is_some(),
            }));
        }
    }

    /// Returns the segment in progress (opening one at `ts` if none is) with the muxer, and
    /// records `ts` as its latest frame.
    fn open(&mut self, ts: i64, independent: bool) -> (&mut Building, &mut TsMuxer) {
        if let Some(cur) = &self.current {
            // Remember the frame spacing so the final segment gets a sensible length.
            let step = ts - cur.last_ms;
            if step > 0 && step < 1000 {
                self.last_step_ms = step;
            }
        }
        let muxer = self
            .muxer
            .as_mut()
            .expect("muxer exists before a segment opens");
        let cur = self.current.get_or_insert_with(|| {
            let mut data = Vec::with_capacity(256 * 1024);
            muxer.write_tables(&mut data);
            Building {
                data,
                start_ms: ts,
                last_ms: ts,
                independent,
            }
        });
        cur.last_ms = cur.last_ms.max(ts);
        (cur, muxer)
    }

    fn close(&mut self, end_ms: i64) -> Option<Segment> {
        let cur = self.current.take()?;
        Some(Segment {
            duration_ms: (end_ms - cur.start_ms).max(0),
            start_ms: cur.start_ms,
            independent: cur.independent,
            data: cur.data,
        })
    }
}

fn to_90k(ms: i64) -> u64 {
    // PTS may sit slightly before zero with B-frames; the 33-bit field wraps like the clock does.
    (ms * MS_TO_90K).rem_euclid(1 << 33) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const AVC_HEADER: [u8; 21] = [
        0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1f, 0xff, 0xe1, 0, 3, 0x67, 0x64, 0x1f, 1, 0, 2, 0x68, 0xee,
    ];

    fn frame(keyframe: bool) -> Vec<u8> {
        let mut f = vec![if keyframe { 0x17 } else { 0x27 }, 1, 0, 0, 0, 0, 0, 0, 2];
        f.extend_from_slice(if keyframe {
            &[0x65, 0x88]
        } else {
            &[0x41, 0x9a]
        });
        f
    }

    #[test]
    fn cuts_at_first_keyframe_after_target() {
        let mut seg = Segmenter::new(2000);
        assert_eq!(seg.push_video(0, &AVC_HEADER).unwrap(), None);
        let mut cuts = Vec::new();
        // 30 fps-ish frames with a keyframe every 1.5 s.
        for i in 0..200u32 {
            let ts = i * 33;
            if let Some(s) = seg.push_video(ts, &frame(i % 45 == 0)).unwrap() {
                cuts.push(s);
            }
        }
        assert!(cuts.len() >= 2);
        for s in &cuts {
            assert!(s.independent);
            assert!(s.duration_ms >= 2000, "{}", s.duration_ms);
            assert_eq!(s.data.len() % 188, 0);
        }
        assert_eq!(cuts[0].duration_ms, 90 * 33);
        let last = seg.finish().unwrap();
        assert!(last.duration_ms > 0);
    }

    #[test]
    fn max_duration_forces_a_cut_without_keyframes() {
        let mut seg = Segmenter::new(2000);
        seg.set_max_duration(2500);
        seg.push_video(0, &AVC_HEADER).unwrap();
        let mut cuts = Vec::new();
        for i in 0..300u32 {
            if let Some(s) = seg.push_video(i * 33, &frame(i == 0)).unwrap() {
                cuts.push(s);
            }
        }
        assert!(cuts.len() >= 3);
        assert!(cuts.iter().all(|s| s.duration_ms <= 2500 + 33));
        assert!(!cuts[1].independent);
    }

    #[test]
    fn audio_only_streams_cut_on_audio() {
        let mut seg = Segmenter::new(1000);
        seg.push_audio(0, &[0xaf, 0, 0x12, 0x10]).unwrap();
        let mut cuts = 0;
        for i in 0..100u32 {
            if seg
                .push_audio(i * 23, &[0xaf, 1, 0x21, 0x10, 0x04])
                .unwrap()
                .is_some()
            {
                cuts += 1;
            }
        }
        assert_eq!(cuts, 2);
        assert_eq!(
            seg.tracks(),
            Some(Tracks {
                video: false,
                audio: true
            })
        );
    }

    #[test]
    fn frame_before_header_is_an_error() {
        let mut seg = Segmenter::new(1000);
        assert!(seg.push_video(0, &frame(true)).is_err());
        assert!(seg.push_audio(0, &[0xaf, 1, 1]).is_err());
    }
}
