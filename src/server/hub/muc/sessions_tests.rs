//! Several sessions of one account under one nickname, as transcripts.

use tokio_xmpp::jid::FullJid;
use tokio_xmpp::parsers::presence::Type as PresenceType;
use tokio_xmpp::parsers::stanza_error::DefinedCondition;

use super::super::super::testing::*;
use super::super::admin::tests::{codes, item, join, ROOM};

/// Bob created ROOM as Bob; alice is in it as Alice from her phone and her laptop.
fn two_sessions() -> (World, FullJid, FullJid, FullJid, Deliveries) {
    let mut world = World::with_accounts(&["alice", "bob", "carol"]);
    let bob = world.online("bob/desk", 0);
    let phone = world.online("alice/phone", 0);
    let laptop = world.online("alice/laptop", 0);
    join(&mut world, &bob, "Bob");
    join(&mut world, &phone, "Alice");
    let got = join(&mut world, &laptop, "Alice");
    (world, bob, phone, laptop, got)
}

fn say(world: &mut World, who: &FullJid, text: &str) -> Deliveries {
    world.send(
        who,
        &format!("<message to='{ROOM}' type='groupchat'><body>{text}</body></message>"),
    )
}

#[test]
fn a_second_session_joins_the_occupant_and_the_others_see_one() {
    let (_, bob, phone, laptop, got) = two_sessions();
    // The laptop gets Bob, then itself (110), then the subject; nobody else hears of it.
    let to_laptop = got.to(&laptop);
    assert_eq!(to_laptop.len(), 3, "{}", got.describe());
    assert_eq!(
        from_of(to_laptop[0]).map(|j| j.to_string()),
        Some(format!("{ROOM}/Bob"))
    );
    assert_eq!(codes(to_laptop[1]), ["100", "110", "170"]);
    assert!(got.to(&bob).is_empty() && got.to(&phone).is_empty());
}

#[test]
fn both_sessions_get_groupchat_and_private_messages() {
    let (mut world, bob, phone, laptop, _) = two_sessions();
    let got = say(&mut world, &bob, "hello");
    assert_eq!(body(got.only_to(&phone)), Some("hello"));
    assert_eq!(body(got.only_to(&laptop)), Some("hello"));
    // Either session speaks as Alice.
    let got = say(&mut world, &laptop, "from the laptop");
    assert_eq!(
        from_of(got.only_to(&bob)).map(|j| j.to_string()),
        Some(format!("{ROOM}/Alice"))
    );
    let got = world.send(
        &bob,
        &format!("<message to='{ROOM}/Alice' type='chat'><body>psst</body></message>"),
    );
    assert_eq!(body(got.only_to(&phone)), Some("psst"));
    assert_eq!(body(got.only_to(&laptop)), Some("psst"));
}

#[test]
fn another_account_still_gets_a_conflict_and_a_shared_occupant_keeps_its_nick() {
    let (mut world, _, _, laptop, _) = two_sessions();
    let carol = world.online("carol/desk", 0);
    let got = join(&mut world, &carol, "Alice");
    assert_eq!(
        error_condition(got.only_to(&carol)),
        Some(DefinedCondition::Conflict)
    );
    let got = join(&mut world, &laptop, "Alicia");
    assert_eq!(
        error_condition(got.only_to(&laptop)),
        Some(DefinedCondition::NotAcceptable)
    );
}

#[test]
fn a_session_leaves_quietly_until_the_last_one_goes() {
    let (mut world, bob, phone, laptop, _) = two_sessions();
    let got = world.send(
        &phone,
        &format!("<presence to='{ROOM}/Alice' type='unavailable'/>"),
    );
    let to_phone = got.only_to(&phone);
    assert_eq!(presence_type(to_phone), PresenceType::Unavailable);
    assert_eq!(codes(to_phone), ["110"]);
    assert!(got.to(&bob).is_empty());
    // The laptop is Alice now.
    let got = say(&mut world, &bob, "still there?");
    assert!(got.to(&phone).is_empty());
    assert_eq!(body(got.only_to(&laptop)), Some("still there?"));
    // Its session ends: Alice leaves.
    let got = world.unbind(&laptop);
    let to_bob = got.only_to(&bob);
    assert_eq!(presence_type(to_bob), PresenceType::Unavailable);
}

#[test]
fn a_kick_reaches_every_session_of_the_occupant() {
    let (mut world, bob, phone, laptop, _) = two_sessions();
    let got = world.send(
        &bob,
        &format!(
            "<iq type='set' id='k' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#admin'><item nick='Alice' role='none'/></query></iq>"
        ),
    );
    for session in [&phone, &laptop] {
        let to = got.only_to(session);
        assert_eq!(codes(to), ["110", "307"]);
        assert_eq!(item(to).attr("role"), Some("none"));
    }
    // Neither session is in the room any more.
    let got = say(&mut world, &laptop, "back?");
    assert_eq!(
        error_condition(got.only_to(&laptop)),
        Some(DefinedCondition::NotAcceptable)
    );
}
