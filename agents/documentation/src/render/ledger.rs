//! The claims ledger page: every claim of the plan quoted, what the predictions said before the
//! run, what was measured, and whether the claim holds.
//!
//! The figures are the ones the other pages show (the views' peaks and means, the success
//! criteria's GPU findings, the business case's cost), and every claim is held against its
//! figure by [`claims::holds`], the one comparison rule.

use super::criteria::{Verdict, gpu_figure};
use super::ctx::Ctx;
use super::format::{DASH, GIB};
use super::paths::{CLAIMS, nav};
use super::quality::structure;
use super::view::{View, energy_of, outcome};
use crate::claims::{self, Foresight, PlanClaim, Predictions};
use crate::markdown::{cell, inline, table};
use protocol::plan::{Bounds, ClaimMetric};
use protocol::results::CheckStatus;
use std::fmt::Write as _;

/// The page's path.
pub(super) const PATH: &str = CLAIMS;

/// Whether a claim held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Held {
    Holds,
    DoesNotHold,
    NotMeasured,
}

impl Held {
    fn word(self) -> &'static str {
        match self {
            Held::Holds => "holds",
            Held::DoesNotHold => "**does not hold**",
            Held::NotMeasured => "not measured",
        }
    }
}

/// One row of the ledger; text fields are markdown already.
pub(super) struct Entry {
    pub(super) claim: String,
    pub(super) claimed: String,
    pub(super) predicted: String,
    pub(super) measured: String,
    pub(super) held: Held,
}

/// Every claim of the plan, checked against this cycle's results.
pub(super) fn entries(ctx: &Ctx) -> Vec<Entry> {
    let plan = ctx.plan;
    let all = claims::plan_claims(plan);
    let ver = &ctx.input.results.verification;
    let pred = Predictions { verdicts: &ver.verdicts, bandwidths: ver.host.bandwidths() };
    all.iter()
        .map(|c| {
            let unmeasurable = claims::not_measurable(plan, c);
            let (measured, held) = match &unmeasurable {
                Some(why) => (format!("not measured: {}", inline(why)), Held::NotMeasured),
                None => measure(ctx, c),
            };
            let mut claim = format!("“{}”", cell(&c.text));
            if let Some(m) = &c.model {
                let _ = write!(claim, " — {}", cell(m));
            }
            if let Some(p) = &c.prompt {
                let _ = write!(claim, ", prompt {}", cell(p));
            }
            let _ = write!(claim, " (`{}`)", c.source);
            let predicted = match claims::predict(plan, c, &all, &pred) {
                _ if unmeasurable.is_some() => DASH.to_string(),
                Foresight::Contradicted(t) => format!("**contradicted**: {}", cell(&t)),
                Foresight::Consistent(t) => format!("consistent: {}", cell(&t)),
                Foresight::Differs(t) => format!("estimate differs: {}", cell(&t)),
                Foresight::Unpredictable(t) => cell(&t),
            };
            Entry { claim, claimed: cell(&claims::figure(c.metric, &c.expected)), predicted, measured, held }
        })
        .collect()
}

/// The measured figure for a claim, in words, and whether the claim holds.
fn measure(ctx: &Ctx, c: &PlanClaim) -> (String, Held) {
    let host = &ctx.input.results.verification.host;
    let e = &c.expected;
    let judged = |v: f64, text: String| judge(e, v, text);
    match c.metric {
        ClaimMetric::DiskFreeGb => {
            let gb = host.disk_free as f64 / GIB;
            return judged(
                gb,
                format!("{} GB free under {} at host verification", claims::num(gb), cell(&host.model_store)),
            );
        }
        ClaimMetric::AllocatableGb => return allocation(ctx, c),
        ClaimMetric::BaselineImprovement => return baseline(ctx, c),
        _ => {}
    }
    let Some(v) = c.model.as_deref().and_then(|m| ctx.views.iter().find(|v| v.r.model == m)) else {
        return ("the results hold nothing for this model".into(), Held::NotMeasured);
    };
    if !v.measured() {
        return (outcome(v), Held::NotMeasured);
    }
    let host_note = host.gpu_note.as_deref();
    let from = |verdict: Verdict| match verdict {
        Verdict::Pass => Held::Holds,
        Verdict::Fail => Held::DoesNotHold,
        Verdict::NotMeasured | Verdict::NotApplicable => Held::NotMeasured,
    };
    let pass = |ok: bool| if ok { Verdict::Pass } else { Verdict::Fail };
    match c.metric {
        ClaimMetric::RamGb => match v.peak_ram() {
            Some(b) => judged(b as f64 / GIB, format!("peak {} {} GB", v.mem_kind(), claims::num(b as f64 / GIB))),
            None => ("no memory peak was recorded".into(), Held::NotMeasured),
        },
        ClaimMetric::VramGb => match v.peak_vram() {
            Some(b) => judged(b as f64 / GIB, format!("peak {} GB", claims::num(b as f64 / GIB))),
            None => {
                let why = v.no_gpu(host_note).unwrap_or_else(|| "no VRAM figure was recorded".into());
                (format!("not measured: {why}"), Held::NotMeasured)
            }
        },
        ClaimMetric::ResponseTimeS | ClaimMetric::Words => {
            let runs: Vec<_> =
                v.r.runs.iter().filter(|r| c.prompt.as_ref().is_none_or(|p| &r.prompt_id == p)).collect();
            if runs.is_empty() {
                return ("no answer was measured".into(), Held::NotMeasured);
            }
            let n = runs.len() as f64;
            let (mean, unit) = if c.metric == ClaimMetric::Words {
                (runs.iter().map(|r| f64::from(r.analysis.words)).sum::<f64>() / n, "words")
            } else {
                (runs.iter().map(|r| r.e2e_ms).sum::<f64>() / n / 1000.0, "s")
            };
            judged(mean, format!("mean {} {unit} over {} answers", claims::num(mean), runs.len()))
        }
        ClaimMetric::DecodeTps => match v.all.decode() {
            Some((tps, src)) => judged(tps, format!("{} tok/s ({src})", claims::num(tps))),
            None => ("no decode speed was measured".into(), Held::NotMeasured),
        },
        ClaimMetric::GpuUtilPct => {
            let util = v.tel().and_then(|t| t.gpu_util_pct);
            let (text, verdict) = gpu_figure(v, host_note, util, "the GPU reported no utilisation", |_, u| {
                (format!("mean {} % while generating", claims::num(u.mean)), pass(claims::holds(e, u.mean)))
            });
            (text, from(verdict))
        }
        ClaimMetric::GpuTempC => {
            let temp = v.tel().and_then(|t| t.gpu_temp_c);
            let (text, verdict) = gpu_figure(v, host_note, temp, "the GPU reported no temperature", |_, t| {
                (format!("peak {} °C while generating", claims::num(t.peak)), pass(claims::holds(e, t.peak)))
            });
            (text, from(verdict))
        }
        ClaimMetric::UsdPerMtok => cost(ctx, v, c),
        ClaimMetric::AllocatableGb
        | ClaimMetric::DiskFreeGb
        | ClaimMetric::ReferenceUsdPerMtok
        | ClaimMetric::BaselineImprovement => (DASH.into(), Held::NotMeasured),
    }
}

/// A figure held against the claimed range by [`claims::holds`]; a miss says which side it fell.
fn judge(e: &Bounds, v: f64, text: String) -> (String, Held) {
    match (claims::holds(e, v), e.min.is_some_and(|m| v < m)) {
        (true, _) => (text, Held::Holds),
        (false, true) => (format!("{text}, below the claim"), Held::DoesNotHold),
        (false, false) => (format!("{text}, above the claim"), Held::DoesNotHold),
    }
}

/// Each larger model's answers against the baseline's on the prompts both answered: the claim
/// holds when every larger model (or the claim's model) covers more of the prompts' rubrics on
/// average than the baseline; words and decode speed are shown beside it.
fn baseline(ctx: &Ctx, c: &PlanClaim) -> (String, Held) {
    let plan = ctx.plan;
    let Some(base) = plan.baseline_model() else {
        return (
            "not measured: no baseline: set `baseline = true` under `[concurrent]` (its models answer the prompts alone) or give the models `params_b`".into(),
            Held::NotMeasured,
        );
    };
    let Some(bv) = ctx.views.iter().find(|v| v.r.model == base.name && v.measured()) else {
        return (format!("not measured: the baseline {} was not measured", cell(&base.name)), Held::NotMeasured);
    };
    if base.base_model {
        return (
            format!("not measured: the baseline {} is a base model, its answers are not assessed", cell(&base.name)),
            Held::NotMeasured,
        );
    }
    let larger = ctx.views.iter().filter(|v| {
        let spec = plan.models.iter().find(|m| m.name == v.r.model);
        let named = c.model.as_ref().is_some_and(|m| m == &v.r.model);
        let bigger = spec.and_then(|m| m.params_b).zip(base.params_b).is_some_and(|(a, b)| a > b);
        v.r.model != base.name
            && c.model.as_ref().is_none_or(|m| m == &v.r.model)
            && (named || bigger)
            && spec.is_some_and(|m| !m.baseline && !m.base_model)
    });
    let mut parts = Vec::new();
    let mut verdicts = Vec::new();
    for v in larger {
        if !v.measured() {
            parts.push(format!("{}: {}", v.name(), outcome(v)));
            verdicts.push(Held::NotMeasured);
            continue;
        }
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for id in v.prompt_ids(plan) {
            let b = bv.runs_of(&id);
            if !b.is_empty() {
                ours.extend(v.runs_of(&id));
                theirs.extend(b);
            }
        }
        let (st, bs) = (structure(&ours), structure(&theirs));
        let speed = match (v.all.decode(), bv.all.decode()) {
            (Some((a, _)), Some((b, _))) => format!(", decode {} vs {} tok/s", claims::num(a), claims::num(b)),
            _ => String::new(),
        };
        match (st.coverage, bs.coverage) {
            _ if ours.is_empty() => {
                parts.push(format!("{}: no prompt answered by both", v.name()));
                verdicts.push(Held::NotMeasured);
            }
            (Some(a), Some(b)) => {
                parts.push(format!(
                    "{}: rubric {:.0} % vs {:.0} %, {} vs {} words{speed}",
                    v.name(),
                    a * 100.0,
                    b * 100.0,
                    claims::num(st.words.round()),
                    claims::num(bs.words.round())
                ));
                verdicts.push(if a > b { Held::Holds } else { Held::DoesNotHold });
            }
            _ => {
                parts.push(format!(
                    "{}: {} vs {} words{speed}; the prompts carry no rubric (`required_topics`) to judge by",
                    v.name(),
                    claims::num(st.words.round()),
                    claims::num(bs.words.round())
                ));
                verdicts.push(Held::NotMeasured);
            }
        }
    }
    if parts.is_empty() {
        return (format!("not measured: no larger model to compare with {}", cell(&base.name)), Held::NotMeasured);
    }
    let held = if verdicts.contains(&Held::DoesNotHold) {
        Held::DoesNotHold
    } else if verdicts.iter().all(|h| *h == Held::Holds) {
        Held::Holds
    } else {
        Held::NotMeasured
    };
    (format!("against {} on the same prompts — {}", cell(&base.name), parts.join("; ")), held)
}

/// The business case's total per million output tokens for one model.
fn cost(ctx: &Ctx, v: &View, c: &PlanClaim) -> (String, Held) {
    let Some(cost) = ctx.plan.cost.as_ref() else {
        return ("not measured: the plan has no `[cost]` section".into(), Held::NotMeasured);
    };
    let Some((tps, _)) = v.all.decode().filter(|(t, _)| *t > 0.0) else {
        return ("no decode speed was measured".into(), Held::NotMeasured);
    };
    let en = energy_of(v, tps, cost);
    match claims::mtok_cost(cost, tps, en.j_per_token).total {
        Some(t) => judge(
            &c.expected,
            t,
            format!(
                "${} per million output tokens at {} tok/s ({})",
                claims::num(t),
                claims::num(tps),
                en.energy_source
            ),
        ),
        None => ("not measured: no power figure, measured or assumed".into(), Held::NotMeasured),
    }
}

/// The Reader's allocation test: the claim holds when a container allocated at least the
/// claimed amount.
fn allocation(ctx: &Ctx, c: &PlanClaim) -> (String, Held) {
    let tested = ctx.plan.host.allocatable_gb;
    let check = ctx.input.results.verification.checks.iter().find(|k| k.name == "memory.allocatable");
    match (check, tested) {
        (Some(k), Some(gb)) => {
            let text = cell(&k.measured);
            match k.status {
                CheckStatus::Pass if claims::holds(&c.expected, gb) => (text, Held::Holds),
                CheckStatus::Pass => (format!("{text}; the claim asks for another amount"), Held::NotMeasured),
                CheckStatus::Fail if c.expected.min.is_some_and(|m| m >= gb) => (text, Held::DoesNotHold),
                _ => (format!("{text}: {}", cell(&k.detail)), Held::NotMeasured),
            }
        }
        _ => (
            "not measured: the Reader ran no allocation test (it needs Docker and `host.allocatable_gb`)".into(),
            Held::NotMeasured,
        ),
    }
}

/// The counts line: "N claims: a hold, b do not hold, c not measured; d contradicted beforehand."
pub(super) fn summary(entries: &[Entry]) -> String {
    let n = |h: Held| entries.iter().filter(|e| e.held == h).count();
    let contradicted = entries.iter().filter(|e| e.predicted.starts_with("**contradicted**")).count();
    format!(
        "{} claim(s): {} hold, {} do not hold, {} not measured; {} contradicted by the predictions before the run.",
        entries.len(),
        n(Held::Holds),
        n(Held::DoesNotHold),
        n(Held::NotMeasured),
        contradicted
    )
}

/// The claims ledger page.
pub(super) fn page(ctx: &Ctx) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Claims ledger — {} (cycle {})\n", inline(&ctx.plan.name), ctx.cycle());
    s.push_str(&nav(PATH));
    let entries = entries(ctx);
    if entries.is_empty() {
        s.push_str("The plan makes no claims: add `projected` figures to its models or `[[claims]]` entries (the quoted text, a `metric` and the `expected` range) to have them checked here.\n");
        return s;
    }
    let _ = writeln!(
        s,
        "Every claim the plan makes — each model's `projected` figures and each `[[claims]]` entry — quoted, with what the Reader's predictions said before anything ran, what this cycle measured, and whether the claim holds. A single claimed figure holds within ±{:.0} %; a range holds when the figure lies inside it. Memory is in GB as Docker counts them (GiB).\n",
        claims::POINT_TOLERANCE * 100.0
    );
    let _ = writeln!(s, "{}\n", summary(&entries));
    let rows: Vec<Vec<String>> = entries
        .into_iter()
        .map(|e| vec![e.claim, e.claimed, e.predicted, e.measured, e.held.word().to_string()])
        .collect();
    s.push_str(&table(&["Claim", "Claimed", "Predicted before the run", "Measured", "Verdict"], &[], &rows));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::{HOSTILE, report as fixture};
    use protocol::plan::Claim;

    fn claim(text: &str, metric: &str, min: Option<f64>, max: Option<f64>, model: Option<&str>) -> Claim {
        Claim {
            text: text.into(),
            metric: metric.into(),
            expected: Bounds { min, max },
            model: model.map(str::to_string),
            prompt: None,
        }
    }

    fn ledger(claims: Vec<Claim>) -> Vec<(String, String, Held)> {
        let mut input = fixture();
        input.results.verification.plan.models.iter_mut().for_each(|m| m.projected = Default::default());
        input.results.verification.plan.claims = claims;
        let ctx = Ctx::new(&input);
        entries(&ctx).into_iter().map(|e| (e.claim, e.measured, e.held)).collect()
    }

    #[test]
    fn each_claim_holds_does_not_hold_or_says_why_it_was_not_measured() {
        let rows = ledger(vec![
            claim("fits in 1000 GB", "ram_gb", None, Some(1000.0), Some("qwen25-coder-14b")),
            claim("fits in a megabyte", "ram_gb", None, Some(0.001), Some("qwen25-coder-14b")),
            claim("fits in 1000 GB", "ram_gb", None, Some(1000.0), Some("codellama-34b")),
            claim("$30–60 (GPT-4)", "reference_usd_per_mtok", Some(30.0), Some(60.0), None),
            claim("400 GB+ free", "disk_free_gb", Some(400.0), None, None),
            claim("500 GB+ free", "disk_free_gb", Some(500.0), None, None),
            claim("25GB+ memory allocation", "allocatable_gb", Some(25.0), None, None),
        ]);
        let held: Vec<Held> = rows.iter().map(|r| r.2).collect();
        assert_eq!(
            held,
            [
                Held::Holds,
                Held::DoesNotHold,
                Held::NotMeasured,
                Held::NotMeasured,
                Held::Holds,
                Held::DoesNotHold,
                Held::NotMeasured
            ],
            "{rows:#?}"
        );
        assert!(rows[2].1.contains("skipped"), "a skipped model says why: {}", rows[2].1);
        assert!(rows[3].1.contains("cannot measure"), "{}", rows[3].1);
        assert!(rows[4].1.contains("412 GB free"), "{}", rows[4].1);
        assert!(rows[6].1.contains("no allocation test"), "{}", rows[6].1);
    }

    #[test]
    fn a_claim_without_a_model_is_checked_for_every_model_with_the_criteria_gpu_findings() {
        let rows = ledger(vec![claim("GPU utilization 80%+", "gpu_util_pct", Some(80.0), None, None)]);
        assert_eq!(rows.len(), 4, "{rows:#?}");
        assert!(rows.iter().any(|r| r.2 == Held::NotMeasured && r.1.contains("skipped")), "{rows:#?}");
        assert!(rows.iter().any(|r| r.2 != Held::NotMeasured), "{rows:#?}");
    }

    #[test]
    fn claim_text_is_escaped_and_the_page_checks_out() {
        let mut input = fixture();
        input.results.verification.plan.claims = vec![claim(HOSTILE, "words", Some(10.0), None, None)];
        let files = crate::render::render_reports(&input);
        let page = files.iter().find(|f| f.path == PATH).map(|f| String::from_utf8_lossy(&f.bytes).into_owned());
        let page = page.expect("a claims ledger page");
        assert!(!page.contains("<script>") && page.contains("\\<script\\>"), "{page}");
        assert!(crate::checks::check_reports(&files).is_empty(), "{:#?}", crate::checks::check_reports(&files));
        assert!(page.contains("projected RAM 2–4 GB"), "projected figures are claims: {page}");
    }

    #[test]
    fn the_baseline_claim_compares_each_larger_model_with_the_baseline_on_the_same_prompts() {
        let improvement = || claim("improvement over the 14B", "baseline_improvement", None, None, None);
        // No baseline marked: the smallest model (gemma3-270m) is a base model, not assessed.
        let mut input = fixture();
        input.results.verification.plan.claims = vec![improvement()];
        input.results.verification.plan.models.iter_mut().for_each(|m| {
            m.base_model = m.name == "gemma3-270m";
            m.projected = Default::default();
        });
        let rows: Vec<_> = entries(&Ctx::new(&input)).into_iter().map(|e| (e.measured, e.held)).collect();
        assert_eq!(rows[0].1, Held::NotMeasured, "{rows:?}");
        assert!(rows[0].0.contains("base model"), "{rows:?}");

        // The 14B marked as the baseline: the 70B is compared on the same prompts, the skipped
        // 34B is not measured, the smaller model is not a "larger" one.
        input.results.verification.plan.models.iter_mut().for_each(|m| m.baseline = m.name == "qwen25-coder-14b");
        let ctx = Ctx::new(&input);
        let rows: Vec<_> = entries(&ctx).into_iter().map(|e| (e.measured, e.held)).collect();
        let text = &rows[0].0;
        assert!(text.contains("against qwen25-coder-14b") && text.contains("llama31-70b: rubric"), "{text}");
        assert!(text.contains("codellama-34b") && !text.contains("gemma3-270m"), "{text}");
        let better = cov_of(&ctx, "llama31-70b") > cov_of(&ctx, "qwen25-coder-14b");
        let expected = if better { Held::NotMeasured } else { Held::DoesNotHold };
        assert_eq!(rows[0].1, expected, "a skipped larger model leaves an improvement unproven: {text}");

        // Claimed for the 70B alone, the verdict is the comparison itself.
        input.results.verification.plan.claims = vec![Claim { model: Some("llama31-70b".into()), ..improvement() }];
        let rows: Vec<_> = entries(&Ctx::new(&input)).into_iter().map(|e| e.held).collect();
        assert_eq!(rows, [if better { Held::Holds } else { Held::DoesNotHold }]);
    }

    fn cov_of(ctx: &Ctx, name: &str) -> f64 {
        let v = ctx.views.iter().find(|v| v.r.model == name).unwrap();
        structure(&v.r.runs.iter().collect::<Vec<_>>()).coverage.unwrap()
    }

    #[test]
    fn snapshot_claims_ledger() {
        let mut input = fixture();
        input.results.verification.plan.claims = vec![
            claim("GPU utilization 80%+", "gpu_util_pct", Some(80.0), None, None),
            claim("sustained operation under 70 °C", "gpu_temp_c", None, Some(70.0), Some("llama31-70b")),
            claim("100GB+ available", "disk_free_gb", Some(100.0), None, None),
            claim("$2–5 per million tokens", "usd_per_mtok", Some(2.0), Some(5.0), Some("qwen25-coder-14b")),
            claim("$30–60 (GPT-4)", "reference_usd_per_mtok", Some(30.0), Some(60.0), None),
            Claim { prompt: Some("rust-parser".into()), ..claim("250+ words", "words", Some(250.0), None, None) },
        ];
        insta::assert_snapshot!(page(&Ctx::new(&input)));
    }
}
