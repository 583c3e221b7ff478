//! AAC: the AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1) and ADTS headers for MPEG-TS.

use crate::error::need;
use crate::MediaError;

const SAMPLE_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

/// Length of an ADTS header without CRC.
pub const ADTS_HEADER_LEN: usize = 7;

/// What a decoder needs to know about an AAC stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AacConfig {
    /// Audio object type (2 = AAC LC).
    pub object_type: u8,
    /// Index into the standard sample-rate table.
    pub sample_rate_index: u8,
    /// Channel configuration (1 = mono, 2 = stereo, ...).
    pub channels: u8,
}

impl AacConfig {
    /// Parses an AudioSpecificConfig.
    pub fn parse(asc: &[u8]) -> Result<Self, MediaError> {
        need(asc, 2, "audio specific config")?;
        let object_type = asc[0] >> 3;
        let sample_rate_index = ((asc[0] & 0x07) << 1) | (asc[1] >> 7);
        let channels = (asc[1] >> 3) & 0x0f;
        if object_type == 0 || object_type == 31 {
            return Err(MediaError::Unsupported {
                what: "aac object type",
                value: u32::from(object_type),
            });
        }
        if usize::from(sample_rate_index) >= SAMPLE_RATES.len() {
            // Index 15 means an explicit 24-bit rate, which ADTS cannot express.
            return Err(MediaError::Unsupported {
                what: "aac sample rate index",
                value: u32::from(sample_rate_index),
            });
        }
        Ok(Self {
            object_type,
            sample_rate_index,
            channels,
        })
    }

    /// Samples per second.
    pub fn sample_rate(&self) -> u32 {
        SAMPLE_RATES[usize::from(self.sample_rate_index)]
    }

    /// Writes the 7-byte ADTS header for a raw frame of `payload_len` bytes.
    pub fn adts_header(&self, payload_len: usize) -> Result<[u8; ADTS_HEADER_LEN], MediaError> {
        let len = payload_len + ADTS_HEADER_LEN;
        if len >= 1 << 13 {
            return Err(MediaError::Invalid("aac frame too long for adts"));
        }
        // ADTS has two bits for the profile; HE-AAC and later signal their extensions inside the
        // payload, so they are carried as their AAC LC core.
        let profile = if (1..=4).contains(&self.object_type) {
            self.object_type - 1
        } else {
            1
        };
        let len = len as u16;
        Ok([
            0xff,
            0xf1,
            (profile << 6) | (self.sample_rate_index << 2) | ((self.channels >> 2) & 1),
            ((self.channels & 3) << 6) | ((len >> 11) as u8 & 3),
            (len >> 3) as u8,
            (((len & 7) as u8) << 5) | 0x1f,
            0xfc,
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lc_stereo_44100() {
        let cfg = AacConfig::parse(&[0x12, 0x10]).unwrap();
        assert_eq!(cfg.object_type, 2);
        assert_eq!(cfg.sample_rate(), 44100);
        assert_eq!(cfg.channels, 2);
        let h = cfg.adts_header(100).unwrap();
        assert_eq!(h[0..2], [0xff, 0xf1]);
        let frame_len =
            (usize::from(h[3] & 3) << 11) | (usize::from(h[4]) << 3) | usize::from(h[5] >> 5);
        assert_eq!(frame_len, 107);
    }

    #[test]
    fn explicit_sample_rate_is_refused() {
        assert!(AacConfig::parse(&[0x17, 0x80, 0, 0, 0]).is_err());
        assert!(AacConfig::parse(&[0x12]).is_err());
    }
}
