//! What the bundled server's store and the bot's state database share: opening a database file
//! only its owner can read, with the same durability settings, and versioned schema migrations.
//!
//! Settings: `journal_mode=WAL` (readers and the writer do not block each other; a file system
//! without shared memory falls back to a rollback journal, with a warning), `synchronous=FULL`
//! (a committed transaction survives a power cut, not just a crash), foreign keys on, and a busy
//! timeout for another process holding the lock.
//!
//! The schema version is `PRAGMA user_version`; `migrations` is an ordered list of SQL batches,
//! entry *i* upgrading version *i* to *i + 1*. Each batch runs in its own `IMMEDIATE`
//! transaction that re-reads the version under the lock and sets the new one, so a migration is
//! applied completely or not at all, and two processes opening the same file apply it once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};
use thiserror::Error;

/// Why a database could not be opened.
#[derive(Debug, Error)]
pub enum OpenError {
    /// The file was written by a newer mqtt2xmpp with a schema this code does not know.
    #[error(
        "{path} has schema version {found}, but this mqtt2xmpp only knows up to version \
         {supported}: it was written by a newer mqtt2xmpp; run that version, use another file, \
         or restore a backup"
    )]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// The `user_version` found in the file.
        found: i64,
        /// The newest version this code knows.
        supported: u32,
    },
    /// The database file could not be opened, configured or migrated.
    #[error("cannot open database {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// What SQLite said (for example "file is not a database").
        source: rusqlite::Error,
    },
    /// The database file could not be created.
    #[error("cannot create database file {path}: {source}")]
    Io {
        /// The database file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
}

/// Opens the database at `path` (creating it, mode 0600), or a private in-memory one for
/// `None`, configures it, refuses a schema newer than `migrations` know before writing
/// anything, and applies the missing migrations. Returns the connection and the path for
/// messages (`:memory:` in memory).
pub(crate) fn open(
    path: Option<&Path>,
    busy_timeout: Duration,
    migrations: &[&str],
) -> Result<(Connection, PathBuf), OpenError> {
    let name = path.map_or_else(|| PathBuf::from(":memory:"), Path::to_path_buf);
    let sqlite_error = |source| OpenError::Sqlite {
        path: name.clone(),
        source,
    };
    let conn = match path {
        Some(path) => {
            create_private_file(path).map_err(|source| OpenError::Io {
                path: name.clone(),
                source,
            })?;
            let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX;
            Connection::open_with_flags(path, flags).map_err(sqlite_error)?
        }
        None => Connection::open_in_memory().map_err(sqlite_error)?,
    };
    conn.busy_timeout(busy_timeout).map_err(sqlite_error)?;
    let supported = u32::try_from(migrations.len()).unwrap_or(u32::MAX);
    let check = |found: i64| {
        if found < 0 || found > i64::from(supported) {
            return Err(OpenError::TooNew {
                path: name.clone(),
                found,
                supported,
            });
        }
        Ok(())
    };
    // Refuse a newer schema before writing anything, not even the journal mode.
    check(user_version(&conn).map_err(sqlite_error)?)?;
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(sqlite_error)?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(sqlite_error)?;
    if path.is_some() && !mode.eq_ignore_ascii_case("wal") {
        // Still durable (rollback journal + synchronous=FULL), but readers and the writer
        // block each other; happens on file systems without shared-memory support.
        tracing::warn!(
            "{}: cannot use WAL mode (journal mode is {mode}); access will be slower",
            name.display()
        );
    }
    for (pragma, value) in [
        ("synchronous", "FULL"),
        ("fullfsync", "ON"),
        ("checkpoint_fullfsync", "ON"),
    ] {
        conn.pragma_update(None, pragma, value)
            .map_err(sqlite_error)?;
    }
    migrate(&conn, migrations, check, sqlite_error)?;
    Ok((conn, name))
}

/// The schema version stored in the file.
pub(crate) fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

/// Applies the missing `migrations`. `check` refuses a version this program does not know (a
/// newer one); `sqlite_error` wraps SQLite's errors in the caller's error type.
fn migrate<E>(
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
fn create_private_file(path: &Path) -> std::io::Result<()> {
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
fn create_private_file(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIGRATIONS: &[&str] = &[
        "CREATE TABLE a (x INTEGER NOT NULL);",
        "ALTER TABLE a ADD COLUMN y TEXT; INSERT INTO a (x, y) VALUES (1, 'migrated');",
    ];
    const BUSY: Duration = Duration::from_secs(5);

    fn pragma(conn: &Connection, name: &str) -> String {
        conn.pragma_query_value(None, name, |row| row.get::<_, rusqlite::types::Value>(0))
            .map(|v| match v {
                rusqlite::types::Value::Integer(i) => i.to_string(),
                rusqlite::types::Value::Text(s) => s,
                other => format!("{other:?}"),
            })
            .unwrap()
    }

    #[test]
    fn on_disk_settings_are_durable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let (conn, name) = open(Some(&path), BUSY, MIGRATIONS).unwrap();
        assert_eq!(pragma(&conn, "journal_mode"), "wal");
        assert_eq!(pragma(&conn, "synchronous"), "2"); // FULL
        assert_eq!(pragma(&conn, "foreign_keys"), "1");
        assert_eq!(pragma(&conn, "busy_timeout"), "5000");
        assert_eq!(pragma(&conn, "fullfsync"), "1");
        assert_eq!(pragma(&conn, "checkpoint_fullfsync"), "1");
        assert_eq!(name, path);
    }

    #[test]
    fn migrations_run_once_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let (conn, _) = open(Some(&path), BUSY, &MIGRATIONS[..1]).unwrap();
        assert_eq!(user_version(&conn).unwrap(), 1);
        drop(conn);
        // An upgrade applies only the new batch; opening again applies nothing.
        for _ in 0..2 {
            let (conn, _) = open(Some(&path), BUSY, MIGRATIONS).unwrap();
            assert_eq!(user_version(&conn).unwrap(), 2);
            let rows: Vec<(i64, String)> = conn
                .prepare("SELECT x, y FROM a")
                .unwrap()
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(rows, [(1, "migrated".to_string())]);
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_new_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let (conn, _) = open(Some(&path), BUSY, MIGRATIONS).unwrap();
        conn.execute("INSERT INTO a (x) VALUES (2)", []).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let wal = std::fs::metadata(dir.path().join("db.sqlite-wal")).unwrap();
        assert_eq!(wal.permissions().mode() & 0o077, 0);
    }

    #[test]
    fn a_newer_schema_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        drop(open(Some(&path), BUSY, MIGRATIONS).unwrap());
        {
            let raw = Connection::open(&path).unwrap();
            raw.pragma_update(None, "journal_mode", "DELETE").unwrap();
            raw.pragma_update(None, "user_version", 7).unwrap();
        }
        let err = open(Some(&path), BUSY, MIGRATIONS).unwrap_err();
        assert!(
            matches!(
                &err,
                OpenError::TooNew {
                    found: 7,
                    supported: 2,
                    ..
                }
            ),
            "{err}"
        );
        let message = err.to_string();
        assert!(
            message.contains("db.sqlite")
                && message.contains("version 7")
                && message.contains("newer mqtt2xmpp"),
            "{message}"
        );
        // Nothing was changed: not even the journal mode.
        let raw = Connection::open(&path).unwrap();
        assert_eq!(pragma(&raw, "journal_mode"), "delete");
    }
}
