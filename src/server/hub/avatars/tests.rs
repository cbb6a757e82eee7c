//! XEP-0398 as deliveries: an avatar set over PEP shows in the vCard and in presence, and a
//! vCard photo shows in PEP.

use tokio_xmpp::jid::FullJid;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::ns;
use tokio_xmpp::Stanza;

use super::super::testing::*;
use super::{DATA_NODE, METADATA_NODE};

/// SHA-1 of the bytes `abc` (RFC 3174 test vector), whose base64 is `YWJj`.
const ABC_SHA1: &str = "a9993e364706816aba3e25717850c26c9cd0d89d";

fn publish(node: &str, id: &str, payload: &str) -> String {
    format!(
        "<iq type='set' id='pub'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
         <publish node='{node}'><item id='{id}'>{payload}</item></publish></pubsub></iq>"
    )
}

fn data(base64: &str) -> String {
    format!("<data xmlns='{DATA_NODE}'>{base64}</data>")
}

fn metadata(infos: &str) -> String {
    format!("<metadata xmlns='{METADATA_NODE}'>{infos}</metadata>")
}

/// The photo hash in the presence stanzas `to` got, in order.
fn hashes_to(got: &Deliveries, to: &FullJid) -> Vec<String> {
    got.to(to)
        .into_iter()
        .filter(|s| matches!(s, Stanza::Presence(_)))
        .filter_map(|s| {
            presence(s)
                .payloads
                .iter()
                .find(|p| p.is("x", ns::VCARD_UPDATE))?
                .get_child("photo", ns::VCARD_UPDATE)
                .map(|photo| photo.text())
        })
        .collect()
}

/// `(TYPE, BINVAL)` of the PHOTO in alice's vCard as bob reads it, `None` without one.
fn photo_seen_by(world: &mut World, reader: &FullJid) -> Option<(String, String)> {
    let got = world.send(
        reader,
        "<iq type='get' to='alice@localhost' id='v'><vCard xmlns='vcard-temp'/></iq>",
    );
    let Iq::Result {
        payload: Some(vcard),
        ..
    } = iq(got.only_to(reader))
    else {
        panic!("no vCard: {}", got.describe());
    };
    let photo = vcard.get_child("PHOTO", ns::VCARD)?;
    let text = |name: &str| {
        photo
            .get_child(name, ns::VCARD)
            .map(Element::text)
            .unwrap_or_default()
    };
    Some((text("TYPE"), text("BINVAL")))
}

#[test]
fn an_avatar_published_over_pep_becomes_the_vcard_photo_and_its_hash_goes_out_in_presence() {
    let mut world = World::with_accounts(&["alice", "bob", "carol"]);
    let alice = world.online("alice/phone", 0);
    let bob = world.online("bob/laptop", 0);
    let carol = world.online("carol/desk", 0);
    world.befriend(&alice, &bob);
    world.send(&alice, &publish(DATA_NODE, ABC_SHA1, &data("YWJj")));
    // Publishing the data alone changes nothing: the metadata says which picture is shown.
    assert_eq!(photo_seen_by(&mut world, &carol), None);

    let got = world.send(
        &alice,
        &publish(
            METADATA_NODE,
            ABC_SHA1,
            &metadata(&format!(
                "<info id='{ABC_SHA1}' bytes='3' type='image/png' url='https://example.org/a.png'/>\
                 <info id='{ABC_SHA1}' bytes='3' type='image/png'/>"
            )),
        ),
    );
    assert!(
        got.to(&alice)
            .iter()
            .any(|s| matches!(s, Stanza::Iq(Iq::Result { .. }))),
        "{}",
        got.describe()
    );
    // Bob, a contact, hears alice's presence again with the picture's hash (XEP-0153 §3.2).
    assert_eq!(hashes_to(&got, &bob), [ABC_SHA1]);
    // Anyone reads it from the vCard, with the type from the metadata (XEP-0398 §3.1).
    assert_eq!(
        photo_seen_by(&mut world, &carol),
        Some(("image/png".to_string(), "YWJj".to_string()))
    );
    // Her next presence carries it too.
    let got = world.send(&alice, "<presence/>");
    assert_eq!(hashes_to(&got, &bob), [ABC_SHA1]);
}

#[test]
fn a_pep_avatar_whose_id_is_not_its_hash_or_whose_data_is_missing_leaves_the_vcard_alone() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    let bob = world.online("bob/laptop", 0);
    world.befriend(&alice, &bob);
    let wrong = "0000000000000000000000000000000000000000";
    world.send(&alice, &publish(DATA_NODE, wrong, &data("YWJj")));
    for id in [wrong, "feedfacefeedfacefeedfacefeedfacefeedface"] {
        let got = world.send(
            &alice,
            &publish(
                METADATA_NODE,
                id,
                &metadata(&format!("<info id='{id}' bytes='3' type='image/png'/>")),
            ),
        );
        assert!(hashes_to(&got, &bob).is_empty(), "{}", got.describe());
        assert_eq!(photo_seen_by(&mut world, &bob), None);
    }
}

#[test]
fn disabling_the_pep_avatar_removes_the_vcard_photo() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    let bob = world.online("bob/laptop", 0);
    world.befriend(&alice, &bob);
    world.send(&alice, &publish(DATA_NODE, ABC_SHA1, &data("YWJj")));
    world.send(
        &alice,
        &publish(
            METADATA_NODE,
            ABC_SHA1,
            &metadata(&format!(
                "<info id='{ABC_SHA1}' bytes='3' type='image/png'/>"
            )),
        ),
    );
    assert!(photo_seen_by(&mut world, &bob).is_some());
    // XEP-0084 §4.5: empty metadata, "no avatar".
    let got = world.send(&alice, &publish(METADATA_NODE, "off", &metadata("")));
    assert_eq!(hashes_to(&got, &bob), [""]);
    assert_eq!(photo_seen_by(&mut world, &bob), None);
}

#[test]
fn a_vcard_photo_is_published_as_the_pep_avatar_and_removing_it_disables_that() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    let bob = world.online("bob/laptop", 0);
    world.befriend(&alice, &bob);
    world.send(
        &alice,
        "<iq type='set' id='set'><vCard xmlns='vcard-temp'><FN>Alice</FN>\
         <PHOTO><TYPE>image/png</TYPE><BINVAL>YWJj</BINVAL></PHOTO></vCard></iq>",
    );
    // XEP-0398 §3.2: the data under the image's SHA-1, then metadata describing it.
    let read = |world: &mut World, node: &str| -> Element {
        let got = world.send(
            &bob,
            &format!(
                "<iq type='get' to='alice@localhost' id='r'><pubsub \
                 xmlns='http://jabber.org/protocol/pubsub'><items node='{node}'/></pubsub></iq>"
            ),
        );
        match iq(got.only_to(&bob)) {
            Iq::Result {
                payload: Some(pubsub),
                ..
            } => pubsub.clone(),
            _ => panic!("{node} not readable: {}", got.describe()),
        }
    };
    let items = read(&mut world, DATA_NODE);
    let item = items
        .get_child("items", "http://jabber.org/protocol/pubsub")
        .and_then(|items| items.get_child("item", "http://jabber.org/protocol/pubsub"))
        .expect("a data item");
    assert_eq!(item.attr("id"), Some(ABC_SHA1));
    assert_eq!(
        item.get_child("data", DATA_NODE).map(Element::text),
        Some("YWJj".to_string())
    );
    let items = read(&mut world, METADATA_NODE);
    let info = items
        .get_child("items", "http://jabber.org/protocol/pubsub")
        .and_then(|items| items.get_child("item", "http://jabber.org/protocol/pubsub"))
        .and_then(|item| item.get_child("metadata", METADATA_NODE))
        .and_then(|metadata| metadata.get_child("info", METADATA_NODE))
        .expect("a metadata info");
    assert_eq!(
        (info.attr("id"), info.attr("bytes"), info.attr("type")),
        (Some(ABC_SHA1), Some("3"), Some("image/png"))
    );

    // A vCard without a photo disables the PEP avatar (XEP-0084 §4.5).
    world.send(
        &alice,
        "<iq type='set' id='set2'><vCard xmlns='vcard-temp'><FN>Alice</FN></vCard></iq>",
    );
    let items = read(&mut world, METADATA_NODE);
    let metadata = items
        .get_child("items", "http://jabber.org/protocol/pubsub")
        .and_then(|items| items.get_child("item", "http://jabber.org/protocol/pubsub"))
        .and_then(|item| item.get_child("metadata", METADATA_NODE))
        .expect("metadata");
    assert_eq!(metadata.children().count(), 0, "{}", String::from(metadata));
}

#[test]
fn an_account_without_a_pep_avatar_gets_none_from_a_vcard_without_a_photo() {
    let mut world = World::with_accounts(&["alice"]);
    let alice = world.online("alice/phone", 0);
    world.send(
        &alice,
        "<iq type='set' id='set'><vCard xmlns='vcard-temp'><FN>Alice</FN></vCard></iq>",
    );
    assert_eq!(
        world.hub.store().pep_node("alice", METADATA_NODE).unwrap(),
        None
    );
}
