//! The XMPP side of the bridge: logs in with tokio-xmpp, answers chat messages through a
//! [`Handler`] (the [`Bot`]), sends alert messages, keeps the presence status showing the default
//! sensor's reading, and behaves like a well-mannered contact (receipts, ping, disco).
//!
//! [`respond`] decides what to send for each incoming stanza and does no I/O; [`run`] drives the
//! client around it.
//!
//! Presence updates are throttled by [`PresenceThrottle`]: at most one per `--presence-interval`,
//! and none when the status text has not changed, so contacts' clients are not flooded however
//! fast the sensor publishes.
//!
//! Loop safety: the bot only ever answers `chat` and `normal` messages that have a body and come
//! from another account. It never answers `error` or `headline` messages, bodyless messages (chat
//! states, receipts), IQ results or errors, so two bots cannot talk each other into a loop.
//! `groupchat` messages are answered only from the bot's rooms, when addressed to the bot, not
//! delayed, not from itself and not another mqtt2xmpp's marked answer, within the per-room rate
//! limit and a per-occupant cap (see [`super::room`]'s loop guard).
//!
//! Rooms: [`respond_with_rooms`] hands presence, messages, invitations and self-ping answers
//! from rooms to [`Rooms`]; [`run`] wakes at [`Rooms::next_due`] for self-pings and rejoins,
//! posts a room's alerts to the room, and sends the room presence with the one-to-one one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::str::FromStr;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::message::Id as MessageId;
use tokio_xmpp::parsers::{
    disco::DiscoInfoQuery,
    iq::Iq,
    message::{Message, MessageType},
    ns,
    presence::{Presence, Type as PresenceType},
    receipts::{Received, Request as ReceiptRequest},
    stanza_error::{DefinedCondition, ErrorType, StanzaError},
    version::{VersionQuery, VersionResult},
};
use tokio_xmpp::stanzastream::{
    Event as StreamEvent, StanzaStage, StanzaStream, StreamEvent as Session,
};
use tokio_xmpp::Stanza;

use super::bot::{Bot, Notice, Outlets};
use super::chart::driver::ChartDriver;
use super::identity;
use super::profile::Publisher;
use super::room::{self, RoomJoin, RoomTimings, Rooms};
use super::status::Reporter;
use crate::xmpp_connect::{Connector, Fatal};

/// What the bot says to contacts; [`Bot`] in the bridge, something simpler in tests.
pub trait Handler {
    /// The reply to a chat message with this body, or `None` to stay silent (then no receipt is
    /// sent either).
    fn chat(&self, from: &BareJid, body: &str) -> Option<String>;
    /// Whether to approve `from`'s request to see the bot's presence.
    fn may_subscribe(&self, from: &BareJid) -> bool;
    /// The reply to a question asked in `room` by an occupant whose real JID is `real` when the
    /// room shows it, or `None` to stay silent.
    fn room_chat(&self, room: &BareJid, real: Option<&BareJid>, body: &str) -> Option<String>;
    /// Whether `inviter` (a real bare JID) may invite the bot into `room`.
    fn may_invite(&self, _inviter: &BareJid, _room: &BareJid) -> bool {
        false
    }
    /// An invitation was accepted: keep the room, to join it again after a restart.
    fn remember_room(&self, _join: &RoomJoin, _inviter: &BareJid) {}
    /// The answer to an IQ from `from` to `me` (the bot's full JID) that is the ad-hoc
    /// commands' business (XEP-0050), or `None` when it is not theirs.
    fn adhoc(
        &self,
        _from: &Jid,
        _me: &Jid,
        _payload: &Element,
        _is_get: bool,
    ) -> Option<Result<Element, Box<StanzaError>>> {
        None
    }
    /// The answer to a XEP-0323 sensor-data request, or `None` when `iq` is not one.
    fn sensor_data(&self, _iq: &Iq) -> Option<Vec<Stanza>> {
        None
    }
}

impl Handler for Bot {
    fn chat(&self, from: &BareJid, body: &str) -> Option<String> {
        Bot::chat(self, from.as_str(), body, Instant::now())
    }

    fn may_subscribe(&self, from: &BareJid) -> bool {
        Bot::may_subscribe(self, from.as_str())
    }

    fn room_chat(&self, room: &BareJid, real: Option<&BareJid>, body: &str) -> Option<String> {
        Bot::room_chat(
            self,
            room.as_str(),
            real.map(|jid| jid.as_str()),
            body,
            Instant::now(),
        )
    }

    fn may_invite(&self, inviter: &BareJid, room: &BareJid) -> bool {
        Bot::may_invite(self, inviter.as_str(), room.as_str())
    }

    fn remember_room(&self, join: &RoomJoin, inviter: &BareJid) {
        Bot::remember_room(self, join, inviter.as_str(), Instant::now());
    }

    fn adhoc(
        &self,
        from: &Jid,
        me: &Jid,
        payload: &Element,
        is_get: bool,
    ) -> Option<Result<Element, Box<StanzaError>>> {
        Bot::adhoc_iq(self, from, me, payload, is_get, Instant::now())
    }

    fn sensor_data(&self, iq: &Iq) -> Option<Vec<Stanza>> {
        Bot::sensor_data(self, iq, super::sensordata::Now::new())
    }
}

/// How long sending one stanza may take before it is given up (the loop must not stall on a
/// dead connection).
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections lost in a row, each before a session was resumed or bound, after which the bot
/// drops its stream-management state and starts a fresh stream. tokio-xmpp 6.0 retries the
/// resumption of a session the server has forgotten on every reconnection, and cannot read
/// ejabberd's `<failed xmlns='urn:xmpp:sm:3'/>` (XEP-0198 §5 leaves `h` optional there; its
/// parser requires it), so after an ejabberd restart it would reconnect for ever without a
/// session.
const FRESH_STREAM_AFTER: u32 = 3;

/// How long the goodbye (unavailable presence, stream close) may take at shutdown.
const GOODBYE_TIMEOUT: Duration = Duration::from_millis(1500);

/// [`respond`], with the rooms of `--room` first: a message, presence or self-ping answer
/// from a configured room is the rooms' business (see [`super::room`]), and so is an
/// invitation; everything else is answered as one-to-one. `status` is the presence status to
/// show when joining a room (again), `now` the time.
pub fn respond_with_rooms(
    incoming: Stanza,
    account: &BareJid,
    rooms: &mut Rooms,
    status: &str,
    handler: &impl Handler,
    now: Instant,
) -> Vec<Stanza> {
    match incoming {
        Stanza::Presence(presence) => {
            if let Some(from) = &presence.from {
                rooms.heard_from(&from.to_bare(), now);
            }
            match rooms.presence(&presence, status, now) {
                Some(out) => out,
                None => respond(Stanza::Presence(presence), account, handler),
            }
        }
        Stanza::Message(message) => {
            if let Some(invitation) = room::invitation(&message) {
                return respond_invitation(invitation, account, rooms, status, handler, now);
            }
            let Some(room) = message.from.as_ref().map(|f| f.to_bare()) else {
                return respond(Stanza::Message(message), account, handler);
            };
            if rooms.get(&room).is_none() {
                return respond(Stanza::Message(message), account, handler);
            }
            rooms.heard_from(&room, now);
            respond_room(&message, &room, rooms, handler, now)
        }
        Stanza::Iq(iq) => match rooms.iq(&iq, now, status) {
            Some(out) => out,
            None => respond(Stanza::Iq(iq), account, handler),
        },
    }
}

/// An invitation (mediated or direct): accepted only from a real JID the handler allows to
/// invite, within the rooms' bounds on invitations; then the room is joined and remembered.
fn respond_invitation(
    invitation: room::Invitation,
    account: &BareJid,
    rooms: &mut Rooms,
    status: &str,
    handler: &impl Handler,
    now: Instant,
) -> Vec<Stanza> {
    let room::Invitation {
        room,
        inviter,
        password,
        mediated,
    } = invitation;
    if mediated && !rooms.trusts_service(room.domain().as_str()) {
        tracing::info!(%room, %inviter, "ignoring a mediated invitation from a room service the bot does not know");
        return Vec::new();
    }
    // A direct invitation through a room comes from an occupant's room JID: its real JID is
    // what the room shows, if anything.
    let real = match (rooms.get(&inviter.to_bare()), inviter.resource()) {
        (Some(through), Some(nick)) => through.real_jid(nick.as_str()).cloned(),
        (Some(_), None) => None,
        (None, _) => Some(inviter.to_bare()),
    };
    let Some(real) = real.filter(|real| real != account) else {
        tracing::info!(%room, %inviter, "ignoring an invitation: the inviter's real JID is not known");
        return Vec::new();
    };
    if !handler.may_invite(&real, &room) {
        tracing::info!(%room, inviter = %real, "ignoring an invitation from a contact not on the allow list");
        return Vec::new();
    }
    let nick = account.node().map_or("bot", |n| n.as_str()).to_string();
    let join = RoomJoin {
        room: room.clone(),
        nick,
        password,
    };
    match rooms.invited(join.clone(), status, now) {
        room::Invited::Join(presence) => {
            tracing::info!(%room, inviter = %real, "accepted an invitation: joining the room");
            handler.remember_room(&join, &real);
            vec![presence]
        }
        room::Invited::Rejoin(presence) => {
            tracing::info!(%room, inviter = %real, "invited back into a room: joining it again");
            vec![presence]
        }
        room::Invited::Known => Vec::new(),
        room::Invited::Refused(why) => {
            tracing::warn!(%room, inviter = %real, why, "ignoring an invitation");
            Vec::new()
        }
    }
}

/// The answer to a message from a configured room, if it is for the bot ([`Rooms::decide`]).
fn respond_room(
    message: &Message,
    jid: &BareJid,
    rooms: &mut Rooms,
    handler: &impl Handler,
    now: Instant,
) -> Vec<Stanza> {
    if message.type_ == MessageType::Error {
        return Vec::new();
    }
    let decision = rooms.decide(message, now);
    let Some(room) = rooms.get(jid) else {
        return Vec::new();
    };
    match decision {
        room::Decision::Ignore(why) => {
            tracing::trace!(room = %jid, why, "not answering a room message");
            Vec::new()
        }
        room::Decision::Public { nick, text } => handler
            .room_chat(jid, room.real_jid(&nick), &text)
            .map(|answer| room::public_answer(jid, &nick, &answer))
            .into_iter()
            .collect(),
        room::Decision::Private { nick, text } => handler
            .room_chat(jid, room.real_jid(&nick), &text)
            .and_then(|answer| room::private_answer(jid, &nick, &answer))
            .into_iter()
            .collect(),
    }
}

/// Decides the stanzas to send in answer to `incoming`. `handler` is asked for the reply text
/// only when a reply is due.
pub fn respond(incoming: Stanza, account: &BareJid, handler: &impl Handler) -> Vec<Stanza> {
    match incoming {
        Stanza::Message(message) => respond_message(message, account, handler),
        // XEP-0323 read-outs (see `super::sensordata`); every other IQ as below.
        Stanza::Iq(iq) => match handler.sensor_data(&iq) {
            Some(out) => out,
            None => respond_iq(iq, account, handler).into_iter().collect(),
        },
        Stanza::Presence(presence) => respond_presence(presence, handler).into_iter().collect(),
    }
}

fn respond_message(message: Message, account: &BareJid, handler: &impl Handler) -> Vec<Stanza> {
    if !matches!(message.type_, MessageType::Chat | MessageType::Normal) {
        return Vec::new();
    }
    let Some(from) = message.from.clone() else {
        return Vec::new();
    };
    if from.to_bare() == *account {
        return Vec::new();
    }
    let Some(body) = message
        .get_best_body(Vec::new())
        .map(|(_, body)| body.trim().to_string())
        .filter(|body| !body.is_empty())
    else {
        return Vec::new();
    };

    let Some(text) = handler.chat(&from.to_bare(), &body) else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(2);
    // XEP-0184: acknowledge before answering, so the sender's client ticks the message first.
    let wants_receipt = message
        .payloads
        .iter()
        .any(|p| ReceiptRequest::try_from(p.clone()).is_ok());
    if let (true, Some(id)) = (wants_receipt, &message.id) {
        let receipt = Message::new_with_type(message.type_.clone(), Some(from.clone()))
            .with_payload(Received { id: id.0.clone() });
        out.push(receipt.into());
    }
    let mut answer = Message::new_with_type(message.type_.clone(), Some(from))
        .with_body(Default::default(), text);
    answer.thread = message.thread;
    out.push(answer.into());
    out
}

fn respond_iq(iq: Iq, account: &BareJid, handler: &impl Handler) -> Option<Stanza> {
    let (from, to, id, payload, is_get) = match iq {
        Iq::Get {
            from,
            to,
            id,
            payload,
        } => (from, to, id, payload, true),
        Iq::Set {
            from,
            to,
            id,
            payload,
        } => (from, to, id, payload, false),
        // Never answer a result or an error.
        Iq::Result { .. } | Iq::Error { .. } => return None,
    };
    // XEP-0050 ad-hoc commands: their disco nodes and `<command/>` (see `super::adhoc`).
    if let Some(sender) = &from {
        let me = to.clone().unwrap_or_else(|| Jid::from(account.clone()));
        if let Some(answer) = handler.adhoc(sender, &me, &payload, is_get) {
            return Some(
                match answer {
                    Ok(payload) => Iq::Result {
                        from: None,
                        to: from.clone(),
                        id,
                        payload: Some(payload),
                    },
                    Err(error) => Iq::Error {
                        from: None,
                        to: from.clone(),
                        id,
                        error: *error,
                        payload: None,
                    },
                }
                .into(),
            );
        }
    }
    let result = |payload: Option<Element>| Iq::Result {
        from: None,
        to: from.clone(),
        id: id.clone(),
        payload,
    };
    let answer = if is_get && payload.is("ping", ns::PING) {
        result(None)
    } else if let Some(info) = is_get
        .then(|| DiscoInfoQuery::try_from(payload.clone()).ok())
        .flatten()
        .and_then(|query| match query.node {
            None => Some(identity::disco_info(None)),
            // XEP-0115 §6.2: the caps node `NODE#VER`.
            Some(node) => identity::info_for_node(&node),
        })
    {
        result(Some(info.into()))
    } else if is_get && VersionQuery::try_from(payload.clone()).is_ok() {
        result(Some(
            VersionResult {
                name: env!("CARGO_PKG_NAME").into(),
                version: env!("CARGO_PKG_VERSION").into(),
                os: None,
            }
            .into(),
        ))
    } else if !is_get && payload.is("query", ns::ROSTER) {
        // RFC 6121 §2.1.6: a roster push is acknowledged with an empty result.
        result(None)
    } else {
        Iq::Error {
            from: None,
            to: from.clone(),
            id: id.clone(),
            error: StanzaError::new(
                ErrorType::Cancel,
                DefinedCondition::ServiceUnavailable,
                "en",
                "mqtt2xmpp does not handle this request",
            ),
            payload: None,
        }
    };
    Some(answer.into())
}

fn respond_presence(presence: Presence, handler: &impl Handler) -> Option<Stanza> {
    match (presence.type_, presence.from) {
        (PresenceType::Subscribe, Some(from)) if handler.may_subscribe(&from.to_bare()) => {
            tracing::info!(%from, "approving presence subscription");
            Some(Presence::subscribed().with_to(from.to_bare()).into())
        }
        (PresenceType::Subscribe, Some(from)) => {
            tracing::info!(%from, "declining presence subscription: not on the allow list");
            Some(
                Presence::new(PresenceType::Unsubscribed)
                    .with_to(from.to_bare())
                    .into(),
            )
        }
        _ => None,
    }
}

/// At most one presence update per interval, and only for a new status.
#[derive(Debug, Clone)]
pub struct PresenceThrottle {
    interval: Duration,
    last_sent: Option<(Instant, String)>,
    dirty: bool,
}

impl PresenceThrottle {
    /// One update per `interval` at most.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last_sent: None,
            dirty: false,
        }
    }

    /// The status may have changed (a new reading arrived).
    pub fn changed(&mut self) {
        self.dirty = true;
    }

    /// When the next update may go out, if one is due at all.
    pub fn due(&self) -> Option<Instant> {
        if !self.dirty {
            return None;
        }
        Some(match &self.last_sent {
            Some((at, _)) => *at + self.interval,
            None => Instant::now(),
        })
    }

    /// At `now`, with the current `status`: `Some(status)` to send, `None` when it is the one
    /// already shown. Either way the change is taken care of.
    pub fn take(&mut self, status: String, now: Instant) -> Option<String> {
        self.dirty = false;
        if self
            .last_sent
            .as_ref()
            .is_some_and(|(_, last)| *last == status)
        {
            return None;
        }
        self.last_sent = Some((now, status.clone()));
        Some(status)
    }

    /// A presence was sent outside the throttle (on connecting).
    pub fn sent(&mut self, status: String, now: Instant) {
        self.dirty = false;
        self.last_sent = Some((now, status));
    }
}

/// Presence the bot sends on every (re)connection.
fn available(status: &str) -> Presence {
    let mut presence = Presence::available();
    presence
        .statuses
        .insert(Default::default(), status.to_string());
    presence
}

/// XMPP connection settings.
#[derive(Debug, Clone)]
pub struct XmppConfig {
    /// The bot's account (a full JID picks the resource).
    pub jid: Jid,
    /// Opens connections and watches logins.
    pub connector: Connector,
    /// Least time between two presence updates.
    pub presence_interval: Duration,
    /// The rooms to join (`--room`), on every (re)connection.
    pub rooms: Vec<RoomJoin>,
    /// How often quiet rooms are self-pinged, and how joining again backs off.
    pub room_timings: RoomTimings,
    /// Charts with `stats` through the server's upload service (off with `--no-charts`).
    pub charts: bool,
}

/// Runs the client until `shutdown` or a [`Fatal`] problem: answers through `bot`, sends its
/// alert messages, and shows its default reading in the presence status.
///
/// Built on tokio-xmpp's [`StanzaStream`] rather than its `Client`: in tokio-xmpp 6.0 the
/// `Client` shares the stream between its sender and its receiver behind a mutex, and a stanza
/// that arrives while a send holds that mutex is not delivered until something else wakes the
/// receiver (replies then stall for good). One owner of the stream has no such race.
pub(crate) async fn run(
    config: XmppConfig,
    bot: Arc<Bot>,
    outlets: Outlets,
    links: Reporter,
    shutdown: CancellationToken,
) -> Result<(), Fatal> {
    let Outlets {
        mut notices,
        mut default_changed,
    } = outlets;
    let mut throttle = PresenceThrottle::new(config.presence_interval);
    let guard = config.connector.guard();
    let mut fatal = guard.watch();
    let account = config.jid.to_bare();
    let mut rooms =
        Rooms::new(config.rooms.clone(), config.room_timings).with_account(account.clone());
    for join in bot.remembered_rooms() {
        rooms.add_remembered(join);
    }
    let mut stream = crate::xmpp_connect::open_stream(config.jid.clone(), config.connector.clone());
    // Connections lost in a row without a session: see `FRESH_STREAM_AFTER`.
    let mut lost_in_a_row = 0u32;
    tracing::info!(jid = %config.jid, "connecting to the XMPP server");
    let mut online = false;
    let (has_db, published) = bot.published_profile();
    let mut profile = Publisher::new(has_db, published);
    let mut charts = ChartDriver::new(config.charts, config.connector.tls());

    let outcome = loop {
        let presence_due = throttle.due().filter(|_| online);
        let rooms_due = rooms.next_due().filter(|_| online);
        let event = tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            Ok(()) = fatal.changed() => match fatal.borrow().clone() {
                Some(problem) => break Err(problem),
                None => continue,
            },
            Ok(()) = default_changed.changed() => {
                throttle.changed();
                continue;
            }
            _ = sleep_until(presence_due), if presence_due.is_some() => {
                if let Some(status) = throttle.take(bot.presence_status(), Instant::now()) {
                    tracing::debug!(status, "presence update");
                    send(&stream, available(&status).into()).await;
                    // §7.7: the same status in every room, under the same throttle.
                    for update in rooms.status_updates(&status) {
                        send(&stream, update).await;
                    }
                }
                continue;
            }
            _ = sleep_until(rooms_due), if rooms_due.is_some() => {
                let status = bot.presence_status();
                for out in rooms.tick(Instant::now(), &status) {
                    send(&stream, out).await;
                }
                continue;
            }
            due = charts.next() => {
                for out in due {
                    send(&stream, out).await;
                }
                continue;
            }
            Some(notice) = notices.recv(), if online => {
                send(&stream, alert_message(notice, &rooms)).await;
                continue;
            }
            event = stream.next() => event,
        };
        match event {
            Some(StreamEvent::Stream(Session::Reset { bound_jid, .. })) => {
                guard.online();
                online = true;
                lost_in_a_row = 0;
                tracing::info!(%bound_jid, "online");
                // The profile before the presence: the server then has the vCard when the
                // presence passes, and a server that fills in the photo hash (XEP-0398 §4)
                // fills in the new one.
                for request in profile.online() {
                    send(&stream, request).await;
                }
                let status = bot.presence_status();
                send(&stream, available(&status).into()).await;
                // §7.2.1: a new session is in no room; join them all again.
                for join in rooms.join_all(&status, Instant::now()) {
                    send(&stream, join).await;
                }
                throttle.sent(status, Instant::now());
                tracing::info!("available: answering chat messages");
                links.online();
                charts.online(&bot, &account);
            }
            Some(StreamEvent::Stream(Session::Resumed)) => {
                online = true;
                lost_in_a_row = 0;
                tracing::info!("XMPP session resumed");
            }
            Some(StreamEvent::Stream(Session::Suspended)) => {
                online = false;
                lost_in_a_row += 1;
                if lost_in_a_row >= FRESH_STREAM_AFTER {
                    tracing::warn!("could not resume the XMPP session; starting a new one");
                    stream = crate::xmpp_connect::open_stream(
                        config.jid.clone(),
                        config.connector.clone(),
                    );
                    lost_in_a_row = 0;
                    continue;
                }
                tracing::warn!("lost the connection to the XMPP server; reconnecting");
            }
            Some(StreamEvent::Stanza(stanza)) => {
                tracing::debug!(?stanza, "received");
                if charts.reply(&stanza) {
                    continue;
                }
                if let Some(next) = match &stanza {
                    Stanza::Iq(iq) => profile.answer(iq, &account),
                    _ => None,
                } {
                    for request in next.send {
                        send(&stream, request).await;
                    }
                    if let Some(fingerprint) = next.published {
                        bot.remember_profile(fingerprint);
                    }
                    if next.announce {
                        // XEP-0153 §4.2: presence again once the new avatar is in place.
                        let status = bot.presence_status();
                        send(&stream, available(&status).into()).await;
                        for update in rooms.status_updates(&status) {
                            send(&stream, update).await;
                        }
                    }
                    continue;
                }
                let status = if rooms.is_empty() {
                    String::new()
                } else {
                    bot.presence_status()
                };
                let now = Instant::now();
                let mut outs =
                    respond_with_rooms(stanza, &account, &mut rooms, &status, bot.as_ref(), now);
                // A `stats` with a chart: its text waits for the chart (see `super::chart`).
                charts.after_answer(&bot, &mut outs, |jid| rooms.get(jid).is_some(), now);
                for out in outs {
                    tracing::debug!(?out, "sending");
                    send(&stream, out).await;
                }
            }
            None => {
                tracing::warn!("XMPP stream ended");
                break Ok(());
            }
        }
    };

    // Say goodbye: unavailable presence, then close the stream, within a bounded time. Offline,
    // there is nobody to say it to.
    if online {
        let goodbye = async {
            let mut token = stream.send(Box::new(Presence::unavailable().into())).await;
            token.wait_for(StanzaStage::Sent).await;
            stream.close().await;
        };
        if tokio::time::timeout(GOODBYE_TIMEOUT, goodbye)
            .await
            .is_err()
        {
            tracing::debug!("XMPP goodbye did not complete in time");
        }
    }
    tracing::info!("disconnected from the XMPP server");
    outcome
}

/// Queues `stanza` for sending, with a message id where one is missing. Queuing only waits when
/// the outgoing queue is full, and never longer than [`SEND_TIMEOUT`].
async fn send(stream: &StanzaStream, mut stanza: Stanza) {
    // XEP-0115 §4 and XEP-0153 §4.1: caps and the avatar hash in every available presence,
    // one-to-one and in rooms.
    if let Stanza::Presence(presence) = &mut stanza {
        identity::decorate(presence);
    }
    if let Stanza::Message(message) = &mut stanza {
        message
            .id
            .get_or_insert_with(|| MessageId(format!("{:x}", rand::random::<u64>())));
    }
    if tokio::time::timeout(SEND_TIMEOUT, stream.send(Box::new(stanza)))
        .await
        .is_err()
    {
        tracing::warn!(
            "the outgoing XMPP queue stayed full for {SEND_TIMEOUT:?}: dropped a stanza"
        );
    }
}

/// An alert message: a chat to the contact's bare JID, so it reaches whichever client is
/// online (or waits in the server's offline storage); to everyone in the room for a room's
/// alert or announcement.
fn alert_message(notice: Notice, rooms: &Rooms) -> Stanza {
    if let Some(room) = BareJid::from_str(&notice.to)
        .ok()
        .filter(|room| rooms.get(room).is_some())
    {
        return room::room_message(&room, &notice.text);
    }
    let to = BareJid::from_str(&notice.to).map(Jid::from);
    match to {
        Ok(to) => Message::new_with_type(MessageType::Chat, Some(to))
            .with_body(Default::default(), notice.text)
            .into(),
        // Contacts come from stanzas' `from`, so this cannot happen; an empty message to the
        // server is harmless.
        Err(_) => Message::new(None).into(),
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at.into()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replies "reply to BODY", stays silent for "quiet", and lets anyone but eve subscribe.
    struct Echo;

    impl Handler for Echo {
        fn chat(&self, _from: &BareJid, body: &str) -> Option<String> {
            (body != "quiet").then(|| format!("reply to {body}"))
        }

        fn may_subscribe(&self, from: &BareJid) -> bool {
            from.as_str() != "eve@localhost"
        }

        fn room_chat(&self, room: &BareJid, real: Option<&BareJid>, body: &str) -> Option<String> {
            let who = real.map_or("someone", |jid| jid.as_str());
            (body != "quiet").then(|| format!("{who} in {room} asked {body}"))
        }

        fn may_invite(&self, inviter: &BareJid, _room: &BareJid) -> bool {
            inviter.as_str() == "alice@localhost"
        }
    }

    fn bot() -> BareJid {
        BareJid::from_str("bot@localhost").unwrap()
    }

    fn parse(xml: &str) -> Stanza {
        let element: Element = xml.parse().unwrap();
        match element.name() {
            "message" => Message::try_from(element).unwrap().into(),
            "iq" => Iq::try_from(element).unwrap().into(),
            "presence" => Presence::try_from(element).unwrap().into(),
            other => panic!("not a stanza: {other}"),
        }
    }

    fn xml(stanza: Stanza) -> String {
        let element: Element = match stanza {
            Stanza::Message(m) => m.into(),
            Stanza::Iq(i) => i.into(),
            Stanza::Presence(p) => p.into(),
        };
        String::from(&element)
    }

    fn answer(incoming: &str) -> Vec<String> {
        respond(parse(incoming), &bot(), &Echo)
            .into_iter()
            .map(xml)
            .collect()
    }

    #[test]
    fn chat_message_gets_the_reply_in_the_same_thread() {
        let out = answer(
            "<message xmlns='jabber:client' type='chat' from='alice@localhost/phone' id='m1'>\
             <body> temp? </body><thread>t1</thread></message>",
        );
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out[0].contains("to='alice@localhost/phone'"), "{}", out[0]);
        assert!(out[0].contains("type='chat'"), "{}", out[0]);
        assert!(out[0].contains("<body>reply to temp?</body>"), "{}", out[0]);
        assert!(out[0].contains("<thread>t1</thread>"), "{}", out[0]);
    }

    #[test]
    fn normal_message_is_answered_too() {
        let out = answer(
            "<message xmlns='jabber:client' from='alice@localhost/x'><body>hi</body></message>",
        );
        assert_eq!(out.len(), 1);
        assert!(out[0].contains("<body>reply to hi</body>"));
    }

    #[test]
    fn receipt_request_is_acknowledged_before_the_reply() {
        let out = answer(
            "<message xmlns='jabber:client' type='chat' from='alice@localhost/p' id='abc'>\
             <body>temp</body><request xmlns='urn:xmpp:receipts'/></message>",
        );
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(
            out[0].contains("<received xmlns='urn:xmpp:receipts' id='abc'/>"),
            "{}",
            out[0]
        );
        assert!(!out[0].contains("<body>"));
        assert!(out[1].contains("<body>reply to temp</body>"));
    }

    #[test]
    fn never_answers_what_could_loop() {
        for silent in [
            // Errors, group chats and headlines.
            "<message xmlns='jabber:client' type='error' from='alice@localhost/p'><body>x</body>\
             <error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>",
            "<message xmlns='jabber:client' type='groupchat' from='room@muc.localhost/a'><body>x</body></message>",
            "<message xmlns='jabber:client' type='headline' from='news@localhost'><body>x</body></message>",
            // Bodyless: a chat state, a receipt, an empty or blank body.
            "<message xmlns='jabber:client' type='chat' from='alice@localhost/p'>\
             <composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
            "<message xmlns='jabber:client' type='chat' from='alice@localhost/p'>\
             <received xmlns='urn:xmpp:receipts' id='1'/></message>",
            "<message xmlns='jabber:client' type='chat' from='alice@localhost/p'><body>  </body></message>",
            // From the bot's own account (another resource, or no resource).
            "<message xmlns='jabber:client' type='chat' from='bot@localhost/other'><body>x</body></message>",
            "<message xmlns='jabber:client' type='chat' from='bot@localhost'><body>x</body></message>",
            // No sender at all.
            "<message xmlns='jabber:client' type='chat'><body>x</body></message>",
            // IQ results and errors.
            "<iq xmlns='jabber:client' type='result' id='1' from='localhost'/>",
            "<iq xmlns='jabber:client' type='error' id='2' from='localhost'>\
             <error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
            // Presence that needs no answer.
            "<presence xmlns='jabber:client' from='alice@localhost/p'/>",
            "<presence xmlns='jabber:client' type='unavailable' from='alice@localhost/p'/>",
        ] {
            assert_eq!(answer(silent), Vec::<String>::new(), "answered {silent}");
        }
    }

    fn joined_lab() -> Rooms {
        let mut rooms = Rooms::new(
            [RoomJoin::parse("lab@conference.localhost", "bot").unwrap()],
            RoomTimings::default(),
        )
        .with_account(bot());
        rooms.join_all("", Instant::now());
        for presence in [
            "<presence xmlns='jabber:client' from='lab@conference.localhost/alice'>\
             <x xmlns='http://jabber.org/protocol/muc#user'>\
             <item affiliation='none' role='participant' jid='alice@localhost/p'/></x></presence>",
            "<presence xmlns='jabber:client' from='lab@conference.localhost/bot'>\
             <x xmlns='http://jabber.org/protocol/muc#user'>\
             <item affiliation='none' role='participant'/><status code='110'/></x></presence>",
        ] {
            assert!(respond_with_rooms(
                parse(presence),
                &bot(),
                &mut rooms,
                "",
                &Echo,
                Instant::now()
            )
            .is_empty());
        }
        rooms
    }

    fn in_room(rooms: &mut Rooms, xml: &str) -> Vec<String> {
        respond_with_rooms(parse(xml), &bot(), rooms, "", &Echo, Instant::now())
            .into_iter()
            .map(|s| String::from(&Element::from(s)))
            .collect()
    }

    #[test]
    fn in_a_room_it_answers_when_addressed_to_the_room_with_the_askers_nick() {
        let mut rooms = joined_lab();
        let out = in_room(
            &mut rooms,
            "<message xmlns='jabber:client' type='groupchat' from='lab@conference.localhost/alice' id='m1'>\
             <body>bot: temperature?</body><request xmlns='urn:xmpp:receipts'/></message>",
        );
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out[0].contains("type='groupchat'"), "{}", out[0]);
        assert!(
            out[0].contains("to='lab@conference.localhost'"),
            "{}",
            out[0]
        );
        assert!(
            out[0].contains(
                "<body>alice: alice@localhost in lab@conference.localhost asked temperature?</body>"
            ),
            "{}",
            out[0]
        );
        // Unaddressed chatter and the handler's silence: nothing.
        for silent in [
            "<message xmlns='jabber:client' type='groupchat' from='lab@conference.localhost/alice'>\
             <body>temperature?</body></message>",
            "<message xmlns='jabber:client' type='groupchat' from='lab@conference.localhost/alice'>\
             <body>bot: quiet</body></message>",
            "<message xmlns='jabber:client' type='error' from='lab@conference.localhost/alice'>\
             <body>bot: x</body></message>",
        ] {
            assert_eq!(in_room(&mut rooms, silent), Vec::<String>::new(), "{silent}");
        }
    }

    #[test]
    fn a_private_message_through_the_room_is_answered_privately() {
        let mut rooms = joined_lab();
        let out = in_room(
            &mut rooms,
            "<message xmlns='jabber:client' type='chat' from='lab@conference.localhost/carol'>\
             <body>list</body></message>",
        );
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out[0].contains("type='chat'"), "{}", out[0]);
        assert!(
            out[0].contains("to='lab@conference.localhost/carol'"),
            "{}",
            out[0]
        );
        // Carol's real JID is hidden.
        assert!(
            out[0].contains("<body>someone in lab@conference.localhost asked list</body>"),
            "{}",
            out[0]
        );
    }

    #[test]
    fn invitations_are_accepted_from_allowed_inviters_through_known_services() {
        let mut rooms = joined_lab();
        let accepted = |rooms: &mut Rooms, xml: &str| in_room(rooms, xml);
        // Mediated, through the bot's own domain's service, from alice: joined.
        let out = accepted(
            &mut rooms,
            "<message xmlns='jabber:client' from='class@conference.localhost'>\
             <x xmlns='http://jabber.org/protocol/muc#user'><invite from='alice@localhost/p'/></x>\
             <body>alice invited you</body></message>",
        );
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(
            out[0].contains("to='class@conference.localhost/bot'"),
            "{}",
            out[0]
        );
        // The same from eve, or from a service that could claim any inviter: ignored.
        for ignored in [
            "<message xmlns='jabber:client' from='eve@conference.localhost'>\
             <x xmlns='http://jabber.org/protocol/muc#user'><invite from='eve@localhost/p'/></x></message>",
            "<message xmlns='jabber:client' from='trap@muc.evil.example'>\
             <x xmlns='http://jabber.org/protocol/muc#user'><invite from='alice@localhost/p'/></x></message>",
            // Direct, from eve; and from an occupant whose real JID the room hides.
            "<message xmlns='jabber:client' from='eve@localhost/p'>\
             <x xmlns='jabber:x:conference' jid='eve@conference.localhost'/></message>",
            "<message xmlns='jabber:client' from='lab@conference.localhost/carol'>\
             <x xmlns='jabber:x:conference' jid='carol@conference.localhost'/></message>",
        ] {
            assert_eq!(accepted(&mut rooms, ignored), Vec::<String>::new(), "{ignored}");
        }
        // Direct, from alice herself, through the room where the bot sees her real JID.
        let out = accepted(
            &mut rooms,
            "<message xmlns='jabber:client' from='lab@conference.localhost/alice'>\
             <x xmlns='jabber:x:conference' jid='study@conference.localhost'/></message>",
        );
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(
            out[0].contains("to='study@conference.localhost/bot'"),
            "{}",
            out[0]
        );
    }

    #[test]
    fn messages_from_other_rooms_are_one_to_one_rules() {
        let mut rooms = joined_lab();
        // Not a configured room: a groupchat is never answered, as before.
        assert_eq!(
            in_room(
                &mut rooms,
                "<message xmlns='jabber:client' type='groupchat' from='other@conference.localhost/a'>\
                 <body>bot: x</body></message>"
            ),
            Vec::<String>::new()
        );
    }

    #[test]
    fn answers_ping() {
        let out = answer(
            "<iq xmlns='jabber:client' type='get' id='p1' from='localhost'>\
             <ping xmlns='urn:xmpp:ping'/></iq>",
        );
        assert_eq!(out.len(), 1);
        assert!(out[0].contains("type='result'"), "{}", out[0]);
        assert!(out[0].contains("id='p1'"), "{}", out[0]);
        assert!(out[0].contains("to='localhost'"), "{}", out[0]);
    }

    #[test]
    fn answers_disco_info_with_its_features() {
        let out = answer(
            "<iq xmlns='jabber:client' type='get' id='d1' from='alice@localhost/p'>\
             <query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
        );
        assert_eq!(out.len(), 1);
        let reply = Iq::try_from(out[0].parse::<Element>().unwrap()).unwrap();
        let Iq::Result {
            payload: Some(payload),
            id,
            ..
        } = reply
        else {
            panic!("not a result: {}", out[0]);
        };
        assert_eq!(id, "d1");
        let info = tokio_xmpp::parsers::disco::DiscoInfoResult::try_from(payload).unwrap();
        for feature in [
            ns::DISCO_INFO,
            ns::PING,
            ns::RECEIPTS,
            ns::VERSION,
            // XEP-0050 §2.1.
            "http://jabber.org/protocol/commands",
            super::super::sensordata::types::NS,
        ] {
            assert!(info.features.contains(feature), "missing {feature}");
        }
        assert_eq!(info.identities[0].category, "client");
        assert_eq!(info.identities[0].type_, "bot");
    }

    #[test]
    fn answers_disco_info_on_its_caps_node_with_the_same_answer() {
        let caps = identity::caps().unwrap();
        let ver = base64::prelude::Engine::encode(&base64::prelude::BASE64_STANDARD, &caps.ver);
        let node = format!("{}#{ver}", caps.node);
        let out = answer(&format!(
            "<iq xmlns='jabber:client' type='get' id='d2' from='alice@localhost/p'>\
             <query xmlns='http://jabber.org/protocol/disco#info' node='{node}'/></iq>"
        ));
        assert_eq!(out.len(), 1);
        assert!(out[0].contains("type='result'"), "{}", out[0]);
        assert!(out[0].contains(&format!("node='{node}'")), "{}", out[0]);
        for feature in identity::FEATURES {
            assert!(out[0].contains(&format!("var='{feature}'")), "{}", out[0]);
        }
    }

    #[test]
    fn answers_version() {
        let out = answer(
            "<iq xmlns='jabber:client' type='get' id='v1' from='alice@localhost/p'>\
             <query xmlns='jabber:iq:version'/></iq>",
        );
        assert!(out[0].contains("<name>mqtt2xmpp</name>"), "{}", out[0]);
    }

    #[test]
    fn unknown_requests_get_service_unavailable() {
        for request in [
            "<iq xmlns='jabber:client' type='get' id='u1' from='alice@localhost/p'>\
             <query xmlns='jabber:iq:last'/></iq>",
            "<iq xmlns='jabber:client' type='set' id='u1' from='alice@localhost/p'>\
             <ping xmlns='urn:xmpp:ping'/></iq>",
            "<iq xmlns='jabber:client' type='get' id='u1' from='alice@localhost/p'>\
             <query xmlns='http://jabber.org/protocol/disco#info' node='x'/></iq>",
        ] {
            let out = answer(request);
            assert_eq!(out.len(), 1);
            assert!(out[0].contains("type='error'"), "{}", out[0]);
            assert!(out[0].contains("id='u1'"), "{}", out[0]);
            assert!(out[0].contains("<service-unavailable"), "{}", out[0]);
        }
    }

    #[test]
    fn roster_push_is_acknowledged() {
        let out = answer(
            "<iq xmlns='jabber:client' type='set' id='r1'>\
             <query xmlns='jabber:iq:roster'><item jid='alice@localhost'/></query></iq>",
        );
        assert_eq!(out.len(), 1);
        assert!(out[0].contains("type='result'"), "{}", out[0]);
        assert!(!out[0].contains("<query"), "{}", out[0]);
    }

    #[test]
    fn subscription_requests_are_approved() {
        let out =
            answer("<presence xmlns='jabber:client' type='subscribe' from='alice@localhost/p'/>");
        assert_eq!(out.len(), 1);
        assert!(out[0].contains("type='subscribed'"), "{}", out[0]);
        assert!(out[0].contains("to='alice@localhost'"), "{}", out[0]);
    }

    #[test]
    fn a_silent_handler_means_no_reply_and_no_receipt() {
        let out = answer(
            "<message xmlns='jabber:client' type='chat' from='alice@localhost/p' id='abc'>\
             <body>quiet</body><request xmlns='urn:xmpp:receipts'/></message>",
        );
        assert_eq!(out, Vec::<String>::new());
    }

    #[test]
    fn subscription_requests_from_strangers_are_declined() {
        let out =
            answer("<presence xmlns='jabber:client' type='subscribe' from='eve@localhost/p'/>");
        assert_eq!(out.len(), 1);
        assert!(out[0].contains("type='unsubscribed'"), "{}", out[0]);
    }

    #[test]
    fn presence_updates_are_throttled_and_never_repeat_a_status() {
        let interval = Duration::from_secs(60);
        let mut throttle = PresenceThrottle::new(interval);
        let t0 = Instant::now();
        assert_eq!(throttle.due(), None, "nothing changed yet");
        throttle.sent("21 °C".into(), t0);
        // A burst of readings: one update, at the end of the interval.
        for _ in 0..100 {
            throttle.changed();
        }
        assert_eq!(throttle.due(), Some(t0 + interval));
        assert_eq!(
            throttle.take("22 °C".into(), t0 + interval),
            Some("22 °C".into())
        );
        assert_eq!(throttle.due(), None);
        throttle.changed();
        assert_eq!(throttle.due(), Some(t0 + interval * 2));
        // The same value again: nothing to send, and nothing due afterwards.
        assert_eq!(throttle.take("22 °C".into(), t0 + interval * 2), None);
        assert_eq!(throttle.due(), None);
    }

    #[test]
    fn available_presence_carries_the_status() {
        let p: Element = available("Ask me").into();
        assert!(String::from(&p).contains("<status>Ask me</status>"));
    }
}
