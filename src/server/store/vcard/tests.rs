//! Tests of vCard storage.

use super::super::tests::store_with;
use super::super::*;

#[test]
fn a_vcard_is_kept_as_given_with_its_photo_hash_and_replaced_whole() {
    let store = store_with(&["alice", "bob"]);
    assert_eq!(store.get_vcard("alice").unwrap(), None);
    assert_eq!(store.vcard_photo_hash("alice").unwrap(), None);
    let card = "<vCard xmlns='vcard-temp'><FN>Alice</FN></vCard>";
    store.set_vcard("alice", card, Some("0a1b")).unwrap();
    assert_eq!(store.get_vcard("Alice").unwrap().as_deref(), Some(card));
    assert_eq!(
        store.vcard_photo_hash("ALICE").unwrap().as_deref(),
        Some("0a1b")
    );
    // Bob's is his own.
    assert_eq!(store.get_vcard("bob").unwrap(), None);
    // A new vCard without a photo replaces both.
    store
        .set_vcard("alice", "<vCard xmlns='vcard-temp'/>", None)
        .unwrap();
    assert_eq!(
        store.get_vcard("alice").unwrap().as_deref(),
        Some("<vCard xmlns='vcard-temp'/>")
    );
    assert_eq!(store.vcard_photo_hash("alice").unwrap(), None);
}

#[test]
fn a_vcard_for_an_unknown_account_is_refused() {
    let store = store_with(&["alice"]);
    let err = store
        .set_vcard("mallory", "<vCard xmlns='vcard-temp'/>", None)
        .unwrap_err();
    assert!(matches!(err, StoreError::NoSuchAccount(_)), "{err}");
    assert_eq!(store.get_vcard("mallory").unwrap(), None);
}
