//! Multi-user chat (XEP-0045): the room service at `conference.DOMAIN`, served inside the hub.
//! Every stanza a local session sends to the service's domain comes here (rule 2 of
//! `router.rs`): to the service itself (disco), to a room's bare JID (groupchat messages,
//! disco), or to an occupant's room JID `room@service/nick` (join, leave, nick change,
//! private messages, self-ping). `room.rs` holds one room's state and the stanzas it sends;
//! `archive.rs` keeps rooms' groupchat messages and answers archive queries to a room (XEP-0313).
//!
//! What exists now: rooms made by the first joiner (its owner), instant or locked until
//! configured; presence, nick changes, groupchat with stanza ids, subject, private messages,
//! discussion history, disco, self-ping (XEP-0410); the owner's configuration form, password,
//! members-only and semi-anonymous rooms, destroying a room (`owner.rs`); persistent rooms in
//! the store (`persist.rs`); roles and affiliations granted and revoked, kick and ban
//! (`admin.rs`); who may speak and how fast, join rates (`flood.rs`); invitations
//! (`invite.rs`); several sessions of one account under one nick (`sessions.rs`).

/// An attribute name, checked at compile time (for every file of the room service).
macro_rules! ncname {
    ($name:literal) => {
        tokio_xmpp::minidom::rxml::xml_ncname!($name).into()
    };
}

mod admin;
mod archive;
mod config;
mod flood;
mod invite;
mod owner;
mod persist;
mod room;
mod sessions;

use std::collections::BTreeMap;
use std::time::Instant;

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
use super::mam::now_ms;
use super::{bounce, Delivery, Hub};
use crate::server::limits::MucLimits;

/// The room service's state in the hub.
#[derive(Debug)]
pub(super) struct MucState {
    /// The service's domain (`conference.DOMAIN` unless configured otherwise), or none.
    service: Option<BareJid>,
    /// The rooms that exist, by bare JID.
    rooms: BTreeMap<BareJid, Room>,
    limits: MucLimits,
    /// Message and join rates (`flood.rs`).
    flood: flood::Flood,
}

impl MucState {
    /// The service at `conference.DOMAIN`, with no rooms.
    pub(super) fn new(domain: &str) -> Self {
        Self {
            service: BareJid::new(&format!("conference.{domain}")).ok(),
            rooms: BTreeMap::new(),
            limits: MucLimits::default(),
            flood: flood::Flood::default(),
        }
    }
}

impl Hub {
    /// Serves the rooms at `service` instead, or none at all; rooms in memory are dropped
    /// (stored ones stay stored). The server's own domain cannot be the service's.
    pub fn set_muc_service(&mut self, service: Option<BareJid>) {
        self.muc.service = service.filter(|s| s.node().is_none() && *s != self.domain_jid);
        self.muc.rooms.clear();
    }

    /// Starts the room service as `limits` say (on or off, its domain, its limits), with the
    /// persistent rooms of the store: called once, when the server starts.
    pub(super) fn muc_start(&mut self, limits: &MucLimits, unthrottled: &[String]) {
        self.muc.flood.exempt = unthrottled
            .iter()
            .filter_map(|user| BareJid::new(&format!("{user}@{}", self.domain)).ok())
            .collect();
        let service = limits.enabled.then(|| {
            let domain = limits
                .domain
                .clone()
                .unwrap_or_else(|| format!("conference.{}", self.domain));
            BareJid::new(&domain).ok()
        });
        let service = service.flatten();
        if limits.enabled && service.as_ref().is_none_or(|s| *s == self.domain_jid) {
            tracing::error!(
                "the room service cannot be at {:?}: no rooms are served",
                limits.domain
            );
        }
        self.set_muc_limits(limits.clone());
        self.set_muc_service(service);
        self.muc_load_rooms();
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
        super::addressed_to(self.muc.service.as_ref(), stanza)
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
            // One of several sessions of an occupant (`sessions.rs`).
            if let Some(room) = self.muc.rooms.get_mut(&room_jid) {
                if room.drop_session(jid, None, out) {
                    continue;
                }
            }
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
            if room.is_empty() && !room.config.persistent {
                self.muc_room_ended(room_jid);
            }
        }
    }

    /// Presence to a room JID: join, presence update, nick change, leave (§7.2, §7.6, §7.14).
    fn muc_presence(&mut self, from: &FullJid, presence: Presence, out: &mut Vec<Delivery>) {
        let refuse = |condition, out: &mut Vec<Delivery>| {
            if let Some(error) = join_error(&presence, condition) {
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
                    // One of several sessions of an occupant (`sessions.rs`).
                    if let Some(room) = self.muc.rooms.get_mut(&room_jid) {
                        if room.drop_session(from, Some(presence.clone()), out) {
                            return;
                        }
                    }
                    self.muc_leave(&room_jid, &current, Some(presence), out);
                }
            }
            PresenceType::None => {
                // An occupant's presence update or nick change goes to every occupant: it
                // counts against its message rate (`flood.rs`).
                if current.is_some() {
                    let limits = &self.muc.limits;
                    let allowed =
                        self.muc
                            .flood
                            .allow_messages(&room_jid, from, 1, limits, Instant::now());
                    if let Err(refusal) = allowed {
                        if let Some(error) = refusal.reply_to(presence.into()) {
                            out.push(Delivery::stanza(from.clone(), error));
                        }
                        return;
                    }
                }
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
                let logged = self.muc_logged_codes();
                if let Some(room) = self.muc.rooms.get_mut(&room_jid) {
                    // Another session of the same account joins its occupant (`sessions.rs`).
                    if current.is_none() && room.may_share(from, &nick) {
                        let history = history_request(&presence);
                        room.add_session(from, &nick, logged, history, out);
                        return;
                    }
                    // §7.2.9: a nickname another occupant has.
                    if room.occupant(&nick).is_some() {
                        refuse(DefinedCondition::Conflict, out);
                        return;
                    }
                    if current.is_some() && room.has_other_sessions(from) {
                        refuse(DefinedCondition::NotAcceptable, out);
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
            if let Some(error) = join_error(&presence, condition) {
                out.push(Delivery::stanza(from.clone(), error));
            }
        };
        let history = history_request(&presence);
        let now = now_ms();
        let logged = self.muc_logged_codes();
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
            let mut room = Room::new(room_jid.clone(), from, config);
            // §10.1.1, and `owner.rs` on why only with --muc-lock-new-rooms.
            if self.muc.limits.lock_new_rooms
                && presence.payloads.iter().any(|p| p.is("x", ns::MUC))
            {
                room.locked_until_ms = Some(now.saturating_add(owner::LOCK_TIMEOUT_MS));
            }
            self.muc.rooms.insert(room_jid.clone(), room);
        }
        let Some(room) = self.muc.rooms.get_mut(&room_jid) else {
            return;
        };
        // §7.2.6–§7.2.10: locked, banned, members only, password, full.
        if let Err(condition) = room.admission(from, &presence, now) {
            refuse(condition, out);
            if room.is_empty() && !room.config.persistent {
                self.muc.rooms.remove(&room_jid);
            }
            return;
        }
        // A join flood is a presence flood to every room joined (`flood.rs`).
        let allowed = self
            .muc
            .flood
            .allow_join(from, &self.muc.limits, Instant::now());
        if let Err(refusal) = allowed {
            // A failed join carries the muc `<x/>`, as every other refused join here.
            if let Some(mut error) = refusal.reply_to(presence.into()) {
                if let Stanza::Presence(p) = &mut error {
                    p.payloads.insert(0, Element::builder("x", ns::MUC).build());
                }
                out.push(Delivery::stanza(from.clone(), error));
            }
            if room.is_empty() && !room.config.persistent {
                self.muc.rooms.remove(&room_jid);
            }
            return;
        }
        // §7.2.12: 170, the discussion is logged (the room's archive); §10.1.1: 201.
        let codes: &[u16] = match (logged.is_empty(), created) {
            (true, false) => &[],
            (true, true) => &[201],
            (false, false) => &[170],
            (false, true) => &[170, 201],
        };
        room.join(from, nick, presence, codes, history, out);
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
        // §7.8.2, §7.8.3: invitations and declines through the room (`invite.rs`).
        if to.node().is_some() && to.resource().is_none() && invite::is_mediated(&message) {
            self.muc_mediated(from, message, out);
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
                    refuse(DefinedCondition::BadRequest, out);
                    return;
                }
                if message.subjects.values().any(|s| s.len() > max_subject) {
                    refuse(DefinedCondition::NotAcceptable, out);
                    return;
                }
                // §7.4, §8.1 and the occupant's message rate (`flood.rs`).
                let allowed = room.may_speak(&nick, &message).and_then(|()| {
                    let limits = &self.muc.limits;
                    self.muc
                        .flood
                        .allow_messages(&room_jid, from, 1, limits, Instant::now())
                });
                if let Err(refusal) = allowed {
                    if let Some(error) = refusal.reply_to(message.into()) {
                        out.push(Delivery::stanza(from.clone(), error));
                    }
                    return;
                }
                let subject = room.subject.clone();
                self.muc_groupchat(&room_jid, &nick, message.clone(), out);
                // Only a persistent room has anything to save (`persist.rs`).
                let room = self.muc.rooms.get(&room_jid);
                if room.is_some_and(|r| r.subject != subject && r.config.persistent) {
                    self.muc_room_changed(&room_jid);
                }
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
        if !service && payload.is("query", admin::MUC_ADMIN) {
            self.muc_admin(from, iq, out);
            return;
        }
        // XEP-0313 §5.1.2: the room's archive (`archive.rs`).
        if !service && payload.is("query", ns::MAM) {
            return self.muc_archive_iq(from, &to.to_bare(), &iq, out);
        }
        // §10.1.1: a locked room is not there yet, but for its owners.
        let room = (!service)
            .then(|| self.muc.rooms.get(&to.to_bare()))
            .flatten()
            .filter(|room| !room.locked(now_ms()) || room.is_owner(from));
        let result = if payload.is("query", ns::DISCO_INFO) {
            if service {
                Ok(Some(service_info()))
            } else {
                room.map(|r| Some(r.info(self.muc_archive_features())))
                    .ok_or(DefinedCondition::ItemNotFound)
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
        } else if payload.is("query", owner::MUC_OWNER) && !service {
            let set = matches!(iq, Iq::Set { .. });
            self.muc_owner(from, &to.to_bare(), set, &payload, now_ms(), out)
        } else {
            Err(DefinedCondition::ServiceUnavailable)
        };
        answer(&iq, from, result, out);
    }

    /// disco#items of the service: its public rooms (§6.3), by the name their owners gave;
    /// hidden and locked rooms are not listed.
    fn service_items(&self) -> Element {
        let now = now_ms();
        DiscoItemsResult {
            node: None,
            rsm: None,
            items: self
                .muc
                .rooms
                .iter()
                .filter(|(_, room)| room.config.public && !room.locked(now))
                .map(|(jid, room)| Item {
                    jid: jid.clone().into(),
                    node: None,
                    name: Some(room.config.name.clone())
                        .filter(|n| !n.is_empty())
                        .or_else(|| jid.node().map(|n| n.as_str().to_string())),
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

/// The error answering the join `presence`: with `<x xmlns='http://jabber.org/protocol/muc'/>`
/// as in XEP-0045's examples (§7.2.6–§7.2.10), which clients (slixmpp) match to tell a failed
/// join from other errors; not the joiner's own `<x/>`, which may hold its password.
fn join_error(presence: &Presence, condition: DefinedCondition) -> Option<Stanza> {
    match bounce(&presence.clone().into(), condition)? {
        Stanza::Presence(mut error) => {
            error
                .payloads
                .insert(0, Element::builder("x", ns::MUC).build());
            Some(error.into())
        }
        other => Some(other),
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

#[cfg(test)]
mod tests;
