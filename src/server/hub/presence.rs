//! Presence (RFC 6121 §4) and presence subscriptions (RFC 6121 §3), for accounts of this one
//! domain.
//!
//! - **Initial presence** (the first available presence of a session): the session becomes
//!   available; its presence goes to every contact with a `from`/`both` subscription and to the
//!   account's own available resources (including the sender); the presence of every contact
//!   the account has a `to`/`both` subscription to comes back (the server answers its own
//!   probes); pending subscription requests are delivered again; and, with a non-negative
//!   priority, stored offline messages are delivered and then deleted.
//! - **Later available presence** and **unavailable presence** are broadcast the same way;
//!   unavailable also makes the session unavailable (it stays bound).
//! - **The vCard photo hash** (XEP-0153 §3.2, XEP-0398 §4): every available presence a session
//!   sends, broadcast or directed, to a local JID or to a component, carries
//!   `<x xmlns='vcard-temp:x:update'><photo>SHA-1</photo></x>` with the hash of the photo in
//!   the account's stored vCard (an empty `<photo/>` without one), in place of any hash the
//!   client put there (a client's empty `<photo/>`, "no avatar to show", is kept); it is put in
//!   before routing (`vcard.rs`, [`Hub::inbound`]). A vCard set that
//!   changes the photo makes each available resource of the account broadcast its current
//!   presence again with the new hash.
//! - **PEP** (XEP-0163 §4.3, `pep/caps.rs`): every available presence hands its entity
//!   capabilities to PEP, which learns from them which nodes the session wants and sends it
//!   the last items of those nodes when it becomes available; a contact granted a
//!   subscription (`subscribed`) gets the user's last items too.
//! - **Contacts at an external component's domain** (XEP-0114) get the broadcasts like local
//!   contacts, through their component, and are probed at initial presence; their subscription
//!   stanzas change the account's side of the roster (`components/subscriptions.rs`).
//! - **Directed presence** to a local JID is delivered to that full JID or to every available
//!   resource of that bare JID. Probes from clients are ignored (the server probes itself).
//! - **Another domain**, neither ours nor an external component's (a room service that does
//!   not exist, a contact elsewhere: there is no server-to-server): every presence with a `to`
//!   there, directed presence, probes and
//!   subscription stanzas alike, is answered with `remote-server-not-found` (RFC 6120 §10.4.3,
//!   RFC 6121 §4.3 and §4.6 route such presence to the remote domain, and a server that cannot
//!   reach it bounces the stanza), so that a client joining a room there fails at once instead
//!   of waiting for its own timeout. Presence of type `error` is never answered (RFC 6120
//!   §8.3.1). Prosody and ejabberd bounce the same stanzas with the same condition when
//!   server-to-server fails.
//! - **Block lists** (XEP-0191, rule 1a of `router.rs`): no presence of any kind, broadcast,
//!   directed, probe answer or subscription stanza, goes between an account and a JID either
//!   side blocks.
//! - **Subscriptions**: `subscribe`, `subscribed`, `unsubscribe` and `unsubscribed` move both
//!   rosters through the none/to/from/both states with the pending-out (`ask`) and pending-in
//!   flags, push every change to interested resources, and deliver the stanza to the contact.
//!   A request to a contact that already granted a subscription is answered `subscribed` at
//!   once; a request to a non-existent local account is answered `unsubscribed`.

use tokio_xmpp::jid::{BareJid, FullJid, Jid};
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::parsers::stanza_error::DefinedCondition;

use super::{bounce, node, Delivery, Hub};
use crate::server::store::Subscription;

impl Hub {
    /// A presence stanza from the bound session `from`.
    pub(super) fn handle_presence(
        &mut self,
        from: &FullJid,
        presence: Presence,
        out: &mut Vec<Delivery>,
    ) {
        if let Some(to) = &presence.to {
            if !self.is_local_domain(to) {
                // `bounce` answers no error.
                if let Some(error) =
                    bounce(&presence.into(), DefinedCondition::RemoteServerNotFound)
                {
                    out.push(Delivery::stanza(from.clone(), error));
                }
                return;
            }
        }
        match (&presence.type_, presence.to.clone()) {
            (PresenceType::None | PresenceType::Unavailable, None) => {
                // RFC 6121 §4.6.3: unavailable goes to the rooms it was sent to as well.
                if presence.type_ == PresenceType::Unavailable {
                    self.muc_session_ended(from, out);
                }
                self.broadcast_from(from, presence, out)
            }
            (
                PresenceType::Subscribe
                | PresenceType::Subscribed
                | PresenceType::Unsubscribe
                | PresenceType::Unsubscribed,
                Some(to),
            ) => {
                let contact = to.to_bare();
                if contact.node().is_none() || contact == from.to_bare() {
                    return;
                }
                self.subscription_change(&from.to_bare(), &contact, presence.type_, out);
            }
            (PresenceType::Probe, _) => {}
            (_, Some(to)) => self.directed_presence(presence, to, out),
            // Subscription stanzas without a `to`, and errors without one: nothing to do.
            (_, None) => {}
        }
    }

    fn broadcast_from(&mut self, from: &FullJid, presence: Presence, out: &mut Vec<Delivery>) {
        let available = presence.type_ == PresenceType::None;
        let Some(session) = self.sessions.get_mut(from) else {
            return;
        };
        let initial = available && !session.available;
        session.available = available;
        session.priority = presence.priority.0;
        session.presence = available.then(|| presence.clone());
        let priority = presence.priority.0;
        self.broadcast_presence(from, presence, out);
        // XEP-0163 §4.3: the caps of the session, and the last PEP items it wants.
        if available {
            self.pep_presence(from, initial, out);
        }
        if initial {
            self.send_contacts_presence(from, out);
            self.redeliver_subscription_requests(from, out);
            if priority >= 0 {
                self.deliver_offline(from, out);
            }
        }
    }

    /// Sends `presence` from `from` to its subscribers and to the account's own available
    /// resources (the sender included).
    pub(super) fn broadcast_presence(
        &self,
        from: &FullJid,
        mut presence: Presence,
        out: &mut Vec<Delivery>,
    ) {
        presence.from = Some(from.clone().into());
        let user = from.to_bare();
        let subscribers = self.contacts_where(&user, |item| {
            matches!(item.subscription, Subscription::From | Subscription::Both)
        });
        for contact in subscribers.iter().chain(std::iter::once(&user)) {
            self.presence_to_user(&presence, contact, out);
        }
        // The sender itself, if the broadcast made it unavailable (it is no longer listed).
        if presence.type_ == PresenceType::Unavailable {
            let mut copy = presence.clone();
            copy.to = Some(from.clone().into());
            if self.sessions.contains_key(from) {
                out.push(Delivery::stanza(from.clone(), copy));
            }
        }
    }

    /// The current presence of every contact `session` is subscribed to (answering the probes
    /// of RFC 6121 §4.3 locally).
    fn send_contacts_presence(&self, session: &FullJid, out: &mut Vec<Delivery>) {
        let user = session.to_bare();
        let contacts = self.contacts_where(&user, |item| {
            matches!(item.subscription, Subscription::To | Subscription::Both)
        });
        for contact in contacts {
            self.contact_presence_to(&contact, session, out);
        }
        // The account's other resources, too.
        for (jid, _) in self.available_of(&user) {
            if jid != *session {
                self.session_presence_to(&jid, session, out);
            }
        }
    }

    /// Every available resource of `contact`'s last presence, sent to `to`.
    fn contact_presence_to(&self, contact: &BareJid, to: &FullJid, out: &mut Vec<Delivery>) {
        // A contact at an external component's domain is asked by a probe (RFC 6121 §4.3.1).
        if self.probe_component_contact(&to.to_bare(), contact, out) {
            return;
        }
        for (jid, _) in self.available_of(contact) {
            self.session_presence_to(&jid, to, out);
        }
    }

    pub(super) fn session_presence_to(
        &self,
        session: &FullJid,
        to: &FullJid,
        out: &mut Vec<Delivery>,
    ) {
        // Rule 1a of `router.rs` (XEP-0191): no presence across a block, probes included.
        if self.presence_cut(session, to) {
            return;
        }
        if let Some(mut presence) = self.sessions.get(session).and_then(|s| s.presence.clone()) {
            presence.from = Some(session.clone().into());
            presence.to = Some(to.clone().into());
            out.push(Delivery::stanza(to.clone(), presence));
        }
    }

    fn redeliver_subscription_requests(&self, session: &FullJid, out: &mut Vec<Delivery>) {
        let requests = self
            .store
            .pending_subscription_requests(&node(session))
            .unwrap_or_default();
        for (contact, _) in requests {
            let Ok(contact) = Jid::new(&contact) else {
                continue;
            };
            // Rule 1a of `router.rs` (XEP-0191): not from a JID the account blocks.
            if self.presence_cut(&contact, session) {
                continue;
            }
            let mut request = Presence::new(PresenceType::Subscribe);
            request.from = Some(contact);
            request.to = Some(session.to_bare().into());
            out.push(Delivery::stanza(session.clone(), request));
        }
    }

    fn directed_presence(&self, presence: Presence, to: Jid, out: &mut Vec<Delivery>) {
        if to.node().is_none() {
            return;
        }
        match to.clone().try_into_full() {
            Ok(full) => {
                if self.sessions.contains_key(&full) {
                    out.push(Delivery::stanza(full, presence));
                }
            }
            Err(bare) => self.presence_to_user(&presence, &bare, out),
        }
    }

    /// One subscription stanza of `kind` from `user` to the local `contact` (RFC 6121 §3).
    pub(super) fn subscription_change(
        &mut self,
        user: &BareJid,
        contact: &BareJid,
        kind: PresenceType,
        out: &mut Vec<Delivery>,
    ) {
        if !self.is_local_account(contact) {
            if kind == PresenceType::Subscribe {
                // RFC 6121 §3.1.3: no such contact, so the request is refused on its behalf.
                let mut refusal = Presence::new(PresenceType::Unsubscribed);
                refusal.from = Some(contact.clone().into());
                self.presence_to_user(&refusal, user, out);
            }
            return;
        }
        let mut mine = self.roster_entry(user, contact);
        let mut theirs = self.roster_entry(contact, user);
        let stanza = |kind: PresenceType, from: &BareJid| {
            let mut p = Presence::new(kind);
            p.from = Some(from.clone().into());
            p
        };
        match kind {
            PresenceType::Subscribe => {
                if matches!(theirs.subscription, Subscription::From | Subscription::Both) {
                    // Already approved: answer on the contact's behalf.
                    self.presence_to_user(&stanza(PresenceType::Subscribed, contact), user, out);
                    return;
                }
                if !matches!(mine.subscription, Subscription::To | Subscription::Both) && !mine.ask
                {
                    mine.ask = true;
                    self.save_and_push(user, mine, out);
                }
                if !theirs.pending_in {
                    theirs.pending_in = true;
                    if let Some(owner) = contact.node() {
                        if let Err(error) = self.store.record_subscription_request(
                            owner.as_str(),
                            &user.to_string(),
                            None,
                        ) {
                            tracing::error!(%contact, "could not store a subscription request: {error}");
                        }
                    }
                }
                self.presence_to_user(&stanza(PresenceType::Subscribe, user), contact, out);
            }
            PresenceType::Subscribed => {
                // `user` approves `contact`'s request.
                if !theirs.ask && !mine.pending_in {
                    return; // No request to approve (pre-approval is not supported).
                }
                mine.pending_in = false;
                mine.subscription = match mine.subscription {
                    Subscription::None | Subscription::From => Subscription::From,
                    Subscription::To | Subscription::Both => Subscription::Both,
                };
                self.save_and_push(user, mine, out);
                theirs.ask = false;
                theirs.subscription = match theirs.subscription {
                    Subscription::None | Subscription::To => Subscription::To,
                    Subscription::From | Subscription::Both => Subscription::Both,
                };
                self.save_and_push(contact, theirs, out);
                self.presence_to_user(&stanza(PresenceType::Subscribed, user), contact, out);
                // XEP-0060 §12.20 `on_sub`: the new subscriber gets the user's last PEP items.
                self.pep_new_subscriber(user, contact, out);
                // The new subscriber sees the user's current presence.
                for (session, _) in self.available_of(user) {
                    for (target, _) in self.available_of(contact) {
                        self.session_presence_to(&session, &target, out);
                    }
                }
            }
            PresenceType::Unsubscribe => {
                // `user` no longer wants `contact`'s presence.
                mine.ask = false;
                mine.subscription = match mine.subscription {
                    Subscription::To | Subscription::None => Subscription::None,
                    Subscription::Both | Subscription::From => Subscription::From,
                };
                self.save_and_push(user, mine, out);
                theirs.pending_in = false;
                theirs.subscription = match theirs.subscription {
                    Subscription::From | Subscription::None => Subscription::None,
                    Subscription::Both | Subscription::To => Subscription::To,
                };
                self.save_and_push(contact, theirs, out);
                self.presence_to_user(&stanza(PresenceType::Unsubscribe, user), contact, out);
                self.unavailable_from(contact, user, out);
            }
            PresenceType::Unsubscribed => {
                // `user` cancels (or denies) `contact`'s subscription to the user.
                mine.pending_in = false;
                mine.subscription = match mine.subscription {
                    Subscription::From | Subscription::None => Subscription::None,
                    Subscription::Both | Subscription::To => Subscription::To,
                };
                self.save_and_push(user, mine, out);
                theirs.ask = false;
                theirs.subscription = match theirs.subscription {
                    Subscription::To | Subscription::None => Subscription::None,
                    Subscription::Both | Subscription::From => Subscription::From,
                };
                self.save_and_push(contact, theirs, out);
                self.presence_to_user(&stanza(PresenceType::Unsubscribed, user), contact, out);
                self.unavailable_from(user, contact, out);
            }
            _ => {}
        }
    }

    /// Unavailable presence from each available resource of `from` to `to`'s resources, after
    /// a subscription ended.
    fn unavailable_from(&self, from: &BareJid, to: &BareJid, out: &mut Vec<Delivery>) {
        for (session, _) in self.available_of(from) {
            let mut gone = Presence::new(PresenceType::Unavailable);
            gone.from = Some(session.into());
            self.presence_to_user(&gone, to, out);
        }
    }
}

#[cfg(test)]
mod tests;
