//! A bit reader for H.264/HEVC parameter sets: emulation-prevention bytes removed, fixed-width
//! and Exp-Golomb fields (ITU-T H.264 §7.2 and §9.1).

use crate::MediaError;

/// Reads bits, most significant first, from a NAL unit payload.
#[derive(Debug)]
pub(crate) struct BitReader {
    data: Vec<u8>,
    pos: usize,
}

impl BitReader {
    /// A reader over `nal` with every `00 00 03` emulation-prevention byte dropped.
    pub fn from_nal(nal: &[u8]) -> Self {
        let mut data = Vec::with_capacity(nal.len());
        let mut zeros = 0;
        for &b in nal {
            if zeros >= 2 && b == 3 {
                zeros = 0;
                continue;
            }
            zeros = if b == 0 { zeros + 1 } else { 0 };
            data.push(b);
        }
        Self { data, pos: 0 }
    }

    /// A reader over `data` as it is (AV1 has no emulation prevention).
    pub fn from_raw(data: &[u8]) -> Self {
        Self {
            data: data.to_vec(),
            pos: 0,
        }
    }

    pub fn bit(&mut self) -> Result<u32, MediaError> {
        let byte = self.data.get(self.pos / 8).ok_or(MediaError::Truncated {
            what: "parameter set",
        })?;
        let bit = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Ok(u32::from(bit))
    }

    pub fn bits(&mut self, n: u32) -> Result<u32, MediaError> {
        (0..n).try_fold(0u32, |acc, _| Ok((acc << 1) | self.bit()?))
    }

    pub fn skip(&mut self, n: usize) -> Result<(), MediaError> {
        self.pos += n;
        if self.pos > self.data.len() * 8 {
            return Err(MediaError::Truncated {
                what: "parameter set",
            });
        }
        Ok(())
    }

    /// ue(v).
    pub fn ue(&mut self) -> Result<u32, MediaError> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return Err(MediaError::Invalid("exp-golomb code"));
            }
        }
        let rest = self.bits(zeros)?;
        Ok(((1u64 << zeros) - 1 + u64::from(rest)).min(u64::from(u32::MAX)) as u32)
    }

    /// se(v).
    pub fn se(&mut self) -> Result<i32, MediaError> {
        let k = self.ue()?;
        let magnitude = k.div_ceil(2) as i32;
        Ok(if k % 2 == 1 { magnitude } else { -magnitude })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_golomb_and_emulation_prevention() {
        // 1 | 010 | 011 | 00100 | 00101 -> ue 0, 1, 2, 3, 4
        let mut r = BitReader::from_nal(&[0b1010_0110, 0b0100_0010, 0b1000_0000]);
        assert_eq!(
            (0..5).map(|_| r.ue().unwrap()).collect::<Vec<_>>(),
            [0, 1, 2, 3, 4]
        );
        let mut r = BitReader::from_nal(&[0b0100_1100, 0b1000_0000]);
        assert_eq!(r.se().unwrap(), 1);
        assert_eq!(r.se().unwrap(), -1);
        let r = BitReader::from_nal(&[0, 0, 3, 1, 0, 0, 3]);
        assert_eq!(r.data, [0, 0, 1, 0, 0]);
        let mut r = BitReader::from_nal(&[0]);
        assert!(r.ue().is_err());
    }
}
