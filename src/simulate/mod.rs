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
//! The module is split like the rest of the crate: a sans-IO core (`generator.rs`: [`Generator`]
//! and the private `Tally` and `Schedule` bookkeeping) that decides *what* to publish and *when*,
//! driven by any seeded RNG and clock and unit-tested as data in `tests.rs`, and a thin driver
//! (`driver.rs`: [`run`]) that hands the messages to rumqttc. The flags become a
//! [`SimulateConfig`] in `config`, which is the only module that knows them.
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

mod driver;
mod generator;

use std::time::Duration;

use rumqttc::QoS;
use thiserror::Error;

pub use driver::{run, Summary};
pub use generator::{Generator, Kind, Publication, SensorId, Wing};

use crate::mqtt_client::{Broker, MqttError};

/// Most messages handed to rumqttc and not yet delivered (acknowledged with QoS 1, written with
/// QoS 0). It is also the request queue's capacity, so queueing never fails for lack of room,
/// and it matches rumqttc's default in-flight window.
pub const MAX_OUTSTANDING: u64 = 100;

/// Highest `--rate`: far above what one connection carries, low enough that a gap is never
/// shorter than a few microseconds.
pub const MAX_RATE: f64 = 100_000.0;

/// Lowest `--rate`: one message every 1000 s.
pub const MIN_RATE: f64 = 0.001;

/// The prefix of the simulator's MQTT client identifiers, to tell it from the bot in the
/// broker's log.
pub const CLIENT_ID_PREFIX: &str = "mqtt2xmppsim";

/// Everything [`run`] needs; built from flags by `config::simulate`, or directly (e.g. to run a
/// simulated sensor inside another command).
#[derive(Debug, Clone)]
pub struct SimulateConfig {
    /// Where to publish.
    pub broker: Broker,
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
