//! Tests of rosters: items, subscription states, versions, pending requests.

use super::super::tests::{db_path, keys, store_with};
use super::super::*;

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

/// The tag of a `ver` (`TAG-NUMBER`) and its number.
fn split_ver(ver: &str) -> (&str, u64) {
    let (tag, number) = ver.rsplit_once('-').expect("TAG-NUMBER");
    (tag, number.parse().expect("a number"))
}

#[test]
fn the_ver_clients_see_is_the_database_tag_and_the_version_number() {
    let store = store_with(&["alice"]);
    let fresh = store.roster_ver("alice").unwrap();
    let (tag, number) = split_ver(&fresh);
    let tag = tag.to_string();
    assert_eq!(number, 0);
    assert_eq!(tag.len(), 16, "{fresh}");
    assert!(tag.chars().all(|c| c.is_ascii_hexdigit()), "{fresh}");
    // An unknown account reads as an empty roster at version 0 of this database.
    assert_eq!(store.roster_ver("nobody").unwrap(), fresh);

    // Every change gives a new ver: add, update, subscription state, remove.
    let mut seen = vec![fresh];
    let mut bob = RosterItem::new("bob@example.org");
    store.upsert_roster_item("alice", &bob).unwrap();
    seen.push(store.roster_ver("alice").unwrap());
    bob.name = Some("Bob".into());
    store.upsert_roster_item("alice", &bob).unwrap();
    seen.push(store.roster_ver("alice").unwrap());
    bob.subscription = Subscription::Both;
    store.upsert_roster_item("alice", &bob).unwrap();
    seen.push(store.roster_ver("alice").unwrap());
    store
        .remove_roster_item("alice", "bob@example.org")
        .unwrap();
    seen.push(store.roster_ver("alice").unwrap());
    let mut distinct = seen.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), seen.len(), "{seen:?}");
    for ver in &seen {
        assert_eq!(
            split_ver(ver).0,
            tag.as_str(),
            "one tag for the database: {seen:?}"
        );
    }
    assert_eq!(
        split_ver(seen.last().unwrap()).1,
        store.roster_version("alice").unwrap()
    );
    // No change, no new ver.
    assert!(!store
        .remove_roster_item("alice", "bob@example.org")
        .unwrap());
    assert_eq!(&store.roster_ver("alice").unwrap(), seen.last().unwrap());

    // The roster and its ver, read together.
    store.upsert_roster_item("alice", &bob).unwrap();
    let (ver, items) = store.roster_with_ver("alice").unwrap();
    assert_eq!(ver, store.roster_ver("alice").unwrap());
    assert_eq!(items, [bob]);
}

#[test]
fn roster_vers_survive_a_restart_and_differ_between_databases() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let before = {
        let store = Store::open(&path).unwrap();
        store.create_account("alice", &keys(1), &keys(2)).unwrap();
        store
            .upsert_roster_item("alice", &RosterItem::new("bob@example.org"))
            .unwrap();
        store.roster_ver("alice").unwrap()
    };
    let store = Store::open(&path).unwrap();
    assert_eq!(store.roster_ver("alice").unwrap(), before);

    // A database created anew (a wiped data directory) with the same account and the same
    // changes reaches the same number, but never the same ver.
    let other_dir = tempfile::tempdir().unwrap();
    let other = Store::open(db_path(&other_dir)).unwrap();
    other.create_account("alice", &keys(1), &keys(2)).unwrap();
    other
        .upsert_roster_item("alice", &RosterItem::new("bob@example.org"))
        .unwrap();
    let again = other.roster_ver("alice").unwrap();
    assert_eq!(split_ver(&again).1, split_ver(&before).1);
    assert_ne!(again, before);
}
