#![allow(dead_code)]
//! A chat with the bot through a [`ChatClient`], sorted the way a user reads it: replies to our
//! commands, alert messages, and the bot's presence.
//!
//! - Every command goes out with a thread id of its own, and the bot answers in the thread of
//!   the message it answers, so a reply is matched to its command even when an alert message
//!   arrives in between. Alert messages carry no thread.
//! - [`Conversation::barrier`] proves what the bot did *not* answer. The bot handles the stanzas
//!   of its connection one at a time, in order, and answers each before reading the next; the
//!   server delivers the stanzas of one sender to one recipient in the order they were sent (RFC
//!   6120 §10.1), both ways. So after sending some messages, an XMPP ping (XEP-0199) to the bot's
//!   own session is answered only after every reply those messages caused has been sent, and
//!   those replies reach us before the ping's result. Once the result is in, a message with no
//!   reply yet will never get one.
//! - Alert messages come from a queue of their own in the bot, which it drains in order, so the
//!   arrival of one known alert proves every alert queued before it has arrived too.

use std::collections::VecDeque;
use std::str::FromStr;
use std::time::{Duration, Instant};

use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::{Message, MessageType, Thread};
use tokio_xmpp::parsers::ping::Ping;
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::Stanza;

use super::chat::{body, ChatClient};

/// How long one reply may take.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A presence from the bot as the contact received it.
#[derive(Debug, Clone)]
pub struct SeenPresence {
    /// When it arrived.
    pub at: Instant,
    /// Available, unavailable, subscribed…
    pub type_: PresenceType,
    /// Its status text, if any.
    pub status: Option<String>,
}

/// One contact's chat with the bot.
pub struct Conversation {
    client: ChatClient,
    bot: BareJid,
    /// The bot's session, learned from the `from` of its messages (for the ping).
    bot_session: Option<Jid>,
    /// Replies not yet claimed, as (thread, body), oldest first.
    replies: Vec<(String, String)>,
    /// Messages from the bot without a thread (alerts), oldest first.
    notices: VecDeque<String>,
    /// Presence stanzas from the bot, oldest first.
    presences: VecDeque<SeenPresence>,
    /// Ids of IQ results (and errors) received and not yet claimed.
    iq_answers: Vec<(String, bool)>,
    sent: u64,
}

impl Conversation {
    /// A conversation of `client` with the bot account `bot` (a bare JID).
    pub fn new(client: ChatClient, bot: &str) -> Conversation {
        Conversation {
            client,
            bot: BareJid::from_str(bot).expect("bot JID"),
            bot_session: None,
            replies: Vec::new(),
            notices: VecDeque::new(),
            presences: VecDeque::new(),
            iq_answers: Vec::new(),
            sent: 0,
        }
    }

    /// Sends `text` as a chat message in a thread of its own, and returns the thread id.
    pub async fn send(&mut self, text: &str) -> String {
        self.sent += 1;
        let thread = format!("cmd-{}-{:x}", self.sent, rand::random::<u32>());
        let mut message = Message::new_with_type(MessageType::Chat, Some(self.bot.clone().into()))
            .with_body(Default::default(), text.into());
        message.thread = Some(Thread {
            id: thread.clone(),
            parent: None,
        });
        self.client.send(message).await;
        thread
    }

    /// Sends any stanza as it is (a subscription request, say).
    pub async fn send_stanza(&mut self, stanza: impl Into<Stanza>) {
        self.client.send_stanza(stanza).await;
    }

    /// Sends `text` and returns the bot's reply to it; panics after [`REPLY_TIMEOUT`].
    pub async fn ask(&mut self, text: &str) -> String {
        let thread = self.send(text).await;
        self.reply_to(&thread, REPLY_TIMEOUT)
            .await
            .unwrap_or_else(|| panic!("no reply to {text:?} within {REPLY_TIMEOUT:?}"))
    }

    /// Asks `text` until the reply satisfies `accept` (the bot may not have a reading yet), and
    /// returns that reply.
    pub async fn ask_until(
        &mut self,
        text: &str,
        accept: impl Fn(&str) -> bool,
        deadline: Duration,
    ) -> String {
        let end = Instant::now() + deadline;
        loop {
            let reply = self.ask(text).await;
            if accept(&reply) {
                return reply;
            }
            assert!(
                Instant::now() < end,
                "the reply to {text:?} was still not accepted after {deadline:?}: {reply:?}"
            );
            // Polling pace, so the bot is not flooded with questions.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The reply in `thread`, waiting up to `timeout` for it.
    pub async fn reply_to(&mut self, thread: &str, timeout: Duration) -> Option<String> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(reply) = self.take_reply(thread) {
                return Some(reply);
            }
            if !self.receive_until(end).await {
                return None;
            }
        }
    }

    /// The reply in `thread` if it has arrived, without waiting.
    pub fn take_reply(&mut self, thread: &str) -> Option<String> {
        let index = self.replies.iter().position(|(t, _)| t == thread)?;
        Some(self.replies.remove(index).1)
    }

    /// Replies received and not claimed, oldest first.
    pub fn unclaimed_replies(&self) -> &[(String, String)] {
        &self.replies
    }

    /// The next alert message (a message without a thread), waiting up to `timeout`.
    pub async fn next_notice(&mut self, timeout: Duration) -> Option<String> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(notice) = self.notices.pop_front() {
                return Some(notice);
            }
            if !self.receive_until(end).await {
                return None;
            }
        }
    }

    /// Alert messages received and not yet taken.
    pub fn pending_notices(&self) -> &VecDeque<String> {
        &self.notices
    }

    /// The next presence from the bot, waiting until `end`.
    pub async fn next_presence_until(&mut self, end: Instant) -> Option<SeenPresence> {
        loop {
            if let Some(presence) = self.presences.pop_front() {
                return Some(presence);
            }
            if !self.receive_until(end).await {
                return None;
            }
        }
    }

    /// Waits until the bot has answered everything sent before this call (see the module
    /// documentation): afterwards, a message without a reply will not get one. Needs the bot's
    /// session, learned from any earlier message of the bot.
    pub async fn barrier(&mut self) {
        let session = self
            .bot_session
            .clone()
            .expect("the barrier pings the bot's session, known once the bot has said something");
        let id = format!("barrier-{:x}", rand::random::<u64>());
        self.client
            .send_stanza(Iq::from_get(id.clone(), Ping).with_to(session.clone()))
            .await;
        let end = Instant::now() + REPLY_TIMEOUT;
        loop {
            if let Some(index) = self.iq_answers.iter().position(|(i, _)| *i == id) {
                let (_, ok) = self.iq_answers.remove(index);
                assert!(ok, "{session} answered the ping with an error");
                return;
            }
            assert!(
                self.receive_until(end).await,
                "{session} did not answer a ping within {REPLY_TIMEOUT:?}"
            );
        }
    }

    /// Receives one stanza (before `end`) and files it; false when `end` passed first or the
    /// connection was lost.
    async fn receive_until(&mut self, end: Instant) -> bool {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let Some(stanza) = self.client.next_stanza(left).await else {
            return false;
        };
        match stanza {
            Stanza::Message(message) => self.file_message(message),
            Stanza::Presence(presence) => self.file_presence(presence),
            Stanza::Iq(Iq::Result { id, .. }) => self.iq_answers.push((id, true)),
            Stanza::Iq(Iq::Error { id, .. }) => self.iq_answers.push((id, false)),
            // Roster pushes and the like: nothing a user would look at.
            Stanza::Iq(_) => {}
        }
        true
    }

    fn file_message(&mut self, message: Message) {
        let Some(from) = message.from.clone() else {
            return;
        };
        if from.to_bare() != self.bot
            || message.type_ == MessageType::Error
            || message.bodies.is_empty()
        {
            return;
        }
        if from.resource().is_some() {
            self.bot_session = Some(from);
        }
        let text = body(&message);
        match message.thread {
            Some(thread) => self.replies.push((thread.id, text)),
            None => self.notices.push_back(text),
        }
    }

    fn file_presence(&mut self, presence: Presence) {
        let from_bot = presence
            .from
            .as_ref()
            .is_some_and(|from| from.to_bare() == self.bot);
        if !from_bot {
            return;
        }
        self.presences.push_back(SeenPresence {
            at: Instant::now(),
            type_: presence.type_,
            status: presence.statuses.values().next().cloned(),
        });
    }
}
