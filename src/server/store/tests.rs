//! Tests of opening the store: durability across reopening, two processes at once, schema
//! versions and migrations, and the compatibility of databases written by earlier versions.
//! The helpers here are shared with the tests of each kind of data.

use super::*;
use crate::sqlite::{user_version, OpenError};

pub(super) fn keys(tag: u8) -> ScramKeys {
    ScramKeys {
        salt: vec![tag; 16],
        iterations: 4096 + u32::from(tag),
        stored_key: vec![tag.wrapping_add(1); 20],
        server_key: vec![tag.wrapping_add(2); 20],
    }
}

pub(super) fn store_with(users: &[&str]) -> Store {
    let store = Store::open_in_memory().unwrap();
    for user in users {
        store.create_account(user, &keys(1), &keys(2)).unwrap();
    }
    store
}

pub(super) fn count(store: &Store, sql: &str, user: &str) -> i64 {
    store.conn.query_row(sql, [user], |row| row.get(0)).unwrap()
}

pub(super) fn db_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("server.sqlite")
}

#[test]
fn store_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Store>();
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
    assert_eq!(store.scram("alice", Hash::Sha256).unwrap(), Some(keys(2)));
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
    assert_eq!(server.scram("bob", Hash::Sha1).unwrap(), Some(keys(3)));
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
        "blocklist",
        "muc_affiliations",
        "muc_rooms",
        "offline_messages",
        "pep_items",
        "pep_nodes",
        "private_xml",
        "roster",
        "roster_version_seq",
        "roster_version_tag",
        "scram",
        "vcards",
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

/// A database written by mqtt2xmpp at schema version 1, before the store was split into one
/// file per kind of data: accounts `alice`, `bob` and `carol` (password `USER-password`, salt
/// `USER-salt`, 4096 iterations), alice's roster with a named contact in two groups, an
/// outgoing request and a pending inbound one, two offline messages for alice (a third was
/// delivered), and bob's bookmarks in private storage.
const SCHEMA_V1_DATABASE: &[u8] = include_bytes!("testdata/schema-v1.sqlite");

/// The schema as SQLite keeps it: every table's and index's `CREATE` statement, by name.
fn schema(store: &Store) -> Vec<(String, Option<String>)> {
    store
        .conn
        .prepare("SELECT name, sql FROM sqlite_schema ORDER BY name")
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn a_database_written_at_schema_version_1_opens_with_all_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    std::fs::write(&path, SCHEMA_V1_DATABASE).unwrap();
    let store = Store::open(&path).unwrap();

    // Migrated (if there is anything to migrate) to exactly the schema of a new database.
    assert_eq!(
        user_version(&store.conn).unwrap(),
        i64::from(SCHEMA_VERSION)
    );
    assert_eq!(schema(&store), schema(&Store::open_in_memory().unwrap()));

    // Every account can still log in: the stored keys are those of its password.
    assert_eq!(store.list_accounts().unwrap(), ["alice", "bob", "carol"]);
    for user in ["alice", "bob", "carol"] {
        for hash in [Hash::Sha1, Hash::Sha256] {
            let stored = store.scram(user, hash).unwrap().expect("stored keys");
            let derived = crate::server::sasl::derive_keys(
                &format!("{user}-password"),
                hash,
                format!("{user}-salt").as_bytes(),
                4096,
            )
            .unwrap();
            assert_eq!(stored, derived, "{user} {}", hash.name());
        }
    }

    // Rosters, with their versions and pending requests.
    let roster = store.roster("alice").unwrap();
    let jids: Vec<&str> = roster.iter().map(|item| item.jid.as_str()).collect();
    assert_eq!(
        jids,
        ["bob@localhost", "carol@localhost", "dave@example.org"]
    );
    assert_eq!(roster[0].name.as_deref(), Some("Bob"));
    assert_eq!(roster[0].subscription, Subscription::Both);
    assert_eq!(roster[0].groups, ["Friends", "Work"]);
    assert!(roster[1].is_pending_in_only());
    assert!(roster[2].ask && roster[2].subscription == Subscription::None);
    assert_eq!(
        store.pending_subscription_requests("alice").unwrap(),
        [(
            "carol@localhost".to_string(),
            Some(
                "<presence from='carol@localhost' to='alice@localhost' type='subscribe'/>"
                    .to_string()
            )
        )]
    );
    assert_eq!(
        store
            .roster_item("bob", "alice@localhost")
            .unwrap()
            .map(|item| item.subscription),
        Some(Subscription::Both)
    );
    let versions: Vec<u64> = ["alice", "bob", "carol"]
        .iter()
        .map(|user| store.roster_version(user).unwrap())
        .collect();
    assert_eq!(versions, [3, 4, 0]);
    // The migration to schema 2 gave the database its tag: the clients' vers keep the numbers.
    let tag: String = store
        .conn
        .query_row("SELECT value FROM roster_version_tag", [], |row| row.get(0))
        .unwrap();
    assert_eq!(tag.len(), 16);
    assert_eq!(store.roster_ver("alice").unwrap(), format!("{tag}-3"));

    // Offline messages, in order, and private XML.
    let offline = store.offline_messages("alice").unwrap();
    let bodies: Vec<bool> = ["first", "third"]
        .iter()
        .zip(&offline)
        .map(|(body, (_, stanza))| stanza.contains(&format!("<body>{body}</body>")))
        .collect();
    assert_eq!((offline.len(), bodies), (2, vec![true, true]));
    assert!(store
        .get_private("bob", "{storage:bookmarks}storage")
        .unwrap()
        .is_some_and(|xml| xml.contains("room@conference.localhost")));

    // And it keeps working: a new message queues behind the old ones, and the next roster
    // change takes a version above every version handed out before.
    let id = store.store_offline("alice", "<message/>").unwrap();
    let ids: Vec<i64> = store
        .offline_messages("alice")
        .unwrap()
        .iter()
        .map(|m| m.0)
        .collect();
    assert_eq!(ids, [offline[0].0, offline[1].0, id]);
    let mut eve = RosterItem::new("eve@localhost");
    eve.subscription = Subscription::To;
    assert!(store.upsert_roster_item("carol", &eve).unwrap());
    assert!(store.roster_version("carol").unwrap() > 4);
}
