//! Load generator for the benchmarks in `bench/`: many XMPP clients over STARTTLS with SASL, each
//! on its own connection, against any server (the bundled one, Prosody, ejabberd), plus an MQTT
//! publisher for the bot benchmarks.
//!
//! ```text
//! cargo run --release --example loadgen -- route   --server 127.0.0.1:5222 --ca cert.pem --pairs 50 [--rate 2000]
//! cargo run --release --example loadgen -- login   --server 127.0.0.1:5222 --ca cert.pem --count 2000
//! cargo run --release --example loadgen -- idle    --server 127.0.0.1:5222 --ca cert.pem --count 10000
//! cargo run --release --example loadgen -- ask     --server 127.0.0.1:5222 --ca cert.pem --to bot@localhost --askers 10
//! cargo run --release --example loadgen -- fresh   --server 127.0.0.1:5222 --ca cert.pem --to bot@localhost --mqtt 127.0.0.1:1883
//! cargo run --release --example loadgen -- publish --mqtt 127.0.0.1:1883 --prefix LOAD/t --topics 10000
//! cargo run --release --example loadgen -- room    --server 127.0.0.1:5222 --ca cert.pem --room bench@conference.localhost --occupants 100
//! ```
//!
//! Modes:
//!
//! - `route`: `--pairs` pairs of clients send chat messages to each other's full JID. With no
//!   `--rate` each client keeps `--window` messages in flight (saturation); with `--rate R` the
//!   clients together send R messages per second, evenly spread. Reports messages received per
//!   second and the latency from send to receipt (the timestamp travels in the body).
//! - `login`: `--count` complete logins (TCP, STARTTLS, TLS handshake, SASL, resource binding),
//!   `--concurrency` at a time; each connection is closed after binding. Reports logins per
//!   second and the time of one login.
//! - `idle`: opens `--count` authenticated, bound connections (with available presence), prints
//!   `READY` on standard output and holds them until standard input closes (or `--hold`
//!   passes), answering pings. Whoever runs it measures the server meanwhile.
//! - `ask`: `--askers` clients each ask `--to` (the bot) in a closed loop: send, wait for the
//!   reply, send again. Reports replies per second and the round trip.
//! - `fresh`: publishes `--samples` marker values on `--topic` over MQTT, one every
//!   `--interval`, while asking the bot in a loop; reports, for each marker, the time from
//!   publishing it to the first reply that shows it or a later value (a later marker, or any
//!   larger number someone else published on the topic since).
//! - `publish`: publishes one reading (`{"value": 21.5}`) on each of `--topics` distinct
//!   topics (QoS 1) and waits for every acknowledgement; fills a bot's cache.
//! - `room`: `--occupants` clients join one multi-user chat room (XEP-0045; the first creates
//!   it and asks for an instant room, §10.1.2), then the first `--senders` of them say
//!   groupchat messages, each keeping `--window` in flight (sent, its own copy not yet back
//!   from the room): saturation. Reports the groupchat messages delivered per second, counted
//!   at every occupant (the senders' own copies included: a room sends each message to all its
//!   occupants), and the latency from send to each delivery.
//!
//! Accounts are `PREFIX0@DOMAIN`, `PREFIX1@DOMAIN`, …, all with the one `--password`. Clients
//! log in with `--mechanism` (SCRAM-SHA-1 by default: the one SCRAM variant that the bundled
//! server, Prosody 0.12 and ejabberd all offer, so every server does the same work), or `auto`
//! for what the bridge itself does (tokio-xmpp's preference, with tls-exporter channel binding).
//!
//! With `--stream-management` (any mode that logs in) every client enables XEP-0198 stream
//! management right after binding, as phone clients do: `<enable/>` without resumption, then
//! `<enabled/>` (a server that does not advertise `<sm xmlns='urn:xmpp:sm:3'/>`, or answers
//! `<failed/>`, fails the login). From then on it counts the stanzas it receives and answers
//! every `<r/>` with `<a h='…'/>` (idle connections too), requests acks for what it sends the
//! way slixmpp does (an `<r/>` after every fifth stanza), checks the server's `<a/>`, sends a
//! last `<a/>` before closing, and turns Nagle's algorithm off (see `login`). The summary and
//! the JSON (`"sm"`) count the sessions, requests and acks.
//!
//! Every mode prints one JSON object on the last line of standard output (the drivers in
//! `bench/` read it) and a human summary on standard error; `route`, `login` and `ask` also
//! print `MARK start` and `MARK end` when the measured window opens and closes, so that the
//! driver can read the server's and the bot's CPU time at those moments. Percentiles are
//! nearest-rank.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use clap::{Args, Parser, Subcommand};
use futures::{SinkExt, StreamExt};
use mqtt2xmpp::secret::Secret;
use mqtt2xmpp::xmpp_connect::{dns_config, Connector};
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};
use sasl::common::{ChannelBinding, Credentials};
use tokio::io::BufStream;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::client::TlsStream;
use tokio_xmpp::connect::{DnsConfig, ServerConnector};
use tokio_xmpp::jid::{BareJid, FullJid, Jid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::bind::{BindQuery, BindResponse};
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::{Id, Message, MessageType};
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::presence::Presence;
use tokio_xmpp::parsers::sm;
use tokio_xmpp::xmlstream::{
    FallibleStreamElement, ReadError, StreamHeader, Timeouts, XmppStream, XmppStreamElement,
};
use tokio_xmpp::Stanza;

/// A logged-in client's stream: XML over TLS over TCP.
type Stream = XmppStream<BufStream<TlsStream<TcpStream>>>;

/// Generous read timeouts: a benchmark connection may sit idle for minutes, and the load
/// generator must not disconnect it on its own.
const TIMEOUTS: Timeouts = Timeouts {
    read_timeout: Duration::from_secs(3600),
    response_timeout: Duration::from_secs(3600),
};

/// How long one login may take before it counts as failed.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// How long one reply may take before the ask counts as timed out.
const ASK_TIMEOUT: Duration = Duration::from_secs(10);

/// After the measurement window: keep reading this long so that messages still in flight are
/// received, not stored offline by the server for the next run.
const DRAIN: Duration = Duration::from_secs(1);

#[derive(Debug, Parser)]
#[command(about = "XMPP/MQTT load generator for the mqtt2xmpp benchmarks (see bench/README.md)")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Pairs of clients message each other: throughput and latency of routing.
    Route(RouteArgs),
    /// Complete logins, some at a time: logins per second.
    Login(LoginArgs),
    /// Hold many authenticated connections until standard input closes.
    Idle(IdleArgs),
    /// Concurrent askers in a closed loop against a bot: asks per second and round trip.
    Ask(AskArgs),
    /// Time from an MQTT publish to the value appearing in a bot's reply.
    Fresh(FreshArgs),
    /// One reading on each of many distinct MQTT topics.
    Publish(PublishArgs),
    /// Many occupants of one room, a few of them talking: groupchat deliveries per second.
    Room(RoomArgs),
    /// Clients uploading files over HTTP File Upload (XEP-0363) in a closed loop: slot, PUT,
    /// next: files and bytes per second.
    Upload(UploadArgs),
}

/// How clients reach and log in to the XMPP server.
#[derive(Debug, Clone, Args)]
struct Conn {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:5222")]
    server: String,
    /// The XMPP domain of the accounts.
    #[arg(long, default_value = "localhost")]
    domain: String,
    /// The server's certificate (or its CA), trusted and pinned.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Password of every account.
    #[arg(long, default_value = "bench-password")]
    password: String,
    /// Accounts are PREFIX0, PREFIX1, …
    #[arg(long, default_value = "u")]
    prefix: String,
    /// Number of the first account used.
    #[arg(long, default_value_t = 0)]
    first: usize,
    /// SASL mechanism: SCRAM-SHA-1, SCRAM-SHA-256, PLAIN, or `auto` (tokio-xmpp's choice with
    /// tls-exporter channel binding, as the bridge logs in).
    #[arg(long, default_value = "SCRAM-SHA-1")]
    mechanism: String,
    /// Logins in progress at once while connecting the clients of a run.
    #[arg(long, default_value_t = 32)]
    setup_concurrency: usize,
    /// XEP-0198 stream management: enable it after binding (without resumption), answer the
    /// server's `<r/>`, and ask for acks as slixmpp does (an `<r/>` after every fifth stanza
    /// sent). Fails if the server does not offer it.
    #[arg(long)]
    stream_management: bool,
}

#[derive(Debug, Args)]
struct RouteArgs {
    #[command(flatten)]
    conn: Conn,
    /// Client pairs (2 × pairs connections, accounts first … first + 2 × pairs − 1).
    #[arg(long, default_value_t = 50)]
    pairs: usize,
    /// Total messages per second; 0 = as fast as the server routes them (saturation).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Saturation only: messages each client keeps in flight.
    #[arg(long, default_value_t = 16)]
    window: usize,
    /// Measured time.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unmeasured time before it.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Bytes of padding in each body, after the timestamp.
    #[arg(long, default_value_t = 64)]
    padding: usize,
}

#[derive(Debug, Args)]
struct UploadArgs {
    #[command(flatten)]
    conn: Conn,
    /// Uploading clients (accounts first … first + clients − 1), each with one upload at a time.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Bytes of each file.
    #[arg(long, default_value_t = 1024 * 1024)]
    size: usize,
    /// The upload service's JID.
    #[arg(long, default_value = "upload.localhost")]
    service: String,
    /// Measured time.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unmeasured time before it.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
}

#[derive(Debug, Args)]
struct RoomArgs {
    #[command(flatten)]
    conn: Conn,
    /// The room's bare JID; the first occupant creates it.
    #[arg(long, default_value = "bench@conference.localhost")]
    room: String,
    /// Clients in the room (accounts first … first + occupants − 1).
    #[arg(long, default_value_t = 100)]
    occupants: usize,
    /// How many of them talk (the first ones).
    #[arg(long, default_value_t = 2)]
    senders: usize,
    /// Messages each sender keeps in flight: sent, and its own copy not yet back.
    #[arg(long, default_value_t = 8)]
    window: usize,
    /// Measured time.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unmeasured time before it.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Bytes of padding in each body, after the timestamp.
    #[arg(long, default_value_t = 64)]
    padding: usize,
}

#[derive(Debug, Args)]
struct LoginArgs {
    #[command(flatten)]
    conn: Conn,
    /// Logins in all.
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Logins in progress at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Login k uses account first + (k mod users).
    #[arg(long, default_value_t = 10_000)]
    users: usize,
}

#[derive(Debug, Args)]
struct IdleArgs {
    #[command(flatten)]
    conn: Conn,
    /// Connections to open and hold.
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Send no initial presence (the sessions stay bound but unavailable).
    #[arg(long)]
    no_presence: bool,
    /// Hold at most this long, even if standard input stays open.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    hold: Duration,
}

#[derive(Debug, Args)]
struct AskArgs {
    #[command(flatten)]
    conn: Conn,
    /// The bot.
    #[arg(long)]
    to: String,
    /// Concurrent askers (accounts first … first + askers − 1).
    #[arg(long, default_value_t = 1)]
    askers: usize,
    /// The question.
    #[arg(long, default_value = "temperature?")]
    message: String,
    /// A reply without this text counts as unexpected (e.g. a rate-limit notice).
    #[arg(long)]
    expect: Option<String>,
    /// Measured time.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unmeasured time before it.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
}

#[derive(Debug, Args)]
struct FreshArgs {
    #[command(flatten)]
    conn: Conn,
    /// The bot.
    #[arg(long)]
    to: String,
    /// MQTT broker address.
    #[arg(long, default_value = "127.0.0.1:1883")]
    mqtt: String,
    /// The topic whose value the bot's reply shows.
    #[arg(long, default_value = "bench/temperature")]
    topic: String,
    /// Markers to publish and wait for.
    #[arg(long, default_value_t = 20)]
    samples: usize,
    /// Pause between two markers.
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// The first marker value (markers are integers counting up from it).
    #[arg(long, default_value_t = 900_000)]
    base: u64,
    /// After the last marker is published, give up waiting for it after this long.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Stop at the first reply that shows any marker: "the bot has read everything published
    /// before it". Markers keep coming every `--interval` until then, so one lost on the way
    /// (a broker drops messages for a subscriber that is far behind) does not hold it up.
    #[arg(long)]
    first_only: bool,
    /// Pause after a reply that does not show the marker yet, before asking again (a tight
    /// loop of questions would compete with the bot's MQTT side for its CPU).
    #[arg(long, default_value = "5ms", value_parser = humantime::parse_duration)]
    poll: Duration,
}

#[derive(Debug, Args)]
struct PublishArgs {
    /// MQTT broker address.
    #[arg(long, default_value = "127.0.0.1:1883")]
    mqtt: String,
    /// Topics are PREFIX0, PREFIX1, …
    #[arg(long, default_value = "LOAD/t")]
    prefix: String,
    /// Distinct topics, one reading each.
    #[arg(long, default_value_t = 10_000)]
    topics: usize,
    /// Publications per second; 0 = as fast as the broker acknowledges them. A subscriber
    /// slower than this loses messages once mosquitto's queue for it is full
    /// (max_queued_messages, 1000 by default).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // No log subscriber: standard error is for the summary.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    epoch();
    let report = runtime.block_on(async {
        match cli.mode {
            Mode::Route(args) => route(args).await,
            Mode::Login(args) => login_mode(args).await,
            Mode::Idle(args) => idle(args).await,
            Mode::Ask(args) => ask(args).await,
            Mode::Fresh(args) => fresh(args).await,
            Mode::Publish(args) => publish(args).await,
            Mode::Room(args) => room(args).await,
            Mode::Upload(args) => upload(args).await,
        }
    })?;
    eprintln!("{}", report.human);
    let mut json = report.json;
    let sessions = SM_SESSIONS.load(Ordering::Relaxed);
    if sessions > 0 {
        let (requested, acked, answered) = (
            SM_REQUESTS_SENT.load(Ordering::Relaxed),
            SM_ACKS_RECEIVED.load(Ordering::Relaxed),
            SM_REQUESTS_ANSWERED.load(Ordering::Relaxed),
        );
        eprintln!(
            "stream management: enabled on {sessions} connections; {requested} acks requested, \
             {acked} received; {answered} of the server's requests answered"
        );
        if let Some(open) = json.strip_suffix('}') {
            json = format!(
                "{open}, \"sm\": {{\"sessions\": {sessions}, \"requested\": {requested}, \
                 \"acked\": {acked}, \"answered\": {answered}}}}}"
            );
        }
    }
    println!("{json}");
    // Idle connections and the MQTT event loop may still be running: do not wait for them.
    runtime.shutdown_timeout(Duration::from_millis(500));
    Ok(())
}

/// What a mode prints.
struct Report {
    human: String,
    json: String,
}

// ---------------------------------------------------------------------------------------------
// Measurements

/// The process-wide time origin for timestamps carried in message bodies.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Tells the driver (on standard output) that the measured part of a run starts or ends, so it
/// can read the servers' CPU time at those moments.
fn mark(what: &str) {
    println!("MARK {what}");
}

/// Marks the window `[from, until)` from a task of its own; await the handle before reporting,
/// so that both marks come first.
fn mark_window(from: Instant, until: Instant) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        tokio::time::sleep_until(from.into()).await;
        mark("start");
        tokio::time::sleep_until(until.into()).await;
        mark("end");
    })
}

fn now_us() -> u64 {
    epoch().elapsed().as_micros() as u64
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Default, Clone, Copy)]
struct Percentiles {
    n: usize,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

impl Percentiles {
    fn of(mut samples_us: Vec<u64>) -> Self {
        if samples_us.is_empty() {
            return Self::default();
        }
        samples_us.sort_unstable();
        let n = samples_us.len();
        let at = |q: f64| {
            let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
            samples_us[rank - 1] as f64 / 1000.0
        };
        Self {
            n,
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: samples_us[n - 1] as f64 / 1000.0,
        }
    }

    fn json(&self, prefix: &str) -> String {
        format!(
            "\"{prefix}p50_ms\": {:.3}, \"{prefix}p90_ms\": {:.3}, \"{prefix}p99_ms\": {:.3}, \
             \"{prefix}max_ms\": {:.3}",
            self.p50, self.p90, self.p99, self.max
        )
    }

    fn human(&self) -> String {
        format!(
            "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples)",
            self.p50, self.p90, self.p99, self.max, self.n
        )
    }
}

/// A JSON string literal.
fn json_str(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

// ---------------------------------------------------------------------------------------------
// Logging in

/// What every login of a run shares.
struct LoginSetup {
    conn: Conn,
    dns: DnsConfig,
    tls: Arc<rustls::ClientConfig>,
}

impl LoginSetup {
    fn new(conn: Conn) -> anyhow::Result<Arc<Self>> {
        let dns = dns_config(&conn.domain, Some(&conn.server)).map_err(|e| anyhow!(e))?;
        let tls = mqtt2xmpp::tls::client_config(conn.ca.as_deref())?;
        Ok(Arc::new(Self { conn, dns, tls }))
    }

    fn account(&self, n: usize) -> String {
        format!("{}{}", self.conn.prefix, self.conn.first + n)
    }
}

/// A bound session.
struct Client {
    stream: Stream,
    jid: FullJid,
    /// The XEP-0198 counters, once the server has enabled stream management.
    sm: Option<SmCounters>,
}

/// How often a client with stream management asks the server to acknowledge what it sent: an
/// `<r/>` after every fifth stanza, slixmpp's default (its XEP-0198 plugin's `window = 5`). A
/// client that never asks would leave the server's queue of unacknowledged stanzas unread;
/// one that asks after every stanza (as Conversations does for messages) doubles the nonzas.
const ACK_REQUEST_EVERY: u32 = 5;

/// A client's XEP-0198 counters (§4), all modulo 2^32.
#[derive(Debug, Default)]
struct SmCounters {
    /// Stanzas received since `<enabled/>`: the `h` of our `<a/>`.
    handled: u32,
    /// Stanzas sent since `<enable/>`.
    sent: u32,
    /// The server's latest `h`: how many of them it has acknowledged.
    acked: u32,
}

/// Stream management counts over the whole run, for the summary.
static SM_SESSIONS: AtomicU64 = AtomicU64::new(0);
static SM_REQUESTS_SENT: AtomicU64 = AtomicU64::new(0);
static SM_ACKS_RECEIVED: AtomicU64 = AtomicU64::new(0);
static SM_REQUESTS_ANSWERED: AtomicU64 = AtomicU64::new(0);

impl Client {
    /// Queues a stanza for writing (see [`Client::flush`]); with stream management, counts it
    /// and queues an `<r/>` after every [`ACK_REQUEST_EVERY`]th.
    async fn feed(&mut self, stanza: impl Into<Stanza>) -> anyhow::Result<()> {
        self.stream
            .feed(&XmppStreamElement::Stanza(stanza.into()))
            .await
            .context("write")?;
        if let Some(sm) = &mut self.sm {
            sm.sent = sm.sent.wrapping_add(1);
            if sm.sent % ACK_REQUEST_EVERY == 0 {
                self.stream
                    .feed(&XmppStreamElement::SM(sm::Nonza::Req(sm::R)))
                    .await
                    .context("write")?;
                SM_REQUESTS_SENT.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        <Stream as SinkExt<&XmppStreamElement>>::flush(&mut self.stream)
            .await
            .context("write")
    }

    async fn send(&mut self, stanza: impl Into<Stanza>) -> anyhow::Result<()> {
        self.feed(stanza).await?;
        self.flush().await
    }

    /// Handles what the stream yielded: a stanza is returned (and counted, with stream
    /// management); the server's `<r/>` is answered with our count and its `<a/>` recorded;
    /// stream errors, closes and read errors are errors. Takes the item rather than reading it,
    /// so that a `select!` can read with the cancel-safe `stream.next()`.
    async fn on_item(
        &mut self,
        item: Option<Result<FallibleStreamElement, ReadError>>,
    ) -> anyhow::Result<Option<Stanza>> {
        match item {
            Some(Ok(FallibleStreamElement::Ok(XmppStreamElement::Stanza(stanza)))) => {
                if let Some(sm) = &mut self.sm {
                    sm.handled = sm.handled.wrapping_add(1);
                }
                Ok(Some(stanza))
            }
            Some(Ok(FallibleStreamElement::Ok(XmppStreamElement::StreamError(e)))) => {
                bail!("stream error from the server: {e:?}")
            }
            Some(Ok(FallibleStreamElement::Ok(XmppStreamElement::SM(nonza)))) => {
                self.on_sm(nonza).await?;
                Ok(None)
            }
            Some(Ok(_)) | Some(Err(ReadError::SoftTimeout)) => Ok(None),
            Some(Err(e)) => bail!("read: {e}"),
            None => bail!("the server closed the connection"),
        }
    }

    /// A stream management nonza from the server, once enabled.
    async fn on_sm(&mut self, nonza: sm::Nonza) -> anyhow::Result<()> {
        let Some(counters) = &mut self.sm else {
            bail!("stream management element without stream management: {nonza:?}")
        };
        match nonza {
            // XEP-0198 §4: answer a request with the stanzas handled so far.
            sm::Nonza::Req(_) => {
                let h = counters.handled;
                self.stream
                    .send(&XmppStreamElement::SM(sm::Nonza::Ack(sm::A::new(h))))
                    .await
                    .context("write")?;
                SM_REQUESTS_ANSWERED.fetch_add(1, Ordering::Relaxed);
            }
            // §4: an `h` acknowledges stanzas we sent; more than we sent is the server's error.
            sm::Nonza::Ack(sm::A { h }) => {
                let unacked = counters.sent.wrapping_sub(counters.acked);
                if h.wrapping_sub(counters.acked) > unacked {
                    bail!(
                        "the server acknowledged h={h}, but only {} stanzas were sent",
                        counters.sent
                    );
                }
                counters.acked = h;
                SM_ACKS_RECEIVED.fetch_add(1, Ordering::Relaxed);
            }
            sm::Nonza::Failed(failed) => bail!("stream management failed: {failed:?}"),
            other => bail!("unexpected stream management element: {other:?}"),
        }
        Ok(())
    }

    /// The next stanza, answering stream management requests on the way.
    async fn next_stanza(&mut self) -> anyhow::Result<Stanza> {
        loop {
            let item = self.stream.next().await;
            if let Some(stanza) = self.on_item(item).await? {
                return Ok(stanza);
            }
        }
    }

    /// XEP-0198 §3: `<enable/>` (no resumption: a benchmark client does not come back), then
    /// wait for `<enabled/>`. Stanzas the server sends before it are not counted (§4 counts
    /// from `<enabled/>` on) and are dropped: right after binding there are none.
    async fn enable_sm(&mut self) -> anyhow::Result<()> {
        self.stream
            .send(&XmppStreamElement::SM(sm::Nonza::Enable(sm::Enable::new())))
            .await
            .context("write")?;
        loop {
            match self.stream.next().await {
                Some(Ok(FallibleStreamElement::Ok(XmppStreamElement::SM(nonza)))) => match nonza {
                    sm::Nonza::Enabled(_) => {
                        self.sm = Some(SmCounters::default());
                        SM_SESSIONS.fetch_add(1, Ordering::Relaxed);
                        return Ok(());
                    }
                    sm::Nonza::Failed(failed) => {
                        bail!("the server refused to enable stream management: {failed:?}")
                    }
                    other => bail!("expected <enabled/>, got {other:?}"),
                },
                item => {
                    self.on_item(item).await?;
                }
            }
        }
    }

    /// Answers an IQ get (a server's ping) so the server keeps the connection; ignores the rest.
    async fn answer_iq(&mut self, iq: Iq) -> anyhow::Result<()> {
        if let Iq::Get { from, id, .. } = iq {
            let to = from.unwrap_or_else(|| Jid::from(self.jid.domain().to_owned()));
            self.send(Iq::empty_result(to, id)).await?;
        }
        Ok(())
    }

    /// Sends the stream footer and waits briefly for the server's. With stream management, an
    /// `<a/>` goes first: the server then knows that everything it sent arrived, and keeps no
    /// stanza of ours for offline storage.
    async fn close(mut self) {
        let closing = async {
            if let Some(sm) = &self.sm {
                let ack = XmppStreamElement::SM(sm::Nonza::Ack(sm::A::new(sm.handled)));
                let _ = self.stream.feed(&ack).await;
            }
            let _ = <Stream as SinkExt<&XmppStreamElement>>::close(&mut self.stream).await;
            while let Some(item) = self.stream.next().await {
                if item.is_err() {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), closing).await;
    }
}

/// TCP, STARTTLS, TLS, SASL with the chosen mechanism, stream restart, resource binding, and
/// with `--stream-management`, XEP-0198's `<enable/>`.
async fn login(setup: &LoginSetup, user: &str, resource: &str) -> anyhow::Result<Client> {
    let attempt = async {
        let conn = &setup.conn;
        let bare = BareJid::new(&format!("{user}@{}", conn.domain))
            .with_context(|| format!("bad account {user}@{}", conn.domain))?;
        let jid = Jid::from(bare.clone());
        // Until the server binds a resource (and may choose another).
        let requested = bare
            .with_resource_str(resource)
            .with_context(|| format!("bad resource {resource}"))?;
        // A connector per connection: its login guard counts attempts per account.
        let connector = Connector::new(
            setup.dns.clone(),
            setup.tls.clone(),
            bare,
            Secret::new(conn.password.clone()),
        );
        let (pending, binding) = connector
            .connect(&jid, ns::JABBER_CLIENT, TIMEOUTS)
            .await
            .context("connect and STARTTLS")?;
        let (features, stream) = pending
            .recv_features::<FallibleStreamElement>()
            .await
            .context("stream features after TLS")?;
        let (mechanisms, binding) = if conn.mechanism.eq_ignore_ascii_case("auto") {
            (features.sasl_mechanisms, binding)
        } else {
            let wanted = conn.mechanism.to_ascii_uppercase();
            if !features.sasl_mechanisms.contains(&wanted) {
                bail!(
                    "the server does not offer {wanted} (it offers {:?})",
                    features.sasl_mechanisms
                );
            }
            (BTreeSet::from([wanted]), ChannelBinding::None)
        };
        let creds = Credentials::default()
            .with_username(user)
            .with_password(conn.password.clone())
            .with_channel_binding(binding);
        let authenticated = tokio_xmpp::client_login(stream, mechanisms, creds)
            .await
            .context("SASL")?;
        let (features, mut stream) = authenticated
            .send_header(StreamHeader {
                to: Some(conn.domain.clone().into()),
                from: None,
                id: None,
            })
            .await?
            .recv_features::<FallibleStreamElement>()
            .await
            .context("stream features after SASL")?;
        // XEP-0198 §2: the server advertises stream management in these features.
        if conn.stream_management && features.stream_management.is_none() {
            bail!(
                "--stream-management: the server does not offer stream management (no <sm \
                 xmlns='urn:xmpp:sm:3'/> in its stream features)"
            );
        }
        let bind = Iq::from_set("bind", BindQuery::new(Some(resource.to_owned())));
        stream.send(&XmppStreamElement::Stanza(bind.into())).await?;
        let mut client = Client {
            stream,
            jid: requested,
            sm: None,
        };
        loop {
            match client.next_stanza().await? {
                Stanza::Iq(Iq::Result {
                    id,
                    payload: Some(payload),
                    ..
                }) if id == "bind" => {
                    let bound = BindResponse::try_from(payload)
                        .map_err(|e| anyhow!("bad bind result: {e:?}"))?;
                    client.jid = bound.jid;
                    break;
                }
                Stanza::Iq(iq) if iq.id() == "bind" => bail!("bind refused: {iq:?}"),
                _ => {}
            }
        }
        // XEP-0198 §3: enabled after binding, as clients do.
        if conn.stream_management {
            // Acks are small writes of their own between stanzas: with Nagle's algorithm a
            // message written right after an `<a/>` waits for the peer's delayed ACK (up to
            // 40 ms). Clients turn it off (asyncio, under slixmpp, does by default); without
            // stream management every write is a whole batch, and the setting stays as it was.
            let _ = client
                .stream
                .get_stream()
                .get_ref()
                .get_ref()
                .0
                .set_nodelay(true);
            client.enable_sm().await.context("stream management")?;
        }
        Ok(client)
    };
    tokio::time::timeout(LOGIN_TIMEOUT, attempt)
        .await
        .map_err(|_| anyhow!("no login within {LOGIN_TIMEOUT:?}"))?
}

/// Logs in `count` clients (accounts 0 … count − 1 of the run, resource `resource`), at most
/// `setup_concurrency` at a time. Fails on the first failed login.
async fn login_all(
    setup: &Arc<LoginSetup>,
    count: usize,
    resource: &str,
) -> anyhow::Result<Vec<Client>> {
    let gate = Arc::new(Semaphore::new(setup.conn.setup_concurrency.max(1)));
    let mut tasks = Vec::with_capacity(count);
    for n in 0..count {
        let (setup, gate, resource) = (setup.clone(), gate.clone(), resource.to_owned());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await;
            let user = setup.account(n);
            login(&setup, &user, &resource)
                .await
                .with_context(|| format!("login of {user}"))
        }));
    }
    let mut clients = Vec::with_capacity(count);
    for task in tasks {
        clients.push(task.await??);
    }
    Ok(clients)
}

/// The mechanism line of a summary.
fn mechanism(conn: &Conn) -> String {
    if conn.mechanism.eq_ignore_ascii_case("auto") {
        "auto (tokio-xmpp's choice, tls-exporter binding)".into()
    } else {
        conn.mechanism.to_ascii_uppercase()
    }
}

// ---------------------------------------------------------------------------------------------
// route

#[derive(Debug, Default)]
struct RouteStats {
    sent: u64,
    received: u64,
    latencies_us: Vec<u64>,
    error: Option<String>,
}

/// When a route run's phases end.
#[derive(Debug, Clone, Copy)]
struct Plan {
    measure_from: Instant,
    measure_until: Instant,
    stop: Instant,
}

async fn route(args: RouteArgs) -> anyhow::Result<Report> {
    if args.pairs == 0 {
        bail!("--pairs must be at least 1");
    }
    let setup = LoginSetup::new(args.conn.clone())?;
    let clients_n = 2 * args.pairs;
    let started = Instant::now();
    let mut clients = login_all(&setup, clients_n, "route").await?;
    let setup_time = started.elapsed();
    for client in &mut clients {
        client.send(Presence::available()).await?;
    }
    let jids: Vec<FullJid> = clients.iter().map(|c| c.jid.clone()).collect();
    let run_id = format!("{:08x}", rand::random::<u32>());
    let saturate = args.rate <= 0.0;
    let window = args.window.max(1);
    let credits: Arc<Vec<Semaphore>> = Arc::new(
        (0..clients_n)
            .map(|_| Semaphore::new(if saturate { window } else { 0 }))
            .collect(),
    );
    let now = Instant::now();
    let plan = Plan {
        measure_from: now + args.warmup,
        measure_until: now + args.warmup + args.duration,
        stop: now + args.warmup + args.duration + DRAIN,
    };
    let marks = mark_window(plan.measure_from, plan.measure_until);
    let per_client_rate = args.rate / clients_n as f64;
    let padding = "x".repeat(args.padding);
    let mut tasks = Vec::with_capacity(clients_n);
    for (index, client) in clients.into_iter().enumerate() {
        let partner = jids[index ^ 1].clone();
        let credits = credits.clone();
        let (run_id, padding) = (run_id.clone(), padding.clone());
        tasks.push(tokio::spawn(route_client(
            client,
            index,
            partner,
            credits,
            plan,
            (!saturate).then_some(per_client_rate),
            window,
            run_id,
            padding,
        )));
    }
    let mut total = RouteStats::default();
    let mut errors = Vec::new();
    for task in tasks {
        let stats = task.await?;
        total.sent += stats.sent;
        total.received += stats.received;
        total.latencies_us.extend(stats.latencies_us);
        errors.extend(stats.error);
    }
    marks.await?;
    let seconds = args.duration.as_secs_f64();
    let received_rate = total.received as f64 / seconds;
    let latency = Percentiles::of(std::mem::take(&mut total.latencies_us));
    let mode = if saturate {
        format!("saturation, window {window} per client")
    } else {
        format!("fixed rate {} msg/s", args.rate)
    };
    let human = format!(
        "route: {} pairs, {mode}, {}: {:.0} msg/s received over {seconds:.0} s \
         ({} sent in the run); latency {}; {} connection errors{}; logins took {:.1} s",
        args.pairs,
        mechanism(&args.conn),
        received_rate,
        total.sent,
        latency.human(),
        errors.len(),
        errors
            .first()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default(),
        setup_time.as_secs_f64(),
    );
    let json = format!(
        "{{\"mode\": \"route\", \"pairs\": {}, \"rate\": {}, \"window\": {window}, \
         \"duration_s\": {seconds}, \"msgs_per_s\": {received_rate:.1}, \"received\": {}, \
         \"sent\": {}, {}, \"errors\": {}, \"setup_s\": {:.2}}}",
        args.pairs,
        args.rate,
        total.received,
        total.sent,
        latency.json(""),
        errors.len(),
        setup_time.as_secs_f64()
    );
    Ok(Report { human, json })
}

/// One client of a pair: sends to `partner` (on credit, or on a timer), reads what the partner
/// sends, and gives the partner a credit back for each message received.
#[allow(clippy::too_many_arguments)]
async fn route_client(
    mut client: Client,
    index: usize,
    partner: FullJid,
    credits: Arc<Vec<Semaphore>>,
    plan: Plan,
    rate: Option<f64>,
    window: usize,
    run_id: String,
    padding: String,
) -> RouteStats {
    let mut stats = RouteStats::default();
    let own = &credits[index];
    let partners = &credits[index ^ 1];
    let mut ticker = rate.map(|rate| {
        let period = Duration::from_secs_f64(1.0 / rate);
        // A random phase, so that the clients' sends spread over the period.
        let phase = period.mul_f64(rand::random::<f64>());
        tokio::time::interval_at(tokio::time::Instant::now() + phase, period)
    });
    let partner = Jid::from(partner);
    let mut seq = 0u64;
    let result: anyhow::Result<()> = async {
        loop {
            let sending = Instant::now() < plan.measure_until;
            tokio::select! {
                biased;
                // `next()` is cancel-safe; what it read is handled in full (an `<r/>` is
                // answered) before the next `select!`.
                element = client.stream.next() => match client.on_item(element).await? {
                    Some(Stanza::Message(message)) => {
                        let Some(sent_us) = timestamp(&message, &run_id) else {
                            continue;
                        };
                        let now = Instant::now();
                        if now >= plan.measure_from && now < plan.measure_until {
                            stats.received += 1;
                            stats.latencies_us.push(now_us().saturating_sub(sent_us));
                        }
                        partners.add_permits(1);
                    }
                    Some(Stanza::Iq(iq)) => client.answer_iq(iq).await?,
                    Some(Stanza::Presence(_)) | None => {}
                },
                permit = own.acquire(), if sending && ticker.is_none() => {
                    if let Ok(permit) = permit {
                        permit.forget();
                        // Send everything the partner has acknowledged so far in one write.
                        let mut batch = 1;
                        while batch < window {
                            match own.try_acquire() {
                                Ok(permit) => { permit.forget(); batch += 1; }
                                Err(_) => break,
                            }
                        }
                        for _ in 0..batch {
                            let message = chat(&partner, &run_id, seq, &padding);
                            seq += 1;
                            client.feed(message).await?;
                        }
                        client.flush().await?;
                        stats.sent += batch as u64;
                    }
                }
                _ = tick(&mut ticker), if sending && ticker.is_some() => {
                    let message = chat(&partner, &run_id, seq, &padding);
                    seq += 1;
                    client.send(message).await?;
                    stats.sent += 1;
                }
                _ = tokio::time::sleep_until(plan.stop.into()) => return Ok(()),
            }
        }
    }
    .await;
    if let Err(e) = result {
        stats.error = Some(format!("{}: {e:#}", client.jid));
    } else {
        client.close().await;
    }
    stats
}

async fn tick(ticker: &mut Option<tokio::time::Interval>) {
    match ticker {
        Some(ticker) => {
            ticker.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// A chat message whose body carries the run, the send time and a sequence number.
fn chat(to: &Jid, run_id: &str, seq: u64, padding: &str) -> Message {
    let body = format!("{run_id} {} {seq} {padding}", now_us());
    let mut message = Message::chat(Some(to.clone())).with_body(Default::default(), body);
    message.id = Some(Id(format!("m{seq}")));
    message
}

/// The send time in a message of this run (messages of earlier runs, stored offline by the
/// server and delivered at login, are ignored).
fn timestamp(message: &Message, run_id: &str) -> Option<u64> {
    if message.type_ == MessageType::Error {
        return None;
    }
    let (_, body) = message.get_best_body(Vec::new())?;
    let mut words = body.split(' ');
    (words.next()? == run_id).then_some(())?;
    words.next()?.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// login

async fn login_mode(args: LoginArgs) -> anyhow::Result<Report> {
    let setup = LoginSetup::new(args.conn.clone())?;
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    mark("start");
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (setup, next, failures, first_error) = (
            setup.clone(),
            next.clone(),
            failures.clone(),
            first_error.clone(),
        );
        let (count, users) = (args.count, args.users.max(1));
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut closing = Vec::new();
            loop {
                let k = next.fetch_add(1, Ordering::SeqCst);
                if k >= count {
                    break;
                }
                let user = setup.account(k % users);
                let began = Instant::now();
                match login(&setup, &user, &format!("login{k}")).await {
                    Ok(client) => {
                        latencies.push(began.elapsed().as_micros() as u64);
                        // Closing is not part of a login: do it on the side.
                        closing.push(tokio::spawn(client.close()));
                    }
                    Err(e) => {
                        failures.fetch_add(1, Ordering::SeqCst);
                        let mut first = first_error.lock().unwrap_or_else(|e| e.into_inner());
                        first.get_or_insert_with(|| format!("{user}: {e:#}"));
                    }
                }
            }
            (latencies, closing)
        }));
    }
    let mut latencies = Vec::new();
    let mut closing = Vec::new();
    for worker in workers {
        let (l, c) = worker.await?;
        latencies.extend(l);
        closing.extend(c);
    }
    let elapsed = started.elapsed().as_secs_f64();
    mark("end");
    for task in closing {
        let _ = task.await;
    }
    let ok = latencies.len();
    let rate = ok as f64 / elapsed;
    let latency = Percentiles::of(latencies);
    let failed = failures.load(Ordering::SeqCst);
    let first_error = first_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let human = format!(
        "login: {ok} logins ({failed} failed{}) with {}, {} at a time, in {elapsed:.2} s: \
         {rate:.1} logins/s; one login {}",
        first_error
            .as_ref()
            .map(|e| format!(", first: {e}"))
            .unwrap_or_default(),
        mechanism(&args.conn),
        args.concurrency,
        latency.human()
    );
    let json = format!(
        "{{\"mode\": \"login\", \"count\": {ok}, \"failed\": {failed}, \"concurrency\": {}, \
         \"elapsed_s\": {elapsed:.3}, \"logins_per_s\": {rate:.1}, {}, \"error\": {}}}",
        args.concurrency,
        latency.json(""),
        first_error
            .as_deref()
            .map(json_str)
            .unwrap_or_else(|| "null".into())
    );
    Ok(Report { human, json })
}

// ---------------------------------------------------------------------------------------------
// idle

async fn idle(args: IdleArgs) -> anyhow::Result<Report> {
    let setup = LoginSetup::new(args.conn.clone())?;
    let gate = Arc::new(Semaphore::new(args.conn.setup_concurrency.max(1)));
    let connected = Arc::new(AtomicU64::new(0));
    let lost = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(tokio::sync::Notify::new());
    let stopping = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut logins = Vec::with_capacity(args.count);
    for n in 0..args.count {
        let (setup, gate, connected, lost, stop, stopping) = (
            setup.clone(),
            gate.clone(),
            connected.clone(),
            lost.clone(),
            stop.clone(),
            stopping.clone(),
        );
        let presence = !args.no_presence;
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<(), String>>();
        tokio::spawn(async move {
            let permit = gate.acquire().await;
            let user = setup.account(n);
            let mut client = match login(&setup, &user, "idle").await {
                Ok(client) => client,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("{user}: {e:#}")));
                    return;
                }
            };
            if presence {
                if let Err(e) = client.send(Presence::available()).await {
                    let _ = ready_tx.send(Err(format!("{user}: {e:#}")));
                    return;
                }
            }
            drop(permit);
            connected.fetch_add(1, Ordering::SeqCst);
            let _ = ready_tx.send(Ok(()));
            // Hold: read (and answer pings) until told to stop.
            loop {
                tokio::select! {
                    _ = stop.notified() => break,
                    stanza = client.next_stanza() => match stanza {
                        Ok(Stanza::Iq(iq)) => {
                            if client.answer_iq(iq).await.is_err() {
                                lost.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(_) => {
                            if !stopping.load(Ordering::SeqCst) {
                                lost.fetch_add(1, Ordering::SeqCst);
                            }
                            return;
                        }
                    },
                }
            }
        });
        logins.push(ready_rx);
    }
    let mut failed = 0u64;
    let mut first_error = None;
    for ready in logins {
        match ready.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
            Err(_) => failed += 1,
        }
    }
    let setup_time = started.elapsed().as_secs_f64();
    let held = connected.load(Ordering::SeqCst);
    eprintln!(
        "idle: {held} of {} connections authenticated and bound in {setup_time:.1} s \
         ({failed} failed{}); holding them until standard input closes",
        args.count,
        first_error
            .as_ref()
            .map(|e| format!(", first: {e}"))
            .unwrap_or_default()
    );
    println!("READY {held}");
    // Hold until standard input closes (or --hold passes).
    let (eof_tx, eof_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        let _ = eof_tx.send(());
    });
    let _ = tokio::time::timeout(args.hold, eof_rx).await;
    let lost_while_held = lost.load(Ordering::SeqCst);
    stopping.store(true, Ordering::SeqCst);
    stop.notify_waiters();
    let human = format!(
        "idle: held {held} connections ({failed} failed to log in, {lost_while_held} lost while \
         held)"
    );
    let json = format!(
        "{{\"mode\": \"idle\", \"requested\": {}, \"held\": {held}, \"failed\": {failed}, \
         \"lost\": {lost_while_held}, \"setup_s\": {setup_time:.2}, \"error\": {}}}",
        args.count,
        first_error
            .as_deref()
            .map(json_str)
            .unwrap_or_else(|| "null".into())
    );
    Ok(Report { human, json })
}

// ---------------------------------------------------------------------------------------------
// ask

#[derive(Debug, Default)]
struct AskStats {
    replies: u64,
    unexpected: u64,
    timeouts: u64,
    latencies_us: Vec<u64>,
    sample: Option<String>,
    error: Option<String>,
}

/// Sends `question` to `to` and waits for a chat reply from it. `Ok(None)`: no reply in time.
async fn ask_once(
    client: &mut Client,
    to: &Jid,
    question: &str,
    n: u64,
) -> anyhow::Result<Option<String>> {
    let mut message =
        Message::chat(Some(to.clone())).with_body(Default::default(), question.into());
    message.id = Some(Id(format!("ask{n}")));
    client.send(message).await?;
    let to_bare = to.to_bare();
    let wait = async {
        loop {
            match client.next_stanza().await? {
                Stanza::Message(reply) => {
                    if reply.from.as_ref().map(|f| f.to_bare()) != Some(to_bare.clone()) {
                        continue;
                    }
                    if reply.type_ == MessageType::Error {
                        bail!("error reply from {to}: {reply:?}");
                    }
                    if let Some((_, body)) = reply.get_best_body(Vec::new()) {
                        return Ok(body.clone());
                    }
                }
                Stanza::Iq(iq) => client.answer_iq(iq).await?,
                Stanza::Presence(_) => {}
            }
        }
    };
    match tokio::time::timeout(ASK_TIMEOUT, wait).await {
        Ok(reply) => reply.map(Some),
        Err(_) => Ok(None),
    }
}

async fn ask(args: AskArgs) -> anyhow::Result<Report> {
    let to: Jid = args.to.parse().context("--to")?;
    let setup = LoginSetup::new(args.conn.clone())?;
    let mut clients = login_all(&setup, args.askers.max(1), "ask").await?;
    for client in &mut clients {
        // Negative priority: replies to the full JID still come here.
        client.send(Presence::available().with_priority(-1)).await?;
    }
    let now = Instant::now();
    let measure_from = now + args.warmup;
    let measure_until = measure_from + args.duration;
    let marks = mark_window(measure_from, measure_until);
    let mut tasks = Vec::new();
    for mut client in clients {
        let (to, question, expect) = (to.clone(), args.message.clone(), args.expect.clone());
        tasks.push(tokio::spawn(async move {
            let mut stats = AskStats::default();
            let mut n = 0u64;
            while Instant::now() < measure_until {
                let began = Instant::now();
                n += 1;
                match ask_once(&mut client, &to, &question, n).await {
                    Ok(Some(reply)) => {
                        let done = Instant::now();
                        if began >= measure_from && done <= measure_until {
                            stats.replies += 1;
                            stats.latencies_us.push((done - began).as_micros() as u64);
                            if expect.as_ref().is_some_and(|e| !reply.contains(e.as_str())) {
                                stats.unexpected += 1;
                            }
                        }
                        stats.sample.get_or_insert(reply);
                    }
                    Ok(None) => stats.timeouts += 1,
                    Err(e) => {
                        stats.error = Some(format!("{}: {e:#}", client.jid));
                        return stats;
                    }
                }
            }
            client.close().await;
            stats
        }));
    }
    let mut total = AskStats::default();
    let mut errors = Vec::new();
    for task in tasks {
        let stats = task.await?;
        total.replies += stats.replies;
        total.unexpected += stats.unexpected;
        total.timeouts += stats.timeouts;
        total.latencies_us.extend(stats.latencies_us);
        if total.sample.is_none() {
            total.sample = stats.sample;
        }
        errors.extend(stats.error);
    }
    marks.await?;
    let seconds = args.duration.as_secs_f64();
    let rate = total.replies as f64 / seconds;
    let latency = Percentiles::of(total.latencies_us);
    let sample = total.sample.unwrap_or_default();
    let human = format!(
        "ask: {} askers → {}: {rate:.1} asks/s over {seconds:.0} s; round trip {}; \
         {} unexpected, {} timed out, {} errors{}; a reply: {sample:?}",
        args.askers,
        args.to,
        latency.human(),
        total.unexpected,
        total.timeouts,
        errors.len(),
        errors
            .first()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default(),
    );
    let json = format!(
        "{{\"mode\": \"ask\", \"askers\": {}, \"duration_s\": {seconds}, \
         \"asks_per_s\": {rate:.1}, \"replies\": {}, {}, \"unexpected\": {}, \"timeouts\": {}, \
         \"errors\": {}, \"sample\": {}}}",
        args.askers,
        total.replies,
        latency.json(""),
        total.unexpected,
        total.timeouts,
        errors.len(),
        json_str(&sample)
    );
    Ok(Report { human, json })
}

// ---------------------------------------------------------------------------------------------
// MQTT: fresh and publish

/// An MQTT client whose event loop runs in its own task; counts acknowledgements.
struct Mqtt {
    client: AsyncClient,
    acked: Arc<AtomicU64>,
}

fn mqtt_connect(address: &str, name: &str) -> anyhow::Result<Mqtt> {
    let address: SocketAddr = address.parse().context("MQTT address (HOST:PORT)")?;
    let id = format!("loadgen-{name}-{:08x}", rand::random::<u32>());
    let mut options = MqttOptions::new(id, address.ip().to_string(), address.port());
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(options, 1000);
    let acked = Arc::new(AtomicU64::new(0));
    let counter = acked.clone();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(MqttEvent::Incoming(Packet::PubAck(_))) => {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("MQTT: {e}; reconnecting");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
    Ok(Mqtt { client, acked })
}

async fn fresh(args: FreshArgs) -> anyhow::Result<Report> {
    let to: Jid = args.to.parse().context("--to")?;
    let setup = LoginSetup::new(args.conn.clone())?;
    let mut client = login(&setup, &setup.account(0), "fresh").await?;
    client.send(Presence::available().with_priority(-1)).await?;
    let mqtt = mqtt_connect(&args.mqtt, "fresh")?;
    let samples = args.samples.max(1);
    // Marker k (the value base + k) is published at start + k × interval, whatever the bot
    // does meanwhile; published[k] is when.
    let published = Arc::new(std::sync::Mutex::new(vec![None::<Instant>; samples]));
    let started = Instant::now();
    let mut publisher = {
        let (published, client, topic) = (published.clone(), mqtt.client.clone(), args.topic);
        let (base, interval) = (args.base, args.interval);
        tokio::spawn(async move {
            for k in 0..samples {
                tokio::time::sleep_until((started + interval.mul_f64(k as f64)).into()).await;
                published.lock().unwrap_or_else(|e| e.into_inner())[k] = Some(Instant::now());
                let marker = (base + k as u64).to_string().into_bytes();
                client
                    .publish(topic.clone(), QoS::AtLeastOnce, false, marker)
                    .await?;
            }
            anyhow::Ok(Instant::now())
        })
    };
    // Ask until a reply shows the last marker. A reply showing marker v settles every marker
    // up to v: the ones before it were overwritten before the bot could show them.
    let mut freshness = Vec::new();
    let mut settled = 0usize;
    let mut asks = 0u64;
    let mut last_published = None;
    while settled < samples {
        if last_published.is_none() && publisher.is_finished() {
            last_published = Some((&mut publisher).await??);
        }
        if last_published.is_some_and(|at: Instant| at.elapsed() > args.timeout) {
            break;
        }
        asks += 1;
        let reply = ask_once(&mut client, &to, "temperature?", asks).await?;
        let now = Instant::now();
        let shown = reply
            .as_deref()
            .unwrap_or_default()
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|word| word.parse::<u64>().ok())
            .filter(|v| *v >= args.base)
            .max();
        // The newest marker the reply settles: the one it shows, or, for a value above every
        // marker of this run (published by someone else after them), the last one published
        // so far. A marker not published yet is a value left from an earlier run: not news.
        let upto = shown.and_then(|v| {
            let published = published.lock().unwrap_or_else(|e| e.into_inner());
            let index = usize::try_from(v - args.base).ok()?;
            if index < samples {
                published[index].is_some().then_some(index)
            } else {
                published.iter().rposition(Option::is_some)
            }
        });
        match upto {
            Some(index) if index >= settled => {
                let published = published.lock().unwrap_or_else(|e| e.into_inner());
                if args.first_only {
                    let first = published[0].ok_or_else(|| anyhow!("no marker published"))?;
                    freshness.push(now.duration_since(first).as_micros() as u64);
                    settled = samples;
                    publisher.abort();
                    break;
                }
                for at in published[settled..=index].iter().flatten() {
                    freshness.push(now.duration_since(*at).as_micros() as u64);
                }
                settled = index + 1;
            }
            _ => tokio::time::sleep(args.poll).await,
        }
    }
    if last_published.is_none() && !args.first_only {
        publisher.await??;
    }
    client.close().await;
    let missed = samples - settled;
    let latency = Percentiles::of(freshness);
    let human = format!(
        "fresh: {samples} markers, one every {:?}: publish → value in a reply of {}: {} \
         ({missed} never shown within {:?}; {asks} asks)",
        args.interval,
        args.to,
        latency.human(),
        args.timeout
    );
    let markers = published
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .flatten()
        .count();
    let json = format!(
        "{{\"mode\": \"fresh\", \"samples\": {}, \"missed\": {missed}, {}, \"asks\": {asks}, \
         \"published\": {markers}}}",
        latency.n,
        latency.json("")
    );
    Ok(Report { human, json })
}

async fn publish(args: PublishArgs) -> anyhow::Result<Report> {
    let mqtt = mqtt_connect(&args.mqtt, "publish")?;
    let started = Instant::now();
    let gap = (args.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / args.rate));
    for n in 0..args.topics {
        if let Some(gap) = gap {
            tokio::time::sleep_until((started + gap.mul_f64(n as f64)).into()).await;
        }
        // JSON, as `mqtt2xmpp simulate --building` publishes.
        let value = format!("{{\"value\": {:.2}}}", 15.0 + (n % 1500) as f64 / 100.0);
        mqtt.client
            .publish(
                format!("{}{n}", args.prefix),
                QoS::AtLeastOnce,
                false,
                value.into_bytes(),
            )
            .await?;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while mqtt.acked.load(Ordering::SeqCst) < args.topics as u64 {
        if Instant::now() > deadline {
            bail!(
                "only {} of {} publications acknowledged",
                mqtt.acked.load(Ordering::SeqCst),
                args.topics
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let _ = mqtt.client.disconnect().await;
    let rate = args.topics as f64 / elapsed;
    let human = format!(
        "publish: {} topics under {} acknowledged in {elapsed:.2} s ({rate:.0}/s)",
        args.topics, args.prefix
    );
    let json = format!(
        "{{\"mode\": \"publish\", \"topics\": {}, \"elapsed_s\": {elapsed:.3}, \
         \"per_s\": {rate:.1}}}",
        args.topics
    );
    Ok(Report { human, json })
}

// ---------------------------------------------------------------------------------------------
// room

/// The XEP-0045 namespaces the room mode speaks.
const NS_MUC: &str = "http://jabber.org/protocol/muc";
const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";
const NS_MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";

/// How long joining the room may take, for one occupant.
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);

/// What one occupant counted.
#[derive(Debug, Default)]
struct RoomStats {
    sent: u64,
    received: u64,
    latencies_us: Vec<u64>,
    error: Option<String>,
}

async fn room(args: RoomArgs) -> anyhow::Result<Report> {
    if args.occupants == 0 || args.senders > args.occupants {
        bail!("--occupants must be at least 1, and --senders at most --occupants");
    }
    let room = BareJid::new(&args.room).with_context(|| format!("bad room {}", args.room))?;
    let setup = LoginSetup::new(args.conn.clone())?;
    let started = Instant::now();
    let mut clients = login_all(&setup, args.occupants, "room").await?;
    let login_time = started.elapsed();
    for client in &mut clients {
        client.send(Presence::available()).await?;
    }
    // The first occupant creates the room and asks for an instant one (XEP-0045 §10.1.2; a
    // server with unlocked rooms answers an error or a result, either will do); then the
    // others join together.
    let mut rest = clients.split_off(1);
    let mut creator = clients.pop().context("no occupant")?;
    join_room(&mut creator, &room, true).await?;
    let mut joins = Vec::with_capacity(rest.len());
    for mut client in rest.drain(..) {
        let room = room.clone();
        joins.push(tokio::spawn(async move {
            join_room(&mut client, &room, false).await.map(|_| client)
        }));
    }
    let mut clients = vec![creator];
    for join in joins {
        clients.push(join.await??);
    }
    let join_time = started.elapsed() - login_time;

    let run_id = format!("{:08x}", rand::random::<u32>());
    let window = args.window.max(1);
    let now = Instant::now();
    let plan = Plan {
        measure_from: now + args.warmup,
        measure_until: now + args.warmup + args.duration,
        stop: now + args.warmup + args.duration + DRAIN,
    };
    let marks = mark_window(plan.measure_from, plan.measure_until);
    let padding = "x".repeat(args.padding);
    let mut tasks = Vec::with_capacity(clients.len());
    for (index, client) in clients.into_iter().enumerate() {
        let sender = (index < args.senders).then_some(index);
        tasks.push(tokio::spawn(room_client(
            client,
            room.clone(),
            sender,
            plan,
            window,
            run_id.clone(),
            padding.clone(),
        )));
    }
    let mut total = RoomStats::default();
    let mut errors = Vec::new();
    for task in tasks {
        let stats = task.await?;
        total.sent += stats.sent;
        total.received += stats.received;
        total.latencies_us.extend(stats.latencies_us);
        errors.extend(stats.error);
    }
    marks.await?;
    let seconds = args.duration.as_secs_f64();
    let delivered_rate = total.received as f64 / seconds;
    let latency = Percentiles::of(std::mem::take(&mut total.latencies_us));
    let human = format!(
        "room: {} occupants of {room}, {} senders with {window} in flight each, {}: \
         {delivered_rate:.0} groupchat deliveries/s over {seconds:.0} s ({} messages sent in the \
         run); latency {}; {} connection errors{}; logins took {:.1} s, joins {:.1} s",
        args.occupants,
        args.senders,
        mechanism(&args.conn),
        total.sent,
        latency.human(),
        errors.len(),
        errors
            .first()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default(),
        login_time.as_secs_f64(),
        join_time.as_secs_f64(),
    );
    let json = format!(
        "{{\"mode\": \"room\", \"occupants\": {}, \"senders\": {}, \"window\": {window}, \
         \"duration_s\": {seconds}, \"delivered_per_s\": {delivered_rate:.1}, \"received\": {}, \
         \"sent\": {}, {}, \"errors\": {}, \"login_s\": {:.2}, \"join_s\": {:.2}}}",
        args.occupants,
        args.senders,
        total.received,
        total.sent,
        latency.json(""),
        errors.len(),
        login_time.as_secs_f64(),
        join_time.as_secs_f64(),
    );
    Ok(Report { human, json })
}

/// The nick of a client in the room: its account's local part.
fn nick_of(client: &Client) -> String {
    client
        .jid
        .node()
        .map(|n| n.as_str().to_string())
        .unwrap_or_default()
}

/// Joins `room` with no history (§7.2.15) and waits for the client's own presence (status 110,
/// §7.2.5); the creator then asks for an instant room (§10.1.2) and waits for the answer.
async fn join_room(client: &mut Client, room: &BareJid, create: bool) -> anyhow::Result<()> {
    let nick = nick_of(client);
    let occupant = room
        .with_resource_str(&nick)
        .with_context(|| format!("bad nick {nick}"))?;
    let attempt = async {
        let history = Element::builder("history", NS_MUC)
            .attr(
                tokio_xmpp::minidom::rxml::xml_ncname!("maxstanzas").into(),
                "0",
            )
            .build();
        let mut presence = Presence::available().with_to(Jid::from(occupant.clone()));
        presence
            .payloads
            .push(Element::builder("x", NS_MUC).append(history).build());
        client.send(presence).await?;
        loop {
            match client.next_stanza().await? {
                Stanza::Presence(p) if p.from.as_ref() == Some(&Jid::from(occupant.clone())) => {
                    if p.type_ == tokio_xmpp::parsers::presence::Type::Error {
                        bail!("join of {occupant} refused: {p:?}");
                    }
                    let own = p
                        .payloads
                        .iter()
                        .filter(|x| x.is("x", NS_MUC_USER))
                        .flat_map(|x| x.children())
                        .any(|c| c.is("status", NS_MUC_USER) && c.attr("code") == Some("110"));
                    if own {
                        break;
                    }
                }
                Stanza::Iq(iq) => client.answer_iq(iq).await?,
                _ => {}
            }
        }
        if create {
            let form = Element::builder("x", ns::DATA_FORMS)
                .attr(
                    tokio_xmpp::minidom::rxml::xml_ncname!("type").into(),
                    "submit",
                )
                .build();
            let query = Element::builder("query", NS_MUC_OWNER).append(form).build();
            let iq = Iq::Set {
                from: None,
                to: Some(Jid::from(room.clone())),
                id: "instant".into(),
                payload: query,
            };
            client.send(iq).await?;
            loop {
                match client.next_stanza().await? {
                    Stanza::Iq(Iq::Result { id, .. } | Iq::Error { id, .. }) if id == "instant" => {
                        break
                    }
                    Stanza::Iq(iq) => client.answer_iq(iq).await?,
                    _ => {}
                }
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(JOIN_TIMEOUT, attempt)
        .await
        .map_err(|_| anyhow!("{occupant}: not joined within {JOIN_TIMEOUT:?}"))?
}

/// One occupant: counts the groupchat messages of this run it gets (and their latency), and,
/// as sender number `sender`, keeps `window` messages in flight, one more for each of its own
/// that comes back.
async fn room_client(
    mut client: Client,
    room: BareJid,
    sender: Option<usize>,
    plan: Plan,
    window: usize,
    run_id: String,
    padding: String,
) -> RoomStats {
    let mut stats = RoomStats::default();
    let room = Jid::from(room);
    let mut credit = if sender.is_some() { window } else { 0 };
    let mut seq = 0u64;
    let result: anyhow::Result<()> = async {
        loop {
            let sending = Instant::now() < plan.measure_until;
            if let (Some(me), true, true) = (sender, sending, credit > 0) {
                // Everything the room has echoed back so far, in one write.
                for _ in 0..credit {
                    let body = format!("{run_id} {} {me} {seq} {padding}", now_us());
                    let mut message =
                        Message::groupchat(Some(room.clone())).with_body(Default::default(), body);
                    message.id = Some(Id(format!("g{me}-{seq}")));
                    seq += 1;
                    client.feed(message).await?;
                }
                client.flush().await?;
                stats.sent += credit as u64;
                credit = 0;
            }
            tokio::select! {
                biased;
                element = client.stream.next() => match client.on_item(element).await? {
                    Some(Stanza::Message(message)) => {
                        let Some((sent_us, from)) = room_timestamp(&message, &run_id) else {
                            continue;
                        };
                        let now = Instant::now();
                        if now >= plan.measure_from && now < plan.measure_until {
                            stats.received += 1;
                            stats.latencies_us.push(now_us().saturating_sub(sent_us));
                        }
                        if sender == Some(from) {
                            credit += 1;
                        }
                    }
                    Some(Stanza::Iq(iq)) => client.answer_iq(iq).await?,
                    Some(Stanza::Presence(_)) | None => {}
                },
                _ = tokio::time::sleep_until(plan.stop.into()) => return Ok(()),
            }
        }
    }
    .await;
    if let Err(e) = result {
        stats.error = Some(format!("{}: {e:#}", client.jid));
    } else {
        client.close().await;
    }
    stats
}

/// The send time and sender number in a groupchat message of this run.
fn room_timestamp(message: &Message, run_id: &str) -> Option<(u64, usize)> {
    if message.type_ != MessageType::Groupchat {
        return None;
    }
    let (_, body) = message.get_best_body(Vec::new())?;
    let mut words = body.split(' ');
    (words.next()? == run_id).then_some(())?;
    let sent = words.next()?.parse().ok()?;
    let from = words.next()?.parse().ok()?;
    Some((sent, from))
}

// ---------------------------------------------------------------------------------------------
// Upload

/// What the uploading clients of a run counted.
#[derive(Debug, Default)]
struct UploadStats {
    files: u64,
    bytes: u64,
    latencies_us: Vec<u64>,
    refused: u64,
    error: Option<String>,
}

/// One upload: a slot from `service` (XEP-0363 §4), then the PUT with the slot's headers over
/// a new TLS connection to the server's address (the URL's host is verified as the
/// certificate's name). Returns the HTTP status.
async fn upload_once(
    client: &mut Client,
    setup: &LoginSetup,
    service: &Jid,
    body: &[u8],
    n: u64,
) -> anyhow::Result<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_xmpp::parsers::http_upload::{SlotRequest, SlotResult};
    let id = format!("slot{n}");
    let request = SlotRequest {
        filename: format!("file{n}.bin"),
        size: body.len() as u64,
        content_type: Some("application/octet-stream".into()),
    };
    client
        .send(Iq::from_get(id.clone(), request).with_to(service.clone()))
        .await?;
    let slot = loop {
        match client.next_stanza().await? {
            Stanza::Iq(Iq::Result {
                id: got,
                payload: Some(payload),
                ..
            }) if got == id => {
                break SlotResult::try_from(payload).map_err(|e| anyhow!("bad slot: {e:?}"))?;
            }
            Stanza::Iq(iq) if iq.id() == id => bail!("slot refused: {iq:?}"),
            Stanza::Iq(iq) => client.answer_iq(iq).await?,
            _ => {}
        }
    };
    let url = slot.put.url.as_str();
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| anyhow!("not an https URL: {url}"))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, port.parse::<u16>()?),
        None => (authority, 443),
    };
    let server: SocketAddr = setup.conn.server.parse().context("--server")?;
    let tcp = TcpStream::connect((server.ip(), port)).await?;
    let _ = tcp.set_nodelay(true);
    let connector = tokio_rustls::TlsConnector::from(setup.tls.clone());
    let name = rustls::pki_types::ServerName::try_from(host.to_string())?;
    let mut tls = connector.connect(name, tcp).await?;
    let mut head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: {}\r\n\
         Content-Type: application/octet-stream\r\nConnection: close\r\n",
        body.len()
    );
    for header in &slot.put.headers {
        let name = match header.name {
            tokio_xmpp::parsers::http_upload::HeaderName::Authorization => "Authorization",
            tokio_xmpp::parsers::http_upload::HeaderName::Cookie => "Cookie",
            tokio_xmpp::parsers::http_upload::HeaderName::Expires => "Expires",
        };
        let _ = write!(head, "{name}: {}\r\n", header.value);
    }
    head.push_str("\r\n");
    tls.write_all(head.as_bytes()).await?;
    tls.write_all(body).await?;
    tls.flush().await?;
    let mut answer = Vec::new();
    // The status line is enough; the server closes after its answer (Connection: close).
    let mut buffer = [0u8; 4096];
    loop {
        let n = tls.read(&mut buffer).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buffer[..n]);
        if answer.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let status = std::str::from_utf8(answer.get(9..12).unwrap_or_default())
        .ok()
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| anyhow!("no HTTP answer: {:?}", String::from_utf8_lossy(&answer)))?;
    Ok(status)
}

async fn upload(args: UploadArgs) -> anyhow::Result<Report> {
    let service: Jid = args.service.parse().context("--service")?;
    let setup = LoginSetup::new(args.conn.clone())?;
    let clients = login_all(&setup, args.clients.max(1), "upload").await?;
    let body: Arc<Vec<u8>> = Arc::new((0..args.size).map(|i| (i * 31 % 251) as u8).collect());
    let now = Instant::now();
    let measure_from = now + args.warmup;
    let measure_until = measure_from + args.duration;
    let marks = mark_window(measure_from, measure_until);
    let mut tasks = Vec::new();
    for mut client in clients {
        let (setup, service, body) = (setup.clone(), service.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut stats = UploadStats::default();
            let mut n = 0u64;
            while Instant::now() < measure_until {
                let began = Instant::now();
                n += 1;
                match upload_once(&mut client, &setup, &service, &body, n).await {
                    Ok(status) if (200..300).contains(&status) => {
                        let done = Instant::now();
                        if began >= measure_from && done <= measure_until {
                            stats.files += 1;
                            stats.bytes += body.len() as u64;
                            stats.latencies_us.push((done - began).as_micros() as u64);
                        }
                    }
                    Ok(_) => stats.refused += 1,
                    Err(e) => {
                        stats.error = Some(format!("{}: {e:#}", client.jid));
                        return stats;
                    }
                }
            }
            client.close().await;
            stats
        }));
    }
    let mut total = UploadStats::default();
    let mut errors = Vec::new();
    for task in tasks {
        let stats = task.await?;
        total.files += stats.files;
        total.bytes += stats.bytes;
        total.refused += stats.refused;
        total.latencies_us.extend(stats.latencies_us);
        errors.extend(stats.error);
    }
    marks.await?;
    let seconds = args.duration.as_secs_f64();
    let files_per_s = total.files as f64 / seconds;
    let mb_per_s = total.bytes as f64 / seconds / 1e6;
    let latency = Percentiles::of(total.latencies_us);
    let human = format!(
        "upload: {} clients, {} bytes a file: {files_per_s:.1} files/s, {mb_per_s:.1} MB/s over \
         {seconds:.0} s; slot+PUT {}; {} refused, {} errors{}",
        args.clients,
        args.size,
        latency.human(),
        total.refused,
        errors.len(),
        errors
            .first()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default(),
    );
    let json = format!(
        "{{\"mode\": \"upload\", \"clients\": {}, \"size\": {}, \"duration_s\": {seconds}, \
         \"files_per_s\": {files_per_s:.2}, \"mb_per_s\": {mb_per_s:.2}, \"files\": {}, {}, \
         \"refused\": {}, \"errors\": {}}}",
        args.clients,
        args.size,
        total.files,
        latency.json(""),
        total.refused,
        errors.len()
    );
    Ok(Report { human, json })
}
