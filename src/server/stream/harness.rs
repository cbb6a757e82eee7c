//! A connection without a socket, for the transcript tests (`tests.rs`) and the fuzz target
//! (`fuzzing.rs`): any byte transport — one end of a `tokio::io::duplex` pair, or a fuzzer's
//! input — served by the same phase functions as a TCP connection, from a chosen point on.
//!
//! TLS is left out: a test starts before STARTTLS (and ends at `<proceed/>`) or inside TLS
//! (with pretend channel-binding bytes), because the TLS handshake is rustls's, not ours.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};

use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio_util::sync::CancellationToken;

use super::auth::sasl;
use super::errors::ConnectionEnd;
use super::negotiation::starttls;
use super::session::serve_authenticated;
use super::READ_BUFFER;
use crate::server::cert::{Identity, ServerTls};
use crate::server::limits::{LimitedReader, Meter};
use crate::server::sasl::ScramKeys;
use crate::server::sasl::{derive_keys, ConnectionInfo, Hash};
use crate::server::shared::ServerShared;
use crate::server::store::{RosterItem, Store, Subscription};

/// The served domain.
pub(super) const DOMAIN: &str = "localhost";
/// The accounts of [`add_accounts`], each with the password `<name>-secret`.
pub(super) const ACCOUNTS: [&str; 2] = ["alice", "bob"];
/// PBKDF2 iterations of the accounts' keys: low, so that a PLAIN login costs little.
const ITERATIONS: u32 = 16;

/// The address a harness connection comes from.
pub(super) const PEER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 5222);

/// Where in a connection serving starts.
#[derive(Debug, Clone, Copy)]
pub(super) enum Start<'a> {
    /// A new plain-text connection: stream header, features, `<starttls/>`, and our
    /// `<proceed/>`, where serving stops.
    Plain,
    /// Inside TLS, whose channel-binding bytes are `tls_exporter` and the `tls-server-end-point`
    /// of [`tls_config`]'s certificate: stream header, SASL
    /// exchanges, and after `<success/>` the restarted stream, bind and the session.
    Sasl {
        /// What TLS would export for channel binding (so that `-PLUS` is offered).
        tls_exporter: &'a [u8],
    },
    /// Right after `username`'s `<success/>`: the restarted stream header, bind and the session.
    Session {
        /// The authenticated account.
        username: &'a str,
    },
}

/// Serves `transport` from `start` on, under `shared`'s limits, until the connection ends.
pub(super) async fn serve_from<Io>(
    start: Start<'_>,
    transport: Io,
    shared: &Arc<ServerShared>,
    shutdown: CancellationToken,
) -> Result<(), ConnectionEnd>
where
    Io: AsyncRead + AsyncWrite + Unpin,
{
    let limits = &shared.limits;
    let meter = Meter::new(limits.max_preauth_bytes, limits);
    let mut io = BufReader::with_capacity(
        READ_BUFFER,
        LimitedReader::new(
            transport,
            meter.clone(),
            limits.bytes_per_second,
            limits.burst_bytes,
        ),
    );
    match start {
        Start::Plain => starttls(&mut io, shared, &meter).await,
        Start::Sasl { tls_exporter } => {
            let info = ConnectionInfo {
                domain: &shared.domain,
                tls_active: true,
                tls_exporter: Some(tls_exporter),
                tls_server_end_point: Some(tls_server_end_point()),
            };
            let username = sasl(&mut io, PEER, &info, shared, &meter).await?;
            serve_authenticated(&mut io, &username, PEER, shared, &meter, shutdown).await
        }
        Start::Session { username } => {
            serve_authenticated(&mut io, username, PEER, shared, &meter, shutdown).await
        }
    }
}

/// A TLS identity for [`ServerShared`] with a certificate for [`DOMAIN`], made once per
/// process; a harness connection never uses it, since it starts either before STARTTLS or
/// inside TLS.
pub(super) fn tls_config() -> Arc<ServerTls> {
    static CONFIG: OnceLock<Arc<ServerTls>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let generated = rcgen::generate_simple_self_signed(vec![DOMAIN.to_string()])
                .expect("a self-signed certificate");
            let key =
                rustls::pki_types::PrivatePkcs8KeyDer::from(generated.key_pair.serialize_der());
            let identity = Identity {
                chain: vec![generated.cert.der().clone()],
                key: key.into(),
                cert_path: "localhost.crt".into(),
                key_path: "localhost.key".into(),
                self_signed: true,
            };
            Arc::new(ServerTls::new(&identity).expect("a valid certificate"))
        })
        .clone()
}

/// The `tls-server-end-point` channel-binding bytes of [`tls_config`]'s certificate: what a
/// harness connection inside TLS has (`Start::Sasl`), computed once per process.
fn tls_server_end_point() -> &'static [u8] {
    static END_POINT: OnceLock<Vec<u8>> = OnceLock::new();
    END_POINT.get_or_init(|| {
        let served = tls_config().current();
        let leaf = served.leaf().expect("a certificate");
        crate::tls::tls_server_end_point(leaf)
            .expect("an ECDSA-SHA256 certificate has a tls-server-end-point binding")
    })
}

/// Adds the [`ACCOUNTS`] to `store`, alice and bob on each other's roster with a mutual
/// subscription.
pub(super) fn add_accounts(store: &Store) {
    for user in ACCOUNTS {
        let (sha1, sha256) = keys(user);
        store
            .create_account(user, sha1, sha256)
            .expect("a new account");
    }
    for (owner, contact) in [("alice", "bob"), ("bob", "alice")] {
        let mut item = RosterItem::new(format!("{contact}@{DOMAIN}"));
        item.subscription = Subscription::Both;
        store
            .upsert_roster_item(owner, &item)
            .expect("a roster item");
    }
}

/// The SCRAM keys of `user`'s password, derived once per process.
fn keys(user: &str) -> (&'static ScramKeys, &'static ScramKeys) {
    static KEYS: OnceLock<Vec<(String, ScramKeys, ScramKeys)>> = OnceLock::new();
    let all = KEYS.get_or_init(|| {
        let derive = |user: &str, hash| {
            let keys = derive_keys(&format!("{user}-secret"), hash, b"harness salt", ITERATIONS)
                .expect("a valid password");
            ScramKeys {
                salt: keys.salt,
                iterations: keys.iterations,
                stored_key: keys.stored_key,
                server_key: keys.server_key,
            }
        };
        ACCOUNTS
            .iter()
            .map(|user| {
                (
                    user.to_string(),
                    derive(user, Hash::Sha1),
                    derive(user, Hash::Sha256),
                )
            })
            .collect()
    });
    let (_, sha1, sha256) = all
        .iter()
        .find(|(name, _, _)| name == user)
        .expect("a known account");
    (sha1, sha256)
}
