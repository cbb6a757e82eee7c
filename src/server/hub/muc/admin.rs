//! Administering a room (XEP-0045 §8, §9, §10 for the affiliations an owner grants): IQs of the
//! `muc#admin` namespace to the room's bare JID.
//!
//! - **Roles, by nickname** (§8, §9.6–§9.8): kick (role `none`, §8.2), grant or revoke voice
//!   (`participant` / `visitor`, §8.3–§8.4), grant or revoke moderator (§9.6–§9.7); the voice
//!   list and the moderator list (§8.5, §9.8).
//! - **Affiliations, by bare JID** (§9, §10): ban (`outcast`, §9.1), member (§9.3–§9.4), admin
//!   and owner (§10.3–§10.7); the ban, member, admin and owner lists (§9.2, §9.5, §10.5, §10.8).
//!
//! Who may change whom (§5.1, §5.2, and the error cases of each use case), as Prosody's
//! `muc.lib.lua` applies them:
//!
//! - only a moderator present in the room changes roles (`forbidden` otherwise); nobody
//!   changes the role of someone with a higher affiliation (a participant kicking an admin,
//!   an admin kicking an owner: `not-allowed`, §8.2); granting or revoking moderator takes an
//!   admin or owner (`forbidden`, §9.6); the moderator role of an admin or owner comes with
//!   the affiliation and cannot be revoked alone (`not-allowed`, §9.7);
//! - only an admin or owner changes affiliations (`forbidden`); an admin cannot make admins or
//!   owners (`forbidden`, §10.3, §10.6), nor change an admin's or owner's affiliation
//!   (`not-allowed`, §9.1); the room always keeps an owner (`conflict`, §10.7);
//! - one request holds at most [`MucLimits::max_admin_items`] items and is applied whole or
//!   not at all; a room holds at most [`MucLimits::max_affiliations`] affiliations (both
//!   `policy-violation`, with a text saying which bound was hit).
//!
//! An occupant whose affiliation changes gets the role that goes with it (§5.1.2) and everyone
//! sees its new presence; one that may no longer be in the room is removed with status 301
//! (banned, §9.1) or 321 (no longer a member of a members-only room, §9.4). A kicked occupant
//! is removed with status 307 (§8.2). The removed occupant's own copy also carries 110, and
//! the item names the moderator who did it (`<actor nick=…/>`) and the reason given.
//!
//! [`MucLimits::max_admin_items`]: crate::server::limits::MucLimits::max_admin_items
//! [`MucLimits::max_affiliations`]: crate::server::limits::MucLimits::max_affiliations

use std::collections::HashMap;

use tokio_xmpp::jid::{BareJid, FullJid, Jid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::parsers::stanza_error::DefinedCondition;
use tokio_xmpp::Stanza;

use super::super::{bounce, Delivery, Hub};
use super::config::Whois;
use super::room::{with_to, Affiliation, Occupant, Role, Room};

/// The namespace of room administration (XEP-0045 §8, §9).
pub(super) const MUC_ADMIN: &str = "http://jabber.org/protocol/muc#admin";

/// An attribute name, checked at compile time.
macro_rules! ncname {
    ($name:literal) => {
        tokio_xmpp::minidom::rxml::xml_ncname!($name).into()
    };
}

/// Why a request was refused: the condition, and a text for the user when the condition alone
/// does not say what to change.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Refusal {
    pub(super) condition: DefinedCondition,
    pub(super) text: Option<String>,
}

impl From<DefinedCondition> for Refusal {
    fn from(condition: DefinedCondition) -> Self {
        Self {
            condition,
            text: None,
        }
    }
}

impl Refusal {
    /// `condition`, explained by `text`.
    pub(super) fn explained(condition: DefinedCondition, text: impl Into<String>) -> Self {
        Self {
            condition,
            text: Some(text.into()),
        }
    }

    /// The error reply to `stanza` (RFC 6120 §8.3), with the text if there is one; `None`
    /// where no reply is allowed (`stanza` is itself an error or a result).
    pub(super) fn reply_to(&self, stanza: Stanza) -> Option<Stanza> {
        let mut reply = bounce(&stanza, self.condition.clone())?;
        let Some(text) = &self.text else {
            return Some(reply);
        };
        let with_text = |error: &mut tokio_xmpp::parsers::stanza_error::StanzaError| {
            error.texts.insert("en".to_string(), text.clone());
        };
        match &mut reply {
            Stanza::Iq(Iq::Error { error, .. }) => with_text(error),
            Stanza::Message(m) => replace_error(&mut m.payloads, with_text),
            Stanza::Presence(p) => replace_error(&mut p.payloads, with_text),
            Stanza::Iq(_) => {}
        }
        Some(reply)
    }
}

/// Rewrites the `<error/>` among `payloads` with `change`.
fn replace_error(
    payloads: &mut [Element],
    change: impl Fn(&mut tokio_xmpp::parsers::stanza_error::StanzaError),
) {
    for payload in payloads.iter_mut() {
        if payload.name() == "error" {
            if let Ok(mut error) =
                tokio_xmpp::parsers::stanza_error::StanzaError::try_from(payload.clone())
            {
                change(&mut error);
                *payload = error.into();
            }
        }
    }
}

/// One change asked for in a `muc#admin` set.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    /// The occupant `nick` gets `role`, or (`None`) is kicked.
    Role { nick: String, role: Option<Role> },
    /// `jid` gets `affiliation` (`None` removes it).
    Affiliation {
        jid: BareJid,
        affiliation: Affiliation,
    },
    /// The occupant `nick`'s account gets `affiliation` (clients that name an occupant
    /// rather than its JID, as Prosody also accepts).
    AffiliationOfNick {
        nick: String,
        affiliation: Affiliation,
    },
}

/// One `<item/>` of a set, with the reason given for it (§8.2, §9.1).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Item {
    change: Change,
    reason: Option<String>,
}

impl Hub {
    /// A `muc#admin` IQ get or set from `from` to a room (§8, §9, §10).
    pub(super) fn muc_admin(&mut self, from: &FullJid, iq: Iq, out: &mut Vec<Delivery>) {
        let (payload, is_set) = match &iq {
            Iq::Get { payload, .. } => (payload.clone(), false),
            Iq::Set { payload, .. } => (payload.clone(), true),
            Iq::Result { .. } | Iq::Error { .. } => return,
        };
        let Some(room_jid) = iq.to().map(Jid::to_bare) else {
            return;
        };
        let limits = self.muc.limits.clone();
        let result = match self.muc.rooms.get_mut(&room_jid) {
            None => Err(DefinedCondition::ItemNotFound.into()),
            Some(room) if is_set => parse_items(&payload, limits.max_admin_items)
                .and_then(|items| room.admin_set(from, items, limits.max_affiliations, out))
                .map(|changed| (None, changed)),
            Some(room) => room
                .admin_get(from, &payload)
                .map(|list| (Some(list), false)),
        };
        match result {
            Ok((payload, affiliations_changed)) => {
                super::answer(&iq, from, Ok(payload), out);
                if affiliations_changed {
                    self.affiliations_changed(&room_jid);
                }
            }
            Err(refusal) => {
                if let Some(error) = refusal.reply_to(iq.into()) {
                    out.push(Delivery::stanza(from.clone(), error));
                }
            }
        }
        // A temporary room whose last occupant was removed is gone (§10.1.1).
        if self
            .muc
            .rooms
            .get(&room_jid)
            .is_some_and(|room| room.is_empty() && !room.config.persistent)
        {
            self.muc_room_ended(&room_jid);
        }
    }

    /// The affiliations of `room` changed: a persistent room saves them (`persist.rs`).
    pub(super) fn affiliations_changed(&mut self, room: &BareJid) {
        self.muc_room_changed(room);
    }
}

/// The items of a `muc#admin` set, at most `max` of them.
fn parse_items(query: &Element, max: usize) -> Result<Vec<Item>, Refusal> {
    if !query.is("query", MUC_ADMIN) {
        return Err(DefinedCondition::BadRequest.into());
    }
    let elements: Vec<&Element> = query
        .children()
        .filter(|c| c.is("item", MUC_ADMIN))
        .collect();
    if elements.is_empty() {
        return Err(DefinedCondition::BadRequest.into());
    }
    if elements.len() > max {
        return Err(Refusal::explained(
            DefinedCondition::PolicyViolation,
            format!("at most {max} items in one request; send the rest in more requests"),
        ));
    }
    elements.into_iter().map(parse_item).collect()
}

/// One `<item/>`: a role with a nick, or an affiliation with a JID (or a nick).
fn parse_item(item: &Element) -> Result<Item, Refusal> {
    let reason = item
        .get_child("reason", MUC_ADMIN)
        .map(Element::text)
        .filter(|r| !r.is_empty());
    let nick = item.attr("nick").map(str::to_string);
    let change = match (item.attr("role"), item.attr("affiliation")) {
        (Some(role), None) => {
            let role = match role {
                "none" => None,
                "visitor" => Some(Role::Visitor),
                "participant" => Some(Role::Participant),
                "moderator" => Some(Role::Moderator),
                _ => return Err(DefinedCondition::BadRequest.into()),
            };
            // §8.2: roles are changed by nickname.
            let nick = nick.ok_or(Refusal::from(DefinedCondition::BadRequest))?;
            Change::Role { nick, role }
        }
        (None, Some(affiliation)) => {
            let affiliation = parse_affiliation(affiliation)?;
            match (item.attr("jid"), nick) {
                (Some(jid), _) => {
                    let jid: Jid = jid
                        .parse()
                        .map_err(|_| Refusal::from(DefinedCondition::JidMalformed))?;
                    // §9.1: affiliations belong to bare JIDs.
                    Change::Affiliation {
                        jid: jid.to_bare(),
                        affiliation,
                    }
                }
                (None, Some(nick)) => Change::AffiliationOfNick { nick, affiliation },
                (None, None) => return Err(DefinedCondition::BadRequest.into()),
            }
        }
        _ => return Err(DefinedCondition::BadRequest.into()),
    };
    Ok(Item { change, reason })
}

fn parse_affiliation(value: &str) -> Result<Affiliation, Refusal> {
    Ok(match value {
        "owner" => Affiliation::Owner,
        "admin" => Affiliation::Admin,
        "member" => Affiliation::Member,
        "none" => Affiliation::None,
        "outcast" => Affiliation::Outcast,
        _ => return Err(DefinedCondition::BadRequest.into()),
    })
}

/// An affiliation's rank: owners outrank admins, who outrank members (§5.2).
fn rank(affiliation: Affiliation) -> u8 {
    match affiliation {
        Affiliation::Owner => 4,
        Affiliation::Admin => 3,
        Affiliation::Member => 2,
        Affiliation::None => 1,
        Affiliation::Outcast => 0,
    }
}

fn role_rank(role: Role) -> u8 {
    match role {
        Role::Moderator => 3,
        Role::Participant => 2,
        Role::Visitor => 1,
    }
}

/// The affiliation of `jid` in `affiliations`.
fn affiliation_in(affiliations: &HashMap<BareJid, Affiliation>, jid: &BareJid) -> Affiliation {
    affiliations.get(jid).copied().unwrap_or(Affiliation::None)
}

impl Room {
    /// The role an occupant with `affiliation` has by default, or `None` if it may not be in
    /// the room (§5.1.2, §7.2.7, §9.1).
    pub(super) fn default_role(&self, affiliation: Affiliation) -> Option<Role> {
        match affiliation {
            Affiliation::Owner | Affiliation::Admin => Some(Role::Moderator),
            Affiliation::Member => Some(Role::Participant),
            Affiliation::None if self.config.members_only => None,
            Affiliation::None if self.config.moderated => Some(Role::Visitor),
            Affiliation::None => Some(Role::Participant),
            Affiliation::Outcast => None,
        }
    }

    /// Applies the items of a set from `actor`, all or none: every item is checked first.
    /// `Ok(true)` when affiliations changed.
    fn admin_set(
        &mut self,
        actor: &FullJid,
        items: Vec<Item>,
        max_affiliations: usize,
        out: &mut Vec<Delivery>,
    ) -> Result<bool, Refusal> {
        let actor_nick = self.nick_of(actor).map(str::to_string);
        // Resolve nicks to JIDs, then check everything against the affiliations as each
        // item would leave them.
        let mut items = items;
        for item in &mut items {
            if let Change::AffiliationOfNick { nick, affiliation } = &item.change {
                let occupant = self
                    .occupant(nick)
                    .ok_or(Refusal::from(DefinedCondition::ItemNotFound))?;
                item.change = Change::Affiliation {
                    jid: occupant.real.to_bare(),
                    affiliation: *affiliation,
                };
            }
        }
        let mut plan = self.affiliations.clone();
        for item in &items {
            match &item.change {
                Change::Role { nick, role } => self.may_set_role(actor, nick, *role)?,
                Change::Affiliation { jid, affiliation } => {
                    may_set_affiliation(&plan, &actor.to_bare(), jid, *affiliation)?;
                    set_in(&mut plan, jid, *affiliation);
                }
                Change::AffiliationOfNick { .. } => {}
            }
        }
        if plan.len() > max_affiliations && plan.len() > self.affiliations.len() {
            return Err(Refusal::explained(
                DefinedCondition::PolicyViolation,
                format!("a room keeps at most {max_affiliations} affiliations"),
            ));
        }
        let mut changed = false;
        for item in items {
            let reason = item.reason.as_deref();
            match item.change {
                Change::Role { nick, role } => {
                    self.set_role(&nick, role, actor_nick.as_deref(), reason, out);
                }
                Change::Affiliation { jid, affiliation } => {
                    changed |=
                        self.set_affiliation(&jid, affiliation, actor_nick.as_deref(), reason, out);
                }
                Change::AffiliationOfNick { .. } => {}
            }
        }
        Ok(changed)
    }

    /// Whether `actor` may give the occupant `nick` the role `role` (kick: `None`) (§8, §9.6,
    /// §9.7; the rules in the module documentation).
    fn may_set_role(&self, actor: &FullJid, nick: &str, role: Option<Role>) -> Result<(), Refusal> {
        let actor_occupant = self
            .nick_of(actor)
            .and_then(|n| self.occupant(n))
            .filter(|o| o.role == Role::Moderator)
            .ok_or(Refusal::from(DefinedCondition::Forbidden))?;
        let target = self
            .occupant(nick)
            .ok_or(Refusal::from(DefinedCondition::ItemNotFound))?;
        let actor_affiliation = self.affiliation(&actor_occupant.real.to_bare());
        let target_affiliation = self.affiliation(&target.real.to_bare());
        // §8.2: nobody kicks (or silences) someone of a higher affiliation.
        if rank(actor_affiliation) < rank(target_affiliation) {
            return Err(DefinedCondition::NotAllowed.into());
        }
        // §9.6, §9.7: the moderator role is granted and revoked by admins and owners.
        if (target.role == Role::Moderator || role == Some(Role::Moderator))
            && rank(actor_affiliation) < rank(Affiliation::Admin)
        {
            return Err(DefinedCondition::Forbidden.into());
        }
        // §9.7: an admin's or owner's moderator role comes with the affiliation.
        if rank(target_affiliation) >= rank(Affiliation::Admin)
            && matches!(role, Some(Role::Participant | Role::Visitor))
        {
            return Err(DefinedCondition::NotAllowed.into());
        }
        Ok(())
    }

    /// Gives `nick` the role `role`, or kicks it (§8.2–§8.4, §9.6, §9.7).
    fn set_role(
        &mut self,
        nick: &str,
        role: Option<Role>,
        actor: Option<&str>,
        reason: Option<&str>,
        out: &mut Vec<Delivery>,
    ) {
        match role {
            None => self.remove(nick, 307, actor, reason, out),
            Some(role) => {
                let Some(occupant) = self.occupants.get_mut(nick) else {
                    return;
                };
                occupant.role = role;
                self.announce(nick, actor, reason, out);
            }
        }
    }

    /// Gives `jid` the affiliation `affiliation`; its occupants get the role that goes with it,
    /// or are removed (§9.1 ban: 301; §9.4 in a members-only room: 321). `false` if nothing
    /// changed.
    fn set_affiliation(
        &mut self,
        jid: &BareJid,
        affiliation: Affiliation,
        actor: Option<&str>,
        reason: Option<&str>,
        out: &mut Vec<Delivery>,
    ) -> bool {
        let before = self.affiliation(jid);
        if before == affiliation {
            return false;
        }
        set_in(&mut self.affiliations, jid, affiliation);
        let downgrade = rank(affiliation) < rank(before);
        let nicks: Vec<String> = self
            .occupants
            .iter()
            .filter(|(_, o)| &o.real.to_bare() == jid)
            .map(|(nick, _)| nick.clone())
            .collect();
        for nick in nicks {
            match self.default_role(affiliation) {
                None => {
                    let code = if affiliation == Affiliation::Outcast {
                        301
                    } else {
                        321
                    };
                    self.remove(&nick, code, actor, reason, out);
                }
                Some(role) => {
                    if let Some(occupant) = self.occupants.get_mut(&nick) {
                        // As Prosody: a downgrade takes the new default role, an upgrade only
                        // raises the role (a moderator made a member stays a moderator).
                        if downgrade || role_rank(occupant.role) < role_rank(role) {
                            occupant.role = role;
                        }
                    }
                    self.announce(&nick, actor, reason, out);
                }
            }
        }
        true
    }

    /// Everyone gets `nick`'s presence with its role and affiliation now; its own copy
    /// carries 110.
    fn announce(
        &self,
        nick: &str,
        actor: Option<&str>,
        reason: Option<&str>,
        out: &mut Vec<Delivery>,
    ) {
        let Some(occupant) = self.occupants.get(nick) else {
            return;
        };
        if let Some(p) = self.presence_of(nick, occupant, &[], None) {
            self.to_others(&with_actor(p, actor, reason), occupant, out);
        }
        if let Some(p) = self.presence_of(nick, occupant, &[110], None) {
            to_sessions(&with_actor(p, actor, reason), occupant, out);
        }
    }

    /// Removes `nick` from the room with status `code` (307 kicked, 301 banned, 321 no longer
    /// a member): everyone gets its unavailable presence with role `none`, itself with 110.
    fn remove(
        &mut self,
        nick: &str,
        code: u16,
        actor: Option<&str>,
        reason: Option<&str>,
        out: &mut Vec<Delivery>,
    ) {
        let Some(mut occupant) = self.occupants.remove(nick) else {
            return;
        };
        occupant.presence = Presence::new(PresenceType::Unavailable);
        if let Some(p) = self.presence_of(nick, &occupant, &[code], None) {
            self.to_others(&with_actor(p, actor, reason), &occupant, out);
        }
        if let Some(p) = self.presence_of(nick, &occupant, &[110, code], None) {
            to_sessions(&with_actor(p, actor, reason), &occupant, out);
        }
    }

    /// Sends `presence`, of `subject`, to every session of every other occupant: the one
    /// place where this file shows an occupant to the others.
    fn to_others(&self, presence: &Presence, subject: &Occupant, out: &mut Vec<Delivery>) {
        for viewer in self.occupants.values() {
            if viewer.real != subject.real {
                // §7.2.3: a semi-anonymous room shows real JIDs to moderators only.
                let shown = self.shown_to(presence.clone(), subject, viewer);
                to_sessions(&shown, viewer, out);
            }
        }
    }

    /// A list asked for with a `muc#admin` get: occupants by role (§8.5, §9.8) or accounts
    /// by affiliation (§9.2, §9.5, §10.5, §10.8).
    fn admin_get(&self, requester: &FullJid, query: &Element) -> Result<Element, Refusal> {
        let item = query
            .get_child("item", MUC_ADMIN)
            .filter(|_| query.is("query", MUC_ADMIN))
            .ok_or(Refusal::from(DefinedCondition::BadRequest))?;
        let mut list = Element::builder("query", MUC_ADMIN);
        match (item.attr("role"), item.attr("affiliation")) {
            (Some(role), None) => {
                let role = match role {
                    "moderator" => Role::Moderator,
                    "participant" => Role::Participant,
                    "visitor" => Role::Visitor,
                    _ => return Err(DefinedCondition::BadRequest.into()),
                };
                // §8.5, §9.8: moderators only.
                let moderator = self
                    .nick_of(requester)
                    .and_then(|n| self.occupant(n))
                    .is_some_and(|o| o.role == Role::Moderator);
                if !moderator {
                    return Err(DefinedCondition::Forbidden.into());
                }
                for (nick, occupant) in self.occupants.iter().filter(|(_, o)| o.role == role) {
                    list = list.append(
                        Element::builder("item", MUC_ADMIN)
                            .attr(
                                ncname!("affiliation"),
                                self.affiliation(&occupant.real.to_bare()).as_str(),
                            )
                            .attr(ncname!("role"), role.as_str())
                            .attr(ncname!("jid"), occupant.real.as_str())
                            .attr(ncname!("nick"), nick.as_str())
                            .build(),
                    );
                }
            }
            (None, Some(affiliation)) => {
                let affiliation = parse_affiliation(affiliation)?;
                if affiliation == Affiliation::None {
                    return Err(DefinedCondition::BadRequest.into());
                }
                let own = self.affiliation(&requester.to_bare());
                // §9.2, §9.5: admins and owners; §10.5, §10.8: the owner and admin lists to
                // owners (admins see the admin list too, as in Prosody). §9.5: the members
                // of a members-only room that shows real JIDs may see the member list.
                let allowed = (rank(own) >= rank(Affiliation::Admin)
                    && rank(own) >= rank(affiliation))
                    || (affiliation == Affiliation::Member
                        && self.config.members_only
                        && self.config.whois == Whois::Anyone
                        && rank(own) >= rank(Affiliation::Member));
                if !allowed {
                    return Err(DefinedCondition::Forbidden.into());
                }
                let mut jids: Vec<&BareJid> = self
                    .affiliations
                    .iter()
                    .filter(|(_, a)| **a == affiliation)
                    .map(|(jid, _)| jid)
                    .collect();
                jids.sort_by(|a, b| a.as_str().cmp(b.as_str()));
                for jid in jids {
                    list = list.append(
                        Element::builder("item", MUC_ADMIN)
                            .attr(ncname!("affiliation"), affiliation.as_str())
                            .attr(ncname!("jid"), jid.as_str())
                            .build(),
                    );
                }
            }
            _ => return Err(DefinedCondition::BadRequest.into()),
        }
        Ok(list.build())
    }
}

/// Whether `actor` may give `target` the affiliation `affiliation`, given `affiliations`
/// (§9, §10; the rules in the module documentation).
fn may_set_affiliation(
    affiliations: &HashMap<BareJid, Affiliation>,
    actor: &BareJid,
    target: &BareJid,
    affiliation: Affiliation,
) -> Result<(), Refusal> {
    let own = affiliation_in(affiliations, actor);
    let theirs = affiliation_in(affiliations, target);
    match own {
        Affiliation::Owner => {}
        Affiliation::Admin => {
            // §10.3, §10.6: only owners make owners and admins.
            if matches!(affiliation, Affiliation::Owner | Affiliation::Admin) {
                return Err(DefinedCondition::Forbidden.into());
            }
            // §9.1: an admin cannot ban (or demote) an admin or owner.
            if matches!(theirs, Affiliation::Owner | Affiliation::Admin) {
                return Err(DefinedCondition::NotAllowed.into());
            }
        }
        _ => return Err(DefinedCondition::Forbidden.into()),
    }
    // §10.7: a room always keeps an owner.
    if theirs == Affiliation::Owner
        && affiliation != Affiliation::Owner
        && !affiliations
            .iter()
            .any(|(jid, a)| *a == Affiliation::Owner && jid != target)
    {
        return Err(Refusal::explained(
            DefinedCondition::Conflict,
            "the room's last owner cannot give up ownership; make someone else an owner first",
        ));
    }
    Ok(())
}

/// Sets `jid`'s affiliation in `affiliations` (`None` is kept as no entry).
fn set_in(
    affiliations: &mut HashMap<BareJid, Affiliation>,
    jid: &BareJid,
    affiliation: Affiliation,
) {
    if affiliation == Affiliation::None {
        affiliations.remove(jid);
    } else {
        affiliations.insert(jid.clone(), affiliation);
    }
}

/// Sends `presence` to every session of `occupant`.
fn to_sessions(presence: &Presence, occupant: &Occupant, out: &mut Vec<Delivery>) {
    for session in occupant.sessions() {
        out.push(Delivery::stanza(
            session.clone(),
            with_to(presence.clone(), session),
        ));
    }
}

/// `presence`'s `<item/>` with who changed it and why (§8.2: `<actor nick=…/>`, `<reason/>`).
fn with_actor(mut presence: Presence, actor: Option<&str>, reason: Option<&str>) -> Presence {
    if actor.is_none() && reason.is_none() {
        return presence;
    }
    for x in presence
        .payloads
        .iter_mut()
        .filter(|p| p.is("x", ns::MUC_USER))
    {
        if let Some(item) = x.get_child_mut("item", ns::MUC_USER) {
            if let Some(actor) = actor {
                item.append_child(
                    Element::builder("actor", ns::MUC_USER)
                        .attr(ncname!("nick"), actor)
                        .build(),
                );
            }
            if let Some(reason) = reason {
                item.append_child(
                    Element::builder("reason", ns::MUC_USER)
                        .append(reason)
                        .build(),
                );
            }
        }
    }
    presence
}

#[cfg(test)]
#[path = "admin_tests.rs"]
pub(super) mod tests;
