//! Authentication (RFC 6120 §6): the SASL mechanisms offered inside TLS, the exchanges, and the
//! growing delay after a failed password or proof, which slows down guessing from one address.
//! The exchanges themselves are sans-IO, in `server/sasl/`; this is the stream around them.

use std::net::SocketAddr;

use futures::SinkExt;
use tokio_xmpp::parsers::sasl as wire_sasl;
use tokio_xmpp::parsers::sasl_cb::{SaslChannelBinding, Type as ChannelBindingType};
use tokio_xmpp::parsers::stream_error::DefinedCondition as StreamCondition;
use tokio_xmpp::parsers::stream_features::StreamFeatures;
use tokio_xmpp::xmlstream::{ReadError, XmppStreamElement};

use super::errors::{fail, read_failed, ConnectionEnd};
use super::features::FeaturesFilter;
use super::negotiation::{accept_header, next, next_parsed, refuse_header, respond, Xml};
use super::upstream::{classify_parse, Upstream};
use crate::server::limits::Meter;
use crate::server::sasl::{self, ConnectionInfo, Mechanism, ServerExchange, Step};
use crate::server::shared::ServerShared;

/// Most failed password or proof checks on one connection before it is closed.
const MAX_AUTH_ATTEMPTS: u32 = 3;
/// Most SASL exchanges of any outcome on one connection (bounds the cheap refusals too).
const MAX_SASL_EXCHANGES: u32 = 10;

/// The stream inside TLS: header, SASL mechanisms, and exchanges until one succeeds or too many
/// failed. Returns the stream right after `<success/>` and the authenticated (lowercase)
/// username.
pub(super) async fn sasl<Io>(
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
        sasl_cb: channel_binding_feature(info),
        ..Default::default()
    };
    let accepted = match accept_header(&mut *io, shared, meter).await? {
        Ok(accepted) => accepted,
        Err(failure) => return Err(refuse_header(io, shared, failure).await),
    };
    let mut stream: Xml<FeaturesFilter<&mut Io>> = respond(accepted, shared, &features).await?;
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
        Err(error) if classify_parse(&error) == Some(Upstream::UnknownMechanism) => {
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

/// XEP-0440's `<sasl-channel-binding/>`: the channel-binding types `-PLUS` accepts here, so
/// that a client picks one we have instead of guessing (some, such as Conversations, use
/// `-PLUS` only when this is present). `None` when `-PLUS` is not offered.
fn channel_binding_feature(info: &ConnectionInfo<'_>) -> Option<SaslChannelBinding> {
    let types: Vec<_> = info
        .channel_binding_types()
        .into_iter()
        .filter_map(|name| match name {
            sasl::TLS_EXPORTER => Some(ChannelBindingType::TlsExporter),
            sasl::TLS_SERVER_END_POINT => Some(ChannelBindingType::TlsServerEndPoint),
            _ => None,
        })
        .collect();
    (!types.is_empty()).then_some(SaslChannelBinding { types })
}

/// The wire condition for a failed SASL exchange.
fn sasl_condition(failure: sasl::Failure) -> wire_sasl::DefinedCondition {
    use sasl::Failure as F;
    use wire_sasl::DefinedCondition as C;
    match failure {
        F::EncryptionRequired => C::EncryptionRequired,
        F::IncorrectEncoding => C::IncorrectEncoding,
        F::InvalidAuthzid => C::InvalidAuthzid,
        F::InvalidMechanism => C::InvalidMechanism,
        F::MalformedRequest => C::MalformedRequest,
        F::NotAuthorized => C::NotAuthorized,
    }
}
