//! Optional on-disk state of the bot (`--state-db FILE`): the reading history and every
//! contact's alerts, so that `stats` and `alert` survive a restart. Without the flag the bot
//! keeps everything in memory only, as before.
//!
//! ```text
//! new readings, batched ─Readings────────┐
//! alert / alert off     ─PutAlert/Delete─┼─▶ Persister (own thread) ─▶ StateDb ─▶ FILE
//! alert engine          ─PutAlertTopic───┘
//! ```
//!
//! [`StateDb`] is the blocking store; [`Persister`] owns one on a dedicated OS thread, so the
//! async tasks hand it a [`Write`] and never wait for the disk.
//!
//! # What is kept
//!
//! | table | one row per | notes |
//! |---|---|---|
//! | `topics` | MQTT topic ever saved | its name once, and the time of its newest reading |
//! | `readings` | reading | topic id, wall-clock time in ms, value; the newest `keep_per_topic` per topic |
//! | `alerts` | contact × target × direction | filter, threshold, margin, creation time |
//! | `alert_topics` | alert × concrete topic | armed (hysteresis), last time fired, silence reported |
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
//! The schema version is `PRAGMA user_version`, currently [`SCHEMA_VERSION`] (1). [`MIGRATIONS`]
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

use crate::log_limit::LogLimit;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use thiserror::Error;

/// Schema migrations, in order: entry *i* upgrades a database at `user_version` *i* to *i + 1*.
///
/// Append only; a batch that has shipped must never change.
pub const MIGRATIONS: &[&str] = &[
    // 0 → 1: the initial schema.
    "CREATE TABLE topics (
        id      INTEGER PRIMARY KEY,
        topic   TEXT NOT NULL UNIQUE,
        last_ms INTEGER NOT NULL
    );
    CREATE TABLE readings (
        topic_id INTEGER NOT NULL REFERENCES topics(id) ON DELETE CASCADE,
        at_ms    INTEGER NOT NULL,
        value    REAL NOT NULL
    );
    CREATE INDEX readings_by_topic ON readings (topic_id, at_ms);
    CREATE TABLE alerts (
        contact    TEXT NOT NULL,
        target     TEXT NOT NULL,
        above      INTEGER NOT NULL CHECK (above IN (0, 1)),
        filter     TEXT NOT NULL,
        threshold  REAL NOT NULL,
        margin     REAL NOT NULL,
        created_ms INTEGER NOT NULL,
        PRIMARY KEY (contact, target, above)
    );
    CREATE TABLE alert_topics (
        contact         TEXT NOT NULL,
        target          TEXT NOT NULL,
        above           INTEGER NOT NULL,
        topic           TEXT NOT NULL,
        armed           INTEGER NOT NULL CHECK (armed IN (0, 1)),
        last_fired_ms   INTEGER,
        silent_notified INTEGER NOT NULL CHECK (silent_notified IN (0, 1)),
        PRIMARY KEY (contact, target, above, topic),
        FOREIGN KEY (contact, target, above)
            REFERENCES alerts (contact, target, above) ON DELETE CASCADE
    );",
];

/// The schema version this code writes and understands: the number of [`MIGRATIONS`].
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// How long a write waits for another connection (another process) to release the lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// At most one error line per this interval from the writer thread, so a full disk does not
/// flood the log with one line per batch.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// The writer thread merges queued reading batches into one transaction up to this many
/// readings, so a long backlog is still written in transactions of bounded size.
const MAX_MERGED_READINGS: usize = 50_000;

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
    Thread(std::io::Error),
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

/// The bot's state database: one SQLite connection. See the module documentation.
///
/// Its methods are plain blocking calls; async code goes through [`Persister`].
pub struct StateDb {
    conn: Connection,
    path: PathBuf,
}

impl fmt::Debug for StateDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateDb")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl StateDb {
    /// Opens (creating and migrating if needed) the state database at `path`.
    ///
    /// The parent directory must exist. A new file is created with mode `0600` on Unix.
    pub fn open(path: &Path) -> Result<Self, PersistError> {
        let (conn, path) = crate::sqlite::open(Some(path), BUSY_TIMEOUT, MIGRATIONS)?;
        Ok(Self { conn, path })
    }

    /// A private in-memory database, for tests.
    pub fn open_in_memory() -> Result<Self, PersistError> {
        let (conn, path) = crate::sqlite::open(None, BUSY_TIMEOUT, MIGRATIONS)?;
        Ok(Self { conn, path })
    }

    /// The database file (`:memory:` for an in-memory database), for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends in one transaction, then trims every touched topic to its newest
    /// `keep_per_topic` readings (by time), so the file stays bounded however long the bot
    /// runs. Non-finite values are skipped: [`Reading`](super::reading::Reading) never holds
    /// one, and SQLite would turn NaN into NULL.
    pub fn append_readings(
        &mut self,
        batch: &[StoredReading],
        keep_per_topic: usize,
    ) -> Result<(), PersistError> {
        // Newest time per topic in this batch; a BTreeMap so ids are assigned in a stable order.
        let mut newest: BTreeMap<&str, i64> = BTreeMap::new();
        for reading in batch.iter().filter(|r| r.value.is_finite()) {
            newest
                .entry(&reading.topic)
                .and_modify(|at| *at = (*at).max(reading.at_unix_ms))
                .or_insert(reading.at_unix_ms);
        }
        if newest.is_empty() {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut ids: BTreeMap<&str, i64> = BTreeMap::new();
        {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO topics (topic, last_ms) VALUES (?1, ?2)
                 ON CONFLICT (topic) DO UPDATE SET last_ms = max(last_ms, excluded.last_ms)
                 RETURNING id",
            )?;
            for (topic, at) in &newest {
                let id: i64 = upsert.query_row(params![topic, at], |row| row.get(0))?;
                ids.insert(topic, id);
            }
            let mut insert = tx.prepare_cached(
                "INSERT INTO readings (topic_id, at_ms, value) VALUES (?1, ?2, ?3)",
            )?;
            for reading in batch.iter().filter(|r| r.value.is_finite()) {
                if let Some(id) = ids.get(reading.topic.as_str()) {
                    insert.execute(params![id, reading.at_unix_ms, reading.value])?;
                }
            }
            // The oldest reading to keep's successor: everything at or before it goes.
            let mut first_dropped = tx.prepare_cached(
                "SELECT at_ms, rowid FROM readings WHERE topic_id = ?1
                 ORDER BY at_ms DESC, rowid DESC LIMIT 1 OFFSET ?2",
            )?;
            let mut trim = tx.prepare_cached(
                "DELETE FROM readings
                 WHERE topic_id = ?1 AND (at_ms < ?2 OR (at_ms = ?2 AND rowid <= ?3))",
            )?;
            let mut forget_topic = tx.prepare_cached("DELETE FROM topics WHERE id = ?1")?;
            for id in ids.values() {
                if keep_per_topic == 0 {
                    forget_topic.execute([id])?; // and its readings, by cascade
                    continue;
                }
                let cut: Option<(i64, i64)> = first_dropped
                    .query_row(params![id, to_sql_count(keep_per_topic)], |row| {
                        Ok((row.get(0)?, row.get(1)?))
                    })
                    .optional()?;
                if let Some((at, rowid)) = cut {
                    trim.execute(params![id, at, rowid])?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// At most `keep_per_topic` newest readings per topic and at most `max_topics` topics (the
    /// most recently updated ones, so topics that went away make room for live ones), ordered
    /// by topic, then time ascending.
    pub fn load_readings(
        &self,
        keep_per_topic: usize,
        max_topics: usize,
    ) -> Result<Vec<StoredReading>, PersistError> {
        let mut topics: Vec<(i64, String)> = self
            .conn
            .prepare(
                "SELECT id, topic FROM topics t
                 WHERE EXISTS (SELECT 1 FROM readings WHERE topic_id = t.id)
                 ORDER BY last_ms DESC, id DESC LIMIT ?1",
            )?
            .query_map([to_sql_count(max_topics)], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })?
            .collect::<Result<_, _>>()?;
        topics.sort_by(|a, b| a.1.cmp(&b.1));
        let mut newest = self.conn.prepare(
            "SELECT at_ms, value FROM (
                 SELECT rowid AS id, at_ms, value FROM readings WHERE topic_id = ?1
                 ORDER BY at_ms DESC, rowid DESC LIMIT ?2
             ) ORDER BY at_ms, id",
        )?;
        let mut readings = Vec::new();
        for (id, topic) in &topics {
            let rows = newest.query_map(params![id, to_sql_count(keep_per_topic)], |row| {
                Ok(StoredReading {
                    topic: topic.clone(),
                    at_unix_ms: row.get(0)?,
                    value: row.get(1)?,
                })
            })?;
            for reading in rows {
                readings.push(reading?);
            }
        }
        Ok(readings)
    }

    /// Deletes every topic (with its readings) except the `max_topics` most recently updated
    /// ones; returns how many topics were deleted. [`StateDb::append_readings`] bounds each
    /// topic, this bounds their number: call it at start-up, after
    /// [`StateDb::load_readings`] with the same `max_topics`, so that a broker with ever-new
    /// topic names (a device id in the topic, say) cannot grow the file without end.
    pub fn retain_topics(&mut self, max_topics: usize) -> Result<usize, PersistError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "DELETE FROM readings WHERE topic_id NOT IN
                 (SELECT id FROM topics ORDER BY last_ms DESC, id DESC LIMIT ?1)",
            [to_sql_count(max_topics)],
        )?;
        let deleted = tx.execute(
            "DELETE FROM topics WHERE id NOT IN
                 (SELECT id FROM topics ORDER BY last_ms DESC, id DESC LIMIT ?1)",
            [to_sql_count(max_topics)],
        )?;
        tx.commit()?;
        Ok(deleted)
    }

    /// Inserts or replaces the alert with this key, and forgets that key's topic states: a
    /// redefined alert starts armed everywhere, as a new one would.
    pub fn put_alert(&mut self, alert: &StoredAlert) -> Result<(), PersistError> {
        for (what, value) in [("threshold", alert.threshold), ("margin", alert.margin)] {
            if !value.is_finite() {
                return Err(PersistError::NotFinite { what, value });
            }
        }
        let key = &alert.key;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Explicit rather than by cascade, so it holds even if the row is updated in place.
        tx.execute(
            "DELETE FROM alert_topics WHERE contact = ?1 AND target = ?2 AND above = ?3",
            params![key.contact, key.target, key.above],
        )?;
        tx.execute(
            "INSERT INTO alerts (contact, target, above, filter, threshold, margin, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (contact, target, above) DO UPDATE SET
                 filter = excluded.filter,
                 threshold = excluded.threshold,
                 margin = excluded.margin,
                 created_ms = excluded.created_ms",
            params![
                key.contact,
                key.target,
                key.above,
                alert.filter,
                alert.threshold,
                alert.margin,
                alert.created_unix_ms,
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Deletes `contact`'s alerts on `target` (both directions), or all of `contact`'s alerts
    /// when `target` is `None`; returns how many were deleted. Their topic states go too.
    pub fn delete_alerts(
        &mut self,
        contact: &str,
        target: Option<&str>,
    ) -> Result<usize, PersistError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        // `?2 IS NULL` selects every target; topic states are deleted explicitly too, so the
        // result is the same even for a connection without `foreign_keys=ON`.
        tx.execute(
            "DELETE FROM alert_topics WHERE contact = ?1 AND (?2 IS NULL OR target = ?2)",
            params![contact, target],
        )?;
        let deleted = tx.execute(
            "DELETE FROM alerts WHERE contact = ?1 AND (?2 IS NULL OR target = ?2)",
            params![contact, target],
        )?;
        tx.commit()?;
        Ok(deleted)
    }

    /// Inserts or replaces one topic state of an existing alert. Ignored if the alert no longer
    /// exists: a state update may race with `alert off` in the writer queue, and must not
    /// bring a deleted alert's state back.
    pub fn put_alert_topic(
        &mut self,
        key: &AlertKey,
        state: &StoredAlertTopic,
    ) -> Result<(), PersistError> {
        self.conn.execute(
            "INSERT INTO alert_topics
                 (contact, target, above, topic, armed, last_fired_ms, silent_notified)
             SELECT contact, target, above, ?4, ?5, ?6, ?7 FROM alerts
             WHERE contact = ?1 AND target = ?2 AND above = ?3
             ON CONFLICT (contact, target, above, topic) DO UPDATE SET
                 armed = excluded.armed,
                 last_fired_ms = excluded.last_fired_ms,
                 silent_notified = excluded.silent_notified",
            params![
                key.contact,
                key.target,
                key.above,
                state.topic,
                state.armed,
                state.last_fired_unix_ms,
                state.silent_notified,
            ],
        )?;
        Ok(())
    }

    /// Every alert with its topic states (ordered by topic), in creation order.
    pub fn load_alerts(&self) -> Result<Vec<(StoredAlert, Vec<StoredAlertTopic>)>, PersistError> {
        let alerts: Vec<StoredAlert> = self
            .conn
            .prepare(
                "SELECT contact, target, above, filter, threshold, margin, created_ms FROM alerts
                 ORDER BY created_ms, rowid",
            )?
            .query_map([], |row| {
                Ok(StoredAlert {
                    key: AlertKey {
                        contact: row.get(0)?,
                        target: row.get(1)?,
                        above: row.get(2)?,
                    },
                    filter: row.get(3)?,
                    threshold: row.get(4)?,
                    margin: row.get(5)?,
                    created_unix_ms: row.get(6)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        let mut states = self.conn.prepare(
            "SELECT topic, armed, last_fired_ms, silent_notified FROM alert_topics
             WHERE contact = ?1 AND target = ?2 AND above = ?3 ORDER BY topic",
        )?;
        let mut loaded = Vec::with_capacity(alerts.len());
        for alert in alerts {
            let key = &alert.key;
            let topics = states
                .query_map(params![key.contact, key.target, key.above], |row| {
                    Ok(StoredAlertTopic {
                        topic: row.get(0)?,
                        armed: row.get(1)?,
                        last_fired_unix_ms: row.get(2)?,
                        silent_notified: row.get(3)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            loaded.push((alert, topics));
        }
        Ok(loaded)
    }

    /// Closes the connection, reporting what a plain drop would swallow (a failed final
    /// checkpoint, say).
    fn close(self) -> Result<(), PersistError> {
        self.conn.close().map_err(|(_, error)| error)?;
        Ok(())
    }

    /// Applies one write.
    fn apply(&mut self, write: &Write, keep_per_topic: usize) -> Result<(), PersistError> {
        match write {
            Write::Readings(batch) => self.append_readings(batch, keep_per_topic),
            Write::PutAlert(alert) => self.put_alert(alert),
            Write::DeleteAlerts { contact, target } => {
                self.delete_alerts(contact, target.as_deref()).map(|_| ())
            }
            Write::PutAlertTopic { key, state } => self.put_alert_topic(key, state),
        }
    }
}

/// One write for the writer thread; each mirrors a [`StateDb`] method.
#[derive(Debug, Clone)]
pub enum Write {
    /// [`StateDb::append_readings`]: a batch the caller collected since its last one.
    Readings(Vec<StoredReading>),
    /// [`StateDb::put_alert`]: a contact set (or redefined) an alert.
    PutAlert(StoredAlert),
    /// [`StateDb::delete_alerts`]: a contact removed alerts.
    DeleteAlerts {
        /// Whose alerts.
        contact: String,
        /// On which target; `None` for all of them.
        target: Option<String>,
    },
    /// [`StateDb::put_alert_topic`]: an alert fired, re-armed, or noticed a silent topic.
    PutAlertTopic {
        /// Which alert.
        key: AlertKey,
        /// Its new state on one topic.
        state: StoredAlertTopic,
    },
}

impl Write {
    /// The error line for this write failing with `error`: what was lost, and what that means.
    fn failure(&self, path: &Path, error: &dyn fmt::Display) -> String {
        let path = path.display();
        let direction = |above: bool| if above { "above" } else { "below" };
        match self {
            Write::Readings(batch) => {
                format!("could not save {} readings to {path}: {error}", batch.len())
            }
            Write::PutAlert(alert) => format!(
                "could not save the alert of {} on {} ({} {}) to {path}: {error}; \
                 it will be gone after a restart",
                alert.key.contact,
                alert.key.target,
                direction(alert.key.above),
                alert.threshold
            ),
            Write::DeleteAlerts { contact, target } => format!(
                "could not delete the alerts of {contact}{} from {path}: {error}; \
                 they will be back after a restart",
                target
                    .as_ref()
                    .map_or(String::new(), |target| format!(" on {target}"))
            ),
            Write::PutAlertTopic { key, state } => format!(
                "could not save the state on {} of the alert of {} on {} ({}) to {path}: {error}",
                state.topic,
                key.contact,
                key.target,
                direction(key.above)
            ),
        }
    }
}

/// Owns the [`StateDb`] on a dedicated OS thread: SQLite calls block (each commit waits for an
/// `fsync`), and the async tasks must never stall on disk. Writes are applied in the order
/// sent.
///
/// The queue is an unbounded `std::sync::mpsc` channel, so [`Persister::send`] never blocks
/// and never drops a write: a bounded queue would have to drop something when full, and a lost
/// `PutAlert` or `DeleteAlerts` would bring back the wrong alerts after a restart. Memory is
/// still bounded in practice because readings come in batches the caller sizes (one message
/// per batch interval), and alert changes follow chat commands; if the disk stalls, the queue
/// grows by what the bot receives meanwhile, the same data it holds in memory anyway.
///
/// A failed write is logged with `tracing::error!` (saying what was lost) and the thread goes
/// on with the next one; at most one such line per minute, carrying the number of failures not
/// reported since, and a last count when the thread stops.
///
/// Dropping a `Persister` without [`Persister::close`] lets the thread finish the queue in the
/// background, which may be cut short if the program exits; call `close` to be sure.
#[derive(Debug)]
pub struct Persister {
    queue: mpsc::Sender<Write>,
    thread: JoinHandle<()>,
    path: PathBuf,
    gone_reported: AtomicBool,
}

impl Persister {
    /// Starts the writer thread. `keep_per_topic` is passed to every
    /// [`StateDb::append_readings`].
    pub fn spawn(db: StateDb, keep_per_topic: usize) -> Result<Self, PersistError> {
        let (queue, inbox) = mpsc::channel();
        let path = db.path().to_path_buf();
        let thread = std::thread::Builder::new()
            .name("state-db".into())
            .spawn(move || write_all(db, &inbox, keep_per_topic))
            .map_err(PersistError::Thread)?;
        Ok(Self {
            queue,
            thread,
            path,
            gone_reported: AtomicBool::new(false),
        })
    }

    /// Queues `write`. Never blocks; see [`Persister`] for why the queue is unbounded.
    pub fn send(&self, write: Write) {
        // Only if the thread died, which takes a panic: say so once, not for every write.
        if let Err(mpsc::SendError(write)) = self.queue.send(write) {
            if !self.gone_reported.swap(true, Ordering::Relaxed) {
                let stopped = "the writer thread has stopped; nothing more will be saved";
                tracing::error!("{}", write.failure(&self.path, &stopped));
            }
        }
    }

    /// Applies everything queued, then closes the database; returns when done. It blocks, so
    /// call it from `spawn_blocking` or at the end of the program.
    pub fn close(self) {
        let Persister {
            queue,
            thread,
            path,
            ..
        } = self;
        drop(queue);
        if thread.join().is_err() {
            tracing::error!(
                "internal error: the state database writer thread panicked; recent writes to {} \
                 may be lost",
                path.display()
            );
        }
    }
}

/// The writer thread: applies writes in order until every sender is gone, merging reading
/// batches that queued up back to back into one transaction.
fn write_all(db: StateDb, inbox: &mpsc::Receiver<Write>, keep_per_topic: usize) {
    let mut writer = Writer {
        db,
        keep_per_topic,
        failures: FailureLog::new(ERROR_LOG_INTERVAL),
    };
    let mut readings: Vec<StoredReading> = Vec::new();
    while let Ok(first) = inbox.recv() {
        let mut next = Some(first);
        while let Some(write) = next {
            match write {
                Write::Readings(batch) => {
                    readings.extend(batch);
                    if readings.len() >= MAX_MERGED_READINGS {
                        writer.apply(Write::Readings(std::mem::take(&mut readings)));
                    }
                }
                other => {
                    if !readings.is_empty() {
                        writer.apply(Write::Readings(std::mem::take(&mut readings)));
                    }
                    writer.apply(other);
                }
            }
            next = inbox.try_recv().ok();
        }
        if !readings.is_empty() {
            writer.apply(Write::Readings(std::mem::take(&mut readings)));
        }
    }
    writer.finish();
}

/// The writer thread's state.
struct Writer {
    db: StateDb,
    keep_per_topic: usize,
    failures: FailureLog,
}

impl Writer {
    /// Applies `write`; a failure is logged (rate-limited) and otherwise ignored, so one bad
    /// write does not stop the ones after it.
    fn apply(&mut self, write: Write) {
        if let Err(error) = self.db.apply(&write, self.keep_per_topic) {
            let path = self.db.path();
            self.failures
                .report(Instant::now(), || write.failure(path, &error));
        }
    }

    /// Reports the failures not logged yet and closes the database.
    fn finish(mut self) {
        let path = self.db.path().to_path_buf();
        let unreported = self.failures.take_unreported();
        if unreported > 0 {
            tracing::error!(
                "{unreported} more writes to {} failed since the last report",
                path.display()
            );
        }
        if let Err(error) = self.db.close() {
            tracing::error!("could not close {}: {error}", path.display());
        }
    }
}

/// Rate limit for the writer's error lines: the first failure is logged at once, later ones at
/// most once per `interval`, each line counting the failures it stands for.
#[derive(Debug)]
struct FailureLog(LogLimit);

impl FailureLog {
    fn new(interval: Duration) -> Self {
        Self(LogLimit::new(interval))
    }

    /// Counts a failure at `now`; returns `Some(n)` if it is to be logged now, `n` being the
    /// failures not logged since the previous line.
    fn failure(&mut self, now: Instant) -> Option<u64> {
        self.0.admit(now)
    }

    /// Logs `message` for a failure at `now` if the rate limit allows.
    fn report(&mut self, now: Instant, message: impl FnOnce() -> String) {
        match self.failure(now) {
            Some(0) => tracing::error!("{}", message()),
            Some(unreported) => tracing::error!(
                "{} (and {unreported} other failed writes since the last report)",
                message()
            ),
            None => {}
        }
    }

    /// The failures not logged yet, resetting the count.
    fn take_unreported(&mut self) -> u64 {
        self.0.take_suppressed()
    }
}

/// A count for a SQL `LIMIT` or `OFFSET`; larger than SQLite can count means "all".
fn to_sql_count(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::OpenError;

    fn reading(topic: &str, at_unix_ms: i64, value: f64) -> StoredReading {
        StoredReading {
            topic: topic.to_owned(),
            at_unix_ms,
            value,
        }
    }

    fn key(contact: &str, target: &str, above: bool) -> AlertKey {
        AlertKey {
            contact: contact.to_owned(),
            target: target.to_owned(),
            above,
        }
    }

    fn alert(contact: &str, target: &str, above: bool, threshold: f64, at: i64) -> StoredAlert {
        StoredAlert {
            key: key(contact, target, above),
            filter: format!("sensors/{target}"),
            threshold,
            margin: 0.5,
            created_unix_ms: at,
        }
    }

    fn state(topic: &str, armed: bool, fired: Option<i64>) -> StoredAlertTopic {
        StoredAlertTopic {
            topic: topic.to_owned(),
            armed,
            last_fired_unix_ms: fired,
            silent_notified: !armed,
        }
    }

    fn db_path(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("state.sqlite")
    }

    fn count(db: &StateDb, table: &str) -> i64 {
        db.conn
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
                row.get(0)
            })
            .unwrap()
    }

    /// The alerts as `(contact, target, above, threshold)`, in load order.
    fn alert_summary(db: &StateDb) -> Vec<(String, String, bool, f64)> {
        db.load_alerts()
            .unwrap()
            .into_iter()
            .map(|(a, _)| (a.key.contact, a.key.target, a.key.above, a.threshold))
            .collect()
    }

    #[test]
    fn handles_can_move_between_threads() {
        fn assert_send<T: Send>() {}
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send::<StateDb>();
        assert_send_sync::<Persister>();
    }

    #[test]
    fn readings_survive_close_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = db_path(&dir);
        {
            let mut db = StateDb::open(&path).unwrap();
            db.append_readings(
                &[
                    reading("sensors/temp", 1_000, 21.5),
                    reading("sensors/hum", 1_500, 40.25),
                    reading("sensors/temp", 2_000, 21.75),
                ],
                100,
            )
            .unwrap();
            db.append_readings(
                &[
                    reading("sensors/temp", 3_000, -3.125),
                    reading("sensors/hum", 2_500, 41.0),
                ],
                100,
            )
            .unwrap();
        }
        let db = StateDb::open(&path).unwrap();
        assert_eq!(
            db.load_readings(100, 100).unwrap(),
            [
                reading("sensors/hum", 1_500, 40.25),
                reading("sensors/hum", 2_500, 41.0),
                reading("sensors/temp", 1_000, 21.5),
                reading("sensors/temp", 2_000, 21.75),
                reading("sensors/temp", 3_000, -3.125),
            ]
        );
    }

    #[test]
    fn each_topic_is_trimmed_to_its_newest_readings() {
        let mut db = StateDb::open_in_memory().unwrap();
        // Out of time order within the batch: the newest by time are kept, not the last sent.
        db.append_readings(
            &[
                reading("a", 50, 5.0),
                reading("a", 10, 1.0),
                reading("a", 40, 4.0),
                reading("b", 7, 7.0),
                reading("a", 20, 2.0),
                reading("a", 30, 3.0),
            ],
            3,
        )
        .unwrap();
        assert_eq!(
            db.load_readings(100, 100).unwrap(),
            [
                reading("a", 30, 3.0),
                reading("a", 40, 4.0),
                reading("a", 50, 5.0),
                reading("b", 7, 7.0),
            ]
        );
        // The file itself holds no more than that.
        assert_eq!(count(&db, "readings"), 4);

        // A later batch pushes out the oldest; an untouched topic keeps its readings.
        db.append_readings(&[reading("a", 60, 6.0)], 3).unwrap();
        assert_eq!(
            db.load_readings(100, 100).unwrap(),
            [
                reading("a", 40, 4.0),
                reading("a", 50, 5.0),
                reading("a", 60, 6.0),
                reading("b", 7, 7.0),
            ]
        );

        // Two readings in the same millisecond: the one sent later is the newer.
        db.append_readings(&[reading("c", 5, 1.0), reading("c", 5, 2.0)], 1)
            .unwrap();
        assert_eq!(db.load_readings(100, 100).unwrap()[4], reading("c", 5, 2.0));

        // Loading may ask for fewer per topic than are stored.
        assert_eq!(
            db.load_readings(1, 100).unwrap(),
            [
                reading("a", 60, 6.0),
                reading("b", 7, 7.0),
                reading("c", 5, 2.0)
            ]
        );
    }

    #[test]
    fn keeping_nothing_stores_nothing_and_odd_values_are_skipped() {
        let mut db = StateDb::open_in_memory().unwrap();
        db.append_readings(&[reading("a", 1, 1.0)], 10).unwrap();
        db.append_readings(&[reading("a", 2, 2.0), reading("b", 2, 2.0)], 0)
            .unwrap();
        assert!(db.load_readings(10, 10).unwrap().is_empty());
        assert_eq!(count(&db, "topics"), 0);

        db.append_readings(
            &[
                reading("a", 1, f64::NAN),
                reading("a", 2, f64::INFINITY),
                reading("a", 3, 3.0),
            ],
            10,
        )
        .unwrap();
        db.append_readings(&[], 10).unwrap();
        assert_eq!(db.load_readings(10, 10).unwrap(), [reading("a", 3, 3.0)]);
    }

    #[test]
    fn max_topics_loads_the_most_recently_updated_topics() {
        let mut db = StateDb::open_in_memory().unwrap();
        db.append_readings(
            &[
                reading("old", 100, 1.0),
                reading("newest", 300, 2.0),
                reading("middle", 50, 3.0),
            ],
            10,
        )
        .unwrap();
        // An earlier reading arriving late does not make a topic more recent; a later one does.
        db.append_readings(
            &[reading("newest", 10, 4.0), reading("middle", 200, 5.0)],
            10,
        )
        .unwrap();
        assert_eq!(
            db.load_readings(10, 2).unwrap(),
            [
                reading("middle", 50, 3.0),
                reading("middle", 200, 5.0),
                reading("newest", 10, 4.0),
                reading("newest", 300, 2.0),
            ]
        );
        assert_eq!(db.load_readings(10, 0).unwrap(), []);
        assert_eq!(db.load_readings(10, usize::MAX).unwrap().len(), 5);

        // retain_topics makes it permanent.
        assert_eq!(db.retain_topics(2).unwrap(), 1);
        assert_eq!(db.retain_topics(2).unwrap(), 0);
        assert_eq!(db.load_readings(10, 100).unwrap().len(), 4);
        assert_eq!(count(&db, "readings"), 4);
    }

    #[test]
    fn alerts_are_replaced_deleted_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = db_path(&dir);
        let alice_temp_above = key("alice@example.org", "temp", true);
        {
            let mut db = StateDb::open(&path).unwrap();
            db.put_alert(&alert("alice@example.org", "temp", true, 25.0, 1_000))
                .unwrap();
            db.put_alert(&alert("bob@example.org", "hum", false, 30.0, 2_000))
                .unwrap();
            db.put_alert(&alert("alice@example.org", "temp", false, 5.0, 3_000))
                .unwrap();
            db.put_alert(&alert("alice@example.org", "door/+", true, 1.0, 4_000))
                .unwrap();
            db.put_alert_topic(&alice_temp_above, &state("sensors/temp", true, None))
                .unwrap();
            // Redefining an alert replaces it and forgets its topic states.
            db.put_alert(&alert("alice@example.org", "temp", true, 26.0, 5_000))
                .unwrap();
            db.put_alert_topic(
                &alice_temp_above,
                &state("sensors/temp", false, Some(6_000)),
            )
            .unwrap();
            db.put_alert_topic(&alice_temp_above, &state("sensors/temp2", true, None))
                .unwrap();
            // Updating a topic state replaces it.
            db.put_alert_topic(
                &alice_temp_above,
                &state("sensors/temp2", false, Some(7_000)),
            )
            .unwrap();
            // A state for an alert that does not exist is ignored.
            db.put_alert_topic(
                &key("carol@example.org", "temp", true),
                &state("sensors/temp", true, None),
            )
            .unwrap();
            db.put_alert_topic(
                &key("bob@example.org", "hum", false),
                &state("sensors/hum", true, None),
            )
            .unwrap();
        }

        let mut db = StateDb::open(&path).unwrap();
        let loaded = db.load_alerts().unwrap();
        assert_eq!(
            loaded.iter().map(|(a, _)| a.clone()).collect::<Vec<_>>(),
            [
                alert("bob@example.org", "hum", false, 30.0, 2_000),
                alert("alice@example.org", "temp", false, 5.0, 3_000),
                alert("alice@example.org", "door/+", true, 1.0, 4_000),
                alert("alice@example.org", "temp", true, 26.0, 5_000),
            ]
        );
        assert_eq!(loaded[0].1, [state("sensors/hum", true, None)]);
        assert!(loaded[1].1.is_empty());
        assert_eq!(
            loaded[3].1,
            [
                state("sensors/temp", false, Some(6_000)),
                state("sensors/temp2", false, Some(7_000)),
            ]
        );
        assert_eq!(count(&db, "alert_topics"), 3);

        // `alert off temp`: both directions, with their topic states; nobody else's.
        assert_eq!(
            db.delete_alerts("alice@example.org", Some("temp")).unwrap(),
            2
        );
        assert_eq!(
            db.delete_alerts("alice@example.org", Some("temp")).unwrap(),
            0
        );
        assert_eq!(
            alert_summary(&db),
            [
                ("bob@example.org".into(), "hum".into(), false, 30.0),
                ("alice@example.org".into(), "door/+".into(), true, 1.0),
            ]
        );
        assert_eq!(count(&db, "alert_topics"), 1);
        // A late state update for the deleted alert does not bring it back.
        db.put_alert_topic(&alice_temp_above, &state("sensors/temp", true, None))
            .unwrap();
        assert_eq!(count(&db, "alert_topics"), 1);

        // `alert off`: all of bob's.
        assert_eq!(db.delete_alerts("bob@example.org", None).unwrap(), 1);
        assert_eq!(
            alert_summary(&db),
            [("alice@example.org".into(), "door/+".into(), true, 1.0)]
        );
        assert_eq!(count(&db, "alert_topics"), 0);
        drop(db);
        assert_eq!(alert_summary(&StateDb::open(&path).unwrap()).len(), 1);
    }

    #[test]
    fn deleting_an_alert_cascades_to_its_topic_states() {
        // Through the foreign key alone, as any other delete of an alert row would.
        let mut db = StateDb::open_in_memory().unwrap();
        let k = key("alice@example.org", "temp", true);
        db.put_alert(&alert("alice@example.org", "temp", true, 25.0, 1))
            .unwrap();
        db.put_alert_topic(&k, &state("sensors/temp", true, None))
            .unwrap();
        db.conn.execute("DELETE FROM alerts", []).unwrap();
        assert_eq!(count(&db, "alert_topics"), 0);
    }

    #[test]
    fn an_alert_with_a_non_finite_number_is_refused() {
        let mut db = StateDb::open_in_memory().unwrap();
        let mut bad = alert("alice@example.org", "temp", true, f64::NAN, 1);
        let err = db.put_alert(&bad).unwrap_err();
        assert!(
            matches!(
                err,
                PersistError::NotFinite {
                    what: "threshold",
                    ..
                }
            ),
            "{err}"
        );
        bad.threshold = 1.0;
        bad.margin = f64::INFINITY;
        let err = db.put_alert(&bad).unwrap_err();
        assert!(err.to_string().contains("margin is inf"), "{err}");
        assert!(db.load_alerts().unwrap().is_empty());
    }

    #[test]
    fn a_newer_schema_is_refused() {
        // The refusal itself (message, nothing written) is tested in `crate::sqlite`.
        let dir = tempfile::tempdir().unwrap();
        let path = db_path(&dir);
        drop(StateDb::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 7)
            .unwrap();
        let err = StateDb::open(&path).unwrap_err();
        assert!(
            matches!(&err, PersistError::Open(OpenError::TooNew { found: 7, supported, .. }) if *supported == SCHEMA_VERSION),
            "{err}"
        );
    }

    #[test]
    fn missing_directory_and_garbage_file_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-dir").join("state.sqlite");
        let err = StateDb::open(&missing).unwrap_err();
        assert!(
            matches!(err, PersistError::Open(OpenError::Io { .. })),
            "{err}"
        );
        assert!(err.to_string().contains("no-such-dir"), "{err}");

        let garbage = dir.path().join("garbage.sqlite");
        std::fs::write(&garbage, vec![b'x'; 4096]).unwrap();
        let err = StateDb::open(&garbage).unwrap_err();
        assert!(
            matches!(err, PersistError::Open(OpenError::Sqlite { .. })),
            "{err}"
        );
        assert!(err.to_string().contains("garbage.sqlite"), "{err}");
    }

    #[test]
    fn the_persister_applies_writes_in_order_and_close_flushes_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = db_path(&dir);
        let persister = Persister::spawn(StateDb::open(&path).unwrap(), 3).unwrap();
        let k = key("alice@example.org", "temp", true);
        persister.send(Write::PutAlert(alert(
            "alice@example.org",
            "temp",
            true,
            25.0,
            1,
        )));
        persister.send(Write::PutAlertTopic {
            key: k.clone(),
            state: state("sensors/temp", false, Some(10)),
        });
        persister.send(Write::PutAlert(alert(
            "bob@example.org",
            "hum",
            true,
            60.0,
            2,
        )));
        for n in 0..10 {
            persister.send(Write::Readings(vec![
                reading("sensors/temp", n, n as f64),
                reading("sensors/hum", n, 50.0),
            ]));
        }
        // Order matters from here: delete, re-create, then a state for the new alert only.
        persister.send(Write::DeleteAlerts {
            contact: "alice@example.org".into(),
            target: Some("temp".into()),
        });
        persister.send(Write::PutAlert(alert(
            "alice@example.org",
            "temp",
            true,
            30.0,
            3,
        )));
        persister.send(Write::PutAlertTopic {
            key: k.clone(),
            state: state("sensors/temp", true, None),
        });
        persister.send(Write::DeleteAlerts {
            contact: "bob@example.org".into(),
            target: None,
        });
        persister.send(Write::Readings(vec![reading("sensors/temp", 99, 9.5)]));
        persister.close();

        let db = StateDb::open(&path).unwrap();
        let alerts = db.load_alerts().unwrap();
        assert_eq!(
            alerts,
            [(
                alert("alice@example.org", "temp", true, 30.0, 3),
                vec![state("sensors/temp", true, None)]
            )]
        );
        assert_eq!(
            db.load_readings(100, 100).unwrap(),
            [
                reading("sensors/hum", 7, 50.0),
                reading("sensors/hum", 8, 50.0),
                reading("sensors/hum", 9, 50.0),
                reading("sensors/temp", 8, 8.0),
                reading("sensors/temp", 9, 9.0),
                reading("sensors/temp", 99, 9.5),
            ]
        );
    }

    #[test]
    fn a_failed_write_does_not_stop_the_writes_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = db_path(&dir);
        let persister = Persister::spawn(StateDb::open(&path).unwrap(), 10).unwrap();
        persister.send(Write::PutAlert(alert(
            "alice@example.org",
            "temp",
            true,
            f64::NAN,
            1,
        )));
        persister.send(Write::Readings(vec![reading("sensors/temp", 1, 1.0)]));
        persister.send(Write::PutAlert(alert(
            "alice@example.org",
            "temp",
            true,
            25.0,
            2,
        )));
        persister.close();
        let db = StateDb::open(&path).unwrap();
        assert_eq!(
            alert_summary(&db),
            [("alice@example.org".into(), "temp".into(), true, 25.0)]
        );
        assert_eq!(
            db.load_readings(10, 10).unwrap(),
            [reading("sensors/temp", 1, 1.0)]
        );
    }

    #[test]
    fn failures_are_logged_at_most_once_a_minute_with_a_count() {
        let mut log = FailureLog::new(ERROR_LOG_INTERVAL);
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        assert_eq!(log.failure(at(0)), Some(0));
        assert_eq!(log.failure(at(1)), None);
        assert_eq!(log.failure(at(59)), None);
        // The next line, a minute after the previous one, counts the two it stood for.
        assert_eq!(log.failure(at(60)), Some(2));
        assert_eq!(log.failure(at(61)), None);
        assert_eq!(log.take_unreported(), 1);
        assert_eq!(log.take_unreported(), 0);
        assert_eq!(log.failure(at(500)), Some(0));
    }

    #[test]
    fn error_lines_say_what_was_lost() {
        let path = Path::new("/var/lib/bot/state.sqlite");
        let readings = Write::Readings(vec![reading("a", 1, 1.0); 120]);
        assert_eq!(
            readings.failure(path, &"disk full"),
            "could not save 120 readings to /var/lib/bot/state.sqlite: disk full"
        );
        let put = Write::PutAlert(alert("alice@example.org", "temp", true, 25.5, 1));
        let line = put.failure(path, &"disk full");
        assert!(
            line.starts_with("could not save the alert of alice@example.org on temp (above 25.5)")
                && line.contains("gone after a restart"),
            "{line}"
        );
        let off = Write::DeleteAlerts {
            contact: "alice@example.org".into(),
            target: Some("temp".into()),
        };
        let line = off.failure(path, &"disk full");
        assert!(
            line.starts_with(
                "could not delete the alerts of alice@example.org on temp \
                 from /var/lib/bot/state.sqlite: disk full; they will be back"
            ),
            "{line}"
        );
        let all_off = Write::DeleteAlerts {
            contact: "alice@example.org".into(),
            target: None,
        };
        assert!(all_off
            .failure(path, &"disk full")
            .starts_with("could not delete the alerts of alice@example.org from "));
    }

    #[test]
    fn disk_cost_per_reading() {
        // 100 topics × 1 000 readings, one every 10 s per topic, in batches of 1 000.
        let dir = tempfile::tempdir().unwrap();
        let path = db_path(&dir);
        let mut db = StateDb::open(&path).unwrap();
        let topics: Vec<String> = (0..100)
            .map(|n| format!("building/floor-{}/room-{n}/temperature", n % 7))
            .collect();
        let start_ms = 1_750_000_000_000_i64;
        let all: Vec<StoredReading> = (0..1_000_i64)
            .flat_map(|step| {
                topics.iter().enumerate().map(move |(n, topic)| {
                    reading(
                        topic,
                        start_ms + step * 10_000 + n as i64,
                        20.0 + (step % 97) as f64 * 0.1 + n as f64 * 0.01,
                    )
                })
            })
            .collect();
        for batch in all.chunks(1_000) {
            db.append_readings(batch, 1_000).unwrap();
        }
        assert_eq!(count(&db, "readings"), 100_000);
        db.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        let bytes = std::fs::metadata(&path).unwrap().len();
        let per_reading = bytes as f64 / 100_000.0;
        // The module documentation quotes this figure.
        assert!(
            (40.0..52.0).contains(&per_reading),
            "{per_reading:.1} bytes per reading ({bytes} bytes)"
        );
    }
}
