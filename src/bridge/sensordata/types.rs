//! The elements of XEP-0323 (Internet of Things – Sensor Data, version 0.6), written with the
//! `xso` derive as xmpp-parsers writes its own types (xmpp-parsers 0.23 has none for this XEP).
//!
//! Only what a sensor-data *device* needs is typed: the request it reads (`<req/>`,
//! `<cancel/>`) and the answers it writes (`<accepted/>`, `<started/>`, `<cancelled/>`,
//! `<fields/>`, `<failure/>`, `<done/>`). Field values are typed for the two kinds the bridge
//! has: `<numeric/>` and `<string/>`; the other value elements of §5.4 (`boolean`, `date`, …)
//! are skipped when parsing, as are attributes this crate does not use (the provisioning
//! tokens of XEP-0324, `sourceId`, localisation).
//!
//! Since version 0.3 a refused request is an IQ error (§3.3), not a `<rejected/>` element:
//! there is no type for it here.
//!
//! Boolean attributes are written only when true ([`Flag`]): every one of them defaults to
//! false in the schema (§10).

use std::borrow::Cow;

use xso::error::Error;
use xso::{AsXml, FromXml, TextCodec};

/// The namespace of XEP-0323, and the disco feature that announces it (§4).
pub const NS: &str = "urn:xmpp:iot:sensordata";

/// An `xs:boolean` attribute that defaults to false and is written only when true.
#[derive(Debug, Clone, Copy, Default)]
pub struct Flag;

impl TextCodec<bool> for Flag {
    fn decode(&self, s: String) -> Result<bool, Error> {
        // xs:boolean: "true", "false", "1", "0", with surrounding whitespace collapsed.
        match s.trim() {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err(Error::Other("not an xs:boolean")),
        }
    }

    fn encode<'x>(&self, value: &'x bool) -> Result<Option<Cow<'x, str>>, Error> {
        Ok(value.then_some(Cow::Borrowed("true")))
    }
}

/// A node named in a request (§3.5): which device behind the JID to read.
#[derive(FromXml, AsXml, Debug, Clone, PartialEq, Eq)]
#[xml(namespace = NS, name = "node", on_unknown_attribute = Discard)]
pub struct NodeRef {
    /// The node's id.
    #[xml(attribute = "nodeId")]
    pub node_id: String,
}

/// A field named in a request (§3.6): a hint of which fields the client wants.
#[derive(FromXml, AsXml, Debug, Clone, PartialEq, Eq)]
#[xml(namespace = NS, name = "field")]
pub struct FieldRef {
    /// The field's name.
    #[xml(attribute)]
    pub name: String,
}

/// A read-out request, sent in an IQ get (§3.1, schema in §10).
#[derive(FromXml, AsXml, Debug, Clone, PartialEq, Eq, Default)]
#[xml(
    namespace = NS,
    name = "req",
    on_unknown_attribute = Discard,
    on_unknown_child = Discard
)]
pub struct Req {
    /// The client's number for this read-out, repeated in every answer.
    #[xml(attribute)]
    pub seqnr: i32,
    /// Momentary values (the latest readings).
    #[xml(attribute(default, codec = Flag))]
    pub momentary: bool,
    /// Every field type (§5.6).
    #[xml(attribute(default, codec = Flag))]
    pub all: bool,
    /// Historical values of any period (§5.6).
    #[xml(attribute(default, codec = Flag))]
    pub historical: bool,
    /// Historical values stored at other than a period shift (§5.6).
    #[xml(attribute(default, codec = Flag, name = "historicalOther"))]
    pub historical_other: bool,
    /// The earliest historical value wanted (`xs:dateTime`).
    #[xml(attribute(default))]
    pub from: Option<String>,
    /// The latest historical value wanted (`xs:dateTime`).
    #[xml(attribute(default))]
    pub to: Option<String>,
    /// When to read (`xs:dateTime`): a scheduled read-out (§3.4).
    #[xml(attribute(default))]
    pub when: Option<String>,
    /// The nodes to read; none means every node.
    #[xml(child(n = ..))]
    pub nodes: Vec<NodeRef>,
    /// The fields wanted; none means every field.
    #[xml(child(n = ..))]
    pub fields: Vec<FieldRef>,
}

/// A request accepted: the IQ result to a [`Req`] (§3.1).
#[derive(FromXml, AsXml, Debug, Clone, PartialEq, Eq)]
#[xml(namespace = NS, name = "accepted")]
pub struct Accepted {
    /// The request's number.
    #[xml(attribute)]
    pub seqnr: i32,
    /// The read-out is queued and will start later, announced by [`Started`].
    #[xml(attribute(default, codec = Flag))]
    pub queued: bool,
}

/// A queued read-out has begun (§3.4).
#[derive(FromXml, AsXml, Debug, Clone, PartialEq, Eq)]
#[xml(namespace = NS, name = "started")]
pub struct Started {
    /// The request's number.
    #[xml(attribute)]
    pub seqnr: i32,
}

/// A request to cancel a scheduled read-out (§3.7).
#[derive(FromXml, AsXml, Debug, Clone, PartialEq, Eq)]
#[xml(namespace = NS, name = "cancel")]
pub struct Cancel {
    /// The read-out's number.
    #[xml(attribute)]
    pub seqnr: i32,
}

/// The answer to [`Cancel`] (§3.7).
#[derive(FromXml, AsXml, Debug, Clone, PartialEq, Eq)]
#[xml(namespace = NS, name = "cancelled")]
pub struct Cancelled {
    /// The read-out's number.
    #[xml(attribute)]
    pub seqnr: i32,
}

/// The read-out is over, when the last [`Fields`] did not say so (§3.4).
#[derive(FromXml, AsXml, Debug, Clone, PartialEq, Eq)]
#[xml(namespace = NS, name = "done")]
pub struct Done {
    /// The request's number.
    #[xml(attribute)]
    pub seqnr: i32,
}

/// A numeric field value (§5.4): a number as text (the sensor's decimals are kept, §5.4) and
/// its unit.
#[derive(FromXml, AsXml, Debug, Clone, PartialEq, Eq, Default)]
#[xml(namespace = NS, name = "numeric", on_unknown_attribute = Discard)]
pub struct Numeric {
    /// The field's name.
    #[xml(attribute)]
    pub name: String,
    /// The value, as the device formats it.
    #[xml(attribute)]
    pub value: String,
    /// The unit; required by the schema, empty for none.
    #[xml(attribute(default))]
    pub unit: String,
    /// A momentary value (§5.6).
    #[xml(attribute(default, codec = Flag))]
    pub momentary: bool,
    /// A historical value not at a period shift (§5.6).
    #[xml(attribute(default, codec = Flag, name = "historicalOther"))]
    pub historical_other: bool,
    /// Quality of service: read automatically (§5.7).
    #[xml(attribute(default, codec = Flag, name = "automaticReadout"))]
    pub automatic_readout: bool,
}

/// A string field value (§5.4).
#[derive(FromXml, AsXml, Debug, Clone, PartialEq, Eq, Default)]
#[xml(namespace = NS, name = "string", on_unknown_attribute = Discard)]
pub struct StringField {
    /// The field's name.
    #[xml(attribute)]
    pub name: String,
    /// The value.
    #[xml(attribute)]
    pub value: String,
}

/// The field values this crate reads and writes.
#[derive(FromXml, AsXml, Debug, Clone, PartialEq, Eq)]
#[xml()]
pub enum Field {
    /// A number with a unit.
    #[xml(transparent)]
    Numeric(Numeric),
    /// A string.
    #[xml(transparent)]
    String(StringField),
}

/// The fields of one node at one time (§10).
#[derive(FromXml, AsXml, Debug, Clone, PartialEq, Eq)]
#[xml(namespace = NS, name = "timestamp", on_unknown_child = Discard)]
pub struct Timestamp {
    /// When the values were sampled (`xs:dateTime`).
    #[xml(attribute)]
    pub value: String,
    /// The values.
    #[xml(child(n = ..))]
    pub fields: Vec<Field>,
}

/// One node's values in a read-out (§10).
#[derive(FromXml, AsXml, Debug, Clone, PartialEq, Eq)]
#[xml(namespace = NS, name = "node", on_unknown_attribute = Discard)]
pub struct Node {
    /// The node's id.
    #[xml(attribute = "nodeId")]
    pub node_id: String,
    /// Its values, by time.
    #[xml(child(n = ..))]
    pub timestamps: Vec<Timestamp>,
}

/// Part of a read-out, in a message (§3.1); `done` on the last one (§3.4, §5.3).
#[derive(FromXml, AsXml, Debug, Clone, PartialEq, Eq)]
#[xml(namespace = NS, name = "fields")]
pub struct Fields {
    /// The request's number.
    #[xml(attribute)]
    pub seqnr: i32,
    /// The last message of the read-out.
    #[xml(attribute(default, codec = Flag))]
    pub done: bool,
    /// The nodes' values.
    #[xml(child(n = ..))]
    pub nodes: Vec<Node>,
}

/// An error while reading a node (§3.2).
#[derive(FromXml, AsXml, Debug, Clone, PartialEq, Eq)]
#[xml(namespace = NS, name = "error", on_unknown_attribute = Discard)]
pub struct ReadError {
    /// The node concerned.
    #[xml(attribute = "nodeId")]
    pub node_id: String,
    /// When it happened (`xs:dateTime`).
    #[xml(attribute)]
    pub timestamp: String,
    /// What happened, for people.
    #[xml(text)]
    pub text: String,
}

/// A read-out (or part of it) failed, instead of a [`Fields`] (§3.2).
#[derive(FromXml, AsXml, Debug, Clone, PartialEq, Eq)]
#[xml(namespace = NS, name = "failure")]
pub struct Failure {
    /// The request's number.
    #[xml(attribute)]
    pub seqnr: i32,
    /// The last message of the read-out.
    #[xml(attribute(default, codec = Flag))]
    pub done: bool,
    /// What went wrong.
    #[xml(child(n = ..))]
    pub errors: Vec<ReadError>,
}

macro_rules! payloads {
    ($($ty:ty),*) => {$(
        impl tokio_xmpp::parsers::iq::IqGetPayload for $ty {}
        impl tokio_xmpp::parsers::iq::IqResultPayload for $ty {}
        impl tokio_xmpp::parsers::message::MessagePayload for $ty {}
    )*};
}
payloads!(Req, Accepted, Started, Cancel, Cancelled, Done, Fields, Failure);

#[cfg(test)]
mod tests;
