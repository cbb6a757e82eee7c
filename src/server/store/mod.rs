//! SQLite persistence for the bundled server: accounts, rosters, offline messages, private XML.
//!
//! Everything lives in one SQLite file, `DATA_DIR/server.sqlite`, opened with [`Store::open`].
//!
//! # What is stored
//!
//! | table | one row per | notes |
//! |---|---|---|
//! | `accounts` | user (JID localpart, lowercase) | creation time and the current roster version |
//! | `scram` | user × hash (`SHA-1`, `SHA-256`) | salt, iterations, StoredKey, ServerKey — never a password |
//! | `roster` | owner × contact bare JID | RFC 6121 item: name, subscription, ask, pending-in (+ stanza), groups as JSON |
//! | `roster_version_seq` | (single row) | the source of roster version numbers, see below |
//! | `roster_version_tag` | (single row) | this database's random tag in every roster `ver`, see below |
//! | `offline_messages` | stored stanza (XEP-0160) | `AUTOINCREMENT` id, so ids are never reused |
//! | `private_xml` | owner × `{namespace}element` key (XEP-0049) | the XML text as given |
//! | `vcards` | owner (XEP-0054) | the vCard's XML text as given, and its photo's SHA-1 (XEP-0153) |
//! | `pep_nodes` | owner × node (XEP-0163) | the node's configuration as JSON |
//! | `pep_items` | owner × node × item id | the payload's XML; `seq` orders by publication |
//! | `blocklist` | owner × blocked JID (XEP-0191) | bare, full or domain JID, normalised |
//! | `archive` | archived message × archive owner (XEP-0313) | id given by the hub (`archive_seq`), peer's bare JID, time, the stanza |
//! | `archive_seq` | (single row) | the next archive id, and the mask that turns ids into stanza ids |
//! | `archive_prefs` | owner | XEP-0313 §5 preferences: default, always and never lists as JSON |
//! | `muc_rooms` | persistent room (XEP-0045) | its configuration as JSON, subject, creator |
//! | `muc_affiliations` | room × bare JID | owner, admin, member or outcast; the local account, if it is one |
//! | `room_archive` | archived groupchat message × room bare JID (XEP-0313 on rooms) | like `archive`, its ids from the same counter; no account behind it |
//! | `upload_files` | upload slot or stored file × owner (XEP-0363) | random token, name, size, type, state; the file itself is `DATA_DIR/uploads/TOKEN` |
//!
//! Every per-user table references `accounts(username)` with `ON DELETE CASCADE`, and
//! [`Store::delete_account`] additionally deletes those rows explicitly, in the same transaction,
//! so removal is complete even if some other tool opened the file without `foreign_keys=ON`.
//! Deleting an account leaves *other* users' rosters alone: their items pointing at the deleted
//! JID are theirs to keep or remove (RFC 6121 leaves this to the server; a contact on another
//! server would not be told either), and a re-created account with the same name starts fresh.
//!
//! Usernames given to any method are lowercased before use, so `Alice` and `alice` are the same
//! account; callers should still apply nodeprep first. Contact JIDs are bare JIDs, and are
//! lowercased too (both localpart and domain of a bare JID compare case-insensitively).
//!
//! Reads about an unknown account return "nothing" (`None`, an empty list, version 0); writes
//! for an unknown account fail with [`StoreError::NoSuchAccount`].
//!
//! # Durability
//!
//! The connection runs with `journal_mode=WAL` and `synchronous=FULL` (plus `fullfsync` /
//! `checkpoint_fullfsync`, which only matter on macOS, where a plain `fsync` does not reach the
//! disk platter). In WAL mode, `synchronous=NORMAL` would survive a *process* crash but could
//! lose the last committed transactions on power loss or an OS crash, because the WAL is only
//! synced at checkpoints. With `FULL`, every commit syncs the WAL before returning, so when
//! [`Store::store_offline`] (or any other write) returns `Ok`, the data is on stable storage:
//! the router may then consider an offline message accepted. The cost is one `fsync` per write,
//! which is fine for a chat server of this size. A newly created database file is created with
//! mode `0600` (it holds SCRAM keys; SQLite gives the `-wal`/`-shm` files the same mode) and its
//! directory is synced once so the file itself survives a power cut.
//!
//! The **message archive** (XEP-0313) is the one exception to "every write is on disk when it
//! returns": archiving every message in a transaction of its own would cost an `fsync` per
//! message and cut routing to about a thousand messages a second. The hub keeps the rows it
//! archives in memory and writes them in one transaction ([`Store::append_archive`], a
//! *group commit*) when the hub thread finds its command queue empty, every 2 048 rows
//! under load, and always before anything reads or deletes archive rows (a query, expiry), so
//! a query sees every message routed before it. A power cut or an OS crash therefore loses at
//! most the last unwritten batch of archive rows (the messages themselves were delivered, or
//! stored offline in a transaction of their own); a crash of the process alone loses the same
//! batch. Archive ids come from a counter the hub owns and writes in the same transaction, so
//! an id is never given twice even when a batch is lost.
//!
//! Offline delivery is **at-least-once**: the router reads with [`Store::offline_messages`],
//! sends, and only then calls [`Store::delete_offline`]. A crash between sending and deleting
//! re-delivers those messages on the next login — a duplicate is better than a lost message.
//! Deletion is idempotent (deleting an id twice, or an id that is gone, is not an error), and
//! because ids come from `AUTOINCREMENT` they are never reused, so a late repeated delete can
//! never hit a newer message.
//!
//! # Roster versions
//!
//! Roster versioning (RFC 6121 §2.6, formerly XEP-0237) needs a version per owner that changes
//! on every change to that owner's roster and never comes back for a different roster.
//! [`Store::roster_version`] is a number per owner that increases on every change (every write
//! that changes an item, adds one or removes one). The numbers are drawn from one counter shared
//! by all users (`roster_version_seq`), so they are strictly increasing per owner but not
//! consecutive. The point: if an account is deleted and re-created, the new account can never
//! reach a version that a client cached for the old one, so a stale cache is always detected.
//! A fresh account is at version 0 with an empty roster.
//!
//! The `ver` handed to clients ([`Store::roster_ver`]) is `TAG-NUMBER`, where `TAG` is a random
//! value drawn once per database (`roster_version_tag`). A server whose data directory was
//! wiped starts counting at 0 again; the tag keeps the versions its clients cached from the old
//! database from matching versions of the new one. Both live in the file, so versions survive
//! a restart.
//!
//! # Schema versions
//!
//! The schema version is `PRAGMA user_version`. [`MIGRATIONS`] is an ordered list of SQL batches;
//! batch *i* takes the schema from version *i* to *i + 1*, in one `IMMEDIATE` transaction that
//! also sets `user_version`, so a migration is applied completely or not at all, and two
//! processes opening the file at once cannot both apply it. A file whose version is newer than
//! [`SCHEMA_VERSION`] (written by a newer mqtt2xmpp) is refused with [`crate::sqlite::OpenError::TooNew`]
//! before anything is written to it. To change the schema, append a batch; never edit one that
//! has shipped.
//!
//! # Concurrency
//!
//! [`Store`] wraps one [`rusqlite::Connection`]: it is `Send` but not `Sync`, and its methods are
//! plain blocking calls. The server owns it on a dedicated thread or behind a `Mutex`, and calls
//! it from async code via `tokio::task::spawn_blocking`. Other processes — `mqtt2xmpp user add`
//! while the server runs — open their own [`Store`] on the same file: WAL lets readers and the
//! one writer proceed side by side, every write runs in a `BEGIN IMMEDIATE` transaction (so a
//! writer waits for the lock up front instead of failing half-way), and a busy timeout (5 s by
//! default) makes a writer wait for the other process rather than fail at once. The server
//! reads accounts from the database at each login, so an account added by another process is
//! seen immediately.
//!
//! # Layout
//!
//! One file per kind of data, each adding its methods to [`Store`] with an `impl Store` block:
//! this file (opening, the schema and its migrations, [`StoreError`], the helpers every
//! kind shares), `accounts.rs` (accounts and their SCRAM keys), `roster.rs` (RFC 6121 rosters
//! and subscription requests), `offline.rs` (XEP-0160 offline messages), `private.rs`
//! (XEP-0049 private XML), `vcard.rs` (XEP-0054 vCards), `pep.rs` (XEP-0163 nodes and
//! items) and `blocking.rs` (XEP-0191 block lists). Their tests sit beside them in `tests.rs`
//! files.
//!
//! The SCRAM types are not the store's own: [`Hash`](enum@Hash) and [`ScramKeys`] belong to
//! the SASL code (`crate::server::sasl`), which derives and checks them. The store keeps them
//! as they are (the `scram.hash` column holds `Hash::name`, `SHA-1` or `SHA-256`), so a login
//! hands the keys read here straight to the exchange.
//!
//! # Adding a service's tables
//!
//! The coming services (PEP, vCard, MAM, blocking, rooms) each bring tables of their own. A
//! service adds them in four steps:
//!
//! 1. **A migration.** Append one SQL batch to [`MIGRATIONS`] that creates the tables and
//!    indexes. Never edit a batch that has shipped: databases in the field are at its version
//!    and would never see the change. [`SCHEMA_VERSION`] follows by itself, and an existing
//!    database gets the new batch the next time it is opened (the tests open a database written
//!    at schema version 1 and check that it ends up with exactly the schema of a new one).
//! 2. **Account removal.** Every per-user table references `accounts(username) ON DELETE
//!    CASCADE`, and [`Store::delete_account`] deletes its rows explicitly too, in the same
//!    transaction (see above for why).
//! 3. **A file of its own** here, e.g. `pep.rs`, with its methods in an `impl Store` block:
//!    usernames go through `normalize_user`, writes run in `self.write()` (an `IMMEDIATE`
//!    transaction) and check the account with `require_account`, reads about an unknown account
//!    return "nothing". Its row types live in that file and are re-exported from this one.
//! 4. **Its tests** in a `tests.rs` beside that file, and its table in the table above.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, Transaction, TransactionBehavior};
use thiserror::Error;

pub use crate::server::sasl::{Hash, ScramKeys};
pub use archive::{ArchiveDefault, ArchiveFilter, ArchivePage, ArchivePrefs, ArchiveRow, Paging};
pub use muc::StoredRoom;
pub use pep::{AccessModel, PepItem, PepNodeConfig, SendLastItem};
pub use roster::{RosterItem, Subscription};
pub use upload::{NewSlot, UploadState};

mod accounts;
mod archive;
mod blocking;
mod muc;
mod offline;
mod pep;
mod private;
mod room_archive;
mod roster;
mod upload;
mod vcard;

/// Schema migrations, in order: entry *i* upgrades a database at `user_version` *i* to *i + 1*.
///
/// Append only; a batch that has shipped must never change.
pub const MIGRATIONS: &[&str] = &[
    // 0 → 1: the initial schema.
    "CREATE TABLE accounts (
        username       TEXT PRIMARY KEY NOT NULL,
        created_at     INTEGER NOT NULL,
        roster_version INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE scram (
        username   TEXT NOT NULL REFERENCES accounts(username) ON DELETE CASCADE,
        hash       TEXT NOT NULL,
        salt       BLOB NOT NULL,
        iterations INTEGER NOT NULL,
        stored_key BLOB NOT NULL,
        server_key BLOB NOT NULL,
        PRIMARY KEY (username, hash)
    );
    CREATE TABLE roster (
        owner             TEXT NOT NULL REFERENCES accounts(username) ON DELETE CASCADE,
        jid               TEXT NOT NULL,
        name              TEXT,
        subscription      TEXT NOT NULL CHECK (subscription IN ('none', 'to', 'from', 'both')),
        ask               INTEGER NOT NULL DEFAULT 0,
        pending_in        INTEGER NOT NULL DEFAULT 0,
        pending_in_stanza TEXT,
        groups_json       TEXT NOT NULL DEFAULT '[]',
        PRIMARY KEY (owner, jid)
    );
    CREATE TABLE roster_version_seq (
        id    INTEGER PRIMARY KEY CHECK (id = 0),
        value INTEGER NOT NULL
    );
    INSERT INTO roster_version_seq (id, value) VALUES (0, 0);
    CREATE TABLE offline_messages (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,
        owner     TEXT NOT NULL REFERENCES accounts(username) ON DELETE CASCADE,
        stanza    TEXT NOT NULL,
        stored_at INTEGER NOT NULL
    );
    CREATE INDEX offline_messages_by_owner ON offline_messages (owner, id);
    CREATE TABLE private_xml (
        owner    TEXT NOT NULL REFERENCES accounts(username) ON DELETE CASCADE,
        item_key TEXT NOT NULL,
        xml      TEXT NOT NULL,
        PRIMARY KEY (owner, item_key)
    );",
    // 1 → 2: the tag that makes roster versions unique to this database (see "Roster
    // versions" above), drawn once, when the database is created or upgraded.
    "CREATE TABLE roster_version_tag (
        id    INTEGER PRIMARY KEY CHECK (id = 0),
        value TEXT NOT NULL
    );
    INSERT INTO roster_version_tag (id, value) VALUES (0, lower(hex(randomblob(8))));",
    // 2 → 3: vCards (XEP-0054), one per account, with the SHA-1 of the photo (XEP-0153) that
    // every available presence of the account carries.
    "CREATE TABLE vcards (
        owner      TEXT PRIMARY KEY NOT NULL REFERENCES accounts(username) ON DELETE CASCADE,
        xml        TEXT NOT NULL,
        photo_hash TEXT
    );",
    // 3 → 4: PEP (XEP-0163): each account's nodes and their items (see `pep.rs`).
    "CREATE TABLE pep_nodes (
        owner   TEXT NOT NULL REFERENCES accounts(username) ON DELETE CASCADE,
        node    TEXT NOT NULL,
        config  TEXT NOT NULL,
        persist INTEGER NOT NULL DEFAULT 1,
        PRIMARY KEY (owner, node)
    );
    CREATE TABLE pep_items (
        seq          INTEGER PRIMARY KEY AUTOINCREMENT,
        owner        TEXT NOT NULL,
        node         TEXT NOT NULL,
        item_id      TEXT NOT NULL,
        payload      TEXT NOT NULL,
        published_at INTEGER NOT NULL,
        UNIQUE (owner, node, item_id),
        FOREIGN KEY (owner, node) REFERENCES pep_nodes (owner, node) ON DELETE CASCADE
    );
    CREATE INDEX pep_items_by_node ON pep_items (owner, node, seq);",
    // 4 → 5: block lists (XEP-0191), one row per owner and blocked JID.
    "CREATE TABLE blocklist (
        owner TEXT NOT NULL REFERENCES accounts(username) ON DELETE CASCADE,
        jid   TEXT NOT NULL,
        PRIMARY KEY (owner, jid)
    ) WITHOUT ROWID;",
    // 5 → 6: the message archive (XEP-0313, see `archive.rs`): one row per message and archive,
    // its ids given by the hub from `archive_seq`, and each account's preferences.
    "CREATE TABLE archive (
        id       INTEGER PRIMARY KEY,
        owner    TEXT NOT NULL REFERENCES accounts(username) ON DELETE CASCADE,
        with_jid TEXT NOT NULL,
        stamp_ms INTEGER NOT NULL,
        stanza   TEXT NOT NULL
    );
    CREATE INDEX archive_by_owner ON archive (owner, id);
    CREATE TABLE archive_seq (
        id    INTEGER PRIMARY KEY CHECK (id = 0),
        next  INTEGER NOT NULL,
        mask  INTEGER NOT NULL
    );
    INSERT INTO archive_seq (id, next, mask) VALUES (0, 1, random());
    CREATE TABLE archive_prefs (
        owner        TEXT PRIMARY KEY NOT NULL REFERENCES accounts(username) ON DELETE CASCADE,
        default_mode TEXT NOT NULL CHECK (default_mode IN ('always', 'never', 'roster')),
        always_json  TEXT NOT NULL DEFAULT '[]',
        never_json   TEXT NOT NULL DEFAULT '[]'
    );",
    // 6 → 7: persistent rooms (XEP-0045, see `muc.rs`) and their affiliations; an
    // affiliation of a local account goes with the account.
    "CREATE TABLE muc_rooms (
        jid        TEXT PRIMARY KEY NOT NULL,
        creator    TEXT NOT NULL,
        config     TEXT NOT NULL,
        subject    TEXT,
        subject_by TEXT
    );
    CREATE TABLE muc_affiliations (
        room        TEXT NOT NULL REFERENCES muc_rooms(jid) ON DELETE CASCADE,
        jid         TEXT NOT NULL,
        affiliation TEXT NOT NULL CHECK (affiliation IN ('owner', 'admin', 'member', 'outcast')),
        account     TEXT REFERENCES accounts(username) ON DELETE CASCADE,
        PRIMARY KEY (room, jid)
    ) WITHOUT ROWID;
    CREATE INDEX muc_affiliations_by_account ON muc_affiliations (account);",
    // 7 → 8: rooms' archives (XEP-0313 on a room's bare JID, see `room_archive.rs`): the
    // groupchat messages of each room, with ids from `archive_seq` like the accounts' rows.
    "CREATE TABLE room_archive (
        id       INTEGER PRIMARY KEY,
        owner    TEXT NOT NULL,
        with_jid TEXT NOT NULL,
        stamp_ms INTEGER NOT NULL,
        stanza   TEXT NOT NULL
    );
    CREATE INDEX room_archive_by_owner ON room_archive (owner, id);",
    // 8 → 9: HTTP File Upload (XEP-0363, see `upload.rs`): slots handed out and files
    // stored, so that quotas and expiry survive a restart; the files go with the account.
    "CREATE TABLE upload_files (
        token        TEXT PRIMARY KEY NOT NULL,
        owner        TEXT NOT NULL REFERENCES accounts(username) ON DELETE CASCADE,
        filename     TEXT NOT NULL,
        size         INTEGER NOT NULL,
        content_type TEXT,
        state        TEXT NOT NULL CHECK (state IN ('slot', 'receiving', 'stored')),
        created_ms   INTEGER NOT NULL,
        stored_ms    INTEGER
    ) WITHOUT ROWID;
    CREATE INDEX upload_files_by_owner ON upload_files (owner);",
];

/// The schema version this code writes and understands: the number of [`MIGRATIONS`].
#[cfg(test)]
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Default for [`StoreOptions::max_offline_per_user`].
pub const DEFAULT_MAX_OFFLINE_PER_USER: usize = 1000;

/// Default for [`StoreOptions::busy_timeout`].
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a store operation failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// [`Store::create_account`] for a username that is taken.
    #[error("account {0} already exists")]
    AlreadyExists(String),
    /// A write for an account that does not exist.
    #[error("no such account: {0}")]
    NoSuchAccount(String),
    /// [`Store::create_account`] with a username that cannot be a JID localpart.
    #[error("invalid username {0:?}: it must be non-empty, without '@', '/', spaces or control characters")]
    InvalidUsername(String),
    /// The user already has [`StoreOptions::max_offline_per_user`] offline messages; the router
    /// should bounce the message with `<resource-constraint/>`.
    #[error("offline storage for {user} is full ({max} messages)")]
    OfflineFull {
        /// The recipient (lowercased username).
        user: String,
        /// The configured limit.
        max: usize,
    },
    /// The database could not be opened, created, or migrated (or is newer than this code).
    #[error(transparent)]
    Open(#[from] crate::sqlite::OpenError),
    /// Any other SQLite failure, including a busy database after the busy timeout.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// Settings for [`Store::open_with_options`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Most offline messages kept per user; [`Store::store_offline`] fails with
    /// [`StoreError::OfflineFull`] beyond that. 0 disables offline storage.
    pub max_offline_per_user: usize,
    /// How long a write waits for another connection (another process) to release the lock.
    pub busy_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_offline_per_user: DEFAULT_MAX_OFFLINE_PER_USER,
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
        }
    }
}

/// The server's database: one SQLite connection. See the module documentation for the design.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    max_offline_per_user: usize,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("max_offline_per_user", &self.max_offline_per_user)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating and migrating if needed) the database at `path` with default options.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with_options(path, &StoreOptions::default())
    }

    /// Opens (creating and migrating if needed) the database at `path`.
    ///
    /// The parent directory must exist. A new file is created with mode `0600` on Unix.
    pub fn open_with_options(
        path: impl AsRef<Path>,
        options: &StoreOptions,
    ) -> Result<Self, StoreError> {
        let (conn, path) =
            crate::sqlite::open(Some(path.as_ref()), options.busy_timeout, MIGRATIONS)?;
        Ok(Self::with(conn, path, options))
    }

    /// A private in-memory database with default options, for tests and fuzzing.
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::open_in_memory_with_options(&StoreOptions::default())
    }

    /// A private in-memory database, for tests and fuzzing.
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn open_in_memory_with_options(options: &StoreOptions) -> Result<Self, StoreError> {
        let (conn, path) = crate::sqlite::open(None, options.busy_timeout, MIGRATIONS)?;
        Ok(Self::with(conn, path, options))
    }

    /// The whole database as bytes, for [`Store::from_image`]. Fuzzing only: the fuzz target
    /// builds its accounts once and starts every input from a copy of them.
    #[cfg(feature = "fuzzing")]
    pub fn image(&mut self) -> Result<Vec<u8>, StoreError> {
        Ok(self.conn.serialize(rusqlite::MAIN_DB)?.to_vec())
    }

    /// A private in-memory store holding a copy of [`Store::image`]'s bytes. Fuzzing only.
    #[cfg(feature = "fuzzing")]
    pub fn from_image(image: &[u8]) -> Result<Self, StoreError> {
        // Only the setting that changes what queries do; the journal and sync settings of
        // `sqlite::open` mean nothing in memory.
        let mut conn = Connection::open_in_memory()?;
        conn.pragma_update(None, "foreign_keys", true)?;
        conn.deserialize_read_exact(rusqlite::MAIN_DB, image, image.len(), false)?;
        Ok(Self::with(
            conn,
            ":memory:".into(),
            &StoreOptions::default(),
        ))
    }

    fn with(conn: Connection, path: PathBuf, options: &StoreOptions) -> Self {
        Self {
            conn,
            path,
            max_offline_per_user: options.max_offline_per_user,
        }
    }

    /// A write transaction that takes the database lock at once (waiting up to the busy
    /// timeout), so it never fails half-way because another process wrote in between.
    fn write(&self) -> Result<Transaction<'_>, StoreError> {
        Ok(Transaction::new_unchecked(
            &self.conn,
            TransactionBehavior::Immediate,
        )?)
    }
}

fn account_exists(conn: &Connection, username: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM accounts WHERE username = ?1)",
        [username],
        |row| row.get(0),
    )
}

fn require_account(conn: &Connection, username: &str) -> Result<(), StoreError> {
    if account_exists(conn, username)? {
        Ok(())
    } else {
        Err(StoreError::NoSuchAccount(username.to_owned()))
    }
}

fn normalize_user(username: &str) -> String {
    username.to_lowercase()
}

fn normalize_jid(jid: &str) -> String {
    jid.to_lowercase()
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests;
