//! The bridge as a person meets it: the real terminal client profanity (Debian package) logs in
//! to a private Prosody, asks the bot, and the test reads the answer off profanity's screen.
//!
//! profanity runs inside a private tmux server (its own socket, config and size), driven with
//! `send-keys` and read with `capture-pane`. It gets a private HOME, XDG_CONFIG_HOME and
//! XDG_DATA_HOME, so nothing of the machine's user configuration is read or changed.
//!
//! TLS: profanity (libstrophe with OpenSSL) verifies the server's certificate against OpenSSL's
//! default trust store, which `SSL_CERT_FILE` replaces: pointing it at Prosody's self-signed
//! certificate makes the normal verification (chain and host name "localhost") pass, with
//! `tls force` and no prompt. profanity's own `tls.certpath` is no substitute: it is an OpenSSL
//! hashed directory searched after the system's, where any other certificate named
//! CN=localhost (Debian's ssl-cert snakeoil certificate often is) hides ours.
//!
//! Without profanity, tmux, mosquitto or Prosody the test skips, unless CI=true, where a missing
//! program fails it.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::bot::{password_file, publish, Bot, ChatClient};
use support::peers::{find_peer, Mosquitto, Prosody};

const BOT: &str = "bot@localhost";
const BOT_PASSWORD: &str = "bot-secret";
const ALICE: &str = "alice@localhost";
const ALICE_PASSWORD: &str = "alice-secret";
/// A second account that makes sure the bot holds the reading before profanity asks.
const PROBE: &str = "probe@localhost";
const PROBE_PASSWORD: &str = "probe-secret";
/// Nobody has this account: a message to it is never acknowledged with a receipt.
const NOBODY: &str = "nobody@localhost";
const TOPIC: &str = "sensors/temperature";

/// How long the bridge may take to log in and subscribe.
const STARTUP: Duration = Duration::from_secs(20);
/// How long profanity may take to show what the test waits for.
const SCREEN_DEADLINE: Duration = Duration::from_secs(20);
/// Interval between two looks at profanity's screen.
const SCREEN_POLL: Duration = Duration::from_millis(100);

/// Seen on the screen, these end the wait at once: profanity will not get any further.
const SCREEN_FAILURES: &[(&str, &str)] = &[
    (
        "TLS certificate verification failed",
        "profanity did not trust Prosody's certificate (is libstrophe not built with OpenSSL, \
         which reads SSL_CERT_FILE?); the test never accepts a certificate at the prompt",
    ),
    ("Login failed.", "profanity could not log in"),
];

/// profanity's default theme draws a sent message in red (`receipt.sent`) until its XEP-0184
/// receipt arrives; `capture-pane -e` shows the colour as this SGR sequence before "me: ".
const AWAITING_RECEIPT: &str = "\x1b[31mme: ";

#[test]
fn profanity_asks_the_bot_and_shows_the_reply() {
    let Some(profanity) = find_peer("profanity", &["/usr/bin/profanity"]) else {
        return;
    };
    let Some(tmux) = find_peer("tmux", &["/usr/bin/tmux"]) else {
        return;
    };
    let Some(mqtt) = Mosquitto::start() else {
        return;
    };
    let Some(xmpp) = Prosody::start() else { return };
    xmpp.register("bot", BOT_PASSWORD);
    xmpp.register("alice", ALICE_PASSWORD);
    xmpp.register("probe", PROBE_PASSWORD);

    let dir = tempfile::tempdir().expect("temp dir");
    let xmpp_server = format!("127.0.0.1:{}", xmpp.port);
    let bot = Bot::spawn(&[
        "bridge",
        "--mqtt-port",
        &mqtt.port.to_string(),
        "--topic",
        TOPIC,
        "--jid",
        BOT,
        "--password-file",
        &password_file(dir.path(), "bot.pw", BOT_PASSWORD),
        "--xmpp-server",
        &xmpp_server,
        "--xmpp-ca",
        &xmpp.ca_file.to_string_lossy(),
        "--unit",
        "°C",
    ]);
    bot.wait_log("subscribed", 1, STARTUP);
    bot.wait_log("answering chat messages", 1, STARTUP);

    // Publish, and wait until the bot answers with the value, so profanity's question is not
    // answered with "No reading ... yet" by a bridge that has not received it.
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        publish(mqtt.port, TOPIC, b"23.5", false).await;
        let mut probe = ChatClient::login(PROBE, PROBE_PASSWORD, xmpp.port, &xmpp.ca_file).await;
        probe
            .ask_until(BOT, |r| r.starts_with("23.5 °C"), Duration::from_secs(10))
            .await;
    });

    let session = Profanity::start(&profanity, &tmux, &xmpp.ca_file);
    session.wait_for("/help");
    // `tls force` (also the default) makes TLS mandatory with full certificate verification.
    session.type_line(&format!(
        "/connect {ALICE} server 127.0.0.1 port {} tls force",
        xmpp.port
    ));
    session.wait_for("Enter password:");
    session.type_line(ALICE_PASSWORD);
    let screen = session.wait_for("logged in successfully");
    assert!(
        !screen.contains(ALICE_PASSWORD),
        "profanity echoed the password:\n{screen}"
    );

    // Control: a message nobody acknowledges stays marked as awaiting its receipt.
    session.type_line(&format!("/msg {NOBODY} hello?"));
    session.wait_for("me: hello?");
    let unacknowledged = session.colour_line("me: hello?");
    assert!(
        unacknowledged.contains(AWAITING_RECEIPT),
        "an unacknowledged message is not drawn as awaiting its receipt: {unacknowledged:?}"
    );

    session.type_line(&format!("/msg {BOT} temperature?"));
    let screen = session.wait_for("23.5 °C (sensors/temperature, ");
    let reply = screen
        .lines()
        .find(|line| line.contains("23.5 °C (sensors/temperature, "))
        .expect("reply line");
    assert!(
        reply.contains(&format!("{BOT}/")) && reply.trim_end().ends_with(" ago)"),
        "unexpected reply line: {reply:?}\n{screen}"
    );
    assert!(
        screen.contains("me: temperature?"),
        "profanity does not show the question:\n{screen}"
    );
    // The receipt came before the reply, so by now profanity shows the question as delivered.
    let question = session.colour_line("me: temperature?");
    assert!(
        !question.contains(AWAITING_RECEIPT),
        "profanity still shows the question as awaiting its receipt: {question:?}"
    );

    // profanity's debug log holds the stanzas: the question asked for a receipt, and the bot
    // acknowledged exactly that message, and never answered anything with an error.
    let log = session.log();
    let asked = log
        .lines()
        .find(|line| line.contains("SENT: <message") && line.contains("<body>temperature?</body>"))
        .unwrap_or_else(|| panic!("no sent question in profanity's log:\n{log}"));
    assert!(
        asked.contains(r#"<request xmlns="urn:xmpp:receipts"/>"#),
        "profanity did not request a receipt: {asked}"
    );
    let id = attribute(asked, "id").expect("message id");
    let from_bot =
        |line: &&str| line.contains("RECV: <") && line.contains(r#"from="bot@localhost/"#);
    assert!(
        log.lines()
            .filter(from_bot)
            .any(|line| line.contains("<received")
                && line.contains(r#"xmlns="urn:xmpp:receipts""#)
                && line.contains(&format!(r#"id="{id}""#))),
        "no receipt from the bot for message {id}:\n{log}"
    );
    let errors: Vec<&str> = log
        .lines()
        .filter(from_bot)
        .filter(|line| line.contains(r#"type="error""#))
        .collect();
    assert!(
        errors.is_empty(),
        "the bot answered with errors: {errors:#?}"
    );
    assert!(
        !log.contains(ALICE_PASSWORD),
        "the password is in profanity's log"
    );

    drop(session);
    drop(bot);
}

/// The value of `name="..."` in a line of XML (its first occurrence).
fn attribute<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {name}=\""))? + name.len() + 3;
    let len = line[start..].find('"')?;
    Some(&line[start..start + len])
}

/// `line` without its SGR escape sequences (`ESC [ ... m`), i.e. the text it shows.
fn without_colours(line: &str) -> String {
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

/// profanity in a private tmux server, with private configuration and data in a temp dir.
///
/// Dropping it kills the tmux server (and with it profanity); if the test is panicking, the
/// screen and profanity's log are printed first.
struct Profanity {
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
    fn start(profanity: &Path, tmux: &Path, ca_file: &Path) -> Profanity {
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
    fn type_line(&self, text: &str) {
        self.tmux_ok(&["send-keys", "-l", "--", text]);
        self.tmux_ok(&["send-keys", "Enter"]);
    }

    /// The screen as text.
    fn screen(&self) -> String {
        self.tmux_ok(&["capture-pane", "-p"])
    }

    /// The first screen line showing `needle`, with its colours as escape sequences.
    fn colour_line(&self, needle: &str) -> String {
        let screen = self.tmux_ok(&["capture-pane", "-p", "-e"]);
        screen
            .lines()
            .find(|line| without_colours(line).contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} on the screen:\n{screen}"))
            .to_owned()
    }

    /// Polls the screen until it shows `needle` and returns it. Panics when the deadline
    /// passes, profanity exits, or the screen shows one of [`SCREEN_FAILURES`].
    fn wait_for(&self, needle: &str) -> String {
        let started = Instant::now();
        loop {
            let screen = self.screen();
            if screen.contains(needle) {
                return screen;
            }
            if let Some((_, why)) = SCREEN_FAILURES
                .iter()
                .find(|(sign, _)| screen.contains(sign))
            {
                panic!("{why} (waiting for {needle:?})");
            }
            if self
                .tmux_ok(&["display-message", "-p", "#{pane_dead}"])
                .trim()
                == "1"
            {
                panic!("profanity exited while the test waited for {needle:?}");
            }
            if started.elapsed() >= SCREEN_DEADLINE {
                panic!("profanity did not show {needle:?} within {SCREEN_DEADLINE:?}");
            }
            std::thread::sleep(SCREEN_POLL);
        }
    }

    /// profanity's debug log so far.
    fn log(&self) -> String {
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
