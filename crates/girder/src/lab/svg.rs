//! A small, dependency-free SVG line chart: axes with ticks, one polyline per
//! series, a legend. Enough for the lab's plots, readable in any browser.

use std::fmt::Write as _;

use super::report::Plot;

const WIDTH: f64 = 860.0;
const HEIGHT: f64 = 480.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 240.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
const COLORS: [&str; 8] =
    ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

/// Round tick spacing covering `span` with about five ticks.
fn tick_step(span: f64) -> f64 {
    if span <= 0.0 || !span.is_finite() {
        return 1.0;
    }
    let raw = span / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let normalized = raw / magnitude;
    let nice = if normalized < 1.5 {
        1.0
    } else if normalized < 3.5 {
        2.0
    } else if normalized < 7.5 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

fn fmt_tick(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.1}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 1.0 || a == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// One axis: the range drawn and where its ticks go, in axis units (log10 of the
/// value on a log axis).
struct Axis {
    log: bool,
    min: f64,
    max: f64,
    step: f64,
}

impl Axis {
    /// A value in axis units; `None` if it cannot be drawn on this axis.
    fn to_axis(log: bool, v: f64) -> Option<f64> {
        if log { (v.is_finite() && v > 0.0).then(|| v.log10()) } else { v.is_finite().then_some(v) }
    }

    /// A log axis from whole decade to whole decade around `lo..=hi` (axis units).
    fn decades(lo: f64, hi: f64) -> Self {
        if !lo.is_finite() {
            return Self { log: true, min: 0.0, max: 1.0, step: 1.0 };
        }
        let (min, max) = (lo.floor(), hi.ceil());
        Self { log: true, min, max: if max > min { max } else { min + 1.0 }, step: 1.0 }
    }

    /// The tick positions, in axis units.
    fn ticks(&self) -> Vec<f64> {
        let mut ticks = Vec::new();
        let mut t = (self.min / self.step).ceil() * self.step;
        while t <= self.max + self.step / 1e6 {
            ticks.push(t);
            t += self.step;
        }
        ticks
    }

    fn label(&self, t: f64) -> String {
        match (self.log, t < 0.0) {
            // 0.1, 0.01, …: as many decimals as the decade needs.
            (true, true) => format!("{:.*}", (-t).round() as usize, 10f64.powf(t)),
            (true, false) => fmt_tick(10f64.powf(t)),
            (false, _) => fmt_tick(t),
        }
    }
}

/// Renders `plot` as a standalone SVG document.
#[must_use]
pub(crate) fn render(plot: &Plot) -> String {
    // Every series in axis units, undrawable points left out.
    let drawn: Vec<Vec<(f64, f64)>> = plot
        .series
        .iter()
        .map(|s| {
            s.points
                .iter()
                .filter_map(|&(x, y)| {
                    Some((Axis::to_axis(plot.log_x, x)?, Axis::to_axis(plot.log_y, y)?))
                })
                .collect()
        })
        .collect();
    let (mut x_min, mut x_max) = (f64::INFINITY, f64::NEG_INFINITY);
    let (mut y_min, mut y_max) = (f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in drawn.iter().flatten() {
        x_min = x_min.min(x);
        x_max = x_max.max(x);
        y_min = y_min.min(y);
        y_max = y_max.max(y);
    }
    let x_axis = if plot.log_x {
        Axis::decades(x_min, x_max)
    } else {
        if !x_min.is_finite() {
            (x_min, x_max) = (0.0, 1.0);
        }
        if x_max <= x_min {
            x_max = x_min + 1.0;
        }
        Axis { log: false, min: x_min, max: x_max, step: tick_step(x_max - x_min) }
    };
    let y_axis = if plot.log_y {
        Axis::decades(y_min, y_max)
    } else {
        let y_max = y_max.max(0.0);
        let y_step = tick_step(y_max.max(1e-9));
        Axis { log: false, min: 0.0, max: (y_max / y_step).ceil().max(1.0) * y_step, step: y_step }
    };
    let (plot_w, plot_h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let sx = |x: f64| LEFT + (x - x_axis.min) / (x_axis.max - x_axis.min) * plot_w;
    let sy = |y: f64| TOP + plot_h - (y - y_axis.min) / (y_axis.max - y_axis.min) * plot_h;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="system-ui, sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="24" font-size="15" font-weight="600">{}</text>"#,
        LEFT,
        escape(&plot.title)
    );
    // Grid and y ticks.
    for y in y_axis.ticks() {
        let py = sy(y);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" x2="{}" y1="{py:.1}" y2="{py:.1}" stroke="#e3e5e8"/>"##,
            LEFT + plot_w
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 6.0,
            py + 4.0,
            y_axis.label(y)
        );
    }
    // X ticks.
    for x in x_axis.ticks() {
        let px = sx(x);
        let _ = writeln!(
            svg,
            r##"<line x1="{px:.1}" x2="{px:.1}" y1="{}" y2="{}" stroke="#9aa0a6"/>"##,
            TOP + plot_h,
            TOP + plot_h + 5.0
        );
        let _ = writeln!(
            svg,
            r#"<text x="{px:.1}" y="{}" text-anchor="middle">{}</text>"#,
            TOP + plot_h + 18.0,
            x_axis.label(x)
        );
    }
    let _ = writeln!(
        svg,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#9aa0a6"/>"##
    );
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 14.0,
        escape(&plot.x_label)
    );
    let _ = writeln!(
        svg,
        r#"<text transform="translate(18 {}) rotate(-90)" text-anchor="middle">{}</text>"#,
        TOP + plot_h / 2.0,
        escape(&plot.y_label)
    );
    for (i, (series, points)) in plot.series.iter().zip(&drawn).enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> =
            points.iter().map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y))).collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        for point in &path {
            if let Some((px, py)) = point.split_once(',') {
                let _ = writeln!(svg, r#"<circle cx="{px}" cy="{py}" r="2.5" fill="{color}"/>"#);
            }
        }
        let ly = TOP + 10.0 + 20.0 * i as f64;
        let lx = LEFT + plot_w + 16.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{lx}" x2="{}" y1="{ly}" y2="{ly}" stroke="{color}" stroke-width="3"/>"#,
            lx + 18.0
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}">{}</text>"#,
            lx + 24.0,
            ly + 4.0,
            escape(&series.name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::report::Series;

    #[test]
    fn ticks_are_round() {
        for (span, want) in [(10.0, 2.0), (1_000.0, 200.0), (7.0, 1.0), (0.3, 0.05), (0.0, 1.0)] {
            assert!((tick_step(span) - want).abs() < 1e-12, "{span}: {}", tick_step(span));
        }
    }

    #[test]
    fn renders_every_series_and_escapes_text() {
        let plot = Plot {
            title: "a < b & c".into(),
            x_label: "rows".into(),
            y_label: "inserts/s".into(),
            series: vec![
                Series { name: "uuid v4".into(), points: vec![(0.0, 1.0), (10.0, 5.0)] },
                Series { name: "uuid v7".into(), points: vec![(0.0, 2.0), (10.0, f64::NAN)] },
                Series { name: "empty".into(), points: vec![] },
            ],
            log_x: false,
            log_y: false,
        };
        let svg = render(&plot);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert!(svg.contains("a &lt; b &amp; c"));
        assert!(!svg.contains("NaN"));
    }

    #[test]
    fn log_axes_tick_whole_decades_and_leave_out_what_they_cannot_draw() {
        let plot = Plot {
            title: "latency".into(),
            x_label: "points".into(),
            y_label: "µs".into(),
            series: vec![Series {
                name: "brute force".into(),
                points: vec![(10_000.0, 0.05), (100_000.0, 30.0), (1e6, 2_500.0), (0.0, 1.0)],
            }],
            log_x: true,
            log_y: true,
        };
        let svg = render(&plot);
        let labels: Vec<&str> = svg
            .lines()
            .filter(|l| l.starts_with("<text") && !l.contains("font-size"))
            .filter_map(|l| l.split('>').nth(1)?.split('<').next())
            .collect();
        for tick in ["0.01", "0.1", "1", "10", "100", "1k", "10k", "100k", "1.0M"] {
            assert!(labels.contains(&tick), "{tick} in {labels:?}");
        }
        // The point at x = 0 has no place on a log axis: three circles, not four.
        assert_eq!(svg.matches("<circle").count(), 3);
    }
}
