//! The bot in a room as a person meets it: profanity (Debian package), driven through tmux,
//! joins a room on the bundled server where the bot (`mqtt2xmpp bridge --room …`) already is,
//! sees who is there, addresses the bot by its nick, and reads its answer in the room's window.
//!
//! How profanity is run (tmux, private HOME, TLS trust through `SSL_CERT_FILE`) is described in
//! [`support::profanity`]. Without profanity, tmux or mosquitto the test skips, unless CI=true,
//! where a missing program fails it.

mod support;

use std::path::Path;
use std::time::Duration;

use support::chat::ChatClient;
use support::files::password_file;
use support::mqtt::publish;
use support::peers::Mosquitto;
use support::process::BinaryProcess;
use support::profanity::{find_programs, Profanity};
use support::server::ServerProcess;

const BOT: &str = "bot@localhost";
const BOT_PASSWORD: &str = "bot-secret";
const ALICE: &str = "alice@localhost";
const ALICE_PASSWORD: &str = "alice-secret";
/// A second account that makes sure the bot holds the reading before profanity asks.
const PROBE: &str = "probe@localhost";
const PROBE_PASSWORD: &str = "probe-secret";
const TOPIC: &str = "sensors/temperature";
/// The room `up` makes, and the one its instructions tell profanity users to join.
const ROOM: &str = "sensors@conference.localhost";

/// How long the bridge may take to log in, subscribe and join.
const STARTUP: Duration = Duration::from_secs(20);

#[test]
fn profanity_joins_the_bots_room_and_reads_its_answer_there() {
    let Some((profanity, tmux)) = find_programs() else {
        return;
    };
    let Some(mqtt) = Mosquitto::start() else {
        return;
    };
    let xmpp = ServerProcess::start();
    xmpp.add_user("bot", BOT_PASSWORD);
    xmpp.add_user("alice", ALICE_PASSWORD);
    xmpp.add_user("probe", PROBE_PASSWORD);

    let dir = tempfile::tempdir().expect("temp dir");
    // The bot joins (and so creates) the room under its default nick, its JID's local part.
    let bot = start_bridge(&mqtt, xmpp.port, &xmpp.ca_file, dir.path());
    publish_reading(&mqtt, xmpp.port, &xmpp.ca_file);

    let session = Profanity::start(&profanity, &tmux, &xmpp.ca_file);
    session.connect(ALICE, ALICE_PASSWORD, xmpp.port);
    session.type_line(&format!("/join {ROOM}"));
    // profanity opens the room's window, says it joined under alice's local part, and lists
    // the occupants in its side panel: the bot, which created the room, as a moderator, and
    // alice as a participant.
    session.wait_for("-> You have joined the room as alice");
    let screen = session.wait_until("the occupants panel with the bot and alice", |screen| {
        occupants(screen).len() >= 2
    });
    let listed = occupants(&screen);
    let as_pairs = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(role, nick)| (role.to_string(), nick.to_string()))
            .collect()
    };
    assert_eq!(
        listed,
        as_pairs(&[("Moderators", "bot"), ("Participants", "alice")]),
        "{screen}"
    );

    // Addressed by its nick, the bot answers in the room, to alice.
    session.type_line("bot: temperature?");
    let answer = "alice: 23.5 °C (sensors/temperature, ";
    let screen = session.wait_for(answer);
    let line = screen
        .lines()
        .find(|line| line.contains(answer))
        .expect("the answer's line");
    // In the room window, from the bot's nick ("HH:MM:SS - bot: alice: 23.5 °C …").
    assert!(line.contains(" - bot: alice: "), "{line}\n{screen}");
    assert!(
        screen.contains("alice: bot: temperature?") || screen.contains("me: bot: temperature?"),
        "profanity does not show the question in the room:\n{screen}"
    );
    // The answer went to the room, and the room sent it to alice: profanity's log shows a
    // groupchat message from the bot's room JID.
    let log = session.wait_log("the answer in the log", |log| {
        log.lines().any(|l| {
            l.contains("RECV: <message")
                && l.contains(&format!(r#"from="{ROOM}/bot""#))
                && l.contains(r#"type="groupchat""#)
                && l.contains("23.5 °C")
        })
    });
    assert!(
        !log.contains(ALICE_PASSWORD),
        "the password is in profanity's log"
    );

    drop(session);
    drop(bot);
}

/// The occupants profanity lists in the room window's side panel, as (role heading, nick): the
/// panel is the column where the "Moderators" heading starts, on the right of the messages,
/// down to its first empty line.
fn occupants(screen: &str) -> Vec<(String, String)> {
    let Some(column) = screen.lines().find_map(|line| {
        let at = line.find("Moderators")?;
        Some(line[..at].chars().count())
    }) else {
        return Vec::new();
    };
    let mut role = String::new();
    let mut found = Vec::new();
    for line in screen.lines() {
        let panel: String = line.chars().skip(column.saturating_sub(2)).collect();
        let entry = panel.trim();
        match entry {
            // The panel ends at its first empty line (the status bar is further down).
            "" if !role.is_empty() => break,
            "" => {}
            "Moderators" | "Participants" | "Visitors" => role = entry.to_string(),
            nick if !role.is_empty() => found.push((role.clone(), nick.to_string())),
            _ => {}
        }
    }
    found
}

/// Starts the bridge as `bot@localhost` in ROOM on the XMPP server at 127.0.0.1:`xmpp_port`
/// and waits until it is subscribed to MQTT and in the room.
fn start_bridge(mqtt: &Mosquitto, xmpp_port: u16, ca_file: &Path, dir: &Path) -> BinaryProcess {
    let bot = BinaryProcess::spawn(&[
        "bridge",
        "--mqtt-port",
        &mqtt.port.to_string(),
        "--topic",
        TOPIC,
        "--jid",
        BOT,
        "--password-file",
        &password_file(dir, "bot.pw", BOT_PASSWORD),
        "--xmpp-server",
        &format!("127.0.0.1:{xmpp_port}"),
        "--xmpp-ca",
        &ca_file.to_string_lossy(),
        "--unit",
        "°C",
        "--room",
        ROOM,
    ]);
    bot.wait_log("subscribed", 1, STARTUP);
    bot.wait_log("joined room", 1, STARTUP);
    bot
}

/// Publishes 23.5 and waits until the bot answers with it, so profanity's question is not
/// answered with "No reading ... yet" by a bridge that has not received it.
fn publish_reading(mqtt: &Mosquitto, xmpp_port: u16, ca_file: &Path) {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        publish(mqtt.port, TOPIC, b"23.5", false).await;
        let mut probe = ChatClient::login(PROBE, PROBE_PASSWORD, xmpp_port, ca_file).await;
        probe
            .ask_until(BOT, |r| r.starts_with("23.5 °C"), Duration::from_secs(10))
            .await;
    });
}
