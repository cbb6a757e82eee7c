//! Accounts and their credentials: one row per user in `accounts`, one per user and hash in
//! `scram` (salt, iterations, StoredKey, ServerKey — never a password, see RFC 5802 §3).

use rusqlite::{params, Connection, OptionalExtension};

use super::{
    account_exists, normalize_user, now_unix, require_account, upload, Hash, ScramKeys, Store,
    StoreError,
};

impl Store {
    /// Creates an account with both SCRAM verifiers.
    ///
    /// Fails with [`StoreError::AlreadyExists`] if the (lowercased) name is taken, and
    /// [`StoreError::InvalidUsername`] if it cannot be a JID localpart.
    pub fn create_account(
        &self,
        username: &str,
        sha1: &ScramKeys,
        sha256: &ScramKeys,
    ) -> Result<(), StoreError> {
        let username = normalize_user(username);
        validate_username(&username)?;
        let tx = self.write()?;
        if account_exists(&tx, &username)? {
            return Err(StoreError::AlreadyExists(username));
        }
        tx.execute(
            "INSERT INTO accounts (username, created_at) VALUES (?1, ?2)",
            params![username, now_unix()],
        )?;
        put_scram(&tx, &username, Hash::Sha1, sha1)?;
        put_scram(&tx, &username, Hash::Sha256, sha256)?;
        tx.commit()?;
        Ok(())
    }

    /// Replaces both SCRAM verifiers of an existing account (a password change).
    pub fn set_credentials(
        &self,
        username: &str,
        sha1: &ScramKeys,
        sha256: &ScramKeys,
    ) -> Result<(), StoreError> {
        let username = normalize_user(username);
        let tx = self.write()?;
        require_account(&tx, &username)?;
        put_scram(&tx, &username, Hash::Sha1, sha1)?;
        put_scram(&tx, &username, Hash::Sha256, sha256)?;
        tx.commit()?;
        Ok(())
    }

    /// Deletes an account with its credentials, roster, offline messages and private data, in
    /// one transaction. Other users' roster items for this user are left alone.
    pub fn delete_account(&self, username: &str) -> Result<(), StoreError> {
        let username = normalize_user(username);
        let tx = self.write()?;
        require_account(&tx, &username)?;
        let uploads = upload::tokens_of(&tx, &username)?;
        for table in [
            "DELETE FROM scram WHERE username = ?1",
            "DELETE FROM roster WHERE owner = ?1",
            "DELETE FROM offline_messages WHERE owner = ?1",
            "DELETE FROM private_xml WHERE owner = ?1",
            "DELETE FROM vcards WHERE owner = ?1",
            "DELETE FROM pep_items WHERE owner = ?1",
            "DELETE FROM pep_nodes WHERE owner = ?1",
            "DELETE FROM blocklist WHERE owner = ?1",
            "DELETE FROM archive WHERE owner = ?1",
            "DELETE FROM archive_prefs WHERE owner = ?1",
            "DELETE FROM muc_affiliations WHERE account = ?1",
            "DELETE FROM upload_files WHERE owner = ?1",
            "DELETE FROM accounts WHERE username = ?1",
        ] {
            tx.execute(table, [&username])?;
        }
        tx.commit()?;
        // The uploaded files go with their rows (XEP-0363 files are the account's data).
        self.remove_upload_files(&uploads);
        Ok(())
    }

    /// Whether the account exists.
    pub fn account_exists(&self, username: &str) -> Result<bool, StoreError> {
        Ok(account_exists(&self.conn, &normalize_user(username))?)
    }

    /// All usernames, sorted.
    pub fn list_accounts(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT username FROM accounts ORDER BY username")?;
        let names = stmt
            .query_map([], |row| row.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(names)
    }

    /// The SCRAM verifier for `username` and `hash`; `None` if there is no such account.
    pub fn scram(&self, username: &str, hash: Hash) -> Result<Option<ScramKeys>, StoreError> {
        let found = self
            .conn
            .query_row(
                "SELECT salt, iterations, stored_key, server_key FROM scram
                 WHERE username = ?1 AND hash = ?2",
                params![normalize_user(username), hash.name()],
                |row| {
                    Ok(ScramKeys {
                        salt: row.get(0)?,
                        iterations: row.get(1)?,
                        stored_key: row.get(2)?,
                        server_key: row.get(3)?,
                    })
                },
            )
            .optional()?;
        Ok(found)
    }
}

fn put_scram(
    conn: &Connection,
    username: &str,
    hash: Hash,
    keys: &ScramKeys,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO scram (username, hash, salt, iterations, stored_key, server_key)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (username, hash) DO UPDATE SET
             salt = excluded.salt,
             iterations = excluded.iterations,
             stored_key = excluded.stored_key,
             server_key = excluded.server_key",
        params![
            username,
            hash.name(),
            keys.salt,
            keys.iterations,
            keys.stored_key,
            keys.server_key,
        ],
    )?;
    Ok(())
}

fn validate_username(username: &str) -> Result<(), StoreError> {
    let bad = username.is_empty()
        || username
            .chars()
            .any(|c| c == '@' || c == '/' || c.is_whitespace() || c.is_control());
    if bad {
        Err(StoreError::InvalidUsername(username.to_owned()))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
