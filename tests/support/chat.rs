#![allow(dead_code)]
//! A chat client logged in like a person's Gajim or profanity, for talking to the bot and to the
//! bundled server.

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use futures::StreamExt;
use mqtt2xmpp::secret::Secret;
use mqtt2xmpp::xmpp_connect::{self, Connector};
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::parsers::message::{Id, Message};
use tokio_xmpp::parsers::presence::Presence;
use tokio_xmpp::stanzastream::{Event as XmppEvent, StanzaStream, StreamEvent};
use tokio_xmpp::Stanza;

/// A chat client logged in to the test server, like a person's Gajim or profanity.
pub struct ChatClient {
    stream: StanzaStream,
}

impl ChatClient {
    /// Logs in as `jid` on 127.0.0.1:`port`, trusting `ca_file`, and sends initial presence.
    pub async fn login(jid: &str, password: &str, port: u16, ca_file: &Path) -> ChatClient {
        let jid = Jid::from_str(jid).expect("valid JID");
        let dns =
            xmpp_connect::dns_config(jid.domain().as_str(), Some(&format!("127.0.0.1:{port}")))
                .expect("dns config");
        let tls = mqtt2xmpp::tls::client_config(Some(ca_file)).expect("tls config");
        let connector = Connector::new(dns, tls, jid.to_bare(), Secret::new(password));
        let mut stream = xmpp_connect::open_stream(jid.clone(), connector);
        let online = tokio::time::timeout(Duration::from_secs(15), async {
            while let Some(event) = stream.next().await {
                if let XmppEvent::Stream(StreamEvent::Reset { .. }) = event {
                    return;
                }
            }
            panic!("client stopped before coming online");
        })
        .await;
        assert!(online.is_ok(), "{jid} did not come online within 15 s");
        stream.send(Box::new(Presence::available().into())).await;
        ChatClient { stream }
    }

    /// Sends any stanza as it is.
    pub async fn send_stanza(&mut self, stanza: impl Into<Stanza>) {
        self.stream.send(Box::new(stanza.into())).await;
    }

    /// The next stanza of any kind, or `None` after `timeout` (stream events are skipped, except
    /// that a lost connection ends the wait with `None`).
    pub async fn next_stanza(&mut self, timeout: Duration) -> Option<Stanza> {
        tokio::time::timeout(timeout, async {
            while let Some(event) = self.stream.next().await {
                match event {
                    XmppEvent::Stanza(stanza) => return Some(stanza),
                    XmppEvent::Stream(StreamEvent::Suspended) => return None,
                    XmppEvent::Stream(_) => {}
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
    }

    /// Waits until the connection is lost (e.g. the server closed it), up to `timeout`.
    pub async fn wait_disconnected(&mut self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, async {
            while let Some(event) = self.stream.next().await {
                if let XmppEvent::Stream(StreamEvent::Suspended) = event {
                    return true;
                }
            }
            true
        })
        .await
        .unwrap_or(false)
    }

    /// Sends a message (with a fresh id if it has none).
    pub async fn send(&mut self, mut message: Message) {
        message
            .id
            .get_or_insert_with(|| Id(format!("{:x}", rand::random::<u64>())));
        self.stream.send(Box::new(message.into())).await;
    }

    /// The next message with a body from `from` (any resource), error bounces excepted, or `None`
    /// after `timeout`.
    pub async fn next_message_from(
        &mut self,
        from: &BareJid,
        timeout: Duration,
    ) -> Option<Message> {
        tokio::time::timeout(timeout, async {
            while let Some(event) = self.stream.next().await {
                if let XmppEvent::Stanza(Stanza::Message(m)) = event {
                    let sender = m.from.as_ref().map(|f| f.to_bare());
                    // Error bounces from the server (which may quote our body) are not replies.
                    let bounce = m.type_ == tokio_xmpp::parsers::message::MessageType::Error;
                    if sender.as_ref() == Some(from) && !m.bodies.is_empty() && !bounce {
                        return Some(m);
                    }
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
    }

    /// Sends `text` to `to` and returns the body of the reply.
    pub async fn ask(&mut self, to: &str, text: &str) -> String {
        let to = Jid::from_str(to).expect("valid JID");
        self.send(Message::chat(Some(to.clone())).with_body(Default::default(), text.into()))
            .await;
        let reply = self
            .next_message_from(&to.to_bare(), Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("no reply from {to} to {text:?} within 10 s"));
        body(&reply)
    }

    /// Asks until the reply satisfies `accept` (the bot may not have the newest reading yet).
    pub async fn ask_until(
        &mut self,
        to: &str,
        accept: impl Fn(&str) -> bool,
        deadline: Duration,
    ) -> String {
        let end = Instant::now() + deadline;
        loop {
            let reply = self.ask(to, "temperature?").await;
            if accept(&reply) {
                return reply;
            }
            assert!(
                Instant::now() < end,
                "last reply {reply:?} still not accepted after {deadline:?}"
            );
            // Polling pace, so a slow bridge is not flooded with questions.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The single body of a message.
pub fn body(message: &Message) -> String {
    message.bodies.values().next().cloned().unwrap_or_default()
}
