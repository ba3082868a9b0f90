//! Turns a cycle's results into the report folder: markdown pages, charts, raw data and one
//! self-contained HTML file.
//!
//! Everything here is a pure function of [`ReportInput`]: no clock, no environment, no I/O, and
//! every map is ordered, so the same results always give the same bytes.
//!
//! The modules are layered, each using only those below it:
//!
//! - [`render_reports`] (this file) puts the pages, charts and data files together;
//! - one module per page: `summary` (README.md), `benchmark` (with its sections `telemetry`,
//!   `roofline`, `fitcheck`, `concurrent` and `host`), `deployment`, `troubleshooting`, `business`,
//!   `quality`, `ledger` (claims.md, with `assessment`), and `data` (the CSV and JSON files);
//! - `ctx`: what every page shares, built once; `criteria`: the success criteria;
//! - `view` (one model as the reports see it) and `series` (telemetry over time);
//! - `format` (numbers and words), `paths` (the folder's layout and the nav line) and `input`.

mod assessment;
mod benchmark;
mod business;
mod concurrent;
mod criteria;
mod ctx;
mod data;
mod deployment;
mod fitcheck;
mod format;
mod host;
mod input;
mod ledger;
mod paths;
mod quality;
mod roofline;
mod series;
mod standard;
mod summary;
mod telemetry;
mod troubleshooting;
mod tune;
mod view;

use crate::html;
use ctx::Ctx;
use paths::{CLAIMS, DECODE_CHART, TELEMETRY_CSV, TTFT_CHART};
use std::collections::BTreeMap;

pub use data::CSV_COLUMNS;
pub use input::{ReportFile, ReportInput};
pub use paths::PAGES;
/// Text from outside made safe for a text file or a CSV cell (`cat`, a spreadsheet): the one
/// cleaner, [`protocol::text::terminal_safe`].
pub use protocol::text::terminal_safe;

/// Renders every report file for one cycle.
pub fn render_reports(input: &ReportInput) -> Vec<ReportFile> {
    let ctx = Ctx::new(input);
    let pages = vec![
        ("README.md".to_string(), summary::page(&ctx)),
        ("benchmark-report.md".to_string(), benchmark::page(&ctx)),
        ("deployment-guide.md".to_string(), deployment::page(&ctx)),
        ("troubleshooting.md".to_string(), troubleshooting::page(&ctx)),
        ("business-case.md".to_string(), business::page(&ctx)),
        ("quality.md".to_string(), quality::page(&ctx)),
        (CLAIMS.to_string(), ledger::page(&ctx)),
    ];
    let mut svgs: BTreeMap<String, String> = [
        (DECODE_CHART.to_string(), benchmark::decode_chart(&ctx)),
        (TTFT_CHART.to_string(), benchmark::ttft_chart(&ctx)),
    ]
    .into_iter()
    .collect();
    svgs.extend(ctx.time_charts.iter().map(|c| (c.path.to_string(), c.svg.clone())));
    let title = format!("{} — cycle {}", ctx.plan.name, input.cycle);
    let html_pages: Vec<html::Page> = pages
        .iter()
        .map(|(path, md)| html::Page {
            path,
            title: PAGES.iter().find(|(p, _)| p == path).map(|(_, t)| *t).unwrap_or(path),
            markdown: md,
        })
        .collect();
    let html = html::render_html(&title, &html_pages, &svgs);
    let mut files: Vec<ReportFile> =
        pages.into_iter().map(|(path, text)| ReportFile { path, bytes: text.into_bytes() }).collect();
    files.extend(svgs.into_iter().map(|(path, svg)| ReportFile { path, bytes: svg.into_bytes() }));
    files.push(ReportFile { path: "data/results.json".into(), bytes: data::results_json(&input.results).into_bytes() });
    files.push(ReportFile { path: "data/results.csv".into(), bytes: data::results_csv(&input.results).into_bytes() });
    if !ctx.series.is_empty() {
        files.push(ReportFile { path: TELEMETRY_CSV.into(), bytes: data::telemetry_csv(&ctx.series).into_bytes() });
    }
    files.push(ReportFile { path: "report.html".into(), bytes: html.into_bytes() });
    files
}

#[cfg(test)]
mod tests {
    //! Every page of the one report fixture, rendered and checked.
    use super::criteria::Verdict;
    use super::ctx::Ctx;
    use super::data::{csv_file, csv_text};
    use super::view::Effective;
    use super::*;
    use crate::fixture::{HOSTILE, report as fixture};
    use protocol::results::ModelStatus;

    fn page(files: &[ReportFile], path: &str) -> String {
        let f = files.iter().find(|f| f.path == path).unwrap_or_else(|| panic!("{path} was not produced"));
        String::from_utf8(f.bytes.clone()).expect("utf-8")
    }

    #[test]
    fn produces_every_file() {
        let files = render_reports(&fixture());
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "README.md",
                "benchmark-report.md",
                "deployment-guide.md",
                "troubleshooting.md",
                "business-case.md",
                "quality.md",
                "claims.md",
                "charts/decode-tps.svg",
                "charts/engine-memory.svg",
                "charts/gpu-power.svg",
                "charts/gpu-temperature.svg",
                "charts/host-memory.svg",
                "charts/ttft.svg",
                "data/results.json",
                "data/results.csv",
                "data/telemetry.csv",
                "report.html",
            ]
        );
    }

    #[test]
    fn rendering_is_deterministic() {
        assert_eq!(render_reports(&fixture()), render_reports(&fixture()));
    }

    #[test]
    fn links_and_tables_check_out() {
        let problems = crate::checks::check_reports(&render_reports(&fixture()));
        assert!(problems.is_empty(), "{problems:#?}");
    }

    #[test]
    fn the_benchmark_report_says_when_pull_ahead_was_on() {
        let note = "Pull-ahead was on";
        assert!(!page(&render_reports(&fixture()), "benchmark-report.md").contains(note));
        let mut f = fixture();
        f.results.verification.plan.defaults.pull_ahead = true;
        let report = page(&render_reports(&f), "benchmark-report.md");
        assert!(report.contains(note) && report.contains("not clean measurements"), "{report}");
    }

    #[test]
    fn snapshot_readme() {
        insta::assert_snapshot!("readme", page(&render_reports(&fixture()), "README.md"));
    }

    #[test]
    fn snapshot_benchmark_report() {
        insta::assert_snapshot!("benchmark_report", page(&render_reports(&fixture()), "benchmark-report.md"));
    }

    #[test]
    fn snapshot_deployment_guide() {
        insta::assert_snapshot!("deployment_guide", page(&render_reports(&fixture()), "deployment-guide.md"));
    }

    #[test]
    fn snapshot_troubleshooting() {
        insta::assert_snapshot!("troubleshooting", page(&render_reports(&fixture()), "troubleshooting.md"));
    }

    #[test]
    fn snapshot_business_case() {
        insta::assert_snapshot!("business_case", page(&render_reports(&fixture()), "business-case.md"));
    }

    #[test]
    fn snapshot_quality() {
        insta::assert_snapshot!("quality", page(&render_reports(&fixture()), "quality.md"));
    }

    #[test]
    fn snapshot_csv() {
        insta::assert_snapshot!("results_csv", page(&render_reports(&fixture()), "data/results.csv"));
    }

    #[test]
    fn snapshot_decode_chart() {
        insta::assert_snapshot!("decode_chart", page(&render_reports(&fixture()), "charts/decode-tps.svg"));
    }

    #[test]
    fn json_is_the_whole_results() {
        let input = fixture();
        let json = page(&render_reports(&input), "data/results.json");
        let back: serde_json::Value = serde_json::from_str(&json).expect("parses");
        let whole: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&input.results).expect("serialises")).expect("parses");
        assert_eq!(back, whole);
    }

    #[test]
    fn csv_has_one_row_per_run_and_quotes_hostile_text() {
        let csv = page(&render_reports(&fixture()), "data/results.csv");
        assert_eq!(csv.matches("\r\n").count(), 1 + 18);
        assert!(csv.contains(&format!("\"{}\"", HOSTILE.replace('"', "\"\""))) || csv.contains(HOSTILE));
        assert_eq!(csv_file([[csv_text("=HYPERLINK(\"x\")")]]), "\"'=HYPERLINK(\"\"x\"\")\"\r\n");
        assert_eq!(csv_file([["a,b"]]), "\"a,b\"\r\n");
    }

    /// The cells of one model's row in the benchmark report's matrix.
    fn matrix_row(input: &ReportInput, model: &str) -> Vec<String> {
        let report = page(&render_reports(input), "benchmark-report.md");
        let line = report.lines().find(|l| l.starts_with(&format!("| {model} |"))).expect("a matrix row");
        line.trim_matches('|').split(" | ").map(|c| c.trim().to_string()).collect()
    }

    #[test]
    fn matrix_carries_llama_bench_columns_from_the_results() {
        // Columns 3..=7: Size GiB, Quant, Backend, GPU layers, Threads.
        let input = fixture();
        assert_eq!(matrix_row(&input, "gemma3-270m")[3..8], ["0.23", "Q4\\_K\\_M", "CPU", "0/19", "8"]);
        // A GPU host whose engine did not give its weight share: the offloaded layers decide.
        let backend = |layers: Option<&str>| {
            let mut input = fixture();
            let g = input.results.models.iter_mut().find(|m| m.model == "gemma3-270m").expect("gemma");
            g.manifest.driver = Some("580.95".into());
            g.manifest.gpu_weight_share = None;
            g.manifest.gpu_layers = layers.map(str::to_string);
            matrix_row(&input, "gemma3-270m")[5].clone()
        };
        assert_eq!(backend(Some("0/19")), "CPU");
        assert_eq!(backend(Some("7/19")), "CUDA");
        assert_eq!(backend(None), "—");
        // No GGUF header read: the engine's weight buffers, never the built-in table's estimate.
        let qwen = matrix_row(&input, "qwen25-coder-14b");
        assert_eq!(qwen[3..8], ["8.61", "Q4\\_K\\_M", "CUDA", "49/49", "default"]);
        // Not measured, and its size only estimated (built-in table): nothing to show.
        assert_eq!(matrix_row(&input, "codellama-34b")[3..8], ["—", "—", "—", "—", "—"]);
    }

    #[test]
    fn report_html_shows_hostile_text_as_text() {
        let html = page(&render_reports(&fixture()), "report.html");
        assert!(!html.contains("<script"), "a script tag reached the HTML");
        assert!(!html.contains("<img src=x"), "an img tag reached the HTML");
        assert!(!html.contains("<iframe"), "an iframe reached the HTML");
        assert!(!html.contains("<b>not html</b>"));
        assert!(!html.contains("href=\"javascript:"), "a javascript: URL survived as a link");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("<svg"), "charts are inlined");
        assert!(!html.contains("src=\"charts/"), "charts are not external images");
    }

    #[test]
    fn missing_cost_section_says_what_to_add() {
        let mut input = fixture();
        input.results.verification.plan.cost = None;
        let page = page(&render_reports(&input), "business-case.md");
        assert!(page.contains("no `[cost]` section") && page.contains("assumed_power_w"));
    }

    #[test]
    fn nothing_measured_still_renders_clean_reports() {
        let mut input = fixture();
        for m in &mut input.results.models {
            m.status = ModelStatus::Failed { reason: "engine never answered".into() };
            m.runs.clear();
        }
        input.troubleshooting.clear();
        let files = render_reports(&input);
        assert!(crate::checks::check_reports(&files).is_empty());
        let bench = page(&files, "benchmark-report.md");
        assert!(bench.contains("NOT MEASURED"));
        assert!(bench.lines().filter(|l| l.contains("Decode speed")).all(|l| l.contains("NOT MEASURED")), "{bench}");
    }

    #[test]
    fn remedies_are_applied_in_order() {
        let input = fixture();
        let plan = &input.results.verification.plan;
        let e = Effective::of(plan, &plan.models[1], &input.results.models[1]);
        assert_eq!(
            (e.set.memory_limit_gb, e.attempt, e.changes.clone()),
            (Some(40.0), Some(2), vec![protocol::settings::Setting::MemoryLimitGb(40.0)])
        );
    }

    #[test]
    fn the_fit_check_shows_only_what_the_engine_logged() {
        let mut input = fixture();
        let gemma = input.results.models.iter_mut().find(|m| m.model == "gemma3-270m").unwrap();
        // A log with a layer line and no buffer lines (e.g. llama-server below `-lv 4` on a GPU).
        gemma.engine_memory = Some(protocol::results::EngineMemory {
            source: "llama-server log".into(),
            offloaded_layers: Some((0, 19)),
            ..Default::default()
        });
        let report = page(&render_reports(&input), "benchmark-report.md");
        let fit = report.split("## Fit prediction against the engine's own account").nth(1).unwrap();
        let fit = fit.split("\n## ").next().unwrap();
        let rows: Vec<&str> = fit.lines().filter(|l| l.starts_with("| gemma3-270m |")).collect();
        assert_eq!(rows, vec!["| gemma3-270m | GPU layers | 0/19 | 0/19 | +0 layers | — |"], "{fit}");
        // The Ollama model's split is the engine's N/M beside the Reader's.
        assert!(fit.contains("| llama31-70b | GPU layers | 38/81 | 38/81 | +0 layers |"), "{fit}");
        assert!(fit.contains("| llama31-70b | KV cache | 4.43 GiB | 1.25 GiB | +254.4 % |"), "{fit}");
        // A model that was never loaded says so.
        assert!(fit.contains("- codellama-34b: no engine account (not loaded in this cycle)."), "{fit}");
    }

    #[test]
    fn the_deployment_guide_prints_the_command_that_ran_byte_for_byte() {
        let input = fixture();
        let guide = page(&render_reports(&input), "deployment-guide.md");
        for i in [0, 3] {
            let launch = input.results.models[i].launch.as_ref().unwrap();
            // The whole line, alone in its fenced block: what the user copies is what ran.
            let fenced = format!("```sh\n{}\n```", launch.command_line());
            assert!(guide.contains(&fenced), "model {i}: {fenced}\n{guide}");
        }
        // The tuned model: its winner's command, as the Writer recorded it when it restored it.
        let tuned = input.results.models[3].tune.as_ref().and_then(|t| t.launch.as_ref()).unwrap();
        assert!(guide.contains(&format!("```sh\n{}\n```", tuned.command_line())), "{guide}");
        assert!(guide.contains("**Tuned.**"), "{guide}");
        // The Ollama request carries the options the measured requests carried.
        assert!(
            guide.contains(r#""options":{"num_ctx":8192,"num_predict":512,"seed":42,"temperature":0.0}"#),
            "{guide}"
        );
        // The compose service for the host process keeps the recorded flags (-c is context × slots):
        // the tuned winner's, since the steps start the engine with them.
        assert!(
            guide.contains(
                r#""-c", "8192", "-np", "1", "--metrics", "--no-webui", "-lv", "4", "-t", "4", "-b", "512", "-ub", "512""#
            ),
            "{guide}"
        );
    }

    #[test]
    fn a_model_without_a_recorded_launch_gets_no_rebuilt_command() {
        let mut input = fixture();
        input.results.models[3].launch = None;
        input.results.models[3].deployment.clear();
        // Untuned: a tuned model has a recorded launch, its winner's.
        input.results.models[3].tune = None;
        let guide = page(&render_reports(&input), "deployment-guide.md");
        assert!(guide.contains("The Writer recorded no command for this model"), "{guide}");
    }

    #[test]
    fn cloud_comparison_reads_both_ways() {
        assert_eq!(business::compare_price(1.0, 10.0, 10.0), "local 10.0× cheaper");
        assert_eq!(business::compare_price(2.0, 0.28, 1.1), "cloud 1.82–7.14× cheaper");
        assert_eq!(business::compare_price(0.5, 0.28, 1.1), "within the cloud range");
    }

    #[test]
    fn criteria_cover_every_threshold_in_the_plan() {
        let input = fixture();
        let ctx = Ctx::new(&input);
        let verdicts: Vec<(String, Verdict)> = ctx.criteria.iter().map(|c| (c.what.clone(), c.verdict)).collect();
        assert!(verdicts.contains(&("Decode speed — qwen25-coder-14b".into(), Verdict::Pass)), "{verdicts:?}");
        assert!(verdicts.contains(&("Decode speed — llama31-70b".into(), Verdict::Fail)));
        assert!(verdicts.contains(&("Decode speed — codellama-34b".into(), Verdict::NotMeasured)));
        assert!(verdicts.contains(&("GPU utilisation while generating — qwen25-coder-14b".into(), Verdict::Pass)));
        assert!(verdicts.contains(&("GPU utilisation while generating — llama31-70b".into(), Verdict::Fail)));
        assert!(verdicts.contains(&("Sustained GPU temperature — qwen25-coder-14b".into(), Verdict::Pass)));
        assert!(verdicts.contains(&("Sustained GPU temperature — llama31-70b".into(), Verdict::Fail)));
        assert!(verdicts.contains(&("Memory within the container limit — llama31-70b".into(), Verdict::Pass)));
        assert!(verdicts.contains(&("Memory within the container limit — gemma3-270m".into(), Verdict::NotApplicable)));
        let gemma_gpu = ctx
            .criteria
            .iter()
            .find(|c| c.what == "GPU utilisation while generating — gemma3-270m")
            .expect("a row for the CPU-only model");
        assert_eq!(
            (gemma_gpu.measured.as_str(), gemma_gpu.verdict),
            ("not measured: no NVIDIA GPU (libnvidia-ml not found)", Verdict::NotMeasured)
        );
        assert!(verdicts.contains(&("Idle GPU temperature".into(), Verdict::Pass)));
    }
}
