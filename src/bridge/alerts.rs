//! Per-contact alerts: "tell me when temp goes above 25". Pure: the caller passes readings and the
//! time, and turns the [`Event`]s it gets back into chat messages.
//!
//! Rules, for an alert `above T` with margin `M` (mirror them for `below`):
//!
//! - **Hysteresis.** Each concrete topic the alert covers is *armed* or not. A reading above `T`
//!   while armed fires the alert once and disarms it; it re-arms only when a reading is at or
//!   below `T − M`. A value wobbling around `T` therefore fires once, not at every reading. The
//!   default margin is 2 % of `|T|`.
//! - **Minimum interval.** The same alert fires at most once per `min_interval` for one topic. A
//!   crossing inside the interval keeps the alert armed, so it fires at the first reading past
//!   `T` after the interval: the user hears about it late rather than never.
//! - **Already past the threshold when set.** That is not a crossing: the topic starts disarmed
//!   (the reply to the command says so) and fires after it has come back and crossed again.
//!   A topic that first appears later under a pattern starts armed.
//! - **Silence.** A covered topic with no reading for `stale_after` gives one [`Event::Silent`];
//!   its next reading gives one [`Event::Back`].
//!
//! An alert is identified by contact, target (what the user typed: a sensor name or a topic
//! pattern) and direction, so `alert temp above 25` replaces an earlier `alert temp above 30`
//! but not `alert temp below 15`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Relative hysteresis margin used when the user gives none.
pub const DEFAULT_MARGIN_RATIO: f64 = 0.02;

/// Identity of an alert: contact, target and direction (shared with the state database).
pub use super::persist::AlertKey as Key;

/// One alert as the user set it.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Who gets it, on what, in which direction.
    pub key: Key,
    /// The MQTT filter the target stands for.
    pub filter: String,
    /// The value to cross.
    pub threshold: f64,
    /// How far back past the threshold a reading must go to re-arm.
    pub margin: f64,
}

impl Alert {
    /// The margin used when the user gives none: 2 % of the threshold's size.
    pub fn default_margin(threshold: f64) -> f64 {
        threshold.abs() * DEFAULT_MARGIN_RATIO
    }

    /// Whether `value` is past the threshold.
    pub fn crossed(&self, value: f64) -> bool {
        if self.key.above {
            value > self.threshold
        } else {
            value < self.threshold
        }
    }

    /// Whether `value` is back far enough to re-arm.
    pub fn rearms(&self, value: f64) -> bool {
        if self.key.above {
            value <= self.threshold - self.margin
        } else {
            value >= self.threshold + self.margin
        }
    }
}

/// Where one alert stands for one concrete topic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TopicState {
    /// The next crossing fires.
    pub armed: bool,
    /// When it last fired.
    pub last_fired: Option<Instant>,
    /// The latest reading (or, before any, when tracking began): the start of a silence.
    pub last_reading: Instant,
    /// A silence was reported and no reading has come since.
    pub silent_notified: bool,
}

/// Something to tell a contact.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A reading crossed the threshold.
    Fired {
        /// Which alert.
        key: Key,
        /// The topic that crossed.
        topic: String,
        /// The reading.
        value: f64,
        /// The threshold crossed.
        threshold: f64,
    },
    /// A covered topic has had no reading for `stale_after`.
    Silent {
        /// Which alert.
        key: Key,
        /// The silent topic.
        topic: String,
        /// How long it has been silent.
        silent_for: Duration,
    },
    /// A topic reported silent has a reading again.
    Back {
        /// Which alert.
        key: Key,
        /// The topic.
        topic: String,
        /// Its new reading.
        value: f64,
    },
}

/// Bounds and timings of the alert engine.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AlertSettings {
    /// Least time between two firings of one alert for one topic.
    pub min_interval: Duration,
    /// A covered topic silent this long gives an [`Event::Silent`].
    pub stale_after: Duration,
    /// Most alerts one contact may have.
    pub per_contact: usize,
    /// Most alerts in all.
    pub total: usize,
}

/// Why an alert could not be set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetError {
    /// The contact has [`AlertSettings::per_contact`] alerts.
    #[error(
        "you have {0} alerts already, the most allowed: remove one with \"alert off <sensor>\""
    )]
    PerContact(usize),
    /// The bot has [`AlertSettings::total`] alerts.
    #[error("the bot holds {0} alerts already, the most it keeps")]
    Total(usize),
}

/// The state changes a caller may want to save: (alert, topic) pairs whose [`TopicState`]
/// changed.
pub type Changes = Vec<(Key, String)>;

/// Every alert with its per-topic state.
#[derive(Debug)]
pub struct Alerts {
    settings: AlertSettings,
    alerts: Vec<(Alert, HashMap<String, TopicState>)>,
}

impl Alerts {
    /// No alerts yet.
    pub fn new(settings: AlertSettings) -> Self {
        Self {
            settings,
            alerts: Vec::new(),
        }
    }

    /// Sets (or replaces) an alert. `current` are the cached topics its filter covers, with
    /// their latest value and its time. Returns the topics already past the threshold, which
    /// start disarmed.
    pub fn set(
        &mut self,
        alert: Alert,
        current: &[(String, f64, Instant)],
        now: Instant,
    ) -> Result<Vec<(String, f64)>, SetError> {
        let existing = self.alerts.iter().position(|(a, _)| a.key == alert.key);
        if existing.is_none() {
            let mine = self.of(&alert.key.contact).len();
            if mine >= self.settings.per_contact {
                return Err(SetError::PerContact(mine));
            }
            if self.alerts.len() >= self.settings.total {
                return Err(SetError::Total(self.alerts.len()));
            }
        }
        let mut past = Vec::new();
        let mut topics = HashMap::new();
        for (topic, value, at) in current {
            let crossed = alert.crossed(*value);
            if crossed {
                past.push((topic.clone(), *value));
            }
            topics.insert(
                topic.clone(),
                TopicState {
                    armed: !crossed,
                    last_fired: None,
                    last_reading: *at,
                    silent_notified: false,
                },
            );
        }
        // A single topic with no reading yet is watched for silence from now on.
        if topics.is_empty() && !crate::topic::is_pattern(&alert.filter) {
            topics.insert(alert.filter.clone(), fresh(now));
        }
        match existing {
            Some(i) => self.alerts[i] = (alert, topics),
            None => self.alerts.push((alert, topics)),
        }
        Ok(past)
    }

    /// Puts back an alert saved before a restart, with its topic states.
    pub fn restore(&mut self, alert: Alert, topics: HashMap<String, TopicState>) {
        self.alerts.retain(|(a, _)| a.key != alert.key);
        self.alerts.push((alert, topics));
    }

    /// Removes `contact`'s alerts on `target` (both directions), or all of them; returns how
    /// many went. Targets compare case-insensitively, as the user may retype them differently.
    pub fn remove(&mut self, contact: &str, target: Option<&str>) -> usize {
        let before = self.alerts.len();
        self.alerts.retain(|(a, _)| {
            a.key.contact != contact
                || target.is_some_and(|t| !a.key.target.eq_ignore_ascii_case(t))
        });
        before - self.alerts.len()
    }

    /// `contact`'s alerts with their topic states, in the order they were set.
    pub fn of(&self, contact: &str) -> Vec<(&Alert, &HashMap<String, TopicState>)> {
        self.alerts
            .iter()
            .filter(|(a, _)| a.key.contact == contact)
            .map(|(a, t)| (a, t))
            .collect()
    }

    /// One alert's state for one topic.
    pub fn state(&self, key: &Key, topic: &str) -> Option<(&Alert, TopicState)> {
        self.alerts
            .iter()
            .find(|(a, _)| a.key == *key)
            .and_then(|(a, t)| t.get(topic).map(|s| (a, *s)))
    }

    /// The concrete topics one alert tracks.
    pub fn topics(&self, key: &Key) -> Vec<String> {
        self.alerts
            .iter()
            .find(|(a, _)| a.key == *key)
            .map(|(_, t)| t.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Number of alerts.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.alerts.len()
    }

    /// A valid reading arrived on `topic`.
    pub fn on_reading(&mut self, topic: &str, value: f64, now: Instant) -> (Vec<Event>, Changes) {
        let mut events = Vec::new();
        let mut changes = Vec::new();
        let min_interval = self.settings.min_interval;
        for (alert, topics) in &mut self.alerts {
            if !crate::topic::matches(topic, &alert.filter) {
                continue;
            }
            let state = topics
                .entry(topic.to_string())
                .or_insert_with(|| fresh(now));
            let before = *state;
            state.last_reading = now;
            if state.silent_notified {
                state.silent_notified = false;
                events.push(Event::Back {
                    key: alert.key.clone(),
                    topic: topic.to_string(),
                    value,
                });
            }
            if state.armed && alert.crossed(value) {
                let rested = state
                    .last_fired
                    .is_none_or(|at| now.saturating_duration_since(at) >= min_interval);
                if rested {
                    state.armed = false;
                    state.last_fired = Some(now);
                    events.push(Event::Fired {
                        key: alert.key.clone(),
                        topic: topic.to_string(),
                        value,
                        threshold: alert.threshold,
                    });
                }
            } else if !state.armed && alert.rearms(value) {
                state.armed = true;
            }
            if (state.armed, state.last_fired, state.silent_notified)
                != (before.armed, before.last_fired, before.silent_notified)
            {
                changes.push((alert.key.clone(), topic.to_string()));
            }
        }
        (events, changes)
    }

    /// Looks for silent topics; call it every few seconds.
    pub fn on_tick(&mut self, now: Instant) -> (Vec<Event>, Changes) {
        let mut events = Vec::new();
        let mut changes = Vec::new();
        for (alert, topics) in &mut self.alerts {
            for (topic, state) in topics.iter_mut() {
                let silent_for = now.saturating_duration_since(state.last_reading);
                if !state.silent_notified && silent_for > self.settings.stale_after {
                    state.silent_notified = true;
                    events.push(Event::Silent {
                        key: alert.key.clone(),
                        topic: topic.clone(),
                        silent_for,
                    });
                    changes.push((alert.key.clone(), topic.clone()));
                }
            }
        }
        (events, changes)
    }
}

fn fresh(now: Instant) -> TopicState {
    TopicState {
        armed: true,
        last_fired: None,
        last_reading: now,
        silent_notified: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn settings() -> AlertSettings {
        AlertSettings {
            min_interval: MIN,
            stale_after: Duration::from_secs(600),
            per_contact: 3,
            total: 5,
        }
    }

    fn alert(contact: &str, target: &str, above: bool, threshold: f64, margin: f64) -> Alert {
        Alert {
            key: Key {
                contact: contact.into(),
                target: target.into(),
                above,
            },
            filter: target.into(),
            threshold,
            margin,
        }
    }

    /// Feeds `values` one per `step` from `t0` and returns the values that fired.
    fn fired(
        alerts: &mut Alerts,
        topic: &str,
        values: &[f64],
        t0: Instant,
        step: Duration,
    ) -> Vec<f64> {
        let mut out = Vec::new();
        for (i, v) in values.iter().enumerate() {
            let (events, _) = alerts.on_reading(topic, *v, t0 + step * i as u32);
            for e in events {
                if let Event::Fired { value, .. } = e {
                    out.push(value);
                }
            }
        }
        out
    }

    #[test]
    fn fires_once_per_crossing_and_rearms_past_the_margin() {
        let mut alerts = Alerts::new(settings());
        let t0 = Instant::now();
        alerts
            .set(alert("a@x", "t", true, 25.0, 1.0), &[], t0)
            .unwrap();
        // Wobbling around 25 fires once; 24.5 is inside the margin and does not re-arm; 23.9
        // does, and the next crossing fires again.
        let values = [24.0, 25.5, 24.9, 25.2, 24.5, 26.0, 23.9, 24.8, 25.1, 30.0];
        let out = fired(&mut alerts, "t", &values, t0, Duration::from_secs(120));
        assert_eq!(out, [25.5, 25.1]);
    }

    #[test]
    fn below_alerts_mirror_above_ones() {
        let mut alerts = Alerts::new(settings());
        let t0 = Instant::now();
        alerts
            .set(alert("a@x", "t", false, 10.0, 0.5), &[], t0)
            .unwrap();
        let values = [12.0, 9.0, 10.2, 9.5, 10.5, 9.9];
        let out = fired(&mut alerts, "t", &values, t0, Duration::from_secs(120));
        assert_eq!(out, [9.0, 9.9]);
        // Exactly at the threshold is not past it.
        assert!(!alert("a", "t", false, 10.0, 0.0).crossed(10.0));
        assert!(!alert("a", "t", true, 10.0, 0.0).crossed(10.0));
    }

    #[test]
    fn a_crossing_inside_the_minimum_interval_fires_when_it_is_over() {
        let mut alerts = Alerts::new(settings());
        let t0 = Instant::now();
        alerts
            .set(alert("a@x", "t", true, 25.0, 0.0), &[], t0)
            .unwrap();
        let step = Duration::from_secs(10);
        // Fires at 26 (t=0); re-arms at 20 (t=10); 27 at t=20 is inside the minute: held;
        // 27.5 at t=60 fires.
        let values = [26.0, 20.0, 27.0, 27.0, 27.0, 27.0, 27.5];
        let out = fired(&mut alerts, "t", &values, t0, step);
        assert_eq!(out, [26.0, 27.5]);
    }

    #[test]
    fn already_past_when_set_is_reported_not_fired() {
        let mut alerts = Alerts::new(settings());
        let t0 = Instant::now();
        let current = [("t".to_string(), 30.0, t0), ("u".to_string(), 20.0, t0)];
        let mut a = alert("a@x", "+", true, 25.0, 1.0);
        a.filter = "+".into();
        let past = alerts.set(a, &current, t0).unwrap();
        assert_eq!(past, [("t".to_string(), 30.0)]);
        let step = Duration::from_secs(120);
        assert_eq!(
            fired(&mut alerts, "t", &[31.0, 23.0, 26.0], t0, step),
            [26.0]
        );
        assert_eq!(fired(&mut alerts, "u", &[26.0], t0, step), [26.0]);
        // A topic first seen under the pattern starts armed.
        assert_eq!(fired(&mut alerts, "v", &[40.0], t0, step), [40.0]);
    }

    #[test]
    fn each_topic_under_a_pattern_has_its_own_hysteresis() {
        let mut alerts = Alerts::new(settings());
        let t0 = Instant::now();
        let mut a = alert("a@x", "B/+/VIBR", true, 4.0, 0.5);
        a.filter = "B/+/VIBR".into();
        alerts.set(a, &[], t0).unwrap();
        let (events, _) = alerts.on_reading("B/1/VIBR", 5.0, t0);
        assert_eq!(events.len(), 1);
        let (events, _) = alerts.on_reading("B/2/VIBR", 5.0, t0);
        assert_eq!(events.len(), 1, "another topic fires on its own");
        let (events, _) = alerts.on_reading("B/1/VIBR", 6.0, t0 + MIN * 2);
        assert!(events.is_empty(), "still disarmed");
        let (events, _) = alerts.on_reading("B/1/TEMP", 50.0, t0);
        assert!(events.is_empty(), "not covered");
    }

    #[test]
    fn silence_is_reported_once_and_the_return_too() {
        let mut alerts = Alerts::new(settings());
        let t0 = Instant::now();
        alerts
            .set(
                alert("a@x", "t", true, 25.0, 1.0),
                &[("t".into(), 20.0, t0)],
                t0,
            )
            .unwrap();
        assert!(alerts.on_tick(t0 + Duration::from_secs(600)).0.is_empty());
        let (events, changes) = alerts.on_tick(t0 + Duration::from_secs(601));
        assert!(
            matches!(&events[..], [Event::Silent { topic, silent_for, .. }]
            if topic == "t" && *silent_for == Duration::from_secs(601))
        );
        assert_eq!(changes.len(), 1);
        assert!(
            alerts.on_tick(t0 + Duration::from_secs(900)).0.is_empty(),
            "once"
        );
        let (events, _) = alerts.on_reading("t", 21.0, t0 + Duration::from_secs(901));
        assert!(matches!(&events[..], [Event::Back { value, .. }] if *value == 21.0));
        // A concrete topic with no reading at all is watched from when the alert was set.
        alerts
            .set(alert("a@x", "never", true, 1.0, 0.0), &[], t0)
            .unwrap();
        let (events, _) = alerts.on_tick(t0 + Duration::from_secs(601));
        assert!(matches!(&events[..], [Event::Silent { topic, .. }] if topic == "never"));
    }

    #[test]
    fn alerts_are_per_contact_replaced_by_key_and_bounded() {
        let mut alerts = Alerts::new(settings());
        let t0 = Instant::now();
        alerts
            .set(alert("a@x", "t", true, 25.0, 1.0), &[], t0)
            .unwrap();
        alerts
            .set(alert("a@x", "t", true, 30.0, 1.0), &[], t0)
            .unwrap();
        alerts
            .set(alert("a@x", "t", false, 10.0, 1.0), &[], t0)
            .unwrap();
        alerts
            .set(alert("b@x", "t", true, 20.0, 1.0), &[], t0)
            .unwrap();
        assert_eq!(alerts.len(), 3);
        let mine: Vec<f64> = alerts.of("a@x").iter().map(|(a, _)| a.threshold).collect();
        assert_eq!(mine, [30.0, 10.0]);
        // Only b's alert fires at 22.
        let (events, _) = alerts.on_reading("t", 22.0, t0);
        assert!(matches!(&events[..], [Event::Fired { key, .. }] if key.contact == "b@x"));
        alerts
            .set(alert("a@x", "u", true, 1.0, 0.0), &[], t0)
            .unwrap();
        assert_eq!(
            alerts.set(alert("a@x", "v", true, 1.0, 0.0), &[], t0),
            Err(SetError::PerContact(3))
        );
        alerts
            .set(alert("c@x", "v", true, 1.0, 0.0), &[], t0)
            .unwrap();
        assert_eq!(
            alerts.set(alert("d@x", "v", true, 1.0, 0.0), &[], t0),
            Err(SetError::Total(5))
        );
        assert_eq!(alerts.remove("a@x", Some("T")), 2);
        assert_eq!(alerts.remove("a@x", None), 1);
        assert_eq!(alerts.remove("a@x", None), 0);
        assert_eq!(alerts.len(), 2);
    }

    #[test]
    fn default_margin_is_two_percent() {
        assert_eq!(Alert::default_margin(25.0), 0.5);
        assert_eq!(Alert::default_margin(-50.0), 1.0);
    }
}
