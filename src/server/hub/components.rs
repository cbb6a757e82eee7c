//! External components (XEP-0114): the domains they serve, whether one is connected, and the
//! stanzas between them and everyone else. The delivery rules are written down in `router.rs`
//! (rule 2, and "Stanzas from an external component"); presence subscriptions between accounts
//! and a component's addresses are in `components/subscriptions.rs`.
//!
//! The connection (`src/server/component/`) authenticates a component and ends it when it sends
//! from an address outside its domain; the hub keeps which domains have a component connected
//! and routes. One connection per domain: a second one that authenticates while the first
//! lasts is refused with `conflict`, as Prosody's mod_component does by default (`kick_new`), so
//! that two instances of a gateway started by mistake do not take turns stealing its stanzas.

use tokio_xmpp::jid::{BareJid, FullJid, Jid};
use tokio_xmpp::parsers::message::MessageType;
use tokio_xmpp::parsers::presence::Type as PresenceType;
use tokio_xmpp::parsers::stanza_error::DefinedCondition;
use tokio_xmpp::Stanza;

use super::{bounce, to_of, Delivery, Hub, ReplyTo};

/// Why the hub refuses a component's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ComponentRefused {
    /// No component is configured for this domain.
    #[error("no component is configured for this domain")]
    Unknown,
    /// Another connection serves this domain already (XEP-0114 leaves the choice to the
    /// server; Prosody refuses the new one by default).
    #[error("another connection serves this component already")]
    AlreadyConnected,
}

impl Hub {
    /// Serves the external component `domain` too (XEP-0114), not connected yet. A JID with a
    /// user part, or the server's own domain, is refused with `false` (the configuration
    /// refuses them with a message first).
    pub fn add_component(&mut self, domain: BareJid) -> bool {
        if domain.node().is_some() || domain == self.domain_jid {
            return false;
        }
        self.components.entry(domain).or_insert(false);
        true
    }

    /// The components' domains, connected or not (listed in the server's disco#items).
    pub(super) fn component_domains(&self) -> impl Iterator<Item = &BareJid> {
        self.components.keys()
    }

    /// A component authenticated for `domain`: stanzas to its domain go to it from now on.
    pub fn connect_component(&mut self, domain: &BareJid) -> Result<(), ComponentRefused> {
        match self.components.get_mut(domain) {
            None => Err(ComponentRefused::Unknown),
            Some(true) => Err(ComponentRefused::AlreadyConnected),
            Some(connected) => {
                *connected = true;
                Ok(())
            }
        }
    }

    /// The component of `domain` disconnected: stanzas to its domain are refused until another
    /// one connects.
    pub fn disconnect_component(&mut self, domain: &BareJid) {
        if let Some(connected) = self.components.get_mut(domain) {
            *connected = false;
        }
    }

    /// The component domain that `stanza` is addressed to, if any.
    pub(super) fn component_addressed(&self, stanza: &Stanza) -> Option<BareJid> {
        self.component_serving(to_of(stanza)?)
    }

    /// The component domain `jid` is at, if any.
    pub(super) fn component_serving(&self, jid: &Jid) -> Option<BareJid> {
        if self.components.is_empty() {
            return None;
        }
        let domain = BareJid::from_parts(None, jid.domain());
        self.components.contains_key(&domain).then_some(domain)
    }

    /// Rule 2 for a stanza from the bound session `from` to the component of `domain`.
    pub(super) fn session_to_component(
        &mut self,
        from: &FullJid,
        domain: BareJid,
        mut stanza: Stanza,
        out: &mut Vec<Delivery>,
    ) {
        set_from(&mut stanza, from.clone().into());
        if let Stanza::Presence(presence) = stanza {
            if is_subscription(&presence.type_) {
                return self.subscription_to_component(from, domain, presence, out);
            }
            stanza = presence.into();
        }
        if let Stanza::Message(mut message) = stanza {
            self.strip_stanza_ids(&mut message);
            if self.components.get(&domain) == Some(&true) {
                // The sender's archive (XEP-0313) and its other devices.
                let to = message.to.clone().unwrap_or_else(|| domain.clone().into());
                let sent = self.archive_sent(from, &to, &message, &mut None);
                self.carbon_copy_sent(from, sent.as_ref().unwrap_or(&message), out);
            }
            stanza = message.into();
        }
        self.to_component(&ReplyTo::Session(from.clone()), domain, stanza, out);
    }

    /// Hands `stanza` to the component of `domain`, or, when none is connected, bounces it to
    /// `sender` with `remote-server-timeout`.
    pub(super) fn to_component(
        &self,
        sender: &ReplyTo,
        domain: BareJid,
        stanza: Stanza,
        out: &mut Vec<Delivery>,
    ) {
        if self.components.get(&domain) == Some(&true) {
            out.push(Delivery::Component(domain, Box::new(stanza)));
        } else if let Some(error) = bounce(&stanza, DefinedCondition::RemoteServerTimeout) {
            out.push(sender.delivery(error));
        }
    }

    /// A stanza for a component that its queue did not take (its connection ended after the
    /// hub routed the stanza to it, or it stopped reading): the sender, if it is a bound
    /// session, hears `remote-server-timeout`, as when no component is connected (rule 2 of
    /// `router.rs`). Errors and IQ results are dropped (RFC 6120 §8.3.1).
    pub fn component_undelivered(&self, stanza: Stanza) -> Vec<Delivery> {
        let sender = match &stanza {
            Stanza::Message(message) => message.from.clone(),
            Stanza::Presence(presence) => presence.from.clone(),
            Stanza::Iq(iq) => iq.from().cloned(),
        };
        let Some(Ok(sender)) = sender.map(Jid::try_into_full) else {
            return Vec::new();
        };
        if !self.sessions.contains_key(&sender) {
            return Vec::new();
        }
        bounce(&stanza, DefinedCondition::RemoteServerTimeout)
            .map(|error| Delivery::stanza(sender, error))
            .into_iter()
            .collect()
    }

    /// A stanza from the component of `domain` (see "Stanzas from an external component" in
    /// `router.rs`). The connection has already checked its `from`; one outside the domain is
    /// dropped here all the same.
    pub fn component_inbound(&mut self, domain: &BareJid, mut stanza: Stanza) -> Vec<Delivery> {
        let mut out = Vec::new();
        if self.components.get(domain) != Some(&true) || !sender_in_domain(&mut stanza, domain) {
            return out;
        }
        let sender = ReplyTo::Component(domain.clone());
        let Some(to) = to_of(&stanza).cloned() else {
            if let Some(error) = bounce(&stanza, DefinedCondition::BadRequest) {
                out.push(sender.delivery(error));
            }
            return out;
        };
        // Rule 1a of `router.rs` (XEP-0191): an account may block addresses at a component.
        if self.refuse_blocked_from_component(&sender, &stanza, &mut out) {
            return out;
        }
        if let Some(target) = self.component_serving(&to) {
            self.to_component(&sender, target, stanza, &mut out);
            return out;
        }
        if !self.is_local_domain(&to) {
            if let Some(error) = bounce(&stanza, DefinedCondition::RemoteServerNotFound) {
                out.push(sender.delivery(error));
            }
            return out;
        }
        let bound = to
            .clone()
            .try_into_full()
            .ok()
            .filter(|full| self.sessions.contains_key(full));
        match stanza {
            Stanza::Message(mut message) => {
                self.strip_stanza_ids(&mut message);
                if let Some(full) = bound {
                    self.archive_received(&full.to_bare(), &mut message, &mut None);
                    self.carbon_copy_received(
                        &full.to_bare(),
                        std::slice::from_ref(&full),
                        &message,
                        &mut out,
                    );
                    out.push(Delivery::stanza(full, message));
                } else if to.node().is_none() {
                    // To the server itself.
                    if !matches!(message.type_, MessageType::Error | MessageType::Headline) {
                        let error = bounce(&message.into(), DefinedCondition::ServiceUnavailable);
                        out.extend(error.map(|error| sender.delivery(error)));
                    }
                } else if message.type_ != MessageType::Error || to.resource().is_none() {
                    self.deliver_to_bare(sender, &to.to_bare(), message, &mut out);
                }
            }
            Stanza::Iq(iq) => match bound {
                Some(full) => out.push(Delivery::stanza(full, iq)),
                None => {
                    if let Some(error) = bounce(&iq.into(), DefinedCondition::ServiceUnavailable) {
                        out.push(sender.delivery(error));
                    }
                }
            },
            Stanza::Presence(presence) => match bound {
                // Subscriptions and probes are about the account, whatever the resource.
                _ if to.node().is_some()
                    && (is_subscription(&presence.type_)
                        || presence.type_ == PresenceType::Probe) =>
                {
                    self.subscription_from_component(domain, &to.to_bare(), presence, &mut out);
                }
                Some(full) => out.push(Delivery::stanza(full, presence)),
                // Errors go nowhere: nobody here asked.
                None if to.node().is_some()
                    && to.resource().is_none()
                    && presence.type_ != PresenceType::Error =>
                {
                    self.presence_to_user(&presence, &to.to_bare(), &mut out);
                }
                None => {}
            },
        }
        out
    }
}

/// Whether `stanza`, from the component of `domain`, is sent from an address in that domain:
/// `domain` itself or any JID at it (XEP-0114 §3: the component may use any address of its
/// domain). A stanza with no `from` is given `domain`, as Prosody does.
pub(crate) fn sender_in_domain(stanza: &mut Stanza, domain: &BareJid) -> bool {
    let from = match stanza {
        Stanza::Message(m) => &mut m.from,
        Stanza::Presence(p) => &mut p.from,
        Stanza::Iq(iq) => iq.from_mut(),
    };
    match from {
        None => {
            *from = Some(domain.clone().into());
            true
        }
        Some(jid) => jid.domain() == domain.domain(),
    }
}

/// Whether `kind` is one of the four subscription types (RFC 6121 §3).
pub(super) fn is_subscription(kind: &PresenceType) -> bool {
    matches!(
        kind,
        PresenceType::Subscribe
            | PresenceType::Subscribed
            | PresenceType::Unsubscribe
            | PresenceType::Unsubscribed
    )
}

/// Stamps the sender's address.
fn set_from(stanza: &mut Stanza, from: Jid) {
    match stanza {
        Stanza::Message(m) => m.from = Some(from),
        Stanza::Presence(p) => p.from = Some(from),
        Stanza::Iq(iq) => *iq.from_mut() = Some(from),
    }
}

mod subscriptions;

#[cfg(test)]
mod tests;
