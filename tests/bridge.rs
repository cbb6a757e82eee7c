//! The bridge end to end, every scenario twice: `<name>::bundled` against our own embedded MQTT
//! broker and bundled XMPP server (needs nothing but the crate), and `<name>::prosody` against
//! the real peers users run, mosquitto and Prosody (Debian packages), each started on free
//! loopback ports with private configuration for every test.
//!
//! The bridge runs in the test's process (see `support::bridge`), except in the scenarios about
//! what the binary itself does: its exit status and the error a user reads on a refused login,
//! and its answer to SIGTERM.
//!
//! Without the Debian packages the `prosody` half skips, unless CI=true, where a missing peer
//! fails it. (The refused-MQTT-login scenario needs a broker with accounts, so it uses
//! mosquitto in both halves.)

mod support;

use std::time::Duration;

use support::bridge::InProcessBridge;
use support::chat::{body, ChatClient};
use support::files::password_file;
use support::mqtt::publish;
use support::peers::Mosquitto;
use support::process::BinaryProcess;
use support::world::{Kind, World, Xmpp, ALICE, BOT, STARTUP};
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::parsers::message::{Message, MessageType, Thread};

/// Runs each named scenario against the bundled server and against Prosody.
macro_rules! against_both_servers {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn bundled() {
                super::$scenario(super::Kind::Bundled).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn prosody() {
                super::$scenario(super::Kind::Peers).await
            }
        }
    )*};
}

against_both_servers!(
    answers_a_published_value_to_another_account,
    answers_a_retained_value_right_after_start,
    answers_new_values_after_a_broker_restart,
    reads_json_payloads_and_keeps_the_last_value_on_garbage,
    a_wrong_password_is_a_clear_error_not_an_endless_retry,
    an_unknown_account_is_a_clear_error,
    never_answers_error_groupchat_headline_or_bodyless_messages,
    sigterm_stops_cleanly_within_two_seconds,
    a_refused_mqtt_login_is_a_clear_error,
    answers_again_after_an_xmpp_server_restart,
    a_pattern_alert_reaches_its_contact_once_per_crossing,
);

async fn answers_a_published_value_to_another_account(kind: Kind) {
    let Some(world) = World::start(kind).await else {
        return;
    };
    let bot = world.start_bot(&[]).await;
    let mut alice = world.alice().await;

    // Before any reading, the bot says so plainly.
    let first = alice.ask(BOT, "temperature?").await;
    assert!(
        first.starts_with("No reading from sensors/temperature yet"),
        "{first}"
    );

    publish(world.mqtt.port(), "sensors/temperature", b"23.5", false).await;
    let reply = alice
        .ask_until(BOT, |r| r.starts_with("23.5 °C"), Duration::from_secs(10))
        .await;
    assert!(
        reply.starts_with("23.5 °C (sensors/temperature, ") && reply.ends_with(" s ago)"),
        "{reply}"
    );
    drop(bot);
}

async fn answers_a_retained_value_right_after_start(kind: Kind) {
    let Some(world) = World::start(kind).await else {
        return;
    };
    publish(world.mqtt.port(), "sensors/temperature", b"19.25", true).await;
    let _bot = world.start_bot(&["--precision", "1"]).await;
    let mut alice = world.alice().await;
    let reply = alice
        .ask_until(
            BOT,
            |r| !r.starts_with("No reading"),
            Duration::from_secs(10),
        )
        .await;
    // 19.25 shown with one decimal; the retained value's age is only a lower bound.
    assert!(
        reply.starts_with("19.2 °C (sensors/temperature, retained by the broker, at least "),
        "{reply}"
    );
}

async fn answers_new_values_after_a_broker_restart(kind: Kind) {
    let Some(mut world) = World::start(kind).await else {
        return;
    };
    let bot = world.start_bot(&[]).await;
    let mut alice = world.alice().await;
    publish(world.mqtt.port(), "sensors/temperature", b"20", false).await;
    alice
        .ask_until(BOT, |r| r.starts_with("20 °C"), Duration::from_secs(10))
        .await;

    for round in 1..=2 {
        world.mqtt.stop().await;
        world.mqtt.restart().await;
        // The bridge reconnects with backoff and subscribes again on the new session.
        bot.wait_subscribed(1 + round, Duration::from_secs(30))
            .await;
        let value = format!("2{round}.5");
        publish(
            world.mqtt.port(),
            "sensors/temperature",
            value.as_bytes(),
            false,
        )
        .await;
        let reply = alice
            .ask_until(BOT, |r| r.starts_with(&value), Duration::from_secs(10))
            .await;
        assert!(reply.contains("s ago)"), "{reply}");
    }
    assert!(
        bot.log().contains("MQTT connection failed"),
        "{}",
        bot.log()
    );
}

async fn reads_json_payloads_and_keeps_the_last_value_on_garbage(kind: Kind) {
    let Some(world) = World::start(kind).await else {
        return;
    };
    let bot = world.start_bot(&["--json-pointer", "/temperature"]).await;
    let mut alice = world.alice().await;
    publish(
        world.mqtt.port(),
        "sensors/temperature",
        br#"{"temperature": 24.5, "humidity": 40}"#,
        false,
    )
    .await;
    alice
        .ask_until(BOT, |r| r.starts_with("24.5 °C"), Duration::from_secs(10))
        .await;

    // Garbage of every kind: each is logged (rate-limited) and counted, none replaces 24.5.
    for garbage in [
        &b"not json"[..],
        br#"{"temperature": "warm"}"#,
        br#"{"humidity": 41}"#,
        b"\xff\xfe",
        b"",
        &vec![b' '; 70_000],
    ] {
        publish(world.mqtt.port(), "sensors/temperature", garbage, false).await;
    }
    // A valid reading after the garbage proves the bridge processed all of it, in order.
    publish(
        world.mqtt.port(),
        "sensors/temperature",
        br#"{"temperature": 25}"#,
        false,
    )
    .await;
    alice
        .ask_until(BOT, |r| r.starts_with("25 °C"), Duration::from_secs(10))
        .await;
    let log = bot.log();
    assert_eq!(
        log.matches("ignored unreadable payload").count(),
        1,
        "{log}"
    );
    assert!(log.contains("not valid JSON"), "{log}");
}

async fn a_wrong_password_is_a_clear_error_not_an_endless_retry(kind: Kind) {
    let Some(world) = World::start(kind).await else {
        return;
    };
    // Through the binary: the exit status and the line a user reads are what is tested.
    let args = world.bridge_args("not-the-password", &[]);
    let mut bot = BinaryProcess::spawn(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let status = bot.wait_exit(Duration::from_secs(30));
    assert!(!status.success(), "{status:?}");
    let log = bot.log();
    assert!(
        log.contains("the XMPP server refused the login for bot@localhost (not-authorized)"),
        "{log}"
    );
    assert!(
        !log.contains("not-the-password"),
        "password leaked into the log:\n{log}"
    );
}

async fn an_unknown_account_is_a_clear_error(kind: Kind) {
    let Some(world) = World::start(kind).await else {
        return;
    };
    let mut args = world.bridge_args("whatever", &[]);
    let jid = args.iter().position(|a| a == BOT).expect("jid arg");
    args[jid] = "nobody@localhost".into();
    let mut bot = InProcessBridge::spawn(&args);
    let error = bot
        .wait_exit(Duration::from_secs(30))
        .await
        .expect_err("the bridge gives up on a refused login");
    assert!(
        error
            .to_string()
            .contains("refused the login for nobody@localhost"),
        "{error}"
    );
}

async fn never_answers_error_groupchat_headline_or_bodyless_messages(kind: Kind) {
    let Some(world) = World::start(kind).await else {
        return;
    };
    let _bot = world.start_bot(&[]).await;
    let mut alice = world.alice().await;
    let bot_jid: Jid = BOT.parse().unwrap();
    let bot_bare: BareJid = bot_jid.to_bare();

    let with_thread = |type_: MessageType, thread: &str, body: Option<&str>| {
        let mut m = Message::new_with_type(type_, Some(bot_jid.clone()));
        if let Some(body) = body {
            m = m.with_body(Default::default(), body.into());
        }
        m.thread = Some(Thread {
            id: thread.into(),
            parent: None,
        });
        m
    };
    // Each of these must go unanswered...
    alice
        .send(with_thread(MessageType::Error, "error", Some("x")))
        .await;
    alice
        .send(with_thread(MessageType::Groupchat, "groupchat", Some("x")))
        .await;
    alice
        .send(with_thread(MessageType::Headline, "headline", Some("x")))
        .await;
    alice
        .send(with_thread(MessageType::Chat, "bodyless", None))
        .await;
    // ...so the first reply the bot sends is the one to this question, in its thread.
    alice
        .send(with_thread(MessageType::Chat, "question", Some("temp?")))
        .await;
    let reply = alice
        .next_message_from(&bot_bare, Duration::from_secs(10))
        .await
        .expect("a reply to the chat question");
    assert_eq!(
        reply.thread.as_ref().map(|t| t.id.as_str()),
        Some("question"),
        "{}",
        body(&reply)
    );
}

async fn sigterm_stops_cleanly_within_two_seconds(kind: Kind) {
    let Some(world) = World::start(kind).await else {
        return;
    };
    // Through the binary: SIGTERM is the binary's own business.
    let args = world.bridge_args("bot-secret", &[]);
    let mut bot = BinaryProcess::spawn(&args.iter().map(String::as_str).collect::<Vec<_>>());
    bot.wait_log(support::world::SUBSCRIBED, 1, STARTUP);
    bot.wait_log(support::world::ONLINE, 1, STARTUP);
    let (status, took) = bot.terminate(Duration::from_secs(5));
    assert!(status.success(), "{status:?}\n{}", bot.log());
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let log = bot.log();
    assert!(log.contains("disconnected from the MQTT broker"), "{log}");
    assert!(log.contains("disconnected from the XMPP server"), "{log}");
}

async fn a_refused_mqtt_login_is_a_clear_error(kind: Kind) {
    let Some(mqtt) = Mosquitto::start_with_user("sensor-reader", "mqtt-secret") else {
        return;
    };
    // The XMPP server comes with the accounts `bot` and `alice`.
    let Some(xmpp) = Xmpp::start(kind).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let xmpp_server = format!("127.0.0.1:{}", xmpp.port());
    let ca = xmpp.ca_file().to_string_lossy().into_owned();
    let bot_pw = password_file(dir.path(), "bot.pw", "bot-secret");
    let mqtt_port = mqtt.port.to_string();
    let run = |mqtt_password: &str| {
        let mqtt_pw = password_file(dir.path(), "mqtt.pw", mqtt_password);
        InProcessBridge::spawn(&[
            "bridge",
            "--mqtt-port",
            &mqtt_port,
            "--mqtt-username",
            "sensor-reader",
            "--mqtt-password-file",
            &mqtt_pw,
            "--jid",
            BOT,
            "--password-file",
            &bot_pw,
            "--xmpp-server",
            &xmpp_server,
            "--xmpp-ca",
            &ca,
        ])
    };
    let mut refused = run("wrong-mqtt-pw-1234");
    let error = refused
        .wait_exit(Duration::from_secs(30))
        .await
        .expect_err("the bridge gives up on a refused MQTT login")
        .to_string();
    assert!(
        error.contains("the MQTT broker at 127.0.0.1:")
            && error.contains("refused the login as sensor-reader"),
        "{error}"
    );
    let log = refused.log();
    for text in [&error, &log] {
        assert!(
            !text.contains("wrong-mqtt-pw-1234"),
            "password leaked:\n{text}"
        );
    }

    // The right password subscribes.
    let accepted = run("mqtt-secret");
    accepted.wait_subscribed(1, STARTUP).await;
}

async fn answers_again_after_an_xmpp_server_restart(kind: Kind) {
    let Some(mut world) = World::start(kind).await else {
        return;
    };
    let bot = world.start_bot(&[]).await;
    publish(world.mqtt.port(), "sensors/temperature", b"18.5", true).await;
    {
        let mut alice = world.alice().await;
        alice
            .ask_until(BOT, |r| r.starts_with("18.5 °C"), Duration::from_secs(10))
            .await;
    }
    world.xmpp.stop().await;
    bot.wait_log(
        "lost the connection to the XMPP server",
        1,
        Duration::from_secs(10),
    )
    .await;
    world.xmpp.restart().await;
    // The bot retries every 1.5 s at most: it is back well within 30 s, and announces
    // itself again with available presence.
    bot.wait_online(2, Duration::from_secs(30)).await;
    let mut alice = world.alice().await;
    let reply = alice.ask(BOT, "still there?").await;
    assert!(reply.starts_with("18.5 °C"), "{reply}");
}

async fn a_pattern_alert_reaches_its_contact_once_per_crossing(kind: Kind) {
    let Some(world) = World::start(kind).await else {
        return;
    };
    let _bot = world
        .start_bot(&[
            "--sensor",
            "name=vib,topic=building/+/VIBR,unit=mm/s",
            "--allow",
            ALICE,
            "--alert-interval",
            "0s",
        ])
        .await;
    let mut alice = world.alice().await;
    let set = alice.ask(BOT, "alert building/+/VIBR above 5").await;
    assert!(set.starts_with("Alert set: "), "{set}");

    let port = world.mqtt.port();
    publish(port, "building/1/VIBR", b"6", false).await;
    assert_eq!(
        next_from_bot(&mut alice).await,
        "⚠ building/+/VIBR above 5 mm/s: 6 mm/s on building/1/VIBR"
    );
    // Still above: no message. Back below the margin, then above again: one message. Messages
    // arrive in order, so the next one proves that 7 gave none.
    for value in [b"7".as_slice(), b"1", b"8"] {
        publish(port, "building/1/VIBR", value, false).await;
    }
    assert_eq!(
        next_from_bot(&mut alice).await,
        "⚠ building/+/VIBR above 5 mm/s: 8 mm/s on building/1/VIBR"
    );
    // Another topic under the pattern has its own state.
    publish(port, "building/2/VIBR", b"5.5", false).await;
    assert_eq!(
        next_from_bot(&mut alice).await,
        "⚠ building/+/VIBR above 5 mm/s: 5.5 mm/s on building/2/VIBR"
    );
    let listing = alice.ask(BOT, "get building/+/VIBR").await;
    assert!(
        listing.starts_with("building/+/VIBR: 2 topics\nbuilding/1/VIBR: 8 mm/s ("),
        "no other alert came before the listing: {listing}"
    );
}

/// The body of the next message from the bot.
async fn next_from_bot(client: &mut ChatClient) -> String {
    let bot = BareJid::new(BOT).expect("bot JID");
    let message = client
        .next_message_from(&bot, Duration::from_secs(10))
        .await
        .expect("a message from the bot within 10 s");
    body(&message)
}
