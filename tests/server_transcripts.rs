//! The bundled server over real sockets, written as transcripts: "alice sends …, bob receives …".
//! Needs nothing but the crate: the server runs in the test's process on a port the kernel picks
//! (`support::server::InProcessServer`), except in the two transcripts about the binary itself:
//! the log line a user reads after a login, and offline messages surviving a SIGKILL.

mod support;

use std::time::{Duration, Instant};

use support::chat::ChatClient;
use support::server::{limits, InProcessServer, ServerProcess, XmppEndpoint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::{Message, MessageType};
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::parsers::roster::{Roster, Subscription};
use tokio_xmpp::Stanza;

const WAIT: Duration = Duration::from_secs(10);
/// Long enough to be sure nothing is coming, short enough for the suite.
const QUIET: Duration = Duration::from_millis(300);

async fn server_with(users: &[&str]) -> InProcessServer {
    let server = InProcessServer::start().await;
    for user in users {
        server.add_user(user, &format!("{user}-secret"));
    }
    server
}

async fn login(server: &impl XmppEndpoint, jid: &str) -> ChatClient {
    let user = jid.split('@').next().unwrap_or_default();
    ChatClient::login(
        jid,
        &format!("{user}-secret"),
        server.port(),
        server.ca_file(),
    )
    .await
}

fn chat(to: &str, body: &str) -> Message {
    Message::chat(Some(Jid::new(to).unwrap())).with_body(Default::default(), body.into())
}

fn bare(jid: &str) -> BareJid {
    BareJid::new(jid).unwrap()
}

fn body(message: &Message) -> &str {
    message
        .bodies
        .values()
        .next()
        .map(String::as_str)
        .unwrap_or("")
}

/// The next message (skipping presence and IQs) within `WAIT`.
async fn next_message(client: &mut ChatClient) -> Option<Message> {
    let deadline = Instant::now() + WAIT;
    while let Some(stanza) = client.next_stanza(deadline - Instant::now()).await {
        if let Stanza::Message(m) = stanza {
            return Some(m);
        }
    }
    None
}

/// Sends `iq` and returns the matching result or error.
async fn request(client: &mut ChatClient, iq: Iq) -> Iq {
    let id = iq.id().to_string();
    client.send_stanza(iq).await;
    let deadline = Instant::now() + WAIT;
    while let Some(stanza) = client.next_stanza(deadline - Instant::now()).await {
        if let Stanza::Iq(reply) = stanza {
            if reply.id() == id && matches!(reply, Iq::Result { .. } | Iq::Error { .. }) {
                return reply;
            }
        }
    }
    panic!("no answer to IQ {id}");
}

/// Raw bytes to the plain-text port; everything the server answers until it closes (or
/// [`WAIT`] passes).
async fn raw_exchange(port: u16, bytes: &[u8]) -> String {
    let mut tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    // The server may close before reading everything; that is part of what is tested.
    let _ = tcp.write_all(bytes).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, tcp.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requires_starttls_before_anything_else() {
    let server = server_with(&[]).await;
    let answer = raw_exchange(
        server.port,
        format!("{HEADER}<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGEAYg==</auth>").as_bytes(),
    ).await;
    assert!(
        answer.contains("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/>"),
        "{answer}"
    );
    assert!(answer.contains("<policy-violation"), "{answer}");
    assert!(
        !answer.contains("<mechanism>"),
        "mechanisms offered before TLS: {answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_host_is_refused() {
    let server = server_with(&[]).await;
    let answer = raw_exchange(
        server.port,
        HEADER
            .replace("to='localhost'", "to='example.org'")
            .as_bytes(),
    )
    .await;
    assert!(answer.contains("<host-unknown"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restricted_xml_is_refused() {
    let server = server_with(&[]).await;
    for (input, condition) in [
        (
            format!("<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'b'>]>{HEADER}"),
            "",
        ),
        (format!("{HEADER}<!-- comment -->"), "<restricted-xml"),
        (format!("{HEADER}<?pi data?>"), "<restricted-xml"),
        (
            format!("{HEADER}<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'></b>"),
            "<not-well-formed",
        ),
        (format!("{HEADER}<banana/>"), "<unsupported-stanza-type"),
    ] {
        let answer = raw_exchange(server.port, input.as_bytes()).await;
        // A DOCTYPE before the stream header ends the connection before any header is sent.
        if condition.is_empty() {
            assert!(!answer.contains("<stream:features"), "{answer}");
        } else {
            assert!(answer.contains(condition), "{input} → {answer}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_element_before_authentication_is_a_policy_violation() {
    let server = server_with(&[]).await;
    let huge = format!(
        "{HEADER}<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls' junk='{}'/>",
        "x".repeat(20_000)
    );
    let answer = raw_exchange(server.port, huge.as_bytes()).await;
    assert!(answer.contains("<policy-violation"), "{answer}");
    assert!(answer.contains("larger than 10000 bytes"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_nesting_is_a_policy_violation() {
    let server = server_with(&[]).await;
    let deep = format!("{HEADER}{}", "<a>".repeat(10_000));
    let answer = raw_exchange(server.port, deep.as_bytes()).await;
    assert!(answer.contains("<policy-violation"), "{answer}");
    assert!(answer.contains("nested deeper"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_connections_are_closed_after_the_timeout() {
    let server =
        InProcessServer::start_with(limits(|l| l.auth_timeout = Duration::from_secs(1))).await;
    let mut tcp = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(WAIT, tcp.read_to_end(&mut buf)).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_in_with_scram_plus_and_binds_a_resource() {
    // Through the binary: the log line is what a user reads.
    let server = tokio::task::block_in_place(|| {
        let server = ServerProcess::start();
        server.add_user("alice", "alice-secret");
        server
    });
    let _alice = login(&server, "alice@localhost/laptop").await;
    let process = server.process.as_ref().expect("running");
    tokio::task::block_in_place(|| process.wait_log("session started", 1, WAIT));
    let log = server.log();
    // tokio-xmpp on TLS 1.3 uses channel binding when the server offers it.
    assert!(log.contains("mechanism=SCRAM-SHA-256-PLUS"), "{log}");
    assert!(log.contains("jid=alice@localhost/laptop"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_reach_full_and_bare_jids_and_unknown_accounts_bounce() {
    let server = server_with(&["alice", "bob"]).await;
    let mut alice = login(&server, "alice@localhost/laptop").await;
    let mut bob = login(&server, "bob@localhost/phone").await;

    alice
        .send(chat("bob@localhost/phone", "to the phone"))
        .await;
    let got = next_message(&mut bob).await.expect("bob gets the message");
    assert_eq!(body(&got), "to the phone");
    assert_eq!(
        got.from,
        Some(Jid::new("alice@localhost/laptop").unwrap()),
        "server stamps from"
    );

    alice.send(chat("bob@localhost", "to the account")).await;
    let got = next_message(&mut bob)
        .await
        .expect("bare JID reaches the only resource");
    assert_eq!(body(&got), "to the account");

    alice.send(chat("nobody@localhost", "hello?")).await;
    let bounce = next_message(&mut alice).await.expect("an error back");
    assert_eq!(bounce.type_, MessageType::Error);
    assert!(String::from(&Element::from(bounce)).contains("service-unavailable"));

    alice.send(chat("carol@example.org", "far away")).await;
    let bounce = next_message(&mut alice).await.expect("an error back");
    assert!(String::from(&Element::from(bounce)).contains("remote-server-not-found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_jid_messages_go_to_the_highest_priority_resource() {
    let server = server_with(&["alice", "bob"]).await;
    let mut alice = login(&server, "alice@localhost/laptop").await;
    let mut low = login(&server, "bob@localhost/low").await;
    let mut high = login(&server, "bob@localhost/high").await;
    // Priorities: login sent priority 0; raise one resource to 5.
    let mut presence = Presence::available();
    presence.priority = tokio_xmpp::parsers::presence::Priority(5);
    high.send_stanza(presence).await;
    // Wait until the server has processed it: the resource sees its own presence echoed.
    loop {
        match high.next_stanza(WAIT).await {
            Some(Stanza::Presence(p)) if p.priority.0 == 5 => break,
            Some(_) => {}
            None => panic!("no presence echo"),
        }
    }
    alice.send(chat("bob@localhost", "who gets this?")).await;
    let got = next_message(&mut high)
        .await
        .expect("the priority-5 resource gets it");
    assert_eq!(body(&got), "who gets this?");
    // The other resource gets nothing.
    let deadline = Instant::now() + QUIET;
    while let Some(stanza) = low
        .next_stanza(deadline.saturating_duration_since(Instant::now()))
        .await
    {
        assert!(
            !matches!(stanza, Stanza::Message(_)),
            "low-priority resource got a message"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_messages_survive_a_restart_and_a_kill_and_arrive_once() {
    // Through the binary: a process is what SIGKILL ends.
    let mut server = tokio::task::block_in_place(|| {
        let server = ServerProcess::start();
        for user in ["alice", "bob"] {
            server.add_user(user, &format!("{user}-secret"));
        }
        server
    });
    for (round, stop) in ["restart", "kill -9"].iter().enumerate() {
        {
            let mut alice = login(&server, "alice@localhost/laptop").await;
            for n in 1..=3 {
                alice
                    .send(chat("bob@localhost", &format!("round {round} message {n}")))
                    .await;
            }
            // A ping answered means the three messages before it were processed (one hub, in order).
            let ping = Iq::from_get("sync", tokio_xmpp::parsers::ping::Ping);
            let _ = request(&mut alice, ping).await;
        }
        tokio::task::block_in_place(|| {
            if *stop == "kill -9" {
                server.kill9();
            }
            server.restart();
        });
        let mut bob = login(&server, "bob@localhost/phone").await;
        for n in 1..=3 {
            let got = next_message(&mut bob)
                .await
                .unwrap_or_else(|| panic!("message {n} after {stop}"));
            assert_eq!(body(&got), format!("round {round} message {n}"));
            assert!(
                String::from(&Element::from(got)).contains("urn:xmpp:delay"),
                "offline messages carry a delay stamp"
            );
        }
        // Exactly once: nothing more now, and nothing after logging in again. The client uses
        // stream management, and what it has not acknowledged when it closes goes back to
        // offline storage (XEP-0198 §5): two pings answered mean it has answered the server's
        // ack request that came after the messages, and the ack has reached the server.
        for id in ["acked-1", "acked-2"] {
            let ping = Iq::from_get(id, tokio_xmpp::parsers::ping::Ping);
            let _ = request(&mut bob, ping).await;
        }
        drop(bob);
        let mut bob = login(&server, "bob@localhost/tablet").await;
        let deadline = Instant::now() + QUIET;
        while let Some(stanza) = bob
            .next_stanza(deadline.saturating_duration_since(Instant::now()))
            .await
        {
            assert!(
                !matches!(stanza, Stanza::Message(_)),
                "delivered twice after {stop}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roster_and_subscriptions_reach_both_and_back() {
    let server = server_with(&["alice", "bob"]).await;
    let mut alice = login(&server, "alice@localhost/laptop").await;
    let mut bob = login(&server, "bob@localhost/phone").await;
    for client in [&mut alice, &mut bob] {
        let roster = request(
            client,
            Iq::from_get(
                "r0",
                Roster {
                    ver: None,
                    items: vec![],
                },
            ),
        )
        .await;
        assert!(matches!(roster, Iq::Result { .. }), "{roster:?}");
    }

    // alice asks to see bob's presence; bob approves.
    let mut subscribe = Presence::new(PresenceType::Subscribe);
    subscribe.to = Some(Jid::new("bob@localhost").unwrap());
    alice.send_stanza(subscribe).await;
    loop {
        match bob.next_stanza(WAIT).await {
            Some(Stanza::Presence(p)) if p.type_ == PresenceType::Subscribe => {
                assert_eq!(p.from.map(|f| f.to_bare()), Some(bare("alice@localhost")));
                break;
            }
            Some(_) => {}
            None => panic!("bob never saw the request"),
        }
    }
    let mut approve = Presence::new(PresenceType::Subscribed);
    approve.to = Some(Jid::new("alice@localhost").unwrap());
    bob.send_stanza(approve).await;

    // alice's roster push ends with subscription "to", and bob's presence arrives.
    let mut saw_to = false;
    let mut saw_presence = false;
    let deadline = Instant::now() + WAIT;
    while !(saw_to && saw_presence) {
        match alice
            .next_stanza(deadline.saturating_duration_since(Instant::now()))
            .await
        {
            Some(Stanza::Iq(Iq::Set { payload, id, .. })) => {
                if let Ok(roster) = Roster::try_from(payload) {
                    let item = &roster.items[0];
                    assert_eq!(item.jid, bare("bob@localhost"));
                    saw_to |= item.subscription == Subscription::To;
                }
                alice
                    .send_stanza(Iq::Result {
                        from: None,
                        to: None,
                        id,
                        payload: None,
                    })
                    .await;
            }
            Some(Stanza::Presence(p))
                if p.type_ == PresenceType::None
                    && p.from.as_ref().map(|f| f.to_bare()) == Some(bare("bob@localhost")) =>
            {
                saw_presence = true
            }
            Some(_) => {}
            None => panic!("alice: roster push to={saw_to}, presence={saw_presence}"),
        }
    }

    // The state is stored: a roster get says the same.
    let roster = request(
        &mut alice,
        Iq::from_get(
            "r1",
            Roster {
                ver: None,
                items: vec![],
            },
        ),
    )
    .await;
    let Iq::Result {
        payload: Some(payload),
        ..
    } = roster
    else {
        panic!("{roster:?}")
    };
    let roster = Roster::try_from(payload).unwrap();
    assert_eq!(roster.items.len(), 1);
    assert_eq!(roster.items[0].subscription, Subscription::To);

    // When bob goes offline, alice sees it.
    drop(bob);
    let deadline = Instant::now() + WAIT;
    loop {
        match alice
            .next_stanza(deadline.saturating_duration_since(Instant::now()))
            .await
        {
            Some(Stanza::Presence(p)) if p.type_ == PresenceType::Unavailable => break,
            Some(_) => {}
            None => panic!("alice never saw bob go offline"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhandled_requests_get_service_unavailable_and_ping_is_answered() {
    let server = server_with(&["alice"]).await;
    let mut alice = login(&server, "alice@localhost/laptop").await;
    let server_jid = Jid::new("localhost").unwrap();
    let ping = Iq::from_get("p1", tokio_xmpp::parsers::ping::Ping).with_to(server_jid.clone());
    assert!(matches!(request(&mut alice, ping).await, Iq::Result { .. }));
    let unknown = Iq::Get {
        from: None,
        to: Some(server_jid),
        id: "u1".into(),
        payload: Element::builder("query", "urn:example:unknown").build(),
    };
    let answer = request(&mut alice, unknown).await;
    let Iq::Error { error, .. } = answer else {
        panic!("{answer:?}")
    };
    assert_eq!(
        error.defined_condition,
        tokio_xmpp::parsers::stanza_error::DefinedCondition::ServiceUnavailable
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_login_with_the_same_resource_replaces_the_first() {
    let server = server_with(&["alice"]).await;
    let mut first = login(&server, "alice@localhost/same").await;
    let _second = login(&server, "alice@localhost/same").await;
    assert!(
        first.wait_disconnected(WAIT).await,
        "first session was not closed"
    );
    // What the replaced session is told (RFC 6120 §4.9.3.3): a raw session binds `raw`.
    let mut raw_first = RawSession::login(&server, "alice", "SCRAM-SHA-256")
        .await
        .unwrap();
    let _raw_second = RawSession::login(&server, "alice", "SCRAM-SHA-256")
        .await
        .unwrap();
    let goodbye = raw_first.read_until("</stream:stream>").await;
    assert!(goodbye.contains("<conflict"), "{goodbye}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_tells_sessions_and_exits_cleanly() {
    let mut server = server_with(&["alice"]).await;
    let mut alice = login(&server, "alice@localhost/laptop").await;
    let mut raw = RawSession::login(&server, "alice", "SCRAM-SHA-256")
        .await
        .unwrap();
    server.stop().await; // asserts that `server::run` returned Ok
    assert!(alice.wait_disconnected(WAIT).await);
    let goodbye = raw.read_until("</stream:stream>").await;
    assert!(goodbye.contains("<system-shutdown"), "{goodbye}");
}

/// A client that speaks raw XML after a real STARTTLS and SASL login with a chosen mechanism:
/// for the malformed input that typed clients cannot produce.
struct RawSession {
    io: tokio::io::BufStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
}

impl RawSession {
    /// Logs in as `user` with `mechanism` and binds resource `raw`. `Err` carries the SASL
    /// failure condition.
    async fn login(
        server: &InProcessServer,
        user: &str,
        mechanism: &str,
    ) -> Result<RawSession, String> {
        use futures::{SinkExt, StreamExt};
        use mqtt2xmpp::xmpp_connect::{dns_config, Connector};
        use sasl::client::mechanisms::{Plain, Scram};
        use sasl::client::Mechanism as _;
        use sasl::common::scram::{Sha1, Sha256};
        use sasl::common::{ChannelBinding, Credentials};
        use tokio_xmpp::connect::ServerConnector;
        use tokio_xmpp::parsers::sasl::{Auth, Mechanism, Nonza, Response};
        use tokio_xmpp::xmlstream::{Timeouts, XmppStreamElement};

        let jid = Jid::new(&format!("{user}@localhost")).unwrap();
        let password = format!("{user}-secret");
        let dns = dns_config("localhost", Some(&server.address())).unwrap();
        let tls = mqtt2xmpp::tls::client_config(Some(&server.ca_file)).unwrap();
        let connector = Connector::new(
            dns,
            tls,
            jid.to_bare(),
            mqtt2xmpp::secret::Secret::new(&password),
        );
        let (pending, binding) = connector
            .connect(&jid, "jabber:client", Timeouts::tight())
            .await
            .expect("TLS connection");
        let (features, mut stream) = pending
            .recv_features::<XmppStreamElement>()
            .await
            .expect("features");
        // "SCRAM-SHA-256-downgrade": SCRAM-SHA-256 with the "y,," header of a downgraded client.
        let (mechanism, plus_binding) = match mechanism.strip_suffix("-downgrade") {
            Some(plain) => (plain, ChannelBinding::Unsupported),
            None if mechanism.ends_with("-PLUS") => (mechanism, binding),
            None => (mechanism, ChannelBinding::None),
        };
        assert!(
            features.sasl_mechanisms.contains(mechanism),
            "{mechanism} not offered: {:?}",
            features.sasl_mechanisms
        );
        let creds = Credentials::default()
            .with_username(user)
            .with_password(password)
            .with_channel_binding(plus_binding);
        let mut client: Box<dyn sasl::client::Mechanism + Send> = match mechanism {
            "PLAIN" => Box::new(Plain::from_credentials(creds).unwrap()),
            "SCRAM-SHA-1" | "SCRAM-SHA-1-PLUS" => {
                Box::new(Scram::<Sha1>::from_credentials(creds).unwrap())
            }
            _ => Box::new(Scram::<Sha256>::from_credentials(creds).unwrap()),
        };
        let name: Mechanism = mechanism.parse().unwrap();
        stream
            .send(&XmppStreamElement::Sasl(Nonza::Auth(Auth {
                mechanism: name,
                data: client.initial(),
            })))
            .await
            .unwrap();
        loop {
            match stream.next().await {
                Some(Ok(XmppStreamElement::Sasl(Nonza::Challenge(c)))) => {
                    let data = client.response(&c.data).map_err(|e| format!("{e:?}"))?;
                    stream
                        .send(&XmppStreamElement::Sasl(Nonza::Response(Response { data })))
                        .await
                        .unwrap();
                }
                Some(Ok(XmppStreamElement::Sasl(Nonza::Success(s)))) => {
                    if mechanism.starts_with("SCRAM") {
                        client
                            .success(&s.data)
                            .map_err(|e| format!("server signature: {e:?}"))?;
                    }
                    break;
                }
                Some(Ok(XmppStreamElement::Sasl(Nonza::Failure(f)))) => {
                    return Err(format!("{:?}", f.defined_condition));
                }
                other => panic!("unexpected during SASL: {other:?}"),
            }
        }
        // Restart the stream and bind, in raw XML.
        let mut raw = RawSession {
            io: stream.into_inner(),
        };
        raw.write(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
             xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>",
        )
        .await;
        raw.read_until("</stream:features>").await;
        raw.write("<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>raw</resource></bind></iq>").await;
        let bound = raw.read_until("</iq>").await;
        assert!(
            bound.contains("alice@localhost/raw") || bound.contains("@localhost/raw"),
            "{bound}"
        );
        Ok(raw)
    }

    async fn write(&mut self, xml: &str) {
        use tokio::io::AsyncWriteExt;
        let _ = self.io.write_all(xml.as_bytes()).await;
        let _ = self.io.flush().await;
    }

    /// Reads until `needle` appears or the connection closes; returns what was read.
    async fn read_until(&mut self, needle: &str) -> String {
        use tokio::io::AsyncReadExt;
        let mut text = String::new();
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + WAIT;
        while !text.contains(needle) {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(remaining, self.io.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => text.push_str(&String::from_utf8_lossy(&buf[..n])),
                _ => break,
            }
        }
        text
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sasl_mechanism_logs_in_and_wrong_passwords_fail() {
    let server = server_with(&["alice", "bob"]).await;
    for mechanism in [
        "SCRAM-SHA-256-PLUS",
        "SCRAM-SHA-1-PLUS",
        "SCRAM-SHA-256",
        "SCRAM-SHA-1",
        "PLAIN",
    ] {
        let session = RawSession::login(&server, "alice", mechanism).await;
        assert!(session.is_ok(), "{mechanism}: {:?}", session.err());
    }
    // A wrong password: not-authorized, for every mechanism.
    server.add_user("mallory", "right-password");
    for mechanism in ["SCRAM-SHA-256", "PLAIN"] {
        let refused = RawSession::login(&server, "mallory", mechanism).await;
        assert_eq!(
            refused.err().as_deref(),
            Some("NotAuthorized"),
            "{mechanism}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_binding_downgrade_is_refused() {
    // "y,,": the client could bind but believes the server cannot. The server offered -PLUS,
    // so somebody stripped it: RFC 5802 §6 says fail.
    use sasl::client::mechanisms::Scram;
    use sasl::client::Mechanism as _;
    use sasl::common::scram::Sha256;
    use sasl::common::{ChannelBinding, Credentials};
    let server = server_with(&["alice"]).await;
    let creds = Credentials::default()
        .with_username("alice")
        .with_password("alice-secret")
        .with_channel_binding(ChannelBinding::Unsupported);
    let initial = Scram::<Sha256>::from_credentials(creds).unwrap().initial();
    assert!(initial.starts_with(b"y,,"));
    let refused = RawSession::login(&server, "alice", "SCRAM-SHA-256-downgrade").await;
    assert_eq!(refused.err().as_deref(), Some("NotAuthorized"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_stanzas_get_the_error_the_rfc_names() {
    let server = server_with(&["alice"]).await;
    let mut raw = RawSession::login(&server, "alice", "SCRAM-SHA-256")
        .await
        .unwrap();
    // A malformed JID in `to`: a stanza error, and the session goes on.
    raw.write("<message to='a@b@c' id='m1' type='chat'><body>x</body></message>")
        .await;
    let answer = raw.read_until("</message>").await;
    assert!(
        answer.contains("type='error'") && answer.contains("<jid-malformed"),
        "{answer}"
    );
    raw.write("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let answer = raw.read_until("</iq>").await;
    assert!(
        answer.contains("id='p1'") && answer.contains("type='result'"),
        "{answer}"
    );
    // A forged sender ends the stream.
    raw.write("<message from='bob@localhost/x' to='alice@localhost'><body>x</body></message>")
        .await;
    let answer = raw.read_until("</stream:stream>").await;
    assert!(answer.contains("<invalid-from"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_iq_without_id_or_an_unknown_element_ends_the_stream() {
    let server = server_with(&["alice"]).await;
    let mut raw = RawSession::login(&server, "alice", "SCRAM-SHA-256")
        .await
        .unwrap();
    raw.write("<iq type='get'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let answer = raw.read_until("</stream:stream>").await;
    assert!(answer.contains("<invalid-xml"), "{answer}");

    let mut raw = RawSession::login(&server, "alice", "SCRAM-SHA-256")
        .await
        .unwrap();
    raw.write("<banana xmlns='jabber:client'/>").await;
    let answer = raw.read_until("</stream:stream>").await;
    assert!(answer.contains("<unsupported-stanza-type"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_stanza_after_login_is_a_policy_violation() {
    let server = InProcessServer::start_with(limits(|l| l.max_stanza_bytes = 20_000)).await;
    server.add_user("alice", "alice-secret");
    let mut raw = RawSession::login(&server, "alice", "SCRAM-SHA-256")
        .await
        .unwrap();
    raw.write(&format!(
        "<message to='alice@localhost'><body>{}</body></message>",
        "x".repeat(30_000)
    ))
    .await;
    let answer = raw.read_until("</stream:stream>").await;
    assert!(
        answer.contains("<policy-violation") && answer.contains("larger than 20000 bytes"),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_wait_until_one_closes() {
    let server = InProcessServer::start_with(limits(|l| l.max_connections = 2)).await;
    let port = server.port;
    let open = || async move {
        let mut tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        tcp.write_all(HEADER.as_bytes()).await.unwrap();
        tcp
    };
    async fn read_some(tcp: &mut TcpStream, timeout: Duration) -> String {
        let mut buf = [0u8; 4096];
        match tokio::time::timeout(timeout, tcp.read(&mut buf)).await {
            Ok(Ok(n)) => String::from_utf8_lossy(&buf[..n]).into_owned(),
            _ => String::new(),
        }
    }
    let mut first = open().await;
    let mut second = open().await;
    assert!(read_some(&mut first, WAIT).await.contains("<stream:stream"));
    assert!(read_some(&mut second, WAIT)
        .await
        .contains("<stream:stream"));
    // The kernel accepts the third TCP connection, but the server does not serve it yet.
    let mut third = open().await;
    assert_eq!(
        read_some(&mut third, QUIET).await,
        "",
        "served over the cap"
    );
    drop(first);
    assert!(
        read_some(&mut third, WAIT).await.contains("<stream:stream"),
        "not served after a slot freed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_from_one_address_are_answered_ever_more_slowly() {
    let server = server_with(&["alice"]).await;
    server.add_user("mallory", "right-password");
    let mut took = Vec::new();
    for _ in 0..2 {
        let started = Instant::now();
        let refused = RawSession::login(&server, "mallory", "SCRAM-SHA-256").await;
        assert_eq!(refused.err().as_deref(), Some("NotAuthorized"));
        took.push(started.elapsed());
    }
    // Defaults: 1 s after the first failure, 2 s after the second.
    assert!(took[0] >= Duration::from_millis(950), "{took:?}");
    assert!(took[1] >= Duration::from_millis(1950), "{took:?}");
    // A success resets the delay for that address.
    assert!(RawSession::login(&server, "alice", "SCRAM-SHA-256")
        .await
        .is_ok());
    let started = Instant::now();
    let _ = RawSession::login(&server, "mallory", "SCRAM-SHA-256").await;
    assert!(
        started.elapsed() < Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_clients_are_pinged_then_disconnected() {
    let server =
        InProcessServer::start_with(limits(|l| l.idle_ping_after = Duration::from_secs(1))).await;
    server.add_user("alice", "alice-secret");
    let mut raw = RawSession::login(&server, "alice", "SCRAM-SHA-256")
        .await
        .unwrap();
    let started = Instant::now();
    let ping = raw.read_until("urn:xmpp:ping").await;
    assert!(ping.contains("type='get'"), "{ping}");
    // Not answering: the server gives up after another idle period.
    let end = raw.read_until("</stream:stream>").await;
    assert!(end.contains("<connection-timeout"), "{end}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(6),
        "{took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carbons_copy_chats_to_the_other_resources() {
    use tokio_xmpp::parsers::carbons::Enable;
    let server = server_with(&["alice", "bob"]).await;
    let mut laptop = login(&server, "alice@localhost/laptop").await;
    let mut phone = login(&server, "alice@localhost/phone").await;
    let mut bob = login(&server, "bob@localhost/desk").await;
    for client in [&mut laptop, &mut phone] {
        let enabled = request(client, Iq::from_set("c1", Enable)).await;
        assert!(matches!(enabled, Iq::Result { .. }), "{enabled:?}");
    }
    // bob → alice/laptop: the phone gets a <received/> copy.
    bob.send(chat("alice@localhost/laptop", "hi laptop")).await;
    assert_eq!(body(&next_message(&mut laptop).await.unwrap()), "hi laptop");
    let copy = String::from(&Element::from(next_message(&mut phone).await.unwrap()));
    assert!(
        copy.contains("<received xmlns='urn:xmpp:carbons:2'>") && copy.contains("hi laptop"),
        "{copy}"
    );
    // alice/laptop → bob: the phone gets a <sent/> copy.
    laptop.send(chat("bob@localhost", "hi bob")).await;
    assert_eq!(body(&next_message(&mut bob).await.unwrap()), "hi bob");
    let copy = String::from(&Element::from(next_message(&mut phone).await.unwrap()));
    assert!(
        copy.contains("<sent xmlns='urn:xmpp:carbons:2'>") && copy.contains("hi bob"),
        "{copy}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_storage_session_and_version_are_served() {
    let server = server_with(&["alice"]).await;
    let mut raw = RawSession::login(&server, "alice", "SCRAM-SHA-256")
        .await
        .unwrap();
    raw.write("<iq type='set' id='s1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>")
        .await;
    let answer = raw.read_until("</iq>").await;
    assert!(
        answer.contains("id='s1'") && answer.contains("type='result'"),
        "{answer}"
    );
    raw.write(
        "<iq type='set' id='p1'><query xmlns='jabber:iq:private'>\
         <storage xmlns='storage:bookmarks'><conference jid='room@muc.localhost' name='Lab'/></storage>\
         </query></iq>",
    )
    .await;
    let answer = raw.read_until("</iq>").await;
    assert!(
        answer.contains("id='p1'") && answer.contains("type='result'"),
        "{answer}"
    );
    raw.write("<iq type='get' id='p2'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query></iq>")
        .await;
    let answer = raw.read_until("</iq>").await;
    assert!(
        answer.contains("room@muc.localhost") && answer.contains("name='Lab'"),
        "{answer}"
    );
    raw.write("<iq type='get' id='v1' to='localhost'><query xmlns='jabber:iq:version'/></iq>")
        .await;
    let answer = raw.read_until("</iq>").await;
    assert!(answer.contains("<name>mqtt2xmpp</name>"), "{answer}");
    raw.write("<iq type='get' id='d1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        .await;
    let answer = raw.read_until("</iq>").await;
    for feature in [
        "urn:xmpp:ping",
        "urn:xmpp:carbons:2",
        "jabber:iq:private",
        "msgoffline",
    ] {
        assert!(answer.contains(feature), "{feature} missing: {answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_sender_is_slowed_to_the_byte_rate() {
    let server = InProcessServer::start_with(limits(|l| {
        l.bytes_per_second = 4000;
        l.burst_bytes = 4000;
    }))
    .await;
    server.add_user("alice", "alice-secret");
    let mut raw = RawSession::login(&server, "alice", "SCRAM-SHA-256")
        .await
        .unwrap();
    // 12 000 bytes beyond the burst: about 3 s at 4000 B/s, then the ping is answered.
    let started = Instant::now();
    raw.write(&format!(
        "<message to='nobody-at-all@example.org' type='headline'><body>{}</body></message>\
         <iq type='get' id='after'><ping xmlns='urn:xmpp:ping'/></iq>",
        "x".repeat(16_000)
    ))
    .await;
    let answer = raw.read_until("id='after'").await;
    let took = started.elapsed();
    assert!(answer.contains("id='after'"), "{answer}");
    assert!(took >= Duration::from_millis(2500), "not slowed: {took:?}");
    assert!(took < Duration::from_secs(8), "{took:?}");
}
