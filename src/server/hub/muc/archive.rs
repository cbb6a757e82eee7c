//! Rooms' message archives (XEP-0313 §3.3.2, "MUC archives", and §5.1.2): the groupchat
//! messages a room sends, archived under the room's bare JID, and queries sent to that JID.
//!
//! # What is archived
//!
//! Every groupchat message with a `<body>` that a room sends to its occupants, as they get it
//! (from `room@service/nick`, without `to`), unless its XEP-0334 hints say `<no-store/>` or
//! `<no-permanent-store/>`; subject changes without a body are not. The room's
//! `<stanza-id by='room@service'/>` (XEP-0359) on the message *is* its archive id (XEP-0313
//! §3.5), so a client pages the archive from the last message it saw. In a room that shows
//! real JIDs, the stored copy carries the sender's real bare JID in
//! `<x xmlns='http://jabber.org/protocol/muc#user'><item jid='…'/></x>` (§5.1.2), which a
//! query leaves out if the room hides real JIDs by then (as Prosody's `mod_muc_mam` does).
//!
//! Rows join the accounts' archive rows in the hub's group commit (`mam.rs`), take ids from the
//! same counter, and have the same retention: `--archive-max-age` for all, and
//! `--archive-max-messages` per room. `--no-archive` turns room archives off as well: rooms
//! stamp random stanza ids again, their disco#info drops `urn:xmpp:mam:2`, and queries get
//! `service-unavailable`.
//!
//! A room's archive belongs to the room's address, not to one run of the server: a room that
//! is made again under the same name (after a restart, or after its last occupant left a
//! temporary room) finds its archive. It is deleted with the room only when an owner destroys
//! the room (XEP-0045 §10.9; Prosody deletes on `muc-room-destroyed` too), and by retention.
//!
//! # Who may query (XEP-0313 §5.1.2, the rules of Prosody's `mod_muc_mam`)
//!
//! An IQ set `<query xmlns='urn:xmpp:mam:2'/>` to the room's bare JID, from:
//! - an occupant, or a user with an affiliation (member, admin, owner): answered;
//! - an outcast (banned): `forbidden`;
//! - anyone else: `forbidden` in a members-only room (§5.1.2: the archive is for those who may
//!   join), `forbidden` in a hidden room (not listed, so not for passers-by), answered in a
//!   public open room, whose discussion anyone may join and read anyway.
//!
//! A room that does not exist gets `item-not-found`. The result messages come from the room's
//! bare JID, each `<result/>` forwarding the groupchat message from `room@service/nick` with a
//! `<delay/>` of when the room archived it. The query form, RSM paging and the `#extended`
//! ids are those of the accounts' archives (`mam.rs`); `with` is ignored, as in Prosody, so a
//! query cannot tell who said what in a room that hides real JIDs.

use tokio_xmpp::jid::{BareJid, FullJid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::Message;
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::stanza_error::DefinedCondition;

use super::super::mam::{self, Owner};
use super::super::{Delivery, Hub};
use super::config::Whois;
use super::room::{new_id, Affiliation};
use super::{answer, now_ms};

/// An attribute name, checked at compile time.
macro_rules! ncname {
    ($name:literal) => {
        tokio_xmpp::minidom::rxml::xml_ncname!($name).into()
    };
}

impl Hub {
    /// `nick` (an occupant allowed to speak) says `message` in `room_jid`: the room sends it to
    /// everyone with a stanza id that is its archive id, and it is archived (see the module
    /// documentation).
    pub(super) fn muc_groupchat(
        &mut self,
        room_jid: &BareJid,
        nick: &str,
        message: Message,
        out: &mut Vec<Delivery>,
    ) {
        let reserved = if self.archive_enabled() && mam::storable(&message) {
            self.reserve_archive_id()
        } else {
            None
        };
        let Some(room) = self.muc.rooms.get_mut(room_jid) else {
            return;
        };
        let Some(sender) = room.occupant(nick).map(|o| o.real.to_bare()) else {
            return;
        };
        let stanza_id = reserved
            .as_ref()
            .map_or_else(new_id, |(_, stanza_id)| stanza_id.clone());
        let shows_real = room.config.whois == Whois::Anyone;
        let Some(mut said) = room.groupchat(nick, message, now_ms(), stanza_id, out) else {
            return;
        };
        if let Some((id, _)) = reserved {
            if shows_real {
                // §5.1.2: the archive of a non-anonymous room keeps the sender's real JID.
                said.payloads.push(
                    Element::builder("x", ns::MUC_USER)
                        .append(
                            Element::builder("item", ns::MUC_USER)
                                .attr(ncname!("jid"), sender.as_str())
                                .build(),
                        )
                        .build(),
                );
            }
            self.queue_room_row(id, room_jid, &sender, &said);
        }
    }

    /// The status codes a joiner gets for the archive: 170, "the room is logged"
    /// (XEP-0045 §7.2.12), when rooms are archived.
    pub(super) fn muc_logged_codes(&self) -> &'static [u16] {
        if self.archive_enabled() {
            &[170]
        } else {
            &[]
        }
    }

    /// The archive's feature in a room's disco#info, when archives are on.
    pub(super) fn muc_archive_features(&self) -> &'static [&'static str] {
        if self.archive_enabled() {
            &[ns::MAM]
        } else {
            &[]
        }
    }

    /// An IQ with `<query xmlns='urn:xmpp:mam:2'/>` from `from` to the room `room_jid`: the
    /// form for a get, the results and `<fin/>` for a set (see the module documentation).
    pub(super) fn muc_archive_iq(
        &mut self,
        from: &FullJid,
        room_jid: &BareJid,
        iq: &Iq,
        out: &mut Vec<Delivery>,
    ) {
        let (is_set, query) = match iq {
            Iq::Get { payload, .. } => (false, payload),
            Iq::Set { payload, .. } => (true, payload),
            // Results and errors are never answered (RFC 6120 §8.3.1).
            Iq::Result { .. } | Iq::Error { .. } => return,
        };
        let Some(room) = self.muc.rooms.get(room_jid) else {
            return answer(iq, from, Err(DefinedCondition::ItemNotFound), out);
        };
        if !self.archive_enabled() {
            return answer(iq, from, Err(DefinedCondition::ServiceUnavailable), out);
        }
        let asker = from.to_bare();
        let allowed = match room.affiliation(&asker) {
            Affiliation::Outcast => false,
            Affiliation::Owner | Affiliation::Admin | Affiliation::Member => true,
            Affiliation::None => {
                room.nick_of(from).is_some() || (!room.config.members_only && room.config.public)
            }
        };
        if !allowed {
            return answer(iq, from, Err(DefinedCondition::Forbidden), out);
        }
        if !is_set {
            return answer(iq, from, Ok(Some(mam::query_form())), out);
        }
        let strip_real = room.config.whois != Whois::Anyone;
        let owner = room_jid.as_str().to_lowercase();
        match self.query_archive(
            Owner::Room(&owner),
            query,
            from,
            room_jid.clone().into(),
            strip_real,
        ) {
            Ok((results, fin)) => {
                if !results.is_empty() {
                    out.push(Delivery::Batch(from.clone(), results));
                }
                answer(iq, from, Ok(Some(fin)), out);
            }
            Err(condition) => answer(iq, from, Err(condition), out),
        }
    }
}

#[cfg(test)]
mod tests;
