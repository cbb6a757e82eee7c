//! The HTTP side driven in-process: requests to [`handle`] with in-memory bodies, and whole
//! connections over a pipe for the listener's bounds. The clock is the test's.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::super::{UploadLimits, Uploads};
use super::{handle, serve_connection};
use crate::server::store::{NewSlot, Store};

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

struct Fixture {
    uploads: Arc<Uploads>,
    clock: Arc<AtomicI64>,
    _dir: tempfile::TempDir,
}

fn fixture(limits: UploadLimits) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("server.sqlite");
    let store = Store::open(&db).unwrap();
    let keys = crate::server::store::ScramKeys {
        salt: vec![1; 16],
        iterations: 4096,
        stored_key: vec![2; 20],
        server_key: vec![3; 20],
    };
    store.create_account("alice", &keys, &keys).unwrap();
    let clock = Arc::new(AtomicI64::new(1_000_000));
    let now = clock.clone();
    let uploads = Uploads::new(
        store,
        dir.path().join("uploads"),
        limits,
        Arc::new(move || now.load(Ordering::SeqCst)),
    )
    .unwrap();
    Fixture {
        uploads: Arc::new(uploads),
        clock,
        _dir: dir,
    }
}

impl Fixture {
    fn slot(&self, token: &str, size: u64, content_type: Option<&str>) {
        let store = self.uploads.store.lock().unwrap();
        let slot = NewSlot {
            token,
            owner: "alice",
            filename: "chart 1.png",
            size,
            content_type,
        };
        store
            .upload_create_slot(&slot, self.clock.load(Ordering::SeqCst), 300_000, u64::MAX)
            .unwrap()
            .unwrap();
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (StatusCode, hyper::HeaderMap, Vec<u8>) {
        let mut request = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(Bytes::from(body.to_vec()))).unwrap();
        let response = handle(&self.uploads, request).await;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        (status, headers, body)
    }

    async fn put(&self, token: &str, body: &[u8], content_type: &str) -> StatusCode {
        let length = body.len().to_string();
        self.send(
            "PUT",
            &format!("/upload/{token}/chart%201.png"),
            &[("content-length", &length), ("content-type", content_type)],
            body,
        )
        .await
        .0
    }

    fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.uploads.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

#[tokio::test]
async fn a_file_put_once_is_served_with_its_type_length_and_safe_headers() {
    let f = fixture(UploadLimits::default());
    f.slot(TOKEN, 5, Some("image/png"));
    assert_eq!(
        f.put(TOKEN, b"\x89PNG!", "image/png").await,
        StatusCode::CREATED
    );
    let (status, headers, body) = f
        .send("GET", &format!("/upload/{TOKEN}/chart%201.png"), &[], b"")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"\x89PNG!");
    assert_eq!(headers["content-type"], "image/png");
    assert_eq!(headers["content-length"], "5");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(
        headers["content-disposition"],
        "inline; filename*=UTF-8''chart%201.png"
    );
    let (status, headers, body) = f
        .send("HEAD", &format!("/upload/{TOKEN}/chart%201.png"), &[], b"")
        .await;
    assert_eq!((status, body.len()), (StatusCode::OK, 0));
    assert_eq!(headers["content-length"], "5");
    assert_eq!(f.files(), [TOKEN]);
}

#[tokio::test]
async fn a_second_put_on_one_slot_is_forbidden_and_the_first_file_stays() {
    let f = fixture(UploadLimits::default());
    f.slot(TOKEN, 3, None);
    assert_eq!(
        f.put(TOKEN, b"one", "text/plain").await,
        StatusCode::CREATED
    );
    assert_eq!(
        f.put(TOKEN, b"two", "text/plain").await,
        StatusCode::FORBIDDEN
    );
    let (_, headers, body) = f
        .send("GET", &format!("/upload/{TOKEN}/chart%201.png"), &[], b"")
        .await;
    assert_eq!(body, b"one");
    // No declared type: served as bytes, and as a download.
    assert_eq!(headers["content-type"], "application/octet-stream");
    assert!(headers["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("attachment"));
}

#[tokio::test]
async fn puts_without_a_slot_or_of_another_size_or_type_are_refused() {
    let f = fixture(UploadLimits {
        max_file_size: 100,
        ..Default::default()
    });
    assert_eq!(
        f.put(TOKEN, b"abc", "text/plain").await,
        StatusCode::FORBIDDEN,
        "no slot"
    );
    f.slot(TOKEN, 3, Some("text/plain"));
    assert_eq!(
        f.put(TOKEN, b"abcd", "text/plain").await,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(
        f.put(TOKEN, b"ab", "text/plain").await,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(
        f.put(TOKEN, b"abc", "text/html").await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    // Over the maximum: refused before the slot is even looked up.
    let (status, _, _) = f
        .send(
            "PUT",
            &format!("/upload/{TOKEN}/chart%201.png"),
            &[("content-length", "10000000000")],
            b"",
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let (status, _, _) = f
        .send(
            "PUT",
            &format!("/upload/{TOKEN}/other.png"),
            &[("content-length", "3")],
            b"abc",
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "another name");
    let (status, _, _) = f
        .send("PUT", &format!("/upload/{TOKEN}/chart%201.png"), &[], b"")
        .await;
    assert_eq!(status, StatusCode::LENGTH_REQUIRED);
    // None of those used the slot up.
    assert_eq!(
        f.put(TOKEN, b"abc", "text/plain; charset=utf-8").await,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn an_unused_slot_expires() {
    let f = fixture(UploadLimits::default());
    f.slot(TOKEN, 3, None);
    f.clock.fetch_add(300_000, Ordering::SeqCst);
    assert_eq!(
        f.put(TOKEN, b"abc", "text/plain").await,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn paths_outside_the_uploads_are_unknown_whatever_their_encoding() {
    let f = fixture(UploadLimits::default());
    f.slot(TOKEN, 3, None);
    assert_eq!(f.put(TOKEN, b"abc", "x/y").await, StatusCode::CREATED);
    std::fs::write(f.uploads.dir.parent().unwrap().join("secret"), b"secret").unwrap();
    for path in [
        "/upload/../secret",
        "/upload/%2e%2e/secret",
        "/upload/..%2fsecret/x",
        &format!("/upload/{TOKEN}/..%2F..%2Fsecret"),
        &format!("/upload/{TOKEN}/../../secret"),
        &format!("/upload/{TOKEN}/chart%201.png/.."),
        &format!("/upload/{}/chart%201.png", TOKEN.to_uppercase()),
        "/upload/",
        "/",
        "/server.sqlite",
    ] {
        let (status, _, body) = f.send("GET", path, &[], b"").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert!(!body.starts_with(b"secret"));
        let (status, _, _) = f
            .send("PUT", path, &[("content-length", "3")], b"abc")
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
    }
}

#[tokio::test]
async fn other_methods_get_405_and_options_the_cors_headers() {
    let f = fixture(UploadLimits::default());
    let (status, headers, _) = f
        .send("DELETE", &format!("/upload/{TOKEN}/a"), &[], b"")
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers["allow"], "GET, HEAD, PUT, OPTIONS");
    let (status, headers, _) = f
        .send("OPTIONS", &format!("/upload/{TOKEN}/a"), &[], b"")
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(headers["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn the_sweep_deletes_expired_files_and_at_start_the_strays() {
    let f = fixture(UploadLimits {
        file_ttl: Duration::from_secs(60),
        ..Default::default()
    });
    f.slot(TOKEN, 3, None);
    assert_eq!(f.put(TOKEN, b"abc", "x/y").await, StatusCode::CREATED);
    std::fs::write(
        f.uploads.dir.join("ffffffffffffffffffffffffffffffff"),
        b"stray",
    )
    .unwrap();
    std::fs::write(f.uploads.dir.join(format!("{TOKEN}.part")), b"half").unwrap();
    assert_eq!(f.uploads.sweep(true).unwrap(), 0);
    assert_eq!(
        f.files(),
        [TOKEN],
        "strays and parts go at start, the file stays"
    );
    f.clock.fetch_add(59_000, Ordering::SeqCst);
    assert_eq!(f.uploads.sweep(false).unwrap(), 0);
    f.clock.fetch_add(1_000, Ordering::SeqCst);
    assert_eq!(f.uploads.sweep(false).unwrap(), 1);
    assert!(f.files().is_empty());
    let (status, _, _) = f
        .send("GET", &format!("/upload/{TOKEN}/chart%201.png"), &[], b"")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// A connection over a pipe; returns the client's end.
fn connect(f: &Fixture) -> tokio::io::DuplexStream {
    let (client, server) = tokio::io::duplex(64 * 1024);
    tokio::spawn(serve_connection(
        server,
        f.uploads.clone(),
        CancellationToken::new(),
    ));
    client
}

async fn read_all(client: &mut tokio::io::DuplexStream) -> String {
    let mut answer = Vec::new();
    let _ = client.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(start_paused = true)]
async fn headers_dribbled_slower_than_the_deadline_close_the_connection() {
    let f = fixture(UploadLimits::default());
    let mut client = connect(&f);
    client
        .write_all(b"GET /upload/x HTTP/1.1\r\nHost: a\r\n")
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let answer = read_all(&mut client).await;
    assert!(started.elapsed() >= Duration::from_secs(10));
    assert!(started.elapsed() < Duration::from_secs(12));
    assert!(!answer.contains("200"), "{answer}");
}

#[tokio::test]
async fn a_huge_header_gets_431() {
    let f = fixture(UploadLimits::default());
    let mut client = connect(&f);
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let _ = client.write_all(huge.as_bytes()).await;
    let answer = read_all(&mut client).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
}

#[tokio::test(start_paused = true)]
async fn a_body_that_stalls_is_cut_off_and_uses_the_slot_up() {
    let f = fixture(UploadLimits::default());
    f.slot(TOKEN, 10, None);
    let mut client = connect(&f);
    client
        .write_all(format!("PUT /upload/{TOKEN}/chart%201.png HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc").as_bytes())
        .await
        .unwrap();
    let answer = read_all(&mut client).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(f.files().is_empty(), "{:?}", f.files());
    assert!(f
        .uploads
        .store
        .lock()
        .unwrap()
        .upload_row(TOKEN)
        .unwrap()
        .is_none());
}

#[tokio::test(start_paused = true)]
async fn a_body_trickled_byte_by_byte_meets_the_whole_body_deadline() {
    let f = fixture(UploadLimits::default());
    // 64 KiB at 16 KiB/s: 4 s, plus the 30 s idle limit.
    f.slot(TOKEN, 65_536, None);
    let mut client = connect(&f);
    client
        .write_all(
            format!(
                "PUT /upload/{TOKEN}/chart%201.png HTTP/1.1\r\nHost: a\r\nContent-Length: 65536\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    // A byte every 20 s: never idle for 30 s, yet far slower than the deadline allows.
    let answer = loop {
        let mut buffer = [0u8; 256];
        tokio::select! {
            read = client.read(&mut buffer) => {
                break String::from_utf8_lossy(&buffer[..read.unwrap_or(0)]).into_owned();
            }
            () = tokio::time::sleep(Duration::from_secs(20)) => {
                let _ = client.write_all(b"x").await;
            }
        }
    };
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        started.elapsed() <= Duration::from_secs(35),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn an_idle_keep_alive_connection_is_closed() {
    let f = fixture(UploadLimits::default());
    let mut client = connect(&f);
    client
        .write_all(b"GET /nothing HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let answer = read_all(&mut client).await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(
        started.elapsed() <= Duration::from_secs(11),
        "{:?}",
        started.elapsed()
    );
}

/// A client that sends requests and never reads the answers (pipelined 404s, or a file it
/// does not download) holds its connection only as long as a write may stall: the body
/// deadline, then the server lets the connection go, so such clients cannot keep every
/// connection of the listener.
#[tokio::test(start_paused = true)]
async fn a_client_that_never_reads_the_answers_is_let_go() {
    let f = fixture(UploadLimits::default());
    let (mut client, server) = tokio::io::duplex(1024);
    let served = tokio::spawn(serve_connection(
        server,
        f.uploads.clone(),
        CancellationToken::new(),
    ));
    // Enough 404s to fill the pipe many times over; the writer blocks once it is full.
    let requests = b"GET /nothing HTTP/1.1\r\nHost: a\r\n\r\n".repeat(500);
    tokio::spawn(async move {
        let _ = client.write_all(&requests).await;
        // Keep the client's end open, unread, until the test ends.
        std::future::pending::<()>().await;
    });
    let started = tokio::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(120), served)
        .await
        .expect("the connection is let go")
        .unwrap();
    assert!(
        started.elapsed() <= UploadLimits::default().body_timeout + Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}
