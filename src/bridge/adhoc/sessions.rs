//! Open command sessions (XEP-0050 §3.3: the responder keeps a multi-stage command's state
//! between requests under a `sessionid`). Pure: the caller passes the time.
//!
//! - A session belongs to the full JID that started it; a request from any other JID, even
//!   another resource of the same account, does not find it (`bad-sessionid`).
//! - A session lives [`LIFETIME`] (or the lifetime the bot was given) from its last request.
//! - A session that ended (completed, canceled, or timed out) is remembered as ended, by id and
//!   owner, so the owner going on with it is told `not-allowed` + `<session-expired/>`, which
//!   XEP-0050 §4.4 gives for "a sessionid that is no longer active (either because it was
//!   completed, canceled, or timed out)". The newest [`ENDED`] are remembered; an older one, one
//!   dropped by the bounds below, or another JID's is simply unknown (`bad-sessionid`).
//! - One contact (bare JID) holds at most [`PER_CONTACT`] sessions: starting one more drops that
//!   contact's oldest. Clients often close a form without sending `cancel`, so refusing new
//!   sessions would lock a user out for [`LIFETIME`]; dropping the oldest never does, and a
//!   contact opening sessions in a loop only ever holds [`PER_CONTACT`].
//! - All contacts together hold at most [`TOTAL`]; when full, expired ones are swept, and if
//!   none has expired the new session is refused (`resource-constraint`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::Kind;

/// How long a session waits for its next request, unless the bot is told otherwise.
pub const LIFETIME: Duration = Duration::from_secs(600);

/// Most open sessions per contact.
pub const PER_CONTACT: usize = 10;

/// Most open sessions in all.
pub const TOTAL: usize = 1000;

/// Most ended sessions remembered (ids and owners only).
pub const ENDED: usize = 1000;

/// What was entered so far: field name → values.
pub type Values = BTreeMap<String, Vec<String>>;

/// One open command.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// The full JID that started it.
    pub owner: String,
    /// The owner's bare JID, for the per-contact bound.
    pub contact: String,
    /// Which command.
    pub kind: Kind,
    /// The stage whose form the owner has in front of them.
    pub stage: usize,
    /// What the owner entered in the stages so far.
    pub values: Values,
    /// When it was opened (the oldest goes first).
    opened: Instant,
    /// When it expires unless used.
    expires: Instant,
}

impl Session {
    /// A session of `kind` opened by `owner` (full JID) of `contact` (bare JID) at `now`.
    pub fn new(owner: &str, contact: &str, kind: Kind, now: Instant) -> Self {
        Self {
            owner: owner.to_string(),
            contact: contact.to_string(),
            kind,
            stage: 0,
            values: Values::new(),
            opened: now,
            expires: now + LIFETIME,
        }
    }
}

/// Why a session was not found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// Never opened, already closed or dropped, or someone else's.
    Unknown,
    /// It was there, but ended: completed, canceled, or waited longer than its lifetime.
    Expired,
}

/// Every open session.
#[derive(Debug)]
pub struct Sessions {
    open: HashMap<String, Session>,
    /// How long a session waits for its next request.
    lifetime: Duration,
    /// Ended sessions: id → owner, and the ids oldest first (at most [`ENDED`]).
    ended: HashMap<String, String>,
    ended_order: VecDeque<String>,
}

impl Default for Sessions {
    fn default() -> Self {
        Self::with_lifetime(LIFETIME)
    }
}

impl Sessions {
    /// No sessions yet; each will wait `lifetime` for its next request.
    pub fn with_lifetime(lifetime: Duration) -> Self {
        Self {
            open: HashMap::new(),
            lifetime,
            ended: HashMap::new(),
            ended_order: VecDeque::new(),
        }
    }

    /// Keeps `session` under a new id, dropping its contact's oldest beyond [`PER_CONTACT`];
    /// `None` when [`TOTAL`] sessions are open and none has expired.
    pub fn open(&mut self, mut session: Session, now: Instant) -> Option<String> {
        session.expires = now + self.lifetime;
        let mine: Vec<(Instant, String)> = self
            .open
            .iter()
            .filter(|(_, s)| s.contact == session.contact)
            .map(|(id, s)| (s.opened, id.clone()))
            .collect();
        if mine.len() >= PER_CONTACT {
            let mut mine = mine;
            mine.sort();
            for (_, id) in mine.iter().take(mine.len() + 1 - PER_CONTACT) {
                self.open.remove(id);
            }
        }
        if self.open.len() >= TOTAL {
            self.open.retain(|_, s| s.expires > now);
            if self.open.len() >= TOTAL {
                return None;
            }
        }
        let id = new_id();
        self.open.insert(id.clone(), session);
        Some(id)
    }

    /// Takes the session `id` of `owner` out to work on it; [`Sessions::put`] puts it back.
    pub fn take(&mut self, id: &str, owner: &str, now: Instant) -> Result<Session, Missing> {
        match self.open.get(id) {
            Some(s) if s.owner != owner => Err(Missing::Unknown),
            Some(s) if s.expires <= now => {
                self.open.remove(id);
                self.end(id.to_string(), owner);
                Err(Missing::Expired)
            }
            Some(_) => self.open.remove(id).ok_or(Missing::Unknown),
            None if self.ended.get(id).is_some_and(|o| o == owner) => Err(Missing::Expired),
            None => Err(Missing::Unknown),
        }
    }

    /// Remembers that the session `id` of `owner` ended (completed or canceled after being
    /// taken out, or timed out), forgetting the oldest ended one beyond [`ENDED`].
    pub fn end(&mut self, id: String, owner: &str) {
        if self.ended.insert(id.clone(), owner.to_string()).is_none() {
            self.ended_order.push_back(id);
        }
        while self.ended_order.len() > ENDED {
            if let Some(oldest) = self.ended_order.pop_front() {
                self.ended.remove(&oldest);
            }
        }
    }

    /// Puts back a session taken out, good for another lifetime from `now`.
    pub fn put(&mut self, id: String, mut session: Session, now: Instant) {
        session.expires = now + self.lifetime;
        self.open.insert(id, session);
    }

    /// How many sessions `contact` has open (expired ones included until swept).
    #[cfg(test)]
    pub fn of(&self, contact: &str) -> usize {
        self.open.values().filter(|s| s.contact == contact).count()
    }

    /// How many are open in all.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.open.len()
    }
}

/// 128 random bits: not guessable by another contact (who could not use it anyway).
fn new_id() -> String {
    format!(
        "{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE_PHONE: &str = "alice@localhost/phone";

    fn session(owner: &str, now: Instant) -> Session {
        let contact = owner.split('/').next().unwrap_or(owner);
        Session::new(owner, contact, Kind::Stats, now)
    }

    #[test]
    fn a_session_is_found_by_its_owner_only() {
        let mut sessions = Sessions::default();
        let t0 = Instant::now();
        let id = sessions.open(session(ALICE_PHONE, t0), t0).unwrap();
        assert_eq!(
            sessions.take(&id, "alice@localhost/laptop", t0),
            Err(Missing::Unknown)
        );
        assert_eq!(
            sessions.take("nope", ALICE_PHONE, t0),
            Err(Missing::Unknown)
        );
        let found = sessions.take(&id, ALICE_PHONE, t0).unwrap();
        assert_eq!(found.kind, Kind::Stats);
        // Taken out: gone until put back.
        assert_eq!(sessions.take(&id, ALICE_PHONE, t0), Err(Missing::Unknown));
        sessions.put(id.clone(), found, t0);
        assert!(sessions.take(&id, ALICE_PHONE, t0).is_ok());
    }

    #[test]
    fn a_session_expires_after_its_lifetime_from_the_last_request() {
        let mut sessions = Sessions::default();
        let t0 = Instant::now();
        let id = sessions.open(session(ALICE_PHONE, t0), t0).unwrap();
        // Used just before expiring: good for another lifetime.
        let t1 = t0 + LIFETIME - Duration::from_secs(1);
        let s = sessions.take(&id, ALICE_PHONE, t1).unwrap();
        sessions.put(id.clone(), s, t1);
        let t2 = t1 + LIFETIME;
        assert_eq!(sessions.take(&id, ALICE_PHONE, t2), Err(Missing::Expired));
        // Remembered as ended: said again, but only to its owner.
        assert_eq!(sessions.take(&id, ALICE_PHONE, t2), Err(Missing::Expired));
        assert_eq!(
            sessions.take(&id, "alice@localhost/laptop", t2),
            Err(Missing::Unknown)
        );
        assert_eq!(sessions.len(), 0);
    }

    #[test]
    fn ended_sessions_are_remembered_up_to_a_bound() {
        let mut sessions = Sessions::default();
        let t0 = Instant::now();
        let first = sessions.open(session(ALICE_PHONE, t0), t0).unwrap();
        sessions.take(&first, ALICE_PHONE, t0).unwrap();
        sessions.end(first.clone(), ALICE_PHONE);
        assert_eq!(
            sessions.take(&first, ALICE_PHONE, t0),
            Err(Missing::Expired)
        );
        for i in 0..ENDED {
            sessions.end(format!("later{i}"), ALICE_PHONE);
        }
        assert_eq!(sessions.ended.len(), ENDED);
        assert_eq!(sessions.ended_order.len(), ENDED);
        assert_eq!(
            sessions.take(&first, ALICE_PHONE, t0),
            Err(Missing::Unknown)
        );
        assert_eq!(
            sessions.take("later0", ALICE_PHONE, t0),
            Err(Missing::Expired)
        );
    }

    #[test]
    fn a_session_lives_the_lifetime_it_was_given() {
        let minute = Duration::from_secs(60);
        let mut sessions = Sessions::with_lifetime(minute);
        let t0 = Instant::now();
        let id = sessions.open(session(ALICE_PHONE, t0), t0).unwrap();
        let t1 = t0 + minute - Duration::from_millis(1);
        let s = sessions.take(&id, ALICE_PHONE, t1).unwrap();
        sessions.put(id.clone(), s, t1);
        assert_eq!(
            sessions.take(&id, ALICE_PHONE, t1 + minute),
            Err(Missing::Expired)
        );
        // No lifetime at all: the next request already finds it expired.
        let mut sessions = Sessions::with_lifetime(Duration::ZERO);
        let id = sessions.open(session(ALICE_PHONE, t0), t0).unwrap();
        assert_eq!(sessions.take(&id, ALICE_PHONE, t0), Err(Missing::Expired));
    }

    #[test]
    fn a_contact_holds_at_most_per_contact_sessions_and_loses_the_oldest() {
        let mut sessions = Sessions::default();
        let t0 = Instant::now();
        let mut ids = Vec::new();
        for i in 0..1000u64 {
            let at = t0 + Duration::from_millis(i);
            ids.push(sessions.open(session(ALICE_PHONE, at), at).unwrap());
        }
        assert_eq!(sessions.of("alice@localhost"), PER_CONTACT);
        assert_eq!(sessions.len(), PER_CONTACT);
        let now = t0 + Duration::from_secs(1);
        // The newest are there, the oldest are not.
        assert!(sessions.take(&ids[999], ALICE_PHONE, now).is_ok());
        assert!(sessions
            .take(&ids[1000 - PER_CONTACT], ALICE_PHONE, now)
            .is_ok());
        assert_eq!(
            sessions.take(&ids[999 - PER_CONTACT], ALICE_PHONE, now),
            Err(Missing::Unknown)
        );
        assert_eq!(
            sessions.take(&ids[0], ALICE_PHONE, now),
            Err(Missing::Unknown)
        );
    }

    #[test]
    fn all_contacts_together_are_bounded_and_expired_sessions_make_room() {
        let mut sessions = Sessions::default();
        let t0 = Instant::now();
        for i in 0..TOTAL {
            let owner = format!("user{i}@localhost/x");
            assert!(sessions.open(session(&owner, t0), t0).is_some());
        }
        assert_eq!(sessions.open(session("late@localhost/x", t0), t0), None);
        assert_eq!(sessions.len(), TOTAL);
        let later = t0 + LIFETIME;
        assert!(sessions
            .open(session("late@localhost/x", later), later)
            .is_some());
        assert_eq!(sessions.len(), 1);
    }
}
