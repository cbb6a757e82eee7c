//! Rosters (RFC 6121 §2): each owner's items with their subscription states, the unanswered
//! inbound subscription requests to re-deliver, and the roster versions of RFC 6121 §2.6 (see
//! the store's module documentation for why the numbers come from one shared counter and carry
//! a tag of the database).

use rusqlite::types::Type;
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{normalize_jid, normalize_user, require_account, Store, StoreError};

/// A roster subscription state (RFC 6121 §2.1.2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Subscription {
    /// Neither side sees the other's presence.
    #[default]
    None,
    /// The owner sees the contact's presence.
    To,
    /// The contact sees the owner's presence.
    From,
    /// Both see each other's presence.
    Both,
}

impl Subscription {
    /// The attribute value: `none`, `to`, `from` or `both`.
    pub fn as_str(self) -> &'static str {
        match self {
            Subscription::None => "none",
            Subscription::To => "to",
            Subscription::From => "from",
            Subscription::Both => "both",
        }
    }

    /// Parses an attribute value as written by [`Subscription::as_str`]; `None` for anything
    /// else (including `remove`, which is a request, not a state).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(Subscription::None),
            "to" => Some(Subscription::To),
            "from" => Some(Subscription::From),
            "both" => Some(Subscription::Both),
            _ => None,
        }
    }
}

/// One roster item (RFC 6121 §2.1): the owner's view of one contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosterItem {
    /// The contact's bare JID (stored lowercased).
    pub jid: String,
    /// The owner's name for the contact, if any.
    pub name: Option<String>,
    /// The subscription state.
    pub subscription: Subscription,
    /// The owner asked to see the contact's presence and the contact has not answered
    /// ("Pending Out", sent to clients as `ask='subscribe'`).
    pub ask: bool,
    /// The contact asked to see the owner's presence and the owner has not answered
    /// ("Pending In"). Never sent to clients as an attribute; the stored request stanza is
    /// re-delivered instead, see [`Store::pending_subscription_requests`].
    pub pending_in: bool,
    /// The groups the owner filed the contact under.
    pub groups: Vec<String>,
}

impl RosterItem {
    /// An item for `jid` with no name, no groups, subscription `none` and nothing pending.
    pub fn new(jid: impl Into<String>) -> Self {
        Self {
            jid: jid.into(),
            name: None,
            subscription: Subscription::None,
            ask: false,
            pending_in: false,
            groups: Vec::new(),
        }
    }

    /// True for an item that exists only to remember an unanswered inbound subscription request
    /// (subscription `none`, no `ask`, no name, no groups). Such items are best left out of a
    /// roster result, as ejabberd does: the owner never added that contact.
    pub fn is_pending_in_only(&self) -> bool {
        self.pending_in
            && self.subscription == Subscription::None
            && !self.ask
            && self.name.is_none()
            && self.groups.is_empty()
    }
}

impl Store {
    /// The owner's whole roster, sorted by contact JID (including pending-in-only items, see
    /// [`RosterItem::is_pending_in_only`]).
    pub fn roster(&self, owner: &str) -> Result<Vec<RosterItem>, StoreError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {ROSTER_COLUMNS} FROM roster WHERE owner = ?1 ORDER BY jid"
        ))?;
        let items = stmt
            .query_map([normalize_user(owner)], row_to_item)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(items)
    }

    /// The owner's whole roster, as [`Store::roster`], with its version as
    /// [`Store::roster_ver`], both read in one transaction so that they match.
    pub fn roster_with_ver(&self, owner: &str) -> Result<(String, Vec<RosterItem>), StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        let items = self.roster(owner)?;
        let ver = self.roster_ver(owner)?;
        tx.commit()?;
        Ok((ver, items))
    }

    /// The owner's roster version as clients see it (RFC 6121 §2.6): this database's tag and
    /// the owner's version number, `TAG-NUMBER`. It changes with every change to the roster and
    /// survives restarts; an unknown account is at `TAG-0`.
    pub fn roster_ver(&self, owner: &str) -> Result<String, StoreError> {
        Ok(self.conn.query_row(
            "SELECT value || '-' || COALESCE(
                 (SELECT roster_version FROM accounts WHERE username = ?1), 0)
             FROM roster_version_tag WHERE id = 0",
            [normalize_user(owner)],
            |row| row.get(0),
        )?)
    }

    /// One roster item, if the owner has one for `contact` (a bare JID).
    pub fn roster_item(
        &self,
        owner: &str,
        contact: &str,
    ) -> Result<Option<RosterItem>, StoreError> {
        Ok(get_item(
            &self.conn,
            &normalize_user(owner),
            &normalize_jid(contact),
        )?)
    }

    /// Inserts or replaces the owner's item for `item.jid`. Returns whether anything changed;
    /// only then is the roster version bumped (and a roster push due).
    ///
    /// Setting `pending_in` to false forgets the stored subscription request stanza; keeping it
    /// true keeps the stanza. Use [`Store::record_subscription_request`] to store one.
    pub fn upsert_roster_item(&self, owner: &str, item: &RosterItem) -> Result<bool, StoreError> {
        let owner = normalize_user(owner);
        let item = RosterItem {
            jid: normalize_jid(&item.jid),
            ..item.clone()
        };
        let groups = serde_json::to_string(&item.groups)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        let tx = self.write()?;
        require_account(&tx, &owner)?;
        if get_item(&tx, &owner, &item.jid)?.as_ref() == Some(&item) {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO roster (owner, jid, name, subscription, ask, pending_in, groups_json)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (owner, jid) DO UPDATE SET
                 name = excluded.name,
                 subscription = excluded.subscription,
                 ask = excluded.ask,
                 pending_in = excluded.pending_in,
                 pending_in_stanza = CASE WHEN excluded.pending_in THEN pending_in_stanza END,
                 groups_json = excluded.groups_json",
            params![
                owner,
                item.jid,
                item.name,
                item.subscription.as_str(),
                item.ask,
                item.pending_in,
                groups,
            ],
        )?;
        bump_roster_version(&tx, &owner)?;
        tx.commit()?;
        Ok(true)
    }

    /// Removes the owner's item for `contact`. Returns false if there was none (or no such
    /// account); the roster version is bumped only when an item was removed.
    pub fn remove_roster_item(&self, owner: &str, contact: &str) -> Result<bool, StoreError> {
        let owner = normalize_user(owner);
        let tx = self.write()?;
        let removed = tx.execute(
            "DELETE FROM roster WHERE owner = ?1 AND jid = ?2",
            params![owner, normalize_jid(contact)],
        )?;
        if removed == 0 {
            return Ok(false);
        }
        bump_roster_version(&tx, &owner)?;
        tx.commit()?;
        Ok(true)
    }

    /// The owner's roster version number: 0 for a new account or an unknown one, then strictly
    /// increasing with every change. See the module documentation.
    #[cfg(test)]
    pub fn roster_version(&self, owner: &str) -> Result<u64, StoreError> {
        let version: Option<i64> = self
            .conn
            .query_row(
                "SELECT roster_version FROM accounts WHERE username = ?1",
                [normalize_user(owner)],
                |row| row.get(0),
            )
            .optional()?;
        Ok(version.map_or(0, |v| u64::try_from(v).unwrap_or(0)))
    }

    /// Records an inbound subscription request from `contact` that the owner has not answered
    /// (RFC 6121 §3.1.3), with the request stanza to re-deliver at the owner's next available
    /// presence. Creates a pending-in-only item if the owner has none for `contact`.
    ///
    /// A newer stanza replaces an older one (`None` keeps what is stored). Returns whether the
    /// roster changed (and its version was bumped): false if the request was already pending.
    pub fn record_subscription_request(
        &self,
        owner: &str,
        contact: &str,
        stanza_xml: Option<&str>,
    ) -> Result<bool, StoreError> {
        let owner = normalize_user(owner);
        let contact = normalize_jid(contact);
        let tx = self.write()?;
        require_account(&tx, &owner)?;
        let changed = match get_item(&tx, &owner, &contact)? {
            Some(item) if item.pending_in => false,
            Some(_) => true,
            None => {
                tx.execute(
                    "INSERT INTO roster (owner, jid, subscription) VALUES (?1, ?2, 'none')",
                    params![owner, contact],
                )?;
                true
            }
        };
        tx.execute(
            "UPDATE roster SET pending_in = 1, pending_in_stanza = COALESCE(?3, pending_in_stanza)
             WHERE owner = ?1 AND jid = ?2",
            params![owner, contact, stanza_xml],
        )?;
        if changed {
            bump_roster_version(&tx, &owner)?;
        }
        tx.commit()?;
        Ok(changed)
    }

    /// The owner's unanswered inbound subscription requests: contact JID and, if one was
    /// recorded, the request stanza. Sorted by contact JID.
    pub fn pending_subscription_requests(
        &self,
        owner: &str,
    ) -> Result<Vec<(String, Option<String>)>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT jid, pending_in_stanza FROM roster
             WHERE owner = ?1 AND pending_in <> 0 ORDER BY jid",
        )?;
        let requests = stmt
            .query_map([normalize_user(owner)], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(requests)
    }
}

const ROSTER_COLUMNS: &str = "jid, name, subscription, ask, pending_in, groups_json";

fn row_to_item(row: &Row<'_>) -> rusqlite::Result<RosterItem> {
    let subscription: String = row.get(2)?;
    let subscription = Subscription::parse(&subscription).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            2,
            Type::Text,
            format!("unknown subscription {subscription:?}").into(),
        )
    })?;
    let groups: String = row.get(5)?;
    let groups = serde_json::from_str(&groups)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(5, Type::Text, Box::new(e)))?;
    Ok(RosterItem {
        jid: row.get(0)?,
        name: row.get(1)?,
        subscription,
        ask: row.get(3)?,
        pending_in: row.get(4)?,
        groups,
    })
}

fn get_item(conn: &Connection, owner: &str, jid: &str) -> rusqlite::Result<Option<RosterItem>> {
    conn.query_row(
        &format!("SELECT {ROSTER_COLUMNS} FROM roster WHERE owner = ?1 AND jid = ?2"),
        params![owner, jid],
        row_to_item,
    )
    .optional()
}

fn bump_roster_version(conn: &Connection, owner: &str) -> rusqlite::Result<()> {
    let version: i64 = conn.query_row(
        "UPDATE roster_version_seq SET value = value + 1 WHERE id = 0 RETURNING value",
        [],
        |row| row.get(0),
    )?;
    conn.execute(
        "UPDATE accounts SET roster_version = ?1 WHERE username = ?2",
        params![version, owner],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests;
