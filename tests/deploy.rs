//! The files in deploy/ run for real, so that a change to them that breaks a deployment breaks a
//! test:
//!
//! - `deploy/mosquitto-mqtt2xmpp.conf`: mosquitto runs from the snippet itself (only its
//!   listener port and its password and ACL file paths are replaced), with the password file
//!   and the ACL made as its comments say; the bridge logs in as the snippet's user, a sensor
//!   publishes, and a chat client gets the reading. The bridge's user cannot publish.
//! - `deploy/ejabberd-mqtt2xmpp.yml`: a private ejabberd node runs from that config (only the
//!   listener port and the certificate path are replaced), and the bridge answers a chat client
//!   through it.
//!
//! Both skip without mosquitto or ejabberd (Debian packages `mosquitto`, `mosquitto-clients`,
//! `ejabberd`), unless CI=true, where a missing peer fails them (see `peers::find_peer`).

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS};
use rumqttc::{Publish, SubscribeReasonCode};
use support::chat::ChatClient;
use support::ejabberd::{run_ok, Ejabberd};
use support::files::password_file;
use support::mqtt::publish;
use support::peers::{find_peer, Mosquitto};
use support::process::BinaryProcess;
use support::server::{ServerProcess, XmppEndpoint};

const MOSQUITTO_SNIPPET_PATH: &str = "deploy/mosquitto-mqtt2xmpp.conf";
const MOSQUITTO_SNIPPET: &str = include_str!("../deploy/mosquitto-mqtt2xmpp.conf");
const BRIDGE_ENV_PATH: &str = "deploy/bridge.env.example";
const BRIDGE_ENV: &str = include_str!("../deploy/bridge.env.example");

const BOT: &str = "bot@localhost";
const ALICE: &str = "alice@localhost";
/// How long the bridge may take to log in to both sides.
const STARTUP: Duration = Duration::from_secs(20);
/// How long one MQTT exchange (connect, publish or subscribe, acknowledgement) may take.
const MQTT_EXCHANGE: Duration = Duration::from_secs(10);
/// Interval between two looks at a port, a log or a process.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

// ---------------------------------------------------------------------------------------------
// mosquitto

/// What `deploy/mosquitto-mqtt2xmpp.conf` says: its directives, and the commands its comments
/// tell the reader to run.
#[derive(Debug)]
struct MosquittoSnippet {
    /// The address of its `listener PORT ADDRESS` line.
    listener_address: String,
    /// Its `password_file` and `acl_file` paths.
    password_file: String,
    acl_file: String,
    /// The user of the comment's `mosquitto_passwd -c FILE USER`.
    bridge_user: String,
    /// What the comment's `printf '...' > FILE` writes into the ACL file.
    acl: String,
    /// The ACL rule the comment gives sensors ("topic write sensors/#").
    sensor_rule: String,
}

impl MosquittoSnippet {
    fn parse(text: &str) -> MosquittoSnippet {
        let directive = |key: &str| -> String {
            let values: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|line| !line.starts_with('#'))
                .filter_map(|line| line.split_once(char::is_whitespace))
                .filter(|(name, _)| *name == key)
                .map(|(_, value)| value.trim())
                .collect();
            assert_eq!(
                values.len(),
                1,
                "{MOSQUITTO_SNIPPET_PATH} should have exactly one `{key}` line, has {values:?}"
            );
            values[0].to_owned()
        };
        let comments: Vec<&str> = text
            .lines()
            .filter_map(|line| line.trim().strip_prefix('#'))
            .map(str::trim)
            .collect();
        let comment = |start: &str| -> &str {
            comments
                .iter()
                .find(|comment| comment.starts_with(start))
                .unwrap_or_else(|| {
                    panic!("no comment in {MOSQUITTO_SNIPPET_PATH} starts with {start:?}")
                })
        };

        let listener = directive("listener");
        let (port, listener_address) = listener.split_once(' ').unwrap_or_else(|| {
            panic!("`listener {listener}` in {MOSQUITTO_SNIPPET_PATH} has no address")
        });
        assert!(
            port.parse::<u16>().is_ok(),
            "`listener {listener}` in {MOSQUITTO_SNIPPET_PATH}: not a port"
        );

        // "mosquitto_passwd -c FILE USER": creates the password file with the bridge's user.
        let passwd = comment("mosquitto_passwd ");
        let [_, "-c", passwd_path, bridge_user] = passwd.split_whitespace().collect::<Vec<_>>()[..]
        else {
            panic!("expected `mosquitto_passwd -c FILE USER` in {MOSQUITTO_SNIPPET_PATH}: {passwd}")
        };

        // "printf 'user U\ntopic read T\n' > FILE": the bridge's ACL.
        let printf = comment("printf '");
        let (acl_escaped, redirect) = printf["printf '".len()..]
            .split_once('\'')
            .unwrap_or_else(|| panic!("unterminated printf in {MOSQUITTO_SNIPPET_PATH}: {printf}"));
        let acl_path = redirect
            .trim()
            .strip_prefix('>')
            .unwrap_or_else(|| panic!("expected `printf '...' > FILE`: {printf}"))
            .trim();
        assert!(
            !acl_escaped.replace("\\n", "").contains('\\'),
            "the printf in {MOSQUITTO_SNIPPET_PATH} uses escapes other than \\n: {printf}"
        );

        // (sensors ... need their own users with "topic write sensors/#")
        let sensor_rule = comments
            .iter()
            .find_map(|comment| {
                let rule = &comment[comment.find("\"topic write ")? + 1..];
                Some(rule[..rule.find('"')?].to_owned())
            })
            .unwrap_or_else(|| {
                panic!("no comment in {MOSQUITTO_SNIPPET_PATH} quotes a \"topic write ...\" rule")
            });

        let snippet = MosquittoSnippet {
            listener_address: listener_address.trim().to_owned(),
            password_file: directive("password_file"),
            acl_file: directive("acl_file"),
            bridge_user: bridge_user.to_owned(),
            acl: acl_escaped.replace("\\n", "\n"),
            sensor_rule,
        };
        // The commands must create the files the directives name.
        assert_eq!(
            passwd_path, snippet.password_file,
            "{MOSQUITTO_SNIPPET_PATH}: mosquitto_passwd writes another file than password_file"
        );
        assert_eq!(
            acl_path, snippet.acl_file,
            "{MOSQUITTO_SNIPPET_PATH}: the printf writes another file than acl_file"
        );
        assert_eq!(
            directive("allow_anonymous"),
            "false",
            "{MOSQUITTO_SNIPPET_PATH} must refuse anonymous clients"
        );
        snippet
    }

    /// The snippet's own lines, with the listener's port and the two file paths replaced, after
    /// what Debian's /etc/mosquitto/mosquitto.conf contributes (adapted to a test: no
    /// persistence, log to stderr; it defines no listener of its own).
    fn config(&self, port: u16, password_file: &Path, acl_file: &Path) -> String {
        let mut config = format!(
            "# Written by tests/deploy.rs from {MOSQUITTO_SNIPPET_PATH}\n\
             persistence false\n\
             log_dest stderr\n"
        );
        let mut replaced = 0;
        for line in MOSQUITTO_SNIPPET.lines() {
            let new = match line.split_once(' ') {
                Some(("listener", _)) => format!("listener {port} {}", self.listener_address),
                Some(("password_file", _)) => format!("password_file {}", conf_path(password_file)),
                Some(("acl_file", _)) => format!("acl_file {}", conf_path(acl_file)),
                _ => line.to_owned(),
            };
            replaced += usize::from(new != line);
            config.push_str(&new);
            config.push('\n');
        }
        assert_eq!(replaced, 3, "expected to replace 3 lines:\n{config}");
        config
    }
}

#[test]
fn the_mosquitto_snippet_names_the_bridge_user_of_the_env_example() {
    let snippet = MosquittoSnippet::parse(MOSQUITTO_SNIPPET);
    let env = |key: &str| {
        BRIDGE_ENV
            .lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("{BRIDGE_ENV_PATH} does not set {key}"))
    };
    assert_eq!(env("MQTT2XMPP_MQTT_USERNAME"), snippet.bridge_user);
    let topic = env("MQTT2XMPP_TOPIC");
    let readable = snippet
        .acl
        .lines()
        .filter_map(|line| line.strip_prefix("topic read "))
        .any(|filter| topic_matches(filter.trim(), topic));
    assert!(
        readable,
        "the ACL in {MOSQUITTO_SNIPPET_PATH} does not let the bridge read {topic}:\n{}",
        snippet.acl
    );
    assert_eq!(
        env("MQTT2XMPP_MQTT_HOST"),
        snippet.listener_address,
        "{BRIDGE_ENV_PATH} should connect where {MOSQUITTO_SNIPPET_PATH} listens"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_reads_sensors_through_mosquitto_set_up_from_the_snippet() {
    let snippet = MosquittoSnippet::parse(MOSQUITTO_SNIPPET);
    let Some(mosquitto_passwd) = find_peer("mosquitto_passwd", &["/usr/bin/mosquitto_passwd"])
    else {
        return;
    };
    let bridge = (snippet.bridge_user.as_str(), "bridge mqtt secret");
    let sensor = ("sensor", "sensor secret");

    // The password and ACL files, where /etc/mosquitto would be: a directory anyone may read,
    // because a broker started by root reads them after switching to the `mosquitto` user.
    let files = tempfile::Builder::new()
        .prefix("mqtt2xmpp-deploy-")
        .tempdir()
        .expect("temp dir");
    fs::set_permissions(files.path(), fs::Permissions::from_mode(0o755)).expect("chmod 755");
    let passwd_file = files.path().join("mqtt2xmpp.passwd");
    let acl_file = files.path().join("mqtt2xmpp.acl");
    // As the comment says (with -b, to pass the password on the command line), and the sensor.
    run_ok(
        Command::new(&mosquitto_passwd)
            .args(["-b", "-c"])
            .arg(&passwd_file)
            .args([bridge.0, bridge.1]),
        "mosquitto_passwd -b -c",
    );
    run_ok(
        Command::new(&mosquitto_passwd)
            .arg("-b")
            .arg(&passwd_file)
            .args([sensor.0, sensor.1]),
        "mosquitto_passwd -b",
    );
    let acl = format!(
        "{}\nuser {}\n{}\n",
        snippet.acl, sensor.0, snippet.sensor_rule
    );
    fs::write(&acl_file, &acl).expect("write the ACL file");
    // What both commands leave with Debian's default umask 022, whatever this process's is.
    for file in [&passwd_file, &acl_file] {
        fs::set_permissions(file, fs::Permissions::from_mode(0o644)).expect("chmod 644");
    }

    let Some(broker) =
        Mosquitto::start_with_config(|port| snippet.config(port, &passwd_file, &acl_file))
    else {
        return;
    };
    let server = ServerProcess::start();
    server.add_user("bot", "bot-secret");
    server.add_user("alice", "alice-secret");
    let dir = tempfile::tempdir().expect("temp dir");
    let mqtt_port = broker.port.to_string();
    let mqtt_password_file = password_file(dir.path(), "mqtt.pw", bridge.1);
    let xmpp_password_file = password_file(dir.path(), "bot.pw", "bot-secret");
    let xmpp_server = server.address();
    let xmpp_ca = server.ca_file.to_string_lossy().into_owned();
    let bot = BinaryProcess::spawn(&[
        "bridge",
        "--mqtt-port",
        &mqtt_port,
        "--mqtt-username",
        bridge.0,
        "--mqtt-password-file",
        &mqtt_password_file,
        "--topic",
        "sensors/temperature",
        "--jid",
        BOT,
        "--password-file",
        &xmpp_password_file,
        "--xmpp-server",
        &xmpp_server,
        "--xmpp-ca",
        &xmpp_ca,
        "--unit",
        "°C",
    ]);
    wait_online(&bot);
    let mut alice = ChatClient::login(ALICE, "alice-secret", server.port, &server.ca_file).await;

    // The bridge's user may read but not write: mosquitto acknowledges its publish (MQTT 3.1.1
    // has no way to refuse one) and drops it. A subscriber with the bridge's credentials sees
    // the sensor's message, published after it, first.
    let mut watcher = Subscriber::connect(broker.port, bridge, "sensors/#").await;
    publish_as(broker.port, bridge, "sensors/temperature", "99.5").await;
    publish_as(broker.port, sensor, "sensors/temperature", "23.5").await;
    let first = watcher
        .next_publish(MQTT_EXCHANGE)
        .await
        .unwrap_or_else(|| {
            panic!(
                "the bridge's user got no message from the sensor; broker log:\n{}",
                broker.log()
            )
        });
    assert_eq!(
        (first.topic.as_str(), &first.payload[..]),
        ("sensors/temperature", &b"23.5"[..]),
        "the bridge's user could publish; broker log:\n{}",
        broker.log()
    );

    let reply = alice
        .ask_until(BOT, |r| r.starts_with("23.5 °C"), Duration::from_secs(10))
        .await;
    assert!(
        reply.starts_with("23.5 °C (sensors/temperature, "),
        "{reply}"
    );
    drop(bot);
}

/// Whether an MQTT topic filter (with `+` and `#`) matches a topic.
fn topic_matches(filter: &str, topic: &str) -> bool {
    let mut levels = topic.split('/');
    for part in filter.split('/') {
        match (part, levels.next()) {
            ("#", _) => return true,
            ("+", Some(_)) => {}
            (part, Some(level)) if part == level => {}
            _ => return false,
        }
    }
    levels.next().is_none()
}

/// A path as a mosquitto config value (the rest of the line).
fn conf_path(path: &Path) -> String {
    let text = path.to_str().expect("UTF-8 temp path");
    assert!(
        !text.chars().any(char::is_control) && text.trim() == text,
        "cannot put this path into a mosquitto config: {text:?}"
    );
    text.to_owned()
}

/// An MQTT client with a unique id and these credentials.
fn mqtt_client(port: u16, (user, password): (&str, &str)) -> (AsyncClient, EventLoop) {
    let id = format!("deploy-test-{:x}", rand::random::<u32>());
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_credentials(user, password);
    AsyncClient::new(options, 10)
}

/// Publishes one message with QoS 1 as `user` and waits for the broker's acknowledgement.
async fn publish_as(port: u16, credentials: (&str, &str), topic: &str, payload: &str) {
    let user = credentials.0;
    let (client, mut eventloop) = mqtt_client(port, credentials);
    client
        .publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec())
        .await
        .expect("queue publish");
    let acked = tokio::time::timeout(MQTT_EXCHANGE, async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => break,
                Ok(_) => {}
                Err(e) => panic!("publishing as {user} to 127.0.0.1:{port}: {e}"),
            }
        }
    })
    .await;
    assert!(
        acked.is_ok(),
        "no PUBACK for {user} within {MQTT_EXCHANGE:?}"
    );
    client.disconnect().await.expect("queue disconnect");
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
}

/// An MQTT client subscribed to a filter.
struct Subscriber {
    _client: AsyncClient,
    eventloop: EventLoop,
}

impl Subscriber {
    /// Connects as `user`, subscribes to `filter` with QoS 1 and waits for the broker's grant.
    async fn connect(port: u16, credentials: (&str, &str), filter: &str) -> Subscriber {
        let user = credentials.0;
        let (client, mut eventloop) = mqtt_client(port, credentials);
        client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("queue subscribe");
        let granted = tokio::time::timeout(MQTT_EXCHANGE, async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(ack))) => return ack.return_codes,
                    Ok(_) => {}
                    Err(e) => panic!("subscribing as {user} to 127.0.0.1:{port}: {e}"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no SUBACK for {user} within {MQTT_EXCHANGE:?}"));
        assert!(
            matches!(granted[..], [SubscribeReasonCode::Success(_)]),
            "the broker refused {user} a subscription to {filter}: {granted:?}"
        );
        Subscriber {
            _client: client,
            eventloop,
        }
    }

    /// The next message delivered, or `None` after `timeout`.
    async fn next_publish(&mut self, timeout: Duration) -> Option<Publish> {
        tokio::time::timeout(timeout, async {
            loop {
                match self.eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(publish))) => return publish,
                    Ok(_) => {}
                    Err(e) => panic!("subscriber lost its connection: {e}"),
                }
            }
        })
        .await
        .ok()
    }
}

// ---------------------------------------------------------------------------------------------
// ejabberd

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_answers_through_ejabberd_configured_from_the_example() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let started = Instant::now();
    let Some(ejabberd) = Ejabberd::start() else {
        return;
    };
    eprintln!("ejabberd listening after {:?}", started.elapsed());
    ejabberd.register("bot", "bot-secret");
    ejabberd.register("alice", "alice-secret");
    eprintln!("ejabberd with two accounts after {:?}", started.elapsed());

    let dir = tempfile::tempdir().expect("temp dir");
    let mqtt_port = broker.port.to_string();
    let xmpp_password_file = password_file(dir.path(), "bot.pw", "bot-secret");
    let xmpp_server = format!("127.0.0.1:{}", ejabberd.port);
    let xmpp_ca = ejabberd.ca_file.to_string_lossy().into_owned();
    let bot = BinaryProcess::spawn(&[
        "bridge",
        "--mqtt-port",
        &mqtt_port,
        "--jid",
        BOT,
        "--password-file",
        &xmpp_password_file,
        "--xmpp-server",
        &xmpp_server,
        "--xmpp-ca",
        &xmpp_ca,
        "--unit",
        "°C",
    ]);
    wait_online(&bot);
    let mut alice =
        ChatClient::login(ALICE, "alice-secret", ejabberd.port, &ejabberd.ca_file).await;

    let first = alice.ask(BOT, "temperature?").await;
    assert!(
        first.starts_with("No reading from sensors/temperature yet"),
        "{first}"
    );
    publish(broker.port, "sensors/temperature", b"22.25", false).await;
    let reply = alice
        .ask_until(BOT, |r| r.starts_with("22.25 °C"), Duration::from_secs(10))
        .await;
    assert!(
        reply.starts_with("22.25 °C (sensors/temperature, ") && reply.ends_with(" s ago)"),
        "{reply}"
    );
    drop(bot);
    eprintln!("ejabberd test done after {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// helpers

/// Waits until the bridge is subscribed and online, or panics with its log.
///
/// Polls `BinaryProcess::log` rather than calling `BinaryProcess::wait_log`: that one panics while holding the log's
/// lock, which poisons it, so `BinaryProcess`'s drop then panics again and aborts the whole test binary,
/// skipping every other drop (and leaving an ejabberd node running).
fn wait_online(bot: &BinaryProcess) {
    let started = Instant::now();
    loop {
        let log = bot.log();
        if log.contains("subscribed") && log.contains("answering chat messages") {
            return;
        }
        // The last line of a bridge that gave up (a refused login, say).
        if log.contains(" ERROR mqtt2xmpp: ") {
            panic!("the bridge stopped before coming online; log:\n{log}");
        }
        if started.elapsed() >= STARTUP {
            panic!("the bridge did not come online within {STARTUP:?}; log:\n{log}");
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}
