#![allow(dead_code)]
//! The real `mqtt2xmpp` binary as a child process, for the tests of what only the binary does:
//! its exit status, its log as a user reads it, its answer to SIGTERM and SIGKILL, and its memory
//! as a process of its own. Everything else runs the library in the test's process (see
//! [`super::server::InProcessServer`] and [`super::bridge::InProcessBridge`]).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// `mqtt2xmpp` (any subcommand) running as a child process, its output collected.
pub struct BinaryProcess {
    child: Child,
    log: Arc<(Mutex<String>, Condvar)>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl BinaryProcess {
    /// Starts `mqtt2xmpp ARGS` with `RUST_LOG` set to show the bot's info lines, and a reply
    /// burst large enough for tests that poll the bot until a reading arrives (the rate limit's
    /// own tests pass `--reply-burst`, which wins over the environment).
    pub fn spawn(args: &[&str]) -> BinaryProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mqtt2xmpp"))
            .args(args)
            .env("RUST_LOG", "info,mqtt2xmpp=debug")
            .env("MQTT2XMPP_REPLY_BURST", "100000")
            .env_remove("MQTT2XMPP_PASSWORD")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mqtt2xmpp");
        let log = Arc::new((Mutex::new(String::new()), Condvar::new()));
        // Standard output and standard error both go to the log, line by line.
        let collect = |stream: Box<dyn std::io::Read + Send>| {
            let sink = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    let (text, changed) = &*sink;
                    let mut text = text.lock().unwrap();
                    text.push_str(&line);
                    text.push('\n');
                    changed.notify_all();
                }
            })
        };
        let stderr = collect(Box::new(child.stderr.take().expect("stderr piped")));
        let stdout = collect(Box::new(child.stdout.take().expect("stdout piped")));
        BinaryProcess {
            child,
            log,
            readers: vec![stderr, stdout],
        }
    }

    /// The process id (for reading its memory use from `/proc`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process wrote so far (standard output and error, interleaved by line).
    pub fn log(&self) -> String {
        // A panic elsewhere while the lock was held must not hide the log (or abort in Drop).
        self.log.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until `needle` appears at least `count` times in the log.
    pub fn wait_log(&self, needle: &str, count: usize, deadline: Duration) {
        let end = Instant::now() + deadline;
        let (text, changed) = &*self.log;
        let mut guard = text.lock().unwrap();
        while guard.matches(needle).count() < count {
            let now = Instant::now();
            if now >= end {
                let log = guard.clone();
                drop(guard); // Panic without holding the lock, so Drop can still print the log.
                panic!(
                    "{needle:?} did not appear {count} time(s) within {deadline:?}; log:\n{log}"
                );
            }
            guard = changed.wait_timeout(guard, end - now).unwrap().0;
        }
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let end = Instant::now() + deadline;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // The process is gone: collect the last lines it wrote before reading the log.
                for reader in self.readers.drain(..) {
                    let _ = reader.join();
                }
                return status;
            }
            if Instant::now() >= end {
                panic!("still running after {deadline:?}; log:\n{}", self.log());
            }
            // Polling a child's exit: there is no portable blocking wait with a timeout.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and returns the exit status and how long the exit took.
    pub fn terminate(&mut self, deadline: Duration) -> (ExitStatus, Duration) {
        let started = Instant::now();
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success());
        let status = self.wait_exit(deadline);
        (status, started.elapsed())
    }
}

impl Drop for BinaryProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- mqtt2xmpp log ---\n{}--- end of log ---", self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
