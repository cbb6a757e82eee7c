//! Tests of the rooms' archive store: rows kept per room, apart from the accounts' archives,
//! sharing their id counter, paged, trimmed, expired and deleted per room.

use super::super::tests::store_with;
use super::super::*;

const LAB: &str = "lab@conference.localhost";

fn row(id: i64, room: &str, stamp_ms: i64) -> ArchiveRow {
    ArchiveRow {
        id,
        owner: room.into(),
        with: "alice@localhost".into(),
        stamp_ms,
        stanza: format!("<message type='groupchat' id='{id}'/>"),
    }
}

#[test]
fn a_room_archive_needs_no_account_and_shares_the_id_counter() {
    let store = store_with(&["alice"]);
    let rows: Vec<ArchiveRow> = (1..=4).map(|id| row(id, LAB, id * 1000)).collect();
    assert_eq!(store.append_room_archive(&rows, 5).unwrap(), 4);
    assert_eq!(store.archive_seq().unwrap().0, 5);
    // The room JID is compared without case, like every bare JID.
    assert_eq!(
        store
            .room_archive_count("Lab@Conference.localhost")
            .unwrap(),
        4
    );
    assert!(store.room_archive_has(LAB, 2).unwrap());
    // Not in an account's archive, nor in another room's.
    assert!(!store.archive_has("alice", 2).unwrap());
    assert!(!store
        .room_archive_has("other@conference.localhost", 2)
        .unwrap());
}

#[test]
fn a_room_archive_pages_both_ways_trims_and_expires() {
    let store = store_with(&[]);
    let rows: Vec<ArchiveRow> = (1..=10).map(|id| row(id, LAB, id * 1000)).collect();
    store.append_room_archive(&rows, 11).unwrap();
    store
        .append_room_archive(&[row(11, "other@conference.localhost", 11_000)], 12)
        .unwrap();
    let filter = ArchiveFilter::default();
    let first = store
        .room_archive_query(LAB, &filter, Paging::Forward(None), 3)
        .unwrap();
    let ids = |page: &ArchivePage| page.messages.iter().map(|m| m.id).collect::<Vec<_>>();
    assert_eq!(ids(&first), [1, 2, 3]);
    assert_eq!(first.count, 10);
    assert!(!first.complete);
    let last = store
        .room_archive_query(LAB, &filter, Paging::Backward(None), 3)
        .unwrap();
    assert_eq!(ids(&last), [8, 9, 10]);

    assert_eq!(store.trim_room_archive(LAB, 6).unwrap(), 4);
    assert_eq!(store.room_archive_count(LAB).unwrap(), 6);
    // Expiry reaches every room's rows older than the bound.
    assert_eq!(store.expire_room_archive(7_000).unwrap(), 2);
    assert_eq!(store.room_archive_count(LAB).unwrap(), 4);

    assert_eq!(store.delete_room_archive(LAB).unwrap(), 4);
    assert_eq!(store.room_archive_count(LAB).unwrap(), 0);
    assert_eq!(
        store
            .room_archive_count("other@conference.localhost")
            .unwrap(),
        1
    );
}

#[test]
fn at_start_only_persistent_rooms_keep_their_archives() {
    let store = store_with(&["alice"]);
    let kept = "Lounge@conference.localhost";
    store
        .save_muc_room(
            &StoredRoom {
                jid: kept.to_string(),
                creator: "alice@localhost".to_string(),
                config: r#"{"persistent":true}"#.to_string(),
                subject: None,
                affiliations: Vec::new(),
            },
            "localhost",
        )
        .unwrap();
    store
        .append_room_archive(&[row(1, LAB, 1000), row(2, &kept.to_lowercase(), 2000)], 3)
        .unwrap();
    assert_eq!(store.delete_unstored_room_archives().unwrap(), 1);
    assert_eq!(store.room_archive_count(LAB).unwrap(), 0);
    assert_eq!(store.room_archive_count(kept).unwrap(), 1);
}
