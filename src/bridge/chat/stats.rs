//! The `stats` command: minimum, maximum, average and a sparkline of a sensor's (or a pattern's)
//! history over a window, and a note when the kept history does not reach back that far.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::bridge::bot::Bot;
use crate::bridge::cache::Sample;
use crate::bridge::reply;

impl Bot {
    pub(super) fn stats(&self, target: &str, window: Duration, now: Instant) -> String {
        let (label, filter) = match self.resolve(target) {
            Ok(found) => found,
            Err(text) => return text,
        };
        let since = now.checked_sub(window).unwrap_or(now);
        let topics: Vec<String> = if crate::topic::is_pattern(filter) {
            self.cache
                .matching(filter)
                .into_iter()
                .map(|(t, _)| t)
                .collect()
        } else {
            vec![filter.to_string()]
        };
        let mut samples: Vec<(Instant, f64)> = Vec::new();
        let mut covered = true;
        for topic in &topics {
            let (found, full) = self.cache.history(topic, since);
            covered &= full;
            samples.extend(found.iter().map(|s: &Sample| (s.at, s.value)));
        }
        let what = match topics.as_slice() {
            [one] if one == label => label.to_string(),
            [one] => format!("{label} ({one})"),
            many => format!("{label} ({} topics)", many.len()),
        };
        let Some(stats) = reply::stats(&samples, window, now) else {
            return format!(
                "No readings of {what} in the last {}.",
                reply::format_age(window)
            );
        };
        let (unit, precision) = self
            .sensors
            .by_name(label)
            .or_else(|| topics.first().and_then(|t| self.sensors.for_topic(t)))
            .map_or(("", None), |s| (s.unit.as_str(), s.precision));
        // The average gets one more decimal than the readings: it is finer than any of them.
        let avg_precision = precision.map(|p| p + 1).or(Some(2));
        let mut text = format!(
            "{what}, last {}: min {}, max {}, avg {}, {} readings\n{}",
            reply::format_age(window),
            reply::format_value(stats.min, precision, unit),
            reply::format_value(stats.max, precision, unit),
            reply::format_value(stats.avg, avg_precision, unit),
            stats.count,
            stats.sparkline
        );
        if !covered {
            let _ = write!(
                text,
                "\n(The history keeps {} readings per topic; it does not reach back the whole window.)",
                self.cache.limits().history
            );
        }
        text
    }
}
