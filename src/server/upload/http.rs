//! The HTTP side of the upload service: one hyper service function, [`handle`], and the
//! connection it runs on, [`serve_connection`]. Generic over the request body and the stream,
//! so the tests drive both in-process (a `Full` body; a `tokio::io::duplex` pipe).
//!
//! | request | answer |
//! |---|---|
//! | `PUT /upload/TOKEN/NAME` on an unused slot, `Content-Length` = the declared size, the declared `Content-Type` | 201, the file is stored |
//! | `PUT` without `Content-Length` | 411 |
//! | `PUT` with `Content-Length` over the largest file, or not the declared size | 413, before reading the body |
//! | `PUT` on an unknown, used or expired slot, or any other path | 403 |
//! | `PUT` with another `Content-Type` than declared | 415 |
//! | `PUT` whose body stops before its length, or pauses too long | 400 / 408, the slot is used up |
//! | `GET`/`HEAD` of a stored file | 200 with its type, length, `Content-Disposition`, `X-Content-Type-Options: nosniff` |
//! | `GET`/`HEAD` of anything else | 404 |
//! | `OPTIONS` | 204 with the CORS headers web clients need |
//! | any other method | 405 with `Allow` |

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Bytes, Frame};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use percent_encoding::{percent_decode_str, utf8_percent_encode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::{ms, Uploads};
use crate::server::hub::upload_names::PATH_SEGMENT;
use crate::server::store::UploadState;

/// The body of every answer.
pub(crate) type Body = BoxBody<Bytes, std::io::Error>;

const ALLOW: &str = "GET, HEAD, PUT, OPTIONS";

/// The token and the (decoded) file name of `/upload/TOKEN/NAME`, if the path has that shape
/// and the token is 32 lowercase hex digits; anything else is no file of ours.
fn parse_path(path: &str) -> Option<(&str, String)> {
    let rest = path.strip_prefix("/upload/")?;
    let (token, name) = rest.split_once('/')?;
    if token.len() != 32
        || !token
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return None;
    }
    if name.is_empty() || name.contains('/') {
        return None;
    }
    let name = percent_decode_str(name).decode_utf8().ok()?.into_owned();
    Some((token, name))
}

fn text(status: StatusCode, message: &str) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from(format!("{message}\n")))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Adds the headers every answer carries: CORS for web clients (XEP-0363 §6 leaves it to the
/// service; a web client cannot upload without it), and no MIME sniffing.
fn common_headers(mut response: Response<Body>) -> Response<Body> {
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Answers one request (see the module docs).
pub(crate) async fn handle<B>(uploads: &Arc<Uploads>, request: Request<B>) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: std::fmt::Display,
{
    let response = match *request.method() {
        Method::PUT => put(uploads, request).await,
        Method::GET => get(uploads, request.uri().path(), false).await,
        Method::HEAD => get(uploads, request.uri().path(), true).await,
        Method::OPTIONS => {
            let mut response = text(StatusCode::NO_CONTENT, "");
            *response.body_mut() = Empty::new().map_err(|never| match never {}).boxed();
            let headers = response.headers_mut();
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static(ALLOW),
            );
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("Content-Type"),
            );
            headers.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("86400"),
            );
            response
        }
        _ => {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(ALLOW));
            response
        }
    };
    common_headers(response)
}

/// The media type of a `Content-Type` header, without parameters, lowercase.
fn media_type(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

async fn put<B>(uploads: &Arc<Uploads>, request: Request<B>) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: std::fmt::Display,
{
    let Some((token, name)) = parse_path(request.uri().path()) else {
        return text(StatusCode::FORBIDDEN, "no upload slot at this address");
    };
    let token = token.to_string();
    let Some(length) = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
    else {
        return text(StatusCode::LENGTH_REQUIRED, "Content-Length is required");
    };
    let limits = &uploads.limits;
    if length > limits.max_file_size {
        return text(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "the largest file accepted is {} bytes",
                limits.max_file_size
            ),
        );
    }
    let lookup = token.clone();
    let row = match uploads
        .with_store(move |store| store.upload_row(&lookup))
        .await
    {
        Ok(row) => row,
        Err(error) => {
            tracing::error!("upload slot lookup failed: {error}");
            return text(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
        }
    };
    let now = (uploads.now)();
    let Some(row) = row.filter(|row| {
        row.state == UploadState::Slot
            && row.filename == name
            && row.created_ms > now.saturating_sub(ms(limits.slot_ttl))
    }) else {
        return text(
            StatusCode::FORBIDDEN,
            "no unused upload slot at this address",
        );
    };
    if length != row.size {
        return text(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("this slot is for exactly {} bytes", row.size),
        );
    }
    if let Some(declared) = &row.content_type {
        let sent = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(media_type);
        if sent.as_deref() != Some(declared.to_ascii_lowercase().as_str()) {
            return text(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &format!("this slot is for Content-Type {declared}"),
            );
        }
    }
    let claim = token.clone();
    let slot_ttl = ms(limits.slot_ttl);
    match uploads
        .with_store(move |store| store.upload_claim(&claim, now, slot_ttl))
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            return text(
                StatusCode::FORBIDDEN,
                "no unused upload slot at this address",
            )
        }
        Err(error) => {
            tracing::error!("upload slot claim failed: {error}");
            return text(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
        }
    }
    let outcome = receive(uploads, &token, row.size, request.into_body()).await;
    let forget = |uploads: &Arc<Uploads>, token: String| {
        let uploads = uploads.clone();
        async move {
            if let Err(error) = uploads
                .with_store(move |store| store.upload_forget(&token))
                .await
            {
                tracing::error!("cannot forget a failed upload: {error}");
            }
        }
    };
    match outcome {
        Ok(()) => {
            let stored = token.clone();
            let now = (uploads.now)();
            match uploads
                .with_store(move |store| store.upload_stored(&stored, now))
                .await
            {
                Ok(true) => {
                    tracing::debug!(owner = row.owner, size = row.size, "file uploaded");
                    text(StatusCode::CREATED, "stored")
                }
                // Deleted meanwhile (the account went).
                Ok(false) => {
                    forget(uploads, token).await;
                    text(StatusCode::FORBIDDEN, "the upload slot is gone")
                }
                Err(error) => {
                    tracing::error!("cannot record an upload: {error}");
                    forget(uploads, token).await;
                    text(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
                }
            }
        }
        Err((status, message)) => {
            forget(uploads, token).await;
            text(status, message)
        }
    }
}

/// Streams `body` to `TOKEN.part`, counting, then renames it `TOKEN`.
async fn receive<B>(
    uploads: &Arc<Uploads>,
    token: &str,
    size: u64,
    mut body: B,
) -> Result<(), (StatusCode, &'static str)>
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: std::fmt::Display,
{
    let part = uploads.dir.join(format!("{token}.part"));
    let internal = |error: std::io::Error| {
        tracing::error!("cannot write an uploaded file: {error}");
        (StatusCode::INTERNAL_SERVER_ERROR, "cannot store the file")
    };
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(&part).await.map_err(internal)?;
    let mut received: u64 = 0;
    // An idle limit between reads, and a whole-body deadline at 16 KiB/s, so that a client
    // trickling a byte now and then cannot hold a connection for hours.
    let idle = uploads.limits.body_timeout;
    let deadline = tokio::time::Instant::now() + idle + Duration::from_secs(size / 16_384);
    loop {
        let wait = (tokio::time::Instant::now() + idle).min(deadline);
        let frame = match tokio::time::timeout_at(wait, body.frame()).await {
            Err(_) => return Err((StatusCode::REQUEST_TIMEOUT, "the body stalled")),
            Ok(None) => break,
            Ok(Some(Err(error))) => {
                tracing::debug!("upload body failed: {error}");
                return Err((StatusCode::BAD_REQUEST, "the body was cut off"));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        received = received.saturating_add(data.len() as u64);
        if received > size {
            return Err((StatusCode::PAYLOAD_TOO_LARGE, "more bytes than declared"));
        }
        file.write_all(&data).await.map_err(internal)?;
    }
    if received != size {
        return Err((StatusCode::BAD_REQUEST, "fewer bytes than declared"));
    }
    file.flush().await.map_err(internal)?;
    drop(file);
    tokio::fs::rename(&part, uploads.dir.join(token))
        .await
        .map_err(internal)?;
    Ok(())
}

async fn get(uploads: &Arc<Uploads>, path: &str, head: bool) -> Response<Body> {
    let not_found = || text(StatusCode::NOT_FOUND, "no such file");
    let Some((token, name)) = parse_path(path) else {
        return not_found();
    };
    let lookup = token.to_string();
    let row = match uploads
        .with_store(move |store| store.upload_row(&lookup))
        .await
    {
        Ok(Some(row)) if row.state == UploadState::Stored && row.filename == name => row,
        Ok(_) => return not_found(),
        Err(error) => {
            tracing::error!("upload lookup failed: {error}");
            return text(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
        }
    };
    let file = match tokio::fs::File::open(uploads.dir.join(&row.token)).await {
        Ok(file) => file,
        Err(_) => return not_found(),
    };
    let length = match file.metadata().await {
        Ok(meta) => meta.len(),
        Err(_) => return not_found(),
    };
    let body: Body = if head {
        Empty::new().map_err(|never| match never {}).boxed()
    } else {
        file_body(file)
    };
    let mut response = Response::new(body);
    let content_type = row
        .content_type
        .clone()
        .unwrap_or_else(|| "application/octet-stream".into());
    // Images, sound and video are shown in place; anything else (HTML above all) is a
    // download, and sandboxed in case a browser renders it anyway.
    let shown = ["image/", "audio/", "video/"]
        .iter()
        .any(|prefix| content_type.starts_with(prefix));
    let disposition = format!(
        "{}; filename*=UTF-8''{}",
        if shown { "inline" } else { "attachment" },
        utf8_percent_encode(&row.filename, PATH_SEGMENT)
    );
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&content_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=86400, immutable"),
    );
    response
}

/// The bytes of `file`, read 64 KiB at a time as the client takes them.
fn file_body(file: tokio::fs::File) -> Body {
    let chunks = futures::stream::unfold(file, |mut file| async move {
        let mut buffer = vec![0u8; 64 * 1024];
        match file.read(&mut buffer).await {
            Ok(0) => None,
            Ok(n) => {
                buffer.truncate(n);
                Some((Ok(Frame::data(Bytes::from(buffer))), file))
            }
            Err(error) => Some((Err(error), file)),
        }
    });
    StreamBody::new(chunks).boxed()
}

/// Serves HTTP/1.1 on `io` (a TLS stream, or a pipe in the tests) until the client closes,
/// a deadline passes, or `shutdown` (then the request under way may finish, for 3 s).
pub(crate) async fn serve_connection<I>(io: I, uploads: Arc<Uploads>, shutdown: CancellationToken)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = uploads.limits.clone();
    let service = hyper::service::service_fn(move |request| {
        let uploads = uploads.clone();
        async move { Ok::<_, Infallible>(handle(&uploads, request).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // hyper's smallest buffer is 8 KiB; a longer head gets 431.
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    // hyper bounds the wait for a request's head, not the writing of an answer: a client that
    // never reads (pipelined requests, a download it does not take) would hold its connection
    // for ever. Each write must make progress within the body deadline.
    let mut io = tokio_io_timeout::TimeoutStream::new(io);
    io.set_write_timeout(Some(limits.body_timeout));
    let connection = builder.serve_connection(TokioIo::new(Box::pin(io)), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!("HTTP connection ended: {error}");
            }
        }
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(3), connection).await;
        }
    }
}

#[cfg(test)]
mod tests;
