//! H.265/HEVC: the HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 §8.3.3.1), the rewrite of
//! length-prefixed access units into Annex B for MPEG-TS, and the picture size from the SPS
//! (ITU-T H.265 §7.3.2.2).

use crate::bits::BitReader;
use crate::error::need;
use crate::MediaError;

const START_CODE: [u8; 4] = [0, 0, 0, 1];
/// An access unit delimiter NAL (type 35, layer 0, temporal id 1; pic_type 2 = any slices).
const AUD: [u8; 3] = [0x46, 0x01, 0x50];

const NAL_VPS: u8 = 32;
const NAL_SPS: u8 = 33;
const NAL_PPS: u8 = 34;
const NAL_AUD: u8 = 35;

fn nal_type(nal: &[u8]) -> u8 {
    (nal[0] >> 1) & 0x3f
}

/// The decoder configuration a publisher sends before its first frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HevcConfig {
    /// Size in bytes (1, 2 or 4) of the length prefix of every NAL unit in frames.
    pub nal_length_size: usize,
    /// Video, sequence and picture parameter sets, in that order.
    pub vps: Vec<Vec<u8>>,
    /// Sequence parameter sets.
    pub sps: Vec<Vec<u8>>,
    /// Picture parameter sets.
    pub pps: Vec<Vec<u8>>,
}

impl HevcConfig {
    /// Parses an HEVCDecoderConfigurationRecord.
    pub fn parse(record: &[u8]) -> Result<Self, MediaError> {
        need(record, 23, "hevc decoder configuration record")?;
        if record[0] != 1 {
            return Err(MediaError::Unsupported {
                what: "hevc configuration version",
                value: u32::from(record[0]),
            });
        }
        let nal_length_size = usize::from(record[21] & 0x03) + 1;
        if nal_length_size == 3 {
            return Err(MediaError::Invalid("hevc nal length size"));
        }
        let arrays = record[22];
        let mut pos = 23;
        let mut config = Self {
            nal_length_size,
            vps: Vec::new(),
            sps: Vec::new(),
            pps: Vec::new(),
        };
        for _ in 0..arrays {
            need(record, pos + 3, "hevc parameter set array")?;
            let kind = record[pos] & 0x3f;
            let count = u16::from_be_bytes([record[pos + 1], record[pos + 2]]);
            pos += 3;
            for _ in 0..count {
                need(record, pos + 2, "hevc parameter set length")?;
                let len = usize::from(u16::from_be_bytes([record[pos], record[pos + 1]]));
                pos += 2;
                need(record, pos + len, "hevc parameter set")?;
                let unit = record[pos..pos + len].to_vec();
                pos += len;
                if unit.len() < 2 {
                    return Err(MediaError::Invalid("empty hevc parameter set"));
                }
                match kind {
                    NAL_VPS => config.vps.push(unit),
                    NAL_SPS => config.sps.push(unit),
                    NAL_PPS => config.pps.push(unit),
                    _ => {} // SEI and others are not needed to decode
                }
            }
        }
        if config.vps.is_empty() || config.sps.is_empty() || config.pps.is_empty() {
            return Err(MediaError::Invalid(
                "hevc configuration without vps, sps or pps",
            ));
        }
        Ok(config)
    }

    /// Rewrites one access unit as Annex B into `out`: an access unit delimiter first, then
    /// VPS, SPS and PPS ahead of a keyframe that does not carry them.
    pub fn to_annex_b(
        &self,
        data: &[u8],
        keyframe: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), MediaError> {
        let nals = crate::avc::split_avcc(data, self.nal_length_size)?;
        out.reserve(data.len() + 64);
        out.extend_from_slice(&START_CODE);
        out.extend_from_slice(&AUD);
        let carries_sps = nals.iter().any(|n| n.len() >= 2 && nal_type(n) == NAL_SPS);
        if keyframe && !carries_sps {
            for unit in self.vps.iter().chain(&self.sps).chain(&self.pps) {
                out.extend_from_slice(&START_CODE);
                out.extend_from_slice(unit);
            }
        }
        for nal in nals {
            if nal.len() < 2 {
                return Err(MediaError::Invalid("hevc nal unit shorter than its header"));
            }
            if nal_type(nal) == NAL_AUD {
                continue;
            }
            out.extend_from_slice(&START_CODE);
            out.extend_from_slice(nal);
        }
        Ok(())
    }
}

/// Picture size in pixels read from an HEVC sequence parameter set, conformance window applied.
pub fn sps_dimensions(sps: &[u8]) -> Result<(u32, u32), MediaError> {
    need(sps, 3, "hevc sps")?;
    let mut r = BitReader::from_nal(&sps[2..]);
    r.skip(4)?; // sps_video_parameter_set_id
    let max_sub_layers_minus1 = r.bits(3)? as usize;
    r.skip(1)?; // sps_temporal_id_nesting_flag
                // profile_tier_level(1, max_sub_layers_minus1)
    r.skip(88)?; // general profile space, tier, idc, compatibility and constraint flags
    r.skip(8)?; // general_level_idc
    let mut present = [(false, false); 8];
    for flags in present.iter_mut().take(max_sub_layers_minus1) {
        *flags = (r.bit()? == 1, r.bit()? == 1);
    }
    if max_sub_layers_minus1 > 0 {
        r.skip(2 * (8 - max_sub_layers_minus1))?;
    }
    for &(profile, level) in present.iter().take(max_sub_layers_minus1) {
        if profile {
            r.skip(88)?;
        }
        if level {
            r.skip(8)?;
        }
    }
    r.ue()?; // sps_seq_parameter_set_id
    let chroma_format = r.ue()?;
    if chroma_format == 3 {
        r.skip(1)?; // separate_colour_plane_flag
    }
    let width = u64::from(r.ue()?);
    let height = u64::from(r.ue()?);
    let (mut crop_x, mut crop_y) = (0, 0);
    if r.bit()? == 1 {
        let (left, right, top, bottom) = (r.ue()?, r.ue()?, r.ue()?, r.ue()?);
        let sub_width = if matches!(chroma_format, 1 | 2) { 2 } else { 1 };
        let sub_height = if chroma_format == 1 { 2 } else { 1 };
        crop_x = sub_width * (u64::from(left) + u64::from(right));
        crop_y = sub_height * (u64::from(top) + u64::from(bottom));
    }
    let (width, height) = (width.saturating_sub(crop_x), height.saturating_sub(crop_y));
    if width == 0 || height == 0 || width > 16_384 || height > 16_384 {
        return Err(MediaError::Invalid("hevc picture size"));
    }
    Ok((width as u32, height as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// x265's SPS for 640×360 (360 is not a multiple of x265's 8-pixel minimum coding unit, so a
    /// conformance window crops it).
    const SPS_640X360: [u8; 43] = [
        0x42, 0x01, 0x01, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00, 0x00,
        0x03, 0x00, 0x3f, 0xa0, 0x05, 0x02, 0x01, 0x71, 0xf2, 0xe5, 0x95, 0x95, 0x29, 0x30, 0xbc,
        0x05, 0xa0, 0x20, 0x00, 0x00, 0x03, 0x00, 0x20, 0x00, 0x00, 0x03, 0x03, 0xc1,
    ];

    fn record() -> Vec<u8> {
        let mut r = vec![1u8];
        r.extend_from_slice(&[0; 20]);
        r.push(0x0f); // lengthSizeMinusOne = 3
        r.push(3); // three arrays
        for (kind, unit) in [
            (NAL_VPS, &[0x40, 0x01, 0x0c][..]),
            (NAL_SPS, &SPS_640X360[..]),
            (NAL_PPS, &[0x44, 0x01, 0xc1][..]),
        ] {
            r.push(0x80 | kind);
            r.extend_from_slice(&1u16.to_be_bytes());
            r.extend_from_slice(&(unit.len() as u16).to_be_bytes());
            r.extend_from_slice(unit);
        }
        r
    }

    #[test]
    fn record_picture_size_and_annex_b() {
        let config = HevcConfig::parse(&record()).unwrap();
        assert_eq!(config.nal_length_size, 4);
        assert_eq!(sps_dimensions(&config.sps[0]).unwrap(), (640, 360));
        // An IDR slice (type 19) gets AUD, VPS, SPS and PPS before it.
        let frame = [0, 0, 0, 3, 0x26, 0x01, 0xaf];
        let mut out = Vec::new();
        config.to_annex_b(&frame, true, &mut out).unwrap();
        assert_eq!(&out[..7], &[0, 0, 0, 1, 0x46, 0x01, 0x50]);
        assert_eq!(out.windows(4).filter(|w| *w == [0, 0, 0, 1]).count(), 5);
        assert!(out.ends_with(&[0, 0, 0, 1, 0x26, 0x01, 0xaf]));
        let mut out = Vec::new();
        config.to_annex_b(&frame, false, &mut out).unwrap();
        assert_eq!(out.windows(4).filter(|w| *w == [0, 0, 0, 1]).count(), 2);
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let rec = record();
        for cut in 0..rec.len() {
            assert!(HevcConfig::parse(&rec[..cut]).is_err(), "cut at {cut}");
        }
        for cut in 0..20 {
            assert!(sps_dimensions(&SPS_640X360[..cut]).is_err(), "cut at {cut}");
        }
    }
}
