#![allow(dead_code)]
//! The bundled server (`mqtt2xmpp server`) as a child process on a free loopback port, with a
//! temporary data directory: what the bridge tests and the server tests talk to. Needs nothing
//! but the crate itself.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::bot::Bot;
use super::peers::free_port;

/// A running bundled server.
pub struct BundledServer {
    /// Client port on 127.0.0.1.
    pub port: u16,
    /// The server's self-signed certificate (for `--xmpp-ca`).
    pub ca_file: PathBuf,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The server process and its log.
    pub process: Option<Bot>,
    extra: Vec<String>,
    _dir: tempfile::TempDir,
}

impl BundledServer {
    /// Starts a server for `localhost`.
    pub fn start() -> BundledServer {
        Self::start_with(&[])
    }

    /// Starts a server with extra flags (limits, say).
    pub fn start_with(extra: &[&str]) -> BundledServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = dir.path().join("data");
        let mut server = BundledServer {
            port: free_port(),
            ca_file: data_dir.join("localhost.crt"),
            data_dir,
            process: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            _dir: dir,
        };
        server.restart();
        server
    }

    /// Starts the server (again) on the same port and data directory.
    pub fn restart(&mut self) {
        self.stop();
        let port = self.port.to_string();
        let listen = format!("127.0.0.1:{port}");
        let data_dir = self.data_dir.to_string_lossy().into_owned();
        let mut args = vec!["server", "--listen", &listen, "--data-dir", &data_dir];
        args.extend(self.extra.iter().map(String::as_str));
        let process = Bot::spawn(&args);
        process.wait_log("XMPP server listening", 1, Duration::from_secs(20));
        self.process = Some(process);
    }

    /// Stops the server with SIGTERM (graceful: sessions get `system-shutdown`).
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let (status, _) = process.terminate(Duration::from_secs(10));
            assert!(
                status.success(),
                "server exited with {status:?}:\n{}",
                process.log()
            );
        }
    }

    /// Kills the server with SIGKILL: no goodbye, no flush.
    pub fn kill9(&mut self) {
        if let Some(process) = self.process.take() {
            drop(process); // Bot's Drop sends SIGKILL and waits.
        }
    }

    /// The server process's id (for reading its memory use from `/proc`).
    pub fn pid(&self) -> u32 {
        self.process.as_ref().expect("server running").pid()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        self.process.as_ref().map(Bot::log).unwrap_or_default()
    }

    /// Creates an account with `mqtt2xmpp user add` (works while the server runs).
    pub fn add_user(&self, user: &str, password: &str) {
        let status = Command::new(env!("CARGO_BIN_EXE_mqtt2xmpp"))
            .args(["user", "--data-dir"])
            .arg(&self.data_dir)
            .args(["add", &format!("{user}@localhost")])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                if let Some(stdin) = child.stdin.as_mut() {
                    writeln!(stdin, "{password}")?;
                }
                child.wait()
            })
            .expect("run mqtt2xmpp user add");
        assert!(status.success(), "user add {user} failed");
    }

    /// `--xmpp-server` value for clients.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}
