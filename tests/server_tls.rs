//! The bundled server's TLS as users meet it: the direct TLS port of XEP-0368 (a client starts
//! with the TLS handshake, then logs in at once, without STARTTLS), and the certificate reload
//! that a renewal needs (SIGHUP, `systemctl reload`): new connections get the new certificate,
//! sessions go on, and a pair that cannot be used is logged and changes nothing.
//!
//! Most transcripts run the server in the test's process; those about the binary (its log,
//! SIGHUP) run `mqtt2xmpp server`. The real client is Debian's slixmpp 1.8.3
//! (`tests/slixmpp/direct_tls.py`), skipped without it unless CI=true.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::peers::python_imports;
use support::raw::{Raw, HEADER};
use support::server::{limits, InProcessServer, ServerProcess, XmppEndpoint};

/// How long one answer may take.
const WAIT: Duration = Duration::from_secs(10);
const ALPN: &[u8] = b"xmpp-client";

async fn server_with_alice_and_bob() -> InProcessServer {
    let server = InProcessServer::start_tls(limits(|_| {})).await;
    for user in ["alice", "bob"] {
        server.add_user(user, &format!("{user}-secret"));
    }
    server
}

/// Logs `user` in on the direct TLS `port` (trusting `ca_file`) and binds `resource`.
async fn direct_login(port: u16, ca_file: &Path, user: &str, resource: &str) -> Raw {
    let mut raw = Raw::direct_tls(port, ca_file).await;
    let features = raw.open_stream().await;
    assert!(features.contains("PLAIN"), "{features}");
    let success = raw.auth_plain(user, &format!("{user}-secret")).await;
    assert!(success.contains("<success"), "{success}");
    let features = raw.open_stream().await;
    assert!(features.contains("<bind"), "{features}");
    let bound = raw.bind(resource).await;
    assert!(
        bound.contains(&format!("{user}@localhost/{resource}")),
        "{bound}"
    );
    raw
}

async fn starttls_login(server: &impl XmppEndpoint, user: &str, resource: &str) -> Raw {
    let password = format!("{user}-secret");
    Raw::login(server.port(), server.ca_file(), user, &password, resource).await
}

/// `from` sends `to` a chat message and `to` receives it.
async fn chat(from: &mut Raw, to: &mut Raw, to_jid: &str, text: &str) {
    from.send(format!(
        "<message to='{to_jid}' type='chat'><body>{text}</body></message>"
    ))
    .await;
    let received = to.read_until("</message>", WAIT).await;
    assert!(received.contains(text), "{to_jid} got: {received}");
}

/// A self-signed certificate and key for `localhost`, as PEM.
fn new_pair() -> (String, String) {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    (generated.cert.pem(), generated.key_pair.serialize_pem())
}

/// The DER of the first certificate in a PEM text.
fn der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("a PEM certificate")
        .as_ref()
        .to_vec()
}

/// Connects to the direct TLS port trusting `ca_file` until the server presents `expected`
/// (a reload is not instantaneous); panics after [`WAIT`].
async fn wait_for_certificate(port: u16, ca_file: &Path, expected: &[u8]) -> Raw {
    let deadline = Instant::now() + WAIT;
    loop {
        // Trusting only the expected certificate, the handshake fails while another is served.
        if let Ok(raw) = Raw::try_direct_tls(port, ca_file, &[ALPN]).await {
            if raw.server_certificate().as_deref() == Some(expected) {
                return raw;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the server did not present the new certificate within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs the server unit's `ExecReload=` command for the server `pid`, as `systemctl reload` does.
fn systemctl_reload(pid: u32) {
    let unit = include_str!("../systemd/mqtt2xmpp-server.service");
    let command = unit
        .lines()
        .find_map(|line| line.strip_prefix("ExecReload="))
        .expect("ExecReload= in the server unit")
        .replace("$MAINPID", &pid.to_string());
    let mut words = command.split_whitespace();
    let program = words.next().expect("a command");
    let status = Command::new(program)
        .args(words)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {command}: {e}"));
    assert!(status.success(), "{command}: {status}");
}

// ----- direct TLS -------------------------------------------------------------------------------

/// alice's phone connects to the direct TLS port: TLS first (ALPN `xmpp-client`), then the
/// server offers SASL at once, without STARTTLS (XEP-0368 §3: no STARTTLS inside direct TLS);
/// she logs in and chats with bob, who uses STARTTLS on the other port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_starts_with_tls_logs_in_at_once_and_chats() {
    let server = server_with_alice_and_bob().await;
    let mut alice = Raw::direct_tls(server.direct_tls_port(), &server.ca_file).await;
    assert_eq!(alice.alpn_protocol().as_deref(), Some(ALPN));
    let features = alice.open_stream().await;
    assert!(features.contains("<mechanisms"), "{features}");
    assert!(features.contains("SCRAM-SHA-256"), "{features}");
    assert!(
        !features.contains("starttls"),
        "STARTTLS inside TLS: {features}"
    );
    let success = alice.auth_plain("alice", "alice-secret").await;
    assert!(success.contains("<success"), "{success}");
    alice.open_stream().await;
    let bound = alice.bind("phone").await;
    assert!(bound.contains("alice@localhost/phone"), "{bound}");

    let mut bob = starttls_login(&server, "bob", "desk").await;
    chat(
        &mut alice,
        &mut bob,
        "bob@localhost/desk",
        "hello over direct TLS",
    )
    .await;
    chat(
        &mut bob,
        &mut alice,
        "alice@localhost/phone",
        "hello over STARTTLS",
    )
    .await;
}

/// XEP-0368 says clients SHOULD send ALPN: one that sends none is served too. One that asks
/// only for another protocol is refused in the handshake (RFC 7301 §3.2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_is_optional_but_another_protocol_is_refused() {
    let server = server_with_alice_and_bob().await;
    let mut raw = Raw::try_direct_tls(server.direct_tls_port(), &server.ca_file, &[])
        .await
        .expect("a handshake without ALPN");
    assert_eq!(raw.alpn_protocol(), None);
    let features = raw.open_stream().await;
    assert!(features.contains("<mechanisms"), "{features}");

    let refused = Raw::try_direct_tls(server.direct_tls_port(), &server.ca_file, &[b"h2"]).await;
    let error = refused.err().expect("a handshake for h2 is refused");
    assert!(
        error.to_string().contains("NoApplicationProtocol"),
        "{error}"
    );
}

/// The direct TLS port serves the same certificate as STARTTLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_ports_present_the_same_certificate() {
    let server = server_with_alice_and_bob().await;
    let direct = Raw::direct_tls(server.direct_tls_port(), &server.ca_file).await;
    let mut upgraded = Raw::connect(server.port).await;
    upgraded.starttls(&server.ca_file).await;
    let on_disk = der(&std::fs::read_to_string(&server.ca_file).unwrap());
    assert_eq!(direct.server_certificate(), Some(on_disk.clone()));
    assert_eq!(upgraded.server_certificate(), Some(on_disk));
}

/// --max-connections counts both ports together, and an idle port keeps no slot from a busy
/// one: with a cap of 2, a STARTTLS client and a direct TLS client are served, a third client
/// waits (unserved) until one of them leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_counts_both_ports() {
    let server = InProcessServer::start_tls(limits(|l| l.max_connections = 2)).await;
    let mut plain = Raw::connect(server.port).await;
    assert!(plain.open_stream().await.contains("<starttls"));
    let direct = Raw::direct_tls(server.direct_tls_port(), &server.ca_file).await;
    let mut third = Raw::connect(server.port).await;
    third.send(HEADER).await;
    let quiet = third
        .read_until("</stream:features>", Duration::from_millis(300))
        .await;
    assert_eq!(quiet, "", "served over the cap");
    drop(direct);
    let served = third.read_until("</stream:features>", WAIT).await;
    assert!(
        served.contains("<starttls"),
        "not served after a slot freed: {served}"
    );
}

/// A client that speaks plain XMPP to the direct TLS port: the handshake fails, the server
/// closes the connection, logs why, and goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_text_client_on_the_direct_tls_port_is_closed_and_logged() {
    let server = tokio::task::block_in_place(|| ServerProcess::start_with_tls(&[]));
    server.add_user("alice", "alice-secret");
    let port = server.tls_port.expect("a direct TLS port");
    let mut raw = Raw::connect(port).await;
    raw.send(HEADER).await;
    let answer = raw.read_to_close(WAIT).await;
    assert!(answer.closed, "left open: {:?}", answer.text);
    assert!(!answer.text.contains("<stream"), "{:?}", answer.text);
    let process = server.process.as_ref().expect("server running");
    tokio::task::block_in_place(|| {
        process.wait_log("TLS handshake on the direct TLS port failed", 1, WAIT)
    });
    let mut alice = direct_login(port, &server.ca_file, "alice", "after").await;
    assert!(alice.ping("after").await.contains("type='result'"));
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

/// Debian's slixmpp 1.8.3 with `use_ssl=True` (its direct TLS) and ALPN `xmpp-client` logs in
/// with SCRAM and exchanges a message with a second slixmpp client on the same port.
#[test]
fn slixmpp_logs_in_over_direct_tls_and_chats() {
    const PYTHON: &str = "/usr/bin/python3";
    const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/slixmpp/direct_tls.py");
    if !python_imports(
        PYTHON,
        "slixmpp",
        "install the Debian package python3-slixmpp",
    ) {
        return;
    }
    let server = ServerProcess::start_with_tls(&[]);
    server.add_user("alice", "alice-secret");
    server.add_user("bob", "bob-secret");
    let port = server.tls_port.expect("a direct TLS port").to_string();
    // slixmpp's waits are bounded (10 s each) and it exits; no deadline is needed here.
    let output = Command::new(PYTHON)
        .arg(CLIENT)
        .args(["--port", &port, "--ca"])
        .arg(&server.ca_file)
        .env_remove("PYTHONPATH")
        .env_remove("PYTHONHOME")
        .stdin(Stdio::null())
        .output()
        .expect("run direct_tls.py");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let explain = || {
        format!(
            "--- stdout ---\n{stdout}--- stderr ---\n{}--- server log ---\n{}",
            String::from_utf8_lossy(&output.stderr),
            server.log()
        )
    };
    assert!(output.status.success(), "{}", explain());
    let events: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {}", explain())))
        .collect();
    let logins: Vec<&Value> = events.iter().filter(|e| e["event"] == "login").collect();
    assert_eq!(logins.len(), 2, "{}", explain());
    for login in logins {
        assert_eq!(login["tls_version"], "TLSv1.3", "{login}");
        assert_eq!(login["alpn"], "xmpp-client", "{login}");
        assert_eq!(login["verified"], true, "{login}");
        assert_eq!(login["starttls_offered"], false, "{login}");
        assert_eq!(login["mechanism"], "SCRAM-SHA-256", "{login}");
    }
    let received = events
        .iter()
        .find(|e| e["event"] == "message")
        .unwrap_or_else(|| panic!("no message: {}", explain()));
    assert_eq!(received["from"], "alice@localhost/direct-tls");
    assert_eq!(received["body"], "Hello Bob, over direct TLS");
}

// ----- certificate reload -----------------------------------------------------------------------

/// A renewal: new certificate and key files, then a reload. New connections, on both ports, get
/// the new certificate; alice and bob, logged in before, keep chatting on their connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_certificate_is_served_to_new_connections_while_sessions_go_on() {
    let server = server_with_alice_and_bob().await;
    let mut alice = direct_login(server.direct_tls_port(), &server.ca_file, "alice", "phone").await;
    let mut bob = starttls_login(&server, "bob", "desk").await;
    let old = alice.server_certificate().expect("TLS");

    let (cert, key) = new_pair();
    std::fs::write(server.data_dir.join("localhost.key"), &key).unwrap();
    std::fs::write(&server.ca_file, &cert).unwrap();
    server.reload_certificate();

    let new = der(&cert);
    assert_ne!(old, new);
    let mut fresh = wait_for_certificate(server.direct_tls_port(), &server.ca_file, &new).await;
    let features = fresh.open_stream().await;
    assert!(features.contains("<mechanisms"), "{features}");
    let mut upgraded = Raw::connect(server.port).await;
    upgraded.starttls(&server.ca_file).await;
    assert_eq!(upgraded.server_certificate(), Some(new));

    assert_eq!(alice.server_certificate(), Some(old));
    chat(&mut alice, &mut bob, "bob@localhost/desk", "still here").await;
    chat(&mut bob, &mut alice, "alice@localhost/phone", "me too").await;
    let mut carol = direct_login(server.direct_tls_port(), &server.ca_file, "bob", "laptop").await;
    chat(&mut alice, &mut carol, "bob@localhost/laptop", "and you").await;
}

/// `mqtt2xmpp server --cert --key` and SIGHUP, as `systemctl reload` sends it after a renewal.
/// A certificate whose key has not been replaced yet, and then a file that is not PEM, are
/// logged with the file and what is wrong, and the old certificate stays; the complete pair is
/// then taken, while alice's session goes on throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_and_a_bad_pair_keeps_the_old_one() {
    let files = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (
        files.path().join("fullchain.pem"),
        files.path().join("privkey.pem"),
    );
    let (old_cert, old_key) = new_pair();
    std::fs::write(&cert_path, &old_cert).unwrap();
    std::fs::write(&key_path, &old_key).unwrap();
    let (cert_flag, key_flag) = (
        cert_path.to_string_lossy().into_owned(),
        key_path.to_string_lossy().into_owned(),
    );
    let server = tokio::task::block_in_place(|| {
        ServerProcess::start_with_tls(&["--cert", &cert_flag, "--key", &key_flag])
    });
    server.add_user("alice", "alice-secret");
    let port = server.tls_port.expect("a direct TLS port");
    let mut alice = direct_login(port, &cert_path, "alice", "phone").await;
    let process = server.process.as_ref().expect("server running");
    let wait_log = |needle: &str, count: usize| {
        tokio::task::block_in_place(|| process.wait_log(needle, count, WAIT))
    };

    // The renewed certificate is in place, its key not yet.
    let (new_cert, new_key) = new_pair();
    std::fs::write(&cert_path, &new_cert).unwrap();
    server.hangup();
    wait_log("TLS certificate not reloaded", 1);
    let expected = format!(
        "the key {} does not belong to the certificate {}",
        key_path.display(),
        cert_path.display()
    );
    assert!(server.log().contains(&expected), "{}", server.log());
    let old_trust = files.path().join("old.pem");
    std::fs::write(&old_trust, &old_cert).unwrap();
    let still_old = Raw::direct_tls(port, &old_trust).await;
    assert_eq!(still_old.server_certificate(), Some(der(&old_cert)));

    std::fs::write(&cert_path, "not a certificate\n").unwrap();
    server.hangup();
    wait_log("TLS certificate not reloaded", 2);
    let expected = format!("{}: no PEM certificate found", cert_path.display());
    assert!(server.log().contains(&expected), "{}", server.log());
    assert!(alice.ping("between").await.contains("type='result'"));

    // The whole pair, and the reload as the systemd unit does it.
    std::fs::write(&key_path, &new_key).unwrap();
    std::fs::write(&cert_path, &new_cert).unwrap();
    systemctl_reload(server.pid());
    wait_log("TLS certificate reloaded", 1);
    let fresh = Raw::direct_tls(port, &cert_path).await;
    assert_eq!(fresh.server_certificate(), Some(der(&new_cert)));
    assert!(alice.ping("after").await.contains("type='result'"));
    assert!(!server.log().contains("panicked"), "{}", server.log());
}
