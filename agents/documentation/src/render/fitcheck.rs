//! The benchmark report's fit check: for every model, the Reader's prediction beside the memory
//! the engine itself logged when it loaded the model (weights, KV cache and compute buffers per
//! device, offloaded layers), with the error.

use super::ctx::Ctx;
use super::format::DASH;
use super::view::View;
use crate::markdown::{Align, cell, table};
use protocol::results::{DeviceBytes, EngineMemory, error_pct, is_host_device};
use std::fmt::Write as _;

/// Bytes as MiB below 1 GiB, else GiB, with two decimals.
pub(super) fn size(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.2} MiB", bytes as f64 / (1u64 << 20) as f64)
    }
}

fn opt_size(bytes: Option<u64>) -> String {
    bytes.map_or_else(|| DASH.into(), size)
}

/// `CPU_Mapped 235.16 MiB + CPU_REPACK 12.66 MiB`.
fn devices(list: &[DeviceBytes], keep: impl Fn(&str) -> bool) -> String {
    let parts: Vec<String> =
        list.iter().filter(|d| keep(&d.device)).map(|d| format!("{} {}", cell(&d.device), size(d.bytes))).collect();
    if parts.is_empty() { DASH.into() } else { parts.join(" + ") }
}

fn err(predicted: Option<u64>, engine: u64) -> String {
    match predicted.and_then(|p| error_pct(p, engine)) {
        Some(e) => format!("{}{:.1} %", if e >= 0.0 { "+" } else { "−" }, e.abs()),
        None => DASH.into(),
    }
}

/// The rows of one model that the engine gave an account for: its buffers, when it logged any,
/// and its layer split.
fn rows(v: &View, e: &EngineMemory) -> Vec<Vec<String>> {
    let model = cell(&v.r.model);
    let logged_buffers = !(e.weights.is_empty() && e.kv.is_empty() && e.compute.is_empty());
    let mut out = if logged_buffers { memory_rows(v, e, &model) } else { Vec::new() };
    out.push(layers_row(v.verdict.and_then(|p| p.gpu_layers), e.offloaded_layers, model));
    out
}

/// Weights, KV, compute, their total, VRAM and RAM: predicted, engine-reported, error.
fn memory_rows(v: &View, e: &EngineMemory, model: &str) -> Vec<Vec<String>> {
    let p = v.verdict;
    let model = model.to_string();
    let all = |_: &str| true;
    let on_gpu = |l: &[DeviceBytes]| l.iter().filter(|d| !is_host_device(&d.device)).map(|d| d.bytes).sum::<u64>();
    let mut out = vec![
        vec![
            model.clone(),
            "Weights".into(),
            opt_size(p.and_then(|p| p.weights_bytes)),
            size(e.weights_bytes()),
            err(p.and_then(|p| p.weights_bytes), e.weights_bytes()),
            devices(&e.weights, all),
        ],
        vec![
            model.clone(),
            "KV cache".into(),
            opt_size(p.and_then(|p| p.kv_bytes)),
            size(e.kv_bytes()),
            err(p.and_then(|p| p.kv_bytes), e.kv_bytes()),
            devices(&e.kv, all),
        ],
        vec![
            model.clone(),
            "Compute".into(),
            opt_size(p.and_then(|p| p.compute_bytes)),
            size(e.compute_bytes()),
            err(p.and_then(|p| p.compute_bytes), e.compute_bytes()),
            devices(&e.compute, all),
        ],
    ];
    let sum3 = |p: &protocol::results::FitVerdict| Some(p.weights_bytes? + p.kv_bytes? + p.compute_bytes?);
    let total = e.weights_bytes() + e.kv_bytes() + e.compute_bytes();
    out.push(vec![
        model.clone(),
        "Total buffers".into(),
        opt_size(p.and_then(sum3)),
        size(total),
        err(p.and_then(sum3), total),
        "weights + KV + compute, every device".into(),
    ]);
    let vram = e.vram_bytes();
    if vram > 0 || p.and_then(|p| p.vram_bytes).is_some_and(|b| b > 0) {
        out.push(vec![
            model.clone(),
            "VRAM".into(),
            opt_size(p.and_then(|p| p.vram_bytes)),
            size(vram),
            err(p.and_then(|p| p.vram_bytes), vram),
            format!(
                "weights {}, KV {}, compute {}; the prediction adds the engine's minimum per GPU",
                size(on_gpu(&e.weights)),
                size(on_gpu(&e.kv)),
                size(on_gpu(&e.compute))
            ),
        ]);
    }
    let ram = e.ram_bytes();
    out.push(vec![
        model.clone(),
        "RAM".into(),
        opt_size(p.and_then(|p| p.ram_bytes)),
        size(ram),
        err(p.and_then(|p| p.ram_bytes), ram),
        "host buffers only; the prediction adds the engine's own runtime, which no buffer line reports".into(),
    ]);
    out
}

/// Layers on the GPU: predicted against the engine's `offloaded N/M` line.
fn layers_row(predicted_layers: Option<(u32, u32)>, engine: Option<(u32, u32)>, model: String) -> Vec<String> {
    let layers = match (predicted_layers, engine) {
        (_, None) => vec![
            opt_layers(predicted_layers),
            DASH.into(),
            DASH.into(),
            "the engine logged no layer split (a CPU-only build prints none)".into(),
        ],
        (Some((pa, _)), Some((ea, eb))) => vec![
            opt_layers(predicted_layers),
            format!("{ea}/{eb}"),
            format!("{:+} layers", i64::from(pa) - i64::from(ea)),
            String::new(),
        ],
        (None, Some((ea, eb))) => vec![DASH.into(), format!("{ea}/{eb}"), DASH.into(), String::new()],
    };
    let mut row = vec![model, "GPU layers".into()];
    row.extend(layers);
    row
}

fn opt_layers(l: Option<(u32, u32)>) -> String {
    l.map_or_else(|| DASH.into(), |(a, b)| format!("{a}/{b}"))
}

/// Predicted beside engine-reported memory for every model.
pub(super) fn fit_against_engine(ctx: &Ctx) -> String {
    let mut s = String::from("\n## Fit prediction against the engine's own account\n\n");
    s.push_str("The Reader's prediction (above) beside the buffers the engine itself logged when it loaded the model: llama-server's `model buffer`, `KV buffer`, `compute buffer` and `output buffer` lines (it runs at `-lv 4` to print them), Ollama's `model weights`, `kv cache` and `compute graph` lines, and the `offloaded N/M layers to GPU` line of either. Error = (predicted − engine) ÷ engine. With memory mapping, llama.cpp's weights include `CPU_REPACK`, a second copy of the tensors it repacks for the CPU.\n\n");
    let mut rows_all = Vec::new();
    let mut missing = Vec::new();
    for v in &ctx.views {
        match v.r.engine_memory.as_ref().filter(|e| !e.is_empty()) {
            Some(e) => rows_all.extend(rows(v, e)),
            None => missing.push(v),
        }
    }
    if !rows_all.is_empty() {
        let mut align = vec![Align::Left, Align::Left];
        align.extend([Align::Right; 3]);
        align.push(Align::Left);
        s.push_str(&table(
            &["Model", "Figure", "Predicted", "Engine-reported", "Error", "Engine's buffers"],
            &align,
            &rows_all,
        ));
    }
    if !rows_all.is_empty() && !missing.is_empty() {
        s.push('\n');
    }
    for v in missing {
        let why = if !v.measured() {
            "not loaded in this cycle"
        } else if v.spec.is_some_and(|m| m.runtime == protocol::plan::Runtime::Endpoint) {
            "an endpoint's log is not threadcycle's to read"
        } else {
            "the engine's log held no buffer lines"
        };
        let _ = writeln!(s, "- {}: no engine account ({why}).", cell(&v.r.model));
    }
    s
}

/// What NVML measured for a model's VRAM and whose memory it is: the engine's processes where
/// the driver listed them, else the device's VRAM in use.
pub(super) fn nvml_vram(t: &protocol::results::TelemetrySummary) -> Option<(u64, String)> {
    let bytes = |m: protocol::results::MetricSummary| m.peak.max(0.0) as u64;
    if let Some(m) = t.gpu_process_mem_bytes {
        let scope = t.gpu_process_scope.as_deref().unwrap_or("the engine's processes");
        return Some((bytes(m), format!("NVML per process: {}", cell(scope))));
    }
    t.vram_used_bytes.map(|m| {
        (
            bytes(m),
            "NVML device total: every process and the driver's allocations (the driver listed no engine process)"
                .into(),
        )
    })
}

/// What the engine itself said it holds on the GPU: Ollama's `/api/ps` `size_vram`, else the
/// GPU buffers of its load log (llama.cpp's weights, KV cache and compute buffers).
pub(super) fn engine_vram(v: &View) -> Option<(u64, String)> {
    if let Some(b) = v.r.engine_vram_bytes {
        return Some((b, "engine-reported: Ollama `/api/ps` `size_vram`".into()));
    }
    let e = v.r.engine_memory.as_ref().filter(|e| !e.is_empty())?;
    Some((e.vram_bytes(), format!("engine-reported: GPU buffers in the {}", cell(&e.source))))
}

/// VRAM by source: NVML's measurement beside the engine's own report, never mixed.
pub(super) fn vram_by_source(ctx: &Ctx) -> String {
    let mut s = String::from("\n## VRAM by source\n\n");
    s.push_str("Two different figures, side by side. **Measured** is NVML's peak over the measured runs: the GPU memory the driver lists for the engine's process when it lists it (a host process's pid; for a container every process on the GPUs, since NVML lists host pids), else the whole device's VRAM in use, which also holds other processes and the driver's allocations. **Engine-reported** is what the engine says it allocated: Ollama's `/api/ps` `size_vram`, or the GPU buffers llama.cpp logged at load (weights, KV cache, compute). The engine's figure leaves out the CUDA context and allocator overhead, so measured is normally the larger.\n\n");
    let rows: Vec<Vec<String>> = ctx
        .views
        .iter()
        .filter(|v| v.measured())
        .map(|v| {
            let nvml = v.tel().and_then(nvml_vram);
            let engine = engine_vram(v);
            let diff = match (&nvml, &engine) {
                (Some((n, _)), Some((e, _))) if *e > 0 => {
                    format!("{:+.0} % measured vs reported", (*n as f64 - *e as f64) / *e as f64 * 100.0)
                }
                _ => DASH.into(),
            };
            vec![
                cell(&v.r.model),
                nvml.as_ref().map_or_else(|| DASH.into(), |(b, _)| size(*b)),
                nvml.map_or_else(|| "not measured: no GPU sampled by NVML".into(), |(_, w)| w),
                engine.as_ref().map_or_else(|| DASH.into(), |(b, _)| size(*b)),
                engine.map_or_else(|| "the engine reported no GPU figure".into(), |(_, w)| w),
                diff,
            ]
        })
        .collect();
    if rows.is_empty() {
        s.push_str("No model was measured.\n");
        return s;
    }
    s.push_str(&table(
        &[
            "Model",
            "Measured VRAM (peak)",
            "What NVML counted",
            "Engine-reported VRAM",
            "Engine's source",
            "Difference",
        ],
        &[Align::Left, Align::Right, Align::Left, Align::Right, Align::Left, Align::Right],
        &rows,
    ));
    s
}
