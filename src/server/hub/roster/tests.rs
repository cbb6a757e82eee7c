//! Roster: the wire form, and get/set/remove with their pushes, as deliveries.

use super::*;

fn item(jid: &str, subscription: WireSubscription) -> Item {
    Item {
        jid: BareJid::new(jid).unwrap(),
        name: None,
        subscription,
        ask: Ask::None,
        groups: Vec::new(),
        approved: None,
    }
}

#[test]
fn roster_query_writes_out_subscription_none() {
    let query = roster_query(vec![
        item("a@d", WireSubscription::None),
        item("b@d", WireSubscription::Both),
        item("c@d", WireSubscription::Remove),
    ]);
    let subscriptions: Vec<_> = query
        .children()
        .map(|item| item.attr("subscription"))
        .collect();
    assert_eq!(subscriptions, [Some("none"), Some("both"), Some("remove")]);
    // Still a valid roster.
    assert_eq!(Roster::try_from(query).unwrap().items.len(), 3);
}

mod deliveries {
    use tokio_xmpp::parsers::iq::Iq;
    use tokio_xmpp::parsers::roster::{Roster, Subscription as WireSubscription};
    use tokio_xmpp::parsers::stanza_error::DefinedCondition;

    use crate::server::hub::testing::*;

    fn roster_of(got: &Deliveries, to: &tokio_xmpp::jid::FullJid) -> Roster {
        match iq(got.only_to(to)) {
            Iq::Result {
                payload: Some(payload),
                from,
                ..
            } => {
                assert_eq!(*from, None, "roster results carry no from");
                Roster::try_from(payload.clone()).unwrap()
            }
            other => panic!("not a roster result: {other:?}"),
        }
    }

    const GET: &str = "<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>";

    #[test]
    fn adding_a_contact_is_pushed_to_interested_resources_only() {
        let mut world = World::with_accounts(&["alice", "bob"]);
        let phone = world.online("alice/phone", 0);
        let laptop = world.online("alice/laptop", 0);
        let quiet = world.online("alice/watch", 0);
        world.get_roster(&laptop);
        let got = world.send(
            &phone,
            "<iq type='set' id='a'><query xmlns='jabber:iq:roster'><item jid='bob@localhost' name='Bob'><group>Friends</group></item></query></iq>",
        );
        // The laptop asked for the roster and gets the push; the phone never asked and gets
        // only the result; the watch gets nothing.
        let pushes = got.roster_pushes(&laptop);
        assert_eq!(pushes.len(), 1, "{}", got.describe());
        assert_eq!(pushes[0].name.as_deref(), Some("Bob"));
        assert_eq!(pushes[0].subscription, WireSubscription::None);
        assert!(got.to(&quiet).is_empty(), "{}", got.describe());
        assert!(matches!(iq(got.only_to(&phone)), Iq::Result { .. }));
        // And the roster now holds bob.
        let got = world.send(&phone, GET);
        let roster = roster_of(&got, &phone);
        assert_eq!(roster.items.len(), 1);
        assert_eq!(roster.items[0].jid, bare("bob@localhost"));
        assert_eq!(roster.items[0].groups[0].0, "Friends");
    }

    #[test]
    fn removing_a_contact_ends_both_subscriptions() {
        let mut world = World::with_accounts(&["alice", "bob"]);
        let alice = world.online("alice/phone", 0);
        let bob = world.online("bob/phone", 0);
        world.befriend(&alice, &bob);
        world.get_roster(&alice);
        world.get_roster(&bob);
        let got = world.send(
            &alice,
            "<iq type='set' id='x'><query xmlns='jabber:iq:roster'><item jid='bob@localhost' subscription='remove'/></query></iq>",
        );
        let pushes = got.roster_pushes(&alice);
        assert_eq!(
            pushes.last().unwrap().subscription,
            WireSubscription::Remove,
            "{}",
            got.describe()
        );
        assert_eq!(
            got.roster_pushes(&bob).last().unwrap().subscription,
            WireSubscription::None
        );
        let got = world.send(&alice, GET);
        assert!(roster_of(&got, &alice).items.is_empty());
        // Neither sees the other's presence any more.
        let got = world.send(&bob, "<presence><show>away</show></presence>");
        assert!(got.to(&alice).is_empty(), "{}", got.describe());
    }

    #[test]
    fn removing_an_unknown_contact_and_malformed_sets_are_refused() {
        let mut world = World::with_accounts(&["alice"]);
        let alice = world.online("alice/phone", 0);
        for (query, condition) in [
            (
                "<query xmlns='jabber:iq:roster'><item jid='zed@localhost' subscription='remove'/></query>",
                DefinedCondition::ItemNotFound,
            ),
            ("<query xmlns='jabber:iq:roster'/>", DefinedCondition::BadRequest),
            (
                "<query xmlns='jabber:iq:roster'><item jid='a@localhost'/><item jid='b@localhost'/></query>",
                DefinedCondition::BadRequest,
            ),
        ] {
            let got = world.send(&alice, &format!("<iq type='set' id='x'>{query}</iq>"));
            assert_eq!(error_condition(got.only_to(&alice)), Some(condition), "{query}");
        }
    }

    #[test]
    fn a_request_from_a_stranger_is_not_a_roster_item_until_answered() {
        let mut world = World::with_accounts(&["alice", "bob"]);
        let alice = world.online("alice/phone", 0);
        let bob = world.online("bob/phone", 0);
        world.send(&bob, "<presence to='alice@localhost' type='subscribe'/>");
        let got = world.send(&alice, GET);
        assert!(roster_of(&got, &alice).items.is_empty());
    }
}
