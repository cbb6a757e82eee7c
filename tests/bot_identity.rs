//! The bot's face in a contact's roster, on the bundled server, Prosody and ejabberd (with
//! the PEP and vCard modules their deploy configurations enable): alice subscribes to the bot and sees its entity capabilities (XEP-0115) in
//! its presence, with a `ver` that is the XEP-0115 §5 hash of the bot's real disco#info answer
//! (identity `client/bot`); its nickname (XEP-0172) and avatar (XEP-0084) through PEP; its
//! vCard (XEP-0054) with name, nickname, description and the same avatar, whose hash is in
//! the presence (XEP-0153). A restart with the same state database publishes nothing: the PEP
//! items keep the ids the server gave them, and the bot says so.
//!
//! Prosody, ejabberd and mosquitto are Debian packages: without them those tests are skipped,
//! or fail with CI=true.

mod support;

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use base64::prelude::{Engine, BASE64_STANDARD};
use sha1::{Digest, Sha1};
use support::bridge::InProcessBridge;
use support::chat::ChatClient;
use support::ejabberd::Ejabberd;
use support::files::password_file;
use support::peers::Prosody;
use support::server::InProcessServer;
use support::world::{Broker, Kind};
use tokio_xmpp::jid::Jid;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::Stanza;

const STEP: Duration = Duration::from_secs(15);
const BOT: &str = "bot@localhost";
const CAPS: &str = "http://jabber.org/protocol/caps";
const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const VCARD: &str = "vcard-temp";
const NICK: &str = "http://jabber.org/protocol/nick";
const AVATAR_DATA: &str = "urn:xmpp:avatar:data";
const AVATAR_METADATA: &str = "urn:xmpp:avatar:metadata";

/// Prosody without its PEP and vCard modules, which the deploy snippet enables (a host's
/// `modules_disabled` takes them out of the global `modules_enabled`).
const PROSODY_WITHOUT_PROFILE: &str = "    modules_disabled = { \"pep\", \"vcard_legacy\" }\n";

/// The avatar the crate ships.
fn avatar() -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/avatar.png"))
        .expect("assets/avatar.png")
}

fn sha1_hex(bytes: &[u8]) -> String {
    Sha1::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// One per test: the size difference of the variants costs nothing.
#[allow(clippy::large_enum_variant)]
enum Server {
    Bundled(InProcessServer),
    Prosody(Prosody),
    Ejabberd(Ejabberd),
}

/// Which server a scenario runs on.
#[derive(Debug, Clone, Copy)]
enum ServerKind {
    Bundled,
    Prosody,
    Ejabberd,
}

impl Server {
    fn port(&self) -> u16 {
        match self {
            Server::Bundled(s) => s.port,
            Server::Prosody(s) => s.port,
            Server::Ejabberd(s) => s.port,
        }
    }

    fn ca_file(&self) -> &Path {
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

    fn bot_args(&self, broker: &Broker, dir: &Path, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            "bridge",
            "--mqtt-port",
            &broker.port().to_string(),
            "--jid",
            BOT,
            "--password-file",
            &password_file(dir, "bot.pw", "bot-secret"),
            "--xmpp-server",
            &format!("127.0.0.1:{}", self.port()),
            "--xmpp-ca",
            &self.ca_file().to_string_lossy(),
        ]
        .map(String::from)
        .to_vec();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }
}

/// Sends an IQ `type` with `payload` to `to` and returns its answer (skipping other stanzas).
async fn ask(client: &mut ChatClient, to: &str, get: bool, payload: Element) -> Iq {
    let id = format!("q{:x}", rand::random::<u32>());
    let to = Some(Jid::from_str(to).unwrap());
    let iq = if get {
        Iq::Get {
            from: None,
            to,
            id: id.clone(),
            payload,
        }
    } else {
        Iq::Set {
            from: None,
            to,
            id: id.clone(),
            payload,
        }
    };
    client.send_stanza(iq).await;
    let end = Instant::now() + STEP;
    loop {
        match client
            .next_stanza(end.saturating_duration_since(Instant::now()))
            .await
        {
            Some(Stanza::Iq(iq @ (Iq::Result { .. } | Iq::Error { .. }))) if iq_id(&iq) == id => {
                return iq
            }
            Some(_) => {}
            None => panic!("no answer to {id} within {STEP:?}"),
        }
    }
}

fn iq_id(iq: &Iq) -> &str {
    match iq {
        Iq::Get { id, .. } | Iq::Set { id, .. } | Iq::Result { id, .. } | Iq::Error { id, .. } => {
            id
        }
    }
}

/// The payload of a result, or a panic naming what was asked.
fn result_payload(iq: Iq, what: &str) -> Element {
    match iq {
        Iq::Result {
            payload: Some(payload),
            ..
        } => payload,
        other => panic!("{what}: {:?}", String::from(&Element::from(other))),
    }
}

/// The items of the bot's PEP `node` (XEP-0060 §6.5): (id, payload).
async fn pep_items(client: &mut ChatClient, node: &str) -> Vec<(String, Element)> {
    let query = Element::builder("pubsub", PUBSUB)
        .append(
            Element::builder("items", PUBSUB)
                .attr(tokio_xmpp::minidom::rxml::xml_ncname!("node").into(), node)
                .build(),
        )
        .build();
    let answer = result_payload(ask(client, BOT, true, query).await, node);
    answer
        .get_child("items", PUBSUB)
        .map(|items| {
            items
                .children()
                .filter(|c| c.is("item", PUBSUB))
                .map(|item| {
                    (
                        item.attr("id").unwrap_or_default().to_string(),
                        item.children().next().cloned().expect("item payload"),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// XEP-0115 §5.1 for a disco#info answer with one identity, no forms and distinct features,
/// written out from the XEP's text, then §5.1 steps 7–8: SHA-1 and Base64.
fn ver_by_the_book(query: &Element) -> String {
    let mut s = String::new();
    let mut identities: Vec<String> = query
        .children()
        .filter(|c| c.is("identity", DISCO_INFO))
        .map(|i| {
            format!(
                "{}/{}/{}/{}<",
                i.attr("category").unwrap_or_default(),
                i.attr("type").unwrap_or_default(),
                i.attr_ns(tokio_xmpp::minidom::rxml::Namespace::xml(), "lang")
                    .unwrap_or_default(),
                i.attr("name").unwrap_or_default()
            )
        })
        .collect();
    identities.sort();
    let mut features: Vec<String> = query
        .children()
        .filter(|c| c.is("feature", DISCO_INFO))
        .map(|f| format!("{}<", f.attr("var").unwrap_or_default()))
        .collect();
    // Sorted by the features themselves, not with their '<' (a prefix sorts first).
    features.sort_by(|a, b| a.trim_end_matches('<').cmp(b.trim_end_matches('<')));
    s.extend(identities);
    s.extend(features);
    BASE64_STANDARD.encode(Sha1::digest(s.as_bytes()))
}

/// Alice subscribes to the bot and returns the bot's available presence she then receives.
async fn subscribe_and_see(alice: &mut ChatClient) -> Presence {
    alice
        .send_stanza(Presence::new(PresenceType::Subscribe).with_to(Jid::from_str(BOT).unwrap()))
        .await;
    let end = Instant::now() + STEP;
    loop {
        match alice
            .next_stanza(end.saturating_duration_since(Instant::now()))
            .await
        {
            Some(Stanza::Presence(p))
                if p.type_ == PresenceType::None
                    && p.from.as_ref().is_some_and(|f| f.to_bare().as_str() == BOT) =>
            {
                return p
            }
            Some(_) => {}
            None => panic!("no presence from the bot within {STEP:?}"),
        }
    }
}

/// See the module documentation.
async fn a_contact_sees_the_bots_face_on(kind: ServerKind) {
    let (server, broker) = match kind {
        ServerKind::Bundled => (
            Server::Bundled(InProcessServer::start().await),
            Broker::start(Kind::Bundled).await,
        ),
        ServerKind::Prosody => {
            // PEP and vcard_legacy come from the deploy snippet.
            let Some(prosody) = Prosody::start() else {
                return;
            };
            (Server::Prosody(prosody), Broker::start(Kind::Peers).await)
        }
        ServerKind::Ejabberd => {
            // mod_vcard, mod_pubsub with pep and mod_caps come from the deploy config.
            let Some(ejabberd) = Ejabberd::start() else {
                return;
            };
            (Server::Ejabberd(ejabberd), Broker::start(Kind::Peers).await)
        }
    };
    let Some(broker) = broker else {
        return;
    };
    for user in ["bot", "alice"] {
        server.register(user);
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let state = state.to_string_lossy();
    let args = server.bot_args(&broker, dir.path(), &["--state-db", &state]);
    let mut bot = InProcessBridge::start(&args).await;
    bot.wait_log("published the bot's nickname, vCard and avatar", 1, STEP)
        .await;
    let avatar = avatar();
    let avatar_id = sha1_hex(&avatar);

    let mut alice = ChatClient::login(
        "alice@localhost",
        "alice-secret",
        server.port(),
        server.ca_file(),
    )
    .await;
    let presence = subscribe_and_see(&mut alice).await;
    let bot_jid = presence.from.clone().unwrap().to_string();

    // XEP-0115: caps in the presence, and the ver is the hash of the bot's disco#info.
    let caps = presence
        .payloads
        .iter()
        .find(|p| p.is("c", CAPS))
        .unwrap_or_else(|| {
            panic!(
                "no caps in {:?}",
                String::from(&Element::from(presence.clone()))
            )
        });
    assert_eq!(caps.attr("hash"), Some("sha-1"));
    let (node, ver) = (caps.attr("node").unwrap(), caps.attr("ver").unwrap());
    assert!(node.starts_with("https://"), "{node}");
    let info = result_payload(
        ask(
            &mut alice,
            &bot_jid,
            true,
            Element::builder("query", DISCO_INFO).build(),
        )
        .await,
        "disco#info",
    );
    let identity = info.get_child("identity", DISCO_INFO).unwrap();
    assert_eq!(
        (identity.attr("category"), identity.attr("type")),
        (Some("client"), Some("bot"))
    );
    assert_eq!(ver_by_the_book(&info), ver);
    // §6.2: the same answer on NODE#VER.
    let on_node = result_payload(
        ask(
            &mut alice,
            &bot_jid,
            true,
            Element::builder("query", DISCO_INFO)
                .attr(
                    tokio_xmpp::minidom::rxml::xml_ncname!("node").into(),
                    format!("{node}#{ver}"),
                )
                .build(),
        )
        .await,
        "disco#info on the caps node",
    );
    assert_eq!(ver_by_the_book(&on_node), ver);

    // XEP-0153: the avatar's hash in the presence.
    let photo = presence
        .payloads
        .iter()
        .find(|p| p.is("x", "vcard-temp:x:update"))
        .and_then(|x| x.get_child("photo", "vcard-temp:x:update"))
        .map(Element::text);
    assert_eq!(photo.as_deref(), Some(avatar_id.as_str()));

    // XEP-0054: the vCard, with the avatar as PHOTO.
    let vcard = result_payload(
        ask(
            &mut alice,
            BOT,
            true,
            Element::builder("vCard", VCARD).build(),
        )
        .await,
        "vCard",
    );
    let text = |name: &str| vcard.get_child(name, VCARD).map(|c| c.text());
    assert_eq!(
        text("FN").as_deref(),
        Some("mqtt2xmpp"),
        "{}",
        String::from(&vcard)
    );
    assert_eq!(text("NICKNAME").as_deref(), Some("mqtt2xmpp"));
    // Prosody's vcard_legacy keeps the vCard as vCard4 in PEP and gives DESC back as NOTE.
    assert_eq!(
        text("DESC").or_else(|| text("NOTE")).as_deref(),
        Some("mqtt2xmpp sensor bot: send help"),
        "{}",
        String::from(&vcard)
    );
    let binval: String = vcard
        .get_child("PHOTO", VCARD)
        .and_then(|p| p.get_child("BINVAL", VCARD))
        .map(|b| b.text())
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    assert_eq!(BASE64_STANDARD.decode(binval).ok(), Some(avatar.clone()));

    // XEP-0172 and XEP-0084 through PEP.
    let nick = pep_items(&mut alice, NICK).await;
    assert_eq!(nick.len(), 1, "{nick:?}");
    assert_eq!(nick[0].1.text(), "mqtt2xmpp");
    let metadata = pep_items(&mut alice, AVATAR_METADATA).await;
    let info = metadata
        .first()
        .and_then(|(_, m)| m.get_child("info", AVATAR_METADATA))
        .expect("avatar metadata");
    assert_eq!(info.attr("id"), Some(avatar_id.as_str()));
    assert_eq!(info.attr("type"), Some("image/png"));
    let data = pep_items(&mut alice, AVATAR_DATA).await;
    let (data_id, data) = data.first().expect("avatar data");
    assert_eq!(data_id, &avatar_id);
    assert_eq!(BASE64_STANDARD.decode(data.text()).ok(), Some(avatar));

    // A restart with the same state database publishes nothing: it says so, and the nickname
    // item the server named is still the same one.
    let _ = bot.stop(STEP).await;
    let mut bot = InProcessBridge::start(&args).await;
    bot.wait_log("already published", 1, STEP).await;
    assert!(!bot.log().contains("publishing the bot's"), "{}", bot.log());
    assert_eq!(pep_items(&mut alice, NICK).await, nick);

    // Without a state database it asks the server for its vCard, finds it current, and
    // publishes nothing either.
    let _ = bot.stop(STEP).await;
    let bot = InProcessBridge::start(&server.bot_args(&broker, dir.path(), &[])).await;
    bot.wait_log("already has the bot's vCard", 1, STEP).await;
    assert!(!bot.log().contains("publishing the bot's"), "{}", bot.log());
    assert_eq!(pep_items(&mut alice, NICK).await, nick);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_sees_the_bots_face_on_the_bundled_server() {
    a_contact_sees_the_bots_face_on(ServerKind::Bundled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_sees_the_bots_face_on_prosody() {
    a_contact_sees_the_bots_face_on(ServerKind::Prosody).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_sees_the_bots_face_on_ejabberd() {
    a_contact_sees_the_bots_face_on(ServerKind::Ejabberd).await;
}

/// In a room (XEP-0045) the bot's presence carries its caps and avatar hash too, so occupants'
/// clients show its picture and find its features without asking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bots_room_presence_carries_its_caps_and_avatar_hash() {
    let server = Server::Bundled(InProcessServer::start().await);
    let broker = Broker::start(Kind::Bundled).await.expect("embedded broker");
    for user in ["bot", "alice"] {
        server.register(user);
    }
    let dir = tempfile::tempdir().unwrap();
    let room = "lab@conference.localhost";
    let mut alice = ChatClient::login(
        "alice@localhost",
        "alice-secret",
        server.port(),
        server.ca_file(),
    )
    .await;
    alice
        .send_stanza(
            Presence::available()
                .with_to(Jid::from_str(&format!("{room}/alice")).unwrap())
                .with_payloads(vec![Element::builder(
                    "x",
                    "http://jabber.org/protocol/muc",
                )
                .build()]),
        )
        .await;
    let _bot =
        InProcessBridge::start(&server.bot_args(&broker, dir.path(), &["--room", room])).await;
    let bot_in_room = Jid::from_str(&format!("{room}/bot")).unwrap();
    // Every presence of the bot in the room has its caps; without a state database the bot
    // joins before it has compared and published its vCard, so the photo hash arrives with
    // the presence it sends once the avatar is in place (XEP-0153 §4.2).
    let expected = sha1_hex(&avatar());
    let end = Instant::now() + STEP;
    loop {
        let presence = match alice
            .next_stanza(end.saturating_duration_since(Instant::now()))
            .await
        {
            Some(Stanza::Presence(p))
                if p.type_ == PresenceType::None && p.from.as_ref() == Some(&bot_in_room) =>
            {
                p
            }
            Some(_) => continue,
            None => panic!("no room presence of the bot with its avatar within {STEP:?}"),
        };
        let caps = presence.payloads.iter().find(|p| p.is("c", CAPS));
        assert!(
            caps.is_some_and(|c| c.attr("hash") == Some("sha-1") && c.attr("ver").is_some()),
            "{:?}",
            String::from(&Element::from(presence.clone()))
        );
        let photo = presence
            .payloads
            .iter()
            .find(|p| p.is("x", "vcard-temp:x:update"))
            .and_then(|x| x.get_child("photo", "vcard-temp:x:update"))
            .map(Element::text);
        if photo.as_deref() == Some(expected.as_str()) {
            break;
        }
    }
}

/// A server without PEP and vCards (Prosody with the deploy snippet's PEP and vCard modules
/// disabled): the bot
/// warns once for each part it could not publish, answers chats as always, and tries again at
/// the next start, since nothing was saved as published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_pep_or_vcards_the_bot_warns_once_per_part_and_goes_on() {
    let Some(prosody) = Prosody::start_with(PROSODY_WITHOUT_PROFILE) else {
        return;
    };
    let Some(broker) = Broker::start(Kind::Peers).await else {
        return;
    };
    let server = Server::Prosody(prosody);
    for user in ["bot", "alice"] {
        server.register(user);
    }
    support::mqtt::publish(broker.port(), "sensors/temperature", b"21.5", true).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let args = server.bot_args(
        &broker,
        dir.path(),
        &["--state-db", &state.to_string_lossy()],
    );
    for start in 1..=2 {
        let mut bot = InProcessBridge::start(&args).await;
        bot.wait_log("profile published in part", 1, STEP).await;
        let log = bot.log();
        for part in [
            "the vCard",
            "the PEP avatar data",
            "the PEP avatar metadata",
            "the PEP nickname",
        ] {
            assert_eq!(
                log.matches(&format!("did not accept {part}")).count(),
                1,
                "start {start}, {part}:\n{log}"
            );
        }
        let mut alice = ChatClient::login(
            "alice@localhost",
            "alice-secret",
            server.port(),
            server.ca_file(),
        )
        .await;
        let answer = alice.ask(BOT, "temperature?").await;
        assert!(answer.contains("21.5"), "{answer}");
        let _ = bot.stop(STEP).await;
    }
}
