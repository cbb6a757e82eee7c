//! One occupant, several sessions (XEP-0045 §7.2.9 leaves it to the service; Prosody allows
//! it): a session of an account that is already in the room under a nickname may join with
//! the same nickname. It shares the occupant: it gets the room's groupchat messages, private
//! messages and presence like the first session, and the other occupants still see one
//! occupant (its first session's presence and real JID). Someone else asking for that
//! nickname still gets `conflict`.
//!
//! Kept small on purpose:
//!
//! - a session that joins an occupant gets everyone's presence, its own (110), the history it
//!   asked for and the subject, and nobody else hears of it;
//! - a session that leaves, while others remain, gets its own unavailable presence (110) and
//!   nobody else hears of it; when the first session leaves, the next one takes its place;
//! - a nick change is refused (`not-acceptable`) while the occupant has several sessions,
//!   since it would rename the others without their asking;
//! - IQs to the occupant go to its first session, as Prosody sends them to one session.

use tokio_xmpp::jid::{FullJid, Jid};
use tokio_xmpp::parsers::message::{Id, Message, MessageType};
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};

use super::super::Delivery;
use super::room::{delay, new_id, with_to, HistoryRequest, Occupant, Room};

impl Occupant {
    /// Every session of the occupant, the first one first.
    pub fn sessions(&self) -> impl Iterator<Item = &FullJid> {
        std::iter::once(&self.real).chain(&self.others)
    }
}

impl Room {
    /// Whether `real` may join as a further session of the occupant `nick`: the same
    /// account, not yet in the room.
    pub(super) fn may_share(&self, real: &FullJid, nick: &str) -> bool {
        self.occupant(nick)
            .is_some_and(|o| o.real.to_bare() == real.to_bare())
            && self.nick_of(real).is_none()
    }

    /// `real` joins the occupant `nick` as a further session (checked by
    /// [`Room::may_share`]): it gets the room as a joiner does (§7.2.3–§7.2.16).
    pub(super) fn add_session(
        &mut self,
        real: &FullJid,
        nick: &str,
        codes: &[u16],
        history: HistoryRequest,
        out: &mut Vec<Delivery>,
    ) {
        let Some(occupant) = self.occupants.get_mut(nick) else {
            return;
        };
        occupant.others.push(real.clone());
        let Some(joiner) = self.occupants.get(nick) else {
            return;
        };
        for (other, occupant) in &self.occupants {
            if other != nick {
                if let Some(p) = self.presence_of(other, occupant, &[], None) {
                    // §7.2.3: a semi-anonymous room shows real JIDs to moderators only.
                    let p = self.shown_to(p, occupant, joiner);
                    out.push(Delivery::stanza(real.clone(), with_to(p, real)));
                }
            }
        }
        if let Some(occupant) = self.occupants.get(nick) {
            let mut own = self.anonymity_codes().to_vec();
            own.push(110);
            own.extend_from_slice(codes);
            let codes = own;
            if let Some(p) = self.presence_of(nick, occupant, &codes, None) {
                out.push(Delivery::stanza(real.clone(), with_to(p, real)));
            }
        }
        for said in self.history_for(history) {
            let mut message = said.message.clone();
            message.to = Some(real.clone().into());
            message.payloads.push(delay(&self.jid, said.at_ms));
            out.push(Delivery::stanza(real.clone(), message));
        }
        let mut subject = Message::new_with_type(MessageType::Groupchat, Some(real.clone().into()));
        subject.id = Some(Id(new_id()));
        let (text, by) = self.subject.clone().unwrap_or_default();
        subject.from = Some(
            by.as_deref()
                .and_then(|nick| self.occupant_jid(nick))
                .map_or_else(|| self.jid.clone().into(), Jid::from),
        );
        subject.subjects.insert(Default::default(), text);
        out.push(Delivery::stanza(real.clone(), subject));
    }

    /// Whether the occupant `real` is in has other sessions too.
    pub(super) fn has_other_sessions(&self, real: &FullJid) -> bool {
        self.nick_of(real)
            .and_then(|nick| self.occupant(nick))
            .is_some_and(|o| !o.others.is_empty())
    }

    /// The session `real` leaves an occupant that has others: only it is told (110); the
    /// next session takes the first one's place. `false` (and nothing done) when `real` is
    /// the occupant's only session: the occupant leaves the room as usual.
    pub(super) fn drop_session(
        &mut self,
        real: &FullJid,
        status: Option<Presence>,
        out: &mut Vec<Delivery>,
    ) -> bool {
        let Some(nick) = self.nick_of(real).map(str::to_string) else {
            return false;
        };
        let Some(occupant) = self.occupants.get_mut(&nick) else {
            return false;
        };
        if occupant.others.is_empty() {
            return false;
        }
        if &occupant.real == real {
            occupant.real = occupant.others.remove(0);
        } else {
            occupant.others.retain(|s| s != real);
        }
        let mut gone = occupant.clone();
        gone.presence = Presence::new(PresenceType::Unavailable);
        if let Some(status) = status {
            gone.presence.statuses = status.statuses;
        }
        gone.real = real.clone();
        if let Some(p) = self.presence_of(&nick, &gone, &[110], None) {
            out.push(Delivery::stanza(real.clone(), with_to(p, real)));
        }
        true
    }
}

#[cfg(test)]
#[path = "sessions_tests.rs"]
mod tests;
