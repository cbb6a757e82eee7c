//! The owner's side of rooms (XEP-0045 §10) as transcripts: the configuration form, locked
//! rooms, what a configuration makes joins and presence do, destroying, persistence.

use tokio_xmpp::jid::FullJid;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::presence::Type as PresenceType;
use tokio_xmpp::parsers::stanza_error::DefinedCondition;
use tokio_xmpp::Stanza;

use super::super::super::testing::*;
use super::super::room::Affiliation;
use crate::server::limits::MucLimits;

const ROOM: &str = "lab@conference.localhost";
const OWNER_NS: &str = "http://jabber.org/protocol/muc#owner";

/// A world with alice, bob and carol online, and alice in ROOM, its owner.
fn world_with_room() -> (World, FullJid, FullJid, FullJid) {
    let mut world = World::with_accounts(&["alice", "bob", "carol"]);
    let alice = world.online("alice/phone", 0);
    let bob = world.online("bob/laptop", 0);
    let carol = world.online("carol/desk", 0);
    join(&mut world, &alice, "Alice", "");
    (world, alice, bob, carol)
}

/// `who` joins ROOM as `nick`, with `inside` in the muc `<x/>`.
fn join(world: &mut World, who: &FullJid, nick: &str, inside: &str) -> Deliveries {
    world.send(
        who,
        &format!(
            "<presence to='{ROOM}/{nick}'><x xmlns='http://jabber.org/protocol/muc'>{inside}</x></presence>"
        ),
    )
}

/// `who` sends an owner IQ of `kind` with `query` inside; the answer to it.
fn owner_iq(world: &mut World, who: &FullJid, kind: &str, query: &str) -> Stanza {
    let got = world.send(
        who,
        &format!(
            "<iq type='{kind}' id='o1' to='{ROOM}'><query xmlns='{OWNER_NS}'>{query}</query></iq>"
        ),
    );
    got.to(who)
        .into_iter()
        .find(|s| matches!(s, Stanza::Iq(_)))
        .map(|s| Stanza::Iq(iq(s).clone()))
        .unwrap_or_else(|| panic!("no answer: {}", got.describe()))
}

/// A submitted `muc#roomconfig` form with `fields` (`var`, value).
fn submit(fields: &[(&str, &str)]) -> String {
    let mut form = String::from(
        "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>",
    );
    for (var, value) in fields {
        form.push_str(&format!(
            "<field var='{var}'><value>{value}</value></field>"
        ));
    }
    form.push_str("</x>");
    form
}

/// Alice submits `fields`; the answer must be a result.
fn configure(world: &mut World, alice: &FullJid, fields: &[(&str, &str)]) -> Deliveries {
    let got = world.send(
        alice,
        &format!(
            "<iq type='set' id='c1' to='{ROOM}'><query xmlns='{OWNER_NS}'>{}</query></iq>",
            submit(fields)
        ),
    );
    let answer = got
        .to(alice)
        .into_iter()
        .find(|s| matches!(s, Stanza::Iq(_)));
    assert!(
        matches!(answer, Some(Stanza::Iq(Iq::Result { .. }))),
        "{}",
        got.describe()
    );
    got
}

/// The payload of an IQ result.
fn result_payload(stanza: &Stanza) -> Element {
    match iq(stanza) {
        Iq::Result {
            payload: Some(p), ..
        } => p.clone(),
        other => panic!("not a result with a payload: {other:?}"),
    }
}

/// The values of a form's fields, by var.
fn field_value(form: &Element, var: &str) -> Option<String> {
    form.children()
        .find(|f| f.attr("var") == Some(var))?
        .get_child("value", ns::DATA_FORMS)
        .map(Element::text)
}

/// The muc#user `<x/>` of a stanza.
fn muc_user(stanza: &Stanza) -> Option<&Element> {
    let payloads = match stanza {
        Stanza::Presence(p) => &p.payloads,
        Stanza::Message(m) => &m.payloads,
        Stanza::Iq(_) => return None,
    };
    payloads.iter().find(|p| p.is("x", ns::MUC_USER))
}

/// The status codes of a room presence or message.
fn codes(stanza: &Stanza) -> Vec<String> {
    muc_user(stanza)
        .map(|x| {
            x.children()
                .filter(|c| c.is("status", ns::MUC_USER))
                .filter_map(|s| s.attr("code").map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// An attribute of the `<item/>` of a room presence.
fn item(stanza: &Stanza, attr: &str) -> Option<String> {
    muc_user(stanza)?
        .get_child("item", ns::MUC_USER)?
        .attr(attr)
        .map(str::to_string)
}

/// The error condition of the one stanza `who` got.
fn refused(got: &Deliveries, who: &FullJid) -> Option<DefinedCondition> {
    error_condition(got.only_to(who))
}

/// The features of ROOM's disco#info, asked by `who`.
fn features(world: &mut World, who: &FullJid) -> Vec<String> {
    let got = world.send(
        who,
        &format!("<iq type='get' id='d1' to='{ROOM}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"),
    );
    result_payload(got.only_to(who))
        .children()
        .filter(|c| c.name() == "feature")
        .filter_map(|c| c.attr("var").map(str::to_string))
        .collect()
}

/// The rooms the service lists, asked by `who`.
fn listed(world: &mut World, who: &FullJid) -> Vec<String> {
    let got = world.send(
        who,
        "<iq type='get' id='i1' to='conference.localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>",
    );
    result_payload(got.only_to(who))
        .children()
        .filter_map(|c| c.attr("jid").map(str::to_string))
        .collect()
}

#[test]
fn the_owner_gets_the_filled_form_and_nobody_else_does() {
    let (mut world, alice, bob, _) = world_with_room();
    let answer = owner_iq(&mut world, &alice, "get", "");
    let query = result_payload(&answer);
    assert!(query.is("query", OWNER_NS));
    let form = query.get_child("x", ns::DATA_FORMS).expect("a data form");
    assert_eq!(form.attr("type"), Some("form"));
    assert_eq!(
        field_value(form, "FORM_TYPE").as_deref(),
        Some("http://jabber.org/protocol/muc#roomconfig")
    );
    for (var, value) in [
        ("muc#roomconfig_persistentroom", "0"),
        ("muc#roomconfig_publicroom", "1"),
        ("muc#roomconfig_membersonly", "0"),
        ("muc#roomconfig_passwordprotectedroom", "0"),
        ("muc#roomconfig_whois", "anyone"),
        ("muc#roomconfig_maxusers", "200"),
        ("muc#roomconfig_historylength", "20"),
    ] {
        assert_eq!(field_value(form, var).as_deref(), Some(value), "{var}");
    }
    // Bob is in the room, and still not its owner (§10.2).
    join(&mut world, &bob, "Bob", "");
    for (kind, query) in [("get", String::new()), ("set", submit(&[]))] {
        let answer = owner_iq(&mut world, &bob, kind, &query);
        assert_eq!(error_condition(&answer), Some(DefinedCondition::Forbidden));
    }
    // A room that does not exist.
    let got = world.send(
        &alice,
        &format!("<iq type='get' id='o2' to='nowhere@conference.localhost'><query xmlns='{OWNER_NS}'/></iq>"),
    );
    assert_eq!(refused(&got, &alice), Some(DefinedCondition::ItemNotFound));
}

#[test]
fn a_new_configuration_shows_in_disco_and_occupants_are_told_with_104() {
    let (mut world, alice, bob, _) = world_with_room();
    join(&mut world, &bob, "Bob", "");
    assert!(listed(&mut world, &bob).contains(&ROOM.to_string()));
    let got = configure(
        &mut world,
        &alice,
        &[
            ("muc#roomconfig_roomname", "The lab"),
            ("muc#roomconfig_roomdesc", "Sensors and people"),
            ("muc#roomconfig_publicroom", "0"),
            ("muc#roomconfig_moderatedroom", "true"),
        ],
    );
    // §10.2.1: everyone in the room gets a message from the room with 104.
    for who in [&alice, &bob] {
        let told: Vec<_> = got
            .to(who)
            .into_iter()
            .filter(|s| matches!(s, Stanza::Message(_)))
            .collect();
        assert_eq!(told.len(), 1, "{}", got.describe());
        assert_eq!(
            from_of(told[0]).map(|j| j.to_string()).as_deref(),
            Some(ROOM)
        );
        assert_eq!(codes(told[0]), ["104"]);
    }
    // Hidden now: not listed; disco#info says so, and has the description.
    assert!(listed(&mut world, &bob).is_empty());
    let features = features(&mut world, &bob);
    for feature in [
        "muc_hidden",
        "muc_moderated",
        "muc_temporary",
        "muc_open",
        "muc_unsecured",
        "muc_nonanonymous",
    ] {
        assert!(
            features.contains(&feature.to_string()),
            "{feature}: {features:?}"
        );
    }
    let got = world.send(
        &bob,
        &format!("<iq type='get' id='d2' to='{ROOM}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"),
    );
    let info = result_payload(got.only_to(&bob));
    let roominfo = info.get_child("x", ns::DATA_FORMS).expect("muc#roominfo");
    assert_eq!(
        field_value(roominfo, "muc#roominfo_description").as_deref(),
        Some("Sensors and people")
    );
    assert_eq!(
        field_value(roominfo, "muc#roominfo_occupants").as_deref(),
        Some("2")
    );
    let identity = info
        .get_child("identity", ns::DISCO_INFO)
        .expect("identity");
    assert_eq!(identity.attr("name"), Some("The lab"));
    // The form reads back what was set; an empty submission changes nothing and tells nobody.
    let form = result_payload(&owner_iq(&mut world, &alice, "get", ""));
    let form = form.get_child("x", ns::DATA_FORMS).expect("a form");
    assert_eq!(
        field_value(form, "muc#roomconfig_roomname").as_deref(),
        Some("The lab")
    );
    let got = configure(&mut world, &alice, &[]);
    assert!(got.to(&bob).is_empty(), "{}", got.describe());
}

#[test]
fn a_password_room_lets_in_only_those_who_give_it() {
    let (mut world, alice, bob, carol) = world_with_room();
    configure(
        &mut world,
        &alice,
        &[
            ("muc#roomconfig_passwordprotectedroom", "1"),
            ("muc#roomconfig_roomsecret", "s3cret"),
        ],
    );
    assert!(features(&mut world, &alice).contains(&"muc_passwordprotected".to_string()));
    // §7.2.6: none, or a wrong one.
    let got = join(&mut world, &bob, "Bob", "");
    assert_eq!(refused(&got, &bob), Some(DefinedCondition::NotAuthorized));
    let got = join(&mut world, &bob, "Bob", "<password>guess</password>");
    assert_eq!(refused(&got, &bob), Some(DefinedCondition::NotAuthorized));
    // The error carries an empty muc <x/>, as the XEP's examples do and clients match on,
    // and never the password that was sent.
    let error = presence(got.only_to(&bob));
    let x = error
        .payloads
        .iter()
        .find(|p| p.is("x", ns::MUC))
        .expect("the muc <x/>");
    assert_eq!(x.children().count(), 0);
    assert!(got.to(&alice).is_empty());
    let got = join(&mut world, &carol, "Carol", "<password>s3cret</password>");
    assert!(got
        .to(&carol)
        .iter()
        .any(|s| codes(s).contains(&"110".to_string())));
    // Protected without a secret is not acceptable, and changes nothing.
    let answer = owner_iq(
        &mut world,
        &alice,
        "set",
        &submit(&[
            ("muc#roomconfig_passwordprotectedroom", "1"),
            ("muc#roomconfig_roomsecret", ""),
        ]),
    );
    assert_eq!(
        error_condition(&answer),
        Some(DefinedCondition::NotAcceptable)
    );
    // Turning it off lets anyone in.
    configure(
        &mut world,
        &alice,
        &[("muc#roomconfig_passwordprotectedroom", "0")],
    );
    let got = join(&mut world, &bob, "Bob", "");
    assert!(got
        .to(&bob)
        .iter()
        .any(|s| codes(s).contains(&"110".to_string())));
}

#[test]
fn a_members_only_room_refuses_strangers_and_removes_them_with_322() {
    let (mut world, alice, bob, carol) = world_with_room();
    join(&mut world, &bob, "Bob", "");
    world
        .hub
        .muc
        .rooms
        .get_mut(&bare(ROOM))
        .expect("the room")
        .affiliations
        .insert(bare("carol@localhost"), Affiliation::Member);
    let got = configure(&mut world, &alice, &[("muc#roomconfig_membersonly", "1")]);
    // §9.4 (1.34): Bob, no member, is taken out; Alice sees it.
    let gone = got
        .to(&bob)
        .into_iter()
        .find(|s| matches!(s, Stanza::Presence(_)))
        .expect("bob's removal");
    assert_eq!(presence_type(gone), PresenceType::Unavailable);
    assert_eq!(codes(gone), ["110", "322"]);
    assert!(got
        .to(&alice)
        .iter()
        .any(|s| matches!(s, Stanza::Presence(_)) && codes(s) == ["322"]));
    // §7.2.7: he cannot come back; Carol, a member, can.
    let got = join(&mut world, &bob, "Bob", "");
    assert_eq!(
        refused(&got, &bob),
        Some(DefinedCondition::RegistrationRequired)
    );
    let got = join(&mut world, &carol, "Carol", "");
    assert!(got
        .to(&carol)
        .iter()
        .any(|s| codes(s).contains(&"110".to_string())));
    assert!(features(&mut world, &alice).contains(&"muc_membersonly".to_string()));
}

#[test]
fn an_outcast_is_forbidden_even_in_an_open_room() {
    let (mut world, _alice, bob, _) = world_with_room();
    world
        .hub
        .muc
        .rooms
        .get_mut(&bare(ROOM))
        .expect("the room")
        .affiliations
        .insert(bare("bob@localhost"), Affiliation::Outcast);
    let got = join(&mut world, &bob, "Bob", "");
    assert_eq!(refused(&got, &bob), Some(DefinedCondition::Forbidden));
}

#[test]
fn a_semi_anonymous_room_shows_real_jids_to_moderators_only() {
    let (mut world, alice, bob, carol) = world_with_room();
    join(&mut world, &carol, "Carol", "");
    let got = configure(
        &mut world,
        &alice,
        &[("muc#roomconfig_whois", "moderators")],
    );
    // §10.2.1: 173, the room is now semi-anonymous.
    let told = got
        .to(&carol)
        .into_iter()
        .find(|s| matches!(s, Stanza::Message(_)))
        .expect("carol is told");
    assert_eq!(codes(told), ["104", "173"]);
    let got = join(&mut world, &bob, "Bob", "");
    let to_bob = got.to(&bob);
    // Bob, a participant, sees Alice and Carol without their real JIDs; himself with his,
    // and without 100 (170: the room is logged).
    let alice_seen = to_bob
        .iter()
        .find(|s| from_of(s).map(|j| j.to_string()) == Some(format!("{ROOM}/Alice")))
        .expect("alice's presence");
    assert_eq!(item(alice_seen, "jid"), None);
    assert_eq!(item(alice_seen, "role").as_deref(), Some("moderator"));
    let own = to_bob
        .iter()
        .find(|s| codes(s).contains(&"110".to_string()))
        .expect("his own presence");
    assert_eq!(codes(own), ["110", "170"]);
    assert_eq!(item(own, "jid").as_deref(), Some("bob@localhost/laptop"));
    // Alice, a moderator, sees his real JID; Carol does not.
    assert_eq!(
        item(got.only_to(&alice), "jid").as_deref(),
        Some("bob@localhost/laptop")
    );
    assert_eq!(item(got.only_to(&carol), "jid"), None);
    assert!(features(&mut world, &bob).contains(&"muc_semianonymous".to_string()));
    // Back to non-anonymous: 172.
    let got = configure(&mut world, &alice, &[("muc#roomconfig_whois", "anyone")]);
    let told = got
        .to(&bob)
        .into_iter()
        .find(|s| matches!(s, Stanza::Message(_)))
        .expect("bob is told");
    assert_eq!(codes(told), ["104", "172"]);
}

#[test]
fn max_users_from_the_form_bounds_the_room_but_not_its_owner() {
    let (mut world, alice, bob, carol) = world_with_room();
    configure(&mut world, &alice, &[("muc#roomconfig_maxusers", "2")]);
    join(&mut world, &bob, "Bob", "");
    let got = join(&mut world, &carol, "Carol", "");
    assert_eq!(
        refused(&got, &carol),
        Some(DefinedCondition::ServiceUnavailable)
    );
    // The owner gets in with a second session all the same.
    let phone2 = world.online("alice/tablet", 0);
    let got = join(&mut world, &phone2, "Alice2", "");
    assert!(got
        .to(&phone2)
        .iter()
        .any(|s| codes(s).contains(&"110".to_string())));
}

#[test]
fn hostile_forms_out_of_bounds_are_refused_and_change_nothing() {
    let (mut world, alice, _, _) = world_with_room();
    world.hub.set_muc_limits(MucLimits {
        max_occupants: 50,
        max_history: 10,
        ..MucLimits::default()
    });
    let huge = "n".repeat(100_000);
    let many: String = (0..10_000)
        .map(|i| format!("<field var='x{i}'><value>1</value></field>"))
        .collect();
    let cases = [
        (submit(&[("muc#roomconfig_maxusers", "0")]), DefinedCondition::NotAcceptable),
        (submit(&[("muc#roomconfig_maxusers", "51")]), DefinedCondition::NotAcceptable),
        (submit(&[("muc#roomconfig_maxusers", "lots")]), DefinedCondition::BadRequest),
        (submit(&[("muc#roomconfig_historylength", "1000000")]), DefinedCondition::NotAcceptable),
        (submit(&[("muc#roomconfig_persistentroom", "maybe")]), DefinedCondition::BadRequest),
        (submit(&[("muc#roomconfig_whois", "everyone")]), DefinedCondition::NotAcceptable),
        (submit(&[("muc#roomconfig_roomname", &huge)]), DefinedCondition::NotAcceptable),
        (submit(&[("muc#roomconfig_roomsecret", &huge)]), DefinedCondition::NotAcceptable),
        (format!("<x xmlns='jabber:x:data' type='submit'>{many}</x>"), DefinedCondition::NotAcceptable),
        (
            "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>urn:other</value></field></x>".to_string(),
            DefinedCondition::BadRequest,
        ),
        ("<x xmlns='jabber:x:data' type='result'/>".to_string(), DefinedCondition::BadRequest),
        ("<nothing xmlns='urn:x'/>".to_string(), DefinedCondition::BadRequest),
        ("<destroy jid='not a jid@@'/>".to_string(), DefinedCondition::JidMalformed),
    ];
    for (query, condition) in cases {
        let answer = owner_iq(&mut world, &alice, "set", &query);
        assert_eq!(error_condition(&answer), Some(condition), "{query:.80}");
    }
    // Nothing changed, and the room is still there.
    let form = result_payload(&owner_iq(&mut world, &alice, "get", ""));
    let form = form.get_child("x", ns::DATA_FORMS).expect("a form");
    assert_eq!(
        field_value(form, "muc#roomconfig_roomname").as_deref(),
        Some("")
    );
    // The choices offered stay within the service's limits.
    let offered: Vec<String> = form
        .children()
        .find(|f| f.attr("var") == Some("muc#roomconfig_maxusers"))
        .expect("maxusers")
        .children()
        .filter(|c| c.name() == "option")
        .filter_map(|o| o.get_child("value", ns::DATA_FORMS).map(Element::text))
        .collect();
    assert!(
        offered
            .iter()
            .all(|n| n.parse::<usize>().is_ok_and(|n| n <= 200)),
        "{offered:?}"
    );
}

#[test]
fn a_locked_new_room_admits_nobody_until_its_owner_accepts_the_instant_room() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    world.hub.set_muc_limits(MucLimits {
        lock_new_rooms: true,
        ..MucLimits::default()
    });
    let alice = world.online("alice/phone", 0);
    let bob = world.online("bob/laptop", 0);
    let got = join(&mut world, &alice, "Alice", "");
    assert!(got
        .to(&alice)
        .iter()
        .any(|s| codes(s) == ["100", "110", "170", "201"]));
    // §10.1.1: not there for anyone else, not even listed.
    let got = join(&mut world, &bob, "Bob", "");
    assert_eq!(refused(&got, &bob), Some(DefinedCondition::ItemNotFound));
    assert!(listed(&mut world, &bob).is_empty());
    let got = world.send(
        &bob,
        &format!("<iq type='get' id='d' to='{ROOM}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"),
    );
    assert_eq!(refused(&got, &bob), Some(DefinedCondition::ItemNotFound));
    assert!(features(&mut world, &alice).contains(&"muc_temporary".to_string()));
    // §10.1.2: an empty submitted form accepts the instant room.
    configure(&mut world, &alice, &[]);
    let got = join(&mut world, &bob, "Bob", "");
    assert!(got
        .to(&bob)
        .iter()
        .any(|s| codes(s).contains(&"110".to_string())));
}

#[test]
fn a_lock_ends_by_itself_and_a_join_without_the_muc_protocol_does_not_lock() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    world.hub.set_muc_limits(MucLimits {
        lock_new_rooms: true,
        ..MucLimits::default()
    });
    let alice = world.online("alice/phone", 0);
    let bob = world.online("bob/laptop", 0);
    join(&mut world, &alice, "Alice", "");
    // As if the lock timeout had passed.
    world
        .hub
        .muc
        .rooms
        .get_mut(&bare(ROOM))
        .expect("the room")
        .locked_until_ms = Some(0);
    let got = join(&mut world, &bob, "Bob", "");
    assert!(got
        .to(&bob)
        .iter()
        .any(|s| codes(s).contains(&"110".to_string())));
    // An old groupchat client (no muc <x/>) gets an open room.
    world.send(&alice, "<presence to='old@conference.localhost/Alice'/>");
    let got = world.send(&bob, "<presence to='old@conference.localhost/Bob'/>");
    assert!(got
        .to(&bob)
        .iter()
        .any(|s| codes(s).contains(&"110".to_string())));
}

#[test]
fn cancelling_the_form_of_a_locked_new_room_destroys_it() {
    let mut world = World::with_accounts(&["alice"]);
    world.hub.set_muc_limits(MucLimits {
        lock_new_rooms: true,
        ..MucLimits::default()
    });
    let alice = world.online("alice/phone", 0);
    join(&mut world, &alice, "Alice", "");
    let got = world.send(
        &alice,
        &format!("<iq type='set' id='c' to='{ROOM}'><query xmlns='{OWNER_NS}'><x xmlns='jabber:x:data' type='cancel'/></query></iq>"),
    );
    let to_alice = got.to(&alice);
    assert!(to_alice
        .iter()
        .any(|s| matches!(s, Stanza::Iq(Iq::Result { .. }))));
    assert!(
        to_alice
            .iter()
            .any(|s| matches!(s, Stanza::Presence(_))
                && presence_type(s) == PresenceType::Unavailable)
    );
    // Gone: joining creates it again.
    let got = join(&mut world, &alice, "Alice", "");
    assert!(got
        .to(&alice)
        .iter()
        .any(|s| codes(s).contains(&"201".to_string())));
    // Cancelling in an open room changes nothing.
    configure(&mut world, &alice, &[]);
    let got = world.send(
        &alice,
        &format!("<iq type='set' id='c' to='{ROOM}'><query xmlns='{OWNER_NS}'><x xmlns='jabber:x:data' type='cancel'/></query></iq>"),
    );
    assert!(matches!(got.only_to(&alice), Stanza::Iq(Iq::Result { .. })));
}

#[test]
fn destroying_a_room_tells_every_occupant_where_to_go_and_only_owners_may() {
    let (mut world, alice, bob, carol) = world_with_room();
    join(&mut world, &bob, "Bob", "");
    let answer = owner_iq(&mut world, &bob, "set", "<destroy/>");
    assert_eq!(error_condition(&answer), Some(DefinedCondition::Forbidden));
    let got = world.send(
        &alice,
        &format!("<iq type='set' id='x' to='{ROOM}'><query xmlns='{OWNER_NS}'><destroy jid='hall@conference.localhost'><reason>Moved</reason></destroy></query></iq>"),
    );
    // §10.9: each occupant gets its unavailable presence with <destroy/>.
    for (who, nick) in [(&alice, "Alice"), (&bob, "Bob")] {
        let gone = got
            .to(who)
            .into_iter()
            .find(|s| matches!(s, Stanza::Presence(_)))
            .unwrap_or_else(|| panic!("{nick}: {}", got.describe()));
        assert_eq!(presence_type(gone), PresenceType::Unavailable);
        assert_eq!(
            from_of(gone).map(|j| j.to_string()),
            Some(format!("{ROOM}/{nick}"))
        );
        assert_eq!(item(gone, "role").as_deref(), Some("none"));
        let destroy = muc_user(gone)
            .and_then(|x| x.get_child("destroy", ns::MUC_USER))
            .expect("destroy");
        assert_eq!(destroy.attr("jid"), Some("hall@conference.localhost"));
        assert_eq!(
            destroy
                .get_child("reason", ns::MUC_USER)
                .map(Element::text)
                .as_deref(),
            Some("Moved")
        );
    }
    assert!(got
        .to(&alice)
        .iter()
        .any(|s| matches!(s, Stanza::Iq(Iq::Result { .. }))));
    assert!(listed(&mut world, &carol).is_empty());
    // Bob's self-ping says he is no longer in.
    let got = world.send(
        &bob,
        &format!("<iq type='get' id='p' to='{ROOM}/Bob'><ping xmlns='urn:xmpp:ping'/></iq>"),
    );
    assert_eq!(refused(&got, &bob), Some(DefinedCondition::NotAcceptable));
}

#[test]
fn a_persistent_room_outlives_its_occupants_and_a_restart() {
    let (mut world, alice, bob, _) = world_with_room();
    configure(
        &mut world,
        &alice,
        &[
            ("muc#roomconfig_persistentroom", "1"),
            ("muc#roomconfig_roomname", "The lab"),
            ("muc#roomconfig_passwordprotectedroom", "1"),
            ("muc#roomconfig_roomsecret", "s3cret"),
        ],
    );
    world.send(
        &alice,
        &format!(
            "<message to='{ROOM}' type='groupchat'><subject>Calibration day</subject></message>"
        ),
    );
    assert_eq!(world.hub.store().muc_rooms().expect("rooms").len(), 1);
    // Everyone leaves: the room stays.
    world.send(
        &alice,
        &format!("<presence to='{ROOM}/Alice' type='unavailable'/>"),
    );
    assert!(listed(&mut world, &bob).contains(&ROOM.to_string()));
    // A restart: the rooms in memory are gone, the stored ones come back.
    world
        .hub
        .set_muc_service(Some(bare("conference.localhost")));
    assert!(listed(&mut world, &bob).is_empty());
    world.hub.muc_load_rooms();
    assert!(listed(&mut world, &bob).contains(&ROOM.to_string()));
    let got = join(&mut world, &bob, "Bob", "");
    assert_eq!(refused(&got, &bob), Some(DefinedCondition::NotAuthorized));
    let got = join(&mut world, &bob, "Bob", "<password>s3cret</password>");
    // Not created (no 201), with its subject, and Alice is still its owner.
    assert!(!got
        .to(&bob)
        .iter()
        .any(|s| codes(s).contains(&"201".to_string())));
    assert!(got.to(&bob).iter().any(
        |s| matches!(s, Stanza::Message(m) if m.subjects.values().any(|t| t == "Calibration day"))
    ));
    let got = join(&mut world, &alice, "Alice", "<password>s3cret</password>");
    let own = got
        .to(&alice)
        .into_iter()
        .find(|s| codes(s).contains(&"110".to_string()))
        .expect("alice is in");
    assert_eq!(item(own, "affiliation").as_deref(), Some("owner"));
    // Made temporary while in use: unstored, and gone when the last one leaves.
    configure(
        &mut world,
        &alice,
        &[("muc#roomconfig_persistentroom", "0")],
    );
    assert!(world.hub.store().muc_rooms().expect("rooms").is_empty());
    world.send(
        &alice,
        &format!("<presence to='{ROOM}/Alice' type='unavailable'/>"),
    );
    world.send(
        &bob,
        &format!("<presence to='{ROOM}/Bob' type='unavailable'/>"),
    );
    assert!(listed(&mut world, &bob).is_empty());
}

#[test]
fn destroying_a_persistent_room_removes_it_from_the_store() {
    let (mut world, alice, _, _) = world_with_room();
    configure(
        &mut world,
        &alice,
        &[("muc#roomconfig_persistentroom", "1")],
    );
    assert_eq!(world.hub.store().muc_rooms().expect("rooms").len(), 1);
    owner_iq(&mut world, &alice, "set", "<destroy/>");
    assert!(world.hub.store().muc_rooms().expect("rooms").is_empty());
}

#[test]
fn the_service_can_be_renamed_or_turned_off() {
    let mut world = World::with_accounts(&["alice"]);
    let alice = world.online("alice/phone", 0);
    world.hub.muc_start(
        &MucLimits {
            domain: Some("rooms.localhost".into()),
            ..MucLimits::default()
        },
        &[],
    );
    let got = world.send(&alice, "<presence to='lab@rooms.localhost/Alice'><x xmlns='http://jabber.org/protocol/muc'/></presence>");
    assert!(got
        .to(&alice)
        .iter()
        .any(|s| codes(s).contains(&"201".to_string())));
    world.hub.muc_start(
        &MucLimits {
            enabled: false,
            ..MucLimits::default()
        },
        &[],
    );
    assert!(world.hub.muc_service().is_none());
    // The server's own domain cannot be the service's.
    world.hub.muc_start(
        &MucLimits {
            domain: Some("localhost".into()),
            ..MucLimits::default()
        },
        &[],
    );
    assert!(world.hub.muc_service().is_none());
}

#[test]
fn visitors_of_a_moderated_room_and_non_moderators_changing_a_locked_subject_are_forbidden() {
    let (mut world, alice, bob, _) = world_with_room();
    configure(
        &mut world,
        &alice,
        &[
            ("muc#roomconfig_moderatedroom", "1"),
            ("muc#roomconfig_changesubject", "0"),
        ],
    );
    let got = join(&mut world, &bob, "Bob", "");
    let own = got
        .to(&bob)
        .into_iter()
        .find(|s| codes(s).contains(&"110".to_string()))
        .expect("bob is in");
    assert_eq!(item(own, "role").as_deref(), Some("visitor"));
    // §7.4: a visitor does not speak.
    let got = world.send(
        &bob,
        &format!("<message to='{ROOM}' type='groupchat'><body>hi</body></message>"),
    );
    assert_eq!(refused(&got, &bob), Some(DefinedCondition::Forbidden));
    // §8.1: the subject is the moderators'.
    let got = world.send(
        &bob,
        &format!("<message to='{ROOM}' type='groupchat'><subject>mine</subject></message>"),
    );
    assert_eq!(refused(&got, &bob), Some(DefinedCondition::Forbidden));
    let got = world.send(
        &alice,
        &format!("<message to='{ROOM}' type='groupchat'><subject>ours</subject></message>"),
    );
    assert!(got
        .to(&bob)
        .iter()
        .any(|s| matches!(s, Stanza::Message(m) if m.subjects.values().any(|t| t == "ours"))));
}

#[test]
fn a_semi_anonymous_room_hides_real_jids_in_kicks_and_from_second_sessions() {
    let (mut world, alice, bob, carol) = world_with_room();
    join(&mut world, &bob, "Bob", "");
    join(&mut world, &carol, "Carol", "");
    configure(
        &mut world,
        &alice,
        &[("muc#roomconfig_whois", "moderators")],
    );
    // §8.2: the kick reaches Carol, a participant, without Bob's real JID.
    let got = world.send(
        &alice,
        &format!(
            "<iq type='set' id='k1' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#admin'><item nick='Bob' role='none'/></query></iq>"
        ),
    );
    let kicked = got.only_to(&carol);
    assert_eq!(codes(kicked), ["307"]);
    assert_eq!(item(kicked, "jid"), None);
    // A second session of Carol's joins her occupant and sees Alice without her real JID.
    let tablet = world.online("carol/tablet", 0);
    let got = join(&mut world, &tablet, "Carol", "");
    let alice_seen = got
        .to(&tablet)
        .into_iter()
        .find(|s| from_of(s).map(|j| j.to_string()) == Some(format!("{ROOM}/Alice")))
        .expect("alice's presence");
    assert_eq!(item(alice_seen, "jid"), None);
    let own = got
        .to(&tablet)
        .into_iter()
        .find(|s| codes(s).contains(&"110".to_string()))
        .expect("its own presence");
    assert_eq!(codes(own), ["110", "170"]);
}
