//! Service discovery (XEP-0030) as deliveries, and the features the services advertise.

use std::collections::BTreeSet;

use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::disco::{DiscoInfoResult, DiscoItemsResult};
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::stanza_error::DefinedCondition;

use super::*;
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

/// The features the server advertised before they were collected from the services: what
/// clients see must not change by accident.
#[test]
fn the_advertised_features_are_those_of_the_plugged_in_services() {
    let world = World::with_accounts(&[]);
    let server: BTreeSet<&str> = world.hub.features(Entity::Server).collect();
    let expected: BTreeSet<&str> = [
        ns::DISCO_INFO,
        ns::DISCO_ITEMS,
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
    assert_eq!(account, [ns::DISCO_INFO, ns::DISCO_ITEMS, ns::PING].into());
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
