//! The rooms (XEP-0045) of the bundled server with a real client.
//!
//! slixmpp, Debian's 1.8.3 (`/usr/bin/python3`) and the current release from PyPI (the virtual
//! environment at `target/slixmpp-venv`, made by `.ci/run`), running `tests/slixmpp/muc.py`
//! with its `xep_0045` plugin: alice creates a room, bob joins it with history, they talk,
//! bob changes his nick, alice writes to him privately through the room, both self-ping
//! (XEP-0410), bob leaves. Without the interpreter or the package the tests skip, unless
//! CI=true, where they fail.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use support::peers::{python_imports, run_event_script};
use support::server::ServerProcess;

/// Debian's interpreter, which sees `python3-slixmpp`.
const DEBIAN_PYTHON: &str = "/usr/bin/python3";
/// The virtual environment with the current slixmpp from PyPI (see `.ci/run`).
const VENV_PYTHON: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/target/slixmpp-venv/bin/python"
);
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

/// The one event named `name` among `events`.
fn event<'a>(events: &'a [Value], name: &str) -> &'a Value {
    let found: Vec<&Value> = events.iter().filter(|e| e["event"] == name).collect();
    match found.as_slice() {
        [one] => one,
        _ => panic!("expected one {name:?} event in {events:?}"),
    }
}

/// What every slixmpp version must see.
fn assert_room(events: &[Value]) {
    // 1. The creator owns the new room and is told it shows real JIDs.
    let created = event(events, "created");
    assert_eq!(created["codes"], json!(["100", "110", "201"]), "{created}");
    assert_eq!(created["role"], "moderator", "{created}");
    assert_eq!(created["affiliation"], "owner", "{created}");
    assert_eq!(created["jid"], "alice@localhost/phone", "{created}");
    // 2. The second joiner sees the first, then the history stamped by the room.
    let joined = event(events, "joined");
    assert_eq!(joined["codes"], json!(["100", "110"]), "{joined}");
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
