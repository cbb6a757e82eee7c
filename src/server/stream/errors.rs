//! How a connection ends: the stream error conditions (RFC 6120 §4.9), [`fail`] which sends one
//! and closes the stream, [`read_failed`] which picks the condition for a read that failed,
//! [`fail_before_header`] for a client whose stream header could not be read, and
//! [`ConnectionEnd`], the outcome logged for each connection.

use std::io;
use std::time::Duration;

use futures::SinkExt;
use thiserror::Error;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::stream_error::{DefinedCondition as StreamCondition, StreamError};
use tokio_xmpp::xmlstream::{ReadError, XmlStream};
use xso::FromXml;

use super::upstream::{classify_read, Upstream};
use crate::server::limits::Meter;
use crate::server::shared::ServerShared;

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

/// Sends a stream error and closes the stream.
pub(super) async fn fail<Io, T: FromXml>(
    stream: &mut XmlStream<Io, T>,
    condition: StreamCondition,
    text: &str,
) -> ConnectionEnd
where
    Io: tokio::io::AsyncBufRead + tokio::io::AsyncWrite + Unpin,
{
    fail_with(stream, StreamError::new(condition, "en", text)).await
}

/// Sends `error` (which may carry an application-specific condition, such as XEP-0198's
/// `handled-count-too-high`) and closes the stream.
pub(super) async fn fail_with<Io, T: FromXml>(
    stream: &mut XmlStream<Io, T>,
    error: StreamError,
) -> ConnectionEnd
where
    Io: tokio::io::AsyncBufRead + tokio::io::AsyncWrite + Unpin,
{
    let name = condition_name(&error.condition);
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
pub(super) async fn read_failed<Io, T: FromXml>(
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
        ReadError::HardError(e) => match classify_read(&e) {
            // A well-formed element that is not a stanza or a known nonza.
            Some(Upstream::UnknownElement) => {
                fail(
                    stream,
                    StreamCondition::UnsupportedStanzaType,
                    "not a stanza this server knows",
                )
                .await
            }
            // rxml refuses names, attribute values and references longer than its token limit
            // (8 KiB): a size limit, not a forbidden XML feature.
            Some(Upstream::TooLong) => {
                fail(
                    stream,
                    StreamCondition::PolicyViolation,
                    "a name, attribute value or reference is longer than 8192 bytes",
                )
                .await
            }
            Some(Upstream::RestrictedXml) => {
                fail(stream, StreamCondition::RestrictedXml, &e.to_string()).await
            }
            Some(
                Upstream::NotStreamHeader
                | Upstream::UnsupportedVersion
                | Upstream::NotWellFormed
                | Upstream::UnknownMechanism
                | Upstream::InvalidShow,
            ) => fail(stream, StreamCondition::NotWellFormed, &e.to_string()).await,
            Some(Upstream::BeforeStreamHeader) | None => ConnectionEnd::Io(e),
        },
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

/// Answers a client whose stream header could not be read: our own header, the error, and the
/// end of the stream, written straight to the transport.
pub(super) async fn fail_before_header<Io>(
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
