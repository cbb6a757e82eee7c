//! The latest [`Reading`] per topic, shared by the MQTT task (writer) and the XMPP task (reader).
//!
//! Pure data: the caller passes the time of receipt, so tests control the clock.

use std::collections::HashMap;
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

#[derive(Debug, Default)]
struct Inner {
    latest: HashMap<String, Entry>,
    accepted: u64,
    rejected: u64,
}

/// Last reading per topic plus counters of accepted and rejected payloads. Cheap to clone: all
/// clones share one cache.
#[derive(Debug, Clone, Default)]
pub struct Cache {
    inner: Arc<RwLock<Inner>>,
}

impl Cache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a valid reading for `topic`, replacing the previous one.
    pub fn store(&self, topic: &str, entry: Entry) {
        let mut inner = self.write();
        inner.accepted += 1;
        match inner.latest.get_mut(topic) {
            Some(slot) => *slot = entry,
            None => {
                inner.latest.insert(topic.to_string(), entry);
            }
        }
    }

    /// Counts a payload that could not be read; the cached reading stays as it was.
    pub fn count_rejected(&self) {
        self.write().rejected += 1;
    }

    /// The latest reading for `topic`, if any arrived.
    pub fn get(&self, topic: &str) -> Option<Entry> {
        self.read().latest.get(topic).copied()
    }

    /// `(accepted, rejected)` payload counts since start.
    pub fn counts(&self) -> (u64, u64) {
        let inner = self.read();
        (inner.accepted, inner.rejected)
    }

    // A panic while holding the lock cannot leave `Inner` half-updated (every update is a single
    // assignment), so a poisoned lock is safe to keep using.
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

    #[test]
    fn keeps_the_latest_reading_per_topic() {
        let cache = Cache::new();
        let t0 = Instant::now();
        assert_eq!(cache.get("a"), None);
        cache.store("a", entry(1.0, t0));
        cache.store("b", entry(2.0, t0));
        let t1 = t0 + Duration::from_secs(5);
        cache.store("a", entry(3.0, t1));
        assert_eq!(cache.get("a"), Some(entry(3.0, t1)));
        assert_eq!(cache.get("b").map(|e| e.reading.value), Some(2.0));
        assert_eq!(cache.counts(), (3, 0));
    }

    #[test]
    fn a_rejected_payload_keeps_the_last_valid_reading() {
        let cache = Cache::new();
        let t0 = Instant::now();
        cache.store("a", entry(21.5, t0));
        cache.count_rejected();
        assert_eq!(cache.get("a").map(|e| e.reading.value), Some(21.5));
        assert_eq!(cache.counts(), (1, 1));
    }

    #[test]
    fn clones_share_one_cache() {
        let writer = Cache::new();
        let reader = writer.clone();
        writer.store("a", entry(1.5, Instant::now()));
        assert_eq!(reader.get("a").map(|e| e.reading.value), Some(1.5));
    }
}
