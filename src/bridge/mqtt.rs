//! The MQTT side of the bridge: keeps a rumqttc event loop polling, hands every payload to the
//! [`Bot`], and survives the broker going away.
//!
//! rumqttc facts this module is built around: the event loop must be polled continuously (it
//! does the keep-alive and the reconnect); after an error the next `poll()` reconnects at once,
//! so the backoff is ours ([`Backoff::reconnect`]); with a clean session the broker forgets subscriptions on disconnect,
//! so we subscribe again on every ConnAck.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, MqttOptions, Outgoing, Packet, QoS,
    SubscribeFilter, SubscribeReasonCode, TlsConfiguration, Transport,
};
use thiserror::Error;

use super::bot::{Bot, Ingest};
use super::cache::Stored;
use super::reading;
use crate::backoff::Backoff;
use crate::log_limit::LogLimit;
use crate::secret::Secret;
use tokio_util::sync::CancellationToken;

/// The largest MQTT packet the bridge accepts from the broker. Bigger ones make rumqttc drop the
/// connection, so this is generous; payloads are then limited by [`reading::MAX_PAYLOAD_BYTES`].
const MAX_INCOMING_PACKET: usize = 1024 * 1024;

/// How long a clean disconnect may take at shutdown.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// At most one log line per this interval about unreadable payloads.
const REJECT_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Everything the MQTT task needs.
#[derive(Debug, Clone)]
pub struct MqttConfig {
    /// Broker host name or address.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Login, if the broker wants one.
    pub username: Option<String>,
    /// Password for `username`.
    pub password: Option<Secret>,
    /// Client identifier; must be unique on the broker.
    pub client_id: String,
    /// TLS configuration, or `None` for plain TCP.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The topics and filters to subscribe to (the sensors' filters).
    pub filters: Vec<String>,
    /// MQTT keep-alive interval.
    pub keep_alive: Duration,
}

/// Problems that retrying cannot fix.
#[derive(Debug, Error)]
pub enum MqttError {
    /// The broker refused our credentials.
    #[error(
        "the MQTT broker at {broker} refused the login{who} ({code:?}): check --mqtt-username \
         and --mqtt-password-file"
    )]
    LoginRefused {
        /// `host:port`.
        broker: String,
        /// ` as USER`, or empty when anonymous.
        who: String,
        /// The CONNACK return code.
        code: ConnectReturnCode,
    },
    /// The broker's TLS certificate failed verification.
    #[error(
        "the MQTT broker's certificate at {broker} is not trusted ({reason}); give its CA with \
         --mqtt-ca FILE"
    )]
    UntrustedCertificate {
        /// `host:port`.
        broker: String,
        /// What rustls said.
        reason: String,
    },
}

/// Runs until `shutdown`, then disconnects cleanly. Returns an error only for problems that
/// reconnecting cannot fix.
pub async fn run(
    config: MqttConfig,
    bot: Arc<Bot>,
    shutdown: CancellationToken,
) -> Result<(), MqttError> {
    let broker = format!("{}:{}", config.host, config.port);
    let mut options = MqttOptions::new(config.client_id.clone(), config.host.clone(), config.port);
    options
        .set_keep_alive(config.keep_alive)
        .set_clean_session(true)
        .set_max_packet_size(MAX_INCOMING_PACKET, 64 * 1024);
    if let Some(user) = &config.username {
        let password = config.password.as_ref().map(Secret::expose).unwrap_or("");
        options.set_credentials(user.clone(), password);
    }
    if let Some(tls) = &config.tls {
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            tls.clone(),
        )));
    }
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    let mut backoff = Backoff::reconnect();
    let mut rejects = LogLimit::new(REJECT_LOG_INTERVAL);
    let mut refusals = LogLimit::new(REJECT_LOG_INTERVAL);
    let topics = config.filters.join(" ");
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
                let filters = config
                    .filters
                    .iter()
                    .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
                if let Err(e) = client.try_subscribe_many(filters) {
                    tracing::error!("could not queue the subscription to {topics}: {e}");
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                for (filter, code) in config.filters.iter().zip(&ack.return_codes) {
                    if matches!(code, SubscribeReasonCode::Failure) {
                        tracing::error!(
                            topic = filter,
                            "the broker refused the subscription: check the broker's ACL for this user"
                        );
                    } else {
                        tracing::info!(topic = filter, "subscribed");
                    }
                }
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
            Err(ConnectionError::ConnectionRefused(
                code @ (ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized),
            )) => {
                let who = config
                    .username
                    .as_ref()
                    .map(|u| format!(" as {u}"))
                    .unwrap_or_default();
                return Err(MqttError::LoginRefused { broker, who, code });
            }
            Err(error) => {
                if let Some(reason) = crate::tls::untrusted_certificate(&error) {
                    return Err(MqttError::UntrustedCertificate { broker, reason });
                }
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
