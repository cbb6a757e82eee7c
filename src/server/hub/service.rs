//! The plug-in shape of the hub's services, the list of services plugged in, and the dispatch of
//! IQ requests to them.
//!
//! A service is a unit struct implementing [`Service`]; its state lives in the store or in the
//! hub's [`BoundSession`](super::BoundSession)s, so the struct itself carries none. The router
//! decides whom an IQ get or set is addressed to ([`Target`], rules 3–4 in `router.rs`); the
//! dispatch below then asks each of the hub's services (the list in `registry.rs`), in order, whether it
//! [`handles`](Service::handles) the request, and lets the first that does answer it. No service
//! claiming it means `service-unavailable` (RFC 6120 §8.3.3.19).
//!
//! There is no string-keyed table: a service says what it handles in its own `match`, by element
//! name, namespace, IQ type and target.

use tokio_xmpp::jid::{BareJid, FullJid, Jid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::disco::Item;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::stanza_error::DefinedCondition;

use super::{stanza_error, Delivery, Hub};

/// One service of the hub. Every method has a default that does nothing, so a service that only
/// advertises a feature (offline storage) or only answers IQs says only that.
pub(crate) trait Service: Sync {
    /// The disco#info features this service adds to `entity` (XEP-0030 §3.1).
    fn features(&self, entity: Entity) -> &'static [&'static str] {
        let _ = entity;
        &[]
    }

    /// The identities this service adds to `entity`'s disco#info, as (category, type): PEP's
    /// `pubsub/pep` on accounts (XEP-0163 §6.1).
    fn identities(&self, entity: Entity) -> &'static [(&'static str, &'static str)] {
        let _ = entity;
        &[]
    }

    /// What this service lists in the disco#items of `account` asked by `asker`, for `node`
    /// (`None`: the account itself): PEP's nodes and items (XEP-0060 §5.2, §5.5).
    fn account_items(
        &self,
        hub: &Hub,
        account: &BareJid,
        asker: &BareJid,
        node: Option<&str>,
    ) -> Vec<Item> {
        let _ = (hub, account, asker, node);
        Vec::new()
    }

    /// Whether `account` has the disco node `node` for `asker` (a PEP node it may read): its
    /// disco#info then answers (XEP-0060 §5.3) instead of `item-not-found`.
    fn account_node_exists(
        &self,
        hub: &Hub,
        account: &BareJid,
        asker: &BareJid,
        node: &str,
    ) -> bool {
        let _ = (hub, account, asker, node);
        false
    }

    /// Whether this service answers `request` (an IQ get or set, addressed to `request.at`).
    fn handles(&self, request: &IqRequest) -> bool {
        let _ = request;
        false
    }

    /// Whether `payload`, sent to the server's domain, is about the sender's own account data.
    /// Clients send roster, private storage and carbons requests there; such a request is then
    /// handled as if addressed to the account ([`Target::OwnAccount`]), answered from the
    /// account's JID.
    fn is_account_data(&self, payload: &Element) -> bool {
        let _ = payload;
        false
    }

    /// The element this service adds to the stream features a client gets after
    /// authentication (RFC 6120 §4.3.2), if any: a feature the client may use without asking
    /// disco (roster versioning). `services` are all the server's services, for a feature that
    /// describes them together (the server's entity capabilities, XEP-0115 §6.3).
    fn stream_feature(&self, services: &[&dyn Service]) -> Option<Element> {
        let _ = services;
        None
    }

    /// Answers `request`, which [`Service::handles`] accepted, with
    /// [`IqRequest::answer`], and pushes any other deliveries it causes to `out`.
    fn handle(&self, hub: &mut Hub, request: IqRequest, out: &mut Vec<Delivery>) {
        let _ = hub;
        request.answer(Err(DefinedCondition::ServiceUnavailable), out);
    }
}

/// Whose disco#info is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entity {
    /// The server's domain JID.
    Server,
    /// An account's bare JID (XEP-0030 §3.1 "account/registered").
    Account,
}

/// Whom an IQ request is addressed to (rules 3 and 4 of `router.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// The server's domain JID.
    Server,
    /// The sender's own account: no `to` (RFC 6120 §10.3.3), or its own bare JID.
    OwnAccount,
    /// Another local account's bare JID, answered by the server on its behalf.
    OtherAccount,
}

/// The two kinds of IQ request (RFC 6120 §8.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `type='get'`.
    Get,
    /// `type='set'`.
    Set,
}

/// An IQ get or set on its way to a service.
#[derive(Debug)]
pub(crate) struct IqRequest {
    /// The bound session that sent it (also the stamped `from`).
    pub from: FullJid,
    /// The request's `id`, echoed in the answer.
    pub id: String,
    /// Get or set.
    pub kind: Kind,
    /// The request's child element.
    pub payload: Element,
    /// Whom it is addressed to.
    pub at: Target,
    /// The `from` of the answer: the server's JID, the account's bare JID, or none (a request
    /// with no `to` is answered with no `from`).
    pub reply_from: Option<Jid>,
}

impl IqRequest {
    /// The request in `iq`, or `None` for an IQ result or error, which is never answered
    /// (RFC 6120 §8.3.1).
    fn new(from: &FullJid, iq: Iq, at: Target, reply_from: Option<Jid>) -> Option<Self> {
        let (id, kind, payload) = match iq {
            Iq::Get { id, payload, .. } => (id, Kind::Get, payload),
            Iq::Set { id, payload, .. } => (id, Kind::Set, payload),
            Iq::Result { .. } | Iq::Error { .. } => return None,
        };
        Some(Self {
            from: from.clone(),
            id,
            kind,
            payload,
            at,
            reply_from,
        })
    }

    /// The account the request is addressed to: the sender's own, or another local account
    /// (whose bare JID answers); `None` for the server.
    pub fn account(&self) -> Option<BareJid> {
        match self.at {
            Target::OwnAccount => Some(self.from.to_bare()),
            Target::OtherAccount => self.reply_from.as_ref().map(Jid::to_bare),
            Target::Server => None,
        }
    }

    /// Whether this is a get whose child is `<name xmlns='namespace'/>`.
    pub fn is_get(&self, name: &str, namespace: &str) -> bool {
        self.kind == Kind::Get && self.payload.is(name, namespace)
    }

    /// Whether this is a set whose child is `<name xmlns='namespace'/>`.
    pub fn is_set(&self, name: &str, namespace: &str) -> bool {
        self.kind == Kind::Set && self.payload.is(name, namespace)
    }

    /// Sends `answer` to the requester: a result (with this payload, if any), or an error
    /// with this condition.
    pub fn answer(
        self,
        answer: Result<Option<Element>, DefinedCondition>,
        out: &mut Vec<Delivery>,
    ) {
        let reply = match answer {
            Ok(payload) => Iq::Result {
                from: self.reply_from,
                to: Some(self.from.clone().into()),
                id: self.id,
                payload,
            },
            Err(condition) => Iq::Error {
                from: self.reply_from,
                to: Some(self.from.clone().into()),
                id: self.id,
                error: stanza_error(condition),
                payload: None,
            },
        };
        out.push(Delivery::stanza(self.from, reply));
    }
}

/// The disco features `services` list for `entity`, in their order.
pub(crate) fn features_of<'a>(
    services: &'a [&'a dyn Service],
    entity: Entity,
) -> impl Iterator<Item = &'static str> + 'a {
    services
        .iter()
        .flat_map(move |service| service.features(entity).iter().copied())
}

/// What `services` add to the stream features after authentication
/// ([`Service::stream_feature`]), in their order. The connections ask for it with the same
/// list the hub runs ([`super::registry::SERVICES`]), so the features offered are those of the
/// services plugged in.
pub(crate) fn stream_features(services: &[&dyn Service]) -> Vec<Element> {
    services
        .iter()
        .filter_map(|service| service.stream_feature(services))
        .collect()
}

impl Hub {
    /// The features every service lists for `entity`, in the order of the hub's services.
    /// With the archive switched off, its features are not listed (`mam.rs`).
    pub(super) fn features(&self, entity: Entity) -> impl Iterator<Item = &'static str> {
        let archive = self.archive_enabled();
        features_of(self.services, entity)
            .filter(move |feature| archive || !super::mam::FEATURES.contains(feature))
    }

    /// Hands an IQ addressed to `at` to the service that handles it (rules 3 and 4 of
    /// `router.rs`); results and errors are dropped.
    pub(super) fn serve_iq(&mut self, from: &FullJid, iq: Iq, at: Target, out: &mut Vec<Delivery>) {
        let reply_from = match at {
            Target::Server => Some(self.server_jid()),
            // A request with no `to` gets an answer with no `from`.
            Target::OwnAccount => iq.to().map(|_| from.to_bare().into()),
            Target::OtherAccount => iq.to().map(|to| to.to_bare().into()),
        };
        if let Some(request) = IqRequest::new(from, iq, at, reply_from) {
            self.dispatch(request, out);
        }
    }

    /// The first service that handles `request` answers it; a request to the server about the
    /// sender's own account data goes to the account; anything else is `service-unavailable`.
    fn dispatch(&mut self, mut request: IqRequest, out: &mut Vec<Delivery>) {
        let services = self.services;
        if let Some(service) = services.iter().find(|s| s.handles(&request)) {
            return service.handle(self, request, out);
        }
        if request.at == Target::Server
            && services.iter().any(|s| s.is_account_data(&request.payload))
        {
            request.at = Target::OwnAccount;
            request.reply_from = Some(request.from.to_bare().into());
            return self.dispatch(request, out);
        }
        request.answer(Err(DefinedCondition::ServiceUnavailable), out);
    }
}

#[cfg(test)]
mod tests;
