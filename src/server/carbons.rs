//! XEP-0280 message carbons: copies of a user's `chat` messages for the user's other
//! carbons-enabled resources, so every device shows the whole conversation.

use tokio_xmpp::jid::{BareJid, FullJid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::message::{Message, MessageType};
use tokio_xmpp::parsers::ns;

use super::hub::{Delivery, Hub};

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
