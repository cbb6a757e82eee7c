//! What the bot says it is: its XEP-0030 disco#info answer (identity `client/bot` and the
//! features it supports), its XEP-0115 entity capabilities, which are a digest of that answer,
//! and the payloads every available presence of the bot carries (caps, and the XEP-0153 avatar
//! hash of [`super::profile`]).
//!
//! The feature list is [`FEATURES`], one constant: the disco#info answer, the caps `ver` and
//! the answer on the caps node `NODE#VER` are all computed from it, so adding a feature there
//! (say, XEP-0050's commands) changes all three together and they cannot drift apart.

use std::sync::LazyLock;

use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::caps::Caps;
use tokio_xmpp::parsers::disco::{DiscoInfoResult, Identity};
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};

use crate::caps::{caps_node_of, caps_of, CAPS_NODE};

/// The bot's name: its disco identity's name, its nickname (XEP-0172) and its vCard's `FN`.
pub(crate) const NAME: &str = env!("CARGO_PKG_NAME");

/// XEP-0249 §3: an entity that accepts direct MUC invitations advertises this feature.
const DIRECT_INVITATIONS: &str = "jabber:x:conference";

/// Every feature the bot supports, in disco#info (XEP-0030 §3.1) and hence in its caps `ver`
/// (XEP-0115 §5.1). One line per feature; a new front end adds its namespace here.
pub(crate) const FEATURES: &[&str] = &[
    // XEP-0030: it answers disco#info (this list).
    ns::DISCO_INFO,
    // XEP-0115 §7: it sends entity capabilities in its presence.
    ns::CAPS,
    // XEP-0199: it answers pings (also the rooms' self-pings, XEP-0410).
    ns::PING,
    // XEP-0092: it answers software version requests.
    ns::VERSION,
    // XEP-0184: it acknowledges chat messages that ask for a receipt.
    ns::RECEIPTS,
    // XEP-0045: it joins rooms and answers in them.
    ns::MUC,
    // XEP-0249: it accepts direct invitations into rooms.
    DIRECT_INVITATIONS,
    // XEP-0050 §2.1: it offers its commands as ad-hoc commands (`adhoc/`).
    "http://jabber.org/protocol/commands",
    // XEP-0323 §4: it answers sensor-data read-outs (`sensordata/`).
    super::sensordata::types::NS,
];

/// The bot's disco#info (XEP-0030 §3.1): `client/bot` from the XEP-0030 registry ("An
/// automated conversation agent") named [`NAME`], and [`FEATURES`]. `node` is echoed
/// (XEP-0115 §6.2: the answer on the caps node is the same as without a node).
pub(crate) fn disco_info(node: Option<String>) -> DiscoInfoResult {
    DiscoInfoResult {
        node,
        identities: vec![Identity::new("client", "bot", "en", NAME)],
        features: FEATURES.iter().map(|f| f.to_string()).collect(),
        extensions: Vec::new(),
    }
}

/// The bot's caps, computed once from [`disco_info`]. `None` only if [`FEATURES`] held a
/// duplicate (XEP-0115 §5.4), which a unit test rules out.
static CAPS: LazyLock<Option<Caps>> = LazyLock::new(|| caps_of(&disco_info(None), CAPS_NODE));

/// The bot's entity capabilities (XEP-0115 §4): `<c hash='sha-1' node='…' ver='…'/>`.
pub(crate) fn caps() -> Option<Caps> {
    CAPS.clone()
}

/// The disco#info answer for a query on `node`: the caps node `NODE#VER` is answered like the
/// bot itself (XEP-0115 §6.2); `None` for any other node, which is someone else's business
/// (or `item-not-found`).
pub(crate) fn info_for_node(node: &str) -> Option<DiscoInfoResult> {
    let own = caps_node_of(&disco_info(None), CAPS_NODE)?;
    (own == node).then(|| disco_info(Some(own)))
}

/// Adds to an available presence of the bot (one-to-one or in a room) its caps (XEP-0115 §4,
/// "in every presence it sends") and its avatar hash (XEP-0153 §4.1), unless it carries them
/// already. Other presence types (subscriptions, unavailable) are left alone.
pub(crate) fn decorate(presence: &mut Presence) {
    if presence.type_ != PresenceType::None {
        return;
    }
    if !presence.payloads.iter().any(|p| p.is("c", ns::CAPS)) {
        if let Some(caps) = caps() {
            presence.payloads.push(caps.into());
        }
    }
    if !presence
        .payloads
        .iter()
        .any(|p| p.is("x", ns::VCARD_UPDATE))
    {
        presence.payloads.push(
            Element::builder("x", ns::VCARD_UPDATE)
                .append(
                    Element::builder("photo", ns::VCARD_UPDATE)
                        .append(super::profile::avatar_sha1_hex()),
                )
                .build(),
        );
    }
}

#[cfg(test)]
mod tests {
    use base64::prelude::{Engine, BASE64_STANDARD};
    use sha1::{Digest, Sha1};

    use super::*;

    /// XEP-0115 §5.1, written out step by step from the XEP's text for one identity, no forms
    /// and features without duplicates: the reference the bot's `ver` is checked against.
    fn ver_by_the_book(info: &DiscoInfoResult) -> String {
        let mut s = String::new();
        for identity in &info.identities {
            // 2. category/type/lang/name<
            s.push_str(&format!(
                "{}/{}/{}/{}<",
                identity.category,
                identity.type_,
                identity.lang.clone().unwrap_or_default(),
                identity.name.clone().unwrap_or_default()
            ));
        }
        // 3. features sorted by the octets of their names, each followed by '<'.
        let mut features: Vec<&str> = info.features.iter().map(String::as_str).collect();
        features.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for feature in features {
            s.push_str(feature);
            s.push('<');
        }
        // 7-8. SHA-1, then Base64.
        BASE64_STANDARD.encode(Sha1::digest(s.as_bytes()))
    }

    #[test]
    fn the_bot_is_a_client_bot_with_its_features() {
        let info = disco_info(None);
        assert_eq!(info.identities.len(), 1);
        assert_eq!(info.identities[0].category, "client");
        assert_eq!(info.identities[0].type_, "bot");
        assert_eq!(info.identities[0].name.as_deref(), Some(NAME));
        for feature in [
            ns::DISCO_INFO,
            ns::CAPS,
            ns::PING,
            ns::VERSION,
            ns::RECEIPTS,
            ns::MUC,
            "jabber:x:conference",
        ] {
            assert!(info.features.contains(feature), "missing {feature}");
        }
        let mut unique = FEATURES.to_vec();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), FEATURES.len(), "a feature is listed twice");
    }

    #[test]
    fn the_caps_ver_is_the_xep_0115_hash_of_the_disco_answer() {
        let caps = caps().expect("caps");
        assert_eq!(caps.node, CAPS_NODE);
        assert_eq!(caps.hash, tokio_xmpp::parsers::hashes::Algo::Sha_1);
        let ver = BASE64_STANDARD.encode(&caps.ver);
        assert_eq!(ver, ver_by_the_book(&disco_info(None)));
    }

    #[test]
    fn the_caps_node_is_answered_like_the_bot_and_other_nodes_are_not() {
        let ver = BASE64_STANDARD.encode(caps().expect("caps").ver);
        let node = format!("{CAPS_NODE}#{ver}");
        let info = info_for_node(&node).expect("caps node answered");
        assert_eq!(info.node.as_deref(), Some(node.as_str()));
        assert_eq!(info.features, disco_info(None).features);
        assert_eq!(info.identities, disco_info(None).identities);
        for other in [
            CAPS_NODE.to_string(),
            format!("{CAPS_NODE}#AAAA"),
            "http://jabber.org/protocol/commands".into(),
            String::new(),
        ] {
            assert!(info_for_node(&other).is_none(), "{other}");
        }
    }

    #[test]
    fn available_presence_gets_caps_and_the_avatar_hash_once() {
        let mut presence = Presence::available();
        decorate(&mut presence);
        decorate(&mut presence);
        let xml = String::from(&Element::from(presence));
        assert_eq!(
            xml.matches("<c xmlns='http://jabber.org/protocol/caps'")
                .count(),
            1,
            "{xml}"
        );
        assert!(xml.contains("hash='sha-1'"), "{xml}");
        assert!(
            xml.contains(&format!(
                "<x xmlns='vcard-temp:x:update'><photo>{}</photo></x>",
                super::super::profile::avatar_sha1_hex()
            )),
            "{xml}"
        );
        for mut other in [
            Presence::unavailable(),
            Presence::new(PresenceType::Subscribed),
            Presence::new(PresenceType::Unsubscribed),
        ] {
            decorate(&mut other);
            assert!(other.payloads.is_empty(), "{other:?}");
        }
    }
}
