//! `mqtt2xmpp bridge`: the bot. An MQTT task fills a [`cache::Cache`] with the latest reading; an
//! XMPP task answers every chat message from it.
//!
//! ```text
//! sensor ─MQTT─▶ broker ─▶ mqtt::run ─▶ Cache ─▶ xmpp::run ─▶ "21.5 °C (sensors/temperature, 3 s ago)"
//! ```
//!
//! Both tasks reconnect by themselves; either one stops the whole bridge only for a problem that
//! reconnecting cannot fix (a refused login, an untrusted certificate), and then the other is
//! shut down cleanly too.

pub mod cache;
pub mod mqtt;
pub mod reading;
pub mod reply;
pub mod xmpp;

use thiserror::Error;
use tokio::task::JoinSet;

use crate::shutdown::{self, Shutdown};

/// Everything the bridge needs, already validated.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// The MQTT side.
    pub mqtt: mqtt::MqttConfig,
    /// The XMPP side.
    pub xmpp: xmpp::XmppConfig,
    /// How readings are presented.
    pub view: reply::SensorView,
}

/// Why the bridge stopped on its own.
#[derive(Debug, Error)]
pub enum BridgeError {
    /// The MQTT side hit a problem reconnecting cannot fix.
    #[error(transparent)]
    Mqtt(#[from] mqtt::MqttError),
    /// The XMPP side hit a problem reconnecting cannot fix.
    #[error(transparent)]
    Xmpp(#[from] crate::xmpp_connect::Fatal),
    /// A task panicked: a bug.
    #[error("internal error: a bridge task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Runs the bridge until `shutdown` fires (then returns `Ok`) or one side fails for good.
pub async fn run(config: BridgeConfig, mut shutdown: Shutdown) -> Result<(), BridgeError> {
    let cache = cache::Cache::new();
    let (stop, stopped) = shutdown::channel();
    let mut tasks = JoinSet::new();
    let mqtt = mqtt::run(config.mqtt, cache.clone(), stopped.clone());
    tasks.spawn(async move { mqtt.await.map_err(BridgeError::from) });
    let replier = xmpp::reading_replier(config.view, cache.clone());
    let xmpp = xmpp::run(config.xmpp, replier, stopped);
    tasks.spawn(async move { xmpp.await.map_err(BridgeError::from) });

    let mut outcome = Ok(());
    let mut stopping = false;
    loop {
        tokio::select! {
            _ = shutdown.wait(), if !stopping => {
                stopping = true;
                stop.fire();
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
                    stop.fire();
                }
            },
        }
    }
    let (accepted, rejected) = cache.counts();
    tracing::info!(
        accepted,
        rejected,
        "bridge stopped; MQTT payloads accepted and rejected"
    );
    outcome
}
