//! The chat front end of the bot: a contact's text → access control and the rate limit → a
//! [`ChatCommand`] → the reply. Each command group has its own file; they are all methods of
//! [`Bot`], so that other front ends (a room mention, a XEP-0050 ad-hoc command form) go through
//! [`Bot::admit`] and [`Bot::answer`] and get the same access rules and the same replies.
//!
//! | module | commands |
//! |---|---|
//! | [`read`] | any text (the default sensor or a named one), `get`, `list` |
//! | [`stats`] | `stats` |
//! | [`alerts`] | `alert … above/below`, `alerts`, `alert off` |
//! | [`stale`] | `stale` |
//! | [`help`] | `help` |
//!
//! The chat side never blocks on I/O: alerts set or removed here are saved through the bot's
//! state-database queue.

pub mod alerts;
pub mod help;
pub mod read;
pub mod stale;
pub mod stats;

#[cfg(test)]
mod tests;

use std::time::Instant;

use super::access::{Permission, Verdict};
use super::bot::{lock, Bot};
use super::commands::{self, ChatCommand};

impl Bot {
    /// The reply to `body` from `contact` (a bare JID) at `now`, or `None` for silence (a
    /// refused contact already told, or one over the rate limit).
    pub fn chat(&self, contact: &str, body: &str, now: Instant) -> Option<String> {
        let permission = match self.admit(contact, now) {
            Ok(permission) => permission,
            Err(instead) => return instead,
        };
        Some(self.answer(contact, permission, commands::parse(body), now))
    }

    /// Access control and the per-contact rate limit, for every front end: what `contact` may
    /// do, or `Err` with the reply to send instead of an answer (`None` for silence: a refused
    /// contact already told, or one over the rate limit).
    pub fn admit(&self, contact: &str, now: Instant) -> Result<Permission, Option<String>> {
        self.admit_as(self.access.permission(contact), contact, now)
    }

    /// [`Bot::admit`] with the permission already decided, and the refusals and the rate limit
    /// counted for `key` (a contact, or a whole room).
    pub fn admit_as(
        &self,
        permission: Permission,
        key: &str,
        now: Instant,
    ) -> Result<Permission, Option<String>> {
        let contact = key;
        let mut guard = lock(&self.guard);
        if permission == Permission::None {
            return Err(guard.refusals.admit(contact, now).then(|| {
                tracing::info!(contact, "refused a contact not on the allow list");
                "Sorry, I only answer the contacts my operator allowed. \
                 Ask them to add you with --allow."
                    .to_string()
            }));
        }
        match guard.rate.admit(contact, now) {
            Verdict::Reply => Ok(permission),
            Verdict::Warn => {
                tracing::info!(contact, "contact over the reply rate limit");
                Err(Some(format!(
                    "You are sending messages faster than I answer ({} a minute). I will \
                     ignore your messages for a little while.",
                    self.settings.replies_per_minute
                )))
            }
            Verdict::Drop => Err(None),
        }
    }

    /// The reply to `body`, asked in `room` (a bare room JID) by an occupant whose real bare JID
    /// is `real` when the room shows it. The allow list applies to the real JID; where the room
    /// hides it, only `--room-allow` decides (see [`Bot::room_permission`]). Refusals and the
    /// rate limit count per room, as they count per contact.
    pub fn room_chat(
        &self,
        room: &str,
        real: Option<&str>,
        body: &str,
        now: Instant,
    ) -> Option<String> {
        let permission = self.room_permission(room, real);
        let permission = match self.admit_as(permission, room, now) {
            Ok(permission) => permission,
            Err(instead) => return instead,
        };
        // Alerts asked for in a room belong to the room: their messages go to everyone there,
        // and `alerts` / `alert off` in the room manage them.
        Some(self.answer(room, permission, commands::parse(body), now))
    }

    /// What an occupant of `room` with real JID `real` (if shown) may do: what the allow list
    /// gives the real JID, and at least reading in a `--room-allow` room. In a room that hides
    /// real JIDs, readings for everyone in a `--room-allow` room or when the bot is open to
    /// anyone anyway; nothing otherwise (an anonymous occupant could be anyone). Alerts and
    /// stats always need an allowed real JID.
    pub fn room_permission(&self, room: &str, real: Option<&str>) -> Permission {
        let room_allowed = self
            .settings
            .room_allow
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(room));
        let open = !self.access.is_restricted();
        match real.map(|jid| self.access.permission(jid)) {
            Some(Permission::All) => Permission::All,
            Some(Permission::Read) => Permission::Read,
            _ if room_allowed || open => Permission::Read,
            _ => Permission::None,
        }
    }

    /// The answer to `command` from `contact`, who was admitted with `permission` by
    /// [`Bot::admit`].
    pub fn answer(
        &self,
        contact: &str,
        permission: Permission,
        command: ChatCommand,
        now: Instant,
    ) -> String {
        let everything = permission == Permission::All;
        match command {
            ChatCommand::Help => self.help(),
            ChatCommand::List => self.list(now),
            ChatCommand::Get(target) => self.get(&target, now),
            ChatCommand::Stale => self.stale(now),
            ChatCommand::Invalid(text) => text,
            ChatCommand::Alerts => self.alerts_of(contact),
            ChatCommand::AlertOff(target) => self.alert_off(contact, target.as_deref()),
            ChatCommand::Stats { .. } | ChatCommand::AlertSet { .. } if !everything => {
                "Alerts and stats are only for the contacts on my allow list; my operator can \
                 add you with --allow. You can still ask for readings: send help."
                    .to_string()
            }
            ChatCommand::Stats { target, window } => {
                // A chart too, when the client loop can send one (see `super::chart`).
                self.charts.want(contact, &target, window, false);
                self.stats(&target, window, now)
            }
            ChatCommand::AlertSet {
                target,
                above,
                threshold,
                margin,
            } => self.alert_set(contact, &target, above, threshold, margin, now),
            ChatCommand::Text(text) => match self.sensors.by_name(&text) {
                Some(sensor) => self.sensor_reply(sensor, now),
                None => self.sensor_reply(self.sensors.default_sensor(), now),
            },
        }
    }
}
