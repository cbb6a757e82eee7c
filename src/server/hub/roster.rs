//! The roster (RFC 6121 §2): get, set, remove, and the pushes that keep every interested
//! resource of the account in step.
//!
//! Roster versioning (RFC 6121 §2.6): the server says so in the stream features after
//! authentication (`<ver xmlns='urn:xmpp:features:rosterver'/>`, §2.6.1); every roster result
//! and every push carries the roster's `ver` as the store keeps it ([`Store::roster_ver`]: it
//! changes with every change of an item, including subscription states, and survives
//! restarts). A get whose `ver` is the current one is answered with an empty result: the client
//! keeps its cached copy (§2.6.3). Any other `ver` (older, from another database, empty,
//! malformed) gets the whole roster. A change that no client can see (an inbound subscription
//! request, which is not a roster item) still takes a new version without a push; a client
//! then gets the whole roster, unchanged, at its next login, which is always correct.
//!
//! [`Store::roster_ver`]: crate::server::store::Store::roster_ver

use tokio_xmpp::jid::{BareJid, FullJid, Jid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::parsers::roster::{Ask, Group, Item, Roster, Subscription as WireSubscription};
use tokio_xmpp::parsers::stanza_error::DefinedCondition;

use super::service::{Entity, IqRequest, Kind, Service, Target};
use super::{node, Delivery, Hub};
use crate::server::store::{RosterItem, Subscription};

/// Roster get and set for the sender's own roster (RFC 6121 §2.1.3, §2.3, §2.5), advertised by
/// the server, with versioning (RFC 6121 §2.6).
pub(super) struct RosterService;

impl Service for RosterService {
    fn features(&self, entity: Entity) -> &'static [&'static str] {
        match entity {
            Entity::Server => &[ns::ROSTER],
            Entity::Account => &[],
        }
    }

    fn handles(&self, request: &IqRequest) -> bool {
        request.at == Target::OwnAccount && request.payload.is("query", ns::ROSTER)
    }

    fn is_account_data(&self, payload: &Element) -> bool {
        payload.is("query", ns::ROSTER)
    }

    fn stream_feature(&self, _services: &[&dyn Service]) -> Option<Element> {
        Some(Element::builder("ver", ROSTERVER).build())
    }

    fn handle(&self, hub: &mut Hub, request: IqRequest, out: &mut Vec<Delivery>) {
        let from = request.from.clone();
        let answer = match request.kind {
            Kind::Get => {
                if let Some(session) = hub.sessions.get_mut(&from) {
                    session.interested = true;
                }
                hub.roster_result(&from, request.payload.attr("ver"))
            }
            Kind::Set => hub.roster_set(&from, &request.payload, out).map(|()| None),
        };
        // Roster results carry no `from`, whether the request was sent with no `to`, to the
        // account or to the server.
        IqRequest {
            reply_from: None,
            ..request
        }
        .answer(answer, out);
    }
}

impl Hub {
    /// The answer to a roster get that came with `client_ver` (RFC 6121 §2.1.3): the whole
    /// roster with its version, or nothing (an empty result) when the client's version is the
    /// current one (§2.6.3).
    fn roster_result(
        &self,
        from: &FullJid,
        client_ver: Option<&str>,
    ) -> Result<Option<Element>, DefinedCondition> {
        let (ver, items) = self
            .store
            .roster_with_ver(&node(from))
            .map_err(|_| DefinedCondition::InternalServerError)?;
        if client_ver == Some(ver.as_str()) {
            return Ok(None);
        }
        let items = items
            .into_iter()
            // An inbound request from someone not (yet) in the roster is not a roster item.
            .filter(|item| !item.is_pending_in_only())
            .filter_map(|item| wire_item(&item))
            .collect();
        Ok(Some(roster_query(Some(ver), items)))
    }

    /// RFC 6121 §2.3 (add/update) and §2.5 (remove).
    fn roster_set(
        &mut self,
        from: &FullJid,
        payload: &Element,
        out: &mut Vec<Delivery>,
    ) -> Result<(), DefinedCondition> {
        let roster = Roster::try_from(payload.clone()).map_err(|_| DefinedCondition::BadRequest)?;
        let [item] = roster.items.as_slice() else {
            return Err(DefinedCondition::BadRequest);
        };
        let owner = node(from);
        let contact = item.jid.to_string();
        let existing = self
            .store
            .roster_item(&owner, &contact)
            .map_err(|_| DefinedCondition::InternalServerError)?;
        if item.subscription == WireSubscription::Remove {
            let Some(existing) = existing else {
                return Err(DefinedCondition::ItemNotFound);
            };
            let user = from.to_bare();
            // Removing a contact ends the subscriptions in both directions.
            if matches!(existing.subscription, Subscription::To | Subscription::Both)
                || existing.ask
            {
                self.subscription_change(&user, &item.jid, PresenceType::Unsubscribe, out);
            }
            if matches!(
                existing.subscription,
                Subscription::From | Subscription::Both
            ) || existing.pending_in
            {
                self.subscription_change(&user, &item.jid, PresenceType::Unsubscribed, out);
            }
            self.store
                .remove_roster_item(&owner, &contact)
                .map_err(|_| DefinedCondition::InternalServerError)?;
            let removed = Item {
                jid: item.jid.clone(),
                name: None,
                subscription: WireSubscription::Remove,
                ask: Ask::None,
                groups: Vec::new(),
                approved: None,
            };
            self.push_roster(&user, removed, out);
            return Ok(());
        }
        let mut updated = existing.unwrap_or_else(|| RosterItem::new(&contact));
        updated.name = item.name.clone().filter(|n| !n.is_empty());
        updated.groups = item.groups.iter().map(|g| g.0.clone()).collect();
        updated.groups.sort();
        updated.groups.dedup();
        self.save_and_push(&from.to_bare(), updated, out);
        Ok(())
    }

    /// Stores `item` in `owner`'s roster and pushes it if anything changed.
    pub(super) fn save_and_push(
        &mut self,
        owner: &BareJid,
        item: RosterItem,
        out: &mut Vec<Delivery>,
    ) {
        let Some(user) = owner.node() else { return };
        match self.store.upsert_roster_item(user.as_str(), &item) {
            Ok(true) => {
                if !item.is_pending_in_only() {
                    if let Some(wire) = wire_item(&item) {
                        self.push_roster(owner, wire, out);
                    }
                }
            }
            Ok(false) => {}
            Err(error) => tracing::error!(%owner, "could not store a roster item: {error}"),
        }
    }

    /// Sends a roster push (RFC 6121 §2.1.6) to every interested resource of `owner`, with
    /// the roster's version after the change (§2.6.4). Called right after the change is
    /// stored, so that version is the change's own.
    fn push_roster(&self, owner: &BareJid, item: Item, out: &mut Vec<Delivery>) {
        // Without a version (the store could not be read) the push still goes out; the
        // client's cached version is then older than the roster, so its next get fetches all.
        let ver = owner
            .node()
            .and_then(|user| self.store.roster_ver(user.as_str()).ok());
        for jid in self.resources_of(owner) {
            if !self.sessions.get(&jid).is_some_and(|s| s.interested) {
                continue;
            }
            let push = Iq::Set {
                from: None,
                to: Some(jid.clone().into()),
                id: format!("push-{:x}", rand::random::<u64>()),
                payload: roster_query(ver.clone(), vec![item.clone()]),
            };
            out.push(Delivery::stanza(jid, push));
        }
    }

    /// The roster item `owner` has for `contact`, or a fresh one.
    pub(super) fn roster_entry(&self, owner: &BareJid, contact: &BareJid) -> RosterItem {
        owner
            .node()
            .and_then(|user| {
                self.store
                    .roster_item(user.as_str(), &contact.to_string())
                    .ok()
                    .flatten()
            })
            .unwrap_or_else(|| RosterItem::new(contact.to_string()))
    }

    /// Contacts of `owner` whose subscription matches `pred`.
    pub(super) fn contacts_where(
        &self,
        owner: &BareJid,
        pred: impl Fn(&RosterItem) -> bool,
    ) -> Vec<BareJid> {
        let Some(user) = owner.node() else {
            return Vec::new();
        };
        self.store
            .roster(user.as_str())
            .unwrap_or_default()
            .into_iter()
            .filter(|item| pred(item))
            .filter_map(|item| BareJid::new(&item.jid).ok())
            .collect()
    }

    /// A presence from `from` (typically unavailable) sent to every available resource of `to`.
    pub(super) fn presence_to_user(
        &self,
        presence: &Presence,
        to: &BareJid,
        out: &mut Vec<Delivery>,
    ) {
        // Rule 1a of `router.rs` (XEP-0191): presence is cut both ways by a block.
        let cut = |to: &Jid| {
            presence
                .from
                .as_ref()
                .is_some_and(|f| self.presence_cut(f, to))
        };
        // A contact at an external component's domain: its component gets it (XEP-0114).
        if cut(to) || self.presence_to_component_contact(presence, to, out) {
            return;
        }
        for (jid, _) in self.available_of(to) {
            if cut(&jid) {
                continue;
            }
            let mut copy = presence.clone();
            copy.to = Some(jid.clone().into());
            out.push(Delivery::stanza(jid, copy));
        }
    }
}

/// The stream feature of roster versioning (RFC 6121 §2.6.1).
const ROSTERVER: &str = "urn:xmpp:features:rosterver";

/// The `<query xmlns='jabber:iq:roster'/>` of a roster result or push, with the roster's
/// version `ver`, every item with its `subscription` attribute written out.
///
/// xmpp-parsers leaves `subscription='none'` out, as the default of RFC 6121's schema allows;
/// but clients such as slixmpp (1.8.3) skip an item without the attribute, so a contact with
/// no subscription (just added, or after an unsubscription) never reaches their roster, or
/// keeps its old state there. Writing the default out is always valid.
fn roster_query(ver: Option<String>, items: Vec<Item>) -> Element {
    let mut query = Element::from(Roster { ver, items });
    for item in query.children_mut() {
        if item.attr("subscription").is_none() {
            item.set_attr(
                tokio_xmpp::minidom::rxml::Namespace::NONE,
                tokio_xmpp::minidom::rxml::xml_ncname!("subscription").into(),
                "none",
            );
        }
    }
    query
}

/// The wire form of a stored roster item, or `None` if its JID no longer parses.
fn wire_item(item: &RosterItem) -> Option<Item> {
    Some(Item {
        jid: BareJid::new(&item.jid).ok()?,
        name: item.name.clone(),
        subscription: match item.subscription {
            Subscription::None => WireSubscription::None,
            Subscription::To => WireSubscription::To,
            Subscription::From => WireSubscription::From,
            Subscription::Both => WireSubscription::Both,
        },
        ask: if item.ask { Ask::Subscribe } else { Ask::None },
        groups: item.groups.iter().cloned().map(Group).collect(),
        approved: None,
    })
}

#[cfg(test)]
mod tests;
