//! Drawing one chart: pure, no I/O. [`render`] turns a [`ChartInput`] into PNG bytes.
//!
//! Cost is bounded by the picture, not by the readings: the readings are first reduced to at
//! most two points per pixel column (the column's minimum and maximum, in the order they
//! came; [`downsample`]), so a week at one reading a second (604 800 readings) draws the same
//! few thousand segments as an hour. The text comes from DejaVu Sans, compiled into the
//! binary (`assets/fonts/`), so the chart looks the same on a machine without fonts.

use std::ops::Range;
use std::sync::Once;
use std::time::Duration;

use plotters::coord::CoordTranslate;
use plotters::prelude::*;
use plotters::style::{FontFamily, FontStyle};

use crate::bridge::reply;

/// DejaVu Sans (Bitstream Vera licence, see `assets/fonts/DejaVuSans-LICENSE.txt`).
static FONT: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");

/// The chart's size in pixels: small enough for a phone, wide enough for a day.
pub const SIZE: (u32, u32) = (800, 400);

/// The readings' line.
pub const LINE: RGBColor = RGBColor(31, 119, 180);
/// An `above` alert's threshold.
pub const ABOVE: RGBColor = RGBColor(214, 39, 40);
/// A `below` alert's threshold.
pub const BELOW: RGBColor = RGBColor(148, 103, 189);
/// Stale stretches (no reading for longer than the stale-after time).
pub const STALE: RGBColor = RGBColor(228, 228, 228);
/// The minimum's and maximum's markers.
pub const EXTREME: RGBColor = RGBColor(44, 160, 44);

/// One alert threshold of the asking contact.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    /// The value.
    pub value: f64,
    /// `true` for `above`, `false` for `below`.
    pub above: bool,
}

/// Everything a chart shows; times are Unix milliseconds (UTC).
#[derive(Debug, Clone, PartialEq)]
pub struct ChartInput {
    /// The sensor's name (and topic), as the text answer names it.
    pub what: String,
    /// Shown after values; may be empty.
    pub unit: String,
    /// Decimals of the sensor's values, if set.
    pub precision: Option<usize>,
    /// The readings in the window, oldest first.
    pub samples: Vec<(i64, f64)>,
    /// The window's end (now).
    pub end_ms: i64,
    /// The window's length.
    pub window: Duration,
    /// The asking contact's thresholds on this sensor.
    pub thresholds: Vec<Threshold>,
    /// Longer than this without a reading is a stale stretch.
    pub stale_after: Duration,
}

/// Why no chart was drawn.
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    /// A line needs two readings.
    #[error("fewer than two readings in the window")]
    TooFewReadings,
    /// The values (or thresholds) span more than a chart can draw.
    #[error("the values span more than a chart can draw")]
    OutOfRange,
    /// The drawing library failed.
    #[error("drawing failed: {0}")]
    Draw(String),
    /// The PNG encoder failed.
    #[error("PNG encoding failed: {0}")]
    Encode(#[from] png::EncodingError),
}

/// A drawn chart, and where things landed (for tests).
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The PNG file.
    pub png: Vec<u8>,
    /// The plot area's pixel columns.
    pub plot_x: Range<i32>,
    /// The plot area's pixel rows.
    pub plot_y: Range<i32>,
    /// The pixel row of each threshold, in the input's order.
    pub threshold_rows: Vec<i32>,
    /// The stale stretches drawn, as pixel columns.
    pub stale_columns: Vec<Range<i32>>,
    /// How many points the line was drawn through.
    pub points: usize,
}

/// The readings of a window reduced for `columns` pixel columns: line segments (split where a
/// stale gap interrupts them) of at most two points per column, and the stale gaps.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Reduced {
    /// Segments of (seconds since the window's start, value).
    pub segments: Vec<Vec<(f64, f64)>>,
    /// Stale stretches, in seconds since the window's start.
    pub gaps: Vec<(f64, f64)>,
    /// The smallest reading: (seconds since the start, value).
    pub min: (f64, f64),
    /// The largest reading.
    pub max: (f64, f64),
}

/// A pixel column being reduced: its number, its lowest and its highest reading (time, value).
type Column = (usize, (i64, f64), (i64, f64));

/// Reduces `samples` (Unix ms, value; oldest first) of the window `[start_ms, end_ms]` to at most
/// two points per pixel column of `columns`, keeping each column's minimum and maximum in the
/// order they came, and finds the stretches longer than `stale_after` without a reading
/// (between two readings, and from the last reading to the end). Non-finite values are
/// skipped. `None` with fewer than two readings.
pub fn downsample(
    samples: &[(i64, f64)],
    start_ms: i64,
    end_ms: i64,
    columns: usize,
    stale_after: Duration,
) -> Option<Reduced> {
    let span_ms = (end_ms - start_ms).max(1) as f64;
    let columns = columns.max(1);
    let stale_ms = i64::try_from(stale_after.as_millis()).unwrap_or(i64::MAX);
    let secs = |at: i64| (at - start_ms) as f64 / 1000.0;
    let column = |at: i64| {
        let c = ((at - start_ms) as f64 / span_ms * columns as f64).floor();
        (c.max(0.0) as usize).min(columns - 1)
    };
    let mut reduced = Reduced::default();
    let mut count = 0usize;
    let mut segment: Vec<(f64, f64)> = Vec::new();
    // The current column: its number, and its first-seen extreme and the other one.
    let mut current: Option<Column> = None;
    let mut previous: Option<i64> = None;
    let flush = |segment: &mut Vec<(f64, f64)>, col: Option<Column>| {
        if let Some((_, lo, hi)) = col {
            let (a, b) = if lo.0 <= hi.0 { (lo, hi) } else { (hi, lo) };
            segment.push((secs(a.0), a.1));
            if a != b {
                segment.push((secs(b.0), b.1));
            }
        }
    };
    for &(at, value) in samples
        .iter()
        .filter(|(at, v)| v.is_finite() && *at >= start_ms && *at <= end_ms)
    {
        count += 1;
        if count == 1 || value < reduced.min.1 {
            reduced.min = (secs(at), value);
        }
        if count == 1 || value > reduced.max.1 {
            reduced.max = (secs(at), value);
        }
        if let Some(before) = previous {
            if at - before > stale_ms {
                reduced.gaps.push((secs(before), secs(at)));
                flush(&mut segment, current.take());
                if !segment.is_empty() {
                    reduced.segments.push(std::mem::take(&mut segment));
                }
            }
        }
        previous = Some(at);
        let col = column(at);
        match &mut current {
            Some((c, lo, hi)) if *c == col => {
                if value < lo.1 {
                    *lo = (at, value);
                }
                if value > hi.1 {
                    *hi = (at, value);
                }
            }
            _ => {
                flush(&mut segment, current.take());
                current = Some((col, (at, value), (at, value)));
            }
        }
    }
    flush(&mut segment, current.take());
    if !segment.is_empty() {
        reduced.segments.push(segment);
    }
    if count < 2 {
        return None;
    }
    if let Some(last) = previous.filter(|last| end_ms - last > stale_ms) {
        reduced.gaps.push((secs(last), secs(end_ms)));
    }
    Some(reduced)
}

fn register_font() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        if plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_err() {
            // Cannot happen with the bundled file (a unit test draws text with it); the chart
            // would then fail with a drawing error and the bot answer with text alone.
            tracing::warn!("the bundled chart font could not be read");
        }
    });
}

/// `HH:MM` (UTC) for windows up to two days, `Mon HH:MM` beyond.
fn time_label(unix_ms: i64, with_day: bool) -> String {
    let secs = unix_ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let hm = format!("{:02}:{:02}", of_day / 3600, of_day % 3600 / 60);
    if with_day {
        // 1970-01-01 was a Thursday.
        const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
        let day = DAYS[usize::try_from(days.rem_euclid(7)).unwrap_or(0)];
        format!("{day} {hm}")
    } else {
        hm
    }
}

/// Tick positions (seconds since the window's start) on round UTC times: every 5 minutes up to
/// every day, whichever gives at most 8 ticks; more days apart for longer windows.
pub fn time_ticks(start_ms: i64, end_ms: i64) -> Vec<f64> {
    const STEPS: [i64; 10] = [
        300, 600, 900, 1800, 3600, 7200, 10_800, 21_600, 43_200, 86_400,
    ];
    let span = (end_ms - start_ms).max(1000) / 1000;
    let step = STEPS
        .iter()
        .copied()
        .find(|step| span / step <= 8)
        .unwrap_or_else(|| 86_400 * (span / 86_400 / 8 + 1));
    let step_ms = step * 1000;
    let mut tick = (start_ms.div_euclid(step_ms) + 1) * step_ms;
    let mut ticks = Vec::new();
    while tick <= end_ms && ticks.len() < 16 {
        ticks.push((tick - start_ms) as f64 / 1000.0);
        tick += step_ms;
    }
    ticks
}

fn draw_error(e: impl std::fmt::Display) -> ChartError {
    ChartError::Draw(e.to_string())
}

/// Draws `input` at [`SIZE`] and encodes it as a PNG.
pub fn render(input: &ChartInput) -> Result<Rendered, ChartError> {
    render_sized(input, SIZE)
}

/// [`render`] at another size.
pub fn render_sized(
    input: &ChartInput,
    (width, height): (u32, u32),
) -> Result<Rendered, ChartError> {
    register_font();
    let window_ms = i64::try_from(input.window.as_millis()).unwrap_or(i64::MAX / 2);
    let start_ms = input.end_ms.saturating_sub(window_ms);
    let window_s = (input.end_ms - start_ms).max(1) as f64 / 1000.0;
    // Check the readings before drawing anything.
    downsample(&input.samples, start_ms, input.end_ms, 1, input.stale_after)
        .ok_or(ChartError::TooFewReadings)?;

    let mut pixels = vec![255u8; width as usize * height as usize * 3];
    let (plot_x, plot_y, threshold_rows, stale_columns, points) = {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let caption = format!("{}, last {}", input.what, reply::format_age(input.window));
        let value_text = |v: f64| reply::format_value(v, input.precision, &input.unit);

        // Fix the y range from the readings and the thresholds, with a margin.
        let whole = downsample(&input.samples, start_ms, input.end_ms, 1, input.stale_after)
            .ok_or(ChartError::TooFewReadings)?;
        let mut low = whole.min.1;
        let mut high = whole.max.1;
        for t in &input.thresholds {
            if t.value.is_finite() {
                low = low.min(t.value);
                high = high.max(t.value);
            }
        }
        let pad = if high > low {
            (high - low) * 0.08
        } else {
            low.abs().max(1.0) * 0.05
        };
        let (low, high) = (low - pad, high + pad);
        // Readings or thresholds near f64's limits (1e308, which MQTT payloads and `alert`
        // both accept) make the range infinite, and plotters then never finishes placing the
        // axis labels: refuse such a chart rather than spin a thread forever.
        if !(low.is_finite() && high.is_finite() && (high - low).is_finite()) {
            return Err(ChartError::OutOfRange);
        }

        let mut chart = ChartBuilder::on(&root)
            .caption(caption, (FontFamily::SansSerif, 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(72)
            .build_cartesian_2d(0f64..window_s, low..high)
            .map_err(draw_error)?;
        let with_day = input.window > Duration::from_secs(2 * 86_400);
        let y_label = |y: &f64| reply::format_value(*y, input.precision, "");
        let y_desc = if input.unit.is_empty() {
            "value".to_string()
        } else {
            input.unit.clone()
        };
        chart
            .configure_mesh()
            .y_labels(6)
            // The time axis' ticks are drawn below, on round UTC times.
            .x_labels(0)
            .disable_x_mesh()
            .y_label_formatter(&y_label)
            .x_desc("time (UTC)")
            .y_desc(y_desc)
            .label_style((FontFamily::SansSerif, 13))
            .light_line_style(RGBColor(240, 240, 240))
            .bold_line_style(RGBColor(215, 215, 215))
            .draw()
            .map_err(draw_error)?;

        let (plot_x, plot_y) = chart.plotting_area().get_pixel_range();
        let mapping = chart.as_coord_spec().clone();
        let at = move |x: f64, y: f64| mapping.translate(&(x, y));
        for tick in time_ticks(start_ms, input.end_ms) {
            chart
                .draw_series(LineSeries::new(
                    [(tick, low), (tick, high)],
                    RGBColor(225, 225, 225),
                ))
                .map_err(draw_error)?;
            let label = time_label(start_ms + (tick * 1000.0).round() as i64, with_day);
            let (px, _) = at(tick, low);
            let half = 4 * label.chars().count() as i32;
            root.draw(&Text::new(
                label,
                (px - half, plot_y.end + 6),
                (FontFamily::SansSerif, 13).into_font().color(&BLACK),
            ))
            .map_err(draw_error)?;
        }
        let columns = usize::try_from(plot_x.end - plot_x.start)
            .unwrap_or(1)
            .max(1);
        let reduced = downsample(
            &input.samples,
            start_ms,
            input.end_ms,
            columns,
            input.stale_after,
        )
        .ok_or(ChartError::TooFewReadings)?;

        // Stale stretches first, under everything else.
        let mut stale_columns = Vec::new();
        for &(from, to) in &reduced.gaps {
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(from, high), (to, low)],
                    STALE.filled(),
                )))
                .map_err(draw_error)?;
            let a = at(from, low).0;
            let b = at(to, low).0;
            stale_columns.push(a..b);
        }
        if !reduced.gaps.is_empty() {
            chart
                .draw_series(std::iter::once(Text::new(
                    "grey: no reading (stale)",
                    (0.0, high),
                    (FontFamily::SansSerif, 12)
                        .into_font()
                        .color(&RGBColor(120, 120, 120)),
                )))
                .map_err(draw_error)?;
        }

        let mut threshold_rows = Vec::new();
        for t in &input.thresholds {
            let colour = if t.above { ABOVE } else { BELOW };
            chart
                .draw_series(DashedLineSeries::new(
                    [(0.0, t.value), (window_s, t.value)],
                    8,
                    5,
                    colour.stroke_width(2),
                ))
                .map_err(draw_error)?;
            let label = format!(
                "alert {} {}",
                if t.above { "above" } else { "below" },
                value_text(t.value)
            );
            // Just above its line, at the right end (clear of the y axis' labels).
            let (_, row) = at(0.0, t.value);
            root.draw(&Text::new(
                label,
                (plot_x.end - 130, row - 16),
                (FontFamily::SansSerif, 12).into_font().color(&colour),
            ))
            .map_err(draw_error)?;
            threshold_rows.push(row);
        }

        let mut points = 0;
        for segment in &reduced.segments {
            points += segment.len();
            if segment.len() == 1 {
                chart
                    .draw_series(std::iter::once(Circle::new(segment[0], 2, LINE.filled())))
                    .map_err(draw_error)?;
            } else {
                chart
                    .draw_series(LineSeries::new(
                        segment.iter().copied(),
                        LINE.stroke_width(2),
                    ))
                    .map_err(draw_error)?;
            }
        }

        for (point, name) in [(reduced.min, "min"), (reduced.max, "max")] {
            chart
                .draw_series(std::iter::once(Circle::new(
                    point,
                    5,
                    EXTREME.stroke_width(2),
                )))
                .map_err(draw_error)?;
            // Labels inside the plot: left of points near the right edge.
            let text = format!("{name} {}", value_text(point.1));
            let (px, py) = at(point.0, point.1);
            let right_half = px > (plot_x.start + plot_x.end) / 2;
            let dx = if right_half {
                -(8 + 7 * text.chars().count() as i32)
            } else {
                8
            };
            let dy = if name == "max" { -16 } else { 4 };
            root.draw(&Text::new(
                text,
                (px + dx, py + dy),
                (FontFamily::SansSerif, 12).into_font().color(&EXTREME),
            ))
            .map_err(draw_error)?;
        }
        root.present().map_err(draw_error)?;
        (plot_x, plot_y, threshold_rows, stale_columns, points)
    };

    let mut png_bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut png_bytes, width, height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_compression(png::Compression::Best);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&pixels)?;
        writer.finish()?;
    }
    Ok(Rendered {
        png: png_bytes,
        plot_x,
        plot_y,
        threshold_rows,
        stale_columns,
        points,
    })
}
