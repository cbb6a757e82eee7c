//! "Read sensors": a list of the sensors with their current values as labels, and a topic
//! pattern to type in; the result is a table (XEP-0004 §3.4) of sensor, topic, value, unit,
//! age and whether it is stale, one row per topic, at most [`reply::MAX_LINES`] rows.

use std::time::Instant;

use tokio_xmpp::parsers::data_forms::{DataForm, FieldType};

use super::command::Note;
use super::form::{self, single};
use super::sessions::Values;
use super::{Ctx, Finish};
use crate::bridge::bot::Bot;
use crate::bridge::cache::Entry;
use crate::bridge::reply;

/// The table's columns.
const COLUMNS: [(&str, &str); 6] = [
    ("sensor", "Sensor"),
    ("topic", "Topic"),
    ("value", "Value"),
    ("unit", "Unit"),
    ("age", "Age"),
    ("stale", "Stale"),
];

pub(super) fn form(bot: &Bot, ctx: &Ctx, values: &Values) -> DataForm {
    let options = bot
        .sensors
        .iter()
        .take(reply::MAX_LINES)
        .map(|s| {
            let label = if crate::topic::is_pattern(&s.filter) {
                format!(
                    "{} ({}): {} topics",
                    s.name,
                    s.filter,
                    bot.cache.matching(&s.filter).len()
                )
            } else {
                match bot.cache.get(&s.filter) {
                    Some(entry) => format!(
                        "{}: {} ({} ago)",
                        s.name,
                        reply::format_value(entry.reading.value, s.precision, &s.unit),
                        reply::format_age(ctx.now.saturating_duration_since(entry.received_at))
                    ),
                    None => format!("{}: no reading yet", s.name),
                }
            };
            (s.name.clone(), label)
        })
        .collect();
    let chosen = values.get("sensors").cloned().unwrap_or_default();
    let mut pattern = form::field("pattern", FieldType::TextSingle, "And a topic or pattern");
    pattern.desc = Some("MQTT wildcards + and # allowed".into());
    pattern
        .values
        .extend(single(values, "pattern").map(String::from));
    form::form(
        "Read sensors",
        "Choose sensors, or type a topic pattern. Nothing chosen reads every sensor.",
        vec![
            form::choice("sensors", FieldType::ListMulti, "Sensors", options, &chosen),
            pattern,
        ],
    )
}

pub(super) fn check(bot: &Bot, values: &Values) -> Result<(), String> {
    for name in values.get("sensors").into_iter().flatten() {
        if bot.sensors.by_name(name).is_none() {
            return Err(format!("There is no sensor called {name}."));
        }
    }
    if let Some(pattern) = single(values, "pattern") {
        bot.resolve(pattern)?;
    }
    Ok(())
}

pub(super) fn finish(bot: &Bot, ctx: &Ctx, values: &Values) -> Finish {
    let mut targets: Vec<&str> = values
        .get("sensors")
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect();
    targets.extend(single(values, "pattern"));
    if targets.is_empty() {
        targets = bot.sensors.iter().map(|s| s.name.as_str()).collect();
    }
    let mut rows = Vec::new();
    for target in targets {
        let Ok((label, filter)) = bot.resolve(target) else {
            continue;
        };
        if crate::topic::is_pattern(filter) {
            for (topic, entry) in bot.cache.matching(filter) {
                rows.push(row(bot, label, &topic, Some(&entry), ctx.now));
            }
        } else {
            rows.push(row(
                bot,
                label,
                filter,
                bot.cache.get(filter).as_ref(),
                ctx.now,
            ));
        }
    }
    let total = rows.len();
    rows.truncate(reply::MAX_LINES);
    let mut notes = Vec::new();
    if total > reply::MAX_LINES {
        notes.push(Note::info(format!(
            "Showing {} of {total} topics: choose fewer sensors or a narrower pattern.",
            reply::MAX_LINES
        )));
    }
    Finish {
        form: Some(form::table("Readings", &COLUMNS, rows)),
        notes,
    }
}

/// One topic's row: the value without its unit (the unit has its column).
fn row(bot: &Bot, label: &str, topic: &str, entry: Option<&Entry>, now: Instant) -> Vec<String> {
    let (unit, precision) = bot
        .sensors
        .for_topic(topic)
        .map_or(("", None), |s| (s.unit.as_str(), s.precision));
    let Some(entry) = entry else {
        return vec![
            label.to_string(),
            topic.to_string(),
            "—".into(),
            unit.to_string(),
            "no reading yet".into(),
            "yes".into(),
        ];
    };
    let age = now.saturating_duration_since(entry.received_at);
    let age_text = if entry.retained {
        format!("at least {} (retained)", reply::format_age(age))
    } else {
        reply::format_age(age)
    };
    let stale = if age > bot.settings.stale_after {
        "yes"
    } else {
        "no"
    };
    vec![
        label.to_string(),
        topic.to_string(),
        reply::format_value(entry.reading.value, precision, ""),
        unit.to_string(),
        age_text,
        stale.into(),
    ]
}
