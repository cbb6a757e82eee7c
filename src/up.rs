//! `mqtt2xmpp up`: everything in one process, for a first chat a minute after cloning.
//!
//! On loopback it starts an embedded MQTT broker (unless `--mqtt-host` names a real one), the
//! bundled XMPP server for `localhost`, a simulated temperature sensor and the bridge, creates
//! the accounts `bot@localhost` and `you@localhost` with random passwords kept in the data
//! directory (printed once, when created), and prints how to ask. Run again, it reuses the data
//! directory: same accounts, same certificate.
//!
//! Who may use the bot: every account of up's own server, since its operator created each one
//! (`you@localhost`, and any added with `mqtt2xmpp user add NAME@localhost` while `up` runs);
//! `--allow` and `--allow-domain` add contacts beyond those, as in `bridge`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rand::distr::{Alphanumeric, SampleString};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Notify};
use tokio_util::sync::CancellationToken;
use tokio_xmpp::jid::{self, Jid};

use crate::bridge::sensors::{Sensor, SensorDefaults, SensorError, Sensors};
use crate::bridge::{self, bot, reading::PayloadFormat};
use crate::mqtt_client::{self, Broker};
use crate::secret::{self, Secret};
use crate::server::{self, admin, limits::ServerLimits, Listeners, ServerConfig};
use crate::simulate;
use crate::xmpp_connect::{dns_config, AddressError, Connector};

/// The domain `up` serves.
pub const DOMAIN: &str = "localhost";
/// The bot's account.
pub const BOT: &str = "bot";

/// The prefix of the MQTT client identifier of `up`'s bot.
const BOT_CLIENT_ID_PREFIX: &str = "mqtt2xmppbot";

/// What `up` runs.
#[derive(Debug, Clone)]
pub struct UpConfig {
    /// Accounts, passwords, certificate and database live here.
    pub data_dir: PathBuf,
    /// The XMPP server's port on 127.0.0.1 (STARTTLS).
    pub xmpp_port: u16,
    /// The XMPP server's direct TLS port on 127.0.0.1 (XEP-0368).
    pub xmpp_tls_port: u16,
    /// The upload service's HTTPS port on 127.0.0.1 (XEP-0363).
    pub http_port: u16,
    /// The MQTT broker's port (embedded on 127.0.0.1, or on `mqtt_host`).
    pub mqtt_port: u16,
    /// A real broker to use instead of the embedded one.
    pub mqtt_host: Option<String>,
    /// The topic the bot answers about (and the simulator publishes to).
    pub topic: String,
    /// The user account's name (`NAME@localhost`).
    pub user: String,
    /// Run the simulated sensor.
    pub simulate: bool,
    /// The room the bot creates and joins (`--room`), unless `--no-room`.
    pub room: Option<crate::bridge::room::RoomJoin>,
    /// Sensors to answer about instead of `topic` alone.
    pub sensors_file: Option<PathBuf>,
    /// How long the server keeps a dropped session resumable (XEP-0198).
    pub resume_timeout: Duration,
    /// How the bot behaves and whom it answers besides the accounts of [`DOMAIN`], which
    /// [`run`] adds to `allow_domains`.
    pub bot: bot::BotSettings,
    /// Notified to make the server read its certificate again (see [`ServerConfig::reload`]).
    pub reload: Option<Arc<Notify>>,
}

/// Why `up` could not start or stopped.
#[derive(Debug, Error)]
pub enum UpError {
    /// A port is taken.
    #[error("port {port} is already in use ({what}); choose another with {flag}")]
    PortInUse {
        /// The port.
        port: u16,
        /// What wanted it.
        what: &'static str,
        /// The flag that changes it.
        flag: &'static str,
    },
    /// Some other I/O problem (data directory, listening).
    #[error("{what}: {source}")]
    Io {
        /// What failed.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// The sensors file cannot be used.
    #[error(transparent)]
    Sensors(#[from] SensorError),
    /// An account of `up` is not a usable JID (a `--user` name that is not a JID's user part).
    #[error("account {jid}: {source}")]
    Jid {
        /// The account.
        jid: String,
        /// Why it is not a JID.
        #[source]
        source: jid::Error,
    },
    /// The XMPP server's own address could not be used by the bot.
    #[error("XMPP address: {0}")]
    XmppAddress(#[from] AddressError),
    /// Account setup failed.
    #[error("setting up the accounts: {0}")]
    Accounts(#[from] admin::AdminError),
    /// A password file could not be read.
    #[error(transparent)]
    Secret(#[from] secret::SecretError),
    /// The server failed.
    #[error(transparent)]
    Server(#[from] server::ServerError),
    /// The bridge failed.
    #[error(transparent)]
    Bridge(#[from] bridge::BridgeError),
    /// The simulator failed.
    #[error(transparent)]
    Simulate(#[from] simulate::SimulateError),
    /// The embedded broker could not start.
    #[cfg(feature = "embedded-broker")]
    #[error("{0}; choose another port with --mqtt-port")]
    Broker(#[from] crate::broker::EmbeddedError),
    /// Built without the embedded broker and no `--mqtt-host` given.
    #[error("this build has no embedded MQTT broker: give a broker with --mqtt-host")]
    NoBroker,
    /// A TLS setting could not be applied.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsConfigError),
}

/// An account of `up` and its password.
#[derive(Debug)]
pub struct Account {
    /// `name@localhost`.
    pub jid: String,
    /// The file holding its password.
    pub password_file: PathBuf,
    /// The password, read from that file.
    pub password: Secret,
    /// Whether this run created it (its password is then printed once).
    pub created: bool,
}

/// Makes sure `name@localhost` exists with the password kept in `DATA_DIR/NAME.password`;
/// creates both (random password) on first use, and resets the account's password from the
/// file if only the file survived a database loss.
pub fn ensure_account(data_dir: &Path, name: &str) -> Result<Account, UpError> {
    let db = server::database_path(data_dir);
    let jid = format!("{name}@{DOMAIN}");
    let password_file = data_dir.join(format!("{name}.password"));
    let exists = admin::list(&db)?.iter().any(|user| user == name);
    let (password, created) = if password_file.exists() {
        let password = secret::read_file(&password_file)?;
        if exists {
            // Keep the account in step with its file (the file is what users are told to use).
            admin::passwd(&db, &jid, &password)?;
        } else {
            admin::add(&db, &jid, &password)?;
        }
        (password, false)
    } else {
        let password = Secret::new(Alphanumeric.sample_string(&mut rand::rng(), 20));
        server::cert::write_file(
            &password_file,
            format!("{}\n", password.expose()).as_bytes(),
            0o600,
        )
        .map_err(|source| UpError::Io {
            what: format!("writing {}", password_file.display()),
            source,
        })?;
        if exists {
            admin::passwd(&db, &jid, &password)?;
        } else {
            admin::add(&db, &jid, &password)?;
        }
        (password, true)
    };
    Ok(Account {
        jid,
        password_file,
        password,
        created,
    })
}

async fn listen(port: u16, what: &'static str, flag: &'static str) -> Result<TcpListener, UpError> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpListener::bind(addr).await.map_err(|source| {
        if source.kind() == std::io::ErrorKind::AddrInUse {
            UpError::PortInUse { port, what, flag }
        } else {
            UpError::Io {
                what: format!("listening on {addr}"),
                source,
            }
        }
    })
}

/// Runs everything until `shutdown` (or until a part fails for good), then stops it all.
pub async fn run(config: UpConfig, shutdown: CancellationToken) -> Result<(), UpError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| UpError::Io {
        what: format!("creating {}", config.data_dir.display()),
        source,
    })?;
    let bot = ensure_account(&config.data_dir, BOT)?;
    let you = ensure_account(&config.data_dir, &config.user)?;
    let xmpp_listener = listen(config.xmpp_port, "XMPP server", "--xmpp-port").await?;
    let xmpp_port = xmpp_listener
        .local_addr()
        .map(|a| a.port())
        .unwrap_or(config.xmpp_port);
    let xmpp_tls_listener = listen(
        config.xmpp_tls_port,
        "XMPP server, direct TLS",
        "--xmpp-tls-port",
    )
    .await?;
    let xmpp_tls_port = xmpp_tls_listener
        .local_addr()
        .map(|a| a.port())
        .unwrap_or(config.xmpp_tls_port);

    let http_listener = listen(config.http_port, "HTTP file upload", "--http-port").await?;

    // The broker: embedded on loopback, or the one the user named.
    #[cfg(feature = "embedded-broker")]
    let broker = match &config.mqtt_host {
        Some(_) => None,
        None => {
            let addr = SocketAddr::from(([127, 0, 0, 1], config.mqtt_port));
            Some(crate::broker::EmbeddedBroker::start(addr).await?)
        }
    };
    #[cfg(not(feature = "embedded-broker"))]
    if config.mqtt_host.is_none() {
        return Err(UpError::NoBroker);
    }
    #[cfg(feature = "embedded-broker")]
    let mqtt_port = broker
        .as_ref()
        .map(|b| b.local_addr().port())
        .unwrap_or(config.mqtt_port);
    #[cfg(not(feature = "embedded-broker"))]
    let mqtt_port = config.mqtt_port;
    let mqtt_host = config
        .mqtt_host
        .clone()
        .unwrap_or_else(|| "127.0.0.1".into());

    // The parts stop when `up` is asked to stop, or when one of them fails: the bot first, so
    // that it says goodbye to a server that is still there, then the rest (see `finish`).
    let mut stop = Stop {
        bot: CancellationToken::new(),
        rest: CancellationToken::new(),
        bot_task: None,
    };
    let mut tasks = tokio::task::JoinSet::new();

    // The XMPP server; wait until it serves before starting its clients.
    let (ready, started) = oneshot::channel();
    let server_config = ServerConfig {
        domain: DOMAIN.into(),
        data_dir: config.data_dir.clone(),
        cert: None,
        key: None,
        // The bot answers everyone: no per-connection byte rate for it.
        limits: ServerLimits {
            unthrottled: vec![BOT.into()],
            resume_timeout: config.resume_timeout,
            ..ServerLimits::default()
        },
        reload: config.reload.clone(),
        components: Default::default(),
    };
    let listeners = Listeners {
        starttls: xmpp_listener,
        direct_tls: Some(xmpp_tls_listener),
        http: Some(http_listener),
    };
    let server_stop = stop.rest.clone();
    tasks.spawn(async move {
        server::run(server_config, listeners, server_stop, Some(ready))
            .await
            .map_err(UpError::from)
    });
    let started = match started.await {
        Ok(started) => started,
        // The server ended before it was ready: its error is in the task.
        Err(_) => return finish(tasks, stop, Err(None)).await,
    };

    if config.simulate {
        let simulator = simulate::SimulateConfig {
            broker: Broker::anonymous(
                mqtt_host.clone(),
                mqtt_port,
                mqtt_client::client_id(simulate::CLIENT_ID_PREFIX),
            ),
            scenario: simulate::Scenario::Simple {
                topic: config.topic.clone(),
                interval: Duration::from_secs(2),
            },
            retain: true,
            qos: rumqttc::QoS::AtLeastOnce,
            count: None,
            seed: None,
        };
        let sim_stop = stop.rest.clone();
        tasks.spawn(async move {
            simulate::run(simulator, sim_stop)
                .await
                .map(|_| ())
                .map_err(UpError::from)
        });
    }

    let sensors = match &config.sensors_file {
        Some(file) => Sensors::from_flags(&[], Some(file), &[], &SensorDefaults::default()),
        None => Sensors::new(vec![Sensor {
            name: config.topic.clone(),
            filter: config.topic.clone(),
            format: PayloadFormat::default(),
            unit: "°C".into(),
            precision: Some(1),
        }]),
    }?;
    let bot_jid = Jid::new(&bot.jid).map_err(|source| UpError::Jid {
        jid: bot.jid.clone(),
        source,
    })?;
    let bridge_config = bridge::BridgeConfig {
        mqtt: Broker::anonymous(
            mqtt_host.clone(),
            mqtt_port,
            mqtt_client::client_id(BOT_CLIENT_ID_PREFIX),
        ),
        xmpp: bridge::xmpp::XmppConfig {
            jid: bot_jid.clone(),
            connector: Connector::new(
                dns_config(DOMAIN, Some(&format!("127.0.0.1:{xmpp_port}")))?,
                crate::tls::client_config(Some(&started.cert_path))?,
                bot_jid.to_bare(),
                bot.password.clone(),
            ),
            presence_interval: Duration::from_secs(60),
            rooms: config.room.iter().cloned().collect(),
            room_timings: bridge::room::RoomTimings::default(),
            charts: true,
        },
        sensors,
        bot: bot_settings(&config.bot),
        limits: bridge::cache::CacheLimits::default(),
        // History and alerts survive a restart, like the accounts in the same directory.
        state_db: Some(config.data_dir.join("bot-state.sqlite")),
    };
    let bridge_stop = stop.bot.clone();
    let bridge_task = tasks.spawn(async move {
        bridge::run(bridge_config, bridge_stop)
            .await
            .map_err(UpError::from)
    });
    stop.bot_task = Some(bridge_task.id());

    let ports = Ports {
        xmpp: xmpp_port,
        xmpp_tls: xmpp_tls_port,
        mqtt: mqtt_port,
    };
    print_banner(&config, &started, &you, ports, &mqtt_host);

    let outcome = tokio::select! {
        _ = shutdown.cancelled() => Ok(()),
        finished = tasks.join_next() => match finished {
            Some(Ok(Err(error))) => Err(Some(error)),
            _ => Err(None),
        },
    };
    let result = finish(tasks, stop, outcome).await;
    #[cfg(feature = "embedded-broker")]
    if let Some(broker) = broker {
        broker.shutdown().await;
    }
    result
}

/// The bot's settings under `up`: every account of [`DOMAIN`] was created by the operator (`up`
/// itself or `mqtt2xmpp user add`), so the bot answers all of them, alerts and stats included.
fn bot_settings(settings: &bot::BotSettings) -> bot::BotSettings {
    let mut settings = settings.clone();
    if !settings.allow_domains.iter().any(|domain| domain == DOMAIN) {
        settings.allow_domains.push(DOMAIN.into());
    }
    settings
}

/// How `up`'s parts are told to stop.
struct Stop {
    /// The bot's.
    bot: CancellationToken,
    /// The server's, the simulator's.
    rest: CancellationToken,
    /// The bot's task, once it runs.
    bot_task: Option<tokio::task::Id>,
}

/// Stops every task, the bot first, and returns the first error (`Err(None)`: a task ended
/// without one). The bot goes first so that it leaves the server while the server still
/// runs: otherwise it sees its connection cut and logs a failed reconnection on the way out.
async fn finish(
    mut tasks: tokio::task::JoinSet<Result<(), UpError>>,
    stop: Stop,
    outcome: Result<(), Option<UpError>>,
) -> Result<(), UpError> {
    let mut first_error = match outcome {
        Ok(()) => None,
        Err(error) => error,
    };
    let drain = async {
        stop.bot.cancel();
        if stop.bot_task.is_none() {
            stop.rest.cancel();
        }
        // The rest stops once the bot has (its own goodbye is bounded: a few seconds at most).
        while let Some(finished) = tasks.join_next_with_id().await {
            let id = match &finished {
                Ok((id, _)) => *id,
                Err(error) => error.id(),
            };
            if let Ok((_, Err(error))) = finished {
                first_error.get_or_insert(error);
            }
            if Some(id) == stop.bot_task {
                stop.rest.cancel();
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(5), drain)
        .await
        .is_err()
    {
        stop.rest.cancel();
        tracing::warn!("some parts did not stop within 5 s");
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// The ports `up` listens on, as bound (a flag's 0 becomes the port the kernel chose).
#[derive(Debug, Clone, Copy)]
struct Ports {
    xmpp: u16,
    xmpp_tls: u16,
    mqtt: u16,
}

/// How to join the bot's room from profanity, if there is one.
fn room_lines(room: Option<&crate::bridge::room::RoomJoin>) -> String {
    match room {
        Some(join) => format!(
            "\n\nTalk to the bot in its room, from profanity:\
             \n  /join {room}\
             \n  {nick}: temperature?",
            room = join.room,
            nick = join.nick
        ),
        None => String::new(),
    }
}

fn print_banner(
    config: &UpConfig,
    started: &server::Started,
    you: &Account,
    ports: Ports,
    mqtt_host: &str,
) {
    let Ports {
        xmpp: xmpp_port,
        xmpp_tls: xmpp_tls_port,
        mqtt: mqtt_port,
    } = ports;
    let data = config.data_dir.display();
    let cert = started.cert_path.display();
    let broker = match &config.mqtt_host {
        Some(_) => format!("{mqtt_host}:{mqtt_port}"),
        None => format!("127.0.0.1:{mqtt_port} (embedded)"),
    };
    let sensor = match (&config.sensors_file, config.simulate) {
        (Some(file), true) => format!(
            "the bot answers about the sensors in {}; a simulated sensor publishes to {} every 2 s",
            file.display(),
            config.topic
        ),
        (Some(file), false) => {
            format!("the bot answers about the sensors in {}", file.display())
        }
        (None, true) => format!("a simulated sensor publishes to {} every 2 s", config.topic),
        (None, false) => format!("the bot listens on {}", config.topic),
    };
    let password_line = if you.created {
        format!(
            "password {} (shown once; kept in {})",
            you.password.expose(),
            you.password_file.display()
        )
    } else {
        format!("password in {}", you.password_file.display())
    };
    println!(
        "mqtt2xmpp is up.\n\
         \n  XMPP server  {DOMAIN} on 127.0.0.1:{xmpp_port} (STARTTLS) and 127.0.0.1:{xmpp_tls_port} (direct TLS)\
         \n               file uploads at upload.{DOMAIN}, served on https://127.0.0.1:{http_port}\
         \n               certificate {cert}\
         \n               SHA-256 {fingerprint}\
         \n  MQTT broker  {broker}; {sensor}\
         \n  Bot          {BOT}@{DOMAIN}, answers every account of {DOMAIN}; add one with\
         \n               mqtt2xmpp user add NAME@{DOMAIN} --data-dir {data}\
         \n  You          {jid}, {password_line}\
         \n  Data         {data}\
         \n\nAsk from a shell:\
         \n  mqtt2xmpp ask --jid {jid} --password-file {pwfile} \\\
         \n      --xmpp-server 127.0.0.1:{xmpp_port} --xmpp-ca {cert} --to {BOT}@{DOMAIN} \"temperature?\"\
         \n\nAsk from profanity:\
         \n  SSL_CERT_FILE={cert} profanity\
         \n  /connect {jid} server 127.0.0.1 port {xmpp_port}\
         \n  /msg {BOT}@{DOMAIN} temperature?{room}\
         \n\nSend \"help\" to the bot for its commands (list, get, stats, alert, stale).\
         \n\nCtrl-C stops everything.",
        fingerprint = started.fingerprint,
        http_port = started.http_address.map_or(0, |a| a.port()),
        jid = you.jid,
        pwfile = you.password_file.display(),
        room = room_lines(config.room.as_ref()),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_are_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure_account(dir.path(), "you").unwrap();
        assert!(first.created);
        assert_eq!(first.jid, "you@localhost");
        assert_eq!(first.password.expose().len(), 20);
        let mode = std::fs::metadata(&first.password_file)
            .unwrap()
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        let again = ensure_account(dir.path(), "you").unwrap();
        assert!(!again.created);
        assert_eq!(again.password.expose(), first.password.expose());
    }

    #[test]
    fn a_lost_database_is_rebuilt_from_the_password_files() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure_account(dir.path(), "you").unwrap();
        std::fs::remove_file(server::database_path(dir.path())).unwrap();
        let again = ensure_account(dir.path(), "you").unwrap();
        assert!(!again.created);
        assert_eq!(again.password.expose(), first.password.expose());
        assert_eq!(
            admin::list(&server::database_path(dir.path())).unwrap(),
            ["you"]
        );
    }
}
