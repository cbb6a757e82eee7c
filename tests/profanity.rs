//! The bridge as a person meets it: the real terminal client profanity (Debian package) logs in
//! to an XMPP server, asks the bot, and the test reads the answer off profanity's screen. Once
//! with a private Prosody, once with the bundled server (`mqtt2xmpp server`), where profanity
//! also adds the bot to its roster, subscribes to its presence, and every IQ it sent is checked.
//!
//! How profanity is run (tmux, private HOME, TLS trust through `SSL_CERT_FILE`) is described in
//! [`support::profanity`].
//!
//! Without profanity, tmux or mosquitto (or Prosody, for the first test) the tests skip, unless
//! CI=true, where a missing program fails them.

mod support;

use std::path::Path;
use std::time::Duration;

use support::chat::ChatClient;
use support::files::password_file;
use support::mqtt::publish;
use support::peers::{Mosquitto, Prosody};
use support::process::BinaryProcess;
use support::profanity::{
    attribute, disco_features, find_programs, iq_exchanges, IqExchange, Profanity, AWAITING_RECEIPT,
};
use support::server::ServerProcess;

const BOT: &str = "bot@localhost";
const BOT_PASSWORD: &str = "bot-secret";
const ALICE: &str = "alice@localhost";
const ALICE_PASSWORD: &str = "alice-secret";
/// A second account that makes sure the bot holds the reading before profanity asks.
const PROBE: &str = "probe@localhost";
const PROBE_PASSWORD: &str = "probe-secret";
/// Nobody has this account: a message to it is never acknowledged with a receipt.
const NOBODY: &str = "nobody@localhost";
const TOPIC: &str = "sensors/temperature";
/// How the bot's presence status starts: the default sensor's name, then its value.
const BOT_STATUS: &str = "sensors/temperature: ";
/// A chat room for a bookmark; it need not exist (profanity does not join it).
const ROOM: &str = "room@conference.localhost";

/// How long the bridge may take to log in and subscribe.
const STARTUP: Duration = Duration::from_secs(20);

#[test]
fn profanity_asks_the_bot_and_shows_the_reply() {
    let Some((profanity, tmux)) = find_programs() else {
        return;
    };
    let Some(mqtt) = Mosquitto::start() else {
        return;
    };
    let Some(xmpp) = Prosody::start() else { return };
    xmpp.register("bot", BOT_PASSWORD);
    xmpp.register("alice", ALICE_PASSWORD);
    xmpp.register("probe", PROBE_PASSWORD);

    let dir = tempfile::tempdir().expect("temp dir");
    let bot = start_bridge(&mqtt, xmpp.port, &xmpp.ca_file, dir.path());
    publish_reading(&mqtt, xmpp.port, &xmpp.ca_file);

    let session = Profanity::start(&profanity, &tmux, &xmpp.ca_file);
    session.connect(ALICE, ALICE_PASSWORD, xmpp.port);
    ask_the_bot(&session);

    drop(session);
    drop(bot);
}

/// The same conversation with the bundled server in place of Prosody; then profanity adds the
/// bot to its roster, subscribes to its presence, stores a bookmark, pings the server, and logs
/// in again to find roster, bookmark and the bot's presence back. Every IQ it sent must have
/// been answered, and whatever the server refused must be something it does not advertise.
#[test]
fn profanity_asks_the_bot_on_the_bundled_server() {
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
    let bot = start_bridge(&mqtt, xmpp.port, &xmpp.ca_file, dir.path());
    publish_reading(&mqtt, xmpp.port, &xmpp.ca_file);

    let session = Profanity::start(&profanity, &tmux, &xmpp.ca_file);
    session.connect(ALICE, ALICE_PASSWORD, xmpp.port);
    ask_the_bot(&session);

    // The roster: add the bot, then ask to see its presence. The bot approves every request,
    // so the server answers the request with `subscribed` and the bot's current presence.
    session.type_line("/win 1");
    session.type_line(&format!("/roster add {BOT}"));
    session.wait_for(&format!("Roster item added: {BOT}"));
    session.type_line(&format!("/sub request {BOT}"));
    session.wait_for(&format!("Subscription received from {BOT}"));
    let online = format!("is online, \"{BOT_STATUS}");
    session.wait_until("the bot coming online", |screen| {
        screen
            .lines()
            .any(|line| line.contains(&format!("++ {BOT} (")) && line.contains(&online))
    });
    session.type_line(&format!("/sub show {BOT}"));
    session.wait_for(&format!("{BOT} subscription status: to."));

    // Private XML storage, written: a bookmark (XEP-0048), without autojoin (there is no MUC).
    session.type_line(&format!("/bookmark add {ROOM} nick alice autojoin off"));
    session.wait_for(&format!("Bookmark added for {ROOM}"));
    // Ping the server. (Not the bot: profanity pings only contacts whose entity
    // capabilities list ping, and the bot announces none.)
    session.type_line("/ping");
    session.wait_for("Ping response from server: ");

    // Log out and in again: the roster and the bookmark come back from the server's store,
    // and the server sends the bot's presence on its behalf.
    session.type_line("/disconnect");
    session.wait_for(&format!("{ALICE} logged out successfully."));
    session.type_line("/clear");
    session.wait_until("a cleared console", |screen| !screen.contains("logged out"));
    session.connect(ALICE, ALICE_PASSWORD, xmpp.port);
    session.wait_until("the bot online again", |screen| {
        screen
            .lines()
            .any(|line| line.contains(&format!("++ {BOT} (")) && line.contains(&online))
    });
    session.type_line("/roster");
    // "  bot@localhost - to" (jid - subscription), left of the roster panel on the same line.
    let listed = format!("  {BOT} - to ");
    session.wait_until("the bot in /roster", |screen| screen.contains(&listed));
    // The console was cleared since "Bookmark added": only the list can show the room.
    session.type_line("/bookmark list");
    session.wait_for(ROOM);

    // Every IQ get/set profanity sent must have been answered. The roster, carbons and
    // bookmarks (XEP-0048 in XEP-0049 private storage) are served and must succeed; so must
    // the legacy session IQ, if profanity sends it (libstrophe does not when the server
    // marks it optional). What the server does not offer is refused with an error, listed.
    let log = session.wait_log("an answer to every IQ", |log| {
        iq_exchanges(log).iter().all(|iq| iq.answer.is_some())
    });
    let exchanges = iq_exchanges(&log);
    eprintln!("--- IQs profanity sent ---");
    for iq in &exchanges {
        eprintln!("{iq}");
    }
    let succeeded = |what: &str, required: bool, payload: &str| {
        let matching: Vec<&IqExchange> = exchanges
            .iter()
            .filter(|iq| iq.payload == payload)
            .collect();
        assert!(
            !required || !matching.is_empty(),
            "profanity sent no {what} IQ"
        );
        for iq in matching {
            assert_eq!(
                iq.answer.as_deref(),
                Some("result"),
                "{what} failed: {iq}\n{:?}",
                iq.answer_xml
            );
        }
    };
    let session_iq = "{urn:ietf:params:xml:ns:xmpp-session}session";
    succeeded("legacy session", false, session_iq);
    succeeded("bind", true, "{urn:ietf:params:xml:ns:xmpp-bind}bind");
    succeeded("roster", true, "{jabber:iq:roster}query");
    succeeded("carbons", true, "{urn:xmpp:carbons:2}enable");
    succeeded(
        "private storage (bookmarks)",
        true,
        "{jabber:iq:private}query",
    );
    succeeded("ping", true, "{urn:xmpp:ping}ping");
    succeeded(
        "server disco#info",
        true,
        "{http://jabber.org/protocol/disco#info}query",
    );
    // What the server refuses, it must not have advertised (disco#info of the server), and
    // it refuses it as not offered, not as broken.
    let advertised = disco_features(&log, "localhost");
    assert!(
        advertised.iter().any(|f| f == "urn:xmpp:carbons:2"),
        "no disco#info features of the server in profanity's log: {advertised:?}"
    );
    let refused: Vec<&IqExchange> = exchanges
        .iter()
        .filter(|iq| iq.answer.as_deref() == Some("error"))
        .collect();
    eprintln!("--- refused ---");
    for iq in &refused {
        eprintln!("{iq}");
        assert!(
            !advertised.contains(&iq.namespace),
            "the server refused a feature it advertises: {iq}\n{:?}",
            iq.answer_xml
        );
        assert!(
            matches!(
                iq.condition.as_deref(),
                Some("service-unavailable" | "feature-not-implemented")
            ),
            "the server refused a request it does not offer with an unexpected error: {iq}\n{:?}",
            iq.answer_xml
        );
    }

    // The server saw both of alice's sessions and logged no trouble.
    let server_log = xmpp.log();
    assert_eq!(
        server_log
            .lines()
            .filter(|line| line.contains("session started") && line.contains("jid=alice@localhost/"))
            .count(),
        2,
        "the server did not log alice's two sessions:\n{server_log}"
    );
    let trouble: Vec<&str> = server_log
        .lines()
        .filter(|line| line.contains(" WARN ") || line.contains(" ERROR "))
        .collect();
    assert!(
        trouble.is_empty(),
        "the server logged trouble: {trouble:#?}"
    );

    drop(session);
    drop(bot);
}

/// Starts the bridge as `bot@localhost` on the XMPP server at 127.0.0.1:`xmpp_port` and waits
/// until it is subscribed to MQTT and answers chat messages.
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
    ]);
    bot.wait_log("subscribed", 1, STARTUP);
    bot.wait_log("answering chat messages", 1, STARTUP);
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

/// With profanity logged in as alice: a message to nobody stays unacknowledged, the question to
/// the bot is acknowledged with a receipt and answered with the reading, and the bot never
/// answered anything with an error.
fn ask_the_bot(session: &Profanity) {
    // Control: a message nobody acknowledges stays marked as awaiting its receipt.
    session.type_line(&format!("/msg {NOBODY} hello?"));
    session.wait_for("me: hello?");
    let unacknowledged = session.colour_line("me: hello?");
    assert!(
        unacknowledged.contains(AWAITING_RECEIPT),
        "an unacknowledged message is not drawn as awaiting its receipt: {unacknowledged:?}"
    );

    session.type_line(&format!("/msg {BOT} temperature?"));
    let screen = session.wait_for("23.5 °C (sensors/temperature, ");
    let reply = screen
        .lines()
        .find(|line| line.contains("23.5 °C (sensors/temperature, "))
        .expect("reply line");
    assert!(
        reply.contains(&format!("{BOT}/")) && reply.trim_end().ends_with(" ago)"),
        "unexpected reply line: {reply:?}\n{screen}"
    );
    assert!(
        screen.contains("me: temperature?"),
        "profanity does not show the question:\n{screen}"
    );
    // The receipt came before the reply, so by now profanity shows the question as delivered.
    let question = session.colour_line("me: temperature?");
    assert!(
        !question.contains(AWAITING_RECEIPT),
        "profanity still shows the question as awaiting its receipt: {question:?}"
    );

    // profanity's debug log holds the stanzas: the question asked for a receipt, and the bot
    // acknowledged exactly that message, and never answered anything with an error.
    let log = session.log();
    let asked = log
        .lines()
        .find(|line| line.contains("SENT: <message") && line.contains("<body>temperature?</body>"))
        .unwrap_or_else(|| panic!("no sent question in profanity's log:\n{log}"));
    assert!(
        asked.contains(r#"<request xmlns="urn:xmpp:receipts"/>"#),
        "profanity did not request a receipt: {asked}"
    );
    let id = attribute(asked, "id").expect("message id");
    let from_bot =
        |line: &&str| line.contains("RECV: <") && line.contains(r#"from="bot@localhost/"#);
    assert!(
        log.lines()
            .filter(from_bot)
            .any(|line| line.contains("<received")
                && line.contains(r#"xmlns="urn:xmpp:receipts""#)
                && line.contains(&format!(r#"id="{id}""#))),
        "no receipt from the bot for message {id}:\n{log}"
    );
    let errors: Vec<&str> = log
        .lines()
        .filter(from_bot)
        .filter(|line| line.contains(r#"type="error""#))
        .collect();
    assert!(
        errors.is_empty(),
        "the bot answered with errors: {errors:#?}"
    );
    assert!(
        !log.contains(ALICE_PASSWORD),
        "the password is in profanity's log"
    );
}

/// README's first command, `mqtt2xmpp up`, and a chat from profanity with the account it made.
#[cfg(feature = "embedded-broker")]
#[test]
fn profanity_chats_with_the_bot_started_by_up() {
    let Some((profanity, tmux)) = find_programs() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let (xmpp_port, mqtt_port) = (support::peers::free_port(), support::peers::free_port());
    let up = BinaryProcess::spawn(&[
        "up",
        "--data-dir",
        &data.to_string_lossy(),
        "--xmpp-port",
        &xmpp_port.to_string(),
        "--mqtt-port",
        &mqtt_port.to_string(),
        "--xmpp-tls-port",
        "0",
        "--http-port",
        "0",
    ]);
    up.wait_log(
        "answering chat messages",
        1,
        std::time::Duration::from_secs(30),
    );
    let password = std::fs::read_to_string(data.join("you.password")).expect("password file");
    let session = Profanity::start(&profanity, &tmux, &data.join("localhost.crt"));
    session.connect("you@localhost", password.trim(), xmpp_port);
    session.type_line(&format!("/msg {BOT} temperature?"));
    // The simulated sensor's reading: one decimal, °C, the default topic.
    let screen = session.wait_for(" °C (sensors/temperature, ");
    assert!(screen.contains("me: temperature?"), "{screen}");
}
