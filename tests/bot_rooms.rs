//! The bot in a multi-user chat room (XEP-0045) on a real server: Prosody's MUC component,
//! with mosquitto as the broker. A person joins the room with a plain client, addresses the bot
//! there and through its room JID, and the bot answers only what is addressed to it, and joins
//! again after the server restarts.
//!
//! Prosody and mosquitto are Debian packages: without them the test is skipped, or fails with
//! CI=true.

mod support;

use std::str::FromStr;
use std::time::{Duration, Instant};

use support::bridge::InProcessBridge;
use support::chat::{body, ChatClient};
use support::files::password_file;
use support::mqtt::publish;
use support::peers::{Mosquitto, Prosody, PROSODY_MUC};
use tokio_xmpp::jid::Jid;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::message::{Message, MessageType};
use tokio_xmpp::parsers::presence::Presence;
use tokio_xmpp::Stanza;

const ROOM: &str = "lab@conference.localhost";
const MUC: &str = "http://jabber.org/protocol/muc";
const MUC_USER: &str = "http://jabber.org/protocol/muc#user";
const STEP: Duration = Duration::from_secs(15);

/// Joins `ROOM` as `nick` (XEP-0045 §7.2) and waits for the room's self-presence (status 110).
async fn join(client: &mut ChatClient, nick: &str) {
    join_room(client, ROOM, nick).await;
}

/// Joins `room` as `nick` and waits for the self-presence.
async fn join_room(client: &mut ChatClient, room: &str, nick: &str) {
    let to = Jid::from_str(&format!("{room}/{nick}")).unwrap();
    let presence = Presence::available()
        .with_to(to.clone())
        .with_payloads(vec![Element::builder("x", MUC).build()]);
    client.send_stanza(presence).await;
    let end = Instant::now() + STEP;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match client.next_stanza(left).await {
            Some(Stanza::Presence(p)) if p.from.as_ref() == Some(&to) => {
                let own = p.payloads.iter().any(|x| {
                    x.is("x", MUC_USER)
                        && x.children()
                            .any(|s| s.is("status", MUC_USER) && s.attr("code") == Some("110"))
                });
                assert!(own, "joining {to}: {:?}", String::from(&Element::from(p)));
                return;
            }
            Some(_) => {}
            None => panic!("no self-presence from {to} within {STEP:?}"),
        }
    }
}

/// Says `text` in the room.
async fn say(client: &mut ChatClient, text: &str) {
    say_in(client, ROOM, text).await;
}

/// Says `text` in `room`.
async fn say_in(client: &mut ChatClient, room: &str, text: &str) {
    let room = Jid::from_str(room).unwrap();
    client
        .send(
            Message::new_with_type(MessageType::Groupchat, Some(room))
                .with_body(Default::default(), text.into()),
        )
        .await;
}

/// The next message of type `kind` with a body from the bot's room JID.
async fn next_from_bot(client: &mut ChatClient, kind: MessageType) -> String {
    next_from(client, &format!("{ROOM}/bot"), kind).await
}

/// The next message of type `kind` with a body from `from` (a room JID).
async fn next_from(client: &mut ChatClient, from: &str, kind: MessageType) -> String {
    let bot = Jid::from_str(from).unwrap();
    let end = Instant::now() + STEP;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match client.next_stanza(left).await {
            Some(Stanza::Message(m))
                if m.from.as_ref() == Some(&bot) && m.type_ == kind && !m.bodies.is_empty() =>
            {
                return body(&m);
            }
            Some(_) => {}
            None => panic!("no {kind:?} message from {bot} within {STEP:?}"),
        }
    }
}

async fn alice_login(prosody: &Prosody) -> ChatClient {
    login(prosody, "alice").await
}

/// Logs `user` in with the password `USER-secret`.
async fn login(prosody: &Prosody, user: &str) -> ChatClient {
    ChatClient::login(
        &format!("{user}@localhost"),
        &format!("{user}-secret"),
        prosody.port,
        &prosody.ca_file,
    )
    .await
}

/// The bridge's flags for this Prosody and mosquitto, plus `extra`.
fn bot_args(
    prosody: &Prosody,
    mqtt_port: u16,
    dir: &std::path::Path,
    extra: &[&str],
) -> Vec<String> {
    let mut args: Vec<String> = [
        "bridge",
        "--mqtt-port",
        &mqtt_port.to_string(),
        "--jid",
        "bot@localhost",
        "--password-file",
        &password_file(dir, "bot.pw", "bot-secret"),
        "--xmpp-server",
        &format!("127.0.0.1:{}", prosody.port),
        "--xmpp-ca",
        &prosody.ca_file.to_string_lossy(),
        "--unit",
        "°C",
    ]
    .map(String::from)
    .to_vec();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_when_addressed_in_a_prosody_room_and_rejoins_after_a_restart() {
    let Some(mut prosody) = Prosody::start_with(PROSODY_MUC) else {
        return;
    };
    let Some(mosquitto) = Mosquitto::start() else {
        return;
    };
    prosody.register("bot", "bot-secret");
    prosody.register("alice", "alice-secret");
    publish(mosquitto.port, "sensors/temperature", b"21.5", true).await;
    let dir = tempfile::tempdir().unwrap();

    // Alice is in the room first, and asks before the bot is there: that is history, which the
    // bot must not answer when it joins.
    let mut alice = alice_login(&prosody).await;
    join(&mut alice, "alice").await;
    say(&mut alice, "bot: help").await;

    let args = bot_args(
        &prosody,
        mosquitto.port,
        dir.path(),
        // Prosody shows real JIDs in this room, so the allow list decides by alice's.
        &["--room", ROOM, "--allow", "alice@localhost"],
    );
    let bot = InProcessBridge::start(&args).await;
    bot.wait_log("joined room", 1, STEP).await;

    // Chatter not addressed to the bot (which would get the command list), then a question that
    // is: the first thing the bot says in the room is the answer to the question, prefixed
    // with the asker's nick.
    say(&mut alice, "list").await;
    say(&mut alice, "Bot: temperature?").await;
    let answer = next_from_bot(&mut alice, MessageType::Groupchat).await;
    assert!(
        answer.starts_with("alice: 21.5 °C (sensors/temperature, "),
        "{answer}"
    );
    // @nick anywhere works too.
    say(&mut alice, "what does @bot say about the temperature?").await;
    let answer = next_from_bot(&mut alice, MessageType::Groupchat).await;
    assert!(answer.starts_with("alice: 21.5 °C"), "{answer}");

    // A private message through the bot's room JID is answered privately.
    let bot_in_room = Jid::from_str(&format!("{ROOM}/bot")).unwrap();
    alice
        .send(Message::chat(Some(bot_in_room)).with_body(Default::default(), "list".into()))
        .await;
    let private = next_from_bot(&mut alice, MessageType::Chat).await;
    assert!(private.contains("temperature"), "{private}");

    // The server restarts: the bot reconnects and joins the room again by itself.
    prosody.restart();
    bot.wait_online(2, Duration::from_secs(60)).await;
    bot.wait_log("joined room", 2, STEP).await;
    let mut alice = alice_login(&prosody).await;
    join(&mut alice, "alice").await;
    say(&mut alice, "bot, temperature?").await;
    let answer = next_from_bot(&mut alice, MessageType::Groupchat).await;
    assert!(answer.starts_with("alice: 21.5 °C"), "{answer}");
    assert_eq!(
        bot.log().matches("could not join room").count(),
        0,
        "{}",
        bot.log()
    );
}

/// A second MUC service whose rooms hide real JIDs from everyone but moderators.
const PROSODY_ANONYMOUS_MUC: &str = r#"
Component "anon.localhost" "muc"
    muc_room_locking = false
    muc_room_default_public_jids = false
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takes_another_nick_when_its_own_is_taken_and_needs_room_allow_where_jids_are_hidden() {
    let Some(prosody) = Prosody::start_with(&format!("{PROSODY_MUC}{PROSODY_ANONYMOUS_MUC}"))
    else {
        return;
    };
    let Some(mosquitto) = Mosquitto::start() else {
        return;
    };
    for user in ["bot", "alice", "carol"] {
        prosody.register(user, &format!("{user}-secret"));
    }
    publish(mosquitto.port, "sensors/temperature", b"21.5", true).await;
    let dir = tempfile::tempdir().unwrap();

    // Carol already uses the nick "bot" in the lab; alice is in the lab and in two anonymous
    // rooms, where she is the owner, so the bot (a plain participant) never sees her real JID.
    let mut carol = login(&prosody, "carol").await;
    join(&mut carol, "bot").await;
    let mut alice = alice_login(&prosody).await;
    join(&mut alice, "alice").await;
    let (closed, open) = ("class@anon.localhost", "open@anon.localhost");
    join_room(&mut alice, closed, "alice").await;
    join_room(&mut alice, open, "alice").await;

    let rooms = format!("{ROOM},{closed},{open}");
    let bot = InProcessBridge::start(&bot_args(
        &prosody,
        mosquitto.port,
        dir.path(),
        &[
            "--room",
            &rooms,
            "--allow",
            "alice@localhost",
            "--room-allow",
            open,
        ],
    ))
    .await;
    bot.wait_log("room nick in use", 1, STEP).await;
    bot.wait_log("joined room", 3, STEP).await;

    // In the lab the bot is "bot-2", and answers to that name only (not to carol's).
    say(&mut alice, "bot: help").await;
    say(&mut alice, "bot-2: temperature?").await;
    let lab = format!("{ROOM}/bot-2");
    let answer = next_from(&mut alice, &lab, MessageType::Groupchat).await;
    assert!(answer.starts_with("alice: 21.5 °C"), "{answer}");

    // Where alice's JID is hidden, her place on the allow list cannot count: refused once...
    say_in(&mut alice, closed, "bot: temperature?").await;
    let refusal = next_from(&mut alice, &format!("{closed}/bot"), MessageType::Groupchat).await;
    assert!(
        refusal.starts_with("alice: Sorry, I only answer"),
        "{refusal}"
    );
    // ...while a --room-allow room lets everyone read, but not set alerts.
    say_in(&mut alice, open, "bot: temperature?").await;
    let from_open = format!("{open}/bot");
    let answer = next_from(&mut alice, &from_open, MessageType::Groupchat).await;
    assert!(answer.starts_with("alice: 21.5 °C"), "{answer}");
    say_in(&mut alice, open, "bot: alert temperature above 30").await;
    let alert = next_from(&mut alice, &from_open, MessageType::Groupchat).await;
    assert!(
        alert.contains("only for the contacts on my allow list"),
        "{alert}"
    );
    drop(carol);
}
