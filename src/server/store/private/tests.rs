//! Tests of private XML storage.

use super::super::tests::store_with;
use super::super::*;

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
