//! The chat commands as a contact sees them: messages in, replies out, on a bot fed with
//! readings (no network).

use std::time::{Duration, Instant};

use crate::bridge::bot::testing::{building_bot, fill, sensor, settings, ALICE, BOB};
use crate::bridge::bot::{Bot, REFUSAL_WINDOW};
use crate::bridge::cache::{Cache, CacheLimits};
use crate::bridge::sensors::Sensors;

#[test]
fn any_other_message_gets_the_default_reading_and_a_name_gets_its_sensor() {
    let (bot, _) = building_bot(&[], CacheLimits::default());
    let t0 = Instant::now();
    fill(&bot, t0);
    let later = t0 + Duration::from_secs(3);
    assert_eq!(
        bot.chat(ALICE, "what's the temperature?", later).unwrap(),
        "21.5 °C (sensors/temperature, 3 s ago)"
    );
    let vib = bot.chat(ALICE, "VIB", later).unwrap();
    assert!(vib.starts_with("vib (B/+/+/+/VIBR): 16 topics\n"), "{vib}");
}

#[test]
fn a_pattern_gets_every_matching_topic_and_nothing_else() {
    let (bot, _) = building_bot(&[], CacheLimits::default());
    let t0 = Instant::now();
    fill(&bot, t0);
    let reply = bot.chat(ALICE, "get B/+/O/+/VIBR", t0).unwrap();
    let lines: Vec<&str> = reply.lines().collect();
    assert_eq!(
        lines,
        [
            "B/+/O/+/VIBR: 4 topics",
            "B/P_1/O/1/VIBR: 0.5 mm/s (0 s ago)",
            "B/P_1/O/2/VIBR: 0.5 mm/s (0 s ago)",
            "B/P_2/O/1/VIBR: 0.5 mm/s (0 s ago)",
            "B/P_2/O/2/VIBR: 0.5 mm/s (0 s ago)",
        ]
    );
    assert_eq!(bot.chat(ALICE, "ver B/+/O/+/VIBR", t0).unwrap(), reply);
    let none = bot.chat(ALICE, "get B/+/W/#", t0).unwrap();
    assert!(none.starts_with("Nothing matches B/+/W/#"), "{none}");
    let bad = bot.chat(ALICE, "get B/#/x", t0).unwrap();
    assert!(
        bad.contains("neither a sensor nor a topic pattern"),
        "{bad}"
    );
    let unknown = bot.chat(ALICE, "get other/topic", t0).unwrap();
    assert!(
        unknown.starts_with("I do not follow other/topic"),
        "{unknown}"
    );
    let single = bot.chat(ALICE, "get B/P_1/N/1/TEMP", t0).unwrap();
    assert_eq!(single, "21 (B/P_1/N/1/TEMP, 0 s ago)");
}

#[test]
fn list_shows_every_sensor_and_topic() {
    let (bot, _) = building_bot(&[], CacheLimits::default());
    let t0 = Instant::now();
    fill(&bot, t0);
    let reply = bot.chat(ALICE, "LISTA", t0).unwrap();
    let mut lines = reply.lines();
    assert_eq!(lines.next(), Some("3 sensors, 33 topics with readings:"));
    assert_eq!(
        lines.next(),
        Some("temp: 21.5 °C (sensors/temperature, 0 s ago)")
    );
    assert_eq!(lines.next(), Some("vib (B/+/+/+/VIBR): 16 topics"));
    // 16 vibration lines, then the whole building (32 topics) under b.
    assert_eq!(reply.lines().filter(|l| l.starts_with("  B/")).count(), 48);
    assert!(reply.contains("\nb (B/#): 32 topics\n"), "{reply}");
}

#[test]
fn stale_lists_silent_topics_and_sensors_never_heard_from() {
    let (bot, _) = building_bot(&[], CacheLimits::default());
    let t0 = Instant::now();
    bot.ingest("B/P_1/N/1/VIBR", br#"{"value": 1}"#, false, t0);
    let later = t0 + Duration::from_secs(700);
    bot.ingest("B/P_1/N/2/VIBR", br#"{"value": 2}"#, false, later);
    let reply = bot.chat(ALICE, "stale", later).unwrap();
    let lines: Vec<&str> = reply.lines().collect();
    assert_eq!(
        lines,
        [
            "2 of 3 topics have sent nothing for over 10 min:",
            "sensors/temperature: no reading since the bot started",
            "B/P_1/N/1/VIBR: 1 mm/s (11 min ago; stale)",
        ]
    );
    bot.ingest("sensors/temperature", b"20", false, later);
    bot.ingest("B/P_1/N/1/VIBR", br#"{"value": 1}"#, false, later);
    let reply = bot.chat(ALICE, "inactivos", later).unwrap();
    assert_eq!(
        reply,
        "Nothing is stale: all 3 topics have sent a reading within 10 min."
    );
}

#[test]
fn a_bot_with_one_fresh_topic_says_so_in_the_singular() {
    let sensors = Sensors::new(vec![sensor("temp", "sensors/temperature", false, "°C")]).unwrap();
    let (bot, _) = Bot::new(
        sensors,
        Cache::new(CacheLimits::default()),
        settings(&[]),
        None,
    )
    .unwrap();
    let t0 = Instant::now();
    bot.ingest("sensors/temperature", b"20", false, t0);
    assert_eq!(
        bot.chat(ALICE, "stale", t0 + Duration::from_secs(3))
            .unwrap(),
        "Nothing is stale: the one topic has sent a reading within 10 min."
    );
}

#[test]
fn stats_summarise_the_history_and_say_when_it_falls_short() {
    let (bot, _) = building_bot(
        &[ALICE],
        CacheLimits {
            max_topics: 100,
            history: 5,
        },
    );
    let t0 = Instant::now();
    for i in 0..4u32 {
        let at = t0 + Duration::from_secs(60) * i;
        bot.ingest(
            "sensors/temperature",
            format!("{}", 20 + i).as_bytes(),
            false,
            at,
        );
    }
    let now = t0 + Duration::from_secs(200);
    let reply = bot.chat(ALICE, "stats temp 10m", now).unwrap();
    let first = reply.lines().next().unwrap();
    assert_eq!(
        first,
        "temp (sensors/temperature), last 10 min: min 20 °C, max 23 °C, avg 21.50 °C, 4 readings"
    );
    assert_eq!(reply.lines().nth(1).unwrap().chars().count(), 24);
    assert!(!reply.contains("does not reach back"));
    for i in 4..10u32 {
        let at = t0 + Duration::from_secs(60) * i;
        bot.ingest(
            "sensors/temperature",
            format!("{}", 20 + i).as_bytes(),
            false,
            at,
        );
    }
    let now = t0 + Duration::from_secs(600);
    let reply = bot.chat(ALICE, "stats temp 1h", now).unwrap();
    assert!(
        reply.contains("min 25 °C, max 29 °C"),
        "only the last 5: {reply}"
    );
    assert!(reply.contains("keeps 5 readings per topic"), "{reply}");
    let nothing = bot.chat(ALICE, "stats B/+/N/+/TEMP", now).unwrap();
    assert_eq!(
        nothing,
        "No readings of B/+/N/+/TEMP (0 topics) in the last 1 h."
    );
}

#[test]
fn strangers_get_one_refusal_then_silence() {
    let (bot, _) = building_bot(&[ALICE], CacheLimits::default());
    let t0 = Instant::now();
    let first = bot.chat(BOB, "temp?", t0).unwrap();
    assert!(first.contains("--allow"), "{first}");
    assert_eq!(bot.chat(BOB, "temp?", t0 + Duration::from_secs(1)), None);
    assert_eq!(bot.chat(BOB, "help", t0 + Duration::from_secs(60)), None);
    assert!(bot.chat(BOB, "x", t0 + REFUSAL_WINDOW).is_some());
    assert!(bot.chat(ALICE, "temp?", t0).is_some());
    assert!(!bot.may_subscribe(BOB));
    assert!(bot.may_subscribe(ALICE));
}

#[test]
fn an_open_bot_answers_anyone_but_keeps_alerts_and_stats_for_allowed_contacts() {
    let (bot, _) = building_bot(&[], CacheLimits::default());
    let t0 = Instant::now();
    fill(&bot, t0);
    assert!(bot
        .chat(BOB, "get temp", t0)
        .unwrap()
        .starts_with("21.5 °C"));
    for command in ["alert temp above 30", "stats temp"] {
        let reply = bot.chat(BOB, command, t0).unwrap();
        assert!(
            reply.starts_with("Alerts and stats are only for the contacts on my allow list"),
            "{reply}"
        );
    }
    assert!(bot.may_subscribe(BOB));
}

#[test]
fn a_flood_gets_a_burst_of_replies_one_warning_then_silence() {
    let sensors = Sensors::new(vec![sensor("temp", "t", false, "")]).unwrap();
    let mut settings = settings(&[]);
    settings.replies_per_minute = 6;
    settings.reply_burst = 3;
    let (bot, _) = Bot::new(sensors, Cache::default(), settings, None).unwrap();
    let t0 = Instant::now();
    let replies: Vec<Option<String>> = (0..10).map(|_| bot.chat(ALICE, "t?", t0)).collect();
    assert!(replies[..3]
        .iter()
        .all(|r| r.as_deref().is_some_and(|r| r.starts_with("No reading"))));
    assert!(replies[3]
        .as_deref()
        .unwrap()
        .contains("faster than I answer (6 a minute)"));
    assert!(replies[4..].iter().all(Option::is_none));
    // Ten seconds give one reply back (6 a minute).
    assert!(bot
        .chat(ALICE, "t?", t0 + Duration::from_secs(10))
        .is_some());
    assert!(
        bot.chat(BOB, "t?", t0).is_some(),
        "other contacts are not affected"
    );
}

#[test]
fn in_a_room_the_allow_list_applies_to_real_jids_and_room_allow_to_hidden_ones() {
    let mut settings = settings(&[ALICE]);
    settings.room_allow = vec!["open@conference.localhost".into()];
    let sensors = Sensors::new(vec![sensor("temp", "sensors/temperature", false, "°C")]).unwrap();
    let (bot, _) = Bot::new(sensors, Cache::new(CacheLimits::default()), settings, None).unwrap();
    let t0 = Instant::now();
    bot.ingest("sensors/temperature", b"21.5", false, t0);
    let closed = "closed@conference.localhost";
    let open = "open@conference.localhost";
    // An allowed real JID may do everything, in any room.
    let stats = bot
        .room_chat(closed, Some(ALICE), "stats temp", t0)
        .unwrap();
    assert!(!stats.contains("only for the contacts"), "{stats}");
    // A hidden JID in a room without --room-allow: refused once, then silence.
    let refusal = bot.room_chat(closed, None, "temperature?", t0).unwrap();
    assert!(refusal.starts_with("Sorry, I only answer"), "{refusal}");
    assert_eq!(bot.room_chat(closed, None, "temperature?", t0), None);
    // A stranger's real JID is refused the same way (the room already had its refusal).
    assert_eq!(bot.room_chat(closed, Some(BOB), "temperature?", t0), None);
    // In a --room-allow room, everyone reads, hidden or not, but nobody unlisted sets alerts.
    assert_eq!(
        bot.room_chat(open, None, "temperature?", t0).unwrap(),
        "21.5 °C (sensors/temperature, 0 s ago)"
    );
    assert_eq!(
        bot.room_chat(open, Some(BOB), "temp", t0).unwrap(),
        "21.5 °C (sensors/temperature, 0 s ago)"
    );
    let alert = bot
        .room_chat(open, None, "alert temp above 30", t0)
        .unwrap();
    assert!(alert.contains("only for the contacts"), "{alert}");
}

#[test]
fn an_open_bot_reads_to_anonymous_occupants_and_limits_the_rate_per_room() {
    let mut settings = settings(&[]);
    settings.replies_per_minute = 1;
    settings.reply_burst = 2;
    let sensors = Sensors::new(vec![sensor("temp", "sensors/temperature", false, "°C")]).unwrap();
    let (bot, _) = Bot::new(sensors, Cache::new(CacheLimits::default()), settings, None).unwrap();
    let t0 = Instant::now();
    bot.ingest("sensors/temperature", b"21.5", false, t0);
    let room = "lab@conference.localhost";
    assert!(bot.room_chat(room, None, "temp", t0).is_some());
    // Another occupant of the same room shares the room's budget.
    assert!(bot.room_chat(room, Some(BOB), "temp", t0).is_some());
    let slow = bot.room_chat(room, None, "temp", t0).unwrap();
    assert!(
        slow.starts_with("You are sending messages faster"),
        "{slow}"
    );
    assert_eq!(bot.room_chat(room, Some(ALICE), "temp", t0), None);
    // Another room has its own budget.
    assert!(bot
        .room_chat("other@conference.localhost", None, "temp", t0)
        .is_some());
}
