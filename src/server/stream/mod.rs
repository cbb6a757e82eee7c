//! One client connection, from TCP accept to close (RFC 6120 §4–§7):
//!
//! ```text
//! header → features(STARTTLS required) → <starttls/> → TLS handshake
//!   → header → features(SASL mechanisms) → SASL exchange (up to 3 attempts)
//!   → header → features(bind, session optional, sm, csi) → bind → session loop
//!                                                        or resume (XEP-0198) ↗
//! ```
//!
//! On the direct TLS port (XEP-0368) the connection starts with the TLS handshake and goes on
//! from the second line: no STARTTLS is offered inside TLS (XEP-0368 §3, rule 5). Everything
//! else is the same code: admission per address, the login deadline (which covers the
//! handshake), the pre-login byte limits, the certificate, the log lines.
//!
//! The XML layer is tokio-xmpp's responder side (`accept_stream`, `send_header`,
//! `send_features`, `accept_reset`); rxml underneath parses restricted XML only, so comments
//! and processing instructions end the stream with `restricted-xml` (and a DOCTYPE, which it
//! does not parse at all, with `not-well-formed`). Byte-level limits
//! (stanza size, depth, rate) are enforced below the parser by [`LimitedReader`]. Everything
//! before binding must finish within `ServerLimits::auth_timeout`.
//!
//! After binding, the session loop forwards the client's stanzas to the hub (after checking
//! their `from`), writes what the hub sends to it, pings the client when it goes quiet, and on
//! shutdown sends `system-shutdown`. With stream management (XEP-0198) it counts and keeps what
//! the client has not acknowledged; a resumable session whose link dies hibernates in a task of
//! its own until a new connection resumes it or its time is over (`session.rs` says how). With
//! client state indication (XEP-0352) it holds back presence updates for an inactive client.
//!
//! | file | phase |
//! |---|---|
//! | `mod.rs` | the connection task: admission, login deadline, STARTTLS or direct TLS → TLS → SASL → session |
//! | `negotiation.rs` | stream headers, features, STARTTLS, reading before login |
//! | `features.rs` | the features on the wire: only those that apply (no empty `<mechanisms/>`) |
//! | `auth.rs` | the SASL exchanges and the delay after a failed login |
//! | `session.rs` | bind or resume, the session loop, idle pings, writing to the client, hibernation |
//! | `sm.rs` | stream management (XEP-0198), sans-IO: counting, acks, what a resumption writes again |
//! | `csi.rs` | client state indication (XEP-0352): the session's element type, held presence |
//! | `errors.rs` | how a connection ends: stream error conditions, `fail`, closing |
//! | `upstream.rs` | the dependencies' errors the server tells apart by their text |
//! | `harness.rs` | a connection over any byte transport, for the tests and the fuzz target |
//!
//! The imports point one way: `mod.rs` uses the phases, `session.rs` and `auth.rs` use
//! `negotiation.rs`, `session.rs` uses `sm.rs` and `csi.rs`, and all of them use `errors.rs` and
//! `upstream.rs`, which use none of them.

mod auth;
mod csi;
mod errors;
mod features;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(any(test, feature = "fuzzing"))]
mod harness;
mod negotiation;
mod session;
mod sm;
#[cfg(test)]
mod tests;
mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::BufReader;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tokio_xmpp::parsers::stream_error::DefinedCondition as StreamCondition;

use self::auth::sasl;
use self::errors::fail_before_header;
use self::negotiation::{skip_whitespace_before_tls, starttls, LOGIN_GRACE};
use self::session::serve_authenticated;
use super::limits::{LimitedReader, Meter};
use super::sasl::ConnectionInfo;
use super::shared::ServerShared;

pub use self::errors::ConnectionEnd;
#[cfg(feature = "fuzzing")]
use self::session::OUTBOX_CAPACITY;

/// Read buffer of a connection. Stanzas larger than this are read in several pieces, so it
/// bounds nothing; it is the memory an idle connection holds for reading.
const READ_BUFFER: usize = 4096;

/// Reads are buffered here; writes are not, because tokio-xmpp's stream collects what it
/// sends in its own buffer and TLS then makes records of it, so a write buffer would only hold
/// a third copy (and 8 KiB per idle connection).
type Plain = BufReader<LimitedReader<TcpStream>>;
type Secure = BufReader<LimitedReader<TlsStream<TcpStream>>>;

/// How a connection's TLS begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// A plain-text stream that STARTTLS upgrades (RFC 6120 §5): the client port, 5222.
    StartTls,
    /// TLS from the first byte, then the stream (XEP-0368): the direct TLS port, 5223.
    DirectTls,
}

/// Serves one accepted TCP connection, which begins as `entry` says, until it ends.
pub async fn serve(
    entry: Entry,
    tcp: TcpStream,
    peer: SocketAddr,
    shared: Arc<ServerShared>,
    shutdown: CancellationToken,
) {
    let outcome = run(entry, tcp, peer, &shared, shutdown).await;
    match outcome {
        Ok(()) | Err(ConnectionEnd::ClientClosed) | Err(ConnectionEnd::Shutdown) => {
            tracing::debug!(%peer, "connection closed")
        }
        Err(end) => tracing::info!(%peer, "connection ended: {end}"),
    }
}

async fn run(
    entry: Entry,
    mut tcp: TcpStream,
    peer: SocketAddr,
    shared: &Arc<ServerShared>,
    shutdown: CancellationToken,
) -> Result<(), ConnectionEnd> {
    let limits = &shared.limits;
    // Refused at once, without waiting for the client's header or doing TLS: cheap.
    let Some(unauthenticated) = shared.admit(peer) else {
        let text = format!(
            "too many connections from {} that have not logged in",
            peer.ip()
        );
        if entry == Entry::DirectTls {
            // A client that starts with TLS cannot read a plain-text stream error.
            let text = format!("{text}; closed before the TLS handshake");
            let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, text);
            return Err(ConnectionEnd::Io(refused));
        }
        return Err(
            fail_before_header(&mut tcp, shared, StreamCondition::PolicyViolation, &text).await,
        );
    };
    let meter = Meter::new(limits.max_preauth_bytes, limits);
    // Reads stop at the deadline with a stream error; the outer timeout, a little later, also
    // covers the header and the TLS handshake, where no stream error can be sent.
    meter.set_login_deadline(Some(tokio::time::Instant::now() + limits.auth_timeout));
    // Each phase's future is boxed, and so freed when the phase ends: inline, the connection's
    // task would hold room for the largest phase (login) for as long as the session lasts.
    let negotiation = Box::pin(negotiate(entry, tcp, peer, shared, meter.clone()));
    let (mut secure, username) = tokio::select! {
        result = tokio::time::timeout(limits.auth_timeout + LOGIN_GRACE, negotiation) => match result {
            Ok(result) => result?,
            Err(_) => return Err(ConnectionEnd::AuthTimeout),
        },
        _ = shutdown.cancelled() => return Err(ConnectionEnd::Shutdown),
    };
    drop(unauthenticated);
    serve_authenticated(&mut secure, &username, peer, shared, &meter, shutdown).await
}

/// Plain stream and STARTTLS (unless the connection starts with TLS), TLS, SASL. Returns the
/// transport right after `<success/>` and the authenticated (lowercase) username.
async fn negotiate(
    entry: Entry,
    tcp: TcpStream,
    peer: SocketAddr,
    shared: &Arc<ServerShared>,
    meter: Arc<Meter>,
) -> Result<(Secure, String), ConnectionEnd> {
    let limits = &shared.limits;
    let tcp = match entry {
        Entry::StartTls => {
            let mut plain: Plain = BufReader::with_capacity(
                READ_BUFFER,
                LimitedReader::new(
                    tcp,
                    meter.clone(),
                    limits.bytes_per_second,
                    limits.burst_bytes,
                ),
            );
            starttls(&mut plain, shared, &meter).await?;
            let mut tcp = plain.into_inner().into_inner();
            skip_whitespace_before_tls(&mut tcp).await?;
            tcp
        }
        Entry::DirectTls => tcp,
    };
    // The certificate this connection presents, taken once: a reload from now on changes the
    // next connections' certificate, not this one's.
    let served = shared.tls.current();
    let config = match entry {
        Entry::StartTls => served.starttls.clone(),
        Entry::DirectTls => served.direct_tls.clone(),
    };
    let tls = tokio_rustls::TlsAcceptor::from(config)
        .accept(tcp)
        .await
        .map_err(|error| handshake_failed(entry, error))?;
    let exporter = crate::tls::tls_exporter(tls.get_ref().1);
    // `served.leaf()` is the certificate this connection presented: what
    // `tls-server-end-point` channel binding hashes (RFC 5929 §4.1).
    let end_point = served
        .leaf()
        .and_then(|certificate| crate::tls::tls_server_end_point(certificate));

    let mut secure: Secure = BufReader::with_capacity(
        READ_BUFFER,
        LimitedReader::new(
            tls,
            meter.clone(),
            limits.bytes_per_second,
            limits.burst_bytes,
        ),
    );
    let info = ConnectionInfo {
        domain: &shared.domain,
        tls_active: true,
        tls_exporter: exporter.as_deref(),
        tls_server_end_point: end_point.as_deref(),
    };
    let username = sasl(&mut secure, peer, &info, shared, &meter).await?;
    Ok((secure, username))
}

/// A failed TLS handshake, saying where: on the direct TLS port, the usual cause is a client
/// that speaks plain XMPP (or STARTTLS) there.
fn handshake_failed(entry: Entry, error: std::io::Error) -> ConnectionEnd {
    let text = match entry {
        Entry::StartTls => format!("TLS handshake after STARTTLS failed: {error}"),
        Entry::DirectTls => format!(
            "TLS handshake on the direct TLS port failed (a client that does not start with \
             TLS?): {error}"
        ),
    };
    ConnectionEnd::Io(std::io::Error::new(error.kind(), text))
}
