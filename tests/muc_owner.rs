//! A room's owner (XEP-0045 §10) on the bundled server, with real clients.
//!
//! slixmpp, Debian's 1.8.3 (`/usr/bin/python3`) and the current release from PyPI (the virtual
//! environment at `target/slixmpp-venv`, made by `.ci/run`), running
//! `tests/slixmpp/muc_owner.py` with its `xep_0045` plugin: alice creates a room, configures
//! it through the form (persistent, password, then members-only), bob and carol are refused
//! as the configuration says; the server restarts on the same data directory and the room is
//! still there, with its configuration, owner and subject; alice destroys it. Without the
//! interpreter or the package the tests skip, unless CI=true, where they fail.
//!
//! Hostile, with a raw client: configuration forms with a thousand or ten thousand fields, or
//! a value of 100 kB, are refused and change nothing; the server goes on.
//!
//! The service's flags, on the program itself: `--muc-domain` moves the rooms, `--no-muc`
//! removes them, `--muc-lock-new-rooms` keeps others out of a new room until its owner
//! accepts it.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use support::peers::{event, python_imports, run_event_script, DEBIAN_PYTHON, VENV_PYTHON};
use support::raw::{Raw, NS_STANZA_ERRORS};
use support::rooms::{exchange, WAIT};
use support::server::{InProcessServer, ServerProcess, XmppEndpoint};
use tokio_xmpp::minidom::Element;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/slixmpp/muc_owner.py");
/// How long one run of the script may take (each of its waits is 10 s at most).
const SCRIPT_DEADLINE: Duration = Duration::from_secs(100);
const ROOM: &str = "lounge@conference.localhost";

/// Runs one phase of `muc_owner.py` with `python` against `server`.
fn run_phase(python: &str, phase: &str, server: &ServerProcess) -> Vec<Value> {
    let port = server.port.to_string();
    let ca = server.ca_file.to_string_lossy().into_owned();
    let (events, _) = run_event_script(
        Command::new(python)
            .arg(SCRIPT)
            .args(["--phase", phase, "--port", &port, "--ca", &ca])
            .args(["--alice-password", "alice-secret"])
            .args(["--bob-password", "bob-secret"])
            .args(["--carol-password", "carol-secret"]),
        &format!("{python} muc_owner.py --phase {phase}"),
        SCRIPT_DEADLINE,
        || server.log(),
    );
    events
}

/// The whole scenario with the slixmpp of `python`: configure, restart, destroy. Returns the
/// slixmpp version.
fn configure_restart_destroy(python: &str) -> String {
    let mut server = ServerProcess::start();
    for user in ["alice", "bob", "carol"] {
        server.add_user(user, &format!("{user}-secret"));
    }
    let events = run_phase(python, "configure", &server);
    // 1. The creator owns the new room and gets its form.
    let created = event(&events, "created");
    assert_eq!(
        created["codes"],
        json!(["100", "110", "170", "201"]),
        "{created}"
    );
    assert_eq!(created["affiliation"], "owner", "{created}");
    let form = event(&events, "form");
    for var in [
        "FORM_TYPE",
        "muc#roomconfig_roomname",
        "muc#roomconfig_persistentroom",
        "muc#roomconfig_publicroom",
        "muc#roomconfig_membersonly",
        "muc#roomconfig_passwordprotectedroom",
        "muc#roomconfig_roomsecret",
        "muc#roomconfig_moderatedroom",
        "muc#roomconfig_whois",
        "muc#roomconfig_maxusers",
        "muc#roomconfig_historylength",
    ] {
        assert!(
            form["vars"]
                .as_array()
                .is_some_and(|v| v.contains(&json!(var))),
            "{var}: {form}"
        );
    }
    assert_eq!(
        form["values"],
        json!({
            "muc#roomconfig_persistentroom": "False",
            "muc#roomconfig_whois": "anyone",
            "muc#roomconfig_maxusers": "200",
            "muc#roomconfig_historylength": "20",
        }),
        "{form}"
    );
    // 2–3. A password (XEP-0045 §7.2.6).
    let password = event(&events, "password");
    assert_eq!(password["without"]["error"], "not-authorized", "{password}");
    assert_eq!(
        password["with_password"]["codes"],
        json!(["100", "110", "170"]),
        "{password}"
    );
    // 4. Members-only: bob is taken out (322), carol refused (§7.2.7).
    let members = event(&events, "members_only");
    assert_eq!(
        members["removed"]["codes"],
        json!(["110", "322"]),
        "{members}"
    );
    assert_eq!(
        members["stranger"]["error"], "registration-required",
        "{members}"
    );
    assert_eq!(event(&events, "stored")["persistent"], "True");
    // 5. Empty, and still listed: it is persistent.
    assert_eq!(event(&events, "left")["listed"], json!([ROOM]));

    server.restart();
    let events = run_phase(python, "restarted", &server);
    let found = event(&events, "found");
    assert_eq!(found["listed"], json!([ROOM]), "kept on disk: {found}");
    for feature in [
        "muc_persistent",
        "muc_passwordprotected",
        "muc_membersonly",
        "muc_public",
    ] {
        assert!(
            found["features"]
                .as_array()
                .is_some_and(|f| f.contains(&json!(feature))),
            "{feature}: {found}"
        );
    }
    let back = event(&events, "back");
    assert_eq!(
        back["codes"],
        json!(["100", "110", "170"]),
        "no 201: {back}"
    );
    assert_eq!(back["affiliation"], "owner", "{back}");
    assert_eq!(back["subject"], "Kept across restarts", "{back}");
    // §10.9: destroyed, with the alternate room and the reason; gone from the list.
    let destroyed = event(&events, "destroyed");
    assert_eq!(
        destroyed["presence"]["destroy"],
        json!({"jid": "hall@conference.localhost", "reason": "Moved"}),
        "{destroyed}"
    );
    assert_eq!(destroyed["listed"], json!([]), "{destroyed}");
    let done = event(&events, "done");
    done["slixmpp"].as_str().unwrap_or_default().to_string()
}

#[test]
fn debian_slixmpp_configures_a_persistent_room_that_survives_a_restart() {
    if !python_imports(
        DEBIAN_PYTHON,
        "slixmpp",
        "install the Debian package python3-slixmpp",
    ) {
        return;
    }
    let version = configure_restart_destroy(DEBIAN_PYTHON);
    assert!(version.starts_with("1.8"), "{version}");
}

#[test]
fn current_slixmpp_configures_a_persistent_room_that_survives_a_restart() {
    if !python_imports(
        VENV_PYTHON,
        "slixmpp",
        "python3 -m venv target/slixmpp-venv && target/slixmpp-venv/bin/pip install slixmpp aiohttp",
    ) {
        return;
    }
    configure_restart_destroy(VENV_PYTHON);
}

// ----- hostile ---------------------------------------------------------------------------------

/// The error condition of the answer with id `id` among `elements`.
fn error_of(elements: &[Element], id: &str) -> Option<String> {
    elements
        .iter()
        .find(|e| e.attr("id") == Some(id) && e.attr("type") == Some("error"))?
        .get_child("error", "jabber:client")?
        .children()
        .find(|c| c.ns() == NS_STANZA_ERRORS && c.name() != "text")
        .map(|c| c.name().to_string())
}

/// An owner IQ setting the form `fields` (XML of `<field/>` elements), with id `id`.
fn submit(id: &str, fields: &str) -> String {
    format!(
        "<iq type='set' id='{id}' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#owner'>\
         <x xmlns='jabber:x:data' type='submit'>{fields}</x></query></iq>"
    )
}

/// The room name the owner's form shows now.
async fn room_name(raw: &mut Raw) -> Option<String> {
    let got = exchange(
        raw,
        &format!("<iq type='get' id='form' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#owner'/></iq>"),
    )
    .await;
    got.iter()
        .find(|e| e.attr("id") == Some("form"))?
        .get_child("query", "http://jabber.org/protocol/muc#owner")?
        .get_child("x", "jabber:x:data")?
        .children()
        .find(|f| f.attr("var") == Some("muc#roomconfig_roomname"))?
        .get_child("value", "jabber:x:data")
        .map(Element::text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_configuration_forms_too_big_are_refused_and_change_nothing() {
    let server = InProcessServer::start().await;
    server.add_user("alice", "alice-secret");
    let (port, ca) = (server.port(), server.ca_file());
    let mut alice = Raw::login(port, ca, "alice", "alice-secret", "phone").await;
    exchange(
        &mut alice,
        &format!(
            "<presence to='{ROOM}/Alice'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
        ),
    )
    .await;
    // A thousand fields: a stanza the server reads, a form the room refuses.
    let thousand: String = (0..1000)
        .map(|i| format!("<field var='x{i}'><value>1</value></field>"))
        .collect();
    let got = exchange(&mut alice, &submit("many", &thousand)).await;
    assert_eq!(error_of(&got, "many").as_deref(), Some("not-acceptable"));
    // A room name of 100 kB.
    let huge = format!(
        "<field var='muc#roomconfig_roomname'><value>{}</value></field>",
        "n".repeat(100_000)
    );
    let got = exchange(&mut alice, &submit("huge", &huge)).await;
    assert_eq!(error_of(&got, "huge").as_deref(), Some("not-acceptable"));
    assert_eq!(room_name(&mut alice).await.as_deref(), Some(""));
    // Ten thousand fields are more elements than one stanza may have: the stream ends with
    // policy-violation before the room sees anything.
    let ten_thousand: String = (0..10_000)
        .map(|i| format!("<field var='x{i}'><value>1</value></field>"))
        .collect();
    alice.send(submit("flood", &ten_thousand)).await;
    let answer = alice.read_to_close(WAIT).await;
    assert_eq!(
        answer
            .stream_error()
            .map(|(condition, _)| condition)
            .as_deref(),
        Some("policy-violation")
    );
    // The server goes on, and the room kept its configuration (it is gone with its owner's
    // session: it was temporary).
    let mut alice = Raw::login(port, ca, "alice", "alice-secret", "laptop").await;
    let got = exchange(
        &mut alice,
        &format!(
            "<presence to='{ROOM}/Alice'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
        ),
    )
    .await;
    assert!(
        got.iter().any(|e| e.name() == "presence"
            && e.attr("from") == Some(&format!("{ROOM}/Alice"))
            && e.attr("type").is_none()),
        "{got:?}"
    );
    assert_eq!(room_name(&mut alice).await.as_deref(), Some(""));
}

// ----- the service's flags -------------------------------------------------------------------

/// A join of `room` as `nick`.
fn join(room: &str, nick: &str) -> String {
    format!("<presence to='{room}/{nick}'><x xmlns='http://jabber.org/protocol/muc'/></presence>")
}

/// The status codes of the presences from `from` among `elements`.
fn codes_from(elements: &[Element], from: &str) -> Vec<String> {
    elements
        .iter()
        .filter(|e| e.name() == "presence" && e.attr("from") == Some(from))
        .filter_map(|p| p.get_child("x", "http://jabber.org/protocol/muc#user"))
        .flat_map(|x| x.children().filter(|c| c.name() == "status"))
        .filter_map(|s| s.attr("code").map(str::to_string))
        .collect()
}

/// The JIDs of the server's disco#items (its services).
async fn services(raw: &mut Raw) -> Vec<String> {
    let got = exchange(
        raw,
        "<iq type='get' id='services' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>",
    )
    .await;
    got.iter()
        .find(|e| e.attr("id") == Some("services"))
        .and_then(|iq| iq.get_child("query", "http://jabber.org/protocol/disco#items"))
        .map(|q| {
            q.children()
                .filter_map(|i| i.attr("jid").map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn muc_domain_renames_the_service_and_no_muc_turns_it_off() {
    let server = ServerProcess::start_with(&["--muc-domain", "rooms.localhost"]);
    server.add_user("alice", "alice-secret");
    let mut alice = Raw::login(
        server.port(),
        server.ca_file(),
        "alice",
        "alice-secret",
        "a",
    )
    .await;
    assert!(services(&mut alice)
        .await
        .contains(&"rooms.localhost".to_string()));
    let got = exchange(&mut alice, &join("lab@rooms.localhost", "Alice")).await;
    assert!(
        codes_from(&got, "lab@rooms.localhost/Alice").contains(&"201".to_string()),
        "{got:?}"
    );
    drop(server);

    let server = ServerProcess::start_with(&["--no-muc"]);
    server.add_user("alice", "alice-secret");
    let mut alice = Raw::login(
        server.port(),
        server.ca_file(),
        "alice",
        "alice-secret",
        "a",
    )
    .await;
    assert!(!services(&mut alice)
        .await
        .iter()
        .any(|s| s.starts_with("conference.")));
    let got = exchange(&mut alice, &join("lab@conference.localhost", "Alice")).await;
    assert!(
        codes_from(&got, "lab@conference.localhost/Alice").is_empty(),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|e| e.name() == "presence" && e.attr("type") == Some("error")),
        "{got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn muc_lock_new_rooms_keeps_others_out_until_the_owner_accepts_the_instant_room() {
    let server = ServerProcess::start_with(&["--muc-lock-new-rooms"]);
    server.add_user("alice", "alice-secret");
    server.add_user("bob", "bob-secret");
    let (port, ca) = (server.port(), server.ca_file());
    let mut alice = Raw::login(port, ca, "alice", "alice-secret", "a").await;
    let mut bob = Raw::login(port, ca, "bob", "bob-secret", "b").await;
    let got = exchange(&mut alice, &join(ROOM, "Alice")).await;
    assert!(codes_from(&got, &format!("{ROOM}/Alice")).contains(&"201".to_string()));
    // XEP-0045 §10.1.1: locked.
    let got = exchange(&mut bob, &join(ROOM, "Bob")).await;
    let error = got
        .iter()
        .find(|e| e.name() == "presence" && e.attr("type") == Some("error"))
        .unwrap_or_else(|| panic!("{got:?}"));
    assert!(
        error
            .get_child("error", "jabber:client")
            .is_some_and(|e| e.has_child("item-not-found", NS_STANZA_ERRORS)),
        "{error:?}"
    );
    // §10.1.2: the instant room.
    let got = exchange(&mut alice, &submit("instant", "")).await;
    assert!(
        got.iter()
            .any(|e| e.attr("id") == Some("instant") && e.attr("type") == Some("result")),
        "{got:?}"
    );
    let got = exchange(&mut bob, &join(ROOM, "Bob")).await;
    assert!(
        codes_from(&got, &format!("{ROOM}/Bob")).contains(&"110".to_string()),
        "{got:?}"
    );
}
