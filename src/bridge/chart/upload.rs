//! The bot's HTTP File Upload client (XEP-0363): which service to use, and the PUT.
//!
//! Discovery (§2): disco#items of the bot's own domain, then disco#info of each item; the first
//! that lists the feature `urn:xmpp:http:upload:0` is the service, and its
//! `max-file-size` (a data form of that `FORM_TYPE`, §2) bounds what the bot uploads. A slot
//! (§4) is an IQ through the XMPP stream; the PUT goes over HTTPS with hyper's HTTP/1 client
//! connection on a tokio-rustls stream configured as the bot's XMPP connection (the same trust
//! roots and `--xmpp-ca`), so there is one TLS stack and one trust decision. Only `https` URLs
//! are used: the upload carries what the contact sees.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio_xmpp::jid::Jid;
use tokio_xmpp::parsers::disco::DiscoInfoResult;
use tokio_xmpp::parsers::http_upload::{Header, SlotResult};
use tokio_xmpp::parsers::ns;

/// How long the whole PUT (connect, TLS, request, response) may take.
pub const PUT_TIMEOUT: Duration = Duration::from_secs(30);

/// Most bytes of an error response read (for the log line).
const ERROR_BODY: usize = 512;

/// The upload service found on the bot's domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Its JID, where slot requests go.
    pub jid: Jid,
    /// The largest file it takes, if it says (§2).
    pub max_size: Option<u64>,
}

/// Whether `info` is an upload service's (the feature of §2), and its `max-file-size` if it
/// gives one: `None` when it is not one, `Some(None)` when it sets no limit.
pub fn upload_feature(info: &DiscoInfoResult) -> Option<Option<u64>> {
    if !info.features.iter().any(|f| f == ns::HTTP_UPLOAD) {
        return None;
    }
    let max = info
        .extensions
        .iter()
        .filter(|form| form.form_type() == Some(ns::HTTP_UPLOAD))
        .flat_map(|form| form.fields.iter())
        .filter(|field| field.var.as_deref() == Some("max-file-size"))
        .find_map(|field| {
            field
                .values
                .first()
                .and_then(|v| v.trim().parse::<u64>().ok())
        });
    Some(max)
}

/// Why an upload failed.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The PUT URL is not an `https` URL with a host.
    #[error("the upload service gave an unusable PUT URL: {0}")]
    Url(String),
    /// A header of the slot cannot be sent.
    #[error("the upload service asked for a header that cannot be sent")]
    Header,
    /// Connecting or the TLS handshake failed.
    #[error("cannot reach the upload URL: {0}")]
    Connect(#[from] std::io::Error),
    /// HTTP failed.
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    /// The request could not be built.
    #[error("HTTP request: {0}")]
    Request(#[from] hyper::http::Error),
    /// The server refused the PUT.
    #[error("the upload service answered {status}: {body}")]
    Status {
        /// The status code.
        status: u16,
        /// The start of the response body.
        body: String,
    },
    /// It took longer than [`PUT_TIMEOUT`].
    #[error("the upload took longer than {PUT_TIMEOUT:?}")]
    Timeout,
}

/// Puts `body` (`content_type`) to the slot's PUT URL with the slot's headers (§4.1: only
/// `Authorization`, `Cookie` and `Expires`, which the parser enforces).
pub async fn put(
    tls: Arc<ClientConfig>,
    slot: &SlotResult,
    body: Vec<u8>,
    content_type: &str,
) -> Result<(), UploadError> {
    tokio::time::timeout(
        PUT_TIMEOUT,
        put_now(tls, &slot.put.url, &slot.put.headers, body, content_type),
    )
    .await
    .map_err(|_| UploadError::Timeout)?
}

async fn put_now(
    tls: Arc<ClientConfig>,
    url: &str,
    headers: &[Header],
    body: Vec<u8>,
    content_type: &str,
) -> Result<(), UploadError> {
    let uri: Uri = url.parse().map_err(|_| UploadError::Url(url.to_string()))?;
    if uri.scheme_str() != Some("https") {
        return Err(UploadError::Url(url.to_string()));
    }
    let (Some(host), Some(authority)) = (uri.host(), uri.authority()) else {
        return Err(UploadError::Url(url.to_string()));
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let authority = authority.as_str().to_string();
    let port = uri.port_u16().unwrap_or(443);
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let server_name =
        ServerName::try_from(host.clone()).map_err(|_| UploadError::Url(url.to_string()))?;

    let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(server_name, tcp)
        .await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // The connection is driven beside the request and ends with it.
    let connection = tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "upload connection ended");
        }
    });

    let mut request = Request::put(path)
        .header(HOST, authority)
        .header(CONTENT_TYPE, content_type)
        .header(CONTENT_LENGTH, body.len());
    for header in headers {
        let value = HeaderValue::from_str(&header.value).map_err(|_| UploadError::Header)?;
        request = request.header(HeaderName::from_static(lower(&header.name)), value);
    }
    let request = request.body(Full::new(Bytes::from(body)))?;
    let response = sender.send_request(request).await;
    let outcome = match response {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => {
            let status = response.status().as_u16();
            let mut text = Vec::new();
            let mut body = response.into_body();
            while let Some(Ok(frame)) = body.frame().await {
                if let Some(data) = frame.data_ref() {
                    text.extend_from_slice(data);
                }
                if text.len() >= ERROR_BODY {
                    break;
                }
            }
            text.truncate(ERROR_BODY);
            Err(UploadError::Status {
                status,
                body: String::from_utf8_lossy(&text).trim().to_string(),
            })
        }
        Err(error) => Err(error.into()),
    };
    drop(sender);
    connection.abort();
    outcome
}

fn lower(name: &tokio_xmpp::parsers::http_upload::HeaderName) -> &'static str {
    use tokio_xmpp::parsers::http_upload::HeaderName as Name;
    match name {
        Name::Authorization => "authorization",
        Name::Cookie => "cookie",
        Name::Expires => "expires",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_xmpp::minidom::Element;

    fn info(xml: &str) -> DiscoInfoResult {
        DiscoInfoResult::try_from(xml.parse::<Element>().unwrap()).unwrap()
    }

    #[test]
    fn an_upload_service_is_known_by_its_feature_and_gives_its_size_limit() {
        // XEP-0363 §2, Example 2.
        let service = info(
            "<query xmlns='http://jabber.org/protocol/disco#info'>\
             <identity category='store' type='file' name='HTTP File Upload'/>\
             <feature var='urn:xmpp:http:upload:0'/>\
             <x type='result' xmlns='jabber:x:data'>\
             <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:http:upload:0</value></field>\
             <field var='max-file-size'><value>5242880</value></field></x></query>",
        );
        assert_eq!(upload_feature(&service), Some(Some(5_242_880)));
        let unlimited = info(
            "<query xmlns='http://jabber.org/protocol/disco#info'>\
             <identity category='store' type='file'/><feature var='urn:xmpp:http:upload:0'/></query>",
        );
        assert_eq!(upload_feature(&unlimited), Some(None));
        let muc = info(
            "<query xmlns='http://jabber.org/protocol/disco#info'>\
             <identity category='conference' type='text'/>\
             <feature var='http://jabber.org/protocol/muc'/></query>",
        );
        assert_eq!(upload_feature(&muc), None);
    }

    #[tokio::test]
    async fn only_https_urls_are_used() {
        let tls = crate::tls::client_config(None).unwrap();
        for url in [
            "http://localhost/x",
            "ftp://h/x",
            "not a url",
            "https:///nohost",
        ] {
            let slot = SlotResult {
                put: tokio_xmpp::parsers::http_upload::Put {
                    url: url.into(),
                    headers: Vec::new(),
                },
                get: tokio_xmpp::parsers::http_upload::Get { url: url.into() },
            };
            let error = put(tls.clone(), &slot, vec![1], "image/png")
                .await
                .unwrap_err();
            assert!(matches!(error, UploadError::Url(_)), "{url}: {error}");
        }
    }
}
