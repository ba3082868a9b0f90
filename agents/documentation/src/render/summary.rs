//! `README.md`, the summary page: what was tested where, each model's outcome and headline
//! figures, the success criteria and claims in brief, the host checks, and links to the rest.

use super::criteria::{Verdict, criteria_table};
use super::ctx::Ctx;
use super::format::{DASH, check_word, gib, num, opt_gib, opt_num, plain, short_hash};
use super::ledger;
use super::paths::TELEMETRY_CSV;
use super::paths::nav;
use super::view::outcome;
use crate::markdown::{Align, cell, inline, table};
use protocol::results::{CheckStatus, ModelStatus};
use std::fmt::Write as _;

pub(super) fn page(ctx: &Ctx) -> String {
    let mut s = cycle_and_host(ctx);
    s.push_str(&results(ctx));
    s.push_str(&criteria_and_claims(ctx));
    s.push_str(&host_checks(ctx));
    s.push_str(&reports(ctx));
    s
}

/// The title, what the cycle tested, and the cycle, plan, host and GPU in a table.
fn cycle_and_host(ctx: &Ctx) -> String {
    let ver = &ctx.input.results.verification;
    let plan = ctx.plan;
    let host = &ver.host;
    let mut s = String::new();
    let _ = writeln!(s, "# {} — test cycle {}\n", inline(&plan.name), ctx.cycle());
    s.push_str(&nav("README.md"));
    if !plan.description.trim().is_empty() {
        let _ = writeln!(s, "{}\n", inline(plan.description.trim()));
    }
    let prompts = plan.prompts.len();
    let _ = writeln!(
        s,
        "This cycle tested {} model(s) from the plan on **{}**, each answering {} prompt(s) {} time(s) after {}.\n",
        plan.models.len(),
        inline(&host.hostname),
        prompts,
        plan.defaults.repetitions,
        if plan.defaults.warmup { "one excluded warm-up request" } else { "no warm-up" }
    );
    let baselines: Vec<String> = plan
        .models
        .iter()
        .filter(|m| m.baseline)
        .map(|m| format!("{} ({} time(s))", inline(&m.name), plan.repetitions_for(m)))
        .collect();
    if !baselines.is_empty() {
        let _ = writeln!(
            s,
            "The concurrent phase's models also answered every prompt alone, as the baseline the larger models are compared with: {}.\n",
            baselines.join(", ")
        );
    }
    let gpus = if host.gpus.is_empty() {
        host.gpu_note.as_deref().map(cell).unwrap_or_else(|| "none reported".into())
    } else {
        host.gpus
            .iter()
            .map(|g| format!("{} ({} GiB, driver {})", cell(&g.name), plain(gib(g.vram_total)), cell(&g.driver)))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let first = ctx.views.iter().filter(|v| v.measured()).map(|v| v.r.started_at.as_str()).min();
    let last = ctx.views.iter().filter(|v| v.measured()).map(|v| v.r.finished_at.as_str()).max();
    let rows = vec![
        vec!["Cycle".into(), ctx.cycle()],
        vec![
            "Plan".into(),
            format!("{} ({}, sha256 {})", cell(&plan.name), cell(&ver.plan_source), cell(short_hash(&ver.plan_hash))),
        ],
        vec![
            "Host".into(),
            format!(
                "{}, {}, {} logical CPUs, {} GiB RAM",
                cell(&host.hostname),
                cell(&host.cpu_model),
                host.cpus,
                plain(gib(host.ram_total))
            ),
        ],
        vec!["GPU".into(), gpus],
        vec![
            "Measured".into(),
            match (first, last) {
                (Some(a), Some(b)) => format!("{} to {}", cell(a), cell(b)),
                _ => DASH.into(),
            },
        ],
    ];
    s.push_str(&table(&["Item", "Value"], &[], &rows));
    s
}

/// How many models were measured, and each one's outcome and headline figures.
fn results(ctx: &Ctx) -> String {
    let plan = ctx.plan;
    let mut s = String::new();
    s.push_str("\n## Results\n\n");
    let measured = ctx.measured().count();
    let failed = ctx.views.iter().filter(|v| matches!(v.r.status, ModelStatus::Failed { .. })).count();
    let skipped = ctx.views.iter().filter(|v| matches!(v.r.status, ModelStatus::Skipped { .. })).count();
    let _ = writeln!(s, "{measured} of {} model(s) measured, {failed} failed, {skipped} skipped.\n", ctx.views.len());
    if let Some(why) = &ctx.input.results.aborted {
        let _ = writeln!(s, "**The cycle stopped early:** {}. Models after that point were not run.\n", inline(why));
    }
    let rows: Vec<Vec<String>> = ctx
        .views
        .iter()
        .map(|v| {
            vec![
                v.name(),
                outcome(v),
                v.r.attempts.len().max(usize::from(v.measured())).to_string(),
                v.all.decode().map(|(t, _)| num(t)).unwrap_or_else(|| DASH.into()),
                opt_num(v.all.ttft_ms.map(|s| s.mean)),
                opt_num(v.all.e2e_ms.map(|s| s.mean / 1000.0)),
                opt_gib(v.peak_ram()),
            ]
        })
        .collect();
    s.push_str(&table(
        &["Model", "Outcome", "Attempts", "Decode tok/s", "TTFT ms", "Response s", "Peak RAM GiB"],
        &[Align::Left, Align::Left, Align::Right, Align::Right, Align::Right, Align::Right, Align::Right],
        &rows,
    ));
    s.push_str("\nDecode tokens/s are client-side means over all measured requests; see the [benchmark report](benchmark-report.md) for the engine's own figures and the spread.\n");
    for name in plan.models.iter().map(|m| &m.name).filter(|n| !ctx.views.iter().any(|v| &v.r.model == *n)) {
        let _ = writeln!(s, "\nThe plan lists {}, but the results hold nothing for it.", inline(name));
    }
    s
}

/// The success criteria in brief and the claims ledger's summary.
fn criteria_and_claims(ctx: &Ctx) -> String {
    let mut s = String::new();
    s.push_str("\n## Success criteria\n\n");
    if ctx.criteria.is_empty() {
        s.push_str("The plan sets no success criteria (add a `[criteria]` table to hold results to thresholds).\n");
    } else {
        let count = |v: Verdict| ctx.criteria.iter().filter(|c| c.verdict == v).count();
        let na = count(Verdict::NotApplicable);
        let _ = writeln!(
            s,
            "{} passed, {} failed, {} not measured{}.\n",
            count(Verdict::Pass),
            count(Verdict::Fail),
            count(Verdict::NotMeasured),
            if na > 0 { format!(", {na} not applicable") } else { String::new() }
        );
        s.push_str(&criteria_table(&ctx.criteria, ctx.plan));
    }
    let _ = writeln!(
        s,
        "\n## Claims\n\n{} See the [claims ledger]({}).",
        ledger::summary(&ledger::entries(ctx)),
        ledger::PATH
    );
    s
}

/// The host checks that did not pass, and the escalations raised.
fn host_checks(ctx: &Ctx) -> String {
    let ver = &ctx.input.results.verification;
    let mut s = String::new();
    s.push_str("\n## Host checks\n\n");
    let checks = &ver.checks;
    let n = |st: CheckStatus| checks.iter().filter(|c| c.status == st).count();
    let _ = writeln!(
        s,
        "{} check(s): {} passed, {} with a warning, {} failed, {} unavailable.",
        checks.len(),
        n(CheckStatus::Pass),
        n(CheckStatus::Warn),
        n(CheckStatus::Fail),
        n(CheckStatus::Unavailable)
    );
    let notable: Vec<_> = checks.iter().filter(|c| c.status != CheckStatus::Pass).collect();
    if !notable.is_empty() {
        s.push('\n');
        for c in notable {
            let _ = writeln!(s, "- {} {}: {}", check_word(c.status), cell(&c.name), cell(&c.detail));
        }
    }
    let open: Vec<_> = ctx.escalations.iter().filter(|e| e.decision.is_none()).collect();
    let _ = writeln!(
        s,
        "\n{} escalation(s) were raised{}.",
        ctx.escalations.len(),
        if open.is_empty() { String::new() } else { format!(", {} without a recorded decision", open.len()) }
    );
    s
}

/// Links to every other page, the data files and the charts.
fn reports(ctx: &Ctx) -> String {
    let mut s = String::new();
    s.push_str("\n## Reports\n\n");
    s.push_str("- [Benchmark report](benchmark-report.md): the validation matrix (projected against measured), per-prompt figures, metric definitions, host checks, fit verdicts, criteria and reproducibility manifests.\n");
    s.push_str("- [Deployment guide](deployment-guide.md): the exact settings each measured model ran with, as `docker run`, command lines and compose.\n");
    s.push_str(
        "- [Troubleshooting log](troubleshooting.md): every failure, its evidence, diagnosis, options and decision.\n",
    );
    s.push_str("- [Business case](business-case.md): cost per million tokens against dated cloud prices.\n");
    s.push_str("- [Answer quality](quality.md): structure and rubric coverage of the answers.\n");
    s.push_str("- [Claims ledger](claims.md): every claim of the plan, quoted, with the prediction, the measurement and the verdict.\n");
    let _ = write!(
        s,
        "- Raw data: [results.json](data/results.json), [results.csv](data/results.csv){}; charts: [decode](charts/decode-tps.svg), [TTFT](charts/ttft.svg)",
        if ctx.series.is_empty() { String::new() } else { format!(", [telemetry.csv]({TELEMETRY_CSV})") }
    );
    for c in &ctx.time_charts {
        let _ = write!(s, ", [{}]({})", chart_short_name(c.path), c.path);
    }
    s.push_str(".\n");
    s.push_str("- [Everything on one page](report.html) (self-contained HTML).\n");
    s
}

/// A chart's file name without folder and extension, as a link text.
pub(super) fn chart_short_name(path: &str) -> String {
    path.trim_start_matches("charts/").trim_end_matches(".svg").replace('-', " ").replace("gpu", "GPU")
}
