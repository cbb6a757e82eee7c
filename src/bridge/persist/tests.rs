//! The state database and its writer thread, on temporary files and in memory.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::db::{self, SCHEMA_VERSION};
use super::writer::{FailureLog, ERROR_LOG_INTERVAL};
use super::*;
use crate::sqlite::OpenError;
use rusqlite::Connection;

fn reading(topic: &str, at_unix_ms: i64, value: f64) -> StoredReading {
    StoredReading {
        topic: topic.to_owned(),
        at_unix_ms,
        value,
    }
}

fn key(contact: &str, target: &str, above: bool) -> AlertKey {
    AlertKey {
        contact: contact.to_owned(),
        target: target.to_owned(),
        above,
    }
}

fn alert(contact: &str, target: &str, above: bool, threshold: f64, at: i64) -> StoredAlert {
    StoredAlert {
        key: key(contact, target, above),
        filter: format!("sensors/{target}"),
        threshold,
        margin: 0.5,
        created_unix_ms: at,
    }
}

fn state(topic: &str, armed: bool, fired: Option<i64>) -> StoredAlertTopic {
    StoredAlertTopic {
        topic: topic.to_owned(),
        armed,
        last_fired_unix_ms: fired,
        silent_notified: !armed,
    }
}

fn db_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("state.sqlite")
}

fn count(db: &StateDb, table: &str) -> i64 {
    db.conn
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
            row.get(0)
        })
        .unwrap()
}

/// The alerts as `(contact, target, above, threshold)`, in load order.
fn alert_summary(db: &StateDb) -> Vec<(String, String, bool, f64)> {
    db.load_alerts()
        .unwrap()
        .into_iter()
        .map(|(a, _)| (a.key.contact, a.key.target, a.key.above, a.threshold))
        .collect()
}

#[test]
fn handles_can_move_between_threads() {
    fn assert_send<T: Send>() {}
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send::<StateDb>();
    assert_send_sync::<Persister>();
}

#[test]
fn readings_survive_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    {
        let mut db = StateDb::open(&path).unwrap();
        db.append_readings(
            &[
                reading("sensors/temp", 1_000, 21.5),
                reading("sensors/hum", 1_500, 40.25),
                reading("sensors/temp", 2_000, 21.75),
            ],
            100,
        )
        .unwrap();
        db.append_readings(
            &[
                reading("sensors/temp", 3_000, -3.125),
                reading("sensors/hum", 2_500, 41.0),
            ],
            100,
        )
        .unwrap();
    }
    let db = StateDb::open(&path).unwrap();
    assert_eq!(
        db.load_readings(100, 100).unwrap(),
        [
            reading("sensors/hum", 1_500, 40.25),
            reading("sensors/hum", 2_500, 41.0),
            reading("sensors/temp", 1_000, 21.5),
            reading("sensors/temp", 2_000, 21.75),
            reading("sensors/temp", 3_000, -3.125),
        ]
    );
}

#[test]
fn each_topic_is_trimmed_to_its_newest_readings() {
    let mut db = StateDb::open_in_memory().unwrap();
    // Out of time order within the batch: the newest by time are kept, not the last sent.
    db.append_readings(
        &[
            reading("a", 50, 5.0),
            reading("a", 10, 1.0),
            reading("a", 40, 4.0),
            reading("b", 7, 7.0),
            reading("a", 20, 2.0),
            reading("a", 30, 3.0),
        ],
        3,
    )
    .unwrap();
    assert_eq!(
        db.load_readings(100, 100).unwrap(),
        [
            reading("a", 30, 3.0),
            reading("a", 40, 4.0),
            reading("a", 50, 5.0),
            reading("b", 7, 7.0),
        ]
    );
    // The file itself holds no more than that.
    assert_eq!(count(&db, "readings"), 4);

    // A later batch pushes out the oldest; an untouched topic keeps its readings.
    db.append_readings(&[reading("a", 60, 6.0)], 3).unwrap();
    assert_eq!(
        db.load_readings(100, 100).unwrap(),
        [
            reading("a", 40, 4.0),
            reading("a", 50, 5.0),
            reading("a", 60, 6.0),
            reading("b", 7, 7.0),
        ]
    );

    // Two readings in the same millisecond: the one sent later is the newer.
    db.append_readings(&[reading("c", 5, 1.0), reading("c", 5, 2.0)], 1)
        .unwrap();
    assert_eq!(db.load_readings(100, 100).unwrap()[4], reading("c", 5, 2.0));

    // Loading may ask for fewer per topic than are stored.
    assert_eq!(
        db.load_readings(1, 100).unwrap(),
        [
            reading("a", 60, 6.0),
            reading("b", 7, 7.0),
            reading("c", 5, 2.0)
        ]
    );
}

#[test]
fn keeping_nothing_stores_nothing_and_odd_values_are_skipped() {
    let mut db = StateDb::open_in_memory().unwrap();
    db.append_readings(&[reading("a", 1, 1.0)], 10).unwrap();
    db.append_readings(&[reading("a", 2, 2.0), reading("b", 2, 2.0)], 0)
        .unwrap();
    assert!(db.load_readings(10, 10).unwrap().is_empty());
    assert_eq!(count(&db, "topics"), 0);

    db.append_readings(
        &[
            reading("a", 1, f64::NAN),
            reading("a", 2, f64::INFINITY),
            reading("a", 3, 3.0),
        ],
        10,
    )
    .unwrap();
    db.append_readings(&[], 10).unwrap();
    assert_eq!(db.load_readings(10, 10).unwrap(), [reading("a", 3, 3.0)]);
}

#[test]
fn max_topics_loads_the_most_recently_updated_topics() {
    let mut db = StateDb::open_in_memory().unwrap();
    db.append_readings(
        &[
            reading("old", 100, 1.0),
            reading("newest", 300, 2.0),
            reading("middle", 50, 3.0),
        ],
        10,
    )
    .unwrap();
    // An earlier reading arriving late does not make a topic more recent; a later one does.
    db.append_readings(
        &[reading("newest", 10, 4.0), reading("middle", 200, 5.0)],
        10,
    )
    .unwrap();
    assert_eq!(
        db.load_readings(10, 2).unwrap(),
        [
            reading("middle", 50, 3.0),
            reading("middle", 200, 5.0),
            reading("newest", 10, 4.0),
            reading("newest", 300, 2.0),
        ]
    );
    assert_eq!(db.load_readings(10, 0).unwrap(), []);
    assert_eq!(db.load_readings(10, usize::MAX).unwrap().len(), 5);

    // retain_topics makes it permanent.
    assert_eq!(db.retain_topics(2).unwrap(), 1);
    assert_eq!(db.retain_topics(2).unwrap(), 0);
    assert_eq!(db.load_readings(10, 100).unwrap().len(), 4);
    assert_eq!(count(&db, "readings"), 4);
}

#[test]
fn alerts_are_replaced_deleted_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let alice_temp_above = key("alice@example.org", "temp", true);
    {
        let mut db = StateDb::open(&path).unwrap();
        db.put_alert(&alert("alice@example.org", "temp", true, 25.0, 1_000))
            .unwrap();
        db.put_alert(&alert("bob@example.org", "hum", false, 30.0, 2_000))
            .unwrap();
        db.put_alert(&alert("alice@example.org", "temp", false, 5.0, 3_000))
            .unwrap();
        db.put_alert(&alert("alice@example.org", "door/+", true, 1.0, 4_000))
            .unwrap();
        db.put_alert_topic(&alice_temp_above, &state("sensors/temp", true, None))
            .unwrap();
        // Redefining an alert replaces it and forgets its topic states.
        db.put_alert(&alert("alice@example.org", "temp", true, 26.0, 5_000))
            .unwrap();
        db.put_alert_topic(
            &alice_temp_above,
            &state("sensors/temp", false, Some(6_000)),
        )
        .unwrap();
        db.put_alert_topic(&alice_temp_above, &state("sensors/temp2", true, None))
            .unwrap();
        // Updating a topic state replaces it.
        db.put_alert_topic(
            &alice_temp_above,
            &state("sensors/temp2", false, Some(7_000)),
        )
        .unwrap();
        // A state for an alert that does not exist is ignored.
        db.put_alert_topic(
            &key("carol@example.org", "temp", true),
            &state("sensors/temp", true, None),
        )
        .unwrap();
        db.put_alert_topic(
            &key("bob@example.org", "hum", false),
            &state("sensors/hum", true, None),
        )
        .unwrap();
    }

    let mut db = StateDb::open(&path).unwrap();
    let loaded = db.load_alerts().unwrap();
    assert_eq!(
        loaded.iter().map(|(a, _)| a.clone()).collect::<Vec<_>>(),
        [
            alert("bob@example.org", "hum", false, 30.0, 2_000),
            alert("alice@example.org", "temp", false, 5.0, 3_000),
            alert("alice@example.org", "door/+", true, 1.0, 4_000),
            alert("alice@example.org", "temp", true, 26.0, 5_000),
        ]
    );
    assert_eq!(loaded[0].1, [state("sensors/hum", true, None)]);
    assert!(loaded[1].1.is_empty());
    assert_eq!(
        loaded[3].1,
        [
            state("sensors/temp", false, Some(6_000)),
            state("sensors/temp2", false, Some(7_000)),
        ]
    );
    assert_eq!(count(&db, "alert_topics"), 3);

    // `alert off temp`: both directions, with their topic states; nobody else's.
    assert_eq!(
        db.delete_alerts("alice@example.org", Some("temp")).unwrap(),
        2
    );
    assert_eq!(
        db.delete_alerts("alice@example.org", Some("temp")).unwrap(),
        0
    );
    assert_eq!(
        alert_summary(&db),
        [
            ("bob@example.org".into(), "hum".into(), false, 30.0),
            ("alice@example.org".into(), "door/+".into(), true, 1.0),
        ]
    );
    assert_eq!(count(&db, "alert_topics"), 1);
    // A late state update for the deleted alert does not bring it back.
    db.put_alert_topic(&alice_temp_above, &state("sensors/temp", true, None))
        .unwrap();
    assert_eq!(count(&db, "alert_topics"), 1);

    // `alert off`: all of bob's.
    assert_eq!(db.delete_alerts("bob@example.org", None).unwrap(), 1);
    assert_eq!(
        alert_summary(&db),
        [("alice@example.org".into(), "door/+".into(), true, 1.0)]
    );
    assert_eq!(count(&db, "alert_topics"), 0);
    drop(db);
    assert_eq!(alert_summary(&StateDb::open(&path).unwrap()).len(), 1);
}

#[test]
fn deleting_an_alert_cascades_to_its_topic_states() {
    // Through the foreign key alone, as any other delete of an alert row would.
    let mut db = StateDb::open_in_memory().unwrap();
    let k = key("alice@example.org", "temp", true);
    db.put_alert(&alert("alice@example.org", "temp", true, 25.0, 1))
        .unwrap();
    db.put_alert_topic(&k, &state("sensors/temp", true, None))
        .unwrap();
    db.conn.execute("DELETE FROM alerts", []).unwrap();
    assert_eq!(count(&db, "alert_topics"), 0);
}

#[test]
fn an_alert_with_a_non_finite_number_is_refused() {
    let mut db = StateDb::open_in_memory().unwrap();
    let mut bad = alert("alice@example.org", "temp", true, f64::NAN, 1);
    let err = db.put_alert(&bad).unwrap_err();
    assert!(
        matches!(
            err,
            PersistError::NotFinite {
                what: "threshold",
                ..
            }
        ),
        "{err}"
    );
    bad.threshold = 1.0;
    bad.margin = f64::INFINITY;
    let err = db.put_alert(&bad).unwrap_err();
    assert!(err.to_string().contains("margin is inf"), "{err}");
    assert!(db.load_alerts().unwrap().is_empty());
}

#[test]
fn a_newer_schema_is_refused() {
    // The refusal itself (message, nothing written) is tested in `crate::sqlite`.
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    drop(StateDb::open(&path).unwrap());
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 7)
        .unwrap();
    let err = StateDb::open(&path).unwrap_err();
    assert!(
        matches!(&err, PersistError::Open(OpenError::TooNew { found: 7, supported, .. }) if *supported == SCHEMA_VERSION),
        "{err}"
    );
}

#[test]
fn missing_directory_and_garbage_file_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir").join("state.sqlite");
    let err = StateDb::open(&missing).unwrap_err();
    assert!(
        matches!(err, PersistError::Open(OpenError::Io { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("no-such-dir"), "{err}");

    let garbage = dir.path().join("garbage.sqlite");
    std::fs::write(&garbage, vec![b'x'; 4096]).unwrap();
    let err = StateDb::open(&garbage).unwrap_err();
    assert!(
        matches!(err, PersistError::Open(OpenError::Sqlite { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("garbage.sqlite"), "{err}");
}

#[test]
fn the_persister_applies_writes_in_order_and_close_flushes_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let persister = Persister::spawn(StateDb::open(&path).unwrap(), 3).unwrap();
    let k = key("alice@example.org", "temp", true);
    persister.send(Write::PutAlert(alert(
        "alice@example.org",
        "temp",
        true,
        25.0,
        1,
    )));
    persister.send(Write::PutAlertTopic {
        key: k.clone(),
        state: state("sensors/temp", false, Some(10)),
    });
    persister.send(Write::PutAlert(alert(
        "bob@example.org",
        "hum",
        true,
        60.0,
        2,
    )));
    for n in 0..10 {
        persister.send(Write::Readings(vec![
            reading("sensors/temp", n, n as f64),
            reading("sensors/hum", n, 50.0),
        ]));
    }
    // Order matters from here: delete, re-create, then a state for the new alert only.
    persister.send(Write::DeleteAlerts {
        contact: "alice@example.org".into(),
        target: Some("temp".into()),
    });
    persister.send(Write::PutAlert(alert(
        "alice@example.org",
        "temp",
        true,
        30.0,
        3,
    )));
    persister.send(Write::PutAlertTopic {
        key: k.clone(),
        state: state("sensors/temp", true, None),
    });
    persister.send(Write::DeleteAlerts {
        contact: "bob@example.org".into(),
        target: None,
    });
    persister.send(Write::Readings(vec![reading("sensors/temp", 99, 9.5)]));
    persister.close();

    let db = StateDb::open(&path).unwrap();
    let alerts = db.load_alerts().unwrap();
    assert_eq!(
        alerts,
        [(
            alert("alice@example.org", "temp", true, 30.0, 3),
            vec![state("sensors/temp", true, None)]
        )]
    );
    assert_eq!(
        db.load_readings(100, 100).unwrap(),
        [
            reading("sensors/hum", 7, 50.0),
            reading("sensors/hum", 8, 50.0),
            reading("sensors/hum", 9, 50.0),
            reading("sensors/temp", 8, 8.0),
            reading("sensors/temp", 9, 9.0),
            reading("sensors/temp", 99, 9.5),
        ]
    );
}

#[test]
fn a_failed_write_does_not_stop_the_writes_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let persister = Persister::spawn(StateDb::open(&path).unwrap(), 10).unwrap();
    persister.send(Write::PutAlert(alert(
        "alice@example.org",
        "temp",
        true,
        f64::NAN,
        1,
    )));
    persister.send(Write::Readings(vec![reading("sensors/temp", 1, 1.0)]));
    persister.send(Write::PutAlert(alert(
        "alice@example.org",
        "temp",
        true,
        25.0,
        2,
    )));
    persister.close();
    let db = StateDb::open(&path).unwrap();
    assert_eq!(
        alert_summary(&db),
        [("alice@example.org".into(), "temp".into(), true, 25.0)]
    );
    assert_eq!(
        db.load_readings(10, 10).unwrap(),
        [reading("sensors/temp", 1, 1.0)]
    );
}

#[test]
fn failures_are_logged_at_most_once_a_minute_with_a_count() {
    let mut log = FailureLog::new(ERROR_LOG_INTERVAL);
    let start = Instant::now();
    let at = |secs: u64| start + Duration::from_secs(secs);
    assert_eq!(log.failure(at(0)), Some(0));
    assert_eq!(log.failure(at(1)), None);
    assert_eq!(log.failure(at(59)), None);
    // The next line, a minute after the previous one, counts the two it stood for.
    assert_eq!(log.failure(at(60)), Some(2));
    assert_eq!(log.failure(at(61)), None);
    assert_eq!(log.take_unreported(), 1);
    assert_eq!(log.take_unreported(), 0);
    assert_eq!(log.failure(at(500)), Some(0));
}

#[test]
fn error_lines_say_what_was_lost() {
    let path = Path::new("/var/lib/bot/state.sqlite");
    let readings = Write::Readings(vec![reading("a", 1, 1.0); 120]);
    assert_eq!(
        readings.failure(path, &"disk full"),
        "could not save 120 readings to /var/lib/bot/state.sqlite: disk full"
    );
    let put = Write::PutAlert(alert("alice@example.org", "temp", true, 25.5, 1));
    let line = put.failure(path, &"disk full");
    assert!(
        line.starts_with("could not save the alert of alice@example.org on temp (above 25.5)")
            && line.contains("gone after a restart"),
        "{line}"
    );
    let off = Write::DeleteAlerts {
        contact: "alice@example.org".into(),
        target: Some("temp".into()),
    };
    let line = off.failure(path, &"disk full");
    assert!(
        line.starts_with(
            "could not delete the alerts of alice@example.org on temp \
             from /var/lib/bot/state.sqlite: disk full; they will be back"
        ),
        "{line}"
    );
    let all_off = Write::DeleteAlerts {
        contact: "alice@example.org".into(),
        target: None,
    };
    assert!(all_off
        .failure(path, &"disk full")
        .starts_with("could not delete the alerts of alice@example.org from "));
}

#[test]
fn disk_cost_per_reading() {
    // 100 topics × 1 000 readings, one every 10 s per topic, in batches of 1 000.
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let mut db = StateDb::open(&path).unwrap();
    let topics: Vec<String> = (0..100)
        .map(|n| format!("building/floor-{}/room-{n}/temperature", n % 7))
        .collect();
    let start_ms = 1_750_000_000_000_i64;
    let all: Vec<StoredReading> = (0..1_000_i64)
        .flat_map(|step| {
            topics.iter().enumerate().map(move |(n, topic)| {
                reading(
                    topic,
                    start_ms + step * 10_000 + n as i64,
                    20.0 + (step % 97) as f64 * 0.1 + n as f64 * 0.01,
                )
            })
        })
        .collect();
    for batch in all.chunks(1_000) {
        db.append_readings(batch, 1_000).unwrap();
    }
    assert_eq!(count(&db, "readings"), 100_000);
    db.conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    let bytes = std::fs::metadata(&path).unwrap().len();
    let per_reading = bytes as f64 / 100_000.0;
    // The module documentation quotes this figure.
    assert!(
        (40.0..52.0).contains(&per_reading),
        "{per_reading:.1} bytes per reading ({bytes} bytes)"
    );
}

#[test]
fn invited_rooms_survive_reopen_and_an_old_file_is_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    // A file of schema version 1 (before rooms) opens and gains the table.
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(db::MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
    }
    let room = |name: &str, at: i64| StoredRoom {
        room: format!("{name}@conference.localhost"),
        nick: "bot".into(),
        password: (name == "class").then(|| "pw".to_string()),
        invited_by: "alice@localhost".into(),
        added_unix_ms: at,
    };
    {
        let mut db = StateDb::open(&path).unwrap();
        db.put_room(&room("lab", 2)).unwrap();
        db.put_room(&room("class", 1)).unwrap();
        // Invited again: one row still.
        db.put_room(&room("lab", 2)).unwrap();
    }
    let db = StateDb::open(&path).unwrap();
    assert_eq!(db.load_rooms().unwrap(), [room("class", 1), room("lab", 2)]);
    assert!(!format!("{:?}", room("class", 1)).contains("pw"));
}

#[test]
fn the_published_profile_survives_reopen_and_an_old_file_is_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    // A file of schema version 2 (before `published`) opens and gains the table.
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(db::MIGRATIONS[0]).unwrap();
        conn.execute_batch(db::MIGRATIONS[1]).unwrap();
        conn.pragma_update(None, "user_version", 2).unwrap();
    }
    {
        let mut db = StateDb::open(&path).unwrap();
        assert_eq!(db.load_published("profile").unwrap(), None);
        db.put_published("profile", "old").unwrap();
        // Published again after a change: one row, the new fingerprint.
        db.put_published("profile", "new").unwrap();
    }
    let db = StateDb::open(&path).unwrap();
    assert_eq!(
        db.load_published("profile").unwrap().as_deref(),
        Some("new")
    );
    assert_eq!(db.load_published("other").unwrap(), None);
}
