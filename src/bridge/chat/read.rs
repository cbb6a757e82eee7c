//! Reading commands: any other text (the default sensor's reading, or a named sensor's), `get`
//! for a sensor or a topic pattern, and `list`. The helpers here (a sensor's reply, one topic's
//! line, resolving a name or pattern) are shared with the other command groups.

use std::time::Instant;

use crate::bridge::bot::Bot;
use crate::bridge::cache::Entry;
use crate::bridge::reply::{self, SensorView};
use crate::bridge::sensors::Sensor;

impl Bot {
    fn view(&self, sensor: &Sensor, topic: &str) -> SensorView {
        SensorView {
            topic: topic.to_string(),
            unit: sensor.unit.clone(),
            precision: sensor.precision,
            stale_after: self.settings.stale_after,
        }
    }

    /// One sensor's reading: for a single topic as always; for a pattern, every topic under it.
    pub(super) fn sensor_reply(&self, sensor: &Sensor, now: Instant) -> String {
        if !crate::topic::is_pattern(&sensor.filter) {
            let view = self.view(sensor, &sensor.filter);
            return reply::reading_reply(&view, self.cache.get(&sensor.filter), now);
        }
        self.topics_reply(&sensor.name, &sensor.filter, now)
    }

    /// Every cached topic under `filter`, one line each.
    fn topics_reply(&self, label: &str, filter: &str, now: Instant) -> String {
        let found = self.cache.matching(filter);
        if found.is_empty() {
            return format!(
                "No reading under {filter} yet: the bot has received nothing on a topic matching it."
            );
        }
        let header = if label == filter {
            format!("{filter}: {} topics", found.len())
        } else {
            format!("{label} ({filter}): {} topics", found.len())
        };
        let lines = found
            .iter()
            .map(|(topic, entry)| self.line(topic, entry, now))
            .collect();
        reply::capped(header, lines, "narrow the pattern")
    }

    pub(crate) fn line(&self, topic: &str, entry: &Entry, now: Instant) -> String {
        let (unit, precision) = self
            .sensors
            .for_topic(topic)
            .map_or(("", None), |s| (s.unit.as_str(), s.precision));
        reply::topic_line(
            topic,
            entry,
            unit,
            precision,
            self.settings.stale_after,
            now,
        )
    }

    pub(super) fn list(&self, now: Instant) -> String {
        let mut lines = Vec::new();
        for sensor in self.sensors.iter() {
            if crate::topic::is_pattern(&sensor.filter) {
                let found = self.cache.matching(&sensor.filter);
                lines.push(format!(
                    "{} ({}): {} topics",
                    sensor.name,
                    sensor.filter,
                    found.len()
                ));
                lines.extend(
                    found
                        .iter()
                        .map(|(topic, entry)| format!("  {}", self.line(topic, entry, now))),
                );
            } else {
                let view = self.view(sensor, &sensor.filter);
                let text = reply::reading_reply(&view, self.cache.get(&sensor.filter), now);
                if sensor.name == sensor.filter {
                    lines.push(text);
                } else {
                    lines.push(format!("{}: {text}", sensor.name));
                }
            }
        }
        let header = format!(
            "{} sensors, {} topics with readings:",
            self.sensors.len(),
            self.cache.len()
        );
        reply::capped(header, lines, "ask for fewer with get <pattern>")
    }

    /// Resolves a sensor name or a topic (pattern) to an MQTT filter and a label.
    pub(crate) fn resolve<'a>(&'a self, target: &'a str) -> Result<(&'a str, &'a str), String> {
        if let Some(sensor) = self.sensors.by_name(target) {
            return Ok((&sensor.name, &sensor.filter));
        }
        if let Err(problem) = crate::topic::check_filter(target) {
            return Err(format!(
                "\"{target}\" is neither a sensor nor a topic pattern ({problem}). Send list to see every sensor."
            ));
        }
        Ok((target, target))
    }

    pub(super) fn get(&self, target: &str, now: Instant) -> String {
        if let Some(sensor) = self.sensors.by_name(target) {
            return self.sensor_reply(sensor, now);
        }
        let (label, filter) = match self.resolve(target) {
            Ok(found) => found,
            Err(text) => return text,
        };
        if crate::topic::is_pattern(filter) {
            if self.cache.matching(filter).is_empty() {
                return format!(
                    "Nothing matches {filter}: no topic under it has sent a reading. Send list to see every sensor."
                );
            }
            return self.topics_reply(label, filter, now);
        }
        match (self.cache.get(filter), self.sensors.for_topic(filter)) {
            (_, None) => {
                format!("I do not follow {filter}. Send list to see every sensor and topic I know.")
            }
            (entry, Some(sensor)) => reply::reading_reply(&self.view(sensor, filter), entry, now),
        }
    }
}
