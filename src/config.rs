//! From command-line arguments to validated runtime configuration: every mistake a user can make
//! in flags becomes a [`ConfigError`] with a sentence that says how to fix it, before anything
//! connects anywhere.

use std::str::FromStr;
use std::time::Duration;

use thiserror::Error;
use tokio_xmpp::jid::{BareJid, Jid};

use crate::bridge::sensors::{SensorDefaults, SensorError, Sensors};
use crate::bridge::{alerts, bot, cache::CacheLimits, mqtt::MqttConfig, BridgeConfig};
use crate::cli::{BotArgs, BridgeArgs, MqttArgs, SensorArgs, XmppArgs};
use crate::secret::{self, SecretError};
use crate::tls::{self, TlsConfigError};
use crate::xmpp_connect::{self, Connector};

/// A flag combination that cannot work.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// `--jid` is not a usable account address.
    #[error("--jid {jid:?}: {reason}")]
    Jid {
        /// What was given.
        jid: String,
        /// Why it is not usable.
        reason: String,
    },
    /// `--xmpp-server` is malformed.
    #[error("--xmpp-server: {0}")]
    XmppServer(String),
    /// `--json-pointer` is not an RFC 6901 pointer.
    #[error("--json-pointer {0:?}: a JSON pointer starts with '/', e.g. /temperature")]
    JsonPointer(String),
    /// A sensor from `--sensor`, `--sensors-file` or `--topic` cannot be used.
    #[error(transparent)]
    Sensor(#[from] SensorError),
    /// An `--allow` or `--allow-domain` value is not a contact or domain.
    #[error("{flag} {value:?}: {reason}")]
    Allow {
        /// Which flag.
        flag: &'static str,
        /// What was given.
        value: String,
        /// Why it is not usable.
        reason: String,
    },
    /// A password could not be read.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// A TLS setting could not be applied.
    #[error(transparent)]
    Tls(#[from] TlsConfigError),
}

/// The XMPP login of the bridge or of `ask`.
pub fn xmpp_login(args: &XmppArgs) -> Result<(Jid, Connector), ConfigError> {
    let jid_error = |reason: String| ConfigError::Jid {
        jid: args.jid.clone(),
        reason,
    };
    let jid = Jid::from_str(&args.jid).map_err(|e| jid_error(e.to_string()))?;
    if jid.node().is_none() {
        return Err(jid_error(
            "an account address needs a user part, e.g. bot@example.org".into(),
        ));
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

/// Where and how to log in to the MQTT broker, from the MQTT flags; shared by `bridge` and
/// `simulate`, so both read passwords and CA files the same way.
#[derive(Debug, Clone)]
pub struct BrokerLogin {
    /// Host name or address.
    pub host: String,
    /// Port: as given, else 1883, or 8883 with TLS.
    pub port: u16,
    /// Login, if the broker wants one.
    pub username: Option<String>,
    /// From `--mqtt-password-file`, or `MQTT2XMPP_MQTT_PASSWORD` with a user name.
    pub password: Option<secret::Secret>,
    /// As given, else unique per process.
    pub client_id: String,
    /// With `--mqtt-tls` or `--mqtt-ca`.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

/// Resolves the MQTT flags: reads the password file and the CA file now, so mistakes show up
/// before anything connects.
pub fn broker_login(args: &MqttArgs) -> Result<BrokerLogin, ConfigError> {
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
    Ok(BrokerLogin {
        host: args.mqtt_host.clone(),
        port: args.mqtt_port.unwrap_or(if use_tls { 8883 } else { 1883 }),
        username: args.mqtt_username.clone(),
        password,
        client_id: args.mqtt_client_id.clone().unwrap_or_else(unique_client_id),
        tls,
    })
}

fn mqtt(args: &MqttArgs, filters: Vec<String>) -> Result<MqttConfig, ConfigError> {
    let login = broker_login(args)?;
    Ok(MqttConfig {
        host: login.host,
        port: login.port,
        username: login.username,
        password: login.password,
        client_id: login.client_id,
        tls: login.tls,
        filters,
        keep_alive: Duration::from_secs(30),
    })
}

/// `mqtt2xmpp` plus 12 random hex digits: unique, and within the 23 alphanumeric characters every
/// MQTT 3.1.1 broker must accept.
pub(crate) fn unique_client_id() -> String {
    format!("mqtt2xmpp{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

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
    let mqtt = mqtt(&args.mqtt, sensors.filters())?;
    let (jid, connector) = xmpp_login(&args.xmpp)?;
    let bot = bot_settings(&args.bot, args.sensor.stale_after)?;
    Ok(BridgeConfig {
        mqtt,
        xmpp: crate::bridge::xmpp::XmppConfig {
            jid,
            connector,
            presence_interval: args.bot.presence_interval,
        },
        sensors,
        bot,
        limits: CacheLimits {
            max_topics: usize::try_from(args.bot.max_topics).unwrap_or(usize::MAX),
            history: usize::try_from(args.bot.history).unwrap_or(usize::MAX),
        },
        state_db: args.bot.state_db.clone(),
    })
}

/// The bot's behaviour from its flags; the allow list is checked here.
pub fn bot_settings(args: &BotArgs, stale_after: Duration) -> Result<bot::Settings, ConfigError> {
    let mut allow = Vec::new();
    for jid in &args.allow {
        let bare = BareJid::from_str(jid.trim()).map_err(|e| ConfigError::Allow {
            flag: "--allow",
            value: jid.clone(),
            reason: e.to_string(),
        })?;
        if bare.node().is_none() {
            return Err(ConfigError::Allow {
                flag: "--allow",
                value: jid.clone(),
                reason: "a contact needs a user part, e.g. alice@example.org; for a whole \
                         domain use --allow-domain"
                    .into(),
            });
        }
        allow.push(bare.to_string());
    }
    let mut allow_domains = Vec::new();
    for domain in &args.allow_domain {
        let parsed = BareJid::from_str(domain.trim())
            .ok()
            .filter(|j| j.node().is_none());
        let Some(parsed) = parsed else {
            return Err(ConfigError::Allow {
                flag: "--allow-domain",
                value: domain.clone(),
                reason: "a domain, e.g. example.org, without user or resource".into(),
            });
        };
        allow_domains.push(parsed.to_string());
    }
    Ok(bot::Settings {
        stale_after,
        alerts: alerts::Settings {
            min_interval: args.alert_interval,
            stale_after,
            per_contact: ALERTS_PER_CONTACT,
            total: ALERTS_TOTAL,
        },
        replies_per_minute: args.rate.replies_per_minute,
        reply_burst: args.rate.reply_burst,
        allow,
        allow_domains,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_unique_and_portable() {
        let a = unique_client_id();
        let b = unique_client_id();
        assert_ne!(a, b);
        assert!(
            a.len() <= 23 && a.chars().all(|c| c.is_ascii_alphanumeric()),
            "{a}"
        );
    }

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
}
