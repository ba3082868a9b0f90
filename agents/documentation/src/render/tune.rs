//! The benchmark report's tuning section: per model, every trial of Debug's search (settings,
//! measured figures, verdict), the winner against the baseline with the gain and its noise, and
//! the winner restored and measured again.

use super::ctx::Ctx;
use super::format::{DASH, opt_gib, stat_text};
use crate::markdown::{Align, cell, inline, table};
use protocol::tune::{Trial, TuneResult};
use std::fmt::Write as _;

/// `## Tuning`, when any model was tuned.
pub(super) fn tune_section(ctx: &Ctx) -> String {
    let tuned: Vec<_> = ctx.views.iter().filter_map(|v| v.r.tune.as_ref().map(|t| (v, t))).collect();
    if tuned.is_empty() {
        return String::new();
    }
    let mut s = String::from("\n## Tuning\n\n");
    s.push_str("After each model's measurement, Debug searched for better settings and the Writer measured each candidate on short runs (the engine restarted with the candidate's settings, one warm-up, then the tuning prompt repeated). Stages run in order — GPU layers, threads, batch size, KV cache type — each from the best configuration so far; a candidate predicted not to fit is skipped, not tried. A winner must beat the baseline by more than the noise (both trials' standard deviations combined).\n");
    for (v, t) in tuned {
        let _ = writeln!(
            s,
            "\n### {}\n\nGoal: {}; prompt `{}`, {} measured run(s) per trial.\n",
            v.name(),
            t.goal.describe(),
            inline(&t.prompt),
            t.repetitions
        );
        for n in &t.notes {
            let _ = writeln!(s, "- {}", inline(n));
        }
        if !t.notes.is_empty() {
            s.push('\n');
        }
        s.push_str(&trials_table(t));
        s.push_str(&verdict_text(t));
    }
    s
}

fn row(t: &Trial) -> Vec<String> {
    vec![
        t.number.to_string(),
        cell(&t.stage),
        cell(&t.config.describe()),
        t.verdict.as_str().to_string(),
        stat_text(t.decode_tps.as_ref(), 1.0),
        stat_text(t.prefill_tps.as_ref(), 1.0),
        stat_text(t.ttft_ms.as_ref(), 1.0),
        opt_gib(t.peak_ram_bytes),
        opt_gib(t.peak_vram_bytes),
        t.peak_temp_c.map(|c| format!("{c:.0}")).unwrap_or_else(|| DASH.into()),
        cell(if t.note.is_empty() { &t.why } else { &t.note }),
    ]
}

fn trials_table(t: &TuneResult) -> String {
    let mut rows: Vec<Vec<String>> = t.trials.iter().map(row).collect();
    if let Some(c) = &t.confirmation {
        let mut r = row(c);
        r[0] = "end".into();
        rows.push(r);
    }
    let mut align = vec![Align::Right, Align::Left, Align::Left, Align::Left];
    align.extend([Align::Right; 6]);
    align.push(Align::Left);
    table(
        &[
            "#",
            "Stage",
            "Settings",
            "Verdict",
            "Decode tok/s",
            "Prefill tok/s",
            "TTFT ms",
            "Peak RAM GiB",
            "Peak VRAM GiB",
            "Peak °C",
            "Why / what happened",
        ],
        &align,
        &rows,
    )
}

fn verdict_text(t: &TuneResult) -> String {
    let mut s = String::from("\n");
    match &t.conclusion {
        Some(c) => {
            let winner = c.winner.and_then(|n| t.trial(n));
            let baseline = c.baseline.and_then(|n| t.trial(n));
            match (winner, baseline) {
                (Some(w), Some(b)) if w.number != b.number => {
                    let _ = writeln!(
                        s,
                        "**Winner: trial {}** ({}) against the baseline (trial {}, {}): {:+.1} % on the goal, noise ±{:.1} %.\n",
                        w.number,
                        inline(&w.config.describe()),
                        b.number,
                        inline(&b.config.describe()),
                        c.gain_pct.unwrap_or(0.0),
                        c.noise_pct.unwrap_or(0.0)
                    );
                }
                (_, Some(b)) => {
                    let _ = writeln!(
                        s,
                        "**Baseline kept** (trial {}, {}): no candidate beat it by more than the noise (best gain {:+.1} %, noise ±{:.1} %).\n",
                        b.number,
                        inline(&b.config.describe()),
                        c.gain_pct.unwrap_or(0.0),
                        c.noise_pct.unwrap_or(0.0)
                    );
                }
                _ => s.push_str("**No winner**: the baseline was not measured.\n\n"),
            }
            let _ = writeln!(s, "Debug: {}\n", inline(&c.outcome));
        }
        None => s.push_str("**No conclusion**: the search stopped before Debug concluded.\n\n"),
    }
    if let Some(why) = &t.stopped {
        let _ = writeln!(s, "Stopped early: {}\n", inline(why));
    }
    if let Some(c) = &t.confirmation {
        let _ = writeln!(
            s,
            "Restored at the end (row `end`): the winner's settings started again and measured {} decode tok/s, {} ms TTFT.\n",
            stat_text(c.decode_tps.as_ref(), 1.0),
            stat_text(c.ttft_ms.as_ref(), 1.0)
        );
    }
    s
}
