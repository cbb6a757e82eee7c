//! The bundled server as the real slixmpp client library meets it (Debian `python3-slixmpp`,
//! 1.8.3): login over STARTTLS with SCRAM and the mechanism slixmpp is told to use, roster,
//! mutual presence subscription, chat, offline messages across a server restart, and roster
//! removal.
//!
//! The client is `tests/slixmpp/client.py`, run with Debian's `/usr/bin/python3` (another
//! `python3` first on `PATH` may lack Debian's packages). Each run does one part of a scenario
//! and prints what it observed as JSON lines; the assertions are here. Without slixmpp the
//! tests skip, unless CI=true, where they fail.
//!
//! slixmpp 1.8.3 and channel binding: it only knows `tls-unique`, which TLS 1.3 does not define,
//! so with stock settings it cannot use the server's `-PLUS` mechanisms (`tls-exporter`), and its
//! fallback (plain SCRAM with the gs2 flag `y`) is refused as a downgrade. The scenarios use
//! slixmpp's SCRAM without channel-binding data (flag `n`); see the module docstring of
//! `client.py` and [`stock_slixmpp_logs_in`].

mod support;

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use support::peers::{python_imports, run_event_script};
use support::server::ServerProcess;

/// Debian's interpreter, which sees `python3-slixmpp`.
const PYTHON: &str = "/usr/bin/python3";
const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/slixmpp/client.py");
const ALICE: &str = "alice@localhost";
const BOB: &str = "bob@localhost";
const ALICE_PASSWORD: &str = "alice-secret";
const BOB_PASSWORD: &str = "bob-secret";
/// How long one run of the client may take (each of its waits is 10 s at most).
const CLIENT_DEADLINE: Duration = Duration::from_secs(40);

/// Whether `/usr/bin/python3` can import slixmpp; if not, panics under CI=true and otherwise
/// prints "skipping…".
fn slixmpp_installed() -> bool {
    python_imports(
        PYTHON,
        "slixmpp",
        "install the Debian package python3-slixmpp",
    )
}

/// A server for `localhost` with the accounts alice and bob.
fn server_with_accounts() -> ServerProcess {
    let server = ServerProcess::start();
    server.add_user("alice", ALICE_PASSWORD);
    server.add_user("bob", BOB_PASSWORD);
    server
}

/// What one run of `client.py` printed.
struct Run {
    events: Vec<Value>,
    stdout: String,
}

impl Run {
    /// Every event named `event` reported about `who`.
    fn all(&self, event: &str, who: &str) -> Vec<&Value> {
        self.events
            .iter()
            .filter(|e| e["event"] == event && e["who"] == who)
            .collect()
    }

    /// The one event named `event` about `who`.
    fn one(&self, event: &str, who: &str) -> &Value {
        match self.all(event, who).as_slice() {
            [event] => event,
            found => panic!(
                "expected one {event:?} event about {who}, found {}:\n{}",
                found.len(),
                self.stdout
            ),
        }
    }

    /// The login report of the account `who` (the only login in the run for it).
    fn login(&self, who: &str) -> &Value {
        self.one("login", who)
    }
}

/// Runs `client.py COMMAND…` against `server` and returns its events; panics (with the
/// client's and the server's output) if it fails, does not finish within CLIENT_DEADLINE, or
/// prints anything but JSON lines.
fn run_client(server: &ServerProcess, command: &[&str]) -> Run {
    let port = server.port.to_string();
    let ca = server.ca_file.to_string_lossy().into_owned();
    let (events, stdout) = run_event_script(
        Command::new(PYTHON)
            .arg(CLIENT)
            .args(["--port", &port, "--ca", &ca])
            .args(["--alice-password", ALICE_PASSWORD])
            .args(["--bob-password", BOB_PASSWORD])
            .args(command),
        &format!("client.py {command:?}"),
        CLIENT_DEADLINE,
        || server.log(),
    );
    Run { events, stdout }
}

/// A login report says: STARTTLS with TLS 1.3, the server certificate verified, `mechanism`
/// without a failed attempt, and the resource asked for.
fn assert_secure_login(login: &Value, mechanism: &str, jid: &str) {
    assert_eq!(login["starttls"], true, "no STARTTLS: {login}");
    assert_eq!(login["tls_version"], "TLSv1.3", "{login}");
    assert_eq!(login["verified"], true, "certificate not verified: {login}");
    assert_eq!(login["mechanism"], mechanism, "{login}");
    assert_eq!(login["auth_failures"], json!([]), "{login}");
    assert_eq!(login["jid"], jid, "{login}");
}

/// A roster item as the server sends it (its subscription always written out, see roster.rs).
fn wire_item(subscription: &str, name: Option<&str>, groups: &[&str]) -> Value {
    json!({"subscription": subscription, "ask": null, "name": name, "groups": groups})
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

#[test]
fn slixmpp_logs_in_over_starttls_with_the_mechanism_it_is_told_to_use() {
    if !slixmpp_installed() {
        return;
    }
    let server = server_with_accounts();
    let run = run_client(
        &server,
        &[
            "mechanisms",
            "scram",
            "SCRAM-SHA-1",
            "PLAIN",
            "stock-SCRAM-SHA-1",
        ],
    );
    let logins = run.all("login", "alice");
    let by_mode = |mode: &str| {
        *logins
            .iter()
            .find(|login| login["mode"] == mode)
            .unwrap_or_else(|| panic!("no login report for {mode}:\n{}", run.stdout))
    };
    for (mode, mechanism) in [
        // slixmpp prefers the strongest mechanism offered: SHA-256 over SHA-1.
        ("scram", "SCRAM-SHA-256"),
        ("SCRAM-SHA-1", "SCRAM-SHA-1"),
        ("PLAIN", "PLAIN"),
    ] {
        let login = by_mode(mode);
        assert_eq!(login["ok"], true, "{login}");
        assert_secure_login(login, mechanism, &format!("{ALICE}/{mode}"));
    }
    // slixmpp's own channel-binding handling: it has tls-unique data, so it sends the gs2 flag
    // `y` ("the server offers no -PLUS"), which after an offer of -PLUS is a downgrade.
    let stock = by_mode("stock-SCRAM-SHA-1");
    assert_eq!(stock["ok"], false, "{stock}");
    assert_eq!(stock["starttls"], true, "{stock}");
    assert_eq!(
        stock["auth_failures"],
        json!([{"mechanism": "SCRAM-SHA-1", "condition": "not-authorized"}]),
        "{stock}"
    );
    assert!(
        server.log().contains("downgrade"),
        "server did not log the downgrade:\n{}",
        server.log()
    );
}

#[test]
fn slixmpp_befriends_chats_gets_offline_messages_and_unfriends() {
    if !slixmpp_installed() {
        return;
    }
    let mut server = server_with_accounts();

    // 1. Roster and subscriptions; 2. a chat message.
    let run = run_client(&server, &["befriend"]);
    assert_secure_login(
        run.login("alice"),
        "SCRAM-SHA-256",
        &format!("{ALICE}/slixmpp"),
    );
    assert_secure_login(run.login("bob"), "SCRAM-SHA-256", &format!("{BOB}/slixmpp"));
    assert_eq!(run.one("roster", "alice")["items"], json!({}));
    assert_eq!(run.one("roster", "bob")["items"], json!({}));
    assert_eq!(
        run.one("roster_push", "alice")["push"],
        json!({"type": "set", "items": {BOB: wire_item("none", Some("Bob"), &["Friends"])}}),
        "the push for the new item"
    );
    assert_eq!(
        run.one("subscription_request", "bob")["presence"],
        json!({"from": ALICE, "type": "subscribe"})
    );
    assert_eq!(
        run.one("subscription_request", "alice")["presence"],
        json!({"from": BOB, "type": "subscribe"})
    );
    // slixmpp's roster, as the server's pushes left it.
    let alice_item = &run.one("roster_state", "alice")["item"];
    assert_eq!(
        *alice_item,
        json!({"subscription": "both", "pending_out": false, "name": "Bob",
               "groups": ["Friends"], "resources": ["slixmpp"]})
    );
    let bob_item = &run.one("roster_state", "bob")["item"];
    assert_eq!(
        *bob_item,
        json!({"subscription": "both", "pending_out": false, "name": null,
               "groups": [], "resources": ["slixmpp"]})
    );
    let bob_available = json!({"from": format!("{BOB}/slixmpp"), "type": "available"});
    let alice_presences = run.one("presences", "alice")["presences"]
        .as_array()
        .expect("presence list");
    assert!(
        alice_presences.contains(&bob_available),
        "alice did not see bob available: {alice_presences:?}"
    );
    let messages = &run.one("messages", "bob")["messages"];
    assert_eq!(
        *messages,
        json!([{"from": format!("{ALICE}/slixmpp"), "to": BOB, "type": "chat",
                "body": "Hello Bob, this is slixmpp", "delay_stamp": null, "delay_from": null}])
    );
    assert_eq!(run.one("messages", "alice")["messages"], json!([]));

    // 3. Offline messages. Both sessions are gone once the server logged their end (the hub
    // has then queued their unbinding before anything of the next client).
    let log = server.process.as_ref().expect("server running");
    log.wait_log("session ended", 2, Duration::from_secs(10));
    let first = "First, while you were away";
    let second = "Second, still away";
    let sent_at = unix_now();
    let run = run_client(&server, &["send-offline", first, second]);
    let sent = run.one("sent", "alice");
    assert_eq!(sent["count"], 2);
    assert_eq!(sent["replies"], json!([]), "the server bounced a message");
    // On disk: they survive a restart.
    server.restart();
    let run = run_client(&server, &["receive"]);
    let received_at = unix_now();
    assert_secure_login(
        run.login("bob"),
        "SCRAM-SHA-256",
        &format!("{BOB}/receiver"),
    );
    assert_eq!(
        run.one("roster", "bob")["items"],
        json!({ALICE: wire_item("both", None, &[])}),
        "bob's roster after the restart"
    );
    let messages = run.one("messages", "bob")["messages"]
        .as_array()
        .expect("message list");
    let bodies: Vec<_> = messages.iter().map(|m| &m["body"]).collect();
    assert_eq!(bodies, [first, second], "in order, each once: {messages:?}");
    for message in messages {
        assert_eq!(message["from"], format!("{ALICE}/sender"), "{message}");
        assert_eq!(message["to"], format!("{BOB}/receiver"), "{message}");
        assert_eq!(message["type"], "chat", "{message}");
        assert_eq!(message["delay_from"], "localhost", "{message}");
        // XEP-0203: when it was stored (the stamp has whole seconds).
        let stamp = message["delay_stamp"]
            .as_f64()
            .unwrap_or_else(|| panic!("no <delay/> stamp: {message}"));
        assert!(
            stamp >= sent_at.floor() - 1.0 && stamp <= received_at,
            "stamp {stamp} not between {sent_at} and {received_at}: {message}"
        );
    }

    // 4. alice removes bob.
    let run = run_client(&server, &["unfriend"]);
    assert_eq!(
        run.one("roster", "alice")["items"],
        json!({BOB: wire_item("both", Some("Bob"), &["Friends"])})
    );
    assert_eq!(
        run.one("roster", "bob")["items"],
        json!({ALICE: wire_item("both", None, &[])})
    );
    // Delivered offline messages are gone from the store: none come again.
    assert_eq!(run.one("messages", "bob")["messages"], json!([]));
    let alice_pushes = run.one("roster_pushes", "alice")["pushes"]
        .as_array()
        .expect("push list");
    assert_eq!(
        alice_pushes.last(),
        Some(&json!({"type": "set", "items": {BOB: wire_item("remove", None, &[])}})),
        "the last push to alice removes bob: {alice_pushes:?}"
    );
    assert_eq!(run.one("roster_state", "alice")["item"], Value::Null);
    // bob keeps alice in his roster, without a subscription either way (RFC 6121 §2.5.2).
    let bob_pushes = run.one("roster_pushes", "bob")["pushes"]
        .as_array()
        .expect("push list");
    assert_eq!(
        bob_pushes.last(),
        Some(&json!({"type": "set", "items": {ALICE: wire_item("none", None, &[])}})),
        "{bob_pushes:?}"
    );
    assert_eq!(
        run.one("roster_state", "bob")["item"],
        json!({"subscription": "none", "pending_out": false, "name": null,
               "groups": [], "resources": []})
    );
    let bob_presences = run.one("presences", "bob")["presences"]
        .as_array()
        .expect("presence list");
    for expected in [
        json!({"from": ALICE, "type": "unsubscribe"}),
        json!({"from": ALICE, "type": "unsubscribed"}),
        json!({"from": format!("{ALICE}/remover"), "type": "unavailable"}),
    ] {
        assert!(
            bob_presences.contains(&expected),
            "bob did not get {expected}: {bob_presences:?}"
        );
    }
    // What the server says when asked again.
    assert_eq!(run.one("roster_refetched", "alice")["items"], json!({}));
    assert_eq!(
        run.one("roster_refetched", "bob")["items"],
        json!({ALICE: wire_item("none", None, &[])})
    );
}

/// slixmpp 1.8.3 with its stock settings. It picks SCRAM-SHA-256-PLUS and SCRAM-SHA-1-PLUS
/// with `tls-unique` (undefined for TLS 1.3, refused), then SCRAM-SHA-256 and SCRAM-SHA-1 with
/// the gs2 flag `y`, refused as a downgrade (RFC 5802 §6, the server offered -PLUS), and then
/// PLAIN over TLS, as it does with Prosody. None of the refusals tried a password, so none
/// counts toward the failed-login limit or its delays (src/server/stream/auth.rs): the login is quick.
#[test]
fn stock_slixmpp_logs_in() {
    if !slixmpp_installed() {
        return;
    }
    let server = server_with_accounts();
    let started = std::time::Instant::now();
    let run = run_client(&server, &["mechanisms", "stock"]);
    let login = run.login("alice");
    assert_eq!(login["ok"], true, "{login}");
    assert_eq!(login["starttls"], true, "{login}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "slowed down as if guessing: {:?}",
        started.elapsed()
    );
}
