//! HTTP File Upload (XEP-0363) on the bundled server, with real clients and hostile ones.
//!
//! - slixmpp, Debian's 1.8.3 (`/usr/bin/python3`, with `python3-aiohttp`) and the current
//!   release from PyPI (`target/slixmpp-venv`), with its `xep_0363` and `xep_0066` plugins
//!   (`tests/slixmpp/upload.py`): alice sends bob a photo the way Conversations does (upload,
//!   then the URL as body and out-of-band data); bob downloads it and gets the same bytes.
//!   And the refusals a client sees: a slot over the maximum (with the maximum), the quota.
//! - Raw HTTPS (the test's own bytes over TLS, trusting the test certificate): the HTTP
//!   refusals (over the declared size, a second PUT, a PUT without a slot, paths outside the
//!   upload directory, plain and encoded), expiry, and the files going with the account.
//! - Hostile (`hostile_…`): slowloris, a huge header, a 10 GB Content-Length, a flood of
//!   parallel PUTs, random paths and methods; during each, an XMPP client on the same server
//!   still gets its ping answered.
//!
//! Without slixmpp (or aiohttp) the slixmpp tests skip, unless CI=true.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rand::{Rng, RngCore, SeedableRng};
use serde_json::Value;
use sha2::{Digest, Sha256};
use support::peers::{python_imports, run_event_script, DEBIAN_PYTHON, VENV_PYTHON};
use support::raw::Raw;
use support::server::{limits, InProcessServer, XmppEndpoint};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/slixmpp/upload.py");
const SCRIPT_DEADLINE: Duration = Duration::from_secs(90);
const WAIT: Duration = Duration::from_secs(15);
const ALICE_PASSWORD: &str = "alice-secret";
const BOB_PASSWORD: &str = "bob-secret";

async fn server_with(
    change: impl FnOnce(&mut mqtt2xmpp::server::limits::ServerLimits),
) -> InProcessServer {
    let server = InProcessServer::start_upload(limits(change)).await;
    server.add_user("alice", ALICE_PASSWORD);
    server.add_user("bob", BOB_PASSWORD);
    server
}

fn http_port(server: &InProcessServer) -> u16 {
    server.http_port.expect("a server with the upload service")
}

/// A JPEG-looking photo of `size` bytes, the same every run.
fn photo(size: usize) -> Vec<u8> {
    let mut image = b"\xff\xd8\xff\xe0JFIF".to_vec();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut rest = vec![0u8; size - image.len()];
    rng.fill_bytes(&mut rest);
    image.extend(rest);
    image
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ----- slixmpp -----------------------------------------------------------------------------------

async fn run_script(
    python: &'static str,
    server: &InProcessServer,
    args: Vec<String>,
) -> Vec<Value> {
    let port = server.port().to_string();
    let ca = server.ca_file().to_string_lossy().into_owned();
    tokio::task::spawn_blocking(move || {
        let (events, _stdout) = run_event_script(
            Command::new(python)
                .arg(SCRIPT)
                .args(&args)
                .args(["--port", &port, "--ca", &ca])
                .args(["--alice-password", ALICE_PASSWORD])
                .args(["--bob-password", BOB_PASSWORD])
                // How aiohttp (in the plugin and for bob's download) trusts the test certificate.
                .env("SSL_CERT_FILE", &ca),
            &format!("{python} upload.py {args:?}"),
            SCRIPT_DEADLINE,
            String::new,
        );
        events
    })
    .await
    .expect("the script's runner does not panic")
}

fn slixmpp_with_upload(python: &str) -> bool {
    python_imports(
        python,
        "slixmpp",
        "install python3-slixmpp, or run .ci/run for the venv",
    ) && python_imports(
        python,
        "aiohttp",
        "install python3-aiohttp (slixmpp's xep_0363 needs it)",
    )
}

async fn a_person_sends_a_photo_to_a_contact(python: &'static str) {
    if !slixmpp_with_upload(python) {
        return;
    }
    let server = server_with(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let image = photo(300_000);
    let path = dir.path().join("holiday.jpg");
    std::fs::write(&path, &image).unwrap();
    let events = run_script(
        python,
        &server,
        vec![
            "share".into(),
            "--file".into(),
            path.to_string_lossy().into_owned(),
        ],
    )
    .await;
    let service = support::peers::event(&events, "service");
    assert_eq!(
        service["jid"], "upload.localhost",
        "found by disco: {service}"
    );
    let uploaded = support::peers::event(&events, "uploaded");
    let url = uploaded["url"].as_str().unwrap();
    let prefix = format!("https://localhost:{}/upload/", http_port(&server));
    assert!(url.starts_with(&prefix), "{url}");
    assert!(url.ends_with("/holiday.jpg"), "{url}");
    let got = support::peers::event(&events, "downloaded");
    assert_eq!(got["status"], 200, "{got}");
    assert_eq!(got["body"], url, "the URL is the body");
    assert_eq!(got["oob"], url, "and the out-of-band URL (XEP-0066)");
    assert_eq!(got["size"], image.len(), "{got}");
    assert_eq!(got["sha256"], sha256_hex(&image), "the same bytes");
    assert_eq!(got["content_type"], "image/jpeg");
    assert_eq!(got["nosniff"], "nosniff");
    // On disk under the data directory, named by the token alone.
    let token = url.trim_start_matches(&prefix).split('/').next().unwrap();
    assert_eq!(
        std::fs::read(server.data_dir.join("uploads").join(token)).unwrap(),
        image
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_sends_a_photo_to_a_contact_with_debian_slixmpp() {
    a_person_sends_a_photo_to_a_contact(DEBIAN_PYTHON).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_sends_a_photo_to_a_contact_with_pypi_slixmpp() {
    a_person_sends_a_photo_to_a_contact(VENV_PYTHON).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slixmpp_is_refused_a_slot_over_the_maximum_and_over_the_quota() {
    if !slixmpp_with_upload(DEBIAN_PYTHON) {
        return;
    }
    let server = server_with(|limits| {
        limits.upload.max_file_size = 1_000_000;
        limits.upload.quota = 2_500_000;
    })
    .await;
    let args = [
        "refusals",
        "--too-large",
        "1000001",
        "--slot-size",
        "1000000",
    ];
    let events = run_script(
        DEBIAN_PYTHON,
        &server,
        args.iter().map(|a| a.to_string()).collect(),
    )
    .await;
    let too_large = support::peers::event(&events, "too_large");
    assert_eq!(too_large["refused"], true, "{too_large}");
    assert_eq!(too_large["condition"], "not-acceptable", "{too_large}");
    assert_eq!(too_large["max_file_size"], "1000000", "{too_large}");
    let quota = support::peers::event(&events, "quota");
    assert_eq!(quota["granted"], 2, "{quota}");
    assert_eq!(quota["condition"], "resource-constraint", "{quota}");
    assert!(
        quota["text"].as_str().unwrap_or_default().contains("quota"),
        "{quota}"
    );
}

// ----- raw HTTPS ---------------------------------------------------------------------------------

/// alice logged in over a raw stream.
async fn alice(server: &InProcessServer) -> Raw {
    Raw::login(
        server.port(),
        server.ca_file(),
        "alice",
        ALICE_PASSWORD,
        "raw",
    )
    .await
}

/// A slot for `filename` of `size` bytes: its URL's path (`/upload/TOKEN/NAME`).
async fn slot(raw: &mut Raw, filename: &str, size: usize, content_type: &str) -> String {
    raw.send(format!(
        "<iq type='get' id='slot' to='upload.localhost'><request xmlns='urn:xmpp:http:upload:0' \
         filename='{filename}' size='{size}' content-type='{content_type}'/></iq>"
    ))
    .await;
    let answer = raw.read_until("</iq>", WAIT).await;
    let start = answer
        .find("<put url='")
        .or_else(|| answer.find("<put url=\""))
        .unwrap_or_else(|| panic!("a slot: {answer}"))
        + "<put url='".len();
    let url = &answer[start..];
    let url = &url[..url.find(['\'', '"']).unwrap()];
    let path = &url[url.find("/upload/").unwrap()..];
    path.to_string()
}

/// Sends `request` over a new HTTPS connection and returns the answer (up to the close).
async fn https(server: &InProcessServer, request: &[u8]) -> String {
    let mut raw = Raw::try_direct_tls(http_port(server), server.ca_file(), &[])
        .await
        .expect("TLS with the upload listener");
    raw.send(request).await;
    raw.read_to_close(WAIT).await.text
}

async fn put(server: &InProcessServer, path: &str, content_type: &str, body: &[u8]) -> String {
    let mut request = format!(
        "PUT {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    https(server, &request).await
}

async fn get(server: &InProcessServer, path: &str) -> String {
    https(
        server,
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
}

fn status(answer: &str) -> &str {
    answer.get(9..12).unwrap_or(answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_refusals_for_size_a_second_put_no_slot_and_paths_outside() {
    let server = server_with(|_| {}).await;
    let mut raw = alice(&server).await;
    let path = slot(&mut raw, "a.txt", 5, "text/plain").await;
    // More than declared: refused before the body is read.
    assert_eq!(
        status(&put(&server, &path, "text/plain", b"123456").await),
        "413"
    );
    assert_eq!(
        status(&put(&server, &path, "text/plain", b"12345").await),
        "201"
    );
    let answer = put(&server, &path, "text/plain", b"abcde").await;
    assert_eq!(status(&answer), "403", "a second PUT: {answer}");
    let answer = get(&server, &path).await;
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("12345"),
        "{answer}"
    );
    let nobody = "/upload/00000000000000000000000000000000/a.txt";
    assert_eq!(
        status(&put(&server, nobody, "text/plain", b"12345").await),
        "403"
    );
    std::fs::write(server.data_dir.join("secret.txt"), "secret").unwrap();
    let token = path.split('/').nth(2).unwrap();
    for outside in [
        "/upload/../secret.txt".to_string(),
        "/upload/../../secret.txt".to_string(),
        "/upload/%2e%2e/secret.txt".to_string(),
        "/upload/%2E%2E%2Fsecret.txt".to_string(),
        format!("/upload/{token}/..%2f..%2fsecret.txt"),
        format!("/upload/{token}/../../secret.txt"),
        "/server.sqlite".to_string(),
        "/upload/..%5c..%5cserver.sqlite".to_string(),
    ] {
        let answer = get(&server, &outside).await;
        assert_eq!(status(&answer), "404", "{outside}: {answer}");
        assert!(
            !answer.contains("secret\n") && !answer.ends_with("secret"),
            "{answer}"
        );
        let answer = put(&server, &outside, "text/plain", b"x").await;
        assert_eq!(status(&answer), "403", "{outside}: {answer}");
    }
}

/// Waits until `path` no longer exists.
async fn until_gone(path: &Path) {
    let deadline = Instant::now() + WAIT;
    while path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} is still there",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn file_of(server: &InProcessServer, path: &str) -> PathBuf {
    server
        .data_dir
        .join("uploads")
        .join(path.split('/').nth(2).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_expire_after_their_lifetime() {
    let server = server_with(|limits| limits.upload.file_ttl = Duration::from_secs(2)).await;
    let mut raw = alice(&server).await;
    let path = slot(&mut raw, "b.bin", 3, "application/octet-stream").await;
    assert_eq!(
        status(&put(&server, &path, "application/octet-stream", b"abc").await),
        "201"
    );
    assert_eq!(status(&get(&server, &path).await), "200");
    until_gone(&file_of(&server, &path)).await;
    assert_eq!(status(&get(&server, &path).await), "404");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_account_deletes_its_files() {
    let server = server_with(|_| {}).await;
    let mut raw = alice(&server).await;
    let path = slot(&mut raw, "c.bin", 3, "application/octet-stream").await;
    assert_eq!(
        status(&put(&server, &path, "application/octet-stream", b"abc").await),
        "201"
    );
    let file = file_of(&server, &path);
    assert!(file.exists());
    mqtt2xmpp::server::admin::del(
        &mqtt2xmpp::server::database_path(&server.data_dir),
        "alice@localhost",
    )
    .unwrap();
    assert!(!file.exists());
    assert_eq!(status(&get(&server, &path).await), "404");
}

// ----- hostile -----------------------------------------------------------------------------------

/// bob's XMPP session still gets its ping answered.
async fn xmpp_still_serves(bob: &mut Raw, id: &str) {
    let answer = bob.ping(id).await;
    assert!(
        answer.contains("type='result'") || answer.contains("type=\"result\""),
        "ping {id}: {answer}"
    );
}

async fn bob(server: &InProcessServer) -> Raw {
    Raw::login(
        server.port(),
        server.ca_file(),
        "bob",
        BOB_PASSWORD,
        "watch",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_slowloris_headers_are_cut_off_and_xmpp_keeps_serving() {
    let server = server_with(|limits| {
        limits.upload.header_timeout = Duration::from_secs(2);
        limits.upload.max_connections = 16;
    })
    .await;
    let mut bob = bob(&server).await;
    // Every connection the listener allows, each dribbling a header byte at a time.
    let mut dribblers = Vec::new();
    for _ in 0..16 {
        let mut raw = Raw::try_direct_tls(http_port(&server), server.ca_file(), &[])
            .await
            .unwrap();
        raw.send(b"PUT /upload/x HTTP/1.1\r\nX-Slow: ").await;
        dribblers.push(raw);
    }
    let started = Instant::now();
    for round in 0..3 {
        for raw in &mut dribblers {
            raw.send(b"a").await;
        }
        xmpp_still_serves(&mut bob, &format!("slow{round}")).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for raw in &mut dribblers {
        let answer = raw.read_to_close(WAIT).await;
        assert!(answer.closed, "the dribbler is cut off: {:?}", answer.text);
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    // And the listener serves again.
    assert_eq!(status(&get(&server, "/upload/x/y").await), "404");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_huge_header_and_10_gb_content_length_are_refused_at_once() {
    let server = server_with(|_| {}).await;
    let mut bob = bob(&server).await;
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: localhost\r\nX-Huge: {}\r\n\r\n",
        "h".repeat(1024 * 1024)
    );
    let answer = https(&server, huge.as_bytes()).await;
    assert_eq!(
        status(&answer),
        "431",
        "{}",
        &answer[..answer.len().min(200)]
    );
    xmpp_still_serves(&mut bob, "huge").await;
    let mut raw = alice(&server).await;
    let path = slot(&mut raw, "d.bin", 10, "application/octet-stream").await;
    let started = Instant::now();
    let answer = https(
        &server,
        format!(
            "PUT {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: 10000000000\r\nExpect: 100-continue\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(status(&answer), "413", "{answer}");
    assert!(
        !answer.contains("100 Continue"),
        "no body is asked for: {answer}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    xmpp_still_serves(&mut bob, "10gb").await;
    // The slot is still good for its real size.
    assert_eq!(
        status(&put(&server, &path, "application/octet-stream", b"0123456789").await),
        "201"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_parallel_put_flood_is_refused_and_xmpp_keeps_serving() {
    let server = server_with(|limits| limits.upload.max_connections = 64).await;
    let mut bob = bob(&server).await;
    let port = http_port(&server);
    let ca = server.ca_file().to_path_buf();
    let mut flood = tokio::task::JoinSet::new();
    for i in 0..200 {
        let ca = ca.clone();
        flood.spawn(async move {
            let mut raw = match Raw::try_direct_tls(port, &ca, &[]).await {
                Ok(raw) => raw,
                Err(_) => return String::from("refused"),
            };
            let body = vec![b'x'; 64 * 1024];
            let mut request = format!(
                "PUT /upload/{i:032x}/f HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n",
                body.len()
            )
            .into_bytes();
            request.extend(body);
            raw.send(&request).await;
            raw.read_to_close(WAIT).await.text
        });
    }
    xmpp_still_serves(&mut bob, "flood").await;
    while let Some(answer) = flood.join_next().await {
        let answer = answer.unwrap();
        assert!(
            answer == "refused" || answer.is_empty() || status(&answer) == "403",
            "{}",
            &answer[..answer.len().min(200)]
        );
    }
    xmpp_still_serves(&mut bob, "after").await;
    assert!(std::fs::read_dir(server.data_dir.join("uploads"))
        .unwrap()
        .next()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_random_paths_and_methods_get_defined_answers() {
    let server = server_with(|_| {}).await;
    let mut bob = bob(&server).await;
    let mut raw = alice(&server).await;
    let path = slot(&mut raw, "e.txt", 3, "text/plain").await;
    assert_eq!(
        status(&put(&server, &path, "text/plain", b"abc").await),
        "201"
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(16);
    let methods = [
        "GET", "PUT", "POST", "DELETE", "HEAD", "OPTIONS", "PATCH", "TRACE", "CONNECT", "BREW",
    ];
    let pieces = [
        "/upload/",
        "..",
        "%2e",
        "%2f",
        "%00",
        "/",
        "a",
        &path[8..],
        "?",
        "#",
        "%",
        "\\",
        "~",
        "%ff",
    ];
    for round in 0..120 {
        let method = methods[rng.random_range(0..methods.len())];
        let mut target = String::from("/");
        for _ in 0..rng.random_range(0..6) {
            target.push_str(pieces[rng.random_range(0..pieces.len())]);
        }
        let request = format!(
            "{method} {target} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let answer = https(&server, request.as_bytes()).await;
        let code = status(&answer);
        // A defined refusal, or the one file there is (an encoding of its own path).
        assert!(
            ["400", "403", "404", "405", "411", "413", "415", "204", "501"].contains(&code)
                || (code == "200" && answer.ends_with("abc")),
            "{request:?} → {answer}"
        );
        if round % 40 == 0 {
            xmpp_still_serves(&mut bob, &format!("fuzz{round}")).await;
        }
    }
    xmpp_still_serves(&mut bob, "fuzzed").await;
}
