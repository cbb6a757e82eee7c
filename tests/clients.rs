//! Real client programs and libraries as users of the bot, each against the bundled server and
//! against Prosody (`<client>::bundled`, `<client>::prosody`), so that every row of the README's
//! compatibility table is measured here. Each client logs in over STARTTLS as `carol`, trusting
//! the server's self-signed certificate, asks the running bot for the temperature and must get
//! the reading back:
//!
//! | client | how it runs |
//! |---|---|
//! | xmpp.js (`@xmpp/client` from npm, the library behind Node-RED's XMPP nodes) | `tests/clients/xmppjs/ask.mjs` under `node`; `.ci/run` installs the package under `target/xmppjs` (or set `XMPPJS_MODULES` to a `node_modules` directory) |
//! | go-sendxmpp (Debian, the go-xmpp library) | `go-sendxmpp -i -l`: the question on its standard input, answers on its standard output |
//! | nbxmpp (Debian `python3-nbxmpp`, Gajim's protocol library) | `tests/clients/nbxmpp_ask.py` on a GLib main loop |
//! | slixmpp 1.8.3 (Debian `python3-slixmpp`, what poezio runs on) | `tests/clients/slixmpp_ask.py` with slixmpp's stock SASL settings |
//!
//! The client scripts print JSON lines (`{"event": "online" | "answer" | "error", …}`); a client
//! runs until it prints the answer (or the deadline passes) and is then killed, so no test waits
//! a fixed time. Without a client program the test skips, unless CI=true, where it fails.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::bridge::InProcessBridge;
use support::mqtt::publish;
use support::peers::{find_peer, peers_required, python_imports};
use support::world::{Kind, World, BOT};

/// Runs each named client against the bundled server and against Prosody.
macro_rules! against_both_servers {
    ($($client:ident),* $(,)?) => {$(
        mod $client {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn bundled() {
                super::$client(super::Kind::Bundled).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn prosody() {
                super::$client(super::Kind::Peers).await
            }
        }
    )*};
}

against_both_servers!(xmppjs, go_sendxmpp, nbxmpp, slixmpp_debian);

/// Debian's interpreter, which sees `python3-nbxmpp` and `python3-slixmpp`.
const PYTHON: &str = "/usr/bin/python3";
/// The account the client under test logs in with.
const USER: &str = "carol";
const PASSWORD: &str = "carol-secret";
const QUESTION: &str = "temperature?";
/// How the bot's answer starts once it has the reading.
const READING: &str = "23.5 °C";
/// How long a client may take from start to the answer.
const DEADLINE: Duration = Duration::from_secs(40);

/// The servers with the bot running, a reading it has taken (it answers a tokio-xmpp client
/// with it), and the account `carol`. `None`: skipped.
async fn world_with_reading(kind: Kind) -> Option<(World, InProcessBridge)> {
    let world = World::start(kind).await?;
    world.xmpp.register(USER, PASSWORD);
    let bot = world.start_bot(&[]).await;
    publish(world.mqtt.port(), "sensors/temperature", b"23.5", true).await;
    let mut alice = world.alice().await;
    alice
        .ask_until(BOT, |r| r.starts_with(READING), Duration::from_secs(20))
        .await;
    Some((world, bot))
}

/// A client program that has been started, with what it printed so far.
struct Run {
    child: Child,
    lines: mpsc::Receiver<String>,
    stdout: Vec<String>,
    /// Its standard error, read all along so that a talkative client never blocks on it.
    stderr: Arc<Mutex<String>>,
    /// Set once its standard error is closed (the client has exited).
    stderr_closed: Arc<AtomicBool>,
}

impl Run {
    /// Starts `command` with its standard output (and input) piped.
    fn start(mut command: Command) -> Run {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let (send, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().expect("piped stderr");
        let collected = stderr.clone();
        let stderr_closed = Arc::new(AtomicBool::new(false));
        let closed = stderr_closed.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut collected = collected.lock().unwrap_or_else(|e| e.into_inner());
                collected.push_str(&line);
                collected.push('\n');
            }
            closed.store(true, Ordering::SeqCst);
        });
        Run {
            child,
            lines,
            stdout: Vec::new(),
            stderr,
            stderr_closed,
        }
    }

    /// Writes `line` to the client's standard input, which stays open.
    fn type_line(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("piped stdin");
        writeln!(stdin, "{line}").expect("the client reads its input");
        stdin.flush().expect("the client reads its input");
    }

    /// Reads lines until one satisfies `done` or the client exits or the deadline passes;
    /// returns that line. Then the client is killed (it would go on listening).
    fn wait_for(&mut self, done: impl Fn(&str) -> bool) -> Option<String> {
        let end = Instant::now() + DEADLINE;
        let found = loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.stdout.push(line.clone());
                    if done(&line) {
                        break Some(line);
                    }
                }
                Err(_) => break None,
            }
        };
        let _ = self.child.kill();
        found
    }

    /// Waits until the client's standard error holds `needle`, the client exits or the
    /// deadline passes, then kills the client; whether `needle` came.
    fn wait_for_stderr(&mut self, needle: &str) -> bool {
        let end = Instant::now() + DEADLINE;
        let found = loop {
            // Read before the text is searched, so that nothing written before the close is
            // missed.
            let closed = self.stderr_closed.load(Ordering::SeqCst);
            if self
                .stderr
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(needle)
            {
                break true;
            }
            if closed || Instant::now() >= end {
                break false;
            }
            // Lines printed meanwhile are kept for the failure message.
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(50)) {
                self.stdout.push(line);
            }
        };
        let _ = self.child.kill();
        found
    }

    /// Everything the client said, for a failure message.
    fn transcript(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let stderr = self
            .stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let tail: String = stderr
            .lines()
            .rev()
            .take(60)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        format!("stdout:\n{}\nstderr (end):\n{tail}", self.stdout.join("\n"))
    }

    /// The JSON events printed so far with `"event": name`.
    fn events(&self, name: &str) -> Vec<Value> {
        self.stdout
            .iter()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|value| value["event"] == name)
            .collect()
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The environment the client scripts read.
fn script_command(program: &Path, script: &str, world: &World) -> Command {
    let mut command = Command::new(program);
    command
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/clients")
                .join(script),
        )
        .env("XMPP_PORT", world.xmpp.port().to_string())
        .env("XMPP_USER", USER)
        .env("XMPP_PASSWORD", PASSWORD)
        .env("BOT_JID", BOT)
        .env("QUESTION", QUESTION)
        .env("XMPP_CA", world.xmpp.ca_file());
    command
}

/// Runs a client script until it prints its answer; asserts that the answer is the reading.
/// Returns the run for more assertions.
fn ask_with_script(command: Command) -> Run {
    let mut run = Run::start(command);
    let answer = run
        .wait_for(|line| serde_json::from_str::<Value>(line).is_ok_and(|v| v["event"] == "answer"));
    let Some(answer) = answer else {
        panic!("no answer from the bot:\n{}", run.transcript());
    };
    let answer: Value = serde_json::from_str(&answer).expect("JSON");
    let body = answer["body"].as_str().unwrap_or_default();
    assert!(
        body.starts_with(READING),
        "the answer is not the reading: {answer}"
    );
    run
}

/// Debian's Python with `module`, or `None` (skip) when it is missing; panics under CI=true.
fn python_with(module: &str, package: &str) -> Option<PathBuf> {
    let python = find_peer("python3", &[PYTHON])?;
    let python_name = python.to_string_lossy().into_owned();
    python_imports(&python_name, module, &format!("install {package}")).then_some(python)
}

/// The `node_modules` directory holding `@xmpp/client`: `XMPPJS_MODULES`, or where `.ci/run`
/// installs it.
fn xmppjs_modules() -> Option<PathBuf> {
    let modules = std::env::var_os("XMPPJS_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/xmppjs/node_modules")
        });
    if modules.join("@xmpp/client/package.json").is_file() {
        return Some(modules);
    }
    if peers_required() {
        panic!(
            "@xmpp/client is not installed in {}, and CI=true requires it: run the npm install \
             line of .ci/run",
            modules.display()
        );
    }
    eprintln!(
        "skipping: @xmpp/client not installed in {}",
        modules.display()
    );
    None
}

/// xmpp.js: logs in (SCRAM over STARTTLS), asks the bot, gets the reading. Against the bundled
/// server it used to stop at "SASL: No compatible mechanism available": the features after
/// login carried an empty `<mechanisms/>`.
async fn xmppjs(kind: Kind) {
    let Some(node) = find_peer("node", &["/usr/bin/node"]) else {
        return;
    };
    let Some(modules) = xmppjs_modules() else {
        return;
    };
    let Some((world, _bot)) = world_with_reading(kind).await else {
        return;
    };
    let mut command = script_command(&node, "xmppjs/ask.mjs", &world);
    command
        .env("XMPPJS_MODULES", &modules)
        .env("NODE_EXTRA_CA_CERTS", world.xmpp.ca_file());
    let run = tokio::task::spawn_blocking(move || ask_with_script(command))
        .await
        .expect("the client run");
    let online = run.events("online");
    assert_eq!(online.len(), 1, "{:?}", run.stdout);
}

/// go-sendxmpp: sends the question typed on its standard input and receives the bot's answer.
/// Against the bundled server it used to fail after SASL with "expected element type
/// <features> but have <error>": go-xmpp ends `</auth>` with a newline.
///
/// go-sendxmpp 0.5.6 with `-i -l` does not print what it receives (against Prosody neither),
/// so the answer is looked for in its debug output (`-d`), which shows the stream it reads.
async fn go_sendxmpp(kind: Kind) {
    let Some(program) = find_peer("go-sendxmpp", &["/usr/bin/go-sendxmpp"]) else {
        return;
    };
    let Some((world, _bot)) = world_with_reading(kind).await else {
        return;
    };
    let mut command = Command::new(program);
    command
        .args(["-u", &format!("{USER}@localhost"), "-p", PASSWORD])
        .args(["-j", &format!("127.0.0.1:{}", world.xmpp.port())])
        .args(["-d", "-i", "-l", BOT])
        .env("SSL_CERT_FILE", world.xmpp.ca_file())
        // Its own configuration file, if the machine has one, must not count.
        .env("HOME", world.dir.path());
    let mut run = Run::start(command);
    let (answered, run) = tokio::task::spawn_blocking(move || {
        run.type_line(QUESTION);
        let answered = run.wait_for_stderr(&format!("<body>{READING}"));
        (answered, run)
    })
    .await
    .expect("the client run");
    assert!(answered, "no answer from the bot:\n{}", run.transcript());
    let stream = run.stderr.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let answer = stream
        .lines()
        .find(|line| line.contains(&format!("<body>{READING}")))
        .unwrap_or_default();
    assert!(answer.contains(&format!("from='{BOT}/")), "{answer}");
}

/// nbxmpp, as Gajim uses it: logs in (SCRAM over STARTTLS), asks the bot, gets the reading.
async fn nbxmpp(kind: Kind) {
    let Some(python) = python_with("nbxmpp", "python3-nbxmpp") else {
        return;
    };
    let Some((world, _bot)) = world_with_reading(kind).await else {
        return;
    };
    let command = script_command(&python, "nbxmpp_ask.py", &world);
    let run = tokio::task::spawn_blocking(move || ask_with_script(command))
        .await
        .expect("the client run");
    assert_eq!(run.events("online").len(), 1, "{:?}", run.stdout);
}

/// Debian's slixmpp 1.8.3 with its stock settings, as poezio runs it: logs in, asks the bot,
/// gets the reading.
///
/// How it logs in differs, and the difference is slixmpp's: it knows only the `tls-unique`
/// channel binding, which TLS 1.3 does not define (RFC 9266). Prosody 0.12 offers no `-PLUS`
/// on TLS 1.3, so slixmpp uses SCRAM at once (gs2 flag `y`). The bundled server offers
/// `-PLUS` with `tls-exporter` and `tls-server-end-point` (announced with XEP-0440, which
/// slixmpp 1.8.3 does not read): slixmpp asks for `tls-unique` (refused, RFC 5802 §6), then
/// plain SCRAM with `y`, which after an offer of `-PLUS` is a downgrade the server must refuse
/// (RFC 5802 §6), and then PLAIN inside TLS. A client without a usable type should send `n`.
async fn slixmpp_debian(kind: Kind) {
    let Some(python) = python_with("slixmpp", "python3-slixmpp") else {
        return;
    };
    let Some((world, _bot)) = world_with_reading(kind).await else {
        return;
    };
    let command = script_command(&python, "slixmpp_ask.py", &world);
    let run = tokio::task::spawn_blocking(move || ask_with_script(command))
        .await
        .expect("the client run");
    let online = run.events("online");
    let [online] = online.as_slice() else {
        panic!("{:?}", run.stdout);
    };
    match kind {
        Kind::Peers => {
            let mechanism = online["mechanism"].as_str().unwrap_or_default();
            assert!(mechanism.starts_with("SCRAM-SHA-"), "{online}");
            assert_eq!(online["refused"], serde_json::json!([]), "{online}");
        }
        Kind::Bundled => {
            assert_eq!(online["mechanism"], "PLAIN", "{online}");
            assert_eq!(
                online["refused"],
                serde_json::json!([
                    "SCRAM-SHA-256-PLUS",
                    "SCRAM-SHA-1-PLUS",
                    "SCRAM-SHA-256",
                    "SCRAM-SHA-1"
                ]),
                "{online}"
            );
        }
    }
}

/// A client that binds SCRAM to the server's certificate (RFC 5929 `tls-server-end-point`, as
/// clients that cannot export keying material do), written out by hand over a real TLS
/// connection: the server must hash the certificate it served with the same result as the
/// client, and refuse another certificate's hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_plus_with_tls_server_end_point_is_bound_to_the_served_certificate() {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::CertificateDer;

    let server = support::server::InProcessServer::start().await;
    server.add_user(USER, PASSWORD);
    let certificate =
        CertificateDer::from_pem_file(&server.ca_file).expect("the server's certificate");
    let end_point = mqtt2xmpp::tls::tls_server_end_point(&certificate)
        .expect("the server's certificate has a tls-server-end-point binding");
    let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("a cert");
    let other_end_point =
        mqtt2xmpp::tls::tls_server_end_point(other.cert.der()).expect("a binding");

    for (data, accepted) in [(&end_point, true), (&other_end_point, false)] {
        let mut raw = support::raw::Raw::connect(server.port).await;
        raw.starttls(&server.ca_file).await;
        let features = raw.open_stream().await;
        assert!(
            features.contains("<channel-binding type='tls-server-end-point'"),
            "{features}"
        );
        let answer = scram_sha256_plus(&mut raw, data).await;
        if accepted {
            assert!(answer.contains("<success"), "{answer}");
        } else {
            assert!(answer.contains("<not-authorized"), "{answer}");
        }
    }
}

/// SCRAM-SHA-256-PLUS (RFC 5802, RFC 7677) with `p=tls-server-end-point` and `data` as the
/// binding, as carol; returns the server's last answer.
async fn scram_sha256_plus(raw: &mut support::raw::Raw, data: &[u8]) -> String {
    use base64::engine::general_purpose::STANDARD as BASE64;
    use base64::Engine as _;
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};

    fn hmac(key: &[u8], message: &[u8]) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
        mac.update(message);
        mac.finalize().into_bytes().to_vec()
    }
    /// The base64 text of the first `<name …>…</name>` in `xml`.
    fn text_of<'a>(xml: &'a str, name: &str) -> &'a str {
        let start = xml.find(&format!("<{name}")).expect("the element");
        let body = &xml[start..];
        let open_end = body.find('>').expect("a start tag") + 1;
        let close = body.find(&format!("</{name}>")).expect("an end tag");
        &body[open_end..close]
    }

    let step = Duration::from_secs(10);
    let gs2 = "p=tls-server-end-point,,";
    let bare = format!("n={USER},r=rOprNGfwEbeRWgbNEkqO");
    raw.send(format!(
        "<auth xmlns='{}' mechanism='SCRAM-SHA-256-PLUS'>{}</auth>",
        support::raw::NS_SASL,
        BASE64.encode(format!("{gs2}{bare}"))
    ))
    .await;
    let challenge = raw
        .read_until_any(&["</challenge>", "</failure>"], step)
        .await;
    let server_first = String::from_utf8(
        BASE64
            .decode(text_of(&challenge, "challenge"))
            .expect("base64"),
    )
    .expect("UTF-8");
    let field = |name: &str| {
        server_first
            .split(',')
            .find_map(|part| part.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {server_first}"))
            .to_string()
    };
    let (nonce, salt, iterations) = (field("r="), field("s="), field("i="));
    let salt = BASE64.decode(salt).expect("base64 salt");
    let iterations: u32 = iterations.parse().expect("a number");
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(PASSWORD.as_bytes(), &salt, iterations, &mut salted);
    let client_key = hmac(&salted, b"Client Key");
    let stored_key = Sha256::digest(&client_key);
    let mut cbind = gs2.as_bytes().to_vec();
    cbind.extend_from_slice(data);
    let without_proof = format!("c={},r={nonce}", BASE64.encode(&cbind));
    let auth_message = format!("{bare},{server_first},{without_proof}");
    let signature = hmac(&stored_key, auth_message.as_bytes());
    let proof: Vec<u8> = client_key
        .iter()
        .zip(&signature)
        .map(|(k, s)| k ^ s)
        .collect();
    raw.send(format!(
        "<response xmlns='{}'>{}</response>",
        support::raw::NS_SASL,
        BASE64.encode(format!("{without_proof},p={}", BASE64.encode(proof)))
    ))
    .await;
    raw.read_until_any(&["</success>", "</failure>"], step)
        .await
}

/// go-xmpp's way of writing: `<starttls/>` and `</auth>` end with a newline (RFC 6120 §11.7
/// allows whitespace between elements). Here the newline after `<starttls/>` arrives only after
/// the server's `<proceed/>`, just before the TLS handshake, and the one after `</auth>` before
/// the restarted stream's header: the login must go through all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newlines_after_starttls_and_auth_do_not_break_the_login() {
    use base64::Engine as _;
    let server = support::server::InProcessServer::start().await;
    server.add_user(USER, PASSWORD);
    let mut raw = support::raw::Raw::connect(server.port).await;
    raw.starttls_with(&server.ca_file, b"\n").await;
    let features = raw.open_stream().await;
    assert!(
        features.contains("<mechanism>PLAIN</mechanism>"),
        "{features}"
    );
    let credentials = base64::engine::general_purpose::STANDARD
        .encode(format!("\0{USER}\0{PASSWORD}").as_bytes());
    raw.send(format!(
        "<auth xmlns='{}' mechanism='PLAIN'>{credentials}</auth>\n",
        support::raw::NS_SASL
    ))
    .await;
    let success = raw
        .read_until_any(&["</success>", "</failure>"], Duration::from_secs(10))
        .await;
    assert!(success.contains("<success"), "{success}");
    let features = raw.open_stream().await;
    assert!(features.contains("<bind"), "{features}");
    assert!(!features.contains("<mechanisms"), "{features}");
    let bound = raw.bind("go").await;
    assert!(bound.contains(&format!("{USER}@localhost/go")), "{bound}");
}
