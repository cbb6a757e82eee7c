//! Node configuration as XEP-0004 data forms (XEP-0060 §8.2, §16.4.4 `pubsub#node_config`), and
//! publish-options with their preconditions (XEP-0060 §7.1.5).
//!
//! One list of fields serves three purposes, so they cannot disagree: the form the owner gets
//! (and changes), what publish-options may ask for, and what a new node may be created with.
//! A client that meets `precondition-not-met` typically fetches the form, sets the fields it
//! wanted and submits it (nbxmpp does), which works only if every field it may send in
//! publish-options is in the form.
//!
//! - **publish-options** on an existing node are preconditions: the node's configuration
//!   with the options applied must be the node's configuration; otherwise `conflict` +
//!   `precondition-not-met`, and nothing is published (Prosody does the same). A field this
//!   server does not know is never met. On a node that does not exist yet, the options become
//!   its configuration (auto-create, XEP-0060 §7.1.5 "the service MUST create the node with
//!   those options"), a value it cannot take being `not-acceptable`.
//! - **configure** (owner only): fields this server does not know are ignored, as Prosody
//!   does, and a value it cannot take is `not-acceptable` (XEP-0060 §8.2.5.3).

use tokio_xmpp::minidom::Element;

use crate::server::store::{AccessModel, PepNodeConfig, SendLastItem};

/// The data forms namespace (XEP-0004).
pub(super) const DATA_FORMS: &str = "jabber:x:data";
/// The `FORM_TYPE` of node configuration forms.
const NODE_CONFIG: &str = "http://jabber.org/protocol/pubsub#node_config";

/// The fields of a submitted form (XEP-0004 §3.2), `FORM_TYPE` left out, in their order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishOptions {
    fields: Vec<(String, Vec<String>)>,
}

impl PublishOptions {
    /// No options: publish with the node's configuration, or PEP's defaults for a new node.
    pub fn none() -> Self {
        Self::default()
    }

    /// Options from `(field, value)` pairs, e.g. `("pubsub#access_model", "open")`: for a
    /// publication made by the server itself ([`Hub::pep_publish_internal`](super::super::Hub)).
    #[allow(dead_code)] // For the vCard-avatar bridge (XEP-0398), which publishes as the owner.
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        Self {
            fields: pairs
                .iter()
                .map(|(var, value)| (var.to_string(), vec![value.to_string()]))
                .collect(),
        }
    }

    /// The fields of the `<x xmlns='jabber:x:data'/>` in `parent` (publish-options, configure),
    /// `None` if there is no form.
    pub(super) fn from_form_in(parent: &Element) -> Option<Self> {
        let form = parent.get_child("x", DATA_FORMS)?;
        let fields = form
            .children()
            .filter(|field| field.is("field", DATA_FORMS))
            .filter_map(|field| {
                let var = field.attr("var")?;
                (var != "FORM_TYPE").then(|| {
                    let values = field
                        .children()
                        .filter(|value| value.is("value", DATA_FORMS))
                        .map(|value| value.text())
                        .collect();
                    (var.to_string(), values)
                })
            })
            .collect();
        Some(Self { fields })
    }

    /// Whether there are no fields.
    pub(super) fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// `config` with these fields applied. Fields this server does not know are refused
    /// ([`Unknown::Refuse`]) or skipped; `cap` is what `max` means for `pubsub#max_items`, and
    /// the largest number it takes.
    pub(super) fn apply(
        &self,
        config: &PepNodeConfig,
        cap: usize,
        unknown: Unknown,
    ) -> Result<PepNodeConfig, Refused> {
        let mut config = config.clone();
        for (var, values) in &self.fields {
            let value = values.first().map(String::as_str).unwrap_or_default();
            let invalid = || Refused::Invalid(var.clone());
            match var.as_str() {
                "pubsub#access_model" => {
                    config.access_model = match value {
                        "open" => AccessModel::Open,
                        "presence" => AccessModel::Presence,
                        "whitelist" => AccessModel::Whitelist,
                        _ => return Err(invalid()),
                    }
                }
                "pubsub#persist_items" => {
                    config.persist_items = boolean(value).ok_or_else(invalid)?
                }
                "pubsub#max_items" => {
                    config.max_items = match value {
                        "max" => None,
                        number => match number.parse::<u32>() {
                            Ok(n) if n >= 1 && usize::try_from(n).is_ok_and(|n| n <= cap) => {
                                Some(n)
                            }
                            _ => return Err(invalid()),
                        },
                    }
                }
                "pubsub#notify_retract" => {
                    config.notify_retract = boolean(value).ok_or_else(invalid)?
                }
                "pubsub#notify_delete" => {
                    config.notify_delete = boolean(value).ok_or_else(invalid)?
                }
                "pubsub#deliver_notifications" => {
                    config.deliver_notifications = boolean(value).ok_or_else(invalid)?
                }
                "pubsub#deliver_payloads" => {
                    config.deliver_payloads = boolean(value).ok_or_else(invalid)?
                }
                "pubsub#send_last_published_item" => {
                    config.send_last_published_item = match value {
                        "never" => SendLastItem::Never,
                        "on_sub" => SendLastItem::OnSub,
                        "on_sub_and_presence" => SendLastItem::OnSubAndPresence,
                        _ => return Err(invalid()),
                    }
                }
                // Only the owner publishes to PEP (XEP-0163 §4.1).
                "pubsub#publish_model" if value == "publishers" => {}
                "pubsub#publish_model" => return Err(invalid()),
                // Notifications are headlines (XEP-0060 §12.3 allows `normal` too; PEP's are
                // headlines).
                "pubsub#notification_type" if value == "headline" => {}
                "pubsub#notification_type" => return Err(invalid()),
                "pubsub#title" => config.title = text(value),
                "pubsub#description" => config.description = text(value),
                "pubsub#type" => config.payload_type = text(value),
                _ => match unknown {
                    Unknown::Refuse => return Err(Refused::Unknown(var.clone())),
                    Unknown::Ignore => {}
                },
            }
        }
        Ok(config)
    }

    /// Whether `config` meets these options as preconditions (XEP-0060 §7.1.5): applying them
    /// changes nothing, and every field is known.
    pub(super) fn met_by(&self, config: &PepNodeConfig, cap: usize) -> bool {
        self.apply(config, cap, Unknown::Refuse)
            .is_ok_and(|applied| applied == *config)
    }
}

/// What to do with a field this server does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unknown {
    /// Refuse it (publish-options).
    Refuse,
    /// Skip it (configure).
    Ignore,
}

/// Why options could not be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Refused {
    /// A field this server does not know.
    Unknown(String),
    /// A value the field cannot take here.
    Invalid(String),
}

/// An XEP-0004 boolean (`1`/`true`, `0`/`false`).
fn boolean(value: &str) -> Option<bool> {
    match value {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

/// A text field: empty is none.
fn text(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_string())
}

/// The configuration form of a node (XEP-0060 §8.2.1, type `form`), every field this server
/// takes, with its current value and the options of list fields.
pub(super) fn config_form(config: &PepNodeConfig) -> Element {
    let bool_text = |b: bool| if b { "1" } else { "0" };
    let access = match config.access_model {
        AccessModel::Open => "open",
        AccessModel::Presence => "presence",
        AccessModel::Whitelist => "whitelist",
    };
    let send_last = match config.send_last_published_item {
        SendLastItem::Never => "never",
        SendLastItem::OnSub => "on_sub",
        SendLastItem::OnSubAndPresence => "on_sub_and_presence",
    };
    let max_items = config
        .max_items
        .map_or_else(|| "max".to_string(), |n| n.to_string());
    let mut form = Element::builder("x", DATA_FORMS).attr(name("type"), "form");
    form = form.append(field("FORM_TYPE", "hidden", "", NODE_CONFIG, &[]));
    for (var, kind, label, value, options) in [
        (
            "pubsub#title",
            "text-single",
            "A friendly name for the node",
            config.title.as_deref().unwrap_or_default(),
            &[][..],
        ),
        (
            "pubsub#description",
            "text-single",
            "A description of the node",
            config.description.as_deref().unwrap_or_default(),
            &[],
        ),
        (
            "pubsub#type",
            "text-single",
            "The type of the payload (its namespace)",
            config.payload_type.as_deref().unwrap_or_default(),
            &[],
        ),
        (
            "pubsub#access_model",
            "list-single",
            "Who may read the items",
            access,
            &["open", "presence", "whitelist"],
        ),
        (
            "pubsub#publish_model",
            "list-single",
            "Who may publish",
            "publishers",
            &["publishers"],
        ),
        (
            "pubsub#max_items",
            "text-single",
            "Most items kept (or max)",
            max_items.as_str(),
            &[],
        ),
        (
            "pubsub#persist_items",
            "boolean",
            "Keep items across restarts",
            bool_text(config.persist_items),
            &[],
        ),
        (
            "pubsub#deliver_notifications",
            "boolean",
            "Notify of new items",
            bool_text(config.deliver_notifications),
            &[],
        ),
        (
            "pubsub#deliver_payloads",
            "boolean",
            "Include the payload in notifications",
            bool_text(config.deliver_payloads),
            &[],
        ),
        (
            "pubsub#notify_retract",
            "boolean",
            "Notify when items are retracted",
            bool_text(config.notify_retract),
            &[],
        ),
        (
            "pubsub#notify_delete",
            "boolean",
            "Notify when the node is deleted",
            bool_text(config.notify_delete),
            &[],
        ),
        (
            "pubsub#notification_type",
            "list-single",
            "Message type of notifications",
            "headline",
            &["headline"],
        ),
        (
            "pubsub#send_last_published_item",
            "list-single",
            "When to send the last item",
            send_last,
            &["never", "on_sub", "on_sub_and_presence"],
        ),
    ] {
        form = form.append(field(var, kind, label, value, options));
    }
    form.build()
}

/// One `<field/>` of a form.
fn field(var: &str, kind: &str, label: &str, value: &str, options: &[&str]) -> Element {
    let mut field = Element::builder("field", DATA_FORMS)
        .attr(name("var"), var)
        .attr(name("type"), kind);
    if !label.is_empty() {
        field = field.attr(name("label"), label);
    }
    for option in options {
        field = field.append(
            Element::builder("option", DATA_FORMS)
                .append(Element::builder("value", DATA_FORMS).append(*option)),
        );
    }
    if !value.is_empty() || kind == "text-single" {
        field = field.append(Element::builder("value", DATA_FORMS).append(value));
    }
    field.build()
}

/// An attribute name written in the code.
pub(in crate::server::hub) fn name(name: &'static str) -> tokio_xmpp::minidom::rxml::NcName {
    tokio_xmpp::minidom::rxml::NcName::try_from(name).unwrap_or_else(|_| {
        // Only literal names written in the code reach here, all valid.
        tokio_xmpp::minidom::rxml::xml_ncname!("invalid").into()
    })
}
