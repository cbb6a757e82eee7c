//! Tests of the archive's store: batches, paging in both directions, filters, limits,
//! preferences, and account removal.

use super::super::tests::store_with;
use super::super::*;

/// `n` rows for alice, ids 1..=n, one second apart, alternately with bob and carol.
fn fill(store: &Store, n: i64) {
    let rows: Vec<ArchiveRow> = (1..=n)
        .map(|id| ArchiveRow {
            id,
            owner: "alice".into(),
            with: if id % 2 == 0 {
                "bob@localhost"
            } else {
                "Carol@localhost"
            }
            .into(),
            stamp_ms: 1_000_000 + id * 1000,
            stanza: format!("<message id='{id}'/>"),
        })
        .collect();
    assert_eq!(store.append_archive(&rows, n + 1).unwrap(), rows.len());
}

fn ids(page: &ArchivePage) -> Vec<i64> {
    page.messages.iter().map(|m| m.id).collect()
}

#[test]
fn a_batch_is_written_at_once_and_the_counter_moves_past_it() {
    let store = store_with(&["alice"]);
    let (next, _mask) = store.archive_seq().unwrap();
    assert_eq!(next, 1);
    fill(&store, 5);
    assert_eq!(store.archive_seq().unwrap().0, 6);
    assert_eq!(store.archive_count("ALICE").unwrap(), 5);
    assert!(store.archive_has("alice", 3).unwrap());
    assert!(!store.archive_has("alice", 6).unwrap());
    assert!(!store.archive_has("bob", 3).unwrap());
}

#[test]
fn rows_of_an_account_that_no_longer_exists_are_skipped_not_fatal() {
    let store = store_with(&["alice"]);
    let row = |id, owner: &str| ArchiveRow {
        id,
        owner: owner.into(),
        with: "x@localhost".into(),
        stamp_ms: 1,
        stanza: "<message/>".into(),
    };
    let written = store
        .append_archive(&[row(1, "alice"), row(2, "ghost"), row(3, "alice")], 4)
        .unwrap();
    assert_eq!(written, 2);
    assert_eq!(store.archive_count("alice").unwrap(), 2);
}

#[test]
fn pages_go_forward_from_the_start_and_backward_from_the_end() {
    let store = store_with(&["alice"]);
    fill(&store, 10);
    let all = ArchiveFilter::default();
    let first = store
        .archive_query("alice", &all, Paging::Forward(None), 4)
        .unwrap();
    assert_eq!(ids(&first), [1, 2, 3, 4]);
    assert!(!first.complete);
    assert_eq!(first.count, 10);
    let next = store
        .archive_query("alice", &all, Paging::Forward(Some(8)), 4)
        .unwrap();
    assert_eq!(ids(&next), [9, 10]);
    assert!(next.complete);
    // The last page, oldest first, then the one before it.
    let last = store
        .archive_query("alice", &all, Paging::Backward(None), 3)
        .unwrap();
    assert_eq!(ids(&last), [8, 9, 10]);
    assert!(!last.complete);
    let before = store
        .archive_query("alice", &all, Paging::Backward(Some(3)), 3)
        .unwrap();
    assert_eq!(ids(&before), [1, 2]);
    assert!(before.complete);
    // A page of nothing still counts.
    let none = store
        .archive_query("alice", &all, Paging::Forward(None), 0)
        .unwrap();
    assert!(none.messages.is_empty());
    assert_eq!(none.count, 10);
}

#[test]
fn filters_combine_with_time_ids_and_the_peer() {
    let store = store_with(&["alice"]);
    fill(&store, 10);
    let with_carol = ArchiveFilter {
        with: Some("carol@LOCALHOST".into()),
        ..Default::default()
    };
    let page = store
        .archive_query("alice", &with_carol, Paging::Forward(None), 50)
        .unwrap();
    assert_eq!(ids(&page), [1, 3, 5, 7, 9]);
    let window = ArchiveFilter {
        start_ms: Some(1_000_000 + 3000),
        end_ms: Some(1_000_000 + 6000),
        ..Default::default()
    };
    let page = store
        .archive_query("alice", &window, Paging::Forward(None), 50)
        .unwrap();
    assert_eq!(ids(&page), [3, 4, 5, 6]);
    assert_eq!(page.count, 4);
    let between = ArchiveFilter {
        after_id: Some(2),
        before_id: Some(6),
        ..Default::default()
    };
    let page = store
        .archive_query("alice", &between, Paging::Forward(None), 50)
        .unwrap();
    assert_eq!(ids(&page), [3, 4, 5]);
    let picked = ArchiveFilter {
        ids: Some(vec![2, 7, 99]),
        ..Default::default()
    };
    let page = store
        .archive_query("alice", &picked, Paging::Forward(None), 50)
        .unwrap();
    assert_eq!(ids(&page), [2, 7]);
    // Someone else's archive is another archive.
    let page = store
        .archive_query("bob", &ArchiveFilter::default(), Paging::Forward(None), 50)
        .unwrap();
    assert_eq!(page.count, 0);
}

#[test]
fn trimming_keeps_the_newest_and_expiry_deletes_the_oldest() {
    let store = store_with(&["alice"]);
    fill(&store, 10);
    assert_eq!(store.trim_archive("alice", 7).unwrap(), 3);
    let page = store
        .archive_query(
            "alice",
            &ArchiveFilter::default(),
            Paging::Forward(None),
            50,
        )
        .unwrap();
    assert_eq!(ids(&page), [4, 5, 6, 7, 8, 9, 10]);
    assert_eq!(store.trim_archive("alice", 7).unwrap(), 0);
    // Everything archived before the 6th message's time goes.
    assert_eq!(store.expire_archive(1_000_000 + 6000).unwrap(), 2);
    assert_eq!(store.archive_count("alice").unwrap(), 5);
    // A cut-off after the newest deletes everything; an empty archive stays empty.
    assert_eq!(store.expire_archive(i64::MAX).unwrap(), 5);
    assert_eq!(store.expire_archive(i64::MAX).unwrap(), 0);
}

#[test]
fn preferences_are_kept_and_replaced() {
    let store = store_with(&["alice"]);
    assert_eq!(store.archive_prefs("alice").unwrap(), None);
    let prefs = ArchivePrefs {
        default: ArchiveDefault::Roster,
        always: vec!["Bob@localhost".into()],
        never: vec!["spam@example.org".into()],
    };
    store.set_archive_prefs("alice", &prefs).unwrap();
    let stored = store.archive_prefs("alice").unwrap().unwrap();
    assert_eq!(stored.default, ArchiveDefault::Roster);
    assert_eq!(stored.always, ["bob@localhost"]);
    assert_eq!(stored.never, ["spam@example.org"]);
    store
        .set_archive_prefs("alice", &ArchivePrefs::default())
        .unwrap();
    assert_eq!(
        store.archive_prefs("alice").unwrap(),
        Some(ArchivePrefs::default())
    );
    assert!(matches!(
        store.set_archive_prefs("nobody", &ArchivePrefs::default()),
        Err(StoreError::NoSuchAccount(_))
    ));
}

#[test]
fn deleting_an_account_deletes_its_archive_and_preferences() {
    let store = store_with(&["alice"]);
    fill(&store, 3);
    store
        .set_archive_prefs("alice", &ArchivePrefs::default())
        .unwrap();
    store.delete_account("alice").unwrap();
    let leftovers: i64 = store
        .conn
        .query_row(
            "SELECT (SELECT COUNT(*) FROM archive) + (SELECT COUNT(*) FROM archive_prefs)",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(leftovers, 0);
}
