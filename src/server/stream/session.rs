//! The bound session (RFC 6120 §7, RFC 6121): after SASL, the restarted stream and bind, then
//! the session loop, which forwards the client's stanzas to the hub after checking their `from`,
//! answers stanzas that do not parse, writes what the hub sends (closing a client that stops
//! reading), pings a client that goes quiet (XEP-0199), and on shutdown sends
//! `system-shutdown`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_xmpp::jid::{FullJid, Jid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::bind::{BindFeature, BindQuery, BindResponse};
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::{Id as MessageId, Message, MessageType};
use tokio_xmpp::parsers::ping::Ping;
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::parsers::stanza_error::DefinedCondition as StanzaCondition;
use tokio_xmpp::parsers::stanza_error::{ErrorType, StanzaError};
use tokio_xmpp::parsers::stream_error::DefinedCondition as StreamCondition;
use tokio_xmpp::parsers::stream_features::StreamFeatures;
use tokio_xmpp::xmlstream::{
    AcceptedStream, FallibleStreamElement, RawStanzaHeader, ReadError, StreamElementError,
    XmlStream, XmppStreamElement,
};
use tokio_xmpp::Stanza;

use super::errors::{fail, read_failed, ConnectionEnd};
use super::negotiation::{
    accept_header, before_login_deadline, login_timed_out, refuse_header, respond, LOGIN_GRACE,
};
use crate::server::hub::{bounce, CloseReason};
use crate::server::limits::Meter;
use crate::server::shared::{HubCommand, Outbound, ServerShared};

/// Outgoing queue of one session; a client that lets it fill up is too slow and is closed.
pub const OUTBOX_CAPACITY: usize = 256;

/// A client that takes nothing from its connection for this long (or its idle limit, if
/// shorter) while stanzas wait for it is disconnected.
pub const MAX_WRITE_STALL: Duration = Duration::from_secs(30);

/// After authentication: stanzas that fail to parse are answered, not fatal.
type SessionStream<Io> = XmlStream<Io, FallibleStreamElement>;

/// After `<success/>`: the restarted stream, bind within the time limit, then the session until
/// it ends.
pub(super) async fn serve_authenticated<Io>(
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

/// What the hub's services add to the features after SASL: roster versioning (RFC 6121
/// §2.6.1) and the server's entity capabilities (XEP-0115 §6.3). The same for every login, so
/// built once.
fn service_features() -> Vec<Element> {
    use crate::server::hub::{registry, service};
    static FEATURES: std::sync::LazyLock<Vec<Element>> =
        std::sync::LazyLock::new(|| service::stream_features(registry::SERVICES));
    FEATURES.clone()
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
    features.others.extend(service_features());
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

/// Answers `iq` with a stanza error.
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

/// The bound session until it ends: the client's stanzas to the hub, the hub's to the client.
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
