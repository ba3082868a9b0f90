//! Report generation for a large cycle: 20 models × 10 prompts × 5 repetitions, each model with
//! an hour of telemetry at 1 Hz (3600 samples per series), a 2 KB answer per request.
//!
//! Prints the wall time of each step the Documentation agent takes (`render_reports`,
//! `check_reports`, `write_atomically`) and the process's peak resident memory (`VmHWM`) before
//! and after, so the memory the rendering itself needs shows.
//!
//! ```sh
//! cargo bench -p threadcycle-documentation --bench render
//! RENDER_BENCH_MODELS=40 RENDER_BENCH_SAMPLES=7200 cargo bench -p threadcycle-documentation --bench render
//! ```

use protocol::messages::{BenchmarkResults, VerificationReport};
use protocol::plan::Plan;
use protocol::results::{
    AnswerAnalysis, BlobRef, Fit, FitVerdict, HostFacts, Manifest, MetricSummary, ModelResult, ModelStatus,
    Percentiles, PromptSummary, RunResult, Stat, TELEMETRY_COLUMNS, TelemetrySummary,
};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Instant;
use threadcycle_documentation::agent::write_atomically;
use threadcycle_documentation::checks::check_reports;
use threadcycle_documentation::render::{ReportInput, render_reports};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `VmRSS` and `VmHWM` of this process, bytes.
fn memory() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = |key: &str| -> u64 {
        s.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (kb("VmRSS:"), kb("VmHWM:"))
}

fn mib(b: u64) -> f64 {
    b as f64 / f64::from(1u32 << 20)
}

fn plan_text(models: usize, prompts: usize, reps: usize) -> String {
    let mut t = format!(
        "name = \"render-bench\"\n[defaults]\nrepetitions = {reps}\nmax_tokens = 512\n\n[cost]\nelectricity_usd_per_kwh = 0.3\nhardware_usd = 3000\nlifetime_years = 3\nhours_per_day = 8\nassumed_power_w = 300\ncloud = [{{ name = \"API\", usd_per_mtok_min = 1.0, usd_per_mtok_max = 10.0, as_of = \"2025-06-01\" }}]\n\n"
    );
    for i in 0..models {
        let _ = write!(
            t,
            "[[models]]\nname = \"model-{i:02}\"\nengine = \"ollama\"\nruntime = \"docker\"\nimage = \"ollama/ollama:0.12.6\"\ntag = \"family{i}:{}b\"\nparams_b = {}\nprojected = {{ ram_gb = {{ max = 40 }}, response_time_s = {{ max = 60 }} }}\n\n",
            7 + i,
            7 + i
        );
    }
    for p in 0..prompts {
        let _ = write!(
            t,
            "[[prompts]]\nid = \"prompt-{p:02}\"\ntitle = \"Prompt {p}\"\ntext = \"Explain topic {p} for a homelab operator.\"\nrequired_topics = [\"memory\", \"gpu\", \"backup\"]\n\n"
        );
    }
    t
}

fn answer(model: usize, prompt: usize, rep: usize) -> String {
    let mut a = format!("## Answer {model}/{prompt}/{rep}\n\n");
    while a.len() < 2000 {
        a.push_str("- The GPU memory holds the weights; the rest spills to RAM. <b>markup</b> & `code`\n");
    }
    a
}

fn run(model: usize, prompt: usize, rep: usize) -> RunResult {
    let tps = 20.0 + model as f64 + (rep as f64 * 0.3);
    let ttft = 150.0 + prompt as f64 * 7.0 + rep as f64;
    let tokens = 400 + (prompt * 13 + rep * 7) as u32;
    let e2e = ttft + f64::from(tokens - 1) / tps * 1000.0;
    RunResult {
        prompt_id: format!("prompt-{prompt:02}"),
        repetition: rep as u32,
        nonce: format!("{model:02}{prompt:02}{rep:02}abcd"),
        ttft_ms: ttft,
        e2e_ms: e2e,
        tpot_ms: Some((e2e - ttft) / f64::from(tokens - 1)),
        itl_ms: Some(Percentiles { p50: 1000.0 / tps, p90: 1100.0 / tps, p99: 1400.0 / tps }),
        output_tokens: tokens,
        prompt_tokens: Some(120),
        client_decode_tps: Some(tps),
        engine_decode_tps: Some(tps * 1.01),
        engine_prefill_tps: Some(900.0),
        engine_prompt_ms: Some(130.0),
        finish_reason: Some("stop".into()),
        analysis: AnswerAnalysis {
            words: 300 + prompt as u32,
            headings: 1,
            code_blocks: 1,
            list_items: 20,
            tables: 0,
            topics_covered: vec!["memory".into(), "gpu".into()],
            topics_missing: vec!["backup".into()],
        },
        answer: Some(BlobRef {
            key: format!("answers/c/model-{model:02}/prompt-{prompt:02}/{rep}"),
            sha256: "0".repeat(64),
            size: 2000,
        }),
        excerpt: answer(model, prompt, rep).chars().take(200).collect(),
    }
}

fn metric(peak: f64, mean: f64, samples: u32) -> Option<MetricSummary> {
    Some(MetricSummary { peak, mean, min: mean / 2.0, samples })
}

/// The sampler's CSV: `t_s,samples`, then each column's mean and max, one row per second.
fn series(model: usize, samples: usize) -> String {
    let mut csv = String::from("t_s,samples");
    for n in TELEMETRY_COLUMNS {
        let _ = write!(csv, ",{n},{n}_max");
    }
    csv.push('\n');
    for i in 0..samples {
        let _ = write!(csv, "{i}.000,1");
        for (c, _) in TELEMETRY_COLUMNS.iter().enumerate() {
            let v = (c as f64 + 1.0) * 10.0 + ((i + model) % 60) as f64;
            let _ = write!(csv, ",{v},{v}");
        }
        csv.push('\n');
    }
    csv
}

fn input(models: usize, prompts: usize, reps: usize, samples: usize) -> ReportInput {
    let plan = Plan::from_toml(&plan_text(models, prompts, reps)).expect("the bench plan is valid");
    let verdicts = plan
        .models
        .iter()
        .map(|m| FitVerdict {
            model: m.name.clone(),
            fit: Fit::Go,
            source: "built-in table".into(),
            weights_bytes: Some(8 << 30),
            kv_bytes: Some(1 << 30),
            vram_bytes: Some(9 << 30),
            ram_bytes: Some(1 << 30),
            gpu_layers: Some((40, 40)),
            reason: "fits wholly in VRAM".into(),
            suggestion: None,
        })
        .collect();
    let host = HostFacts {
        hostname: "bench".into(),
        host_id: "local".into(),
        cpu_model: "CPU".into(),
        cpus: 16,
        ram_total: 64 << 30,
        ram_available: 60 << 30,
        ..Default::default()
    };
    let verification = VerificationReport {
        plan: plan.clone(),
        plan_hash: "f".repeat(64),
        plan_source: "bench".into(),
        host,
        checks: Vec::new(),
        verdicts,
        placement: None,
        concurrent_fit: None,
    };
    let mut answers = BTreeMap::new();
    let mut telemetry_series = BTreeMap::new();
    let mut results = Vec::new();
    for (i, m) in plan.models.iter().enumerate() {
        let mut runs = Vec::new();
        for p in 0..prompts {
            for rep in 1..=reps {
                let r = run(i, p, rep);
                if let Some(b) = &r.answer {
                    answers.insert(b.key.clone(), answer(i, p, rep));
                }
                runs.push(r);
            }
        }
        let prompt_summaries = (0..prompts)
            .map(|p| {
                let rs: Vec<&RunResult> = runs.iter().filter(|r| r.prompt_id == format!("prompt-{p:02}")).collect();
                let stat = |f: &dyn Fn(&RunResult) -> f64| Stat::of(&rs.iter().map(|r| f(r)).collect::<Vec<_>>(), 0.1);
                PromptSummary {
                    prompt_id: format!("prompt-{p:02}"),
                    ttft_ms: stat(&|r| r.ttft_ms),
                    e2e_ms: stat(&|r| r.e2e_ms),
                    client_decode_tps: stat(&|r| r.client_decode_tps.unwrap_or(0.0)),
                    engine_decode_tps: stat(&|r| r.engine_decode_tps.unwrap_or(0.0)),
                    engine_prefill_tps: stat(&|r| r.engine_prefill_tps.unwrap_or(0.0)),
                    output_tokens: stat(&|r| f64::from(r.output_tokens)),
                    words: stat(&|r| f64::from(r.analysis.words)),
                }
            })
            .collect();
        telemetry_series.insert(m.name.clone(), series(i, samples));
        let n = samples as u32;
        results.push(ModelResult {
            index: i as u32,
            model: m.name.clone(),
            status: ModelStatus::Measured,
            attempts: Vec::new(),
            load_ms: Some(12_000.0),
            runs,
            prompts: prompt_summaries,
            peak_ram_bytes: Some(6 << 30),
            peak_vram_bytes: Some(9 << 30),
            manifest: Manifest {
                host: "bench".into(),
                engine: "ollama".into(),
                model: m.model_ref().into(),
                context: 4096,
                ..Default::default()
            },
            telemetry: Some(TelemetrySummary {
                sample_hz: 1.0,
                samples: n,
                duration_s: samples as f64,
                gpu_util_pct: metric(99.0, 90.0, n),
                gpu_temp_c: metric(78.0, 70.0, n),
                gpu_power_w: metric(320.0, 280.0, n),
                vram_used_bytes: metric(9e9, 8.5e9, n),
                engine_mem_bytes: metric(6e9, 5.5e9, n),
                engine_cpu_pct: metric(120.0, 100.0, n),
                host_mem_available_bytes: metric(50e9, 48e9, n),
                gpu_energy_j: Some(280.0 * samples as f64),
                series: Some(BlobRef {
                    key: format!("telemetry/c/{}/attempt-1", m.name),
                    sha256: "0".repeat(64),
                    size: 0,
                }),
                ..Default::default()
            }),
            deployment: vec![format!("docker run -d --name tc-c-{} ollama/ollama:0.12.6", m.name)],
            launch: None,
            pull_ms: None,
            started_at: "2026-01-01T00:00:00Z".into(),
            finished_at: "2026-01-01T01:00:00Z".into(),
        });
    }
    ReportInput {
        cycle: "20260101T000000-bench".into(),
        results: BenchmarkResults {
            verification,
            models: results,
            escalations: Vec::new(),
            aborted: None,
            concurrent: None,
            hosts: Vec::new(),
        },
        troubleshooting: Vec::new(),
        answers,
        telemetry_series,
    }
}

fn main() {
    let models = env_or("RENDER_BENCH_MODELS", 20);
    let prompts = env_or("RENDER_BENCH_PROMPTS", 10);
    let reps = env_or("RENDER_BENCH_REPS", 5);
    let samples = env_or("RENDER_BENCH_SAMPLES", 3600);
    let rounds = env_or("RENDER_BENCH_ROUNDS", 3).max(1);
    let (rss0, _) = memory();
    let t = Instant::now();
    let inp = input(models, prompts, reps, samples);
    let build = t.elapsed();
    let series_bytes: usize = inp.telemetry_series.values().map(String::len).sum();
    let answer_bytes: usize = inp.answers.values().map(String::len).sum();
    let (rss_input, hwm_input) = memory();
    println!(
        "report generation: {models} models × {prompts} prompts × {reps} repetitions = {} runs, {samples} telemetry samples per model \
         ({:.1} MiB of series CSV, {:.1} MiB of answers); input built in {:.2} s, {:.1} MiB RSS (was {:.1} MiB)",
        models * prompts * reps,
        mib(series_bytes as u64),
        mib(answer_bytes as u64),
        build.as_secs_f64(),
        mib(rss_input),
        mib(rss0),
    );
    let out = std::env::temp_dir().join(format!("tc-render-bench-{}", std::process::id()));
    let (mut render_s, mut check_s, mut write_s) = (Vec::new(), Vec::new(), Vec::new());
    let mut report_bytes = 0usize;
    let mut files_n = 0usize;
    let mut largest: Vec<(usize, String)> = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let files = render_reports(&inp);
        render_s.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let problems = check_reports(&files);
        check_s.push(t.elapsed().as_secs_f64());
        assert!(problems.is_empty(), "the rendered reports have problems: {problems:?}");
        let t = Instant::now();
        write_atomically(&out.join(&inp.cycle), &files).expect("write the reports");
        write_s.push(t.elapsed().as_secs_f64());
        report_bytes = files.iter().map(|f| f.bytes.len()).sum();
        files_n = files.len();
        largest = files.iter().map(|f| (f.bytes.len(), f.path.clone())).collect();
    }
    let _ = std::fs::remove_dir_all(&out);
    let (_, hwm) = memory();
    let stat = |xs: &[f64]| {
        let min = xs.iter().copied().fold(f64::INFINITY, f64::min);
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        format!("{min:.3} s best, {mean:.3} s mean")
    };
    println!("  render_reports:   {} ({rounds} rounds)", stat(&render_s));
    println!("  check_reports:    {}", stat(&check_s));
    println!("  write_atomically: {}", stat(&write_s));
    largest.sort_by(|a, b| b.cmp(a));
    let top: Vec<String> = largest.iter().take(5).map(|(n, p)| format!("{p} {:.2} MiB", mib(*n as u64))).collect();
    println!("  output: {files_n} files, {:.1} MiB; largest: {}", mib(report_bytes as u64), top.join(", "));
    println!(
        "  peak RSS (VmHWM): {:.1} MiB in all; {:.1} MiB after building the input, so rendering added at most {:.1} MiB",
        mib(hwm),
        mib(hwm_input),
        mib(hwm.saturating_sub(hwm_input))
    );
}
