//! From command-line arguments to validated runtime configuration: every mistake a user can make
//! in flags becomes a [`ConfigError`] with a sentence that says how to fix it, before anything
//! connects anywhere.

use std::str::FromStr;

use thiserror::Error;
use tokio_xmpp::jid::Jid;

use crate::bridge::{mqtt::MqttConfig, reading::PayloadFormat, reply::SensorView, BridgeConfig};
use crate::cli::{BridgeArgs, MqttArgs, XmppArgs};
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
    /// A topic the bridge cannot subscribe to.
    #[error("--topic {topic:?}: {reason}")]
    Topic {
        /// What was given.
        topic: String,
        /// Why it is not usable.
        reason: &'static str,
    },
    /// `--json-pointer` is not an RFC 6901 pointer.
    #[error("--json-pointer {0:?}: a JSON pointer starts with '/', e.g. /temperature")]
    JsonPointer(String),
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

fn mqtt(args: &MqttArgs, topic: String, format: PayloadFormat) -> Result<MqttConfig, ConfigError> {
    let login = broker_login(args)?;
    Ok(MqttConfig {
        host: login.host,
        port: login.port,
        username: login.username,
        password: login.password,
        client_id: login.client_id,
        tls: login.tls,
        topic,
        format,
        keep_alive: std::time::Duration::from_secs(30),
    })
}

/// `mqtt2xmpp` plus 12 random hex digits: unique, and within the 23 alphanumeric characters every
/// MQTT 3.1.1 broker must accept.
pub(crate) fn unique_client_id() -> String {
    format!("mqtt2xmpp{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

/// Validates a subscription topic for the one-sensor bridge.
fn check_topic(topic: &str) -> Result<(), ConfigError> {
    let bad = |reason| ConfigError::Topic {
        topic: topic.to_string(),
        reason,
    };
    if topic.is_empty() {
        return Err(bad("a topic cannot be empty"));
    }
    if topic.contains(['+', '#']) {
        return Err(bad(
            "wildcards (+, #) are not supported yet: name the sensor's exact topic",
        ));
    }
    if topic.contains('\0') || topic.len() > 65_535 {
        return Err(bad("not a valid MQTT topic"));
    }
    Ok(())
}

/// The bridge's configuration from its flags.
pub fn bridge(args: &BridgeArgs) -> Result<BridgeConfig, ConfigError> {
    let sensor = &args.sensor;
    check_topic(&sensor.topic)?;
    if let Some(pointer) = &sensor.json_pointer {
        if !pointer.is_empty() && !pointer.starts_with('/') {
            return Err(ConfigError::JsonPointer(pointer.clone()));
        }
    }
    let format = PayloadFormat {
        json_pointer: sensor.json_pointer.clone(),
    };
    let mqtt = mqtt(&args.mqtt, sensor.topic.clone(), format)?;
    let (jid, connector) = xmpp_login(&args.xmpp)?;
    let status = format!(
        "Send me any message for the latest {} reading",
        sensor.topic
    );
    Ok(BridgeConfig {
        mqtt,
        xmpp: crate::bridge::xmpp::XmppConfig {
            jid,
            connector,
            status,
        },
        view: SensorView {
            topic: sensor.topic.clone(),
            unit: sensor.unit.clone(),
            precision: sensor.precision.map(usize::from),
            stale_after: sensor.stale_after,
        },
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

    #[test]
    fn topics_are_checked() {
        assert!(check_topic("sensors/temperature").is_ok());
        assert!(check_topic("EDIFICIO_1/P_2/O/4/VIBR").is_ok());
        for bad in ["", "sensors/+", "#", "a\0b"] {
            assert!(check_topic(bad).is_err(), "{bad:?}");
        }
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
