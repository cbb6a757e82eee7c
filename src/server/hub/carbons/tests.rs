//! Message carbons (XEP-0280) as deliveries: the switch, `<sent/>` and `<received/>` copies,
//! and the messages that are not copied.

use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::ns;

use super::super::testing::*;

const ENABLE: &str = "<iq type='set' id='c'><enable xmlns='urn:xmpp:carbons:2'/></iq>";

/// The message forwarded inside a carbon copy of `kind` (`sent` or `received`), if `stanza` is
/// one.
fn carbon(stanza: &tokio_xmpp::Stanza, kind: &str) -> Option<Element> {
    let copy = message(stanza);
    let wrapper = copy.payloads.iter().find(|p| p.is(kind, ns::CARBONS))?;
    let forwarded = wrapper.get_child("forwarded", ns::FORWARD)?;
    forwarded.children().next().cloned()
}

/// alice on a phone and a laptop (carbons on, on both), bob on one device.
fn three_devices() -> (
    World,
    tokio_xmpp::jid::FullJid,
    tokio_xmpp::jid::FullJid,
    tokio_xmpp::jid::FullJid,
) {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let phone = world.online("alice/phone", 1);
    let laptop = world.online("alice/laptop", 0);
    let bob = world.online("bob/desk", 0);
    world.send(&phone, ENABLE);
    world.send(&laptop, ENABLE);
    (world, phone, laptop, bob)
}

#[test]
fn enabling_carbons_is_answered_and_disabling_turns_them_off() {
    let mut world = World::with_accounts(&["alice"]);
    let alice = world.online("alice/phone", 0);
    let got = world.send(&alice, ENABLE);
    assert!(matches!(
        iq(got.only_to(&alice)),
        tokio_xmpp::parsers::iq::Iq::Result { .. }
    ));
    assert!(world.hub.sessions[&alice].carbons);
    world.send(
        &alice,
        "<iq type='set' id='d'><disable xmlns='urn:xmpp:carbons:2'/></iq>",
    );
    assert!(!world.hub.sessions[&alice].carbons);
}

#[test]
fn a_sent_chat_is_copied_to_the_senders_other_carbons_enabled_resources() {
    let (mut world, phone, laptop, bob) = three_devices();
    let got = world.send(
        &phone,
        "<message to='bob@localhost' type='chat'><body>on my way</body></message>",
    );
    assert_eq!(body(got.only_to(&bob)), Some("on my way"));
    let copy = got.only_to(&laptop);
    assert_eq!(from_of(copy), Some(&bare("alice@localhost").into()));
    let forwarded = carbon(copy, "sent").expect("a <sent/> carbon");
    assert!(String::from(&forwarded).contains("on my way"));
    assert!(
        got.to(&phone).is_empty(),
        "no copy to the sender: {}",
        got.describe()
    );
}

#[test]
fn a_received_chat_is_copied_to_the_resources_that_did_not_get_it() {
    let (mut world, phone, laptop, bob) = three_devices();
    // To alice's bare JID: the phone (priority 1) gets it, the laptop a <received/> copy.
    let got = world.send(
        &bob,
        "<message to='alice@localhost' type='chat'><body>where are you</body></message>",
    );
    assert_eq!(body(got.only_to(&phone)), Some("where are you"));
    assert!(
        carbon(got.only_to(&laptop), "received").is_some(),
        "{}",
        got.describe()
    );
    // To the laptop's full JID: the phone gets the copy.
    let got = world.send(
        &bob,
        "<message to='alice@localhost/laptop' type='chat'><body>hello laptop</body></message>",
    );
    assert_eq!(body(got.only_to(&laptop)), Some("hello laptop"));
    assert!(
        carbon(got.only_to(&phone), "received").is_some(),
        "{}",
        got.describe()
    );
}

#[test]
fn resources_without_carbons_get_no_copies() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let phone = world.online("alice/phone", 1);
    let laptop = world.online("alice/laptop", 0);
    let bob = world.online("bob/desk", 0);
    world.send(&phone, ENABLE);
    let got = world.send(
        &bob,
        "<message to='alice@localhost' type='chat'><body>hi</body></message>",
    );
    assert!(got.to(&laptop).is_empty(), "{}", got.describe());
}

#[test]
fn private_no_copy_bodiless_and_non_chat_messages_are_not_copied() {
    let (mut world, phone, laptop, _bob) = three_devices();
    for stanza in [
        "<message to='bob@localhost' type='chat'><body>secret</body><private xmlns='urn:xmpp:carbons:2'/></message>",
        "<message to='bob@localhost' type='chat'><body>secret</body><no-copy xmlns='urn:xmpp:hints'/></message>",
        "<message to='bob@localhost' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
        "<message to='bob@localhost' type='normal'><body>memo</body></message>",
    ] {
        let got = world.send(&phone, stanza);
        assert!(got.to(&laptop).is_empty(), "{stanza}: {}", got.describe());
    }
}
