//! PEP (XEP-0163) on the bundled server with real clients, and its hostile cases.
//!
//! - slixmpp, Debian's 1.8.3 (`/usr/bin/python3`) and the current release from PyPI (the
//!   virtual environment at `target/slixmpp-venv`, made by `.ci/run`), running
//!   `tests/slixmpp/pep.py`: a nickname (XEP-0172) notified to a contact and not to a
//!   stranger, who may not read it either; an avatar (XEP-0084) notified and fetched; an OMEMO
//!   device list on the open model read by the stranger; the last nickname delivered at login.
//! - nbxmpp (Debian `python3-nbxmpp`, Gajim's library), running `tests/clients/nbxmpp_pep.py`:
//!   bookmarks (XEP-0402) stored with nbxmpp's own module, read back after a reconnect, and
//!   after a restart of the server.
//! - Hostile, with a raw client: an oversized item, a node flood, reading another account's
//!   whitelist node, publishing to another account's PEP, IQ results nobody asked for, and a
//!   client that never answers the server's caps query.
//!
//! Without an interpreter or its package the client tests skip, unless CI=true, where they fail.

mod support;

use std::process::Command;
use std::time::Duration;

use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;
use support::peers::{event, python_imports, run_event_script, DEBIAN_PYTHON, VENV_PYTHON};
use support::raw::{parse, Raw, NS_STANZA_ERRORS};
use support::server::{limits, InProcessServer, ServerProcess, XmppEndpoint};
use tokio_xmpp::minidom::Element;

const SLIXMPP_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/slixmpp/pep.py");
const NBXMPP_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/nbxmpp_pep.py");
/// How long one run of a script may take (each of its waits is 10 s at most).
const SCRIPT_DEADLINE: Duration = Duration::from_secs(100);
/// How long one answer of the server may take.
const WAIT: Duration = Duration::from_secs(10);

const NICK: &str = "http://jabber.org/protocol/nick";

/// A server process with alice, bob and carol (passwords `USER-secret`).
fn server_with_accounts(extra: &[&str]) -> ServerProcess {
    let server = ServerProcess::start_with(extra);
    for user in ["alice", "bob", "carol"] {
        server.add_user(user, &format!("{user}-secret"));
    }
    server
}

// ----- slixmpp ---------------------------------------------------------------------------------

/// Runs `pep.py` with `python` against a fresh server; returns its events.
fn run_slixmpp(python: &str) -> Vec<Value> {
    let server = server_with_accounts(&[]);
    let port = server.port.to_string();
    let ca = server.ca_file.to_string_lossy().into_owned();
    let (events, _) = run_event_script(
        Command::new(python)
            .arg(SLIXMPP_SCRIPT)
            .args(["--port", &port, "--ca", &ca])
            .args(["--alice-password", "alice-secret"])
            .args(["--bob-password", "bob-secret"])
            .args(["--carol-password", "carol-secret"]),
        &format!("{python} pep.py"),
        SCRIPT_DEADLINE,
        || server.log(),
    );
    events
}

/// The texts of PEP events (as pep.py reports them) from alice.
fn texts(events: &Value) -> Vec<&str> {
    events
        .as_array()
        .unwrap_or_else(|| panic!("not a list of events: {events}"))
        .iter()
        .inspect(|e| assert_eq!(e["from"], "alice@localhost", "{e}"))
        .filter_map(|e| e["text"].as_str())
        .collect()
}

/// What both slixmpp versions must show.
fn assert_pep(events: &[Value]) {
    // 1. The nickname reached the contact, not the stranger, who may not read it either.
    let nick = event(events, "nick");
    assert_eq!(texts(&nick["bob"]), ["Alice Liddell"], "{nick}");
    assert_eq!(nick["carol"], serde_json::json!([]), "{nick}");
    assert_eq!(nick["carol_reads"]["error"], "not-authorized", "{nick}");
    assert_eq!(
        nick["carol_reads"]["pubsub"], "presence-subscription-required",
        "{nick}"
    );
    assert_eq!(
        nick["bob_reads"]["items"][0]["text"], "Alice Liddell",
        "{nick}"
    );
    // 2. The avatar: metadata notified (pointing at the data's id), data fetched by id, and
    //    the data itself not pushed to a client that asked for metadata only (XEP-0084 §4.1).
    let avatar = event(events, "avatar");
    let metadata = &avatar["metadata"][0];
    assert_eq!(metadata["node"], "urn:xmpp:avatar:metadata", "{avatar}");
    assert_eq!(metadata["id"], avatar["id"], "{avatar}");
    assert_eq!(metadata["attrs"][0]["id"], avatar["id"], "{avatar}");
    assert_eq!(metadata["attrs"][0]["type"], "image/png", "{avatar}");
    assert_eq!(avatar["data_matches"], true, "{avatar}");
    assert_eq!(avatar["data_events"], serde_json::json!([]), "{avatar}");
    // 3. The device list, open to anyone.
    let devicelist = event(events, "devicelist");
    let items = &devicelist["carol_reads"]["items"];
    assert_eq!(items[0]["id"], "current", "{devicelist}");
    assert_eq!(items[0]["attrs"][0]["id"], "31415", "{devicelist}");
    // 4. The last nickname, sent at login without asking.
    let last = event(events, "last_item");
    assert_eq!(texts(&last["bob"]), ["Alice the Second"], "{last}");
}

#[test]
fn debian_slixmpp_publishes_and_receives_nicknames_avatars_and_device_lists() {
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
    assert_pep(&events);
}

#[test]
fn current_slixmpp_publishes_and_receives_nicknames_avatars_and_device_lists() {
    if !python_imports(
        VENV_PYTHON,
        "slixmpp",
        "python3 -m venv target/slixmpp-venv && target/slixmpp-venv/bin/pip install slixmpp aiohttp",
    ) {
        return;
    }
    assert_pep(&run_slixmpp(VENV_PYTHON));
}

// ----- nbxmpp --------------------------------------------------------------------------------

/// Runs `nbxmpp_pep.py ACTION` as alice against `server`; returns its events.
fn run_nbxmpp(server: &ServerProcess, action: &str) -> Vec<Value> {
    let (events, _) = run_event_script(
        Command::new(DEBIAN_PYTHON)
            .arg(NBXMPP_SCRIPT)
            .arg(action)
            .env("XMPP_PORT", server.port.to_string())
            .env("XMPP_USER", "alice")
            .env("XMPP_PASSWORD", "alice-secret")
            .env("XMPP_CA", &server.ca_file),
        &format!("nbxmpp_pep.py {action}"),
        SCRIPT_DEADLINE,
        || server.log(),
    );
    events
}

/// The rooms of the bookmarks an nbxmpp run read, sorted, with their names and autojoin.
fn bookmarks(events: &[Value]) -> Vec<(String, String, bool)> {
    let read = event(events, "bookmarks");
    let mut found: Vec<(String, String, bool)> = read["bookmarks"]
        .as_array()
        .unwrap_or_else(|| panic!("no bookmarks list: {read}"))
        .iter()
        .map(|b| {
            (
                b["jid"].as_str().unwrap_or_default().to_string(),
                b["name"].as_str().unwrap_or_default().to_string(),
                b["autojoin"].as_bool().unwrap_or_default(),
            )
        })
        .collect();
    found.sort();
    found
}

#[test]
fn nbxmpp_bookmarks_survive_a_reconnect_and_a_server_restart() {
    if !python_imports(
        DEBIAN_PYTHON,
        "nbxmpp",
        "install the Debian package python3-nbxmpp",
    ) {
        return;
    }
    let mut server = server_with_accounts(&[]);
    let stored = run_nbxmpp(&server, "store");
    let expected = vec![
        (
            "lobby@conference.localhost".to_string(),
            "Lobby".to_string(),
            true,
        ),
        (
            "ops@conference.localhost".to_string(),
            "Operations".to_string(),
            false,
        ),
    ];
    // The same session reads them back, then a new connection does.
    assert_eq!(bookmarks(&stored), expected, "{stored:?}");
    let again = run_nbxmpp(&server, "read");
    assert_eq!(bookmarks(&again), expected, "{again:?}");
    server.restart();
    let restarted = run_nbxmpp(&server, "read");
    assert_eq!(bookmarks(&restarted), expected, "{restarted:?}");
}

// ----- hostile ---------------------------------------------------------------------------------

/// A server in this process with alice and mallory, each logged in with a raw client.
async fn raw_pair(
    change: impl FnOnce(&mut mqtt2xmpp::server::limits::ServerLimits),
) -> (InProcessServer, Raw, Raw) {
    let server = InProcessServer::start_with(limits(change)).await;
    server.add_user("alice", "alice-secret");
    server.add_user("mallory", "mallory-secret");
    let alice = Raw::login(
        server.port(),
        server.ca_file(),
        "alice",
        "alice-secret",
        "phone",
    )
    .await;
    let mallory = Raw::login(
        server.port(),
        server.ca_file(),
        "mallory",
        "mallory-secret",
        "x",
    )
    .await;
    (server, alice, mallory)
}

/// Sends `xml` followed by a ping, and returns every stanza the server sent up to the pong:
/// the server answers in order, so whatever `xml` caused is among them.
async fn exchange(raw: &mut Raw, xml: &str) -> Vec<Element> {
    static SYNC: AtomicUsize = AtomicUsize::new(0);
    let sync = format!("sync-{}", SYNC.fetch_add(1, Ordering::Relaxed));
    assert!(
        raw.send(format!(
            "{xml}<iq type='get' id='{sync}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
        ))
        .await,
        "the connection is gone"
    );
    let mut text = raw.read_until(&sync, WAIT).await;
    text.push_str(&raw.read_until("</iq>", WAIT).await);
    let elements = parse(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert!(
        elements.iter().any(|e| e.attr("id") == Some(sync.as_str())),
        "no pong: {text}"
    );
    elements
}

/// The IQ with id `id` among `elements`.
fn iq_with<'a>(elements: &'a [Element], id: &str) -> &'a Element {
    elements
        .iter()
        .find(|e| e.name() == "iq" && e.attr("id") == Some(id))
        .unwrap_or_else(|| panic!("no answer to {id} in {elements:?}"))
}

/// The stanza error condition and the pubsub-specific one of an IQ error, `None` for a result.
fn error_of(iq: &Element) -> Option<(String, Option<String>)> {
    let error = iq.get_child("error", "jabber:client")?;
    let condition = error
        .children()
        .find(|c| c.ns() == NS_STANZA_ERRORS && c.name() != "text")
        .map(|c| c.name().to_string())
        .unwrap_or_default();
    let pubsub = error
        .children()
        .find(|c| c.ns() == "http://jabber.org/protocol/pubsub#errors")
        .map(|c| c.name().to_string());
    Some((condition, pubsub))
}

fn is_result(iq: &Element) -> bool {
    iq.attr("type") == Some("result")
}

fn publish(id: &str, node: &str, item: &str, payload: &str, options: &str) -> String {
    format!("<iq type='set' id='{id}'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='{node}'><item id='{item}'>{payload}</item></publish>{options}</pubsub></iq>")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_an_oversized_item_is_refused_and_the_session_goes_on() {
    let (_server, mut alice, _mallory) = raw_pair(|_| {}).await;
    // Under the stanza limit (256 KiB), over the item limit (128 KiB).
    let big = "A".repeat(140 * 1024);
    let got = exchange(
        &mut alice,
        &publish(
            "big",
            "urn:xmpp:avatar:data",
            "h",
            &format!("<data xmlns='urn:xmpp:avatar:data'>{big}</data>"),
            "",
        ),
    )
    .await;
    assert_eq!(
        error_of(iq_with(&got, "big")),
        Some(("not-acceptable".into(), Some("payload-too-big".into())))
    );
    // Nothing was created, and the session goes on.
    let got = exchange(
        &mut alice,
        "<iq type='get' id='i'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='urn:xmpp:avatar:data'/></pubsub></iq>",
    )
    .await;
    assert_eq!(
        error_of(iq_with(&got, "i")),
        Some(("item-not-found".into(), None))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_a_node_flood_stops_at_the_cap() {
    let (_server, mut mallory, _alice) = raw_pair(|l| l.pep.max_nodes = 20).await;
    let mut flood = String::new();
    for n in 0..30 {
        flood.push_str(&publish(
            &format!("f{n}"),
            &format!("urn:flood:{n}"),
            "1",
            "<x xmlns='urn:flood'/>",
            "",
        ));
    }
    let got = exchange(&mut mallory, &flood).await;
    let outcomes: Vec<Option<(String, Option<String>)>> = (0..30)
        .map(|n| error_of(iq_with(&got, &format!("f{n}"))))
        .collect();
    assert!(outcomes[..20].iter().all(Option::is_none), "{outcomes:?}");
    for outcome in &outcomes[20..] {
        assert_eq!(
            outcome,
            &Some(("policy-violation".into(), Some("max-nodes-exceeded".into())))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_another_accounts_whitelist_node_and_pep_are_closed() {
    let (_server, mut alice, mut mallory) = raw_pair(|_| {}).await;
    let options = "<publish-options><x xmlns='jabber:x:data' type='submit'><field var='pubsub#access_model'><value>whitelist</value></field><field var='pubsub#max_items'><value>max</value></field></x></publish-options>";
    let got = exchange(
        &mut alice,
        &publish(
            "b",
            "urn:xmpp:bookmarks:1",
            "secret@conference.localhost",
            "<conference xmlns='urn:xmpp:bookmarks:1'><password>hunter2</password></conference>",
            options,
        ),
    )
    .await;
    assert!(is_result(iq_with(&got, "b")), "{got:?}");
    // Reading it: closed-node (XEP-0060 §6.5.9.2 for a whitelist); nor through disco#items.
    let got = exchange(
        &mut mallory,
        "<iq type='get' to='alice@localhost' id='r'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='urn:xmpp:bookmarks:1'/></pubsub></iq>\
         <iq type='get' to='alice@localhost' id='d'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>",
    )
    .await;
    assert_eq!(
        error_of(iq_with(&got, "r")),
        Some(("not-allowed".into(), Some("closed-node".into())))
    );
    let items = iq_with(&got, "d");
    assert!(is_result(items), "{items:?}");
    assert!(!String::from(items).contains("bookmarks"), "{items:?}");
    assert!(!got.iter().any(|e| String::from(e).contains("hunter2")));
    // Publishing, retracting, configuring or deleting alice's nodes: forbidden.
    for (id, request) in [
        ("p", "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='http://jabber.org/protocol/nick'><item id='current'><nick xmlns='http://jabber.org/protocol/nick'>Mallory</nick></item></publish></pubsub>"),
        ("t", "<pubsub xmlns='http://jabber.org/protocol/pubsub'><retract node='urn:xmpp:bookmarks:1'><item id='secret@conference.localhost'/></retract></pubsub>"),
        ("c", "<pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><configure node='urn:xmpp:bookmarks:1'><x xmlns='jabber:x:data' type='submit'><field var='pubsub#access_model'><value>open</value></field></x></configure></pubsub>"),
        ("x", "<pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><delete node='urn:xmpp:bookmarks:1'/></pubsub>"),
    ] {
        let got = exchange(&mut mallory, &format!("<iq type='set' to='alice@localhost' id='{id}'>{request}</iq>")).await;
        assert_eq!(error_of(iq_with(&got, id)), Some(("forbidden".into(), None)), "{request}");
    }
    // alice's bookmark is still there, private; no nickname was made for her.
    let got = exchange(
        &mut alice,
        &format!("<iq type='get' id='mine'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='urn:xmpp:bookmarks:1'/></pubsub></iq>\
                  <iq type='get' id='nick'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='{NICK}'/></pubsub></iq>"),
    )
    .await;
    assert!(String::from(iq_with(&got, "mine")).contains("hunter2"));
    assert_eq!(
        error_of(iq_with(&got, "nick")),
        Some(("item-not-found".into(), None))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_iq_results_nobody_asked_for_and_a_caps_query_never_answered() {
    let (_server, mut alice, mut mallory) = raw_pair(|_| {}).await;
    // Results and errors to the server, to alice's bare JID, and a forged caps answer: the
    // server answers none of them (RFC 6120 §8.3.1) and keeps serving.
    let got = exchange(
        &mut mallory,
        "<iq type='result' to='localhost' id='pep-caps-0000000000000000'><query xmlns='http://jabber.org/protocol/disco#info'><feature var='http://jabber.org/protocol/nick+notify'/></query></iq>\
         <iq type='result' to='localhost' id='nobody-asked'/>\
         <iq type='error' to='localhost' id='e1'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>\
         <iq type='result' to='alice@localhost' id='r2'/>",
    )
    .await;
    assert_eq!(got.len(), 1, "only the pong: {got:?}");
    // mallory announces caps and never answers the server's query (from the server's JID, for
    // NODE#VER, XEP-0115 §6.2); alice publishes; nothing waits on mallory.
    let got = exchange(
        &mut mallory,
        "<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='urn:mallory' ver='AAAAAAAAAAAAAAAAAAAAAAAAAAA='/></presence>",
    )
    .await;
    let query = got
        .iter()
        .find(|e| e.name() == "iq" && e.attr("type") == Some("get"))
        .unwrap_or_else(|| panic!("no caps query: {got:?}"));
    assert_eq!(query.attr("from"), Some("localhost"));
    let disco = query
        .get_child("query", "http://jabber.org/protocol/disco#info")
        .expect("a disco#info query");
    assert_eq!(
        disco.attr("node"),
        Some("urn:mallory#AAAAAAAAAAAAAAAAAAAAAAAAAAA=")
    );
    let got = exchange(
        &mut alice,
        &publish(
            "n",
            NICK,
            "current",
            "<nick xmlns='http://jabber.org/protocol/nick'>Alice</nick>",
            "",
        ),
    )
    .await;
    assert!(is_result(iq_with(&got, "n")), "{got:?}");
    let got = exchange(&mut mallory, "").await;
    assert_eq!(got.len(), 1, "only the pong: {got:?}");
}
