//! One client connection, from TCP accept to close (RFC 6120 §4–§7):
//!
//! ```text
//! header → features(STARTTLS required) → <starttls/> → TLS handshake
//!   → header → features(SASL mechanisms) → SASL exchange (up to 3 attempts)
//!   → header → features(bind, session optional) → bind → session loop
//! ```
//!
//! The XML layer is tokio-xmpp's responder side (`accept_stream`, `send_header`,
//! `send_features`, `accept_reset`); rxml underneath parses restricted XML only, so DOCTYPEs,
//! comments and processing instructions end the stream with `restricted-xml`. Byte-level limits
//! (stanza size, depth, rate) are enforced below the parser by [`LimitedReader`]. Everything
//! before binding must finish within `ServerLimits::auth_timeout`.
//!
//! After binding, the session loop forwards the client's stanzas to the hub (after checking
//! their `from`), writes what the hub sends to it, pings the client when it goes quiet, and on
//! shutdown sends `system-shutdown`.

use std::borrow::Cow;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use thiserror::Error;
use tokio::io::BufReader;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::server::TlsStream;
use tokio_xmpp::jid::{FullJid, Jid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::bind::{BindFeature, BindQuery, BindResponse};
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::{Id as MessageId, Message, MessageType};
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::ping::Ping;
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::parsers::sasl as wire_sasl;
use tokio_xmpp::parsers::stanza_error::DefinedCondition as StanzaCondition;
use tokio_xmpp::parsers::stanza_error::{ErrorType, StanzaError};
use tokio_xmpp::parsers::starttls::{self, StartTls};
use tokio_xmpp::parsers::stream_error::{DefinedCondition as StreamCondition, StreamError};
use tokio_xmpp::parsers::stream_features::StreamFeatures;
use tokio_xmpp::xmlstream::{
    accept_stream, AcceptedStream, FallibleStreamElement, RawStanzaHeader, ReadError,
    StreamElementError, StreamHeader, Timeouts, XmlStream, XmppStreamElement,
};
use tokio_xmpp::Stanza;
use xso::FromXml;

use super::hub::{bounce, CloseReason};
use super::limits::{LimitedReader, Meter};
use super::sasl::{ConnectionInfo, Mechanism, ServerExchange, Step};
use super::shared::{HubCommand, Outbound, ServerShared};
use tokio_util::sync::CancellationToken;

/// Most failed password or proof checks on one connection before it is closed.
const MAX_AUTH_ATTEMPTS: u32 = 3;
/// Most SASL exchanges of any outcome on one connection (bounds the cheap refusals too).
const MAX_SASL_EXCHANGES: u32 = 10;
/// Outgoing queue of one session; a client that lets it fill up is too slow and is closed.
pub const OUTBOX_CAPACITY: usize = 256;

/// A client that takes nothing from its connection for this long (or its idle limit, if
/// shorter) while stanzas wait for it is disconnected.
pub const MAX_WRITE_STALL: Duration = Duration::from_secs(30);

/// Read buffer of a connection. Stanzas larger than this are read in several pieces, so it
/// bounds nothing; it is the memory an idle connection holds for reading.
const READ_BUFFER: usize = 4096;

/// Time a client gets beyond the login deadline to receive its `connection-timeout` error.
const LOGIN_GRACE: Duration = Duration::from_secs(2);

/// Reads are buffered here; writes are not, because tokio-xmpp's stream collects what it
/// sends in its own buffer and TLS then makes records of it, so a write buffer would only hold
/// a third copy (and 8 KiB per idle connection).
type Plain = BufReader<LimitedReader<TcpStream>>;
type Secure = BufReader<LimitedReader<TlsStream<TcpStream>>>;
type Xml<Io> = XmlStream<Io, XmppStreamElement>;
/// After authentication: stanzas that fail to parse are answered, not fatal.
type SessionStream<Io> = XmlStream<Io, FallibleStreamElement>;

/// How a connection ended, for the log.
#[derive(Debug, Error)]
pub enum ConnectionEnd {
    /// The network or TLS failed.
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    /// We sent a stream error and closed.
    #[error("closed with stream error {0}")]
    StreamError(String),
    /// The client closed the stream.
    #[error("closed by the client")]
    ClientClosed,
    /// Negotiation took too long.
    #[error("did not authenticate within the time limit")]
    AuthTimeout,
    /// The server is shutting down.
    #[error("server shutdown")]
    Shutdown,
}

/// Serves one accepted TCP connection until it ends.
pub async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: Arc<ServerShared>,
    shutdown: CancellationToken,
) {
    let outcome = run(tcp, peer, &shared, shutdown).await;
    match outcome {
        Ok(()) | Err(ConnectionEnd::ClientClosed) | Err(ConnectionEnd::Shutdown) => {
            tracing::debug!(%peer, "connection closed")
        }
        Err(end) => tracing::info!(%peer, "connection ended: {end}"),
    }
}

async fn run(
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
    let negotiation = Box::pin(negotiate(tcp, peer, shared, meter.clone()));
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

/// After `<success/>`: the restarted stream, bind within the time limit, then the session until
/// it ends.
async fn serve_authenticated<Io>(
    io: &mut Io,
    username: &str,
    peer: SocketAddr,
    shared: &Arc<ServerShared>,
    meter: &Meter,
    shutdown: CancellationToken,
) -> Result<(), ConnectionEnd>
where
    Io: tokio::io::AsyncBufRead + tokio::io::AsyncWrite + Unpin,
{
    let limits = &shared.limits;
    meter.set_limit(limits.max_stanza_bytes);
    if limits.unthrottled.iter().any(|name| name == username) {
        meter.unthrottle();
    }
    meter.set_login_deadline(Some(tokio::time::Instant::now() + limits.auth_timeout));
    // The restarted stream's header; reading it stops at the login deadline.
    let accepted = tokio::select! {
        result = Box::pin(accept_header(&mut *io, shared, meter)) => result?,
        _ = shutdown.cancelled() => return Err(ConnectionEnd::Shutdown),
    };
    let accepted = match accepted {
        Ok(accepted) => accepted,
        Err(failure) => return Err(refuse_header(io, shared, failure).await),
    };
    let session = Box::pin(bind(accepted, username, shared, meter));
    let (stream, jid, id, outbox) = tokio::select! {
        result = tokio::time::timeout(limits.auth_timeout + LOGIN_GRACE, session) => match result {
            Ok(result) => result?,
            Err(_) => return Err(ConnectionEnd::AuthTimeout),
        },
        _ = shutdown.cancelled() => return Err(ConnectionEnd::Shutdown),
    };
    meter.set_login_deadline(None);
    tracing::info!(%peer, %jid, "session started");
    let result = Box::pin(session_loop(
        stream, &jid, id, outbox, shared, meter, shutdown,
    ))
    .await;
    let _ = shared
        .hub
        .send(HubCommand::Unbind {
            jid: jid.clone(),
            id,
        })
        .await;
    tracing::info!(%peer, %jid, "session ended");
    result
}

/// Longest a write to a client may stall: the idle limit, but never more than
/// [`MAX_WRITE_STALL`].
fn write_stall_limit(shared: &ServerShared) -> Duration {
    shared.limits.idle_ping_after.min(MAX_WRITE_STALL)
}

fn timeouts(shared: &ServerShared) -> Timeouts {
    Timeouts {
        read_timeout: shared.limits.idle_ping_after,
        response_timeout: shared.limits.idle_ping_after,
    }
}

async fn respond<Io, T: FromXml>(
    mut accepted: AcceptedStream<Io>,
    shared: &ServerShared,
    features: &StreamFeatures,
) -> Result<XmlStream<Io, T>, ConnectionEnd>
where
    Io: tokio::io::AsyncBufRead + tokio::io::AsyncWrite + Unpin,
{
    let header = accepted.take_header();
    let stream_id = format!("{:016x}", rand::random::<u64>());
    let wrong_host = header.to.as_deref() != Some(shared.domain.as_str());
    let pending = accepted
        .send_header(StreamHeader {
            from: Some(Cow::Borrowed(shared.domain.as_str())),
            to: None,
            id: Some(Cow::Owned(stream_id)),
        })
        .await?;
    if wrong_host {
        let error = StreamError::new(
            StreamCondition::HostUnknown,
            "en",
            format!("this server serves {}", shared.domain),
        );
        pending.send_error(&error).await?;
        return Err(ConnectionEnd::StreamError("host-unknown".into()));
    }
    Ok(pending.send_features(features).await?)
}

/// Sends a stream error and closes the stream.
async fn fail<Io, T: FromXml>(
    stream: &mut XmlStream<Io, T>,
    condition: StreamCondition,
    text: &str,
) -> ConnectionEnd
where
    Io: tokio::io::AsyncBufRead + tokio::io::AsyncWrite + Unpin,
{
    let name = condition_name(&condition);
    let error = StreamError::new(condition, "en", text);
    let send = async {
        stream.send(&error).await?;
        <XmlStream<Io, T> as SinkExt<&StreamError>>::close(stream).await
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), send).await;
    ConnectionEnd::StreamError(name)
}

fn condition_name(condition: &StreamCondition) -> String {
    let element: Element = StreamError::new(condition.clone(), "en", "").into();
    element
        .children()
        .next()
        .map(|c| c.name().to_string())
        .unwrap_or_default()
}

/// Maps a read failure to the stream error RFC 6120 §4.9.3 prescribes, sends it, and closes.
async fn read_failed<Io, T: FromXml>(
    stream: &mut XmlStream<Io, T>,
    error: ReadError,
    meter: &Meter,
) -> ConnectionEnd
where
    Io: tokio::io::AsyncBufRead + tokio::io::AsyncWrite + Unpin,
{
    match error {
        ReadError::StreamFooterReceived => {
            let close = <XmlStream<Io, T> as SinkExt<&StreamError>>::close(stream);
            let _ = tokio::time::timeout(Duration::from_secs(2), close).await;
            ConnectionEnd::ClientClosed
        }
        ReadError::HardError(_) if meter.tripped() => {
            let text = meter
                .exceeded()
                .map(|limit| limit.to_string())
                .unwrap_or_else(|| "limit exceeded".into());
            fail(stream, StreamCondition::PolicyViolation, &text).await
        }
        ReadError::HardError(e) if e.kind() == io::ErrorKind::TimedOut => {
            fail(
                stream,
                StreamCondition::ConnectionTimeout,
                "idle for too long",
            )
            .await
        }
        // A well-formed element that is not a stanza or a known nonza.
        ReadError::HardError(e)
            if e.get_ref()
                .and_then(|inner| inner.downcast_ref::<xso::error::FromEventsError>())
                .is_some_and(|inner| {
                    matches!(inner, xso::error::FromEventsError::Mismatch { .. })
                }) =>
        {
            fail(
                stream,
                StreamCondition::UnsupportedStanzaType,
                "not a stanza this server knows",
            )
            .await
        }
        // rxml refuses names, attribute values and references longer than its token limit
        // (8 KiB): a size limit, not a forbidden XML feature.
        ReadError::HardError(e)
            if e.kind() == io::ErrorKind::InvalidData
                && e.to_string().contains("long name or reference") =>
        {
            fail(
                stream,
                StreamCondition::PolicyViolation,
                "a name, attribute value or reference is longer than 8192 bytes",
            )
            .await
        }
        ReadError::HardError(e) if e.kind() == io::ErrorKind::InvalidData => {
            let text = e.to_string();
            let condition = if text.contains("restricted xml") {
                StreamCondition::RestrictedXml
            } else {
                StreamCondition::NotWellFormed
            };
            fail(stream, condition, &text).await
        }
        ReadError::HardError(e) => ConnectionEnd::Io(e),
        ReadError::ParseError(e) => fail(stream, StreamCondition::InvalidXml, &e.to_string()).await,
        ReadError::SoftTimeout => {
            fail(
                stream,
                StreamCondition::ConnectionTimeout,
                "idle for too long",
            )
            .await
        }
    }
}

/// What a client is told when it has not logged in and bound a resource in time.
const LOGIN_TIME_OVER: &str = "the time to log in and bind a resource is over";

/// `read`'s outcome, or `None` when the login deadline (if one is set) passes first.
async fn before_login_deadline<F: std::future::Future>(
    read: F,
    meter: &Meter,
) -> Option<F::Output> {
    match meter.login_deadline() {
        Some(deadline) => tokio::time::timeout_at(deadline, read).await.ok(),
        None => Some(read.await),
    }
}

/// Ends a negotiation that went past the login deadline.
async fn login_timed_out<Io, T: FromXml>(stream: &mut XmlStream<Io, T>) -> ConnectionEnd
where
    Io: tokio::io::AsyncBufRead + tokio::io::AsyncWrite + Unpin,
{
    fail(stream, StreamCondition::ConnectionTimeout, LOGIN_TIME_OVER).await;
    ConnectionEnd::AuthTimeout
}

/// The next element, skipping soft timeouts, until the login deadline.
async fn next<Io>(stream: &mut Xml<Io>, meter: &Meter) -> Result<XmppStreamElement, ConnectionEnd>
where
    Io: tokio::io::AsyncBufRead + tokio::io::AsyncWrite + Unpin,
{
    match next_parsed(stream, meter).await? {
        Ok(element) => Ok(element),
        Err(error) => Err(read_failed(stream, ReadError::ParseError(error), meter).await),
    }
}

/// Like [`next`], but a complete element that does not parse is handed back (the stream can go
/// on after it) instead of ending the stream.
async fn next_parsed<Io>(
    stream: &mut Xml<Io>,
    meter: &Meter,
) -> Result<Result<XmppStreamElement, xso::error::Error>, ConnectionEnd>
where
    Io: tokio::io::AsyncBufRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let Some(item) = before_login_deadline(stream.next(), meter).await else {
            return Err(login_timed_out(stream).await);
        };
        match item {
            Some(Ok(element)) => {
                meter.element_done();
                return Ok(Ok(element));
            }
            Some(Err(ReadError::SoftTimeout)) => continue,
            Some(Err(ReadError::ParseError(error))) => {
                meter.element_done();
                return Ok(Err(error));
            }
            Some(Err(error)) => return Err(read_failed(stream, error, meter).await),
            None => return Err(ConnectionEnd::ClientClosed),
        }
    }
}

/// Plain stream, STARTTLS, TLS, SASL. Returns the transport right after `<success/>` and the
/// authenticated (lowercase) username.
async fn negotiate(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: &Arc<ServerShared>,
    meter: Arc<Meter>,
) -> Result<(Secure, String), ConnectionEnd> {
    let limits = &shared.limits;
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
    let tcp = plain.into_inner().into_inner();
    let tls = tokio_rustls::TlsAcceptor::from(shared.tls.clone())
        .accept(tcp)
        .await?;
    let exporter = crate::tls::tls_exporter(tls.get_ref().1);

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
    };
    let username = sasl(&mut secure, peer, &info, shared, &meter).await?;
    Ok((secure, username))
}

/// The plain-text stream: header, features (STARTTLS required), `<starttls/>` and our
/// `<proceed/>`; then the transport is ready for the TLS handshake.
///
/// The stream borrows `io`, so that a failure while the client's header is read (a DOCTYPE in
/// front of it, bytes that are not XML, a header that never ends) can still be answered as RFC
/// 6120 §4.9.1.2 asks: our header, the stream error, the end of the stream.
async fn starttls<Io>(
    io: &mut Io,
    shared: &ServerShared,
    meter: &Meter,
) -> Result<(), ConnectionEnd>
where
    Io: tokio::io::AsyncBufRead + tokio::io::AsyncWrite + Unpin,
{
    let features = StreamFeatures {
        starttls: Some(StartTls { required: true }),
        ..Default::default()
    };
    let accepted = match accept_header(&mut *io, shared, meter).await? {
        Ok(accepted) => accepted,
        Err(failure) => return Err(refuse_header(io, shared, failure).await),
    };
    let mut stream: Xml<&mut Io> = respond(accepted, shared, &features).await?;
    match next(&mut stream, meter).await? {
        XmppStreamElement::Starttls(starttls::Nonza::Request(_)) => {}
        _ => {
            return Err(fail(
                &mut stream,
                StreamCondition::PolicyViolation,
                "STARTTLS is required before anything else",
            )
            .await)
        }
    }
    stream
        .send(&XmppStreamElement::Starttls(starttls::Nonza::Proceed(
            starttls::Proceed,
        )))
        .await?;
    Ok(())
}

/// Why a client's stream header could not be read: what to answer, then the connection ends.
struct HeaderFailure(StreamCondition, String);

/// Reads the client's stream header from `io`, which the stream only borrows, so that when the
/// header cannot be read (a DOCTYPE in front of it, bytes that are not XML, a stanza where a
/// restarted stream should begin, a header that never ends) the caller can still answer as RFC
/// 6120 §4.9.1.2 asks, with [`refuse_header`]. Errors of the transport itself are returned as
/// they are.
async fn accept_header<'io, Io>(
    io: &'io mut Io,
    shared: &ServerShared,
    meter: &Meter,
) -> Result<Result<AcceptedStream<&'io mut Io>, HeaderFailure>, ConnectionEnd>
where
    Io: tokio::io::AsyncBufRead + tokio::io::AsyncWrite + Unpin,
{
    let header = accept_stream(io, ns::JABBER_CLIENT, timeouts(shared));
    let error = match before_login_deadline(header, meter).await {
        Some(Ok(accepted)) => return Ok(Ok(accepted)),
        Some(Err(error)) => error,
        None => {
            let failure = HeaderFailure(StreamCondition::ConnectionTimeout, LOGIN_TIME_OVER.into());
            return Ok(Err(failure));
        }
    };
    let (condition, text) = match error.kind() {
        _ if meter.tripped() => (
            StreamCondition::PolicyViolation,
            meter
                .exceeded()
                .map_or_else(|| "limit exceeded".into(), |limit| limit.to_string()),
        ),
        io::ErrorKind::InvalidData => header_condition(error.to_string()),
        // tokio-xmpp's kind for text or an end tag where the header should be; a real end of
        // file has the same kind, and then nobody is left to answer.
        io::ErrorKind::UnexpectedEof if error.to_string().contains("before stream header") => {
            (StreamCondition::NotWellFormed, error.to_string())
        }
        _ => return Err(ConnectionEnd::Io(error)),
    };
    Ok(Err(HeaderFailure(condition, text)))
}

/// The stream error for what tokio-xmpp says of a header it could not read, with the text to
/// send. Its errors are plain `io::Error`s, so their text is all there is to go by.
fn header_condition(error: String) -> (StreamCondition, String) {
    if error.contains("restricted xml") {
        // A DOCTYPE, a comment or a processing instruction.
        (StreamCondition::RestrictedXml, error)
    } else if error.contains("unknown stream header") {
        // Another root element, such as a stanza where a (restarted) stream should begin
        // (RFC 6120 §4.8.1).
        let text = format!("expected a stream header in the namespace {}", ns::STREAM);
        (StreamCondition::InvalidNamespace, text)
    } else if error.contains("stream version") || error.contains("`version`") {
        let text = "this server speaks version 1.0 of XMPP streams".to_string();
        (StreamCondition::UnsupportedVersion, text)
    } else {
        (StreamCondition::NotWellFormed, error)
    }
}

/// Answers a [`HeaderFailure`] on the transport whose header could not be read.
async fn refuse_header<Io>(
    io: &mut Io,
    shared: &ServerShared,
    failure: HeaderFailure,
) -> ConnectionEnd
where
    Io: tokio::io::AsyncWrite + Unpin,
{
    let HeaderFailure(condition, text) = failure;
    let timed_out = condition == StreamCondition::ConnectionTimeout;
    let end = fail_before_header(io, shared, condition, &text).await;
    if timed_out {
        ConnectionEnd::AuthTimeout
    } else {
        end
    }
}

/// Answers a client whose stream header could not be read: our own header, the error, and the
/// end of the stream, written straight to the transport.
async fn fail_before_header<Io>(
    io: &mut Io,
    shared: &ServerShared,
    condition: StreamCondition,
    text: &str,
) -> ConnectionEnd
where
    Io: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    let name = condition_name(&condition);
    let error: Element = StreamError::new(condition, "en", text).into();
    let reply = format!(
        "<?xml version='1.0'?><stream:stream xmlns='{}' xmlns:stream='{}' from='{}' id='{:016x}' \
         version='1.0'><stream:error>{}</stream:error></stream:stream>",
        ns::JABBER_CLIENT,
        ns::STREAM,
        shared.domain,
        rand::random::<u64>(),
        error.children().map(String::from).collect::<String>(),
    );
    let write = async {
        io.write_all(reply.as_bytes()).await?;
        io.flush().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), write).await;
    ConnectionEnd::StreamError(name)
}

/// The stream inside TLS: header, SASL mechanisms, and exchanges until one succeeds or too many
/// failed. Returns the stream right after `<success/>` and the authenticated (lowercase)
/// username.
async fn sasl<Io>(
    io: &mut Io,
    peer: SocketAddr,
    info: &ConnectionInfo<'_>,
    shared: &ServerShared,
    meter: &Meter,
) -> Result<String, ConnectionEnd>
where
    Io: tokio::io::AsyncBufRead + tokio::io::AsyncWrite + Unpin,
{
    let features = StreamFeatures {
        sasl_mechanisms: info
            .offered_mechanisms()
            .iter()
            .map(|m| m.name().to_string())
            .collect(),
        ..Default::default()
    };
    let accepted = match accept_header(&mut *io, shared, meter).await? {
        Ok(accepted) => accepted,
        Err(failure) => return Err(refuse_header(io, shared, failure).await),
    };
    let mut stream: Xml<&mut Io> = respond(accepted, shared, &features).await?;
    let mut failures = 0;
    let mut attempts = 0;
    loop {
        match authenticate(&mut stream, info, shared, meter).await? {
            Ok((username, additional_data, mechanism)) => {
                shared.login_succeeded(peer);
                let success =
                    XmppStreamElement::Sasl(wire_sasl::Nonza::Success(wire_sasl::Success {
                        data: additional_data,
                    }));
                // The client restarts the stream now; its new header is read from `io` by
                // `serve_authenticated`, so that a client that sends something else can still
                // be answered with a stream error.
                meter.stream_restarted();
                stream.send(&success).await?;
                tracing::info!(%peer, user = username, %mechanism, "authenticated");
                return Ok(username);
            }
            Err((condition, guessed)) => {
                attempts += 1;
                tracing::info!(%peer, guessed, "authentication failed ({condition:?})");
                if guessed {
                    // Slow down password guessing: the delay grows with failures from this
                    // address. Refusals before any password or proof (a channel-binding type
                    // we lack, a `y` downgrade, an unknown mechanism) reveal nothing and are
                    // how clients such as slixmpp walk down to a mechanism both sides share.
                    failures += 1;
                    tokio::time::sleep(shared.login_failed(peer)).await;
                }
                stream
                    .send(&XmppStreamElement::Sasl(wire_sasl::Nonza::Failure(
                        wire_sasl::Failure {
                            defined_condition: condition,
                            texts: Default::default(),
                        },
                    )))
                    .await?;
                if failures >= MAX_AUTH_ATTEMPTS || attempts >= MAX_SASL_EXCHANGES {
                    return Err(fail(
                        &mut stream,
                        StreamCondition::PolicyViolation,
                        "too many failed authentication attempts",
                    )
                    .await);
                }
            }
        }
    }
}

/// One SASL exchange. `Ok(Ok(..))` on success, `Ok(Err((condition, password_tried)))` on a
/// failure the client may
/// retry after, `Err` when the connection must end.
async fn authenticate<Io>(
    stream: &mut Xml<Io>,
    info: &ConnectionInfo<'_>,
    shared: &ServerShared,
    meter: &Meter,
) -> Result<Result<(String, Vec<u8>, Mechanism), (wire_sasl::DefinedCondition, bool)>, ConnectionEnd>
where
    Io: tokio::io::AsyncBufRead + tokio::io::AsyncWrite + Unpin,
{
    let element = match next_parsed(stream, meter).await? {
        Ok(element) => element,
        // xmpp-parsers knows only the mechanisms it has a name for: `<auth>` with any other
        // (DIGEST-MD5, say) fails to parse. RFC 6120 §6.4.1 makes that `invalid-mechanism`,
        // after which the client may try another.
        Err(error) if error.to_string().contains("'mechanism'") => {
            return Ok(Err((wire_sasl::DefinedCondition::InvalidMechanism, false)))
        }
        Err(error) => {
            return Err(read_failed(stream, ReadError::ParseError(error), meter).await);
        }
    };
    let auth = match element {
        XmppStreamElement::Sasl(wire_sasl::Nonza::Auth(auth)) => auth,
        XmppStreamElement::Sasl(wire_sasl::Nonza::Abort(_)) => {
            return Ok(Err((wire_sasl::DefinedCondition::Aborted, false)))
        }
        _ => return Err(fail(stream, StreamCondition::NotAuthorized, "authenticate first").await),
    };
    let Some(mechanism) = Mechanism::from_name(&auth.mechanism.to_string())
        .filter(|m| info.offered_mechanisms().contains(m))
    else {
        return Ok(Err((wire_sasl::DefinedCondition::InvalidMechanism, false)));
    };
    let store = shared.credentials();
    let (mut exchange, mut step) = ServerExchange::start(mechanism, &auth.data, info, &store);
    loop {
        match step {
            Step::Success {
                username,
                additional_data,
            } => {
                return Ok(Ok((
                    username.to_ascii_lowercase(),
                    additional_data,
                    mechanism,
                )))
            }
            Step::Failure(failure) => {
                if let Some(detail) = exchange.failure_detail() {
                    tracing::debug!("SASL failure detail: {detail}");
                }
                return Ok(Err((sasl_condition(failure), exchange.password_tried())));
            }
            Step::Challenge(data) => {
                stream
                    .send(&XmppStreamElement::Sasl(wire_sasl::Nonza::Challenge(
                        wire_sasl::Challenge { data },
                    )))
                    .await?;
                step = match next(stream, meter).await? {
                    XmppStreamElement::Sasl(wire_sasl::Nonza::Response(r)) => {
                        exchange.step(&r.data, &store)
                    }
                    XmppStreamElement::Sasl(wire_sasl::Nonza::Abort(_)) => {
                        return Ok(Err((wire_sasl::DefinedCondition::Aborted, true)))
                    }
                    _ => return Ok(Err((wire_sasl::DefinedCondition::MalformedRequest, true))),
                };
            }
        }
    }
}

fn sasl_condition(failure: super::sasl::Failure) -> wire_sasl::DefinedCondition {
    use super::sasl::Failure as F;
    use wire_sasl::DefinedCondition as C;
    match failure {
        F::Aborted => C::Aborted,
        F::AccountDisabled => C::AccountDisabled,
        F::CredentialsExpired => C::CredentialsExpired,
        F::EncryptionRequired => C::EncryptionRequired,
        F::IncorrectEncoding => C::IncorrectEncoding,
        F::InvalidAuthzid => C::InvalidAuthzid,
        F::InvalidMechanism => C::InvalidMechanism,
        F::MalformedRequest => C::MalformedRequest,
        F::MechanismTooWeak => C::MechanismTooWeak,
        F::NotAuthorized => C::NotAuthorized,
        F::TemporaryAuthFailure => C::TemporaryAuthFailure,
    }
}

/// After SASL: the restarted stream, bind (RFC 6120 §7), and the legacy session IQ.
async fn bind<Io>(
    accepted: AcceptedStream<Io>,
    username: &str,
    shared: &Arc<ServerShared>,
    meter: &Meter,
) -> Result<(SessionStream<Io>, FullJid, u64, mpsc::Receiver<Outbound>), ConnectionEnd>
where
    Io: tokio::io::AsyncBufRead + tokio::io::AsyncWrite + Unpin,
{
    let mut features = StreamFeatures {
        bind: Some(BindFeature { required: true }),
        ..Default::default()
    };
    // RFC 3921 session establishment, marked optional: older clients still send it.
    features.others.push(
        Element::builder("session", "urn:ietf:params:xml:ns:xmpp-session")
            .append(Element::builder(
                "optional",
                "urn:ietf:params:xml:ns:xmpp-session",
            ))
            .build(),
    );
    let mut stream: SessionStream<Io> = respond(accepted, shared, &features).await?;
    loop {
        let Some(item) = before_login_deadline(stream.next(), meter).await else {
            return Err(login_timed_out(&mut stream).await);
        };
        let element = match item {
            Some(Ok(FallibleStreamElement::Ok(element))) => {
                meter.element_done();
                element
            }
            Some(Ok(FallibleStreamElement::Err(_))) => {
                return Err(fail(
                    &mut stream,
                    StreamCondition::InvalidXml,
                    "bind a resource first",
                )
                .await)
            }
            Some(Err(ReadError::SoftTimeout)) => continue,
            Some(Err(error)) => return Err(read_failed(&mut stream, error, meter).await),
            None => return Err(ConnectionEnd::ClientClosed),
        };
        let XmppStreamElement::Stanza(Stanza::Iq(iq)) = element else {
            return Err(fail(
                &mut stream,
                StreamCondition::NotAuthorized,
                "bind a resource first",
            )
            .await);
        };
        let Iq::Set { id, payload, .. } = &iq else {
            send_error(&mut stream, &iq, StanzaCondition::NotAllowed).await?;
            continue;
        };
        let Ok(query) = BindQuery::try_from(payload.clone()) else {
            send_error(&mut stream, &iq, StanzaCondition::NotAllowed).await?;
            continue;
        };
        let session_id = rand::random::<u64>();
        let (outbox, inbox) = mpsc::channel(OUTBOX_CAPACITY);
        let (reply, bound) = oneshot::channel();
        shared
            .hub
            .send(HubCommand::Bind {
                username: username.to_string(),
                resource: query.resource.clone(),
                id: session_id,
                outbox,
                reply,
            })
            .await
            .map_err(|_| ConnectionEnd::Shutdown)?;
        match bound.await {
            Ok(Some(jid)) => {
                let result = Iq::Result {
                    from: None,
                    to: Some(jid.clone().into()),
                    id: id.clone(),
                    payload: Some(BindResponse { jid: jid.clone() }.into()),
                };
                stream
                    .send(&XmppStreamElement::Stanza(result.into()))
                    .await?;
                return Ok((stream, jid, session_id, inbox));
            }
            Ok(None) => send_error(&mut stream, &iq, StanzaCondition::BadRequest).await?,
            Err(_) => return Err(ConnectionEnd::Shutdown),
        }
    }
}

async fn send_error<Io>(
    stream: &mut SessionStream<Io>,
    iq: &Iq,
    condition: StanzaCondition,
) -> Result<(), ConnectionEnd>
where
    Io: tokio::io::AsyncBufRead + tokio::io::AsyncWrite + Unpin,
{
    if let Some(error) = bounce(&Stanza::Iq(iq.clone()), condition) {
        stream.send(&XmppStreamElement::Stanza(error)).await?;
    }
    Ok(())
}

/// The error reply to a stanza that did not parse, built from the attributes that did: a bad
/// `to` gets `jid-malformed`, anything else `bad-request`. `None` when RFC 6120 gives no way to
/// answer (an error stanza, an IQ result, an IQ without id): the stream ends with
/// `invalid-xml` instead.
fn invalid_stanza_reply(kind: &str, header: &RawStanzaHeader, jid: &FullJid) -> Option<Stanza> {
    let condition = match header.to.as_deref().map(Jid::new) {
        Some(Err(_)) => StanzaCondition::JidMalformed,
        _ => StanzaCondition::BadRequest,
    };
    let from = header.to.as_deref().and_then(|to| Jid::new(to).ok());
    let type_ = header.type_.as_deref();
    let error = || {
        let error = StanzaError::new(ErrorType::Modify, condition.clone(), "en", "");
        StanzaError {
            texts: Default::default(),
            ..error
        }
    };
    match kind {
        "iq" => {
            let id = header.id.clone().filter(|id| !id.is_empty())?;
            if !matches!(type_, Some("get") | Some("set")) {
                return None;
            }
            Some(Stanza::Iq(Iq::Error {
                from,
                to: Some(jid.clone().into()),
                id,
                error: error(),
                payload: None,
            }))
        }
        "message" => {
            if type_ == Some("error") {
                return None;
            }
            let mut reply = Message::new_with_type(MessageType::Error, Some(jid.clone().into()));
            reply.from = from;
            reply.id = header.id.clone().map(MessageId);
            Some(reply.with_payload(error()).into())
        }
        "presence" => {
            if type_ == Some("error") {
                return None;
            }
            let mut reply = Presence::new(PresenceType::Error);
            reply.from = from;
            reply.to = Some(jid.clone().into());
            reply.id = header.id.clone();
            reply.payloads.push(Element::from(error()));
            Some(reply.into())
        }
        _ => None,
    }
}

/// Whether a client-supplied `from` is acceptable: absent, or the session's full or bare JID.
fn from_is_own(stanza: &Stanza, jid: &FullJid) -> bool {
    let from = match stanza {
        Stanza::Message(m) => m.from.as_ref(),
        Stanza::Presence(p) => p.from.as_ref(),
        Stanza::Iq(iq) => iq.from(),
    };
    match from {
        None => true,
        Some(from) => {
            from.to_bare() == jid.to_bare() && from.resource().is_none_or(|r| r == jid.resource())
        }
    }
}

/// Writes one stanza to the client. A client that stops reading would hold its whole queue (and
/// the hub's deliveries) forever: a write that cannot finish in time ends the session.
async fn write<Io>(
    stream: &mut SessionStream<Io>,
    stanza: Stanza,
    jid: &FullJid,
    shared: &ServerShared,
) -> Result<(), ConnectionEnd>
where
    Io: tokio::io::AsyncBufRead + tokio::io::AsyncWrite + Unpin,
{
    let element = XmppStreamElement::Stanza(stanza);
    match tokio::time::timeout(write_stall_limit(shared), stream.send(&element)).await {
        Ok(result) => Ok(result?),
        Err(_) => {
            tracing::info!(%jid, "client stopped reading; closing the session");
            Err(fail(
                stream,
                StreamCondition::PolicyViolation,
                "not reading fast enough",
            )
            .await)
        }
    }
}

async fn session_loop<Io>(
    mut stream: SessionStream<Io>,
    jid: &FullJid,
    id: u64,
    mut inbox: mpsc::Receiver<Outbound>,
    shared: &ServerShared,
    meter: &Meter,
    shutdown: CancellationToken,
) -> Result<(), ConnectionEnd>
where
    Io: tokio::io::AsyncBufRead + tokio::io::AsyncWrite + Unpin,
{
    let mut pinged = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                fail(&mut stream, StreamCondition::SystemShutdown, "the server is shutting down").await;
                return Err(ConnectionEnd::Shutdown);
            }
            outbound = inbox.recv() => match outbound {
                Some(Outbound::Stanza(stanza)) => write(&mut stream, *stanza, jid, shared).await?,
                Some(Outbound::Batch(stanzas)) => {
                    for stanza in stanzas {
                        write(&mut stream, stanza, jid, shared).await?;
                    }
                }
                Some(Outbound::Close(CloseReason::Conflict)) => {
                    return Err(fail(&mut stream, StreamCondition::Conflict, "replaced by a new session").await);
                }
                Some(Outbound::Close(CloseReason::AccountDeleted)) => {
                    return Err(fail(&mut stream, StreamCondition::NotAuthorized, "account deleted").await);
                }
                // The hub dropped this session's queue because it was full.
                None => {
                    return Err(fail(&mut stream, StreamCondition::PolicyViolation, "not reading fast enough").await);
                }
            },
            element = stream.next() => match element {
                Some(Ok(FallibleStreamElement::Err(StreamElementError::InvalidStanza { name, header, error, .. }))) => {
                    meter.element_done();
                    tracing::debug!(%jid, "invalid {name}: {error}");
                    match invalid_stanza_reply(&name.to_string(), &header, jid) {
                        Some(reply) => stream.send(&XmppStreamElement::Stanza(reply)).await?,
                        None => return Err(fail(&mut stream, StreamCondition::InvalidXml, &format!("invalid {name}: {error}")).await),
                    }
                }
                Some(Ok(FallibleStreamElement::Err(StreamElementError::InvalidNonza { error, .. }))) => {
                    return Err(fail(&mut stream, StreamCondition::InvalidXml, &error.to_string()).await);
                }
                Some(Ok(FallibleStreamElement::Ok(XmppStreamElement::Stanza(stanza)))) => {
                    meter.element_done();
                    pinged = false;
                    if !from_is_own(&stanza, jid) {
                        return Err(fail(&mut stream, StreamCondition::InvalidFrom, "from must be your own JID").await);
                    }
                    if shared.hub.send(HubCommand::Stanza { jid: jid.clone(), id, stanza: Box::new(stanza) }).await.is_err() {
                        return Err(ConnectionEnd::Shutdown);
                    }
                }
                Some(Ok(FallibleStreamElement::Ok(_))) => {
                    meter.element_done();
                    return Err(fail(&mut stream, StreamCondition::UnsupportedStanzaType, "not a stanza").await);
                }
                Some(Err(ReadError::SoftTimeout)) if !pinged => {
                    // XEP-0199: a quiet client is asked whether it is still there.
                    pinged = true;
                    let ping = Iq::from_get(format!("ping-{:x}", rand::random::<u32>()), Ping)
                        .with_to(jid.clone().into());
                    stream.send(&XmppStreamElement::Stanza(ping.into())).await?;
                }
                Some(Err(error)) => return Err(read_failed(&mut stream, error, meter).await),
                None => return Err(ConnectionEnd::ClientClosed),
            },
        }
    }
}

/// Entry point of the `server_stream` fuzz target (see `fuzz/README.md`): a client's bytes
/// through the connection code above — [`LimitedReader`], the XML parser, stanza parsing, SASL,
/// bind, the session loop — and the hub and store behind it, in memory, without sockets or TLS.
/// Not part of the API: built only with the `fuzzing` feature.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    use std::net::{Ipv4Addr, SocketAddr};
    use std::sync::{Arc, OnceLock};
    use std::time::Duration;

    use tokio::io::BufReader;
    use tokio::sync::{mpsc, oneshot};
    use tokio_util::sync::CancellationToken;
    use tokio_xmpp::jid::{BareJid, FullJid};
    use tokio_xmpp::minidom::Element;
    use tokio_xmpp::parsers::iq::Iq;
    use tokio_xmpp::parsers::ns;
    use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
    use tokio_xmpp::Stanza;

    use super::super::driver::{apply, Outboxes};
    use super::super::hub::Hub;
    use super::super::limits::{LimitedReader, Meter, ServerLimits};
    use super::super::sasl::{derive_keys, ConnectionInfo, Hash};
    use super::super::shared::{HubCommand, Outbound, ServerShared};
    use super::super::store::{RosterItem, Store, StoredScram, Subscription};
    use super::{sasl, serve_authenticated, starttls, OUTBOX_CAPACITY};

    /// The served domain.
    pub const DOMAIN: &str = "localhost";
    /// The accounts, each with the password `<name>-secret`. Bytes fed at [`Stage::Session`]
    /// are alice's.
    pub const ACCOUNTS: [&str; 2] = ["alice", "bob"];
    /// The channel-binding bytes of the pretend TLS connection (so `-PLUS` is offered).
    pub const TLS_EXPORTER: [u8; 32] = [7; 32];
    /// PBKDF2 iterations of the accounts' keys: low, so that a PLAIN login costs little.
    const ITERATIONS: u32 = 16;

    /// Where in a connection the fuzzed bytes start.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Stage {
        /// A new plain-text connection: stream header, features, `<starttls/>`.
        Plain,
        /// Inside TLS: stream header, SASL exchanges, and after `<success/>` the restarted
        /// stream, bind and the session.
        Sasl,
        /// After alice's `<success/>`: the restarted stream header, bind and the session.
        Session,
    }

    /// ServerLimits for fuzzing: the defaults, with element sizes a fuzzer's inputs can reach and no
    /// delay after a failed login.
    pub fn limits() -> ServerLimits {
        ServerLimits {
            max_stanza_bytes: 4096,
            max_preauth_bytes: 2048,
            max_depth: 16,
            login_failure_delay: Duration::ZERO,
            max_login_delay: Duration::ZERO,
            ..ServerLimits::default()
        }
    }

    /// Serves `input` as everything a client sends from `stage` on, then end of stream.
    /// Returns what the two other sessions (bob's phone, alice's tablet) received, as XML.
    ///
    /// Panics when the server lets a stanza through with a `from` that is not one of the
    /// accounts (or the server), or when the hub still holds the fuzzed session afterwards.
    pub fn connection(stage: Stage, input: &[u8]) -> Vec<String> {
        thread_local! {
            static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("a current-thread runtime");
        }
        RUNTIME.with(|runtime| runtime.block_on(serve(stage, input)))
    }

    async fn serve(stage: Stage, input: &[u8]) -> Vec<String> {
        let limits = limits();
        let mut hub = Hub::new(DOMAIN, store()).expect("a valid domain");
        let mut outboxes = Outboxes::new();
        // Two sessions already online, available, and (alice's tablet) with carbons on.
        let mut others = Vec::new();
        for (id, (user, resource)) in [("bob", "phone"), ("alice", "tablet")].iter().enumerate() {
            let (outbox, inbox) = mpsc::channel(OUTBOX_CAPACITY);
            let (reply, mut bound) = oneshot::channel();
            let id = id as u64 + 1;
            let command = HubCommand::Bind {
                username: (*user).into(),
                resource: Some((*resource).into()),
                id,
                outbox,
                reply,
            };
            apply(&mut hub, &mut outboxes, command);
            let jid = bound
                .try_recv()
                .ok()
                .flatten()
                .expect("the pre-bound sessions bind");
            for stanza in [
                Stanza::from(Presence::available()),
                Iq::Set {
                    from: None,
                    to: None,
                    id: "carbons".into(),
                    payload: Element::builder("enable", ns::CARBONS).build(),
                }
                .into(),
            ] {
                let stanza = Box::new(stanza);
                let command = HubCommand::Stanza {
                    jid: jid.clone(),
                    id,
                    stanza,
                };
                apply(&mut hub, &mut outboxes, command);
            }
            others.push((jid, inbox));
        }

        let (hub_tx, mut hub_rx) = mpsc::channel(1024);
        let shared = Arc::new(ServerShared::new(
            DOMAIN.into(),
            tls_config(),
            limits.clone(),
            hub_tx,
            store(),
        ));
        let connection = async move {
            let peer = SocketAddr::from((Ipv4Addr::LOCALHOST, 5222));
            let shutdown = CancellationToken::new();
            let meter = Meter::new(limits.max_preauth_bytes, &limits);
            let io = BufReader::with_capacity(
                super::READ_BUFFER,
                LimitedReader::new(
                    tokio::io::join(input, tokio::io::sink()),
                    meter.clone(),
                    limits.bytes_per_second,
                    limits.burst_bytes,
                ),
            );
            match stage {
                Stage::Plain => {
                    let mut io = io;
                    let _ = starttls(&mut io, &shared, &meter).await;
                }
                Stage::Sasl => {
                    let mut io = io;
                    let info = ConnectionInfo {
                        domain: DOMAIN,
                        tls_active: true,
                        tls_exporter: Some(&TLS_EXPORTER),
                    };
                    if let Ok(username) = sasl(&mut io, peer, &info, &shared, &meter).await {
                        let _ = serve_authenticated(
                            &mut io, &username, peer, &shared, &meter, shutdown,
                        )
                        .await;
                    }
                }
                Stage::Session => {
                    let mut io = io;
                    let _ = serve_authenticated(&mut io, "alice", peer, &shared, &meter, shutdown)
                        .await;
                }
            }
            // Dropping `shared` closes the hub's inbox, which ends the hub loop.
        };
        let hub_loop = async {
            while let Some(command) = hub_rx.recv().await {
                apply(&mut hub, &mut outboxes, command);
            }
        };
        tokio::join!(connection, hub_loop);

        let bound: Vec<&FullJid> = hub.sessions.keys().collect();
        let expected: Vec<&FullJid> = others.iter().map(|(jid, _)| jid).collect();
        let mut expected_sorted = expected.clone();
        expected_sorted.sort();
        assert_eq!(
            bound, expected_sorted,
            "the hub still holds a session that ended"
        );
        let mut received = Vec::new();
        for (jid, mut inbox) in others {
            while let Ok(outbound) = inbox.try_recv() {
                let stanzas = match outbound {
                    Outbound::Stanza(stanza) => vec![*stanza],
                    Outbound::Batch(stanzas) => stanzas,
                    Outbound::Close(_) => Vec::new(),
                };
                for stanza in stanzas {
                    check_from(&jid, &stanza);
                    // What the session would write.
                    received.push(String::from(&Element::from(stanza)));
                }
            }
        }
        received
    }

    /// Every stanza a session receives names its sender: the server, or a session of an
    /// account (the hub stamps it), never a JID the fuzzed client made up. The one exception is
    /// the refusal the server sends on behalf of a contact that does not exist (RFC 6121
    /// §3.1.3), an `unsubscribed` presence from that contact's bare JID.
    fn check_from(to: &FullJid, stanza: &Stanza) {
        let from = match stanza {
            Stanza::Message(m) => m.from.as_ref(),
            Stanza::Presence(p) => p.from.as_ref(),
            Stanza::Iq(iq) => iq.from(),
        };
        let Some(from) = from else {
            // Roster pushes and other server answers to the session's own requests.
            return;
        };
        let bare: BareJid = from.to_bare();
        let ok = (bare.node().is_none() && bare.domain().as_str() == DOMAIN)
            || ACCOUNTS
                .iter()
                .any(|user| bare.as_str() == format!("{user}@{DOMAIN}"))
            || matches!(stanza, Stanza::Presence(p)
                if p.type_ == PresenceType::Unsubscribed && from.resource().is_none());
        assert!(ok, "{to} received a stanza from {from}: {stanza:?}");
    }

    /// A fresh in-memory store with the accounts, alice and bob subscribed to each other: a copy
    /// of one built once per process (building it takes most of an input's time otherwise).
    fn store() -> Store {
        static IMAGE: OnceLock<Vec<u8>> = OnceLock::new();
        let image = IMAGE.get_or_init(|| template().image().expect("a database image"));
        Store::from_image(image).expect("a copy of the accounts")
    }

    fn template() -> Store {
        let store = Store::open_in_memory().expect("an in-memory store");
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
        store
    }

    /// The SCRAM keys of `user`'s password, derived once per process.
    fn keys(user: &str) -> (&'static StoredScram, &'static StoredScram) {
        static KEYS: OnceLock<Vec<(String, StoredScram, StoredScram)>> = OnceLock::new();
        let all = KEYS.get_or_init(|| {
            let derive = |user: &str, hash| {
                let keys =
                    derive_keys(&format!("{user}-secret"), hash, b"fuzzing salt", ITERATIONS)
                        .expect("a valid password");
                StoredScram {
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

    /// A TLS configuration for [`ServerShared`]; never used, since the fuzzed bytes start either
    /// before STARTTLS or inside TLS.
    fn tls_config() -> Arc<rustls::ServerConfig> {
        static CONFIG: OnceLock<Arc<rustls::ServerConfig>> = OnceLock::new();
        CONFIG
            .get_or_init(|| {
                let generated = rcgen::generate_simple_self_signed(vec![DOMAIN.to_string()])
                    .expect("a self-signed certificate");
                let key =
                    rustls::pki_types::PrivatePkcs8KeyDer::from(generated.key_pair.serialize_der());
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let config = rustls::ServerConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .expect("default TLS versions")
                    .with_no_client_auth()
                    .with_single_cert(vec![generated.cert.der().clone()], key.into())
                    .expect("a valid certificate");
                Arc::new(config)
            })
            .clone()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
            xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";
        const BIND: &str = "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
            <resource>fuzz</resource></bind></iq>";
        const CHAT: &str = "<message to='bob@localhost' type='chat'><body>hi bob</body></message>";

        fn delivered_chat(received: &[String]) -> bool {
            received.iter().any(|xml| xml.contains("hi bob"))
        }

        #[test]
        fn a_session_reaches_the_other_accounts() {
            let input = format!("{HEADER}{BIND}{CHAT}");
            assert!(delivered_chat(&connection(
                Stage::Session,
                input.as_bytes()
            )));
        }

        #[test]
        fn a_plain_login_leads_to_the_session() {
            // base64("\0alice\0alice-secret")
            let auth = "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>\
                AGFsaWNlAGFsaWNlLXNlY3JldA==</auth>";
            let input = format!("{HEADER}{auth}{HEADER}{BIND}{CHAT}");
            assert!(delivered_chat(&connection(Stage::Sasl, input.as_bytes())));
            let wrong = input.replace("AGFsaWNlAGFsaWNlLXNlY3JldA==", "AGFsaWNlAHdyb25n");
            assert!(!delivered_chat(&connection(Stage::Sasl, wrong.as_bytes())));
        }

        #[test]
        fn nothing_passes_the_plain_stage() {
            let input =
                format!("{HEADER}<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>{CHAT}");
            assert!(!delivered_chat(&connection(Stage::Plain, input.as_bytes())));
        }
    }
}
