//! Shared fixtures for the integration tests.
//!
//! The bundled XMPP server, the bridge and the embedded MQTT broker run in the test's own
//! process ([`server::InProcessServer`], [`bridge::InProcessBridge`]), on ports the kernel picks;
//! the binary runs as a child process ([`process::BinaryProcess`], [`server::ServerProcess`]) only
//! where what is tested is the binary itself, and real peers (mosquitto, Prosody, …) run as the
//! programs they are ([`peers`]).

pub mod bridge;
pub mod chat;
pub mod conversation;
pub mod ejabberd;
pub mod files;
pub mod mqtt;
pub mod peers;
pub mod ports;
pub mod process;
pub mod profanity;
pub mod proxy;
pub mod raw;
pub mod rooms;
pub mod server;
pub mod world;
