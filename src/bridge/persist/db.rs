//! The state database itself: its schema and migrations, and the blocking calls that save and
//! load readings and alerts. See the parent module for what is kept and what a crash loses.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::{AlertKey, PersistError, StoredAlert, StoredAlertTopic, StoredReading, StoredRoom};

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
    // 1 → 2: rooms the bot joined through an invitation, joined again after a restart.
    "CREATE TABLE rooms (
        room       TEXT PRIMARY KEY,
        nick       TEXT NOT NULL,
        password   TEXT,
        invited_by TEXT NOT NULL,
        added_ms   INTEGER NOT NULL
    );",
    // 2 → 3: what the bot last published about itself (its profile: nickname, vCard, avatar),
    // so a restart does not publish it again.
    "CREATE TABLE published (
        what        TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL
    );",
];

/// The schema version this code writes and understands: the number of [`MIGRATIONS`].
#[cfg(test)]
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// How long a write waits for another connection (another process) to release the lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The bot's state database: one SQLite connection. See the module documentation.
///
/// Its methods are plain blocking calls; async code goes through [`Persister`].
pub struct StateDb {
    pub(super) conn: Connection,
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
    #[cfg(test)]
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

    /// Inserts or replaces a room joined through an invitation.
    pub fn put_room(&mut self, room: &StoredRoom) -> Result<(), PersistError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO rooms (room, nick, password, invited_by, added_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                room.room,
                room.nick,
                room.password,
                room.invited_by,
                room.added_unix_ms
            ],
        )?;
        Ok(())
    }

    /// Records that `what` was published with this `fingerprint`.
    pub fn put_published(&mut self, what: &str, fingerprint: &str) -> Result<(), PersistError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO published (what, fingerprint) VALUES (?1, ?2)",
            params![what, fingerprint],
        )?;
        Ok(())
    }

    /// The fingerprint `what` was last published with, if ever.
    pub fn load_published(&self, what: &str) -> Result<Option<String>, PersistError> {
        let mut statement = self
            .conn
            .prepare("SELECT fingerprint FROM published WHERE what = ?1")?;
        let mut rows = statement.query_map(params![what], |row| row.get(0))?;
        Ok(rows.next().transpose()?)
    }

    /// The rooms joined through invitations, oldest first.
    pub fn load_rooms(&self) -> Result<Vec<StoredRoom>, PersistError> {
        let mut statement = self.conn.prepare(
            "SELECT room, nick, password, invited_by, added_ms FROM rooms ORDER BY added_ms, room",
        )?;
        let rows = statement.query_map([], |row| {
            Ok(StoredRoom {
                room: row.get(0)?,
                nick: row.get(1)?,
                password: row.get(2)?,
                invited_by: row.get(3)?,
                added_unix_ms: row.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
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
    pub(super) fn close(self) -> Result<(), PersistError> {
        self.conn.close().map_err(|(_, error)| error)?;
        Ok(())
    }
}

/// A count for a SQL `LIMIT` or `OFFSET`; larger than SQLite can count means "all".
fn to_sql_count(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}
