//! The bot's core: ingest into the cache, alerts fired by readings and by silence, the topic
//! bound, the presence status, and the state database across a restart.

use std::time::{Duration, Instant};

use super::testing::{building_bot, fill, notices, sensor, settings, ALICE};
use super::*;
use crate::bridge::cache::CacheLimits;

#[test]
fn an_alert_fires_once_per_crossing_through_ingest() {
    let (bot, mut outlets) = building_bot(&[ALICE], CacheLimits::default());
    let t0 = Instant::now();
    fill(&bot, t0);
    let reply = bot.chat(ALICE, "alert B/+/O/+/VIBR above 4", t0).unwrap();
    assert!(
        reply.starts_with("Alert set: I will tell you when B/+/O/+/VIBR goes above 4 mm/s"),
        "{reply}"
    );
    let step = Duration::from_secs(120);
    let topic = "B/P_2/O/1/VIBR";
    for (i, value) in [5.0, 6.0, 3.0, 4.5, 7.0].iter().enumerate() {
        let payload = format!("{{\"value\": {value}}}");
        bot.ingest(topic, payload.as_bytes(), false, t0 + step * (i as u32 + 1));
    }
    let got = notices(&mut outlets);
    let texts: Vec<&str> = got.iter().map(|n| n.text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "⚠ B/+/O/+/VIBR above 4 mm/s: 5 mm/s on B/P_2/O/1/VIBR",
            "⚠ B/+/O/+/VIBR above 4 mm/s: 4.5 mm/s on B/P_2/O/1/VIBR",
        ]
    );
    assert!(got.iter().all(|n| n.to == ALICE));
    // Another wing is not covered.
    bot.ingest("B/P_2/N/1/VIBR", br#"{"value": 9}"#, false, t0 + step * 9);
    assert!(notices(&mut outlets).is_empty());
    let list = bot.chat(ALICE, "alertas", t0).unwrap();
    assert!(
        list.starts_with(
            "Your alerts (1):\nB/+/O/+/VIBR above 4 mm/s (margin 0.08 mm/s): 4 topics, 1 past it"
        ),
        "{list}"
    );
    assert_eq!(
        bot.chat(ALICE, "alert off", t0).unwrap(),
        "Removed 1 alert."
    );
    bot.ingest(topic, br#"{"value": 1}"#, false, t0 + step * 10);
    bot.ingest(topic, br#"{"value": 9}"#, false, t0 + step * 11);
    assert!(
        notices(&mut outlets).is_empty(),
        "removed alerts are silent"
    );
}

#[test]
fn a_silent_sensor_is_reported_once_and_its_return_too() {
    let (bot, mut outlets) = building_bot(&[ALICE], CacheLimits::default());
    let t0 = Instant::now();
    bot.ingest("sensors/temperature", b"21", false, t0);
    bot.chat(ALICE, "alert temp above 30", t0).unwrap();
    bot.tick(t0 + Duration::from_secs(599));
    assert!(notices(&mut outlets).is_empty());
    bot.tick(t0 + Duration::from_secs(601));
    bot.tick(t0 + Duration::from_secs(700));
    let got = notices(&mut outlets);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        got[0].text,
        "⚠ sensors/temperature has sent nothing for 10 min (your alert on temp)"
    );
    bot.ingest(
        "sensors/temperature",
        b"22",
        false,
        t0 + Duration::from_secs(800),
    );
    let got = notices(&mut outlets);
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].text,
        "sensors/temperature is back: 22 °C (your alert on temp)"
    );
}

#[test]
fn new_topics_beyond_the_bound_are_refused_and_presence_follows_the_default() {
    let (bot, outlets) = building_bot(
        &[],
        CacheLimits {
            max_topics: 2,
            history: 10,
        },
    );
    let t0 = Instant::now();
    assert_eq!(
        bot.presence_status(),
        "temp: no reading yet · send \"help\" for commands"
    );
    let version = *outlets.default_changed.borrow();
    assert_eq!(
        bot.ingest("sensors/temperature", b"21.5", false, t0),
        Ingest::Stored(Stored::New)
    );
    assert_ne!(*outlets.default_changed.borrow(), version);
    assert_eq!(
        bot.presence_status(),
        "temp: 21.5 °C · send \"help\" for commands"
    );
    assert_eq!(
        bot.ingest("B/1/1/1/VIBR", br#"{"value": 1}"#, false, t0),
        Ingest::Stored(Stored::New)
    );
    assert_eq!(
        bot.ingest("B/1/1/2/VIBR", br#"{"value": 1}"#, false, t0),
        Ingest::Stored(Stored::Full)
    );
    assert!(matches!(
        bot.ingest("B/1/1/1/VIBR", b"garbage", false, t0),
        Ingest::Unreadable(_)
    ));
    assert_eq!(bot.ingest("elsewhere", b"1", false, t0), Ingest::Unwanted);
    assert_eq!(bot.cache().len(), 2);
}

#[test]
fn a_topic_with_control_characters_is_refused_and_every_answer_stays_sendable() {
    let (bot, _outlets) = building_bot(
        &[ALICE],
        CacheLimits {
            max_topics: 10,
            history: 10,
        },
    );
    let t0 = Instant::now();
    // MQTT allows U+0001 in a topic; XML does not, so no message could name it.
    assert_eq!(
        bot.ingest("B/1/1/\u{1}/VIBR", br#"{"value": 1}"#, false, t0),
        Ingest::Unreadable(reading::PayloadError::UnprintableTopic)
    );
    assert_eq!(bot.cache().len(), 0);
    // A tab is fine.
    assert_eq!(
        bot.ingest("B/1/1/\t/VIBR", br#"{"value": 1}"#, false, t0),
        Ingest::Stored(Stored::New)
    );
    let listed = bot.chat(ALICE, "list", t0).unwrap_or_default();
    assert!(listed.contains("B/1/1/\t/VIBR"), "{listed}");
}

#[test]
fn history_and_alerts_survive_a_restart_with_the_state_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.sqlite");
    let open = || persist::StateDb::open(&path).unwrap();
    let sensors = || Sensors::new(vec![sensor("temp", "t", false, "°C")]).unwrap();
    let t0 = Instant::now();
    {
        let (bot, mut outlets) = Bot::new(
            sensors(),
            Cache::default(),
            settings(&[ALICE]),
            Some(open()),
        )
        .unwrap();
        bot.chat(ALICE, "alert temp above 25", t0).unwrap();
        for (i, v) in [20.0, 26.0, 27.0].iter().enumerate() {
            bot.ingest(
                "t",
                format!("{v}").as_bytes(),
                false,
                t0 + Duration::from_secs(i as u64),
            );
        }
        assert_eq!(notices(&mut outlets).len(), 1);
        bot.close();
    }
    let (bot, mut outlets) = Bot::new(
        sensors(),
        Cache::default(),
        settings(&[ALICE]),
        Some(open()),
    )
    .unwrap();
    let now = Instant::now() + Duration::from_secs(120);
    let stats = bot.chat(ALICE, "stats temp", now).unwrap();
    assert!(stats.contains("min 20 °C, max 27 °C"), "{stats}");
    assert!(stats.contains(", 3 readings"), "{stats}");
    assert!(bot
        .chat(ALICE, "alerts", now)
        .unwrap()
        .contains("temp above 25 °C"));
    // Still past the threshold: it fired before the restart and must not fire again...
    bot.ingest("t", b"28", false, now);
    assert!(notices(&mut outlets).is_empty());
    // ...until it comes back and crosses again.
    bot.ingest("t", b"20", false, now + Duration::from_secs(60));
    bot.ingest("t", b"26", false, now + Duration::from_secs(120));
    assert_eq!(notices(&mut outlets).len(), 1);
    bot.close();
}

#[test]
fn an_alert_set_in_a_room_belongs_to_the_room_and_fires_there() {
    let (bot, mut outlets) = building_bot(&[ALICE], CacheLimits::default());
    let t0 = Instant::now();
    let lab = "lab@conference.localhost";
    bot.ingest("sensors/temperature", b"21", false, t0);
    let set = bot
        .room_chat(lab, Some(ALICE), "alert temp above 25", t0)
        .unwrap();
    assert!(set.starts_with("Alert set"), "{set}");
    // The room's alerts are the room's, not alice's.
    assert!(bot.chat(ALICE, "alerts", t0).unwrap().contains("no alerts"));
    let listed = bot.room_chat(lab, Some(ALICE), "alerts", t0).unwrap();
    assert!(listed.contains("temp above 25 °C"), "{listed}");
    bot.ingest(
        "sensors/temperature",
        b"26",
        false,
        t0 + Duration::from_secs(1),
    );
    let got = notices(&mut outlets);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].to, lab);
    assert_eq!(
        got[0].text,
        "⚠ temp above 25 °C: 26 °C on sensors/temperature"
    );
    // Anyone the allow list lets set alerts may remove the room's.
    let removed = bot.room_chat(lab, Some(ALICE), "unalert temp", t0).unwrap();
    assert_eq!(removed, "Removed 1 alert.");
}

#[test]
fn rooms_that_asked_for_it_hear_when_sensors_go_stale_and_come_back() {
    let mut settings = settings(&[ALICE]);
    settings.room_announce_stale = vec!["lab@conference.localhost".into()];
    let sensors = Sensors::new(vec![
        sensor("temp", "sensors/temperature", false, "°C"),
        sensor("hum", "sensors/humidity", false, "%"),
    ])
    .unwrap();
    let (bot, mut outlets) = Bot::new(sensors, Cache::default(), settings, None).unwrap();
    let t0 = Instant::now();
    bot.ingest("sensors/temperature", b"21", false, t0);
    bot.ingest("sensors/humidity", b"40", false, t0);
    // The first look takes note; nothing is stale yet anyway.
    bot.tick(t0);
    bot.tick(t0 + Duration::from_secs(300));
    bot.ingest(
        "sensors/humidity",
        b"41",
        false,
        t0 + Duration::from_secs(300),
    );
    assert!(notices(&mut outlets).is_empty());
    bot.tick(t0 + Duration::from_secs(601));
    bot.tick(t0 + Duration::from_secs(602));
    let got = notices(&mut outlets);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].to, "lab@conference.localhost");
    assert_eq!(
        got[0].text,
        "⚠ no reading for 10 min from: sensors/temperature"
    );
    let back = t0 + Duration::from_secs(700);
    bot.ingest("sensors/temperature", b"22", false, back);
    bot.tick(back);
    let got = notices(&mut outlets);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].text, "back: sensors/temperature");
    bot.tick(back + Duration::from_secs(1));
    assert!(notices(&mut outlets).is_empty());
}

#[test]
fn a_bot_without_announcing_rooms_says_nothing_about_stale_sensors() {
    let (bot, mut outlets) = building_bot(&[ALICE], CacheLimits::default());
    let t0 = Instant::now();
    fill(&bot, t0);
    bot.tick(t0);
    bot.tick(t0 + Duration::from_secs(3600));
    assert!(notices(&mut outlets).is_empty());
}

#[test]
fn invitations_need_an_allowed_inviter_and_are_remembered() {
    let mut settings = settings(&[ALICE]);
    settings.room_allow = vec!["open@conference.localhost".into()];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.sqlite");
    let sensors = || Sensors::new(vec![sensor("temp", "t", false, "°C")]).unwrap();
    let (bot, _outlets) = Bot::new(
        sensors(),
        Cache::default(),
        settings.clone(),
        Some(persist::StateDb::open(&path).unwrap()),
    )
    .unwrap();
    assert!(bot.may_invite(ALICE, "any@conference.localhost"));
    assert!(!bot.may_invite("eve@localhost", "any@conference.localhost"));
    assert!(bot.may_invite("eve@localhost", "Open@conference.localhost"));
    let mut join = RoomJoin::parse("class@conference.localhost/sensei", "bot").unwrap();
    join.password = Some("pw".into());
    bot.remember_room(&join, ALICE, Instant::now());
    assert!(bot.remembered_rooms().is_empty(), "only after a restart");
    bot.close();
    let (bot, _outlets) = Bot::new(
        sensors(),
        Cache::default(),
        settings,
        Some(persist::StateDb::open(&path).unwrap()),
    )
    .unwrap();
    assert_eq!(bot.remembered_rooms(), [join]);
    bot.close();
}
