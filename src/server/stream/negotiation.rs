//! Stream negotiation before login (RFC 6120 §4, §5): reading the client's stream header (and
//! answering one that cannot be read), sending ours with the features, the STARTTLS step, and
//! reading elements until the login deadline.

use std::borrow::Cow;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::starttls::{self, StartTls};
use tokio_xmpp::parsers::stream_error::{DefinedCondition as StreamCondition, StreamError};
use tokio_xmpp::parsers::stream_features::StreamFeatures;
use tokio_xmpp::xmlstream::{
    accept_stream, AcceptedStream, ReadError, StreamHeader, Timeouts, XmlStream, XmppStreamElement,
};
use xso::FromXml;

use super::errors::{fail, fail_before_header, read_failed, ConnectionEnd};
use super::features::FeaturesFilter;
use super::upstream::{classify_read, Upstream};
use crate::server::limits::Meter;
use crate::server::shared::ServerShared;

/// Time a client gets beyond the login deadline to receive its `connection-timeout` error.
pub(super) const LOGIN_GRACE: Duration = Duration::from_secs(2);

/// The stream before login: every element must parse.
pub(super) type Xml<Io> = XmlStream<Io, XmppStreamElement>;

/// tokio-xmpp's read timeouts: a client silent for the idle limit gets a soft timeout.
fn timeouts(shared: &ServerShared) -> Timeouts {
    Timeouts {
        read_timeout: shared.limits.idle_ping_after,
        response_timeout: shared.limits.idle_ping_after,
    }
}

/// Answers an accepted header with ours and `features`, or with `host-unknown` when the client
/// asked for another domain.
///
/// The features go out without an empty `<mechanisms/>`: the stream's transport is a
/// [`FeaturesFilter`] (see `features.rs` for why it is done there), put around it by
/// [`accept_header`].
pub(super) async fn respond<Io, T: FromXml>(
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

/// What a client is told when it has not logged in and bound a resource in time.
pub(super) const LOGIN_TIME_OVER: &str = "the time to log in and bind a resource is over";

/// `read`'s outcome, or `None` when the login deadline (if one is set) passes first.
pub(super) async fn before_login_deadline<F: std::future::Future>(
    read: F,
    meter: &Meter,
) -> Option<F::Output> {
    match meter.login_deadline() {
        Some(deadline) => tokio::time::timeout_at(deadline, read).await.ok(),
        None => Some(read.await),
    }
}

/// Ends a negotiation that went past the login deadline.
pub(super) async fn login_timed_out<Io, T: FromXml>(stream: &mut XmlStream<Io, T>) -> ConnectionEnd
where
    Io: tokio::io::AsyncBufRead + tokio::io::AsyncWrite + Unpin,
{
    fail(stream, StreamCondition::ConnectionTimeout, LOGIN_TIME_OVER).await;
    ConnectionEnd::AuthTimeout
}

/// The next element, skipping soft timeouts, until the login deadline.
pub(super) async fn next<Io>(
    stream: &mut Xml<Io>,
    meter: &Meter,
) -> Result<XmppStreamElement, ConnectionEnd>
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
pub(super) async fn next_parsed<Io>(
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

/// The plain-text stream: header, features (STARTTLS required), `<starttls/>` and our
/// `<proceed/>`; then the transport is ready for the TLS handshake.
///
/// The stream borrows `io`, so that a failure while the client's header is read (a DOCTYPE in
/// front of it, bytes that are not XML, a header that never ends) can still be answered as RFC
/// 6120 §4.9.1.2 asks: our header, the stream error, the end of the stream.
pub(super) async fn starttls<Io>(
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
    let mut stream: Xml<FeaturesFilter<&mut Io>> = respond(accepted, shared, &features).await?;
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
pub(super) struct HeaderFailure(StreamCondition, String);

/// Reads the client's stream header from `io`, which the stream only borrows, so that when the
/// header cannot be read (a DOCTYPE in front of it, bytes that are not XML, a stanza where a
/// restarted stream should begin, a header that never ends) the caller can still answer as RFC
/// 6120 §4.9.1.2 asks, with [`refuse_header`]. Errors of the transport itself are returned as
/// they are.
///
/// Whitespace in front of the header is skipped: RFC 6120 §11.7 allows whitespace between
/// top-level elements (and whitespace keepalives), so a client may end the last element of the
/// previous stream with a newline (go-xmpp sends `</auth>\n`), and that newline then stands
/// before the restarted stream's header, where the XML parser, which starts a new document,
/// would take it for text before the XML declaration. Anything that is not whitespace still
/// reaches the parser and is refused as before.
///
/// The stream's transport is wrapped in a [`FeaturesFilter`], so that [`respond`] writes only
/// the features that apply.
pub(super) async fn accept_header<'io, Io>(
    io: &'io mut Io,
    shared: &ServerShared,
    meter: &Meter,
) -> Result<Result<AcceptedStream<FeaturesFilter<&'io mut Io>>, HeaderFailure>, ConnectionEnd>
where
    Io: tokio::io::AsyncBufRead + tokio::io::AsyncWrite + Unpin,
{
    let header = async {
        skip_whitespace(&mut *io).await?;
        accept_stream(FeaturesFilter::new(io), ns::JABBER_CLIENT, timeouts(shared)).await
    };
    let error = match before_login_deadline(header, meter).await {
        Some(Ok(accepted)) => return Ok(Ok(accepted)),
        Some(Err(error)) => error,
        None => {
            let failure = HeaderFailure(StreamCondition::ConnectionTimeout, LOGIN_TIME_OVER.into());
            return Ok(Err(failure));
        }
    };
    let (condition, text) = match classify_read(&error) {
        _ if meter.tripped() => (
            StreamCondition::PolicyViolation,
            meter
                .exceeded()
                .map_or_else(|| "limit exceeded".into(), |limit| limit.to_string()),
        ),
        Some(upstream) => header_condition(upstream, error.to_string()),
        None => return Err(ConnectionEnd::Io(error)),
    };
    Ok(Err(HeaderFailure(condition, text)))
}

/// Consumes the XML whitespace (RFC 6120 §11.7; XML 1.0 `S`: space, tab, CR, LF) at the front
/// of `io`, and stops at the first other byte or at the end of the input. The bytes read count
/// against the connection's limits like any others, so whitespace cannot be sent forever.
async fn skip_whitespace<Io>(io: &mut Io) -> std::io::Result<()>
where
    Io: tokio::io::AsyncBufRead + Unpin,
{
    use tokio::io::AsyncBufReadExt;
    loop {
        let buffered = io.fill_buf().await?;
        let blank = buffered
            .iter()
            .take_while(|byte| matches!(byte, b' ' | b'\t' | b'\r' | b'\n'))
            .count();
        let more = blank > 0 && blank == buffered.len();
        io.consume(blank);
        if !more {
            return Ok(());
        }
    }
}

/// Most whitespace bytes read between `<proceed/>` and the TLS handshake.
const MAX_WHITESPACE_BEFORE_TLS: usize = 1024;

/// Consumes whitespace the client sent after `<starttls/>` that arrives only after our
/// `<proceed/>` (RFC 6120 §11.7 allows it after an element; go-xmpp writes `<starttls/>\n`),
/// so that the TLS handshake starts at the client's first handshake byte, which is never
/// whitespace (a TLS record starts with its content type, 22 for a handshake). Plain text read
/// together with `<starttls/>` is dropped with the plain-text stream, whitespace or not: nothing
/// sent before TLS may count after it. At most [`MAX_WHITESPACE_BEFORE_TLS`] bytes are skipped;
/// the connection's login deadline bounds the wait.
pub(super) async fn skip_whitespace_before_tls(
    tcp: &mut tokio::net::TcpStream,
) -> std::io::Result<()> {
    use tokio::io::AsyncReadExt;
    let mut skipped = 0;
    let mut buffer = [0u8; 64];
    while skipped < MAX_WHITESPACE_BEFORE_TLS {
        let peeked = tcp.peek(&mut buffer).await?;
        let blank = buffer[..peeked]
            .iter()
            .take_while(|byte| matches!(byte, b' ' | b'\t' | b'\r' | b'\n'))
            .count();
        if blank == 0 {
            break;
        }
        tcp.read_exact(&mut buffer[..blank]).await?;
        skipped += blank;
    }
    Ok(())
}

/// The stream error for what tokio-xmpp says of a header it could not read, with the text to
/// send.
fn header_condition(upstream: Upstream, error: String) -> (StreamCondition, String) {
    match upstream {
        // A DOCTYPE, a comment or a processing instruction (rxml reports an over-long name as
        // restricted XML too).
        Upstream::RestrictedXml | Upstream::TooLong => (StreamCondition::RestrictedXml, error),
        // Another root element, such as a stanza where a (restarted) stream should begin
        // (RFC 6120 §4.8.1).
        Upstream::NotStreamHeader => {
            let text = format!("expected a stream header in the namespace {}", ns::STREAM);
            (StreamCondition::InvalidNamespace, text)
        }
        Upstream::UnsupportedVersion => {
            let text = "this server speaks version 1.0 of XMPP streams".to_string();
            (StreamCondition::UnsupportedVersion, text)
        }
        // Text or an end tag where the header should be; at a real end of file nobody is left
        // to read the answer, which costs nothing.
        Upstream::BeforeStreamHeader
        | Upstream::NotWellFormed
        | Upstream::UnknownElement
        | Upstream::UnknownMechanism
        | Upstream::InvalidShow => (StreamCondition::NotWellFormed, error),
    }
}

/// Answers a [`HeaderFailure`] on the transport whose header could not be read.
pub(super) async fn refuse_header<Io>(
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
