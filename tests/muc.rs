//! The rooms (XEP-0045) of the bundled server with a real client.
//!
//! slixmpp, Debian's 1.8.3 (`/usr/bin/python3`) and the current release from PyPI (the virtual
//! environment at `target/slixmpp-venv`, made by `.ci/run`), running `tests/slixmpp/muc.py`
//! with its `xep_0045` plugin: alice creates a room, bob joins it with history, they talk,
//! bob changes his nick, alice writes to him privately through the room, both self-ping
//! (XEP-0410), bob leaves. Without the interpreter or the package the tests skip, unless
//! CI=true, where they fail.
//!
//! Hostile, with raw clients: nicks with control characters or of 10 kB, a spoofed `from`
//! inside a room, a history request for a million stanzas, a thousand rooms from one user, a
//! presence to a room of another service.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use support::peers::{event, python_imports, run_event_script, DEBIAN_PYTHON, VENV_PYTHON};
use support::raw::{parse, Raw};
use support::rooms::{errors, exchange, raw_pair, WAIT};
use support::server::{ServerProcess, XmppEndpoint};
use tokio_xmpp::minidom::Element;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/slixmpp/muc.py");
/// How long one run of the script may take (each of its waits is 10 s at most).
const SCRIPT_DEADLINE: Duration = Duration::from_secs(100);
const ROOM: &str = "lab@conference.localhost";

/// Runs `muc.py` with `python` against a fresh server with alice, bob and carol.
fn run_slixmpp(python: &str) -> Vec<Value> {
    let server = ServerProcess::start_with(&[]);
    for user in ["alice", "bob", "carol"] {
        server.add_user(user, &format!("{user}-secret"));
    }
    let port = server.port.to_string();
    let ca = server.ca_file.to_string_lossy().into_owned();
    let (events, _) = run_event_script(
        Command::new(python)
            .arg(SCRIPT)
            .args(["--port", &port, "--ca", &ca])
            .args(["--alice-password", "alice-secret"])
            .args(["--bob-password", "bob-secret"])
            .args(["--carol-password", "carol-secret"]),
        &format!("{python} muc.py"),
        SCRIPT_DEADLINE,
        || server.log(),
    );
    events
}

/// What every slixmpp version must see.
fn assert_room(events: &[Value]) {
    // 1. The creator owns the new room and is told it shows real JIDs and is logged (the
    //    room's archive).
    let created = event(events, "created");
    assert_eq!(
        created["codes"],
        json!(["100", "110", "170", "201"]),
        "{created}"
    );
    assert_eq!(created["role"], "moderator", "{created}");
    assert_eq!(created["affiliation"], "owner", "{created}");
    assert_eq!(created["jid"], "alice@localhost/phone", "{created}");
    // 2. The second joiner sees the first, then the history stamped by the room.
    let joined = event(events, "joined");
    assert_eq!(joined["codes"], json!(["100", "110", "170"]), "{joined}");
    assert_eq!(joined["role"], "participant", "{joined}");
    // Everyone already there, then the joiner itself, last (XEP-0045 §7.2.3).
    assert_eq!(
        joined["occupants"],
        json!([format!("{ROOM}/Alice"), format!("{ROOM}/Bob")]),
        "{joined}"
    );
    assert_eq!(
        joined["history"],
        json!([{"body": "hello from alice", "from": format!("{ROOM}/Alice"), "delay_from": ROOM}]),
        "{joined}"
    );
    // 3. Groupchat from the nick, with the room's stanza id.
    let said = event(events, "groupchat");
    assert_eq!(said["from"], format!("{ROOM}/Bob"), "{said}");
    assert_eq!(said["stanza_id_by"], ROOM, "{said}");
    assert!(
        said["stanza_id"].as_str().is_some_and(|id| !id.is_empty()),
        "{said}"
    );
    // 4. The nick change: 303 with the new nick, then the new presence.
    let change = event(events, "nick_change");
    assert_eq!(change["left"]["codes"], json!(["303"]), "{change}");
    assert_eq!(change["left"]["nick"], "Robert", "{change}");
    assert_eq!(change["back"]["role"], "participant", "{change}");
    // 5. Private messages come from the sender's room JID.
    let private = event(events, "private");
    assert_eq!(private["from"], format!("{ROOM}/Alice"), "{private}");
    assert_eq!(private["body"], "psst", "{private}");
    // 6. Self-ping: joined, and not.
    let ping = event(events, "self_ping");
    assert_eq!(ping["bob"], "result", "{ping}");
    assert_eq!(ping["carol"], "not-acceptable", "{ping}");
    // 7. Leaving.
    let left = event(events, "left");
    assert_eq!(left["role"], "none", "{left}");
}

#[test]
fn debian_slixmpp_creates_joins_talks_and_changes_nick_in_a_room() {
    if !python_imports(
        DEBIAN_PYTHON,
        "slixmpp",
        "install the Debian package python3-slixmpp",
    ) {
        return;
    }
    let events = run_slixmpp(DEBIAN_PYTHON);
    let done = event(&events, "done");
    assert!(
        done["slixmpp"]
            .as_str()
            .is_some_and(|v| v.starts_with("1.8")),
        "{done}"
    );
    assert_room(&events);
}

#[test]
fn current_slixmpp_creates_joins_talks_and_changes_nick_in_a_room() {
    if !python_imports(
        VENV_PYTHON,
        "slixmpp",
        "python3 -m venv target/slixmpp-venv && target/slixmpp-venv/bin/pip install slixmpp aiohttp",
    ) {
        return;
    }
    assert_room(&run_slixmpp(VENV_PYTHON));
}

// ----- hostile ---------------------------------------------------------------------------------

/// The rooms the service lists, asked by `raw`.
async fn listed_rooms(raw: &mut Raw) -> Vec<String> {
    let got = exchange(
        raw,
        "<iq type='get' id='rooms' to='conference.localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>",
    )
    .await;
    got.iter()
        .find(|e| e.attr("id") == Some("rooms"))
        .and_then(|iq| iq.get_child("query", "http://jabber.org/protocol/disco#items"))
        .map(|q| {
            q.children()
                .filter_map(|i| i.attr("jid").map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A join of `ROOM` as `nick`, with `history` inside the `<x/>`.
fn join(nick: &str, history: &str) -> String {
    format!("<presence to='{ROOM}/{nick}'><x xmlns='http://jabber.org/protocol/muc'>{history}</x></presence>")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_nicks_with_control_characters_or_of_ten_kilobytes_join_nothing() {
    let (server, mut alice, mut mallory) = raw_pair(|_| {}).await;
    // Control characters XML allows (tab, NEL), a nick longer than a JID's resource may be
    // (1023 bytes, RFC 7622 §3.4) and one longer than the service's 64 characters: refused,
    // the session goes on.
    let (too_long_for_a_jid, too_long_for_a_nick) = ("n".repeat(2048), "n".repeat(100));
    for nick in [
        "tab&#9;x",
        "nel&#x85;x",
        too_long_for_a_jid.as_str(),
        too_long_for_a_nick.as_str(),
    ] {
        let got = exchange(&mut alice, &join(nick, "")).await;
        let errors = errors(&got);
        assert_eq!(errors.len(), 1, "{nick:.20}: {got:?}");
        assert!(
            ["jid-malformed", "not-acceptable"].contains(&errors[0].as_str()),
            "{nick:.20}: {errors:?}"
        );
    }
    // A character XML forbids (a bell) ends the stream as not well-formed (RFC 6120 §11.1),
    // and a 10 kB attribute as a policy violation (the parser's bound on one value).
    mallory.send(join("bell&#7;", "")).await;
    let answer = mallory.read_to_close(WAIT).await;
    assert_eq!(
        answer
            .stream_error()
            .map(|(condition, _)| condition)
            .as_deref(),
        Some("not-well-formed")
    );
    let mut mallory = Raw::login(
        server.port(),
        server.ca_file(),
        "mallory",
        "mallory-secret",
        "y",
    )
    .await;
    mallory.send(join(&"n".repeat(10 * 1024), "")).await;
    let answer = mallory.read_to_close(WAIT).await;
    assert_eq!(
        answer
            .stream_error()
            .map(|(condition, _)| condition)
            .as_deref(),
        Some("policy-violation")
    );
    assert!(listed_rooms(&mut alice).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_a_spoofed_from_inside_a_room_reaches_nobody_as_someone_else() {
    let (_server, mut alice, mut mallory) = raw_pair(|_| {}).await;
    exchange(&mut alice, &join("Alice", "")).await;
    exchange(&mut mallory, &join("Mallory", "")).await;
    mallory
        .send(format!(
            "<message from='{ROOM}/Alice' to='{ROOM}' type='groupchat'><body>I am Alice</body></message>"
        ))
        .await;
    // A `from` that is not the sender's own ends its stream (RFC 6120 §8.1.2.1).
    let answer = mallory.read_to_close(WAIT).await;
    assert_eq!(
        answer
            .stream_error()
            .map(|(condition, _)| condition)
            .as_deref(),
        Some("invalid-from")
    );
    // Alice sees Mallory leave the room (once the server has noticed the closed stream), and
    // never reads the message as from Alice.
    let mut text = alice.read_until("type='unavailable'", WAIT).await;
    text.push_str(&alice.read_until("</presence>", WAIT).await);
    let mut got = parse(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    got.extend(exchange(&mut alice, "").await);
    assert!(!got.iter().any(|e| e.name() == "message"), "{got:?}");
    // (Its join may come first: alice read nothing since.)
    let left = got
        .iter()
        .rfind(|e| e.name() == "presence" && e.attr("from") == Some(&format!("{ROOM}/Mallory")));
    assert!(
        left.is_some_and(|p| p.attr("type") == Some("unavailable")),
        "{got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_a_history_of_a_million_stanzas_is_the_rooms_twenty() {
    let (_server, mut alice, mut mallory) = raw_pair(|_| {}).await;
    exchange(&mut alice, &join("Alice", "")).await;
    let mut said = String::new();
    for i in 0..30 {
        said.push_str(&format!(
            "<message to='{ROOM}' type='groupchat'><body>m{i}</body></message>"
        ));
    }
    exchange(&mut alice, &said).await;
    let got = exchange(
        &mut mallory,
        &join(
            "Mallory",
            "<history maxstanzas='1000000' seconds='99999999999'/>",
        ),
    )
    .await;
    let history: Vec<String> = got
        .iter()
        .filter(|e| e.name() == "message")
        .filter_map(|e| e.get_child("body", "jabber:client"))
        .map(Element::text)
        .collect();
    assert_eq!(history.len(), 20, "{history:?}");
    assert_eq!(history.first().map(String::as_str), Some("m10"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_a_thousand_rooms_from_one_user_stop_at_the_limit() {
    let (_server, mut alice, mut mallory) =
        raw_pair(|limits| limits.muc.max_rooms_per_user = 10).await;
    // A thousand joins, sent a hundred at a time and read back in between: a client that
    // sent a thousand and read nothing would be cut off for not reading, a different test.
    let mut errors = Vec::new();
    for batch in 0..10 {
        let mut flood = String::new();
        for i in batch * 100..(batch + 1) * 100 {
            flood.push_str(&format!(
                "<presence to='r{i}@conference.localhost/M'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
            ));
        }
        errors.extend(self::errors(&exchange(&mut mallory, &flood).await));
    }
    assert_eq!(errors.len(), 990, "{:?}", &errors[..errors.len().min(5)]);
    assert!(errors.iter().all(|e| e == "not-allowed"), "{errors:?}");
    assert_eq!(listed_rooms(&mut alice).await.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_a_presence_to_a_room_of_another_service_creates_nothing() {
    let (_server, mut alice, _mallory) = raw_pair(|_| {}).await;
    let got = exchange(
        &mut alice,
        "<presence to='lab@conference.example.org/Alice'><x xmlns='http://jabber.org/protocol/muc'/></presence>",
    )
    .await;
    assert_eq!(errors(&got), ["remote-server-not-found"], "{got:?}");
    assert!(listed_rooms(&mut alice).await.is_empty());
}
