//! The state database's writer thread: a queue that never blocks the async tasks, reading
//! batches merged into bounded transactions, and failed writes reported without flooding the
//! log.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{
    AlertKey, PersistError, StateDb, StoredAlert, StoredAlertTopic, StoredReading, StoredRoom,
};
use crate::log_limit::LogLimit;

/// At most one error line per this interval from the writer thread, so a full disk does not
/// flood the log with one line per batch.
pub(super) const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// The writer thread merges queued reading batches into one transaction up to this many
/// readings, so a long backlog is still written in transactions of bounded size.
const MAX_MERGED_READINGS: usize = 50_000;

/// One write for the writer thread; each mirrors a [`StateDb`] method.
#[derive(Debug, Clone)]
pub enum Write {
    /// [`StateDb::append_readings`]: a batch the caller collected since its last one.
    Readings(Vec<StoredReading>),
    /// [`StateDb::put_alert`]: a contact set (or redefined) an alert.
    PutAlert(StoredAlert),
    /// [`StateDb::delete_alerts`]: a contact removed alerts.
    DeleteAlerts {
        /// Whose alerts.
        contact: String,
        /// On which target; `None` for all of them.
        target: Option<String>,
    },
    /// [`StateDb::put_alert_topic`]: an alert fired, re-armed, or noticed a silent topic.
    PutAlertTopic {
        /// Which alert.
        key: AlertKey,
        /// Its new state on one topic.
        state: StoredAlertTopic,
    },
    /// [`StateDb::put_room`]: the bot accepted an invitation.
    PutRoom(StoredRoom),
    /// [`StateDb::put_published`]: the bot published `what` (its profile) as `fingerprint`.
    PutPublished {
        /// What was published.
        what: String,
        /// Its fingerprint.
        fingerprint: String,
    },
}

impl Write {
    /// The error line for this write failing with `error`: what was lost, and what that means.
    pub(super) fn failure(&self, path: &Path, error: &dyn fmt::Display) -> String {
        let path = path.display();
        let direction = |above: bool| if above { "above" } else { "below" };
        match self {
            Write::Readings(batch) => {
                format!("could not save {} readings to {path}: {error}", batch.len())
            }
            Write::PutAlert(alert) => format!(
                "could not save the alert of {} on {} ({} {}) to {path}: {error}; \
                 it will be gone after a restart",
                alert.key.contact,
                alert.key.target,
                direction(alert.key.above),
                alert.threshold
            ),
            Write::DeleteAlerts { contact, target } => format!(
                "could not delete the alerts of {contact}{} from {path}: {error}; \
                 they will be back after a restart",
                target
                    .as_ref()
                    .map_or(String::new(), |target| format!(" on {target}"))
            ),
            Write::PutAlertTopic { key, state } => format!(
                "could not save the state on {} of the alert of {} on {} ({}) to {path}: {error}",
                state.topic,
                key.contact,
                key.target,
                direction(key.above)
            ),
            Write::PutRoom(room) => format!(
                "could not save the room {} to {path}: {error}; the bot will not join it again \
                 after a restart",
                room.room
            ),
            Write::PutPublished { what, .. } => format!(
                "could not save that the {what} was published to {path}: {error}; \
                 the bot will publish it again at the next start"
            ),
        }
    }
}

/// Owns the [`StateDb`] on a dedicated OS thread: SQLite calls block (each commit waits for an
/// `fsync`), and the async tasks must never stall on disk. Writes are applied in the order
/// sent.
///
/// The queue is an unbounded `std::sync::mpsc` channel, so [`Persister::send`] never blocks
/// and never drops a write: a bounded queue would have to drop something when full, and a lost
/// `PutAlert` or `DeleteAlerts` would bring back the wrong alerts after a restart. Memory is
/// still bounded in practice because readings come in batches the caller sizes (one message
/// per batch interval), and alert changes follow chat commands; if the disk stalls, the queue
/// grows by what the bot receives meanwhile, the same data it holds in memory anyway.
///
/// A failed write is logged with `tracing::error!` (saying what was lost) and the thread goes
/// on with the next one; at most one such line per minute, carrying the number of failures not
/// reported since, and a last count when the thread stops.
///
/// Dropping a `Persister` without [`Persister::close`] lets the thread finish the queue in the
/// background, which may be cut short if the program exits; call `close` to be sure.
#[derive(Debug)]
pub struct Persister {
    queue: mpsc::Sender<Write>,
    thread: JoinHandle<()>,
    path: PathBuf,
    gone_reported: AtomicBool,
}

impl Persister {
    /// Starts the writer thread. `keep_per_topic` is passed to every
    /// [`StateDb::append_readings`].
    pub fn spawn(db: StateDb, keep_per_topic: usize) -> Result<Self, PersistError> {
        let (queue, inbox) = mpsc::channel();
        let path = db.path().to_path_buf();
        let thread = std::thread::Builder::new()
            .name("state-db".into())
            .spawn(move || write_all(db, &inbox, keep_per_topic))
            .map_err(PersistError::Thread)?;
        Ok(Self {
            queue,
            thread,
            path,
            gone_reported: AtomicBool::new(false),
        })
    }

    /// Queues `write`. Never blocks; see [`Persister`] for why the queue is unbounded.
    pub fn send(&self, write: Write) {
        // Only if the thread died, which takes a panic: say so once, not for every write.
        if let Err(mpsc::SendError(write)) = self.queue.send(write) {
            if !self.gone_reported.swap(true, Ordering::Relaxed) {
                let stopped = "the writer thread has stopped; nothing more will be saved";
                tracing::error!("{}", write.failure(&self.path, &stopped));
            }
        }
    }

    /// Applies everything queued, then closes the database; returns when done. It blocks, so
    /// call it from `spawn_blocking` or at the end of the program.
    pub fn close(self) {
        let Persister {
            queue,
            thread,
            path,
            ..
        } = self;
        drop(queue);
        if thread.join().is_err() {
            tracing::error!(
                "internal error: the state database writer thread panicked; recent writes to {} \
                 may be lost",
                path.display()
            );
        }
    }
}

/// The writer thread: applies writes in order until every sender is gone, merging reading
/// batches that queued up back to back into one transaction.
fn write_all(db: StateDb, inbox: &mpsc::Receiver<Write>, keep_per_topic: usize) {
    let mut writer = Writer {
        db,
        keep_per_topic,
        failures: FailureLog::new(ERROR_LOG_INTERVAL),
    };
    let mut readings: Vec<StoredReading> = Vec::new();
    while let Ok(first) = inbox.recv() {
        let mut next = Some(first);
        while let Some(write) = next {
            match write {
                Write::Readings(batch) => {
                    readings.extend(batch);
                    if readings.len() >= MAX_MERGED_READINGS {
                        writer.apply(Write::Readings(std::mem::take(&mut readings)));
                    }
                }
                other => {
                    if !readings.is_empty() {
                        writer.apply(Write::Readings(std::mem::take(&mut readings)));
                    }
                    writer.apply(other);
                }
            }
            next = inbox.try_recv().ok();
        }
        if !readings.is_empty() {
            writer.apply(Write::Readings(std::mem::take(&mut readings)));
        }
    }
    writer.finish();
}

/// The writer thread's state.
struct Writer {
    db: StateDb,
    keep_per_topic: usize,
    failures: FailureLog,
}

impl Writer {
    /// Applies `write`; a failure is logged (rate-limited) and otherwise ignored, so one bad
    /// write does not stop the ones after it.
    fn apply(&mut self, write: Write) {
        if let Err(error) = apply(&mut self.db, &write, self.keep_per_topic) {
            let path = self.db.path();
            self.failures
                .report(Instant::now(), || write.failure(path, &error));
        }
    }

    /// Reports the failures not logged yet and closes the database.
    fn finish(mut self) {
        let path = self.db.path().to_path_buf();
        let unreported = self.failures.take_unreported();
        if unreported > 0 {
            tracing::error!(
                "{unreported} more writes to {} failed since the last report",
                path.display()
            );
        }
        if let Err(error) = self.db.close() {
            tracing::error!("could not close {}: {error}", path.display());
        }
    }
}

/// Rate limit for the writer's error lines: the first failure is logged at once, later ones at
/// most once per `interval`, each line counting the failures it stands for.
#[derive(Debug)]
pub(super) struct FailureLog(LogLimit);

impl FailureLog {
    pub(super) fn new(interval: Duration) -> Self {
        Self(LogLimit::new(interval))
    }

    /// Counts a failure at `now`; returns `Some(n)` if it is to be logged now, `n` being the
    /// failures not logged since the previous line.
    pub(super) fn failure(&mut self, now: Instant) -> Option<u64> {
        self.0.admit(now)
    }

    /// Logs `message` for a failure at `now` if the rate limit allows.
    fn report(&mut self, now: Instant, message: impl FnOnce() -> String) {
        match self.failure(now) {
            Some(0) => tracing::error!("{}", message()),
            Some(unreported) => tracing::error!(
                "{} (and {unreported} other failed writes since the last report)",
                message()
            ),
            None => {}
        }
    }

    /// The failures not logged yet, resetting the count.
    pub(super) fn take_unreported(&mut self) -> u64 {
        self.0.take_suppressed()
    }
}

/// Applies one write.
fn apply(db: &mut StateDb, write: &Write, keep_per_topic: usize) -> Result<(), PersistError> {
    match write {
        Write::Readings(batch) => db.append_readings(batch, keep_per_topic),
        Write::PutAlert(alert) => db.put_alert(alert),
        Write::DeleteAlerts { contact, target } => {
            db.delete_alerts(contact, target.as_deref()).map(|_| ())
        }
        Write::PutAlertTopic { key, state } => db.put_alert_topic(key, state),
        Write::PutRoom(room) => db.put_room(room),
        Write::PutPublished { what, fingerprint } => db.put_published(what, fingerprint),
    }
}
