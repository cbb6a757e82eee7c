//! Service discovery (XEP-0030) as deliveries, and the features the services advertise.

use std::collections::BTreeSet;

use base64::prelude::{Engine, BASE64_STANDARD};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::caps::{compute_disco, hash_caps};
use tokio_xmpp::parsers::disco::{DiscoInfoResult, DiscoItemsResult, Identity};
use tokio_xmpp::parsers::hashes::Algo;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::stanza_error::DefinedCondition;

use super::*;
use crate::server::hub::service::stream_features;
use crate::server::hub::testing::*;

fn info_from(got: &Deliveries, to: &tokio_xmpp::jid::FullJid) -> DiscoInfoResult {
    match iq(got.only_to(to)) {
        Iq::Result {
            payload: Some(payload),
            ..
        } => DiscoInfoResult::try_from(payload.clone()).unwrap(),
        other => panic!("not a disco#info result: {other:?}"),
    }
}

#[test]
fn server_info_lists_its_features() {
    let world = World::with_accounts(&[]);
    let features = || world.hub.features(Entity::Server);
    let query = Element::builder("query", ns::DISCO_INFO).build();
    let info = DiscoInfoResult::try_from(server_info(&query, features()).unwrap()).unwrap();
    assert!(info.features.contains(ns::PING));
    assert!(info.features.contains(ns::CARBONS));
    assert_eq!(info.identities[0].category, "server");
    let with_node = Element::builder("query", ns::DISCO_INFO)
        .attr(tokio_xmpp::minidom::rxml::xml_ncname!("node").into(), "x")
        .build();
    assert_eq!(
        server_info(&with_node, features()),
        Err(DefinedCondition::ItemNotFound)
    );
}

/// The features the server advertised before they were collected from the services, and the
/// caps feature (XEP-0115 §7): what clients see must not change by accident.
#[test]
fn the_advertised_features_are_those_of_the_plugged_in_services() {
    let world = World::with_accounts(&[]);
    let server: BTreeSet<&str> = world.hub.features(Entity::Server).collect();
    let expected: BTreeSet<&str> = [
        ns::DISCO_INFO,
        ns::DISCO_ITEMS,
        ns::CAPS,
        ns::PING,
        ns::VERSION,
        ns::CARBONS,
        ns::PRIVATE,
        ns::ROSTER,
        "msgoffline",
    ]
    .into();
    assert_eq!(server, expected);
    let account: BTreeSet<&str> = world.hub.features(Entity::Account).collect();
    assert_eq!(
        account,
        [
            ns::DISCO_INFO,
            ns::DISCO_ITEMS,
            ns::PING,
            ns::MAM,
            "urn:xmpp:mam:2#extended",
            "urn:xmpp:sid:0"
        ]
        .into()
    );
}

#[test]
fn the_server_and_accounts_answer_disco_info_from_their_own_jid() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    let ask = |to: &str| {
        format!(
            "<iq to='{to}' type='get' id='i'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
        )
    };
    let got = world.send(&alice, &ask("localhost"));
    assert_eq!(
        from_of(got.only_to(&alice)),
        Some(&bare("localhost").into())
    );
    let info = info_from(&got, &alice);
    assert_eq!(info.identities[0].category, "server");
    assert!(info.features.contains("msgoffline"));
    for account in ["alice@localhost", "bob@localhost"] {
        let got = world.send(&alice, &ask(account));
        assert_eq!(from_of(got.only_to(&alice)), Some(&bare(account).into()));
        let info = info_from(&got, &alice);
        assert_eq!(info.identities[0].category, "account");
        assert_eq!(info.identities[0].type_, "registered");
        assert!(!info.features.contains(ns::ROSTER), "{account}");
    }
    // A node of the server is not known.
    let got = world.send(
        &alice,
        "<iq to='localhost' type='get' id='n'><query xmlns='http://jabber.org/protocol/disco#info' node='x'/></iq>",
    );
    assert_eq!(
        error_condition(got.only_to(&alice)),
        Some(DefinedCondition::ItemNotFound)
    );
}

#[test]
fn the_server_and_the_own_account_have_no_items_and_echo_the_node() {
    let mut world = World::with_accounts(&["alice"]);
    let alice = world.online("alice/phone", 0);
    for to in ["localhost", "alice@localhost"] {
        let got = world.send(
            &alice,
            &format!("<iq to='{to}' type='get' id='i'><query xmlns='http://jabber.org/protocol/disco#items' node='n'/></iq>"),
        );
        let Iq::Result {
            payload: Some(payload),
            ..
        } = iq(got.only_to(&alice))
        else {
            panic!("not a result: {}", got.describe());
        };
        let items = DiscoItemsResult::try_from(payload.clone()).unwrap();
        assert!(items.items.is_empty());
        assert_eq!(items.node.as_deref(), Some("n"));
    }
}

/// A disco#info result parsed from XML written in a test.
fn parse_info(xml: &str) -> DiscoInfoResult {
    DiscoInfoResult::try_from(xml.parse::<Element>().unwrap()).unwrap()
}

/// XEP-0115 §5.2 and §5.3: the examples' verification strings, byte for byte.
#[test]
fn the_caps_ver_follows_the_examples_of_xep_0115() {
    let simple = parse_info(
        "<query xmlns='http://jabber.org/protocol/disco#info'>\
           <identity category='client' name='Exodus 0.9.1' type='pc'/>\
           <feature var='http://jabber.org/protocol/caps'/>\
           <feature var='http://jabber.org/protocol/disco#info'/>\
           <feature var='http://jabber.org/protocol/disco#items'/>\
           <feature var='http://jabber.org/protocol/muc'/>\
         </query>",
    );
    let complex = parse_info(
        "<query xmlns='http://jabber.org/protocol/disco#info'>\
           <identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>\
           <identity xml:lang='el' category='client' name='Ψ 0.11' type='pc'/>\
           <feature var='http://jabber.org/protocol/caps'/>\
           <feature var='http://jabber.org/protocol/disco#info'/>\
           <feature var='http://jabber.org/protocol/disco#items'/>\
           <feature var='http://jabber.org/protocol/muc'/>\
           <x xmlns='jabber:x:data' type='result'>\
             <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>\
             <field var='ip_version'><value>ipv4</value><value>ipv6</value></field>\
             <field var='os'><value>Mac</value></field>\
             <field var='os_version'><value>10.5.1</value></field>\
             <field var='software'><value>Psi</value></field>\
             <field var='software_version'><value>0.11</value></field>\
           </x>\
         </query>",
    );
    for (info, ver) in [
        (simple, "QgayPKawpkPSDYmwT/WM94uAlu0="),
        (complex, "q07IKJEyjvHSyhy//CH0CxmKi8w="),
    ] {
        let caps = Element::from(caps(&info).unwrap());
        assert_eq!(caps.attr("ver"), Some(ver));
        assert_eq!(caps.attr("hash"), Some("sha-1"));
        assert_eq!(caps.attr("node"), Some(CAPS_NODE));
        assert_eq!(caps_node(&info), Some(format!("{CAPS_NODE}#{ver}")));
    }
}

/// The `<c/>` of the stream features after authentication (XEP-0115 §6.3).
fn caps_feature() -> Element {
    let features = stream_features(crate::server::hub::registry::SERVICES);
    let mut caps = features.into_iter().filter(|f| f.is("c", ns::CAPS));
    let found = caps.next().expect("a caps stream feature");
    assert!(caps.next().is_none(), "one caps feature");
    found
}

/// XEP-0115 §5.4: what a client does with the stream feature, against what disco#info says.
#[test]
fn the_caps_in_the_stream_features_are_the_hash_of_the_servers_disco_info() {
    let caps = caps_feature();
    assert_eq!(caps.attr("hash"), Some("sha-1"));
    assert_eq!(caps.attr("node"), Some(CAPS_NODE));
    let ver = caps.attr("ver").expect("a ver").to_string();

    let mut world = World::with_accounts(&["alice"]);
    let alice = world.online("alice/phone", 0);
    let got = world.send(
        &alice,
        "<iq to='localhost' type='get' id='i'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    );
    let info = info_from(&got, &alice);
    let hash = hash_caps(&compute_disco(&info), Algo::Sha_1).unwrap();
    assert_eq!(BASE64_STANDARD.encode(&hash.hash), ver);
    // The hash input: the server's identity first, named after the software.
    assert!(compute_disco(&info).starts_with(b"server/im/en/mqtt2xmpp<"));

    // The caps node is answered as the server itself, with the node echoed (§6.2).
    let node = format!("{CAPS_NODE}#{ver}");
    let got = world.send(
        &alice,
        &format!("<iq to='localhost' type='get' id='c'><query xmlns='http://jabber.org/protocol/disco#info' node='{node}'/></iq>"),
    );
    let by_node = info_from(&got, &alice);
    assert_eq!(by_node.node.as_deref(), Some(node.as_str()));
    assert_eq!(by_node.identities, info.identities);
    assert_eq!(by_node.features, info.features);
    // Another ver under the same node is not this server's.
    let got = world.send(
        &alice,
        &format!("<iq to='localhost' type='get' id='c'><query xmlns='http://jabber.org/protocol/disco#info' node='{CAPS_NODE}#QgayPKawpkPSDYmwT/WM94uAlu0='/></iq>"),
    );
    assert_eq!(
        error_condition(got.only_to(&alice)),
        Some(DefinedCondition::ItemNotFound)
    );
}

/// The same services give the same ver on every start, and on every domain: clients cache it.
#[test]
fn the_caps_ver_depends_only_on_the_services() {
    let ask = "<iq to='DOMAIN' type='get' id='i'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>";
    let mut answers = Vec::new();
    for domain in ["localhost", "example.org"] {
        let store = crate::server::store::Store::open_in_memory().unwrap();
        let mut hub =
            crate::server::hub::Hub::new(domain, store, crate::server::hub::registry::SERVICES)
                .unwrap();
        let keys = crate::server::store::ScramKeys {
            salt: vec![1; 16],
            iterations: 4096,
            stored_key: vec![2; 20],
            server_key: vec![3; 20],
        };
        hub.store().create_account("alice", &keys, &keys).unwrap();
        let (alice, _) = hub.bind("alice", Some("phone")).unwrap();
        let got = Deliveries(hub.inbound(&alice, stanza(&ask.replace("DOMAIN", domain))));
        let info = info_from(&got, &alice);
        answers.push(Element::from(caps(&info).unwrap()));
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0], caps_feature());
}

#[test]
fn an_accounts_disco_info_is_the_registered_account_and_the_features_the_server_gives_it() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    for to in ["alice@localhost", "bob@localhost"] {
        let got = world.send(
            &alice,
            &format!("<iq to='{to}' type='get' id='i'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"),
        );
        let info = info_from(&got, &alice);
        assert_eq!(
            info.identities,
            [Identity::new_anonymous::<_, _, String, String>(
                "account",
                "registered"
            )]
        );
        let features: BTreeSet<&str> = info.features.iter().map(String::as_str).collect();
        // The archive (XEP-0313) is the account's own: listed for every account, answered
        // only to the account itself (`mam/tests.rs`).
        assert_eq!(
            features,
            [
                ns::DISCO_INFO,
                ns::DISCO_ITEMS,
                ns::PING,
                ns::MAM,
                "urn:xmpp:mam:2#extended",
                "urn:xmpp:sid:0"
            ]
            .into(),
            "{to}"
        );
        // What is listed is answered: items (none), ping.
        for (payload, id) in [
            (
                "<query xmlns='http://jabber.org/protocol/disco#items'/>",
                "d",
            ),
            ("<ping xmlns='urn:xmpp:ping'/>", "p"),
        ] {
            let got = world.send(
                &alice,
                &format!("<iq to='{to}' type='get' id='{id}'>{payload}</iq>"),
            );
            assert!(
                matches!(iq(got.only_to(&alice)), Iq::Result { id: got_id, .. } if got_id == id),
                "{to} {payload}: {}",
                got.describe()
            );
        }
        // An account has no nodes.
        let got = world.send(
            &alice,
            &format!("<iq to='{to}' type='get' id='n'><query xmlns='http://jabber.org/protocol/disco#info' node='x'/></iq>"),
        );
        assert_eq!(
            error_condition(got.only_to(&alice)),
            Some(DefinedCondition::ItemNotFound),
            "{to}"
        );
    }
}

/// Every feature the server lists is implemented: each has a probe here that uses it, and the
/// list of probes is the list of features (a feature added without a probe fails this test).
#[test]
fn every_feature_the_server_lists_answers() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    let answered = |world: &mut World, xml: &str| {
        let got = world.send(&alice, xml);
        matches!(iq(got.only_to(&alice)), Iq::Result { .. })
    };
    type Probe<'a> = Box<dyn Fn(&mut World) -> bool + 'a>;
    let probes: Vec<(&str, Probe)> = vec![
        (
            ns::DISCO_INFO,
            Box::new(|w: &mut World| {
                answered(w, "<iq to='localhost' type='get' id='x'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
            }),
        ),
        (
            ns::DISCO_ITEMS,
            Box::new(|w: &mut World| {
                answered(w, "<iq to='localhost' type='get' id='x'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>")
            }),
        ),
        (
            ns::CAPS,
            Box::new(|_: &mut World| caps_feature().attr("ver").is_some()),
        ),
        (
            ns::PING,
            Box::new(|w: &mut World| {
                answered(
                    w,
                    "<iq to='localhost' type='get' id='x'><ping xmlns='urn:xmpp:ping'/></iq>",
                )
            }),
        ),
        (
            ns::VERSION,
            Box::new(|w: &mut World| {
                answered(
                    w,
                    "<iq to='localhost' type='get' id='x'><query xmlns='jabber:iq:version'/></iq>",
                )
            }),
        ),
        (
            ns::CARBONS,
            Box::new(|w: &mut World| {
                answered(
                    w,
                    "<iq type='set' id='x'><enable xmlns='urn:xmpp:carbons:2'/></iq>",
                )
            }),
        ),
        (
            ns::PRIVATE,
            Box::new(|w: &mut World| {
                answered(w, "<iq type='get' id='x'><query xmlns='jabber:iq:private'><prefs xmlns='urn:example'/></query></iq>")
            }),
        ),
        (
            ns::ROSTER,
            Box::new(|w: &mut World| {
                answered(
                    w,
                    "<iq type='get' id='x'><query xmlns='jabber:iq:roster'/></iq>",
                )
            }),
        ),
        (
            "msgoffline",
            Box::new(|w: &mut World| {
                w.send(
                    &alice,
                    "<message to='bob@localhost' type='chat'><body>later</body></message>",
                );
                w.hub.store().offline_messages("bob").unwrap().len() == 1
            }),
        ),
    ];
    let listed: BTreeSet<&str> = world.hub.features(Entity::Server).collect();
    let probed: BTreeSet<&str> = probes.iter().map(|(feature, _)| *feature).collect();
    assert_eq!(
        listed, probed,
        "a feature without a probe, or a probe without a feature"
    );
    for (feature, probe) in &probes {
        assert!(probe(&mut world), "{feature} is listed but does not work");
    }
}
