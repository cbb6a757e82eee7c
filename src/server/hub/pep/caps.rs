//! Whom PEP notifies: the nodes each session wants, learnt from its entity capabilities
//! (XEP-0115) as XEP-0163 §4.3 describes, and the last items sent when it comes online.
//!
//! - A client's available presence carries `<c xmlns='http://jabber.org/protocol/caps'
//!   hash=… node=… ver=…/>`. A `ver` the server has seen answered before is looked up in a
//!   bounded cache ([`CapsCache`], oldest forgotten first). Otherwise the server asks that
//!   session once, from its own JID: `<iq type='get'><query
//!   xmlns='http://jabber.org/protocol/disco#info' node='NODE#VER'/></iq>` (XEP-0115 §6.2).
//! - The answer comes back to the server's JID; the router hands results and errors addressed
//!   there to [`Hub::pep_caps_answer`] (rule 3 in `router.rs`), which takes it only from the
//!   session it asked, with the id it used. The features ending in `+notify` name the nodes
//!   the session wants (XEP-0163 §4.3.1 "filtered notifications"). The answer is cached for
//!   everyone only if it hashes to the announced `ver` (XEP-0115 §5.4, checked with
//!   xmpp-parsers' `compute_disco`/`hash_caps`); otherwise it holds for that session alone.
//!   An error, or no answer at all, leaves the session without notifications until its caps
//!   change; nothing waits for it.
//! - A later presence without `<c/>` keeps the caps the session announced (clients may leave
//!   it out when nothing changed, as Prosody assumes too).
//! - **Last published items** (XEP-0163 §4.3.2, XEP-0060 §12.20 `on_sub_and_presence`): when a
//!   session becomes available with known interests, when its interests become known, and
//!   when they change, it gets, for each node it wants, of its own account and of every
//!   contact whose presence it is subscribed to, the newest item that it may read. A contact
//!   who is newly granted a subscription gets the owner's last items the same way (`on_sub`).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use base64::prelude::{Engine, BASE64_STANDARD};
use tokio_xmpp::jid::{BareJid, FullJid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::caps::hash_caps;
use tokio_xmpp::parsers::hashes::Algo;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::presence::Presence;

use super::super::disco::verification_string;
use super::super::{Delivery, Hub};
use super::config::name;
use crate::server::store::{SendLastItem, Subscription};

/// The nodes a client wants notifications for (its `NODE+notify` features).
pub type Interests = Arc<BTreeSet<String>>;

/// Most `+notify` features kept of one answer, and the longest node name taken from one: a
/// client has a few dozen; the rest of a hostile answer is ignored.
const MAX_INTERESTS: usize = 256;
const MAX_NODE_BYTES: usize = 1024;

/// The caps a client announced (XEP-0115 §4): the hash function's name, its software's node,
/// and the verification string.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Announced {
    hash: String,
    node: String,
    ver: String,
}

impl Announced {
    /// The caps in `presence`, if it has well-formed ones (legacy caps without `hash` are not
    /// taken).
    fn from_presence(presence: &Presence) -> Option<Self> {
        let c = presence.payloads.iter().find(|p| p.is("c", ns::CAPS))?;
        let field = |name: &str| {
            c.attr(name)
                .filter(|value| !value.is_empty() && value.len() <= MAX_NODE_BYTES)
                .map(str::to_string)
        };
        Some(Self {
            hash: field("hash")?,
            node: field("node")?,
            ver: field("ver")?,
        })
    }

    /// The cache key: the same `ver` under another hash function is another entry.
    fn key(&self) -> String {
        format!("{} {}", self.hash, self.ver)
    }
}

/// What the hub knows of one session's caps (a field of
/// [`BoundSession`](super::super::BoundSession)).
#[derive(Debug, Clone, Default)]
pub struct SessionCaps {
    announced: Option<Announced>,
    state: CapsState,
}

#[derive(Debug, Clone, Default)]
enum CapsState {
    /// Nothing asked yet (or no caps announced).
    #[default]
    Unknown,
    /// Asked with this IQ id; waiting for the answer.
    Asked(String),
    /// Known: these nodes.
    Known(Interests),
    /// The client answered with an error or nothing usable: no notifications until its caps
    /// change.
    Failed,
}

impl SessionCaps {
    /// The nodes this session wants notifications for, once known.
    pub fn interests(&self) -> Option<&Interests> {
        match &self.state {
            CapsState::Known(interests) => Some(interests),
            _ => None,
        }
    }

    /// Whether this session wants notifications of `node`.
    pub fn wants(&self, node: &str) -> bool {
        self.interests().is_some_and(|nodes| nodes.contains(node))
    }
}

/// The feature lists learnt per caps `ver`, at most `max`, the oldest forgotten first.
#[derive(Debug, Default)]
pub struct CapsCache {
    known: HashMap<String, Interests>,
    order: VecDeque<String>,
    max: usize,
}

impl CapsCache {
    /// An empty cache of at most `max` entries.
    pub fn new(max: usize) -> Self {
        Self {
            known: HashMap::new(),
            order: VecDeque::new(),
            max,
        }
    }

    fn get(&self, key: &str) -> Option<Interests> {
        self.known.get(key).cloned()
    }

    fn insert(&mut self, key: String, interests: Interests) {
        if self.max == 0 || self.known.contains_key(&key) {
            return;
        }
        while self.known.len() >= self.max {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.known.remove(&oldest);
        }
        self.order.push_back(key.clone());
        self.known.insert(key, interests);
    }

    /// How many feature lists are cached.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.known.len()
    }
}

/// The prefix of the ids of the server's caps queries.
const QUERY_ID: &str = "pep-caps-";

impl Hub {
    /// XEP-0163 §4.3: `from` sent available presence, now its session's `presence`
    /// (`initial`: it was unavailable). Learns its caps (asking it, if they are new), then
    /// sends it the last items it wants.
    pub(in crate::server::hub) fn pep_presence(
        &mut self,
        from: &FullJid,
        initial: bool,
        out: &mut Vec<Delivery>,
    ) {
        let announced = self
            .sessions
            .get(from)
            .and_then(|session| session.presence.as_ref())
            .and_then(Announced::from_presence);
        let cached = announced
            .as_ref()
            .and_then(|caps| self.pep.caps.get(&caps.key()));
        let Some(session) = self.sessions.get_mut(from) else {
            return;
        };
        let caps = &mut session.pep;
        let mut send_last = initial;
        if let Some(announced) = announced {
            if caps.announced.as_ref() != Some(&announced) {
                caps.announced = Some(announced);
                caps.state = CapsState::Unknown;
            }
        }
        if let (CapsState::Unknown, Some(announced)) = (&caps.state, &caps.announced) {
            match cached {
                Some(interests) => {
                    caps.state = CapsState::Known(interests);
                    send_last = true;
                }
                None => {
                    let id = format!("{QUERY_ID}{:016x}", rand::random::<u64>());
                    let query = Element::builder("query", ns::DISCO_INFO)
                        .attr(
                            name("node"),
                            format!("{}#{}", announced.node, announced.ver),
                        )
                        .build();
                    caps.state = CapsState::Asked(id.clone());
                    let iq = Iq::Get {
                        from: Some(self.server_jid()),
                        to: Some(from.clone().into()),
                        id,
                        payload: query,
                    };
                    out.push(Delivery::stanza(from.clone(), iq));
                    return;
                }
            }
        }
        if send_last && caps.interests().is_some() {
            let mut owners = vec![from.to_bare()];
            owners.extend(self.contacts_where(&from.to_bare(), |item| {
                matches!(item.subscription, Subscription::To | Subscription::Both)
            }));
            for owner in owners {
                self.pep_last_items(&owner, from, SendLastItem::OnSubAndPresence, out);
            }
        }
    }

    /// An IQ result or error from the session `from` to the server's JID: the answer to the
    /// server's caps query, if it is one (see the module docs); anything else is dropped
    /// (RFC 6120 §8.3.1: never answered).
    pub(in crate::server::hub) fn pep_caps_answer(
        &mut self,
        from: &FullJid,
        iq: Iq,
        out: &mut Vec<Delivery>,
    ) {
        let (id, payload) = match iq {
            Iq::Result { id, payload, .. } => (id, payload),
            Iq::Error { id, .. } => (id, None),
            Iq::Get { .. } | Iq::Set { .. } => return,
        };
        let Some(session) = self.sessions.get_mut(from) else {
            return;
        };
        if !matches!(&session.pep.state, CapsState::Asked(asked) if *asked == id) {
            return;
        }
        let Some(query) = payload.filter(|p| p.is("query", ns::DISCO_INFO)) else {
            session.pep.state = CapsState::Failed;
            return;
        };
        let interests: Interests = Arc::new(
            query
                .children()
                .filter(|child| child.is("feature", ns::DISCO_INFO))
                .filter_map(|feature| feature.attr("var")?.strip_suffix("+notify"))
                .filter(|node| !node.is_empty() && node.len() <= MAX_NODE_BYTES)
                .take(MAX_INTERESTS)
                .map(str::to_string)
                .collect(),
        );
        let verified = session
            .pep
            .announced
            .as_ref()
            .filter(|announced| hashes_to(&query, announced))
            .map(Announced::key);
        tracing::debug!(
            session = %from,
            verified = verified.is_some(),
            nodes = interests.len(),
            "learnt which PEP nodes a client wants from its caps"
        );
        session.pep.state = CapsState::Known(interests.clone());
        let available = session.available;
        if let Some(key) = verified {
            self.pep.caps.insert(key, interests);
        }
        if available {
            let user = from.to_bare();
            let mut owners = vec![user.clone()];
            owners.extend(self.contacts_where(&user, |item| {
                matches!(item.subscription, Subscription::To | Subscription::Both)
            }));
            for owner in owners {
                self.pep_last_items(&owner, from, SendLastItem::OnSubAndPresence, out);
            }
        }
    }

    /// XEP-0060 §12.20 `on_sub`: `contact` was just granted a subscription to `owner`'s
    /// presence; its available sessions get `owner`'s last items they want.
    pub(in crate::server::hub) fn pep_new_subscriber(
        &self,
        owner: &BareJid,
        contact: &BareJid,
        out: &mut Vec<Delivery>,
    ) {
        for (session, _) in self.available_of(contact) {
            self.pep_last_items(owner, &session, SendLastItem::OnSub, out);
        }
    }

    /// The newest item of each node of `owner` that `session` wants and may read, if the
    /// node's `send_last_published_item` covers `moment`.
    fn pep_last_items(
        &self,
        owner: &BareJid,
        session: &FullJid,
        moment: SendLastItem,
        out: &mut Vec<Delivery>,
    ) {
        let Some(interests) = self
            .sessions
            .get(session)
            .and_then(|s| s.pep.interests().cloned())
        else {
            return;
        };
        if interests.is_empty() || !self.is_local_account(owner) {
            return;
        }
        let Some(user) = owner.node() else { return };
        let nodes = match self.store.pep_nodes(user.as_str()) {
            Ok(nodes) => nodes,
            Err(error) => {
                tracing::error!(%owner, "could not read PEP nodes: {error}");
                return;
            }
        };
        let reader = session.to_bare();
        for (node, config) in nodes {
            let sends = match config.send_last_published_item {
                SendLastItem::Never => false,
                SendLastItem::OnSub => moment == SendLastItem::OnSub,
                SendLastItem::OnSubAndPresence => true,
            };
            if !sends
                || !config.deliver_notifications
                || !interests.contains(&node)
                || self.pep_may_read(owner, &config, &reader).is_err()
            {
                continue;
            }
            match self.store.pep_last_item(user.as_str(), &node) {
                Ok(Some(item)) => {
                    if let Some(event) =
                        super::read::items_event(&node, &item, config.deliver_payloads)
                    {
                        out.push(super::read::notification(owner, session, event));
                    }
                }
                Ok(None) => {}
                Err(error) => tracing::error!(%owner, node, "could not read a PEP item: {error}"),
            }
        }
    }
}

/// Whether the disco#info `query` hashes to the `ver` of `announced` (XEP-0115 §5.4).
fn hashes_to(query: &Element, announced: &Announced) -> bool {
    let Ok(algo) = announced.hash.parse::<Algo>() else {
        return false;
    };
    let Some(input) = verification_string(query) else {
        return false;
    };
    hash_caps(&input, algo).is_ok_and(|hash| BASE64_STANDARD.encode(&hash.hash) == announced.ver)
}
