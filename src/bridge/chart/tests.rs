//! The chart as a user sees it: a PNG that decodes, of the promised size, with the line, the
//! thresholds and the stale stretches where they belong; and the reduction that bounds the cost.

use std::time::{Duration, Instant};

use super::render::{self, downsample, ChartInput, Threshold, ABOVE, BELOW, LINE, SIZE, STALE};

const HOUR_MS: i64 = 3_600_000;
/// 2026-12-05 12:00 UTC.
const END: i64 = 1_796_472_000_000;

/// One reading every `step_ms` over `window`, a slow wave between 18 and 24.
fn wave(window: Duration, step_ms: i64) -> Vec<(i64, f64)> {
    let window_ms = window.as_millis() as i64;
    (0..=window_ms / step_ms)
        .map(|i| {
            let at = END - window_ms + i * step_ms;
            let phase = i as f64 * step_ms as f64 / window_ms as f64 * std::f64::consts::TAU;
            (at, 21.0 + 3.0 * phase.sin())
        })
        .collect()
}

fn input(window: Duration, samples: Vec<(i64, f64)>) -> ChartInput {
    ChartInput {
        what: "temp".into(),
        unit: "°C".into(),
        precision: Some(1),
        samples,
        end_ms: END,
        window,
        thresholds: vec![
            Threshold {
                value: 25.0,
                above: true,
            },
            Threshold {
                value: 17.0,
                above: false,
            },
        ],
        stale_after: Duration::from_secs(600),
    }
}

/// The decoded picture: width, height, RGB bytes.
fn decode(png_bytes: &[u8]) -> (u32, u32, Vec<u8>) {
    let decoder = png::Decoder::new(png_bytes);
    let mut reader = decoder.read_info().expect("a PNG header");
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).expect("a PNG frame");
    assert_eq!(info.color_type, png::ColorType::Rgb);
    pixels.truncate(info.buffer_size());
    (info.width, info.height, pixels)
}

fn pixel(pixels: &[u8], width: u32, x: i32, y: i32) -> (u8, u8, u8) {
    let i = (y as usize * width as usize + x as usize) * 3;
    (pixels[i], pixels[i + 1], pixels[i + 2])
}

fn is(colour: plotters::style::RGBColor) -> impl Fn((u8, u8, u8)) -> bool {
    move |(r, g, b)| (r, g, b) == (colour.0, colour.1, colour.2)
}

fn count(pixels: &[u8], colour: plotters::style::RGBColor) -> usize {
    pixels
        .chunks_exact(3)
        .filter(|p| is(colour)((p[0], p[1], p[2])))
        .count()
}

#[test]
fn a_day_of_readings_is_a_png_of_the_chart_size_with_the_line_and_both_thresholds() {
    let window = Duration::from_secs(86_400);
    let rendered = render::render(&input(window, wave(window, 60_000))).unwrap();
    let (width, height, pixels) = decode(&rendered.png);
    assert_eq!((width, height), SIZE);
    // The line: thousands of pixels of its colour (a 2-pixel line across ~700 columns).
    let line = count(&pixels, LINE);
    assert!(line > 1000, "only {line} pixels of the line's colour");
    // Each threshold is a dashed line on its row: more than a third of the plot's columns
    // (dashes of 8 with gaps of 5) carry its colour there, and they are where 25 and 17 are.
    assert_eq!(rendered.threshold_rows.len(), 2);
    for (row, colour) in rendered.threshold_rows.iter().zip([ABOVE, BELOW]) {
        let on_row = (rendered.plot_x.start..rendered.plot_x.end)
            .filter(|x| (-1..=1).any(|dy| is(colour)(pixel(&pixels, width, *x, row + dy))))
            .count();
        let plot_width = (rendered.plot_x.end - rendered.plot_x.start) as usize;
        assert!(
            on_row * 3 > plot_width,
            "threshold row {row}: {on_row} of {plot_width} columns"
        );
    }
    // Above is drawn higher up (a smaller row) than below.
    assert!(rendered.threshold_rows[0] < rendered.threshold_rows[1]);
    // No gap longer than 10 minutes: nothing shaded.
    assert!(rendered.stale_columns.is_empty());
    let mid_row = (rendered.plot_y.start + rendered.plot_y.end) / 2;
    assert!(
        (rendered.plot_x.start..rendered.plot_x.end).all(|x| !is(STALE)(pixel(
            &pixels,
            width,
            x,
            mid_row + 40
        )))
    );
}

#[test]
fn a_stale_stretch_is_shaded_where_the_readings_stopped() {
    let window = Duration::from_secs(3600);
    // Readings every 10 s, except none between 20 and 40 minutes into the hour.
    let samples: Vec<_> = wave(window, 10_000)
        .into_iter()
        .filter(|(at, _)| {
            let into = at - (END - HOUR_MS);
            !(20 * 60_000..40 * 60_000).contains(&into)
        })
        .collect();
    let rendered = render::render(&input(window, samples)).unwrap();
    let (width, _, pixels) = decode(&rendered.png);
    assert_eq!(
        rendered.stale_columns.len(),
        1,
        "{:?}",
        rendered.stale_columns
    );
    let gap = rendered.stale_columns[0].clone();
    let plot = rendered.plot_x.clone();
    let third = (plot.end - plot.start) / 3;
    // It covers the middle third of the plot, give or take a pixel.
    assert!(
        (gap.start - (plot.start + third)).abs() <= 2,
        "{gap:?} in {plot:?}"
    );
    assert!(
        (gap.end - (plot.start + 2 * third)).abs() <= 2,
        "{gap:?} in {plot:?}"
    );
    // Shaded in the middle of the gap, at mid-height; white outside it.
    let mid_row = (rendered.plot_y.start + rendered.plot_y.end) / 2;
    let shaded = (gap.start + 3..gap.end - 3)
        .filter(|x| is(STALE)(pixel(&pixels, width, *x, mid_row + 40)))
        .count();
    assert!(
        shaded > (gap.end - gap.start) as usize / 2,
        "{shaded} shaded columns"
    );
    assert!(!is(STALE)(pixel(
        &pixels,
        width,
        plot.start + 5,
        mid_row + 40
    )));
}

#[test]
fn silence_at_the_end_of_the_window_is_stale_too() {
    let window = Duration::from_secs(3600);
    let samples: Vec<_> = wave(window, 10_000)
        .into_iter()
        .filter(|(at, _)| *at < END - 30 * 60_000)
        .collect();
    let rendered = render::render(&input(window, samples)).unwrap();
    assert_eq!(rendered.stale_columns.len(), 1);
    assert!((rendered.stale_columns[0].end - rendered.plot_x.end).abs() <= 2);
}

#[test]
fn downsampling_keeps_at_most_two_points_a_column_and_every_extreme() {
    let window = Duration::from_secs(86_400);
    let mut samples = wave(window, 1000);
    // One spike and one dip, single readings among 86 400.
    samples[40_000].1 = 99.0;
    samples[50_000].1 = -5.0;
    let columns = 700;
    let reduced = downsample(
        &samples,
        END - 86_400_000,
        END,
        columns,
        Duration::from_secs(600),
    )
    .unwrap();
    let points: usize = reduced.segments.iter().map(Vec::len).sum();
    assert!(
        points <= 2 * columns,
        "{points} points for {columns} columns"
    );
    assert!(points >= columns, "{points} points for {columns} columns");
    assert_eq!(reduced.max.1, 99.0);
    assert_eq!(reduced.min.1, -5.0);
    let all: Vec<f64> = reduced.segments.iter().flatten().map(|p| p.1).collect();
    assert!(all.contains(&99.0) && all.contains(&-5.0));
    // In time order.
    let times: Vec<f64> = reduced.segments.iter().flatten().map(|p| p.0).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]));
    assert!(reduced.gaps.is_empty());
}

#[test]
fn fewer_than_two_readings_draw_nothing() {
    let window = Duration::from_secs(3600);
    for samples in [
        vec![],
        vec![(END - 1000, 20.0)],
        vec![(END - 1000, f64::NAN), (END, 1.0)],
    ] {
        assert!(matches!(
            render::render(&input(window, samples)),
            Err(render::ChartError::TooFewReadings)
        ));
    }
}

#[test]
fn a_flat_line_and_thresholds_far_away_still_draw() {
    let window = Duration::from_secs(3600);
    let samples = vec![(END - 60_000, 20.0), (END, 20.0)];
    let mut flat = input(window, samples);
    flat.thresholds = vec![Threshold {
        value: 1e6,
        above: true,
    }];
    let rendered = render::render(&flat).unwrap();
    let (w, h, _) = decode(&rendered.png);
    assert_eq!((w, h), SIZE);
}

/// Values or thresholds at f64's limits (an `alert … above 1.7e308`, MQTT payloads of ±1e308)
/// are refused at once; plotters would spin forever on an infinite axis. A thread with a
/// deadline turns such a hang into a failure.
#[test]
fn values_at_the_limits_of_f64_are_refused_not_drawn_forever() {
    let window = Duration::from_secs(3600);
    let mut huge_threshold = input(window, vec![(END - 60_000, 20.0), (END, 21.0)]);
    huge_threshold.thresholds = vec![Threshold {
        value: 1.7e308,
        above: true,
    }];
    let huge_span = input(window, vec![(END - 60_000, -1e308), (END, 1e308)]);
    for chart in [huge_threshold, huge_span] {
        let (done, result) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(render::render(&chart).map(|_| ()));
        });
        let outcome = result
            .recv_timeout(Duration::from_secs(20))
            .expect("rendering finishes");
        assert!(
            matches!(outcome, Err(render::ChartError::OutOfRange)),
            "{outcome:?}"
        );
    }
}

/// Render time and PNG size for 1 h, 24 h and 7 d at one reading a second; prints the numbers
/// (`cargo test --lib chart::tests::cost -- --nocapture`) and asserts only the bounds.
#[test]
fn cost_of_an_hour_a_day_and_a_week_at_one_reading_a_second() {
    for (name, secs) in [("1 h", 3600u64), ("24 h", 86_400), ("7 d", 604_800)] {
        let window = Duration::from_secs(secs);
        let chart = input(window, wave(window, 1000));
        let started = Instant::now();
        let rendered = render::render(&chart).unwrap();
        let took = started.elapsed();
        println!(
            "chart {name}: {} readings, {} points drawn, {} bytes PNG, rendered in {took:?}",
            chart.samples.len(),
            rendered.points,
            rendered.png.len()
        );
        assert!(
            rendered.png.len() < 200_000,
            "{name}: {} bytes",
            rendered.png.len()
        );
        assert!(rendered.points <= 2 * 800);
    }
}

#[test]
fn time_ticks_fall_on_round_utc_times() {
    let label = |start: i64, tick: f64| {
        let at = start + (tick * 1000.0).round() as i64;
        (at.rem_euclid(86_400_000) / 60_000, at)
    };
    // An hour from 11:00:00.5 to 12:00: every 10 minutes, 11:10 to 12:00.
    let start = END - HOUR_MS + 500;
    let ticks = render::time_ticks(start, END);
    assert_eq!(ticks.len(), 6, "{ticks:?}");
    assert_eq!(label(start, ticks[0]).0, 11 * 60 + 10);
    assert!(ticks.iter().all(|t| label(start, *t).1 % 600_000 == 0));
    // A day: every 3 hours; a week: every day at midnight.
    let day = render::time_ticks(END - 24 * HOUR_MS, END);
    assert!(
        day.len() <= 8
            && day
                .iter()
                .all(|t| label(END - 24 * HOUR_MS, *t).1 % (3 * HOUR_MS) == 0)
    );
    let week = render::time_ticks(END - 7 * 24 * HOUR_MS, END);
    assert!(
        week.len() <= 8
            && week
                .iter()
                .all(|t| label(END - 7 * 24 * HOUR_MS, *t).1 % (24 * HOUR_MS) == 0)
    );
}
