//! Offline messages (XEP-0160) as deliveries: stored when nobody can take them, delivered on
//! the next available presence with a non-negative priority, then deleted.

use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::stanza_error::DefinedCondition;
use tokio_xmpp::Stanza;

use super::super::testing::*;

#[test]
fn a_message_for_an_offline_account_is_stored_and_delivered_on_its_next_presence() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    for text in ["first", "second"] {
        let got = world.send(
            &alice,
            &format!("<message to='bob@localhost' type='chat'><body>{text}</body></message>"),
        );
        assert!(got.is_empty(), "{}", got.describe());
    }
    assert_eq!(world.hub.store().offline_messages("bob").unwrap().len(), 2);

    let bob = world.bind("bob/phone");
    let got = world.send(&bob, "<presence/>");
    let batch = got
        .0
        .iter()
        .find_map(|d| match d {
            super::Delivery::Batch(jid, stanzas) if *jid == bob => Some(stanzas),
            _ => None,
        })
        .expect("the stored messages as one batch");
    let bodies: Vec<_> = batch.iter().filter_map(body).collect();
    assert_eq!(bodies, ["first", "second"]);
    for stanza in batch {
        let Stanza::Message(stored) = stanza else {
            panic!("not a message");
        };
        // Readdressed to the session, from the sender, with the time it arrived.
        assert_eq!(stored.to, Some(bob.clone().into()));
        assert_eq!(stored.from, Some(alice.clone().into()));
        assert!(stored.payloads.iter().any(|p| p.is("delay", ns::DELAY)));
    }
    assert!(world
        .hub
        .store()
        .offline_messages("bob")
        .unwrap()
        .is_empty());
    // Delivered once: the next session finds nothing.
    let laptop = world.bind("bob/laptop");
    let got = world.send(&laptop, "<presence/>");
    assert!(
        got.to(&laptop).iter().all(|s| body(s).is_none()),
        "{}",
        got.describe()
    );
}

#[test]
fn a_negative_priority_session_does_not_take_the_stored_messages() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    world.send(
        &alice,
        "<message to='bob@localhost' type='normal'><body>later</body></message>",
    );
    let bot = world.bind("bob/bot");
    let got = world.send(&bot, "<presence><priority>-1</priority></presence>");
    assert!(
        got.to(&bot).iter().all(|s| body(s).is_none()),
        "{}",
        got.describe()
    );
    assert_eq!(world.hub.store().offline_messages("bob").unwrap().len(), 1);
    // Later presence of a session that is already available does not deliver them either.
    let got = world.send(&bot, "<presence><priority>5</priority></presence>");
    assert!(
        got.to(&bot).iter().all(|s| body(s).is_none()),
        "{}",
        got.describe()
    );
    let phone = world.bind("bob/phone");
    let got = world.send(&phone, "<presence/>");
    assert_eq!(
        got.to(&phone)
            .iter()
            .filter_map(|s| body(s))
            .collect::<Vec<_>>(),
        ["later"]
    );
}

#[test]
fn offline_storage_is_advertised_by_the_server() {
    let world = World::with_accounts(&[]);
    let features: Vec<_> = world
        .hub
        .features(super::super::service::Entity::Server)
        .collect();
    assert!(features.contains(&"msgoffline"), "{features:?}");
}

#[test]
fn unacknowledged_messages_of_an_ended_session_are_stored_iqs_bounced_and_the_rest_dropped() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    let bob = world.online("bob/phone", 0);
    let unacked = vec![
        stanza("<message from='alice@localhost/phone' to='bob@localhost' type='chat'><body>one</body></message>"),
        stanza("<message from='alice@localhost/phone' to='bob@localhost' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>"),
        stanza("<message from='alice@localhost/phone' to='bob@localhost' type='headline'><body>news</body></message>"),
        stanza("<presence from='alice@localhost/phone' to='bob@localhost/phone'/>"),
        stanza("<iq from='alice@localhost/phone' to='bob@localhost/phone' type='get' id='v1'><query xmlns='jabber:iq:version'/></iq>"),
        stanza("<iq from='alice@localhost/phone' to='bob@localhost/phone' type='result' id='r1'/>"),
        stanza("<message from='alice@localhost/phone' to='bob@localhost' type='normal'><body>two</body></message>"),
    ];
    world.unbind(&bob);
    let got = Deliveries(world.hub.undelivered(&bob, unacked));
    // The IQ request is answered for bob, so alice does not wait for her timeout.
    let answer = got.only_to(&alice);
    assert_eq!(
        error_condition(answer),
        Some(DefinedCondition::RecipientUnavailable)
    );
    assert_eq!(got.0.len(), 1, "{}", got.describe());
    let stored: Vec<String> = world
        .hub
        .store()
        .offline_messages("bob")
        .unwrap()
        .into_iter()
        .map(|(_, xml)| xml)
        .collect();
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert!(
        stored[0].contains(">one<") && stored[1].contains(">two<"),
        "{stored:?}"
    );
}
