//! The message archive (XEP-0313) as deliveries: what is archived with which stanza id, queries
//! and their pages, preferences, limits, and the hostile cases.

use tokio_xmpp::jid::FullJid;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::stanza_error::DefinedCondition;
use tokio_xmpp::Stanza;

use super::super::service::Entity;
use super::super::testing::*;
use super::SID;
use crate::server::limits::ArchiveLimits;

/// What a query brought back: the archived messages' bodies and ids, and the IQ answer.
struct Answer {
    bodies: Vec<String>,
    ids: Vec<String>,
    results: Vec<Element>,
    iq: Iq,
}

impl Answer {
    fn fin(&self) -> &Element {
        match &self.iq {
            Iq::Result {
                payload: Some(fin), ..
            } => fin,
            other => panic!("no <fin/>: {other:?}"),
        }
    }

    fn complete(&self) -> bool {
        self.fin().attr("complete") == Some("true")
    }

    fn rsm(&self, name: &str) -> Option<String> {
        let set = self.fin().get_child("set", ns::RSM)?;
        Some(set.get_child(name, ns::RSM)?.text())
    }

    fn error(&self) -> Option<DefinedCondition> {
        error_condition(&Stanza::Iq(self.iq.clone()))
    }
}

/// `who` sends a query with `inner` (form and RSM set) and queryid `q`.
fn query(world: &mut World, who: &FullJid, inner: &str) -> Answer {
    let got = world.send(
        who,
        &format!("<iq type='set' id='mam'><query xmlns='urn:xmpp:mam:2' queryid='q'>{inner}</query></iq>"),
    );
    let mut answer = Answer {
        bodies: Vec::new(),
        ids: Vec::new(),
        results: Vec::new(),
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
                assert!(!iq_seen, "a result after the IQ answer: {}", got.describe());
                let result = m
                    .payloads
                    .iter()
                    .find(|p| p.is("result", ns::MAM))
                    .expect("a <result/>");
                assert_eq!(result.attr("queryid"), Some("q"));
                assert_eq!(m.from, Some(who.to_bare().into()));
                let forwarded = result.get_child("forwarded", ns::FORWARD).unwrap();
                assert!(forwarded.get_child("delay", ns::DELAY).is_some());
                let inner = forwarded.get_child("message", "jabber:client").unwrap();
                answer.bodies.push(
                    inner
                        .get_child("body", "jabber:client")
                        .map(|b| b.text())
                        .unwrap_or_default(),
                );
                answer.ids.push(result.attr("id").unwrap().to_string());
                answer.results.push(result.clone());
            }
            Stanza::Iq(iq) => {
                answer.iq = iq.clone();
                iq_seen = true;
            }
            Stanza::Presence(_) => panic!("a presence: {}", got.describe()),
        }
    }
    assert!(iq_seen, "no IQ answer: {}", got.describe());
    answer
}

/// A form with these fields.
fn form(fields: &[(&str, &str)]) -> String {
    let mut xml = String::from(
        "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>",
    );
    for (var, value) in fields {
        xml.push_str(&format!(
            "<field var='{var}'><value>{value}</value></field>"
        ));
    }
    xml + "</x>"
}

/// An RSM set.
fn set(inner: &str) -> String {
    format!("<set xmlns='http://jabber.org/protocol/rsm'>{inner}</set>")
}

fn chat(world: &mut World, from: &FullJid, to: &str, body: &str) -> Deliveries {
    world.send(
        from,
        &format!("<message to='{to}' type='chat' id='{body}'><body>{body}</body></message>"),
    )
}

/// The `<stanza-id/>`s of a stanza, as `(by, id)`.
fn stanza_ids(stanza: &Stanza) -> Vec<(String, String)> {
    message(stanza)
        .payloads
        .iter()
        .filter(|p| p.is("stanza-id", SID))
        .map(|p| {
            (
                p.attr("by").unwrap_or("").to_string(),
                p.attr("id").unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn a_chat_is_archived_for_both_parties_and_the_delivered_message_carries_the_recipients_id() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    let bob = world.online("bob/laptop", 0);
    let got = chat(&mut world, &alice, "bob@localhost", "hello");
    let delivered = got.only_to(&bob);
    let ids = stanza_ids(delivered);
    assert_eq!(ids.len(), 1, "{}", got.describe());
    assert_eq!(ids[0].0, "bob@localhost");

    let bobs = query(&mut world, &bob, "");
    assert_eq!(bobs.bodies, ["hello"]);
    // The id in the delivered message is the archive's id.
    assert_eq!(bobs.ids, [ids[0].1.clone()]);
    assert!(bobs.complete());
    assert_eq!(bobs.rsm("count").as_deref(), Some("1"));
    assert_eq!(bobs.rsm("first"), Some(ids[0].1.clone()));

    let alices = query(&mut world, &alice, "");
    assert_eq!(alices.bodies, ["hello"]);
    assert_ne!(alices.ids, bobs.ids, "one id per archive");
    // The archived copy is the message as routed: from alice's full JID, to bob.
    let inner = alices.results[0]
        .get_child("forwarded", ns::FORWARD)
        .and_then(|f| f.get_child("message", "jabber:client"))
        .unwrap();
    assert_eq!(inner.attr("from"), Some("alice@localhost/phone"));
    assert_eq!(inner.attr("to"), Some("bob@localhost"));
    assert!(inner.get_child("stanza-id", SID).is_none());
}

#[test]
fn carbons_carry_the_id_of_their_own_accounts_archive() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    let alice_laptop = world.online("alice/laptop", 0);
    let bob = world.online("bob/phone", 5);
    let bob_tablet = world.online("bob/tablet", 0);
    for who in [&alice_laptop, &bob_tablet] {
        world.send(
            who,
            "<iq type='set' id='c'><enable xmlns='urn:xmpp:carbons:2'/></iq>",
        );
    }
    let got = chat(&mut world, &alice, "bob@localhost", "hi");
    let delivered = stanza_ids(got.only_to(&bob));
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].0, "bob@localhost");
    // The received carbon wraps the delivered message, with bob's id.
    let received = xml(got.only_to(&bob_tablet));
    assert!(received.contains("<received"), "{received}");
    assert!(received.contains(&delivered[0].1), "{received}");
    // The sent carbon carries alice's id, and only hers.
    let sent = xml(got.only_to(&alice_laptop));
    assert!(sent.contains("sent"), "{sent}");
    assert!(sent.contains("by='alice@localhost'"), "{sent}");
    assert!(!sent.contains("by='bob@localhost'"), "{sent}");
    let alices = query(&mut world, &alice, "");
    assert!(sent.contains(&alices.ids[0]), "{sent}");
}

#[test]
fn a_message_stored_offline_is_archived_with_its_id_and_one_to_nobody_is_not() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    chat(&mut world, &alice, "bob@localhost", "while you were out");
    let stored = world.hub.store().offline_messages("bob").unwrap();
    assert!(stored[0].1.contains("stanza-id"), "{stored:?}");
    chat(&mut world, &alice, "nobody@localhost", "lost");
    chat(&mut world, &alice, "alice@localhost", "note to self");
    let bob = world.online("bob/phone", 0);
    assert_eq!(query(&mut world, &bob, "").bodies, ["while you were out"]);
    // The message to no account bounced and is nowhere; one to oneself is there once.
    assert_eq!(
        query(&mut world, &alice, "").bodies,
        ["while you were out", "note to self"]
    );
}

#[test]
fn only_chat_and_normal_messages_with_a_body_are_archived_and_hints_are_obeyed() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    let bob = world.online("bob/phone", 0);
    for stanza in [
        "<message to='bob@localhost' type='headline'><body>news</body></message>",
        "<message to='bob@localhost' type='chat'><active xmlns='http://jabber.org/protocol/chatstates'/></message>",
        "<message to='bob@localhost' type='chat'><body>secret</body><no-store xmlns='urn:xmpp:hints'/></message>",
        "<message to='bob@localhost' type='chat'><body>fleeting</body><no-permanent-store xmlns='urn:xmpp:hints'/></message>",
        "<message to='bob@localhost'><body>a normal one</body></message>",
        "<message to='bob@localhost' type='chat'><body>kept</body><no-store xmlns='urn:xmpp:hints'/><store xmlns='urn:xmpp:hints'/></message>",
    ] {
        world.send(&alice, stanza);
    }
    assert_eq!(query(&mut world, &bob, "").bodies, ["a normal one", "kept"]);
}

#[test]
fn pages_go_forward_with_after_and_backward_with_before() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    let bob = world.online("bob/phone", 0);
    for n in 1..=7 {
        chat(&mut world, &alice, "bob@localhost", &format!("m{n}"));
    }
    let first = query(&mut world, &bob, &set("<max>3</max>"));
    assert_eq!(first.bodies, ["m1", "m2", "m3"]);
    assert!(!first.complete());
    assert_eq!(first.rsm("count").as_deref(), Some("7"));
    assert_eq!(first.rsm("last"), Some(first.ids[2].clone()));
    let after = first.rsm("last").unwrap();
    let second = query(
        &mut world,
        &bob,
        &set(&format!("<max>3</max><after>{after}</after>")),
    );
    assert_eq!(second.bodies, ["m4", "m5", "m6"]);
    let after = second.rsm("last").unwrap();
    let third = query(
        &mut world,
        &bob,
        &set(&format!("<max>3</max><after>{after}</after>")),
    );
    assert_eq!(third.bodies, ["m7"]);
    assert!(third.complete());

    // An empty <before/> is the last page; then backward from its first.
    let last = query(&mut world, &bob, &set("<max>3</max><before/>"));
    assert_eq!(last.bodies, ["m5", "m6", "m7"]);
    assert!(!last.complete());
    let before = last.rsm("first").unwrap();
    let earlier = query(
        &mut world,
        &bob,
        &set(&format!("<max>5</max><before>{before}</before>")),
    );
    assert_eq!(earlier.bodies, ["m1", "m2", "m3", "m4"]);
    assert!(earlier.complete());
    // flip-page: the same page, newest first.
    let flipped = query(
        &mut world,
        &bob,
        &(set("<max>2</max><before/>") + "<flip-page/>"),
    );
    assert_eq!(flipped.bodies, ["m7", "m6"]);
}

#[test]
fn the_form_filters_by_peer_time_and_ids() {
    let mut world = World::with_accounts(&["alice", "bob", "carol"]);
    let alice = world.online("alice/phone", 0);
    let bob = world.online("bob/phone", 0);
    let carol = world.online("carol/phone", 0);
    chat(&mut world, &alice, "bob@localhost", "from alice");
    chat(&mut world, &carol, "bob@localhost", "from carol");
    chat(&mut world, &alice, "bob@localhost", "alice again");
    let with_alice = query(
        &mut world,
        &bob,
        &form(&[("with", "alice@localhost/phone")]),
    );
    assert_eq!(with_alice.bodies, ["from alice", "alice again"]);
    let all = query(&mut world, &bob, "");
    let (first, second, third) = (&all.ids[0], &all.ids[1], &all.ids[2]);
    let between = query(
        &mut world,
        &bob,
        &form(&[("after-id", first), ("before-id", third)]),
    );
    assert_eq!(between.bodies, ["from carol"]);
    let picked = query(
        &mut world,
        &bob,
        &format!(
            "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field><field var='ids'><value>{first}</value><value>{third}</value><value>ffffffffffffffff</value></field></x>"
        ),
    );
    assert_eq!(picked.bodies, ["from alice", "alice again"]);
    let _ = second;
    let future = query(
        &mut world,
        &bob,
        &form(&[("start", "2999-01-01T00:00:00Z")]),
    );
    assert!(future.bodies.is_empty());
    assert!(future.complete());
    assert_eq!(future.rsm("count").as_deref(), Some("0"));
    let past = query(
        &mut world,
        &bob,
        &form(&[
            ("start", "2000-01-01T00:00:00Z"),
            ("end", "2999-01-01T00:00:00+02:00"),
        ]),
    );
    assert_eq!(past.bodies.len(), 3);
}

#[test]
fn the_query_form_and_the_features_are_listed_on_the_account() {
    let mut world = World::with_accounts(&["alice"]);
    let alice = world.online("alice/phone", 0);
    let got = world.send(
        &alice,
        "<iq type='get' id='f'><query xmlns='urn:xmpp:mam:2'/></iq>",
    );
    let reply = xml(got.only_to(&alice));
    for field in [
        "FORM_TYPE",
        "with",
        "start",
        "end",
        "before-id",
        "after-id",
        "ids",
    ] {
        assert!(
            reply.contains(&format!("var='{field}'")),
            "{field}: {reply}"
        );
    }
    let features: Vec<&str> = world.hub.features(Entity::Account).collect();
    for feature in [
        "urn:xmpp:mam:2",
        "urn:xmpp:mam:2#extended",
        "urn:xmpp:sid:0",
    ] {
        assert!(features.contains(&feature), "{feature}: {features:?}");
    }
}

#[test]
fn preferences_are_kept_and_decide_what_is_archived() {
    let mut world = World::with_accounts(&["alice", "bob", "carol"]);
    let alice = world.online("alice/phone", 0);
    let bob = world.online("bob/phone", 0);
    let carol = world.online("carol/phone", 0);
    let got = world.send(
        &alice,
        "<iq type='get' id='p'><prefs xmlns='urn:xmpp:mam:2'/></iq>",
    );
    assert!(xml(got.only_to(&alice)).contains("default='always'"));
    let got = world.send(
        &alice,
        "<iq type='set' id='p'><prefs xmlns='urn:xmpp:mam:2' default='always'><always/><never><jid>carol@localhost</jid></never></prefs></iq>",
    );
    let reply = xml(got.only_to(&alice));
    assert!(reply.contains("carol@localhost"), "{reply}");
    chat(&mut world, &carol, "alice@localhost", "not for the record");
    chat(&mut world, &bob, "alice@localhost", "on the record");
    assert_eq!(query(&mut world, &alice, "").bodies, ["on the record"]);
    // Carol's own archive is hers: she keeps what she sent.
    assert_eq!(query(&mut world, &carol, "").bodies, ["not for the record"]);

    // `roster`: only contacts; `never`: only the always list.
    world.send(
        &alice,
        "<iq type='set' id='p'><prefs xmlns='urn:xmpp:mam:2' default='roster'/></iq>",
    );
    world.befriend(&alice, &bob);
    chat(&mut world, &bob, "alice@localhost", "friend");
    chat(&mut world, &carol, "alice@localhost", "stranger");
    world.send(
        &alice,
        "<iq type='set' id='p'><prefs xmlns='urn:xmpp:mam:2' default='never'><always><jid>carol@localhost</jid></always></prefs></iq>",
    );
    chat(&mut world, &bob, "alice@localhost", "friend, unrecorded");
    chat(&mut world, &carol, "alice@localhost", "carol, recorded");
    assert_eq!(
        query(&mut world, &alice, "").bodies,
        ["on the record", "friend", "carol, recorded"]
    );
    let got = world.send(
        &alice,
        "<iq type='get' id='p'><prefs xmlns='urn:xmpp:mam:2'/></iq>",
    );
    assert!(xml(got.only_to(&alice)).contains("default='never'"));
    // A malformed preference is refused.
    let got = world.send(
        &alice,
        "<iq type='set' id='p'><prefs xmlns='urn:xmpp:mam:2' default='sometimes'/></iq>",
    );
    assert_eq!(
        error_condition(got.only_to(&alice)),
        Some(DefinedCondition::BadRequest)
    );
}

#[test]
fn the_archive_keeps_at_most_its_count_and_can_be_switched_off() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    world.hub.set_archive_limits(ArchiveLimits {
        max_per_user: 20,
        ..ArchiveLimits::default()
    });
    let alice = world.online("alice/phone", 0);
    let bob = world.online("bob/phone", 0);
    for n in 0..100 {
        chat(&mut world, &alice, "bob@localhost", &format!("m{n}"));
        if n % 10 == 0 {
            world.hub.idle();
        }
    }
    world.hub.idle();
    let kept = world.hub.store().archive_count("bob").unwrap();
    assert!((20..=22).contains(&kept), "{kept}");
    let newest = query(&mut world, &bob, &set("<max>1</max><before/>"));
    assert_eq!(newest.bodies, ["m99"]);

    world.hub.set_archive_limits(ArchiveLimits {
        enabled: false,
        ..ArchiveLimits::default()
    });
    let got = chat(&mut world, &alice, "bob@localhost", "unarchived");
    assert!(stanza_ids(got.only_to(&bob)).is_empty());
    assert_eq!(
        query(&mut world, &bob, "").error(),
        Some(DefinedCondition::ServiceUnavailable)
    );
    let features: Vec<&str> = world.hub.features(Entity::Account).collect();
    assert!(!features.contains(&"urn:xmpp:mam:2"), "{features:?}");
}

#[test]
fn rows_are_written_in_batches_and_every_query_sees_what_was_routed_before_it() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    let bob = world.online("bob/phone", 0);
    chat(&mut world, &alice, "bob@localhost", "pending");
    // Not on disk yet: it waits for the hub to be idle...
    assert_eq!(world.hub.store().archive_count("bob").unwrap(), 0);
    // ...or for a query, which writes first.
    assert_eq!(query(&mut world, &bob, "").bodies, ["pending"]);
    assert_eq!(world.hub.store().archive_count("bob").unwrap(), 1);
    for n in 0..super::FLUSH_ROWS {
        chat(&mut world, &alice, "bob@localhost", &format!("m{n}"));
    }
    // Two rows a message: the batch limit was reached on the way.
    assert!(world.hub.store().archive_count("bob").unwrap() > 1);
}

#[test]
fn a_message_from_a_component_is_archived_for_the_account() {
    let mut world = World::with_accounts(&["alice"]);
    world.component("gateway.localhost");
    let alice = world.online("alice/phone", 0);
    let got = world.component_sends(
        "gateway.localhost",
        "<message from='someone@gateway.localhost' to='alice@localhost' type='chat'><body>bridged</body><stanza-id xmlns='urn:xmpp:sid:0' by='alice@localhost' id='forged'/></message>",
    );
    let ids = stanza_ids(got.only_to(&alice));
    assert_eq!(ids.len(), 1);
    assert_ne!(ids[0].1, "forged");
    chat(&mut world, &alice, "someone@gateway.localhost", "reply");
    let answer = query(
        &mut world,
        &alice,
        &form(&[("with", "someone@gateway.localhost")]),
    );
    assert_eq!(answer.bodies, ["bridged", "reply"]);
}

#[test]
fn hostile_a_client_sent_stanza_id_by_this_domain_is_stripped_and_others_kept() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    let bob = world.online("bob/phone", 0);
    let got = world.send(
        &alice,
        "<message to='bob@localhost' type='chat'><body>trust me</body>\
         <stanza-id xmlns='urn:xmpp:sid:0' by='bob@localhost' id='forged-1'/>\
         <stanza-id xmlns='urn:xmpp:sid:0' by='localhost' id='forged-2'/>\
         <stanza-id xmlns='urn:xmpp:sid:0' id='forged-3'/>\
         <stanza-id xmlns='urn:xmpp:sid:0' by='room@muc.example.org' id='theirs'/></message>",
    );
    let ids = stanza_ids(got.only_to(&bob));
    let forged: Vec<_> = ids
        .iter()
        .filter(|(_, id)| id.starts_with("forged"))
        .collect();
    assert!(forged.is_empty(), "{ids:?}");
    assert!(ids
        .iter()
        .any(|(by, id)| by == "room@muc.example.org" && id == "theirs"));
    assert!(ids.iter().any(|(by, _)| by == "bob@localhost"));
}

#[test]
fn hostile_another_accounts_archive_cannot_be_queried_or_configured() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    let bob = world.online("bob/phone", 0);
    chat(&mut world, &alice, "bob@localhost", "private");
    for request in [
        "<iq type='set' id='x' to='bob@localhost'><query xmlns='urn:xmpp:mam:2'/></iq>",
        "<iq type='get' id='x' to='bob@localhost'><prefs xmlns='urn:xmpp:mam:2'/></iq>",
        "<iq type='set' id='x' to='bob@localhost'><prefs xmlns='urn:xmpp:mam:2' default='never'/></iq>",
        "<iq type='set' id='x' to='localhost'><query xmlns='urn:xmpp:mam:2'/></iq>",
    ] {
        let got = world.send(&alice, request);
        assert_eq!(
            error_condition(got.only_to(&alice)),
            Some(DefinedCondition::ServiceUnavailable),
            "{request}: {}",
            got.describe()
        );
    }
    // Bob's archive and preferences are untouched.
    assert_eq!(query(&mut world, &bob, "").bodies, ["private"]);
}

#[test]
fn hostile_a_huge_page_is_served_at_the_cap() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    world.hub.set_archive_limits(ArchiveLimits {
        max_page: 5,
        ..ArchiveLimits::default()
    });
    let alice = world.online("alice/phone", 0);
    let bob = world.online("bob/phone", 0);
    for n in 0..8 {
        chat(&mut world, &alice, "bob@localhost", &format!("m{n}"));
    }
    let page = query(&mut world, &bob, &set("<max>1000000</max>"));
    assert_eq!(page.bodies.len(), 5);
    assert!(!page.complete());
    let huge = query(&mut world, &bob, &set("<max>99999999999999999999999</max>"));
    assert_eq!(huge.error(), Some(DefinedCondition::BadRequest));
}

#[test]
fn hostile_malformed_queries_get_defined_errors() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    let bob = world.online("bob/phone", 0);
    chat(&mut world, &alice, "bob@localhost", "one");
    let cases = [
        (form(&[("start", "yesterday")]), DefinedCondition::BadRequest),
        (form(&[("end", "2024-13-45T99:00:00Z")]), DefinedCondition::BadRequest),
        (form(&[("with", "@@@")]), DefinedCondition::BadRequest),
        (
            "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>urn:example:other</value></field></x>".to_string(),
            DefinedCondition::BadRequest,
        ),
        ("<x xmlns='jabber:x:data' type='bogus'/>".to_string(), DefinedCondition::BadRequest),
        (set("<max>-1</max>"), DefinedCondition::BadRequest),
        (set("<after>0123456789abcdef</after>"), DefinedCondition::ItemNotFound),
        (set("<after>not an id</after>"), DefinedCondition::ItemNotFound),
        (set("<before>0123456789abcdef</before>"), DefinedCondition::ItemNotFound),
        (form(&[("after-id", "0123456789abcdef")]), DefinedCondition::ItemNotFound),
        (form(&[("before-id", "")]), DefinedCondition::ItemNotFound),
    ];
    for (inner, condition) in cases {
        let answer = query(&mut world, &bob, &inner);
        // `before-id` empty is no bound: that one is answered.
        if inner.contains("before-id") {
            assert!(answer.error().is_none(), "{inner}");
            continue;
        }
        assert_eq!(answer.error(), Some(condition), "{inner}");
        assert!(answer.bodies.is_empty(), "{inner}");
    }
    // Another account's id is unknown in this archive.
    let alices = query(&mut world, &alice, "");
    let answer = query(
        &mut world,
        &bob,
        &set(&format!("<after>{}</after>", alices.ids[0])),
    );
    assert_eq!(answer.error(), Some(DefinedCondition::ItemNotFound));
}

#[test]
fn hostile_mam_results_and_errors_are_never_answered() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    world.online("bob/phone", 0);
    for stanza in [
        "<iq type='result' id='r'><fin xmlns='urn:xmpp:mam:2'/></iq>",
        "<iq type='result' id='r'><query xmlns='urn:xmpp:mam:2'/></iq>",
        "<iq type='error' id='r'><query xmlns='urn:xmpp:mam:2'/><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
        "<iq type='result' id='r' to='bob@localhost'><prefs xmlns='urn:xmpp:mam:2' default='never'/></iq>",
    ] {
        let got = world.send(&alice, stanza);
        assert!(got.is_empty(), "{stanza}: {}", got.describe());
    }
}
