//! The bot's chat commands end to end: the bridge, configured from the flags of
//! `mqtt2xmpp bridge`, reads from the embedded MQTT broker and answers over the bundled XMPP
//! server, all three in this process, and a test user chats with it. Needs nothing but the
//! crate; every test has its own broker, server and bot on ports the kernel picks. (The
//! simulated building comes from the `mqtt2xmpp simulate` binary, whose exit status is checked.)
//!
//! Proving that the bot says *nothing* is done without waiting for a timeout:
//!
//! - Chat replies: [`Conversation::barrier`] pings the bot's session after the messages in
//!   question. The bot answers the stanzas of its connection one at a time and in order, so
//!   the ping's result comes after any reply those messages caused.
//! - Alert messages: the bot sends them from a queue, in order. A second alert (a [`Marker`]) on
//!   a topic of its own is made to fire after the readings in question; once its message
//!   arrives, every alert message those readings caused has arrived before it. The broker
//!   queues each message for its subscribers before acknowledging it, and the bot reads its
//!   MQTT messages one at a time, so readings published one after the other reach the alerts
//!   in that order.

#![cfg(feature = "embedded-broker")]

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mqtt2xmpp::broker::EmbeddedBroker;
use support::bridge::{InProcessBridge, STARTUP};
use support::chat::ChatClient;
use support::conversation::{Conversation, REPLY_TIMEOUT};
use support::files::password_file;
use support::mqtt::{self, publish};
use support::process::BinaryProcess;
use support::server::{InProcessServer, XmppEndpoint};
use tokio_xmpp::jid::BareJid;
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};

const BOT: &str = "bot@localhost";
const BOT2: &str = "bot2@localhost";
const ALICE: &str = "alice@localhost";
/// How long a condition that should hold soon may take to hold.
const DEADLINE: Duration = Duration::from_secs(15);

/// The usual default sensor: a plain number on `sensors/temperature`.
const TEMP: [&str; 2] = ["--sensor", "name=temp,topic=sensors/temperature,unit=°C"];

/// What a contact that may not set alerts or ask for stats is told.
const ONLY_ALLOWED: &str = "Alerts and stats are only for the contacts on my allow list; my \
                            operator can add you with --allow. You can still ask for readings: \
                            send help.";

/// What a contact who is not on the allow list is told, once.
const REFUSAL: &str = "Sorry, I only answer the contacts my operator allowed. Ask them to add \
                       you with --allow.";

/// An embedded MQTT broker, a bundled XMPP server with accounts, and a directory for files.
struct World {
    mqtt_port: u16,
    xmpp: InProcessServer,
    dir: tempfile::TempDir,
    _broker: EmbeddedBroker,
}

fn password(user: &str) -> String {
    format!("{user}-secret")
}

impl World {
    /// Starts both servers and creates the accounts `users` (bots included) on the XMPP one.
    async fn start(users: &[&str]) -> World {
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        let broker = EmbeddedBroker::start(any_port)
            .await
            .expect("embedded broker");
        let mqtt_port = broker.local_addr().port();
        let xmpp = InProcessServer::start().await;
        for user in users {
            xmpp.add_user(user, &password(user));
        }
        World {
            mqtt_port,
            xmpp,
            dir: tempfile::tempdir().expect("temp dir"),
            _broker: broker,
        }
    }

    /// Writes `text` to a file in the world's directory and returns its path.
    fn file(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write file");
        path.to_string_lossy().into_owned()
    }

    /// A path in the world's directory.
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts the bridge as `account` (a user name) with `extra` flags, and waits until it is
    /// subscribed and online. Unless `extra` sets a rate limit, the limit is high enough for
    /// tests that poll.
    async fn start_bot(&self, account: &str, extra: &[&str]) -> InProcessBridge {
        let mut args: Vec<String> = vec![
            "bridge".into(),
            "--mqtt-port".into(),
            self.mqtt_port.to_string(),
            "--jid".into(),
            format!("{account}@localhost"),
            "--password-file".into(),
            password_file(
                self.dir.path(),
                &format!("{account}.pw"),
                &password(account),
            ),
            "--xmpp-server".into(),
            self.xmpp.address(),
            "--xmpp-ca".into(),
            self.xmpp.ca_file.to_string_lossy().into_owned(),
        ];
        if !extra.contains(&"--replies-per-minute") {
            args.extend(
                ["--replies-per-minute", "100000", "--reply-burst", "100000"].map(String::from),
            );
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let bot = InProcessBridge::spawn(&args);
        bot.wait_subscribed(1, STARTUP).await;
        bot.wait_online(1, STARTUP).await;
        bot
    }

    /// Stops a bot and checks it stops cleanly.
    async fn stop_bot(&self, bot: &mut InProcessBridge) {
        let (outcome, _) = bot.stop(Duration::from_secs(10)).await;
        assert!(outcome.is_ok(), "{outcome:?}\n{}", bot.log());
    }

    /// `user` logs in and opens a chat with the bot account `bot`.
    async fn chat(&self, user: &str, bot: &str) -> Conversation {
        let jid = format!("{user}@localhost");
        let client =
            ChatClient::login(&jid, &password(user), self.xmpp.port, &self.xmpp.ca_file).await;
        Conversation::new(client, bot)
    }

    /// Publishes one message (QoS 1, acknowledged), not retained.
    async fn publish(&self, topic: &str, payload: &str) {
        publish(self.mqtt_port, topic, payload.as_bytes(), false).await;
    }
}

/// `{"value": V}`, what the simulated building publishes (without its other fields).
fn json(value: f64) -> String {
    format!(r#"{{"value": {value:?}}}"#)
}

/// An alert of its own whose message marks a point in the bot's queue of alert messages.
struct Marker {
    /// Where it is triggered.
    topic: &'static str,
    /// Whether that topic's payloads are JSON (`{"value": …}`) rather than plain numbers.
    json: bool,
    /// The alert message for a value: `(before, after)` the value.
    text: (&'static str, &'static str),
    fired: u32,
}

impl Marker {
    /// Sets `alert TARGET above 50` for `user`; `topic` is where TARGET reads from.
    async fn set(
        user: &mut Conversation,
        target: &str,
        topic: &'static str,
        json: bool,
        text: (&'static str, &'static str),
    ) -> Marker {
        let reply = user.ask(&format!("alert {target} above 50")).await;
        assert!(reply.starts_with("Alert set: "), "{reply}");
        Marker {
            topic,
            json,
            text,
            fired: 0,
        }
    }

    /// Makes the marker fire (a reading that re-arms it, then one past it) and returns every
    /// alert message that arrived before the marker's: all those the readings published before
    /// this call caused.
    async fn notices_before(&mut self, world: &World, user: &mut Conversation) -> Vec<String> {
        self.fired += 1;
        let value = 60 + self.fired;
        for v in [0, value] {
            let payload = if self.json {
                json(f64::from(v))
            } else {
                v.to_string()
            };
            world.publish(self.topic, &payload).await;
        }
        let marker = format!("{}{value}{}", self.text.0, self.text.1);
        let mut before = Vec::new();
        loop {
            let notice = user
                .next_notice(DEADLINE)
                .await
                .unwrap_or_else(|| panic!("no {marker:?} within {DEADLINE:?}; got {before:?}"));
            if notice == marker {
                return before;
            }
            before.push(notice);
        }
    }
}

/// The simulated building's sensors as the bot is told about them: a default sensor, the
/// vibration of every room, and everything in the building.
const BUILDING_SENSORS: &str = r#"
[[sensor]]
name = "temp"
topic = "sensors/temperature"
unit = "°C"

[[sensor]]
name = "vib"
topic = "EDIFICIO_1/+/+/+/VIBR"
json_pointer = "/value"
unit = "mm/s"

[[sensor]]
name = "edificio"
topic = "EDIFICIO_1/#"
json_pointer = "/value"
"#;

/// Each line of a reply without its parenthesised age, which moves on between two replies.
fn without_ages(reply: &str) -> Vec<&str> {
    reply
        .lines()
        .map(|line| line.split(" (").next().unwrap_or(line))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_building_is_listed_read_by_pattern_in_two_languages_and_watched_by_an_alert() {
    let world = World::start(&["bot", "alice"]).await;
    let port = world.mqtt_port.to_string();
    let mut simulator = BinaryProcess::spawn(&[
        "simulate",
        "--mqtt-port",
        &port,
        "--building",
        "EDIFICIO_1",
        "--floors",
        "2",
        "--rooms-per-wing",
        "2",
        "--rate",
        "200",
        "--count",
        "400",
        "--retain",
        "--seed",
        "7",
    ]);
    let status = tokio::task::block_in_place(|| simulator.wait_exit(Duration::from_secs(30)));
    assert!(status.success(), "{status:?}\n{}", simulator.log());
    // With seed 7, the 400 readings reach every one of the 2 floors × 4 wings × 2 rooms × 4
    // kinds = 64 sensors, so the broker retains a reading for each.
    let retained = mqtt::retained(world.mqtt_port, "EDIFICIO_1/#", 64).await;
    let value_of = |topic: &str| -> String {
        let payload = &retained[topic];
        let json: serde_json::Value = serde_json::from_str(payload).expect("JSON payload");
        json["value"].as_f64().expect("a value").to_string()
    };

    let sensors = world.file("sensors.toml", BUILDING_SENSORS);
    let _bot = world
        .start_bot(
            "bot",
            &[
                "--sensors-file",
                &sensors,
                "--allow",
                ALICE,
                "--alert-interval",
                "0s",
            ],
        )
        .await;
    let mut alice = world.chat("alice", BOT).await;

    // `list`: every sensor, and under each pattern every topic with its value.
    let list = alice
        .ask_until(
            "list",
            |r| r.starts_with("3 sensors, 64 topics with readings:"),
            DEADLINE,
        )
        .await;
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(
        lines[1],
        "temp: No reading from sensors/temperature yet: the bot has received nothing on that \
         topic since it started.",
        "{list}"
    );
    assert_eq!(lines[2], "vib (EDIFICIO_1/+/+/+/VIBR): 16 topics", "{list}");
    assert_eq!(lines[19], "edificio (EDIFICIO_1/#): 64 topics", "{list}");
    let topic_lines = lines.iter().filter(|l| l.starts_with("  EDIFICIO_1/"));
    assert_eq!(topic_lines.count(), 16 + 64, "{list}");
    assert_eq!(lines.len(), 4 + 16 + 64, "{list}");
    for (topic, unit) in [
        ("EDIFICIO_1/P_1/N/1/TEMP", ""),
        ("EDIFICIO_1/P_2/S/2/HUM", ""),
        ("EDIFICIO_1/P_2/E/1/LUX", ""),
        ("EDIFICIO_1/P_1/O/2/VIBR", " mm/s"),
    ] {
        let line = format!("  {topic}: {}{unit} (retained, at least ", value_of(topic));
        assert!(lines.iter().any(|l| l.starts_with(&line)), "{line}\n{list}");
    }

    // `get` with a pattern: the west wing's vibration, 2 floors × 2 rooms, nothing else.
    let west = alice.ask("get EDIFICIO_1/+/O/+/VIBR").await;
    let mut lines = west.lines();
    assert_eq!(
        lines.next(),
        Some("EDIFICIO_1/+/O/+/VIBR: 4 topics"),
        "{west}"
    );
    let rooms: Vec<&str> = lines.collect();
    let expected = [
        "EDIFICIO_1/P_1/O/1/VIBR",
        "EDIFICIO_1/P_1/O/2/VIBR",
        "EDIFICIO_1/P_2/O/1/VIBR",
        "EDIFICIO_1/P_2/O/2/VIBR",
    ];
    assert_eq!(rooms.len(), expected.len(), "{west}");
    for (line, topic) in rooms.iter().zip(expected) {
        let start = format!("{topic}: {} mm/s (", value_of(topic));
        assert!(line.starts_with(&start) && line.ends_with(')'), "{line}");
    }
    // The same in Spanish.
    let ver = alice.ask("ver EDIFICIO_1/+/O/+/VIBR").await;
    assert_eq!(without_ages(&ver), without_ages(&west), "{ver}");

    // An alert on one room: once per crossing of 5 mm/s, re-armed below 4.9 mm/s.
    let room = "EDIFICIO_1/P_1/O/1/VIBR";
    let set = alice.ask(&format!("alert {room} above 5")).await;
    assert!(
        set.starts_with(&format!(
            "Alert set: I will tell you when {room} goes above 5 mm/s"
        )),
        "{set}"
    );
    let mut marker = Marker::set(
        &mut alice,
        "EDIFICIO_1/P_2/N/2/TEMP",
        "EDIFICIO_1/P_2/N/2/TEMP",
        true,
        ("⚠ EDIFICIO_1/P_2/N/2/TEMP above 50: ", ""),
    )
    .await;

    for value in [1.0, 6.0] {
        world.publish(room, &json(value)).await;
    }
    assert_eq!(
        marker.notices_before(&world, &mut alice).await,
        [format!("⚠ {room} above 5 mm/s: 6 mm/s")]
    );
    // Still above: no new alert, though the bot has the readings.
    for value in [6.5, 7.0] {
        world.publish(room, &json(value)).await;
    }
    assert_eq!(
        marker.notices_before(&world, &mut alice).await,
        Vec::<String>::new()
    );
    let now = alice.ask(&format!("get {room}")).await;
    assert!(now.starts_with(&format!("7 mm/s ({room}, ")), "{now}");
    // Back below (re-armed), then above again: exactly one more.
    for value in [1.0, 8.0] {
        world.publish(room, &json(value)).await;
    }
    assert_eq!(
        marker.notices_before(&world, &mut alice).await,
        [format!("⚠ {room} above 5 mm/s: 8 mm/s")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_lists_every_command_in_english_and_spanish_and_commands_ignore_case() {
    let world = World::start(&["bot", "alice"]).await;
    let _bot = world.start_bot("bot", &TEMP).await;
    let mut alice = world.chat("alice", BOT).await;

    let help = alice.ask("help").await;
    let lines: Vec<&str> = help.lines().collect();
    assert_eq!(
        lines[0],
        "Any other message gets the latest temp reading. Commands (Spanish in brackets):"
    );
    for start in [
        "help [ayuda]: ",
        "list [lista]: ",
        "get <sensor or topic pattern> [ver]: ",
        "stats <sensor> [window] [estadisticas]: ",
        "alert <sensor> above|below <value> [margin <m>] [alerta … encima|debajo]: ",
        "alerts [alertas]: ",
        "alert off [<sensor>] [alerta quitar]: ",
        "stale [inactivos]: sensors with no reading for over 10 min",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(start)),
            "no line starts with {start:?}:\n{help}"
        );
    }
    assert_eq!(lines.last(), Some(&"Sensors: temp"), "{help}");

    assert_eq!(alice.ask("ayuda").await, help);
    assert_eq!(alice.ask("HELP").await, help);

    let list = alice.ask("list").await;
    assert_eq!(
        list,
        "1 sensors, 0 topics with readings:\ntemp: No reading from sensors/temperature yet: the \
         bot has received nothing on that topic since it started."
    );
    assert_eq!(alice.ask("LIST").await, list);
    assert_eq!(alice.ask("Lista").await, list);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_summarise_a_known_series_for_allowed_contacts_only() {
    let world = World::start(&["bot", "alice", "bob"]).await;
    let _bot = world
        .start_bot("bot", &[TEMP[0], TEMP[1], "--allow", ALICE])
        .await;
    let mut alice = world.chat("alice", BOT).await;
    let series: Vec<(&str, String)> = (1..=10)
        .map(|v| ("sensors/temperature", v.to_string()))
        .collect();
    mqtt::publish_many(world.mqtt_port, &series).await;
    // The last reading is there, so all of them are (the bot reads them in order).
    alice
        .ask_until("get temp", |r| r.starts_with("10 °C"), DEADLINE)
        .await;

    let stats = alice.ask("stats temp").await;
    let lines: Vec<&str> = stats.lines().collect();
    assert_eq!(
        lines[0],
        "temp (sensors/temperature), last 1 h: min 1 °C, max 10 °C, avg 5.50 °C, 10 readings",
        "{stats}"
    );
    // 24 slices of 150 s: every reading is in the last one, at the middle of the range.
    assert_eq!(lines[1].chars().count(), 24, "{stats}");
    assert_eq!(lines[1], format!("{}▅", "·".repeat(23)), "{stats}");
    assert_eq!(lines.len(), 2, "{stats}");

    let spanish = alice.ask("estadisticas temp 30m").await;
    assert!(
        spanish.starts_with("temp (sensors/temperature), last 30 min: min 1 °C, max 10 °C, avg 5.50 °C, 10 readings\n"),
        "{spanish}"
    );

    let mut bob = world.chat("bob", BOT).await;
    assert_eq!(bob.ask("stats temp").await, REFUSAL);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_get_one_refusal_then_silence_and_an_open_bot_lets_anyone_read_but_not_alert() {
    let world = World::start(&["bot", "bot2", "alice", "bob"]).await;
    let _closed = world
        .start_bot("bot", &[TEMP[0], TEMP[1], "--allow", ALICE])
        .await;
    let _open = world.start_bot("bot2", &TEMP).await;
    world.publish("sensors/temperature", "21.5").await;

    // With an allow list: bob is told why, once, and then ignored.
    let mut bob = world.chat("bob", BOT).await;
    assert_eq!(bob.ask("get temp").await, REFUSAL);
    let second = bob.send("get temp").await;
    let third = bob.send("help").await;
    // The bot answers in order: once it has answered a ping sent after these two messages,
    // whatever it was going to say about them has arrived.
    bob.barrier().await;
    assert_eq!(bob.take_reply(&second), None);
    assert_eq!(bob.take_reply(&third), None);
    assert!(
        bob.unclaimed_replies().is_empty(),
        "{:?}",
        bob.unclaimed_replies()
    );
    assert!(
        bob.pending_notices().is_empty(),
        "{:?}",
        bob.pending_notices()
    );
    // Alice, on the list, is answered as usual.
    let mut alice = world.chat("alice", BOT).await;
    alice
        .ask_until("get temp", |r| r.starts_with("21.5 °C"), DEADLINE)
        .await;

    // Without an allow list: anyone may read, nobody may set alerts or ask for stats.
    let mut bob = world.chat("bob", BOT2).await;
    let reading = bob
        .ask_until("get temp", |r| r.starts_with("21.5 °C"), DEADLINE)
        .await;
    assert!(
        reading.starts_with("21.5 °C (sensors/temperature, "),
        "{reading}"
    );
    let default = bob.ask("how warm is it?").await;
    assert!(
        default.starts_with("21.5 °C (sensors/temperature, "),
        "{default}"
    );
    assert!(bob
        .ask("list")
        .await
        .starts_with("1 sensors, 1 topics with readings:\ntemp: 21.5 °C"),);
    assert_eq!(bob.ask("alert temp above 1").await, ONLY_ALLOWED);
    assert_eq!(bob.ask("stats temp").await, ONLY_ALLOWED);
    assert_eq!(
        bob.ask("alerts").await,
        "You have no alerts. Set one with: alert temp above 25"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_over_the_rate_limit_gets_the_burst_then_one_notice_then_silence() {
    let world = World::start(&["bot", "alice", "carol"]).await;
    let _bot = world
        .start_bot(
            "bot",
            &[
                TEMP[0],
                TEMP[1],
                "--allow",
                "alice@localhost,carol@localhost",
                "--replies-per-minute",
                "1",
                "--reply-burst",
                "3",
            ],
        )
        .await;
    let mut alice = world.chat("alice", BOT).await;
    let mut threads = Vec::new();
    for _ in 0..6 {
        threads.push(alice.send("get temp").await);
    }
    // The first reply also names the bot's session, which the barrier pings.
    let first = alice.reply_to(&threads[0], REPLY_TIMEOUT).await;
    alice.barrier().await;
    let mut replies = vec![first];
    for thread in &threads[1..] {
        replies.push(alice.take_reply(thread));
    }
    for reply in &replies[..3] {
        let reply = reply.as_deref().unwrap_or("(none)");
        assert!(
            reply.starts_with("No reading from sensors/temperature yet"),
            "{replies:?}"
        );
    }
    assert_eq!(
        replies[3].as_deref(),
        Some(
            "You are sending messages faster than I answer (1 a minute). I will ignore your \
             messages for a little while."
        ),
        "{replies:?}"
    );
    assert_eq!(replies[4..], [None, None], "{replies:?}");
    assert!(alice.unclaimed_replies().is_empty());

    // The limit is per contact: carol is answered.
    let mut carol = world.chat("carol", BOT).await;
    assert!(carol
        .ask("get temp")
        .await
        .starts_with("No reading from sensors/temperature yet"));
    // Alice still is not, and is not told again.
    let again = alice.send("get temp").await;
    alice.barrier().await;
    assert_eq!(alice.take_reply(&again), None);
    assert!(alice.unclaimed_replies().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_sensor_is_reported_once_listed_as_stale_and_reported_back() {
    let world = World::start(&["bot", "alice"]).await;
    let _bot = world
        .start_bot(
            "bot",
            &[TEMP[0], TEMP[1], "--allow", ALICE, "--stale-after", "2s"],
        )
        .await;
    let mut alice = world.chat("alice", BOT).await;
    world.publish("sensors/temperature", "20").await;
    alice
        .ask_until("get temp", |r| r.starts_with("20 °C"), DEADLINE)
        .await;
    let set = alice.ask("alert temp above 30").await;
    assert!(
        set.starts_with("Alert set: ") && set.ends_with(" and if it sends nothing for 2 s."),
        "{set}"
    );

    // Nothing more is published: one message once it has been silent for over 2 s.
    let silent = alice
        .next_notice(DEADLINE)
        .await
        .expect("a message about the silence");
    assert!(
        silent.starts_with("⚠ sensors/temperature has sent nothing for ")
            && silent.ends_with(" s (your alert on temp)"),
        "{silent}"
    );
    let stale = alice.ask("stale").await;
    let lines: Vec<&str> = stale.lines().collect();
    assert_eq!(
        lines[0], "1 of 1 topics have sent nothing for over 2 s:",
        "{stale}"
    );
    assert!(
        lines[1].starts_with("sensors/temperature: 20 °C (")
            && lines[1].ends_with(" s ago; stale)"),
        "{stale}"
    );
    assert_eq!(lines.len(), 2, "{stale}");

    // A reading again: it is back. Alert messages arrive in order, so a second report of the
    // silence would have come first.
    world.publish("sensors/temperature", "21").await;
    assert_eq!(
        alice.next_notice(DEADLINE).await.as_deref(),
        Some("sensors/temperature is back: 21 °C (your alert on temp)")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_beyond_max_topics_are_dropped_with_one_warning_and_history_is_bounded() {
    let world = World::start(&["bot", "alice"]).await;
    let mut bot = world
        .start_bot(
            "bot",
            &[
                "--topic",
                "lab/+/temp",
                "--max-topics",
                "3",
                "--history",
                "3",
                "--allow",
                ALICE,
            ],
        )
        .await;
    let mut alice = world.chat("alice", BOT).await;
    // Five topics, each with its number as reading: the last two are one too many. Then three
    // more readings of the first, for four in all.
    let topics: Vec<String> = (1..=5).map(|n| format!("lab/{n}/temp")).collect();
    let mut messages: Vec<(&str, String)> = topics
        .iter()
        .zip(1..)
        .map(|(topic, n)| (topic.as_str(), n.to_string()))
        .collect();
    messages.extend((10..=12).map(|v| ("lab/1/temp", v.to_string())));
    mqtt::publish_many(world.mqtt_port, &messages).await;
    // The last reading is there, so all of them have been read.
    alice
        .ask_until(
            "get lab/1/temp",
            |r| r.starts_with("12 (lab/1/temp, "),
            DEADLINE,
        )
        .await;

    let all = alice.ask("get lab/+/temp").await;
    assert_eq!(
        without_ages(&all),
        [
            "lab/+/temp: 3 topics",
            "lab/1/temp: 12",
            "lab/2/temp: 2",
            "lab/3/temp: 3"
        ],
        "{all}"
    );
    let list = alice.ask("list").await;
    assert_eq!(
        without_ages(&list),
        [
            "1 sensors, 3 topics with readings:",
            "lab/+/temp",
            "  lab/1/temp: 12",
            "  lab/2/temp: 2",
            "  lab/3/temp: 3"
        ],
        "{list}"
    );
    assert!(
        list.contains("\nlab/+/temp (lab/+/temp): 3 topics\n"),
        "{list}"
    );
    assert_eq!(
        alice.ask("get lab/5/temp").await,
        "No reading from lab/5/temp yet: the bot has received nothing on that topic since it \
         started."
    );
    // Four readings of lab/1/temp, three kept.
    let stats = alice.ask("stats lab/1/temp").await;
    let lines: Vec<&str> = stats.lines().collect();
    assert_eq!(
        lines[0], "lab/1/temp, last 1 h: min 10, max 12, avg 11.00, 3 readings",
        "{stats}"
    );
    assert_eq!(
        lines.last(),
        Some(&"(The history keeps 3 readings per topic; it does not reach back the whole window.)"),
        "{stats}"
    );

    // Once stopped, the whole log is there: one warning for the two dropped topics, and the
    // count in the summary.
    world.stop_bot(&mut bot).await;
    let log = bot.log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("not tracking a new topic"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(
        warnings[0].contains("--max-topics (3) topics are tracked already"),
        "{log}"
    );
    let summary = log
        .lines()
        .find(|l| l.contains("bridge stopped"))
        .unwrap_or_else(|| panic!("no summary:\n{log}"));
    assert!(summary.contains("refused=2"), "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_alerts_survive_a_restart_with_the_state_db() {
    let world = World::start(&["bot", "alice"]).await;
    let db = world.path("state.db").to_string_lossy().into_owned();
    let args = [
        TEMP[0],
        TEMP[1],
        "--sensor",
        "name=hum,topic=sensors/humidity,unit=%",
        "--allow",
        ALICE,
        "--alert-interval",
        "0s",
        "--state-db",
        &db,
    ];
    let mut bot = world.start_bot("bot", &args).await;
    let mut alice = world.chat("alice", BOT).await;
    let set = alice.ask("alert temp above 25").await;
    assert!(
        set.starts_with("Alert set: I will tell you when temp goes above 25 °C"),
        "{set}"
    );
    world.publish("sensors/humidity", "40").await;
    alice
        .ask_until("get hum", |r| r.starts_with("40 %"), DEADLINE)
        .await;
    let mut marker = Marker::set(
        &mut alice,
        "hum",
        "sensors/humidity",
        false,
        ("⚠ hum above 50 %: ", " % on sensors/humidity"),
    )
    .await;
    for value in ["20", "22", "30"] {
        world.publish("sensors/temperature", value).await;
    }
    assert_eq!(
        marker.notices_before(&world, &mut alice).await,
        ["⚠ temp above 25 °C: 30 °C on sensors/temperature"]
    );
    let alerts = alice.ask("alerts").await;
    assert!(
        alerts.contains(
            "\ntemp above 25 °C (margin 0.5 °C): 1 topics, 1 past it and waiting to re-arm"
        ),
        "{alerts}"
    );

    world.stop_bot(&mut bot).await;
    let bot = world.start_bot("bot", &args).await;
    assert!(
        bot.log()
            .contains("restored history and alerts from the state database"),
        "{}",
        bot.log()
    );

    // Nothing is retained at the broker: what the bot knows comes from the file.
    let reading = alice.ask("get temp").await;
    assert!(
        reading.starts_with("30 °C (sensors/temperature, "),
        "{reading}"
    );
    let stats = alice.ask("stats temp").await;
    assert!(
        stats.starts_with("temp (sensors/temperature), last 1 h: min 20 °C, max 30 °C, avg 24.00 °C, 3 readings\n"),
        "{stats}"
    );
    assert_eq!(alice.ask("alerts").await, alerts);

    // It fired before the restart: still past the threshold is no new crossing.
    world.publish("sensors/temperature", "31").await;
    assert_eq!(
        marker.notices_before(&world, &mut alice).await,
        Vec::<String>::new()
    );
    // Re-armed below 24.5 °C, it fires again.
    for value in ["20", "26"] {
        world.publish("sensors/temperature", value).await;
    }
    assert_eq!(
        marker.notices_before(&world, &mut alice).await,
        ["⚠ temp above 25 °C: 26 °C on sensors/temperature"]
    );
}

/// An alert on a sensor that has sent nothing yet watches it for silence ("and if it sends
/// nothing for …"); with `--state-db`, a restart must not end that watch.
///
/// Fails at present: `Bot::alert_set` writes the state of the topics that have a reading only,
/// so the watch `Alerts::set` starts for a single topic without one is not in the database,
/// and after the restart the alert covers no topic ("0 topics") and never reports the silence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_on_a_sensor_that_never_reported_still_watches_for_silence_after_a_restart() {
    let world = World::start(&["bot", "alice"]).await;
    let db = world.path("state.db").to_string_lossy().into_owned();
    let args = [
        TEMP[0],
        TEMP[1],
        "--allow",
        ALICE,
        "--stale-after",
        "3s",
        "--state-db",
        &db,
    ];
    let mut bot = world.start_bot("bot", &args).await;
    let mut alice = world.chat("alice", BOT).await;
    let set = alice.ask("alert temp above 25").await;
    assert!(set.ends_with(" and if it sends nothing for 3 s."), "{set}");
    let alerts = alice.ask("alerts").await;
    assert_eq!(
        alerts,
        "Your alerts (1):\ntemp above 25 °C (margin 0.5 °C): 1 topics, 0 past it and waiting to \
         re-arm"
    );

    world.stop_bot(&mut bot).await;
    let _bot = world.start_bot("bot", &args).await;
    assert_eq!(alice.ask("alerts").await, alerts);
    let silent = alice
        .next_notice(DEADLINE)
        .await
        .expect("a message about the silence");
    assert!(
        silent.starts_with("⚠ sensors/temperature has sent nothing for "),
        "{silent}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_shows_the_default_reading_at_most_once_per_presence_interval() {
    let world = World::start(&["bot", "alice"]).await;
    let _bot = world
        .start_bot(
            "bot",
            &[
                TEMP[0],
                TEMP[1],
                "--allow",
                ALICE,
                "--presence-interval",
                "1s",
            ],
        )
        .await;
    let status = |value: &str| format!("temp: {value} °C · send \"help\" for commands");
    let mut alice = world.chat("alice", BOT).await;
    world.publish("sensors/temperature", "20.5").await;
    alice
        .ask_until("get temp", |r| r.starts_with("20.5 °C"), DEADLINE)
        .await;

    // Alice asks to see the bot's presence; the bot approves, and the server passes on its
    // current presence, then every update.
    let bot: BareJid = BOT.parse().expect("bot JID");
    alice.send_stanza(Presence::subscribe().with_to(bot)).await;
    let end = Instant::now() + DEADLINE;
    let mut approved = false;
    loop {
        let presence = alice
            .next_presence_until(end)
            .await
            .unwrap_or_else(|| panic!("no presence showing 20.5 °C within {DEADLINE:?}"));
        approved |= presence.type_ == PresenceType::Subscribed;
        if presence.type_ == PresenceType::None && presence.status == Some(status("20.5")) {
            break;
        }
    }
    assert!(approved, "the bot's presence came without its approval");

    // 20 readings in a burst: a presence update per second at most, ending on the last value.
    let burst: Vec<(&str, String)> = (21..=40)
        .map(|v| ("sensors/temperature", v.to_string()))
        .collect();
    mqtt::publish_many(world.mqtt_port, &burst).await;
    let window = Instant::now() + Duration::from_millis(2500);
    let mut statuses = Vec::new();
    while let Some(presence) = alice.next_presence_until(window).await {
        assert_eq!(presence.type_, PresenceType::None, "{presence:?}");
        statuses.push(presence.status.unwrap_or_default());
    }
    assert!(
        (1..=3).contains(&statuses.len()),
        "{} presence updates in 2.5 s: {statuses:?}",
        statuses.len()
    );
    assert_eq!(statuses.last(), Some(&status("40")), "{statuses:?}");
}
