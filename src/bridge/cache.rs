//! The latest [`Reading`] per concrete topic, with a bounded history of earlier ones, shared by
//! the MQTT task (writer) and the XMPP task (reader).
//!
//! Bounded twice: at most `max_topics` topics (a new topic beyond that is refused and counted; the
//! topics already tracked keep updating, so a flood of junk topics cannot push out real sensors),
//! and at most `history` readings per topic, oldest dropped first. A reading in the history costs
//! 24 bytes (one `Sample`, checked by a test), so the history needs at most `max_topics × history × 24` bytes (24 MB
//! with the defaults of 1000 topics and 1000 readings) plus about 200 bytes per topic.
//!
//! Pure data: the caller passes the time of receipt, so tests control the clock.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use super::reading::Reading;

/// A reading and when it arrived.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Entry {
    /// The last valid value received on the topic.
    pub reading: Reading,
    /// When the bridge received it (monotonic clock).
    pub received_at: Instant,
    /// The broker delivered it as a retained message on subscribing: it was published at some
    /// unknown earlier time, so its age is only a lower bound.
    pub retained: bool,
}

/// One reading of a topic's history.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// When it arrived.
    pub at: Instant,
    /// The value.
    pub value: f64,
}

/// What [`Cache::store`] did with a reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// The topic was tracked already.
    Updated,
    /// The first reading of a new topic.
    New,
    /// A new topic, but `max_topics` are tracked already: not stored.
    Full,
}

#[derive(Debug)]
struct Topic {
    latest: Entry,
    history: VecDeque<Sample>,
}

#[derive(Debug)]
struct Inner {
    topics: HashMap<String, Topic>,
    max_topics: usize,
    history: usize,
    accepted: u64,
    rejected: u64,
    refused: u64,
}

/// Bounds of a [`Cache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    /// Most concrete topics tracked.
    pub max_topics: usize,
    /// Most readings kept per topic (at least 1: the latest).
    pub history: usize,
}

impl Default for CacheLimits {
    fn default() -> Self {
        Self {
            max_topics: 1000,
            history: 1000,
        }
    }
}

/// Readings per topic plus counters of accepted and rejected payloads. Cheap to clone: all
/// clones share one cache.
#[derive(Debug, Clone)]
pub struct Cache {
    inner: Arc<RwLock<Inner>>,
}

impl Default for Cache {
    fn default() -> Self {
        Self::new(CacheLimits::default())
    }
}

impl Cache {
    /// An empty cache with these bounds.
    pub fn new(limits: CacheLimits) -> Self {
        Self {
            inner: Arc::new(RwLock::new(Inner {
                topics: HashMap::new(),
                max_topics: limits.max_topics,
                history: limits.history.max(1),
                accepted: 0,
                rejected: 0,
                refused: 0,
            })),
        }
    }

    /// Records a valid reading for `topic`: it becomes the latest and joins the history.
    pub fn store(&self, topic: &str, entry: Entry) -> Stored {
        let mut inner = self.write();
        let history = inner.history;
        let sample = Sample {
            at: entry.received_at,
            value: entry.reading.value,
        };
        if let Some(slot) = inner.topics.get_mut(topic) {
            slot.latest = entry;
            if slot.history.len() >= history {
                slot.history.pop_front();
            }
            slot.history.push_back(sample);
            inner.accepted += 1;
            return Stored::Updated;
        }
        if inner.topics.len() >= inner.max_topics {
            inner.refused += 1;
            return Stored::Full;
        }
        inner.accepted += 1;
        inner.topics.insert(
            topic.to_string(),
            Topic {
                latest: entry,
                history: VecDeque::from([sample]),
            },
        );
        Stored::New
    }

    /// Puts back a topic's history saved before a restart (oldest first); the newest sample
    /// becomes the latest reading. Ignored when the topic is tracked already or the cache is
    /// full.
    pub fn restore(&self, topic: &str, samples: &[Sample]) {
        let Some(last) = samples.last() else { return };
        let mut inner = self.write();
        if inner.topics.contains_key(topic) || inner.topics.len() >= inner.max_topics {
            return;
        }
        let keep = samples.len().min(inner.history);
        let history: VecDeque<Sample> = samples[samples.len() - keep..].iter().copied().collect();
        inner.topics.insert(
            topic.to_string(),
            Topic {
                latest: Entry {
                    reading: Reading { value: last.value },
                    received_at: last.at,
                    retained: false,
                },
                history,
            },
        );
    }

    /// Counts a payload that could not be read; the cached reading stays as it was.
    pub fn count_rejected(&self) {
        self.write().rejected += 1;
    }

    /// The latest reading for `topic`, if any arrived.
    pub fn get(&self, topic: &str) -> Option<Entry> {
        self.read().topics.get(topic).map(|t| t.latest)
    }

    /// Every tracked topic matching the MQTT filter `filter`, sorted by topic.
    pub fn matching(&self, filter: &str) -> Vec<(String, Entry)> {
        let inner = self.read();
        let mut found: Vec<(String, Entry)> = inner
            .topics
            .iter()
            .filter(|(topic, _)| crate::topic::matches(topic, filter))
            .map(|(topic, t)| (topic.clone(), t.latest))
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found
    }

    /// The most recent entry among the topics matching `filter`.
    pub fn newest_matching(&self, filter: &str) -> Option<(String, Entry)> {
        let inner = self.read();
        inner
            .topics
            .iter()
            .filter(|(topic, _)| crate::topic::matches(topic, filter))
            .max_by_key(|(_, t)| t.latest.received_at)
            .map(|(topic, t)| (topic.clone(), t.latest))
    }

    /// The readings of `topic` received at or after `since`, oldest first, and whether the
    /// history reaches back that far (`false` when older readings were dropped to stay bounded,
    /// so the window is only partly covered).
    pub fn history(&self, topic: &str, since: Instant) -> (Vec<Sample>, bool) {
        let inner = self.read();
        let Some(t) = inner.topics.get(topic) else {
            return (Vec::new(), true);
        };
        let full = t.history.len() >= inner.history;
        let covered = !full || t.history.front().is_some_and(|s| s.at <= since);
        let samples = t
            .history
            .iter()
            .filter(|s| s.at >= since)
            .copied()
            .collect();
        (samples, covered)
    }

    /// Number of topics tracked.
    pub fn len(&self) -> usize {
        self.read().topics.len()
    }

    /// The bounds this cache was made with.
    pub fn limits(&self) -> CacheLimits {
        let inner = self.read();
        CacheLimits {
            max_topics: inner.max_topics,
            history: inner.history,
        }
    }

    /// `(accepted, rejected)` payload counts since start.
    pub fn counts(&self) -> (u64, u64) {
        let inner = self.read();
        (inner.accepted, inner.rejected)
    }

    /// Readings refused since start because they came from a new topic beyond `max_topics`.
    pub fn refused(&self) -> u64 {
        self.read().refused
    }

    // A panic while holding the lock cannot leave `Inner` half-updated in a way that matters
    // (each update touches one topic), so a poisoned lock is safe to keep using.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn entry(value: f64, received_at: Instant) -> Entry {
        Entry {
            reading: Reading { value },
            received_at,
            retained: false,
        }
    }

    fn values(samples: &[Sample]) -> Vec<f64> {
        samples.iter().map(|s| s.value).collect()
    }

    #[test]
    fn a_reading_in_the_history_costs_the_24_bytes_the_help_text_promises() {
        // --history's help and the module doc compute the memory bound from this size.
        assert_eq!(std::mem::size_of::<Sample>(), 24);
    }

    #[test]
    fn keeps_the_latest_reading_per_topic() {
        let cache = Cache::default();
        let t0 = Instant::now();
        assert_eq!(cache.get("a"), None);
        assert_eq!(cache.store("a", entry(1.0, t0)), Stored::New);
        cache.store("b", entry(2.0, t0));
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(cache.store("a", entry(3.0, t1)), Stored::Updated);
        assert_eq!(cache.get("a"), Some(entry(3.0, t1)));
        assert_eq!(cache.get("b").map(|e| e.reading.value), Some(2.0));
        assert_eq!(cache.counts(), (3, 0));
    }

    #[test]
    fn a_rejected_payload_keeps_the_last_valid_reading() {
        let cache = Cache::default();
        let t0 = Instant::now();
        cache.store("a", entry(21.5, t0));
        cache.count_rejected();
        assert_eq!(cache.get("a").map(|e| e.reading.value), Some(21.5));
        assert_eq!(cache.counts(), (1, 1));
    }

    #[test]
    fn clones_share_one_cache() {
        let writer = Cache::default();
        let reader = writer.clone();
        writer.store("a", entry(1.5, Instant::now()));
        assert_eq!(reader.get("a").map(|e| e.reading.value), Some(1.5));
    }

    #[test]
    fn new_topics_beyond_the_bound_are_refused_and_known_ones_still_update() {
        let cache = Cache::new(CacheLimits {
            max_topics: 2,
            history: 10,
        });
        let t0 = Instant::now();
        cache.store("a", entry(1.0, t0));
        cache.store("b", entry(2.0, t0));
        assert_eq!(cache.store("c", entry(3.0, t0)), Stored::Full);
        assert_eq!(cache.store("d", entry(4.0, t0)), Stored::Full);
        assert_eq!(cache.get("c"), None);
        assert_eq!(cache.store("a", entry(5.0, t0)), Stored::Updated);
        assert_eq!(cache.get("a").map(|e| e.reading.value), Some(5.0));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.refused(), 2);
        assert_eq!(cache.counts(), (3, 0));
    }

    #[test]
    fn history_is_a_bounded_ring_that_knows_what_it_covers() {
        let cache = Cache::new(CacheLimits {
            max_topics: 10,
            history: 3,
        });
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        for (s, v) in [(0, 1.0), (10, 2.0), (20, 3.0)] {
            cache.store("a", entry(v, at(s)));
        }
        let (samples, covered) = cache.history("a", t0);
        assert_eq!(values(&samples), [1.0, 2.0, 3.0]);
        assert!(covered, "nothing has been dropped yet");
        cache.store("a", entry(4.0, at(30)));
        let (samples, covered) = cache.history("a", t0);
        assert_eq!(values(&samples), [2.0, 3.0, 4.0], "the oldest went first");
        assert!(!covered, "the reading at t0 was dropped");
        let (samples, covered) = cache.history("a", at(15));
        assert_eq!(values(&samples), [3.0, 4.0]);
        assert!(covered);
        assert_eq!(cache.history("nope", t0), (Vec::new(), true));
    }

    #[test]
    fn patterns_find_every_matching_topic_in_order() {
        let cache = Cache::default();
        let t0 = Instant::now();
        for (i, topic) in [
            "B/P_1/O/2/VIBR",
            "B/P_1/O/1/VIBR",
            "B/P_1/N/1/VIBR",
            "B/P_1/O/1/TEMP",
        ]
        .into_iter()
        .enumerate()
        {
            cache.store(topic, entry(i as f64, t0 + Duration::from_secs(i as u64)));
        }
        let found: Vec<String> = cache
            .matching("B/+/O/+/VIBR")
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        assert_eq!(found, ["B/P_1/O/1/VIBR", "B/P_1/O/2/VIBR"]);
        assert_eq!(cache.matching("B/#").len(), 4);
        assert_eq!(
            cache.newest_matching("B/+/+/1/#").map(|(t, _)| t),
            Some("B/P_1/O/1/TEMP".to_string())
        );
    }

    #[test]
    fn restored_history_becomes_the_latest_reading() {
        let cache = Cache::new(CacheLimits {
            max_topics: 10,
            history: 2,
        });
        let t0 = Instant::now();
        let samples: Vec<Sample> = (0..5)
            .map(|i| Sample {
                at: t0 + Duration::from_secs(i),
                value: i as f64,
            })
            .collect();
        cache.restore("a", &samples);
        assert_eq!(cache.get("a").map(|e| e.reading.value), Some(4.0));
        assert_eq!(values(&cache.history("a", t0).0), [3.0, 4.0]);
    }
}
