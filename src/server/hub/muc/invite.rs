//! Mediated invitations (XEP-0045 §7.8.2) and their declines (§7.8.3), through the room.
//!
//! An occupant sends the room `<message><x xmlns='…muc#user'><invite to='JID'><reason/>
//! </invite></x></message>`; the room sends each invitee a message from the room's bare JID
//! with `<invite from='the inviter's real JID'>`, the reason, the room's password if it has
//! one (§7.8.2), and a body for clients that do not understand invitations (as Prosody does).
//! Rules:
//!
//! - only occupants invite (`not-acceptable`, as for any message to the room from outside);
//! - when the room does not allow invitations (`muc#roomconfig_allowinvites` false), only
//!   its admins and owners invite (`forbidden`);
//! - in a members-only room, an invitation by someone allowed to invite makes the invitee a
//!   member (§7.8.2: the room MAY add the invitee to the member list), so that the invitee
//!   can join;
//! - at most [`MucLimits::max_invites_per_message`] invitations in one message
//!   (`policy-violation`), and each costs a token of the inviter's message rate (`flood.rs`):
//!   a room is not a relay for spam;
//! - invitees are accounts of this server (`item-not-found` otherwise: there is no
//!   federation); an invitee offline gets the invitation later, like any message.
//!
//! A decline goes from the invitee, through the room, to the inviter named in `<decline to=…>`,
//! with `<decline from='the invitee's JID'>`; the decliner need not be in the room, so its
//! declines cost tokens of its own rate too.
//!
//! Direct invitations (XEP-0249) are messages from one account to another, which the router
//! delivers like any other; nothing here.
//!
//! [`MucLimits::max_invites_per_message`]: crate::server::limits::MucLimits::max_invites_per_message

use std::time::Instant;

use tokio_xmpp::jid::{BareJid, FullJid, Jid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::message::{Id, Message, MessageType};
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::stanza_error::DefinedCondition;

use super::super::{Delivery, Hub};
use super::admin::Refusal;
use super::room::{Affiliation, Role};

/// An attribute name, checked at compile time.
macro_rules! ncname {
    ($name:literal) => {
        tokio_xmpp::minidom::rxml::xml_ncname!($name).into()
    };
}

/// Whether `message` to a room is an invitation or a decline (§7.8.2, §7.8.3).
pub(super) fn is_mediated(message: &Message) -> bool {
    message.type_ != MessageType::Groupchat
        && message
            .payloads
            .iter()
            .filter(|p| p.is("x", ns::MUC_USER))
            .any(|x| x.has_child("invite", ns::MUC_USER) || x.has_child("decline", ns::MUC_USER))
}

/// One invitation or decline, checked.
struct Mediated {
    to: Jid,
    reason: Option<String>,
}

impl Hub {
    /// An invitation or decline from `from` to the room `message` is addressed to.
    pub(super) fn muc_mediated(
        &mut self,
        from: &FullJid,
        message: Message,
        out: &mut Vec<Delivery>,
    ) {
        let Some(room_jid) = message.to.as_ref().map(Jid::to_bare) else {
            return;
        };
        let result = match message
            .payloads
            .iter()
            .find(|p| p.is("x", ns::MUC_USER))
            .cloned()
        {
            Some(x) if x.has_child("invite", ns::MUC_USER) => {
                self.muc_invite(from, &room_jid, &message, &x, out)
            }
            Some(x) => self.muc_decline(from, &room_jid, &message, &x, out),
            None => Err(DefinedCondition::BadRequest.into()),
        };
        if let Err(refusal) = result {
            if let Some(error) = refusal.reply_to(message.into()) {
                out.push(Delivery::stanza(from.clone(), error));
            }
        }
    }

    /// §7.8.2: the room invites each `<invite to=…/>` on `from`'s behalf.
    fn muc_invite(
        &mut self,
        from: &FullJid,
        room_jid: &BareJid,
        message: &Message,
        x: &Element,
        out: &mut Vec<Delivery>,
    ) -> Result<(), Refusal> {
        let max = self.muc.limits.max_invites_per_message;
        let room = self
            .muc
            .rooms
            .get(room_jid)
            .ok_or(Refusal::from(DefinedCondition::ItemNotFound))?;
        let inviter = room
            .nick_of(from)
            .and_then(|nick| room.occupant(nick))
            .ok_or(Refusal::from(DefinedCondition::NotAcceptable))?;
        let invites = self.mediated(x, "invite", max)?;
        let rank_admin = matches!(
            room.affiliation(&from.to_bare()),
            Affiliation::Owner | Affiliation::Admin
        );
        if !room.config.allow_invites && !rank_admin {
            return Err(Refusal::explained(
                DefinedCondition::Forbidden,
                "only the room's admins and owners may invite to this room",
            ));
        }
        // A visitor of a moderated room has no voice, invitations included (§7.8.2 leaves it
        // to the room; Prosody refuses too).
        if room.config.moderated && inviter.role == Role::Visitor {
            return Err(DefinedCondition::Forbidden.into());
        }
        let password = room.config.password.clone();
        let members_only = room.config.members_only;
        let count = u32::try_from(invites.len()).unwrap_or(u32::MAX);
        let limits = self.muc.limits.clone();
        self.muc
            .flood
            .allow_messages(room_jid, from, count, &limits, Instant::now())?;
        let mut made_members = false;
        for invite in invites {
            let mut x = Element::builder("x", ns::MUC_USER).append(mediated_child(
                "invite",
                from.as_str(),
                invite.reason.as_deref(),
            ));
            if let Some(password) = &password {
                x = x.append(
                    Element::builder("password", ns::MUC_USER)
                        .append(password.as_str())
                        .build(),
                );
            }
            let reason = invite
                .reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            let body = format!(
                "{} invited you to the room {room_jid}{reason}",
                from.to_bare()
            );
            let mut invitation =
                Message::new_with_type(MessageType::Normal, Some(invite.to.clone()));
            invitation.from = Some(room_jid.clone().into());
            invitation.id = Some(
                message
                    .id
                    .clone()
                    .unwrap_or_else(|| Id(super::room::new_id())),
            );
            invitation.bodies.insert(Default::default(), body);
            invitation.payloads.push(x.build());
            // §7.8.2: in a members-only room, the invitee may now join.
            if members_only {
                if let Some(room) = self.muc.rooms.get_mut(room_jid) {
                    let invitee = invite.to.to_bare();
                    if room.affiliation(&invitee) == Affiliation::None
                        && room.affiliations.len() < limits.max_affiliations
                    {
                        room.affiliations.insert(invitee, Affiliation::Member);
                        made_members = true;
                    }
                }
            }
            self.deliver_from_room(from, invitation, out);
        }
        if made_members {
            self.affiliations_changed(room_jid);
        }
        Ok(())
    }

    /// §7.8.3: `from` declines an invitation; the room tells the inviter.
    fn muc_decline(
        &mut self,
        from: &FullJid,
        room_jid: &BareJid,
        message: &Message,
        x: &Element,
        out: &mut Vec<Delivery>,
    ) -> Result<(), Refusal> {
        if !self.muc.rooms.contains_key(room_jid) {
            return Err(DefinedCondition::ItemNotFound.into());
        }
        let mut declines = self.mediated(x, "decline", 1)?;
        let Some(decline) = declines.pop() else {
            return Err(DefinedCondition::BadRequest.into());
        };
        let limits = self.muc.limits.clone();
        self.muc
            .flood
            .allow_messages(room_jid, from, 1, &limits, Instant::now())?;
        let reason = decline
            .reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        let mut declined = Message::new_with_type(MessageType::Normal, Some(decline.to.clone()));
        declined.from = Some(room_jid.clone().into());
        declined.id = message.id.clone();
        declined.bodies.insert(
            Default::default(),
            format!(
                "{} declined your invitation to the room {room_jid}{reason}",
                from.to_bare()
            ),
        );
        declined.payloads.push(
            Element::builder("x", ns::MUC_USER)
                .append(mediated_child(
                    "decline",
                    from.to_bare().as_str(),
                    decline.reason.as_deref(),
                ))
                .build(),
        );
        self.deliver_from_room(from, declined, out);
        Ok(())
    }

    /// The `<invite/>` or `<decline/>` children (`name`) of `x`, at most `max`, each to an
    /// account of this server.
    fn mediated(&self, x: &Element, name: &str, max: usize) -> Result<Vec<Mediated>, Refusal> {
        let children: Vec<&Element> = x.children().filter(|c| c.is(name, ns::MUC_USER)).collect();
        if children.len() > max {
            return Err(Refusal::explained(
                DefinedCondition::PolicyViolation,
                format!("at most {max} invitations in one message"),
            ));
        }
        let mut found = Vec::new();
        for child in children {
            let to: Jid = child
                .attr("to")
                .ok_or(Refusal::from(DefinedCondition::BadRequest))?
                .parse()
                .map_err(|_| Refusal::from(DefinedCondition::JidMalformed))?;
            // No federation: only this server's accounts can be invited or told.
            if !self.is_local_account(&to.to_bare()) {
                return Err(Refusal::explained(
                    DefinedCondition::ItemNotFound,
                    format!("{to} is not an account of this server"),
                ));
            }
            let reason = child
                .get_child("reason", ns::MUC_USER)
                .map(Element::text)
                .filter(|r| !r.is_empty());
            found.push(Mediated { to, reason });
        }
        Ok(found)
    }

    /// Delivers `message` (from a room, to an account of this server) as the router would a
    /// message to that address: to the bound session it names, or by the rules of a bare JID
    /// (offline storage included). Errors go to `sender`, who asked the room to send it.
    fn deliver_from_room(&mut self, sender: &FullJid, message: Message, out: &mut Vec<Delivery>) {
        let Some(to) = message.to.clone() else {
            return;
        };
        if let Ok(full) = to.clone().try_into_full() {
            if self.sessions.contains_key(&full) {
                out.push(Delivery::stanza(full, message));
                return;
            }
        }
        self.deliver_to_bare(sender, &to.to_bare(), message, out);
    }
}

/// `<invite from=…>` or `<decline from=…>` with its reason.
fn mediated_child(name: &str, from: &str, reason: Option<&str>) -> Element {
    let mut child = Element::builder(name, ns::MUC_USER).attr(ncname!("from"), from);
    if let Some(reason) = reason {
        child = child.append(
            Element::builder("reason", ns::MUC_USER)
                .append(reason)
                .build(),
        );
    }
    child.build()
}

#[cfg(test)]
#[path = "invite_tests.rs"]
mod tests;
