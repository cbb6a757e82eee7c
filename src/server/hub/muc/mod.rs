//! Multi-user chat (XEP-0045): the room service at `conference.DOMAIN`, served inside the hub.
//! Every stanza a local session sends to the service's domain comes here (rule 2 of
//! `router.rs`): to the service itself (disco), to a room's bare JID (groupchat messages,
//! disco), or to an occupant's room JID `room@service/nick` (join, leave, nick change,
//! private messages, self-ping). `room.rs` holds one room's state and the stanzas it sends;
//! `archive.rs` keeps rooms' groupchat messages and answers archive queries to a room (XEP-0313).
//!
//! What exists now: instant rooms made by the first joiner (its owner), non-anonymous, public,
//! temporary; presence, nick changes, groupchat with stanza ids, subject, private messages,
//! discussion history, disco, self-ping (XEP-0410). Not yet: configuration forms, persistent
//! rooms, affiliation management, kick and ban, invitations.

mod archive;
mod config;
mod room;

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio_xmpp::jid::{BareJid, FullJid, Jid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::date::DateTime;
use tokio_xmpp::parsers::disco::{DiscoInfoResult, DiscoItemsResult, Identity, Item};
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::{Message, MessageType};
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::parsers::stanza_error::DefinedCondition;
use tokio_xmpp::Stanza;

use self::config::RoomConfig;
use self::room::{HistoryRequest, Room};
use super::{bounce, Delivery, Hub};
use crate::server::limits::MucLimits;

/// The room features every room has now (XEP-0045 §6.4, §15.2.2).
const ROOM_FEATURES: &[&str] = &[
    ns::DISCO_INFO,
    ns::MUC,
    "muc_public",
    "muc_temporary",
    "muc_open",
    "muc_unsecured",
    "muc_nonanonymous",
    "muc_unmoderated",
    room::SID,
];

/// The room service's state in the hub.
#[derive(Debug)]
pub(super) struct MucState {
    /// The service's domain (`conference.DOMAIN` unless configured otherwise), or none.
    service: Option<BareJid>,
    /// The rooms that exist, by bare JID.
    rooms: BTreeMap<BareJid, Room>,
    limits: MucLimits,
}

impl MucState {
    /// The service at `conference.DOMAIN`, with no rooms.
    pub(super) fn new(domain: &str) -> Self {
        Self {
            service: BareJid::new(&format!("conference.{domain}")).ok(),
            rooms: BTreeMap::new(),
            limits: MucLimits::default(),
        }
    }
}

impl Hub {
    /// Serves the rooms at `service` instead, or none at all; rooms that exist are dropped.
    #[allow(dead_code)] // The flag that sets it comes with the configuration.
    pub fn set_muc_service(&mut self, service: Option<BareJid>) {
        self.muc.service = service.filter(|s| s.node().is_none() && *s != self.domain_jid);
        self.muc.rooms.clear();
    }

    /// Takes the rooms' limits.
    pub(super) fn set_muc_limits(&mut self, limits: MucLimits) {
        self.muc.limits = limits;
    }

    /// The room service's domain, if it is on and no external component serves that domain
    /// (listed in the server's disco#items).
    pub(super) fn muc_service(&self) -> Option<&BareJid> {
        self.muc
            .service
            .as_ref()
            .filter(|s| !self.components.contains_key(*s))
    }

    /// Whether `stanza` is addressed to the room service or one of its rooms.
    pub(super) fn muc_addressed(&self, stanza: &Stanza) -> bool {
        let to = match stanza {
            Stanza::Message(m) => m.to.as_ref(),
            Stanza::Presence(p) => p.to.as_ref(),
            Stanza::Iq(iq) => iq.to(),
        };
        match (&self.muc.service, to) {
            (Some(service), Some(to)) => to.domain() == service.domain(),
            _ => false,
        }
    }

    /// A stanza from the bound session `from` to the room service (rule 2 of `router.rs`).
    pub(super) fn muc_inbound(&mut self, from: &FullJid, stanza: Stanza, out: &mut Vec<Delivery>) {
        match stanza {
            Stanza::Presence(mut p) => {
                p.from = Some(from.clone().into());
                self.muc_presence(from, p, out);
            }
            Stanza::Message(mut m) => {
                m.from = Some(from.clone().into());
                self.muc_message(from, m, out);
            }
            Stanza::Iq(mut iq) => {
                *iq.from_mut() = Some(from.clone().into());
                self.muc_iq(from, iq, out);
            }
        }
    }

    /// The session `jid` ended, or sent unavailable presence to everyone (RFC 6121 §4.6.3):
    /// it leaves every room it is in.
    pub(super) fn muc_session_ended(&mut self, jid: &FullJid, out: &mut Vec<Delivery>) {
        let rooms: Vec<(BareJid, String)> = self
            .muc
            .rooms
            .iter()
            .filter_map(|(room_jid, room)| Some((room_jid.clone(), room.nick_of(jid)?.to_string())))
            .collect();
        for (room_jid, nick) in rooms {
            self.muc_leave(&room_jid, &nick, None, out);
        }
    }

    fn muc_leave(
        &mut self,
        room_jid: &BareJid,
        nick: &str,
        status: Option<Presence>,
        out: &mut Vec<Delivery>,
    ) {
        if let Some(room) = self.muc.rooms.get_mut(room_jid) {
            room.leave(nick, status, out);
            // Temporary rooms are gone with their last occupant (§10.1.1).
            if room.is_empty() {
                self.muc.rooms.remove(room_jid);
            }
        }
    }

    /// Presence to a room JID: join, presence update, nick change, leave (§7.2, §7.6, §7.14).
    fn muc_presence(&mut self, from: &FullJid, presence: Presence, out: &mut Vec<Delivery>) {
        let refuse = |condition, out: &mut Vec<Delivery>| {
            if let Some(error) = bounce(&presence.clone().into(), condition) {
                out.push(Delivery::stanza(from.clone(), error));
            }
        };
        let Some(to) = presence.to.clone() else {
            return;
        };
        if to.node().is_none() {
            // Presence to the service itself means nothing.
            return;
        }
        let room_jid = to.to_bare();
        let Some(nick) = to.resource().map(|r| r.as_str().to_string()) else {
            // §7.2.1: a join needs a nickname.
            if matches!(presence.type_, PresenceType::None) {
                refuse(DefinedCondition::JidMalformed, out);
            }
            return;
        };
        let current = self
            .muc
            .rooms
            .get(&room_jid)
            .and_then(|room| room.nick_of(from))
            .map(str::to_string);
        match presence.type_ {
            PresenceType::Unavailable => {
                if let Some(current) = current {
                    self.muc_leave(&room_jid, &current, Some(presence), out);
                }
            }
            PresenceType::None => {
                if current.as_deref() == Some(nick.as_str()) {
                    if let Some(room) = self.muc.rooms.get_mut(&room_jid) {
                        room.update(&nick, presence, out);
                    }
                    return;
                }
                if !self.nick_acceptable(&nick) {
                    refuse(DefinedCondition::NotAcceptable, out);
                    return;
                }
                if let Some(room) = self.muc.rooms.get(&room_jid) {
                    // §7.2.9: a nickname another occupant has.
                    if room.occupant(&nick).is_some() {
                        refuse(DefinedCondition::Conflict, out);
                        return;
                    }
                }
                match current {
                    Some(current) => {
                        if let Some(room) = self.muc.rooms.get_mut(&room_jid) {
                            room.change_nick(&current, &nick, presence, out);
                        }
                    }
                    None => self.muc_join(from, room_jid, &nick, presence, out),
                }
            }
            // Errors (a client bouncing a room's presence) and subscriptions mean nothing here.
            _ => {}
        }
    }

    /// Whether `nick` is short enough and has no control characters.
    fn nick_acceptable(&self, nick: &str) -> bool {
        !nick.is_empty()
            && nick.chars().count() <= self.muc.limits.max_nick_chars
            && !nick.chars().any(char::is_control)
    }

    /// `from` joins `room_jid` as `nick` (free and acceptable), creating it if needed.
    fn muc_join(
        &mut self,
        from: &FullJid,
        room_jid: BareJid,
        nick: &str,
        presence: Presence,
        out: &mut Vec<Delivery>,
    ) {
        let refuse = |condition, out: &mut Vec<Delivery>| {
            if let Some(error) = bounce(&presence.clone().into(), condition) {
                out.push(Delivery::stanza(from.clone(), error));
            }
        };
        let history = history_request(&presence);
        let created = !self.muc.rooms.contains_key(&room_jid);
        if created {
            let creator = from.to_bare();
            let owned = self
                .muc
                .rooms
                .values()
                .filter(|room| room.creator == creator)
                .count();
            // §10.1.1: the service may refuse to create a room with `not-allowed`.
            if owned >= self.muc.limits.max_rooms_per_user {
                refuse(DefinedCondition::NotAllowed, out);
                return;
            }
            let config =
                RoomConfig::instant(self.muc.limits.max_occupants, self.muc.limits.max_history);
            let room = Room::new(room_jid.clone(), from, config);
            self.muc.rooms.insert(room_jid.clone(), room);
        }
        let Some(room) = self.muc.rooms.get_mut(&room_jid) else {
            return;
        };
        // §7.2.10: the room is full.
        if room.len() >= room.config.max_occupants {
            refuse(DefinedCondition::ServiceUnavailable, out);
            if room.is_empty() {
                self.muc.rooms.remove(&room_jid);
            }
            return;
        }
        room.join(from, nick, presence, created, history, out);
    }

    /// A message to the service, a room or an occupant (§7.4, §7.5, §8.1).
    fn muc_message(&mut self, from: &FullJid, message: Message, out: &mut Vec<Delivery>) {
        let refuse = |condition, out: &mut Vec<Delivery>| {
            if let Some(error) = bounce(&message.clone().into(), condition) {
                out.push(Delivery::stanza(from.clone(), error));
            }
        };
        let Some(to) = message.to.clone() else {
            return;
        };
        if message.type_ == MessageType::Error {
            return;
        }
        let room_jid = to.to_bare();
        let max_subject = self.muc.limits.max_subject_bytes;
        let Some(room) = self
            .muc
            .rooms
            .get_mut(&room_jid)
            .filter(|_| to.node().is_some())
        else {
            refuse(DefinedCondition::ItemNotFound, out);
            return;
        };
        // §7.4, §7.5: only occupants speak in a room.
        let Some(nick) = room.nick_of(from).map(str::to_string) else {
            refuse(DefinedCondition::NotAcceptable, out);
            return;
        };
        match to.resource() {
            None => {
                if message.type_ != MessageType::Groupchat {
                    // Invitations (§7.8) come later.
                    refuse(DefinedCondition::BadRequest, out);
                    return;
                }
                if message.subjects.values().any(|s| s.len() > max_subject) {
                    refuse(DefinedCondition::NotAcceptable, out);
                    return;
                }
                self.muc_groupchat(&room_jid, &nick, message.clone(), out);
            }
            Some(target) => {
                // §7.5: a private message of type groupchat is refused.
                if message.type_ == MessageType::Groupchat {
                    refuse(DefinedCondition::BadRequest, out);
                    return;
                }
                if !room.private(&nick, target.as_str(), message.clone(), out) {
                    refuse(DefinedCondition::ItemNotFound, out);
                }
            }
        }
    }

    /// An IQ to the service, a room or an occupant: disco (§6), self-ping (XEP-0410), and IQs
    /// between occupants, forwarded from the sender's room JID (§7.7 of XEP-0045 1.34).
    fn muc_iq(&mut self, from: &FullJid, iq: Iq, out: &mut Vec<Delivery>) {
        let is_request = matches!(iq, Iq::Get { .. } | Iq::Set { .. });
        let fail = |iq: &Iq, condition, out: &mut Vec<Delivery>| {
            if let Some(error) = bounce(&iq.clone().into(), condition) {
                out.push(Delivery::stanza(from.clone(), error));
            }
        };
        let Some(to) = iq.to().cloned() else {
            return;
        };
        let payload = match &iq {
            Iq::Get { payload, .. } | Iq::Set { payload, .. } => Some(payload.clone()),
            _ => None,
        };
        if let (Some(nick), Some(_)) = (to.resource(), to.node()) {
            let room = self.muc.rooms.get(&to.to_bare());
            let own = room.and_then(|r| r.nick_of(from));
            // XEP-0410 §3: a ping to one's own occupant JID is answered by the service.
            if payload.as_ref().is_some_and(|p| p.is("ping", ns::PING))
                && own.is_none_or(|own| own == nick.as_str())
            {
                if own.is_some() {
                    answer(&iq, from, Ok(None), out);
                } else {
                    fail(&iq, DefinedCondition::NotAcceptable, out);
                }
                return;
            }
            let (Some(room), Some(own)) = (room, own) else {
                if is_request {
                    fail(&iq, DefinedCondition::NotAcceptable, out);
                }
                return;
            };
            match (room.occupant(nick.as_str()), room.occupant_jid(own)) {
                (Some(target), Some(own_jid)) => {
                    let mut forwarded = iq.clone();
                    *forwarded.from_mut() = Some(own_jid.into());
                    set_iq_to(&mut forwarded, target.real.clone().into());
                    out.push(Delivery::stanza(target.real.clone(), forwarded));
                }
                _ if is_request => fail(&iq, DefinedCondition::ItemNotFound, out),
                _ => {}
            }
            return;
        }
        let Some(payload) = payload else {
            return;
        };
        let service = to.node().is_none();
        // XEP-0313 §5.1.2: the room's archive (`archive.rs`).
        if !service && payload.is("query", ns::MAM) {
            return self.muc_archive_iq(from, &to.to_bare(), &iq, out);
        }
        let room = (!service)
            .then(|| self.muc.rooms.get(&to.to_bare()))
            .flatten();
        let result = if payload.is("query", ns::DISCO_INFO) {
            if service {
                Ok(Some(service_info()))
            } else if room.is_some() {
                Ok(Some(room_info(&to.to_bare(), self.muc_archive_features())))
            } else {
                Err(DefinedCondition::ItemNotFound)
            }
        } else if payload.is("query", ns::DISCO_ITEMS) {
            if service {
                Ok(Some(self.service_items()))
            } else if room.is_some() {
                Ok(Some(
                    DiscoItemsResult {
                        node: None,
                        rsm: None,
                        items: Vec::new(),
                    }
                    .into(),
                ))
            } else {
                Err(DefinedCondition::ItemNotFound)
            }
        } else if payload.is("ping", ns::PING) && service {
            Ok(None)
        } else {
            Err(DefinedCondition::ServiceUnavailable)
        };
        answer(&iq, from, result, out);
    }

    /// disco#items of the service: its public rooms (every room, for now) (§6.3).
    fn service_items(&self) -> Element {
        DiscoItemsResult {
            node: None,
            rsm: None,
            items: self
                .muc
                .rooms
                .keys()
                .map(|jid| Item {
                    jid: jid.clone().into(),
                    node: None,
                    name: jid.node().map(|n| n.as_str().to_string()),
                })
                .collect(),
        }
        .into()
    }
}

/// disco#info of the service (§6.2).
fn service_info() -> Element {
    DiscoInfoResult {
        node: None,
        identities: vec![Identity::new("conference", "text", "en", "Chatrooms")],
        features: [ns::DISCO_INFO, ns::DISCO_ITEMS, ns::MUC, ns::PING]
            .iter()
            .map(|f| f.to_string())
            .collect(),
        extensions: Vec::new(),
    }
    .into()
}

/// disco#info of a room (§6.4), with the features of services on rooms (`extra`).
fn room_info(jid: &BareJid, extra: &[&str]) -> Element {
    let name = jid.node().map(|n| n.as_str()).unwrap_or_default();
    DiscoInfoResult {
        node: None,
        identities: vec![Identity::new("conference", "text", "en", name)],
        features: ROOM_FEATURES
            .iter()
            .chain(extra)
            .map(|f| f.to_string())
            .collect(),
        extensions: Vec::new(),
    }
    .into()
}

/// Answers the IQ get/set `iq` from `from`: a result (with `payload`) or an error.
fn answer(
    iq: &Iq,
    from: &FullJid,
    result: Result<Option<Element>, DefinedCondition>,
    out: &mut Vec<Delivery>,
) {
    let (Iq::Get { to, id, .. } | Iq::Set { to, id, .. }) = iq else {
        return;
    };
    match result {
        Ok(payload) => out.push(Delivery::stanza(
            from.clone(),
            Iq::Result {
                from: to.clone(),
                to: Some(from.clone().into()),
                id: id.clone(),
                payload,
            },
        )),
        Err(condition) => {
            if let Some(error) = bounce(&iq.clone().into(), condition) {
                out.push(Delivery::stanza(from.clone(), error));
            }
        }
    }
}

/// Sets the `to` of an IQ.
fn set_iq_to(iq: &mut Iq, jid: Jid) {
    match iq {
        Iq::Get { to, .. } | Iq::Set { to, .. } | Iq::Result { to, .. } | Iq::Error { to, .. } => {
            *to = Some(jid)
        }
    }
}

/// The history a joiner asks for in `<x xmlns='http://jabber.org/protocol/muc'><history/>`
/// (§7.2.15); bad numbers and dates are ignored. The room's own bound applies after.
fn history_request(presence: &Presence) -> HistoryRequest {
    let Some(history) = presence
        .payloads
        .iter()
        .find(|p| p.is("x", ns::MUC))
        .and_then(|x| x.get_child("history", ns::MUC))
    else {
        return HistoryRequest::default();
    };
    let number = |name: &str| history.attr(name).and_then(|v| v.parse::<u64>().ok());
    let max_stanzas = match (number("maxstanzas"), number("maxchars")) {
        (_, Some(0)) => Some(0),
        (Some(n), _) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
        _ => None,
    };
    let by_seconds = number("seconds").map(|s| {
        now_ms().saturating_sub(i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX))
    });
    let by_since = history
        .attr("since")
        .and_then(|v| v.parse::<DateTime>().ok())
        .map(|d| d.0.timestamp_millis());
    HistoryRequest {
        max_stanzas,
        not_before_ms: by_seconds.max(by_since),
    }
}

/// Milliseconds since the Unix epoch, now.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests;
