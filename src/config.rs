//! From command-line arguments to validated runtime configuration, for every subcommand: this is
//! the one module that knows both the flags ([`crate::cli`]) and the settings each component
//! takes (`BridgeConfig`, `ServerConfig`, `SimulateConfig`, `UpConfig`). Every mistake a user can
//! make in flags becomes a [`ConfigError`] with a sentence that says how to fix it, before
//! anything connects anywhere; and the components' own errors, which describe problems without
//! knowing the command line, get the flag that fixes them here ([`bridge_error`],
//! [`simulate_error`]).

use std::str::FromStr;
use std::time::Duration;

use rumqttc::QoS;
use thiserror::Error;
use tokio_xmpp::jid::{self, BareJid, Jid};

use crate::ask::AskError;
use crate::bridge::room::RoomJoin;
use crate::bridge::sensors::{SensorDefaults, SensorError, Sensors};
use crate::bridge::{alerts, bot, cache, BridgeConfig, BridgeError};
use crate::cli::{
    BotArgs, BridgeArgs, ComponentArgs, MqttArgs, SensorArgs, ServerArgs, SimulateArgs, UpArgs,
    XmppArgs,
};
use crate::mqtt_client::{self, Broker, MqttError};
use crate::secret::{self, SecretError};
use crate::server::{self, ServerConfig};
use crate::simulate::{self, Building, Scenario, SimulateConfig, SimulateError};
use crate::tls::{self, TlsConfigError};
use crate::up::UpConfig;
use crate::xmpp_connect::{self, AddressError, Connector, Fatal};

/// A flag combination that cannot work.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// `--jid` is not a JID.
    #[error("--jid {jid:?}: {source}")]
    Jid {
        /// What was given.
        jid: String,
        /// Why it is not a JID.
        #[source]
        source: jid::Error,
    },
    /// `--jid` is a domain, not an account.
    #[error("--jid {0:?}: an account address needs a user part, e.g. bot@example.org")]
    JidWithoutUser(String),
    /// `--xmpp-server` is malformed.
    #[error("--xmpp-server: {0}")]
    XmppServer(#[source] AddressError),
    /// `--json-pointer` is not an RFC 6901 pointer.
    #[error("--json-pointer {0:?}: a JSON pointer starts with '/', e.g. /temperature")]
    JsonPointer(String),
    /// A sensor from `--sensor`, `--sensors-file` or `--topic` cannot be used.
    #[error(transparent)]
    Sensor(#[from] SensorError),
    /// An `--allow` or `--allow-domain` value is not a JID.
    #[error("{flag} {value:?}: {source}")]
    Allow {
        /// Which flag.
        flag: &'static str,
        /// What was given.
        value: String,
        /// Why it is not a JID.
        #[source]
        source: jid::Error,
    },
    /// An `--allow` value is a domain.
    #[error(
        "--allow {0:?}: a contact needs a user part, e.g. alice@example.org; for a whole domain \
         use --allow-domain"
    )]
    AllowWithoutUser(String),
    /// An `--allow-domain` value is not a bare domain.
    #[error("--allow-domain {0:?}: a domain, e.g. example.org, without user or resource")]
    AllowDomain(String),
    /// A password could not be read.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// A TLS setting could not be applied.
    #[error(transparent)]
    Tls(#[from] TlsConfigError),
    /// A `--component` NAME cannot be a component's domain.
    #[error("--component {name:?}: {reason}")]
    Component {
        /// The NAME given.
        name: String,
        /// Why it cannot be used, and what to give instead.
        reason: String,
    },
    /// A `--room` or `--room-allow` value is not a room address.
    #[error("{flag} {value:?}: {source}")]
    Room {
        /// Which flag (or the sensors file and line).
        flag: String,
        /// What was given.
        value: String,
        /// Why it cannot be used.
        #[source]
        source: crate::bridge::room::RoomJoinError,
    },
    /// A `--room-announce-stale` room the bot is not told to join.
    #[error("--room-announce-stale {0}: the bot is not in that room; give it with --room too")]
    AnnounceOutsideRooms(String),
    /// A `--component` secret file cannot be read.
    #[error("--component {name}: {source}")]
    ComponentSecret {
        /// The NAME given.
        name: String,
        /// Why.
        #[source]
        source: SecretError,
    },
}

/// The XMPP login of the bridge or of `ask`.
pub fn xmpp_login(args: &XmppArgs) -> Result<(Jid, Connector), ConfigError> {
    let jid = Jid::from_str(&args.jid).map_err(|source| ConfigError::Jid {
        jid: args.jid.clone(),
        source,
    })?;
    if jid.node().is_none() {
        return Err(ConfigError::JidWithoutUser(args.jid.clone()));
    }
    let password = secret::from_file_or_env(
        args.password_file.as_deref(),
        "--password-file",
        "MQTT2XMPP_PASSWORD",
    )?;
    let dns = xmpp_connect::dns_config(jid.domain().as_str(), args.xmpp_server.as_deref())
        .map_err(ConfigError::XmppServer)?;
    let tls = tls::client_config(args.xmpp_ca.as_deref())?;
    let connector = Connector::new(dns, tls, jid.to_bare(), password);
    Ok((jid, connector))
}

/// The broker from the MQTT flags, shared by `bridge` and `simulate` so both read passwords and
/// CA files the same way, now, so mistakes show up before anything connects. The client
/// identifier is `--mqtt-client-id`, else `prefix` plus random digits.
pub fn broker(args: &MqttArgs, prefix: &str) -> Result<Broker, ConfigError> {
    let use_tls = args.mqtt_tls || args.mqtt_ca.is_some();
    let password = match (&args.mqtt_username, &args.mqtt_password_file) {
        (_, Some(file)) => Some(secret::read_file(file)?),
        (Some(_), None) => std::env::var("MQTT2XMPP_MQTT_PASSWORD")
            .ok()
            .map(secret::Secret::new),
        (None, None) => None,
    };
    let tls = if use_tls {
        Some(tls::client_config(args.mqtt_ca.as_deref())?)
    } else {
        None
    };
    Ok(Broker {
        host: args.mqtt_host.clone(),
        port: args.mqtt_port.unwrap_or(if use_tls { 8883 } else { 1883 }),
        username: args.mqtt_username.clone(),
        password,
        client_id: args
            .mqtt_client_id
            .clone()
            .unwrap_or_else(|| mqtt_client::client_id(prefix)),
        tls,
    })
}

/// The prefix of the bot's MQTT client identifiers.
const BOT_CLIENT_ID_PREFIX: &str = "mqtt2xmpp";

/// The sensors from the sensor flags: `--sensor`, then `--sensors-file`, then `--topic` (the
/// first is the default sensor), each falling back to `--json-pointer`, `--unit` and
/// `--precision` for what it does not set; `sensors/temperature` if none is given.
pub fn sensors(args: &SensorArgs) -> Result<Sensors, ConfigError> {
    if let Some(pointer) = &args.json_pointer {
        if !pointer.is_empty() && !pointer.starts_with('/') {
            return Err(ConfigError::JsonPointer(pointer.clone()));
        }
    }
    let defaults = SensorDefaults {
        json_pointer: args.json_pointer.clone(),
        unit: args.unit.clone(),
        precision: args.precision.map(usize::from),
    };
    Ok(Sensors::from_flags(
        &args.sensors,
        args.sensors_file.as_deref(),
        &args.topic,
        &defaults,
    )?)
}

/// Most alerts one contact may hold.
const ALERTS_PER_CONTACT: usize = 20;

/// Most alerts the bot holds in all.
const ALERTS_TOTAL: usize = 1000;

/// The bridge's configuration from its flags.
pub fn bridge(args: &BridgeArgs) -> Result<BridgeConfig, ConfigError> {
    let sensors = sensors(&args.sensor)?;
    let mqtt = broker(&args.mqtt, BOT_CLIENT_ID_PREFIX)?;
    let (jid, connector) = xmpp_login(&args.xmpp)?;
    let mut bot = bot_settings(&args.bot, args.sensor.stale_after)?;
    let file_rooms = match &args.sensor.sensors_file {
        Some(path) => crate::bridge::sensors::file_rooms(path)?,
        None => Vec::new(),
    };
    let rooms = rooms(&args.rooms, &file_rooms, &jid)?;
    bot.room_allow = rooms.allow;
    bot.room_announce_stale = rooms.announce_stale;
    bot.command_session_lifetime = args.bot.command_session_lifetime;
    Ok(BridgeConfig {
        mqtt,
        xmpp: crate::bridge::xmpp::XmppConfig {
            jid,
            connector,
            presence_interval: args.bot.presence_interval,
            rooms: rooms.joins,
            room_timings: crate::bridge::room::RoomTimings::with_ping(
                args.rooms.room_ping_interval,
            ),
            charts: !args.bot.no_charts,
        },
        sensors,
        bot,
        limits: cache::CacheLimits {
            max_topics: usize::try_from(args.bot.max_topics).unwrap_or(usize::MAX),
            history: usize::try_from(args.bot.history).unwrap_or(usize::MAX),
        },
        state_db: args.bot.state_db.clone(),
    })
}

/// The rooms of the flags and the sensors file, checked.
#[derive(Debug)]
struct RoomSettings {
    /// Where to join: `--room`, then the file's `[[room]]` tables, one per room.
    joins: Vec<RoomJoin>,
    /// `--room-allow`: bare room JIDs in lower case.
    allow: Vec<String>,
    /// `--room-announce-stale` and the file's `announce_stale = true`: bare room JIDs as
    /// `--room` or the file gives them.
    announce_stale: Vec<String>,
}

/// `--room` and the sensors file's `[[room]]` tables (the nick defaults to the local part of
/// the bot's JID), `--room-allow` and `--room-announce-stale`.
fn rooms(
    args: &crate::cli::RoomArgs,
    file: &[crate::bridge::sensors::FileRoom],
    jid: &Jid,
) -> Result<RoomSettings, ConfigError> {
    let default_nick = jid.node().map_or("bot", |node| node.as_str());
    let parse = |flag: &str, value: &str| {
        RoomJoin::parse(value, default_nick).map_err(|source| ConfigError::Room {
            flag: flag.to_string(),
            value: value.to_string(),
            source,
        })
    };
    let mut settings = RoomSettings {
        joins: Vec::new(),
        allow: Vec::new(),
        announce_stale: Vec::new(),
    };
    let given = args
        .room
        .iter()
        .map(|value| ("--room".to_string(), value.as_str(), false))
        .chain(
            file.iter()
                .map(|room| (room.origin.clone(), room.jid.as_str(), room.announce_stale)),
        );
    for (flag, value, announce) in given {
        let join = parse(&flag, value)?;
        let room = join.room.to_string();
        if announce && !settings.announce_stale.contains(&room) {
            settings.announce_stale.push(room);
        }
        // One presence per room: a second --room for the same room would only fight the first.
        if !settings.joins.iter().any(|j| j.room == join.room) {
            settings.joins.push(join);
        }
    }
    for value in &args.room_allow {
        settings
            .allow
            .push(parse("--room-allow", value)?.room.as_str().to_lowercase());
    }
    for value in &args.room_announce_stale {
        let wanted = parse("--room-announce-stale", value)?.room;
        // The room as --room gives it, so that announcements reach the room the bot is in.
        let Some(join) = settings
            .joins
            .iter()
            .find(|j| j.room.as_str().eq_ignore_ascii_case(wanted.as_str()))
        else {
            return Err(ConfigError::AnnounceOutsideRooms(value.clone()));
        };
        let room = join.room.to_string();
        if !settings.announce_stale.contains(&room) {
            settings.announce_stale.push(room);
        }
    }
    Ok(settings)
}

/// The bot's behaviour from the bridge's flags.
fn bot_settings(args: &BotArgs, stale_after: Duration) -> Result<bot::BotSettings, ConfigError> {
    bot_policy(BotPolicy {
        allow: &args.allow,
        allow_domain: &args.allow_domain,
        replies_per_minute: args.rate.replies_per_minute,
        reply_burst: args.rate.reply_burst,
        alert_interval: args.alert_interval,
        stale_after,
    })
}

/// Who may use the bot and how it paces itself, as plain values: what `bridge` and `up` give
/// through different flags.
struct BotPolicy<'a> {
    /// `--allow` values, unchecked.
    allow: &'a [String],
    /// `--allow-domain` values, unchecked.
    allow_domain: &'a [String],
    /// Replies per minute per contact.
    replies_per_minute: u32,
    /// Replies per contact in a quick row.
    reply_burst: u32,
    /// Least time between two messages of one alert.
    alert_interval: Duration,
    /// When a reading is stale.
    stale_after: Duration,
}

/// The bot's settings; the allow lists are checked and normalised here.
fn bot_policy(policy: BotPolicy<'_>) -> Result<bot::BotSettings, ConfigError> {
    let mut allow = Vec::new();
    for jid in policy.allow {
        let bare = BareJid::from_str(jid.trim()).map_err(|source| ConfigError::Allow {
            flag: "--allow",
            value: jid.clone(),
            source,
        })?;
        if bare.node().is_none() {
            return Err(ConfigError::AllowWithoutUser(jid.clone()));
        }
        allow.push(bare.to_string());
    }
    let mut allow_domains = Vec::new();
    for domain in policy.allow_domain {
        let parsed = BareJid::from_str(domain.trim())
            .ok()
            .filter(|j| j.node().is_none());
        let Some(parsed) = parsed else {
            return Err(ConfigError::AllowDomain(domain.clone()));
        };
        allow_domains.push(parsed.to_string());
    }
    let stale_after = policy.stale_after;
    Ok(bot::BotSettings {
        stale_after,
        alerts: alerts::AlertSettings {
            min_interval: policy.alert_interval,
            stale_after,
            per_contact: ALERTS_PER_CONTACT,
            total: ALERTS_TOTAL,
        },
        replies_per_minute: policy.replies_per_minute,
        reply_burst: policy.reply_burst,
        allow,
        allow_domains,
        room_allow: Vec::new(),
        room_announce_stale: Vec::new(),
        command_session_lifetime: crate::bridge::adhoc::sessions::LIFETIME,
    })
}

/// The bundled server's configuration from its flags (the listening addresses stay with the
/// caller, which binds them, and so does the reload trigger, which is signal wiring).
pub fn server(args: &ServerArgs) -> ServerConfig {
    ServerConfig {
        domain: args.domain.clone(),
        data_dir: args.data.data_dir.clone(),
        cert: args.cert.clone(),
        key: args.key.clone(),
        limits: server::limits::ServerLimits {
            max_stanza_bytes: args.max_stanza_bytes,
            max_preauth_bytes: args.max_preauth_bytes,
            max_connections: args.max_connections,
            max_unauthenticated_per_address: args.max_unauthenticated_per_address as usize,
            bytes_per_second: args.bytes_per_second,
            burst_bytes: args.burst_bytes,
            unthrottled: args
                .unthrottled
                .iter()
                // `bot` or `bot@DOMAIN`: the server serves one domain.
                .map(|user| user.split('@').next().unwrap_or_default().to_lowercase())
                .collect(),
            auth_timeout: args.auth_timeout,
            idle_ping_after: args.idle_ping,
            resume_timeout: args.resume_timeout,
            max_unacked: args.max_unacked as usize,
            max_vcard_bytes: args.max_vcard_bytes as usize,
            pep: server::limits::PepLimits {
                max_nodes: args.pep.pep_max_nodes as usize,
                max_items: args.pep.pep_max_items as usize,
                max_item_bytes: args.pep.pep_max_item_bytes as usize,
                max_account_bytes: args.pep.pep_max_account_bytes,
                ..Default::default()
            },
            max_blocklist: args.max_blocklist as usize,
            archive: server::limits::ArchiveLimits {
                enabled: !args.archive.no_archive,
                max_age: Some(args.archive.archive_max_age).filter(|age| !age.is_zero()),
                max_per_user: args.archive.archive_max_messages as usize,
                ..Default::default()
            },
            muc: server::limits::MucLimits {
                enabled: !args.muc.no_muc,
                domain: args.muc.muc_domain.clone(),
                lock_new_rooms: args.muc.muc_lock_new_rooms,
                max_rooms_per_user: args.muc.muc_max_rooms_per_user as usize,
                max_occupants: args.muc.muc_max_occupants as usize,
                max_history: args.muc.muc_max_history as usize,
                messages_per_minute: args.muc.muc_messages_per_minute,
                message_burst: args.muc.muc_message_burst,
                ..Default::default()
            },
            upload: server::upload::UploadLimits {
                max_file_size: args.upload.upload_max_size,
                quota: args.upload.upload_quota,
                file_ttl: match args.upload.upload_expire_seconds {
                    Some(seconds) => Duration::from_secs(seconds),
                    None => Duration::from_secs(u64::from(args.upload.upload_expire_days) * 86_400),
                },
                public_url: args.upload.http_external_url.clone(),
                max_connections: args.upload.http_max_connections as usize,
                ..Default::default()
            },
            contacts: contacts(&args.contact_addresses),
            ..Default::default()
        },
        reload: None,
        // Read with [`components`], which can fail.
        components: Default::default(),
    }
}

/// `--contact-address` values grouped by kind, in the order first given (XEP-0157).
fn contacts(addresses: &[(String, String)]) -> Vec<(String, Vec<String>)> {
    let mut grouped: Vec<(String, Vec<String>)> = Vec::new();
    for (kind, uri) in addresses {
        match grouped.iter_mut().find(|(k, _)| k == kind) {
            Some((_, uris)) => uris.push(uri.clone()),
            None => grouped.push((kind.clone(), vec![uri.clone()])),
        }
    }
    grouped
}

/// The external components (XEP-0114) of `mqtt2xmpp server` for `domain`: each NAME a domain
/// of its own (not `domain`, no user or resource, no duplicates), each secret read from its
/// file now, so mistakes show up before the server starts.
pub fn components(
    args: &ComponentArgs,
    domain: &str,
) -> Result<server::component::ComponentConfig, ConfigError> {
    let server_domain = BareJid::new(domain).ok();
    let mut components: Vec<server::component::ComponentSpec> = Vec::new();
    for arg in &args.components {
        let refuse = |reason: &str| ConfigError::Component {
            name: arg.name.clone(),
            reason: reason.into(),
        };
        let name = BareJid::new(&arg.name).map_err(|_| {
            refuse("not a domain; give the component's domain, e.g. gateway.example.org")
        })?;
        if name.node().is_some() {
            return Err(refuse(
                "a component serves a whole domain: give the domain alone, e.g. gateway.example.org",
            ));
        }
        if Some(&name) == server_domain.as_ref() {
            return Err(refuse(
                "this is the server's own --domain; a component needs a domain of its own, e.g. \
                 gateway.DOMAIN",
            ));
        }
        if components.iter().any(|c| c.domain == name) {
            return Err(refuse("given twice; each component has one secret"));
        }
        let secret =
            secret::read_file(&arg.secret_file).map_err(|source| ConfigError::ComponentSecret {
                name: arg.name.clone(),
                source,
            })?;
        components.push(server::component::ComponentSpec {
            domain: name,
            secret,
        });
    }
    Ok(server::component::ComponentConfig {
        listen: args.listen_component,
        components,
    })
}

/// The simulator's configuration from its flags: reads the password file and the CA file, so
/// mistakes show up before anything connects.
pub fn simulate(args: &SimulateArgs) -> Result<SimulateConfig, ConfigError> {
    let scenario = match &args.building {
        Some(id) => Scenario::Building(Building {
            id: id.clone(),
            floors: args.floors,
            rooms_per_wing: args.rooms_per_wing,
            rate: args.rate,
        }),
        None => Scenario::Simple {
            topic: args.topic.clone(),
            interval: args.interval,
        },
    };
    Ok(SimulateConfig {
        // The simulator's own client-id prefix, to tell it from the bridge in broker logs.
        broker: broker(&args.mqtt, simulate::CLIENT_ID_PREFIX)?,
        scenario,
        retain: args.retain,
        qos: if args.qos == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        },
        count: args.count,
        seed: args.seed,
    })
}

/// `up`'s configuration from its flags. Its bot answers every account of its own server (see
/// [`crate::up`]); `--allow` and `--allow-domain` add contacts beyond those.
pub fn up(args: &UpArgs) -> Result<UpConfig, ConfigError> {
    let bot = bot_policy(BotPolicy {
        allow: &args.allow,
        allow_domain: &args.allow_domain,
        replies_per_minute: args.rate.replies_per_minute,
        reply_burst: args.rate.reply_burst,
        alert_interval: Duration::from_secs(60),
        stale_after: Duration::from_secs(600),
    })?;
    let room = if args.no_room {
        None
    } else {
        Some(
            RoomJoin::parse(&args.room, crate::up::BOT).map_err(|source| ConfigError::Room {
                flag: "--room".into(),
                value: args.room.clone(),
                source,
            })?,
        )
    };
    Ok(UpConfig {
        room,
        data_dir: args.data.data_dir.clone(),
        xmpp_port: args.xmpp_port,
        xmpp_tls_port: args.xmpp_tls_port,
        http_port: args.http_port,
        mqtt_port: args.mqtt_port,
        mqtt_host: args.mqtt_host.clone(),
        topic: args.topic.clone(),
        user: args.user.clone(),
        simulate: !args.no_simulator,
        sensors_file: args.sensors_file.clone(),
        resume_timeout: args.resume_timeout,
        bot,
        reload: None,
    })
}

/// A component's error with what to change on the command line, for the commands whose flags
/// are known here. Displays as the error followed by the hint; the error stays its source.
#[derive(Debug, Error)]
#[error("{error}{hint}")]
pub struct WithFlagHint<E: std::error::Error + 'static> {
    /// The component's error.
    #[source]
    pub error: E,
    /// Text appended to the error: empty, or the flags that fix it.
    pub hint: &'static str,
}

/// The MQTT flags that fix a fatal MQTT problem of `bridge` or `simulate`.
fn mqtt_hint(error: &MqttError) -> &'static str {
    match error {
        MqttError::LoginRefused { .. } => ": check --mqtt-username and --mqtt-password-file",
        MqttError::UntrustedCertificate { .. } => "; give its CA with --mqtt-ca FILE",
    }
}

/// The XMPP flag that fixes a fatal XMPP problem of `bridge` or `ask`.
fn xmpp_hint(error: &Fatal) -> &'static str {
    match error {
        Fatal::UntrustedCertificate { .. } => {
            "; if the server uses a self-signed certificate, give it with --xmpp-ca FILE"
        }
        _ => "",
    }
}

/// `ask`'s error with the flag that fixes it.
pub fn ask_error(error: AskError) -> WithFlagHint<AskError> {
    let hint = match &error {
        AskError::Login(fatal) => xmpp_hint(fatal),
        _ => "",
    };
    WithFlagHint { error, hint }
}

/// `bridge`'s error with the flag that fixes it.
pub fn bridge_error(error: BridgeError) -> WithFlagHint<BridgeError> {
    let hint = match &error {
        BridgeError::Mqtt(mqtt) => mqtt_hint(mqtt),
        BridgeError::Xmpp(fatal) => xmpp_hint(fatal),
        BridgeError::State(_) => "; check --state-db",
        BridgeError::Task(_) => "",
    };
    WithFlagHint { error, hint }
}

/// `simulate`'s error with the flag that fixes it.
pub fn simulate_error(error: SimulateError) -> WithFlagHint<SimulateError> {
    let hint = match &error {
        SimulateError::Mqtt(mqtt) => mqtt_hint(mqtt),
        _ => "",
    };
    WithFlagHint { error, hint }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sensor_args(extra: &[&str]) -> SensorArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct Flags {
            #[command(flatten)]
            sensor: SensorArgs,
        }
        let argv = std::iter::once("mqtt2xmpp").chain(extra.iter().copied());
        match Flags::try_parse_from(argv) {
            Ok(flags) => flags.sensor,
            Err(error) => panic!("{extra:?}: {error}"),
        }
    }

    #[test]
    fn without_sensor_flags_the_bot_reads_the_documented_default() {
        let sensors = sensors(&sensor_args(&["--unit", "°C", "--precision", "1"])).unwrap();
        assert_eq!(sensors.len(), 1);
        let sensor = sensors.default_sensor();
        assert_eq!(sensor.filter, "sensors/temperature");
        assert_eq!((sensor.unit.as_str(), sensor.precision), ("°C", Some(1)));
    }

    #[test]
    fn sensor_flags_become_sensors_in_the_documented_order() {
        let sensors = sensors(&sensor_args(&[
            "--topic",
            "EDIFICIO_1/+/+/+/TEMP",
            "--sensor",
            "name=temp,topic=sensors/temperature,unit=°C",
            "--json-pointer",
            "/value",
        ]))
        .unwrap();
        let names: Vec<&str> = sensors.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["temp", "EDIFICIO_1/+/+/+/TEMP"]);
        let building = sensors.by_name("EDIFICIO_1/+/+/+/TEMP").unwrap();
        assert_eq!(building.format.json_pointer.as_deref(), Some("/value"));
    }

    #[test]
    fn bad_sensor_flags_are_refused_clearly() {
        let err = sensors(&sensor_args(&["--json-pointer", "value"])).unwrap_err();
        assert!(matches!(err, ConfigError::JsonPointer(_)), "{err}");
        let err = sensors(&sensor_args(&["--topic", "sensors/#/x"])).unwrap_err();
        assert!(
            err.to_string().starts_with("--topic \"sensors/#/x\""),
            "{err}"
        );
        let err = sensors(&sensor_args(&["--sensor", "name=t"])).unwrap_err();
        assert!(err.to_string().contains("topic is missing"), "{err}");
    }

    #[test]
    fn room_flags_default_the_nick_and_are_refused_clearly() {
        let jid = Jid::from_str("sensei@example.org/bridge").unwrap();
        let args = crate::cli::RoomArgs {
            room: vec![
                "lab@conference.example.org".into(),
                "class@conference.example.org/teacher".into(),
                "lab@conference.example.org/again".into(),
            ],
            room_allow: vec!["Class@Conference.example.org".into()],
            room_announce_stale: vec!["Lab@conference.example.org".into()],
            room_ping_interval: Duration::from_secs(60),
        };
        let file = [crate::bridge::sensors::FileRoom {
            jid: "hall@conference.example.org".into(),
            announce_stale: true,
            origin: "sensors.toml, line 9".into(),
        }];
        let settings = rooms(&args, &file, &jid).unwrap();
        let joins: Vec<String> = settings.joins.iter().map(ToString::to_string).collect();
        assert_eq!(
            joins,
            [
                "lab@conference.example.org/sensei",
                "class@conference.example.org/teacher",
                "hall@conference.example.org/sensei"
            ]
        );
        assert_eq!(settings.allow, ["class@conference.example.org"]);
        assert_eq!(
            settings.announce_stale,
            ["hall@conference.example.org", "lab@conference.example.org"]
        );
        let bad = crate::cli::RoomArgs {
            room: vec!["conference.example.org".into()],
            room_allow: Vec::new(),
            room_announce_stale: Vec::new(),
            room_ping_interval: Duration::from_secs(60),
        };
        let err = rooms(&bad, &[], &jid).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("--room \"conference.example.org\": a room address needs"),
            "{err}"
        );
        let file = [crate::bridge::sensors::FileRoom {
            jid: "conference.example.org".into(),
            announce_stale: false,
            origin: "sensors.toml, line 9".into(),
        }];
        let err = rooms(&args, &file, &jid).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("sensors.toml, line 9 \"conference.example.org\""),
            "{err}"
        );
        let elsewhere = crate::cli::RoomArgs {
            room: vec!["lab@conference.example.org".into()],
            room_allow: Vec::new(),
            room_announce_stale: vec!["hall@conference.example.org".into()],
            room_ping_interval: Duration::from_secs(60),
        };
        let err = rooms(&elsewhere, &[], &jid).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--room-announce-stale hall@conference.example.org: the bot is not in that room; \
             give it with --room too"
        );
    }

    #[test]
    fn jid_without_user_is_refused_clearly() {
        let args = XmppArgs {
            jid: "example.org".into(),
            password_file: None,
            xmpp_server: None,
            xmpp_ca: None,
        };
        let err = xmpp_login(&args).unwrap_err();
        assert!(err.to_string().contains("needs a user part"), "{err}");
    }

    fn parse_simulate(args: &[&str]) -> Result<SimulateArgs, clap::Error> {
        use clap::Parser;
        let cli =
            crate::cli::Cli::try_parse_from(["mqtt2xmpp", "simulate"].iter().chain(args).copied())?;
        match cli.command {
            crate::cli::Command::Simulate(args) => Ok(args),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn without_flags_it_feeds_the_bridge_s_default_topic_every_two_seconds() {
        let config = simulate(&parse_simulate(&[]).unwrap()).unwrap();
        assert_eq!(
            config.scenario,
            Scenario::Simple {
                topic: "sensors/temperature".into(),
                interval: Duration::from_secs(2),
            }
        );
        assert_eq!(config.qos, QoS::AtLeastOnce);
        assert_eq!(
            (config.retain, config.count, config.seed),
            (false, None, None)
        );
        assert_eq!(
            (config.broker.host.as_str(), config.broker.port),
            ("127.0.0.1", 1883)
        );
        assert!(config.broker.tls.is_none() && config.broker.password.is_none());
        assert!(config.broker.client_id.len() <= 23);
        assert!(config
            .broker
            .client_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric()));
    }

    #[test]
    fn building_flags_select_building_mode() {
        let args = parse_simulate(&[
            "--building",
            "EDIFICIO_1",
            "--floors",
            "5",
            "--rooms-per-wing",
            "2",
            "--rate",
            "0.5",
            "--count",
            "10",
            "--retain",
            "--qos",
            "0",
            "--seed",
            "9",
        ])
        .unwrap();
        let config = simulate(&args).unwrap();
        assert_eq!(
            config.scenario,
            Scenario::Building(Building {
                id: "EDIFICIO_1".into(),
                floors: 5,
                rooms_per_wing: 2,
                rate: 0.5,
            })
        );
        assert_eq!(config.qos, QoS::AtMostOnce);
        assert_eq!(
            (config.retain, config.count, config.seed),
            (true, Some(10), Some(9))
        );
        let Scenario::Building(b) = config.scenario else {
            unreachable!()
        };
        assert_eq!(b.sensors(), 5 * 4 * 2 * 4);
    }

    #[test]
    fn tls_and_password_flags_are_honoured() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let pw = pw.to_string_lossy().into_owned();
        let args = parse_simulate(&[
            "--mqtt-tls",
            "--mqtt-username",
            "u",
            "--mqtt-password-file",
            &pw,
        ]);
        let config = simulate(&args.unwrap()).unwrap();
        assert_eq!(config.broker.port, 8883);
        assert!(config.broker.tls.is_some());
        assert_eq!(
            config.broker.password.as_ref().map(secret::Secret::expose),
            Some("s3cret")
        );
        let missing = parse_simulate(&["--mqtt-password-file", "/nonexistent/pw"]).unwrap();
        let error = config_error(&missing);
        assert!(matches!(error, ConfigError::Secret(_)), "{error:?}");
        assert!(error.to_string().contains("/nonexistent/pw"), "{error}");
    }

    fn config_error(args: &SimulateArgs) -> ConfigError {
        match simulate(args) {
            Ok(_) => panic!("accepted"),
            Err(e) => e,
        }
    }

    #[test]
    fn the_simulator_s_client_ids_keep_their_own_prefix() {
        let config = simulate(&parse_simulate(&[]).unwrap()).unwrap();
        assert!(
            config
                .broker
                .client_id
                .starts_with(simulate::CLIENT_ID_PREFIX),
            "{}",
            config.broker.client_id
        );
        let named = simulate(&parse_simulate(&["--mqtt-client-id", "lab7"]).unwrap()).unwrap();
        assert_eq!(named.broker.client_id, "lab7");
    }

    #[test]
    fn the_rate_flag_and_the_generator_agree_on_the_range() {
        assert_eq!(crate::cli::MIN_RATE, simulate::MIN_RATE);
        assert_eq!(crate::cli::MAX_RATE, simulate::MAX_RATE);
    }

    fn parse_up(args: &[&str]) -> UpArgs {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from(["mqtt2xmpp", "up"].iter().chain(args).copied())
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        match cli.command {
            crate::cli::Command::Up(args) => args,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn up_puts_the_bot_in_a_room_unless_told_not_to() {
        let room = |args: &[&str]| up(&parse_up(args)).unwrap().room.map(|r| r.to_string());
        assert_eq!(
            room(&[]).as_deref(),
            Some("sensors@conference.localhost/bot")
        );
        assert_eq!(
            room(&["--room", "lab@conference.localhost/sensei"]).as_deref(),
            Some("lab@conference.localhost/sensei")
        );
        assert_eq!(room(&["--no-room"]), None);
        let err = up(&parse_up(&["--room", "conference.localhost"])).unwrap_err();
        assert!(err.to_string().starts_with("--room "), "{err}");
        let both = <crate::cli::Cli as clap::Parser>::try_parse_from([
            "mqtt2xmpp",
            "up",
            "--no-room",
            "--room",
            "lab@conference.localhost",
        ]);
        assert!(both.is_err());
    }

    #[test]
    fn up_checks_and_normalises_its_allow_lists() {
        let config = up(&parse_up(&[
            "--allow",
            " Alice@Example.org ",
            "--allow-domain",
            "example.net",
        ]))
        .unwrap();
        assert_eq!(config.bot.allow, ["alice@example.org"]);
        assert_eq!(config.bot.allow_domains, ["example.net"]);
        let err = up(&parse_up(&["--allow", "example.org"])).unwrap_err();
        assert!(err.to_string().contains("--allow-domain"), "{err}");
        let err = up(&parse_up(&["--allow-domain", "a@example.org"])).unwrap_err();
        assert!(matches!(err, ConfigError::AllowDomain(_)), "{err}");
    }

    #[test]
    fn component_errors_name_no_flag_and_get_the_flag_where_the_command_has_it() {
        let untrusted = || Fatal::UntrustedCertificate {
            reason: "UnknownIssuer".into(),
        };
        // The XMPP client's own text is fit for `up` too, which has no --xmpp-ca.
        assert!(!untrusted().to_string().contains("--"), "{}", untrusted());
        let bridge = bridge_error(BridgeError::Xmpp(untrusted())).to_string();
        assert!(bridge.ends_with("give it with --xmpp-ca FILE"), "{bridge}");
        let ask = ask_error(AskError::Login(untrusted())).to_string();
        assert!(ask.contains("--xmpp-ca"), "{ask}");
        let refused = Fatal::LoginRefused {
            jid: "bot@localhost".into(),
            condition: "not-authorized".into(),
        };
        let bridge = bridge_error(BridgeError::Xmpp(refused.clone())).to_string();
        assert_eq!(bridge, refused.to_string());
    }

    #[test]
    fn an_unusable_jid_keeps_its_cause() {
        let err = up(&parse_up(&["--allow", "@example.org"])).unwrap_err();
        let cause = std::error::Error::source(&err).expect("the JID error is the source");
        assert!(err.to_string().ends_with(&cause.to_string()), "{err}");
    }

    #[test]
    fn server_flags_become_limits_with_unthrottled_users_by_name() {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from([
            "mqtt2xmpp",
            "server",
            "--unthrottled",
            "Bot@localhost,relay",
            "--max-unauthenticated-per-address",
            "7",
            "--max-blocklist",
            "25",
        ])
        .unwrap();
        let crate::cli::Command::Server(args) = cli.command else {
            panic!("not server")
        };
        let config = server(&args);
        assert_eq!(config.limits.unthrottled, ["bot", "relay"]);
        assert_eq!(config.limits.max_unauthenticated_per_address, 7);
        assert_eq!(config.limits.max_blocklist, 25);
        assert_eq!(config.domain, "localhost");
    }

    /// `mqtt2xmpp server` with these flags.
    fn parse_server(flags: &[&str]) -> crate::cli::ServerArgs {
        use clap::Parser;
        let cli =
            crate::cli::Cli::try_parse_from(["mqtt2xmpp", "server"].iter().chain(flags).copied())
                .unwrap();
        let crate::cli::Command::Server(args) = cli.command else {
            panic!("not server")
        };
        args
    }

    #[test]
    fn components_are_domains_of_their_own_with_secrets_read_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("gw.secret");
        std::fs::write(&secret, "s3cret\n").unwrap();
        let flag = |name: &str| format!("{name}={}", secret.display());
        // None: no listener.
        let none = components(&parse_server(&[]).components, "localhost").unwrap();
        assert!(none.components.is_empty());
        assert_eq!(none.listen.to_string(), "127.0.0.1:5347");
        let args = parse_server(&[
            "--component",
            &flag("Gateway.Localhost"),
            "--component",
            &flag("rooms.localhost"),
            "--listen-component",
            "127.0.0.1:15347",
        ]);
        let config = components(&args.components, "localhost").unwrap();
        let domains: Vec<&str> = config
            .components
            .iter()
            .map(|c| c.domain.as_str())
            .collect();
        assert_eq!(domains, ["gateway.localhost", "rooms.localhost"]);
        assert_eq!(config.components[0].secret.expose(), "s3cret");
        assert_eq!(config.listen.to_string(), "127.0.0.1:15347");
        // The secret is never printed.
        assert!(!format!("{config:?}").contains("s3cret"));
        for (name, says) in [
            ("localhost", "the server's own --domain"),
            ("bot@gateway.localhost", "the domain alone"),
            ("gateway.localhost/r", "not a domain"),
            ("a b", "not a domain"),
        ] {
            let args = parse_server(&["--component", &flag(name)]);
            let error = components(&args.components, "localhost").unwrap_err();
            assert!(error.to_string().contains(says), "{name}: {error}");
        }
        let twice = parse_server(&[
            "--component",
            &flag("gw.localhost"),
            "--component",
            &flag("GW.localhost"),
        ]);
        let error = components(&twice.components, "localhost").unwrap_err();
        assert!(error.to_string().contains("given twice"), "{error}");
        let missing = parse_server(&["--component", "gw.localhost=/nonexistent/secret"]);
        let error = components(&missing.components, "localhost").unwrap_err();
        assert!(error.to_string().contains("/nonexistent/secret"), "{error}");
        // The form is checked when the flags are parsed.
        use clap::Parser;
        for bad in ["gw.localhost", "=file", "gw.localhost="] {
            assert!(
                crate::cli::Cli::try_parse_from(["mqtt2xmpp", "server", "--component", bad])
                    .is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn flag_hints_are_added_where_the_flags_exist() {
        let refused = MqttError::LoginRefused {
            broker: "h:1".into(),
            user: Some("u".into()),
            code: rumqttc::ConnectReturnCode::NotAuthorized,
        };
        assert_eq!(
            simulate_error(SimulateError::Mqtt(refused)).to_string(),
            "the MQTT broker at h:1 refused the login as u (NotAuthorized): check --mqtt-username \
             and --mqtt-password-file"
        );
        let untrusted = MqttError::UntrustedCertificate {
            broker: "h:1".into(),
            reason: "UnknownIssuer".into(),
        };
        assert!(bridge_error(BridgeError::Mqtt(untrusted))
            .to_string()
            .ends_with("(UnknownIssuer); give its CA with --mqtt-ca FILE"));
        let other = SimulateError::EventLoopGone;
        assert_eq!(
            simulate_error(other).to_string(),
            "the MQTT event loop stopped unexpectedly"
        );
    }

    #[test]
    fn resumption_flags_reach_the_servers_limits_on_server_and_up() {
        use clap::Parser;
        let parse = |argv: &[&str]| {
            crate::cli::Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"))
        };
        let cli = parse(&["mqtt2xmpp", "server"]);
        let crate::cli::Command::Server(args) = cli.command else {
            panic!("not server")
        };
        let limits = server(&args).limits;
        assert_eq!(limits.resume_timeout, Duration::from_secs(600));
        assert_eq!(limits.max_unacked, 500);
        let cli = parse(&[
            "mqtt2xmpp",
            "server",
            "--resume-timeout",
            "90s",
            "--max-unacked",
            "40",
        ]);
        let crate::cli::Command::Server(args) = cli.command else {
            panic!("not server")
        };
        let limits = server(&args).limits;
        assert_eq!(limits.resume_timeout, Duration::from_secs(90));
        assert_eq!(limits.max_unacked, 40);
        let cli = parse(&["mqtt2xmpp", "up", "--resume-timeout", "0s"]);
        let crate::cli::Command::Up(args) = cli.command else {
            panic!("not up")
        };
        assert_eq!(up(&args).unwrap().resume_timeout, Duration::ZERO);
    }

    #[test]
    fn the_vcard_limit_reaches_the_servers_limits_and_its_default_fits_in_a_stanza() {
        use clap::Parser;
        let limits = |argv: &[&str]| {
            let cli =
                crate::cli::Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
            let crate::cli::Command::Server(args) = cli.command else {
                panic!("not server")
            };
            server(&args).limits
        };
        let default = limits(&["mqtt2xmpp", "server"]);
        assert_eq!(default.max_vcard_bytes, 128 * 1024);
        assert_eq!(
            default.max_vcard_bytes,
            server::limits::ServerLimits::default().max_vcard_bytes
        );
        // A vCard set is one stanza: the default must leave room for the IQ around it.
        assert!(default.max_vcard_bytes + 1024 <= default.max_stanza_bytes);
        let set = limits(&["mqtt2xmpp", "server", "--max-vcard-bytes", "4096"]);
        assert_eq!(set.max_vcard_bytes, 4096);
        assert!(
            crate::cli::Cli::try_parse_from(["mqtt2xmpp", "server", "--max-vcard-bytes", "0"])
                .is_err()
        );
    }

    #[test]
    fn pep_flags_reach_the_servers_limits_with_defaults_otherwise() {
        use clap::Parser;
        let parse = |argv: &[&str]| {
            crate::cli::Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"))
        };
        let cli = parse(&["mqtt2xmpp", "server"]);
        let crate::cli::Command::Server(args) = cli.command else {
            panic!("not server")
        };
        let limits = server(&args).limits;
        assert_eq!(limits.pep, server::limits::PepLimits::default());
        let cli = parse(&[
            "mqtt2xmpp",
            "server",
            "--pep-max-nodes",
            "7",
            "--pep-max-items",
            "50",
            "--pep-max-item-bytes",
            "4096",
            "--pep-max-account-bytes",
            "65536",
        ]);
        let crate::cli::Command::Server(args) = cli.command else {
            panic!("not server")
        };
        let pep = server(&args).limits.pep;
        assert_eq!(
            (
                pep.max_nodes,
                pep.max_items,
                pep.max_item_bytes,
                pep.max_account_bytes
            ),
            (7, 50, 4096, 65536)
        );
    }

    #[test]
    fn muc_flags_rename_or_turn_off_the_room_service_and_bound_it() {
        use clap::Parser;
        let limits = |argv: &[&str]| {
            let cli = crate::cli::Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{e}"));
            let crate::cli::Command::Server(args) = cli.command else {
                panic!("not server")
            };
            server(&args).limits.muc
        };
        assert_eq!(
            limits(&["mqtt2xmpp", "server"]),
            server::limits::MucLimits::default()
        );
        let set = limits(&[
            "mqtt2xmpp",
            "server",
            "--muc-domain",
            "Rooms.Example.org",
            "--muc-lock-new-rooms",
            "--muc-max-rooms-per-user",
            "3",
            "--muc-max-occupants",
            "9",
            "--muc-max-history",
            "0",
        ]);
        assert!(set.enabled && set.lock_new_rooms);
        assert_eq!(set.domain.as_deref(), Some("rooms.example.org"));
        assert_eq!(
            (set.max_rooms_per_user, set.max_occupants, set.max_history),
            (3, 9, 0)
        );
        assert!(!limits(&["mqtt2xmpp", "server", "--no-muc"]).enabled);
        for bad in [
            &["--muc-domain", "lab@conference.example.org"][..],
            &["--muc-domain", "conference.example.org/x"],
            &["--no-muc", "--muc-domain", "rooms.example.org"],
            &["--muc-max-occupants", "0"],
        ] {
            let argv: Vec<&str> = ["mqtt2xmpp", "server"].iter().chain(bad).copied().collect();
            assert!(crate::cli::Cli::try_parse_from(argv).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn archive_flags_switch_it_off_and_set_its_retention() {
        use clap::Parser;
        let limits = |argv: &[&str]| {
            let cli = crate::cli::Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{e}"));
            let crate::cli::Command::Server(args) = cli.command else {
                panic!("not server")
            };
            server(&args).limits.archive
        };
        let defaults = limits(&["mqtt2xmpp", "server"]);
        assert!(defaults.enabled);
        assert_eq!(defaults.max_age, Some(Duration::from_secs(30 * 24 * 3600)));
        assert_eq!(defaults.max_per_user, 10_000);
        assert_eq!(defaults, server::limits::ArchiveLimits::default());
        let set = limits(&[
            "mqtt2xmpp",
            "server",
            "--no-archive",
            "--archive-max-age",
            "0s",
            "--archive-max-messages",
            "500",
        ]);
        assert!(!set.enabled);
        assert_eq!(set.max_age, None);
        assert_eq!(set.max_per_user, 500);
        assert!(crate::cli::Cli::try_parse_from([
            "mqtt2xmpp",
            "server",
            "--archive-max-messages",
            "0"
        ])
        .is_err());
    }
}
