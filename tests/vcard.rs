//! vCards (XEP-0054) and vCard avatars (XEP-0153) on the bundled server, with real clients and
//! with hostile raw streams.
//!
//! - slixmpp, Debian's 1.8.3 (`/usr/bin/python3`) and the current release from PyPI (the
//!   virtual environment at `target/slixmpp-venv`, made by `.ci/run`), with its `xep_0054` and
//!   `xep_0153` plugins (`tests/slixmpp/vcard.py`): alice stores a vCard and sets an avatar
//!   photo; her contact bob sees the photo's hash in her presence and reads the vCard, photo
//!   included; after a restart of the server, alice logs in with a client that says nothing
//!   about photos, and bob still sees the hash (the server puts it in) and reads the same
//!   vCard, and reads the same picture from her PEP avatar (XEP-0398 §3.2). And the other
//!   way: alice publishes her avatar over PEP only (XEP-0084), and bob sees its hash in her
//!   presence and reads it from her vCard (XEP-0398 §3.1). Without the interpreter or the package the tests skip, unless CI=true.
//! - Hostile (`hostile_…`): an oversized vCard, a set of someone else's vCard, a vCard outside
//!   `vcard-temp`, and IQ results and errors, none of which may change a stored vCard or get
//!   an answer they must not get.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use sha1::{Digest, Sha1};
use support::peers::{python_imports, run_event_script, DEBIAN_PYTHON, VENV_PYTHON};
use support::raw::Raw;
use support::server::{limits, InProcessServer, XmppEndpoint};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/slixmpp/vcard.py");
/// How long one run of the script may take (it gives up after 60 s by itself).
const SCRIPT_DEADLINE: Duration = Duration::from_secs(90);
/// How long one answer may take.
const WAIT: Duration = Duration::from_secs(15);
const ALICE_PASSWORD: &str = "alice-secret";
const BOB_PASSWORD: &str = "bob-secret";

/// A server with the accounts alice and bob (and mallory), with the default limits changed by
/// `change`.
async fn server_with(
    change: impl FnOnce(&mut mqtt2xmpp::server::limits::ServerLimits),
) -> InProcessServer {
    let server = InProcessServer::start_with(limits(change)).await;
    server.add_user("alice", ALICE_PASSWORD);
    server.add_user("bob", BOB_PASSWORD);
    server.add_user("mallory", "mallory-secret");
    server
}

/// A PNG-looking avatar of about 20 KB (a phone's typical upload), the same every run.
fn avatar() -> Vec<u8> {
    let mut image = b"\x89PNG\r\n\x1a\n".to_vec();
    image.extend((0..20_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    image
}

fn sha1_hex(bytes: &[u8]) -> String {
    Sha1::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ----- slixmpp -----------------------------------------------------------------------------------

/// Runs `vcard.py COMMAND` with `python` against `server`; returns its events.
async fn run_script(
    python: &'static str,
    server: &InProcessServer,
    command: &'static str,
    avatar: &Path,
) -> Vec<Value> {
    let port = server.port().to_string();
    let ca = server.ca_file().to_string_lossy().into_owned();
    let avatar = avatar.to_string_lossy().into_owned();
    tokio::task::spawn_blocking(move || {
        let (events, _stdout) = run_event_script(
            Command::new(python)
                .arg(SCRIPT)
                .arg(command)
                .args(["--port", &port, "--ca", &ca, "--avatar", &avatar])
                .args(["--alice-password", ALICE_PASSWORD])
                .args(["--bob-password", BOB_PASSWORD]),
            &format!("{python} vcard.py {command}"),
            SCRIPT_DEADLINE,
            String::new,
        );
        events
    })
    .await
    .expect("the script's runner does not panic")
}

/// The one event named `event` with `key` = `value`.
fn event<'a>(events: &'a [Value], event: &str, key: &str, value: &str) -> &'a Value {
    let found: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == event && e[key] == value)
        .collect();
    assert_eq!(found.len(), 1, "one {event} with {key}={value}: {events:?}");
    found[0]
}

/// alice's vCard as `reader` read it: her name, and the avatar, byte for byte.
fn assert_alices_vcard(events: &[Value], reader: &str, hash: &str, size: usize) {
    let card = event(events, "vcard", "reader", reader);
    assert_eq!(card["owner"], "alice@localhost", "{card}");
    assert_eq!(card["fn"], "Alice Liddell", "{card}");
    assert_eq!(card["photo_type"], "image/png", "{card}");
    assert_eq!(card["photo_bytes"], size, "{card}");
    assert_eq!(card["photo_sha1"], hash, "{card}");
}

/// bob saw alice's presence with the avatar's hash.
fn assert_bob_saw(events: &[Value], hash: &str) {
    let seen = event(events, "seen", "who", "bob");
    assert!(
        seen["photos"]
            .as_array()
            .is_some_and(|photos| photos.iter().any(|p| p == hash)),
        "no presence of alice with {hash}: {seen}"
    );
}

/// The whole story for one slixmpp: set, see, read, restart, see and read again.
async fn slixmpp_avatar_story(python: &'static str) -> String {
    let mut server = server_with(|_| {}).await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let image = avatar();
    let path = dir.path().join("avatar.png");
    std::fs::write(&path, &image).expect("write the avatar");
    let hash = sha1_hex(&image);

    let events = run_script(python, &server, "set", &path).await;
    assert_bob_saw(&events, &hash);
    assert_alices_vcard(&events, "bob@localhost", &hash, image.len());
    assert_alices_vcard(&events, "alice@localhost", &hash, image.len());
    // XEP-0398 §3.2: the server published the vCard photo as alice's PEP avatar.
    let pep = event(&events, "pep_avatar", "reader", "bob@localhost");
    assert_eq!(
        (&pep["photo_sha1"], &pep["photo_bytes"]),
        (&Value::from(hash.as_str()), &Value::from(image.len())),
        "{pep}"
    );

    // The vCard and its hash are on disk: a restarted server still has both.
    server.restart().await;
    let events = run_script(python, &server, "read", &path).await;
    assert_bob_saw(&events, &hash);
    assert_alices_vcard(&events, "bob@localhost", &hash, image.len());
    events
        .last()
        .and_then(|done| done["slixmpp"].as_str())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debian_slixmpp_sets_an_avatar_a_contact_sees_and_reads_even_after_a_restart() {
    if !python_imports(
        DEBIAN_PYTHON,
        "slixmpp",
        "install the Debian package python3-slixmpp",
    ) {
        return;
    }
    let version = slixmpp_avatar_story(DEBIAN_PYTHON).await;
    assert!(version.starts_with("1.8"), "Debian's slixmpp: {version}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn current_slixmpp_sets_an_avatar_a_contact_sees_and_reads_even_after_a_restart() {
    if !python_imports(
        VENV_PYTHON,
        "slixmpp",
        "make target/slixmpp-venv and pip install slixmpp into it (see .ci/run)",
    ) {
        return;
    }
    let version = slixmpp_avatar_story(VENV_PYTHON).await;
    assert!(!version.starts_with("1.8"), "PyPI's slixmpp: {version}");
}

/// XEP-0398 §3.1 for one slixmpp: alice sets her avatar over PEP only; bob sees its hash in
/// her presence and reads it from her vCard.
async fn slixmpp_pep_avatar_becomes_the_vcard_photo(python: &'static str) {
    let server = server_with(|_| {}).await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let image = avatar();
    let path = dir.path().join("avatar.png");
    std::fs::write(&path, &image).expect("write the avatar");
    let hash = sha1_hex(&image);
    let events = run_script(python, &server, "pep", &path).await;
    assert_bob_saw(&events, &hash);
    let card = event(&events, "vcard", "reader", "bob@localhost");
    assert_eq!(card["photo_type"], "image/png", "{card}");
    assert_eq!(card["photo_bytes"], image.len(), "{card}");
    assert_eq!(card["photo_sha1"], hash.as_str(), "{card}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debian_slixmpp_sets_a_pep_avatar_that_a_contact_reads_from_the_vcard() {
    if !python_imports(
        DEBIAN_PYTHON,
        "slixmpp",
        "install the Debian package python3-slixmpp",
    ) {
        return;
    }
    slixmpp_pep_avatar_becomes_the_vcard_photo(DEBIAN_PYTHON).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn current_slixmpp_sets_a_pep_avatar_that_a_contact_reads_from_the_vcard() {
    if !python_imports(
        VENV_PYTHON,
        "slixmpp",
        "make target/slixmpp-venv and pip install slixmpp into it (see .ci/run)",
    ) {
        return;
    }
    slixmpp_pep_avatar_becomes_the_vcard_photo(VENV_PYTHON).await;
}

// ----- hostile -----------------------------------------------------------------------------------

async fn login(server: &InProcessServer, user: &str, password: &str) -> Raw {
    Raw::login(server.port(), server.ca_file(), user, password, "raw").await
}

/// Sends `iq` and returns the server's answer, up to the end of the IQ with id `id`.
async fn ask(raw: &mut Raw, id: &str, iq: &str) -> String {
    raw.send(iq).await;
    raw.read_until(&format!("id='{id}'"), WAIT).await + &raw.read_until("</iq>", WAIT).await
}

/// `user`'s vCard as `raw` reads it.
async fn read_vcard(raw: &mut Raw, user: &str) -> String {
    ask(
        raw,
        "read",
        &format!("<iq to='{user}@localhost' type='get' id='read'><vCard xmlns='vcard-temp'/></iq>"),
    )
    .await
}

#[tokio::test]
async fn hostile_an_oversized_vcard_is_not_acceptable_and_the_stored_one_stays() {
    // The default limits: a vCard over 128 KiB but well within the 256 KiB stanza limit.
    let server = server_with(|_| {}).await;
    let mut alice = login(&server, "alice", ALICE_PASSWORD).await;
    let small = ask(
        &mut alice,
        "small",
        "<iq type='set' id='small'><vCard xmlns='vcard-temp'><FN>Alice</FN></vCard></iq>",
    )
    .await;
    assert!(small.contains("type='result'"), "{small}");
    let big = format!(
        "<iq type='set' id='big'><vCard xmlns='vcard-temp'><FN>Huge</FN><PHOTO><TYPE>image/png</TYPE>\
         <BINVAL>{}</BINVAL></PHOTO></vCard></iq>",
        "QUFB".repeat(150 * 1024 / 4)
    );
    let refused = ask(&mut alice, "big", &big).await;
    assert!(
        refused.contains("type='error'") && refused.contains("<not-acceptable"),
        "{refused}"
    );
    // The session goes on, and the stored vCard is the small one.
    let card = read_vcard(&mut alice, "alice").await;
    assert!(
        card.contains("<FN>Alice</FN>") && !card.contains("Huge"),
        "{card}"
    );

    // --max-vcard-bytes, lowered: a vCard of a few KiB is already too big.
    let server = server_with(|limits| limits.max_vcard_bytes = 1024).await;
    let mut alice = login(&server, "alice", ALICE_PASSWORD).await;
    let set = format!(
        "<iq type='set' id='s'><vCard xmlns='vcard-temp'><FN>{}</FN></vCard></iq>",
        "A".repeat(2048)
    );
    let refused = ask(&mut alice, "s", &set).await;
    assert!(refused.contains("<not-acceptable"), "{refused}");
}

#[tokio::test]
async fn hostile_a_vcard_set_for_someone_else_is_forbidden() {
    let server = server_with(|_| {}).await;
    let mut bob = login(&server, "bob", BOB_PASSWORD).await;
    let mut mallory = login(&server, "mallory", "mallory-secret").await;
    ask(
        &mut bob,
        "mine",
        "<iq type='set' id='mine'><vCard xmlns='vcard-temp'><FN>Bob</FN></vCard></iq>",
    )
    .await;
    for to in ["bob@localhost", "localhost"] {
        let refused = ask(
            &mut mallory,
            "forge",
            &format!(
                "<iq to='{to}' type='set' id='forge'><vCard xmlns='vcard-temp'><FN>Mallory was here</FN></vCard></iq>"
            ),
        )
        .await;
        assert!(
            refused.contains("type='error'") && refused.contains("<forbidden"),
            "{to}: {refused}"
        );
    }
    let card = read_vcard(&mut mallory, "bob").await;
    assert!(
        card.contains("<FN>Bob</FN>") && !card.contains("Mallory"),
        "{card}"
    );
}

#[tokio::test]
async fn hostile_a_vcard_outside_vcard_temp_is_refused_and_stores_nothing() {
    let server = server_with(|_| {}).await;
    let mut alice = login(&server, "alice", ALICE_PASSWORD).await;
    for (id, payload) in [
        (
            "v4",
            "<vCard xmlns='urn:ietf:params:xml:ns:vcard-4.0'><FN>A</FN></vCard>",
        ),
        ("case", "<VCARD xmlns='vcard-temp'><FN>A</FN></VCARD>"),
        ("bare", "<vCard><FN>A</FN></vCard>"),
    ] {
        let refused = ask(
            &mut alice,
            id,
            &format!("<iq type='set' id='{id}'>{payload}</iq>"),
        )
        .await;
        assert!(
            refused.contains("type='error'") && refused.contains("<service-unavailable"),
            "{id}: {refused}"
        );
    }
    let refused = ask(
        &mut alice,
        "b64",
        "<iq type='set' id='b64'><vCard xmlns='vcard-temp'><PHOTO><BINVAL>%%%</BINVAL></PHOTO></vCard></iq>",
    )
    .await;
    assert!(refused.contains("<bad-request"), "{refused}");
    // Nothing was stored: alice has the empty vCard.
    let card = read_vcard(&mut alice, "alice").await;
    assert!(
        card.contains("<vCard xmlns='vcard-temp'/>")
            || card.contains("<vCard xmlns='vcard-temp'></vCard>"),
        "{card}"
    );
}

#[tokio::test]
async fn hostile_vcard_results_and_errors_are_never_answered() {
    let server = server_with(|_| {}).await;
    let mut alice = login(&server, "alice", ALICE_PASSWORD).await;
    for to in [
        "",
        " to='bob@localhost'",
        " to='localhost'",
        " to='nobody@localhost'",
    ] {
        alice
            .send(format!(
                "<iq{to} type='result' id='r'><vCard xmlns='vcard-temp'><FN>x</FN></vCard></iq>\
                 <iq{to} type='error' id='e'><vCard xmlns='vcard-temp'/><error type='cancel'>\
                 <item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
            ))
            .await;
    }
    // The server answers in order: everything before the pong is what those caused.
    alice
        .send("<iq type='get' id='barrier' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let before_pong = alice.read_until("id='barrier'", WAIT).await;
    assert_eq!(before_pong.matches("<iq").count(), 1, "{before_pong}");
    assert!(before_pong.ends_with("id='barrier'"), "{before_pong}");
    // And nothing was stored from the result.
    let card = read_vcard(&mut alice, "alice").await;
    assert!(!card.contains("<FN>"), "{card}");
}
