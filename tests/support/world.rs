#![allow(dead_code)]
//! The servers an end-to-end bridge scenario runs against, in two kinds: the embedded MQTT
//! broker with the bundled XMPP server, both in the test's process (nothing but the crate), or
//! mosquitto with Prosody (Debian packages; `None` when they are missing, which a test turns into
//! a skip, or a failure with CI=true). Each keeps its port across stops and restarts, so the
//! bridge reconnects to the same address; while a server is stopped a [`PortHold`] keeps its port
//! from other tests. The bridge itself runs in the test's process too ([`InProcessBridge`]);
//! [`World::bridge_args`] gives the flags for running it as the binary instead.

use super::bridge::InProcessBridge;
#[allow(unused_imports)]
pub use super::bridge::{ONLINE, STARTUP, SUBSCRIBED};
use super::chat::ChatClient;
use super::files::password_file;
use super::peers::{Mosquitto, Prosody};
use super::ports::PortHold;
use super::server::InProcessServer;
use std::path::Path;

/// The bot's account in every world.
pub const BOT: &str = "bot@localhost";
/// The user's account in every world.
pub const ALICE: &str = "alice@localhost";

/// Which servers a scenario runs against.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// The embedded MQTT broker and the bundled XMPP server.
    Bundled,
    /// mosquitto and Prosody.
    Peers,
}

/// The MQTT broker of a scenario. It keeps its port across stops and restarts: while it is
/// stopped, a [`PortHold`] keeps the port for it.
pub struct Broker {
    server: BrokerServer,
    hold: Option<PortHold>,
}

enum BrokerServer {
    Mosquitto(Mosquitto),
    #[cfg(feature = "embedded-broker")]
    Embedded {
        broker: Option<mqtt2xmpp::broker::EmbeddedBroker>,
        port: u16,
    },
}

impl Broker {
    /// A running broker. None = skipped (mosquitto is missing).
    pub async fn start(kind: Kind) -> Option<Broker> {
        match kind {
            #[cfg(feature = "embedded-broker")]
            Kind::Bundled => {
                let mut broker = Broker::stopped(kind)?;
                broker.restart().await;
                Some(broker)
            }
            _ => Some(Broker {
                server: BrokerServer::Mosquitto(Mosquitto::start()?),
                hold: None,
            }),
        }
    }

    /// A broker that is not running yet: connections to its port are refused until
    /// [`Broker::restart`].
    pub fn stopped(kind: Kind) -> Option<Broker> {
        match kind {
            #[cfg(feature = "embedded-broker")]
            Kind::Bundled => {
                let hold = PortHold::any();
                Some(Broker {
                    server: BrokerServer::Embedded {
                        broker: None,
                        port: hold.port(),
                    },
                    hold: Some(hold),
                })
            }
            _ => {
                let mosquitto = Mosquitto::start()?;
                let mut broker = Broker {
                    server: BrokerServer::Mosquitto(mosquitto),
                    hold: None,
                };
                broker.stop_mosquitto();
                Some(broker)
            }
        }
    }

    pub fn port(&self) -> u16 {
        match &self.server {
            BrokerServer::Mosquitto(m) => m.port,
            #[cfg(feature = "embedded-broker")]
            BrokerServer::Embedded { port, .. } => *port,
        }
    }

    fn stop_mosquitto(&mut self) {
        if let BrokerServer::Mosquitto(m) = &mut self.server {
            m.stop();
            self.hold = Some(PortHold::new(m.port));
        }
    }

    /// Stops the broker; connections to its port are refused when this returns.
    pub async fn stop(&mut self) {
        match &mut self.server {
            BrokerServer::Mosquitto(_) => self.stop_mosquitto(),
            #[cfg(feature = "embedded-broker")]
            BrokerServer::Embedded { broker, port } => {
                if let Some(broker) = broker.take() {
                    broker.shutdown().await;
                    self.hold = Some(PortHold::new(*port));
                }
            }
        }
    }

    /// Starts the broker (again) on its port; it accepts connections when this returns.
    pub async fn restart(&mut self) {
        match &mut self.server {
            BrokerServer::Mosquitto(m) => m.restart(),
            #[cfg(feature = "embedded-broker")]
            BrokerServer::Embedded { broker, port } => {
                if let Some(running) = broker.take() {
                    running.shutdown().await;
                }
                let addr = std::net::SocketAddr::from(([127, 0, 0, 1], *port));
                *broker = Some(
                    mqtt2xmpp::broker::EmbeddedBroker::start(addr)
                        .await
                        .expect("embedded broker on its port"),
                );
            }
        }
        self.hold = None;
    }
}

/// The XMPP server of a scenario, with the accounts `bot` and `alice`. It keeps its port,
/// certificate and accounts across stops and restarts: while it is stopped, a [`PortHold`] keeps
/// the port for it.
pub struct Xmpp {
    server: XmppServer,
    hold: Option<PortHold>,
}

// One per test, never moved around in bulk: the size difference of the variants costs nothing.
#[allow(clippy::large_enum_variant)]
enum XmppServer {
    Bundled(InProcessServer),
    Prosody(Prosody),
}

impl Xmpp {
    /// A running server. None = skipped (Prosody is missing).
    pub async fn start(kind: Kind) -> Option<Xmpp> {
        let server = match kind {
            Kind::Bundled => XmppServer::Bundled(InProcessServer::start().await),
            Kind::Peers => XmppServer::Prosody(Prosody::start()?),
        };
        for user in ["bot", "alice"] {
            match &server {
                XmppServer::Bundled(s) => s.add_user(user, &format!("{user}-secret")),
                XmppServer::Prosody(s) => s.register(user, &format!("{user}-secret")),
            }
        }
        Some(Xmpp { server, hold: None })
    }

    pub fn port(&self) -> u16 {
        match &self.server {
            XmppServer::Bundled(s) => s.port,
            XmppServer::Prosody(s) => s.port,
        }
    }

    pub fn ca_file(&self) -> &Path {
        match &self.server {
            XmppServer::Bundled(s) => &s.ca_file,
            XmppServer::Prosody(s) => &s.ca_file,
        }
    }

    /// Creates another account.
    pub fn register(&self, user: &str, password: &str) {
        match &self.server {
            XmppServer::Bundled(s) => s.add_user(user, password),
            XmppServer::Prosody(s) => s.register(user, password),
        }
    }

    /// Stops the server gracefully; connections to its port are refused when this returns.
    pub async fn stop(&mut self) {
        match &mut self.server {
            // The bundled server holds its port itself while it is stopped.
            XmppServer::Bundled(s) => s.stop().await,
            XmppServer::Prosody(s) => {
                s.stop();
                self.hold = Some(PortHold::new(s.port));
            }
        }
    }

    /// Starts the server (again) on its port; it accepts connections when this returns.
    pub async fn restart(&mut self) {
        match &mut self.server {
            XmppServer::Bundled(s) => s.restart().await,
            XmppServer::Prosody(s) => s.restart(),
        }
        self.hold = None;
    }
}

/// A broker, an XMPP server, and a temporary directory for password files.
pub struct World {
    /// The broker.
    pub mqtt: Broker,
    /// The XMPP server.
    pub xmpp: Xmpp,
    /// Password files and other scratch files.
    pub dir: tempfile::TempDir,
}

impl World {
    /// Both servers running. None = skipped.
    pub async fn start(kind: Kind) -> Option<World> {
        let mqtt = Broker::start(kind).await?;
        World::with_broker(kind, mqtt).await
    }

    /// The XMPP server running, `mqtt` as given.
    pub async fn with_broker(kind: Kind, mqtt: Broker) -> Option<World> {
        let xmpp = Xmpp::start(kind).await?;
        Some(World {
            mqtt,
            xmpp,
            dir: tempfile::tempdir().expect("temp dir"),
        })
    }

    /// Bridge flags for this world with `bot_password`, trusting the XMPP server's
    /// certificate, plus `extra`.
    pub fn bridge_args(&self, bot_password: &str, extra: &[&str]) -> Vec<String> {
        let mut args = self.bridge_args_without_ca(bot_password);
        args.push("--xmpp-ca".into());
        args.push(self.xmpp.ca_file().to_string_lossy().into_owned());
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    /// Bridge flags for this world with `bot_password`, without `--xmpp-ca`.
    pub fn bridge_args_without_ca(&self, bot_password: &str) -> Vec<String> {
        vec![
            "bridge".into(),
            "--mqtt-port".into(),
            self.mqtt.port().to_string(),
            "--jid".into(),
            BOT.into(),
            "--password-file".into(),
            password_file(self.dir.path(), "bot.pw", bot_password),
            "--xmpp-server".into(),
            format!("127.0.0.1:{}", self.xmpp.port()),
            "--unit".into(),
            "°C".into(),
        ]
    }

    /// Starts the bridge with `extra` flags without waiting for anything.
    pub fn spawn_bot(&self, extra: &[&str]) -> InProcessBridge {
        InProcessBridge::spawn(&self.bridge_args("bot-secret", extra))
    }

    /// Starts the bridge with `extra` flags and waits until it is online and subscribed.
    pub async fn start_bot(&self, extra: &[&str]) -> InProcessBridge {
        InProcessBridge::start(&self.bridge_args("bot-secret", extra)).await
    }

    pub async fn alice(&self) -> ChatClient {
        ChatClient::login(ALICE, "alice-secret", self.xmpp.port(), self.xmpp.ca_file()).await
    }
}
