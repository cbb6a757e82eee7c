//! The bot's brain: readings in, chat replies and alert messages out. Everything the MQTT and
//! XMPP tasks share lives here, behind short-lived locks; no method waits on I/O (state-database
//! writes are queued to their own thread).
//!
//! - [`Bot::ingest`]: an MQTT payload → the cache, the history, the alerts (and the database).
//! - [`Bot::chat`]: a contact's message → the reply, after access control and the rate limit.
//! - [`Bot::tick`]: every second: silent-sensor alerts and the database flush.
//! - [`Bot::presence_status`]: the status text showing the default sensor's reading.
//!
//! Alert messages go out through a bounded channel that the XMPP task drains while online; if it
//! is full (the server has been away a long time), new ones are dropped and counted in the log.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch};

use super::access::{Access, Permission, RateLimit, Refusals, Verdict};
use super::alerts::{self, Alert, Alerts, Event, Key};
use super::cache::{Cache, Entry, Sample, Stored};
use super::commands::{self, Command};
use super::persist::{self, Persister, StoredAlert, StoredAlertTopic, StoredReading, Write};
use super::reading::{self, PayloadError};
use super::reply::{self, SensorView};
use super::sensors::{Sensor, Sensors};

/// Alert messages waiting for the XMPP task.
pub const NOTICE_QUEUE: usize = 1024;

/// How long a refused contact waits for the next refusal.
pub const REFUSAL_WINDOW: Duration = Duration::from_secs(3600);

/// Behaviour settings of the bot.
#[derive(Debug, Clone)]
pub struct Settings {
    /// A reading older than this is stale.
    pub stale_after: Duration,
    /// Alert timings and bounds.
    pub alerts: alerts::Settings,
    /// Replies per minute per contact, on average.
    pub replies_per_minute: u32,
    /// Replies per contact in a row before the rate limit applies.
    pub reply_burst: u32,
    /// Contacts (bare JIDs) allowed everything; with `allow_domains`, empty means "anyone may
    /// read, nobody may set alerts or ask for stats".
    pub allow: Vec<String>,
    /// Domains whose every account is allowed everything.
    pub allow_domains: Vec<String>,
}

/// An alert message for one contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The contact's bare JID.
    pub to: String,
    /// The message.
    pub text: String,
}

/// What became of one MQTT payload.
#[derive(Debug, PartialEq)]
pub enum Ingest {
    /// Stored (as an update or a new topic) or refused for the topic bound.
    Stored(Stored),
    /// Not a reading; the last valid one stays.
    Unreadable(PayloadError),
    /// On a topic no sensor covers (a broker may deliver overlapping subscriptions).
    Unwanted,
}

/// The monotonic clock paired with the wall clock once, to turn one into the other for the
/// state database.
#[derive(Debug, Clone, Copy)]
struct Clock {
    instant: Instant,
    unix_ms: i64,
}

impl Clock {
    fn now() -> Self {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Self {
            instant: Instant::now(),
            unix_ms,
        }
    }

    fn to_unix_ms(self, at: Instant) -> i64 {
        if at >= self.instant {
            self.unix_ms + millis(at - self.instant)
        } else {
            self.unix_ms - millis(self.instant - at)
        }
    }

    /// `None` for times before the machine's monotonic clock began.
    fn to_instant(self, unix_ms: i64) -> Option<Instant> {
        let delta = Duration::from_millis(unix_ms.abs_diff(self.unix_ms));
        if unix_ms >= self.unix_ms {
            self.instant.checked_add(delta)
        } else {
            self.instant.checked_sub(delta)
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Rate-limit and refusal state.
#[derive(Debug)]
struct Guard {
    rate: RateLimit,
    refusals: Refusals,
}

/// Readings not yet written to the database, and the writer.
struct Persistence {
    writer: Persister,
    pending: Mutex<Vec<StoredReading>>,
}

/// The bot. Shared by the MQTT task, the XMPP task and the housekeeping tick.
pub struct Bot {
    sensors: Sensors,
    cache: Cache,
    settings: Settings,
    access: Access,
    guard: Mutex<Guard>,
    alerts: Mutex<Alerts>,
    notices: mpsc::Sender<Notice>,
    dropped_notices: Mutex<u64>,
    default_changed: watch::Sender<u64>,
    clock: Clock,
    persistence: Option<Persistence>,
}

impl std::fmt::Debug for Bot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bot")
            .field("sensors", &self.sensors)
            .field("topics", &self.cache.len())
            .finish_non_exhaustive()
    }
}

/// What the XMPP task needs from a new [`Bot`].
#[derive(Debug)]
pub struct Outlets {
    /// Alert messages to send.
    pub notices: mpsc::Receiver<Notice>,
    /// Bumped whenever the default sensor gets a reading (for the presence status).
    pub default_changed: watch::Receiver<u64>,
}

impl Bot {
    /// A bot with an empty cache (and, with `db`, the history and alerts saved in it).
    pub fn new(
        sensors: Sensors,
        cache: Cache,
        settings: Settings,
        db: Option<persist::StateDb>,
    ) -> Result<(Arc<Self>, Outlets), persist::PersistError> {
        let (notices, notices_rx) = mpsc::channel(NOTICE_QUEUE);
        let (default_changed, default_rx) = watch::channel(0);
        let access = Access::new(settings.allow.clone(), settings.allow_domains.clone());
        let guard = Guard {
            rate: RateLimit::new(settings.replies_per_minute, settings.reply_burst),
            refusals: Refusals::new(REFUSAL_WINDOW),
        };
        let clock = Clock::now();
        let mut alerts = Alerts::new(settings.alerts);
        let persistence = match db {
            None => None,
            Some(mut db) => {
                let limits = cache.limits();
                // Topics beyond the bound would never be loaded: keep the file from growing
                // with them.
                let dropped = db.retain_topics(limits.max_topics)?;
                if dropped > 0 {
                    tracing::info!(
                        dropped,
                        "state database: forgot the least recently updated topics beyond --max-topics"
                    );
                }
                restore(
                    &db,
                    &cache,
                    &mut alerts,
                    clock,
                    limits.history,
                    limits.max_topics,
                )?;
                Some(Persistence {
                    writer: Persister::spawn(db, limits.history)?,
                    pending: Mutex::new(Vec::new()),
                })
            }
        };
        let bot = Self {
            sensors,
            cache,
            settings,
            access,
            guard: Mutex::new(guard),
            alerts: Mutex::new(alerts),
            notices,
            dropped_notices: Mutex::new(0),
            default_changed,
            clock,
            persistence,
        };
        Ok((
            Arc::new(bot),
            Outlets {
                notices: notices_rx,
                default_changed: default_rx,
            },
        ))
    }

    /// The sensors.
    pub fn sensors(&self) -> &Sensors {
        &self.sensors
    }

    /// The cache of readings.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Whether `contact` (a bare JID) may subscribe to the bot's presence.
    pub fn may_subscribe(&self, contact: &str) -> bool {
        self.access.permission(contact) != Permission::None
    }

    /// Handles one MQTT payload received at `now`.
    pub fn ingest(&self, topic: &str, payload: &[u8], retained: bool, now: Instant) -> Ingest {
        let Some(sensor) = self.sensors.for_topic(topic) else {
            return Ingest::Unwanted;
        };
        let reading = match reading::parse(payload, &sensor.format) {
            Ok(reading) => reading,
            Err(error) => {
                self.cache.count_rejected();
                return Ingest::Unreadable(error);
            }
        };
        let entry = Entry {
            reading,
            received_at: now,
            retained,
        };
        let stored = self.cache.store(topic, entry);
        if stored == Stored::Full {
            return Ingest::Stored(stored);
        }
        if let Some(p) = &self.persistence {
            lock(&p.pending).push(StoredReading {
                topic: topic.to_string(),
                at_unix_ms: self.clock.to_unix_ms(now),
                value: reading.value,
            });
        }
        if crate::topic::matches(topic, &self.sensors.default_sensor().filter) {
            self.default_changed.send_modify(|n| *n = n.wrapping_add(1));
        }
        let (events, changes) = lock(&self.alerts).on_reading(topic, reading.value, now);
        self.announce(events);
        self.save_changes(changes);
        Ingest::Stored(stored)
    }

    /// Once a second or so: silent-sensor alerts, and queued readings to the database.
    pub fn tick(&self, now: Instant) {
        let (events, changes) = lock(&self.alerts).on_tick(now);
        self.announce(events);
        self.save_changes(changes);
        self.flush();
    }

    /// Writes the queued readings to the database and waits until everything is on disk: for
    /// shutdown.
    pub fn close(self: Arc<Self>) {
        self.flush();
        if let Ok(bot) = Arc::try_unwrap(self) {
            if let Some(p) = bot.persistence {
                p.writer.close();
            }
        }
    }

    fn flush(&self) {
        if let Some(p) = &self.persistence {
            let batch = std::mem::take(&mut *lock(&p.pending));
            if !batch.is_empty() {
                p.writer.send(Write::Readings(batch));
            }
        }
    }

    /// The reply to `body` from `contact` (a bare JID) at `now`, or `None` for silence (a
    /// refused contact already told, or one over the rate limit).
    pub fn chat(&self, contact: &str, body: &str, now: Instant) -> Option<String> {
        let permission = self.access.permission(contact);
        {
            let mut guard = lock(&self.guard);
            if permission == Permission::None {
                return guard.refusals.admit(contact, now).then(|| {
                    tracing::info!(contact, "refused a contact not on the allow list");
                    "Sorry, I only answer the contacts my operator allowed. \
                     Ask them to add you with --allow."
                        .to_string()
                });
            }
            match guard.rate.admit(contact, now) {
                Verdict::Reply => {}
                Verdict::Warn => {
                    tracing::info!(contact, "contact over the reply rate limit");
                    return Some(format!(
                        "You are sending messages faster than I answer ({} a minute). I will \
                         ignore your messages for a little while.",
                        self.settings.replies_per_minute
                    ));
                }
                Verdict::Drop => return None,
            }
        }
        let everything = permission == Permission::All;
        Some(match commands::parse(body) {
            Command::Help => self.help(),
            Command::List => self.list(now),
            Command::Get(target) => self.get(&target, now),
            Command::Stale => self.stale(now),
            Command::Invalid(text) => text,
            Command::Alerts => self.alerts_of(contact),
            Command::AlertOff(target) => self.alert_off(contact, target.as_deref()),
            Command::Stats { .. } | Command::AlertSet { .. } if !everything => {
                "Alerts and stats are only for the contacts on my allow list; my operator can \
                 add you with --allow. You can still ask for readings: send help."
                    .to_string()
            }
            Command::Stats { target, window } => self.stats(&target, window, now),
            Command::AlertSet {
                target,
                above,
                threshold,
                margin,
            } => self.alert_set(contact, &target, above, threshold, margin, now),
            Command::Text(text) => match self.sensors.by_name(&text) {
                Some(sensor) => self.sensor_reply(sensor, now),
                None => self.sensor_reply(self.sensors.default_sensor(), now),
            },
        })
    }

    /// The presence status: the default sensor's value (without an age, which would be wrong
    /// a minute later) and a hint.
    pub fn presence_status(&self) -> String {
        let sensor = self.sensors.default_sensor();
        let value = self
            .cache
            .newest_matching(&sensor.filter)
            .map(|(_, e)| reply::format_value(e.reading.value, sensor.precision, &sensor.unit));
        match value {
            Some(value) => format!("{}: {value} · send \"help\" for commands", sensor.name),
            None => format!(
                "{}: no reading yet · send \"help\" for commands",
                sensor.name
            ),
        }
    }

    fn view(&self, sensor: &Sensor, topic: &str) -> SensorView {
        SensorView {
            topic: topic.to_string(),
            unit: sensor.unit.clone(),
            precision: sensor.precision,
            stale_after: self.settings.stale_after,
        }
    }

    /// One sensor's reading: for a single topic as always; for a pattern, every topic under it.
    fn sensor_reply(&self, sensor: &Sensor, now: Instant) -> String {
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

    fn line(&self, topic: &str, entry: &Entry, now: Instant) -> String {
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

    fn help(&self) -> String {
        let default = &self.sensors.default_sensor().name;
        let names: Vec<&str> = self.sensors.iter().map(|s| s.name.as_str()).collect();
        format!(
            "Any other message gets the latest {default} reading. Commands (Spanish in brackets):\n\
             help [ayuda]: this list\n\
             list [lista]: every sensor, value and age\n\
             get <sensor or topic pattern> [ver]: e.g. get {default}, get building/+/temp, get building/#\n\
             stats <sensor> [window] [estadisticas]: min, max, average and a sparkline, e.g. stats {default} 30m\n\
             alert <sensor> above|below <value> [margin <m>] [alerta … encima|debajo]: tell me when it crosses\n\
             alerts [alertas]: your alerts\n\
             alert off [<sensor>] [alerta quitar]: remove your alerts\n\
             stale [inactivos]: sensors with no reading for over {}\n\
             Sensors: {}",
            reply::format_age(self.settings.stale_after),
            names.join(", ")
        )
    }

    fn list(&self, now: Instant) -> String {
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
    fn resolve<'a>(&'a self, target: &'a str) -> Result<(&'a str, &'a str), String> {
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

    fn get(&self, target: &str, now: Instant) -> String {
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

    fn stale(&self, now: Instant) -> String {
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

    fn stats(&self, target: &str, window: Duration, now: Instant) -> String {
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

    fn alert_set(
        &self,
        contact: &str,
        target: &str,
        above: bool,
        threshold: f64,
        margin: Option<f64>,
        now: Instant,
    ) -> String {
        let (label, filter) = match self.resolve(target) {
            Ok(found) => found,
            Err(text) => return text,
        };
        if !self
            .sensors
            .iter()
            .any(|s| filters_overlap(&s.filter, filter))
        {
            return format!(
                "I do not follow {filter}, so that alert could never fire. Send list to see my sensors."
            );
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
            created_unix_ms: self.clock.to_unix_ms(now),
        };
        let key = alert.key.clone();
        let past = {
            let mut alerts = lock(&self.alerts);
            match alerts.set(alert, &current, now) {
                Ok(past) => past,
                Err(error) => return format!("Not set: {error}."),
            }
        };
        if let Some(p) = &self.persistence {
            p.writer.send(Write::PutAlert(stored));
            // Every topic it tracks, including a single topic not heard from yet (watched for
            // silence from now on).
            let topics = lock(&self.alerts).topics(&key);
            for topic in &topics {
                self.save_topic(&p.writer, &key, topic);
            }
        }
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
        text
    }

    fn alert_off(&self, contact: &str, target: Option<&str>) -> String {
        let removed = lock(&self.alerts).remove(contact, target);
        if removed > 0 {
            if let Some(p) = &self.persistence {
                p.writer.send(Write::DeleteAlerts {
                    contact: contact.to_string(),
                    target: target.map(str::to_string),
                });
            }
        }
        match (removed, target) {
            (0, Some(t)) => format!("You have no alert on {t}. Send alerts to see yours."),
            (0, None) => "You have no alerts.".to_string(),
            (1, _) => "Removed 1 alert.".to_string(),
            (n, _) => format!("Removed {n} alerts."),
        }
    }

    fn alerts_of(&self, contact: &str) -> String {
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

    fn unit_of(&self, label: &str, filter: &str) -> &str {
        self.sensors
            .by_name(label)
            .or_else(|| self.sensors.for_topic(filter))
            .map_or("", |s| s.unit.as_str())
    }

    fn value_text(&self, topic: &str, value: f64) -> String {
        let (unit, precision) = self
            .sensors
            .for_topic(topic)
            .map_or(("", None), |s| (s.unit.as_str(), s.precision));
        reply::format_value(value, precision, unit)
    }

    /// Turns alert events into messages for the XMPP task.
    fn announce(&self, events: Vec<Event>) {
        for event in events {
            let notice = match event {
                Event::Fired {
                    key,
                    topic,
                    value,
                    threshold,
                } => {
                    let direction = if key.above { "above" } else { "below" };
                    let unit = self.unit_of(&key.target, &topic);
                    let on = if key.target == topic {
                        String::new()
                    } else {
                        format!(" on {topic}")
                    };
                    Notice {
                        text: format!(
                            "⚠ {} {direction} {}: {}{on}",
                            key.target,
                            reply::format_value(threshold, None, unit),
                            self.value_text(&topic, value)
                        ),
                        to: key.contact,
                    }
                }
                Event::Silent {
                    key,
                    topic,
                    silent_for,
                } => Notice {
                    text: format!(
                        "⚠ {topic} has sent nothing for {} (your alert on {})",
                        reply::format_age(silent_for),
                        key.target
                    ),
                    to: key.contact,
                },
                Event::Back { key, topic, value } => Notice {
                    text: format!(
                        "{topic} is back: {} (your alert on {})",
                        self.value_text(&topic, value),
                        key.target
                    ),
                    to: key.contact,
                },
            };
            tracing::info!(to = notice.to, text = notice.text, "alert");
            if self.notices.try_send(notice).is_err() {
                let mut dropped = lock(&self.dropped_notices);
                *dropped += 1;
                if dropped.is_power_of_two() {
                    tracing::warn!(
                        dropped = *dropped,
                        "alert messages dropped: {NOTICE_QUEUE} are waiting for the XMPP server"
                    );
                }
            }
        }
    }

    fn save_changes(&self, changes: alerts::Changes) {
        if let Some(p) = &self.persistence {
            for (key, topic) in changes {
                self.save_topic(&p.writer, &key, &topic);
            }
        }
    }

    fn save_topic(&self, writer: &Persister, key: &Key, topic: &str) {
        let state = lock(&self.alerts).state(key, topic).map(|(_, s)| s);
        if let Some(state) = state {
            writer.send(Write::PutAlertTopic {
                key: key.clone(),
                state: StoredAlertTopic {
                    topic: topic.to_string(),
                    armed: state.armed,
                    last_fired_unix_ms: state.last_fired.map(|t| self.clock.to_unix_ms(t)),
                    silent_notified: state.silent_notified,
                },
            });
        }
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

/// Loads the saved history and alerts into the cache and the alert engine.
fn restore(
    db: &persist::StateDb,
    cache: &Cache,
    alerts: &mut Alerts,
    clock: Clock,
    history: usize,
    max_topics: usize,
) -> Result<(), persist::PersistError> {
    let readings = db.load_readings(history, max_topics)?;
    let mut by_topic: Vec<(String, Vec<Sample>)> = Vec::new();
    for r in readings {
        let Some(at) = clock.to_instant(r.at_unix_ms) else {
            continue;
        };
        let sample = Sample { at, value: r.value };
        match by_topic.last_mut() {
            Some((topic, samples)) if *topic == r.topic => samples.push(sample),
            _ => by_topic.push((r.topic, vec![sample])),
        }
    }
    let topics = by_topic.len();
    for (topic, samples) in &by_topic {
        cache.restore(topic, samples);
    }
    let saved = db.load_alerts()?;
    let count = saved.len();
    for (alert, states) in saved {
        let mut topics = HashMap::new();
        for s in states {
            let last_reading = cache
                .get(&s.topic)
                .map_or(clock.instant, |e: Entry| e.received_at);
            topics.insert(
                s.topic,
                alerts::TopicState {
                    armed: s.armed,
                    last_fired: s.last_fired_unix_ms.and_then(|ms| clock.to_instant(ms)),
                    last_reading,
                    silent_notified: s.silent_notified,
                },
            );
        }
        alerts.restore(
            Alert {
                key: alert.key,
                filter: alert.filter,
                threshold: alert.threshold,
                margin: alert.margin,
            },
            topics,
        );
    }
    tracing::info!(
        path = %db.path().display(),
        topics,
        alerts = count,
        "restored history and alerts from the state database"
    );
    Ok(())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the data consistent, so a panic elsewhere does not make it
    // unusable.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bridge::cache::Limits;
    use crate::bridge::reading::PayloadFormat;

    const ALICE: &str = "alice@localhost";
    const BOB: &str = "bob@localhost";

    fn sensor(name: &str, filter: &str, json: bool, unit: &str) -> Sensor {
        Sensor {
            name: name.into(),
            filter: filter.into(),
            format: PayloadFormat {
                json_pointer: json.then(|| "/value".to_string()),
            },
            unit: unit.into(),
            precision: None,
        }
    }

    fn settings(allow: &[&str]) -> Settings {
        Settings {
            stale_after: Duration::from_secs(600),
            alerts: alerts::Settings {
                min_interval: Duration::from_secs(60),
                stale_after: Duration::from_secs(600),
                per_contact: 20,
                total: 100,
            },
            replies_per_minute: 60,
            reply_burst: 1000,
            allow: allow.iter().map(|s| s.to_string()).collect(),
            allow_domains: Vec::new(),
        }
    }

    fn building_bot(allow: &[&str], limits: Limits) -> (Arc<Bot>, Outlets) {
        let sensors = Sensors::new(vec![
            sensor("temp", "sensors/temperature", false, "°C"),
            sensor("vib", "B/+/+/+/VIBR", true, "mm/s"),
            sensor("b", "B/#", true, ""),
        ])
        .unwrap();
        Bot::new(sensors, Cache::new(limits), settings(allow), None).unwrap()
    }

    /// Publishes a small building: 2 floors × 4 wings × 2 rooms of VIBR and TEMP readings.
    fn fill(bot: &Bot, t0: Instant) {
        for floor in 1..=2 {
            for wing in ["N", "S", "E", "O"] {
                for room in 1..=2 {
                    for (kind, value) in [("VIBR", 0.5), ("TEMP", 21.0)] {
                        let topic = format!("B/P_{floor}/{wing}/{room}/{kind}");
                        let payload = format!("{{\"value\": {value}, \"unit\": \"x\"}}");
                        bot.ingest(&topic, payload.as_bytes(), false, t0);
                    }
                }
            }
        }
        bot.ingest("sensors/temperature", b"21.5", false, t0);
    }

    fn notices(outlets: &mut Outlets) -> Vec<Notice> {
        let mut out = Vec::new();
        while let Ok(notice) = outlets.notices.try_recv() {
            out.push(notice);
        }
        out
    }

    #[test]
    fn any_other_message_gets_the_default_reading_and_a_name_gets_its_sensor() {
        let (bot, _) = building_bot(&[], Limits::default());
        let t0 = Instant::now();
        fill(&bot, t0);
        let later = t0 + Duration::from_secs(3);
        assert_eq!(
            bot.chat(ALICE, "what's the temperature?", later).unwrap(),
            "21.5 °C (sensors/temperature, 3 s ago)"
        );
        let vib = bot.chat(ALICE, "VIB", later).unwrap();
        assert!(vib.starts_with("vib (B/+/+/+/VIBR): 16 topics\n"), "{vib}");
    }

    #[test]
    fn a_pattern_gets_every_matching_topic_and_nothing_else() {
        let (bot, _) = building_bot(&[], Limits::default());
        let t0 = Instant::now();
        fill(&bot, t0);
        let reply = bot.chat(ALICE, "get B/+/O/+/VIBR", t0).unwrap();
        let lines: Vec<&str> = reply.lines().collect();
        assert_eq!(
            lines,
            [
                "B/+/O/+/VIBR: 4 topics",
                "B/P_1/O/1/VIBR: 0.5 mm/s (0 s ago)",
                "B/P_1/O/2/VIBR: 0.5 mm/s (0 s ago)",
                "B/P_2/O/1/VIBR: 0.5 mm/s (0 s ago)",
                "B/P_2/O/2/VIBR: 0.5 mm/s (0 s ago)",
            ]
        );
        assert_eq!(bot.chat(ALICE, "ver B/+/O/+/VIBR", t0).unwrap(), reply);
        let none = bot.chat(ALICE, "get B/+/W/#", t0).unwrap();
        assert!(none.starts_with("Nothing matches B/+/W/#"), "{none}");
        let bad = bot.chat(ALICE, "get B/#/x", t0).unwrap();
        assert!(
            bad.contains("neither a sensor nor a topic pattern"),
            "{bad}"
        );
        let unknown = bot.chat(ALICE, "get other/topic", t0).unwrap();
        assert!(
            unknown.starts_with("I do not follow other/topic"),
            "{unknown}"
        );
        let single = bot.chat(ALICE, "get B/P_1/N/1/TEMP", t0).unwrap();
        assert_eq!(single, "21 (B/P_1/N/1/TEMP, 0 s ago)");
    }

    #[test]
    fn list_shows_every_sensor_and_topic() {
        let (bot, _) = building_bot(&[], Limits::default());
        let t0 = Instant::now();
        fill(&bot, t0);
        let reply = bot.chat(ALICE, "LISTA", t0).unwrap();
        let mut lines = reply.lines();
        assert_eq!(lines.next(), Some("3 sensors, 33 topics with readings:"));
        assert_eq!(
            lines.next(),
            Some("temp: 21.5 °C (sensors/temperature, 0 s ago)")
        );
        assert_eq!(lines.next(), Some("vib (B/+/+/+/VIBR): 16 topics"));
        // 16 vibration lines, then the whole building (32 topics) under b.
        assert_eq!(reply.lines().filter(|l| l.starts_with("  B/")).count(), 48);
        assert!(reply.contains("\nb (B/#): 32 topics\n"), "{reply}");
    }

    #[test]
    fn stale_lists_silent_topics_and_sensors_never_heard_from() {
        let (bot, _) = building_bot(&[], Limits::default());
        let t0 = Instant::now();
        bot.ingest("B/P_1/N/1/VIBR", br#"{"value": 1}"#, false, t0);
        let later = t0 + Duration::from_secs(700);
        bot.ingest("B/P_1/N/2/VIBR", br#"{"value": 2}"#, false, later);
        let reply = bot.chat(ALICE, "stale", later).unwrap();
        let lines: Vec<&str> = reply.lines().collect();
        assert_eq!(
            lines,
            [
                "2 of 3 topics have sent nothing for over 10 min:",
                "sensors/temperature: no reading since the bot started",
                "B/P_1/N/1/VIBR: 1 mm/s (11 min ago; stale)",
            ]
        );
        bot.ingest("sensors/temperature", b"20", false, later);
        bot.ingest("B/P_1/N/1/VIBR", br#"{"value": 1}"#, false, later);
        let reply = bot.chat(ALICE, "inactivos", later).unwrap();
        assert_eq!(
            reply,
            "Nothing is stale: all 3 topics have sent a reading within 10 min."
        );
    }

    #[test]
    fn stats_summarise_the_history_and_say_when_it_falls_short() {
        let (bot, _) = building_bot(
            &[ALICE],
            Limits {
                max_topics: 100,
                history: 5,
            },
        );
        let t0 = Instant::now();
        for i in 0..4u32 {
            let at = t0 + Duration::from_secs(60) * i;
            bot.ingest(
                "sensors/temperature",
                format!("{}", 20 + i).as_bytes(),
                false,
                at,
            );
        }
        let now = t0 + Duration::from_secs(200);
        let reply = bot.chat(ALICE, "stats temp 10m", now).unwrap();
        let first = reply.lines().next().unwrap();
        assert_eq!(
            first,
            "temp (sensors/temperature), last 10 min: min 20 °C, max 23 °C, avg 21.50 °C, 4 readings"
        );
        assert_eq!(reply.lines().nth(1).unwrap().chars().count(), 24);
        assert!(!reply.contains("does not reach back"));
        for i in 4..10u32 {
            let at = t0 + Duration::from_secs(60) * i;
            bot.ingest(
                "sensors/temperature",
                format!("{}", 20 + i).as_bytes(),
                false,
                at,
            );
        }
        let now = t0 + Duration::from_secs(600);
        let reply = bot.chat(ALICE, "stats temp 1h", now).unwrap();
        assert!(
            reply.contains("min 25 °C, max 29 °C"),
            "only the last 5: {reply}"
        );
        assert!(reply.contains("keeps 5 readings per topic"), "{reply}");
        let nothing = bot.chat(ALICE, "stats B/+/N/+/TEMP", now).unwrap();
        assert_eq!(
            nothing,
            "No readings of B/+/N/+/TEMP (0 topics) in the last 1 h."
        );
    }

    #[test]
    fn an_alert_fires_once_per_crossing_through_ingest() {
        let (bot, mut outlets) = building_bot(&[ALICE], Limits::default());
        let t0 = Instant::now();
        fill(&bot, t0);
        let reply = bot.chat(ALICE, "alert B/+/O/+/VIBR above 4", t0).unwrap();
        assert!(
            reply.starts_with("Alert set: I will tell you when B/+/O/+/VIBR goes above 4 mm/s"),
            "{reply}"
        );
        let step = Duration::from_secs(120);
        let topic = "B/P_2/O/1/VIBR";
        for (i, value) in [5.0, 6.0, 3.0, 4.5, 7.0].iter().enumerate() {
            let payload = format!("{{\"value\": {value}}}");
            bot.ingest(topic, payload.as_bytes(), false, t0 + step * (i as u32 + 1));
        }
        let got = notices(&mut outlets);
        let texts: Vec<&str> = got.iter().map(|n| n.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "⚠ B/+/O/+/VIBR above 4 mm/s: 5 mm/s on B/P_2/O/1/VIBR",
                "⚠ B/+/O/+/VIBR above 4 mm/s: 4.5 mm/s on B/P_2/O/1/VIBR",
            ]
        );
        assert!(got.iter().all(|n| n.to == ALICE));
        // Another wing is not covered.
        bot.ingest("B/P_2/N/1/VIBR", br#"{"value": 9}"#, false, t0 + step * 9);
        assert!(notices(&mut outlets).is_empty());
        let list = bot.chat(ALICE, "alertas", t0).unwrap();
        assert!(list.starts_with("Your alerts (1):\nB/+/O/+/VIBR above 4 mm/s (margin 0.08 mm/s): 4 topics, 1 past it"), "{list}");
        assert_eq!(
            bot.chat(ALICE, "alert off", t0).unwrap(),
            "Removed 1 alert."
        );
        bot.ingest(topic, br#"{"value": 1}"#, false, t0 + step * 10);
        bot.ingest(topic, br#"{"value": 9}"#, false, t0 + step * 11);
        assert!(
            notices(&mut outlets).is_empty(),
            "removed alerts are silent"
        );
    }

    #[test]
    fn a_silent_sensor_is_reported_once_and_its_return_too() {
        let (bot, mut outlets) = building_bot(&[ALICE], Limits::default());
        let t0 = Instant::now();
        bot.ingest("sensors/temperature", b"21", false, t0);
        bot.chat(ALICE, "alert temp above 30", t0).unwrap();
        bot.tick(t0 + Duration::from_secs(599));
        assert!(notices(&mut outlets).is_empty());
        bot.tick(t0 + Duration::from_secs(601));
        bot.tick(t0 + Duration::from_secs(700));
        let got = notices(&mut outlets);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(
            got[0].text,
            "⚠ sensors/temperature has sent nothing for 10 min (your alert on temp)"
        );
        bot.ingest(
            "sensors/temperature",
            b"22",
            false,
            t0 + Duration::from_secs(800),
        );
        let got = notices(&mut outlets);
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].text,
            "sensors/temperature is back: 22 °C (your alert on temp)"
        );
    }

    #[test]
    fn strangers_get_one_refusal_then_silence() {
        let (bot, _) = building_bot(&[ALICE], Limits::default());
        let t0 = Instant::now();
        let first = bot.chat(BOB, "temp?", t0).unwrap();
        assert!(first.contains("--allow"), "{first}");
        assert_eq!(bot.chat(BOB, "temp?", t0 + Duration::from_secs(1)), None);
        assert_eq!(bot.chat(BOB, "help", t0 + Duration::from_secs(60)), None);
        assert!(bot.chat(BOB, "x", t0 + REFUSAL_WINDOW).is_some());
        assert!(bot.chat(ALICE, "temp?", t0).is_some());
        assert!(!bot.may_subscribe(BOB));
        assert!(bot.may_subscribe(ALICE));
    }

    #[test]
    fn an_open_bot_answers_anyone_but_keeps_alerts_and_stats_for_allowed_contacts() {
        let (bot, _) = building_bot(&[], Limits::default());
        let t0 = Instant::now();
        fill(&bot, t0);
        assert!(bot
            .chat(BOB, "get temp", t0)
            .unwrap()
            .starts_with("21.5 °C"));
        for command in ["alert temp above 30", "stats temp"] {
            let reply = bot.chat(BOB, command, t0).unwrap();
            assert!(
                reply.starts_with("Alerts and stats are only for the contacts on my allow list"),
                "{reply}"
            );
        }
        assert!(bot.may_subscribe(BOB));
    }

    #[test]
    fn a_flood_gets_a_burst_of_replies_one_warning_then_silence() {
        let sensors = Sensors::new(vec![sensor("temp", "t", false, "")]).unwrap();
        let mut settings = settings(&[]);
        settings.replies_per_minute = 6;
        settings.reply_burst = 3;
        let (bot, _) = Bot::new(sensors, Cache::default(), settings, None).unwrap();
        let t0 = Instant::now();
        let replies: Vec<Option<String>> = (0..10).map(|_| bot.chat(ALICE, "t?", t0)).collect();
        assert!(replies[..3]
            .iter()
            .all(|r| r.as_deref().is_some_and(|r| r.starts_with("No reading"))));
        assert!(replies[3]
            .as_deref()
            .unwrap()
            .contains("faster than I answer (6 a minute)"));
        assert!(replies[4..].iter().all(Option::is_none));
        // Ten seconds give one reply back (6 a minute).
        assert!(bot
            .chat(ALICE, "t?", t0 + Duration::from_secs(10))
            .is_some());
        assert!(
            bot.chat(BOB, "t?", t0).is_some(),
            "other contacts are not affected"
        );
    }

    #[test]
    fn new_topics_beyond_the_bound_are_refused_and_presence_follows_the_default() {
        let (bot, outlets) = building_bot(
            &[],
            Limits {
                max_topics: 2,
                history: 10,
            },
        );
        let t0 = Instant::now();
        assert_eq!(
            bot.presence_status(),
            "temp: no reading yet · send \"help\" for commands"
        );
        let version = *outlets.default_changed.borrow();
        assert_eq!(
            bot.ingest("sensors/temperature", b"21.5", false, t0),
            Ingest::Stored(Stored::New)
        );
        assert_ne!(*outlets.default_changed.borrow(), version);
        assert_eq!(
            bot.presence_status(),
            "temp: 21.5 °C · send \"help\" for commands"
        );
        assert_eq!(
            bot.ingest("B/1/1/1/VIBR", br#"{"value": 1}"#, false, t0),
            Ingest::Stored(Stored::New)
        );
        assert_eq!(
            bot.ingest("B/1/1/2/VIBR", br#"{"value": 1}"#, false, t0),
            Ingest::Stored(Stored::Full)
        );
        assert!(matches!(
            bot.ingest("B/1/1/1/VIBR", b"garbage", false, t0),
            Ingest::Unreadable(_)
        ));
        assert_eq!(bot.ingest("elsewhere", b"1", false, t0), Ingest::Unwanted);
        assert_eq!(bot.cache().len(), 2);
    }

    #[test]
    fn history_and_alerts_survive_a_restart_with_the_state_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite");
        let open = || persist::StateDb::open(&path).unwrap();
        let sensors = || Sensors::new(vec![sensor("temp", "t", false, "°C")]).unwrap();
        let t0 = Instant::now();
        {
            let (bot, mut outlets) = Bot::new(
                sensors(),
                Cache::default(),
                settings(&[ALICE]),
                Some(open()),
            )
            .unwrap();
            bot.chat(ALICE, "alert temp above 25", t0).unwrap();
            for (i, v) in [20.0, 26.0, 27.0].iter().enumerate() {
                bot.ingest(
                    "t",
                    format!("{v}").as_bytes(),
                    false,
                    t0 + Duration::from_secs(i as u64),
                );
            }
            assert_eq!(notices(&mut outlets).len(), 1);
            bot.close();
        }
        let (bot, mut outlets) = Bot::new(
            sensors(),
            Cache::default(),
            settings(&[ALICE]),
            Some(open()),
        )
        .unwrap();
        let now = Instant::now() + Duration::from_secs(120);
        let stats = bot.chat(ALICE, "stats temp", now).unwrap();
        assert!(stats.contains("min 20 °C, max 27 °C"), "{stats}");
        assert!(stats.contains(", 3 readings"), "{stats}");
        assert!(bot
            .chat(ALICE, "alerts", now)
            .unwrap()
            .contains("temp above 25 °C"));
        // Still past the threshold: it fired before the restart and must not fire again...
        bot.ingest("t", b"28", false, now);
        assert!(notices(&mut outlets).is_empty());
        // ...until it comes back and crosses again.
        bot.ingest("t", b"20", false, now + Duration::from_secs(60));
        bot.ingest("t", b"26", false, now + Duration::from_secs(120));
        assert_eq!(notices(&mut outlets).len(), 1);
        bot.close();
    }

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
