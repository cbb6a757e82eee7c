//! Who may speak in a room, and how fast (XEP-0045 §7.4, §8.1, and the service's own limits).
//!
//! - **Moderation**: in a moderated room a visitor's groupchat message is refused with
//!   `forbidden` (§7.4, §8.3); so is a subject change by someone who may not change it
//!   (§8.1: moderators, and participants when the room lets occupants change the subject).
//! - **Message rate**: each occupant of each room has a token bucket
//!   ([`MucLimits::messages_per_minute`], [`MucLimits::message_burst`]); an invitation, a
//!   presence update and a nick change (each goes to every occupant) cost a token too. An empty bucket refuses the message with `resource-constraint` and a text
//!   saying to slow down, and nothing is delivered: one occupant's flood costs the room one
//!   error per message, not one copy per occupant.
//! - **Join rate**: each account has a bucket of joins ([`MucLimits::joins_per_minute`],
//!   [`MucLimits::join_burst`]); a join past it gets `resource-constraint`. A join makes the
//!   room send presence to every occupant, so a join flood is a presence flood.
//!
//! The buckets are kept in memory only while they are not full: a full bucket is the same as
//! none, so the maps are pruned of full buckets when they grow, and stay bounded by the number
//! of occupants and accounts that sent something recently.
//!
//! [`MucLimits::messages_per_minute`]: crate::server::limits::MucLimits::messages_per_minute
//! [`MucLimits::message_burst`]: crate::server::limits::MucLimits::message_burst
//! [`MucLimits::joins_per_minute`]: crate::server::limits::MucLimits::joins_per_minute
//! [`MucLimits::join_burst`]: crate::server::limits::MucLimits::join_burst

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use tokio_xmpp::jid::{BareJid, FullJid};
use tokio_xmpp::parsers::message::Message;
use tokio_xmpp::parsers::stanza_error::DefinedCondition;

use super::admin::Refusal;
use super::room::{Role, Room};
use crate::server::limits::MucLimits;

/// Buckets are pruned when a map holds more than this many.
const PRUNE_ABOVE: usize = 1024;

/// A token bucket, in thousandths of a token so that slow rates refill smoothly.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    milli_tokens: u64,
    at: Instant,
}

/// A rate: `per_minute` tokens a minute, at most `burst` at once.
#[derive(Debug, Clone, Copy)]
struct Rate {
    per_minute: u32,
    burst: u32,
}

impl Rate {
    fn capacity(self) -> u64 {
        u64::from(self.burst.max(1)) * 1000
    }
}

impl Bucket {
    /// The bucket's tokens at `now`.
    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed =
            u64::try_from(now.saturating_duration_since(self.at).as_millis()).unwrap_or(u64::MAX);
        // Thousandths of a token per millisecond: per_minute / 60.
        let gained = elapsed.saturating_mul(u64::from(rate.per_minute)) / 60;
        self.milli_tokens = self
            .milli_tokens
            .saturating_add(gained)
            .min(rate.capacity());
        self.at = now;
    }

    /// Takes `n` tokens if there are that many.
    fn take(&mut self, n: u32, rate: Rate, now: Instant) -> bool {
        self.refill(rate, now);
        let cost = u64::from(n) * 1000;
        if self.milli_tokens >= cost {
            self.milli_tokens -= cost;
            true
        } else {
            false
        }
    }

    fn is_full(mut self, rate: Rate, now: Instant) -> bool {
        self.refill(rate, now);
        self.milli_tokens >= rate.capacity()
    }
}

/// Takes `n` tokens from `key`'s bucket in `buckets` (a full one if it has none).
fn take<K: std::hash::Hash + Eq>(
    buckets: &mut HashMap<K, Bucket>,
    key: K,
    n: u32,
    rate: Rate,
    now: Instant,
) -> bool {
    if buckets.len() > PRUNE_ABOVE {
        buckets.retain(|_, b| !b.is_full(rate, now));
    }
    buckets
        .entry(key)
        .or_insert(Bucket {
            milli_tokens: rate.capacity(),
            at: now,
        })
        .take(n, rate, now)
}

/// The rooms' rate buckets.
#[derive(Debug, Default)]
pub(super) struct Flood {
    /// Accounts with no room message rate: the server's `--unthrottled` ones (the bot).
    pub(super) exempt: HashSet<BareJid>,
    /// Per occupant session of a room: groupchat messages and invitations.
    messages: HashMap<(BareJid, FullJid), Bucket>,
    /// Per account: joins.
    joins: HashMap<BareJid, Bucket>,
}

impl Flood {
    /// Whether `from` may send `n` more messages (or invitations) to `room` now.
    pub(super) fn allow_messages(
        &mut self,
        room: &BareJid,
        from: &FullJid,
        n: u32,
        limits: &MucLimits,
        now: Instant,
    ) -> Result<(), Refusal> {
        if self.exempt.contains(&from.to_bare()) {
            return Ok(());
        }
        let rate = Rate {
            per_minute: limits.messages_per_minute,
            burst: limits.message_burst,
        };
        if take(
            &mut self.messages,
            (room.clone(), from.clone()),
            n,
            rate,
            now,
        ) {
            Ok(())
        } else {
            Err(Refusal::explained(
                DefinedCondition::ResourceConstraint,
                format!(
                    "too many messages to this room: at most {} a minute; wait and send again",
                    limits.messages_per_minute
                ),
            ))
        }
    }

    /// Whether the account of `from` may join one more room now.
    pub(super) fn allow_join(
        &mut self,
        from: &FullJid,
        limits: &MucLimits,
        now: Instant,
    ) -> Result<(), Refusal> {
        let rate = Rate {
            per_minute: limits.joins_per_minute,
            burst: limits.join_burst,
        };
        if take(&mut self.joins, from.to_bare(), 1, rate, now) {
            Ok(())
        } else {
            Err(Refusal::explained(
                DefinedCondition::ResourceConstraint,
                format!(
                    "too many rooms joined: at most {} a minute; wait and join again",
                    limits.joins_per_minute
                ),
            ))
        }
    }
}

impl Room {
    /// Whether the occupant `nick` may send the groupchat `message` (§7.4: a visitor in a
    /// moderated room may not; §8.1: who may change the subject).
    pub(super) fn may_speak(&self, nick: &str, message: &Message) -> Result<(), Refusal> {
        let Some(occupant) = self.occupant(nick) else {
            return Err(DefinedCondition::NotAcceptable.into());
        };
        let visitor = occupant.role == Role::Visitor;
        if visitor && self.config.moderated {
            return Err(Refusal::explained(
                DefinedCondition::Forbidden,
                "this room is moderated: visitors may not speak; ask a moderator for voice",
            ));
        }
        let subject_change = !message.subjects.is_empty() && message.bodies.is_empty();
        if subject_change
            && occupant.role != Role::Moderator
            && (visitor || !self.config.change_subject)
        {
            return Err(Refusal::explained(
                DefinedCondition::Forbidden,
                "only moderators may change this room's subject",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const RATE: Rate = Rate {
        per_minute: 60,
        burst: 3,
    };

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_the_rate() {
        let start = Instant::now();
        let mut buckets = HashMap::new();
        for _ in 0..3 {
            assert!(take(&mut buckets, "a", 1, RATE, start));
        }
        assert!(!take(&mut buckets, "a", 1, RATE, start));
        // Others have their own bucket.
        assert!(take(&mut buckets, "b", 1, RATE, start));
        // One a second.
        assert!(!take(
            &mut buckets,
            "a",
            1,
            RATE,
            start + Duration::from_millis(900)
        ));
        assert!(take(
            &mut buckets,
            "a",
            1,
            RATE,
            start + Duration::from_millis(1000)
        ));
        // Never more than the burst, however long the wait.
        let later = start + Duration::from_secs(3600);
        assert!(!take(&mut buckets, "a", 4, RATE, later));
        assert!(take(&mut buckets, "a", 3, RATE, later));
    }

    #[test]
    fn full_buckets_are_forgotten_when_the_map_grows() {
        let start = Instant::now();
        let mut buckets = HashMap::new();
        for i in 0..=PRUNE_ABOVE {
            take(&mut buckets, i, 1, RATE, start);
        }
        // A while later they are all full again: the next take prunes them.
        take(
            &mut buckets,
            usize::MAX,
            1,
            RATE,
            start + Duration::from_secs(10),
        );
        assert_eq!(buckets.len(), 1);
    }
}
