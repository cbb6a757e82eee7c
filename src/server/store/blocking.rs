//! Block lists (XEP-0191): the JIDs each account has blocked, one row per owner and JID.
//!
//! The JIDs are stored as the hub gives them: already parsed and normalised (`Jid`'s
//! `Display`), bare, full or domain JIDs alike. The store keeps the rows; the limit on how
//! many an account may have, the matching rules and the in-memory copy the router reads are
//! the hub's (`hub/blocking.rs`).

use rusqlite::params;

use super::{normalize_user, require_account, Store, StoreError};

impl Store {
    /// The JIDs `owner` has blocked, sorted; empty for an unknown account.
    pub fn blocklist(&self, owner: &str) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT jid FROM blocklist WHERE owner = ?1 ORDER BY jid")?;
        let jids = stmt
            .query_map([normalize_user(owner)], |row| row.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(jids)
    }

    /// Adds `jids` to `owner`'s block list, all of them or none (one transaction). JIDs that
    /// are already there are left as they are.
    pub fn block(&self, owner: &str, jids: &[String]) -> Result<(), StoreError> {
        let owner = normalize_user(owner);
        let tx = self.write()?;
        require_account(&tx, &owner)?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO blocklist (owner, jid) VALUES (?1, ?2)
                 ON CONFLICT (owner, jid) DO NOTHING",
            )?;
            for jid in jids {
                insert.execute(params![owner, jid])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Removes `jids` from `owner`'s block list, or every JID when `jids` is `None`
    /// (XEP-0191 §3.4, "unblock all"). Removing a JID that is not there is not an error.
    pub fn unblock(&self, owner: &str, jids: Option<&[String]>) -> Result<(), StoreError> {
        let owner = normalize_user(owner);
        let tx = self.write()?;
        require_account(&tx, &owner)?;
        match jids {
            None => {
                tx.execute("DELETE FROM blocklist WHERE owner = ?1", [&owner])?;
            }
            Some(jids) => {
                let mut delete =
                    tx.prepare_cached("DELETE FROM blocklist WHERE owner = ?1 AND jid = ?2")?;
                for jid in jids {
                    delete.execute(params![owner, jid])?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
