//! vCards (XEP-0054, `vcard-temp`) and the vCard avatar hash in presence (XEP-0153, put there
//! by the server as XEP-0398 §4 describes).
//!
//! - **Get** (XEP-0054 §3.1): an account reads its own vCard (no `to`, or its own bare JID) or
//!   another account's (to that bare JID; the server answers on the account's behalf, RFC 6121
//!   §8.5.2). An account that never stored one gets an empty `<vCard/>`: XEP-0054 §3.1 allows
//!   that or `item-not-found`, and Prosody's default modules (`vcard_legacy`) answer the empty
//!   one, which clients take without an error path. A get to a JID that is no account is
//!   `service-unavailable` (RFC 6121 §8.5.1, rule 4 of `router.rs`); to the server's domain,
//!   the server's own vCard, which is empty.
//! - **Set** (XEP-0054 §3.2): only of the account's own vCard (no `to`, or its own bare JID);
//!   another account's, or the server's, is `forbidden`, as in Prosody's `mod_vcard`. The
//!   vCard is stored whole, as given, replacing the previous one. Larger than
//!   `--max-vcard-bytes` (its XML text): `not-acceptable` (RFC 6120 §8.3.3.9: the request does
//!   not meet the server's criteria; Prosody has no limit of its own below its 256 KiB stanza
//!   limit). A photo whose `BINVAL` is not base64: `bad-request`, since no one could show it.
//! - **The photo hash in presence** (XEP-0153 §3.2, XEP-0398 §4): every available presence an
//!   account sends, broadcast or directed (to a component too), leaves the server with
//!   `<x xmlns='vcard-temp:x:update'><photo>SHA-1</photo></x>`, the hash of the photo in the
//!   account's stored vCard, or an empty `<photo/>` when it has none. A client's empty
//!   `<photo/>` ("no avatar to show", XEP-0153 §4.1) goes through untouched, as in the
//!   example of XEP-0398 §4; a client's hash is replaced by the stored one (which §4 allows),
//!   because clients compute their hash once at login (slixmpp does) and go stale when
//!   another device changes the avatar. The hash is worked out when a vCard is stored and kept beside it, so a presence
//!   costs one indexed read, not a vCard parse.
//! - **A new photo is announced** (XEP-0153 §3.2, as Prosody does after a vCard change): when a
//!   set changes the photo's hash, each available resource of the account broadcasts its
//!   current presence again, with the new hash, to its contacts and its own resources; and
//!   the presence kept for later probes carries it too.
//!
//! For avatars published over PEP (XEP-0084) and kept the same in both places (XEP-0398 §3),
//! [`Hub::set_vcard_photo`] changes the photo of a stored vCard alone, and
//! [`Hub::vcard_photo_set_by_client`] is the one place that learns of a photo a client set.

use base64::Engine as _;
use sha1::{Digest, Sha1};
use tokio_xmpp::jid::{BareJid, FullJid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::parsers::stanza_error::DefinedCondition;
use tokio_xmpp::Stanza;

use super::service::{Entity, IqRequest, Kind, Service, Target};
use super::{node, Delivery, Hub};

/// vCard get and set (XEP-0054), advertised by the server as `vcard-temp`, as Prosody does.
pub(super) struct VCardService;

impl Service for VCardService {
    fn features(&self, entity: Entity) -> &'static [&'static str] {
        match entity {
            Entity::Server => &[ns::VCARD],
            Entity::Account => &[],
        }
    }

    fn handles(&self, request: &IqRequest) -> bool {
        request.is_get("vCard", ns::VCARD) || request.is_set("vCard", ns::VCARD)
    }

    fn handle(&self, hub: &mut Hub, request: IqRequest, out: &mut Vec<Delivery>) {
        let answer = match (request.kind, request.at) {
            (Kind::Get, Target::Server) => Ok(Some(empty_vcard())),
            (Kind::Get, Target::OwnAccount) => hub.vcard_of(&node(&request.from)).map(Some),
            (Kind::Get, Target::OtherAccount) => {
                // The router answers for another account only when the IQ was addressed to
                // its bare JID, which is the answer's `from`.
                match request.reply_from.as_ref().and_then(|to| to.node()) {
                    Some(owner) => hub.vcard_of(owner.as_str()).map(Some),
                    None => Err(DefinedCondition::ServiceUnavailable),
                }
            }
            (Kind::Set, Target::OwnAccount) => {
                let owner = request.from.to_bare();
                let mut after = Vec::new();
                let stored = hub.client_sets_vcard(&owner, &request.payload, &mut after);
                request.answer(stored.map(|()| None), out);
                // The answer first, then the presence the new photo causes.
                out.extend(after);
                return;
            }
            (Kind::Set, Target::Server | Target::OtherAccount) => Err(DefinedCondition::Forbidden),
        };
        request.answer(answer, out);
    }
}

/// A vCard photo (XEP-0153 §3.1): its image bytes and their MIME type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Photo {
    /// The MIME type (`TYPE`), such as `image/png`; empty when the vCard named none.
    pub mime_type: String,
    /// The image itself (`BINVAL`, decoded from base64).
    pub bytes: Vec<u8>,
}

impl Photo {
    /// The lowercase hex SHA-1 of the image bytes, as presence carries it (XEP-0153 §3.1).
    pub(crate) fn sha1_hex(&self) -> String {
        Sha1::digest(&self.bytes)
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }

    /// The `<PHOTO/>` element of a vCard.
    fn to_element(&self) -> Element {
        let mut photo = Element::builder("PHOTO", ns::VCARD);
        if !self.mime_type.is_empty() {
            photo = photo.append(
                Element::builder("TYPE", ns::VCARD)
                    .append(self.mime_type.as_str())
                    .build(),
            );
        }
        photo
            .append(
                Element::builder("BINVAL", ns::VCARD)
                    .append(base64::engine::general_purpose::STANDARD.encode(&self.bytes))
                    .build(),
            )
            .build()
    }
}

/// The photo of `vcard`: its first `PHOTO` with a `BINVAL`, decoded (line breaks and spaces in
/// the base64, which some clients wrap, are ignored). `Ok(None)` without one (a photo given
/// only as an external URL, `EXTVAL`, has no bytes to hash); `Err` for a `BINVAL` that is not
/// base64.
pub(crate) fn photo_of(vcard: &Element) -> Result<Option<Photo>, DefinedCondition> {
    let Some((photo, binval)) = vcard
        .children()
        .filter(|child| child.is("PHOTO", ns::VCARD))
        .find_map(|photo| Some((photo, photo.get_child("BINVAL", ns::VCARD)?)))
    else {
        return Ok(None);
    };
    let bytes = decode_base64(&binval.text()).ok_or(DefinedCondition::BadRequest)?;
    if bytes.is_empty() {
        return Ok(None);
    }
    let mime_type = photo
        .get_child("TYPE", ns::VCARD)
        .map(|t| t.text().trim().to_string())
        .unwrap_or_default();
    Ok(Some(Photo { mime_type, bytes }))
}

/// The bytes of base64 `text` as clients send images (a vCard's `BINVAL`, XEP-0084's avatar
/// data): line breaks and other whitespace are not part of it. `None` if it is not base64.
pub(crate) fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let text: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

/// `<vCard xmlns='vcard-temp'/>`: what an account without a vCard has.
fn empty_vcard() -> Element {
    Element::builder("vCard", ns::VCARD).build()
}

impl Hub {
    /// The stored vCard of the account `owner`, or an empty one.
    fn vcard_of(&self, owner: &str) -> Result<Element, DefinedCondition> {
        let stored = self
            .store
            .get_vcard(owner)
            .map_err(|_| DefinedCondition::InternalServerError)?;
        match stored {
            Some(xml) => xml
                .parse::<Element>()
                .map_err(|_| DefinedCondition::InternalServerError),
            None => Ok(empty_vcard()),
        }
    }

    /// An account's own vCard set (XEP-0054 §3.2): checked, stored, and its photo announced.
    fn client_sets_vcard(
        &mut self,
        owner: &BareJid,
        vcard: &Element,
        out: &mut Vec<Delivery>,
    ) -> Result<(), DefinedCondition> {
        let xml = String::from(vcard);
        if xml.len() > self.max_vcard_bytes {
            return Err(DefinedCondition::NotAcceptable);
        }
        let photo = photo_of(vcard)?;
        self.store_vcard(owner, &xml, photo.as_ref(), out)?;
        self.vcard_photo_set_by_client(owner, photo.as_ref(), out);
        Ok(())
    }

    /// Called after an account's client stored a vCard, with the photo in it (`None`: the
    /// vCard has none): XEP-0398 §3.2 publishes the photo to the account's avatar nodes on
    /// PEP (XEP-0084, `avatars.rs`), so that clients reading avatars there see the same
    /// picture. A photo that comes from PEP is stored with [`Hub::set_vcard_photo`], which
    /// does not come back here.
    pub(super) fn vcard_photo_set_by_client(
        &mut self,
        owner: &BareJid,
        photo: Option<&Photo>,
        out: &mut Vec<Delivery>,
    ) {
        self.avatar_to_pep(owner, photo, out);
    }

    /// Replaces only the photo of `owner`'s stored vCard (creating a vCard if there is none;
    /// `None` removes the photo), and announces it in presence like a client's set. For avatars
    /// published over PEP (XEP-0398 §3.1). Fails with `not-acceptable` when the vCard would
    /// exceed `--max-vcard-bytes`, and with `internal-server-error` when the store fails.
    pub(crate) fn set_vcard_photo(
        &mut self,
        owner: &BareJid,
        photo: Option<&Photo>,
        out: &mut Vec<Delivery>,
    ) -> Result<(), DefinedCondition> {
        let user = owner.node().map(|n| n.as_str()).unwrap_or_default();
        let mut vcard = self.vcard_of(user)?;
        // Every PHOTO goes; the new one takes the place of the first.
        let mut children: Vec<Element> = Vec::new();
        let mut placed = false;
        for child in vcard.children() {
            if child.is("PHOTO", ns::VCARD) {
                if !placed {
                    children.extend(photo.map(Photo::to_element));
                    placed = true;
                }
            } else {
                children.push(child.clone());
            }
        }
        if !placed {
            children.extend(photo.map(Photo::to_element));
        }
        vcard = Element::builder("vCard", ns::VCARD)
            .append_all(children)
            .build();
        let xml = String::from(&vcard);
        if xml.len() > self.max_vcard_bytes {
            return Err(DefinedCondition::NotAcceptable);
        }
        self.store_vcard(owner, &xml, photo, out)
    }

    /// Stores `xml` as `owner`'s vCard with the hash of `photo`; if that hash differs from the
    /// stored one, the account's available resources broadcast their presence again with it.
    fn store_vcard(
        &mut self,
        owner: &BareJid,
        xml: &str,
        photo: Option<&Photo>,
        out: &mut Vec<Delivery>,
    ) -> Result<(), DefinedCondition> {
        let user = owner.node().map(|n| n.as_str()).unwrap_or_default();
        let hash = photo.map(Photo::sha1_hex);
        let before = self.store.vcard_photo_hash(user).ok().flatten();
        self.store
            .set_vcard(user, xml, hash.as_deref())
            .map_err(|_| DefinedCondition::InternalServerError)?;
        if before != hash {
            self.announce_photo(owner, hash.as_deref(), out);
        }
        Ok(())
    }

    /// Each available resource of `owner` broadcasts its current presence again, carrying
    /// `hash` (XEP-0153 §3.2), and keeps it for the probes to come.
    fn announce_photo(&mut self, owner: &BareJid, hash: Option<&str>, out: &mut Vec<Delivery>) {
        for (jid, _) in self.available_of(owner) {
            let Some(session) = self.sessions.get_mut(&jid) else {
                continue;
            };
            let Some(presence) = session.presence.as_mut() else {
                continue;
            };
            replace_photo_hash(presence, hash);
            let presence = presence.clone();
            self.broadcast_presence(&jid, presence, out);
        }
    }

    /// Puts the sender's photo hash into `stanza` if it is an available presence (XEP-0398 §4;
    /// see the module docs). Called for every stanza a session sends, before it is routed.
    pub(super) fn stamp_photo_hash(&self, from: &FullJid, stanza: &mut Stanza) {
        let Stanza::Presence(presence) = stanza else {
            return;
        };
        if presence.type_ != PresenceType::None {
            return;
        }
        match self.store.vcard_photo_hash(&node(from)) {
            Ok(hash) => put_photo_hash(presence, hash.as_deref()),
            // Without the hash, the client's own claim goes through untouched.
            Err(error) => tracing::warn!(%error, "cannot read the vCard photo hash"),
        }
    }
}

/// Puts `hash` (an empty `<photo/>` for none: XEP-0153 §4.1, "no avatar") into `presence` as
/// XEP-0398 §4 says: a presence without `<x xmlns='vcard-temp:x:update'/>`, or with one that
/// has no `<photo/>`, gets the server's; a client's empty `<photo/>` is left as it is (the
/// XEP's example: the client says it has no avatar to show, or is not ready to); a client's
/// hash that differs from the stored one is replaced (which the XEP allows), since a client
/// works out its hash once at login and goes stale when another device changes the avatar.
fn put_photo_hash(presence: &mut Presence, hash: Option<&str>) {
    let client_says_none = presence
        .payloads
        .iter()
        .filter(|payload| payload.is("x", ns::VCARD_UPDATE))
        .filter_map(|x| x.get_child("photo", ns::VCARD_UPDATE))
        .any(|photo| photo.text().trim().is_empty());
    if !client_says_none {
        replace_photo_hash(presence, hash);
    }
}

/// Replaces any `<x xmlns='vcard-temp:x:update'/>` in `presence` with one carrying `hash`: for
/// a presence the server announces again after the photo changed, where the new photo is the
/// newer news.
fn replace_photo_hash(presence: &mut Presence, hash: Option<&str>) {
    presence
        .payloads
        .retain(|payload| !payload.is("x", ns::VCARD_UPDATE));
    let photo = Element::builder("photo", ns::VCARD_UPDATE);
    let photo = match hash {
        Some(hash) => photo.append(hash),
        None => photo,
    };
    presence.payloads.push(
        Element::builder("x", ns::VCARD_UPDATE)
            .append(photo.build())
            .build(),
    );
}

#[cfg(test)]
mod tests;
