//! One room (XEP-0045), sans I/O: its occupants by nickname and by real JID, their roles and
//! affiliations, its subject and its discussion history. Every method takes a stanza's
//! meaning (a join, a leave, a message) and pushes the stanzas it causes as [`Delivery`]
//! values; `mod.rs` decides which room a stanza is for.
//!
//! A new room is non-anonymous (every occupant sees the others' real JIDs, XEP-0045 §7.2.4),
//! public, open, unmoderated and temporary (gone when the last occupant leaves): the default
//! configuration of an instant room (§10.1.2), which its owners change with the form of
//! `owner.rs` (semi-anonymous, members-only, password, persistent …).
//!
//! Non-anonymous by default, where Prosody's rooms are semi-anonymous (only moderators see
//! real JIDs): the rooms here are a small server's, where people and devices meet under
//! their own accounts, and the bot in a room decides whom to answer by the real JID it sees
//! (its allow list); a semi-anonymous room would hide that from it. The joiner is told so
//! with status 100 in its own presence (§7.2.4).

use std::collections::{BTreeMap, HashMap, VecDeque};

use tokio_xmpp::jid::{BareJid, FullJid, Jid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::message::{Message, MessageType};
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};

use super::super::Delivery;
use super::config::RoomConfig;

/// XEP-0359 stanza ids.
pub(super) const SID: &str = "urn:xmpp:sid:0";

/// An occupant's role in the room (XEP-0045 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// May kick and moderate (owners and admins join as moderators, §5.1.2).
    Moderator,
    /// May speak.
    Participant,
    /// May listen, and speak only in an unmoderated room (§5.1.1).
    Visitor,
}

impl Role {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Role::Moderator => "moderator",
            Role::Participant => "participant",
            Role::Visitor => "visitor",
        }
    }
}

/// A user's long-lived standing in the room (XEP-0045 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(dead_code)] // Granted through muc#admin.
pub enum Affiliation {
    /// Created the room (§10.1.1), or was made an owner (§10.3).
    Owner,
    /// Manages members and bans (§9).
    Admin,
    /// Belongs to the room: may join a members-only room (§7.2.7).
    Member,
    /// Anyone else.
    None,
    /// Banned: may not join (§7.2.8, §9.1).
    Outcast,
}

impl Affiliation {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Affiliation::Owner => "owner",
            Affiliation::Admin => "admin",
            Affiliation::Member => "member",
            Affiliation::None => "none",
            Affiliation::Outcast => "outcast",
        }
    }
}

/// Someone in the room.
#[derive(Debug, Clone)]
pub struct Occupant {
    /// The session that joined.
    pub real: FullJid,
    /// Other sessions of the same account under the same nickname (§7.2; `sessions.rs`):
    /// they get what `real` gets, and the others see one occupant.
    pub(super) others: Vec<FullJid>,
    /// Its role now.
    pub role: Role,
    /// The last presence it sent to the room (show, status, other payloads).
    pub(super) presence: Presence,
}

/// A message of the discussion history, and when the room got it.
#[derive(Debug, Clone)]
pub(super) struct Said {
    pub(super) message: Message,
    pub(super) at_ms: i64,
}

/// What a joiner asked of the history (XEP-0045 §7.2.15): each field bounds it further.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryRequest {
    /// At most this many messages (`maxstanzas`; `maxchars='0'` means none).
    pub max_stanzas: Option<usize>,
    /// Only messages this recent, in milliseconds since the Unix epoch (`seconds`, `since`).
    pub not_before_ms: Option<i64>,
}

/// A room. See the module documentation.
#[derive(Debug)]
pub struct Room {
    pub(super) jid: BareJid,
    /// The account that created it (counted against its rooms).
    pub creator: BareJid,
    pub(super) occupants: BTreeMap<String, Occupant>,
    pub(super) affiliations: HashMap<BareJid, Affiliation>,
    pub(super) subject: Option<(String, Option<String>)>,
    pub(super) history: VecDeque<Said>,
    /// What its owners configured (`config.rs`).
    pub(super) config: RoomConfig,
    /// Until when a new room waits for its owner's configuration, in milliseconds since the
    /// Unix epoch (§10.1.1, `owner.rs`); `None`: open.
    pub(super) locked_until_ms: Option<i64>,
}

impl Room {
    /// A new room at `jid`, created by `creator`, which becomes its owner (§10.1.1).
    pub fn new(jid: BareJid, creator: &FullJid, config: RoomConfig) -> Self {
        let mut affiliations = HashMap::new();
        affiliations.insert(creator.to_bare(), Affiliation::Owner);
        Self {
            jid,
            creator: creator.to_bare(),
            occupants: BTreeMap::new(),
            affiliations,
            subject: None,
            history: VecDeque::new(),
            config,
            locked_until_ms: None,
        }
    }

    /// Whether nobody is in the room.
    pub fn is_empty(&self) -> bool {
        self.occupants.is_empty()
    }

    /// How many are in the room.
    pub fn len(&self) -> usize {
        self.occupants.len()
    }

    /// The nickname `real` is in the room under, if it is in.
    pub fn nick_of(&self, real: &FullJid) -> Option<&str> {
        self.occupants
            .iter()
            .find(|(_, o)| &o.real == real || o.others.contains(real))
            .map(|(nick, _)| nick.as_str())
    }

    /// The occupant called `nick`.
    pub fn occupant(&self, nick: &str) -> Option<&Occupant> {
        self.occupants.get(nick)
    }

    /// The room JID of `nick`, `room@service/nick`.
    pub fn occupant_jid(&self, nick: &str) -> Option<FullJid> {
        self.jid.with_resource_str(nick).ok()
    }

    pub(super) fn affiliation(&self, jid: &BareJid) -> Affiliation {
        self.affiliations
            .get(jid)
            .copied()
            .unwrap_or(Affiliation::None)
    }

    /// `real` joins as `nick` (the caller checked the nick is free and the limits), with the
    /// presence it sent: everyone gets its presence, and the joiner gets, in this order, the
    /// others' presence, its own with status 110 (and 100: the room shows real JIDs; 201 if it
    /// just created the room), the history asked for and the subject (§7.2.2–§7.2.16).
    pub fn join(
        &mut self,
        real: &FullJid,
        nick: &str,
        presence: Presence,
        codes: &[u16],
        history: HistoryRequest,
        out: &mut Vec<Delivery>,
    ) {
        // §5.1.2: owners and admins join as moderators; in a moderated room, those without
        // an affiliation join as visitors.
        let role = match self.affiliation(&real.to_bare()) {
            Affiliation::Owner | Affiliation::Admin => Role::Moderator,
            Affiliation::None if self.config.moderated => Role::Visitor,
            Affiliation::Member | Affiliation::None | Affiliation::Outcast => Role::Participant,
        };
        let occupant = Occupant {
            real: real.clone(),
            others: Vec::new(),
            role,
            presence: without_muc(presence),
        };
        // §7.2.3: the joiner first gets the presence of everyone already there.
        for (other, there) in &self.occupants {
            if let Some(p) = self.presence_of(other, there, &[], None) {
                let p = self.shown_to(p, there, &occupant);
                out.push(Delivery::stanza(real.clone(), with_to(p, real)));
            }
        }
        self.occupants.insert(nick.to_string(), occupant.clone());
        // §7.2.4: everyone else learns of the joiner.
        self.broadcast_presence(nick, &occupant, &[], None, Some(real), out);
        // §7.2.5, §7.2.4 (100: non-anonymous), and the caller's `codes` (§7.2.12 170: the
        // room is logged; §10.1.1 201: the room was just created).
        let mut own = self.anonymity_codes().to_vec();
        own.push(110);
        own.extend_from_slice(codes);
        if let Some(p) = self.presence_of(nick, &occupant, &own, None) {
            out.push(Delivery::stanza(real.clone(), with_to(p, real)));
        }
        // §7.2.15: the history, then (§7.2.16) the subject, always, empty if none.
        for said in self.history_for(history) {
            let mut message = said.message.clone();
            message.to = Some(real.clone().into());
            message.payloads.push(delay(&self.jid, said.at_ms));
            out.push(Delivery::stanza(real.clone(), message));
        }
        let mut subject = Message::new_with_type(MessageType::Groupchat, Some(real.clone().into()));
        subject.id = Some(tokio_xmpp::parsers::message::Id(new_id()));
        match &self.subject {
            Some((text, by)) => {
                subject.from = Some(
                    by.as_deref()
                        .and_then(|nick| self.occupant_jid(nick))
                        .map_or_else(|| self.jid.clone().into(), Jid::from),
                );
                subject.subjects.insert(Default::default(), text.clone());
            }
            None => {
                subject.from = Some(self.jid.clone().into());
                subject.subjects.insert(Default::default(), String::new());
            }
        }
        out.push(Delivery::stanza(real.clone(), subject));
    }

    /// `nick` sent a presence update (a new show or status): everyone gets it (§7.2.1 note,
    /// §7.7 of RFC 6121 for directed presence).
    pub fn update(&mut self, nick: &str, presence: Presence, out: &mut Vec<Delivery>) {
        let Some(occupant) = self.occupants.get_mut(nick) else {
            return;
        };
        occupant.presence = without_muc(presence);
        let occupant = occupant.clone();
        self.broadcast_presence(nick, &occupant, &[], None, None, out);
    }

    /// `nick` leaves (§7.14): everyone, itself included (with 110), gets its unavailable
    /// presence with role `none`.
    pub fn leave(&mut self, nick: &str, status: Option<Presence>, out: &mut Vec<Delivery>) {
        let Some(mut occupant) = self.occupants.remove(nick) else {
            return;
        };
        let mut unavailable = Presence::new(PresenceType::Unavailable);
        if let Some(status) = status {
            unavailable.statuses = status.statuses;
        }
        occupant.presence = unavailable;
        self.broadcast_presence(nick, &occupant, &[], None, None, out);
        if let Some(p) = self.presence_of(nick, &occupant, &[110], None) {
            out.push(Delivery::stanza(
                occupant.real.clone(),
                with_to(p, &occupant.real),
            ));
        }
    }

    /// `old` becomes `new` (§7.6; the caller checked `new` is free): everyone gets the
    /// unavailable presence of `old` with status 303 and the new nick, then the available
    /// presence of `new`; the occupant's own copies carry 110 as well.
    pub fn change_nick(
        &mut self,
        old: &str,
        new: &str,
        presence: Presence,
        out: &mut Vec<Delivery>,
    ) {
        let Some(mut occupant) = self.occupants.remove(old) else {
            return;
        };
        let real = occupant.real.clone();
        let available = without_muc(presence);
        occupant.presence = Presence::new(PresenceType::Unavailable);
        self.broadcast_presence(old, &occupant, &[303], Some(new), Some(&real), out);
        if let Some(p) = self.presence_of(old, &occupant, &[110, 303], Some(new)) {
            out.push(Delivery::stanza(real.clone(), with_to(p, &real)));
        }
        occupant.presence = available;
        self.occupants.insert(new.to_string(), occupant.clone());
        self.broadcast_presence(new, &occupant, &[], None, Some(&real), out);
        if let Some(p) = self.presence_of(new, &occupant, &[110], None) {
            out.push(Delivery::stanza(real.clone(), with_to(p, &real)));
        }
    }

    /// `nick` says `message` to the room (§7.4): every occupant, the sender included, gets it
    /// from `room@service/nick` with the room's stanza id `stanza_id` (XEP-0359; its archive
    /// id, see `archive.rs`). A subject in it changes the room's subject (§8.1); a body goes
    /// into the history. Returns the message as sent, without `to`.
    pub fn groupchat(
        &mut self,
        nick: &str,
        mut message: Message,
        now_ms: i64,
        stanza_id: String,
        out: &mut Vec<Delivery>,
    ) -> Option<Message> {
        let from = self.occupant_jid(nick)?;
        message.from = Some(from.into());
        // XEP-0359 §5: an id claiming to be the room's is not the client's to set.
        let room = self.jid.as_str().to_string();
        message
            .payloads
            .retain(|p| !(p.is("stanza-id", SID) && p.attr("by") == Some(room.as_str())));
        message.payloads.push(
            Element::builder("stanza-id", SID)
                .attr(ncname!("by"), room.as_str())
                .attr(ncname!("id"), stanza_id)
                .build(),
        );
        if let Some(subject) = message.subjects.values().next() {
            if message.bodies.is_empty() {
                self.subject = Some((subject.clone(), Some(nick.to_string())));
            }
        }
        if !message.bodies.is_empty() && self.config.max_history > 0 {
            if self.history.len() >= self.config.max_history {
                self.history.pop_front();
            }
            let mut kept = message.clone();
            kept.to = None;
            self.history.push_back(Said {
                message: kept,
                at_ms: now_ms,
            });
        }
        for session in self.occupants.values().flat_map(Occupant::sessions) {
            let mut copy = message.clone();
            copy.to = Some(session.clone().into());
            out.push(Delivery::stanza(session.clone(), copy));
        }
        message.to = None;
        Some(message)
    }

    /// `from_nick` sends `message` privately to `to_nick` (§7.5), from its room JID, marked with
    /// `<x xmlns='http://jabber.org/protocol/muc#user'/>`. `false` if there is no `to_nick`.
    pub fn private(
        &self,
        from_nick: &str,
        to_nick: &str,
        mut message: Message,
        out: &mut Vec<Delivery>,
    ) -> bool {
        let (Some(target), Some(from)) =
            (self.occupants.get(to_nick), self.occupant_jid(from_nick))
        else {
            return false;
        };
        message.from = Some(from.into());
        if !message.payloads.iter().any(|p| p.is("x", ns::MUC_USER)) {
            message
                .payloads
                .push(Element::builder("x", ns::MUC_USER).build());
        }
        for session in target.sessions() {
            message.to = Some(session.clone().into());
            out.push(Delivery::stanza(session.clone(), message.clone()));
        }
        true
    }

    /// The messages of the history a joiner gets for `request`, oldest first.
    pub(super) fn history_for(&self, request: HistoryRequest) -> Vec<&Said> {
        let recent: Vec<&Said> = self
            .history
            .iter()
            .filter(|said| request.not_before_ms.is_none_or(|t| said.at_ms >= t))
            .collect();
        let keep = request.max_stanzas.unwrap_or(usize::MAX).min(recent.len());
        recent[recent.len() - keep..].to_vec()
    }

    /// Sends `nick`'s presence to every occupant but `except`.
    pub(super) fn broadcast_presence(
        &self,
        nick: &str,
        occupant: &Occupant,
        codes: &[u16],
        new_nick: Option<&str>,
        except: Option<&FullJid>,
        out: &mut Vec<Delivery>,
    ) {
        let Some(p) = self.presence_of(nick, occupant, codes, new_nick) else {
            return;
        };
        for other in self.occupants.values() {
            if Some(&other.real) != except {
                let p = self.shown_to(p.clone(), occupant, other);
                for session in other.sessions() {
                    out.push(Delivery::stanza(
                        session.clone(),
                        with_to(p.clone(), session),
                    ));
                }
            }
        }
    }

    /// `nick`'s presence as the room shows it: from `room@service/nick`, with its affiliation,
    /// role (`none` once unavailable), real JID and `codes`. A semi-anonymous room hides the
    /// real JID from some (`Room::shown_to`, §7.2.3) before sending it.
    pub(super) fn presence_of(
        &self,
        nick: &str,
        occupant: &Occupant,
        codes: &[u16],
        new_nick: Option<&str>,
    ) -> Option<Presence> {
        let mut presence = occupant.presence.clone();
        presence.from = Some(self.occupant_jid(nick)?.into());
        presence.id = None;
        let role = if presence.type_ == PresenceType::Unavailable {
            "none"
        } else {
            occupant.role.as_str()
        };
        let mut item = Element::builder("item", ns::MUC_USER)
            .attr(
                ncname!("affiliation"),
                self.affiliation(&occupant.real.to_bare()).as_str(),
            )
            .attr(ncname!("role"), role)
            .attr(ncname!("jid"), occupant.real.as_str());
        if let Some(new_nick) = new_nick {
            item = item.attr(ncname!("nick"), new_nick);
        }
        let mut x = Element::builder("x", ns::MUC_USER).append(item.build());
        for code in codes {
            x = x.append(
                Element::builder("status", ns::MUC_USER)
                    .attr(ncname!("code"), code.to_string())
                    .build(),
            );
        }
        presence.payloads.push(x.build());
        Some(presence)
    }
}

/// `presence` addressed to `to`.
pub(super) fn with_to(mut presence: Presence, to: &FullJid) -> Presence {
    presence.to = Some(to.clone().into());
    presence
}

/// A joiner's presence without what it said to the room (the `<x/>` of the muc and
/// muc#user namespaces), without addresses: what the room shows of it.
fn without_muc(mut presence: Presence) -> Presence {
    presence
        .payloads
        .retain(|p| !(p.is("x", ns::MUC) || p.is("x", ns::MUC_USER)));
    presence.from = None;
    presence.to = None;
    presence
}

/// XEP-0203 delay stamp from the room, for a message of the history (§7.2.15).
pub(super) fn delay(room: &BareJid, at_ms: i64) -> Element {
    let time =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(at_ms).unwrap_or(0));
    Element::builder("delay", ns::DELAY)
        .attr(ncname!("from"), room.as_str())
        .attr(
            ncname!("stamp"),
            humantime::format_rfc3339_seconds(time).to_string(),
        )
        .build()
}

/// A fresh id for a stanza the room makes.
pub(super) fn new_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}
