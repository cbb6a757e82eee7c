//! Blocking (XEP-0191) on the bundled server, as real clients use it: slixmpp's `xep_0191`
//! plugin (Debian's 1.8.3 and the current release from PyPI) blocks and unblocks with the
//! pushes seen by a second resource, a blocked contact's chat never arrives and the blocker's
//! chat to it is refused with `<blocked/>`, and the list survives a restart; profanity's block
//! list request at login is answered and `/blocked add` works. Then the hostile cases: a block
//! list flood past the cap, thousands of items in one request, malformed JIDs, IQ results.
//!
//! Without slixmpp, profanity or tmux the tests that need them skip, unless CI=true, where a
//! missing peer fails them.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::peers::{python_imports, run_event_script, DEBIAN_PYTHON, VENV_PYTHON};
use support::profanity::{find_programs, iq_exchanges, Profanity};
use support::raw::{parse, Raw};
use support::server::{limits, InProcessServer, ServerProcess};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/slixmpp/blocking.py");
const ALICE_PASSWORD: &str = "alice-secret";
const BOB_PASSWORD: &str = "bob-secret";
/// How long one run of the script may take (it gives up after 60 s by itself).
const SCRIPT_DEADLINE: Duration = Duration::from_secs(90);
/// How long one answer from the server may take.
const STEP: Duration = Duration::from_secs(10);
const BLOCKING: &str = "urn:xmpp:blocking";

// ----- slixmpp -----------------------------------------------------------------------------------

/// Runs `blocking.py COMMAND` with `python` against `server`; returns its report.
fn run_script(python: &str, command: &str, server: &ServerProcess) -> Value {
    let port = server.port.to_string();
    let ca = server.ca_file.to_string_lossy().into_owned();
    let mut run = Command::new(python);
    run.arg(SCRIPT)
        .arg(command)
        .args(["--port", &port, "--ca", &ca])
        .args(["--alice-password", ALICE_PASSWORD])
        .args(["--bob-password", BOB_PASSWORD]);
    let (mut events, _) = run_event_script(
        &mut run,
        &format!("{python} blocking.py {command}"),
        SCRIPT_DEADLINE,
        || server.log(),
    );
    events.pop().expect("the done event")
}

/// The whole scenario with the slixmpp of `python`: block, restart, unblock.
fn block_restart_unblock(python: &str) -> String {
    let mut server = ServerProcess::start();
    server.add_user("alice", ALICE_PASSWORD);
    server.add_user("bob", BOB_PASSWORD);

    let report = run_script(python, "block", &server);
    assert_eq!(report["list_before"], serde_json::json!([]), "{report}");
    assert_eq!(report["chat_before"], true, "{report}");
    // The second resource, which had fetched the list, sees the block (XEP-0191 §3.3).
    assert_eq!(
        report["pushes_two"],
        serde_json::json!([{"kind": "block", "items": ["bob@localhost"]}]),
        "{report}"
    );
    // bob's chat bounces as if alice were not there (§3.5), and never reaches her.
    let refused = &report["bob_to_alice_error"];
    assert_eq!(
        refused["conditions"],
        serde_json::json!(["service-unavailable"]),
        "{report}"
    );
    assert_eq!(report["bob_to_alice_delivered"], false, "{report}");
    // alice's chat to bob is refused with <blocked/> (§3.6), and never reaches him.
    let refused = &report["alice_to_bob_error"];
    assert_eq!(
        refused["conditions"],
        serde_json::json!(["not-acceptable"]),
        "{report}"
    );
    assert_eq!(refused["blocked"], true, "{report}");
    assert_eq!(refused["error_type"], "cancel", "{report}");
    assert_eq!(report["alice_to_bob_delivered"], false, "{report}");
    assert_eq!(
        report["list_after"],
        serde_json::json!(["bob@localhost"]),
        "{report}"
    );

    server.restart();
    let report = run_script(python, "unblock", &server);
    assert_eq!(
        report["list_after_restart"],
        serde_json::json!(["bob@localhost"]),
        "kept on disk: {report}"
    );
    assert_eq!(report["bob_to_alice_delivered"], false, "{report}");
    assert_eq!(
        report["pushes_two"],
        serde_json::json!([{"kind": "unblock", "items": ["bob@localhost"]}]),
        "{report}"
    );
    assert_eq!(report["chat_after"], true, "{report}");
    assert_eq!(report["list_after"], serde_json::json!([]), "{report}");
    report["slixmpp"].as_str().unwrap_or_default().to_string()
}

#[test]
fn debian_slixmpp_blocks_and_unblocks_with_pushes_across_a_restart() {
    if !python_imports(
        DEBIAN_PYTHON,
        "slixmpp",
        "install the Debian package python3-slixmpp",
    ) {
        return;
    }
    let version = block_restart_unblock(DEBIAN_PYTHON);
    assert!(version.starts_with("1.8"), "{version}");
}

#[test]
fn current_slixmpp_blocks_and_unblocks_with_pushes_across_a_restart() {
    if !python_imports(
        VENV_PYTHON,
        "slixmpp",
        "python3 -m venv target/slixmpp-venv && target/slixmpp-venv/bin/pip install slixmpp aiohttp",
    ) {
        return;
    }
    block_restart_unblock(VENV_PYTHON);
}

// ----- profanity ---------------------------------------------------------------------------------

/// A raw client's chat from `who` to `to`; returns what the server sent back up to the
/// end of the first message, or up to the ping's answer if there was none.
async fn chat_and_ping(raw: &mut Raw, to: &str, text: &str) -> String {
    raw.send(format!(
        "<message to='{to}' type='chat' id='c'><body>{text}</body></message>"
    ))
    .await;
    raw.ping("after-chat").await
}

#[test]
fn profanitys_block_list_is_answered_at_login_and_blocked_add_works() {
    let Some((profanity, tmux)) = find_programs() else {
        return;
    };
    let server = ServerProcess::start();
    server.add_user("alice", ALICE_PASSWORD);
    server.add_user("eve", "eve-secret");
    server.add_user("carol", "carol-secret");
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");

    let session = Profanity::start(&profanity, &tmux, &server.ca_file);
    session.connect("alice@localhost", ALICE_PASSWORD, server.port);
    // At login, profanity asks for the block list (the server advertises urn:xmpp:blocking):
    // it gets the list, not an error.
    let log = session.wait_log("the block list request answered", |log| {
        iq_exchanges(log)
            .iter()
            .any(|iq| iq.payload == "{urn:xmpp:blocking}blocklist" && iq.answer.is_some())
    });
    for iq in iq_exchanges(&log)
        .iter()
        .filter(|iq| iq.namespace == BLOCKING)
    {
        assert_eq!(iq.answer.as_deref(), Some("result"), "{iq}");
    }

    session.type_line("/blocked add eve@localhost");
    session.wait_for("User eve@localhost successfully blocked.");

    runtime.block_on(async {
        // The block is the server's: another resource of alice's reads it back.
        let mut other = Raw::login(
            server.port,
            &server.ca_file,
            "alice",
            ALICE_PASSWORD,
            "other",
        )
        .await;
        other
            .send(format!(
                "<iq type='get' id='list'><blocklist xmlns='{BLOCKING}'/></iq>"
            ))
            .await;
        let list = other.read_until("</iq>", STEP).await;
        assert_eq!(blocklist(&list), ["eve@localhost"], "{list}");

        // eve's chat bounces; carol's, sent after it, arrives: profanity was sent everything
        // routed before carol's chat, and eve's is not among it.
        let mut eve = Raw::login(server.port, &server.ca_file, "eve", "eve-secret", "x").await;
        let answer = chat_and_ping(&mut eve, "alice@localhost", "eve-was-here").await;
        assert!(answer.contains("service-unavailable"), "{answer}");
        let mut carol =
            Raw::login(server.port, &server.ca_file, "carol", "carol-secret", "x").await;
        let answer = chat_and_ping(&mut carol, "alice@localhost", "carol-was-here").await;
        assert!(!answer.contains("<error"), "{answer}");
    });
    let log = session.wait_log("carol's chat", |log| log.contains("carol-was-here"));
    assert!(
        !log.contains("eve-was-here"),
        "eve's chat reached profanity"
    );
}

/// The JIDs in the `<blocklist/>` of an IQ result read as text.
fn blocklist(text: &str) -> Vec<String> {
    let elements = parse(text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let iq = elements
        .iter()
        .rfind(|e| e.name() == "iq")
        .unwrap_or_else(|| panic!("no iq in {text}"));
    assert_eq!(iq.attr("type"), Some("result"), "{text}");
    let list = iq
        .get_child("blocklist", BLOCKING)
        .unwrap_or_else(|| panic!("no blocklist in {text}"));
    list.children()
        .filter_map(|item| item.attr("jid").map(str::to_string))
        .collect()
}

// ----- hostile -----------------------------------------------------------------------------------

/// A server with the account alice, whose lists hold at most `max` JIDs, and alice logged in.
async fn alice_on_server_with_cap(max: usize) -> (InProcessServer, Raw) {
    let server = InProcessServer::start_with(limits(|l| l.max_blocklist = max)).await;
    server.add_user("alice", ALICE_PASSWORD);
    let raw = Raw::login(
        server.port,
        &server.ca_file,
        "alice",
        ALICE_PASSWORD,
        "phone",
    )
    .await;
    (server, raw)
}

/// Sends a `<block/>` of `jids` and returns the answer's type and first error condition.
async fn block(raw: &mut Raw, id: &str, jids: &[String]) -> (String, Option<String>) {
    let items: String = jids
        .iter()
        .map(|jid| format!("<item jid='{jid}'/>"))
        .collect();
    raw.send(format!(
        "<iq type='set' id='{id}'><block xmlns='{BLOCKING}'>{items}</block></iq>"
    ))
    .await;
    iq_outcome(&answer_to(raw, id).await)
}

/// The answer to the IQ `id`, read past the pushes that may come first (the session that
/// fetched the list gets one for each change, XEP-0191 §3.3).
async fn answer_to(raw: &mut Raw, id: &str) -> String {
    loop {
        let text = raw.read_until("</iq>", STEP).await;
        let elements = parse(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        let answered = elements
            .iter()
            .any(|e| e.name() == "iq" && e.attr("id") == Some(id));
        if answered {
            return text;
        }
        assert!(!elements.is_empty(), "no answer to {id}");
    }
}

/// The type of the IQ in `text` and the condition of its error, if any.
fn iq_outcome(text: &str) -> (String, Option<String>) {
    let elements = parse(text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let iq = elements
        .iter()
        .rfind(|e| e.name() == "iq")
        .unwrap_or_else(|| panic!("no iq in {text}"));
    let condition = iq.get_child("error", "jabber:client").and_then(|error| {
        error
            .children()
            .find(|c| c.ns() == "urn:ietf:params:xml:ns:xmpp-stanzas")
            .map(|c| c.name().to_string())
    });
    (iq.attr("type").unwrap_or_default().to_string(), condition)
}

async fn list_of(raw: &mut Raw) -> Vec<String> {
    raw.send(format!(
        "<iq type='get' id='list'><blocklist xmlns='{BLOCKING}'/></iq>"
    ))
    .await;
    blocklist(&answer_to(raw, "list").await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_a_block_list_flood_stops_at_the_cap() {
    let (_server, mut alice) = alice_on_server_with_cap(50).await;
    let mut refused = 0;
    for n in 0..80 {
        let outcome = block(
            &mut alice,
            &format!("b{n}"),
            &[format!("spam{n}@example.org")],
        )
        .await;
        match outcome {
            (kind, None) if kind == "result" => assert!(n < 50, "block {n} taken past the cap"),
            (kind, Some(condition)) if kind == "error" => {
                assert_eq!(condition, "policy-violation");
                assert!(n >= 50, "block {n} refused under the cap");
                refused += 1;
            }
            other => panic!("block {n}: {other:?}"),
        }
    }
    assert_eq!(refused, 30);
    assert_eq!(list_of(&mut alice).await.len(), 50);
    let pong = alice.ping("still-there").await;
    assert!(
        pong.contains("type='result'") || pong.contains("type=\"result\""),
        "{pong}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_thousands_of_items_in_one_block_are_refused_whole() {
    let (_server, mut alice) = alice_on_server_with_cap(1000).await;
    let many: Vec<String> = (0..4000)
        .map(|n| format!("spammer{n}@example.org"))
        .collect();
    let (kind, condition) = block(&mut alice, "huge", &many).await;
    assert_eq!(
        (kind.as_str(), condition.as_deref()),
        ("error", Some("policy-violation"))
    );
    assert!(list_of(&mut alice).await.is_empty());
    // Up to the cap, one request is enough.
    let (kind, _) = block(&mut alice, "max", &many[..1000]).await;
    assert_eq!(kind, "result");
    assert_eq!(list_of(&mut alice).await.len(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_malformed_jids_are_refused_and_block_nothing() {
    let (_server, mut alice) = alice_on_server_with_cap(1000).await;
    let long = format!("{}@example.org", "n".repeat(2000));
    for (jids, condition) in [
        (vec!["ok@example.org", "a@b@c"], "jid-malformed"),
        (vec!["ok@example.org", "@example.org"], "jid-malformed"),
        (vec!["ok@example.org", &long], "jid-malformed"),
        (vec!["ok@example.org", ""], "bad-request"),
        (vec![], "bad-request"),
    ] {
        let jids: Vec<String> = jids.into_iter().map(str::to_string).collect();
        let outcome = block(&mut alice, "bad", &jids).await;
        assert_eq!(
            outcome,
            ("error".to_string(), Some(condition.to_string())),
            "{jids:?}"
        );
    }
    assert!(list_of(&mut alice).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_iq_results_and_errors_about_the_block_list_are_never_answered() {
    let (_server, mut alice) = alice_on_server_with_cap(1000).await;
    alice
        .send(format!(
            "<iq type='result' id='r1'><blocklist xmlns='{BLOCKING}'><item jid='a@x'/></blocklist></iq>\
             <iq type='result' id='r2'/>\
             <iq type='error' id='r3'><block xmlns='{BLOCKING}'><item jid='a@x'/></block>\
             <error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
        ))
        .await;
    // The server answers in order: the first thing back is the ping's answer.
    let answer = alice.ping("barrier").await;
    let elements = parse(&answer).unwrap_or_else(|e| panic!("{e}: {answer}"));
    assert_eq!(elements.len(), 1, "{answer}");
    assert_eq!(elements[0].attr("id"), Some("barrier"), "{answer}");
    assert!(list_of(&mut alice).await.is_empty());
}
