//! Each room's message archive (XEP-0313 on a room's bare JID, XEP-0045 integration): the
//! groupchat messages the room sent, kept under the room's bare JID, with the ids the hub gave
//! them (the same counter as the accounts' archives, so an id names one message in the whole
//! database, and the stanza id a room stamps on a message is its archive id).
//!
//! The table is `room_archive`, with the columns of `archive` (see `archive.rs`); `with_jid`
//! holds the sender's real bare JID. It references no account: a room is not one, and its
//! archive outlives the accounts that spoke in it. The code that writes, pages, trims and
//! expires is `archive.rs`'s, on the other table.

use rusqlite::params;

use super::archive::Table;
use super::{normalize_jid, ArchiveFilter, ArchivePage, ArchiveRow, Paging, Store, StoreError};

impl Store {
    /// Writes rooms' `rows` (owner: the room's bare JID) in one transaction, and records that
    /// ids below `next` are taken. Returns how many rows were written.
    pub fn append_room_archive(&self, rows: &[ArchiveRow], next: i64) -> Result<usize, StoreError> {
        self.append_to(Table::Rooms, rows, next)
    }

    /// Whether the archive of the room `room` holds the message `id`.
    pub fn room_archive_has(&self, room: &str, id: i64) -> Result<bool, StoreError> {
        self.has_in(Table::Rooms, room, id)
    }

    /// How many messages the archive of the room `room` holds.
    pub fn room_archive_count(&self, room: &str) -> Result<usize, StoreError> {
        self.count_in(Table::Rooms, room)
    }

    /// One page of at most `max` of the room's messages that match `filter`.
    pub fn room_archive_query(
        &self,
        room: &str,
        filter: &ArchiveFilter,
        paging: Paging,
        max: usize,
    ) -> Result<ArchivePage, StoreError> {
        self.query_in(Table::Rooms, room, filter, paging, max)
    }

    /// Deletes the room's oldest messages beyond the newest `keep`; returns how many.
    pub fn trim_room_archive(&self, room: &str, keep: usize) -> Result<usize, StoreError> {
        self.trim_in(Table::Rooms, room, keep)
    }

    /// Deletes every room message archived before `before_ms`; returns how many.
    pub fn expire_room_archive(&self, before_ms: i64) -> Result<usize, StoreError> {
        self.expire_in(Table::Rooms, before_ms)
    }

    /// Deletes the whole archive of the room `room` (the room was destroyed); returns how many.
    pub fn delete_room_archive(&self, room: &str) -> Result<usize, StoreError> {
        let tx = self.write()?;
        let deleted = tx.execute(
            "DELETE FROM room_archive WHERE owner = ?1",
            params![normalize_jid(room)],
        )?;
        tx.commit()?;
        Ok(deleted)
    }

    /// Deletes the archives of every room that is not stored as persistent: the temporary
    /// rooms that existed when the server stopped ended with it (XEP-0045 §10.1.1), and so
    /// do their archives. Returns how many rows went.
    pub fn delete_unstored_room_archives(&self) -> Result<usize, StoreError> {
        let tx = self.write()?;
        let deleted = tx.execute(
            "DELETE FROM room_archive WHERE owner NOT IN (SELECT lower(jid) FROM muc_rooms)",
            [],
        )?;
        tx.commit()?;
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests;
