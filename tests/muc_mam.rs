//! The rooms' message archive (XEP-0313 on a room's JID) of the bundled server, end to end.
//!
//! slixmpp, Debian's 1.8.3 (`/usr/bin/python3`) and the current release from PyPI (the virtual
//! environment at `target/slixmpp-venv`, made by `.ci/run`), with its `xep_0045`, `xep_0313`,
//! `xep_0059` and `xep_0359` plugins (`tests/slixmpp/muc_mam.py`): alice and bob talk in a
//! room and bob pages through its archive, from the stanza ids the room put on the messages;
//! the server restarts, alice comes back to the room, says one more thing and reads the whole
//! archive, the part before the restart included, with the same ids; carol, who never joined,
//! reads the public room's archive too. Without the interpreter or the package the tests skip,
//! unless CI=true, where they fail.
//!
//! Hostile, with raw clients: a query of a room that does not exist, and queries and disco of a
//! room on a server with `--no-archive`. (Who may query which room is in the unit tests of
//! `src/server/hub/muc/archive.rs`.)

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::peers::{python_imports, run_event_script, DEBIAN_PYTHON, VENV_PYTHON};
use support::raw::Raw;
use support::server::{limits, InProcessServer, ServerProcess, XmppEndpoint};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/slixmpp/muc_mam.py");
/// How long one run of the script may take (each of its waits is 10 s at most).
const SCRIPT_DEADLINE: Duration = Duration::from_secs(100);
const ROOM: &str = "lab@conference.localhost";
/// How long one answer of the server may take.
const WAIT: Duration = Duration::from_secs(10);

/// What one run of `muc_mam.py` reported.
struct Report {
    events: Vec<Value>,
}

impl Report {
    fn event(&self, name: &str) -> &Value {
        self.events
            .iter()
            .find(|e| e["event"] == name)
            .unwrap_or_else(|| panic!("no {name} event in {:?}", self.events))
    }

    /// A field of each message of an event.
    fn field(&self, name: &str, field: &str) -> Vec<String> {
        self.event(name)["messages"]
            .as_array()
            .unwrap_or_else(|| panic!("no messages in {}", self.event(name)))
            .iter()
            .map(|m| m[field].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

/// Runs one phase of `muc_mam.py` with `python` against `server`.
fn run_phase(python: &str, server: &ServerProcess, phase: &str, extra: &[&str]) -> Report {
    let port = server.port.to_string();
    let ca = server.ca_file.to_string_lossy().into_owned();
    let (events, _) = run_event_script(
        Command::new(python)
            .arg(SCRIPT)
            .args(["--port", &port, "--ca", &ca, "--phase", phase])
            .args(["--alice-password", "alice-secret"])
            .args(["--bob-password", "bob-secret"])
            .args(["--carol-password", "carol-secret"])
            .args(extra),
        &format!("{python} muc_mam.py --phase {phase}"),
        SCRIPT_DEADLINE,
        || server.log(),
    );
    Report { events }
}

/// The whole scenario with `python`'s slixmpp.
fn a_rooms_archive_pages_by_stanza_id_and_survives_a_restart(python: &str) -> Report {
    let mut server = ServerProcess::start();
    for user in ["alice", "bob", "carol"] {
        server.add_user(user, &format!("{user}-secret"));
    }
    let talk = run_phase(python, &server, "talk", &[]);
    let said = talk.field("said", "body");
    assert_eq!(said, ["one", "two", "three", "four", "five"]);
    let stanza_ids = talk.field("said", "stanza_id");
    assert!(talk.field("said", "by").iter().all(|by| by == ROOM));
    // The archive, paged two at a time, holds what was said, under the stanza ids the room
    // stamped (XEP-0313 §3.5), each from the speaker's room JID, from the room.
    assert_eq!(talk.field("archive", "body"), said);
    assert_eq!(talk.field("archive", "id"), stanza_ids);
    assert_eq!(
        talk.field("archive", "from"),
        ["Alice", "Bob", "Alice", "Bob", "Alice"].map(|nick| format!("{ROOM}/{nick}"))
    );
    assert!(talk.field("archive", "archive").iter().all(|a| a == ROOM));
    // Paging from a stanza id (XEP-0059 `<after/>`).
    assert_eq!(talk.field("after_second", "body"), ["three", "four"]);
    // The last page, read backward (slixmpp yields it newest first).
    assert_eq!(talk.field("last_page", "body"), ["five", "four"]);

    server.stop();
    server.restart();
    let fifth = stanza_ids[4].clone();
    let again = run_phase(python, &server, "again", &["--after", &fifth]);
    assert_eq!(
        again.field("archive", "body"),
        ["one", "two", "three", "four", "five", "six"]
    );
    assert_eq!(again.field("archive", "id")[..5], stanza_ids[..]);
    assert_eq!(again.field("after_fifth", "body"), ["six"]);
    // A passer-by reads a public open room's archive without joining (as in Prosody).
    assert_eq!(
        again.field("passer_by", "body"),
        ["one", "two", "three", "four", "five", "six"]
    );
    talk
}

#[test]
fn debian_slixmpp_pages_a_rooms_archive_by_stanza_id_across_a_restart() {
    if !python_imports(
        DEBIAN_PYTHON,
        "slixmpp",
        "install the Debian package python3-slixmpp",
    ) {
        return;
    }
    let talk = a_rooms_archive_pages_by_stanza_id_and_survives_a_restart(DEBIAN_PYTHON);
    let version = &talk.event("slixmpp")["version"];
    assert!(
        version.as_str().is_some_and(|v| v.starts_with("1.8")),
        "{version}"
    );
}

#[test]
fn current_slixmpp_pages_a_rooms_archive_by_stanza_id_across_a_restart() {
    if !python_imports(
        VENV_PYTHON,
        "slixmpp",
        "python3 -m venv target/slixmpp-venv && target/slixmpp-venv/bin/pip install slixmpp aiohttp",
    ) {
        return;
    }
    a_rooms_archive_pages_by_stanza_id_and_survives_a_restart(VENV_PYTHON);
}

// ----- hostile ---------------------------------------------------------------------------------

/// Sends `xml` and reads up to the end of the IQ answer with id `id`.
async fn ask(raw: &mut Raw, xml: &str, id: &str) -> String {
    assert!(raw.send(xml.to_string()).await, "the connection is gone");
    let mut text = raw.read_until(&format!("id='{id}'"), WAIT).await;
    text.push_str(&raw.read_until("</iq>", WAIT).await);
    text
}

/// A query of ROOM's archive with id `id`.
fn query(id: &str) -> String {
    format!(
        "<iq type='set' id='{id}' to='{ROOM}'><query xmlns='urn:xmpp:mam:2' queryid='{id}'/></iq>"
    )
}

/// A join of ROOM as `nick`, answered (the subject comes last, §7.2.16).
async fn join(raw: &mut Raw, nick: &str) {
    raw.send(format!(
        "<presence to='{ROOM}/{nick}'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    ))
    .await;
    raw.read_until_any(&["</subject>", "<subject/>"], WAIT)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_queries_of_a_missing_room_or_with_the_archive_off_get_errors() {
    let server = InProcessServer::start().await;
    server.add_user("mallory", "mallory-secret");
    let mut mallory = Raw::login(
        server.port(),
        server.ca_file(),
        "mallory",
        "mallory-secret",
        "x",
    )
    .await;
    let answer = ask(&mut mallory, &query("q1"), "q1").await;
    assert!(answer.contains("item-not-found"), "{answer}");
    assert!(!answer.contains("<result"), "{answer}");

    let server = InProcessServer::start_with(limits(|l| l.archive.enabled = false)).await;
    server.add_user("mallory", "mallory-secret");
    let mut mallory = Raw::login(
        server.port(),
        server.ca_file(),
        "mallory",
        "mallory-secret",
        "x",
    )
    .await;
    join(&mut mallory, "M").await;
    mallory
        .send(format!(
            "<message to='{ROOM}' type='groupchat'><body>not kept</body></message>"
        ))
        .await;
    mallory.read_until("not kept", WAIT).await;
    let answer = ask(&mut mallory, &query("q2"), "q2").await;
    assert!(answer.contains("service-unavailable"), "{answer}");
    let info = ask(
        &mut mallory,
        &format!("<iq type='get' id='d' to='{ROOM}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"),
        "d",
    )
    .await;
    assert!(info.contains("http://jabber.org/protocol/muc"), "{info}");
    assert!(!info.contains("urn:xmpp:mam:2"), "{info}");
}
