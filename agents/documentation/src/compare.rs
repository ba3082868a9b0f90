//! Two cycles side by side: each model's matrix in both, and the regressions flagged.
//!
//! A regression is decode tokens/s down, or TTFT or response time up, by more than the
//! threshold; the same moves the other way are reported as improvements.

use crate::markdown::{Align, cell, inline, table};
use protocol::messages::BenchmarkResults;
use protocol::results::{ModelResult, ModelStatus, RunResult, Stat};

/// Which way is better for a figure.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Better {
    Higher,
    Lower,
    Neither,
}

/// One figure of the matrix: name, which way is better, and how to read it from a model.
struct Figure {
    name: &'static str,
    better: Better,
    read: fn(&ModelResult) -> Option<f64>,
}

fn mean(m: &ModelResult, f: fn(&RunResult) -> Option<f64>) -> Option<f64> {
    if m.status != ModelStatus::Measured {
        return None;
    }
    let xs: Vec<f64> = m.runs.iter().filter_map(f).collect();
    Stat::of(&xs, f64::INFINITY).map(|s| s.mean)
}

const GIB: f64 = 1_073_741_824.0;

const FIGURES: &[Figure] = &[
    Figure { name: "Decode tok/s (client)", better: Better::Higher, read: |m| mean(m, |r| r.client_decode_tps) },
    Figure { name: "Decode tok/s (engine)", better: Better::Higher, read: |m| mean(m, |r| r.engine_decode_tps) },
    Figure { name: "Prefill tok/s (engine)", better: Better::Higher, read: |m| mean(m, |r| r.engine_prefill_tps) },
    Figure { name: "TTFT, ms", better: Better::Lower, read: |m| mean(m, |r| Some(r.ttft_ms)) },
    Figure { name: "Response time, s", better: Better::Lower, read: |m| mean(m, |r| Some(r.e2e_ms / 1000.0)) },
    Figure {
        name: "Words per answer",
        better: Better::Neither,
        read: |m| mean(m, |r| Some(f64::from(r.analysis.words))),
    },
    Figure {
        name: "Peak RAM, GiB",
        better: Better::Neither,
        read: |m| m.peak_ram_bytes.filter(|_| m.status == ModelStatus::Measured).map(|b| b as f64 / GIB),
    },
    Figure {
        name: "Peak VRAM, GiB",
        better: Better::Neither,
        read: |m| m.peak_vram_bytes.filter(|_| m.status == ModelStatus::Measured).map(|b| b as f64 / GIB),
    },
];

fn num(v: Option<f64>) -> String {
    match v {
        None => "—".into(),
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

fn status(m: Option<&ModelResult>) -> String {
    match m.map(|m| &m.status) {
        None => "not in this cycle".into(),
        Some(ModelStatus::Measured) => "measured".into(),
        Some(ModelStatus::Failed { .. }) => "failed".into(),
        Some(ModelStatus::Skipped { .. }) => "skipped".into(),
    }
}

/// One figure of one model in both cycles, for `compare --json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FigureChange {
    /// Model name.
    pub model: String,
    /// The figure, as the markdown names it.
    pub figure: &'static str,
    /// In the earlier cycle (None: not measured there).
    pub a: Option<f64>,
    /// In the later cycle.
    pub b: Option<f64>,
    /// Change, %, when both are known.
    pub change_pct: Option<f64>,
    /// `regression`, `improved`, or None.
    pub flag: Option<&'static str>,
}

/// Whether a change of `pct` in figure `f` is a regression or an improvement beyond the threshold.
fn judge(f: &Figure, pct: f64, threshold: f64) -> Option<&'static str> {
    let (worse, better) = match f.better {
        Better::Higher => (pct < -threshold, pct > threshold),
        Better::Lower => (pct > threshold, pct < -threshold),
        Better::Neither => (false, false),
    };
    if worse {
        Some("regression")
    } else if better {
        Some("improved")
    } else {
        None
    }
}

/// Every figure of every model in either cycle, judged as [`compare`] judges it.
pub fn changes(a: &BenchmarkResults, b: &BenchmarkResults, threshold_pct: f64) -> Vec<FigureChange> {
    let threshold = if threshold_pct.is_finite() { threshold_pct.abs() } else { 0.0 };
    let mut names: Vec<&str> = Vec::new();
    for m in b.models.iter().chain(&a.models) {
        if !names.contains(&m.model.as_str()) {
            names.push(&m.model);
        }
    }
    let mut out = Vec::new();
    for name in names {
        let ma = a.models.iter().find(|m| m.model == name);
        let mb = b.models.iter().find(|m| m.model == name);
        for f in FIGURES {
            let (va, vb) = (ma.and_then(f.read), mb.and_then(f.read));
            let change_pct = match (va, vb) {
                (Some(x), Some(y)) if x.abs() > f64::EPSILON => Some((y - x) / x * 100.0),
                _ => None,
            };
            let flag = change_pct.and_then(|p| judge(f, p, threshold));
            out.push(FigureChange { model: name.to_string(), figure: f.name, a: va, b: vb, change_pct, flag });
        }
    }
    out
}

/// Markdown comparing cycle `a` (before) with cycle `b` (after), model by model; a change
/// beyond `threshold_pct` percent in the worse direction is flagged as a regression.
pub fn compare(a_cycle: &str, a: &BenchmarkResults, b_cycle: &str, b: &BenchmarkResults, threshold_pct: f64) -> String {
    let threshold = if threshold_pct.is_finite() { threshold_pct.abs() } else { 0.0 };
    let mut names: Vec<&str> = Vec::new();
    let mut ordered: Vec<&ModelResult> = b.models.iter().collect();
    ordered.sort_by_key(|m| m.index);
    let mut a_ordered: Vec<&ModelResult> = a.models.iter().collect();
    a_ordered.sort_by_key(|m| m.index);
    for m in ordered.into_iter().chain(a_ordered) {
        if !names.contains(&m.model.as_str()) {
            names.push(&m.model);
        }
    }
    let (ac, bc) = (inline(a_cycle), inline(b_cycle));
    let mut regressions: Vec<String> = Vec::new();
    let mut improvements: Vec<String> = Vec::new();
    let mut sections = String::new();
    let mut summary_rows = Vec::new();
    for name in &names {
        let ma = a.models.iter().find(|m| m.model == *name);
        let mb = b.models.iter().find(|m| m.model == *name);
        let mut rows = Vec::new();
        let mut model_flags = Vec::new();
        for f in FIGURES {
            let va = ma.and_then(f.read);
            let vb = mb.and_then(f.read);
            let (change, flag) = match (va, vb) {
                (Some(x), Some(y)) if x.abs() > f64::EPSILON => {
                    let pct = (y - x) / x * 100.0;
                    let judged = judge(f, pct, threshold);
                    let (worse, better) = (judged == Some("regression"), judged == Some("improved"));
                    let line = format!("{} {}: {} → {} ({:+.1} %)", cell(name), f.name, num(va), num(vb), pct);
                    let flag = if worse {
                        regressions.push(line);
                        model_flags.push("regression");
                        "**REGRESSION**"
                    } else if better {
                        improvements.push(line);
                        model_flags.push("improved");
                        "improved"
                    } else {
                        ""
                    };
                    (format!("{pct:+.1} %"), flag.to_string())
                }
                _ => ("—".to_string(), String::new()),
            };
            rows.push(vec![f.name.to_string(), num(va), num(vb), change, flag]);
        }
        let verdict = if model_flags.contains(&"regression") {
            "**REGRESSION**"
        } else if model_flags.contains(&"improved") {
            "improved"
        } else if ma.is_some_and(|m| m.status == ModelStatus::Measured)
            && mb.is_some_and(|m| m.status == ModelStatus::Measured)
        {
            "unchanged"
        } else {
            "not comparable"
        };
        summary_rows.push(vec![cell(name), status(ma), status(mb), verdict.to_string()]);
        sections.push_str(&format!("\n### {}\n\n", inline(name)));
        if rows.iter().all(|r| r[1] == "—" && r[2] == "—") {
            sections.push_str(&format!(
                "Not measured in either cycle ({} in {ac}, {} in {bc}).\n",
                status(ma),
                status(mb)
            ));
            continue;
        }
        sections.push_str(&table(
            &["Figure", &format!("Cycle {ac}"), &format!("Cycle {bc}"), "Change", "Flag"],
            &[Align::Left, Align::Right, Align::Right, Align::Right, Align::Left],
            &rows,
        ));
    }
    let mut s = format!("# Comparison: cycle {ac} → cycle {bc}\n\n");
    s.push_str(&format!(
        "Means over all measured requests of each model. A change of more than {threshold} % in the worse direction (decode or prefill tokens/s down, TTFT or response time up) is a regression.\n\n"
    ));
    if names.is_empty() {
        s.push_str("Neither cycle has any model.\n");
        return s;
    }
    s.push_str(&table(&["Model", &format!("Cycle {ac}"), &format!("Cycle {bc}"), "Verdict"], &[], &summary_rows));
    s.push_str("\n## Regressions\n\n");
    if regressions.is_empty() {
        s.push_str("None beyond the threshold.\n");
    } else {
        for r in &regressions {
            s.push_str(&format!("- {r}\n"));
        }
    }
    if !improvements.is_empty() {
        s.push_str("\n## Improvements\n\n");
        for r in &improvements {
            s.push_str(&format!("- {r}\n"));
        }
    }
    s.push_str("\n## Per model\n");
    s.push_str(&sections);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::report as fixture;

    #[test]
    fn changes_judge_figures_as_the_markdown_does() {
        let before = fixture().results;
        let mut after = before.clone();
        for r in &mut after.models[0].runs {
            r.client_decode_tps = r.client_decode_tps.map(|t| t * 0.8);
        }
        let c = changes(&before, &after, 5.0);
        let d = c
            .iter()
            .find(|x| x.model == before.models[0].model && x.figure == "Decode tok/s (client)")
            .expect("the decode figure");
        assert_eq!(d.flag, Some("regression"), "{d:?}");
        assert!(d.change_pct.is_some_and(|p| (p + 20.0).abs() < 1e-9), "{d:?}");
        let md = compare("a", &before, "b", &after, 5.0);
        assert_eq!(c.iter().filter(|x| x.flag == Some("regression")).count(), md.matches("**REGRESSION**").count() - 1);
    }

    #[test]
    fn snapshot_comparison_flags_regressions() {
        let before = fixture().results;
        let mut after = before.clone();
        for r in &mut after.models[0].runs {
            r.client_decode_tps = r.client_decode_tps.map(|t| t * 0.8);
            r.engine_decode_tps = r.engine_decode_tps.map(|t| t * 0.8);
            r.ttft_ms *= 1.3;
        }
        for r in &mut after.models[1].runs {
            r.client_decode_tps = r.client_decode_tps.map(|t| t * 1.2);
        }
        let md = compare("c41", &before, "c42", &after, 5.0);
        assert!(md.contains("qwen25-coder-14b Decode tok/s (client)"), "{md}");
        assert_eq!(md.matches("**REGRESSION**").count(), 4, "{md}");
        let files = vec![crate::render::ReportFile { path: "compare.md".into(), bytes: md.clone().into_bytes() }];
        assert!(crate::checks::check_reports(&files).is_empty());
        insta::assert_snapshot!("compare", md);
    }

    #[test]
    fn same_results_show_no_regression() {
        let r = fixture().results;
        let md = compare("a", &r, "b", &r, 5.0);
        assert!(md.contains("None beyond the threshold") && !md.contains("**REGRESSION**"), "{md}");
    }
}
