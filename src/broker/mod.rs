//! An MQTT 3.1.1 broker inside this process, on loopback: what `mqtt2xmpp up` and the tests use
//! so that a fresh machine needs no mosquitto.
//!
//! ```text
//! TcpListener ─accept (Semaphore-bounded)─▶ connection::serve (one task per connection)
//!                                              │ read: CONNECT, PUBLISH, SUBSCRIBE, …
//!                                              ▼
//!          Dispatcher (one Mutex): Router (subscriptions, retained) + every client's Outbox
//!                                              │ bounded queue per client (packets and bytes)
//!                                              ▼
//!                                    serve writes to the client
//! ```
//!
//! | module | what it does | I/O |
//! |---|---|---|
//! | `router` | subscriptions, retained messages, who gets a message at which QoS | none |
//! | `dispatch` | the router plus every client's bounded queue, under one lock | none |
//! | `frame` | reading whole MQTT packets off a socket, size-bounded | socket reads |
//! | `connection` | one client: CONNECT, its reading side, its writing side | socket |
//! | this file | start, accept loop, shutdown, limits | listener |
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
//! Limits (the defaults of `BrokerLimits`): packets up to 1 MiB, 1024 connections (further ones
//! wait in the kernel's accept queue), per client a queue of 8192 packets and 16 MiB, 256
//! subscriptions, 64 unreleased QoS 2 messages; 4096 retained topics and 8 MiB of retained
//! payloads. A client that does not read fast enough for its queue is disconnected rather than
//! buffered without bound. Any malformed or unexpected packet closes that one connection.

mod connection;
mod dispatch;
mod frame;
mod router;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::{CancellationToken, DropGuard};

use connection::{serve, BrokerState};
use dispatch::Dispatcher;
use router::RouterLimits;

/// How long [`EmbeddedBroker::shutdown`] may take in all.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(2);

/// How long connections get to end by themselves at shutdown before they are aborted.
const DRAIN_LIMIT: Duration = Duration::from_secs(1);

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
        Self::start_with(addr, BrokerLimits::default()).await
    }

    /// [`EmbeddedBroker::start`] with other limits.
    async fn start_with(
        addr: SocketAddr,
        limits: BrokerLimits,
    ) -> Result<EmbeddedBroker, EmbeddedError> {
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

/// Resource limits of one broker. [`BrokerLimits::default`] gives the documented defaults.
#[derive(Debug, Clone)]
pub(crate) struct BrokerLimits {
    /// Largest packet (its remaining length) a client may send.
    pub(crate) max_packet: usize,
    /// Most simultaneous connections.
    pub(crate) max_connections: usize,
    /// Most packets waiting to be written to one client.
    pub(crate) queue_packets: usize,
    /// Most bytes waiting to be written to one client.
    pub(crate) queue_bytes: usize,
    /// Time a new connection has to send CONNECT.
    pub(crate) connect_timeout: Duration,
    /// Most QoS 2 messages one client may leave unreleased (no PUBREL yet).
    pub(crate) max_qos2_pending: usize,
    /// Subscriptions and retained messages.
    pub(crate) router: RouterLimits,
}

impl Default for BrokerLimits {
    fn default() -> Self {
        BrokerLimits {
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

/// Identifies one connection for the lifetime of the broker.
pub(crate) type ConnId = u64;

/// Accepts connections until shutdown, then closes them all.
async fn accept_loop(listener: TcpListener, limits: BrokerLimits, shutdown: CancellationToken) {
    let shared = Arc::new(BrokerState {
        dispatcher: Mutex::new(Dispatcher::new(limits.router.clone())),
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

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
        let limits = BrokerLimits {
            connect_timeout: Duration::from_millis(200),
            ..BrokerLimits::default()
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
}
