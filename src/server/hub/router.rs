//! Delivery rules for messages and IQs (RFC 6120 §10, RFC 6121 §8), one domain, no federation,
//! and the external components (XEP-0114) attached to it. Presence follows rules 1, 2 and 6
//! too; its other rules are in `presence.rs`.
//!
//! The rules, in the order they are applied:
//!
//! 1. **Every stanza is stamped** with the sender's full JID (the connection has already refused a
//!    `from` that is not the sender's own), and every available presence with the sender's
//!    vCard photo hash (XEP-0398 §4, `vcard.rs`; see `presence.rs`).
//!
//!    **1a. Block lists** (XEP-0191, `blocking.rs`), before any other rule, for every stanza
//!    between two parties (never between two resources of one account, and never for a
//!    stanza to the server's own domain, which the user cannot cut itself off from):
//!    - **from a JID the recipient account blocks** (§3.5; the item may be the sender's full
//!      JID, its bare JID or its domain): it never reaches the account. `chat` and `normal`
//!      messages and IQ get/set get `service-unavailable`, as if the account were not there;
//!      presence of every kind (updates, subscription stanzas, probes) and other messages are
//!      dropped without an answer; nothing is stored offline;
//!    - **to a JID the sender blocks** (§3.6): not routed; messages and IQ get/set get
//!      `not-acceptable` (type `cancel`) with `<blocked xmlns='urn:xmpp:blocking:errors'/>`;
//!      the sender's presence is dropped (clients send much of it on the user's behalf;
//!      Prosody drops it too);
//!    - the same holds for the presence the server sends out itself (broadcasts, the
//!      presence that answers probes at login, presence after a subscription is approved:
//!      `presence.rs`), so presence is cut both ways, per resource when the item is a full
//!      JID; and for stanzas from an external component's addresses to an account that
//!      blocks them;
//!    - errors and IQ results across a block are dropped (rule 6).
//!
//!    Blocking a contact sends it unavailable presence from the user's resources (§3.3);
//!    unblocking sends the current presence again (§3.4); see `blocking.rs`.
//! 2. **Another domain**:
//!    - **an external component's domain** (XEP-0114, `--component NAME`): a stanza of any
//!      kind to `NAME`, `NAME/…` or `…@NAME…` goes to the component as it is, stamped, whether
//!      or not the component knows the address. With no component connected for `NAME`,
//!      get/set IQs, messages and presence get `remote-server-timeout` (type `wait`: it may
//!      come back; Prosody answers the same); errors and IQ results are dropped. The same
//!      answer comes back when the component's connection ended after the stanza was routed
//!      to it, or it stopped reading (the driver hands the stanza back,
//!      `Hub::component_undelivered`): never silence. A `chat`
//!      message to a component is carbon-copied to the sender's other resources like any
//!      other (XEP-0280 §6);
//!    - **the room service's domain** (XEP-0045, `conference.DOMAIN`, `muc/`), unless a
//!      component serves that domain: a stanza of any kind from a local session to the
//!      service, a room `room@service` or an occupant `room@service/nick` goes to the room
//!      service, stamped, which answers it (disco, self-ping), refuses it (a non-occupant's
//!      groupchat: `not-acceptable`) or sends the room's stanzas to the occupants' real full
//!      JIDs. A session that ends, or sends unavailable presence with no `to` (RFC 6121
//!      §4.6.3), leaves every room it is in;
//!    - any other domain: there is no server-to-server, so `remote-server-not-found` (RFC 6120
//!      §10.4.3), for messages, IQ get/set and presence alike (presence: see `presence.rs`);
//!      errors and results are not answered (rule 6).
//! 3. **No `to`, or the server's domain**: the server handles it.
//!    - An IQ get/set to the server's domain goes to the service that handles it at
//!      [`Target::Server`] (ping, disco, version, session), answered from the server's JID. One
//!      about the sender's own account data (roster, private storage, carbons: clients send
//!      those to the server too) is handled as if sent to the sender's own bare JID (rule 4),
//!      and answered from that JID. Any other get/set gets `service-unavailable`.
//!    - An IQ with no `to` is handled as if sent to the sender's own bare JID (RFC 6120
//!      §10.3.3), and answered with no `from`.
//!    - Messages to the server get `service-unavailable` (errors and headlines are dropped);
//!      a message with no `to` is handled as sent to the server.
//!    - IQ results and errors to the server are dropped, except the answer to the server's
//!      own disco#info query about a session's entity capabilities (XEP-0115 §6.2), which PEP
//!      asks to learn whom to notify (XEP-0163 §4.3): a result or error from that session
//!      with that query's id goes to PEP (`pep/caps.rs`); nothing is ever answered.
//! 4. **A bare JID `user@domain`**:
//!    - no such account: messages and IQ get/set get `service-unavailable`; anything else is
//!      dropped;
//!    - IQs are handled by the server on the account's behalf (RFC 6121 §8.5.2): to the
//!      sender's own bare JID, by the services at [`Target::OwnAccount`] (roster, private
//!      storage, carbons, session, ping, disco, vCard); to another account, by the services at
//!      [`Target::OtherAccount`] (ping, disco, vCard get; a vCard set there is `forbidden`,
//!      XEP-0054 §3.2); other get/set get `service-unavailable`,
//!      results and errors are dropped;
//!    - `chat` and `normal` messages go to the available resources with the highest
//!      non-negative priority (every one of them, if several tie); `headline` to every
//!      available resource with non-negative priority; with no such resource, `chat` and
//!      `normal` are stored offline (XEP-0160: on disk before anything else happens) and
//!      delivered when the account next sends available presence; `headline` and `error` are
//!      dropped; `groupchat` gets `service-unavailable`.
//! 5. **A full JID `user@domain/resource`**:
//!    - a bound session: delivered to it;
//!    - otherwise: messages are handled as if sent to the bare JID (rule 4), except `groupchat`
//!      (`service-unavailable`) and `error` (dropped); IQ get/set get `service-unavailable`;
//!      IQ results and errors are dropped.
//! 6. **Never answer an error or a result** (RFC 6120 §8.3.1): every bounce goes through
//!    [`super::bounce`], which refuses to.
//!
//! Message carbons (XEP-0280 §6, §7): a `chat` message delivered to an account (to its bare JID
//! or to one of its full JIDs) is copied (wrapped in `<received/>`) to that account's other
//! carbons-enabled available resources, and a `chat` message sent by a resource to an account
//! of this domain is copied (wrapped in `<sent/>`) to the sender's other carbons-enabled
//! resources. Messages without a body, with `<private xmlns='urn:xmpp:carbons:2'/>` (or any
//! other element of the carbons namespace) or with the `<no-copy/>` hint (XEP-0334) are not
//! copied.
//!
//! Message archive (XEP-0313 §6, `mam.rs`): a client's or a component's `<stanza-id/>` that
//! claims to be by this domain or one of its accounts is removed first (XEP-0359 §5). Then a
//! `chat` or `normal` message with a body is archived for the sender when it goes to a bound
//! session or an existing account (rules 4, 5) or to a component (rule 2), and for the
//! recipient account when it is delivered or stored offline (rules 4, 5), each as that
//! account's preferences say; the delivered message, and the recipient's `<received/>`
//! carbons, carry the recipient's `<stanza-id/>`, the sender's `<sent/>` carbons the sender's.
//!
//! 7. **Undelivered** (XEP-0198 §5): a stanza delivered to a session that ended before its
//!    client acknowledged it (with stream management), or that found the session's queue closed
//!    or full, is treated as sent to an unavailable resource ([`Hub::undelivered`], in
//!    `offline.rs`): `chat` and `normal` messages with a body are stored offline for the account
//!    (even if another resource is online); IQ get/set get `recipient-unavailable`; the rest is
//!    dropped.
//!
//! Stanzas **from an external component** (XEP-0114 §3; `components.rs`) follow the same rules
//! with the component in the sender's place:
//!
//! - its `from` must be `NAME` or a JID at `NAME` (the connection ends with `invalid-from`
//!   otherwise); a stanza with no `from` is sent from `NAME`, and one with no `to` gets
//!   `bad-request`, as in Prosody;
//! - to another domain: rule 2 (a component's domain, its own included, or none);
//! - messages to an account: rules 4 and 5 (offline storage included, carbons for the
//!   recipient's other resources); to the server's domain: `service-unavailable`;
//! - IQs to a bound full JID are delivered; every other get/set (to the server's domain, to an
//!   account's bare JID, to a resource that is not bound) gets `service-unavailable`: the
//!   server's own services answer local sessions only;
//! - presence to a bound full JID is delivered; to an account's bare JID it goes to that
//!   account's available resources; to the server's domain it is dropped. Subscription
//!   stanzas and probes, between an account and an address at a component, follow
//!   `presence.rs` (the account's side of RFC 6121 §3, §4.3, in `components/subscriptions.rs`).
//!
//! Presence and subscriptions have rules of their own, written down in `presence.rs`.
//!
//! A new service that changes where a stanza goes (blocking, rule 1a; rooms at `conference.DOMAIN`,
//! archiving) adds its rule to this list, at the point where it applies, and the call to it at
//! the same point in the code below.

use tokio_xmpp::jid::{BareJid, FullJid};
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::{Message, MessageType};
use tokio_xmpp::parsers::stanza_error::DefinedCondition;
use tokio_xmpp::Stanza;

use super::service::Target;
use super::{bounce, Delivery, Hub, ReplyTo};

impl Hub {
    /// Routes a message from the bound session `from` (rules 2–6 of the module docs).
    pub(super) fn route_message(
        &mut self,
        from: &FullJid,
        mut message: Message,
        out: &mut Vec<Delivery>,
    ) {
        self.strip_stanza_ids(&mut message);
        let reply = |condition, out: &mut Vec<Delivery>| {
            if let Some(error) = bounce(&Stanza::Message(message.clone()), condition) {
                out.push(Delivery::stanza(from.clone(), error));
            }
        };
        let Some(to) = message.to.clone() else {
            reply(DefinedCondition::ServiceUnavailable, out);
            return;
        };
        if !self.is_local_domain(&to) {
            reply(DefinedCondition::RemoteServerNotFound, out);
            return;
        }
        if to.node().is_none() {
            // To the server itself.
            if !matches!(message.type_, MessageType::Error | MessageType::Headline) {
                reply(DefinedCondition::ServiceUnavailable, out);
            }
            return;
        }
        // The sender's archive, for a message that reaches a session or an account.
        let bound = to
            .clone()
            .try_into_full()
            .is_ok_and(|full| self.sessions.contains_key(&full));
        let mut xml = None;
        let sent = if self.archive_enabled() && (bound || self.is_local_account(&to.to_bare())) {
            self.archive_sent(from, &to, &message, &mut xml)
        } else {
            None
        };
        // Outgoing carbons for the sender's other resources.
        self.carbon_copy_sent(from, sent.as_ref().unwrap_or(&message), out);

        if let Ok(full) = to.clone().try_into_full() {
            if self.sessions.contains_key(&full) {
                self.archive_received(&full.to_bare(), &mut message, &mut xml);
                // The recipient's other devices see the conversation too.
                self.carbon_copy_received(
                    &full.to_bare(),
                    std::slice::from_ref(&full),
                    &message,
                    out,
                );
                out.push(Delivery::stanza(full, message));
                return;
            }
            if matches!(message.type_, MessageType::Error) {
                return;
            }
        }
        let bare = to.to_bare();
        self.deliver_to_bare(from, &bare, message, out);
    }

    /// Rule 4 for messages: delivery to an account's bare JID. Errors go to `from`, the session
    /// or the component (XEP-0114) that sent the message.
    pub(super) fn deliver_to_bare(
        &mut self,
        from: impl Into<ReplyTo>,
        bare: &BareJid,
        mut message: Message,
        out: &mut Vec<Delivery>,
    ) {
        let from: ReplyTo = from.into();
        let bounce_to_sender = |condition, out: &mut Vec<Delivery>| {
            if let Some(error) = bounce(&Stanza::Message(message.clone()), condition) {
                out.push(from.delivery(error));
            }
        };
        if !self.is_local_account(bare) {
            if matches!(
                message.type_,
                MessageType::Chat | MessageType::Normal | MessageType::Groupchat
            ) {
                bounce_to_sender(DefinedCondition::ServiceUnavailable, out);
            }
            return;
        }
        let available: Vec<(FullJid, i8)> = self
            .available_of(bare)
            .into_iter()
            .filter(|(_, priority)| *priority >= 0)
            .collect();
        match message.type_ {
            MessageType::Groupchat => bounce_to_sender(DefinedCondition::ServiceUnavailable, out),
            MessageType::Error => {
                if let Some(best) = highest(&available).first() {
                    out.push(Delivery::stanza(best.clone(), message));
                }
            }
            MessageType::Headline => {
                for (jid, _) in available {
                    out.push(Delivery::stanza(jid, message.clone()));
                }
            }
            MessageType::Chat | MessageType::Normal => {
                self.archive_received(bare, &mut message, &mut None);
                let targets = highest(&available);
                if targets.is_empty() {
                    self.store_offline(from.clone(), bare, message, out);
                    return;
                }
                for jid in &targets {
                    out.push(Delivery::stanza(jid.clone(), message.clone()));
                }
                if message.type_ == MessageType::Chat {
                    self.carbon_copy_received(bare, &targets, &message, out);
                }
            }
        }
    }

    /// Routes an IQ from the bound session `from`.
    pub(super) fn route_iq(&mut self, from: &FullJid, iq: Iq, out: &mut Vec<Delivery>) {
        let is_request = matches!(iq, Iq::Get { .. } | Iq::Set { .. });
        let fail = |iq: &Iq, condition, out: &mut Vec<Delivery>| {
            if let Some(error) = bounce(&Stanza::Iq(iq.clone()), condition) {
                out.push(Delivery::stanza(from.clone(), error));
            }
        };
        let to = iq.to().cloned();
        match to {
            None => self.serve_iq(from, iq, Target::OwnAccount, out),
            Some(to) if !self.is_local_domain(&to) => {
                if is_request {
                    fail(&iq, DefinedCondition::RemoteServerNotFound, out);
                }
            }
            Some(to) if to.node().is_none() => {
                if is_request {
                    self.serve_iq(from, iq, Target::Server, out);
                } else {
                    // Answers to the server's own queries: only PEP asks (caps, XEP-0115).
                    self.pep_caps_answer(from, iq, out);
                }
            }
            Some(to) => match to.clone().try_into_full() {
                Ok(full) => {
                    if self.sessions.contains_key(&full) {
                        out.push(Delivery::stanza(full, iq));
                    } else if is_request {
                        fail(&iq, DefinedCondition::ServiceUnavailable, out);
                    }
                }
                Err(bare) => {
                    if bare == from.to_bare() {
                        self.serve_iq(from, iq, Target::OwnAccount, out);
                    } else if !self.is_local_account(&bare) {
                        if is_request {
                            fail(&iq, DefinedCondition::ServiceUnavailable, out);
                        }
                    } else {
                        self.serve_iq(from, iq, Target::OtherAccount, out);
                    }
                }
            },
        }
    }
}

/// The resources with the highest priority among `available` (several if they tie).
fn highest(available: &[(FullJid, i8)]) -> Vec<FullJid> {
    let Some(top) = available.iter().map(|(_, p)| *p).max() else {
        return Vec::new();
    };
    available
        .iter()
        .filter(|(_, p)| *p == top)
        .map(|(jid, _)| jid.clone())
        .collect()
}

#[cfg(test)]
mod tests;
