//! Named sensors: which MQTT topics the bot listens to, and how it reads and shows each one.
//!
//! Sensors come from three places, and are kept in this order:
//!
//! 1. `--sensor name=temp,topic=sensors/temperature,unit=°C` flags, in the order given;
//! 2. the `[[sensor]]` tables of `--sensors-file` (TOML), in file order;
//! 3. `--topic` flags, each a sensor named by its topic.
//!
//! The first sensor is the default: it answers any chat message that is not a command. With none
//! of the three, the bot has one sensor, [`DEFAULT_TOPIC`]. A sensor that leaves out its JSON
//! pointer, unit or precision takes the global `--json-pointer`, `--unit` and `--precision`
//! ([`SensorDefaults`]).
//!
//! Every mistake becomes a [`SensorError`] that names the flag, or the file and line, and says how
//! to fix it. Pure apart from reading the sensors file.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;
use toml::Spanned;

use crate::bridge::{commands, reading::PayloadFormat};
use crate::topic;

/// The one sensor the bot has when none is configured: what `mqtt2xmpp simulate` publishes to.
pub const DEFAULT_TOPIC: &str = "sensors/temperature";

/// Longest sensor name, in characters: names are typed in chat, so they stay short.
pub const MAX_NAME_CHARS: usize = 32;

/// Most decimals a sensor may show; more than a sensor can measure.
pub const MAX_PRECISION: usize = 9;

/// The keys of a `--sensor` value, for error messages.
const SPEC_KEYS: &str = "name, topic, json-pointer, unit, precision";

/// How a `--sensor` value looks, for error messages.
const SPEC_SHAPE: &str = "name=NAME,topic=TOPIC[,json-pointer=/value][,unit=°C][,precision=1]";

/// One sensor the bot knows: what to subscribe to and how to read and show it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sensor {
    /// What users call it in chat, e.g. `temp`; a sensor from `--topic` is called by its topic.
    pub name: String,
    /// The MQTT topic or filter (with `+` and `#` wildcards) its readings arrive on.
    pub filter: String,
    /// How its payloads are read.
    pub format: PayloadFormat,
    /// Shown after the value, e.g. `°C`; may be empty.
    pub unit: String,
    /// Decimals shown (0 to [`MAX_PRECISION`]); `None` shows the value as published.
    pub precision: Option<usize>,
}

/// What a sensor that does not say otherwise uses: the global `--json-pointer`, `--unit` and
/// `--precision`, so one flag can serve many sensors of the same kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SensorDefaults {
    /// The JSON pointer into payloads; `None` reads payloads as plain numbers.
    pub json_pointer: Option<String>,
    /// The unit shown after values.
    pub unit: String,
    /// Decimals shown; `None` shows values as published.
    pub precision: Option<usize>,
}

/// The sensors, in order; the first is the default (answers any message that is not a command).
///
/// Never empty, every sensor valid, and no two names equal ignoring case, so a name always finds
/// at most one sensor.
#[derive(Debug, Clone)]
pub struct Sensors {
    list: Vec<Sensor>,
}

/// A sensor configuration that cannot work; the message says how to fix it.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SensorError {
    /// A `--sensor` value is not understood.
    #[error("--sensor {spec:?}: {reason}")]
    Spec {
        /// The value as given.
        spec: String,
        /// What is wrong, and how it should look.
        reason: String,
    },
    /// The sensors file cannot be read.
    #[error("--sensors-file {}: cannot read it: {reason}", path.display())]
    Read {
        /// The file as given.
        path: PathBuf,
        /// Why, from the operating system.
        reason: String,
    },
    /// The sensors file is not valid TOML, or has a key that is unknown, missing or of the wrong
    /// type.
    #[error("--sensors-file {}: {message}", path.display())]
    Syntax {
        /// The file as given.
        path: PathBuf,
        /// The parser's message: line, column, the line itself, and what is wrong.
        message: String,
    },
    /// The sensors file defines no sensor: almost certainly not what was meant.
    #[error(
        "--sensors-file {}: no sensors in it; add at least one [[sensor]] table, e.g.\n\n\
         [[sensor]]\nname = \"temp\"\ntopic = \"{DEFAULT_TOPIC}\"",
        path.display()
    )]
    NoSensorsInFile {
        /// The file as given.
        path: PathBuf,
    },
    /// A sensor's name, topic, JSON pointer or precision cannot be used.
    #[error("{origin}: {reason}")]
    Invalid {
        /// Where the sensor was given: the flag and its value, or the file and line.
        origin: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// Two sensors have the same name, so `get NAME` could not choose.
    #[error(
        "sensor name {name:?} is used twice ({first}; {second}): \
         names must differ, ignoring upper and lower case"
    )]
    DuplicateName {
        /// The second sensor's name.
        name: String,
        /// Where the first sensor with that name was given.
        first: String,
        /// Where the second one was given.
        second: String,
    },
    /// No sensor at all.
    #[error("no sensors: give --sensor, --sensors-file or --topic")]
    Empty,
}

/// Which part of a sensor a validation error is about, so the file can point at its line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Name,
    Topic,
    JsonPointer,
    Precision,
}

/// A sensor and where it was given, for error messages.
#[derive(Debug)]
struct Located {
    sensor: Sensor,
    /// Where its name was given.
    origin: String,
}

impl Sensors {
    /// The sensors of `list`, in order. Fails if the list is empty, a sensor is invalid (see the
    /// module documentation), or two names are equal ignoring case.
    pub fn new(list: Vec<Sensor>) -> Result<Self, SensorError> {
        let located = list
            .into_iter()
            .enumerate()
            .map(|(index, sensor)| {
                let origin = format!("sensor {} ({:?})", index + 1, sensor.name);
                let named_by_topic = sensor.name == sensor.filter;
                check_sensor(&sensor, named_by_topic).map_err(|(_, reason)| {
                    SensorError::Invalid {
                        origin: origin.clone(),
                        reason,
                    }
                })?;
                Ok(Located { sensor, origin })
            })
            .collect::<Result<Vec<_>, SensorError>>()?;
        Self::from_located(located)
    }

    /// The sensors from the flags, in the documented order: `specs` (`--sensor`), then `file`'s
    /// (`--sensors-file`), then `topics` (`--topic`); one [`DEFAULT_TOPIC`] sensor if all three
    /// are empty.
    pub fn from_flags(
        specs: &[String],
        file: Option<&Path>,
        topics: &[String],
        defaults: &SensorDefaults,
    ) -> Result<Self, SensorError> {
        let mut located = Vec::new();
        for spec in specs {
            located.push(Located {
                sensor: parse_spec(spec, defaults)?,
                origin: format!("--sensor {spec:?}"),
            });
        }
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| SensorError::Read {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
            located.extend(file_sensors(path, &text, defaults)?);
        }
        let default_topic = [DEFAULT_TOPIC.to_string()];
        let topics = if located.is_empty() && topics.is_empty() {
            &default_topic[..]
        } else {
            topics
        };
        for topic in topics {
            located.push(Located {
                sensor: topic_sensor(topic, defaults)?,
                origin: format!("--topic {topic:?}"),
            });
        }
        Self::from_located(located)
    }

    /// Checks what only the whole list can tell: that it is not empty and names are unique.
    fn from_located(located: Vec<Located>) -> Result<Self, SensorError> {
        if located.is_empty() {
            return Err(SensorError::Empty);
        }
        for (index, later) in located.iter().enumerate() {
            let name = later.sensor.name.to_lowercase();
            if let Some(earlier) = located[..index]
                .iter()
                .find(|earlier| earlier.sensor.name.to_lowercase() == name)
            {
                return Err(SensorError::DuplicateName {
                    name: later.sensor.name.clone(),
                    first: earlier.origin.clone(),
                    second: later.origin.clone(),
                });
            }
        }
        Ok(Sensors {
            list: located.into_iter().map(|l| l.sensor).collect(),
        })
    }

    /// The sensor that answers any message that is not a command: the first one.
    pub fn default_sensor(&self) -> &Sensor {
        // `new` and `from_flags` refuse an empty list.
        &self.list[0]
    }

    /// All sensors, the default first.
    pub fn iter(&self) -> impl Iterator<Item = &Sensor> {
        self.list.iter()
    }

    /// How many sensors there are (at least one).
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Always false: there is at least one sensor. For the `len` convention.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The sensor a user means by `name`, ignoring upper and lower case (`Temp` finds `temp`).
    pub fn by_name(&self, name: &str) -> Option<&Sensor> {
        let name = name.to_lowercase();
        self.list.iter().find(|s| s.name.to_lowercase() == name)
    }

    /// The sensor a message on `topic` belongs to: the first whose filter matches, so an earlier,
    /// more specific sensor wins over a later catch-all pattern.
    pub fn for_topic(&self, topic: &str) -> Option<&Sensor> {
        self.list.iter().find(|s| topic::matches(topic, &s.filter))
    }

    /// What to subscribe to: every sensor's filter, once each, in sensor order, leaving out
    /// those another filter covers (`B/+/O/+/VIBR` under `B/#`). A broker may deliver a message
    /// once per matching subscription (retained messages on subscribing, in particular), which
    /// would put readings twice into the history.
    pub fn filters(&self) -> Vec<String> {
        let mut filters: Vec<String> = Vec::new();
        for sensor in &self.list {
            if !filters.contains(&sensor.filter) {
                filters.push(sensor.filter.clone());
            }
        }
        let all = filters.clone();
        filters.retain(|f| {
            !all.iter().any(|other| {
                other != f && crate::topic::covers(other, f) && !crate::topic::covers(f, other)
            })
        });
        filters
    }
}

/// A sensor named by its topic (`--topic`), read and shown as `defaults` say. The topic may be a
/// filter with wildcards; the name rules do not apply, since the name is the topic.
pub fn topic_sensor(topic: &str, defaults: &SensorDefaults) -> Result<Sensor, SensorError> {
    let bad = |reason: String| SensorError::Invalid {
        origin: format!("--topic {topic:?}"),
        reason,
    };
    // Checked here first so that the message does not repeat the topic.
    topic::check_filter(topic).map_err(|reason| bad(reason.to_string()))?;
    let sensor = Sensor {
        name: topic.to_string(),
        filter: topic.to_string(),
        format: PayloadFormat {
            json_pointer: defaults.json_pointer.clone(),
        },
        unit: defaults.unit.clone(),
        precision: defaults.precision,
    };
    check_sensor(&sensor, true).map_err(|(_, reason)| bad(reason))?;
    Ok(sensor)
}

/// Parses one `--sensor` value: `name=temp,topic=sensors/temperature[,json-pointer=/value]
/// [,unit=°C][,precision=1]`, keys in any order, spaces around keys and values ignored; fields
/// left out come from `defaults`. `json_pointer` is accepted for `json-pointer`, as in the file.
pub fn parse_spec(spec: &str, defaults: &SensorDefaults) -> Result<Sensor, SensorError> {
    let bad = |reason: String| SensorError::Spec {
        spec: spec.to_string(),
        reason,
    };
    let (mut name, mut topic, mut pointer, mut unit, mut precision) =
        (None, None, None, None, None);
    for part in spec.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let Some((key, value)) = part.split_once('=') else {
            return Err(bad(format!(
                "{part:?} is not KEY=VALUE; write {SPEC_SHAPE} \
                 (a topic that contains ',' must go in --sensors-file)"
            )));
        };
        let (key, value) = (key.trim(), value.trim().to_string());
        let slot = match key {
            "name" => &mut name,
            "topic" => &mut topic,
            "json-pointer" | "json_pointer" => &mut pointer,
            "unit" => &mut unit,
            "precision" => &mut precision,
            _ => {
                return Err(bad(format!(
                    "unknown key {key:?}; the keys are {SPEC_KEYS}"
                )))
            }
        };
        if slot.is_some() {
            return Err(bad(format!(
                "{key} is given twice (a topic that contains ',' must go in --sensors-file)"
            )));
        }
        *slot = Some(value);
    }
    let name = name.ok_or_else(|| bad(format!("name is missing; write {SPEC_SHAPE}")))?;
    let topic = topic.ok_or_else(|| bad(format!("topic is missing; write {SPEC_SHAPE}")))?;
    let precision = match precision {
        None => defaults.precision,
        Some(text) => Some(text.parse::<usize>().map_err(|_| {
            bad(format!(
                "precision {text:?} is not a number of decimals: give 0 to {MAX_PRECISION}"
            ))
        })?),
    };
    let sensor = Sensor {
        name,
        filter: topic,
        format: PayloadFormat {
            json_pointer: pointer.or_else(|| defaults.json_pointer.clone()),
        },
        unit: unit.unwrap_or_else(|| defaults.unit.clone()),
        precision,
    };
    check_sensor(&sensor, false).map_err(|(_, reason)| bad(reason))?;
    Ok(sensor)
}

/// Parses the text of a sensors file (`path` is only for messages): its sensors in file order,
/// fields left out taken from `defaults`. (`Sensors::from_flags` reads the file through the
/// same `file_sensors`; this is its test entry.)
#[cfg(test)]
pub fn parse_file(
    path: &Path,
    text: &str,
    defaults: &SensorDefaults,
) -> Result<Vec<Sensor>, SensorError> {
    Ok(file_sensors(path, text, defaults)?
        .into_iter()
        .map(|l| l.sensor)
        .collect())
}

/// The sensors file: `[[sensor]]` tables and nothing else, so a misspelled key is an error with
/// its line rather than silently ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    #[serde(default)]
    sensor: Vec<FileSensor>,
    /// `[[room]]` tables: read by [`file_rooms`].
    #[serde(default)]
    room: Vec<FileRoomTable>,
}

/// One `[[room]]` table: a room to join, as `--room` gives it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRoomTable {
    jid: Spanned<String>,
    #[serde(default, alias = "announce-stale")]
    announce_stale: bool,
}

/// A room of the sensors file's `[[room]]` tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRoom {
    /// `ROOM@SERVICE[/NICK]`, unchecked.
    pub jid: String,
    /// Whether stale sensors are announced there.
    pub announce_stale: bool,
    /// The file and line, for messages.
    pub origin: String,
}

/// The `[[room]]` tables of the sensors file at `path`, in file order.
pub fn file_rooms(path: &Path) -> Result<Vec<FileRoom>, SensorError> {
    let text = std::fs::read_to_string(path).map_err(|e| SensorError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    rooms_in(path, &text)
}

fn rooms_in(path: &Path, text: &str) -> Result<Vec<FileRoom>, SensorError> {
    let doc: FileDoc = toml::from_str(text).map_err(|e| SensorError::Syntax {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    })?;
    Ok(doc
        .room
        .into_iter()
        .map(|room| FileRoom {
            origin: format!(
                "{}, line {}",
                path.display(),
                line_of(text, room.jid.span().start)
            ),
            jid: room.jid.into_inner(),
            announce_stale: room.announce_stale,
        })
        .collect())
}

/// One `[[sensor]]` table; spans locate errors found after parsing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSensor {
    name: Spanned<String>,
    topic: Spanned<String>,
    #[serde(default, alias = "json-pointer")]
    json_pointer: Option<Spanned<String>>,
    #[serde(default)]
    unit: Option<String>,
    #[serde(default)]
    precision: Option<Spanned<u8>>,
}

fn file_sensors(
    path: &Path,
    text: &str,
    defaults: &SensorDefaults,
) -> Result<Vec<Located>, SensorError> {
    let doc: FileDoc = toml::from_str(text).map_err(|e| SensorError::Syntax {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    })?;
    if doc.sensor.is_empty() {
        return Err(SensorError::NoSensorsInFile {
            path: path.to_path_buf(),
        });
    }
    let at = |offset: usize| format!("{}, line {}", path.display(), line_of(text, offset));
    doc.sensor
        .into_iter()
        .map(|raw| {
            let sensor = Sensor {
                name: raw.name.get_ref().clone(),
                filter: raw.topic.get_ref().clone(),
                format: PayloadFormat {
                    json_pointer: match &raw.json_pointer {
                        Some(pointer) => Some(pointer.get_ref().clone()),
                        None => defaults.json_pointer.clone(),
                    },
                },
                unit: raw.unit.unwrap_or_else(|| defaults.unit.clone()),
                precision: match &raw.precision {
                    Some(precision) => Some(usize::from(*precision.get_ref())),
                    None => defaults.precision,
                },
            };
            check_sensor(&sensor, false).map_err(|(field, reason)| {
                let span = match field {
                    Field::Name => raw.name.span(),
                    Field::Topic => raw.topic.span(),
                    Field::JsonPointer => raw.json_pointer.as_ref().map_or(0..0, |p| p.span()),
                    Field::Precision => raw.precision.as_ref().map_or(0..0, |p| p.span()),
                };
                SensorError::Invalid {
                    origin: at(span.start),
                    reason,
                }
            })?;
            Ok(Located {
                sensor,
                origin: at(raw.name.span().start),
            })
        })
        .collect()
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let before = &text.as_bytes()[..offset.min(text.len())];
    before.iter().filter(|&&b| b == b'\n').count() + 1
}

/// Checks one sensor; the error names the field at fault and says how to fix it.
/// `named_by_topic` exempts the name of a `--topic` sensor from the name rules.
fn check_sensor(sensor: &Sensor, named_by_topic: bool) -> Result<(), (Field, String)> {
    if !named_by_topic {
        check_name(&sensor.name).map_err(|reason| (Field::Name, reason))?;
    }
    topic::check_filter(&sensor.filter)
        .map_err(|reason| (Field::Topic, format!("topic {:?}: {reason}", sensor.filter)))?;
    if let Some(pointer) = &sensor.format.json_pointer {
        if !pointer.is_empty() && !pointer.starts_with('/') {
            return Err((
                Field::JsonPointer,
                format!(
                    "JSON pointer {pointer:?} must start with '/', e.g. /value for \
                     {{\"value\": 21.4}} (an empty pointer reads the whole payload as JSON)"
                ),
            ));
        }
    }
    if let Some(precision) = sensor.precision {
        if precision > MAX_PRECISION {
            return Err((
                Field::Precision,
                format!("precision {precision} is too many decimals: give 0 to {MAX_PRECISION}"),
            ));
        }
    }
    Ok(())
}

/// A name users can type after `get`: 1 to [`MAX_NAME_CHARS`] letters (any script), digits, `_`,
/// `-` or `.`, and not a command word.
fn check_name(name: &str) -> Result<(), String> {
    const EXAMPLES: &str = "e.g. temp, baño or vib_oeste";
    if name.is_empty() {
        return Err(format!(
            "a sensor name cannot be empty: give a short word, {EXAMPLES}"
        ));
    }
    let chars = name.chars().count();
    if chars > MAX_NAME_CHARS {
        return Err(format!(
            "sensor name {name:?} has {chars} characters; the most is {MAX_NAME_CHARS}"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|&c| !(c.is_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(format!(
            "sensor name {name:?} cannot contain {c:?}: use letters, digits, '_', '-' and '.', \
             {EXAMPLES}"
        ));
    }
    if commands::is_command_word(name) {
        return Err(format!(
            "sensor name {name:?} is a command word, so \"get {name}\" would be ambiguous: \
             choose another name, e.g. {name}_1"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_come_from_room_tables() {
        let text = "[[sensor]]\nname = \"t\"\ntopic = \"a/b\"\n\n\
                    [[room]]\njid = \"lab@conference.example.org/sensei\"\nannounce_stale = true\n\n\
                    [[room]]\njid = \"class@conference.example.org\"\n";
        let path = Path::new("s.toml");
        let rooms = rooms_in(path, text).unwrap();
        assert_eq!(
            rooms,
            [
                FileRoom {
                    jid: "lab@conference.example.org/sensei".into(),
                    announce_stale: true,
                    origin: "s.toml, line 6".into()
                },
                FileRoom {
                    jid: "class@conference.example.org".into(),
                    announce_stale: false,
                    origin: "s.toml, line 10".into()
                }
            ]
        );
        // The sensors are read as before, and a misspelled key is an error.
        assert_eq!(parse_file(path, text, &defaults()).unwrap().len(), 1);
        let typo =
            "[[sensor]]\nname = \"t\"\ntopic = \"a/b\"\n[[room]]\njid = \"x@y\"\nannounce = true\n";
        assert!(rooms_in(path, typo).is_err());
    }

    const EXAMPLE_PATH: &str = "deploy/sensors.toml.example";
    const EXAMPLE: &str = include_str!("../../deploy/sensors.toml.example");

    fn defaults() -> SensorDefaults {
        SensorDefaults::default()
    }

    fn globals() -> SensorDefaults {
        SensorDefaults {
            json_pointer: Some("/value".into()),
            unit: "°C".into(),
            precision: Some(1),
        }
    }

    fn sensor(name: &str, filter: &str) -> Sensor {
        Sensor {
            name: name.into(),
            filter: filter.into(),
            format: PayloadFormat::default(),
            unit: String::new(),
            precision: None,
        }
    }

    fn spec_error(spec: &str) -> String {
        match parse_spec(spec, &defaults()) {
            Ok(sensor) => panic!("{spec:?} was accepted as {sensor:?}"),
            Err(error) => error.to_string(),
        }
    }

    fn file(text: &str) -> Result<Vec<Sensor>, SensorError> {
        parse_file(Path::new("/etc/mqtt2xmpp/sensors.toml"), text, &defaults())
    }

    fn file_error(text: &str) -> String {
        match file(text) {
            Ok(sensors) => panic!("accepted as {sensors:?}:\n{text}"),
            Err(error) => error.to_string(),
        }
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_full_sensor_spec_sets_every_field() {
        let sensor = parse_spec(
            "name=vib,topic=EDIFICIO_1/+/+/+/VIBR,json-pointer=/value,unit=mm/s,precision=2",
            &defaults(),
        )
        .unwrap();
        assert_eq!(
            sensor,
            Sensor {
                name: "vib".into(),
                filter: "EDIFICIO_1/+/+/+/VIBR".into(),
                format: PayloadFormat {
                    json_pointer: Some("/value".into())
                },
                unit: "mm/s".into(),
                precision: Some(2),
            }
        );
    }

    #[test]
    fn spec_keys_come_in_any_order_with_either_pointer_spelling() {
        let a = parse_spec("topic=t/1, unit=°C ,name=baño,json_pointer=/v", &defaults()).unwrap();
        let b = parse_spec("json-pointer=/v,name=baño,unit=°C,topic=t/1", &defaults()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.name, "baño");
        assert_eq!(a.unit, "°C");
    }

    #[test]
    fn spec_fields_left_out_come_from_the_global_flags() {
        let sensor = parse_spec("name=temp,topic=sensors/temperature", &globals()).unwrap();
        assert_eq!(sensor.format.json_pointer.as_deref(), Some("/value"));
        assert_eq!(sensor.unit, "°C");
        assert_eq!(sensor.precision, Some(1));
        // Given fields win, and an empty unit really means no unit.
        let sensor = parse_spec(
            "name=n,topic=t,unit=,precision=0,json-pointer=/x",
            &globals(),
        )
        .unwrap();
        assert_eq!(sensor.unit, "");
        assert_eq!(sensor.precision, Some(0));
        assert_eq!(sensor.format.json_pointer.as_deref(), Some("/x"));
    }

    #[test]
    fn bad_specs_say_what_to_write() {
        let unknown = spec_error("name=temp,topic=t,colour=red");
        assert!(unknown.starts_with("--sensor \"name=temp,topic=t,colour=red\""));
        assert!(unknown.contains("unknown key \"colour\""), "{unknown}");
        assert!(unknown.contains(SPEC_KEYS), "{unknown}");

        assert!(spec_error("topic=t").contains("name is missing"));
        assert!(spec_error("name=temp").contains("topic is missing"));
        assert!(spec_error("").contains("name is missing"));

        // A topic with a comma splits into a part that is not KEY=VALUE.
        let comma = spec_error("name=temp,topic=a/b,c");
        assert!(comma.contains("\"c\" is not KEY=VALUE"), "{comma}");
        assert!(comma.contains("--sensors-file"), "{comma}");
        assert!(spec_error("name=a,name=b,topic=t").contains("name is given twice"));

        assert!(spec_error("name=t,topic=t,precision=two").contains("0 to 9"));
        assert!(spec_error("name=t,topic=t,precision=-1").contains("0 to 9"));
        assert!(spec_error("name=t,topic=t,precision=10").contains("0 to 9"));
        assert!(spec_error("name=t,topic=t,json-pointer=value").contains("must start with '/'"));
        assert!(spec_error("name=t,topic=a/#/b").contains("topic \"a/#/b\""));
        assert!(spec_error("name=t,topic=").contains("cannot be empty"));
    }

    #[test]
    fn names_are_short_words_that_are_not_commands() {
        for good in [
            "temp",
            "temperatura",
            "baño",
            "vib_oeste",
            "P1.N-3",
            "温度",
            "a",
        ] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        assert!(check_name(&"x".repeat(32)).is_ok());
        assert!(check_name(&"ñ".repeat(32)).is_ok(), "characters, not bytes");
        assert!(check_name(&"x".repeat(33))
            .unwrap_err()
            .contains("the most is 32"));
        assert!(check_name("").unwrap_err().contains("cannot be empty"));
        for (bad, c) in [
            ("my temp", "' '"),
            ("a/b", "'/'"),
            ("t+", "'+'"),
            ("#", "'#'"),
        ] {
            let error = check_name(bad).unwrap_err();
            assert!(error.contains(&format!("cannot contain {c}")), "{error}");
        }
        for word in ["get", "Help", "LISTA", "estadísticas"] {
            let error = spec_error(&format!("name={word},topic=t"));
            assert!(error.contains("is a command word"), "{error}");
        }
    }

    #[test]
    fn the_example_file_is_valid_and_documents_the_building() {
        let path = Path::new(EXAMPLE_PATH);
        let sensors = parse_file(path, EXAMPLE, &defaults()).unwrap();
        let sensors = Sensors::new(sensors).unwrap();
        let names: Vec<&str> = sensors.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["temp", "temperatura", "humedad", "luz", "vib_oeste", "vib"]
        );

        let default = sensors.default_sensor();
        assert_eq!(default.filter, DEFAULT_TOPIC);
        assert_eq!(default.format.json_pointer, None);
        assert_eq!((default.unit.as_str(), default.precision), ("°C", Some(1)));

        // The building's payloads are {"value": 21.4, "unit": "C", "ts": "..."}.
        let payload = br#"{"value": 21.4, "unit": "C", "ts": "2026-11-21T08:00:00Z"}"#;
        for (kind, name) in [
            ("TEMP", "temperatura"),
            ("HUM", "humedad"),
            ("LUX", "luz"),
            ("VIBR", "vib"),
        ] {
            let topic = format!("EDIFICIO_1/P_2/N/3/{kind}");
            let sensor = sensors
                .for_topic(&topic)
                .unwrap_or_else(|| panic!("no sensor for {topic}"));
            assert_eq!(sensor.name, name, "{topic}");
            let reading = crate::bridge::reading::parse(payload, &sensor.format).unwrap();
            assert_eq!(reading.value, 21.4, "{name}");
        }
        // And the default sensor reads what `mqtt2xmpp simulate` publishes.
        let simple = sensors.for_topic(DEFAULT_TOPIC).unwrap();
        let reading = crate::bridge::reading::parse(b"21.37", &simple.format).unwrap();
        assert_eq!(reading.value, 21.37);
        // The west wing's vibration sensor is listed before the one for all wings, so it reads
        // the west wing: what the example's comment promises.
        assert_eq!(
            sensors.for_topic("EDIFICIO_1/P_1/O/1/VIBR").unwrap().name,
            "vib_oeste"
        );
        assert_eq!(
            sensors.for_topic("EDIFICIO_1/P_1/S/1/VIBR").unwrap().name,
            "vib"
        );
        assert_eq!(
            sensors.by_name("vib_oeste").unwrap().filter,
            "EDIFICIO_1/+/O/+/VIBR"
        );
        assert_eq!(sensors.by_name("vib").unwrap().unit, "mm/s");
        assert_eq!(sensors.by_name("humedad").unwrap().unit, "%");
        assert_eq!(sensors.by_name("luz").unwrap().precision, Some(0));
    }

    #[test]
    fn file_fields_left_out_come_from_the_global_flags() {
        let text = "[[sensor]]\nname = \"a\"\ntopic = \"t/a\"\n\n\
                    [[sensor]]\nname = \"b\"\ntopic = \"t/b\"\nunit = \"\"\nprecision = 3\n\
                    json-pointer = \"/x\"\n";
        let sensors = parse_file(Path::new("s.toml"), text, &globals()).unwrap();
        assert_eq!(sensors[0].format.json_pointer.as_deref(), Some("/value"));
        assert_eq!(
            (sensors[0].unit.as_str(), sensors[0].precision),
            ("°C", Some(1))
        );
        assert_eq!(sensors[1].format.json_pointer.as_deref(), Some("/x"));
        assert_eq!(
            (sensors[1].unit.as_str(), sensors[1].precision),
            ("", Some(3))
        );
    }

    #[test]
    fn an_unknown_key_in_the_file_is_shown_with_its_path_and_line() {
        let error = file_error(
            "# Sensors\n[[sensor]]\nname = \"temp\"\ntopic = \"sensors/temperature\"\n\
             units = \"°C\"\n",
        );
        assert!(
            error.starts_with("--sensors-file /etc/mqtt2xmpp/sensors.toml: "),
            "{error}"
        );
        assert!(error.contains("line 5"), "{error}");
        assert!(error.contains("unknown field `units`"), "{error}");
        assert!(
            error.contains("`unit`"),
            "the valid keys are listed: {error}"
        );
        // A misspelled table name too.
        let error = file_error("[[sensors]]\nname = \"temp\"\ntopic = \"t\"\n");
        assert!(
            error.contains("line 1") && error.contains("`sensors`"),
            "{error}"
        );
    }

    #[test]
    fn wrong_types_and_missing_keys_in_the_file_are_shown_with_their_line() {
        let error = file_error("[[sensor]]\nname = \"temp\"\ntopic = \"t\"\nprecision = \"1\"\n");
        assert!(
            error.contains("line 4") && error.contains("invalid type"),
            "{error}"
        );
        let error = file_error("[[sensor]]\nname = \"temp\"\ntopic = \"t\"\nprecision = -1\n");
        assert!(error.contains("line 4"), "{error}");
        let error = file_error("[[sensor]]\nname = \"temp\"\n");
        assert!(error.contains("missing field `topic`"), "{error}");
        let error = file_error("[[sensor]]\nname = temp\n");
        assert!(error.contains("line 2"), "{error}");
    }

    #[test]
    fn bad_sensors_in_the_file_are_shown_with_the_line_of_the_bad_value() {
        let two = |second: &str| {
            format!(
                "[[sensor]]\nname = \"ok\"\ntopic = \"a\"\n\n[[sensor]]\nname = \"x\"\n\
                 topic = \"b\"\n{second}\n"
            )
        };
        let error = file_error(&two("precision = 12"));
        assert_eq!(
            error,
            "/etc/mqtt2xmpp/sensors.toml, line 8: precision 12 is too many decimals: give 0 to 9"
        );
        let error = file_error(&two("json_pointer = \"value\""));
        assert!(
            error.starts_with("/etc/mqtt2xmpp/sensors.toml, line 8: "),
            "{error}"
        );
        assert!(error.contains("must start with '/'"), "{error}");

        let error = file_error("[[sensor]]\nname = \"vib\"\ntopic = \"EDIFICIO_1/#/VIBR\"\n");
        assert!(
            error.starts_with("/etc/mqtt2xmpp/sensors.toml, line 3: topic"),
            "{error}"
        );
        assert!(error.contains("'#' only as the last level"), "{error}");

        let error = file_error("\n[[sensor]]\nname = \"vib oeste\"\ntopic = \"t\"\n");
        assert!(
            error.starts_with("/etc/mqtt2xmpp/sensors.toml, line 3: "),
            "{error}"
        );
        assert!(error.contains("cannot contain ' '"), "{error}");

        let error = file_error("[[sensor]]\nname = \"ver\"\ntopic = \"t\"\n");
        assert!(
            error.contains("line 2") && error.contains("command word"),
            "{error}"
        );
    }

    #[test]
    fn a_file_without_sensors_is_an_error() {
        for text in ["", "# nothing yet\n"] {
            let error = file_error(text);
            assert!(
                error.starts_with("--sensors-file /etc/mqtt2xmpp/sensors.toml: no sensors"),
                "{error}"
            );
            assert!(error.contains("[[sensor]]"), "{error}");
        }
    }

    #[test]
    fn missing_and_unreadable_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("sensors.toml");
        let error = Sensors::from_flags(&[], Some(&missing), &[], &defaults()).unwrap_err();
        assert!(matches!(error, SensorError::Read { .. }), "{error:?}");
        assert!(
            error.to_string().starts_with(&format!(
                "--sensors-file {}: cannot read it",
                missing.display()
            )),
            "{error}"
        );
        // A directory is not a file.
        let error = Sensors::from_flags(&[], Some(dir.path()), &[], &defaults()).unwrap_err();
        assert!(matches!(error, SensorError::Read { .. }), "{error:?}");
        // Nor is a binary.
        std::fs::write(&missing, b"\xff\xfe[[sensor]]").unwrap();
        let error = Sensors::from_flags(&[], Some(&missing), &[], &defaults()).unwrap_err();
        assert!(matches!(error, SensorError::Read { .. }), "{error:?}");
    }

    #[test]
    fn sensors_come_from_flags_then_file_then_topics() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sensors.toml");
        std::fs::write(
            &path,
            "[[sensor]]\nname = \"hum\"\ntopic = \"h\"\n\n[[sensor]]\nname = \"lux\"\n\
             topic = \"l\"\n",
        )
        .unwrap();
        let sensors = Sensors::from_flags(
            &strings(&["name=temp,topic=t", "name=vib,topic=v/+"]),
            Some(&path),
            &strings(&["raw/#", "other/topic"]),
            &globals(),
        )
        .unwrap();
        let names: Vec<&str> = sensors.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["temp", "vib", "hum", "lux", "raw/#", "other/topic"]);
        assert_eq!(sensors.default_sensor().name, "temp");
        assert_eq!(sensors.len(), 6);
        assert!(!sensors.is_empty());
        // A --topic sensor reads and shows its values as the global flags say.
        let raw = sensors.by_name("raw/#").unwrap();
        assert_eq!(raw.filter, "raw/#");
        assert_eq!(raw.unit, "°C");

        // Without --sensor the file's first sensor is the default; without both, the first
        // --topic.
        let from_file = Sensors::from_flags(&[], Some(&path), &strings(&["x"]), &globals());
        assert_eq!(from_file.unwrap().default_sensor().name, "hum");
        let topics = Sensors::from_flags(&[], None, &strings(&["x", "y"]), &globals()).unwrap();
        assert_eq!(topics.default_sensor().name, "x");
    }

    #[test]
    fn without_any_sensor_the_bot_reads_the_default_topic() {
        let sensors = Sensors::from_flags(&[], None, &[], &globals()).unwrap();
        assert_eq!(sensors.len(), 1);
        let sensor = sensors.default_sensor();
        assert_eq!(
            (sensor.name.as_str(), sensor.filter.as_str()),
            (DEFAULT_TOPIC, DEFAULT_TOPIC)
        );
        assert_eq!(sensor.unit, "°C", "the global flags still apply");
    }

    #[test]
    fn topic_sensors_may_have_any_valid_topic_as_name() {
        let sensor = topic_sensor("EDIFICIO_1/+/O/+/VIBR", &defaults()).unwrap();
        assert_eq!(sensor.name, "EDIFICIO_1/+/O/+/VIBR");
        assert!(topic_sensor("help", &defaults()).is_ok());
        let error = topic_sensor("a/#/b", &defaults()).unwrap_err().to_string();
        assert!(
            error.starts_with("--topic \"a/#/b\": '+' must stand alone"),
            "{error}"
        );
        let error = Sensors::from_flags(&[], None, &strings(&[""]), &defaults()).unwrap_err();
        assert!(error.to_string().contains("cannot be empty"), "{error}");
    }

    #[test]
    fn names_must_be_unique_ignoring_case() {
        let error = Sensors::from_flags(
            &strings(&["name=Temp,topic=a", "name=temp,topic=b"]),
            None,
            &[],
            &defaults(),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("\"temp\" is used twice"), "{error}");
        assert!(error.contains("--sensor \"name=Temp,topic=a\""), "{error}");
        assert!(error.contains("--sensor \"name=temp,topic=b\""), "{error}");

        let error = Sensors::from_flags(&[], None, &strings(&["a/b", "a/b"]), &defaults())
            .unwrap_err()
            .to_string();
        assert!(error.contains("\"a/b\" is used twice"), "{error}");

        // Across the file and the flags, the file's line is named.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        std::fs::write(&path, "[[sensor]]\ntopic = \"x\"\nname = \"TEMP\"\n").unwrap();
        let error = Sensors::from_flags(
            &strings(&["name=temp,topic=t"]),
            Some(&path),
            &[],
            &defaults(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains(&format!("{}, line 3", path.display())),
            "{error}"
        );

        let error = Sensors::new(vec![sensor("a", "x"), sensor("A", "y")]).unwrap_err();
        assert!(
            matches!(error, SensorError::DuplicateName { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn new_checks_the_list() {
        assert_eq!(Sensors::new(Vec::new()).unwrap_err(), SensorError::Empty);
        let error = Sensors::new(vec![sensor("ok", "a"), sensor("get", "b")]).unwrap_err();
        assert!(
            error.to_string().starts_with("sensor 2 (\"get\"): "),
            "{error}"
        );
        assert!(Sensors::new(vec![sensor("ok", "a/+/#/b")]).is_err());
        // A sensor named by its topic is exempt from the name rules, as with --topic.
        assert!(Sensors::new(vec![sensor("a/+", "a/+")]).is_ok());
    }

    #[test]
    fn the_first_matching_sensor_owns_a_topic() {
        let sensors = Sensors::new(vec![
            sensor("oeste", "EDIFICIO_1/+/O/+/VIBR"),
            sensor("vib", "EDIFICIO_1/+/+/+/VIBR"),
            sensor("all", "EDIFICIO_1/#"),
        ])
        .unwrap();
        let owner = |topic: &str| sensors.for_topic(topic).map(|s| s.name.as_str());
        assert_eq!(owner("EDIFICIO_1/P_2/O/4/VIBR"), Some("oeste"));
        assert_eq!(owner("EDIFICIO_1/P_2/N/4/VIBR"), Some("vib"));
        assert_eq!(owner("EDIFICIO_1/P_2/N/4/TEMP"), Some("all"));
        assert_eq!(owner("EDIFICIO_2/P_2/N/4/TEMP"), None);
    }

    #[test]
    fn names_are_found_ignoring_case() {
        let sensors = Sensors::new(vec![sensor("Baño", "b"), sensor("temp", "t")]).unwrap();
        assert_eq!(sensors.by_name("baño").unwrap().filter, "b");
        assert_eq!(sensors.by_name("BAÑO").unwrap().filter, "b");
        assert_eq!(sensors.by_name("TEMP").unwrap().filter, "t");
        assert!(sensors.by_name("tem").is_none());
    }

    #[test]
    fn each_filter_is_subscribed_to_once_in_order() {
        let sensors = Sensors::new(vec![
            sensor("temp", "house/+/temp"),
            sensor("garden", "garden/temp"),
            sensor("kitchen", "house/+/temp"),
            sensor("door", "house/door"),
        ])
        .unwrap();
        assert_eq!(
            sensors.filters(),
            ["house/+/temp", "garden/temp", "house/door"]
        );
    }

    #[test]
    fn filters_another_covers_are_not_subscribed_to() {
        let sensors = Sensors::new(vec![
            sensor("temp", "house/+/temp"),
            sensor("hum", "house/#"),
            sensor("garden", "garden/temp"),
            sensor("kitchen", "house/kitchen/temp"),
        ])
        .unwrap();
        assert_eq!(sensors.filters(), ["house/#", "garden/temp"]);
    }
}
