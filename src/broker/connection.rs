//! One client connection: CONNECT, then a reading side that applies the client's packets to
//! the [`Dispatcher`] and a writing side that drains the client's queue to its socket.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{
    ConnAck, ConnectReturnCode, Packet, PubAck, PubComp, PubRec, Publish, UnsubAck,
};
use rumqttc::mqttbytes::{Protocol, QoS};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::dispatch::{Dispatcher, Outbox};
use super::frame::{connect_level, read_frame, read_packet, ReadError};
use super::{BrokerLimits, ConnId};

/// Bytes to gather before writing to a client's socket.
const WRITE_BATCH: usize = 64 * 1024;

/// What every connection shares.
pub(crate) struct BrokerState {
    pub(crate) limits: BrokerLimits,
    pub(crate) dispatcher: Mutex<Dispatcher>,
}

impl BrokerState {
    fn dispatcher(&self) -> MutexGuard<'_, Dispatcher> {
        // The dispatcher's methods do not panic; if one ever did, its state is still consistent
        // enough to keep serving the other clients.
        self.dispatcher.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Why a connection ended.
#[derive(Debug)]
enum End {
    /// The client sent DISCONNECT.
    Disconnect,
    /// The broker is shutting down.
    Shutdown,
    /// Removed by the dispatcher: taken over by a new connection with the same client id, or too slow
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

/// Serves one connection from CONNECT to its end.
pub(crate) async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    id: ConnId,
    shared: Arc<BrokerState>,
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
        .dispatcher()
        .connect(id, client_id.clone(), outbox.clone(), kick);
    tracing::debug!(%peer, client_id, "MQTT client connected");

    let keep_alive = (connect.keep_alive > 0)
        .then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500));
    let session = ClientSession {
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
    shared.dispatcher().disconnect(id);
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
            let _ = shared.dispatcher().publish(&will);
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
struct ClientSession<'a> {
    id: ConnId,
    shared: &'a BrokerState,
    /// This client's own queue, for acknowledgements.
    outbox: Outbox,
    keep_alive: Option<Duration>,
    /// QoS 2 packet ids delivered but not yet released by PUBREL.
    qos2_pending: HashSet<u16>,
}

impl ClientSession<'_> {
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
                let mut dispatcher = self.shared.dispatcher();
                return dispatcher
                    .subscribe(self.id, subscribe.pkid, &subscribe.filters)
                    .then_some(End::Removed);
            }
            Packet::Unsubscribe(unsubscribe) => {
                self.shared
                    .dispatcher()
                    .unsubscribe(self.id, &unsubscribe.topics);
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
        if self.shared.dispatcher().publish(&publish).is_err() {
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
