//! The XEP-0050 `<command/>` element: a request from a client (§3.4) and the bot's answer.
//! xmpp-parsers 0.23 has no type for it, so this file parses and writes it with minidom; the
//! data form inside is xmpp-parsers' [`DataForm`].
//!
//! Bounds: a submitted form may carry at most [`MAX_FIELDS`] fields and [`MAX_VALUES`] values in
//! all; anything bigger is refused with `bad-request` + `<bad-payload/>` (§4.4) before any
//! command sees it.

use tokio_xmpp::minidom::rxml::xml_ncname;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::data_forms::{DataForm, DataFormType};
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};

/// The XEP-0050 namespace, also the disco node listing the commands (§2.2).
pub const NS: &str = "http://jabber.org/protocol/commands";

/// Most fields in a submitted form.
pub const MAX_FIELDS: usize = 64;

/// Most values in a submitted form, all fields together.
pub const MAX_VALUES: usize = 256;

/// An action (§3.4): what the requester wants done with the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Start, or take the stage's default action.
    Execute,
    /// On to the next stage.
    Next,
    /// Back to the previous stage.
    Prev,
    /// Finish with what was entered.
    Complete,
    /// Stop; the session is forgotten.
    Cancel,
}

impl Action {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "execute" => Self::Execute,
            "next" => Self::Next,
            "prev" => Self::Prev,
            "complete" => Self::Complete,
            "cancel" => Self::Cancel,
            _ => return None,
        })
    }

    /// The attribute value and element name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Execute => "execute",
            Self::Next => "next",
            Self::Prev => "prev",
            Self::Complete => "complete",
            Self::Cancel => "cancel",
        }
    }
}

/// A command's status in an answer (§3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Waiting for the requester's next submission.
    Executing,
    /// Done.
    Completed,
    /// Canceled by the requester.
    Canceled,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Self::Executing => "executing",
            Self::Completed => "completed",
            Self::Canceled => "canceled",
        }
    }
}

/// How a note reads (§3.4: `info`, `warn`, `error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteType {
    /// Informative.
    Info,
    /// A warning; the command went on.
    Warn,
    /// What was entered could not be used.
    Error,
}

/// A `<note/>` in an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// Its type.
    pub type_: NoteType,
    /// Its text.
    pub text: String,
}

impl Note {
    /// An `info` note.
    pub fn info(text: impl Into<String>) -> Self {
        Self {
            type_: NoteType::Info,
            text: text.into(),
        }
    }

    /// An `error` note.
    pub fn error(text: impl Into<String>) -> Self {
        Self {
            type_: NoteType::Error,
            text: text.into(),
        }
    }
}

/// A client's `<command/>` (§3.4).
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The command's node.
    pub node: String,
    /// The session, after the first request.
    pub sessionid: Option<String>,
    /// What to do; `execute` when absent.
    pub action: Action,
    /// The form filled in, if any.
    pub form: Option<DataForm>,
}

/// Why a `<command/>` could not be read; each maps to a §4.4 error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// No `node` attribute.
    NoNode,
    /// An `action` that is not one of §3.4's (`malformed-action`).
    MalformedAction,
    /// A form that is not a data form, or too big (`bad-payload`).
    BadPayload(&'static str),
}

impl Request {
    /// Reads `element`, which the caller checked is a `<command/>` in [`NS`].
    pub fn parse(element: &Element) -> Result<Self, RequestError> {
        let node = element
            .attr("node")
            .filter(|n| !n.is_empty())
            .ok_or(RequestError::NoNode)?
            .to_string();
        let action = match element.attr("action") {
            None => Action::Execute,
            Some(text) => Action::parse(text).ok_or(RequestError::MalformedAction)?,
        };
        let sessionid = element
            .attr("sessionid")
            .filter(|s| !s.is_empty())
            .map(String::from);
        let mut forms = element.children().filter(|c| c.is("x", ns::DATA_FORMS));
        let form = match forms.next() {
            None => None,
            Some(x) => {
                let fields = x.children().filter(|c| c.name() == "field").count();
                let values = x
                    .children()
                    .flat_map(|field| field.children())
                    .filter(|c| c.name() == "value")
                    .count();
                if fields > MAX_FIELDS || values > MAX_VALUES {
                    return Err(RequestError::BadPayload("the form has too many fields"));
                }
                let form = DataForm::try_from(x.clone())
                    .map_err(|_| RequestError::BadPayload("the form is not a valid data form"))?;
                Some(form)
            }
        };
        if forms.next().is_some() {
            return Err(RequestError::BadPayload("more than one form"));
        }
        if let Some(form) = &form {
            if !matches!(form.type_, DataFormType::Submit | DataFormType::Cancel) {
                return Err(RequestError::BadPayload(
                    "a submitted form must be of type submit",
                ));
            }
        }
        Ok(Self {
            node,
            sessionid,
            action,
            form,
        })
    }
}

/// The bot's `<command/>` in answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// The command's node.
    pub node: String,
    /// The session.
    pub sessionid: String,
    /// Where the command stands.
    pub status: Status,
    /// While executing: the actions allowed and the default one (§3.4 `<actions/>`).
    pub actions: Option<(Vec<Action>, Action)>,
    /// Notes.
    pub notes: Vec<Note>,
    /// A form to fill in, or a result.
    pub form: Option<Element>,
}

impl From<Response> for Element {
    fn from(response: Response) -> Element {
        let mut command = Element::builder("command", NS)
            .attr(xml_ncname!("node").into(), response.node)
            .attr(xml_ncname!("sessionid").into(), response.sessionid)
            .attr(xml_ncname!("status").into(), response.status.as_str())
            .build();
        if let Some((allowed, default)) = response.actions {
            let mut actions = Element::builder("actions", NS)
                .attr(xml_ncname!("execute").into(), default.as_str())
                .build();
            for action in allowed {
                actions.append_child(Element::builder(action.as_str(), NS).build());
            }
            command.append_child(actions);
        }
        for note in response.notes {
            let type_ = match note.type_ {
                NoteType::Info => "info",
                NoteType::Warn => "warn",
                NoteType::Error => "error",
            };
            command.append_child(
                Element::builder("note", NS)
                    .attr(xml_ncname!("type").into(), type_)
                    .append(note.text)
                    .build(),
            );
        }
        if let Some(form) = response.form {
            command.append_child(form);
        }
        command
    }
}

/// A §4.4 error: a general condition with, where the XEP names one, its specific one.
pub fn error(
    condition: DefinedCondition,
    specific: Option<&str>,
    text: impl Into<String>,
) -> Box<StanzaError> {
    let type_ = match condition {
        DefinedCondition::ResourceConstraint => ErrorType::Wait,
        DefinedCondition::BadRequest => ErrorType::Modify,
        DefinedCondition::Forbidden | DefinedCondition::NotAllowed => ErrorType::Cancel,
        _ => ErrorType::Cancel,
    };
    let mut error = StanzaError::new(type_, condition, "en", text);
    error.other = specific.map(|name| Element::builder(name, NS).build());
    Box::new(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(xml: &str) -> Result<Request, RequestError> {
        Request::parse(&xml.parse::<Element>().unwrap())
    }

    #[test]
    fn reads_the_xeps_execute_and_next_requests() {
        // §2.4.2, examples 10 and 12.
        let start = parse(
            "<command xmlns='http://jabber.org/protocol/commands' node='config' action='execute'/>",
        )
        .unwrap();
        assert_eq!(start.node, "config");
        assert_eq!(start.action, Action::Execute);
        assert_eq!(start.sessionid, None);
        let next = parse(
            "<command xmlns='http://jabber.org/protocol/commands' sessionid='config:20020923T213616Z-700'
                node='config'>
               <x xmlns='jabber:x:data' type='submit'>
                 <field var='mode'><value>3</value></field>
               </x>
             </command>",
        )
        .unwrap();
        assert_eq!(next.action, Action::Execute, "no action means execute");
        assert_eq!(
            next.sessionid.as_deref(),
            Some("config:20020923T213616Z-700")
        );
        assert_eq!(next.form.unwrap().fields[0].values, ["3"]);
    }

    #[test]
    fn refuses_what_is_not_a_request() {
        assert_eq!(
            parse("<command xmlns='http://jabber.org/protocol/commands'/>"),
            Err(RequestError::NoNode)
        );
        assert_eq!(
            parse("<command xmlns='http://jabber.org/protocol/commands' node='a' action='jump'/>"),
            Err(RequestError::MalformedAction)
        );
        for payload in [
            // A form that is not a submission, a broken form, two forms.
            "<x xmlns='jabber:x:data' type='form'/>",
            "<x xmlns='jabber:x:data'/>",
            "<x xmlns='jabber:x:data' type='submit'/><x xmlns='jabber:x:data' type='submit'/>",
        ] {
            let xml = format!(
                "<command xmlns='http://jabber.org/protocol/commands' node='a'>{payload}</command>"
            );
            assert!(
                matches!(parse(&xml), Err(RequestError::BadPayload(_))),
                "{payload}"
            );
        }
    }

    #[test]
    fn a_form_with_too_many_fields_is_refused_before_it_is_parsed() {
        let fields: String = (0..=MAX_FIELDS)
            .map(|i| format!("<field var='f{i}'><value>1</value></field>"))
            .collect();
        let xml = format!(
            "<command xmlns='http://jabber.org/protocol/commands' node='a'>\
             <x xmlns='jabber:x:data' type='submit'>{fields}</x></command>"
        );
        assert_eq!(
            parse(&xml),
            Err(RequestError::BadPayload("the form has too many fields"))
        );
        let values: String = (0..=MAX_VALUES).map(|_| "<value>1</value>").collect();
        let xml = format!(
            "<command xmlns='http://jabber.org/protocol/commands' node='a'>\
             <x xmlns='jabber:x:data' type='submit'><field var='f'>{values}</field></x></command>"
        );
        assert!(matches!(parse(&xml), Err(RequestError::BadPayload(_))));
    }

    #[test]
    fn writes_an_executing_answer_like_the_xeps_example() {
        // §2.4.2, example 11: actions, then notes, then the form.
        let element: Element = Response {
            node: "config".into(),
            sessionid: "s1".into(),
            status: Status::Executing,
            actions: Some((vec![Action::Prev, Action::Next], Action::Next)),
            notes: vec![Note::error("not a number")],
            form: Some(
                Element::builder("x", ns::DATA_FORMS)
                    .attr(xml_ncname!("type").into(), "form")
                    .build(),
            ),
        }
        .into();
        assert_eq!(
            String::from(&element),
            "<command xmlns='http://jabber.org/protocol/commands' node='config' \
             sessionid='s1' status='executing'><actions execute='next'><prev/><next/>\
             </actions><note type='error'>not a number</note>\
             <x xmlns='jabber:x:data' type='form'/></command>"
        );
    }

    #[test]
    fn errors_carry_the_xeps_specific_condition() {
        let e = error(DefinedCondition::BadRequest, Some("bad-sessionid"), "x");
        assert_eq!(e.type_, ErrorType::Modify);
        assert!(e.other.unwrap().is("bad-sessionid", NS));
    }
}
