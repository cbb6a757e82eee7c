//! The bot in multi-user chat rooms (XEP-0045) on real servers: the bundled server's room
//! service, Prosody's MUC component and ejabberd's mod_muc, each with a broker (the embedded
//! one with the bundled server, mosquitto with the others). A person joins the room with a plain
//! client, addresses the bot there and through its room JID, sets an alert for the room, kicks
//! the bot where the server can, and restarts the server; the bot answers only what is
//! addressed to it, never the history, and is back in the room by itself each time.
//!
//! Prosody, ejabberd and mosquitto are Debian packages: without them those tests are skipped,
//! or fail with CI=true.

mod support;

use std::str::FromStr;
use std::time::{Duration, Instant};

use support::bridge::InProcessBridge;
use support::chat::{body, ChatClient};
use support::ejabberd::{Ejabberd, EJABBERD_MUC};
use support::files::password_file;
use support::mqtt::publish;
use support::peers::{Prosody, PROSODY_MUC};
use support::server::InProcessServer;
use support::world::{Broker, Kind};
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::{Message, MessageType};
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::Stanza;

const ROOM: &str = "lab@conference.localhost";
const MUC: &str = "http://jabber.org/protocol/muc";
const MUC_USER: &str = "http://jabber.org/protocol/muc#user";
const MUC_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
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
                assert!(
                    status_codes(&p).contains(&"110".to_string()),
                    "joining {to}: {:?}",
                    String::from(&Element::from(p))
                );
                return;
            }
            Some(_) => {}
            None => panic!("no self-presence from {to} within {STEP:?}"),
        }
    }
}

/// The muc#user status codes of a presence.
fn status_codes(p: &Presence) -> Vec<String> {
    p.payloads
        .iter()
        .filter(|x| x.is("x", MUC_USER))
        .flat_map(|x| x.children().filter(|s| s.is("status", MUC_USER)))
        .filter_map(|s| s.attr("code").map(str::to_string))
        .collect()
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

/// Waits for a presence from `from` (a room JID) that `wanted` accepts, and returns it.
async fn presence_from(
    client: &mut ChatClient,
    from: &str,
    wanted: impl Fn(&Presence) -> bool,
) -> Presence {
    let from = Jid::from_str(from).unwrap();
    let end = Instant::now() + STEP;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match client.next_stanza(left).await {
            Some(Stanza::Presence(p)) if p.from.as_ref() == Some(&from) && wanted(&p) => return p,
            Some(_) => {}
            None => panic!("no such presence from {from} within {STEP:?}"),
        }
    }
}

fn status_text(p: &Presence) -> String {
    p.statuses.values().next().cloned().unwrap_or_default()
}

/// Kicks `nick` out of `ROOM` (§8.2: a moderator sets its role to none).
async fn kick(client: &mut ChatClient, nick: &str) {
    let item = Element::builder("item", MUC_ADMIN)
        .attr(tokio_xmpp::minidom::rxml::xml_ncname!("nick").into(), nick)
        .attr(
            tokio_xmpp::minidom::rxml::xml_ncname!("role").into(),
            "none",
        )
        .append(
            Element::builder("reason", MUC_ADMIN)
                .append("testing")
                .build(),
        )
        .build();
    let query = Element::builder("query", MUC_ADMIN).append(item).build();
    let iq = Iq::Set {
        from: None,
        to: Some(Jid::from_str(ROOM).unwrap()),
        id: "kick-1".into(),
        payload: query,
    };
    client.send_stanza(iq).await;
    let end = Instant::now() + STEP;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match client.next_stanza(left).await {
            Some(Stanza::Iq(Iq::Result { id, .. })) if id == "kick-1" => return,
            Some(Stanza::Iq(iq @ Iq::Error { .. })) if iq.id() == "kick-1" => {
                panic!(
                    "the kick was refused: {:?}",
                    String::from(&Element::from(iq))
                )
            }
            Some(_) => {}
            None => panic!("no answer to the kick within {STEP:?}"),
        }
    }
}

/// The XMPP server of a room scenario.
#[allow(clippy::large_enum_variant)]
enum Server {
    Bundled(InProcessServer),
    Prosody(Prosody),
    Ejabberd(Ejabberd),
}

/// Which XMPP server a room scenario runs against, and what it can do.
#[derive(Debug, Clone, Copy)]
enum ServerKind {
    /// The bundled server's room service.
    Bundled,
    /// Prosody 0.12's MUC component.
    Prosody,
    /// ejabberd 23.01's mod_muc.
    Ejabberd,
}

impl Server {
    /// The server with its room service, and its broker. None = skipped.
    async fn start(kind: ServerKind) -> Option<(Server, Broker)> {
        let (server, broker) = match kind {
            ServerKind::Bundled => (
                Server::Bundled(InProcessServer::start().await),
                Broker::start(Kind::Bundled).await?,
            ),
            ServerKind::Prosody => (
                Server::Prosody(Prosody::start_with(PROSODY_MUC)?),
                Broker::start(Kind::Peers).await?,
            ),
            ServerKind::Ejabberd => (
                Server::Ejabberd(Ejabberd::start_with_modules(EJABBERD_MUC)?),
                Broker::start(Kind::Peers).await?,
            ),
        };
        Some((server, broker))
    }

    fn port(&self) -> u16 {
        match self {
            Server::Bundled(s) => s.port,
            Server::Prosody(s) => s.port,
            Server::Ejabberd(s) => s.port,
        }
    }

    fn ca_file(&self) -> &std::path::Path {
        match self {
            Server::Bundled(s) => &s.ca_file,
            Server::Prosody(s) => &s.ca_file,
            Server::Ejabberd(s) => &s.ca_file,
        }
    }

    fn register(&self, user: &str) {
        let password = format!("{user}-secret");
        match self {
            Server::Bundled(s) => s.add_user(user, &password),
            Server::Prosody(s) => s.register(user, &password),
            Server::Ejabberd(s) => s.register(user, &password),
        }
    }

    async fn restart(&mut self) {
        match self {
            Server::Bundled(s) => s.restart().await,
            Server::Prosody(s) => s.restart(),
            Server::Ejabberd(s) => s.restart(),
        }
    }

    async fn login(&self, user: &str) -> ChatClient {
        ChatClient::login(
            &format!("{user}@localhost"),
            &format!("{user}-secret"),
            self.port(),
            self.ca_file(),
        )
        .await
    }

    /// The bridge's flags for this server and `broker`, plus `extra`.
    fn bot_args(
        &self,
        broker: &Broker,
        dir: &std::path::Path,
        user: &str,
        extra: &[&str],
    ) -> Vec<String> {
        let mut args: Vec<String> = [
            "bridge",
            "--mqtt-port",
            &broker.port().to_string(),
            "--jid",
            &format!("{user}@localhost"),
            "--password-file",
            &password_file(dir, &format!("{user}.pw"), &format!("{user}-secret")),
            "--xmpp-server",
            &format!("127.0.0.1:{}", self.port()),
            "--xmpp-ca",
            &self.ca_file().to_string_lossy(),
            "--unit",
            "°C",
        ]
        .map(String::from)
        .to_vec();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }
}

/// The whole life of the bot in a room on one server: see the module documentation.
async fn the_bot_lives_in_a_room_on(kind: ServerKind) {
    let Some((mut server, broker)) = Server::start(kind).await else {
        return;
    };
    for user in ["bot", "alice"] {
        server.register(user);
    }
    publish(broker.port(), "sensors/temperature", b"21.5", true).await;
    let dir = tempfile::tempdir().unwrap();

    // Alice makes the room (she is its owner) and asks before the bot is there: that is
    // history, which the bot must not answer when it joins.
    let mut alice = server.login("alice").await;
    join(&mut alice, "alice").await;
    say(&mut alice, "bot: help").await;

    let args = server.bot_args(
        &broker,
        dir.path(),
        "bot",
        &[
            "--room",
            ROOM,
            // Every server here shows real JIDs, so the allow list decides by alice's.
            "--allow",
            "alice@localhost",
            "--room-ping-interval",
            "1s",
            "--presence-interval",
            "1s",
        ],
    );
    let bot = InProcessBridge::start(&args).await;
    bot.wait_log("joined room", 1, STEP).await;
    // The bot's presence in the room shows the default reading (once the broker has passed on
    // the retained one).
    presence_from(&mut alice, &format!("{ROOM}/bot"), |p| {
        p.type_ == PresenceType::None && status_text(p).contains("21.5 °C")
    })
    .await;

    // Chatter not addressed to the bot (which would get the command list), then a question
    // that is: the first thing the bot says in the room is the answer, with the asker's nick.
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
    // The server answers the bot's self-pings (XEP-0410): it knows it is still in.
    bot.wait_log("self-ping: still in the room", 1, STEP).await;

    // An alert set in the room is the room's: its crossing is posted there, for everyone.
    say(&mut alice, "bot: alert sensors/temperature above 25").await;
    let set = next_from_bot(&mut alice, MessageType::Groupchat).await;
    assert!(set.starts_with("alice: Alert set"), "{set}");
    publish(broker.port(), "sensors/temperature", b"26", false).await;
    // The alert, and the room presence following the reading within the presence interval,
    // in whichever order they come.
    let bot_jid = Jid::from_str(&format!("{ROOM}/bot")).unwrap();
    let (mut fired, mut shown) = (None, false);
    let end = Instant::now() + STEP;
    while fired.is_none() || !shown {
        let left = end.saturating_duration_since(Instant::now());
        match alice.next_stanza(left).await {
            Some(Stanza::Message(m))
                if m.from.as_ref() == Some(&bot_jid) && !m.bodies.is_empty() =>
            {
                fired = Some(body(&m));
            }
            Some(Stanza::Presence(p)) if p.from.as_ref() == Some(&bot_jid) => {
                shown |= status_text(&p).contains("26 °C");
            }
            Some(_) => {}
            None => panic!("alert {fired:?}, presence shown {shown} within {STEP:?}"),
        }
    }
    assert_eq!(
        fired.as_deref(),
        Some("⚠ sensors/temperature above 25 °C: 26 °C")
    );
    say(&mut alice, "bot: alerts").await;
    let listed = next_from_bot(&mut alice, MessageType::Groupchat).await;
    assert!(
        listed.contains("sensors/temperature above 25 °C"),
        "{listed}"
    );
    say(&mut alice, "bot: unalert").await;
    let removed = next_from_bot(&mut alice, MessageType::Groupchat).await;
    assert_eq!(removed, "alice: Removed 1 alert.");

    let mut joins = 1;
    // Kicked by the room's owner: a clear log line, and back in the room by itself.
    kick(&mut alice, "bot").await;
    bot.wait_log("kicked from the room", 1, STEP).await;
    joins += 1;
    bot.wait_log("joined room", joins, STEP).await;
    say(&mut alice, "bot: temperature?").await;
    let answer = next_from_bot(&mut alice, MessageType::Groupchat).await;
    assert!(answer.starts_with("alice: 26 °C"), "{answer}");

    // The server restarts: the bot reconnects and joins the room again by itself (making it
    // anew where rooms do not survive a restart).
    drop(alice);
    server.restart().await;
    bot.wait_online(2, Duration::from_secs(60)).await;
    joins += 1;
    bot.wait_log("joined room", joins, STEP).await;
    let mut alice = server.login("alice").await;
    join(&mut alice, "alice").await;
    say(&mut alice, "bot, temperature?").await;
    let answer = next_from_bot(&mut alice, MessageType::Groupchat).await;
    assert!(answer.starts_with("alice: 26 °C"), "{answer}");
    let log = bot.log();
    for never in [
        "could not join room",
        "refused its instant configuration",
        "not in the room any more",
    ] {
        assert_eq!(log.matches(never).count(), 0, "{never}:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bot_lives_in_a_room_on_the_bundled_server() {
    the_bot_lives_in_a_room_on(ServerKind::Bundled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bot_lives_in_a_room_on_prosody() {
    the_bot_lives_in_a_room_on(ServerKind::Prosody).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bot_lives_in_a_room_on_ejabberd() {
    the_bot_lives_in_a_room_on(ServerKind::Ejabberd).await;
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
    let Some(broker) = Broker::start(Kind::Peers).await else {
        return;
    };
    let prosody = Server::Prosody(prosody);
    for user in ["bot", "alice", "carol"] {
        prosody.register(user);
    }
    publish(broker.port(), "sensors/temperature", b"21.5", true).await;
    let dir = tempfile::tempdir().unwrap();

    // Carol already uses the nick "bot" in the lab; alice is in the lab and in two anonymous
    // rooms, where she is the owner, so the bot (a plain participant) never sees her real JID.
    let mut carol = prosody.login("carol").await;
    join(&mut carol, "bot").await;
    let mut alice = prosody.login("alice").await;
    join(&mut alice, "alice").await;
    let (closed, open) = ("class@anon.localhost", "open@anon.localhost");
    join_room(&mut alice, closed, "alice").await;
    join_room(&mut alice, open, "alice").await;

    let rooms = format!("{ROOM},{closed},{open}");
    let bot = InProcessBridge::start(&prosody.bot_args(
        &broker,
        dir.path(),
        "bot",
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

    // A mediated invitation (§7.8.2) from alice, who is on the allow list: Prosody passes it
    // on from the room with her real JID, and the bot joins.
    let meeting = "meeting@conference.localhost";
    join_room(&mut alice, meeting, "alice").await;
    let invite = Element::builder("x", MUC_USER)
        .append(
            Element::builder("invite", MUC_USER)
                .attr(
                    tokio_xmpp::minidom::rxml::xml_ncname!("to").into(),
                    "bot@localhost",
                )
                .build(),
        )
        .build();
    let mut message =
        Message::new_with_type(MessageType::Normal, Some(Jid::from_str(meeting).unwrap()));
    message.payloads.push(invite);
    alice.send(message).await;
    bot.wait_log("accepted an invitation", 1, STEP).await;
    bot.wait_log("joined room", 4, STEP).await;
    say_in(&mut alice, meeting, "bot: temperature?").await;
    let answer = next_from(
        &mut alice,
        &format!("{meeting}/bot"),
        MessageType::Groupchat,
    )
    .await;
    assert!(answer.starts_with("alice: 21.5 °C"), "{answer}");
    drop(carol);
}

/// A direct invitation (XEP-0249) from `client` to `to` for `room`.
async fn invite_directly(client: &mut ChatClient, to: &str, room: &str) {
    let x = Element::builder("x", "jabber:x:conference")
        .attr(tokio_xmpp::minidom::rxml::xml_ncname!("jid").into(), room)
        .build();
    let mut message = Message::new_with_type(MessageType::Normal, Some(Jid::from_str(to).unwrap()));
    message.payloads.push(x);
    client.send(message).await;
}

/// The next groupchat message with a body in `ROOM` from anyone but `except`: (nick, body).
async fn next_said(client: &mut ChatClient, except: &str) -> (String, String) {
    let room = BareJid::from_str(ROOM).unwrap();
    let end = Instant::now() + STEP;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match client.next_stanza(left).await {
            Some(Stanza::Message(m))
                if m.type_ == MessageType::Groupchat && !m.bodies.is_empty() =>
            {
                let Some(from) = m.from.clone() else { continue };
                let nick = from.resource().map(|r| r.to_string()).unwrap_or_default();
                if from.to_bare() == room && nick != except {
                    return (nick, body(&m));
                }
            }
            Some(_) => {}
            None => panic!("nothing said in {ROOM} within {STEP:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_bots_in_a_room_do_not_answer_each_other_and_invited_rooms_are_kept() {
    let Some((server, broker)) = Server::start(ServerKind::Bundled).await else {
        return;
    };
    for user in ["bot", "bot2", "alice", "eve"] {
        server.register(user);
    }
    publish(broker.port(), "sensors/temperature", b"21.5", true).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("bot-state.sqlite");
    let state = state.to_string_lossy();
    let mut alice = server.login("alice").await;
    join(&mut alice, "alice").await;
    let bot_args = server.bot_args(
        &broker,
        dir.path(),
        "bot",
        &[
            "--room",
            ROOM,
            "--allow",
            "alice@localhost",
            "--state-db",
            &state,
        ],
    );
    let mut bot = InProcessBridge::start(&bot_args).await;
    let bot2 = InProcessBridge::start(&server.bot_args(
        &broker,
        dir.path(),
        "bot2",
        &["--room", ROOM, "--allow", "alice@localhost"],
    ))
    .await;
    bot.wait_log("joined room", 1, STEP).await;
    bot2.wait_log("joined room", 1, STEP).await;

    // bot's answer names @bot2, so it addresses bot2; bot2's answer would address bot, and so
    // on forever. bot2 must recognise another mqtt2xmpp's answer and stay silent.
    // (alice's own message mentions @bot2 too, so bot2 answers her, in some order with bot.)
    say(&mut alice, "bot: get @bot2").await;
    let mut first = [
        next_said(&mut alice, "alice").await,
        next_said(&mut alice, "alice").await,
    ];
    first.sort();
    let [(nick, said), (nick2, said2)] = first;
    assert_eq!(nick, "bot", "{said}");
    assert!(said.starts_with("alice: I do not follow @bot2."), "{said}");
    assert_eq!(nick2, "bot2", "{said2}");
    assert!(said2.starts_with("alice: 21.5 °C"), "{said2}");
    // The room relays in order and each bot answers in order: had bot2 answered bot, that
    // answer would come before its answer to alice's next question.
    say(&mut alice, "bot2: temperature?").await;
    let (nick, said) = next_said(&mut alice, "alice").await;
    assert_eq!(
        (nick.as_str(), said.starts_with("alice: 21.5 °C")),
        ("bot2", true),
        "{said}"
    );
    say(&mut alice, "bot: temperature?").await;
    let (nick, said) = next_said(&mut alice, "alice").await;
    assert_eq!(
        (nick.as_str(), said.starts_with("alice: 21.5 °C")),
        ("bot", true),
        "{said}"
    );

    // A direct invitation (XEP-0249) from alice is accepted; one from eve, who is not on the
    // allow list, is not.
    let class = "class@conference.localhost";
    join_room(&mut alice, class, "alice").await;
    invite_directly(&mut alice, "bot@localhost", class).await;
    bot.wait_log("accepted an invitation", 1, STEP).await;
    let mut eve = server.login("eve").await;
    invite_directly(&mut eve, "bot@localhost", "eve@conference.localhost").await;
    bot.wait_log(
        "ignoring an invitation from a contact not on the allow list",
        1,
        STEP,
    )
    .await;
    say_in(&mut alice, class, "bot: temperature?").await;
    let answer = next_from(&mut alice, &format!("{class}/bot"), MessageType::Groupchat).await;
    assert!(answer.starts_with("alice: 21.5 °C"), "{answer}");

    // The bot restarts: it joins the room it was invited to again, from its state database.
    let (stopped, _) = bot.stop(STEP).await;
    assert!(stopped.is_ok(), "{stopped:?}");
    presence_from(&mut alice, &format!("{class}/bot"), |p| {
        p.type_ == PresenceType::Unavailable
    })
    .await;
    let bot = InProcessBridge::start(&bot_args).await;
    bot.wait_log("joined room", 2, STEP).await;
    say_in(&mut alice, class, "bot: temperature?").await;
    let answer = next_from(&mut alice, &format!("{class}/bot"), MessageType::Groupchat).await;
    assert!(answer.starts_with("alice: 21.5 °C"), "{answer}");
    assert!(
        !bot.log().contains("eve@conference.localhost"),
        "{}",
        bot.log()
    );
    drop(bot2);
}

/// `mqtt2xmpp up` with `extra` flags, on free ports.
#[cfg(feature = "embedded-broker")]
fn up(data_dir: &std::path::Path, extra: &[&str]) -> (support::process::BinaryProcess, u16) {
    let xmpp_port = support::peers::free_port();
    let (data, xmpp, mqtt) = (
        data_dir.to_string_lossy().into_owned(),
        xmpp_port.to_string(),
        support::peers::free_port().to_string(),
    );
    let mut args = vec![
        "up",
        "--data-dir",
        &data,
        "--xmpp-port",
        &xmpp,
        "--mqtt-port",
        &mqtt,
        "--xmpp-tls-port",
        "0",
        "--http-port",
        "0",
    ];
    args.extend(extra);
    (support::process::BinaryProcess::spawn(&args), xmpp_port)
}

#[cfg(feature = "embedded-broker")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_puts_the_bot_in_a_room_and_says_how_to_join_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut running, xmpp_port) = up(dir.path(), &[]);
    running.wait_log("joined room", 1, Duration::from_secs(30));
    let banner = running.log();
    assert!(
        banner.contains("/join sensors@conference.localhost"),
        "{banner}"
    );
    let password = std::fs::read_to_string(dir.path().join("you.password")).unwrap();
    let ca = dir.path().join("localhost.crt");
    let mut you = ChatClient::login("you@localhost", password.trim(), xmpp_port, &ca).await;
    let sensors = "sensors@conference.localhost";
    join_room(&mut you, sensors, "you").await;
    // The simulated sensor publishes every 2 s: ask until its reading is there.
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        say_in(&mut you, sensors, "bot: temperature?").await;
        let answer = next_from(&mut you, &format!("{sensors}/bot"), MessageType::Groupchat).await;
        if answer.contains(" °C (sensors/temperature, ") {
            assert!(answer.starts_with("you: "), "{answer}");
            break;
        }
        assert!(Instant::now() < end, "no reading in the room: {answer}");
        presence_from(&mut you, &format!("{sensors}/bot"), |p| {
            status_text(p).contains(" °C")
        })
        .await;
    }
    let (status, _) = running.terminate(Duration::from_secs(10));
    assert!(status.success(), "{}", running.log());

    // --no-room: no room, and no word of one.
    let (mut running, _) = up(dir.path(), &["--no-room"]);
    running.wait_log("answering chat messages", 1, Duration::from_secs(30));
    let log = running.log();
    assert!(
        !log.contains("/join") && !log.contains("joining room"),
        "{log}"
    );
    let (status, _) = running.terminate(Duration::from_secs(10));
    assert!(status.success(), "{}", running.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_that_asked_for_it_hears_when_a_sensor_goes_stale_and_comes_back() {
    let Some((server, broker)) = Server::start(ServerKind::Bundled).await else {
        return;
    };
    for user in ["bot", "alice"] {
        server.register(user);
    }
    let dir = tempfile::tempdir().unwrap();
    let mut alice = server.login("alice").await;
    join(&mut alice, "alice").await;
    let bot = InProcessBridge::start(&server.bot_args(
        &broker,
        dir.path(),
        "bot",
        &[
            "--room",
            ROOM,
            "--room-announce-stale",
            ROOM,
            "--stale-after",
            "1s",
        ],
    ))
    .await;
    bot.wait_log("joined room", 1, STEP).await;
    publish(broker.port(), "sensors/temperature", b"21.5", false).await;
    let stale = next_from_bot(&mut alice, MessageType::Groupchat).await;
    assert_eq!(stale, "⚠ no reading for 1 s from: sensors/temperature");
    publish(broker.port(), "sensors/temperature", b"21.6", false).await;
    let back = next_from_bot(&mut alice, MessageType::Groupchat).await;
    assert_eq!(back, "back: sensors/temperature");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_an_invitation_flood_joins_a_few_rooms_and_no_more() {
    let Some((server, broker)) = Server::start(ServerKind::Bundled).await else {
        return;
    };
    for user in ["bot", "alice"] {
        server.register(user);
    }
    let dir = tempfile::tempdir().unwrap();
    let bot = InProcessBridge::start(&server.bot_args(
        &broker,
        dir.path(),
        "bot",
        &["--allow", "alice@localhost"],
    ))
    .await;
    // An allowed contact (or her stolen account) sends fifty invitations at once.
    let mut alice = server.login("alice").await;
    for n in 0..50 {
        invite_directly(
            &mut alice,
            "bot@localhost",
            &format!("r{n}@conference.localhost"),
        )
        .await;
    }
    bot.wait_log("too many invitations lately", 45, STEP).await;
    bot.wait_log("joined room", 5, STEP).await;
    let log = bot.log();
    assert_eq!(log.matches("accepted an invitation").count(), 5, "{log}");
    assert_eq!(log.matches("joining room").count(), 5, "{log}");
}

/// The room `up` makes, from profanity (through tmux): `/join`, address the bot, read its answer.
#[cfg(feature = "embedded-broker")]
#[test]
fn profanity_joins_ups_room_and_the_bot_answers_there() {
    let Some((profanity, tmux)) = support::profanity::find_programs() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (running, xmpp_port) = up(dir.path(), &[]);
    running.wait_log("joined room", 1, Duration::from_secs(30));
    let password = std::fs::read_to_string(dir.path().join("you.password")).unwrap();
    let session =
        support::profanity::Profanity::start(&profanity, &tmux, &dir.path().join("localhost.crt"));
    session.connect("you@localhost", password.trim(), xmpp_port);
    session.type_line("/join sensors@conference.localhost");
    session.wait_for("You have joined the room");
    // profanity shows the bot's line as "bot: you: 21.3 °C (sensors/temperature, ...)"; the
    // simulated sensor publishes every 2 s, so an answer may still be "no reading yet".
    for asked in 1..=5 {
        session.type_line("bot: temperature?");
        let screen = session.wait_until("the bot's answer", |screen| {
            screen.matches("bot: you: ").count() >= asked
        });
        if screen.contains(" °C (sensors/temperature, ") {
            assert!(screen.contains("bot: temperature?"), "{screen}");
            return;
        }
    }
    panic!("no reading in the room:\n{}", session.screen());
}
