//! Tests of offline messages: order, idempotent deletion, the per-user cap.

use super::super::tests::{keys, store_with};
use super::super::*;

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
