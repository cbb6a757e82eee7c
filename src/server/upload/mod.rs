//! HTTP File Upload (XEP-0363): the HTTPS listener that receives and serves the files whose
//! slots the hub hands out (`hub/upload.rs`).
//!
//! ```text
//! client ─IQ slot request─▶ hub (upload.DOMAIN): checks, quota, row `slot` in the store
//!        ◀─PUT/GET URL─────  https://HOST:PORT/upload/TOKEN/NAME
//! client ─PUT (TLS, hyper)─▶ this listener: token looked up, row `receiving`, body to
//!                            DATA_DIR/uploads/TOKEN.part, renamed TOKEN, row `stored`
//! anyone ─GET─────────────▶  the file, with its stored type and length
//! ```
//!
//! HTTP is hyper's (HTTP/1.1) over the same rustls configuration and certificate as the XMPP
//! ports: no HTTP parsing of our own, no second TLS stack.
//!
//! # Security
//!
//! - **Unguessable URLs**: the token is 128 random bits; whoever holds the URL may GET the
//!   file (that is how XEP-0363 shares files), nobody can find another's.
//! - **No paths from input**: the token in the path is looked up in the store; the file on
//!   disk is named by the token as the hub generated it, and the request's path is never
//!   joined to a directory. `/../`, `%2e%2e` and the like are simply unknown tokens.
//! - **One PUT per slot**, the declared size (`Content-Length` must equal it, and the body is
//!   counted) and content type enforced, a largest file and a per-account quota (checked when
//!   the slot is handed out, in the same transaction that records it).
//! - **A bounded listener**: at most [`UploadLimits::max_connections`] connections (more wait
//!   in the kernel's queue), a deadline for the TLS handshake and for each request's headers
//!   (slowloris), headers of at most [`UploadLimits::max_header_bytes`] (431 beyond), a
//!   `Content-Length` over the largest file refused before a byte of the body is read (413),
//!   bodies streamed to disk, never held in memory, with an idle deadline between reads.
//!   The XMPP ports have their own accept loop and connection cap, so an attack here does not
//!   take their slots.
//!
//! # Expiry
//!
//! A sweep at start and then periodically deletes the files stored longer than
//! [`UploadLimits::file_ttl`], slots unused for [`UploadLimits::slot_ttl`], uploads cut off
//! mid-way, and files on disk the store does not know (left by a crash).

mod http;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::cert::ServerTls;
use super::store::{Store, StoreError};

use self::http::serve_connection;

/// The upload service's settings (`--upload-*` and `--http-*` flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadLimits {
    /// Largest file, in bytes (advertised in the service's disco#info, XEP-0363 §3).
    pub max_file_size: u64,
    /// Most bytes one account may have stored, with its uploads under way and open slots.
    pub quota: u64,
    /// How long a file is kept after its upload.
    pub file_ttl: Duration,
    /// How long a slot may wait for its PUT.
    pub slot_ttl: Duration,
    /// The start of the URLs handed out (`https://upload.example.org`), when clients reach the
    /// listener by another name or port than `https://DOMAIN:PORT` (a reverse proxy, a port
    /// forward); `None`: the domain and the listener's port.
    pub public_url: Option<String>,
    /// Most HTTPS connections served at once.
    pub max_connections: usize,
    /// Time for the TLS handshake and then for each request's headers.
    pub header_timeout: Duration,
    /// Longest a request body may pause between two reads.
    pub body_timeout: Duration,
    /// Largest request head (request line and headers), in bytes; at least 8 KiB.
    pub max_header_bytes: usize,
}

impl Default for UploadLimits {
    fn default() -> Self {
        Self {
            max_file_size: 10 * 1024 * 1024,
            quota: 100 * 1024 * 1024,
            file_ttl: Duration::from_secs(7 * 86_400),
            slot_ttl: Duration::from_secs(300),
            public_url: None,
            max_connections: 256,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_header_bytes: 16 * 1024,
        }
    }
}

impl UploadLimits {
    /// How often the expiry sweep runs: a tenth of the files' lifetime, between 1 s and an hour.
    fn sweep_every(&self) -> Duration {
        (self.file_ttl / 10).clamp(Duration::from_secs(1), Duration::from_secs(3600))
    }
}

/// Where the uploaded files live: `DATA_DIR/uploads`.
pub fn upload_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("uploads")
}

/// A clock in milliseconds since the Unix epoch (the tests drive their own).
pub(crate) type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// What the HTTP side needs: its own connection to the store, the directory, the limits.
pub(crate) struct Uploads {
    store: Mutex<Store>,
    dir: PathBuf,
    limits: UploadLimits,
    now: Clock,
}

impl std::fmt::Debug for Uploads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uploads")
            .field("dir", &self.dir)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

fn ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The system clock.
pub(crate) fn system_clock() -> Clock {
    Arc::new(crate::server::hub::now_ms)
}

impl Uploads {
    /// The HTTP side on `store`, with the files in `dir` (created, mode 0700).
    pub(crate) fn new(
        store: Store,
        dir: PathBuf,
        limits: UploadLimits,
        now: Clock,
    ) -> std::io::Result<Self> {
        create_private_dir(&dir)?;
        Ok(Self {
            store: Mutex::new(store),
            dir,
            limits,
            now,
        })
    }

    /// Runs `f` on the store, off the async workers.
    async fn with_store<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let store = this.store.lock().unwrap_or_else(|e| e.into_inner());
            f(&store)
        })
        .await
        .unwrap_or_else(|join| {
            Err(StoreError::Sqlite(rusqlite::Error::ToSqlConversionFailure(
                Box::new(join),
            )))
        })
    }

    /// Deletes what expired (see the module docs); `starting`: also uploads cut off by a stop
    /// and files the store does not know. Returns how many rows went.
    pub(crate) fn sweep(&self, starting: bool) -> Result<usize, StoreError> {
        let store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        let limits = &self.limits;
        // Nothing is being received at start; later, an upload gets an hour.
        let receive_ttl = if starting { 0 } else { 3_600_000 };
        let gone = store.upload_expire(
            (self.now)(),
            ms(limits.slot_ttl),
            receive_ttl,
            ms(limits.file_ttl),
        )?;
        if starting {
            if let Ok(entries) = std::fs::read_dir(&self.dir) {
                for entry in entries.flatten() {
                    let name = entry.file_name();
                    let name = name.to_string_lossy();
                    let token = name.strip_suffix(".part").unwrap_or(&name);
                    if name.ends_with(".part") || !store.upload_known(token)? {
                        let _ = std::fs::remove_file(entry.path());
                    }
                }
            }
        }
        Ok(gone.len())
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// One expiry sweep off the async threads, logged.
async fn sweep(uploads: &Arc<Uploads>, starting: bool) {
    let run = uploads.clone();
    match tokio::task::spawn_blocking(move || run.sweep(starting)).await {
        Ok(Ok(0)) | Err(_) => {}
        Ok(Ok(gone)) => tracing::info!(gone, "expired uploads deleted"),
        Ok(Err(error)) => tracing::error!("upload expiry failed: {error}"),
    }
}

/// Serves HTTPS on `listener` until `shutdown`: the bounded accept loop, TLS with the
/// server's certificate, then hyper; and the expiry sweep.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Arc<ServerTls>,
    uploads: Arc<Uploads>,
    shutdown: CancellationToken,
) {
    // The start's sweep deletes every half-written file: it ends before the first
    // connection is accepted, or it could take an upload just begun.
    sweep(&uploads, true).await;
    let sweeper = {
        let uploads = uploads.clone();
        let every = uploads.limits.sweep_every();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                sweep(&uploads, false).await;
            }
        })
    };
    let mut connections = tokio::task::JoinSet::new();
    let limits = uploads.limits.clone();
    crate::accept::bounded(
        &listener,
        limits.max_connections,
        shutdown.clone(),
        &mut connections,
        "HTTP upload",
        |tcp, _peer| {
            let _ = tcp.set_nodelay(true);
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.current().starttls.clone());
            let uploads = uploads.clone();
            let shutdown = shutdown.clone();
            let handshake = limits.header_timeout;
            async move {
                match tokio::time::timeout(handshake, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => serve_connection(stream, uploads, shutdown).await,
                    Ok(Err(error)) => tracing::debug!("HTTPS handshake failed: {error}"),
                    Err(_) => tracing::debug!("HTTPS handshake timed out"),
                }
            }
        },
    )
    .await;
    sweeper.abort();
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(3), drain)
        .await
        .is_err()
    {
        connections.abort_all();
    }
}
