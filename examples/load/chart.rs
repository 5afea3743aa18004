//! A hand-written SVG chart: server CPU per delivery and p99 latency against subscriber count,
//! hub and comparator side by side, each point a median with its min–max as a bar.

use std::fmt::Write;

use crate::report::ScenarioResult;

const WIDTH: f64 = 480.0;
const HEIGHT: f64 = 360.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const SERIES: [(&str, &str, &str); 2] = [
    ("hub", "#1f77b4", "hub"),
    ("axum", "#ff7f0e", "axum Sse + broadcast"),
];

/// One measured point: scenario, subscribers, median, min, max.
struct Point<'a> {
    scenario: &'a str,
    subscribers: f64,
    median: f64,
    min: f64,
    max: f64,
}

/// The chart of every load scenario in `results`, as an SVG document.
pub fn svg(results: &[ScenarioResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" font-family="sans-serif" font-size="12">"#,
        2.0 * WIDTH,
        HEIGHT + 30.0
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    panel(
        &mut out,
        results,
        0.0,
        "cpu_per_delivery_us",
        "server CPU per delivery (µs)",
    );
    panel(&mut out, results, WIDTH, "p99_ms", "latency p99 (ms)");
    for (i, (_, colour, label)) in SERIES.iter().enumerate() {
        let x = LEFT + i as f64 * 200.0;
        let _ = writeln!(
            out,
            r#"<circle cx="{x}" cy="{y}" r="5" fill="{colour}"/><text x="{tx}" y="{ty}">{label}</text>"#,
            y = HEIGHT + 12.0,
            tx = x + 10.0,
            ty = HEIGHT + 16.0
        );
    }
    out.push_str("</svg>\n");
    out
}

/// One panel at horizontal offset `dx`: log-scaled subscribers across, the metric up.
fn panel(out: &mut String, results: &[ScenarioResult], dx: f64, metric: &str, title: &str) {
    let series: Vec<Vec<Point>> = SERIES
        .iter()
        .map(|(who, _, _)| points(results, who, metric))
        .collect();
    let all = series.iter().flatten();
    let top = all.clone().map(|p| p.max).fold(0.0, f64::max).max(1e-9) * 1.1;
    let (lo, hi) = all.clone().fold((f64::MAX, 0.0f64), |(lo, hi), p| {
        (lo.min(p.subscribers), hi.max(p.subscribers))
    });
    let (lo, hi) = if lo > hi {
        (100.0, 10_000.0)
    } else {
        ((lo / 2.0).log10(), (hi * 2.0).log10())
    };
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x_of = |subscribers: f64| dx + LEFT + (subscribers.log10() - lo) / (hi - lo) * plot_w;
    let y_of = |value: f64| TOP + plot_h - value / top * plot_h;

    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" font-size="14" font-weight="bold">{title}</text>"#,
        dx + LEFT,
        TOP - 15.0
    );
    let _ = writeln!(
        out,
        r#"<rect x="{}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="black"/>"#,
        dx + LEFT
    );
    for i in 0..=4 {
        let value = top * f64::from(i) / 4.0;
        let y = y_of(value);
        let label = if top >= 100.0 {
            format!("{value:.0}")
        } else {
            format!("{value:.1}")
        };
        let _ = writeln!(
            out,
            r##"<line x1="{x1}" y1="{y}" x2="{x2}" y2="{y}" stroke="#ddd"/><text x="{tx}" y="{ty}" text-anchor="end">{label}</text>"##,
            x1 = dx + LEFT,
            x2 = dx + LEFT + plot_w,
            tx = dx + LEFT - 5.0,
            ty = y + 4.0
        );
    }
    // A tick under every measured subscriber count.
    let mut ticks: Vec<f64> = series.iter().flatten().map(|p| p.subscribers).collect();
    ticks.sort_by(f64::total_cmp);
    ticks.dedup();
    for tick in ticks {
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle">{tick}</text>"#,
            x_of(tick),
            TOP + plot_h + 18.0
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">subscribers (log scale)</text>"#,
        dx + LEFT + plot_w / 2.0,
        TOP + plot_h + 38.0
    );
    for (index, (points, (_, colour, _))) in series.iter().zip(SERIES).enumerate() {
        // The two series sit a few pixels apart so their bars do not hide each other.
        let shift = (index as f64 - 0.5) * 8.0;
        for p in points {
            let x = x_of(p.subscribers) + shift;
            let _ = writeln!(
                out,
                r#"<line x1="{x}" y1="{}" x2="{x}" y2="{}" stroke="{colour}" stroke-width="2"/><circle cx="{x}" cy="{}" r="4" fill="{colour}"><title>{}: {:.3}</title></circle>"#,
                y_of(p.min),
                y_of(p.max),
                y_of(p.median),
                p.scenario,
                p.median
            );
            if index == 0 {
                let _ = writeln!(
                    out,
                    r##"<text x="{}" y="{}" font-size="10" fill="#555">{}</text>"##,
                    x + 10.0,
                    y_of(p.median) - 6.0,
                    p.scenario
                );
            }
        }
    }
}

fn points<'a>(results: &'a [ScenarioResult], who: &str, metric: &str) -> Vec<Point<'a>> {
    results
        .iter()
        .filter_map(|result| match result {
            ScenarioResult::Load { name, load, .. } => {
                let spread = result.spread(who, metric);
                Some(Point {
                    scenario: name,
                    subscribers: load.subscribers as f64,
                    median: spread.median,
                    min: spread.min,
                    max: spread.max,
                })
            }
            ScenarioResult::Idle { .. } => None,
        })
        .collect()
}
