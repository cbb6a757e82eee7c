//! The bound sessions: binding a resource (RFC 6120 §7), replacing a session that binds the
//! same full JID again (§7.7.2.2, `conflict`), unbinding, and finding an account's resources.
//!
//! The registry is two maps kept in step: every session by full JID (its presence, priority and
//! switches), and every account's bound resources, so that routing to a bare JID looks at that
//! account's sessions only.

use tokio_xmpp::jid::{BareJid, FullJid};
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};

use super::{CloseReason, Delivery, Hub};

/// What the hub knows about one bound session.
#[derive(Debug, Clone, Default)]
pub struct BoundSession {
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
    /// Its entity capabilities (XEP-0115) and the PEP nodes it wants notifications of.
    pub pep: super::pep::SessionCaps,
    /// Asked for the block list: receives its pushes (XEP-0191 §3.3 "interested resource").
    pub blocklist_interested: bool,
}

/// Why binding a resource failed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BindError {
    /// The requested resource is not a valid resourcepart.
    #[error("the resource cannot be part of a JID")]
    BadResource(#[source] tokio_xmpp::jid::Error),
}

impl Hub {
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
            .map_err(BindError::BadResource)?;
        let mut out = Vec::new();
        if self.sessions.contains_key(&jid) {
            // The old session goes first, as if it had disconnected (unavailable broadcast).
            out.extend(self.unbind(&jid));
            out.push(Delivery::Close(jid.clone(), CloseReason::Conflict));
        }
        self.sessions.insert(jid.clone(), BoundSession::default());
        self.resources
            .entry(jid.to_bare())
            .or_default()
            .push(jid.clone());
        self.forget_blocklist_at_first_login(&jid);
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
        // A session that ends leaves its rooms (XEP-0045 §7.14).
        self.muc_session_ended(jid, &mut out);
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::store::Store;

    fn hub() -> Hub {
        let store = Store::open_in_memory().unwrap();
        Hub::new("localhost", store, crate::server::hub::registry::SERVICES).unwrap()
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

    #[test]
    fn a_resource_that_cannot_be_a_resourcepart_is_refused_with_the_reason() {
        let mut hub = hub();
        let error = hub.bind("alice", Some("a\u{0}b")).unwrap_err();
        assert!(matches!(error, BindError::BadResource(_)));
        assert!(std::error::Error::source(&error).is_some());
        assert!(hub.resources_of(&bare("alice@localhost")).is_empty());
        assert!(hub.sessions.is_empty());
    }
}
