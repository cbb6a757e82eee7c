//! The simulator's sans-IO core as data: seeded generators, delivery bookkeeping and the
//! schedule, without a broker.

use std::collections::HashSet;

use super::*;

const T0: u64 = 1_795_248_000; // 2026-11-21T08:00:00Z

fn at(seconds: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(T0 + seconds)
}

fn building(floors: u16, rooms_per_wing: u16, rate: f64) -> Scenario {
    Scenario::Building(Building {
        id: "EDIFICIO_1".into(),
        floors,
        rooms_per_wing,
        rate,
    })
}

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// The topic grammar, parsed independently of [`SensorId::topic`]:
/// `EDIFICIO_1/P_<floor>/<N|S|E|O>/<room>/<TEMP|HUM|LUX|VIBR>`.
fn parse_topic_levels(topic: &str) -> Option<(u16, &str, u16, &str)> {
    let levels: Vec<&str> = topic.split('/').collect();
    let [building, floor, wing, room, kind] = levels.as_slice() else {
        return None;
    };
    if *building != "EDIFICIO_1" || !["N", "S", "E", "O"].contains(wing) {
        return None;
    }
    if !["TEMP", "HUM", "LUX", "VIBR"].contains(kind) {
        return None;
    }
    let floor = floor.strip_prefix("P_")?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(floor) || !digits(room) {
        return None;
    }
    Some((floor.parse().ok()?, wing, room.parse().ok()?, kind))
}

fn value_of(payload: &str) -> f64 {
    let json: serde_json::Value = serde_json::from_str(payload).unwrap();
    json["value"].as_f64().unwrap()
}

#[test]
fn simple_mode_publishes_plain_numbers_every_interval_on_a_slow_bounded_walk() {
    let scenario = Scenario::Simple {
        topic: "sensors/temperature".into(),
        interval: Duration::from_secs(2),
    };
    let mut generator = Generator::new(scenario, false, rng(1));
    let mut previous: Option<f64> = None;
    for i in 0..20_000 {
        let (publication, gap) = generator.next(at(i));
        assert_eq!(publication.topic, "sensors/temperature");
        assert!(!publication.retain);
        assert_eq!(gap, Duration::from_secs(2));
        let (whole, decimals) = publication.payload.split_once('.').unwrap();
        assert_eq!(decimals.len(), 2, "{}", publication.payload);
        assert!(whole.bytes().all(|b| b.is_ascii_digit()));
        let value: f64 = publication.payload.parse().unwrap();
        assert!((15.0..=30.0).contains(&value), "{value}");
        if let Some(previous) = previous {
            // 0.2 per step, plus rounding to two decimals at each end.
            assert!(
                (value - previous).abs() <= 0.2 + 0.01 + 1e-9,
                "{previous} → {value}"
            );
        }
        previous = Some(value);
    }
}

#[test]
fn simple_walk_reaches_both_halves_of_its_range_but_not_beyond() {
    let mut walk = Walk::new(21.0, 15.0, 30.0, 0.2);
    let mut rng = rng(7);
    let values: Vec<f64> = (0..200_000).map(|_| walk.step(&mut rng)).collect();
    let low = values.iter().cloned().fold(f64::INFINITY, f64::min);
    let high = values.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    assert!(low >= 15.0 && high <= 30.0, "{low}..{high}");
    assert!(
        low < 18.0 && high > 27.0,
        "a walk this long explores: {low}..{high}"
    );
}

#[test]
fn a_walk_reflects_off_its_bounds_without_jumping() {
    let mut rng = rng(3);
    for start in [18.0, 28.0, 18.05, 27.95] {
        let mut walk = Walk::new(start, 18.0, 28.0, 0.2);
        let mut previous = walk.value;
        for _ in 0..1_000 {
            let value = walk.step(&mut rng);
            assert!((18.0..=28.0).contains(&value), "{value}");
            assert!(
                (value - previous).abs() <= 0.2 + 1e-12,
                "{previous} → {value}"
            );
            previous = value;
        }
    }
    // A start outside the range is pulled in.
    assert_eq!(Walk::new(99.0, 18.0, 28.0, 0.2).value, 28.0);
}

#[test]
fn building_topics_follow_the_grammar_and_stay_within_floors_and_rooms() {
    let mut generator = Generator::new(building(3, 2, 10.0), true, rng(2));
    let mut seen = HashSet::new();
    for i in 0..5_000 {
        let (publication, _) = generator.next(at(i));
        assert!(publication.retain);
        let (floor, _, room, _) = parse_topic_levels(&publication.topic)
            .unwrap_or_else(|| panic!("bad topic {}", publication.topic));
        assert!((1..=3).contains(&floor), "{}", publication.topic);
        assert!((1..=2).contains(&room), "{}", publication.topic);
        seen.insert(publication.topic);
    }
    // 3 floors × 4 wings × 2 rooms × 4 kinds, all of them reached at random.
    assert_eq!(seen.len(), 96);
    let Scenario::Building(b) = building(3, 2, 10.0) else {
        unreachable!()
    };
    assert_eq!(b.sensors(), 96);
}

#[test]
fn the_smallest_building_has_one_room_per_wing_on_one_floor() {
    let mut generator = Generator::new(building(1, 1, 1.0), false, rng(4));
    let topics: HashSet<String> = (0..1_000).map(|i| generator.next(at(i)).0.topic).collect();
    let mut expected = HashSet::new();
    for wing in ["N", "S", "E", "O"] {
        for kind in ["TEMP", "HUM", "LUX", "VIBR"] {
            expected.insert(format!("EDIFICIO_1/P_1/{wing}/1/{kind}"));
        }
    }
    assert_eq!(topics, expected);
}

#[test]
fn building_payloads_are_json_with_value_unit_and_utc_timestamp() {
    let mut generator = Generator::new(building(2, 3, 5.0), false, rng(5));
    for i in 0..2_000 {
        let (publication, _) = generator.next(at(i));
        let json: serde_json::Value = serde_json::from_str(&publication.payload)
            .unwrap_or_else(|e| panic!("{e}: {}", publication.payload));
        let object = json.as_object().unwrap();
        assert_eq!(object.len(), 3, "{}", publication.payload);
        assert!(object["value"].as_f64().is_some_and(f64::is_finite));
        let kind = publication.topic.rsplit('/').next().unwrap();
        let unit = match kind {
            "TEMP" => "C",
            "HUM" => "%",
            "LUX" => "lx",
            "VIBR" => "mm/s",
            other => panic!("kind {other}"),
        };
        assert_eq!(object["unit"], unit);
        let ts = object["ts"].as_str().unwrap();
        assert_eq!(humantime::parse_rfc3339(ts).unwrap(), at(i));
        assert!(ts.ends_with('Z') && ts.len() == 20, "{ts}");
    }
    let (first, _) = Generator::new(building(1, 1, 1.0), false, rng(6)).next(at(0));
    assert!(
        first.payload.starts_with(r#"{"value": "#)
            && first
                .payload
                .ends_with(r#", "ts": "2026-11-21T08:00:00Z"}"#),
        "{}",
        first.payload
    );
}

#[test]
fn each_kind_stays_in_its_realistic_range_and_walks_smoothly_per_sensor() {
    let mut generator = Generator::new(building(2, 2, 100.0), false, rng(8));
    let mut last: HashMap<String, f64> = HashMap::new();
    let mut vibration = Vec::new();
    for i in 0..100_000 {
        let (publication, _) = generator.next(at(i));
        let value = value_of(&publication.payload);
        let kind = publication.topic.rsplit('/').next().unwrap().to_string();
        let (range, smooth) = match kind.as_str() {
            "TEMP" => (18.0..=28.0, Some(0.2 + 0.1)),
            "HUM" => (30.0..=70.0, Some(0.5 + 0.1)),
            "LUX" => (0.0..=1500.0, Some(25.0 + 1.0)),
            "VIBR" => (0.0..=9.0, None),
            other => panic!("kind {other}"),
        };
        assert!(range.contains(&value), "{} = {value}", publication.topic);
        if let (Some(limit), Some(previous)) = (smooth, last.get(&publication.topic)) {
            assert!(
                (value - previous).abs() <= limit + 1e-9,
                "{}: {previous} → {value}",
                publication.topic
            );
        }
        if kind == "VIBR" {
            assert!(value > 0.0, "{value}");
            vibration.push(value);
        }
        last.insert(publication.topic, value);
    }
    // Vibration: a quiet background with occasional spikes (about 2 %).
    let spikes = vibration.iter().filter(|v| **v > 1.5).count();
    let share = spikes as f64 / vibration.len() as f64;
    assert!(
        (0.01..0.03).contains(&share),
        "{spikes} of {}",
        vibration.len()
    );
    let median = {
        let mut sorted = vibration.clone();
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
    };
    assert!(median < 1.0, "{median}");
}

#[test]
fn vibration_is_a_smooth_background_plus_spikes_that_do_not_stick() {
    let mut generator = Generator::new(building(1, 1, 1.0), false, rng(9));
    let mut background: HashMap<String, f64> = HashMap::new();
    let (mut spikes, mut quiet) = (0, 0);
    for i in 0..40_000 {
        let (publication, _) = generator.next(at(i));
        if !publication.topic.ends_with("/VIBR") {
            continue;
        }
        let State::Building { sensors, .. } = &generator.state else {
            unreachable!()
        };
        let walk = sensors
            .iter()
            .find(|(id, _)| id.topic("EDIFICIO_1") == publication.topic)
            .map(|(_, walk)| walk.value)
            .unwrap();
        assert!((0.05..=1.0).contains(&walk), "background {walk}");
        if let Some(previous) = background.insert(publication.topic.clone(), walk) {
            assert!(
                (walk - previous).abs() <= 0.03 + 1e-12,
                "{previous} → {walk}"
            );
        }
        // What is published is the background (rounded), or the background plus 2–8 mm/s.
        let above = value_of(&publication.payload) - walk;
        if above.abs() <= 0.005 + 1e-9 {
            quiet += 1;
        } else {
            assert!(
                (2.0 - 0.005..=8.0 + 0.005).contains(&above),
                "spike of {above}"
            );
            spikes += 1;
        }
    }
    assert!(
        spikes > 0 && quiet > 40 * spikes,
        "{spikes} spikes, {quiet} quiet"
    );
}

#[test]
fn gaps_are_random_around_the_rate_and_average_to_it() {
    let mut generator = Generator::new(building(3, 4, 20.0), false, rng(10));
    let gaps: Vec<Duration> = (0..20_000).map(|i| generator.next(at(i)).1).collect();
    let mean = gaps.iter().sum::<Duration>().as_secs_f64() / gaps.len() as f64;
    assert!((mean - 0.05).abs() < 0.001, "mean gap {mean}");
    assert!(gaps
        .iter()
        .all(|g| (0.025..=0.075).contains(&g.as_secs_f64())));
    let distinct: HashSet<Duration> = gaps.iter().copied().collect();
    assert!(distinct.len() > 19_000, "gaps vary");
}

#[test]
fn a_rate_out_of_range_in_code_is_clamped_instead_of_panicking() {
    for (rate, slowest) in [
        (0.0, 1.5 / MIN_RATE),
        (-3.0, 1.5 / MIN_RATE),
        (f64::NAN, 1.5 / MIN_RATE),
        (f64::INFINITY, 1.5 / MAX_RATE),
    ] {
        let mut generator = Generator::new(building(1, 1, rate), false, rng(11));
        let (_, gap) = generator.next(at(0));
        assert!(gap.as_secs_f64() <= slowest, "{rate}: {gap:?}");
    }
}

#[test]
fn the_same_seed_replays_the_same_readings() {
    let run = |seed| {
        let mut generator = Generator::seeded(building(2, 2, 5.0), false, Some(seed));
        (0..100).map(|i| generator.next(at(i))).collect::<Vec<_>>()
    };
    assert_eq!(run(42), run(42));
    assert_ne!(run(42), run(43));
}

#[test]
fn sensor_topics_are_built_level_by_level() {
    let id = SensorId {
        floor: 12,
        wing: Wing::West,
        room: 7,
        kind: Kind::Vibr,
    };
    assert_eq!(id.topic("EDIFICIO_1"), "EDIFICIO_1/P_12/O/7/VIBR");
    assert_eq!(Kind::Hum.unit(), "%");
}

fn puback() -> Event {
    Event::Incoming(Packet::PubAck(rumqttc::PubAck::new(1)))
}

#[test]
fn qos1_counts_acknowledgements_and_stops_queueing_at_the_count() {
    let mut tally = Tally::new(QoS::AtLeastOnce, Some(3));
    for _ in 0..3 {
        assert!(tally.may_queue());
        tally.queued();
    }
    assert!(!tally.may_queue(), "three in flight make three");
    assert!(!tally.observe(&Event::Outgoing(Outgoing::Publish(1))));
    assert!(tally.observe(&puback()));
    assert!(tally.observe(&puback()));
    assert!(!tally.complete());
    assert!(tally.observe(&puback()));
    assert!(tally.complete());
    assert_eq!((tally.delivered, tally.in_flight), (3, 0));
}

#[test]
fn qos0_counts_messages_written_to_the_connection() {
    let mut tally = Tally::new(QoS::AtMostOnce, Some(2));
    tally.queued();
    tally.queued();
    assert!(!tally.observe(&puback()));
    assert!(tally.observe(&Event::Outgoing(Outgoing::Publish(0))));
    assert!(tally.observe(&Event::Outgoing(Outgoing::Publish(0))));
    assert!(tally.complete());
}

#[test]
fn qos2_counts_completed_exchanges() {
    let mut tally = Tally::new(QoS::ExactlyOnce, Some(1));
    tally.queued();
    assert!(!tally.observe(&puback()));
    assert!(tally.observe(&Event::Incoming(Packet::PubComp(rumqttc::PubComp::new(1)))));
    assert!(tally.complete());
}

#[test]
fn a_lost_connection_gives_up_unacknowledged_messages_and_replaces_them() {
    let mut tally = Tally::new(QoS::AtLeastOnce, Some(5));
    for _ in 0..5 {
        tally.queued();
    }
    tally.observe(&puback());
    tally.connection_lost();
    assert_eq!(
        (tally.delivered, tally.in_flight, tally.abandoned),
        (1, 0, 4)
    );
    assert!(tally.may_queue(), "four more are needed");
    for _ in 0..4 {
        tally.queued();
    }
    assert!(!tally.may_queue());
    // A late acknowledgement of a message given up on still counts, and never underflows.
    for _ in 0..6 {
        tally.observe(&puback());
    }
    assert_eq!(tally.in_flight, 0);
    assert!(tally.complete());
}

#[test]
fn the_in_flight_window_limits_an_unlimited_run() {
    let mut tally = Tally::new(QoS::AtLeastOnce, None);
    for _ in 0..MAX_OUTSTANDING {
        assert!(tally.may_queue());
        tally.queued();
    }
    assert!(!tally.may_queue());
    tally.observe(&puback());
    assert!(tally.may_queue());
    assert!(!tally.complete(), "no count, never complete");
}

#[test]
fn the_schedule_keeps_the_average_but_forgives_a_long_backlog() {
    let t0 = Instant::now();
    let mut schedule = Schedule::new(t0);
    let gap = Duration::from_millis(10);
    // On time, or slightly late: due times stay on the grid.
    schedule.advance(gap, t0);
    assert_eq!(schedule.due, t0 + gap);
    schedule.advance(gap, t0 + Duration::from_millis(100));
    assert_eq!(schedule.due, t0 + 2 * gap);
    // Far behind: start again from now instead of bursting.
    schedule.advance(gap, t0 + Duration::from_secs(5));
    assert_eq!(schedule.due, t0 + Duration::from_secs(5));
}
