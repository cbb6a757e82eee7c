//! A room's configuration (XEP-0045 §10.2): what its owners set through the `muc#roomconfig`
//! form, with the defaults of an instant room (§10.1.2). The room consults it on every join,
//! message and presence it sends; the owner's form reads and writes it.

/// Who may see the occupants' real JIDs (`muc#roomconfig_whois`, §10.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(dead_code)] // Chosen through the owner's form.
pub enum Whois {
    /// Moderators only: a semi-anonymous room (§7.2.3).
    Moderators,
    /// Every occupant: a non-anonymous room (§7.2.4).
    Anyone,
}

/// One room's configuration. The defaults are the configuration an instant room gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomConfig {
    /// A natural-language name (`muc#roomconfig_roomname`); empty when not set.
    pub name: String,
    /// A short description (`muc#roomconfig_roomdesc`); empty when not set.
    pub description: String,
    /// Kept when the last occupant leaves, and across restarts (`muc#roomconfig_persistentroom`).
    pub persistent: bool,
    /// Listed in the service's disco#items (`muc#roomconfig_publicroom`).
    pub public: bool,
    /// Only members may join (`muc#roomconfig_membersonly`, §7.2.7).
    pub members_only: bool,
    /// Joining needs this password (`muc#roomconfig_roomsecret`, §7.2.6), if set.
    pub password: Option<String>,
    /// Only participants and moderators speak; visitors do not (`muc#roomconfig_moderatedroom`).
    pub moderated: bool,
    /// Who sees real JIDs (`muc#roomconfig_whois`).
    pub whois: Whois,
    /// Most occupants (`muc#roomconfig_maxusers`), never more than the service's limit.
    pub max_occupants: usize,
    /// Messages of history replayed to a joiner (`muc#maxhistoryfetch`), never more than the
    /// service's limit.
    pub max_history: usize,
    /// Occupants may change the subject (`muc#roomconfig_changesubject`).
    pub change_subject: bool,
    /// Occupants may invite others (`muc#roomconfig_allowinvites`).
    pub allow_invites: bool,
}

impl RoomConfig {
    /// An instant room's configuration (§10.1.2) within the service's limits: public, open,
    /// temporary, unmoderated, non-anonymous (why: see `room.rs`).
    pub fn instant(max_occupants: usize, max_history: usize) -> Self {
        Self {
            name: String::new(),
            description: String::new(),
            persistent: false,
            public: true,
            members_only: false,
            password: None,
            moderated: false,
            whois: Whois::Anyone,
            max_occupants,
            max_history,
            change_subject: true,
            allow_invites: true,
        }
    }
}
