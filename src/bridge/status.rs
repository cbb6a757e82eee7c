//! What a running bridge tells whoever started it about its two links, the way the server's
//! `ready` channel says it accepts connections: `up`, tests and anything else that embeds the
//! bridge can wait until it is subscribed and online instead of reading its log.
//!
//! Counts rather than flags, so that a caller can also wait for the next reconnection: the
//! MQTT side counts the broker's answers to its subscriptions (one SUBACK per connection, MQTT
//! 3.1.1 §3.9), the XMPP side the sessions in which it became available.

use std::sync::Arc;

use tokio::sync::watch;

/// The bridge's links so far. Starts at zero; only ever grows while the bridge runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Status {
    /// Times the broker granted the bot's subscriptions (once per MQTT connection).
    pub subscribed: u64,
    /// Times the bot logged in to XMPP and sent its available presence: from then on it
    /// answers chat messages.
    pub online: u64,
}

/// The bridge tasks' side of the [`Status`] channel. Cheap to clone; reporting never blocks and
/// does not need anyone to listen.
#[derive(Debug, Clone)]
pub(crate) struct Reporter(Arc<watch::Sender<Status>>);

impl Reporter {
    /// Reports into `status`.
    pub(crate) fn new(status: watch::Sender<Status>) -> Self {
        Reporter(Arc::new(status))
    }

    /// The broker granted the subscriptions of a new connection.
    pub(crate) fn subscribed(&self) {
        self.0.send_modify(|status| status.subscribed += 1);
    }

    /// The XMPP session is bound and the bot is available.
    pub(crate) fn online(&self) {
        self.0.send_modify(|status| status.online += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reconnection_is_seen_as_a_new_count() {
        let (sender, mut watcher) = watch::channel(Status::default());
        let reporter = Reporter::new(sender);
        reporter.subscribed();
        reporter.online();
        assert_eq!(
            *watcher.borrow_and_update(),
            Status {
                subscribed: 1,
                online: 1
            }
        );
        // A second connection: a caller waiting for "the next one" sees it change again.
        reporter.clone().subscribed();
        assert!(watcher.has_changed().unwrap());
        assert_eq!(watcher.borrow_and_update().subscribed, 2);
    }

    #[test]
    fn reporting_with_nobody_listening_is_harmless() {
        let (sender, watcher) = watch::channel(Status::default());
        drop(watcher);
        let reporter = Reporter::new(sender);
        reporter.online();
        reporter.subscribed();
    }
}
