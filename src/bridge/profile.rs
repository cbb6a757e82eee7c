//! The bot's face in its contacts' rosters: a nickname (XEP-0172), a vCard (XEP-0054) with its
//! name, a description and its avatar, and the same avatar through PEP (XEP-0084), published
//! on the bot's own account once per change, not at every login.
//!
//! The avatar is `assets/avatar.png`, a 96×96 thermometer drawn for this project and built
//! into the binary. Its SHA-1 is the avatar id of XEP-0084 §4.1 and the photo hash of
//! XEP-0153 §4.1 that [`super::identity::decorate`] puts in every available presence.
//!
//! # Once per change
//!
//! Everything published is summed up in one [`fingerprint`]. [`Publisher`] is a sans-IO state
//! machine the XMPP task drives: at each new session it either does nothing (the fingerprint
//! is the one already published) or returns the requests to send, and it reads their answers.
//!
//! - With `--state-db`, the fingerprint last published is kept in the database: a restart with
//!   the same profile sends nothing at all.
//! - Without it, the bot first fetches its own vCard (XEP-0054 §3.1) and publishes only if it
//!   differs from the one it would set.
//!
//! In both cases a session that published successfully remembers it in memory, so a reconnection
//! publishes nothing. A server that refuses a part (no vCard support, no PEP) gets one warning
//! per part and process, and the rest is published anyway; the fingerprint is then not saved,
//! so the next start tries again.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use base64::prelude::{Engine, BASE64_STANDARD};
use sha1::{Digest, Sha1};
use tokio_xmpp::jid::BareJid;
use tokio_xmpp::minidom::rxml::xml_ncname;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::ns;
use tokio_xmpp::Stanza;

use super::identity::NAME;

/// The avatar, a PNG (see the module doc).
pub(crate) const AVATAR_PNG: &[u8] = include_bytes!("../../assets/avatar.png");
/// Its media type.
const AVATAR_TYPE: &str = "image/png";
/// Its size in pixels (XEP-0084 §4.2 `width` and `height`).
const AVATAR_SIDE: u32 = 96;

/// What the bot is, in its vCard's `DESC`.
pub(crate) const DESCRIPTION: &str = "mqtt2xmpp sensor bot: send help";

/// The SHA-1 of [`AVATAR_PNG`] in hex: the XEP-0084 item id and the XEP-0153 photo hash.
pub(crate) fn avatar_sha1_hex() -> &'static str {
    static HEX: LazyLock<String> = LazyLock::new(|| hex(&Sha1::digest(AVATAR_PNG)));
    &HEX
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A digest of everything published (nickname, vCard, avatar): what the state database keeps
/// to tell whether the published profile is current.
pub(crate) fn fingerprint() -> String {
    let mut digest = Sha1::new();
    for part in [NAME.as_bytes(), DESCRIPTION.as_bytes(), AVATAR_PNG] {
        digest.update((part.len() as u64).to_be_bytes());
        digest.update(part);
    }
    hex(&digest.finalize())
}

/// The bot's vCard (XEP-0054): `FN`, `NICKNAME`, `DESC` and the avatar as `PHOTO`.
pub(crate) fn vcard() -> Element {
    let text = |name: &str, value: &str| Element::builder(name, ns::VCARD).append(value).build();
    Element::builder("vCard", ns::VCARD)
        .append(text("FN", NAME))
        .append(text("NICKNAME", NAME))
        .append(text("DESC", DESCRIPTION))
        .append(
            Element::builder("PHOTO", ns::VCARD)
                .append(text("TYPE", AVATAR_TYPE))
                .append(text("BINVAL", &BASE64_STANDARD.encode(AVATAR_PNG))),
        )
        .build()
}

/// Whether a vCard the server returned already says what [`vcard`] says (name, nickname,
/// description, same photo; fields the server adds, like an empty `N`, do not matter). Whitespace in `BINVAL` does not matter (XEP-0153 §3.1 lets
/// servers wrap it).
fn same_vcard(got: &Element) -> bool {
    let text = |parent: &Element, name: &str| {
        parent
            .get_child(name, ns::VCARD)
            .map(|child| child.text().trim().to_string())
    };
    let photo = got.get_child("PHOTO", ns::VCARD).and_then(|photo| {
        let data: String = text(photo, "BINVAL")?
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        BASE64_STANDARD.decode(data).ok()
    });
    got.is("vCard", ns::VCARD)
        && text(got, "FN").as_deref() == Some(NAME)
        && text(got, "NICKNAME").as_deref() == Some(NAME)
        // Prosody's vcard_legacy stores the vCard as vCard4 (XEP-0292) and gives `DESC`
        // back as `NOTE`.
        && text(got, "DESC")
            .or_else(|| text(got, "NOTE"))
            .as_deref()
            == Some(DESCRIPTION)
        && photo.as_deref() == Some(AVATAR_PNG)
}

/// A PEP publish (XEP-0163 §4.3, XEP-0060 §7.1) of `payload` to `node` in an item `id` (or one
/// the server names).
fn publish(node: &str, id: Option<&str>, payload: Element) -> Element {
    let mut item = Element::builder("item", ns::PUBSUB);
    if let Some(id) = id {
        item = item.attr(xml_ncname!("id").into(), id);
    }
    Element::builder("pubsub", ns::PUBSUB)
        .append(
            Element::builder("publish", ns::PUBSUB)
                .attr(xml_ncname!("node").into(), node)
                .append(item.append(payload)),
        )
        .build()
}

/// An IQ get or set to the bot's own account (no `to`, RFC 6120 §10.3.3).
fn request(id: String, get: bool, payload: Element) -> Stanza {
    if get {
        Iq::Get {
            from: None,
            to: None,
            id,
            payload,
        }
    } else {
        Iq::Set {
            from: None,
            to: None,
            id,
            payload,
        }
    }
    .into()
}

/// One of the things published, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Part {
    /// The vCard (XEP-0054 §3.2).
    VCard,
    /// The avatar's data node (XEP-0084 §4.1).
    AvatarData,
    /// The avatar's metadata node (XEP-0084 §4.2), after the data.
    AvatarMetadata,
    /// The nickname (XEP-0172 §4.5).
    Nick,
}

impl Part {
    fn describe(self) -> &'static str {
        match self {
            Part::VCard => "the vCard (XEP-0054)",
            Part::AvatarData => "the PEP avatar data (XEP-0084)",
            Part::AvatarMetadata => "the PEP avatar metadata (XEP-0084)",
            Part::Nick => "the PEP nickname (XEP-0172)",
        }
    }

    /// The request that publishes this part.
    fn payload(self) -> Element {
        let id = avatar_sha1_hex();
        match self {
            Part::VCard => vcard(),
            Part::AvatarData => publish(
                ns::AVATAR_DATA,
                Some(id),
                Element::builder("data", ns::AVATAR_DATA)
                    .append(BASE64_STANDARD.encode(AVATAR_PNG))
                    .build(),
            ),
            Part::AvatarMetadata => publish(
                ns::AVATAR_METADATA,
                Some(id),
                Element::builder("metadata", ns::AVATAR_METADATA)
                    .append(
                        Element::builder("info", ns::AVATAR_METADATA)
                            .attr(xml_ncname!("bytes").into(), AVATAR_PNG.len().to_string())
                            .attr(xml_ncname!("id").into(), id)
                            .attr(xml_ncname!("type").into(), AVATAR_TYPE)
                            .attr(xml_ncname!("width").into(), AVATAR_SIDE.to_string())
                            .attr(xml_ncname!("height").into(), AVATAR_SIDE.to_string()),
                    )
                    .build(),
            ),
            Part::Nick => publish(
                ns::NICK,
                None,
                Element::builder("nick", ns::NICK).append(NAME).build(),
            ),
        }
    }
}

/// What the XMPP task does with an answer [`Publisher::answer`] took.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Next {
    /// Requests to send.
    pub send: Vec<Stanza>,
    /// Everything was published: keep this fingerprint (in the state database).
    pub published: Option<String>,
    /// A round of publishing ended: send the presence again, so that contacts and rooms that
    /// saw it before the new vCard was in place fetch the avatar (XEP-0153 §4.2).
    pub announce: bool,
}

/// Publishes the profile once per change (see the module doc). Lives as long as the XMPP task,
/// across reconnections.
#[derive(Debug)]
pub(crate) struct Publisher {
    /// The fingerprint known to be published (from the database, or by this process).
    current: Option<String>,
    /// Whether there is a database to trust; without one the vCard is fetched and compared.
    has_db: bool,
    /// The id of the vCard fetch in flight.
    checking: Option<String>,
    /// Publish requests in flight, by id.
    pending: BTreeMap<String, Part>,
    /// Whether a part was refused in this round.
    refused: bool,
    /// Parts already warned about (once per process).
    warned: Vec<Part>,
    /// Ids of this publisher's requests.
    serial: u64,
}

impl Publisher {
    /// A publisher that knows `stored`, the fingerprint from the state database, when there is
    /// one (`has_db`).
    pub(crate) fn new(has_db: bool, stored: Option<String>) -> Self {
        Self {
            current: stored,
            has_db,
            checking: None,
            pending: BTreeMap::new(),
            refused: false,
            warned: Vec::new(),
            serial: 0,
        }
    }

    fn next_id(&mut self) -> String {
        self.serial += 1;
        format!("profile-{}", self.serial)
    }

    /// A new session began: the requests to send now (none when the profile is current).
    pub(crate) fn online(&mut self) -> Vec<Stanza> {
        // Answers to a previous session's requests will not come.
        self.checking = None;
        self.pending.clear();
        self.refused = false;
        if self.current.as_deref() == Some(fingerprint().as_str()) {
            tracing::debug!("profile (nickname, vCard, avatar) already published");
            return Vec::new();
        }
        if self.has_db {
            return self.publish_all();
        }
        // XEP-0054 §3.1: the bot's own vCard, to compare before setting it.
        let id = self.next_id();
        self.checking = Some(id.clone());
        vec![request(
            id,
            true,
            Element::builder("vCard", ns::VCARD).build(),
        )]
    }

    fn publish_all(&mut self) -> Vec<Stanza> {
        tracing::info!("publishing the bot's nickname, vCard and avatar");
        // XEP-0084 §4.2: the data before the metadata that points to it. The server handles
        // one stream's requests in order.
        [
            Part::VCard,
            Part::AvatarData,
            Part::AvatarMetadata,
            Part::Nick,
        ]
        .into_iter()
        .map(|part| {
            let id = self.next_id();
            self.pending.insert(id.clone(), part);
            request(id, false, part.payload())
        })
        .collect()
    }

    /// Takes `iq` if it answers one of this publisher's requests (from the bot's own account or
    /// its server, `account`'s domain); `None` otherwise, for the other handlers.
    pub(crate) fn answer(&mut self, iq: &Iq, account: &BareJid) -> Option<Next> {
        let (id, from, ok, payload) = match iq {
            Iq::Result {
                id, from, payload, ..
            } => (id, from, true, payload.as_ref()),
            Iq::Error { id, from, .. } => (id, from, false, None),
            Iq::Get { .. } | Iq::Set { .. } => return None,
        };
        let ours = match from {
            None => true,
            Some(from) => from.to_bare() == *account || from.as_str() == account.domain().as_str(),
        };
        if !ours {
            return None;
        }
        if self.checking.as_deref() == Some(id.as_str()) {
            self.checking = None;
            if ok && payload.is_some_and(same_vcard) {
                tracing::info!("the server already has the bot's vCard: not publishing again");
                self.current = Some(fingerprint());
                return Some(Next::default());
            }
            return Some(Next {
                send: self.publish_all(),
                ..Next::default()
            });
        }
        let part = self.pending.remove(id.as_str())?;
        if !ok {
            self.refused = true;
            if !self.warned.contains(&part) {
                self.warned.push(part);
                let error = match iq {
                    Iq::Error { error, .. } => format!("{:?}", error.defined_condition),
                    _ => String::new(),
                };
                tracing::warn!(
                    error,
                    "the server did not accept {}; going on without it",
                    part.describe()
                );
            }
        }
        if !self.pending.is_empty() {
            return Some(Next::default());
        }
        if self.refused {
            tracing::info!("profile published in part; the next start tries again");
            return Some(Next {
                announce: true,
                ..Next::default()
            });
        }
        tracing::info!("published the bot's nickname, vCard and avatar");
        let fingerprint = fingerprint();
        self.current = Some(fingerprint.clone());
        Some(Next {
            send: Vec::new(),
            published: Some(fingerprint),
            announce: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn account() -> BareJid {
        BareJid::from_str("bot@localhost").unwrap()
    }

    fn iqs(out: Vec<Stanza>) -> Vec<(String, Element)> {
        out.into_iter()
            .map(|stanza| match stanza {
                Stanza::Iq(Iq::Get { id, payload, .. } | Iq::Set { id, payload, .. }) => {
                    (id, payload)
                }
                other => panic!("not a request: {other:?}"),
            })
            .collect()
    }

    fn result(id: &str, payload: Option<Element>) -> Iq {
        Iq::Result {
            from: None,
            to: None,
            id: id.into(),
            payload,
        }
    }

    fn error(id: &str) -> Iq {
        Iq::Error {
            from: None,
            to: None,
            id: id.into(),
            error: tokio_xmpp::parsers::stanza_error::StanzaError::new(
                tokio_xmpp::parsers::stanza_error::ErrorType::Cancel,
                tokio_xmpp::parsers::stanza_error::DefinedCondition::FeatureNotImplemented,
                "en",
                "no",
            ),
            payload: None,
        }
    }

    #[test]
    fn the_avatar_is_the_shipped_96_pixel_png() {
        assert_eq!(&AVATAR_PNG[..8], b"\x89PNG\r\n\x1a\n");
        // IHDR: width and height, big-endian, at bytes 16..24.
        assert_eq!(&AVATAR_PNG[16..20], &AVATAR_SIDE.to_be_bytes());
        assert_eq!(&AVATAR_PNG[20..24], &AVATAR_SIDE.to_be_bytes());
        assert_eq!(avatar_sha1_hex().len(), 40);
    }

    #[test]
    fn the_vcard_has_name_nickname_description_and_photo() {
        let vcard = vcard();
        let xml = String::from(&vcard);
        assert!(xml.contains("<FN>mqtt2xmpp</FN>"), "{xml}");
        assert!(xml.contains("<NICKNAME>mqtt2xmpp</NICKNAME>"), "{xml}");
        assert!(
            xml.contains("<DESC>mqtt2xmpp sensor bot: send help</DESC>"),
            "{xml}"
        );
        // xmpp-parsers reads our PHOTO back as the same bytes.
        let parsed = tokio_xmpp::parsers::vcard::VCard::try_from(vcard.clone()).unwrap();
        let photo = parsed.photo.expect("photo");
        assert_eq!(photo.type_.data, "image/png");
        assert_eq!(photo.binval.data, AVATAR_PNG);
        assert!(same_vcard(&vcard));
    }

    #[test]
    fn a_vcard_that_differs_or_is_empty_is_not_the_same() {
        let empty: Element = "<vCard xmlns='vcard-temp'/>".parse().unwrap();
        assert!(!same_vcard(&empty));
        let other_name = String::from(&vcard()).replace("<FN>mqtt2xmpp</FN>", "<FN>x</FN>");
        assert!(!same_vcard(&other_name.parse().unwrap()));
        // Wrapped BINVAL, as servers may store it: the same.
        let b64 = BASE64_STANDARD.encode(AVATAR_PNG);
        let wrapped: String = b64
            .as_bytes()
            .chunks(76)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join("\n");
        let rewrapped = String::from(&vcard()).replace(&b64, &wrapped);
        assert!(same_vcard(&rewrapped.parse().unwrap()));
        // As Prosody's vcard_legacy returns it: DESC as NOTE, an empty N added.
        let prosody = String::from(&vcard())
            .replace("<DESC>", "<N><FAMILY/><GIVEN/></N><NOTE>")
            .replace("</DESC>", "</NOTE>");
        assert!(same_vcard(&prosody.parse().unwrap()), "{prosody}");
        // Another photo: not the same.
        let other_photo = String::from(&vcard()).replace(&b64, "aGVsbG8=");
        assert!(!same_vcard(&other_photo.parse().unwrap()));
    }

    #[test]
    fn with_a_database_it_publishes_once_and_then_never_again() {
        let mut publisher = Publisher::new(true, None);
        let sent = iqs(publisher.online());
        assert_eq!(sent.len(), 4, "{sent:?}");
        assert!(sent[0].1.is("vCard", ns::VCARD));
        let nodes: Vec<_> = sent[1..]
            .iter()
            .map(|(_, p)| {
                p.get_child("publish", ns::PUBSUB)
                    .and_then(|p| p.attr("node"))
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(nodes, [ns::AVATAR_DATA, ns::AVATAR_METADATA, ns::NICK]);
        let mut last = None;
        for (id, _) in &sent {
            last = publisher.answer(&result(id, None), &account());
        }
        let last = last.unwrap();
        assert_eq!(last.published, Some(fingerprint()));
        assert!(last.announce, "presence again with the new avatar");
        // A reconnection in the same process, and a restart with the stored fingerprint.
        assert!(publisher.online().is_empty());
        assert!(Publisher::new(true, Some(fingerprint()))
            .online()
            .is_empty());
        // A changed profile (another fingerprint stored) is published again.
        assert_eq!(Publisher::new(true, Some("old".into())).online().len(), 4);
    }

    #[test]
    fn a_refused_part_is_warned_about_and_the_rest_still_goes_out() {
        let mut publisher = Publisher::new(true, None);
        let sent = iqs(publisher.online());
        let mut outcomes = Vec::new();
        for (i, (id, _)) in sent.iter().enumerate() {
            let iq = if i == 0 { error(id) } else { result(id, None) };
            outcomes.push(publisher.answer(&iq, &account()).expect("ours"));
        }
        // Not saved: the next start tries again.
        assert!(outcomes.iter().all(|next| next.published.is_none()));
        assert_eq!(publisher.online().len(), 4);
    }

    #[test]
    fn without_a_database_it_compares_with_the_servers_vcard_first() {
        // The server has it already: nothing is published.
        let mut publisher = Publisher::new(false, None);
        let sent = iqs(publisher.online());
        assert_eq!(sent.len(), 1);
        assert!(sent[0].1.is("vCard", ns::VCARD) && sent[0].1.children().count() == 0);
        let next = publisher
            .answer(&result(&sent[0].0, Some(vcard())), &account())
            .unwrap();
        assert_eq!(next, Next::default());
        assert!(publisher.online().is_empty(), "known for this process");

        // An empty vCard, or none at all (an error): published.
        for answer in [
            |id: &str| result(id, Some("<vCard xmlns='vcard-temp'/>".parse().unwrap())),
            |id: &str| error(id),
        ] {
            let mut publisher = Publisher::new(false, None);
            let sent = iqs(publisher.online());
            let next = publisher.answer(&answer(&sent[0].0), &account()).unwrap();
            assert_eq!(next.send.len(), 4);
        }
    }

    #[test]
    fn answers_that_are_not_its_own_are_left_alone() {
        let mut publisher = Publisher::new(true, None);
        let sent = iqs(publisher.online());
        let id = &sent[0].0;
        // Unknown id; right id from a stranger; a request with the same id.
        assert!(publisher
            .answer(&result("other", None), &account())
            .is_none());
        let mut forged = result(id, None);
        if let Iq::Result { from, .. } = &mut forged {
            *from = Some(tokio_xmpp::jid::Jid::from_str("eve@localhost/x").unwrap());
        }
        assert!(publisher.answer(&forged, &account()).is_none());
        assert!(publisher
            .answer(
                &Iq::Get {
                    from: None,
                    to: None,
                    id: id.clone(),
                    payload: Element::builder("vCard", ns::VCARD).build()
                },
                &account()
            )
            .is_none());
        // Its own account's domain and bare JID are accepted.
        let mut from_server = result(id, None);
        if let Iq::Result { from, .. } = &mut from_server {
            *from = Some(tokio_xmpp::jid::Jid::from_str("localhost").unwrap());
        }
        assert!(publisher.answer(&from_server, &account()).is_some());
    }
}
