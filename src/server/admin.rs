//! `mqtt2xmpp user add|del|list|passwd`: account administration on the server's database, safe
//! to use while the server runs (SQLite in WAL mode with a busy timeout; the server reads
//! credentials at each login, so a new password applies to the next login).

use std::path::Path;

use thiserror::Error;
use tokio_xmpp::jid::BareJid;

use super::sasl::{self, Hash, SaslError, ScramKeys};
use super::store::{Store, StoreError};
use crate::secret::Secret;

/// Why an administration command failed.
#[derive(Debug, Error)]
pub enum AdminError {
    /// Not a `user@domain` address.
    #[error("{0:?} is not an account address like alice@localhost")]
    BadJid(String),
    /// The password cannot be used (SASLprep refused it, or it is empty).
    #[error("unusable password: {0}")]
    Password(#[from] SaslError),
    /// The database refused.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The localpart of `jid` (`alice@localhost` → `alice`), normalised (nodeprep, lowercase).
pub fn username(jid: &str) -> Result<String, AdminError> {
    let bare = BareJid::new(jid).map_err(|_| AdminError::BadJid(jid.to_string()))?;
    let node = bare
        .node()
        .ok_or_else(|| AdminError::BadJid(jid.to_string()))?;
    Ok(node.as_str().to_lowercase())
}

/// Fresh SCRAM-SHA-1 and SCRAM-SHA-256 keys for `password`, each with its own random salt.
fn keys(password: &Secret) -> Result<(ScramKeys, ScramKeys), AdminError> {
    Ok((
        sasl::new_keys(password.expose(), Hash::Sha1)?,
        sasl::new_keys(password.expose(), Hash::Sha256)?,
    ))
}

/// Creates an account; only salted SCRAM keys are stored, never the password.
pub fn add(database: &Path, jid: &str, password: &Secret) -> Result<(), AdminError> {
    let user = username(jid)?;
    let (sha1, sha256) = keys(password)?;
    Store::open(database)?.create_account(&user, &sha1, &sha256)?;
    Ok(())
}

/// Replaces an account's password.
pub fn passwd(database: &Path, jid: &str, password: &Secret) -> Result<(), AdminError> {
    let user = username(jid)?;
    let (sha1, sha256) = keys(password)?;
    Store::open(database)?.set_credentials(&user, &sha1, &sha256)?;
    Ok(())
}

/// Deletes an account with its roster, offline messages and private data.
pub fn del(database: &Path, jid: &str) -> Result<(), AdminError> {
    let user = username(jid)?;
    Store::open(database)?.delete_account(&user)?;
    Ok(())
}

/// Every account's localpart, sorted.
pub fn list(database: &Path) -> Result<Vec<String>, AdminError> {
    Ok(Store::open(database)?.list_accounts()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_list_passwd_del() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("server.sqlite");
        add(&db, "Alice@localhost", &Secret::new("one")).unwrap();
        add(&db, "bob@localhost", &Secret::new("two")).unwrap();
        assert_eq!(list(&db).unwrap(), ["alice", "bob"]);
        assert!(matches!(
            add(&db, "alice@localhost", &Secret::new("x")),
            Err(AdminError::Store(StoreError::AlreadyExists(_)))
        ));
        passwd(&db, "alice@localhost", &Secret::new("three")).unwrap();
        del(&db, "bob@localhost").unwrap();
        assert_eq!(list(&db).unwrap(), ["alice"]);
        assert!(matches!(username("localhost"), Err(AdminError::BadJid(_))));
    }
}
