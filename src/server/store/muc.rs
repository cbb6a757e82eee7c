//! Persistent rooms (XEP-0045 §10.2, `muc#roomconfig_persistentroom`): each room's
//! configuration, subject and creator, and its affiliations (owner, admin, member, outcast).
//!
//! The store keeps what the hub gives it: the configuration as JSON (the hub's `RoomConfig`,
//! password included: the room compares it with what joiners send, and the file holds SCRAM
//! keys already, so it is mode 0600), the affiliations as `(JID, affiliation)` pairs. Only
//! persistent rooms are here; the hub writes a room whole ([`Store::save_muc_room`]) each time
//! its configuration, subject or affiliations change, and reads them all when it starts.
//!
//! An affiliation of a local account also names that account (`account`, which references
//! `accounts`): deleting the account removes its affiliations, in every room. The rooms it
//! created stay, with their other owners and members: a room belongs to the people in it as
//! much as to its creator, and the server's operator can destroy one by joining as an owner.

use rusqlite::params;

use super::{Store, StoreError};

/// One persistent room as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRoom {
    /// The room's bare JID, `room@service`.
    pub jid: String,
    /// The bare JID of the account that created it (counted against its rooms).
    pub creator: String,
    /// The configuration, as the hub serialised it (JSON).
    pub config: String,
    /// The subject, and the nick that set it.
    pub subject: Option<(String, Option<String>)>,
    /// `(bare JID, affiliation)`, affiliation being `owner`, `admin`, `member` or `outcast`.
    pub affiliations: Vec<(String, String)>,
}

impl Store {
    /// Every stored room, by JID, with its affiliations sorted by JID.
    pub fn muc_rooms(&self) -> Result<Vec<StoredRoom>, StoreError> {
        let mut rooms = self.conn.prepare_cached(
            "SELECT jid, creator, config, subject, subject_by FROM muc_rooms ORDER BY jid",
        )?;
        let mut rooms = rooms
            .query_map([], |row| {
                let subject: Option<String> = row.get(3)?;
                let by: Option<String> = row.get(4)?;
                Ok(StoredRoom {
                    jid: row.get(0)?,
                    creator: row.get(1)?,
                    config: row.get(2)?,
                    subject: subject.map(|s| (s, by)),
                    affiliations: Vec::new(),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut affiliations = self.conn.prepare_cached(
            "SELECT jid, affiliation FROM muc_affiliations WHERE room = ?1 ORDER BY jid",
        )?;
        for room in &mut rooms {
            room.affiliations = affiliations
                .query_map([&room.jid], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
        }
        Ok(rooms)
    }

    /// Writes `room` whole, replacing what was stored for its JID, in one transaction.
    /// An affiliation whose JID is `user@domain` with `user` an account of this server
    /// (`domain` being the server's) is tied to the account.
    pub fn save_muc_room(&self, room: &StoredRoom, domain: &str) -> Result<(), StoreError> {
        let jid = room.jid.to_lowercase();
        let tx = self.write()?;
        tx.execute(
            "INSERT INTO muc_rooms (jid, creator, config, subject, subject_by)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (jid) DO UPDATE SET creator = ?2, config = ?3, subject = ?4,
                 subject_by = ?5",
            params![
                jid,
                room.creator.to_lowercase(),
                room.config,
                room.subject.as_ref().map(|(s, _)| s),
                room.subject.as_ref().and_then(|(_, by)| by.as_ref()),
            ],
        )?;
        tx.execute("DELETE FROM muc_affiliations WHERE room = ?1", [&jid])?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO muc_affiliations (room, jid, affiliation, account)
                 VALUES (?1, ?2, ?3, (SELECT username FROM accounts WHERE username = ?4))
                 ON CONFLICT (room, jid) DO UPDATE SET affiliation = ?3",
            )?;
            let suffix = format!("@{}", domain.to_lowercase());
            for (member, affiliation) in &room.affiliations {
                let member = member.to_lowercase();
                let account = member.strip_suffix(&suffix).unwrap_or_default();
                insert.execute(params![jid, member, affiliation, account])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Removes the room `jid` and its affiliations; not there is not an error.
    pub fn delete_muc_room(&self, jid: &str) -> Result<(), StoreError> {
        let tx = self.write()?;
        tx.execute("DELETE FROM muc_rooms WHERE jid = ?1", [jid.to_lowercase()])?;
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
