//! The benchmark report's concurrent phase: levels of requests in flight against one model, and
//! every concurrent model deployed together.

use super::ctx::Ctx;
use super::format::DASH;
use crate::markdown::{Align, cell, inline, table};
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
    for n in &c.notes {
        let _ = writeln!(s, "\n- {}", inline(n));
    }
    s
}
