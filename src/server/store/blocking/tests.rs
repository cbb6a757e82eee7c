//! Tests of the block lists' storage.

use super::super::tests::store_with;
use super::super::*;

fn jids(list: &[&str]) -> Vec<String> {
    list.iter().map(|jid| jid.to_string()).collect()
}

#[test]
fn blocked_jids_are_kept_per_account_sorted_and_without_duplicates() {
    let store = store_with(&["alice", "bob"]);
    assert!(store.blocklist("alice").unwrap().is_empty());
    store
        .block(
            "alice",
            &jids(&["spam.example", "eve@localhost", "eve@localhost"]),
        )
        .unwrap();
    store.block("Alice", &jids(&["eve@localhost"])).unwrap();
    store.block("bob", &jids(&["mallory@localhost/x"])).unwrap();
    assert_eq!(
        store.blocklist("alice").unwrap(),
        ["eve@localhost", "spam.example"]
    );
    assert_eq!(store.blocklist("bob").unwrap(), ["mallory@localhost/x"]);
}

#[test]
fn unblocking_some_or_all_leaves_other_accounts_alone() {
    let store = store_with(&["alice", "bob"]);
    store
        .block(
            "alice",
            &jids(&["a@localhost", "b@localhost", "c@localhost"]),
        )
        .unwrap();
    store.block("bob", &jids(&["a@localhost"])).unwrap();
    store
        .unblock(
            "alice",
            Some(&jids(&["b@localhost", "not-there@localhost"])),
        )
        .unwrap();
    assert_eq!(
        store.blocklist("alice").unwrap(),
        ["a@localhost", "c@localhost"]
    );
    store.unblock("alice", None).unwrap();
    assert!(store.blocklist("alice").unwrap().is_empty());
    assert_eq!(store.blocklist("bob").unwrap(), ["a@localhost"]);
}

#[test]
fn an_unknown_account_has_no_list_and_cannot_block() {
    let store = store_with(&["alice"]);
    assert!(store.blocklist("nobody").unwrap().is_empty());
    assert!(matches!(
        store.block("nobody", &jids(&["a@localhost"])),
        Err(StoreError::NoSuchAccount(_))
    ));
    assert!(matches!(
        store.unblock("nobody", None),
        Err(StoreError::NoSuchAccount(_))
    ));
}

#[test]
fn deleting_an_account_deletes_its_block_list() {
    let store = store_with(&["alice"]);
    store.block("alice", &jids(&["eve@localhost"])).unwrap();
    store.delete_account("alice").unwrap();
    let rows: i64 = store
        .conn
        .query_row("SELECT COUNT(*) FROM blocklist", [], |row| row.get(0))
        .unwrap();
    assert_eq!(rows, 0);
    store_with_again(&store);
    assert!(store.blocklist("alice").unwrap().is_empty());
}

/// A re-created account starts with an empty list.
fn store_with_again(store: &Store) {
    let keys = ScramKeys {
        salt: vec![1; 16],
        iterations: 4096,
        stored_key: vec![2; 20],
        server_key: vec![3; 20],
    };
    store.create_account("alice", &keys, &keys).unwrap();
}
