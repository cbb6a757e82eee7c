//! Checks that the real peers in `support::peers` work as the other integration tests expect:
//! a mosquitto broker that round-trips retained messages across a restart and enforces its
//! password file, and a Prosody server whose STARTTLS login verifies against the fixture's
//! `ca_file` with both rustls (what the bot uses) and OpenSSL.
//!
//! Each test returns early when its peer is missing, unless CI=true (see `peers::find_peer`).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support::peers::{self, Mosquitto, Prosody};

/// How long one client exchange with a peer may take.
const EXCHANGE_DEADLINE: Duration = Duration::from_secs(10);

#[test]
fn mosquitto_round_trips_a_retained_message_across_a_restart() {
    let Some(mut broker) = Mosquitto::start() else {
        return;
    };
    let Some(clients) = MqttClients::find() else {
        return;
    };

    clients.publish_retained(broker.port, None, "smoke/temperature", "21.5");
    assert_eq!(
        clients.receive_one(broker.port, None, "smoke/#"),
        Ok("21.5".to_owned()),
        "broker log:\n{}",
        broker.log()
    );

    broker.stop();
    assert!(
        TcpStream::connect(("127.0.0.1", broker.port)).is_err(),
        "port {} still accepts connections after stop",
        broker.port
    );

    let port = broker.port;
    broker.restart();
    assert_eq!(broker.port, port, "restart must keep the port");
    // Persistence is off, so the restarted broker starts empty.
    clients.publish_retained(broker.port, None, "smoke/temperature", "22.0");
    assert_eq!(
        clients.receive_one(broker.port, None, "smoke/#"),
        Ok("22.0".to_owned()),
        "broker log:\n{}",
        broker.log()
    );
}

#[test]
fn mosquitto_with_a_user_accepts_only_that_user() {
    let Some(broker) = Mosquitto::start_with_user("sensor", "s3cret pass") else {
        return;
    };
    let Some(clients) = MqttClients::find() else {
        return;
    };
    let good = Some(("sensor", "s3cret pass"));

    clients.publish_retained(broker.port, good, "smoke/door", "open");
    assert_eq!(
        clients.receive_one(broker.port, good, "smoke/door"),
        Ok("open".to_owned()),
        "broker log:\n{}",
        broker.log()
    );
    for (who, credentials) in [
        ("anonymous", None),
        ("wrong password", Some(("sensor", "nope"))),
    ] {
        let refused = clients.receive_one(broker.port, credentials, "smoke/door");
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.contains("not authorised")),
            "{who} client was not refused: {refused:?}"
        );
    }
}

#[test]
fn prosody_starttls_login_verifies_against_ca_file() {
    let Some(mut server) = Prosody::start() else {
        return;
    };
    server.register("alice", "wonderland");
    let ca = std::fs::read(&server.ca_file)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", server.ca_file.display()));

    if let Err(e) = xmpp_login_with_rustls(&server, &ca, "alice", "wonderland") {
        panic!(
            "rustls STARTTLS login failed: {e}\nprosody log:\n{}",
            server.log()
        );
    }
    let wrong_password = xmpp_login_with_rustls(&server, &ca, "alice", "looking-glass");
    assert!(
        wrong_password
            .as_ref()
            .is_err_and(|e| e.contains("not-authorized")),
        "a wrong password was not refused: {wrong_password:?}"
    );
    let stranger = rcgen::generate_simple_self_signed(vec![server.domain.clone()])
        .unwrap_or_else(|e| panic!("cannot generate a second certificate: {e}"));
    let untrusted = xmpp_login_with_rustls(&server, stranger.cert.pem().as_bytes(), "alice", "x");
    assert!(
        untrusted.as_ref().is_err_and(|e| e.contains("certificate")),
        "rustls accepted the server against an unrelated trust anchor: {untrusted:?}"
    );

    xmpp_login_with_openssl(&server, "alice", "wonderland");

    let port = server.port;
    server.stop();
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} still accepts connections after stop"
    );
    // Accounts can also be registered while the server is down, and survive a restart.
    server.register("bob", "builder");
    server.restart();
    assert_eq!(server.port, port, "restart must keep the port");
    for (user, password) in [("alice", "wonderland"), ("bob", "builder")] {
        if let Err(e) = xmpp_login_with_rustls(&server, &ca, user, password) {
            panic!(
                "login of {user} after restart failed: {e}\nprosody log:\n{}",
                server.log()
            );
        }
    }
}

/// The mosquitto command-line clients.
struct MqttClients {
    publish: PathBuf,
    subscribe: PathBuf,
}

impl MqttClients {
    /// None = skipped (see `peers::find_peer`).
    fn find() -> Option<MqttClients> {
        Some(MqttClients {
            publish: peers::find_peer("mosquitto_pub", &["/usr/bin/mosquitto_pub"])?,
            subscribe: peers::find_peer("mosquitto_sub", &["/usr/bin/mosquitto_sub"])?,
        })
    }

    fn publish_retained(&self, port: u16, login: Option<(&str, &str)>, topic: &str, message: &str) {
        let mut command = Command::new(&self.publish);
        command.args(mqtt_args(port, login));
        command.args(["-t", topic, "-m", message, "-r", "-q", "1"]);
        let output = command
            .output()
            .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
        assert!(
            output.status.success(),
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The first message on `topic`, waiting at most 5 s (`-C 1 -W 5`); Err = the client's error.
    fn receive_one(
        &self,
        port: u16,
        login: Option<(&str, &str)>,
        topic: &str,
    ) -> Result<String, String> {
        let mut command = Command::new(&self.subscribe);
        command.args(mqtt_args(port, login));
        command.args(["-t", topic, "-C", "1", "-W", "5"]);
        let output = command
            .output()
            .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout)
                .trim_end()
                .to_owned())
        } else {
            Err(format!(
                "{} {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim_end()
            ))
        }
    }
}

fn mqtt_args(port: u16, login: Option<(&str, &str)>) -> Vec<String> {
    let mut args = vec![
        "-h".into(),
        "127.0.0.1".into(),
        "-p".into(),
        port.to_string(),
    ];
    if let Some((user, password)) = login {
        args.extend(["-u".into(), user.into(), "-P".into(), password.into()]);
    }
    args
}

fn stream_header(domain: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' \
         xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
    )
}

fn sasl_plain(user: &str, password: &str) -> String {
    format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
        base64(format!("\0{user}\0{password}").as_bytes())
    )
}

/// Logs in over STARTTLS with rustls (ring), trusting only the certificates in `ca_pem`, and
/// authenticates with SASL PLAIN. Err describes the first step that failed.
fn xmpp_login_with_rustls(
    server: &Prosody,
    ca_pem: &[u8],
    user: &str,
    password: &str,
) -> Result<(), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| format!("bad PEM trust anchor: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("rustls refused the trust anchor: {e}"))?;
    }
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("rustls config: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    let name = ServerName::try_from(server.domain.clone())
        .map_err(|e| format!("bad server name {}: {e}", server.domain))?;

    let mut tcp = TcpStream::connect(("127.0.0.1", server.port))
        .map_err(|e| format!("connect to port {}: {e}", server.port))?;
    tcp.set_read_timeout(Some(EXCHANGE_DEADLINE))
        .map_err(|e| format!("set read timeout: {e}"))?;
    send(&mut tcp, &stream_header(&server.domain))?;
    let features = read_until(&mut tcp, &["</stream:features>"])?;
    if !features.contains("urn:ietf:params:xml:ns:xmpp-tls") {
        return Err(format!("STARTTLS not offered: {features}"));
    }
    send(
        &mut tcp,
        "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
    )?;
    read_until(&mut tcp, &["<proceed"])?;

    let connection = ClientConnection::new(Arc::new(config), name)
        .map_err(|e| format!("rustls connection: {e}"))?;
    let mut tls = StreamOwned::new(connection, tcp);
    // The first write drives the handshake, so a rejected certificate shows up here.
    send(&mut tls, &stream_header(&server.domain)).map_err(|e| format!("TLS: {e}"))?;
    let features = read_until(&mut tls, &["</stream:features>"])?;
    if !features.contains("<mechanism>PLAIN</mechanism>") {
        return Err(format!("SASL PLAIN not offered after STARTTLS: {features}"));
    }
    send(&mut tls, &sasl_plain(user, password))?;
    let reply = read_until(&mut tls, &["<success", "</failure>"])?;
    if reply.contains("<success") {
        Ok(())
    } else {
        Err(format!("SASL refused: {reply}"))
    }
}

/// Runs `openssl s_client -starttls xmpp ... -CAfile ca_file -verify_return_error`, logs in with
/// SASL PLAIN through it, and checks it verified the certificate and exits 0. Without openssl
/// the rustls login above is the TLS check, so this only notes the gap.
fn xmpp_login_with_openssl(server: &Prosody, user: &str, password: &str) {
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("note: openssl not installed; TLS verification was checked with rustls only");
        return;
    }
    let mut command = Command::new("openssl");
    command
        .args(["s_client", "-starttls", "xmpp", "-connect"])
        .arg(format!("127.0.0.1:{}", server.port))
        .args(["-xmpphost", &server.domain, "-CAfile"])
        .arg(&server.ca_file)
        .arg("-verify_return_error");
    let mut client = Interactive::spawn(&mut command);
    // s_client forwards stdin only after the handshake; it does not restart the stream itself.
    client.send(&format!(
        "{}\n{}\n",
        stream_header(&server.domain),
        sasl_plain(user, password)
    ));
    let saw_reply = client.wait_for_stdout(&["<success", "</failure>"], EXCHANGE_DEADLINE);
    // Closing stdin makes s_client close the connection and exit.
    let (status, stdout, stderr) = client.finish(EXCHANGE_DEADLINE);
    let report = format!(
        "{command:?} ({status}):\nstdout:\n{stdout}\nstderr:\n{stderr}\nprosody log:\n{}",
        server.log()
    );
    assert!(
        saw_reply,
        "no SASL reply through openssl within {EXCHANGE_DEADLINE:?}: {report}"
    );
    assert!(status.success(), "openssl s_client failed: {report}");
    assert!(
        stdout.contains("Verify return code: 0 (ok)"),
        "openssl did not verify the certificate: {report}"
    );
    assert!(
        stdout.contains("<success"),
        "login through openssl refused: {report}"
    );
}

/// A child process fed through stdin whose stdout and stderr are collected by reader threads.
struct Interactive {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

impl Interactive {
    fn spawn(command: &mut Command) -> Interactive {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let stdin = child.stdin.take();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        if let Some(pipe) = child.stdout.take() {
            readers.push(collect(pipe, Arc::clone(&stdout)));
        }
        if let Some(pipe) = child.stderr.take() {
            readers.push(collect(pipe, Arc::clone(&stderr)));
        }
        Interactive {
            child,
            stdin,
            stdout,
            stderr,
            readers,
        }
    }

    fn send(&mut self, text: &str) {
        if let Some(stdin) = self.stdin.as_mut() {
            // A write error means the child already exited; `finish` reports how.
            let _ = stdin
                .write_all(text.as_bytes())
                .and_then(|()| stdin.flush());
        }
    }

    /// Polls stdout until it contains one of `needles`; false on timeout.
    fn wait_for_stdout(&mut self, needles: &[&str], deadline: Duration) -> bool {
        let started = Instant::now();
        loop {
            let seen = text_of(&self.stdout);
            if needles.iter().any(|needle| seen.contains(needle)) {
                return true;
            }
            if started.elapsed() >= deadline || matches!(self.child.try_wait(), Ok(Some(_))) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Closes stdin and waits for the exit (killing the child after `deadline`).
    fn finish(mut self, deadline: Duration) -> (std::process::ExitStatus, String, String) {
        drop(self.stdin.take());
        let started = Instant::now();
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if started.elapsed() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => {
                    let _ = self.child.kill();
                    break self
                        .child
                        .wait()
                        .unwrap_or_else(|e| panic!("cannot reap a killed child: {e}"));
                }
            }
        };
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        (status, text_of(&self.stdout), text_of(&self.stderr))
    }
}

fn collect(mut pipe: impl Read + Send + 'static, sink: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(n @ 1..) = pipe.read(&mut buffer) {
            sink.lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .extend_from_slice(&buffer[..n]);
        }
    })
}

fn text_of(buffer: &Mutex<Vec<u8>>) -> String {
    let bytes = buffer
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    String::from_utf8_lossy(&bytes).into_owned()
}

fn send(stream: &mut impl Write, text: &str) -> Result<(), String> {
    stream
        .write_all(text.as_bytes())
        .and_then(|()| stream.flush())
        .map_err(|e| format!("send: {e}"))
}

/// Reads until the received text contains one of `needles` (the read timeout bounds each read).
fn read_until(stream: &mut impl Read, needles: &[&str]) -> Result<String, String> {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&received);
        if needles.iter().any(|needle| text.contains(needle)) {
            return Ok(text.into_owned());
        }
        if started.elapsed() >= EXCHANGE_DEADLINE {
            return Err(format!(
                "no {needles:?} within {EXCHANGE_DEADLINE:?}; got: {text}"
            ));
        }
        match stream.read(&mut buffer) {
            Ok(0) => return Err(format!("connection closed before {needles:?}; got: {text}")),
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(e) => {
                return Err(format!(
                    "read while waiting for {needles:?}: {e}; got: {text}"
                ))
            }
        }
    }
}

/// Standard base64 with padding (enough for SASL PLAIN; avoids a dependency).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let group = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(group >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}
