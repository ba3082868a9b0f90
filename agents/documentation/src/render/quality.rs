//! `quality.md`: the structure and rubric coverage of the answers, each model against the
//! smallest, and a sample answer per prompt.

use super::assessment;
use super::ctx::Ctx;
use super::format::{DASH, count, num, pct_change, percent};
use super::paths::nav;
use crate::markdown::{Align, cell, fence, inline, table};
use protocol::plan::PromptSpec;
use protocol::results::RunResult;
use std::collections::BTreeSet;
use std::fmt::Write as _;

/// Longest answer shown whole in the reports; a longer one is shown cut, with a link to its file.
const SAMPLE_ANSWER_BYTES: usize = 64 << 10;

/// Structure of the answers to one prompt, averaged over repetitions.
pub(super) struct Structure {
    pub(super) n: usize,
    pub(super) words: f64,
    pub(super) headings: f64,
    pub(super) code_blocks: f64,
    pub(super) list_items: f64,
    pub(super) tables: f64,
    pub(super) coverage: Option<f64>,
    pub(super) missing: BTreeSet<String>,
}

pub(super) fn structure(runs: &[&RunResult]) -> Structure {
    let n = runs.len().max(1) as f64;
    let mean = |f: &dyn Fn(&RunResult) -> u32| runs.iter().map(|r| f64::from(f(r))).sum::<f64>() / n;
    let covs: Vec<f64> = runs
        .iter()
        .filter_map(|r| {
            let total = r.analysis.topics_covered.len() + r.analysis.topics_missing.len();
            (total > 0).then(|| r.analysis.topics_covered.len() as f64 / total as f64)
        })
        .collect();
    Structure {
        n: runs.len(),
        words: mean(&|r| r.analysis.words),
        headings: mean(&|r| r.analysis.headings),
        code_blocks: mean(&|r| r.analysis.code_blocks),
        list_items: mean(&|r| r.analysis.list_items),
        tables: mean(&|r| r.analysis.tables),
        coverage: (!covs.is_empty()).then(|| covs.iter().sum::<f64>() / covs.len() as f64),
        missing: runs.iter().flat_map(|r| r.analysis.topics_missing.iter().cloned()).collect(),
    }
}

pub(super) fn page(ctx: &Ctx) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Answer quality — {} (cycle {})\n", inline(&ctx.plan.name), ctx.cycle());
    s.push_str(&nav("quality.md"));
    s.push_str("The structure of each answer, read with a markdown parser, and how many of the prompt's required topics (the plan's rubric) it mentions. These are structural measures: they say whether an answer is complete and organised, not whether it is correct. Figures are means over the repetitions.\n");
    s.push_str(&per_model_and_prompt(ctx));
    s.push_str(&against_the_baseline(ctx));
    s.push_str(&sample_answers(ctx));
    s
}

/// Structure and rubric coverage of each model's answers to each prompt.
fn per_model_and_prompt(ctx: &Ctx) -> String {
    let plan = ctx.plan;
    let mut s = String::new();
    let prompt_spec = |id: &str| plan.prompts.iter().find(|p| p.id == id);
    s.push_str("\n## Per model and prompt\n\n");
    let mut rows = Vec::new();
    for v in ctx.measured() {
        for id in v.prompt_ids(plan) {
            let st = structure(&v.runs_of(&id));
            let rubric = prompt_spec(&id).map(|p: &PromptSpec| p.required_topics.len()).unwrap_or(0);
            rows.push(vec![
                v.name(),
                cell(&id),
                st.n.to_string(),
                count(st.words),
                count(st.headings),
                count(st.code_blocks),
                count(st.list_items),
                count(st.tables),
                match (assessment::not_assessed(ctx, v), st.coverage) {
                    (Some(n), _) => n.short().into(),
                    (None, Some(c)) => format!("{} of {rubric}", percent(c)),
                    (None, None) => "no rubric".into(),
                },
                if st.missing.is_empty() {
                    DASH.into()
                } else {
                    st.missing.iter().map(|m| cell(m)).collect::<Vec<_>>().join(", ")
                },
            ]);
        }
    }
    if rows.is_empty() {
        s.push_str("No model was measured.\n");
    } else {
        let mut align = vec![Align::Left, Align::Left];
        align.extend([Align::Right; 7]);
        s.push_str(&table(
            &[
                "Model",
                "Prompt",
                "n",
                "Words",
                "Headings",
                "Code blocks",
                "List items",
                "Tables",
                "Rubric covered",
                "Topics missed (any repetition)",
            ],
            &align,
            &rows,
        ));
        for (v, why) in ctx.measured().filter_map(|v| Some((v, assessment::not_assessed(ctx, v)?))) {
            let _ = writeln!(s, "\nAnswer quality of {} is not assessed: {}.", v.name(), why.why());
        }
    }

    s
}

/// What the baseline is, in words.
fn baseline_words(base: &protocol::plan::ModelSpec) -> &'static str {
    if base.baseline {
        "the smallest of the concurrent phase's models, answering the prompts alone"
    } else {
        "the plan's smallest model"
    }
}

/// Each larger model's answers against the baseline model's (the plan's smallest, or the
/// smallest of its baseline models), prompt by prompt.
fn against_the_baseline(ctx: &Ctx) -> String {
    let plan = ctx.plan;
    let mut s = String::new();
    s.push_str("\n## Against the baseline\n\n");
    match plan.baseline_model() {
        None => s.push_str(
            "The plan gives no parameter counts (`params_b`), so there is no smallest model to use as the baseline.\n",
        ),
        Some(base) => match ctx.measured().find(|v| v.r.model == base.name) {
            None => {
                let _ = writeln!(
                    s,
                    "The baseline is {}, {}, but it was not measured, so there is nothing to compare against.",
                    baseline_words(base),
                    inline(&base.name)
                );
            }
            Some(bv) => {
                let _ = writeln!(
                    s,
                    "The baseline is {}, {} ({} B parameters). Each row shows how a larger model's answers differ from it on the same prompt.\n",
                    baseline_words(base),
                    bv.name(),
                    num(base.params_b.unwrap_or(0.0))
                );
                let mut rows = Vec::new();
                for v in ctx.measured().filter(|v| v.r.model != base.name) {
                    for id in v.prompt_ids(plan) {
                        let b_runs = bv.runs_of(&id);
                        if b_runs.is_empty() {
                            continue;
                        }
                        let (st, bs) = (structure(&v.runs_of(&id)), structure(&b_runs));
                        rows.push(vec![
                            v.name(),
                            cell(&id),
                            format!("{} → {} ({})", count(bs.words), count(st.words), pct_change(st.words, bs.words)),
                            match (bs.coverage, st.coverage) {
                                (Some(a), Some(b)) => {
                                    let d = (b - a) * 100.0;
                                    format!(
                                        "{} → {} ({}{:.0} points)",
                                        percent(a),
                                        percent(b),
                                        if d >= 0.0 { "+" } else { "−" },
                                        d.abs()
                                    )
                                }
                                _ => DASH.into(),
                            },
                            format!("{} → {}", count(bs.code_blocks), count(st.code_blocks)),
                            format!(
                                "{} → {}",
                                count(bs.headings + bs.list_items + bs.tables),
                                count(st.headings + st.list_items + st.tables)
                            ),
                        ]);
                    }
                }
                if rows.is_empty() {
                    s.push_str("No other model was measured on the same prompts.\n");
                } else {
                    s.push_str(&table(
                        &[
                            "Model",
                            "Prompt",
                            "Words",
                            "Rubric covered",
                            "Code blocks",
                            "Headings + list items + tables",
                        ],
                        &[],
                        &rows,
                    ));
                }
            }
        },
    }

    s
}

/// The first measured repetition of each prompt, as the model wrote it.
fn sample_answers(ctx: &Ctx) -> String {
    let plan = ctx.plan;
    let mut s = String::new();
    let prompt_spec = |id: &str| plan.prompts.iter().find(|p| p.id == id);
    s.push_str("\n## Sample answers\n\n");
    s.push_str("The first measured repetition of each prompt, shown as the model wrote it (as plain text: nothing in an answer is rendered).\n");
    for v in ctx.measured() {
        for id in v.prompt_ids(plan) {
            let Some(r) = v.runs_of(&id).into_iter().next() else {
                continue;
            };
            let _ = writeln!(s, "\n### {} — {} (repetition {})\n", v.name(), inline(&id), r.repetition);
            if let Some(p) = prompt_spec(&id).filter(|p| !p.title.trim().is_empty()) {
                let _ = writeln!(s, "Prompt: {}\n", inline(&p.title));
            }
            let full = r.answer.as_ref().and_then(|b| ctx.input.answers.get(&b.key));
            match full {
                Some(text) if text.len() > SAMPLE_ANSWER_BYTES => {
                    let mut end = SAMPLE_ANSWER_BYTES;
                    while !text.is_char_boundary(end) {
                        end -= 1;
                    }
                    let _ = writeln!(
                        s,
                        "The first {} KiB of an answer of {} bytes, {} words, {} output tokens (the whole answer is in {}):\n",
                        SAMPLE_ANSWER_BYTES >> 10,
                        text.len(),
                        r.analysis.words,
                        r.output_tokens,
                        inline(&format!("data/answers/{}/{}-r{}.txt", v.name(), id, r.repetition)),
                    );
                    s.push_str(&fence(&text[..end], "text"));
                }
                Some(text) => {
                    let _ =
                        writeln!(s, "Full answer, {} words, {} output tokens:\n", r.analysis.words, r.output_tokens);
                    s.push_str(&fence(text, "text"));
                }
                None => {
                    let _ = writeln!(
                        s,
                        "Excerpt (the full answer of {} words was not available to the report):\n",
                        r.analysis.words
                    );
                    s.push_str(&fence(&r.excerpt, "text"));
                }
            }
        }
    }
    s
}
