//! The server's hub: the one owner of the routing state, and the services plugged into it.
//!
//! The hub owns the [`Store`] and the registry of bound sessions. Connections hand it events
//! (a session bound, a stanza arrived, a session closed); it answers with [`Delivery`] values
//! saying which session gets which stanza, and does no network I/O itself. That makes every
//! routing rule testable without sockets, and gives one total order for all state changes, so
//! roster, presence and offline storage never race each other.
//!
//! The driver runs the hub on a thread of its own (the store is synchronous SQLite) and forwards
//! the deliveries to the sessions' outgoing queues.
//!
//! Stream management (XEP-0198) needs nothing of the hub while a session lives: a session whose
//! link died and that waits to be resumed is still bound here, its queue still filled, and its
//! contacts still see it available (as Prosody does). Only when a session ends for good does the
//! hub hear of what its client never acknowledged ([`Hub::undelivered`]).
//!
//! | file | what it does |
//! |---|---|
//! | `mod.rs` | [`Hub`], [`Delivery`], [`CloseReason`]; stamps and dispatches every stanza |
//! | `sessions.rs` | the bound sessions: bind, replace (`conflict`), unbind, resources by account |
//! | `router.rs` | delivery rules for messages and IQs, written down there in prose |
//! | `service.rs` | the plug-in shape of a service ([`service::Service`]) and the IQ dispatch |
//! | `registry.rs` | the list of plugged-in services, which the server hands to [`Hub::new`] |
//! | `presence.rs` | presence broadcast, probes answered locally, subscriptions (RFC 6121 §3, §4) |
//! | `roster.rs` | roster get/set/remove and pushes, with versioning (RFC 6121 §2) |
//! | `blocking.rs` | block lists (XEP-0191), and the rule that keeps the blocked out (rule 1a in `router.rs`) |
//! | `carbons.rs` | message carbons (XEP-0280): the switch and the copies |
//! | `offline.rs` | offline messages (XEP-0160): stored, then delivered on available presence; what an ended session never acknowledged (XEP-0198) |
//! | `private.rs` | private XML storage (XEP-0049) |
//! | `vcard.rs` | vCards (XEP-0054) and the photo hash in every available presence (XEP-0153, XEP-0398 §4) |
//! | `pep.rs` | PEP (XEP-0163 on XEP-0060 pubsub) per account; `pep/caps.rs` learns whom to notify from entity capabilities (XEP-0115) |
//! | `avatars.rs` | one avatar for old and new clients: PEP's (XEP-0084) and the vCard's photo (XEP-0153) kept the same (XEP-0398) |
//! | `mam.rs` | the message archive (XEP-0313) with stanza ids (XEP-0359): what is archived, queries, preferences, retention, group commit |
//! | `muc/` | multi-user chat (XEP-0045) at `conference.DOMAIN`: rooms, occupants, history, self-ping (XEP-0410); `muc/archive.rs`: rooms' archives (XEP-0313) |
//! | `upload.rs` | HTTP File Upload (XEP-0363) slots at `upload.DOMAIN`; the files go over the HTTPS listener of `crate::server::upload` |
//! | `disco.rs` | service discovery (XEP-0030), its features collected from the services, and the server's entity capabilities (XEP-0115) |
//! | `components.rs` | external components (XEP-0114): their domains, and stanzas to and from them |
//! | `ping.rs`, `version.rs`, `legacy_session.rs` | XEP-0199, XEP-0092, the RFC 3921 session IQ |
//! | `commands.rs` | ad-hoc commands (XEP-0050): the feature, and the server's own (empty) command list |
//! | `testing.rs` | (tests only) transcripts: "alice sends …, bob gets …" |
//!
//! # Adding a service
//!
//! A service (vCard, blocking, PEP, MAM, rooms …) is one new file, `src/server/hub/NAME.rs`,
//! plugged in the same way as the ones above:
//!
//! 1. **Its file.** A unit struct implementing [`service::Service`]: the IQs it
//!    [`handles`](service::Service::handles) (by element name and namespace, and by whom the IQ is
//!    addressed to: the server, the sender's own account, another account), and how it
//!    [`handle`](service::Service::handle)s them, answering through
//!    [`service::IqRequest::answer`]. Its state lives in the [`Store`] (per account) or in a field
//!    of [`BoundSession`] (per session, like the carbons switch). Declare the file in the `mod`
//!    list below and add the struct to [`registry::SERVICES`] (the hub does not import its
//!    services: the server passes the list in, so the arrows between files point one way). A service that must also see
//!    messages or presence (as carbons and offline storage do) is called from the place in
//!    `router.rs` or `presence.rs` where its rule applies; write that rule down in the prose of
//!    `router.rs` (RFC 6120 §10, RFC 6121 §8) and cite the XEP section it comes from.
//! 2. **Its disco features**, returned by [`service::Service::features`]: disco#info (`disco.rs`)
//!    collects them from every service, so what is advertised is what is plugged in (and the
//!    server's entity capabilities, a hash of that list, follow by themselves). A feature that
//!    clients learn from the stream features after authentication instead (roster versioning)
//!    is the element [`service::Service::stream_feature`] returns.
//! 3. **Its store tables**: a new migration in the store (`src/server/store`), and `Store` methods
//!    for what the service reads and writes. The hub calls them; it never writes SQL.
//! 4. **Its limits** (items per account, bytes per item …) in `src/server/limits.rs`, enforced
//!    in the store or the service, with the error the XEP names when one is hit
//!    (`resource-constraint`, `not-acceptable`, `policy-violation`).
//! 5. **Its unit tests as deliveries**, in `NAME/tests.rs` (`#[cfg(test)] mod tests;` in
//!    `NAME.rs`), written with `testing.rs` as transcripts: who sends which stanza, who gets
//!    which stanza. No sockets, no sleeps.
//! 6. **Its hostile cases**: requests for another account's data, oversized and malformed
//!    payloads, IQ results and errors (never answered, RFC 6120 §8.3.1), in the unit tests and
//!    in `tests/hostile.rs`.

mod avatars;
mod blocking;
mod carbons;
mod commands;
mod components;
mod disco;
mod legacy_session;
mod mam;
pub(crate) use mam::now_ms;
mod muc;
mod offline;
mod pep;
mod ping;
mod presence;
mod private;
pub(crate) mod registry;
mod roster;
mod router;
pub(crate) mod service;
mod sessions;
mod upload;
mod vcard;
mod version;

#[cfg(test)]
mod testing;

use std::collections::{BTreeMap, HashMap};

use tokio_xmpp::jid::{BareJid, FullJid, Jid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::{Message, MessageType};
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};
use tokio_xmpp::Stanza;

use super::limits::ServerLimits;
use super::store::Store;

pub(crate) use self::components::{sender_in_domain, ComponentRefused};
pub(crate) use self::disco::server_caps;
use self::service::Service;
pub use self::sessions::BoundSession;
/// The names in upload URLs, shared with the HTTP side (`crate::server::upload`).
pub(crate) mod upload_names {
    pub(crate) use super::upload::PATH_SEGMENT;
}

/// Something the driver must do for a session.
#[derive(Debug)]
pub enum Delivery {
    /// Send this stanza to this session.
    Stanza(FullJid, Box<Stanza>),
    /// Send these stanzas to this session, in order, as one entry of its queue: the stored
    /// offline messages, up to the per-user cap, which would not fit a queue of single stanzas.
    Batch(FullJid, Vec<Stanza>),
    /// Close this session with a stream error (`conflict` when replaced by a new login).
    Close(FullJid, CloseReason),
    /// Send this stanza to the external component (XEP-0114) that serves this domain.
    Component(BareJid, Box<Stanza>),
}

impl Delivery {
    /// A stanza for a session.
    pub fn stanza(to: FullJid, stanza: impl Into<Stanza>) -> Self {
        Delivery::Stanza(to, Box::new(stanza.into()))
    }
}

/// Where the error replies to a stanza go: the bound session or the external component that
/// sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReplyTo {
    /// A client's bound session.
    Session(FullJid),
    /// The component serving this domain.
    Component(BareJid),
}

impl ReplyTo {
    /// `stanza` for the sender.
    fn delivery(&self, stanza: impl Into<Stanza>) -> Delivery {
        match self {
            ReplyTo::Session(jid) => Delivery::stanza(jid.clone(), stanza),
            ReplyTo::Component(domain) => {
                Delivery::Component(domain.clone(), Box::new(stanza.into()))
            }
        }
    }
}

impl From<&FullJid> for ReplyTo {
    fn from(jid: &FullJid) -> Self {
        ReplyTo::Session(jid.clone())
    }
}

/// Why the hub closes a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Another login bound the same full JID (RFC 6120 §7.7.2.2): `conflict`.
    Conflict,
}

/// The routing core. See the module documentation.
pub struct Hub {
    domain: String,
    domain_jid: BareJid,
    store: Store,
    pub(super) sessions: BTreeMap<FullJid, BoundSession>,
    /// The bound resources of each account: the sessions to look at for a bare JID, without
    /// scanning every session (which made routing cost grow with the number online).
    resources: HashMap<BareJid, Vec<FullJid>>,
    /// The services that answer IQs and list disco features, in the order they are asked.
    services: &'static [&'static dyn Service],
    /// The external components' domains (XEP-0114), and whether one is connected now.
    components: BTreeMap<BareJid, bool>,
    /// Largest vCard an account may store (`ServerLimits::max_vcard_bytes`).
    max_vcard_bytes: usize,
    /// PEP's limits and the client caps it learnt (`pep.rs`).
    pep: pep::PepState,
    /// Every account's block list (XEP-0191), loaded at first use.
    blocklists: blocking::Blocklists,
    /// The message archive's settings and the rows not yet written (XEP-0313, `mam.rs`).
    archive: mam::Archive,
    /// The room service (XEP-0045, `muc/`): its domain and its rooms.
    muc: muc::MucState,
    /// The upload slot service (XEP-0363, `upload.rs`), when the HTTPS listener runs.
    upload: upload::UploadService,
    /// The server's contact addresses (XEP-0157), in its disco#info.
    contacts: Vec<(String, Vec<String>)>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("domain", &self.domain)
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// A hub for `domain` on `store`; `None` if `domain` is not a valid XMPP domain.
    pub fn new(
        domain: &str,
        store: Store,
        services: &'static [&'static dyn Service],
    ) -> Option<Self> {
        let domain_jid = BareJid::new(domain).ok().filter(|j| j.node().is_none())?;
        let muc = muc::MucState::new(domain_jid.domain().as_str());
        Some(Self {
            domain: domain_jid.domain().as_str().to_string(),
            domain_jid,
            store,
            sessions: BTreeMap::new(),
            resources: HashMap::new(),
            services,
            components: BTreeMap::new(),
            max_vcard_bytes: ServerLimits::default().max_vcard_bytes,
            pep: pep::PepState::new(Default::default()),
            blocklists: Default::default(),
            archive: mam::Archive::default(),
            muc,
            upload: Default::default(),
            contacts: Vec::new(),
        })
    }

    /// Takes the limits its services enforce from `limits` (the defaults until then), and
    /// forgets the items of PEP nodes that do not persist theirs (`pubsub#persist_items`
    /// false): called once, when the server starts.
    pub fn start(&mut self, limits: &ServerLimits) {
        self.max_vcard_bytes = limits.max_vcard_bytes;
        self.set_max_blocklist(limits.max_blocklist);
        self.set_archive_limits(limits.archive.clone());
        self.pep = pep::PepState::new(limits.pep.clone());
        self.muc_start(&limits.muc, &limits.unthrottled);
        self.contacts = limits.contacts.clone();
        if let Err(error) = self.store.pep_forget_transient() {
            tracing::error!("could not forget transient PEP items: {error}");
        }
    }

    /// The store, for tests that look at what the hub stored.
    #[cfg(test)]
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// Handles one stanza from the bound session `from`. The caller has already checked that
    /// any `from` attribute the client put on it is its own JID; the hub stamps the full JID.
    pub fn inbound(&mut self, from: &FullJid, mut stanza: Stanza) -> Vec<Delivery> {
        let mut out = Vec::new();
        if !self.sessions.contains_key(from) {
            return out;
        }
        // Rule 1a of `router.rs` (XEP-0191).
        if self.refuse_blocked(&from.into(), from, &stanza, &mut out) {
            return out;
        }
        // XEP-0398 §4: available presence carries the vCard photo hash, wherever it goes.
        self.stamp_photo_hash(from, &mut stanza);
        if let Some(domain) = self.component_addressed(&stanza) {
            self.session_to_component(from, domain, stanza, &mut out);
            return out;
        }
        // Rule 2 of `router.rs`: the room service (XEP-0045).
        if self.muc_addressed(&stanza) {
            self.muc_inbound(from, stanza, &mut out);
            return out;
        }
        // The upload slot service (XEP-0363, `upload.rs`).
        if self.upload_addressed(&stanza) {
            self.upload_inbound(from, stanza, &mut out);
            return out;
        }
        match stanza {
            Stanza::Message(mut message) => {
                message.from = Some(from.clone().into());
                self.route_message(from, message, &mut out);
            }
            Stanza::Presence(mut presence) => {
                presence.from = Some(from.clone().into());
                self.handle_presence(from, presence, &mut out);
            }
            Stanza::Iq(mut iq) => {
                *iq.from_mut() = Some(from.clone().into());
                self.route_iq(from, iq, &mut out);
            }
        }
        out
    }

    /// Whether `jid` is an account of this server (`user@domain`, existing in the store).
    fn is_local_account(&self, jid: &BareJid) -> bool {
        jid.domain().as_str() == self.domain
            && jid
                .node()
                .is_some_and(|node| self.store.account_exists(node.as_str()).unwrap_or(false))
    }

    /// Whether `jid` is (on) this server's domain.
    fn is_local_domain(&self, jid: &Jid) -> bool {
        jid.domain().as_str() == self.domain
    }

    /// The server's own JID.
    fn server_jid(&self) -> Jid {
        Jid::from(self.domain_jid.clone())
    }
}

/// The `to` of any stanza.
fn to_of(stanza: &Stanza) -> Option<&Jid> {
    match stanza {
        Stanza::Message(m) => m.to.as_ref(),
        Stanza::Presence(p) => p.to.as_ref(),
        Stanza::Iq(iq) => iq.to(),
    }
}

/// Whether `stanza` is addressed to `service`'s domain (any user or resource there): how the
/// hub's services with a domain of their own (rooms, uploads) claim their stanzas.
fn addressed_to(service: Option<&BareJid>, stanza: &Stanza) -> bool {
    match (service, to_of(stanza)) {
        (Some(service), Some(to)) => to.domain() == service.domain(),
        _ => false,
    }
}

/// The (lowercase) localpart of a bound JID.
fn node(jid: &FullJid) -> String {
    jid.node()
        .map(|n| n.as_str().to_string())
        .unwrap_or_default()
}

/// The `<error/>` of a bounce with `condition`, typed as RFC 6120 §8.3.3 suggests.
fn stanza_error(condition: DefinedCondition) -> StanzaError {
    let error_type = match condition {
        DefinedCondition::ResourceConstraint | DefinedCondition::ServiceUnavailable => {
            ErrorType::Cancel
        }
        DefinedCondition::BadRequest | DefinedCondition::NotAcceptable => ErrorType::Modify,
        DefinedCondition::Forbidden | DefinedCondition::NotAuthorized => ErrorType::Auth,
        DefinedCondition::RemoteServerTimeout => ErrorType::Wait,
        _ => ErrorType::Cancel,
    };
    let error = StanzaError::new(error_type, condition, "en", "");
    StanzaError {
        texts: Default::default(),
        ..error
    }
}

/// An error reply to `stanza` (sent by `from`, addressed to `to`), or `None` when RFC 6120
/// §8.3.1 forbids answering (the stanza is itself an error, or an IQ result).
pub(crate) fn bounce(stanza: &Stanza, condition: DefinedCondition) -> Option<Stanza> {
    let error = stanza_error(condition);
    match stanza {
        Stanza::Message(m) => {
            if m.type_ == MessageType::Error {
                return None;
            }
            let mut reply = Message::new_with_type(MessageType::Error, m.from.clone());
            reply.from = m.to.clone();
            reply.id = m.id.clone();
            Some(reply.with_payload(error).into())
        }
        Stanza::Presence(p) => {
            if p.type_ == PresenceType::Error {
                return None;
            }
            let mut reply = Presence::new(PresenceType::Error);
            reply.from = p.to.clone();
            reply.to = p.from.clone();
            reply.id = p.id.clone();
            reply.payloads.push(Element::from(error));
            Some(reply.into())
        }
        Stanza::Iq(iq) => match iq {
            Iq::Get { from, to, id, .. } | Iq::Set { from, to, id, .. } => Some(
                Iq::Error {
                    from: to.clone(),
                    to: from.clone(),
                    id: id.clone(),
                    error,
                    payload: None,
                }
                .into(),
            ),
            Iq::Result { .. } | Iq::Error { .. } => None,
        },
    }
}
