//! A room's configuration (XEP-0045 §10.2): what its owners set through the `muc#roomconfig`
//! form, with the defaults of an instant room (§10.1.2). The room consults it on every join,
//! message and presence it sends; the owner's form (`owner.rs`) reads and writes it, and the
//! store keeps it as JSON for persistent rooms.
//!
//! The form's fields are XEP-0045's registered `muc#roomconfig_*` names (§15.5.3), the ones
//! Prosody and ejabberd use too; the history length is Prosody's
//! `muc#roomconfig_historylength`, and the older `muc#maxhistoryfetch` is accepted on submit.
//! Every value is bounded: by the service's limits (occupants, history) or by the constants
//! below, so that an owner cannot make the server keep or send more than it allows.

use serde::{Deserialize, Serialize};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::stanza_error::DefinedCondition;

use crate::server::limits::MucLimits;

/// The form's `FORM_TYPE` (XEP-0045 §15.5.3).
pub const FORM_TYPE: &str = "http://jabber.org/protocol/muc#roomconfig";
/// Most fields a submitted form may have: this form has 14; a client sends at most those
/// plus a few of other servers' fields. More is refused with `not-acceptable`.
pub const MAX_FORM_FIELDS: usize = 64;
/// Most values one field may have (none of these fields has more than one).
const MAX_FIELD_VALUES: usize = 4;
/// Longest room name, in characters.
pub const MAX_NAME_CHARS: usize = 128;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1024;
/// Longest password, in characters.
pub const MAX_PASSWORD_CHARS: usize = 256;

/// Who may see the occupants' real JIDs (`muc#roomconfig_whois`, §10.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Whois {
    /// Moderators only: a semi-anonymous room (§7.2.3).
    Moderators,
    /// Every occupant: a non-anonymous room (§7.2.4).
    Anyone,
}

impl Whois {
    fn as_str(self) -> &'static str {
        match self {
            Whois::Moderators => "moderators",
            Whois::Anyone => "anyone",
        }
    }
}

/// One room's configuration. The defaults are the configuration an instant room gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Messages of history replayed to a joiner (`muc#roomconfig_historylength`), never more
    /// than the service's limit.
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

    /// The same configuration, brought within `limits` (a stored room's, after the service's
    /// limits were lowered).
    pub fn bounded(mut self, limits: &MucLimits) -> Self {
        self.max_occupants = self.max_occupants.clamp(1, limits.max_occupants.max(1));
        self.max_history = self.max_history.min(limits.max_history);
        self
    }

    /// The configuration form an owner gets (§10.2, example 163), filled with this
    /// configuration; the choices offered stay within `limits`.
    pub fn form(&self, limits: &MucLimits) -> Element {
        let mut maxusers: Vec<String> = [10, 20, 30, 50, 100, 200, 500, 1000]
            .into_iter()
            .filter(|n| *n < limits.max_occupants)
            .map(|n| n.to_string())
            .collect();
        maxusers.push(limits.max_occupants.to_string());
        if !maxusers.contains(&self.max_occupants.to_string()) {
            maxusers.push(self.max_occupants.to_string());
        }
        let fields = vec![
            field("FORM_TYPE", "hidden", None, &[FORM_TYPE]),
            field(
                "muc#roomconfig_roomname",
                "text-single",
                Some("Name"),
                &[&self.name],
            ),
            field(
                "muc#roomconfig_roomdesc",
                "text-single",
                Some("Description"),
                &[&self.description],
            ),
            boolean(
                "muc#roomconfig_persistentroom",
                "Keep the room when it is empty, and across restarts",
                self.persistent,
            ),
            boolean(
                "muc#roomconfig_publicroom",
                "List the room in the service's room list",
                self.public,
            ),
            boolean(
                "muc#roomconfig_membersonly",
                "Only members may join",
                self.members_only,
            ),
            boolean(
                "muc#roomconfig_passwordprotectedroom",
                "Joining needs a password",
                self.password.is_some(),
            ),
            field(
                "muc#roomconfig_roomsecret",
                "text-private",
                Some("Password"),
                &[self.password.as_deref().unwrap_or_default()],
            ),
            boolean(
                "muc#roomconfig_moderatedroom",
                "Only participants may speak (moderated)",
                self.moderated,
            ),
            with_options(
                field(
                    "muc#roomconfig_whois",
                    "list-single",
                    Some("Who may see the occupants' real addresses"),
                    &[self.whois.as_str()],
                ),
                &[("Moderators", "moderators"), ("Anyone", "anyone")],
            ),
            with_options(
                field(
                    "muc#roomconfig_maxusers",
                    "list-single",
                    Some("Most occupants"),
                    &[&self.max_occupants.to_string()],
                ),
                &maxusers
                    .iter()
                    .map(|n| (n.as_str(), n.as_str()))
                    .collect::<Vec<_>>(),
            ),
            boolean(
                "muc#roomconfig_changesubject",
                "Occupants may change the subject",
                self.change_subject,
            ),
            boolean(
                "muc#roomconfig_allowinvites",
                "Occupants may invite others",
                self.allow_invites,
            ),
            field(
                "muc#roomconfig_historylength",
                "text-single",
                Some(&format!(
                    "Messages of history a joiner gets (at most {})",
                    limits.max_history
                )),
                &[&self.max_history.to_string()],
            ),
        ];
        Element::builder("x", ns::DATA_FORMS)
            .attr(ncname!("type"), "form")
            .append(
                Element::builder("title", ns::DATA_FORMS)
                    .append("Room configuration")
                    .build(),
            )
            .append_all(fields)
            .build()
    }

    /// This configuration changed by the submitted form `x` (`type='submit'`, §10.2): the
    /// fields it has are changed, the others stay. A field with a value out of bounds, or a
    /// form with more than [`MAX_FORM_FIELDS`] fields, is `not-acceptable`; a value that is not
    /// of the field's type (a boolean that is not one) or another form's `FORM_TYPE` is
    /// `bad-request`. Fields this service does not know are ignored (XEP-0004 §3.3).
    pub fn submitted(&self, x: &Element, limits: &MucLimits) -> Result<Self, DefinedCondition> {
        let fields: Vec<&Element> = x
            .children()
            .filter(|c| c.is("field", ns::DATA_FORMS))
            .collect();
        if fields.len() > MAX_FORM_FIELDS {
            return Err(DefinedCondition::NotAcceptable);
        }
        let mut new = self.clone();
        // Set when the form says whether there is a password, decided after the secret.
        let mut protected = None;
        let mut secret = None;
        for field in fields {
            let values: Vec<String> = field
                .children()
                .filter(|c| c.is("value", ns::DATA_FORMS))
                .take(MAX_FIELD_VALUES + 1)
                .map(Element::text)
                .collect();
            if values.len() > MAX_FIELD_VALUES {
                return Err(DefinedCondition::NotAcceptable);
            }
            let value = values.first().map(String::as_str).unwrap_or_default();
            let flag = || parse_bool(value);
            match field.attr("var").unwrap_or_default() {
                "FORM_TYPE" if value != FORM_TYPE => return Err(DefinedCondition::BadRequest),
                "muc#roomconfig_roomname" => new.name = bounded_text(value, MAX_NAME_CHARS)?,
                "muc#roomconfig_roomdesc" => {
                    new.description = bounded_text(value, MAX_DESCRIPTION_CHARS)?
                }
                "muc#roomconfig_persistentroom" => new.persistent = flag()?,
                "muc#roomconfig_publicroom" => new.public = flag()?,
                "muc#roomconfig_membersonly" => new.members_only = flag()?,
                "muc#roomconfig_passwordprotectedroom" => protected = Some(flag()?),
                "muc#roomconfig_roomsecret" => {
                    secret = Some(bounded_text(value, MAX_PASSWORD_CHARS)?)
                }
                "muc#roomconfig_moderatedroom" => new.moderated = flag()?,
                "muc#roomconfig_whois" => {
                    new.whois = match value {
                        "moderators" => Whois::Moderators,
                        "anyone" => Whois::Anyone,
                        _ => return Err(DefinedCondition::NotAcceptable),
                    }
                }
                "muc#roomconfig_maxusers" => {
                    new.max_occupants = match value {
                        // XEP-0045 example 163 offers "none": as many as the service allows.
                        "none" | "" => limits.max_occupants,
                        n => bounded_number(n, 1, limits.max_occupants)?,
                    }
                }
                "muc#roomconfig_historylength" | "muc#maxhistoryfetch" => {
                    new.max_history = bounded_number(value, 0, limits.max_history)?
                }
                "muc#roomconfig_changesubject" => new.change_subject = flag()?,
                "muc#roomconfig_allowinvites" => new.allow_invites = flag()?,
                _ => {}
            }
        }
        // §10.2: the secret is only asked for when the room is password-protected; a form
        // that leaves the switch out sets or clears the password by the secret alone.
        new.password = match (protected, secret) {
            (Some(false), _) => None,
            (Some(true), Some(secret)) if !secret.is_empty() => Some(secret),
            (Some(true), Some(_)) => return Err(DefinedCondition::NotAcceptable),
            (Some(true), None) => match &self.password {
                Some(password) => Some(password.clone()),
                None => return Err(DefinedCondition::NotAcceptable),
            },
            (None, Some(secret)) => Some(secret).filter(|s| !s.is_empty()),
            (None, None) => self.password.clone(),
        };
        Ok(new)
    }
}

/// A form field with `values`.
fn field(var: &str, kind: &str, label: Option<&str>, values: &[&str]) -> Element {
    let mut field = Element::builder("field", ns::DATA_FORMS)
        .attr(ncname!("var"), var)
        .attr(ncname!("type"), kind);
    if let Some(label) = label {
        field = field.attr(ncname!("label"), label);
    }
    field
        .append_all(
            values
                .iter()
                .map(|v| Element::builder("value", ns::DATA_FORMS).append(*v).build()),
        )
        .build()
}

/// A boolean form field (XEP-0004 §3.3: `1` or `0`).
fn boolean(var: &str, label: &str, value: bool) -> Element {
    field(
        var,
        "boolean",
        Some(label),
        &[if value { "1" } else { "0" }],
    )
}

/// `field` with the `(label, value)` options of a list.
fn with_options(mut field: Element, options: &[(&str, &str)]) -> Element {
    for (label, value) in options {
        field.append_child(
            Element::builder("option", ns::DATA_FORMS)
                .attr(ncname!("label"), *label)
                .append(
                    Element::builder("value", ns::DATA_FORMS)
                        .append(*value)
                        .build(),
                )
                .build(),
        );
    }
    field
}

/// A boolean value (XEP-0004 §3.3: `0`, `1`, `false`, `true`).
fn parse_bool(value: &str) -> Result<bool, DefinedCondition> {
    match value.trim() {
        "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(DefinedCondition::BadRequest),
    }
}

/// `value` if it has at most `max` characters and no control characters.
fn bounded_text(value: &str, max: usize) -> Result<String, DefinedCondition> {
    if value.chars().count() > max || value.chars().any(char::is_control) {
        return Err(DefinedCondition::NotAcceptable);
    }
    Ok(value.to_string())
}

/// `value` as a number from `min` to `max`.
fn bounded_number(value: &str, min: usize, max: usize) -> Result<usize, DefinedCondition> {
    match value.trim().parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        Ok(_) => Err(DefinedCondition::NotAcceptable),
        Err(_) => Err(DefinedCondition::BadRequest),
    }
}
