//! Private XML storage (XEP-0049) as deliveries: store, read back, the empty answer, and the
//! requests it refuses.

use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::stanza_error::DefinedCondition;

use super::super::testing::*;

fn stored_prefs(got: &Deliveries, to: &tokio_xmpp::jid::FullJid) -> String {
    match iq(got.only_to(to)) {
        Iq::Result {
            payload: Some(query),
            ..
        } => String::from(query),
        other => panic!("not a result with a payload: {other:?}"),
    }
}

#[test]
fn an_account_stores_a_fragment_and_reads_it_back_from_any_resource() {
    let mut world = World::with_accounts(&["alice"]);
    let phone = world.online("alice/phone", 0);
    let laptop = world.online("alice/laptop", 0);
    let got = world.send(
        &phone,
        "<iq type='set' id='s'><query xmlns='jabber:iq:private'><prefs xmlns='urn:example:prefs'><theme>dark</theme></prefs></query></iq>",
    );
    assert!(
        matches!(iq(got.only_to(&phone)), Iq::Result { payload: None, .. }),
        "{}",
        got.describe()
    );
    let got = world.send(
        &laptop,
        "<iq type='get' id='g'><query xmlns='jabber:iq:private'><prefs xmlns='urn:example:prefs'/></query></iq>",
    );
    assert!(
        stored_prefs(&got, &laptop).contains("<theme>dark</theme>"),
        "{}",
        got.describe()
    );
}

#[test]
fn nothing_stored_is_answered_with_the_empty_element_asked_for() {
    let mut world = World::with_accounts(&["alice"]);
    let alice = world.online("alice/phone", 0);
    let got = world.send(
        &alice,
        "<iq type='get' id='g'><query xmlns='jabber:iq:private'><bookmarks xmlns='storage:bookmarks'/></query></iq>",
    );
    let answer = stored_prefs(&got, &alice);
    assert!(
        answer.contains("<bookmarks xmlns='storage:bookmarks'/>"),
        "{answer}"
    );
}

#[test]
fn one_account_cannot_read_another_accounts_fragments() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    let bob = world.online("bob/phone", 0);
    world.send(
        &alice,
        "<iq type='set' id='s'><query xmlns='jabber:iq:private'><prefs xmlns='urn:example:prefs'>mine</prefs></query></iq>",
    );
    // bob asking for his own gets his own (empty) fragment.
    let got = world.send(
        &bob,
        "<iq type='get' id='g'><query xmlns='jabber:iq:private'><prefs xmlns='urn:example:prefs'/></query></iq>",
    );
    assert!(!stored_prefs(&got, &bob).contains("mine"));
    // Addressed to alice, it is refused.
    let got = world.send(
        &bob,
        "<iq to='alice@localhost' type='get' id='g'><query xmlns='jabber:iq:private'><prefs xmlns='urn:example:prefs'/></query></iq>",
    );
    assert_eq!(
        error_condition(got.only_to(&bob)),
        Some(DefinedCondition::ServiceUnavailable)
    );
}

#[test]
fn reserved_namespaces_and_anything_but_one_child_are_not_acceptable() {
    let mut world = World::with_accounts(&["alice"]);
    let alice = world.online("alice/phone", 0);
    for query in [
        "<query xmlns='jabber:iq:private'><x xmlns='jabber:client'/></query>",
        "<query xmlns='jabber:iq:private'><x xmlns='jabber:server'/></query>",
        "<query xmlns='jabber:iq:private'><query xmlns='jabber:iq:private'/></query>",
        "<query xmlns='jabber:iq:private'/>",
        "<query xmlns='jabber:iq:private'><a xmlns='urn:a'/><b xmlns='urn:b'/></query>",
    ] {
        let got = world.send(&alice, &format!("<iq type='set' id='s'>{query}</iq>"));
        assert_eq!(
            error_condition(got.only_to(&alice)),
            Some(DefinedCondition::NotAcceptable),
            "{query}"
        );
    }
}
