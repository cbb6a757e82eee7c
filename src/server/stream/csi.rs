//! XEP-0352 client state indication, and the element type of a bound session's stream.
//!
//! A client tells the server `<inactive/>` when its user is not looking (a phone in a pocket)
//! and `<active/>` when they are again. While it is inactive, the server holds back presence
//! updates (available and unavailable presence; XEP-0352 §5 leaves what to hold to the server,
//! and Prosody's `mod_csi_simple` holds these too), keeping only the latest one of each sender,
//! and delivers everything else (messages, IQs, subscription requests, errors) at once. On
//! `<active/>` the kept updates go out, in the order they arrived. This matters here: the bot
//! updates its presence with live readings, and each update would wake the phone.
//!
//! At most `ServerLimits::max_held_presences` senders are kept; one more sends them all at once
//! (bounded memory, as Prosody's `csi_queue_size`). Held presence is not written, so stream
//! management does not count it until it is.
//!
//! tokio-xmpp's stream element type has no CSI variant, so the session's stream reads
//! [`SessionElement`]: the two CSI nonzas, or whatever tokio-xmpp's fallible element reads.

use tokio_xmpp::jid::Jid;
use tokio_xmpp::parsers::csi::{Active, Inactive};
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::presence::Type as PresenceType;
use tokio_xmpp::xmlstream::FallibleStreamElement;
use tokio_xmpp::Stanza;
use xso::error::{Error, FromEventsError};
use xso::fromxml::FallibleBuilder;
use xso::{FromEventsBuilder, FromXml};

/// A top-level element of a bound session's stream.
// As large as tokio-xmpp's element, which it wraps; boxing would cost an allocation per stanza.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(super) enum SessionElement {
    /// A stanza or another nonza, parsed or not, as tokio-xmpp reads it.
    Stream(FallibleStreamElement),
    /// XEP-0352 `<active/>`.
    Active,
    /// XEP-0352 `<inactive/>`.
    Inactive,
    /// A CSI element that does not parse.
    InvalidCsi(Error),
}

/// Builds a [`SessionElement`] from the parser's events.
#[allow(clippy::large_enum_variant)] // As tokio-xmpp's builder, which it wraps.
pub(super) enum SessionElementBuilder {
    Active(FallibleBuilder<<Active as FromXml>::Builder, Error>),
    Inactive(FallibleBuilder<<Inactive as FromXml>::Builder, Error>),
    Stream(<FallibleStreamElement as FromXml>::Builder),
}

impl FromEventsBuilder for SessionElementBuilder {
    type Output = SessionElement;

    fn feed(
        &mut self,
        ev: tokio_xmpp::minidom::rxml::Event,
        ctx: &xso::Context,
    ) -> Result<Option<SessionElement>, Error> {
        Ok(match self {
            Self::Active(builder) => builder.feed(ev, ctx)?.map(|parsed| match parsed {
                Ok(Active) => SessionElement::Active,
                Err(error) => SessionElement::InvalidCsi(error),
            }),
            Self::Inactive(builder) => builder.feed(ev, ctx)?.map(|parsed| match parsed {
                Ok(Inactive) => SessionElement::Inactive,
                Err(error) => SessionElement::InvalidCsi(error),
            }),
            Self::Stream(builder) => builder.feed(ev, ctx)?.map(SessionElement::Stream),
        })
    }
}

impl FromXml for SessionElement {
    type Builder = SessionElementBuilder;

    fn from_events(
        qname: tokio_xmpp::minidom::rxml::QName,
        attrs: tokio_xmpp::minidom::rxml::AttrMap,
        ctx: &xso::Context,
    ) -> Result<Self::Builder, FromEventsError> {
        if qname.0 == ns::CSI {
            match qname.1.as_str() {
                "active" => {
                    return <Result<Active, Error>>::from_events(qname, attrs, ctx)
                        .map(SessionElementBuilder::Active)
                }
                "inactive" => {
                    return <Result<Inactive, Error>>::from_events(qname, attrs, ctx)
                        .map(SessionElementBuilder::Inactive)
                }
                _ => {}
            }
        }
        FallibleStreamElement::from_events(qname, attrs, ctx).map(SessionElementBuilder::Stream)
    }
}

/// A session's client state and the presence held back while it is inactive.
#[derive(Debug, Default)]
pub(super) struct ClientState {
    inactive: bool,
    /// The latest held presence of each sender, in the order they arrived, still in the box the
    /// hub sent it in (unboxing would copy each, and reboxing allocate).
    #[allow(clippy::vec_box)]
    held: Vec<Box<Stanza>>,
}

/// What to do with a stanza for the client.
#[derive(Debug)]
pub(super) enum Filtered {
    /// Write it now.
    Send(Box<Stanza>),
    /// Held back until the client is active.
    Held,
    /// Too many senders held: write all of these now, in order.
    #[allow(clippy::vec_box)]
    Flush(Vec<Box<Stanza>>),
}

/// The sender of a presence update that an inactive client does not need at once; `None` for
/// anything else.
fn update_from(stanza: &Stanza) -> Option<Option<&Jid>> {
    match stanza {
        Stanza::Presence(presence)
            if matches!(
                presence.type_,
                PresenceType::None | PresenceType::Unavailable
            ) =>
        {
            Some(presence.from.as_ref())
        }
        _ => None,
    }
}

// The held stanzas stay in the hub's boxes (see `held`).
#[allow(clippy::vec_box)]
impl ClientState {
    /// `<inactive/>`.
    pub(super) fn inactive(&mut self) {
        self.inactive = true;
    }

    /// `<active/>`: the held presence, to write now.
    pub(super) fn active(&mut self) -> Vec<Box<Stanza>> {
        self.inactive = false;
        self.take_held()
    }

    /// The held presence, for a session whose connection ends.
    pub(super) fn take_held(&mut self) -> Vec<Box<Stanza>> {
        std::mem::take(&mut self.held)
    }

    /// Whether any presence is held.
    #[cfg(test)]
    pub(super) fn holds(&self) -> bool {
        !self.held.is_empty()
    }

    /// Decides about a stanza for the client: held if the client is inactive and it is a
    /// presence update (see the module documentation). The stanza stays in its box.
    pub(super) fn filter(&mut self, stanza: Box<Stanza>, max: usize) -> Filtered {
        if !self.inactive {
            return Filtered::Send(stanza);
        }
        let Some(sender) = update_from(&stanza) else {
            return Filtered::Send(stanza);
        };
        let same = self
            .held
            .iter()
            .position(|held| update_from(held).is_some_and(|from| from == sender));
        if let Some(at) = same {
            // Only the latest counts; it takes its place at the end, where it arrived.
            self.held.remove(at);
        } else if self.held.len() >= max {
            let mut all = self.take_held();
            all.push(stanza);
            return Filtered::Flush(all);
        }
        self.held.push(stanza);
        Filtered::Held
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;
    use tokio_xmpp::parsers::message::Message;
    use tokio_xmpp::xmlstream::{accept_stream, Timeouts, XmlStream, XmppStreamElement};

    use tokio_xmpp::parsers::presence::Presence;

    use super::*;

    fn presence_from(from: &str, show: &str) -> Box<Stanza> {
        let mut presence = Presence::available();
        presence.from = Some(Jid::new(from).unwrap());
        presence.set_status("", show);
        Box::new(presence.into())
    }

    fn describe(stanza: &Stanza) -> String {
        match stanza {
            Stanza::Presence(p) => format!(
                "{} {}",
                p.from.as_ref().map(|j| j.to_string()).unwrap_or_default(),
                p.statuses.values().next().cloned().unwrap_or_default()
            ),
            Stanza::Message(_) => "message".into(),
            Stanza::Iq(_) => "iq".into(),
        }
    }

    #[test]
    fn an_active_client_gets_everything_at_once() {
        let mut state = ClientState::default();
        let got = state.filter(presence_from("bot@localhost/x", "21.5"), 8);
        assert!(matches!(got, Filtered::Send(_)));
    }

    #[test]
    fn an_inactive_client_gets_messages_at_once_and_only_the_latest_presence_per_sender_later() {
        let mut state = ClientState::default();
        state.inactive();
        for reading in ["21.5", "21.6"] {
            let got = state.filter(presence_from("bot@localhost/x", reading), 8);
            assert!(matches!(got, Filtered::Held));
        }
        assert!(matches!(
            state.filter(presence_from("bob@localhost/y", "away"), 8),
            Filtered::Held
        ));
        let message = Message::chat(None).with_body(Default::default(), "alert".into());
        assert!(matches!(
            state.filter(Box::new(message.into()), 8),
            Filtered::Send(stanza) if matches!(*stanza, Stanza::Message(_))
        ));
        // A subscription request is not an update: it goes at once.
        let mut request = Presence::new(PresenceType::Subscribe);
        request.from = Some(Jid::new("carol@localhost").unwrap());
        assert!(matches!(
            state.filter(Box::new(request.into()), 8),
            Filtered::Send(_)
        ));
        // The bot's newest reading arrived last.
        assert!(matches!(
            state.filter(presence_from("bot@localhost/x", "21.7"), 8),
            Filtered::Held
        ));
        let flushed: Vec<String> = state.active().iter().map(|s| describe(s)).collect();
        assert_eq!(flushed, ["bob@localhost/y away", "bot@localhost/x 21.7"]);
        assert!(!state.holds());
        assert!(matches!(
            state.filter(presence_from("bot@localhost/x", "21.8"), 8),
            Filtered::Send(_)
        ));
    }

    #[test]
    fn one_sender_too_many_sends_everything_held() {
        let mut state = ClientState::default();
        state.inactive();
        for n in 0..3 {
            let got = state.filter(presence_from(&format!("u{n}@localhost/r"), "on"), 3);
            assert!(matches!(got, Filtered::Held));
        }
        let Filtered::Flush(all) = state.filter(presence_from("u3@localhost/r", "on"), 3) else {
            panic!("expected a flush");
        };
        let senders: Vec<String> = all.iter().map(|s| describe(s)).collect();
        assert_eq!(
            senders,
            [
                "u0@localhost/r on",
                "u1@localhost/r on",
                "u2@localhost/r on",
                "u3@localhost/r on"
            ]
        );
        assert!(!state.holds());
    }

    /// Reads `xml` as the top-level elements of a client's stream.
    async fn read(xml: &str) -> Vec<SessionElement> {
        let (mut client, server) = tokio::io::duplex(4096);
        let header = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
            xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";
        client
            .write_all(format!("{header}{xml}</stream:stream>").as_bytes())
            .await
            .unwrap();
        let server = tokio::io::BufReader::new(server);
        let accepted = accept_stream(server, ns::JABBER_CLIENT, Timeouts::default())
            .await
            .unwrap();
        let mut stream: XmlStream<_, SessionElement> = accepted
            .send_header(Default::default())
            .await
            .unwrap()
            .send_features(&Default::default())
            .await
            .unwrap();
        let mut elements = Vec::new();
        while let Some(Ok(element)) = stream.next().await {
            elements.push(element);
        }
        elements
    }

    #[tokio::test]
    async fn the_session_stream_reads_csi_nonzas_and_everything_else_as_before() {
        let elements = read(
            "<inactive xmlns='urn:xmpp:csi:0'/><active xmlns='urn:xmpp:csi:0'/>\
             <r xmlns='urn:xmpp:sm:3'/><message to='bob@localhost'><body>hi</body></message>",
        )
        .await;
        assert!(
            matches!(elements[0], SessionElement::Inactive),
            "{elements:?}"
        );
        assert!(
            matches!(elements[1], SessionElement::Active),
            "{elements:?}"
        );
        assert!(
            matches!(
                elements[2],
                SessionElement::Stream(FallibleStreamElement::Ok(XmppStreamElement::SM(_)))
            ),
            "{elements:?}"
        );
        assert!(
            matches!(
                elements[3],
                SessionElement::Stream(FallibleStreamElement::Ok(XmppStreamElement::Stanza(_)))
            ),
            "{elements:?}"
        );
        assert_eq!(elements.len(), 4);
    }
}
