//! `mqtt2xmpp up` end to end: embedded broker, bundled server, simulated sensor and bot in one
//! process on free ports; a user asks and gets a simulated reading. Needs only the crate.
#![cfg(feature = "embedded-broker")]

mod support;

use std::path::Path;
use std::time::Duration;

use support::chat::ChatClient;
use support::peers::free_port;
use support::process::BinaryProcess;
use support::raw::Raw;

const READY: Duration = Duration::from_secs(30);

fn up(data_dir: &Path, xmpp_port: u16, mqtt_port: u16) -> BinaryProcess {
    let data = data_dir.to_string_lossy().into_owned();
    let xmpp = xmpp_port.to_string();
    let mqtt = mqtt_port.to_string();
    BinaryProcess::spawn(&[
        "up",
        "--data-dir",
        &data,
        "--xmpp-port",
        &xmpp,
        "--mqtt-port",
        &mqtt,
        // Any free port: tests run side by side, and 5223 may be taken.
        "--xmpp-tls-port",
        "0",
        // The same for the upload service's HTTPS port (5443).
        "--http-port",
        "0",
    ])
}

async fn ask_you(data_dir: &Path, xmpp_port: u16) -> String {
    let password = std::fs::read_to_string(data_dir.join("you.password")).expect("password file");
    let ca = data_dir.join("localhost.crt");
    let mut you = ChatClient::login("you@localhost", password.trim(), xmpp_port, &ca).await;
    you.ask_until(
        "bot@localhost",
        |reply| reply.contains(" °C (sensors/temperature, "),
        Duration::from_secs(15),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_chat_then_a_second_run_with_the_same_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let (xmpp_port, mqtt_port) = (free_port(), free_port());

    let mut first = up(dir.path(), xmpp_port, mqtt_port);
    first.wait_log("answering chat messages", 1, READY);
    let banner = first.log();
    assert!(banner.contains("mqtt2xmpp is up."), "{banner}");
    assert!(
        banner.contains("file uploads at upload.localhost, served on https://127.0.0.1:"),
        "the upload service is in the banner:\n{banner}"
    );
    assert!(
        banner.contains("shown once"),
        "the new password is printed once:\n{banner}"
    );
    assert!(
        banner.contains(&format!("127.0.0.1:{mqtt_port} (embedded)")),
        "{banner}"
    );
    assert!(
        banner.contains(&format!("127.0.0.1:{xmpp_port} (STARTTLS)")),
        "{banner}"
    );
    // The direct TLS port (XEP-0368; the kernel's choice here) is in the banner, and serves.
    let tls_port: u16 = banner
        .split(" (direct TLS)")
        .next()
        .and_then(|before| before.rsplit(':').next())
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("no direct TLS port in the banner:\n{banner}"));
    let mut direct = Raw::direct_tls(tls_port, &dir.path().join("localhost.crt")).await;
    let features = direct.open_stream().await;
    assert!(features.contains("<mechanisms"), "{features}");
    let reply = ask_you(dir.path(), xmpp_port).await;
    // A simulated reading, one decimal, in a realistic range.
    let value: f64 = reply
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .expect("a number first");
    assert!((10.0..=35.0).contains(&value), "{reply}");
    // The one-shot client, as a script would use it: the reply on stdout, exit 0...
    let ask = |to: &str, timeout: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_mqtt2xmpp"))
            .args(["ask", "--jid", "you@localhost", "--password-file"])
            .arg(dir.path().join("you.password"))
            .args([
                "--xmpp-server",
                &format!("127.0.0.1:{xmpp_port}"),
                "--xmpp-ca",
            ])
            .arg(dir.path().join("localhost.crt"))
            .args(["--to", to, "--timeout", timeout, "temperature?"])
            .output()
            .expect("run mqtt2xmpp ask")
    };
    let answered = ask("bot@localhost", "10s");
    assert!(answered.status.success(), "{answered:?}");
    let stdout = String::from_utf8_lossy(&answered.stdout);
    assert!(stdout.contains(" °C (sensors/temperature, "), "{stdout}");
    // `stats` on up's own upload service: the chart's link first, then the text. A chart needs
    // two readings in the window: two more are published here, and asked again (at most 6,
    // the bot's charts a minute) until the bot has them.
    support::mqtt::publish_many(
        mqtt_port,
        &[
            ("sensors/temperature", "21.0".to_string()),
            ("sensors/temperature", "21.5".to_string()),
        ],
    )
    .await;
    let stats = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_mqtt2xmpp"))
            .args(["ask", "--jid", "you@localhost", "--password-file"])
            .arg(dir.path().join("you.password"))
            .args(["--xmpp-server", &format!("127.0.0.1:{xmpp_port}")])
            .arg("--xmpp-ca")
            .arg(dir.path().join("localhost.crt"))
            .args(["--to", "bot@localhost", "--timeout", "10s"])
            .arg("stats sensors/temperature 10m")
            .output()
            .expect("run mqtt2xmpp ask")
    };
    let charted = (0..6)
        .map(|_| {
            let out = stats();
            assert!(out.status.success(), "{out:?}");
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
        .find(|out| out.starts_with("https://localhost:"))
        .unwrap_or_default();
    let mut lines = charted.lines();
    let link = lines.next().unwrap_or_default();
    assert!(
        link.starts_with("https://localhost:") && link.ends_with(".png"),
        "no chart link first: {charted}"
    );
    assert!(
        lines
            .next()
            .unwrap_or_default()
            .starts_with("sensors/temperature, last "),
        "{charted}"
    );
    // ...and no answer in time is exit 1 with a message saying so (you@localhost has no
    // resource of non-negative priority, so a message to it is stored, not answered).
    let silent = ask("you@localhost", "1s");
    assert_eq!(silent.status.code(), Some(1), "{silent:?}");
    let stderr = String::from_utf8_lossy(&silent.stderr);
    assert!(
        stderr.contains("no reply from you@localhost within 1s"),
        "{stderr}"
    );

    let (status, took) = first.terminate(Duration::from_secs(10));
    assert!(status.success(), "{status:?}\n{}", first.log());
    assert!(took < Duration::from_secs(5), "{took:?}");
    // The bot leaves before the server stops: a clean stop logs no failed reconnection.
    let log = first.log();
    assert!(
        !log.contains("connection failed") && !log.contains("lost the connection"),
        "{log}"
    );

    // Again: same accounts and password, the password is not printed again.
    let mut second = up(dir.path(), xmpp_port, mqtt_port);
    second.wait_log("answering chat messages", 1, READY);
    let banner = second.log();
    assert!(!banner.contains("shown once"), "{banner}");
    assert!(banner.contains("password in"), "{banner}");
    // SIGHUP (as `systemctl reload` sends it) reloads the certificate; up keeps running.
    let hangup = std::process::Command::new("kill")
        .args(["-HUP", &second.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(hangup.success());
    second.wait_log("TLS certificate reloaded", 1, READY);
    ask_you(dir.path(), xmpp_port).await;
    let (status, _) = second.terminate(Duration::from_secs(10));
    assert!(status.success());
}

/// Runs the binary with `args` and returns its output.
fn mqtt2xmpp(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_mqtt2xmpp"))
        .args(args)
        .output()
        .expect("run mqtt2xmpp")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_added_while_up_runs_gets_answers_not_a_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let (xmpp_port, mqtt_port) = (free_port(), free_port());
    let mut running = up(dir.path(), xmpp_port, mqtt_port);
    running.wait_log("answering chat messages", 1, READY);
    let banner = running.log();
    assert!(
        banner.contains("answers every account of localhost"),
        "{banner}"
    );
    // A reading has arrived before the new account asks.
    ask_you(dir.path(), xmpp_port).await;

    // As a new user would type it: the data directory after the verb.
    let data = dir.path().to_string_lossy().into_owned();
    let password_file = dir.path().join("carol.pw");
    std::fs::write(&password_file, "carol's secret\n").unwrap();
    let password_file = password_file.to_string_lossy().into_owned();
    let added = mqtt2xmpp(&[
        "user",
        "add",
        "carol@localhost",
        "--data-dir",
        &data,
        "--password-file",
        &password_file,
    ]);
    assert!(added.status.success(), "{added:?}");

    let ca = dir
        .path()
        .join("localhost.crt")
        .to_string_lossy()
        .into_owned();
    let server = format!("127.0.0.1:{xmpp_port}");
    let carol_asks = |message: &str| {
        let asked = mqtt2xmpp(&[
            "ask",
            "--jid",
            "carol@localhost",
            "--password-file",
            &password_file,
            "--xmpp-server",
            &server,
            "--xmpp-ca",
            &ca,
            "--to",
            "bot@localhost",
            "--timeout",
            "10s",
            message,
        ]);
        assert!(asked.status.success(), "{asked:?}");
        String::from_utf8_lossy(&asked.stdout).into_owned()
    };
    let reply = carol_asks("temperature?");
    assert!(reply.contains(" °C (sensors/temperature, "), "{reply}");
    // Stats are only for allowed contacts: carol is one, as every account of up's server.
    let stats = carol_asks("stats sensors/temperature");
    assert!(stats.contains("sensors/temperature"), "{stats}");
    assert!(!stats.contains("--allow"), "refused: {stats}");

    let (status, _) = running.terminate(Duration::from_secs(10));
    assert!(status.success(), "{}", running.log());
}

#[test]
fn a_taken_port_is_a_clear_error_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut xmpp_clash = up(dir.path(), port, free_port());
    assert!(!xmpp_clash.wait_exit(READY).success());
    let log = xmpp_clash.log();
    assert!(
        log.contains(&format!("port {port} is already in use")) && log.contains("--xmpp-port"),
        "{log}"
    );

    let mut mqtt_clash = up(dir.path(), free_port(), port);
    assert!(!mqtt_clash.wait_exit(READY).success());
    let log = mqtt_clash.log();
    assert!(
        log.contains(&port.to_string()) && log.contains("--mqtt-port"),
        "{log}"
    );
}
