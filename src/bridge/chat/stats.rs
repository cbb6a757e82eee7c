//! The `stats` command: minimum, maximum, average and a sparkline of a sensor's (or a pattern's)
//! history over a window, and a note when the kept history does not reach back that far.
//! [`Bot::stats_report`] computes it once for every front end (this text, the ad-hoc form).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::bridge::bot::Bot;
use crate::bridge::cache::Sample;
use crate::bridge::reply;

/// The statistics of one sensor or pattern over a window, formatted with its unit.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StatsReport {
    /// What was asked for: `temp`, `vib (4 topics)`.
    pub what: String,
    /// The window.
    pub window: Duration,
    /// The figures, or `None` when no reading fell in the window.
    pub figures: Option<Figures>,
    /// Whether the kept history reaches back the whole window.
    pub covered: bool,
}

/// Min, max and average with their unit, the count and the sparkline.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Figures {
    /// Smallest value, with its unit.
    pub min: String,
    /// Largest value, with its unit.
    pub max: String,
    /// Average, one decimal finer than the readings, with its unit.
    pub avg: String,
    /// Number of readings.
    pub count: usize,
    /// See [`reply::Stats::sparkline`].
    pub sparkline: String,
}

impl Bot {
    /// The statistics of `target` (a sensor name or a topic pattern) over `window`, or the
    /// reply explaining why there are none.
    pub(crate) fn stats_report(
        &self,
        target: &str,
        window: Duration,
        now: Instant,
    ) -> Result<StatsReport, String> {
        let (label, filter) = self.resolve(target)?;
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
        let (unit, precision) = self
            .sensors
            .by_name(label)
            .or_else(|| topics.first().and_then(|t| self.sensors.for_topic(t)))
            .map_or(("", None), |s| (s.unit.as_str(), s.precision));
        // The average gets one more decimal than the readings: it is finer than any of them.
        let avg_precision = precision.map(|p| p + 1).or(Some(2));
        let figures = reply::stats(&samples, window, now).map(|stats| Figures {
            min: reply::format_value(stats.min, precision, unit),
            max: reply::format_value(stats.max, precision, unit),
            avg: reply::format_value(stats.avg, avg_precision, unit),
            count: stats.count,
            sparkline: stats.sparkline,
        });
        Ok(StatsReport {
            what,
            window,
            figures,
            covered,
        })
    }

    /// The note for a window the kept history does not cover.
    pub(crate) fn history_note(&self) -> String {
        format!(
            "The history keeps {} readings per topic; it does not reach back the whole window.",
            self.cache.limits().history
        )
    }

    pub(super) fn stats(&self, target: &str, window: Duration, now: Instant) -> String {
        let report = match self.stats_report(target, window, now) {
            Ok(report) => report,
            Err(text) => return text,
        };
        let Some(figures) = &report.figures else {
            return format!(
                "No readings of {} in the last {}.",
                report.what,
                reply::format_age(window)
            );
        };
        let mut text = format!(
            "{}, last {}: min {}, max {}, avg {}, {} readings\n{}",
            report.what,
            reply::format_age(window),
            figures.min,
            figures.max,
            figures.avg,
            figures.count,
            figures.sparkline
        );
        if !report.covered {
            let _ = write!(text, "\n({})", self.history_note());
        }
        text
    }
}
