//! HTTP File Upload (XEP-0363): the slots handed out and the files stored, one row per token
//! in `upload_files`.
//!
//! A row is born as a `slot` when the hub hands out an upload slot, becomes `receiving` when
//! the one PUT the slot allows starts (the state changes in one `UPDATE … WHERE state =
//! 'slot'`, so two PUTs racing on one slot cannot both win), and `stored` once the whole body
//! is on disk. The bytes live in `DATA_DIR/uploads/TOKEN`, named by the token alone, never by
//! anything a client wrote. What counts against an account's quota is every row it has,
//! except slots that expired unused.
//!
//! Times are milliseconds since the Unix epoch, given by the caller, so that expiry is tested
//! with a clock the test drives.

use std::path::PathBuf;

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{normalize_user, require_account, Store, StoreError};

/// Where a row is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadState {
    /// Handed out, no PUT yet.
    Slot,
    /// Its PUT is being received.
    Receiving,
    /// The file is stored and served.
    Stored,
}

impl UploadState {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "slot" => Some(UploadState::Slot),
            "receiving" => Some(UploadState::Receiving),
            "stored" => Some(UploadState::Stored),
            _ => None,
        }
    }
}

/// One slot or stored file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRow {
    /// The random token in its URL.
    pub token: String,
    /// The account that asked for the slot (lowercase localpart).
    pub owner: String,
    /// The file name the client gave (checked by the hub, used only in the URL and headers).
    pub filename: String,
    /// The size the client declared; the PUT must bring exactly this many bytes.
    pub size: u64,
    /// The content type the client declared, if any.
    pub content_type: Option<String>,
    /// Slot, receiving or stored.
    pub state: UploadState,
    /// When the slot was handed out.
    pub created_ms: i64,
    /// When the file was stored.
    pub stored_ms: Option<i64>,
}

fn row(row: &Row<'_>) -> rusqlite::Result<UploadRow> {
    let state: String = row.get(5)?;
    let size: i64 = row.get(3)?;
    Ok(UploadRow {
        token: row.get(0)?,
        owner: row.get(1)?,
        filename: row.get(2)?,
        size: u64::try_from(size).unwrap_or(0),
        content_type: row.get(4)?,
        // The CHECK constraint allows nothing else.
        state: UploadState::parse(&state).unwrap_or(UploadState::Receiving),
        created_ms: row.get(6)?,
        stored_ms: row.get(7)?,
    })
}

const COLUMNS: &str = "token, owner, filename, size, content_type, state, created_ms, stored_ms";

/// The tokens of `owner`'s rows (for removing their files with the account).
pub(super) fn tokens_of(conn: &Connection, owner: &str) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT token FROM upload_files WHERE owner = ?1")?;
    let tokens = stmt
        .query_map([owner], |row| row.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(tokens)
}

/// What a new slot asks for.
#[derive(Debug, Clone)]
pub struct NewSlot<'a> {
    /// Its random token.
    pub token: &'a str,
    /// The account asking.
    pub owner: &'a str,
    /// The file name.
    pub filename: &'a str,
    /// The declared size.
    pub size: u64,
    /// The declared content type.
    pub content_type: Option<&'a str>,
}

impl Store {
    /// The directory of the uploaded files: `uploads/` beside the database file; `None` for a
    /// database in memory.
    pub fn upload_dir(&self) -> Option<PathBuf> {
        if !self.path.is_file() {
            return None;
        }
        Some(self.path.parent()?.join("uploads"))
    }

    /// Removes the files of `tokens` (ignoring those that are not there).
    pub(super) fn remove_upload_files(&self, tokens: &[String]) {
        let Some(dir) = self.upload_dir() else {
            return;
        };
        for token in tokens {
            for name in [token.clone(), format!("{token}.part")] {
                match std::fs::remove_file(dir.join(&name)) {
                    Ok(()) => {}
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                    Err(error) => tracing::warn!("cannot remove the uploaded file {name}: {error}"),
                }
            }
        }
    }

    /// The bytes `owner` has in use at `now_ms`: its stored files, the uploads under way, and
    /// its slots younger than `slot_ttl_ms`.
    #[cfg(test)]
    pub fn upload_usage(
        &self,
        owner: &str,
        now_ms: i64,
        slot_ttl_ms: i64,
    ) -> Result<u64, StoreError> {
        usage(&self.conn, &normalize_user(owner), now_ms, slot_ttl_ms)
    }

    /// Records `slot` for its owner if the quota allows: `Ok(Err(used))` (nothing written)
    /// when the owner's usage plus its size would exceed `quota`.
    pub fn upload_create_slot(
        &self,
        slot: &NewSlot<'_>,
        now_ms: i64,
        slot_ttl_ms: i64,
        quota: u64,
    ) -> Result<Result<(), u64>, StoreError> {
        let owner = normalize_user(slot.owner);
        let tx = self.write()?;
        require_account(&tx, &owner)?;
        let used = usage(&tx, &owner, now_ms, slot_ttl_ms)?;
        if used.saturating_add(slot.size) > quota {
            return Ok(Err(used));
        }
        tx.execute(
            "INSERT INTO upload_files (token, owner, filename, size, content_type, state, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, 'slot', ?6)",
            params![
                slot.token,
                owner,
                slot.filename,
                i64::try_from(slot.size).unwrap_or(i64::MAX),
                slot.content_type,
                now_ms
            ],
        )?;
        tx.commit()?;
        Ok(Ok(()))
    }

    /// The row of `token`, if any.
    pub fn upload_row(&self, token: &str) -> Result<Option<UploadRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM upload_files WHERE token = ?1"
        ))?;
        Ok(stmt.query_row([token], row).optional()?)
    }

    /// Takes the slot `token` for its one PUT: true if it was an unused slot younger than
    /// `slot_ttl_ms` (it is now `receiving`), false otherwise (used, expired, unknown).
    pub fn upload_claim(
        &self,
        token: &str,
        now_ms: i64,
        slot_ttl_ms: i64,
    ) -> Result<bool, StoreError> {
        let tx = self.write()?;
        let changed = tx.execute(
            "UPDATE upload_files SET state = 'receiving'
             WHERE token = ?1 AND state = 'slot' AND created_ms > ?2",
            params![token, now_ms.saturating_sub(slot_ttl_ms)],
        )?;
        tx.commit()?;
        Ok(changed == 1)
    }

    /// Marks the upload of `token` complete: its file is served from now on.
    pub fn upload_stored(&self, token: &str, now_ms: i64) -> Result<bool, StoreError> {
        let tx = self.write()?;
        let changed = tx.execute(
            "UPDATE upload_files SET state = 'stored', stored_ms = ?2
             WHERE token = ?1 AND state = 'receiving'",
            params![token, now_ms],
        )?;
        tx.commit()?;
        Ok(changed == 1)
    }

    /// Forgets `token` (a failed upload: the slot is used up) and removes its files.
    pub fn upload_forget(&self, token: &str) -> Result<(), StoreError> {
        let tx = self.write()?;
        tx.execute("DELETE FROM upload_files WHERE token = ?1", [token])?;
        tx.commit()?;
        self.remove_upload_files(&[token.to_string()]);
        Ok(())
    }

    /// Deletes what expired at `now_ms`, rows and files: slots unused for `slot_ttl_ms`,
    /// uploads still `receiving` after `receive_ttl_ms` (cut off, or a crash mid-upload), files
    /// stored for `file_ttl_ms`. Returns the tokens removed.
    pub fn upload_expire(
        &self,
        now_ms: i64,
        slot_ttl_ms: i64,
        receive_ttl_ms: i64,
        file_ttl_ms: i64,
    ) -> Result<Vec<String>, StoreError> {
        let tx = self.write()?;
        let tokens = {
            let mut stmt = tx.prepare_cached(
                "DELETE FROM upload_files
                 WHERE (state = 'slot' AND created_ms <= ?1)
                    OR (state = 'receiving' AND created_ms <= ?2)
                    OR (state = 'stored' AND stored_ms <= ?3)
                 RETURNING token",
            )?;
            let tokens = stmt
                .query_map(
                    params![
                        now_ms.saturating_sub(slot_ttl_ms),
                        now_ms.saturating_sub(receive_ttl_ms),
                        now_ms.saturating_sub(file_ttl_ms)
                    ],
                    |row| row.get(0),
                )?
                .collect::<Result<Vec<String>, _>>()?;
            tokens
        };
        tx.commit()?;
        self.remove_upload_files(&tokens);
        Ok(tokens)
    }

    /// Whether `token` has a row (for removing stray files at start).
    pub fn upload_known(&self, token: &str) -> Result<bool, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM upload_files WHERE token = ?1)")?;
        Ok(stmt.query_row([token], |row| row.get(0))?)
    }
}

fn usage(conn: &Connection, owner: &str, now_ms: i64, slot_ttl_ms: i64) -> Result<u64, StoreError> {
    let used: i64 = conn.query_row(
        "SELECT COALESCE(SUM(size), 0) FROM upload_files
         WHERE owner = ?1 AND (state <> 'slot' OR created_ms > ?2)",
        params![owner, now_ms.saturating_sub(slot_ttl_ms)],
        |row| row.get(0),
    )?;
    Ok(u64::try_from(used).unwrap_or(0))
}

#[cfg(test)]
mod tests;
