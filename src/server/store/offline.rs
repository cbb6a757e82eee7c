//! Offline messages (XEP-0160): stanzas kept for a user who is not online, delivered at least
//! once (see the store's module documentation on durability), up to
//! [`StoreOptions::max_offline_per_user`](super::StoreOptions::max_offline_per_user)(super::StoreOptions::max_offline_per_user) per user.

use rusqlite::params;

use super::{normalize_user, now_unix, require_account, Store, StoreError};

impl Store {
    /// Stores a message for a user who is offline (XEP-0160) and returns its id.
    ///
    /// When this returns `Ok`, the message is on stable storage (see the module documentation)
    /// and the router may consider it accepted. Fails with [`StoreError::OfflineFull`] when the
    /// user already has [`StoreOptions::max_offline_per_user`](super::StoreOptions::max_offline_per_user) messages, and
    /// [`StoreError::NoSuchAccount`] for an unknown user. The router should add the XEP-0203
    /// `<delay/>` to the stanza before storing it.
    pub fn store_offline(&self, owner: &str, stanza_xml: &str) -> Result<i64, StoreError> {
        let owner = normalize_user(owner);
        let tx = self.write()?;
        require_account(&tx, &owner)?;
        let count: i64 = tx.query_row(
            "SELECT COUNT(*) FROM offline_messages WHERE owner = ?1",
            [&owner],
            |row| row.get(0),
        )?;
        if usize::try_from(count).map_or(true, |count| count >= self.max_offline_per_user) {
            return Err(StoreError::OfflineFull {
                user: owner,
                max: self.max_offline_per_user,
            });
        }
        tx.execute(
            "INSERT INTO offline_messages (owner, stanza, stored_at) VALUES (?1, ?2, ?3)",
            params![owner, stanza_xml, now_unix()],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(id)
    }

    /// The user's offline messages, oldest first, as `(id, stanza)`.
    pub fn offline_messages(&self, owner: &str) -> Result<Vec<(i64, String)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, stanza FROM offline_messages WHERE owner = ?1 ORDER BY id")?;
        let messages = stmt
            .query_map([normalize_user(owner)], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(messages)
    }

    /// Deletes delivered offline messages of `owner` and returns how many were deleted.
    /// Idempotent: ids that are gone, or belong to someone else, are ignored.
    pub fn delete_offline(&self, owner: &str, ids: &[i64]) -> Result<usize, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let owner = normalize_user(owner);
        let tx = self.write()?;
        let mut deleted = 0;
        {
            let mut stmt =
                tx.prepare("DELETE FROM offline_messages WHERE owner = ?1 AND id = ?2")?;
            for id in ids {
                deleted += stmt.execute(params![owner, id])?;
            }
        }
        tx.commit()?;
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests;
