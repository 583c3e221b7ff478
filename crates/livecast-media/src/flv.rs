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

/// A parsed video tag body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoTag<'a> {
    /// An AVCDecoderConfigurationRecord (sent before the first frame and on changes).
    AvcSequenceHeader(&'a [u8]),
    /// One access unit in AVCC form (length-prefixed NAL units).
    AvcFrame {
        /// Frame type 1: a keyframe where a decoder can start.
        keyframe: bool,
        /// Composition time offset in milliseconds: PTS = DTS + this.
        composition_ms: i32,
        /// The NAL units, each prefixed by its length.
        data: &'a [u8],
    },
    /// AVC end of sequence: the publisher will send a new header before more frames.
    AvcEndOfSequence,
    /// A video info/command frame (frame type 5) that carries no picture.
    Command,
}

/// Parses a video tag body.
pub fn parse_video(body: &[u8]) -> Result<VideoTag<'_>, MediaError> {
    need(body, 1, "video tag")?;
    let frame_type = body[0] >> 4;
    let codec = body[0] & 0x0f;
    if frame_type == 5 {
        return Ok(VideoTag::Command);
    }
    if body[0] & 0x80 != 0 {
        // The high bit marks an Enhanced RTMP extended header (FourCC codecs).
        return Err(MediaError::Unsupported {
            what: "enhanced rtmp video",
            value: u32::from(body[0]),
        });
    }
    if codec != CODEC_AVC {
        return Err(MediaError::Unsupported {
            what: "video codec",
            value: u32::from(codec),
        });
    }
    need(body, 5, "avc video tag")?;
    let packet_type = body[1];
    let raw = (u32::from(body[2]) << 16) | (u32::from(body[3]) << 8) | u32::from(body[4]);
    // Sign-extend the 24-bit composition time.
    let composition_ms = ((raw << 8) as i32) >> 8;
    let data = &body[5..];
    match packet_type {
        0 => Ok(VideoTag::AvcSequenceHeader(data)),
        1 => Ok(VideoTag::AvcFrame {
            keyframe: frame_type == 1,
            composition_ms,
            data,
        }),
        2 => Ok(VideoTag::AvcEndOfSequence),
        other => Err(MediaError::Unsupported {
            what: "avc packet type",
            value: u32::from(other),
        }),
    }
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
            VideoTag::AvcFrame {
                keyframe,
                composition_ms,
                data,
            } => {
                assert!(!keyframe);
                assert_eq!(composition_ms, -2);
                assert_eq!(data, &[0, 0, 0, 1, 0x41]);
            }
            other => panic!("unexpected {other:?}"),
        }
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
