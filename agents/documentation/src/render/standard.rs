//! The standard test's table: `pp512` / `tg128` per model as `llama-bench` prints them (model,
//! size, params, backend, GPU layers, threads, test, t/s as mean ± standard deviation), so the
//! figures can be set beside community tables.

use super::ctx::Ctx;
use super::format::{DASH, num, opt_gib, stat_text};
use crate::markdown::{Align, cell, inline, table};
use protocol::results::Stat;
use std::fmt::Write as _;

pub(super) fn section(ctx: &Ctx) -> String {
    let st = &ctx.plan.standard;
    let with: Vec<_> = ctx.views.iter().filter(|v| v.measured() && v.r.standard.is_some()).collect();
    if with.is_empty() {
        return String::new();
    }
    let mut s = String::from("\n## Standard test (llama-bench's pp / tg)\n\n");
    let _ = writeln!(
        s,
        "The two workloads `llama-bench` reports, run on each model's engine right after its measured runs, with the same settings: **{}** (prefill of a {}-token prompt) and **{}** ({} tokens generated from an empty context), {} repetitions each, tokens/s as mean ± standard deviation. The figures are the engine's own counters (the source is named per model), so they line up with community `llama-bench` tables for the same model, quantisation, backend and threads; the client-side figures above include HTTP, sampling and the prompt template, and these do not.\n",
        st.pp_name(),
        st.prompt_tokens,
        st.tg_name(),
        st.gen_tokens,
        st.repetitions
    );
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for v in &with {
        let Some(r) = v.r.standard.as_ref() else { continue };
        if let Some(n) = &r.note {
            notes.push(format!("- {}: {}", v.name(), inline(n)));
        }
        if !r.source.is_empty() {
            notes.push(format!("- {}: figures from {}", v.name(), inline(&r.source)));
        }
        for run in &r.runs {
            let stat = Stat::of(&run.tps, f64::INFINITY);
            let test = match run.tokens {
                0 => format!("{} (no timing)", run.test),
                n if run.test.ends_with(&n.to_string()) => run.test.clone(),
                n => format!("{} ({n} tokens)", run.test),
            };
            rows.push(vec![
                v.name(),
                opt_gib(v.size_bytes()),
                v.spec.and_then(|m| m.params_b).map(|p| format!("{} B", num(p))).unwrap_or_else(|| DASH.into()),
                v.r.manifest.quantization.as_deref().map(cell).unwrap_or_else(|| DASH.into()),
                v.backend().unwrap_or(DASH).into(),
                v.r.manifest.gpu_layers.as_deref().map(cell).unwrap_or_else(|| DASH.into()),
                v.r.manifest.threads.map(|t| t.to_string()).unwrap_or_else(|| "default".into()),
                cell(&test),
                stat_text(stat.as_ref(), 1.0),
            ]);
        }
    }
    if !rows.is_empty() {
        let headers = ["Model", "Size GiB", "Params", "Quant", "Backend", "GPU layers", "Threads", "Test", "t/s"];
        let mut align =
            vec![Align::Left, Align::Right, Align::Right, Align::Left, Align::Left, Align::Left, Align::Right];
        align.extend([Align::Left, Align::Right]);
        s.push_str(&table(&headers, &align, &rows));
    }
    if !notes.is_empty() {
        s.push('\n');
        s.push_str(&notes.join("\n"));
        s.push('\n');
    }
    s
}
