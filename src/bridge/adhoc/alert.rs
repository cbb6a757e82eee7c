//! "Set an alert", in two stages: the sensor (or a topic pattern), then the direction, the
//! threshold and the margin as XEP-0122 number fields. A threshold or margin that is not a
//! number shows the second form again with an `error` note. The alert is set by the `alert`
//! text command's code ([`Bot::set_alert`]), with the same bounds and the same confirmation.

use tokio_xmpp::parsers::data_forms::{DataForm, FieldType};

use super::command::Note;
use super::sessions::Values;
use super::{form, target, target_fields, Ctx, Finish};
use crate::bridge::bot::Bot;

pub(super) fn form(bot: &Bot, stage: usize, values: &Values) -> DataForm {
    if stage == 0 {
        return form::form(
            "Set an alert (1/2): sensor",
            "Choose the sensor to watch, or type a topic pattern.",
            target_fields(bot, values),
        );
    }
    let direction = vec![form::single(values, "direction")
        .unwrap_or("above")
        .to_string()];
    let mut margin = form::decimal("margin", "Margin", form::single(values, "margin"), false);
    margin.desc = Some(
        "How far back past the threshold before the alert re-arms; empty for the default".into(),
    );
    form::form(
        "Set an alert (2/2): threshold",
        &format!(
            "Tell me when {} crosses a threshold.",
            target(values).unwrap_or("?")
        ),
        vec![
            form::choice(
                "direction",
                FieldType::ListSingle,
                "When it goes",
                vec![
                    ("above".into(), "above".into()),
                    ("below".into(), "below".into()),
                ],
                &direction,
            ),
            form::decimal(
                "threshold",
                "Threshold",
                form::single(values, "threshold"),
                true,
            ),
            margin,
        ],
    )
}

pub(super) fn check(bot: &Bot, stage: usize, values: &Values) -> Result<(), String> {
    if stage == 0 {
        return super::check_target(bot, values);
    }
    if !matches!(
        form::single(values, "direction"),
        None | Some("above" | "below")
    ) {
        return Err("The direction is above or below.".into());
    }
    form::number(values, "threshold")?.ok_or("The threshold is required.")?;
    if form::number(values, "margin")?.is_some_and(|m| m < 0.0) {
        return Err("The margin cannot be negative.".into());
    }
    Ok(())
}

pub(super) fn finish(bot: &Bot, ctx: &Ctx, values: &Values) -> Finish {
    let (Some(target), Ok(Some(threshold)), Ok(margin)) = (
        target(values),
        form::number(values, "threshold"),
        form::number(values, "margin"),
    ) else {
        return Finish::note(Note::error("Choose a sensor and a threshold."));
    };
    let above = form::single(values, "direction") != Some("below");
    match bot.set_alert(ctx.contact, target, above, threshold, margin, ctx.now) {
        Ok(text) => Finish::note(Note::info(text)),
        Err(text) => Finish::note(Note::error(text)),
    }
}
