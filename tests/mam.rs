//! The message archive (XEP-0313) of the bundled server, end to end.
//!
//! - slixmpp, Debian's 1.8.3 (`/usr/bin/python3`) and the current release from PyPI (the
//!   virtual environment at `target/slixmpp-venv`, made by `.ci/run`), with its MAM, RSM and
//!   stanza-id plugins (`tests/slixmpp/mam.py`): alice chats with the bot (the bridge, against
//!   the embedded MQTT broker), the server restarts, and a device that was not there reads and
//!   pages the whole conversation, the part before the restart included; a second device sees
//!   the same history, with the same ids. Without the interpreter or the package the tests
//!   skip, unless CI=true, where they fail.
//! - Hostile clients, written byte by byte (`support::raw`): another account's archive, a huge
//!   page, malformed forms and dates, an unknown id, IQ results and errors, a forged
//!   `<stanza-id/>`.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::mqtt::publish;
use support::peers::{python_imports, run_event_script, DEBIAN_PYTHON, VENV_PYTHON};
use support::raw::Raw;
use support::server::{limits, InProcessServer, XmppEndpoint};
use support::world::{Kind, World, ALICE, BOT};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/slixmpp/mam.py");
/// How long one answer may take.
const WAIT: Duration = Duration::from_secs(15);

// ----- slixmpp after a chat with the bot -----------------------------------------------------------

/// What one run of `mam.py` reported.
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

    /// The archived messages of an event, as (body, from).
    fn messages(&self, name: &str) -> Vec<(String, String)> {
        self.event(name)["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| {
                (
                    m["body"].as_str().unwrap_or_default().to_string(),
                    m["from"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// The archive ids of an event.
    fn ids(&self, name: &str) -> Vec<String> {
        self.event(name)["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| m["id"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

/// Runs `mam.py` with `python` as alice's device `resource`, asking the bot `ask` first.
async fn read_archive(
    python: &'static str,
    world: &World,
    resource: &str,
    ask: Option<&str>,
) -> Report {
    let mut command = Command::new(python);
    command.args([
        SCRIPT,
        "--port",
        &world.xmpp.port().to_string(),
        "--ca",
        &world.xmpp.ca_file().to_string_lossy(),
        "--jid",
        ALICE,
        "--password",
        "alice-secret",
        "--resource",
        resource,
        "--peer",
        BOT,
        "--page",
        "2",
    ]);
    if let Some(ask) = ask {
        command.args(["--ask", ask]);
    }
    let (events, _) = tokio::task::spawn_blocking(move || {
        run_event_script(&mut command, "mam.py", Duration::from_secs(60), String::new)
    })
    .await
    .expect("the script's thread");
    Report { events }
}

/// alice chats with the bot, the server restarts, alice chats again from a new device with
/// `python`'s slixmpp, and two devices read the archive.
async fn the_archive_of_a_chat_with_the_bot_survives_a_restart_and_pages(python: &'static str) {
    let Some(mut world) = World::start(Kind::Bundled).await else {
        return;
    };
    let bot = world.start_bot(&[]).await;
    {
        let mut alice = world.alice().await;
        let first = alice.ask(BOT, "temperature?").await;
        assert!(first.starts_with("No reading"), "{first}");
        publish(world.mqtt.port(), "sensors/temperature", b"21.5", false).await;
        alice
            .ask_until(BOT, |r| r.starts_with("21.5 °C"), Duration::from_secs(10))
            .await;
    }
    world.xmpp.stop().await;
    world.xmpp.restart().await;
    bot.wait_online(2, Duration::from_secs(30)).await;

    let phone = read_archive(python, &world, "phone", Some("and now?")).await;
    let reply = phone.event("reply");
    assert!(
        reply["body"]
            .as_str()
            .is_some_and(|b| b.starts_with("21.5 °C")),
        "{reply}"
    );
    // The live reply carries its id in alice's archive (XEP-0359).
    assert_eq!(reply["by"], ALICE, "{reply}");
    let reply_id = reply["stanza_id"].as_str().unwrap_or_default().to_string();
    assert!(!reply_id.is_empty(), "{reply}");

    let archive = phone.messages("archive");
    let ids = phone.ids("archive");
    // The whole conversation, in order, paged two at a time: from before the restart (the
    // first question and the bot's first answer) to the reply just received.
    assert!(archive.len() >= 6, "{archive:?}");
    assert_eq!(archive[0], ("temperature?".to_string(), ALICE.to_string()));
    assert!(archive[1].0.starts_with("No reading"), "{archive:?}");
    assert_eq!(archive[1].1, BOT);
    let last = archive.last().expect("messages");
    assert!(
        last.0.starts_with("21.5 °C") && last.1 == BOT,
        "{archive:?}"
    );
    assert_eq!(archive[archive.len() - 2].0, "and now?");
    assert_eq!(ids.last(), Some(&reply_id), "{:?}", phone.events);
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "{ids:?}");
    // Every message is one with the bot.
    assert_eq!(phone.messages("with_peer"), archive);
    // The last page, read backward from an empty <before/> (slixmpp yields it newest first).
    let mut last_page = phone.messages("last_page");
    last_page.reverse();
    assert_eq!(last_page, archive[archive.len() - 2..]);

    // Another device sees the same history.
    let tablet = read_archive(python, &world, "tablet", None).await;
    assert_eq!(tablet.messages("archive"), archive);
    assert_eq!(tablet.ids("archive"), ids);
}

/// Whether `python` can import slixmpp; if not, panics under CI=true and otherwise skips.
fn slixmpp_at(python: &str, install: &str) -> bool {
    python_imports(python, "slixmpp", install)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debian_slixmpp_reads_and_pages_the_archive_of_a_chat_with_the_bot() {
    if !slixmpp_at(DEBIAN_PYTHON, "install the Debian package python3-slixmpp") {
        return;
    }
    the_archive_of_a_chat_with_the_bot_survives_a_restart_and_pages(DEBIAN_PYTHON).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn current_slixmpp_reads_and_pages_the_archive_of_a_chat_with_the_bot() {
    if !slixmpp_at(
        VENV_PYTHON,
        "python3 -m venv target/slixmpp-venv && target/slixmpp-venv/bin/pip install slixmpp aiohttp",
    ) {
        return;
    }
    the_archive_of_a_chat_with_the_bot_survives_a_restart_and_pages(VENV_PYTHON).await;
}

// ----- hostile clients -------------------------------------------------------------------------------

/// A server with alice and bob, with `count` messages from alice to bob in both archives.
async fn server_with_chat(
    count: usize,
    change: impl FnOnce(&mut mqtt2xmpp::server::limits::ServerLimits),
) -> (InProcessServer, Raw, Raw) {
    let server = InProcessServer::start_with(limits(change)).await;
    server.add_user("alice", "alice-secret");
    server.add_user("bob", "bob-secret");
    let mut alice = Raw::login(
        server.port(),
        server.ca_file(),
        "alice",
        "alice-secret",
        "a",
    )
    .await;
    let mut bob = Raw::login(server.port(), server.ca_file(), "bob", "bob-secret", "b").await;
    bob.send("<presence/>").await;
    bob.read_until("</presence>", WAIT).await;
    for n in 0..count {
        alice
            .send(format!(
                "<message to='bob@localhost' type='chat'><body>m{n}</body></message>"
            ))
            .await;
    }
    if count > 0 {
        let last = format!("m{}</body>", count - 1);
        let got = bob.read_until(&last, WAIT).await;
        assert!(got.contains(&last), "{got}");
    }
    (server, alice, bob)
}

/// Sends a MAM query with `inner` and returns everything up to the end of its IQ answer.
async fn query(raw: &mut Raw, to: &str, id: &str, inner: &str) -> String {
    raw.send(format!(
        "<iq type='set' id='{id}'{to}><query xmlns='urn:xmpp:mam:2' queryid='{id}'>{inner}</query></iq>"
    ))
    .await;
    let text = raw.read_until(&format!("id='{id}'"), WAIT).await;
    let rest = raw.read_until("</iq>", WAIT).await;
    text + &rest
}

#[tokio::test]
async fn hostile_a_query_for_another_accounts_archive_is_refused() {
    let (_server, mut alice, mut bob) = server_with_chat(1, |_| {}).await;
    let answer = query(&mut alice, " to='bob@localhost'", "spy", "").await;
    assert!(answer.contains("service-unavailable"), "{answer}");
    assert!(!answer.contains("<result"), "{answer}");
    // Bob's own query works.
    let answer = query(&mut bob, "", "own", "").await;
    assert!(answer.contains("m0"), "{answer}");
    assert!(answer.contains("<fin"), "{answer}");
}

#[tokio::test]
async fn hostile_a_huge_page_size_is_served_at_the_cap() {
    let (_server, _alice, mut bob) = server_with_chat(12, |l| l.archive.max_page = 5).await;
    let answer = query(
        &mut bob,
        "",
        "big",
        "<set xmlns='http://jabber.org/protocol/rsm'><max>1000000</max></set>",
    )
    .await;
    assert_eq!(answer.matches("<result").count(), 5, "{answer}");
    assert!(!answer.contains("complete='true'"), "{answer}");
    assert!(answer.contains("<count>12</count>"), "{answer}");
}

#[tokio::test]
async fn hostile_malformed_forms_dates_and_unknown_ids_get_errors() {
    let (_server, _alice, mut bob) = server_with_chat(1, |_| {}).await;
    let form = |fields: &str| {
        format!("<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>{fields}</x>")
    };
    let cases = [
        (form("<field var='start'><value>last tuesday</value></field>"), "bad-request"),
        (form("<field var='end'><value>2024-02-30T25:61:00Z</value></field>"), "bad-request"),
        (form("<field var='with'><value>a@b@c</value></field>"), "bad-request"),
        ("<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>urn:example</value></field></x>".to_string(), "bad-request"),
        ("<set xmlns='http://jabber.org/protocol/rsm'><after>0000000000000001</after></set>".to_string(), "item-not-found"),
        (form("<field var='before-id'><value>nonsense</value></field>"), "item-not-found"),
    ];
    for (n, (inner, condition)) in cases.iter().enumerate() {
        let answer = query(&mut bob, "", &format!("bad{n}"), inner).await;
        assert!(answer.contains(condition), "{inner}: {answer}");
        assert!(!answer.contains("<result"), "{inner}: {answer}");
    }
    // The session is still fine.
    let answer = query(&mut bob, "", "fine", "").await;
    assert!(answer.contains("m0"), "{answer}");
}

#[tokio::test]
async fn hostile_mam_results_and_errors_are_never_answered() {
    let (_server, mut alice, mut bob) = server_with_chat(0, |_| {}).await;
    for stanza in [
        "<iq type='result' id='r1'><fin xmlns='urn:xmpp:mam:2'/></iq>",
        "<iq type='result' id='r2' to='bob@localhost'><query xmlns='urn:xmpp:mam:2'/></iq>",
        "<iq type='error' id='r3'><query xmlns='urn:xmpp:mam:2'/><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
    ] {
        alice.send(stanza).await;
    }
    // A ping answered after them means they were handled, and nothing came back for them.
    let answer = alice.ping("after").await;
    assert!(answer.contains("id='after'"), "{answer}");
    assert!(!answer.contains("id='r"), "{answer}");
    let answer = bob.ping("bob").await;
    assert!(!answer.contains("id='r"), "{answer}");
}

#[tokio::test]
async fn hostile_a_forged_stanza_id_by_this_server_is_stripped() {
    let (_server, mut alice, mut bob) = server_with_chat(0, |_| {}).await;
    alice
        .send(
            "<message to='bob@localhost' type='chat'><body>believe me</body>\
             <stanza-id xmlns='urn:xmpp:sid:0' by='bob@localhost' id='forged'/></message>",
        )
        .await;
    let got = bob.read_until("</message>", WAIT).await;
    assert!(got.contains("believe me"), "{got}");
    assert!(!got.contains("forged"), "{got}");
    assert!(got.contains("by='bob@localhost'"), "{got}");
    // The archive holds the message under the server's id, not the forged one.
    let answer = query(&mut bob, "", "q", "").await;
    assert!(answer.contains("believe me"), "{answer}");
    assert!(!answer.contains("forged"), "{answer}");
}
