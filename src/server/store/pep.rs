//! Personal eventing (XEP-0163 on XEP-0060 publish-subscribe): each account's nodes with their
//! configuration, and the items published to them, newest last.
//!
//! - `pep_nodes`: one row per owner × node; the configuration as JSON ([`PepNodeConfig`], so a
//!   new option needs no migration), and `persist` copied out of it, which says whether the
//!   node's items outlive a restart ([`Store::pep_forget_transient`]).
//! - `pep_items`: one row per owner × node × item id; `seq` (`AUTOINCREMENT`) orders them by
//!   publication, so a republished id becomes the newest (XEP-0060 §7.1.2: the item is
//!   replaced), and the node's `max_items` trims the oldest in the same transaction.
//!
//! The store enforces no limit of its own: the PEP service (`hub/pep.rs`) counts nodes and
//! bytes before it writes, and passes the node's `max_items` to [`Store::pep_publish`].

use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::{normalize_user, now_unix, require_account, Store, StoreError};

/// Who may read a node's items and receive its notifications (XEP-0060 §4.5, the models PEP
/// uses: XEP-0163 §3.2, XEP-0222, XEP-0223).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessModel {
    /// Anyone.
    Open,
    /// The owner, and contacts subscribed to the owner's presence (`from`/`both` in the
    /// owner's roster). PEP's default.
    Presence,
    /// The owner only (no one else can be put on the list).
    Whitelist,
}

/// When the last published item goes to a new reader (XEP-0060 §12.20).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SendLastItem {
    /// Never.
    Never,
    /// When a subscription is made (here: when a contact's subscription is approved).
    OnSub,
    /// Also when a reader comes online (XEP-0163 §4.3.2). PEP's default.
    OnSubAndPresence,
}

/// A node's configuration (XEP-0060 §16.4.4, `pubsub#node_config`): the options this server
/// implements, with PEP's defaults ([`PepNodeConfig::default`], as Prosody's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PepNodeConfig {
    /// `pubsub#access_model`.
    pub access_model: AccessModel,
    /// `pubsub#persist_items`: the items survive a restart.
    pub persist_items: bool,
    /// `pubsub#max_items`: most items kept; `None` is `max`, the server's cap.
    pub max_items: Option<u32>,
    /// `pubsub#notify_retract`: a retraction is notified unless the request says otherwise.
    pub notify_retract: bool,
    /// `pubsub#notify_delete`: deleting the node is notified.
    pub notify_delete: bool,
    /// `pubsub#deliver_notifications`: publications are notified at all.
    pub deliver_notifications: bool,
    /// `pubsub#deliver_payloads`: notifications carry the item's payload.
    pub deliver_payloads: bool,
    /// `pubsub#send_last_published_item`.
    pub send_last_published_item: SendLastItem,
    /// `pubsub#title`.
    pub title: Option<String>,
    /// `pubsub#description`.
    pub description: Option<String>,
    /// `pubsub#type`: the payload's namespace.
    pub payload_type: Option<String>,
}

impl Default for PepNodeConfig {
    fn default() -> Self {
        Self {
            access_model: AccessModel::Presence,
            persist_items: true,
            max_items: Some(1),
            notify_retract: true,
            notify_delete: true,
            deliver_notifications: true,
            deliver_payloads: true,
            send_last_published_item: SendLastItem::OnSubAndPresence,
            title: None,
            description: None,
            payload_type: None,
        }
    }
}

/// One published item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PepItem {
    /// The item id (XEP-0060 §7.1.1), given by the publisher or generated.
    pub id: String,
    /// The payload element, serialised.
    pub payload: String,
}

impl Store {
    /// The configuration of `owner`'s `node`, if it exists.
    pub fn pep_node(&self, owner: &str, node: &str) -> Result<Option<PepNodeConfig>, StoreError> {
        let json: Option<String> = self
            .conn
            .query_row(
                "SELECT config FROM pep_nodes WHERE owner = ?1 AND node = ?2",
                params![normalize_user(owner), node],
                |row| row.get(0),
            )
            .optional()?;
        Ok(json.map(|json| config_from_json(&json)))
    }

    /// Every node of `owner` with its configuration, by name.
    pub fn pep_nodes(&self, owner: &str) -> Result<Vec<(String, PepNodeConfig)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT node, config FROM pep_nodes WHERE owner = ?1 ORDER BY node")?;
        let nodes = stmt
            .query_map([normalize_user(owner)], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(nodes
            .into_iter()
            .map(|(node, json)| (node, config_from_json(&json)))
            .collect())
    }

    /// How many nodes `owner` has.
    pub fn pep_node_count(&self, owner: &str) -> Result<usize, StoreError> {
        let count: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM pep_nodes WHERE owner = ?1",
            [normalize_user(owner)],
            |row| row.get(0),
        )?;
        Ok(usize::try_from(count).unwrap_or(usize::MAX))
    }

    /// Creates `owner`'s `node` with `config`, or replaces the configuration of the node, and
    /// trims its items to the new `max_items` (`cap` standing for `max`).
    pub fn pep_set_node(
        &self,
        owner: &str,
        node: &str,
        config: &PepNodeConfig,
        cap: usize,
    ) -> Result<(), StoreError> {
        let owner = normalize_user(owner);
        let json = serde_json::to_string(config).unwrap_or_default();
        let tx = self.write()?;
        require_account(&tx, &owner)?;
        tx.execute(
            "INSERT INTO pep_nodes (owner, node, config, persist) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (owner, node) DO UPDATE SET config = excluded.config,
                                                     persist = excluded.persist",
            params![owner, node, json, config.persist_items],
        )?;
        trim(&tx, &owner, node, kept(config, cap))?;
        tx.commit()?;
        Ok(())
    }

    /// Deletes `owner`'s `node` and its items; whether it existed.
    pub fn pep_delete_node(&self, owner: &str, node: &str) -> Result<bool, StoreError> {
        let owner = normalize_user(owner);
        let tx = self.write()?;
        tx.execute(
            "DELETE FROM pep_items WHERE owner = ?1 AND node = ?2",
            params![owner, node],
        )?;
        let deleted = tx.execute(
            "DELETE FROM pep_nodes WHERE owner = ?1 AND node = ?2",
            params![owner, node],
        )?;
        tx.commit()?;
        Ok(deleted > 0)
    }

    /// Stores `item` as the newest of `owner`'s existing `node` (replacing an item with the
    /// same id), then keeps only the newest `max_items` of the node's configuration (`cap`
    /// standing for `max`). `false` if there is no such node.
    pub fn pep_publish(
        &self,
        owner: &str,
        node: &str,
        item: &PepItem,
        cap: usize,
    ) -> Result<bool, StoreError> {
        let owner = normalize_user(owner);
        let tx = self.write()?;
        let json: Option<String> = tx
            .query_row(
                "SELECT config FROM pep_nodes WHERE owner = ?1 AND node = ?2",
                params![owner, node],
                |row| row.get(0),
            )
            .optional()?;
        let Some(json) = json else {
            return Ok(false);
        };
        let config = config_from_json(&json);
        tx.execute(
            "DELETE FROM pep_items WHERE owner = ?1 AND node = ?2 AND item_id = ?3",
            params![owner, node, item.id],
        )?;
        tx.execute(
            "INSERT INTO pep_items (owner, node, item_id, payload, published_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![owner, node, item.id, item.payload, now_unix()],
        )?;
        trim(&tx, &owner, node, kept(&config, cap))?;
        tx.commit()?;
        Ok(true)
    }

    /// Removes the item `id` from `owner`'s `node`; whether it was there.
    pub fn pep_retract(&self, owner: &str, node: &str, id: &str) -> Result<bool, StoreError> {
        let tx = self.write()?;
        let removed = tx.execute(
            "DELETE FROM pep_items WHERE owner = ?1 AND node = ?2 AND item_id = ?3",
            params![normalize_user(owner), node, id],
        )?;
        tx.commit()?;
        Ok(removed > 0)
    }

    /// The newest `max` items of `owner`'s `node` (all with `None`), oldest first.
    pub fn pep_items(
        &self,
        owner: &str,
        node: &str,
        max: Option<usize>,
    ) -> Result<Vec<PepItem>, StoreError> {
        let limit = max.map_or(-1, |max| i64::try_from(max).unwrap_or(i64::MAX));
        let mut stmt = self.conn.prepare(
            "SELECT item_id, payload FROM (
                 SELECT seq, item_id, payload FROM pep_items WHERE owner = ?1 AND node = ?2
                 ORDER BY seq DESC LIMIT ?3
             ) ORDER BY seq",
        )?;
        let items = stmt
            .query_map(params![normalize_user(owner), node, limit], row_to_item)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(items)
    }

    /// The items of `owner`'s `node` with these ids (those that exist), oldest first.
    pub fn pep_items_by_id(
        &self,
        owner: &str,
        node: &str,
        ids: &[String],
    ) -> Result<Vec<PepItem>, StoreError> {
        let owner = normalize_user(owner);
        let mut found: Vec<(i64, PepItem)> = Vec::new();
        let mut stmt = self.conn.prepare(
            "SELECT seq, item_id, payload FROM pep_items
             WHERE owner = ?1 AND node = ?2 AND item_id = ?3",
        )?;
        for id in ids {
            let row = stmt
                .query_row(params![owner, node, id], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        PepItem {
                            id: row.get(1)?,
                            payload: row.get(2)?,
                        },
                    ))
                })
                .optional()?;
            if let Some(row) = row {
                if !found.iter().any(|(seq, _)| *seq == row.0) {
                    found.push(row);
                }
            }
        }
        found.sort_by_key(|(seq, _)| *seq);
        Ok(found.into_iter().map(|(_, item)| item).collect())
    }

    /// The newest item of `owner`'s `node`, if any (XEP-0163 §4.3.2 "last published item";
    /// also what the vCard-avatar bridge of XEP-0398 reads).
    pub fn pep_last_item(&self, owner: &str, node: &str) -> Result<Option<PepItem>, StoreError> {
        Ok(self.pep_items(owner, node, Some(1))?.pop())
    }

    /// The bytes of every payload `owner` has stored, for the per-account quota.
    pub fn pep_account_bytes(&self, owner: &str) -> Result<u64, StoreError> {
        let bytes: i64 = self.conn.query_row(
            "SELECT COALESCE(SUM(length(CAST(payload AS BLOB))), 0) FROM pep_items
             WHERE owner = ?1",
            [normalize_user(owner)],
            |row| row.get(0),
        )?;
        Ok(u64::try_from(bytes).unwrap_or(0))
    }

    /// Forgets the items of every node configured with `persist_items` false: called when the
    /// server starts, so such items live as long as the server runs. How many were removed.
    pub fn pep_forget_transient(&self) -> Result<usize, StoreError> {
        let tx = self.write()?;
        let removed = tx.execute(
            "DELETE FROM pep_items WHERE EXISTS (
                 SELECT 1 FROM pep_nodes n
                 WHERE n.owner = pep_items.owner AND n.node = pep_items.node AND n.persist = 0
             )",
            [],
        )?;
        tx.commit()?;
        Ok(removed)
    }
}

/// How many items a node with `config` keeps, `cap` standing for `max` (and bounding numbers).
fn kept(config: &PepNodeConfig, cap: usize) -> usize {
    config
        .max_items
        .map_or(cap, |max| usize::try_from(max).unwrap_or(cap).min(cap))
}

/// Deletes all but the newest `keep` items of the node.
fn trim(conn: &rusqlite::Connection, owner: &str, node: &str, keep: usize) -> rusqlite::Result<()> {
    conn.execute(
        "DELETE FROM pep_items WHERE owner = ?1 AND node = ?2 AND seq NOT IN (
             SELECT seq FROM pep_items WHERE owner = ?1 AND node = ?2 ORDER BY seq DESC LIMIT ?3
         )",
        params![owner, node, i64::try_from(keep).unwrap_or(i64::MAX)],
    )?;
    Ok(())
}

/// A stored configuration. One that cannot be read (written by a newer version with other
/// values) falls back to the defaults with the owner as the only reader: a node that was
/// private must not become readable by a downgrade.
fn config_from_json(json: &str) -> PepNodeConfig {
    serde_json::from_str(json).unwrap_or_else(|_| PepNodeConfig {
        access_model: AccessModel::Whitelist,
        ..PepNodeConfig::default()
    })
}

fn row_to_item(row: &rusqlite::Row<'_>) -> rusqlite::Result<PepItem> {
    Ok(PepItem {
        id: row.get(0)?,
        payload: row.get(1)?,
    })
}

#[cfg(test)]
mod tests;
