//! The owner's side of a room (XEP-0045 §10): the configuration form, locked new rooms, the
//! checks a configuration makes at join (password, members-only, outcasts, full), what a room
//! shows of itself in disco#info, semi-anonymous presence, and destroying a room.
//!
//! Owners speak to the room's bare JID in the `muc#owner` namespace:
//! - `<iq type='get'><query/></iq>`: the `muc#roomconfig` form, filled (§10.2);
//! - `<iq type='set'><query><x type='submit'>…</x></query></iq>`: a new configuration (§10.2);
//!   an empty submitted form accepts the current one, which is how a creator takes the
//!   instant room (§10.1.2);
//! - `<x type='cancel'/>`: the owner gives up; a new room still locked is destroyed (§10.1.3);
//! - `<destroy/>`: the room is destroyed (§10.9).
//!
//! Anyone else gets `forbidden` (§10.2, §10.9).
//!
//! # Locked new rooms, and why they are off by default
//!
//! §10.1.1 has a new room locked until its creator configures it, and Prosody does so by
//! default, unlocking it after five minutes (`muc_room_lock_timeout`). Most of the room's
//! likely creators never configure: the bridge's bot joins the rooms it is given and says
//! nothing to the owner service, slixmpp's `join_muc` does not either, and `mqtt2xmpp up`
//! makes its room by having the bot join it. With locking, everyone else would get
//! `item-not-found` for five minutes after the bot created its room (the tests against
//! Prosody turn `muc_room_locking` off for this very reason). So new rooms here are instant
//! rooms (the other way §10.1 offers), and `--muc-lock-new-rooms` gives Prosody's behaviour:
//! locked until the creator submits a form or accepts the instant room, and at most
//! [`LOCK_TIMEOUT_MS`]; as in Prosody, only a join in the MUC protocol (with
//! `<x xmlns='http://jabber.org/protocol/muc'/>`) locks, since an old groupchat client
//! cannot unlock. A locked room is temporary, so it also ends when its creator leaves.

use tokio_xmpp::jid::{BareJid, FullJid, Jid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::disco::{DiscoInfoResult, Identity};
use tokio_xmpp::parsers::message::{Id, Message, MessageType};
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::parsers::stanza_error::DefinedCondition;

use super::super::{Delivery, Hub};
use super::config::{RoomConfig, Whois};
use super::room::{new_id, Affiliation, Occupant, Role, Room, SID};

/// The owner namespace (XEP-0045 §19.1).
pub(super) const MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
/// How long a locked new room waits for its creator: Prosody's `muc_room_lock_timeout`.
pub(super) const LOCK_TIMEOUT_MS: i64 = 5 * 60 * 1000;

impl Room {
    /// Whether the room is still locked at `now_ms` (§10.1.1).
    pub(super) fn locked(&self, now_ms: i64) -> bool {
        self.locked_until_ms.is_some_and(|until| now_ms < until)
    }

    /// Whether `real` may join the room it is not in, with the join presence `presence`:
    /// a locked room is `item-not-found` to all but its owners (§10.1.1), an outcast is
    /// `forbidden` (§7.2.8), a non-member of a members-only room `registration-required`
    /// (§7.2.7), a wrong or missing password `not-authorized` (§7.2.6), and a full room
    /// `service-unavailable` (§7.2.10). Owners and admins pass the password and the limit, so
    /// that they can always get into their room.
    pub(super) fn admission(
        &self,
        real: &FullJid,
        presence: &Presence,
        now_ms: i64,
    ) -> Result<(), DefinedCondition> {
        let affiliation = self.affiliation(&real.to_bare());
        let powerful = matches!(affiliation, Affiliation::Owner | Affiliation::Admin);
        if self.locked(now_ms) && affiliation != Affiliation::Owner {
            return Err(DefinedCondition::ItemNotFound);
        }
        if affiliation == Affiliation::Outcast {
            return Err(DefinedCondition::Forbidden);
        }
        if self.config.members_only && affiliation == Affiliation::None {
            return Err(DefinedCondition::RegistrationRequired);
        }
        if let Some(password) = &self.config.password {
            let given = presence
                .payloads
                .iter()
                .find(|p| p.is("x", ns::MUC))
                .and_then(|x| x.get_child("password", ns::MUC))
                .map(Element::text);
            if !powerful && given.as_deref() != Some(password.as_str()) {
                return Err(DefinedCondition::NotAuthorized);
            }
        }
        if !powerful && self.len() >= self.config.max_occupants {
            return Err(DefinedCondition::ServiceUnavailable);
        }
        Ok(())
    }

    /// Whether `real` is one of the room's owners.
    pub(super) fn is_owner(&self, real: &FullJid) -> bool {
        self.affiliation(&real.to_bare()) == Affiliation::Owner
    }

    /// `presence` (of `subject`, made by `presence_of`) as `viewer` may see it: in a
    /// semi-anonymous room only moderators, and the occupant itself, see the real JID
    /// (§7.2.3).
    pub(super) fn shown_to(
        &self,
        mut presence: Presence,
        subject: &Occupant,
        viewer: &Occupant,
    ) -> Presence {
        if self.config.whois == Whois::Anyone
            || viewer.role == Role::Moderator
            || viewer.real == subject.real
        {
            return presence;
        }
        for x in presence
            .payloads
            .iter_mut()
            .filter(|p| p.is("x", ns::MUC_USER))
        {
            for item in x.children_mut().filter(|c| c.is("item", ns::MUC_USER)) {
                item.attrs_mut().retain(|_, name, _| name.as_str() != "jid");
            }
        }
        presence
    }

    /// The status codes a joiner's own presence has beyond 110: 100 in a non-anonymous room
    /// (§7.2.4).
    pub(super) fn anonymity_codes(&self) -> &'static [u16] {
        match self.config.whois {
            Whois::Anyone => &[100],
            Whois::Moderators => &[],
        }
    }

    /// Takes `config`, which an owner submitted (§10.2), and tells the occupants what
    /// changed (§10.2.1): a message from the room with 104, plus 172 (now non-anonymous) or
    /// 173 (now semi-anonymous). When the room becomes members-only, those who are not
    /// members leave it with 322 (§9.4 of XEP-0045 1.34, "members-only").
    pub(super) fn reconfigure(&mut self, config: RoomConfig, out: &mut Vec<Delivery>) {
        let old = std::mem::replace(&mut self.config, config);
        if old == self.config {
            return;
        }
        if self.history.len() > self.config.max_history {
            let excess = self.history.len() - self.config.max_history;
            self.history.drain(..excess);
        }
        let mut codes = vec![104];
        match (old.whois, self.config.whois) {
            (Whois::Moderators, Whois::Anyone) => codes.push(172),
            (Whois::Anyone, Whois::Moderators) => codes.push(173),
            _ => {}
        }
        let mut x = Element::builder("x", ns::MUC_USER);
        for code in codes {
            x = x.append(status(code));
        }
        let x = x.build();
        for occupant in self.occupants.values() {
            let mut message =
                Message::new_with_type(MessageType::Groupchat, Some(occupant.real.clone().into()));
            message.from = Some(self.jid.clone().into());
            message.id = Some(Id(new_id()));
            message.payloads.push(x.clone());
            out.push(Delivery::stanza(occupant.real.clone(), message));
        }
        if self.config.members_only && !old.members_only {
            let outsiders: Vec<String> = self
                .occupants
                .iter()
                .filter(|(_, o)| self.affiliation(&o.real.to_bare()) == Affiliation::None)
                .map(|(nick, _)| nick.clone())
                .collect();
            for nick in outsiders {
                self.remove_with_codes(&nick, &[322], out);
            }
        }
    }

    /// Removes `nick` from the room: everyone gets its unavailable presence with `codes`,
    /// and the occupant itself with 110 as well.
    pub(super) fn remove_with_codes(&mut self, nick: &str, codes: &[u16], out: &mut Vec<Delivery>) {
        let Some(mut occupant) = self.occupants.remove(nick) else {
            return;
        };
        occupant.presence = Presence::new(PresenceType::Unavailable);
        if let Some(p) = self.presence_of(nick, &occupant, codes, None) {
            for other in self.occupants.values() {
                let mut p = self.shown_to(p.clone(), &occupant, other);
                p.to = Some(other.real.clone().into());
                out.push(Delivery::stanza(other.real.clone(), p));
            }
        }
        let own: Vec<u16> = [110].iter().chain(codes).copied().collect();
        if let Some(mut p) = self.presence_of(nick, &occupant, &own, None) {
            p.to = Some(occupant.real.clone().into());
            out.push(Delivery::stanza(occupant.real.clone(), p));
        }
    }

    /// Destroys the room (§10.9): every occupant gets its own unavailable presence with
    /// affiliation and role `none` and `<destroy/>`, with the alternate room and the reason
    /// the owner gave. The caller drops the room.
    pub(super) fn destroy(
        &mut self,
        alternate: Option<&Jid>,
        reason: Option<&str>,
        out: &mut Vec<Delivery>,
    ) {
        let mut destroy = Element::builder("destroy", ns::MUC_USER);
        if let Some(alternate) = alternate {
            destroy = destroy.attr(ncname!("jid"), alternate.to_string());
        }
        if let Some(reason) = reason {
            destroy = destroy.append(
                Element::builder("reason", ns::MUC_USER)
                    .append(reason)
                    .build(),
            );
        }
        let x = Element::builder("x", ns::MUC_USER)
            .append(
                Element::builder("item", ns::MUC_USER)
                    .attr(ncname!("affiliation"), "none")
                    .attr(ncname!("role"), "none")
                    .build(),
            )
            .append(destroy.build())
            .build();
        for (nick, occupant) in std::mem::take(&mut self.occupants) {
            let Some(from) = self.occupant_jid(&nick) else {
                continue;
            };
            let mut presence = Presence::new(PresenceType::Unavailable);
            presence.from = Some(from.into());
            presence.to = Some(occupant.real.clone().into());
            presence.payloads.push(x.clone());
            out.push(Delivery::stanza(occupant.real.clone(), presence));
        }
    }

    /// The room's disco#info (§6.4): its name, the features its configuration gives it, and
    /// the `muc#roominfo` form with its description, subject and number of occupants.
    pub(super) fn info(&self, extra: &[&str]) -> Element {
        let c = &self.config;
        let pick = |on: bool, yes: &str, no: &str| if on { yes } else { no }.to_string();
        let features = [
            ns::DISCO_INFO.to_string(),
            ns::MUC.to_string(),
            SID.to_string(),
            pick(c.persistent, "muc_persistent", "muc_temporary"),
            pick(c.public, "muc_public", "muc_hidden"),
            pick(c.members_only, "muc_membersonly", "muc_open"),
            pick(
                c.password.is_some(),
                "muc_passwordprotected",
                "muc_unsecured",
            ),
            pick(c.moderated, "muc_moderated", "muc_unmoderated"),
            pick(
                c.whois == Whois::Anyone,
                "muc_nonanonymous",
                "muc_semianonymous",
            ),
        ];
        let name = if c.name.is_empty() {
            self.jid.node().map(|n| n.as_str()).unwrap_or_default()
        } else {
            c.name.as_str()
        };
        let mut info: Element = DiscoInfoResult {
            node: None,
            identities: vec![Identity::new("conference", "text", "en", name)],
            features: features
                .into_iter()
                .chain(extra.iter().map(|f| f.to_string()))
                .collect(),
            extensions: Vec::new(),
        }
        .into();
        let subject = self
            .subject
            .as_ref()
            .map(|(text, _)| text.as_str())
            .unwrap_or_default();
        let occupants = self.len().to_string();
        let fields = [
            (
                "FORM_TYPE",
                Some("hidden"),
                "http://jabber.org/protocol/muc#roominfo",
            ),
            ("muc#roominfo_description", None, c.description.as_str()),
            ("muc#roominfo_occupants", None, occupants.as_str()),
            ("muc#roominfo_subject", None, subject),
            (
                "muc#roominfo_changesubject",
                None,
                if c.change_subject { "1" } else { "0" },
            ),
        ];
        let mut form = Element::builder("x", ns::DATA_FORMS).attr(ncname!("type"), "result");
        for (var, kind, value) in fields {
            let mut field = Element::builder("field", ns::DATA_FORMS).attr(ncname!("var"), var);
            if let Some(kind) = kind {
                field = field.attr(ncname!("type"), kind);
            }
            form = form.append(
                field
                    .append(
                        Element::builder("value", ns::DATA_FORMS)
                            .append(value)
                            .build(),
                    )
                    .build(),
            );
        }
        info.append_child(form.build());
        info
    }
}

/// A `<status code=''/>` of the muc#user namespace.
fn status(code: u16) -> Element {
    Element::builder("status", ns::MUC_USER)
        .attr(ncname!("code"), code.to_string())
        .build()
}

impl Hub {
    /// An IQ from `from` to the room `room_jid` in the owner namespace (§10): `set` tells a
    /// set from a get, `query` is its payload. The answer is the IQ's result payload or error.
    pub(super) fn muc_owner(
        &mut self,
        from: &FullJid,
        room_jid: &BareJid,
        set: bool,
        query: &Element,
        now_ms: i64,
        out: &mut Vec<Delivery>,
    ) -> Result<Option<Element>, DefinedCondition> {
        let limits = self.muc.limits.clone();
        let Some(room) = self.muc.rooms.get_mut(room_jid) else {
            return Err(DefinedCondition::ItemNotFound);
        };
        // §10.1.2, §10.2, §10.9: only owners.
        if !room.is_owner(from) {
            return Err(DefinedCondition::Forbidden);
        }
        if !set {
            let form = room.config.form(&limits);
            return Ok(Some(
                Element::builder("query", MUC_OWNER).append(form).build(),
            ));
        }
        if let Some(destroy) = query.get_child("destroy", MUC_OWNER) {
            let alternate = match destroy.attr("jid") {
                Some(jid) => Some(
                    jid.parse::<Jid>()
                        .map_err(|_| DefinedCondition::JidMalformed)?,
                ),
                None => None,
            };
            let reason = destroy
                .get_child("reason", MUC_OWNER)
                .map(Element::text)
                .filter(|r| !r.is_empty());
            let max = limits.max_subject_bytes;
            let reason = reason.filter(|r| r.len() <= max);
            room.destroy(alternate.as_ref(), reason.as_deref(), out);
            self.muc_drop_room(room_jid);
            return Ok(None);
        }
        let Some(x) = query.get_child("x", ns::DATA_FORMS) else {
            return Err(DefinedCondition::BadRequest);
        };
        match x.attr("type") {
            Some("submit") => {
                let config = room.config.submitted(x, &limits)?;
                room.locked_until_ms = None;
                room.reconfigure(config, out);
                self.muc_room_changed(room_jid);
                Ok(None)
            }
            Some("cancel") => {
                // §10.1.3: cancelling the form of a new, locked room destroys it; a room that
                // exists keeps its configuration.
                if room.locked(now_ms) {
                    room.destroy(None, None, out);
                    self.muc_drop_room(room_jid);
                }
                Ok(None)
            }
            _ => Err(DefinedCondition::BadRequest),
        }
    }
}

#[cfg(test)]
mod tests;
