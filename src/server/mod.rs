//! `mqtt2xmpp server`: the small bundled XMPP server (client-to-server only, one domain).
//!
//! ```text
//! TcpListener(s) ─accept (Semaphore-bounded)─▶ stream::serve (one task per connection)
//!      negotiation: STARTTLS or direct TLS → SASL → bind │ HubCommand (bounded channel)
//!                                                    ▼
//!                              hub thread: Hub (routing, roster, presence, offline) + Store
//!                                                    │ Outbound (per-session bounded queue)
//!                                                    ▼
//!                                         stream::serve writes to the client
//!
//! TcpListener (--listen-component, only with --component) ─▶ component::serve
//!      one task per external component (XEP-0114): handshake, then stanzas ⇄ the same hub
//! ```
//!
//! | file | feature |
//! |---|---|
//! | `stream/` | connection: negotiation, authentication, bound session, stream errors |
//! | `component/` | external components (XEP-0114): their listener, handshake and stream |
//! | `shared.rs` | what connections and the hub thread share: commands, queues, login counts |
//! | `driver.rs` | the hub thread: applies commands in order, fills the sessions' queues |
//! | `sasl/` | SCRAM-SHA-1/256(-PLUS) and PLAIN, sans-IO: keys, exchange, messages, PLAIN |
//! | `hub/` | the single owner of all routing state, and its services, one file each (roster, presence, carbons, disco, private storage, offline, vCard, PEP, avatars, blocking, archive, ping, version); how to add a service is written there |
//! | `store/` | SQLite: accounts, rosters, offline messages, private XML, vCards, PEP nodes and items, block lists, the message archive, one file each |
//! | `limits.rs` | stanza size, depth, byte rate, connection and login limits, and the services' per-account limits |
//! | `upload/` | the HTTPS listener of HTTP File Upload (XEP-0363): PUT and GET of the files whose slots the hub hands out, expiry |
//! | `cert.rs` | certificate from files or self-signed, reloaded on request |
//! | `admin.rs` | `mqtt2xmpp user add/del/list/passwd` |
//!
//! This file is the wiring only: configuration, errors, and [`run`], which starts the hub
//! thread and the accept loops (the STARTTLS port, and the direct TLS port of XEP-0368 if
//! there is one, sharing one connection cap), reloads the certificate when
//! [`ServerConfig::reload`] is notified, and drains them at shutdown.

pub mod admin;
pub mod cert;
pub mod component;
mod driver;
pub(crate) mod hub;
pub mod limits;
// Public only for the fuzz targets in fuzz/.
#[cfg(feature = "fuzzing")]
pub mod sasl;
#[cfg(not(feature = "fuzzing"))]
pub(crate) mod sasl;
pub(crate) mod shared;
pub(crate) mod store;
pub mod upload;
// Public only for the fuzz targets in fuzz/.
#[cfg(feature = "fuzzing")]
pub mod stream;
#[cfg(not(feature = "fuzzing"))]
pub(crate) mod stream;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;

use self::hub::Hub;
use self::limits::ServerLimits;
use self::shared::ServerShared;
use self::store::{Store, StoreError};

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
    pub limits: ServerLimits,
    /// Notified to read the certificate and key files again (on SIGHUP): new connections get
    /// the new certificate, existing sessions go on; a pair that cannot be used is logged and
    /// the previous one stays. `None`: the certificate is read once.
    pub reload: Option<Arc<Notify>>,
    /// External components (XEP-0114) and their listener; none by default.
    pub components: component::ComponentConfig,
}

/// Where the server accepts clients. A lone `TcpListener` converts into this, for a server
/// without a direct TLS port.
#[derive(Debug)]
pub struct Listeners {
    /// The client port (5222): plain text, STARTTLS required (RFC 6120 §5).
    pub starttls: TcpListener,
    /// The direct TLS port (5223, XEP-0368): TLS from the first byte.
    pub direct_tls: Option<TcpListener>,
    /// The HTTPS port of the upload service (XEP-0363, `upload/`); without it there is no
    /// upload service.
    pub http: Option<TcpListener>,
}

impl From<TcpListener> for Listeners {
    fn from(starttls: TcpListener) -> Self {
        Listeners {
            starttls,
            direct_tls: None,
            http: None,
        }
    }
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
        #[source]
        source: std::io::Error,
    },
    /// The external components' listener could not be opened.
    #[error("cannot listen on {address} for external components (change it with --listen-component): {source}")]
    ComponentListen {
        /// The address.
        address: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The operating system would not start the hub thread.
    #[error("cannot start the hub thread: {0}")]
    HubThread(#[source] std::io::Error),
}

/// The database file inside the data directory.
pub fn database_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("server.sqlite")
}

/// A running server's handles for callers that embed it (`mqtt2xmpp up`, tests).
#[derive(Debug)]
pub struct Started {
    /// Where the server certificate is (for clients' `--xmpp-ca`).
    pub cert_path: PathBuf,
    /// Its SHA-256 fingerprint.
    pub fingerprint: String,
    /// Where external components connect, if any are configured.
    pub component_address: Option<std::net::SocketAddr>,
    /// Where the upload service's HTTPS listener is, if there is one.
    pub http_address: Option<std::net::SocketAddr>,
}

/// Prepares the data directory, database and certificate, then serves `listeners` (a
/// `TcpListener`, or [`Listeners`] with a direct TLS port) until `shutdown`. `ready` receives
/// the certificate details once the server accepts connections.
pub async fn run(
    config: ServerConfig,
    listeners: impl Into<Listeners>,
    shutdown: CancellationToken,
    ready: Option<oneshot::Sender<Started>>,
) -> Result<(), ServerError> {
    let mut listeners = listeners.into();
    std::fs::create_dir_all(&config.data_dir).map_err(|source| ServerError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let db = database_path(&config.data_dir);
    let mut hub = Hub::new(&config.domain, Store::open(&db)?, hub::registry::SERVICES)
        .ok_or_else(|| ServerError::Domain(config.domain.clone()))?;
    hub.start(&config.limits);
    for spec in &config.components.components {
        hub.add_component(spec.domain.clone());
    }
    let auth = Store::open(&db)?;
    let identity = cert::load_or_create(
        &config.data_dir,
        &config.domain,
        config.cert.as_deref(),
        config.key.as_deref(),
    )?;
    let tls = Arc::new(cert::ServerTls::new(&identity)?);
    let tls_for_http = tls.clone();
    let fingerprint = identity.fingerprint();
    tracing::info!(
        certificate = %identity.cert_path.display(),
        sha256 = fingerprint,
        self_signed = identity.self_signed,
        "TLS certificate"
    );

    // Off unless a component is configured.
    let component_listener = if config.components.components.is_empty() {
        None
    } else {
        let address = config.components.listen;
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| ServerError::ComponentListen { address, source })?;
        Some(listener)
    };
    let component_address = component_listener
        .as_ref()
        .and_then(|listener| listener.local_addr().ok());

    // The upload service (XEP-0363), only with an HTTPS listener. Its URLs name the domain,
    // which the certificate is for, and the listener's port, unless told otherwise.
    let http_address = listeners
        .http
        .as_ref()
        .and_then(|listener| listener.local_addr().ok());
    let uploads = match http_address {
        Some(address) => {
            let limits = config.limits.upload.clone();
            let base = limits.public_url.clone().unwrap_or_else(|| {
                format!("https://{}:{}", hub_domain(&config.domain), address.port())
            });
            hub.upload_start(&base, limits.clone());
            let dir = upload::upload_dir(&config.data_dir);
            let uploads = upload::Uploads::new(
                Store::open(&db)?,
                dir.clone(),
                limits,
                upload::system_clock(),
            )
            .map_err(|source| ServerError::DataDir { path: dir, source })?;
            tracing::info!(address = %address, url = base, "HTTP upload service listening");
            Some(Arc::new(uploads))
        }
        None => None,
    };

    let (hub_tx, hub_rx) = mpsc::channel(1024);
    let hub_thread = std::thread::Builder::new()
        .name("xmpp-hub".into())
        .spawn(move || driver::drive_hub(hub, hub_rx))
        .map_err(ServerError::HubThread)?;
    let shared = Arc::new(ServerShared::new(
        hub_domain(&config.domain),
        tls.clone(),
        config.limits.clone(),
        hub_tx,
        auth,
    ));
    let reloads = config
        .reload
        .clone()
        .map(|trigger| tokio::spawn(reload_on(trigger, tls)));
    let address = listeners.starttls.local_addr().ok();
    let direct_tls = listeners
        .direct_tls
        .as_ref()
        .and_then(|listener| listener.local_addr().ok());
    tracing::info!(
        domain = shared.domain,
        address = ?address,
        direct_tls = ?direct_tls,
        "XMPP server listening"
    );
    if let Some(ready) = ready {
        let _ = ready.send(Started {
            cert_path: identity.cert_path.clone(),
            fingerprint,
            component_address,
            http_address,
        });
    }
    let http = match (listeners.http.take(), uploads) {
        (Some(listener), Some(uploads)) => Some(tokio::spawn(upload::serve(
            listener,
            tls_for_http,
            uploads,
            shutdown.clone(),
        ))),
        _ => None,
    };
    let components = component_listener.map(|listener| {
        let specs = config.components.components.clone().into();
        tokio::spawn(component::serve(
            listener,
            specs,
            shared.clone(),
            shutdown.clone(),
        ))
    });

    // A JoinSet rather than a TaskTracker: stragglers are aborted after 3 s, which a
    // TaskTracker cannot do. One accept loop for both ports, so one connection cap.
    let mut connections = tokio::task::JoinSet::new();
    let mut ports = vec![(&listeners.starttls, stream::Entry::StartTls)];
    if let Some(listener) = &listeners.direct_tls {
        ports.push((listener, stream::Entry::DirectTls));
    }
    let accepting: Vec<&TcpListener> = ports.iter().map(|(listener, _)| *listener).collect();
    crate::accept::bounded_any(
        &accepting,
        config.limits.max_connections,
        shutdown.clone(),
        &mut connections,
        "XMPP server",
        |tcp, peer, index| {
            let _ = tcp.set_nodelay(true);
            let entry = ports
                .get(index)
                .map_or(stream::Entry::StartTls, |(_, e)| *e);
            stream::serve(entry, tcp, peer, shared.clone(), shutdown.clone())
        },
    )
    .await;
    if let Some(reloads) = reloads {
        reloads.abort();
    }

    tracing::info!("shutting down: closing {} connections", connections.len());
    // Every session sees the shutdown and sends `system-shutdown`; give them a moment.
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(3), drain)
        .await
        .is_err()
    {
        connections.abort_all();
    }
    if let Some(components) = components {
        let _ = components.await;
    }
    if let Some(http) = http {
        let _ = http.await;
    }
    drop(shared);
    let _ = tokio::task::spawn_blocking(move || hub_thread.join()).await;
    tracing::info!("server stopped");
    Ok(())
}

/// Reloads the certificate each time `trigger` is notified, until aborted. Notifications that
/// arrive during a reload are folded into one more reload.
async fn reload_on(trigger: Arc<Notify>, tls: Arc<cert::ServerTls>) {
    loop {
        trigger.notified().await;
        let previous = tls.current().fingerprint.clone();
        let tls = tls.clone();
        match tokio::task::spawn_blocking(move || tls.reload()).await {
            Ok(Ok(served)) => tracing::info!(
                certificate = %served.cert_path.display(),
                sha256 = served.fingerprint,
                changed = served.fingerprint != previous,
                "TLS certificate reloaded: new connections get it, sessions go on"
            ),
            Ok(Err(error)) => tracing::error!(
                sha256 = previous,
                "TLS certificate not reloaded, new connections still get the previous one: {error}"
            ),
            Err(error) => tracing::error!("TLS certificate not reloaded: {error}"),
        }
    }
}

fn hub_domain(domain: &str) -> String {
    domain.to_ascii_lowercase()
}
