//! "Stale sensors": runs at once (no form) and answers with a table of the topics silent for
//! over `--stale-after` and the sensors never heard from, found by the same code as the
//! `stale` text command ([`Bot::stale_report`]).

use super::command::Note;
use super::{form, Ctx, Finish};
use crate::bridge::bot::Bot;
use crate::bridge::reply;

/// The table's columns.
const COLUMNS: [(&str, &str); 3] = [
    ("topic", "Topic"),
    ("value", "Last value"),
    ("age", "Silent for"),
];

pub(super) fn finish(bot: &Bot, ctx: &Ctx) -> Finish {
    let stale_after = bot.settings.stale_after;
    let report = bot.stale_report(ctx.now);
    let mut rows: Vec<Vec<String>> = report
        .never
        .iter()
        .map(|filter| vec![filter.clone(), "—".into(), "since the bot started".into()])
        .collect();
    rows.extend(report.silent.iter().map(|(topic, entry)| {
        let (unit, precision) = bot
            .sensors
            .for_topic(topic)
            .map_or(("", None), |s| (s.unit.as_str(), s.precision));
        vec![
            topic.clone(),
            reply::format_value(entry.reading.value, precision, unit),
            reply::format_age(ctx.now.saturating_duration_since(entry.received_at)),
        ]
    }));
    if rows.is_empty() {
        return Finish::note(Note::info(report.all_fresh(stale_after)));
    }
    let count = rows.len();
    rows.truncate(reply::MAX_LINES);
    let mut text = format!(
        "{count} of {} topics have sent nothing for over {}.",
        report.total,
        reply::format_age(stale_after)
    );
    if count > reply::MAX_LINES {
        text.push_str(&format!(" Showing the first {}.", reply::MAX_LINES));
    }
    Finish {
        form: Some(form::table("Stale sensors", &COLUMNS, rows)),
        notes: vec![Note::info(text)],
    }
}
