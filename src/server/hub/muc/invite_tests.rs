//! Invitations through a room (XEP-0045 §7.8.2, §7.8.3) as transcripts.

use tokio_xmpp::jid::FullJid;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::stanza_error::DefinedCondition;
use tokio_xmpp::Stanza;

use super::super::super::testing::*;
use super::super::admin::tests::{room, ROOM};
use super::super::room::Affiliation;
use crate::server::limits::MucLimits;

/// `who` asks ROOM to invite each of `invitees`.
fn invite(world: &mut World, who: &FullJid, invitees: &[&str]) -> Deliveries {
    let invites: String = invitees
        .iter()
        .map(|to| format!("<invite to='{to}'><reason>come and see</reason></invite>"))
        .collect();
    world.send(
        who,
        &format!(
            "<message to='{ROOM}' id='inv'><x xmlns='http://jabber.org/protocol/muc#user'>{invites}</x></message>"
        ),
    )
}

/// The `<invite/>` or `<decline/>` (`name`) of a message from the room.
fn mediated<'a>(stanza: &'a Stanza, name: &str) -> &'a Element {
    message(stanza)
        .payloads
        .iter()
        .find(|p| p.is("x", ns::MUC_USER))
        .and_then(|x| x.get_child(name, ns::MUC_USER))
        .unwrap_or_else(|| panic!("no {name} in {}", xml(stanza)))
}

fn reason(element: &Element) -> Option<String> {
    element.get_child("reason", ns::MUC_USER).map(Element::text)
}

fn config(world: &mut World) -> &mut super::super::config::RoomConfig {
    &mut world
        .hub
        .muc
        .rooms
        .get_mut(&bare(ROOM))
        .expect("the room")
        .config
}

#[test]
fn an_occupant_invites_through_the_room_and_the_invitee_learns_who_and_why() {
    let (mut world, alice, _, _) = room();
    let dave = world.online("dave/tablet", 0);
    let got = invite(&mut world, &alice, &["dave@localhost"]);
    let to_dave = got.only_to(&dave);
    assert_eq!(
        from_of(to_dave).map(|j| j.to_string()).as_deref(),
        Some(ROOM)
    );
    let invite = mediated(to_dave, "invite");
    assert_eq!(invite.attr("from"), Some("alice@localhost/phone"));
    assert_eq!(reason(invite).as_deref(), Some("come and see"));
    // A body for clients that do not know invitations.
    assert!(body(to_dave).is_some_and(|b| b.contains(ROOM)));
    assert!(got.to(&alice).is_empty(), "{}", got.describe());
}

#[test]
fn a_password_protected_members_only_room_sends_its_password_and_makes_the_invitee_a_member() {
    let (mut world, alice, _, _) = room();
    let dave = world.online("dave/tablet", 0);
    config(&mut world).password = Some("sesame".to_string());
    config(&mut world).members_only = true;
    let got = invite(&mut world, &alice, &["dave@localhost"]);
    let x = message(got.only_to(&dave))
        .payloads
        .iter()
        .find(|p| p.is("x", ns::MUC_USER))
        .expect("muc#user");
    assert_eq!(
        x.get_child("password", ns::MUC_USER)
            .map(Element::text)
            .as_deref(),
        Some("sesame")
    );
    // §7.8.2: the room may add the invitee to its member list.
    let room = world.hub.muc.rooms.get(&bare(ROOM)).expect("the room");
    assert_eq!(
        room.affiliation(&bare("dave@localhost")),
        Affiliation::Member
    );
}

#[test]
fn without_allow_invites_only_admins_and_owners_invite() {
    let (mut world, alice, bob, _) = room();
    let dave = world.online("dave/tablet", 0);
    config(&mut world).allow_invites = false;
    let got = invite(&mut world, &bob, &["dave@localhost"]);
    assert_eq!(
        error_condition(got.only_to(&bob)),
        Some(DefinedCondition::Forbidden)
    );
    assert!(got.to(&dave).is_empty());
    let got = invite(&mut world, &alice, &["dave@localhost"]);
    assert_eq!(got.to(&dave).len(), 1);
}

#[test]
fn outsiders_unknown_invitees_and_too_many_invitations_are_refused() {
    let (mut world, alice, _, _) = room();
    let dave = world.online("dave/tablet", 0);
    // Dave is not in the room.
    let got = invite(&mut world, &dave, &["carol@localhost"]);
    assert_eq!(
        error_condition(got.only_to(&dave)),
        Some(DefinedCondition::NotAcceptable)
    );
    // No such account here, and no federation.
    let got = invite(&mut world, &alice, &["someone@example.org"]);
    assert_eq!(
        error_condition(got.only_to(&alice)),
        Some(DefinedCondition::ItemNotFound)
    );
    // Eleven at once.
    let eleven = ["dave@localhost"; 11];
    let got = invite(&mut world, &alice, &eleven);
    assert_eq!(
        error_condition(got.only_to(&alice)),
        Some(DefinedCondition::PolicyViolation)
    );
    assert!(got.to(&dave).is_empty());
}

#[test]
fn hostile_invitations_count_against_the_inviters_message_rate() {
    let (mut world, alice, _, _) = room();
    let dave = world.online("dave/tablet", 0);
    world.hub.set_muc_limits(MucLimits {
        messages_per_minute: 1,
        message_burst: 12,
        ..MucLimits::default()
    });
    let ten = ["dave@localhost"; 10];
    assert_eq!(invite(&mut world, &alice, &ten).to(&dave).len(), 10);
    // Two tokens left: ten more are refused whole.
    let got = invite(&mut world, &alice, &ten);
    assert_eq!(
        error_condition(got.only_to(&alice)),
        Some(DefinedCondition::ResourceConstraint)
    );
    assert!(got.to(&dave).is_empty());
}

#[test]
fn a_decline_goes_back_to_the_inviter_through_the_room() {
    let (mut world, alice, _, _) = room();
    let dave = world.online("dave/tablet", 0);
    invite(&mut world, &alice, &["dave@localhost"]);
    let got = world.send(
        &dave,
        &format!(
            "<message to='{ROOM}'><x xmlns='http://jabber.org/protocol/muc#user'><decline to='alice@localhost/phone'><reason>busy</reason></decline></x></message>"
        ),
    );
    let to_alice = got.only_to(&alice);
    assert_eq!(
        from_of(to_alice).map(|j| j.to_string()).as_deref(),
        Some(ROOM)
    );
    let decline = mediated(to_alice, "decline");
    assert_eq!(decline.attr("from"), Some("dave@localhost"));
    assert_eq!(reason(decline).as_deref(), Some("busy"));
    // A decline without an addressee is a bad request.
    let got = world.send(
        &dave,
        &format!(
            "<message to='{ROOM}'><x xmlns='http://jabber.org/protocol/muc#user'><decline/></x></message>"
        ),
    );
    assert_eq!(
        error_condition(got.only_to(&dave)),
        Some(DefinedCondition::BadRequest)
    );
}
