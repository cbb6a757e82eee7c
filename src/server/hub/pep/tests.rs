//! PEP (XEP-0163) as deliveries: publishing, reading and the access models, publish-options
//! and node configuration, notifications through entity capabilities, last items, limits,
//! and the requests it refuses.

use base64::prelude::{Engine, BASE64_STANDARD};
use tokio_xmpp::jid::FullJid;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::caps::hash_caps;
use tokio_xmpp::parsers::disco::{DiscoInfoResult, DiscoItemsResult, Identity};
use tokio_xmpp::parsers::hashes::Algo;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::MessageType;
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::stanza_error::{DefinedCondition, StanzaError};
use tokio_xmpp::Stanza;

use super::super::disco::verification_string;
use super::super::testing::*;
use crate::server::limits::{PepLimits, ServerLimits};

const NICK: &str = "http://jabber.org/protocol/nick";
const BOOKMARKS: &str = "urn:xmpp:bookmarks:1";
const DEVICELIST: &str = "eu.siacs.conversations.axolotl.devicelist";
const CAPS_NODE: &str = "https://example.org/client";

/// The disco#info of a test client that wants notifications of `nodes`.
fn client_info(nodes: &[&str]) -> DiscoInfoResult {
    let mut features: std::collections::BTreeSet<String> =
        [ns::DISCO_INFO.to_string(), ns::CAPS.to_string()].into();
    features.extend(nodes.iter().map(|node| format!("{node}+notify")));
    DiscoInfoResult {
        node: None,
        identities: vec![Identity::new("client", "pc", "en", "test")],
        features,
        extensions: Vec::new(),
    }
}

/// The XEP-0115 `ver` of `info`.
fn ver_of(info: &DiscoInfoResult) -> String {
    let input = verification_string(&Element::from(info.clone())).unwrap();
    let hash = hash_caps(&input, Algo::Sha_1).unwrap();
    BASE64_STANDARD.encode(&hash.hash)
}

/// An available presence with caps `ver`.
fn presence_with_caps(ver: &str) -> String {
    format!("<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='{CAPS_NODE}' ver='{ver}'/></presence>")
}

/// The server's caps query to `to` among `got`: its id and node.
fn caps_query(got: &Deliveries, to: &FullJid) -> Option<(String, String)> {
    got.to(to).into_iter().find_map(|stanza| match stanza {
        Stanza::Iq(Iq::Get {
            id, payload, from, ..
        }) if payload.is("query", ns::DISCO_INFO) => {
            assert_eq!(
                from.as_ref().map(|f| f.to_string()).as_deref(),
                Some("localhost")
            );
            Some((
                id.clone(),
                payload.attr("node").unwrap_or_default().to_string(),
            ))
        }
        _ => None,
    })
}

/// `who` answers the caps query `id` with `info`.
fn answer_caps(world: &mut World, who: &FullJid, id: &str, info: &DiscoInfoResult) -> Deliveries {
    let query = String::from(&Element::from(info.clone()));
    world.send(
        who,
        &format!("<iq type='result' to='localhost' id='{id}'>{query}</iq>"),
    )
}

/// Binds `who` and brings it online with caps wanting `nodes`, answering the server's query;
/// returns what the answer delivered (the last items) too.
fn online_with_caps(world: &mut World, who: &str, nodes: &[&str]) -> (FullJid, Deliveries) {
    let jid = world.bind(who);
    let info = client_info(nodes);
    let got = world.send(&jid, &presence_with_caps(&ver_of(&info)));
    let answered = match caps_query(&got, &jid) {
        Some((id, node)) => {
            assert_eq!(node, format!("{CAPS_NODE}#{}", ver_of(&info)));
            answer_caps(world, &jid, &id, &info)
        }
        // Known already: the presence itself delivered the last items.
        None => got,
    };
    (jid, answered)
}

/// `from` publishes `payload` as item `id` (none: generated) of `node`, with `options` as
/// publish-options fields.
fn publish(
    world: &mut World,
    from: &FullJid,
    node: &str,
    id: Option<&str>,
    payload: &str,
    options: &[(&str, &str)],
) -> Deliveries {
    let id = id.map(|id| format!(" id='{id}'")).unwrap_or_default();
    let options = if options.is_empty() {
        String::new()
    } else {
        let fields: String = options
            .iter()
            .map(|(var, value)| format!("<field var='{var}'><value>{value}</value></field>"))
            .collect();
        format!("<publish-options><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>{fields}</x></publish-options>")
    };
    world.send(
        from,
        &format!("<iq type='set' id='pub'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='{node}'><item{id}>{payload}</item></publish>{options}</pubsub></iq>"),
    )
}

fn nick(text: &str) -> String {
    format!("<nick xmlns='{NICK}'>{text}</nick>")
}

/// The error condition and pubsub-specific condition of the IQ error for `to`.
fn pubsub_error(got: &Deliveries, to: &FullJid) -> (DefinedCondition, Option<String>) {
    match iq(got.only_to(to)) {
        Iq::Error { error, .. } => (
            error.defined_condition.clone(),
            error.other.as_ref().map(|other| {
                assert_eq!(other.ns(), ns::PUBSUB_ERRORS);
                other.name().to_string()
            }),
        ),
        other => panic!("not an error: {other:?}"),
    }
}

fn is_result(got: &Deliveries, to: &FullJid) -> bool {
    matches!(iq(got.only_to(to)), Iq::Result { .. })
}

/// The result payload for `to`.
fn result_payload(got: &Deliveries, to: &FullJid) -> Element {
    match iq(got.only_to(to)) {
        Iq::Result {
            payload: Some(payload),
            ..
        } => payload.clone(),
        other => panic!("not a result with a payload: {other:?}\n{}", got.describe()),
    }
}

/// The PEP events `to` got: (from, node, kind, item id, payload text).
fn events(got: &Deliveries, to: &FullJid) -> Vec<(String, String, String, String, String)> {
    got.to(to)
        .into_iter()
        .filter_map(|stanza| match stanza {
            Stanza::Message(m) => Some(m),
            _ => None,
        })
        .flat_map(|m| {
            assert_eq!(m.type_, MessageType::Headline);
            let from = m.from.as_ref().map(|f| f.to_string()).unwrap_or_default();
            m.payloads
                .iter()
                .filter(|p| p.is("event", ns::PUBSUB_EVENT))
                .flat_map(|event| event.children().cloned().collect::<Vec<_>>())
                .map(move |event| {
                    let node = event.attr("node").unwrap_or_default().to_string();
                    let (kind, id, text) = match event.children().next() {
                        Some(child) => (
                            child.name().to_string(),
                            child.attr("id").unwrap_or_default().to_string(),
                            child
                                .children()
                                .next()
                                .map(|p| p.text())
                                .unwrap_or_default(),
                        ),
                        None => (event.name().to_string(), String::new(), String::new()),
                    };
                    (from.clone(), node, kind, id, text)
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The (id, payload text) of the items in an items result.
fn items_of(payload: &Element) -> Vec<(String, String)> {
    let items = payload.get_child("items", ns::PUBSUB).expect("<items/>");
    items
        .children()
        .map(|item| {
            (
                item.attr("id").unwrap_or_default().to_string(),
                item.children().next().map(|p| p.text()).unwrap_or_default(),
            )
        })
        .collect()
}

fn get_items(
    world: &mut World,
    from: &FullJid,
    owner: &str,
    node: &str,
    extra: &str,
    inner: &str,
) -> Deliveries {
    world.send(
        from,
        &format!("<iq type='get' to='{owner}' id='items'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='{node}'{extra}>{inner}</items></pubsub></iq>"),
    )
}

#[test]
fn a_first_publication_creates_the_node_and_answers_with_the_item_id() {
    let mut world = World::with_accounts(&["alice"]);
    let alice = world.online("alice/phone", 0);
    let got = publish(
        &mut world,
        &alice,
        NICK,
        Some("current"),
        &nick("Alice"),
        &[],
    );
    let answer = result_payload(&got, &alice);
    let item = answer
        .get_child("publish", ns::PUBSUB)
        .and_then(|p| p.get_child("item", ns::PUBSUB))
        .unwrap();
    assert_eq!(item.attr("id"), Some("current"));
    // No id: one is made up and returned (XEP-0060 §7.1.2).
    let got = publish(&mut world, &alice, NICK, None, &nick("Alice 2"), &[]);
    let answer = result_payload(&got, &alice);
    let id = answer
        .get_child("publish", ns::PUBSUB)
        .and_then(|p| p.get_child("item", ns::PUBSUB))
        .and_then(|item| item.attr("id"))
        .unwrap()
        .to_string();
    assert!(!id.is_empty());
    let got = get_items(&mut world, &alice, "alice@localhost", NICK, "", "");
    // The default max_items of PEP is 1: the newest item only.
    assert_eq!(
        items_of(&result_payload(&got, &alice)),
        [(id, "Alice 2".to_string())]
    );
}

#[test]
fn a_contact_with_a_presence_subscription_is_notified_and_a_stranger_is_not() {
    let mut world = World::with_accounts(&["alice", "bob", "carol"]);
    let (alice, _) = online_with_caps(&mut world, "alice/phone", &[NICK]);
    let (laptop, _) = online_with_caps(&mut world, "alice/laptop", &[NICK]);
    let (bob, _) = online_with_caps(&mut world, "bob/phone", &[NICK]);
    let (carol, _) = online_with_caps(&mut world, "carol/phone", &[NICK]);
    let (bob_tablet, _) = online_with_caps(&mut world, "bob/tablet", &[]);
    world.befriend(&alice, &bob);
    let got = publish(
        &mut world,
        &alice,
        NICK,
        Some("current"),
        &nick("Alice"),
        &[],
    );
    assert!(got
        .to(&alice)
        .iter()
        .any(|s| matches!(s, Stanza::Iq(Iq::Result { .. }))));
    let expected = (
        "alice@localhost".to_string(),
        NICK.to_string(),
        "item".to_string(),
        "current".to_string(),
        "Alice".to_string(),
    );
    assert_eq!(events(&got, &bob), std::slice::from_ref(&expected));
    // The owner's own resources too (XEP-0163 §4.3), the publishing one included.
    assert_eq!(events(&got, &laptop), std::slice::from_ref(&expected));
    assert_eq!(events(&got, &alice), [expected]);
    // No subscription, no notification; no +notify, no notification.
    assert!(got.to(&carol).is_empty(), "{}", got.describe());
    assert!(got.to(&bob_tablet).is_empty(), "{}", got.describe());
}

#[test]
fn caps_are_asked_once_per_ver_and_then_come_from_the_cache() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let (alice, _) = online_with_caps(&mut world, "alice/phone", &[NICK]);
    assert_eq!(world.hub.pep.caps.len(), 1);
    // Another session with the same ver: no query.
    let bob = world.bind("bob/phone");
    let got = world.send(&bob, &presence_with_caps(&ver_of(&client_info(&[NICK]))));
    assert!(caps_query(&got, &bob).is_none(), "{}", got.describe());
    // A later presence of the same session asks nothing again.
    let got = world.send(&alice, &presence_with_caps(&ver_of(&client_info(&[NICK]))));
    assert!(caps_query(&got, &alice).is_none());
    world.befriend(&alice, &bob);
    let got = publish(&mut world, &alice, NICK, Some("current"), &nick("A"), &[]);
    assert_eq!(events(&got, &bob).len(), 1, "{}", got.describe());
}

#[test]
fn an_answer_that_does_not_hash_to_its_ver_serves_that_session_only() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.bind("alice/phone");
    let got = world.send(&alice, &presence_with_caps("bm90LXRoZS1oYXNo"));
    let (id, _) = caps_query(&got, &alice).unwrap();
    answer_caps(&mut world, &alice, &id, &client_info(&[NICK]));
    assert!(world.hub.sessions[&alice].pep.wants(NICK));
    assert_eq!(world.hub.pep.caps.len(), 0);
    let bob = world.bind("bob/phone");
    let got = world.send(&bob, &presence_with_caps("bm90LXRoZS1oYXNo"));
    assert!(caps_query(&got, &bob).is_some(), "asked again: not cached");
}

#[test]
fn hostile_iq_results_to_the_server_are_never_answered_and_change_nothing() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.bind("alice/phone");
    let bob = world.bind("bob/phone");
    let got = world.send(&alice, &presence_with_caps(&ver_of(&client_info(&[NICK]))));
    let (id, _) = caps_query(&got, &alice).unwrap();
    // Unsolicited results and errors, another session answering alice's query, a wrong id.
    for (who, xml) in [
        (&bob, format!("<iq type='result' to='localhost' id='{id}'><query xmlns='http://jabber.org/protocol/disco#info'><feature var='{NICK}+notify'/></query></iq>")),
        (&alice, "<iq type='result' to='localhost' id='other'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>".to_string()),
        (&alice, "<iq type='result' to='localhost' id='x'/>".to_string()),
        (&bob, "<iq type='error' to='localhost' id='y'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>".to_string()),
    ] {
        let got = world.send(who, &xml);
        assert!(got.is_empty(), "{xml}: {}", got.describe());
    }
    assert!(world.hub.sessions[&alice].pep.interests().is_none());
    assert!(world.hub.sessions[&bob].pep.interests().is_none());
    // A client that answers with an error gets no notifications, and is not asked again for
    // the same caps.
    let got = world.send(&alice, &format!("<iq type='error' to='localhost' id='{id}'><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"));
    assert!(got.is_empty());
    let got = world.send(&alice, &presence_with_caps(&ver_of(&client_info(&[NICK]))));
    assert!(caps_query(&got, &alice).is_none());
    assert!(!world.hub.sessions[&alice].pep.wants(NICK));
}

#[test]
fn a_contact_coming_online_gets_the_last_item_and_so_does_a_new_resource_of_the_owner() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    let bob = world.online("bob/phone", 0);
    world.befriend(&alice, &bob);
    publish(&mut world, &alice, NICK, Some("current"), &nick("Old"), &[]);
    publish(
        &mut world,
        &alice,
        NICK,
        Some("current"),
        &nick("Alice"),
        &[],
    );
    world.unbind(&bob);
    // bob's new session: its caps become known when it answers, and the last item follows.
    let (bob, got) = online_with_caps(&mut world, "bob/laptop", &[NICK]);
    let nicks: Vec<String> = events(&got, &bob).into_iter().map(|e| e.4).collect();
    assert_eq!(nicks, ["Alice"]);
    // A known ver: the last item comes with the presence.
    let (laptop, got) = online_with_caps(&mut world, "alice/laptop", &[NICK]);
    let nicks: Vec<String> = events(&got, &laptop).into_iter().map(|e| e.4).collect();
    assert_eq!(nicks, ["Alice"]);
    // Unavailable then available again: sent again; a mere status change: not.
    let got = world.send(&laptop, "<presence><status>busy</status></presence>");
    assert!(events(&got, &laptop).is_empty());
    world.send(&laptop, "<presence type='unavailable'/>");
    let got = world.send(&laptop, "<presence/>");
    assert_eq!(events(&got, &laptop).len(), 1, "{}", got.describe());
}

#[test]
fn a_newly_approved_subscriber_gets_the_last_items() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let (alice, _) = online_with_caps(&mut world, "alice/phone", &[NICK]);
    let (bob, _) = online_with_caps(&mut world, "bob/phone", &[NICK]);
    publish(
        &mut world,
        &alice,
        NICK,
        Some("current"),
        &nick("Alice"),
        &[],
    );
    world.send(&bob, "<presence to='alice@localhost' type='subscribe'/>");
    let got = world.send(&alice, "<presence to='bob@localhost' type='subscribed'/>");
    let nicks: Vec<String> = events(&got, &bob).into_iter().map(|e| e.4).collect();
    assert_eq!(nicks, ["Alice"]);
}

#[test]
fn items_are_read_all_newest_or_by_id_by_whom_the_access_model_allows() {
    let mut world = World::with_accounts(&["alice", "bob", "carol"]);
    let alice = world.online("alice/phone", 0);
    let bob = world.online("bob/phone", 0);
    let carol = world.online("carol/phone", 0);
    world.befriend(&alice, &bob);
    for id in ["1", "2", "3"] {
        let got = publish(
            &mut world,
            &alice,
            "urn:example:log",
            Some(id),
            &format!("<entry xmlns='urn:example:log'>{id}</entry>"),
            &[("pubsub#max_items", "10")],
        );
        assert!(is_result(&got, &alice), "{}", got.describe());
    }
    let ids = |got: &Deliveries, to: &FullJid| -> Vec<String> {
        items_of(&result_payload(got, to))
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    };
    let got = get_items(
        &mut world,
        &bob,
        "alice@localhost",
        "urn:example:log",
        "",
        "",
    );
    assert_eq!(ids(&got, &bob), ["1", "2", "3"]);
    let got = get_items(
        &mut world,
        &bob,
        "alice@localhost",
        "urn:example:log",
        " max_items='2'",
        "",
    );
    assert_eq!(ids(&got, &bob), ["2", "3"]);
    let got = get_items(
        &mut world,
        &bob,
        "alice@localhost",
        "urn:example:log",
        "",
        "<item id='3'/><item id='1'/><item id='9'/>",
    );
    assert_eq!(ids(&got, &bob), ["1", "3"]);
    // The owner, with no `to`.
    let got = world.send(&alice, "<iq type='get' id='i'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='urn:example:log'/></pubsub></iq>");
    assert_eq!(ids(&got, &alice), ["1", "2", "3"]);
    // presence: carol is no contact (XEP-0060 §6.5.9.3).
    let got = get_items(
        &mut world,
        &carol,
        "alice@localhost",
        "urn:example:log",
        "",
        "",
    );
    assert_eq!(
        pubsub_error(&got, &carol),
        (
            DefinedCondition::NotAuthorized,
            Some("presence-subscription-required".into())
        )
    );
    // A node that does not exist.
    let got = get_items(
        &mut world,
        &bob,
        "alice@localhost",
        "urn:example:none",
        "",
        "",
    );
    assert_eq!(
        pubsub_error(&got, &bob),
        (DefinedCondition::ItemNotFound, None)
    );
    let got = get_items(
        &mut world,
        &bob,
        "alice@localhost",
        "urn:example:log",
        " max_items='lots'",
        "",
    );
    assert_eq!(pubsub_error(&got, &bob).0, DefinedCondition::BadRequest);
}

#[test]
fn an_omemo_device_list_on_the_open_model_is_read_by_anyone() {
    let mut world = World::with_accounts(&["alice", "carol"]);
    let alice = world.online("alice/phone", 0);
    let carol = world.online("carol/phone", 0);
    let list = "<list xmlns='eu.siacs.conversations.axolotl'><device id='12345'/></list>";
    let got = publish(
        &mut world,
        &alice,
        DEVICELIST,
        Some("current"),
        list,
        &[("pubsub#access_model", "open")],
    );
    assert!(is_result(&got, &alice), "{}", got.describe());
    let got = get_items(&mut world, &carol, "alice@localhost", DEVICELIST, "", "");
    let payload = result_payload(&got, &carol);
    let item = payload
        .get_child("items", ns::PUBSUB)
        .unwrap()
        .children()
        .next()
        .unwrap();
    assert_eq!(item.attr("id"), Some("current"));
    let device = item.children().next().unwrap().children().next().unwrap();
    assert_eq!(device.attr("id"), Some("12345"));
}

#[test]
fn bookmarks_on_a_whitelist_node_keep_every_item_and_only_the_owner_sees_them() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let (alice, _) = online_with_caps(&mut world, "alice/phone", &[BOOKMARKS]);
    let (laptop, _) = online_with_caps(&mut world, "alice/laptop", &[BOOKMARKS]);
    let (bob, _) = online_with_caps(&mut world, "bob/phone", &[BOOKMARKS]);
    world.befriend(&alice, &bob);
    // What Gajim's library sends (XEP-0402 §3.3).
    let options = [
        ("pubsub#notify_delete", "true"),
        ("pubsub#notify_retract", "true"),
        ("pubsub#persist_items", "true"),
        ("pubsub#max_items", "max"),
        ("pubsub#access_model", "whitelist"),
        ("pubsub#send_last_published_item", "never"),
    ];
    for room in ["lobby@conference.localhost", "ops@conference.localhost"] {
        let got = publish(&mut world, &alice, BOOKMARKS, Some(room), "<conference xmlns='urn:xmpp:bookmarks:1' autojoin='true'><nick>alice</nick></conference>", &options);
        assert!(
            got.to(&alice)
                .iter()
                .any(|s| matches!(s, Stanza::Iq(Iq::Result { .. }))),
            "{}",
            got.describe()
        );
        // The other resource hears of it; bob does not.
        assert_eq!(events(&got, &laptop).len(), 1);
        assert!(got.to(&bob).is_empty());
    }
    let got = get_items(&mut world, &laptop, "alice@localhost", BOOKMARKS, "", "");
    let rooms: Vec<String> = items_of(&result_payload(&got, &laptop))
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        rooms,
        ["lobby@conference.localhost", "ops@conference.localhost"]
    );
    let got = get_items(&mut world, &bob, "alice@localhost", BOOKMARKS, "", "");
    assert_eq!(
        pubsub_error(&got, &bob),
        (DefinedCondition::NotAllowed, Some("closed-node".into()))
    );
    // send_last_published_item=never: a new resource is not sent the last bookmark.
    let (tablet, got) = online_with_caps(&mut world, "alice/tablet", &[BOOKMARKS]);
    assert!(events(&got, &tablet).is_empty());
    // Retracting a bookmark tells the owner's resources.
    let got = world.send(&alice, "<iq type='set' id='r'><pubsub xmlns='http://jabber.org/protocol/pubsub'><retract node='urn:xmpp:bookmarks:1' notify='true'><item id='ops@conference.localhost'/></retract></pubsub></iq>");
    let retracts: Vec<(String, String)> = events(&got, &laptop)
        .into_iter()
        .map(|e| (e.2, e.3))
        .collect();
    assert_eq!(
        retracts,
        [(
            "retract".to_string(),
            "ops@conference.localhost".to_string()
        )]
    );
    assert!(got.to(&bob).is_empty());
}

#[test]
fn publish_options_are_preconditions_on_an_existing_node() {
    let mut world = World::with_accounts(&["alice"]);
    let alice = world.online("alice/phone", 0);
    let got = publish(
        &mut world,
        &alice,
        BOOKMARKS,
        Some("a"),
        "<conference xmlns='urn:xmpp:bookmarks:1'/>",
        &[
            ("pubsub#access_model", "whitelist"),
            ("pubsub#max_items", "max"),
        ],
    );
    assert!(is_result(&got, &alice));
    // The same options: fine; booleans in either spelling.
    let got = publish(
        &mut world,
        &alice,
        BOOKMARKS,
        Some("b"),
        "<conference xmlns='urn:xmpp:bookmarks:1'/>",
        &[
            ("pubsub#access_model", "whitelist"),
            ("pubsub#persist_items", "1"),
        ],
    );
    assert!(is_result(&got, &alice), "{}", got.describe());
    // Different, unknown or unacceptable: precondition-not-met, nothing published (§7.1.5).
    for options in [
        [("pubsub#access_model", "open")],
        [("pubsub#max_items", "5")],
        [("pubsub#roster_groups_allowed", "friends")],
        [("pubsub#access_model", "authorize")],
    ] {
        let got = publish(
            &mut world,
            &alice,
            BOOKMARKS,
            Some("c"),
            "<conference xmlns='urn:xmpp:bookmarks:1'/>",
            &options,
        );
        assert_eq!(
            pubsub_error(&got, &alice),
            (
                DefinedCondition::Conflict,
                Some("precondition-not-met".into())
            ),
            "{options:?}"
        );
    }
    assert_eq!(
        world
            .hub
            .store()
            .pep_items("alice", BOOKMARKS, None)
            .unwrap()
            .len(),
        2
    );
    // An unknown field on a new node is not met either; a bad value is not acceptable.
    let got = publish(
        &mut world,
        &alice,
        "urn:example:x",
        None,
        "<x xmlns='urn:example:x'/>",
        &[("pubsub#itemreply", "owner")],
    );
    assert_eq!(
        pubsub_error(&got, &alice),
        (
            DefinedCondition::Conflict,
            Some("precondition-not-met".into())
        )
    );
    let got = publish(
        &mut world,
        &alice,
        "urn:example:x",
        None,
        "<x xmlns='urn:example:x'/>",
        &[("pubsub#max_items", "0")],
    );
    assert_eq!(
        pubsub_error(&got, &alice),
        (DefinedCondition::NotAcceptable, None)
    );
    assert_eq!(
        world
            .hub
            .store()
            .pep_node("alice", "urn:example:x")
            .unwrap(),
        None
    );
}

#[test]
fn the_owner_reads_and_changes_the_configuration_with_a_form() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    let bob = world.online("bob/phone", 0);
    publish(&mut world, &alice, NICK, Some("current"), &nick("A"), &[]);
    let get = "<iq type='get' id='c'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><configure node='http://jabber.org/protocol/nick'/></pubsub></iq>";
    let got = world.send(&alice, get);
    let form = result_payload(&got, &alice);
    let form = form
        .get_child("configure", ns::PUBSUB_OWNER)
        .unwrap()
        .get_child("x", "jabber:x:data")
        .unwrap();
    let value = |form: &Element, var: &str| -> String {
        form.children()
            .find(|f| f.attr("var") == Some(var))
            .and_then(|f| f.get_child("value", "jabber:x:data"))
            .map(|v| v.text())
            .unwrap_or_else(|| panic!("no {var}"))
    };
    assert_eq!(
        value(form, "FORM_TYPE"),
        "http://jabber.org/protocol/pubsub#node_config"
    );
    assert_eq!(value(form, "pubsub#access_model"), "presence");
    assert_eq!(value(form, "pubsub#max_items"), "1");
    assert_eq!(
        value(form, "pubsub#send_last_published_item"),
        "on_sub_and_presence"
    );
    // Set: open, 5 items; an unknown field is ignored.
    let got = world.send(&alice, "<iq type='set' id='s'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><configure node='http://jabber.org/protocol/nick'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#node_config</value></field><field var='pubsub#access_model'><value>open</value></field><field var='pubsub#max_items'><value>5</value></field><field var='pubsub#children'><value>x</value></field></x></configure></pubsub></iq>");
    assert!(is_result(&got, &alice), "{}", got.describe());
    let got = world.send(&alice, get);
    let payload = result_payload(&got, &alice);
    let form = payload
        .get_child("configure", ns::PUBSUB_OWNER)
        .unwrap()
        .get_child("x", "jabber:x:data")
        .unwrap();
    assert_eq!(value(form, "pubsub#access_model"), "open");
    assert_eq!(value(form, "pubsub#max_items"), "5");
    // A value it cannot take.
    let got = world.send(&alice, "<iq type='set' id='s'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><configure node='http://jabber.org/protocol/nick'><x xmlns='jabber:x:data' type='submit'><field var='pubsub#max_items'><value>100000</value></field></x></configure></pubsub></iq>");
    assert_eq!(
        pubsub_error(&got, &alice).0,
        DefinedCondition::NotAcceptable
    );
    // Not the owner: forbidden; no such node: item-not-found.
    let got = world.send(&bob, &get.replace("<iq ", "<iq to='alice@localhost' "));
    assert_eq!(pubsub_error(&got, &bob).0, DefinedCondition::Forbidden);
    let got = world.send(&alice, &get.replace("nick'", "none'"));
    assert_eq!(pubsub_error(&got, &alice).0, DefinedCondition::ItemNotFound);
}

#[test]
fn hostile_publishing_to_another_accounts_pep_is_forbidden() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    let bob = world.online("bob/phone", 0);
    world.befriend(&alice, &bob);
    publish(
        &mut world,
        &alice,
        NICK,
        Some("current"),
        &nick("Alice"),
        &[],
    );
    for payload in [
        "<publish node='http://jabber.org/protocol/nick'><item id='current'><nick xmlns='http://jabber.org/protocol/nick'>Mallory</nick></item></publish>",
        "<retract node='http://jabber.org/protocol/nick'><item id='current'/></retract>",
        "<create node='urn:example:evil'/>",
    ] {
        let got = world.send(&bob, &format!("<iq type='set' to='alice@localhost' id='x'><pubsub xmlns='http://jabber.org/protocol/pubsub'>{payload}</pubsub></iq>"));
        assert_eq!(pubsub_error(&got, &bob).0, DefinedCondition::Forbidden, "{payload}");
    }
    let got = world.send(&bob, "<iq type='set' to='alice@localhost' id='x'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><delete node='http://jabber.org/protocol/nick'/></pubsub></iq>");
    assert_eq!(pubsub_error(&got, &bob).0, DefinedCondition::Forbidden);
    let item = world
        .hub
        .store()
        .pep_last_item("alice", NICK)
        .unwrap()
        .unwrap();
    assert!(item.payload.contains("Alice"));
    // Pubsub at the server's domain is not PEP.
    let got = world.send(&bob, "<iq type='get' to='localhost' id='x'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='n'/></pubsub></iq>");
    assert_eq!(
        error_condition(got.only_to(&bob)),
        Some(DefinedCondition::ServiceUnavailable)
    );
}

#[test]
fn hostile_malformed_publications_are_refused_with_the_xeps_errors() {
    let mut world = World::with_accounts(&["alice"]);
    let alice = world.online("alice/phone", 0);
    let long = "n".repeat(2000);
    for (publish, expected) in [
        ("<publish><item><x xmlns='urn:x'/></item></publish>", (DefinedCondition::BadRequest, Some("nodeid-required"))),
        ("<publish node='n'/>", (DefinedCondition::BadRequest, Some("item-required"))),
        ("<publish node='n'><item/></publish>", (DefinedCondition::BadRequest, Some("payload-required"))),
        ("<publish node='n'><item><a xmlns='urn:x'/><b xmlns='urn:x'/></item></publish>", (DefinedCondition::BadRequest, Some("invalid-payload"))),
        ("<publish node='n'><item id='1'><a xmlns='urn:x'/></item><item id='2'><a xmlns='urn:x'/></item></publish>", (DefinedCondition::BadRequest, Some("item-required"))),
        (&*format!("<publish node='{long}'><item><a xmlns='urn:x'/></item></publish>"), (DefinedCondition::NotAcceptable, None)),
        (&*format!("<publish node='n'><item id='{long}'><a xmlns='urn:x'/></item></publish>"), (DefinedCondition::NotAcceptable, None)),
        ("", (DefinedCondition::BadRequest, None)),
        ("<subscribe node='n' jid='alice@localhost'/>", (DefinedCondition::FeatureNotImplemented, Some("unsupported"))),
    ] {
        let got = world.send(&alice, &format!("<iq type='set' id='p'><pubsub xmlns='http://jabber.org/protocol/pubsub'>{publish}</pubsub></iq>"));
        assert_eq!(
            pubsub_error(&got, &alice),
            (expected.0, expected.1.map(str::to_string)),
            "{publish}"
        );
    }
    assert!(world.hub.store().pep_nodes("alice").unwrap().is_empty());
}

#[test]
fn hostile_an_oversized_item_is_payload_too_big_and_the_account_quota_holds() {
    let mut world = World::with_accounts(&["alice"]);
    world.hub.start(&ServerLimits {
        pep: PepLimits {
            max_item_bytes: 1000,
            max_account_bytes: 2500,
            ..PepLimits::default()
        },
        ..ServerLimits::default()
    });
    let alice = world.online("alice/phone", 0);
    let big = format!(
        "<data xmlns='urn:xmpp:avatar:data'>{}</data>",
        "A".repeat(1000)
    );
    let got = publish(
        &mut world,
        &alice,
        "urn:xmpp:avatar:data",
        Some("h"),
        &big,
        &[],
    );
    assert_eq!(
        pubsub_error(&got, &alice),
        (
            DefinedCondition::NotAcceptable,
            Some("payload-too-big".into())
        )
    );
    assert_eq!(
        world
            .hub
            .store()
            .pep_node("alice", "urn:xmpp:avatar:data")
            .unwrap(),
        None
    );
    let fits = format!(
        "<data xmlns='urn:xmpp:avatar:data'>{}</data>",
        "A".repeat(900)
    );
    for node in ["n1", "n2"] {
        let got = publish(&mut world, &alice, node, Some("h"), &fits, &[]);
        assert!(is_result(&got, &alice), "{}", got.describe());
    }
    let got = publish(&mut world, &alice, "n3", Some("h"), &fits, &[]);
    assert_eq!(
        pubsub_error(&got, &alice).0,
        DefinedCondition::ResourceConstraint
    );
    assert_eq!(
        world
            .hub
            .store()
            .pep_items("alice", "n3", None)
            .unwrap()
            .len(),
        0
    );
    // Replacing an item in place counts its new bytes instead of its old ones.
    let got = publish(&mut world, &alice, "n1", Some("h"), &fits, &[]);
    assert!(is_result(&got, &alice), "{}", got.describe());
}

#[test]
fn hostile_a_node_flood_stops_at_the_cap() {
    let mut world = World::with_accounts(&["alice"]);
    world.hub.start(&ServerLimits {
        pep: PepLimits {
            max_nodes: 5,
            ..PepLimits::default()
        },
        ..ServerLimits::default()
    });
    let alice = world.online("alice/phone", 0);
    for n in 0..5 {
        let got = publish(
            &mut world,
            &alice,
            &format!("urn:flood:{n}"),
            None,
            "<x xmlns='urn:flood'/>",
            &[],
        );
        assert!(is_result(&got, &alice));
    }
    for n in 5..8 {
        let got = publish(
            &mut world,
            &alice,
            &format!("urn:flood:{n}"),
            None,
            "<x xmlns='urn:flood'/>",
            &[],
        );
        assert_eq!(
            pubsub_error(&got, &alice),
            (
                DefinedCondition::PolicyViolation,
                Some("max-nodes-exceeded".into())
            )
        );
        let got = world.send(&alice, &format!("<iq type='set' id='c'><pubsub xmlns='http://jabber.org/protocol/pubsub'><create node='urn:create:{n}'/></pubsub></iq>"));
        assert_eq!(
            pubsub_error(&got, &alice).0,
            DefinedCondition::PolicyViolation
        );
    }
    assert_eq!(world.hub.store().pep_node_count("alice").unwrap(), 5);
    // Existing nodes still take items; deleting one makes room.
    let got = publish(
        &mut world,
        &alice,
        "urn:flood:0",
        None,
        "<x xmlns='urn:flood'/>",
        &[],
    );
    assert!(is_result(&got, &alice));
    let got = world.send(&alice, "<iq type='set' id='d'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><delete node='urn:flood:0'/></pubsub></iq>");
    assert!(is_result(&got, &alice));
    let got = publish(
        &mut world,
        &alice,
        "urn:flood:new",
        None,
        "<x xmlns='urn:flood'/>",
        &[],
    );
    assert!(is_result(&got, &alice));
}

#[test]
fn a_max_items_node_keeps_at_most_the_cap() {
    let mut world = World::with_accounts(&["alice"]);
    world.hub.start(&ServerLimits {
        pep: PepLimits {
            max_items: 3,
            ..PepLimits::default()
        },
        ..ServerLimits::default()
    });
    let alice = world.online("alice/phone", 0);
    for n in 0..6 {
        let got = publish(
            &mut world,
            &alice,
            BOOKMARKS,
            Some(&n.to_string()),
            "<conference xmlns='urn:xmpp:bookmarks:1'/>",
            &[("pubsub#max_items", "max")],
        );
        assert!(is_result(&got, &alice));
    }
    let ids: Vec<String> = world
        .hub
        .store()
        .pep_items("alice", BOOKMARKS, None)
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(ids, ["3", "4", "5"]);
}

#[test]
fn retract_and_delete_notify_the_readers_that_want_the_node() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let (alice, _) = online_with_caps(&mut world, "alice/phone", &["urn:xmpp:avatar:metadata"]);
    let (bob, _) = online_with_caps(&mut world, "bob/phone", &["urn:xmpp:avatar:metadata"]);
    world.befriend(&alice, &bob);
    let metadata = "<metadata xmlns='urn:xmpp:avatar:metadata'><info bytes='12' id='abc' type='image/png'/></metadata>";
    publish(
        &mut world,
        &alice,
        "urn:xmpp:avatar:metadata",
        Some("abc"),
        metadata,
        &[],
    );
    // No notify attribute: pubsub#notify_retract (true by default) decides.
    let got = world.send(&alice, "<iq type='set' id='r'><pubsub xmlns='http://jabber.org/protocol/pubsub'><retract node='urn:xmpp:avatar:metadata'><item id='abc'/></retract></pubsub></iq>");
    assert!(got
        .to(&alice)
        .iter()
        .any(|s| matches!(s, Stanza::Iq(Iq::Result { .. }))));
    let seen: Vec<(String, String)> = events(&got, &bob).into_iter().map(|e| (e.2, e.3)).collect();
    assert_eq!(seen, [("retract".to_string(), "abc".to_string())]);
    // notify='false' wins; a missing item is item-not-found.
    publish(
        &mut world,
        &alice,
        "urn:xmpp:avatar:metadata",
        Some("abc"),
        metadata,
        &[],
    );
    let got = world.send(&alice, "<iq type='set' id='r'><pubsub xmlns='http://jabber.org/protocol/pubsub'><retract node='urn:xmpp:avatar:metadata' notify='false'><item id='abc'/></retract></pubsub></iq>");
    assert!(got.to(&bob).is_empty());
    let got = world.send(&alice, "<iq type='set' id='r'><pubsub xmlns='http://jabber.org/protocol/pubsub'><retract node='urn:xmpp:avatar:metadata'><item id='abc'/></retract></pubsub></iq>");
    assert_eq!(pubsub_error(&got, &alice).0, DefinedCondition::ItemNotFound);
    // Deleting the node.
    let got = world.send(&alice, "<iq type='set' id='d'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><delete node='urn:xmpp:avatar:metadata'/></pubsub></iq>");
    let seen: Vec<(String, String)> = events(&got, &bob).into_iter().map(|e| (e.1, e.2)).collect();
    assert_eq!(
        seen,
        [("urn:xmpp:avatar:metadata".to_string(), "delete".to_string())]
    );
    let got = get_items(
        &mut world,
        &bob,
        "alice@localhost",
        "urn:xmpp:avatar:metadata",
        "",
        "",
    );
    assert_eq!(pubsub_error(&got, &bob).0, DefinedCondition::ItemNotFound);
}

#[test]
fn an_avatar_is_published_as_data_then_metadata_and_read_back_by_a_contact() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    let (bob, _) = online_with_caps(&mut world, "bob/phone", &["urn:xmpp:avatar:metadata"]);
    world.befriend(&alice, &bob);
    let data = BASE64_STANDARD.encode([0x89, b'P', b'N', b'G', 1, 2, 3, 4]);
    let got = publish(
        &mut world,
        &alice,
        "urn:xmpp:avatar:data",
        Some("sha1hash"),
        &format!("<data xmlns='urn:xmpp:avatar:data'>{data}</data>"),
        &[],
    );
    assert!(is_result(&got, &alice));
    // bob wants metadata only: the data is not pushed to him (XEP-0084 §4.1).
    assert!(got.to(&bob).is_empty());
    let got = publish(&mut world, &alice, "urn:xmpp:avatar:metadata", Some("sha1hash"), "<metadata xmlns='urn:xmpp:avatar:metadata'><info bytes='8' id='sha1hash' type='image/png'/></metadata>", &[]);
    assert_eq!(events(&got, &bob).len(), 1);
    let got = get_items(
        &mut world,
        &bob,
        "alice@localhost",
        "urn:xmpp:avatar:data",
        "",
        "<item id='sha1hash'/>",
    );
    assert_eq!(
        items_of(&result_payload(&got, &bob)),
        [("sha1hash".to_string(), data)]
    );
}

#[test]
fn an_accounts_disco_says_pep_and_lists_the_nodes_the_asker_may_read() {
    let mut world = World::with_accounts(&["alice", "bob", "carol"]);
    let alice = world.online("alice/phone", 0);
    let bob = world.online("bob/phone", 0);
    let carol = world.online("carol/phone", 0);
    world.befriend(&alice, &bob);
    publish(&mut world, &alice, NICK, Some("current"), &nick("A"), &[]);
    publish(
        &mut world,
        &alice,
        DEVICELIST,
        Some("current"),
        "<list xmlns='eu.siacs.conversations.axolotl'/>",
        &[("pubsub#access_model", "open")],
    );
    publish(
        &mut world,
        &alice,
        BOOKMARKS,
        Some("r"),
        "<conference xmlns='urn:xmpp:bookmarks:1'/>",
        &[("pubsub#access_model", "whitelist")],
    );
    let got = world.send(&bob, "<iq type='get' to='alice@localhost' id='i'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
    let info = DiscoInfoResult::try_from(result_payload(&got, &bob)).unwrap();
    assert!(info
        .identities
        .iter()
        .any(|i| i.category == "pubsub" && i.type_ == "pep"));
    assert!(info.identities.iter().any(|i| i.category == "account"));
    for feature in [
        "http://jabber.org/protocol/pubsub#publish",
        "http://jabber.org/protocol/pubsub#publish-options",
        "http://jabber.org/protocol/pubsub#access-whitelist",
    ] {
        assert!(info.features.contains(feature), "{feature}");
    }
    let nodes = |world: &mut World, who: &FullJid| -> Vec<String> {
        let got = world.send(who, "<iq type='get' to='alice@localhost' id='d'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>");
        let items = DiscoItemsResult::try_from(result_payload(&got, who)).unwrap();
        items.items.into_iter().filter_map(|i| i.node).collect()
    };
    assert_eq!(nodes(&mut world, &alice), [DEVICELIST, NICK, BOOKMARKS]);
    assert_eq!(nodes(&mut world, &bob), [DEVICELIST, NICK]);
    assert_eq!(nodes(&mut world, &carol), [DEVICELIST]);
    // A node's disco#info: pubsub/leaf for who may read it, item-not-found for who may not.
    let leaf = format!("<iq type='get' to='alice@localhost' id='n'><query xmlns='http://jabber.org/protocol/disco#info' node='{NICK}'/></iq>");
    let got = world.send(&bob, &leaf);
    let info = DiscoInfoResult::try_from(result_payload(&got, &bob)).unwrap();
    assert_eq!(info.identities[0].type_, "leaf");
    let got = world.send(&carol, &leaf);
    assert_eq!(
        error_condition(got.only_to(&carol)),
        Some(DefinedCondition::ItemNotFound)
    );
    // A node's items are its item ids.
    let got = world.send(&carol, &format!("<iq type='get' to='alice@localhost' id='n'><query xmlns='http://jabber.org/protocol/disco#items' node='{DEVICELIST}'/></iq>"));
    let items = DiscoItemsResult::try_from(result_payload(&got, &carol)).unwrap();
    assert_eq!(
        items
            .items
            .iter()
            .filter_map(|i| i.name.as_deref())
            .collect::<Vec<_>>(),
        ["current"]
    );
}

#[test]
fn the_internal_publication_notifies_like_the_owners_and_the_last_item_is_readable() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    let (bob, _) = online_with_caps(&mut world, "bob/phone", &["urn:xmpp:avatar:metadata"]);
    world.befriend(&alice, &bob);
    let mut out = Vec::new();
    let payload: Element = "<metadata xmlns='urn:xmpp:avatar:metadata'><info bytes='8' id='h' type='image/png'/></metadata>".parse().unwrap();
    world
        .hub
        .pep_publish_internal(
            "alice",
            "urn:xmpp:avatar:metadata",
            "h",
            payload,
            &super::PublishOptions::from_pairs(&[("pubsub#access_model", "presence")]),
            &mut out,
        )
        .unwrap();
    let got = Deliveries(out);
    assert_eq!(events(&got, &bob).len(), 1);
    let last = world
        .hub
        .store()
        .pep_last_item("alice", "urn:xmpp:avatar:metadata")
        .unwrap()
        .unwrap();
    assert_eq!(last.id, "h");
    // Unknown owners are refused.
    let mut out = Vec::new();
    let error = world
        .hub
        .pep_publish_internal(
            "nobody",
            NICK,
            "x",
            Element::builder("nick", NICK).build(),
            &super::PublishOptions::none(),
            &mut out,
        )
        .unwrap_err();
    assert_eq!(error.condition, DefinedCondition::ItemNotFound);
}

/// The error helper's type is the one the hub sends.
#[test]
fn pubsub_errors_carry_their_specific_condition_in_the_pubsub_errors_namespace() {
    let mut world = World::with_accounts(&["alice", "carol"]);
    let alice = world.online("alice/phone", 0);
    let carol = world.online("carol/phone", 0);
    publish(&mut world, &alice, NICK, Some("current"), &nick("A"), &[]);
    let got = get_items(&mut world, &carol, "alice@localhost", NICK, "", "");
    let Iq::Error { error, .. } = iq(got.only_to(&carol)) else {
        panic!("not an error")
    };
    let xml = String::from(&Element::from(StanzaError::clone(error)));
    assert!(
        xml.contains("type=\"auth\"") || xml.contains("type='auth'"),
        "{xml}"
    );
    assert!(xml.contains("presence-subscription-required"), "{xml}");
}

/// What nbxmpp (Gajim) does on `precondition-not-met`: it fetches the form, sets the fields of
/// its options that the form has, submits it and publishes again. Every field publish-options
/// takes must be in the form for that to work.
#[test]
fn a_client_meeting_precondition_not_met_reconfigures_through_the_form_and_publishes() {
    let mut world = World::with_accounts(&["alice"]);
    let alice = world.online("alice/phone", 0);
    let conference = "<conference xmlns='urn:xmpp:bookmarks:1'/>";
    // An older client made the node with PEP's defaults.
    let got = publish(&mut world, &alice, BOOKMARKS, Some("a"), conference, &[]);
    assert!(is_result(&got, &alice));
    let options = [
        ("pubsub#notify_delete", "true"),
        ("pubsub#notify_retract", "true"),
        ("pubsub#persist_items", "true"),
        ("pubsub#max_items", "max"),
        ("pubsub#access_model", "whitelist"),
        ("pubsub#send_last_published_item", "never"),
        ("pubsub#deliver_payloads", "true"),
        ("pubsub#deliver_notifications", "true"),
        ("pubsub#title", "Bookmarks"),
    ];
    let got = publish(
        &mut world,
        &alice,
        BOOKMARKS,
        Some("b"),
        conference,
        &options,
    );
    assert_eq!(
        pubsub_error(&got, &alice),
        (
            DefinedCondition::Conflict,
            Some("precondition-not-met".into())
        )
    );
    let got = world.send(&alice, "<iq type='get' id='c'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><configure node='urn:xmpp:bookmarks:1'/></pubsub></iq>");
    let payload = result_payload(&got, &alice);
    let form = payload
        .get_child("configure", ns::PUBSUB_OWNER)
        .and_then(|c| c.get_child("x", "jabber:x:data"))
        .unwrap();
    let vars: Vec<&str> = form.children().filter_map(|f| f.attr("var")).collect();
    for (var, _) in options {
        assert!(vars.contains(&var), "{var} is not in the form");
    }
    // The form's fields with their values, the options' values in place of theirs.
    let fields: String = form
        .children()
        .filter_map(|field| {
            let var = field.attr("var")?;
            let values: Vec<String> = match options.iter().find(|(v, _)| *v == var) {
                Some((_, value)) => vec![value.to_string()],
                None => field
                    .children()
                    .filter(|c| c.is("value", "jabber:x:data"))
                    .map(|v| v.text())
                    .collect(),
            };
            let values: String = values
                .iter()
                .map(|v| format!("<value>{v}</value>"))
                .collect();
            Some(format!("<field var='{var}'>{values}</field>"))
        })
        .collect();
    let submit = format!(
        "<iq type='set' id='s'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><configure node='urn:xmpp:bookmarks:1'><x xmlns='jabber:x:data' type='submit'>{fields}</x></configure></pubsub></iq>"
    );
    let got = world.send(&alice, &submit);
    assert!(is_result(&got, &alice), "{}", got.describe());
    let got = publish(
        &mut world,
        &alice,
        BOOKMARKS,
        Some("b"),
        conference,
        &options,
    );
    assert!(is_result(&got, &alice), "{}", got.describe());
    // max_items is max now: both bookmarks are kept.
    assert_eq!(
        world
            .hub
            .store()
            .pep_items("alice", BOOKMARKS, None)
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn a_blocked_contact_gets_no_notifications_and_no_last_items_either_way() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let (alice, _) = online_with_caps(&mut world, "alice/phone", &[NICK]);
    let (bob, _) = online_with_caps(&mut world, "bob/phone", &[NICK]);
    world.befriend(&alice, &bob);
    // XEP-0191 §3.5: bob is blocked by alice, so nothing of hers reaches him.
    world.send(
        &alice,
        "<iq type='set' id='b'><block xmlns='urn:xmpp:blocking'><item jid='bob@localhost'/></block></iq>",
    );
    let got = publish(
        &mut world,
        &alice,
        NICK,
        Some("current"),
        &nick("Alice"),
        &[],
    );
    assert!(events(&got, &bob).is_empty(), "{}", got.describe());
    let (laptop, got) = online_with_caps(&mut world, "bob/laptop", &[NICK]);
    assert!(events(&got, &laptop).is_empty(), "{}", got.describe());
    // §3.6: bob blocking alice cuts it too; unblocking brings the notifications back.
    world.send(
        &alice,
        "<iq type='set' id='u'><unblock xmlns='urn:xmpp:blocking'/></iq>",
    );
    let got = publish(&mut world, &alice, NICK, Some("current"), &nick("Al"), &[]);
    assert_eq!(events(&got, &bob).len(), 1, "{}", got.describe());
    world.send(
        &bob,
        "<iq type='set' id='b'><block xmlns='urn:xmpp:blocking'><item jid='alice@localhost'/></block></iq>",
    );
    let got = publish(&mut world, &alice, NICK, Some("current"), &nick("A"), &[]);
    assert!(events(&got, &bob).is_empty(), "{}", got.describe());
}

#[test]
fn hostile_a_node_filled_to_the_quota_is_answered_with_the_newest_items_that_fit() {
    let mut world = World::with_accounts(&["alice", "carol"]);
    let alice = world.online("alice/phone", 0);
    let carol = world.online("carol/desk", 0);
    let big = |n: usize| {
        format!(
            "<data xmlns='urn:xmpp:avatar:data'>{}</data>",
            n.to_string().repeat(100_000)
        )
    };
    for n in 1..=5 {
        let id = format!("i{n}");
        let options: &[(&str, &str)] =
            &[("pubsub#access_model", "open"), ("pubsub#max_items", "10")];
        let got = publish(
            &mut world,
            &alice,
            "urn:example:big",
            Some(&id),
            &big(n),
            options,
        );
        assert!(is_result(&got, &alice), "{}", got.describe());
    }
    // 5 × 100 kB: the answer carries the newest two (XEP-0060 §6.5.4), and says there are five.
    let got = get_items(
        &mut world,
        &carol,
        "alice@localhost",
        "urn:example:big",
        "",
        "",
    );
    let payload = result_payload(&got, &carol);
    let ids: Vec<String> = items_of(&payload).into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, ["i4", "i5"]);
    let set = payload.get_child("set", ns::RSM).expect("a result set");
    let text = |name: &str| set.get_child(name, ns::RSM).map(Element::text);
    assert_eq!(
        (text("first"), text("last"), text("count")),
        (Some("i4".into()), Some("i5".into()), Some("5".into()))
    );
    // What fits is answered whole, without a result set.
    let got = get_items(
        &mut world,
        &carol,
        "alice@localhost",
        "urn:example:big",
        " max_items='1'",
        "",
    );
    let payload = result_payload(&got, &carol);
    assert_eq!(items_of(&payload).len(), 1);
    assert!(payload.get_child("set", ns::RSM).is_none());
}
