//! Tests of the PEP tables: nodes, ordering and trimming of items, transient items, account
//! removal.

use super::super::tests::{keys, store_with};
use super::super::*;

fn item(id: &str, text: &str) -> PepItem {
    PepItem {
        id: id.into(),
        payload: format!("<nick xmlns='http://jabber.org/protocol/nick'>{text}</nick>"),
    }
}

fn ids(items: &[PepItem]) -> Vec<&str> {
    items.iter().map(|item| item.id.as_str()).collect()
}

const NICK: &str = "http://jabber.org/protocol/nick";

#[test]
fn items_come_back_oldest_first_and_a_republished_id_becomes_the_newest() {
    let store = store_with(&["alice"]);
    let config = PepNodeConfig {
        max_items: Some(10),
        ..PepNodeConfig::default()
    };
    store.pep_set_node("alice", NICK, &config, 1000).unwrap();
    for id in ["a", "b", "c"] {
        assert!(store
            .pep_publish("alice", NICK, &item(id, id), 1000)
            .unwrap());
    }
    assert!(store
        .pep_publish("Alice", NICK, &item("a", "again"), 1000)
        .unwrap());
    let all = store.pep_items("alice", NICK, None).unwrap();
    assert_eq!(ids(&all), ["b", "c", "a"]);
    assert!(all[2].payload.contains("again"));
    assert_eq!(
        ids(&store.pep_items("alice", NICK, Some(2)).unwrap()),
        ["c", "a"]
    );
    assert_eq!(
        store.pep_last_item("alice", NICK).unwrap().map(|i| i.id),
        Some("a".to_string())
    );
    let wanted = ["a".to_string(), "zz".to_string(), "b".to_string()];
    assert_eq!(
        ids(&store.pep_items_by_id("alice", NICK, &wanted).unwrap()),
        ["b", "a"]
    );
}

#[test]
fn max_items_trims_the_oldest_and_max_means_the_cap() {
    let store = store_with(&["alice"]);
    store
        .pep_set_node("alice", NICK, &PepNodeConfig::default(), 1000)
        .unwrap();
    store
        .pep_publish("alice", NICK, &item("1", "x"), 1000)
        .unwrap();
    store
        .pep_publish("alice", NICK, &item("2", "y"), 1000)
        .unwrap();
    // PEP's default keeps one item.
    assert_eq!(ids(&store.pep_items("alice", NICK, None).unwrap()), ["2"]);

    let max = PepNodeConfig {
        max_items: None,
        ..PepNodeConfig::default()
    };
    store.pep_set_node("alice", NICK, &max, 3).unwrap();
    for id in ["3", "4", "5", "6"] {
        store.pep_publish("alice", NICK, &item(id, id), 3).unwrap();
    }
    assert_eq!(
        ids(&store.pep_items("alice", NICK, None).unwrap()),
        ["4", "5", "6"]
    );
    // Lowering max_items trims at once.
    let two = PepNodeConfig {
        max_items: Some(2),
        ..PepNodeConfig::default()
    };
    store.pep_set_node("alice", NICK, &two, 3).unwrap();
    assert_eq!(
        ids(&store.pep_items("alice", NICK, None).unwrap()),
        ["5", "6"]
    );
}

#[test]
fn nodes_are_per_account_and_publishing_needs_the_node() {
    let store = store_with(&["alice", "bob"]);
    assert!(!store
        .pep_publish("alice", NICK, &item("1", "x"), 10)
        .unwrap());
    store
        .pep_set_node("alice", NICK, &PepNodeConfig::default(), 10)
        .unwrap();
    assert_eq!(store.pep_node_count("alice").unwrap(), 1);
    assert_eq!(store.pep_node_count("bob").unwrap(), 0);
    assert_eq!(store.pep_node("bob", NICK).unwrap(), None);
    assert_eq!(
        store.pep_node("alice", NICK).unwrap(),
        Some(PepNodeConfig::default())
    );
    assert!(matches!(
        store.pep_set_node("nobody", NICK, &PepNodeConfig::default(), 10),
        Err(StoreError::NoSuchAccount(_))
    ));
    store
        .pep_publish("alice", NICK, &item("1", "x"), 10)
        .unwrap();
    assert!(store.pep_account_bytes("alice").unwrap() > 40);
    assert!(store.pep_retract("alice", NICK, "1").unwrap());
    assert!(!store.pep_retract("alice", NICK, "1").unwrap());
    assert_eq!(store.pep_account_bytes("alice").unwrap(), 0);
    assert!(store.pep_delete_node("alice", NICK).unwrap());
    assert!(!store.pep_delete_node("alice", NICK).unwrap());
    assert!(store.pep_nodes("alice").unwrap().is_empty());
}

#[test]
fn items_of_nodes_without_persist_items_are_forgotten_at_start() {
    let store = store_with(&["alice"]);
    let transient = PepNodeConfig {
        persist_items: false,
        ..PepNodeConfig::default()
    };
    store.pep_set_node("alice", "tune", &transient, 10).unwrap();
    store
        .pep_set_node("alice", NICK, &PepNodeConfig::default(), 10)
        .unwrap();
    store
        .pep_publish("alice", "tune", &item("t", "x"), 10)
        .unwrap();
    store
        .pep_publish("alice", NICK, &item("n", "x"), 10)
        .unwrap();
    assert_eq!(store.pep_forget_transient().unwrap(), 1);
    assert!(store.pep_items("alice", "tune", None).unwrap().is_empty());
    assert_eq!(ids(&store.pep_items("alice", NICK, None).unwrap()), ["n"]);
    // The node itself stays, with its configuration.
    assert_eq!(store.pep_node("alice", "tune").unwrap(), Some(transient));
}

#[test]
fn deleting_an_account_deletes_its_nodes_and_items_only() {
    let store = store_with(&["alice", "bob"]);
    for owner in ["alice", "bob"] {
        store
            .pep_set_node(owner, NICK, &PepNodeConfig::default(), 10)
            .unwrap();
        store
            .pep_publish(owner, NICK, &item("1", owner), 10)
            .unwrap();
    }
    store.delete_account("alice").unwrap();
    let count = |table: &str| -> i64 {
        store
            .conn
            .query_row(
                &format!("SELECT COUNT(*) FROM {table} WHERE owner = 'alice'"),
                [],
                |row| row.get(0),
            )
            .unwrap()
    };
    assert_eq!(count("pep_nodes"), 0);
    assert_eq!(count("pep_items"), 0);
    assert_eq!(store.pep_items("bob", NICK, None).unwrap().len(), 1);
    // A new alice starts with nothing.
    store.create_account("alice", &keys(1), &keys(2)).unwrap();
    assert!(store.pep_nodes("alice").unwrap().is_empty());
}

#[test]
fn a_configuration_that_cannot_be_read_leaves_the_node_to_its_owner() {
    let store = store_with(&["alice"]);
    store
        .pep_set_node("alice", NICK, &PepNodeConfig::default(), 10)
        .unwrap();
    store
        .conn
        .execute(
            "UPDATE pep_nodes SET config = '{\"access_model\":\"roster\"}'",
            [],
        )
        .unwrap();
    let config = store.pep_node("alice", NICK).unwrap().unwrap();
    assert_eq!(config.access_model, AccessModel::Whitelist);
}
