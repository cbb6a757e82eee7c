//! Private XML storage (XEP-0049): XML a client stores for itself, one item per owner and
//! `{namespace}element-name` key, kept as the text it was given.

use rusqlite::{params, OptionalExtension};

use super::{normalize_user, require_account, Store, StoreError};

impl Store {
    /// Stores (or replaces) the owner's private XML (XEP-0049) under `key`, which is
    /// `{namespace}element-name` of the stored element.
    pub fn set_private(&self, owner: &str, key: &str, xml: &str) -> Result<(), StoreError> {
        let owner = normalize_user(owner);
        let tx = self.write()?;
        require_account(&tx, &owner)?;
        tx.execute(
            "INSERT INTO private_xml (owner, item_key, xml) VALUES (?1, ?2, ?3)
             ON CONFLICT (owner, item_key) DO UPDATE SET xml = excluded.xml",
            params![owner, key, xml],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The owner's private XML stored under `key`, if any.
    pub fn get_private(&self, owner: &str, key: &str) -> Result<Option<String>, StoreError> {
        let xml = self
            .conn
            .query_row(
                "SELECT xml FROM private_xml WHERE owner = ?1 AND item_key = ?2",
                params![normalize_user(owner), key],
                |row| row.get(0),
            )
            .optional()?;
        Ok(xml)
    }
}

#[cfg(test)]
mod tests;
