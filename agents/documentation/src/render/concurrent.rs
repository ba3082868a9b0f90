//! The benchmark report's concurrent phase: levels of requests in flight against one model, and
//! every concurrent model deployed together.

use super::ctx::Ctx;
use super::fitcheck::size;
use super::format::{DASH, duration};
use crate::markdown::{Align, cell, inline, table};
use protocol::results::TelemetrySummary;
use std::fmt::Write as _;

/// The plan's concurrent phase: levels against one model, and models deployed together.
pub(super) fn concurrent_section(ctx: &Ctx) -> String {
    let Some(c) = &ctx.input.results.concurrent else { return String::new() };
    let mut s = String::from("\n## Concurrent phase\n\n");
    s.push_str("Requests in flight at once against one model, then every concurrent model deployed together. Degradation is mean end-to-end latency against the same model alone (level 1); aggregate tokens/s is all output tokens over the wall time of the level.\n\n");
    if !c.levels.is_empty() {
        let rows: Vec<Vec<String>> = c
            .levels
            .iter()
            .map(|l| {
                vec![
                    cell(&l.model),
                    l.level.to_string(),
                    format!("{}/{}", l.requests, l.requests + l.failed),
                    format!("{:.0}", l.mean_e2e_ms),
                    format!("{:.0}", l.mean_ttft_ms),
                    l.mean_decode_tps.map(|t| format!("{t:.1}")).unwrap_or_else(|| DASH.into()),
                    format!("{:.1}", l.aggregate_tps),
                    l.degradation.map(|d| format!("×{d:.2}")).unwrap_or_else(|| DASH.into()),
                ]
            })
            .collect();
        s.push_str(&table(
            &[
                "Model",
                "In flight",
                "Succeeded",
                "Mean e2e ms",
                "Mean TTFT ms",
                "Decode tok/s per request",
                "Aggregate tok/s",
                "Degradation",
            ],
            &[
                Align::Left,
                Align::Right,
                Align::Right,
                Align::Right,
                Align::Right,
                Align::Right,
                Align::Right,
                Align::Right,
            ],
            &rows,
        ));
    }
    if !c.together.is_empty() {
        s.push_str("\nAll concurrent models deployed at once, one request each at the same time:\n\n");
        let rows: Vec<Vec<String>> = c
            .together
            .iter()
            .map(|t| {
                vec![
                    cell(&t.model),
                    if t.error.is_some() { DASH.into() } else { format!("{:.0}", t.e2e_ms) },
                    t.alone_e2e_ms.map(|a| format!("{a:.0}")).unwrap_or_else(|| DASH.into()),
                    t.degradation.map(|d| format!("×{d:.2}")).unwrap_or_else(|| DASH.into()),
                    t.error.as_deref().map(cell).unwrap_or_default(),
                ]
            })
            .collect();
        s.push_str(&table(
            &["Model", "Together e2e ms", "Alone e2e ms", "Degradation", "Error"],
            &[Align::Left, Align::Right, Align::Right, Align::Right, Align::Left],
            &rows,
        ));
    }
    if !c.engines.is_empty() {
        s.push_str("\nGPU memory of each engine while the models ran together: **measured** is the memory NVML lists for the engine's pid (a host process; a container's pids are not NVML's), **engine-reported** is the engine's own account (llama.cpp's GPU buffers from its log, or Ollama's `/api/ps` `size_vram`), not a measurement.\n\n");
        let rows: Vec<Vec<String>> = c
            .engines
            .iter()
            .map(|e| {
                vec![
                    cell(&e.model),
                    e.pid.map_or_else(|| DASH.into(), |p| p.to_string()),
                    e.nvml_bytes.map_or_else(
                        || if e.pid.is_some() { "— (NVML did not list it)".into() } else { DASH.into() },
                        size,
                    ),
                    e.engine_reported_bytes.map_or_else(|| DASH.into(), size),
                    e.engine_source.as_deref().map_or_else(|| DASH.into(), cell),
                ]
            })
            .collect();
        s.push_str(&table(
            &["Model", "Engine pid", "Measured GPU memory (NVML)", "Engine-reported VRAM", "Engine's source"],
            &[Align::Left, Align::Right, Align::Right, Align::Right, Align::Left],
            &rows,
        ));
    }
    if let Some(t) = &c.telemetry {
        sustained(&mut s, t);
    }
    for n in &c.notes {
        let _ = writeln!(s, "\n- {}", inline(n));
    }
    s
}

/// The telemetry of the whole concurrent phase: the thermal impact of the sustained run.
fn sustained(s: &mut String, t: &TelemetrySummary) {
    let _ = writeln!(
        s,
        "\nTelemetry over the whole concurrent phase ({} samples over {}):\n",
        t.samples,
        duration(t.duration_s)
    );
    match t.gpu_temp_c {
        Some(m) => {
            let start = t.gpu_temp_first_c.map_or_else(|| DASH.into(), |c| format!("{c:.0} °C"));
            let _ =
                writeln!(s, "- GPU temperature: {start} at the start → peak {:.0} °C (mean {:.1} °C)", m.peak, m.mean);
        }
        None => s.push_str("- GPU temperature: not sampled (no GPU seen by NVML)\n"),
    }
    if let Some(th) = t.throttled_s {
        let reasons = if t.throttle_reasons.is_empty() {
            String::new()
        } else {
            format!(" ({})", t.throttle_reasons.iter().map(|r| format!("`{}`", cell(r))).collect::<Vec<_>>().join(", "))
        };
        let share = if t.duration_s > 0.0 {
            format!(", {:.0} % of the phase", th / t.duration_s * 100.0)
        } else {
            String::new()
        };
        let _ = writeln!(s, "- Throttled: {}{share}{reasons}", duration(th));
    }
    if let Some(u) = t.gpu_util_pct {
        let _ = writeln!(s, "- GPU utilisation: mean {:.0} %, peak {:.0} %", u.mean, u.peak);
    }
    if let Some(p) = t.gpu_power_w {
        let _ = writeln!(s, "- GPU power: mean {:.0} W, peak {:.0} W", p.mean, p.peak);
    }
    if let Some(v) = t.vram_used_bytes {
        let _ = writeln!(s, "- VRAM in use on the device (NVML): peak {}", size(v.peak.max(0.0) as u64));
    }
    if let Some(j) = t.gpu_energy_j {
        let _ = writeln!(s, "- GPU energy (NVML): {:.0} J", j);
    }
    if let Some(j) = t.cpu_energy_j {
        let src = t.cpu_energy_source.as_deref().map(cell).unwrap_or_default();
        let _ = writeln!(s, "- CPU package energy ({src}): {:.0} J", j);
    }
    if let Some(p) = t.host_mem_available_bytes {
        let _ = writeln!(s, "- Host memory available: lowest {}", size(p.min.max(0.0) as u64));
    }
    for n in &t.notes {
        let _ = writeln!(s, "- {}", inline(n));
    }
}
