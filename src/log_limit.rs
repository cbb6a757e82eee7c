//! One log line per interval for a problem that can repeat thousands of times a second (a sensor
//! publishing garbage, a full disk), each line counting the occurrences it stands for.

use std::time::{Duration, Instant};

/// Decides which occurrences of one kind of problem get a log line.
#[derive(Debug)]
pub struct LogLimit {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimit {
    /// At most one line per `interval`; the first occurrence is always logged.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// Counts an occurrence at `now`: `Some(n)` when it should be logged, `n` being the
    /// occurrences left unlogged since the previous line; `None` when it is only counted.
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }

    /// The occurrences not logged yet (for a last line at shutdown), resetting the count.
    pub fn take_suppressed(&mut self) -> u64 {
        std::mem::take(&mut self.suppressed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_a_count() {
        let mut log = LogLimit::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(log.admit(t0), Some(0));
        for i in 1..=5 {
            assert_eq!(log.admit(t0 + Duration::from_secs(i)), None);
        }
        assert_eq!(log.admit(t0 + Duration::from_secs(60)), Some(5));
        assert_eq!(log.admit(t0 + Duration::from_secs(61)), None);
        assert_eq!(log.take_suppressed(), 1);
        assert_eq!(log.take_suppressed(), 0);
    }
}
