#![allow(dead_code)]
//! The bridge (`mqtt2xmpp::bridge::run`) in the test's process, configured from the same flags a
//! user gives `mqtt2xmpp bridge`: `cli::Cli` parses them and `config::bridge` turns them into
//! the bridge's settings, as the binary does, so a test never depends on how those settings are
//! laid out. It stops when its token is cancelled.
//!
//! It runs through `bridge::run_with_status`, so a test waits for what it needs (subscribed to
//! MQTT, online on XMPP, and how many times) on the bridge's own status channel, not on its log.
//!
//! What a user reads in the log is still checked: each bridge runs on a small runtime of its own
//! whose threads send the bridge's `tracing` events to this bridge's log alone (a thread-local
//! subscriber, set as each thread starts), whatever other bridges and servers the test binary
//! runs at the same time, in the format the binary writes. [`InProcessBridge::wait_log`] waits
//! for a line with a deadline, for the events that only the log tells (a failed connection).

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use mqtt2xmpp::bridge::{self, BridgeError, Status};
use mqtt2xmpp::cli::{Cli, Command};
use tokio::runtime::Runtime;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// The bridge's log line once it is subscribed to MQTT (for the binary's log).
pub const SUBSCRIBED: &str = "subscribed";
/// The bridge's log line once it answers chat messages (for the binary's log).
pub const ONLINE: &str = "answering chat messages";
/// How long the bridge may take to log in and subscribe.
pub const STARTUP: Duration = Duration::from_secs(20);

/// What the log shows: the binary's `-v` level (the bot's debug lines, libraries' info).
const LOG_FILTER: &str = "info,mqtt2xmpp=debug";

/// A bridge's log: its text, and a signal for every line added.
#[derive(Clone, Default)]
struct Log {
    text: Arc<Mutex<String>>,
    grew: Arc<Notify>,
}

impl Write for Log {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.text
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_str(&String::from_utf8_lossy(bytes));
        self.grew.notify_waiters();
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Log {
    type Writer = Log;

    fn make_writer(&'a self) -> Log {
        self.clone()
    }
}

/// A bridge running in this process.
pub struct InProcessBridge {
    log: Log,
    status: watch::Receiver<Status>,
    stop: CancellationToken,
    task: Option<JoinHandle<Result<(), BridgeError>>>,
    runtime: Option<Runtime>,
}

impl InProcessBridge {
    /// Starts the bridge with `args`, the flags after `mqtt2xmpp` (`bridge` first), without
    /// waiting for anything. Unless `args` sets `--reply-burst`, the burst is large enough for
    /// tests that ask until a reading arrives. Panics if the flags are refused.
    pub fn spawn<S: AsRef<str>>(args: &[S]) -> InProcessBridge {
        let mut argv: Vec<String> = vec!["mqtt2xmpp".into()];
        argv.extend(args.iter().map(|a| a.as_ref().to_string()));
        if !argv.iter().any(|a| a == "--reply-burst") {
            argv.extend(["--reply-burst".into(), "100000".into()]);
        }
        let cli = Cli::try_parse_from(&argv)
            .unwrap_or_else(|e| panic!("the flags {argv:?} are refused: {e}"));
        let Command::Bridge(flags) = cli.command else {
            panic!("not a bridge command: {argv:?}");
        };
        let config = mqtt2xmpp::config::bridge(&flags)
            .unwrap_or_else(|e| panic!("the flags {argv:?} are refused: {e}"));

        let log = Log::default();
        let dispatch = tracing::Dispatch::new(
            tracing_subscriber::fmt()
                .with_env_filter(EnvFilter::new(LOG_FILTER))
                .with_writer(log.clone())
                .with_ansi(false)
                .finish(),
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("bridge-under-test")
            .enable_all()
            .on_thread_start(move || {
                // The thread is this bridge's for its whole life: the default stays set.
                std::mem::forget(tracing::dispatcher::set_default(&dispatch));
            })
            .build()
            .expect("a runtime for the bridge");
        let stop = CancellationToken::new();
        let (reporter, status) = watch::channel(Status::default());
        let task = runtime.spawn(bridge::run_with_status(config, stop.clone(), reporter));
        InProcessBridge {
            log,
            status,
            stop,
            task: Some(task),
            runtime: Some(runtime),
        }
    }

    /// Starts the bridge with `args` and waits until it is subscribed and online.
    pub async fn start<S: AsRef<str>>(args: &[S]) -> InProcessBridge {
        let bridge = Self::spawn(args);
        bridge.wait_subscribed(1, STARTUP).await;
        bridge.wait_online(1, STARTUP).await;
        bridge
    }

    /// What the bridge reported so far: how many times it subscribed and came online.
    pub fn status(&self) -> Status {
        *self.status.borrow()
    }

    /// Waits until the broker has granted the bridge's subscriptions `count` times in all (once
    /// per MQTT connection).
    pub async fn wait_subscribed(&self, count: u64, deadline: Duration) {
        self.wait_status("subscribed", count, deadline, |s| s.subscribed)
            .await;
    }

    /// Waits until the bridge has come online on XMPP `count` times in all (once per session).
    pub async fn wait_online(&self, count: u64, deadline: Duration) {
        self.wait_status("online", count, deadline, |s| s.online)
            .await;
    }

    async fn wait_status(
        &self,
        what: &str,
        count: u64,
        deadline: Duration,
        field: impl Fn(&Status) -> u64,
    ) {
        let mut status = self.status.clone();
        let reached = tokio::time::timeout(deadline, status.wait_for(|s| field(s) >= count)).await;
        match reached {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => panic!(
                "the bridge stopped before it was {what} {count} time(s); log:\n{}",
                self.log()
            ),
            Err(_) => panic!(
                "the bridge was not {what} {count} time(s) within {deadline:?} ({:?}); log:\n{}",
                self.status(),
                self.log()
            ),
        }
    }

    /// Everything the bridge logged so far.
    pub fn log(&self) -> String {
        self.log
            .text
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until `needle` appears at least `count` times in the log.
    pub async fn wait_log(&self, needle: &str, count: usize, deadline: Duration) {
        let end = tokio::time::Instant::now() + deadline;
        loop {
            let grew = self.log.grew.notified();
            tokio::pin!(grew);
            // Registered before looking, so a line added meanwhile is not missed.
            grew.as_mut().enable();
            if self.log().matches(needle).count() >= count {
                return;
            }
            if tokio::time::timeout_at(end, grew).await.is_err() {
                panic!(
                    "{needle:?} did not appear {count} time(s) within {deadline:?}; log:\n{}",
                    self.log()
                );
            }
        }
    }

    /// Waits for the bridge to stop by itself, and returns what `bridge::run` returned.
    pub async fn wait_exit(&mut self, deadline: Duration) -> Result<(), BridgeError> {
        let task = self.task.as_mut().expect("the bridge was started");
        let outcome = tokio::time::timeout(deadline, task)
            .await
            .unwrap_or_else(|_| panic!("still running after {deadline:?}; log:\n{}", self.log()));
        self.task = None;
        outcome.unwrap_or_else(|e| panic!("the bridge panicked: {e}; log:\n{}", self.log()))
    }

    /// Tells the bridge to stop, as SIGTERM does in the binary, and returns what `bridge::run`
    /// returned and how long the stop took.
    pub async fn stop(&mut self, deadline: Duration) -> (Result<(), BridgeError>, Duration) {
        let started = Instant::now();
        self.stop.cancel();
        let outcome = self.wait_exit(deadline).await;
        (outcome, started.elapsed())
    }
}

impl Drop for InProcessBridge {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- bridge log ---\n{}--- end of log ---", self.log());
        }
        self.stop.cancel();
        if let Some(runtime) = self.runtime.take() {
            // Dropping a runtime blocks, which is not allowed inside the test's own runtime.
            runtime.shutdown_background();
        }
    }
}
