//! Hand-written SVG charts: horizontal bars for one figure per model, lines for time series.
//!
//! The output is plain, self-contained SVG (no scripts, no external fonts) with every label
//! XML-escaped, so it can be written as a file and inlined into the HTML report as it is.

use std::fmt::Write as _;

/// Colours for bars and series, in order.
const PALETTE: &[&str] = &["#2f6db5", "#d9822b", "#3a9a5b", "#b53f3f", "#7b5ea7", "#8c6d46", "#c85fa0", "#5f6b73"];
/// Chart width in SVG units.
const WIDTH: f64 = 720.0;
/// Font used for every label.
const FONT: &str = "font-family=\"system-ui, -apple-system, 'Segoe UI', sans-serif\"";

/// Escapes text for SVG element content and attribute values.
pub fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// A round upper bound for an axis and its tick step (1, 2 or 5 × 10ⁿ).
fn nice_axis(max: f64, ticks: usize) -> (f64, f64) {
    if !(max.is_finite() && max > 0.0) {
        return (1.0, 0.25);
    }
    let raw = max / ticks.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag);
    ((max / step).ceil() * step, step)
}

/// A tick or value label: as few decimals as the step needs.
fn label(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".to_string()
    } else if a >= 100.0 || (a - a.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Opening tag, background and title shared by every chart.
fn open(out: &mut String, title: &str, height: f64) {
    let t = xml_escape(title);
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {height}\" width=\"{WIDTH}\" height=\"{height}\" role=\"img\" aria-label=\"{t}\">\n\
         <title>{t}</title>\n\
         <rect x=\"0\" y=\"0\" width=\"{WIDTH}\" height=\"{height}\" fill=\"#ffffff\"/>\n\
         <text x=\"16\" y=\"26\" {FONT} font-size=\"16\" font-weight=\"600\" fill=\"#1d2733\">{t}</text>\n"
    );
}

/// A horizontal bar chart of one figure, one bar per label; `unit` is printed after each value.
///
/// Bars whose value is not finite are drawn as "not measured" rather than left out, so a
/// failed model stays visible.
pub fn bar_chart(title: &str, unit: &str, bars: &[(String, Option<f64>)]) -> String {
    let left = 200.0;
    let right = 90.0;
    let top = 48.0;
    let row = 34.0;
    let plot_w = WIDTH - left - right;
    let height = top + row * bars.len().max(1) as f64 + 44.0;
    let max = bars.iter().filter_map(|(_, v)| *v).filter(|v| v.is_finite()).fold(0.0, f64::max);
    let (axis_max, step) = nice_axis(max, 5);
    let mut out = String::new();
    open(&mut out, title, height);
    let bottom = top + row * bars.len().max(1) as f64;
    let mut tick = 0.0;
    while tick <= axis_max + step / 2.0 {
        let x = left + plot_w * tick / axis_max;
        let _ = writeln!(
            out,
            "<line x1=\"{x:.1}\" y1=\"{top:.1}\" x2=\"{x:.1}\" y2=\"{bottom:.1}\" stroke=\"#e3e7ec\"/>\n\
             <text x=\"{x:.1}\" y=\"{:.1}\" {FONT} font-size=\"11\" fill=\"#5f6b73\" text-anchor=\"middle\">{}</text>",
            bottom + 16.0,
            label(tick)
        );
        tick += step;
    }
    let _ = writeln!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" {FONT} font-size=\"11\" fill=\"#5f6b73\" text-anchor=\"middle\">{}</text>",
        left + plot_w / 2.0,
        bottom + 34.0,
        xml_escape(unit)
    );
    if bars.is_empty() {
        let _ = writeln!(
            out,
            "<text x=\"{left:.1}\" y=\"{:.1}\" {FONT} font-size=\"12\" fill=\"#5f6b73\">no model was measured</text>",
            top + 21.0
        );
    }
    for (i, (name, value)) in bars.iter().enumerate() {
        let y = top + row * i as f64;
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" {FONT} font-size=\"12\" fill=\"#1d2733\" text-anchor=\"end\">{}</text>",
            left - 8.0,
            y + 21.0,
            xml_escape(name)
        );
        match value.filter(|v| v.is_finite()) {
            Some(v) => {
                let w = (plot_w * v.max(0.0) / axis_max).max(1.0);
                let colour = PALETTE[i % PALETTE.len()];
                let _ = writeln!(
                    out,
                    "<rect x=\"{left:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{:.1}\" fill=\"{colour}\" rx=\"2\"/>\n\
                     <text x=\"{:.1}\" y=\"{:.1}\" {FONT} font-size=\"12\" fill=\"#1d2733\">{} {}</text>",
                    y + 7.0,
                    row - 14.0,
                    left + w + 6.0,
                    y + 21.0,
                    label(v),
                    xml_escape(unit)
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "<text x=\"{:.1}\" y=\"{:.1}\" {FONT} font-size=\"12\" font-style=\"italic\" fill=\"#8a949c\">not measured</text>",
                    left + 6.0,
                    y + 21.0
                );
            }
        }
    }
    out.push_str("</svg>\n");
    out
}

/// A line chart of several series of (x, y) points, e.g. telemetry over time; non-finite
/// points are skipped. Both axes start at zero unless the data goes below it.
pub fn line_chart(title: &str, series: &[(String, Vec<(f64, f64)>)]) -> String {
    line_chart_with_axes(title, "", "", series)
}

/// [`line_chart`] with the axes named (`x_label` under the x axis, `y_label` over the y axis);
/// an empty label is left out.
pub fn line_chart_with_axes(title: &str, x_label: &str, y_label: &str, series: &[(String, Vec<(f64, f64)>)]) -> String {
    let (left, right, top, plot_h) = (64.0, 24.0, 48.0, 228.0);
    let legend_rows = series.len().div_ceil(4).max(1) as f64;
    let height = 326.0 + 14.0 * legend_rows;
    let plot_w = WIDTH - left - right;
    let points = || series.iter().flat_map(|(_, p)| p.iter()).filter(|(x, y)| x.is_finite() && y.is_finite());
    let x_min = points().map(|p| p.0).fold(f64::INFINITY, f64::min).min(0.0);
    let x_max = points().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
    let y_min = points().map(|p| p.1).fold(f64::INFINITY, f64::min).min(0.0);
    let y_max = points().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    let mut out = String::new();
    open(&mut out, title, height);
    if !(x_max.is_finite() && y_max.is_finite()) {
        let _ = writeln!(
            out,
            "<text x=\"{left:.1}\" y=\"{:.1}\" {FONT} font-size=\"12\" fill=\"#5f6b73\">no data</text>",
            top + 20.0
        );
        out.push_str("</svg>\n");
        return out;
    }
    let (x_top, x_step) = nice_axis((x_max - x_min).max(f64::EPSILON), 6);
    let (y_top, y_step) = nice_axis((y_max - y_min).max(f64::EPSILON), 5);
    let sx = |x: f64| left + plot_w * (x - x_min) / x_top;
    let sy = |y: f64| top + plot_h - plot_h * (y - y_min) / y_top;
    let bottom = top + plot_h;
    if !y_label.is_empty() {
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" {FONT} font-size=\"11\" fill=\"#5f6b73\">{}</text>",
            left - 6.0,
            top - 8.0,
            xml_escape(y_label)
        );
    }
    if !x_label.is_empty() {
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" {FONT} font-size=\"11\" fill=\"#5f6b73\" text-anchor=\"end\">{}</text>",
            left + plot_w,
            bottom + 30.0,
            xml_escape(x_label)
        );
    }
    let mut t = 0.0;
    while t <= y_top + y_step / 2.0 {
        let y = sy(y_min + t);
        let _ = writeln!(
            out,
            "<line x1=\"{left:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#e3e7ec\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" {FONT} font-size=\"11\" fill=\"#5f6b73\" text-anchor=\"end\">{}</text>",
            left + plot_w,
            left - 6.0,
            y + 4.0,
            label(y_min + t)
        );
        t += y_step;
    }
    let mut t = 0.0;
    while t <= x_top + x_step / 2.0 {
        let x = sx(x_min + t);
        let _ = writeln!(
            out,
            "<line x1=\"{x:.1}\" y1=\"{bottom:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#9aa5ae\"/>\n\
             <text x=\"{x:.1}\" y=\"{:.1}\" {FONT} font-size=\"11\" fill=\"#5f6b73\" text-anchor=\"middle\">{}</text>",
            bottom + 4.0,
            bottom + 16.0,
            label(x_min + t)
        );
        t += x_step;
    }
    for (i, (name, pts)) in series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let path: Vec<String> = pts
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        if !path.is_empty() {
            let _ = writeln!(
                out,
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"/>",
                path.join(" ")
            );
        }
        let lx = left + 150.0 * (i % 4) as f64;
        let ly = bottom + 44.0 + 14.0 * (i / 4) as f64;
        let _ = writeln!(
            out,
            "<rect x=\"{lx:.1}\" y=\"{:.1}\" width=\"12\" height=\"4\" fill=\"{colour}\"/>\n\
             <text x=\"{:.1}\" y=\"{ly:.1}\" {FONT} font-size=\"11\" fill=\"#1d2733\">{}</text>",
            ly - 6.0,
            lx + 16.0,
            xml_escape(name)
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_are_round() {
        assert_eq!(nice_axis(43.0, 5), (50.0, 10.0));
        assert_eq!(nice_axis(0.9, 5), (1.0, 0.2));
        assert_eq!(nice_axis(0.0, 5), (1.0, 0.25));
    }

    #[test]
    fn labels_are_escaped_and_missing_values_say_so() {
        let svg = bar_chart("t<x>", "tok/s", &[("a&b".into(), Some(12.5)), ("<script>".into(), None)]);
        assert!(svg.contains("a&amp;b") && svg.contains("&lt;script&gt;") && svg.contains("not measured"));
        assert!(!svg.contains("<script"));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
    }

    #[test]
    fn line_chart_draws_one_polyline_per_series() {
        let svg = line_chart(
            "VRAM over time",
            &[("gpu0".into(), vec![(0.0, 1.0), (1.0, 3.0), (2.0, f64::NAN)]), ("gpu1".into(), vec![(0.0, 2.0)])],
        );
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(line_chart("empty", &[]).contains("no data"));
    }
}
