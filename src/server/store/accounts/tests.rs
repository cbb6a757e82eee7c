//! Tests of accounts and credentials: creation, names, SCRAM keys, deletion.

use super::super::tests::{count, keys, store_with};
use super::super::*;

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
    assert_eq!(store.scram("alice", Hash::Sha1).unwrap(), Some(keys(1)));
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
    assert_eq!(store.scram("alice", Hash::Sha1).unwrap(), Some(keys(1)));
    assert_eq!(store.scram("Alice", Hash::Sha256).unwrap(), Some(keys(2)));
    assert_eq!(store.scram("bob", Hash::Sha1).unwrap(), None);

    store.set_credentials("alice", &keys(5), &keys(6)).unwrap();
    assert_eq!(store.scram("alice", Hash::Sha1).unwrap(), Some(keys(5)));
    assert_eq!(store.scram("alice", Hash::Sha256).unwrap(), Some(keys(6)));

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
    assert!(
        shown.contains("<redacted>") && shown.contains("4267"),
        "{shown}"
    );
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
    store
        .set_vcard("alice", "<vCard xmlns='vcard-temp'/>", Some("ab"))
        .unwrap();

    store.delete_account("Alice").unwrap();
    assert_eq!(store.list_accounts().unwrap(), ["bob"]);
    for sql in [
        "SELECT COUNT(*) FROM scram WHERE username = ?1",
        "SELECT COUNT(*) FROM roster WHERE owner = ?1",
        "SELECT COUNT(*) FROM offline_messages WHERE owner = ?1",
        "SELECT COUNT(*) FROM private_xml WHERE owner = ?1",
        "SELECT COUNT(*) FROM vcards WHERE owner = ?1",
    ] {
        assert_eq!(count(&store, sql, "alice"), 0, "{sql}");
    }
    // Bob's data, including his item for Alice, stays.
    assert_eq!(store.roster("bob").unwrap()[0].jid, "alice@example.org");
    assert_eq!(store.offline_messages("bob").unwrap().len(), 1);
    assert!(store.scram("bob", Hash::Sha1).unwrap().is_some());

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
    assert_eq!(store.get_vcard("alice").unwrap(), None);
    assert_eq!(store.vcard_photo_hash("alice").unwrap(), None);
}
