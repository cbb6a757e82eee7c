//! Optional on-disk state of the bot (`--state-db FILE`): the reading history, every contact's
//! and room's alerts, and the rooms it was invited into, so that `stats`, `alert` and
//! invitations survive a restart. Without the flag the bot
//! keeps everything in memory only, as before.
//!
//! ```text
//! new readings, batched ─Readings────────┐
//! alert / alert off     ─PutAlert/Delete─┼─▶ Persister (own thread) ─▶ StateDb ─▶ FILE
//! alert engine          ─PutAlertTopic───┘
//! ```
//!
//! [`StateDb`] (in `db.rs`: schema, migrations, load and save) is the blocking store;
//! [`Persister`] (in `writer.rs`: the queue, batching and error reporting) owns one on a
//! dedicated OS thread, so the async tasks hand it a [`Write`] and never wait for the disk.
//!
//! # What is kept
//!
//! | table | one row per | notes |
//! |---|---|---|
//! | `topics` | MQTT topic ever saved | its name once, and the time of its newest reading |
//! | `readings` | reading | topic id, wall-clock time in ms, value; the newest `keep_per_topic` per topic |
//! | `alerts` | contact × target × direction | filter, threshold, margin, creation time |
//! | `alert_topics` | alert × concrete topic | armed (hysteresis), last time fired, silence reported |
//! | `rooms` | room joined through an invitation | nick, password if the invitation gave one, inviter, time ([`Write::PutRoom`]) |
//! | `published` | thing the bot published about itself (`profile`) | fingerprint of what was published ([`Write::PutPublished`]) |
//!
//! A room's alerts (set by `alert …` in the room) are ordinary alerts whose contact is the
//! room's bare JID.
//!
//! Topic names are stored once in `topics` and referenced by a small integer, because they are
//! usually far longer than the 16 bytes of time and value a reading carries.
//!
//! # When it is written, and what a crash loses
//!
//! Alert changes ([`Write::PutAlert`], [`Write::DeleteAlerts`], [`Write::PutAlertTopic`]) are
//! sent as they happen and reach the disk within one transaction each. Readings arrive far more
//! often, so the caller collects them and sends a [`Write::Readings`] batch from time to time;
//! each batch is one transaction, and the writer thread also merges batches that queued up
//! behind each other. A crash or power cut therefore loses the readings received since the
//! last batch was sent, plus whatever was still queued for the writer thread; alerts are lost
//! only if they were still queued. A clean stop ([`Persister::close`]) writes everything.
//!
//! The connection runs with `journal_mode=WAL` and `synchronous=FULL`, like the bundled
//! server's store ([`crate::server::store`]): a transaction that has returned is on stable
//! storage and survives a power cut, and a half-written one is rolled back on the next open.
//! A new file is created with mode `0600` (it names the bot's contacts); SQLite gives its `-wal`
//! and `-shm` files the same mode. A busy timeout of 5 s makes a write wait for another
//! process that holds the lock (a backup tool, say) instead of failing at once. One file
//! belongs to one bot: two bots sharing it would both load, and both fire, the same alerts.
//!
//! # Schema versions
//!
//! The schema version is `PRAGMA user_version`, currently `db::SCHEMA_VERSION` (3: version 2 added the rooms joined through invitations, version 3 what the bot published about itself). `db::MIGRATIONS`
//! is an ordered list of SQL batches; batch *i* takes the schema from version *i* to *i + 1* in
//! one `IMMEDIATE` transaction that also sets `user_version`, so a migration is applied
//! completely or not at all. A file written by a newer mqtt2xmpp (a higher version) is refused
//! with [`crate::sqlite::OpenError::TooNew`] before anything is written to it. To change the schema, append
//! a batch; never edit one that has shipped.
//!
//! # Disk cost
//!
//! About 46 bytes per reading, measured with 100 000 readings (1 000 each on 100 topics named
//! like `building/floor-3/room-42/temperature`, written in batches of 1 000, after a WAL
//! checkpoint), and the same once trimming has been replacing old readings for a while: the
//! row (topic id, time, value) plus its entry in the `(topic, time)` index, with SQLite's page
//! overhead; the topic name itself is stored once. So a history of 10 000 readings for each of
//! 50 sensors takes about 23 MB. The test `disk_cost_per_reading` keeps this figure honest.

mod db;
mod writer;

#[cfg(test)]
mod tests;

pub use db::StateDb;
pub use writer::{Persister, Write};

use thiserror::Error;

/// Why a state database operation failed.
#[derive(Debug, Error)]
pub enum PersistError {
    /// The database could not be opened, created, or migrated (or is newer than this code).
    #[error("state database: {0}")]
    Open(#[from] crate::sqlite::OpenError),
    /// An alert with a threshold or margin that is NaN or infinite; SQLite would store NaN as
    /// NULL, and such an alert could never fire or re-arm anyway.
    #[error("cannot save an alert whose {what} is {value}: it must be a finite number")]
    NotFinite {
        /// `threshold` or `margin`.
        what: &'static str,
        /// The offending value.
        value: f64,
    },
    /// The writer thread could not be started (the process is out of threads or memory).
    #[error("cannot start the state database writer thread: {0}")]
    Thread(#[source] std::io::Error),
    /// Any other SQLite failure: a full disk, an I/O error, a database busy past the timeout.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// One reading of the history, with wall-clock time, so that its age is still right after a
/// restart (a monotonic clock does not survive one).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredReading {
    /// The MQTT topic it arrived on.
    pub topic: String,
    /// When the bot received it, in milliseconds since the Unix epoch.
    pub at_unix_ms: i64,
    /// The value; always finite (a non-finite one is skipped when saving).
    pub value: f64,
}

/// Identity of an alert: one contact, one target (sensor name or topic pattern), one direction.
/// A contact may have an `above` and a `below` alert on the same target at once.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AlertKey {
    /// The bare JID the alert notifies.
    pub contact: String,
    /// What the contact typed: a sensor name or a topic (pattern), the handle for `alert off`.
    pub target: String,
    /// True for "above the threshold", false for "below".
    pub above: bool,
}

/// An alert definition, as the contact set it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAlert {
    /// Who, on what, which direction.
    pub key: AlertKey,
    /// The MQTT topic filter `target` resolved to when the alert was set, so the alert keeps
    /// watching the same topics after a restart even if sensor names change.
    pub filter: String,
    /// The value that fires the alert when crossed.
    pub threshold: f64,
    /// Hysteresis: how far back across the threshold a value must go to re-arm the alert.
    pub margin: f64,
    /// When the alert was set, in milliseconds since the Unix epoch; orders the `alerts` list.
    pub created_unix_ms: i64,
}

/// Per concrete topic state of an alert (hysteresis and silence tracking), so a restart neither
/// repeats a notification nor forgets one that is due.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAlertTopic {
    /// The concrete topic (one match of the alert's filter).
    pub topic: String,
    /// Whether the alert fires on the next crossing; false after firing, until the value goes
    /// back by the margin.
    pub armed: bool,
    /// When it last fired for this topic, in milliseconds since the Unix epoch.
    pub last_fired_unix_ms: Option<i64>,
    /// Whether the contact was already told that this topic went silent.
    pub silent_notified: bool,
}

/// A room the bot joined through an invitation (the rooms of `--room` are not stored: the
/// flags name them on every start).
#[derive(Clone, PartialEq, Eq)]
pub struct StoredRoom {
    /// The room's bare JID.
    pub room: String,
    /// The nick the bot asks for.
    pub nick: String,
    /// The room's password from the invitation, if any.
    pub password: Option<String>,
    /// Who invited the bot (a bare JID on the allow list).
    pub invited_by: String,
    /// When, in milliseconds since the Unix epoch.
    pub added_unix_ms: i64,
}

impl std::fmt::Debug for StoredRoom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password stays out of logs.
        f.debug_struct("StoredRoom")
            .field("room", &self.room)
            .field("nick", &self.nick)
            .field("invited_by", &self.invited_by)
            .finish_non_exhaustive()
    }
}
