//! The simulator's driver: hands the [`Generator`]'s messages to rumqttc on schedule, keeps the
//! event loop polling in a task of its own, counts deliveries with the `Tally`, and winds down
//! cleanly (drain, DISCONNECT, summary).

use std::fmt;
use std::time::{Duration, SystemTime};

use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, Packet};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::generator::{Generator, Publication, Schedule, Tally};
use super::{Scenario, SimulateConfig, SimulateError, MAX_OUTSTANDING};
use crate::backoff::Backoff;
use crate::mqtt_client;

/// After SIGINT/SIGTERM: how long to wait for the acknowledgements of messages already sent.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// How long the clean DISCONNECT may take at the end.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Events buffered between the event-loop task and the publisher.
const EVENT_BUFFER: usize = 256;

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
    let broker = broker_config.address();
    let (client, eventloop) = AsyncClient::new(broker_config.options(), MAX_OUTSTANDING as usize);
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
                        mqtt_client::fatal(&error, &broker_config)?;
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
}
