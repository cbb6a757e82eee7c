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
//! | `offline_messages` | stored stanza (XEP-0160) | `AUTOINCREMENT` id, so ids are never reused |
//! | `private_xml` | owner × `{namespace}element` key (XEP-0049) | the XML text as given |
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
//! Offline delivery is **at-least-once**: the router reads with [`Store::offline_messages`],
//! sends, and only then calls [`Store::delete_offline`]. A crash between sending and deleting
//! re-delivers those messages on the next login — a duplicate is better than a lost message.
//! Deletion is idempotent (deleting an id twice, or an id that is gone, is not an error), and
//! because ids come from `AUTOINCREMENT` they are never reused, so a late repeated delete can
//! never hit a newer message.
//!
//! # Roster versions
//!
//! [`Store::roster_version`] is a number per owner that increases on every change to that
//! owner's roster, for XEP-0237 roster versioning. The numbers are drawn from one counter shared
//! by all users (`roster_version_seq`), so they are strictly increasing per owner but not
//! consecutive. The point: if an account is deleted and re-created, the new account can never
//! reach a version that a client cached for the old one, so a stale cache is always detected.
//! A fresh account is at version 0 with an empty roster.
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

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::types::Type;
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction, TransactionBehavior};
use thiserror::Error;

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
];

/// The schema version this code writes and understands: the number of [`MIGRATIONS`].
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

/// Which SCRAM hash a set of keys belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScramHash {
    /// SCRAM-SHA-1 (and -PLUS).
    Sha1,
    /// SCRAM-SHA-256 (and -PLUS).
    Sha256,
}

impl ScramHash {
    /// The name stored in the `scram.hash` column: `SHA-1` or `SHA-256`.
    pub fn as_str(self) -> &'static str {
        match self {
            ScramHash::Sha1 => "SHA-1",
            ScramHash::Sha256 => "SHA-256",
        }
    }
}

/// SCRAM verifier for one account and one hash (RFC 5802): what the server needs to check a
/// login, and not enough to log in elsewhere. `Debug` prints only the salt length and iterations.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredScram {
    /// The random salt.
    pub salt: Vec<u8>,
    /// PBKDF2 iteration count.
    pub iterations: u32,
    /// `H(ClientKey)`.
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: Vec<u8>,
}

impl fmt::Debug for StoredScram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredScram")
            .field("salt_len", &self.salt.len())
            .field("iterations", &self.iterations)
            .field("stored_key", &"***")
            .field("server_key", &"***")
            .finish()
    }
}

/// A roster subscription state (RFC 6121 §2.1.2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Subscription {
    /// Neither side sees the other's presence.
    #[default]
    None,
    /// The owner sees the contact's presence.
    To,
    /// The contact sees the owner's presence.
    From,
    /// Both see each other's presence.
    Both,
}

impl Subscription {
    /// The attribute value: `none`, `to`, `from` or `both`.
    pub fn as_str(self) -> &'static str {
        match self {
            Subscription::None => "none",
            Subscription::To => "to",
            Subscription::From => "from",
            Subscription::Both => "both",
        }
    }

    /// Parses an attribute value as written by [`Subscription::as_str`]; `None` for anything
    /// else (including `remove`, which is a request, not a state).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(Subscription::None),
            "to" => Some(Subscription::To),
            "from" => Some(Subscription::From),
            "both" => Some(Subscription::Both),
            _ => None,
        }
    }
}

/// One roster item (RFC 6121 §2.1): the owner's view of one contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosterItem {
    /// The contact's bare JID (stored lowercased).
    pub jid: String,
    /// The owner's name for the contact, if any.
    pub name: Option<String>,
    /// The subscription state.
    pub subscription: Subscription,
    /// The owner asked to see the contact's presence and the contact has not answered
    /// ("Pending Out", sent to clients as `ask='subscribe'`).
    pub ask: bool,
    /// The contact asked to see the owner's presence and the owner has not answered
    /// ("Pending In"). Never sent to clients as an attribute; the stored request stanza is
    /// re-delivered instead, see [`Store::pending_subscription_requests`].
    pub pending_in: bool,
    /// The groups the owner filed the contact under.
    pub groups: Vec<String>,
}

impl RosterItem {
    /// An item for `jid` with no name, no groups, subscription `none` and nothing pending.
    pub fn new(jid: impl Into<String>) -> Self {
        Self {
            jid: jid.into(),
            name: None,
            subscription: Subscription::None,
            ask: false,
            pending_in: false,
            groups: Vec::new(),
        }
    }

    /// True for an item that exists only to remember an unanswered inbound subscription request
    /// (subscription `none`, no `ask`, no name, no groups). Such items are best left out of a
    /// roster result, as ejabberd does: the owner never added that contact.
    pub fn is_pending_in_only(&self) -> bool {
        self.pending_in
            && self.subscription == Subscription::None
            && !self.ask
            && self.name.is_none()
            && self.groups.is_empty()
    }
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

    /// A private in-memory database with default options, for tests.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::open_in_memory_with_options(&StoreOptions::default())
    }

    /// A private in-memory database, for tests.
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

    /// The database file (`:memory:` for an in-memory store).
    pub fn path(&self) -> &Path {
        &self.path
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

    // ----- accounts -------------------------------------------------------------------------

    /// Creates an account with both SCRAM verifiers.
    ///
    /// Fails with [`StoreError::AlreadyExists`] if the (lowercased) name is taken, and
    /// [`StoreError::InvalidUsername`] if it cannot be a JID localpart.
    pub fn create_account(
        &self,
        username: &str,
        sha1: &StoredScram,
        sha256: &StoredScram,
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
        put_scram(&tx, &username, ScramHash::Sha1, sha1)?;
        put_scram(&tx, &username, ScramHash::Sha256, sha256)?;
        tx.commit()?;
        Ok(())
    }

    /// Replaces both SCRAM verifiers of an existing account (a password change).
    pub fn set_credentials(
        &self,
        username: &str,
        sha1: &StoredScram,
        sha256: &StoredScram,
    ) -> Result<(), StoreError> {
        let username = normalize_user(username);
        let tx = self.write()?;
        require_account(&tx, &username)?;
        put_scram(&tx, &username, ScramHash::Sha1, sha1)?;
        put_scram(&tx, &username, ScramHash::Sha256, sha256)?;
        tx.commit()?;
        Ok(())
    }

    /// Deletes an account with its credentials, roster, offline messages and private data, in
    /// one transaction. Other users' roster items for this user are left alone.
    pub fn delete_account(&self, username: &str) -> Result<(), StoreError> {
        let username = normalize_user(username);
        let tx = self.write()?;
        require_account(&tx, &username)?;
        for table in [
            "DELETE FROM scram WHERE username = ?1",
            "DELETE FROM roster WHERE owner = ?1",
            "DELETE FROM offline_messages WHERE owner = ?1",
            "DELETE FROM private_xml WHERE owner = ?1",
            "DELETE FROM accounts WHERE username = ?1",
        ] {
            tx.execute(table, [&username])?;
        }
        tx.commit()?;
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
    pub fn scram(
        &self,
        username: &str,
        hash: ScramHash,
    ) -> Result<Option<StoredScram>, StoreError> {
        let found = self
            .conn
            .query_row(
                "SELECT salt, iterations, stored_key, server_key FROM scram
                 WHERE username = ?1 AND hash = ?2",
                params![normalize_user(username), hash.as_str()],
                |row| {
                    Ok(StoredScram {
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

    // ----- rosters --------------------------------------------------------------------------

    /// The owner's whole roster, sorted by contact JID (including pending-in-only items, see
    /// [`RosterItem::is_pending_in_only`]).
    pub fn roster(&self, owner: &str) -> Result<Vec<RosterItem>, StoreError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {ROSTER_COLUMNS} FROM roster WHERE owner = ?1 ORDER BY jid"
        ))?;
        let items = stmt
            .query_map([normalize_user(owner)], row_to_item)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(items)
    }

    /// One roster item, if the owner has one for `contact` (a bare JID).
    pub fn roster_item(
        &self,
        owner: &str,
        contact: &str,
    ) -> Result<Option<RosterItem>, StoreError> {
        Ok(get_item(
            &self.conn,
            &normalize_user(owner),
            &normalize_jid(contact),
        )?)
    }

    /// Inserts or replaces the owner's item for `item.jid`. Returns whether anything changed;
    /// only then is the roster version bumped (and a roster push due).
    ///
    /// Setting `pending_in` to false forgets the stored subscription request stanza; keeping it
    /// true keeps the stanza. Use [`Store::record_subscription_request`] to store one.
    pub fn upsert_roster_item(&self, owner: &str, item: &RosterItem) -> Result<bool, StoreError> {
        let owner = normalize_user(owner);
        let item = RosterItem {
            jid: normalize_jid(&item.jid),
            ..item.clone()
        };
        let groups = serde_json::to_string(&item.groups)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        let tx = self.write()?;
        require_account(&tx, &owner)?;
        if get_item(&tx, &owner, &item.jid)?.as_ref() == Some(&item) {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO roster (owner, jid, name, subscription, ask, pending_in, groups_json)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (owner, jid) DO UPDATE SET
                 name = excluded.name,
                 subscription = excluded.subscription,
                 ask = excluded.ask,
                 pending_in = excluded.pending_in,
                 pending_in_stanza = CASE WHEN excluded.pending_in THEN pending_in_stanza END,
                 groups_json = excluded.groups_json",
            params![
                owner,
                item.jid,
                item.name,
                item.subscription.as_str(),
                item.ask,
                item.pending_in,
                groups,
            ],
        )?;
        bump_roster_version(&tx, &owner)?;
        tx.commit()?;
        Ok(true)
    }

    /// Removes the owner's item for `contact`. Returns false if there was none (or no such
    /// account); the roster version is bumped only when an item was removed.
    pub fn remove_roster_item(&self, owner: &str, contact: &str) -> Result<bool, StoreError> {
        let owner = normalize_user(owner);
        let tx = self.write()?;
        let removed = tx.execute(
            "DELETE FROM roster WHERE owner = ?1 AND jid = ?2",
            params![owner, normalize_jid(contact)],
        )?;
        if removed == 0 {
            return Ok(false);
        }
        bump_roster_version(&tx, &owner)?;
        tx.commit()?;
        Ok(true)
    }

    /// The owner's roster version (XEP-0237): 0 for a new account or an unknown one, then
    /// strictly increasing with every change. See the module documentation.
    pub fn roster_version(&self, owner: &str) -> Result<u64, StoreError> {
        let version: Option<i64> = self
            .conn
            .query_row(
                "SELECT roster_version FROM accounts WHERE username = ?1",
                [normalize_user(owner)],
                |row| row.get(0),
            )
            .optional()?;
        Ok(version.map_or(0, |v| u64::try_from(v).unwrap_or(0)))
    }

    /// Records an inbound subscription request from `contact` that the owner has not answered
    /// (RFC 6121 §3.1.3), with the request stanza to re-deliver at the owner's next available
    /// presence. Creates a pending-in-only item if the owner has none for `contact`.
    ///
    /// A newer stanza replaces an older one (`None` keeps what is stored). Returns whether the
    /// roster changed (and its version was bumped): false if the request was already pending.
    pub fn record_subscription_request(
        &self,
        owner: &str,
        contact: &str,
        stanza_xml: Option<&str>,
    ) -> Result<bool, StoreError> {
        let owner = normalize_user(owner);
        let contact = normalize_jid(contact);
        let tx = self.write()?;
        require_account(&tx, &owner)?;
        let changed = match get_item(&tx, &owner, &contact)? {
            Some(item) if item.pending_in => false,
            Some(_) => true,
            None => {
                tx.execute(
                    "INSERT INTO roster (owner, jid, subscription) VALUES (?1, ?2, 'none')",
                    params![owner, contact],
                )?;
                true
            }
        };
        tx.execute(
            "UPDATE roster SET pending_in = 1, pending_in_stanza = COALESCE(?3, pending_in_stanza)
             WHERE owner = ?1 AND jid = ?2",
            params![owner, contact, stanza_xml],
        )?;
        if changed {
            bump_roster_version(&tx, &owner)?;
        }
        tx.commit()?;
        Ok(changed)
    }

    /// The owner's unanswered inbound subscription requests: contact JID and, if one was
    /// recorded, the request stanza. Sorted by contact JID.
    pub fn pending_subscription_requests(
        &self,
        owner: &str,
    ) -> Result<Vec<(String, Option<String>)>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT jid, pending_in_stanza FROM roster
             WHERE owner = ?1 AND pending_in <> 0 ORDER BY jid",
        )?;
        let requests = stmt
            .query_map([normalize_user(owner)], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(requests)
    }

    // ----- offline messages -----------------------------------------------------------------

    /// Stores a message for a user who is offline (XEP-0160) and returns its id.
    ///
    /// When this returns `Ok`, the message is on stable storage (see the module documentation)
    /// and the router may consider it accepted. Fails with [`StoreError::OfflineFull`] when the
    /// user already has [`StoreOptions::max_offline_per_user`] messages, and
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

    // ----- private XML storage --------------------------------------------------------------

    /// Stores (or replaces) the owner's private XML (XEP-0049) under `key`, which is
    /// `{namespace}element-name` of the stored element.
    pub fn set_private(&self, owner: &str, key: &str, xml: &str) -> Result<(), StoreError> {
        let owner = normalize_user(owner);
        let tx = self.write()?;
        require_account(&tx, &owner)?;
        tx.execute(
            "INSERT INTO private_xml (owner, item_key, xml) VALUES (?1, ?2, ?3)
             ON CONFLICT (owner, item_key) DO UPDATE SET xml = excluded.xml",
            params![owner, key, xml],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The owner's private XML stored under `key`, if any.
    pub fn get_private(&self, owner: &str, key: &str) -> Result<Option<String>, StoreError> {
        let xml = self
            .conn
            .query_row(
                "SELECT xml FROM private_xml WHERE owner = ?1 AND item_key = ?2",
                params![normalize_user(owner), key],
                |row| row.get(0),
            )
            .optional()?;
        Ok(xml)
    }
}

const ROSTER_COLUMNS: &str = "jid, name, subscription, ask, pending_in, groups_json";

fn row_to_item(row: &Row<'_>) -> rusqlite::Result<RosterItem> {
    let subscription: String = row.get(2)?;
    let subscription = Subscription::parse(&subscription).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            2,
            Type::Text,
            format!("unknown subscription {subscription:?}").into(),
        )
    })?;
    let groups: String = row.get(5)?;
    let groups = serde_json::from_str(&groups)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(5, Type::Text, Box::new(e)))?;
    Ok(RosterItem {
        jid: row.get(0)?,
        name: row.get(1)?,
        subscription,
        ask: row.get(3)?,
        pending_in: row.get(4)?,
        groups,
    })
}

fn get_item(conn: &Connection, owner: &str, jid: &str) -> rusqlite::Result<Option<RosterItem>> {
    conn.query_row(
        &format!("SELECT {ROSTER_COLUMNS} FROM roster WHERE owner = ?1 AND jid = ?2"),
        params![owner, jid],
        row_to_item,
    )
    .optional()
}

fn bump_roster_version(conn: &Connection, owner: &str) -> rusqlite::Result<()> {
    let version: i64 = conn.query_row(
        "UPDATE roster_version_seq SET value = value + 1 WHERE id = 0 RETURNING value",
        [],
        |row| row.get(0),
    )?;
    conn.execute(
        "UPDATE accounts SET roster_version = ?1 WHERE username = ?2",
        params![version, owner],
    )?;
    Ok(())
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

fn put_scram(
    conn: &Connection,
    username: &str,
    hash: ScramHash,
    keys: &StoredScram,
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
            hash.as_str(),
            keys.salt,
            keys.iterations,
            keys.stored_key,
            keys.server_key,
        ],
    )?;
    Ok(())
}

fn normalize_user(username: &str) -> String {
    username.to_lowercase()
}

fn normalize_jid(jid: &str) -> String {
    jid.to_lowercase()
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

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::{user_version, OpenError};

    fn keys(tag: u8) -> StoredScram {
        StoredScram {
            salt: vec![tag; 16],
            iterations: 4096 + u32::from(tag),
            stored_key: vec![tag.wrapping_add(1); 20],
            server_key: vec![tag.wrapping_add(2); 20],
        }
    }

    fn store_with(users: &[&str]) -> Store {
        let store = Store::open_in_memory().unwrap();
        for user in users {
            store.create_account(user, &keys(1), &keys(2)).unwrap();
        }
        store
    }

    fn count(store: &Store, sql: &str, user: &str) -> i64 {
        store.conn.query_row(sql, [user], |row| row.get(0)).unwrap()
    }

    fn db_path(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("server.sqlite")
    }

    #[test]
    fn store_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<Store>();
    }

    #[test]
    fn create_list_and_lowercase_accounts() {
        let store = store_with(&["Carol", "alice", "bob"]);
        assert_eq!(store.list_accounts().unwrap(), ["alice", "bob", "carol"]);
        assert!(store.account_exists("CAROL").unwrap());
        assert!(!store.account_exists("dave").unwrap());
    }

    #[test]
    fn duplicate_create_is_refused() {
        let store = store_with(&["alice"]);
        let err = store
            .create_account("ALICE", &keys(3), &keys(4))
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::AlreadyExists(u) if u == "alice"),
            "{err}"
        );
        assert!(err.to_string().contains("alice"));
        // The original credentials are untouched.
        assert_eq!(
            store.scram("alice", ScramHash::Sha1).unwrap(),
            Some(keys(1))
        );
    }

    #[test]
    fn invalid_usernames_are_refused() {
        let store = store_with(&[]);
        for bad in ["", "a@b", "a/b", "a b", "a\u{0}b"] {
            let err = store.create_account(bad, &keys(1), &keys(2)).unwrap_err();
            assert!(
                matches!(err, StoreError::InvalidUsername(_)),
                "{bad:?}: {err}"
            );
        }
        assert!(store.list_accounts().unwrap().is_empty());
    }

    #[test]
    fn scram_keys_round_trip_and_change() {
        let store = store_with(&["alice"]);
        assert_eq!(
            store.scram("alice", ScramHash::Sha1).unwrap(),
            Some(keys(1))
        );
        assert_eq!(
            store.scram("Alice", ScramHash::Sha256).unwrap(),
            Some(keys(2))
        );
        assert_eq!(store.scram("bob", ScramHash::Sha1).unwrap(), None);

        store.set_credentials("alice", &keys(5), &keys(6)).unwrap();
        assert_eq!(
            store.scram("alice", ScramHash::Sha1).unwrap(),
            Some(keys(5))
        );
        assert_eq!(
            store.scram("alice", ScramHash::Sha256).unwrap(),
            Some(keys(6))
        );

        let err = store
            .set_credentials("bob", &keys(5), &keys(6))
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::NoSuchAccount(u) if u == "bob"),
            "{err}"
        );
    }

    #[test]
    fn scram_debug_hides_keys() {
        let shown = format!("{:?}", keys(0xab));
        assert!(shown.contains("***") && shown.contains("4267"), "{shown}");
        assert!(!shown.contains("171") && !shown.contains("172"), "{shown}");
    }

    #[test]
    fn delete_account_cascades_but_keeps_other_rosters() {
        let store = store_with(&["alice", "bob"]);
        store
            .upsert_roster_item("alice", &RosterItem::new("bob@example.org"))
            .unwrap();
        store
            .upsert_roster_item("bob", &RosterItem::new("alice@example.org"))
            .unwrap();
        store.store_offline("alice", "<message/>").unwrap();
        store.store_offline("bob", "<message/>").unwrap();
        store
            .set_private("alice", "{storage:bookmarks}storage", "<storage/>")
            .unwrap();

        store.delete_account("Alice").unwrap();
        assert_eq!(store.list_accounts().unwrap(), ["bob"]);
        for sql in [
            "SELECT COUNT(*) FROM scram WHERE username = ?1",
            "SELECT COUNT(*) FROM roster WHERE owner = ?1",
            "SELECT COUNT(*) FROM offline_messages WHERE owner = ?1",
            "SELECT COUNT(*) FROM private_xml WHERE owner = ?1",
        ] {
            assert_eq!(count(&store, sql, "alice"), 0, "{sql}");
        }
        // Bob's data, including his item for Alice, stays.
        assert_eq!(store.roster("bob").unwrap()[0].jid, "alice@example.org");
        assert_eq!(store.offline_messages("bob").unwrap().len(), 1);
        assert!(store.scram("bob", ScramHash::Sha1).unwrap().is_some());

        let err = store.delete_account("alice").unwrap_err();
        assert!(matches!(err, StoreError::NoSuchAccount(_)), "{err}");

        // A re-created account starts empty.
        store.create_account("alice", &keys(1), &keys(2)).unwrap();
        assert!(store.roster("alice").unwrap().is_empty());
        assert!(store.offline_messages("alice").unwrap().is_empty());
        assert_eq!(
            store
                .get_private("alice", "{storage:bookmarks}storage")
                .unwrap(),
            None
        );
        assert_eq!(store.roster_version("alice").unwrap(), 0);
    }

    #[test]
    fn subscription_strings_round_trip() {
        for sub in [
            Subscription::None,
            Subscription::To,
            Subscription::From,
            Subscription::Both,
        ] {
            assert_eq!(Subscription::parse(sub.as_str()), Some(sub));
        }
        assert_eq!(Subscription::parse("remove"), None);
        assert_eq!(Subscription::parse("Both"), None);
    }

    #[test]
    fn roster_upsert_remove_and_versions() {
        let store = store_with(&["alice"]);
        assert_eq!(store.roster_version("alice").unwrap(), 0);
        assert_eq!(store.roster_version("nobody").unwrap(), 0);

        let mut bob = RosterItem::new("Bob@Example.org");
        bob.name = Some("Bob \"the builder\"".into());
        bob.groups = vec!["Friends".into(), "Wörk, \"quoted\"".into()];
        bob.ask = true;
        assert!(store.upsert_roster_item("alice", &bob).unwrap());
        let v1 = store.roster_version("alice").unwrap();
        assert!(v1 > 0);

        let stored = store
            .roster_item("alice", "bob@example.org")
            .unwrap()
            .unwrap();
        assert_eq!(stored.jid, "bob@example.org");
        assert_eq!(stored.name, bob.name);
        assert_eq!(stored.groups, bob.groups);
        assert!(stored.ask && !stored.pending_in);
        assert_eq!(stored.subscription, Subscription::None);

        // The same item again is not a change.
        assert!(!store.upsert_roster_item("alice", &bob).unwrap());
        assert_eq!(store.roster_version("alice").unwrap(), v1);

        bob.subscription = Subscription::To;
        bob.ask = false;
        assert!(store.upsert_roster_item("alice", &bob).unwrap());
        let v2 = store.roster_version("alice").unwrap();
        assert!(v2 > v1);

        assert!(store
            .upsert_roster_item("alice", &RosterItem::new("carol@example.org"))
            .unwrap());
        let v3 = store.roster_version("alice").unwrap();
        assert!(v3 > v2);
        let jids: Vec<_> = store
            .roster("alice")
            .unwrap()
            .into_iter()
            .map(|i| i.jid)
            .collect();
        assert_eq!(jids, ["bob@example.org", "carol@example.org"]);

        assert!(store
            .remove_roster_item("alice", "BOB@example.org")
            .unwrap());
        let v4 = store.roster_version("alice").unwrap();
        assert!(v4 > v3);
        assert!(!store
            .remove_roster_item("alice", "bob@example.org")
            .unwrap());
        assert_eq!(store.roster_version("alice").unwrap(), v4);
        assert_eq!(store.roster_item("alice", "bob@example.org").unwrap(), None);
        assert_eq!(store.roster("alice").unwrap().len(), 1);

        let err = store.upsert_roster_item("nobody", &bob).unwrap_err();
        assert!(matches!(err, StoreError::NoSuchAccount(_)), "{err}");
        assert!(!store
            .remove_roster_item("nobody", "bob@example.org")
            .unwrap());
        assert!(store.roster("nobody").unwrap().is_empty());
    }

    #[test]
    fn roster_versions_never_repeat_after_recreate() {
        let store = store_with(&["alice"]);
        for n in 0..3 {
            let item = RosterItem::new(format!("c{n}@example.org"));
            store.upsert_roster_item("alice", &item).unwrap();
        }
        let old = store.roster_version("alice").unwrap();
        store.delete_account("alice").unwrap();
        store.create_account("alice", &keys(1), &keys(2)).unwrap();
        store
            .upsert_roster_item("alice", &RosterItem::new("x@example.org"))
            .unwrap();
        assert!(store.roster_version("alice").unwrap() > old);
    }

    #[test]
    fn pending_in_requests_and_stanzas() {
        let store = store_with(&["alice"]);
        let request = "<presence from='bob@example.org' type='subscribe'/>";
        assert!(store
            .record_subscription_request("alice", "bob@example.org", Some(request))
            .unwrap());
        let v1 = store.roster_version("alice").unwrap();
        let item = store
            .roster_item("alice", "bob@example.org")
            .unwrap()
            .unwrap();
        assert!(item.pending_in && item.is_pending_in_only());
        assert_eq!(
            store.pending_subscription_requests("alice").unwrap(),
            [("bob@example.org".to_owned(), Some(request.to_owned()))]
        );

        // Repeating the request is not a roster change; a None stanza keeps the stored one.
        assert!(!store
            .record_subscription_request("alice", "bob@example.org", None)
            .unwrap());
        assert_eq!(store.roster_version("alice").unwrap(), v1);
        assert_eq!(
            store.pending_subscription_requests("alice").unwrap()[0]
                .1
                .as_deref(),
            Some(request)
        );

        // An upsert that keeps pending_in keeps the stanza...
        let mut named = item.clone();
        named.name = Some("Bob".into());
        assert!(store.upsert_roster_item("alice", &named).unwrap());
        assert!(!store
            .roster_item("alice", "bob@example.org")
            .unwrap()
            .unwrap()
            .is_pending_in_only());
        assert_eq!(
            store.pending_subscription_requests("alice").unwrap()[0]
                .1
                .as_deref(),
            Some(request)
        );
        // ...and approving (pending_in false) forgets it.
        named.pending_in = false;
        named.subscription = Subscription::From;
        assert!(store.upsert_roster_item("alice", &named).unwrap());
        assert!(store
            .pending_subscription_requests("alice")
            .unwrap()
            .is_empty());
        let stanza: Option<String> = store
            .conn
            .query_row(
                "SELECT pending_in_stanza FROM roster WHERE owner = 'alice'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(stanza, None);

        // A request for an existing item flips pending_in and bumps the version.
        let v2 = store.roster_version("alice").unwrap();
        assert!(store
            .record_subscription_request("alice", "bob@example.org", None)
            .unwrap());
        assert!(store.roster_version("alice").unwrap() > v2);
        assert_eq!(
            store.pending_subscription_requests("alice").unwrap(),
            [("bob@example.org".to_owned(), None)]
        );

        let err = store
            .record_subscription_request("nobody", "bob@example.org", None)
            .unwrap_err();
        assert!(matches!(err, StoreError::NoSuchAccount(_)), "{err}");
    }

    #[test]
    fn offline_order_delete_and_idempotence() {
        let store = store_with(&["alice", "bob"]);
        let a1 = store.store_offline("alice", "<message id='1'/>").unwrap();
        let b1 = store.store_offline("bob", "<message id='b'/>").unwrap();
        let a2 = store.store_offline("ALICE", "<message id='2'/>").unwrap();
        let a3 = store.store_offline("alice", "<message id='3'/>").unwrap();
        assert_eq!(
            store.offline_messages("alice").unwrap(),
            [
                (a1, "<message id='1'/>".to_owned()),
                (a2, "<message id='2'/>".to_owned()),
                (a3, "<message id='3'/>".to_owned()),
            ]
        );

        // Bob's id in Alice's delete list is ignored.
        assert_eq!(store.delete_offline("alice", &[a1, a2, b1]).unwrap(), 2);
        assert_eq!(store.delete_offline("alice", &[a1, a2]).unwrap(), 0);
        assert_eq!(store.delete_offline("alice", &[]).unwrap(), 0);
        assert_eq!(
            store.offline_messages("alice").unwrap(),
            [(a3, "<message id='3'/>".to_owned())]
        );
        assert_eq!(store.offline_messages("bob").unwrap().len(), 1);

        // Ids are never reused, even after the newest message is deleted.
        assert_eq!(store.delete_offline("alice", &[a3]).unwrap(), 1);
        let a4 = store.store_offline("alice", "<message id='4'/>").unwrap();
        assert!(a4 > a3 && a4 > b1);

        let err = store.store_offline("nobody", "<message/>").unwrap_err();
        assert!(matches!(err, StoreError::NoSuchAccount(_)), "{err}");
        assert!(store.offline_messages("nobody").unwrap().is_empty());
    }

    #[test]
    fn offline_cap_per_user() {
        let options = StoreOptions {
            max_offline_per_user: 2,
            ..StoreOptions::default()
        };
        let store = Store::open_in_memory_with_options(&options).unwrap();
        store.create_account("alice", &keys(1), &keys(2)).unwrap();
        store.create_account("bob", &keys(1), &keys(2)).unwrap();
        let first = store.store_offline("alice", "<m1/>").unwrap();
        store.store_offline("alice", "<m2/>").unwrap();
        let err = store.store_offline("alice", "<m3/>").unwrap_err();
        assert!(
            matches!(&err, StoreError::OfflineFull { user, max: 2 } if user == "alice"),
            "{err}"
        );
        assert!(err.to_string().contains("alice"));
        assert_eq!(store.offline_messages("alice").unwrap().len(), 2);
        // Other users have their own quota, and delivering frees space.
        store.store_offline("bob", "<m/>").unwrap();
        store.delete_offline("alice", &[first]).unwrap();
        store.store_offline("alice", "<m3/>").unwrap();

        let none = StoreOptions {
            max_offline_per_user: 0,
            ..StoreOptions::default()
        };
        let store = Store::open_in_memory_with_options(&none).unwrap();
        store.create_account("alice", &keys(1), &keys(2)).unwrap();
        assert!(matches!(
            store.store_offline("alice", "<m/>"),
            Err(StoreError::OfflineFull { max: 0, .. })
        ));
    }

    #[test]
    fn default_offline_cap_is_1000() {
        let store = store_with(&["alice"]);
        for n in 0..DEFAULT_MAX_OFFLINE_PER_USER {
            store.store_offline("alice", &format!("<m{n}/>")).unwrap();
        }
        assert!(matches!(
            store.store_offline("alice", "<too-many/>"),
            Err(StoreError::OfflineFull { max: 1000, .. })
        ));
    }

    #[test]
    fn private_storage_set_get_overwrite() {
        let store = store_with(&["alice", "bob"]);
        let key = "{storage:bookmarks}storage";
        assert_eq!(store.get_private("alice", key).unwrap(), None);
        store
            .set_private("alice", key, "<storage xmlns='storage:bookmarks'/>")
            .unwrap();
        store
            .set_private(
                "bob",
                key,
                "<storage xmlns='storage:bookmarks'>bob</storage>",
            )
            .unwrap();
        store
            .set_private("alice", "{other}x", "<x xmlns='other'/>")
            .unwrap();
        assert_eq!(
            store.get_private("Alice", key).unwrap().as_deref(),
            Some("<storage xmlns='storage:bookmarks'/>")
        );
        store
            .set_private(
                "alice",
                key,
                "<storage xmlns='storage:bookmarks'>v2</storage>",
            )
            .unwrap();
        assert_eq!(
            store.get_private("alice", key).unwrap().as_deref(),
            Some("<storage xmlns='storage:bookmarks'>v2</storage>")
        );
        assert_eq!(
            store.get_private("bob", key).unwrap().as_deref(),
            Some("<storage xmlns='storage:bookmarks'>bob</storage>")
        );
        assert_eq!(
            store.get_private("alice", "{other}x").unwrap().as_deref(),
            Some("<x xmlns='other'/>")
        );
        let err = store.set_private("nobody", key, "<x/>").unwrap_err();
        assert!(matches!(err, StoreError::NoSuchAccount(_)), "{err}");
    }

    #[test]
    fn data_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = db_path(&dir);
        let (id, version) = {
            let store = Store::open(&path).unwrap();
            store.create_account("alice", &keys(1), &keys(2)).unwrap();
            let mut item = RosterItem::new("bob@example.org");
            item.groups = vec!["g".into()];
            store.upsert_roster_item("alice", &item).unwrap();
            store
                .set_private("alice", "{a}b", "<b xmlns='a'/>")
                .unwrap();
            let id = store.store_offline("alice", "<message/>").unwrap();
            (id, store.roster_version("alice").unwrap())
        };
        let store = Store::open(&path).unwrap();
        assert_eq!(store.list_accounts().unwrap(), ["alice"]);
        assert_eq!(
            store.scram("alice", ScramHash::Sha256).unwrap(),
            Some(keys(2))
        );
        assert_eq!(store.roster("alice").unwrap()[0].groups, ["g"]);
        assert_eq!(store.roster_version("alice").unwrap(), version);
        assert_eq!(
            store.get_private("alice", "{a}b").unwrap().as_deref(),
            Some("<b xmlns='a'/>")
        );
        assert_eq!(
            store.offline_messages("alice").unwrap(),
            [(id, "<message/>".to_owned())]
        );
    }

    #[test]
    fn second_connection_writes_while_first_is_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = db_path(&dir);
        let server = Store::open(&path).unwrap();
        server.create_account("alice", &keys(1), &keys(2)).unwrap();
        assert_eq!(server.list_accounts().unwrap(), ["alice"]); // the server has read too

        // `mqtt2xmpp user add` in another process.
        let cli = Store::open(&path).unwrap();
        cli.create_account("bob", &keys(3), &keys(4)).unwrap();
        drop(cli);

        assert!(server.account_exists("bob").unwrap());
        assert_eq!(server.scram("bob", ScramHash::Sha1).unwrap(), Some(keys(3)));
        server.store_offline("bob", "<message/>").unwrap();
    }

    #[test]
    fn writer_waits_for_a_busy_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = db_path(&dir);
        let store = Store::open(&path).unwrap();

        // Another process holds the write lock for a while, then commits.
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let (locked, wait) = std::sync::mpsc::channel();
        let holder = std::thread::spawn(move || {
            locked.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(300));
            other.execute_batch("COMMIT").unwrap();
        });
        wait.recv().unwrap();
        let started = std::time::Instant::now();
        store.create_account("alice", &keys(1), &keys(2)).unwrap();
        assert!(started.elapsed() >= Duration::from_millis(200));
        holder.join().unwrap();
        assert!(store.account_exists("alice").unwrap());
    }

    #[test]
    fn busy_timeout_expires_with_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = db_path(&dir);
        let options = StoreOptions {
            busy_timeout: Duration::from_millis(50),
            ..StoreOptions::default()
        };
        let store = Store::open_with_options(&path, &options).unwrap();
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let err = store
            .create_account("alice", &keys(1), &keys(2))
            .unwrap_err();
        assert!(matches!(err, StoreError::Sqlite(_)), "{err}");
        // Reads are not blocked by a writer in WAL mode.
        assert!(store.list_accounts().unwrap().is_empty());
        other.execute_batch("ROLLBACK").unwrap();
        store.create_account("alice", &keys(1), &keys(2)).unwrap();
    }

    #[test]
    fn too_new_schema_is_refused() {
        // The refusal itself (message, nothing written) is tested in `crate::sqlite`.
        let dir = tempfile::tempdir().unwrap();
        let path = db_path(&dir);
        drop(Store::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let err = Store::open(&path).unwrap_err();
        assert!(
            matches!(&err, StoreError::Open(OpenError::TooNew { found: 99, supported, .. }) if *supported == SCHEMA_VERSION),
            "{err}"
        );
    }

    #[test]
    fn migrates_an_empty_file_and_reopens_idempotently() {
        let dir = tempfile::tempdir().unwrap();
        let path = db_path(&dir);
        std::fs::write(&path, b"").unwrap();
        let store = Store::open(&path).unwrap();
        assert_eq!(
            user_version(&store.conn).unwrap(),
            i64::from(SCHEMA_VERSION)
        );
        let tables: Vec<String> = store
            .conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for table in [
            "accounts",
            "offline_messages",
            "private_xml",
            "roster",
            "roster_version_seq",
            "scram",
        ] {
            assert!(
                tables.iter().any(|t| t == table),
                "{table} missing: {tables:?}"
            );
        }
        store.create_account("alice", &keys(1), &keys(2)).unwrap();
        drop(store);
        // Opening an up-to-date file again changes nothing.
        let store = Store::open(&path).unwrap();
        assert_eq!(
            user_version(&store.conn).unwrap(),
            i64::from(SCHEMA_VERSION)
        );
        assert_eq!(store.list_accounts().unwrap(), ["alice"]);
    }

    #[test]
    fn missing_directory_and_garbage_file_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-dir").join("server.sqlite");
        let err = Store::open(&missing).unwrap_err();
        assert!(err.to_string().contains("no-such-dir"), "{err}");

        let garbage = dir.path().join("garbage.sqlite");
        std::fs::write(&garbage, vec![b'x'; 4096]).unwrap();
        let err = Store::open(&garbage).unwrap_err();
        assert!(
            matches!(err, StoreError::Open(OpenError::Sqlite { .. })),
            "{err}"
        );
        assert!(err.to_string().contains("garbage.sqlite"), "{err}");
    }
}
