//! The benchmark report's decode roofline: each measured model's decode speed beside what the
//! host's memory bandwidth allows for its weights.

use super::ctx::Ctx;
use super::format::{DASH, num, opt_gib, opt_num, percent};
use super::view::View;
use crate::markdown::{Align, inline, table};
use protocol::results::{FitVerdict, HostFacts};
use std::fmt::Write as _;

/// One measured model against the decode speed memory bandwidth allows.
pub(super) struct Roofline {
    weights: Option<u64>,
    /// Share of the weights in VRAM, and whether it was the engine's report or the prediction.
    gpu_share: Option<(f64, &'static str)>,
    roof_tps: Option<f64>,
    measured: Option<(f64, &'static str)>,
    note: Option<&'static str>,
}

impl Roofline {
    fn of(v: &View, gpu_bw: Option<f64>, ram_bw: Option<f64>, has_gpu: bool) -> Self {
        let weights = v.verdict.and_then(|f| f.weights_bytes).filter(|w| *w > 0);
        let gpu_share =
            v.r.manifest.gpu_weight_share.filter(|x| (0.0..=1.0).contains(x)).map(|x| (x, "engine")).or_else(|| {
                if !has_gpu {
                    Some((0.0, "no GPU"))
                } else {
                    v.verdict.and_then(FitVerdict::predicted_gpu_share).map(|x| (x, "predicted"))
                }
            });
        // The engine's own decode timing is the closest to the memory-bound rate; the client's
        // figure includes streaming overhead.
        let measured = v
            .all
            .engine_tps
            .map(|s| (s.mean, "engine"))
            .or_else(|| v.all.client_tps.map(|s| (s.mean, "client")))
            .filter(|(t, _)| *t > 0.0);
        let mut r = Roofline { weights, gpu_share, roof_tps: None, measured, note: None };
        let (Some(w), Some((share, _))) = (weights, gpu_share) else {
            r.note = Some(if weights.is_none() { "weight size unknown" } else { "GPU/CPU split unknown" });
            return r;
        };
        let (on_gpu, in_ram) = protocol::results::weights_split(w, share);
        r.roof_tps = protocol::results::roofline_decode_tps(on_gpu, in_ram, gpu_bw, ram_bw);
        if r.roof_tps.is_none() {
            r.note = Some(if on_gpu > 0 && gpu_bw.is_none() {
                "GPU bandwidth unknown"
            } else {
                "RAM bandwidth not measured"
            });
        }
        r
    }

    fn efficiency(&self) -> Option<f64> {
        Some(self.measured?.0 / self.roof_tps?)
    }
}

/// The decode roofline: measured decode beside what memory bandwidth allows.
pub(super) fn roofline_section(ctx: &Ctx) -> String {
    let mut s = String::from("\n## Decode roofline\n\n");
    s.push_str("Generating one token reads every weight once, so decode cannot be faster than 1 ÷ (weights in VRAM ÷ GPU bandwidth + weights in RAM ÷ RAM bandwidth). The KV cache read per token is left out, so at long contexts the real limit is lower still. Efficiency is the measured decode over that limit; the engine's own decode timing is used where it reports one.\n\n");
    // Every host the cycle ran on (one, or each of several).
    let hosts: Vec<&HostFacts> = if ctx.several_hosts() {
        ctx.input.results.hosts.iter().map(|h| &h.host).collect()
    } else {
        vec![&ctx.input.results.verification.host]
    };
    for host in &hosts {
        if ctx.several_hosts() {
            let _ = writeln!(s, "- Host {}:", inline(&host.host_id));
        }
        let pre = if ctx.several_hosts() { "  - " } else { "- " };
        let (gpu_bw, ram_bw) = host.bandwidths();
        match host.gpus.iter().find(|g| g.memory_bandwidth_gbs.is_some()) {
            Some(g) => {
                let _ = writeln!(
                    s,
                    "{pre}GPU bandwidth: {} GB/s ({}, from NVML: memory bus width × maximum memory clock × 2)",
                    num(gpu_bw.unwrap_or(f64::NAN)),
                    inline(&g.name)
                );
            }
            None if host.gpus.is_empty() => {
                let _ = writeln!(s, "{pre}GPU bandwidth: no GPU on this host; every weight is read from RAM");
            }
            None => {
                let _ = writeln!(s, "{pre}GPU bandwidth: unknown (NVML did not report the memory bus width and clock)");
            }
        }
        match ram_bw {
            Some(b) => {
                let _ = writeln!(
                    s,
                    "{pre}RAM bandwidth: {} GB/s ({})",
                    num(b),
                    inline(host.ram_bandwidth_source.as_deref().unwrap_or("source not recorded"))
                );
            }
            None => {
                let _ = writeln!(s, "{pre}RAM bandwidth: not measured");
            }
        }
    }
    s.push('\n');
    let rows: Vec<Vec<String>> = ctx
        .measured()
        .map(|v| {
            let host = hosts.iter().find(|h| v.host.is_some_and(|id| id == h.host_id)).unwrap_or(&hosts[0]);
            let (gpu_bw, ram_bw) = host.bandwidths();
            let r = Roofline::of(v, gpu_bw, ram_bw, !host.gpus.is_empty());
            vec![
                v.name(),
                opt_gib(r.weights),
                r.gpu_share.map(|(x, src)| format!("{} ({src})", percent(x))).unwrap_or_else(|| DASH.into()),
                opt_num(r.roof_tps),
                r.measured.map(|(t, src)| format!("{} ({src})", num(t))).unwrap_or_else(|| DASH.into()),
                r.efficiency().map(percent).unwrap_or_else(|| DASH.into()),
                match r.efficiency() {
                    Some(e) if e > 1.05 => "faster than the roofline: check the split and bandwidth figures".into(),
                    _ => r.note.unwrap_or("").to_string(),
                },
            ]
        })
        .collect();
    if rows.is_empty() {
        s.push_str("No model was measured.\n");
    } else {
        let mut align = vec![Align::Left];
        align.extend([Align::Right; 5]);
        align.push(Align::Left);
        s.push_str(&table(
            &["Model", "Weights GiB", "In VRAM", "Roofline tok/s", "Measured tok/s", "Efficiency", "Note"],
            &align,
            &rows,
        ));
    }
    s
}
