//! External components (XEP-0114) attached to the bundled server, as a gateway's author meets
//! them: a component written by hand on a raw socket (to see every byte of the handshake and
//! of the errors), and one written with slixmpp's `ComponentXMPP` (Debian `python3-slixmpp`,
//! 1.8.3), each exchanging messages with accounts logged in with the test chat client.
//!
//! The server runs in the test's process with `--component gateway.localhost=FILE`, its
//! component listener on a port the kernel picks. The slixmpp test skips without slixmpp,
//! unless CI=true, where it fails.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mqtt2xmpp::secret::Secret;
use mqtt2xmpp::server::component::ComponentSpec;
use mqtt2xmpp::server::limits::ServerLimits;
use serde_json::Value;
use sha1::{Digest, Sha1};
use support::chat::{body, ChatClient};
use support::peers::python_imports;
use support::raw::{Answer, Raw, NS_STANZA_ERRORS};
use support::server::{InProcessServer, XmppEndpoint};
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::parsers::message::{Message, MessageType};
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::parsers::stanza_error::{DefinedCondition, StanzaError};
use tokio_xmpp::Stanza;

const GATEWAY: &str = "gateway.localhost";
const SECRET: &str = "correct horse battery staple";
/// How long one answer may take.
const WAIT: Duration = Duration::from_secs(10);

const PYTHON: &str = "/usr/bin/python3";
const COMPONENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/slixmpp/component.py");

/// A server for `localhost` that accepts the component `gateway.localhost`, with the accounts
/// alice and bob (passwords `alice-secret`, `bob-secret`).
async fn server() -> InProcessServer {
    server_with(Default::default()).await
}

/// The same with `limits`.
async fn server_with(limits: ServerLimits) -> InProcessServer {
    let spec = ComponentSpec {
        domain: BareJid::new(GATEWAY).expect("a domain"),
        secret: Secret::new(SECRET),
    };
    let server = InProcessServer::start_with_components(limits, vec![spec]).await;
    for user in ["alice", "bob"] {
        server.add_user(user, &format!("{user}-secret"));
    }
    server
}

async fn login(server: &InProcessServer, who: &str) -> ChatClient {
    let user = who.split('@').next().expect("a user");
    let password = format!("{user}-secret");
    ChatClient::login(who, &password, server.port, server.ca_file()).await
}

/// A component on a raw socket: its stream header for `name`, and the server's answer up to the
/// end of the server's stream header.
async fn open(server: &InProcessServer, name: &str) -> (Raw, String) {
    let port = server.component_port.expect("a component listener");
    let mut raw = Raw::connect(port).await;
    raw.send(format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' \
         xmlns:stream='http://etherx.jabber.org/streams' to='{name}'>"
    ))
    .await;
    raw.read_until("<stream:stream", WAIT).await;
    let header = raw.read_until(">", WAIT).await;
    (raw, header)
}

/// The `id` of the server's stream header.
fn stream_id(header: &str) -> String {
    let start = header
        .find("id='")
        .map(|at| at + 4)
        .or_else(|| header.find("id=\"").map(|at| at + 4))
        .unwrap_or_else(|| panic!("no id in {header}"));
    let end = header[start..]
        .find(['\'', '"'])
        .unwrap_or_else(|| panic!("unterminated id in {header}"));
    header[start..start + end].to_string()
}

/// `<handshake>hex(SHA-1(id + secret))</handshake>` (XEP-0114 §3).
fn handshake(id: &str, secret: &str) -> String {
    let digest = Sha1::digest(format!("{id}{secret}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("<handshake>{hex}</handshake>")
}

/// A raw component of `gateway.localhost`, past its handshake.
async fn connected(server: &InProcessServer) -> Raw {
    let (mut raw, header) = open(server, GATEWAY).await;
    assert!(header.contains(GATEWAY), "from: {header}");
    raw.send(handshake(&stream_id(&header), SECRET)).await;
    let accepted = raw
        .read_until_any(&["<handshake/>", "</handshake>"], WAIT)
        .await;
    assert!(accepted.contains("<handshake"), "{accepted}");
    raw
}

/// The stream error of an answer that must end with one, and the closed connection.
fn assert_closed_with(answer: &Answer, condition: &str) {
    let (found, _) = answer
        .stream_error()
        .unwrap_or_else(|| panic!("no stream error: {}", answer.text));
    assert_eq!(found, condition, "{}", answer.text);
    assert!(answer.has_footer(), "stream not closed: {}", answer.text);
    assert!(answer.closed, "connection left open: {}", answer.text);
}

fn chat(to: &str, text: &str) -> Message {
    Message::chat(Some(Jid::new(to).expect("a JID"))).with_body(Default::default(), text.into())
}

/// The next error message `client` gets, and its condition; fails on a message with a body
/// other than an error (nothing else is expected meanwhile).
async fn next_error(client: &mut ChatClient) -> (Message, DefinedCondition) {
    loop {
        match client.next_stanza(WAIT).await {
            Some(Stanza::Message(m)) if m.type_ == MessageType::Error => {
                let error = m
                    .payloads
                    .iter()
                    .find_map(|p| StanzaError::try_from(p.clone()).ok())
                    .expect("an <error/>");
                return (m, error.defined_condition);
            }
            Some(Stanza::Message(m)) if !m.bodies.is_empty() => {
                panic!("unexpected message {:?} from {:?}", body(&m), m.from)
            }
            Some(_) => continue,
            None => panic!("no error message within {WAIT:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_and_accounts_exchange_messages_through_the_server() {
    let server = server().await;
    let mut alice = login(&server, "alice@localhost/phone").await;
    let mut component = connected(&server).await;

    // The component writes to alice, from an address of its own choosing in its domain.
    component
        .send(
            "<message from='sensor-7@gateway.localhost/feed' to='alice@localhost' type='chat' \
             id='g1'><body>21.5 °C in the hall</body></message>",
        )
        .await;
    let from = BareJid::new("sensor-7@gateway.localhost").unwrap();
    let got = alice
        .next_message_from(&from, WAIT)
        .await
        .expect("alice gets the component's message");
    assert_eq!(body(&got), "21.5 °C in the hall");
    assert_eq!(
        got.from,
        Some(Jid::new("sensor-7@gateway.localhost/feed").unwrap())
    );

    // alice answers; the component gets it in its own namespace, stamped with her full JID.
    alice
        .send(chat("sensor-7@gateway.localhost", "thanks"))
        .await;
    let forwarded = component.read_until("</message>", WAIT).await;
    assert!(forwarded.contains("<body>thanks</body>"), "{forwarded}");
    assert!(
        forwarded.contains("from='alice@localhost/phone'")
            || forwarded.contains("from=\"alice@localhost/phone\""),
        "{forwarded}"
    );
    assert!(!forwarded.contains("jabber:client"), "{forwarded}");

    // bob is offline: the component's message waits for him in offline storage.
    component
        .send(
            "<message from='gateway.localhost' to='bob@localhost' type='chat' id='g2'>\
             <body>while you were away</body></message>",
        )
        .await;
    // Messages are handled in order: once alice has the next one, bob's is stored.
    component
        .send(
            "<message from='gateway.localhost' to='alice@localhost/phone' type='chat'>\
             <body>barrier</body></message>",
        )
        .await;
    let domain = BareJid::new(GATEWAY).unwrap();
    let barrier = alice
        .next_message_from(&domain, WAIT)
        .await
        .expect("barrier");
    assert_eq!(body(&barrier), "barrier");
    let mut bob = login(&server, "bob@localhost/laptop").await;
    let stored = bob
        .next_message_from(&domain, WAIT)
        .await
        .expect("bob gets the stored message at login");
    assert_eq!(body(&stored), "while you were away");

    // A message to an account that does not exist comes back to the component as an error.
    component
        .send(
            "<message from='gateway.localhost' to='nobody@localhost' type='chat' id='g3'>\
             <body>hello?</body></message>",
        )
        .await;
    let bounce = component.read_until("</message>", WAIT).await;
    assert!(
        bounce.contains("type='error'") || bounce.contains("type=\"error\""),
        "{bounce}"
    );
    assert!(bounce.contains("service-unavailable"), "{bounce}");
    assert!(bounce.contains(NS_STANZA_ERRORS), "{bounce}");

    // Sending from another domain ends the component's stream with invalid-from …
    component
        .send("<message from='bob@localhost' to='alice@localhost'><body>forged</body></message>")
        .await;
    let end = component.read_to_close(WAIT).await;
    assert_closed_with(&end, "invalid-from");
    assert!(!end.text.contains("forged"), "{}", end.text);
    // … after which messages to it come back to alice: remote-server-timeout, try later. (The
    // forged message, sent to alice before, would have reached her first: it did not.)
    alice
        .send(chat("sensor-7@gateway.localhost", "still there?"))
        .await;
    let (error, condition) = next_error(&mut alice).await;
    assert_eq!(condition, DefinedCondition::RemoteServerTimeout);
    assert_eq!(
        error.from,
        Some(Jid::new("sensor-7@gateway.localhost").unwrap())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_of_a_connected_component_is_refused_and_the_first_stays() {
    let server = server().await;
    let mut first = connected(&server).await;
    let (mut second, header) = open(&server, GATEWAY).await;
    second.send(handshake(&stream_id(&header), SECRET)).await;
    let end = second.read_to_close(WAIT).await;
    assert_closed_with(&end, "conflict");
    // The first still serves the domain.
    let mut alice = login(&server, "alice@localhost/phone").await;
    alice.send(chat(GATEWAY, "are you the one?")).await;
    let forwarded = first.read_until("</message>", WAIT).await;
    assert!(forwarded.contains("are you the one?"), "{forwarded}");
    // Once it leaves, another connection may take its place.
    first.send("</stream:stream>").await;
    let closed = first.read_to_close(WAIT).await;
    assert!(closed.has_footer() && closed.closed, "{}", closed.text);
    let mut third = connected(&server).await;
    alice.send(chat(GATEWAY, "and now?")).await;
    let forwarded = third.read_until("</message>", WAIT).await;
    assert!(forwarded.contains("and now?"), "{forwarded}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_component_gets_host_unknown_and_a_header_without_to_improper_addressing() {
    let server = server().await;
    let (mut raw, header) = open(&server, "other.localhost").await;
    assert!(header.contains("localhost"), "{header}");
    assert_closed_with(&raw.read_to_close(WAIT).await, "host-unknown");
    let port = server.component_port.unwrap();
    let mut raw = Raw::connect(port).await;
    raw.send(
        "<stream:stream xmlns='jabber:component:accept' \
         xmlns:stream='http://etherx.jabber.org/streams'>",
    )
    .await;
    assert_closed_with(&raw.read_to_close(WAIT).await, "improper-addressing");
    // A stanza before the handshake is not accepted either.
    let (mut raw, _) = open(&server, GATEWAY).await;
    raw.send("<message from='gateway.localhost' to='alice@localhost'><body>x</body></message>")
        .await;
    assert_closed_with(&raw.read_to_close(WAIT).await, "not-authorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_that_does_not_complete_its_handshake_in_time_is_disconnected() {
    let server = server_with(support::server::limits(|l| {
        l.auth_timeout = Duration::from_millis(500)
    }))
    .await;
    let (mut raw, _) = open(&server, GATEWAY).await;
    let end = raw.read_to_close(WAIT).await;
    assert_closed_with(&end, "connection-timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_component_is_pinged_and_disconnected_if_it_stays_silent() {
    let server = server_with(support::server::limits(|l| {
        l.idle_ping_after = Duration::from_millis(300)
    }))
    .await;
    let mut component = connected(&server).await;
    let ping = component.read_until("</iq>", WAIT).await;
    assert!(ping.contains("urn:xmpp:ping"), "{ping}");
    assert!(ping.contains("to='gateway.localhost'"), "{ping}");
    // No answer: the connection ends, and the domain is free for the next connection.
    let end = component.read_to_close(WAIT).await;
    assert_closed_with(&end, "connection-timeout");
    let mut again = connected(&server).await;
    // An answer to the ping keeps it.
    let ping = again.read_until("</iq>", WAIT).await;
    let id = support::raw::parse(&ping).unwrap()[0]
        .attr("id")
        .expect("a ping id")
        .to_string();
    again
        .send(format!(
            "<iq type='result' id='{id}' from='gateway.localhost' to='localhost'/>"
        ))
        .await;
    let next = again.read_until("</iq>", WAIT).await;
    assert!(
        next.contains("urn:xmpp:ping"),
        "pinged again, not closed: {next}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_is_told_when_the_server_shuts_down_and_reconnects_after_a_restart() {
    let mut server = server().await;
    let mut component = connected(&server).await;
    server.stop().await;
    assert_closed_with(&component.read_to_close(WAIT).await, "system-shutdown");
    server.restart().await;
    let mut again = connected(&server).await;
    let mut alice = login(&server, "alice@localhost/phone").await;
    alice.send(chat(GATEWAY, "back?")).await;
    let forwarded = again.read_until("</message>", WAIT).await;
    assert!(forwarded.contains("back?"), "{forwarded}");
}

/// Sends 16 messages of about 1 KB from the component to alice, and returns how long until
/// she has the last one.
async fn flood_alice(server: &InProcessServer) -> Duration {
    let mut alice = login(server, "alice@localhost/phone").await;
    let mut component = connected(server).await;
    let filler = "x".repeat(1000);
    let started = std::time::Instant::now();
    for n in 0..16 {
        let text = if n == 15 {
            "last".to_string()
        } else {
            filler.clone()
        };
        component
            .send(format!(
                "<message from='gateway.localhost' to='alice@localhost/phone'><body>{text}</body></message>"
            ))
            .await;
    }
    let domain = BareJid::new(GATEWAY).unwrap();
    loop {
        let message = alice
            .next_message_from(&domain, WAIT)
            .await
            .expect("the flood reaches alice");
        if body(&message) == "last" {
            return started.elapsed();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_is_read_at_the_byte_rate_unless_it_is_unthrottled() {
    let rate = |l: &mut ServerLimits| {
        l.bytes_per_second = 4_000;
        l.burst_bytes = 4_000;
    };
    // About 16 KB at 4 KB/s after a 4 KB burst: three seconds at least.
    let throttled = server_with(support::server::limits(rate)).await;
    let took = flood_alice(&throttled).await;
    assert!(took >= Duration::from_millis(2_500), "read in {took:?}");
    // --unthrottled gateway.localhost lifts it, as for an account.
    let unthrottled = server_with(support::server::limits(|l| {
        rate(l);
        l.unthrottled = vec![GATEWAY.into()];
    }))
    .await;
    let took = flood_alice(&unthrottled).await;
    assert!(took < Duration::from_millis(2_000), "read in {took:?}");
}

// ----- slixmpp's ComponentXMPP --------------------------------------------------------------------

/// Whether `/usr/bin/python3` can import slixmpp; if not, panics under CI=true and otherwise
/// prints "skipping…".
fn slixmpp_installed() -> bool {
    python_imports(
        PYTHON,
        "slixmpp.componentxmpp",
        "install the Debian package python3-slixmpp",
    )
}

/// `component.py` running, and the events it prints.
struct SlixmppComponent {
    child: Child,
    events: tokio::sync::mpsc::UnboundedReceiver<Value>,
    /// Events passed over by [`SlixmppComponent::expect`].
    skipped: Vec<Value>,
    stderr: std::thread::JoinHandle<String>,
}

impl SlixmppComponent {
    fn start(
        port: u16,
        secret_file: &std::path::Path,
        greet: &[&str],
        subscribe: &[&str],
    ) -> SlixmppComponent {
        let mut command = Command::new(PYTHON);
        command
            .arg(COMPONENT)
            .args(["--port", &port.to_string(), "--name", GATEWAY])
            .arg("--secret-file")
            .arg(secret_file);
        for jid in greet {
            command.args(["--greet", jid]);
        }
        for jid in subscribe {
            command.args(["--subscribe", jid]);
        }
        let mut child = command
            .env_remove("PYTHONPATH")
            .env_remove("PYTHONHOME")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {PYTHON} {COMPONENT}: {e}"));
        let stdout = child.stdout.take().expect("stdout piped");
        let mut stderr = child.stderr.take().expect("stderr piped");
        let (sender, events) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let event = serde_json::from_str(&line)
                    .unwrap_or_else(|_| serde_json::json!({"event": "unparsable", "line": line}));
                if sender.send(event).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
            text
        });
        SlixmppComponent {
            child,
            events,
            skipped: Vec::new(),
            stderr,
        }
    }

    /// The next event named `name` (others are skipped), within [`WAIT`].
    async fn expect(&mut self, name: &str) -> Value {
        let found = tokio::time::timeout(WAIT, async {
            while let Some(event) = self.events.recv().await {
                if event["event"] == name {
                    return Some(event);
                }
                assert_ne!(event["event"], "error", "component.py: {event}");
                self.skipped.push(event);
            }
            None
        })
        .await;
        match found {
            Ok(Some(event)) => event,
            _ => panic!("component.py did not report {name:?} within {WAIT:?}"),
        }
    }
}

impl Drop for SlixmppComponent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slixmpp_component_exchanges_messages_with_accounts() {
    if !slixmpp_installed() {
        return;
    }
    let server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("gateway.secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let mut alice = login(&server, "alice@localhost/phone").await;

    // It greets alice (online) and bob (offline) as soon as its handshake is accepted, and
    // asks alice to see her presence.
    let mut component = SlixmppComponent::start(
        server.component_port.expect("a component listener"),
        &secret_file,
        &["alice@localhost", "bob@localhost"],
        &["alice@localhost"],
    );
    let started = component.expect("session_start").await;
    assert_eq!(started["jid"], GATEWAY);
    let greeter = BareJid::new("greeter@gateway.localhost").unwrap();
    let hello = alice
        .next_message_from(&greeter, WAIT)
        .await
        .expect("alice is greeted");
    assert_eq!(body(&hello), "hello from gateway.localhost");

    // alice approves its request: it is told, and sees her presence.
    let request = loop {
        match alice.next_stanza(WAIT).await {
            Some(Stanza::Presence(p)) if p.type_ == PresenceType::Subscribe => break p,
            Some(_) => continue,
            None => panic!("alice got no subscription request within {WAIT:?}"),
        }
    };
    assert_eq!(request.from, Some(Jid::from(greeter.clone())));
    let mut approval = Presence::new(PresenceType::Subscribed);
    approval.to = Some(greeter.clone().into());
    alice.send_stanza(approval).await;
    let subscribed = component.expect("subscribed").await;
    assert_eq!(subscribed["sender"], "alice@localhost");
    assert_eq!(subscribed["to"], "greeter@gateway.localhost");
    let seen = component.expect("presence").await;
    assert_eq!(seen["sender"], "alice@localhost/phone");
    assert_eq!(seen["type"], "available");

    // alice talks to an address of the component; it answers from that address.
    assert_eq!(
        alice.ask("echo@gateway.localhost", "ping 1").await,
        "echo: ping 1"
    );
    let seen = component.expect("message").await;
    assert_eq!(seen["sender"], "alice@localhost/phone");
    assert_eq!(seen["to"], "echo@gateway.localhost");
    assert_eq!(seen["body"], "ping 1");
    assert_eq!(
        alice.ask(GATEWAY, "ümlauts & <tags>").await,
        "echo: ümlauts & <tags>"
    );

    // bob was offline: the greeting waited for him.
    let mut bob = login(&server, "bob@localhost/laptop").await;
    let stored = bob
        .next_message_from(&greeter, WAIT)
        .await
        .expect("bob gets the greeting from offline storage");
    assert_eq!(body(&stored), "hello from gateway.localhost");
    assert_eq!(
        bob.ask("echo@gateway.localhost", "me too").await,
        "echo: me too"
    );

    // "quit": it says goodbye and leaves, cleanly.
    assert_eq!(alice.ask("echo@gateway.localhost", "quit").await, "bye");

    component.expect("disconnected").await;
    component.expect("done").await;
    // bob, who logged in meanwhile, never approved it: none of his presence reached it.
    let from_bob = component
        .skipped
        .iter()
        .filter(|e| e["event"] == "presence")
        .any(|e| e["sender"].as_str().is_some_and(|s| s.starts_with("bob@")));
    assert!(!from_bob, "{:?}", component.skipped);
    let status = tokio::task::block_in_place(|| component.child.wait()).expect("wait");
    assert!(status.success(), "component.py exited with {status}");
    let stderr = std::mem::replace(&mut component.stderr, std::thread::spawn(String::new))
        .join()
        .unwrap_or_default();
    assert!(!stderr.contains("Traceback"), "{stderr}");
    // It is gone: a message to it comes back to alice.
    alice.send(chat("echo@gateway.localhost", "anyone?")).await;
    let (_, condition) = next_error(&mut alice).await;
    assert_eq!(condition, DefinedCondition::RemoteServerTimeout);
}
