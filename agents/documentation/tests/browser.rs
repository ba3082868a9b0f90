//! `report.html` in a real browser: headless Chromium (Debian's `chromium`) opens the file from
//! disk, and the test reads the DOM it rendered. The report must show its charts, have a nav and
//! a section per page, and show a model's hostile answer as text: the `<script>` and the
//! `onerror` handler in it must not run. A control page without escaping or CSP shows that the
//! same payload *is* seen when it runs, so a pass is not an artefact of `--dump-dom`. The test
//! also saves a screenshot to `target/report-screenshot.png`.
//!
//! `make test` installs Chromium (`make browser`); without it the test fails and says so.

use protocol::messages::{BenchmarkResults, VerificationReport};
use protocol::plan::Plan;
use protocol::results::{
    AnswerAnalysis, Attempt, BlobRef, Check, CheckStatus, Fit, FitVerdict, GpuInfo, HostFacts, Manifest, MetricSummary,
    ModelResult, ModelStatus, Percentiles, RunResult, TelemetrySummary,
};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use threadcycle_documentation::html::page_anchor;
use threadcycle_documentation::render::{PAGES, ReportInput, render_reports};

const CHROMIUM: &str = "/usr/bin/chromium";
/// How long one Chromium run may take before it is killed.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(60);

/// What a hostile model could answer: a script, an event handler, a fence break-out, an iframe.
const HOSTILE: &str = "Sure! <script>document.title='PWNED';document.body.setAttribute('data-pwned','1')</script>\n\
<img src=x onerror=\"document.title='PWNED';document.body.setAttribute('data-pwned','1')\">\n\
```\n</code></pre><script>document.title='PWNED'</script>\n````\n\
<iframe src=\"javascript:document.title='PWNED'\"></iframe> & done";

const PLAN: &str = r#"
name = "Browser check"
description = "A small cycle whose answers try to run script in the report."

[defaults]
repetitions = 2
max_tokens = 512
context = 4096
cv_flag = 0.10

[[models]]
name = "qwen25-coder-14b"
engine = "ollama"
runtime = "docker"
tag = "qwen2.5-coder:14b"
image = "ollama/ollama:0.12.6"
memory_limit_gb = 24
gpus = "all"
port = 11434
params_b = 14.8
projected = { ram_gb = { min = 2, max = 4 }, vram_gb = { min = 10, max = 12 }, response_time_s = { min = 8, max = 20 }, words = { min = 250, max = 450 } }

[[models]]
name = "gemma3-270m"
engine = "llama-server"
runtime = "process"
model_path = "/srv/models/gemma-3-270m-it-Q4_K_M.gguf"
gpu_layers = 0
threads = 8
params_b = 0.27

[[prompts]]
id = "lab-architecture"
title = "Design a homelab inference architecture"
text = "Design ..."
required_topics = ["GPU", "memory"]

[[prompts]]
id = "rust-parser"
title = "Write a streaming NDJSON parser in Rust"
text = "Write ..."
required_topics = ["error handling", "tests"]

[criteria]
min_decode_tps = 10
max_temp_c = 83
"#;

const GIB: u64 = 1 << 30;

fn run(model: &str, prompt: &str, rep: u32, ttft: f64, tps: f64, excerpt: &str) -> RunResult {
    let tokens = 400 + rep * 10;
    let e2e = ttft + f64::from(tokens - 1) / tps * 1000.0;
    RunResult {
        prompt_id: prompt.into(),
        repetition: rep,
        nonce: format!("{rep:08x}"),
        ttft_ms: ttft,
        e2e_ms: e2e,
        tpot_ms: Some((e2e - ttft) / f64::from(tokens - 1)),
        itl_ms: Some(Percentiles { p50: 1000.0 / tps, p90: 1100.0 / tps, p99: 1300.0 / tps }),
        output_tokens: tokens,
        prompt_tokens: Some(120),
        client_decode_tps: Some(tps),
        engine_decode_tps: Some(tps * 1.02),
        engine_prefill_tps: Some(900.0),
        engine_prompt_ms: Some(130.0),
        finish_reason: Some("stop".into()),
        analysis: AnswerAnalysis {
            words: 300 + rep,
            headings: 2,
            code_blocks: 1,
            list_items: 4,
            tables: 0,
            topics_covered: vec!["GPU".into()],
            topics_missing: vec!["memory".into()],
        },
        answer: Some(BlobRef {
            key: format!("answers/{model}/{prompt}-{rep}"),
            sha256: format!("{rep:064x}"),
            size: 2048,
        }),
        excerpt: excerpt.into(),
    }
}

fn metric(peak: f64, mean: f64, min: f64) -> Option<MetricSummary> {
    Some(MetricSummary { peak, mean, min, samples: 40 })
}

fn manifest(model: &str, engine: &str) -> Manifest {
    Manifest {
        host: "gpubox".into(),
        cpu: "AMD Ryzen 9 7950X".into(),
        gpu: "NVIDIA GeForce RTX 4090".into(),
        engine: engine.into(),
        model: model.into(),
        context: 4096,
        seed: 42,
        plan_hash: "0".repeat(64),
        threadcycle_version: "0.1.0".into(),
        ..Manifest::default()
    }
}

fn telemetry(model: &str) -> Option<TelemetrySummary> {
    Some(TelemetrySummary {
        sample_hz: 2.0,
        samples: 40,
        duration_s: 20.0,
        gpu_temp_c: metric(70.0, 62.0, 40.0),
        gpu_power_w: metric(320.0, 280.0, 60.0),
        engine_mem_bytes: metric(3.0 * GIB as f64, 2.5 * GIB as f64, 1.0 * GIB as f64),
        host_mem_available_bytes: metric(50.0 * GIB as f64, 48.0 * GIB as f64, 47.0 * GIB as f64),
        series: Some(BlobRef {
            key: format!("telemetry/c-browser/{model}/attempt-1"),
            sha256: "0".repeat(64),
            size: 1024,
        }),
        ..TelemetrySummary::default()
    })
}

/// A sampler CSV with the columns the charts over time read.
fn series(points: u32, mem_gib: f64, gpu: bool) -> String {
    let mut csv = String::from("t_s,samples,gpu_temp_c,gpu_power_w,engine_mem_bytes,host_mem_available_bytes\n");
    for i in 0..points {
        let f = f64::from(i) / f64::from(points - 1);
        let mem = (mem_gib * (0.5 + 0.5 * f) * GIB as f64).round();
        let avail = 50.0 * GIB as f64 - mem;
        let (temp, watts) = if gpu {
            (format!("{:.1}", 40.0 + 30.0 * f.sqrt()), format!("{:.1}", 60.0 + 250.0 * f.min(0.2) * 5.0))
        } else {
            (String::new(), String::new())
        };
        csv.push_str(&format!("{:.1},4,{temp},{watts},{mem},{avail}\n", f64::from(i) * 0.5));
    }
    csv
}

fn model(index: u32, name: &str, engine: &str, runs: Vec<RunResult>) -> ModelResult {
    ModelResult {
        index,
        model: name.into(),
        status: ModelStatus::Measured,
        attempts: vec![Attempt { number: 1, changes: vec![], settings: None, outcome: "ok".into(), escalation: None }],
        load_ms: Some(3000.0),
        runs,
        prompts: vec![],
        peak_ram_bytes: Some(3 * GIB),
        peak_vram_bytes: None,
        manifest: manifest(name, engine),
        telemetry: telemetry(name),
        deployment: vec![],
        launch: None,
        pull_ms: None,
        started_at: "2025-06-14T09:00:00Z".into(),
        finished_at: "2025-06-14T09:05:00Z".into(),
    }
}

/// Two measured models with telemetry. qwen's first `lab-architecture` answer is hostile and
/// available in full; its first `rust-parser` answer is not available, so its hostile excerpt
/// is shown instead.
fn input() -> ReportInput {
    let plan = Plan::from_toml(PLAN).expect("the test plan is valid");
    let verification = VerificationReport {
        plan,
        plan_hash: "0".repeat(64),
        plan_source: "plans/browser.toml".into(),
        host: HostFacts {
            hostname: "gpubox".into(),
            host_id: "gpubox".into(),
            kernel: "6.8.0".into(),
            cpu_model: "AMD Ryzen 9 7950X".into(),
            cpus: 32,
            ram_total: 64 * GIB,
            ram_available: 58 * GIB,
            model_store: "/srv/ollama".into(),
            disk_free: 400 * GIB,
            gpus: vec![GpuInfo {
                index: 0,
                name: "NVIDIA GeForce RTX 4090".into(),
                vram_total: 24 * GIB,
                vram_used: GIB / 2,
                temperature_c: Some(38),
                power_w: Some(20.0),
                driver: "550.120".into(),
                memory_bandwidth_gbs: Some(1008.1),
            }],
            ..HostFacts::default()
        },
        checks: vec![Check {
            name: "ram.total".into(),
            status: CheckStatus::Pass,
            measured: "64.0 GiB".into(),
            threshold: Some("≥ 32 GiB".into()),
            detail: "enough".into(),
        }],
        verdicts: ["qwen25-coder-14b", "gemma3-270m"]
            .into_iter()
            .map(|m| FitVerdict {
                model: m.into(),
                fit: Fit::Go,
                source: "built-in table".into(),
                weights_bytes: Some(9 * GIB),
                kv_bytes: Some(GIB),
                vram_bytes: Some(10 * GIB),
                ram_bytes: Some(GIB),
                gpu_layers: Some((49, 49)),
                reason: "fits wholly in VRAM".into(),
                suggestion: None,
            })
            .collect(),
        placement: None,
        concurrent_fit: None,
    };
    let mut qwen_runs = Vec::new();
    let mut gemma_runs = Vec::new();
    for prompt in ["lab-architecture", "rust-parser"] {
        for rep in 1..=2 {
            let excerpt =
                if rep == 1 { HOSTILE.to_string() } else { format!("## Answer {rep}\nHere is the {prompt} answer.") };
            qwen_runs.push(run("qwen25-coder-14b", prompt, rep, 180.0 + f64::from(rep), 66.0, &excerpt));
            gemma_runs.push(run("gemma3-270m", prompt, rep, 95.0 + f64::from(rep), 41.0, "A plain answer."));
        }
    }
    let mut answers = BTreeMap::new();
    answers.insert(
        "answers/qwen25-coder-14b/lab-architecture-1".to_string(),
        format!("FULL ANSWER {HOSTILE}\n\n````rust\nfn main() {{}}\n````\n"),
    );
    ReportInput {
        cycle: "c-browser".into(),
        results: BenchmarkResults {
            verification,
            models: vec![
                model(0, "qwen25-coder-14b", "ollama", qwen_runs),
                model(1, "gemma3-270m", "llama-server", gemma_runs),
            ],
            escalations: vec![],
            aborted: None,
            concurrent: None,
            hosts: Vec::new(),
        },
        troubleshooting: vec![],
        answers,
        telemetry_series: [
            ("qwen25-coder-14b".to_string(), series(40, 3.0, true)),
            ("gemma3-270m".to_string(), series(40, 0.4, false)),
        ]
        .into_iter()
        .collect(),
    }
}

/// A fresh scratch directory under the system temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("threadcycle-browser-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn require_chromium() {
    assert!(
        Path::new(CHROMIUM).is_file(),
        "{CHROMIUM} is missing: run `make browser` (apt-get install chromium) — the report's HTML \
         is checked in a real browser"
    );
}

/// Runs headless Chromium on `page` with `extra` arguments and a fresh profile; returns stdout.
/// Kills Chromium's process group when it takes longer than [`CHROMIUM_TIMEOUT`].
fn chromium(page: &Path, extra: &[String]) -> String {
    use std::os::unix::process::CommandExt;
    let profile = Scratch::new("profile");
    let mut cmd = Command::new(CHROMIUM);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
    ])
    .arg(format!("--user-data-dir={}", profile.0.display()))
    .args(extra)
    .arg(format!("file://{}", page.display()))
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0);
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {CHROMIUM}: {e}"));
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for chromium") {
            break Some(status);
        }
        if start.elapsed() > CHROMIUM_TIMEOUT {
            // The whole group: Chromium's renderer and GPU helpers too.
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", child.id())]).status();
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    let tail: String = {
        let lines: Vec<&str> = stderr.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    };
    match status {
        None => {
            panic!("chromium did not finish within {CHROMIUM_TIMEOUT:?} on {}; stderr tail:\n{tail}", page.display())
        }
        Some(s) if !s.success() => {
            panic!("chromium failed ({s}) on {}; stderr tail:\n{tail}", page.display())
        }
        Some(_) => stdout,
    }
}

/// The rendered report, written to a scratch folder the way the agent writes it.
fn write_report(dir: &Path) -> PathBuf {
    for f in render_reports(&input()) {
        let path = dir.join(&f.path);
        std::fs::create_dir_all(path.parent().expect("file has a parent")).expect("mkdir");
        std::fs::write(&path, &f.bytes).expect("write report file");
    }
    let html = dir.join("report.html");
    assert!(html.is_file(), "render_reports produced no report.html");
    html
}

/// The text between `<tag` … `>` and `</tag>`, for the first such element.
fn element_text<'a>(dom: &'a str, tag: &str) -> Option<&'a str> {
    let open = dom.find(&format!("<{tag}"))?;
    let start = open + dom[open..].find('>')? + 1;
    let end = start + dom[start..].find(&format!("</{tag}>"))?;
    Some(&dom[start..end])
}

/// The opening tag of the first `<tag …>` element.
fn opening_tag<'a>(dom: &'a str, tag: &str) -> Option<&'a str> {
    let open = dom.find(&format!("<{tag}"))?;
    let end = open + dom[open..].find('>')? + 1;
    Some(&dom[open..end])
}

#[test]
fn the_control_page_shows_that_a_running_script_is_seen() {
    require_chromium();
    let dir = Scratch::new("control");
    // The payload unescaped and without a CSP: here it must run, or the report's check proves
    // nothing.
    let page = dir.0.join("control.html");
    std::fs::write(
        &page,
        "<!DOCTYPE html><html><head><title>control</title></head><body><p>hi</p>\
         <script>document.title='PWNED';document.body.setAttribute('data-pwned','1')</script>\
         </body></html>",
    )
    .expect("write control page");
    let dom = chromium(&page, &["--dump-dom".to_string()]);
    assert_eq!(element_text(&dom, "title"), Some("PWNED"), "{dom}");
    assert!(opening_tag(&dom, "body").is_some_and(|b| b.contains("data-pwned=\"1\"")), "{dom}");
}

#[test]
fn report_html_renders_in_chromium_without_running_model_output() {
    require_chromium();
    let dir = Scratch::new("report");
    let page = write_report(&dir.0);
    let source = std::fs::read_to_string(&page).expect("read report.html");
    assert!(source.contains("http-equiv=\"Content-Security-Policy\""), "report.html has no CSP");

    let dom = chromium(&page, &["--dump-dom".to_string()]);
    assert!(dom.contains("<nav>") && dom.contains("</main>"), "chromium returned no report DOM:\n{dom}");

    // Nothing from the answer ran.
    let title = element_text(&dom, "title").expect("the DOM has a <title>");
    assert_eq!(title, "Browser check — cycle c-browser", "the title changed: a script from a model answer ran");
    let body = opening_tag(&dom, "body").expect("the DOM has a <body>");
    assert!(!body.contains("data-pwned"), "the body got data-pwned: a script from a model answer ran: {body}");
    assert!(!dom.contains("data-pwned=\""), "an element got data-pwned: a script from a model answer ran");
    assert!(!dom.to_ascii_lowercase().contains("<script"), "a <script> element is in the DOM");
    for tag in ["<img", "<iframe"] {
        assert!(!dom.contains(tag), "a {tag} element is in the DOM");
    }

    // …and it is shown as text, escaped, both the full answer and the excerpt.
    let escaped = "&lt;script&gt;document.title='PWNED';document.body.setAttribute('data-pwned','1')&lt;/script&gt;";
    assert!(dom.matches(escaped).count() >= 2, "the hostile answer and excerpt are not both shown as escaped text");
    assert!(dom.contains("&lt;img src=x onerror=\"document.title='PWNED'"), "the <img onerror> is not shown as text");
    assert!(dom.contains("FULL ANSWER"), "the full answer is not shown");
    assert!(dom.contains("&lt;iframe src=\"javascript:"), "the <iframe> is not shown as text");

    // The charts are there, inline.
    let svgs = dom.matches("<svg").count();
    assert!(svgs >= 2, "only {svgs} <svg> charts in the DOM");
    for label in ["Decode tokens/s by model", "Time to first token by model", "GPU temperature over time"] {
        assert!(dom.contains(&format!("aria-label=\"{label}")), "the chart {label:?} is not in the DOM");
    }

    // A nav link and a section for each page.
    for (path, title) in PAGES {
        let anchor = page_anchor(path);
        assert!(dom.contains(&format!("<a href=\"#{anchor}\">{title}</a>")), "no nav link to {path}");
        assert!(dom.contains(&format!("<section id=\"{anchor}\">")), "no section for {path}");
    }

    // A screenshot, kept where a person can look at it.
    let shot = dir.0.join("report.png");
    chromium(
        &page,
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1280,2000".to_string(),
            "--hide-scrollbars".to_string(),
        ],
    );
    let png = std::fs::read(&shot).expect("chromium wrote no screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "the screenshot is not a PNG");
    // A blank 1280×2000 page compresses to about 12 KB; the report's first screen is ~300 KB.
    assert!(png.len() > 50 * 1024, "the screenshot is only {} bytes: the page is probably blank", png.len());
    let keep = target_dir().join("report-screenshot.png");
    std::fs::write(&keep, &png).expect("keep the screenshot in target/");
    eprintln!("screenshot: {}", keep.display());
}

/// Cargo's target folder: the test binary runs from `<target>/<profile>/deps/`.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}
