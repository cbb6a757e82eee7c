//! Exponential reconnect backoff with jitter, so a fleet of bridges does not reconnect to a
//! restarted broker in lockstep.

use std::time::Duration;

/// Delays of about `base`, 2×`base`, 4×`base`… capped at `max`, each randomised to between half
/// and all of its nominal value ("equal jitter").
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// The bot's policy for reconnecting to its broker and its XMPP server: about 0.5 s, then
    /// 1 s, then at most 1.5 s between attempts, so a peer that comes back is used again within
    /// 2 s however long it was away. (One connection attempt a second or so to a peer that is
    /// down costs it next to nothing.)
    pub fn reconnect() -> Self {
        Self::new(Duration::from_millis(500), Duration::from_millis(1500))
    }

    /// A backoff starting at `base` and never exceeding `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            failures: 0,
        }
    }

    /// The delay before the next attempt; each call doubles the nominal delay.
    pub fn next_delay(&mut self) -> Duration {
        let nominal = self.nominal(self.failures);
        self.failures = self.failures.saturating_add(1);
        jittered(nominal, rand::random::<f64>())
    }

    /// Call after a successful connection: the next failure starts from `base` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    fn nominal(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.min(31));
        self.base.saturating_mul(factor).min(self.max)
    }
}

/// `nominal` scaled into `[nominal/2, nominal]` by `unit` in `[0, 1)`.
fn jittered(nominal: Duration, unit: f64) -> Duration {
    nominal.mul_f64(0.5 + unit.clamp(0.0, 1.0) / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap() {
        let b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let nominal: Vec<u64> = (0..10).map(|n| b.nominal(n).as_millis() as u64).collect();
        assert_eq!(
            nominal,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000]
        );
        assert_eq!(b.nominal(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn jitter_stays_between_half_and_whole() {
        let n = Duration::from_secs(8);
        assert_eq!(jittered(n, 0.0), Duration::from_secs(4));
        assert_eq!(jittered(n, 0.5), Duration::from_secs(6));
        assert!(jittered(n, 0.999_999) <= n);
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        for expected_max in [500, 1000, 2000, 4000] {
            let d = b.next_delay().as_millis() as u64;
            assert!((expected_max / 2..=expected_max).contains(&d), "{d}");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(500));
    }
}
