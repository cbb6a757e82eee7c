//! XEP-0323 sensor-data read-outs from the bot, end to end: the bridge against the embedded MQTT
//! broker and the bundled XMPP server, all in this process, and against mosquitto and Prosody.
//!
//! - slixmpp, Debian's 1.8.3 (`/usr/bin/python3`) and the current release from PyPI (the
//!   virtual environment at `target/slixmpp-venv`, made by `.ci/run`), with raw stanzas
//!   (`tests/slixmpp/sensordata.py`), on the bundled server and on Prosody: a momentary and a
//!   historical read-out give the values the text commands `get` and `stats` give, the bot
//!   announces the feature in disco#info, and a contact not on the allow list gets
//!   `forbidden`. Without the interpreter, the package, Prosody or mosquitto the tests skip,
//!   unless CI=true, where they fail.
//! - Hostile clients (tokio-xmpp, stanzas written by hand; nothing but the crate): a read-out
//!   of every topic of a 10 000-topic building comes in bounded messages and ends with a
//!   `<failure/>` saying it was truncated; malformed requests get defined errors and the bot
//!   keeps answering.

#![cfg(feature = "embedded-broker")]

mod support;

use std::process::Command;
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::chat::{body, ChatClient};
use support::mqtt::publish_many;
use support::peers::{python_imports, run_event_script, DEBIAN_PYTHON, VENV_PYTHON};
use support::world::{Kind, World, ALICE, BOT};
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::Message;
use tokio_xmpp::Stanza;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/slixmpp/sensordata.py");
const NS: &str = "urn:xmpp:iot:sensordata";
/// How long a condition that should hold soon may take to hold.
const DEADLINE: Duration = Duration::from_secs(20);

/// The sensors: a plain number, and the vibration of every room of a building (JSON).
const SENSORS: [&str; 4] = [
    "--sensor",
    "name=temp,topic=sensors/temperature,unit=°C",
    "--sensor",
    "name=vib,topic=EDIFICIO_1/+/+/+/VIBR,json_pointer=/value,unit=mm/s,precision=2",
];

/// Starts the bot with the sensors, alice allowed, a rate limit tests cannot reach, and
/// `extra`.
async fn start_bot(world: &World, extra: &[&str]) -> support::bridge::InProcessBridge {
    let mut args: Vec<&str> = SENSORS.to_vec();
    args.extend([
        "--allow",
        ALICE,
        "--replies-per-minute",
        "100000",
        "--reply-burst",
        "100000",
    ]);
    args.extend(extra);
    world.start_bot(&args).await
}

/// `text` in a chat to the bot until the reply satisfies `accept`: the bot reads MQTT in
/// order, so once it shows the last reading published, it has every earlier one.
async fn ask_until(alice: &mut ChatClient, text: &str, accept: impl Fn(&str) -> bool) -> String {
    let end = Instant::now() + DEADLINE;
    loop {
        let reply = alice.ask(BOT, text).await;
        if accept(&reply) {
            return reply;
        }
        assert!(Instant::now() < end, "{text}: still {reply:?}");
        // Polling pace, so the bridge is not flooded with questions.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ----- slixmpp: read-outs compared with the text commands -------------------------------------

/// Runs `sensordata.py` as `user` with `python`, asking `asks` in chat and sending `reqs`.
async fn run_script(
    python: &'static str,
    world: &World,
    user: &str,
    asks: &[&str],
    reqs: &[&str],
) -> Vec<Value> {
    let mut command = Command::new(python);
    command.args([
        SCRIPT,
        "--port",
        &world.xmpp.port().to_string(),
        "--ca",
        &world.xmpp.ca_file().to_string_lossy(),
        "--jid",
        &format!("{user}@localhost"),
        "--password",
        &format!("{user}-secret"),
        "--peer",
        BOT,
    ]);
    for ask in asks {
        command.args(["--ask", ask]);
    }
    for req in reqs {
        command.args(["--req", req]);
    }
    let (events, _) = tokio::task::spawn_blocking(move || {
        run_event_script(
            &mut command,
            "sensordata.py",
            Duration::from_secs(90),
            String::new,
        )
    })
    .await
    .expect("the script's thread");
    events
}

fn events<'a>(all: &'a [Value], name: &str) -> Vec<&'a Value> {
    all.iter().filter(|e| e["event"] == name).collect()
}

/// `(node, value, unit, momentary, historical)` of every value of a read-out event.
fn values(readout: &Value) -> Vec<(String, String, String, bool, bool)> {
    let mut out = Vec::new();
    for message in readout["messages"].as_array().expect("messages") {
        for node in message["nodes"].as_array().expect("nodes") {
            for stamp in node["timestamps"].as_array().expect("timestamps") {
                for n in stamp["numeric"].as_array().expect("numeric") {
                    out.push((
                        node["id"].as_str().unwrap_or_default().to_string(),
                        n["value"].as_str().unwrap_or_default().to_string(),
                        n["unit"].as_str().unwrap_or_default().to_string(),
                        n["momentary"] == true,
                        n["historical"] == true,
                    ));
                }
            }
        }
    }
    out
}

async fn momentary_and_historical_read_outs_match_get_and_stats(python: &'static str, kind: Kind) {
    let Some(world) = World::start(kind).await else {
        return;
    };
    world.xmpp.register("eve", "eve-secret");
    let _bot = start_bot(&world, &[]).await;
    let mut readings: Vec<(&str, String)> = (1..=3)
        .map(|room| {
            (
                [
                    "EDIFICIO_1/P_1/N/1/VIBR",
                    "EDIFICIO_1/P_1/N/2/VIBR",
                    "EDIFICIO_1/P_1/N/3/VIBR",
                ][room - 1],
                format!(r#"{{"value": 0.{room}37}}"#),
            )
        })
        .collect();
    readings.extend(["20.5", "21.5", "22.5"].map(|v| ("sensors/temperature", v.to_string())));
    publish_many(world.mqtt.port(), &readings).await;
    let mut alice = world.alice().await;
    ask_until(&mut alice, "get temp", |r| r.starts_with("22.5 °C")).await;

    let run = run_script(
        python,
        &world,
        "alice",
        &["get temp", "get vib", "stats temp 1h"],
        &[
            "<req xmlns='urn:xmpp:iot:sensordata' seqnr='1' momentary='true'/>",
            "<req xmlns='urn:xmpp:iot:sensordata' seqnr='2' historical='true' \
             from='2000-01-01T00:00:00Z'><node nodeId='temp'/></req>",
        ],
    )
    .await;
    assert_eq!(events(&run, "disco")[0]["sensordata"], true, "{run:?}");
    let chats = events(&run, "chat");
    let reply = |i: usize| chats[i]["body"].as_str().unwrap_or_default().to_string();
    let readouts = events(&run, "readout");
    assert_eq!(readouts.len(), 2, "{run:?}");

    // Momentary: accepted, one message marked done, and the values `get` shows.
    let momentary = readouts[0];
    assert_eq!(momentary["type"], "result", "{momentary}");
    assert_eq!(momentary["accepted"], "1");
    let got = values(momentary);
    assert_eq!(got.len(), 4, "{got:?}");
    assert!(got.iter().all(|v| v.3 && !v.4), "{got:?}");
    let get_temp = reply(0);
    let temp = got.iter().find(|v| v.0 == "sensors/temperature").unwrap();
    assert_eq!(
        get_temp.split(" (").next(),
        Some(format!("{} {}", temp.1, temp.2).as_str()),
        "{get_temp} vs {temp:?}"
    );
    // `get vib`: a line "TOPIC: VALUE UNIT (age)" per room, as the read-out's nodes.
    let get_vib = reply(1);
    let mut lines = 0;
    for line in get_vib.lines().skip(1) {
        let (topic, rest) = line.split_once(": ").expect("TOPIC: value");
        let shown = rest.split(" (").next().unwrap_or_default();
        let value = got.iter().find(|v| v.0 == topic).expect(topic);
        assert_eq!(shown, format!("{} {}", value.1, value.2), "{line}");
        lines += 1;
    }
    assert_eq!(lines, 3, "{get_vib}");

    // Historical: the three readings, oldest first; `stats` gives their min, max and count.
    let historical = readouts[1];
    assert_eq!(historical["accepted"], "2", "{historical}");
    let got = values(historical);
    assert_eq!(
        got.iter().map(|v| v.1.as_str()).collect::<Vec<_>>(),
        ["20.5", "21.5", "22.5"]
    );
    assert!(got.iter().all(|v| v.4 && !v.3 && v.2 == "°C"), "{got:?}");
    let stats = reply(2);
    assert!(
        stats.contains("min 20.5 °C, max 22.5 °C") && stats.contains("3 readings"),
        "{stats}"
    );

    // A contact not on the allow list: one refusal in chat, forbidden for the read-out.
    let eve = run_script(
        python,
        &world,
        "eve",
        &["get temp"],
        &["<req xmlns='urn:xmpp:iot:sensordata' seqnr='3' momentary='true'/>"],
    )
    .await;
    let refused = events(&eve, "readout")[0];
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["condition"], "forbidden", "{refused}");
}

/// Whether `python` can import slixmpp; if not, panics under CI=true and otherwise skips.
fn slixmpp_at(python: &str, install: &str) -> bool {
    python_imports(python, "slixmpp", install)
}

const DEBIAN_INSTALL: &str = "install the Debian package python3-slixmpp";
const VENV_INSTALL: &str =
    "python3 -m venv target/slixmpp-venv && target/slixmpp-venv/bin/pip install slixmpp aiohttp";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debian_slixmpp_reads_momentary_and_historical_values_as_the_text_commands_show_them() {
    if !slixmpp_at(DEBIAN_PYTHON, DEBIAN_INSTALL) {
        return;
    }
    momentary_and_historical_read_outs_match_get_and_stats(DEBIAN_PYTHON, Kind::Bundled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn current_slixmpp_reads_momentary_and_historical_values_as_the_text_commands_show_them() {
    if !slixmpp_at(VENV_PYTHON, VENV_INSTALL) {
        return;
    }
    momentary_and_historical_read_outs_match_get_and_stats(VENV_PYTHON, Kind::Bundled).await;
}

/// The same through Prosody (and mosquitto): the read-out's IQ and messages cross a server
/// that knows nothing of XEP-0323.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debian_slixmpp_reads_momentary_and_historical_values_through_prosody() {
    if !slixmpp_at(DEBIAN_PYTHON, DEBIAN_INSTALL) {
        return;
    }
    momentary_and_historical_read_outs_match_get_and_stats(DEBIAN_PYTHON, Kind::Peers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn current_slixmpp_reads_momentary_and_historical_values_through_prosody() {
    if !slixmpp_at(VENV_PYTHON, VENV_INSTALL) {
        return;
    }
    momentary_and_historical_read_outs_match_get_and_stats(VENV_PYTHON, Kind::Peers).await;
}

// ----- hostile --------------------------------------------------------------------------------

/// alice's session and the bot's full JID (from a chat reply: an IQ to the bot's bare JID is
/// the server's to answer).
async fn alice_and_bot(world: &World) -> (ChatClient, Jid) {
    let mut alice = world.alice().await;
    let bare = BareJid::from_str(BOT).expect("JID");
    alice
        .send(
            Message::chat(Some(Jid::from(bare.clone())))
                .with_body(Default::default(), "get temp".into()),
        )
        .await;
    let reply = alice
        .next_message_from(&bare, DEADLINE)
        .await
        .expect("a chat reply");
    assert!(!body(&reply).is_empty());
    (alice, reply.from.expect("the bot's full JID"))
}

/// Sends `payload` in an IQ get with `id` to the bot.
async fn send_get(alice: &mut ChatClient, bot: &Jid, id: &str, payload: &str) {
    let iq = Iq::Get {
        from: None,
        to: Some(bot.clone()),
        id: id.into(),
        payload: payload.parse::<Element>().expect("payload XML"),
    };
    alice.send_stanza(iq).await;
}

/// The stanzas that answer the IQ `id`: the IQ's answer, then (for a read-out) the messages
/// up to the one marked done. Each as an element with its serialised size.
async fn answer(alice: &mut ChatClient, id: &str) -> (Element, Vec<(Element, usize)>) {
    let end = Instant::now() + DEADLINE;
    let mut iq = None;
    let mut messages = Vec::new();
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let stanza = alice.next_stanza(left).await.unwrap_or_else(|| {
            panic!(
                "no end to the answer to {id}: {iq:?}, {} messages",
                messages.len()
            )
        });
        match stanza {
            Stanza::Iq(answer) => {
                let element = Element::from(answer);
                if element.attr("id") != Some(id) {
                    continue;
                }
                let readout = element.attr("type") == Some("result")
                    && element.get_child("accepted", NS).is_some();
                if !readout {
                    return (element, messages);
                }
                iq = Some(element);
            }
            Stanza::Message(message) => {
                let element = Element::from(message);
                let part = element
                    .children()
                    .find(|c| c.ns() == NS && (c.name() == "fields" || c.name() == "failure"));
                let Some(part) = part else { continue };
                let done = part.attr("done") == Some("true");
                let size = String::from(&element).len();
                messages.push((element, size));
                if done {
                    let iq = iq.expect("the IQ result comes before the messages");
                    return (iq, messages);
                }
            }
            Stanza::Presence(_) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_a_read_out_of_a_ten_thousand_topic_building_is_paged_and_truncated_with_a_clear_error(
) {
    let Some(world) = World::start(Kind::Bundled).await else {
        return;
    };
    let _bot = start_bot(&world, &["--max-topics", "10100"]).await;
    let topics: Vec<String> = (0..10_000)
        .map(|i| {
            format!(
                "EDIFICIO_1/P_{}/{}/{}/VIBR",
                i / 400,
                ["N", "S", "E", "O"][(i / 100) % 4],
                i % 100
            )
        })
        .collect();
    let readings: Vec<(&str, String)> = topics
        .iter()
        .map(|t| (t.as_str(), r#"{"value": 0.5}"#.to_string()))
        .collect();
    publish_many(world.mqtt.port(), &readings).await;
    publish_many(world.mqtt.port(), &[("sensors/temperature", "21.5".into())]).await;
    let (mut alice, bot) = alice_and_bot(&world).await;
    ask_until(&mut alice, "list", |r| {
        r.starts_with("2 sensors, 10001 topics")
    })
    .await;

    send_get(
        &mut alice,
        &bot,
        "all",
        "<req xmlns='urn:xmpp:iot:sensordata' seqnr='10' momentary='true' historical='true'/>",
    )
    .await;
    let (iq, messages) = answer(&mut alice, "all").await;
    assert_eq!(iq.attr("type"), Some("result"));
    assert!(messages.len() > 1, "paged");
    let mut read = 0;
    for (i, (message, size)) in messages.iter().enumerate() {
        // Far below the server's stanza limit (256 KiB); about 16 KiB each.
        assert!(*size < 20 * 1024, "message {i}: {size} bytes");
        let last = i + 1 == messages.len();
        match message.get_child("fields", NS) {
            Some(fields) => {
                assert!(!last && fields.attr("done").is_none());
                read += fields
                    .children()
                    .flat_map(|node| node.children())
                    .flat_map(|stamp| stamp.children())
                    .count();
            }
            None => {
                assert!(last);
                let failure = message.get_child("failure", NS).expect("failure");
                assert_eq!(failure.attr("done"), Some("true"));
                assert_eq!(failure.attr("seqnr"), Some("10"));
                let text = failure
                    .get_child("error", NS)
                    .map(|e| e.text())
                    .unwrap_or_default();
                assert!(
                    text.contains("truncated") && text.contains("Name nodes"),
                    "{text}"
                );
            }
        }
    }
    assert_eq!(read, 2000, "the cap of values per read-out");

    // Narrowed to one room by a topic pattern, the same request is read whole.
    send_get(
        &mut alice,
        &bot,
        "one",
        "<req xmlns='urn:xmpp:iot:sensordata' seqnr='11' momentary='true'>\
         <node nodeId='EDIFICIO_1/P_0/N/0/VIBR'/></req>",
    )
    .await;
    let (_, messages) = answer(&mut alice, "one").await;
    assert_eq!(messages.len(), 1);
    let fields = messages[0].0.get_child("fields", NS).expect("fields");
    assert_eq!(fields.attr("done"), Some("true"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_malformed_read_outs_get_defined_errors_and_the_bot_keeps_answering() {
    let Some(world) = World::start(Kind::Bundled).await else {
        return;
    };
    let _bot = start_bot(&world, &[]).await;
    publish_many(world.mqtt.port(), &[("sensors/temperature", "21.5".into())]).await;
    let (mut alice, bot) = alice_and_bot(&world).await;
    ask_until(&mut alice, "get temp", |r| r.starts_with("21.5 °C")).await;
    // A thousand nodes (each a scan of the cache), well within the server's stanza limit.
    let many_nodes = format!(
        "<req xmlns='urn:xmpp:iot:sensordata' seqnr='1'>{}</req>",
        "<node nodeId='EDIFICIO_1/#'/>".repeat(1000)
    );
    let cases = [
        (
            "<req xmlns='urn:xmpp:iot:sensordata' momentary='true'/>",
            "bad-request",
        ),
        (
            "<req xmlns='urn:xmpp:iot:sensordata' seqnr='-x-'/>",
            "bad-request",
        ),
        (
            "<req xmlns='urn:xmpp:iot:sensordata' seqnr='1' historical='true' to='soon'/>",
            "bad-request",
        ),
        (many_nodes.as_str(), "bad-request"),
        (
            "<req xmlns='urn:xmpp:iot:sensordata' seqnr='1'><node nodeId='no/such/+'/></req>",
            "item-not-found",
        ),
        (
            "<fields xmlns='urn:xmpp:iot:sensordata' seqnr='1' done='true'/>",
            "feature-not-implemented",
        ),
    ];
    for (i, (payload, condition)) in cases.iter().enumerate() {
        let id = format!("bad{i}");
        send_get(&mut alice, &bot, &id, payload).await;
        let (iq, messages) = answer(&mut alice, &id).await;
        assert!(messages.is_empty());
        assert_eq!(iq.attr("type"), Some("error"), "{}", String::from(&iq));
        let error = iq.get_child("error", "jabber:client").expect("error");
        assert!(
            error
                .get_child(condition, "urn:ietf:params:xml:ns:xmpp-stanzas")
                .is_some(),
            "{payload}: {}",
            String::from(&iq)
        );
    }
    // Still answering: a good read-out after the bad ones.
    send_get(
        &mut alice,
        &bot,
        "good",
        "<req xmlns='urn:xmpp:iot:sensordata' seqnr='2' momentary='true'/>",
    )
    .await;
    let (iq, messages) = answer(&mut alice, "good").await;
    assert_eq!(iq.attr("type"), Some("result"));
    let numeric = messages[0]
        .0
        .get_child("fields", NS)
        .and_then(|f| f.get_child("node", NS))
        .and_then(|n| n.get_child("timestamp", NS))
        .and_then(|t| t.get_child("numeric", NS))
        .map(|n| (n.attr("value"), n.attr("unit")));
    assert_eq!(numeric, Some((Some("21.5"), Some("°C"))));
}
