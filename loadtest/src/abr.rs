//! Adaptive bitrate as hls.js 1.6 does it (the version the player page ships): a bandwidth
//! estimate that is the lower of a fast and a slow exponentially weighted moving average of
//! the media downloads, weighted by how long each took, and a variant chosen at a segment
//! boundary as the highest whose BANDWIDTH fits the estimate times a safety factor (0.95 to
//! stay or go down, 0.7 to go up).

/// hls.js `abrEwmaFastLive`: half-life in seconds of download time.
const FAST_HALF_LIFE: f64 = 3.0;
/// hls.js `abrEwmaSlowLive`.
const SLOW_HALF_LIFE: f64 = 9.0;
/// hls.js `abrEwmaDefaultEstimate`: bits per second before anything was measured.
pub const DEFAULT_ESTIMATE: f64 = 500_000.0;
/// hls.js `abrBandWidthFactor` and `abrBandWidthUpFactor`.
const STAY_FACTOR: f64 = 0.95;
const UP_FACTOR: f64 = 0.7;
/// hls.js's estimator counts a download as taking at least 50 ms.
const MIN_DELAY_SECS: f64 = 0.05;

/// One exponentially weighted moving average with a half-life in units of weight.
#[derive(Debug, Clone)]
struct Ewma {
    alpha: f64,
    estimate: f64,
    weight: f64,
}

impl Ewma {
    fn new(half_life: f64) -> Self {
        Self {
            alpha: (0.5f64.ln() / half_life).exp(),
            estimate: 0.0,
            weight: 0.0,
        }
    }

    fn sample(&mut self, weight: f64, value: f64) {
        let a = self.alpha.powf(weight);
        self.estimate = value * (1.0 - a) + a * self.estimate;
        self.weight += weight;
    }

    /// The estimate corrected for starting from zero.
    fn get(&self) -> f64 {
        let zero = 1.0 - self.alpha.powf(self.weight);
        if zero > 0.0 {
            self.estimate / zero
        } else {
            self.estimate
        }
    }
}

/// The bandwidth estimate.
#[derive(Debug, Clone)]
pub(crate) struct Estimator {
    fast: Ewma,
    slow: Ewma,
}

impl Default for Estimator {
    fn default() -> Self {
        Self {
            fast: Ewma::new(FAST_HALF_LIFE),
            slow: Ewma::new(SLOW_HALF_LIFE),
        }
    }
}

impl Estimator {
    /// A media download of `bytes` that took `secs` from request to last byte.
    pub fn sample(&mut self, secs: f64, bytes: u64) {
        let secs = secs.max(MIN_DELAY_SECS);
        let bps = bytes as f64 * 8.0 / secs;
        self.fast.sample(secs, bps);
        self.slow.sample(secs, bps);
    }

    /// Bits per second.
    pub fn estimate(&self) -> f64 {
        if self.fast.weight < 0.001 {
            DEFAULT_ESTIMATE
        } else {
            self.fast.get().min(self.slow.get())
        }
    }
}

/// The variant to play next among `bandwidths` (ascending), playing `current` now: the highest
/// that fits the estimate, with the up factor for variants above the current one. The lowest
/// when none fits.
pub(crate) fn choose(bandwidths: &[u64], current: usize, estimate: f64) -> usize {
    (0..bandwidths.len())
        .rev()
        .find(|&i| {
            let factor = if i > current { UP_FACTOR } else { STAY_FACTOR };
            (bandwidths[i] as f64) <= estimate * factor
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_follows_downloads_and_the_lower_average_wins() {
        let mut e = Estimator::default();
        assert_eq!(e.estimate(), DEFAULT_ESTIMATE);
        // 1 MB in 1 s, steadily: 8 Mb/s.
        for _ in 0..10 {
            e.sample(1.0, 1_000_000);
        }
        assert!((e.estimate() - 8e6).abs() < 1.0, "{}", e.estimate());
        // The link drops to 1 Mb/s: the fast average falls first (two of its half-lives
        // later it is down to about 2.75 Mb/s), and it is the estimate.
        for _ in 0..6 {
            e.sample(1.0, 125_000);
        }
        let fast = e.fast.get();
        assert!(fast < e.slow.get());
        assert_eq!(e.estimate(), fast);
        assert!(e.estimate() < 4e6, "{}", e.estimate());
    }

    #[test]
    fn choosing_goes_up_cautiously_and_down_at_once() {
        let ladder = [400_000, 1_200_000, 2_800_000];
        assert_eq!(choose(&ladder, 0, DEFAULT_ESTIMATE), 0);
        // 1.5 Mb/s: staying at 1.2 fits (0.95), going up from 0 to 1.2 does not (0.7).
        assert_eq!(choose(&ladder, 1, 1_500_000.0), 1);
        assert_eq!(choose(&ladder, 0, 1_500_000.0), 0);
        assert_eq!(choose(&ladder, 0, 1_800_000.0), 1);
        assert_eq!(choose(&ladder, 2, 1_000_000.0), 0);
        assert_eq!(
            choose(&ladder, 0, 100_000.0),
            0,
            "the lowest when none fits"
        );
        assert_eq!(choose(&ladder, 1, 10e6), 2);
    }
}
