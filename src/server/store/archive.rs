//! The message archive (XEP-0313): each account's one-to-one messages, with the ids the hub
//! gave them, and each account's archiving preferences (XEP-0313 §5).
//!
//! Rows are written in batches ([`Store::append_archive`]); see "Durability" in the store's
//! module documentation for why, and what a power cut can cost. The ids are the table's
//! `INTEGER PRIMARY KEY`, given by the hub from the counter in `archive_seq` (written in the
//! same transaction as the rows), so they grow with time, are never reused, and one index on
//! `(owner, id)` serves paging, the filters, and "the oldest first" when a limit is reached. A
//! second index for `with` cost every archived message another B-tree insert and 16 % more
//! disk (333 bytes a message instead of 286 in `bench/run_server.py --archive`), to speed up a
//! filter that reads at most one account's archive (10 000 rows by default) without it.

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, OptionalExtension};

use super::{normalize_jid, normalize_user, require_account, Store, StoreError};

/// One message in one account's archive, as the hub hands it to [`Store::append_archive`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveRow {
    /// The archive id (from [`Store::archive_seq`]'s counter).
    pub id: i64,
    /// The account whose archive holds it.
    pub owner: String,
    /// The other party's bare JID.
    pub with: String,
    /// When the server archived it, in milliseconds since the Unix epoch.
    pub stamp_ms: i64,
    /// The message as XML.
    pub stanza: String,
}

/// A message read back from an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedMessage {
    /// The archive id.
    pub id: i64,
    /// When it was archived, in milliseconds since the Unix epoch.
    pub stamp_ms: i64,
    /// The message as XML.
    pub stanza: String,
}

/// Which messages of an archive a query is about (XEP-0313 §4.1: the form's fields), before
/// paging. Every bound is optional; the id bounds are exclusive, the times inclusive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveFilter {
    /// Only messages with this bare JID.
    pub with: Option<String>,
    /// Only messages archived at or after this time (ms).
    pub start_ms: Option<i64>,
    /// Only messages archived at or before this time (ms).
    pub end_ms: Option<i64>,
    /// Only messages after this id (`after-id`).
    pub after_id: Option<i64>,
    /// Only messages before this id (`before-id`).
    pub before_id: Option<i64>,
    /// Only these ids (`ids`).
    pub ids: Option<Vec<i64>>,
}

/// Which page of the filtered messages (XEP-0059).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paging {
    /// The first messages after this id (or from the first one), oldest first.
    Forward(Option<i64>),
    /// The last messages before this id (or up to the last one), returned oldest first.
    Backward(Option<i64>),
}

/// One page of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivePage {
    /// The messages, oldest first.
    pub messages: Vec<ArchivedMessage>,
    /// Whether the page reaches the end of the filtered messages in its direction (the last
    /// one going forward, the first one going backward): XEP-0313 §4.3 `complete`.
    pub complete: bool,
    /// How many messages the filter matches in all (XEP-0059 `<count/>`).
    pub count: usize,
}

/// What an account archives by default (XEP-0313 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveDefault {
    /// Every message.
    Always,
    /// No message, except with the JIDs in the `always` list.
    Never,
    /// Messages with contacts in the roster.
    Roster,
}

impl ArchiveDefault {
    fn as_str(self) -> &'static str {
        match self {
            ArchiveDefault::Always => "always",
            ArchiveDefault::Never => "never",
            ArchiveDefault::Roster => "roster",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "never" => ArchiveDefault::Never,
            "roster" => ArchiveDefault::Roster,
            _ => ArchiveDefault::Always,
        }
    }
}

/// An account's archiving preferences (XEP-0313 §5): the default, and the bare JIDs always
/// and never archived whatever the default says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivePrefs {
    /// The default rule.
    pub default: ArchiveDefault,
    /// Bare JIDs whose messages are always archived.
    pub always: Vec<String>,
    /// Bare JIDs whose messages are never archived (this wins over `always`).
    pub never: Vec<String>,
}

impl Default for ArchivePrefs {
    /// What an account that never set preferences gets: everything archived, as Prosody's
    /// `default_archive_policy = true`.
    fn default() -> Self {
        Self {
            default: ArchiveDefault::Always,
            always: Vec::new(),
            never: Vec::new(),
        }
    }
}

/// The two tables of archived messages: each account's (`archive`, rows only for accounts that
/// exist) and each room's (`room_archive`, see `room_archive.rs`). Both have the same columns
/// and share the id counter, so the code that writes, pages and trims them is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Table {
    /// `archive`: the owner is an account's username.
    Accounts,
    /// `room_archive`: the owner is a room's bare JID.
    Rooms,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::Accounts => "archive",
            Table::Rooms => "room_archive",
        }
    }

    /// The owner as stored: both are lowercase (usernames, and bare JIDs).
    fn owner(self, owner: &str) -> String {
        match self {
            Table::Accounts => normalize_user(owner),
            Table::Rooms => normalize_jid(owner),
        }
    }
}

impl Store {
    /// The next archive id to give, and this database's random mask that turns ids into the
    /// stanza ids clients see (so they tell nothing about how many messages the server holds).
    pub fn archive_seq(&self) -> Result<(i64, i64), StoreError> {
        Ok(self.conn.query_row(
            "SELECT next, mask FROM archive_seq WHERE id = 0",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?)
    }

    /// Writes `rows` in one transaction, and records that ids below `next` are taken. Rows of
    /// an account deleted meanwhile (by `mqtt2xmpp user del`, another process) are skipped.
    /// Returns how many rows were written.
    pub fn append_archive(&self, rows: &[ArchiveRow], next: i64) -> Result<usize, StoreError> {
        self.append_to(Table::Accounts, rows, next)
    }

    /// [`Store::append_archive`] into `table`.
    pub(super) fn append_to(
        &self,
        table: Table,
        rows: &[ArchiveRow],
        next: i64,
    ) -> Result<usize, StoreError> {
        let tx = self.write()?;
        let mut written = 0;
        {
            let sql = match table {
                Table::Accounts => {
                    "INSERT OR IGNORE INTO archive (id, owner, with_jid, stamp_ms, stanza)
                     SELECT ?1, ?2, ?3, ?4, ?5
                     WHERE EXISTS (SELECT 1 FROM accounts WHERE username = ?2)"
                }
                Table::Rooms => {
                    "INSERT OR IGNORE INTO room_archive (id, owner, with_jid, stamp_ms, stanza)
                     VALUES (?1, ?2, ?3, ?4, ?5)"
                }
            };
            let mut insert = tx.prepare_cached(sql)?;
            for row in rows {
                written += insert.execute(params![
                    row.id,
                    table.owner(&row.owner),
                    normalize_jid(&row.with),
                    row.stamp_ms,
                    row.stanza
                ])?;
            }
            tx.execute(
                "UPDATE archive_seq SET next = max(next, ?1) WHERE id = 0",
                [next],
            )?;
        }
        tx.commit()?;
        Ok(written)
    }

    /// Whether `owner`'s archive holds the message `id`.
    pub fn archive_has(&self, owner: &str, id: i64) -> Result<bool, StoreError> {
        self.has_in(Table::Accounts, owner, id)
    }

    /// [`Store::archive_has`] in `table`.
    pub(super) fn has_in(&self, table: Table, owner: &str, id: i64) -> Result<bool, StoreError> {
        Ok(self.conn.query_row(
            &format!(
                "SELECT EXISTS (SELECT 1 FROM {} WHERE owner = ?1 AND id = ?2)",
                table.name()
            ),
            params![table.owner(owner), id],
            |row| row.get(0),
        )?)
    }

    /// How many messages `owner`'s archive holds.
    pub fn archive_count(&self, owner: &str) -> Result<usize, StoreError> {
        self.count_in(Table::Accounts, owner)
    }

    /// [`Store::archive_count`] in `table`.
    pub(super) fn count_in(&self, table: Table, owner: &str) -> Result<usize, StoreError> {
        let count: i64 = self.conn.query_row(
            &format!("SELECT COUNT(*) FROM {} WHERE owner = ?1", table.name()),
            [table.owner(owner)],
            |row| row.get(0),
        )?;
        Ok(usize::try_from(count).unwrap_or(0))
    }

    /// One page of at most `max` of `owner`'s messages that match `filter`.
    pub fn archive_query(
        &self,
        owner: &str,
        filter: &ArchiveFilter,
        paging: Paging,
        max: usize,
    ) -> Result<ArchivePage, StoreError> {
        self.query_in(Table::Accounts, owner, filter, paging, max)
    }

    /// [`Store::archive_query`] in `table`.
    pub(super) fn query_in(
        &self,
        table: Table,
        owner: &str,
        filter: &ArchiveFilter,
        paging: Paging,
        max: usize,
    ) -> Result<ArchivePage, StoreError> {
        let name = table.name();
        let mut clauses = vec!["owner = ?".to_string()];
        let mut values = vec![Value::Text(table.owner(owner))];
        if let Some(with) = &filter.with {
            clauses.push("with_jid = ?".into());
            values.push(Value::Text(normalize_jid(with)));
        }
        if let Some(start) = filter.start_ms {
            clauses.push("stamp_ms >= ?".into());
            values.push(Value::Integer(start));
        }
        if let Some(end) = filter.end_ms {
            clauses.push("stamp_ms <= ?".into());
            values.push(Value::Integer(end));
        }
        if let Some(after) = filter.after_id {
            clauses.push("id > ?".into());
            values.push(Value::Integer(after));
        }
        if let Some(before) = filter.before_id {
            clauses.push("id < ?".into());
            values.push(Value::Integer(before));
        }
        if let Some(ids) = &filter.ids {
            let marks = vec!["?"; ids.len()].join(", ");
            clauses.push(format!("id IN ({marks})"));
            values.extend(ids.iter().map(|id| Value::Integer(*id)));
        }
        let matching = clauses.join(" AND ");
        let count: i64 = self.conn.query_row(
            &format!("SELECT COUNT(*) FROM {name} WHERE {matching}"),
            params_from_iter(values.iter()),
            |row| row.get(0),
        )?;

        let (bound, order) = match paging {
            Paging::Forward(after) => (after.map(|id| ("id > ?", id)), "ASC"),
            Paging::Backward(before) => (before.map(|id| ("id < ?", id)), "DESC"),
        };
        let mut page_clauses = matching;
        if let Some((clause, id)) = bound {
            page_clauses.push_str(" AND ");
            page_clauses.push_str(clause);
            values.push(Value::Integer(id));
        }
        // One more than asked: whether it exists says whether the page is complete.
        let limit = i64::try_from(max).unwrap_or(i64::MAX).saturating_add(1);
        values.push(Value::Integer(limit));
        let mut stmt = self.conn.prepare(&format!(
            "SELECT id, stamp_ms, stanza FROM {name} WHERE {page_clauses}
             ORDER BY id {order} LIMIT ?"
        ))?;
        let mut messages = stmt
            .query_map(params_from_iter(values.iter()), |row| {
                Ok(ArchivedMessage {
                    id: row.get(0)?,
                    stamp_ms: row.get(1)?,
                    stanza: row.get(2)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let complete = messages.len() <= max;
        messages.truncate(max);
        if matches!(paging, Paging::Backward(_)) {
            messages.reverse();
        }
        Ok(ArchivePage {
            messages,
            complete,
            count: usize::try_from(count).unwrap_or(0),
        })
    }

    /// Deletes the oldest messages of `owner` beyond the newest `keep`; returns how many.
    pub fn trim_archive(&self, owner: &str, keep: usize) -> Result<usize, StoreError> {
        self.trim_in(Table::Accounts, owner, keep)
    }

    /// [`Store::trim_archive`] in `table`.
    pub(super) fn trim_in(
        &self,
        table: Table,
        owner: &str,
        keep: usize,
    ) -> Result<usize, StoreError> {
        let name = table.name();
        let tx = self.write()?;
        let deleted = tx.execute(
            &format!(
                "DELETE FROM {name} WHERE owner = ?1 AND id <= (
                     SELECT id FROM {name} WHERE owner = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)"
            ),
            params![table.owner(owner), i64::try_from(keep).unwrap_or(i64::MAX)],
        )?;
        tx.commit()?;
        Ok(deleted)
    }

    /// Deletes every message archived before `before_ms`, in every account's archive; returns
    /// how many.
    pub fn expire_archive(&self, before_ms: i64) -> Result<usize, StoreError> {
        self.expire_in(Table::Accounts, before_ms)
    }

    /// [`Store::expire_archive`] in `table`. Ids grow with time, so this finds the first id to
    /// keep and deletes below it, reading only the rows it deletes.
    pub(super) fn expire_in(&self, table: Table, before_ms: i64) -> Result<usize, StoreError> {
        let name = table.name();
        let tx = self.write()?;
        let deleted = tx.execute(
            &format!(
                "DELETE FROM {name} WHERE id < coalesce(
                     (SELECT id FROM {name} WHERE stamp_ms >= ?1 ORDER BY id LIMIT 1),
                     (SELECT max(id) + 1 FROM {name}))"
            ),
            [before_ms],
        )?;
        tx.commit()?;
        Ok(deleted)
    }

    /// `owner`'s archiving preferences; `None` if never set.
    pub fn archive_prefs(&self, owner: &str) -> Result<Option<ArchivePrefs>, StoreError> {
        let row: Option<(String, String, String)> = self
            .conn
            .query_row(
                "SELECT default_mode, always_json, never_json FROM archive_prefs WHERE owner = ?1",
                [normalize_user(owner)],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()?;
        Ok(row.map(|(default, always, never)| ArchivePrefs {
            default: ArchiveDefault::parse(&default),
            always: serde_json::from_str(&always).unwrap_or_default(),
            never: serde_json::from_str(&never).unwrap_or_default(),
        }))
    }

    /// Replaces `owner`'s archiving preferences.
    pub fn set_archive_prefs(&self, owner: &str, prefs: &ArchivePrefs) -> Result<(), StoreError> {
        let owner = normalize_user(owner);
        let normalized = |jids: &[String]| {
            let jids: Vec<String> = jids.iter().map(|jid| normalize_jid(jid)).collect();
            serde_json::to_string(&jids).unwrap_or_else(|_| "[]".into())
        };
        let tx = self.write()?;
        require_account(&tx, &owner)?;
        tx.execute(
            "INSERT INTO archive_prefs (owner, default_mode, always_json, never_json)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (owner) DO UPDATE SET default_mode = ?2, always_json = ?3, never_json = ?4",
            params![
                owner,
                prefs.default.as_str(),
                normalized(&prefs.always),
                normalized(&prefs.never)
            ],
        )?;
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
