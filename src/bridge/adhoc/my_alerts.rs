//! "My alerts": the contact's alerts (as the `alerts` text command lists them) with a
//! `list-multi` to remove some; removal goes through the `alert off` code
//! ([`Bot::remove_alerts`]). Without alerts it completes at once with a note.

use tokio_xmpp::parsers::data_forms::FieldType;

use super::command::Note;
use super::sessions::Values;
use super::{form, Ctx, Finish, Step};
use crate::bridge::bot::{lock, Bot};
use crate::bridge::reply;

pub(super) fn form(bot: &Bot, ctx: &Ctx, values: &Values) -> Step {
    let mut options: Vec<(String, String)> = Vec::new();
    for (alert, _) in lock(&bot.alerts).of(ctx.contact) {
        let unit = bot.unit_of(&alert.key.target, &alert.filter);
        let direction = if alert.key.above { "above" } else { "below" };
        let label = format!(
            "{direction} {} (margin {})",
            reply::format_value(alert.threshold, None, unit),
            reply::format_value(alert.margin, None, unit)
        );
        // Removal is by sensor, both directions, as `alert off <sensor>` does.
        match options.iter_mut().find(|(t, _)| *t == alert.key.target) {
            Some((_, existing)) => {
                existing.push_str(", ");
                existing.push_str(&label);
            }
            None => options.push((
                alert.key.target.clone(),
                format!("{}: {label}", alert.key.target),
            )),
        }
    }
    if options.is_empty() {
        return Step::Done(Finish::note(Note::info(bot.alerts_of(ctx.contact))));
    }
    let chosen = values.get("remove").cloned().unwrap_or_default();
    Step::Form(form::form(
        "My alerts",
        &bot.alerts_of(ctx.contact),
        vec![form::choice(
            "remove",
            FieldType::ListMulti,
            "Remove",
            options,
            &chosen,
        )],
    ))
}

pub(super) fn finish(bot: &Bot, ctx: &Ctx, values: &Values) -> Finish {
    let removed: usize = values
        .get("remove")
        .into_iter()
        .flatten()
        .map(|target| bot.remove_alerts(ctx.contact, Some(target)))
        .sum();
    let text = match removed {
        0 => "No alert removed.".to_string(),
        1 => "Removed 1 alert.".to_string(),
        n => format!("Removed {n} alerts."),
    };
    Finish::note(Note::info(text))
}
