//! The dispatch of IQ requests to the services, and the small services (ping, version, the
//! legacy session), as deliveries.

use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::stanza_error::DefinedCondition;
use tokio_xmpp::parsers::version::VersionResult;

use super::super::testing::*;

/// Whether `stanza` is an empty IQ result with this id and `from`.
fn empty_result(stanza: &tokio_xmpp::Stanza, id: &str, from: Option<&str>) -> bool {
    let from = from.map(|jid| tokio_xmpp::jid::Jid::new(jid).unwrap());
    matches!(iq(stanza), Iq::Result { id: got, payload: None, from: got_from, .. }
        if got == id && *got_from == from)
}

#[test]
fn the_server_and_every_account_answer_a_ping() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    for (to, answered_from) in [
        (Some("localhost"), Some("localhost")),
        (None, None),
        (Some("alice@localhost"), Some("alice@localhost")),
        // Another account: the server answers on its behalf, online or not.
        (Some("bob@localhost"), Some("bob@localhost")),
    ] {
        let to_attr = to.map(|to| format!(" to='{to}'")).unwrap_or_default();
        let got = world.send(
            &alice,
            &format!("<iq{to_attr} type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>"),
        );
        let answer = got.only_to(&alice);
        assert!(
            empty_result(answer, "p", answered_from),
            "to {to:?}: {}",
            xml(answer)
        );
    }
}

#[test]
fn the_server_tells_its_name_and_version_but_accounts_do_not() {
    let mut world = World::with_accounts(&["alice"]);
    let alice = world.online("alice/phone", 0);
    let got = world.send(
        &alice,
        "<iq to='localhost' type='get' id='v'><query xmlns='jabber:iq:version'/></iq>",
    );
    let Iq::Result {
        payload: Some(payload),
        ..
    } = iq(got.only_to(&alice))
    else {
        panic!("not a result: {}", got.describe());
    };
    let version = VersionResult::try_from(payload.clone()).unwrap();
    assert_eq!(version.name, env!("CARGO_PKG_NAME"));
    assert_eq!(version.version, env!("CARGO_PKG_VERSION"));
    let got = world.send(
        &alice,
        "<iq type='get' id='v'><query xmlns='jabber:iq:version'/></iq>",
    );
    assert_eq!(
        error_condition(got.only_to(&alice)),
        Some(DefinedCondition::ServiceUnavailable)
    );
}

#[test]
fn the_legacy_session_request_is_accepted_with_an_empty_result() {
    let mut world = World::with_accounts(&["alice"]);
    let alice = world.bind("alice/phone");
    let session = "<session xmlns='urn:ietf:params:xml:ns:xmpp-session'/>";
    let got = world.send(&alice, &format!("<iq type='set' id='s'>{session}</iq>"));
    assert!(
        empty_result(got.only_to(&alice), "s", None),
        "{}",
        got.describe()
    );
    let got = world.send(
        &alice,
        &format!("<iq to='localhost' type='set' id='s'>{session}</iq>"),
    );
    assert!(
        empty_result(got.only_to(&alice), "s", Some("localhost")),
        "{}",
        got.describe()
    );
}

#[test]
fn a_request_no_service_handles_gets_service_unavailable_from_whom_it_was_sent_to() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    let unknown = "<query xmlns='urn:example:unknown'/>";
    for (to, answered_from) in [
        ("localhost", "localhost"),
        ("alice@localhost", "alice@localhost"),
        ("bob@localhost", "bob@localhost"),
    ] {
        let got = world.send(
            &alice,
            &format!("<iq to='{to}' type='get' id='u'>{unknown}</iq>"),
        );
        let error = got.only_to(&alice);
        assert_eq!(
            error_condition(error),
            Some(DefinedCondition::ServiceUnavailable),
            "to {to}"
        );
        assert_eq!(
            from_of(error),
            Some(&tokio_xmpp::jid::Jid::new(answered_from).unwrap())
        );
        assert_eq!(iq(error).id(), "u");
    }
}

#[test]
fn another_accounts_data_is_not_served_only_its_ping_and_disco() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    for request in [
        "<iq to='bob@localhost' type='get' id='x'><query xmlns='jabber:iq:roster'/></iq>",
        "<iq to='bob@localhost' type='get' id='x'><query xmlns='jabber:iq:private'><prefs xmlns='urn:example'/></query></iq>",
        "<iq to='bob@localhost' type='set' id='x'><enable xmlns='urn:xmpp:carbons:2'/></iq>",
    ] {
        let got = world.send(&alice, request);
        assert_eq!(
            error_condition(got.only_to(&alice)),
            Some(DefinedCondition::ServiceUnavailable),
            "{request}: {}",
            got.describe()
        );
    }
}

#[test]
fn account_requests_sent_to_the_server_are_answered_from_the_account() {
    let mut world = World::with_accounts(&["alice"]);
    let alice = world.online("alice/phone", 0);
    let got = world.send(
        &alice,
        "<iq to='localhost' type='set' id='c'><enable xmlns='urn:xmpp:carbons:2'/></iq>",
    );
    assert!(
        empty_result(got.only_to(&alice), "c", Some("alice@localhost")),
        "{}",
        got.describe()
    );
    assert!(world.hub.sessions[&alice].carbons);
    // Something else in the carbons namespace is refused by the account, not by the server.
    let got = world.send(
        &alice,
        "<iq to='localhost' type='set' id='c'><bogus xmlns='urn:xmpp:carbons:2'/></iq>",
    );
    let error = got.only_to(&alice);
    assert_eq!(
        error_condition(error),
        Some(DefinedCondition::ServiceUnavailable)
    );
    assert_eq!(from_of(error), Some(&bare("alice@localhost").into()));
}

#[test]
fn iq_results_and_errors_to_the_server_or_an_account_are_never_answered() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    for to in [
        "",
        " to='localhost'",
        " to='alice@localhost'",
        " to='bob@localhost'",
    ] {
        for kind in ["result", "error"] {
            let inner = match kind {
                "error" => "<error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>",
                _ => "",
            };
            let got = world.send(
                &alice,
                &format!("<iq{to} type='{kind}' id='r'>{inner}</iq>"),
            );
            assert!(got.is_empty(), "{kind}{to}: {}", got.describe());
        }
    }
}

#[test]
fn every_feature_is_listed_by_exactly_one_service() {
    use super::Entity;
    let world = crate::server::hub::testing::World::with_accounts(&[]);
    let features = |entity| world.hub.features(entity);
    for entity in [Entity::Server, Entity::Account] {
        let all: Vec<&str> = features(entity).collect();
        let mut unique = all.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(all.len(), unique.len(), "{entity:?}: {all:?}");
    }
    assert!(features(Entity::Server).any(|f| f == ns::PING));
}
