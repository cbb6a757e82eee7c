#![allow(dead_code)]
//! A private ejabberd node (Debian's `ejabberd` 23.01), as the peers notes describe it: its own
//! config made from `deploy/ejabberd-mqtt2xmpp.yml` (only the listener port and the certificate
//! path replaced, plus any extra modules a test asks for, such as `mod_muc`), its own
//! ejabberdctl.cfg with a unique node name, and fresh spool and log directories, all in a temp
//! dir that belongs to the `ejabberd` user. [`Ejabberd::start`] returns `None` (skip) without
//! ejabberd, or fails with CI=true (see `peers::find_peer`).

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use super::peers::{find_peer, free_port, peers_required};

/// Where the config comes from, for messages.
pub const EJABBERD_CONFIG_PATH: &str = "deploy/ejabberd-mqtt2xmpp.yml";
/// The deployment example the node runs from.
pub const EJABBERD_CONFIG: &str = include_str!("../../deploy/ejabberd-mqtt2xmpp.yml");

/// Interval between two looks at a port, a log or a process.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// The multi-user chat service at `conference.localhost`, for [`Ejabberd::start_with_modules`]:
/// rooms show every occupant's real JID (ejabberd's default shows them to moderators only), so
/// the bot's allow list can apply to them.
pub const EJABBERD_MUC: &str = "  mod_muc:\n    default_room_options:\n      anonymous: false\n";

/// How long ejabberd may take from `ejabberdctl start` until its c2s listener accepts
/// connections. Measured in a Debian 12 container (ejabberd 23.01, Erlang 25): 1.0 to 2.3 s (the
/// Erlang VM boots, Mnesia creates its tables in the fresh spool directory, then the listener
/// starts). Every later `ejabberdctl` command boots a short-lived Erlang VM of its own: about
/// 0.6 s for each `register`, and `stop` plus the VM's exit take about 2 s. The whole test runs
/// in 5.5 to 7 s. The deadline leaves room for slow CI machines.
const EJABBERD_START_DEADLINE: Duration = Duration::from_secs(60);
/// How long the node may take to exit after `ejabberdctl stop` before it is killed.
const EJABBERD_STOP_DEADLINE: Duration = Duration::from_secs(30);
/// How many fresh ports `Ejabberd::start` tries when the chosen one is taken before ejabberd
/// binds it.
const EJABBERD_PORT_ATTEMPTS: usize = 3;

/// A private ejabberd node, as ../shared/PEERS.md describes it: its own config (from
/// `deploy/ejabberd-mqtt2xmpp.yml`), its own ejabberdctl.cfg with a unique node name, and fresh
/// spool and log directories, all in a temp dir that belongs to the `ejabberd` user. Only its
/// c2s listener (STARTTLS required) on `127.0.0.1:port` and its Erlang distribution port (also
/// on loopback) listen. Stopped, and checked to be gone, on drop.
pub struct Ejabberd {
    /// The c2s port on 127.0.0.1.
    pub port: u16,
    /// The server's self-signed certificate for `localhost` alone (no key), for clients.
    pub ca_file: PathBuf,
    ejabberdctl: PathBuf,
    epmd: PathBuf,
    /// The Erlang node name, `NAME@localhost`.
    node: String,
    config: PathBuf,
    ctl_config: PathBuf,
    logs: PathBuf,
    spool: PathBuf,
    /// Whether `ejabberdctl start` ran (and the node may need stopping).
    launched: bool,
    /// Whether no epmd ran before this node started it (then it is stopped with the node, if
    /// no other node uses it by then).
    started_epmd: bool,
    /// What `ejabberdctl start` printed.
    start_output: String,
    /// Holds everything above; removed after the node is gone.
    dir: tempfile::TempDir,
}

/// The port was taken by another process before ejabberd could bind it.
struct PortTaken;

impl Ejabberd {
    /// Starts a node on a free loopback port and waits until its c2s listener accepts
    /// connections. None = skipped (ejabberd not installed, or not root; see find_peer).
    pub fn start() -> Option<Ejabberd> {
        Self::start_with_modules("")
    }

    /// [`Ejabberd::start`] with `modules` (YAML lines, indented by two spaces) added to the
    /// config's `modules:`, e.g. [`EJABBERD_MUC`].
    pub fn start_with_modules(modules: &str) -> Option<Ejabberd> {
        let ejabberdctl = find_peer("ejabberdctl", &["/usr/sbin/ejabberdctl"])?;
        let epmd = find_peer("epmd", &["/usr/bin/epmd"])?;
        // ejabberdctl refuses to run as anyone but root (it switches to the `ejabberd` user)
        // or `ejabberd` itself; a test run by root is what CI does.
        let uid = fs::metadata("/proc/self").map(|meta| meta.uid()).ok();
        if uid != Some(0) {
            if peers_required() {
                panic!("ejabberdctl must run as root, and CI=true requires every peer");
            }
            eprintln!("skipping: ejabberdctl needs root (running as uid {uid:?})");
            return None;
        }
        for _ in 0..EJABBERD_PORT_ATTEMPTS {
            let mut node = Ejabberd::prepare(ejabberdctl.clone(), epmd.clone(), modules);
            match node.spawn() {
                Ok(()) => return Some(node),
                Err(PortTaken) => {
                    eprintln!("port {} was taken; trying another", node.port);
                    node.stop();
                }
            }
        }
        panic!("ejabberd found each of {EJABBERD_PORT_ATTEMPTS} free ports taken");
    }

    /// Writes the certificate, the config and ejabberdctl.cfg into a fresh temp dir.
    fn prepare(ejabberdctl: PathBuf, epmd: PathBuf, modules: &str) -> Ejabberd {
        let dir = tempfile::Builder::new()
            .prefix("mqtt2xmpp-ejabberd-")
            .tempdir()
            .expect("temp dir");
        let port = free_port();
        let path = |name: &str| dir.path().join(name);
        let (logs, spool) = (path("logs"), path("spool"));
        for sub in [&logs, &spool] {
            fs::create_dir(sub).unwrap_or_else(|e| panic!("cannot create {}: {e}", sub.display()));
        }
        // ejabberd wants the certificate and its key in one PEM file; clients get the
        // certificate alone.
        let (cert, key) = self_signed_cert("localhost");
        let ca_file = path("localhost.crt");
        let certfile = path("localhost.pem");
        write(&ca_file, &cert);
        write(&certfile, &format!("{cert}{key}"));
        let config = path("ejabberd.yml");
        write(&config, &ejabberd_config(port, &certfile, modules));
        // A unique node name: ejabberdctl refuses to start a name epmd already knows, and the
        // name is tied to the spool directory's Mnesia schema. `inet_dist_use_interface` keeps
        // the node's distribution port on loopback, ERL_EPMD_ADDRESS an epmd it starts.
        let node = format!(
            "mqtt2xmpp_test_{}_{:08x}@localhost",
            std::process::id(),
            rand::random::<u32>()
        );
        let ctl_config = path("ejabberdctl.cfg");
        write(
            &ctl_config,
            &format!(
                "# Written by the tests\n\
                 ERLANG_NODE={node}\n\
                 ERL_OPTIONS=\"-env ERL_CRASH_DUMP_BYTES 0 -kernel inet_dist_use_interface {{127,0,0,1}}\"\n\
                 ERL_EPMD_ADDRESS=127.0.0.1\n"
            ),
        );
        // The node runs as `ejabberd`: everything it reads or writes must be its own.
        run_ok(
            Command::new("chown")
                .args(["-R", "ejabberd:ejabberd"])
                .arg(dir.path()),
            "chown -R ejabberd:ejabberd",
        );
        Ejabberd {
            port,
            ca_file,
            ejabberdctl,
            epmd,
            node,
            config,
            ctl_config,
            logs,
            spool,
            launched: false,
            started_epmd: false,
            start_output: String::new(),
            dir,
        }
    }

    /// `ejabberdctl` with this node's config, ejabberdctl.cfg, log and spool directories.
    fn ctl(&self) -> Command {
        let mut command = Command::new(&self.ejabberdctl);
        command
            .arg("--config")
            .arg(&self.config)
            .arg("--ctl-config")
            .arg(&self.ctl_config)
            .arg("--logs")
            .arg(&self.logs)
            .arg("--spool")
            .arg(&self.spool);
        command
    }

    /// `ejabberdctl start` (which returns at once: the node detaches), then waits until the log
    /// says the c2s listener accepts connections and the port answers.
    fn spawn(&mut self) -> Result<(), PortTaken> {
        self.started_epmd = epmd_names(&self.epmd).is_none();
        self.launched = true;
        let output = run(self.ctl().arg("start"), "ejabberdctl start");
        self.start_output = describe(&output);
        if !output.status.success() {
            panic!("ejabberdctl start failed:\n{}", self.start_output);
        }
        let taken = format!("Failed to open socket at 127.0.0.1:{}", self.port);
        let accepting = format!(
            "Start accepting TCP connections at 127.0.0.1:{} for ejabberd_c2s",
            self.port
        );
        let started = Instant::now();
        // `ejabberdctl start` may return before the detached VM shows up under its node name.
        let mut seen = false;
        loop {
            // Look at the process before the log, so a log read after an exit is complete.
            let running = !self.vm_pids().is_empty();
            let exited = seen && !running;
            seen |= running;
            let log = self.log();
            if log.contains(&taken) {
                return Err(PortTaken);
            }
            if log.contains("[critical]") || log.contains("[error]") {
                panic!("ejabberd failed to start from {EJABBERD_CONFIG_PATH}:\n{log}");
            }
            if log.contains(&accepting) && port_open(self.port) {
                return Ok(());
            }
            if exited {
                panic!(
                    "ejabberd exited before listening on 127.0.0.1:{}:\n{log}",
                    self.port
                );
            }
            if started.elapsed() >= EJABBERD_START_DEADLINE {
                panic!(
                    "ejabberd did not listen on 127.0.0.1:{} within {EJABBERD_START_DEADLINE:?}:\n{log}",
                    self.port
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Creates an account (`ejabberdctl register USER localhost PASSWORD`).
    pub fn register(&self, user: &str, password: &str) {
        let output = run(
            self.ctl().args(["register", user, "localhost", password]),
            "ejabberdctl register",
        );
        if !output.status.success() {
            panic!(
                "ejabberdctl register {user} failed:\n{}\nlog:\n{}",
                describe(&output),
                self.log()
            );
        }
    }

    /// Stops the node and starts it again on the same port, spool (accounts) and config; it
    /// accepts connections again when this returns.
    pub fn restart(&mut self) {
        self.stop();
        self.start_output.clear();
        // The log of the first start says it listened already: look at the new lines only.
        for name in ["ejabberd.log", "error.log", "crash.log"] {
            let _ = fs::remove_file(self.logs.join(name));
        }
        if self.spawn().is_err() {
            panic!("ejabberd's port {} was taken while it restarted", self.port);
        }
    }

    /// Stops the node (`ejabberdctl stop`), waits until its VM is gone (killing it after
    /// [`EJABBERD_STOP_DEADLINE`]), then stops epmd if this node started it and no other node
    /// uses it. Never panics: it runs in `drop`.
    pub fn stop(&mut self) {
        if std::mem::take(&mut self.launched) && !self.vm_pids().is_empty() {
            match self.ctl().arg("stop").stdin(Stdio::null()).output() {
                Ok(output) if output.status.success() => {}
                Ok(output) => eprintln!("ejabberdctl stop failed:\n{}", describe(&output)),
                Err(e) => eprintln!("cannot run ejabberdctl stop: {e}"),
            }
            let started = Instant::now();
            while !self.vm_pids().is_empty() && started.elapsed() < EJABBERD_STOP_DEADLINE {
                std::thread::sleep(POLL_INTERVAL);
            }
            for pid in self.vm_pids() {
                eprintln!("ejabberd did not stop within {EJABBERD_STOP_DEADLINE:?}; killing it");
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
        if std::mem::take(&mut self.started_epmd) {
            let name = self.node.split('@').next().unwrap_or_default();
            let started = Instant::now();
            // The node deregisters when its connection to epmd closes, as its VM exits.
            while let Some(names) = epmd_names(&self.epmd) {
                if names.is_empty() {
                    let _ = Command::new(&self.epmd)
                        .arg("-kill")
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                    break;
                }
                if names.iter().any(|other| other != name)
                    || started.elapsed() >= EJABBERD_STOP_DEADLINE
                {
                    break; // Another node uses it now, or ours does not let go: leave it.
                }
                std::thread::sleep(POLL_INTERVAL);
            }
        }
    }

    /// The running processes of this node's Erlang VM: those started with `-sname NODE`. The
    /// short-lived VMs of `ejabberdctl` commands have names of their own, and no other process
    /// has this node's unique name, so these are safe to kill.
    fn vm_pids(&self) -> Vec<u32> {
        let Ok(entries) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| {
                let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
                    return false;
                };
                let args: Vec<&[u8]> = cmdline.split(|&byte| byte == 0).collect();
                args.windows(2)
                    .any(|pair| pair[0] == b"-sname" && pair[1] == self.node.as_bytes())
                    && process_alive(pid)
            })
            .collect()
    }

    /// `ejabberdctl start`'s output and everything the node has logged so far.
    pub fn log(&self) -> String {
        let mut log = self.start_output.clone();
        for name in ["ejabberd.log", "error.log", "crash.log"] {
            if let Ok(text) = fs::read_to_string(self.logs.join(name)) {
                log.push_str(&format!("--- {name} ---\n{text}"));
            }
        }
        log
    }
}

impl Drop for Ejabberd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- ejabberd ({}) ---\n{}--- end of ejabberd log ---",
                self.dir.path().display(),
                self.log()
            );
        }
        self.stop();
    }
}

/// `deploy/ejabberd-mqtt2xmpp.yml`'s own lines with its one listener's port and its one
/// certificate file replaced. Asserts what the test relies on: domain `localhost`, a single
/// listener (c2s, on loopback, STARTTLS required), so nothing else listens.
fn ejabberd_config(port: u16, certfile: &Path, modules: &str) -> String {
    let lines: Vec<&str> = EJABBERD_CONFIG.lines().collect();
    let trimmed = |prefix: &str| -> Vec<usize> {
        (0..lines.len())
            .filter(|&i| lines[i].trim_start().starts_with(prefix))
            .collect()
    };
    let ports = trimmed("port:");
    assert_eq!(
        ports.len(),
        1,
        "{EJABBERD_CONFIG_PATH} should have exactly one listener"
    );
    for expected in [
        "module: ejabberd_c2s",
        "ip: \"127.0.0.1\"",
        "starttls_required: true",
    ] {
        assert_eq!(
            trimmed(expected).len(),
            1,
            "{EJABBERD_CONFIG_PATH} should say `{expected}` once"
        );
    }
    let hosts = trimmed("hosts:");
    assert!(
        hosts.len() == 1 && lines.get(hosts[0] + 1).map(|l| l.trim()) == Some("- localhost"),
        "{EJABBERD_CONFIG_PATH} should serve localhost"
    );
    let certfiles = trimmed("certfiles:");
    assert_eq!(
        certfiles.len(),
        1,
        "{EJABBERD_CONFIG_PATH} should have one certfiles list"
    );
    let certfile_line = certfiles[0] + 1;
    assert!(
        lines
            .get(certfile_line)
            .is_some_and(|l| l.trim_start().starts_with("- "))
            && !lines
                .get(certfile_line + 1)
                .is_some_and(|l| l.trim_start().starts_with("- ")),
        "{EJABBERD_CONFIG_PATH}: certfiles should list one file"
    );
    let certfile = certfile.to_str().expect("UTF-8 temp path");
    assert!(!certfile.contains(['"', '\\']), "{certfile}");

    let mut config = format!("# Written by the tests from {EJABBERD_CONFIG_PATH}\n");
    for (i, line) in lines.iter().enumerate() {
        let indent = &line[..line.len() - line.trim_start().len()];
        if i == ports[0] {
            config.push_str(&format!("{indent}port: {port}\n"));
        } else if i == certfile_line {
            config.push_str(&format!("{indent}- \"{certfile}\"\n"));
        } else if line.trim_end() == "modules:" {
            config.push_str(line);
            config.push('\n');
            config.push_str(modules);
        } else {
            config.push_str(line);
            config.push('\n');
        }
    }
    config
}

/// A self-signed end-entity certificate for `domain` and its key, as PEM (the same kind as the
/// other fixtures': CA:FALSE, SAN DNS:domain, EKU serverAuth, so rustls accepts it as its own
/// trust anchor).
pub fn self_signed_cert(domain: &str) -> (String, String) {
    use rcgen::{
        CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };

    let mut params = CertificateParams::new(vec![domain.to_owned()]).expect("certificate params");
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, domain);
    params.distinguished_name = name;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    // Valid for about ten years, not rcgen's default of until 4096: ejabberd 23.01 sets a timer
    // for the expiry, and Erlang refuses timers centuries long, which crashes its certificate
    // manager at startup.
    let year = 1970
        + SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs()
            / (365 * 24 * 3600 + 6 * 3600);
    let year = i32::try_from(year).expect("year");
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + 10, 1, 1);
    let key = KeyPair::generate().expect("key pair");
    let cert = params.self_signed(&key).expect("self-signed certificate");
    (cert.pem(), key.serialize_pem())
}

/// The names of the nodes epmd knows, or `None` if no epmd runs.
fn epmd_names(epmd: &Path) -> Option<Vec<String>> {
    let output = Command::new(epmd)
        .arg("-names")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    output.status.success().then(|| {
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| line.strip_prefix("name "))
            .filter_map(|rest| rest.split(" at port ").next())
            .map(str::to_owned)
            .collect()
    })
}

/// Whether a process exists and is not a zombie (a detached node's parent may be slow to reap
/// it).
fn process_alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "PID (COMMAND) STATE ...": the command may contain spaces and parentheses.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}

/// Writes a file readable by its owner and group only (chown gives both to ejabberd).
fn write(path: &Path, contents: &str) {
    fs::write(path, contents).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(0o640))
        .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", path.display()));
}

fn port_open(port: u16) -> bool {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok()
}

/// Runs a short-lived command to completion, stdin closed, and returns its output.
pub fn run(command: &mut Command, what: &str) -> Output {
    command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what} ({command:?}): {e}"))
}

/// Runs a short-lived command and panics with its output if it fails.
pub fn run_ok(command: &mut Command, what: &str) {
    let output = run(command, what);
    if !output.status.success() {
        panic!("{what} failed: {command:?}\n{}", describe(&output));
    }
}

/// A command's exit status and output, for messages.
pub fn describe(output: &Output) -> String {
    format!(
        "{}\nstdout:\n{}stderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
