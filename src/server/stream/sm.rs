//! XEP-0198 stream management, sans-IO: the counting rules over [`SmState`] (defined in
//! `shared.rs`, because a resumed session carries it from one connection to the next).
//!
//! - **Counting** (§4): `handled` counts the stanzas the client sent; the stanzas the server
//!   writes stay in `queue` until the client's `<a h='…'/>` acknowledges them. Both counts run
//!   modulo 2^32.
//! - **Acks** (§4): an `h` that acknowledges more stanzas than were written (or goes backwards)
//!   is `handled-count-too-high`, a stream error.
//! - **Requests**: the server asks for an ack (`<r/>`) when it has written stanzas and the hub
//!   has nothing more queued for the session (the end of a burst), not again while one is
//!   outstanding, and not twice for the same count (as Prosody's `mod_smacks` does), so a client
//!   that keeps answering with the same `h` cannot make the two of them ping-pong.
//! - **Resumption** (§5): the client's `h` in `<resume/>` acknowledges what it got; every stanza
//!   left in the queue is written again on the new connection, exactly once.
//! - **Bounds**: at most `ServerLimits::max_unacked` written stanzas wait for an ack; more wait
//!   in the queue unwritten (the session loop then stops taking stanzas from the hub, and ends
//!   a session whose client acknowledges nothing within the write stall limit).

use tokio_xmpp::parsers::sm::HandledCountTooHigh;
use tokio_xmpp::Stanza;

use crate::server::shared::SmState;

/// The resumption id of a new resumable session: 128 random bits, as hex.
pub(super) fn new_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

impl SmState {
    /// A stanza arrived from the client (§4: the `h` the server reports counts it).
    pub(super) fn received(&mut self) {
        self.handled = self.handled.wrapping_add(1);
    }

    /// Stanzas written to the client since stream management was enabled, modulo 2^32.
    pub(super) fn sent(&self) -> u32 {
        // The queue is bounded far below 2^32, so the cast loses nothing.
        self.acked.wrapping_add(self.written as u32)
    }

    /// Whether `max` written stanzas wait for an ack.
    pub(super) fn is_full(&self, max: usize) -> bool {
        self.written >= max
    }

    /// Whether stanzas wait to be written.
    pub(super) fn has_pending(&self) -> bool {
        self.written < self.queue.len()
    }

    /// Queues a stanza that is written right now, and returns it for writing.
    pub(super) fn push_written(&mut self, stanza: Stanza) -> &Stanza {
        // Written counts only stanzas at the front: write the waiting ones first.
        debug_assert_eq!(self.written, self.queue.len());
        self.queue.push_back(stanza);
        self.written += 1;
        &self.queue[self.queue.len() - 1]
    }

    /// Queues a stanza that waits for a connection (the session hibernates).
    pub(super) fn push_pending(&mut self, stanza: Stanza) {
        self.queue.push_back(stanza);
    }

    /// The next stanza that waits to be written (after a resumption), now counted as written.
    pub(super) fn next_pending(&mut self) -> Option<&Stanza> {
        let next = self.queue.get(self.written)?;
        self.written += 1;
        Some(next)
    }

    /// The client acknowledged `h` stanzas (§4): the acknowledged ones leave the queue. An `h`
    /// beyond what was written is refused, with the counts for the stream error.
    pub(super) fn acknowledge(&mut self, h: u32) -> Result<(), HandledCountTooHigh> {
        let newly = h.wrapping_sub(self.acked) as usize;
        if newly > self.written {
            return Err(HandledCountTooHigh {
                h,
                send_count: self.sent(),
            });
        }
        self.queue.drain(..newly);
        self.written -= newly;
        self.acked = h;
        self.awaiting = false;
        Ok(())
    }

    /// Whether to send `<r/>` now (see the module documentation); if so, records that it was.
    pub(super) fn request(&mut self) -> bool {
        let sent = self.sent();
        if self.awaiting || self.written == 0 || self.requested == Some(sent) {
            return false;
        }
        self.awaiting = true;
        self.requested = Some(sent);
        true
    }

    /// A resumption with the client's `h` (§5): acknowledges, then every stanza left in the
    /// queue waits to be written again.
    pub(super) fn resume(&mut self, h: u32) -> Result<(), HandledCountTooHigh> {
        self.acknowledge(h)?;
        self.written = 0;
        self.awaiting = false;
        self.requested = None;
        Ok(())
    }

    /// The stanzas never acknowledged, oldest first, when the session ends.
    pub(super) fn into_unacked(self) -> Vec<Stanza> {
        self.queue.into()
    }
}

#[cfg(test)]
mod tests {
    use tokio_xmpp::parsers::message::Message;

    use super::*;

    fn chat(n: u32) -> Stanza {
        Message::chat(None)
            .with_body(Default::default(), n.to_string())
            .into()
    }

    fn bodies(sm: &SmState) -> Vec<String> {
        sm.queue
            .iter()
            .map(|s| match s {
                Stanza::Message(m) => m.bodies.values().next().cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .collect()
    }

    #[test]
    fn acknowledged_stanzas_leave_the_queue_and_the_rest_stay_in_order() {
        let mut sm = SmState::default();
        for n in 1..=5 {
            sm.push_written(chat(n));
        }
        assert_eq!(sm.sent(), 5);
        sm.acknowledge(2).unwrap();
        assert_eq!(bodies(&sm), ["3", "4", "5"]);
        // The same h again acknowledges nothing new.
        sm.acknowledge(2).unwrap();
        assert_eq!(sm.queue.len(), 3);
        sm.acknowledge(5).unwrap();
        assert!(sm.queue.is_empty());
    }

    #[test]
    fn an_h_beyond_what_was_written_or_going_back_is_handled_count_too_high() {
        let mut sm = SmState::default();
        sm.push_written(chat(1));
        sm.push_written(chat(2));
        let error = sm.acknowledge(3).unwrap_err();
        assert_eq!((error.h, error.send_count), (3, 2));
        sm.acknowledge(2).unwrap();
        // Backwards wraps around to a huge count: refused too.
        assert!(sm.acknowledge(1).is_err());
        // Stanzas queued for a later connection are not written yet and cannot be acked.
        sm.push_pending(chat(3));
        assert_eq!(sm.acknowledge(3).unwrap_err().send_count, 2);
    }

    #[test]
    fn counts_wrap_around_at_two_to_the_32() {
        let mut sm = SmState {
            acked: u32::MAX - 1,
            handled: u32::MAX,
            ..SmState::default()
        };
        sm.received();
        assert_eq!(sm.handled, 0);
        for n in 0..4 {
            sm.push_written(chat(n));
        }
        assert_eq!(sm.sent(), 2);
        sm.acknowledge(1).unwrap();
        assert_eq!(bodies(&sm), ["3"]);
    }

    #[test]
    fn an_ack_is_requested_once_per_burst_and_not_again_for_the_same_count() {
        let mut sm = SmState::default();
        assert!(!sm.request(), "nothing written");
        sm.push_written(chat(1));
        assert!(sm.request());
        sm.push_written(chat(2));
        assert!(!sm.request(), "one request outstanding");
        // A client that acknowledges only the first leaves one: ask again.
        sm.acknowledge(1).unwrap();
        assert!(sm.request());
        // It answers with the same h again: no new request until more is written.
        sm.acknowledge(1).unwrap();
        assert!(!sm.request());
        sm.push_written(chat(3));
        assert!(sm.request());
    }

    #[test]
    fn a_resumption_writes_every_unacknowledged_stanza_again_exactly_once() {
        let mut sm = SmState::default();
        for n in 1..=3 {
            sm.push_written(chat(n));
        }
        // The link died; two more arrived while the session hibernated.
        sm.push_pending(chat(4));
        sm.push_pending(chat(5));
        // The client had handled the first one.
        sm.resume(1).unwrap();
        let mut again = 0;
        while sm.next_pending().is_some() {
            again += 1;
        }
        assert_eq!(again, 4);
        assert_eq!(bodies(&sm), ["2", "3", "4", "5"]);
        assert_eq!(sm.sent(), 5);
        assert!(sm.next_pending().is_none());
        sm.acknowledge(5).unwrap();
        assert!(sm.into_unacked().is_empty());
    }

    #[test]
    fn a_resumption_with_a_too_high_h_is_refused() {
        let mut sm = SmState::default();
        sm.push_written(chat(1));
        sm.push_pending(chat(2));
        let error = sm.resume(2).unwrap_err();
        assert_eq!((error.h, error.send_count), (2, 1));
        assert_eq!(sm.into_unacked().len(), 2, "nothing is lost");
    }
}
