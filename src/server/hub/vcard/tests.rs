//! vCards (XEP-0054) and the photo hash in presence (XEP-0153, XEP-0398 §4) as deliveries.

use tokio_xmpp::jid::FullJid;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::stanza_error::DefinedCondition;
use tokio_xmpp::Stanza;

use super::super::testing::*;
use super::Photo;
use crate::server::limits::ServerLimits;

/// SHA-1 of the bytes `abc` (RFC 3174 test vector), whose base64 is `YWJj`.
const ABC_SHA1: &str = "a9993e364706816aba3e25717850c26c9cd0d89d";

fn set_card(photo_base64: &str) -> String {
    format!(
        "<iq type='set' id='set'><vCard xmlns='vcard-temp'><FN>Alice</FN>\
         <PHOTO><TYPE>image/png</TYPE><BINVAL>{photo_base64}</BINVAL></PHOTO></vCard></iq>"
    )
}

/// The vCard in the result `to` got.
fn vcard_in(got: &Deliveries, to: &FullJid) -> Element {
    match iq(got.only_to(to)) {
        Iq::Result {
            payload: Some(vcard),
            ..
        } => vcard.clone(),
        other => panic!("not a result with a vCard: {other:?}{}", got.describe()),
    }
}

/// Whether the first stanza `to` got is a result without payload (a set's answer; the
/// presence its new photo causes comes after it).
fn is_empty_result(got: &Deliveries, to: &FullJid) -> bool {
    got.to(to)
        .first()
        .is_some_and(|s| matches!(iq(s), Iq::Result { payload: None, .. }))
}

/// The text of `<photo/>` in the presence's `vcard-temp:x:update`, if it has one (`Some("")`
/// for an empty one), and how many such elements it has.
fn photo_claim(stanza: &Stanza) -> (Option<String>, usize) {
    let updates: Vec<&Element> = presence(stanza)
        .payloads
        .iter()
        .filter(|p| p.is("x", ns::VCARD_UPDATE))
        .collect();
    let photo = updates
        .first()
        .and_then(|x| x.get_child("photo", ns::VCARD_UPDATE))
        .map(|photo| photo.text());
    (photo, updates.len())
}

/// The presence stanzas among what `to` got.
fn presences_to<'a>(got: &'a Deliveries, to: &FullJid) -> Vec<&'a Stanza> {
    got.to(to)
        .into_iter()
        .filter(|s| matches!(s, Stanza::Presence(_)))
        .collect()
}

#[test]
fn an_account_stores_its_vcard_and_anyone_reads_it_back() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    let bob = world.online("bob/laptop", 0);
    let got = world.send(&alice, &set_card("YWJj"));
    assert!(is_empty_result(&got, &alice), "{}", got.describe());
    // Her own available resource sees her presence again, with the new photo's hash.
    assert_eq!(
        photo_claim(got.to(&alice)[1]),
        (Some(ABC_SHA1.to_string()), 1)
    );

    for ask in [
        "<iq type='get' id='g'><vCard xmlns='vcard-temp'/></iq>",
        "<iq to='alice@localhost' type='get' id='g'><vCard xmlns='vcard-temp'/></iq>",
    ] {
        let got = world.send(&alice, ask);
        let vcard = vcard_in(&got, &alice);
        assert_eq!(vcard.get_child("FN", ns::VCARD).unwrap().text(), "Alice");
    }
    // Bob, with no subscription at all, reads it from alice's bare JID.
    let got = world.send(
        &bob,
        "<iq to='alice@localhost' type='get' id='g'><vCard xmlns='vcard-temp'/></iq>",
    );
    assert_eq!(
        from_of(got.only_to(&bob)),
        Some(&bare("alice@localhost").into())
    );
    let vcard = vcard_in(&got, &bob);
    let photo = vcard.get_child("PHOTO", ns::VCARD).unwrap();
    assert_eq!(photo.get_child("BINVAL", ns::VCARD).unwrap().text(), "YWJj");
    assert_eq!(
        photo.get_child("TYPE", ns::VCARD).unwrap().text(),
        "image/png"
    );
}

#[test]
fn an_account_without_a_vcard_and_the_server_have_an_empty_one() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    for ask in [
        "<iq type='get' id='g'><vCard xmlns='vcard-temp'/></iq>",
        "<iq to='bob@localhost' type='get' id='g'><vCard xmlns='vcard-temp'/></iq>",
        "<iq to='localhost' type='get' id='g'><vCard xmlns='vcard-temp'/></iq>",
    ] {
        let got = world.send(&alice, ask);
        let vcard = vcard_in(&got, &alice);
        assert!(vcard.is("vCard", ns::VCARD), "{ask}");
        assert_eq!(vcard.children().count(), 0, "{ask}");
    }
}

#[test]
fn a_vcard_of_no_account_is_service_unavailable() {
    let mut world = World::with_accounts(&["alice"]);
    let alice = world.online("alice/phone", 0);
    let got = world.send(
        &alice,
        "<iq to='nobody@localhost' type='get' id='g'><vCard xmlns='vcard-temp'/></iq>",
    );
    assert_eq!(
        error_condition(got.only_to(&alice)),
        Some(DefinedCondition::ServiceUnavailable)
    );
}

#[test]
fn setting_another_accounts_or_the_servers_vcard_is_forbidden_and_changes_nothing() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    let bob = world.online("bob/laptop", 0);
    world.send(
        &bob,
        "<iq type='set' id='s'><vCard xmlns='vcard-temp'><FN>Bob</FN></vCard></iq>",
    );
    for to in ["bob@localhost", "localhost"] {
        let got = world.send(
            &alice,
            &format!(
                "<iq to='{to}' type='set' id='s'><vCard xmlns='vcard-temp'><FN>Mallory</FN></vCard></iq>"
            ),
        );
        assert_eq!(
            error_condition(got.only_to(&alice)),
            Some(DefinedCondition::Forbidden),
            "{to}"
        );
    }
    let stored = world.hub.store().get_vcard("bob").unwrap().unwrap();
    assert!(
        stored.contains("Bob") && !stored.contains("Mallory"),
        "{stored}"
    );
    assert_eq!(world.hub.store().get_vcard("alice").unwrap(), None);
}

#[test]
fn a_vcard_over_the_limit_is_not_acceptable_and_the_stored_one_stays() {
    let mut world = World::with_accounts(&["alice"]);
    world.hub.start(&ServerLimits {
        max_vcard_bytes: 200,
        ..ServerLimits::default()
    });
    let alice = world.online("alice/phone", 0);
    let small = "<iq type='set' id='s'><vCard xmlns='vcard-temp'><FN>Alice</FN></vCard></iq>";
    assert!(is_empty_result(&world.send(&alice, small), &alice));
    let big = set_card(&"QUFB".repeat(100));
    let got = world.send(&alice, &big);
    assert_eq!(
        error_condition(got.only_to(&alice)),
        Some(DefinedCondition::NotAcceptable)
    );
    let stored = world.hub.store().get_vcard("alice").unwrap().unwrap();
    assert!(!stored.contains("PHOTO"), "{stored}");
    assert_eq!(world.hub.store().vcard_photo_hash("alice").unwrap(), None);
}

#[test]
fn a_vcard_is_refused_in_another_namespace_or_with_a_photo_that_is_not_base64() {
    let mut world = World::with_accounts(&["alice"]);
    let alice = world.online("alice/phone", 0);
    // Not vcard-temp: no service takes it.
    for set in [
        "<iq type='set' id='s'><vCard xmlns='urn:ietf:params:xml:ns:vcard-4.0'><FN>A</FN></vCard></iq>",
        "<iq type='set' id='s'><VCARD xmlns='vcard-temp'><FN>A</FN></VCARD></iq>",
    ] {
        let got = world.send(&alice, set);
        assert_eq!(
            error_condition(got.only_to(&alice)),
            Some(DefinedCondition::ServiceUnavailable),
            "{set}"
        );
    }
    let got = world.send(&alice, &set_card("not base64!"));
    assert_eq!(
        error_condition(got.only_to(&alice)),
        Some(DefinedCondition::BadRequest)
    );
    assert_eq!(world.hub.store().get_vcard("alice").unwrap(), None);
}

#[test]
fn vcard_results_and_errors_are_never_answered() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    for to in ["", " to='bob@localhost'", " to='localhost'"] {
        for kind in ["result", "error"] {
            let error = if kind == "error" {
                "<error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>"
            } else {
                ""
            };
            let got = world.send(
                &alice,
                &format!("<iq{to} type='{kind}' id='r'><vCard xmlns='vcard-temp'/>{error}</iq>"),
            );
            assert!(got.is_empty(), "{to} {kind}: {}", got.describe());
        }
    }
}

#[test]
fn every_available_presence_carries_the_stored_photo_hash_in_place_of_the_clients() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    let bob = world.online("bob/laptop", 0);
    world.befriend(&alice, &bob);
    // No vCard yet: an empty photo, "no avatar" (XEP-0153 §4.1).
    let got = world.send(&alice, "<presence><status>no card</status></presence>");
    assert_eq!(photo_claim(got.only_to(&bob)), (Some(String::new()), 1));

    // Whitespace in the base64 (clients wrap lines) is not part of the image.
    world.send(&alice, &set_card("YW\n  Jj"));
    for sent in [
        "<presence/>",
        "<presence><x xmlns='vcard-temp:x:update'/></presence>",
        "<presence><x xmlns='vcard-temp:x:update'><photo>0000000000000000000000000000000000000000</photo></x><x xmlns='vcard-temp:x:update'/></presence>",
    ] {
        let got = world.send(&alice, sent);
        assert_eq!(
            photo_claim(got.only_to(&bob)),
            (Some(ABC_SHA1.to_string()), 1),
            "{sent}"
        );
    }
    // A client's empty <photo/> says "no avatar to show": it goes through (XEP-0398 §4).
    let got = world.send(
        &alice,
        "<presence><x xmlns='vcard-temp:x:update'><photo/></x></presence>",
    );
    assert_eq!(photo_claim(got.only_to(&bob)), (Some(String::new()), 1));
    // Directed presence carries it too (XEP-0398 §4).
    let got = world.send(&alice, "<presence to='bob@localhost/laptop'/>");
    assert_eq!(
        photo_claim(got.only_to(&bob)),
        (Some(ABC_SHA1.to_string()), 1)
    );
    // Unavailable presence is left alone.
    let got = world.send(&alice, "<presence type='unavailable'/>");
    assert_eq!(photo_claim(got.only_to(&bob)), (None, 0));
}

#[test]
fn a_new_photo_is_announced_to_contacts_and_own_resources_and_kept_for_later_probes() {
    let mut world = World::with_accounts(&["alice", "bob", "carol"]);
    let alice = world.online("alice/phone", 0);
    let laptop = world.online("alice/laptop", 0);
    let bob = world.online("bob/laptop", 0);
    let carol = world.online("carol/desk", 0);
    world.befriend(&alice, &bob);
    world.send(&alice, "<presence><status>here</status></presence>");

    let got = world.send(&alice, &set_card("YWJj"));
    // The answer first, then the presence of both of alice's resources.
    assert!(is_empty_result(&got, &alice), "{}", got.describe());
    let to_bob = presences_to(&got, &bob);
    assert_eq!(to_bob.len(), 2, "{}", got.describe());
    for stanza in &to_bob {
        assert_eq!(photo_claim(stanza), (Some(ABC_SHA1.to_string()), 1));
    }
    // The status alice set is the one announced again.
    assert!(to_bob
        .iter()
        .any(|s| from_of(s) == Some(&alice.clone().into())
            && presence(s).statuses.values().any(|t| t == "here")));
    assert_eq!(presences_to(&got, &laptop).len(), 2, "{}", got.describe());
    // Carol is no contact: she hears nothing.
    assert!(got.to(&carol).is_empty(), "{}", got.describe());

    // The same photo again: nothing to announce.
    let got = world.send(&alice, &set_card("YWJj"));
    assert!(presences_to(&got, &bob).is_empty(), "{}", got.describe());

    // Bob comes online again later: alice's kept presence carries the hash.
    world.send(&bob, "<presence type='unavailable'/>");
    let got = world.send(&bob, "<presence/>");
    let from_alice: Vec<&Stanza> = presences_to(&got, &bob)
        .into_iter()
        .filter(|s| from_of(s) == Some(&alice.clone().into()))
        .collect();
    assert_eq!(from_alice.len(), 1, "{}", got.describe());
    assert_eq!(photo_claim(from_alice[0]), (Some(ABC_SHA1.to_string()), 1));

    // Removing the photo is announced as "no avatar".
    let got = world.send(
        &alice,
        "<iq type='set' id='s'><vCard xmlns='vcard-temp'><FN>Alice</FN></vCard></iq>",
    );
    let to_bob = presences_to(&got, &bob);
    assert_eq!(to_bob.len(), 2, "{}", got.describe());
    assert_eq!(photo_claim(to_bob[0]), (Some(String::new()), 1));
}

#[test]
fn setting_only_the_photo_keeps_the_rest_of_the_vcard_and_announces_it() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    let bob = world.online("bob/laptop", 0);
    world.befriend(&alice, &bob);
    let owner = bare("alice@localhost");
    let photo = Photo {
        mime_type: "image/png".into(),
        bytes: b"abc".to_vec(),
    };
    assert_eq!(photo.sha1_hex(), ABC_SHA1);

    // No vCard yet: one is made with the photo alone.
    let mut out = Vec::new();
    world
        .hub
        .set_vcard_photo(&owner, Some(&photo), &mut out)
        .unwrap();
    let got = Deliveries(out);
    assert_eq!(
        photo_claim(got.only_to(&bob)),
        (Some(ABC_SHA1.to_string()), 1)
    );
    assert_eq!(
        world
            .hub
            .store()
            .vcard_photo_hash("alice")
            .unwrap()
            .as_deref(),
        Some(ABC_SHA1)
    );

    // A vCard with a name and two photos: the name stays, one photo is left, the new one.
    world.send(
        &alice,
        "<iq type='set' id='s'><vCard xmlns='vcard-temp'><PHOTO><EXTVAL>https://example.org/a.png</EXTVAL></PHOTO><FN>Alice</FN><PHOTO><BINVAL>AAAA</BINVAL></PHOTO></vCard></iq>",
    );
    let mut out = Vec::new();
    world
        .hub
        .set_vcard_photo(&owner, Some(&photo), &mut out)
        .unwrap();
    let stored: Element = world
        .hub
        .store()
        .get_vcard("alice")
        .unwrap()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(stored.get_child("FN", ns::VCARD).unwrap().text(), "Alice");
    let photos: Vec<&Element> = stored
        .children()
        .filter(|c| c.is("PHOTO", ns::VCARD))
        .collect();
    assert_eq!(photos.len(), 1, "{}", String::from(&stored));
    assert_eq!(super::photo_of(&stored), Ok(Some(photo.clone())));

    // None removes it.
    let mut out = Vec::new();
    world.hub.set_vcard_photo(&owner, None, &mut out).unwrap();
    assert_eq!(
        photo_claim(Deliveries(out).only_to(&bob)),
        (Some(String::new()), 1)
    );
    let stored = world.hub.store().get_vcard("alice").unwrap().unwrap();
    assert!(
        stored.contains("Alice") && !stored.contains("PHOTO"),
        "{stored}"
    );

    // Over the limit: refused, nothing changes.
    world.hub.start(&ServerLimits {
        max_vcard_bytes: 100,
        ..ServerLimits::default()
    });
    let big = Photo {
        mime_type: "image/png".into(),
        bytes: vec![7; 200],
    };
    let mut out = Vec::new();
    assert_eq!(
        world.hub.set_vcard_photo(&owner, Some(&big), &mut out),
        Err(DefinedCondition::NotAcceptable)
    );
    assert!(out.is_empty());
    assert_eq!(world.hub.store().vcard_photo_hash("alice").unwrap(), None);
}
