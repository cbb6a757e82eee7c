//! Tests of the persistent rooms' storage.

use super::super::tests::{count, store_with};
use super::super::*;

fn room(jid: &str, affiliations: &[(&str, &str)]) -> StoredRoom {
    StoredRoom {
        jid: jid.to_string(),
        creator: "alice@localhost".to_string(),
        config: r#"{"persistent":true}"#.to_string(),
        subject: Some(("Lab talk".to_string(), Some("Alice".to_string()))),
        affiliations: affiliations
            .iter()
            .map(|(j, a)| (j.to_string(), a.to_string()))
            .collect(),
    }
}

#[test]
fn a_saved_room_comes_back_whole_and_a_second_save_replaces_it() {
    let store = store_with(&["alice", "bob"]);
    assert!(store.muc_rooms().unwrap().is_empty());
    let lab = room(
        "lab@conference.localhost",
        &[
            ("alice@localhost", "owner"),
            ("bob@localhost", "member"),
            ("eve@example.org", "outcast"),
        ],
    );
    store.save_muc_room(&lab, "localhost").unwrap();
    assert_eq!(store.muc_rooms().unwrap(), std::slice::from_ref(&lab));
    // Saving again replaces the affiliations and the subject.
    let mut changed = room("lab@conference.localhost", &[("alice@localhost", "owner")]);
    changed.subject = None;
    store.save_muc_room(&changed, "localhost").unwrap();
    assert_eq!(store.muc_rooms().unwrap(), [changed]);
}

#[test]
fn deleting_a_room_removes_its_affiliations_and_nothing_else() {
    let store = store_with(&["alice"]);
    store
        .save_muc_room(
            &room("lab@conference.localhost", &[("alice@localhost", "owner")]),
            "localhost",
        )
        .unwrap();
    let kept = room("hall@conference.localhost", &[("alice@localhost", "owner")]);
    store.save_muc_room(&kept, "localhost").unwrap();
    store.delete_muc_room("lab@conference.localhost").unwrap();
    store.delete_muc_room("lab@conference.localhost").unwrap();
    assert_eq!(store.muc_rooms().unwrap(), [kept]);
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM muc_affiliations WHERE room = ?1",
            "lab@conference.localhost"
        ),
        0
    );
}

#[test]
fn deleting_an_account_removes_its_affiliations_but_keeps_its_rooms() {
    let store = store_with(&["alice", "bob"]);
    store
        .save_muc_room(
            &room(
                "lab@conference.localhost",
                &[
                    ("alice@localhost", "owner"),
                    ("bob@localhost", "owner"),
                    // Not an account of this server: not tied to alice's.
                    ("alice@example.org", "member"),
                ],
            ),
            "localhost",
        )
        .unwrap();
    store.delete_account("alice").unwrap();
    let rooms = store.muc_rooms().unwrap();
    assert_eq!(rooms.len(), 1);
    assert_eq!(
        rooms[0].affiliations,
        [
            ("alice@example.org".to_string(), "member".to_string()),
            ("bob@localhost".to_string(), "owner".to_string())
        ]
    );
    // A re-created alice is a stranger to the room.
    store
        .create_account(
            "alice",
            &super::super::tests::keys(1),
            &super::super::tests::keys(2),
        )
        .unwrap();
    assert_eq!(store.muc_rooms().unwrap()[0].affiliations.len(), 2);
}

#[test]
fn an_unknown_affiliation_is_refused_by_the_schema() {
    let store = store_with(&["alice"]);
    let bad = room("lab@conference.localhost", &[("alice@localhost", "king")]);
    assert!(store.save_muc_room(&bad, "localhost").is_err());
    assert!(store.muc_rooms().unwrap().is_empty());
}
