#![allow(dead_code)]
//! A client that writes raw bytes to the bundled server and reads its raw answers: plain TCP
//! before STARTTLS, then TLS, a PLAIN login and a bind, each step written out by hand. It is
//! how the tests send what no well-behaved client library would (a DOCTYPE, a half-written
//! element, invalid UTF-8), from a chosen loopback address if they need to.
//!
//! Answers are parsed with [`parse`] into the top-level elements the server sent, so tests
//! compare conditions and texts rather than serialised strings.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_xmpp::minidom::Element;

/// The client's stream header, as every test client sends it.
pub const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";
/// The stream header without the XML declaration, for a restart.
pub const RESTART: &str = "<stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

pub const NS_STREAMS: &str = "http://etherx.jabber.org/streams";
pub const NS_STREAM_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
pub const NS_STANZA_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
pub const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
pub const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";

/// How long one step of a negotiation may take.
const STEP: Duration = Duration::from_secs(10);

enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// One raw connection to the server.
pub struct Raw {
    conn: Option<Conn>,
    /// Bytes read but not yet handed out.
    pending: Vec<u8>,
    /// The server closed the connection (or it failed).
    pub closed: bool,
}

/// What the server sent, up to a point.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The bytes as text (invalid UTF-8 replaced).
    pub text: String,
    /// The connection was closed when reading stopped.
    pub closed: bool,
}

impl Answer {
    /// The top-level elements of the answer (see [`parse`]); panics with the raw text if it
    /// does not parse.
    pub fn elements(&self) -> Vec<Element> {
        parse(&self.text).unwrap_or_else(|e| panic!("unparsable answer ({e}): {}", self.text))
    }

    /// Whether the answer opened a stream (the server's stream header).
    pub fn has_header(&self) -> bool {
        self.text.contains("<stream:stream")
    }

    /// Whether the answer closed the stream (`</stream:stream>`).
    pub fn has_footer(&self) -> bool {
        self.text.contains("</stream:stream>")
    }

    /// The stream error's condition and text, if the answer has one.
    pub fn stream_error(&self) -> Option<(String, String)> {
        self.elements()
            .iter()
            .find(|e| e.is("error", NS_STREAMS))
            .map(condition_and_text)
    }
}

/// The defined condition (first child that is not `<text/>`) and the text of an error element,
/// stream or stanza error alike.
pub fn condition_and_text(error: &Element) -> (String, String) {
    let condition = error
        .children()
        .find(|c| c.name() != "text")
        .map(|c| c.name().to_string())
        .unwrap_or_default();
    let text = error
        .children()
        .find(|c| c.name() == "text")
        .map(|c| c.text())
        .unwrap_or_default();
    (condition, text)
}

/// The top-level elements of a piece of a stream: the server's XML declaration, stream header and
/// footer are dropped and the rest is parsed inside a wrapper that declares the stream prefix.
pub fn parse(text: &str) -> Result<Vec<Element>, String> {
    let mut body = text.trim_start();
    if body.starts_with("<?xml") {
        let end = body.find("?>").ok_or("unterminated XML declaration")?;
        body = &body[end + 2..];
    }
    let body = match body.find("<stream:stream") {
        Some(start) => {
            let end = body[start..]
                .find('>')
                .ok_or("unterminated stream header")?;
            format!("{}{}", &body[..start], &body[start + end + 1..])
        }
        None => body.to_string(),
    };
    let body = body.replace("</stream:stream>", "");
    let wrapped =
        format!("<wrapper xmlns='jabber:client' xmlns:stream='{NS_STREAMS}'>{body}</wrapper>");
    let wrapper = Element::from_str(&wrapped).map_err(|e| e.to_string())?;
    Ok(wrapper.children().cloned().collect())
}

impl Raw {
    /// A plain TCP connection from 127.0.0.1 to the server on `port`.
    pub async fn connect(port: u16) -> Raw {
        Self::connect_from(Ipv4Addr::LOCALHOST, port).await
    }

    /// A plain TCP connection from the loopback address `source` (127.0.0.2, say: the server
    /// then sees another client address).
    pub async fn connect_from(source: Ipv4Addr, port: u16) -> Raw {
        assert!(source.is_loopback(), "{source} is not a loopback address");
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::new(IpAddr::V4(source), 0))
            .expect("bind a loopback source address");
        let tcp = socket
            .connect(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .expect("connect to the server");
        let _ = tcp.set_nodelay(true);
        Raw {
            conn: Some(Conn::Plain(tcp)),
            pending: Vec::new(),
            closed: false,
        }
    }

    /// A connection to the direct TLS port (XEP-0368) on `port`: the TLS handshake first,
    /// offering ALPN `xmpp-client` and trusting `ca_file`, for the name `localhost`.
    pub async fn direct_tls(port: u16, ca_file: &Path) -> Raw {
        Self::try_direct_tls(port, ca_file, &[b"xmpp-client"])
            .await
            .expect("TLS handshake on the direct TLS port")
    }

    /// Like [`Raw::direct_tls`], offering the ALPN protocols `alpn` (none: no ALPN extension),
    /// and returning the handshake's error instead of panicking.
    pub async fn try_direct_tls(port: u16, ca_file: &Path, alpn: &[&[u8]]) -> std::io::Result<Raw> {
        let Raw { conn, .. } = Raw::connect(port).await;
        let Some(Conn::Plain(tcp)) = conn else {
            unreachable!("Raw::connect makes a plain connection");
        };
        let config = mqtt2xmpp::tls::client_config(Some(ca_file)).expect("TLS client config");
        let mut config = (*config).clone();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("server name");
        let tls = tokio::time::timeout(STEP, connector.connect(name, tcp))
            .await
            .expect("TLS handshake in time")?;
        Ok(Raw {
            conn: Some(Conn::Tls(Box::new(tls))),
            pending: Vec::new(),
            closed: false,
        })
    }

    /// The certificate the server presented (DER), once TLS is up.
    pub fn server_certificate(&self) -> Option<Vec<u8>> {
        match &self.conn {
            Some(Conn::Tls(tls)) => tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|leaf| leaf.as_ref().to_vec()),
            _ => None,
        }
    }

    /// The ALPN protocol TLS agreed on, once TLS is up.
    pub fn alpn_protocol(&self) -> Option<Vec<u8>> {
        match &self.conn {
            Some(Conn::Tls(tls)) => tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec),
            _ => None,
        }
    }

    /// Connects, negotiates TLS, logs in with PLAIN and binds `resource`.
    pub async fn login(
        port: u16,
        ca_file: &Path,
        user: &str,
        password: &str,
        resource: &str,
    ) -> Raw {
        let mut raw = Raw::connect(port).await;
        raw.starttls(ca_file).await;
        let features = raw.open_stream().await;
        assert!(features.contains("PLAIN"), "{features}");
        let answer = raw.auth_plain(user, password).await;
        assert!(answer.contains("<success"), "login as {user}: {answer}");
        raw.open_stream().await;
        let bound = raw.bind(resource).await;
        assert!(
            bound.contains(&format!("{user}@localhost/{resource}")),
            "bind: {bound}"
        );
        raw
    }

    /// Sends bytes; `false` if the connection is already gone (a refused attack is fine).
    pub async fn send(&mut self, bytes: impl AsRef<[u8]>) -> bool {
        let bytes = bytes.as_ref();
        let result = match self.conn.as_mut() {
            Some(Conn::Plain(tcp)) => tcp.write_all(bytes).await,
            Some(Conn::Tls(tls)) => match tls.write_all(bytes).await {
                Ok(()) => tls.flush().await,
                Err(e) => Err(e),
            },
            None => return false,
        };
        result.is_ok()
    }

    /// Reads more bytes into `pending`, up to `deadline`; `false` at the deadline or when the
    /// connection ended.
    async fn fill(&mut self, deadline: Instant) -> bool {
        if self.closed {
            return false;
        }
        let mut buf = vec![0u8; 64 * 1024];
        let remaining = deadline.saturating_duration_since(Instant::now());
        let read = async {
            match self.conn.as_mut() {
                Some(Conn::Plain(tcp)) => tcp.read(&mut buf).await,
                Some(Conn::Tls(tls)) => tls.read(&mut buf).await,
                None => Ok(0),
            }
        };
        match tokio::time::timeout(remaining, read).await {
            Ok(Ok(n)) if n > 0 => {
                self.pending.extend_from_slice(&buf[..n]);
                true
            }
            // End of stream, a reset, or a TLS close without close_notify: closed.
            Ok(_) => {
                self.closed = true;
                false
            }
            Err(_) => false,
        }
    }

    /// Everything up to and including the first `needle` (the rest stays for the next read), or
    /// everything read when the connection closes or `within` passes first.
    pub async fn read_until(&mut self, needle: &str, within: Duration) -> String {
        self.read_until_any(&[needle], within).await
    }

    /// Like [`Raw::read_until`], for the first of several needles.
    pub async fn read_until_any(&mut self, needles: &[&str], within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let text = String::from_utf8_lossy(&self.pending).into_owned();
            let found = needles
                .iter()
                .filter_map(|n| text.find(n).map(|at| at + n.len()))
                .min();
            if let Some(end) = found {
                // `end` is a byte offset into the lossy text; it is the same in the raw bytes as
                // long as everything before it was valid UTF-8, which the server's output is.
                let taken: Vec<u8> = self.pending.drain(..end).collect();
                return String::from_utf8_lossy(&taken).into_owned();
            }
            if !self.fill(deadline).await {
                return String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into_owned();
            }
        }
    }

    /// Everything until the server closes the connection, or until `within` passes.
    pub async fn read_to_close(&mut self, within: Duration) -> Answer {
        let deadline = Instant::now() + within;
        while self.fill(deadline).await {}
        Answer {
            text: String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into_owned(),
            closed: self.closed,
        }
    }

    /// Sends the stream header and returns the server's answer up to the end of its features.
    pub async fn open_stream(&mut self) -> String {
        self.send(if self.is_tls() { RESTART } else { HEADER })
            .await;
        self.read_until("</stream:features>", STEP).await
    }

    fn is_tls(&self) -> bool {
        matches!(self.conn, Some(Conn::Tls(_)))
    }

    /// Opens the plain stream, asks for STARTTLS and does the TLS handshake (trusting
    /// `ca_file`, for the name `localhost`).
    pub async fn starttls(&mut self, ca_file: &Path) {
        self.starttls_with(ca_file, b"").await
    }

    /// Like [`Raw::starttls`], but sends `after_proceed` in plain text once `<proceed/>` has
    /// arrived, before the TLS handshake (whitespace that trailed `<starttls/>`, say).
    pub async fn starttls_with(&mut self, ca_file: &Path, after_proceed: &[u8]) {
        let features = self.open_stream().await;
        assert!(features.contains("<starttls"), "{features}");
        self.send(format!("<starttls xmlns='{NS_TLS}'/>")).await;
        let proceed = self.read_until("</proceed>", STEP).await;
        assert!(proceed.contains("<proceed"), "{proceed}");
        if !after_proceed.is_empty() {
            self.send(after_proceed).await;
        }
        assert!(self.pending.is_empty(), "bytes after <proceed/>");
        let Some(Conn::Plain(tcp)) = self.conn.take() else {
            panic!("STARTTLS on a connection that is not plain TCP");
        };
        let config = mqtt2xmpp::tls::client_config(Some(ca_file)).expect("TLS client config");
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(&config));
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("server name");
        let tls = tokio::time::timeout(STEP, connector.connect(name, tcp))
            .await
            .expect("TLS handshake in time")
            .expect("TLS handshake");
        self.conn = Some(Conn::Tls(Box::new(tls)));
    }

    /// Sends a PLAIN `<auth/>` and returns the answer up to `</success>` or `</failure>`.
    pub async fn auth_plain(&mut self, user: &str, password: &str) -> String {
        let credentials = base64::engine::general_purpose::STANDARD
            .encode(format!("\0{user}\0{password}").as_bytes());
        self.send(format!(
            "<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{credentials}</auth>"
        ))
        .await;
        self.read_until_any(&["</success>", "</failure>", "</stream:stream>"], STEP)
            .await
    }

    /// Binds `resource` and returns the answer up to the end of the IQ.
    pub async fn bind(&mut self, resource: &str) -> String {
        self.send(format!(
            "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
             <resource>{resource}</resource></bind></iq>"
        ))
        .await;
        self.read_until("</iq>", STEP).await
    }

    /// Sends an XMPP ping to the server and returns the answer up to the end of the IQ.
    pub async fn ping(&mut self, id: &str) -> String {
        self.send(format!(
            "<iq type='get' id='{id}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
        ))
        .await;
        self.read_until("</iq>", STEP).await
    }
}
