//! "Statistics", in two stages so `prev` means something: first the sensor (or a topic
//! pattern), then the window; the result holds min, max, average, count and the sparkline,
//! computed by the `stats` text command's code ([`Bot::stats_report`]).

use std::time::Duration;

use tokio_xmpp::parsers::data_forms::{DataForm, FieldType};

use super::command::Note;
use super::sessions::Values;
use super::{form, target, target_fields, Ctx, Finish};
use crate::bridge::bot::Bot;
use crate::bridge::commands::{DEFAULT_WINDOW, MAX_WINDOW};
use crate::bridge::reply;

/// The windows offered (as the text command writes them) and their labels.
const WINDOWS: [(&str, &str); 6] = [
    ("15m", "15 minutes"),
    ("1h", "1 hour"),
    ("6h", "6 hours"),
    ("1d", "1 day"),
    ("7d", "7 days"),
    ("30d", "30 days"),
];

pub(super) fn form(bot: &Bot, stage: usize, values: &Values) -> DataForm {
    if stage == 0 {
        return form::form(
            "Statistics (1/2): sensor",
            "Choose the sensor, or type a topic pattern.",
            target_fields(bot, values),
        );
    }
    let options = WINDOWS
        .iter()
        .map(|(value, label)| (value.to_string(), label.to_string()))
        .collect();
    let chosen = vec![form::single(values, "window").unwrap_or("1h").to_string()];
    form::form(
        "Statistics (2/2): window",
        &format!(
            "Statistics of {} over the last…",
            target(values).unwrap_or("?")
        ),
        vec![form::choice(
            "window",
            FieldType::ListSingle,
            "Window",
            options,
            &chosen,
        )],
    )
}

/// The window chosen, as the text command takes it (`90s`, `30m`, `6h`, `2d`).
fn window(values: &Values) -> Result<Duration, String> {
    let Some(text) = form::single(values, "window") else {
        return Ok(DEFAULT_WINDOW);
    };
    match humantime::parse_duration(text) {
        Ok(w) if w.is_zero() => Err("The window must be longer than zero.".into()),
        Ok(w) if w > MAX_WINDOW => Err("The window can be at most 30 days.".into()),
        Ok(w) => Ok(w),
        Err(_) => Err(format!("\"{text}\" is not a window (e.g. 30m, 6h, 2d).")),
    }
}

pub(super) fn check(bot: &Bot, stage: usize, values: &Values) -> Result<(), String> {
    match stage {
        0 => super::check_target(bot, values),
        _ => window(values).map(|_| ()),
    }
}

pub(super) fn finish(bot: &Bot, ctx: &Ctx, values: &Values) -> Finish {
    let (Some(target), Ok(window)) = (target(values), window(values)) else {
        return Finish::note(Note::error("Choose a sensor and a window."));
    };
    let report = match bot.stats_report(target, window, ctx.now) {
        Ok(report) => report,
        Err(text) => return Finish::note(Note::error(text)),
    };
    let Some(figures) = report.figures else {
        return Finish::note(Note::info(format!(
            "No readings of {} in the last {}.",
            report.what,
            reply::format_age(window)
        )));
    };
    // A chart too, sent as a message, when the client loop can (see `crate::bridge::chart`).
    bot.charts.want(ctx.contact, target, window, true);
    let result = form::result(
        "Statistics",
        vec![
            form::text("sensor", "Sensor", &report.what),
            form::text("window", "Window", &reply::format_age(window)),
            form::text("min", "Minimum", &figures.min),
            form::text("max", "Maximum", &figures.max),
            form::text("avg", "Average", &figures.avg),
            form::text("count", "Readings", &figures.count.to_string()),
            form::text("sparkline", "Sparkline", &figures.sparkline),
        ],
    );
    let notes = if report.covered {
        Vec::new()
    } else {
        vec![Note {
            type_: super::command::NoteType::Warn,
            text: bot.history_note(),
        }]
    };
    Finish {
        form: Some(result.into()),
        notes,
    }
}
