//! Blocking (XEP-0191) as deliveries: the list, its pushes, and what a block keeps out.

use tokio_xmpp::jid::FullJid;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::presence::Type as PresenceType;
use tokio_xmpp::parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};
use tokio_xmpp::Stanza;

use super::super::testing::*;
use crate::server::limits::ServerLimits;

const GET: &str = "<iq type='get' id='list'><blocklist xmlns='urn:xmpp:blocking'/></iq>";

fn block(jids: &[&str]) -> String {
    let items: String = jids.iter().map(|j| format!("<item jid='{j}'/>")).collect();
    format!("<iq type='set' id='b'><block xmlns='urn:xmpp:blocking'>{items}</block></iq>")
}

fn unblock(jids: &[&str]) -> String {
    let items: String = jids.iter().map(|j| format!("<item jid='{j}'/>")).collect();
    format!("<iq type='set' id='u'><unblock xmlns='urn:xmpp:blocking'>{items}</unblock></iq>")
}

/// The JIDs in a `<blocklist/>`, `<block/>` or `<unblock/>` element.
fn jids(list: &Element) -> Vec<String> {
    list.children()
        .filter_map(|item| item.attr("jid").map(str::to_string))
        .collect()
}

/// The block list `who` gets back for a get.
fn list(world: &mut World, who: &FullJid) -> Vec<String> {
    let got = world.send(who, GET);
    match iq(got.only_to(who)) {
        Iq::Result {
            payload: Some(list),
            ..
        } if list.is("blocklist", ns::BLOCKING) => jids(list),
        other => panic!("not a block list: {other:?}"),
    }
}

/// The result (`Ok`) or error condition of the one IQ answer for `who`.
fn answer(got: &Deliveries, who: &FullJid) -> Result<(), DefinedCondition> {
    let answers: Vec<&Stanza> = got
        .to(who)
        .into_iter()
        .filter(|s| matches!(s, Stanza::Iq(Iq::Result { .. } | Iq::Error { .. })))
        .collect();
    assert_eq!(answers.len(), 1, "one answer in {}", got.describe());
    match iq(answers[0]) {
        Iq::Result { .. } => Ok(()),
        Iq::Error { error, .. } => Err(error.defined_condition.clone()),
        _ => unreachable!(),
    }
}

/// The pushes (`<block/>` or `<unblock/>` sets) `who` gets.
fn pushes(got: &Deliveries, who: &FullJid) -> Vec<Element> {
    got.to(who)
        .into_iter()
        .filter_map(|s| match s {
            Stanza::Iq(Iq::Set { payload, .. }) if payload.ns() == ns::BLOCKING => {
                Some(payload.clone())
            }
            _ => None,
        })
        .collect()
}

/// The stanza error carried by an error message or IQ.
fn stanza_error(stanza: &Stanza) -> StanzaError {
    match stanza {
        Stanza::Iq(Iq::Error { error, .. }) => error.clone(),
        Stanza::Message(m) => m
            .payloads
            .iter()
            .find_map(|p| StanzaError::try_from(p.clone()).ok())
            .expect("an error"),
        other => panic!("not an error: {}", xml(other)),
    }
}

fn chat(to: &str, text: &str) -> String {
    format!("<message to='{to}' type='chat' id='m'><body>{text}</body></message>")
}

#[test]
fn a_user_blocks_and_unblocks_and_the_list_says_so() {
    let mut world = World::with_accounts(&["alice"]);
    let alice = world.online("alice/phone", 0);
    assert!(list(&mut world, &alice).is_empty());
    let got = world.send(
        &alice,
        &block(&["Eve@Localhost", "spam.example", "mallory@localhost/x"]),
    );
    assert_eq!(answer(&got, &alice), Ok(()));
    // Normalised as JIDs are, sorted.
    assert_eq!(
        list(&mut world, &alice),
        ["eve@localhost", "mallory@localhost/x", "spam.example"]
    );
    let got = world.send(&alice, &unblock(&["spam.example", "nobody@localhost"]));
    assert_eq!(answer(&got, &alice), Ok(()));
    assert_eq!(
        list(&mut world, &alice),
        ["eve@localhost", "mallory@localhost/x"]
    );
    // No items: unblock everything (§3.4).
    let got = world.send(&alice, &unblock(&[]));
    assert_eq!(answer(&got, &alice), Ok(()));
    assert!(list(&mut world, &alice).is_empty());
    assert!(world.hub.store().blocklist("alice").unwrap().is_empty());
}

#[test]
fn the_list_is_kept_on_disk_as_it_changes() {
    let mut world = World::with_accounts(&["alice"]);
    let alice = world.online("alice/phone", 0);
    world.send(&alice, &block(&["eve@localhost", "b@localhost"]));
    world.send(&alice, &unblock(&["b@localhost"]));
    assert_eq!(
        world.hub.store().blocklist("alice").unwrap(),
        ["eve@localhost"]
    );
}

#[test]
fn an_empty_block_a_missing_jid_and_a_malformed_jid_block_nothing() {
    let mut world = World::with_accounts(&["alice"]);
    let alice = world.online("alice/phone", 0);
    let cases = [
        (block(&[]), DefinedCondition::BadRequest),
        (
            "<iq type='set' id='b'><block xmlns='urn:xmpp:blocking'><item/></block></iq>".into(),
            DefinedCondition::BadRequest,
        ),
        (
            block(&["ok@localhost", "@localhost"]),
            DefinedCondition::JidMalformed,
        ),
        (
            block(&["ok@localhost", "a@b@c"]),
            DefinedCondition::JidMalformed,
        ),
        (
            unblock(&["ok@localhost", "/nothing"]),
            DefinedCondition::JidMalformed,
        ),
    ];
    for (request, condition) in cases {
        let got = world.send(&alice, &request);
        assert_eq!(answer(&got, &alice), Err(condition), "{request}");
    }
    assert!(list(&mut world, &alice).is_empty());
}

#[test]
fn every_resource_that_fetched_the_list_gets_each_change_pushed() {
    let mut world = World::with_accounts(&["alice"]);
    let phone = world.online("alice/phone", 0);
    let laptop = world.online("alice/laptop", 0);
    let watch = world.online("alice/watch", 0);
    list(&mut world, &phone);
    list(&mut world, &laptop);
    let got = world.send(&phone, &block(&["eve@localhost"]));
    for interested in [&phone, &laptop] {
        let pushed = pushes(&got, interested);
        assert_eq!(pushed.len(), 1, "{}", got.describe());
        assert!(pushed[0].is("block", ns::BLOCKING));
        assert_eq!(jids(&pushed[0]), ["eve@localhost"]);
    }
    assert!(pushes(&got, &watch).is_empty(), "{}", got.describe());
    let got = world.send(&laptop, &unblock(&[]));
    let pushed = pushes(&got, &phone);
    assert!(pushed[0].is("unblock", ns::BLOCKING));
    assert!(jids(&pushed[0]).is_empty());
    // A failed request pushes nothing.
    let got = world.send(&laptop, &block(&[]));
    assert!(pushes(&got, &phone).is_empty());
}

#[test]
fn a_blocked_contacts_message_never_arrives_and_is_not_stored_offline() {
    let mut world = World::with_accounts(&["alice", "eve"]);
    let alice = world.online("alice/phone", 0);
    let eve = world.online("eve/x", 0);
    world.send(&alice, &block(&["eve@localhost"]));
    // To the bare JID and to the full JID alike: eve gets service-unavailable (§3.5).
    for to in ["alice@localhost", "alice@localhost/phone"] {
        let got = world.send(&eve, &chat(to, "hello?"));
        assert!(got.to(&alice).is_empty(), "{}", got.describe());
        let error = stanza_error(got.only_to(&eve));
        assert_eq!(
            error.defined_condition,
            DefinedCondition::ServiceUnavailable
        );
    }
    // Headlines and errors from eve vanish without an answer.
    let got = world.send(
        &eve,
        "<message to='alice@localhost' type='headline'><body>ad</body></message>",
    );
    assert!(got.is_empty(), "{}", got.describe());
    world.unbind(&alice);
    let got = world.send(&eve, &chat("alice@localhost", "while you were out"));
    assert_eq!(
        error_condition(got.only_to(&eve)),
        Some(DefinedCondition::ServiceUnavailable)
    );
    assert!(world
        .hub
        .store()
        .offline_messages("alice")
        .unwrap()
        .is_empty());
}

#[test]
fn a_message_to_a_blocked_jid_is_refused_with_the_blocked_condition() {
    let mut world = World::with_accounts(&["alice", "eve"]);
    let alice = world.online("alice/phone", 0);
    let eve = world.online("eve/x", 0);
    world.send(&alice, &block(&["eve@localhost"]));
    let got = world.send(&alice, &chat("eve@localhost", "go away"));
    assert!(got.to(&eve).is_empty(), "{}", got.describe());
    let reply = got.only_to(&alice);
    assert_eq!(from_of(reply), Some(&bare("eve@localhost").into()));
    let error = stanza_error(reply);
    assert_eq!(error.defined_condition, DefinedCondition::NotAcceptable);
    assert_eq!(error.type_, ErrorType::Cancel);
    let blocked = error.other.expect("an application condition");
    assert!(blocked.is("blocked", ns::BLOCKING_ERRORS));
    // An IQ request too (§3.6); an IQ result is dropped.
    let got = world.send(
        &alice,
        "<iq to='eve@localhost/x' type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>",
    );
    assert_eq!(answer(&got, &alice), Err(DefinedCondition::NotAcceptable));
    let got = world.send(&alice, "<iq to='eve@localhost/x' type='result' id='p'/>");
    assert!(got.is_empty(), "{}", got.describe());
}

#[test]
fn a_blocked_contacts_requests_get_service_unavailable_and_its_results_are_dropped() {
    let mut world = World::with_accounts(&["alice", "eve"]);
    let alice = world.online("alice/phone", 0);
    let eve = world.online("eve/x", 0);
    world.send(&alice, &block(&["eve@localhost"]));
    for to in ["alice@localhost", "alice@localhost/phone"] {
        let got = world.send(
            &eve,
            &format!("<iq to='{to}' type='get' id='d'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"),
        );
        assert!(got.to(&alice).is_empty());
        assert_eq!(
            answer(&got, &eve),
            Err(DefinedCondition::ServiceUnavailable)
        );
    }
    let got = world.send(
        &eve,
        "<iq to='alice@localhost/phone' type='result' id='d'/>",
    );
    assert!(got.is_empty(), "{}", got.describe());
}

#[test]
fn a_bare_item_blocks_every_resource_a_full_item_one_and_a_domain_item_the_whole_domain() {
    let mut world = World::with_accounts(&["alice", "bob", "carol"]);
    let alice = world.online("alice/phone", 0);
    let bob_phone = world.online("bob/phone", 0);
    let bob_laptop = world.online("bob/laptop", 0);
    let carol = world.online("carol/x", 0);
    world.send(&alice, &block(&["bob@localhost/phone"]));
    let got = world.send(&bob_phone, &chat("alice@localhost", "from the phone"));
    assert!(got.to(&alice).is_empty());
    let got = world.send(&bob_laptop, &chat("alice@localhost", "from the laptop"));
    assert_eq!(body(got.only_to(&alice)), Some("from the laptop"));

    world.send(&alice, &unblock(&[]));
    world.send(&alice, &block(&["bob@localhost"]));
    for bob in [&bob_phone, &bob_laptop] {
        let got = world.send(bob, &chat("alice@localhost", "any resource"));
        assert!(got.to(&alice).is_empty(), "{}", got.describe());
    }
    let got = world.send(&carol, &chat("alice@localhost", "not blocked"));
    assert_eq!(body(got.only_to(&alice)), Some("not blocked"));

    // The domain: every account at it, but never the server itself.
    world.send(&alice, &block(&["localhost"]));
    let got = world.send(&carol, &chat("alice@localhost", "now blocked"));
    assert!(got.to(&alice).is_empty(), "{}", got.describe());
    let got = world.send(
        &alice,
        "<iq to='localhost' type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>",
    );
    assert_eq!(answer(&got, &alice), Ok(()));
    // And the list itself still answers.
    assert_eq!(list(&mut world, &alice), ["bob@localhost", "localhost"]);
}

#[test]
fn blocking_a_contact_sends_unavailable_both_ways_and_then_cuts_presence() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    let bob = world.online("bob/laptop", 0);
    world.befriend(&alice, &bob);
    let got = world.send(&alice, &block(&["bob@localhost"]));
    // §3.3: bob sees alice go away; alice sees bob go away, as his presence no longer comes.
    let to_bob = got.only_to(&bob);
    assert_eq!(presence_type(to_bob), PresenceType::Unavailable);
    assert_eq!(from_of(to_bob), Some(&alice.clone().into()));
    let to_alice: Vec<&Stanza> = got
        .to(&alice)
        .into_iter()
        .filter(|s| matches!(s, Stanza::Presence(_)))
        .collect();
    assert_eq!(to_alice.len(), 1, "{}", got.describe());
    assert_eq!(presence_type(to_alice[0]), PresenceType::Unavailable);
    assert_eq!(from_of(to_alice[0]), Some(&bob.clone().into()));

    // Broadcasts no longer cross, either way.
    let got = world.send(&bob, "<presence><show>chat</show></presence>");
    assert!(got.to(&alice).is_empty(), "{}", got.describe());
    let got = world.send(&alice, "<presence><show>away</show></presence>");
    assert!(got.to(&bob).is_empty(), "{}", got.describe());
    // Nor do directed presence and subscription requests (dropped, no error).
    let got = world.send(&bob, "<presence to='alice@localhost/phone'/>");
    assert!(got.is_empty(), "{}", got.describe());
    let got = world.send(&bob, "<presence to='alice@localhost' type='unsubscribe'/>");
    assert!(got.is_empty(), "{}", got.describe());
    // A new session of bob's is not told alice's presence (the probe is not answered).
    let phone = world.bind("bob/phone");
    let got = world.send(&phone, "<presence/>");
    assert!(
        got.0
            .iter()
            .all(|d| !format!("{d:?}").contains("alice@localhost/phone")),
        "{}",
        got.describe()
    );
}

#[test]
fn unblocking_a_contact_sends_the_current_presence_again_both_ways() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    let bob = world.online("bob/laptop", 0);
    world.befriend(&alice, &bob);
    world.send(&alice, &block(&["bob@localhost"]));
    world.send(&alice, "<presence><show>dnd</show></presence>");
    let got = world.send(&alice, &unblock(&["bob@localhost"]));
    let to_bob = got.only_to(&bob);
    assert_eq!(from_of(to_bob), Some(&alice.clone().into()));
    assert_eq!(presence_type(to_bob), PresenceType::None);
    assert!(xml(to_bob).contains("dnd"), "{}", xml(to_bob));
    let back: Vec<&Stanza> = got
        .to(&alice)
        .into_iter()
        .filter(|s| matches!(s, Stanza::Presence(_)))
        .collect();
    assert_eq!(back.len(), 1, "{}", got.describe());
    assert_eq!(from_of(back[0]), Some(&bob.clone().into()));
    // And broadcasts flow again.
    let got = world.send(&bob, "<presence><show>chat</show></presence>");
    assert_eq!(got.to(&alice).len(), 1, "{}", got.describe());
}

#[test]
fn unblocking_one_item_while_another_still_matches_sends_no_presence() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    let bob = world.online("bob/laptop", 0);
    world.befriend(&alice, &bob);
    world.send(&alice, &block(&["bob@localhost", "localhost"]));
    let got = world.send(&alice, &unblock(&["bob@localhost"]));
    assert!(got.to(&bob).is_empty(), "{}", got.describe());
}

#[test]
fn a_blocked_contacts_pending_subscription_request_is_not_delivered_again_at_login() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    let bob = world.online("bob/x", 0);
    let requests = |got: &Deliveries, to: &FullJid| {
        got.to(to)
            .into_iter()
            .filter(|s| matches!(s, Stanza::Presence(p) if p.type_ == PresenceType::Subscribe))
            .count()
    };
    world.send(&bob, "<presence to='alice@localhost' type='subscribe'/>");
    // Before the block, a new session of alice's is told of the pending request again.
    let tablet = world.bind("alice/tablet");
    let got = world.send(&tablet, "<presence/>");
    assert_eq!(requests(&got, &tablet), 1, "{}", got.describe());
    world.send(&alice, &block(&["bob@localhost"]));
    let laptop = world.bind("alice/laptop");
    let got = world.send(&laptop, "<presence/>");
    assert_eq!(requests(&got, &laptop), 0, "{}", got.describe());
}

#[test]
fn a_contact_that_blocks_the_user_is_cut_off_too() {
    // The other direction: bob blocks alice; alice's messages bounce as if bob were absent.
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    let bob = world.online("bob/laptop", 0);
    world.befriend(&alice, &bob);
    world.send(&bob, &block(&["alice@localhost"]));
    let got = world.send(&alice, &chat("bob@localhost", "hi"));
    assert!(got.to(&bob).is_empty());
    assert_eq!(
        error_condition(got.only_to(&alice)),
        Some(DefinedCondition::ServiceUnavailable)
    );
    let got = world.send(&alice, "<presence><show>xa</show></presence>");
    assert!(got.to(&bob).is_empty(), "{}", got.describe());
}

#[test]
fn a_block_past_the_limit_is_refused_whole() {
    let mut world = World::with_accounts(&["alice"]);
    world.hub.start(&ServerLimits {
        max_blocklist: 3,
        ..ServerLimits::default()
    });
    let alice = world.online("alice/phone", 0);
    let got = world.send(&alice, &block(&["a@x", "b@x"]));
    assert_eq!(answer(&got, &alice), Ok(()));
    // Blocking what is already there costs nothing.
    let got = world.send(&alice, &block(&["a@x", "b@x", "c@x"]));
    assert_eq!(answer(&got, &alice), Ok(()));
    let got = world.send(&alice, &block(&["d@x", "e@x"]));
    assert_eq!(answer(&got, &alice), Err(DefinedCondition::PolicyViolation));
    assert_eq!(list(&mut world, &alice), ["a@x", "b@x", "c@x"]);
    assert_eq!(world.hub.store().blocklist("alice").unwrap().len(), 3);
}

#[test]
fn hostile_a_block_of_thousands_of_items_in_one_request_is_refused_and_stores_nothing() {
    let mut world = World::with_accounts(&["alice"]);
    let alice = world.online("alice/phone", 0);
    let many: Vec<String> = (0..4000)
        .map(|i| format!("spammer{i}@example.org"))
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let got = world.send(&alice, &block(&many));
    assert_eq!(answer(&got, &alice), Err(DefinedCondition::PolicyViolation));
    assert!(world.hub.store().blocklist("alice").unwrap().is_empty());
    // Up to the limit, it is taken at once.
    let got = world.send(&alice, &block(&many[..1000]));
    assert_eq!(answer(&got, &alice), Ok(()));
    assert_eq!(world.hub.store().blocklist("alice").unwrap().len(), 1000);
}

#[test]
fn hostile_iq_results_and_errors_about_the_block_list_are_never_answered() {
    let mut world = World::with_accounts(&["alice"]);
    let alice = world.online("alice/phone", 0);
    let error = "<error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>";
    for (kind, extra) in [("result", ""), ("error", error)] {
        let got = world.send(
            &alice,
            &format!("<iq type='{kind}' id='x'><block xmlns='urn:xmpp:blocking'><item jid='a@x'/></block>{extra}</iq>"),
        );
        assert!(got.is_empty(), "{kind}: {}", got.describe());
    }
    assert!(list(&mut world, &alice).is_empty());
}

#[test]
fn hostile_another_accounts_list_can_be_neither_read_nor_changed() {
    let mut world = World::with_accounts(&["alice", "bob"]);
    let alice = world.online("alice/phone", 0);
    let bob = world.online("bob/x", 0);
    world.send(&bob, &block(&["eve@localhost"]));
    for request in [GET.to_string(), block(&["carol@localhost"]), unblock(&[])] {
        let request = request.replacen("<iq ", "<iq to='bob@localhost' ", 1);
        let got = world.send(&alice, &request);
        assert_eq!(
            answer(&got, &alice),
            Err(DefinedCondition::ServiceUnavailable)
        );
    }
    assert_eq!(list(&mut world, &bob), ["eve@localhost"]);
}

#[test]
fn a_request_sent_to_the_server_is_about_the_senders_own_list() {
    let mut world = World::with_accounts(&["alice"]);
    let alice = world.online("alice/phone", 0);
    let got = world.send(
        &alice,
        &block(&["eve@localhost"]).replacen("<iq ", "<iq to='localhost' ", 1),
    );
    assert_eq!(answer(&got, &alice), Ok(()));
    assert_eq!(list(&mut world, &alice), ["eve@localhost"]);
}

#[test]
fn blocking_an_address_at_a_component_keeps_its_stanzas_out() {
    let mut world = World::with_accounts(&["alice"]);
    world.component("gateway.localhost");
    let alice = world.online("alice/phone", 0);
    world.send(&alice, &block(&["spam@gateway.localhost"]));
    let got = world.component_sends(
        "gateway.localhost",
        "<message from='spam@gateway.localhost' to='alice@localhost' type='chat'><body>buy</body></message>",
    );
    assert!(got.to(&alice).is_empty(), "{}", got.describe());
    assert_eq!(got.to_component("gateway.localhost").len(), 1);
    let got = world.component_sends(
        "gateway.localhost",
        "<message from='friend@gateway.localhost' to='alice@localhost' type='chat'><body>hi</body></message>",
    );
    assert_eq!(body(got.only_to(&alice)), Some("hi"));
    // And alice's own message to it is refused before it reaches the component.
    let got = world.send(&alice, &chat("spam@gateway.localhost", "stop"));
    assert!(got.to_component("gateway.localhost").is_empty());
    assert_eq!(
        error_condition(got.only_to(&alice)),
        Some(DefinedCondition::NotAcceptable)
    );
}

#[test]
fn a_list_cached_before_the_account_was_created_again_is_read_anew_at_login() {
    let mut world = World::with_accounts(&["alice", "eve"]);
    let alice = world.online("alice/phone", 0);
    world.send(&alice, &block(&["eve@localhost"]));
    world.unbind(&alice);
    // Another process deletes and re-creates the account while the server runs.
    world.hub.store().delete_account("alice").unwrap();
    let keys = crate::server::sasl::ScramKeys {
        salt: vec![1; 16],
        iterations: 4096,
        stored_key: vec![2; 20],
        server_key: vec![3; 20],
    };
    world
        .hub
        .store()
        .create_account("alice", &keys, &keys)
        .unwrap();
    let alice = world.online("alice/phone", 0);
    let eve = world.online("eve/x", 0);
    let got = world.send(&eve, &chat("alice@localhost", "hello, new alice"));
    assert_eq!(body(got.only_to(&alice)), Some("hello, new alice"));
}
