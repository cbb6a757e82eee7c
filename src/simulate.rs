//! `mqtt2xmpp simulate`: publishes believable sensor readings to any MQTT broker, so the bridge
//! can be tried, demonstrated and load-tested without a single real sensor.
//!
//! Two scenarios:
//!
//! - **Simple** (default): one temperature on one topic (`sensors/temperature`), a plain number
//!   such as `21.37` every `--interval`, wandering slowly between 15 and 30 °C. It is what the
//!   bridge reads with its default flags.
//! - **Building** (`--building ID`): the classic smart-building lab. Every floor has four wings
//!   (`N`, `S`, `E`, `O` — Spanish compass letters, `O` is *oeste*, west), every wing
//!   `--rooms-per-wing` rooms, every room four sensors:
//!   `ID/P_<floor>/<wing>/<room>/<TEMP|HUM|LUX|VIBR>`, floors and rooms numbered from 1. Payloads
//!   are JSON, `{"value": 21.4, "unit": "C", "ts": "2026-11-21T08:00:00Z"}`. Each message goes to
//!   a randomly chosen sensor, and the gap before the next one is random (uniform between half
//!   and one and a half times `1/--rate`, so the average rate is exactly `--rate` and no gap is
//!   ever long). Each sensor keeps its own state, so its readings walk smoothly however many
//!   other sensors speak in between; vibration adds an occasional spike.
//!
//! The module is split like the rest of the crate: a sans-IO core ([`Generator`] and the
//! private `Tally` and `Schedule` bookkeeping) that decides *what* to publish and *when*, driven
//! by any seeded RNG and clock and unit-tested here, and a thin driver ([`run`]) that hands the
//! messages to rumqttc.
//!
//! Delivery: messages go out with QoS 1 by default, so the broker acknowledges each one and
//! `--count N` means "N messages acknowledged" before the process exits 0; QoS 1 also gives
//! natural back-pressure (at most [`MAX_OUTSTANDING`] unacknowledged messages). `--qos 0` is
//! fire-and-forget for raw load: a message then counts once it has been written to the
//! connection, and the clean DISCONNECT at the end follows it on the same TCP stream. The
//! session is clean: after a reconnect, messages that were not yet acknowledged are given up
//! (counted as *abandoned* in the summary) and replaced by new readings, so a run with
//! reconnects delivers at least, not exactly, `--count`.
//!
//! rumqttc's `EventLoop::poll` is not safe to cancel at every point (a publish taken from the
//! request queue can be lost if the future is dropped while writing), and the publisher's timer
//! fires constantly, so the event loop runs in a task of its own that is never cancelled
//! mid-poll; it forwards events over a channel, and sleeps our own jittered backoff after a
//! failure (rumqttc would otherwise reconnect at once).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Outgoing,
    Packet, QoS, TlsConfiguration, Transport,
};
use thiserror::Error;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::bridge::mqtt::MqttError;
use crate::cli::SimulateArgs;
use crate::secret::{Secret, SecretError};
use crate::tls::{self, TlsConfigError};
use tokio_util::sync::CancellationToken;

/// Most messages handed to rumqttc and not yet delivered (acknowledged with QoS 1, written with
/// QoS 0). It is also the request queue's capacity, so queueing never fails for lack of room,
/// and it matches rumqttc's default in-flight window.
pub const MAX_OUTSTANDING: u64 = 100;

/// Highest `--rate`: far above what one connection carries, low enough that a gap is never
/// shorter than a few microseconds.
pub const MAX_RATE: f64 = 100_000.0;

/// Lowest `--rate`: one message every 1000 s.
pub const MIN_RATE: f64 = 0.001;

/// When the publisher falls further behind its schedule than this (a slow broker, a full
/// in-flight window), the backlog is forgiven instead of sent as a burst.
const MAX_LAG: Duration = Duration::from_millis(250);

/// After SIGINT/SIGTERM: how long to wait for the acknowledgements of messages already sent.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// How long the clean DISCONNECT may take at the end.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Events buffered between the event-loop task and the publisher.
const EVENT_BUFFER: usize = 256;

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// Everything [`run`] needs; build it from flags with [`config`], or directly (e.g. to run a
/// simulated sensor inside another command).
#[derive(Debug, Clone)]
pub struct SimulateConfig {
    /// Where to publish.
    pub broker: BrokerConfig,
    /// What to publish.
    pub scenario: Scenario,
    /// Publish with the retain flag, so the broker keeps each topic's last reading for new
    /// subscribers.
    pub retain: bool,
    /// QoS of every message: [`QoS::AtLeastOnce`] (counted when acknowledged),
    /// [`QoS::AtMostOnce`] (counted when written to the connection) or [`QoS::ExactlyOnce`]
    /// (counted when complete; not offered on the command line).
    pub qos: QoS,
    /// Stop after this many delivered messages; `None` runs until shutdown.
    pub count: Option<u64>,
    /// Seed for the random readings, for reproducible runs; `None` seeds from the OS.
    pub seed: Option<u64>,
}

/// How to reach the broker.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Login, if the broker wants one.
    pub username: Option<String>,
    /// Password for `username`.
    pub password: Option<Secret>,
    /// Client identifier; must be unique on the broker.
    pub client_id: String,
    /// TLS configuration, or `None` for plain TCP.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// MQTT keep-alive interval.
    pub keep_alive: Duration,
}

/// What the simulator publishes.
#[derive(Debug, Clone, PartialEq)]
pub enum Scenario {
    /// One temperature as a plain number on `topic`, every `interval`.
    Simple {
        /// The topic, e.g. `sensors/temperature`.
        topic: String,
        /// The fixed gap between two readings.
        interval: Duration,
    },
    /// A whole building of sensors.
    Building(Building),
}

/// The shape and pace of a simulated building.
#[derive(Debug, Clone, PartialEq)]
pub struct Building {
    /// First topic level, e.g. `EDIFICIO_1`.
    pub id: String,
    /// Floors, numbered `P_1` to `P_<floors>`.
    pub floors: u16,
    /// Rooms in each of the four wings, numbered from 1.
    pub rooms_per_wing: u16,
    /// Average messages per second over the whole building.
    pub rate: f64,
}

impl Building {
    /// How many distinct sensors (topics) the building has.
    pub fn sensors(&self) -> u64 {
        u64::from(self.floors) * 4 * u64::from(self.rooms_per_wing) * 4
    }
}

/// Why the simulator could not start or did not finish.
#[derive(Debug, Error)]
pub enum SimulateError {
    /// The MQTT flags could not be resolved (password file, CA file).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The MQTT password could not be read.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The TLS settings could not be applied.
    #[error(transparent)]
    Tls(#[from] TlsConfigError),
    /// The broker refused the login or its certificate is not trusted: retrying cannot help.
    #[error(transparent)]
    Mqtt(#[from] MqttError),
    /// A stop signal came before `--count` messages were delivered.
    #[error("stopped after {delivered} of the {count} messages asked for with --count")]
    Incomplete {
        /// Messages delivered.
        delivered: u64,
        /// `--count`.
        count: u64,
    },
    /// The MQTT event-loop task ended unexpectedly (it only ends by panicking).
    #[error("the MQTT event loop stopped unexpectedly")]
    EventLoopGone,
}

/// The simulator's configuration from its flags: reads the password file and the CA file, so
/// mistakes show up before anything connects.
pub fn config(args: &SimulateArgs) -> Result<SimulateConfig, SimulateError> {
    let login = crate::config::broker_login(&args.mqtt)?;
    let scenario = match &args.building {
        Some(id) => Scenario::Building(Building {
            id: id.clone(),
            floors: args.floors,
            rooms_per_wing: args.rooms_per_wing,
            rate: args.rate,
        }),
        None => Scenario::Simple {
            topic: args.topic.clone(),
            interval: args.interval,
        },
    };
    Ok(SimulateConfig {
        broker: BrokerConfig {
            host: login.host,
            port: login.port,
            username: login.username,
            password: login.password,
            // The simulator's own default prefix, to tell it from the bridge in broker logs.
            client_id: args
                .mqtt
                .mqtt_client_id
                .clone()
                .unwrap_or_else(unique_client_id),
            tls: login.tls,
            keep_alive: Duration::from_secs(30),
        },
        scenario,
        retain: args.retain,
        qos: if args.qos == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        },
        count: args.count,
        seed: args.seed,
    })
}

/// `mqtt2xmppsim` plus 11 random hex digits: unique, distinguishable from the bridge's
/// `mqtt2xmpp…` identifiers in the broker's log, and within the 23 alphanumeric characters every
/// MQTT 3.1.1 broker must accept.
fn unique_client_id() -> String {
    format!(
        "mqtt2xmppsim{:011x}",
        rand::random::<u64>() & 0xfff_ffff_ffff
    )
}

/// `--topic`: a topic a client may publish to (non-empty, no wildcards, no NUL, at most 65 535
/// bytes).
pub fn parse_topic(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("a topic cannot be empty (e.g. sensors/temperature)".into());
    }
    if text.contains(['+', '#']) {
        return Err("wildcards (+, #) are for subscribing; publish to one exact topic".into());
    }
    if text.contains('\0') || text.len() > 65_535 {
        return Err("not a valid MQTT topic".into());
    }
    Ok(text.to_string())
}

/// `--building`: one topic level (no `/`, no wildcards), at most 100 bytes.
pub fn parse_building(text: &str) -> Result<String, String> {
    if text.is_empty() || text.len() > 100 {
        return Err("give a building name of 1 to 100 characters, e.g. EDIFICIO_1".into());
    }
    if text.contains(['/', '+', '#', '\0']) {
        return Err("the building name is one topic level: no '/', '+' or '#'".into());
    }
    Ok(text.to_string())
}

/// `--rate`: messages per second, from [`MIN_RATE`] to [`MAX_RATE`], fractions allowed.
pub fn parse_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number (e.g. 5, 0.5, 2000)"))?;
    if !(MIN_RATE..=MAX_RATE).contains(&rate) {
        return Err(format!(
            "messages per second must be between {MIN_RATE} and {MAX_RATE}"
        ));
    }
    Ok(rate)
}

/// `--interval`: a positive duration such as `2s` or `500ms`.
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    let interval =
        humantime::parse_duration(text).map_err(|e| format!("{e} (examples: 500ms, 2s, 1m)"))?;
    if interval.is_zero() {
        return Err("the interval must be longer than zero (examples: 500ms, 2s, 1m)".into());
    }
    Ok(interval)
}

// ---------------------------------------------------------------------------------------------
// Sans-IO core: what to publish, and when
// ---------------------------------------------------------------------------------------------

/// One message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    /// The topic.
    pub topic: String,
    /// The payload: a plain number (simple) or a JSON object (building).
    pub payload: String,
    /// Whether the broker should keep it as the topic's retained message.
    pub retain: bool,
}

/// The kind of a building sensor: the last topic level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Air temperature, °C (`"C"` in payloads): 18–28, at most 0.2 per reading.
    Temp,
    /// Relative humidity, %: 30–70, at most 0.5 per reading.
    Hum,
    /// Illuminance, lx: 0–1500, at most 25 per reading.
    Lux,
    /// Vibration velocity, mm/s: a 0.05–1 background, at most 0.03 per reading, plus a spike of
    /// 2–8 mm/s in about one reading in fifty.
    Vibr,
}

/// How a kind of sensor behaves.
#[derive(Debug, Clone, Copy)]
struct Profile {
    unit: &'static str,
    min: f64,
    max: f64,
    max_step: f64,
    /// Range of a sensor's first value: comfortable, away from the bounds.
    start: (f64, f64),
    decimals: usize,
}

/// Probability that a vibration reading is a spike.
const SPIKE_PROBABILITY: f64 = 0.02;
/// Size of a vibration spike above the background, mm/s.
const SPIKE_RANGE: (f64, f64) = (2.0, 8.0);

impl Kind {
    /// Every kind, in topic order.
    pub const ALL: [Kind; 4] = [Kind::Temp, Kind::Hum, Kind::Lux, Kind::Vibr];

    /// The topic level: `TEMP`, `HUM`, `LUX`, `VIBR`.
    pub fn code(self) -> &'static str {
        match self {
            Kind::Temp => "TEMP",
            Kind::Hum => "HUM",
            Kind::Lux => "LUX",
            Kind::Vibr => "VIBR",
        }
    }

    /// The unit in payloads: `C`, `%`, `lx`, `mm/s`.
    pub fn unit(self) -> &'static str {
        self.profile().unit
    }

    fn profile(self) -> Profile {
        match self {
            Kind::Temp => Profile {
                unit: "C",
                min: 18.0,
                max: 28.0,
                max_step: 0.2,
                start: (20.0, 24.0),
                decimals: 1,
            },
            Kind::Hum => Profile {
                unit: "%",
                min: 30.0,
                max: 70.0,
                max_step: 0.5,
                start: (40.0, 55.0),
                decimals: 1,
            },
            Kind::Lux => Profile {
                unit: "lx",
                min: 0.0,
                max: 1500.0,
                max_step: 25.0,
                start: (150.0, 600.0),
                decimals: 0,
            },
            Kind::Vibr => Profile {
                unit: "mm/s",
                min: 0.05,
                max: 1.0,
                max_step: 0.03,
                start: (0.1, 0.4),
                decimals: 2,
            },
        }
    }
}

/// A wing of a floor, by compass point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Wing {
    /// `N`: north (norte).
    North,
    /// `S`: south (sur).
    South,
    /// `E`: east (este).
    East,
    /// `O`: west (oeste).
    West,
}

impl Wing {
    /// Every wing, in topic order.
    pub const ALL: [Wing; 4] = [Wing::North, Wing::South, Wing::East, Wing::West];

    /// The topic level: `N`, `S`, `E`, `O`.
    pub fn code(self) -> &'static str {
        match self {
            Wing::North => "N",
            Wing::South => "S",
            Wing::East => "E",
            Wing::West => "O",
        }
    }
}

/// One sensor of the building.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SensorId {
    /// Floor, from 1.
    pub floor: u16,
    /// Wing.
    pub wing: Wing,
    /// Room in the wing, from 1.
    pub room: u16,
    /// What it measures.
    pub kind: Kind,
}

impl SensorId {
    /// `<building>/P_<floor>/<wing>/<room>/<kind>`.
    pub fn topic(&self, building: &str) -> String {
        format!(
            "{building}/P_{}/{}/{}/{}",
            self.floor,
            self.wing.code(),
            self.room,
            self.kind.code()
        )
    }
}

/// A bounded random walk: each step moves by at most `max_step` and reflects off the bounds, so
/// values stay in `[min, max]` and never jump.
#[derive(Debug, Clone, PartialEq)]
struct Walk {
    value: f64,
    min: f64,
    max: f64,
    max_step: f64,
}

impl Walk {
    fn new(start: f64, min: f64, max: f64, max_step: f64) -> Self {
        Self {
            value: start.clamp(min, max),
            min,
            max,
            max_step,
        }
    }

    /// Moves by a uniform step in `[-max_step, max_step]` and returns the new value. Reflection
    /// keeps the move within `max_step` too: overshooting `max` by `d` lands `d` below it.
    fn step(&mut self, rng: &mut impl Rng) -> f64 {
        let mut next = self.value + rng.random_range(-self.max_step..=self.max_step);
        if next > self.max {
            next = 2.0 * self.max - next;
        } else if next < self.min {
            next = 2.0 * self.min - next;
        }
        self.value = next.clamp(self.min, self.max);
        self.value
    }
}

/// The state of the scenario being played.
#[derive(Debug, Clone)]
enum State {
    Simple {
        topic: String,
        interval: Duration,
        walk: Walk,
    },
    Building {
        building: Building,
        /// Per-sensor state, created on a sensor's first reading.
        sensors: HashMap<SensorId, Walk>,
    },
}

/// Range of the simple scenario's temperature, °C.
const SIMPLE_RANGE: (f64, f64) = (15.0, 30.0);
/// Largest change between two simple readings, °C.
const SIMPLE_MAX_STEP: f64 = 0.2;

/// Produces the messages of a scenario and the gap before each next one. Pure: the caller
/// supplies the RNG and the wall-clock time used for timestamps.
#[derive(Debug, Clone)]
pub struct Generator<R> {
    state: State,
    retain: bool,
    rng: R,
}

impl Generator<StdRng> {
    /// A generator seeded with `seed`, or from the operating system when `None`.
    pub fn seeded(scenario: Scenario, retain: bool, seed: Option<u64>) -> Self {
        let rng = match seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Generator::new(scenario, retain, rng)
    }
}

impl<R: Rng> Generator<R> {
    /// A generator for `scenario` drawing from `rng`.
    pub fn new(scenario: Scenario, retain: bool, mut rng: R) -> Self {
        let state = match scenario {
            Scenario::Simple { topic, interval } => State::Simple {
                topic,
                interval,
                walk: Walk::new(
                    rng.random_range(20.0..23.0),
                    SIMPLE_RANGE.0,
                    SIMPLE_RANGE.1,
                    SIMPLE_MAX_STEP,
                ),
            },
            Scenario::Building(mut building) => {
                // The flag parser enforces the range; a configuration built in code might not,
                // and a zero or NaN rate would make the gap infinite.
                building.rate = if building.rate.is_nan() {
                    MIN_RATE
                } else {
                    building.rate.clamp(MIN_RATE, MAX_RATE)
                };
                State::Building {
                    building,
                    sensors: HashMap::new(),
                }
            }
        };
        Self { state, retain, rng }
    }

    /// The next message, stamped with `now`, and how long to wait before the one after it.
    pub fn next(&mut self, now: SystemTime) -> (Publication, Duration) {
        let rng = &mut self.rng;
        match &mut self.state {
            State::Simple {
                topic,
                interval,
                walk,
            } => {
                let value = walk.step(rng);
                let publication = Publication {
                    topic: topic.clone(),
                    payload: format!("{value:.2}"),
                    retain: self.retain,
                };
                (publication, *interval)
            }
            State::Building { building, sensors } => {
                let id = random_sensor(building, rng);
                let profile = id.kind.profile();
                let walk = sensors.entry(id).or_insert_with(|| {
                    Walk::new(
                        rng.random_range(profile.start.0..profile.start.1),
                        profile.min,
                        profile.max,
                        profile.max_step,
                    )
                });
                let mut value = walk.step(rng);
                if id.kind == Kind::Vibr && rng.random_bool(SPIKE_PROBABILITY) {
                    value += rng.random_range(SPIKE_RANGE.0..SPIKE_RANGE.1);
                }
                let payload = format!(
                    r#"{{"value": {value:.decimals$}, "unit": "{unit}", "ts": "{ts}"}}"#,
                    decimals = profile.decimals,
                    unit = profile.unit,
                    ts = humantime::format_rfc3339_seconds(now),
                );
                let publication = Publication {
                    topic: id.topic(&building.id),
                    payload,
                    retain: self.retain,
                };
                // Uniform in [0.5, 1.5) × the mean gap: random spacing, exact average rate.
                let gap = rng.random_range(0.5..1.5) / building.rate;
                (publication, Duration::from_secs_f64(gap))
            }
        }
    }
}

/// A sensor of `building` chosen uniformly at random.
fn random_sensor(building: &Building, rng: &mut impl Rng) -> SensorId {
    SensorId {
        floor: rng.random_range(1..=building.floors.max(1)),
        wing: *Wing::ALL.choose(rng).unwrap_or(&Wing::North),
        room: rng.random_range(1..=building.rooms_per_wing.max(1)),
        kind: *Kind::ALL.choose(rng).unwrap_or(&Kind::Temp),
    }
}

/// When the next message is due: each gap is added to the previous due time, so the average
/// rate holds even when timers wake late, but a backlog larger than [`MAX_LAG`] is dropped
/// rather than sent as a burst.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    due: Instant,
}

impl Schedule {
    fn new(now: Instant) -> Self {
        Self { due: now }
    }

    /// The next message is due `gap` after the previous one (but not more than [`MAX_LAG`]
    /// before `now`).
    fn advance(&mut self, gap: Duration, now: Instant) {
        let next = self.due + gap;
        self.due = if now.saturating_duration_since(next) > MAX_LAG {
            now
        } else {
            next
        };
    }
}

/// Delivery bookkeeping: what was handed to rumqttc, what the broker has (QoS 1: acknowledged;
/// QoS 0: written to the connection), and what a lost connection took away.
#[derive(Debug, Clone)]
struct Tally {
    qos: QoS,
    limit: Option<u64>,
    delivered: u64,
    in_flight: u64,
    abandoned: u64,
}

impl Tally {
    fn new(qos: QoS, limit: Option<u64>) -> Self {
        Self {
            qos,
            limit,
            delivered: 0,
            in_flight: 0,
            abandoned: 0,
        }
    }

    /// Whether another message may be queued now: the count is not reached counting those in
    /// flight, and the in-flight window has room.
    fn may_queue(&self) -> bool {
        let wanted = self
            .limit
            .is_none_or(|limit| self.delivered + self.in_flight < limit);
        wanted && self.in_flight < MAX_OUTSTANDING
    }

    fn queued(&mut self) {
        self.in_flight += 1;
    }

    /// Counts a delivery if `event` is one; returns whether it was.
    fn observe(&mut self, event: &Event) -> bool {
        let delivered = matches!(
            (self.qos, event),
            (QoS::AtMostOnce, Event::Outgoing(Outgoing::Publish(_)))
                | (QoS::AtLeastOnce, Event::Incoming(Packet::PubAck(_)))
                | (QoS::ExactlyOnce, Event::Incoming(Packet::PubComp(_)))
        );
        if delivered {
            self.delivered += 1;
            // A late acknowledgement of a message already given up on (see `connection_lost`)
            // still counts as delivered; the in-flight count just stays at zero.
            self.in_flight = self.in_flight.saturating_sub(1);
        }
        delivered
    }

    /// The connection is gone. With a clean session rumqttc drops whatever was not yet
    /// acknowledged when it reconnects, so those messages are given up and will be replaced.
    fn connection_lost(&mut self) {
        self.abandoned += self.in_flight;
        self.in_flight = 0;
    }

    /// `--count` reached.
    fn complete(&self) -> bool {
        self.limit.is_some_and(|limit| self.delivered >= limit)
    }
}

// ---------------------------------------------------------------------------------------------
// Driver
// ---------------------------------------------------------------------------------------------

/// What a run achieved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Messages delivered (QoS 1: acknowledged by the broker; QoS 0: written to the connection).
    pub delivered: u64,
    /// Messages given up because the connection dropped before the broker acknowledged them
    /// (and replaced by new readings).
    pub abandoned: u64,
    /// Messages still unacknowledged when a stop signal ended the run.
    pub unconfirmed: u64,
    /// From the first connection until publishing stopped (`--count` reached, or a signal);
    /// zero if the broker was never reached.
    pub elapsed: Duration,
}

impl Summary {
    /// Delivered messages per second.
    pub fn rate(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.delivered as f64 / seconds
        } else {
            0.0
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = if self.delivered == 1 { "" } else { "s" };
        write!(
            f,
            "published {} message{plural} in {:.2?} ({:.1} messages/s)",
            self.delivered,
            self.elapsed,
            self.rate()
        )?;
        if self.abandoned > 0 {
            write!(f, "; {} lost to reconnects (and replaced)", self.abandoned)?;
        }
        if self.unconfirmed > 0 {
            write!(
                f,
                "; {} sent but unacknowledged at the stop",
                self.unconfirmed
            )?;
        }
        Ok(())
    }
}

/// What the event-loop task reports.
#[derive(Debug)]
enum Polled {
    Event(Event),
    /// The connection failed; the task waits `retry_in` before reconnecting.
    Failed {
        error: ConnectionError,
        retry_in: Duration,
    },
}

/// Aborts the event-loop task when the driver returns, however it returns.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Polls rumqttc forever, forwarding every event, with jittered backoff after failures. Ends
/// when the driver stops listening.
async fn poll_forever(mut eventloop: EventLoop, events: mpsc::Sender<Polled>) {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        match eventloop.poll().await {
            Ok(event) => {
                if matches!(event, Event::Incoming(Packet::ConnAck(_))) {
                    backoff.reset();
                }
                if events.send(Polled::Event(event)).await.is_err() {
                    return;
                }
            }
            Err(error) => {
                let retry_in = backoff.next_delay();
                if events
                    .send(Polled::Failed { error, retry_in })
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::time::sleep(retry_in).await;
            }
        }
    }
}

/// Why the publishing loop ended.
enum Stop {
    /// `--count` reached.
    Complete,
    /// SIGINT/SIGTERM.
    Signal,
}

/// Publishes until `shutdown` or until `config.count` messages are delivered, then disconnects
/// cleanly and logs a summary. Unreachable brokers are retried with backoff, forever; a refused
/// login or an untrusted certificate is an error at once. Stopped by `shutdown` before
/// `config.count`, it returns [`SimulateError::Incomplete`].
pub async fn run(
    config: SimulateConfig,
    shutdown: CancellationToken,
) -> Result<Summary, SimulateError> {
    let SimulateConfig {
        broker: broker_config,
        scenario,
        retain,
        qos,
        count,
        seed,
    } = config;
    let broker = format!("{}:{}", broker_config.host, broker_config.port);
    let mut options = MqttOptions::new(
        broker_config.client_id.clone(),
        broker_config.host.clone(),
        broker_config.port,
    );
    options
        .set_keep_alive(broker_config.keep_alive)
        .set_clean_session(true);
    if let Some(user) = &broker_config.username {
        let password = broker_config
            .password
            .as_ref()
            .map(Secret::expose)
            .unwrap_or("");
        options.set_credentials(user.clone(), password);
    }
    if let Some(tls) = &broker_config.tls {
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            tls.clone(),
        )));
    }
    let (client, eventloop) = AsyncClient::new(options, MAX_OUTSTANDING as usize);
    let (events_tx, mut events) = mpsc::channel(EVENT_BUFFER);
    let _poller = AbortOnDrop(tokio::spawn(poll_forever(eventloop, events_tx)));

    tracing::info!(
        broker,
        "simulating {}; connecting to the MQTT broker",
        describe(&scenario, count)
    );
    let mut generator = Generator::seeded(scenario, retain, seed);
    let mut tally = Tally::new(qos, count);
    let mut schedule = Schedule::new(Instant::now());
    let mut connected = false;
    let mut first_connected: Option<Instant> = None;

    let stop = loop {
        if tally.complete() {
            break Stop::Complete;
        }
        let may_publish = connected && tally.may_queue();
        tokio::select! {
            _ = shutdown.cancelled() => break Stop::Signal,
            polled = events.recv() => {
                let Some(polled) = polled else {
                    return Err(SimulateError::EventLoopGone);
                };
                match polled {
                    Polled::Event(event) => {
                        if let Event::Incoming(Packet::ConnAck(_)) = event {
                            let now = Instant::now();
                            if first_connected.is_none() {
                                tracing::info!(broker, "connected to the MQTT broker");
                                first_connected = Some(now);
                            } else {
                                tracing::info!(broker, "reconnected to the MQTT broker");
                            }
                            connected = true;
                            schedule = Schedule::new(now);
                        }
                        tally.observe(&event);
                    }
                    Polled::Failed { error, retry_in } => {
                        fatal(&error, &broker, &broker_config.username)?;
                        connected = false;
                        tally.connection_lost();
                        tracing::warn!(
                            broker,
                            "MQTT connection failed: {error}; retrying in {retry_in:.1?}"
                        );
                    }
                }
            }
            _ = tokio::time::sleep_until(schedule.due), if may_publish => {
                let (publication, gap) = generator.next(SystemTime::now());
                let Publication { topic, payload, retain } = publication;
                tracing::debug!(topic, payload, "publishing");
                match client.try_publish(topic, qos, retain, payload) {
                    Ok(()) => tally.queued(),
                    // Cannot happen while the window is respected; a dropped reading is harmless.
                    Err(e) => tracing::warn!("dropped a reading: {e}"),
                }
                schedule.advance(gap, Instant::now());
            }
        }
    };
    let stopped_at = Instant::now();

    // Wind down: after a signal, give messages already sent a moment to be acknowledged; then
    // say goodbye to the broker. The event-loop task keeps polling throughout.
    if connected {
        if matches!(stop, Stop::Signal) && tally.in_flight > 0 {
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
                while tally.in_flight > 0 {
                    match events.recv().await {
                        Some(Polled::Event(event)) => {
                            tally.observe(&event);
                        }
                        Some(Polled::Failed { .. }) | None => break,
                    }
                }
            })
            .await;
        }
        // The broker closes the connection once it has read our DISCONNECT, which comes after
        // every message on the same stream: waiting for that close (rather than closing first)
        // means the broker has read them all, and never has its unread input cut by a reset.
        if client.try_disconnect().is_ok() {
            let closed = tokio::time::timeout(DISCONNECT_TIMEOUT, async {
                while let Some(polled) = events.recv().await {
                    match polled {
                        Polled::Event(event) => {
                            tally.observe(&event);
                        }
                        Polled::Failed { .. } => break,
                    }
                }
            })
            .await;
            if closed.is_err() {
                tracing::debug!("the broker did not close the connection after DISCONNECT in time");
            }
        }
    }

    let summary = Summary {
        delivered: tally.delivered,
        abandoned: tally.abandoned,
        unconfirmed: tally.in_flight,
        elapsed: first_connected
            .map(|start| stopped_at.saturating_duration_since(start))
            .unwrap_or_default(),
    };
    tracing::info!(broker, "{summary}");
    match count {
        Some(count) if summary.delivered < count => Err(SimulateError::Incomplete {
            delivered: summary.delivered,
            count,
        }),
        _ => Ok(summary),
    }
}

/// Connection failures that retrying cannot fix.
fn fatal(
    error: &ConnectionError,
    broker: &str,
    username: &Option<String>,
) -> Result<(), MqttError> {
    match error {
        ConnectionError::ConnectionRefused(
            code @ (ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized),
        ) => Err(MqttError::LoginRefused {
            broker: broker.to_string(),
            who: username
                .as_ref()
                .map(|u| format!(" as {u}"))
                .unwrap_or_default(),
            code: *code,
        }),
        error => match tls::untrusted_certificate(error) {
            Some(reason) => Err(MqttError::UntrustedCertificate {
                broker: broker.to_string(),
                reason,
            }),
            None => Ok(()),
        },
    }
}

/// The scenario in words, for the log.
fn describe(scenario: &Scenario, count: Option<u64>) -> String {
    let what = match scenario {
        Scenario::Simple { topic, interval } => {
            format!("a temperature on {topic} every {interval:?}")
        }
        Scenario::Building(b) => format!(
            "building {}: {} sensors (floors P_1 to P_{}, 4 wings, {} room(s) per wing, 4 kinds) \
             at {} messages/s on average",
            b.id,
            b.sensors(),
            b.floors,
            b.rooms_per_wing,
            b.rate
        ),
    };
    match count {
        Some(count) => format!("{what}, {count} messages"),
        None => what,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const T0: u64 = 1_795_248_000; // 2026-11-21T08:00:00Z

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(T0 + seconds)
    }

    fn building(floors: u16, rooms_per_wing: u16, rate: f64) -> Scenario {
        Scenario::Building(Building {
            id: "EDIFICIO_1".into(),
            floors,
            rooms_per_wing,
            rate,
        })
    }

    fn rng(seed: u64) -> StdRng {
        StdRng::seed_from_u64(seed)
    }

    /// The topic grammar, parsed independently of [`SensorId::topic`]:
    /// `EDIFICIO_1/P_<floor>/<N|S|E|O>/<room>/<TEMP|HUM|LUX|VIBR>`.
    fn parse_topic_levels(topic: &str) -> Option<(u16, &str, u16, &str)> {
        let levels: Vec<&str> = topic.split('/').collect();
        let [building, floor, wing, room, kind] = levels.as_slice() else {
            return None;
        };
        if *building != "EDIFICIO_1" || !["N", "S", "E", "O"].contains(wing) {
            return None;
        }
        if !["TEMP", "HUM", "LUX", "VIBR"].contains(kind) {
            return None;
        }
        let floor = floor.strip_prefix("P_")?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(floor) || !digits(room) {
            return None;
        }
        Some((floor.parse().ok()?, wing, room.parse().ok()?, kind))
    }

    fn value_of(payload: &str) -> f64 {
        let json: serde_json::Value = serde_json::from_str(payload).unwrap();
        json["value"].as_f64().unwrap()
    }

    #[test]
    fn simple_mode_publishes_plain_numbers_every_interval_on_a_slow_bounded_walk() {
        let scenario = Scenario::Simple {
            topic: "sensors/temperature".into(),
            interval: Duration::from_secs(2),
        };
        let mut generator = Generator::new(scenario, false, rng(1));
        let mut previous: Option<f64> = None;
        for i in 0..20_000 {
            let (publication, gap) = generator.next(at(i));
            assert_eq!(publication.topic, "sensors/temperature");
            assert!(!publication.retain);
            assert_eq!(gap, Duration::from_secs(2));
            let (whole, decimals) = publication.payload.split_once('.').unwrap();
            assert_eq!(decimals.len(), 2, "{}", publication.payload);
            assert!(whole.bytes().all(|b| b.is_ascii_digit()));
            let value: f64 = publication.payload.parse().unwrap();
            assert!((15.0..=30.0).contains(&value), "{value}");
            if let Some(previous) = previous {
                // 0.2 per step, plus rounding to two decimals at each end.
                assert!(
                    (value - previous).abs() <= 0.2 + 0.01 + 1e-9,
                    "{previous} → {value}"
                );
            }
            previous = Some(value);
        }
    }

    #[test]
    fn simple_walk_reaches_both_halves_of_its_range_but_not_beyond() {
        let mut walk = Walk::new(21.0, 15.0, 30.0, 0.2);
        let mut rng = rng(7);
        let values: Vec<f64> = (0..200_000).map(|_| walk.step(&mut rng)).collect();
        let low = values.iter().cloned().fold(f64::INFINITY, f64::min);
        let high = values.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        assert!(low >= 15.0 && high <= 30.0, "{low}..{high}");
        assert!(
            low < 18.0 && high > 27.0,
            "a walk this long explores: {low}..{high}"
        );
    }

    #[test]
    fn a_walk_reflects_off_its_bounds_without_jumping() {
        let mut rng = rng(3);
        for start in [18.0, 28.0, 18.05, 27.95] {
            let mut walk = Walk::new(start, 18.0, 28.0, 0.2);
            let mut previous = walk.value;
            for _ in 0..1_000 {
                let value = walk.step(&mut rng);
                assert!((18.0..=28.0).contains(&value), "{value}");
                assert!(
                    (value - previous).abs() <= 0.2 + 1e-12,
                    "{previous} → {value}"
                );
                previous = value;
            }
        }
        // A start outside the range is pulled in.
        assert_eq!(Walk::new(99.0, 18.0, 28.0, 0.2).value, 28.0);
    }

    #[test]
    fn building_topics_follow_the_grammar_and_stay_within_floors_and_rooms() {
        let mut generator = Generator::new(building(3, 2, 10.0), true, rng(2));
        let mut seen = HashSet::new();
        for i in 0..5_000 {
            let (publication, _) = generator.next(at(i));
            assert!(publication.retain);
            let (floor, _, room, _) = parse_topic_levels(&publication.topic)
                .unwrap_or_else(|| panic!("bad topic {}", publication.topic));
            assert!((1..=3).contains(&floor), "{}", publication.topic);
            assert!((1..=2).contains(&room), "{}", publication.topic);
            seen.insert(publication.topic);
        }
        // 3 floors × 4 wings × 2 rooms × 4 kinds, all of them reached at random.
        assert_eq!(seen.len(), 96);
        let Scenario::Building(b) = building(3, 2, 10.0) else {
            unreachable!()
        };
        assert_eq!(b.sensors(), 96);
    }

    #[test]
    fn the_smallest_building_has_one_room_per_wing_on_one_floor() {
        let mut generator = Generator::new(building(1, 1, 1.0), false, rng(4));
        let topics: HashSet<String> = (0..1_000).map(|i| generator.next(at(i)).0.topic).collect();
        let mut expected = HashSet::new();
        for wing in ["N", "S", "E", "O"] {
            for kind in ["TEMP", "HUM", "LUX", "VIBR"] {
                expected.insert(format!("EDIFICIO_1/P_1/{wing}/1/{kind}"));
            }
        }
        assert_eq!(topics, expected);
    }

    #[test]
    fn building_payloads_are_json_with_value_unit_and_utc_timestamp() {
        let mut generator = Generator::new(building(2, 3, 5.0), false, rng(5));
        for i in 0..2_000 {
            let (publication, _) = generator.next(at(i));
            let json: serde_json::Value = serde_json::from_str(&publication.payload)
                .unwrap_or_else(|e| panic!("{e}: {}", publication.payload));
            let object = json.as_object().unwrap();
            assert_eq!(object.len(), 3, "{}", publication.payload);
            assert!(object["value"].as_f64().is_some_and(f64::is_finite));
            let kind = publication.topic.rsplit('/').next().unwrap();
            let unit = match kind {
                "TEMP" => "C",
                "HUM" => "%",
                "LUX" => "lx",
                "VIBR" => "mm/s",
                other => panic!("kind {other}"),
            };
            assert_eq!(object["unit"], unit);
            let ts = object["ts"].as_str().unwrap();
            assert_eq!(humantime::parse_rfc3339(ts).unwrap(), at(i));
            assert!(ts.ends_with('Z') && ts.len() == 20, "{ts}");
        }
        let (first, _) = Generator::new(building(1, 1, 1.0), false, rng(6)).next(at(0));
        assert!(
            first.payload.starts_with(r#"{"value": "#)
                && first
                    .payload
                    .ends_with(r#", "ts": "2026-11-21T08:00:00Z"}"#),
            "{}",
            first.payload
        );
    }

    #[test]
    fn each_kind_stays_in_its_realistic_range_and_walks_smoothly_per_sensor() {
        let mut generator = Generator::new(building(2, 2, 100.0), false, rng(8));
        let mut last: HashMap<String, f64> = HashMap::new();
        let mut vibration = Vec::new();
        for i in 0..100_000 {
            let (publication, _) = generator.next(at(i));
            let value = value_of(&publication.payload);
            let kind = publication.topic.rsplit('/').next().unwrap().to_string();
            let (range, smooth) = match kind.as_str() {
                "TEMP" => (18.0..=28.0, Some(0.2 + 0.1)),
                "HUM" => (30.0..=70.0, Some(0.5 + 0.1)),
                "LUX" => (0.0..=1500.0, Some(25.0 + 1.0)),
                "VIBR" => (0.0..=9.0, None),
                other => panic!("kind {other}"),
            };
            assert!(range.contains(&value), "{} = {value}", publication.topic);
            if let (Some(limit), Some(previous)) = (smooth, last.get(&publication.topic)) {
                assert!(
                    (value - previous).abs() <= limit + 1e-9,
                    "{}: {previous} → {value}",
                    publication.topic
                );
            }
            if kind == "VIBR" {
                assert!(value > 0.0, "{value}");
                vibration.push(value);
            }
            last.insert(publication.topic, value);
        }
        // Vibration: a quiet background with occasional spikes (about 2 %).
        let spikes = vibration.iter().filter(|v| **v > 1.5).count();
        let share = spikes as f64 / vibration.len() as f64;
        assert!(
            (0.01..0.03).contains(&share),
            "{spikes} of {}",
            vibration.len()
        );
        let median = {
            let mut sorted = vibration.clone();
            sorted.sort_by(f64::total_cmp);
            sorted[sorted.len() / 2]
        };
        assert!(median < 1.0, "{median}");
    }

    #[test]
    fn vibration_is_a_smooth_background_plus_spikes_that_do_not_stick() {
        let mut generator = Generator::new(building(1, 1, 1.0), false, rng(9));
        let mut background: HashMap<String, f64> = HashMap::new();
        let (mut spikes, mut quiet) = (0, 0);
        for i in 0..40_000 {
            let (publication, _) = generator.next(at(i));
            if !publication.topic.ends_with("/VIBR") {
                continue;
            }
            let State::Building { sensors, .. } = &generator.state else {
                unreachable!()
            };
            let walk = sensors
                .iter()
                .find(|(id, _)| id.topic("EDIFICIO_1") == publication.topic)
                .map(|(_, walk)| walk.value)
                .unwrap();
            assert!((0.05..=1.0).contains(&walk), "background {walk}");
            if let Some(previous) = background.insert(publication.topic.clone(), walk) {
                assert!(
                    (walk - previous).abs() <= 0.03 + 1e-12,
                    "{previous} → {walk}"
                );
            }
            // What is published is the background (rounded), or the background plus 2–8 mm/s.
            let above = value_of(&publication.payload) - walk;
            if above.abs() <= 0.005 + 1e-9 {
                quiet += 1;
            } else {
                assert!(
                    (2.0 - 0.005..=8.0 + 0.005).contains(&above),
                    "spike of {above}"
                );
                spikes += 1;
            }
        }
        assert!(
            spikes > 0 && quiet > 40 * spikes,
            "{spikes} spikes, {quiet} quiet"
        );
    }

    #[test]
    fn gaps_are_random_around_the_rate_and_average_to_it() {
        let mut generator = Generator::new(building(3, 4, 20.0), false, rng(10));
        let gaps: Vec<Duration> = (0..20_000).map(|i| generator.next(at(i)).1).collect();
        let mean = gaps.iter().sum::<Duration>().as_secs_f64() / gaps.len() as f64;
        assert!((mean - 0.05).abs() < 0.001, "mean gap {mean}");
        assert!(gaps
            .iter()
            .all(|g| (0.025..=0.075).contains(&g.as_secs_f64())));
        let distinct: HashSet<Duration> = gaps.iter().copied().collect();
        assert!(distinct.len() > 19_000, "gaps vary");
    }

    #[test]
    fn a_rate_out_of_range_in_code_is_clamped_instead_of_panicking() {
        for (rate, slowest) in [
            (0.0, 1.5 / MIN_RATE),
            (-3.0, 1.5 / MIN_RATE),
            (f64::NAN, 1.5 / MIN_RATE),
            (f64::INFINITY, 1.5 / MAX_RATE),
        ] {
            let mut generator = Generator::new(building(1, 1, rate), false, rng(11));
            let (_, gap) = generator.next(at(0));
            assert!(gap.as_secs_f64() <= slowest, "{rate}: {gap:?}");
        }
    }

    #[test]
    fn the_same_seed_replays_the_same_readings() {
        let run = |seed| {
            let mut generator = Generator::seeded(building(2, 2, 5.0), false, Some(seed));
            (0..100).map(|i| generator.next(at(i))).collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn sensor_topics_are_built_level_by_level() {
        let id = SensorId {
            floor: 12,
            wing: Wing::West,
            room: 7,
            kind: Kind::Vibr,
        };
        assert_eq!(id.topic("EDIFICIO_1"), "EDIFICIO_1/P_12/O/7/VIBR");
        assert_eq!(Kind::Hum.unit(), "%");
    }

    fn puback() -> Event {
        Event::Incoming(Packet::PubAck(rumqttc::PubAck::new(1)))
    }

    #[test]
    fn qos1_counts_acknowledgements_and_stops_queueing_at_the_count() {
        let mut tally = Tally::new(QoS::AtLeastOnce, Some(3));
        for _ in 0..3 {
            assert!(tally.may_queue());
            tally.queued();
        }
        assert!(!tally.may_queue(), "three in flight make three");
        assert!(!tally.observe(&Event::Outgoing(Outgoing::Publish(1))));
        assert!(tally.observe(&puback()));
        assert!(tally.observe(&puback()));
        assert!(!tally.complete());
        assert!(tally.observe(&puback()));
        assert!(tally.complete());
        assert_eq!((tally.delivered, tally.in_flight), (3, 0));
    }

    #[test]
    fn qos0_counts_messages_written_to_the_connection() {
        let mut tally = Tally::new(QoS::AtMostOnce, Some(2));
        tally.queued();
        tally.queued();
        assert!(!tally.observe(&puback()));
        assert!(tally.observe(&Event::Outgoing(Outgoing::Publish(0))));
        assert!(tally.observe(&Event::Outgoing(Outgoing::Publish(0))));
        assert!(tally.complete());
    }

    #[test]
    fn qos2_counts_completed_exchanges() {
        let mut tally = Tally::new(QoS::ExactlyOnce, Some(1));
        tally.queued();
        assert!(!tally.observe(&puback()));
        assert!(tally.observe(&Event::Incoming(Packet::PubComp(rumqttc::PubComp::new(1)))));
        assert!(tally.complete());
    }

    #[test]
    fn a_lost_connection_gives_up_unacknowledged_messages_and_replaces_them() {
        let mut tally = Tally::new(QoS::AtLeastOnce, Some(5));
        for _ in 0..5 {
            tally.queued();
        }
        tally.observe(&puback());
        tally.connection_lost();
        assert_eq!(
            (tally.delivered, tally.in_flight, tally.abandoned),
            (1, 0, 4)
        );
        assert!(tally.may_queue(), "four more are needed");
        for _ in 0..4 {
            tally.queued();
        }
        assert!(!tally.may_queue());
        // A late acknowledgement of a message given up on still counts, and never underflows.
        for _ in 0..6 {
            tally.observe(&puback());
        }
        assert_eq!(tally.in_flight, 0);
        assert!(tally.complete());
    }

    #[test]
    fn the_in_flight_window_limits_an_unlimited_run() {
        let mut tally = Tally::new(QoS::AtLeastOnce, None);
        for _ in 0..MAX_OUTSTANDING {
            assert!(tally.may_queue());
            tally.queued();
        }
        assert!(!tally.may_queue());
        tally.observe(&puback());
        assert!(tally.may_queue());
        assert!(!tally.complete(), "no count, never complete");
    }

    #[test]
    fn the_schedule_keeps_the_average_but_forgives_a_long_backlog() {
        let t0 = Instant::now();
        let mut schedule = Schedule::new(t0);
        let gap = Duration::from_millis(10);
        // On time, or slightly late: due times stay on the grid.
        schedule.advance(gap, t0);
        assert_eq!(schedule.due, t0 + gap);
        schedule.advance(gap, t0 + Duration::from_millis(100));
        assert_eq!(schedule.due, t0 + 2 * gap);
        // Far behind: start again from now instead of bursting.
        schedule.advance(gap, t0 + Duration::from_secs(5));
        assert_eq!(schedule.due, t0 + Duration::from_secs(5));
    }

    #[test]
    fn flag_values_are_checked_with_helpful_messages() {
        assert_eq!(parse_rate("2.5"), Ok(2.5));
        assert!(parse_rate("0").unwrap_err().contains("between"));
        assert!(parse_rate("fast").unwrap_err().contains("not a number"));
        assert!(parse_rate("NaN").is_err());
        assert!(parse_rate("1e9").is_err());
        assert_eq!(parse_interval("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_interval("0s")
            .unwrap_err()
            .contains("longer than zero"));
        assert!(parse_interval("soon").unwrap_err().contains("examples"));
        assert_eq!(parse_building("EDIFICIO_1"), Ok("EDIFICIO_1".into()));
        assert!(parse_building("a/b").is_err());
        assert!(parse_building("").is_err());
        assert!(parse_building("b+").is_err());
        assert_eq!(parse_topic("a/b"), Ok("a/b".into()));
        assert!(parse_topic("a/#").unwrap_err().contains("wildcards"));
        assert!(parse_topic("").is_err());
    }

    fn parse(args: &[&str]) -> Result<SimulateArgs, clap::Error> {
        use clap::Parser;
        let cli =
            crate::cli::Cli::try_parse_from(["mqtt2xmpp", "simulate"].iter().chain(args).copied())?;
        match cli.command {
            crate::cli::Command::Simulate(args) => Ok(args),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn without_flags_it_feeds_the_bridge_s_default_topic_every_two_seconds() {
        let config = config(&parse(&[]).unwrap()).unwrap();
        assert_eq!(
            config.scenario,
            Scenario::Simple {
                topic: "sensors/temperature".into(),
                interval: Duration::from_secs(2),
            }
        );
        assert_eq!(config.qos, QoS::AtLeastOnce);
        assert_eq!(
            (config.retain, config.count, config.seed),
            (false, None, None)
        );
        assert_eq!(
            (config.broker.host.as_str(), config.broker.port),
            ("127.0.0.1", 1883)
        );
        assert!(config.broker.tls.is_none() && config.broker.password.is_none());
        assert!(config.broker.client_id.len() <= 23);
        assert!(config
            .broker
            .client_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric()));
    }

    #[test]
    fn building_flags_select_building_mode() {
        let args = parse(&[
            "--building",
            "EDIFICIO_1",
            "--floors",
            "5",
            "--rooms-per-wing",
            "2",
            "--rate",
            "0.5",
            "--count",
            "10",
            "--retain",
            "--qos",
            "0",
            "--seed",
            "9",
        ])
        .unwrap();
        let config = config(&args).unwrap();
        assert_eq!(
            config.scenario,
            Scenario::Building(Building {
                id: "EDIFICIO_1".into(),
                floors: 5,
                rooms_per_wing: 2,
                rate: 0.5,
            })
        );
        assert_eq!(config.qos, QoS::AtMostOnce);
        assert_eq!(
            (config.retain, config.count, config.seed),
            (true, Some(10), Some(9))
        );
        let Scenario::Building(b) = config.scenario else {
            unreachable!()
        };
        assert_eq!(b.sensors(), 5 * 4 * 2 * 4);
    }

    #[test]
    fn flags_of_the_other_mode_and_out_of_range_values_are_refused() {
        use clap::error::ErrorKind;
        let kind = |args: &[&str]| parse(args).unwrap_err().kind();
        assert_eq!(
            kind(&["--building", "B", "--topic", "x"]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            kind(&["--building", "B", "--interval", "1s"]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(kind(&["--floors", "2"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(kind(&["--rate", "2"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(kind(&["--count", "0"]), ErrorKind::ValueValidation);
        assert_eq!(kind(&["--qos", "2"]), ErrorKind::ValueValidation);
        assert_eq!(
            kind(&["--building", "B", "--floors", "0"]),
            ErrorKind::ValueValidation
        );
        assert_eq!(kind(&["--topic", "a/+/b"]), ErrorKind::ValueValidation);
    }

    #[test]
    fn tls_and_password_flags_are_honoured() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let pw = pw.to_string_lossy().into_owned();
        let args = parse(&[
            "--mqtt-tls",
            "--mqtt-username",
            "u",
            "--mqtt-password-file",
            &pw,
        ]);
        let config = config(&args.unwrap()).unwrap();
        assert_eq!(config.broker.port, 8883);
        assert!(config.broker.tls.is_some());
        assert_eq!(
            config.broker.password.as_ref().map(Secret::expose),
            Some("s3cret")
        );
        let missing = parse(&["--mqtt-password-file", "/nonexistent/pw"]).unwrap();
        let error = config_error(&missing);
        assert!(
            matches!(
                error,
                SimulateError::Config(crate::config::ConfigError::Secret(_))
            ),
            "{error:?}"
        );
        assert!(error.to_string().contains("/nonexistent/pw"), "{error}");
    }

    fn config_error(args: &SimulateArgs) -> SimulateError {
        match config(args) {
            Ok(_) => panic!("accepted"),
            Err(e) => e,
        }
    }

    #[test]
    fn summary_reads_well_and_survives_a_zero_duration() {
        let summary = Summary {
            delivered: 50,
            abandoned: 0,
            unconfirmed: 0,
            elapsed: Duration::from_secs(2),
        };
        assert_eq!(summary.rate(), 25.0);
        assert_eq!(
            summary.to_string(),
            "published 50 messages in 2.00s (25.0 messages/s)"
        );
        let instant = Summary {
            delivered: 1,
            abandoned: 3,
            unconfirmed: 2,
            elapsed: Duration::ZERO,
        };
        assert_eq!(instant.rate(), 0.0);
        assert!(instant.to_string().ends_with(
            "; 3 lost to reconnects (and replaced); \
             2 sent but unacknowledged at the stop"
        ));
    }

    #[test]
    fn refused_logins_and_untrusted_certificates_are_fatal_other_failures_are_not() {
        let refused = ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized);
        let err = fatal(&refused, "h:1", &Some("sim".into())).unwrap_err();
        assert!(
            err.to_string().contains("refused the login as sim"),
            "{err}"
        );
        let untrusted = ConnectionError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        ));
        assert!(matches!(
            fatal(&untrusted, "h:1", &None),
            Err(MqttError::UntrustedCertificate { .. })
        ));
        let down = ConnectionError::Io(std::io::ErrorKind::ConnectionRefused.into());
        assert!(fatal(&down, "h:1", &None).is_ok());
        let busy = ConnectionError::ConnectionRefused(ConnectReturnCode::ServiceUnavailable);
        assert!(fatal(&busy, "h:1", &None).is_ok());
    }
}
