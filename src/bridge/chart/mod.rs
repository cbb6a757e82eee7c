//! Charts from the bot: `stats SENSOR [WINDOW]` (and the ad-hoc "Statistics" command) answer
//! with a PNG of the window before the text summary, uploaded through the XMPP server's HTTP
//! upload service (XEP-0363) and sent as a link clients show inline (XEP-0066).
//!
//! | module | what it does |
//! |---|---|
//! | [`render`] | the picture: readings reduced to the pixel columns, thresholds, stale stretches, axes; PNG |
//! | `upload` | XEP-0363: finding the service, asking for a slot, the HTTPS PUT (hyper over the bot's rustls) |
//! | `driver` | the client loop's side: jobs off the loop, IQ replies routed back, the per-contact limit |
//!
//! Flow: a front end that answers `stats` for a single sensor notes a chart [`Ask`] on the bot
//! (only while an upload service is known and charts are on); after answering the stanza, the
//! client loop takes the asks, holds back the text answer, and spawns a job: the rendering runs
//! on the blocking pool, the slot request goes out through the loop, the PUT runs in the job.
//! The job hands back the chart message (the URL as body, with an `<x xmlns='jabber:x:oob'/>`)
//! and then the held text, so the contact sees the picture first. Whatever fails (rendering, a
//! PNG over the service's size limit, the slot, the PUT), the text goes out alone and the reason
//! is logged; the loop itself never waits on any of it.

pub(crate) mod driver;
pub mod render;
pub(crate) mod upload;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::bot::{lock, Bot};
pub use render::{ChartInput, Threshold};

/// Asks waiting for the client loop: more are dropped (the loop takes them after each stanza).
const MAX_ASKS: usize = 16;

/// A chart someone asked for, noted by a front end for the client loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ask {
    /// The contact's bare JID (its thresholds are drawn); a room's JID when asked in a room.
    pub contact: String,
    /// The sensor as typed.
    pub target: String,
    /// The window.
    pub window: Duration,
    /// Asked through the ad-hoc command: there is no text answer to hold back.
    pub adhoc: bool,
}

/// Whether charts are wanted now, and the asks not yet taken.
#[derive(Debug, Default)]
pub(crate) struct Asks {
    enabled: AtomicBool,
    queue: Mutex<Vec<Ask>>,
}

impl Asks {
    /// Charts on (an upload service is known) or off.
    pub(crate) fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
        if !on {
            lock(&self.queue).clear();
        }
    }

    /// Notes a chart for `contact`, if charts are on.
    pub(crate) fn want(&self, contact: &str, target: &str, window: Duration, adhoc: bool) {
        if !self.enabled.load(Ordering::Relaxed) {
            return;
        }
        let mut queue = lock(&self.queue);
        if queue.len() < MAX_ASKS {
            queue.push(Ask {
                contact: contact.to_string(),
                target: target.to_string(),
                window,
                adhoc,
            });
        }
    }

    /// The asks noted since the last call.
    pub(crate) fn take(&self) -> Vec<Ask> {
        std::mem::take(&mut *lock(&self.queue))
    }
}

impl Bot {
    /// Whether `target` names one sensor (not a pattern): cheap, for the client loop.
    pub(crate) fn chart_possible(&self, target: &str) -> bool {
        self.resolve(target).is_ok_and(|(label, filter)| {
            !crate::topic::is_pattern(filter)
                && (self.sensors.by_name(label).is_some()
                    || self.sensors.for_topic(filter).is_some())
        })
    }

    /// What a chart of `target` over `window` shows for `contact`, or `None` when there is
    /// nothing to draw: a pattern (several topics), an unknown sensor, or fewer than two
    /// readings in the window.
    pub(crate) fn chart_input(
        &self,
        contact: &str,
        target: &str,
        window: Duration,
        now: Instant,
    ) -> Option<ChartInput> {
        let (label, filter) = self.resolve(target).ok()?;
        if crate::topic::is_pattern(filter) {
            return None;
        }
        let sensor = self
            .sensors
            .by_name(label)
            .or_else(|| self.sensors.for_topic(filter))?;
        let since = now.checked_sub(window).unwrap_or(now);
        let (history, _) = self.cache.history(filter, since);
        if history.len() < 2 {
            return None;
        }
        let samples = history
            .iter()
            .map(|s| (self.unix_ms(s.at), s.value))
            .collect();
        let thresholds = lock(&self.alerts)
            .of(contact)
            .into_iter()
            .filter(|(alert, _)| crate::topic::matches(filter, &alert.filter))
            .map(|(alert, _)| Threshold {
                value: alert.threshold,
                above: alert.key.above,
            })
            .collect();
        let what = if label == filter {
            label.to_string()
        } else {
            format!("{label} ({filter})")
        };
        Some(ChartInput {
            what,
            unit: sensor.unit.clone(),
            precision: sensor.precision,
            samples,
            end_ms: self.unix_ms(now),
            window,
            thresholds,
            stale_after: self.settings.stale_after,
        })
    }
}
