//! External components (XEP-0114, the Jabber Component Protocol): gateways and bots that run as
//! a program of their own and serve a domain of their own (`gateway.example.org`) through this
//! server, on a listener of their own (`--listen-component`, 127.0.0.1:5347 by default, the
//! port Prosody and ejabberd use; off unless `--component` names one).
//!
//! ```text
//! component                                     server
//! <stream:stream xmlns='jabber:component:accept' to='NAME'>
//!                                               <stream:stream from='NAME' id='ID'>
//! <handshake>hex(SHA-1(ID + secret))</handshake>
//!                                               <handshake/>            (or not-authorized)
//! stanzas from NAME or user@NAME/…  ⇄  stanzas to NAME or …@NAME… from everyone
//! ```
//!
//! | file | what it does |
//! |---|---|
//! | `mod.rs` | the listener and the connection task: admission, handshake deadline, session loop |
//! | `handshake.rs` | which component a header asks for, and the secret's check (constant time) |
//! | `stream.rs` | the component's XML stream (tokio-xmpp's cannot read it, see there) |
//!
//! The routing is the hub's (`hub/components.rs`, rules in `hub/router.rs`).
//!
//! Choices, and why:
//! - **Secrets** come from files (`--component NAME=FILE`), never from the command line, and
//!   are never logged ([`Secret`](crate::secret::Secret) prints `***`).
//! - **Plain TCP**, as XEP-0114 is: the handshake proves the secret without sending it, but the
//!   stanzas travel in clear text. The listener is on loopback unless told otherwise, and a
//!   warning is logged for any other address.
//! - **Failed handshakes** count as failed logins of the address: the answer (`not-authorized`)
//!   waits the same growing delay (`ServerShared::login_failed`), so guessing a secret is as
//!   slow as guessing a password. A connection counts among its address's connections that have
//!   not logged in until its handshake succeeds, and has `--auth-timeout` to get there.
//! - **One connection per component**: a second one that authenticates while the first lasts is
//!   refused with `conflict` (Prosody's default, `kick_new`); the first stays. A component whose
//!   link died unseen is found out by the idle ping (`--idle-ping`), after which it can connect
//!   again.
//! - **Limits** are a client's: stanza size, nesting, elements, and the byte rate, which
//!   `--unthrottled NAME` lifts as it does for an account (a gateway that speaks for many
//!   users may need it, as the bot does).
//! - An unknown `to` gets `host-unknown` and no `to` gets `improper-addressing`, as in Prosody.

mod handshake;
mod stream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::BufReader;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_xmpp::jid::Jid;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::{Id as MessageId, Message, MessageType};
use tokio_xmpp::parsers::ping::Ping;
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};
use tokio_xmpp::parsers::stream_error::{DefinedCondition as StreamCondition, StreamError};
use tokio_xmpp::Stanza;

pub use self::handshake::ComponentSpec;
use self::handshake::{lookup, verify};
use self::stream::{ComponentStream, Incoming, ReadFailure};
use super::hub::{sender_in_domain, ComponentRefused};
use super::limits::{LimitedReader, Meter};
use super::shared::{HubCommand, Outbound, ServerShared};
use super::stream::ConnectionEnd;

/// The port external components conventionally connect to (Prosody's and ejabberd's default).
pub const DEFAULT_PORT: u16 = 5347;

/// Stanzas waiting for a component before it counts as not reading. Larger than a client's
/// queue: one component speaks for many users.
const OUTBOX_CAPACITY: usize = 1024;

/// Read buffer of a component connection.
const READ_BUFFER: usize = 4096;

/// Longest a write to a component may stall before the connection is closed.
const MAX_WRITE_STALL: Duration = Duration::from_secs(30);

/// The external components a server accepts, and where they connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentConfig {
    /// The address of the component listener; it is opened only if `components` is not empty.
    pub listen: SocketAddr,
    /// The components, each with its domain and secret.
    pub components: Vec<ComponentSpec>,
}

impl Default for ComponentConfig {
    /// No components; the listener would be 127.0.0.1:5347.
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
            components: Vec::new(),
        }
    }
}

/// Accepts component connections on `listener` until `shutdown`, then closes them (they get
/// `system-shutdown`) and waits for them a moment.
pub(crate) async fn serve(
    listener: TcpListener,
    components: Arc<[ComponentSpec]>,
    shared: Arc<ServerShared>,
    shutdown: CancellationToken,
) {
    if let Ok(address) = listener.local_addr() {
        let domains: Vec<&str> = components.iter().map(|c| c.domain.as_str()).collect();
        tracing::info!(%address, components = ?domains, "listening for external components");
        if !address.ip().is_loopback() {
            tracing::warn!(
                %address,
                "external components speak plain TCP (XEP-0114): their stanzas can be read on \
                 the way; listen on a loopback or private address"
            );
        }
    }
    let mut connections = tokio::task::JoinSet::new();
    crate::accept::bounded(
        &listener,
        shared.limits.max_connections,
        shutdown.clone(),
        &mut connections,
        "XMPP components",
        |tcp, peer| {
            let _ = tcp.set_nodelay(true);
            connection(
                tcp,
                peer,
                components.clone(),
                shared.clone(),
                shutdown.clone(),
            )
        },
    )
    .await;
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(3), drain)
        .await
        .is_err()
    {
        connections.abort_all();
    }
}

/// Serves one component connection until it ends, and logs how it ended.
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    components: Arc<[ComponentSpec]>,
    shared: Arc<ServerShared>,
    shutdown: CancellationToken,
) {
    match run(tcp, peer, &components, &shared, shutdown).await {
        Ok(()) | Err(ConnectionEnd::ClientClosed) | Err(ConnectionEnd::Shutdown) => {
            tracing::debug!(%peer, "component connection closed")
        }
        Err(end) => tracing::info!(%peer, "component connection ended: {end}"),
    }
}

type Io = BufReader<LimitedReader<TcpStream>>;

async fn run(
    tcp: TcpStream,
    peer: SocketAddr,
    components: &[ComponentSpec],
    shared: &Arc<ServerShared>,
    shutdown: CancellationToken,
) -> Result<(), ConnectionEnd> {
    let limits = &shared.limits;
    let meter = Meter::new(limits.max_preauth_bytes, limits);
    let io = BufReader::with_capacity(
        READ_BUFFER,
        LimitedReader::new(
            tcp,
            meter.clone(),
            limits.bytes_per_second,
            limits.burst_bytes,
        ),
    );
    let mut stream = ComponentStream::new(io, meter.clone(), &shared.domain);
    let stream_id = format!("{:016x}", rand::random::<u64>());
    let Some(unauthenticated) = shared.admit(peer) else {
        let text = format!(
            "too many connections from {} that have not logged in",
            peer.ip()
        );
        return Err(refuse(&mut stream, StreamCondition::PolicyViolation, &text).await);
    };
    let deadline = Instant::now() + limits.auth_timeout;
    let attempt = tokio::select! {
        attempt = tokio::time::timeout_at(
            deadline,
            Box::pin(authenticate(&mut stream, components, &stream_id)),
        ) => attempt,
        _ = shutdown.cancelled() => return Err(ConnectionEnd::Shutdown),
    };
    let spec = match attempt {
        Ok(Ok(Handshake::Accepted(spec))) => spec,
        Ok(Ok(Handshake::Wrong(spec))) => {
            // A failed login: the answer waits, more after each failure from this address.
            tokio::select! {
                _ = tokio::time::sleep(shared.login_failed(peer)) => {}
                _ = shutdown.cancelled() => return Err(ConnectionEnd::Shutdown),
            }
            tracing::info!(%peer, component = %spec.domain, "component handshake failed");
            let text = "the handshake does not match the secret";
            return Err(refuse(&mut stream, StreamCondition::NotAuthorized, text).await);
        }
        Ok(Err(end)) => return Err(end),
        Err(_) => {
            let text = "the time to complete the handshake is over";
            refuse(&mut stream, StreamCondition::ConnectionTimeout, text).await;
            return Err(ConnectionEnd::AuthTimeout);
        }
    };
    shared.login_succeeded(peer);

    let id = rand::random::<u64>();
    let (outbox, inbox) = mpsc::channel(OUTBOX_CAPACITY);
    let (reply, answer) = oneshot::channel();
    let connect = HubCommand::ComponentConnect {
        domain: spec.domain.clone(),
        id,
        outbox,
        reply,
    };
    shared
        .hub
        .send(connect)
        .await
        .map_err(|_| ConnectionEnd::Shutdown)?;
    match answer.await {
        Ok(Ok(())) => {}
        Ok(Err(ComponentRefused::AlreadyConnected)) => {
            tracing::warn!(%peer, component = %spec.domain, "refused a second connection of a component");
            let text = "this component is connected already";
            return Err(refuse(&mut stream, StreamCondition::Conflict, text).await);
        }
        Ok(Err(ComponentRefused::Unknown)) => {
            let text = "not an external component of this server";
            return Err(refuse(&mut stream, StreamCondition::HostUnknown, text).await);
        }
        Err(_) => return Err(ConnectionEnd::Shutdown),
    }
    drop(unauthenticated);
    meter.set_limit(limits.max_stanza_bytes);
    if limits
        .unthrottled
        .iter()
        .any(|name| name == spec.domain.as_str())
    {
        meter.unthrottle();
    }
    tracing::info!(%peer, component = %spec.domain, "component connected");
    let result = match stream.send_handshake_accepted().await {
        Ok(()) => Box::pin(session(&mut stream, spec, id, inbox, shared, shutdown)).await,
        Err(error) => Err(error.into()),
    };
    let disconnect = HubCommand::ComponentDisconnect {
        domain: spec.domain.clone(),
        id,
    };
    let _ = shared.hub.send(disconnect).await;
    tracing::info!(%peer, component = %spec.domain, "component disconnected");
    result
}

/// How a handshake went.
enum Handshake<'a> {
    /// The component proved the secret of this component.
    Accepted(&'a ComponentSpec),
    /// It did not.
    Wrong(&'a ComponentSpec),
}

/// Header, our header, handshake (XEP-0114 §3). Refusals other than a wrong handshake are
/// answered here.
async fn authenticate<'a>(
    stream: &mut ComponentStream<Io>,
    components: &'a [ComponentSpec],
    stream_id: &str,
) -> Result<Handshake<'a>, ConnectionEnd> {
    let header = match stream.read_header().await {
        Ok(header) => header,
        Err(failure) => return Err(read_failed(stream, failure).await),
    };
    let spec = match lookup(components, header.to.as_deref()) {
        Ok(spec) => spec,
        Err(refusal) => return Err(refuse(stream, refusal.condition, &refusal.text).await),
    };
    stream.send_header(spec.domain.as_str(), stream_id).await?;
    match stream.next().await {
        Ok(Incoming::Handshake(token)) => Ok(if verify(stream_id, &spec.secret, &token) {
            Handshake::Accepted(spec)
        } else {
            Handshake::Wrong(spec)
        }),
        Ok(_) => {
            let text = "send the handshake first";
            Err(refuse(stream, StreamCondition::NotAuthorized, text).await)
        }
        Err(failure) => Err(read_failed(stream, failure).await),
    }
}

/// Sends a stream error, closes, and says so for the log.
async fn refuse(
    stream: &mut ComponentStream<Io>,
    condition: StreamCondition,
    text: &str,
) -> ConnectionEnd {
    let error: Element = StreamError::new(condition.clone(), "en", "").into();
    let name = error
        .children()
        .next()
        .map(|c| c.name().to_string())
        .unwrap_or_default();
    stream.fail(condition, text).await;
    ConnectionEnd::StreamError(name)
}

/// Answers a read that failed.
async fn read_failed(stream: &mut ComponentStream<Io>, failure: ReadFailure) -> ConnectionEnd {
    match failure {
        ReadFailure::Closed => {
            stream.close().await;
            ConnectionEnd::ClientClosed
        }
        ReadFailure::Refused(condition, text) => refuse(stream, condition, &text).await,
        ReadFailure::Io(error) => ConnectionEnd::Io(error),
    }
}

/// The authenticated component until its connection ends: its stanzas to the hub, the hub's to
/// it, an idle ping when it goes quiet.
async fn session(
    stream: &mut ComponentStream<Io>,
    spec: &ComponentSpec,
    id: u64,
    mut inbox: mpsc::Receiver<Outbound>,
    shared: &ServerShared,
    shutdown: CancellationToken,
) -> Result<(), ConnectionEnd> {
    let domain = &spec.domain;
    let idle = shared.limits.idle_ping_after;
    let stall = idle.min(MAX_WRITE_STALL);
    let mut quiet_since = Instant::now();
    let mut pinged = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                let text = "the server is shutting down";
                refuse(stream, StreamCondition::SystemShutdown, text).await;
                return Err(ConnectionEnd::Shutdown);
            }
            outbound = inbox.recv() => {
                let stanzas = match outbound {
                    Some(Outbound::Stanza(stanza)) => vec![*stanza],
                    Some(Outbound::Batch(stanzas)) => stanzas,
                    Some(Outbound::Close(_)) => {
                        let text = "replaced by a new connection";
                        return Err(refuse(stream, StreamCondition::Conflict, text).await);
                    }
                    // The hub dropped the queue because it was full.
                    None => {
                        let text = "not reading fast enough";
                        return Err(refuse(stream, StreamCondition::PolicyViolation, text).await);
                    }
                };
                for stanza in stanzas {
                    match tokio::time::timeout(stall, stream.send_stanza(&stanza)).await {
                        Ok(result) => result?,
                        Err(_) => {
                            tracing::info!(component = %domain, "component stopped reading; closing");
                            let text = "not reading fast enough";
                            return Err(refuse(stream, StreamCondition::PolicyViolation, text).await);
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(quiet_since + idle) => {
                if pinged {
                    let text = "idle for too long";
                    return Err(refuse(stream, StreamCondition::ConnectionTimeout, text).await);
                }
                // XEP-0199: a quiet component is asked whether it is still there.
                pinged = true;
                quiet_since = Instant::now();
                let ping = Iq::from_get(format!("ping-{:x}", rand::random::<u32>()), Ping)
                    .with_from(Jid::new(&shared.domain).map_err(|_| ConnectionEnd::Shutdown)?)
                    .with_to(domain.clone().into());
                stream.send_stanza(&ping.into()).await?;
            }
            incoming = stream.next() => {
                quiet_since = Instant::now();
                pinged = false;
                match incoming {
                    Ok(Incoming::Stanza(mut stanza)) => {
                        // XEP-0114 §3: a component speaks for its own domain only.
                        if !sender_in_domain(&mut stanza, domain) {
                            let text = format!("a component may only send from {domain} or an address at it");
                            return Err(refuse(stream, StreamCondition::InvalidFrom, &text).await);
                        }
                        let command = HubCommand::ComponentStanza {
                            domain: domain.clone(),
                            id,
                            stanza,
                        };
                        if shared.hub.send(command).await.is_err() {
                            return Err(ConnectionEnd::Shutdown);
                        }
                    }
                    Ok(Incoming::Invalid(element, error)) => {
                        tracing::debug!(component = %domain, "invalid {}: {error}", element.name());
                        match invalid_stanza_reply(&element) {
                            Some(reply) => stream.send_stanza(&reply).await?,
                            None => {
                                let text = format!("invalid {}: {error}", element.name());
                                return Err(refuse(stream, StreamCondition::InvalidXml, &text).await);
                            }
                        }
                    }
                    Ok(Incoming::StreamError) => {
                        stream.close().await;
                        return Err(ConnectionEnd::ClientClosed);
                    }
                    Ok(Incoming::Handshake(_)) => {
                        let text = "the handshake is done already";
                        return Err(refuse(stream, StreamCondition::NotAuthorized, text).await);
                    }
                    Ok(Incoming::Other(name)) => {
                        let text = format!("<{name}> is not a stanza");
                        return Err(refuse(stream, StreamCondition::UnsupportedStanzaType, &text).await);
                    }
                    Err(failure) => return Err(read_failed(stream, failure).await),
                }
            }
        }
    }
}

/// The `bad-request` reply to a stanza that did not parse, from the attributes it has; `None`
/// when RFC 6120 §8.3.1 forbids one (an error, an IQ result, an IQ without id).
fn invalid_stanza_reply(element: &Element) -> Option<Stanza> {
    let jid = |name: &str| element.attr(name).and_then(|value| Jid::new(value).ok());
    let (to, from) = (jid("from"), jid("to"));
    let id = element.attr("id").map(str::to_string);
    let kind = element.attr("type");
    let error = StanzaError {
        texts: Default::default(),
        ..StanzaError::new(ErrorType::Modify, DefinedCondition::BadRequest, "en", "")
    };
    match element.name() {
        "iq" => {
            let id = id.filter(|id| !id.is_empty())?;
            matches!(kind, Some("get") | Some("set")).then(|| {
                Iq::Error {
                    from,
                    to,
                    id,
                    error,
                    payload: None,
                }
                .into()
            })
        }
        "message" if kind != Some("error") => {
            let mut reply = Message::new_with_type(MessageType::Error, to);
            reply.from = from;
            reply.id = id.map(MessageId);
            Some(reply.with_payload(error).into())
        }
        "presence" if kind != Some("error") => {
            let mut reply = Presence::new(PresenceType::Error);
            reply.from = from;
            reply.to = to;
            reply.id = id;
            reply.payloads.push(error.into());
            Some(reply.into())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn element(xml: &str) -> Element {
        xml.parse().unwrap()
    }

    #[test]
    fn a_stanza_that_does_not_parse_is_answered_with_bad_request_where_rfc_6120_allows() {
        // An IQ get with two children does not parse; its attributes still give the reply.
        let iq = element(
            "<iq xmlns='jabber:client' type='get' id='q' from='a@gw.localhost' to='alice@localhost'><a xmlns='x'/><b xmlns='x'/></iq>",
        );
        let Some(Stanza::Iq(Iq::Error {
            id,
            to,
            from,
            error,
            ..
        })) = invalid_stanza_reply(&iq)
        else {
            panic!("no IQ error");
        };
        assert_eq!(id, "q");
        assert_eq!(to, Some(Jid::new("a@gw.localhost").unwrap()));
        assert_eq!(from, Some(Jid::new("alice@localhost").unwrap()));
        assert_eq!(error.defined_condition, DefinedCondition::BadRequest);
        let message =
            element("<message xmlns='jabber:client' type='bogus' id='m' from='gw.localhost'/>");
        assert!(matches!(
            invalid_stanza_reply(&message),
            Some(Stanza::Message(Message {
                type_: MessageType::Error,
                ..
            }))
        ));
        let presence = element("<presence xmlns='jabber:client' type='bogus'/>");
        assert!(matches!(
            invalid_stanza_reply(&presence),
            Some(Stanza::Presence(_))
        ));
        // Never an answer to an error, an IQ result, or an IQ without id.
        for xml in [
            "<message xmlns='jabber:client' type='error'/>",
            "<presence xmlns='jabber:client' type='error'/>",
            "<iq xmlns='jabber:client' type='result' id='r'/>",
            "<iq xmlns='jabber:client' type='get'/>",
            "<iq xmlns='jabber:client' type='get' id=''/>",
        ] {
            assert!(invalid_stanza_reply(&element(xml)).is_none(), "{xml}");
        }
    }
}
