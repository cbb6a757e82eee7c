//! Rooms (XEP-0045) as transcripts: who sends what to a room, who gets what.

use tokio_xmpp::jid::FullJid;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::presence::Type as PresenceType;
use tokio_xmpp::parsers::stanza_error::DefinedCondition;
use tokio_xmpp::Stanza;

use super::super::testing::*;
use crate::server::limits::MucLimits;

const ROOM: &str = "lab@conference.localhost";

/// A world with alice, bob and carol online.
fn world() -> (World, FullJid, FullJid, FullJid) {
    let mut world = World::with_accounts(&["alice", "bob", "carol"]);
    let alice = world.online("alice/phone", 0);
    let bob = world.online("bob/laptop", 0);
    let carol = world.online("carol/desk", 0);
    (world, alice, bob, carol)
}

/// `who` joins ROOM as `nick`.
fn join(world: &mut World, who: &FullJid, nick: &str) -> Deliveries {
    world.send(
        who,
        &format!(
            "<presence to='{ROOM}/{nick}'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
        ),
    )
}

/// The status codes of a room presence.
fn codes(stanza: &Stanza) -> Vec<String> {
    presence(stanza)
        .payloads
        .iter()
        .filter(|p| p.is("x", ns::MUC_USER))
        .flat_map(|x| x.children().filter(|c| c.is("status", ns::MUC_USER)))
        .filter_map(|s| s.attr("code").map(str::to_string))
        .collect()
}

/// An attribute of the `<item/>` of a room presence.
fn item(stanza: &Stanza, attr: &str) -> Option<String> {
    presence(stanza)
        .payloads
        .iter()
        .find(|p| p.is("x", ns::MUC_USER))?
        .get_child("item", ns::MUC_USER)?
        .attr(attr)
        .map(str::to_string)
}

/// The `from` of a stanza as text.
fn from_text(stanza: &Stanza) -> String {
    from_of(stanza).map(|j| j.to_string()).unwrap_or_default()
}

/// The subject of a message, if it has one.
fn subject(stanza: &Stanza) -> Option<&str> {
    message(stanza).subjects.values().next().map(String::as_str)
}

#[test]
fn the_first_joiner_creates_an_instant_room_and_owns_it() {
    let (mut world, alice, _, _) = world();
    let got = join(&mut world, &alice, "Alice");
    let to_alice = got.to(&alice);
    assert_eq!(to_alice.len(), 2, "{}", got.describe());
    // Its own presence with 110 (self), 100 (real JIDs shown), 170 (the room is logged) and
    // 201 (room created).
    let own = to_alice[0];
    assert_eq!(from_text(own), format!("{ROOM}/Alice"));
    assert_eq!(codes(own), ["100", "110", "170", "201"]);
    assert_eq!(item(own, "affiliation").as_deref(), Some("owner"));
    assert_eq!(item(own, "role").as_deref(), Some("moderator"));
    assert_eq!(item(own, "jid").as_deref(), Some("alice@localhost/phone"));
    // Then the subject, empty, from the room (§7.2.16).
    assert_eq!(subject(to_alice[1]), Some(""));
    assert_eq!(from_text(to_alice[1]), ROOM);
}

#[test]
fn a_joiner_sees_everyone_then_itself_and_everyone_sees_it() {
    let (mut world, alice, bob, _) = world();
    join(&mut world, &alice, "Alice");
    let got = join(&mut world, &bob, "Bob");
    // Alice learns of Bob, as a participant with his real JID, without 110.
    let to_alice = got.only_to(&alice);
    assert_eq!(from_text(to_alice), format!("{ROOM}/Bob"));
    assert_eq!(item(to_alice, "role").as_deref(), Some("participant"));
    assert_eq!(item(to_alice, "affiliation").as_deref(), Some("none"));
    assert_eq!(
        item(to_alice, "jid").as_deref(),
        Some("bob@localhost/laptop")
    );
    assert!(codes(to_alice).is_empty());
    // Bob gets Alice's presence, then his own (110, 100, no 201), then the subject.
    let to_bob = got.to(&bob);
    assert_eq!(to_bob.len(), 3, "{}", got.describe());
    assert_eq!(from_text(to_bob[0]), format!("{ROOM}/Alice"));
    assert_eq!(item(to_bob[0], "role").as_deref(), Some("moderator"));
    assert_eq!(codes(to_bob[1]), ["100", "110", "170"]);
    assert!(subject(to_bob[2]).is_some());
}

#[test]
fn a_taken_nick_is_a_conflict_and_a_join_needs_a_nick() {
    let (mut world, alice, bob, _) = world();
    join(&mut world, &alice, "Alice");
    let got = join(&mut world, &bob, "Alice");
    assert_eq!(
        error_condition(got.only_to(&bob)),
        Some(DefinedCondition::Conflict)
    );
    assert!(got.to(&alice).is_empty());
    let got = world.send(&bob, &format!("<presence to='{ROOM}'/>"));
    assert_eq!(
        error_condition(got.only_to(&bob)),
        Some(DefinedCondition::JidMalformed)
    );
}

#[test]
fn leaving_tells_everyone_and_the_last_one_out_ends_the_room() {
    let (mut world, alice, bob, carol) = world();
    join(&mut world, &alice, "Alice");
    join(&mut world, &bob, "Bob");
    let got = world.send(
        &bob,
        &format!("<presence to='{ROOM}/Bob' type='unavailable'/>"),
    );
    let to_alice = got.only_to(&alice);
    assert_eq!(presence_type(to_alice), PresenceType::Unavailable);
    assert_eq!(item(to_alice, "role").as_deref(), Some("none"));
    let to_bob = got.only_to(&bob);
    assert_eq!(codes(to_bob), ["110"]);
    world.send(
        &alice,
        &format!("<presence to='{ROOM}/Alice' type='unavailable'/>"),
    );
    // The room is gone: the next joiner creates it again.
    let got = join(&mut world, &carol, "Carol");
    assert!(codes(got.to(&carol)[0]).contains(&"201".to_string()));
}

#[test]
fn a_session_that_ends_or_goes_unavailable_leaves_its_rooms() {
    let (mut world, alice, bob, carol) = world();
    join(&mut world, &alice, "Alice");
    join(&mut world, &bob, "Bob");
    join(&mut world, &carol, "Carol");
    let got = world.unbind(&bob);
    for who in [&alice, &carol] {
        let left: Vec<_> = got
            .to(who)
            .into_iter()
            .filter(|s| from_text(s) == format!("{ROOM}/Bob"))
            .collect();
        assert_eq!(left.len(), 1, "{}", got.describe());
        assert_eq!(presence_type(left[0]), PresenceType::Unavailable);
    }
    let got = world.send(&carol, "<presence type='unavailable'/>");
    let left = got
        .to(&alice)
        .into_iter()
        .find(|s| from_text(s) == format!("{ROOM}/Carol"));
    assert!(left.is_some(), "{}", got.describe());
}

#[test]
fn a_nick_change_is_303_with_the_new_nick_then_the_new_presence() {
    let (mut world, alice, bob, _) = world();
    join(&mut world, &alice, "Alice");
    join(&mut world, &bob, "Bob");
    let got = join(&mut world, &bob, "Robert");
    let to_alice = got.to(&alice);
    assert_eq!(to_alice.len(), 2, "{}", got.describe());
    assert_eq!(from_text(to_alice[0]), format!("{ROOM}/Bob"));
    assert_eq!(presence_type(to_alice[0]), PresenceType::Unavailable);
    assert_eq!(codes(to_alice[0]), ["303"]);
    assert_eq!(item(to_alice[0], "nick").as_deref(), Some("Robert"));
    assert_eq!(from_text(to_alice[1]), format!("{ROOM}/Robert"));
    assert_eq!(presence_type(to_alice[1]), PresenceType::None);
    let to_bob = got.to(&bob);
    assert_eq!(codes(to_bob[0]), ["110", "303"]);
    assert_eq!(codes(to_bob[1]), ["110"]);
    // The new nick is taken now, the old one free.
    let got = join(&mut world, &alice, "Robert");
    assert_eq!(
        error_condition(got.only_to(&alice)),
        Some(DefinedCondition::Conflict)
    );
}

#[test]
fn groupchat_goes_to_everyone_from_the_nick_with_the_rooms_stanza_id() {
    let (mut world, alice, bob, carol) = world();
    join(&mut world, &alice, "Alice");
    join(&mut world, &bob, "Bob");
    let got = world.send(
        &alice,
        &format!(
            "<message to='{ROOM}' type='groupchat' id='m1'><body>hello</body>\
             <stanza-id xmlns='urn:xmpp:sid:0' by='{ROOM}' id='forged'/></message>"
        ),
    );
    for who in [&alice, &bob] {
        let m = got.only_to(who);
        assert_eq!(body(m), Some("hello"));
        assert_eq!(from_text(m), format!("{ROOM}/Alice"));
        let ids: Vec<_> = message(m)
            .payloads
            .iter()
            .filter(|p| p.is("stanza-id", "urn:xmpp:sid:0"))
            .collect();
        assert_eq!(ids.len(), 1, "the forged id is gone");
        assert_eq!(ids[0].attr("by"), Some(ROOM));
        assert_ne!(ids[0].attr("id"), Some("forged"));
    }
    // Carol is not in the room: refused, nobody gets anything.
    let got = world.send(
        &carol,
        &format!("<message to='{ROOM}' type='groupchat'><body>hi</body></message>"),
    );
    assert_eq!(
        error_condition(got.only_to(&carol)),
        Some(DefinedCondition::NotAcceptable)
    );
    assert_eq!(got.recipients(), [&carol]);
}

#[test]
fn a_spoofed_from_is_replaced_by_the_senders_own_nick() {
    let (mut world, alice, bob, _) = world();
    join(&mut world, &alice, "Alice");
    join(&mut world, &bob, "Bob");
    let got = world.send(
        &bob,
        &format!(
            "<message from='{ROOM}/Alice' to='{ROOM}' type='groupchat'><body>I am Alice</body></message>"
        ),
    );
    assert_eq!(from_text(got.only_to(&alice)), format!("{ROOM}/Bob"));
}

#[test]
fn occupants_change_the_subject_and_joiners_get_it_after_the_history() {
    let (mut world, alice, bob, _) = world();
    join(&mut world, &alice, "Alice");
    world.send(
        &alice,
        &format!("<message to='{ROOM}' type='groupchat'><body>first</body></message>"),
    );
    let got = world.send(
        &alice,
        &format!("<message to='{ROOM}' type='groupchat'><subject>Sensors</subject></message>"),
    );
    assert_eq!(subject(got.only_to(&alice)), Some("Sensors"));
    let got = join(&mut world, &bob, "Bob");
    let to_bob = got.to(&bob);
    assert_eq!(to_bob.len(), 4, "{}", got.describe());
    // Alice's presence, Bob's own, the history with a delay stamp from the room, the subject.
    assert_eq!(body(to_bob[2]), Some("first"));
    let delay = message(to_bob[2])
        .payloads
        .iter()
        .find(|p| p.is("delay", ns::DELAY))
        .expect("a delay stamp");
    assert_eq!(delay.attr("from"), Some(ROOM));
    assert_eq!(subject(to_bob[3]), Some("Sensors"));
    assert_eq!(from_text(to_bob[3]), format!("{ROOM}/Alice"));
}

/// Alice says `n` messages in a room Bob then joins with `history`; the bodies Bob gets.
fn history_after(n: usize, history: &str) -> Vec<String> {
    let (mut world, alice, bob, _) = world();
    join(&mut world, &alice, "Alice");
    for i in 0..n {
        world.send(
            &alice,
            &format!("<message to='{ROOM}' type='groupchat'><body>m{i}</body></message>"),
        );
    }
    let got = world.send(
        &bob,
        &format!(
            "<presence to='{ROOM}/Bob'><x xmlns='http://jabber.org/protocol/muc'>{history}</x></presence>"
        ),
    );
    got.to(&bob)
        .into_iter()
        .filter_map(|s| body(s).map(str::to_string))
        .collect()
}

#[test]
fn the_history_keeps_the_last_twenty_and_honours_what_the_joiner_asks() {
    let all = history_after(25, "");
    assert_eq!(all.len(), 20);
    assert_eq!(all[0], "m5");
    assert_eq!(all[19], "m24");
    assert_eq!(history_after(5, "<history maxstanzas='2'/>"), ["m3", "m4"]);
    assert!(history_after(5, "<history maxchars='0'/>").is_empty());
    assert!(history_after(5, "<history since='2999-01-01T00:00:00Z'/>").is_empty());
    assert_eq!(history_after(3, "<history seconds='60'/>").len(), 3);
    // Hostile: a million stanzas asked for is the room's twenty.
    assert_eq!(
        history_after(25, "<history maxstanzas='1000000'/>").len(),
        20
    );
    assert_eq!(
        history_after(3, "<history maxstanzas='99999999999999999999999'/>").len(),
        3
    );
}

#[test]
fn private_messages_go_between_occupants_through_their_room_jids() {
    let (mut world, alice, bob, carol) = world();
    join(&mut world, &alice, "Alice");
    join(&mut world, &bob, "Bob");
    let got = world.send(
        &alice,
        &format!("<message to='{ROOM}/Bob' type='chat'><body>psst</body></message>"),
    );
    let m = got.only_to(&bob);
    assert_eq!(body(m), Some("psst"));
    assert_eq!(from_text(m), format!("{ROOM}/Alice"));
    assert!(message(m).payloads.iter().any(|p| p.is("x", ns::MUC_USER)));
    assert_eq!(got.recipients(), [&bob]);
    // §7.5: to a nick that is not there, of type groupchat, or from outside the room.
    for (who, xml, condition) in [
        (
            &alice,
            format!("<message to='{ROOM}/Nobody' type='chat'><body>x</body></message>"),
            DefinedCondition::ItemNotFound,
        ),
        (
            &alice,
            format!("<message to='{ROOM}/Bob' type='groupchat'><body>x</body></message>"),
            DefinedCondition::BadRequest,
        ),
        (
            &carol,
            format!("<message to='{ROOM}/Bob' type='chat'><body>x</body></message>"),
            DefinedCondition::NotAcceptable,
        ),
    ] {
        let got = world.send(who, &xml);
        assert_eq!(error_condition(got.only_to(who)), Some(condition), "{xml}");
    }
}

#[test]
fn self_ping_says_whether_one_is_still_joined() {
    let (mut world, alice, bob, _) = world();
    join(&mut world, &alice, "Alice");
    let ping = |nick: &str| {
        format!("<iq type='get' id='p' to='{ROOM}/{nick}'><ping xmlns='urn:xmpp:ping'/></iq>")
    };
    let got = world.send(&alice, &ping("Alice"));
    assert!(matches!(iq(got.only_to(&alice)), Iq::Result { .. }));
    let got = world.send(&bob, &ping("Bob"));
    assert_eq!(
        error_condition(got.only_to(&bob)),
        Some(DefinedCondition::NotAcceptable)
    );
    // A ping to another occupant goes to its client, from the pinger's room JID.
    join(&mut world, &bob, "Bob");
    let got = world.send(&bob, &ping("Alice"));
    let forwarded = got.only_to(&alice);
    assert_eq!(from_text(forwarded), format!("{ROOM}/Bob"));
}

#[test]
fn disco_describes_the_service_its_rooms_and_the_server_lists_it() {
    let (mut world, alice, _, _) = world();
    join(&mut world, &alice, "Alice");
    let result = |got: &Deliveries| match iq(got.only_to(&alice)) {
        Iq::Result {
            payload: Some(p), ..
        } => String::from(p),
        other => panic!("not a result: {other:?}"),
    };
    let got = world.send(
        &alice,
        "<iq type='get' id='i' to='conference.localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    );
    let info = result(&got);
    assert!(info.contains("category='conference'"), "{info}");
    assert!(info.contains("'http://jabber.org/protocol/muc'"), "{info}");
    let got = world.send(
        &alice,
        "<iq type='get' id='i' to='conference.localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>",
    );
    assert!(result(&got).contains(ROOM));
    let got = world.send(
        &alice,
        &format!("<iq type='get' id='i' to='{ROOM}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"),
    );
    let info = result(&got);
    for feature in [
        "muc_public",
        "muc_temporary",
        "muc_open",
        "muc_nonanonymous",
    ] {
        assert!(info.contains(feature), "{feature} in {info}");
    }
    let got = world.send(
        &alice,
        "<iq type='get' id='i' to='nope@conference.localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    );
    assert_eq!(
        error_condition(got.only_to(&alice)),
        Some(DefinedCondition::ItemNotFound)
    );
    let got = world.send(
        &alice,
        "<iq type='get' id='i' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>",
    );
    assert!(result(&got).contains("conference.localhost"));
}

#[test]
fn hostile_nicks_with_control_characters_or_too_long_are_not_acceptable() {
    let (mut world, alice, _, _) = world();
    let long = "n".repeat(10 * 1024);
    for nick in ["a\u{7}b", long.as_str()] {
        // A resource that is not a valid JID part never reaches the hub (the stream refuses
        // it); the hub checks the nick it gets all the same.
        let Ok(to) = tokio_xmpp::jid::BareJid::new(ROOM)
            .expect("room")
            .with_resource_str(nick)
        else {
            continue;
        };
        let mut p = tokio_xmpp::parsers::presence::Presence::new(PresenceType::None);
        p.to = Some(to.into());
        let got = Deliveries(world.hub.inbound(&alice, p.into()));
        assert_eq!(
            error_condition(got.only_to(&alice)),
            Some(DefinedCondition::NotAcceptable)
        );
    }
    let got = join(&mut world, &alice, &"n".repeat(65));
    assert_eq!(
        error_condition(got.only_to(&alice)),
        Some(DefinedCondition::NotAcceptable)
    );
    // Nothing was created.
    let got = world.send(
        &alice,
        "<iq type='get' id='i' to='conference.localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>",
    );
    assert!(!xml(got.only_to(&alice)).contains(ROOM));
}

#[test]
fn hostile_one_user_cannot_create_rooms_without_end_nor_overfill_one() {
    let (mut world, alice, bob, carol) = world();
    world.hub.set_muc_limits(MucLimits {
        max_rooms_per_user: 3,
        max_occupants: 2,
        ..MucLimits::default()
    });
    for i in 0..3 {
        let got = world.send(
            &alice,
            &format!("<presence to='r{i}@conference.localhost/A'/>"),
        );
        assert!(codes(got.to(&alice)[0]).contains(&"201".to_string()));
    }
    let got = world.send(&alice, "<presence to='r3@conference.localhost/A'/>");
    assert_eq!(
        error_condition(got.only_to(&alice)),
        Some(DefinedCondition::NotAllowed)
    );
    world.send(&bob, "<presence to='r0@conference.localhost/B'/>");
    let got = world.send(&carol, "<presence to='r0@conference.localhost/C'/>");
    assert_eq!(
        error_condition(got.only_to(&carol)),
        Some(DefinedCondition::ServiceUnavailable)
    );
}

#[test]
fn hostile_presence_to_a_room_of_another_service_creates_nothing_here() {
    let (mut world, alice, _, _) = world();
    let got = world.send(
        &alice,
        "<presence to='lab@conference.example.org/Alice'><x xmlns='http://jabber.org/protocol/muc'/></presence>",
    );
    assert_eq!(
        error_condition(got.only_to(&alice)),
        Some(DefinedCondition::RemoteServerNotFound)
    );
    let got = world.send(
        &alice,
        "<iq type='get' id='i' to='conference.localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>",
    );
    assert!(!xml(got.only_to(&alice)).contains("lab@"));
}

#[test]
fn hostile_errors_and_results_to_a_room_are_never_answered() {
    let (mut world, alice, _, _) = world();
    join(&mut world, &alice, "Alice");
    for xml in [
        format!("<message to='{ROOM}' type='error'/>"),
        format!("<presence to='{ROOM}/Alice' type='error'/>"),
        format!("<iq type='result' id='x' to='{ROOM}'/>"),
        format!("<iq type='error' id='x' to='{ROOM}/Nobody'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"),
        "<presence to='nobody@conference.localhost/X' type='unavailable'/>".to_string(),
    ] {
        let got = world.send(&alice, &xml);
        assert!(got.is_empty(), "{xml}: {}", got.describe());
    }
}

#[test]
fn a_component_at_the_services_domain_takes_its_place() {
    let (mut world, alice, _, _) = world();
    world.component("conference.localhost");
    let got = join(&mut world, &alice, "Alice");
    assert!(got.to(&alice).is_empty(), "{}", got.describe());
    assert_eq!(got.to_component("conference.localhost").len(), 1);
    let got = world.send(
        &alice,
        "<iq type='get' id='i' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>",
    );
    assert_eq!(
        xml(got.only_to(&alice))
            .matches("conference.localhost")
            .count(),
        1
    );
}

#[test]
fn a_presence_update_reaches_everyone_and_an_answer_between_occupants_comes_back() {
    let (mut world, alice, bob, _) = world();
    join(&mut world, &alice, "Alice");
    join(&mut world, &bob, "Bob");
    let got = world.send(
        &bob,
        &format!("<presence to='{ROOM}/Bob'><show>away</show></presence>"),
    );
    for who in [&alice, &bob] {
        let p = got.only_to(who);
        assert_eq!(from_text(p), format!("{ROOM}/Bob"));
        assert_eq!(
            presence(p).show,
            Some(tokio_xmpp::parsers::presence::Show::Away)
        );
        assert_eq!(item(p, "role").as_deref(), Some("participant"));
    }
    // Bob pings Alice's room JID; her answer goes back to him from her room JID.
    let got = world.send(
        &bob,
        &format!("<iq type='get' id='p1' to='{ROOM}/Alice'><ping xmlns='urn:xmpp:ping'/></iq>"),
    );
    assert_eq!(from_text(got.only_to(&alice)), format!("{ROOM}/Bob"));
    let got = world.send(
        &alice,
        &format!("<iq type='result' id='p1' to='{ROOM}/Bob'/>"),
    );
    let answer = got.only_to(&bob);
    assert!(matches!(iq(answer), Iq::Result { .. }));
    assert_eq!(from_text(answer), format!("{ROOM}/Alice"));
}
