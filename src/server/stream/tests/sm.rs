//! Transcripts of stream management (XEP-0198) and client state indication (XEP-0352): acks
//! both ways, resumption after the link died (with the old connection gone or still open), the
//! refusals, what happens to unacknowledged messages when a session ends for good, and presence
//! held back for an inactive client.

use std::time::Duration;

use super::*;

const SM: &str = "urn:xmpp:sm:3";
const PING: &str = "<iq type='get' id='ping1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>";

/// Stanzas the client has read since `from` (the start of stream management): XEP-0198 counts
/// these. None of the transcripts nests one stanza in another.
fn stanzas_since(read: &str, from: &str) -> u32 {
    let start = read.find(from).unwrap_or(0);
    let read = &read[start..];
    ["<message ", "<message>", "<presence ", "<presence>", "<iq "]
        .iter()
        .map(|tag| read.matches(tag).count() as u32)
        .sum()
}

/// The value of `attribute` in the first `element` of `xml`.
fn attribute<'a>(xml: &'a str, element: &str, attribute: &str) -> Option<&'a str> {
    let at = xml.find(&format!("<{element} "))?;
    let rest = &xml[at..];
    let rest = &rest[..rest.find('>')?];
    let key = format!("{attribute}='");
    let value = &rest[rest.find(&key)? + key.len()..];
    Some(&value[..value.find('\'')?])
}

impl Server {
    /// `username` bound to `phone` with stream management enabled (with resumption if
    /// `resume`); returns the client and the resumption id.
    async fn managed(&self, username: &'static str, resume: bool) -> (Client, Option<String>) {
        let mut client = self.bound(username).await;
        let enable = if resume {
            format!("<enable xmlns='{SM}' resume='true'/>")
        } else {
            format!("<enable xmlns='{SM}'/>")
        };
        client.send(&enable).await;
        client.read_until("</enabled>").await;
        let id = attribute(&client.read, "enabled", "id").map(str::to_string);
        assert_eq!(id.is_some(), resume, "{}", client.read);
        (client, id)
    }

    /// A new connection of `username` that asks to resume `previd` having handled `h`.
    async fn resume(&self, username: &'static str, previd: &str, h: u32) -> Client {
        let mut client = self.connect(Start::Session { username });
        client.send(HEADER).await;
        client.read_until("</stream:features>").await;
        client.read.clear();
        client
            .send(&format!("<resume xmlns='{SM}' previd='{previd}' h='{h}'/>"))
            .await;
        client
    }

    /// Waits until `username` has `count` stored offline messages; returns them.
    async fn offline_eventually(&self, username: &str, count: usize) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let stored = self.offline_messages(username);
            if stored.len() >= count || tokio::time::Instant::now() > deadline {
                return stored;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Client {
    /// Sends a chat to bob's bare JID.
    async fn chat_to_bob(&mut self, body: &str) {
        self.send(&format!(
            "<message to='bob@localhost' type='chat'><body>{body}</body></message>"
        ))
        .await;
    }

    /// Pings the server and waits for the answer: everything the server had to write before it
    /// handles the ping has been read.
    async fn round_trip(&mut self) {
        self.send(PING).await;
        self.read_until("id='ping1'").await;
    }
}

/// alice and bob online, both available; bob with stream management (and resumption).
async fn alice_and_managed_bob(server: &Server) -> (Client, Client, Option<String>) {
    let mut alice = server.bound("alice").await;
    alice.send("<presence/>").await;
    alice.read_until("<presence").await;
    let (mut bob, id) = server.managed("bob", true).await;
    bob.send("<presence/>").await;
    bob.read_until("from='bob@localhost/phone'").await;
    (alice, bob, id)
}

#[tokio::test]
async fn stream_management_and_csi_are_offered_after_login() {
    let server = Server::new();
    let mut alice = server.connect(Start::Session { username: "alice" });
    alice.send(HEADER).await;
    let features = alice.read_until("</stream:features>").await;
    assert!(features.contains("<sm xmlns='urn:xmpp:sm:3'"), "{features}");
    assert!(
        features.contains("<csi xmlns='urn:xmpp:csi:0'"),
        "{features}"
    );
}

#[tokio::test]
async fn enable_before_bind_or_twice_is_an_unexpected_request() {
    let server = Server::new();
    let mut alice = server.connect(Start::Session { username: "alice" });
    alice.send(HEADER).await;
    alice.read_until("</stream:features>").await;
    alice.send(&format!("<enable xmlns='{SM}'/>")).await;
    let failed = alice.read_until("</failed>").await;
    assert!(failed.contains("<unexpected-request"), "{failed}");
    alice.send(BIND).await;
    alice.read_until("<jid>alice@localhost/phone</jid>").await;
    alice.read.clear();
    alice
        .send(&format!("<enable xmlns='{SM}' resume='true'/>"))
        .await;
    let enabled = alice.read_until("</enabled>").await.to_string();
    assert_eq!(
        attribute(&alice.read, "enabled", "resume"),
        Some("true"),
        "{enabled}"
    );
    assert_eq!(
        attribute(&alice.read, "enabled", "max"),
        Some("600"),
        "{enabled}"
    );
    assert_eq!(server.shared.resumptions.len(), 1);
    alice.read.clear();
    alice.send(&format!("<enable xmlns='{SM}'/>")).await;
    let failed = alice.read_until("</failed>").await;
    assert!(failed.contains("<unexpected-request"), "{failed}");
    // The session goes on.
    alice.round_trip().await;
}

#[tokio::test]
async fn the_server_counts_what_the_client_sent_and_asks_for_acks_after_writing() {
    let server = Server::new();
    let (mut alice, mut bob, _) = alice_and_managed_bob(&server).await;
    // bob sent one stanza since enabling (his presence); a ping makes two.
    bob.round_trip().await;
    bob.send(&format!("<r xmlns='{SM}'/>")).await;
    bob.read_until("</a>").await;
    assert_eq!(attribute(&bob.read, "a", "h"), Some("2"), "{}", bob.read);
    // The server asked for an ack after it wrote bob's and alice's presence; bob answers it.
    let h = stanzas_since(&bob.read, "<enabled");
    bob.send(&format!("<a xmlns='{SM}' h='{h}'/>")).await;
    bob.read.clear();
    alice.chat_to_bob("ask-me").await;
    let read = bob.read_until("ask-me").await.to_string();
    let after = read.find("ask-me").unwrap_or_default();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !bob.read[after..].contains("<r xmlns='urn:xmpp:sm:3'>")
        && tokio::time::Instant::now() < deadline
    {
        let _ = tokio::time::timeout(WAIT, bob.read_some()).await;
    }
    assert!(
        bob.read[after..].contains("<r xmlns='urn:xmpp:sm:3'>"),
        "a request follows the message: {}",
        bob.read
    );
}

#[tokio::test]
async fn an_ack_beyond_what_was_sent_ends_the_stream_with_handled_count_too_high() {
    let server = Server::new();
    let (mut alice, _) = server.managed("alice", false).await;
    alice.send(&format!("<a xmlns='{SM}' h='5'/>")).await;
    let answer = alice.read_to_end().await;
    assert_eq!(
        stream_error(answer),
        Some("undefined-condition"),
        "{answer}"
    );
    assert!(
        answer.contains("<handled-count-too-high xmlns='urn:xmpp:sm:3'")
            && answer.contains("h='5'")
            && answer.contains("send-count='0'"),
        "{answer}"
    );
}

/// bob has read `before` and acknowledged it, then read `unacked` without acknowledging it;
/// returns his `h`.
async fn bob_reads_and_acks_some(alice: &mut Client, bob: &mut Client) -> u32 {
    alice.chat_to_bob("before-the-cut").await;
    bob.read_until("before-the-cut").await;
    let h = stanzas_since(&bob.read, "<enabled");
    bob.send(&format!("<a xmlns='{SM}' h='{h}'/>")).await;
    bob.round_trip().await;
    let h = stanzas_since(&bob.read, "<enabled");
    bob.send(&format!("<a xmlns='{SM}' h='{h}'/>")).await;
    alice.chat_to_bob("unacked-one").await;
    bob.read_until("unacked-one").await;
    h
}

#[tokio::test]
async fn a_resumed_session_gets_every_unacknowledged_stanza_exactly_once() {
    let server = Server::new();
    let (mut alice, mut bob, id) = alice_and_managed_bob(&server).await;
    let id = id.unwrap();
    let h = bob_reads_and_acks_some(&mut alice, &mut bob).await;
    // The link dies without a goodbye.
    drop(bob);
    alice.chat_to_bob("while-away-1").await;
    alice.chat_to_bob("while-away-2").await;
    alice.round_trip().await;

    let mut bob = server.resume("bob", &id, h).await;
    bob.read_until("<resumed").await;
    assert_eq!(attribute(&bob.read, "resumed", "previd"), Some(&*id));
    bob.read_until("while-away-2").await;
    bob.round_trip().await;
    let read = bob.read.clone();
    for body in ["unacked-one", "while-away-1", "while-away-2"] {
        assert_eq!(read.matches(body).count(), 1, "{body} once: {read}");
    }
    assert!(!read.contains("before-the-cut"), "acknowledged: {read}");
    // Resent in order.
    assert!(
        read.find("unacked-one") < read.find("while-away-1"),
        "{read}"
    );
    // alice never saw bob go away, and nothing waits in offline storage.
    assert!(!alice.read.contains("type='unavailable'"), "{}", alice.read);
    assert!(server.offline_messages("bob").is_empty());
    // The resumed session is a live one: acks go on from where they were.
    bob.send(&format!("<r xmlns='{SM}'/>")).await;
    bob.read_until("<a ").await;
    assert_eq!(server.shared.resumptions.len(), 1);
}

#[tokio::test]
async fn a_resumption_while_the_old_connection_is_still_open_takes_it_over() {
    let server = Server::new();
    let (mut alice, mut old, id) = alice_and_managed_bob(&server).await;
    let id = id.unwrap();
    let h = bob_reads_and_acks_some(&mut alice, &mut old).await;
    let mut bob = server.resume("bob", &id, h).await;
    bob.read_until("<resumed").await;
    bob.read_until("unacked-one").await;
    let answer = old.read_to_end().await;
    assert_eq!(stream_error(answer), Some("conflict"), "{answer}");
    alice.chat_to_bob("after-the-move").await;
    bob.read_until("after-the-move").await;
    bob.round_trip().await;
    assert_eq!(bob.read.matches("unacked-one").count(), 1, "{}", bob.read);
    assert!(!old.read.contains("after-the-move"));
}

#[tokio::test]
async fn an_unknown_id_and_another_accounts_id_get_the_same_item_not_found() {
    let server = Server::new();
    let (_alice, alices_id) = server.managed("alice", true).await;
    let alices_id = alices_id.unwrap();
    let mut answers = Vec::new();
    for id in [alices_id.as_str(), "0123456789abcdef0123456789abcdef", ""] {
        let mut bob = server.resume("bob", id, 0).await;
        answers.push(bob.read_until("</failed>").await.to_string());
        // bob may bind as usual after that.
        bob.send(BIND).await;
        bob.read_until("<jid>bob@localhost/phone</jid>").await;
    }
    assert!(answers[0].contains("<item-not-found"), "{}", answers[0]);
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0], answers[2]);
}

#[tokio::test]
async fn a_resumption_with_too_high_an_h_fails_and_stores_the_messages_offline() {
    let server = Server::new();
    let (mut alice, bob, id) = alice_and_managed_bob(&server).await;
    drop(bob);
    alice.chat_to_bob("kept-safe").await;
    alice.round_trip().await;
    let mut bob = server.resume("bob", &id.unwrap(), 99).await;
    let answer = bob.read_to_end().await;
    assert_eq!(
        stream_error(answer),
        Some("undefined-condition"),
        "{answer}"
    );
    assert!(answer.contains("<handled-count-too-high"), "{answer}");
    let stored = server.offline_eventually("bob", 1).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert!(stored[0].contains("kept-safe"), "{stored:?}");
    assert_eq!(server.shared.resumptions.len(), 0);
}

#[tokio::test]
async fn when_the_resumption_time_is_over_the_messages_arrive_at_the_next_login() {
    let server = Server::with_limits(|limits| limits.resume_timeout = Duration::from_millis(300));
    let (mut alice, mut bob, id) = alice_and_managed_bob(&server).await;
    let h = bob_reads_and_acks_some(&mut alice, &mut bob).await;
    drop(bob);
    alice.chat_to_bob("missed-1").await;
    alice.chat_to_bob("missed-2").await;
    let stored = server.offline_eventually("bob", 3).await;
    assert_eq!(stored.len(), 3, "{stored:?}");
    // bob is gone for his contacts now.
    alice.read_until("type='unavailable'").await;
    // Too late to resume.
    let mut late = server.resume("bob", &id.unwrap(), h).await;
    late.read_until("<item-not-found").await;
    let mut bob = server.bound("bob").await;
    bob.send("<presence/>").await;
    bob.read_until("missed-2").await;
    bob.round_trip().await;
    for body in ["unacked-one", "missed-1", "missed-2"] {
        assert_eq!(bob.read.matches(body).count(), 1, "{body}: {}", bob.read);
    }
    assert!(!bob.read.contains("before-the-cut"));
    assert!(server.offline_messages("bob").is_empty());
}

#[tokio::test]
async fn a_clean_close_with_unacknowledged_messages_stores_them_offline() {
    let server = Server::new();
    let mut alice = server.bound("alice").await;
    let (mut bob, _) = server.managed("bob", false).await;
    bob.send("<presence/>").await;
    bob.read_until("from='bob@localhost/phone'").await;
    alice.chat_to_bob("read-but-not-acked").await;
    bob.read_until("read-but-not-acked").await;
    bob.send("</stream:stream>").await;
    bob.read_to_end().await;
    let stored = server.offline_eventually("bob", 1).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert!(stored[0].contains("read-but-not-acked"), "{stored:?}");
    // One delay stamp: the time it first arrived.
    assert_eq!(stored[0].matches("<delay ").count(), 1, "{stored:?}");
}

#[tokio::test]
async fn a_client_that_never_acknowledges_is_closed_at_the_limit_and_nothing_is_lost() {
    // With the idle limit at 1 s, a client has 1 s to acknowledge something once the limit of
    // unacknowledged stanzas is reached.
    let server = Server::with_limits(|limits| {
        limits.max_unacked = 2;
        limits.idle_ping_after = Duration::from_secs(1);
    });
    let mut alice = server.bound("alice").await;
    let (mut bob, _) = server.managed("bob", false).await;
    // No presence from bob: the messages go to his full JID.
    for n in 1..=4 {
        alice
            .send(&format!(
                "<message to='bob@localhost/phone' type='chat'><body>n{n}</body></message>"
            ))
            .await;
    }
    let answer = bob.read_to_end().await;
    assert_eq!(stream_error(answer), Some("policy-violation"), "{answer}");
    assert!(answer.contains("unacknowledged"), "{answer}");
    assert!(!answer.contains(">n3<"), "only two written: {answer}");
    let stored = server.offline_eventually("bob", 4).await;
    let all = stored.join("");
    for n in 1..=4 {
        assert_eq!(
            all.matches(&format!(">n{n}<")).count(),
            1,
            "n{n}: {stored:?}"
        );
    }
}

impl Client {
    /// Reads until `needle`, answering every ack request with everything read since `from`.
    async fn read_acking(&mut self, needle: &str, from: &str) {
        let request = format!("<r xmlns='{SM}'>");
        let mut answered = 0;
        let deadline = tokio::time::Instant::now() + WAIT;
        while !self.read.contains(needle) && tokio::time::Instant::now() < deadline {
            let requests = self.read.matches(&request).count();
            if requests > answered {
                answered = requests;
                let h = stanzas_since(&self.read, from);
                self.send(&format!("<a xmlns='{SM}' h='{h}'/>")).await;
            }
            let _ = tokio::time::timeout(WAIT, self.read_some()).await;
        }
        assert!(
            self.read.contains(needle),
            "expected {needle:?}: {}",
            self.read
        );
    }
}

#[tokio::test]
async fn more_stored_messages_than_the_limit_arrive_as_the_client_acknowledges_them() {
    let server = Server::with_limits(|limits| limits.max_unacked = 2);
    let mut alice = server.bound("alice").await;
    for n in 1..=7 {
        alice.chat_to_bob(&format!("stored-{n}")).await;
    }
    alice.round_trip().await;
    let (mut bob, _) = server.managed("bob", false).await;
    bob.send("<presence/>").await;
    bob.read_acking("stored-7", "<enabled").await;
    // Everything for bob waits behind the backlog, the ping's answer too: acks let it through.
    bob.send(PING).await;
    bob.read_acking("id='ping1'", "<enabled").await;
    for n in 1..=7 {
        assert_eq!(
            bob.read.matches(&format!("stored-{n}<")).count(),
            1,
            "{}",
            bob.read
        );
    }
    assert!(!bob.read.contains("stream:error"), "{}", bob.read);
}

#[tokio::test]
async fn an_inactive_client_gets_messages_at_once_and_the_latest_presence_when_active() {
    let server = Server::new();
    let mut alice = server.bound("alice").await;
    alice.send("<presence/>").await;
    alice.read_until("<presence").await;
    let (mut bob, _) = server.managed("bob", false).await;
    bob.send("<presence/>").await;
    bob.read_until("from='alice@localhost/phone'").await;
    bob.send("<inactive xmlns='urn:xmpp:csi:0'/>").await;
    bob.round_trip().await;
    bob.read.clear();
    for status in ["reading-1", "reading-2"] {
        alice
            .send(&format!("<presence><status>{status}</status></presence>"))
            .await;
    }
    alice.chat_to_bob("alert-now").await;
    alice
        .send("<presence><status>reading-3</status></presence>")
        .await;
    alice.round_trip().await;
    bob.read_until("alert-now").await;
    bob.round_trip().await;
    assert!(!bob.read.contains("reading-"), "held back: {}", bob.read);
    let before = stanzas_since(&bob.read, "");
    bob.send("<active xmlns='urn:xmpp:csi:0'/>").await;
    bob.read_until("reading-3").await;
    bob.round_trip().await;
    assert!(!bob.read.contains("reading-1") && !bob.read.contains("reading-2"));
    assert_eq!(bob.read.matches("reading-3").count(), 1);
    // Held presence was not counted before it was written: acking everything read is right.
    let h = stanzas_since(&bob.read, "");
    assert!(h > before);
    bob.send(&format!("<r xmlns='{SM}'/>")).await;
    bob.read_until("<a ").await;
}

#[tokio::test]
async fn a_flood_of_ack_requests_is_answered_at_the_byte_rate_and_the_session_goes_on() {
    let server = Server::new();
    let (mut alice, _) = server.managed("alice", false).await;
    let flood = format!("<r xmlns='{SM}'/>").repeat(2000);
    alice.send(&flood).await;
    alice.round_trip().await;
    assert_eq!(
        alice
            .read
            .matches("<a xmlns='urn:xmpp:sm:3' h='0'>")
            .count(),
        2000
    );
}

#[tokio::test]
async fn a_flood_of_client_state_changes_costs_nothing_and_the_session_goes_on() {
    let server = Server::new();
    let mut alice = server.bound("alice").await;
    let flood = "<inactive xmlns='urn:xmpp:csi:0'/><active xmlns='urn:xmpp:csi:0'/>".repeat(2000);
    alice.send(&flood).await;
    alice.round_trip().await;
    assert!(!alice.read.contains("stream:error"), "{}", alice.read);
}
