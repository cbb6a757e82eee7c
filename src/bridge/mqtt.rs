//! The MQTT side of the bridge: keeps a rumqttc event loop polling, hands every payload to the
//! [`Bot`], and survives the broker going away.
//!
//! rumqttc facts this module is built around: the event loop must be polled continuously (it
//! does the keep-alive and the reconnect); after an error the next `poll()` reconnects at once,
//! so the backoff is ours ([`Backoff::reconnect`]); with a clean session the broker forgets
//! subscriptions on disconnect, so we subscribe again on every ConnAck.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Outgoing, Packet, QoS, SubscribeFilter, SubscribeReasonCode};
use tokio_util::sync::CancellationToken;

use super::bot::{Bot, Ingest};
use super::cache::Stored;
use super::reading;
use super::status::Reporter;
use crate::backoff::Backoff;
use crate::log_limit::LogLimit;
use crate::mqtt_client::{self, Broker, MqttError};

/// The largest MQTT packet the bridge accepts from the broker. Bigger ones make rumqttc drop the
/// connection, so this is generous; payloads are then limited by [`reading::MAX_PAYLOAD_BYTES`].
const MAX_INCOMING_PACKET: usize = 1024 * 1024;

/// How long a clean disconnect may take at shutdown.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// At most one log line per this interval about unreadable payloads.
const REJECT_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Subscribes to the filters of the bot's sensors on `config`'s broker and runs until
/// `shutdown`, then disconnects cleanly. Returns an error only for problems that reconnecting
/// cannot fix.
pub async fn run(
    config: Broker,
    bot: Arc<Bot>,
    status: Reporter,
    shutdown: CancellationToken,
) -> Result<(), MqttError> {
    let broker = config.address();
    // The sensors' filters: what the bot reads is what it subscribes to.
    let filters = bot.sensors().filters();
    let mut options = config.options();
    options.set_max_packet_size(MAX_INCOMING_PACKET, 64 * 1024);
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    let mut backoff = Backoff::reconnect();
    let mut rejects = LogLimit::new(REJECT_LOG_INTERVAL);
    let mut refusals = LogLimit::new(REJECT_LOG_INTERVAL);
    let topics = filters.join(" ");
    tracing::info!(broker, topics, "connecting to the MQTT broker");

    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => break,
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                tracing::info!(broker, "connected to the MQTT broker");
                backoff.reset();
                // try_subscribe_many only queues the request: the loop stays free to poll.
                let filters = filters
                    .iter()
                    .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
                if let Err(e) = client.try_subscribe_many(filters) {
                    tracing::error!("could not queue the subscription to {topics}: {e}");
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                for (filter, code) in filters.iter().zip(&ack.return_codes) {
                    if matches!(code, SubscribeReasonCode::Failure) {
                        tracing::error!(
                            topic = filter,
                            "the broker refused the subscription: check the broker's ACL for this user"
                        );
                    } else {
                        tracing::info!(topic = filter, "subscribed");
                    }
                }
                status.subscribed();
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let now = Instant::now();
                match bot.ingest(&publish.topic, &publish.payload, publish.retain, now) {
                    Ingest::Stored(Stored::Full) => {
                        if let Some(suppressed) = refusals.admit(now) {
                            tracing::warn!(
                                topic = publish.topic,
                                "not tracking a new topic: --max-topics ({}) topics are tracked \
                                 already ({suppressed} more new-topic readings dropped since the \
                                 last report); raise --max-topics or narrow the --topic filters",
                                bot.cache().limits().max_topics
                            );
                        }
                    }
                    Ingest::Stored(_) => {
                        tracing::trace!(topic = publish.topic, "reading");
                    }
                    Ingest::Unwanted => {
                        tracing::debug!(topic = publish.topic, "ignored a topic no sensor covers");
                    }
                    Ingest::Unreadable(error) => {
                        if let Some(suppressed) = rejects.admit(now) {
                            let more = match suppressed {
                                0 => String::new(),
                                n => {
                                    format!(" ({n} more unreadable payloads since the last report)")
                                }
                            };
                            tracing::warn!(
                                topic = publish.topic,
                                payload = reading::excerpt(&publish.payload, 40),
                                "ignored unreadable payload: {error}; keeping the last valid reading{more}"
                            );
                        }
                    }
                }
            }
            Ok(_) => {}
            Err(error) => {
                mqtt_client::fatal(&error, &config)?;
                let delay = backoff.next_delay();
                tracing::warn!(
                    broker,
                    "MQTT connection failed: {error}; retrying in {delay:.1?}"
                );
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }

    // Clean disconnect: queue DISCONNECT and poll until it is on the wire (or the connection is
    // already gone).
    if client.try_disconnect().is_ok() {
        let flushed = tokio::time::timeout(DISCONNECT_TIMEOUT, async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        if flushed.is_err() {
            tracing::debug!("MQTT disconnect did not complete in time");
        }
    }
    tracing::info!(broker, "disconnected from the MQTT broker");
    Ok(())
}
