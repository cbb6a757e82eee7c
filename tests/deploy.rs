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
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS};
use rumqttc::{Publish, SubscribeReasonCode};
use support::chat::ChatClient;
use support::files::password_file;
use support::mqtt::publish;
use support::peers::{find_peer, free_port, peers_required, Mosquitto};
use support::process::BinaryProcess;
use support::server::{ServerProcess, XmppEndpoint};

const MOSQUITTO_SNIPPET_PATH: &str = "deploy/mosquitto-mqtt2xmpp.conf";
const MOSQUITTO_SNIPPET: &str = include_str!("../deploy/mosquitto-mqtt2xmpp.conf");
const BRIDGE_ENV_PATH: &str = "deploy/bridge.env.example";
const BRIDGE_ENV: &str = include_str!("../deploy/bridge.env.example");
const EJABBERD_CONFIG_PATH: &str = "deploy/ejabberd-mqtt2xmpp.yml";
const EJABBERD_CONFIG: &str = include_str!("../deploy/ejabberd-mqtt2xmpp.yml");

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

/// How long ejabberd may take from `ejabberdctl start` until its c2s listener accepts
/// connections. Measured in a Debian 12 container (ejabberd 23.01, Erlang 25): 1.0 to 2.3 s (the
/// Erlang VM boots, Mnesia creates its tables in the fresh spool directory, then the listener
/// starts). Every later `ejabberdctl` command boots a short-lived Erlang VM of its own: about
/// 0.6 s for each `register`, and `stop` plus the VM's exit take about 2 s. The whole test runs
/// in 5.5 to 7 s. The deadline leaves room for slow CI machines.
const EJABBERD_START_DEADLINE: Duration = Duration::from_secs(60);
/// How long the node may take to exit after `ejabberdctl stop` before it is killed.
const EJABBERD_STOP_DEADLINE: Duration = Duration::from_secs(30);
/// How many fresh ports `Ejabberd::start` tries when the chosen one is taken before ejabberd
/// binds it.
const EJABBERD_PORT_ATTEMPTS: usize = 3;

/// A private ejabberd node, as ../shared/PEERS.md describes it: its own config (from
/// `deploy/ejabberd-mqtt2xmpp.yml`), its own ejabberdctl.cfg with a unique node name, and fresh
/// spool and log directories, all in a temp dir that belongs to the `ejabberd` user. Only its
/// c2s listener (STARTTLS required) on `127.0.0.1:port` and its Erlang distribution port (also
/// on loopback) listen. Stopped, and checked to be gone, on drop.
struct Ejabberd {
    /// The c2s port on 127.0.0.1.
    port: u16,
    /// The server's self-signed certificate for `localhost` alone (no key), for clients.
    ca_file: PathBuf,
    ejabberdctl: PathBuf,
    epmd: PathBuf,
    /// The Erlang node name, `NAME@localhost`.
    node: String,
    config: PathBuf,
    ctl_config: PathBuf,
    logs: PathBuf,
    spool: PathBuf,
    /// Whether `ejabberdctl start` ran (and the node may need stopping).
    launched: bool,
    /// Whether no epmd ran before this node started it (then it is stopped with the node, if
    /// no other node uses it by then).
    started_epmd: bool,
    /// What `ejabberdctl start` printed.
    start_output: String,
    /// Holds everything above; removed after the node is gone.
    dir: tempfile::TempDir,
}

/// The port was taken by another process before ejabberd could bind it.
struct PortTaken;

impl Ejabberd {
    /// Starts a node on a free loopback port and waits until its c2s listener accepts
    /// connections. None = skipped (ejabberd not installed, or not root; see find_peer).
    fn start() -> Option<Ejabberd> {
        let ejabberdctl = find_peer("ejabberdctl", &["/usr/sbin/ejabberdctl"])?;
        let epmd = find_peer("epmd", &["/usr/bin/epmd"])?;
        // ejabberdctl refuses to run as anyone but root (it switches to the `ejabberd` user)
        // or `ejabberd` itself; a test run by root is what CI does.
        let uid = fs::metadata("/proc/self").map(|meta| meta.uid()).ok();
        if uid != Some(0) {
            if peers_required() {
                panic!("ejabberdctl must run as root, and CI=true requires every peer");
            }
            eprintln!("skipping: ejabberdctl needs root (running as uid {uid:?})");
            return None;
        }
        for _ in 0..EJABBERD_PORT_ATTEMPTS {
            let mut node = Ejabberd::prepare(ejabberdctl.clone(), epmd.clone());
            match node.spawn() {
                Ok(()) => return Some(node),
                Err(PortTaken) => {
                    eprintln!("port {} was taken; trying another", node.port);
                    node.stop();
                }
            }
        }
        panic!("ejabberd found each of {EJABBERD_PORT_ATTEMPTS} free ports taken");
    }

    /// Writes the certificate, the config and ejabberdctl.cfg into a fresh temp dir.
    fn prepare(ejabberdctl: PathBuf, epmd: PathBuf) -> Ejabberd {
        let dir = tempfile::Builder::new()
            .prefix("mqtt2xmpp-ejabberd-")
            .tempdir()
            .expect("temp dir");
        let port = free_port();
        let path = |name: &str| dir.path().join(name);
        let (logs, spool) = (path("logs"), path("spool"));
        for sub in [&logs, &spool] {
            fs::create_dir(sub).unwrap_or_else(|e| panic!("cannot create {}: {e}", sub.display()));
        }
        // ejabberd wants the certificate and its key in one PEM file; clients get the
        // certificate alone.
        let (cert, key) = self_signed_cert("localhost");
        let ca_file = path("localhost.crt");
        let certfile = path("localhost.pem");
        write(&ca_file, &cert);
        write(&certfile, &format!("{cert}{key}"));
        let config = path("ejabberd.yml");
        write(&config, &ejabberd_config(port, &certfile));
        // A unique node name: ejabberdctl refuses to start a name epmd already knows, and the
        // name is tied to the spool directory's Mnesia schema. `inet_dist_use_interface` keeps
        // the node's distribution port on loopback, ERL_EPMD_ADDRESS an epmd it starts.
        let node = format!(
            "mqtt2xmpp_test_{}_{:08x}@localhost",
            std::process::id(),
            rand::random::<u32>()
        );
        let ctl_config = path("ejabberdctl.cfg");
        write(
            &ctl_config,
            &format!(
                "# Written by tests/deploy.rs\n\
                 ERLANG_NODE={node}\n\
                 ERL_OPTIONS=\"-env ERL_CRASH_DUMP_BYTES 0 -kernel inet_dist_use_interface {{127,0,0,1}}\"\n\
                 ERL_EPMD_ADDRESS=127.0.0.1\n"
            ),
        );
        // The node runs as `ejabberd`: everything it reads or writes must be its own.
        run_ok(
            Command::new("chown")
                .args(["-R", "ejabberd:ejabberd"])
                .arg(dir.path()),
            "chown -R ejabberd:ejabberd",
        );
        Ejabberd {
            port,
            ca_file,
            ejabberdctl,
            epmd,
            node,
            config,
            ctl_config,
            logs,
            spool,
            launched: false,
            started_epmd: false,
            start_output: String::new(),
            dir,
        }
    }

    /// `ejabberdctl` with this node's config, ejabberdctl.cfg, log and spool directories.
    fn ctl(&self) -> Command {
        let mut command = Command::new(&self.ejabberdctl);
        command
            .arg("--config")
            .arg(&self.config)
            .arg("--ctl-config")
            .arg(&self.ctl_config)
            .arg("--logs")
            .arg(&self.logs)
            .arg("--spool")
            .arg(&self.spool);
        command
    }

    /// `ejabberdctl start` (which returns at once: the node detaches), then waits until the log
    /// says the c2s listener accepts connections and the port answers.
    fn spawn(&mut self) -> Result<(), PortTaken> {
        self.started_epmd = epmd_names(&self.epmd).is_none();
        self.launched = true;
        let output = run(self.ctl().arg("start"), "ejabberdctl start");
        self.start_output = describe(&output);
        if !output.status.success() {
            panic!("ejabberdctl start failed:\n{}", self.start_output);
        }
        let taken = format!("Failed to open socket at 127.0.0.1:{}", self.port);
        let accepting = format!(
            "Start accepting TCP connections at 127.0.0.1:{} for ejabberd_c2s",
            self.port
        );
        let started = Instant::now();
        // `ejabberdctl start` may return before the detached VM shows up under its node name.
        let mut seen = false;
        loop {
            // Look at the process before the log, so a log read after an exit is complete.
            let running = !self.vm_pids().is_empty();
            let exited = seen && !running;
            seen |= running;
            let log = self.log();
            if log.contains(&taken) {
                return Err(PortTaken);
            }
            if log.contains("[critical]") || log.contains("[error]") {
                panic!("ejabberd failed to start from {EJABBERD_CONFIG_PATH}:\n{log}");
            }
            if log.contains(&accepting) && port_open(self.port) {
                return Ok(());
            }
            if exited {
                panic!(
                    "ejabberd exited before listening on 127.0.0.1:{}:\n{log}",
                    self.port
                );
            }
            if started.elapsed() >= EJABBERD_START_DEADLINE {
                panic!(
                    "ejabberd did not listen on 127.0.0.1:{} within {EJABBERD_START_DEADLINE:?}:\n{log}",
                    self.port
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Creates an account (`ejabberdctl register USER localhost PASSWORD`).
    fn register(&self, user: &str, password: &str) {
        let output = run(
            self.ctl().args(["register", user, "localhost", password]),
            "ejabberdctl register",
        );
        if !output.status.success() {
            panic!(
                "ejabberdctl register {user} failed:\n{}\nlog:\n{}",
                describe(&output),
                self.log()
            );
        }
    }

    /// Stops the node (`ejabberdctl stop`), waits until its VM is gone (killing it after
    /// [`EJABBERD_STOP_DEADLINE`]), then stops epmd if this node started it and no other node
    /// uses it. Never panics: it runs in `drop`.
    fn stop(&mut self) {
        if std::mem::take(&mut self.launched) && !self.vm_pids().is_empty() {
            match self.ctl().arg("stop").stdin(Stdio::null()).output() {
                Ok(output) if output.status.success() => {}
                Ok(output) => eprintln!("ejabberdctl stop failed:\n{}", describe(&output)),
                Err(e) => eprintln!("cannot run ejabberdctl stop: {e}"),
            }
            let started = Instant::now();
            while !self.vm_pids().is_empty() && started.elapsed() < EJABBERD_STOP_DEADLINE {
                std::thread::sleep(POLL_INTERVAL);
            }
            for pid in self.vm_pids() {
                eprintln!("ejabberd did not stop within {EJABBERD_STOP_DEADLINE:?}; killing it");
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
        if std::mem::take(&mut self.started_epmd) {
            let name = self.node.split('@').next().unwrap_or_default();
            let started = Instant::now();
            // The node deregisters when its connection to epmd closes, as its VM exits.
            while let Some(names) = epmd_names(&self.epmd) {
                if names.is_empty() {
                    let _ = Command::new(&self.epmd)
                        .arg("-kill")
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                    break;
                }
                if names.iter().any(|other| other != name)
                    || started.elapsed() >= EJABBERD_STOP_DEADLINE
                {
                    break; // Another node uses it now, or ours does not let go: leave it.
                }
                std::thread::sleep(POLL_INTERVAL);
            }
        }
    }

    /// The running processes of this node's Erlang VM: those started with `-sname NODE`. The
    /// short-lived VMs of `ejabberdctl` commands have names of their own, and no other process
    /// has this node's unique name, so these are safe to kill.
    fn vm_pids(&self) -> Vec<u32> {
        let Ok(entries) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| {
                let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
                    return false;
                };
                let args: Vec<&[u8]> = cmdline.split(|&byte| byte == 0).collect();
                args.windows(2)
                    .any(|pair| pair[0] == b"-sname" && pair[1] == self.node.as_bytes())
                    && process_alive(pid)
            })
            .collect()
    }

    /// `ejabberdctl start`'s output and everything the node has logged so far.
    fn log(&self) -> String {
        let mut log = self.start_output.clone();
        for name in ["ejabberd.log", "error.log", "crash.log"] {
            if let Ok(text) = fs::read_to_string(self.logs.join(name)) {
                log.push_str(&format!("--- {name} ---\n{text}"));
            }
        }
        log
    }
}

impl Drop for Ejabberd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- ejabberd ({}) ---\n{}--- end of ejabberd log ---",
                self.dir.path().display(),
                self.log()
            );
        }
        self.stop();
    }
}

/// `deploy/ejabberd-mqtt2xmpp.yml`'s own lines with its one listener's port and its one
/// certificate file replaced. Asserts what the test relies on: domain `localhost`, a single
/// listener (c2s, on loopback, STARTTLS required), so nothing else listens.
fn ejabberd_config(port: u16, certfile: &Path) -> String {
    let lines: Vec<&str> = EJABBERD_CONFIG.lines().collect();
    let trimmed = |prefix: &str| -> Vec<usize> {
        (0..lines.len())
            .filter(|&i| lines[i].trim_start().starts_with(prefix))
            .collect()
    };
    let ports = trimmed("port:");
    assert_eq!(
        ports.len(),
        1,
        "{EJABBERD_CONFIG_PATH} should have exactly one listener"
    );
    for expected in [
        "module: ejabberd_c2s",
        "ip: \"127.0.0.1\"",
        "starttls_required: true",
    ] {
        assert_eq!(
            trimmed(expected).len(),
            1,
            "{EJABBERD_CONFIG_PATH} should say `{expected}` once"
        );
    }
    let hosts = trimmed("hosts:");
    assert!(
        hosts.len() == 1 && lines.get(hosts[0] + 1).map(|l| l.trim()) == Some("- localhost"),
        "{EJABBERD_CONFIG_PATH} should serve localhost"
    );
    let certfiles = trimmed("certfiles:");
    assert_eq!(
        certfiles.len(),
        1,
        "{EJABBERD_CONFIG_PATH} should have one certfiles list"
    );
    let certfile_line = certfiles[0] + 1;
    assert!(
        lines
            .get(certfile_line)
            .is_some_and(|l| l.trim_start().starts_with("- "))
            && !lines
                .get(certfile_line + 1)
                .is_some_and(|l| l.trim_start().starts_with("- ")),
        "{EJABBERD_CONFIG_PATH}: certfiles should list one file"
    );
    let certfile = certfile.to_str().expect("UTF-8 temp path");
    assert!(!certfile.contains(['"', '\\']), "{certfile}");

    let mut config = format!("# Written by tests/deploy.rs from {EJABBERD_CONFIG_PATH}\n");
    for (i, line) in lines.iter().enumerate() {
        let indent = &line[..line.len() - line.trim_start().len()];
        if i == ports[0] {
            config.push_str(&format!("{indent}port: {port}\n"));
        } else if i == certfile_line {
            config.push_str(&format!("{indent}- \"{certfile}\"\n"));
        } else {
            config.push_str(line);
            config.push('\n');
        }
    }
    config
}

/// A self-signed end-entity certificate for `domain` and its key, as PEM (the same kind as the
/// other fixtures': CA:FALSE, SAN DNS:domain, EKU serverAuth, so rustls accepts it as its own
/// trust anchor).
fn self_signed_cert(domain: &str) -> (String, String) {
    use rcgen::{
        CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };

    let mut params = CertificateParams::new(vec![domain.to_owned()]).expect("certificate params");
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, domain);
    params.distinguished_name = name;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    // Valid for about ten years, not rcgen's default of until 4096: ejabberd 23.01 sets a timer
    // for the expiry, and Erlang refuses timers centuries long, which crashes its certificate
    // manager at startup.
    let year = 1970
        + SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs()
            / (365 * 24 * 3600 + 6 * 3600);
    let year = i32::try_from(year).expect("year");
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + 10, 1, 1);
    let key = KeyPair::generate().expect("key pair");
    let cert = params.self_signed(&key).expect("self-signed certificate");
    (cert.pem(), key.serialize_pem())
}

/// The names of the nodes epmd knows, or `None` if no epmd runs.
fn epmd_names(epmd: &Path) -> Option<Vec<String>> {
    let output = Command::new(epmd)
        .arg("-names")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    output.status.success().then(|| {
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| line.strip_prefix("name "))
            .filter_map(|rest| rest.split(" at port ").next())
            .map(str::to_owned)
            .collect()
    })
}

/// Whether a process exists and is not a zombie (a detached node's parent may be slow to reap
/// it).
fn process_alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "PID (COMMAND) STATE ...": the command may contain spaces and parentheses.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}

/// Writes a file readable by its owner and group only (chown gives both to ejabberd).
fn write(path: &Path, contents: &str) {
    fs::write(path, contents).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(0o640))
        .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", path.display()));
}

fn port_open(port: u16) -> bool {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok()
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

/// Runs a short-lived command to completion, stdin closed, and returns its output.
fn run(command: &mut Command, what: &str) -> Output {
    command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what} ({command:?}): {e}"))
}

/// Runs a short-lived command and panics with its output if it fails.
fn run_ok(command: &mut Command, what: &str) {
    let output = run(command, what);
    if !output.status.success() {
        panic!("{what} failed: {command:?}\n{}", describe(&output));
    }
}

/// A command's exit status and output, for messages.
fn describe(output: &Output) -> String {
    format!(
        "{}\nstdout:\n{}stderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
