//! Charts from the bot, end to end: the bot finds its server's HTTP upload service (XEP-0363),
//! answers `stats temp 1h` with a message carrying the chart's URL (body and XEP-0066 `<x/>`)
//! and then the text summary; the URL serves a PNG that decodes, has the chart's size and shows
//! the line and the contact's threshold. Also: six charts a minute per contact, text alone
//! without an upload service (logged once), and a week-long chart that renders while another
//! contact's question is answered at once.
//!
//! The XMPP server comes from [`servers`], which takes a [`ServerKind`]: the bundled server with
//! its upload service on an HTTPS loopback port, Prosody 0.12 with `mod_http_file_share` on
//! one, or Prosody without an upload service; the bot trusts each one's test certificate
//! through `--xmpp-ca`. The scenarios run unchanged against each kind. Prosody missing: its
//! tests are skipped, or fail with CI=true.

mod support;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use support::bridge::InProcessBridge;
use support::chat::{body, ChatClient};
use support::files::password_file;
use support::mqtt::publish_many;
use support::peers::Prosody;
use support::server::InProcessServer;
use support::world::{Broker, Kind, BOT};
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::parsers::message::Message;
use tokio_xmpp::parsers::oob::Oob;

/// How long one step may take.
const STEP: Duration = Duration::from_secs(20);
/// The sensor of every scenario.
const TEMP: &str = "name=temp,topic=sensors/temperature,unit=°C,precision=1";
/// The readings' line and an `above` threshold (see `src/bridge/chart/render.rs`).
const LINE: (u8, u8, u8) = (31, 119, 180);
const ABOVE: (u8, u8, u8) = (214, 39, 40);

/// Prosody's upload service: `upload.localhost`, listed in the domain's disco#items, its URLs on
/// `https://localhost:PORT/file_share/…` (the certificate names `localhost`).
const PROSODY_FILE_SHARE: &str = r#"
Component "upload.localhost" "http_file_share"
    http_host = "localhost"
    http_file_share_size_limit = 1048576
"#;

/// The XMPP server of a scenario, and what it offers for uploads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerKind {
    /// Prosody with `mod_http_file_share` over HTTPS on loopback.
    ProsodyFileShare,
    /// Prosody without an upload service.
    ProsodyWithoutUpload,
    /// The bundled server with its upload service (`--http-listen`).
    Bundled,
}

// One per test, made once and never moved about: boxing either variant buys nothing.
#[allow(clippy::large_enum_variant)]
enum XmppServer {
    Prosody(Prosody),
    Bundled(InProcessServer),
}

/// The servers of a scenario: XMPP (with `bot`, `alice` and `bob`), the embedded MQTT broker,
/// and a scratch directory.
struct Servers {
    xmpp: XmppServer,
    mqtt: Broker,
    dir: tempfile::TempDir,
}

impl Servers {
    fn port(&self) -> u16 {
        match &self.xmpp {
            XmppServer::Prosody(p) => p.port,
            XmppServer::Bundled(s) => s.port,
        }
    }

    fn ca_file(&self) -> &Path {
        match &self.xmpp {
            XmppServer::Prosody(p) => &p.ca_file,
            XmppServer::Bundled(s) => &s.ca_file,
        }
    }

    /// The bridge's flags: the sensor, alice and bob allowed everything, plus `extra`.
    fn bot_args(&self, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            "bridge",
            "--mqtt-port",
            &self.mqtt.port().to_string(),
            "--jid",
            BOT,
            "--password-file",
            &password_file(self.dir.path(), "bot.pw", "bot-secret"),
            "--xmpp-server",
            &format!("127.0.0.1:{}", self.port()),
            "--xmpp-ca",
            &self.ca_file().to_string_lossy(),
            "--sensor",
            TEMP,
            "--allow",
            "alice@localhost,bob@localhost",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
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
}

/// The one place a scenario's servers start, by kind. `None`: Prosody is missing (skip).
async fn servers(kind: ServerKind) -> Option<Servers> {
    let xmpp = match kind {
        ServerKind::ProsodyFileShare => {
            XmppServer::Prosody(Prosody::start_with_https(PROSODY_FILE_SHARE)?)
        }
        ServerKind::ProsodyWithoutUpload => XmppServer::Prosody(Prosody::start()?),
        ServerKind::Bundled => {
            XmppServer::Bundled(InProcessServer::start_upload(Default::default()).await)
        }
    };
    for user in ["bot", "alice", "bob"] {
        match &xmpp {
            XmppServer::Prosody(p) => p.register(user, &format!("{user}-secret")),
            XmppServer::Bundled(s) => s.add_user(user, &format!("{user}-secret")),
        }
    }
    let mqtt = Broker::start(Kind::Bundled).await?;
    Some(Servers {
        xmpp,
        mqtt,
        dir: tempfile::tempdir().expect("temp dir"),
    })
}

/// Publishes a ramp of readings from 20.0 to 24.0 °C and waits until the bot has the last.
async fn publish_readings(servers: &Servers, alice: &mut ChatClient) {
    let readings: Vec<(&str, String)> = (0..=40)
        .map(|i| {
            (
                "sensors/temperature",
                format!("{:.1}", 20.0 + f64::from(i) * 0.1),
            )
        })
        .collect();
    publish_many(servers.mqtt.port(), &readings).await;
    alice
        .ask_until(BOT, |reply| reply.contains("24.0"), STEP)
        .await;
}

/// The OOB URL of a message, if it carries one (XEP-0066).
fn oob(message: &Message) -> Option<String> {
    message
        .payloads
        .iter()
        .find_map(|p| Oob::try_from(p.clone()).ok())
        .map(|oob| oob.url)
}

/// Sends `text` to the bot, then collects its messages until `done` says enough.
async fn collect(
    client: &mut ChatClient,
    done: impl Fn(&[Message]) -> bool,
    deadline: Duration,
) -> Vec<Message> {
    let bot = BareJid::from_str(BOT).unwrap();
    let end = Instant::now() + deadline;
    let mut got = Vec::new();
    while !done(&got) {
        let left = end.saturating_duration_since(Instant::now());
        match client.next_message_from(&bot, left).await {
            Some(m) => got.push(m),
            None => panic!(
                "after {deadline:?}, only {:?}",
                got.iter().map(body).collect::<Vec<_>>()
            ),
        }
    }
    got
}

async fn say(client: &mut ChatClient, text: &str) {
    let to = Jid::from_str(BOT).unwrap();
    client
        .send(Message::chat(Some(to)).with_body(Default::default(), text.into()))
        .await;
}

/// GETs an `https` URL trusting `ca_file` (as the bot does): status, content type, body.
async fn https_get(url: &str, ca_file: &Path) -> (u16, String, Vec<u8>) {
    let uri: hyper::Uri = url.parse().expect("a URL");
    assert_eq!(uri.scheme_str(), Some("https"), "{url}");
    let host = uri.host().expect("a host").to_string();
    let port = uri.port_u16().unwrap_or(443);
    let tls = mqtt2xmpp::tls::client_config(Some(ca_file)).expect("tls");
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .expect("connect");
    let stream = tokio_rustls::TlsConnector::from(Arc::clone(&tls))
        .connect(ServerName::try_from(host.clone()).unwrap(), tcp)
        .await
        .expect("TLS");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP handshake");
    tokio::spawn(connection);
    let request = hyper::Request::get(uri.path_and_query().unwrap().as_str())
        .header(hyper::header::HOST, uri.authority().unwrap().as_str())
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.expect("GET");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, content_type, bytes.to_vec())
}

/// Width, height and how many pixels have each of `colours`.
fn decode_and_count(png_bytes: &[u8], colours: &[(u8, u8, u8)]) -> (u32, u32, Vec<usize>) {
    let mut reader = png::Decoder::new(png_bytes)
        .read_info()
        .expect("a PNG header");
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).expect("a PNG frame");
    assert_eq!(info.color_type, png::ColorType::Rgb);
    pixels.truncate(info.buffer_size());
    let counts = colours
        .iter()
        .map(|c| {
            pixels
                .chunks_exact(3)
                .filter(|p| (p[0], p[1], p[2]) == *c)
                .count()
        })
        .collect();
    (info.width, info.height, counts)
}

fn is_chart(m: &Message) -> bool {
    oob(m).is_some()
}

/// See the module documentation.
async fn a_contact_gets_the_chart_then_the_summary_on(kind: ServerKind) {
    let Some(servers) = servers(kind).await else {
        return;
    };
    let bot = InProcessBridge::start(&servers.bot_args(&[])).await;
    bot.wait_log("HTTP upload service found", 1, STEP).await;
    let mut alice = servers.login("alice").await;
    publish_readings(&servers, &mut alice).await;
    let set = alice.ask(BOT, "alert temp above 25").await;
    assert!(set.contains("25"), "{set}");

    say(&mut alice, "stats temp 1h").await;
    let got = collect(&mut alice, |got| got.len() >= 2, STEP).await;
    // The chart first: its URL as the body and in <x xmlns='jabber:x:oob'/>.
    let url = oob(&got[0]).unwrap_or_else(|| panic!("no OOB URL in {:?}", body(&got[0])));
    assert_eq!(body(&got[0]), url);
    assert!(url.starts_with("https://"), "{url}");
    // Then the text summary, as without charts.
    assert!(
        body(&got[1]).starts_with("temp (sensors/temperature), last 1 h: min 20.0 °C, max 24.0 °C"),
        "{}",
        body(&got[1])
    );
    assert!(oob(&got[1]).is_none());

    let (status, content_type, png_bytes) = https_get(&url, servers.ca_file()).await;
    assert_eq!(status, 200, "{url}");
    assert_eq!(content_type, "image/png");
    let (width, height, counts) = decode_and_count(&png_bytes, &[LINE, ABOVE]);
    assert_eq!((width, height), (800, 400));
    assert!(counts[0] > 300, "{} pixels of the line", counts[0]);
    assert!(counts[1] > 100, "{} pixels of alice's threshold", counts[1]);
    println!(
        "{kind:?}: a 1 h chart of {} readings: {} bytes",
        41,
        png_bytes.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_gets_the_chart_then_the_summary_through_the_bundled_server() {
    a_contact_gets_the_chart_then_the_summary_on(ServerKind::Bundled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_gets_the_chart_then_the_summary_through_prosody_file_share() {
    a_contact_gets_the_chart_then_the_summary_on(ServerKind::ProsodyFileShare).await;
}

/// Six charts a minute per contact; the seventh `stats` is the text alone, with a note, while
/// another contact still gets charts.
async fn charts_are_limited_per_contact_on(kind: ServerKind) {
    let Some(servers) = servers(kind).await else {
        return;
    };
    let bot = InProcessBridge::start(&servers.bot_args(&[])).await;
    bot.wait_log("HTTP upload service found", 1, STEP).await;
    let mut alice = servers.login("alice").await;
    publish_readings(&servers, &mut alice).await;
    for _ in 0..7 {
        say(&mut alice, "stats temp 1h").await;
    }
    let got = collect(
        &mut alice,
        |got| got.iter().filter(|m| !is_chart(m)).count() >= 7,
        STEP,
    )
    .await;
    let charts = got.iter().filter(|m| is_chart(m)).count();
    let noted = got
        .iter()
        .filter(|m| body(m).contains("No chart this time: at most 6 charts a minute"))
        .count();
    assert_eq!(
        (charts, noted),
        (6, 1),
        "{:?}",
        got.iter().map(body).collect::<Vec<_>>()
    );
    bot.wait_log("chart rate limit", 1, STEP).await;

    let mut bob = servers.login("bob").await;
    say(&mut bob, "stats temp 1h").await;
    let got = collect(&mut bob, |got| got.len() >= 2, STEP).await;
    assert!(is_chart(&got[0]), "{:?}", body(&got[0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charts_are_limited_per_contact_through_the_bundled_server() {
    charts_are_limited_per_contact_on(ServerKind::Bundled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charts_are_limited_per_contact_through_prosody_file_share() {
    charts_are_limited_per_contact_on(ServerKind::ProsodyFileShare).await;
}

/// No upload service: the text alone, and one log line however many ask; `--no-charts` does
/// not even look.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_upload_service_stats_is_text_alone_and_logged_once() {
    let Some(servers) = servers(ServerKind::ProsodyWithoutUpload).await else {
        return;
    };
    let bot = InProcessBridge::start(&servers.bot_args(&[])).await;
    bot.wait_log("no HTTP upload service (XEP-0363)", 1, STEP)
        .await;
    let mut alice = servers.login("alice").await;
    publish_readings(&servers, &mut alice).await;
    for _ in 0..3 {
        let text = alice.ask(BOT, "stats temp 1h").await;
        assert!(
            text.starts_with("temp (sensors/temperature), last 1 h: min 20.0 °C"),
            "{text}"
        );
    }
    // Nothing else arrives: no chart message after the texts.
    let bot_jid = BareJid::from_str(BOT).unwrap();
    assert!(alice
        .next_message_from(&bot_jid, Duration::from_millis(500))
        .await
        .is_none());
    assert_eq!(bot.log().matches("no HTTP upload service").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_charts_the_bot_does_not_look_for_an_upload_service() {
    let Some(servers) = servers(ServerKind::ProsodyFileShare).await else {
        return;
    };
    let bot = InProcessBridge::start(&servers.bot_args(&["--no-charts"])).await;
    let mut alice = servers.login("alice").await;
    publish_readings(&servers, &mut alice).await;
    let text = alice.ask(BOT, "stats temp 1h").await;
    assert!(
        text.starts_with("temp (sensors/temperature), last 1 h:"),
        "{text}"
    );
    let bot_jid = BareJid::from_str(BOT).unwrap();
    assert!(alice
        .next_message_from(&bot_jid, Duration::from_millis(500))
        .await
        .is_none());
    let log = bot.log();
    assert!(!log.contains("HTTP upload service"), "{log}");
}

/// A week at one reading a second (604 800 readings, restored from the state database): three
/// 7-day charts for alice render while bob's plain question is answered at once. Prints the
/// latencies and the render times; asserts that bob waited less than any one rendering (a loop
/// blocked by rendering would make him wait for all three).
async fn rendering_does_not_hold_up_other_contacts_on(kind: ServerKind) {
    let Some(servers) = servers(kind).await else {
        return;
    };
    const WEEK: i64 = 7 * 86_400;
    let state = servers.dir.path().join("state.sqlite");
    let state_arg = state.to_string_lossy().into_owned();
    let extra = ["--state-db", state_arg.as_str(), "--history", "700000"];
    // First run: the bot creates its state database.
    let mut first = InProcessBridge::start(&servers.bot_args(&extra)).await;
    first.stop(STEP).await.0.expect("a clean stop");
    drop(first);
    {
        let mut db = rusqlite::Connection::open(&state).expect("the state database");
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let tx = db.transaction().unwrap();
        tx.execute(
            "INSERT INTO topics (topic, last_ms) VALUES ('sensors/temperature', ?1)",
            [now_ms],
        )
        .unwrap();
        let topic_id = tx.last_insert_rowid();
        {
            let mut insert = tx
                .prepare("INSERT INTO readings (topic_id, at_ms, value) VALUES (?1, ?2, ?3)")
                .unwrap();
            for i in 0..WEEK {
                let at = now_ms - (WEEK - i) * 1000;
                let day = i as f64 / 86_400.0 * std::f64::consts::TAU;
                insert
                    .execute(rusqlite::params![topic_id, at, 21.0 + 3.0 * day.sin()])
                    .unwrap();
            }
        }
        tx.commit().unwrap();
    }
    let bot = InProcessBridge::start(&servers.bot_args(&extra)).await;
    bot.wait_log("HTTP upload service found", 1, STEP).await;
    let mut alice = servers.login("alice").await;
    let mut bob = servers.login("bob").await;
    // Both answered once, so the first question of the measurement is not the first of all.
    assert!(bob.ask(BOT, "temp").await.contains("°C"));

    let asked = Instant::now();
    for _ in 0..3 {
        say(&mut alice, "stats temp 7d").await;
    }
    // Bob asks once the bot has taken all three (their renderings are under way).
    bot.wait_log("chart job started", 3, STEP).await;
    let bob_asked = Instant::now();
    let answer = bob.ask(BOT, "temp").await;
    let bob_waited = bob_asked.elapsed();
    assert!(answer.contains("°C"), "{answer}");
    collect(
        &mut alice,
        |got| got.iter().filter(|m| is_chart(m)).count() >= 3,
        Duration::from_secs(120),
    )
    .await;
    let charts_after = asked.elapsed();
    let log = bot.log();
    let took: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("chart rendered"))
        .filter_map(|l| l.split("took_ms=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect();
    let sizes: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("chart rendered"))
        .filter_map(|l| l.split("size=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect();
    println!(
        "{kind:?}: 3 charts of 7 d at one reading a second: rendered in {took:?} ms ({sizes:?} \
         bytes), all three sent {charts_after:?} after asking; bob's plain question meanwhile \
         answered in {bob_waited:?}"
    );
    assert_eq!(took.len(), 3, "{log}");
    let fastest = Duration::from_millis(*took.iter().min().unwrap());
    assert!(
        bob_waited < fastest,
        "bob waited {bob_waited:?}, longer than a rendering ({took:?} ms)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendering_does_not_hold_up_other_contacts_on_the_bundled_server() {
    rendering_does_not_hold_up_other_contacts_on(ServerKind::Bundled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendering_does_not_hold_up_other_contacts_through_prosody_file_share() {
    rendering_does_not_hold_up_other_contacts_on(ServerKind::ProsodyFileShare).await;
}
