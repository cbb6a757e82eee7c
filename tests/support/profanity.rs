#![allow(dead_code)]
//! The real terminal client profanity (Debian package), driven like a person would: inside a
//! private tmux server (its own socket, config and size), typed into with `send-keys` and read
//! with `capture-pane`. It gets a private HOME, XDG_CONFIG_HOME and XDG_DATA_HOME, so nothing of
//! the machine's user configuration is read or changed. Works with any XMPP server on loopback:
//! Prosody from [`super::peers`] or the bundled server from [`super::server`].
//!
//! TLS: profanity (libstrophe with OpenSSL) verifies the server's certificate against OpenSSL's
//! default trust store, which `SSL_CERT_FILE` replaces: pointing it at the server's self-signed
//! certificate makes the normal verification (chain and host name "localhost") pass, with
//! `tls force` and no prompt. profanity's own `tls.certpath` is no substitute: it is an OpenSSL
//! hashed directory searched after the system's, where any other certificate named
//! CN=localhost (Debian's ssl-cert snakeoil certificate often is) hides ours.
//!
//! profanity runs with `-l DEBUG`, so its log ([`Profanity::log`]) holds every stanza it sent
//! (`SENT: `) and received (`RECV: `); [`iq_exchanges`] pairs its IQ requests with the answers.
//!
//! Without profanity or tmux, [`find_programs`] returns `None` (the test skips), unless
//! CI=true, where a missing program fails the test.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::peers::find_peer;

/// How long profanity may take to show what the test waits for.
pub const SCREEN_DEADLINE: Duration = Duration::from_secs(20);
/// Interval between two looks at profanity's screen or log.
const SCREEN_POLL: Duration = Duration::from_millis(100);

/// Seen on the screen, these end the wait at once: profanity will not get any further.
const SCREEN_FAILURES: &[(&str, &str)] = &[
    (
        "TLS certificate verification failed",
        "profanity did not trust the server's certificate (is libstrophe not built with \
         OpenSSL, which reads SSL_CERT_FILE?); the test never accepts a certificate at the prompt",
    ),
    ("Login failed.", "profanity could not log in"),
];

/// profanity's default theme draws a sent message in red (`receipt.sent`) until its XEP-0184
/// receipt arrives; `capture-pane -e` shows the colour as this SGR sequence before "me: ".
pub const AWAITING_RECEIPT: &str = "\x1b[31mme: ";

/// The profanity and tmux programs, or `None` (a skip) if one is missing and CI is not `true`.
pub fn find_programs() -> Option<(PathBuf, PathBuf)> {
    let profanity = find_peer("profanity", &["/usr/bin/profanity"])?;
    let tmux = find_peer("tmux", &["/usr/bin/tmux"])?;
    Some((profanity, tmux))
}

/// profanity in a private tmux server, with private configuration and data in a temp dir.
///
/// Dropping it kills the tmux server (and with it profanity); if the test is panicking, the
/// screen and profanity's log are printed first.
pub struct Profanity {
    tmux: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    /// profanity's process id (the pane's), to make sure it is gone after the server.
    pid: Option<u32>,
    /// HOME, XDG dirs, tmux socket and config, profanity's log; removed after profanity exits.
    dir: tempfile::TempDir,
}

impl Profanity {
    /// Starts profanity in a 200×50 pane of a new tmux server and returns once it runs.
    ///
    /// The tmux server and profanity see only PATH, a UTF-8 locale, the private HOME and XDG
    /// dirs, and `SSL_CERT_FILE=ca_file`; tmux reads only its private config.
    pub fn start(profanity: &Path, tmux: &Path, ca_file: &Path) -> Profanity {
        let dir = tempfile::Builder::new()
            .prefix("mqtt2xmpp-profanity-")
            .tempdir()
            .expect("temp dir for profanity");
        let root = dir.path();
        let (home, config, data) = (root.join("home"), root.join("config"), root.join("data"));
        for sub in [&home, &config.join("profanity"), &data] {
            fs::create_dir_all(sub).unwrap_or_else(|e| panic!("create {}: {e}", sub.display()));
        }
        // receipts.request: ask for XEP-0184 receipts (off by default) so the screen shows them.
        // vercheck=false: never look for new versions on the internet (the default, made sure).
        fs::write(
            config.join("profanity").join("profrc"),
            "[connection]\nreceipts.request=true\n\n[ui]\nvercheck=false\n",
        )
        .expect("write profrc");
        // remain-on-exit keeps the last screen of a profanity that died, for the failure report.
        let tmux_conf = root.join("tmux.conf");
        fs::write(
            &tmux_conf,
            "set-option -g remain-on-exit on\nset-option -g status off\n",
        )
        .expect("write tmux.conf");

        let mut session = Profanity {
            tmux: tmux.to_owned(),
            socket: root.join("tmux.sock"),
            log: root.join("profanity.log"),
            pid: None,
            dir,
        };
        let root = session.dir.path();
        let output = session
            .tmux_command()
            .arg("-f")
            .arg(&tmux_conf)
            .args(["new-session", "-d", "-x", "200", "-y", "50", "--"])
            .arg(profanity)
            .args(["-l", "DEBUG", "-f"])
            .arg(&session.log)
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("LANG", "C.UTF-8")
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", &config)
            .env("XDG_DATA_HOME", &data)
            .env("XDG_CACHE_HOME", root.join("cache"))
            .env("SSL_CERT_FILE", ca_file)
            .output()
            .expect("run tmux new-session");
        assert!(
            output.status.success(),
            "tmux new-session failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let pid = session.tmux_ok(&["display-message", "-p", "#{pane_pid}"]);
        session.pid = Some(pid.trim().parse().expect("pane pid"));
        session
    }

    /// Logs in as `jid` to 127.0.0.1:`port` with `tls force` (mandatory TLS with full
    /// certificate verification, also the default), typing the password at the prompt, and
    /// returns the screen once profanity says it logged in. Panics if the screen shows the
    /// password.
    pub fn connect(&self, jid: &str, password: &str, port: u16) -> String {
        self.wait_for("/help");
        self.type_line(&format!(
            "/connect {jid} server 127.0.0.1 port {port} tls force"
        ));
        self.wait_for("Enter password:");
        self.type_line(password);
        let screen = self.wait_for("logged in successfully");
        assert!(
            !screen.contains(password),
            "profanity echoed the password:\n{screen}"
        );
        screen
    }

    /// A tmux client for this server: private socket, no environment of the test's own.
    fn tmux_command(&self) -> Command {
        let mut command = Command::new(&self.tmux);
        command
            .env_clear()
            .arg("-S")
            .arg(&self.socket)
            .stdin(Stdio::null());
        command
    }

    fn tmux(&self, args: &[&str]) -> Output {
        self.tmux_command()
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run tmux {args:?}: {e}"))
    }

    /// Runs a tmux command and returns its standard output; panics if it fails.
    fn tmux_ok(&self, args: &[&str]) -> String {
        let output = self.tmux(args);
        assert!(
            output.status.success(),
            "tmux {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Types `text` into profanity's input line and presses Enter.
    pub fn type_line(&self, text: &str) {
        self.tmux_ok(&["send-keys", "-l", "--", text]);
        self.tmux_ok(&["send-keys", "Enter"]);
    }

    /// The screen as text.
    pub fn screen(&self) -> String {
        self.tmux_ok(&["capture-pane", "-p"])
    }

    /// The first screen line showing `needle`, with its colours as escape sequences.
    pub fn colour_line(&self, needle: &str) -> String {
        let screen = self.tmux_ok(&["capture-pane", "-p", "-e"]);
        screen
            .lines()
            .find(|line| without_colours(line).contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} on the screen:\n{screen}"))
            .to_owned()
    }

    /// Polls the screen until it shows `needle` and returns it. Panics when the deadline
    /// passes, profanity exits, or the screen shows one of [`SCREEN_FAILURES`].
    pub fn wait_for(&self, needle: &str) -> String {
        self.wait_until(&format!("{needle:?}"), |screen| screen.contains(needle))
    }

    /// Polls the screen until `done` accepts it and returns it; `what` names the wait in the
    /// panic message. Panics like [`Profanity::wait_for`].
    pub fn wait_until(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let screen = self.screen();
            if done(&screen) {
                return screen;
            }
            if let Some((_, why)) = SCREEN_FAILURES
                .iter()
                .find(|(sign, _)| screen.contains(sign))
            {
                panic!("{why} (waiting for {what})");
            }
            if self
                .tmux_ok(&["display-message", "-p", "#{pane_dead}"])
                .trim()
                == "1"
            {
                panic!("profanity exited while the test waited for {what}");
            }
            if started.elapsed() >= SCREEN_DEADLINE {
                panic!("profanity did not show {what} within {SCREEN_DEADLINE:?}:\n{screen}");
            }
            std::thread::sleep(SCREEN_POLL);
        }
    }

    /// Polls profanity's log until `done` accepts it and returns it; `what` names the wait in
    /// the panic message.
    pub fn wait_log(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let log = self.log();
            if done(&log) {
                return log;
            }
            if started.elapsed() >= SCREEN_DEADLINE {
                panic!("profanity's log did not show {what} within {SCREEN_DEADLINE:?}");
            }
            std::thread::sleep(SCREEN_POLL);
        }
    }

    /// profanity's debug log so far.
    pub fn log(&self) -> String {
        fs::read(&self.log)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_else(|e| format!("(cannot read {}: {e})", self.log.display()))
    }
}

impl Drop for Profanity {
    fn drop(&mut self) {
        // Nothing here may panic: this also runs while a failed test unwinds.
        if std::thread::panicking() {
            let screen = match self.tmux_command().args(["capture-pane", "-p"]).output() {
                Ok(output) if output.status.success() => {
                    String::from_utf8_lossy(&output.stdout).into_owned()
                }
                Ok(output) => format!(
                    "(cannot capture the pane: {})",
                    String::from_utf8_lossy(&output.stderr)
                ),
                Err(e) => format!("(cannot run tmux: {e})"),
            };
            eprintln!("--- profanity screen ---\n{screen}--- end of screen ---");
            eprintln!("--- profanity log ---\n{}--- end of log ---", self.log());
        }
        // Closing the pane hangs up on profanity, which exits.
        let _ = self.tmux_command().arg("kill-server").output();
        if let Some(pid) = self.pid {
            let deadline = Instant::now() + Duration::from_secs(5);
            while profanity_running(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if profanity_running(pid) {
                eprintln!("profanity (pid {pid}) outlived the tmux server; killing it");
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

/// Whether `pid` is still a live (not zombie) profanity process.
fn profanity_running(pid: u32) -> bool {
    let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_default()
            .to_owned()
    };
    field("Name:") == "profanity" && !field("State:").starts_with('Z')
}

/// The value of `name="..."` in a line of XML (its first occurrence).
pub fn attribute<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {name}=\""))? + name.len() + 3;
    let len = line[start..].find('"')?;
    Some(&line[start..start + len])
}

/// `line` without its SGR escape sequences (`ESC [ ... m`), i.e. the text it shows.
pub fn without_colours(line: &str) -> String {
    let mut text = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(start) = rest.find("\x1b[") {
        text.push_str(&rest[..start]);
        rest = &rest[start..];
        rest = rest.find('m').map_or("", |end| &rest[end + 1..]);
    }
    text.push_str(rest);
    text
}

/// One IQ request profanity sent, and the answer it got (if any yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IqExchange {
    /// The request's `id`.
    pub id: String,
    /// `get` or `set`.
    pub kind: String,
    /// The request's `to`, or `None` (the account itself).
    pub to: Option<String>,
    /// The namespace of the request's payload.
    pub namespace: String,
    /// `{namespace}name` of the request's payload, with ` node=...` when the payload (or a
    /// child of it) names a node: what the request was about.
    pub payload: String,
    /// The answer's `type` (`result` or `error`), or `None` if none came.
    pub answer: Option<String>,
    /// The answer's `from`, or `None` when absent.
    pub answered_by: Option<String>,
    /// For an error answer: the defined condition's element name (`service-unavailable`).
    pub condition: Option<String>,
    /// The answer as profanity logged it.
    pub answer_xml: Option<String>,
}

impl std::fmt::Display for IqExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} to {}: {}",
            self.kind,
            self.payload,
            self.to.as_deref().unwrap_or("(own account)"),
            self.answer.as_deref().unwrap_or("(no answer)")
        )?;
        if let Some(condition) = &self.condition {
            write!(f, " {condition}")?;
        }
        if let Some(by) = &self.answered_by {
            write!(f, " from {by}")?;
        }
        Ok(())
    }
}

/// Every IQ get/set profanity sent (the `SENT: <iq` lines of its debug log), in order, each
/// paired with the first IQ result or error with the same `id` that it received (`RECV: <iq`)
/// after sending it. (profanity reuses some ids, `roster` say, in every session.)
pub fn iq_exchanges(log: &str) -> Vec<IqExchange> {
    let stanzas: Vec<(&str, &str)> = log
        .lines()
        .filter_map(|line| {
            ["SENT: ", "RECV: "].into_iter().find_map(|prefix| {
                let (_, xml) = line.split_once(prefix)?;
                xml.starts_with("<iq ").then_some((prefix, xml))
            })
        })
        .collect();
    stanzas
        .iter()
        .enumerate()
        .filter_map(|(at, &(direction, xml))| {
            let kind = start_tag_attribute(xml, "type")?;
            if direction != "SENT: " || !matches!(kind, "get" | "set") {
                return None;
            }
            let id = start_tag_attribute(xml, "id")?.to_owned();
            let answer = stanzas[at + 1..].iter().find_map(|&(direction, answer)| {
                (direction == "RECV: "
                    && matches!(
                        start_tag_attribute(answer, "type"),
                        Some("result" | "error")
                    )
                    && start_tag_attribute(answer, "id") == Some(id.as_str()))
                .then_some(answer)
            });
            let (namespace, payload) = payload_name(xml);
            Some(IqExchange {
                kind: kind.to_owned(),
                to: start_tag_attribute(xml, "to").map(str::to_owned),
                namespace,
                payload,
                answer: answer
                    .and_then(|a| start_tag_attribute(a, "type"))
                    .map(str::to_owned),
                answered_by: answer
                    .and_then(|a| start_tag_attribute(a, "from"))
                    .map(str::to_owned),
                condition: answer.and_then(error_condition),
                answer_xml: answer.map(str::to_owned),
                id,
            })
        })
        .collect()
}

/// The first start tag of `xml` (up to its `>`), for reading the stanza's own attributes.
fn start_tag(xml: &str) -> &str {
    xml.find('>').map_or(xml, |end| &xml[..end])
}

fn start_tag_attribute<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    // Both quote styles: libstrophe writes double quotes, servers may use single ones.
    let tag = start_tag(xml);
    [format!(" {name}=\""), format!(" {name}='")]
        .iter()
        .find_map(|prefix| {
            let start = tag.find(prefix.as_str())? + prefix.len();
            let quote = prefix.chars().last()?;
            let len = tag[start..].find(quote)?;
            Some(&tag[start..start + len])
        })
}

/// The namespace of the IQ's first child element, and `{namespace}name` plus ` node=...` if
/// the child (or one of its children) names a node.
fn payload_name(xml: &str) -> (String, String) {
    let inner = xml.find('>').map_or("", |end| &xml[end + 1..]);
    let Some(child) = inner.strip_prefix('<') else {
        return (String::new(), "(empty)".to_owned());
    };
    let name: String = child
        .chars()
        .take_while(|c| !c.is_whitespace() && !matches!(c, '/' | '>'))
        .collect();
    let ns = start_tag_attribute(inner, "xmlns").unwrap_or("").to_owned();
    let payload = match attribute(inner, "node") {
        Some(node) => format!("{{{ns}}}{name} node={node}"),
        None => format!("{{{ns}}}{name}"),
    };
    (ns, payload)
}

/// The features (`<feature var=.../>`) of the first disco#info result from `jid` in the log.
pub fn disco_features(log: &str, jid: &str) -> Vec<String> {
    let Some(result) = log
        .lines()
        .filter_map(|line| line.split_once("RECV: ").map(|(_, xml)| xml))
        .find(|xml| {
            xml.starts_with("<iq ")
                && start_tag_attribute(xml, "from") == Some(jid)
                && start_tag_attribute(xml, "type") == Some("result")
                && xml.contains("http://jabber.org/protocol/disco#info")
        })
    else {
        return Vec::new();
    };
    result
        .split("<feature ")
        .skip(1)
        .filter_map(|feature| attribute(&format!(" {feature}"), "var").map(str::to_owned))
        .collect()
}

/// The defined condition of an IQ error: the element in the stanzas namespace.
fn error_condition(xml: &str) -> Option<String> {
    if start_tag_attribute(xml, "type") != Some("error") {
        return None;
    }
    let stanzas = "urn:ietf:params:xml:ns:xmpp-stanzas";
    let at = xml.find(stanzas)?;
    let open = xml[..at].rfind('<')?;
    let name: String = xml[open + 1..]
        .chars()
        .take_while(|c| !c.is_whitespace() && !matches!(c, '/' | '>'))
        .collect();
    Some(name)
}
