//! XEP-0280 message carbons: copies of a user's `chat` messages for the user's other
//! carbons-enabled resources, so every device shows the whole conversation.
//!
//! Two parts: the switch (`<enable/>`/`<disable/>`, XEP-0280 §4, kept per session in
//! [`BoundSession::carbons`](super::BoundSession::carbons)), and the copies, which the router
//! asks for when it delivers a `chat` message (the rules are in `router.rs`).

use tokio_xmpp::jid::{BareJid, FullJid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::message::{Message, MessageType};
use tokio_xmpp::parsers::ns;

use super::service::{Entity, IqRequest, Service, Target};
use super::{Delivery, Hub};

/// The carbons switch of a session (XEP-0280 §4), advertised by the server (§3).
pub(super) struct Carbons;

impl Service for Carbons {
    fn features(&self, entity: Entity) -> &'static [&'static str] {
        match entity {
            Entity::Server => &[ns::CARBONS],
            Entity::Account => &[],
        }
    }

    fn handles(&self, request: &IqRequest) -> bool {
        request.at == Target::OwnAccount
            && (request.is_set("enable", ns::CARBONS) || request.is_set("disable", ns::CARBONS))
    }

    fn is_account_data(&self, payload: &Element) -> bool {
        payload.ns() == ns::CARBONS
    }

    fn handle(&self, hub: &mut Hub, request: IqRequest, out: &mut Vec<Delivery>) {
        let enabled = request.payload.is("enable", ns::CARBONS);
        if let Some(session) = hub.sessions.get_mut(&request.from) {
            session.carbons = enabled;
        }
        request.answer(Ok(None), out);
    }
}

impl Hub {
    /// `<sent/>` copies of an outgoing message for the sender's other resources.
    pub(super) fn carbon_copy_sent(
        &self,
        from: &FullJid,
        message: &Message,
        out: &mut Vec<Delivery>,
    ) {
        if !carbon_eligible(message) {
            return;
        }
        let user = from.to_bare();
        for jid in self.carbon_targets(&user, std::slice::from_ref(from)) {
            out.push(Delivery::stanza(
                jid.clone(),
                wrap("sent", &user, &jid, message),
            ));
        }
    }

    /// `<received/>` copies of an incoming message for the recipient's resources that did not
    /// get it directly.
    pub(super) fn carbon_copy_received(
        &self,
        user: &BareJid,
        delivered_to: &[FullJid],
        message: &Message,
        out: &mut Vec<Delivery>,
    ) {
        if !carbon_eligible(message) {
            return;
        }
        for jid in self.carbon_targets(user, delivered_to) {
            out.push(Delivery::stanza(
                jid.clone(),
                wrap("received", user, &jid, message),
            ));
        }
    }

    fn carbon_targets(&self, user: &BareJid, except: &[FullJid]) -> Vec<FullJid> {
        self.available_of(user)
            .into_iter()
            .map(|(jid, _)| jid)
            .filter(|jid| !except.contains(jid))
            .filter(|jid| self.sessions.get(jid).is_some_and(|s| s.carbons))
            .collect()
    }
}

/// `chat` messages with a body are copied, unless marked private or already a carbon.
fn carbon_eligible(message: &Message) -> bool {
    message.type_ == MessageType::Chat
        && !message.bodies.is_empty()
        && !message
            .payloads
            .iter()
            .any(|p| p.ns() == ns::CARBONS || p.is("no-copy", "urn:xmpp:hints"))
}

/// The copy for `to`: `message` forwarded (XEP-0297) inside `<sent/>` or `<received/>`, from the
/// account's bare JID (XEP-0280 §6, §7).
fn wrap(kind: &str, user: &BareJid, to: &FullJid, message: &Message) -> tokio_xmpp::Stanza {
    let forwarded = Element::builder("forwarded", ns::FORWARD)
        .append(Element::from(message.clone()))
        .build();
    let carbon = Element::builder(kind, ns::CARBONS)
        .append(forwarded)
        .build();
    let mut copy = Message::new_with_type(MessageType::Chat, Some(to.clone().into()));
    copy.from = Some(user.clone().into());
    copy.payloads.push(carbon);
    copy.into()
}

#[cfg(test)]
mod tests;
