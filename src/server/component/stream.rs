//! The XML stream of an external component (XEP-0114 §3), read and written with rxml directly.
//!
//! Why not tokio-xmpp's responder stream, which the client connections use: it refuses a stream
//! header without `version='1.0'` (a component's header has none, XEP-0114 §3; slixmpp's
//! `ComponentXMPP` sends none) unless tokio-xmpp is built with its `component` feature, and that
//! feature switches xmpp-parsers' stanza namespace from `jabber:client` to
//! `jabber:component:accept` for the whole program, which would break every client connection.
//!
//! So this reader takes every element in the component namespace, at any depth, as the same
//! element in `jabber:client` (the stanzas of XEP-0114 are the client's stanzas under another
//! namespace), which lets xmpp-parsers read them; the writer does the reverse. Stanzas that
//! name `jabber:client` themselves are accepted too, as Prosody does.
//!
//! Everything read is cancel-safe: the element being built lives in the stream, not in a future,
//! so [`ComponentStream::next`] can lose a `select!` at any point without losing input.

use std::borrow::Cow;
use std::io;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncWrite, AsyncWriteExt};
use tokio_xmpp::minidom::rxml::writer::{SimpleNamespaces, TrackNamespace};
use tokio_xmpp::minidom::rxml::{self, Namespace};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::Message;
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::presence::Presence;
use tokio_xmpp::parsers::stream_error::{DefinedCondition as StreamCondition, StreamError};
use tokio_xmpp::Stanza;
use xso::{AsXml, FromEventsBuilder, FromXml};

use crate::server::limits::Meter;

/// What the component's stream header asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Header {
    /// The `to` attribute: the component's domain, as it says.
    pub to: Option<String>,
}

/// One top-level element read from a component.
#[derive(Debug)]
pub(super) enum Incoming {
    /// `<handshake>` with its text (XEP-0114 §3).
    Handshake(String),
    /// A stanza that xmpp-parsers could read.
    Stanza(Box<Stanza>),
    /// A message, presence or IQ that it could not read; the element, for an error reply.
    Invalid(Element, String),
    /// The component's own stream error.
    StreamError,
    /// Any other element.
    Other(String),
}

/// Why reading stopped.
#[derive(Debug)]
pub(super) enum ReadFailure {
    /// The component closed its stream (or the connection) cleanly.
    Closed,
    /// Input the server refuses, with the stream error to answer and its text.
    Refused(StreamCondition, String),
    /// The transport failed.
    Io(io::Error),
}

/// A component's stream. See the module documentation.
pub(super) struct ComponentStream<Io> {
    reader: rxml::AsyncReader<Io>,
    writer: rxml::writer::Encoder<SimpleNamespaces>,
    /// The top-level element being read, if one has begun.
    building: Option<<Element as FromXml>::Builder>,
    meter: std::sync::Arc<Meter>,
    /// The `from` of our stream header when a stream error has to be sent before it.
    server_domain: String,
    /// Whether our stream header went out.
    header_sent: bool,
}

impl<Io: AsyncBufRead + AsyncWrite + Unpin> ComponentStream<Io> {
    /// A stream over `io`, whose reads `meter` limits, for a server of `server_domain`.
    pub fn new(io: Io, meter: std::sync::Arc<Meter>, server_domain: &str) -> Self {
        let mut writer = rxml::writer::Encoder::new();
        let tracker = writer.ns_tracker_mut();
        tracker.declare_fixed(
            Some(rxml::xml_ncname!("stream")),
            Namespace::from(ns::STREAM),
        );
        tracker.declare_fixed(None, Namespace::from(ns::COMPONENT_ACCEPT));
        Self {
            reader: rxml::AsyncReader::new(io),
            writer,
            building: None,
            meter,
            server_domain: server_domain.to_string(),
            header_sent: false,
        }
    }

    /// Reads the component's stream header.
    pub async fn read_header(&mut self) -> Result<Header, ReadFailure> {
        loop {
            match self.event().await? {
                rxml::Event::XmlDeclaration(..) => continue,
                rxml::Event::StartElement(_, (namespace, name), mut attrs) => {
                    if namespace != ns::STREAM || name != "stream" {
                        return Err(ReadFailure::Refused(
                            StreamCondition::InvalidNamespace,
                            format!("expected a stream header in the namespace {}", ns::STREAM),
                        ));
                    }
                    self.meter.element_done();
                    let to = attrs.remove(&Namespace::NONE, "to");
                    return Ok(Header { to });
                }
                _ => {
                    return Err(ReadFailure::Refused(
                        StreamCondition::NotWellFormed,
                        "expected a stream header".into(),
                    ))
                }
            }
        }
    }

    /// The next top-level element.
    pub async fn next(&mut self) -> Result<Incoming, ReadFailure> {
        let context = xso::Context::empty();
        loop {
            let event = self.event().await?;
            let event = to_client_namespace(event);
            let Some(builder) = self.building.as_mut() else {
                match event {
                    rxml::Event::StartElement(_, qname, attrs) => {
                        let builder = <Element as FromXml>::from_events(qname, attrs, &context)
                            .map_err(|_| {
                                ReadFailure::Refused(
                                    StreamCondition::InternalServerError,
                                    "cannot read an element".into(),
                                )
                            })?;
                        self.building = Some(builder);
                        continue;
                    }
                    // The end of the stream.
                    rxml::Event::EndElement(_) => return Err(ReadFailure::Closed),
                    // Whitespace between elements (keepalives, RFC 6120 §4.6.1); rxml refuses
                    // other text at this level as not well-formed.
                    rxml::Event::Text(..) | rxml::Event::XmlDeclaration(..) => continue,
                }
            };
            match builder.feed(event, &context) {
                Ok(Some(element)) => {
                    self.building = None;
                    self.meter.element_done();
                    return Ok(classify(element));
                }
                Ok(None) => continue,
                Err(error) => {
                    return Err(ReadFailure::Refused(
                        StreamCondition::InvalidXml,
                        error.to_string(),
                    ))
                }
            }
        }
    }

    /// The next XML event, or why there is none.
    async fn event(&mut self) -> Result<rxml::Event, ReadFailure> {
        match self.reader.read().await {
            Ok(Some(event)) => Ok(event),
            Ok(None) => Err(ReadFailure::Closed),
            Err(error) => Err(self.read_error(error)),
        }
    }

    /// The stream error for a failed read (RFC 6120 §4.9.3), or the transport's error.
    fn read_error(&self, error: io::Error) -> ReadFailure {
        if let Some(exceeded) = self.meter.exceeded() {
            return ReadFailure::Refused(StreamCondition::PolicyViolation, exceeded.to_string());
        }
        let Some(xml) = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rxml::Error>())
        else {
            return match error.kind() {
                io::ErrorKind::UnexpectedEof => ReadFailure::Closed,
                _ => ReadFailure::Io(error),
            };
        };
        let text = xml.to_string();
        match xml {
            // rxml calls an over-long name or reference restricted XML too; it is a size limit.
            rxml::Error::RestrictedXml(what) if what.contains("long name") => {
                ReadFailure::Refused(StreamCondition::PolicyViolation, text)
            }
            rxml::Error::RestrictedXml(_) => {
                ReadFailure::Refused(StreamCondition::RestrictedXml, text)
            }
            _ => ReadFailure::Refused(StreamCondition::NotWellFormed, text),
        }
    }

    /// Sends our stream header (XEP-0114 §3: `from` the component's domain, and the stream id
    /// the handshake hashes).
    pub async fn send_header(&mut self, from: &str, id: &str) -> io::Result<()> {
        use xso::Item;
        let none = Namespace::NONE;
        let items = [
            Item::XmlDeclaration(rxml::XmlVersion::V1_0),
            Item::ElementHeadStart(
                Namespace::from(ns::STREAM),
                Cow::Borrowed(rxml::xml_ncname!("stream")),
            ),
            Item::Attribute(
                none.clone(),
                Cow::Borrowed(rxml::xml_ncname!("from")),
                Cow::Borrowed(from),
            ),
            Item::Attribute(
                none,
                Cow::Borrowed(rxml::xml_ncname!("id")),
                Cow::Borrowed(id),
            ),
            Item::ElementHeadEnd,
        ];
        let mut bytes = Vec::new();
        for item in items {
            self.encode(&item, &mut bytes)?;
        }
        self.header_sent = true;
        self.write(&bytes).await
    }

    /// Sends the empty `<handshake/>` that accepts the component.
    pub async fn send_handshake_accepted(&mut self) -> io::Result<()> {
        self.send_xso(&tokio_xmpp::parsers::component::Handshake::new())
            .await
    }

    /// Sends a stanza, in the component namespace.
    pub async fn send_stanza(&mut self, stanza: &Stanza) -> io::Result<()> {
        self.send_xso(stanza).await
    }

    /// Sends a stream error and the end of the stream (after our stream header, if it has not
    /// gone out yet: RFC 6120 §4.9.1.2), then shuts the transport down; gives up after 2 s (a
    /// peer that reads nothing must not hold the connection open).
    pub async fn fail(&mut self, condition: StreamCondition, text: &str) {
        let error = StreamError::new(condition, "en", text);
        let send = async {
            if !self.header_sent {
                let domain = self.server_domain.clone();
                let id = format!("{:016x}", rand::random::<u64>());
                self.send_header(&domain, &id).await?;
            }
            let mut bytes = Vec::new();
            for item in error.as_xml_iter().map_err(invalid_input)? {
                self.encode(&item.map_err(invalid_input)?, &mut bytes)?;
            }
            self.encode(&xso::Item::ElementFoot, &mut bytes)?;
            self.write(&bytes).await?;
            self.reader.inner_mut().shutdown().await
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), send).await;
    }

    /// Ends our stream, if it began (the component ended its own), and shuts the transport
    /// down.
    pub async fn close(&mut self) {
        let send = async {
            if self.header_sent {
                let mut bytes = Vec::new();
                self.encode(&xso::Item::ElementFoot, &mut bytes)?;
                self.write(&bytes).await?;
            }
            self.reader.inner_mut().shutdown().await
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), send).await;
    }

    async fn send_xso<T: AsXml>(&mut self, xso: &T) -> io::Result<()> {
        let mut bytes = Vec::new();
        for item in xso.as_xml_iter().map_err(invalid_input)? {
            let item = item.map_err(invalid_input)?;
            let item = match item {
                xso::Item::ElementHeadStart(namespace, name) if namespace == ns::JABBER_CLIENT => {
                    xso::Item::ElementHeadStart(Namespace::from(ns::COMPONENT_ACCEPT), name)
                }
                other => other,
            };
            self.encode(&item, &mut bytes)?;
        }
        self.write(&bytes).await
    }

    fn encode(&mut self, item: &xso::Item<'_>, bytes: &mut Vec<u8>) -> io::Result<()> {
        self.writer
            .encode(item.as_rxml_item(), bytes)
            .map_err(invalid_input)
    }

    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let io = self.reader.inner_mut();
        io.write_all(bytes).await?;
        io.flush().await
    }
}

fn invalid_input(error: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, error)
}

/// Reads an element of the component namespace as the same element in `jabber:client`.
fn to_client_namespace(event: rxml::Event) -> rxml::Event {
    match event {
        rxml::Event::StartElement(metrics, (namespace, name), attrs)
            if namespace == ns::COMPONENT_ACCEPT =>
        {
            rxml::Event::StartElement(metrics, (Namespace::from(ns::JABBER_CLIENT), name), attrs)
        }
        other => other,
    }
}

/// What a complete top-level element is.
fn classify(element: Element) -> Incoming {
    if element.ns() == ns::STREAM && element.name() == "error" {
        return Incoming::StreamError;
    }
    if element.ns() != ns::JABBER_CLIENT {
        return Incoming::Other(element.name().to_string());
    }
    let parsed = match element.name() {
        "handshake" => return Incoming::Handshake(element.text()),
        "message" => Message::try_from(element.clone()).map(Stanza::from),
        "presence" => Presence::try_from(element.clone()).map(Stanza::from),
        "iq" => Iq::try_from(element.clone()).map(Stanza::from),
        other => return Incoming::Other(other.to_string()),
    };
    match parsed {
        Ok(stanza) => Incoming::Stanza(Box::new(stanza)),
        Err(error) => Incoming::Invalid(element, error.to_string()),
    }
}

#[cfg(test)]
mod tests;
