//! vCards (XEP-0054, `vcard-temp`): one per account, kept as the XML text the account gave,
//! beside the SHA-1 of its photo (XEP-0153), worked out once when the vCard is stored so that
//! the presence path reads a short column instead of parsing a vCard per presence.

use rusqlite::{params, OptionalExtension};

use super::{normalize_user, require_account, Store, StoreError};

impl Store {
    /// Stores (or replaces) the owner's vCard `xml` (a `<vCard xmlns='vcard-temp'>` element as
    /// text), with `photo_hash`, the lowercase hex SHA-1 of its photo's bytes (XEP-0153 §3.1),
    /// or `None` when it has no photo.
    pub fn set_vcard(
        &self,
        owner: &str,
        xml: &str,
        photo_hash: Option<&str>,
    ) -> Result<(), StoreError> {
        let owner = normalize_user(owner);
        let tx = self.write()?;
        require_account(&tx, &owner)?;
        tx.execute(
            "INSERT INTO vcards (owner, xml, photo_hash) VALUES (?1, ?2, ?3)
             ON CONFLICT (owner) DO UPDATE SET xml = excluded.xml,
                                               photo_hash = excluded.photo_hash",
            params![owner, xml, photo_hash],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The owner's vCard as stored, if any.
    pub fn get_vcard(&self, owner: &str) -> Result<Option<String>, StoreError> {
        let xml = self
            .conn
            .prepare_cached("SELECT xml FROM vcards WHERE owner = ?1")?
            .query_row(params![normalize_user(owner)], |row| row.get(0))
            .optional()?;
        Ok(xml)
    }

    /// The SHA-1 (lowercase hex) of the photo in the owner's vCard; `None` without a vCard or
    /// without a photo in it. Read at every available presence the owner sends.
    pub fn vcard_photo_hash(&self, owner: &str) -> Result<Option<String>, StoreError> {
        let hash = self
            .conn
            .prepare_cached("SELECT photo_hash FROM vcards WHERE owner = ?1")?
            .query_row(params![normalize_user(owner)], |row| {
                row.get::<_, Option<String>>(0)
            })
            .optional()?;
        Ok(hash.flatten())
    }
}

#[cfg(test)]
mod tests;
