#![allow(dead_code)]
//! Raw clients in the bundled server's rooms (XEP-0045), for the hostile room tests: a server
//! with alice and mallory logged in, an exchange that reads everything a request caused, and
//! the error conditions among what came back.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mqtt2xmpp::server::limits::ServerLimits;
use tokio_xmpp::minidom::Element;

use super::raw::{parse, Raw, NS_STANZA_ERRORS};
use super::server::{limits, InProcessServer, XmppEndpoint};

/// How long one answer of the server may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// A server in this process with `change` made to its limits, and alice and mallory, each
/// logged in with a raw client.
pub async fn raw_pair(change: impl FnOnce(&mut ServerLimits)) -> (InProcessServer, Raw, Raw) {
    let server = InProcessServer::start_with(limits(change)).await;
    server.add_user("alice", "alice-secret");
    server.add_user("mallory", "mallory-secret");
    let (port, ca) = (server.port(), server.ca_file());
    let alice = Raw::login(port, ca, "alice", "alice-secret", "phone").await;
    let mallory = Raw::login(port, ca, "mallory", "mallory-secret", "x").await;
    (server, alice, mallory)
}

/// Sends `xml` followed by a ping, and returns every stanza the server sent up to the pong:
/// the server answers in order, so whatever `xml` caused is among them.
pub async fn exchange(raw: &mut Raw, xml: &str) -> Vec<Element> {
    static SYNC: AtomicUsize = AtomicUsize::new(0);
    let sync = format!("sync-{}", SYNC.fetch_add(1, Ordering::Relaxed));
    assert!(
        raw.send(format!(
            "{xml}<iq type='get' id='{sync}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
        ))
        .await,
        "the connection is gone"
    );
    let mut text = raw.read_until(&sync, WAIT).await;
    text.push_str(&raw.read_until("</iq>", WAIT).await);
    let elements = parse(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert!(
        elements.iter().any(|e| e.attr("id") == Some(sync.as_str())),
        "no pong: {text}"
    );
    elements
}

/// The stanza error conditions among `elements`, in order.
pub fn errors(elements: &[Element]) -> Vec<String> {
    elements
        .iter()
        .filter(|e| e.attr("type") == Some("error"))
        .filter_map(|e| e.get_child("error", "jabber:client"))
        .filter_map(|error| {
            error
                .children()
                .find(|c| c.ns() == NS_STANZA_ERRORS && c.name() != "text")
                .map(|c| c.name().to_string())
        })
        .collect()
}
