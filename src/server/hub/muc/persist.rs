//! Persistent rooms (XEP-0045 §10.2, `muc#roomconfig_persistentroom`) in the store: a room
//! whose configuration says persistent is written whole (configuration, subject, creator,
//! affiliations) whenever one of them changes, stays when its last occupant leaves, and is
//! read back when the server starts. Its discussion history stays in memory only: a restart
//! forgets it, as it forgets the occupants (who join again).
//!
//! A write that fails is logged and the room goes on in memory: the people in it are not
//! refused anything because the disk is full, and the next change writes it again.

use tokio_xmpp::jid::BareJid;

use super::super::Hub;
use super::config::RoomConfig;
use super::room::{Affiliation, Room};
use crate::server::store::StoredRoom;

impl Affiliation {
    /// The affiliation an XEP-0045 attribute or a stored row names.
    pub(super) fn from_stored(text: &str) -> Option<Self> {
        Some(match text {
            "owner" => Affiliation::Owner,
            "admin" => Affiliation::Admin,
            "member" => Affiliation::Member,
            "none" => Affiliation::None,
            "outcast" => Affiliation::Outcast,
            _ => return None,
        })
    }
}

impl Hub {
    /// A room's configuration, subject or affiliations changed: a persistent room is saved;
    /// a room that is not (any more) is removed from the store, and from memory when nobody is
    /// in it (§10.1.1: a temporary room ends with its last occupant). Whoever changes a
    /// room (its owner's form here, muc#admin for affiliations) calls this afterwards.
    pub(crate) fn muc_room_changed(&mut self, room_jid: &BareJid) {
        let Some(room) = self.muc.rooms.get(room_jid) else {
            return;
        };
        if room.config.persistent {
            let stored = stored(room);
            if let Err(error) = self.store.save_muc_room(&stored, &self.domain) {
                tracing::error!(room = %room_jid, "could not save the room: {error}");
            }
            return;
        }
        let empty = room.is_empty();
        if let Err(error) = self.store.delete_muc_room(room_jid.as_str()) {
            tracing::error!(room = %room_jid, "could not remove the room from the store: {error}");
        }
        if empty {
            self.muc_room_ended(room_jid);
        }
    }

    /// The temporary room `room_jid` lost its last occupant and is gone (§10.1.1), and so is
    /// its archive: a room made later under the same name is a new room, and its occupants
    /// (a members-only room's members, say) have no claim on what was said before.
    pub(super) fn muc_room_ended(&mut self, room_jid: &BareJid) {
        self.muc.rooms.remove(room_jid);
        self.forget_room_archive(room_jid);
    }

    /// Drops the room `room_jid` (destroyed, §10.9), from memory and from the store, with its
    /// archive.
    pub(super) fn muc_drop_room(&mut self, room_jid: &BareJid) {
        self.forget_room_archive(room_jid);
        if let Some(room) = self.muc.rooms.remove(room_jid) {
            if room.config.persistent {
                if let Err(error) = self.store.delete_muc_room(room_jid.as_str()) {
                    tracing::error!(room = %room_jid, "could not remove the room from the store: {error}");
                }
            }
        }
    }

    /// Reads the stored rooms of the service (called when the server starts), and deletes the
    /// archives of rooms that were not persistent. Rooms of
    /// another service domain (the service was renamed) stay stored and are not served; a
    /// room that cannot be read is logged and skipped.
    pub(super) fn muc_load_rooms(&mut self) {
        let Some(service) = self.muc.service.clone() else {
            return;
        };
        // Temporary rooms did not outlive the last run, and neither do their archives.
        match self.store.delete_unstored_room_archives() {
            Ok(0) => {}
            Ok(n) => tracing::info!(messages = n, "deleted the archives of temporary rooms"),
            Err(error) => tracing::error!("could not delete temporary rooms' archives: {error}"),
        }
        let stored = match self.store.muc_rooms() {
            Ok(stored) => stored,
            Err(error) => {
                tracing::error!("could not read the stored rooms: {error}");
                return;
            }
        };
        for stored in stored {
            match loaded(&stored, &service, &self.muc.limits) {
                Some(room) => {
                    self.muc.rooms.insert(room.jid.clone(), room);
                }
                None => {
                    if BareJid::new(&stored.jid).is_ok_and(|j| j.domain() == service.domain()) {
                        tracing::warn!(room = stored.jid, "a stored room could not be read");
                    }
                }
            }
        }
    }
}

/// What the store keeps of `room`.
fn stored(room: &Room) -> StoredRoom {
    let mut affiliations: Vec<(String, String)> = room
        .affiliations
        .iter()
        .filter(|(_, a)| **a != Affiliation::None)
        .map(|(jid, a)| (jid.to_string(), a.as_str().to_string()))
        .collect();
    affiliations.sort();
    StoredRoom {
        jid: room.jid.to_string(),
        creator: room.creator.to_string(),
        config: serde_json::to_string(&room.config).unwrap_or_default(),
        subject: room.subject.clone(),
        affiliations,
    }
}

/// The room `stored` as the service `service` serves it within `limits`; `None` if it is
/// another service's or cannot be read.
fn loaded(
    stored: &StoredRoom,
    service: &BareJid,
    limits: &crate::server::limits::MucLimits,
) -> Option<Room> {
    let jid = BareJid::new(&stored.jid).ok()?;
    if jid.domain() != service.domain() || jid.node().is_none() {
        return None;
    }
    let creator = BareJid::new(&stored.creator).ok()?;
    let config: RoomConfig = serde_json::from_str(&stored.config).ok()?;
    // `Room::new` makes its creator an owner; the stored affiliations say who is now.
    let mut room = Room::new(
        jid,
        &creator.with_resource_str("stored").ok()?,
        config.bounded(limits),
    );
    room.affiliations.clear();
    for (member, affiliation) in &stored.affiliations {
        if let (Ok(member), Some(affiliation)) =
            (BareJid::new(member), Affiliation::from_stored(affiliation))
        {
            room.affiliations.insert(member, affiliation);
        }
    }
    room.subject = stored.subject.clone();
    Some(room)
}
