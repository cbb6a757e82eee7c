//! XEP-0323 (Internet of Things – Sensor Data) read-out: the bot answers as a device whose
//! nodes are its MQTT topics, with the same readings, access rules and rate limit as the text
//! commands (a read-out and `get` reach the same cache).
//!
//! The exchange (§3.1): the client sends `<req seqnr momentary='true'/>` in an IQ get; the bot
//! answers the IQ with `<accepted seqnr/>` and then sends the values in messages
//! `<fields seqnr>`, the last one with `done='true'` (§3.4, §5.3).
//!
//! The model:
//! - a **node** is a concrete topic (`nodeId` is the topic); a `<node nodeId/>` in the request
//!   may also name a sensor or an MQTT filter, read as a supernode (§5.8): every topic under it;
//! - a **field** is a `<numeric/>` named after the topic's sensor, with the sensor's unit and
//!   its decimals (§5.4: the number is written as the text commands show it);
//! - `momentary` values are the latest readings, stamped with when they arrived; `historical`
//!   values (any `historical*` flag, or `all`) come from the history ring between `from` and
//!   `to`, flagged `historicalOther` (§5.6: the samples are not at period shifts).
//!
//! A request naming no field type reads momentary values. Read-outs run at once, so nothing is
//! ever queued: no `started` (§3.1), `when` is not waited for, and `<cancel/>` is answered
//! `<cancelled/>` with nothing to cancel (§3.7).
//!
//! Access (§3.3, §7): a contact the text commands refuse gets `forbidden`; history, like
//! `stats`, needs the allow list (a contact who may only read gets `forbidden` for
//! `historical`, and only momentary values for `all`). Each request counts once against the
//! contact's rate limit; over it, `policy-violation` (type `wait`). A malformed request gets
//! `bad-request`, a node that names nothing the bot has `item-not-found` (§3.3's table).
//!
//! Bounded: a request names at most [`MAX_REQUEST_ITEMS`] nodes and fields; each `<fields>`
//! message holds about [`MESSAGE_BYTES`] at most (whole timestamps; one node's history may span
//! several messages, as §5.3 allows); a read-out carries at most [`MAX_VALUES`] values, and a
//! longer one ends, instead of with `done` on its last `<fields>`, with a
//! `<failure done='true'>` (§3.2) whose error says how many nodes were left out and how to
//! narrow the request. A building of 10 000 topics thus costs a few hundred kilobytes in
//! messages far below a server's stanza limit, never one huge stanza.

pub mod types;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio_xmpp::jid::Jid;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::Message;
use tokio_xmpp::parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};
use tokio_xmpp::Stanza;

use self::types::{
    Accepted, Cancel, Cancelled, Failure, Field, Fields, Node, Numeric, ReadError, Req, Timestamp,
    NS,
};
use super::access::Permission;
use super::bot::Bot;
use super::cache::Entry;
use super::reading::xml_char;
use super::reply;

/// Most `<node/>` and `<field/>` elements in one request: each node is matched against every
/// topic, so a request cannot make the bot scan its cache without end.
pub const MAX_REQUEST_ITEMS: usize = 64;

/// About the most bytes of `<timestamp/>` elements in one `<fields>` message.
pub const MESSAGE_BYTES: usize = 16 * 1024;

/// Most values in one read-out; beyond, it ends with a `<failure/>` saying what was left out.
pub const MAX_VALUES: usize = 2000;

/// The two clocks at one moment: readings are kept by the monotonic clock, read-outs speak
/// wall-clock time.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// The monotonic clock.
    pub instant: Instant,
    /// Milliseconds since the Unix epoch.
    pub unix_ms: i64,
}

impl Now {
    /// The present.
    pub fn new() -> Self {
        Self {
            instant: Instant::now(),
            unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        }
    }

    /// Wall-clock milliseconds of `at` (at or before now).
    fn unix_ms_of(self, at: Instant) -> i64 {
        let ago = i64::try_from(self.instant.saturating_duration_since(at).as_millis())
            .unwrap_or(i64::MAX);
        self.unix_ms.saturating_sub(ago)
    }

    /// The monotonic instant of wall-clock `unix_ms`, or the earliest one the platform can
    /// represent when it lies before that.
    fn instant_of(self, unix_ms: i64) -> Instant {
        let ago =
            Duration::from_millis(u64::try_from(self.unix_ms.saturating_sub(unix_ms)).unwrap_or(0));
        self.instant.checked_sub(ago).unwrap_or_else(|| {
            [86_400 * 365, 86_400 * 30, 86_400, 3600, 60, 1]
                .into_iter()
                .find_map(|secs| self.instant.checked_sub(Duration::from_secs(secs)))
                .unwrap_or(self.instant)
        })
    }
}

impl Default for Now {
    fn default() -> Self {
        Self::new()
    }
}

/// Why a request is refused: the IQ error of §3.3.
#[derive(Debug, Clone)]
struct Refusal {
    kind: ErrorType,
    condition: DefinedCondition,
    text: String,
}

impl Refusal {
    fn new(kind: ErrorType, condition: DefinedCondition, text: impl Into<String>) -> Self {
        Self {
            kind,
            condition,
            text: text.into(),
        }
    }

    fn bad_request(text: impl Into<String>) -> Self {
        Self::new(ErrorType::Modify, DefinedCondition::BadRequest, text)
    }
}

/// What a request asks for, checked.
#[derive(Debug)]
struct Readout {
    seqnr: i32,
    momentary: bool,
    /// `(from, to)` in wall-clock milliseconds, when history is wanted.
    history: Option<(i64, i64)>,
    /// The topics to read, sorted, with their latest reading.
    topics: BTreeMap<String, Entry>,
}

impl Bot {
    /// The answer to `iq` when it carries a XEP-0323 element in an IQ get, `None` otherwise
    /// (the caller answers it as before). Never empty: an IQ get is always answered.
    pub fn sensor_data(&self, iq: &Iq, now: Now) -> Option<Vec<Stanza>> {
        let Iq::Get {
            from, id, payload, ..
        } = iq
        else {
            return None;
        };
        if payload.ns() != NS {
            return None;
        }
        let error = |refusal: Refusal| -> Vec<Stanza> {
            vec![Iq::Error {
                from: None,
                to: from.clone(),
                id: id.clone(),
                error: StanzaError::new(refusal.kind, refusal.condition, "en", refusal.text),
                payload: None,
            }
            .into()]
        };
        let result = |payload: Element| -> Stanza {
            Iq::Result {
                from: None,
                to: from.clone(),
                id: id.clone(),
                payload: Some(payload),
            }
            .into()
        };
        let Some(requester) = from.clone() else {
            return Some(error(Refusal::new(
                ErrorType::Cancel,
                DefinedCondition::Forbidden,
                "A read-out needs a sender.",
            )));
        };
        match payload.name() {
            "req" => {}
            // §3.7: read-outs are never queued, so there is never anything left to cancel.
            "cancel" => {
                return Some(match Cancel::try_from(payload.clone()) {
                    Ok(cancel) => vec![result(
                        Cancelled {
                            seqnr: cancel.seqnr,
                        }
                        .into(),
                    )],
                    Err(e) => error(Refusal::bad_request(format!(
                        "Malformed cancel request: {e}."
                    ))),
                })
            }
            other => {
                return Some(error(Refusal::new(
                    ErrorType::Cancel,
                    DefinedCondition::FeatureNotImplemented,
                    format!("A device answers <req/> and <cancel/>, not <{other}/>."),
                )))
            }
        }
        let readout = Req::try_from(payload.clone())
            .map_err(|e| Refusal::bad_request(format!("Malformed read-out request: {e}.")))
            .and_then(|req| self.check(&requester, req, now));
        let readout = match readout {
            Ok(readout) => readout,
            Err(refusal) => {
                tracing::debug!(%requester, ?refusal, "refused a sensor-data read-out");
                return Some(error(refusal));
            }
        };
        let seqnr = readout.seqnr;
        let mut out = vec![result(
            Accepted {
                seqnr,
                queued: false,
            }
            .into(),
        )];
        out.extend(self.read(readout, now).into_iter().map(|payload| {
            let mut message = Message::new(Some(requester.clone()));
            message.payloads.push(payload);
            message.into()
        }));
        Some(out)
    }

    /// Access, the rate limit and the request's contents: what to read, or why not.
    fn check(&self, requester: &Jid, req: Req, now: Now) -> Result<Readout, Refusal> {
        let contact = requester.to_bare();
        let permission = self.access.permission(contact.as_str());
        if permission == Permission::None {
            return Err(Refusal::new(
                ErrorType::Cancel,
                DefinedCondition::Forbidden,
                "Access denied: this bot answers only the contacts its operator allowed.",
            ));
        }
        let wants_history = req.historical || req.historical_other;
        if wants_history && permission != Permission::All {
            return Err(Refusal::new(
                ErrorType::Cancel,
                DefinedCondition::Forbidden,
                "History read-outs, like stats, are only for the contacts on the allow list.",
            ));
        }
        if self
            .admit_as(permission, contact.as_str(), now.instant)
            .is_err()
        {
            return Err(Refusal::new(
                ErrorType::Wait,
                DefinedCondition::PolicyViolation,
                format!(
                    "Too many requests: at most {} a minute.",
                    self.settings.replies_per_minute
                ),
            ));
        }
        if req.nodes.len() + req.fields.len() > MAX_REQUEST_ITEMS {
            return Err(Refusal::bad_request(format!(
                "A read-out may name at most {MAX_REQUEST_ITEMS} nodes and fields."
            )));
        }
        let history = if wants_history || (req.all && permission == Permission::All) {
            let from = req.from.as_deref().map(parse_time).transpose()?;
            let to = req.to.as_deref().map(parse_time).transpose()?;
            let (from, to) = (from.unwrap_or(i64::MIN), to.unwrap_or(now.unix_ms));
            if from > to {
                return Err(Refusal::bad_request("'from' is later than 'to'."));
            }
            Some((from, to))
        } else {
            None
        };
        // §5.6: the field types asked for are a union; none at all reads momentary values.
        let momentary = req.momentary || req.all || history.is_none();

        let mut topics = BTreeMap::new();
        if req.nodes.is_empty() {
            for sensor in self.sensors.iter() {
                topics.extend(self.cache.matching(&sensor.filter));
            }
        } else {
            for node in &req.nodes {
                let filter = match self.sensors.by_name(&node.node_id) {
                    Some(sensor) => sensor.filter.as_str(),
                    None => node.node_id.as_str(),
                };
                if crate::topic::check_filter(filter).is_err() {
                    return Err(Refusal::new(
                        ErrorType::Cancel,
                        DefinedCondition::ItemNotFound,
                        format!("No node {}: not a sensor, topic or pattern.", node.node_id),
                    ));
                }
                let found = self.cache.matching(filter);
                if found.is_empty() {
                    return Err(Refusal::new(
                        ErrorType::Cancel,
                        DefinedCondition::ItemNotFound,
                        format!("No node {}: nothing has been read there.", node.node_id),
                    ));
                }
                topics.extend(found);
            }
        }
        // §3.6: named fields restrict the read-out (to the sensors, or topics, so named).
        if !req.fields.is_empty() {
            topics.retain(|topic, _| {
                let name = self.sensors.for_topic(topic).map(|s| s.name.as_str());
                req.fields
                    .iter()
                    .any(|f| Some(f.name.as_str()) == name || f.name == *topic)
            });
        }
        Ok(Readout {
            seqnr: req.seqnr,
            momentary,
            history,
            topics,
        })
    }

    /// The messages' payloads of a checked read-out, bounded (see the module's doc).
    fn read(&self, readout: Readout, now: Now) -> Vec<Element> {
        let Readout {
            seqnr,
            momentary,
            history,
            topics,
        } = readout;
        let mut pages = Pages::new(seqnr);
        let total = topics.len();
        for (done, (topic, entry)) in topics.iter().enumerate() {
            let (name, unit, precision) = self
                .sensors
                .for_topic(topic)
                .map_or((topic.as_str(), "", None), |s| {
                    (s.name.as_str(), s.unit.as_str(), s.precision)
                });
            let numeric = |value: f64| Numeric {
                name: xml_text(name),
                value: reply::format_value(value, precision, ""),
                unit: xml_text(unit),
                automatic_readout: true,
                ..Numeric::default()
            };
            let mut stamps = Vec::new();
            if let Some((from, to)) = history {
                let (samples, _) = self.cache.history(topic, now.instant_of(from));
                for sample in samples {
                    let at = now.unix_ms_of(sample.at);
                    if at > to {
                        break;
                    }
                    stamps.push(Timestamp {
                        value: stamp(at),
                        fields: vec![Field::Numeric(Numeric {
                            historical_other: true,
                            ..numeric(sample.value)
                        })],
                    });
                }
            }
            if momentary {
                stamps.push(Timestamp {
                    value: stamp(now.unix_ms_of(entry.received_at)),
                    fields: vec![Field::Numeric(Numeric {
                        momentary: true,
                        ..numeric(entry.reading.value)
                    })],
                });
            }
            let node_id = xml_text(topic);
            if pages.values + stamps.len() > MAX_VALUES {
                return pages.truncated(&node_id, total - done, now);
            }
            for timestamp in stamps {
                pages.push(&node_id, timestamp);
            }
        }
        pages.finish()
    }
}

/// `<fields>` messages being filled, each up to about [`MESSAGE_BYTES`].
struct Pages {
    seqnr: i32,
    full: Vec<Fields>,
    current: Fields,
    bytes: usize,
    values: usize,
}

impl Pages {
    fn new(seqnr: i32) -> Self {
        Self {
            seqnr,
            full: Vec::new(),
            current: Self::empty(seqnr),
            bytes: 0,
            values: 0,
        }
    }

    fn empty(seqnr: i32) -> Fields {
        Fields {
            seqnr,
            done: false,
            nodes: Vec::new(),
        }
    }

    /// Adds one timestamp of `topic`'s node, starting a new message when this one is full.
    fn push(&mut self, topic: &str, timestamp: Timestamp) {
        let size = String::from(&Element::from(timestamp.clone())).len();
        // The node's own element, written again in each message it spans.
        let node_size = 2 * topic.len() + 64;
        let same_node = self
            .current
            .nodes
            .last()
            .is_some_and(|node| node.node_id == topic);
        let adds = size + if same_node { 0 } else { node_size };
        if self.bytes + adds > MESSAGE_BYTES && !self.current.nodes.is_empty() {
            let full = std::mem::replace(&mut self.current, Self::empty(self.seqnr));
            self.full.push(full);
            self.bytes = 0;
        }
        self.values += timestamp.fields.len();
        match self.current.nodes.last_mut() {
            Some(node) if node.node_id == topic => {
                self.bytes += size;
                node.timestamps.push(timestamp);
            }
            _ => {
                self.bytes += size + node_size;
                self.current.nodes.push(Node {
                    node_id: topic.to_string(),
                    timestamps: vec![timestamp],
                });
            }
        }
    }

    /// Every message, the last one marked `done` (§3.4): at least one, even for no values.
    fn finish(mut self) -> Vec<Element> {
        self.current.done = true;
        self.full.push(self.current);
        self.full.into_iter().map(Element::from).collect()
    }

    /// The messages so far, then a `<failure done='true'/>` (§3.2) saying that `left` nodes,
    /// from `next` on, were not read.
    fn truncated(mut self, next: &str, left: usize, now: Now) -> Vec<Element> {
        if !self.current.nodes.is_empty() {
            self.full.push(self.current);
        }
        let values = self.values;
        let mut out: Vec<Element> = self.full.into_iter().map(Element::from).collect();
        out.push(
            Failure {
                seqnr: self.seqnr,
                done: true,
                errors: vec![ReadError {
                    node_id: next.to_string(),
                    timestamp: stamp(now.unix_ms),
                    text: format!(
                        "Read-out truncated after {values} values (at most {MAX_VALUES} per \
                         read-out): {left} nodes from this one on were not read. Name nodes \
                         (a sensor or a topic pattern) or fields to read fewer."
                    ),
                }],
            }
            .into(),
        );
        out
    }
}

/// `text` with every character XML 1.0 cannot carry (§2.2: control characters but tab and
/// line ends, U+FFFE, U+FFFF) replaced by U+FFFD. MQTT topics may hold them; written as they
/// are, they would make the stanza unserialisable.
fn xml_text(text: &str) -> String {
    text.chars()
        .map(|c| if xml_char(c) { c } else { '\u{fffd}' })
        .collect()
}

/// An `xs:dateTime` as milliseconds since the Unix epoch. One without a time zone is taken as
/// UTC (§6.1 leaves it undefined; the bot's own stamps are all UTC).
fn parse_time(text: &str) -> Result<i64, Refusal> {
    let bad = || Refusal::bad_request(format!("'{text}' is not an xs:dateTime."));
    if let Ok(date) = text.parse::<tokio_xmpp::parsers::date::DateTime>() {
        return Ok(date.0.timestamp_millis());
    }
    let time = humantime::parse_rfc3339_weak(text).map_err(|_| bad())?;
    let ms = time
        .duration_since(UNIX_EPOCH)
        .map_err(|_| bad())?
        .as_millis();
    i64::try_from(ms).map_err(|_| bad())
}

/// Milliseconds since the Unix epoch as an `xs:dateTime` in UTC, with milliseconds.
fn stamp(unix_ms: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_millis(u64::try_from(unix_ms).unwrap_or(0));
    humantime::format_rfc3339_millis(time).to_string()
}
