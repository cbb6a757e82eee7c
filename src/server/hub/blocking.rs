//! XEP-0191 blocking command: each account's list of blocked JIDs, and the router's rules that
//! keep the blocked out.
//!
//! Two parts:
//!
//! - **The service** ([`Blocking`]): `<blocklist/>` get, `<block/>` and `<unblock/>` sets on
//!   the sender's own account (XEP-0191 §3.2–§3.4), kept in the store, pushed to every resource
//!   of the account that has asked for the list (§3.3, "interested resources"; like Prosody, a
//!   session becomes interested by fetching the list, kept in
//!   [`BoundSession::blocklist_interested`](super::BoundSession::blocklist_interested)). The
//!   server advertises `urn:xmpp:blocking` (§3.1; Prosody does too: the feature is the
//!   server's, not the account's).
//! - **Enforcement** ([`Hub::refuse_blocked`], [`Hub::presence_cut`]): the rules are written
//!   down in `router.rs` (rule 1a) and `presence.rs`; the lists are read from memory
//!   ([`Blocklists`]), loaded from the store at an account's first use, so routing never reads
//!   SQLite per stanza.
//!
//! # Matching (XEP-0191 §3.5, which defers to XEP-0016 §2.1)
//!
//! An item blocks a JID when it is that JID exactly, or the JID's bare JID (an item
//! `user@domain` blocks every resource of the account), or the JID's domain (an item `domain`
//! blocks the domain, every account at it and every resource of those). An item with a
//! resource blocks that full JID only. Prosody matches the same way.
//!
//! # Choices
//!
//! - A `<block/>` without items is `bad-request` (§3.3). An item without a `jid` is
//!   `bad-request` too; a `jid` that is not a JID is `jid-malformed` (RFC 6120 §8.3.3.8, an
//!   address that does not adhere to the syntax; Prosody answers the same). Either way nothing
//!   is blocked: a request is applied whole or not at all.
//! - An account may block at most `--max-blocklist` JIDs (1000 by default): a block that would
//!   go past it is refused whole with `policy-violation` (RFC 6120 §8.3.3.12: the operator's
//!   local policy; the user can unblock to make room). XEP-0191 names no error for it.
//! - Blocking a JID sends it unavailable presence from each of the user's available resources,
//!   if it was subscribed to the user's presence (§3.3), and the user's resources get
//!   unavailable presence from the contact's resources if the user was subscribed to it, since
//!   its presence no longer reaches them ("presence is cut both ways"). Unblocking sends the
//!   current presence again both ways, within the same subscriptions (§3.4). Prosody sends the
//!   first only.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet};

use tokio_xmpp::jid::{BareJid, FullJid, Jid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::MessageType;
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};
use tokio_xmpp::Stanza;

use super::service::{Entity, IqRequest, Service, Target};
use super::{bounce, node, to_of, Delivery, Hub, ReplyTo};
use crate::server::limits::ServerLimits;
use crate::server::store::Subscription;

/// Block list get, block and unblock (XEP-0191 §3.2–§3.4), advertised by the server.
pub(super) struct Blocking;

impl Service for Blocking {
    fn features(&self, entity: Entity) -> &'static [&'static str] {
        match entity {
            Entity::Server => &[ns::BLOCKING],
            Entity::Account => &[],
        }
    }

    fn handles(&self, request: &IqRequest) -> bool {
        request.at == Target::OwnAccount
            && (request.is_get("blocklist", ns::BLOCKING)
                || request.is_set("block", ns::BLOCKING)
                || request.is_set("unblock", ns::BLOCKING))
    }

    fn is_account_data(&self, payload: &Element) -> bool {
        payload.ns() == ns::BLOCKING
    }

    fn handle(&self, hub: &mut Hub, request: IqRequest, out: &mut Vec<Delivery>) {
        if request.is_get("blocklist", ns::BLOCKING) {
            let answer = hub.blocklist_get(&request.from);
            return request.answer(answer, out);
        }
        let blocking = request.payload.name() == "block";
        let items = match items(&request.payload) {
            Ok(items) => items,
            Err(condition) => return request.answer(Err(condition), out),
        };
        let from = request.from.clone();
        let echo = request.payload.name().to_string();
        let changed = if blocking {
            hub.block(&from, &items)
        } else {
            hub.unblock(&from, &items)
        };
        match changed {
            Ok(change) => {
                request.answer(Ok(None), out);
                hub.push_blocklist(&from.to_bare(), &echo, &items, out);
                hub.presence_after(&from.to_bare(), change, out);
            }
            Err(condition) => request.answer(Err(condition), out),
        }
    }
}

/// The `<item jid='…'/>` children of a `<block/>` or `<unblock/>`, normalised and without
/// duplicates. A `<block/>` without any is `bad-request` (§3.3); an `<unblock/>` without any
/// means every JID (§3.4).
fn items(payload: &Element) -> Result<BTreeSet<String>, DefinedCondition> {
    let mut jids = BTreeSet::new();
    for item in payload.children().filter(|c| c.is("item", ns::BLOCKING)) {
        let jid = item
            .attr("jid")
            .filter(|jid| !jid.is_empty())
            .ok_or(DefinedCondition::BadRequest)?;
        let jid = Jid::new(jid).map_err(|_| DefinedCondition::JidMalformed)?;
        jids.insert(jid.to_string());
    }
    if jids.is_empty() && payload.name() == "block" {
        return Err(DefinedCondition::BadRequest);
    }
    Ok(jids)
}

/// What a block or unblock changed, for the presence that follows it.
pub(super) enum Change {
    /// These JIDs are newly blocked; `before` is the list as it was.
    Blocked {
        added: HashSet<String>,
        before: HashSet<String>,
    },
    /// These JIDs are no longer blocked.
    Unblocked { removed: HashSet<String> },
}

/// Every account's block list, in memory: the router reads these for every stanza between two
/// parties, so they are loaded from the store once per account, at its first use, and changed
/// here and in the store together. Only existing accounts are kept (a stanza to a made-up
/// name does not grow the map), and at most `max` JIDs per account.
#[derive(Debug)]
pub(super) struct Blocklists {
    lists: RefCell<HashMap<String, HashSet<String>>>,
    max: usize,
}

impl Default for Blocklists {
    fn default() -> Self {
        Self {
            lists: RefCell::default(),
            max: ServerLimits::default().max_blocklist,
        }
    }
}

/// Whether `list` blocks `jid` (see "Matching" in the module docs).
fn matches(list: &HashSet<String>, jid: &Jid) -> bool {
    if list.is_empty() {
        return false;
    }
    let full = jid.as_str();
    // Nodes and domains cannot hold a '/', so the first one starts the resource.
    let bare = full.split('/').next().unwrap_or(full);
    list.contains(full) || list.contains(bare) || list.contains(jid.domain().as_str())
}

impl Hub {
    /// The most JIDs one account may block (`--max-blocklist`), set by [`Hub::start`].
    pub(super) fn set_max_blocklist(&mut self, max: usize) {
        self.blocklists.max = max;
    }

    /// The account `jid` belongs to, if it is one of this server's (the username).
    fn local_user<'a>(&self, jid: &'a Jid) -> Option<&'a str> {
        let node = jid.node()?;
        (jid.domain().as_str() == self.domain).then_some(node.as_str())
    }

    /// Runs `f` on `user`'s block list, loading it from the store at first use; `None` if
    /// there is no such account (or the store cannot be read, which is logged).
    fn with_blocklist<R>(&self, user: &str, f: impl FnOnce(&HashSet<String>) -> R) -> Option<R> {
        if let Some(list) = self.blocklists.lists.borrow().get(user) {
            return Some(f(list));
        }
        if !self.store.account_exists(user).unwrap_or(false) {
            return None;
        }
        let list: HashSet<String> = match self.store.blocklist(user) {
            Ok(list) => list.into_iter().collect(),
            Err(error) => {
                tracing::error!(user, "could not read a block list: {error}");
                return None;
            }
        };
        let answer = f(&list);
        self.blocklists
            .lists
            .borrow_mut()
            .insert(user.to_string(), list);
        Some(answer)
    }

    /// Forgets the list of `session`'s account if `session` is its only one, to be read again
    /// from the store at its next use: so that an account deleted and created again while the
    /// server runs (by `mqtt2xmpp user`, another process) does not keep the old list.
    pub(super) fn forget_blocklist_at_first_login(&mut self, session: &FullJid) {
        let first = self
            .resources
            .get(&session.to_bare())
            .is_some_and(|resources| resources.len() == 1);
        if let (true, Some(user)) = (first, session.node()) {
            self.blocklists.lists.get_mut().remove(user.as_str());
        }
    }

    /// Whether the local account `user` blocks `jid`.
    fn user_blocks(&self, user: &str, jid: &Jid) -> bool {
        self.with_blocklist(user, |list| matches(list, jid))
            .unwrap_or(false)
    }

    /// Whether presence from `from` to `to` is cut by a block list (rule 1a of `router.rs`,
    /// for the presence the server fans out itself: broadcasts, answers to probes): `to`'s
    /// account blocks `from` (XEP-0191 §3.5), or `from`'s account blocks `to` (§3.6). Never
    /// between two resources of one account.
    pub(super) fn presence_cut(&self, from: &Jid, to: &Jid) -> bool {
        let (sender, recipient) = (self.local_user(from), self.local_user(to));
        if sender.is_some() && sender == recipient {
            return false;
        }
        recipient.is_some_and(|user| self.user_blocks(user, from))
            || sender.is_some_and(|user| self.user_blocks(user, to))
    }

    /// Rule 1a of `router.rs` (XEP-0191 §3.5, §3.6) for `stanza`, sent by `from` (a bound
    /// session's full JID, or an address at a component) and answered through `sender`:
    /// `true` if a block list stops it, after pushing any error the sender gets.
    pub(super) fn refuse_blocked(
        &self,
        sender: &ReplyTo,
        from: &Jid,
        stanza: &Stanza,
        out: &mut Vec<Delivery>,
    ) -> bool {
        let Some(to) = to_of(stanza) else {
            return false;
        };
        let (user, recipient) = (self.local_user(from), self.local_user(to));
        if user.is_some() && user == recipient {
            return false;
        }
        // The server itself is never blocked: blocking one's own domain must not cut the
        // account off from its server's services.
        let to_server = to.node().is_none() && to.domain().as_str() == self.domain;
        let outgoing = !to_server && user.is_some_and(|user| self.user_blocks(user, to));
        let incoming = !outgoing && recipient.is_some_and(|r| self.user_blocks(r, from));
        if !outgoing && !incoming {
            return false;
        }
        let mut stamped = copy(stanza);
        set_from(&mut stamped, from.clone());
        let reply = match &stamped {
            // §3.5: presence (updates, subscriptions, probes) from the blocked is dropped
            // without an answer. §3.6 would bounce the user's own presence to the blocked, but
            // much of it is sent by clients on the user's behalf (Prosody drops it too).
            Stanza::Presence(_) => None,
            Stanza::Message(message) if incoming => {
                matches!(message.type_, MessageType::Chat | MessageType::Normal)
                    .then(|| bounce(&stamped, DefinedCondition::ServiceUnavailable))
                    .flatten()
            }
            Stanza::Iq(_) if incoming => bounce(&stamped, DefinedCondition::ServiceUnavailable),
            // §3.6: the user's own message or request to a JID it blocks.
            _ => blocked_error(&stamped),
        };
        if let Some(reply) = reply {
            out.push(sender.delivery(reply));
        }
        true
    }

    /// [`Hub::refuse_blocked`] for a stanza from a component, stamped with its sender.
    pub(super) fn refuse_blocked_from_component(
        &self,
        sender: &ReplyTo,
        stanza: &Stanza,
        out: &mut Vec<Delivery>,
    ) -> bool {
        let from = match stanza {
            Stanza::Message(m) => m.from.as_ref(),
            Stanza::Presence(p) => p.from.as_ref(),
            Stanza::Iq(iq) => iq.from(),
        };
        from.is_some_and(|from| self.refuse_blocked(sender, from, stanza, out))
    }

    /// §3.2: the block list, sorted; the session is now interested in pushes (§3.3).
    fn blocklist_get(&mut self, from: &FullJid) -> Result<Option<Element>, DefinedCondition> {
        let user = node(from);
        let mut jids: Vec<String> = self
            .with_blocklist(&user, |list| list.iter().cloned().collect())
            .ok_or(DefinedCondition::InternalServerError)?;
        jids.sort();
        if let Some(session) = self.sessions.get_mut(from) {
            session.blocklist_interested = true;
        }
        Ok(Some(list_element("blocklist", jids.iter())))
    }

    /// §3.3: adds `jids` to `from`'s account's list, whole or not at all.
    fn block(
        &mut self,
        from: &FullJid,
        jids: &BTreeSet<String>,
    ) -> Result<Change, DefinedCondition> {
        let user = node(from);
        let before = self
            .with_blocklist(&user, HashSet::clone)
            .ok_or(DefinedCondition::InternalServerError)?;
        let added: HashSet<String> = jids
            .iter()
            .filter(|jid| !before.contains(*jid))
            .cloned()
            .collect();
        if before.len() + added.len() > self.blocklists.max {
            return Err(DefinedCondition::PolicyViolation);
        }
        let new: Vec<String> = added.iter().cloned().collect();
        if let Err(error) = self.store.block(&user, &new) {
            tracing::error!(user, "could not store a block: {error}");
            return Err(DefinedCondition::InternalServerError);
        }
        if let Some(list) = self.blocklists.lists.get_mut().get_mut(&user) {
            list.extend(new);
        }
        Ok(Change::Blocked { added, before })
    }

    /// §3.4: removes `jids` (every JID, if empty) from `from`'s account's list.
    fn unblock(
        &mut self,
        from: &FullJid,
        jids: &BTreeSet<String>,
    ) -> Result<Change, DefinedCondition> {
        let user = node(from);
        let before = self
            .with_blocklist(&user, HashSet::clone)
            .ok_or(DefinedCondition::InternalServerError)?;
        let removed: HashSet<String> = if jids.is_empty() {
            before
        } else {
            jids.iter()
                .filter(|jid| before.contains(*jid))
                .cloned()
                .collect()
        };
        let stored = if jids.is_empty() {
            self.store.unblock(&user, None)
        } else {
            let gone: Vec<String> = removed.iter().cloned().collect();
            self.store.unblock(&user, Some(&gone))
        };
        if let Err(error) = stored {
            tracing::error!(user, "could not store an unblock: {error}");
            return Err(DefinedCondition::InternalServerError);
        }
        if let Some(list) = self.blocklists.lists.get_mut().get_mut(&user) {
            list.retain(|jid| !removed.contains(jid));
        }
        Ok(Change::Unblocked { removed })
    }

    /// §3.3, §3.4: the change, as a `<block/>` or `<unblock/>` set, to every resource of
    /// `user` that has asked for the list.
    fn push_blocklist(
        &self,
        user: &BareJid,
        name: &str,
        jids: &BTreeSet<String>,
        out: &mut Vec<Delivery>,
    ) {
        for jid in self.resources_of(user) {
            if !self
                .sessions
                .get(&jid)
                .is_some_and(|s| s.blocklist_interested)
            {
                continue;
            }
            let push = Iq::Set {
                from: None,
                to: Some(jid.clone().into()),
                id: format!("block-push-{:x}", rand::random::<u64>()),
                payload: list_element(name, jids.iter()),
            };
            out.push(Delivery::stanza(jid, push));
        }
    }

    /// The presence a block (§3.3) or unblock (§3.4) causes between `user`'s available
    /// resources and the resources of the contacts in its roster that the change concerns,
    /// within their subscriptions (see "Choices" in the module docs).
    fn presence_after(&self, user: &BareJid, change: Change, out: &mut Vec<Delivery>) {
        let mine: Vec<FullJid> = self
            .available_of(user)
            .into_iter()
            .map(|(j, _)| j)
            .collect();
        if mine.is_empty() {
            return;
        }
        let Some(owner) = user.node() else { return };
        let roster = self.store.roster(owner.as_str()).unwrap_or_default();
        for item in roster {
            let Ok(contact) = BareJid::new(&item.jid) else {
                continue;
            };
            let theirs_see_mine =
                matches!(item.subscription, Subscription::From | Subscription::Both);
            let mine_see_theirs =
                matches!(item.subscription, Subscription::To | Subscription::Both);
            let concerned = |jid: &Jid| match &change {
                Change::Blocked { added, before } => matches(added, jid) && !matches(before, jid),
                Change::Unblocked { removed } => matches(removed, jid),
            };
            if self.is_local_account(&contact) {
                for (theirs, _) in self.available_of(&contact) {
                    if !concerned(&theirs) {
                        continue;
                    }
                    for session in &mine {
                        match change {
                            Change::Blocked { .. } => {
                                if theirs_see_mine {
                                    out.push(unavailable(session, &theirs));
                                }
                                if mine_see_theirs {
                                    out.push(unavailable(&theirs, session));
                                }
                            }
                            // Through the same rules as any presence: a block left in either
                            // list still holds it back.
                            Change::Unblocked { .. } => {
                                if theirs_see_mine {
                                    self.session_presence_to(session, &theirs, out);
                                }
                                if mine_see_theirs {
                                    self.session_presence_to(&theirs, session, out);
                                }
                            }
                        }
                    }
                }
            } else if theirs_see_mine && concerned(&contact) {
                // A contact at an external component's domain (XEP-0114).
                for session in &mine {
                    let presence = match change {
                        Change::Blocked { .. } => {
                            let mut gone = Presence::new(PresenceType::Unavailable);
                            gone.from = Some(session.clone().into());
                            Some(gone)
                        }
                        Change::Unblocked { .. } => self
                            .sessions
                            .get(session)
                            .and_then(|s| s.presence.clone())
                            .filter(|_| !self.presence_cut(session, &contact))
                            .map(|mut p| {
                                p.from = Some(session.clone().into());
                                p
                            }),
                    };
                    if let Some(presence) = presence {
                        self.presence_to_component_contact(&presence, &contact, out);
                    }
                }
            }
        }
    }
}

/// Unavailable presence from `from` for `to`, delivered as it is (the block that follows
/// would hold it back otherwise).
fn unavailable(from: &FullJid, to: &FullJid) -> Delivery {
    let mut gone = Presence::new(PresenceType::Unavailable);
    gone.from = Some(from.clone().into());
    gone.to = Some(to.clone().into());
    Delivery::stanza(to.clone(), gone)
}

/// `<name xmlns='urn:xmpp:blocking'>` with an `<item jid='…'/>` for each of `jids`.
fn list_element<'a>(name: &str, jids: impl Iterator<Item = &'a String>) -> Element {
    let mut list = Element::builder(name, ns::BLOCKING);
    for jid in jids {
        list = list.append(
            Element::builder("item", ns::BLOCKING)
                .attr(
                    tokio_xmpp::minidom::rxml::xml_ncname!("jid").into(),
                    jid.as_str(),
                )
                .build(),
        );
    }
    list.build()
}

/// §3.6: the error for the user's own stanza to a JID it blocks, `not-acceptable` of type
/// `cancel` with `<blocked xmlns='urn:xmpp:blocking:errors'/>`; `None` for a stanza that is
/// never answered (RFC 6120 §8.3.1).
fn blocked_error(stanza: &Stanza) -> Option<Stanza> {
    let mut reply = bounce(stanza, DefinedCondition::NotAcceptable)?;
    let patch = |error: &mut StanzaError| {
        error.type_ = ErrorType::Cancel;
        error.other = Some(Element::builder("blocked", ns::BLOCKING_ERRORS).build());
    };
    match &mut reply {
        Stanza::Iq(Iq::Error { error, .. }) => patch(error),
        Stanza::Message(message) => {
            for payload in &mut message.payloads {
                if let Ok(mut error) = StanzaError::try_from(payload.clone()) {
                    patch(&mut error);
                    *payload = error.into();
                }
            }
        }
        _ => {}
    }
    Some(reply)
}

/// A copy of `stanza` (`Stanza` is not `Clone`).
fn copy(stanza: &Stanza) -> Stanza {
    match stanza {
        Stanza::Message(m) => m.clone().into(),
        Stanza::Presence(p) => p.clone().into(),
        Stanza::Iq(iq) => iq.clone().into(),
    }
}

/// Stamps the sender's address.
fn set_from(stanza: &mut Stanza, from: Jid) {
    match stanza {
        Stanza::Message(m) => m.from = Some(from),
        Stanza::Presence(p) => p.from = Some(from),
        Stanza::Iq(iq) => *iq.from_mut() = Some(from),
    }
}

#[cfg(test)]
mod tests;
