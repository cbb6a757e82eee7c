//! Real peers for integration tests: a private mosquitto broker and a private Prosody XMPP
//! server, each started from its own config in a temp dir on a free loopback port.
//!
//! Peers are looked up with [`find_peer`]. When one is missing the fixture returns `None` and the
//! test should return early (a skip), except under `CI=true`, where a missing peer fails the test.
//!
//! Everything here waits by polling with a deadline; nothing relies on fixed sleeps. A peer that
//! fails to start makes the test panic with the peer's own log in the message.
#![allow(dead_code)]

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Debian's interpreter, which sees `python3-slixmpp` (1.8.3).
pub const DEBIAN_PYTHON: &str = "/usr/bin/python3";
/// The virtual environment with the current slixmpp from PyPI (see `.ci/run`).
pub const VENV_PYTHON: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/target/slixmpp-venv/bin/python"
);

/// The one event named `name` among the JSON `events` a script of `tests/slixmpp/` printed.
pub fn event<'a>(events: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    let found: Vec<&serde_json::Value> = events.iter().filter(|e| e["event"] == name).collect();
    match found.as_slice() {
        [one] => one,
        _ => panic!("expected one {name:?} event in {events:?}"),
    }
}

/// How long a peer may take from spawn until it accepts connections.
pub const START_DEADLINE: Duration = Duration::from_secs(20);
/// How long a peer may take to exit after SIGTERM before it is killed outright.
const STOP_DEADLINE: Duration = Duration::from_secs(10);
/// Interval between two looks at a port, a log or a child process.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How many fresh ports `start` tries when the chosen one is taken before the peer binds it.
const PORT_ATTEMPTS: usize = 3;

/// Whether a missing peer must fail the test (CI=true) rather than skip it.
pub fn peers_required() -> bool {
    std::env::var("CI").is_ok_and(|value| value.trim().eq_ignore_ascii_case("true"))
}

/// Whether the interpreter `python` can import `module` (with no `PYTHONPATH`/`PYTHONHOME` of
/// the caller's); if not, panics when peers_required() (naming `install`, the way to get it),
/// else prints "skipping: …" to stderr and returns false.
pub fn python_imports(python: &str, module: &str, install: &str) -> bool {
    let importable = Command::new(python)
        .args(["-c", &format!("import {module}")])
        .env_remove("PYTHONPATH")
        .env_remove("PYTHONHOME")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !importable {
        if peers_required() {
            panic!("{python} cannot import {module}, and CI=true requires every peer: {install}");
        }
        eprintln!("skipping: {python} cannot import {module} ({install})");
    }
    importable
}

/// Runs a client script that prints one JSON event per line and ends with `{"event": "done"}`,
/// within `deadline`, and returns its events and its standard output. Panics, with the
/// script's output and `server_log()`, if it cannot start, runs longer, prints anything but
/// JSON lines, exits with failure or without `done`. `label` names the run in that message.
pub fn run_event_script(
    command: &mut Command,
    label: &str,
    deadline: Duration,
    server_log: impl Fn() -> String,
) -> (Vec<serde_json::Value>, String) {
    let mut child = command
        .env_remove("PYTHONPATH")
        .env_remove("PYTHONHOME")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {label}: {e}"));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout piped")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr piped")));
    let started = Instant::now();
    let finished = loop {
        if let Some(status) = child.try_wait().expect("wait for the client script") {
            break Some(status);
        }
        if started.elapsed() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        // Polling a child's exit: there is no portable blocking wait with a timeout.
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    let explain = |what: &str| {
        format!(
            "{label} {what}\n--- stdout ---\n{stdout}--- stderr ---\n{stderr}\
             --- server log ---\n{}",
            server_log()
        )
    };
    let Some(status) = finished else {
        panic!("{}", explain(&format!("ran longer than {deadline:?}")));
    };
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}", explain(&format!("printed {line:?}: {e}"))))
        })
        .collect();
    let done = events.last().is_some_and(|e| e["event"] == "done");
    if !status.success() || !done {
        panic!("{}", explain(&format!("failed ({status})")));
    }
    (events, stdout)
}

/// Returns Some(path) if the program exists; if missing: panics with a clear message when
/// peers_required(), else prints "skipping: <name> not installed" to stderr and returns None.
///
/// `candidates` are paths tried first, in order (e.g. `/usr/sbin/mosquitto`, which is not on
/// every user's `PATH`); then `program` is looked up in each directory of `$PATH`. Only
/// executable regular files count.
pub fn find_peer(program: &str, candidates: &[&str]) -> Option<PathBuf> {
    let path_dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default();
    let found = candidates
        .iter()
        .map(PathBuf::from)
        .chain(path_dirs.iter().map(|dir| dir.join(program)))
        .find(|path| is_executable(path));
    if found.is_none() {
        if peers_required() {
            panic!(
                "test peer `{program}` is not installed (looked at {candidates:?} and in $PATH), \
                 and CI=true requires every peer: install its Debian package"
            );
        }
        eprintln!("skipping: {program} not installed");
    }
    found
}

/// Picks a free loopback TCP port (bind 127.0.0.1:0, read port, drop).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap_or_else(|e| panic!("cannot bind an ephemeral port on 127.0.0.1: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("cannot read the address of a bound loopback socket: {e}"))
        .port()
}

/// A free loopback TCP port other than `other`, for a peer's second listener (free_port may hand
/// out a just-released port again).
fn distinct_free_port(other: u16) -> u16 {
    for _ in 0..PORT_ATTEMPTS {
        let port = free_port();
        if port != other {
            return port;
        }
    }
    panic!("free_port kept returning port {other}, which is already chosen");
}

/// Waits until a TCP connect to 127.0.0.1:port succeeds, polling every 20 ms up to `deadline`;
/// panics with a message naming `what` on timeout. (No fixed sleeps elsewhere.)
pub fn wait_for_port(port: u16, what: &str, deadline: Duration) {
    let started = Instant::now();
    while !port_open(port) {
        if started.elapsed() >= deadline {
            panic!("{what} did not accept connections on 127.0.0.1:{port} within {deadline:?}");
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// A private mosquitto broker listening on `127.0.0.1:port`, and with [`Mosquitto::start_tls`]
/// also over TLS on `127.0.0.1:tls_port`.
pub struct Mosquitto {
    /// The loopback port of the plain MQTT listener; it stays the same across
    /// [`Mosquitto::restart`].
    pub port: u16,
    /// The loopback port of the TLS listener ([`Mosquitto::start_tls`] only, else `None`); it
    /// stays the same across [`Mosquitto::restart`].
    pub tls_port: Option<u16>,
    /// The TLS listener's self-signed certificate (PEM) for "localhost", which a client must
    /// trust ([`Mosquitto::start_tls`] only, else `None`).
    pub ca_file: Option<PathBuf>,
    program: PathBuf,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    /// Holds the config, password file and log; removed after the broker is gone.
    dir: TempDir,
}

impl Mosquitto {
    /// Starts mosquitto on a free loopback port with a private config (listener PORT 127.0.0.1,
    /// allow_anonymous true, persistence false), waits for the port. None = skipped (see
    /// find_peer).
    pub fn start() -> Option<Mosquitto> {
        Self::start_with(None, false)
    }

    /// Like start, but with a password file: allow_anonymous false, one user (created with
    /// `mosquitto_passwd -b -c`).
    pub fn start_with_user(user: &str, password: &str) -> Option<Mosquitto> {
        Self::start_with(Some((user, password)), false)
    }

    /// Like start (anonymous clients allowed), with a second listener on another free loopback
    /// port, `tls_port`, that speaks MQTT over TLS only. The plain listener on `port` stays, so
    /// test publishers need no TLS; both listeners share one message space.
    ///
    /// The TLS listener presents a self-signed certificate for "localhost" generated with rcgen
    /// (the same kind as [`Prosody`]'s: CA:FALSE, SAN DNS:localhost, EKU serverAuth), kept in
    /// `ca_file`; a client connecting to `localhost:tls_port` and trusting `ca_file` verifies
    /// it. The broker asks for no client certificate. None = skipped (see find_peer).
    ///
    /// The readiness check connects to both ports without speaking, so after each (re)start the
    /// log shows a "Client connection from 127.0.0.1 failed: ... unexpected eof" for the TLS
    /// port: that is the fixture, not the client under test.
    pub fn start_tls() -> Option<Mosquitto> {
        Self::start_with(None, true)
    }

    /// Starts mosquitto from a whole config written by the caller: `config(port)` is the text
    /// for a free loopback `port`, which it must make the broker listen on (`listener PORT
    /// 127.0.0.1`), and it must leave the log on stderr (mosquitto's default, or `log_dest
    /// stderr`), where the fixture reads it. Nothing is added to it: in particular no `user
    /// root`, so a broker started by root switches to the `mosquitto` user after loading the
    /// config, as an installed one does, and must then be able to read the files the config
    /// names. None = skipped (see find_peer).
    pub fn start_with_config(config: impl Fn(u16) -> String) -> Option<Mosquitto> {
        let program = find_peer("mosquitto", &["/usr/sbin/mosquitto"])?;
        let dir = private_dir("mosquitto");
        let mut broker = Mosquitto {
            port: 0,
            tls_port: None,
            ca_file: None,
            program,
            config: dir.path().join("mosquitto.conf"),
            log: dir.path().join("mosquitto.log"),
            child: None,
            dir,
        };
        for _ in 0..PORT_ATTEMPTS {
            broker.port = free_port();
            write_file(&broker.config, &config(broker.port), 0o600);
            if broker.spawn().is_ok() {
                return Some(broker);
            }
        }
        panic!(
            "mosquitto found each of {PORT_ATTEMPTS} free ports taken; last log:\n{}",
            broker.log()
        );
    }

    /// Kills the broker (SIGTERM then wait), its ports are then closed. Does nothing if it is
    /// already stopped.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, "mosquitto", true);
        }
    }

    /// Starts it again on the SAME port(s) with the same config (and certificate), waits for
    /// them. A broker that is still running is stopped first. Retained messages are lost
    /// (persistence is off).
    pub fn restart(&mut self) {
        self.stop();
        if self.spawn().is_err() {
            panic!(
                "cannot restart mosquitto: port {} or {:?} was taken by another process while \
                 the broker was stopped; log:\n{}",
                self.port,
                self.tls_port,
                self.log()
            );
        }
    }

    /// Everything the broker has logged so far (all runs), for diagnostics.
    pub fn log(&self) -> String {
        read_lossy(&self.log)
    }

    fn start_with(auth: Option<(&str, &str)>, tls: bool) -> Option<Mosquitto> {
        let program = find_peer("mosquitto", &["/usr/sbin/mosquitto"])?;
        let dir = private_dir("mosquitto");
        let access = match auth {
            Some((user, password)) => {
                let passwd = find_peer("mosquitto_passwd", &["/usr/bin/mosquitto_passwd"])?;
                let password_file = dir.path().join("passwd");
                run_ok(
                    Command::new(&passwd)
                        .arg("-b")
                        .arg("-c")
                        .arg(&password_file)
                        .arg(user)
                        .arg(password),
                    "mosquitto_passwd",
                );
                format!(
                    "allow_anonymous false\npassword_file {}\n",
                    conf_path(&password_file)
                )
            }
            None => "allow_anonymous true\n".to_owned(),
        };
        let tls_files = tls.then(|| {
            let cert_file = dir.path().join("localhost.crt");
            let key_file = dir.path().join("localhost.key");
            write_self_signed_cert("localhost", &cert_file, &key_file);
            (cert_file, key_file)
        });
        let mut broker = Mosquitto {
            port: 0,
            tls_port: None,
            ca_file: tls_files.as_ref().map(|(cert_file, _)| cert_file.clone()),
            program,
            config: dir.path().join("mosquitto.conf"),
            log: dir.path().join("mosquitto.log"),
            child: None,
            dir,
        };
        for _ in 0..PORT_ATTEMPTS {
            broker.port = free_port();
            // The second listener comes after every global option: in mosquitto's config, the
            // listener-specific options (certfile, keyfile) apply to the last `listener` line.
            let tls_listener = match &tls_files {
                Some((cert_file, key_file)) => {
                    let tls_port = distinct_free_port(broker.port);
                    broker.tls_port = Some(tls_port);
                    format!(
                        "listener {tls_port} 127.0.0.1\n\
                         certfile {cert}\n\
                         keyfile {key}\n",
                        cert = conf_path(cert_file),
                        key = conf_path(key_file),
                    )
                }
                None => String::new(),
            };
            // `user root` keeps a broker started by root from switching to the `mosquitto` user,
            // which could not read the private (0700) temp dir. It is ignored when not root.
            // `per_listener_settings false` (mosquitto's default, stated for clarity) makes
            // allow_anonymous and password_file global: they apply to every listener.
            let config = format!(
                "# Private test broker written by tests/support/peers.rs\n\
                 user root\n\
                 per_listener_settings false\n\
                 listener {port} 127.0.0.1\n\
                 {access}\
                 persistence false\n\
                 log_dest stderr\n\
                 {tls_listener}",
                port = broker.port,
            );
            write_file(&broker.config, &config, 0o600);
            if broker.spawn().is_ok() {
                return Some(broker);
            }
        }
        panic!(
            "mosquitto found each of {PORT_ATTEMPTS} free ports taken; last log:\n{}",
            broker.log()
        );
    }

    /// Spawns the broker on `self.port` (and `self.tls_port`) and waits until it listens.
    fn spawn(&mut self) -> Result<(), PortTaken> {
        let mut log = LogTail::new(&self.log);
        let mut command = Command::new(&self.program);
        command.arg("-c").arg(&self.config);
        let mut child = spawn_logged(&mut command, &self.log, "mosquitto");
        let ports: Vec<u16> = std::iter::once(self.port).chain(self.tls_port).collect();
        let outcome = await_startup(
            &mut child,
            "mosquitto",
            &ports,
            |text| {
                // mosquitto binds every listener before it logs "running", and exits if any
                // cannot be bound.
                if text.contains("Address already in use") {
                    Startup::PortTaken
                } else if text.lines().any(|line| {
                    line.contains("mosquitto version") && line.trim_end().ends_with(" running")
                }) {
                    Startup::Listening
                } else {
                    Startup::Pending
                }
            },
            &mut log,
        );
        self.child = Some(child);
        if outcome.is_err() {
            self.stop();
        }
        outcome
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, "mosquitto", false);
        }
    }
}

/// A private Prosody server for `domain` with client-to-server (STARTTLS) on `127.0.0.1:port`.
///
/// Only c2s listens: no s2s, HTTP or components. Encryption is required before authentication,
/// and the server presents a self-signed certificate for `localhost` that `ca_file` holds.
pub struct Prosody {
    /// The loopback port for client connections; it stays the same across [`Prosody::restart`].
    pub port: u16,
    /// The XMPP domain served: always `"localhost"`.
    pub domain: String,
    /// The server's self-signed certificate (PEM), usable as the only trust anchor by clients.
    pub ca_file: PathBuf,
    program: PathBuf,
    prosodyctl: PathBuf,
    config: PathBuf,
    /// Prosody's own log (its file sink).
    log: PathBuf,
    /// Whatever Prosody writes to stdout and stderr, e.g. Lua errors before logging is set up.
    console_log: PathBuf,
    child: Option<Child>,
    /// Lines appended to the config after the virtual host (components, e.g. a MUC service).
    extra: String,
    /// Holds the config, certificate, key, accounts and logs; removed after the server is gone.
    dir: TempDir,
    /// The loopback HTTPS port (same certificate), when [`Prosody::start_with_https`] opened one.
    pub https_port: Option<u16>,
}

/// Prosody's multi-user chat service at `conference.localhost` (XEP-0045): rooms open as soon as
/// they are created (no locking until configured), and every occupant sees real JIDs, so the
/// bot's allow list can apply to them.
pub const PROSODY_MUC: &str = r#"
Component "conference.localhost" "muc"
    muc_room_locking = false
    muc_room_default_public_jids = true
"#;

impl Prosody {
    /// Starts Prosody 0.12 in the foreground (`prosody -F`) from a private config in a temp dir
    /// on a free loopback port, c2s only, with a self-signed certificate for "localhost"
    /// generated with rcgen. Waits until c2s listens. None = skipped (see find_peer).
    ///
    /// The certificate is an end-entity certificate (basicConstraints CA:FALSE, SAN
    /// DNS:localhost, EKU serverAuth), self-signed, so `ca_file` works as a trust anchor for both
    /// rustls/webpki and OpenSSL.
    pub fn start() -> Option<Prosody> {
        Prosody::start_with("")
    }

    /// [`Prosody::start`] with `extra` appended to the config (after the virtual host), e.g.
    /// [`PROSODY_MUC`].
    pub fn start_with(extra: &str) -> Option<Prosody> {
        Prosody::start_with_options(extra, false)
    }

    /// [`Prosody::start_with`] plus an HTTPS listener on another free loopback port
    /// ([`Prosody::https_port`]) with the same certificate, for HTTP modules such as
    /// `http_file_share`. Waits until it listens too.
    pub fn start_with_https(extra: &str) -> Option<Prosody> {
        let server = Prosody::start_with_options(extra, true)?;
        if let Some(port) = server.https_port {
            wait_for_port(port, "prosody https", START_DEADLINE);
        }
        Some(server)
    }

    fn start_with_options(extra: &str, https: bool) -> Option<Prosody> {
        let program = find_peer("prosody", &["/usr/bin/prosody"])?;
        let prosodyctl = find_peer("prosodyctl", &["/usr/bin/prosodyctl"])?;
        let domain = "localhost".to_owned();
        let dir = private_dir("prosody");
        let certs = dir.path().join("certs");
        let data = dir.path().join("data");
        for sub in [&certs, &data] {
            fs::create_dir(sub).unwrap_or_else(|e| panic!("cannot create {}: {e}", sub.display()));
        }
        let ca_file = certs.join(format!("{domain}.crt"));
        let key_file = certs.join(format!("{domain}.key"));
        write_self_signed_cert(&domain, &ca_file, &key_file);

        let mut server = Prosody {
            port: 0,
            domain,
            ca_file,
            program,
            prosodyctl,
            config: dir.path().join("prosody.cfg.lua"),
            log: dir.path().join("prosody.log"),
            console_log: dir.path().join("prosody.console.log"),
            child: None,
            extra: extra.to_owned(),
            dir,
            https_port: None,
        };
        for _ in 0..PORT_ATTEMPTS {
            server.port = free_port();
            server.https_port = https.then(free_port);
            let config = server.config_text(&certs, &data, &key_file);
            write_file(&server.config, &config, 0o600);
            if server.spawn().is_ok() {
                return Some(server);
            }
        }
        panic!(
            "prosody found each of {PORT_ATTEMPTS} free ports taken; last log:\n{}",
            server.log()
        );
    }

    /// Registers an account (`prosodyctl --config FILE register USER DOMAIN PASSWORD`).
    ///
    /// Works both while Prosody runs and while it is stopped: prosodyctl writes the account
    /// straight into the private data dir, and Prosody's file storage reads accounts from disk
    /// at each login, so no restart is needed. Registering an existing user sets its password.
    pub fn register(&self, user: &str, password: &str) {
        run_ok(
            Command::new(&self.prosodyctl)
                .arg("--config")
                .arg(&self.config)
                .arg("register")
                .arg(user)
                .arg(&self.domain)
                .arg(password),
            "prosodyctl register",
        );
    }

    /// The bare JID `user@domain` of an account on this server.
    pub fn jid(&self, user: &str) -> String {
        format!("{user}@{}", self.domain)
    }

    /// Stops the server (SIGTERM then wait; Prosody takes a second or two to shut down), the
    /// port is then closed. Does nothing if it is already stopped.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, "prosody", true);
        }
    }

    /// Starts it again on the SAME port with the same config, certificate and accounts, waits
    /// for the port. A server that is still running is stopped first.
    pub fn restart(&mut self) {
        self.stop();
        if self.spawn().is_err() {
            panic!(
                "cannot restart prosody: port {} was taken by another process while the server \
                 was stopped; log:\n{}",
                self.port,
                self.log()
            );
        }
    }

    /// Everything the server has logged so far (all runs, console output last).
    pub fn log(&self) -> String {
        format!("{}{}", read_lossy(&self.log), read_lossy(&self.console_log))
    }

    fn config_text(&self, certs: &Path, data: &Path, key_file: &Path) -> String {
        let dir = self.dir.path();
        format!(
            r#"-- Private test server written by tests/support/peers.rs
run_as_root = true
pidfile = {pidfile}
data_path = {data}
certificates = {certs}
log = {{ {{ levels = {{ min = "info" }}, to = "file", filename = {log} }} }}

interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {port} }}
c2s_direct_tls_ports = {{}}
legacy_ssl_ports = {{}}
s2s_ports = {{}}
component_ports = {{}}
http_ports = {{}}
https_ports = {{ {https_port} }}
https_ssl = {{ certificate = {cert}, key = {key} }}

storage = "internal"
modules_disabled = {{ "s2s" }}

-- The snippet users are told to use (deploy/prosody-mqtt2xmpp.cfg.lua), verbatim:
{snippet}

VirtualHost {domain}
    ssl = {{ certificate = {cert}, key = {key} }}
{extra}"#,
            pidfile = lua_string(&dir.join("prosody.pid")),
            data = lua_string(data),
            certs = lua_string(certs),
            log = lua_string(&self.log),
            port = self.port,
            domain = lua_string(Path::new(&self.domain)),
            cert = lua_string(&self.ca_file),
            key = lua_string(key_file),
            https_port = self.https_port.map(|p| p.to_string()).unwrap_or_default(),
            snippet = include_str!("../../deploy/prosody-mqtt2xmpp.cfg.lua"),
            extra = self.extra,
        )
    }

    /// Spawns the server on `self.port` and waits until c2s listens.
    fn spawn(&mut self) -> Result<(), PortTaken> {
        let mut log = LogTail::new(&self.log);
        let mut console = LogTail::new(&self.console_log);
        let mut command = Command::new(&self.program);
        command.arg("-F").arg("--config").arg(&self.config);
        let mut child = spawn_logged(&mut command, &self.console_log, "prosody");
        let port = self.port;
        let taken = format!("Failed to open server port {port}");
        let listening = format!("Activated service 'c2s' on [127.0.0.1]:{port}");
        let outcome = await_startup(
            &mut child,
            "prosody",
            &[port],
            |text| {
                // Prosody keeps running when it cannot bind, so the log is the only sign.
                if text.contains(&taken) {
                    Startup::PortTaken
                } else if text.contains(&listening) {
                    Startup::Listening
                } else {
                    Startup::Pending
                }
            },
            &mut log,
        );
        self.child = Some(child);
        if outcome.is_err() {
            self.stop();
            return outcome;
        }
        // Prosody logs a bad certificate or module as an error but carries on; with a private
        // config any error is a fixture bug, and would otherwise surface as a baffling failure.
        let startup_log = format!("{}{}", log.read_new(), console.read_new());
        if startup_log.lines().any(|line| line.contains("\terror\t")) {
            panic!("prosody logged errors while starting:\n{startup_log}");
        }
        Ok(())
    }
}

impl Drop for Prosody {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, "prosody", false);
        }
    }
}

/// The peer could not bind its port because something else holds it.
#[derive(Debug)]
struct PortTaken;

/// What a peer's log says about its startup so far.
enum Startup {
    Pending,
    Listening,
    PortTaken,
}

/// Waits until the log says the peer listens and a connection to each of its ports succeeds.
/// Panics with the log if the peer exits or does not get there within [`START_DEADLINE`].
fn await_startup(
    child: &mut Child,
    what: &str,
    ports: &[u16],
    classify: impl Fn(&str) -> Startup,
    log: &mut LogTail,
) -> Result<(), PortTaken> {
    let addresses = ports
        .iter()
        .map(|port| format!("127.0.0.1:{port}"))
        .collect::<Vec<_>>()
        .join(" and ");
    let started = Instant::now();
    let mut text = String::new();
    loop {
        // Look at the exit status before the log, so a log read after an exit is complete.
        let exited = child.try_wait().unwrap_or_else(|e| {
            panic!("cannot query the state of {what} (pid {}): {e}", child.id())
        });
        text.push_str(&log.read_new());
        match classify(&text) {
            Startup::PortTaken => return Err(PortTaken),
            Startup::Listening if ports.iter().all(|&port| port_open(port)) => return Ok(()),
            Startup::Listening | Startup::Pending => {}
        }
        if let Some(status) = exited {
            panic!("{what} exited ({status}) before listening on {addresses}; log:\n{text}");
        }
        if started.elapsed() >= START_DEADLINE {
            panic!("{what} did not listen on {addresses} within {START_DEADLINE:?}; log:\n{text}");
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Stops a child: SIGTERM and a wait of up to [`STOP_DEADLINE`] when `graceful`, then SIGKILL
/// if it is still there; always reaps it.
fn terminate(child: &mut Child, what: &str, graceful: bool) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    if graceful {
        // std has no SIGTERM; the shell's kill builtin sends it. The pid cannot have been
        // reused: the child is not reaped yet.
        let sent = Command::new("sh")
            .args(["-c", "kill -TERM \"$1\"", "sh"])
            .arg(child.id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if sent && wait_until_exit(child, STOP_DEADLINE).is_some() {
            return;
        }
        if sent {
            eprintln!("{what} did not exit within {STOP_DEADLINE:?} of SIGTERM; killing it");
        } else {
            eprintln!("cannot send SIGTERM to {what}; killing it");
        }
    }
    // Errors here mean the child is already gone, which is what we want.
    let _ = child.kill();
    let _ = child.wait();
}

/// Polls the child until it exits or `deadline` passes.
fn wait_until_exit(child: &mut Child, deadline: Duration) -> Option<ExitStatus> {
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if started.elapsed() < deadline => std::thread::sleep(POLL_INTERVAL),
            Ok(None) | Err(_) => return None,
        }
    }
}

/// Spawns `command` with stdin closed and stdout and stderr appended to `log`.
fn spawn_logged(command: &mut Command, log: &Path, what: &str) -> Child {
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", log.display()));
    let err = out
        .try_clone()
        .unwrap_or_else(|e| panic!("cannot duplicate the handle of {}: {e}", log.display()));
    command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what} ({command:?}): {e}"))
}

/// Runs a short-lived helper to completion and panics with its output if it fails.
fn run_ok(command: &mut Command, what: &str) {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what} ({command:?}): {e}"));
    if !output.status.success() {
        panic!(
            "{what} failed ({}): {command:?}\nstdout:\n{}\nstderr:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
    }
}

/// Reads what a log file gained since the last call (or since the cursor was made).
struct LogTail {
    path: PathBuf,
    offset: u64,
}

impl LogTail {
    /// A cursor at the current end of `path` (or at its start if it does not exist yet).
    fn new(path: &Path) -> LogTail {
        let offset = fs::metadata(path).map(|meta| meta.len()).unwrap_or(0);
        LogTail {
            path: path.to_owned(),
            offset,
        }
    }

    fn read_new(&mut self) -> String {
        let Ok(mut file) = File::open(&self.path) else {
            return String::new();
        };
        let len = file.metadata().map(|meta| meta.len()).unwrap_or(0);
        if len < self.offset {
            // Truncated and rewritten: read it again from the start.
            self.offset = 0;
        }
        let mut bytes = Vec::new();
        if file.seek(SeekFrom::Start(self.offset)).is_err() || file.read_to_end(&mut bytes).is_err()
        {
            return String::new();
        }
        self.offset += bytes.len() as u64;
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Generates a self-signed end-entity certificate for `domain` and writes it and its key as PEM.
///
/// rustls/webpki accepts such a certificate as its own trust anchor: the anchor is taken from the
/// certificate's subject and key, and the same certificate then passes as the end-entity because
/// it is not a CA (webpki rejects a CA certificate as end-entity) and names `domain` in its SAN
/// (webpki ignores the CN).
fn write_self_signed_cert(domain: &str, cert_file: &Path, key_file: &Path) {
    use rcgen::{
        CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };

    let mut params = CertificateParams::new(vec![domain.to_owned()])
        .unwrap_or_else(|e| panic!("cannot make certificate parameters for {domain}: {e}"));
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, domain);
    params.distinguished_name = name;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate()
        .unwrap_or_else(|e| panic!("cannot generate a key pair for {domain}: {e}"));
    let cert = params
        .self_signed(&key)
        .unwrap_or_else(|e| panic!("cannot self-sign a certificate for {domain}: {e}"));
    write_file(cert_file, &cert.pem(), 0o644);
    write_file(key_file, &key.serialize_pem(), 0o600);
}

/// A temp dir (mode 0700) for one peer, named after it to make leftovers recognisable.
fn private_dir(peer: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("mqtt2xmpp-{peer}-"))
        .tempdir()
        .unwrap_or_else(|e| panic!("cannot create a temp dir for {peer}: {e}"))
}

/// Creates or replaces `path` with `contents`, with permissions `mode` for a new file.
fn write_file(path: &Path, contents: &str, mode: u32) {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .and_then(|mut file| file.write_all(contents.as_bytes()))
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// A file's contents as text, or a note that it could not be read.
fn read_lossy(path: &Path) -> String {
    match fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => format!("(cannot read {}: {e})\n", path.display()),
    }
}

/// A path as a mosquitto config value: the rest of the line, so it must not contain a line break
/// or start or end with blanks (mosquitto's parser trims them).
fn conf_path(path: &Path) -> String {
    let text = path
        .to_str()
        .unwrap_or_else(|| panic!("path is not UTF-8: {}", path.display()));
    assert!(
        !text.chars().any(char::is_control) && text.trim() == text,
        "cannot put this path into a mosquitto config: {text:?}"
    );
    text.to_owned()
}

/// A Lua string literal for a path (or other text without control characters).
fn lua_string(path: &Path) -> String {
    let text = path
        .to_str()
        .unwrap_or_else(|| panic!("path is not UTF-8: {}", path.display()));
    assert!(
        !text.chars().any(char::is_control),
        "cannot put a control character into a Lua string: {text:?}"
    );
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

fn port_open(port: u16) -> bool {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok()
}
