//! The `stale` command: topics that have sent nothing for longer than `--stale-after`, and
//! sensors never heard from. [`Bot::stale_report`] finds them for every front end (this text,
//! the ad-hoc command).

use std::time::Instant;

use crate::bridge::bot::Bot;
use crate::bridge::cache::Entry;
use crate::bridge::reply;

/// What is stale at one moment.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StaleReport {
    /// Single-topic sensors never heard from, by filter.
    pub never: Vec<String>,
    /// Topics silent for over `--stale-after`, with their last reading, by topic.
    pub silent: Vec<(String, Entry)>,
    /// Every topic counted (heard from or not).
    pub total: usize,
}

impl StaleReport {
    /// The answer when nothing is stale, for the text command and the form alike.
    pub(crate) fn all_fresh(&self, stale_after: std::time::Duration) -> String {
        let within = reply::format_age(stale_after);
        match self.total {
            1 => format!("Nothing is stale: the one topic has sent a reading within {within}."),
            n => format!("Nothing is stale: all {n} topics have sent a reading within {within}."),
        }
    }
}

impl Bot {
    /// The stale topics and silent sensors at `now`.
    pub(crate) fn stale_report(&self, now: Instant) -> StaleReport {
        let stale_after = self.settings.stale_after;
        let mut never = Vec::new();
        // A topic may be covered by several sensors: count and show it once.
        let mut topics = std::collections::BTreeMap::new();
        for sensor in self.sensors.iter() {
            let found = self.cache.matching(&sensor.filter);
            if found.is_empty() && !crate::topic::is_pattern(&sensor.filter) {
                never.push(sensor.filter.clone());
            }
            topics.extend(found);
        }
        let total = never.len() + topics.len();
        let silent = topics
            .into_iter()
            .filter(|(_, entry)| now.saturating_duration_since(entry.received_at) > stale_after)
            .collect();
        StaleReport {
            never,
            silent,
            total,
        }
    }

    pub(super) fn stale(&self, now: Instant) -> String {
        let stale_after = self.settings.stale_after;
        let report = self.stale_report(now);
        let mut lines: Vec<String> = report
            .never
            .iter()
            .map(|filter| format!("{filter}: no reading since the bot started"))
            .collect();
        lines.extend(
            report
                .silent
                .iter()
                .map(|(topic, entry)| self.line(topic, entry, now)),
        );
        if lines.is_empty() {
            return report.all_fresh(stale_after);
        }
        let header = format!(
            "{} of {} topics have sent nothing for over {}:",
            lines.len(),
            report.total,
            reply::format_age(stale_after)
        );
        reply::capped(header, lines, "narrow with get <pattern>")
    }
}
