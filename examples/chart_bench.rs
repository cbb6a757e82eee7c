//! Render time and PNG size of the bot's charts for 1 h, 24 h and 7 d windows at one reading a
//! second, with two alert thresholds and a stale stretch, as `stats` draws them.
//!
//! `cargo run --release --example chart_bench [DIR]` prints one line per window, and with DIR
//! writes the three PNGs there to look at.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mqtt2xmpp::bridge::chart::render::{render, ChartInput, Threshold};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args().nth(1).map(std::path::PathBuf::from);
    let end_ms = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis())?;
    for (name, secs) in [("1h", 3600i64), ("24h", 86_400), ("7d", 604_800)] {
        let window_ms = secs * 1000;
        // A daily wave with noise, and 5 % of the window silent in the middle.
        let samples: Vec<(i64, f64)> = (0..=secs)
            .map(|i| {
                let at = end_ms - window_ms + i * 1000;
                let day = (i as f64 / 86_400.0) * std::f64::consts::TAU;
                let noise = ((i * 7919) % 101) as f64 / 100.0 - 0.5;
                (at, 21.0 + 3.0 * day.sin() + 0.3 * noise)
            })
            .filter(|(at, _)| {
                let into = at - (end_ms - window_ms);
                !(window_ms / 2..window_ms / 2 + window_ms / 20).contains(&into)
            })
            .collect();
        let input = ChartInput {
            what: "temp".into(),
            unit: "°C".into(),
            precision: Some(1),
            samples,
            end_ms,
            window: Duration::from_millis(window_ms as u64),
            thresholds: vec![
                Threshold {
                    value: 24.5,
                    above: true,
                },
                Threshold {
                    value: 17.5,
                    above: false,
                },
            ],
            stale_after: Duration::from_secs(600),
        };
        let started = Instant::now();
        let rendered = render(&input)?;
        let took = started.elapsed();
        println!(
            "{name}: {} readings -> {} points, {} bytes PNG, rendered in {:.1} ms",
            input.samples.len(),
            rendered.points,
            rendered.png.len(),
            took.as_secs_f64() * 1000.0
        );
        if let Some(dir) = &out {
            std::fs::write(dir.join(format!("chart-{name}.png")), &rendered.png)?;
        }
    }
    Ok(())
}
