//! Read-outs as a client sees them: an IQ in, the IQ answer and messages out, on a bot fed with
//! readings (no network).

use std::time::{Duration, Instant};

use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::Stanza;

use super::types::{Failure, Field, Fields, NS};
use super::{Now, MAX_REQUEST_ITEMS, MAX_VALUES, MESSAGE_BYTES};
use crate::bridge::bot::testing::{building_bot, fill, ALICE, BOB};
use crate::bridge::bot::Bot;
use crate::bridge::cache::CacheLimits;

/// 2026-12-05T12:00:00Z.
const NOON_MS: i64 = 1_796_472_000_000;

fn iq(from: &str, payload: &str) -> Iq {
    let xml = format!("<iq xmlns='jabber:client' type='get' id='r1' from='{from}'>{payload}</iq>");
    Iq::try_from(xml.parse::<Element>().unwrap()).unwrap()
}

fn xml(stanza: Stanza) -> Element {
    match stanza {
        Stanza::Message(m) => m.into(),
        Stanza::Iq(i) => i.into(),
        Stanza::Presence(p) => p.into(),
    }
}

/// The answer to `payload` from `from` at `now` (wall clock: noon).
fn ask(bot: &Bot, from: &str, payload: &str, now: Instant) -> Vec<Element> {
    let now = Now {
        instant: now,
        unix_ms: NOON_MS,
    };
    bot.sensor_data(&iq(from, payload), now)
        .expect("a XEP-0323 request is always answered")
        .into_iter()
        .map(xml)
        .collect()
}

/// The IQ error's condition and text, or a panic.
fn refused(out: &[Element]) -> (String, String) {
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(
        out[0].attr("type"),
        Some("error"),
        "{}",
        String::from(&out[0])
    );
    assert_eq!(out[0].attr("id"), Some("r1"));
    let error = out[0].get_child("error", "jabber:client").unwrap();
    let condition = error
        .children()
        .find(|c| c.ns() == "urn:ietf:params:xml:ns:xmpp-stanzas" && c.name() != "text")
        .unwrap()
        .name()
        .to_string();
    let text = error
        .get_child("text", "urn:ietf:params:xml:ns:xmpp-stanzas")
        .map_or(String::new(), |t| t.text());
    (condition, text)
}

/// The `<fields/>` of the messages after the IQ result, checking the result accepts `seqnr`.
fn fields(out: &[Element], seqnr: &str) -> Vec<Fields> {
    assert_eq!(
        out[0].attr("type"),
        Some("result"),
        "{}",
        String::from(&out[0])
    );
    let accepted = out[0].get_child("accepted", NS).unwrap();
    assert_eq!(accepted.attr("seqnr"), Some(seqnr));
    assert_eq!(accepted.attr("queued"), None);
    out[1..]
        .iter()
        .map(|message| {
            assert_eq!(message.name(), "message");
            assert_eq!(message.attr("to"), Some("alice@localhost/phone"));
            Fields::try_from(message.get_child("fields", NS).unwrap().clone()).unwrap()
        })
        .collect()
}

/// `(node, timestamp, name, value, unit, momentary)` of every value, in order.
fn values(pages: &[Fields]) -> Vec<(String, String, String, String, String, bool)> {
    let mut out = Vec::new();
    for page in pages {
        for node in &page.nodes {
            for stamp in &node.timestamps {
                for field in &stamp.fields {
                    let Field::Numeric(n) = field else {
                        panic!("not numeric: {field:?}")
                    };
                    assert!(n.automatic_readout);
                    out.push((
                        node.node_id.clone(),
                        stamp.value.clone(),
                        n.name.clone(),
                        n.value.clone(),
                        n.unit.clone(),
                        n.momentary,
                    ));
                }
            }
        }
    }
    out
}

const PHONE: &str = "alice@localhost/phone";

#[test]
fn a_momentary_read_out_is_accepted_and_answered_with_every_topic_in_one_done_message() {
    let (bot, _) = building_bot(&[], CacheLimits::default());
    let t0 = Instant::now();
    fill(&bot, t0);
    let later = t0 + Duration::from_secs(3);
    let out = ask(
        &bot,
        PHONE,
        "<req xmlns='urn:xmpp:iot:sensordata' seqnr='7' momentary='true'/>",
        later,
    );
    let pages = fields(&out, "7");
    assert_eq!(pages.len(), 1);
    assert!(pages[0].done);
    let values = values(&pages);
    // 16 VIBR and 16 TEMP topics in the building, and sensors/temperature.
    assert_eq!(values.len(), 33, "{values:?}");
    let temp = values
        .iter()
        .find(|v| v.0 == "sensors/temperature")
        .unwrap();
    // Stamped when it arrived, 3 s before noon; named and formatted as the text commands do.
    assert_eq!(temp.1, "2026-12-05T11:59:57.000Z");
    assert_eq!(
        (temp.2.as_str(), temp.3.as_str(), temp.4.as_str()),
        ("temp", "21.5", "°C")
    );
    assert!(temp.5);
    assert!(bot
        .chat(ALICE, "get temp", later)
        .unwrap()
        .starts_with("21.5 °C"));
    let vib = values.iter().find(|v| v.0 == "B/P_1/N/1/VIBR").unwrap();
    assert_eq!(
        (vib.2.as_str(), vib.3.as_str(), vib.4.as_str()),
        ("vib", "0.5", "mm/s")
    );
}

#[test]
fn nodes_name_topics_sensors_or_patterns_and_fields_restrict() {
    let (bot, _) = building_bot(&[], CacheLimits::default());
    let t0 = Instant::now();
    fill(&bot, t0);
    let nodes_of = |payload: &str| -> Vec<String> {
        let out = ask(&bot, PHONE, payload, t0);
        values(&fields(&out, "1"))
            .into_iter()
            .map(|v| v.0)
            .collect()
    };
    assert_eq!(
        nodes_of(
            "<req xmlns='urn:xmpp:iot:sensordata' seqnr='1' momentary='true'>\
             <node nodeId='temp'/><node nodeId='B/+/O/1/VIBR'/></req>"
        ),
        ["B/P_1/O/1/VIBR", "B/P_2/O/1/VIBR", "sensors/temperature"]
    );
    // A field names a sensor: only its topics are read.
    let vib = nodes_of(
        "<req xmlns='urn:xmpp:iot:sensordata' seqnr='1' momentary='true'><field name='vib'/></req>",
    );
    assert_eq!(vib.len(), 16);
    assert!(vib.iter().all(|topic| topic.ends_with("/VIBR")));
    // A field nothing has: read-out done, with no values.
    assert!(nodes_of(
        "<req xmlns='urn:xmpp:iot:sensordata' seqnr='1' momentary='true'><field name='Energy'/></req>"
    )
    .is_empty());
    // A node the bot does not have: item-not-found, as §3.3's table says.
    for missing in ["nowhere/at/all", "B/#/x", "nothing"] {
        let out = ask(
            &bot,
            PHONE,
            &format!(
                "<req xmlns='urn:xmpp:iot:sensordata' seqnr='1' momentary='true'>\
                 <node nodeId='{missing}'/></req>"
            ),
            t0,
        );
        let (condition, text) = refused(&out);
        assert_eq!(condition, "item-not-found", "{missing}");
        assert!(text.contains(missing), "{text}");
    }
}

#[test]
fn a_historical_read_out_returns_the_history_between_from_and_to() {
    let (bot, _) = building_bot(&[ALICE], CacheLimits::default());
    let t0 = Instant::now();
    for (secs, value) in [(0, "20"), (60, "21"), (120, "22"), (180, "23")] {
        bot.ingest(
            "sensors/temperature",
            value.as_bytes(),
            false,
            t0 + Duration::from_secs(secs),
        );
    }
    // Noon is t0 + 200 s: the readings are at 11:56:40, 11:57:40, 11:58:40, 11:59:40.
    let now = t0 + Duration::from_secs(200);
    let out = ask(
        &bot,
        PHONE,
        "<req xmlns='urn:xmpp:iot:sensordata' seqnr='2' historical='true' \
         from='2026-12-05T11:57:00Z' to='2026-12-05T11:59:00'><node nodeId='temp'/></req>",
        now,
    );
    let got: Vec<(String, String, bool)> = values(&fields(&out, "2"))
        .into_iter()
        .map(|v| (v.1, v.3, v.5))
        .collect();
    assert_eq!(
        got,
        [
            ("2026-12-05T11:57:40.000Z".into(), "21".into(), false),
            ("2026-12-05T11:58:40.000Z".into(), "22".into(), false),
        ]
    );
    // With momentary too (§5.6: a union), and no bounds: every sample, then the latest.
    let out = ask(
        &bot,
        PHONE,
        "<req xmlns='urn:xmpp:iot:sensordata' seqnr='3' historical='true' momentary='true'>\
         <node nodeId='sensors/temperature'/></req>",
        now,
    );
    let got: Vec<(String, bool)> = values(&fields(&out, "3"))
        .into_iter()
        .map(|v| (v.3, v.5))
        .collect();
    assert_eq!(
        got,
        [
            ("20".into(), false),
            ("21".into(), false),
            ("22".into(), false),
            ("23".into(), false),
            ("23".into(), true)
        ]
    );
    let history = out[1]
        .get_child("fields", NS)
        .and_then(|f| f.get_child("node", NS))
        .and_then(|n| n.get_child("timestamp", NS))
        .and_then(|t| t.get_child("numeric", NS))
        .unwrap();
    assert_eq!(history.attr("historicalOther"), Some("true"));
}

#[test]
fn access_is_as_for_text_commands() {
    // An allow list: bob is refused everything; the XEP's forbidden (§3.3).
    let (bot, _) = building_bot(&[ALICE], CacheLimits::default());
    let t0 = Instant::now();
    fill(&bot, t0);
    let out = ask(
        &bot,
        "bob@localhost/pc",
        "<req xmlns='urn:xmpp:iot:sensordata' seqnr='1' momentary='true'/>",
        t0,
    );
    let (condition, text) = refused(&out);
    assert_eq!(condition, "forbidden");
    assert!(text.contains("Access denied"), "{text}");
    assert!(bot
        .chat(BOB, "get temp", t0)
        .unwrap()
        .contains("only answer"));

    // An open bot: anyone reads momentary values, but history is for the allow list only,
    // like stats; `all` then reads momentary values only.
    let (open, _) = building_bot(&[], CacheLimits::default());
    fill(&open, t0);
    let (condition, _) = refused(&ask(
        &open,
        PHONE,
        "<req xmlns='urn:xmpp:iot:sensordata' seqnr='1' historical='true'/>",
        t0,
    ));
    assert_eq!(condition, "forbidden");
    let out = ask(
        &open,
        PHONE,
        "<req xmlns='urn:xmpp:iot:sensordata' seqnr='1' all='true'><node nodeId='temp'/></req>",
        t0,
    );
    let got = values(&fields(&out, "1"));
    assert_eq!(got.len(), 1);
    assert!(got[0].5, "momentary");
}

#[test]
fn the_rate_limit_answers_policy_violation() {
    let (bot, _) = building_bot(&[], CacheLimits::default());
    let t0 = Instant::now();
    fill(&bot, t0);
    // building_bot allows bursts of 1000.
    let req = "<req xmlns='urn:xmpp:iot:sensordata' seqnr='1' momentary='true'><node nodeId='temp'/></req>";
    for _ in 0..1000 {
        assert_eq!(ask(&bot, PHONE, req, t0).len(), 2);
    }
    let (condition, _) = refused(&ask(&bot, PHONE, req, t0));
    assert_eq!(condition, "policy-violation");
}

#[test]
fn malformed_requests_get_bad_request_and_other_elements_a_defined_error() {
    let (bot, _) = building_bot(&[ALICE], CacheLimits::default());
    let t0 = Instant::now();
    fill(&bot, t0);
    let many_nodes = format!(
        "<req xmlns='urn:xmpp:iot:sensordata' seqnr='1'>{}</req>",
        "<node nodeId='temp'/>".repeat(MAX_REQUEST_ITEMS + 1)
    );
    for bad in [
        "<req xmlns='urn:xmpp:iot:sensordata' momentary='true'/>",
        "<req xmlns='urn:xmpp:iot:sensordata' seqnr='x'/>",
        "<req xmlns='urn:xmpp:iot:sensordata' seqnr='1' momentary='maybe'/>",
        "<req xmlns='urn:xmpp:iot:sensordata' seqnr='1' historical='true' from='yesterday'/>",
        "<req xmlns='urn:xmpp:iot:sensordata' seqnr='1' historical='true' \
         from='2026-12-05T11:00:00Z' to='2026-12-05T10:00:00Z'/>",
        "<cancel xmlns='urn:xmpp:iot:sensordata'/>",
        &many_nodes,
    ] {
        let (condition, _) = refused(&ask(&bot, PHONE, bad, t0));
        assert_eq!(condition, "bad-request", "{bad}");
    }
    let (condition, _) = refused(&ask(
        &bot,
        PHONE,
        "<fields xmlns='urn:xmpp:iot:sensordata' seqnr='1'/>",
        t0,
    ));
    assert_eq!(condition, "feature-not-implemented");
    // §3.7: nothing is queued, so a cancel is answered at once.
    let out = ask(
        &bot,
        PHONE,
        "<cancel xmlns='urn:xmpp:iot:sensordata' seqnr='8'/>",
        t0,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0]
            .get_child("cancelled", NS)
            .and_then(|c| c.attr("seqnr")),
        Some("8")
    );
    // Not a get, or not this namespace: not a read-out (answered as any other IQ).
    let set = Iq::try_from(
        "<iq xmlns='jabber:client' type='set' id='s' from='alice@localhost/p'>\
         <req xmlns='urn:xmpp:iot:sensordata' seqnr='1'/></iq>"
            .parse::<Element>()
            .unwrap(),
    )
    .unwrap();
    assert!(bot.sensor_data(&set, Now::new()).is_none());
    assert!(bot
        .sensor_data(&iq(PHONE, "<ping xmlns='urn:xmpp:ping'/>"), Now::new())
        .is_none());
}

#[test]
fn hostile_a_read_out_of_a_ten_thousand_topic_building_is_paged_and_capped() {
    let (bot, _) = building_bot(
        &[ALICE],
        CacheLimits {
            max_topics: 10_000,
            history: 10,
        },
    );
    let t0 = Instant::now();
    for i in 0..10_000 {
        let topic = format!("B/P_{}/N/{}/VIBR", i / 100, i % 100);
        bot.ingest(&topic, b"{\"value\": 1.25}", false, t0);
    }
    assert_eq!(bot.cache().len(), 10_000);
    let out = ask(
        &bot,
        PHONE,
        "<req xmlns='urn:xmpp:iot:sensordata' seqnr='5' momentary='true' historical='true'/>",
        t0,
    );
    assert_eq!(out[0].attr("type"), Some("result"));
    let messages = &out[1..];
    assert!(messages.len() > 1, "paged");
    let mut values_read = 0;
    for (i, message) in messages.iter().enumerate() {
        let size = String::from(message).len();
        assert!(size < MESSAGE_BYTES + 1024, "message {i} is {size} bytes");
        let last = i == messages.len() - 1;
        if let Some(fields) = message.get_child("fields", NS) {
            assert!(!last, "the last message is the failure");
            let fields = Fields::try_from(fields.clone()).unwrap();
            assert!(!fields.done);
            values_read += values(&[fields]).len();
        } else {
            assert!(last);
            let failure =
                Failure::try_from(message.get_child("failure", NS).unwrap().clone()).unwrap();
            assert!(failure.done);
            assert!(
                failure.errors[0].text.contains("truncated"),
                "{:?}",
                failure.errors
            );
        }
    }
    // Each topic has one history sample and its momentary value: the cap falls on a node.
    assert_eq!(values_read, MAX_VALUES);
    let total: usize = out.iter().map(|e| String::from(e).len()).sum();
    assert!(total < 512 * 1024, "{total} bytes in all");
}

#[test]
fn hostile_a_topic_with_characters_xml_cannot_carry_never_reaches_a_read_out() {
    // MQTT allows control characters in topics; XML 1.0 does not (§2.2 of XML 1.0). The bot
    // refuses such a topic at intake, so a read-out never has to write one.
    let (bot, _) = building_bot(&[], CacheLimits::default());
    let t0 = Instant::now();
    bot.ingest("B/a\u{1}b/x/y/VIBR", b"{\"value\": 1}", false, t0);
    bot.ingest("B/ab/x/y/VIBR", b"{\"value\": 2}", false, t0);
    let out = ask(
        &bot,
        PHONE,
        "<req xmlns='urn:xmpp:iot:sensordata' seqnr='7' momentary='true'/>",
        t0,
    );
    let written: String = out.iter().map(String::from).collect();
    assert!(written.contains("nodeId='B/ab/x/y/VIBR'"), "{written}");
    assert!(!written.contains("B/a\u{fffd}b"), "{written}");
    // Should one get in another way, it is written with a replacement, not a panic.
    assert_eq!(super::xml_text("a\u{1}b\tc"), "a\u{fffd}b\tc");
}
