//! Replies to chat commands, as text. Pure: the caller passes cache entries, histories and the
//! current time.
//!
//! The default reply is the default sensor's latest reading, e.g. `21.5 °C
//! (sensors/temperature, 3 s ago)`. A reading older than the stale threshold says so; no reading
//! yet says so plainly. Listings are capped at [`MAX_LINES`] lines, so one reply stays a chat
//! message (well under every server's stanza limit) however many topics match.

use std::time::{Duration, Instant};

use super::cache::Entry;

/// How the bot presents one sensor.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorView {
    /// The MQTT topic the value comes from; shown in every reply so the user knows what they got.
    pub topic: String,
    /// Unit appended to the value (`°C`, `%`); empty for none.
    pub unit: String,
    /// Decimals shown; `None` shows the value as received (shortest exact form).
    pub precision: Option<usize>,
    /// A reading older than this is marked stale.
    pub stale_after: Duration,
}

/// The reply to any chat message, given the sensor's cache entry (if any) and the current time.
pub fn reading_reply(view: &SensorView, entry: Option<Entry>, now: Instant) -> String {
    let Some(entry) = entry else {
        return format!(
            "No reading from {} yet: the bot has received nothing on that topic since it started.",
            view.topic
        );
    };
    let age = now.saturating_duration_since(entry.received_at);
    let value = format_value(entry.reading.value, view.precision, &view.unit);
    if entry.retained {
        // Retained messages carry no timestamp: all we know is when the broker handed it over.
        let stale = if age > view.stale_after {
            "; stale"
        } else {
            ""
        };
        return format!(
            "{value} ({}, retained by the broker, at least {} old{stale})",
            view.topic,
            format_age(age)
        );
    }
    if age > view.stale_after {
        format!(
            "{value} ({}, {} ago; stale: no update for over {})",
            view.topic,
            format_age(age),
            format_age(view.stale_after)
        )
    } else {
        format!("{value} ({}, {} ago)", view.topic, format_age(age))
    }
}

/// `21.5 °C`: the value with the configured decimals and unit.
pub fn format_value(value: f64, precision: Option<usize>, unit: &str) -> String {
    let number = match precision {
        Some(p) => format!("{value:.p$}"),
        None => format!("{value}"),
    };
    // `-0.0` formats as "-0" (or "-0.0"): a sensor hovering around zero should read "0".
    let number = match number.strip_prefix('-') {
        Some(rest) if rest.chars().all(|c| c == '0' || c == '.') => rest.to_string(),
        _ => number,
    };
    if unit.is_empty() {
        number
    } else {
        format!("{number} {unit}")
    }
}

/// A human age: `3 s`, `4 min`, `2 h 5 min`, `3 d 4 h`, rounded down to the smallest unit shown.
pub fn format_age(age: Duration) -> String {
    let s = age.as_secs();
    match s {
        0..=59 => format!("{s} s"),
        60..=3_599 => format!("{} min", s / 60),
        3_600..=86_399 => match (s % 3_600) / 60 {
            0 => format!("{} h", s / 3_600),
            m => format!("{} h {m} min", s / 3_600),
        },
        _ => match (s % 86_400) / 3_600 {
            0 => format!("{} d", s / 86_400),
            h => format!("{} d {h} h", s / 86_400),
        },
    }
}

/// Most topic lines in one reply.
pub const MAX_LINES: usize = 250;

/// One line per topic: `EDIFICIO_1/P_1/O/1/VIBR: 0.42 mm/s (3 s ago)`.
pub fn topic_line(
    topic: &str,
    entry: &Entry,
    unit: &str,
    precision: Option<usize>,
    stale_after: Duration,
    now: Instant,
) -> String {
    let age = now.saturating_duration_since(entry.received_at);
    let value = format_value(entry.reading.value, precision, unit);
    let when = if entry.retained {
        format!("retained, at least {} old", format_age(age))
    } else {
        format!("{} ago", format_age(age))
    };
    let stale = if age > stale_after { "; stale" } else { "" };
    format!("{topic}: {value} ({when}{stale})")
}

/// Joins `lines` under `header`, keeping at most [`MAX_LINES`] and saying how many were left out.
pub fn capped(header: String, lines: Vec<String>, hint: &str) -> String {
    let total = lines.len();
    let mut out = header;
    for line in lines.into_iter().take(MAX_LINES) {
        out.push('\n');
        out.push_str(&line);
    }
    if total > MAX_LINES {
        out.push_str(&format!("\n… and {} more: {hint}", total - MAX_LINES));
    }
    out
}

/// Summary of the readings in a window.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Arithmetic mean.
    pub avg: f64,
    /// Number of readings.
    pub count: usize,
    /// One character per slice of the window, `▁` (min) to `█` (max); `·` where no reading fell.
    pub sparkline: String,
}

/// Characters of a sparkline, lowest to highest.
const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// Slices in a sparkline.
pub const SPARK_WIDTH: usize = 24;

/// Min, max, average, count and a sparkline of `samples` (times and values) over the window
/// `[now − window, now]`; `None` without samples.
pub fn stats(samples: &[(Instant, f64)], window: Duration, now: Instant) -> Option<Stats> {
    if samples.is_empty() {
        return None;
    }
    let (mut min, mut max, mut sum) = (f64::INFINITY, f64::NEG_INFINITY, 0.0);
    let mut slices = [(0.0_f64, 0_usize); SPARK_WIDTH];
    let start = now.checked_sub(window);
    for (at, value) in samples {
        min = min.min(*value);
        max = max.max(*value);
        sum += value;
        let offset = match start {
            Some(start) => at.saturating_duration_since(start),
            None => window.saturating_sub(now.saturating_duration_since(*at)),
        };
        let slot = ((offset.as_secs_f64() / window.as_secs_f64()) * SPARK_WIDTH as f64) as usize;
        let slot = slot.min(SPARK_WIDTH - 1);
        slices[slot].0 += value;
        slices[slot].1 += 1;
    }
    let sparkline = slices
        .iter()
        .map(|(total, n)| match n {
            0 => '·',
            n if max > min => {
                let level = (total / *n as f64 - min) / (max - min);
                BARS[((level * (BARS.len() - 1) as f64).round() as usize).min(BARS.len() - 1)]
            }
            _ => BARS[3],
        })
        .collect();
    Some(Stats {
        min,
        max,
        avg: sum / samples.len() as f64,
        count: samples.len(),
        sparkline,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bridge::reading::Reading;

    fn view() -> SensorView {
        SensorView {
            topic: "sensors/temperature".into(),
            unit: "°C".into(),
            precision: None,
            stale_after: Duration::from_secs(600),
        }
    }

    fn entry(value: f64, received_at: Instant) -> Option<Entry> {
        Some(Entry {
            reading: Reading { value },
            received_at,
            retained: false,
        })
    }

    #[test]
    fn fresh_reading_names_value_unit_topic_and_age() {
        let t0 = Instant::now();
        let now = t0 + Duration::from_millis(3_400);
        assert_eq!(
            reading_reply(&view(), entry(21.5, t0), now),
            "21.5 °C (sensors/temperature, 3 s ago)"
        );
    }

    #[test]
    fn stale_reading_is_marked() {
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(12 * 60);
        assert_eq!(
            reading_reply(&view(), entry(21.5, t0), now),
            "21.5 °C (sensors/temperature, 12 min ago; stale: no update for over 10 min)"
        );
        // Exactly at the threshold it is not stale yet.
        let at = t0 + Duration::from_secs(600);
        assert!(!reading_reply(&view(), entry(21.5, t0), at).contains("stale"));
    }

    #[test]
    fn retained_reading_gives_its_age_as_a_lower_bound() {
        let t0 = Instant::now();
        let retained = Some(Entry {
            reading: Reading { value: 19.0 },
            received_at: t0,
            retained: true,
        });
        assert_eq!(
            reading_reply(&view(), retained, t0 + Duration::from_secs(4)),
            "19 °C (sensors/temperature, retained by the broker, at least 4 s old)"
        );
        assert_eq!(
            reading_reply(&view(), retained, t0 + Duration::from_secs(601)),
            "19 °C (sensors/temperature, retained by the broker, at least 10 min old; stale)"
        );
    }

    #[test]
    fn no_reading_yet_says_so() {
        assert_eq!(
            reading_reply(&view(), None, Instant::now()),
            "No reading from sensors/temperature yet: the bot has received nothing on that topic since it started."
        );
    }

    #[test]
    fn precision_and_units() {
        assert_eq!(format_value(26.25, None, "°C"), "26.25 °C");
        assert_eq!(format_value(26.25, Some(1), "°C"), "26.2 °C");
        assert_eq!(format_value(26.26, Some(1), ""), "26.3");
        assert_eq!(format_value(40.0, Some(0), "%"), "40 %");
        assert_eq!(format_value(1000.0, None, "lx"), "1000 lx");
        assert_eq!(format_value(-0.04, Some(1), "°C"), "0.0 °C");
        assert_eq!(format_value(-0.06, Some(1), "°C"), "-0.1 °C");
        assert_eq!(format_value(-3.5, None, ""), "-3.5");
    }

    #[test]
    fn ages_read_like_a_person_would_say_them() {
        let secs = Duration::from_secs;
        assert_eq!(format_age(Duration::from_millis(400)), "0 s");
        assert_eq!(format_age(secs(59)), "59 s");
        assert_eq!(format_age(secs(60)), "1 min");
        assert_eq!(format_age(secs(3_599)), "59 min");
        assert_eq!(format_age(secs(3_600)), "1 h");
        assert_eq!(format_age(secs(2 * 3_600 + 5 * 60 + 9)), "2 h 5 min");
        assert_eq!(format_age(secs(86_400)), "1 d");
        assert_eq!(format_age(secs(3 * 86_400 + 4 * 3_600)), "3 d 4 h");
    }

    #[test]
    fn topic_lines_name_topic_value_and_age() {
        let t0 = Instant::now();
        let e = entry(0.42, t0).unwrap();
        let ten_min = Duration::from_secs(600);
        assert_eq!(
            topic_line(
                "B/P_1/O/1/VIBR",
                &e,
                "mm/s",
                Some(2),
                ten_min,
                t0 + Duration::from_secs(3)
            ),
            "B/P_1/O/1/VIBR: 0.42 mm/s (3 s ago)"
        );
        assert_eq!(
            topic_line("t", &e, "", None, ten_min, t0 + Duration::from_secs(700)),
            "t: 0.42 (11 min ago; stale)"
        );
        let retained = Entry {
            retained: true,
            ..e
        };
        assert_eq!(
            topic_line("t", &retained, "", None, ten_min, t0),
            "t: 0.42 (retained, at least 0 s old)"
        );
    }

    #[test]
    fn long_listings_are_capped_with_a_count() {
        let lines: Vec<String> = (0..MAX_LINES + 7).map(|i| format!("line {i}")).collect();
        let text = capped("Header".into(), lines, "narrow it down");
        assert_eq!(text.lines().count(), MAX_LINES + 2);
        assert!(text.ends_with("… and 7 more: narrow it down"), "{text}");
        assert_eq!(capped("H".into(), vec!["a".into()], "x"), "H\na");
    }

    #[test]
    fn stats_summarise_a_window_with_a_sparkline() {
        let t0 = Instant::now();
        let window = Duration::from_secs(2400);
        let now = t0 + window;
        // One reading a minute rising from 0 to 39, then nothing in the last slice.
        let samples: Vec<(Instant, f64)> = (0..40)
            .map(|i| (t0 + Duration::from_secs(i * 60), i as f64))
            .collect();
        let s = stats(&samples, window, now).unwrap();
        assert_eq!((s.min, s.max, s.count), (0.0, 39.0, 40));
        assert_eq!(s.avg, 19.5);
        assert_eq!(s.sparkline.chars().count(), SPARK_WIDTH);
        assert!(
            s.sparkline.starts_with('▁') && s.sparkline.ends_with('█'),
            "{}",
            s.sparkline
        );
        let levels: Vec<char> = s.sparkline.chars().collect();
        assert!(
            levels.windows(2).all(|w| w[0] <= w[1]),
            "rising: {}",
            s.sparkline
        );
        // Gaps show as dots; a flat line sits in the middle.
        let flat = [(t0, 5.0), (t0 + Duration::from_secs(10), 5.0)];
        let s = stats(&flat, window, now).unwrap();
        assert!(
            s.sparkline.starts_with('▄') && s.sparkline.ends_with("·"),
            "{}",
            s.sparkline
        );
        assert_eq!(stats(&[], window, now), None);
    }
}
