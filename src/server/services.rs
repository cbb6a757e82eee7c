//! The IQ services of the server and of an account's bare JID: ping (XEP-0199), disco
//! (XEP-0030), version (XEP-0092), the legacy session IQ (RFC 3921, sent by older clients), roster
//! (RFC 6121 §2), private XML storage (XEP-0049) and carbons (XEP-0280).

use tokio_xmpp::jid::FullJid;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::stanza_error::DefinedCondition;
use tokio_xmpp::Stanza;

use super::hub::{bounce, Delivery, Hub};

/// Legacy session establishment (RFC 3921 §3), still sent by older clients.
const NS_SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";

impl Hub {
    /// An IQ to the server's domain.
    pub(super) fn handle_server_iq(&mut self, from: &FullJid, iq: Iq, out: &mut Vec<Delivery>) {
        let answer = match &iq {
            Iq::Get { payload, .. } if payload.is("ping", ns::PING) => Ok(None),
            Iq::Get { payload, .. } if payload.is("query", ns::DISCO_INFO) => {
                super::disco::server_info(payload).map(Some)
            }
            Iq::Get { payload, .. } if payload.is("query", ns::DISCO_ITEMS) => {
                Ok(Some(super::disco::server_items(payload)))
            }
            Iq::Get { payload, .. } if payload.is("query", ns::VERSION) => Ok(Some(version())),
            Iq::Set { payload, .. } if payload.is("session", NS_SESSION) => Ok(None),
            // Clients also send their own-account requests to the server's JID.
            Iq::Get { payload, .. } | Iq::Set { payload, .. }
                if payload.is("query", ns::ROSTER)
                    || payload.is("query", ns::PRIVATE)
                    || payload.ns() == ns::CARBONS =>
            {
                return self.handle_own_iq(from, iq, out);
            }
            Iq::Result { .. } | Iq::Error { .. } => return,
            _ => Err(DefinedCondition::ServiceUnavailable),
        };
        self.answer(from, iq, Some(self.server_jid()), answer, out);
    }

    /// An IQ with no `to` or to the sender's own bare JID: handled on the account's behalf.
    pub(super) fn handle_own_iq(&mut self, from: &FullJid, iq: Iq, out: &mut Vec<Delivery>) {
        let answer = match &iq {
            Iq::Get { payload, .. } | Iq::Set { payload, .. }
                if payload.is("query", ns::ROSTER) =>
            {
                return self.handle_roster_iq(from, iq, out);
            }
            Iq::Get { payload, .. } if payload.is("query", ns::PRIVATE) => {
                self.private_get(from, payload).map(Some)
            }
            Iq::Set { payload, .. } if payload.is("query", ns::PRIVATE) => {
                self.private_set(from, payload).map(|()| None)
            }
            Iq::Set { payload, .. } if payload.is("enable", ns::CARBONS) => {
                self.set_carbons(from, true);
                Ok(None)
            }
            Iq::Set { payload, .. } if payload.is("disable", ns::CARBONS) => {
                self.set_carbons(from, false);
                Ok(None)
            }
            Iq::Set { payload, .. } if payload.is("session", NS_SESSION) => Ok(None),
            Iq::Get { payload, .. } if payload.is("ping", ns::PING) => Ok(None),
            Iq::Get { payload, .. } if payload.is("query", ns::DISCO_INFO) => {
                Ok(Some(super::disco::account_info(payload)))
            }
            Iq::Get { payload, .. } if payload.is("query", ns::DISCO_ITEMS) => {
                Ok(Some(super::disco::empty_items(payload)))
            }
            Iq::Result { .. } | Iq::Error { .. } => return,
            _ => Err(DefinedCondition::ServiceUnavailable),
        };
        let account = Some(from.to_bare().into());
        let account = if iq.to().is_some() { account } else { None };
        self.answer(from, iq, account, answer, out);
    }

    /// Sends `answer` (a result payload, or an error condition) to `to` for `iq`.
    pub(super) fn answer(
        &self,
        to: &FullJid,
        iq: Iq,
        from: Option<tokio_xmpp::jid::Jid>,
        answer: Result<Option<Element>, DefinedCondition>,
        out: &mut Vec<Delivery>,
    ) {
        let reply = match answer {
            Ok(payload) => Some(Stanza::Iq(Iq::Result {
                from,
                to: Some(to.clone().into()),
                id: iq.id().to_string(),
                payload,
            })),
            Err(condition) => {
                let mut request = iq;
                *request.to_mut() = from;
                bounce(&request.into(), condition)
            }
        };
        if let Some(reply) = reply {
            out.push(Delivery::stanza(to.clone(), reply));
        }
    }

    fn set_carbons(&mut self, jid: &FullJid, enabled: bool) {
        if let Some(session) = self.sessions.get_mut(jid) {
            session.carbons = enabled;
        }
    }

    /// XEP-0049 get: the stored child for the requested namespace, or the empty child.
    fn private_get(&self, from: &FullJid, query: &Element) -> Result<Element, DefinedCondition> {
        let child = single_child(query)?;
        let key = private_key(child);
        let user = node(from);
        let stored = self
            .store
            .get_private(&user, &key)
            .map_err(|_| DefinedCondition::InternalServerError)?;
        let content = match stored {
            Some(xml) => xml
                .parse::<Element>()
                .map_err(|_| DefinedCondition::InternalServerError)?,
            None => Element::builder(child.name(), child.ns()).build(),
        };
        Ok(Element::builder("query", ns::PRIVATE)
            .append(content)
            .build())
    }

    /// XEP-0049 set: stores the child under its namespace. The `jabber:client`,
    /// `jabber:server` and `jabber:iq:private` namespaces are refused (XEP-0049 §4).
    fn private_set(&mut self, from: &FullJid, query: &Element) -> Result<(), DefinedCondition> {
        let child = single_child(query)?;
        if matches!(
            child.ns().as_str(),
            "jabber:client" | "jabber:server" | ns::PRIVATE
        ) {
            return Err(DefinedCondition::NotAcceptable);
        }
        let key = private_key(child);
        self.store
            .set_private(&node(from), &key, &String::from(child))
            .map_err(|_| DefinedCondition::InternalServerError)
    }
}

fn single_child(query: &Element) -> Result<&Element, DefinedCondition> {
    let mut children = query.children();
    match (children.next(), children.next()) {
        (Some(child), None) => Ok(child),
        _ => Err(DefinedCondition::NotAcceptable),
    }
}

/// `{namespace}name`, the key private storage uses.
fn private_key(child: &Element) -> String {
    format!("{{{}}}{}", child.ns(), child.name())
}

/// The (lowercase) localpart of a bound JID.
pub(super) fn node(jid: &FullJid) -> String {
    jid.node()
        .map(|n| n.as_str().to_string())
        .unwrap_or_default()
}

fn version() -> Element {
    Element::builder("query", ns::VERSION)
        .append(Element::builder("name", ns::VERSION).append(env!("CARGO_PKG_NAME")))
        .append(Element::builder("version", ns::VERSION).append(env!("CARGO_PKG_VERSION")))
        .build()
}
