//! Administering a room (XEP-0045 §8, §9, §10) as transcripts: who asks for what change, who
//! gets which presence, who is refused.

use tokio_xmpp::jid::FullJid;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::presence::Type as PresenceType;
use tokio_xmpp::parsers::stanza_error::DefinedCondition;
use tokio_xmpp::Stanza;

use super::super::super::testing::*;
use crate::server::limits::MucLimits;

pub(crate) const ROOM: &str = "lab@conference.localhost";

/// A world with alice, bob, carol and dave online; alice created ROOM as Alice, bob and
/// carol joined it as Bob and Carol.
pub(crate) fn room() -> (World, FullJid, FullJid, FullJid) {
    let mut world = World::with_accounts(&["alice", "bob", "carol", "dave"]);
    let alice = world.online("alice/phone", 0);
    let bob = world.online("bob/laptop", 0);
    let carol = world.online("carol/desk", 0);
    join(&mut world, &alice, "Alice");
    join(&mut world, &bob, "Bob");
    join(&mut world, &carol, "Carol");
    (world, alice, bob, carol)
}

/// `who` joins ROOM as `nick`.
pub(crate) fn join(world: &mut World, who: &FullJid, nick: &str) -> Deliveries {
    world.send(
        who,
        &format!(
            "<presence to='{ROOM}/{nick}'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
        ),
    )
}

/// `who` sends a `muc#admin` set with `items` to ROOM.
fn admin_set(world: &mut World, who: &FullJid, items: &str) -> Deliveries {
    world.send(
        who,
        &format!(
            "<iq type='set' id='a1' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#admin'>{items}</query></iq>"
        ),
    )
}

/// `who` asks ROOM for the list selected by `item`.
fn admin_get(world: &mut World, who: &FullJid, item: &str) -> Deliveries {
    world.send(
        who,
        &format!(
            "<iq type='get' id='l1' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#admin'>{item}</query></iq>"
        ),
    )
}

/// The status codes of a room presence, sorted.
pub(crate) fn codes(stanza: &Stanza) -> Vec<String> {
    let mut codes: Vec<String> = muc_x(stanza)
        .map(|x| {
            x.children()
                .filter(|c| c.is("status", ns::MUC_USER))
                .filter_map(|s| s.attr("code").map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    codes.sort();
    codes
}

fn muc_x(stanza: &Stanza) -> Option<&Element> {
    presence(stanza)
        .payloads
        .iter()
        .find(|p| p.is("x", ns::MUC_USER))
}

/// The `<item/>` of a room presence.
pub(crate) fn item(stanza: &Stanza) -> &Element {
    muc_x(stanza)
        .and_then(|x| x.get_child("item", ns::MUC_USER))
        .expect("a muc#user item")
}

fn attr<'a>(element: &'a Element, name: &'a str) -> Option<&'a str> {
    element.attr(name)
}

/// Whether `stanza` is the IQ result for `id`.
fn is_result(stanza: &Stanza) -> bool {
    matches!(stanza, Stanza::Iq(Iq::Result { .. }))
}

/// The items of a list result, as `(affiliation or role, jid)`.
fn list(stanza: &Stanza) -> Vec<(String, String)> {
    let Stanza::Iq(Iq::Result {
        payload: Some(query),
        ..
    }) = stanza
    else {
        panic!("not a list: {}", xml(stanza));
    };
    query
        .children()
        .map(|i| {
            (
                i.attr("affiliation").unwrap_or_default().to_string(),
                i.attr("jid").unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn condition(got: &Deliveries, who: &FullJid) -> Option<DefinedCondition> {
    error_condition(got.only_to(who))
}

#[test]
fn a_moderator_kicks_a_participant_and_everyone_sees_307() {
    let (mut world, alice, bob, carol) = room();
    let got = admin_set(
        &mut world,
        &alice,
        "<item nick='Bob' role='none'><reason>spam</reason></item>",
    );
    // Bob learns he was kicked, by whom and why: 307 and 110, role none.
    let to_bob = got.only_to(&bob);
    assert_eq!(presence_type(to_bob), PresenceType::Unavailable);
    assert_eq!(codes(to_bob), ["110", "307"]);
    assert_eq!(attr(item(to_bob), "role"), Some("none"));
    let actor = item(to_bob)
        .get_child("actor", ns::MUC_USER)
        .expect("actor");
    assert_eq!(actor.attr("nick"), Some("Alice"));
    assert_eq!(
        item(to_bob)
            .get_child("reason", ns::MUC_USER)
            .map(Element::text)
            .as_deref(),
        Some("spam")
    );
    // Carol sees Bob go with 307 only.
    let to_carol = got.only_to(&carol);
    assert_eq!(codes(to_carol), ["307"]);
    assert_eq!(
        from_of(to_carol).map(|j| j.to_string()),
        Some(format!("{ROOM}/Bob"))
    );
    // Alice gets the same presence, then her result.
    let to_alice = got.to(&alice);
    assert_eq!(to_alice.len(), 2, "{}", got.describe());
    assert_eq!(codes(to_alice[0]), ["307"]);
    assert!(is_result(to_alice[1]));
    // Bob is out: his groupchat is refused.
    let got = world.send(
        &bob,
        &format!("<message to='{ROOM}' type='groupchat'><body>back?</body></message>"),
    );
    assert_eq!(condition(&got, &bob), Some(DefinedCondition::NotAcceptable));
}

#[test]
fn a_participant_cannot_kick_and_a_moderator_cannot_kick_the_owner() {
    let (mut world, alice, bob, carol) = room();
    // §8.2: not a moderator.
    let got = admin_set(&mut world, &bob, "<item nick='Alice' role='none'/>");
    assert_eq!(condition(&got, &bob), Some(DefinedCondition::Forbidden));
    // Alice makes Bob a moderator (§9.6): everyone sees his new role.
    let got = admin_set(&mut world, &alice, "<item nick='Bob' role='moderator'/>");
    assert_eq!(attr(item(got.only_to(&carol)), "role"), Some("moderator"));
    assert_eq!(codes(got.only_to(&bob)), ["110"]);
    // A moderator without affiliation cannot kick the owner (§8.2).
    let got = admin_set(&mut world, &bob, "<item nick='Alice' role='none'/>");
    assert_eq!(condition(&got, &bob), Some(DefinedCondition::NotAllowed));
    // But may kick Carol, and cannot make her a moderator (§9.6).
    let got = admin_set(&mut world, &bob, "<item nick='Carol' role='moderator'/>");
    assert_eq!(condition(&got, &bob), Some(DefinedCondition::Forbidden));
    let got = admin_set(&mut world, &bob, "<item nick='Carol' role='none'/>");
    assert_eq!(codes(got.only_to(&carol)), ["110", "307"]);
    // Nobody by that nick.
    let got = admin_set(&mut world, &alice, "<item nick='Nobody' role='none'/>");
    assert_eq!(
        condition(&got, &alice),
        Some(DefinedCondition::ItemNotFound)
    );
}

#[test]
fn voice_is_revoked_and_granted_and_a_visitor_is_silent_in_a_moderated_room() {
    let (mut world, alice, bob, carol) = room();
    world
        .hub
        .muc
        .rooms
        .get_mut(&bare(ROOM))
        .expect("the room")
        .config
        .moderated = true;
    // §8.4: revoke voice.
    let got = admin_set(&mut world, &alice, "<item nick='Bob' role='visitor'/>");
    assert_eq!(attr(item(got.only_to(&carol)), "role"), Some("visitor"));
    let got = world.send(
        &bob,
        &format!("<message to='{ROOM}' type='groupchat'><body>hi</body></message>"),
    );
    // §7.4: a visitor in a moderated room may not speak; nobody gets anything.
    assert_eq!(condition(&got, &bob), Some(DefinedCondition::Forbidden));
    assert!(got.to(&carol).is_empty());
    // §8.5: the voice list is the participants.
    let got = admin_get(&mut world, &alice, "<item role='participant'/>");
    assert_eq!(
        list(got.only_to(&alice)),
        [("none".to_string(), "carol@localhost/desk".to_string())]
    );
    // §8.3: grant voice; Bob speaks again.
    admin_set(&mut world, &alice, "<item nick='Bob' role='participant'/>");
    let got = world.send(
        &bob,
        &format!("<message to='{ROOM}' type='groupchat'><body>hi</body></message>"),
    );
    assert_eq!(body(got.only_to(&carol)), Some("hi"));
    // A participant cannot ask for the voice list.
    let got = admin_get(&mut world, &carol, "<item role='participant'/>");
    assert_eq!(condition(&got, &carol), Some(DefinedCondition::Forbidden));
}

#[test]
fn a_ban_removes_the_occupant_with_301_and_lists_it() {
    let (mut world, alice, bob, carol) = room();
    let got = admin_set(
        &mut world,
        &alice,
        "<item affiliation='outcast' jid='bob@localhost'><reason>trolling</reason></item>",
    );
    let to_bob = got.only_to(&bob);
    assert_eq!(codes(to_bob), ["110", "301"]);
    assert_eq!(attr(item(to_bob), "affiliation"), Some("outcast"));
    assert_eq!(attr(item(to_bob), "role"), Some("none"));
    assert_eq!(codes(got.only_to(&carol)), ["301"]);
    // §9.2: the ban list.
    let got = admin_get(&mut world, &alice, "<item affiliation='outcast'/>");
    assert_eq!(
        list(got.only_to(&alice)),
        [("outcast".to_string(), "bob@localhost".to_string())]
    );
    // Carol, a participant, may not see it.
    let got = admin_get(&mut world, &carol, "<item affiliation='outcast'/>");
    assert_eq!(condition(&got, &carol), Some(DefinedCondition::Forbidden));
    // Nor ban anyone.
    let got = admin_set(
        &mut world,
        &carol,
        "<item affiliation='outcast' jid='alice@localhost'/>",
    );
    assert_eq!(condition(&got, &carol), Some(DefinedCondition::Forbidden));
}

#[test]
fn members_are_granted_and_revoked_and_a_revoked_member_leaves_a_members_only_room() {
    let (mut world, alice, bob, carol) = room();
    // §9.3: grant membership to Bob (present) and dave (absent).
    let got = admin_set(
        &mut world,
        &alice,
        "<item affiliation='member' jid='bob@localhost'/><item affiliation='member' jid='dave@localhost'/>",
    );
    assert_eq!(
        attr(item(got.only_to(&carol)), "affiliation"),
        Some("member")
    );
    assert_eq!(attr(item(got.only_to(&carol)), "role"), Some("participant"));
    let got = admin_get(&mut world, &alice, "<item affiliation='member'/>");
    assert_eq!(
        list(got.only_to(&alice)),
        [
            ("member".to_string(), "bob@localhost".to_string()),
            ("member".to_string(), "dave@localhost".to_string())
        ]
    );
    // §9.4: in a members-only room, a revoked member present is removed with 321.
    world
        .hub
        .muc
        .rooms
        .get_mut(&bare(ROOM))
        .expect("the room")
        .config
        .members_only = true;
    let got = admin_set(
        &mut world,
        &alice,
        "<item affiliation='none' jid='bob@localhost'/>",
    );
    assert_eq!(codes(got.only_to(&bob)), ["110", "321"]);
    assert_eq!(codes(got.only_to(&carol)), ["321"]);
    // §9.5: members may see the member list of a members-only room that shows real JIDs.
    let got = admin_set(
        &mut world,
        &alice,
        "<item affiliation='member' jid='carol@localhost'/>",
    );
    assert!(is_result(got.to(&alice).last().expect("a result")));
    let got = admin_get(&mut world, &carol, "<item affiliation='member'/>");
    assert_eq!(list(got.only_to(&carol)).len(), 2);
}

#[test]
fn admins_are_made_by_owners_and_cannot_touch_owners_or_admins() {
    let (mut world, alice, bob, carol) = room();
    // §10.6: the owner makes Bob an admin: he becomes a moderator.
    let got = admin_set(
        &mut world,
        &alice,
        "<item affiliation='admin' jid='bob@localhost'/>",
    );
    assert_eq!(attr(item(got.only_to(&carol)), "role"), Some("moderator"));
    assert_eq!(
        attr(item(got.only_to(&carol)), "affiliation"),
        Some("admin")
    );
    // An admin cannot make admins (§10.6) nor ban the owner (§9.1).
    let got = admin_set(
        &mut world,
        &bob,
        "<item affiliation='admin' jid='carol@localhost'/>",
    );
    assert_eq!(condition(&got, &bob), Some(DefinedCondition::Forbidden));
    let got = admin_set(
        &mut world,
        &bob,
        "<item affiliation='outcast' jid='alice@localhost'/>",
    );
    assert_eq!(condition(&got, &bob), Some(DefinedCondition::NotAllowed));
    // Nor kick her, nor take her moderator role away (§8.2, §9.7).
    let got = admin_set(&mut world, &bob, "<item nick='Alice' role='none'/>");
    assert_eq!(condition(&got, &bob), Some(DefinedCondition::NotAllowed));
    // But he bans Carol, and sees the ban list but not the owner list (§10.8).
    let got = admin_set(
        &mut world,
        &bob,
        "<item affiliation='outcast' jid='carol@localhost'/>",
    );
    assert_eq!(codes(got.only_to(&carol)), ["110", "301"]);
    let got = admin_get(&mut world, &bob, "<item affiliation='owner'/>");
    assert_eq!(condition(&got, &bob), Some(DefinedCondition::Forbidden));
    // §10.7: revoking admin makes Bob a participant again.
    let got = admin_set(
        &mut world,
        &alice,
        "<item affiliation='none' jid='bob@localhost'/>",
    );
    assert_eq!(attr(item(got.to(&alice)[0]), "role"), Some("participant"));
    let got = admin_get(&mut world, &alice, "<item affiliation='admin'/>");
    assert!(list(got.only_to(&alice)).is_empty());
}

#[test]
fn the_last_owner_cannot_go_but_one_of_two_can() {
    let (mut world, alice, bob, _) = room();
    let got = admin_set(
        &mut world,
        &alice,
        "<item affiliation='admin' jid='alice@localhost'/>",
    );
    assert_eq!(condition(&got, &alice), Some(DefinedCondition::Conflict));
    // §10.3: a second owner; then the first may step down (§10.7).
    admin_set(
        &mut world,
        &alice,
        "<item affiliation='owner' jid='bob@localhost'/>",
    );
    let got = admin_get(&mut world, &bob, "<item affiliation='owner'/>");
    assert_eq!(list(got.only_to(&bob)).len(), 2);
    let got = admin_set(
        &mut world,
        &alice,
        "<item affiliation='member' jid='alice@localhost'/>",
    );
    let own = got.to(&alice);
    assert_eq!(attr(item(own[0]), "affiliation"), Some("member"));
    assert_eq!(attr(item(own[0]), "role"), Some("participant"));
    assert!(is_result(own.last().expect("a result")));
}

#[test]
fn a_request_is_applied_whole_or_not_at_all() {
    let (mut world, alice, _, carol) = room();
    // The second item is refused (the last owner), so Carol is not banned either.
    let got = admin_set(
        &mut world,
        &alice,
        "<item affiliation='outcast' jid='carol@localhost'/><item affiliation='none' jid='alice@localhost'/>",
    );
    assert_eq!(condition(&got, &alice), Some(DefinedCondition::Conflict));
    assert!(got.to(&carol).is_empty());
    // Items without what to change, or with unknown values, are bad requests.
    for bad in [
        "",
        "<item nick='Bob'/>",
        "<item role='boss' nick='Bob'/>",
        "<item affiliation='king' jid='bob@localhost'/>",
        "<item role='none' affiliation='none' nick='Bob'/>",
        "<item role='none' jid='bob@localhost'/>",
    ] {
        let got = admin_set(&mut world, &alice, bad);
        assert_eq!(
            condition(&got, &alice),
            Some(DefinedCondition::BadRequest),
            "{bad}"
        );
    }
    let got = admin_set(&mut world, &alice, "<item affiliation='member' jid='@@'/>");
    assert_eq!(
        condition(&got, &alice),
        Some(DefinedCondition::JidMalformed)
    );
}

#[test]
fn an_absent_owner_bans_the_last_occupant_and_the_temporary_room_is_gone() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    let bob = world.online("bob/laptop", 0);
    join(&mut world, &alice, "Alice");
    join(&mut world, &bob, "Bob");
    world.send(
        &alice,
        &format!("<presence to='{ROOM}/Alice' type='unavailable'/>"),
    );
    let got = admin_set(
        &mut world,
        &alice,
        "<item affiliation='outcast' jid='bob@localhost'/>",
    );
    assert_eq!(codes(got.only_to(&bob)), ["110", "301"]);
    assert!(is_result(got.only_to(&alice)));
    assert!(!world.hub.muc.rooms.contains_key(&bare(ROOM)));
    // An admin IQ to a room that does not exist.
    let got = admin_get(&mut world, &alice, "<item affiliation='outcast'/>");
    assert_eq!(
        condition(&got, &alice),
        Some(DefinedCondition::ItemNotFound)
    );
}

#[test]
fn hostile_a_ban_list_too_long_for_one_request_is_refused_whole_with_a_reason() {
    let (mut world, alice, _, carol) = room();
    world.hub.set_muc_limits(MucLimits {
        max_admin_items: 5,
        max_affiliations: 8,
        ..MucLimits::default()
    });
    let items = |range: std::ops::Range<usize>| -> String {
        range
            .map(|i| format!("<item affiliation='outcast' jid='spammer{i}@example.org'/>"))
            .collect()
    };
    let mut with_carol = items(0..5);
    with_carol.push_str("<item affiliation='outcast' jid='carol@localhost'/>");
    let got = admin_set(&mut world, &alice, &with_carol);
    let refusal = got.only_to(&alice);
    assert_eq!(
        error_condition(refusal),
        Some(DefinedCondition::PolicyViolation)
    );
    assert!(xml(refusal).contains("at most 5 items"), "{}", xml(refusal));
    assert!(got.to(&carol).is_empty());
    // Within the item bound, but past the room's affiliations (the owner counts too).
    admin_set(&mut world, &alice, &items(0..5));
    let got = admin_set(&mut world, &alice, &items(5..8));
    let refusal = got.only_to(&alice);
    assert_eq!(
        error_condition(refusal),
        Some(DefinedCondition::PolicyViolation)
    );
    assert!(
        xml(refusal).contains("at most 8 affiliations"),
        "{}",
        xml(refusal)
    );
    let got = admin_get(&mut world, &alice, "<item affiliation='outcast'/>");
    assert_eq!(list(got.only_to(&alice)).len(), 5);
}

#[test]
fn only_moderators_change_the_subject_when_the_room_says_so() {
    let (mut world, alice, bob, carol) = room();
    world
        .hub
        .muc
        .rooms
        .get_mut(&bare(ROOM))
        .expect("the room")
        .config
        .change_subject = false;
    let subject =
        format!("<message to='{ROOM}' type='groupchat'><subject>mine</subject></message>");
    let got = world.send(&bob, &subject);
    let refusal = got.only_to(&bob);
    assert_eq!(error_condition(refusal), Some(DefinedCondition::Forbidden));
    assert!(got.to(&carol).is_empty());
    // §8.1: a moderator may.
    let got = world.send(&alice, &subject);
    assert_eq!(got.to(&carol).len(), 1);
}

#[test]
fn hostile_a_groupchat_flood_is_cut_at_the_burst_and_the_others_still_speak() {
    let (mut world, _, bob, carol) = room();
    world.hub.set_muc_limits(MucLimits {
        messages_per_minute: 1,
        message_burst: 5,
        ..MucLimits::default()
    });
    let mut delivered = 0;
    for i in 0..50 {
        let got = world.send(
            &bob,
            &format!("<message to='{ROOM}' type='groupchat'><body>flood {i}</body></message>"),
        );
        if got.to(&carol).is_empty() {
            // Refused, with nothing delivered and a reason for the sender.
            let refusal = got.only_to(&bob);
            assert_eq!(
                error_condition(refusal),
                Some(DefinedCondition::ResourceConstraint)
            );
            assert!(
                xml(refusal).contains("at most 1 a minute"),
                "{}",
                xml(refusal)
            );
        } else {
            delivered += 1;
        }
    }
    assert_eq!(delivered, 5);
    // Carol's bucket is her own.
    let got = world.send(
        &carol,
        &format!("<message to='{ROOM}' type='groupchat'><body>still here</body></message>"),
    );
    assert_eq!(body(got.only_to(&bob)), Some("still here"));
}

#[test]
fn an_unthrottled_account_posts_to_a_room_past_the_burst() {
    let mut world = World::with_accounts(&["bob", "carol"]);
    // `--unthrottled bob`: the bot, posting every alert of a busy building to its room.
    let limits = MucLimits {
        messages_per_minute: 1,
        message_burst: 5,
        ..MucLimits::default()
    };
    world.hub.muc_start(&limits, &["bob".to_string()]);
    let bob = world.online("bob/laptop", 0);
    let carol = world.online("carol/desk", 0);
    join(&mut world, &bob, "Bob");
    join(&mut world, &carol, "Carol");
    for i in 0..50 {
        let got = world.send(
            &bob,
            &format!("<message to='{ROOM}' type='groupchat'><body>alert {i}</body></message>"),
        );
        assert_eq!(
            body(got.only_to(&carol)),
            Some(format!("alert {i}").as_str())
        );
    }
    // Everyone else still has the limit.
    let refused = (0..10)
        .filter(|i| {
            let got = world.send(
                &carol,
                &format!("<message to='{ROOM}' type='groupchat'><body>c{i}</body></message>"),
            );
            got.to(&bob).is_empty()
        })
        .count();
    assert_eq!(refused, 5);
}

#[test]
fn hostile_a_join_flood_is_refused_past_the_burst_and_creates_no_rooms() {
    let mut world = World::with_accounts(&["mallory"]);
    let mallory = world.online("mallory/bot", 0);
    world.hub.set_muc_limits(MucLimits {
        joins_per_minute: 1,
        join_burst: 3,
        ..MucLimits::default()
    });
    let mut refused = 0;
    for i in 0..20 {
        let got = world.send(
            &mallory,
            &format!("<presence to='r{i}@conference.localhost/M'/>"),
        );
        if let Some(condition) = error_condition(got.to(&mallory)[0]) {
            assert_eq!(condition, DefinedCondition::ResourceConstraint);
            refused += 1;
        }
    }
    assert_eq!(refused, 17);
    assert_eq!(world.hub.muc.rooms.len(), 3);
}

#[test]
fn hostile_a_presence_flood_in_a_room_is_cut_at_the_burst() {
    let (mut world, _, bob, carol) = room();
    world.hub.set_muc_limits(MucLimits {
        messages_per_minute: 1,
        message_burst: 3,
        ..MucLimits::default()
    });
    let mut broadcast = 0;
    for i in 0..20 {
        let got = world.send(
            &bob,
            &format!("<presence to='{ROOM}/Bob'><status>{i}</status></presence>"),
        );
        if got.to(&carol).is_empty() {
            assert_eq!(
                error_condition(got.only_to(&bob)),
                Some(DefinedCondition::ResourceConstraint)
            );
        } else {
            broadcast += 1;
        }
    }
    assert_eq!(broadcast, 3);
    // Nick changes are presence to everyone too.
    let got = world.send(&bob, &format!("<presence to='{ROOM}/Robert'/>"));
    assert_eq!(
        error_condition(got.only_to(&bob)),
        Some(DefinedCondition::ResourceConstraint)
    );
}
