//! The simulator's sans-IO core: what to publish ([`Generator`]: topics, payloads, gaps) and the
//! bookkeeping of when and how much (`Schedule`, `Tally`). No sockets, no clocks of its own: the
//! caller supplies the RNG, the wall-clock time and the events it saw, so every rule is tested as
//! data in the sibling `tests.rs`.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rumqttc::{Event, Outgoing, Packet, QoS};
use tokio::time::Instant;

use super::{Building, Scenario, MAX_OUTSTANDING, MAX_RATE, MIN_RATE};

/// When the publisher falls further behind its schedule than this (a slow broker, a full
/// in-flight window), the backlog is forgiven instead of sent as a burst.
const MAX_LAG: Duration = Duration::from_millis(250);

#[cfg(test)]
#[path = "tests.rs"]
mod tests;

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
pub(super) struct Schedule {
    /// When the next message is due.
    pub(super) due: Instant,
}

impl Schedule {
    /// A schedule whose first message is due at `now`.
    pub(super) fn new(now: Instant) -> Self {
        Self { due: now }
    }

    /// The next message is due `gap` after the previous one (but not more than [`MAX_LAG`]
    /// before `now`).
    pub(super) fn advance(&mut self, gap: Duration, now: Instant) {
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
pub(super) struct Tally {
    qos: QoS,
    limit: Option<u64>,
    /// Messages the broker has (see [`Tally::observe`]).
    pub(super) delivered: u64,
    /// Messages handed to rumqttc and not yet delivered.
    pub(super) in_flight: u64,
    /// Messages given up on because the connection dropped.
    pub(super) abandoned: u64,
}

impl Tally {
    pub(super) fn new(qos: QoS, limit: Option<u64>) -> Self {
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
    pub(super) fn may_queue(&self) -> bool {
        let wanted = self
            .limit
            .is_none_or(|limit| self.delivered + self.in_flight < limit);
        wanted && self.in_flight < MAX_OUTSTANDING
    }

    pub(super) fn queued(&mut self) {
        self.in_flight += 1;
    }

    /// Counts a delivery if `event` is one; returns whether it was.
    pub(super) fn observe(&mut self, event: &Event) -> bool {
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
    pub(super) fn connection_lost(&mut self) {
        self.abandoned += self.in_flight;
        self.in_flight = 0;
    }

    /// `--count` reached.
    pub(super) fn complete(&self) -> bool {
        self.limit.is_some_and(|limit| self.delivered >= limit)
    }
}
