//! The benchmark report's telemetry section: what the sampler saw while each model answered
//! its measured prompts.

use super::criteria::pauses_text;
use super::ctx::Ctx;
use super::format::{GIB, duration, gib, num, plain};
use super::paths::TELEMETRY_CSV;
use crate::markdown::{cell, figures_table, inline};
use protocol::results::MetricSummary;
use std::fmt::Write as _;

/// A row of the telemetry table: figure, peak, mean, lowest, samples.
pub(super) fn metric_row(what: &str, m: Option<MetricSummary>, scale: f64) -> Option<Vec<String>> {
    let m = m?;
    Some(vec![what.to_string(), num(m.peak * scale), num(m.mean * scale), num(m.min * scale), m.samples.to_string()])
}

pub(super) fn telemetry_section(ctx: &Ctx) -> String {
    let mut s = String::from("\n## Telemetry\n\n");
    s.push_str("What the sampler saw while each model answered its measured prompts (warm-up excluded): peak, mean and lowest of every figure it could read. GPU figures come from NVML (temperature of the hottest GPU, power and VRAM summed over GPUs); engine memory is the container's working set (usage less page cache) or the process's RSS.\n");
    let host_note = ctx.input.results.verification.host.gpu_note.as_deref();
    let mut any = false;
    for v in ctx.measured() {
        any = true;
        let _ = writeln!(s, "\n### {}\n", v.name());
        let Some(t) = v.tel() else {
            s.push_str("No telemetry was recorded for this model.\n");
            continue;
        };
        let _ = writeln!(
            s,
            "{} samples, {} a second, over {} of measured runs.\n",
            t.samples,
            plain(t.sample_hz),
            duration(t.duration_s)
        );
        let mem = format!("Engine memory ({}), GiB", v.mem_kind());
        let rows: Vec<Vec<String>> = [
            metric_row("GPU utilisation, %", t.gpu_util_pct, 1.0),
            metric_row("GPU temperature, °C", t.gpu_temp_c, 1.0),
            metric_row("GPU power, W", t.gpu_power_w, 1.0),
            metric_row("VRAM used, GiB", t.vram_used_bytes, 1.0 / GIB),
            metric_row("SM clock, MHz", t.sm_clock_mhz, 1.0),
            metric_row(&mem, t.engine_mem_bytes, 1.0 / GIB),
            metric_row("Engine page cache, GiB", t.engine_cache_bytes, 1.0 / GIB),
            metric_row("Engine CPU, % of one core", t.engine_cpu_pct, 1.0),
            metric_row("Host memory available, GiB", t.host_mem_available_bytes, 1.0 / GIB),
            metric_row("Host swap used, GiB", t.host_swap_used_bytes, 1.0 / GIB),
        ]
        .into_iter()
        .flatten()
        .collect();
        if rows.is_empty() {
            s.push_str("The sampler recorded no figures.\n");
        } else {
            s.push_str(&figures_table(1, &["Figure", "Peak", "Mean", "Lowest", "Samples"], &rows));
            s.push('\n');
        }
        let no_gpu = v.no_gpu(host_note);
        if let Some(why) = &no_gpu {
            let _ = writeln!(s, "- GPU figures: not measured: {why}.");
        }
        let _ = writeln!(
            s,
            "- Engine memory limit: {}.",
            match t.engine_mem_limit {
                Some(l) => format!("{} GiB", plain(gib(l))),
                None if v.host_process() => "none (a host process)".into(),
                None => "none in force".into(),
            }
        );
        let source = t.energy_source.as_deref().map(|src| format!(", from the {}", cell(src))).unwrap_or_default();
        match (t.gpu_energy_j, t.joules_per_token) {
            (Some(j), Some(jpt)) => {
                let _ = writeln!(
                    s,
                    "- GPU energy: {} kJ ({} Wh){source}; {} J per generated token.",
                    num(j / 1000.0),
                    num(j / 3600.0),
                    num(jpt)
                );
            }
            (Some(j), None) => {
                let _ = writeln!(s, "- GPU energy: {} kJ ({} Wh){source}.", num(j / 1000.0), num(j / 3600.0));
            }
            (None, Some(jpt)) => {
                let _ = writeln!(s, "- Energy: {} J per generated token{source}.", num(jpt));
            }
            (None, None) => s.push_str("- GPU energy: not measured.\n"),
        }
        if t.throttle_reasons.is_empty() {
            if t.gpu_util_pct.is_some() || t.gpu_temp_c.is_some() {
                s.push_str("- Throttling: none reported.\n");
            }
        } else {
            let _ = writeln!(
                s,
                "- Throttle reasons seen at least once: {}.",
                t.throttle_reasons.iter().map(|r| format!("`{}`", r.replace('`', "'"))).collect::<Vec<_>>().join(", ")
            );
        }
        if t.thermal_pauses.is_empty() {
            if t.gpu_temp_c.is_some() {
                s.push_str("- Thermal pauses: none.\n");
            }
        } else {
            let _ = writeln!(s, "- Thermal pauses: {}:", pauses_text(t));
            for p in &t.thermal_pauses {
                let _ = writeln!(
                    s,
                    "  - at {} s, {} °C: waited {} s, {}",
                    plain(p.at_s.round()),
                    num(p.temp_c),
                    plain(p.waited_s.round()),
                    if p.recovered {
                        "then cooled to the resume threshold"
                    } else {
                        "**did not cool** to the resume threshold"
                    }
                );
            }
        }
        for n in &t.notes {
            if no_gpu.as_deref().is_some_and(|w| w.contains(&cell(n))) {
                continue;
            }
            let _ = writeln!(s, "- Note: {}", inline(n));
        }
        if ctx.series.iter().any(|(m, _)| m == &v.r.model) {
            let _ = writeln!(
                s,
                "- The sampled series is in [telemetry.csv]({TELEMETRY_CSV}) (rows where `model` is {}).",
                inline(&v.r.model)
            );
        }
    }
    if !any {
        s.push_str("\nNo model was measured.\n");
    }
    s
}
