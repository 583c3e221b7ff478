//! Load profiles: who joins when, stays how long, and watches what.
//!
//! A scenario file (TOML) describes a closed model (the audience size over time, in steps:
//! ramps, a flash crowd, a soak), an open model (Poisson arrivals with a session-length
//! distribution: churn), or both, and a mix of viewer kinds drawn by weight (streams with a
//! popularity skew, LL-HLS and plain viewers, fixed or adaptive variants). Without a file the
//! command line's `--viewers` and `--ramp` are one step of one kind. The plan is drawn from a
//! seeded generator, so every shard of a run computes the same audience and plays its share.
//!
//! ```toml
//! seed = 7
//! duration = "10m"
//!
//! [[steps]]            # everyone joins the 10:00 all-hands within 30 s
//! at = "0s"
//! viewers = 2000
//! ramp = "30s"
//!
//! [[steps]]            # and half leave after the first talk
//! at = "6m"
//! viewers = 1000
//! ramp = "1m"
//!
//! [arrivals]           # while others come and go
//! rate = 2.0           # viewers a second
//! session = "exponential"
//! session_mean = "3m"
//!
//! [[mix]]
//! weight = 9           # the main stream, low latency, adaptive
//! [[mix]]
//! weight = 1           # a side room, plain HLS players
//! url = "http://balancer:8080/hls/room2/index.m3u8"
//! low_latency = false
//! ```

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde::Deserialize;

use crate::config::VariantChoice;

/// The scenario file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Seeds the draws (arrivals, session lengths, mix); the same seed gives the same plan.
    pub seed: Option<u64>,
    /// Overrides `--duration`.
    pub duration: Option<String>,
    #[serde(default)]
    pub steps: Vec<Step>,
    pub arrivals: Option<Arrivals>,
    #[serde(default)]
    pub mix: Vec<Mix>,
}

/// From `at` on, the closed audience moves to `viewers` evenly over `ramp`; when it shrinks,
/// the latest to join leave first.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    #[serde(default = "zero")]
    pub at: String,
    pub viewers: usize,
    #[serde(default = "zero")]
    pub ramp: String,
}

/// Poisson arrivals of `rate` viewers a second from `from` to `until`, each staying for a
/// session length drawn from `session`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Arrivals {
    pub rate: f64,
    #[serde(default = "zero")]
    pub from: String,
    /// Default: the end of the run.
    pub until: Option<String>,
    /// `exponential` (mean `session_mean`), `uniform` (`session_min`..`session_max`) or
    /// `fixed` (`session_mean`).
    #[serde(default = "exponential")]
    pub session: String,
    pub session_mean: Option<String>,
    pub session_min: Option<String>,
    pub session_max: Option<String>,
}

/// One kind of viewer, drawn with probability weight / sum of weights.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mix {
    #[serde(default = "one")]
    pub weight: f64,
    /// Default: the URL on the command line.
    pub url: Option<String>,
    /// `abr`, `lowest`, `highest` or an index; default: `--variant`.
    pub variant: Option<String>,
    /// Use parts and blocking reloads when the playlist offers them (hls.js
    /// `lowLatencyMode`); default true.
    #[serde(default = "yes")]
    pub low_latency: bool,
}

fn zero() -> String {
    "0s".into()
}
fn one() -> f64 {
    1.0
}
fn yes() -> bool {
    true
}
fn exponential() -> String {
    "exponential".into()
}

/// A viewer kind resolved against the command line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ViewerKind {
    pub url: String,
    pub variant: VariantChoice,
    pub low_latency: bool,
    pub weight: f64,
}

/// One viewer of the plan: when it joins and leaves (from the run's start), and its kind.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Slot {
    pub join: Duration,
    pub leave: Duration,
    pub kind: usize,
}

/// The whole audience of a run.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub duration: Duration,
    pub kinds: Vec<ViewerKind>,
    pub slots: Vec<Slot>,
}

fn time(s: &str, what: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(s).with_context(|| format!("{what} = {s:?}: write e.g. 30s, 5m"))
}

impl Scenario {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("{} is not a valid scenario", path.display()))
    }

    /// The scenario of the command line alone: `viewers` joining over `ramp`.
    pub fn simple(viewers: usize, ramp: Duration) -> Self {
        Self {
            steps: vec![Step {
                at: zero(),
                viewers,
                ramp: format!("{}ms", ramp.as_millis()),
            }],
            ..Self::default()
        }
    }

    /// Draws the audience. `url`, `variant` and `duration` come from the command line.
    pub(crate) fn plan(
        &self,
        url: &str,
        variant: VariantChoice,
        duration: Duration,
    ) -> anyhow::Result<Plan> {
        let duration = match &self.duration {
            Some(d) => time(d, "duration")?,
            None => duration,
        };
        let mut kinds = Vec::new();
        for m in &self.mix {
            if !(m.weight.is_finite() && m.weight > 0.0) {
                bail!("a [[mix]] weight must be above 0");
            }
            kinds.push(ViewerKind {
                url: m.url.clone().unwrap_or_else(|| url.to_string()),
                variant: match &m.variant {
                    Some(v) => v
                        .parse()
                        .map_err(|e: String| anyhow::anyhow!("[[mix]] variant: {e}"))?,
                    None => variant,
                },
                low_latency: m.low_latency,
                weight: m.weight,
            });
        }
        if kinds.is_empty() {
            kinds.push(ViewerKind {
                url: url.to_string(),
                variant,
                low_latency: true,
                weight: 1.0,
            });
        }
        let mut rng = Rng::new(self.seed.unwrap_or(1));
        let mut slots: Vec<Slot> = Vec::new();
        // Closed model: the steps, in order; `active` holds the slots present, latest last.
        let mut active: Vec<usize> = Vec::new();
        let mut last_at = Duration::ZERO;
        for step in &self.steps {
            let at = time(&step.at, "steps.at")?;
            let ramp = time(&step.ramp, "steps.ramp")?;
            if at < last_at {
                bail!("[[steps]] must be in order of `at`");
            }
            if step.viewers > 1_000_000 {
                bail!("[[steps]] viewers = {}: at most 1,000,000", step.viewers);
            }
            last_at = at;
            let now = active.len();
            if step.viewers >= now {
                let k = step.viewers - now;
                for j in 0..k {
                    active.push(slots.len());
                    slots.push(Slot {
                        join: at + ramp.mul_f64(j as f64 / k as f64),
                        leave: duration,
                        kind: 0,
                    });
                }
            } else {
                let k = now - step.viewers;
                for j in 0..k {
                    let i = active.pop().expect("more active than leaving");
                    slots[i].leave = (at + ramp.mul_f64(j as f64 / k as f64)).max(slots[i].join);
                }
            }
        }
        // Open model: Poisson arrivals, exponential gaps.
        if let Some(a) = &self.arrivals {
            if !(a.rate.is_finite() && a.rate > 0.0 && a.rate <= 10_000.0) {
                bail!("[arrivals] rate must be above 0 and at most 10000 a second");
            }
            let from = time(&a.from, "arrivals.from")?;
            let until = match &a.until {
                Some(u) => time(u, "arrivals.until")?,
                None => duration,
            }
            .min(duration);
            let get = |v: &Option<String>, what: &str| -> anyhow::Result<Duration> {
                match v {
                    Some(v) => time(v, what),
                    None => bail!("[arrivals] session = {:?} needs {what}", a.session),
                }
            };
            let session = match a.session.as_str() {
                "exponential" => Session::Exponential(get(&a.session_mean, "session_mean")?),
                "fixed" => Session::Fixed(get(&a.session_mean, "session_mean")?),
                "uniform" => {
                    let (lo, hi) = (
                        get(&a.session_min, "session_min")?,
                        get(&a.session_max, "session_max")?,
                    );
                    if lo > hi {
                        bail!("[arrivals] session_min is above session_max");
                    }
                    Session::Uniform(lo, hi)
                }
                other => {
                    bail!("[arrivals] session = {other:?}: write exponential, uniform or fixed")
                }
            };
            let mut t = from.as_secs_f64();
            loop {
                t += -rng.unit_open().ln() / a.rate;
                if t >= until.as_secs_f64() {
                    break;
                }
                let join = Duration::from_secs_f64(t);
                let length = session.draw(&mut rng);
                slots.push(Slot {
                    join,
                    leave: (join + length).min(duration),
                    kind: 0,
                });
                if slots.len() > 1_000_000 {
                    bail!("[arrivals] makes more than 1,000,000 viewers");
                }
            }
        }
        if slots.is_empty() {
            bail!("the scenario has no viewers (no [[steps]] with viewers, no [arrivals])");
        }
        slots.sort_by_key(|s| s.join);
        let total: f64 = kinds.iter().map(|k| k.weight).sum();
        for slot in &mut slots {
            let mut pick = rng.unit_open() * total;
            slot.kind = kinds.len() - 1;
            for (i, k) in kinds.iter().enumerate() {
                if pick < k.weight {
                    slot.kind = i;
                    break;
                }
                pick -= k.weight;
            }
        }
        Ok(Plan {
            duration,
            kinds,
            slots,
        })
    }
}

enum Session {
    Exponential(Duration),
    Uniform(Duration, Duration),
    Fixed(Duration),
}

impl Session {
    fn draw(&self, rng: &mut Rng) -> Duration {
        match *self {
            Session::Exponential(mean) => mean.mul_f64(-rng.unit_open().ln()),
            Session::Uniform(lo, hi) => lo + (hi - lo).mul_f64(rng.unit_open()),
            Session::Fixed(d) => d,
        }
    }
}

/// SplitMix64: small, seedable, good enough for drawing an audience.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    fn unit_open(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(text: &str) -> anyhow::Result<Plan> {
        let s: Scenario = toml::from_str(text)?;
        s.plan(
            "http://h/a.m3u8",
            VariantChoice::Abr,
            Duration::from_secs(600),
        )
    }

    #[test]
    fn steps_ramp_up_and_the_latest_leave_first() {
        let p = plan(
            "[[steps]]\nviewers = 4\nramp = \"4s\"\n[[steps]]\nat = \"10s\"\nviewers = 2\nramp = \"2s\"\n",
        )
        .unwrap();
        let joins: Vec<u64> = p.slots.iter().map(|s| s.join.as_secs()).collect();
        assert_eq!(joins, [0, 1, 2, 3]);
        let leaves: Vec<u64> = p.slots.iter().map(|s| s.leave.as_secs()).collect();
        assert_eq!(leaves, [600, 600, 11, 10], "the two latest leave over 2 s");
        assert_eq!(p.kinds.len(), 1);
        assert_eq!(p.kinds[0].url, "http://h/a.m3u8");
    }

    #[test]
    fn poisson_arrivals_come_at_the_rate_and_stay_about_the_mean() {
        let p = plan(
            "seed = 3\nduration = \"1000s\"\n[arrivals]\nrate = 2.0\nsession = \"exponential\"\nsession_mean = \"60s\"\n",
        )
        .unwrap();
        let n = p.slots.len() as f64;
        assert!(
            (1800.0..2200.0).contains(&n),
            "{n} arrivals in 1000 s at 2/s"
        );
        let early: Vec<&Slot> = p.slots.iter().filter(|s| s.join.as_secs() < 500).collect();
        let mean = early
            .iter()
            .map(|s| (s.leave - s.join).as_secs_f64())
            .sum::<f64>()
            / early.len() as f64;
        assert!((50.0..70.0).contains(&mean), "mean session {mean} s");
        // The same seed gives the same audience (every shard computes the same plan).
        let again = plan(
            "seed = 3\nduration = \"1000s\"\n[arrivals]\nrate = 2.0\nsession = \"exponential\"\nsession_mean = \"60s\"\n",
        )
        .unwrap();
        assert_eq!(again.slots, p.slots);
    }

    #[test]
    fn mixes_are_drawn_by_weight() {
        let p = plan(
            "[[steps]]\nviewers = 1000\n[[mix]]\nweight = 9\n[[mix]]\nweight = 1\nurl = \"http://h/b.m3u8\"\nlow_latency = false\nvariant = \"lowest\"\n",
        )
        .unwrap();
        let side = p.slots.iter().filter(|s| s.kind == 1).count();
        assert!((60..140).contains(&side), "{side} of 1000 at weight 1/10");
        assert_eq!(p.kinds[1].variant, VariantChoice::Lowest);
        assert!(!p.kinds[1].low_latency);
    }

    #[test]
    fn bad_scenarios_say_what_is_wrong() {
        let e = |t: &str| format!("{:#}", plan(t).unwrap_err());
        assert!(e("[[steps]]\nviewers = 1\nramp = \"soon\"\n").contains("steps.ramp"));
        assert!(e("[arrivals]\nrate = 0.0\n").contains("rate"));
        assert!(e("[arrivals]\nrate = 1.0\nsession = \"uniform\"\n").contains("session_min"));
        assert!(e("").contains("no viewers"));
        assert!(e("[[steps]]\nviewers = 2\n[[mix]]\nweight = -1\n").contains("weight"));
        assert!(
            toml::from_str::<Scenario>("viewers = 3\n").is_err(),
            "unknown keys refused"
        );
    }
}
