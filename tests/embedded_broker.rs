//! The embedded MQTT broker (`mqtt2xmpp::broker`) against real clients: rumqttc clients in
//! this process, raw sockets that send garbage, and the real `mqtt2xmpp bridge` with the bundled
//! XMPP server. The broker runs on the test's own tokio runtime, on a free loopback port.

#![cfg(feature = "embedded-broker")]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mqtt2xmpp::broker::{EmbeddedBroker, EmbeddedError};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, Publish, QoS};
use support::chat::ChatClient;
use support::files::password_file;
use support::mqtt::publish;
use support::process::BinaryProcess;
use support::server::{ServerProcess, XmppEndpoint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any single expected event may take.
const DEADLINE: Duration = Duration::from_secs(10);

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn broker() -> EmbeddedBroker {
    EmbeddedBroker::start(any_port())
        .await
        .expect("start the embedded broker")
}

/// A rumqttc client and its event loop, polled only inside these methods.
struct Client {
    client: AsyncClient,
    events: EventLoop,
}

impl Client {
    /// Connects with a clean session and waits for CONNACK.
    async fn connect(broker: &EmbeddedBroker, id: &str) -> Client {
        let addr = broker.local_addr();
        let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        options
            .set_keep_alive(Duration::from_secs(5))
            .set_max_packet_size(2 * 1024 * 1024, 2 * 1024 * 1024);
        let (client, events) = AsyncClient::new(options, 16);
        let mut client = Client { client, events };
        client
            .until(|e| matches!(e, Event::Incoming(Packet::ConnAck(_))))
            .await;
        client
    }

    /// Polls until `wanted` accepts an event, and returns that event.
    async fn until(&mut self, wanted: impl Fn(&Event) -> bool) -> Event {
        let polled = tokio::time::timeout(DEADLINE, async {
            loop {
                match self.events.poll().await {
                    Ok(event) if wanted(&event) => return event,
                    Ok(_) => {}
                    Err(e) => panic!("MQTT client failed: {e}"),
                }
            }
        })
        .await;
        polled.unwrap_or_else(|_| panic!("no such MQTT event within {DEADLINE:?}"))
    }

    async fn subscribe(&mut self, filter: &str, qos: QoS) {
        self.client.subscribe(filter, qos).await.expect("queue");
        self.until(|e| matches!(e, Event::Incoming(Packet::SubAck(_))))
            .await;
    }

    /// Publishes and waits until the broker has it: its PUBACK for QoS 1, the write for QoS 0.
    async fn publish(&mut self, topic: &str, payload: &[u8], qos: QoS, retain: bool) {
        self.client
            .publish(topic, qos, retain, payload.to_vec())
            .await
            .expect("queue");
        match qos {
            QoS::AtMostOnce => {
                self.until(|e| matches!(e, Event::Outgoing(Outgoing::Publish(_))))
                    .await
            }
            _ => {
                self.until(|e| matches!(e, Event::Incoming(Packet::PubAck(_))))
                    .await
            }
        };
    }

    async fn next_publish(&mut self) -> Publish {
        match self
            .until(|e| matches!(e, Event::Incoming(Packet::Publish(_))))
            .await
        {
            Event::Incoming(Packet::Publish(publish)) => publish,
            _ => unreachable!(),
        }
    }

    /// Whether the connection fails within `deadline` (events before that are skipped).
    async fn disconnected_within(&mut self, deadline: Duration) -> bool {
        tokio::time::timeout(deadline, async {
            while self.events.poll().await.is_ok() {}
        })
        .await
        .is_ok()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_subscriber_receives_a_qos1_publish_from_another_client() {
    let broker = broker().await;
    let mut plus = Client::connect(&broker, "plus").await;
    plus.subscribe("building/+/temperature", QoS::AtLeastOnce)
        .await;
    let mut hash = Client::connect(&broker, "hash").await;
    hash.subscribe("building/#", QoS::AtLeastOnce).await;
    let mut sensor = Client::connect(&broker, "sensor").await;

    sensor
        .publish("building/kitchen/humidity", b"40", QoS::AtLeastOnce, false)
        .await;
    sensor
        .publish(
            "building/kitchen/temperature",
            b"21.5",
            QoS::AtLeastOnce,
            false,
        )
        .await;

    let first = plus.next_publish().await;
    assert_eq!(first.topic, "building/kitchen/temperature");
    assert_eq!(&first.payload[..], b"21.5");
    assert_eq!(first.qos, QoS::AtLeastOnce);
    assert!(!first.retain);
    let topics = [hash.next_publish().await, hash.next_publish().await].map(|p| p.topic);
    assert_eq!(
        topics,
        ["building/kitchen/humidity", "building/kitchen/temperature"]
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_subscriber_gets_the_retained_message_with_the_retain_flag() {
    let broker = broker().await;
    let mut sensor = Client::connect(&broker, "sensor").await;
    sensor
        .publish("sensors/temperature", b"19.25", QoS::AtLeastOnce, true)
        .await;
    sensor
        .publish("sensors/other", b"not retained", QoS::AtLeastOnce, false)
        .await;

    let mut late = Client::connect(&broker, "late").await;
    late.subscribe("sensors/+", QoS::AtLeastOnce).await;
    let retained = late.next_publish().await;
    assert_eq!(retained.topic, "sensors/temperature");
    assert_eq!(&retained.payload[..], b"19.25");
    assert!(retained.retain, "retained messages carry the retain flag");

    // Live messages to a subscriber do not, even when they are retained as well.
    sensor
        .publish("sensors/temperature", b"20", QoS::AtLeastOnce, true)
        .await;
    let live = late.next_publish().await;
    assert_eq!(&live.payload[..], b"20");
    assert!(!live.retain);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_retained_payload_clears_the_topic() {
    let broker = broker().await;
    let mut sensor = Client::connect(&broker, "sensor").await;
    sensor
        .publish("sensors/temperature", b"19.25", QoS::AtLeastOnce, true)
        .await;
    sensor
        .publish("sensors/temperature", b"", QoS::AtLeastOnce, true)
        .await;

    let mut late = Client::connect(&broker, "late").await;
    late.subscribe("sensors/#", QoS::AtLeastOnce).await;
    // Retained messages are queued right after the SUBACK, so a marker published after it
    // arrives first only if nothing was retained.
    sensor
        .publish("sensors/marker", b"after", QoS::AtLeastOnce, false)
        .await;
    let first = late.next_publish().await;
    assert_eq!(first.topic, "sensors/marker", "got {first:?}");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_is_an_error_naming_the_address() {
    let first = broker().await;
    let taken = first.local_addr();
    let error = EmbeddedBroker::start(taken)
        .await
        .expect_err("the port is taken");
    assert!(
        matches!(error, EmbeddedError::AddrInUse { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains(&taken.to_string()), "{message}");
    assert!(message.contains("already in use"), "{message}");

    let everywhere = SocketAddr::from(([0, 0, 0, 0], 0));
    let error = EmbeddedBroker::start(everywhere)
        .await
        .expect_err("loopback only");
    assert!(error.to_string().contains("0.0.0.0:0"), "{error}");
    first.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_takes_under_two_seconds_and_clients_see_the_disconnect() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let mut subscriber = Client::connect(&broker, "subscriber").await;
    subscriber.subscribe("#", QoS::AtLeastOnce).await;
    let mut publisher = Client::connect(&broker, "publisher").await;
    // A connection that never sent CONNECT must not hold the shutdown up either.
    let _silent = TcpStream::connect(addr).await.expect("connect");

    let started = Instant::now();
    broker.shutdown().await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");

    assert!(subscriber.disconnected_within(DEADLINE).await);
    assert!(publisher.disconnected_within(DEADLINE).await);
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}

/// Sends `bytes` on a fresh connection and returns what the broker answered before it closed
/// the connection (panics if it stays open).
async fn send_raw(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(bytes).await.expect("write");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(DEADLINE, tcp.read_to_end(&mut answer)).await;
    match read {
        Ok(Ok(_)) => {}
        // Closing with unread input makes the kernel reset the connection: closed as well.
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Ok(Err(e)) => panic!("reading from the broker: {e}"),
        Err(_) => panic!("the broker kept the connection open after {bytes:02x?}"),
    }
    answer
}

/// CONNECT, MQTT 3.1.1, clean session, keep-alive 30 s, client id "raw".
const CONNECT: &[u8] = &[
    0x10, 15, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 30, 0, 3, b'r', b'a', b'w',
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sending_garbage_is_disconnected_without_affecting_another() {
    let broker = broker().await;
    let addr = broker.local_addr();
    let mut subscriber = Client::connect(&broker, "subscriber").await;
    subscriber.subscribe("#", QoS::AtLeastOnce).await;

    let after_connect = |tail: &[u8]| [CONNECT, tail].concat();
    let garbage: Vec<(&str, Vec<u8>)> = vec![
        // 'G' reads as a PUBACK header announcing 69 bytes: the request is long enough for them.
        (
            "HTTP",
            b"GET / HTTP/1.1\r\nHost: localhost:1883\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n"
                .to_vec(),
        ),
        ("reserved packet type", vec![0xf0, 0x00]),
        ("PUBLISH before CONNECT", vec![0x30, 5, 0, 1, b't', b'h', b'i']),
        ("remaining length over 4 bytes", vec![0x10, 0xff, 0xff, 0xff, 0xff, 0x01]),
        // Refused from the header alone: nothing of the 256 MiB is buffered.
        ("256 MiB packet", vec![0x30, 0xff, 0xff, 0xff, 0x7f, 0, 1, b't']),
        ("truncated string", after_connect(&[0x30, 3, 0, 9, b't'])),
        ("wildcard topic", after_connect(&[0x30, 5, 0, 3, b'a', b'/', b'#'])),
        ("QoS 3", after_connect(&[0x36, 5, 0, 1, b't', 0, 1])),
        ("second CONNECT", after_connect(CONNECT)),
        ("SUBSCRIBE without filters", after_connect(&[0x82, 2, 0, 1])),
        ("server packet from a client", after_connect(&[0x20, 2, 0, 0])),
    ];
    for (what, bytes) in &garbage {
        let answer = send_raw(addr, bytes).await;
        // At most a CONNACK came back.
        assert!(
            answer.is_empty() || answer == [0x20, 2, 0, 0],
            "{what}: {answer:02x?}"
        );
    }
    // MQTT 5 and MQTT 3.1 clients are told that their protocol version is not supported.
    let v5 = [
        0x10, 21, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 30, // keep-alive 30 s
        5, 0x11, 0, 0, 0, 60, // properties: session expiry 60 s
        0, 3, b'r', b'a', b'w',
    ];
    assert_eq!(send_raw(addr, &v5).await, [0x20, 2, 0, 1]);
    let v31 = [
        0x10, 17, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 0x02, 0, 30, 0, 3, b'r', b'a', b'w',
    ];
    assert_eq!(send_raw(addr, &v31).await, [0x20, 2, 0, 1]);

    // The subscriber still gets messages, including one whose topic starts with a multi-byte
    // character (which makes rumqttc's own topic matcher panic).
    let mut publisher = Client::connect(&broker, "publisher").await;
    publisher
        .publish("é/temperature", b"22", QoS::AtLeastOnce, false)
        .await;
    let got = subscriber.next_publish().await;
    assert_eq!(got.topic, "é/temperature");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_does_not_read_is_disconnected_not_buffered() {
    let broker = broker().await;
    let mut slow = TcpStream::connect(broker.local_addr())
        .await
        .expect("connect");
    // CONNECT, then SUBSCRIBE to "big" at QoS 0; then read only the CONNACK and the SUBACK.
    let subscribe = [0x82, 8, 0, 1, 0, 3, b'b', b'i', b'g', 0];
    slow.write_all(&[CONNECT, &subscribe].concat())
        .await
        .expect("write");
    let mut acks = [0; 9];
    tokio::time::timeout(DEADLINE, slow.read_exact(&mut acks))
        .await
        .expect("CONNACK and SUBACK in time")
        .expect("read");
    assert_eq!(acks, [0x20, 2, 0, 0, 0x90, 3, 0, 1, 0]);

    // 64 MB for a client that reads nothing: far more than its queue (16 MiB) and the kernel's
    // socket buffers hold.
    const MESSAGES: usize = 64;
    const SIZE: usize = 1_000_000;
    let mut publisher = Client::connect(&broker, "publisher").await;
    for _ in 0..MESSAGES {
        publisher
            .publish("big", &vec![b'x'; SIZE], QoS::AtLeastOnce, false)
            .await;
    }
    // What the kernel had buffered can still be read, then the connection ends.
    let mut received = Vec::new();
    let read = tokio::time::timeout(DEADLINE, slow.read_to_end(&mut received)).await;
    assert!(
        matches!(read, Ok(Ok(_))),
        "the slow subscriber is still connected: {read:?}"
    );
    assert!(
        received.len() < MESSAGES * SIZE / 2,
        "{} bytes were buffered for it",
        received.len()
    );
    // The publisher was not affected.
    publisher
        .publish("big", b"1", QoS::AtLeastOnce, false)
        .await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_id_in_use_is_taken_over_by_the_new_connection() {
    let broker = broker().await;
    let mut old = Client::connect(&broker, "same").await;
    let mut new = Client::connect(&broker, "same").await;
    assert!(old.disconnected_within(DEADLINE).await);
    new.subscribe("t", QoS::AtMostOnce).await;
    let mut publisher = Client::connect(&broker, "publisher").await;
    publisher.publish("t", b"1", QoS::AtMostOnce, false).await;
    assert_eq!(&new.next_publish().await.payload[..], b"1");
    broker.shutdown().await;
}

const BOT: &str = "bot@localhost";
const STARTUP: Duration = Duration::from_secs(20);

/// The real bridge, as a child process, reads from the embedded broker in this process and
/// answers over the bundled XMPP server; it also survives the broker restarting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_answers_with_values_from_the_embedded_broker() {
    let mut broker = broker().await;
    let addr = broker.local_addr();
    let port = addr.port();
    // Retained before the bridge starts: its first answer.
    publish(port, "sensors/temperature", b"19.25", true).await;

    // The fixtures block (they wait for processes); keep the broker's runtime free meanwhile.
    let dir = tempfile::tempdir().expect("temp dir");
    let (xmpp, bot) = tokio::task::block_in_place(|| {
        let xmpp = ServerProcess::start();
        xmpp.add_user("bot", "bot-secret");
        xmpp.add_user("alice", "alice-secret");
        let args = [
            "bridge".to_string(),
            "--mqtt-port".into(),
            port.to_string(),
            "--jid".into(),
            BOT.into(),
            "--password-file".into(),
            password_file(dir.path(), "bot.pw", "bot-secret"),
            "--xmpp-server".into(),
            xmpp.address(),
            "--xmpp-ca".into(),
            xmpp.ca_file.to_string_lossy().into_owned(),
            "--unit".into(),
            "°C".into(),
        ];
        let bot = BinaryProcess::spawn(&args.iter().map(String::as_str).collect::<Vec<_>>());
        bot.wait_log("subscribed", 1, STARTUP);
        bot.wait_log("answering chat messages", 1, STARTUP);
        (xmpp, bot)
    });
    let mut alice =
        ChatClient::login("alice@localhost", "alice-secret", xmpp.port, &xmpp.ca_file).await;

    let reply = alice
        .ask_until(BOT, |r| !r.starts_with("No reading"), DEADLINE)
        .await;
    assert!(
        reply.starts_with("19.25 °C (sensors/temperature, retained by the broker, at least "),
        "{reply}"
    );

    publish(port, "sensors/temperature", b"23.5", false).await;
    let reply = alice
        .ask_until(BOT, |r| r.starts_with("23.5 °C"), DEADLINE)
        .await;
    assert!(
        reply.starts_with("23.5 °C (sensors/temperature, ") && reply.ends_with(" s ago)"),
        "{reply}"
    );

    // The broker goes away and comes back on the same port: the bridge reconnects with a new
    // clean session and subscribes again.
    broker.shutdown().await;
    broker = EmbeddedBroker::start(addr)
        .await
        .expect("restart on the same port");
    tokio::task::block_in_place(|| bot.wait_log("subscribed", 2, STARTUP));
    publish(port, "sensors/temperature", b"24.75", false).await;
    alice
        .ask_until(BOT, |r| r.starts_with("24.75 °C"), DEADLINE)
        .await;

    drop(bot);
    broker.shutdown().await;
}
