//! XEP-0160 offline messages: a message for an account with no available resource is stored,
//! and delivered when the account next sends available presence with a non-negative priority.
//!
//! The router stores (rule 4 in `router.rs`); presence delivers (initial presence in
//! `presence.rs`). The per-account cap is the store's (`StoreError::OfflineFull`).
//!
//! Stream management (XEP-0198) adds a second way in: a session that ends for good hands back
//! what it was sent and never acknowledged ([`Hub::undelivered`]), and the messages among them
//! are stored here too.

use tokio_xmpp::jid::{BareJid, FullJid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::{Message, MessageType};
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::stanza_error::DefinedCondition;
use tokio_xmpp::Stanza;

use super::service::{Entity, Service};
use super::{bounce, node, Delivery, Hub, ReplyTo};
use crate::server::store::StoreError;

/// Advertises offline storage (`msgoffline`, XEP-0160); it answers no IQ.
pub(super) struct Offline;

impl Service for Offline {
    fn features(&self, entity: Entity) -> &'static [&'static str] {
        match entity {
            Entity::Server => &["msgoffline"],
            Entity::Account => &[],
        }
    }
}

impl Hub {
    /// XEP-0160: a `chat` or `normal` message for an account with no available resource of
    /// non-negative priority is stored, stamped with its time of arrival (XEP-0203) unless it
    /// already carries a stamp, before anything else happens; a full store bounces it with
    /// `resource-constraint` to `from`, the session or the component (XEP-0114) that sent it.
    pub(super) fn store_offline(
        &mut self,
        from: impl Into<ReplyTo>,
        bare: &BareJid,
        message: Message,
        out: &mut Vec<Delivery>,
    ) {
        let Some(node) = bare.node() else { return };
        let from: ReplyTo = from.into();
        let mut stamped = message.clone();
        if !stamped.payloads.iter().any(|p| p.is("delay", ns::DELAY)) {
            stamped.payloads.push(delay_stamp(&self.domain));
        }
        let xml = String::from(&Element::from(stamped));
        match self.store.store_offline(node.as_str(), &xml) {
            Ok(_) => {}
            Err(StoreError::OfflineFull { .. }) => {
                if let Some(error) = bounce(&message.into(), DefinedCondition::ResourceConstraint) {
                    out.push(from.delivery(error));
                }
            }
            Err(error) => {
                tracing::error!(%bare, "could not store an offline message: {error}");
                if let Some(error) = bounce(&message.into(), DefinedCondition::InternalServerError)
                {
                    out.push(from.delivery(error));
                }
            }
        }
    }

    /// XEP-0160: stored messages go to the session that just became available, then are
    /// deleted (a crash in between delivers them again rather than losing them).
    pub(super) fn deliver_offline(&mut self, session: &FullJid, out: &mut Vec<Delivery>) {
        let user = node(session);
        let stored = match self.store.offline_messages(&user) {
            Ok(stored) => stored,
            Err(error) => {
                tracing::error!(%session, "could not read offline messages: {error}");
                return;
            }
        };
        let mut delivered = Vec::with_capacity(stored.len());
        let mut messages = Vec::with_capacity(stored.len());
        for (id, xml) in stored {
            match xml
                .parse::<Element>()
                .ok()
                .and_then(|e| Message::try_from(e).ok())
            {
                Some(mut message) => {
                    message.to = Some(session.clone().into());
                    messages.push(message.into());
                }
                None => tracing::warn!(%session, id, "dropping an unreadable offline message"),
            }
            delivered.push(id);
        }
        if !messages.is_empty() {
            out.push(Delivery::Batch(session.clone(), messages));
        }
        if !delivered.is_empty() {
            if let Err(error) = self.store.delete_offline(&user, &delivered) {
                tracing::error!(%session, "could not delete delivered offline messages: {error}");
            }
        }
    }
}

impl Hub {
    /// What the ended session `session` was sent and never acknowledged (XEP-0198), after the
    /// session was unbound. XEP-0198 §5: "A server SHOULD treat unacknowledged stanzas in the
    /// same way that it would treat a stanza sent to an unavailable resource":
    ///
    /// - `chat` and `normal` messages with a body are stored offline for the account, even if
    ///   another of its resources is online (that one may have seen them already, as a carbon
    ///   or a copy of a message to the bare JID; a second copy at the next login is better than
    ///   none), and arrive at its next login; a full store bounces them to their sender;
    /// - IQ requests are answered with `recipient-unavailable` (as Prosody's `mod_smacks` does),
    ///   so the requester does not wait for its timeout;
    /// - everything else (presence, IQ results and errors, messages without a body such as
    ///   chat states and receipts, errors, headlines) is dropped.
    pub fn undelivered(&mut self, session: &FullJid, stanzas: Vec<Stanza>) -> Vec<Delivery> {
        let mut out = Vec::new();
        let bare = session.to_bare();
        for stanza in stanzas {
            match stanza {
                Stanza::Message(message)
                    if matches!(message.type_, MessageType::Chat | MessageType::Normal)
                        && !message.bodies.is_empty() =>
                {
                    let sender = message
                        .from
                        .clone()
                        .and_then(|from| from.try_into_full().ok());
                    match sender {
                        Some(sender) => self.store_offline(&sender, &bare, message, &mut out),
                        // From the server or a bare JID: nobody to bounce to if it is full.
                        None => self.store_offline(session, &bare, message, &mut Vec::new()),
                    }
                }
                Stanza::Iq(ref iq @ (Iq::Get { .. } | Iq::Set { .. })) => {
                    let requester = iq.from().cloned().and_then(|f| f.try_into_full().ok());
                    let error = bounce(&stanza, DefinedCondition::RecipientUnavailable);
                    if let (Some(requester), Some(error)) = (requester, error) {
                        if requester != *session {
                            out.push(Delivery::stanza(requester, error));
                        }
                    }
                }
                _ => {}
            }
        }
        out
    }
}

/// XEP-0203 delay stamp for stored messages, so clients show when they were sent.
fn delay_stamp(domain: &str) -> Element {
    let now = std::time::SystemTime::now();
    let stamp = humantime::format_rfc3339_seconds(now).to_string();
    Element::builder("delay", ns::DELAY)
        .attr(
            tokio_xmpp::minidom::rxml::xml_ncname!("from").into(),
            domain,
        )
        .attr(
            tokio_xmpp::minidom::rxml::xml_ncname!("stamp").into(),
            stamp,
        )
        .build()
}

#[cfg(test)]
mod tests;
