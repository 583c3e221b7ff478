//! H.264: the AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.2.4.1) and the rewrite of
//! length-prefixed (AVCC) access units into Annex B byte streams for MPEG-TS.

use crate::bits::BitReader;
use crate::error::need;
use crate::MediaError;

const START_CODE: [u8; 4] = [0, 0, 0, 1];
/// An access unit delimiter NAL (type 9, primary_pic_type 7 = any slice type).
const AUD: [u8; 2] = [0x09, 0xf0];

const NAL_SPS: u8 = 7;
const NAL_AUD: u8 = 9;

/// The decoder configuration a publisher sends before its first frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcConfig {
    /// profile_idc.
    pub profile: u8,
    /// profile_compatibility.
    pub compatibility: u8,
    /// level_idc.
    pub level: u8,
    /// Size in bytes (1, 2 or 4) of the length prefix of every NAL unit in frames.
    pub nal_length_size: usize,
    /// Sequence parameter sets.
    pub sps: Vec<Vec<u8>>,
    /// Picture parameter sets.
    pub pps: Vec<Vec<u8>>,
}

impl AvcConfig {
    /// Parses an AVCDecoderConfigurationRecord.
    pub fn parse(record: &[u8]) -> Result<Self, MediaError> {
        need(record, 6, "avc decoder configuration record")?;
        if record[0] != 1 {
            return Err(MediaError::Unsupported {
                what: "avc configuration version",
                value: u32::from(record[0]),
            });
        }
        let nal_length_size = usize::from(record[4] & 0x03) + 1;
        if nal_length_size == 3 {
            return Err(MediaError::Invalid("avc nal length size"));
        }
        let mut pos = 5;
        let sps_count = usize::from(record[pos] & 0x1f);
        pos += 1;
        let mut sps = Vec::with_capacity(sps_count);
        for _ in 0..sps_count {
            let (unit, next) = read_parameter_set(record, pos)?;
            sps.push(unit);
            pos = next;
        }
        need(record, pos + 1, "avc decoder configuration record")?;
        let pps_count = usize::from(record[pos]);
        pos += 1;
        let mut pps = Vec::with_capacity(pps_count);
        for _ in 0..pps_count {
            let (unit, next) = read_parameter_set(record, pos)?;
            pps.push(unit);
            pos = next;
        }
        if sps.is_empty() || pps.is_empty() {
            return Err(MediaError::Invalid("avc configuration without sps or pps"));
        }
        Ok(Self {
            profile: record[1],
            compatibility: record[2],
            level: record[3],
            nal_length_size,
            sps,
            pps,
        })
    }

    /// Rewrites one AVCC access unit as Annex B into `out`: an access unit delimiter first (some
    /// players need it to find picture boundaries), then SPS and PPS ahead of a keyframe that does
    /// not carry them, so every segment can be decoded on its own.
    pub fn to_annex_b(
        &self,
        avcc: &[u8],
        keyframe: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), MediaError> {
        let nals = split_avcc(avcc, self.nal_length_size)?;
        out.reserve(avcc.len() + 64);
        out.extend_from_slice(&START_CODE);
        out.extend_from_slice(&AUD);
        let carries_sps = nals.iter().any(|n| n[0] & 0x1f == NAL_SPS);
        if keyframe && !carries_sps {
            for unit in self.sps.iter().chain(self.pps.iter()) {
                out.extend_from_slice(&START_CODE);
                out.extend_from_slice(unit);
            }
        }
        for nal in nals {
            if nal[0] & 0x1f == NAL_AUD {
                continue;
            }
            out.extend_from_slice(&START_CODE);
            out.extend_from_slice(nal);
        }
        Ok(())
    }
}

/// Picture size in pixels read from a sequence parameter set (H.264 §7.3.2.1.1), cropping
/// applied.
pub fn sps_dimensions(sps: &[u8]) -> Result<(u32, u32), MediaError> {
    need(sps, 4, "avc sps")?;
    let mut r = BitReader::from_nal(&sps[1..]);
    let profile = r.bits(8)?;
    r.skip(16)?; // constraint flags, level
    r.ue()?; // seq_parameter_set_id
    let mut chroma_format = 1;
    if matches!(
        profile,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format = r.ue()?;
        if chroma_format == 3 {
            r.skip(1)?; // separate_colour_plane_flag
        }
        r.ue()?; // bit_depth_luma_minus8
        r.ue()?; // bit_depth_chroma_minus8
        r.skip(1)?; // qpprime_y_zero_transform_bypass_flag
        if r.bit()? == 1 {
            let lists = if chroma_format == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bit()? == 1 {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            r.skip(1)?;
            r.se()?;
            r.se()?;
            for _ in 0..r.ue()?.min(256) {
                r.se()?;
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.skip(1)?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = u64::from(r.ue()?) + 1;
    let height_units = u64::from(r.ue()?) + 1;
    let frame_mbs_only = u64::from(r.bit()?);
    if frame_mbs_only == 0 {
        r.skip(1)?; // mb_adaptive_frame_field_flag
    }
    r.skip(1)?; // direct_8x8_inference_flag
    let (mut crop_x, mut crop_y) = (0, 0);
    if r.bit()? == 1 {
        let (left, right, top, bottom) = (r.ue()?, r.ue()?, r.ue()?, r.ue()?);
        let (unit_x, unit_y) = match chroma_format {
            0 => (1, 2 - frame_mbs_only),
            1 => (2, 2 * (2 - frame_mbs_only)),
            2 => (2, 2 - frame_mbs_only),
            _ => (1, 2 - frame_mbs_only),
        };
        crop_x = unit_x * (u64::from(left) + u64::from(right));
        crop_y = unit_y * (u64::from(top) + u64::from(bottom));
    }
    let width = (width_mbs * 16).saturating_sub(crop_x);
    let height = ((2 - frame_mbs_only) * height_units * 16).saturating_sub(crop_y);
    if width == 0 || height == 0 || width > 16_384 || height > 16_384 {
        return Err(MediaError::Invalid("avc picture size"));
    }
    Ok((width as u32, height as u32))
}

fn skip_scaling_list(r: &mut BitReader, size: u32) -> Result<(), MediaError> {
    let (mut last, mut next) = (8i32, 8i32);
    for _ in 0..size {
        if next != 0 {
            next = (last + r.se()? + 256) % 256;
        }
        if next != 0 {
            last = next;
        }
    }
    Ok(())
}

fn read_parameter_set(record: &[u8], pos: usize) -> Result<(Vec<u8>, usize), MediaError> {
    need(record, pos + 2, "avc parameter set length")?;
    let len = usize::from(u16::from_be_bytes([record[pos], record[pos + 1]]));
    let start = pos + 2;
    need(record, start + len, "avc parameter set")?;
    if len == 0 {
        return Err(MediaError::Invalid("empty avc parameter set"));
    }
    Ok((record[start..start + len].to_vec(), start + len))
}

/// Splits a length-prefixed access unit into its NAL units (empty units are dropped).
pub fn split_avcc(mut data: &[u8], length_size: usize) -> Result<Vec<&[u8]>, MediaError> {
    let mut nals = Vec::new();
    while !data.is_empty() {
        need(data, length_size, "avc nal length")?;
        let len = data[..length_size]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        data = &data[length_size..];
        need(data, len, "avc nal unit")?;
        if len > 0 {
            nals.push(&data[..len]);
        }
        data = &data[len..];
    }
    Ok(nals)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Vec<u8> {
        vec![
            1, 0x64, 0, 0x1f, 0xff, 0xe1, 0, 3, 0x67, 0x64, 0x1f, 1, 0, 2, 0x68, 0xee,
        ]
    }

    #[test]
    fn parses_record_and_prepends_parameter_sets_on_keyframes() {
        let cfg = AvcConfig::parse(&record()).unwrap();
        assert_eq!(cfg.nal_length_size, 4);
        assert_eq!(cfg.sps, vec![vec![0x67, 0x64, 0x1f]]);
        let frame = [0, 0, 0, 2, 0x65, 0x88, 0, 0, 0, 2, 0x09, 0x10];
        let mut out = Vec::new();
        cfg.to_annex_b(&frame, true, &mut out).unwrap();
        assert_eq!(
            out,
            [
                0, 0, 0, 1, 0x09, 0xf0, 0, 0, 0, 1, 0x67, 0x64, 0x1f, 0, 0, 0, 1, 0x68, 0xee, 0, 0,
                0, 1, 0x65, 0x88
            ]
        );
        let mut out = Vec::new();
        cfg.to_annex_b(&[0, 0, 0, 1, 0x41], false, &mut out)
            .unwrap();
        assert_eq!(out, [0, 0, 0, 1, 0x09, 0xf0, 0, 0, 0, 1, 0x41]);
    }

    #[test]
    fn picture_size_comes_from_the_sps() {
        // x264's SPS for 640×360 Baseline (360 is not a multiple of 16: cropping applies).
        let sps = [
            0x67, 0x42, 0xc0, 0x1e, 0xd9, 0x00, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00, 0x03,
            0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x3c, 0x0f, 0x16, 0x2e, 0x48,
        ];
        assert_eq!(sps_dimensions(&sps).unwrap(), (640, 360));
        for cut in 0..8 {
            assert!(sps_dimensions(&sps[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let rec = record();
        for cut in 0..rec.len() {
            assert!(AvcConfig::parse(&rec[..cut]).is_err(), "cut at {cut}");
        }
        let cfg = AvcConfig::parse(&rec).unwrap();
        assert!(cfg
            .to_annex_b(&[0, 0, 0, 9, 0x65], true, &mut Vec::new())
            .is_err());
    }
}
