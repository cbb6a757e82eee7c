//! Service discovery (XEP-0030) as deliveries, and the features the services advertise.

use std::collections::BTreeSet;

use base64::prelude::{Engine, BASE64_STANDARD};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::caps::hash_caps;
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
    let info = DiscoInfoResult::try_from(server_info(&query, features(), &[]).unwrap()).unwrap();
    assert!(info.features.contains(ns::PING));
    assert!(info.features.contains(ns::CARBONS));
    assert_eq!(info.identities[0].category, "server");
    let with_node = Element::builder("query", ns::DISCO_INFO)
        .attr(tokio_xmpp::minidom::rxml::xml_ncname!("node").into(), "x")
        .build();
    assert_eq!(
        server_info(&with_node, features(), &[]),
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
        ns::VCARD,
        ns::BLOCKING,
        crate::server::hub::commands::NS,
    ]
    .into();
    assert_eq!(server, expected);
    let account: BTreeSet<&str> = world.hub.features(Entity::Account).collect();
    let mut expected: BTreeSet<&str> = [ns::DISCO_INFO, ns::DISCO_ITEMS, ns::PING].into();
    expected.extend(PEP_FEATURES);
    expected.insert("urn:xmpp:pep-vcard-conversion:0");
    // The archive (XEP-0313) is the account's own: listed for every account, answered
    // only to the account itself (`mam/tests.rs`).
    expected.extend([ns::MAM, "urn:xmpp:mam:2#extended", "urn:xmpp:sid:0"]);
    assert_eq!(account, expected);
}

/// What PEP (XEP-0163 §6.1) adds to every account's disco#info.
const PEP_FEATURES: [&str; 19] = [
    ns::PUBSUB,
    "http://jabber.org/protocol/pubsub#access-open",
    "http://jabber.org/protocol/pubsub#access-presence",
    "http://jabber.org/protocol/pubsub#access-whitelist",
    "http://jabber.org/protocol/pubsub#auto-create",
    "http://jabber.org/protocol/pubsub#auto-subscribe",
    "http://jabber.org/protocol/pubsub#config-node",
    "http://jabber.org/protocol/pubsub#create-nodes",
    "http://jabber.org/protocol/pubsub#delete-nodes",
    "http://jabber.org/protocol/pubsub#filtered-notifications",
    "http://jabber.org/protocol/pubsub#item-ids",
    "http://jabber.org/protocol/pubsub#last-published",
    "http://jabber.org/protocol/pubsub#persistent-items",
    "http://jabber.org/protocol/pubsub#presence-notifications",
    "http://jabber.org/protocol/pubsub#publish",
    "http://jabber.org/protocol/pubsub#publish-options",
    "http://jabber.org/protocol/pubsub#retract-items",
    "http://jabber.org/protocol/pubsub#retrieve-default",
    "http://jabber.org/protocol/pubsub#retrieve-items",
];

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
    let hash = hash_caps(
        &verification_string(&Element::from(info.clone())).unwrap(),
        Algo::Sha_1,
    )
    .unwrap();
    assert_eq!(BASE64_STANDARD.encode(&hash.hash), ver);
    // The hash input: the server's identity first, named after the software.
    assert!(verification_string(&Element::from(info.clone()))
        .unwrap()
        .starts_with(b"server/im/en/mqtt2xmpp<"));

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
            [
                Identity::new_anonymous::<_, _, String, String>("account", "registered"),
                Identity::new_anonymous::<_, _, String, String>("pubsub", "pep"),
            ]
        );
        let features: BTreeSet<&str> = info.features.iter().map(String::as_str).collect();
        let mut expected: BTreeSet<&str> = [ns::DISCO_INFO, ns::DISCO_ITEMS, ns::PING].into();
        expected.extend(PEP_FEATURES);
        expected.insert("urn:xmpp:pep-vcard-conversion:0");
        // The archive (XEP-0313) is the account's own: listed for every account, answered
        // only to the account itself (`mam/tests.rs`).
        expected.extend([ns::MAM, "urn:xmpp:mam:2#extended", "urn:xmpp:sid:0"]);
        assert_eq!(features, expected, "{to}");
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
        // An account has no nodes but its PEP nodes (none here).
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
        (
            ns::VCARD,
            Box::new(|w: &mut World| {
                answered(
                    w,
                    "<iq type='set' id='x'><vCard xmlns='vcard-temp'><FN>Alice</FN></vCard></iq>",
                ) && answered(
                    w,
                    "<iq to='alice@localhost' type='get' id='y'><vCard xmlns='vcard-temp'/></iq>",
                )
            }),
        ),
        (
            ns::BLOCKING,
            Box::new(|w: &mut World| {
                answered(
                    w,
                    "<iq type='get' id='x'><blocklist xmlns='urn:xmpp:blocking'/></iq>",
                )
            }),
        ),
        (
            // XEP-0050 §2.2: the command list node, and its items (none).
            crate::server::hub::commands::NS,
            Box::new(|w: &mut World| {
                answered(w, "<iq to='localhost' type='get' id='x'><query xmlns='http://jabber.org/protocol/disco#info' node='http://jabber.org/protocol/commands'/></iq>")
                    && answered(w, "<iq to='localhost' type='get' id='y'><query xmlns='http://jabber.org/protocol/disco#items' node='http://jabber.org/protocol/commands'/></iq>")
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

/// Every feature an account lists is implemented, as for the server's: one probe per feature,
/// and the list of probes is the list of features. PEP's need a contact (bob), a stranger
/// (carol) and a client whose caps ask for nicknames (XEP-0115, answered here by hand).
#[test]
fn every_feature_an_account_lists_answers() {
    let mut world = World::with_accounts(&["alice", "bob", "carol"]);
    let alice = world.online("alice/phone", 0);
    let bob = world.online("bob/phone", 0);
    let carol = world.online("carol/phone", 0);
    world.befriend(&alice, &bob);
    let pubsub = |inner: &str| {
        format!("<iq type='set' id='x'><pubsub xmlns='http://jabber.org/protocol/pubsub'>{inner}</pubsub></iq>")
    };
    let owner = |inner: &str| {
        format!("<iq type='set' id='x'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'>{inner}</pubsub></iq>")
    };
    let publish = |node: &str, id: &str, options: &str| {
        pubsub(&format!("<publish node='{node}'><item id='{id}'><nick xmlns='http://jabber.org/protocol/nick'>{id}</nick></item></publish>{options}"))
    };
    let options = |var: &str, value: &str| {
        format!("<publish-options><x xmlns='jabber:x:data' type='submit'><field var='{var}'><value>{value}</value></field></x></publish-options>")
    };
    let read = |node: &str, inner: &str| {
        format!("<iq type='get' to='alice@localhost' id='x'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='{node}'>{inner}</items></pubsub></iq>")
    };
    let answered_by = |world: &mut World, who: &tokio_xmpp::jid::FullJid, xml: &str| {
        let got = world.send(who, xml);
        matches!(iq(got.only_to(who)), Iq::Result { .. })
    };
    // A client of bob's that wants nickname notifications (XEP-0163 §4.3): its caps query
    // answered, it gets what alice published so far and what she publishes next.
    let notified = |world: &mut World, resource: &str| -> Vec<String> {
        let jid = world.bind(resource);
        let info = DiscoInfoResult {
            node: None,
            identities: vec![Identity::new("client", "pc", "en", "probe")],
            features: ["http://jabber.org/protocol/nick+notify".to_string()].into(),
            extensions: Vec::new(),
        };
        let ver = BASE64_STANDARD.encode(
            hash_caps(
                &verification_string(&Element::from(info.clone())).unwrap(),
                Algo::Sha_1,
            )
            .unwrap()
            .hash,
        );
        let got = world.send(&jid, &format!("<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='urn:probe' ver='{ver}'/></presence>"));
        let id = got.to(&jid).into_iter().find_map(|s| match s {
            tokio_xmpp::Stanza::Iq(Iq::Get { id, .. }) => Some(id.clone()),
            _ => None,
        });
        let got = match id {
            Some(id) => world.send(
                &jid,
                &format!(
                    "<iq type='result' to='localhost' id='{id}'>{}</iq>",
                    String::from(&Element::from(info))
                ),
            ),
            None => got,
        };
        got.to(&jid)
            .into_iter()
            .filter(|s| matches!(s, tokio_xmpp::Stanza::Message(_)))
            .map(xml)
            .collect()
    };
    // bob chats to alice: the stanza id alice's copy carries (XEP-0359), if any.
    let stanza_id_of_chat = |w: &mut World, text: &str| -> Option<String> {
        let got = w.send(
            &bob,
            &format!("<message to='alice@localhost' type='chat'><body>{text}</body></message>"),
        );
        got.to(&alice).into_iter().find_map(|s| match s {
            tokio_xmpp::Stanza::Message(m) => m
                .payloads
                .iter()
                .find(|p| {
                    p.is("stanza-id", "urn:xmpp:sid:0") && p.attr("by") == Some("alice@localhost")
                })
                .and_then(|p| p.attr("id"))
                .map(str::to_string),
            _ => None,
        })
    };
    // The bodies of the archived messages in a query's results (XEP-0313 §4.2).
    let archived_bodies = |got: &Deliveries| -> Vec<String> {
        got.to(&alice)
            .into_iter()
            .filter_map(|s| match s {
                tokio_xmpp::Stanza::Message(m) => {
                    m.payloads.iter().find(|p| p.is("result", ns::MAM))
                }
                _ => None,
            })
            .filter_map(|result| {
                result
                    .get_child("forwarded", "urn:xmpp:forward:0")?
                    .get_child("message", "jabber:client")?
                    .get_child("body", "jabber:client")
                    .map(|body| body.text())
            })
            .collect()
    };
    const NICK: &str = "http://jabber.org/protocol/nick";
    type Probe<'a> = Box<dyn Fn(&mut World) -> bool + 'a>;
    let probes: Vec<(&str, Probe)> = vec![
        (
            ns::DISCO_INFO,
            Box::new(|w: &mut World| {
                answered_by(w, &bob, "<iq to='alice@localhost' type='get' id='x'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
            }),
        ),
        (
            ns::DISCO_ITEMS,
            Box::new(|w: &mut World| {
                answered_by(w, &bob, "<iq to='alice@localhost' type='get' id='x'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>")
            }),
        ),
        (
            ns::PING,
            Box::new(|w: &mut World| {
                answered_by(
                    w,
                    &bob,
                    "<iq to='alice@localhost' type='get' id='x'><ping xmlns='urn:xmpp:ping'/></iq>",
                )
            }),
        ),
        (
            ns::PUBSUB,
            Box::new(|w: &mut World| answered_by(w, &alice, &publish(NICK, "current", ""))),
        ),
        (
            "http://jabber.org/protocol/pubsub#publish",
            Box::new(|w: &mut World| answered_by(w, &alice, &publish(NICK, "current", ""))),
        ),
        (
            "http://jabber.org/protocol/pubsub#auto-create",
            Box::new(|w: &mut World| {
                answered_by(w, &alice, &publish("urn:probe:auto", "1", ""))
                    && w.hub
                        .store()
                        .pep_node("alice", "urn:probe:auto")
                        .unwrap()
                        .is_some()
            }),
        ),
        (
            "http://jabber.org/protocol/pubsub#publish-options",
            Box::new(|w: &mut World| {
                answered_by(
                    w,
                    &alice,
                    &publish("urn:probe:options", "1", &options("pubsub#max_items", "7")),
                ) && !answered_by(
                    w,
                    &alice,
                    &publish("urn:probe:options", "1", &options("pubsub#max_items", "8")),
                )
            }),
        ),
        (
            "http://jabber.org/protocol/pubsub#access-open",
            Box::new(|w: &mut World| {
                answered_by(
                    w,
                    &alice,
                    &publish(
                        "urn:probe:open",
                        "1",
                        &options("pubsub#access_model", "open"),
                    ),
                ) && answered_by(w, &carol, &read("urn:probe:open", ""))
            }),
        ),
        (
            "http://jabber.org/protocol/pubsub#access-presence",
            Box::new(|w: &mut World| {
                answered_by(w, &alice, &publish(NICK, "current", ""))
                    && answered_by(w, &bob, &read(NICK, ""))
                    && !answered_by(w, &carol, &read(NICK, ""))
            }),
        ),
        (
            "http://jabber.org/protocol/pubsub#access-whitelist",
            Box::new(|w: &mut World| {
                answered_by(
                    w,
                    &alice,
                    &publish(
                        "urn:probe:white",
                        "1",
                        &options("pubsub#access_model", "whitelist"),
                    ),
                ) && answered_by(w, &alice, &read("urn:probe:white", ""))
                    && !answered_by(w, &bob, &read("urn:probe:white", ""))
            }),
        ),
        (
            "http://jabber.org/protocol/pubsub#retrieve-items",
            Box::new(|w: &mut World| answered_by(w, &bob, &read(NICK, ""))),
        ),
        (
            "http://jabber.org/protocol/pubsub#item-ids",
            Box::new(|w: &mut World| {
                let got = w.send(&bob, &read(NICK, "<item id='current'/>"));
                let text = xml(got.only_to(&bob));
                text.contains("id='current'") || text.contains("id=\"current\"")
            }),
        ),
        (
            "http://jabber.org/protocol/pubsub#persistent-items",
            Box::new(|w: &mut World| {
                w.hub
                    .store()
                    .pep_last_item("alice", NICK)
                    .unwrap()
                    .is_some()
            }),
        ),
        (
            "http://jabber.org/protocol/pubsub#retract-items",
            Box::new(|w: &mut World| {
                answered_by(
                    w,
                    &alice,
                    &pubsub("<retract node='urn:probe:auto'><item id='1'/></retract>"),
                )
            }),
        ),
        (
            "http://jabber.org/protocol/pubsub#create-nodes",
            Box::new(|w: &mut World| {
                answered_by(w, &alice, &pubsub("<create node='urn:probe:created'/>"))
            }),
        ),
        (
            "http://jabber.org/protocol/pubsub#config-node",
            Box::new(|w: &mut World| {
                answered_by(w, &alice, &owner("<configure node='urn:probe:created'><x xmlns='jabber:x:data' type='submit'><field var='pubsub#title'><value>T</value></field></x></configure>"))
            }),
        ),
        (
            "http://jabber.org/protocol/pubsub#retrieve-default",
            Box::new(|w: &mut World| {
                answered_by(w, &alice, "<iq type='get' id='x'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><default/></pubsub></iq>")
            }),
        ),
        (
            "http://jabber.org/protocol/pubsub#delete-nodes",
            Box::new(|w: &mut World| {
                answered_by(w, &alice, &owner("<delete node='urn:probe:created'/>"))
            }),
        ),
        (
            "http://jabber.org/protocol/pubsub#last-published",
            Box::new(|w: &mut World| {
                answered_by(w, &alice, &publish(NICK, "current", ""));
                notified(w, "bob/last").len() == 1
            }),
        ),
        (
            "http://jabber.org/protocol/pubsub#presence-notifications",
            Box::new(|w: &mut World| {
                notified(w, "bob/presence");
                let got = w.send(&alice, &publish(NICK, "current", ""));
                got.to(&full("bob@localhost/presence")).len() == 1
            }),
        ),
        (
            "http://jabber.org/protocol/pubsub#filtered-notifications",
            Box::new(|w: &mut World| {
                notified(w, "bob/filtered");
                let got = w.send(&alice, &publish("urn:probe:other", "1", ""));
                got.to(&full("bob@localhost/filtered")).is_empty()
            }),
        ),
        (
            "http://jabber.org/protocol/pubsub#auto-subscribe",
            Box::new(|w: &mut World| {
                // No subscribe request: the presence subscription is the pubsub subscription.
                notified(w, "bob/auto");
                notified(w, "carol/auto");
                let got = w.send(&alice, &publish(NICK, "current", ""));
                got.to(&full("bob@localhost/auto")).len() == 1
                    && got.to(&full("carol@localhost/auto")).is_empty()
            }),
        ),
        (
            "urn:xmpp:sid:0",
            Box::new(|w: &mut World| stanza_id_of_chat(w, "sid").is_some()),
        ),
        (
            ns::MAM,
            Box::new(|w: &mut World| {
                stanza_id_of_chat(w, "archived");
                let got = w.send(
                    &alice,
                    "<iq type='set' id='q'><query xmlns='urn:xmpp:mam:2' queryid='f'/></iq>",
                );
                archived_bodies(&got).contains(&"archived".to_string())
            }),
        ),
        (
            "urn:xmpp:mam:2#extended",
            Box::new(|w: &mut World| {
                let Some(first) = stanza_id_of_chat(w, "first") else {
                    return false;
                };
                stanza_id_of_chat(w, "second");
                let got = w.send(&alice, &format!("<iq type='set' id='q'><query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field><field var='after-id'><value>{first}</value></field></x></query></iq>"));
                archived_bodies(&got) == ["second"]
            }),
        ),
        (
            "urn:xmpp:pep-vcard-conversion:0",
            Box::new(|w: &mut World| {
                // XEP-0398 §3.2: a vCard photo (the bytes `abc`) becomes the PEP avatar.
                let got = w.send(&alice, "<iq type='set' id='x'><vCard xmlns='vcard-temp'><PHOTO><TYPE>image/png</TYPE><BINVAL>YWJj</BINVAL></PHOTO></vCard></iq>");
                matches!(iq(got.to(&alice)[0]), Iq::Result { .. })
                    && w.hub
                        .store()
                        .pep_last_item("alice", "urn:xmpp:avatar:metadata")
                        .unwrap()
                        .is_some_and(|item| item.id == "a9993e364706816aba3e25717850c26c9cd0d89d")
            }),
        ),
    ];
    let listed: BTreeSet<&str> = world.hub.features(Entity::Account).collect();
    let probed: BTreeSet<&str> = probes.iter().map(|(feature, _)| *feature).collect();
    assert_eq!(
        listed, probed,
        "a feature without a probe, or a probe without a feature"
    );
    for (feature, probe) in &probes {
        assert!(probe(&mut world), "{feature} is listed but does not work");
    }
}

fn ver_of_query(query: &str) -> Option<String> {
    let query: Element = query.parse().unwrap();
    let input = verification_string(&query)?;
    Some(BASE64_STANDARD.encode(hash_caps(&input, Algo::Sha_1).unwrap().hash))
}

/// XEP-0115 §5.2 and §5.3, byte for byte.
#[test]
fn the_verification_strings_of_xep_0115s_examples() {
    assert_eq!(
        ver_of_query(
            "<query xmlns='http://jabber.org/protocol/disco#info'>\
               <identity category='client' name='Exodus 0.9.1' type='pc'/>\
               <feature var='http://jabber.org/protocol/caps'/>\
               <feature var='http://jabber.org/protocol/disco#info'/>\
               <feature var='http://jabber.org/protocol/disco#items'/>\
               <feature var='http://jabber.org/protocol/muc'/>\
             </query>"
        )
        .as_deref(),
        Some("QgayPKawpkPSDYmwT/WM94uAlu0=")
    );
    assert_eq!(
        ver_of_query("<query xmlns='http://jabber.org/protocol/disco#info'>\
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
             </query>")
        .as_deref(),
        Some("q07IKJEyjvHSyhy//CH0CxmKi8w=")
    );
}

/// What slixmpp 1.8.3 answered, with the ver it announced: a namespace sorts before its
/// `+notify`.
#[test]
fn a_namespace_sorts_before_its_notify_feature() {
    assert_eq!(
        ver_of_query(
            "<query xmlns='http://jabber.org/protocol/disco#info'>\
               <identity category='client' type='bot'/>\
               <feature var='http://jabber.org/protocol/disco#info'/>\
               <feature var='jabber:x:data'/>\
               <feature var='http://jabber.org/protocol/caps'/>\
               <feature var='http://jabber.org/protocol/shim'/>\
               <feature var='http://jabber.org/protocol/shim#SubID'/>\
               <feature var='http://jabber.org/protocol/nick+notify'/>\
               <feature var='http://jabber.org/protocol/nick'/>\
               <feature var='urn:xmpp:avatar:metadata+notify'/>\
               <feature var='urn:xmpp:avatar:metadata'/>\
               <feature var='urn:xmpp:ping'/>\
             </query>"
        )
        .as_deref(),
        Some("iTVNsqb1+MdJt5p3iw9DoWKnHOA=")
    );
}

/// XEP-0115 §5.4: answers that must not be cached.
#[test]
fn duplicates_and_forms_without_one_form_type_are_not_verifiable() {
    for query in [
        "<query xmlns='http://jabber.org/protocol/disco#info'><feature var='a'/><feature var='a'/></query>",
        "<query xmlns='http://jabber.org/protocol/disco#info'><identity category='client' type='pc'/><identity category='client' type='pc'/></query>",
        "<query xmlns='http://jabber.org/protocol/disco#info'><x xmlns='jabber:x:data' type='result'><field var='os'><value>x</value></field></x></query>",
        "<query xmlns='http://jabber.org/protocol/disco#info'><x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE'><value>a</value></field></x><x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE'><value>a</value></field></x></query>",
    ] {
        assert_eq!(ver_of_query(query), None, "{query}");
    }
}

/// The server's ad-hoc command list (XEP-0050 §2.2): the node is `automation/command-list`
/// with no items, and executing a command at the server finds no such node (§4.4).
#[test]
fn the_server_has_an_empty_command_list() {
    let mut world = World::with_accounts(&["alice"]);
    let alice = world.online("alice/phone", 0);
    let got = world.send(
        &alice,
        "<iq to='localhost' type='get' id='i'><query xmlns='http://jabber.org/protocol/disco#info' node='http://jabber.org/protocol/commands'/></iq>",
    );
    let info = info_from(&got, &alice);
    assert_eq!(
        info.node.as_deref(),
        Some("http://jabber.org/protocol/commands")
    );
    assert_eq!(info.identities.len(), 1);
    assert_eq!(info.identities[0].category, "automation");
    assert_eq!(info.identities[0].type_, "command-list");
    let got = world.send(
        &alice,
        "<iq to='localhost' type='get' id='t'><query xmlns='http://jabber.org/protocol/disco#items' node='http://jabber.org/protocol/commands'/></iq>",
    );
    match iq(got.only_to(&alice)) {
        Iq::Result {
            payload: Some(payload),
            ..
        } => {
            let items = DiscoItemsResult::try_from(payload.clone()).unwrap();
            assert_eq!(
                items.node.as_deref(),
                Some("http://jabber.org/protocol/commands")
            );
            assert!(items.items.is_empty(), "{items:?}");
        }
        other => panic!("not a disco#items result: {other:?}"),
    }
    let got = world.send(
        &alice,
        "<iq to='localhost' type='set' id='e'><command xmlns='http://jabber.org/protocol/commands' node='config' action='execute'/></iq>",
    );
    assert_eq!(
        error_condition(got.only_to(&alice)),
        Some(DefinedCondition::ItemNotFound)
    );
    // An account's command list is its clients' (a bot's full JID), not the server's.
    let got = world.send(
        &alice,
        "<iq to='alice@localhost' type='get' id='a'><query xmlns='http://jabber.org/protocol/disco#info' node='http://jabber.org/protocol/commands'/></iq>",
    );
    assert_eq!(
        error_condition(got.only_to(&alice)),
        Some(DefinedCondition::ItemNotFound)
    );
}
