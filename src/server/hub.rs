//! The server's shared state and the one place where stanzas are routed.
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
//! The routing rules themselves are written down in [`super::router`]; presence and
//! subscriptions in [`super::presence`]; the roster in [`super::roster`].

use std::collections::{BTreeMap, HashMap};

use tokio_xmpp::jid::{BareJid, FullJid, Jid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::{Message, MessageType};
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};
use tokio_xmpp::Stanza;

use super::store::Store;

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
}

impl Delivery {
    /// A stanza for a session.
    pub fn stanza(to: FullJid, stanza: impl Into<Stanza>) -> Self {
        Delivery::Stanza(to, Box::new(stanza.into()))
    }
}

/// Why the hub closes a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Another login bound the same full JID (RFC 6120 §7.7.2.2): `conflict`.
    Conflict,
    /// The account was deleted: `not-authorized`.
    AccountDeleted,
}

/// What the hub knows about one bound session.
#[derive(Debug, Clone, Default)]
pub struct Session {
    /// Sent initial presence and not yet unavailable presence.
    pub available: bool,
    /// Priority of the last available presence.
    pub priority: i8,
    /// The last available presence broadcast by this session (sent to new subscribers and in
    /// answer to probes).
    pub presence: Option<Presence>,
    /// Asked for the roster: receives roster pushes (RFC 6121 §2.1.6 "interested resource").
    pub interested: bool,
    /// Enabled XEP-0280 message carbons.
    pub carbons: bool,
}

/// The routing core. See the module documentation.
pub struct Hub {
    pub(super) domain: String,
    pub(super) domain_jid: BareJid,
    pub(super) store: Store,
    pub(super) sessions: BTreeMap<FullJid, Session>,
    /// The bound resources of each account: the sessions to look at for a bare JID, without
    /// scanning every session (which made routing cost grow with the number online).
    resources: HashMap<BareJid, Vec<FullJid>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("domain", &self.domain)
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

/// Why binding a resource failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindError {
    /// The requested resource is not a valid resourcepart.
    BadResource,
}

impl Hub {
    /// A hub for `domain` on `store`; `None` if `domain` is not a valid XMPP domain.
    pub fn new(domain: &str, store: Store) -> Option<Self> {
        let domain_jid = BareJid::new(domain).ok().filter(|j| j.node().is_none())?;
        Some(Self {
            domain: domain_jid.domain().as_str().to_string(),
            domain_jid,
            store,
            sessions: BTreeMap::new(),
            resources: HashMap::new(),
        })
    }

    /// The store, for the driver's credential lookups and for tests.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Binds a session for `username` (authenticated, lowercase localpart). A missing resource
    /// gets a random one; a resource already bound by a live session replaces that session,
    /// which is closed with `conflict`.
    pub fn bind(
        &mut self,
        username: &str,
        resource: Option<&str>,
    ) -> Result<(FullJid, Vec<Delivery>), BindError> {
        let resource = match resource.map(str::trim).filter(|r| !r.is_empty()) {
            Some(r) => r.to_string(),
            None => format!("{:016x}", rand::random::<u64>()),
        };
        let jid = FullJid::new(&format!("{username}@{}/{resource}", self.domain))
            .map_err(|_| BindError::BadResource)?;
        let mut out = Vec::new();
        if self.sessions.contains_key(&jid) {
            // The old session goes first, as if it had disconnected (unavailable broadcast).
            out.extend(self.unbind(&jid));
            out.push(Delivery::Close(jid.clone(), CloseReason::Conflict));
        }
        self.sessions.insert(jid.clone(), Session::default());
        self.resources
            .entry(jid.to_bare())
            .or_default()
            .push(jid.clone());
        Ok((jid, out))
    }

    /// A session ended (closed by the client, the network, or the server). If it was available,
    /// its contacts and other resources see it go unavailable.
    pub fn unbind(&mut self, jid: &FullJid) -> Vec<Delivery> {
        let mut out = Vec::new();
        if let Some(session) = self.sessions.get(jid) {
            if session.available {
                let unavailable = Presence::new(PresenceType::Unavailable);
                self.broadcast_presence(jid, unavailable, &mut out);
            }
        }
        if self.sessions.remove(jid).is_some() {
            let bare = jid.to_bare();
            if let Some(resources) = self.resources.get_mut(&bare) {
                resources.retain(|r| r != jid);
                if resources.is_empty() {
                    self.resources.remove(&bare);
                }
            }
        }
        out
    }

    /// Handles one stanza from the bound session `from`. The caller has already checked that
    /// any `from` attribute the client put on it is its own JID; the hub stamps the full JID.
    pub fn inbound(&mut self, from: &FullJid, stanza: Stanza) -> Vec<Delivery> {
        let mut out = Vec::new();
        if !self.sessions.contains_key(from) {
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

    /// Full JIDs of `user`'s bound sessions.
    pub(super) fn resources_of(&self, user: &BareJid) -> Vec<FullJid> {
        let mut found = self.resources.get(user).cloned().unwrap_or_default();
        found.sort();
        found
    }

    /// Full JIDs of `user`'s available sessions, with their priorities.
    pub(super) fn available_of(&self, user: &BareJid) -> Vec<(FullJid, i8)> {
        let Some(resources) = self.resources.get(user) else {
            return Vec::new();
        };
        let mut found: Vec<(FullJid, i8)> = resources
            .iter()
            .filter_map(|jid| {
                let session = self.sessions.get(jid)?;
                session.available.then(|| (jid.clone(), session.priority))
            })
            .collect();
        // In JID order, as the scan over the sorted sessions gave them.
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found
    }

    /// Whether `jid` is an account of this server (`user@domain`, existing in the store).
    pub(super) fn is_local_account(&self, jid: &BareJid) -> bool {
        jid.domain().as_str() == self.domain
            && jid
                .node()
                .is_some_and(|node| self.store.account_exists(node.as_str()).unwrap_or(false))
    }

    /// Whether `jid` is (on) this server's domain.
    pub(super) fn is_local_domain(&self, jid: &Jid) -> bool {
        jid.domain().as_str() == self.domain
    }

    /// The server's own JID.
    pub(super) fn server_jid(&self) -> Jid {
        Jid::from(self.domain_jid.clone())
    }
}

/// An error reply to `stanza` (sent by `from`, addressed to `to`), or `None` when RFC 6120
/// §8.3.1 forbids answering (the stanza is itself an error, or an IQ result).
pub(super) fn bounce(stanza: &Stanza, condition: DefinedCondition) -> Option<Stanza> {
    let error_type = match condition {
        DefinedCondition::ResourceConstraint | DefinedCondition::ServiceUnavailable => {
            ErrorType::Cancel
        }
        DefinedCondition::BadRequest | DefinedCondition::NotAcceptable => ErrorType::Modify,
        DefinedCondition::Forbidden | DefinedCondition::NotAuthorized => ErrorType::Auth,
        _ => ErrorType::Cancel,
    };
    let error = StanzaError::new(error_type, condition, "en", "");
    let error = StanzaError {
        texts: Default::default(),
        ..error
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn hub() -> Hub {
        let store = Store::open_in_memory().unwrap();
        Hub::new("localhost", store).unwrap()
    }

    fn bare(jid: &str) -> BareJid {
        BareJid::new(jid).unwrap()
    }

    #[test]
    fn an_accounts_resources_follow_binds_replacements_and_unbinds() {
        let mut hub = hub();
        let (phone, _) = hub.bind("alice", Some("phone")).unwrap();
        let (laptop, _) = hub.bind("alice", Some("laptop")).unwrap();
        let (bob, _) = hub.bind("bob", Some("x")).unwrap();
        assert_eq!(
            hub.resources_of(&bare("alice@localhost")),
            [laptop.clone(), phone.clone()]
        );
        assert_eq!(hub.resources_of(&bare("bob@localhost")), vec![bob.clone()]);
        // A second login with the same resource replaces the first: still one entry.
        let (again, deliveries) = hub.bind("alice", Some("phone")).unwrap();
        assert_eq!(again, phone);
        assert!(deliveries
            .iter()
            .any(|d| matches!(d, Delivery::Close(jid, CloseReason::Conflict) if *jid == phone)));
        assert_eq!(hub.resources_of(&bare("alice@localhost")).len(), 2);
        // Nothing is available before its initial presence.
        assert!(hub.available_of(&bare("alice@localhost")).is_empty());
        hub.unbind(&laptop);
        hub.unbind(&laptop);
        assert_eq!(
            hub.resources_of(&bare("alice@localhost")),
            vec![phone.clone()]
        );
        hub.unbind(&phone);
        assert!(hub.resources_of(&bare("alice@localhost")).is_empty());
        assert!(!hub.resources.contains_key(&bare("alice@localhost")));
        assert_eq!(hub.resources_of(&bare("bob@localhost")), [bob]);
    }
}
