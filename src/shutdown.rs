//! One shutdown signal shared by every task.
//!
//! [`Trigger::fire`] (or dropping the trigger) makes every [`Shutdown::wait`] return. Waiting is
//! cancel-safe, so tasks can use it as a `tokio::select!` branch in their main loop.

use tokio::sync::watch;

/// Fires the shutdown.
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

/// Waits for the shutdown. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// A connected trigger and listener.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    /// Tells every listener to stop. Firing twice is harmless.
    pub fn fire(&self) {
        self.0.send_replace(true);
    }

    /// A new listener for this trigger.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }
}

impl Shutdown {
    /// Returns once shutdown is requested (immediately if it already was, or if the trigger is
    /// gone).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }

    /// Whether shutdown has been requested.
    pub fn is_requested(&self) -> bool {
        *self.0.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_listener_wakes() {
        let (trigger, mut a) = channel();
        let mut b = a.clone();
        assert!(!a.is_requested());
        trigger.fire();
        a.wait().await;
        b.wait().await;
        assert!(b.is_requested());
    }

    #[tokio::test]
    async fn dropping_the_trigger_also_stops() {
        let (trigger, mut a) = channel();
        drop(trigger);
        a.wait().await;
    }
}
