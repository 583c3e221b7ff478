//! RTMP timestamps are 32-bit milliseconds that wrap after about 49.7 days; this extends them
//! into a 64-bit timeline that only wraps forward.

/// Extends wrapping 32-bit millisecond timestamps.
#[derive(Debug, Default, Clone)]
pub struct TimestampExtender {
    last: Option<u32>,
    epoch: i64,
}

impl TimestampExtender {
    /// Returns `ts` on the extended timeline. A step back of more than half the range is taken as
    /// a wrap; smaller steps back are returned as they are (out-of-order audio and video).
    pub fn extend(&mut self, ts: u32) -> i64 {
        if let Some(last) = self.last {
            if ts < last && last - ts > 1 << 31 {
                self.epoch += 1 << 32;
            } else if ts > last && ts - last > 1 << 31 {
                // A late packet from before the wrap: place it before the epoch change.
                return self.epoch - (1i64 << 32) + i64::from(ts);
            }
        }
        self.last = Some(ts);
        self.epoch + i64::from(ts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_forward() {
        let mut ext = TimestampExtender::default();
        assert_eq!(ext.extend(u32::MAX - 10), i64::from(u32::MAX - 10));
        assert_eq!(ext.extend(5), (1i64 << 32) + 5);
        assert_eq!(ext.extend(u32::MAX - 2), i64::from(u32::MAX - 2));
        assert_eq!(ext.extend(40), (1i64 << 32) + 40);
    }
}
