//! The bound session (RFC 6120 §7, RFC 6121): after SASL, the restarted stream and bind (or
//! the resumption of an earlier session, XEP-0198 §5), then the session loop, which forwards the
//! client's stanzas to the hub after checking their `from`, answers stanzas that do not parse,
//! writes what the hub sends (closing a client that stops reading), pings a client that goes
//! quiet (XEP-0199), and on shutdown sends `system-shutdown`.
//!
//! With stream management (XEP-0198, rules in `sm.rs`) the loop also counts and acknowledges,
//! and keeps what it wrote until the client acknowledges it. When the link of a resumable
//! session dies (a read error, the end of the connection without `</stream:stream>`, an
//! unanswered idle ping, a write that stalls), the session is not unbound: a task of its own
//! keeps it *hibernating* for the resumption time, queueing what the hub sends (presence
//! coalesced per sender, as for an inactive client), while the hub and the contacts still see
//! it bound and available. A new connection of the same account that sends `<resume/>` takes
//! the session over, from that task or from a connection still open, and gets every stanza it
//! had not acknowledged, exactly once. A session that ends for good (a clean close, a stream
//! error, `conflict`, a full queue, the resumption time over, shutdown) hands its
//! unacknowledged stanzas to the hub, which stores the messages offline.
//!
//! With client state indication (XEP-0352, `csi.rs`) presence updates for an inactive client
//! are held back.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_xmpp::jid::{FullJid, Jid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::bind::{BindFeature, BindQuery, BindResponse};
use tokio_xmpp::parsers::csi;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::{Id as MessageId, Message, MessageType};
use tokio_xmpp::parsers::ping::Ping;
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::parsers::sm;
use tokio_xmpp::parsers::stanza_error::DefinedCondition as StanzaCondition;
use tokio_xmpp::parsers::stanza_error::{ErrorType, StanzaError};
use tokio_xmpp::parsers::stream_error::DefinedCondition as StreamCondition;
use tokio_xmpp::parsers::stream_features::StreamFeatures;
use tokio_xmpp::xmlstream::{
    AcceptedStream, FallibleStreamElement, RawStanzaHeader, ReadError, StreamElementError,
    XmlStream, XmppStreamElement,
};
use tokio_xmpp::Stanza;

use super::csi::{ClientState, Filtered, SessionElement};
use super::errors::{fail, fail_with, read_failed, ConnectionEnd};
use super::negotiation::{
    accept_header, before_login_deadline, login_timed_out, refuse_header, respond, LOGIN_GRACE,
};
use super::sm::new_token;
use super::upstream::{classify_parse, Upstream};
use crate::server::hub::{bounce, CloseReason};
use crate::server::limits::Meter;
use crate::server::shared::{Handover, HubCommand, Outbound, ServerShared, SmState, Takeover};

/// Outgoing queue of one session; a client that lets it fill up is too slow and is closed.
pub const OUTBOX_CAPACITY: usize = 256;

/// A client that takes nothing from its connection for this long (or its idle limit, if
/// shorter) while stanzas wait for it is disconnected.
pub const MAX_WRITE_STALL: Duration = Duration::from_secs(30);

/// After authentication: stanzas that fail to parse are answered, not fatal; CSI nonzas are
/// read too.
type SessionStream<Io> = XmlStream<Io, SessionElement>;

/// A bound session as the loop holds it. With resumption it outlives its connection.
#[derive(Debug)]
struct Session {
    jid: FullJid,
    /// The session's id in the hub.
    id: u64,
    /// What the hub sends it.
    inbox: mpsc::Receiver<Outbound>,
    /// XEP-0198, once the client enabled it.
    sm: Option<SmState>,
    /// Set while the session can be resumed.
    resume: Option<Resume>,
    /// XEP-0352.
    csi: ClientState,
}

/// A resumable session's registration (see [`crate::server::shared::Resumptions`]).
#[derive(Debug)]
struct Resume {
    token: String,
    /// How long it may hibernate.
    timeout: Duration,
    /// Where a resuming connection asks for the session.
    takeover: mpsc::Receiver<Takeover>,
    /// The registered sender, to unregister exactly this registration.
    holder: mpsc::Sender<Takeover>,
}

impl Session {
    /// A session resumed from `handover`, registered under its id with a new holder.
    fn adopt(handover: Handover, username: &str, shared: &ServerShared) -> Self {
        let (holder, takeover) = mpsc::channel(1);
        shared
            .resumptions
            .replace(username, &handover.token, holder.clone());
        Self {
            jid: handover.jid,
            id: handover.id,
            inbox: handover.inbox,
            sm: Some(handover.sm),
            resume: Some(Resume {
                token: handover.token,
                timeout: handover.timeout,
                takeover,
                holder,
            }),
            csi: ClientState::default(),
        }
    }

    /// The session for the connection that resumes it. Presence held back for an inactive
    /// client was never written: it waits behind the rest.
    fn into_handover(mut self) -> Handover {
        let mut sm = self.sm.take().unwrap_or_default();
        for stanza in self.csi.take_held() {
            sm.push_pending(*stanza);
        }
        let (token, timeout) = self
            .resume
            .map(|resume| (resume.token, resume.timeout))
            .unwrap_or_default();
        Handover {
            jid: self.jid,
            id: self.id,
            inbox: self.inbox,
            sm,
            token,
            timeout,
        }
    }
}

/// How the session loop ended.
enum LoopEnd {
    /// For good: the client closed its stream or broke a rule, a new login replaced it, or the
    /// server stops.
    Closed(ConnectionEnd),
    /// The link died: a resumable session hibernates.
    LinkLost(ConnectionEnd),
    /// A new connection resumes the session.
    TakenOver(Takeover),
}

impl From<std::io::Error> for LoopEnd {
    fn from(error: std::io::Error) -> Self {
        LoopEnd::LinkLost(ConnectionEnd::Io(error))
    }
}

/// Whether a read that failed (and was answered by [`read_failed`]) means a dead link or a
/// broken rule.
fn read_end(end: ConnectionEnd) -> LoopEnd {
    match &end {
        ConnectionEnd::Io(_) => LoopEnd::LinkLost(end),
        ConnectionEnd::StreamError(name) if name == "connection-timeout" => LoopEnd::LinkLost(end),
        _ => LoopEnd::Closed(end),
    }
}

/// After `<success/>`: the restarted stream, bind (or resume) within the time limit, then the
/// session until it ends, hibernates or moves to another connection.
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
    let (stream, mut session, resumed) = tokio::select! {
        result = tokio::time::timeout(limits.auth_timeout + LOGIN_GRACE, session) => match result {
            Ok(result) => result?,
            Err(_) => return Err(ConnectionEnd::AuthTimeout),
        },
        _ = shutdown.cancelled() => return Err(ConnectionEnd::Shutdown),
    };
    meter.set_login_deadline(None);
    // On the heap, as it was inside the boxed session loop before the loop began to hand it back
    // (to close it after a takeover): inline, it would make every connection's task larger.
    let mut stream = Box::new(stream);
    let jid = session.jid.clone();
    if resumed {
        tracing::info!(%peer, %jid, "session resumed");
    } else {
        tracing::info!(%peer, %jid, "session started");
    }
    loop {
        let looped = Box::pin(session_loop(
            &mut stream,
            &mut session,
            username,
            shared,
            meter,
            &shutdown,
        ));
        let Err(end) = looped.await;
        match end {
            LoopEnd::TakenOver(reply) => match reply.send(session.into_handover()) {
                Ok(()) => {
                    tracing::info!(%peer, %jid, "session moved to a new connection");
                    let text = "the session was resumed on another connection";
                    return Err(fail(&mut stream, StreamCondition::Conflict, text).await);
                }
                // The new connection gave up waiting: keep serving here.
                Err(handover) => session = Session::adopt(handover, username, shared),
            },
            LoopEnd::LinkLost(end) if session.resume.is_some() => {
                tracing::info!(%peer, %jid, "link lost ({end}); the session can be resumed");
                tokio::spawn(hibernate(
                    session,
                    username.to_string(),
                    shared.clone(),
                    shutdown,
                ));
                return Err(end);
            }
            LoopEnd::LinkLost(end) | LoopEnd::Closed(end) => {
                end_session(session, username, shared).await;
                tracing::info!(%peer, %jid, "session ended");
                return Err(end);
            }
        }
    }
}

/// Ends a session for good: it can no longer be resumed, and the hub unbinds it and treats
/// what the client did not acknowledge as sent to an unavailable resource (XEP-0198 §5).
async fn end_session(mut session: Session, username: &str, shared: &ServerShared) {
    if let Some(resume) = &session.resume {
        shared
            .resumptions
            .remove(username, &resume.token, &resume.holder);
    }
    let mut unacked = session
        .sm
        .take()
        .map(SmState::into_unacked)
        .unwrap_or_default();
    // What the hub queued and nobody wrote. Closed first, so that what the hub routes from now
    // on comes back to it as undelivered.
    session.inbox.close();
    while let Ok(outbound) = session.inbox.try_recv() {
        match outbound {
            Outbound::Stanza(stanza) => unacked.push(*stanza),
            Outbound::Batch(stanzas) => unacked.extend(stanzas),
            Outbound::Close(_) => {}
        }
    }
    let _ = shared
        .hub
        .send(HubCommand::Unbind {
            jid: session.jid,
            id: session.id,
            unacked,
        })
        .await;
}

/// The next request to take `resume`'s session over; never, for a session that cannot be
/// resumed.
async fn takeover(resume: &mut Option<Resume>) -> Takeover {
    match resume {
        Some(resume) => match resume.takeover.recv().await {
            Some(request) => request,
            // Never: `resume.holder` keeps the channel open.
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// What happens to a hibernating session.
enum Hibernation {
    Expired,
    Shutdown,
    Takeover(Takeover),
    Outbound(Option<Outbound>),
}

/// A resumable session whose link died (XEP-0198 §5): it stays bound and queues what the hub
/// sends until a new connection resumes it or the resumption time is over.
async fn hibernate(
    mut session: Session,
    username: String,
    shared: Arc<ServerShared>,
    shutdown: CancellationToken,
) {
    let timeout = session
        .resume
        .as_ref()
        .map_or(Duration::ZERO, |r| r.timeout);
    let deadline = tokio::time::Instant::now() + timeout;
    let (max_unacked, max_held) = (shared.limits.max_unacked, shared.limits.max_held_presences);
    // Nobody reads presence updates now: keep only the latest of each sender.
    session.csi.inactive();
    // Stanzas queued since the link died; at most `max_unacked`.
    let mut queued = 0;
    let why = loop {
        let event = tokio::select! {
            _ = tokio::time::sleep_until(deadline) => Hibernation::Expired,
            _ = shutdown.cancelled() => Hibernation::Shutdown,
            request = takeover(&mut session.resume) => Hibernation::Takeover(request),
            outbound = session.inbox.recv() => Hibernation::Outbound(outbound),
        };
        let outbound = match event {
            Hibernation::Expired => break "the time to resume it is over",
            Hibernation::Shutdown => break "the server is shutting down",
            Hibernation::Takeover(reply) => match reply.send(session.into_handover()) {
                Ok(()) => return,
                Err(handover) => {
                    session = Session::adopt(handover, &username, &shared);
                    session.csi.inactive();
                    continue;
                }
            },
            Hibernation::Outbound(Some(outbound)) => outbound,
            Hibernation::Outbound(None) => break "its queue overflowed",
        };
        let sm = session.sm.get_or_insert_with(SmState::default);
        match outbound {
            Outbound::Stanza(stanza) => match session.csi.filter(stanza, max_held) {
                Filtered::Send(stanza) => {
                    queued += 1;
                    sm.push_pending(*stanza);
                }
                Filtered::Held => {}
                Filtered::Flush(all) => {
                    queued += all.len();
                    all.into_iter().for_each(|s| sm.push_pending(*s));
                }
            },
            // Stored offline messages: nothing to hold back.
            Outbound::Batch(stanzas) => {
                queued += stanzas.len();
                stanzas.into_iter().for_each(|s| sm.push_pending(s));
            }
            Outbound::Close(CloseReason::Conflict) => break "a new login replaced it",
        }
        if queued > max_unacked {
            break "too many stanzas wait for it";
        }
    };
    tracing::info!(jid = %session.jid, "hibernating session ended: {why}");
    end_session(session, &username, &shared).await;
}

/// Longest a write to a client may stall: the idle limit, but never more than
/// [`MAX_WRITE_STALL`].
fn write_stall_limit(shared: &ServerShared) -> Duration {
    shared.limits.idle_ping_after.min(MAX_WRITE_STALL)
}

/// What the hub's services add to the features after SASL: roster versioning (RFC 6121
/// §2.6.1) and the server's entity capabilities (XEP-0115 §6.3). The same for every login, so
/// built once. A server with contact addresses (XEP-0157) has them in its disco#info, so its
/// caps hash them too.
fn service_features(contacts: &[(String, Vec<String>)]) -> Vec<Element> {
    use crate::server::hub::{registry, server_caps, service};
    static FEATURES: std::sync::LazyLock<Vec<Element>> =
        std::sync::LazyLock::new(|| service::stream_features(registry::SERVICES));
    let mut features = FEATURES.clone();
    if !contacts.is_empty() {
        if let Some(caps) = server_caps(registry::SERVICES, contacts) {
            for feature in &mut features {
                if feature.is("c", tokio_xmpp::parsers::ns::CAPS) {
                    *feature = caps.clone();
                }
            }
        }
    }
    features
}

/// After SASL: the restarted stream, then bind (RFC 6120 §7) and the legacy session IQ, or the
/// resumption of an earlier session (XEP-0198 §5). Returns whether it was a resumption.
async fn bind<Io>(
    accepted: AcceptedStream<Io>,
    username: &str,
    shared: &Arc<ServerShared>,
    meter: &Meter,
) -> Result<(SessionStream<Io>, Session, bool), ConnectionEnd>
where
    Io: tokio::io::AsyncBufRead + tokio::io::AsyncWrite + Unpin,
{
    let mut features = StreamFeatures {
        bind: Some(BindFeature { required: true }),
        // XEP-0198 §2.
        stream_management: Some(sm::StreamManagement { optional: false }),
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
    // XEP-0352 §2.
    features.others.push(csi::Feature.into());
    features
        .others
        .extend(service_features(&shared.limits.contacts));
    let mut stream: SessionStream<Io> = respond(accepted, shared, &features).await?;
    loop {
        let Some(item) = before_login_deadline(stream.next(), meter).await else {
            return Err(login_timed_out(&mut stream).await);
        };
        let element = match item {
            Some(Ok(SessionElement::Stream(FallibleStreamElement::Ok(element)))) => {
                meter.element_done();
                element
            }
            // Client state belongs to a bound session; before binding there is nothing to hold.
            Some(Ok(SessionElement::Active | SessionElement::Inactive)) => {
                meter.element_done();
                continue;
            }
            Some(Ok(SessionElement::Stream(FallibleStreamElement::Err(_))))
            | Some(Ok(SessionElement::InvalidCsi(_))) => {
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
        let iq = match element {
            XmppStreamElement::Stanza(Stanza::Iq(iq)) => iq,
            // XEP-0198 §3: stream management is enabled after binding.
            XmppStreamElement::SM(sm::Nonza::Enable(_)) => {
                stream
                    .send(&failed(StanzaCondition::UnexpectedRequest))
                    .await?;
                continue;
            }
            XmppStreamElement::SM(sm::Nonza::Resume(resume)) => {
                match resume_session(&mut stream, username, resume, shared).await? {
                    Some(session) => return Ok((stream, session, true)),
                    None => continue,
                }
            }
            _ => {
                return Err(fail(
                    &mut stream,
                    StreamCondition::NotAuthorized,
                    "bind a resource first",
                )
                .await)
            }
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
                let session = Session {
                    jid,
                    id: session_id,
                    inbox,
                    sm: None,
                    resume: None,
                    csi: ClientState::default(),
                };
                return Ok((stream, session, false));
            }
            Ok(None) => send_error(&mut stream, &iq, StanzaCondition::BadRequest).await?,
            Err(_) => return Err(ConnectionEnd::Shutdown),
        }
    }
}

/// A `<failed/>` answer (XEP-0198 §3, §5) with `condition`.
fn failed(condition: StanzaCondition) -> sm::Failed {
    sm::Failed {
        h: None,
        error: Some(condition),
    }
}

/// How long a resuming connection waits for the session's holder, which may be in the middle
/// of a write to its old connection.
fn takeover_wait(shared: &ServerShared) -> Duration {
    write_stall_limit(shared) + Duration::from_secs(2)
}

/// XEP-0198 §5: `<resume/>` instead of bind. `None` (after `<failed><item-not-found/>`) when
/// `username` has no resumable session with that id: an unknown id, an expired one and another
/// account's get the same answer. An `h` beyond what the session sent ends it for good, with
/// `handled-count-too-high` (§4).
async fn resume_session<Io>(
    stream: &mut SessionStream<Io>,
    username: &str,
    resume: sm::Resume,
    shared: &ServerShared,
) -> Result<Option<Session>, ConnectionEnd>
where
    Io: tokio::io::AsyncBufRead + tokio::io::AsyncWrite + Unpin,
{
    let taken = async {
        let holder = shared.resumptions.find(username, &resume.previd.0)?;
        let (reply, handover) = oneshot::channel();
        holder.send(reply).await.ok()?;
        handover.await.ok()
    };
    let Some(mut handover) = tokio::time::timeout(takeover_wait(shared), taken)
        .await
        .ok()
        .flatten()
    else {
        stream.send(&failed(StanzaCondition::ItemNotFound)).await?;
        return Ok(None);
    };
    if let Err(too_high) = handover.sm.resume(resume.h) {
        let session = Session::adopt(handover, username, shared);
        end_session(session, username, shared).await;
        return Err(fail_with(stream, too_high.into()).await);
    }
    let handled = handover.sm.handled;
    let session = Session::adopt(handover, username, shared);
    stream
        .send(&sm::Resumed {
            h: handled,
            previd: resume.previd,
        })
        .await?;
    Ok(Some(session))
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

/// A presence that xmpp-parsers refused only for its `<show>`, taken with its addressing and
/// type but without its payloads; `None` for anything else.
///
/// go-xmpp (go-sendxmpp, and bots written with it) sends `<show></show>` in its available
/// presence. RFC 6121 §4.7.2.1 allows only away, chat, dnd and xa there, so the whole stanza
/// does not parse; answering it with `bad-request` would leave such a client unavailable for
/// good (messages to its bare JID would all go to offline storage), while Prosody and ejabberd
/// take it. So it counts as a presence without a show; its status and priority are lost with
/// the rest of the payloads, which cannot be read back once parsing failed. Only available and
/// unavailable presence without a `from` is taken this way.
fn presence_without_show(
    kind: &str,
    header: &RawStanzaHeader,
    error: &xso::error::Error,
) -> Option<Stanza> {
    if kind != "presence" || classify_parse(error) != Some(Upstream::InvalidShow) {
        return None;
    }
    let type_ = match header.type_.as_deref() {
        None => PresenceType::None,
        Some("unavailable") => PresenceType::Unavailable,
        Some(_) => return None,
    };
    if header.from.is_some() {
        return None;
    }
    let mut presence = Presence::new(type_);
    presence.to = match header.to.as_deref() {
        None => None,
        Some(to) => Some(Jid::new(to).ok()?),
    };
    presence.id = header.id.clone();
    Some(presence.into())
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
/// the hub's deliveries) forever: a write that cannot finish in time ends the connection (and a
/// resumable session hibernates).
async fn write<Io>(
    stream: &mut SessionStream<Io>,
    stanza: &Stanza,
    jid: &FullJid,
    limit: Duration,
) -> Result<(), LoopEnd>
where
    Io: tokio::io::AsyncBufRead + tokio::io::AsyncWrite + Unpin,
{
    match tokio::time::timeout(limit, stream.send(stanza)).await {
        Ok(result) => Ok(result?),
        Err(_) => {
            tracing::info!(%jid, "client stopped reading; closing the connection");
            let text = "not reading fast enough";
            Err(LoopEnd::LinkLost(
                fail(stream, StreamCondition::PolicyViolation, text).await,
            ))
        }
    }
}

/// Writes a stanza, keeping it until the client acknowledges it when stream management is on.
/// With `max_unacked` stanzas unacknowledged (or others already waiting), it waits in the queue
/// instead, and the loop writes it when the client's acks make room (see [`session_loop`]).
/// The stanza stays in the hub's box until it moves into the queue: the futures on the way
/// then hold a pointer rather than a stanza, which keeps every session's loop smaller.
async fn send_stanza<Io>(
    stream: &mut SessionStream<Io>,
    session: &mut Session,
    stanza: Box<Stanza>,
    shared: &ServerShared,
) -> Result<(), LoopEnd>
where
    Io: tokio::io::AsyncBufRead + tokio::io::AsyncWrite + Unpin,
{
    let limit = write_stall_limit(shared);
    let Some(sm) = &mut session.sm else {
        return write(stream, &stanza, &session.jid, limit).await;
    };
    if sm.has_pending() || sm.is_full(shared.limits.max_unacked) {
        sm.push_pending(*stanza);
        return Ok(());
    }
    let stanza = sm.push_written(*stanza);
    write(stream, stanza, &session.jid, limit).await
}

/// A stanza from the hub, held back if the client is inactive and it is a presence update.
async fn deliver<Io>(
    stream: &mut SessionStream<Io>,
    session: &mut Session,
    stanza: Box<Stanza>,
    shared: &ServerShared,
) -> Result<(), LoopEnd>
where
    Io: tokio::io::AsyncBufRead + tokio::io::AsyncWrite + Unpin,
{
    match session.csi.filter(stanza, shared.limits.max_held_presences) {
        Filtered::Send(stanza) => send_stanza(stream, session, stanza, shared).await,
        Filtered::Held => Ok(()),
        Filtered::Flush(all) => {
            for stanza in all {
                send_stanza(stream, session, stanza, shared).await?;
            }
            Ok(())
        }
    }
}

/// Stored offline messages, in order: with stream management they join the queue and the loop
/// writes them as `max_unacked` allows; without, they are written at once.
async fn send_batch<Io>(
    stream: &mut SessionStream<Io>,
    session: &mut Session,
    stanzas: Vec<Stanza>,
    shared: &ServerShared,
) -> Result<(), LoopEnd>
where
    Io: tokio::io::AsyncBufRead + tokio::io::AsyncWrite + Unpin,
{
    match &mut session.sm {
        Some(sm) => stanzas.into_iter().for_each(|s| sm.push_pending(s)),
        None => {
            let limit = write_stall_limit(shared);
            for stanza in &stanzas {
                write(stream, stanza, &session.jid, limit).await?;
            }
        }
    }
    Ok(())
}

/// Writes what waits in the queue (after a resumption, or for room), as far as
/// `max_unacked` allows.
async fn write_pending<Io>(
    stream: &mut SessionStream<Io>,
    session: &mut Session,
    shared: &ServerShared,
) -> Result<(), LoopEnd>
where
    Io: tokio::io::AsyncBufRead + tokio::io::AsyncWrite + Unpin,
{
    let limit = write_stall_limit(shared);
    let max = shared.limits.max_unacked;
    let Some(sm) = &mut session.sm else {
        return Ok(());
    };
    while !sm.is_full(max) {
        let Some(stanza) = sm.next_pending() else {
            break;
        };
        write(stream, stanza, &session.jid, limit).await?;
    }
    Ok(())
}

/// Asks the client for an ack at the end of a burst, or when stanzas wait for room (see
/// `sm.rs`).
async fn request_ack<Io>(
    stream: &mut SessionStream<Io>,
    session: &mut Session,
) -> Result<(), LoopEnd>
where
    Io: tokio::io::AsyncBufRead + tokio::io::AsyncWrite + Unpin,
{
    let Some(sm) = &mut session.sm else {
        return Ok(());
    };
    if (session.inbox.is_empty() || sm.has_pending()) && sm.request() {
        stream.send(&sm::R).await?;
    }
    Ok(())
}

/// A stream management nonza from the bound client (XEP-0198 §3, §4).
async fn handle_sm<Io>(
    stream: &mut SessionStream<Io>,
    session: &mut Session,
    nonza: sm::Nonza,
    username: &str,
    shared: &ServerShared,
) -> Result<(), LoopEnd>
where
    Io: tokio::io::AsyncBufRead + tokio::io::AsyncWrite + Unpin,
{
    match nonza {
        sm::Nonza::Enable(enable) => {
            // §3: once per stream.
            if session.sm.is_some() {
                stream
                    .send(&failed(StanzaCondition::UnexpectedRequest))
                    .await?;
                return Ok(());
            }
            session.sm = Some(SmState::default());
            let limits = &shared.limits;
            // §5: the client may ask for a shorter time than ours, never a longer one.
            let timeout = enable
                .max
                .map(|max| Duration::from_secs(max.into()))
                .map_or(limits.resume_timeout, |max| max.min(limits.resume_timeout));
            let mut enabled = sm::Enabled {
                id: None,
                location: None,
                max: None,
                resume: false,
            };
            if enable.resume && !timeout.is_zero() {
                let token = new_token();
                let (holder, takeover) = mpsc::channel(1);
                let max = limits.max_resumable_per_account;
                if shared
                    .resumptions
                    .register(username, &token, holder.clone(), max)
                {
                    enabled.id = Some(sm::StreamId(token.clone()));
                    enabled.max = Some(u32::try_from(timeout.as_secs()).unwrap_or(u32::MAX));
                    enabled.resume = true;
                    session.resume = Some(Resume {
                        token,
                        timeout,
                        takeover,
                        holder,
                    });
                } else {
                    tracing::info!(jid = %session.jid, "stream management without resumption: \
                        the account has {max} resumable sessions");
                }
            }
            tracing::debug!(jid = %session.jid, resume = enabled.resume, "stream management enabled");
            stream.send(&enabled).await?;
        }
        // Before `<enable/>` there is nothing to count: ignored, as Prosody does.
        sm::Nonza::Req(_) => {
            if let Some(sm) = &session.sm {
                stream.send(&sm::A::new(sm.handled)).await?;
            }
        }
        sm::Nonza::Ack(ack) => {
            if let Some(sm) = &mut session.sm {
                if let Err(too_high) = sm.acknowledge(ack.h) {
                    tracing::info!(jid = %session.jid, "the client acknowledged {} stanzas; it was sent {}",
                        too_high.h, too_high.send_count);
                    return Err(LoopEnd::Closed(fail_with(stream, too_high.into()).await));
                }
                request_ack(stream, session).await?;
            }
        }
        // §5: a session is resumed instead of binding, not after.
        sm::Nonza::Resume(_) => {
            stream
                .send(&failed(StanzaCondition::UnexpectedRequest))
                .await?;
        }
        sm::Nonza::Enabled(_) | sm::Nonza::Resumed(_) | sm::Nonza::Failed(_) => {
            let text = "only the server sends that";
            return Err(LoopEnd::Closed(
                fail(stream, StreamCondition::UnsupportedStanzaType, text).await,
            ));
        }
    }
    Ok(())
}

/// What the session loop waits for.
#[allow(clippy::large_enum_variant)] // The element moves through; boxing would allocate.
enum Event {
    Shutdown,
    AckOverdue,
    Takeover(Takeover),
    Outbound(Option<Outbound>),
    Element(Option<Result<SessionElement, ReadError>>),
}

/// Hands a stanza the client sent to the hub, counting it as handled (XEP-0198).
async fn to_hub(
    session: &mut Session,
    stanza: Stanza,
    shared: &ServerShared,
) -> Result<(), LoopEnd> {
    if let Some(sm) = &mut session.sm {
        sm.received();
    }
    let command = HubCommand::Stanza {
        jid: session.jid.clone(),
        id: session.id,
        stanza: Box::new(stanza),
    };
    if shared.hub.send(command).await.is_err() {
        return Err(LoopEnd::Closed(ConnectionEnd::Shutdown));
    }
    Ok(())
}

/// The bound session until it ends: the client's stanzas to the hub, the hub's to the client.
async fn session_loop<Io>(
    stream: &mut SessionStream<Io>,
    session: &mut Session,
    username: &str,
    shared: &ServerShared,
    meter: &Meter,
    shutdown: &CancellationToken,
) -> Result<Infallible, LoopEnd>
where
    Io: tokio::io::AsyncBufRead + tokio::io::AsyncWrite + Unpin,
{
    let mut pinged = false;
    // Since when stanzas wait for the client's acks to make room, and its count of acks then.
    let mut blocked: Option<(tokio::time::Instant, u32)> = None;
    loop {
        // What waits in the queue: after a resumption, the stanzas the client had not
        // acknowledged (XEP-0198 §5); otherwise what did not fit under `max_unacked`.
        write_pending(stream, session, shared).await?;
        request_ack(stream, session).await?;
        // While stanzas wait, the hub's queue is not read (it fills, and the hub cuts the
        // session off if it overflows), and the client must acknowledge something within the
        // write stall limit.
        let waiting = session.sm.as_ref().filter(|sm| sm.has_pending());
        blocked = match (waiting, blocked) {
            (None, _) => None,
            (Some(sm), Some((since, acked))) if sm.acked == acked => Some((since, acked)),
            (Some(sm), _) => Some((tokio::time::Instant::now(), sm.acked)),
        };
        let ack_due = blocked.map(|(since, _)| since + write_stall_limit(shared));
        let event = tokio::select! {
            _ = shutdown.cancelled() => Event::Shutdown,
            request = takeover(&mut session.resume) => Event::Takeover(request),
            outbound = session.inbox.recv(), if ack_due.is_none() => Event::Outbound(outbound),
            _ = tokio::time::sleep_until(ack_due.unwrap_or_else(tokio::time::Instant::now)),
                if ack_due.is_some() => Event::AckOverdue,
            element = stream.next() => Event::Element(element),
        };
        let element = match event {
            Event::Shutdown => {
                let text = "the server is shutting down";
                fail(stream, StreamCondition::SystemShutdown, text).await;
                return Err(LoopEnd::Closed(ConnectionEnd::Shutdown));
            }
            Event::Takeover(request) => return Err(LoopEnd::TakenOver(request)),
            Event::AckOverdue => {
                tracing::info!(jid = %session.jid, "too many unacknowledged stanzas; closing the session");
                let text = "too many unacknowledged stanzas";
                return Err(LoopEnd::Closed(
                    fail(stream, StreamCondition::PolicyViolation, text).await,
                ));
            }
            Event::Outbound(outbound) => {
                match outbound {
                    Some(Outbound::Stanza(stanza)) => {
                        deliver(stream, session, stanza, shared).await?
                    }
                    // Stored offline messages: not presence, nothing to hold back.
                    Some(Outbound::Batch(stanzas)) => {
                        send_batch(stream, session, stanzas, shared).await?
                    }
                    Some(Outbound::Close(CloseReason::Conflict)) => {
                        let text = "replaced by a new session";
                        return Err(LoopEnd::Closed(
                            fail(stream, StreamCondition::Conflict, text).await,
                        ));
                    }
                    // The hub dropped this session's queue because it was full.
                    None => {
                        let text = "not reading fast enough";
                        return Err(LoopEnd::Closed(
                            fail(stream, StreamCondition::PolicyViolation, text).await,
                        ));
                    }
                }
                request_ack(stream, session).await?;
                continue;
            }
            Event::Element(element) => element,
        };
        let element = match element {
            Some(Ok(element)) => {
                meter.element_done();
                pinged = false;
                element
            }
            Some(Err(ReadError::SoftTimeout)) if !pinged => {
                // XEP-0199: a quiet client is asked whether it is still there.
                pinged = true;
                let ping = Iq::from_get(format!("ping-{:x}", rand::random::<u32>()), Ping)
                    .with_to(session.jid.clone().into());
                stream.send(&XmppStreamElement::Stanza(ping.into())).await?;
                continue;
            }
            // The connection ended without `</stream:stream>` (the parser calls that malformed
            // XML): the link died.
            Some(Err(ReadError::HardError(_))) if meter.transport_ended() => {
                return Err(LoopEnd::LinkLost(ConnectionEnd::ClientClosed))
            }
            Some(Err(error)) => return Err(read_end(read_failed(stream, error, meter).await)),
            None => return Err(LoopEnd::LinkLost(ConnectionEnd::ClientClosed)),
        };
        match element {
            SessionElement::Stream(FallibleStreamElement::Ok(XmppStreamElement::Stanza(
                stanza,
            ))) => {
                if !from_is_own(&stanza, &session.jid) {
                    let text = "from must be your own JID";
                    return Err(LoopEnd::Closed(
                        fail(stream, StreamCondition::InvalidFrom, text).await,
                    ));
                }
                to_hub(session, stanza, shared).await?;
            }
            SessionElement::Stream(FallibleStreamElement::Ok(XmppStreamElement::SM(nonza))) => {
                handle_sm(stream, session, nonza, username, shared).await?
            }
            SessionElement::Stream(FallibleStreamElement::Ok(_)) => {
                let text = "not a stanza";
                return Err(LoopEnd::Closed(
                    fail(stream, StreamCondition::UnsupportedStanzaType, text).await,
                ));
            }
            SessionElement::Stream(FallibleStreamElement::Err(
                StreamElementError::InvalidStanza {
                    name,
                    header,
                    error,
                    ..
                },
            )) => {
                if let Some(presence) = presence_without_show(&name.to_string(), &header, &error) {
                    // It has no `from`: nothing to check.
                    to_hub(session, presence, shared).await?;
                    continue;
                }
                // Answered, so handled: XEP-0198 counts it.
                if let Some(sm) = &mut session.sm {
                    sm.received();
                }
                tracing::debug!(jid = %session.jid, "invalid {name}: {error}");
                match invalid_stanza_reply(&name.to_string(), &header, &session.jid) {
                    Some(reply) => stream.send(&XmppStreamElement::Stanza(reply)).await?,
                    None => {
                        let text = format!("invalid {name}: {error}");
                        return Err(LoopEnd::Closed(
                            fail(stream, StreamCondition::InvalidXml, &text).await,
                        ));
                    }
                }
            }
            SessionElement::Stream(FallibleStreamElement::Err(
                StreamElementError::InvalidNonza { error, .. },
            ))
            | SessionElement::InvalidCsi(error) => {
                return Err(LoopEnd::Closed(
                    fail(stream, StreamCondition::InvalidXml, &error.to_string()).await,
                ));
            }
            SessionElement::Inactive => session.csi.inactive(),
            SessionElement::Active => {
                for stanza in session.csi.active() {
                    send_stanza(stream, session, stanza, shared).await?;
                }
                request_ack(stream, session).await?;
            }
        }
    }
}
