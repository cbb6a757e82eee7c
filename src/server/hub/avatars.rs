//! One avatar for old and new clients (XEP-0398): the picture an account sets over PEP
//! (XEP-0084, Conversations and Gajim) becomes the photo of its vCard (XEP-0153, older clients
//! and rooms), and a vCard photo set by an older client is published to PEP, so every client
//! shows the same picture.
//!
//! - **From PEP to the vCard** (XEP-0398 §3.1): after a client publishes to
//!   `urn:xmpp:avatar:metadata`, the first `<info/>` that does not point to a URL names the item
//!   of `urn:xmpp:avatar:data` holding the image; its bytes become the vCard's PHOTO, with the
//!   `<info/>`'s `type`, and the new hash goes out in presence (`vcard.rs`). The image must hash
//!   to the item id (XEP-0398 §3.1 "SHOULD verify"); one that does not, or a data item that is
//!   missing, leaves the vCard as it was. Empty metadata (XEP-0084 §4.5, "avatar disabled")
//!   removes the vCard's photo.
//! - **From the vCard to PEP** (XEP-0398 §3.2): after a client stores a vCard with a photo, the
//!   image is published to `urn:xmpp:avatar:data` with the SHA-1 as item id, then an `<info/>`
//!   for it to `urn:xmpp:avatar:metadata`, which notifies the contacts. A vCard without a photo
//!   publishes empty metadata, if the account ever had a PEP avatar. Nothing is published when
//!   PEP already shows that picture, so a client that writes its vCard at every login costs
//!   nothing.
//! - Neither direction calls the other back: [`Hub::set_vcard_photo`] and
//!   [`Hub::pep_publish_internal`] do not run the hooks that lead here.
//! - A conversion that fails (a limit, a store error) is logged; the client's own request has
//!   already succeeded and stays so.
//!
//! The vCard is readable by anyone who knows the JID, while a PEP avatar is readable by the
//! account's contacts only (XEP-0084's default access model): XEP-0398 §6 warns of this, and
//! advertises the conversion (`urn:xmpp:pep-vcard-conversion:0` on the account) so that clients
//! can tell their users.

use base64::Engine as _;
use tokio_xmpp::jid::BareJid;
use tokio_xmpp::minidom::Element;

use super::pep::{name, PublishOptions};
use super::service::{Entity, Service};
use super::vcard::{decode_base64, Photo};
use super::{Delivery, Hub};

/// XEP-0084's node of the image bytes.
const DATA_NODE: &str = "urn:xmpp:avatar:data";
/// XEP-0084's node of what the avatar is (its id, size, type).
const METADATA_NODE: &str = "urn:xmpp:avatar:metadata";
/// The feature an account lists when its server converts (XEP-0398 §2).
const CONVERSION: &str = "urn:xmpp:pep-vcard-conversion:0";

/// The conversion's disco feature on accounts (XEP-0398 §2); the work is done in the hooks of
/// PEP and the vCard service, below.
pub(super) struct AvatarConversion;

impl Service for AvatarConversion {
    fn features(&self, entity: Entity) -> &'static [&'static str] {
        match entity {
            Entity::Server => &[],
            Entity::Account => &[CONVERSION],
        }
    }
}

impl Hub {
    /// XEP-0398 §3.1: a client published `payload` to `node` of `owner`'s PEP; if it is the
    /// avatar's metadata, the vCard's photo follows.
    pub(super) fn avatar_from_pep(
        &mut self,
        owner: &BareJid,
        node: &str,
        payload: &Element,
        out: &mut Vec<Delivery>,
    ) {
        if node != METADATA_NODE || !payload.is("metadata", METADATA_NODE) {
            return;
        }
        let user = owner.node().map(|n| n.as_str()).unwrap_or_default();
        let infos: Vec<&Element> = payload
            .children()
            .filter(|child| child.is("info", METADATA_NODE))
            .collect();
        let photo = if infos.is_empty() {
            None
        } else {
            // XEP-0398 §3.1: the info that does not point to an external URL.
            let Some(info) = infos
                .iter()
                .find(|info| info.attr("url").is_none_or(str::is_empty))
            else {
                return;
            };
            let Some(id) = info.attr("id") else {
                return;
            };
            match self.avatar_image(user, id) {
                Some(bytes) => Some(Photo {
                    mime_type: info.attr("type").unwrap_or_default().to_string(),
                    bytes,
                }),
                None => return,
            }
        };
        if let Err(condition) = self.set_vcard_photo(owner, photo.as_ref(), out) {
            tracing::warn!(
                account = %owner,
                ?condition,
                "the avatar published over PEP could not become the vCard photo"
            );
        }
    }

    /// The image of `user`'s avatar data item `id`, if it exists, is base64 and hashes to
    /// `id` (XEP-0084 §4.2: the id is the SHA-1 of the image).
    fn avatar_image(&self, user: &str, id: &str) -> Option<Vec<u8>> {
        let items = match self
            .store
            .pep_items_by_id(user, DATA_NODE, &[id.to_string()])
        {
            Ok(items) => items,
            Err(error) => {
                tracing::warn!(account = user, "cannot read the PEP avatar: {error}");
                return None;
            }
        };
        let item = items.into_iter().next()?;
        let data = item.payload.parse::<Element>().ok()?;
        let bytes = decode_base64(&data.text())?;
        let photo = Photo {
            mime_type: String::new(),
            bytes,
        };
        if !photo.sha1_hex().eq_ignore_ascii_case(id) {
            tracing::info!(
                account = user,
                id,
                "the PEP avatar's id is not the SHA-1 of its image: the vCard keeps its photo"
            );
            return None;
        }
        Some(photo.bytes)
    }

    /// XEP-0398 §3.2: a client stored a vCard with `photo` (`None`: without one); PEP's
    /// avatar follows, unless it already shows that picture.
    pub(super) fn avatar_to_pep(
        &mut self,
        owner: &BareJid,
        photo: Option<&Photo>,
        out: &mut Vec<Delivery>,
    ) {
        let user = owner.node().map(|n| n.as_str()).unwrap_or_default();
        let shown = match self.store.pep_last_item(user, METADATA_NODE) {
            Ok(item) => item,
            Err(error) => {
                tracing::warn!(account = %owner, "cannot read the PEP avatar: {error}");
                return;
            }
        };
        let published = match photo {
            Some(photo) => {
                let id = photo.sha1_hex();
                if shown.as_ref().is_some_and(|item| item.id == id) {
                    return;
                }
                let data = Element::builder("data", DATA_NODE)
                    .append(base64::engine::general_purpose::STANDARD.encode(&photo.bytes))
                    .build();
                let mut info = Element::builder("info", METADATA_NODE)
                    .attr(name("id"), id.as_str())
                    .attr(name("bytes"), photo.bytes.len().to_string());
                if !photo.mime_type.is_empty() {
                    info = info.attr(name("type"), photo.mime_type.as_str());
                }
                let metadata = Element::builder("metadata", METADATA_NODE)
                    .append(info.build())
                    .build();
                let options = PublishOptions::none();
                self.pep_publish_internal(user, DATA_NODE, &id, data, &options, out)
                    .and_then(|()| {
                        self.pep_publish_internal(user, METADATA_NODE, &id, metadata, &options, out)
                    })
            }
            None => {
                // Only an account that had a PEP avatar has one to disable (XEP-0084 §4.5).
                let Some(shown) = shown else {
                    return;
                };
                let empty = Element::builder("metadata", METADATA_NODE).build();
                if shown.payload.parse::<Element>().ok().as_ref() == Some(&empty) {
                    return;
                }
                let options = PublishOptions::none();
                self.pep_publish_internal(user, METADATA_NODE, "none", empty, &options, out)
            }
        };
        if let Err(error) = published {
            tracing::warn!(
                account = %owner,
                condition = ?error.condition,
                pubsub = error.pubsub,
                "the vCard photo could not be published as the PEP avatar"
            );
        }
    }
}

#[cfg(test)]
mod tests;
