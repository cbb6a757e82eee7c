//! Opening XMPP client connections for the bot and for `ask`.
//!
//! tokio-xmpp's own connectors trust only the system's roots and retry a refused login forever
//! without telling anyone. [`Connector`] fixes both: it negotiates STARTTLS with our
//! [`rustls::ClientConfig`] (so `--xmpp-ca` can pin a self-signed server), and its [`LoginGuard`]
//! turns problems that retrying cannot fix — a refused password, an untrusted certificate, a
//! server without TLS — into one [`Fatal`] error the caller can act on.
//!
//! How a refused login is noticed: tokio-xmpp calls [`Connector::connect`] for every attempt.
//! If it calls again without the previous attempt having come online, the guard first runs one
//! diagnostic login of its own on a separate connection, where the SASL outcome is visible.

use std::borrow::Cow;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use sasl::common::{ChannelBinding, Credentials};
use thiserror::Error;
use tokio::io::BufStream;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::sync::watch;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_xmpp::connect::{DnsConfig, ServerConnector};
use tokio_xmpp::error::AuthError;
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::parsers::starttls;
use tokio_xmpp::stanzastream::{Connection, StanzaStream};
use tokio_xmpp::xmlstream::{
    initiate_stream, PendingFeaturesRecv, ReadError, StreamHeader, Timeouts, XmppStream,
    XmppStreamElement,
};

use crate::backoff::Backoff;
use crate::secret::Secret;

/// How long the diagnostic login may take before it is abandoned (and the failure treated as
/// transient).
const DIAGNOSTIC_TIMEOUT: Duration = Duration::from_secs(15);

/// A problem that reconnecting cannot fix: the caller should stop and tell the user.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum Fatal {
    /// SASL failure: wrong password, unknown account, disabled account.
    #[error(
        "the XMPP server refused the login for {jid} ({condition}): check that the account \
         exists and that the password is right"
    )]
    LoginRefused {
        /// The account that tried to log in.
        jid: String,
        /// The SASL condition the server gave, e.g. `not-authorized`.
        condition: String,
    },
    /// The server offers no SASL mechanism this client can use.
    #[error(
        "the XMPP server offers no login mechanism mqtt2xmpp supports (SCRAM-SHA-1/256 or PLAIN)"
    )]
    NoMechanism,
    /// The server's certificate failed verification.
    #[error("the XMPP server's certificate is not trusted ({reason})")]
    UntrustedCertificate {
        /// What rustls said about the certificate.
        reason: String,
    },
    /// The server does not offer STARTTLS; we never log in without TLS.
    #[error("the XMPP server does not offer STARTTLS, and mqtt2xmpp never logs in without TLS")]
    NoStartTls,
}

/// Shared between the connector clones and the task that drives the client.
pub struct LoginGuard {
    jid: BareJid,
    password: Secret,
    attempts: AtomicU32,
    /// Set when the server refused tls-exporter channel binding but accepted the login
    /// without it (see [`Connector::diagnose`]).
    binding_disabled: std::sync::atomic::AtomicBool,
    fatal: watch::Sender<Option<Fatal>>,
}

impl std::fmt::Debug for LoginGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginGuard")
            .field("jid", &self.jid)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

impl LoginGuard {
    /// Call on every `Event::Online`: the login works, so the next connection attempt is a plain
    /// reconnect, not a suspect one.
    pub fn online(&self) {
        self.attempts.store(0, Ordering::SeqCst);
    }

    /// Resolves with the first fatal problem found; pending forever if there is none.
    pub fn watch(&self) -> watch::Receiver<Option<Fatal>> {
        self.fatal.subscribe()
    }

    fn report(&self, fatal: Fatal) {
        tracing::debug!("fatal XMPP connection problem: {fatal}");
        self.fatal.send_replace(Some(fatal));
    }
}

/// A server address that is not `HOST:PORT`.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("expected HOST:PORT (e.g. 127.0.0.1:5222), got {0:?}")]
pub struct AddressError(pub String);

/// Where to connect: the server's SRV records for the JID's domain, or a fixed `host:port`.
pub fn dns_config(domain: &str, server: Option<&str>) -> Result<DnsConfig, AddressError> {
    match server {
        None => Ok(DnsConfig::srv_default_client(domain)),
        Some(hostport) => {
            let (host, port) = split_host_port(hostport)?;
            Ok(DnsConfig::no_srv(host, port))
        }
    }
}

/// Splits `host:port`, `[v6]:port` or `v4:port`.
fn split_host_port(hostport: &str) -> Result<(&str, u16), AddressError> {
    let bad = || AddressError(hostport.to_string());
    let (host, port) = hostport.rsplit_once(':').ok_or_else(bad)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || host.contains(':') && !hostport.starts_with('[') {
        return Err(bad());
    }
    let port = port.parse().map_err(|_| bad())?;
    Ok((host, port))
}

/// A [`ServerConnector`] doing STARTTLS with our own TLS configuration, watched by a
/// [`LoginGuard`].
#[derive(Clone, Debug)]
pub struct Connector {
    dns: DnsConfig,
    tls: Arc<ClientConfig>,
    guard: Arc<LoginGuard>,
}

impl Connector {
    /// A connector for `jid` with `password`, reaching the server through `dns` and verifying it
    /// with `tls`.
    pub fn new(dns: DnsConfig, tls: Arc<ClientConfig>, jid: BareJid, password: Secret) -> Self {
        let (fatal, _) = watch::channel(None);
        Self {
            dns,
            tls,
            guard: Arc::new(LoginGuard {
                jid,
                password,
                attempts: AtomicU32::new(0),
                binding_disabled: std::sync::atomic::AtomicBool::new(false),
                fatal,
            }),
        }
    }

    /// The account's password, for tokio-xmpp's own login on the connections this opens.
    pub fn password(&self) -> String {
        self.guard.password.expose().to_string()
    }

    /// The TLS configuration (trust roots and `--xmpp-ca`), for other connections to the same
    /// server's services (the HTTP upload of charts).
    pub fn tls(&self) -> Arc<ClientConfig> {
        self.tls.clone()
    }

    /// The guard to notify on `Online` and to watch for fatal errors.
    pub fn guard(&self) -> Arc<LoginGuard> {
        self.guard.clone()
    }

    /// TCP, stream header, STARTTLS, TLS handshake, second stream header.
    async fn open(
        &self,
        jid: &Jid,
        ns: &'static str,
        timeouts: Timeouts,
    ) -> Result<
        (
            PendingFeaturesRecv<<Self as ServerConnector>::Stream>,
            ChannelBinding,
        ),
        OpenError,
    > {
        let domain = jid.domain().as_str();
        let header = || StreamHeader {
            to: Some(Cow::Borrowed(domain)),
            from: None,
            id: None,
        };
        let tcp = self.dns.resolve().await?;
        // Chat is small writes that follow each other (a stream-management `<a/>`, then the
        // reply): with Nagle's algorithm the second waits for the server's delayed ACK, up to
        // 40 ms on Linux. tokio-xmpp leaves the option alone; the servers set it too.
        let _ = tcp.set_nodelay(true);
        let plain = initiate_stream(BufStream::new(tcp), ns, header(), timeouts).await?;
        let (features, mut plain): (_, XmppStream<BufStream<TcpStream>>) = plain
            .recv_features()
            .await
            .map_err(tokio_xmpp::Error::from)?;
        if !features.can_starttls() {
            return Err(OpenError::Fatal(Fatal::NoStartTls));
        }
        plain
            .send(&XmppStreamElement::Starttls(starttls::Nonza::Request(
                starttls::Request,
            )))
            .await
            .map_err(tokio_xmpp::Error::from)?;
        loop {
            match plain
                .next()
                .await
                .map(|v| v.and_then(|v| v.into_read_error()))
            {
                Some(Ok(XmppStreamElement::Starttls(starttls::Nonza::Proceed(_)))) => break,
                Some(Ok(_)) | Some(Err(ReadError::SoftTimeout)) => (),
                Some(Err(ReadError::HardError(e))) => return Err(tokio_xmpp::Error::from(e).into()),
                Some(Err(ReadError::ParseError(e))) => {
                    return Err(tokio_xmpp::Error::from(io::Error::new(
                        io::ErrorKind::InvalidData,
                        e,
                    ))
                    .into())
                }
                None | Some(Err(ReadError::StreamFooterReceived)) => {
                    return Err(tokio_xmpp::Error::Disconnected.into())
                }
            }
        }
        let tcp = plain.into_inner().into_inner();
        let name = ServerName::try_from(domain.to_owned())
            .map_err(|e| tokio_xmpp::Error::from(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
        let tls = match TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
        {
            Ok(tls) => tls,
            Err(e) => {
                if let Some(reason) = crate::tls::untrusted_certificate(&e) {
                    return Err(OpenError::Fatal(Fatal::UntrustedCertificate { reason }));
                }
                return Err(tokio_xmpp::Error::from(e).into());
            }
        };
        let binding = if self.guard.binding_disabled.load(Ordering::SeqCst) {
            ChannelBinding::None
        } else {
            crate::tls::tls_exporter(tls.get_ref().1)
                .map_or(ChannelBinding::None, ChannelBinding::TlsExporter)
        };
        let secured = initiate_stream(BufStream::new(tls), ns, header(), timeouts).await?;
        Ok((secured, binding))
    }

    /// One login on a separate connection, to learn whether the account's credentials work.
    /// `None` means nothing fatal was found (including "could not even connect").
    ///
    /// If the login with tls-exporter channel binding (SCRAM-*-PLUS) is refused, it is tried
    /// once more without binding: servers such as ejabberd 23.01 offer -PLUS but support only
    /// tls-unique, which TLS 1.3 does not have. If that works, binding is switched off for
    /// this server from then on, with a warning, instead of failing the login.
    async fn diagnose(&self, jid: &Jid, ns: &'static str, timeouts: Timeouts) -> Option<Fatal> {
        let attempt = async {
            let refused = match self.try_login(jid, ns, timeouts, true).await? {
                Ok(()) => return None,
                Err(refused) => refused,
            };
            if self.guard.binding_disabled.load(Ordering::SeqCst) {
                return Some(refused);
            }
            match self.try_login(jid, ns, timeouts, false).await? {
                Ok(()) => {
                    tracing::warn!(
                        "the XMPP server refused tls-exporter channel binding (SCRAM-*-PLUS) but \
                         accepts SCRAM without it; logging in without channel binding"
                    );
                    self.guard.binding_disabled.store(true, Ordering::SeqCst);
                    None
                }
                Err(refused) => Some(refused),
            }
        };
        tokio::time::timeout(DIAGNOSTIC_TIMEOUT, attempt)
            .await
            .ok()
            .flatten()
    }

    /// One SASL login on a fresh connection. `None`: no verdict (the connection failed);
    /// `Some(Err(fatal))`: the server said no.
    async fn try_login(
        &self,
        jid: &Jid,
        ns: &'static str,
        timeouts: Timeouts,
        with_binding: bool,
    ) -> Option<Result<(), Fatal>> {
        let (pending, binding) = match self.open(jid, ns, timeouts).await {
            Ok(opened) => opened,
            Err(OpenError::Fatal(fatal)) => return Some(Err(fatal)),
            Err(OpenError::Transient(_)) => return None,
        };
        let binding = if with_binding {
            binding
        } else {
            ChannelBinding::None
        };
        let (features, stream) = pending.recv_features().await.ok()?;
        let creds = Credentials::default()
            .with_username(self.guard.jid.node().map(|n| n.as_str()).unwrap_or(""))
            .with_password(self.guard.password.expose())
            .with_channel_binding(binding);
        match tokio_xmpp::client_login(stream, features.sasl_mechanisms, creds).await {
            Ok(_) => Some(Ok(())),
            Err(tokio_xmpp::Error::Auth(AuthError::Fail(condition))) => {
                Some(Err(Fatal::LoginRefused {
                    jid: self.guard.jid.to_string(),
                    condition: sasl_condition_name(&condition),
                }))
            }
            Err(tokio_xmpp::Error::Auth(AuthError::NoMechanism)) => Some(Err(Fatal::NoMechanism)),
            Err(_) => None,
        }
    }
}

/// A client-to-server stream for `jid` through `connector`: logs in, binds, and reconnects by
/// itself (`Backoff::reconnect`: within 2 s of the server's return) until dropped or closed.
///
/// tokio-xmpp's own `StanzaStream::new_c2s` would do the same with delays doubling from 1 s to
/// 30 s, which cannot be changed and grows past any promise of freshness, and with a log line
/// that does not name the server. This reconnector performs the same steps (connect, SASL, stream
/// restart; binding stays with the stream) on our schedule.
pub fn open_stream(jid: Jid, connector: Connector) -> StanzaStream {
    let password = connector.password();
    let reconnector = Box::new(
        move |_preferred: Option<String>, slot: oneshot::Sender<Connection>| {
            let (jid, connector, password) = (jid.clone(), connector.clone(), password.clone());
            tokio::spawn(async move {
                let mut backoff = Backoff::reconnect();
                loop {
                    match login(&connector, &jid, &password).await {
                        Ok((features, stream)) => {
                            let connection = Connection {
                                stream: stream.box_stream(),
                                features,
                                identity: jid,
                            };
                            // If the StanzaStream is gone, so is the need for this connection:
                            // dropping it closes the socket.
                            let _ = slot.send(connection);
                            return;
                        }
                        Err(error) => {
                            if slot.is_closed() {
                                return;
                            }
                            let delay = backoff.next_delay();
                            tracing::warn!(
                                server = %connector.dns,
                                "XMPP connection failed: {error}; retrying in {delay:.1?}"
                            );
                            tokio::time::sleep(delay).await;
                        }
                    }
                }
            });
        },
    );
    StanzaStream::new(reconnector, 16)
}

/// One login, without binding: connect (STARTTLS), SASL, restart the stream, read the features.
async fn login(
    connector: &Connector,
    jid: &Jid,
    password: &str,
) -> Result<
    (
        tokio_xmpp::parsers::stream_features::StreamFeatures,
        XmppStream<BufStream<TlsStream<TcpStream>>>,
    ),
    tokio_xmpp::Error,
> {
    let (stream, channel_binding) = connector
        .connect(
            jid,
            tokio_xmpp::parsers::ns::JABBER_CLIENT,
            Timeouts::tight(),
        )
        .await?;
    let (features, stream) = stream.recv_features().await?;
    let username = jid.node().map(|n| n.as_str()).unwrap_or_default();
    let credentials = Credentials::default()
        .with_username(username)
        .with_password(password)
        .with_channel_binding(channel_binding);
    let stream = tokio_xmpp::client_login(stream, features.sasl_mechanisms, credentials).await?;
    let stream = stream
        .send_header(StreamHeader {
            to: Some(Cow::Borrowed(jid.domain().as_str())),
            from: None,
            id: None,
        })
        .await?;
    Ok(stream.recv_features().await?)
}

/// The RFC 6120 name of a SASL failure condition (`not-authorized`, …).
fn sasl_condition_name(condition: &tokio_xmpp::parsers::sasl::DefinedCondition) -> String {
    let element = tokio_xmpp::minidom::Element::from(condition.clone());
    element.name().to_string()
}

/// Why [`Connector::open`] failed.
enum OpenError {
    /// Retrying cannot help.
    Fatal(Fatal),
    /// Network or protocol trouble: retry later.
    Transient(tokio_xmpp::Error),
}

impl<E: Into<tokio_xmpp::Error>> From<E> for OpenError {
    fn from(e: E) -> Self {
        OpenError::Transient(e.into())
    }
}

impl ServerConnector for Connector {
    type Stream = BufStream<TlsStream<TcpStream>>;

    async fn connect(
        &self,
        jid: &Jid,
        ns: &'static str,
        timeouts: Timeouts,
    ) -> Result<(PendingFeaturesRecv<Self::Stream>, ChannelBinding), tokio_xmpp::Error> {
        let fatal = |fatal: Fatal| {
            self.guard.report(fatal.clone());
            tokio_xmpp::Error::Io(io::Error::other(fatal))
        };
        // The previous attempt never came online: find out whether it is worth trying again.
        if self.guard.attempts.fetch_add(1, Ordering::SeqCst) > 0 {
            if let Some(problem) = self.diagnose(jid, ns, timeouts).await {
                return Err(fatal(problem));
            }
        }
        match self.open(jid, ns, timeouts).await {
            Ok(opened) => Ok(opened),
            Err(OpenError::Fatal(problem)) => Err(fatal(problem)),
            Err(OpenError::Transient(e)) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        assert_eq!(split_host_port("127.0.0.1:5222"), Ok(("127.0.0.1", 5222)));
        assert_eq!(
            split_host_port("xmpp.example:5223"),
            Ok(("xmpp.example", 5223))
        );
        assert_eq!(split_host_port("[::1]:5222"), Ok(("::1", 5222)));
        for bad in ["localhost", "::1:5222", ":5222", "host:port", "host:70000"] {
            assert!(split_host_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sasl_conditions_use_rfc_names() {
        use tokio_xmpp::parsers::sasl::DefinedCondition;
        assert_eq!(
            sasl_condition_name(&DefinedCondition::NotAuthorized),
            "not-authorized"
        );
    }
}
