//! mqtt2xmpp: ask your MQTT sensors questions from any XMPP chat client.
//!
//! | module | what it does |
//! |---|---|
//! | [`cli`] | flags and subcommands (clap), each flag also read from `MQTT2XMPP_*`; imports nothing else of the crate |
//! | [`config`] | flags → validated settings of every subcommand (the only place), with errors that say how to fix them |
//! | [`bridge`] | the bot: MQTT task + XMPP task around one cache of readings |
//! | [`server`] | the bundled XMPP server: streams, SASL, the hub and its services, SQLite store |
//! | `accept` | the bounded accept loop shared by the XMPP server and the embedded broker |
//! | [`ask`] | one-shot chat client for scripts and measurements |
//! | [`up`] | `mqtt2xmpp up`: broker, server, simulated sensor and bot in one process |
//! | [`simulate`] | simulated sensors (one temperature, or a whole building) publishing to any broker |
//! | [`mqtt_client`] | the broker to log in to, rumqttc options, client ids, fatal connection errors |
//! | [`xmpp_connect`] | STARTTLS with our trust settings; turns refused logins into errors |
//! | `caps` | XEP-0115 entity capabilities: the verification string and `<c/>`, for the server and the bot |
//! | `topic` | MQTT topic filters: matching and validation |
//! | [`tls`] | rustls client configuration (system roots + `--*-ca` files) |
//! | [`secret`] | passwords from files or the environment, never printed |
//! | `sqlite` | opening the SQLite files of the server and the bot, migrations |
//! | `log_limit` | one log line per interval for problems that repeat |
//! | `backoff` | reconnect delays with jitter |
//! | `broker` | the embedded MQTT broker: in-process, on loopback, for `up` and tests (feature `embedded-broker`) |

#![deny(missing_docs)]

pub(crate) mod accept;
pub mod ask;
pub(crate) mod backoff;
pub mod bridge;
#[cfg(feature = "embedded-broker")]
pub mod broker;
pub(crate) mod caps;
pub mod cli;
pub mod config;
pub(crate) mod log_limit;
pub mod mqtt_client;
pub mod secret;
pub mod server;
pub mod simulate;
pub(crate) mod sqlite;
pub mod tls;
pub(crate) mod topic;
pub mod up;
pub mod xmpp_connect;
