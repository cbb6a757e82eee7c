//! The MQTT client side shared by the bot (`bridge`) and the simulator (`simulate`, and both of
//! them inside `up`): where the broker is and how to log in ([`Broker`]), rumqttc's options from
//! that ([`Broker::options`]), client identifiers ([`client_id`]), and which connection errors
//! retrying cannot fix ([`fatal`]).
//!
//! The errors here describe the problem, not the command line: `up` has no `--mqtt-username`,
//! so the flag to change is added by `config`, where the flags are known.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{ConnectReturnCode, ConnectionError, MqttOptions, TlsConfiguration, Transport};
use thiserror::Error;

use crate::secret::Secret;

/// MQTT keep-alive of every client of this crate: long enough to be cheap, short enough that a
/// dead connection is noticed within a minute.
pub const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// The longest client identifier every MQTT 3.1.1 broker must accept (MQTT 3.1.1 §3.1.3.1: 1 to
/// 23 UTF-8 bytes of `[0-9a-zA-Z]`).
const MAX_CLIENT_ID: usize = 23;

/// Where the broker is and how to log in to it.
#[derive(Debug, Clone)]
pub struct Broker {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Login, if the broker wants one.
    pub username: Option<String>,
    /// Password for `username`.
    pub password: Option<Secret>,
    /// Client identifier; must be unique on the broker (two clients with the same one keep
    /// disconnecting each other).
    pub client_id: String,
    /// TLS configuration, or `None` for plain TCP.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Broker {
    /// A broker on plain TCP without login, e.g. the embedded one of `up`.
    pub fn anonymous(host: impl Into<String>, port: u16, client_id: String) -> Self {
        Broker {
            host: host.into(),
            port,
            username: None,
            password: None,
            client_id,
            tls: None,
        }
    }

    /// `host:port`, as logs and errors name the broker.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// rumqttc's options: clean session (subscriptions are renewed on every ConnAck),
    /// [`KEEP_ALIVE`], credentials and TLS.
    pub fn options(&self) -> MqttOptions {
        let mut options = MqttOptions::new(self.client_id.clone(), self.host.clone(), self.port);
        options.set_keep_alive(KEEP_ALIVE).set_clean_session(true);
        if let Some(user) = &self.username {
            let password = self.password.as_ref().map(Secret::expose).unwrap_or("");
            options.set_credentials(user.clone(), password);
        }
        if let Some(tls) = &self.tls {
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                tls.clone(),
            )));
        }
        options
    }
}

/// `prefix` plus random hex digits (at most 12): unique per process, told apart by its prefix in
/// the broker's log (`mqtt2xmpp…` for the bot, `mqtt2xmppsim…` for the simulator), and within
/// the 23 alphanumeric characters every MQTT 3.1.1 broker must accept.
pub fn client_id(prefix: &str) -> String {
    debug_assert!(
        prefix.len() < MAX_CLIENT_ID && prefix.bytes().all(|b| b.is_ascii_alphanumeric()),
        "{prefix:?}"
    );
    let digits = (MAX_CLIENT_ID - prefix.len()).min(12);
    let random = rand::random::<u64>() & ((1 << (4 * digits)) - 1);
    format!("{prefix}{random:0digits$x}")
}

/// Problems that retrying cannot fix.
#[derive(Debug, Error)]
pub enum MqttError {
    /// The broker refused our credentials.
    #[error(
        "the MQTT broker at {broker} refused the login{} ({code:?})",
        as_user(user)
    )]
    LoginRefused {
        /// `host:port`.
        broker: String,
        /// The login, or `None` when anonymous.
        user: Option<String>,
        /// The CONNACK return code.
        code: ConnectReturnCode,
    },
    /// The broker's TLS certificate failed verification.
    #[error("the MQTT broker's certificate at {broker} is not trusted ({reason})")]
    UntrustedCertificate {
        /// `host:port`.
        broker: String,
        /// What rustls said.
        reason: String,
    },
}

/// ` as USER`, or nothing when anonymous.
fn as_user(user: &Option<String>) -> String {
    user.as_ref()
        .map(|user| format!(" as {user}"))
        .unwrap_or_default()
}

/// Sorts a connection failure: `Err` for a refused login or an untrusted certificate (retrying
/// cannot help), `Ok` for everything else (retry with backoff).
pub fn fatal(error: &ConnectionError, broker: &Broker) -> Result<(), MqttError> {
    match error {
        ConnectionError::ConnectionRefused(
            code @ (ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized),
        ) => Err(MqttError::LoginRefused {
            broker: broker.address(),
            user: broker.username.clone(),
            code: *code,
        }),
        error => match crate::tls::untrusted_certificate(error) {
            Some(reason) => Err(MqttError::UntrustedCertificate {
                broker: broker.address(),
                reason,
            }),
            None => Ok(()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_unique_portable_and_keep_their_prefix() {
        for prefix in ["mqtt2xmpp", "mqtt2xmppsim", "mqtt2xmppbot"] {
            let a = client_id(prefix);
            let b = client_id(prefix);
            assert_ne!(a, b);
            assert!(a.starts_with(prefix), "{a}");
            assert!(a.len() <= MAX_CLIENT_ID, "{a}");
            assert!(a.chars().all(|c| c.is_ascii_alphanumeric()), "{a}");
        }
        assert_eq!(client_id("mqtt2xmpp").len(), "mqtt2xmpp".len() + 12);
    }

    fn broker(user: Option<&str>) -> Broker {
        Broker {
            username: user.map(String::from),
            ..Broker::anonymous("h", 1, "c".into())
        }
    }

    #[test]
    fn refused_logins_and_untrusted_certificates_are_fatal_other_failures_are_not() {
        let refused = ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized);
        let err = fatal(&refused, &broker(Some("sim"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the MQTT broker at h:1 refused the login as sim (NotAuthorized)"
        );
        let anonymous = fatal(&refused, &broker(None)).unwrap_err();
        assert!(
            anonymous
                .to_string()
                .contains("refused the login (NotAuthorized)"),
            "{anonymous}"
        );
        let untrusted = ConnectionError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        ));
        assert!(matches!(
            fatal(&untrusted, &broker(None)),
            Err(MqttError::UntrustedCertificate { .. })
        ));
        let down = ConnectionError::Io(std::io::ErrorKind::ConnectionRefused.into());
        assert!(fatal(&down, &broker(None)).is_ok());
        let busy = ConnectionError::ConnectionRefused(ConnectReturnCode::ServiceUnavailable);
        assert!(fatal(&busy, &broker(None)).is_ok());
    }

    #[test]
    fn errors_name_no_command_line_flag() {
        let refused = ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword);
        let err = fatal(&refused, &broker(Some("u"))).unwrap_err();
        assert!(!err.to_string().contains("--"), "{err}");
    }
}
