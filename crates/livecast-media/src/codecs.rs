//! RFC 6381 codec strings, as a master playlist's CODECS attribute names a variant's tracks
//! (RFC 8216 §4.3.4.2), computed from the decoder configuration records the publisher sent.
//!
//! - H.264: `avc1.PPCCLL`, profile, constraint flags and level in hex (ISO/IEC 14496-15 §5).
//! - H.265: `hvc1.[A-C]P.F.TL.CC…`, profile space and profile, the compatibility flags in
//!   reverse bit order, tier and level, then the constraint bytes without trailing zeros
//!   (ISO/IEC 14496-15 Annex E). `hvc1` because the fMP4 init segment uses that sample entry.
//! - AV1: `av01.P.LLT.DD`, profile, level and tier, bit depth (AV1-ISOBMFF §5).
//! - AAC: `mp4a.40.O`, the audio object type.

use crate::aac::AacConfig;

/// The codec string of an AVCDecoderConfigurationRecord.
pub fn avc(record: &[u8]) -> Option<String> {
    let [_, profile, constraints, level, ..] = record else {
        return None;
    };
    Some(format!("avc1.{profile:02x}{constraints:02x}{level:02x}"))
}

/// The codec string of an HEVCDecoderConfigurationRecord.
pub fn hevc(record: &[u8]) -> Option<String> {
    if record.len() < 13 {
        return None;
    }
    let space = match record[1] >> 6 {
        0 => "",
        1 => "A",
        2 => "B",
        _ => "C",
    };
    let tier = if record[1] & 0x20 != 0 { 'H' } else { 'L' };
    let profile = record[1] & 0x1f;
    let flags = u32::from_be_bytes([record[2], record[3], record[4], record[5]]).reverse_bits();
    let mut out = format!("hvc1.{space}{profile}.{flags:X}.{tier}{}", record[12]);
    let constraints = &record[6..12];
    let used = constraints
        .iter()
        .rposition(|b| *b != 0)
        .map_or(0, |last| last + 1);
    for byte in &constraints[..used] {
        out.push_str(&format!(".{byte:02X}"));
    }
    Some(out)
}

/// The codec string of an AV1CodecConfigurationRecord.
pub fn av1(record: &[u8]) -> Option<String> {
    let [_, profile_level, flags, ..] = record else {
        return None;
    };
    let profile = profile_level >> 5;
    let level = profile_level & 0x1f;
    let tier = if flags & 0x80 != 0 { 'H' } else { 'M' };
    let depth = match (flags & 0x40 != 0, flags & 0x20 != 0) {
        (true, true) => 12,
        (true, false) => 10,
        _ => 8,
    };
    Some(format!("av01.{profile}.{level:02}{tier}.{depth:02}"))
}

/// The codec string of an AAC AudioSpecificConfig.
pub fn aac(config: &AacConfig) -> String {
    format!("mp4a.40.{}", config.object_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avc_names_profile_constraints_and_level() {
        assert_eq!(
            avc(&[1, 0x64, 0x00, 0x1f, 0xff]).as_deref(),
            Some("avc1.64001f")
        );
        assert_eq!(avc(&[1, 0x42, 0xc0, 0x1e]).as_deref(), Some("avc1.42c01e"));
        assert_eq!(avc(&[1, 0x42]), None);
    }

    #[test]
    fn hevc_follows_annex_e() {
        // Main profile, Main tier, level 3.1 (93), progressive and frame-only constraint
        // flags (0x90) as x265 writes them.
        let mut record = vec![1, 0x01, 0x60, 0, 0, 0, 0x90, 0, 0, 0, 0, 0, 93];
        record.extend_from_slice(&[0; 10]);
        assert_eq!(hevc(&record).as_deref(), Some("hvc1.1.6.L93.90"));
        // Main 10, High tier, level 5.1, no constraint flags.
        let record = [1, 0x22, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 153];
        assert_eq!(hevc(&record).as_deref(), Some("hvc1.2.4.H153"));
        assert_eq!(hevc(&[1, 2, 3]), None);
    }

    #[test]
    fn av1_names_profile_level_tier_and_depth() {
        // Main profile, level 3.1 (seq_level_idx 5), Main tier, 8 bits.
        assert_eq!(
            av1(&[0x81, 0x05, 0x0c, 0]).as_deref(),
            Some("av01.0.05M.08")
        );
        // High profile, level 13, High tier, 10 bits.
        assert_eq!(
            av1(&[0x81, (1 << 5) | 13, 0x80 | 0x40, 0]).as_deref(),
            Some("av01.1.13H.10")
        );
    }

    #[test]
    fn aac_names_the_object_type() {
        let lc = AacConfig::parse(&[0x12, 0x10]).unwrap();
        assert_eq!(aac(&lc), "mp4a.40.2");
    }
}
