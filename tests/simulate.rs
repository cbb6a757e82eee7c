//! `mqtt2xmpp simulate` end to end: the real binary publishes to a private mosquitto on a free
//! loopback port, and a rumqttc subscriber on `#` checks what the broker passed on: how many
//! messages, on which topics, with which payloads, retained or not.
//!
//! "Exactly N" needs to know when the broker has passed on everything: after the simulator has
//! exited (with QoS 1, only once the broker acknowledged every message) the test publishes a
//! sentinel message; mosquitto handles messages one at a time and keeps each subscriber's
//! queue in order, so everything before the sentinel is everything the simulator sent.
//!
//! Without mosquitto these tests skip, unless CI=true, where a missing broker fails them.

mod support;

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use support::files::password_file;
use support::mqtt::publish;
use support::peers::Mosquitto;
use support::process::BinaryProcess;
use tokio::sync::{mpsc, oneshot};

const SENTINEL: &str = "test/sentinel";
const DEADLINE: Duration = Duration::from_secs(30);

/// A message as a subscriber received it.
#[derive(Debug, Clone)]
struct Received {
    topic: String,
    payload: String,
    retain: bool,
}

/// A subscriber on the test broker, receiving in a task of its own.
struct Subscriber {
    messages: mpsc::UnboundedReceiver<Result<Received, String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    /// Subscribes to `filter` with QoS 1 and returns once the broker confirmed it.
    async fn start(port: u16, filter: &str) -> Subscriber {
        let id = format!("watch{:x}", rand::random::<u32>());
        let (client, mut eventloop) = AsyncClient::new(MqttOptions::new(id, "127.0.0.1", port), 10);
        client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("queue subscribe");
        let (sender, messages) = mpsc::unbounded_channel();
        let (ready, subscribed) = oneshot::channel();
        let task = tokio::spawn(async move {
            // The client lives as long as the loop: dropping it would end the event loop.
            let _client = client;
            let mut ready = Some(ready);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(ready) = ready.take() {
                            let _ = ready.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let received = Received {
                            topic: p.topic.clone(),
                            payload: String::from_utf8_lossy(&p.payload).into_owned(),
                            retain: p.retain,
                        };
                        if sender.send(Ok(received)).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = sender.send(Err(format!("subscriber lost the broker: {e}")));
                        return;
                    }
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), subscribed)
            .await
            .expect("no SUBACK within 10 s")
            .expect("subscriber stopped before its SUBACK");
        Subscriber { messages, task }
    }

    /// Publishes the sentinel and returns every message received before it.
    async fn until_sentinel(&mut self, port: u16) -> Vec<Received> {
        publish(port, SENTINEL, b"end", false).await;
        let mut received = Vec::new();
        let collected = tokio::time::timeout(DEADLINE, async {
            while let Some(message) = self.messages.recv().await {
                let message = message.unwrap_or_else(|e| panic!("{e}"));
                if message.topic == SENTINEL {
                    return;
                }
                received.push(message);
            }
            panic!("subscriber stopped before the sentinel");
        })
        .await;
        assert!(
            collected.is_ok(),
            "no sentinel within {DEADLINE:?}; got {} messages",
            received.len()
        );
        received
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `simulate` with `--mqtt-port` for `broker` plus `args`.
fn simulate(broker: &Mosquitto, args: &[&str]) -> BinaryProcess {
    let port = broker.port.to_string();
    let mut all = vec!["simulate", "--mqtt-port", &port];
    all.extend_from_slice(args);
    BinaryProcess::spawn(&all)
}

/// Waits for the simulator to exit by itself, without stalling the runtime's other tasks.
fn wait_exit(bot: &mut BinaryProcess) -> std::process::ExitStatus {
    tokio::task::block_in_place(|| bot.wait_exit(DEADLINE))
}

/// A value in a building payload, checked against the grammar: `{"value": <number>, "unit":
/// <unit of the kind>, "ts": <RFC 3339 UTC, seconds>}`, with `ts` between `start` and now.
fn check_building_message(
    message: &Received,
    building: &str,
    floors: u16,
    rooms: u16,
    start: SystemTime,
) -> (String, f64) {
    let levels: Vec<&str> = message.topic.split('/').collect();
    let [b, floor, wing, room, kind] = levels.as_slice() else {
        panic!("not five levels: {}", message.topic);
    };
    assert_eq!(*b, building, "{}", message.topic);
    let floor: u16 = floor
        .strip_prefix("P_")
        .and_then(|f| f.parse().ok())
        .unwrap_or_else(|| panic!("bad floor in {}", message.topic));
    assert!((1..=floors).contains(&floor), "{}", message.topic);
    assert!(["N", "S", "E", "O"].contains(wing), "{}", message.topic);
    let room: u16 = room
        .parse()
        .unwrap_or_else(|_| panic!("bad room in {}", message.topic));
    assert!((1..=rooms).contains(&room), "{}", message.topic);
    let (unit, range) = match *kind {
        "TEMP" => ("C", 18.0..=28.0),
        "HUM" => ("%", 30.0..=70.0),
        "LUX" => ("lx", 0.0..=1500.0),
        "VIBR" => ("mm/s", 0.0..=10.0),
        other => panic!("bad kind {other} in {}", message.topic),
    };
    let json: serde_json::Value = serde_json::from_str(&message.payload)
        .unwrap_or_else(|e| panic!("{e}: {}", message.payload));
    let object = json.as_object().expect("a JSON object");
    assert_eq!(object.len(), 3, "{}", message.payload);
    assert_eq!(object["unit"], unit, "{}", message.payload);
    let value = object["value"].as_f64().expect("a number");
    assert!(range.contains(&value), "{} = {value}", message.topic);
    let ts = object["ts"].as_str().expect("ts is a string");
    assert!(ts.ends_with('Z'), "{ts}");
    let ts = humantime::parse_rfc3339(ts).unwrap_or_else(|e| panic!("{ts}: {e}"));
    let lower = start - Duration::from_secs(1);
    let upper = SystemTime::now() + Duration::from_secs(1);
    assert!(lower <= ts && ts <= upper, "{message:?}");
    (kind.to_string(), value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_mode_publishes_exactly_count_plain_numbers() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let mut watch = Subscriber::start(broker.port, "#").await;
    let mut sim = simulate(&broker, &["--count", "5", "--interval", "20ms"]);
    assert!(wait_exit(&mut sim).success(), "{}", sim.log());
    let received = watch.until_sentinel(broker.port).await;
    assert_eq!(received.len(), 5, "{received:?}");
    for message in &received {
        assert_eq!(message.topic, "sensors/temperature");
        assert!(!message.retain);
        let (whole, decimals) = message.payload.split_once('.').expect("a decimal point");
        assert!(whole.bytes().all(|b| b.is_ascii_digit()) && decimals.len() == 2);
        let value: f64 = message.payload.parse().expect("a plain number");
        assert!((15.0..=30.0).contains(&value), "{value}");
    }
    assert!(sim.log().contains("published 5 messages"), "{}", sim.log());
}

/// Building mode, QoS 1 (default) or 0: exactly `count` messages, all well-formed, none
/// retained.
async fn building_mode_publishes_exactly_count(qos: &str) {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let mut watch = Subscriber::start(broker.port, "#").await;
    let start = SystemTime::now();
    let mut sim = simulate(
        &broker,
        &[
            "--building",
            "EDIFICIO_1",
            "--floors",
            "2",
            "--rooms-per-wing",
            "3",
            "--rate",
            "1000",
            "--count",
            "300",
            "--qos",
            qos,
        ],
    );
    assert!(wait_exit(&mut sim).success(), "{}", sim.log());
    let received = watch.until_sentinel(broker.port).await;
    assert_eq!(received.len(), 300);
    let mut kinds = HashMap::new();
    for message in &received {
        assert!(!message.retain, "{message:?}");
        let (kind, _) = check_building_message(message, "EDIFICIO_1", 2, 3, start);
        *kinds.entry(kind).or_insert(0) += 1;
    }
    assert_eq!(kinds.len(), 4, "every kind of sensor speaks: {kinds:?}");
    assert!(
        sim.log().contains("published 300 messages"),
        "{}",
        sim.log()
    );

    // Nothing was retained: a new subscriber gets nothing before the sentinel.
    let mut late = Subscriber::start(broker.port, "#").await;
    let retained = late.until_sentinel(broker.port).await;
    assert!(retained.is_empty(), "{retained:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn building_mode_publishes_exactly_count_valid_messages_with_qos1() {
    building_mode_publishes_exactly_count("1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn building_mode_publishes_exactly_count_valid_messages_with_qos0() {
    building_mode_publishes_exactly_count("0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_leaves_the_last_reading_of_every_sensor_with_the_broker() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let mut watch = Subscriber::start(broker.port, "#").await;
    let start = SystemTime::now();
    let mut sim = simulate(
        &broker,
        &[
            "--building",
            "LAB",
            "--floors",
            "1",
            "--rooms-per-wing",
            "1",
            "--rate",
            "500",
            "--count",
            "120",
            "--retain",
        ],
    );
    assert!(wait_exit(&mut sim).success(), "{}", sim.log());
    let live = watch.until_sentinel(broker.port).await;
    assert_eq!(live.len(), 120);
    let mut last = HashMap::new();
    for message in &live {
        check_building_message(message, "LAB", 1, 1, start);
        last.insert(message.topic.clone(), message.payload.clone());
    }

    // A subscriber arriving afterwards gets each sensor's last reading, flagged as retained.
    let mut late = Subscriber::start(broker.port, "#").await;
    let retained = late.until_sentinel(broker.port).await;
    assert_eq!(retained.len(), last.len(), "{retained:?}");
    for message in &retained {
        assert!(message.retain, "{message:?}");
        assert_eq!(Some(&message.payload), last.get(&message.topic));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly_with_a_summary() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let mut watch = Subscriber::start(broker.port, "#").await;
    let mut sim = simulate(&broker, &["--interval", "50ms"]);
    // Three readings through the broker: the simulator is up and publishing.
    for _ in 0..3 {
        let message = tokio::time::timeout(DEADLINE, watch.messages.recv())
            .await
            .expect("a reading within the deadline")
            .expect("subscriber running")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(message.topic, "sensors/temperature");
    }
    let (status, took) = tokio::task::block_in_place(|| sim.terminate(DEADLINE));
    assert!(status.success(), "{}", sim.log());
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert!(sim.log().contains("messages/s"), "{}", sim.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_before_count_is_reached_is_not_success() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let mut sim = simulate(
        &broker,
        &["--building", "B", "--rate", "20", "--count", "1000000"],
    );
    sim.wait_log("connected to the MQTT broker", 1, DEADLINE);
    let (status, _) = tokio::task::block_in_place(|| sim.terminate(DEADLINE));
    assert!(!status.success(), "{}", sim.log());
    assert!(
        sim.log().contains("of the 1000000 messages"),
        "{}",
        sim.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_for_a_broker_that_is_down_then_delivers() {
    let Some(mut broker) = Mosquitto::start() else {
        return;
    };
    broker.stop();
    let mut sim = simulate(&broker, &["--count", "3", "--interval", "10ms"]);
    sim.wait_log("retrying in", 1, DEADLINE);
    broker.restart();
    assert!(wait_exit(&mut sim).success(), "{}", sim.log());
    assert!(sim.log().contains("published 3 messages"), "{}", sim.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_is_a_clear_error() {
    let Some(broker) = Mosquitto::start_with_user("sensor", "right") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let wrong = password_file(dir.path(), "mqtt.pw", "wrong");
    let mut sim = simulate(
        &broker,
        &[
            "--count",
            "1",
            "--mqtt-username",
            "sensor",
            "--mqtt-password-file",
            &wrong,
        ],
    );
    assert!(!wait_exit(&mut sim).success(), "{}", sim.log());
    assert!(
        sim.log().contains("refused the login as sensor"),
        "{}",
        sim.log()
    );
    assert!(
        !sim.log().contains("wrong"),
        "the password stays out of the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_over_tls_and_refuses_an_untrusted_broker() {
    let Some(broker) = Mosquitto::start_tls() else {
        return;
    };
    let tls_port = broker
        .tls_port
        .expect("start_tls gives a TLS port")
        .to_string();
    let ca = broker
        .ca_file
        .as_ref()
        .expect("start_tls gives a CA file")
        .to_string_lossy()
        .into_owned();
    let mut watch = Subscriber::start(broker.port, "#").await;
    let mut sim = BinaryProcess::spawn(&[
        "simulate",
        "--mqtt-host",
        "localhost",
        "--mqtt-port",
        &tls_port,
        "--mqtt-ca",
        &ca,
        "--count",
        "3",
        "--interval",
        "10ms",
    ]);
    assert!(wait_exit(&mut sim).success(), "{}", sim.log());
    assert_eq!(watch.until_sentinel(broker.port).await.len(), 3);

    // Without --mqtt-ca the self-signed certificate is not trusted: a clear error, no retries.
    let mut untrusted = BinaryProcess::spawn(&[
        "simulate",
        "--mqtt-host",
        "localhost",
        "--mqtt-port",
        &tls_port,
        "--mqtt-tls",
        "--count",
        "1",
    ]);
    assert!(!wait_exit(&mut untrusted).success(), "{}", untrusted.log());
    assert!(
        untrusted.log().contains("is not trusted"),
        "{}",
        untrusted.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_run_still_ends_with_count_delivered() {
    let Some(mut broker) = Mosquitto::start() else {
        return;
    };
    let mut sim = simulate(
        &broker,
        &["--building", "B", "--rate", "200", "--count", "400"],
    );
    sim.wait_log("publishing", 50, DEADLINE);
    tokio::task::block_in_place(|| broker.restart());
    assert!(wait_exit(&mut sim).success(), "{}", sim.log());
    let log = sim.log();
    assert!(log.contains("reconnected to the MQTT broker"), "{log}");
    assert!(log.contains("published 400 messages"), "{log}");
}
