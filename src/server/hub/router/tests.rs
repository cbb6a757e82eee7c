//! Message and IQ routing as deliveries: bare-JID delivery by priority, full JIDs, and the
//! errors for unknown accounts and other domains (rules 2–6 of `router.rs`).

use tokio_xmpp::parsers::message::MessageType;
use tokio_xmpp::parsers::stanza_error::DefinedCondition;

use super::super::testing::*;
use super::*;

const CHAT_TO_BOB: &str =
    "<message to='bob@localhost' type='chat' id='m1'><body>hi</body></message>";

#[test]
fn highest_priority_wins_and_ties_all_get_it() {
    let a = full("u@d/a");
    let b = full("u@d/b");
    let c = full("u@d/c");
    assert_eq!(
        highest(&[(a.clone(), 1), (b.clone(), 5), (c.clone(), 5)]),
        vec![b, c]
    );
    assert_eq!(highest(&[(a.clone(), 0)]), vec![a]);
    assert!(highest(&[]).is_empty());
}

#[test]
fn a_message_to_a_bare_jid_goes_to_the_resource_with_the_highest_priority() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    let low = world.online("bob/phone", 1);
    let high = world.online("bob/laptop", 5);
    let got = world.send(&alice, CHAT_TO_BOB);
    assert_eq!(got.recipients(), [&high], "{}", got.describe());
    let delivered = message(got.only_to(&high));
    assert_eq!(body(got.only_to(&high)), Some("hi"));
    // Stamped with the sender's full JID, addressed as the sender wrote it.
    assert_eq!(delivered.from, Some(alice.into()));
    assert_eq!(delivered.to, Some(bare("bob@localhost").into()));
    assert!(got.to(&low).is_empty());
}

#[test]
fn a_message_to_a_bare_jid_goes_to_every_resource_that_ties_for_the_highest_priority() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    let phone = world.online("bob/phone", 3);
    let laptop = world.online("bob/laptop", 3);
    let idle = world.online("bob/idle", 1);
    let got = world.send(&alice, CHAT_TO_BOB);
    assert_eq!(body(got.only_to(&phone)), Some("hi"));
    assert_eq!(body(got.only_to(&laptop)), Some("hi"));
    assert!(got.to(&idle).is_empty(), "{}", got.describe());
}

#[test]
fn resources_with_negative_priority_never_get_bare_jid_messages_which_are_stored_instead() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    let bob = world.online("bob/bot", -1);
    let got = world.send(&alice, CHAT_TO_BOB);
    assert!(got.is_empty(), "{}", got.describe());
    let stored = world.hub.store().offline_messages("bob").unwrap();
    assert_eq!(stored.len(), 1);
    assert!(stored[0].1.contains("hi"));
    // Addressed to the full JID, it is delivered all the same.
    let got = world.send(
        &alice,
        "<message to='bob@localhost/bot' type='chat'><body>direct</body></message>",
    );
    assert_eq!(body(got.only_to(&bob)), Some("direct"));
}

#[test]
fn headlines_go_to_every_non_negative_resource_and_are_never_stored() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    let phone = world.online("bob/phone", 0);
    let laptop = world.online("bob/laptop", 9);
    let bot = world.online("bob/bot", -5);
    let got = world.send(
        &alice,
        "<message to='bob@localhost' type='headline'><body>news</body></message>",
    );
    assert_eq!(got.to(&phone).len(), 1);
    assert_eq!(got.to(&laptop).len(), 1);
    assert!(got.to(&bot).is_empty());
    world.unbind(&phone);
    world.unbind(&laptop);
    let got = world.send(
        &alice,
        "<message to='bob@localhost' type='headline'><body>news</body></message>",
    );
    assert!(got.is_empty(), "{}", got.describe());
    assert!(world
        .hub
        .store()
        .offline_messages("bob")
        .unwrap()
        .is_empty());
}

#[test]
fn a_message_to_a_bound_full_jid_goes_to_that_session_only() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    let phone = world.online("bob/phone", 0);
    let laptop = world.online("bob/laptop", 10);
    let got = world.send(
        &alice,
        "<message to='bob@localhost/phone' type='normal'><body>psst</body></message>",
    );
    assert_eq!(got.recipients(), [&phone], "{}", got.describe());
    assert!(got.to(&laptop).is_empty());
}

#[test]
fn a_message_to_an_unbound_full_jid_is_handled_as_if_sent_to_the_bare_jid() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    let laptop = world.online("bob/laptop", 0);
    let got = world.send(
        &alice,
        "<message to='bob@localhost/gone' type='chat'><body>hi</body></message>",
    );
    assert_eq!(body(got.only_to(&laptop)), Some("hi"));
    // Errors to a resource that left are dropped rather than rerouted.
    let got = world.send(&alice, "<message to='bob@localhost/gone' type='error'/>");
    assert!(got.is_empty(), "{}", got.describe());
}

#[test]
fn a_message_to_an_unknown_account_bounces_with_service_unavailable() {
    let mut world = World::with_accounts(&["alice"]);
    let alice = world.online("alice/phone", 0);
    let got = world.send(
        &alice,
        "<message to='nobody@localhost' type='chat' id='m1'><body>hi</body></message>",
    );
    let error = got.only_to(&alice);
    assert_eq!(
        error_condition(error),
        Some(DefinedCondition::ServiceUnavailable)
    );
    let error = message(error);
    assert_eq!(error.type_, MessageType::Error);
    assert_eq!(error.from, Some(bare("nobody@localhost").into()));
    assert_eq!(error.id.as_ref().map(|id| id.0.as_str()), Some("m1"));
    // Headlines and errors to nobody vanish: no error about an error (RFC 6120 §8.3.1).
    for kind in ["headline", "error"] {
        let got = world.send(
            &alice,
            &format!("<message to='nobody@localhost' type='{kind}'><body>x</body></message>"),
        );
        assert!(got.is_empty(), "{kind}: {}", got.describe());
    }
}

#[test]
fn stanzas_for_another_domain_bounce_with_remote_server_not_found() {
    let mut world = World::with_accounts(&["alice"]);
    let alice = world.online("alice/phone", 0);
    for stanza in [
        "<message to='bob@example.org' type='chat'><body>hi</body></message>",
        "<iq to='example.org' type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>",
        "<presence to='bob@example.org' type='subscribe'/>",
    ] {
        let got = world.send(&alice, stanza);
        assert_eq!(
            error_condition(got.only_to(&alice)),
            Some(DefinedCondition::RemoteServerNotFound),
            "{stanza}"
        );
    }
    // A result for another domain is not answered.
    let got = world.send(&alice, "<iq to='example.org' type='result' id='r'/>");
    assert!(got.is_empty(), "{}", got.describe());
}

#[test]
fn messages_to_the_server_or_with_no_address_get_service_unavailable_groupchat_too() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    world.online("bob/phone", 0);
    for stanza in [
        "<message to='localhost' type='chat'><body>hi</body></message>",
        "<message type='chat'><body>hi</body></message>",
        "<message to='bob@localhost' type='groupchat'><body>hi</body></message>",
    ] {
        let got = world.send(&alice, stanza);
        assert_eq!(
            error_condition(got.only_to(&alice)),
            Some(DefinedCondition::ServiceUnavailable),
            "{stanza}: {}",
            got.describe()
        );
    }
    let got = world.send(
        &alice,
        "<message to='localhost' type='headline'><body>x</body></message>",
    );
    assert!(got.is_empty(), "{}", got.describe());
}

#[test]
fn an_iq_to_a_bound_full_jid_is_passed_on_and_to_an_unbound_one_bounces() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    let bob = world.online("bob/phone", 0);
    let got = world.send(
        &alice,
        "<iq to='bob@localhost/phone' type='get' id='v'><query xmlns='jabber:iq:version'/></iq>",
    );
    let passed = iq(got.only_to(&bob));
    assert_eq!(passed.from(), Some(&alice.clone().into()));
    assert_eq!(passed.id(), "v");
    // bob's answer goes back the same way.
    let got = world.send(
        &bob,
        "<iq to='alice@localhost/phone' type='result' id='v'/>",
    );
    assert_eq!(iq(got.only_to(&alice)).id(), "v");
    // To a resource that is not bound: a get bounces, a result is dropped.
    let got = world.send(
        &alice,
        "<iq to='bob@localhost/gone' type='get' id='w'><query xmlns='jabber:iq:version'/></iq>",
    );
    assert_eq!(
        error_condition(got.only_to(&alice)),
        Some(DefinedCondition::ServiceUnavailable)
    );
    let got = world.send(&alice, "<iq to='bob@localhost/gone' type='result' id='w'/>");
    assert!(got.is_empty(), "{}", got.describe());
}

#[test]
fn an_iq_to_an_unknown_account_bounces_with_service_unavailable() {
    let mut world = World::with_accounts(&["alice"]);
    let alice = world.online("alice/phone", 0);
    let got = world.send(
        &alice,
        "<iq to='nobody@localhost' type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>",
    );
    let error = got.only_to(&alice);
    assert_eq!(
        error_condition(error),
        Some(DefinedCondition::ServiceUnavailable)
    );
    assert_eq!(from_of(error), Some(&bare("nobody@localhost").into()));
}

#[test]
fn a_session_that_is_not_bound_gets_nothing_routed() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    world.online("bob/phone", 0);
    let ghost = full("alice@localhost/ghost");
    let got = world.send(&ghost, CHAT_TO_BOB);
    assert!(got.is_empty(), "{}", got.describe());
}
