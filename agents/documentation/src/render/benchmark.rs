//! `benchmark-report.md`: the validation matrix, each model projected against measured, the
//! charts, telemetry, per-prompt detail, concurrent phase, metric definitions, host verification,
//! fit verdicts, decode roofline, success criteria and reproducibility manifests.

use super::concurrent::concurrent_section;
use super::criteria::criteria_table;
use super::ctx::Ctx;
use super::fitcheck::{fit_against_engine, vram_by_source};
use super::format::{DASH, against, bounds, fit_word, gib, num, opt_gib, opt_num, plain, stat_text};
use super::host::{checks_table, host_facts};
use super::paths::nav;
use super::paths::{DECODE_CHART, TTFT_CHART};
use super::roofline::roofline_section;
use super::telemetry::telemetry_section;
use super::view::outcome;
use super::view::{Figures, View, answer_was_cut};
use crate::charts;
use crate::markdown::{Align, cell, figures_table, inline, table};
use protocol::plan::Plan;
use protocol::results::FitVerdict;
use std::fmt::Write as _;

pub(super) fn page(ctx: &Ctx) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Benchmark report — {} (cycle {})\n", inline(&ctx.plan.name), ctx.cycle());
    s.push_str(&nav("benchmark-report.md"));
    if ctx.plan.defaults.pull_ahead {
        s.push_str("> **Pull-ahead was on** (`defaults.pull_ahead = true`): while each model was measured, the next Ollama model was downloaded through the same engine. The download competed with the measurement for network, disk and CPU, so these figures are **not clean measurements**; rerun with pull-ahead off to compare models fairly.\n\n");
    }
    s.push_str(&endpoints_note(ctx.plan));

    s.push_str(&validation_matrix(ctx));
    for v in &ctx.views {
        projected_against_measured(&mut s, v);
    }
    s.push_str(&super::standard::section(ctx));
    s.push_str(&charts_section(ctx));
    s.push_str(&telemetry_section(ctx));
    s.push_str(&per_prompt_detail(ctx));
    s.push_str(&concurrent_section(ctx));
    s.push_str(&super::tune::tune_section(ctx));
    s.push_str(&metric_definitions(ctx.plan));
    s.push_str(&host_verification(ctx));
    s.push_str(&fit_verdicts(&ctx.input.results.verification.verdicts));
    s.push_str(&fit_against_engine(ctx));
    s.push_str(&vram_by_source(ctx));
    s.push_str(&roofline_section(ctx));
    s.push_str(&criteria_section(ctx));
    s.push_str(&reproducibility(ctx));
    s
}

/// The models measured at an engine that was already running: what threadcycle did not control.
fn endpoints_note(plan: &Plan) -> String {
    let found: Vec<&protocol::plan::ModelSpec> =
        plan.models.iter().filter(|m| m.runtime == protocol::plan::Runtime::Endpoint).collect();
    if found.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "> **Not controlled by threadcycle.** These models were measured at an engine that was already running; threadcycle did not start, configure or stop it, so the engine's own settings and any other clients using it during the measurement are part of these figures:\n",
    );
    for m in found {
        let _ = writeln!(
            s,
            "> - {} at {} ({})",
            inline(&m.name),
            inline(m.url.as_deref().unwrap_or_default()),
            if m.engine == protocol::plan::EngineKind::Ollama {
                "Ollama: only each request's `options` were set by threadcycle"
            } else {
                "OpenAI-compatible: context, slots, GPU layers and threads were fixed when it was started"
            }
        );
    }
    s.push('\n');
    s
}

/// Every model's headline figures in one table, with a Host column in a several-host cycle.
fn validation_matrix(ctx: &Ctx) -> String {
    let mut s = String::new();
    s.push_str("## Performance validation matrix\n\n");
    s.push_str("Measured figures per model. Response time is client-side end-to-end latency per request; decode and TTFT are defined [below](#metric-definitions). \"—\" means not measured. GiB are 2³⁰ bytes; the plan's \"GB\" are read the same way, as Docker reads memory limits. Peak RAM is the Writer's peak; where it recorded none, the telemetry sampler's peak is shown (see [Telemetry](#telemetry)). Peak VRAM is measured by NVML (the engine's process where the driver lists it, else the device's VRAM in use); the engine's own figure is kept apart, in [VRAM by source](#vram-by-source). Size, Quant, Backend, GPU layers and Threads are the columns `llama-bench` prints: Size is the weights' size from the GGUF header (else the engine's account of its weight buffers; never an estimate), Quant the quantisation the engine reported, Backend `CUDA` when the engine put any weights on the GPU and `CPU` when it put none there, GPU layers the layers the engine offloaded, and Threads the plan's CPU threads (`default`: the engine chose).\n\n");
    let rows: Vec<Vec<String>> = ctx
        .views
        .iter()
        .map(|v| {
            vec![
                v.name(),
                outcome(v),
                v.spec.and_then(|m| m.params_b).map(|p| format!("{} B", num(p))).unwrap_or_else(|| DASH.into()),
                opt_gib(v.size_bytes()),
                v.r.manifest.quantization.as_deref().filter(|_| v.measured()).map(cell).unwrap_or_else(|| DASH.into()),
                v.backend().unwrap_or(DASH).into(),
                if v.measured() {
                    v.r.manifest.gpu_layers.as_deref().map(cell).unwrap_or_else(|| DASH.into())
                } else {
                    DASH.into()
                },
                match (v.measured(), v.r.manifest.threads) {
                    (true, Some(t)) => t.to_string(),
                    (true, None) => "default".into(),
                    (false, _) => DASH.into(),
                },
                opt_gib(v.peak_ram()),
                opt_gib(v.peak_vram()),
                opt_num(v.all.e2e_ms.map(|s| s.mean / 1000.0)),
                opt_num(v.all.words.map(|s| s.mean)),
                opt_num(v.all.client_tps.map(|s| s.mean)),
                opt_num(v.all.prefill_tps.map(|s| s.mean)),
                opt_num(v.all.ttft_ms.map(|s| s.mean)),
            ]
        })
        .collect();
    let mut align = vec![Align::Left, Align::Left, Align::Right, Align::Right, Align::Left, Align::Left];
    align.extend([Align::Right; 9]);
    let mut rows = rows;
    let mut headers = vec![
        "Model",
        "Outcome",
        "Params",
        "Size GiB",
        "Quant",
        "Backend",
        "GPU layers",
        "Threads",
        "Peak RAM GiB",
        "Peak VRAM GiB",
        "Response s",
        "Words",
        "Decode tok/s",
        "Prefill tok/s",
        "TTFT ms",
    ];
    if ctx.several_hosts() {
        // Several hosts: a Host column after the model.
        for (row, v) in rows.iter_mut().zip(&ctx.views) {
            row[0] = cell(&v.r.model);
            row.insert(1, v.host.map(inline).unwrap_or_else(|| DASH.into()));
        }
        headers.insert(1, "Host");
        align.insert(1, Align::Left);
    }
    s.push_str(&table(&headers, &align, &rows));
    s
}

/// One model's figures: what the plan projects, what the Reader predicts, what was measured.
fn projected_against_measured(s: &mut String, v: &View) {
    let _ = writeln!(s, "\n### {}: projected against measured\n", v.name());
    let p = v.spec.map(|m| &m.projected);
    let verdict = v.verdict;
    if !v.measured() {
        let _ = writeln!(s, "Not measured: {}.", outcome(v));
        if let Some(f) = verdict {
            let _ = writeln!(
                s,
                "\nThe Reader predicted {}: {} GiB of VRAM and {} GiB of RAM.",
                fit_word(f.fit),
                opt_gib(f.vram_bytes),
                opt_gib(f.ram_bytes)
            );
        }
        return;
    }
    let ram = v.peak_ram().map(gib);
    let vram = v.peak_vram().map(gib);
    let resp = v.all.e2e_ms.map(|s| s.mean / 1000.0);
    let words = v.all.words.map(|s| s.mean);
    let pred_layers = verdict.and_then(|f| f.gpu_layers).map(|(a, b)| format!("{a}/{b}"));
    let rows = vec![
        vec![
            "RAM, GiB".into(),
            bounds(p.and_then(|p| p.ram_gb.as_ref())),
            opt_gib(verdict.and_then(|f| f.ram_bytes)),
            opt_num(ram),
            against(p.and_then(|p| p.ram_gb.as_ref()), ram).into(),
        ],
        vec![
            "VRAM, GiB".into(),
            bounds(p.and_then(|p| p.vram_gb.as_ref())),
            opt_gib(verdict.and_then(|f| f.vram_bytes)),
            opt_num(vram),
            against(p.and_then(|p| p.vram_gb.as_ref()), vram).into(),
        ],
        vec![
            "Layers on GPU".into(),
            DASH.into(),
            pred_layers.unwrap_or_else(|| DASH.into()),
            if v.measured() {
                v.r.manifest.gpu_layers.as_deref().map(cell).unwrap_or_else(|| DASH.into())
            } else {
                DASH.into()
            },
            "no projection".into(),
        ],
        vec![
            "Response time, s".into(),
            bounds(p.and_then(|p| p.response_time_s.as_ref())),
            DASH.into(),
            stat_text(v.all.e2e_ms.as_ref(), 0.001),
            against(p.and_then(|p| p.response_time_s.as_ref()), resp).into(),
        ],
        vec![
            "Words per answer".into(),
            bounds(p.and_then(|p| p.words.as_ref())),
            DASH.into(),
            stat_text(v.all.words.as_ref(), 1.0),
            against(p.and_then(|p| p.words.as_ref()), words).into(),
        ],
        vec![
            "Decode tok/s (client)".into(),
            DASH.into(),
            DASH.into(),
            stat_text(v.all.client_tps.as_ref(), 1.0),
            "no projection".into(),
        ],
        vec![
            "Decode tok/s (engine)".into(),
            DASH.into(),
            DASH.into(),
            stat_text(v.all.engine_tps.as_ref(), 1.0),
            "no projection".into(),
        ],
        vec![
            "Prefill tok/s (engine)".into(),
            DASH.into(),
            DASH.into(),
            stat_text(v.all.prefill_tps.as_ref(), 1.0),
            "no projection".into(),
        ],
        vec![
            "TTFT, ms".into(),
            DASH.into(),
            DASH.into(),
            stat_text(v.all.ttft_ms.as_ref(), 1.0),
            "no projection".into(),
        ],
        vec![
            "TPOT, ms".into(),
            DASH.into(),
            DASH.into(),
            stat_text(v.all.tpot_ms.as_ref(), 1.0),
            "no projection".into(),
        ],
        vec![
            "Load time, s".into(),
            DASH.into(),
            DASH.into(),
            opt_num(v.r.load_ms.map(|ms| ms / 1000.0)),
            "no projection".into(),
        ],
        vec![
            "Pull time, s".into(),
            DASH.into(),
            DASH.into(),
            v.r.pull_ms.map(|ms| num(ms / 1000.0)).unwrap_or_else(|| "no pull".into()),
            "no projection".into(),
        ],
    ];
    s.push_str(&table(
        &["Figure", "Plan projects", "Reader predicts", "Measured", "Against plan"],
        &[Align::Left, Align::Right, Align::Right, Align::Right, Align::Left],
        &rows,
    ));
}

/// The bar charts, and the charts over time where telemetry was sampled.
fn charts_section(ctx: &Ctx) -> String {
    let mut s = String::new();
    s.push_str("\n## Charts\n\n");
    let _ = writeln!(s, "![Decode tokens/s by model (client-side mean)]({DECODE_CHART})\n");
    let _ = writeln!(s, "![Time to first token by model (client-side mean, ms)]({TTFT_CHART})");
    if !ctx.time_charts.is_empty() {
        s.push_str("\nOver time, from the telemetry sampler: each point is the mean of the samples in its interval, and each model's line starts when its measured runs began.\n");
        for c in &ctx.time_charts {
            let _ = writeln!(s, "\n![{}]({})", c.title, c.path);
        }
    }
    s
}

/// Each measured model's figures per prompt, with the spread over repetitions.
fn per_prompt_detail(ctx: &Ctx) -> String {
    let plan = ctx.plan;
    let mut s = String::new();
    s.push_str("\n## Per-prompt detail\n\n");
    let _ = writeln!(
        s,
        "Mean ± sample standard deviation over the measured repetitions (warm-up excluded). ⚠ marks a figure whose coefficient of variation is above the plan's flag of {} %: treat it with care.",
        plain(plan.defaults.cv_flag * 100.0)
    );
    for v in ctx.measured() {
        per_prompt_table(&mut s, plan, v);
    }
    s
}

/// One model's per-prompt table, and how many answers hit the token cap or were cut.
fn per_prompt_table(s: &mut String, plan: &Plan, v: &View) {
    let _ = writeln!(s, "\n### {}\n", v.name());
    let rows: Vec<Vec<String>> = v
        .prompt_ids(plan)
        .iter()
        .map(|id| {
            let runs = v.runs_of(id);
            let f = Figures::of(&runs, plan.defaults.cv_flag);
            vec![
                cell(id),
                runs.len().to_string(),
                stat_text(f.ttft_ms.as_ref(), 1.0),
                stat_text(f.e2e_ms.as_ref(), 0.001),
                stat_text(f.tpot_ms.as_ref(), 1.0),
                stat_text(f.client_tps.as_ref(), 1.0),
                stat_text(f.engine_tps.as_ref(), 1.0),
                stat_text(f.prefill_tps.as_ref(), 1.0),
                stat_text(f.tokens.as_ref(), 1.0),
                stat_text(f.words.as_ref(), 1.0),
            ]
        })
        .collect();
    s.push_str(&figures_table(
        1,
        &[
            "Prompt",
            "n",
            "TTFT ms",
            "E2E s",
            "TPOT ms",
            "Decode tok/s (client)",
            "Decode tok/s (engine)",
            "Prefill tok/s",
            "Output tokens",
            "Words",
        ],
        &rows,
    ));
    let truncated = v.r.runs.iter().filter(|r| r.finish_reason.as_deref() == Some("length")).count();
    if truncated > 0 {
        let _ = writeln!(s, "\n{truncated} of {} answers stopped at the output token cap.", v.r.runs.len());
    }
    let cut = v.r.runs.iter().filter(|r| answer_was_cut(r)).count();
    if cut > 0 {
        let _ = writeln!(
            s,
            "\n{cut} of {} answers were longer than the engine client keeps and were cut at {} MiB; the stored answers hold their start.",
            v.r.runs.len(),
            protocol::results::MAX_ANSWER_BYTES >> 20
        );
    }
}

/// What each figure means and how it was measured.
fn metric_definitions(plan: &Plan) -> String {
    let mut s = String::new();
    s.push_str("\n## Metric definitions\n\n");
    s.push_str("- **TTFT** (time to first token): client-side, from sending the request to the first streamed chunk that carries answer text. It includes queueing, prompt processing (prefill) and, on a cold engine, loading.\n");
    s.push_str("- **E2E** (end-to-end latency, \"response time\"): client-side, from sending the request to the last streamed chunk.\n");
    s.push_str("- **TPOT** (time per output token after the first) = (E2E − TTFT) / (output tokens − 1), per request, as vLLM defines it.\n");
    s.push_str("- **Decode tok/s (client)** = (output tokens − 1) / (E2E − TTFT): what a user streaming the answer sees, including HTTP and streaming overhead.\n");
    s.push_str("- **Decode tok/s (engine)**: the engine's own counter (Ollama `eval_count / eval_duration`, llama-server `timings.predicted_per_second`): pure generation speed, usually a little higher than the client's.\n");
    s.push_str("- **Prefill tok/s (engine)**: the engine's prompt-processing speed (Ollama `prompt_eval_count / prompt_eval_duration`, llama-server `timings.prompt_per_second`). Each repetition carries a fresh nonce so the prompt cache does not flatter it.\n");
    s.push_str("- **Words**: words of prose and code in the answer, read with a markdown parser.\n");
    let _ = writeln!(
        s,
        "- **Spread**: mean ± sample standard deviation over repetitions; ⚠ when the coefficient of variation exceeds {} %.",
        plain(plan.defaults.cv_flag * 100.0)
    );
    let _ = writeln!(
        s,
        "- Sampling: temperature {}, seed {}, context {} tokens by default, output capped at {} tokens per request unless the prompt sets its own cap.",
        plain(plan.defaults.temperature),
        plan.defaults.seed,
        plan.defaults.context,
        plan.defaults.max_tokens
    );

    s
}

/// The host's facts and checks, or every host's and the placement in a several-host cycle.
fn host_verification(ctx: &Ctx) -> String {
    let ver = &ctx.input.results.verification;
    let mut s = String::new();
    s.push_str("\n## Host verification\n\n");
    if ctx.several_hosts() {
        s.push_str(&super::host::hosts_section(&ctx.input.results));
    } else {
        s.push_str(&host_facts(ctx));
        s.push('\n');
        s.push_str(&checks_table(&ver.checks));
    }
    if ctx.several_hosts() {
        s.push_str(&super::host::placement_section(&ctx.input.results));
    }

    s
}

/// The Reader's fit verdicts, as predicted before any model ran.
fn fit_verdicts(verdicts: &[FitVerdict]) -> String {
    let mut s = String::new();
    s.push_str("\n## Fit verdicts\n\n");
    s.push_str("The Reader's prediction before any model ran: weights + KV cache + compute graph against the VRAM and RAM it measured.\n\n");
    let rows: Vec<Vec<String>> = verdicts
        .iter()
        .map(|f| {
            vec![
                cell(&f.model),
                fit_word(f.fit).into(),
                opt_gib(f.weights_bytes),
                opt_gib(f.kv_bytes),
                opt_gib(f.vram_bytes),
                opt_gib(f.ram_bytes),
                f.gpu_layers.map(|(a, b)| format!("{a}/{b}")).unwrap_or_else(|| DASH.into()),
                cell(&f.source),
                match &f.suggestion {
                    Some(sug) => format!("{}. Suggestion: {}", cell(f.reason.trim_end_matches('.')), cell(sug)),
                    None => cell(&f.reason),
                },
            ]
        })
        .collect();
    if rows.is_empty() {
        s.push_str("No fit verdicts were recorded.\n");
    } else {
        let mut align = vec![Align::Left, Align::Left];
        align.extend([Align::Right; 5]);
        align.extend([Align::Left; 2]);
        s.push_str(&table(
            &[
                "Model",
                "Verdict",
                "Weights GiB",
                "KV cache GiB",
                "VRAM GiB",
                "RAM GiB",
                "GPU layers",
                "Source",
                "Reason",
            ],
            &align,
            &rows,
        ));
    }

    s
}

/// The success criteria table.
fn criteria_section(ctx: &Ctx) -> String {
    let mut s = String::new();
    s.push_str("\n## Success criteria\n\n");
    if ctx.criteria.is_empty() {
        s.push_str("The plan sets no success criteria.\n");
    } else {
        s.push_str(&criteria_table(&ctx.criteria, ctx.plan));
    }

    s
}

/// What is needed to repeat each measurement.
fn reproducibility(ctx: &Ctx) -> String {
    let mut s = String::new();
    s.push_str("\n## Reproducibility manifest\n\n");
    s.push_str("What is needed to repeat each measurement.\n");
    for v in ctx.measured() {
        manifest_table(&mut s, v);
    }
    if ctx.measured().next().is_none() {
        s.push_str("\nNo model was measured.\n");
    }
    s
}

/// One measured model's reproducibility manifest.
fn manifest_table(s: &mut String, v: &View) {
    let m = &v.r.manifest;
    let _ = writeln!(s, "\n### {}\n", v.name());
    let o = |x: &Option<String>| x.as_deref().map(cell).unwrap_or_else(|| DASH.into());
    let rows = vec![
        vec!["Host".into(), cell(&m.host)],
        vec!["CPU".into(), cell(&m.cpu)],
        vec!["GPU".into(), cell(&m.gpu)],
        vec!["Driver".into(), o(&m.driver)],
        vec!["Engine".into(), format!("{} {}", cell(&m.engine), o(&m.engine_version))],
        vec!["Model".into(), cell(&m.model)],
        vec!["Model digest".into(), o(&m.model_digest)],
        vec!["Quantisation".into(), o(&m.quantization)],
        vec!["Context".into(), m.context.to_string()],
        vec!["Layers on GPU".into(), o(&m.gpu_layers)],
        vec!["CPU threads".into(), m.threads.map(|t| t.to_string()).unwrap_or_else(|| "engine default".into())],
        vec!["Seed".into(), m.seed.to_string()],
        vec!["Temperature".into(), plain(m.temperature)],
        vec!["Plan SHA-256".into(), cell(&m.plan_hash)],
        vec!["threadcycle".into(), cell(&m.threadcycle_version)],
        vec!["Measured".into(), format!("{} to {}", cell(&v.r.started_at), cell(&v.r.finished_at))],
    ];
    s.push_str(&table(&["Field", "Value"], &[], &rows));
}

/// The bar chart of each model's client-side decode speed.
pub(super) fn decode_chart(ctx: &Ctx) -> String {
    let bars: Vec<(String, Option<f64>)> =
        ctx.views.iter().map(|v| (v.r.model.clone(), v.all.client_tps.map(|s| s.mean))).collect();
    charts::bar_chart("Decode tokens/s by model (client-side mean)", "tok/s", &bars)
}

/// The bar chart of each model's time to first token.
pub(super) fn ttft_chart(ctx: &Ctx) -> String {
    let bars: Vec<(String, Option<f64>)> =
        ctx.views.iter().map(|v| (v.r.model.clone(), v.all.ttft_ms.map(|s| s.mean))).collect();
    charts::bar_chart("Time to first token by model (client-side mean)", "ms", &bars)
}
