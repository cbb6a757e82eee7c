//! The bridge's MQTT side over TLS, end to end: mosquitto with a plain listener (for the test's
//! publisher) and a TLS listener presenting a self-signed certificate for "localhost" (for the
//! bridge), and Prosody for the chat side. Every peer runs on free loopback ports with private
//! configuration for each test.
//!
//! Without the packages these tests skip, unless CI=true, where a missing peer fails them.

mod support;

use std::time::Duration;

use support::chat::ChatClient;
use support::files::password_file;
use support::mqtt::publish;
use support::peers::{Mosquitto, Prosody};
use support::process::BinaryProcess;

const BOT: &str = "bot@localhost";
const ALICE: &str = "alice@localhost";
const TOPIC: &str = "sensors/temperature";
const STARTUP: Duration = Duration::from_secs(20);

/// Mosquitto with a TLS listener, Prosody with `bot` and `alice`, and a temporary directory for
/// password files.
struct World {
    mqtt: Mosquitto,
    xmpp: Prosody,
    dir: tempfile::TempDir,
}

impl World {
    fn start() -> Option<World> {
        let mqtt = Mosquitto::start_tls()?;
        let xmpp = Prosody::start()?;
        xmpp.register("bot", "bot-secret");
        xmpp.register("alice", "alice-secret");
        Some(World {
            mqtt,
            xmpp,
            dir: tempfile::tempdir().expect("temp dir"),
        })
    }

    /// The broker's TLS port.
    fn tls_port(&self) -> u16 {
        self.mqtt.tls_port.expect("start_tls gives a TLS port")
    }

    /// The certificate the broker's TLS listener presents.
    fn mqtt_ca(&self) -> String {
        let ca = self
            .mqtt
            .ca_file
            .as_ref()
            .expect("start_tls gives a CA file");
        ca.to_string_lossy().into_owned()
    }

    /// `--mqtt-host localhost` (the name in the broker's certificate) and the TLS port, plus
    /// `extra` MQTT flags.
    fn mqtt_tls_args(&self, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "--mqtt-host".into(),
            "localhost".into(),
            "--mqtt-port".into(),
            self.tls_port().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    /// Bridge flags for this world's XMPP side, plus `mqtt` flags.
    fn bridge_args(&self, mqtt: &[String]) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "bridge".into(),
            "--jid".into(),
            BOT.into(),
            "--password-file".into(),
            password_file(self.dir.path(), "bot.pw", "bot-secret"),
            "--xmpp-server".into(),
            format!("127.0.0.1:{}", self.xmpp.port),
            "--xmpp-ca".into(),
            self.xmpp.ca_file.to_string_lossy().into_owned(),
            "--unit".into(),
            "°C".into(),
        ];
        args.extend(mqtt.iter().cloned());
        args
    }

    fn spawn_bot(&self, mqtt: &[String]) -> BinaryProcess {
        let args = self.bridge_args(mqtt);
        BinaryProcess::spawn(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// Starts the bridge on the broker's TLS listener, trusting its certificate with
    /// `--mqtt-ca` alone (which implies `--mqtt-tls`), and waits until it is online and
    /// subscribed.
    fn start_tls_bot(&self) -> BinaryProcess {
        let ca = self.mqtt_ca();
        let bot = self.spawn_bot(&self.mqtt_tls_args(&["--mqtt-ca", &ca]));
        bot.wait_log("subscribed", 1, STARTUP);
        bot.wait_log("answering chat messages", 1, STARTUP);
        bot
    }

    async fn alice(&self) -> ChatClient {
        ChatClient::login(ALICE, "alice-secret", self.xmpp.port, &self.xmpp.ca_file).await
    }

    /// How many MQTT sessions of the bridge mosquitto logged on its TLS port (all runs): proof
    /// that the bridge really used TLS, as that listener speaks nothing else.
    ///
    /// A bare connection on the port proves nothing: the fixture's readiness probe makes one
    /// too. So each "New connection from PEER on port TLS_PORT." is paired with the
    /// "New client connected from PEER as mqtt2xmpp…" that mosquitto logs once the handshake and
    /// MQTT CONNECT are done (the bridge's client identifiers start with "mqtt2xmpp").
    fn bridge_sessions_over_tls(&self) -> usize {
        let log = self.mqtt.log();
        let on_tls_port = format!(" on port {}.", self.tls_port());
        let mut pending: Vec<&str> = Vec::new();
        let mut sessions = 0;
        for line in log.lines().map(str::trim_end) {
            if line.ends_with(" starting") {
                // A new broker run: connections of the last one are gone.
                pending.clear();
            } else if let Some((_, rest)) = line.split_once("New connection from ") {
                // A peer address may be reused by a later connection, on either listener.
                let peer = rest.split(' ').next().unwrap_or_default();
                pending.retain(|p| *p != peer);
                if line.ends_with(&on_tls_port) {
                    pending.push(peer);
                }
            } else if let Some((_, rest)) = line.split_once("New client connected from ") {
                if let Some((peer, client)) = rest.split_once(" as ") {
                    if client.starts_with("mqtt2xmpp") && pending.contains(&peer) {
                        pending.retain(|p| *p != peer);
                        sessions += 1;
                    }
                }
            }
        }
        sessions
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_a_value_received_over_tls() {
    let Some(world) = World::start() else { return };
    let bot = world.start_tls_bot();
    assert_eq!(
        world.bridge_sessions_over_tls(),
        1,
        "mosquitto log:\n{}",
        world.mqtt.log()
    );
    let mut alice = world.alice().await;

    // Published on the plain listener, delivered to the bridge over TLS.
    publish(world.mqtt.port, TOPIC, b"23.5", false).await;
    let reply = alice
        .ask_until(BOT, |r| r.starts_with("23.5 °C"), Duration::from_secs(10))
        .await;
    assert!(
        reply.starts_with("23.5 °C (sensors/temperature, ") && reply.ends_with(" s ago)"),
        "{reply}"
    );
    let log = bot.log();
    assert!(log.contains("connected to the MQTT broker"), "{log}");
    assert!(!log.contains("MQTT connection failed"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_over_tls_after_a_broker_restart() {
    let Some(mut world) = World::start() else {
        return;
    };
    let bot = world.start_tls_bot();
    let mut alice = world.alice().await;
    publish(world.mqtt.port, TOPIC, b"20", false).await;
    alice
        .ask_until(BOT, |r| r.starts_with("20 °C"), Duration::from_secs(10))
        .await;

    let tls_port = world.tls_port();
    world.mqtt.restart();
    assert_eq!(
        world.mqtt.tls_port,
        Some(tls_port),
        "restart must keep the TLS port"
    );
    // The bridge reconnects with backoff, verifies the same certificate again and subscribes
    // on the new session.
    bot.wait_log("subscribed", 2, Duration::from_secs(30));
    publish(world.mqtt.port, TOPIC, b"21.5", false).await;
    alice
        .ask_until(BOT, |r| r.starts_with("21.5 °C"), Duration::from_secs(10))
        .await;
    let log = bot.log();
    assert!(log.contains("MQTT connection failed"), "{log}");
    assert_eq!(
        world.bridge_sessions_over_tls(),
        2,
        "mosquitto log:\n{}",
        world.mqtt.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_broker_certificate_is_a_clear_error_not_an_endless_retry() {
    let Some(world) = World::start() else { return };
    // --mqtt-tls without --mqtt-ca: the self-signed certificate is in no system trust store.
    let mut bot = world.spawn_bot(&world.mqtt_tls_args(&["--mqtt-tls"]));
    let status = bot.wait_exit(Duration::from_secs(30));
    let log = bot.log();
    assert!(!status.success(), "{status:?}\n{log}");
    assert!(
        log.contains("certificate") && log.contains("--mqtt-ca"),
        "the error does not say to give the certificate with --mqtt-ca:\n{log}"
    );
    assert_eq!(
        world.bridge_sessions_over_tls(),
        0,
        "mosquitto log:\n{}",
        world.mqtt.log()
    );
}
