//! The alert commands: `alert <sensor> above|below <value> [margin <m>]`, `alerts` and
//! `alert off`. The alert engine itself is [`crate::bridge::alerts`]; the messages an alert sends
//! are made by the bot's ingest side.

use std::fmt::Write as _;
use std::time::Instant;

use crate::bridge::alerts::{Alert, Key};
use crate::bridge::bot::{lock, Bot};
use crate::bridge::persist::StoredAlert;
use crate::bridge::reply;

impl Bot {
    pub(super) fn alert_set(
        &self,
        contact: &str,
        target: &str,
        above: bool,
        threshold: f64,
        margin: Option<f64>,
        now: Instant,
    ) -> String {
        self.set_alert(contact, target, above, threshold, margin, now)
            .unwrap_or_else(|text| text)
    }

    /// Sets `contact`'s alert: `Ok` with the confirmation, `Err` with why it was not set. For
    /// every front end (the `alert` text command, the ad-hoc form).
    pub(crate) fn set_alert(
        &self,
        contact: &str,
        target: &str,
        above: bool,
        threshold: f64,
        margin: Option<f64>,
        now: Instant,
    ) -> Result<String, String> {
        let (label, filter) = self.resolve(target)?;
        if !self
            .sensors
            .iter()
            .any(|s| filters_overlap(&s.filter, filter))
        {
            return Err(format!(
                "I do not follow {filter}, so that alert could never fire. Send list to see my sensors."
            ));
        }
        let margin = margin.unwrap_or_else(|| Alert::default_margin(threshold));
        let alert = Alert {
            key: Key {
                contact: contact.to_string(),
                target: label.to_string(),
                above,
            },
            filter: filter.to_string(),
            threshold,
            margin,
        };
        let current: Vec<(String, f64, Instant)> = self
            .cache
            .matching(filter)
            .into_iter()
            .map(|(t, e)| (t, e.reading.value, e.received_at))
            .collect();
        let stored = StoredAlert {
            key: alert.key.clone(),
            filter: alert.filter.clone(),
            threshold,
            margin,
            created_unix_ms: self.unix_ms(now),
        };
        let past = {
            let mut alerts = lock(&self.alerts);
            match alerts.set(alert, &current, now) {
                Ok(past) => past,
                Err(error) => return Err(format!("Not set: {error}.")),
            }
        };
        self.save_alert(stored);
        tracing::info!(
            contact,
            target = label,
            filter,
            above,
            threshold,
            "alert set"
        );
        let unit = self.unit_of(label, filter);
        let direction = if above { "above" } else { "below" };
        let back = if above { "below" } else { "above" };
        let rearm = if above {
            threshold - margin
        } else {
            threshold + margin
        };
        let mut text = format!(
            "Alert set: I will tell you when {label} goes {direction} {} (once per crossing; it \
             re-arms when back {back} {}, at most once every {} per topic), and if it sends \
             nothing for {}.",
            reply::format_value(threshold, None, unit),
            reply::format_value(rearm, None, unit),
            reply::format_age(self.settings.alerts.min_interval),
            reply::format_age(self.settings.stale_after),
        );
        if !past.is_empty() {
            let _ = write!(
                text,
                "\nAlready {direction} {} now (I will tell you after it comes back and crosses again):",
                reply::format_value(threshold, None, unit)
            );
            for (topic, value) in past.iter().take(reply::MAX_LINES) {
                let _ = write!(text, "\n  {topic}: {}", self.value_text(topic, *value));
            }
        }
        Ok(text)
    }

    /// Removes `contact`'s alerts on `target` (both directions), or all of them, from the
    /// engine and the database; how many went.
    pub(crate) fn remove_alerts(&self, contact: &str, target: Option<&str>) -> usize {
        let removed = lock(&self.alerts).remove(contact, target);
        if removed > 0 {
            self.forget_alerts(contact, target);
        }
        removed
    }

    pub(super) fn alert_off(&self, contact: &str, target: Option<&str>) -> String {
        let removed = self.remove_alerts(contact, target);
        match (removed, target) {
            (0, Some(t)) => format!("You have no alert on {t}. Send alerts to see yours."),
            (0, None) => "You have no alerts.".to_string(),
            (1, _) => "Removed 1 alert.".to_string(),
            (n, _) => format!("Removed {n} alerts."),
        }
    }

    pub(crate) fn alerts_of(&self, contact: &str) -> String {
        let alerts = lock(&self.alerts);
        let mine = alerts.of(contact);
        if mine.is_empty() {
            let default = &self.sensors.default_sensor().name;
            return format!("You have no alerts. Set one with: alert {default} above 25");
        }
        let mut text = format!("Your alerts ({}):", mine.len());
        for (alert, topics) in mine {
            let unit = self.unit_of(&alert.key.target, &alert.filter);
            let direction = if alert.key.above { "above" } else { "below" };
            let fired = topics.values().filter(|s| !s.armed).count();
            let silent = topics.values().filter(|s| s.silent_notified).count();
            let _ = write!(
                text,
                "\n{} {direction} {} (margin {}): {} topics, {} past it and waiting to re-arm",
                alert.key.target,
                reply::format_value(alert.threshold, None, unit),
                reply::format_value(alert.margin, None, unit),
                topics.len(),
                fired
            );
            if silent > 0 {
                let _ = write!(text, ", {silent} silent");
            }
        }
        text
    }
}

/// Whether some topic could match both filters (a sensor's filter and an alert's).
fn filters_overlap(a: &str, b: &str) -> bool {
    let (mut a, mut b) = (a.split('/'), b.split('/'));
    loop {
        match (a.next(), b.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (None, None) => return true,
            (Some(x), Some(y)) if x == "+" || y == "+" || x == y => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_overlap_when_some_topic_could_match_both() {
        for (a, b, expected) in [
            ("B/+/O/+/VIBR", "B/P_1/O/1/VIBR", true),
            ("B/#", "B/+/O/+/VIBR", true),
            ("B/+/VIBR", "B/+/TEMP", false),
            ("a/b", "a/b/c", false),
            ("#", "anything", true),
        ] {
            assert_eq!(filters_overlap(a, b), expected, "{a} {b}");
        }
    }
}
