//! The errors of the XML layer under the server (tokio-xmpp, rxml, xso, xmpp-parsers) that the
//! server has to tell apart, turned into one enum of its own, [`Upstream`].
//!
//! Why this matches *text*: tokio-xmpp reports a stream header it cannot accept, and rxml a
//! DOCTYPE or an over-long name, as plain `io::Error`s (kind `InvalidData`, or `UnexpectedEof`
//! for content before the header) whose message is the only thing that tells them apart; and
//! xmpp-parsers reports an `<auth>` naming a mechanism it does not know as
//! `xso::error::Error::Other` with a message. The dependencies give no typed error for these
//! cases. (xso's `Mismatch`, an element no stream element type matches, is typed, and is
//! classified here too so that all of it is in one place.)
//!
//! So every string matched here has a unit test that makes the real dependency produce the error
//! from the bytes a client would send and checks the classification: a dependency upgrade that
//! rewords a message fails a test instead of quietly changing which stream error a client gets.
//!
//! Only the classification lives here. Which stream error each case earns is decided where the
//! error is read (`negotiation.rs` for the stream header, `errors.rs` for elements, `auth.rs` for
//! `<auth>`), because one upstream error can mean different things in different places.

use std::io;

/// An error of the XML layer, as far as the server cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Upstream {
    /// xso: a well-formed element that no stream element type matches (not a stanza and not a
    /// known nonza).
    UnknownElement,
    /// rxml: a name, attribute value or reference longer than its token limit (8 KiB). rxml
    /// reports it as restricted XML, but it is a size limit, not a forbidden XML feature.
    TooLong,
    /// rxml: a DOCTYPE, a comment or a processing instruction (RFC 6120 §11.1).
    RestrictedXml,
    /// tokio-xmpp: a root element other than `<stream:stream>` in the streams namespace.
    NotStreamHeader,
    /// tokio-xmpp: a stream header without `version`, or with a version other than 1.0.
    UnsupportedVersion,
    /// tokio-xmpp: text or an end tag where the stream header should be, or the end of the
    /// input before it. (rxml 0.14 refuses all of these itself, as malformed XML, before
    /// tokio-xmpp sees them; this is for a version that lets them through.)
    BeforeStreamHeader,
    /// Any other XML the layer refuses.
    NotWellFormed,
    /// xmpp-parsers: an `<auth>` whose `mechanism` it has no name for (DIGEST-MD5, say).
    UnknownMechanism,
    /// xmpp-parsers: a presence whose `<show>` is not one of away, chat, dnd, xa (RFC 6121
    /// §4.7.2.1); go-xmpp sends an empty `<show></show>`.
    InvalidShow,
}

/// What `error`, from reading a client's stream header or its elements, is; `None` for an error
/// of the transport itself (a reset connection, a TLS failure, a timeout).
pub(super) fn classify_read(error: &io::Error) -> Option<Upstream> {
    let mismatch = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<xso::error::FromEventsError>())
        .is_some_and(|inner| matches!(inner, xso::error::FromEventsError::Mismatch { .. }));
    if mismatch {
        return Some(Upstream::UnknownElement);
    }
    let text = error.to_string();
    match error.kind() {
        io::ErrorKind::InvalidData => Some(if text.contains("long name or reference") {
            Upstream::TooLong
        } else if text.contains("restricted xml") {
            Upstream::RestrictedXml
        } else if text.contains("unknown stream header") {
            Upstream::NotStreamHeader
        } else if text.contains("stream version") || text.contains("`version`") {
            Upstream::UnsupportedVersion
        } else {
            Upstream::NotWellFormed
        }),
        // tokio-xmpp's kind for text or an end tag where the header should be; a real end of
        // file has the same kind and a message that also ends in "before stream header".
        io::ErrorKind::UnexpectedEof if text.contains("before stream header") => {
            Some(Upstream::BeforeStreamHeader)
        }
        _ => None,
    }
}

/// What `error`, from parsing a complete element, is; `None` for any parse error the server
/// does not tell apart from others.
pub(super) fn classify_parse(error: &xso::error::Error) -> Option<Upstream> {
    let text = error.to_string();
    if text.contains("'mechanism'") {
        Some(Upstream::UnknownMechanism)
    } else if text.contains("Invalid value for show") {
        Some(Upstream::InvalidShow)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    //! Each test makes tokio-xmpp (with rxml and xso under it) read what a client would send,
    //! exactly as a connection does, and checks how the error it gives is classified.

    use futures::StreamExt;
    use tokio::io::BufReader;
    use tokio_xmpp::parsers::ns;
    use tokio_xmpp::parsers::stream_features::StreamFeatures;
    use tokio_xmpp::xmlstream::{
        accept_stream, ReadError, StreamHeader, Timeouts, XmlStream, XmppStreamElement,
    };

    use super::*;

    const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
        xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

    /// The error tokio-xmpp returns when it reads `bytes` as a client's stream header.
    async fn header_error(bytes: &str) -> io::Error {
        let io = BufReader::new(tokio::io::join(bytes.as_bytes(), tokio::io::sink()));
        match accept_stream(io, ns::JABBER_CLIENT, Timeouts::default()).await {
            Ok(_) => panic!("the header was accepted: {bytes}"),
            Err(error) => error,
        }
    }

    /// The error tokio-xmpp returns for the first element after a good header, read as the
    /// server reads elements before login.
    async fn element_error(after_header: &str) -> ReadError {
        let input = format!("{HEADER}{after_header}");
        let io = BufReader::new(tokio::io::join(input.as_bytes(), tokio::io::sink()));
        let accepted = accept_stream(io, ns::JABBER_CLIENT, Timeouts::default())
            .await
            .expect("a good header");
        let mut stream: XmlStream<_, XmppStreamElement> = accepted
            .send_header(StreamHeader::default())
            .await
            .expect("our header is written")
            .send_features(&StreamFeatures::default())
            .await
            .expect("our features are written");
        match stream.next().await {
            Some(Err(error)) => error,
            Some(Ok(element)) => panic!("parsed {element:?} from {after_header}"),
            None => panic!("the stream ended quietly: {after_header}"),
        }
    }

    async fn hard_error(after_header: &str) -> io::Error {
        match element_error(after_header).await {
            ReadError::HardError(error) => error,
            _ => panic!("not a hard error: {after_header}"),
        }
    }

    #[tokio::test]
    async fn a_name_longer_than_the_token_limit_is_too_long() {
        let name = "a".repeat(9000);
        let error = hard_error(&format!("<{name}/>")).await;
        assert_eq!(classify_read(&error), Some(Upstream::TooLong), "{error}");
    }

    #[tokio::test]
    async fn a_comment_is_restricted_xml() {
        let error = hard_error("<!-- hello -->").await;
        assert_eq!(
            classify_read(&error),
            Some(Upstream::RestrictedXml),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_processing_instruction_before_the_header_is_restricted_xml() {
        let error = header_error("<?xml version='1.0'?><?evil x?><stream:stream/>").await;
        assert_eq!(
            classify_read(&error),
            Some(Upstream::RestrictedXml),
            "{error}"
        );
    }

    /// rxml does not parse a DOCTYPE at all, so it is malformed rather than restricted XML.
    #[tokio::test]
    async fn a_doctype_before_the_header_is_not_well_formed() {
        let error = header_error("<?xml version='1.0'?><!DOCTYPE x><stream:stream/>").await;
        assert_eq!(
            classify_read(&error),
            Some(Upstream::NotWellFormed),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_stanza_where_the_header_should_be_is_not_a_stream_header() {
        let error = header_error("<message xmlns='jabber:client'/>").await;
        assert_eq!(
            classify_read(&error),
            Some(Upstream::NotStreamHeader),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_header_of_another_version_is_an_unsupported_version() {
        let error = header_error(&HEADER.replace("version='1.0'>", "version='2.0'>")).await;
        assert_eq!(
            classify_read(&error),
            Some(Upstream::UnsupportedVersion),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_header_without_version_is_an_unsupported_version() {
        let error = header_error(&HEADER.replace(" version='1.0'>", ">")).await;
        assert_eq!(
            classify_read(&error),
            Some(Upstream::UnsupportedVersion),
            "{error}"
        );
    }

    /// tokio-xmpp's "… before stream header" errors cannot be produced from bytes today: rxml
    /// refuses text, an end tag or the end of the input before the root element first, as
    /// malformed XML. Either way the client is told `not-well-formed`; should rxml let these
    /// through one day, tokio-xmpp's message is the one classified instead.
    #[tokio::test]
    async fn content_or_the_end_of_input_before_the_header_is_malformed() {
        for input in ["hello", "</stream:stream>", "<?xml version='1.0'?>", ""] {
            let error = header_error(input).await;
            assert!(
                matches!(
                    classify_read(&error),
                    Some(Upstream::NotWellFormed | Upstream::BeforeStreamHeader)
                ),
                "{input:?}: {error}"
            );
        }
    }

    #[tokio::test]
    async fn mismatched_tags_are_not_well_formed() {
        let error = hard_error("<message xmlns='jabber:client'></iq>").await;
        assert_eq!(
            classify_read(&error),
            Some(Upstream::NotWellFormed),
            "{error}"
        );
    }

    #[tokio::test]
    async fn an_element_of_no_known_kind_is_an_unknown_element() {
        let error = hard_error("<unknown xmlns='urn:example'/>").await;
        assert_eq!(
            classify_read(&error),
            Some(Upstream::UnknownElement),
            "{error}"
        );
    }

    #[tokio::test]
    async fn an_auth_with_a_mechanism_xmpp_parsers_does_not_name_is_an_unknown_mechanism() {
        let auth = "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='DIGEST-MD5'/>";
        let ReadError::ParseError(error) = element_error(auth).await else {
            panic!("not a parse error");
        };
        assert_eq!(
            classify_parse(&error),
            Some(Upstream::UnknownMechanism),
            "{error}"
        );
    }

    #[tokio::test]
    async fn an_auth_with_a_known_mechanism_but_bad_data_is_not_an_unknown_mechanism() {
        let auth = "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>!!</auth>";
        let ReadError::ParseError(error) = element_error(auth).await else {
            panic!("not a parse error");
        };
        assert_eq!(classify_parse(&error), None, "{error}");
    }

    #[tokio::test]
    async fn a_presence_with_an_empty_or_unknown_show_is_an_invalid_show() {
        for show in ["<show></show>", "<show/>", "<show>online</show>"] {
            let presence = format!("<presence>{show}<status></status></presence>");
            let ReadError::ParseError(error) = element_error(&presence).await else {
                panic!("not a parse error: {presence}");
            };
            assert_eq!(
                classify_parse(&error),
                Some(Upstream::InvalidShow),
                "{error}"
            );
        }
        let ReadError::ParseError(error) =
            element_error("<presence><priority>high</priority></presence>").await
        else {
            panic!("not a parse error");
        };
        assert_eq!(classify_parse(&error), None, "{error}");
    }

    #[test]
    fn a_transport_error_is_not_classified() {
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(classify_read(&reset), None);
    }
}
