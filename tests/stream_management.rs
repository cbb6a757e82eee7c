//! Stream management (XEP-0198) and client state indication (XEP-0352) with real clients and a
//! link that dies without a goodbye.
//!
//! - slixmpp, Debian's 1.8.3 (`/usr/bin/python3`) and the current release from PyPI (a virtual
//!   environment at `target/slixmpp-venv`, made by `.ci/run`), loading the plugins a modern
//!   client loads (0198, 0352, 0115) and asking for its roster: stream management is enabled with
//!   resumption, the counts agree both ways, and presence waits while the client is inactive.
//!   Without the interpreter or the package the tests skip, unless CI=true, where they fail.
//! - A client logged in through a proxy that freezes (`support::proxy`): it stops forwarding in
//!   both directions without closing anything, as a phone's link does. Messages sent meanwhile
//!   arrive exactly once when the client resumes on a new connection; and when the resumption
//!   time passes instead, they arrive from offline storage at the next login.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::peers::{python_imports, DEBIAN_PYTHON, VENV_PYTHON};
use support::proxy::Proxy;
use support::raw::Raw;
use support::server::{limits, InProcessServer, XmppEndpoint};

/// How long one answer may take.
const WAIT: Duration = Duration::from_secs(15);
const SM: &str = "urn:xmpp:sm:3";
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/slixmpp/modern.py");

/// A server with the accounts alice and bob (passwords `alice-secret`, `bob-secret`).
async fn server_with(
    change: impl FnOnce(&mut mqtt2xmpp::server::limits::ServerLimits),
) -> InProcessServer {
    let server = InProcessServer::start_with(limits(change)).await;
    server.add_user("alice", "alice-secret");
    server.add_user("bob", "bob-secret");
    server
}

// ----- slixmpp -----------------------------------------------------------------------------------

/// Whether `python` can import slixmpp; if not, panics under CI=true (with `install`, the way to
/// get it) and otherwise prints "skipping…".
fn slixmpp_at(python: &str, install: &str) -> bool {
    python_imports(python, "slixmpp", install)
}

/// Runs `modern.py` with `python` against `server`; returns its report.
async fn run_modern(python: &'static str, server: &InProcessServer) -> Value {
    let port = server.port().to_string();
    let ca = server.ca_file().to_string_lossy().into_owned();
    let run = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(SCRIPT)
            .args(["--port", &port, "--ca", &ca])
            .args([
                "--alice-password",
                "alice-secret",
                "--bob-password",
                "bob-secret",
            ])
            .env_remove("PYTHONPATH")
            .env_remove("PYTHONHOME")
            .output()
            .unwrap_or_else(|e| panic!("cannot start {python} {SCRIPT}: {e}"))
    });
    // The script gives up after 60 s by itself.
    let output = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("modern.py finishes")
        .expect("the runner does not panic");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report: Value = stdout
        .lines()
        .last()
        .and_then(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| panic!("no report from modern.py:\n{stdout}\n{stderr}"));
    assert!(
        output.status.success() && report["event"] == "done",
        "modern.py failed: {report}\n{stderr}"
    );
    report
}

/// What both slixmpp versions must show.
fn assert_modern(report: &Value) {
    let sm = &report["sm"];
    assert_eq!(sm["enabled"], true, "{report}");
    assert!(
        sm["id"].as_str().is_some_and(|id| id.len() >= 16),
        "resumable: {report}"
    );
    // The server acknowledged exactly what bob sent since enabling.
    assert_eq!(sm["last_ack"], sm["seq"], "{report}");
    assert!(sm["seq"].as_u64().is_some_and(|seq| seq > 0), "{report}");
    assert_eq!(report["csi"], true, "{report}");
    assert_eq!(report["caps"], true, "{report}");
    let messages: Vec<&str> = report["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        messages,
        ["hello-modern", "alert-while-inactive"],
        "{report}"
    );
    assert_eq!(
        report["presence_while_inactive"],
        serde_json::json!([]),
        "held back while inactive: {report}"
    );
    // Only the latest of alice's two updates, once bob is active again.
    assert_eq!(
        report["presence_after_active"],
        serde_json::json!(["reading-2"]),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debian_slixmpp_gets_stream_management_with_resumption_and_csi() {
    if !slixmpp_at(DEBIAN_PYTHON, "install the Debian package python3-slixmpp") {
        return;
    }
    let server = server_with(|_| {}).await;
    let report = run_modern(DEBIAN_PYTHON, &server).await;
    assert!(
        report["slixmpp"]
            .as_str()
            .is_some_and(|v| v.starts_with("1.8")),
        "{report}"
    );
    assert_modern(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn current_slixmpp_gets_stream_management_with_resumption_and_csi() {
    if !slixmpp_at(
        VENV_PYTHON,
        "python3 -m venv target/slixmpp-venv && target/slixmpp-venv/bin/pip install slixmpp aiohttp",
    ) {
        return;
    }
    let server = server_with(|_| {}).await;
    let report = run_modern(VENV_PYTHON, &server).await;
    assert_modern(&report);
}

// ----- a link that dies ----------------------------------------------------------------------------

/// A raw client with stream management, and everything it has read since enabling it.
struct Managed {
    raw: Raw,
    seen: String,
}

impl Managed {
    /// Logs `user` in on `port`, binds `phone`, enables stream management with resumption and
    /// sends initial presence; returns the client and the resumption id.
    async fn login(port: u16, server: &InProcessServer, user: &str) -> (Managed, String) {
        let password = format!("{user}-secret");
        let mut raw = Raw::login(port, server.ca_file(), user, &password, "phone").await;
        raw.send(format!("<enable xmlns='{SM}' resume='true'/>"))
            .await;
        let enabled = raw.read_until("</enabled>", WAIT).await;
        let id = attribute(&enabled, "enabled", "id")
            .unwrap_or_else(|| panic!("no resumption id: {enabled}"))
            .to_string();
        let mut client = Managed {
            raw,
            seen: String::new(),
        };
        client.raw.send("<presence/>").await;
        client
            .read_until(&format!("from='{user}@localhost/phone'"))
            .await;
        (client, id)
    }

    async fn read_until(&mut self, needle: &str) -> &str {
        let read = self.raw.read_until(needle, WAIT).await;
        assert!(read.contains(needle), "expected {needle:?}; read: {read}");
        self.seen.push_str(&read);
        &self.seen
    }

    /// Stanzas read since enabling (XEP-0198's `h`); no stanza of these tests nests another.
    fn handled(&self) -> u32 {
        ["<message ", "<presence ", "<presence>", "<iq "]
            .iter()
            .map(|tag| self.seen.matches(tag).count() as u32)
            .sum()
    }

    /// Acknowledges everything read so far.
    async fn ack(&mut self) {
        let h = self.handled();
        self.raw.send(format!("<a xmlns='{SM}' h='{h}'/>")).await;
    }
}

/// The value of `attribute` in the first `element` of `xml`.
fn attribute<'a>(xml: &'a str, element: &str, attribute: &str) -> Option<&'a str> {
    let at = xml.find(&format!("<{element} "))?;
    let rest = &xml[at..];
    let rest = &rest[..rest.find('>')?];
    let key = format!("{attribute}='");
    let value = &rest[rest.find(&key)? + key.len()..];
    Some(&value[..value.find('\'')?])
}

/// alice, logged in directly, available.
async fn alice(server: &InProcessServer) -> Raw {
    let mut alice = Raw::login(
        server.port(),
        server.ca_file(),
        "alice",
        "alice-secret",
        "desk",
    )
    .await;
    alice.send("<presence/>").await;
    alice.read_until("from='alice@localhost/desk'", WAIT).await;
    alice
}

/// alice subscribes to bob's presence, and bob approves: alice sees bob come and go.
async fn alice_follows_bob(alice: &mut Raw, bob: &mut Managed) {
    alice
        .send("<presence to='bob@localhost' type='subscribe'/>")
        .await;
    bob.read_until("type='subscribe'").await;
    bob.raw
        .send("<presence to='alice@localhost' type='subscribed'/>")
        .await;
    let seen = alice.read_until("from='bob@localhost/phone'", WAIT).await;
    assert!(seen.contains("from='bob@localhost/phone'"), "{seen}");
}

async fn chat_to_bob(alice: &mut Raw, body: &str) {
    alice
        .send(format!(
            "<message to='bob@localhost' type='chat'><body>{body}</body></message>"
        ))
        .await;
}

/// bob has read and acknowledged `acked-early`, and read `read-not-acked` without acknowledging
/// it; then his link freezes and alice sends `while-frozen-1` and `-2`.
async fn bob_loses_his_link(alice: &mut Raw, bob: &mut Managed, proxy: &Proxy) {
    chat_to_bob(alice, "acked-early").await;
    bob.read_until("acked-early").await;
    bob.ack().await;
    chat_to_bob(alice, "read-not-acked").await;
    bob.read_until("read-not-acked").await;
    proxy.freeze();
    chat_to_bob(alice, "while-frozen-1").await;
    chat_to_bob(alice, "while-frozen-2").await;
    // Once the server answers alice's ping, it has routed both to bob's session.
    let pong = alice.ping("after-the-freeze").await;
    assert!(pong.contains("type='result'"), "{pong}");
}

/// Each of `bodies` once, in order, and not the message bob acknowledged.
fn assert_exactly_once(read: &str, bodies: &[&str]) {
    for body in bodies {
        assert_eq!(read.matches(body).count(), 1, "{body} once: {read}");
    }
    assert!(!read.contains("acked-early"), "acknowledged before: {read}");
    for pair in bodies.windows(2) {
        assert!(read.find(pair[0]) < read.find(pair[1]), "in order: {read}");
    }
}

/// Reads until `needle`, answering the server's pings meanwhile (its idle limit is short in
/// these tests).
async fn read_answering_pings(raw: &mut Raw, needle: &str, within: Duration) -> String {
    let deadline = std::time::Instant::now() + within;
    let mut read = String::new();
    while !read.contains(needle) && std::time::Instant::now() < deadline {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let piece = raw
            .read_until_any(&[needle, "urn:xmpp:ping'></ping></iq>"], left)
            .await;
        if piece.is_empty() {
            break;
        }
        if let Some(id) = piece
            .rfind("<iq type='get'")
            .and_then(|at| attribute(&piece[at..], "iq", "id"))
            .filter(|_| piece.ends_with("</ping></iq>"))
        {
            raw.send(format!("<iq type='result' to='localhost' id='{id}'/>"))
                .await;
        }
        read.push_str(&piece);
    }
    read
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_link_froze_resumes_and_gets_every_message_exactly_once() {
    let server = server_with(|_| {}).await;
    let proxy = Proxy::start(server.port()).await;
    let mut alice = alice(&server).await;
    let (mut bob, id) = Managed::login(proxy.port, &server, "bob").await;
    alice_follows_bob(&mut alice, &mut bob).await;
    bob_loses_his_link(&mut alice, &mut bob, &proxy).await;

    // The phone finds a new network: a new connection, straight to the server, resumes. The
    // server has not noticed the old link is dead, and takes the session from it.
    let mut phone = Raw::connect(server.port()).await;
    phone.starttls(server.ca_file()).await;
    phone.open_stream().await;
    let success = phone.auth_plain("bob", "bob-secret").await;
    assert!(success.contains("<success"), "{success}");
    let features = phone.open_stream().await;
    assert!(features.contains("<sm xmlns='urn:xmpp:sm:3'"), "{features}");
    let h = bob.handled();
    phone
        .send(format!("<resume xmlns='{SM}' previd='{id}' h='{h}'/>"))
        .await;
    let resumed = phone.read_until("</resumed>", WAIT).await;
    assert_eq!(
        attribute(&resumed, "resumed", "previd"),
        Some(id.as_str()),
        "{resumed}"
    );
    let mut read = phone.read_until("while-frozen-2", WAIT).await;
    read.push_str(&phone.ping("after-resume").await);
    // What bob read before the freeze counts in his `h`, acknowledged or not: not sent again.
    assert_exactly_once(&read, &["while-frozen-1", "while-frozen-2"]);
    assert!(!read.contains("read-not-acked"), "{read}");
    // alice never saw bob go, and bob's session goes on.
    chat_to_bob(&mut alice, "welcome-back").await;
    let more = phone.read_until("welcome-back", WAIT).await;
    assert!(more.contains("welcome-back"), "{more}");
    let quiet = alice.ping("alice-check").await;
    assert!(!quiet.contains("type='unavailable'"), "{quiet}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_resumption_time_passes_the_messages_arrive_from_offline_storage() {
    // A quiet client is pinged after 1 s and given up after 2 s; its session then waits 1 s.
    let server = server_with(|limits| {
        limits.idle_ping_after = Duration::from_secs(1);
        limits.resume_timeout = Duration::from_secs(1);
    })
    .await;
    let proxy = Proxy::start(server.port()).await;
    let mut alice = alice(&server).await;
    let (mut bob, _id) = Managed::login(proxy.port, &server, "bob").await;
    alice_follows_bob(&mut alice, &mut bob).await;
    // bob keeps his link busy until it freezes, so that only the freeze makes him quiet.
    bob_loses_his_link(&mut alice, &mut bob, &proxy).await;

    // The server notices (unanswered ping), the session hibernates, its time passes: bob goes
    // offline for his contacts.
    let gone =
        read_answering_pings(&mut alice, "type='unavailable'", Duration::from_secs(20)).await;
    assert!(
        gone.contains("from='bob@localhost/phone'") && gone.contains("type='unavailable'"),
        "{gone}"
    );
    // His next login gets what he missed from offline storage.
    let mut phone = Raw::login(
        server.port(),
        server.ca_file(),
        "bob",
        "bob-secret",
        "phone",
    )
    .await;
    phone.send("<presence/>").await;
    let mut read = phone.read_until("while-frozen-2", WAIT).await;
    read.push_str(&phone.ping("after-login").await);
    // Unacknowledged, so kept: the one bob read before the freeze comes again.
    assert_exactly_once(
        &read,
        &["read-not-acked", "while-frozen-1", "while-frozen-2"],
    );
    assert!(
        read.contains("<delay xmlns='urn:xmpp:delay'"),
        "stamped: {read}"
    );
}
