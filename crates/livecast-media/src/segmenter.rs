//! Turns RTMP video and audio tag bodies into LL-HLS parts and whole segments, packaged as
//! MPEG-TS or fragmented MP4.
//!
//! A segment is cut at the first keyframe at or after the target duration, so every segment
//! starts with a keyframe and its length follows the encoder's GOP. Inside a segment a part is
//! cut at the first frame at or after the part target; a part that starts with a keyframe is
//! independent. Every segment boundary is also a part boundary, and a segment's bytes are its
//! parts' bytes back to back. Once the playlist has fixed its target duration,
//! [`Segmenter::set_max_duration`] adds a safety cut so that no segment can outgrow it, even when
//! the encoder stops sending keyframes. Streams without video are cut on audio frames.
//!
//! In fMP4 a video sample's duration is only known when the next frame arrives, so the newest
//! video frame is held back until then; every part is one `moof` + `mdat` fragment.

use crate::aac::AacConfig;
use crate::av1::Av1Config;
use crate::avc::{self, AvcConfig};
use crate::flv::{self, AudioTag, VideoTag};
use crate::fmp4::{self, AudioTrack, Sample, TrackRun, VideoCodec, VideoTrack};
use crate::hevc::{self, HevcConfig};
use crate::timestamp::TimestampExtender;
use crate::ts::{Tracks, TsMuxer};
use crate::MediaError;

/// Milliseconds to 90 kHz ticks.
const MS_TO_90K: i64 = 90;
/// AAC frames carry 1024 samples.
const AAC_FRAME_SAMPLES: u32 = 1024;
/// Longest duration given to one video sample; a longer gap is left as a gap in the timeline.
const MAX_SAMPLE_MS: i64 = 10_000;
/// A step between frames larger than this, forward or back, is a timestamp jump.
const MAX_JUMP_MS: i64 = 1_000;

/// How segments and parts are packaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    /// MPEG-TS (`.ts`); parts that start a segment or a keyframe carry PAT and PMT.
    Ts,
    /// Fragmented MP4 (`.m4s` with an `init.mp4`).
    Fmp4,
}

impl Container {
    /// File name extension of segments and parts.
    pub fn extension(self) -> &'static str {
        match self {
            Container::Ts => "ts",
            Container::Fmp4 => "m4s",
        }
    }
}

/// A finished part (or, for a segmenter without parts, a whole segment's bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The part's bytes.
    pub data: Vec<u8>,
    /// Decode time of the first frame on the extended RTMP timeline, in milliseconds.
    pub start_ms: i64,
    /// Duration in milliseconds (up to the first frame of the next part).
    pub duration_ms: i64,
    /// Whether the part starts with a keyframe (or carries no video).
    pub independent: bool,
}

/// A finished segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// The segment's bytes: its parts back to back (MPEG-TS starts with PAT and PMT).
    pub data: Vec<u8>,
    /// Decode time of the first frame on the extended RTMP timeline, in milliseconds.
    pub start_ms: i64,
    /// Duration in milliseconds (up to the first frame of the next segment).
    pub duration_ms: i64,
    /// Whether the segment starts with a keyframe (or carries no video).
    pub independent: bool,
    /// Presentation time of the first frame, in milliseconds (the decode time plus the
    /// keyframe's composition offset): what lines segments of several renditions up.
    pub start_pts_ms: i64,
}

/// What one frame closed: always a part, and the segment when the part ended one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// The part that ended.
    pub part: Part,
    /// The segment that ended with it.
    pub segment: Option<Segment>,
}

#[derive(Debug)]
struct Building {
    data: Vec<u8>,
    /// Bytes of the segment so far (with or without `data`).
    len: usize,
    start_ms: i64,
    start_pts_ms: i64,
    independent: bool,
}

#[derive(Debug, Default)]
struct BuildingPart {
    start_ms: i64,
    independent: bool,
    /// MPEG-TS bytes.
    ts: Vec<u8>,
    /// fMP4 runs.
    video: TrackRun,
    audio: TrackRun,
}

/// The decoder configuration of the video track.
#[derive(Debug)]
enum VideoConfig {
    Avc(AvcConfig),
    Hevc(HevcConfig),
    Av1(Av1Config),
}

impl VideoConfig {
    fn codec(&self) -> flv::VideoCodec {
        match self {
            VideoConfig::Avc(_) => flv::VideoCodec::Avc,
            VideoConfig::Hevc(_) => flv::VideoCodec::Hevc,
            VideoConfig::Av1(_) => flv::VideoCodec::Av1,
        }
    }

    /// Checks that an access unit splits into whole NAL units (AV1 OBUs are taken as they are).
    fn validate(&self, data: &[u8]) -> Result<(), MediaError> {
        match self {
            VideoConfig::Avc(c) => avc::split_avcc(data, c.nal_length_size).map(drop),
            VideoConfig::Hevc(c) => avc::split_avcc(data, c.nal_length_size).map(drop),
            VideoConfig::Av1(_) => Ok(()),
        }
    }

    fn to_annex_b(&self, data: &[u8], keyframe: bool, out: &mut Vec<u8>) -> Result<(), MediaError> {
        match self {
            VideoConfig::Avc(c) => c.to_annex_b(data, keyframe, out),
            VideoConfig::Hevc(c) => c.to_annex_b(data, keyframe, out),
            VideoConfig::Av1(_) => Err(MediaError::Unsupported {
                what: "av1 in mpeg-ts",
                value: 0,
            }),
        }
    }

    fn dimensions(&self) -> Result<(u32, u32), MediaError> {
        match self {
            VideoConfig::Avc(c) => {
                avc::sps_dimensions(c.sps.first().map_or(&[][..], Vec::as_slice))
            }
            VideoConfig::Hevc(c) => {
                hevc::sps_dimensions(c.sps.first().map_or(&[][..], Vec::as_slice))
            }
            VideoConfig::Av1(c) => Ok((c.width, c.height)),
        }
    }
}

/// What a publish carries, as measured from its frames, for operators.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamInfo {
    /// `h264`, `hevc` or `av1`, once the video sequence header came.
    pub video_codec: Option<&'static str>,
    /// Coded picture size, from the decoder configuration.
    pub width: u32,
    pub height: u32,
    /// Video frames per second over the publish so far.
    pub frame_rate: Option<f64>,
    /// Time between the two latest keyframes.
    pub keyframe_interval_ms: Option<i64>,
    /// `aac`, once the audio sequence header came.
    pub audio_codec: Option<&'static str>,
    /// The tracks' RFC 6381 codec strings, comma-separated (see [`crate::codecs`]).
    pub codecs: Option<String>,
}

/// Frame counts behind [`StreamInfo`].
#[derive(Debug, Default)]
struct Measure {
    video_frames: u64,
    first_video_ms: Option<i64>,
    newest_video_ms: i64,
    last_keyframe_ms: Option<i64>,
    keyframe_interval_ms: Option<i64>,
}

/// A video frame whose duration waits for the next one (fMP4). Its bytes are already in its
/// part's run; only the sample entry is held back.
#[derive(Debug)]
struct HeldFrame {
    dts_ms: i64,
    composition_ms: i32,
    keyframe: bool,
    size: usize,
}

/// Cuts a publish into parts and segments; see the module documentation.
#[derive(Debug)]
pub struct Segmenter {
    container: Container,
    target_ms: i64,
    part_ms: Option<i64>,
    max_ms: Option<i64>,
    /// Segments are cut on the clock (see [`Segmenter::align_to_clock`]).
    aligned: bool,
    clock: TimestampExtender,
    /// Correction added to extended timestamps after jumps, and the newest output timestamp.
    shift_ms: i64,
    newest_ms: Option<i64>,
    jumps: u64,
    video: Option<(VideoConfig, Vec<u8>)>,
    aac: Option<(AacConfig, Vec<u8>)>,
    /// The program's tracks, fixed by the first frame.
    tracks: Option<Tracks>,
    ts: Option<TsMuxer>,
    init: Option<Vec<u8>>,
    fragment_sequence: u32,
    segment: Option<Building>,
    part: Option<BuildingPart>,
    /// Sizes of the latest part and segment, to reserve buffers that rarely need to grow.
    part_bytes: usize,
    segment_bytes: usize,
    /// Whether a segment's bytes are gathered into [`Segment::data`] besides its parts'.
    segment_data: bool,
    held: Option<HeldFrame>,
    /// Decode time of the next audio frame in the audio timescale (fMP4).
    audio_next: Option<u64>,
    last_ms: i64,
    /// Duration of the most recent frame step, used to close the last part.
    last_step_ms: i64,
    /// Spacing of the latest video frames and audio frames, to size parts.
    video_step_ms: i64,
    last_video_ms: Option<i64>,
    audio_step_ms: i64,
    last_audio_ms: Option<i64>,
    scratch: Vec<u8>,
    measure: Measure,
}

impl Segmenter {
    /// A segmenter aiming at `target_ms` per segment and `part_ms` per part, packaging into
    /// `container`. With `part_ms` 0 there are no parts: every cut is a whole segment, whose
    /// bytes come in [`Cut::segment`] only (the cut's part then carries none).
    pub fn new(container: Container, target_ms: u32, part_ms: u32) -> Self {
        Self {
            container,
            target_ms: i64::from(target_ms.max(1)),
            part_ms: (part_ms > 0).then_some(i64::from(part_ms)),
            max_ms: None,
            aligned: false,
            clock: TimestampExtender::default(),
            shift_ms: 0,
            newest_ms: None,
            jumps: 0,
            video: None,
            aac: None,
            tracks: None,
            ts: None,
            init: None,
            fragment_sequence: 0,
            segment: None,
            part: None,
            part_bytes: 64 * 1024,
            segment_bytes: 256 * 1024,
            segment_data: true,
            held: None,
            audio_next: None,
            last_ms: 0,
            last_step_ms: 0,
            video_step_ms: 0,
            last_video_ms: None,
            audio_step_ms: 0,
            last_audio_ms: None,
            scratch: Vec::new(),
            measure: Measure::default(),
        }
    }

    /// What the publish carries so far: codecs, picture size, frame rate, keyframe interval.
    pub fn info(&self) -> StreamInfo {
        let m = &self.measure;
        let (video_codec, (width, height)) = match &self.video {
            Some((config, _)) => (
                Some(match config.codec() {
                    flv::VideoCodec::Avc => "h264",
                    flv::VideoCodec::Hevc => "hevc",
                    flv::VideoCodec::Av1 => "av1",
                }),
                config.dimensions().unwrap_or((0, 0)),
            ),
            None => (None, (0, 0)),
        };
        let frame_rate = m.first_video_ms.and_then(|first| {
            let span = m.newest_video_ms - first;
            (span > 0 && m.video_frames > 1).then(|| {
                ((m.video_frames - 1) as f64 * 1000.0 / span as f64 * 100.0).round() / 100.0
            })
        });
        let video_string = self
            .video
            .as_ref()
            .and_then(|(config, record)| match config {
                VideoConfig::Avc(_) => crate::codecs::avc(record),
                VideoConfig::Hevc(_) => crate::codecs::hevc(record),
                VideoConfig::Av1(_) => crate::codecs::av1(record),
            });
        let audio_string = self
            .aac
            .as_ref()
            .map(|(config, _)| crate::codecs::aac(config));
        let codecs: Vec<String> = video_string.into_iter().chain(audio_string).collect();
        StreamInfo {
            video_codec,
            width,
            height,
            frame_rate,
            keyframe_interval_ms: m.keyframe_interval_ms,
            audio_codec: self.aac.as_ref().map(|_| "aac"),
            codecs: (!codecs.is_empty()).then(|| codecs.join(",")),
        }
    }

    /// Caps segment length: a segment that reaches `max_ms` is cut at the next video frame even
    /// if it is not a keyframe.
    pub fn set_max_duration(&mut self, max_ms: u32) {
        self.max_ms = Some(i64::from(max_ms));
    }

    /// Cuts segments on the clock rather than on their own length: at the first keyframe whose
    /// presentation time is in a later multiple of the target duration than the segment's
    /// start. Renditions of one source whose keyframes share presentation times (one encoder
    /// with several outputs, or a transcoder that keeps the source's keyframes and
    /// timestamps) are then cut at the same frames, whenever each of them started, so a player
    /// switches between them at segment boundaries without a gap. A rendition that joins late
    /// gets a shorter first segment.
    pub fn align_to_clock(&mut self) {
        self.aligned = true;
    }

    /// Presentation time of the first frame of the segment being built.
    pub fn segment_start_pts_ms(&self) -> Option<i64> {
        self.segment.as_ref().map(|s| s.start_pts_ms)
    }

    /// Whether a keyframe at `pts` closes a segment that started at `start_pts` and has lasted
    /// `elapsed` so far.
    fn segment_due(&self, start_pts: i64, pts: i64, elapsed: i64) -> bool {
        if self.aligned {
            pts.div_euclid(self.target_ms) > start_pts.div_euclid(self.target_ms)
        } else {
            elapsed >= self.target_ms
        }
    }

    /// For a caller that keeps a segment as its parts back to back (byte-range parts): with
    /// parts, [`Segment::data`] stays empty instead of repeating the parts' bytes. Without
    /// parts this changes nothing.
    pub fn omit_segment_data(&mut self) {
        self.segment_data = self.part_ms.is_none();
    }

    /// The tracks of the program, once the first frame has fixed them.
    pub fn tracks(&self) -> Option<Tracks> {
        self.tracks
    }

    /// The fMP4 initialization segment, once the first frame has fixed the tracks.
    pub fn init_segment(&self) -> Option<&[u8]> {
        self.init.as_deref()
    }

    /// Feeds one video tag body with its RTMP timestamp; returns what this frame closed.
    pub fn push_video(&mut self, timestamp: u32, body: &[u8]) -> Result<Option<Cut>, MediaError> {
        match flv::parse_video(body)? {
            VideoTag::SequenceHeader { codec, record } => {
                let config = match codec {
                    flv::VideoCodec::Avc => VideoConfig::Avc(AvcConfig::parse(record)?),
                    flv::VideoCodec::Hevc => VideoConfig::Hevc(HevcConfig::parse(record)?),
                    flv::VideoCodec::Av1 if self.container == Container::Ts => {
                        return Err(MediaError::Unsupported {
                            what: "av1 in mpeg-ts (use --container fmp4)",
                            value: 0,
                        })
                    }
                    flv::VideoCodec::Av1 => VideoConfig::Av1(Av1Config::parse(record)?),
                };
                // The program's codec is fixed by its first frame; a header of another codec
                // later is refused rather than mixed in.
                if self.tracks.is_some_and(|t| t.video)
                    && self.video.as_ref().is_some_and(|(c, _)| c.codec() != codec)
                {
                    return Err(MediaError::Invalid(
                        "video codec changed during the publish",
                    ));
                }
                self.video = Some((config, record.to_vec()));
                Ok(None)
            }
            VideoTag::EndOfSequence | VideoTag::Command | VideoTag::Ignored => Ok(None),
            VideoTag::Frame {
                codec,
                keyframe,
                composition_ms,
                data,
            } => {
                let Some((config, _)) = self.video.as_ref() else {
                    return Err(MediaError::Invalid(
                        "video frame before its sequence header",
                    ));
                };
                if config.codec() != codec {
                    return Err(MediaError::Invalid("video frame of another codec"));
                }
                // MPEG-TS wants Annex B; fMP4 takes the access unit as it is, checked first so
                // both containers refuse the same input.
                let mut annex_b = std::mem::take(&mut self.scratch);
                annex_b.clear();
                match self.container {
                    Container::Ts => config.to_annex_b(data, keyframe, &mut annex_b)?,
                    Container::Fmp4 => config.validate(data)?,
                }
                let dts = self.timeline(timestamp);
                self.fix_tracks()?;
                if !self.tracks.is_some_and(|t| t.video) {
                    // The program was fixed without video; a late video track cannot join it.
                    self.scratch = annex_b;
                    return Ok(None);
                }
                self.release_held(dts);
                let m = &mut self.measure;
                m.video_frames += 1;
                m.first_video_ms.get_or_insert(dts);
                m.newest_video_ms = dts;
                if keyframe {
                    if let Some(last) = m.last_keyframe_ms.replace(dts) {
                        m.keyframe_interval_ms = Some(dts - last);
                    }
                }
                if let Some(last) = self.last_video_ms.replace(dts) {
                    if (1..1000).contains(&(dts - last)) {
                        self.video_step_ms = dts - last;
                    }
                }
                let cut = match (&self.segment, &self.part) {
                    (Some(seg), Some(part)) => {
                        let elapsed = dts - seg.start_ms;
                        let pts = dts + i64::from(composition_ms);
                        let due = keyframe && self.segment_due(seg.start_pts_ms, pts, elapsed);
                        let forced = self.max_ms.is_some_and(|max| elapsed >= max);
                        let part_due = self.part_due(part.start_ms, dts, self.video_step_ms);
                        if due || forced {
                            self.close(dts, true)
                        } else if part_due {
                            self.close(dts, false)
                        } else {
                            None
                        }
                    }
                    _ => None,
                };
                self.open(dts, i64::from(composition_ms), keyframe);
                match self.container {
                    Container::Ts => {
                        let pts = dts + i64::from(composition_ms);
                        if let (Some(part), Some(muxer)) = (self.part.as_mut(), self.ts.as_mut()) {
                            muxer.write_video(
                                &mut part.ts,
                                to_90k(pts),
                                to_90k(dts),
                                keyframe,
                                &annex_b,
                            );
                        }
                    }
                    Container::Fmp4 => {
                        if let Some(part) = self.part.as_mut() {
                            part.video.data.extend_from_slice(data);
                        }
                        self.held = Some(HeldFrame {
                            dts_ms: dts,
                            composition_ms,
                            keyframe,
                            size: data.len(),
                        });
                    }
                }
                self.scratch = annex_b;
                Ok(cut)
            }
        }
    }

    /// Feeds one audio tag body with its RTMP timestamp; returns what this frame closed (only
    /// for streams without video).
    pub fn push_audio(&mut self, timestamp: u32, body: &[u8]) -> Result<Option<Cut>, MediaError> {
        match flv::parse_audio(body)? {
            AudioTag::AacSequenceHeader(asc) => {
                self.aac = Some((AacConfig::parse(asc)?, asc.to_vec()));
                Ok(None)
            }
            AudioTag::AacFrame(raw) => {
                let Some((aac, _)) = self.aac.as_ref() else {
                    return Err(MediaError::Invalid("aac frame before its sequence header"));
                };
                let aac = *aac;
                if raw.is_empty() {
                    return Ok(None);
                }
                let header = aac.adts_header(raw.len())?;
                let ts = self.timeline(timestamp);
                self.fix_tracks()?;
                let tracks = self.tracks.unwrap_or(Tracks {
                    video: false,
                    hevc: false,
                    audio: false,
                });
                if !tracks.audio {
                    return Ok(None);
                }
                if let Some(last) = self.last_audio_ms.replace(ts) {
                    if (1..1000).contains(&(ts - last)) {
                        self.audio_step_ms = ts - last;
                    }
                }
                let cut = match (&self.segment, &self.part) {
                    (Some(seg), Some(part)) if !tracks.video => {
                        if self.segment_due(seg.start_pts_ms, ts, ts - seg.start_ms) {
                            self.close(ts, true)
                        } else if self.part_due(part.start_ms, ts, self.audio_step_ms) {
                            self.close(ts, false)
                        } else {
                            None
                        }
                    }
                    _ => None,
                };
                if tracks.video && self.part.is_none() {
                    // Audio before the first video frame would start the first segment without a
                    // keyframe; it is dropped until video begins.
                    return Ok(cut);
                }
                self.open(ts, 0, true);
                match self.container {
                    Container::Ts => {
                        let mut frame = Vec::with_capacity(header.len() + raw.len());
                        frame.extend_from_slice(&header);
                        frame.extend_from_slice(raw);
                        if let (Some(part), Some(muxer)) = (self.part.as_mut(), self.ts.as_mut()) {
                            muxer.write_audio(&mut part.ts, to_90k(ts), &frame);
                        }
                    }
                    Container::Fmp4 => self.add_audio_sample(ts, aac.sample_rate(), raw),
                }
                Ok(cut)
            }
        }
    }

    /// Closes the part and segment in progress at the end of a publish.
    pub fn finish(&mut self) -> Option<Cut> {
        self.part.as_ref()?;
        // The part lasts to the end of its last video frame (or audio frame without video); a
        // little trailing audio does not make it longer than the part target.
        let end = match (self.last_video_ms, self.last_audio_ms) {
            (Some(video), _) => video + self.video_step_ms.max(1),
            (None, Some(audio)) => audio + self.audio_step_ms.max(1),
            (None, None) => self.last_ms + self.last_step_ms.max(1),
        };
        self.release_held(end);
        self.close(end, true)
    }

    /// Places an RTMP timestamp on the output timeline: 32-bit wraps are extended, and a jump
    /// of more than [`MAX_JUMP_MS`] forward or back from the newest frame of either track (an
    /// encoder restart, a broken clock) is taken out by shifting this and every later frame so
    /// the stream goes on one frame step later. Both tracks share the shift, so they stay in
    /// sync.
    fn timeline(&mut self, timestamp: u32) -> i64 {
        let ts = self.clock.extend(timestamp) + self.shift_ms;
        let Some(newest) = self.newest_ms else {
            self.newest_ms = Some(ts.max(0));
            return ts.max(0);
        };
        let ts = if (ts - newest).abs() > MAX_JUMP_MS {
            let step = self.video_step_ms.max(self.audio_step_ms).clamp(1, 100);
            self.shift_ms += newest + step - ts;
            self.jumps += 1;
            newest + step
        } else {
            ts
        };
        let ts = ts.max(0);
        self.newest_ms = Some(newest.max(ts));
        ts
    }

    /// Timestamp jumps taken out so far.
    pub fn jumps(&self) -> u64 {
        self.jumps
    }

    /// Whether the part that started at `start_ms` must end before a frame at `ts`: the frame,
    /// lasting about `step_ms` like the one before it, would take the part past the part target
    /// (LL-HLS parts may not be longer than PART-TARGET).
    fn part_due(&self, start_ms: i64, ts: i64, step_ms: i64) -> bool {
        self.part_ms
            .is_some_and(|target| ts - start_ms + step_ms.max(1) > target)
    }

    /// Fixes the program's tracks at the first frame, from the sequence headers seen so far.
    fn fix_tracks(&mut self) -> Result<(), MediaError> {
        if self.tracks.is_some() {
            return Ok(());
        }
        let tracks = Tracks {
            video: self.video.is_some(),
            hevc: self
                .video
                .as_ref()
                .is_some_and(|(c, _)| c.codec() == flv::VideoCodec::Hevc),
            audio: self.aac.is_some(),
        };
        match self.container {
            Container::Ts => self.ts = Some(TsMuxer::new(tracks)),
            Container::Fmp4 => {
                let video = match &self.video {
                    Some((config, record)) => {
                        let (width, height) = config.dimensions()?;
                        let codec = match config {
                            VideoConfig::Avc(_) => VideoCodec::Avc(record.clone()),
                            VideoConfig::Hevc(_) => VideoCodec::Hevc(record.clone()),
                            VideoConfig::Av1(_) => VideoCodec::Av1(record.clone()),
                        };
                        Some(VideoTrack {
                            codec,
                            width,
                            height,
                        })
                    }
                    None => None,
                };
                let audio = self.aac.as_ref().map(|(config, asc)| AudioTrack {
                    config: asc.clone(),
                    sample_rate: config.sample_rate(),
                    channels: u16::from(config.channels.max(1)),
                });
                self.init = Some(fmp4::init_segment(video.as_ref(), audio.as_ref()));
            }
        }
        self.tracks = Some(tracks);
        Ok(())
    }

    /// Gives the held-back video frame its duration (up to `next_ms`) and adds its sample entry
    /// to its part.
    fn release_held(&mut self, next_ms: i64) {
        let (Some(held), Some(part)) = (self.held.take(), self.part.as_mut()) else {
            return;
        };
        let duration_ms = (next_ms - held.dts_ms).clamp(1, MAX_SAMPLE_MS);
        let run = &mut part.video;
        if run.samples.is_empty() {
            run.base_decode_time = (held.dts_ms * MS_TO_90K) as u64;
        }
        run.samples.push(Sample {
            duration: (duration_ms * MS_TO_90K) as u32,
            size: held.size as u32,
            sync: held.keyframe,
            composition_offset: held.composition_ms.saturating_mul(MS_TO_90K as i32),
        });
    }

    fn add_audio_sample(&mut self, ts: i64, rate: u32, raw: &[u8]) {
        let Some(part) = self.part.as_mut() else {
            return;
        };
        let actual = (ts as u64).saturating_mul(u64::from(rate)) / 1000;
        // Keep audio contiguous while the publisher's clock agrees within two frames; otherwise
        // follow the clock (a gap or a jump in the source).
        let at = match self.audio_next {
            Some(next) if next.abs_diff(actual) <= 2 * u64::from(AAC_FRAME_SAMPLES) => next,
            Some(next) if actual > next => {
                // A gap: the frame before it lasts until this one.
                if let Some(last) = part.audio.samples.last_mut() {
                    let gap = u32::try_from(actual - next).unwrap_or(u32::MAX);
                    last.duration = last.duration.saturating_add(gap);
                }
                actual
            }
            // A step back inside a part cannot be expressed; stay contiguous.
            Some(next) if !part.audio.samples.is_empty() => next,
            _ => actual,
        };
        let run = &mut part.audio;
        if run.samples.is_empty() {
            run.base_decode_time = at;
        }
        run.samples.push(Sample {
            duration: AAC_FRAME_SAMPLES,
            size: raw.len() as u32,
            sync: true,
            composition_offset: 0,
        });
        run.data.extend_from_slice(raw);
        self.audio_next = Some(at + u64::from(AAC_FRAME_SAMPLES));
    }

    /// Opens a segment and a part at `ts` (whose frame is presented `composition_ms` later) if
    /// none is open, and records `ts` as the latest frame.
    fn open(&mut self, ts: i64, composition_ms: i64, independent: bool) {
        let started = self.part.is_some() || self.segment.is_some();
        if started {
            let step = ts - self.last_ms;
            if step > 0 && step < 1000 {
                self.last_step_ms = step;
            }
        }
        self.last_ms = if started { self.last_ms.max(ts) } else { ts };
        let starts_segment = self.segment.is_none();
        if starts_segment {
            // Without parts the segment's bytes are the one part's, moved rather than copied.
            let capacity = if self.part_ms.is_some() && self.segment_data {
                self.segment_bytes + self.segment_bytes / 8
            } else {
                0
            };
            self.segment = Some(Building {
                data: Vec::with_capacity(capacity),
                len: 0,
                start_ms: ts,
                start_pts_ms: ts + composition_ms,
                independent,
            });
        }
        if self.part.is_none() {
            let mut part = BuildingPart {
                start_ms: ts,
                independent,
                ..Default::default()
            };
            match self.container {
                Container::Ts => part.ts.reserve(self.part_bytes + self.part_bytes / 8),
                Container::Fmp4 => part
                    .video
                    .data
                    .reserve(self.part_bytes + self.part_bytes / 8),
            }
            if let Some(muxer) = self.ts.as_mut() {
                if starts_segment || independent {
                    muxer.write_tables(&mut part.ts);
                }
            }
            self.part = Some(part);
        }
    }

    /// Closes the part in progress at `end_ms`, and the segment with it when `segment` is set.
    fn close(&mut self, end_ms: i64, segment: bool) -> Option<Cut> {
        let part = self.part.take()?;
        let data = match self.container {
            Container::Ts => part.ts,
            Container::Fmp4 => {
                self.fragment_sequence = self.fragment_sequence.wrapping_add(1);
                fmp4::fragment(self.fragment_sequence, &part.video, &part.audio)
            }
        };
        self.part_bytes = data.len().max(4096);
        let building = self.segment.as_mut()?;
        building.len += data.len();
        let data = if self.part_ms.is_none() && segment && building.data.is_empty() {
            // No parts: the part is the whole segment; its bytes go to the segment only.
            building.data = data;
            Vec::new()
        } else {
            if self.segment_data {
                building.data.extend_from_slice(&data);
            }
            data
        };
        let part = Part {
            data,
            start_ms: part.start_ms,
            duration_ms: (end_ms - part.start_ms).max(0),
            independent: part.independent,
        };
        let segment = if segment {
            self.segment_bytes = building.len.max(4096);
            self.segment.take().map(|seg| Segment {
                duration_ms: (end_ms - seg.start_ms).max(0),
                start_ms: seg.start_ms,
                start_pts_ms: seg.start_pts_ms,
                independent: seg.independent,
                data: seg.data,
            })
        } else {
            None
        };
        Some(Cut { part, segment })
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

    /// An AVC sequence header with the SPS and PPS x264 writes for 640×360 Baseline.
    const AVC_HEADER_640X360: [u8; 46] = [
        0x17, 0, 0, 0, 0, 1, 0x42, 0xc0, 0x1e, 0xff, 0xe1, 0, 25, 0x67, 0x42, 0xc0, 0x1e, 0xd9,
        0x00, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00, 0x03, 0x00, 0x01, 0x00, 0x00, 0x03, 0x00,
        0x3c, 0x0f, 0x16, 0x2e, 0x48, 1, 0, 5, 0x68, 0xcb, 0x83, 0xcb, 0x20,
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
        let mut seg = Segmenter::new(Container::Ts, 2000, 0);
        assert_eq!(seg.push_video(0, &AVC_HEADER).unwrap(), None);
        let mut cuts = Vec::new();
        // 30 fps-ish frames with a keyframe every 1.5 s.
        for i in 0..200u32 {
            let ts = i * 33;
            if let Some(cut) = seg.push_video(ts, &frame(i % 45 == 0)).unwrap() {
                // Without parts the bytes travel in the segment only.
                assert!(cut.part.data.is_empty() && cut.segment.is_some());
                cuts.extend(cut.segment);
            }
        }
        assert!(cuts.len() >= 2);
        for s in &cuts {
            assert!(s.independent);
            assert!(s.duration_ms >= 2000, "{}", s.duration_ms);
            assert_eq!(s.data.len() % 188, 0);
        }
        assert_eq!(cuts[0].duration_ms, 90 * 33);
        let last = seg.finish().unwrap().segment.unwrap();
        assert!(last.duration_ms > 0);
    }

    #[test]
    fn info_reports_codecs_size_frame_rate_and_keyframe_interval() {
        let mut seg = Segmenter::new(Container::Fmp4, 2000, 250);
        assert_eq!(seg.info(), StreamInfo::default());
        seg.push_video(0, &AVC_HEADER_640X360).unwrap();
        seg.push_audio(0, &[0xaf, 0, 0x12, 0x10]).unwrap();
        // 25 fps, a keyframe every 50 frames (2 s).
        for i in 0..151u32 {
            seg.push_video(i * 40, &frame(i % 50 == 0)).unwrap();
        }
        let info = seg.info();
        assert_eq!(info.video_codec, Some("h264"));
        assert_eq!((info.width, info.height), (640, 360));
        assert_eq!(info.frame_rate, Some(25.0));
        assert_eq!(info.keyframe_interval_ms, Some(2000));
        assert_eq!(info.audio_codec, Some("aac"));
    }

    #[test]
    fn clock_aligned_renditions_cut_at_the_same_frames_whenever_they_join() {
        // Keyframes every 1 s (25 fps); one rendition from the start, one from the keyframe at
        // 3 s. On the clock both cut at 2 s, 4 s, 6 s...; by length the late one would cut at
        // 5 s, 7 s...
        let starts = |join_ms: u32, aligned: bool| {
            let mut seg = Segmenter::new(Container::Fmp4, 2000, 500);
            if aligned {
                seg.align_to_clock();
            }
            seg.push_video(join_ms, &AVC_HEADER_640X360).unwrap();
            let mut starts = Vec::new();
            for i in join_ms / 40..300u32 {
                if let Some(segment) = seg
                    .push_video(i * 40, &frame(i % 25 == 0))
                    .unwrap()
                    .and_then(|c| c.segment)
                {
                    starts.push(segment.start_pts_ms);
                }
            }
            starts
        };
        let early = starts(0, true);
        let late = starts(3000, true);
        assert_eq!(early[..3], [0, 2000, 4000]);
        assert_eq!(
            late[..3],
            [3000, 4000, 6000],
            "a short first segment, then in step"
        );
        assert!(early.ends_with(&late[1..]), "{early:?} {late:?}");
        assert_eq!(starts(3000, false)[..3], [3000, 5000, 7000]);
    }

    #[test]
    fn max_duration_forces_a_cut_without_keyframes() {
        let mut seg = Segmenter::new(Container::Ts, 2000, 0);
        seg.set_max_duration(2500);
        seg.push_video(0, &AVC_HEADER).unwrap();
        let mut cuts = Vec::new();
        for i in 0..300u32 {
            if let Some(cut) = seg.push_video(i * 33, &frame(i == 0)).unwrap() {
                cuts.extend(cut.segment);
            }
        }
        assert!(cuts.len() >= 3);
        assert!(cuts.iter().all(|s| s.duration_ms <= 2500 + 33));
        assert!(!cuts[1].independent);
    }

    #[test]
    fn audio_only_streams_cut_on_audio() {
        let mut seg = Segmenter::new(Container::Ts, 1000, 0);
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
                hevc: false,
                audio: true
            })
        );
    }

    #[test]
    fn timestamp_jumps_and_wraps_keep_durations_sane_and_tracks_in_sync() {
        let mut seg = Segmenter::new(Container::Ts, 2000, 0);
        seg.set_max_duration(2400);
        seg.push_video(0, &AVC_HEADER_640X360).unwrap();
        seg.push_audio(0, &[0xaf, 0, 0x12, 0x10]).unwrap();
        let mut durations = Vec::new();
        // 20 s at 30 fps with audio; the source clock starts 30 s before the 32-bit wrap,
        // jumps +60 s at 5 s and back 70 s at 10 s, so it wraps twice.
        let mut last_video = 0i64;
        for i in 0..600u32 {
            let t = i64::from(i) * 33;
            let offset = match t {
                t if t < 5000 => 0,
                t if t < 10_000 => 60_000,
                _ => -10_000,
            };
            let source = (1i64 << 32) - 30_000 + t + offset;
            let source = (source as u64 % (1 << 32)) as u32;
            if let Some(cut) = seg.push_video(source, &frame(i % 61 == 0)).unwrap() {
                durations.extend(cut.segment.map(|s| s.duration_ms));
            }
            if let Some(cut) = seg
                .push_audio(source.wrapping_add(10), &[0xaf, 1, 0x21])
                .unwrap()
            {
                durations.extend(cut.segment.map(|s| s.duration_ms));
            }
            last_video = seg.newest_ms.unwrap();
        }
        assert_eq!(seg.jumps(), 2, "the wrap is not a jump; the two steps are");
        assert!(durations.len() >= 8, "{durations:?}");
        // Keyframes every 2013 ms; no segment anywhere near the jumps' sizes.
        assert!(
            durations.iter().all(|d| (1900..=2450).contains(d)),
            "{durations:?}"
        );
        // The output timeline ran 20 s, like the frames, not 20 + 60 - 70.
        let ran = last_video - ((1i64 << 32) - 30_000);
        assert!((19_700..=20_100).contains(&ran), "{ran}");
    }

    #[test]
    fn frame_before_header_is_an_error() {
        let mut seg = Segmenter::new(Container::Ts, 1000, 0);
        assert!(seg.push_video(0, &frame(true)).is_err());
        assert!(seg.push_audio(0, &[0xaf, 1, 1]).is_err());
    }

    #[test]
    fn parts_tile_segments_and_start_independent_at_keyframes() {
        for container in [Container::Ts, Container::Fmp4] {
            let mut seg = Segmenter::new(container, 2000, 500);
            // A real SPS is needed for fMP4's sample entry; the test header's is too short.
            seg.push_video(0, &AVC_HEADER_640X360).unwrap();
            let mut parts = Vec::new();
            let mut segments = Vec::new();
            for i in 0..125u32 {
                if let Some(cut) = seg.push_video(i * 33, &frame(i % 62 == 0)).unwrap() {
                    parts.push(cut.part);
                    segments.extend(cut.segment);
                }
            }
            assert_eq!(segments.len(), 2, "{container:?}");
            assert_eq!(parts.len(), 10, "{container:?}");
            // Parts never outgrow the part target: four of 495 ms (a 16th frame would reach
            // 528), then a short one to the keyframe that ends the segment.
            let durations: Vec<i64> = parts.iter().map(|p| p.duration_ms).collect();
            assert_eq!(durations[..5], [495, 495, 495, 495, 66], "{container:?}");
            // Parts that begin a segment begin with its keyframe; the others do not.
            assert!(parts[0].independent && !parts[1].independent && parts[5].independent);
            let joined: Vec<u8> = parts
                .iter()
                .take_while(|p| p.start_ms < segments[0].start_ms + segments[0].duration_ms)
                .flat_map(|p| p.data.clone())
                .collect();
            assert_eq!(joined, segments[0].data, "{container:?}");
            assert_eq!(seg.init_segment().is_some(), container == Container::Fmp4);
        }
    }

    #[test]
    fn segments_without_data_keep_their_parts_and_timing() {
        let cuts = |omit: bool| {
            let mut seg = Segmenter::new(Container::Fmp4, 2000, 500);
            if omit {
                seg.omit_segment_data();
            }
            seg.push_video(0, &AVC_HEADER_640X360).unwrap();
            (0..125u32)
                .filter_map(|i| seg.push_video(i * 33, &frame(i % 62 == 0)).unwrap())
                .collect::<Vec<_>>()
        };
        let (full, omitted) = (cuts(false), cuts(true));
        assert_eq!(full.len(), omitted.len());
        for (a, b) in full.iter().zip(&omitted) {
            assert_eq!(a.part, b.part);
            match (&a.segment, &b.segment) {
                (Some(a), Some(b)) => {
                    assert!(!a.data.is_empty() && b.data.is_empty());
                    assert_eq!((a.start_ms, a.duration_ms), (b.start_ms, b.duration_ms));
                }
                (None, None) => {}
                _ => panic!("segments cut differently"),
            }
        }
    }
}
