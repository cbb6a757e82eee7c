//! Transcript tests of a connection, without sockets: the client's end of a `tokio::io::duplex`
//! pair on one side, the connection code on the other (see `harness.rs`), and behind it a real
//! hub thread on a database in a temporary directory. "alice sends …, the server answers …".

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::harness::{add_accounts, serve_from, tls_config, Start};
use super::ConnectionEnd;
use crate::server::hub::Hub;
use crate::server::limits::ServerLimits;
use crate::server::shared::ServerShared;
use crate::server::store::Store;
use crate::server::{database_path, driver};

/// How long a test waits for an answer before it fails with what it has read.
const WAIT: Duration = Duration::from_secs(10);

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";
const BIND: &str = "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
    <resource>phone</resource></bind></iq>";
const ROSTER_GET: &str = "<iq type='get' id='roster1'><query xmlns='jabber:iq:roster'/></iq>";
const TLS_EXPORTER: [u8; 32] = [9; 32];
/// `<auth>` for PLAIN with alice's password: base64("\0alice\0alice-secret").
const AUTH_ALICE: &str =
    "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAGFsaWNlLXNlY3JldA==</auth>";

/// A server for `localhost` with the accounts alice and bob (passwords `alice-secret`,
/// `bob-secret`), each on the other's roster with a mutual subscription.
struct Server {
    dir: tempfile::TempDir,
    shared: Arc<ServerShared>,
    shutdown: CancellationToken,
}

impl Server {
    fn new() -> Self {
        Self::with_limits(|_| {})
    }

    /// A server whose limits `change` adjusts.
    fn with_limits(change: impl FnOnce(&mut ServerLimits)) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let db = database_path(dir.path());
        let store = Store::open(&db).expect("the database");
        add_accounts(&store);
        let hub = Hub::new("localhost", store, crate::server::hub::registry::SERVICES)
            .expect("a valid domain");
        let (commands, inbox) = mpsc::channel(1024);
        // The thread ends when the last connection drops its handle on `shared`.
        std::thread::spawn(move || driver::drive_hub(hub, inbox));
        let limits = ServerLimits {
            login_failure_delay: Duration::ZERO,
            max_login_delay: Duration::ZERO,
            ..ServerLimits::default()
        };
        let mut limits = limits;
        change(&mut limits);
        let auth = Store::open(&db).expect("the database");
        let shared = ServerShared::new("localhost".into(), tls_config(), limits, commands, auth);
        Self {
            dir,
            shared: Arc::new(shared),
            shutdown: CancellationToken::new(),
        }
    }

    /// A client whose connection is served from `start` on.
    fn connect(&self, start: Start<'static>) -> Client {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let shared = self.shared.clone();
        let shutdown = self.shutdown.clone();
        let task = tokio::spawn(async move { serve_from(start, server, &shared, shutdown).await });
        Client {
            io: client,
            read: String::new(),
            task,
        }
    }

    /// A client of `username` after `<success/>`, bound to the resource `phone`, with what it
    /// read so far cleared.
    async fn bound(&self, username: &'static str) -> Client {
        let mut client = self.connect(Start::Session { username });
        client.send(HEADER).await;
        client.read_until("</stream:features>").await;
        client.send(BIND).await;
        client.read_until("</iq>").await;
        client.read.clear();
        client
    }

    /// The messages stored for `username` while offline, as XML.
    fn offline_messages(&self, username: &str) -> Vec<String> {
        let store = Store::open(database_path(self.dir.path())).expect("the database");
        let stored = store.offline_messages(username).expect("offline messages");
        stored.into_iter().map(|(_, xml)| xml).collect()
    }
}

/// The client's end of a connection, and what it has read from the server.
struct Client {
    io: DuplexStream,
    read: String,
    task: JoinHandle<Result<(), ConnectionEnd>>,
}

impl Client {
    async fn send(&mut self, xml: &str) {
        self.io
            .write_all(xml.as_bytes())
            .await
            .expect("the server reads");
    }

    /// Reads until what was read contains `needle`; returns all of it.
    async fn read_until(&mut self, needle: &str) -> &str {
        let read = async {
            while !self.read.contains(needle) {
                if self.read_some().await == 0 {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(WAIT, read).await;
        assert!(
            self.read.contains(needle),
            "expected {needle:?}; the server sent: {}",
            self.read
        );
        &self.read
    }

    /// Reads until the server closes its end; returns everything read.
    async fn read_to_end(&mut self) -> &str {
        let read = async { while self.read_some().await > 0 {} };
        tokio::time::timeout(WAIT, read)
            .await
            .unwrap_or_else(|_| panic!("the server did not close; it sent: {}", self.read));
        &self.read
    }

    async fn read_some(&mut self) -> usize {
        let mut buffer = [0; 4096];
        let n = self.io.read(&mut buffer).await.unwrap_or(0);
        self.read.push_str(&String::from_utf8_lossy(&buffer[..n]));
        n
    }

    /// How the connection ended, once it has.
    async fn end(self) -> Result<(), ConnectionEnd> {
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the connection ends")
            .expect("the connection task does not panic")
    }
}

/// The stream error condition in `xml`, if any.
fn stream_error(xml: &str) -> Option<&str> {
    let error = &xml[xml.find("<stream:error>")? + "<stream:error>".len()..];
    let name = &error[1..];
    name.find([' ', '/', '>']).map(|end| &name[..end])
}

mod sm;

#[tokio::test]
async fn starttls_is_offered_as_required_and_answered_with_proceed() {
    let server = Server::new();
    let mut client = server.connect(Start::Plain);
    client.send(HEADER).await;
    let features = client.read_until("</stream:features>").await;
    assert!(features.contains("from='localhost'"), "{features}");
    assert!(
        features
            .contains("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>"),
        "{features}"
    );
    assert!(
        !features.contains("<mechanism>"),
        "no SASL mechanism before TLS: {features}"
    );
    client
        .send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        .await;
    client
        .read_until("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'>")
        .await;
    assert!(client.end().await.is_ok(), "ready for the TLS handshake");
}

#[tokio::test]
async fn a_stanza_instead_of_starttls_ends_the_stream_with_policy_violation() {
    let server = Server::new();
    let mut client = server.connect(Start::Plain);
    client.send(HEADER).await;
    client.read_until("</stream:features>").await;
    client
        .send("<message to='bob@localhost'><body>in the clear</body></message>")
        .await;
    let answer = client.read_to_end().await;
    assert_eq!(stream_error(answer), Some("policy-violation"), "{answer}");
    assert!(answer.ends_with("</stream:stream>"), "{answer}");
    assert!(server.offline_messages("bob").is_empty());
}

#[tokio::test]
async fn a_bad_stream_header_gets_our_header_then_the_stream_error() {
    let cases = [
        ("<message xmlns='jabber:client'/>", "invalid-namespace"),
        (
            &*HEADER.replace("version='1.0'>", "version='2.0'>"),
            "unsupported-version",
        ),
        ("<?xml version='1.0'?><!-- hello -->", "restricted-xml"),
        ("<?xml version='1.0'?><!DOCTYPE x>", "not-well-formed"),
    ];
    let server = Server::new();
    for (header, condition) in cases {
        let mut client = server.connect(Start::Plain);
        client.send(header).await;
        let answer = client.read_to_end().await.to_string();
        // RFC 6120 §4.9.1.2: a header of our own first, so the client can parse the error.
        assert!(
            answer.starts_with("<?xml version='1.0'?><stream:stream ")
                && answer.contains("from='localhost'"),
            "{header}: {answer}"
        );
        assert_eq!(stream_error(&answer), Some(condition), "{header}: {answer}");
        assert!(answer.ends_with("</stream:stream>"), "{header}: {answer}");
        let end = client.end().await;
        assert!(
            matches!(&end, Err(ConnectionEnd::StreamError(name)) if name == condition),
            "{header}: {end:?}"
        );
    }
}

#[tokio::test]
async fn a_header_for_another_domain_gets_host_unknown() {
    let server = Server::new();
    let mut client = server.connect(Start::Plain);
    client
        .send(&HEADER.replace("to='localhost'", "to='example.org'"))
        .await;
    let answer = client.read_to_end().await;
    assert_eq!(stream_error(answer), Some("host-unknown"), "{answer}");
    assert!(answer.contains("this server serves localhost"), "{answer}");
}

#[tokio::test]
async fn a_stanza_before_authentication_is_not_authorized() {
    let server = Server::new();
    let mut client = server.connect(Start::Sasl {
        tls_exporter: &TLS_EXPORTER,
    });
    client.send(HEADER).await;
    client.read_until("</stream:features>").await;
    client
        .send("<message to='bob@localhost'><body>sneaky</body></message>")
        .await;
    let answer = client.read_to_end().await;
    assert_eq!(stream_error(answer), Some("not-authorized"), "{answer}");
    assert!(answer.contains("authenticate first"), "{answer}");
    assert!(server.offline_messages("bob").is_empty());
}

#[tokio::test]
async fn a_stanza_before_binding_is_not_authorized_and_goes_nowhere() {
    let server = Server::new();
    let mut client = server.connect(Start::Session { username: "alice" });
    client.send(HEADER).await;
    let features = client.read_until("</stream:features>").await;
    assert!(
        features.contains("<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'"),
        "{features}"
    );
    client
        .send("<message to='bob@localhost' type='chat'><body>too early</body></message>")
        .await;
    let answer = client.read_to_end().await;
    assert_eq!(stream_error(answer), Some("not-authorized"), "{answer}");
    assert!(answer.contains("bind a resource first"), "{answer}");
    assert!(server.offline_messages("bob").is_empty());
}

#[tokio::test]
async fn the_client_closing_its_stream_gets_the_close_back() {
    let server = Server::new();
    let mut alice = server.bound("alice").await;
    alice.send("</stream:stream>").await;
    let answer = alice.read_to_end().await;
    assert_eq!(answer, "</stream:stream>");
    assert!(matches!(
        alice.end().await,
        Err(ConnectionEnd::ClientClosed)
    ));
}

#[tokio::test]
async fn an_authenticated_session_binds_and_gets_its_roster() {
    let server = Server::new();
    let mut alice = server.connect(Start::Session { username: "alice" });
    alice.send(HEADER).await;
    alice.read_until("</stream:features>").await;
    alice.send(BIND).await;
    let bound = alice.read_until("</iq>").await;
    assert!(
        bound.contains("id='bind1'") && bound.contains("<jid>alice@localhost/phone</jid>"),
        "{bound}"
    );
    alice.read.clear();
    alice.send(ROSTER_GET).await;
    let roster = alice.read_until("</iq>").await;
    assert!(
        roster.contains("id='roster1'") && roster.contains("type='result'"),
        "{roster}"
    );
    assert!(
        roster.contains("jid='bob@localhost'") && roster.contains("subscription='both'"),
        "{roster}"
    );
}

#[tokio::test]
async fn a_plain_login_inside_tls_restarts_the_stream_and_binds() {
    let server = Server::new();
    let mut alice = server.connect(Start::Sasl {
        tls_exporter: &TLS_EXPORTER,
    });
    alice.send(HEADER).await;
    let features = alice.read_until("</stream:features>").await;
    for mechanism in ["PLAIN", "SCRAM-SHA-256-PLUS"] {
        assert!(
            features.contains(&format!("<mechanism>{mechanism}</mechanism>")),
            "{features}"
        );
    }
    // base64("\0alice\0wrong"), then base64("\0alice\0alice-secret")
    alice
        .send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHdyb25n</auth>")
        .await;
    alice.read_until("</failure>").await;
    assert!(alice.read.contains("<not-authorized"), "{}", alice.read);
    alice.read.clear();
    alice
        .send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAGFsaWNlLXNlY3JldA==</auth>")
        .await;
    alice.read_until("<success").await;
    alice.read.clear();
    alice.send(HEADER).await;
    alice.read_until("</stream:features>").await;
    alice.send(BIND).await;
    alice.read_until("<jid>alice@localhost/phone</jid>").await;
}

#[tokio::test]
async fn an_unknown_sasl_mechanism_may_be_followed_by_another() {
    let server = Server::new();
    let mut alice = server.connect(Start::Sasl {
        tls_exporter: &TLS_EXPORTER,
    });
    alice.send(HEADER).await;
    alice.read_until("</stream:features>").await;
    // RFC 6120 §6.4.1: a mechanism the server does not offer is `invalid-mechanism`.
    alice
        .send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='DIGEST-MD5'/>")
        .await;
    alice.read_until("</failure>").await;
    assert!(alice.read.contains("<invalid-mechanism"), "{}", alice.read);
    alice.read.clear();
    alice
        .send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAGFsaWNlLXNlY3JldA==</auth>")
        .await;
    alice.read_until("<success").await;
}

#[tokio::test]
async fn alice_sends_bob_a_chat_and_bob_receives_it_from_her_full_jid() {
    let server = Server::new();
    let mut alice = server.bound("alice").await;
    let mut bob = server.bound("bob").await;
    // Available, so that a message to bob's bare JID reaches this session (RFC 6121 §8.5.2.1);
    // once bob sees his own presence, the hub has handled it.
    bob.send("<presence/>").await;
    bob.read_until("<presence").await;
    alice
        .send("<message to='bob@localhost' type='chat' id='m1'><body>hello bob</body></message>")
        .await;
    let received = bob.read_until("hello bob").await;
    assert!(
        received.contains("from='alice@localhost/phone'") && received.contains("hello bob"),
        "{received}"
    );
}

/// go-xmpp's available presence carries an empty `<show>`, which RFC 6121 §4.7.2.1 does not
/// allow; it is taken as a presence without a show, so its contacts see it online.
#[tokio::test]
async fn a_presence_with_an_empty_show_from_go_xmpp_makes_the_client_available() {
    let server = Server::new();
    let mut alice = server.bound("alice").await;
    let mut bob = server.bound("bob").await;
    bob.send("<presence/>").await;
    bob.read_until("<presence").await;
    bob.read.clear();
    alice
        .send("<presence xml:lang='en'><show></show><status></status></presence>")
        .await;
    let seen = bob.read_until("from='alice@localhost/phone'").await;
    assert!(!seen.contains("type="), "an available presence: {seen}");
    // No error came back to alice: her next IQ is answered and is all she reads.
    alice
        .send("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let answer = alice.read_until("id='p1'").await;
    assert!(!answer.contains("type='error'"), "{answer}");
}

#[tokio::test]
async fn a_stanza_with_a_forged_from_ends_the_stream_with_invalid_from() {
    let server = Server::new();
    let mut alice = server.bound("alice").await;
    let mut bob = server.bound("bob").await;
    alice
        .send("<message from='mallory@localhost' to='bob@localhost' type='chat'><body>forged</body></message>")
        .await;
    let answer = alice.read_to_end().await;
    assert_eq!(stream_error(answer), Some("invalid-from"), "{answer}");
    // Bob is still served, and the forged message never reached him.
    bob.send("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let pong = bob.read_until("id='p1'").await;
    assert!(!pong.contains("forged"), "{pong}");
}

#[tokio::test]
async fn a_message_to_a_malformed_jid_is_answered_and_the_session_goes_on() {
    let server = Server::new();
    let mut alice = server.bound("alice").await;
    alice
        .send("<message to='a@b@c' type='chat' id='bad'><body>x</body></message>")
        .await;
    let answer = alice.read_until("</message>").await;
    assert!(
        answer.contains("type='error'")
            && answer.contains("id='bad'")
            && answer.contains("<jid-malformed"),
        "{answer}"
    );
    alice.read.clear();
    alice.send(ROSTER_GET).await;
    alice.read_until("id='roster1'").await;
}

#[tokio::test]
async fn at_shutdown_a_bound_session_is_told_system_shutdown() {
    let server = Server::new();
    let mut alice = server.bound("alice").await;
    server.shutdown.cancel();
    let answer = alice.read_to_end().await;
    assert_eq!(stream_error(answer), Some("system-shutdown"), "{answer}");
    assert!(matches!(alice.end().await, Err(ConnectionEnd::Shutdown)));
}

/// The `<stream:features>` element in what the server sent.
fn features(read: &str) -> &str {
    let start = read.find("<stream:features").expect("features");
    let end = read[start..]
        .find("</stream:features>")
        .expect("the end of the features");
    &read[start..start + end + "</stream:features>".len()]
}

#[tokio::test]
async fn before_tls_the_features_offer_starttls_and_nothing_else() {
    let server = Server::new();
    let mut client = server.connect(Start::Plain);
    client.send(HEADER).await;
    let read = client.read_until("</stream:features>").await;
    // No empty <mechanisms/>: before TLS nothing may be offered yet.
    assert_eq!(
        features(read),
        "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/>\
         </starttls></stream:features>"
    );
}

#[tokio::test]
async fn inside_tls_the_features_offer_the_mechanisms_and_the_channel_bindings() {
    let server = Server::new();
    let mut client = server.connect(Start::Sasl {
        tls_exporter: &TLS_EXPORTER,
    });
    client.send(HEADER).await;
    let read = client.read_until("</stream:features>").await;
    let features = features(read);
    for mechanism in [
        "SCRAM-SHA-256-PLUS",
        "SCRAM-SHA-1-PLUS",
        "SCRAM-SHA-256",
        "SCRAM-SHA-1",
        "PLAIN",
    ] {
        assert!(
            features.contains(&format!("<mechanism>{mechanism}</mechanism>")),
            "{features}"
        );
    }
    // XEP-0440: which channel bindings -PLUS takes.
    assert!(
        features.contains(
            "<sasl-channel-binding xmlns='urn:xmpp:sasl-cb:0'>\
             <channel-binding type='tls-exporter'></channel-binding>\
             <channel-binding type='tls-server-end-point'></channel-binding>\
             </sasl-channel-binding>"
        ),
        "{features}"
    );
    assert!(!features.contains("<starttls"), "{features}");
}

/// Logs alice in with PLAIN inside TLS; returns the client right after `<success/>`, with
/// what it read cleared.
async fn logged_in(server: &Server, auth: &str) -> Client {
    let mut alice = server.connect(Start::Sasl {
        tls_exporter: &TLS_EXPORTER,
    });
    alice.send(HEADER).await;
    alice.read_until("</stream:features>").await;
    alice.send(auth).await;
    alice.read_until("<success").await;
    alice.read.clear();
    alice
}

#[tokio::test]
async fn after_sasl_the_features_offer_bind_and_session_but_no_mechanisms() {
    let server = Server::new();
    let mut alice = logged_in(&server, AUTH_ALICE).await;
    alice.send(HEADER).await;
    let read = alice.read_until("</stream:features>").await;
    let features = features(read);
    // RFC 6120 §6.4.6: no SASL feature after SASL succeeded (xmpp.js would try again).
    assert!(!features.contains("<mechanisms"), "{features}");
    assert!(!features.contains("sasl-channel-binding"), "{features}");
    assert!(
        features.contains("<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><required/></bind>"),
        "{features}"
    );
    assert!(
        features.contains(
            "<session xmlns='urn:ietf:params:xml:ns:xmpp-session'><optional></optional></session>"
        ),
        "{features}"
    );
}

#[tokio::test]
async fn a_newline_after_auth_does_not_spoil_the_restarted_stream() {
    // go-xmpp writes `</auth>\n`; the newline may arrive with the auth or after our success.
    for (with_auth, after_success) in [("\n", ""), ("", "\r\n  \t"), ("\n", "\n")] {
        let server = Server::new();
        let mut alice = logged_in(&server, &format!("{AUTH_ALICE}{with_auth}")).await;
        alice.send(&format!("{after_success}{HEADER}")).await;
        let read = alice.read_until("</stream:features>").await;
        assert!(stream_error(read).is_none(), "{read}");
        alice.send(BIND).await;
        alice.read_until("<jid>alice@localhost/phone</jid>").await;
    }
}

#[tokio::test]
async fn whitespace_around_starttls_and_before_the_first_header_is_allowed() {
    let server = Server::new();
    let mut client = server.connect(Start::Plain);
    client.send(&format!("\n \r\n{HEADER}\n")).await;
    client.read_until("</stream:features>").await;
    // go-xmpp writes `<starttls/>\n`: what follows <proceed/> is the TLS handshake, and the
    // plain-text bytes still buffered are dropped with the plain-text stream.
    client
        .send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>\n\n")
        .await;
    let read = client
        .read_until("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'>")
        .await;
    assert!(stream_error(read).is_none(), "{read}");
    assert!(client.end().await.is_ok(), "ready for the TLS handshake");
}

#[tokio::test]
async fn text_after_leading_whitespace_is_still_refused_before_a_header() {
    for (start, garbage) in [
        (Start::Plain, "\n  hello <?xml version='1.0'?>"),
        (
            Start::Sasl {
                tls_exporter: &TLS_EXPORTER,
            },
            "\r\n<message xmlns='jabber:client'/>",
        ),
    ] {
        let server = Server::new();
        let mut client = server.connect(start);
        client.send(garbage).await;
        let answer = client.read_to_end().await;
        let condition = stream_error(answer);
        assert!(
            matches!(condition, Some("not-well-formed" | "invalid-namespace")),
            "{garbage:?}: {answer}"
        );
    }
}

#[tokio::test]
async fn endless_whitespace_before_a_header_is_ended_by_the_byte_limit() {
    let server = Server::new();
    let mut client = server.connect(Start::Plain);
    // More than the 10 000 bytes a client may send before logging in.
    let blank = " \n".repeat(6_000);
    let _ = tokio::io::AsyncWriteExt::write_all(&mut client.io, blank.as_bytes()).await;
    let answer = client.read_to_end().await;
    assert_eq!(stream_error(answer), Some("policy-violation"), "{answer}");
}
