//! HTTP File Upload (XEP-0363): the slot service at `upload.DOMAIN`, served inside the hub.
//!
//! The hub only hands out slots; the files travel over the server's HTTPS listener
//! (`crate::server::upload`), which looks the slots up in the same store. The service exists
//! only when that listener does ([`Hub::upload_start`]): without one it is not listed and
//! stanzas to it bounce like those to any unknown domain.
//!
//! A slot request (§4) is checked here, in this order, each refusal with the error §5 names:
//!
//! 1. the file name: non-empty, at most [`MAX_FILENAME_BYTES`], no `/`, `\` or control
//!    characters, not `.` or `..` → `not-acceptable` (it only ever names the file in the URL
//!    and in `Content-Disposition`; the file on disk is named by its token);
//! 2. the size: zero → `not-acceptable`; above the maximum → `not-acceptable` with
//!    `<file-too-large><max-file-size>…</max-file-size></file-too-large>` (§5);
//! 3. the content type, if given: `type/subtype` of token characters → else `not-acceptable`;
//! 4. the account's quota, stored files, uploads under way and unexpired slots together →
//!    `resource-constraint` with a text saying how much is in use (§5).
//!
//! The slot is then a row of the store with a random token of 128 bits, and its PUT and GET
//! URLs are one and the same: `BASE/upload/TOKEN/NAME` (NAME percent-encoded).

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rand::RngCore;
use tokio_xmpp::jid::{BareJid, FullJid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::data_forms::{DataForm, DataFormType, Field};
use tokio_xmpp::parsers::disco::{DiscoInfoResult, DiscoItemsResult, Identity};
use tokio_xmpp::parsers::http_upload::{Get, Put, SlotRequest, SlotResult};
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::MessageType;
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};
use tokio_xmpp::Stanza;

use super::mam::now_ms;
use super::{bounce, node, Delivery, Hub};
use crate::server::store::NewSlot;
use crate::server::upload::UploadLimits;

/// Longest file name accepted, in bytes (a file system's usual limit).
pub(crate) const MAX_FILENAME_BYTES: usize = 255;

/// The upload service's state in the hub.
#[derive(Debug, Default)]
pub(super) struct UploadService {
    /// The service's JID (`upload.DOMAIN`), when the HTTPS listener runs.
    service: Option<BareJid>,
    /// Where the URLs point: `https://HOST:PORT` without a trailing slash.
    base_url: String,
    limits: UploadLimits,
}

/// Characters escaped in the file name part of a URL: everything but unreserved ones
/// (RFC 3986 §2.3).
pub(crate) const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The path of the file of `token` named `filename`: `/upload/TOKEN/NAME`.
pub(crate) fn file_path(token: &str, filename: &str) -> String {
    format!(
        "/upload/{token}/{}",
        utf8_percent_encode(filename, PATH_SEGMENT)
    )
}

/// A fresh token: 128 random bits, in 32 lowercase hex digits.
pub(crate) fn new_token() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `name` is a file name a slot may have (rule 1 above).
pub(crate) fn acceptable_filename(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_FILENAME_BYTES
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control())
}

/// Whether `content_type` is a plain `type/subtype` (RFC 9110 §8.3.1, without parameters).
pub(crate) fn acceptable_content_type(content_type: &str) -> bool {
    let token = |part: &str| {
        !part.is_empty()
            && part.len() <= 127
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    match content_type.split_once('/') {
        Some((kind, sub)) => token(kind) && token(sub),
        None => false,
    }
}

impl Hub {
    /// Serves the slot service at `upload.DOMAIN` with `limits`, its URLs under `base_url`
    /// (`https://HOST:PORT`): called when the server's HTTPS listener is up.
    pub fn upload_start(&mut self, base_url: &str, limits: UploadLimits) {
        self.upload = UploadService {
            service: BareJid::new(&format!("upload.{}", self.domain)).ok(),
            base_url: base_url.trim_end_matches('/').to_string(),
            limits,
        };
    }

    /// The upload service's JID, if it runs and no external component has its domain
    /// (listed in the server's disco#items).
    pub(super) fn upload_service(&self) -> Option<&BareJid> {
        self.upload
            .service
            .as_ref()
            .filter(|s| !self.components.contains_key(*s))
    }

    /// Whether `stanza` is addressed to the upload service (its domain, any user or resource).
    pub(super) fn upload_addressed(&self, stanza: &Stanza) -> bool {
        super::addressed_to(self.upload_service(), stanza)
    }

    /// A stanza from the bound session `from` to the upload service: IQs are answered,
    /// messages bounced, presence dropped.
    pub(super) fn upload_inbound(
        &mut self,
        from: &FullJid,
        stanza: Stanza,
        out: &mut Vec<Delivery>,
    ) {
        let mut stanza = stanza;
        match &mut stanza {
            Stanza::Message(m) => m.from = Some(from.clone().into()),
            Stanza::Presence(p) => p.from = Some(from.clone().into()),
            Stanza::Iq(iq) => *iq.from_mut() = Some(from.clone().into()),
        }
        match stanza {
            Stanza::Iq(iq) => self.upload_iq(from, iq, out),
            Stanza::Message(ref m) if m.type_ != MessageType::Error => {
                if let Some(error) = bounce(&stanza, DefinedCondition::ServiceUnavailable) {
                    out.push(Delivery::stanza(from.clone(), error));
                }
            }
            _ => {}
        }
    }

    fn upload_iq(&mut self, from: &FullJid, iq: Iq, out: &mut Vec<Delivery>) {
        let (payload, is_get, to_service) = match &iq {
            Iq::Get { payload, to, .. } => (
                payload,
                true,
                to.as_ref()
                    .is_some_and(|t| t.node().is_none() && t.resource().is_none()),
            ),
            Iq::Set { payload, to, .. } => (
                payload,
                false,
                to.as_ref()
                    .is_some_and(|t| t.node().is_none() && t.resource().is_none()),
            ),
            Iq::Result { .. } | Iq::Error { .. } => return,
        };
        let answer: Result<Option<Element>, StanzaError> = if !to_service {
            Err(plain(DefinedCondition::ItemNotFound))
        } else if is_get && payload.is("query", ns::DISCO_INFO) {
            match payload.attr("node").filter(|n| !n.is_empty()) {
                Some(_) => Err(plain(DefinedCondition::ItemNotFound)),
                None => Ok(Some(self.upload_info().into())),
            }
        } else if is_get && payload.is("query", ns::DISCO_ITEMS) {
            Ok(Some(
                DiscoItemsResult {
                    node: payload.attr("node").map(str::to_string),
                    rsm: None,
                    items: Vec::new(),
                }
                .into(),
            ))
        } else if is_get && payload.is("ping", ns::PING) {
            Ok(None)
        } else if is_get && payload.is("request", ns::HTTP_UPLOAD) {
            match slot_request(payload) {
                Some(request) => self
                    .upload_slot(from, request)
                    .map(|slot| Some(slot.into()))
                    .map_err(|error| *error),
                None => Err(plain(DefinedCondition::BadRequest)),
            }
        } else {
            Err(plain(DefinedCondition::ServiceUnavailable))
        };
        let (Iq::Get { to, id, .. } | Iq::Set { to, id, .. }) = iq else {
            return;
        };
        let reply = match answer {
            Ok(payload) => Iq::Result {
                from: to,
                to: Some(from.clone().into()),
                id,
                payload,
            },
            Err(error) => Iq::Error {
                from: to,
                to: Some(from.clone().into()),
                id,
                error,
                payload: None,
            },
        };
        out.push(Delivery::stanza(from.clone(), reply));
    }

    /// disco#info of the service (XEP-0363 §3): `store/file`, the feature, and the largest
    /// file in a `urn:xmpp:http:upload:0` form.
    fn upload_info(&self) -> DiscoInfoResult {
        DiscoInfoResult {
            node: None,
            identities: vec![Identity::new("store", "file", "en", "HTTP File Upload")],
            features: [ns::DISCO_INFO, ns::DISCO_ITEMS, ns::HTTP_UPLOAD, ns::PING]
                .iter()
                .map(|f| f.to_string())
                .collect(),
            extensions: vec![DataForm::new(
                DataFormType::Result_,
                ns::HTTP_UPLOAD,
                vec![Field::text_single(
                    "max-file-size",
                    &self.upload.limits.max_file_size.to_string(),
                )],
            )],
        }
    }

    /// A slot for `request` from `from`, or the refusal of XEP-0363 §5 (see the module docs).
    fn upload_slot(
        &mut self,
        from: &FullJid,
        request: SlotRequest,
    ) -> Result<SlotResult, Box<StanzaError>> {
        let limits = &self.upload.limits;
        if !acceptable_filename(&request.filename) || request.size == 0 {
            return Err(Box::new(plain(DefinedCondition::NotAcceptable)));
        }
        if request.size > limits.max_file_size {
            return Err(Box::new(file_too_large(limits.max_file_size)));
        }
        let content_type = request
            .content_type
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty());
        if content_type.is_some_and(|t| !acceptable_content_type(t)) {
            return Err(Box::new(plain(DefinedCondition::NotAcceptable)));
        }
        let token = new_token();
        let owner = node(from);
        let slot = NewSlot {
            token: &token,
            owner: &owner,
            filename: &request.filename,
            size: request.size,
            content_type,
        };
        let slot_ttl = i64::try_from(limits.slot_ttl.as_millis()).unwrap_or(i64::MAX);
        match self
            .store
            .upload_create_slot(&slot, now_ms(), slot_ttl, limits.quota)
        {
            Ok(Ok(())) => {}
            Ok(Err(used)) => {
                // XEP-0363 §5: a quota is `resource-constraint`, with a text for the user.
                let text = format!(
                    "Upload quota reached: {used} of {} bytes in use, this file needs {}",
                    limits.quota, request.size
                );
                return Err(Box::new(StanzaError::new(
                    ErrorType::Wait,
                    DefinedCondition::ResourceConstraint,
                    "en",
                    text,
                )));
            }
            Err(error) => {
                tracing::error!(user = owner, "cannot record an upload slot: {error}");
                return Err(Box::new(plain(DefinedCondition::InternalServerError)));
            }
        }
        let url = format!(
            "{}{}",
            self.upload.base_url,
            file_path(&token, &request.filename)
        );
        Ok(SlotResult {
            put: Put {
                url: url.clone(),
                headers: Vec::new(),
            },
            get: Get { url },
        })
    }
}

/// The slot request in `payload` (XEP-0363 §4): `filename` and `size` required,
/// `content-type` optional. Read by hand: xmpp-parsers 0.23 refuses a request without
/// `content-type`, which the XEP allows (and Conversations sends for unknown types).
fn slot_request(payload: &Element) -> Option<SlotRequest> {
    Some(SlotRequest {
        filename: payload.attr("filename")?.to_string(),
        size: payload.attr("size")?.trim().parse().ok()?,
        content_type: payload.attr("content-type").map(str::to_string),
    })
}

/// An error with `condition` and no text.
fn plain(condition: DefinedCondition) -> StanzaError {
    super::stanza_error(condition)
}

/// XEP-0363 §5: `not-acceptable` with `<file-too-large><max-file-size>N</max-file-size>`.
fn file_too_large(max: u64) -> StanzaError {
    let mut error = StanzaError::new(
        ErrorType::Modify,
        DefinedCondition::NotAcceptable,
        "en",
        format!("File too large: the largest file accepted is {max} bytes"),
    );
    error.other = Some(
        Element::builder("file-too-large", ns::HTTP_UPLOAD)
            .append(
                Element::builder("max-file-size", ns::HTTP_UPLOAD)
                    .append(max.to_string())
                    .build(),
            )
            .build(),
    );
    error
}

#[cfg(test)]
mod tests;
