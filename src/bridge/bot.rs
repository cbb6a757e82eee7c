//! The bot's core: readings in, alert messages out. Everything the MQTT and XMPP tasks share
//! lives here, behind short-lived locks; no method waits on I/O (state-database writes are
//! queued to their own thread). Ingest does not depend on chat: the chat commands are in
//! [`super::chat`], as further methods of [`Bot`] that read what ingest stored.
//!
//! - [`Bot::ingest`]: an MQTT payload → the cache, the history, the alerts (and the database).
//! - [`Bot::chat`]: a contact's message → the reply, after access control and the rate limit
//!   (in [`super::chat`]).
//! - [`Bot::tick`]: every second: silent-sensor alerts and the database flush.
//! - [`Bot::presence_status`]: the status text showing the default sensor's reading.
//!
//! Alert messages go out through a bounded channel that the XMPP task drains while online; if it
//! is full (the server has been away a long time), new ones are dropped and counted in the log.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch};

use super::access::{Access, Permission, RateLimit, Refusals};
use super::alerts::{self, Alert, Alerts, Event, Key};
use super::cache::{Cache, Entry, Sample, Stored};
use super::persist::{
    self, Persister, StoredAlert, StoredAlertTopic, StoredReading, StoredRoom, Write,
};
use super::reading::{self, PayloadError};
use super::reply;
use super::room::RoomJoin;
use super::sensors::Sensors;

/// Alert messages waiting for the XMPP task.
pub const NOTICE_QUEUE: usize = 1024;

/// How long a refused contact waits for the next refusal.
pub const REFUSAL_WINDOW: Duration = Duration::from_secs(3600);

/// Behaviour settings of the bot.
#[derive(Debug, Clone)]
pub struct BotSettings {
    /// A reading older than this is stale.
    pub stale_after: Duration,
    /// Alert timings and bounds.
    pub alerts: alerts::AlertSettings,
    /// Replies per minute per contact, on average.
    pub replies_per_minute: u32,
    /// Replies per contact in a row before the rate limit applies.
    pub reply_burst: u32,
    /// Contacts (bare JIDs) allowed everything; with `allow_domains`, empty means "anyone may
    /// read, nobody may set alerts or ask for stats".
    pub allow: Vec<String>,
    /// Domains whose every account is allowed everything.
    pub allow_domains: Vec<String>,
    /// Rooms (bare JIDs, lower case) whose every occupant may read, real JID shown or not.
    pub room_allow: Vec<String>,
    /// Rooms (bare JIDs, as the bot joins them) told when a sensor goes stale and when it is
    /// back.
    pub room_announce_stale: Vec<String>,
    /// How long an ad-hoc command session waits for its next request (XEP-0050 §3.3: the
    /// responder determines the session lifetime); see `super::adhoc::sessions`.
    pub command_session_lifetime: Duration,
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
pub(super) struct Guard {
    pub(super) rate: RateLimit,
    pub(super) refusals: Refusals,
}

/// Readings not yet written to the database, and the writer.
struct Persistence {
    writer: Persister,
    pending: Mutex<Vec<StoredReading>>,
}

/// The bot. Shared by the MQTT task, the XMPP task and the housekeeping tick.
pub struct Bot {
    pub(super) sensors: Sensors,
    pub(super) cache: Cache,
    pub(super) settings: BotSettings,
    pub(super) access: Access,
    pub(super) guard: Mutex<Guard>,
    pub(super) alerts: Mutex<Alerts>,
    notices: mpsc::Sender<Notice>,
    dropped_notices: Mutex<u64>,
    default_changed: watch::Sender<u64>,
    clock: Clock,
    persistence: Option<Persistence>,
    /// Rooms joined through invitations, from the state database.
    remembered_rooms: Vec<RoomJoin>,
    /// The fingerprint of the profile last published, from the state database.
    published_profile: Option<String>,
    /// The topics announced as stale in the rooms of `room_announce_stale`.
    stale_announced: Mutex<Option<BTreeSet<String>>>,
    /// Open XEP-0050 command sessions (see `super::adhoc`).
    pub(super) adhoc: Mutex<super::adhoc::sessions::Sessions>,
    /// Charts asked for, waiting for the client loop (see `super::chart`).
    pub(crate) charts: super::chart::Asks,
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
        settings: BotSettings,
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
        let adhoc =
            super::adhoc::sessions::Sessions::with_lifetime(settings.command_session_lifetime);
        let mut alerts = Alerts::new(settings.alerts);
        let mut remembered_rooms = Vec::new();
        let mut published_profile = None;
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
                remembered_rooms = remembered(&db)?;
                published_profile = db.load_published(PROFILE)?;
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
            remembered_rooms,
            published_profile,
            stale_announced: Mutex::new(None),
            adhoc: Mutex::new(adhoc),
            charts: Default::default(),
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
        // Every answer names its topic, and XML cannot carry control characters: such a topic
        // is refused at the door rather than making an answer unsendable.
        if !reading::xml_printable(topic) {
            self.cache.count_rejected();
            return Ingest::Unreadable(reading::PayloadError::UnprintableTopic);
        }
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

    /// Once a second or so: silent-sensor alerts, stale sensors announced in rooms, and queued
    /// readings to the database.
    pub fn tick(&self, now: Instant) {
        let (events, changes) = lock(&self.alerts).on_tick(now);
        self.announce(events);
        self.announce_stale(now);
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

    pub(super) fn unit_of(&self, label: &str, filter: &str) -> &str {
        self.sensors
            .by_name(label)
            .or_else(|| self.sensors.for_topic(filter))
            .map_or("", |s| s.unit.as_str())
    }

    pub(super) fn value_text(&self, topic: &str, value: f64) -> String {
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
            self.queue(notice);
        }
    }

    /// Hands `notice` to the XMPP task, or counts it as dropped when too many are waiting.
    fn queue(&self, notice: Notice) {
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

    /// The rooms joined through invitations, remembered in the state database.
    pub fn remembered_rooms(&self) -> Vec<RoomJoin> {
        self.remembered_rooms.clone()
    }

    /// Whether there is a state database, and the fingerprint of the profile (nickname, vCard,
    /// avatar) last published according to it.
    pub fn published_profile(&self) -> (bool, Option<String>) {
        (self.persistence.is_some(), self.published_profile.clone())
    }

    /// Keeps the fingerprint of the profile just published, so a restart does not publish it
    /// again.
    pub fn remember_profile(&self, fingerprint: String) {
        if let Some(p) = &self.persistence {
            p.writer.send(Write::PutPublished {
                what: PROFILE.into(),
                fingerprint,
            });
        }
    }

    /// Whether `inviter` (a real bare JID) may invite the bot into `room`: a contact allowed
    /// everything (as for alerts), or anyone into a `--room-allow` room.
    pub fn may_invite(&self, inviter: &str, room: &str) -> bool {
        self.access.permission(inviter) == Permission::All
            || self
                .settings
                .room_allow
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(room))
    }

    /// Keeps a room the bot was invited into, to join it again after a restart.
    pub fn remember_room(&self, join: &RoomJoin, inviter: &str, now: Instant) {
        if let Some(p) = &self.persistence {
            p.writer.send(Write::PutRoom(StoredRoom {
                room: join.room.to_string(),
                nick: join.nick.clone(),
                password: join.password.clone(),
                invited_by: inviter.to_string(),
                added_unix_ms: self.clock.to_unix_ms(now),
            }));
        }
    }

    /// In the rooms of `room_announce_stale`: which sensors' topics went stale (no reading for
    /// `stale_after`) and which came back since the last look. The first look only takes
    /// note (a restart does not repeat what was said); a burst of changes is one message.
    fn announce_stale(&self, now: Instant) {
        if self.settings.room_announce_stale.is_empty() {
            return;
        }
        let mut stale = BTreeSet::new();
        let mut fresh = BTreeSet::new();
        for sensor in self.sensors.iter() {
            for (topic, entry) in self.cache.matching(&sensor.filter) {
                if now.saturating_duration_since(entry.received_at) >= self.settings.stale_after {
                    stale.insert(topic);
                } else {
                    fresh.insert(topic);
                }
            }
        }
        let mut announced = lock(&self.stale_announced);
        let Some(before) = announced.as_mut() else {
            *announced = Some(stale);
            return;
        };
        let went: Vec<&String> = stale.difference(before).collect();
        let back: Vec<&String> = before.intersection(&fresh).collect();
        let mut lines = Vec::new();
        if !went.is_empty() {
            lines.push(format!(
                "⚠ no reading for {} from: {}",
                reply::format_age(self.settings.stale_after),
                list_some(&went)
            ));
        }
        if !back.is_empty() {
            lines.push(format!("back: {}", list_some(&back)));
        }
        // Topics forgotten by the cache are neither stale nor fresh: forgotten here too.
        let changed = !lines.is_empty();
        *before = stale;
        drop(announced);
        if !changed {
            return;
        }
        let text = lines.join("\n");
        for room in &self.settings.room_announce_stale {
            self.queue(Notice {
                to: room.clone(),
                text: text.clone(),
            });
        }
    }

    /// The state-database time of `at`.
    pub(super) fn unix_ms(&self, at: Instant) -> i64 {
        self.clock.to_unix_ms(at)
    }

    /// Saves a newly set alert and every topic it tracks, including a single topic not heard
    /// from yet (watched for silence from now on).
    pub(super) fn save_alert(&self, stored: StoredAlert) {
        if let Some(p) = &self.persistence {
            let key = stored.key.clone();
            p.writer.send(Write::PutAlert(stored));
            let topics = lock(&self.alerts).topics(&key);
            for topic in &topics {
                self.save_topic(&p.writer, &key, topic);
            }
        }
    }

    /// Deletes removed alerts (all of `contact`'s, or those on `target`) from the database.
    pub(super) fn forget_alerts(&self, contact: &str, target: Option<&str>) {
        if let Some(p) = &self.persistence {
            p.writer.send(Write::DeleteAlerts {
                contact: contact.to_string(),
                target: target.map(str::to_string),
            });
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

/// Most topics named in one stale announcement.
const ANNOUNCED_TOPICS: usize = 10;

/// `a, b, c` and how many more.
fn list_some(topics: &[&String]) -> String {
    let mut text = topics
        .iter()
        .take(ANNOUNCED_TOPICS)
        .map(|t| t.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    if topics.len() > ANNOUNCED_TOPICS {
        text.push_str(&format!(" and {} more", topics.len() - ANNOUNCED_TOPICS));
    }
    text
}

/// The rooms remembered from invitations; a row that is not a room address is skipped.
/// The `published` row of the bot's profile (see `profile`).
const PROFILE: &str = "profile";

fn remembered(db: &persist::StateDb) -> Result<Vec<RoomJoin>, persist::PersistError> {
    Ok(db
        .load_rooms()?
        .into_iter()
        .filter_map(|stored| {
            let mut join = RoomJoin::parse(&stored.room, &stored.nick).ok()?;
            join.password = stored.password;
            Some(join)
        })
        .collect())
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

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the data consistent, so a panic elsewhere does not make it
    // unusable.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests;
