//! FLV video and audio tag bodies, as RTMP video (type 9) and audio (type 8) messages carry them.
//!
//! Only the body is parsed here; RTMP already gives the timestamp that an FLV file would put in
//! the tag header.

use crate::error::need;
use crate::MediaError;

/// FLV codec id of H.264 / AVC.
pub const CODEC_AVC: u8 = 7;
/// FLV sound format of AAC.
pub const SOUND_AAC: u8 = 10;

/// A video codec a tag can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    /// H.264 (legacy codec id 7, or Enhanced RTMP FourCC `avc1`).
    Avc,
    /// H.265 (Enhanced RTMP FourCC `hvc1`).
    Hevc,
    /// AV1 (Enhanced RTMP FourCC `av01`; fMP4 only).
    Av1,
}

/// A parsed video tag body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoTag<'a> {
    /// A decoder configuration record (sent before the first frame and on changes):
    /// AVCDecoderConfigurationRecord or HEVCDecoderConfigurationRecord.
    SequenceHeader {
        /// The codec.
        codec: VideoCodec,
        /// The record.
        record: &'a [u8],
    },
    /// One access unit (length-prefixed NAL units).
    Frame {
        /// The codec.
        codec: VideoCodec,
        /// Frame type 1: a keyframe where a decoder can start.
        keyframe: bool,
        /// Composition time offset in milliseconds: PTS = DTS + this.
        composition_ms: i32,
        /// The NAL units, each prefixed by its length.
        data: &'a [u8],
    },
    /// End of sequence: the publisher will send a new header before more frames.
    EndOfSequence,
    /// A video info/command frame (frame type 5) that carries no picture.
    Command,
    /// Something that needs no packaging: Enhanced RTMP metadata, or a track of a multitrack
    /// publish other than the first.
    Ignored,
}

/// Parses a video tag body: legacy FLV (H.264) or Enhanced RTMP (ExHeader with a FourCC,
/// H.264, HEVC or AV1; a multitrack body gives its first track).
pub fn parse_video(body: &[u8]) -> Result<VideoTag<'_>, MediaError> {
    need(body, 1, "video tag")?;
    if body[0] & 0x80 != 0 {
        return parse_enhanced(body);
    }
    let frame_type = body[0] >> 4;
    let codec = body[0] & 0x0f;
    if frame_type == 5 {
        return Ok(VideoTag::Command);
    }
    if codec != CODEC_AVC {
        return Err(MediaError::Unsupported {
            what: "video codec",
            value: u32::from(codec),
        });
    }
    need(body, 5, "avc video tag")?;
    let composition_ms = si24(&body[2..5]);
    let data = &body[5..];
    match body[1] {
        0 => Ok(VideoTag::SequenceHeader {
            codec: VideoCodec::Avc,
            record: data,
        }),
        1 => Ok(VideoTag::Frame {
            codec: VideoCodec::Avc,
            keyframe: frame_type == 1,
            composition_ms,
            data,
        }),
        2 => Ok(VideoTag::EndOfSequence),
        other => Err(MediaError::Unsupported {
            what: "avc packet type",
            value: u32::from(other),
        }),
    }
}

/// Enhanced RTMP packet types.
const PACKET_SEQUENCE_START: u8 = 0;
const PACKET_CODED_FRAMES: u8 = 1;
const PACKET_SEQUENCE_END: u8 = 2;
const PACKET_CODED_FRAMES_X: u8 = 3;
const PACKET_METADATA: u8 = 4;
const PACKET_MULTITRACK: u8 = 6;
const PACKET_MOD_EX: u8 = 7;
/// Multitrack types: one track, many tracks of one codec, many tracks of many codecs.
const ONE_TRACK: u8 = 0;
const MANY_TRACKS_MANY_CODECS: u8 = 2;

fn parse_enhanced(tag: &[u8]) -> Result<VideoTag<'_>, MediaError> {
    let frame_type = (tag[0] >> 4) & 0x07;
    let mut packet_type = tag[0] & 0x0f;
    let mut body = &tag[1..];
    // Modifier extensions come first and name the packet type that follows them.
    while packet_type == PACKET_MOD_EX {
        (packet_type, body) = mod_ex(body)?;
    }
    if packet_type == PACKET_METADATA {
        return Ok(VideoTag::Ignored);
    }
    if frame_type == 5 {
        return Ok(VideoTag::Command);
    }
    if packet_type != PACKET_MULTITRACK {
        need(body, 4, "enhanced video tag")?;
        return enhanced_packet(frame_type, packet_type, &body[..4], &body[4..]);
    }
    // Multitrack: keep track 0, ignore the others.
    need(body, 1, "multitrack video tag")?;
    let multitrack = body[0] >> 4;
    let packet_type = body[0] & 0x0f;
    let mut pos = 1;
    let mut fourcc: &[u8] = &[];
    if multitrack != MANY_TRACKS_MANY_CODECS {
        need(body, pos + 4, "multitrack fourcc")?;
        fourcc = &body[pos..pos + 4];
        pos += 4;
    }
    while pos < body.len() {
        let track = body[pos];
        pos += 1;
        if multitrack == MANY_TRACKS_MANY_CODECS {
            need(body, pos + 4, "multitrack fourcc")?;
            fourcc = &body[pos..pos + 4];
            pos += 4;
        }
        let size = if multitrack == ONE_TRACK {
            body.len() - pos
        } else {
            need(body, pos + 3, "multitrack track size")?;
            let size = (usize::from(body[pos]) << 16)
                | (usize::from(body[pos + 1]) << 8)
                | usize::from(body[pos + 2]);
            pos += 3;
            size
        };
        need(body, pos + size, "multitrack track")?;
        if track == 0 {
            return enhanced_packet(frame_type, packet_type, fourcc, &body[pos..pos + size]);
        }
        pos += size;
    }
    Ok(VideoTag::Ignored)
}

/// Skips one ModEx entry (Enhanced RTMP v2): its data size (UI8 + 1, or UI16 + 1 after an
/// 8-bit 255), the data, then a byte holding the modifier type and the next packet type.
/// The only modifier defined, TimestampOffsetNano, refines a timestamp below the millisecond
/// this pipeline works in, so the data is not needed.
fn mod_ex(body: &[u8]) -> Result<(u8, &[u8]), MediaError> {
    need(body, 1, "modex size")?;
    let (size, start) = if body[0] == 255 {
        need(body, 3, "modex size")?;
        (usize::from(u16::from_be_bytes([body[1], body[2]])) + 1, 3)
    } else {
        (usize::from(body[0]) + 1, 1)
    };
    let end = start + size;
    need(body, end + 1, "modex data")?;
    Ok((body[end] & 0x0f, &body[end + 1..]))
}

fn enhanced_packet<'a>(
    frame_type: u8,
    packet_type: u8,
    fourcc: &[u8],
    data: &'a [u8],
) -> Result<VideoTag<'a>, MediaError> {
    let codec = match fourcc {
        b"avc1" => VideoCodec::Avc,
        b"hvc1" => VideoCodec::Hevc,
        b"av01" => VideoCodec::Av1,
        other => {
            return Err(MediaError::Unsupported {
                what: "enhanced rtmp video fourcc",
                value: u32::from_be_bytes(other.try_into().unwrap_or_default()),
            })
        }
    };
    match packet_type {
        PACKET_SEQUENCE_START => Ok(VideoTag::SequenceHeader {
            codec,
            record: data,
        }),
        // AV1 frames carry no composition time: it has no B-frame reordering in RTMP.
        PACKET_CODED_FRAMES if codec == VideoCodec::Av1 => Ok(VideoTag::Frame {
            codec,
            keyframe: frame_type == 1,
            composition_ms: 0,
            data,
        }),
        PACKET_CODED_FRAMES => {
            need(data, 3, "enhanced coded frames")?;
            Ok(VideoTag::Frame {
                codec,
                keyframe: frame_type == 1,
                composition_ms: si24(&data[..3]),
                data: &data[3..],
            })
        }
        PACKET_CODED_FRAMES_X => Ok(VideoTag::Frame {
            codec,
            keyframe: frame_type == 1,
            composition_ms: 0,
            data,
        }),
        PACKET_SEQUENCE_END => Ok(VideoTag::EndOfSequence),
        other => Err(MediaError::Unsupported {
            what: "enhanced rtmp video packet type",
            value: u32::from(other),
        }),
    }
}

/// A signed 24-bit big-endian value.
fn si24(b: &[u8]) -> i32 {
    let raw = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
    ((raw << 8) as i32) >> 8
}

/// A parsed audio tag body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioTag<'a> {
    /// An AudioSpecificConfig.
    AacSequenceHeader(&'a [u8]),
    /// One raw AAC frame.
    AacFrame(&'a [u8]),
}

/// Parses an audio tag body.
pub fn parse_audio(body: &[u8]) -> Result<AudioTag<'_>, MediaError> {
    need(body, 1, "audio tag")?;
    let format = body[0] >> 4;
    if format != SOUND_AAC {
        return Err(MediaError::Unsupported {
            what: "sound format",
            value: u32::from(format),
        });
    }
    need(body, 2, "aac audio tag")?;
    match body[1] {
        0 => Ok(AudioTag::AacSequenceHeader(&body[2..])),
        1 => Ok(AudioTag::AacFrame(&body[2..])),
        other => Err(MediaError::Unsupported {
            what: "aac packet type",
            value: u32::from(other),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_composition_time_is_sign_extended() {
        let body = [0x27, 1, 0xff, 0xff, 0xfe, 0, 0, 0, 1, 0x41];
        match parse_video(&body).unwrap() {
            VideoTag::Frame {
                keyframe,
                composition_ms,
                data,
                ..
            } => {
                assert!(!keyframe);
                assert_eq!(composition_ms, -2);
                assert_eq!(data, &[0, 0, 0, 1, 0x41]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn mod_ex_entries_are_skipped_to_the_packet_they_modify() {
        let plain = [0x91, b'h', b'v', b'c', b'1', 0, 0, 2, 0, 0, 0, 1, 0x26];
        // ModEx, 3 bytes of TimestampOffsetNano (type 0), then CodedFrames.
        let mut one = vec![0x97, 2, 0x07, 0xa1, 0x20, 0x01];
        one.extend_from_slice(&plain[1..]);
        assert_eq!(parse_video(&one).unwrap(), parse_video(&plain).unwrap());
        // Two entries, the second in the 16-bit size form (300 bytes), then CodedFrames.
        let mut two = vec![0x97, 0, 0x00, 0x07, 255, 0x01, 0x2b];
        two.extend(std::iter::repeat_n(0xee, 300));
        two.push(0x01);
        two.extend_from_slice(&plain[1..]);
        assert_eq!(parse_video(&two).unwrap(), parse_video(&plain).unwrap());
        // Cut short anywhere: an error, never a panic.
        for end in 1..two.len() - plain.len() + 1 {
            assert!(parse_video(&two[..end]).is_err(), "cut at {end}");
        }
    }

    #[test]
    fn enhanced_rtmp_headers() {
        // Keyframe, CodedFrames, hvc1, composition time 2.
        let body = [0x91, b'h', b'v', b'c', b'1', 0, 0, 2, 0, 0, 0, 1, 0x26];
        assert_eq!(
            parse_video(&body).unwrap(),
            VideoTag::Frame {
                codec: VideoCodec::Hevc,
                keyframe: true,
                composition_ms: 2,
                data: &[0, 0, 0, 1, 0x26]
            }
        );
        // Inter frame, CodedFramesX: no composition time.
        let body = [0xa3, b'h', b'v', b'c', b'1', 9, 9];
        assert!(matches!(
            parse_video(&body).unwrap(),
            VideoTag::Frame {
                keyframe: false,
                composition_ms: 0,
                data: &[9, 9],
                ..
            }
        ));
        let body = [0x90, b'h', b'v', b'c', b'1', 1, 2];
        assert!(matches!(
            parse_video(&body).unwrap(),
            VideoTag::SequenceHeader {
                codec: VideoCodec::Hevc,
                record: &[1, 2]
            }
        ));
        assert_eq!(
            parse_video(&[0x84, b'h', b'v', b'c', b'1', 2]).unwrap(),
            VideoTag::Ignored
        );
        assert!(matches!(
            parse_video(&[0x91, b'a', b'v', b'0', b'1', 0x12, 0]).unwrap(),
            VideoTag::Frame {
                codec: VideoCodec::Av1,
                composition_ms: 0,
                data: &[0x12, 0],
                ..
            }
        ));
        assert!(matches!(
            parse_video(&[0x91, b'v', b'p', b'0', b'9', 0, 0, 0]),
            Err(MediaError::Unsupported { .. })
        ));
        // Multitrack, many tracks of one codec: track 1 first, then track 0; track 0 is used.
        let mut body = vec![0x96, 0x13, b'h', b'v', b'c', b'1'];
        body.extend_from_slice(&[1, 0, 0, 5, 0, 0, 0, 7, 7]);
        body.extend_from_slice(&[0, 0, 0, 5, 0, 0, 0, 8, 8]);
        assert!(matches!(
            parse_video(&body).unwrap(),
            VideoTag::Frame {
                keyframe: true,
                data: &[0, 0, 0, 8, 8],
                ..
            }
        ));
        // A multitrack body without track 0 is ignored.
        let mut body = vec![0x96, 0x13, b'h', b'v', b'c', b'1'];
        body.extend_from_slice(&[2, 0, 0, 5, 0, 0, 0, 7, 7]);
        assert_eq!(parse_video(&body).unwrap(), VideoTag::Ignored);
        assert!(parse_video(&[0x96, 0x13, b'h', b'v']).is_err());
    }

    #[test]
    fn other_codecs_are_refused_not_misread() {
        assert!(matches!(
            parse_video(&[0x12, 0, 0]),
            Err(MediaError::Unsupported { .. })
        ));
        assert!(matches!(
            parse_audio(&[0x2f, 0]),
            Err(MediaError::Unsupported { .. })
        ));
        assert!(matches!(
            parse_video(&[0x17, 0]),
            Err(MediaError::Truncated { .. })
        ));
    }
}
