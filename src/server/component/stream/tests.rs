//! The component stream over an in-memory pipe: the header of XEP-0114 §3 (no `version`), the
//! handshake, stanzas in the component namespace read as client stanzas and written back in
//! it, whitespace keepalives, and the stream errors for input the server refuses.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, DuplexStream};
use tokio_xmpp::parsers::message::Message;
use tokio_xmpp::parsers::stream_error::DefinedCondition as StreamCondition;
use tokio_xmpp::Stanza;

use super::*;
use crate::server::limits::{LimitedReader, Meter, ServerLimits};

type Server = ComponentStream<BufReader<LimitedReader<DuplexStream>>>;

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' \
    xmlns:stream='http://etherx.jabber.org/streams' to='gateway.localhost'>";

/// The server's end of a pipe, limited as a component connection is before its handshake, and
/// the component's end.
fn pair(limits: &ServerLimits) -> (Server, DuplexStream) {
    let (component, server) = tokio::io::duplex(64 * 1024);
    let meter = Meter::new(limits.max_preauth_bytes, limits);
    let io = BufReader::new(LimitedReader::new(
        server,
        meter.clone(),
        limits.bytes_per_second,
        limits.burst_bytes,
    ));
    (ComponentStream::new(io, meter, "localhost"), component)
}

/// Everything the server wrote until it closed its side.
async fn read_all(component: &mut DuplexStream) -> String {
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), component.read_to_end(&mut bytes))
        .await
        .expect("the server closes its side")
        .expect("a read");
    String::from_utf8(bytes).expect("UTF-8")
}

/// What the server wrote so far (at least something).
async fn read_some(component: &mut DuplexStream) -> String {
    let mut buffer = vec![0; 64 * 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), component.read(&mut buffer))
        .await
        .expect("the server writes")
        .expect("a read");
    String::from_utf8(buffer[..n].to_vec()).expect("UTF-8")
}

#[tokio::test]
async fn a_header_without_version_is_read_and_answered_with_our_header_and_the_stream_id() {
    let (mut server, mut component) = pair(&ServerLimits::default());
    component.write_all(HEADER.as_bytes()).await.unwrap();
    let header = server.read_header().await.unwrap();
    assert_eq!(header.to.as_deref(), Some("gateway.localhost"));
    server
        .send_header("gateway.localhost", "4f2a")
        .await
        .unwrap();
    let written = read_some(&mut component).await;
    assert!(written.starts_with("<?xml"), "{written}");
    for part in [
        "<stream:stream",
        "xmlns='jabber:component:accept'",
        "xmlns:stream='http://etherx.jabber.org/streams'",
        "from='gateway.localhost'",
        "id='4f2a'",
    ] {
        assert!(
            written.contains(part) || written.contains(&part.replace('\'', "\"")),
            "{part} in {written}"
        );
    }
    // XEP-0114 §3: no version, and no stream features follow.
    let header = &written[written.find("<stream:stream").unwrap()..];
    assert!(!header.contains("version"), "{written}");
    assert!(
        header.ends_with('>') && !header.contains("features"),
        "{written}"
    );
}

#[tokio::test]
async fn the_handshake_and_stanzas_in_the_component_namespace_are_read_as_client_stanzas() {
    let (mut server, mut component) = pair(&ServerLimits::default());
    let input = format!(
        "{HEADER}<handshake>AABBCC</handshake> \n\t\
         <message from='bot@gateway.localhost' to='alice@localhost' type='chat'>\
         <body>21 °C</body></message>\
         <message xmlns='jabber:client' from='gateway.localhost' to='alice@localhost'>\
         <body>explicit</body></message>\
         <presence from='gateway.localhost' to='alice@localhost' type='bogus'/>\
         <other xmlns='urn:example'/>"
    );
    component.write_all(input.as_bytes()).await.unwrap();
    server.read_header().await.unwrap();
    let Incoming::Handshake(token) = server.next().await.unwrap() else {
        panic!("not a handshake");
    };
    assert_eq!(token, "AABBCC");
    for expected in ["21 °C", "explicit"] {
        let Incoming::Stanza(stanza) = server.next().await.unwrap() else {
            panic!("not a stanza");
        };
        let Stanza::Message(message) = *stanza else {
            panic!("not a message");
        };
        assert_eq!(
            message.bodies.values().next().map(|b| b.as_str()),
            Some(expected)
        );
    }
    let Incoming::Invalid(element, _) = server.next().await.unwrap() else {
        panic!("an unreadable presence is handed back");
    };
    assert_eq!(element.name(), "presence");
    assert!(matches!(server.next().await.unwrap(), Incoming::Other(name) if name == "other"));
    // The component ends its stream.
    component.write_all(b"</stream:stream>").await.unwrap();
    assert!(matches!(server.next().await, Err(ReadFailure::Closed)));
}

#[tokio::test]
async fn stanzas_are_written_in_the_component_namespace_and_the_handshake_is_acknowledged() {
    let (mut server, mut component) = pair(&ServerLimits::default());
    server.send_header("gateway.localhost", "1").await.unwrap();
    server.send_handshake_accepted().await.unwrap();
    let message = Message::chat(Some("bot@gateway.localhost".parse().unwrap()))
        .with_body("en".into(), "hi".into());
    server.send_stanza(&Stanza::Message(message)).await.unwrap();
    server.close().await;
    let written = read_all(&mut component).await;
    assert!(
        written.contains("<handshake/>") || written.contains("<handshake></handshake>"),
        "{written}"
    );
    assert!(!written.contains("jabber:client"), "{written}");
    assert!(written.contains("<message"), "{written}");
    assert!(written.contains("<body"), "{written}");
    assert!(written.ends_with("</stream:stream>"), "{written}");
    // What was written is a well-formed component stream that parses back.
    let (mut reader, mut writer) = pair(&ServerLimits::default());
    writer.write_all(written.as_bytes()).await.unwrap();
    reader.read_header().await.unwrap();
    assert!(matches!(reader.next().await.unwrap(), Incoming::Handshake(t) if t.is_empty()));
    assert!(matches!(
        reader.next().await.unwrap(),
        Incoming::Stanza(stanza) if matches!(*stanza, Stanza::Message(_))
    ));
}

#[tokio::test]
async fn a_stream_error_is_sent_with_the_end_of_the_stream() {
    let (mut server, mut component) = pair(&ServerLimits::default());
    server.send_header("gateway.localhost", "1").await.unwrap();
    server
        .fail(StreamCondition::NotAuthorized, "wrong secret")
        .await;
    let written = read_all(&mut component).await;
    assert!(written.contains("<stream:error>"), "{written}");
    assert!(
        written.contains("<not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'"),
        "{written}"
    );
    assert!(written.contains(">wrong secret</text>"), "{written}");
    assert!(written.ends_with("</stream:stream>"), "{written}");
}

#[tokio::test]
async fn a_stream_error_before_our_header_comes_after_one_from_the_server() {
    let (mut server, mut component) = pair(&ServerLimits::default());
    server
        .fail(StreamCondition::ConnectionTimeout, "too slow")
        .await;
    let written = read_all(&mut component).await;
    let header = written.find("<stream:stream").expect("a header");
    let error = written.find("<stream:error>").expect("an error");
    assert!(header < error, "{written}");
    assert!(written.contains("from='localhost'"), "{written}");
    assert!(written.ends_with("</stream:stream>"), "{written}");
}

#[tokio::test]
async fn refused_input_gets_the_stream_error_rfc_6120_names() {
    let cases: [(&str, StreamCondition); 4] = [
        (
            "<stream:stream xmlns:stream='urn:wrong' to='x'>",
            StreamCondition::InvalidNamespace,
        ),
        // rxml does not parse a DOCTYPE at all (as for clients: `stream/mod.rs`).
        (
            "<?xml version='1.0'?><!DOCTYPE stream>",
            StreamCondition::NotWellFormed,
        ),
        (
            &format!("{HEADER}<!-- a comment -->"),
            StreamCondition::RestrictedXml,
        ),
        (
            &format!("{HEADER}<message><body>unclosed</message>"),
            StreamCondition::NotWellFormed,
        ),
    ];
    for (input, expected) in cases {
        let (mut server, mut component) = pair(&ServerLimits::default());
        component.write_all(input.as_bytes()).await.unwrap();
        let failure = match server.read_header().await {
            Err(failure) => failure,
            Ok(_) => loop {
                match server.next().await {
                    Ok(_) => continue,
                    Err(failure) => break failure,
                }
            },
        };
        match failure {
            ReadFailure::Refused(condition, _) => assert_eq!(condition, expected, "{input}"),
            other => panic!("{input}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn an_element_over_the_size_limit_is_a_policy_violation() {
    let limits = ServerLimits::default();
    let (mut server, mut component) = pair(&limits);
    component.write_all(HEADER.as_bytes()).await.unwrap();
    server.read_header().await.unwrap();
    let big = format!(
        "<handshake>{}</handshake>",
        "a".repeat(limits.max_preauth_bytes + 10)
    );
    let write = tokio::spawn(async move {
        let _ = component.write_all(big.as_bytes()).await;
        component
    });
    match server.next().await {
        Err(ReadFailure::Refused(StreamCondition::PolicyViolation, text)) => {
            assert!(text.contains("larger than"), "{text}")
        }
        other => panic!("{other:?}"),
    }
    drop(write);
}

#[tokio::test]
async fn reading_is_cancel_safe_an_element_split_across_reads_survives_a_lost_select() {
    let (mut server, mut component) = pair(&ServerLimits::default());
    component.write_all(HEADER.as_bytes()).await.unwrap();
    server.read_header().await.unwrap();
    component
        .write_all(b"<message to='alice@localhost'><body>first ha")
        .await
        .unwrap();
    // The read is abandoned mid-element, as a select! that another branch wins does.
    let abandoned = tokio::time::timeout(Duration::from_millis(50), server.next()).await;
    assert!(abandoned.is_err(), "nothing complete yet");
    component.write_all(b"lf</body></message>").await.unwrap();
    let Incoming::Stanza(stanza) = server.next().await.unwrap() else {
        panic!("not a stanza");
    };
    let Stanza::Message(message) = *stanza else {
        panic!("not a message");
    };
    assert_eq!(
        message.bodies.values().next().map(|b| b.as_str()),
        Some("first half")
    );
}
