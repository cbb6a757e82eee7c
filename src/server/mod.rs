//! `mqtt2xmpp server`: the small bundled XMPP server (client-to-server only, one domain).
//!
//! ```text
//! TcpListener ─accept (Semaphore-bounded)─▶ stream::serve (one task per connection)
//!      negotiation: STARTTLS → SASL → bind          │ HubCommand (bounded channel)
//!                                                    ▼
//!                              hub thread: Hub (routing, roster, presence, offline) + Store
//!                                                    │ Outbound (per-session bounded queue)
//!                                                    ▼
//!                                         stream::serve writes to the client
//! ```
//!
//! | file | feature |
//! |---|---|
//! | `stream.rs` | connection: negotiation, session loop, stream errors |
//! | `sasl.rs` | SCRAM-SHA-1/256(-PLUS) and PLAIN, sans-IO |
//! | `hub/` | the single owner of all routing state, and its services, one file each (roster, presence, carbons, disco, private storage, offline, ping, version); how to add a service is written there |
//! | `store.rs` | SQLite: accounts, rosters, offline messages, private XML |
//! | `limits.rs` | stanza size, depth, byte rate, connection and login limits |
//! | `cert.rs` | certificate from files or self-signed |
//! | `admin.rs` | `mqtt2xmpp user add/del/list/passwd` |

pub mod admin;
pub mod cert;
pub(crate) mod hub;
pub mod limits;
pub mod sasl;
pub mod store;
pub mod stream;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_xmpp::jid::FullJid;
use tokio_xmpp::Stanza;

use self::hub::{CloseReason, Delivery, Hub};
use self::limits::Limits;
use self::sasl::{CredentialStore, Hash, ScramKeys};
use self::store::{Store, StoreError};
use crate::log_limit::LogLimit;
use tokio_util::sync::CancellationToken;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The one domain served (`localhost`, `example.org`).
    pub domain: String,
    /// Where the database and the self-signed certificate live.
    pub data_dir: PathBuf,
    /// Certificate chain (PEM); with `key`, replaces the self-signed certificate.
    pub cert: Option<PathBuf>,
    /// Private key (PEM) for `cert`.
    pub key: Option<PathBuf>,
    /// Resource limits.
    pub limits: Limits,
}

/// Why the server could not start or had to stop.
#[derive(Debug, Error)]
pub enum ServerError {
    /// The domain is not a valid XMPP domain.
    #[error("--domain {0:?} is not a valid XMPP domain")]
    Domain(String),
    /// The database could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The certificate could not be loaded or created.
    #[error(transparent)]
    Cert(#[from] cert::CertError),
    /// The data directory could not be created.
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The database file inside the data directory.
pub fn database_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("server.sqlite")
}

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
pub struct Shared {
    /// The served domain.
    pub domain: String,
    /// TLS configuration for STARTTLS.
    pub tls: Arc<rustls::ServerConfig>,
    /// Limits.
    pub limits: Limits,
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
}

/// A connection counted among the unauthenticated ones of its address until it is dropped.
#[must_use]
pub struct Unauthenticated<'a> {
    shared: &'a Shared,
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

impl Shared {
    /// The state shared by the connections of a server for `domain`, with no login failures
    /// or pending connections counted yet. `auth` is a database connection for SASL.
    pub fn new(
        domain: String,
        tls: Arc<rustls::ServerConfig>,
        limits: Limits,
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

/// A running server's handles for callers that embed it (`mqtt2xmpp up`, tests).
#[derive(Debug)]
pub struct Started {
    /// Where the server certificate is (for clients' `--xmpp-ca`).
    pub cert_path: PathBuf,
    /// Its SHA-256 fingerprint.
    pub fingerprint: String,
}

/// Prepares the data directory, database and certificate, then serves `listener` until
/// `shutdown`. `ready` receives the certificate details once the server accepts connections.
pub async fn run(
    config: ServerConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
    ready: Option<oneshot::Sender<Started>>,
) -> Result<(), ServerError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| ServerError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let db = database_path(&config.data_dir);
    let hub = Hub::new(&config.domain, Store::open(&db)?)
        .ok_or_else(|| ServerError::Domain(config.domain.clone()))?;
    let auth = Store::open(&db)?;
    let identity = cert::load_or_create(
        &config.data_dir,
        &config.domain,
        config.cert.as_deref(),
        config.key.as_deref(),
    )?;
    let tls = identity.server_config()?;
    let fingerprint = identity.fingerprint();
    tracing::info!(
        certificate = %identity.cert_path.display(),
        sha256 = fingerprint,
        self_signed = identity.self_signed,
        "TLS certificate"
    );

    let (hub_tx, hub_rx) = mpsc::channel(1024);
    let hub_thread = std::thread::Builder::new()
        .name("xmpp-hub".into())
        .spawn(move || drive_hub(hub, hub_rx))
        .map_err(|source| ServerError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
    let shared = Arc::new(Shared::new(
        hub_domain(&config.domain),
        tls,
        config.limits.clone(),
        hub_tx,
        auth,
    ));
    let address = listener.local_addr().ok();
    tracing::info!(domain = shared.domain, address = ?address, "XMPP server listening");
    if let Some(ready) = ready {
        let _ = ready.send(Started {
            cert_path: identity.cert_path.clone(),
            fingerprint,
        });
    }

    let mut connections = tokio::task::JoinSet::new();
    crate::accept::bounded(
        &listener,
        config.limits.max_connections,
        shutdown.clone(),
        &mut connections,
        "XMPP server",
        |tcp, peer| {
            let _ = tcp.set_nodelay(true);
            stream::serve(tcp, peer, shared.clone(), shutdown.clone())
        },
    )
    .await;

    tracing::info!("shutting down: closing {} connections", connections.len());
    // Every session sees the shutdown and sends `system-shutdown`; give them a moment.
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(3), drain)
        .await
        .is_err()
    {
        connections.abort_all();
    }
    drop(shared);
    let _ = tokio::task::spawn_blocking(move || hub_thread.join()).await;
    tracing::info!("server stopped");
    Ok(())
}

fn hub_domain(domain: &str) -> String {
    domain.to_ascii_lowercase()
}

/// The hub thread's handle on each bound session: the session's id, and its outgoing queue, or
/// `None` once [`deliver`] dropped an overflowing queue. The entry stays until the session's
/// `Unbind`, which is what makes the hub forget the session (and tell its contacts).
type Outboxes = HashMap<FullJid, (u64, Option<mpsc::Sender<Outbound>>)>;

/// The hub thread: applies commands in order and hands deliveries to the sessions' queues.
fn drive_hub(mut hub: Hub, mut commands: mpsc::Receiver<HubCommand>) {
    let mut outboxes: Outboxes = HashMap::new();
    while let Some(command) = commands.blocking_recv() {
        apply(&mut hub, &mut outboxes, command);
    }
}

/// Applies one command to the hub and hands the resulting deliveries to the sessions' queues.
fn apply(hub: &mut Hub, outboxes: &mut Outboxes, command: HubCommand) {
    let deliveries = match command {
        HubCommand::Bind {
            username,
            resource,
            id,
            outbox,
            reply,
        } => match hub.bind(&username, resource.as_deref()) {
            Ok((jid, deliveries)) => {
                // Deliveries first: they may close the session this one replaces.
                deliver(outboxes, deliveries);
                outboxes.insert(jid.clone(), (id, Some(outbox)));
                let _ = reply.send(Some(jid));
                Vec::new()
            }
            Err(_) => {
                let _ = reply.send(None);
                Vec::new()
            }
        },
        HubCommand::Stanza { jid, id, stanza } => {
            if outboxes
                .get(&jid)
                .is_some_and(|(current, _)| *current == id)
            {
                hub.inbound(&jid, *stanza)
            } else {
                Vec::new()
            }
        }
        HubCommand::Unbind { jid, id } => {
            if outboxes
                .get(&jid)
                .is_some_and(|(current, _)| *current == id)
            {
                outboxes.remove(&jid);
                hub.unbind(&jid)
            } else {
                Vec::new()
            }
        }
    };
    deliver(outboxes, deliveries);
}

fn deliver(outboxes: &mut Outboxes, deliveries: Vec<Delivery>) {
    for delivery in deliveries {
        let (jid, outbound) = match delivery {
            Delivery::Stanza(jid, stanza) => (jid, Outbound::Stanza(stanza)),
            Delivery::Batch(jid, stanzas) => (jid, Outbound::Batch(stanzas)),
            Delivery::Close(jid, reason) => {
                if let Some((_, Some(outbox))) = outboxes.remove(&jid) {
                    let _ = outbox.try_send(Outbound::Close(reason));
                }
                continue;
            }
        };
        let Some((_, queue)) = outboxes.get_mut(&jid) else {
            continue;
        };
        let Some(outbox) = queue else {
            continue; // Already cut off; its Unbind is on the way.
        };
        match outbox.try_send(outbound) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                // The client does not read: rather than buffer without bound, drop the
                // queue's sender; the session drains what is queued, then closes with
                // `policy-violation`, and its Unbind still finds the entry.
                tracing::warn!(%jid, "outgoing queue full; closing the session");
                *queue = None;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                // The connection ended after the hub routed this stanza to it; its
                // Unbind is queued behind the command being handled.
                tracing::debug!(%jid, "session already closed; stanza dropped");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio_xmpp::jid::{BareJid, Jid};
    use tokio_xmpp::parsers::message::Message;
    use tokio_xmpp::parsers::presence::Presence;

    use super::store::StoredScram;
    use super::*;

    fn keys() -> StoredScram {
        StoredScram {
            salt: vec![1; 16],
            iterations: 4096,
            stored_key: vec![2; 20],
            server_key: vec![3; 20],
        }
    }

    /// A hub thread on a fresh database with the accounts alice and bob.
    fn hub_thread(
        dir: &tempfile::TempDir,
    ) -> (mpsc::Sender<HubCommand>, std::thread::JoinHandle<()>) {
        let store = Store::open(database_path(dir.path())).unwrap();
        for user in ["alice", "bob"] {
            store.create_account(user, &keys(), &keys()).unwrap();
        }
        let hub = Hub::new("localhost", store).unwrap();
        let (commands, inbox) = mpsc::channel(16);
        (commands, std::thread::spawn(move || drive_hub(hub, inbox)))
    }

    /// Binds `user@localhost/resource`; once this returns, the hub has handled every earlier
    /// command (it handles them in order).
    fn bind(
        commands: &mpsc::Sender<HubCommand>,
        user: &str,
        resource: &str,
        id: u64,
        capacity: usize,
    ) -> (FullJid, mpsc::Receiver<Outbound>) {
        let (outbox, inbox) = mpsc::channel(capacity);
        let (reply, bound) = oneshot::channel();
        commands
            .blocking_send(HubCommand::Bind {
                username: user.into(),
                resource: Some(resource.into()),
                id,
                outbox,
                reply,
            })
            .unwrap();
        (bound.blocking_recv().unwrap().unwrap(), inbox)
    }

    fn send(commands: &mpsc::Sender<HubCommand>, jid: &FullJid, id: u64, stanza: Stanza) {
        let (jid, stanza) = (jid.clone(), Box::new(stanza));
        commands
            .blocking_send(HubCommand::Stanza { jid, id, stanza })
            .unwrap();
    }

    fn chat(to: Jid, body: &str) -> Stanza {
        Message::chat(Some(to))
            .with_body(Default::default(), body.into())
            .into()
    }

    /// Stops the hub thread and returns alice's stored offline messages.
    fn offline_for_alice(
        dir: &tempfile::TempDir,
        commands: mpsc::Sender<HubCommand>,
        thread: std::thread::JoinHandle<()>,
    ) -> Vec<String> {
        drop(commands);
        thread.join().unwrap();
        let store = Store::open(database_path(dir.path())).unwrap();
        let stored = store.offline_messages("alice").unwrap();
        stored.into_iter().map(|(_, xml)| xml).collect()
    }

    #[test]
    fn a_session_that_closed_while_a_stanza_was_routed_to_it_is_still_unbound() {
        let dir = tempfile::tempdir().unwrap();
        let (commands, thread) = hub_thread(&dir);
        let (alice, alice_queue) = bind(&commands, "alice", "r", 1, 8);
        let (bob, _bob_queue) = bind(&commands, "bob", "r", 2, 8);
        send(&commands, &alice, 1, Presence::available().into());
        // alice's connection ends; a message for her is routed before the hub hears of it.
        drop(alice_queue);
        send(&commands, &bob, 2, chat(alice.clone().into(), "too late"));
        commands
            .blocking_send(HubCommand::Unbind {
                jid: alice.clone(),
                id: 1,
            })
            .unwrap();
        // alice is offline now, so the next message waits for her in storage.
        let alice_bare: BareJid = alice.to_bare();
        send(&commands, &bob, 2, chat(alice_bare.into(), "stored"));
        let stored = offline_for_alice(&dir, commands, thread);
        assert_eq!(stored.len(), 1, "{stored:?}");
        assert!(stored[0].contains("stored"), "{stored:?}");
    }

    #[test]
    fn a_session_cut_off_for_a_full_queue_is_unbound_when_it_closes() {
        let dir = tempfile::tempdir().unwrap();
        let (commands, thread) = hub_thread(&dir);
        let (alice, mut alice_queue) = bind(&commands, "alice", "r", 1, 1);
        let (bob, _bob_queue) = bind(&commands, "bob", "r", 2, 8);
        // alice's own presence comes back to her and fills her one-stanza queue.
        send(&commands, &alice, 1, Presence::available().into());
        send(&commands, &bob, 2, chat(alice.clone().into(), "overflow"));
        let _barrier = bind(&commands, "bob", "barrier", 3, 8);
        // The session drains what was queued, then sees the queue end, and closes.
        assert!(matches!(
            alice_queue.blocking_recv(),
            Some(Outbound::Stanza(_))
        ));
        assert!(alice_queue.blocking_recv().is_none());
        commands
            .blocking_send(HubCommand::Unbind {
                jid: alice.clone(),
                id: 1,
            })
            .unwrap();
        send(&commands, &bob, 2, chat(alice.to_bare().into(), "stored"));
        let stored = offline_for_alice(&dir, commands, thread);
        assert_eq!(stored.len(), 1, "{stored:?}");
        assert!(stored[0].contains("stored"), "{stored:?}");
    }
}
