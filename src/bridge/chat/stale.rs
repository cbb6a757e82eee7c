//! The `stale` command: topics that have sent nothing for longer than `--stale-after`, and
//! sensors never heard from.

use std::time::Instant;

use crate::bridge::bot::Bot;
use crate::bridge::reply;

impl Bot {
    pub(super) fn stale(&self, now: Instant) -> String {
        let stale_after = self.settings.stale_after;
        let mut lines = Vec::new();
        // A topic may be covered by several sensors: count and show it once.
        let mut topics = std::collections::BTreeMap::new();
        for sensor in self.sensors.iter() {
            let found = self.cache.matching(&sensor.filter);
            if found.is_empty() && !crate::topic::is_pattern(&sensor.filter) {
                lines.push(format!(
                    "{}: no reading since the bot started",
                    sensor.filter
                ));
            }
            topics.extend(found);
        }
        let total = lines.len() + topics.len();
        for (topic, entry) in &topics {
            if now.saturating_duration_since(entry.received_at) > stale_after {
                lines.push(self.line(topic, entry, now));
            }
        }
        if lines.is_empty() {
            return format!(
                "Nothing is stale: all {total} topics have sent a reading within {}.",
                reply::format_age(stale_after)
            );
        }
        let header = format!(
            "{} of {total} topics have sent nothing for over {}:",
            lines.len(),
            reply::format_age(stale_after)
        );
        reply::capped(header, lines, "narrow with get <pattern>")
    }
}
