//! Entry point of the `server_stream` fuzz target (see `fuzz/README.md`): a client's bytes
//! through the connection code of this folder — the limited reader, the XML parser, stanza
//! parsing, SASL, bind, the session loop — and the hub and store behind it, in memory, without
//! sockets or TLS.
//! Not part of the API: built only with the `fuzzing` feature.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_xmpp::jid::{BareJid, FullJid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::Stanza;

use super::harness::{self, add_accounts, serve_from, tls_config, Start};
use super::OUTBOX_CAPACITY;
use crate::server::driver::{apply, ComponentOutboxes, Outboxes};
use crate::server::hub::Hub;
use crate::server::limits::ServerLimits;
use crate::server::shared::{HubCommand, Outbound, ServerShared};
use crate::server::store::Store;

/// The served domain.
pub const DOMAIN: &str = harness::DOMAIN;
/// The accounts, each with the password `<name>-secret`. Bytes fed at [`Stage::Session`]
/// are alice's.
pub const ACCOUNTS: [&str; 2] = harness::ACCOUNTS;
/// The channel-binding bytes of the pretend TLS connection (so `-PLUS` is offered).
pub const TLS_EXPORTER: [u8; 32] = [7; 32];

/// Where in a connection the fuzzed bytes start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// A new plain-text connection: stream header, features, `<starttls/>`.
    Plain,
    /// Inside TLS: stream header, SASL exchanges, and after `<success/>` the restarted
    /// stream, bind and the session.
    Sasl,
    /// After alice's `<success/>`: the restarted stream header, bind and the session.
    Session,
}

/// Limits for fuzzing: the defaults, with element sizes a fuzzer's inputs can reach and no
/// delay after a failed login.
pub fn limits() -> ServerLimits {
    ServerLimits {
        max_stanza_bytes: 4096,
        max_preauth_bytes: 2048,
        max_depth: 16,
        login_failure_delay: Duration::ZERO,
        max_login_delay: Duration::ZERO,
        ..ServerLimits::default()
    }
}

/// Serves `input` as everything a client sends from `stage` on, then end of stream.
/// Returns what the two other sessions (bob's phone, alice's tablet) received, as XML.
///
/// Panics when the server lets a stanza through with a `from` that is not one of the
/// accounts (or the server), or when the hub still holds the fuzzed session afterwards.
pub fn connection(stage: Stage, input: &[u8]) -> Vec<String> {
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread runtime");
    }
    RUNTIME.with(|runtime| runtime.block_on(serve(stage, input)))
}

async fn serve(stage: Stage, input: &[u8]) -> Vec<String> {
    let limits = limits();
    let mut hub =
        Hub::new(DOMAIN, store(), crate::server::hub::registry::SERVICES).expect("a valid domain");
    let mut outboxes = Outboxes::new();
    let mut components = ComponentOutboxes::new();
    // Two sessions already online, available, and (alice's tablet) with carbons on.
    let mut others = Vec::new();
    for (id, (user, resource)) in [("bob", "phone"), ("alice", "tablet")].iter().enumerate() {
        let (outbox, inbox) = mpsc::channel(OUTBOX_CAPACITY);
        let (reply, mut bound) = oneshot::channel();
        let id = id as u64 + 1;
        let command = HubCommand::Bind {
            username: (*user).into(),
            resource: Some((*resource).into()),
            id,
            outbox,
            reply,
        };
        apply(&mut hub, &mut outboxes, &mut components, command);
        let jid = bound
            .try_recv()
            .ok()
            .flatten()
            .expect("the pre-bound sessions bind");
        for stanza in [
            Stanza::from(Presence::available()),
            Iq::Set {
                from: None,
                to: None,
                id: "carbons".into(),
                payload: Element::builder("enable", ns::CARBONS).build(),
            }
            .into(),
        ] {
            let stanza = Box::new(stanza);
            let command = HubCommand::Stanza {
                jid: jid.clone(),
                id,
                stanza,
            };
            apply(&mut hub, &mut outboxes, &mut components, command);
        }
        others.push((jid, inbox));
    }

    let (hub_tx, mut hub_rx) = mpsc::channel(1024);
    let shared = Arc::new(ServerShared::new(
        DOMAIN.into(),
        tls_config(),
        limits.clone(),
        hub_tx,
        store(),
    ));
    let connection = async move {
        let start = match stage {
            Stage::Plain => Start::Plain,
            Stage::Sasl => Start::Sasl {
                tls_exporter: &TLS_EXPORTER,
            },
            Stage::Session => Start::Session { username: "alice" },
        };
        let transport = tokio::io::join(input, tokio::io::sink());
        let _ = serve_from(start, transport, &shared, CancellationToken::new()).await;
        // Dropping `shared` closes the hub's inbox, which ends the hub loop.
    };
    let hub_loop = async {
        while let Some(command) = hub_rx.recv().await {
            apply(&mut hub, &mut outboxes, &mut components, command);
        }
    };
    tokio::join!(connection, hub_loop);

    let bound: Vec<&FullJid> = hub.sessions.keys().collect();
    let expected: Vec<&FullJid> = others.iter().map(|(jid, _)| jid).collect();
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    assert_eq!(
        bound, expected_sorted,
        "the hub still holds a session that ended"
    );
    let mut received = Vec::new();
    for (jid, mut inbox) in others {
        while let Ok(outbound) = inbox.try_recv() {
            let stanzas = match outbound {
                Outbound::Stanza(stanza) => vec![*stanza],
                Outbound::Batch(stanzas) => stanzas,
                Outbound::Close(_) => Vec::new(),
            };
            for stanza in stanzas {
                check_from(&jid, &stanza);
                // What the session would write.
                received.push(String::from(&Element::from(stanza)));
            }
        }
    }
    received
}

/// Every stanza a session receives names its sender: the server, or a session of an
/// account (the hub stamps it), never a JID the fuzzed client made up. The one exception is
/// the refusal the server sends on behalf of a contact that does not exist (RFC 6121
/// §3.1.3), an `unsubscribed` presence from that contact's bare JID.
fn check_from(to: &FullJid, stanza: &Stanza) {
    let from = match stanza {
        Stanza::Message(m) => m.from.as_ref(),
        Stanza::Presence(p) => p.from.as_ref(),
        Stanza::Iq(iq) => iq.from(),
    };
    let Some(from) = from else {
        // Roster pushes and other server answers to the session's own requests.
        return;
    };
    let bare: BareJid = from.to_bare();
    let ok = (bare.node().is_none() && bare.domain().as_str() == DOMAIN)
        || ACCOUNTS
            .iter()
            .any(|user| bare.as_str() == format!("{user}@{DOMAIN}"))
        || matches!(stanza, Stanza::Presence(p)
            if p.type_ == PresenceType::Unsubscribed && from.resource().is_none());
    assert!(ok, "{to} received a stanza from {from}: {stanza:?}");
}

/// A fresh in-memory store with the accounts, alice and bob subscribed to each other: a copy
/// of one built once per process (building it takes most of an input's time otherwise).
fn store() -> Store {
    static IMAGE: OnceLock<Vec<u8>> = OnceLock::new();
    let image = IMAGE.get_or_init(|| template().image().expect("a database image"));
    Store::from_image(image).expect("a copy of the accounts")
}

fn template() -> Store {
    let store = Store::open_in_memory().expect("an in-memory store");
    add_accounts(&store);
    store
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
        xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";
    const BIND: &str = "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
        <resource>fuzz</resource></bind></iq>";
    const CHAT: &str = "<message to='bob@localhost' type='chat'><body>hi bob</body></message>";

    fn delivered_chat(received: &[String]) -> bool {
        received.iter().any(|xml| xml.contains("hi bob"))
    }

    #[test]
    fn a_session_reaches_the_other_accounts() {
        let input = format!("{HEADER}{BIND}{CHAT}");
        assert!(delivered_chat(&connection(
            Stage::Session,
            input.as_bytes()
        )));
    }

    #[test]
    fn a_plain_login_leads_to_the_session() {
        // base64("\0alice\0alice-secret")
        let auth = "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>\
            AGFsaWNlAGFsaWNlLXNlY3JldA==</auth>";
        let input = format!("{HEADER}{auth}{HEADER}{BIND}{CHAT}");
        assert!(delivered_chat(&connection(Stage::Sasl, input.as_bytes())));
        let wrong = input.replace("AGFsaWNlAGFsaWNlLXNlY3JldA==", "AGFsaWNlAHdyb25n");
        assert!(!delivered_chat(&connection(Stage::Sasl, wrong.as_bytes())));
    }

    #[test]
    fn nothing_passes_the_plain_stage() {
        let input = format!("{HEADER}<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>{CHAT}");
        assert!(!delivered_chat(&connection(Stage::Plain, input.as_bytes())));
    }
}
