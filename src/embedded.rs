//! An MQTT 3.1.1 broker inside this process, on loopback: what `mqtt2xmpp up` and the tests use
//! so that a fresh machine needs no mosquitto.
//!
//! ```text
//! TcpListener ─accept (Semaphore-bounded)─▶ serve (one task per connection)
//!                                              │ read: CONNECT, PUBLISH, SUBSCRIBE, …
//!                                              ▼
//!                    Hub (one Mutex): Router (subscriptions, retained) + every client's Outbox
//!                                              │ bounded queue per client (packets and bytes)
//!                                              ▼
//!                                    serve writes to the client
//! ```
//!
//! Why not a broker crate: rumqttd 0.20 has no shutdown (its router is an OS thread that never
//! ends, its connection tasks are detached), cannot report the port it got for port 0, only logs
//! a failed bind in `Broker::start`, and adds about 80 crates (axum, hyper, config with five file
//! formats, a Prometheus exporter) even without its default features. rmqtt (about 100 crates,
//! Rust 1.94) and ntex-mqtt (a framework on its own runtime, without routing or retained
//! messages) fit no better. This broker is written on
//! rumqttc's own MQTT 3.1.1 codec (`rumqttc::mqttbytes::v4`), which the bridge already depends
//! on, so the feature adds no crate.
//!
//! What it does:
//! - MQTT 3.1.1 only (an MQTT 5 or 3.1 client gets CONNACK "unacceptable protocol version").
//!   Anonymous: a user name and password are accepted and ignored, which is why it listens on
//!   loopback addresses only.
//! - PUBLISH QoS 0, 1 (PUBACK) and 2 (PUBREC/PUBREL/PUBCOMP, delivered once); subscriptions are
//!   granted at most QoS 1, and delivery is at `min(published, granted)`. An overlapping
//!   subscription gets a message once, at the highest granted QoS.
//! - SUBSCRIBE/UNSUBSCRIBE with `+` and `#`; `$`-topics do not match a leading wildcard.
//! - Retained messages: delivered on subscribe with the retain flag set, and always before any
//!   newer message on the same topic; an empty retained payload clears the topic.
//! - Every session is clean: nothing is kept after a disconnect (`clean_session = 0` is accepted,
//!   but CONNACK says no session is present). A second connection with the same client id takes
//!   over and the first is closed. Last wills are published when a client goes away without
//!   DISCONNECT (not when the broker itself shuts down).
//! - Keep-alive: a client silent for 1.5 × its keep-alive is closed; a connection must send
//!   CONNECT within 10 s.
//!
//! Limits (the defaults of `Limits`): packets up to 1 MiB, 1024 connections (further ones wait
//! in the kernel's accept queue), per client a queue of 8192 packets and 16 MiB, 256
//! subscriptions, 64 unreleased QoS 2 messages; 4096 retained topics and 8 MiB of retained
//! payloads. A client that does not read fast enough for its queue is disconnected rather than
//! buffered without bound. Any malformed or unexpected packet closes that one connection.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::topic::matches;
use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4::{
    ConnAck, ConnectReturnCode, Packet, PubAck, PubComp, PubRec, Publish, SubAck, SubscribeFilter,
    SubscribeReasonCode, UnsubAck,
};
use rumqttc::mqttbytes::{check, valid_filter, Error as CodecError, Protocol, QoS};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use tokio_util::sync::{CancellationToken, DropGuard};

/// How long [`EmbeddedBroker::shutdown`] may take in all.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(2);

/// How long connections get to end by themselves at shutdown before they are aborted.
const DRAIN_LIMIT: Duration = Duration::from_secs(1);

/// Bytes to gather before writing to a client's socket.
const WRITE_BATCH: usize = 64 * 1024;

/// An MQTT broker running inside this process, on loopback.
///
/// Dropping it without [`EmbeddedBroker::shutdown`] also stops it, without waiting.
#[derive(Debug)]
pub struct EmbeddedBroker {
    addr: SocketAddr,
    /// Cancels the accept loop when the broker is shut down or dropped.
    stop: DropGuard,
    task: JoinHandle<()>,
}

/// Why the broker could not start.
#[derive(Debug, Error)]
pub enum EmbeddedError {
    /// The address is not a loopback address: the broker has no authentication.
    #[error(
        "the embedded MQTT broker listens on loopback only, and {0} is not a loopback address \
         (use 127.0.0.1 or [::1])"
    )]
    NotLoopback(SocketAddr),
    /// Something else listens on the address already.
    #[error(
        "cannot start the embedded MQTT broker: {addr} is already in use (is another broker, \
         such as mosquitto, running there?); choose another port"
    )]
    AddrInUse {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// Binding failed for another reason.
    #[error("cannot start the embedded MQTT broker on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the operating system said.
        source: std::io::Error,
    },
}

impl EmbeddedBroker {
    /// Binds `addr` (e.g. 127.0.0.1:1883, or port 0 for a free one) and starts serving on the
    /// current tokio runtime. A port already in use is an Err naming the address (NOT just a log
    /// line).
    pub async fn start(addr: SocketAddr) -> Result<EmbeddedBroker, EmbeddedError> {
        Self::start_with(addr, Limits::default()).await
    }

    /// [`EmbeddedBroker::start`] with other limits.
    async fn start_with(addr: SocketAddr, limits: Limits) -> Result<EmbeddedBroker, EmbeddedError> {
        if !addr.ip().is_loopback() {
            return Err(EmbeddedError::NotLoopback(addr));
        }
        let listener = TcpListener::bind(addr).await.map_err(|source| {
            if source.kind() == std::io::ErrorKind::AddrInUse {
                EmbeddedError::AddrInUse { addr }
            } else {
                EmbeddedError::Bind { addr, source }
            }
        })?;
        let bound = listener
            .local_addr()
            .map_err(|source| EmbeddedError::Bind { addr, source })?;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(accept_loop(listener, limits, shutdown.clone()));
        tracing::info!(address = %bound, "embedded MQTT broker listening");
        Ok(EmbeddedBroker {
            addr: bound,
            stop: shutdown.drop_guard(),
            task,
        })
    }

    /// The bound address (the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, disconnects clients, and returns when everything is down (bounded:
    /// ≤ 2 s).
    pub async fn shutdown(self) {
        drop(self.stop);
        let abort = self.task.abort_handle();
        if tokio::time::timeout(SHUTDOWN_LIMIT, self.task)
            .await
            .is_err()
        {
            // Dropping the accept task's JoinSet aborts every connection with it.
            tracing::warn!("embedded MQTT broker did not stop in time; aborting it");
            abort.abort();
        }
        tracing::info!(address = %self.addr, "embedded MQTT broker stopped");
    }
}

/// Resource limits of one broker. [`Limits::default`] gives the documented defaults.
#[derive(Debug, Clone)]
struct Limits {
    /// Largest packet (its remaining length) a client may send.
    max_packet: usize,
    /// Most simultaneous connections.
    max_connections: usize,
    /// Most packets waiting to be written to one client.
    queue_packets: usize,
    /// Most bytes waiting to be written to one client.
    queue_bytes: usize,
    /// Time a new connection has to send CONNECT.
    connect_timeout: Duration,
    /// Most QoS 2 messages one client may leave unreleased (no PUBREL yet).
    max_qos2_pending: usize,
    /// Subscriptions and retained messages.
    router: RouterLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_packet: 1024 * 1024,
            max_connections: 1024,
            queue_packets: 8192,
            queue_bytes: 16 * 1024 * 1024,
            connect_timeout: Duration::from_secs(10),
            max_qos2_pending: 64,
            router: RouterLimits::default(),
        }
    }
}

/// Limits of the [`Router`].
#[derive(Debug, Clone)]
struct RouterLimits {
    /// Most subscriptions per client.
    max_subscriptions: usize,
    /// Most retained topics.
    max_retained: usize,
    /// Most bytes (topics and payloads) of retained messages.
    max_retained_bytes: usize,
}

impl Default for RouterLimits {
    fn default() -> Self {
        RouterLimits {
            max_subscriptions: 256,
            max_retained: 4096,
            max_retained_bytes: 8 * 1024 * 1024,
        }
    }
}

/// Identifies one connection for the lifetime of the broker.
type ConnId = u64;

/// Accepts connections until shutdown, then closes them all.
async fn accept_loop(listener: TcpListener, limits: Limits, shutdown: CancellationToken) {
    let shared = Arc::new(Shared {
        hub: Mutex::new(Hub::new(limits.router.clone())),
        limits,
    });
    let mut connections = JoinSet::new();
    let mut next_id: ConnId = 0;
    let max_connections = shared.limits.max_connections;
    crate::accept::bounded(
        &listener,
        max_connections,
        shutdown.clone(),
        &mut connections,
        "embedded MQTT broker",
        |tcp, peer| {
            next_id += 1;
            serve(tcp, peer, next_id, shared.clone(), shutdown.clone())
        },
    )
    .await;
    drop(listener);
    tracing::debug!(
        "embedded MQTT broker: closing {} connections",
        connections.len()
    );
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(DRAIN_LIMIT, drain).await.is_err() {
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
}

/// What every connection shares.
struct Shared {
    limits: Limits,
    hub: Mutex<Hub>,
}

impl Shared {
    fn hub(&self) -> MutexGuard<'_, Hub> {
        // The hub's methods do not panic; if one ever did, its state is still consistent
        // enough to keep serving the other clients.
        self.hub.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Why a connection ended.
#[derive(Debug)]
enum End {
    /// The client sent DISCONNECT.
    Disconnect,
    /// The broker is shutting down.
    Shutdown,
    /// Removed by the hub: taken over by a new connection with the same client id, or too slow
    /// to read its queue.
    Removed,
    /// The client closed the connection.
    Closed,
    /// Nothing from the client within 1.5 × keep-alive.
    KeepAlive,
    /// The client broke the protocol.
    Protocol(String),
    /// Reading or writing failed.
    Io(std::io::Error),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Disconnect => f.write_str("sent DISCONNECT"),
            End::Shutdown => f.write_str("broker shutting down"),
            End::Removed => f.write_str("taken over, or too slow to read its messages"),
            End::Closed => f.write_str("closed the connection"),
            End::KeepAlive => f.write_str("silent for 1.5 × keep-alive"),
            End::Protocol(what) => write!(f, "protocol violation: {what}"),
            End::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Why reading a packet failed.
#[derive(Debug)]
enum ReadError {
    Closed,
    Io(std::io::Error),
    Codec(CodecError),
}

/// Reads one packet, buffering at most `max_packet` (plus its header) in `buf`. Cancel-safe:
/// nothing is lost if the future is dropped between packets.
async fn read_packet(
    reader: &mut OwnedReadHalf,
    buf: &mut BytesMut,
    max_packet: usize,
) -> Result<Packet, ReadError> {
    read_frame(reader, buf, max_packet).await?;
    Packet::read(buf, max_packet).map_err(ReadError::Codec)
}

/// Reads until `buf` starts with a whole packet, refusing one over `max_packet` from its header
/// alone. Cancel-safe.
async fn read_frame(
    reader: &mut OwnedReadHalf,
    buf: &mut BytesMut,
    max_packet: usize,
) -> Result<(), ReadError> {
    loop {
        match check(buf.iter(), max_packet) {
            Ok(_) => return Ok(()),
            Err(CodecError::InsufficientBytes(missing)) => {
                // `missing` is bounded: `check` already refused lengths over `max_packet`.
                buf.reserve(missing.max(1024));
                match reader.read_buf(buf).await {
                    Ok(0) => return Err(ReadError::Closed),
                    Ok(_) => {}
                    Err(e) => return Err(ReadError::Io(e)),
                }
            }
            Err(e) => return Err(ReadError::Codec(e)),
        }
    }
}

/// The protocol level of the CONNECT packet that `frame` starts with, read without parsing the
/// rest, whose layout differs between MQTT versions (MQTT 5 adds properties).
fn connect_level(frame: &[u8]) -> Option<u8> {
    if frame.first()? >> 4 != 1 {
        return None;
    }
    // The remaining length takes 1 to 4 bytes; the last one has no continuation bit.
    let length_bytes = frame.get(1..)?.iter().take(4).position(|b| b & 0x80 == 0)? + 1;
    let variable_header = frame.get(1 + length_bytes..)?;
    let name = usize::from(u16::from_be_bytes([
        *variable_header.first()?,
        *variable_header.get(1)?,
    ]));
    variable_header.get(2 + name).copied()
}

/// Serves one connection from CONNECT to its end.
async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    id: ConnId,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let _ = tcp.set_nodelay(true);
    let (mut reader, mut writer) = tcp.into_split();
    let limits = &shared.limits;
    let mut buf = BytesMut::with_capacity(4096);
    let first = tokio::select! {
        _ = shutdown.cancelled() => return,
        first = tokio::time::timeout(
            limits.connect_timeout,
            read_frame(&mut reader, &mut buf, limits.max_packet),
        ) => first,
    };
    match first {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::debug!(%peer, "MQTT client closed before CONNECT: {e:?}");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "MQTT client closed: no CONNECT in time");
            return;
        }
    }
    let level = connect_level(&buf);
    let connect = match Packet::read(&mut buf, limits.max_packet) {
        Ok(Packet::Connect(connect)) if connect.protocol == Protocol::V4 => connect,
        _ if level.is_some_and(|level| level != 4) => {
            tracing::debug!(%peer, ?level, "MQTT client refused: not MQTT 3.1.1");
            refuse(&mut writer, ConnectReturnCode::RefusedProtocolVersion).await;
            return;
        }
        Ok(other) => {
            tracing::debug!(%peer, "MQTT client closed: {other:?} before CONNECT");
            return;
        }
        Err(e) => {
            tracing::debug!(%peer, "MQTT client closed: invalid CONNECT: {e}");
            return;
        }
    };
    let client_id = if !connect.client_id.is_empty() {
        connect.client_id.clone()
    } else if connect.clean_session {
        format!("embedded-{id}")
    } else {
        // MQTT-3.1.3-8: an empty id needs a clean session.
        refuse(&mut writer, ConnectReturnCode::BadClientId).await;
        return;
    };

    let (queue, queued) = mpsc::channel(limits.queue_packets);
    let (kick, kicked) = oneshot::channel();
    let outbox = Outbox {
        queue,
        queued_bytes: Arc::new(AtomicUsize::new(0)),
        max_bytes: limits.queue_bytes,
    };
    let bytes = outbox.queued_bytes.clone();
    shared
        .hub()
        .connect(id, client_id.clone(), outbox.clone(), kick);
    tracing::debug!(%peer, client_id, "MQTT client connected");

    let keep_alive = (connect.keep_alive > 0)
        .then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500));
    let session = Session {
        id,
        shared: &shared,
        outbox,
        keep_alive,
        qos2_pending: HashSet::new(),
    };
    let end = tokio::select! {
        _ = shutdown.cancelled() => End::Shutdown,
        _ = kicked => End::Removed,
        end = session.read_loop(&mut reader, &mut buf) => end,
        end = write_loop(&mut writer, queued, bytes) => end,
    };
    shared.hub().disconnect(id);
    tracing::debug!(%peer, client_id, "MQTT client gone: {end}");
    if !matches!(end, End::Disconnect | End::Shutdown) {
        if let Some(will) = connect.last_will {
            let will = Publish {
                dup: false,
                qos: will.qos,
                retain: will.retain,
                topic: will.topic,
                pkid: 0,
                payload: will.message,
            };
            let _ = shared.hub().publish(&will);
        }
    }
}

/// Answers CONNECT with a refusal (best effort: the connection closes next anyway).
async fn refuse(writer: &mut OwnedWriteHalf, code: ConnectReturnCode) {
    let mut out = BytesMut::new();
    if Packet::ConnAck(ConnAck::new(code, false))
        .write(&mut out, usize::MAX)
        .is_ok()
    {
        let _ = tokio::time::timeout(Duration::from_secs(1), writer.write_all(&out)).await;
    }
}

/// Writes the client's queue to its socket, numbering outgoing QoS 1 publishes.
async fn write_loop(
    writer: &mut OwnedWriteHalf,
    mut queue: mpsc::Receiver<Packet>,
    queued_bytes: Arc<AtomicUsize>,
) -> End {
    let mut out = BytesMut::with_capacity(4096);
    let mut next_pkid: u16 = 0;
    while let Some(packet) = queue.recv().await {
        let mut next = Some(packet);
        // Gather what is ready into one write.
        while let Some(mut packet) = next.take() {
            let size = packet.size();
            if let Packet::Publish(publish) = &mut packet {
                if publish.qos != QoS::AtMostOnce {
                    // Nothing is retransmitted on a clean session, so ids just cycle.
                    next_pkid = next_pkid.checked_add(1).unwrap_or(1);
                    publish.pkid = next_pkid;
                }
            }
            queued_bytes.fetch_sub(size, Ordering::Relaxed);
            if let Err(e) = packet.write(&mut out, usize::MAX) {
                return End::Protocol(format!("cannot encode {packet:?}: {e}"));
            }
            if out.len() < WRITE_BATCH {
                next = queue.try_recv().ok();
            }
        }
        if let Err(e) = writer.write_all(&out).await {
            return End::Io(e);
        }
        out.clear();
    }
    End::Removed
}

/// One connection's reading side.
struct Session<'a> {
    id: ConnId,
    shared: &'a Shared,
    /// This client's own queue, for acknowledgements.
    outbox: Outbox,
    keep_alive: Option<Duration>,
    /// QoS 2 packet ids delivered but not yet released by PUBREL.
    qos2_pending: HashSet<u16>,
}

impl Session<'_> {
    /// Reads and handles packets until the connection ends.
    async fn read_loop(mut self, reader: &mut OwnedReadHalf, buf: &mut BytesMut) -> End {
        let max_packet = self.shared.limits.max_packet;
        loop {
            let read = read_packet(reader, buf, max_packet);
            let packet = match self.keep_alive {
                Some(limit) => match tokio::time::timeout(limit, read).await {
                    Ok(packet) => packet,
                    Err(_) => return End::KeepAlive,
                },
                None => read.await,
            };
            let packet = match packet {
                Ok(packet) => packet,
                Err(ReadError::Closed) => return End::Closed,
                Err(ReadError::Io(e)) => return End::Io(e),
                Err(ReadError::Codec(e)) => return End::Protocol(e.to_string()),
            };
            if let Some(end) = self.handle(packet) {
                return end;
            }
        }
    }

    /// Handles one packet; `Some` ends the connection.
    fn handle(&mut self, packet: Packet) -> Option<End> {
        let reply = match packet {
            Packet::Publish(publish) => return self.publish(publish),
            Packet::PubRel(release) => {
                self.qos2_pending.remove(&release.pkid);
                Packet::PubComp(PubComp::new(release.pkid))
            }
            // Our QoS 1 deliveries are not kept for retransmission: nothing to release.
            Packet::PubAck(_) => return None,
            Packet::Subscribe(subscribe) => {
                let mut hub = self.shared.hub();
                return hub
                    .subscribe(self.id, subscribe.pkid, &subscribe.filters)
                    .then_some(End::Removed);
            }
            Packet::Unsubscribe(unsubscribe) => {
                self.shared.hub().unsubscribe(self.id, &unsubscribe.topics);
                Packet::UnsubAck(UnsubAck::new(unsubscribe.pkid))
            }
            Packet::PingReq => Packet::PingResp,
            Packet::Disconnect => return Some(End::Disconnect),
            other => {
                // A second CONNECT, server-to-client packets, and PUBREC/PUBCOMP (we never send
                // QoS 2) are protocol violations.
                return Some(End::Protocol(format!("unexpected {other:?}")));
            }
        };
        self.reply(reply)
    }

    fn publish(&mut self, publish: Publish) -> Option<End> {
        if publish.qos == QoS::ExactlyOnce && self.qos2_pending.contains(&publish.pkid) {
            // A retransmission before PUBREL: acknowledge again, deliver once.
            return self.reply(Packet::PubRec(PubRec::new(publish.pkid)));
        }
        if self.shared.hub().publish(&publish).is_err() {
            return Some(End::Protocol(format!(
                "invalid topic name {:?} in PUBLISH",
                publish.topic
            )));
        }
        match publish.qos {
            QoS::AtMostOnce => None,
            QoS::AtLeastOnce => self.reply(Packet::PubAck(PubAck::new(publish.pkid))),
            QoS::ExactlyOnce => {
                if self.qos2_pending.len() >= self.shared.limits.max_qos2_pending {
                    return Some(End::Protocol("too many unreleased QoS 2 messages".into()));
                }
                self.qos2_pending.insert(publish.pkid);
                self.reply(Packet::PubRec(PubRec::new(publish.pkid)))
            }
        }
    }

    /// Queues an acknowledgement; a client that lets its queue fill up is closed.
    fn reply(&self, packet: Packet) -> Option<End> {
        (!self.outbox.push(packet)).then_some(End::Removed)
    }
}

/// The sending side of one client's bounded queue.
#[derive(Debug, Clone)]
struct Outbox {
    queue: mpsc::Sender<Packet>,
    /// Bytes queued and not yet written (the writer subtracts).
    queued_bytes: Arc<AtomicUsize>,
    max_bytes: usize,
}

impl Outbox {
    /// Queues `packet`; false when the queue is full (in packets or bytes) or closed.
    fn push(&self, packet: Packet) -> bool {
        let size = packet.size();
        let before = self.queued_bytes.fetch_add(size, Ordering::Relaxed);
        if before.saturating_add(size) > self.max_bytes || self.queue.try_send(packet).is_err() {
            self.queued_bytes.fetch_sub(size, Ordering::Relaxed);
            return false;
        }
        true
    }
}

/// A client as the hub knows it: its queue, and the kick that ends its connection (dropping it
/// does).
#[derive(Debug)]
struct Registered {
    outbox: Outbox,
    _kick: oneshot::Sender<()>,
}

/// The [`Router`] plus every client's queue: applies a client's request and queues what it
/// causes, under one lock, so that per client the order of queued packets is the order of events
/// (a retained message can never overtake a newer one on its topic).
struct Hub {
    router: Router,
    clients: HashMap<ConnId, Registered>,
}

impl Hub {
    fn new(limits: RouterLimits) -> Hub {
        Hub {
            router: Router::new(limits),
            clients: HashMap::new(),
        }
    }

    /// Registers a connected client and queues its CONNACK; closes an earlier connection with
    /// the same client id.
    fn connect(
        &mut self,
        id: ConnId,
        client_id: String,
        outbox: Outbox,
        kick: oneshot::Sender<()>,
    ) {
        // The queue is new and empty: this cannot fail.
        outbox.push(Packet::ConnAck(ConnAck::new(
            ConnectReturnCode::Success,
            false,
        )));
        if let Some(previous) = self.router.connect(id, client_id.clone()) {
            tracing::debug!(client_id, "MQTT client id taken over by a new connection");
            self.clients.remove(&previous);
        }
        self.clients.insert(
            id,
            Registered {
                outbox,
                _kick: kick,
            },
        );
    }

    /// Forgets a client (whose connection has ended or is ending).
    fn disconnect(&mut self, id: ConnId) {
        self.router.disconnect(id);
        self.clients.remove(&id);
    }

    /// Subscribes and queues the SUBACK and the matching retained messages. True if that
    /// overflowed the client's queue (it is then removed).
    fn subscribe(&mut self, id: ConnId, pkid: u16, filters: &[SubscribeFilter]) -> bool {
        let (codes, retained) = self.router.subscribe(id, filters);
        let Some(client) = self.clients.get(&id) else {
            return true;
        };
        let mut ok = client.outbox.push(Packet::SubAck(SubAck::new(pkid, codes)));
        for publish in retained {
            ok = ok && client.outbox.push(Packet::Publish(publish));
        }
        if !ok {
            tracing::warn!("MQTT client's queue overflowed with retained messages; closing it");
            self.disconnect(id);
        }
        !ok
    }

    fn unsubscribe(&mut self, id: ConnId, filters: &[String]) {
        self.router.unsubscribe(id, filters);
    }

    /// Routes a message to every matching subscriber; those whose queue is full are closed.
    fn publish(&mut self, publish: &Publish) -> Result<(), InvalidTopic> {
        let routed = self.router.publish(publish)?;
        if routed.retained_refused {
            tracing::warn!(
                topic = publish.topic,
                "embedded MQTT broker: retained store full; message not retained"
            );
        }
        let mut slow = Vec::new();
        for (id, qos) in routed.deliveries {
            let Some(client) = self.clients.get(&id) else {
                continue;
            };
            let delivery = Publish {
                dup: false,
                qos,
                retain: false,
                topic: publish.topic.clone(),
                pkid: 0,
                payload: publish.payload.clone(),
            };
            if !client.outbox.push(Packet::Publish(delivery)) {
                slow.push(id);
            }
        }
        for id in slow {
            tracing::warn!(
                connection = id,
                "MQTT client does not keep up with its messages; closing it"
            );
            self.disconnect(id);
        }
        Ok(())
    }
}

/// A PUBLISH topic name that is empty or has wildcards.
#[derive(Debug, PartialEq, Eq)]
struct InvalidTopic;

/// What one published message causes.
#[derive(Debug, Default, PartialEq)]
struct Routed {
    /// Which connections get it, at which QoS.
    deliveries: Vec<(ConnId, QoS)>,
    /// It should have been retained, but the retained store is full.
    retained_refused: bool,
}

/// One client's subscriptions.
#[derive(Debug)]
struct Subscriber {
    client_id: String,
    /// Filter and granted QoS, one entry per filter.
    filters: Vec<(String, QoS)>,
}

/// The broker's state, without I/O: who is subscribed to what, and the retained messages.
#[derive(Debug)]
struct Router {
    limits: RouterLimits,
    subscribers: HashMap<ConnId, Subscriber>,
    client_ids: HashMap<String, ConnId>,
    retained: BTreeMap<String, Publish>,
    retained_bytes: usize,
}

impl Router {
    fn new(limits: RouterLimits) -> Router {
        Router {
            limits,
            subscribers: HashMap::new(),
            client_ids: HashMap::new(),
            retained: BTreeMap::new(),
            retained_bytes: 0,
        }
    }

    /// A client connected; returns the earlier connection with the same client id, which is
    /// forgotten (MQTT-3.1.4-2: the new one takes over).
    fn connect(&mut self, id: ConnId, client_id: String) -> Option<ConnId> {
        let previous = self.client_ids.insert(client_id.clone(), id);
        if let Some(previous) = previous {
            self.subscribers.remove(&previous);
        }
        self.subscribers.insert(
            id,
            Subscriber {
                client_id,
                filters: Vec::new(),
            },
        );
        previous
    }

    /// A client is gone; its subscriptions with it (every session is clean).
    fn disconnect(&mut self, id: ConnId) {
        if let Some(gone) = self.subscribers.remove(&id) {
            if self.client_ids.get(&gone.client_id) == Some(&id) {
                self.client_ids.remove(&gone.client_id);
            }
        }
    }

    /// Adds subscriptions (granted at most QoS 1); returns the SUBACK codes and the retained
    /// messages to deliver, with their retain flag set.
    fn subscribe(
        &mut self,
        id: ConnId,
        filters: &[SubscribeFilter],
    ) -> (Vec<SubscribeReasonCode>, Vec<Publish>) {
        let mut codes = Vec::with_capacity(filters.len());
        let mut retained = Vec::new();
        let Some(subscriber) = self.subscribers.get_mut(&id) else {
            codes.resize(filters.len(), SubscribeReasonCode::Failure);
            return (codes, retained);
        };
        for filter in filters {
            if !valid_filter(&filter.path) || filter.path.contains('\0') {
                codes.push(SubscribeReasonCode::Failure);
                continue;
            }
            let granted = min_qos(filter.qos, QoS::AtLeastOnce);
            let existing = subscriber
                .filters
                .iter()
                .position(|(path, _)| *path == filter.path);
            match existing {
                Some(index) => subscriber.filters[index].1 = granted,
                None if subscriber.filters.len() >= self.limits.max_subscriptions => {
                    codes.push(SubscribeReasonCode::Failure);
                    continue;
                }
                None => subscriber.filters.push((filter.path.clone(), granted)),
            }
            codes.push(SubscribeReasonCode::Success(granted));
            // MQTT-3.3.1-6: retained messages on every subscribe, also a repeated one.
            for (topic, message) in &self.retained {
                if matches(topic, &filter.path) {
                    retained.push(Publish {
                        qos: min_qos(message.qos, granted),
                        ..message.clone()
                    });
                }
            }
        }
        (codes, retained)
    }

    fn unsubscribe(&mut self, id: ConnId, filters: &[String]) {
        if let Some(subscriber) = self.subscribers.get_mut(&id) {
            subscriber
                .filters
                .retain(|(path, _)| !filters.contains(path));
        }
    }

    /// Updates the retained store and says who gets the message.
    fn publish(&mut self, publish: &Publish) -> Result<Routed, InvalidTopic> {
        let topic = publish.topic.as_str();
        if topic.is_empty() || topic.contains(['+', '#', '\0']) {
            return Err(InvalidTopic);
        }
        let mut routed = Routed::default();
        if publish.retain {
            routed.retained_refused = !self.retain(publish);
        }
        for (id, subscriber) in &self.subscribers {
            let best = subscriber
                .filters
                .iter()
                .filter(|(filter, _)| matches(topic, filter))
                .map(|(_, qos)| *qos)
                .reduce(max_qos);
            if let Some(granted) = best {
                routed.deliveries.push((*id, min_qos(publish.qos, granted)));
            }
        }
        Ok(routed)
    }

    /// Stores (or with an empty payload, clears) the retained message of a topic; false if it
    /// did not fit. A message that does not fit also clears the topic: a late subscriber must
    /// not get a value older than the newest one.
    fn retain(&mut self, publish: &Publish) -> bool {
        if let Some(old) = self.retained.remove(&publish.topic) {
            self.retained_bytes = self
                .retained_bytes
                .saturating_sub(old.topic.len() + old.payload.len());
        }
        if publish.payload.is_empty() {
            return true;
        }
        let size = publish.topic.len() + publish.payload.len();
        if self.retained.len() >= self.limits.max_retained
            || self.retained_bytes + size > self.limits.max_retained_bytes
        {
            return false;
        }
        self.retained_bytes += size;
        self.retained.insert(
            publish.topic.clone(),
            Publish {
                dup: false,
                qos: publish.qos,
                retain: true,
                topic: publish.topic.clone(),
                pkid: 0,
                // A copy: a slice would keep the whole receive buffer it came from alive.
                payload: Bytes::copy_from_slice(&publish.payload),
            },
        );
        true
    }
}

fn min_qos(a: QoS, b: QoS) -> QoS {
    if (a as u8) <= (b as u8) {
        a
    } else {
        b
    }
}

fn max_qos(a: QoS, b: QoS) -> QoS {
    if (a as u8) >= (b as u8) {
        a
    } else {
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(topic: &str, payload: &str, qos: QoS, retain: bool) -> Publish {
        let mut publish = Publish::new(topic, qos, payload.as_bytes().to_vec());
        publish.retain = retain;
        publish
    }

    fn filter(path: &str, qos: QoS) -> SubscribeFilter {
        SubscribeFilter::new(path.into(), qos)
    }

    fn router() -> Router {
        Router::new(RouterLimits::default())
    }

    #[test]
    fn a_publish_reaches_matching_subscribers_once_at_their_highest_qos() {
        let mut router = router();
        router.connect(1, "a".into());
        router.connect(2, "b".into());
        router.connect(3, "c".into());
        router.subscribe(
            1,
            &[
                filter("sensors/#", QoS::AtMostOnce),
                filter("sensors/+", QoS::ExactlyOnce),
            ],
        );
        router.subscribe(2, &[filter("other/#", QoS::AtLeastOnce)]);
        router.subscribe(3, &[filter("+/temperature", QoS::AtMostOnce)]);
        let routed = router
            .publish(&message(
                "sensors/temperature",
                "21",
                QoS::AtLeastOnce,
                false,
            ))
            .unwrap();
        let mut deliveries = routed.deliveries;
        deliveries.sort_by_key(|(id, _)| *id);
        assert_eq!(
            deliveries,
            vec![(1, QoS::AtLeastOnce), (3, QoS::AtMostOnce)]
        );
    }

    #[test]
    fn qos_2_subscriptions_are_granted_qos_1_and_bad_filters_fail() {
        let mut router = router();
        router.connect(1, "a".into());
        let (codes, _) = router.subscribe(
            1,
            &[
                filter("a/#", QoS::ExactlyOnce),
                filter("a/#/b", QoS::AtMostOnce),
                filter("a+", QoS::AtMostOnce),
                filter("", QoS::AtMostOnce),
            ],
        );
        assert_eq!(
            codes,
            vec![
                SubscribeReasonCode::Success(QoS::AtLeastOnce),
                SubscribeReasonCode::Failure,
                SubscribeReasonCode::Failure,
                SubscribeReasonCode::Failure,
            ]
        );
    }

    #[test]
    fn retained_messages_come_with_the_retain_flag_and_an_empty_payload_clears_them() {
        let mut router = router();
        router
            .publish(&message("sensors/t", "19.25", QoS::AtLeastOnce, true))
            .unwrap();
        router
            .publish(&message("sensors/h", "40", QoS::AtMostOnce, true))
            .unwrap();
        router
            .publish(&message("sensors/x", "not kept", QoS::AtMostOnce, false))
            .unwrap();
        router.connect(1, "a".into());
        let (_, retained) = router.subscribe(1, &[filter("sensors/+", QoS::AtLeastOnce)]);
        let got: Vec<_> = retained
            .iter()
            .map(|p| (p.topic.as_str(), &p.payload[..], p.qos, p.retain))
            .collect();
        assert_eq!(
            got,
            vec![
                ("sensors/h", &b"40"[..], QoS::AtMostOnce, true),
                ("sensors/t", &b"19.25"[..], QoS::AtLeastOnce, true),
            ]
        );

        router
            .publish(&message("sensors/t", "", QoS::AtMostOnce, true))
            .unwrap();
        let (_, retained) = router.subscribe(1, &[filter("sensors/t", QoS::AtMostOnce)]);
        assert!(retained.is_empty(), "{retained:?}");
        assert_eq!(router.retained_bytes, "sensors/h".len() + 2);
    }

    #[test]
    fn the_retained_store_is_bounded_and_never_keeps_an_outdated_value() {
        let mut router = Router::new(RouterLimits {
            max_retained: 2,
            max_retained_bytes: 20,
            ..RouterLimits::default()
        });
        let retain = |router: &mut Router, topic: &str, payload: &str| {
            !router
                .publish(&message(topic, payload, QoS::AtMostOnce, true))
                .unwrap()
                .retained_refused
        };
        assert!(retain(&mut router, "a", "1"));
        assert!(retain(&mut router, "b", "2"));
        assert!(!retain(&mut router, "c", "3"), "third topic over the count");
        assert!(
            retain(&mut router, "a", "replaced"),
            "replacing is not growing"
        );
        assert!(!retain(&mut router, "b", "far too long for the store"));
        router.connect(1, "x".into());
        let (_, retained) = router.subscribe(1, &[filter("#", QoS::AtMostOnce)]);
        let topics: Vec<_> = retained.iter().map(|p| p.topic.as_str()).collect();
        assert_eq!(topics, vec!["a"], "b's old value must not survive");
    }

    #[test]
    fn invalid_topic_names_are_refused() {
        let mut router = router();
        for topic in ["", "a/+", "a/#", "a\0b"] {
            assert_eq!(
                router.publish(&message(topic, "1", QoS::AtMostOnce, false)),
                Err(InvalidTopic),
                "{topic:?}"
            );
        }
    }

    #[test]
    fn a_second_connection_with_the_same_client_id_takes_over() {
        let mut router = router();
        assert_eq!(router.connect(1, "bot".into()), None);
        router.subscribe(1, &[filter("#", QoS::AtMostOnce)]);
        assert_eq!(router.connect(2, "bot".into()), Some(1));
        // The old connection's late disconnect must not forget the new one.
        router.disconnect(1);
        assert_eq!(router.client_ids.get("bot"), Some(&2));
        let routed = router
            .publish(&message("t", "1", QoS::AtMostOnce, false))
            .unwrap();
        assert!(
            routed.deliveries.is_empty(),
            "subscriptions are per session"
        );
    }

    #[test]
    fn subscriptions_per_client_are_bounded_and_unsubscribe_removes_them() {
        let mut router = Router::new(RouterLimits {
            max_subscriptions: 2,
            ..RouterLimits::default()
        });
        router.connect(1, "a".into());
        let (codes, _) = router.subscribe(
            1,
            &[
                filter("a", QoS::AtMostOnce),
                filter("b", QoS::AtMostOnce),
                filter("a", QoS::AtLeastOnce),
                filter("c", QoS::AtMostOnce),
            ],
        );
        assert_eq!(codes[2], SubscribeReasonCode::Success(QoS::AtLeastOnce));
        assert_eq!(codes[3], SubscribeReasonCode::Failure);
        router.unsubscribe(1, &["a".into()]);
        let routed = router
            .publish(&message("a", "1", QoS::AtMostOnce, false))
            .unwrap();
        assert!(routed.deliveries.is_empty());
    }

    /// CONNECT, MQTT 3.1.1, clean session, keep-alive 1 s, client id "k".
    const CONNECT_KEEP_ALIVE_1S: &[u8] = &[
        0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 1, 0, 1, b'k',
    ];

    /// Reads until the broker closes `tcp`; returns what it sent and how long that took.
    async fn until_closed(tcp: &mut TcpStream) -> (Vec<u8>, Duration) {
        let started = std::time::Instant::now();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer));
        assert!(matches!(read.await, Ok(Ok(_))), "not closed within 10 s");
        (answer, started.elapsed())
    }

    #[tokio::test]
    async fn silent_connections_are_closed_before_and_after_connect() {
        let limits = Limits {
            connect_timeout: Duration::from_millis(200),
            ..Limits::default()
        };
        let broker = EmbeddedBroker::start_with(SocketAddr::from(([127, 0, 0, 1], 0)), limits)
            .await
            .unwrap();
        let addr = broker.local_addr();

        let mut no_connect = TcpStream::connect(addr).await.unwrap();
        let (answer, took) = until_closed(&mut no_connect).await;
        assert!(answer.is_empty());
        assert!(took >= Duration::from_millis(200), "{took:?}");

        let mut quiet = TcpStream::connect(addr).await.unwrap();
        quiet.write_all(CONNECT_KEEP_ALIVE_1S).await.unwrap();
        let (answer, took) = until_closed(&mut quiet).await;
        assert_eq!(answer, [0x20, 2, 0, 0], "CONNACK, then closed");
        assert!(took >= Duration::from_millis(1500), "{took:?}");
        broker.shutdown().await;
    }

    fn outbox(packets: usize, bytes: usize) -> (Outbox, mpsc::Receiver<Packet>) {
        let (queue, receiver) = mpsc::channel(packets);
        let outbox = Outbox {
            queue,
            queued_bytes: Arc::new(AtomicUsize::new(0)),
            max_bytes: bytes,
        };
        (outbox, receiver)
    }

    #[test]
    fn a_subscriber_whose_queue_is_full_is_removed_and_its_connection_told() {
        let mut hub = Hub::new(RouterLimits::default());
        let (slow, _slow_queue) = outbox(3, 1 << 20);
        let (kick, mut kicked) = oneshot::channel();
        hub.connect(1, "slow".into(), slow, kick);
        let (fast, mut fast_queue) = outbox(100, 1 << 20);
        let (fast_kick, mut fast_kicked) = oneshot::channel();
        hub.connect(2, "fast".into(), fast, fast_kick);
        assert!(!hub.subscribe(1, 1, &[filter("t", QoS::AtMostOnce)]));
        assert!(!hub.subscribe(2, 1, &[filter("t", QoS::AtMostOnce)]));
        // CONNACK and SUBACK are queued; one more fits, the next does not.
        for _ in 0..2 {
            hub.publish(&message("t", "1", QoS::AtMostOnce, false))
                .unwrap();
        }
        assert!(matches!(
            kicked.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
        assert!(matches!(
            fast_kicked.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        ));
        let mut fast_got = 0;
        while let Ok(packet) = fast_queue.try_recv() {
            fast_got += usize::from(matches!(packet, Packet::Publish(_)));
        }
        assert_eq!(fast_got, 2);
        assert!(!hub.clients.contains_key(&1));
    }

    #[test]
    fn the_protocol_level_is_read_from_any_connect() {
        let v311 = [
            0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 1, 0, 1, b'k',
        ];
        assert_eq!(connect_level(&v311), Some(4));
        let v31 = [
            0x10, 14, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 2, 0, 1,
        ];
        assert_eq!(connect_level(&v31), Some(3));
        assert_eq!(
            connect_level(&[0x10, 0x80, 0x01, 0, 4, 0, 0, 0, 0, 5]),
            Some(5)
        );
        for garbage in [
            &[][..],
            &[0x10],
            &[0x10, 0xff, 0xff, 0xff, 0xff],
            &[0x30, 2, 0, 0],
        ] {
            assert_eq!(connect_level(garbage), None, "{garbage:?}");
        }
    }

    #[test]
    fn the_byte_bound_of_a_queue_holds() {
        let (outbox, _queue) = outbox(100, 64);
        assert!(outbox.push(Packet::Publish(message(
            "t",
            "0123456789",
            QoS::AtMostOnce,
            false
        ))));
        let big = "x".repeat(60);
        assert!(!outbox.push(Packet::Publish(message("t", &big, QoS::AtMostOnce, false))));
        assert_eq!(outbox.queued_bytes.load(Ordering::Relaxed), 15);
    }

    #[test]
    fn a_retained_message_is_queued_right_after_the_suback() {
        let mut hub = Hub::new(RouterLimits::default());
        hub.publish(&message("t", "old", QoS::AtLeastOnce, true))
            .unwrap();
        let (outbox, mut queue) = outbox(100, 1 << 20);
        let (kick, _kicked) = oneshot::channel();
        hub.connect(1, "a".into(), outbox, kick);
        hub.subscribe(1, 7, &[filter("t", QoS::AtLeastOnce)]);
        hub.publish(&message("t", "new", QoS::AtLeastOnce, true))
            .unwrap();
        let mut order = Vec::new();
        while let Ok(packet) = queue.try_recv() {
            order.push(match packet {
                Packet::ConnAck(_) => "connack".to_string(),
                Packet::SubAck(ack) => format!("suback {}", ack.pkid),
                Packet::Publish(p) => format!(
                    "{} retain={}",
                    String::from_utf8_lossy(&p.payload),
                    p.retain
                ),
                other => format!("{other:?}"),
            });
        }
        assert_eq!(
            order,
            vec!["connack", "suback 7", "old retain=true", "new retain=false"]
        );
    }
}
