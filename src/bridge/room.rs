//! The bot in multi-user chat rooms (XEP-0045). tokio-xmpp has no MUC client layer, so the bot
//! joins with presence stanzas itself and keeps, per room, the nick it has and the occupants'
//! real JIDs when the room shows them.
//!
//! - [`RoomJoin`]: one `--room ROOM@SERVICE[/NICK]`.
//! - [`Rooms::join_all`]: the join presences, sent on every (re)connection (§7.2.1), asking for
//!   no discussion history (§7.2.14) so the bot has nothing old to ignore.
//! - [`Rooms::presence`]: joined (self-presence, status 110, §7.2.3), a nick conflict (§7.2.9:
//!   retry with a suffix), or a refusal (§7.2.6 registration-required, §7.2.7 forbidden: give up
//!   on that room); other occupants' presence keeps their real JIDs (§7.2.4).
//! - [`decide`]: whether a room message is for the bot, pure. The bot answers a groupchat
//!   message (§7.4) only when addressed — its nick at the start followed by `:` or `,`, or
//!   `@nick` anywhere — and a private message through its room JID (§7.5) always; it never
//!   answers delayed messages (history replay, XEP-0203), its own messages, the room's own
//!   messages (no resource), or bodyless ones.
//!
//! Not yet: self-ping (XEP-0410) and rejoining with backoff after a silent removal, a kick, a ban
//! or a destroyed room (the bot now rejoins only on reconnecting); alerts posted to a room; the
//! room presence following the default reading; invitations; a guard against two bots
//! answering each other's `@nick` mentions beyond the per-room rate limit.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use tokio_xmpp::jid::{BareJid, FullJid, Jid, ResourcePart};
use tokio_xmpp::parsers::{
    delay::Delay,
    message::{Message, MessageType},
    muc::{
        muc::{History, Muc},
        user::{MucUser, Status},
    },
    presence::{Presence, Type as PresenceType},
    stanza_error::{DefinedCondition, StanzaError},
};
use tokio_xmpp::Stanza;

/// Nick-conflict retries before the bot gives up on a room.
pub const MAX_NICK_ATTEMPTS: u32 = 5;

/// Most occupants whose real JIDs the bot remembers per room; further ones count as hidden.
pub const MAX_OCCUPANTS: usize = 10_000;

/// One `--room` value: the room's bare JID and the nick the bot asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomJoin {
    /// `room@service`.
    pub room: BareJid,
    /// The nick the bot asks for first.
    pub nick: String,
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
    /// Join presence sent, no self-presence yet.
    Joining,
    /// In the room.
    Joined,
    /// The room refused the bot for good (until the next reconnection).
    GaveUp,
}

/// One room the bot is configured for.
#[derive(Debug, Clone)]
pub struct Room {
    /// Where and under which nick.
    pub join: RoomJoin,
    /// The nick currently asked for or held.
    pub nick: String,
    /// Nick-conflict retries so far.
    attempts: u32,
    /// Where the bot stands.
    pub state: RoomState,
    /// Occupants by nick, with their real bare JID when the room shows it.
    occupants: HashMap<String, Option<BareJid>>,
}

impl Room {
    fn new(join: RoomJoin) -> Self {
        Self {
            nick: join.nick.clone(),
            join,
            attempts: 0,
            state: RoomState::Joining,
            occupants: HashMap::new(),
        }
    }

    /// The real bare JID of the occupant `nick`, when the room shows it.
    pub fn real_jid(&self, nick: &str) -> Option<&BareJid> {
        self.occupants.get(nick).and_then(Option::as_ref)
    }

    fn join_presence(&self, status: &str) -> Option<Stanza> {
        let resource = ResourcePart::new(&self.nick).ok()?;
        let to = FullJid::from_parts(self.join.room.node(), self.join.room.domain(), &resource);
        let mut presence = Presence::available()
            .with_to(to)
            // §7.2.14: no history, so nothing old is mistaken for a question.
            .with_payloads(vec![Muc::new()
                .with_history(History::new().with_maxstanzas(0))
                .into()]);
        presence
            .statuses
            .insert(Default::default(), status.to_string());
        Some(presence.into())
    }
}

/// The rooms of `--room`, and what the bot knows of each.
#[derive(Debug, Clone, Default)]
pub struct Rooms {
    rooms: Vec<Room>,
}

impl Rooms {
    /// The configured rooms, none joined yet.
    pub fn new(joins: impl IntoIterator<Item = RoomJoin>) -> Self {
        Self {
            rooms: joins.into_iter().map(Room::new).collect(),
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

    fn get_mut(&mut self, room: &BareJid) -> Option<&mut Room> {
        self.rooms.iter_mut().find(|r| r.join.room == *room)
    }

    /// A fresh connection: every room is joined again from the first nick, showing `status`.
    pub fn join_all(&mut self, status: &str) -> Vec<Stanza> {
        let mut out = Vec::new();
        for room in &mut self.rooms {
            *room = Room::new(room.join.clone());
            match room.join_presence(status) {
                Some(presence) => {
                    tracing::info!(room = %room.join.room, nick = %room.nick, "joining room");
                    out.push(presence);
                }
                None => {
                    room.state = RoomState::GaveUp;
                    tracing::warn!(room = %room.join, "cannot join room: the nick is not a valid resource");
                }
            }
        }
        out
    }

    /// Handles a presence from a configured room: `None` when it is from no such room (the
    /// caller handles it), otherwise the stanzas to send (a retry after a nick conflict).
    pub fn presence(&mut self, presence: &Presence, status: &str) -> Option<Vec<Stanza>> {
        let from = presence.from.as_ref()?;
        let room = self.get_mut(&from.to_bare())?;
        let nick = from.resource().map(|r| r.to_string());
        let user = presence
            .payloads
            .iter()
            .find_map(|p| MucUser::try_from(p.clone()).ok());
        let mut out = Vec::new();
        match presence.type_ {
            PresenceType::Error => {
                let error = presence
                    .payloads
                    .iter()
                    .find_map(|p| StanzaError::try_from(p.clone()).ok());
                let condition = error.as_ref().map(|e| e.defined_condition.clone());
                if room.state == RoomState::Joined {
                    tracing::warn!(room = %room.join.room, ?condition, "error from a joined room");
                    return Some(out);
                }
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
                        match room.join_presence(status) {
                            Some(join) => out.push(join),
                            None => {
                                room.state = RoomState::GaveUp;
                                tracing::error!(
                                    room = %room.join.room,
                                    "could not join room: no other nick fits; giving up on it"
                                );
                            }
                        }
                    }
                    _ => {
                        room.state = RoomState::GaveUp;
                        let text = error
                            .as_ref()
                            .and_then(|e| e.texts.values().next().cloned())
                            .unwrap_or_default();
                        tracing::error!(
                            room = %room.join.room,
                            nick = %room.nick,
                            ?condition,
                            text,
                            "could not join room; giving up on it until the next reconnection"
                        );
                    }
                }
            }
            PresenceType::Unavailable => {
                let Some(nick) = nick else { return Some(out) };
                let own = user
                    .as_ref()
                    .is_some_and(|u| u.status.contains(&Status::SelfPresence));
                if own || nick == room.nick {
                    if room.state == RoomState::Joined {
                        room.state = RoomState::GaveUp;
                        tracing::warn!(room = %room.join.room, "left the room (removed by the room)");
                    }
                } else {
                    room.occupants.remove(&nick);
                }
            }
            PresenceType::None => {
                let Some(nick) = nick else { return Some(out) };
                let own = user
                    .as_ref()
                    .is_some_and(|u| u.status.contains(&Status::SelfPresence));
                if own {
                    if room.state != RoomState::Joined {
                        room.state = RoomState::Joined;
                        // §7.2.3/210: the room may have changed the nick.
                        room.nick = nick;
                        tracing::info!(
                            room = %room.join.room,
                            nick = %room.nick,
                            "joined room: answering when addressed"
                        );
                    }
                } else {
                    let real = user
                        .as_ref()
                        .and_then(|u| u.items.iter().find_map(|i| i.jid.as_ref()))
                        .map(|jid| jid.clone().into_bare());
                    if room.occupants.len() < MAX_OCCUPANTS || room.occupants.contains_key(&nick) {
                        room.occupants.insert(nick, real);
                    }
                }
            }
            _ => {}
        }
        Some(out)
    }
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
        .any(|p| Delay::try_from(p.clone()).is_ok())
    {
        return Decision::Ignore("delayed (history)");
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

/// The groupchat answer to `nick` in `room`: prefixed with the asker's nick, so everyone sees
/// whom it answers.
pub fn public_answer(room: &BareJid, nick: &str, text: &str) -> Stanza {
    Message::new_with_type(MessageType::Groupchat, Some(Jid::from(room.clone())))
        .with_body(Default::default(), format!("{nick}: {text}"))
        .into()
}

/// The private answer to occupant `nick` through `room` (§7.5).
pub fn private_answer(room: &BareJid, nick: &str, text: &str) -> Option<Stanza> {
    let resource = ResourcePart::new(nick).ok()?;
    let to = FullJid::from_parts(room.node(), room.domain(), &resource);
    Some(
        Message::new_with_type(MessageType::Chat, Some(Jid::from(to)))
            .with_body(Default::default(), text.to_string())
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_xmpp::minidom::Element;

    fn message(xml: &str) -> Message {
        Message::try_from(xml.parse::<Element>().unwrap()).unwrap()
    }

    fn presence(xml: &str) -> Presence {
        Presence::try_from(xml.parse::<Element>().unwrap()).unwrap()
    }

    fn xml(stanza: &Stanza) -> String {
        String::from(&Element::from(stanza))
    }

    fn lab() -> Rooms {
        Rooms::new([RoomJoin::parse("lab@conference.localhost", "bot").unwrap()])
    }

    fn room_jid() -> BareJid {
        BareJid::from_str("lab@conference.localhost").unwrap()
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
            ("<message xmlns='jabber:client' type='groupchat' from='lab@conference.localhost/bot'>\
              <body>bot: temperature?</body></message>", "the bot's own message"),
            ("<message xmlns='jabber:client' type='groupchat' from='lab@conference.localhost'>\
              <body>bot: temperature?</body></message>", "from the room itself"),
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
    fn joins_with_no_history_and_logs_the_self_presence() {
        let mut rooms = lab();
        let out = rooms.join_all("21 °C");
        assert_eq!(out.len(), 1);
        let join = xml(&out[0]);
        assert!(join.contains("to='lab@conference.localhost/bot'"), "{join}");
        assert!(
            join.contains("<x xmlns='http://jabber.org/protocol/muc'>"),
            "{join}"
        );
        assert!(join.contains("maxstanzas='0'"), "{join}");
        assert!(join.contains("<status>21 °C</status>"), "{join}");
        assert_eq!(rooms.get(&room_jid()).unwrap().state, RoomState::Joining);
        // Another occupant, with the real JID shown, then the bot's own presence (110).
        rooms.presence(&presence(
            "<presence xmlns='jabber:client' from='lab@conference.localhost/alice'>\
             <x xmlns='http://jabber.org/protocol/muc#user'>\
             <item affiliation='none' role='participant' jid='alice@localhost/phone'/></x></presence>",
        ), "").unwrap();
        rooms
            .presence(
                &presence(
                    "<presence xmlns='jabber:client' from='lab@conference.localhost/hidden'>\
             <x xmlns='http://jabber.org/protocol/muc#user'>\
             <item affiliation='none' role='participant'/></x></presence>",
                ),
                "",
            )
            .unwrap();
        let out = rooms
            .presence(
                &presence(
                    "<presence xmlns='jabber:client' from='lab@conference.localhost/bot'>\
             <x xmlns='http://jabber.org/protocol/muc#user'>\
             <item affiliation='none' role='participant'/><status code='110'/></x></presence>",
                ),
                "",
            )
            .unwrap();
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
        ), "").unwrap();
        assert_eq!(rooms.get(&room_jid()).unwrap().real_jid("alice"), None);
        // A presence from elsewhere is not the rooms' business.
        assert!(rooms
            .presence(
                &presence("<presence xmlns='jabber:client' from='alice@localhost/x'/>"),
                ""
            )
            .is_none());
    }

    #[test]
    fn a_nick_conflict_retries_with_a_suffix_then_gives_up() {
        let mut rooms = lab();
        rooms.join_all("");
        let conflict = presence(
            "<presence xmlns='jabber:client' type='error' from='lab@conference.localhost/bot'>\
             <x xmlns='http://jabber.org/protocol/muc'/>\
             <error type='cancel'><conflict xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>",
        );
        let out = rooms.presence(&conflict, "").unwrap();
        assert_eq!(out.len(), 1);
        assert!(
            xml(&out[0]).contains("to='lab@conference.localhost/bot-2'"),
            "{}",
            xml(&out[0])
        );
        for _ in 2..MAX_NICK_ATTEMPTS {
            assert_eq!(rooms.presence(&conflict, "").unwrap().len(), 1);
        }
        assert!(rooms.presence(&conflict, "").unwrap().is_empty());
        assert_eq!(rooms.get(&room_jid()).unwrap().state, RoomState::GaveUp);
        // A reconnection starts over from the first nick.
        let out = rooms.join_all("");
        assert!(xml(&out[0]).contains("to='lab@conference.localhost/bot'"));
    }

    #[test]
    fn a_refused_join_gives_up_on_the_room() {
        for condition in ["forbidden", "registration-required", "not-authorized"] {
            let mut rooms = lab();
            rooms.join_all("");
            let refused = presence(&format!(
                "<presence xmlns='jabber:client' type='error' from='lab@conference.localhost/bot'>\
                 <error type='auth'><{condition} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>"
            ));
            assert!(
                rooms.presence(&refused, "").unwrap().is_empty(),
                "{condition}"
            );
            assert_eq!(rooms.get(&room_jid()).unwrap().state, RoomState::GaveUp);
        }
    }

    #[test]
    fn answers_are_addressed_to_the_asker() {
        let public = xml(&public_answer(&room_jid(), "alice", "21.5 °C"));
        assert!(public.contains("type='groupchat'"), "{public}");
        assert!(public.contains("to='lab@conference.localhost'"), "{public}");
        assert!(public.contains("<body>alice: 21.5 °C</body>"), "{public}");
        let private = xml(&private_answer(&room_jid(), "alice", "21.5 °C").unwrap());
        assert!(private.contains("type='chat'"), "{private}");
        assert!(
            private.contains("to='lab@conference.localhost/alice'"),
            "{private}"
        );
        assert!(private.contains("<body>21.5 °C</body>"), "{private}");
    }
}
