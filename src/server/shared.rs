//! What the connection tasks share with each other and with the hub thread: the commands a
//! connection (a client's or an external component's) sends the hub ([`HubCommand`]), what
//! the hub sends back to a session ([`Outbound`]), the per-server state every connection reads
//! ([`ServerShared`]: domain, TLS, limits, the hub's inbox, the credential lookup, and the
//! per-address counts of failed logins and of connections that have not logged in), and the
//! sessions that can be resumed (XEP-0198 §5: [`Resumptions`], [`Handover`]), which one
//! connection hands to the next.
//!
//! It is its own module so that the imports point one way: `server/mod.rs` (wiring) and
//! `server/stream/` (connections) and `server/driver.rs` (the hub thread) all use it, and it
//! uses none of them.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;
use tokio::sync::{mpsc, oneshot};
use tokio_xmpp::jid::{BareJid, FullJid};
use tokio_xmpp::Stanza;

use super::cert::ServerTls;
use super::hub::{CloseReason, ComponentRefused};
use super::limits::ServerLimits;
use super::sasl::{CredentialStore, Hash, ScramKeys};
use super::store::Store;
use crate::log_limit::LogLimit;

/// Requests from connections to the hub thread.
#[derive(Debug)]
pub enum HubCommand {
    /// Bind a resource; the reply is the bound JID, or `None` if the resource is invalid.
    Bind {
        /// Authenticated user.
        username: String,
        /// Requested resource.
        resource: Option<String>,
        /// Identifies this session among sessions that bind the same JID over time.
        id: u64,
        /// Where the hub sends this session's stanzas.
        outbox: mpsc::Sender<Outbound>,
        /// The answer.
        reply: oneshot::Sender<Option<FullJid>>,
    },
    /// A stanza from a bound session.
    Stanza {
        /// The session's JID.
        jid: FullJid,
        /// The session's id.
        id: u64,
        /// What it sent.
        stanza: Box<Stanza>,
    },
    /// A session ended.
    Unbind {
        /// The session's JID.
        jid: FullJid,
        /// The session's id.
        id: u64,
        /// Stanzas the hub sent it that the client never acknowledged (XEP-0198): after the
        /// session is gone, the hub treats them as sent to an unavailable resource.
        unacked: Vec<Stanza>,
    },
    /// An external component (XEP-0114) authenticated for `domain`; the reply says whether it
    /// may serve the domain (one connection per domain at a time).
    ComponentConnect {
        /// The component's domain.
        domain: BareJid,
        /// Identifies this connection among the component's connections over time.
        id: u64,
        /// Where the hub sends the stanzas for the domain.
        outbox: mpsc::Sender<Outbound>,
        /// The answer.
        reply: oneshot::Sender<Result<(), ComponentRefused>>,
    },
    /// A stanza from a connected component.
    ComponentStanza {
        /// The component's domain.
        domain: BareJid,
        /// The connection's id.
        id: u64,
        /// What it sent.
        stanza: Box<Stanza>,
    },
    /// A component's connection ended.
    ComponentDisconnect {
        /// The component's domain.
        domain: BareJid,
        /// The connection's id.
        id: u64,
    },
}

/// What the hub sends a session.
#[derive(Debug)]
pub enum Outbound {
    /// A stanza to write.
    Stanza(Box<Stanza>),
    /// Stanzas to write in order (stored offline messages).
    Batch(Vec<Stanza>),
    /// Close the session with a stream error.
    Close(CloseReason),
}

/// What every connection task shares.
pub struct ServerShared {
    /// The served domain.
    pub domain: String,
    /// The certificate served, reloadable (STARTTLS and direct TLS).
    pub tls: Arc<ServerTls>,
    /// Limits.
    pub limits: ServerLimits,
    /// The hub's inbox.
    pub hub: mpsc::Sender<HubCommand>,
    /// A separate database connection for credential lookups during SASL.
    auth: Mutex<Store>,
    /// Failed logins per address, for the growing delay.
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    /// Connections per address that have not logged in yet.
    unauthenticated: Mutex<HashMap<IpAddr, usize>>,
    /// Log lines about refused connections.
    refusals_logged: Mutex<LogLimit>,
    /// Sessions that can be resumed (XEP-0198 §5).
    pub resumptions: Resumptions,
}

/// A connection counted among the unauthenticated ones of its address until it is dropped.
#[must_use]
pub struct Unauthenticated<'a> {
    shared: &'a ServerShared,
    ip: IpAddr,
}

impl Drop for Unauthenticated<'_> {
    fn drop(&mut self) {
        let mut counts = self.shared.unauthenticated_counts();
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

impl ServerShared {
    /// The state shared by the connections of a server for `domain`, with no login failures
    /// or pending connections counted yet. `auth` is a database connection for SASL.
    pub fn new(
        domain: String,
        tls: Arc<ServerTls>,
        limits: ServerLimits,
        hub: mpsc::Sender<HubCommand>,
        auth: Store,
    ) -> Self {
        Self {
            domain,
            tls,
            limits,
            hub,
            auth: Mutex::new(auth),
            failures: Mutex::new(HashMap::new()),
            unauthenticated: Mutex::new(HashMap::new()),
            refusals_logged: Mutex::new(LogLimit::new(Duration::from_secs(60))),
            resumptions: Resumptions::default(),
        }
    }

    /// The credential lookup for one SASL exchange.
    pub fn credentials(&self) -> impl CredentialStore + '_ {
        move |username: &str, hash: Hash| -> Option<ScramKeys> {
            let store = self.auth.lock().unwrap_or_else(|e| e.into_inner());
            store.scram(username, hash).ok().flatten()
        }
    }

    /// Records a failed login from `peer`; returns how long to wait before answering.
    pub fn login_failed(&self, peer: SocketAddr) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        // Forget addresses that have been quiet for a while, so the map stays small.
        failures.retain(|_, (_, last)| now.duration_since(*last) < Duration::from_secs(600));
        let entry = failures.entry(peer.ip()).or_insert((0, now));
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        let factor = 2u32.saturating_pow(entry.0.saturating_sub(1).min(16));
        self.limits
            .login_failure_delay
            .saturating_mul(factor)
            .min(self.limits.max_login_delay)
    }

    /// Counts a new connection from `peer` until it logs in (drop the guard then), or refuses
    /// it when its address already has `max_unauthenticated_per_address` such connections.
    pub fn admit(&self, peer: SocketAddr) -> Option<Unauthenticated<'_>> {
        let ip = peer.ip();
        let mut counts = self.unauthenticated_counts();
        let count = counts.entry(ip).or_insert(0);
        if *count >= self.limits.max_unauthenticated_per_address {
            drop(counts);
            let mut logged = self
                .refusals_logged
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(suppressed) = logged.admit(Instant::now()) {
                tracing::warn!(
                    %ip,
                    "refused a connection: {} from this address have not logged in \
                     (--max-unauthenticated-per-address); {suppressed} more refusals since \
                     the last line",
                    self.limits.max_unauthenticated_per_address
                );
            }
            return None;
        }
        *count += 1;
        Some(Unauthenticated { shared: self, ip })
    }

    fn unauthenticated_counts(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.unauthenticated
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets earlier failures of `peer` after a successful login.
    pub fn login_succeeded(&self, peer: SocketAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(&peer.ip());
    }
}

/// XEP-0198 bookkeeping of one session: what it counted and what the client has not
/// acknowledged. It outlives a connection: a resumed session carries it to the next one. The
/// rules (counting, acks, resumption) are in `stream/sm.rs`.
#[derive(Debug, Default)]
pub struct SmState {
    /// Stanzas received from the client, modulo 2^32 (XEP-0198 §4: the `h` we report).
    pub handled: u32,
    /// The client's last `h`: stanzas it acknowledged, modulo 2^32.
    pub acked: u32,
    /// How many stanzas at the front of `queue` were written to a client; the rest wait for
    /// one (queued while the session hibernated, or held back by CSI when the link died).
    pub written: usize,
    /// The stanzas not acknowledged yet, oldest first.
    pub queue: VecDeque<Stanza>,
    /// Whether an `<r/>` we sent is not answered yet.
    pub awaiting: bool,
    /// The count of stanzas written when we last sent `<r/>`.
    pub requested: Option<u32>,
}

/// A session handed from the connection (or the hibernating task) that held it to the
/// connection that resumes it.
#[derive(Debug)]
pub struct Handover {
    /// The bound JID.
    pub jid: FullJid,
    /// The session's id in the hub.
    pub id: u64,
    /// The hub's queue for it, unchanged: the hub never sees the session move.
    pub inbox: mpsc::Receiver<Outbound>,
    /// Counters and the unacknowledged stanzas.
    pub sm: SmState,
    /// Its resumption id.
    pub token: String,
    /// How long it may hibernate when its link dies.
    pub timeout: Duration,
}

/// How a new connection asks for a session: the holder answers with the session.
pub type Takeover = oneshot::Sender<Handover>;

/// The resumable sessions, by account and resumption id: whoever holds a session (its live
/// connection, or its hibernating task) listens for a [`Takeover`] on the registered sender.
/// The key includes the account, so a resumption id of another account is simply not found.
#[derive(Debug, Default)]
pub struct Resumptions {
    /// Per account: each resumption id and its holder (a few per account, see `register`).
    entries: Mutex<Holders>,
}

/// Per account: each resumption id and its holder.
type Holders = HashMap<String, Vec<(String, mpsc::Sender<Takeover>)>>;

impl Resumptions {
    fn entries(&self) -> std::sync::MutexGuard<'_, Holders> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers `token` of `username`, unless the account already has `max` resumable
    /// sessions.
    pub fn register(
        &self,
        username: &str,
        token: &str,
        holder: mpsc::Sender<Takeover>,
        max: usize,
    ) -> bool {
        let mut entries = self.entries();
        let tokens = entries.entry(username.to_string()).or_default();
        if tokens.len() >= max {
            return false;
        }
        tokens.push((token.to_string(), holder));
        true
    }

    /// The new holder of a resumed session.
    pub fn replace(&self, username: &str, token: &str, holder: mpsc::Sender<Takeover>) {
        let mut entries = self.entries();
        let tokens = entries.entry(username.to_string()).or_default();
        match tokens.iter_mut().find(|(t, _)| t == token) {
            Some(entry) => entry.1 = holder,
            None => tokens.push((token.to_string(), holder)),
        }
    }

    /// Whoever holds `username`'s session `token`, if it is still resumable.
    pub fn find(&self, username: &str, token: &str) -> Option<mpsc::Sender<Takeover>> {
        let entries = self.entries();
        let tokens = entries.get(username)?;
        // In constant time: the id is the only secret between a session and whoever guesses.
        tokens
            .iter()
            .find(|(t, _)| bool::from(t.as_bytes().ct_eq(token.as_bytes())))
            .map(|(_, holder)| holder.clone())
    }

    /// Forgets `token`, if `holder` still holds it (a resumed session has a new holder).
    pub fn remove(&self, username: &str, token: &str, holder: &mpsc::Sender<Takeover>) {
        let mut entries = self.entries();
        let Some(tokens) = entries.get_mut(username) else {
            return;
        };
        tokens.retain(|(t, h)| !(t == token && h.same_channel(holder)));
        if tokens.is_empty() {
            entries.remove(username);
        }
    }

    /// How many sessions can be resumed now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries().values().map(Vec::len).sum()
    }
}
