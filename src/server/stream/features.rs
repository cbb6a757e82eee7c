//! The stream features as they go on the wire: only the features that apply, never an empty
//! `<mechanisms/>`.
//!
//! # Why a filter on the transport
//!
//! The features are built as xmpp-parsers' `StreamFeatures` everywhere (the phases add what they
//! offer to it) and sent with tokio-xmpp's responder, `PendingFeaturesSend::send_features`, the
//! only public way to turn an accepted stream into an `XmlStream` (`XmlStream::wrap` is
//! private). But `StreamFeatures` serialises its `sasl_mechanisms` field always, as an empty
//! `<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>` when there are none: before TLS,
//! where nothing may be offered yet, and after SASL, where RFC 6120 §6.4.6 forbids the element
//! ("the receiving entity MUST NOT offer the SASL feature again"). Clients that take the
//! element's presence for an offer (xmpp.js) then try to authenticate a second time, find no
//! mechanism and give up.
//!
//! So the transport of each stream is wrapped in a [`FeaturesFilter`] when the client's header
//! is accepted. tokio-xmpp writes our stream header and flushes it, then writes the features and
//! flushes them (`send_features`: one `start_send_xso`, one `flush`). The filter passes the
//! header through, collects what is written up to the next flush, and writes in its place the
//! same bytes without an empty `<mechanisms/>`; after that it passes everything through. The
//! filter relies on those two flushes; the tests in this file fail if tokio-xmpp ever writes
//! the features in pieces or serialises the empty element differently, rather than let an empty
//! `<mechanisms/>` slip back onto the wire.
//!
//! Removing the exact bytes of an empty element is safe because the bytes are our own
//! serialisation: `<` cannot occur in an attribute value or in text of it, so those bytes can
//! only be the element itself, and a `<mechanisms>` with mechanisms in it is left alone.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, ReadBuf};

/// How tokio-xmpp starts the features element (the `stream` prefix is declared on our header).
const FEATURES_START: &[u8] = b"<stream:features";

/// The serialisations of an empty SASL `<mechanisms/>` that are removed from the features.
const EMPTY_MECHANISMS: [&[u8]; 2] = [
    b"<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>",
    b"<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'></mechanisms>",
];

/// A stream's transport that writes the features without an empty `<mechanisms/>` (see the
/// module documentation). Reads pass through untouched.
#[derive(Debug)]
pub(super) struct FeaturesFilter<Io> {
    io: Io,
    state: State,
}

#[derive(Debug)]
enum State {
    /// Our stream header is being written: writes pass through until it is flushed.
    Header,
    /// After the header's flush: what is written is collected until the next flush.
    Collecting(Vec<u8>),
    /// The cleaned features, written up to `written`.
    Draining { bytes: Vec<u8>, written: usize },
    /// The features are out: writes pass through.
    Done,
}

impl<Io> FeaturesFilter<Io> {
    /// Wraps the transport of a stream whose header has not been answered yet.
    pub(super) fn new(io: Io) -> Self {
        Self {
            io,
            state: State::Header,
        }
    }
}

/// `written` without an empty `<mechanisms/>` when it is the features element; anything else
/// (a stream error sent instead of the features) as it is.
fn without_empty_mechanisms(mut written: Vec<u8>) -> Vec<u8> {
    if !written.starts_with(FEATURES_START) {
        return written;
    }
    for empty in EMPTY_MECHANISMS {
        if let Some(at) = written
            .windows(empty.len())
            .position(|window| window == empty)
        {
            written.drain(at..at + empty.len());
        }
    }
    written
}

impl<Io: AsyncWrite + Unpin> FeaturesFilter<Io> {
    /// Writes what is left of the cleaned features; `Done` once all of it is written.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let State::Draining { bytes, written } = &mut self.state {
            if *written == bytes.len() {
                self.state = State::Done;
                break;
            }
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for FeaturesFilter<Io> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        match &mut this.state {
            State::Collecting(collected) => {
                collected.extend_from_slice(buf);
                Poll::Ready(Ok(buf.len()))
            }
            State::Header | State::Draining { .. } | State::Done => {
                Pin::new(&mut this.io).poll_write(cx, buf)
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let State::Collecting(collected) = &mut this.state {
            let bytes = without_empty_mechanisms(std::mem::take(collected));
            this.state = State::Draining { bytes, written: 0 };
        }
        ready!(this.poll_drain(cx))?;
        ready!(Pin::new(&mut this.io).poll_flush(cx))?;
        if let State::Header = this.state {
            this.state = State::Collecting(Vec::new());
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if matches!(self.state, State::Collecting(_) | State::Draining { .. }) {
            ready!(self.as_mut().poll_flush(cx))?;
        }
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl<Io: AsyncRead + Unpin> AsyncRead for FeaturesFilter<Io> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<Io: AsyncBufRead + Unpin> AsyncBufRead for FeaturesFilter<Io> {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        Pin::new(&mut self.get_mut().io).poll_fill_buf(cx)
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        Pin::new(&mut self.get_mut().io).consume(amt)
    }
}

#[cfg(test)]
mod tests {
    //! tokio-xmpp's responder over a transport that records each flush, so that what the
    //! filter relies on is checked against the dependency itself.

    use std::borrow::Cow;

    use tokio::io::{AsyncWriteExt, BufReader};
    use tokio_xmpp::parsers::bind::BindFeature;
    use tokio_xmpp::parsers::ns;
    use tokio_xmpp::parsers::starttls::StartTls;
    use tokio_xmpp::parsers::stream_features::StreamFeatures;
    use tokio_xmpp::xmlstream::{accept_stream, StreamHeader, Timeouts, XmppStreamElement};

    use super::*;

    const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
        xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

    /// A duplex end that also keeps the bytes of each flush apart.
    struct Recorder {
        io: tokio::io::DuplexStream,
        pending: Vec<u8>,
        flushes: Vec<String>,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.get_mut().pending.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            if !this.pending.is_empty() {
                let bytes = std::mem::take(&mut this.pending);
                this.flushes
                    .push(String::from_utf8(bytes).expect("tokio-xmpp writes UTF-8"));
            }
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.poll_flush(cx)
        }
    }

    impl AsyncRead for Recorder {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
        }
    }

    /// Answers a client header with `features` the way the server does, through the filter
    /// when `filtered`; returns what reached the transport at each flush.
    async fn answer(features: &StreamFeatures, filtered: bool) -> Vec<String> {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        client.write_all(HEADER.as_bytes()).await.expect("written");
        let mut recorder = BufReader::new(Recorder {
            io: server,
            pending: Vec::new(),
            flushes: Vec::new(),
        });
        let header = || StreamHeader {
            from: Some(Cow::Borrowed("localhost")),
            to: None,
            id: Some(Cow::Borrowed("abc")),
        };
        if filtered {
            let io = FeaturesFilter::new(&mut recorder);
            let accepted = accept_stream(io, ns::JABBER_CLIENT, Timeouts::tight())
                .await
                .expect("a header");
            let pending = accepted.send_header(header()).await.expect("sent");
            let _stream = pending
                .send_features::<XmppStreamElement>(features)
                .await
                .expect("sent");
        } else {
            let accepted = accept_stream(&mut recorder, ns::JABBER_CLIENT, Timeouts::tight())
                .await
                .expect("a header");
            let pending = accepted.send_header(header()).await.expect("sent");
            let _stream = pending
                .send_features::<XmppStreamElement>(features)
                .await
                .expect("sent");
        }
        let recorder = recorder.into_inner();
        assert!(recorder.pending.is_empty(), "written but not flushed");
        recorder.flushes
    }

    /// Features large enough to overflow tokio-xmpp's write buffer many times over.
    fn large_features() -> StreamFeatures {
        let mut features = StreamFeatures {
            bind: Some(BindFeature { required: true }),
            ..Default::default()
        };
        for i in 0..2000 {
            features.others.push(
                tokio_xmpp::minidom::Element::builder("x", "urn:example:padding")
                    .append(i.to_string())
                    .build(),
            );
        }
        features
    }

    #[tokio::test]
    async fn tokio_xmpp_flushes_the_header_and_then_the_whole_features_at_once() {
        for features in [StreamFeatures::default(), large_features()] {
            let flushes = answer(&features, false).await;
            assert_eq!(flushes.len(), 2, "{flushes:?}");
            assert!(
                flushes[0].starts_with("<?xml version='1.0'"),
                "{}",
                flushes[0]
            );
            assert!(flushes[0].ends_with("version='1.0'>"), "{}", flushes[0]);
            assert!(
                flushes[1].starts_with("<stream:features>"),
                "{}",
                flushes[1]
            );
            assert!(flushes[1].ends_with("</stream:features>"), "{}", flushes[1]);
        }
    }

    #[tokio::test]
    async fn tokio_xmpp_serialises_no_mechanisms_as_an_empty_element_the_filter_knows() {
        let flushes = answer(&StreamFeatures::default(), false).await;
        let features = &flushes[1];
        assert!(
            EMPTY_MECHANISMS.iter().any(|empty| features
                .as_bytes()
                .windows(empty.len())
                .any(|w| w == *empty)),
            "{features}"
        );
    }

    #[tokio::test]
    async fn the_features_before_tls_carry_only_starttls() {
        let features = StreamFeatures {
            starttls: Some(StartTls { required: true }),
            ..Default::default()
        };
        let flushes = answer(&features, true).await;
        assert_eq!(
            flushes[1],
            "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/>\
             </starttls></stream:features>"
        );
    }

    #[tokio::test]
    async fn offered_mechanisms_are_left_alone() {
        let features = StreamFeatures {
            sasl_mechanisms: ["PLAIN".to_string()].into_iter().collect(),
            ..Default::default()
        };
        let flushes = answer(&features, true).await;
        assert_eq!(
            flushes[1],
            "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>\
             <mechanism>PLAIN</mechanism></mechanisms></stream:features>"
        );
    }

    #[tokio::test]
    async fn large_features_lose_only_the_empty_mechanisms() {
        let features = large_features();
        let unfiltered = answer(&features, false).await;
        let filtered = answer(&features, true).await;
        assert_eq!(filtered[0], unfiltered[0], "the header passes through");
        assert!(
            !filtered[1].contains("<mechanisms"),
            "an empty <mechanisms/> left"
        );
        let mut expected = unfiltered[1].clone();
        for empty in EMPTY_MECHANISMS {
            expected = expected.replace(std::str::from_utf8(empty).expect("ASCII"), "");
        }
        assert_eq!(filtered[1], expected);
    }

    #[test]
    fn anything_but_the_features_is_written_as_it_is() {
        let error =
            b"<stream:error><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>".to_vec();
        assert_eq!(without_empty_mechanisms(error.clone()), error);
    }
}
