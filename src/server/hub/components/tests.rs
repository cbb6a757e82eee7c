//! External components as deliveries: accounts and a component exchanging messages, presence and
//! IQs, offline storage for a component's messages, the errors when no component is connected,
//! and the `from` a component may use (XEP-0114; the rules in `router.rs`).

use tokio_xmpp::parsers::disco::DiscoItemsResult;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::MessageType;
use tokio_xmpp::parsers::presence::Type as PresenceType;
use tokio_xmpp::parsers::roster::Subscription as WireSubscription;
use tokio_xmpp::parsers::stanza_error::DefinedCondition;
use tokio_xmpp::Stanza;

use super::super::testing::*;
use super::*;

const GATEWAY: &str = "gateway.localhost";

fn world() -> World {
    let mut world = World::with_accounts(&["alice", "bob"]);
    world.component(GATEWAY);
    world
}

#[test]
fn a_message_from_an_account_to_any_address_of_the_component_goes_to_the_component_stamped() {
    let mut world = world();
    let alice = world.online("alice/phone", 0);
    for to in [
        GATEWAY,
        "someone@gateway.localhost",
        "someone@gateway.localhost/r",
    ] {
        let got = world.send(
            &alice,
            &format!("<message to='{to}' type='chat' id='m'><body>hi</body></message>"),
        );
        let forwarded = got.to_component(GATEWAY);
        assert_eq!(forwarded.len(), 1, "{}", got.describe());
        assert_eq!(body(forwarded[0]), Some("hi"));
        assert_eq!(from_of(forwarded[0]), Some(&alice.clone().into()));
        assert_eq!(message(forwarded[0]).to, Some(to.parse().unwrap()));
        // Nothing goes back to alice: no error.
        assert!(got.to(&alice).is_empty(), "{}", got.describe());
    }
}

#[test]
fn iqs_and_presence_from_an_account_go_to_the_component_too() {
    let mut world = world();
    let alice = world.online("alice/phone", 0);
    let got = world.send(
        &alice,
        "<iq to='gateway.localhost' type='get' id='q'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    );
    let forwarded = got.to_component(GATEWAY);
    assert!(matches!(iq(forwarded[0]), Iq::Get { id, .. } if id == "q"));
    assert_eq!(from_of(forwarded[0]), Some(&alice.clone().into()));
    let got = world.send(
        &alice,
        "<presence to='x@gateway.localhost' type='subscribe'/>",
    );
    let forwarded = got.to_component(GATEWAY);
    assert_eq!(presence_type(forwarded[0]), PresenceType::Subscribe);
    let got = world.send(&alice, "<presence to='x@gateway.localhost/r'/>");
    assert_eq!(got.to_component(GATEWAY).len(), 1, "{}", got.describe());
}

#[test]
fn a_chat_message_to_a_component_is_carbon_copied_to_the_senders_other_resources() {
    let mut world = world();
    let phone = world.online("alice/phone", 0);
    let laptop = world.online("alice/laptop", 0);
    world.send(
        &laptop,
        "<iq type='set' id='c'><enable xmlns='urn:xmpp:carbons:2'/></iq>",
    );
    let got = world.send(
        &phone,
        "<message to='x@gateway.localhost' type='chat'><body>hi</body></message>",
    );
    assert_eq!(got.to_component(GATEWAY).len(), 1);
    assert_eq!(got.to(&laptop).len(), 1, "{}", got.describe());
}

#[test]
fn with_no_component_connected_requests_get_remote_server_timeout_and_results_nothing() {
    let mut world = world();
    world.hub.disconnect_component(&bare(GATEWAY));
    let alice = world.online("alice/phone", 0);
    for xml in [
        "<message to='x@gateway.localhost' type='chat' id='m'><body>hi</body></message>",
        "<iq to='gateway.localhost' type='get' id='q'><ping xmlns='urn:xmpp:ping'/></iq>",
        "<presence to='x@gateway.localhost' type='subscribe'/>",
    ] {
        let got = world.send(&alice, xml);
        assert!(got.to_component(GATEWAY).is_empty());
        let error = got.only_to(&alice);
        assert_eq!(
            error_condition(error),
            Some(DefinedCondition::RemoteServerTimeout),
            "{xml}"
        );
        assert_eq!(from_of(error), Some(&xml_to(xml)), "{xml}");
    }
    for xml in [
        "<iq to='gateway.localhost' type='result' id='q'/>",
        "<message to='x@gateway.localhost' type='error'/>",
    ] {
        let got = world.send(&alice, xml);
        assert!(got.is_empty(), "{xml}: {}", got.describe());
    }
    // Connected again, it gets them.
    world.hub.connect_component(&bare(GATEWAY)).unwrap();
    let got = world.send(
        &alice,
        "<message to='x@gateway.localhost' type='chat'><body>back</body></message>",
    );
    assert_eq!(got.to_component(GATEWAY).len(), 1);
}

/// The `to` of the stanza written in `xml`.
fn xml_to(xml: &str) -> tokio_xmpp::jid::Jid {
    match stanza(xml) {
        Stanza::Message(m) => m.to.unwrap(),
        Stanza::Presence(p) => p.to.unwrap(),
        Stanza::Iq(iq) => iq.to().cloned().unwrap(),
    }
}

#[test]
fn a_message_from_the_component_reaches_the_account_like_any_other() {
    let mut world = world();
    let low = world.online("alice/phone", 1);
    let high = world.online("alice/laptop", 5);
    let got = world.component_sends(
        GATEWAY,
        "<message from='bot@gateway.localhost/x' to='alice@localhost' type='chat' id='g1'><body>reading: 21 °C</body></message>",
    );
    assert_eq!(got.recipients(), [&high], "{}", got.describe());
    let delivered = got.only_to(&high);
    assert_eq!(body(delivered), Some("reading: 21 °C"));
    assert_eq!(
        from_of(delivered),
        Some(&"bot@gateway.localhost/x".parse().unwrap())
    );
    assert!(got.to(&low).is_empty());
    // To a full JID: that session, whatever its priority.
    let got = world.component_sends(
        GATEWAY,
        "<message from='gateway.localhost' to='alice@localhost/phone'><body>direct</body></message>",
    );
    assert_eq!(body(got.only_to(&low)), Some("direct"));
}

#[test]
fn a_message_from_the_component_to_an_offline_account_is_stored_and_delivered_at_login() {
    let mut world = world();
    let got = world.component_sends(
        GATEWAY,
        "<message from='bot@gateway.localhost' to='bob@localhost' type='chat'><body>while you were away</body></message>",
    );
    assert!(got.is_empty(), "{}", got.describe());
    let bob = world.bind("bob/phone");
    let got = world.send(&bob, "<presence/>");
    let delivered: Vec<_> = got.to(&bob).into_iter().filter_map(body).collect();
    assert_eq!(delivered, ["while you were away"], "{}", got.describe());
}

#[test]
fn a_message_from_the_component_to_an_unknown_account_is_refused_to_the_component() {
    let mut world = world();
    let got = world.component_sends(
        GATEWAY,
        "<message from='bot@gateway.localhost' to='nobody@localhost' type='chat' id='n'><body>x</body></message>",
    );
    let errors = got.to_component(GATEWAY);
    assert_eq!(errors.len(), 1, "{}", got.describe());
    assert_eq!(
        error_condition(errors[0]),
        Some(DefinedCondition::ServiceUnavailable)
    );
    assert_eq!(message(errors[0]).type_, MessageType::Error);
    assert_eq!(
        message(errors[0]).to,
        Some("bot@gateway.localhost".parse().unwrap())
    );
}

#[test]
fn iqs_from_the_component_reach_bound_resources_and_anything_else_is_answered_with_an_error() {
    let mut world = world();
    let alice = world.online("alice/phone", 0);
    let got = world.component_sends(
        GATEWAY,
        "<iq from='gateway.localhost' to='alice@localhost/phone' type='get' id='v'><query xmlns='jabber:iq:version'/></iq>",
    );
    assert!(matches!(iq(got.only_to(&alice)), Iq::Get { id, .. } if id == "v"));
    // The answer goes back to the component.
    let got = world.send(&alice, "<iq to='gateway.localhost' type='result' id='v'/>");
    assert_eq!(got.to_component(GATEWAY).len(), 1, "{}", got.describe());
    for to in ["alice@localhost/gone", "alice@localhost", "localhost"] {
        let got = world.component_sends(
            GATEWAY,
            &format!("<iq from='gateway.localhost' to='{to}' type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>"),
        );
        let errors = got.to_component(GATEWAY);
        assert_eq!(errors.len(), 1, "{to}: {}", got.describe());
        assert_eq!(
            error_condition(errors[0]),
            Some(DefinedCondition::ServiceUnavailable)
        );
        // A result nobody asked for is dropped.
        let got = world.component_sends(
            GATEWAY,
            &format!("<iq from='gateway.localhost' to='{to}' type='result' id='p'/>"),
        );
        assert!(got.is_empty(), "{to}: {}", got.describe());
    }
}

#[test]
fn presence_from_the_component_goes_to_the_accounts_available_resources() {
    let mut world = world();
    let phone = world.online("alice/phone", 0);
    let laptop = world.online("alice/laptop", -1);
    let got = world.component_sends(
        GATEWAY,
        "<presence from='bot@gateway.localhost' to='alice@localhost'><status>ok</status></presence>",
    );
    assert_eq!(got.to(&phone).len(), 1, "{}", got.describe());
    assert_eq!(got.to(&laptop).len(), 1, "{}", got.describe());
    let got = world.component_sends(
        GATEWAY,
        "<presence from='bot@gateway.localhost' to='alice@localhost' type='subscribe'/>",
    );
    assert_eq!(presence_type(got.only_to(&phone)), PresenceType::Subscribe);
    // To the server: nothing.
    let got = world.component_sends(
        GATEWAY,
        "<presence from='gateway.localhost' to='localhost'/>",
    );
    assert!(got.is_empty(), "{}", got.describe());
}

#[test]
fn a_stanza_from_the_component_without_to_gets_bad_request_and_without_from_is_sent_from_its_domain(
) {
    let mut world = world();
    let alice = world.online("alice/phone", 0);
    let got = world.component_sends(
        GATEWAY,
        "<message from='gateway.localhost' id='x'><body>to whom?</body></message>",
    );
    assert_eq!(
        error_condition(got.to_component(GATEWAY)[0]),
        Some(DefinedCondition::BadRequest)
    );
    let got = world.component_sends(
        GATEWAY,
        "<message to='alice@localhost/phone'><body>anonymous</body></message>",
    );
    assert_eq!(
        from_of(got.only_to(&alice)),
        Some(&GATEWAY.parse().unwrap())
    );
}

#[test]
fn the_component_may_send_from_any_address_of_its_domain_and_no_other() {
    let domain = bare(GATEWAY);
    for from in [
        GATEWAY,
        "a@gateway.localhost",
        "a@gateway.localhost/r",
        "gateway.localhost/r",
    ] {
        let mut stanza = stanza(&format!("<message from='{from}' to='alice@localhost'/>"));
        assert!(sender_in_domain(&mut stanza, &domain), "{from}");
    }
    for from in [
        "alice@localhost",
        "localhost",
        "other.localhost",
        "x@sub.gateway.localhost",
        "gateway.localhost.evil",
    ] {
        let mut stanza = stanza(&format!("<message from='{from}' to='alice@localhost'/>"));
        assert!(!sender_in_domain(&mut stanza, &domain), "{from}");
    }
    // The hub drops such a stanza too, should it ever get one.
    let mut world = world();
    let alice = world.online("alice/phone", 0);
    let got = world.component_sends(
        GATEWAY,
        "<message from='bob@localhost/x' to='alice@localhost/phone'><body>forged</body></message>",
    );
    assert!(got.to(&alice).is_empty(), "{}", got.describe());
    assert!(got.is_empty(), "{}", got.describe());
}

#[test]
fn the_component_reaches_other_components_and_other_domains_get_remote_server_not_found() {
    let mut world = world();
    world.component("rooms.localhost");
    let got = world.component_sends(
        GATEWAY,
        "<message from='gateway.localhost' to='room@rooms.localhost' type='chat'><body>hi</body></message>",
    );
    assert_eq!(got.to_component("rooms.localhost").len(), 1);
    let got = world.component_sends(
        GATEWAY,
        "<message from='gateway.localhost' to='someone@example.org' type='chat' id='e'><body>hi</body></message>",
    );
    assert_eq!(
        error_condition(got.to_component(GATEWAY)[0]),
        Some(DefinedCondition::RemoteServerNotFound)
    );
}

#[test]
fn a_component_that_is_not_connected_sends_nothing_and_a_second_connection_is_refused() {
    let mut world = world();
    let domain = bare(GATEWAY);
    assert_eq!(
        world.hub.connect_component(&domain),
        Err(ComponentRefused::AlreadyConnected)
    );
    assert_eq!(
        world.hub.connect_component(&bare("unknown.localhost")),
        Err(ComponentRefused::Unknown)
    );
    world.hub.disconnect_component(&domain);
    let alice = world.online("alice/phone", 0);
    let got = world.component_sends(
        GATEWAY,
        "<message from='gateway.localhost' to='alice@localhost/phone'><body>late</body></message>",
    );
    assert!(got.is_empty(), "{}", got.describe());
    assert!(world.hub.connect_component(&domain).is_ok());
    let got = world.component_sends(
        GATEWAY,
        "<message from='gateway.localhost' to='alice@localhost/phone'><body>now</body></message>",
    );
    assert_eq!(body(got.only_to(&alice)), Some("now"));
}

#[test]
fn the_server_lists_its_components_in_disco_items_and_never_serves_its_own_domain_as_one() {
    let mut world = world();
    assert!(!world.hub.add_component(bare("localhost")));
    assert!(!world.hub.add_component(bare("user@gateway.localhost")));
    let alice = world.online("alice/phone", 0);
    let got = world.send(
        &alice,
        "<iq to='localhost' type='get' id='i'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>",
    );
    let Iq::Result {
        payload: Some(payload),
        ..
    } = iq(got.only_to(&alice))
    else {
        panic!("{}", got.describe())
    };
    let items = DiscoItemsResult::try_from(payload.clone()).unwrap();
    let jids: Vec<String> = items.items.iter().map(|i| i.jid.to_string()).collect();
    // The room service (XEP-0045) is listed after the components.
    assert_eq!(jids, [GATEWAY, "conference.localhost"]);
}

/// The stanzas for the component that are presence of `kind`.
fn presences_of_kind(got: &Deliveries, kind: PresenceType) -> Vec<&Stanza> {
    got.to_component(GATEWAY)
        .into_iter()
        .filter(|s| matches!(s, Stanza::Presence(p) if p.type_ == kind))
        .collect()
}

#[test]
fn an_account_subscribes_to_a_component_contact_and_sees_its_presence_from_then_on() {
    let mut world = world();
    let alice = world.online("alice/phone", 0);
    world.get_roster(&alice);
    // alice asks: her roster shows the pending request, the component gets it from her bare JID.
    let got = world.send(
        &alice,
        "<presence to='sensor@gateway.localhost' type='subscribe'/>",
    );
    let pushes = got.roster_pushes(&alice);
    assert_eq!(pushes.len(), 1, "{}", got.describe());
    assert!(asks(&pushes[0]));
    let asked = presences_of_kind(&got, PresenceType::Subscribe);
    assert_eq!(from_of(asked[0]), Some(&"alice@localhost".parse().unwrap()));
    // The component approves: alice is subscribed, and told so.
    let got = world.component_sends(
        GATEWAY,
        "<presence from='sensor@gateway.localhost' to='alice@localhost' type='subscribed'/>",
    );
    let pushes = got.roster_pushes(&alice);
    assert_eq!(pushes[0].subscription, WireSubscription::To);
    assert!(!asks(&pushes[0]));
    assert!(got
        .to(&alice)
        .iter()
        .any(|s| matches!(s, Stanza::Presence(p) if p.type_ == PresenceType::Subscribed)));
    // An approval nobody asked for changes nothing.
    let got = world.component_sends(
        GATEWAY,
        "<presence from='other@gateway.localhost' to='alice@localhost' type='subscribed'/>",
    );
    assert!(got.is_empty(), "{}", got.describe());
    // alice's next session probes the contact at login (RFC 6121 §4.3.1).
    let laptop = world.bind("alice/laptop");
    let got = world.send(&laptop, "<presence/>");
    let probes = presences_of_kind(&got, PresenceType::Probe);
    assert_eq!(probes.len(), 1, "{}", got.describe());
    assert_eq!(
        presence(probes[0]).to,
        Some("sensor@gateway.localhost".parse().unwrap())
    );
    // alice's own presence does not go to it: it is not subscribed to her.
    assert!(
        presences_of_kind(&got, PresenceType::None).is_empty(),
        "{}",
        got.describe()
    );
    // The component's presence reaches both resources.
    let got = world.component_sends(
        GATEWAY,
        "<presence from='sensor@gateway.localhost/x' to='alice@localhost'><status>21 °C</status></presence>",
    );
    assert_eq!(got.to(&alice).len(), 1);
    assert_eq!(got.to(&laptop).len(), 1);
}

#[test]
fn a_component_contact_that_an_account_approves_gets_its_presence_and_its_goodbye() {
    let mut world = world();
    let bob = world.bind("bob/phone");
    // The request arrives while bob is offline: it waits for his next login.
    let got = world.component_sends(
        GATEWAY,
        "<presence from='gateway.localhost' to='bob@localhost' type='subscribe'/>",
    );
    assert!(got.is_empty(), "{}", got.describe());
    world.get_roster(&bob);
    let got = world.send(&bob, "<presence><priority>1</priority></presence>");
    let requests: Vec<_> = got
        .to(&bob)
        .into_iter()
        .filter(|s| matches!(s, Stanza::Presence(p) if p.type_ == PresenceType::Subscribe))
        .collect();
    assert_eq!(requests.len(), 1, "{}", got.describe());
    assert_eq!(from_of(requests[0]), Some(&GATEWAY.parse().unwrap()));
    // bob approves: his roster says `from`, the component is told and sees his presence.
    let got = world.send(&bob, "<presence to='gateway.localhost' type='subscribed'/>");
    assert_eq!(
        got.roster_pushes(&bob)[0].subscription,
        WireSubscription::From
    );
    assert_eq!(presences_of_kind(&got, PresenceType::Subscribed).len(), 1);
    let current = presences_of_kind(&got, PresenceType::None);
    assert_eq!(current.len(), 1, "{}", got.describe());
    assert_eq!(from_of(current[0]), Some(&bob.clone().into()));
    // From now on his broadcasts reach it, a probe from it is answered, and so is a second
    // request (approved already).
    let got = world.send(&bob, "<presence><show>away</show></presence>");
    assert_eq!(
        presences_of_kind(&got, PresenceType::None).len(),
        1,
        "{}",
        got.describe()
    );
    let got = world.component_sends(
        GATEWAY,
        "<presence from='gateway.localhost' to='bob@localhost' type='probe'/>",
    );
    assert_eq!(
        presences_of_kind(&got, PresenceType::None).len(),
        1,
        "{}",
        got.describe()
    );
    let got = world.component_sends(
        GATEWAY,
        "<presence from='gateway.localhost' to='bob@localhost' type='subscribe'/>",
    );
    assert_eq!(presences_of_kind(&got, PresenceType::Subscribed).len(), 1);
    assert!(got.to(&bob).is_empty(), "{}", got.describe());
    // A probe from an address bob did not approve learns nothing.
    let got = world.component_sends(
        GATEWAY,
        "<presence from='spy@gateway.localhost' to='bob@localhost' type='probe'/>",
    );
    assert!(got.is_empty(), "{}", got.describe());
    // bob goes: the component sees him go.
    let got = world.unbind(&bob);
    assert_eq!(
        presences_of_kind(&got, PresenceType::Unavailable).len(),
        1,
        "{}",
        got.describe()
    );
}

#[test]
fn a_subscription_request_from_a_component_to_an_unknown_account_is_refused_for_it() {
    let mut world = world();
    let got = world.component_sends(
        GATEWAY,
        "<presence from='gateway.localhost' to='nobody@localhost' type='subscribe'/>",
    );
    let refused = presences_of_kind(&got, PresenceType::Unsubscribed);
    assert_eq!(refused.len(), 1, "{}", got.describe());
    assert_eq!(
        from_of(refused[0]),
        Some(&"nobody@localhost".parse().unwrap())
    );
}
