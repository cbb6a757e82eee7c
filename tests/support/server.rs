#![allow(dead_code)]
//! The bundled XMPP server for `localhost` with a temporary data directory, in two forms:
//!
//! - [`InProcessServer`]: `mqtt2xmpp::server::run` on the test's runtime, on a port the kernel
//!   picks, ready when `run` says so, stopped by cancelling its token. What most tests use.
//! - [`ServerProcess`]: `mqtt2xmpp server` as a child process, for what only the binary shows:
//!   its log, SIGTERM and SIGKILL, its memory as a process of its own, and for the peers (a
//!   chat client or a deploy script) that talk to a server the way a user starts it.
//!
//! Both keep their port, certificate and accounts across a stop and a restart, and both offer
//! the [`XmppEndpoint`] a client needs to log in. Both can also serve direct TLS (XEP-0368) on
//! a second port and reload their certificate (SIGHUP for the binary).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use mqtt2xmpp::secret::Secret;
use mqtt2xmpp::server::component::{ComponentConfig, ComponentSpec};
use mqtt2xmpp::server::limits::ServerLimits;
use mqtt2xmpp::server::{self, Listeners, ServerConfig};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::ports::PortHold;
use super::process::BinaryProcess;

/// The one domain the test servers serve.
pub const DOMAIN: &str = "localhost";
/// How long the server may take to start, and to stop after it is told to.
const DEADLINE: Duration = Duration::from_secs(20);

/// Where a client reaches a server and which certificate it must trust.
pub trait XmppEndpoint {
    /// Client port on 127.0.0.1.
    fn port(&self) -> u16;
    /// The server's self-signed certificate (for `--xmpp-ca`).
    fn ca_file(&self) -> &Path;
    /// `--xmpp-server` value for clients.
    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port())
    }
}

/// The server's default limits, changed by `change`: the one place that names the type.
pub fn limits(change: impl FnOnce(&mut ServerLimits)) -> ServerLimits {
    let mut limits = ServerLimits::default();
    change(&mut limits);
    limits
}

/// Creates the account `user@localhost` in the database of the server in `data_dir`, as
/// `mqtt2xmpp user add` does (works while the server runs).
pub fn add_account(data_dir: &Path, user: &str, password: &str) {
    std::fs::create_dir_all(data_dir).expect("create the data directory");
    server::admin::add(
        &server::database_path(data_dir),
        &format!("{user}@{DOMAIN}"),
        &Secret::new(password),
    )
    .unwrap_or_else(|e| panic!("cannot add {user}: {e}"));
}

/// The bundled server running in the test's process.
pub struct InProcessServer {
    /// Client port on 127.0.0.1; the same after a restart.
    pub port: u16,
    /// The server's self-signed certificate (for `--xmpp-ca`).
    pub ca_file: PathBuf,
    /// The data directory.
    pub data_dir: PathBuf,
    /// Direct TLS (XEP-0368) port on 127.0.0.1, for a server started with
    /// [`start_tls`](Self::start_tls); the same after a restart.
    pub tls_port: Option<u16>,
    /// Where external components connect on 127.0.0.1, if any are configured; the same after
    /// a restart.
    pub component_port: Option<u16>,
    /// The upload service's HTTPS port (XEP-0363) on 127.0.0.1, for a server started with
    /// [`start_upload`](Self::start_upload); the same after a restart.
    pub http_port: Option<u16>,
    limits: ServerLimits,
    components: Vec<ComponentSpec>,
    running: Option<Running>,
    /// While the server is stopped: its port, so that nothing else takes it before `restart`.
    hold: Option<PortHold>,
    /// The same for the direct TLS port.
    tls_hold: Option<PortHold>,
    /// Makes the server read its certificate files again.
    reload: Arc<Notify>,
    _dir: tempfile::TempDir,
}

/// A started `server::run`: its stop token and its task.
struct Running {
    stop: CancellationToken,
    task: JoinHandle<Result<(), server::ServerError>>,
}

impl InProcessServer {
    /// Starts a server with the default limits.
    pub async fn start() -> InProcessServer {
        Self::start_with(ServerLimits::default()).await
    }

    /// Starts a server with `limits` (see [`limits`]).
    pub async fn start_with(limits: ServerLimits) -> InProcessServer {
        Self::start_with_ports(limits, false, Vec::new()).await
    }

    /// Starts a server with `limits` and a direct TLS port ([`tls_port`](Self::tls_port)).
    pub async fn start_tls(limits: ServerLimits) -> InProcessServer {
        Self::start_with_ports(limits, true, Vec::new()).await
    }

    /// Starts a server with `limits` and the upload service (XEP-0363) on an HTTPS port of
    /// its own, [`InProcessServer::http_port`].
    pub async fn start_upload(limits: ServerLimits) -> InProcessServer {
        let mut server = Self::new_stopped(limits, false, Vec::new());
        server.http_port = Some(0);
        server.restart().await;
        server
    }

    /// Starts a server with `limits` that accepts these external components (XEP-0114) on a
    /// port of their own, [`InProcessServer::component_port`].
    pub async fn start_with_components(
        limits: ServerLimits,
        components: Vec<ComponentSpec>,
    ) -> InProcessServer {
        Self::start_with_ports(limits, false, components).await
    }

    async fn start_with_ports(
        limits: ServerLimits,
        direct_tls: bool,
        components: Vec<ComponentSpec>,
    ) -> InProcessServer {
        let mut server = Self::new_stopped(limits, direct_tls, components);
        server.restart().await;
        server
    }

    fn new_stopped(
        limits: ServerLimits,
        direct_tls: bool,
        components: Vec<ComponentSpec>,
    ) -> InProcessServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = dir.path().join("data");
        InProcessServer {
            port: 0,
            ca_file: PathBuf::new(),
            data_dir,
            tls_port: direct_tls.then_some(0),
            component_port: None,
            http_port: None,
            limits,
            components,
            running: None,
            hold: None,
            tls_hold: None,
            reload: Arc::new(Notify::new()),
            _dir: dir,
        }
    }

    /// Starts the server (again) on its port and data directory; it accepts connections when
    /// this returns.
    pub async fn restart(&mut self) {
        self.stop().await;
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap_or_else(|e| panic!("cannot listen on 127.0.0.1:{}: {e}", self.port));
        self.port = listener.local_addr().expect("listener address").port();
        let direct_tls = match self.tls_port {
            Some(port) => {
                let listener = TcpListener::bind(("127.0.0.1", port))
                    .await
                    .unwrap_or_else(|e| panic!("cannot listen on 127.0.0.1:{port}: {e}"));
                self.tls_port = Some(listener.local_addr().expect("listener address").port());
                Some(listener)
            }
            None => None,
        };
        let http = match self.http_port {
            Some(port) => Some(
                TcpListener::bind(("127.0.0.1", port))
                    .await
                    .unwrap_or_else(|e| panic!("cannot listen on 127.0.0.1:{port}: {e}")),
            ),
            None => None,
        };
        self.hold = None;
        self.tls_hold = None;
        let config = ServerConfig {
            domain: DOMAIN.into(),
            data_dir: self.data_dir.clone(),
            cert: None,
            key: None,
            limits: self.limits.clone(),
            reload: Some(self.reload.clone()),
            components: ComponentConfig {
                listen: ([127, 0, 0, 1], self.component_port.unwrap_or(0)).into(),
                components: self.components.clone(),
            },
        };
        let listeners = Listeners {
            starttls: listener,
            direct_tls,
            http,
        };
        let stop = CancellationToken::new();
        let (ready, started) = oneshot::channel();
        let task = tokio::spawn(server::run(config, listeners, stop.clone(), Some(ready)));
        match tokio::time::timeout(DEADLINE, started).await {
            Ok(Ok(started)) => {
                self.ca_file = started.cert_path;
                self.component_port = started.component_address.map(|a| a.port());
                self.http_port = started.http_address.map(|a| a.port());
            }
            Ok(Err(_)) => panic!("the server stopped before it was ready: {:?}", task.await),
            Err(_) => panic!("the server was not ready within {DEADLINE:?}"),
        }
        self.running = Some(Running { stop, task });
    }

    /// Stops the server gracefully (sessions get `system-shutdown`) and checks that `run`
    /// returned `Ok`; connections to its port are refused when this returns, and a [`PortHold`]
    /// keeps the port for [`restart`](Self::restart).
    pub async fn stop(&mut self) {
        if let Some(Running { stop, task }) = self.running.take() {
            stop.cancel();
            let outcome = tokio::time::timeout(DEADLINE, task)
                .await
                .unwrap_or_else(|_| panic!("the server did not stop within {DEADLINE:?}"))
                .expect("the server task panicked");
            assert!(outcome.is_ok(), "the server stopped with {outcome:?}");
            self.hold = Some(PortHold::new(self.port));
            self.tls_hold = self.tls_port.map(PortHold::new);
        }
    }

    /// Creates an account (works while the server runs).
    pub fn add_user(&self, user: &str, password: &str) {
        add_account(&self.data_dir, user, password);
    }

    /// The direct TLS port; panics for a server started without one.
    pub fn direct_tls_port(&self) -> u16 {
        self.tls_port
            .expect("a server started with InProcessServer::start_tls")
    }

    /// Asks the server to read its certificate files again, as SIGHUP does for the binary.
    pub fn reload_certificate(&self) {
        self.reload.notify_one();
    }
}

impl XmppEndpoint for InProcessServer {
    fn port(&self) -> u16 {
        self.port
    }
    fn ca_file(&self) -> &Path {
        &self.ca_file
    }
}

impl Drop for InProcessServer {
    fn drop(&mut self) {
        // Not awaited: the test is over, and the runtime ends the task with it.
        if let Some(running) = self.running.take() {
            running.stop.cancel();
        }
    }
}

/// `mqtt2xmpp server` running as a child process.
pub struct ServerProcess {
    /// Client port on 127.0.0.1.
    pub port: u16,
    /// The server's self-signed certificate (for `--xmpp-ca`).
    pub ca_file: PathBuf,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The server process and its log.
    pub process: Option<BinaryProcess>,
    /// While the server is not running: its port, so that nothing else takes it.
    hold: Option<PortHold>,
    /// The direct TLS port (`--listen-tls`), if the server has one, and while the server is not
    /// running its hold.
    pub tls_port: Option<u16>,
    tls_hold: Option<PortHold>,
    extra: Vec<String>,
    _dir: tempfile::TempDir,
}

impl ServerProcess {
    /// Starts a server for `localhost`.
    pub fn start() -> ServerProcess {
        Self::start_with(&[])
    }

    /// Starts a server with extra flags (limits, say).
    pub fn start_with(extra: &[&str]) -> ServerProcess {
        Self::start_with_ports(extra, false)
    }

    /// Starts a server with extra flags and a direct TLS port (`--listen-tls`).
    pub fn start_with_tls(extra: &[&str]) -> ServerProcess {
        Self::start_with_ports(extra, true)
    }

    fn start_with_ports(extra: &[&str], direct_tls: bool) -> ServerProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = dir.path().join("data");
        let hold = PortHold::any();
        let tls_hold = direct_tls.then(PortHold::any);
        let mut server = ServerProcess {
            port: hold.port(),
            ca_file: data_dir.join("localhost.crt"),
            data_dir,
            process: None,
            hold: Some(hold),
            tls_port: tls_hold.as_ref().map(PortHold::port),
            tls_hold,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            _dir: dir,
        };
        server.restart();
        server
    }

    /// The temporary directory the server's data directory is in (for files a test hands it).
    pub fn scratch_dir(&self) -> &Path {
        self._dir.path()
    }

    /// Starts the server (again) on the same port and data directory.
    pub fn restart(&mut self) {
        self.stop();
        let port = self.port.to_string();
        let listen = format!("127.0.0.1:{port}");
        let data_dir = self.data_dir.to_string_lossy().into_owned();
        let mut args = vec!["server", "--listen", &listen, "--data-dir", &data_dir];
        let listen_tls = self.tls_port.map(|port| format!("127.0.0.1:{port}"));
        if let Some(listen_tls) = &listen_tls {
            args.extend(["--listen-tls", listen_tls]);
        }
        args.extend(self.extra.iter().map(String::as_str));
        let process = BinaryProcess::spawn(&args);
        process.wait_log("XMPP server listening", 1, DEADLINE);
        self.process = Some(process);
        self.hold = None;
        self.tls_hold = None;
    }

    /// Stops the server with SIGTERM (graceful: sessions get `system-shutdown`); a
    /// [`PortHold`] keeps its port for [`restart`](Self::restart).
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let (status, _) = process.terminate(Duration::from_secs(10));
            assert!(
                status.success(),
                "server exited with {status:?}:\n{}",
                process.log()
            );
            self.hold = Some(PortHold::new(self.port));
            self.tls_hold = self.tls_port.map(PortHold::new);
        }
    }

    /// Sends SIGHUP, as `systemctl reload` does: the server reads its certificate again.
    pub fn hangup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -HUP failed");
    }

    /// Kills the server with SIGKILL: no goodbye, no flush.
    pub fn kill9(&mut self) {
        if let Some(process) = self.process.take() {
            drop(process); // BinaryProcess's Drop sends SIGKILL and waits.
            self.hold = Some(PortHold::new(self.port));
            self.tls_hold = self.tls_port.map(PortHold::new);
        }
    }

    /// The server process's id (for reading its memory use from `/proc`).
    pub fn pid(&self) -> u32 {
        self.process.as_ref().expect("server running").pid()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        self.process
            .as_ref()
            .map(BinaryProcess::log)
            .unwrap_or_default()
    }

    /// Creates an account with `mqtt2xmpp user add` (works while the server runs).
    pub fn add_user(&self, user: &str, password: &str) {
        let status = Command::new(env!("CARGO_BIN_EXE_mqtt2xmpp"))
            .args(["user", "--data-dir"])
            .arg(&self.data_dir)
            .args(["add", &format!("{user}@{DOMAIN}")])
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
}

impl XmppEndpoint for ServerProcess {
    fn port(&self) -> u16 {
        self.port
    }
    fn ca_file(&self) -> &Path {
        &self.ca_file
    }
}
