//! Rooms' archives (XEP-0313 on a room's JID) as transcripts: what is archived with which
//! stanza id, who may query, pages, retention, and the hostile cases.

use tokio_xmpp::jid::FullJid;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::stanza_error::DefinedCondition;
use tokio_xmpp::Stanza;

use super::super::super::testing::*;
use super::super::config::Whois;
use super::super::room::{Affiliation, SID};
use crate::server::limits::ArchiveLimits;

const ROOM: &str = "lab@conference.localhost";

/// A world with alice, bob and carol online, alice (the owner) and bob in ROOM.
fn world() -> (World, FullJid, FullJid, FullJid) {
    let mut world = World::with_accounts(&["alice", "bob", "carol"]);
    let alice = world.online("alice/phone", 0);
    let bob = world.online("bob/laptop", 0);
    let carol = world.online("carol/desk", 0);
    join(&mut world, &alice, "Alice");
    join(&mut world, &bob, "Bob");
    (world, alice, bob, carol)
}

fn join(world: &mut World, who: &FullJid, nick: &str) -> Deliveries {
    world.send(
        who,
        &format!(
            "<presence to='{ROOM}/{nick}'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
        ),
    )
}

/// `who` says `body` in ROOM; returns the room's stanza id on the copy `who` gets back.
fn say(world: &mut World, who: &FullJid, body: &str) -> String {
    let got = world.send(
        who,
        &format!("<message to='{ROOM}' type='groupchat'><body>{body}</body></message>"),
    );
    let echo = got.only_to(who);
    room_stanza_id(echo).unwrap_or_else(|| panic!("no stanza id: {}", got.describe()))
}

/// The room's `<stanza-id/>` on a message.
fn room_stanza_id(stanza: &Stanza) -> Option<String> {
    message(stanza)
        .payloads
        .iter()
        .find(|p| p.is("stanza-id", SID) && p.attr("by") == Some(ROOM))
        .and_then(|p| p.attr("id"))
        .map(str::to_string)
}

/// What a query of ROOM's archive brought back.
struct Answer {
    /// The forwarded messages, oldest first.
    forwarded: Vec<Element>,
    /// The `<result/>` ids.
    ids: Vec<String>,
    iq: Iq,
}

impl Answer {
    fn bodies(&self) -> Vec<String> {
        self.forwarded
            .iter()
            .map(|m| {
                m.get_child("body", "jabber:client")
                    .map(|b| b.text())
                    .unwrap_or_default()
            })
            .collect()
    }

    fn error(&self) -> Option<DefinedCondition> {
        error_condition(&Stanza::Iq(self.iq.clone()))
    }

    fn fin(&self) -> &Element {
        match &self.iq {
            Iq::Result {
                payload: Some(fin), ..
            } => fin,
            other => panic!("no <fin/>: {other:?}"),
        }
    }
}

/// `who` queries ROOM's archive with `inner` (form, RSM set).
fn query(world: &mut World, who: &FullJid, inner: &str) -> Answer {
    let got = world.send(
        who,
        &format!(
            "<iq type='set' id='mam' to='{ROOM}'><query xmlns='urn:xmpp:mam:2' queryid='q'>{inner}</query></iq>"
        ),
    );
    let mut answer = Answer {
        forwarded: Vec::new(),
        ids: Vec::new(),
        iq: Iq::Result {
            from: None,
            to: None,
            id: String::new(),
            payload: None,
        },
    };
    let mut iq_seen = false;
    for stanza in got.to(who) {
        match stanza {
            Stanza::Message(m) => {
                assert!(!iq_seen, "a result after the answer: {}", got.describe());
                assert_eq!(
                    from_of(stanza).map(|j| j.to_string()).as_deref(),
                    Some(ROOM)
                );
                let result = m
                    .payloads
                    .iter()
                    .find(|p| p.is("result", ns::MAM))
                    .expect("a <result/>");
                assert_eq!(result.attr("queryid"), Some("q"));
                let forwarded = result.get_child("forwarded", ns::FORWARD).unwrap();
                assert!(forwarded.get_child("delay", ns::DELAY).is_some());
                let inner = forwarded.get_child("message", "jabber:client").unwrap();
                answer.forwarded.push(inner.clone());
                answer.ids.push(result.attr("id").unwrap().to_string());
            }
            Stanza::Iq(iq) => {
                answer.iq = iq.clone();
                iq_seen = true;
            }
            Stanza::Presence(_) => panic!("a presence: {}", got.describe()),
        }
    }
    assert!(iq_seen, "no IQ answer: {}", got.describe());
    assert_eq!(got.recipients().iter().filter(|r| **r != who).count(), 0);
    answer
}

fn set(inner: &str) -> String {
    format!("<set xmlns='http://jabber.org/protocol/rsm'>{inner}</set>")
}

/// The features of ROOM's disco#info.
fn room_features(world: &mut World, who: &FullJid) -> Vec<String> {
    let got = world.send(
        who,
        &format!("<iq type='get' id='d' to='{ROOM}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"),
    );
    let Iq::Result {
        payload: Some(info),
        ..
    } = iq(got.only_to(who))
    else {
        panic!("no disco#info: {}", got.describe());
    };
    info.children()
        .filter(|c| c.is("feature", ns::DISCO_INFO))
        .filter_map(|c| c.attr("var").map(str::to_string))
        .collect()
}

#[test]
fn an_occupant_reads_the_rooms_archive_under_the_stanza_ids_the_room_stamped() {
    let (mut world, alice, bob, _) = world();
    let first = say(&mut world, &alice, "one");
    let second = say(&mut world, &bob, "two");
    let third = say(&mut world, &alice, "three");
    let answer = query(&mut world, &bob, "");
    assert_eq!(answer.bodies(), ["one", "two", "three"]);
    // XEP-0313 §3.5: the result ids are the stanza ids the occupants saw.
    assert_eq!(answer.ids, [first.clone(), second.clone(), third.clone()]);
    // Each is the groupchat message from the speaker's room JID, without `to`.
    let inner = &answer.forwarded[1];
    assert_eq!(inner.attr("from"), Some("lab@conference.localhost/Bob"));
    assert_eq!(inner.attr("type"), Some("groupchat"));
    assert_eq!(inner.attr("to"), None);
    // The room shows real JIDs: the archive says who Bob is (§5.1.2).
    let item = inner
        .get_child("x", ns::MUC_USER)
        .and_then(|x| x.get_child("item", ns::MUC_USER))
        .expect("the real JID");
    assert_eq!(item.attr("jid"), Some("bob@localhost"));
    assert_eq!(answer.fin().attr("complete"), Some("true"));

    // Paging on from the first stanza id (XEP-0059).
    let after = query(
        &mut world,
        &alice,
        &set(&format!("<max>1</max><after>{first}</after>")),
    );
    assert_eq!(after.bodies(), ["two"]);
    assert_eq!(after.fin().attr("complete"), None);
    // And the last page.
    let last = query(&mut world, &alice, &set("<max>2</max><before/>"));
    assert_eq!(last.bodies(), ["two", "three"]);
    assert_eq!(last.ids, [second, third]);
}

#[test]
fn subjects_and_no_store_messages_are_not_archived_and_nothing_is_in_a_personal_archive() {
    let (mut world, alice, bob, _) = world();
    world.send(
        &alice,
        &format!("<message to='{ROOM}' type='groupchat'><subject>Lab</subject></message>"),
    );
    world.send(
        &alice,
        &format!(
            "<message to='{ROOM}' type='groupchat'><body>secret</body><no-store xmlns='urn:xmpp:hints'/></message>"
        ),
    );
    say(&mut world, &bob, "kept");
    assert_eq!(query(&mut world, &alice, "").bodies(), ["kept"]);
    world.hub.idle();
    assert_eq!(world.hub.store().archive_count("alice").unwrap(), 0);
    assert_eq!(world.hub.store().archive_count("bob").unwrap(), 0);
    assert_eq!(world.hub.store().room_archive_count(ROOM).unwrap(), 1);
}

#[test]
fn a_passer_by_reads_a_public_open_rooms_archive_but_not_a_hidden_or_members_only_one() {
    let (mut world, alice, _, carol) = world();
    say(&mut world, &alice, "hello");
    assert_eq!(query(&mut world, &carol, "").bodies(), ["hello"]);

    let room_jid = bare(ROOM);
    world
        .hub
        .muc
        .rooms
        .get_mut(&room_jid)
        .unwrap()
        .config
        .public = false;
    assert_eq!(
        query(&mut world, &carol, "").error(),
        Some(DefinedCondition::Forbidden)
    );
    // A member of a hidden room may.
    let room = world.hub.muc.rooms.get_mut(&room_jid).unwrap();
    room.affiliations
        .insert(bare("carol@localhost"), Affiliation::Member);
    assert_eq!(query(&mut world, &carol, "").bodies(), ["hello"]);

    // Members-only: a member may, anyone else may not, even if the room is listed.
    let room = world.hub.muc.rooms.get_mut(&room_jid).unwrap();
    room.config.public = true;
    room.config.members_only = true;
    assert_eq!(query(&mut world, &carol, "").bodies(), ["hello"]);
    let room = world.hub.muc.rooms.get_mut(&room_jid).unwrap();
    room.affiliations.remove(&bare("carol@localhost"));
    assert_eq!(
        query(&mut world, &carol, "").error(),
        Some(DefinedCondition::Forbidden)
    );
}

#[test]
fn an_outcast_may_not_read_the_archive_even_of_a_public_room() {
    let (mut world, alice, _, carol) = world();
    say(&mut world, &alice, "hello");
    let room = world.hub.muc.rooms.get_mut(&bare(ROOM)).unwrap();
    room.affiliations
        .insert(bare("carol@localhost"), Affiliation::Outcast);
    assert_eq!(
        query(&mut world, &carol, "").error(),
        Some(DefinedCondition::Forbidden)
    );
}

#[test]
fn a_room_hiding_real_jids_leaves_them_out_of_the_answers() {
    let (mut world, alice, bob, _) = world();
    say(&mut world, &alice, "before");
    world
        .hub
        .muc
        .rooms
        .get_mut(&bare(ROOM))
        .unwrap()
        .config
        .whois = Whois::Moderators;
    say(&mut world, &alice, "after");
    let answer = query(&mut world, &bob, "");
    assert_eq!(answer.bodies(), ["before", "after"]);
    for message in &answer.forwarded {
        assert!(
            message.get_child("x", ns::MUC_USER).is_none(),
            "{message:?}"
        );
    }
}

#[test]
fn the_room_advertises_its_archive_and_serves_the_query_form() {
    let (mut world, alice, _, _) = world();
    assert!(room_features(&mut world, &alice).contains(&ns::MAM.to_string()));
    let got = world.send(
        &alice,
        &format!("<iq type='get' id='f' to='{ROOM}'><query xmlns='urn:xmpp:mam:2'/></iq>"),
    );
    let Iq::Result {
        payload: Some(form),
        ..
    } = iq(got.only_to(&alice))
    else {
        panic!("no form: {}", got.describe());
    };
    assert!(form.get_child("x", ns::DATA_FORMS).is_some());
}

#[test]
fn with_the_archive_off_rooms_keep_nothing_and_say_so() {
    let (mut world, alice, _, carol) = world();
    world.hub.set_archive_limits(ArchiveLimits {
        enabled: false,
        ..ArchiveLimits::default()
    });
    // Messages still carry a stanza id from the room, just not an archive id.
    let id = say(&mut world, &alice, "not kept");
    assert_eq!(id.len(), 16);
    world.hub.idle();
    assert_eq!(world.hub.store().room_archive_count(ROOM).unwrap(), 0);
    assert!(!room_features(&mut world, &alice).contains(&ns::MAM.to_string()));
    assert_eq!(
        query(&mut world, &alice, "").error(),
        Some(DefinedCondition::ServiceUnavailable)
    );
    // A joiner is not told the room is logged (XEP-0045 §7.2.12: no 170).
    let got = join(&mut world, &carol, "Carol");
    let own = got
        .to(&carol)
        .into_iter()
        .find(|s| {
            matches!(s, Stanza::Presence(_))
                && from_of(s).map(|j| j.to_string()) == Some(format!("{ROOM}/Carol"))
        })
        .expect("carol's own presence");
    assert!(
        !presence_codes(own).contains(&"170".to_string()),
        "{}",
        got.describe()
    );
}

/// The status codes of a room presence.
fn presence_codes(stanza: &Stanza) -> Vec<String> {
    let Stanza::Presence(p) = stanza else {
        return Vec::new();
    };
    p.payloads
        .iter()
        .filter(|x| x.is("x", ns::MUC_USER))
        .flat_map(|x| x.children().filter(|c| c.is("status", ns::MUC_USER)))
        .filter_map(|s| s.attr("code").map(str::to_string))
        .collect()
}

#[test]
fn a_rooms_archive_is_trimmed_to_the_per_archive_limit_and_deleted_with_the_room() {
    let (mut world, alice, _, _) = world();
    world.hub.set_archive_limits(ArchiveLimits {
        max_per_user: 20,
        ..ArchiveLimits::default()
    });
    // Sixty messages at once: more than an occupant's burst (`flood.rs`).
    world.hub.muc.limits.message_burst = 100;
    for n in 0..60 {
        say(&mut world, &alice, &format!("m{n}"));
        world.hub.idle();
    }
    let kept = world.hub.store().room_archive_count(ROOM).unwrap();
    assert!((20..=22).contains(&kept), "{kept}");
    let answer = query(&mut world, &alice, &set("<max>1</max><before/>"));
    assert_eq!(answer.bodies(), ["m59"]);

    world.hub.forget_room_archive(&bare(ROOM));
    assert_eq!(world.hub.store().room_archive_count(ROOM).unwrap(), 0);
}

/// `who`, an owner, makes ROOM persistent through the configuration form (XEP-0045 §10.2).
fn make_persistent(world: &mut World, who: &FullJid) {
    let got = world.send(
        who,
        &format!(
            "<iq type='set' id='cfg' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#owner'>\
             <x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>\
             <field var='muc#roomconfig_persistentroom'><value>1</value></field></x></query></iq>"
        ),
    );
    assert!(
        got.to(who)
            .iter()
            .any(|s| matches!(s, Stanza::Iq(Iq::Result { .. }))),
        "{}",
        got.describe()
    );
}

#[test]
fn a_temporary_rooms_archive_ends_with_the_room_and_a_persistent_ones_does_not() {
    let (mut world, alice, bob, _) = world();
    say(&mut world, &alice, "forgotten");
    world.hub.idle();
    world.unbind(&alice);
    world.unbind(&bob);
    assert!(world.hub.muc.rooms.is_empty());
    let alice = world.online("alice/phone", 0);
    // No room: nothing to ask (as in Prosody).
    assert_eq!(
        query(&mut world, &alice, "").error(),
        Some(DefinedCondition::ItemNotFound)
    );
    // A new room under the same name starts with an empty archive: whoever made it has no
    // claim on what the old room's occupants said.
    join(&mut world, &alice, "Alice");
    assert!(query(&mut world, &alice, "").bodies().is_empty());
    assert_eq!(world.hub.store().room_archive_count(ROOM).unwrap(), 0);

    make_persistent(&mut world, &alice);
    say(&mut world, &alice, "remembered");
    world.unbind(&alice);
    assert_eq!(world.hub.muc.rooms.len(), 1, "a persistent room stays");
    let alice = world.online("alice/phone", 0);
    join(&mut world, &alice, "Alice");
    assert_eq!(query(&mut world, &alice, "").bodies(), ["remembered"]);
}

#[test]
fn destroying_a_room_deletes_its_archive() {
    let (mut world, alice, _, _) = world();
    make_persistent(&mut world, &alice);
    say(&mut world, &alice, "gone soon");
    world.hub.idle();
    assert_eq!(world.hub.store().room_archive_count(ROOM).unwrap(), 1);
    world.send(
        &alice,
        &format!(
            "<iq type='set' id='d' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#owner'><destroy/></query></iq>"
        ),
    );
    assert!(world.hub.muc.rooms.is_empty());
    assert_eq!(world.hub.store().room_archive_count(ROOM).unwrap(), 0);
}

#[test]
fn hostile_unknown_ids_forged_stanza_ids_and_iq_results_get_defined_answers() {
    let (mut world, alice, bob, _) = world();
    let real = say(&mut world, &alice, "one");
    // An id that is not in this room's archive.
    let answer = query(&mut world, &bob, &set("<after>0123456789abcdef</after>"));
    assert_eq!(answer.error(), Some(DefinedCondition::ItemNotFound));
    let answer = query(&mut world, &bob, &set("<after>not-an-id</after>"));
    assert_eq!(answer.error(), Some(DefinedCondition::ItemNotFound));
    // A client's own stanza id claiming to be the room's is replaced by the room's.
    let got = world.send(
        &bob,
        &format!(
            "<message to='{ROOM}' type='groupchat'><body>two</body><stanza-id xmlns='urn:xmpp:sid:0' by='{ROOM}' id='{real}'/></message>"
        ),
    );
    let ids: Vec<&Element> = message(got.to(&alice)[0])
        .payloads
        .iter()
        .filter(|p| p.is("stanza-id", SID))
        .collect();
    assert_eq!(ids.len(), 1);
    assert_ne!(ids[0].attr("id"), Some(real.as_str()));
    assert_eq!(query(&mut world, &alice, "").bodies(), ["one", "two"]);
    // A bad form.
    let answer = query(
        &mut world,
        &alice,
        "<x xmlns='jabber:x:data' type='submit'><field var='start'><value>yesterday</value></field></x>",
    );
    assert_eq!(answer.error(), Some(DefinedCondition::BadRequest));
    // IQ results and errors to the room are never answered (RFC 6120 §8.3.1).
    let got = world.send(
        &alice,
        &format!("<iq type='result' id='x' to='{ROOM}'><query xmlns='urn:xmpp:mam:2'/></iq>"),
    );
    assert!(got.is_empty(), "{}", got.describe());
}
