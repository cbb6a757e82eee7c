//! Who may ask the bot what, and how often. Pure: the caller passes the time.
//!
//! - [`Access`]: with no `--allow`/`--allow-domain`, anyone may read (the default reading, `get`,
//!   `list`, `stale`, `help`), but nobody may set alerts or ask for `stats`, which make the bot
//!   send unasked messages or scan its history. With an allow list, listed contacts may do
//!   everything and nobody else may do anything.
//! - [`Refusals`]: a contact the bot will not serve gets one polite refusal per window, then
//!   silence, so a stranger cannot use the bot to bounce messages.
//! - [`RateLimit`]: a token bucket per contact. Over it, the contact gets one "slow down" and then
//!   no replies until the bucket refills: a chat flood cannot make the bot an amplifier.
//!
//! Both trackers are bounded: they forget contacts whose state has expired when they grow past
//! [`MAX_TRACKED`], and never hold more than that.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

/// Most contacts a tracker remembers.
pub const MAX_TRACKED: usize = 10_000;

/// The allow list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    jids: HashSet<String>,
    domains: HashSet<String>,
}

/// What a contact may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Nothing: refused politely (once per window).
    None,
    /// Readings only: no alerts, no stats (open bot, contact not listed).
    Read,
    /// Everything.
    All,
}

impl Access {
    /// An allow list of bare JIDs and domains (both compared in lower case). Empty: open.
    pub fn new(
        jids: impl IntoIterator<Item = String>,
        domains: impl IntoIterator<Item = String>,
    ) -> Self {
        Self {
            jids: jids.into_iter().map(|j| j.to_lowercase()).collect(),
            domains: domains.into_iter().map(|d| d.to_lowercase()).collect(),
        }
    }

    /// Whether an allow list is set.
    pub fn is_restricted(&self) -> bool {
        !self.jids.is_empty() || !self.domains.is_empty()
    }

    /// What `bare_jid` (`user@domain`) may do.
    pub fn permission(&self, bare_jid: &str) -> Permission {
        let jid = bare_jid.to_lowercase();
        let domain = jid.rsplit_once('@').map_or(jid.as_str(), |(_, d)| d);
        if self.jids.contains(&jid) || self.domains.contains(domain) {
            Permission::All
        } else if self.is_restricted() {
            Permission::None
        } else {
            Permission::Read
        }
    }
}

/// One refusal per contact per window.
#[derive(Debug)]
pub struct Refusals {
    window: Duration,
    last: HashMap<String, Instant>,
}

impl Refusals {
    /// Refuse each contact at most once per `window`.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            last: HashMap::new(),
        }
    }

    /// Whether to send `contact` a refusal now (`false`: stay silent).
    pub fn admit(&mut self, contact: &str, now: Instant) -> bool {
        if let Some(at) = self.last.get(contact) {
            if now.saturating_duration_since(*at) < self.window {
                return false;
            }
        }
        if self.last.len() >= MAX_TRACKED && !self.last.contains_key(contact) {
            let window = self.window;
            self.last
                .retain(|_, at| now.saturating_duration_since(*at) < window);
            if self.last.len() >= MAX_TRACKED {
                // Every slot is a fresh refusal: silence is the safe answer.
                return false;
            }
        }
        self.last.insert(contact.to_string(), now);
        true
    }
}

/// What to do with one message, per the rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Answer it.
    Reply,
    /// Over the limit for the first time: answer with a "slow down" notice instead.
    Warn,
    /// Over the limit: no answer at all.
    Drop,
}

/// One contact's token bucket: replies left, when last counted, and whether it was warned.
#[derive(Debug, Clone, Copy)]
struct ReplyBucket {
    tokens: f64,
    at: Instant,
    warned: bool,
}

/// A token bucket per contact: `per_minute` replies a minute on average, `burst` in a row.
#[derive(Debug)]
pub struct RateLimit {
    per_second: f64,
    burst: f64,
    buckets: HashMap<String, ReplyBucket>,
}

impl RateLimit {
    /// `per_minute` replies a minute with bursts of up to `burst`.
    pub fn new(per_minute: u32, burst: u32) -> Self {
        Self {
            per_second: f64::from(per_minute) / 60.0,
            burst: f64::from(burst.max(1)),
            buckets: HashMap::new(),
        }
    }

    /// Takes one token for `contact`'s message.
    pub fn admit(&mut self, contact: &str, now: Instant) -> Verdict {
        if self.buckets.len() >= MAX_TRACKED && !self.buckets.contains_key(contact) {
            self.forget_full(now);
            if self.buckets.len() >= MAX_TRACKED {
                return Verdict::Drop;
            }
        }
        let (per_second, burst) = (self.per_second, self.burst);
        let bucket = self
            .buckets
            .entry(contact.to_string())
            .or_insert(ReplyBucket {
                tokens: burst,
                at: now,
                warned: false,
            });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            bucket.warned = false;
            Verdict::Reply
        } else if !bucket.warned {
            bucket.warned = true;
            Verdict::Warn
        } else {
            Verdict::Drop
        }
    }

    /// Forgets contacts whose bucket has refilled: they behave as new ones anyway.
    fn forget_full(&mut self, now: Instant) {
        let (per_second, burst) = (self.per_second, self.burst);
        self.buckets.retain(|_, b| {
            let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
            b.tokens + elapsed * per_second < burst
        });
    }

    /// Contacts tracked.
    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

/// At most `limit` events per `window` for each key, counted over a sliding window; at most
/// `max_keys` keys, the idle ones forgotten first (a key with nothing in the window behaves as
/// a new one anyway). The room loop guard and the chart limit count this way.
#[derive(Debug, Clone)]
pub struct SlidingLimit {
    limit: usize,
    window: Duration,
    max_keys: usize,
    recent: HashMap<String, VecDeque<Instant>>,
}

impl SlidingLimit {
    /// `limit` events per `window` per key, for at most `max_keys` keys.
    pub fn new(limit: usize, window: Duration, max_keys: usize) -> Self {
        Self {
            limit,
            window,
            max_keys,
            recent: HashMap::new(),
        }
    }

    /// Whether `key` may have another event at `now`; counts it if so.
    pub fn admit(&mut self, key: &str, now: Instant) -> bool {
        let window = self.window;
        if !self.recent.contains_key(key) && self.recent.len() >= self.max_keys {
            self.recent.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.saturating_duration_since(*t) < window)
            });
            if self.recent.len() >= self.max_keys {
                return false;
            }
        }
        let times = self.recent.entry(key.to_string()).or_default();
        while times
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            times.pop_front();
        }
        if times.len() >= self.limit {
            return false;
        }
        times.push_back(now);
        true
    }

    /// Forgets `key` (it left): it starts afresh if it comes back.
    pub fn forget(&mut self, key: &str) {
        self.recent.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sliding_limit_counts_per_key_and_holds_at_most_its_keys() {
        let minute = Duration::from_secs(60);
        let mut limit = SlidingLimit::new(2, minute, 2);
        let t0 = Instant::now();
        assert!(limit.admit("a", t0));
        assert!(limit.admit("a", t0));
        assert!(!limit.admit("a", t0 + Duration::from_secs(59)));
        assert!(limit.admit("b", t0));
        // Two keys busy within the window: a third is refused, not tracked.
        assert!(!limit.admit("c", t0 + Duration::from_secs(30)));
        // A minute on, the idle keys are forgotten and the third one counts.
        assert!(limit.admit("c", t0 + minute));
        assert!(limit.admit("a", t0 + minute));
        // A key forgotten starts afresh.
        assert!(limit.admit("c", t0 + minute));
        assert!(!limit.admit("c", t0 + minute));
        limit.forget("c");
        assert!(limit.admit("c", t0 + minute));
    }

    #[test]
    fn an_open_bot_lets_anyone_read_and_nobody_set_alerts() {
        let open = Access::default();
        assert!(!open.is_restricted());
        assert_eq!(open.permission("anyone@example.org"), Permission::Read);
    }

    #[test]
    fn an_allow_list_names_jids_and_domains() {
        let access = Access::new(
            ["Alice@Example.org".to_string()],
            ["lab.example.org".to_string()],
        );
        assert_eq!(access.permission("alice@example.org"), Permission::All);
        assert_eq!(access.permission("ALICE@example.org"), Permission::All);
        assert_eq!(access.permission("bob@lab.example.org"), Permission::All);
        assert_eq!(access.permission("bob@example.org"), Permission::None);
        assert_eq!(
            access.permission("bob@evil.lab.example.org"),
            Permission::None
        );
        assert_eq!(access.permission("lab.example.org"), Permission::All);
    }

    #[test]
    fn one_refusal_per_window_then_silence() {
        let mut refusals = Refusals::new(Duration::from_secs(3600));
        let t0 = Instant::now();
        assert!(refusals.admit("eve@x", t0));
        assert!(!refusals.admit("eve@x", t0 + Duration::from_secs(1)));
        assert!(!refusals.admit("eve@x", t0 + Duration::from_secs(3599)));
        assert!(refusals.admit("mallory@x", t0 + Duration::from_secs(2)));
        assert!(refusals.admit("eve@x", t0 + Duration::from_secs(3600)));
    }

    #[test]
    fn refusals_stay_bounded_under_a_flood_of_senders() {
        let mut refusals = Refusals::new(Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..MAX_TRACKED {
            assert!(refusals.admit(&format!("{i}@x"), t0));
        }
        assert!(!refusals.admit("one-more@x", t0), "full of fresh refusals");
        assert!(refusals.last.len() <= MAX_TRACKED);
        // Once the window is over, old entries are forgotten to make room.
        assert!(refusals.admit("one-more@x", t0 + Duration::from_secs(61)));
        assert_eq!(refusals.last.len(), 1);
    }

    #[test]
    fn the_rate_limit_allows_a_burst_warns_once_and_refills() {
        let mut limit = RateLimit::new(60, 3);
        let t0 = Instant::now();
        let verdicts: Vec<Verdict> = (0..6).map(|_| limit.admit("a@x", t0)).collect();
        use Verdict::*;
        assert_eq!(verdicts, [Reply, Reply, Reply, Warn, Drop, Drop]);
        assert_eq!(limit.admit("b@x", t0), Reply, "per contact");
        // One token a second comes back.
        assert_eq!(limit.admit("a@x", t0 + Duration::from_millis(1000)), Reply);
        assert_eq!(limit.admit("a@x", t0 + Duration::from_millis(1100)), Warn);
        assert_eq!(limit.admit("a@x", t0 + Duration::from_millis(1200)), Drop);
        // The bucket never holds more than the burst.
        let later = t0 + Duration::from_secs(3600);
        let verdicts: Vec<Verdict> = (0..4).map(|_| limit.admit("a@x", later)).collect();
        assert_eq!(verdicts, [Reply, Reply, Reply, Warn]);
    }

    #[test]
    fn the_rate_limit_stays_bounded() {
        let mut limit = RateLimit::new(60, 2);
        let t0 = Instant::now();
        for i in 0..MAX_TRACKED {
            limit.admit(&format!("{i}@x"), t0);
        }
        assert_eq!(limit.admit("new@x", t0), Verdict::Drop);
        // After a few seconds every bucket has refilled and can be forgotten.
        assert_eq!(
            limit.admit("new@x", t0 + Duration::from_secs(5)),
            Verdict::Reply
        );
        assert_eq!(limit.tracked(), 1);
    }
}
