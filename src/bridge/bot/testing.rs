//! Test helpers shared by the bot's core tests and the chat command tests: a small building of
//! sensors, a bot over it, and the readings to fill it with.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Bot, BotSettings, Notice, Outlets};
use crate::bridge::alerts;
use crate::bridge::cache::{Cache, CacheLimits};
use crate::bridge::reading::PayloadFormat;
use crate::bridge::sensors::{Sensor, Sensors};

pub(crate) const ALICE: &str = "alice@localhost";
pub(crate) const BOB: &str = "bob@localhost";

pub(crate) fn sensor(name: &str, filter: &str, json: bool, unit: &str) -> Sensor {
    Sensor {
        name: name.into(),
        filter: filter.into(),
        format: PayloadFormat {
            json_pointer: json.then(|| "/value".to_string()),
        },
        unit: unit.into(),
        precision: None,
    }
}

pub(crate) fn settings(allow: &[&str]) -> BotSettings {
    BotSettings {
        stale_after: Duration::from_secs(600),
        alerts: alerts::AlertSettings {
            min_interval: Duration::from_secs(60),
            stale_after: Duration::from_secs(600),
            per_contact: 20,
            total: 100,
        },
        replies_per_minute: 60,
        reply_burst: 1000,
        allow: allow.iter().map(|s| s.to_string()).collect(),
        allow_domains: Vec::new(),
        room_allow: Vec::new(),
        room_announce_stale: Vec::new(),
        command_session_lifetime: crate::bridge::adhoc::sessions::LIFETIME,
    }
}

pub(crate) fn building_bot(allow: &[&str], limits: CacheLimits) -> (Arc<Bot>, Outlets) {
    let sensors = Sensors::new(vec![
        sensor("temp", "sensors/temperature", false, "°C"),
        sensor("vib", "B/+/+/+/VIBR", true, "mm/s"),
        sensor("b", "B/#", true, ""),
    ])
    .unwrap();
    Bot::new(sensors, Cache::new(limits), settings(allow), None).unwrap()
}

/// Publishes a small building: 2 floors × 4 wings × 2 rooms of VIBR and TEMP readings.
pub(crate) fn fill(bot: &Bot, t0: Instant) {
    for floor in 1..=2 {
        for wing in ["N", "S", "E", "O"] {
            for room in 1..=2 {
                for (kind, value) in [("VIBR", 0.5), ("TEMP", 21.0)] {
                    let topic = format!("B/P_{floor}/{wing}/{room}/{kind}");
                    let payload = format!("{{\"value\": {value}, \"unit\": \"x\"}}");
                    bot.ingest(&topic, payload.as_bytes(), false, t0);
                }
            }
        }
    }
    bot.ingest("sensors/temperature", b"21.5", false, t0);
}

pub(crate) fn notices(outlets: &mut Outlets) -> Vec<Notice> {
    let mut out = Vec::new();
    while let Ok(notice) = outlets.notices.try_recv() {
        out.push(notice);
    }
    out
}
