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
    let query = roster_query(
        None,
        vec![
            item("a@d", WireSubscription::None),
            item("b@d", WireSubscription::Both),
            item("c@d", WireSubscription::Remove),
        ],
    );
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

/// Roster versioning (RFC 6121 §2.6) as deliveries.
mod versions {
    use tokio_xmpp::jid::FullJid;
    use tokio_xmpp::parsers::iq::Iq;
    use tokio_xmpp::parsers::roster::{Roster, Subscription as WireSubscription};

    use crate::server::hub::service::stream_features;
    use crate::server::hub::testing::*;

    /// A roster get with `ver` (none: the attribute left out).
    fn get(ver: Option<&str>) -> String {
        let ver = ver.map_or(String::new(), |ver| format!(" ver='{ver}'"));
        format!("<iq type='get' id='r'><query xmlns='jabber:iq:roster'{ver}/></iq>")
    }

    /// The result `to` got: the roster, or `None` for an empty result.
    fn result(got: &Deliveries, to: &FullJid) -> Option<Roster> {
        match iq(got.only_to(to)) {
            Iq::Result { payload, id, .. } => {
                assert_eq!(id, "r");
                payload.clone().map(|p| Roster::try_from(p).unwrap())
            }
            other => panic!("not a result: {other:?}"),
        }
    }

    /// The `ver` of every roster push to `to`, in order.
    fn push_vers(got: &Deliveries, to: &FullJid) -> Vec<Option<String>> {
        got.to(to)
            .into_iter()
            .filter_map(|stanza| match stanza {
                tokio_xmpp::Stanza::Iq(Iq::Set { payload, .. }) => {
                    Roster::try_from(payload.clone()).ok().map(|r| r.ver)
                }
                _ => None,
            })
            .collect()
    }

    /// The current ver of `who`'s roster, as a full get answers it.
    fn current_ver(world: &mut World, who: &FullJid) -> String {
        let got = world.send(who, &get(Some("")));
        result(&got, who).and_then(|r| r.ver).expect("a ver")
    }

    #[test]
    fn the_server_offers_roster_versioning_in_its_stream_features() {
        let features = stream_features(crate::server::hub::registry::SERVICES);
        assert!(
            features
                .iter()
                .any(|f| f.is("ver", "urn:xmpp:features:rosterver") && f.children().count() == 0),
            "{features:?}"
        );
    }

    #[test]
    fn a_get_with_the_current_ver_gets_an_empty_result_and_any_other_the_whole_roster() {
        let mut world = World::with_accounts(&["alice", "bob"]);
        let alice = world.online("alice/phone", 0);
        // A client without a cache sends an empty ver (§2.6.2): the whole (empty) roster.
        let got = world.send(&alice, &get(Some("")));
        let empty = result(&got, &alice).expect("the roster");
        assert!(empty.items.is_empty());
        let v0 = empty.ver.expect("a ver");
        assert!(!v0.is_empty());
        // Nothing changed: an empty result.
        let got = world.send(&alice, &get(Some(&v0)));
        assert!(result(&got, &alice).is_none(), "{}", got.describe());

        // A change: the push carries the new ver, and the old one now gets everything.
        let got = world.send(
            &alice,
            "<iq type='set' id='a'><query xmlns='jabber:iq:roster'><item jid='bob@localhost' name='Bob'/></query></iq>",
        );
        let pushed = push_vers(&got, &alice);
        let [Some(v1)] = pushed.as_slice() else {
            panic!("one push with a ver: {}", got.describe());
        };
        let v1 = v1.clone();
        assert_ne!(v1, v0);
        let got = world.send(&alice, &get(Some(&v0)));
        let roster = result(&got, &alice).expect("the whole roster");
        assert_eq!(roster.ver.as_deref(), Some(v1.as_str()));
        assert_eq!(roster.items.len(), 1);
        assert_eq!(roster.items[0].name.as_deref(), Some("Bob"));
        let got = world.send(&alice, &get(Some(&v1)));
        assert!(result(&got, &alice).is_none(), "{}", got.describe());

        // A ver the server never gave, and a get without a ver, get the whole roster.
        for ver in [
            Some("garbage"),
            Some("0"),
            Some(&format!("{v1}0")[..]),
            None,
        ] {
            let got = world.send(&alice, &get(ver));
            let roster = result(&got, &alice).expect("the whole roster");
            assert_eq!(roster.items.len(), 1, "{ver:?}");
            assert_eq!(roster.ver.as_deref(), Some(v1.as_str()), "{ver:?}");
        }
        // Vers are per account: alice's current ver is not bob's.
        let bob = world.online("bob/phone", 0);
        let got = world.send(&bob, &get(Some(&v1)));
        assert!(result(&got, &bob).is_some_and(|r| r.items.is_empty()));
    }

    #[test]
    fn every_roster_change_is_pushed_with_a_new_ver_and_the_last_one_is_current() {
        let mut world = World::with_accounts(&["alice", "bob"]);
        let alice = world.online("alice/phone", 0);
        let bob = world.online("bob/phone", 0);
        world.get_roster(&alice);
        world.get_roster(&bob);
        let mut alice_vers = vec![current_ver(&mut world, &alice)];
        let mut bob_vers = vec![current_ver(&mut world, &bob)];
        let mut record = |got: &Deliveries| {
            alice_vers.extend(push_vers(got, &alice).into_iter().map(|v| v.expect("ver")));
            bob_vers.extend(push_vers(got, &bob).into_iter().map(|v| v.expect("ver")));
        };
        // Add, update, each step of a mutual subscription, and removal.
        for (from, xml) in [
            (&alice, "<iq type='set' id='a'><query xmlns='jabber:iq:roster'><item jid='bob@localhost'/></query></iq>"),
            (&alice, "<iq type='set' id='a'><query xmlns='jabber:iq:roster'><item jid='bob@localhost' name='Bob'><group>G</group></item></query></iq>"),
            (&alice, "<presence to='bob@localhost' type='subscribe'/>"),
            (&bob, "<presence to='alice@localhost' type='subscribed'/>"),
            (&bob, "<presence to='alice@localhost' type='subscribe'/>"),
            (&alice, "<presence to='bob@localhost' type='subscribed'/>"),
            (&bob, "<presence to='alice@localhost' type='unsubscribe'/>"),
            (&alice, "<iq type='set' id='a'><query xmlns='jabber:iq:roster'><item jid='bob@localhost' subscription='remove'/></query></iq>"),
        ] {
            let got = world.send(from, xml);
            record(&got);
        }
        for (who, vers, pushes) in [(&alice, &alice_vers, 7), (&bob, &bob_vers, 4)] {
            // Every push carried a ver never seen before.
            let mut distinct = vers.clone();
            distinct.sort();
            distinct.dedup();
            assert_eq!(distinct.len(), vers.len(), "{who}: {vers:?}");
            assert!(vers.len() > pushes, "{who}: {vers:?}");
            // The last one is current: a client that applied the pushes has nothing to fetch.
            let got = world.send(who, &get(vers.last().map(String::as_str)));
            assert!(result(&got, who).is_none(), "{who}: {}", got.describe());
        }
        // And what alice's last push said is what a fresh fetch says.
        let got = world.send(&alice, &get(None));
        assert!(result(&got, &alice).unwrap().items.is_empty());
        let got = world.send(&bob, &get(None));
        let roster = result(&got, &bob).unwrap();
        assert_eq!(roster.items[0].subscription, WireSubscription::None);
    }

    #[test]
    fn a_change_no_client_sees_takes_a_new_ver_and_the_next_get_fetches_all() {
        let mut world = World::with_accounts(&["alice", "bob"]);
        let alice = world.online("alice/phone", 0);
        let bob = world.online("bob/phone", 0);
        let before = current_ver(&mut world, &alice);
        // bob's request is stored with alice's roster but is not a roster item: no push.
        let got = world.send(&bob, "<presence to='alice@localhost' type='subscribe'/>");
        assert!(push_vers(&got, &alice).is_empty(), "{}", got.describe());
        let got = world.send(&alice, &get(Some(&before)));
        let roster = result(&got, &alice).expect("the whole roster");
        assert!(roster.items.is_empty());
        assert_ne!(roster.ver.as_deref(), Some(before.as_str()));
    }
}
