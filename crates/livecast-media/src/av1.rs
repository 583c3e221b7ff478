//! AV1: the AV1CodecConfigurationRecord (`av1C`, AV1 Codec ISO Media File Format Binding §2.3)
//! and the picture size from its sequence header OBU (AV1 specification §5.5).

use crate::bits::BitReader;
use crate::error::need;
use crate::MediaError;

const OBU_SEQUENCE_HEADER: u8 = 1;

/// The decoder configuration a publisher sends before its first frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Av1Config {
    /// seq_profile.
    pub profile: u8,
    /// Maximum picture size from the sequence header.
    pub width: u32,
    /// Maximum picture height.
    pub height: u32,
}

impl Av1Config {
    /// Parses an AV1CodecConfigurationRecord, which must carry the sequence header OBU.
    pub fn parse(record: &[u8]) -> Result<Self, MediaError> {
        need(record, 4, "av1 codec configuration record")?;
        if record[0] != 0x81 {
            return Err(MediaError::Unsupported {
                what: "av1 configuration marker and version",
                value: u32::from(record[0]),
            });
        }
        let mut obus = &record[4..];
        while !obus.is_empty() {
            let (kind, payload, rest) = read_obu(obus)?;
            if kind == OBU_SEQUENCE_HEADER {
                let (width, height) = sequence_header_size(payload)?;
                return Ok(Self {
                    profile: record[1] >> 5,
                    width,
                    height,
                });
            }
            obus = rest;
        }
        Err(MediaError::Invalid(
            "av1 configuration without a sequence header",
        ))
    }
}

/// Splits the first OBU off `data`: (obu_type, payload, rest).
fn read_obu(data: &[u8]) -> Result<(u8, &[u8], &[u8]), MediaError> {
    need(data, 1, "av1 obu header")?;
    let header = data[0];
    let kind = (header >> 3) & 0x0f;
    let mut pos = 1 + usize::from(header & 0x04 != 0);
    need(data, pos, "av1 obu extension")?;
    let size = if header & 0x02 != 0 {
        let mut value: u64 = 0;
        let mut i = 0;
        loop {
            need(data, pos + 1, "av1 obu size")?;
            let byte = data[pos];
            pos += 1;
            value |= u64::from(byte & 0x7f) << (7 * i);
            i += 1;
            if byte & 0x80 == 0 {
                break;
            }
            if i == 8 {
                return Err(MediaError::Invalid("av1 obu size"));
            }
        }
        usize::try_from(value).map_err(|_| MediaError::Invalid("av1 obu size"))?
    } else {
        data.len() - pos
    };
    let end = pos
        .checked_add(size)
        .ok_or(MediaError::Invalid("av1 obu size"))?;
    need(data, end, "av1 obu")?;
    Ok((kind, &data[pos..end], &data[end..]))
}

/// max_frame_width and max_frame_height of a sequence header OBU payload.
fn sequence_header_size(payload: &[u8]) -> Result<(u32, u32), MediaError> {
    let mut r = BitReader::from_raw(payload);
    r.skip(3)?; // seq_profile
    r.skip(1)?; // still_picture
    let reduced = r.bit()? == 1;
    if reduced {
        r.skip(5)?; // seq_level_idx[0]
    } else {
        let mut decoder_model = false;
        let mut buffer_delay_bits = 0;
        if r.bit()? == 1 {
            // timing_info
            r.skip(64)?;
            if r.bit()? == 1 {
                uvlc(&mut r)?; // num_ticks_per_picture_minus_1
            }
            decoder_model = r.bit()? == 1;
            if decoder_model {
                buffer_delay_bits = r.bits(5)? as usize + 1;
                r.skip(32 + 5 + 5)?;
            }
        }
        let initial_display_delay = r.bit()? == 1;
        let operating_points = r.bits(5)? + 1;
        for _ in 0..operating_points {
            r.skip(12)?; // operating_point_idc
            if r.bits(5)? > 7 {
                r.skip(1)?; // seq_tier
            }
            if decoder_model && r.bit()? == 1 {
                r.skip(2 * buffer_delay_bits + 1)?;
            }
            if initial_display_delay && r.bit()? == 1 {
                r.skip(4)?;
            }
        }
    }
    let width_bits = r.bits(4)? + 1;
    let height_bits = r.bits(4)? + 1;
    let width = u64::from(r.bits(width_bits)?) + 1;
    let height = u64::from(r.bits(height_bits)?) + 1;
    if width > 16_384 || height > 16_384 {
        return Err(MediaError::Invalid("av1 picture size"));
    }
    Ok((width as u32, height as u32))
}

fn uvlc(r: &mut BitReader) -> Result<u32, MediaError> {
    let mut zeros = 0;
    while r.bit()? == 0 {
        zeros += 1;
        if zeros >= 32 {
            return Err(MediaError::Invalid("av1 uvlc"));
        }
    }
    r.bits(zeros)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SVT-AV1's sequence header OBU for 640×360, main profile.
    const SEQUENCE_HEADER: [u8; 14] = [
        0x0a, 0x0c, 0x02, 0x00, 0x00, 0x0d, 0x26, 0x27, 0xfb, 0x38, 0x95, 0xf2, 0x00, 0x80,
    ];

    #[test]
    fn record_and_picture_size() {
        let mut record = vec![0x81, 0x08, 0x0c, 0x00];
        record.extend_from_slice(&SEQUENCE_HEADER);
        let config = Av1Config::parse(&record).unwrap();
        assert_eq!((config.width, config.height, config.profile), (640, 360, 0));
        for cut in 0..record.len() {
            assert!(Av1Config::parse(&record[..cut]).is_err(), "cut at {cut}");
        }
        assert!(
            Av1Config::parse(&[0x81, 0, 0, 0]).is_err(),
            "no sequence header"
        );
    }
}
