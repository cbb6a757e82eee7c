//! Presence broadcast, probes answered locally, directed presence, and the subscription state
//! machine with its roster pushes (RFC 6121 §3, §4), as deliveries.

use tokio_xmpp::parsers::presence::Type as PresenceType;
use tokio_xmpp::parsers::roster::Subscription as WireSubscription;

use super::super::testing::*;

#[test]
fn initial_presence_goes_to_subscribers_and_own_resources_and_brings_back_theirs() {
    let mut world = World::with_accounts(&["alice", "bob", "carol"]);
    let alice_phone = world.online("alice/phone", 0);
    let bob = world.online("bob/phone", 0);
    let carol = world.online("carol/phone", 0);
    world.befriend(&alice_phone, &bob);

    let laptop = world.bind("alice/laptop");
    let got = world.send(&laptop, "<presence><show>away</show></presence>");
    // bob, subscribed, sees alice's new resource; carol, a stranger, does not.
    let seen = got.only_to(&bob);
    assert_eq!(from_of(seen), Some(&laptop.clone().into()));
    assert_eq!(presence_type(seen), PresenceType::None);
    assert!(got.to(&carol).is_empty(), "{}", got.describe());
    // alice's other resource sees it too, and so does the sender itself.
    assert_eq!(
        from_of(got.only_to(&alice_phone)),
        Some(&laptop.clone().into())
    );
    let to_laptop: Vec<_> = got.to(&laptop).into_iter().filter_map(from_of).collect();
    // The new resource learns who is there: itself, bob (the probe answered by the server)
    // and alice's phone.
    assert!(
        to_laptop.contains(&&laptop.clone().into()),
        "{}",
        got.describe()
    );
    assert!(
        to_laptop.contains(&&bob.clone().into()),
        "{}",
        got.describe()
    );
    assert!(
        to_laptop.contains(&&alice_phone.clone().into()),
        "{}",
        got.describe()
    );
    assert!(!to_laptop.contains(&&carol.into()), "{}", got.describe());
}

#[test]
fn presence_goes_only_to_contacts_who_are_subscribed_to_it() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    let bob = world.online("bob/phone", 0);
    // alice follows bob; bob does not follow alice.
    world.send(&alice, "<presence to='bob@localhost' type='subscribe'/>");
    world.send(&bob, "<presence to='alice@localhost' type='subscribed'/>");
    let got = world.send(&alice, "<presence><show>dnd</show></presence>");
    assert!(got.to(&bob).is_empty(), "{}", got.describe());
    let got = world.send(&bob, "<presence><show>chat</show></presence>");
    assert_eq!(from_of(got.only_to(&alice)), Some(&bob.into()));
}

#[test]
fn going_offline_is_broadcast_as_unavailable_to_subscribers_and_the_sender() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    let bob = world.online("bob/phone", 0);
    world.befriend(&alice, &bob);
    let got = world.send(&alice, "<presence type='unavailable'/>");
    assert_eq!(presence_type(got.only_to(&bob)), PresenceType::Unavailable);
    assert_eq!(
        presence_type(got.only_to(&alice)),
        PresenceType::Unavailable
    );
    // Still bound but unavailable: a closed connection has nothing more to tell.
    let got = world.unbind(&alice);
    assert!(got.is_empty(), "{}", got.describe());
    // A session that closes while available says goodbye to its contacts (and, as it goes, to
    // itself); alice is gone, so nobody else hears of it.
    let got = world.unbind(&bob);
    assert!(
        got.recipients().iter().all(|jid| **jid == bob),
        "alice is gone: {}",
        got.describe()
    );
    let alice = world.online("alice/phone", 0);
    let bob = world.online("bob/phone", 0);
    let got = world.unbind(&bob);
    let gone = got.only_to(&alice);
    assert_eq!(presence_type(gone), PresenceType::Unavailable);
    assert_eq!(from_of(gone), Some(&bob.into()));
}

#[test]
fn a_session_that_never_sent_presence_receives_no_broadcasts() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    let bob = world.online("bob/phone", 0);
    world.befriend(&alice, &bob);
    let silent = world.bind("bob/silent");
    let got = world.send(&alice, "<presence><show>away</show></presence>");
    assert!(got.to(&silent).is_empty(), "{}", got.describe());
}

#[test]
fn directed_presence_reaches_the_addressed_session_or_every_resource_of_the_account() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    let phone = world.online("bob/phone", 0);
    let laptop = world.online("bob/laptop", 0);
    let got = world.send(&alice, "<presence to='bob@localhost/phone'/>");
    assert_eq!(got.recipients(), [&phone], "{}", got.describe());
    let got = world.send(&alice, "<presence to='bob@localhost'/>");
    assert_eq!(got.to(&phone).len(), 1);
    assert_eq!(got.to(&laptop).len(), 1);
    // Probes from clients are not passed on: the server answers them itself.
    let got = world.send(&alice, "<presence to='bob@localhost' type='probe'/>");
    assert!(got.is_empty(), "{}", got.describe());
}

#[test]
fn a_subscription_request_and_its_approval_move_both_rosters_and_share_presence() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    let bob = world.online("bob/phone", 0);
    world.get_roster(&alice);
    world.get_roster(&bob);

    // alice asks: her roster shows bob as pending out; bob gets the request from her bare JID.
    let got = world.send(&alice, "<presence to='bob@localhost' type='subscribe'/>");
    let pushes = got.roster_pushes(&alice);
    assert_eq!(pushes.len(), 1, "{}", got.describe());
    assert_eq!(pushes[0].jid, bare("bob@localhost"));
    assert_eq!(pushes[0].subscription, WireSubscription::None);
    assert!(asks(&pushes[0]));
    let request = got.only_to(&bob);
    assert_eq!(presence_type(request), PresenceType::Subscribe);
    assert_eq!(from_of(request), Some(&bare("alice@localhost").into()));

    // bob approves: bob now has `from`, alice `to`; alice gets `subscribed` and bob's presence.
    let got = world.send(&bob, "<presence to='alice@localhost' type='subscribed'/>");
    let bobs = got.roster_pushes(&bob);
    assert_eq!(bobs.len(), 1, "{}", got.describe());
    assert_eq!(bobs[0].subscription, WireSubscription::From);
    let alices = got.roster_pushes(&alice);
    assert_eq!(alices.len(), 1, "{}", got.describe());
    assert_eq!(alices[0].subscription, WireSubscription::To);
    assert!(!asks(&alices[0]));
    let to_alice = got.to(&alice);
    assert!(to_alice
        .iter()
        .any(|s| matches!(s, tokio_xmpp::Stanza::Presence(p)
        if p.type_ == PresenceType::Subscribed)));
    assert!(to_alice
        .iter()
        .any(|s| matches!(s, tokio_xmpp::Stanza::Presence(p)
        if p.type_ == PresenceType::None && p.from == Some(bob.clone().into()))));

    // The other way round: both end at `both`.
    world.send(&bob, "<presence to='alice@localhost' type='subscribe'/>");
    let got = world.send(&alice, "<presence to='bob@localhost' type='subscribed'/>");
    assert_eq!(
        got.roster_pushes(&alice)[0].subscription,
        WireSubscription::Both
    );
    assert_eq!(
        got.roster_pushes(&bob)[0].subscription,
        WireSubscription::Both
    );
}

#[test]
fn approving_a_request_nobody_made_changes_nothing() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    let bob = world.online("bob/phone", 0);
    world.get_roster(&bob);
    // Pre-approval is not supported: bob's `subscribed` without alice's request is ignored.
    let got = world.send(&bob, "<presence to='alice@localhost' type='subscribed'/>");
    assert!(got.is_empty(), "{}", got.describe());
    let got = world.send(&alice, "<presence><show>away</show></presence>");
    assert!(got.to(&bob).is_empty(), "{}", got.describe());
}

#[test]
fn asking_again_after_approval_is_answered_at_once_on_the_contacts_behalf() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    let bob = world.online("bob/phone", 0);
    world.befriend(&alice, &bob);
    let got = world.send(&alice, "<presence to='bob@localhost' type='subscribe'/>");
    let answer = got.only_to(&alice);
    assert_eq!(presence_type(answer), PresenceType::Subscribed);
    assert_eq!(from_of(answer), Some(&bare("bob@localhost").into()));
    assert!(
        got.to(&bob).is_empty(),
        "bob is not asked again: {}",
        got.describe()
    );
}

#[test]
fn asking_a_local_account_that_does_not_exist_is_refused_on_its_behalf() {
    let mut world = World::with_accounts(&["alice"]);
    let alice = world.online("alice/phone", 0);
    let got = world.send(&alice, "<presence to='nobody@localhost' type='subscribe'/>");
    let refusal = got.only_to(&alice);
    assert_eq!(presence_type(refusal), PresenceType::Unsubscribed);
    assert_eq!(from_of(refusal), Some(&bare("nobody@localhost").into()));
}

#[test]
fn unsubscribing_ends_one_direction_and_the_contact_looks_unavailable() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    let bob = world.online("bob/phone", 0);
    world.befriend(&alice, &bob);
    world.get_roster(&alice);
    world.get_roster(&bob);
    let got = world.send(&alice, "<presence to='bob@localhost' type='unsubscribe'/>");
    assert_eq!(
        got.roster_pushes(&alice)[0].subscription,
        WireSubscription::From
    );
    assert_eq!(
        got.roster_pushes(&bob)[0].subscription,
        WireSubscription::To
    );
    assert!(got
        .to(&bob)
        .iter()
        .any(|s| matches!(s, tokio_xmpp::Stanza::Presence(p)
        if p.type_ == PresenceType::Unsubscribe)));
    assert!(got
        .to(&alice)
        .iter()
        .any(|s| matches!(s, tokio_xmpp::Stanza::Presence(p)
        if p.type_ == PresenceType::Unavailable && p.from == Some(bob.clone().into()))));
    // alice no longer sees bob's presence; bob still sees alice's.
    let got = world.send(&bob, "<presence><show>away</show></presence>");
    assert!(got.to(&alice).is_empty(), "{}", got.describe());
    let got = world.send(&alice, "<presence><show>away</show></presence>");
    assert_eq!(got.to(&bob).len(), 1, "{}", got.describe());
}

#[test]
fn cancelling_a_subscription_hides_the_user_from_the_former_subscriber() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    let bob = world.online("bob/phone", 0);
    world.befriend(&alice, &bob);
    world.get_roster(&alice);
    world.get_roster(&bob);
    // bob stops alice from seeing him.
    let got = world.send(&bob, "<presence to='alice@localhost' type='unsubscribed'/>");
    assert_eq!(
        got.roster_pushes(&bob)[0].subscription,
        WireSubscription::To
    );
    assert_eq!(
        got.roster_pushes(&alice)[0].subscription,
        WireSubscription::From
    );
    let to_alice = got.to(&alice);
    assert!(to_alice
        .iter()
        .any(|s| matches!(s, tokio_xmpp::Stanza::Presence(p)
        if p.type_ == PresenceType::Unsubscribed)));
    assert!(to_alice
        .iter()
        .any(|s| matches!(s, tokio_xmpp::Stanza::Presence(p)
        if p.type_ == PresenceType::Unavailable && p.from == Some(bob.clone().into()))));
    let got = world.send(&bob, "<presence><show>away</show></presence>");
    assert!(got.to(&alice).is_empty(), "{}", got.describe());
}

#[test]
fn a_request_made_while_the_contact_was_offline_is_delivered_when_they_come_online() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    let got = world.send(&alice, "<presence to='bob@localhost' type='subscribe'/>");
    assert!(got.is_empty(), "bob is offline: {}", got.describe());
    let bob = world.bind("bob/phone");
    let got = world.send(&bob, "<presence/>");
    let requests: Vec<_> = got
        .to(&bob)
        .into_iter()
        .filter(
            |s| matches!(s, tokio_xmpp::Stanza::Presence(p) if p.type_ == PresenceType::Subscribe),
        )
        .collect();
    assert_eq!(requests.len(), 1, "{}", got.describe());
    assert_eq!(from_of(requests[0]), Some(&bare("alice@localhost").into()));
}

#[test]
fn presence_to_another_domain_is_answered_with_remote_server_not_found() {
    let mut world = World::with_accounts(&["alice"]);
    let alice = world.online("alice/phone", 0);
    for stanza in [
        // Joining a room on a service that does not exist (XEP-0045 §7.2).
        "<presence to='room@conference.example.org/alice' id='join'>\
         <x xmlns='http://jabber.org/protocol/muc'/></presence>",
        "<presence to='room@conference.example.org/alice' type='unavailable' id='leave'/>",
        "<presence to='carol@example.org' id='directed'><show>away</show></presence>",
        "<presence to='example.org' type='probe' id='probe'/>",
        "<presence to='carol@example.org' type='subscribe' id='sub'/>",
        "<presence to='carol@example.org' type='unsubscribed' id='unsub'/>",
    ] {
        let got = world.send(&alice, stanza);
        let answer = got.only_to(&alice);
        assert_eq!(presence_type(answer), PresenceType::Error, "{stanza}");
        assert_eq!(
            error_condition(answer),
            Some(tokio_xmpp::parsers::stanza_error::DefinedCondition::RemoteServerNotFound),
            "{stanza}"
        );
        let parsed = super::super::testing::stanza(stanza);
        let sent = presence(&parsed);
        // The error comes back from where the stanza went, with its id.
        assert_eq!(presence(answer).id, sent.id, "{stanza}");
        assert_eq!(from_of(answer), sent.to.as_ref(), "{stanza}");
    }
}

#[test]
fn presence_errors_to_another_domain_are_not_answered() {
    let mut world = World::with_accounts(&["alice"]);
    let alice = world.online("alice/phone", 0);
    let got = world.send(
        &alice,
        "<presence to='room@conference.example.org' type='error'>\
         <error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
         </error></presence>",
    );
    assert!(got.is_empty(), "{}", got.describe());
}
