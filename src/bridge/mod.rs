//! `mqtt2xmpp bridge`: the bot. An MQTT task hands every payload to the `bot::Bot`, which keeps
//! the latest reading and a bounded history per topic, and evaluates alerts; an XMPP task answers
//! chat messages and commands from it, sends alert messages, and shows the default reading in
//! its presence.
//!
//! ```text
//! sensors ─MQTT─▶ broker ─▶ mqtt::run ─▶ Bot (cache, history, alerts) ─▶ xmpp::run ─▶ chat
//!                                          └─▶ persist (optional SQLite)
//! ```
//!
//! | module | what it does |
//! |---|---|
//! | `sensors` | named sensors from flags and a TOML file; which sensor a topic belongs to |
//! | [`reading`] | payload bytes → a number (plain or through a JSON pointer) |
//! | `cache` | latest reading and bounded history per topic, bounded number of topics |
//! | [`commands`] | chat text → command (English and Spanish) |
//! | `reply` | formatting of readings, listings and statistics |
//! | `alerts` | per-contact alerts with hysteresis, minimum interval and silence detection |
//! | `access` | allow list, refusals, per-contact rate limit |
//! | `bot` | the above tied together: ingest, alert messages, presence |
//! | `chat` | the chat commands, one file per command group, behind access control |
//! | `adhoc` | the same commands as XEP-0050 ad-hoc commands with XEP-0004 forms |
//! | `room` | the bot in XEP-0045 rooms: joining, staying (self-ping, rejoin backoff), whether a room message is for it, the loop guard, invitations |
//! | `identity` | what the bot says it is: disco#info identity and features (`FEATURES`), entity capabilities in its presence |
//! | `profile` | its nickname, vCard and avatar, published once per change |
//! | `persist` | optional SQLite state: history and alerts across restarts |
//! | `sensordata` | XEP-0323 sensor-data read-outs: topics as nodes, values from the cache and history, paged and capped |
//! | `mqtt`, `xmpp` | the two network tasks |
//! | `status` | what the running bridge reports: subscribed, online ([`run_with_status`]) |
//!
//! Both tasks reconnect by themselves; either one stops the whole bridge only for a problem that
//! reconnecting cannot fix (a refused login, an untrusted certificate), and then the other is
//! shut down cleanly too.

pub(crate) mod access;
pub(crate) mod adhoc;
pub(crate) mod alerts;
pub(crate) mod bot;
pub(crate) mod cache;
pub mod chart;
pub(crate) mod chat;
pub mod commands;
pub(crate) mod identity;
pub(crate) mod mqtt;
pub(crate) mod persist;
pub(crate) mod profile;
pub mod reading;
pub(crate) mod reply;
pub(crate) mod room;
pub(crate) mod sensordata;
pub(crate) mod sensors;
pub(crate) mod status;
pub(crate) mod xmpp;

use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use self::status::Status;

/// Everything the bridge needs, already validated: made from flags by `config::bridge`.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// The broker the MQTT side logs in to; it subscribes to the filters of `sensors`.
    pub(crate) mqtt: crate::mqtt_client::Broker,
    /// The XMPP side.
    pub(crate) xmpp: xmpp::XmppConfig,
    /// What the bot reads and how it shows it.
    pub(crate) sensors: sensors::Sensors,
    /// How the bot behaves.
    pub(crate) bot: bot::BotSettings,
    /// How much it remembers.
    pub(crate) limits: cache::CacheLimits,
    /// Where history and alerts are kept across restarts, if anywhere.
    pub(crate) state_db: Option<std::path::PathBuf>,
}

/// Why the bridge stopped on its own.
#[derive(Debug, Error)]
pub enum BridgeError {
    /// The MQTT side hit a problem reconnecting cannot fix.
    #[error(transparent)]
    Mqtt(#[from] crate::mqtt_client::MqttError),
    /// The XMPP side hit a problem reconnecting cannot fix.
    #[error(transparent)]
    Xmpp(#[from] crate::xmpp_connect::Fatal),
    /// The state database could not be opened or read.
    #[error(transparent)]
    State(#[from] persist::PersistError),
    /// A task panicked: a bug.
    #[error("internal error: a bridge task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// How often the bot looks for silent sensors and writes queued readings to the database.
const TICK: Duration = Duration::from_secs(1);

/// Runs the bridge until `shutdown` fires (then returns `Ok`) or one side fails for good.
pub async fn run(config: BridgeConfig, shutdown: CancellationToken) -> Result<(), BridgeError> {
    run_with_status(config, shutdown, watch::channel(Status::default()).0).await
}

/// [`run`], reporting into `status` each time the bot is subscribed to MQTT and online on
/// XMPP (see `status`).
pub async fn run_with_status(
    config: BridgeConfig,
    shutdown: CancellationToken,
    status: watch::Sender<Status>,
) -> Result<(), BridgeError> {
    let reporter = status::Reporter::new(status);
    let cache = cache::Cache::new(config.limits);
    let (sensors, settings, state_db) = (config.sensors, config.bot, config.state_db);
    // Opening and reading the database blocks: keep it off the async workers.
    let (bot, outlets) = tokio::task::spawn_blocking(move || {
        let db = state_db
            .as_deref()
            .map(persist::StateDb::open)
            .transpose()?;
        bot::Bot::new(sensors, cache, settings, db)
    })
    .await??;
    let stop = shutdown.child_token();
    let stopped = stop.clone();
    let mut tasks = JoinSet::new();
    let mqtt = mqtt::run(config.mqtt, bot.clone(), reporter.clone(), stopped.clone());
    tasks.spawn(async move { mqtt.await.map_err(BridgeError::from) });
    let xmpp = xmpp::run(config.xmpp, bot.clone(), outlets, reporter, stopped.clone());
    tasks.spawn(async move { xmpp.await.map_err(BridgeError::from) });
    let ticker = bot.clone();
    let tick_stop = stopped;
    tasks.spawn(async move {
        let mut interval = tokio::time::interval(TICK);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick_stop.cancelled() => return Ok(()),
                _ = interval.tick() => ticker.tick(Instant::now()),
            }
        }
    });

    let mut outcome = Ok(());
    let mut stopping = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled(), if !stopping => {
                stopping = true;
                stop.cancel();
            }
            finished = tasks.join_next() => match finished {
                None => break,
                Some(result) => {
                    if let Err(error) = result.map_err(BridgeError::from).and_then(|r| r) {
                        if outcome.is_ok() {
                            outcome = Err(error);
                        }
                    }
                    // One side is done: the other follows.
                    stopping = true;
                    stop.cancel();
                }
            },
        }
    }
    let (accepted, rejected) = bot.cache().counts();
    let refused = bot.cache().refused();
    tracing::info!(
        accepted,
        rejected,
        refused,
        "bridge stopped; MQTT payloads accepted, rejected (unreadable) and refused (over --max-topics)"
    );
    // Every task has ended, so this is the last reference: save what is queued.
    if tokio::task::spawn_blocking(move || bot.close())
        .await
        .is_err()
    {
        tracing::error!("could not finish writing the state database");
    }
    outcome
}
