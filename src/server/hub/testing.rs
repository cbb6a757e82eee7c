//! Transcripts for the hub's unit tests: a hub on an in-memory store, sessions bound by name,
//! stanzas written as XML, and questions about the deliveries that come back, so that a test
//! reads as "alice sends …, bob gets …".
//!
//! ```text
//! let mut world = World::with_accounts(&["alice", "bob"]);
//! let alice = world.online("alice/phone", 0);
//! let bob = world.online("bob/laptop", 0);
//! let got = world.send(&alice, "<message to='bob@localhost' type='chat'><body>hi</body></message>");
//! assert_eq!(body(got.only_to(&bob)), Some("hi"));
//! ```

use tokio_xmpp::jid::{BareJid, FullJid, Jid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::Message;
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::parsers::roster::{Ask, Item, Roster};
use tokio_xmpp::parsers::stanza_error::{DefinedCondition, StanzaError};
use tokio_xmpp::Stanza;

use super::{Delivery, Hub};
use crate::server::sasl::ScramKeys;
use crate::server::store::Store;

/// The domain every test hub serves.
pub const DOMAIN: &str = "localhost";

/// A hub and the sessions bound on it.
pub struct World {
    /// The hub under test.
    pub hub: Hub,
}

impl World {
    /// A hub for [`DOMAIN`] on a fresh in-memory store holding these accounts.
    pub fn with_accounts(accounts: &[&str]) -> Self {
        let store = Store::open_in_memory().expect("an in-memory store");
        // The hub never looks at credentials: any verifier will do.
        let keys = ScramKeys {
            salt: vec![1; 16],
            iterations: 4096,
            stored_key: vec![2; 20],
            server_key: vec![3; 20],
        };
        for account in accounts {
            store
                .create_account(account, &keys, &keys)
                .expect("a new account");
        }
        Self {
            hub: Hub::new(DOMAIN, store, super::registry::SERVICES).expect("a valid domain"),
        }
    }

    /// Binds `who` (`"alice/phone"`), which has not sent presence yet.
    pub fn bind(&mut self, who: &str) -> FullJid {
        let (user, resource) = who.split_once('/').expect("user/resource");
        let (jid, _) = self
            .hub
            .bind(user, Some(resource))
            .expect("a valid resource");
        jid
    }

    /// Binds `who` and sends its initial presence with `priority`; what that delivers is
    /// dropped.
    pub fn online(&mut self, who: &str, priority: i8) -> FullJid {
        let jid = self.bind(who);
        self.send(
            &jid,
            &format!("<presence><priority>{priority}</priority></presence>"),
        );
        jid
    }

    /// `from` sends `xml`, a stanza written without its namespace (`jabber:client` is added).
    pub fn send(&mut self, from: &FullJid, xml: &str) -> Deliveries {
        Deliveries(self.hub.inbound(from, stanza(xml)))
    }

    /// `jid`'s connection ends.
    pub fn unbind(&mut self, jid: &FullJid) -> Deliveries {
        Deliveries(self.hub.unbind(jid))
    }

    /// The hub also serves the external component `domain` (XEP-0114), which is connected.
    pub fn component(&mut self, domain: &str) {
        let domain = bare(domain);
        assert!(self.hub.add_component(domain.clone()));
        self.hub
            .connect_component(&domain)
            .expect("a configured component");
    }

    /// The component of `domain` sends `xml`, written without its namespace.
    pub fn component_sends(&mut self, domain: &str, xml: &str) -> Deliveries {
        Deliveries(self.hub.component_inbound(&bare(domain), stanza(xml)))
    }
}

/// Parses a stanza written in a test, adding the `jabber:client` namespace.
pub fn stanza(xml: &str) -> Stanza {
    let name_end = xml[1..]
        .find([' ', '>', '/'])
        .map(|i| i + 1)
        .expect("a start tag");
    let xml = format!(
        "{} xmlns='jabber:client'{}",
        &xml[..name_end],
        &xml[name_end..]
    );
    let element: Element = xml.parse().expect("well-formed XML");
    match element.name() {
        "message" => Message::try_from(element).expect("a message").into(),
        "presence" => Presence::try_from(element).expect("a presence").into(),
        "iq" => Iq::try_from(element).expect("an iq").into(),
        other => panic!("not a stanza: {other}"),
    }
}

/// What the hub returned for one event.
#[derive(Debug)]
pub struct Deliveries(pub Vec<Delivery>);

impl Deliveries {
    /// The stanzas for `to`, in order (a batch counts as its stanzas).
    pub fn to(&self, to: &FullJid) -> Vec<&Stanza> {
        let mut found = Vec::new();
        for delivery in &self.0 {
            match delivery {
                Delivery::Stanza(jid, stanza) if jid == to => found.push(&**stanza),
                Delivery::Batch(jid, stanzas) if jid == to => found.extend(stanzas),
                _ => {}
            }
        }
        found
    }

    /// The one stanza for `to`; fails, listing every delivery, if there is none or several.
    pub fn only_to(&self, to: &FullJid) -> &Stanza {
        let found = self.to(to);
        assert_eq!(found.len(), 1, "one stanza for {to} in {}", self.describe());
        found[0]
    }

    /// The sessions that get something, in order, one entry per delivery (components, which
    /// are not sessions, are left out: see [`Deliveries::to_component`]).
    pub fn recipients(&self) -> Vec<&FullJid> {
        self.0
            .iter()
            .filter_map(|delivery| match delivery {
                Delivery::Stanza(jid, _) | Delivery::Batch(jid, _) | Delivery::Close(jid, _) => {
                    Some(jid)
                }
                Delivery::Component(..) => None,
            })
            .collect()
    }

    /// The stanzas for the external component of `domain`, in order.
    pub fn to_component(&self, domain: &str) -> Vec<&Stanza> {
        self.0
            .iter()
            .filter_map(|delivery| match delivery {
                Delivery::Component(to, stanza) if to.as_str() == domain => Some(&**stanza),
                _ => None,
            })
            .collect()
    }

    /// Whether nothing is delivered to anyone.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The roster pushes (RFC 6121 §2.1.6) for `to`, in order.
    pub fn roster_pushes(&self, to: &FullJid) -> Vec<Item> {
        self.to(to)
            .into_iter()
            .filter_map(|stanza| match stanza {
                Stanza::Iq(Iq::Set { payload, .. }) => Roster::try_from(payload.clone()).ok(),
                _ => None,
            })
            .flat_map(|roster| roster.items)
            .collect()
    }

    /// Every delivery as `to: <xml>`, for failure messages.
    pub fn describe(&self) -> String {
        let mut text = String::new();
        for delivery in &self.0 {
            let line = match delivery {
                Delivery::Stanza(jid, stanza) => format!("{jid}: {}", xml(stanza)),
                Delivery::Batch(jid, stanzas) => {
                    let all: Vec<String> = stanzas.iter().map(xml).collect();
                    format!("{jid}: batch [{}]", all.join(", "))
                }
                Delivery::Close(jid, reason) => format!("{jid}: close {reason:?}"),
                Delivery::Component(domain, stanza) => {
                    format!("component {domain}: {}", xml(stanza))
                }
            };
            text.push_str("\n  ");
            text.push_str(&line);
        }
        text
    }
}

/// A stanza as XML.
pub fn xml(stanza: &Stanza) -> String {
    let element = match stanza {
        Stanza::Message(m) => Element::from(m.clone()),
        Stanza::Presence(p) => Element::from(p.clone()),
        Stanza::Iq(iq) => Element::from(iq.clone()),
    };
    String::from(&element)
}

/// A full JID from a test.
pub fn full(jid: &str) -> FullJid {
    FullJid::new(jid).expect("a full JID")
}

/// A bare JID from a test.
pub fn bare(jid: &str) -> BareJid {
    BareJid::new(jid).expect("a bare JID")
}

/// The message in `stanza`; fails if it is not one.
pub fn message(stanza: &Stanza) -> &Message {
    match stanza {
        Stanza::Message(message) => message,
        other => panic!("not a message: {}", xml(other)),
    }
}

/// The presence in `stanza`; fails if it is not one.
pub fn presence(stanza: &Stanza) -> &Presence {
    match stanza {
        Stanza::Presence(presence) => presence,
        other => panic!("not a presence: {}", xml(other)),
    }
}

/// The IQ in `stanza`; fails if it is not one.
pub fn iq(stanza: &Stanza) -> &Iq {
    match stanza {
        Stanza::Iq(iq) => iq,
        other => panic!("not an iq: {}", xml(other)),
    }
}

/// The body of a message (none for any other stanza).
pub fn body(stanza: &Stanza) -> Option<&str> {
    match stanza {
        Stanza::Message(message) => message.bodies.values().next().map(|b| b.as_str()),
        _ => None,
    }
}

/// The `from` of any stanza.
pub fn from_of(stanza: &Stanza) -> Option<&Jid> {
    match stanza {
        Stanza::Message(m) => m.from.as_ref(),
        Stanza::Presence(p) => p.from.as_ref(),
        Stanza::Iq(iq) => iq.from(),
    }
}

/// The presence type of a presence stanza (`None` is available).
pub fn presence_type(stanza: &Stanza) -> PresenceType {
    presence(stanza).type_.clone()
}

/// The condition of an error stanza of any kind, or `None` if it is not an error.
pub fn error_condition(stanza: &Stanza) -> Option<DefinedCondition> {
    let error = match stanza {
        Stanza::Iq(Iq::Error { error, .. }) => error.clone(),
        Stanza::Message(m) => m
            .payloads
            .iter()
            .find_map(|p| StanzaError::try_from(p.clone()).ok())?,
        Stanza::Presence(p) => p
            .payloads
            .iter()
            .find_map(|p| StanzaError::try_from(p.clone()).ok())?,
        Stanza::Iq(_) => return None,
    };
    Some(error.defined_condition)
}

/// Whether a roster item asks for a subscription (`ask='subscribe'`).
pub fn asks(item: &Item) -> bool {
    item.ask == Ask::Subscribe
}

impl World {
    /// `who` asks for its roster, which makes it an interested resource (RFC 6121 §2.1.6); the
    /// answer is dropped.
    pub fn get_roster(&mut self, who: &FullJid) {
        self.send(
            who,
            "<iq type='get' id='roster'><query xmlns='jabber:iq:roster'/></iq>",
        );
    }

    /// `a` and `b` (full JIDs of online sessions) subscribe to each other's presence, each
    /// approving the other's request; what that delivers is dropped.
    pub fn befriend(&mut self, a: &FullJid, b: &FullJid) {
        let (a_bare, b_bare) = (a.to_bare(), b.to_bare());
        self.send(a, &format!("<presence to='{b_bare}' type='subscribe'/>"));
        self.send(b, &format!("<presence to='{a_bare}' type='subscribed'/>"));
        self.send(b, &format!("<presence to='{a_bare}' type='subscribe'/>"));
        self.send(a, &format!("<presence to='{b_bare}' type='subscribed'/>"));
    }
}
