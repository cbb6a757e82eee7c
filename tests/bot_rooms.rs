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
    let to = Jid::from_str(&format!("{ROOM}/{nick}")).unwrap();
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
    let room = Jid::from_str(ROOM).unwrap();
    client
        .send(
            Message::new_with_type(MessageType::Groupchat, Some(room))
                .with_body(Default::default(), text.into()),
        )
        .await;
}

/// The next message of type `kind` with a body from the bot's room JID.
async fn next_from_bot(client: &mut ChatClient, kind: MessageType) -> String {
    let bot = Jid::from_str(&format!("{ROOM}/bot")).unwrap();
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
    ChatClient::login(
        "alice@localhost",
        "alice-secret",
        prosody.port,
        &prosody.ca_file,
    )
    .await
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

    let args = [
        "bridge",
        "--mqtt-port",
        &mosquitto.port.to_string(),
        "--jid",
        "bot@localhost",
        "--password-file",
        &password_file(dir.path(), "bot.pw", "bot-secret"),
        "--xmpp-server",
        &format!("127.0.0.1:{}", prosody.port),
        "--xmpp-ca",
        &prosody.ca_file.to_string_lossy(),
        "--unit",
        "°C",
        "--room",
        ROOM,
        // Prosody shows real JIDs in this room, so the allow list decides by alice's.
        "--allow",
        "alice@localhost",
    ]
    .map(String::from);
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
