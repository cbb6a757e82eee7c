//! XEP-0160 offline messages: a message for an account with no available resource is stored,
//! and delivered when the account next sends available presence with a non-negative priority.
//!
//! The router stores (rule 4 in `router.rs`); presence delivers (initial presence in
//! `presence.rs`). The per-account cap is the store's (`StoreError::OfflineFull`).

use tokio_xmpp::jid::{BareJid, FullJid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::message::Message;
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::stanza_error::DefinedCondition;

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
    /// non-negative priority is stored, stamped with its time of arrival (XEP-0203), before
    /// anything else happens; a full store bounces it with `resource-constraint` to `from`, the
    /// session or the component (XEP-0114) that sent it.
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
        stamped.payloads.push(delay_stamp(&self.domain));
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
