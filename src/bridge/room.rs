//! The bot in multi-user chat rooms (XEP-0045). tokio-xmpp has no MUC client layer, so the bot
//! joins with presence stanzas itself and keeps, per room, the nick it has and the occupants'
//! real JIDs when the room shows them. Everything here is sans-IO: stanzas and the time in,
//! stanzas out; `xmpp::run` sends them and calls [`Rooms::tick`] at [`Rooms::next_due`].
//!
//! - [`RoomJoin`]: one `--room ROOM@SERVICE[/NICK]` (or a room the bot was invited to).
//! - [`Rooms::join_all`]: the join presences, sent on every (re)connection (§7.2.1), asking for
//!   no discussion history (§7.2.14) so the bot has nothing old to ignore.
//! - [`Rooms::presence`]: joined (self-presence, status 110, §7.2.3; with 201, a new room, the
//!   bot accepts the instant room, §10.1.2), a nick conflict (§7.2.9: retry with a suffix), a
//!   refusal (§7.2.5–7.2.8), being removed: kicked (307, §8.2), banned (301, §9.1), removed as
//!   a non-member (321/322, §9.4), the room destroyed (`<destroy/>`, §10.9), or the service
//!   shutting down (332). Other occupants' presence keeps their real JIDs (§7.2.4).
//! - Staying joined: every joined room is self-pinged (XEP-0410 §3) after [`RoomTimings::ping_every`]
//!   without any stanza from it; an answer that says the bot is not an occupant, or three pings
//!   without a decision, make it join again.
//! - Joining again: after a kick, a removal, a failed self-ping or a join that got no answer,
//!   with exponential backoff from [`RoomTimings::rejoin_first`] to [`RoomTimings::rejoin_max`]
//!   (reset once a self-ping proves the bot stays in the room, so a room that kicks it on every
//!   join is not hammered). After a ban, a refusal (members-only, password, forbidden) or a
//!   destroyed room it only tries again every [`RoomTimings::refused_retry`] (10 minutes): an
//!   owner may lift the ban or recreate the room, and one presence every 10 minutes costs
//!   nobody anything.
//! - [`decide`]: whether a room message is for the bot, pure. The bot answers a groupchat
//!   message (§7.4) only when addressed — its nick at the start followed by `:` or `,`, or
//!   `@nick` anywhere — and a private message through its room JID (§7.5) always.
//! - Loop guard: it never answers delayed messages (history replay, XEP-0203), its own messages
//!   (by nick, and by real JID where the room shows it: another session of its own account),
//!   the room's own messages (no resource), bodyless ones, or another mqtt2xmpp's answers: every
//!   answer the bot posts in a room carries an empty `<answer xmlns='urn:mqtt2xmpp:room:0'/>`,
//!   and a message carrying one is never answered. Against other kinds of bots it answers one
//!   occupant at most [`ANSWERS_PER_OCCUPANT`] times per [`ANSWER_WINDOW`] in a room, silently
//!   beyond that, so a loop with a bot that does not mark its answers is slowed to a trickle.
//! - [`invitation`]: a mediated (§7.8.2) or direct (XEP-0249) invitation; the caller decides
//!   whether the inviter may (the allow list) and [`Rooms::invited`] bounds how many are
//!   accepted ([`INVITES_PER_WINDOW`] per [`INVITE_WINDOW`], at most [`MAX_INVITED_ROOMS`]).
//!   A mediated invitation names the inviter as the room service states it, so it counts only
//!   from a service the bot already trusts ([`Rooms::trusts_service`]); a direct one comes from
//!   the inviter's own account (or, through a room, from an occupant whose real JID it shows).
//! - [`Rooms::status_updates`]: the bot's presence in each joined room, with the default
//!   reading as status (§7.7), sent when the one-to-one presence is (throttled by the caller).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use tokio_xmpp::jid::{BareJid, FullJid, Jid, ResourcePart};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::{
    delay::Delay,
    iq::Iq,
    message::{Message, MessageType},
    muc::muc::{History, Muc},
    ns,
    presence::{Presence, Type as PresenceType},
    stanza_error::{DefinedCondition, StanzaError},
};
use tokio_xmpp::Stanza;

use crate::backoff::Backoff;
use crate::bridge::access::SlidingLimit;

/// Nick-conflict retries before the bot gives up on a nick (and waits to try the first again).
pub const MAX_NICK_ATTEMPTS: u32 = 5;

/// Most occupants whose real JIDs the bot remembers per room; further ones count as hidden.
pub const MAX_OCCUPANTS: usize = 10_000;

/// Answers to one occupant per [`ANSWER_WINDOW`] in one room, at most (the loop guard against
/// bots that do not mark their answers).
pub const ANSWERS_PER_OCCUPANT: usize = 10;

/// The window of [`ANSWERS_PER_OCCUPANT`].
pub const ANSWER_WINDOW: Duration = Duration::from_secs(60);

/// Invitations accepted per [`INVITE_WINDOW`], at most.
pub const INVITES_PER_WINDOW: usize = 5;

/// The window of [`INVITES_PER_WINDOW`].
pub const INVITE_WINDOW: Duration = Duration::from_secs(600);

/// Most rooms joined through invitations (and remembered in the state database).
pub const MAX_INVITED_ROOMS: usize = 20;

/// Self-pings in a row without a decision (a timeout, a remote server unreachable) before the
/// bot joins again anyway.
pub const UNDECIDED_PINGS: u32 = 3;

/// The namespace of the marker on the bot's room answers (see the loop guard above).
pub const NS_ANSWER: &str = "urn:mqtt2xmpp:room:0";

const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";
const NS_MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
const NS_CONFERENCE: &str = "jabber:x:conference";
const NS_DATA: &str = "jabber:x:data";

/// The timings of staying in rooms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomTimings {
    /// Self-ping a joined room after this long without a stanza from it.
    pub ping_every: Duration,
    /// How long a self-ping or a join may go unanswered.
    pub answer_within: Duration,
    /// The first delay before joining again after a removal.
    pub rejoin_first: Duration,
    /// The longest delay before joining again after a removal.
    pub rejoin_max: Duration,
    /// How long to wait after a ban, a refusal or a destroyed room.
    pub refused_retry: Duration,
}

impl Default for RoomTimings {
    fn default() -> Self {
        Self::with_ping(Duration::from_secs(60))
    }
}

impl RoomTimings {
    /// The defaults, with self-pings after `ping_every` of silence.
    pub fn with_ping(ping_every: Duration) -> Self {
        Self {
            ping_every,
            answer_within: ping_every.clamp(Duration::from_secs(1), Duration::from_secs(30)),
            rejoin_first: Duration::from_secs(1),
            rejoin_max: Duration::from_secs(300),
            refused_retry: Duration::from_secs(600),
        }
    }
}

/// One room to be in: the room's bare JID, the nick the bot asks for, and its password if any.
#[derive(Clone, PartialEq, Eq)]
pub struct RoomJoin {
    /// `room@service`.
    pub room: BareJid,
    /// The nick the bot asks for first.
    pub nick: String,
    /// The room's password (§7.2.6), from an invitation.
    pub password: Option<String>,
}

impl fmt::Debug for RoomJoin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The password stays out of logs.
        write!(f, "RoomJoin({self})")
    }
}

/// Why a `--room` value is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomJoinError {
    /// Not a JID at all.
    #[error("not a room address ({0}); write ROOM@SERVICE or ROOM@SERVICE/NICK, e.g. lab@conference.example.org/bot")]
    Jid(String),
    /// A domain without a room name.
    #[error("a room address needs a room name before the '@', e.g. lab@conference.example.org")]
    NoRoom,
}

impl RoomJoin {
    /// `ROOM@SERVICE[/NICK]`; without a nick, `default_nick` (the bot's local part).
    pub fn parse(value: &str, default_nick: &str) -> Result<Self, RoomJoinError> {
        let jid = Jid::from_str(value.trim()).map_err(|e| RoomJoinError::Jid(e.to_string()))?;
        if jid.node().is_none() {
            return Err(RoomJoinError::NoRoom);
        }
        let nick = jid
            .resource()
            .map_or_else(|| default_nick.to_string(), |r| r.to_string());
        Ok(Self {
            room: jid.to_bare(),
            nick,
            password: None,
        })
    }
}

impl fmt::Display for RoomJoin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.room, self.nick)
    }
}

/// Where the bot stands in one room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomState {
    /// Join presence sent at `since`, no self-presence yet.
    Joining {
        /// When the join presence went out.
        since: Instant,
    },
    /// In the room.
    Joined,
    /// Out of the room; joining again at `until`.
    Waiting {
        /// When to send the join presence.
        until: Instant,
    },
    /// The room cannot be joined with this nick at all (not a valid resource).
    GaveUp,
}

/// One room the bot is configured for, or was invited to.
#[derive(Debug, Clone)]
pub struct Room {
    /// Where and under which nick.
    pub join: RoomJoin,
    /// The nick currently asked for or held.
    pub nick: String,
    /// Whether the bot joined through an invitation (and remembers it in the state database).
    pub invited: bool,
    /// Nick-conflict retries so far.
    attempts: u32,
    /// Where the bot stands.
    pub state: RoomState,
    /// Occupants by nick, with their real bare JID when the room shows it.
    occupants: HashMap<String, Option<BareJid>>,
    /// Delays before joining again.
    backoff: Backoff,
    /// When to self-ping next (while joined).
    next_ping: Option<Instant>,
    /// The self-ping waiting for its answer: its id and its deadline.
    ping: Option<(String, Instant)>,
    /// Self-pings in a row without a decision.
    undecided: u32,
    /// When each occupant was last answered (the loop guard).
    answered: SlidingLimit,
}

impl Room {
    fn new(join: RoomJoin, invited: bool, timings: &RoomTimings) -> Self {
        Self {
            nick: join.nick.clone(),
            join,
            invited,
            attempts: 0,
            state: RoomState::GaveUp,
            occupants: HashMap::new(),
            backoff: Backoff::new(timings.rejoin_first, timings.rejoin_max),
            next_ping: None,
            ping: None,
            undecided: 0,
            answered: SlidingLimit::new(ANSWERS_PER_OCCUPANT, ANSWER_WINDOW, MAX_OCCUPANTS),
        }
    }

    /// The real bare JID of the occupant `nick`, when the room shows it.
    pub fn real_jid(&self, nick: &str) -> Option<&BareJid> {
        self.occupants.get(nick).and_then(Option::as_ref)
    }

    /// Whether the bot is in the room now.
    pub fn is_joined(&self) -> bool {
        self.state == RoomState::Joined
    }

    fn occupant_jid(&self) -> Option<FullJid> {
        let resource = ResourcePart::new(&self.nick).ok()?;
        Some(FullJid::from_parts(
            self.join.room.node(),
            self.join.room.domain(),
            &resource,
        ))
    }

    fn join_presence(&self, status: &str) -> Option<Stanza> {
        let to = self.occupant_jid()?;
        // §7.2.14: no history, so nothing old is mistaken for a question.
        let mut muc = Muc::new().with_history(History::new().with_maxstanzas(0));
        if let Some(password) = &self.join.password {
            muc = muc.with_password(password.clone());
        }
        let mut presence = Presence::available()
            .with_to(to)
            .with_payloads(vec![muc.into()]);
        presence
            .statuses
            .insert(Default::default(), status.to_string());
        Some(presence.into())
    }

    /// Starts joining (from the first nick when `fresh`) at `now`: the join presence, or none
    /// when the nick cannot be a resource.
    fn start_join(&mut self, status: &str, now: Instant, fresh: bool) -> Option<Stanza> {
        if fresh {
            self.nick = self.join.nick.clone();
            self.attempts = 0;
        }
        self.occupants.clear();
        self.ping = None;
        self.next_ping = None;
        self.undecided = 0;
        match self.join_presence(status) {
            Some(presence) => {
                self.state = RoomState::Joining { since: now };
                tracing::info!(room = %self.join.room, nick = %self.nick, "joining room");
                Some(presence)
            }
            None => {
                self.state = RoomState::GaveUp;
                tracing::error!(
                    room = %self.join,
                    "cannot join room: the nick is not a valid resource; not trying again"
                );
                None
            }
        }
    }

    /// Out of the room: join again after the backoff's next delay.
    fn rejoin_later(&mut self, now: Instant) -> Duration {
        let delay = self.backoff.next_delay();
        self.wait(now, delay);
        delay
    }

    fn wait(&mut self, now: Instant, delay: Duration) {
        self.state = RoomState::Waiting { until: now + delay };
        self.occupants.clear();
        self.ping = None;
        self.next_ping = None;
    }

    /// Whether occupant `nick` may get another answer at `now` (and counts it if so).
    fn may_answer(&mut self, nick: &str, now: Instant) -> bool {
        self.answered.admit(nick, now)
    }
}

/// What became of an invitation, per [`Rooms::invited`].
#[derive(Debug)]
pub enum Invited {
    /// A new room: join it (the presence) and remember it.
    Join(Stanza),
    /// A known room the bot is out of: joining again now.
    Rejoin(Stanza),
    /// Already in it, or nothing to do.
    Known,
    /// Too many invitations lately, or too many invited rooms: ignored.
    Refused(&'static str),
}

/// The rooms the bot is in, or wants to be in, and what it knows of each.
#[derive(Debug, Clone)]
pub struct Rooms {
    rooms: Vec<Room>,
    timings: RoomTimings,
    /// The bot's own account: an occupant with this real JID is the bot itself.
    account: Option<BareJid>,
    /// Numbers the self-pings' ids.
    sequence: u64,
    /// When invitations were accepted lately.
    invitations: VecDeque<Instant>,
}

impl Default for Rooms {
    fn default() -> Self {
        Self::new([], RoomTimings::default())
    }
}

impl Rooms {
    /// The configured rooms, none joined yet.
    pub fn new(joins: impl IntoIterator<Item = RoomJoin>, timings: RoomTimings) -> Self {
        Self {
            rooms: joins
                .into_iter()
                .map(|join| Room::new(join, false, &timings))
                .collect(),
            timings,
            account: None,
            sequence: 0,
            invitations: VecDeque::new(),
        }
    }

    /// The bot's account, whose messages (from another session of it) are never answered.
    pub fn with_account(mut self, account: BareJid) -> Self {
        self.account = Some(account);
        self
    }

    /// Whether the room service `service` is one the bot trusts to vouch for an inviter (a
    /// mediated invitation, §7.8.2, carries the inviter's JID as the service states it): the
    /// service of one of its rooms, or a service under its own domain (`conference.example.org`
    /// for `bot@example.org`). A service elsewhere could claim any inviter.
    pub fn trusts_service(&self, service: &str) -> bool {
        let own = self
            .account
            .as_ref()
            .is_some_and(|account| service.ends_with(&format!(".{}", account.domain())));
        own || self
            .rooms
            .iter()
            .any(|room| room.join.room.domain().as_str() == service)
    }

    /// A room remembered from an invitation (from the state database), unless configured.
    pub fn add_remembered(&mut self, join: RoomJoin) {
        if self.get(&join.room).is_none() {
            self.rooms.push(Room::new(join, true, &self.timings));
        }
    }

    /// Whether no room is configured.
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    /// The room with this bare JID, if configured.
    pub fn get(&self, room: &BareJid) -> Option<&Room> {
        self.rooms.iter().find(|r| r.join.room == *room)
    }

    pub(crate) fn get_mut(&mut self, room: &BareJid) -> Option<&mut Room> {
        self.rooms.iter_mut().find(|r| r.join.room == *room)
    }

    /// A fresh connection: every room is joined again from the first nick, showing `status`.
    pub fn join_all(&mut self, status: &str, now: Instant) -> Vec<Stanza> {
        let mut out = Vec::new();
        for room in &mut self.rooms {
            out.extend(room.start_join(status, now, true));
        }
        out
    }

    /// When [`Rooms::tick`] has something to do next, if ever.
    pub fn next_due(&self) -> Option<Instant> {
        self.rooms
            .iter()
            .filter_map(|room| match room.state {
                RoomState::Joining { since } => Some(since + self.timings.answer_within),
                RoomState::Waiting { until } => Some(until),
                RoomState::Joined => match &room.ping {
                    Some((_, deadline)) => Some(*deadline),
                    None => room.next_ping,
                },
                _ => None,
            })
            .min()
    }

    /// Does what is due at `now`: joins again where the wait is over, gives up on joins and
    /// self-pings that got no answer, and self-pings rooms that have been quiet.
    pub fn tick(&mut self, now: Instant, status: &str) -> Vec<Stanza> {
        let mut out = Vec::new();
        let timings = self.timings;
        for room in &mut self.rooms {
            match room.state {
                RoomState::Waiting { until } if until <= now => {
                    out.extend(room.start_join(status, now, false));
                }
                RoomState::Joining { since } if since + timings.answer_within <= now => {
                    let delay = room.rejoin_later(now);
                    tracing::warn!(
                        room = %room.join.room,
                        ?delay,
                        "no answer from the room to joining it; trying again later"
                    );
                }
                RoomState::Joined => {
                    if let Some((_, deadline)) = &room.ping {
                        if *deadline <= now {
                            room.ping = None;
                            out.extend(undecided(room, now, status, timings, "no answer"));
                        }
                    } else if room.next_ping.is_some_and(|at| at <= now) {
                        self.sequence += 1;
                        let id = format!("selfping-{}", self.sequence);
                        if let Some(to) = room.occupant_jid() {
                            room.ping = Some((id.clone(), now + timings.answer_within));
                            room.next_ping = None;
                            out.push(self_ping(to, id));
                        }
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// Something came from `room` at `now`: it is not quiet, so no self-ping is needed yet.
    pub fn heard_from(&mut self, room: &BareJid, now: Instant) {
        let every = self.timings.ping_every;
        if let Some(room) = self.get_mut(room) {
            if room.is_joined() && room.ping.is_none() {
                room.next_ping = Some(now + every);
            }
        }
    }

    /// An IQ result or error that answers a self-ping (XEP-0410 §3): `None` when it answers
    /// none of them (the caller handles it), otherwise the stanzas to send.
    pub fn iq(&mut self, iq: &Iq, now: Instant, status: &str) -> Option<Vec<Stanza>> {
        let (id, error) = match iq {
            Iq::Result { id, .. } => (id, None),
            Iq::Error { id, error, .. } => (id, Some(error)),
            _ => return None,
        };
        if id.starts_with("owner-") {
            match error.map(|e| &e.defined_condition) {
                None => {}
                // A service without room configuration: its rooms are open already.
                Some(
                    condition @ (DefinedCondition::ServiceUnavailable
                    | DefinedCondition::FeatureNotImplemented),
                ) => {
                    tracing::debug!(
                        id,
                        ?condition,
                        "the room service does not take configuration forms"
                    );
                }
                Some(condition) => {
                    tracing::warn!(id, ?condition, "the room refused its instant configuration");
                }
            }
            return Some(Vec::new());
        }
        let timings = self.timings;
        let room = self
            .rooms
            .iter_mut()
            .find(|r| r.ping.as_ref().is_some_and(|(ping, _)| ping == id))?;
        room.ping = None;
        let condition = error.map(|e| &e.defined_condition);
        let verdict = match condition {
            None => PingVerdict::Joined,
            // XEP-0410 §3: the ping reached a client of ours through the room (it does not
            // answer pings), or the nick was just changed by another client: still joined.
            Some(
                DefinedCondition::ServiceUnavailable
                | DefinedCondition::FeatureNotImplemented
                | DefinedCondition::ItemNotFound,
            ) => PingVerdict::Joined,
            // The room's server could not be reached: no decision.
            Some(
                DefinedCondition::RemoteServerNotFound | DefinedCondition::RemoteServerTimeout,
            ) => PingVerdict::Undecided,
            // Any other error (not-acceptable above all): not an occupant any more.
            Some(_) => PingVerdict::NotJoined,
        };
        Some(match verdict {
            PingVerdict::Joined => {
                tracing::debug!(room = %room.join.room, "self-ping: still in the room");
                room.undecided = 0;
                // Staying in the room is proven: a later removal starts the backoff afresh.
                room.backoff.reset();
                room.next_ping = Some(now + timings.ping_every);
                Vec::new()
            }
            PingVerdict::Undecided => undecided(room, now, status, timings, "remote server"),
            PingVerdict::NotJoined => {
                let delay = room.rejoin_later(now);
                tracing::warn!(
                    room = %room.join.room,
                    ?condition,
                    ?delay,
                    "self-ping: the bot is not in the room any more; joining again"
                );
                Vec::new()
            }
        })
    }

    /// Handles a presence from a configured room: `None` when it is from no such room (the
    /// caller handles it), otherwise the stanzas to send.
    pub fn presence(
        &mut self,
        presence: &Presence,
        status: &str,
        now: Instant,
    ) -> Option<Vec<Stanza>> {
        let from = presence.from.as_ref()?;
        let timings = self.timings;
        let room = self.get_mut(&from.to_bare())?;
        let nick = from.resource().map(|r| r.to_string());
        let user = MucUserView::of(&presence.payloads);
        let mut out = Vec::new();
        match presence.type_ {
            PresenceType::Error => {
                let error = presence
                    .payloads
                    .iter()
                    .find_map(|p| StanzaError::try_from(p.clone()).ok());
                let condition = error.as_ref().map(|e| e.defined_condition.clone());
                if room.is_joined() {
                    // §7.2.9 also applies to presence updates; the room says more with a
                    // self-ping, which comes soon.
                    tracing::warn!(room = %room.join.room, ?condition, "error from a joined room");
                    room.next_ping = Some(now);
                    return Some(out);
                }
                if !matches!(room.state, RoomState::Joining { .. }) {
                    return Some(out);
                }
                let text = error
                    .as_ref()
                    .and_then(|e| e.texts.values().next().cloned())
                    .unwrap_or_default();
                match condition {
                    // §7.2.9: the nick is taken; try another.
                    Some(DefinedCondition::Conflict) if room.attempts + 1 < MAX_NICK_ATTEMPTS => {
                        room.attempts += 1;
                        room.nick = format!("{}-{}", room.join.nick, room.attempts + 1);
                        tracing::warn!(
                            room = %room.join.room,
                            nick = %room.nick,
                            "room nick in use; joining with another"
                        );
                        out.extend(room.start_join(status, now, false));
                    }
                    // §7.2.5 password, §7.2.6 members-only, §7.2.7 banned, §7.2.8 nick
                    // locked down, creation not allowed, a room that does not exist (locked):
                    // only an owner can change that, so the bot asks again rarely.
                    Some(
                        DefinedCondition::Forbidden
                        | DefinedCondition::RegistrationRequired
                        | DefinedCondition::NotAuthorized
                        | DefinedCondition::NotAllowed
                        | DefinedCondition::NotAcceptable
                        | DefinedCondition::ItemNotFound
                        | DefinedCondition::Conflict,
                    ) => {
                        room.wait(now, timings.refused_retry);
                        tracing::error!(
                            room = %room.join.room,
                            nick = %room.nick,
                            ?condition,
                            text,
                            retry = ?timings.refused_retry,
                            "could not join room: refused; trying again later"
                        );
                    }
                    _ => {
                        let delay = room.rejoin_later(now);
                        tracing::error!(
                            room = %room.join.room,
                            nick = %room.nick,
                            ?condition,
                            text,
                            ?delay,
                            "could not join room; trying again later"
                        );
                    }
                }
            }
            PresenceType::Unavailable => {
                let Some(nick) = nick else { return Some(out) };
                if !(user.has(110) || nick == room.nick) {
                    room.occupants.remove(&nick);
                    room.answered.forget(&nick);
                    return Some(out);
                }
                // §7.6 / §9.x: the bot's own nick changed by the service or an admin.
                if user.has(303) {
                    if let Some(new) = user.item_nick.clone() {
                        tracing::info!(room = %room.join.room, nick = %new, "the room changed the bot's nick");
                        room.nick = new;
                        return Some(out);
                    }
                }
                if !matches!(room.state, RoomState::Joined | RoomState::Joining { .. }) {
                    return Some(out);
                }
                let reason = user.reason.clone().unwrap_or_default();
                if let Some(destroyed) = &user.destroy {
                    room.wait(now, timings.refused_retry);
                    tracing::error!(
                        room = %room.join.room,
                        reason = destroyed.reason.as_deref().unwrap_or_default(),
                        alternate = destroyed.jid.as_deref().unwrap_or_default(),
                        retry = ?timings.refused_retry,
                        "the room was destroyed; trying to join again later"
                    );
                } else if user.has(301) {
                    room.wait(now, timings.refused_retry);
                    tracing::error!(
                        room = %room.join.room,
                        reason,
                        retry = ?timings.refused_retry,
                        "banned from the room; trying to join again later"
                    );
                } else if user.has(321) || user.has(322) {
                    room.wait(now, timings.refused_retry);
                    tracing::error!(
                        room = %room.join.room,
                        reason,
                        retry = ?timings.refused_retry,
                        "removed from the room as a non-member; trying to join again later"
                    );
                } else if user.has(307) {
                    let delay = room.rejoin_later(now);
                    tracing::warn!(
                        room = %room.join.room,
                        reason,
                        ?delay,
                        "kicked from the room; joining again"
                    );
                } else {
                    let delay = room.rejoin_later(now);
                    let shutdown = user.has(332);
                    tracing::warn!(
                        room = %room.join.room,
                        shutdown,
                        ?delay,
                        "removed from the room; joining again"
                    );
                }
            }
            PresenceType::None => {
                let Some(nick) = nick else { return Some(out) };
                if user.has(110) {
                    if !room.is_joined() {
                        room.state = RoomState::Joined;
                        room.next_ping = Some(now + timings.ping_every);
                        // §7.2.3/210: the room may have changed the nick.
                        room.nick = nick;
                        tracing::info!(
                            room = %room.join.room,
                            nick = %room.nick,
                            "joined room: answering when addressed"
                        );
                        // §10.1.2: the bot created the room; accept the default configuration
                        // (an instant room), so a service that locks new rooms opens it.
                        if user.has(201) {
                            self.sequence += 1;
                            out.push(instant_room(&from.to_bare(), self.sequence));
                        }
                    }
                } else if room.occupants.len() < MAX_OCCUPANTS || room.occupants.contains_key(&nick)
                {
                    room.occupants.insert(nick, user.item_jid);
                }
            }
            _ => {}
        }
        Some(out)
    }

    /// The bot's presence in every joined room with `status` (§7.7: a presence update, without
    /// the MUC element).
    pub fn status_updates(&self, status: &str) -> Vec<Stanza> {
        self.rooms
            .iter()
            .filter(|room| room.is_joined())
            .filter_map(|room| {
                let mut presence = Presence::available().with_to(room.occupant_jid()?);
                presence
                    .statuses
                    .insert(Default::default(), status.to_string());
                Some(presence.into())
            })
            .collect()
    }

    /// An invitation the inviter was allowed to send, at `now`: join the room unless the bot
    /// is in it already, within the bounds on invitations.
    pub fn invited(&mut self, join: RoomJoin, status: &str, now: Instant) -> Invited {
        if let Some(room) = self.get_mut(&join.room) {
            if matches!(room.state, RoomState::Waiting { .. }) {
                if join.password.is_some() {
                    room.join.password = join.password;
                }
                return match room.start_join(status, now, true) {
                    Some(presence) => Invited::Rejoin(presence),
                    None => Invited::Known,
                };
            }
            return Invited::Known;
        }
        while self
            .invitations
            .front()
            .is_some_and(|t| now.duration_since(*t) >= INVITE_WINDOW)
        {
            self.invitations.pop_front();
        }
        if self.invitations.len() >= INVITES_PER_WINDOW {
            return Invited::Refused("too many invitations lately");
        }
        if self.rooms.iter().filter(|r| r.invited).count() >= MAX_INVITED_ROOMS {
            return Invited::Refused("in too many rooms by invitation already");
        }
        self.invitations.push_back(now);
        let mut room = Room::new(join, true, &self.timings);
        let presence = room.start_join(status, now, true);
        self.rooms.push(room);
        match presence {
            Some(presence) => Invited::Join(presence),
            None => Invited::Refused("the nick is not a valid resource"),
        }
    }

    /// Whether `message` (from a configured room) should be answered, with the loop guard's
    /// rate per occupant counted at `now`.
    pub fn decide(&mut self, message: &Message, now: Instant) -> Decision {
        let Some(from) = message.from.as_ref() else {
            return Decision::Ignore("no sender");
        };
        let account = self.account.clone();
        let Some(room) = self.get_mut(&from.to_bare()) else {
            return Decision::Ignore("not a configured room");
        };
        let decision = decide(message, &room.nick);
        let (Decision::Public { nick, .. } | Decision::Private { nick, .. }) = &decision else {
            return decision;
        };
        if account.is_some() && room.real_jid(nick) == account.as_ref() {
            return Decision::Ignore("another session of the bot's own account");
        }
        if !room.may_answer(nick, now) {
            tracing::info!(
                room = %room.join.room,
                nick,
                "not answering: {ANSWERS_PER_OCCUPANT} answers to this occupant in the last minute (loop guard)"
            );
            return Decision::Ignore("too many answers to this occupant (loop guard)");
        }
        decision
    }
}

/// What a self-ping answer says (XEP-0410 §3).
enum PingVerdict {
    Joined,
    NotJoined,
    Undecided,
}

/// A self-ping without a decision: ping again soon, and after [`UNDECIDED_PINGS`] join again.
fn undecided(
    room: &mut Room,
    now: Instant,
    status: &str,
    timings: RoomTimings,
    why: &str,
) -> Vec<Stanza> {
    room.undecided += 1;
    if room.undecided >= UNDECIDED_PINGS {
        tracing::warn!(room = %room.join.room, why, "self-ping: no decision {UNDECIDED_PINGS} times; joining again");
        // Joining while joined is harmless (§7.2: the room answers with the presence again).
        return room.start_join(status, now, false).into_iter().collect();
    }
    room.next_ping = Some(now + timings.answer_within);
    Vec::new()
}

/// A XEP-0410 self-ping to the bot's own occupant JID.
fn self_ping(to: FullJid, id: String) -> Stanza {
    Iq::from_get(id, tokio_xmpp::parsers::ping::Ping)
        .with_to(Jid::from(to))
        .into()
}

/// §10.1.2: accept the default configuration of a room the bot just created ("instant room").
fn instant_room(room: &BareJid, sequence: u64) -> Stanza {
    let form = Element::builder("x", NS_DATA)
        .attr(
            tokio_xmpp::minidom::rxml::xml_ncname!("type").into(),
            "submit",
        )
        .build();
    let query = Element::builder("query", NS_MUC_OWNER).append(form).build();
    Iq::Set {
        from: None,
        to: Some(Jid::from(room.clone())),
        id: format!("owner-{sequence}"),
        payload: query,
    }
    .into()
}

/// What the bot needs from a `muc#user` element, read leniently (xmpp-parsers' `MucUser`
/// refuses the whole element for one status code or child it does not know).
#[derive(Debug, Default)]
struct MucUserView {
    codes: Vec<u16>,
    item_jid: Option<BareJid>,
    item_nick: Option<String>,
    reason: Option<String>,
    destroy: Option<Destroyed>,
}

#[derive(Debug)]
struct Destroyed {
    jid: Option<String>,
    reason: Option<String>,
}

impl MucUserView {
    fn of(payloads: &[Element]) -> Self {
        let Some(x) = payloads.iter().find(|p| p.is("x", NS_MUC_USER)) else {
            return Self::default();
        };
        let mut view = Self::default();
        for child in x.children() {
            if child.is("status", NS_MUC_USER) {
                if let Some(code) = child.attr("code").and_then(|c| c.parse().ok()) {
                    view.codes.push(code);
                }
            } else if child.is("item", NS_MUC_USER) {
                view.item_jid = child
                    .attr("jid")
                    .and_then(|j| Jid::from_str(j).ok())
                    .map(|j| j.to_bare());
                view.item_nick = child.attr("nick").map(str::to_string);
                view.reason = child
                    .get_child("reason", NS_MUC_USER)
                    .map(|r| r.text())
                    .filter(|r| !r.is_empty());
            } else if child.is("destroy", NS_MUC_USER) {
                view.destroy = Some(Destroyed {
                    jid: child.attr("jid").map(str::to_string),
                    reason: child.get_child("reason", NS_MUC_USER).map(|r| r.text()),
                });
            }
        }
        view
    }

    fn has(&self, code: u16) -> bool {
        self.codes.contains(&code)
    }
}

/// An invitation to a room (XEP-0045 §7.8.2 mediated, XEP-0249 direct).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invitation {
    /// The room.
    pub room: BareJid,
    /// Who invites: the real JID in a mediated invitation, the sender of a direct one (an
    /// occupant's room JID when it came through a room: the caller looks up the real JID).
    pub inviter: Jid,
    /// The room's password, if given.
    pub password: Option<String>,
    /// Mediated (the room service vouches for the inviter) rather than direct.
    pub mediated: bool,
}

/// The invitation in `message`, if it is one. Mediated: from the room's bare JID, with
/// `<x xmlns='muc#user'><invite from='REAL JID'/>` (§7.8.2). Direct: `<x
/// xmlns='jabber:x:conference' jid='ROOM'/>` from the inviter (XEP-0249 §2).
pub fn invitation(message: &Message) -> Option<Invitation> {
    if message.type_ == MessageType::Error {
        return None;
    }
    let from = message.from.as_ref()?;
    for payload in &message.payloads {
        if payload.is("x", NS_MUC_USER) && from.resource().is_none() {
            let Some(invite) = payload.get_child("invite", NS_MUC_USER) else {
                continue;
            };
            let inviter = Jid::from_str(invite.attr("from")?).ok()?;
            from.node()?;
            let password = payload.get_child("password", NS_MUC_USER).map(|p| p.text());
            return Some(Invitation {
                room: from.to_bare(),
                inviter,
                password,
                mediated: true,
            });
        }
        if payload.is("x", NS_CONFERENCE) {
            let room = BareJid::from_str(payload.attr("jid")?).ok()?;
            room.node()?;
            return Some(Invitation {
                room,
                inviter: from.clone(),
                password: payload.attr("password").map(str::to_string),
                mediated: false,
            });
        }
    }
    None
}

/// What to do with a message from a room, per [`decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Stay silent, for this reason (logged at debug level).
    Ignore(&'static str),
    /// Answer `text` (the question without the address) from occupant `nick` in the room.
    Public {
        /// The asker's nick.
        nick: String,
        /// The question.
        text: String,
    },
    /// Answer `text` from occupant `nick` privately, through the room.
    Private {
        /// The asker's nick.
        nick: String,
        /// The question.
        text: String,
    },
}

/// Whether `message`, from a room where the bot's nick is `own_nick`, is for the bot.
pub fn decide(message: &Message, own_nick: &str) -> Decision {
    let Some(nick) = message.from.as_ref().and_then(|f| f.resource()) else {
        return Decision::Ignore("from the room itself");
    };
    let nick = nick.to_string();
    if nick == own_nick {
        return Decision::Ignore("the bot's own message");
    }
    // XEP-0203: a delayed message is history (§7.2.15), not a question asked now.
    if message
        .payloads
        .iter()
        .any(|p| p.is("delay", ns::DELAY) || Delay::try_from(p.clone()).is_ok())
    {
        return Decision::Ignore("delayed (history)");
    }
    if message.payloads.iter().any(|p| p.is("answer", NS_ANSWER)) {
        return Decision::Ignore("another bot's answer");
    }
    let Some(body) = message
        .get_best_body(Vec::new())
        .map(|(_, b)| b.trim().to_string())
        .filter(|b| !b.is_empty())
    else {
        return Decision::Ignore("no body");
    };
    match message.type_ {
        MessageType::Groupchat => match addressed(&body, own_nick) {
            Some(text) => Decision::Public { nick, text },
            None => Decision::Ignore("not addressed to the bot"),
        },
        MessageType::Chat => Decision::Private { nick, text: body },
        _ => Decision::Ignore("neither groupchat nor chat"),
    }
}

/// The question in `body` when it addresses `nick`: `nick: …` or `nick, …` at the start (case
/// does not matter), or `@nick` anywhere, which is taken out.
pub fn addressed(body: &str, nick: &str) -> Option<String> {
    let body = body.trim();
    if nick.is_empty() {
        return None;
    }
    let wanted = nick.to_lowercase();
    let count = nick.chars().count();
    let prefix_len: usize = body.chars().take(count).map(char::len_utf8).sum();
    let (prefix, rest) = body.split_at(prefix_len);
    if prefix.to_lowercase() == wanted {
        if let Some(rest) = rest.strip_prefix([':', ',']) {
            return Some(rest.trim().to_string());
        }
    }
    let mention = format!("@{wanted}");
    let mut found = false;
    let words: Vec<&str> = body
        .split_whitespace()
        .filter(|word| {
            let bare = word.trim_end_matches([':', ',', '.', '!', '?', ';']);
            let hit = !found && bare.to_lowercase() == mention;
            found |= hit;
            !hit
        })
        .collect();
    found.then(|| words.join(" "))
}

/// The marker on every answer the bot posts in a room (see the loop guard).
fn answer_marker() -> Element {
    Element::builder("answer", NS_ANSWER).build()
}

/// A groupchat message to everyone in `room` (an alert, an announcement).
pub fn room_message(room: &BareJid, text: &str) -> Stanza {
    let mut message = Message::new_with_type(MessageType::Groupchat, Some(Jid::from(room.clone())))
        .with_body(Default::default(), text.to_string());
    message.payloads.push(answer_marker());
    message.into()
}

/// The groupchat answer to `nick` in `room`: prefixed with the asker's nick, so everyone sees
/// whom it answers.
pub fn public_answer(room: &BareJid, nick: &str, text: &str) -> Stanza {
    room_message(room, &format!("{nick}: {text}"))
}

/// The private answer to occupant `nick` through `room` (§7.5).
pub fn private_answer(room: &BareJid, nick: &str, text: &str) -> Option<Stanza> {
    let resource = ResourcePart::new(nick).ok()?;
    let to = FullJid::from_parts(room.node(), room.domain(), &resource);
    let mut message = Message::new_with_type(MessageType::Chat, Some(Jid::from(to)))
        .with_body(Default::default(), text.to_string());
    message.payloads.push(answer_marker());
    Some(message.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(xml: &str) -> Message {
        Message::try_from(xml.parse::<Element>().unwrap()).unwrap()
    }

    fn presence(xml: &str) -> Presence {
        Presence::try_from(xml.parse::<Element>().unwrap()).unwrap()
    }

    fn iq(xml: &str) -> Iq {
        Iq::try_from(xml.parse::<Element>().unwrap()).unwrap()
    }

    fn xml(stanza: &Stanza) -> String {
        String::from(&Element::from(stanza))
    }

    const SECOND: Duration = Duration::from_secs(1);

    fn lab() -> Rooms {
        Rooms::new(
            [RoomJoin::parse("lab@conference.localhost", "bot").unwrap()],
            RoomTimings::default(),
        )
        .with_account(BareJid::from_str("bot@localhost").unwrap())
    }

    fn room_jid() -> BareJid {
        BareJid::from_str("lab@conference.localhost").unwrap()
    }

    fn state(rooms: &Rooms) -> RoomState {
        rooms.get(&room_jid()).unwrap().state
    }

    const SELF: &str = "<presence xmlns='jabber:client' from='lab@conference.localhost/bot'>\
        <x xmlns='http://jabber.org/protocol/muc#user'>\
        <item affiliation='none' role='participant'/><status code='110'/></x></presence>";

    /// A room the bot has joined at `t0`.
    fn joined(t0: Instant) -> Rooms {
        let mut rooms = lab();
        rooms.join_all("", t0);
        assert!(rooms.presence(&presence(SELF), "", t0).unwrap().is_empty());
        assert_eq!(state(&rooms), RoomState::Joined);
        rooms
    }

    fn removed(codes: &[u16], extra: &str) -> Presence {
        let codes: String = codes
            .iter()
            .map(|c| format!("<status code='{c}'/>"))
            .collect();
        presence(&format!(
            "<presence xmlns='jabber:client' type='unavailable' from='lab@conference.localhost/bot'>\
             <x xmlns='http://jabber.org/protocol/muc#user'>\
             <item affiliation='none' role='none'><reason>spam</reason></item>{codes}{extra}</x></presence>"
        ))
    }

    fn waiting_until(rooms: &Rooms) -> Instant {
        match state(rooms) {
            RoomState::Waiting { until } => until,
            other => panic!("not waiting: {other:?}"),
        }
    }

    #[test]
    fn room_values_take_a_nick_or_the_default() {
        let join = RoomJoin::parse("lab@conference.localhost/sensei", "bot").unwrap();
        assert_eq!(join.room.as_str(), "lab@conference.localhost");
        assert_eq!(join.nick, "sensei");
        let join = RoomJoin::parse(" lab@conference.localhost ", "bot").unwrap();
        assert_eq!(join.nick, "bot");
        assert_eq!(
            RoomJoin::parse("conference.localhost", "bot"),
            Err(RoomJoinError::NoRoom)
        );
        assert!(matches!(
            RoomJoin::parse("a@@b", "bot"),
            Err(RoomJoinError::Jid(_))
        ));
        let secret = RoomJoin {
            password: Some("hunter2".into()),
            ..join
        };
        assert!(!format!("{secret:?}").contains("hunter2"));
    }

    #[test]
    fn addressing_by_prefix_or_mention() {
        assert_eq!(
            addressed("bot: temperature?", "bot").as_deref(),
            Some("temperature?")
        );
        assert_eq!(addressed("Bot, list", "bot").as_deref(), Some("list"));
        assert_eq!(
            addressed("  BOT:get temp ", "bot").as_deref(),
            Some("get temp")
        );
        assert_eq!(addressed("bot:", "bot").as_deref(), Some(""));
        assert_eq!(
            addressed("hey @bot temperature?", "bot").as_deref(),
            Some("hey temperature?")
        );
        assert_eq!(
            addressed("what is it @Bot?", "bot").as_deref(),
            Some("what is it")
        );
        assert_eq!(addressed("ñandú: hola", "Ñandú").as_deref(), Some("hola"));
        for silent in [
            "temperature?",
            "bot temperature",
            "robot: hi",
            "bots: hi",
            "email@bot.org",
            "@botty hi",
            "b",
            "",
        ] {
            assert_eq!(addressed(silent, "bot"), None, "{silent}");
        }
    }

    #[test]
    fn answers_only_what_is_addressed_to_it_now() {
        let public = decide(
            &message(
                "<message xmlns='jabber:client' type='groupchat' from='lab@conference.localhost/alice'>\
                 <body>bot: temperature?</body></message>",
            ),
            "bot",
        );
        assert_eq!(
            public,
            Decision::Public {
                nick: "alice".into(),
                text: "temperature?".into()
            }
        );
        let private = decide(
            &message(
                "<message xmlns='jabber:client' type='chat' from='lab@conference.localhost/alice'>\
                 <body>temperature?</body></message>",
            ),
            "bot",
        );
        assert_eq!(
            private,
            Decision::Private {
                nick: "alice".into(),
                text: "temperature?".into()
            }
        );
        for (silent, why) in [
            ("<message xmlns='jabber:client' type='groupchat' from='lab@conference.localhost/alice'>\
              <body>temperature?</body></message>", "not addressed to the bot"),
            ("<message xmlns='jabber:client' type='groupchat' from='lab@conference.localhost/alice'>\
              <body>bot: temperature?</body>\
              <delay xmlns='urn:xmpp:delay' stamp='2020-01-01T00:00:00Z' from='lab@conference.localhost'/></message>",
             "delayed (history)"),
            // A delay element that does not even parse is still history.
            ("<message xmlns='jabber:client' type='groupchat' from='lab@conference.localhost/alice'>\
              <body>bot: temperature?</body><delay xmlns='urn:xmpp:delay' stamp='yesterday'/></message>",
             "delayed (history)"),
            ("<message xmlns='jabber:client' type='groupchat' from='lab@conference.localhost/bot'>\
              <body>bot: temperature?</body></message>", "the bot's own message"),
            ("<message xmlns='jabber:client' type='groupchat' from='lab@conference.localhost'>\
              <body>bot: temperature?</body></message>", "from the room itself"),
            ("<message xmlns='jabber:client' type='groupchat' from='lab@conference.localhost/other'>\
              <body>bot: 21 °C</body><answer xmlns='urn:mqtt2xmpp:room:0'/></message>",
             "another bot's answer"),
            ("<message xmlns='jabber:client' type='groupchat' from='lab@conference.localhost/alice'>\
              <subject>bot: news</subject></message>", "no body"),
            ("<message xmlns='jabber:client' type='groupchat' from='lab@conference.localhost/alice'>\
              <body>  </body></message>", "no body"),
            ("<message xmlns='jabber:client' type='headline' from='lab@conference.localhost/alice'>\
              <body>bot: x</body></message>", "neither groupchat nor chat"),
        ] {
            assert_eq!(decide(&message(silent), "bot"), Decision::Ignore(why), "{silent}");
        }
    }

    #[test]
    fn two_bots_cannot_keep_answering_each_other() {
        let t0 = Instant::now();
        let mut rooms = joined(t0);
        // The other bot, and the bot's own account in another session, are occupants.
        for p in [
            "<presence xmlns='jabber:client' from='lab@conference.localhost/other'>\
             <x xmlns='http://jabber.org/protocol/muc#user'>\
             <item affiliation='none' role='participant' jid='other@localhost/b'/></x></presence>",
            "<presence xmlns='jabber:client' from='lab@conference.localhost/twin'>\
             <x xmlns='http://jabber.org/protocol/muc#user'>\
             <item affiliation='none' role='participant' jid='bot@localhost/second'/></x></presence>",
        ] {
            rooms.presence(&presence(p), "", t0).unwrap();
        }
        let from = |nick: &str| {
            message(&format!(
                "<message xmlns='jabber:client' type='groupchat' from='lab@conference.localhost/{nick}'>\
                 <body>bot: temperature?</body></message>"
            ))
        };
        assert_eq!(
            rooms.decide(&from("twin"), t0),
            Decision::Ignore("another session of the bot's own account")
        );
        // A bot that does not mark its answers gets a few answers a minute, then silence.
        for n in 0..ANSWERS_PER_OCCUPANT {
            assert!(
                matches!(
                    rooms.decide(&from("other"), t0 + SECOND * n as u32),
                    Decision::Public { .. }
                ),
                "answer {n}"
            );
        }
        let at = t0 + SECOND * 10;
        assert_eq!(
            rooms.decide(&from("other"), at),
            Decision::Ignore("too many answers to this occupant (loop guard)")
        );
        // Others are not affected, and the window moves on.
        assert!(matches!(
            rooms.decide(&from("alice"), at),
            Decision::Public { .. }
        ));
        assert!(matches!(
            rooms.decide(&from("other"), t0 + ANSWER_WINDOW + SECOND),
            Decision::Public { .. }
        ));
        // The bot's own answers carry the marker another mqtt2xmpp refuses to answer.
        let answer = message(&xml(&public_answer(&room_jid(), "other", "21 °C")).replace(
            "<message ",
            "<message from='lab@conference.localhost/bot2' ",
        ));
        assert_eq!(
            decide(&answer, "other"),
            Decision::Ignore("another bot's answer")
        );
    }

    #[test]
    fn joins_with_no_history_and_logs_the_self_presence() {
        let t0 = Instant::now();
        let mut rooms = lab();
        let out = rooms.join_all("21 °C", t0);
        assert_eq!(out.len(), 1);
        let join = xml(&out[0]);
        assert!(join.contains("to='lab@conference.localhost/bot'"), "{join}");
        assert!(
            join.contains("<x xmlns='http://jabber.org/protocol/muc'>"),
            "{join}"
        );
        assert!(join.contains("maxstanzas='0'"), "{join}");
        assert!(join.contains("<status>21 °C</status>"), "{join}");
        assert_eq!(state(&rooms), RoomState::Joining { since: t0 });
        // Another occupant, with the real JID shown, then the bot's own presence (110).
        rooms.presence(&presence(
            "<presence xmlns='jabber:client' from='lab@conference.localhost/alice'>\
             <x xmlns='http://jabber.org/protocol/muc#user'>\
             <item affiliation='none' role='participant' jid='alice@localhost/phone'/></x></presence>",
        ), "", t0).unwrap();
        rooms
            .presence(
                &presence(
                    "<presence xmlns='jabber:client' from='lab@conference.localhost/hidden'>\
             <x xmlns='http://jabber.org/protocol/muc#user'>\
             <item affiliation='none' role='participant'/></x></presence>",
                ),
                "",
                t0,
            )
            .unwrap();
        let out = rooms.presence(&presence(SELF), "", t0).unwrap();
        assert!(out.is_empty());
        let room = rooms.get(&room_jid()).unwrap();
        assert_eq!(room.state, RoomState::Joined);
        assert_eq!(
            room.real_jid("alice").map(|j| j.as_str()),
            Some("alice@localhost")
        );
        assert_eq!(room.real_jid("hidden"), None);
        // Alice leaves: her JID is forgotten.
        rooms.presence(&presence(
            "<presence xmlns='jabber:client' type='unavailable' from='lab@conference.localhost/alice'/>",
        ), "", t0).unwrap();
        assert_eq!(rooms.get(&room_jid()).unwrap().real_jid("alice"), None);
        // A presence from elsewhere is not the rooms' business.
        assert!(rooms
            .presence(
                &presence("<presence xmlns='jabber:client' from='alice@localhost/x'/>"),
                "",
                t0
            )
            .is_none());
    }

    #[test]
    fn a_new_room_is_accepted_as_an_instant_room() {
        let t0 = Instant::now();
        let mut rooms = lab();
        rooms.join_all("", t0);
        let created = SELF.replace(
            "<status code='110'/>",
            "<status code='110'/><status code='201'/>",
        );
        let out = rooms.presence(&presence(&created), "", t0).unwrap();
        assert_eq!(out.len(), 1);
        let form = xml(&out[0]);
        assert!(form.contains("type='set'"), "{form}");
        assert!(form.contains("to='lab@conference.localhost'"), "{form}");
        assert!(
            form.contains("<query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'/></query>"),
            "{form}"
        );
        // Its answer is the rooms' business, and needs nothing more.
        let id = iq(&form).id().to_string();
        let result = iq(&format!(
            "<iq xmlns='jabber:client' type='result' id='{id}' from='lab@conference.localhost'/>"
        ));
        assert_eq!(rooms.iq(&result, t0, ""), Some(Vec::new()));
        // An unknown status code does not hide the self-presence.
        let mut rooms = lab();
        rooms.join_all("", t0);
        let odd = SELF.replace(
            "<status code='110'/>",
            "<status code='110'/><status code='999'/>",
        );
        rooms.presence(&presence(&odd), "", t0).unwrap();
        assert_eq!(state(&rooms), RoomState::Joined);
    }

    #[test]
    fn a_nick_conflict_retries_with_a_suffix_then_waits() {
        let t0 = Instant::now();
        let mut rooms = lab();
        rooms.join_all("", t0);
        let conflict = presence(
            "<presence xmlns='jabber:client' type='error' from='lab@conference.localhost/bot'>\
             <x xmlns='http://jabber.org/protocol/muc'/>\
             <error type='cancel'><conflict xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>",
        );
        let out = rooms.presence(&conflict, "", t0).unwrap();
        assert_eq!(out.len(), 1);
        assert!(
            xml(&out[0]).contains("to='lab@conference.localhost/bot-2'"),
            "{}",
            xml(&out[0])
        );
        for n in 2..MAX_NICK_ATTEMPTS {
            let retry = conflict
                .clone()
                .with_from(Jid::from_str(&format!("lab@conference.localhost/bot-{n}")).unwrap());
            assert_eq!(rooms.presence(&retry, "", t0).unwrap().len(), 1);
        }
        let last = conflict.clone().with_from(
            Jid::from_str(&format!("lab@conference.localhost/bot-{MAX_NICK_ATTEMPTS}")).unwrap(),
        );
        assert!(rooms.presence(&last, "", t0).unwrap().is_empty());
        assert_eq!(
            waiting_until(&rooms),
            t0 + RoomTimings::default().refused_retry
        );
        // A reconnection starts over from the first nick.
        let out = rooms.join_all("", t0);
        assert!(xml(&out[0]).contains("to='lab@conference.localhost/bot'"));
    }

    #[test]
    fn a_refused_join_is_tried_again_only_every_ten_minutes() {
        let t0 = Instant::now();
        for condition in ["forbidden", "registration-required", "not-authorized"] {
            let mut rooms = lab();
            rooms.join_all("", t0);
            let refused = presence(&format!(
                "<presence xmlns='jabber:client' type='error' from='lab@conference.localhost/bot'>\
                 <error type='auth'><{condition} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>"
            ));
            assert!(
                rooms.presence(&refused, "", t0).unwrap().is_empty(),
                "{condition}"
            );
            let retry = t0 + Duration::from_secs(600);
            assert_eq!(waiting_until(&rooms), retry, "{condition}");
            assert_eq!(rooms.next_due(), Some(retry));
            assert!(rooms.tick(retry - SECOND, "").is_empty());
            let again = rooms.tick(retry, "");
            assert_eq!(again.len(), 1, "{condition}");
        }
    }

    #[test]
    fn a_quiet_room_is_self_pinged_and_a_not_joined_answer_rejoins_with_backoff() {
        let t0 = Instant::now();
        let mut rooms = joined(t0);
        let every = RoomTimings::default().ping_every;
        assert_eq!(rooms.next_due(), Some(t0 + every));
        // Anything from the room postpones the ping.
        let t1 = t0 + every / 2;
        rooms.heard_from(&room_jid(), t1);
        assert!(rooms.tick(t0 + every, "").is_empty());
        let t2 = t1 + every;
        let out = rooms.tick(t2, "");
        assert_eq!(out.len(), 1);
        let ping = xml(&out[0]);
        assert!(ping.contains("type='get'"), "{ping}");
        assert!(ping.contains("to='lab@conference.localhost/bot'"), "{ping}");
        assert!(ping.contains("<ping xmlns='urn:xmpp:ping'/>"), "{ping}");
        let id = iq(&ping).id().to_string();
        // §3: still joined; the next ping after another quiet interval.
        let ok = iq(&format!(
            "<iq xmlns='jabber:client' type='result' id='{id}' from='lab@conference.localhost/bot'/>"
        ));
        assert_eq!(rooms.iq(&ok, t2, ""), Some(Vec::new()));
        assert_eq!(state(&rooms), RoomState::Joined);
        assert_eq!(rooms.next_due(), Some(t2 + every));
        // Errors that mean "still joined", then one that means "not joined".
        let mut t = t2;
        for (condition, still) in [
            ("service-unavailable", true),
            ("feature-not-implemented", true),
            ("item-not-found", true),
            ("not-acceptable", false),
        ] {
            t += every;
            let out = rooms.tick(t, "");
            assert_eq!(out.len(), 1, "{condition}");
            let id = iq(&xml(&out[0])).id().to_string();
            let error = iq(&format!(
                "<iq xmlns='jabber:client' type='error' id='{id}' from='lab@conference.localhost/bot'>\
                 <error type='cancel'><{condition} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
            ));
            assert_eq!(rooms.iq(&error, t, ""), Some(Vec::new()), "{condition}");
            assert_eq!(state(&rooms) == RoomState::Joined, still, "{condition}");
        }
        // Out of the room: joined again after about a second (backoff with jitter).
        let until = waiting_until(&rooms);
        assert!(until > t && until <= t + SECOND, "{:?}", until - t);
        let out = rooms.tick(until, "21 °C");
        assert!(xml(&out[0]).contains("<status>21 °C</status>"));
        // Another IQ is none of the rooms' business.
        let other = iq("<iq xmlns='jabber:client' type='result' id='x1' from='localhost'/>");
        assert_eq!(rooms.iq(&other, t, ""), None);
    }

    #[test]
    fn pings_without_a_decision_rejoin_after_three() {
        let t0 = Instant::now();
        let mut rooms = joined(t0);
        let timings = RoomTimings::default();
        let mut t = t0 + timings.ping_every;
        for n in 0..UNDECIDED_PINGS {
            let out = rooms.tick(t, "");
            assert_eq!(out.len(), 1, "ping {n}");
            assert!(xml(&out[0]).contains("urn:xmpp:ping"));
            t += timings.answer_within;
            let out = rooms.tick(t, "");
            if n + 1 < UNDECIDED_PINGS {
                assert!(out.is_empty());
                assert_eq!(state(&rooms), RoomState::Joined);
                t = rooms.next_due().unwrap();
            } else {
                assert_eq!(out.len(), 1);
                assert!(xml(&out[0]).contains("http://jabber.org/protocol/muc"));
                assert_eq!(state(&rooms), RoomState::Joining { since: t });
            }
        }
        // A join that gets no answer is tried again later.
        let late = t + timings.answer_within;
        assert!(rooms.tick(late, "").is_empty());
        assert!(matches!(state(&rooms), RoomState::Waiting { .. }));
    }

    #[test]
    fn kicks_rejoin_with_growing_delays_and_bans_wait_ten_minutes() {
        let t0 = Instant::now();
        let mut rooms = joined(t0);
        // Kicked again right after every rejoin: the delays double (with jitter), never
        // hammering the room.
        let mut now = t0;
        let mut delays = Vec::new();
        for _ in 0..12 {
            rooms.presence(&removed(&[110, 307], ""), "", now).unwrap();
            let until = waiting_until(&rooms);
            delays.push(until - now);
            now = until;
            assert_eq!(rooms.tick(now, "").len(), 1);
            rooms.presence(&presence(SELF), "", now).unwrap();
        }
        for (n, delay) in delays.iter().enumerate() {
            let nominal = (SECOND * 2u32.pow(n as u32)).min(Duration::from_secs(300));
            assert!(*delay >= nominal / 2 && *delay <= nominal, "{n}: {delay:?}");
        }
        // A self-ping that succeeds proves the bot stays: the next kick starts over.
        let out = rooms.tick(now + RoomTimings::default().ping_every, "");
        let id = iq(&xml(&out[0])).id().to_string();
        let ok = iq(&format!(
            "<iq xmlns='jabber:client' type='result' id='{id}'/>"
        ));
        rooms.iq(&ok, now, "").unwrap();
        rooms.presence(&removed(&[110, 307], ""), "", now).unwrap();
        assert!(waiting_until(&rooms) - now <= SECOND);
        // Banned, removed as a non-member, the room destroyed: ten minutes each.
        for (codes, extra) in [
            (&[110u16, 301][..], ""),
            (&[110, 321][..], ""),
            (&[110, 322][..], ""),
            (
                &[110][..],
                "<destroy jid='new@conference.localhost'><reason>moved</reason></destroy>",
            ),
        ] {
            let mut rooms = joined(t0);
            rooms.presence(&removed(codes, extra), "", t0).unwrap();
            assert_eq!(
                waiting_until(&rooms),
                t0 + Duration::from_secs(600),
                "{codes:?}"
            );
        }
        // The bot's nick changed by the room: still joined, under the new nick.
        let mut rooms = joined(t0);
        let renamed = presence(
            "<presence xmlns='jabber:client' type='unavailable' from='lab@conference.localhost/bot'>\
             <x xmlns='http://jabber.org/protocol/muc#user'>\
             <item affiliation='none' role='participant' nick='robot'/>\
             <status code='303'/><status code='110'/></x></presence>",
        );
        rooms.presence(&renamed, "", t0).unwrap();
        let room = rooms.get(&room_jid()).unwrap();
        assert_eq!(
            (room.state, room.nick.as_str()),
            (RoomState::Joined, "robot")
        );
    }

    #[test]
    fn the_room_presence_carries_the_status() {
        let t0 = Instant::now();
        let mut rooms = joined(t0);
        rooms.add_remembered(RoomJoin::parse("other@conference.localhost", "bot").unwrap());
        // Only joined rooms get the update.
        let out = rooms.status_updates("temp: 22 °C");
        assert_eq!(out.len(), 1);
        let update = xml(&out[0]);
        assert!(
            update.contains("to='lab@conference.localhost/bot'"),
            "{update}"
        );
        assert!(update.contains("<status>temp: 22 °C</status>"), "{update}");
        assert!(
            !update.contains("http://jabber.org/protocol/muc"),
            "{update}"
        );
    }

    #[test]
    fn invitations_mediated_and_direct() {
        let mediated = message(
            "<message xmlns='jabber:client' from='class@conference.localhost'>\
             <x xmlns='http://jabber.org/protocol/muc#user'>\
             <invite from='alice@localhost/phone'><reason>join us</reason></invite>\
             <password>pw</password></x></message>",
        );
        assert_eq!(
            invitation(&mediated),
            Some(Invitation {
                room: BareJid::from_str("class@conference.localhost").unwrap(),
                inviter: Jid::from_str("alice@localhost/phone").unwrap(),
                password: Some("pw".into()),
                mediated: true,
            })
        );
        let direct = message(
            "<message xmlns='jabber:client' from='alice@localhost/phone'>\
             <x xmlns='jabber:x:conference' jid='class@conference.localhost' reason='hi'/></message>",
        );
        assert_eq!(
            invitation(&direct),
            Some(Invitation {
                room: BareJid::from_str("class@conference.localhost").unwrap(),
                inviter: Jid::from_str("alice@localhost/phone").unwrap(),
                password: None,
                mediated: false,
            })
        );
        for not_one in [
            // An invitation without an inviter, to a room without a name, an error.
            "<message xmlns='jabber:client' from='class@conference.localhost'>\
             <x xmlns='http://jabber.org/protocol/muc#user'><invite/></x></message>",
            "<message xmlns='jabber:client' from='alice@localhost/p'>\
             <x xmlns='jabber:x:conference' jid='conference.localhost'/></message>",
            "<message xmlns='jabber:client' from='alice@localhost/p'>\
             <x xmlns='jabber:x:conference' jid='a@@b'/></message>",
            "<message xmlns='jabber:client' type='error' from='alice@localhost/p'>\
             <x xmlns='jabber:x:conference' jid='class@conference.localhost'/></message>",
            // A mediated invitation from a bare domain is not from a room.
            "<message xmlns='jabber:client' from='conference.localhost'>\
             <x xmlns='http://jabber.org/protocol/muc#user'><invite from='alice@localhost'/></x></message>",
            // muc#user from an occupant is not a mediated invitation.
            "<message xmlns='jabber:client' from='class@conference.localhost/eve'>\
             <x xmlns='http://jabber.org/protocol/muc#user'><invite from='alice@localhost'/></x></message>",
            "<message xmlns='jabber:client' from='alice@localhost/p'><body>hi</body></message>",
        ] {
            assert_eq!(invitation(&message(not_one)), None, "{not_one}");
        }
    }

    #[test]
    fn mediated_invitations_are_trusted_only_from_known_services() {
        let rooms = lab();
        assert!(rooms.trusts_service("conference.localhost"));
        assert!(rooms.trusts_service("rooms.localhost"));
        assert!(!rooms.trusts_service("localhost.evil.example"));
        assert!(!rooms.trusts_service("evillocalhost"));
        let mut elsewhere = Rooms::new(
            [RoomJoin::parse("lab@muc.example.org", "bot").unwrap()],
            RoomTimings::default(),
        )
        .with_account(BareJid::from_str("bot@localhost").unwrap());
        assert!(elsewhere.trusts_service("muc.example.org"));
        elsewhere.add_remembered(RoomJoin::parse("x@other.example", "bot").unwrap());
        assert!(elsewhere.trusts_service("other.example"));
    }

    #[test]
    fn invitations_are_bounded() {
        let t0 = Instant::now();
        let mut rooms = joined(t0);
        let join =
            |n: usize| RoomJoin::parse(&format!("r{n}@conference.localhost"), "bot").unwrap();
        // The room it is in: nothing to do.
        assert!(matches!(
            rooms.invited(
                RoomJoin::parse("lab@conference.localhost", "bot").unwrap(),
                "",
                t0
            ),
            Invited::Known
        ));
        let mut accepted = 0;
        let mut t = t0;
        for n in 0..40 {
            match rooms.invited(join(n), "", t) {
                Invited::Join(presence) => {
                    accepted += 1;
                    assert!(xml(&presence).contains(&format!("to='r{n}@conference.localhost/bot'")));
                }
                Invited::Refused(_) => {}
                other => panic!("{other:?}"),
            }
            t += Duration::from_secs(30);
        }
        // 40 invitations over 20 minutes: 5 per 10 minutes.
        assert_eq!(accepted, 2 * INVITES_PER_WINDOW);
        let mut t = t0 + Duration::from_secs(7200);
        for n in 100..200 {
            rooms.invited(join(n), "", t);
            t += INVITE_WINDOW;
        }
        assert_eq!(
            rooms.rooms.iter().filter(|r| r.invited).count(),
            MAX_INVITED_ROOMS
        );
        // An invitation back into a room it waits for joins at once.
        let mut rooms = joined(t0);
        rooms.presence(&removed(&[110, 301], ""), "", t0).unwrap();
        let back = rooms.invited(
            RoomJoin::parse("lab@conference.localhost", "bot").unwrap(),
            "",
            t0,
        );
        assert!(matches!(back, Invited::Rejoin(_)), "{back:?}");
    }

    #[test]
    fn answers_are_addressed_to_the_asker_and_marked() {
        let public = xml(&public_answer(&room_jid(), "alice", "21.5 °C"));
        assert!(public.contains("type='groupchat'"), "{public}");
        assert!(public.contains("to='lab@conference.localhost'"), "{public}");
        assert!(public.contains("<body>alice: 21.5 °C</body>"), "{public}");
        assert!(
            public.contains("<answer xmlns='urn:mqtt2xmpp:room:0'/>"),
            "{public}"
        );
        let private = xml(&private_answer(&room_jid(), "alice", "21.5 °C").unwrap());
        assert!(private.contains("type='chat'"), "{private}");
        assert!(
            private.contains("to='lab@conference.localhost/alice'"),
            "{private}"
        );
        assert!(private.contains("<body>21.5 °C</body>"), "{private}");
    }
}
