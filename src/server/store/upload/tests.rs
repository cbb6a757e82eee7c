//! Tests of the upload slots' and files' storage.

use super::super::tests::{keys, store_with};
use super::super::*;

const TTL: i64 = 300_000;

fn slot<'a>(token: &'a str, owner: &'a str, size: u64) -> NewSlot<'a> {
    NewSlot {
        token,
        owner,
        filename: "photo.jpg",
        size,
        content_type: Some("image/jpeg"),
    }
}

#[test]
fn a_slot_counts_against_the_quota_until_it_expires_unused() {
    let store = store_with(&["alice", "bob"]);
    assert_eq!(
        store
            .upload_create_slot(&slot("t1", "alice", 600), 1_000, TTL, 1000)
            .unwrap(),
        Ok(())
    );
    // 600 + 500 > 1000: refused, with what is in use.
    assert_eq!(
        store
            .upload_create_slot(&slot("t2", "alice", 500), 2_000, TTL, 1000)
            .unwrap(),
        Err(600)
    );
    // Bob has his own quota.
    assert_eq!(
        store
            .upload_create_slot(&slot("t3", "bob", 500), 2_000, TTL, 1000)
            .unwrap(),
        Ok(())
    );
    // Once the unused slot expired, its bytes are free again.
    assert_eq!(store.upload_usage("alice", 1_000 + TTL, TTL).unwrap(), 0);
    assert_eq!(
        store
            .upload_create_slot(&slot("t4", "alice", 500), 1_000 + TTL, TTL, 1000)
            .unwrap(),
        Ok(())
    );
}

#[test]
fn a_slot_is_claimed_once_and_only_before_it_expires() {
    let store = store_with(&["alice"]);
    store
        .upload_create_slot(&slot("t1", "alice", 10), 1_000, TTL, 1000)
        .unwrap()
        .unwrap();
    store
        .upload_create_slot(&slot("t2", "alice", 10), 1_000, TTL, 1000)
        .unwrap()
        .unwrap();
    assert!(store.upload_claim("t1", 2_000, TTL).unwrap());
    assert!(
        !store.upload_claim("t1", 2_000, TTL).unwrap(),
        "a second PUT on one slot"
    );
    assert!(
        !store.upload_claim("t2", 1_000 + TTL, TTL).unwrap(),
        "an expired slot"
    );
    assert!(
        !store.upload_claim("nope", 2_000, TTL).unwrap(),
        "an unknown token"
    );
    assert!(store.upload_stored("t1", 3_000).unwrap());
    let row = store.upload_row("t1").unwrap().unwrap();
    assert_eq!(row.state, UploadState::Stored);
    assert_eq!(row.stored_ms, Some(3_000));
    assert_eq!(
        (row.size, row.content_type.as_deref()),
        (10, Some("image/jpeg"))
    );
    // A claimed or stored file still counts, however old its slot.
    assert_eq!(store.upload_usage("alice", 10 * TTL, TTL).unwrap(), 10);
}

#[test]
fn expiry_removes_old_files_stale_uploads_and_unused_slots_only() {
    let store = store_with(&["alice"]);
    for token in ["old", "new", "stale", "unused"] {
        store
            .upload_create_slot(&slot(token, "alice", 1), 0, TTL, 1000)
            .unwrap()
            .unwrap();
    }
    for token in ["old", "new", "stale"] {
        assert!(store.upload_claim(token, 0, TTL).unwrap());
    }
    store.upload_stored("old", 0).unwrap();
    store.upload_stored("new", 50_000).unwrap();
    let day = 86_400_000;
    let mut gone = store.upload_expire(day, TTL, 3_600_000, day).unwrap();
    gone.sort();
    assert_eq!(gone, ["old", "stale", "unused"]);
    assert!(store.upload_known("new").unwrap());
    assert!(!store.upload_known("old").unwrap());
}

#[test]
fn deleting_the_account_deletes_its_rows_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("server.sqlite")).unwrap();
    store.create_account("alice", &keys(1), &keys(2)).unwrap();
    store.create_account("bob", &keys(1), &keys(2)).unwrap();
    let uploads = store.upload_dir().unwrap();
    std::fs::create_dir_all(&uploads).unwrap();
    for (token, owner) in [("a1", "alice"), ("b1", "bob")] {
        store
            .upload_create_slot(&slot(token, owner, 1), 0, TTL, 1000)
            .unwrap()
            .unwrap();
        store.upload_claim(token, 0, TTL).unwrap();
        store.upload_stored(token, 0).unwrap();
        std::fs::write(uploads.join(token), b"x").unwrap();
    }
    store.delete_account("alice").unwrap();
    assert!(!uploads.join("a1").exists());
    assert!(uploads.join("b1").exists(), "other accounts' files stay");
    assert!(store.upload_row("a1").unwrap().is_none());
    assert!(store.upload_row("b1").unwrap().is_some());
}
