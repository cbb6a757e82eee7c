//! What the bundled server's store and the bot's state database share: a database file only its
//! owner can read, and versioned schema migrations.
//!
//! The schema version is `PRAGMA user_version`; `migrations` is an ordered list of SQL batches,
//! entry *i* upgrading version *i* to *i + 1*. Each batch runs in its own `IMMEDIATE`
//! transaction that re-reads the version under the lock and sets the new one, so a migration is
//! applied completely or not at all, and two processes opening the same file apply it once.

use std::path::Path;

use rusqlite::{Connection, Transaction, TransactionBehavior};

/// The schema version stored in the file.
pub(crate) fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

/// Applies the missing `migrations`. `check` refuses a version this program does not know (a
/// newer one); `sqlite_error` wraps SQLite's errors in the caller's error type.
pub(crate) fn migrate<E>(
    conn: &Connection,
    migrations: &[&str],
    check: impl Fn(i64) -> Result<(), E>,
    sqlite_error: impl Fn(rusqlite::Error) -> E,
) -> Result<(), E> {
    let latest = i64::try_from(migrations.len()).unwrap_or(i64::MAX);
    if user_version(conn).map_err(&sqlite_error)? == latest {
        return Ok(());
    }
    for (from, batch) in (0_i64..).zip(migrations) {
        let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)
            .map_err(&sqlite_error)?;
        let current = user_version(&tx).map_err(&sqlite_error)?;
        check(current)?;
        if current != from {
            continue; // already applied (by us earlier in this loop, or by another process)
        }
        tx.execute_batch(batch).map_err(&sqlite_error)?;
        tx.pragma_update(None, "user_version", from + 1)
            .map_err(&sqlite_error)?;
        tx.commit().map_err(&sqlite_error)?;
    }
    Ok(())
}

/// Creates `path` as an empty file readable only by its owner, unless it exists, and syncs its
/// directory so the new entry survives a power cut. SQLite treats an empty file as an empty
/// database, and creates its `-wal` and `-shm` files with the same permissions.
#[cfg(unix)]
pub(crate) fn create_private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(file) => {
            file.sync_all()?;
            let dir = match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir,
                _ => Path::new("."),
            };
            std::fs::File::open(dir)?.sync_all()
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Elsewhere SQLite creates the file itself, with default permissions.
#[cfg(not(unix))]
pub(crate) fn create_private_file(_path: &Path) -> std::io::Result<()> {
    Ok(())
}
