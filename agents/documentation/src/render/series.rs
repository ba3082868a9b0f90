//! Each model's sampled telemetry series (the sampler's CSV) and the charts over time drawn
//! from them.

use super::format::GIB;
use crate::charts;

/// One model's telemetry series, read from the sampler's CSV (`t_s,samples,<metric>,…`).
///
/// The rows stay slices of the input text and are split into cells when read: an hour at 1 Hz
/// for 20 models is 2 million cells, which as owned strings took over 100 MiB to render.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Series<'a> {
    pub(super) columns: Vec<&'a str>,
    pub(super) rows: Vec<&'a str>,
}

impl<'a> Series<'a> {
    /// Reads the CSV; None when it has no header or no `t_s` column.
    pub(super) fn parse(text: &'a str) -> Option<Series<'a>> {
        let mut lines = text.lines().map(|l| l.trim_end_matches('\r'));
        let columns: Vec<&str> = lines.next()?.split(',').map(str::trim).collect();
        if !columns.contains(&"t_s") {
            return None;
        }
        let rows = lines.filter(|l| !l.trim().is_empty()).collect();
        Some(Series { columns, rows })
    }

    /// The cells of one row, trimmed.
    pub(super) fn cells(row: &'a str) -> impl Iterator<Item = &'a str> {
        row.split(',').map(str::trim)
    }

    /// `(t_s, column × scale)` for every row where both are numbers.
    pub(super) fn points(&self, column: &str, scale: f64) -> Vec<(f64, f64)> {
        let (Some(t), Some(c)) =
            (self.columns.iter().position(|x| *x == "t_s"), self.columns.iter().position(|x| *x == column))
        else {
            return Vec::new();
        };
        self.rows
            .iter()
            .filter_map(|r| {
                let x: f64 = Self::cells(r).nth(t)?.parse().ok()?;
                let y: f64 = Self::cells(r).nth(c)?.parse().ok()?;
                (x.is_finite() && y.is_finite()).then_some((x, y * scale))
            })
            .collect()
    }
}

/// A chart over time: file, series column, title, y-axis unit and scale.
pub(super) const TIME_CHARTS: &[(&str, &str, &str, &str, f64)] = &[
    (
        "charts/engine-memory.svg",
        "engine_mem_bytes",
        "Engine memory over time (container working set or process RSS)",
        "GiB",
        1.0 / GIB,
    ),
    ("charts/host-memory.svg", "host_mem_available_bytes", "Host memory available over time", "GiB", 1.0 / GIB),
    ("charts/gpu-temperature.svg", "gpu_temp_c", "GPU temperature over time (hottest GPU)", "°C", 1.0),
    ("charts/gpu-power.svg", "gpu_power_w", "GPU power over time (all GPUs)", "W", 1.0),
];

/// A rendered chart over time.
pub(super) struct TimeChart {
    pub(super) path: &'static str,
    pub(super) title: &'static str,
    pub(super) svg: String,
}

/// The charts over time that have data, in [`TIME_CHARTS`] order.
pub(super) fn time_charts(series: &[(String, Series)]) -> Vec<TimeChart> {
    TIME_CHARTS
        .iter()
        .filter_map(|&(path, column, title, unit, scale)| {
            let lines: Vec<(String, Vec<(f64, f64)>)> = series
                .iter()
                .map(|(model, s)| (model.clone(), s.points(column, scale)))
                .filter(|(_, p)| !p.is_empty())
                .collect();
            (!lines.is_empty()).then(|| TimeChart {
                path,
                title,
                svg: charts::line_chart_with_axes(title, "seconds into the model's measured runs", unit, &lines),
            })
        })
        .collect()
}
