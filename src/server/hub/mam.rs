//! The message archive (XEP-0313, `urn:xmpp:mam:2`) of one-to-one chats, with the stanza ids
//! of XEP-0359 and the paging of XEP-0059.
//!
//! # What is archived (XEP-0313 §6)
//!
//! A `chat` or `normal` message with a `<body>`, between an account and anyone the hub routes
//! to (another account, the bot, an external component), is archived for each *local* party
//! whose preferences (§5) allow it: in the sender's archive when it leaves (unless it is sent
//! to the sender's own account, which archives it once, as received), and in the recipient's
//! archive when it is delivered or stored offline. A message to an address that does not exist
//! is bounced and archived nowhere. The XEP-0334 hints `<no-store/>` and `<no-permanent-store/>`
//! keep a message out, unless it also carries `<store/>` (as in Prosody's `mod_mam`).
//!
//! Each archived copy gets an id, and the message carries it as
//! `<stanza-id xmlns='urn:xmpp:sid:0' by='ACCOUNT' id='…'/>` (XEP-0359 §3): the recipient's
//! in the message it gets (and in its carbon copies, XEP-0280, since they wrap that message),
//! the sender's in the `<sent/>` carbons of its other devices; the message that leaves never
//! carries the sender's. A `<stanza-id/>` a client or a component put in itself, claiming to
//! be by this domain or one of its accounts, is removed before anything else (XEP-0359 §5: a
//! receiving entity must not trust an id it did not set; Prosody's `strip_stanza_id` does the
//! same for the account).
//!
//! # Ids, and when rows reach the disk
//!
//! Ids are numbers from one counter the hub owns, stored with the rows; the stanza id a client
//! sees is the number XOR a per-database random mask, in hexadecimal: unique, cheap, and
//! telling nothing about how many messages the server holds. Rows wait in memory
//! ([`Archive::pending`]) and are written in one transaction when the hub thread finds its
//! queue empty ([`Hub::idle`]), every [`FLUSH_ROWS`] rows, and before any query or expiry, so a
//! query sees every message routed before it; see "Durability" in the store's documentation.
//!
//! # Queries (XEP-0313 §4) and preferences (§5)
//!
//! Rooms' archives, on a room's bare JID, are `muc/archive.rs`'s; they share this file's id
//! counter, group commit, query code and retention.
//!
//! Only the account itself queries its archive: an IQ to its bare JID or with no `to`. A query
//! to another account's bare JID is not handled and gets `service-unavailable`, as in Prosody,
//! whose `mod_mam` hooks only `iq-set/self/urn:xmpp:mam:2:query`. The form's `with`, `start`,
//! `end`, and the `#extended` fields `before-id`, `after-id` and `ids` filter; RSM `<set/>`
//! pages with `max` (at most [`ArchiveLimits::max_page`], a larger `max` is served at the cap
//! as Prosody does with `max_archive_query_results`), `after`, `before` (empty: the last page).
//! An id that is not in the archive gets `item-not-found`; a form of another type, a bad date or
//! a bad JID gets `bad-request`. Preferences are kept per account and applied when archiving;
//! `roster` archives messages with the JIDs of the account's roster.
//!
//! # Retention
//!
//! Rows older than [`ArchiveLimits::max_age`] are deleted at most once every
//! [`EXPIRY_INTERVAL`] (when rows are written, and before queries); an account's rows beyond
//! [`ArchiveLimits::max_per_user`] go oldest first, trimmed when the account's count is more
//! than 5 % over the limit, so that trimming costs little per message.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_xmpp::jid::{BareJid, FullJid, Jid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::data_forms::DataForm;
use tokio_xmpp::parsers::date::DateTime;
use tokio_xmpp::parsers::mam_prefs::{DefaultPrefs, Prefs};
use tokio_xmpp::parsers::message::{Message, MessageType};
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::rsm::SetQuery;
use tokio_xmpp::parsers::stanza_error::DefinedCondition;
use tokio_xmpp::Stanza;

use super::service::{Entity, IqRequest, Kind, Service, Target};
use super::{node, Delivery, Hub};
use crate::server::limits::ArchiveLimits;
use crate::server::store::{
    ArchiveDefault, ArchiveFilter, ArchivePage, ArchivePrefs, ArchiveRow, Paging, Store, StoreError,
};

/// An attribute name, checked at compile time.
macro_rules! ncname {
    ($name:literal) => {
        tokio_xmpp::minidom::rxml::xml_ncname!($name).into()
    };
}

/// XEP-0359 stanza ids.
const SID: &str = "urn:xmpp:sid:0";
/// XEP-0313 §7.1.1: the `before-id`, `after-id` and `ids` fields.
const MAM_EXTENDED: &str = "urn:xmpp:mam:2#extended";
/// XEP-0334 processing hints.
const HINTS: &str = "urn:xmpp:hints";

/// The account features of the archive (XEP-0313 §7; `urn:xmpp:sid:0` as Prosody lists it).
pub(super) const FEATURES: &[&str] = &[ns::MAM, MAM_EXTENDED, SID];

/// Pending rows are written once this many are waiting, even under load.
pub(crate) const FLUSH_ROWS: usize = 2048;

/// Expired rows are looked for at most this often.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(3600);

/// The archive's queries and preferences (XEP-0313 §4, §5), for the account itself.
pub(super) struct Mam;

impl Service for Mam {
    fn features(&self, entity: Entity) -> &'static [&'static str] {
        match entity {
            Entity::Server => &[],
            Entity::Account => FEATURES,
        }
    }

    fn handles(&self, request: &IqRequest) -> bool {
        request.at == Target::OwnAccount
            && (request.payload.is("query", ns::MAM) || request.payload.is("prefs", ns::MAM))
    }

    fn handle(&self, hub: &mut Hub, request: IqRequest, out: &mut Vec<Delivery>) {
        if !hub.archive.limits.enabled {
            return request.answer(Err(DefinedCondition::ServiceUnavailable), out);
        }
        if request.payload.is("prefs", ns::MAM) {
            let answer = hub.archive_prefs_iq(&request);
            return request.answer(answer.map(Some), out);
        }
        match request.kind {
            Kind::Get => request.answer(Ok(Some(query_form())), out),
            Kind::Set => match hub.archive_query(&request) {
                Ok((results, fin)) => {
                    if !results.is_empty() {
                        out.push(Delivery::Batch(request.from.clone(), results));
                    }
                    request.answer(Ok(Some(fin)), out);
                }
                Err(condition) => request.answer(Err(condition), out),
            },
        }
    }
}

/// The archive's state in the hub: settings, the id counter, the rows not yet written, and
/// caches that keep archiving from reading the database for every message.
#[derive(Debug, Default)]
pub(crate) struct Archive {
    limits: ArchiveLimits,
    /// The counter and mask, once read from the store.
    seq: Option<(i64, i64)>,
    /// Rows waiting for the next group commit.
    pending: Vec<ArchiveRow>,
    /// Rooms' rows waiting for the next group commit (`muc/archive.rs`).
    room_pending: Vec<ArchiveRow>,
    /// Each account's preferences, as read or set.
    prefs: HashMap<String, ArchivePrefs>,
    /// Each account's number of rows, written and pending, once counted.
    counts: HashMap<String, usize>,
    /// Each room's number of rows, written and pending, once counted.
    room_counts: HashMap<String, usize>,
    /// When expiry last ran (ms).
    expired_at: Option<i64>,
}

impl Hub {
    /// The archive's switch and retention (the defaults until this is called).
    pub(super) fn set_archive_limits(&mut self, limits: ArchiveLimits) {
        self.archive.limits = limits;
    }

    /// Whether messages are archived.
    pub(super) fn archive_enabled(&self) -> bool {
        self.archive.limits.enabled
    }

    /// The hub thread has nothing else to do: the archive's pending rows are written now.
    pub fn idle(&mut self) {
        self.flush_archive();
    }

    /// Writes the pending archive rows in one transaction (one for the accounts' rows, one for
    /// the rooms'), then applies the retention limits.
    pub(crate) fn flush_archive(&mut self) {
        let next = self.archive.seq.map_or(1, |(next, _)| next);
        if !self.archive.pending.is_empty() {
            let rows = std::mem::take(&mut self.archive.pending);
            if let Err(error) = self.store.append_archive(&rows, next) {
                tracing::error!(
                    rows = rows.len(),
                    "could not write archived messages: {error}"
                );
                self.archive.counts.clear();
            }
            self.trim_archives(&rows, false);
        }
        if !self.archive.room_pending.is_empty() {
            let rows = std::mem::take(&mut self.archive.room_pending);
            if let Err(error) = self.store.append_room_archive(&rows, next) {
                tracing::error!(
                    rows = rows.len(),
                    "could not write archived room messages: {error}"
                );
                self.archive.room_counts.clear();
            }
            self.trim_archives(&rows, true);
        }
        self.expire_archive();
    }

    /// Deletes the oldest rows of the accounts (or rooms) in `rows` that are over their limit.
    fn trim_archives(&mut self, rows: &[ArchiveRow], rooms: bool) {
        let max = self.archive.limits.max_per_user;
        let slack = max / 20 + 1;
        for row in rows {
            let owner = if rooms {
                Owner::Room(&row.owner)
            } else {
                Owner::Account(&row.owner)
            };
            let counts = if rooms {
                &mut self.archive.room_counts
            } else {
                &mut self.archive.counts
            };
            let count = match counts.get(&row.owner) {
                Some(count) => *count,
                None => {
                    // First rows of this archive since the start: count once.
                    let count = owner.count(&self.store).unwrap_or(0);
                    counts.insert(row.owner.clone(), count);
                    continue;
                }
            };
            if count > max.saturating_add(slack) {
                counts.insert(row.owner.clone(), max);
                if let Err(error) = owner.trim(&self.store, max) {
                    tracing::error!(owner = row.owner, "could not trim an archive: {error}");
                }
            }
        }
    }

    /// Deletes rows older than the age limit, if the last look was long enough ago.
    fn expire_archive(&mut self) {
        let Some(max_age) = self.archive.limits.max_age else {
            return;
        };
        let time = now_ms();
        let interval = i64::try_from(EXPIRY_INTERVAL.as_millis()).unwrap_or(i64::MAX);
        if self
            .archive
            .expired_at
            .is_some_and(|at| time.saturating_sub(at) < interval)
        {
            return;
        }
        self.archive.expired_at = Some(time);
        let age = i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
        let before = time.saturating_sub(age);
        match self.store.expire_archive(before) {
            Ok(0) => {}
            Ok(deleted) => {
                tracing::info!(deleted, "expired archived messages");
                self.archive.counts.clear();
            }
            Err(error) => tracing::error!("could not expire archived messages: {error}"),
        }
        match self.store.expire_room_archive(before) {
            Ok(0) => {}
            Ok(deleted) => {
                tracing::info!(deleted, "expired archived room messages");
                self.archive.room_counts.clear();
            }
            Err(error) => tracing::error!("could not expire archived room messages: {error}"),
        }
    }

    /// The counter and mask, read once.
    fn archive_seq(&mut self) -> Option<(i64, i64)> {
        if self.archive.seq.is_none() {
            match self.store.archive_seq() {
                Ok(seq) => self.archive.seq = Some(seq),
                Err(error) => tracing::error!("could not read the archive's counter: {error}"),
            }
        }
        self.archive.seq
    }

    /// Removes the `<stanza-id/>`s of `message` that claim to be set by this domain or one of
    /// its accounts (XEP-0359 §5); ids by other entities stay.
    pub(super) fn strip_stanza_ids(&self, message: &mut Message) {
        let domain = &self.domain;
        message.payloads.retain(|payload| {
            !(payload.is("stanza-id", SID)
                && payload
                    .attr("by")
                    .and_then(|by| Jid::new(by).ok())
                    .is_none_or(|by| by.domain().as_str() == domain))
        });
    }

    /// The sender's side: archives `message`, sent by the account of `from` to `to`, in the
    /// sender's archive, and returns the copy its other devices' `<sent/>` carbons carry (with
    /// the sender's stanza id), or `None` when it is not archived.
    ///
    /// `xml` caches the message's serialised form for the recipient's side of the same
    /// message ([`Hub::archive_received`]), so that it is written out once.
    pub(super) fn archive_sent(
        &mut self,
        from: &FullJid,
        to: &Jid,
        message: &Message,
        xml: &mut Option<String>,
    ) -> Option<Message> {
        let owner = from.to_bare();
        let with = to.to_bare();
        if with == owner {
            // To the account itself: archived once, as received.
            return None;
        }
        let id = self.archive_for(&owner, &with, message, xml)?;
        let mut copy = message.clone();
        copy.payloads.push(stanza_id(&owner, &id));
        Some(copy)
    }

    /// The recipient's side: archives `message` in the archive of `to` (an account of this
    /// domain) and adds the recipient's stanza id to it. `xml`: see [`Hub::archive_sent`].
    pub(super) fn archive_received(
        &mut self,
        to: &BareJid,
        message: &mut Message,
        xml: &mut Option<String>,
    ) {
        let Some(with) = message.from.as_ref().map(Jid::to_bare) else {
            return;
        };
        if let Some(id) = self.archive_for(to, &with, message, xml) {
            message.payloads.push(stanza_id(to, &id));
        }
    }

    /// Queues `message` for `owner`'s archive if it is archived there; returns its stanza id.
    fn archive_for(
        &mut self,
        owner: &BareJid,
        with: &BareJid,
        message: &Message,
        xml: &mut Option<String>,
    ) -> Option<String> {
        if !self.archive.limits.enabled || !archivable(message) {
            return None;
        }
        let user = owner.node()?.as_str().to_string();
        if !self.shall_archive(&user, with) {
            return None;
        }
        let (next, mask) = self.archive_seq()?;
        self.archive.seq = Some((next + 1, mask));
        self.archive.pending.push(ArchiveRow {
            id: next,
            owner: user.clone(),
            with: with.to_string(),
            stamp_ms: now_ms(),
            stanza: xml
                .get_or_insert_with(|| String::from(&Element::from(message.clone())))
                .clone(),
        });
        if let Some(count) = self.archive.counts.get_mut(&user) {
            *count += 1;
        }
        if self.archive.pending.len() >= FLUSH_ROWS {
            self.flush_archive();
        }
        Some(encode_id(next, mask))
    }

    /// A new archive id, taken from the counter now, and its stanza id; `None` when the archive
    /// is off (or its counter cannot be read). A room stamps the stanza id on a groupchat
    /// message before it goes out, then hands the message to [`Hub::queue_room_row`].
    pub(super) fn reserve_archive_id(&mut self) -> Option<(i64, String)> {
        if !self.archive.limits.enabled {
            return None;
        }
        let (next, mask) = self.archive_seq()?;
        self.archive.seq = Some((next + 1, mask));
        Some((next, encode_id(next, mask)))
    }

    /// Queues `message` (as the room sent it) under the id `id` in the archive of `room`;
    /// `sender` is the real bare JID of the occupant who said it.
    pub(super) fn queue_room_row(
        &mut self,
        id: i64,
        room: &BareJid,
        sender: &BareJid,
        message: &Message,
    ) {
        let owner = room.as_str().to_lowercase();
        if let Some(count) = self.archive.room_counts.get_mut(&owner) {
            *count += 1;
        }
        self.archive.room_pending.push(ArchiveRow {
            id,
            owner,
            with: sender.to_string(),
            stamp_ms: now_ms(),
            stanza: String::from(&Element::from(message.clone())),
        });
        if self.archive.room_pending.len() >= FLUSH_ROWS {
            self.flush_archive();
        }
    }

    /// Deletes the archive of `room` (destroyed, XEP-0045 §10.9, or a temporary room that
    /// emptied), pending rows included.
    pub(super) fn forget_room_archive(&mut self, room: &BareJid) {
        let owner = room.as_str().to_lowercase();
        self.archive.room_pending.retain(|row| row.owner != owner);
        self.archive.room_counts.remove(&owner);
        if let Err(error) = self.store.delete_room_archive(&owner) {
            tracing::error!(room = owner, "could not delete a room's archive: {error}");
        }
    }

    /// Whether `user`'s preferences archive messages with `with` (XEP-0313 §5).
    fn shall_archive(&mut self, user: &str, with: &BareJid) -> bool {
        let prefs = match self.archive.prefs.get(user) {
            Some(prefs) => prefs,
            None => {
                let prefs = self
                    .store
                    .archive_prefs(user)
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                self.archive.prefs.entry(user.to_string()).or_insert(prefs)
            }
        };
        let with = with.as_str().to_lowercase();
        if prefs.never.contains(&with) {
            return false;
        }
        if prefs.always.contains(&with) {
            return true;
        }
        match prefs.default {
            ArchiveDefault::Always => true,
            ArchiveDefault::Never => false,
            ArchiveDefault::Roster => self.store.roster_item(user, &with).ok().flatten().is_some(),
        }
    }

    /// Prefs get and set (XEP-0313 §5): the answer is the preferences now in force.
    fn archive_prefs_iq(&mut self, request: &IqRequest) -> Result<Element, DefinedCondition> {
        let user = node(&request.from);
        if request.kind == Kind::Set {
            let prefs = Prefs::try_from(request.payload.clone())
                .map_err(|_| DefinedCondition::BadRequest)?;
            let bare = |jids: Vec<Jid>| jids.iter().map(|j| j.to_bare().to_string()).collect();
            let prefs = ArchivePrefs {
                default: match prefs.default_ {
                    DefaultPrefs::Always => ArchiveDefault::Always,
                    DefaultPrefs::Never => ArchiveDefault::Never,
                    DefaultPrefs::Roster => ArchiveDefault::Roster,
                },
                always: bare(prefs.always),
                never: bare(prefs.never),
            };
            if prefs.always.len() + prefs.never.len() > MAX_PREFS_JIDS {
                return Err(DefinedCondition::NotAcceptable);
            }
            if let Err(error) = self.store.set_archive_prefs(&user, &prefs) {
                tracing::error!(user, "could not store archive preferences: {error}");
                return Err(DefinedCondition::InternalServerError);
            }
            self.archive.prefs.remove(&user);
        }
        let prefs = match self.store.archive_prefs(&user) {
            Ok(prefs) => prefs.unwrap_or_default(),
            Err(error) => {
                tracing::error!(user, "could not read archive preferences: {error}");
                return Err(DefinedCondition::InternalServerError);
            }
        };
        let jids = |jids: &[String]| jids.iter().filter_map(|j| Jid::new(j).ok()).collect();
        Ok(Prefs {
            default_: match prefs.default {
                ArchiveDefault::Always => DefaultPrefs::Always,
                ArchiveDefault::Never => DefaultPrefs::Never,
                ArchiveDefault::Roster => DefaultPrefs::Roster,
            },
            always: jids(&prefs.always),
            never: jids(&prefs.never),
        }
        .into())
    }

    /// A query (XEP-0313 §4) of the sender's own archive: the result messages and the `<fin/>`.
    fn archive_query(
        &mut self,
        request: &IqRequest,
    ) -> Result<(Vec<Stanza>, Element), DefinedCondition> {
        let user = node(&request.from);
        let archive = request.from.to_bare().into();
        self.query_archive(
            Owner::Account(&user),
            &request.payload,
            &request.from,
            archive,
            false,
        )
    }

    /// A query (XEP-0313 §4) of `owner`'s archive by `from`, answered from `archive` (the
    /// archive's JID): the result messages and the `<fin/>`. `strip_real`: the archived
    /// messages' `<x xmlns='…muc#user'/>` (the sender's real JID) are left out.
    pub(super) fn query_archive(
        &mut self,
        owner: Owner<'_>,
        query: &Element,
        from: &FullJid,
        archive: Jid,
        strip_real: bool,
    ) -> Result<(Vec<Stanza>, Element), DefinedCondition> {
        if query.attr("node").is_some_and(|n| !n.is_empty()) {
            // These archives have no nodes (those are pubsub archives, §3.3).
            return Err(DefinedCondition::ItemNotFound);
        }
        // Everything routed so far is on disk before it is read, and what expired is gone.
        self.flush_archive();
        let (_, mask) = self
            .archive_seq()
            .ok_or(DefinedCondition::InternalServerError)?;
        let known = |hub: &Hub, id: &str| -> Result<i64, DefinedCondition> {
            let id = decode_id(id, mask).ok_or(DefinedCondition::ItemNotFound)?;
            match owner.has(&hub.store, id) {
                Ok(true) => Ok(id),
                Ok(false) => Err(DefinedCondition::ItemNotFound),
                Err(_) => Err(DefinedCondition::InternalServerError),
            }
        };

        let mut filter = ArchiveFilter::default();
        let mut flip = false;
        let mut rsm = None;
        for child in query.children() {
            if child.is("x", ns::DATA_FORMS) {
                let form =
                    DataForm::try_from(child.clone()).map_err(|_| DefinedCondition::BadRequest)?;
                self.apply_form(&form, &mut filter, mask, &known)?;
                if matches!(owner, Owner::Room(_)) {
                    // A room's archive is not filtered by sender, as in Prosody's
                    // `mod_muc_mam`: that would tell who said what in a room hiding real JIDs.
                    filter.with = None;
                }
            } else if child.is("set", ns::RSM) {
                rsm = Some(
                    SetQuery::try_from(child.clone()).map_err(|_| DefinedCondition::BadRequest)?,
                );
            } else if child.is("flip-page", ns::MAM) {
                flip = true;
            }
        }
        let limits = &self.archive.limits;
        let max = rsm
            .as_ref()
            .and_then(|set| set.max)
            .unwrap_or(limits.default_page)
            .min(limits.max_page);
        let paging = match rsm.as_ref().map(|set| (&set.before, &set.after)) {
            Some((Some(before), after)) => {
                if let Some(after) = after {
                    let after = known(self, after)?;
                    filter.after_id = Some(filter.after_id.map_or(after, |a| a.max(after)));
                }
                if before.is_empty() {
                    Paging::Backward(None)
                } else {
                    Paging::Backward(Some(known(self, before)?))
                }
            }
            Some((None, Some(after))) => Paging::Forward(Some(known(self, after)?)),
            _ => Paging::Forward(None),
        };
        let page = owner
            .page(&self.store, &filter, paging, max)
            .map_err(|error| {
                tracing::error!(?owner, "could not read the archive: {error}");
                DefinedCondition::InternalServerError
            })?;
        let queryid = query.attr("queryid");
        Ok(results(
            from, archive, queryid, &page, mask, flip, strip_real,
        ))
    }

    /// The form's fields into `filter` (XEP-0313 §4.1); unknown fields are ignored, as
    /// Prosody's form handling does.
    fn apply_form(
        &self,
        form: &DataForm,
        filter: &mut ArchiveFilter,
        mask: i64,
        known: &dyn Fn(&Hub, &str) -> Result<i64, DefinedCondition>,
    ) -> Result<(), DefinedCondition> {
        if form.form_type().is_some_and(|t| t != ns::MAM) {
            return Err(DefinedCondition::BadRequest);
        }
        for field in &form.fields {
            let value = field.values.first().map(String::as_str).unwrap_or("");
            match field.var.as_deref() {
                Some("with") if !value.is_empty() => {
                    let with = Jid::new(value).map_err(|_| DefinedCondition::BadRequest)?;
                    filter.with = Some(with.to_bare().to_string());
                }
                Some("start") if !value.is_empty() => filter.start_ms = Some(parse_ms(value)?),
                Some("end") if !value.is_empty() => filter.end_ms = Some(parse_ms(value)?),
                Some("after-id") if !value.is_empty() => {
                    filter.after_id = Some(known(self, value)?)
                }
                Some("before-id") if !value.is_empty() => {
                    filter.before_id = Some(known(self, value)?)
                }
                Some("ids") => {
                    let cap = self.archive.limits.max_page;
                    let ids = field
                        .values
                        .iter()
                        .take(cap)
                        .filter_map(|id| decode_id(id, mask))
                        .collect();
                    filter.ids = Some(ids);
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Most JIDs in an account's `always` and `never` lists together.
const MAX_PREFS_JIDS: usize = 1000;

/// Whether `message` is one the archive keeps (see the module documentation).
fn archivable(message: &Message) -> bool {
    matches!(message.type_, MessageType::Chat | MessageType::Normal) && storable(message)
}

/// Whether `message` has a body and its XEP-0334 hints let it be stored.
pub(super) fn storable(message: &Message) -> bool {
    !message.bodies.is_empty()
        && (message.payloads.iter().any(|p| p.is("store", HINTS))
            || !message
                .payloads
                .iter()
                .any(|p| p.is("no-store", HINTS) || p.is("no-permanent-store", HINTS)))
}

/// Whose archive: an account's, by username, or a room's, by bare JID (`muc/archive.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Owner<'a> {
    /// An account's one-to-one messages.
    Account(&'a str),
    /// A room's groupchat messages.
    Room(&'a str),
}

impl Owner<'_> {
    fn has(self, store: &Store, id: i64) -> Result<bool, StoreError> {
        match self {
            Owner::Account(user) => store.archive_has(user, id),
            Owner::Room(room) => store.room_archive_has(room, id),
        }
    }

    fn count(self, store: &Store) -> Result<usize, StoreError> {
        match self {
            Owner::Account(user) => store.archive_count(user),
            Owner::Room(room) => store.room_archive_count(room),
        }
    }

    fn trim(self, store: &Store, keep: usize) -> Result<usize, StoreError> {
        match self {
            Owner::Account(user) => store.trim_archive(user, keep),
            Owner::Room(room) => store.trim_room_archive(room, keep),
        }
    }

    fn page(
        self,
        store: &Store,
        filter: &ArchiveFilter,
        paging: Paging,
        max: usize,
    ) -> Result<ArchivePage, StoreError> {
        match self {
            Owner::Account(user) => store.archive_query(user, filter, paging, max),
            Owner::Room(room) => store.room_archive_query(room, filter, paging, max),
        }
    }
}

/// `<stanza-id xmlns='urn:xmpp:sid:0' by='OWNER' id='ID'/>` (XEP-0359 §3).
fn stanza_id(owner: &BareJid, id: &str) -> Element {
    Element::builder("stanza-id", SID)
        .attr(ncname!("by"), owner.as_str())
        .attr(ncname!("id"), id)
        .build()
}

/// The stanza id clients see for the archive id `id`.
fn encode_id(id: i64, mask: i64) -> String {
    format!("{:016x}", (id ^ mask) as u64)
}

/// The archive id of a stanza id from a client, if it is one of ours.
fn decode_id(text: &str, mask: i64) -> Option<i64> {
    if text.len() != 16 {
        return None;
    }
    let value = u64::from_str_radix(text, 16).ok()? as i64;
    Some(value ^ mask).filter(|id| *id > 0)
}

/// Milliseconds since the Unix epoch, now (also the rooms' and the uploads' clock).
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A XEP-0082 date-time as milliseconds since the Unix epoch; `bad-request` if it is not one.
fn parse_ms(text: &str) -> Result<i64, DefinedCondition> {
    let date: DateTime = text.parse().map_err(|_| DefinedCondition::BadRequest)?;
    Ok(date.0.timestamp_millis())
}

/// `ms` as a XEP-0082 date-time (UTC, with milliseconds).
fn stamp(ms: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(time).to_string()
}

/// The result messages of `page` for `to`, from `archive`, and the `<fin/>` (XEP-0313 §4.2,
/// §4.3). `strip_real`: see [`Hub::query_archive`].
fn results(
    to: &FullJid,
    archive: Jid,
    queryid: Option<&str>,
    page: &ArchivePage,
    mask: i64,
    flip: bool,
    strip_real: bool,
) -> (Vec<Stanza>, Element) {
    let mut messages: Vec<Stanza> = Vec::with_capacity(page.messages.len());
    for archived in &page.messages {
        let Ok(mut stored) = archived.stanza.parse::<Element>() else {
            tracing::warn!(id = archived.id, "skipping an unreadable archived message");
            continue;
        };
        if strip_real {
            while stored.remove_child("x", ns::MUC_USER).is_some() {}
        }
        let delay = Element::builder("delay", ns::DELAY)
            .attr(ncname!("stamp"), stamp(archived.stamp_ms))
            .build();
        let forwarded = Element::builder("forwarded", ns::FORWARD)
            .append(delay)
            .append(stored)
            .build();
        let mut result = Element::builder("result", ns::MAM)
            .attr(ncname!("id"), encode_id(archived.id, mask))
            .append(forwarded);
        if let Some(queryid) = queryid {
            result = result.attr(ncname!("queryid"), queryid);
        }
        let mut message = Message::new(Some(to.clone().into()));
        message.from = Some(archive.clone());
        message.payloads.push(result.build());
        messages.push(message.into());
    }
    let first = page.messages.first().map(|m| encode_id(m.id, mask));
    let last = page.messages.last().map(|m| encode_id(m.id, mask));
    if flip {
        messages.reverse();
    }
    let mut set = Element::builder("set", ns::RSM);
    if let (Some(first), Some(last)) = (first, last) {
        set = set
            .append(Element::builder("first", ns::RSM).append(first).build())
            .append(Element::builder("last", ns::RSM).append(last).build());
    }
    set = set.append(
        Element::builder("count", ns::RSM)
            .append(page.count.to_string())
            .build(),
    );
    let mut fin = Element::builder("fin", ns::MAM);
    if page.complete {
        fin = fin.attr(ncname!("complete"), "true");
    }
    if let Some(queryid) = queryid {
        fin = fin.attr(ncname!("queryid"), queryid);
    }
    (messages, fin.append(set.build()).build())
}

/// The query form (XEP-0313 §4.1.5 and §7.1.1), for an IQ get.
pub(super) fn query_form() -> Element {
    let field = |var: &str, kind: &str| {
        Element::builder("field", ns::DATA_FORMS)
            .attr(ncname!("var"), var)
            .attr(ncname!("type"), kind)
            .build()
    };
    let form_type = Element::builder("field", ns::DATA_FORMS)
        .attr(ncname!("var"), "FORM_TYPE")
        .attr(ncname!("type"), "hidden")
        .append(
            Element::builder("value", ns::DATA_FORMS)
                .append(ns::MAM)
                .build(),
        )
        .build();
    let form = Element::builder("x", ns::DATA_FORMS)
        .attr(ncname!("type"), "form")
        .append(form_type)
        .append(field("with", "jid-single"))
        .append(field("start", "text-single"))
        .append(field("end", "text-single"))
        .append(field("before-id", "text-single"))
        .append(field("after-id", "text-single"))
        .append(field("ids", "text-multi"))
        .build();
    Element::builder("query", ns::MAM).append(form).build()
}

#[cfg(test)]
mod tests;
