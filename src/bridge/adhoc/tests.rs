//! The ad-hoc commands as a client drives them: IQ payloads in, answers out, on a bot fed
//! with readings (no network).

use std::str::FromStr;
use std::time::{Duration, Instant};

use tokio_xmpp::jid::Jid;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::data_forms::DataForm;
use tokio_xmpp::parsers::disco::{DiscoInfoResult, DiscoItemsResult};
use tokio_xmpp::parsers::stanza_error::{DefinedCondition, StanzaError};

use super::command::NS;
use super::sessions::{LIFETIME, PER_CONTACT};
use crate::bridge::bot::testing::{building_bot, fill, sensor, settings, ALICE};
use crate::bridge::bot::{lock, Bot};
use crate::bridge::cache::{Cache, CacheLimits};
use crate::bridge::sensors::Sensors;

const PHONE: &str = "alice@localhost/phone";
const BOT: &str = "bot@localhost/mqtt2xmpp";

fn jid(text: &str) -> Jid {
    Jid::from_str(text).unwrap()
}

fn ask(
    bot: &Bot,
    from: &str,
    xml: &str,
    is_get: bool,
    now: Instant,
) -> Result<Element, Box<StanzaError>> {
    let payload: Element = xml.parse().unwrap();
    bot.adhoc_iq(&jid(from), &jid(BOT), &payload, is_get, now)
        .expect("the ad-hoc commands answer this")
}

/// Sends a `<command/>` with `attrs` and `fields` (var, values) in a submitted form.
fn command(
    bot: &Bot,
    from: &str,
    attrs: &str,
    fields: &[(&str, &[&str])],
    now: Instant,
) -> Result<Element, Box<StanzaError>> {
    let form = if fields.is_empty() {
        String::new()
    } else {
        let fields: String = fields
            .iter()
            .map(|(var, values)| {
                let values: String = values
                    .iter()
                    .map(|v| format!("<value>{v}</value>"))
                    .collect();
                format!("<field var='{var}'>{values}</field>")
            })
            .collect();
        format!("<x xmlns='jabber:x:data' type='submit'>{fields}</x>")
    };
    ask(
        bot,
        from,
        &format!("<command xmlns='{NS}' {attrs}>{form}</command>"),
        false,
        now,
    )
}

fn status(answer: &Element) -> &str {
    answer.attr("status").unwrap_or("")
}

fn session(answer: &Element) -> String {
    answer.attr("sessionid").unwrap().to_string()
}

fn form(answer: &Element) -> DataForm {
    DataForm::try_from(answer.get_child("x", "jabber:x:data").unwrap().clone()).unwrap()
}

fn notes(answer: &Element) -> Vec<(String, String)> {
    answer
        .children()
        .filter(|c| c.is("note", NS))
        .map(|n| (n.attr("type").unwrap_or("").to_string(), n.text()))
        .collect()
}

fn actions(answer: &Element) -> Vec<String> {
    let Some(actions) = answer.get_child("actions", NS) else {
        return Vec::new();
    };
    let mut out = vec![format!("default {}", actions.attr("execute").unwrap_or(""))];
    out.extend(actions.children().map(|c| c.name().to_string()));
    out
}

fn value(form: &DataForm, var: &str) -> String {
    form.fields
        .iter()
        .find(|f| f.var.as_deref() == Some(var))
        .map(|f| f.values.join(","))
        .unwrap_or_default()
}

/// The `<item/>` rows of a result table, as var → value per row.
fn rows(answer: &Element) -> Vec<Vec<(String, String)>> {
    answer
        .get_child("x", "jabber:x:data")
        .unwrap()
        .children()
        .filter(|c| c.name() == "item")
        .map(|item| {
            item.children()
                .map(|f| {
                    let value = f.children().next().map(|v| v.text()).unwrap_or_default();
                    (f.attr("var").unwrap_or("").to_string(), value)
                })
                .collect()
        })
        .collect()
}

fn condition(error: &StanzaError) -> (DefinedCondition, Option<String>) {
    (
        error.defined_condition.clone(),
        error.other.as_ref().map(|o| o.name().to_string()),
    )
}

#[test]
fn the_commands_node_lists_what_the_contact_may_run() {
    let (allowed, _) = building_bot(&[ALICE], CacheLimits::default());
    let now = Instant::now();
    let items = |bot: &Bot, from: &str| -> Vec<(String, String, String)> {
        let answer = ask(
            bot,
            from,
            &format!("<query xmlns='http://jabber.org/protocol/disco#items' node='{NS}'/>"),
            true,
            now,
        )
        .unwrap();
        DiscoItemsResult::try_from(answer)
            .unwrap()
            .items
            .into_iter()
            .map(|i| (i.jid.to_string(), i.node.unwrap(), i.name.unwrap()))
            .collect()
    };
    let all = items(&allowed, PHONE);
    assert_eq!(
        all.iter()
            .map(|(_, _, name)| name.as_str())
            .collect::<Vec<_>>(),
        [
            "Read sensors",
            "Statistics",
            "Set an alert",
            "My alerts",
            "Stale sensors"
        ]
    );
    // §2.2: items of the bot's full JID.
    assert!(all.iter().all(|(jid, _, _)| jid == BOT));
    // Not on the allow list: nothing to run.
    assert!(items(&allowed, "eve@localhost/x").is_empty());
    // An open bot: reading for anyone, but stats and alerts only for the allow list.
    let (open, _) = building_bot(&[], CacheLimits::default());
    assert_eq!(
        items(&open, "eve@localhost/x")
            .iter()
            .map(|(_, node, _)| node.as_str())
            .collect::<Vec<_>>(),
        ["read-sensors", "my-alerts", "stale-sensors"]
    );
    // Other nodes and plain disco are not the commands' business.
    let other: Element = "<query xmlns='http://jabber.org/protocol/disco#items'/>"
        .parse()
        .unwrap();
    assert!(allowed
        .adhoc_iq(&jid(PHONE), &jid(BOT), &other, true, now)
        .is_none());
}

#[test]
fn disco_info_on_a_command_says_it_is_a_command_node() {
    let (bot, _) = building_bot(&[ALICE], CacheLimits::default());
    let now = Instant::now();
    let answer = ask(
        &bot,
        PHONE,
        "<query xmlns='http://jabber.org/protocol/disco#info' node='statistics'/>",
        true,
        now,
    )
    .unwrap();
    let info = DiscoInfoResult::try_from(answer).unwrap();
    assert_eq!(info.node.as_deref(), Some("statistics"));
    assert_eq!(info.identities[0].category, "automation");
    assert_eq!(info.identities[0].type_, "command-node");
    assert!(info.features.contains(NS) && info.features.contains("jabber:x:data"));
    let refused = ask(
        &bot,
        "eve@localhost/x",
        "<query xmlns='http://jabber.org/protocol/disco#info' node='statistics'/>",
        true,
        now,
    )
    .unwrap_err();
    assert_eq!(refused.defined_condition, DefinedCondition::Forbidden);
}

#[test]
fn stale_sensors_runs_at_once_with_a_table() {
    let (bot, _) = building_bot(&[ALICE], CacheLimits::default());
    let t0 = Instant::now();
    fill(&bot, t0);
    let later = t0 + Duration::from_secs(601);
    bot.ingest("sensors/temperature", b"22", false, later);
    let answer = command(
        &bot,
        PHONE,
        "node='stale-sensors' action='execute'",
        &[],
        later,
    )
    .unwrap();
    assert_eq!(status(&answer), "completed");
    assert!(
        answer.attr("sessionid").is_some(),
        "§3.4: a session id even when done"
    );
    let rows = rows(&answer);
    // The 32 building topics went silent; the temperature is fresh.
    assert_eq!(rows.len(), 32);
    assert_eq!(rows[0][0], ("topic".into(), "B/P_1/E/1/TEMP".into()));
    assert_eq!(rows[0][2], ("age".into(), "10 min".into()));
    assert_eq!(
        notes(&answer)[0].1,
        "32 of 33 topics have sent nothing for over 10 min."
    );
    // Same topics as the text command.
    let text = bot.chat(ALICE, "stale", later).unwrap();
    assert!(text.starts_with("32 of 33 topics"), "{text}");
}

#[test]
fn read_sensors_offers_current_values_and_answers_with_a_table() {
    let (bot, _) = building_bot(&[ALICE], CacheLimits::default());
    let t0 = Instant::now();
    fill(&bot, t0);
    let now = t0 + Duration::from_secs(3);
    let first = command(&bot, PHONE, "node='read-sensors'", &[], now).unwrap();
    assert_eq!(status(&first), "executing");
    assert_eq!(actions(&first), ["default complete", "complete"]);
    let shown = form(&first);
    let sensors = shown
        .fields
        .iter()
        .find(|f| f.var.as_deref() == Some("sensors"))
        .unwrap();
    let labels: Vec<_> = sensors
        .options
        .iter()
        .map(|o| o.label.clone().unwrap())
        .collect();
    assert_eq!(
        labels,
        [
            "temp: 21.5 °C (3 s ago)",
            "vib (B/+/+/+/VIBR): 16 topics",
            "b (B/#): 32 topics"
        ]
    );
    let id = session(&first);
    let done = command(
        &bot,
        PHONE,
        &format!("node='read-sensors' sessionid='{id}' action='complete'"),
        &[("sensors", &["temp"]), ("pattern", &["B/P_1/O/+/VIBR"])],
        now,
    )
    .unwrap();
    assert_eq!(status(&done), "completed");
    let rows = rows(&done);
    assert_eq!(rows.len(), 3);
    let row: Vec<&str> = rows[0].iter().map(|(_, v)| v.as_str()).collect();
    assert_eq!(
        row,
        ["temp", "sensors/temperature", "21.5", "°C", "3 s", "no"]
    );
    assert_eq!(rows[1][1].1, "B/P_1/O/1/VIBR");
    assert_eq!(rows[1][3].1, "mm/s");
    // The session is over (XEP-0050 §4.4: "no longer active ... completed").
    let again = command(
        &bot,
        PHONE,
        &format!("node='read-sensors' sessionid='{id}' action='complete'"),
        &[],
        now,
    )
    .unwrap_err();
    assert_eq!(
        condition(&again),
        (DefinedCondition::NotAllowed, Some("session-expired".into()))
    );
}

#[test]
fn statistics_takes_two_stages_goes_back_with_prev_and_matches_the_text_command() {
    let (bot, _) = building_bot(&[ALICE], CacheLimits::default());
    // An upload service is known: completing the command asks for a chart too.
    bot.charts.set_enabled(true);
    let t0 = Instant::now();
    for (i, value) in [20.0, 22.0, 24.0].iter().enumerate() {
        let at = t0 + Duration::from_secs(60 * i as u64);
        bot.ingest(
            "sensors/temperature",
            value.to_string().as_bytes(),
            false,
            at,
        );
    }
    let now = t0 + Duration::from_secs(180);
    let first = command(&bot, PHONE, "node='statistics' action='execute'", &[], now).unwrap();
    assert_eq!(actions(&first), ["default next", "next"]);
    assert_eq!(
        value(&form(&first), "sensor"),
        "temp",
        "the default sensor is preselected"
    );
    let id = session(&first);
    let attrs = |action: &str| format!("node='statistics' sessionid='{id}' action='{action}'");
    // Completing at the first stage is not offered.
    let early = command(
        &bot,
        PHONE,
        &attrs("complete"),
        &[("sensor", &["temp"])],
        now,
    )
    .unwrap_err();
    assert_eq!(
        condition(&early),
        (DefinedCondition::BadRequest, Some("bad-action".into()))
    );
    let second = command(&bot, PHONE, &attrs("next"), &[("sensor", &["vib"])], now).unwrap();
    assert_eq!(actions(&second), ["default complete", "prev", "complete"]);
    assert_eq!(value(&form(&second), "window"), "1h");
    // Back: the sensor chosen is still chosen; then forward with another one.
    let back = command(&bot, PHONE, &attrs("prev"), &[], now).unwrap();
    assert_eq!(value(&form(&back), "sensor"), "vib");
    assert_eq!(actions(&back), ["default next", "next"]);
    let prev_again = command(&bot, PHONE, &attrs("prev"), &[], now).unwrap_err();
    assert_eq!(condition(&prev_again).1.as_deref(), Some("bad-action"));
    // `execute` is the stage's default: next.
    command(
        &bot,
        PHONE,
        &attrs("execute"),
        &[("sensor", &["temp"])],
        now,
    )
    .unwrap();
    let done = command(&bot, PHONE, &attrs("complete"), &[("window", &["1h"])], now).unwrap();
    assert_eq!(status(&done), "completed");
    let asks = bot.charts.take();
    assert_eq!(asks.len(), 1, "{asks:?}");
    assert_eq!(
        (
            asks[0].contact.as_str(),
            asks[0].target.as_str(),
            asks[0].adhoc
        ),
        (ALICE, "temp", true)
    );
    let result = form(&done);
    assert_eq!(value(&result, "min"), "20 °C");
    assert_eq!(value(&result, "max"), "24 °C");
    assert_eq!(value(&result, "avg"), "22.00 °C");
    assert_eq!(value(&result, "count"), "3");
    let text = bot.chat(ALICE, "stats temp 1h", now).unwrap();
    assert!(text.contains(&value(&result, "sparkline")), "{text}");
    assert!(
        text.starts_with(
            "temp (sensors/temperature), last 1 h: min 20 °C, max 24 °C, avg 22.00 °C, 3 readings"
        ),
        "{text}"
    );
}

#[test]
fn a_bad_window_or_sensor_shows_the_form_again_with_a_note() {
    let (bot, _) = building_bot(&[ALICE], CacheLimits::default());
    let now = Instant::now();
    let id = session(&command(&bot, PHONE, "node='statistics'", &[], now).unwrap());
    let attrs = |action: &str| format!("node='statistics' sessionid='{id}' action='{action}'");
    let bad = command(&bot, PHONE, &attrs("next"), &[("pattern", &["B/#/x"])], now).unwrap();
    assert_eq!(status(&bad), "executing");
    assert_eq!(notes(&bad)[0].0, "error");
    assert!(notes(&bad)[0]
        .1
        .contains("neither a sensor nor a topic pattern"));
    command(
        &bot,
        PHONE,
        &attrs("next"),
        &[("sensor", &["temp"]), ("pattern", &[""])],
        now,
    )
    .unwrap();
    let bad = command(
        &bot,
        PHONE,
        &attrs("complete"),
        &[("window", &["31d"])],
        now,
    )
    .unwrap();
    assert_eq!(
        notes(&bad),
        [("error".into(), "The window can be at most 30 days.".into())]
    );
    let done = command(
        &bot,
        PHONE,
        &attrs("complete"),
        &[("window", &["15m"])],
        now,
    )
    .unwrap();
    assert_eq!(
        notes(&done),
        [(
            "info".into(),
            "No readings of temp (sensors/temperature) in the last 15 min.".into()
        )]
    );
}

#[test]
fn set_an_alert_types_its_numbers_and_refuses_words_for_them() {
    let (bot, _) = building_bot(&[ALICE], CacheLimits::default());
    let now = Instant::now();
    let id = session(&command(&bot, PHONE, "node='set-alert'", &[], now).unwrap());
    let attrs = |action: &str| format!("node='set-alert' sessionid='{id}' action='{action}'");
    let second = command(&bot, PHONE, &attrs("next"), &[("sensor", &["temp"])], now).unwrap();
    let xml = String::from(&second);
    assert!(
        xml.contains(
            "<validate xmlns='http://jabber.org/protocol/xdata-validate' datatype='xs:decimal'>"
        ),
        "{xml}"
    );
    let bad = command(
        &bot,
        PHONE,
        &attrs("complete"),
        &[("direction", &["above"]), ("threshold", &["warm"])],
        now,
    )
    .unwrap();
    assert_eq!(status(&bad), "executing");
    assert_eq!(
        notes(&bad),
        [("error".into(), "\"warm\" is not a number.".into())]
    );
    assert_eq!(
        value(&form(&bad), "threshold"),
        "warm",
        "what was typed stays"
    );
    let done = command(
        &bot,
        PHONE,
        &attrs("complete"),
        &[
            ("direction", &["below"]),
            ("threshold", &["18,5"]),
            ("margin", &["0.5"]),
        ],
        now,
    )
    .unwrap();
    assert_eq!(status(&done), "completed");
    let (kind, text) = &notes(&done)[0];
    assert_eq!(kind, "info");
    assert!(
        text.starts_with("Alert set: I will tell you when temp goes below 18.5 °C"),
        "{text}"
    );
    assert!(bot
        .chat(ALICE, "alerts", now)
        .unwrap()
        .contains("temp below 18.5 °C (margin 0.5 °C)"));
}

#[test]
fn my_alerts_lists_them_and_removes_the_chosen_ones() {
    let (bot, _) = building_bot(&[ALICE], CacheLimits::default());
    let now = Instant::now();
    let none = command(&bot, PHONE, "node='my-alerts'", &[], now).unwrap();
    assert_eq!(status(&none), "completed");
    assert!(notes(&none)[0].1.starts_with("You have no alerts."));
    bot.chat(ALICE, "alert temp above 25", now).unwrap();
    bot.chat(ALICE, "alert vib above 2", now).unwrap();
    let first = command(&bot, PHONE, "node='my-alerts'", &[], now).unwrap();
    let shown = form(&first);
    let remove = shown
        .fields
        .iter()
        .find(|f| f.var.as_deref() == Some("remove"))
        .unwrap();
    let options: Vec<_> = remove.options.iter().map(|o| o.value.as_str()).collect();
    assert_eq!(options, ["temp", "vib"]);
    let id = session(&first);
    let done = command(
        &bot,
        PHONE,
        &format!("node='my-alerts' sessionid='{id}' action='complete'"),
        &[("remove", &["temp"])],
        now,
    )
    .unwrap();
    assert_eq!(notes(&done)[0].1, "Removed 1 alert.");
    let left = bot.chat(ALICE, "alerts", now).unwrap();
    assert!(left.starts_with("Your alerts (1):\nvib above"), "{left}");
}

#[test]
fn cancel_ends_the_session() {
    let (bot, _) = building_bot(&[ALICE], CacheLimits::default());
    let now = Instant::now();
    let id = session(&command(&bot, PHONE, "node='statistics'", &[], now).unwrap());
    let canceled = command(
        &bot,
        PHONE,
        &format!("node='statistics' sessionid='{id}' action='cancel'"),
        &[],
        now,
    )
    .unwrap();
    assert_eq!(status(&canceled), "canceled");
    assert_eq!(session(&canceled), id);
    let after = command(
        &bot,
        PHONE,
        &format!("node='statistics' sessionid='{id}' action='next'"),
        &[("sensor", &["temp"])],
        now,
    )
    .unwrap_err();
    // XEP-0050 §4.4: "no longer active (either because it was completed, canceled, or timed
    // out)".
    assert_eq!(
        condition(&after),
        (DefinedCondition::NotAllowed, Some("session-expired".into()))
    );
}

#[test]
fn a_session_is_its_owners_and_expires() {
    let (bot, _) = building_bot(&[ALICE], CacheLimits::default());
    let now = Instant::now();
    let id = session(&command(&bot, PHONE, "node='statistics'", &[], now).unwrap());
    let next = format!("node='statistics' sessionid='{id}' action='next'");
    // Another resource of the same account does not get it.
    let other = command(
        &bot,
        "alice@localhost/laptop",
        &next,
        &[("sensor", &["temp"])],
        now,
    )
    .unwrap_err();
    assert_eq!(condition(&other).1.as_deref(), Some("bad-sessionid"));
    // A session of another command neither.
    let wrong = command(
        &bot,
        PHONE,
        &format!("node='set-alert' sessionid='{id}' action='next'"),
        &[],
        now,
    )
    .unwrap_err();
    assert_eq!(condition(&wrong).1.as_deref(), Some("bad-sessionid"));
    let expired =
        command(&bot, PHONE, &next, &[("sensor", &["temp"])], now + LIFETIME).unwrap_err();
    assert_eq!(
        condition(&expired),
        (DefinedCondition::NotAllowed, Some("session-expired".into()))
    );
    let unknown = command(
        &bot,
        PHONE,
        "node='statistics' sessionid='made-up' action='next'",
        &[],
        now,
    )
    .unwrap_err();
    assert_eq!(
        condition(&unknown),
        (DefinedCondition::BadRequest, Some("bad-sessionid".into()))
    );
}

#[test]
fn strangers_and_unknown_commands_are_refused_with_the_xeps_conditions() {
    let (bot, _) = building_bot(&[ALICE], CacheLimits::default());
    let now = Instant::now();
    let eve = command(&bot, "eve@localhost/x", "node='read-sensors'", &[], now).unwrap_err();
    assert_eq!(eve.defined_condition, DefinedCondition::Forbidden);
    let unknown = command(&bot, PHONE, "node='reboot'", &[], now).unwrap_err();
    assert_eq!(unknown.defined_condition, DefinedCondition::ItemNotFound);
    let malformed = command(&bot, PHONE, "node='statistics' action='jump'", &[], now).unwrap_err();
    assert_eq!(condition(&malformed).1.as_deref(), Some("malformed-action"));
    let first_prev = command(&bot, PHONE, "node='statistics' action='prev'", &[], now).unwrap_err();
    assert_eq!(condition(&first_prev).1.as_deref(), Some("bad-action"));
    // An open bot: reading for anyone; stats and alerts are not.
    let (open, _) = building_bot(&[], CacheLimits::default());
    assert!(command(&open, "eve@localhost/x", "node='read-sensors'", &[], now).is_ok());
    let stats = command(&open, "eve@localhost/x", "node='statistics'", &[], now).unwrap_err();
    assert_eq!(stats.defined_condition, DefinedCondition::Forbidden);
}

#[test]
fn commands_count_against_the_chat_rate_limit() {
    let (bot, _) = building_bot(&[ALICE], CacheLimits::default());
    let now = Instant::now();
    // The test settings allow a burst of 1000.
    let mut refused = None;
    for i in 0..1100 {
        if let Err(e) = command(&bot, PHONE, "node='stale-sensors'", &[], now) {
            refused = Some((i, e));
            break;
        }
    }
    let (at, error) = refused.expect("the rate limit applies");
    assert!(at >= 1000, "refused after {at}");
    assert_eq!(
        error.defined_condition,
        DefinedCondition::ResourceConstraint
    );
}

#[test]
fn hostile_a_thousand_sessions_from_one_contact_keep_only_the_newest() {
    // A rate limit generous enough to let all thousand through: the session bound is tested.
    let mut settings = settings(&[ALICE]);
    settings.reply_burst = 2000;
    let sensors = Sensors::new(vec![sensor("temp", "sensors/temperature", false, "°C")]).unwrap();
    let (bot, _) = Bot::new(sensors, Cache::new(CacheLimits::default()), settings, None).unwrap();
    let t0 = Instant::now();
    let mut ids = Vec::new();
    for i in 0..1000u64 {
        let at = t0 + Duration::from_millis(i);
        ids.push(session(
            &command(&bot, PHONE, "node='statistics'", &[], at).unwrap(),
        ));
    }
    assert_eq!(lock(&bot.adhoc).of(ALICE), PER_CONTACT);
    let now = t0 + Duration::from_secs(2);
    let next = |id: &str| format!("node='statistics' sessionid='{id}' action='next'");
    assert!(command(&bot, PHONE, &next(&ids[999]), &[("sensor", &["temp"])], now).is_ok());
    let oldest = command(&bot, PHONE, &next(&ids[0]), &[("sensor", &["temp"])], now).unwrap_err();
    assert_eq!(condition(&oldest).1.as_deref(), Some("bad-sessionid"));
}

#[test]
fn hostile_a_form_with_ten_thousand_fields_is_refused_as_a_bad_payload() {
    let (bot, _) = building_bot(&[ALICE], CacheLimits::default());
    let now = Instant::now();
    let id = session(&command(&bot, PHONE, "node='statistics'", &[], now).unwrap());
    let names: Vec<String> = (0..10_000).map(|i| format!("f{i}")).collect();
    let fields: Vec<(&str, &[&str])> = names.iter().map(|n| (n.as_str(), &["1"][..])).collect();
    let refused = command(
        &bot,
        PHONE,
        &format!("node='statistics' sessionid='{id}' action='next'"),
        &fields,
        now,
    )
    .unwrap_err();
    assert_eq!(
        condition(&refused),
        (DefinedCondition::BadRequest, Some("bad-payload".into()))
    );
    // The session is untouched and still usable.
    assert!(command(
        &bot,
        PHONE,
        &format!("node='statistics' sessionid='{id}' action='next'"),
        &[("sensor", &["temp"])],
        now
    )
    .is_ok());
}
