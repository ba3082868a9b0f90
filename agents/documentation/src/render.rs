//! Turns a cycle's results into the report folder: markdown pages, charts, raw data and one
//! self-contained HTML file.
//!
//! Everything here is a pure function of [`ReportInput`]: no clock, no environment, no I/O, and
//! every map is ordered, so the same results always give the same bytes.

use crate::charts;
use crate::html;
use crate::markdown::{Align, cell, cell_short, fence, inline, shell_word, table, yaml_str};
use protocol::launch::{ContainerLaunch, Launch};
use protocol::messages::BenchmarkResults;
use protocol::plan::{Bounds, CostInputs, EngineKind, GpuRequest, ModelSpec, Plan, PromptSpec, Runtime};
use protocol::results::{
    Check, CheckStatus, EscalationRecord, FailureClass, Fit, FitVerdict, HostFacts, MetricSummary, ModelResult,
    ModelStatus, RemedyAction, RunResult, Stat, TelemetrySummary,
};
use protocol::settings::{Setting, Settings as RunSettings};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

mod assessment;
mod ledger;

/// Everything the reports are made from.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportInput {
    /// The cycle id.
    pub cycle: String,
    /// The Writer's results, with the Reader's verification inside.
    pub results: BenchmarkResults,
    /// Debug's record of every escalation in the cycle.
    pub troubleshooting: Vec<EscalationRecord>,
    /// Full answers by object-store key (may be empty; excerpts are used then).
    pub answers: BTreeMap<String, String>,
    /// Each model's sampled telemetry series (the CSV that `telemetry.series` points to), by
    /// model name; may be empty, and then the charts over time are left out.
    pub telemetry_series: BTreeMap<String, String>,
}

/// One file of the report folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportFile {
    /// Path relative to the report folder, with `/` separators.
    pub path: String,
    /// Content.
    pub bytes: Vec<u8>,
}

/// The markdown pages, in reading order: path and title.
pub const PAGES: &[(&str, &str)] = &[
    ("README.md", "Summary"),
    ("benchmark-report.md", "Benchmark report"),
    ("deployment-guide.md", "Deployment guide"),
    ("troubleshooting.md", "Troubleshooting log"),
    ("business-case.md", "Business case"),
    ("quality.md", "Answer quality"),
    (ledger::PATH, "Claims ledger"),
];

/// Decode chart path.
const DECODE_CHART: &str = "charts/decode-tps.svg";
/// TTFT chart path.
const TTFT_CHART: &str = "charts/ttft.svg";
/// Every model's telemetry series in one file.
const TELEMETRY_CSV: &str = "data/telemetry.csv";
/// Placeholder for a figure that was not measured or not projected.
const DASH: &str = "—";
/// Bytes in a GiB; the plan's "GB" are read as GiB, as Docker's memory limits are.
const GIB: f64 = 1_073_741_824.0;

/// Renders every report file for one cycle.
pub fn render_reports(input: &ReportInput) -> Vec<ReportFile> {
    let ctx = Ctx::new(input);
    let pages = vec![
        ("README.md".to_string(), readme(&ctx)),
        ("benchmark-report.md".to_string(), benchmark_report(&ctx)),
        ("deployment-guide.md".to_string(), deployment_guide(&ctx)),
        ("troubleshooting.md".to_string(), troubleshooting(&ctx)),
        ("business-case.md".to_string(), business_case(&ctx)),
        ("quality.md".to_string(), quality(&ctx)),
        (ledger::PATH.to_string(), ledger::page(&ctx)),
    ];
    let mut svgs: BTreeMap<String, String> =
        [(DECODE_CHART.to_string(), decode_chart(&ctx)), (TTFT_CHART.to_string(), ttft_chart(&ctx))]
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
    files.push(ReportFile { path: "data/results.json".into(), bytes: results_json(&input.results).into_bytes() });
    files.push(ReportFile { path: "data/results.csv".into(), bytes: results_csv(&input.results).into_bytes() });
    if !ctx.series.is_empty() {
        files.push(ReportFile { path: TELEMETRY_CSV.into(), bytes: telemetry_csv(&ctx.series).into_bytes() });
    }
    files.push(ReportFile { path: "report.html".into(), bytes: html.into_bytes() });
    files
}

// ---------------------------------------------------------------------------------------------
// Derived figures

/// Mean, spread and count of each figure over a set of runs.
#[derive(Debug, Clone, Default)]
struct Figures {
    ttft_ms: Option<Stat>,
    e2e_ms: Option<Stat>,
    tpot_ms: Option<Stat>,
    client_tps: Option<Stat>,
    engine_tps: Option<Stat>,
    prefill_tps: Option<Stat>,
    tokens: Option<Stat>,
    words: Option<Stat>,
}

impl Figures {
    fn of(runs: &[&RunResult], cv: f64) -> Self {
        let stat = |f: &dyn Fn(&RunResult) -> Option<f64>| {
            let xs: Vec<f64> = runs.iter().filter_map(|r| f(r)).collect();
            Stat::of(&xs, cv)
        };
        Figures {
            ttft_ms: stat(&|r| Some(r.ttft_ms)),
            e2e_ms: stat(&|r| Some(r.e2e_ms)),
            tpot_ms: stat(&|r| r.tpot_ms),
            client_tps: stat(&|r| r.client_decode_tps),
            engine_tps: stat(&|r| r.engine_decode_tps),
            prefill_tps: stat(&|r| r.engine_prefill_tps),
            tokens: stat(&|r| Some(f64::from(r.output_tokens))),
            words: stat(&|r| Some(f64::from(r.analysis.words))),
        }
    }

    /// Decode tokens/s for costs and criteria: the client's figure, else the engine's.
    fn decode(&self) -> Option<(f64, &'static str)> {
        self.client_tps
            .map(|s| (s.mean, "client-side"))
            .or_else(|| self.engine_tps.map(|s| (s.mean, "engine-reported")))
    }
}

/// The settings a model was measured with, as the Writer recorded them for the attempt that
/// succeeded (nothing here re-applies remedies); the plan's for a model with no attempt.
#[derive(Debug, Clone)]
struct Effective {
    /// The settings.
    set: RunSettings,
    /// The attempt that succeeded, if one did.
    attempt: Option<u32>,
    /// Changes from the plan that attempt ran with, in order.
    changes: Vec<Setting>,
}

impl Effective {
    fn of(plan: &Plan, spec: &ModelSpec, r: &ModelResult) -> Self {
        let ok = r.attempts.iter().filter(|a| a.outcome.trim().eq_ignore_ascii_case("ok")).min_by_key(|a| a.number);
        let chosen = ok.or_else(|| {
            (r.status == ModelStatus::Measured).then(|| r.attempts.iter().max_by_key(|a| a.number)).flatten()
        });
        let mut attempt = chosen.map(|a| a.number);
        if attempt.is_none() && r.status == ModelStatus::Measured {
            attempt = Some(1);
        }
        Effective {
            set: chosen.and_then(|a| a.settings.clone()).unwrap_or_else(|| RunSettings::planned(plan, spec)),
            attempt,
            changes: chosen.map(|a| a.changes.clone()).unwrap_or_default(),
        }
    }
}

/// One model as the reports see it.
struct View<'a> {
    r: &'a ModelResult,
    /// The host it ran on, in a several-host cycle.
    host: Option<&'a str>,
    spec: Option<&'a ModelSpec>,
    verdict: Option<&'a FitVerdict>,
    all: Figures,
    settings: Option<Effective>,
}

impl View<'_> {
    fn measured(&self) -> bool {
        self.r.status == ModelStatus::Measured && !self.r.runs.is_empty()
    }

    /// Telemetry of a measured model.
    fn tel(&self) -> Option<&TelemetrySummary> {
        self.r.telemetry.as_ref().filter(|_| self.measured())
    }

    /// Whether the engine ran as a host process (no container, so no memory limit).
    fn host_process(&self) -> bool {
        self.spec.is_some_and(|s| s.runtime == Runtime::Process)
    }

    /// What the engine memory figure is: a container's working set or a process's RSS.
    fn mem_kind(&self) -> &'static str {
        if self.host_process() { "RSS" } else { "working set" }
    }

    /// Peak engine memory: the Writer's figure, else the sampler's peak.
    fn peak_ram(&self) -> Option<u64> {
        if !self.measured() {
            return None;
        }
        self.r.peak_ram_bytes.or_else(|| self.tel().and_then(|t| t.engine_mem_bytes).map(|m| m.peak.max(0.0) as u64))
    }

    /// Peak VRAM: the Writer's figure, else the sampler's peak of VRAM in use.
    fn peak_vram(&self) -> Option<u64> {
        if !self.measured() {
            return None;
        }
        self.r.peak_vram_bytes.or_else(|| self.tel().and_then(|t| t.vram_used_bytes).map(|m| m.peak.max(0.0) as u64))
    }

    /// Why the GPU figures are missing, when the sampler saw no GPU at all.
    fn no_gpu(&self, host_note: Option<&str>) -> Option<String> {
        let t = self.tel()?;
        if t.gpu_util_pct.is_some() || t.gpu_temp_c.is_some() || t.gpu_power_w.is_some() || t.vram_used_bytes.is_some()
        {
            return None;
        }
        let note = t
            .notes
            .iter()
            .map(String::as_str)
            .find(|n| {
                let l = n.to_ascii_lowercase();
                l.contains("gpu") || l.contains("nvml") || l.contains("nvidia")
            })
            .or(host_note);
        Some(match note {
            Some(n) if n.to_ascii_lowercase().starts_with("no nvidia gpu") => cell(n),
            Some(n) => format!("no NVIDIA GPU ({})", cell(n)),
            None => "no NVIDIA GPU was sampled".to_string(),
        })
    }

    fn name(&self) -> String {
        match self.host {
            Some(h) => format!("{} (host {})", cell(&self.r.model), cell(h)),
            None => cell(&self.r.model),
        }
    }

    /// Prompt ids in plan order, then any the plan does not list.
    fn prompt_ids(&self, plan: &Plan) -> Vec<String> {
        let mut ids: Vec<String> = plan.prompts.iter().map(|p| p.id.clone()).collect();
        for r in &self.r.runs {
            if !ids.contains(&r.prompt_id) {
                ids.push(r.prompt_id.clone());
            }
        }
        ids.retain(|id| self.r.runs.iter().any(|r| &r.prompt_id == id));
        ids
    }

    fn runs_of(&self, prompt: &str) -> Vec<&RunResult> {
        let mut v: Vec<&RunResult> = self.r.runs.iter().filter(|r| r.prompt_id == prompt).collect();
        v.sort_by_key(|r| r.repetition);
        v
    }
}

/// Verdict of one success criterion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Pass,
    Fail,
    NotMeasured,
    /// The threshold does not apply (e.g. a memory limit where none is in force).
    NotApplicable,
}

impl Verdict {
    fn word(self) -> &'static str {
        match self {
            Verdict::Pass => "**PASS**",
            Verdict::Fail => "**FAIL**",
            Verdict::NotMeasured => "NOT MEASURED",
            Verdict::NotApplicable => "N/A",
        }
    }
}

/// One row of the success-criteria table; text fields are markdown already.
struct Criterion {
    what: String,
    threshold: String,
    measured: String,
    verdict: Verdict,
}

/// One model's telemetry series, read from the sampler's CSV (`t_s,samples,<metric>,…`).
///
/// The rows stay slices of the input text and are split into cells when read: an hour at 1 Hz
/// for 20 models is 2 million cells, which as owned strings took over 100 MiB to render.
#[derive(Debug, Clone, Default, PartialEq)]
struct Series<'a> {
    columns: Vec<&'a str>,
    rows: Vec<&'a str>,
}

impl<'a> Series<'a> {
    /// Reads the CSV; None when it has no header or no `t_s` column.
    fn parse(text: &'a str) -> Option<Series<'a>> {
        let mut lines = text.lines().map(|l| l.trim_end_matches('\r'));
        let columns: Vec<&str> = lines.next()?.split(',').map(str::trim).collect();
        if !columns.contains(&"t_s") {
            return None;
        }
        let rows = lines.filter(|l| !l.trim().is_empty()).collect();
        Some(Series { columns, rows })
    }

    /// The cells of one row, trimmed.
    fn cells(row: &'a str) -> impl Iterator<Item = &'a str> {
        row.split(',').map(str::trim)
    }

    /// `(t_s, column × scale)` for every row where both are numbers.
    fn points(&self, column: &str, scale: f64) -> Vec<(f64, f64)> {
        let (Some(t), Some(c)) =
            (self.columns.iter().position(|x| *x == "t_s"), self.columns.iter().position(|x| *x == column))
        else {
            return Vec::new();
        };
        self.rows
            .iter()
            .filter_map(|r| {
                let x: f64 = Self::cells(r).nth(t)?.parse().ok()?;
                let y: f64 = Self::cells(r).nth(c)?.parse().ok()?;
                (x.is_finite() && y.is_finite()).then_some((x, y * scale))
            })
            .collect()
    }
}

/// A chart over time: file, series column, title, y-axis unit and scale.
const TIME_CHARTS: &[(&str, &str, &str, &str, f64)] = &[
    (
        "charts/engine-memory.svg",
        "engine_mem_bytes",
        "Engine memory over time (container working set or process RSS)",
        "GiB",
        1.0 / GIB,
    ),
    ("charts/host-memory.svg", "host_mem_available_bytes", "Host memory available over time", "GiB", 1.0 / GIB),
    ("charts/gpu-temperature.svg", "gpu_temp_c", "GPU temperature over time (hottest GPU)", "°C", 1.0),
    ("charts/gpu-power.svg", "gpu_power_w", "GPU power over time (all GPUs)", "W", 1.0),
];

/// A rendered chart over time.
struct TimeChart {
    path: &'static str,
    title: &'static str,
    svg: String,
}

/// The charts over time that have data, in [`TIME_CHARTS`] order.
fn time_charts(series: &[(String, Series)]) -> Vec<TimeChart> {
    TIME_CHARTS
        .iter()
        .filter_map(|&(path, column, title, unit, scale)| {
            let lines: Vec<(String, Vec<(f64, f64)>)> = series
                .iter()
                .map(|(model, s)| (model.clone(), s.points(column, scale)))
                .filter(|(_, p)| !p.is_empty())
                .collect();
            (!lines.is_empty()).then(|| TimeChart {
                path,
                title,
                svg: charts::line_chart_with_axes(title, "seconds into the model's measured runs", unit, &lines),
            })
        })
        .collect()
}

/// Everything the pages share.
struct Ctx<'a> {
    input: &'a ReportInput,
    plan: &'a Plan,
    views: Vec<View<'a>>,
    escalations: Vec<&'a EscalationRecord>,
    criteria: Vec<Criterion>,
    /// Telemetry series of the measured models, in plan order.
    series: Vec<(String, Series<'a>)>,
    time_charts: Vec<TimeChart>,
}

impl<'a> Ctx<'a> {
    fn new(input: &'a ReportInput) -> Self {
        let ver = &input.results.verification;
        let plan = &ver.plan;
        let cv = plan.defaults.cv_flag;
        let mut models: Vec<&ModelResult> = input.results.models.iter().collect();
        models.sort_by_key(|m| m.index);
        let views: Vec<View> = models
            .into_iter()
            .map(|r| {
                let spec = plan.models.iter().find(|s| s.name == r.model);
                let runs: Vec<&RunResult> = r.runs.iter().collect();
                View {
                    r,
                    host: ver.placement.as_ref().and_then(|p| p.host_of(r.index as usize)),
                    spec,
                    verdict: ver.verdicts.iter().find(|v| v.model == r.model),
                    all: Figures::of(&runs, cv),
                    settings: spec.map(|s| Effective::of(plan, s, r)),
                }
            })
            .collect();
        let mut escalations: Vec<&EscalationRecord> = input.troubleshooting.iter().collect();
        escalations.sort_by(|a, b| (&a.opened_at, &a.id).cmp(&(&b.opened_at, &b.id)));
        escalations.dedup_by(|a, b| a.id == b.id);
        let series: Vec<(String, Series<'a>)> = views
            .iter()
            .filter(|v| v.measured())
            .filter_map(|v| {
                let text = input.telemetry_series.get(&v.r.model)?;
                Some((v.r.model.clone(), Series::parse(text)?))
            })
            .collect();
        let time_charts = time_charts(&series);
        let mut ctx = Ctx { input, plan, views, escalations, criteria: Vec::new(), series, time_charts };
        ctx.criteria = criteria(&ctx);
        ctx
    }

    fn measured(&self) -> impl Iterator<Item = &View<'a>> {
        self.views.iter().filter(|v| v.measured())
    }

    fn cycle(&self) -> String {
        inline(&self.input.cycle)
    }

    /// Whether the cycle ran on several hosts (then results name their host).
    fn several_hosts(&self) -> bool {
        !self.input.results.hosts.is_empty()
    }
}

// ---------------------------------------------------------------------------------------------
// Formatting

/// A figure with as many decimals as its size deserves.
fn num(v: f64) -> String {
    if !v.is_finite() {
        return DASH.to_string();
    }
    format!("{v:.*}", decimals(v))
}

/// Decimals a figure of this size deserves: three significant digits, at most two decimals.
fn decimals(v: f64) -> usize {
    let a = v.abs();
    if a >= 100.0 {
        0
    } else if a >= 10.0 {
        1
    } else {
        2
    }
}

/// A setting or plan input: whole numbers without decimals, others like [`num`].
fn plain(v: f64) -> String {
    if v.is_finite() && (v - v.round()).abs() < 1e-9 { format!("{v:.0}") } else { num(v) }
}

/// A count averaged over repetitions: whole numbers as they are, else one decimal.
fn count(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 { format!("{v:.0}") } else { format!("{v:.1}") }
}

/// A share from 0 to 1 as a whole percentage.
fn percent(v: f64) -> String {
    format!("{:.0} %", v * 100.0)
}

/// Dollars: cents below $100, whole dollars with thousands separators above.
fn usd(v: f64) -> String {
    if !v.is_finite() {
        return DASH.to_string();
    }
    if v.abs() >= 100.0 {
        let whole = format!("{:.0}", v.abs());
        let mut grouped = String::new();
        for (i, c) in whole.chars().enumerate() {
            if i > 0 && (whole.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(c);
        }
        format!("{}${grouped}", if v < 0.0 { "-" } else { "" })
    } else if v.abs() >= 0.1 {
        format!("${v:.2}")
    } else {
        format!("${v:.4}")
    }
}

fn opt_num(v: Option<f64>) -> String {
    v.map(num).unwrap_or_else(|| DASH.to_string())
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / GIB
}

fn opt_gib(bytes: Option<u64>) -> String {
    bytes.map(|b| num(gib(b))).unwrap_or_else(|| DASH.to_string())
}

/// `mean ± sd`, scaled; `⚠` marks a spread above the plan's flag.
fn stat_text(s: Option<&Stat>, scale: f64) -> String {
    match s {
        None => DASH.to_string(),
        Some(s) if s.n <= 1 => num(s.mean * scale),
        Some(s) => {
            let flag = if s.unstable { " ⚠" } else { "" };
            let d = decimals(s.mean * scale);
            format!("{:.d$} ± {:.d$}{flag}", s.mean * scale, s.stddev * scale)
        }
    }
}

fn bounds(b: Option<&Bounds>) -> String {
    b.map(|b| b.to_string()).unwrap_or_else(|| DASH.to_string())
}

/// Where a measured value falls against projected bounds.
fn against(b: Option<&Bounds>, v: Option<f64>) -> &'static str {
    match (b, v) {
        (None, _) => "no projection",
        (Some(_), None) => "not measured",
        (Some(b), Some(v)) if b.contains(v) => "within",
        (Some(b), Some(v)) if b.min.is_some_and(|m| v < m) => "below",
        (Some(_), Some(_)) => "above",
    }
}

fn outcome(v: &View) -> String {
    match &v.r.status {
        ModelStatus::Measured => match v.settings.as_ref().and_then(|s| s.attempt) {
            Some(n) if n > 1 => format!("measured (attempt {n})"),
            _ => "measured".to_string(),
        },
        ModelStatus::Failed { reason } => format!("failed: {}", cell_short(reason, 90)),
        ModelStatus::Skipped { reason } => format!("skipped: {}", cell_short(reason, 90)),
    }
}

/// A verdict in words, as the reports write it.
pub(crate) fn fit_word(f: Fit) -> &'static str {
    match f {
        Fit::Go => "go",
        Fit::GoPartialOffload => "go, partial offload",
        Fit::NoGo => "no-go",
        Fit::Unknown => "unknown",
    }
}

fn check_word(s: CheckStatus) -> &'static str {
    match s {
        CheckStatus::Pass => "PASS",
        CheckStatus::Warn => "WARN",
        CheckStatus::Fail => "**FAIL**",
        CheckStatus::Unavailable => "unavailable",
    }
}

fn action_text(a: &RemedyAction) -> String {
    match a {
        RemedyAction::Retry { set } if set.is_empty() => "retry unchanged".to_string(),
        RemedyAction::Retry { set } => {
            format!("retry with {}", set.iter().map(|c| cell(&c.to_string())).collect::<Vec<_>>().join(", "))
        }
        RemedyAction::CoolDown { seconds } => format!("cool down for {seconds} s, then retry"),
        RemedyAction::Skip => "skip the model".to_string(),
        RemedyAction::Abort => "abort the cycle".to_string(),
    }
}

fn class_words(c: FailureClass) -> &'static str {
    match c {
        FailureClass::EngineUnhealthy => "engine never became healthy",
        FailureClass::EngineExited => "engine exited",
        FailureClass::OomKilled => "killed by the OOM killer",
        FailureClass::GpuOutOfMemory => "GPU out of memory",
        FailureClass::ModelNotFound => "model not found",
        FailureClass::RequestFailed => "request failed",
        FailureClass::ContextOverflow => "prompt exceeded the context",
        FailureClass::Thermal => "GPU too hot",
        FailureClass::HostCheck => "host check failed",
        FailureClass::Other => "other failure",
    }
}

fn nav(current: &str) -> String {
    let links: Vec<String> = PAGES
        .iter()
        .map(|(path, title)| if *path == current { format!("**{title}**") } else { format!("[{title}]({path})") })
        .collect();
    format!("{}\n\n", links.join(" · "))
}

// ---------------------------------------------------------------------------------------------
// Success criteria

/// The finding on a GPU figure of a model's telemetry: `judge` when it was sampled, else why not.
fn gpu_figure(
    v: &View,
    host_note: Option<&str>,
    figure: Option<MetricSummary>,
    missing: &str,
    judge: impl FnOnce(&TelemetrySummary, MetricSummary) -> (String, Verdict),
) -> (String, Verdict) {
    match (v.tel(), figure) {
        _ if !v.measured() => (outcome(v), Verdict::NotMeasured),
        (Some(t), Some(m)) => judge(t, m),
        (Some(_), None) => {
            (format!("not measured: {}", v.no_gpu(host_note).unwrap_or_else(|| missing.into())), Verdict::NotMeasured)
        }
        (None, _) => ("no telemetry was recorded during the runs".into(), Verdict::NotMeasured),
    }
}

fn criteria(ctx: &Ctx) -> Vec<Criterion> {
    let c = &ctx.plan.criteria;
    let mut out = Vec::new();
    if let Some(min) = c.min_decode_tps {
        for v in &ctx.views {
            let (measured, verdict) = match v.all.decode() {
                Some((tps, src)) => {
                    (format!("{} tok/s ({src})", num(tps)), if tps >= min { Verdict::Pass } else { Verdict::Fail })
                }
                None => (outcome(v), Verdict::NotMeasured),
            };
            out.push(Criterion {
                what: format!("Decode speed — {}", v.name()),
                threshold: format!("≥ {} tok/s", plain(min)),
                measured,
                verdict,
            });
        }
    }
    let host_note = ctx.input.results.verification.host.gpu_note.as_deref();
    if c.memory_within_limits == Some(true) {
        for v in &ctx.views {
            let oom: Vec<u32> = ctx
                .escalations
                .iter()
                .filter(|e| e.model == v.r.model && e.class == FailureClass::OomKilled)
                .map(|e| e.attempt)
                .collect();
            let note = if oom.is_empty() {
                String::new()
            } else {
                format!(
                    "; attempt {} was OOM-killed first",
                    oom.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
                )
            };
            // The sampler's peak and the limit it saw in force; the Writer's peak and the
            // planned limit when there is no telemetry.
            let sampled = v.tel().and_then(|t| t.engine_mem_bytes);
            let peak = sampled.map(|m| m.peak).or(v.peak_ram().map(|b| b as f64));
            let limit = if v.host_process() {
                None
            } else {
                v.tel()
                    .and_then(|t| t.engine_mem_limit)
                    .map(gib)
                    .or(v.settings.as_ref().and_then(|s| s.set.memory_limit_gb))
            };
            let what = if sampled.is_some() { format!("peak {} (sampled)", v.mem_kind()) } else { "peak".to_string() };
            let (measured, verdict) = match (peak, limit) {
                _ if !v.measured() => (outcome(v), Verdict::NotMeasured),
                (Some(p), Some(l)) => (
                    format!("{what} {} GiB of {} GiB{note}", num(p / GIB), plain(l)),
                    if p / GIB <= l { Verdict::Pass } else { Verdict::Fail },
                ),
                (Some(p), None) if v.host_process() => (
                    format!("{what} {} GiB; a host process runs under no container limit{note}", num(p / GIB)),
                    Verdict::NotApplicable,
                ),
                (Some(p), None) => {
                    (format!("{what} {} GiB; no limit was set{note}", num(p / GIB)), Verdict::NotApplicable)
                }
                (None, _) => (format!("no memory peak was recorded{note}"), Verdict::NotMeasured),
            };
            out.push(Criterion {
                what: format!("Memory within the container limit — {}", v.name()),
                threshold: match limit {
                    Some(l) => format!("≤ {} GiB", plain(l)),
                    None if v.host_process() => "no limit (host process)".into(),
                    None => "the limit in force".into(),
                },
                measured,
                verdict,
            });
        }
    }
    if let Some(min) = c.min_gpu_util_pct {
        for v in &ctx.views {
            let util = v.tel().and_then(|t| t.gpu_util_pct);
            let (measured, verdict) = gpu_figure(v, host_note, util, "the GPU reported no utilisation", |_, u| {
                (
                    format!(
                        "mean {} % over the measured runs (peak {} %, {} samples)",
                        num(u.mean),
                        num(u.peak),
                        u.samples
                    ),
                    if u.mean >= min { Verdict::Pass } else { Verdict::Fail },
                )
            });
            out.push(Criterion {
                what: format!("GPU utilisation while generating — {}", v.name()),
                threshold: format!("≥ {} % (mean)", plain(min)),
                measured,
                verdict,
            });
        }
    }
    if let Some(max) = c.max_temp_c {
        for v in &ctx.views {
            let temp = v.tel().and_then(|t| t.gpu_temp_c);
            let (measured, verdict) = gpu_figure(v, host_note, temp, "the GPU reported no temperature", |t, temp| {
                (
                    format!("peak {} °C, mean {} °C; {}", num(temp.peak), num(temp.mean), pauses_text(t)),
                    if temp.peak <= max { Verdict::Pass } else { Verdict::Fail },
                )
            });
            out.push(Criterion {
                what: format!("Sustained GPU temperature — {}", v.name()),
                threshold: format!("≤ {} °C (peak)", plain(max)),
                measured,
                verdict,
            });
        }
    }
    if let Some(max) = c.max_idle_temp_c {
        let host = &ctx.input.results.verification.host;
        let temps: Vec<u32> = host.gpus.iter().filter_map(|g| g.temperature_c).collect();
        let (measured, verdict) = match temps.iter().max() {
            Some(&t) => (
                format!("{t} °C at host verification, before any model was loaded"),
                if f64::from(t) <= max { Verdict::Pass } else { Verdict::Fail },
            ),
            None => (
                host.gpu_note.as_deref().map(cell).unwrap_or_else(|| "no GPU temperature was reported".into()),
                Verdict::NotMeasured,
            ),
        };
        out.push(Criterion {
            what: "Idle GPU temperature".into(),
            threshold: format!("≤ {} °C", plain(max)),
            measured,
            verdict,
        });
    }
    out
}

/// The thermal guard's pauses in words: "no thermal pause", or how many and how long.
fn pauses_text(t: &TelemetrySummary) -> String {
    let p = &t.thermal_pauses;
    if p.is_empty() {
        return "no thermal pause".into();
    }
    let waited: f64 = p.iter().map(|x| x.waited_s).sum();
    let unrecovered = p.iter().filter(|x| !x.recovered).count();
    format!(
        "{} thermal pause{} ({} s in all{})",
        p.len(),
        if p.len() == 1 { "" } else { "s" },
        plain(waited.round()),
        if unrecovered > 0 {
            format!(", {unrecovered} without cooling to the resume threshold")
        } else {
            String::new()
        }
    )
}

fn criteria_table(ctx: &Ctx) -> String {
    let rows: Vec<Vec<String>> = ctx
        .criteria
        .iter()
        .map(|c| vec![c.what.clone(), c.threshold.clone(), c.measured.clone(), c.verdict.word().to_string()])
        .collect();
    let mut s = table(&["Criterion", "Threshold", "Measured", "Verdict"], &[], &rows);
    if let Some(t) = ctx.plan.criteria.resume_temp_c {
        let _ =
            write!(s, "\nA paused run resumes when the GPU cools to {} °C (a setting, not a criterion).\n", plain(t));
    }
    s
}

// ---------------------------------------------------------------------------------------------
// README.md

fn readme(ctx: &Ctx) -> String {
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
        s.push_str(&criteria_table(ctx));
    }
    let _ = writeln!(
        s,
        "\n## Claims\n\n{} See the [claims ledger]({}).",
        ledger::summary(&ledger::entries(ctx)),
        ledger::PATH
    );
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
fn chart_short_name(path: &str) -> String {
    path.trim_start_matches("charts/").trim_end_matches(".svg").replace('-', " ").replace("gpu", "GPU")
}

fn short_hash(h: &str) -> &str {
    h.get(..12).unwrap_or(h)
}

// ---------------------------------------------------------------------------------------------
// benchmark-report.md

/// The plan's concurrent phase: levels against one model, and models deployed together.
fn concurrent_section(ctx: &Ctx) -> String {
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

fn benchmark_report(ctx: &Ctx) -> String {
    let plan = ctx.plan;
    let ver = &ctx.input.results.verification;
    let mut s = String::new();
    let _ = writeln!(s, "# Benchmark report — {} (cycle {})\n", inline(&plan.name), ctx.cycle());
    s.push_str(&nav("benchmark-report.md"));
    if plan.defaults.pull_ahead {
        s.push_str("> **Pull-ahead was on** (`defaults.pull_ahead = true`): while each model was measured, the next Ollama model was downloaded through the same engine. The download competed with the measurement for network, disk and CPU, so these figures are **not clean measurements**; rerun with pull-ahead off to compare models fairly.\n\n");
    }

    s.push_str("## Performance validation matrix\n\n");
    s.push_str("Measured figures per model. Response time is client-side end-to-end latency per request; decode and TTFT are defined [below](#metric-definitions). \"—\" means not measured. GiB are 2³⁰ bytes; the plan's \"GB\" are read the same way, as Docker reads memory limits. Peak RAM and VRAM are the Writer's peaks; where it recorded none, the telemetry sampler's peak is shown (see [Telemetry](#telemetry)).\n\n");
    let rows: Vec<Vec<String>> = ctx
        .views
        .iter()
        .map(|v| {
            vec![
                v.name(),
                outcome(v),
                v.spec.and_then(|m| m.params_b).map(|p| format!("{} B", num(p))).unwrap_or_else(|| DASH.into()),
                opt_gib(v.peak_ram()),
                opt_gib(v.peak_vram()),
                if v.measured() {
                    v.r.manifest.gpu_layers.as_deref().map(cell).unwrap_or_else(|| DASH.into())
                } else {
                    DASH.into()
                },
                opt_num(v.all.e2e_ms.map(|s| s.mean / 1000.0)),
                opt_num(v.all.words.map(|s| s.mean)),
                opt_num(v.all.client_tps.map(|s| s.mean)),
                opt_num(v.all.prefill_tps.map(|s| s.mean)),
                opt_num(v.all.ttft_ms.map(|s| s.mean)),
            ]
        })
        .collect();
    let mut align = vec![Align::Left, Align::Left];
    align.extend([Align::Right; 9]);
    let mut rows = rows;
    let mut headers = vec![
        "Model",
        "Outcome",
        "Params",
        "Peak RAM GiB",
        "Peak VRAM GiB",
        "GPU layers",
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
    for v in &ctx.views {
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
            continue;
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

    s.push_str("\n## Charts\n\n");
    let _ = writeln!(s, "![Decode tokens/s by model (client-side mean)]({DECODE_CHART})\n");
    let _ = writeln!(s, "![Time to first token by model (client-side mean, ms)]({TTFT_CHART})");
    if !ctx.time_charts.is_empty() {
        s.push_str("\nOver time, from the telemetry sampler: each point is the mean of the samples in its interval, and each model's line starts when its measured runs began.\n");
        for c in &ctx.time_charts {
            let _ = writeln!(s, "\n![{}]({})", c.title, c.path);
        }
    }

    s.push_str(&telemetry_section(ctx));

    s.push_str("\n## Per-prompt detail\n\n");
    let _ = writeln!(
        s,
        "Mean ± sample standard deviation over the measured repetitions (warm-up excluded). ⚠ marks a figure whose coefficient of variation is above the plan's flag of {} %: treat it with care.",
        plain(plan.defaults.cv_flag * 100.0)
    );
    for v in ctx.measured() {
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
        let mut align = vec![Align::Left];
        align.extend([Align::Right; 9]);
        s.push_str(&table(
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
            &align,
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

    s.push_str(&concurrent_section(ctx));
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

    s.push_str("\n## Host verification\n\n");
    if ctx.several_hosts() {
        s.push_str(&crate::merge::hosts_section(&ctx.input.results));
    } else {
        s.push_str(&host_facts(ctx));
        s.push('\n');
        s.push_str(&checks_table(&ver.checks));
    }
    if ctx.several_hosts() {
        s.push_str(&crate::merge::placement_section(&ctx.input.results));
    }

    s.push_str("\n## Fit verdicts\n\n");
    s.push_str("The Reader's prediction before any model ran: weights + KV cache + compute graph against the VRAM and RAM it measured.\n\n");
    let rows: Vec<Vec<String>> = ver
        .verdicts
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

    s.push_str(&roofline_section(ctx));

    s.push_str("\n## Success criteria\n\n");
    if ctx.criteria.is_empty() {
        s.push_str("The plan sets no success criteria.\n");
    } else {
        s.push_str(&criteria_table(ctx));
    }

    s.push_str("\n## Reproducibility manifest\n\n");
    s.push_str("What is needed to repeat each measurement.\n");
    for v in ctx.measured() {
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
    if ctx.measured().next().is_none() {
        s.push_str("\nNo model was measured.\n");
    }
    s
}

/// One measured model against the decode speed memory bandwidth allows.
struct Roofline {
    weights: Option<u64>,
    /// Share of the weights in VRAM, and whether it was the engine's report or the prediction.
    gpu_share: Option<(f64, &'static str)>,
    roof_tps: Option<f64>,
    measured: Option<(f64, &'static str)>,
    note: Option<&'static str>,
}

impl Roofline {
    fn of(v: &View, gpu_bw: Option<f64>, ram_bw: Option<f64>, has_gpu: bool) -> Self {
        let weights = v.verdict.and_then(|f| f.weights_bytes).filter(|w| *w > 0);
        let gpu_share =
            v.r.manifest.gpu_weight_share.filter(|x| (0.0..=1.0).contains(x)).map(|x| (x, "engine")).or_else(|| {
                if !has_gpu {
                    Some((0.0, "no GPU"))
                } else {
                    v.verdict.and_then(FitVerdict::predicted_gpu_share).map(|x| (x, "predicted"))
                }
            });
        // The engine's own decode timing is the closest to the memory-bound rate; the client's
        // figure includes streaming overhead.
        let measured = v
            .all
            .engine_tps
            .map(|s| (s.mean, "engine"))
            .or_else(|| v.all.client_tps.map(|s| (s.mean, "client")))
            .filter(|(t, _)| *t > 0.0);
        let mut r = Roofline { weights, gpu_share, roof_tps: None, measured, note: None };
        let (Some(w), Some((share, _))) = (weights, gpu_share) else {
            r.note = Some(if weights.is_none() { "weight size unknown" } else { "GPU/CPU split unknown" });
            return r;
        };
        let (on_gpu, in_ram) = protocol::results::weights_split(w, share);
        r.roof_tps = protocol::results::roofline_decode_tps(on_gpu, in_ram, gpu_bw, ram_bw);
        if r.roof_tps.is_none() {
            r.note = Some(if on_gpu > 0 && gpu_bw.is_none() {
                "GPU bandwidth unknown"
            } else {
                "RAM bandwidth not measured"
            });
        }
        r
    }

    fn efficiency(&self) -> Option<f64> {
        Some(self.measured?.0 / self.roof_tps?)
    }
}

/// The decode roofline: measured decode beside what memory bandwidth allows.
fn roofline_section(ctx: &Ctx) -> String {
    let mut s = String::from("\n## Decode roofline\n\n");
    s.push_str("Generating one token reads every weight once, so decode cannot be faster than 1 ÷ (weights in VRAM ÷ GPU bandwidth + weights in RAM ÷ RAM bandwidth). The KV cache read per token is left out, so at long contexts the real limit is lower still. Efficiency is the measured decode over that limit; the engine's own decode timing is used where it reports one.\n\n");
    // Every host the cycle ran on (one, or each of several).
    let hosts: Vec<&HostFacts> = if ctx.several_hosts() {
        ctx.input.results.hosts.iter().map(|h| &h.host).collect()
    } else {
        vec![&ctx.input.results.verification.host]
    };
    for host in &hosts {
        if ctx.several_hosts() {
            let _ = writeln!(s, "- Host {}:", inline(&host.host_id));
        }
        let pre = if ctx.several_hosts() { "  - " } else { "- " };
        let (gpu_bw, ram_bw) = host.bandwidths();
        match host.gpus.iter().find(|g| g.memory_bandwidth_gbs.is_some()) {
            Some(g) => {
                let _ = writeln!(
                    s,
                    "{pre}GPU bandwidth: {} GB/s ({}, from NVML: memory bus width × maximum memory clock × 2)",
                    num(gpu_bw.unwrap_or(f64::NAN)),
                    inline(&g.name)
                );
            }
            None if host.gpus.is_empty() => {
                let _ = writeln!(s, "{pre}GPU bandwidth: no GPU on this host; every weight is read from RAM");
            }
            None => {
                let _ = writeln!(s, "{pre}GPU bandwidth: unknown (NVML did not report the memory bus width and clock)");
            }
        }
        match ram_bw {
            Some(b) => {
                let _ = writeln!(
                    s,
                    "{pre}RAM bandwidth: {} GB/s ({})",
                    num(b),
                    inline(host.ram_bandwidth_source.as_deref().unwrap_or("source not recorded"))
                );
            }
            None => {
                let _ = writeln!(s, "{pre}RAM bandwidth: not measured");
            }
        }
    }
    s.push('\n');
    let rows: Vec<Vec<String>> = ctx
        .measured()
        .map(|v| {
            let host = hosts.iter().find(|h| v.host.is_some_and(|id| id == h.host_id)).unwrap_or(&hosts[0]);
            let (gpu_bw, ram_bw) = host.bandwidths();
            let r = Roofline::of(v, gpu_bw, ram_bw, !host.gpus.is_empty());
            vec![
                v.name(),
                opt_gib(r.weights),
                r.gpu_share.map(|(x, src)| format!("{} ({src})", percent(x))).unwrap_or_else(|| DASH.into()),
                opt_num(r.roof_tps),
                r.measured.map(|(t, src)| format!("{} ({src})", num(t))).unwrap_or_else(|| DASH.into()),
                r.efficiency().map(percent).unwrap_or_else(|| DASH.into()),
                match r.efficiency() {
                    Some(e) if e > 1.05 => "faster than the roofline: check the split and bandwidth figures".into(),
                    _ => r.note.unwrap_or("").to_string(),
                },
            ]
        })
        .collect();
    if rows.is_empty() {
        s.push_str("No model was measured.\n");
    } else {
        let mut align = vec![Align::Left];
        align.extend([Align::Right; 5]);
        align.push(Align::Left);
        s.push_str(&table(
            &["Model", "Weights GiB", "In VRAM", "Roofline tok/s", "Measured tok/s", "Efficiency", "Note"],
            &align,
            &rows,
        ));
    }
    s
}

/// A row of the telemetry table: figure, peak, mean, lowest, samples.
fn metric_row(what: &str, m: Option<MetricSummary>, scale: f64) -> Option<Vec<String>> {
    let m = m?;
    Some(vec![what.to_string(), num(m.peak * scale), num(m.mean * scale), num(m.min * scale), m.samples.to_string()])
}

/// Seconds as `1 h 2 min`, `3 min 4 s` or `5.6 s`.
fn duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return DASH.into();
    }
    let whole = secs.round() as u64;
    if whole >= 3600 {
        format!("{} h {} min", whole / 3600, whole % 3600 / 60)
    } else if whole >= 60 {
        format!("{} min {} s", whole / 60, whole % 60)
    } else {
        format!("{} s", num(secs))
    }
}

fn telemetry_section(ctx: &Ctx) -> String {
    let mut s = String::from("\n## Telemetry\n\n");
    s.push_str("What the sampler saw while each model answered its measured prompts (warm-up excluded): peak, mean and lowest of every figure it could read. GPU figures come from NVML (temperature of the hottest GPU, power and VRAM summed over GPUs); engine memory is the container's working set (usage less page cache) or the process's RSS.\n");
    let host_note = ctx.input.results.verification.host.gpu_note.as_deref();
    let mut any = false;
    for v in ctx.measured() {
        any = true;
        let _ = writeln!(s, "\n### {}\n", v.name());
        let Some(t) = v.tel() else {
            s.push_str("No telemetry was recorded for this model.\n");
            continue;
        };
        let _ = writeln!(
            s,
            "{} samples, {} a second, over {} of measured runs.\n",
            t.samples,
            plain(t.sample_hz),
            duration(t.duration_s)
        );
        let mem = format!("Engine memory ({}), GiB", v.mem_kind());
        let rows: Vec<Vec<String>> = [
            metric_row("GPU utilisation, %", t.gpu_util_pct, 1.0),
            metric_row("GPU temperature, °C", t.gpu_temp_c, 1.0),
            metric_row("GPU power, W", t.gpu_power_w, 1.0),
            metric_row("VRAM used, GiB", t.vram_used_bytes, 1.0 / GIB),
            metric_row("SM clock, MHz", t.sm_clock_mhz, 1.0),
            metric_row(&mem, t.engine_mem_bytes, 1.0 / GIB),
            metric_row("Engine page cache, GiB", t.engine_cache_bytes, 1.0 / GIB),
            metric_row("Engine CPU, % of one core", t.engine_cpu_pct, 1.0),
            metric_row("Host memory available, GiB", t.host_mem_available_bytes, 1.0 / GIB),
            metric_row("Host swap used, GiB", t.host_swap_used_bytes, 1.0 / GIB),
        ]
        .into_iter()
        .flatten()
        .collect();
        if rows.is_empty() {
            s.push_str("The sampler recorded no figures.\n");
        } else {
            let mut align = vec![Align::Left];
            align.extend([Align::Right; 4]);
            s.push_str(&table(&["Figure", "Peak", "Mean", "Lowest", "Samples"], &align, &rows));
            s.push('\n');
        }
        let no_gpu = v.no_gpu(host_note);
        if let Some(why) = &no_gpu {
            let _ = writeln!(s, "- GPU figures: not measured: {why}.");
        }
        let _ = writeln!(
            s,
            "- Engine memory limit: {}.",
            match t.engine_mem_limit {
                Some(l) => format!("{} GiB", plain(gib(l))),
                None if v.host_process() => "none (a host process)".into(),
                None => "none in force".into(),
            }
        );
        let source = t.energy_source.as_deref().map(|src| format!(", from the {}", cell(src))).unwrap_or_default();
        match (t.gpu_energy_j, t.joules_per_token) {
            (Some(j), Some(jpt)) => {
                let _ = writeln!(
                    s,
                    "- GPU energy: {} kJ ({} Wh){source}; {} J per generated token.",
                    num(j / 1000.0),
                    num(j / 3600.0),
                    num(jpt)
                );
            }
            (Some(j), None) => {
                let _ = writeln!(s, "- GPU energy: {} kJ ({} Wh){source}.", num(j / 1000.0), num(j / 3600.0));
            }
            (None, Some(jpt)) => {
                let _ = writeln!(s, "- Energy: {} J per generated token{source}.", num(jpt));
            }
            (None, None) => s.push_str("- GPU energy: not measured.\n"),
        }
        if t.throttle_reasons.is_empty() {
            if t.gpu_util_pct.is_some() || t.gpu_temp_c.is_some() {
                s.push_str("- Throttling: none reported.\n");
            }
        } else {
            let _ = writeln!(
                s,
                "- Throttle reasons seen at least once: {}.",
                t.throttle_reasons.iter().map(|r| format!("`{}`", r.replace('`', "'"))).collect::<Vec<_>>().join(", ")
            );
        }
        if t.thermal_pauses.is_empty() {
            if t.gpu_temp_c.is_some() {
                s.push_str("- Thermal pauses: none.\n");
            }
        } else {
            let _ = writeln!(s, "- Thermal pauses: {}:", pauses_text(t));
            for p in &t.thermal_pauses {
                let _ = writeln!(
                    s,
                    "  - at {} s, {} °C: waited {} s, {}",
                    plain(p.at_s.round()),
                    num(p.temp_c),
                    plain(p.waited_s.round()),
                    if p.recovered {
                        "then cooled to the resume threshold"
                    } else {
                        "**did not cool** to the resume threshold"
                    }
                );
            }
        }
        for n in &t.notes {
            if no_gpu.as_deref().is_some_and(|w| w.contains(&cell(n))) {
                continue;
            }
            let _ = writeln!(s, "- Note: {}", inline(n));
        }
        if ctx.series.iter().any(|(m, _)| m == &v.r.model) {
            let _ = writeln!(
                s,
                "- The sampled series is in [telemetry.csv]({TELEMETRY_CSV}) (rows where `model` is {}).",
                inline(&v.r.model)
            );
        }
    }
    if !any {
        s.push_str("\nNo model was measured.\n");
    }
    s
}

/// The checks of one host as a table.
pub(crate) fn checks_table(checks: &[Check]) -> String {
    let mut s = String::new();
    let rows: Vec<Vec<String>> = checks
        .iter()
        .map(|c| {
            vec![
                cell(&c.name),
                check_word(c.status).into(),
                cell(&c.measured),
                c.threshold.as_deref().map(cell).unwrap_or_else(|| DASH.into()),
                cell(&c.detail),
            ]
        })
        .collect();
    if rows.is_empty() {
        s.push_str("No host checks were recorded.\n");
    } else {
        s.push_str(&table(&["Check", "Status", "Measured", "Threshold", "Detail"], &[], &rows));
    }
    s
}

fn host_facts(ctx: &Ctx) -> String {
    host_facts_table(&ctx.input.results.verification.host)
}

/// One host's measured facts as a table.
pub(crate) fn host_facts_table(h: &HostFacts) -> String {
    let mut rows = vec![
        vec!["Host".into(), format!("{} (id {})", cell(&h.hostname), cell(&h.host_id))],
        vec!["Kernel".into(), cell(&h.kernel)],
        vec!["CPU".into(), format!("{}, {} logical CPUs", cell(&h.cpu_model), h.cpus)],
        vec![
            "RAM".into(),
            format!("{} GiB total, {} GiB available", plain(gib(h.ram_total)), num(gib(h.ram_available))),
        ],
        vec!["Swap".into(), format!("{} GiB total, {} GiB free", plain(gib(h.swap_total)), plain(gib(h.swap_free)))],
        vec![
            "Memory limit of the agent's cgroup".into(),
            h.cgroup_memory_limit.map(|b| format!("{} GiB", num(gib(b)))).unwrap_or_else(|| "none".into()),
        ],
        vec!["Model store".into(), format!("{} ({} GiB free)", cell(&h.model_store), num(gib(h.disk_free)))],
    ];
    for g in &h.gpus {
        rows.push(vec![
            format!("GPU {}", g.index),
            format!(
                "{}: {} GiB VRAM, {} GiB in use, {}, {}, driver {}",
                cell(&g.name),
                plain(gib(g.vram_total)),
                num(gib(g.vram_used)),
                g.temperature_c.map(|t| format!("{t} °C")).unwrap_or_else(|| "temperature unknown".into()),
                g.power_w.map(|p| format!("{} W", num(p))).unwrap_or_else(|| "power unknown".into()),
                cell(&g.driver)
            ),
        ]);
    }
    if let Some(n) = &h.gpu_note {
        rows.push(vec!["GPU note".into(), cell(n)]);
    }
    rows.push(vec![
        "Docker".into(),
        match &h.docker_version {
            Some(v) => format!(
                "{}, runtimes: {}",
                cell(v),
                if h.docker_runtimes.is_empty() { DASH.to_string() } else { cell(&h.docker_runtimes.join(", ")) }
            ),
            None => h.docker_note.as_deref().map(cell).unwrap_or_else(|| "not reachable".into()),
        },
    ]);
    table(&["Item", "Value"], &[], &rows)
}

fn decode_chart(ctx: &Ctx) -> String {
    let bars: Vec<(String, Option<f64>)> =
        ctx.views.iter().map(|v| (v.r.model.clone(), v.all.client_tps.map(|s| s.mean))).collect();
    charts::bar_chart("Decode tokens/s by model (client-side mean)", "tok/s", &bars)
}

fn ttft_chart(ctx: &Ctx) -> String {
    let bars: Vec<(String, Option<f64>)> =
        ctx.views.iter().map(|v| (v.r.model.clone(), v.all.ttft_ms.map(|s| s.mean))).collect();
    charts::bar_chart("Time to first token by model (client-side mean)", "ms", &bars)
}

// ---------------------------------------------------------------------------------------------
// deployment-guide.md

fn deployment_guide(ctx: &Ctx) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Deployment guide — {} (cycle {})\n", inline(&ctx.plan.name), ctx.cycle());
    s.push_str(&nav("deployment-guide.md"));
    s.push_str("The exact settings each model was measured with: the plan's, plus any change a remedy applied after a failure. Every command below is the Writer's record of how it started and asked the engine, not rebuilt from the settings: step 1 is the command that ran, byte for byte. Follow the steps in order; every command can be pasted as it is.\n");
    let mut any = false;
    for v in ctx.measured() {
        let (Some(spec), Some(e)) = (v.spec, v.settings.as_ref()) else {
            let _ =
                writeln!(s, "\n## {}\n\nThe plan no longer lists this model, so its settings are unknown.", v.name());
            continue;
        };
        any = true;
        let _ = writeln!(s, "\n## {}\n", v.name());
        match (e.attempt, e.changes.is_empty()) {
            (Some(n), true) if n <= 1 => s.push_str("Measured on the first attempt with the plan's settings.\n\n"),
            (n, _) => {
                let _ = writeln!(
                    s,
                    "Measured on attempt {} after these changes to the plan: {}. See the [troubleshooting log](troubleshooting.md).\n",
                    n.map(|n| n.to_string()).unwrap_or_else(|| "?".into()),
                    if e.changes.is_empty() {
                        "none".to_string()
                    } else {
                        e.changes.iter().map(|c| cell(&c.to_string())).collect::<Vec<_>>().join(", ")
                    }
                );
            }
        }
        let port = spec.port.unwrap_or(match spec.engine {
            EngineKind::Ollama => 11434,
            EngineKind::LlamaServer => 8080,
        });
        let mut rows = vec![
            vec![
                "Engine".into(),
                match spec.engine {
                    EngineKind::Ollama => "Ollama".into(),
                    EngineKind::LlamaServer => "llama.cpp `llama-server`".into(),
                },
            ],
            vec![
                "Runtime".into(),
                match spec.runtime {
                    Runtime::Docker => "Docker container".into(),
                    Runtime::Process => "host process".into(),
                },
            ],
            vec!["Model".into(), cell(e.set.tag.as_deref().or(e.set.model_path.as_deref()).unwrap_or(&spec.name))],
        ];
        if spec.runtime == Runtime::Docker {
            rows.push(vec!["Image".into(), spec.image.as_deref().map(cell).unwrap_or_else(|| DASH.into())]);
            rows.push(vec![
                "Memory limit".into(),
                e.set.memory_limit_gb.map(|g| format!("{} GiB (swap off)", num(g))).unwrap_or_else(|| "none".into()),
            ]);
            rows.push(vec![
                "GPUs".into(),
                match &spec.gpus {
                    Some(GpuRequest::All) => "all".into(),
                    Some(GpuRequest::Indices(ix)) => ix.iter().map(u32::to_string).collect::<Vec<_>>().join(", "),
                    Some(GpuRequest::None) | None => "none".into(),
                },
            ]);
        }
        rows.push(vec![
            "Port".into(),
            if spec.port.is_some() {
                port.to_string()
            } else {
                format!("{port} (the plan sets none; the engine's usual port is shown)")
            },
        ]);
        rows.push(vec!["Context".into(), format!("{} tokens", e.set.context)]);
        rows.push(vec!["Parallel slots".into(), e.set.slots.to_string()]);
        rows.push(vec![
            "GPU layers".into(),
            match e.set.gpu_layers {
                Some(l) if l >= 0 => l.to_string(),
                _ => "engine decides".into(),
            },
        ]);
        rows.push(vec![
            "CPU threads".into(),
            e.set.threads.map(|t| t.to_string()).unwrap_or_else(|| "engine default".into()),
        ]);
        if let Some(b) = e.set.batch {
            rows.push(vec!["Batch size".into(), b.to_string()]);
        }
        if let Some(k) = e.set.kv_cache_type {
            rows.push(vec!["KV cache type".into(), k.as_str().into()]);
        }
        if let Some(f) = e.set.flash_attention {
            rows.push(vec!["Flash attention".into(), f.as_str().into()]);
        }
        rows.push(vec!["Load timeout".into(), format!("{} s", e.set.load_timeout_s)]);
        for (k, val) in &e.set.env {
            rows.push(vec![format!("Environment {}", cell(k)), cell(val)]);
        }
        if !e.set.args.is_empty() {
            rows.push(vec!["Extra arguments".into(), cell(&e.set.args.join(" "))]);
        }
        rows.push(vec![
            "Measured with".into(),
            format!(
                "{} (layers on GPU: {})",
                cell(&v.r.manifest.engine),
                v.r.manifest.gpu_layers.as_deref().map(cell).unwrap_or_else(|| DASH.into())
            ),
        ]);
        s.push_str(&table(&["Setting", "Value"], &[], &rows));
        match &v.r.launch {
            Some(launch) => launch_steps(&mut s, ctx.plan, spec, e, launch),
            None => recorded_lines_step(&mut s, &v.r.deployment),
        }
    }
    if !any {
        s.push_str("\nNo model was measured, so there are no settings to recommend yet.\n");
    }
    let not: Vec<String> =
        ctx.views.iter().filter(|v| !v.measured()).map(|v| format!("{} ({})", v.name(), outcome(v))).collect();
    if !not.is_empty() {
        let _ = writeln!(s, "\nNot covered here because they were not measured: {}.", not.join("; "));
    }
    s
}

/// Step 1 when the Writer recorded no launch (results from before it did): its recorded lines,
/// verbatim, and nothing derived.
fn recorded_lines_step(s: &mut String, ran: &[String]) {
    let ran: Vec<&str> = ran.iter().map(|l| l.trim()).filter(|l| !l.is_empty()).collect();
    if ran.is_empty() {
        s.push_str("\nThe Writer recorded no command for this model, so none is shown: a command rebuilt from the settings could differ from the one that was measured.\n");
    } else {
        s.push_str("\n**1. Start the engine** — the command threadcycle ran, exactly as the Writer recorded it:\n\n");
        s.push_str(&fence(&ran.join("\n"), "sh"));
    }
}

/// The steps to run a model the way it was measured, all read from the Writer's record of the
/// launch (nothing is rebuilt from the plan's settings).
fn launch_steps(s: &mut String, plan: &Plan, spec: &ModelSpec, e: &Effective, launch: &Launch) {
    s.push_str("\n**1. Start the engine** — the command threadcycle ran, exactly as the Writer recorded it:\n\n");
    s.push_str(&fence(&launch.command_line(), "sh"));
    let tag = e.set.tag.clone().unwrap_or_else(|| spec.name.clone());
    match (&launch.container, spec.engine) {
        (Some(c), engine) => {
            let port = c.host_port.unwrap_or(c.container_port);
            let base = format!("http://127.0.0.1:{port}");
            if c.host_port.is_none() {
                let _ = writeln!(
                    s,
                    "\nThe port on the host was left to Docker; `docker port {} {}` shows it. The steps below assume {port}.",
                    shell_word(&c.name),
                    c.container_port
                );
            }
            match engine {
                EngineKind::Ollama => {
                    s.push_str("\n**2. Pull the model**\n\n");
                    s.push_str(&fence(
                        &format!("docker exec {} ollama pull {}", shell_word(&c.name), shell_word(&tag)),
                        "sh",
                    ));
                    ollama_ask_step(s, &base, &tag, launch);
                }
                EngineKind::LlamaServer => llama_ask_steps(s, plan, &base),
            }
            compose_step(s, spec, launch, c);
            s.push_str("\n**5. Tear it down**\n\n");
            s.push_str(&fence(&format!("docker rm -f {}", shell_word(&c.name)), "sh"));
        }
        (None, EngineKind::Ollama) => {
            let host = launch.env.get("OLLAMA_HOST").cloned().unwrap_or_else(|| "127.0.0.1:11434".into());
            s.push_str("\n**2. Pull the model**\n\n");
            s.push_str(&fence(&format!("OLLAMA_HOST={} ollama pull {}", shell_word(&host), shell_word(&tag)), "sh"));
            ollama_ask_step(s, &format!("http://{host}"), &tag, launch);
        }
        (None, EngineKind::LlamaServer) => {
            let port = launch.arg_value("--port").unwrap_or("8080");
            llama_ask_steps(s, plan, &format!("http://127.0.0.1:{port}"));
            process_compose_step(s, spec, launch);
        }
    }
}

/// Step 3 for Ollama: a request with the `options` the measured requests carried.
fn ollama_ask_step(s: &mut String, base: &str, tag: &str, launch: &Launch) {
    s.push_str("\n**3. Ask it something with the measured options**\n\n");
    let options: serde_json::Map<String, serde_json::Value> =
        launch.request_options.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let body = serde_json::json!({ "model": tag, "prompt": "Say hello.", "stream": false, "options": options });
    let body = serde_json::to_string(&body).unwrap_or_default();
    s.push_str(&fence(&format!("curl -s {base}/api/generate \\\n  -d {}", shell_word(&body)), "sh"));
    if launch.request_options.contains_key("num_predict") {
        s.push_str("\n`num_predict` is the first prompt's output cap; the other prompts used their own.\n");
    }
}

/// Steps 2 and 3 for llama-server: health, then a request.
fn llama_ask_steps(s: &mut String, plan: &Plan, base: &str) {
    s.push_str("\n**2. Wait until it is healthy**\n\n");
    s.push_str(&fence(&format!("curl -s {base}/health"), "sh"));
    s.push_str("\n**3. Ask it something**\n\n");
    s.push_str(&fence(&openai_curl(plan, base), "sh"));
}

/// Memory in whole MiB, as `docker run` and compose were given it.
fn mib(bytes: u64) -> String {
    format!("{}m", bytes >> 20)
}

/// Step 4 for a container: the recorded launch as a compose service.
fn compose_step(s: &mut String, spec: &ModelSpec, launch: &Launch, c: &ContainerLaunch) {
    s.push_str("\n**4. The same as a compose service**\n\n");
    let compose_name = container_name(spec);
    let mut y = String::new();
    let _ = writeln!(y, "services:\n  {}:", compose_name.trim_start_matches("tc-"));
    let _ = writeln!(y, "    image: {}", yaml_str(&launch.program));
    let _ = writeln!(y, "    container_name: {}", yaml_str(&compose_name));
    if !launch.args.is_empty() {
        let _ =
            writeln!(y, "    command: [{}]", launch.args.iter().map(|a| yaml_str(a)).collect::<Vec<_>>().join(", "));
    }
    let port = c.host_port.unwrap_or(c.container_port);
    let _ = writeln!(y, "    ports:\n      - {}", yaml_str(&format!("127.0.0.1:{port}:{}", c.container_port)));
    if !launch.env.is_empty() {
        y.push_str("    environment:\n");
        for (k, v) in &launch.env {
            let _ = writeln!(y, "      {}: {}", yaml_str(k), yaml_str(v));
        }
    }
    if !c.binds.is_empty() {
        y.push_str("    volumes:\n");
        for b in &c.binds {
            let _ = writeln!(y, "      - {}", yaml_str(b));
        }
    }
    if let Some(m) = c.memory_limit_bytes {
        let swap = c.memory_swap_bytes.map(|s| format!("{}m", s >> 20)).unwrap_or_else(|| mib(m));
        let _ = writeln!(y, "    mem_limit: {}\n    memswap_limit: {swap}", mib(m));
    }
    match &c.gpus {
        GpuRequest::All => y.push_str(
            "    deploy:\n      resources:\n        reservations:\n          devices:\n            - driver: nvidia\n              count: all\n              capabilities: [gpu]\n",
        ),
        GpuRequest::Indices(ix) => {
            let _ = write!(
                y,
                "    deploy:\n      resources:\n        reservations:\n          devices:\n            - driver: nvidia\n              device_ids: [{}]\n              capabilities: [gpu]\n",
                ix.iter().map(|i| yaml_str(&i.to_string())).collect::<Vec<_>>().join(", ")
            );
        }
        GpuRequest::None => {}
    }
    s.push_str(&fence(&y, "yaml"));
}

/// Step 4 for a llama-server host process: the recorded arguments in a container, with only the
/// model path, listen address and port changed to the container's.
fn process_compose_step(s: &mut String, spec: &ModelSpec, launch: &Launch) {
    s.push_str("\n**4. As a compose service**\n\n");
    s.push_str("This model ran as a host process, not in a container. To run it under compose, use a `llama-server` image of your choice (set `image` below: threadcycle did not measure one) with the recorded arguments; only the model path, the listen address and the port are the container's:\n\n");
    let model = launch.arg_value("--model").unwrap_or_default().to_string();
    let (dir, file) =
        model.rsplit_once('/').map(|(d, f)| (d.to_string(), f.to_string())).unwrap_or((".".into(), model.clone()));
    let dir = if dir.is_empty() { "/".to_string() } else { dir };
    let mut args = launch.args.clone();
    for (flag, value) in
        [("--model", format!("/models/{file}")), ("--host", "0.0.0.0".into()), ("--port", "8080".into())]
    {
        if let Some(i) = args.iter().position(|a| a == flag)
            && let Some(v) = args.get_mut(i + 1)
        {
            *v = value;
        }
    }
    let host_port = launch.arg_value("--port").unwrap_or("8080");
    let mut y = String::new();
    let _ = writeln!(y, "services:\n  {}:", container_name(spec).trim_start_matches("tc-"));
    y.push_str("    image: \"REPLACE-WITH-A-LLAMA-SERVER-IMAGE\"\n");
    let _ = writeln!(y, "    command: [{}]", args.iter().map(|c| yaml_str(c)).collect::<Vec<_>>().join(", "));
    let _ = writeln!(y, "    ports:\n      - {}", yaml_str(&format!("127.0.0.1:{host_port}:8080")));
    if !launch.env.is_empty() {
        y.push_str("    environment:\n");
        for (k, v) in &launch.env {
            let _ = writeln!(y, "      {}: {}", yaml_str(k), yaml_str(v));
        }
    }
    let _ = writeln!(y, "    volumes:\n      - {}", yaml_str(&format!("{dir}:/models:ro")));
    s.push_str(&fence(&y, "yaml"));
}

fn container_name(spec: &ModelSpec) -> String {
    let n: String =
        spec.name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' }).collect();
    format!("tc-{n}")
}

fn openai_curl(plan: &Plan, base: &str) -> String {
    let body = serde_json::json!({
        "messages": [{ "role": "user", "content": "Say hello." }],
        "max_tokens": plan.defaults.max_tokens,
        "temperature": plan.defaults.temperature,
        "seed": plan.defaults.seed,
    });
    let body = serde_json::to_string(&body).unwrap_or_default();
    format!(
        "curl -s {base}/v1/chat/completions \\\n  -H 'Content-Type: application/json' \\\n  -d {}",
        shell_word(&body)
    )
}

// ---------------------------------------------------------------------------------------------
// troubleshooting.md

fn troubleshooting(ctx: &Ctx) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Troubleshooting log — {} (cycle {})\n", inline(&ctx.plan.name), ctx.cycle());
    s.push_str(&nav("troubleshooting.md"));
    let recorded: BTreeSet<&str> = ctx.escalations.iter().map(|e| e.id.as_str()).collect();
    let missing: Vec<&String> =
        ctx.input.results.escalations.iter().filter(|id| !recorded.contains(id.as_str())).collect();
    if ctx.escalations.is_empty() {
        s.push_str("No escalations: every model that ran did so without a failure Debug had to handle.\n");
    } else {
        let _ = writeln!(s, "{} escalation(s) in this cycle, oldest first.\n", ctx.escalations.len());
        let rows: Vec<Vec<String>> = ctx
            .escalations
            .iter()
            .enumerate()
            .map(|(i, e)| {
                vec![
                    (i + 1).to_string(),
                    cell(&e.model),
                    e.attempt.to_string(),
                    class_words(e.class).into(),
                    e.decision.as_ref().map(|d| action_text(&d.action)).unwrap_or_else(|| "none recorded".into()),
                    escalation_outcome(ctx, e).0,
                ]
            })
            .collect();
        s.push_str(&table(
            &["#", "Model", "Attempt", "Failure", "Decision", "Outcome"],
            &[Align::Right, Align::Left, Align::Right],
            &rows,
        ));
    }
    for (i, e) in ctx.escalations.iter().enumerate() {
        let _ = writeln!(s, "\n## {}. {}, attempt {}: {}\n", i + 1, inline(&e.model), e.attempt, class_words(e.class));
        let _ = writeln!(s, "Opened {} · escalation {}\n", inline(&e.opened_at), inline(&e.id));
        if let Some(h) = ctx.views.iter().find(|v| v.r.model == e.model).and_then(|v| v.host) {
            let _ = writeln!(s, "Host {}\n", inline(h));
        }
        s.push_str("### Failure\n\n");
        let _ = writeln!(s, "{}", inline(&e.failure));
        s.push_str("\n### Evidence\n\n");
        let ev = &e.evidence;
        let mut rows: Vec<Vec<String>> = vec![
            vec!["Exit status".into(), ev.exit_status.as_deref().map(cell).unwrap_or_else(|| DASH.into())],
            vec![
                "OOM killed".into(),
                match ev.oom_killed {
                    Some(true) => "**yes**".into(),
                    Some(false) => "no".into(),
                    None => DASH.into(),
                },
            ],
            vec!["Engine error".into(), ev.engine_error.as_deref().map(cell).unwrap_or_else(|| DASH.into())],
            vec![
                "Host RAM available".into(),
                ev.host_ram_available.map(|b| format!("{} GiB", num(gib(b)))).unwrap_or_else(|| DASH.into()),
            ],
            vec![
                "GPU memory free".into(),
                ev.gpu_free.map(|b| format!("{} GiB", num(gib(b)))).unwrap_or_else(|| DASH.into()),
            ],
            vec!["GPU temperature".into(), ev.gpu_temp_c.map(|t| format!("{t} °C")).unwrap_or_else(|| DASH.into())],
        ];
        rows.push(vec!["Earlier attempts".into(), ev.attempts.to_string()]);
        s.push_str(&table(&["Evidence", "Value"], &[], &rows));
        if ev.log_tail.is_empty() {
            s.push_str("\nNo engine log lines were captured.\n");
        } else {
            let _ = writeln!(s, "\nLast {} line(s) of the engine log:\n", ev.log_tail.len());
            s.push_str(&fence(&ev.log_tail.join("\n"), "text"));
        }
        s.push_str("\n### Diagnosis\n\n");
        let _ = writeln!(
            s,
            "Class `{}` ({}), confidence {}.\n\n{}\n",
            e.class.as_str(),
            class_words(e.class),
            percent(e.confidence.clamp(0.0, 1.0)),
            inline(&e.diagnosis)
        );
        s.push_str("### Options\n\n");
        if e.options.is_empty() {
            s.push_str("Debug proposed no option.\n");
        } else {
            let rows: Vec<Vec<String>> = e
                .options
                .iter()
                .map(|o| {
                    vec![
                        o.number.to_string(),
                        cell(&o.summary),
                        cell(&o.rationale),
                        if o.safe { "yes".into() } else { "no".into() },
                        action_text(&o.action),
                    ]
                })
                .collect();
            s.push_str(&table(
                &["#", "Option", "Why it should help", "Safe for auto", "Change"],
                &[Align::Right],
                &rows,
            ));
        }
        s.push_str("\n### Decision\n\n");
        match &e.decision {
            Some(d) => {
                let chosen = match d.option {
                    Some(n) => format!("Option {n}"),
                    None => "A custom change".to_string(),
                };
                let _ = writeln!(
                    s,
                    "{chosen} — {} — decided by {} at {}.",
                    action_text(&d.action),
                    inline(&d.by),
                    inline(&d.at)
                );
            }
            None => s.push_str("No decision was recorded.\n"),
        }
        s.push_str("\n### Outcome\n\n");
        let _ = writeln!(s, "{}", escalation_outcome(ctx, e).1);
    }
    if !missing.is_empty() {
        let _ = writeln!(
            s,
            "\nThe Writer raised escalation(s) {} but Debug's record of them did not reach Documentation.",
            missing.iter().map(|m| inline(m)).collect::<Vec<_>>().join(", ")
        );
    }
    s
}

/// Short and long outcome of an escalation, from the model's attempts and final status.
fn escalation_outcome(ctx: &Ctx, e: &EscalationRecord) -> (String, String) {
    let Some(v) = ctx.views.iter().find(|v| v.r.model == e.model) else {
        return ("unknown".into(), "The results hold nothing for this model.".into());
    };
    let next = v.r.attempts.iter().find(|a| a.number == e.attempt + 1);
    let status = outcome(v);
    match next {
        Some(a) => {
            let ok = a.outcome.trim().eq_ignore_ascii_case("ok");
            let changes = if a.changes.is_empty() {
                "no change".to_string()
            } else {
                a.changes.iter().map(|c| cell(&c.to_string())).collect::<Vec<_>>().join(", ")
            };
            let short = if ok { format!("attempt {} ok", a.number) } else { format!("attempt {} failed", a.number) };
            let long = format!(
                "Attempt {} ran with {changes}: {}. Final state: {status}.",
                a.number,
                if ok { "it succeeded".to_string() } else { cell(&a.outcome) }
            );
            (short, long)
        }
        None => (status.clone(), format!("There was no further attempt. Final state: {status}.")),
    }
}

// ---------------------------------------------------------------------------------------------
// business-case.md

fn business_case(ctx: &Ctx) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Business case — {} (cycle {})\n", inline(&ctx.plan.name), ctx.cycle());
    s.push_str(&nav("business-case.md"));
    let Some(cost) = ctx.plan.cost.as_ref() else {
        s.push_str("The plan has no `[cost]` section, so no cost per token can be worked out. Add one like this (the figures are examples: put in your own electricity price, what the box cost, and dated cloud prices):\n\n");
        s.push_str(&fence(
            "[cost]\nelectricity_usd_per_kwh = 0.30   # your tariff\nhardware_usd = 2500              # what the box cost\nlifetime_years = 3               # over how long to write it off\nhours_per_day = 8                # hours a day it generates\nassumed_power_w = 350            # wall power while generating, if not measured\n\n[[cost.cloud]]\nname = \"Provider model (output tokens)\"\nusd_per_mtok_min = 2.5\nusd_per_mtok_max = 10.0\nas_of = \"YYYY-MM-DD\"\n",
            "toml",
        ));
        return s;
    };
    s.push_str("What one million generated tokens cost on this box, from the measured decode speed, the power drawn while generating and the hardware written off over its lifetime, against the plan's dated cloud prices.\n\n");
    s.push_str("## Inputs\n\n");
    let rows = vec![
        vec![
            "Electricity".into(),
            format!("{} per kWh", usd(cost.electricity_usd_per_kwh)),
            "plan `cost.electricity_usd_per_kwh`".into(),
        ],
        vec!["Hardware price".into(), usd(cost.hardware_usd), "plan `cost.hardware_usd`".into()],
        vec!["Lifetime".into(), format!("{} years", plain(cost.lifetime_years)), "plan `cost.lifetime_years`".into()],
        vec!["Use".into(), format!("{} hours a day", plain(cost.hours_per_day)), "plan `cost.hours_per_day`".into()],
        {
            let measured = ctx
                .measured()
                .filter(|v| v.tel().is_some_and(|t| t.joules_per_token.is_some() || t.gpu_power_w.is_some()))
                .count();
            let all = ctx.measured().count();
            let assumed = cost.assumed_power_w.map(|w| format!("{} W assumed", num(w)));
            vec![
                "Power while generating".into(),
                match (measured, assumed) {
                    (0, Some(a)) => a,
                    (0, None) => DASH.into(),
                    (m, Some(a)) if m < all => format!("measured per model; {a} for the rest"),
                    _ => "measured per model".into(),
                },
                match (measured, cost.assumed_power_w.is_some()) {
                    (0, true) => "plan `cost.assumed_power_w`: assumed, because the results carry no power measured during the runs".into(),
                    (0, false) => "not measured and not assumed: add `cost.assumed_power_w`".into(),
                    (m, true) if m < all => "measured: the GPU's energy per token (NVML) where it was sampled; plan `cost.assumed_power_w` where it was not".into(),
                    (m, false) if m < all => "measured: the GPU's energy per token (NVML) where it was sampled; add `cost.assumed_power_w` for the others".into(),
                    _ => "measured: the GPU's energy per token (NVML) during the runs".into(),
                },
            ]
        },
        vec!["Decode speed".into(), "per model, below".into(), "measured: client-side mean over all requests".into()],
    ];
    s.push_str(&table(&["Input", "Value", "Source"], &[], &rows));
    s.push_str("\n## Formulas\n\n");
    s.push_str("- tokens per hour = decode tok/s × 3600\n");
    s.push_str("- energy per token = the measured joules per generated token (GPU energy over the measured runs ÷ output tokens) where the GPU was sampled; else power W ÷ decode tok/s, with the mean measured GPU power or the assumed power\n");
    s.push_str("- energy per million tokens = energy per token in joules × 10⁶ ÷ 3,600,000 joules per kWh\n");
    s.push_str("- electricity per million tokens = that kWh × electricity price\n");
    s.push_str("- hardware per hour of use = hardware price ÷ (lifetime years × 365 × hours a day)\n");
    s.push_str("- hardware per million tokens = hardware per hour ÷ tokens per hour × 10⁶\n");
    s.push_str("\nThe figures assume the box generates at the measured single-stream speed for every hour of use, and count output tokens only: prompt tokens are processed far faster (prefill) and are left out. Idle power, cooling and the operator's time are not included. Measured power is the GPU's own draw as NVML reports it: the CPU, memory and power supply losses are not in it, so it is a floor for the wall power; an assumed figure is meant as wall power.\n");

    s.push_str("\n## Cost per million output tokens\n\n");
    let hours = cost.lifetime_years * 365.0 * cost.hours_per_day;
    let hw_per_hour = (hours > 0.0).then(|| cost.hardware_usd / hours);
    let mut totals: Vec<(String, Option<f64>)> = Vec::new();
    let mut rows = Vec::new();
    for v in &ctx.views {
        let Some((tps, src)) = v.all.decode().filter(|(t, _)| *t > 0.0) else {
            rows.push(vec![
                v.name(),
                DASH.into(),
                DASH.into(),
                DASH.into(),
                DASH.into(),
                DASH.into(),
                DASH.into(),
                outcome(v),
            ]);
            continue;
        };
        let en = energy_of(v, tps, cost.assumed_power_w);
        let crate::claims::MtokCost { kwh, electricity: energy, hardware: hw, total } =
            crate::claims::mtok_cost(cost, tps, en.j_per_token);
        totals.push((v.name(), total));
        rows.push(vec![
            v.name(),
            format!("{} ({src})", num(tps)),
            en.watts.map(|w| format!("{} ({})", num(w), en.power_source)).unwrap_or_else(|| DASH.into()),
            en.j_per_token.map(|j| format!("{} ({})", num(j), en.energy_source)).unwrap_or_else(|| DASH.into()),
            kwh.map(num).unwrap_or_else(|| DASH.into()),
            energy.map(usd).unwrap_or_else(|| DASH.into()),
            hw.map(usd).unwrap_or_else(|| DASH.into()),
            total.map(|t| format!("**{}**", usd(t))).unwrap_or_else(|| DASH.into()),
        ]);
    }
    let mut align = vec![Align::Left];
    align.extend([Align::Right; 7]);
    s.push_str(&table(
        &[
            "Model",
            "Decode tok/s",
            "Power W",
            "J per token",
            "kWh per Mtok",
            "Electricity per Mtok",
            "Hardware per Mtok",
            "Total per Mtok",
        ],
        &align,
        &rows,
    ));
    if let Some(h) = hw_per_hour {
        let _ = writeln!(s, "\nHardware written off over {} hours of use: {} per hour.", plain(hours), usd(h));
    } else {
        s.push_str("\nThe hardware cannot be written off: lifetime or hours a day is zero.\n");
    }

    s.push_str("\n## Against cloud APIs\n\n");
    cloud_table(&mut s, cost, &totals);
    s
}

/// Power and energy per token for the cost table, with where each came from.
struct Energy {
    watts: Option<f64>,
    power_source: String,
    j_per_token: Option<f64>,
    energy_source: String,
}

/// Measured energy per token when the sampler had it, else the mean measured GPU power over
/// the decode speed, else the plan's assumed power.
fn energy_of(v: &View, tps: f64, assumed_w: Option<f64>) -> Energy {
    let t = v.tel();
    let mean_w = t.and_then(|t| t.gpu_power_w).map(|m| m.mean);
    if let Some(j) = t.and_then(|t| t.joules_per_token).filter(|j| j.is_finite()) {
        let src = t
            .and_then(|t| t.energy_source.as_deref())
            .map(|s| format!("measured, {}", cell(s)))
            .unwrap_or_else(|| "measured".into());
        return Energy {
            watts: mean_w,
            power_source: "measured mean".into(),
            j_per_token: Some(j),
            energy_source: src,
        };
    }
    if let Some(w) = mean_w {
        return Energy {
            watts: Some(w),
            power_source: "measured mean".into(),
            j_per_token: Some(w / tps),
            energy_source: "from measured power".into(),
        };
    }
    Energy {
        watts: assumed_w,
        power_source: "assumed".into(),
        j_per_token: assumed_w.map(|w| w / tps),
        energy_source: "from assumed power".into(),
    }
}

fn cloud_table(s: &mut String, cost: &CostInputs, totals: &[(String, Option<f64>)]) {
    if cost.cloud.is_empty() {
        s.push_str("The plan lists no cloud prices: add `[[cost.cloud]]` entries (name, USD per million tokens low and high, and the date of the quote).\n");
        return;
    }
    let mut headers: Vec<String> = vec!["Cloud offer".into(), "USD per Mtok".into(), "Quoted".into()];
    headers.extend(totals.iter().map(|(n, _)| format!("vs {n}")));
    let header_refs: Vec<&str> = headers.iter().map(String::as_str).collect();
    let mut cloud: Vec<_> = cost.cloud.iter().collect();
    cloud.sort_by(|a, b| a.usd_per_mtok_min.total_cmp(&b.usd_per_mtok_min).then_with(|| a.name.cmp(&b.name)));
    let rows: Vec<Vec<String>> = cloud
        .iter()
        .map(|c| {
            let range = if c.usd_per_mtok_min == c.usd_per_mtok_max {
                usd(c.usd_per_mtok_min)
            } else {
                format!("{}–{}", usd(c.usd_per_mtok_min), usd(c.usd_per_mtok_max))
            };
            let mut row = vec![cell(&c.name), range, cell(&c.as_of)];
            for (_, total) in totals {
                row.push(match total {
                    None => DASH.into(),
                    Some(t) => compare_price(*t, c.usd_per_mtok_min, c.usd_per_mtok_max),
                });
            }
            row
        })
        .collect();
    s.push_str(&table(&header_refs, &[Align::Left, Align::Right, Align::Left], &rows));
    s.push_str("\nEach \"vs\" cell compares that model's local total per million output tokens with the cloud price. Cloud prices are as quoted on the date shown; check them before deciding.\n");
}

fn compare_price(local: f64, lo: f64, hi: f64) -> String {
    if local <= 0.0 {
        return DASH.into();
    }
    let span = |a: f64, b: f64| {
        if num(a) == num(b) { format!("{}×", num(a)) } else { format!("{}–{}×", num(a), num(b)) }
    };
    if local < lo {
        format!("local {} cheaper", span(lo / local, hi / local))
    } else if local > hi && hi > 0.0 {
        format!("cloud {} cheaper", span(local / hi, if lo > 0.0 { local / lo } else { local / hi }))
    } else {
        "within the cloud range".into()
    }
}

// ---------------------------------------------------------------------------------------------
// quality.md

/// Structure of the answers to one prompt, averaged over repetitions.
struct Structure {
    n: usize,
    words: f64,
    headings: f64,
    code_blocks: f64,
    list_items: f64,
    tables: f64,
    coverage: Option<f64>,
    missing: BTreeSet<String>,
}

fn structure(runs: &[&RunResult]) -> Structure {
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

fn pct_change(new: f64, base: f64) -> String {
    if base.abs() < f64::EPSILON {
        return DASH.into();
    }
    let p = (new - base) / base * 100.0;
    format!("{}{:.0} %", if p >= 0.0 { "+" } else { "−" }, p.abs())
}

fn quality(ctx: &Ctx) -> String {
    let plan = ctx.plan;
    let mut s = String::new();
    let _ = writeln!(s, "# Answer quality — {} (cycle {})\n", inline(&plan.name), ctx.cycle());
    s.push_str(&nav("quality.md"));
    s.push_str("The structure of each answer, read with a markdown parser, and how many of the prompt's required topics (the plan's rubric) it mentions. These are structural measures: they say whether an answer is complete and organised, not whether it is correct. Figures are means over the repetitions.\n");
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
                    (Some(_), _) => "not assessed (no chat template)".into(),
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
            let _ = writeln!(s, "\nAnswer quality of {} is not assessed: {why}.", v.name());
        }
    }

    s.push_str("\n## Against the baseline\n\n");
    let smallest = plan
        .models
        .iter()
        .enumerate()
        .filter_map(|(i, m)| m.params_b.map(|p| (p, i, m)))
        .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
        .map(|(_, _, m)| m);
    match smallest {
        None => s.push_str(
            "The plan gives no parameter counts (`params_b`), so there is no smallest model to use as the baseline.\n",
        ),
        Some(base) => match ctx.measured().find(|v| v.r.model == base.name) {
            None => {
                let _ = writeln!(
                    s,
                    "The baseline is the plan's smallest model, {}, but it was not measured, so there is nothing to compare against.",
                    inline(&base.name)
                );
            }
            Some(bv) => {
                let _ = writeln!(
                    s,
                    "The baseline is the plan's smallest model, {} ({} B parameters). Each row shows how a larger model's answers differ from it on the same prompt.\n",
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

// ---------------------------------------------------------------------------------------------
// data/

fn results_json(results: &BenchmarkResults) -> String {
    match serde_json::to_string_pretty(results) {
        Ok(mut s) => {
            s.push('\n');
            s
        }
        Err(e) => format!("{{\"error\": {}}}\n", yaml_str(&format!("the results could not be serialised: {e}"))),
    }
}

/// Longest answer shown whole in the reports; a longer one is shown cut, with a link to its file.
const SAMPLE_ANSWER_BYTES: usize = 64 << 10;

/// Whether a run's answer reached the engine client's cap (`protocol::results::MAX_ANSWER_BYTES`):
/// the client cuts on a character boundary, so within 3 bytes of it.
fn answer_was_cut(r: &RunResult) -> bool {
    r.answer.as_ref().is_some_and(|b| b.size + 3 >= protocol::results::MAX_ANSWER_BYTES as u64)
}

/// A CSV field, quoted when it must be (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) || s.starts_with(' ') || s.ends_with(' ') {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// A text field from outside: control characters shown as symbols ([`terminal_safe`]),
/// spreadsheet formula starters defused with a leading `'`.
fn csv_text(s: &str) -> String {
    let safe = terminal_safe(s);
    let s = safe.as_str();
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) { csv_field(&format!("'{s}")) } else { csv_field(s) }
}

fn csv_opt(v: Option<f64>) -> String {
    v.filter(|x| x.is_finite()).map(|x| x.to_string()).unwrap_or_default()
}

/// Column names of `data/results.csv`.
pub const CSV_COLUMNS: &[&str] = &[
    "model",
    "prompt",
    "repetition",
    "nonce",
    "ttft_ms",
    "e2e_ms",
    "tpot_ms",
    "itl_p50_ms",
    "itl_p90_ms",
    "itl_p99_ms",
    "output_tokens",
    "prompt_tokens",
    "client_decode_tps",
    "engine_decode_tps",
    "engine_prefill_tps",
    "engine_prompt_ms",
    "finish_reason",
    "words",
    "headings",
    "code_blocks",
    "list_items",
    "tables",
    "topics_covered",
    "topics_missing",
    "answer_key",
    "answer_sha256",
    "excerpt",
];

/// Every model's telemetry series in one CSV: `model`, then the union of the series' columns
/// in the order they first appear. Cells that are not numbers are quoted and defused.
fn telemetry_csv(series: &[(String, Series)]) -> String {
    let mut columns: Vec<&str> = Vec::new();
    for (_, s) in series {
        for c in &s.columns {
            if !columns.contains(c) {
                columns.push(c);
            }
        }
    }
    let mut out = String::from("model");
    for c in &columns {
        out.push(',');
        out.push_str(&csv_text(c));
    }
    out.push_str("\r\n");
    let mut row: Vec<&str> = Vec::new();
    for (model, s) in series {
        let index: Vec<Option<usize>> = columns.iter().map(|c| s.columns.iter().position(|x| x == c)).collect();
        for line in &s.rows {
            row.clear();
            row.extend(Series::cells(line));
            out.push_str(&csv_text(model));
            for i in &index {
                out.push(',');
                let v = i.and_then(|i| row.get(i)).copied().unwrap_or("");
                if v.is_empty() || v.parse::<f64>().is_ok_and(f64::is_finite) {
                    out.push_str(v);
                } else {
                    out.push_str(&csv_text(v));
                }
            }
            out.push_str("\r\n");
        }
    }
    out
}

fn results_csv(results: &BenchmarkResults) -> String {
    let mut out = CSV_COLUMNS.join(",");
    out.push_str("\r\n");
    let mut models: Vec<&ModelResult> = results.models.iter().collect();
    models.sort_by_key(|m| m.index);
    for m in models {
        let mut runs: Vec<&RunResult> = m.runs.iter().collect();
        runs.sort_by(|a, b| (&a.prompt_id, a.repetition).cmp(&(&b.prompt_id, b.repetition)));
        for r in runs {
            let a = &r.analysis;
            let row = [
                csv_text(&m.model),
                csv_text(&r.prompt_id),
                r.repetition.to_string(),
                csv_text(&r.nonce),
                csv_opt(Some(r.ttft_ms)),
                csv_opt(Some(r.e2e_ms)),
                csv_opt(r.tpot_ms),
                csv_opt(r.itl_ms.map(|p| p.p50)),
                csv_opt(r.itl_ms.map(|p| p.p90)),
                csv_opt(r.itl_ms.map(|p| p.p99)),
                r.output_tokens.to_string(),
                r.prompt_tokens.map(|t| t.to_string()).unwrap_or_default(),
                csv_opt(r.client_decode_tps),
                csv_opt(r.engine_decode_tps),
                csv_opt(r.engine_prefill_tps),
                csv_opt(r.engine_prompt_ms),
                csv_text(r.finish_reason.as_deref().unwrap_or_default()),
                a.words.to_string(),
                a.headings.to_string(),
                a.code_blocks.to_string(),
                a.list_items.to_string(),
                a.tables.to_string(),
                csv_text(&a.topics_covered.join("; ")),
                csv_text(&a.topics_missing.join("; ")),
                csv_text(r.answer.as_ref().map(|b| b.key.as_str()).unwrap_or_default()),
                csv_text(r.answer.as_ref().map(|b| b.sha256.as_str()).unwrap_or_default()),
                csv_text(&r.excerpt),
            ];
            out.push_str(&row.join(","));
            out.push_str("\r\n");
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------

#[cfg(test)]
pub(crate) mod tests {
    //! A realistic cycle to render, and the tests on every page.
    use super::*;
    use protocol::messages::VerificationReport;
    use protocol::results::{
        AnswerAnalysis, Attempt, BlobRef, Check, Decision, Evidence, GpuInfo, HostFacts, Manifest, Percentiles,
        RemedyOption, ThermalPause,
    };

    /// An answer meant to break out of every context it is shown in.
    pub(crate) const HOSTILE: &str = "Plan | step 1 <script>alert(1)</script> ``` `code` **bold** [x](javascript:alert(1)) <img src=x onerror=alert(2)> & done";

    const PLAN: &str = r#"
name = "Large-model validation"
description = "Which 14B-70B models this 24 GB box can really run, how fast, and at what cost."

[defaults]
repetitions = 3
max_tokens = 1024
context = 8192
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
env = { OLLAMA_KV_CACHE_TYPE = "q8_0" }
projected = { ram_gb = { min = 2, max = 4 }, vram_gb = { min = 10, max = 12 }, response_time_s = { min = 8, max = 20 }, words = { min = 250, max = 450 } }

[[models]]
name = "llama31-70b"
engine = "ollama"
runtime = "docker"
tag = "llama3.1:70b"
image = "ollama/ollama:0.12.6"
memory_limit_gb = 30
gpus = "all"
port = 11435
params_b = 70.6
projected = { ram_gb = { min = 24, max = 30 }, vram_gb = { min = 21, max = 23 }, response_time_s = { min = 60, max = 180 }, words = { min = 300, max = 600 } }

[[models]]
name = "codellama-34b"
engine = "llama-server"
runtime = "process"
model_path = "/srv/models/codellama-34b.Q8_0.gguf"
gpu_layers = 99
threads = 16
params_b = 33.7

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
required_topics = ["GPU", "memory", "monitoring", "backup"]

[[prompts]]
id = "rust-parser"
title = "Write a streaming NDJSON parser in Rust"
text = "Write ..."
required_topics = ["error handling", "tests", "backpressure"]

[criteria]
min_decode_tps = 10
max_temp_c = 83
resume_temp_c = 70
max_idle_temp_c = 45
memory_within_limits = true
min_gpu_util_pct = 80

[cost]
electricity_usd_per_kwh = 0.32
hardware_usd = 3200
lifetime_years = 3
hours_per_day = 8
assumed_power_w = 380
cloud = [
  { name = "GPT-4o (output)", usd_per_mtok_min = 10.0, usd_per_mtok_max = 10.0, as_of = "2025-06-01" },
  { name = "DeepSeek-V3 API (output)", usd_per_mtok_min = 0.28, usd_per_mtok_max = 1.10, as_of = "2025-06-01" },
]
"#;

    const GIB_U: u64 = 1 << 30;

    #[allow(clippy::too_many_arguments)]
    fn run(
        prompt: &str,
        rep: u32,
        ttft: f64,
        tokens: u32,
        tps: f64,
        words: u32,
        covered: &[&str],
        missing: &[&str],
    ) -> RunResult {
        let e2e = ttft + f64::from(tokens - 1) / tps * 1000.0;
        RunResult {
            prompt_id: prompt.into(),
            repetition: rep,
            nonce: format!("{:08x}", (ttft * 1000.0) as u64 ^ u64::from(tokens) << 20 ^ u64::from(rep)),
            ttft_ms: ttft,
            e2e_ms: e2e,
            tpot_ms: Some((e2e - ttft) / f64::from(tokens - 1)),
            itl_ms: Some(Percentiles { p50: 1000.0 / tps, p90: 1150.0 / tps, p99: 1400.0 / tps }),
            output_tokens: tokens,
            prompt_tokens: Some(412),
            client_decode_tps: Some(tps),
            engine_decode_tps: Some(tps * 1.03),
            engine_prefill_tps: Some(if tps > 20.0 { 2150.0 + f64::from(rep) * 20.0 } else { 48.0 + f64::from(rep) }),
            engine_prompt_ms: Some(if tps > 20.0 { 190.0 } else { 8500.0 }),
            finish_reason: Some(if tokens >= 1024 { "length" } else { "stop" }.into()),
            analysis: AnswerAnalysis {
                words,
                headings: if prompt == "lab-architecture" { 5 } else { 2 },
                code_blocks: if prompt == "rust-parser" { 3 } else { 1 },
                list_items: 12 + rep,
                tables: u32::from(prompt == "lab-architecture"),
                topics_covered: covered.iter().map(|t| t.to_string()).collect(),
                topics_missing: missing.iter().map(|t| t.to_string()).collect(),
            },
            answer: Some(BlobRef {
                key: format!("answers/{prompt}-{rep}"),
                sha256: format!("{:064x}", rep),
                size: 2048,
            }),
            excerpt: format!("## Answer {rep}\nHere is the {prompt} answer."),
        }
    }

    fn metric(peak: f64, mean: f64, min: f64, samples: u32) -> Option<MetricSummary> {
        Some(MetricSummary { peak, mean, min, samples })
    }

    /// The sampler's CSV for `points` intervals of `step_s`; `gpu` adds the GPU columns' values.
    fn series_csv(points: u32, step_s: f64, mem_gib: f64, gpu: Option<(f64, f64)>) -> String {
        let names = protocol::results::TELEMETRY_COLUMNS;
        let mut csv = String::from("t_s,samples");
        for n in names {
            csv.push_str(&format!(",{n},{n}_max"));
        }
        csv.push('\n');
        for i in 0..points {
            let f = f64::from(i) / f64::from(points.max(2) - 1);
            let mem = ((mem_gib * (0.55 + 0.45 * f.min(0.3) / 0.3)) * GIB_U as f64).round();
            let avail = ((58.0 - mem / GIB_U as f64) * GIB_U as f64).round();
            let gpu_cols = match gpu {
                Some((temp, watts)) => {
                    let t = 40.0 + (temp - 40.0) * f.sqrt();
                    let w = if i == 0 { 60.0 } else { watts - 8.0 * (f * 7.0).sin() };
                    format!(
                        ",96,99,{t:.1},{:.1},{w:.1},{:.1},{},{},{},{},2520,2520,10501,10501,{},{}",
                        t + 0.5,
                        w + 6.0,
                        11 * GIB_U,
                        11 * GIB_U,
                        24 * GIB_U,
                        24 * GIB_U,
                        10 * GIB_U,
                        10 * GIB_U
                    )
                }
                None => ",,,,,,,,,,,,,,,,".to_string(),
            };
            csv.push_str(&format!(
                "{:.3},20{gpu_cols},{mem},{mem},{},{},{:.1},{:.1},{avail},{avail},0,0\n",
                f64::from(i) * step_s,
                GIB_U / 4,
                GIB_U / 4,
                780.0 + f * 20.0,
                810.0 + f * 20.0
            ));
        }
        csv
    }

    fn manifest(model: &str, layers: &str) -> Manifest {
        Manifest {
            host: "gpubox".into(),
            cpu: "AMD Ryzen 9 7950X 16-Core Processor (32 logical CPUs)".into(),
            gpu: "NVIDIA GeForce RTX 4090".into(),
            driver: Some("550.120".into()),
            engine: "ollama".into(),
            engine_version: Some("0.12.6".into()),
            model: model.into(),
            model_digest: Some("sha256:3a1f9c2e7b4d".into()),
            quantization: Some("Q4_K_M".into()),
            context: 8192,
            gpu_layers: Some(layers.into()),
            gpu_weight_share: layers
                .split_once('/')
                .and_then(|(a, b)| Some(a.parse::<f64>().ok()? / b.parse::<f64>().ok().filter(|b| *b > 0.0)?)),
            threads: None,
            seed: 42,
            temperature: 0.0,
            plan_hash: "9f2c4e1ab37d5c88e0f6a1b2c3d4e5f60718293a4b5c6d7e8f9011223344556f".into(),
            threadcycle_version: "0.1.0".into(),
        }
    }

    /// Two measured models (one after an OOM and a remedy) and one skipped, with a hostile answer.
    pub(crate) fn fixture() -> ReportInput {
        let plan = Plan::from_toml(PLAN).expect("fixture plan is valid");
        let llama_planned = RunSettings::planned(&plan, &plan.models[1]);
        let host = HostFacts {
            hostname: "gpubox".into(),
            host_id: "gpubox".into(),
            kernel: "6.8.0-45-generic".into(),
            cpu_model: "AMD Ryzen 9 7950X 16-Core Processor".into(),
            cpus: 32,
            ram_total: 64 * GIB_U,
            ram_available: 58 * GIB_U,
            swap_total: 8 * GIB_U,
            swap_free: 8 * GIB_U,
            cgroup_memory_limit: None,
            model_store: "/srv/ollama".into(),
            disk_free: 412 * GIB_U,
            gpus: vec![GpuInfo {
                index: 0,
                name: "NVIDIA GeForce RTX 4090".into(),
                vram_total: 24 * GIB_U,
                vram_used: GIB_U / 2,
                temperature_c: Some(38),
                power_w: Some(21.5),
                driver: "550.120".into(),
                memory_bandwidth_gbs: Some(1008.1),
            }],
            gpu_note: None,
            docker_version: Some("27.3.1".into()),
            docker_runtimes: vec!["nvidia".into(), "runc".into()],
            docker_note: None,
            ram_bandwidth_gbs: Some(80.2),
            ram_bandwidth_source: Some("measured: parallel copy of 512 MiB on 16 thread(s), best of 4 passes".into()),
        };
        let check = |name: &str, status, measured: &str, threshold: Option<&str>, detail: &str| Check {
            name: name.into(),
            status,
            measured: measured.into(),
            threshold: threshold.map(str::to_string),
            detail: detail.into(),
        };
        let checks = vec![
            check("ram.total", CheckStatus::Pass, "64.0 GiB", Some("≥ 32 GiB"), "enough for 70B with partial offload"),
            check(
                "disk.free",
                CheckStatus::Warn,
                "412 GiB",
                Some("≥ 500 GiB"),
                "free space under /srv/ollama is below the plan's minimum",
            ),
            check("gpu.nvml", CheckStatus::Pass, "NVIDIA GeForce RTX 4090, 24 GiB", None, "driver 550.120"),
            check("docker.nvidia_runtime", CheckStatus::Pass, "nvidia, runc", None, "GPU containers can start"),
            check(
                "engine.version",
                CheckStatus::Unavailable,
                "unknown",
                None,
                "Ollama answers only once a container runs",
            ),
        ];
        let verdict = |model: &str,
                       fit,
                       vram: f64,
                       ram: f64,
                       layers: Option<(u32, u32)>,
                       reason: &str,
                       suggestion: Option<&str>| FitVerdict {
            model: model.into(),
            fit,
            source: "built-in table (quantisation Q4_K_M)".into(),
            weights_bytes: Some(((vram + ram) * 0.85 * GIB_U as f64) as u64),
            kv_bytes: Some(((vram + ram) * 0.1 * GIB_U as f64) as u64),
            vram_bytes: Some((vram * GIB_U as f64) as u64),
            ram_bytes: Some((ram * GIB_U as f64) as u64),
            gpu_layers: layers,
            reason: reason.into(),
            suggestion: suggestion.map(str::to_string),
        };
        let verdicts = vec![
            verdict("qwen25-coder-14b", Fit::Go, 10.8, 1.2, Some((49, 49)), "fits wholly in VRAM", None),
            verdict(
                "llama31-70b",
                Fit::GoPartialOffload,
                21.9,
                22.4,
                Some((38, 81)),
                "43 of 81 layers stay on the CPU",
                None,
            ),
            verdict(
                "codellama-34b",
                Fit::NoGo,
                23.6,
                13.5,
                None,
                "Q8_0 weights need 35.9 GiB, more than VRAM and the free RAM together",
                Some("use the Q4_K_M file (19.1 GiB)"),
            ),
        ];
        let verification = VerificationReport {
            plan,
            plan_hash: "9f2c4e1ab37d5c88e0f6a1b2c3d4e5f60718293a4b5c6d7e8f9011223344556f".into(),
            plan_source: "plans/large-models.toml".into(),
            host,
            checks,
            verdicts,
            placement: None,
            concurrent_fit: None,
        };
        let topics_a = ["GPU", "memory", "monitoring"];
        let mut qwen_runs = Vec::new();
        for rep in 1..=3 {
            qwen_runs.push(run(
                "lab-architecture",
                rep,
                182.0 + f64::from(rep) * 6.0,
                620 + rep * 11,
                66.0 + f64::from(rep) * 0.8,
                402 + rep * 9,
                &topics_a,
                &["backup"],
            ));
        }
        for rep in 1..=3 {
            let mut r = run(
                "rust-parser",
                rep,
                175.0 + f64::from(rep) * 4.0,
                540 + rep * 7,
                67.5 - f64::from(rep) * 0.5,
                310 + rep * 5,
                &["error handling", "tests", "backpressure"],
                &[],
            );
            if rep == 1 {
                r.excerpt = HOSTILE.into();
            }
            qwen_runs.push(r);
        }
        let mut llama_runs = Vec::new();
        for rep in 1..=3 {
            // The first TTFT is far slower: the KV cache was still being paged in.
            let ttft = if rep == 1 { 9400.0 } else { 4150.0 + f64::from(rep) * 40.0 };
            llama_runs.push(run(
                "lab-architecture",
                rep,
                ttft,
                820 + rep * 9,
                3.1 + f64::from(rep) * 0.05,
                530 + rep * 6,
                &["GPU", "memory", "monitoring", "backup"],
                &[],
            ));
        }
        for rep in 1..=3 {
            llama_runs.push(run(
                "rust-parser",
                rep,
                4080.0 + f64::from(rep) * 30.0,
                1024,
                3.2 - f64::from(rep) * 0.04,
                455 + rep * 3,
                &["error handling", "tests"],
                &["backpressure"],
            ));
        }
        let mut gemma_runs = Vec::new();
        for (prompt, base_words) in [("lab-architecture", 240), ("rust-parser", 180)] {
            for rep in 1..=3 {
                gemma_runs.push(run(
                    prompt,
                    rep,
                    95.0 + f64::from(rep) * 3.0,
                    380 + rep * 13,
                    41.0 + f64::from(rep) * 0.6,
                    base_words + rep * 7,
                    &["GPU", "memory"],
                    &["monitoring", "backup"],
                ));
            }
        }
        for (model, runs) in
            [("qwen25-coder-14b", &mut qwen_runs), ("llama31-70b", &mut llama_runs), ("gemma3-270m", &mut gemma_runs)]
        {
            for r in runs.iter_mut() {
                if let Some(b) = r.answer.as_mut() {
                    b.key = format!("answers/{model}/{}-{}", r.prompt_id, r.repetition);
                }
            }
        }
        let ollama_options = |ctx: u32| {
            BTreeMap::from([
                ("num_ctx".to_string(), serde_json::json!(ctx)),
                ("num_predict".to_string(), serde_json::json!(512)),
                ("seed".to_string(), serde_json::json!(42)),
                ("temperature".to_string(), serde_json::json!(0.0)),
            ])
        };
        let ollama_launch = |name: &str, mem_gib: u64| Launch {
            env: BTreeMap::from([
                ("OLLAMA_KEEP_ALIVE".to_string(), "-1".to_string()),
                ("OLLAMA_KV_CACHE_TYPE".to_string(), "q8_0".to_string()),
                ("OLLAMA_MODELS".to_string(), "/root/.ollama/models".to_string()),
                ("OLLAMA_NUM_PARALLEL".to_string(), "1".to_string()),
            ]),
            program: "ollama/ollama:0.12.6".into(),
            args: vec![],
            container: Some(ContainerLaunch {
                name: format!("tc-c42-{name}"),
                memory_limit_bytes: Some(mem_gib * GIB_U),
                gpus: GpuRequest::All,
                host_port: Some(11434),
                container_port: 11434,
                binds: vec!["/srv/ollama/models:/root/.ollama/models".into()],
                ..ContainerLaunch::default()
            }),
            request_options: ollama_options(8192),
        };
        let qwen_launch = ollama_launch("qwen25-coder-14b", 24);
        let qwen = ModelResult {
            index: 0,
            model: "qwen25-coder-14b".into(),
            status: ModelStatus::Measured,
            attempts: vec![Attempt {
                number: 1,
                changes: vec![],
                settings: None,
                outcome: "ok".into(),
                escalation: None,
            }],
            load_ms: Some(6120.0),
            runs: qwen_runs,
            prompts: vec![],
            peak_ram_bytes: Some((2.9 * GIB_U as f64) as u64),
            peak_vram_bytes: Some((11.2 * GIB_U as f64) as u64),
            manifest: manifest("qwen2.5-coder:14b", "49/49"),
            telemetry: Some(TelemetrySummary {
                sample_hz: 2.0,
                samples: 124,
                duration_s: 61.8,
                gpu_util_pct: metric(99.0, 91.3, 4.0, 124),
                gpu_temp_c: metric(71.0, 66.2, 41.0, 124),
                gpu_power_w: metric(338.6, 287.4, 58.1, 124),
                vram_used_bytes: metric(11.4 * GIB_U as f64, 11.1 * GIB_U as f64, 10.9 * GIB_U as f64, 124),
                sm_clock_mhz: metric(2745.0, 2610.0, 2235.0, 124),
                gpu_energy_j: Some(17_760.0),
                energy_source: Some("nvml energy counter".into()),
                joules_per_token: Some(4.62),
                throttle_reasons: vec!["SW_POWER_CAP".into()],
                engine_mem_bytes: metric(2.9 * GIB_U as f64, 2.7 * GIB_U as f64, 1.6 * GIB_U as f64, 62),
                engine_cache_bytes: metric(9.4 * GIB_U as f64, 9.3 * GIB_U as f64, 9.1 * GIB_U as f64, 62),
                engine_mem_limit: Some(24 * GIB_U),
                engine_cpu_pct: metric(104.0, 98.6, 12.0, 62),
                host_mem_available_bytes: metric(56.4 * GIB_U as f64, 55.3 * GIB_U as f64, 55.1 * GIB_U as f64, 124),
                host_swap_used_bytes: metric(0.0, 0.0, 0.0, 124),
                thermal_pauses: vec![],
                series: Some(BlobRef {
                    key: "telemetry/c42/qwen25-coder-14b/attempt-1".into(),
                    sha256: format!("{:064x}", 7),
                    size: 9120,
                }),
                notes: vec![],
            }),
            deployment: vec![qwen_launch.command_line()],
            launch: Some(qwen_launch),
            pull_ms: Some(412_000.0),
            started_at: "2025-06-14T09:31:02Z".into(),
            finished_at: "2025-06-14T09:44:40Z".into(),
        };
        let esc_id = "0197a1c2-6f3e-7a10-9b2e-4d5c6e7f8a90";
        let llama = ModelResult {
            index: 1,
            model: "llama31-70b".into(),
            status: ModelStatus::Measured,
            attempts: vec![
                Attempt {
                    number: 1,
                    changes: vec![],
                    settings: Some(llama_planned.clone()),
                    outcome: "container tc-c42-llama31-70b was killed by the OOM killer at 29.9 GiB of a 30 GiB limit"
                        .into(),
                    escalation: Some(esc_id.into()),
                },
                Attempt {
                    number: 2,
                    changes: vec![Setting::MemoryLimitGb(40.0)],
                    settings: Some({
                        let mut s = llama_planned.clone();
                        s.apply(&Setting::MemoryLimitGb(40.0)).expect("a valid limit");
                        s
                    }),
                    outcome: "ok".into(),
                    escalation: None,
                },
            ],
            load_ms: Some(48_200.0),
            runs: llama_runs,
            prompts: vec![],
            // The Writer recorded no RAM peak here: the matrix falls back to the sampler's.
            peak_ram_bytes: None,
            peak_vram_bytes: Some((22.6 * GIB_U as f64) as u64),
            manifest: manifest("llama3.1:70b", "38/81"),
            telemetry: Some(TelemetrySummary {
                sample_hz: 2.0,
                samples: 3724,
                duration_s: 1861.6,
                gpu_util_pct: metric(64.0, 27.5, 0.0, 3724),
                gpu_temp_c: metric(84.0, 78.9, 52.0, 3724),
                gpu_power_w: metric(221.0, 142.7, 61.3, 3724),
                vram_used_bytes: metric(22.6 * GIB_U as f64, 22.4 * GIB_U as f64, 21.8 * GIB_U as f64, 3724),
                sm_clock_mhz: metric(2730.0, 2480.0, 1905.0, 3724),
                gpu_energy_j: Some(265_650.0),
                energy_source: Some("power integral".into()),
                joules_per_token: Some(47.4),
                throttle_reasons: vec!["HW_SLOWDOWN".into(), "SW_THERMAL_SLOWDOWN".into()],
                engine_mem_bytes: metric(33.7 * GIB_U as f64, 31.2 * GIB_U as f64, 18.4 * GIB_U as f64, 1862),
                engine_cache_bytes: metric(0.4 * GIB_U as f64, 0.3 * GIB_U as f64, 0.1 * GIB_U as f64, 1862),
                engine_mem_limit: Some(40 * GIB_U),
                engine_cpu_pct: metric(1598.0, 1540.2, 98.0, 1862),
                host_mem_available_bytes: metric(39.8 * GIB_U as f64, 24.6 * GIB_U as f64, 22.1 * GIB_U as f64, 3724),
                host_swap_used_bytes: metric(0.2 * GIB_U as f64, 0.1 * GIB_U as f64, 0.0, 3724),
                thermal_pauses: vec![ThermalPause { at_s: 1211.4, temp_c: 84.0, waited_s: 46.5, recovered: true }],
                series: Some(BlobRef {
                    key: "telemetry/c42/llama31-70b/attempt-2".into(),
                    sha256: format!("{:064x}", 8),
                    size: 9120,
                }),
                notes: vec![],
            }),
            deployment: vec![],
            launch: Some(ollama_launch("llama31-70b", 40)),
            pull_ms: None,
            started_at: "2025-06-14T09:45:10Z".into(),
            finished_at: "2025-06-14T11:02:55Z".into(),
        };
        let codellama = ModelResult {
            index: 2,
            model: "codellama-34b".into(),
            status: ModelStatus::Skipped { reason: "the Reader predicts no fit: Q8_0 weights need 35.9 GiB".into() },
            attempts: vec![],
            load_ms: None,
            runs: vec![],
            prompts: vec![],
            peak_ram_bytes: None,
            peak_vram_bytes: None,
            manifest: Manifest {
                engine: "llama-server".into(),
                model: "/srv/models/codellama-34b.Q8_0.gguf".into(),
                ..manifest("", "")
            },
            telemetry: None,
            deployment: Vec::new(),
            launch: None,
            pull_ms: None,
            started_at: "2025-06-14T11:03:00Z".into(),
            finished_at: "2025-06-14T11:03:00Z".into(),
        };
        let gemma_launch = Launch {
            program: "/opt/llama.cpp/bin/llama-server".into(),
            args: "--model /srv/models/gemma-3-270m-it-Q4_K_M.gguf --host 127.0.0.1 --port 39187 -c 8192 -np 1 --metrics --no-webui -t 8 -ngl 0"
                .split(' ')
                .map(str::to_string)
                .collect(),
            ..Launch::default()
        };
        let gemma = ModelResult {
            index: 3,
            model: "gemma3-270m".into(),
            status: ModelStatus::Measured,
            attempts: vec![Attempt {
                number: 1,
                changes: vec![],
                settings: None,
                outcome: "ok".into(),
                escalation: None,
            }],
            load_ms: Some(840.0),
            runs: gemma_runs,
            prompts: vec![],
            peak_ram_bytes: None,
            peak_vram_bytes: None,
            manifest: Manifest {
                engine: "llama-server".into(),
                engine_version: Some("b6710".into()),
                model: "/srv/models/gemma-3-270m-it-Q4_K_M.gguf".into(),
                model_digest: Some("sha256:9c1b7e04d2aa".into()),
                gpu: "none: no NVIDIA GPU (libnvidia-ml not found)".into(),
                driver: None,
                threads: Some(8),
                ..manifest("", "0/19")
            },
            telemetry: Some(TelemetrySummary {
                sample_hz: 2.0,
                samples: 112,
                duration_s: 55.5,
                engine_mem_bytes: metric(0.41 * GIB_U as f64, 0.38 * GIB_U as f64, 0.22 * GIB_U as f64, 112),
                engine_cpu_pct: metric(796.0, 771.4, 3.0, 112),
                host_mem_available_bytes: metric(57.8 * GIB_U as f64, 57.6 * GIB_U as f64, 57.5 * GIB_U as f64, 112),
                host_swap_used_bytes: metric(0.0, 0.0, 0.0, 112),
                series: Some(BlobRef {
                    key: "telemetry/c42/gemma3-270m/attempt-1".into(),
                    sha256: format!("{:064x}", 9),
                    size: 2210,
                }),
                notes: vec!["no NVIDIA GPU (libnvidia-ml not found)".into()],
                ..TelemetrySummary::default()
            }),
            deployment: vec![gemma_launch.command_line()],
            launch: Some(gemma_launch),
            pull_ms: None,
            started_at: "2025-06-14T11:03:05Z".into(),
            finished_at: "2025-06-14T11:04:02Z".into(),
        };
        let escalation = EscalationRecord {
            id: esc_id.into(),
            cycle: "c42".into(),
            model: "llama31-70b".into(),
            attempt: 1,
            failure: "container tc-c42-llama31-70b exited with status 137 while loading the model".into(),
            class: FailureClass::OomKilled,
            diagnosis: "The kernel OOM killer stopped the container at 29.9 GiB of its 30 GiB limit while the 43 CPU-resident layers were loaded.".into(),
            confidence: 0.92,
            evidence: Evidence {
                exit_status: Some("137 (SIGKILL)".into()),
                oom_killed: Some(true),
                log_tail: vec![
                    "llm_load_tensors: offloaded 38/81 layers to GPU".into(),
                    "llm_load_tensors: CPU buffer size = 21340.55 MiB | CUDA0 buffer size = 19874.02 MiB".into(),
                    "```".into(),
                    "time=2025-06-14T09:46:31Z level=INFO msg=\"loading model\" <b>not html</b>".into(),
                ],
                engine_error: None,
                host_ram_available: Some(57 * GIB_U),
                gpu_free: Some(GIB_U + GIB_U / 5),
                gpu_temp_c: Some(51),
                attempts: 0,
            },
            options: vec![
                RemedyOption {
                    number: 1,
                    summary: "Raise the container memory limit to 40 GiB".into(),
                    rationale: "57 GiB of host RAM are free; the CPU-resident layers need about 22 GiB plus the KV cache".into(),
                    safe: true,
                    action: RemedyAction::Retry { set: vec![Setting::MemoryLimitGb(40.0)] },
                },
                RemedyOption {
                    number: 2,
                    summary: "Quantise the KV cache to q8_0".into(),
                    rationale: "halves the KV cache at a small quality cost".into(),
                    safe: true,
                    action: RemedyAction::Retry { set: vec![Setting::KvCacheType(protocol::settings::KvCacheType::Q8_0)] },
                },
                RemedyOption {
                    number: 3,
                    summary: "Skip this model".into(),
                    rationale: "keeps the cycle going".into(),
                    safe: true,
                    action: RemedyAction::Skip,
                },
            ],
            decision: Some(Decision {
                option: Some(1),
                action: RemedyAction::Retry { set: vec![Setting::MemoryLimitGb(40.0)] },
                by: "policy:auto".into(),
                at: "2025-06-14T09:47:02Z".into(),
            }),
            opened_at: "2025-06-14T09:46:40Z".into(),
        };
        let mut answers = BTreeMap::new();
        answers.insert(
            "answers/qwen25-coder-14b/rust-parser-1".to_string(),
            format!("{HOSTILE}\n\n````rust\nfn main() {{}}\n````\n\n<iframe src=\"http://evil\"></iframe>\n"),
        );
        ReportInput {
            cycle: "c42".into(),
            results: BenchmarkResults {
                verification,
                models: vec![qwen, llama, codellama, gemma],
                escalations: vec![esc_id.into()],
                aborted: None,
                concurrent: None,
                hosts: Vec::new(),
            },
            troubleshooting: vec![escalation],
            answers,
            telemetry_series: [
                ("qwen25-coder-14b", series_csv(31, 2.0, 2.9, Some((71.0, 300.0)))),
                ("llama31-70b", series_csv(94, 20.0, 33.7, Some((84.0, 160.0)))),
                ("gemma3-270m", series_csv(28, 2.0, 0.41, None)),
            ]
            .into_iter()
            .map(|(m, csv)| (m.to_string(), csv))
            .collect(),
        }
    }

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
        assert_eq!(csv_text("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
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
            (Some(40.0), Some(2), vec![Setting::MemoryLimitGb(40.0)])
        );
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
        // The Ollama request carries the options the measured requests carried.
        assert!(
            guide.contains(r#""options":{"num_ctx":8192,"num_predict":512,"seed":42,"temperature":0.0}"#),
            "{guide}"
        );
        // The compose service for the host process keeps the recorded flags (-c is context × slots).
        assert!(
            guide.contains(r#""-c", "8192", "-np", "1", "--metrics", "--no-webui", "-t", "8", "-ngl", "0""#),
            "{guide}"
        );
    }

    #[test]
    fn a_model_without_a_recorded_launch_gets_no_rebuilt_command() {
        let mut input = fixture();
        input.results.models[3].launch = None;
        input.results.models[3].deployment.clear();
        let guide = page(&render_reports(&input), "deployment-guide.md");
        assert!(guide.contains("The Writer recorded no command for this model"), "{guide}");
    }

    #[test]
    fn cloud_comparison_reads_both_ways() {
        assert_eq!(compare_price(1.0, 10.0, 10.0), "local 10.0× cheaper");
        assert_eq!(compare_price(2.0, 0.28, 1.1), "cloud 1.82–7.14× cheaper");
        assert_eq!(compare_price(0.5, 0.28, 1.1), "within the cloud range");
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

/// Model text made safe for a text file or a CSV cell (`cat`, a spreadsheet): valid UTF-8 (the
/// caller decodes lossily) with
/// every control character but newline, tab and carriage return shown as a visible symbol
/// instead of acting on the terminal: C0 controls as Unicode control pictures (ESC → `␛`, NUL
/// → `␀`), DEL as `␡`, C1 controls (such as CSI, U+009B) as `<U+009B>`. The exact bytes stay in
/// the object store (the run's `answer` reference and its SHA-256).
pub fn terminal_safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' | '\t' | '\r' => out.push(c),
            '\u{0}'..='\u{1f}' => out.push(char::from_u32(0x2400 + c as u32).unwrap_or('\u{fffd}')),
            '\u{7f}' => out.push('\u{2421}'),
            '\u{80}'..='\u{9f}' => out.push_str(&format!("<U+{:04X}>", c as u32)),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod safe_text_tests {
    use super::{csv_text, terminal_safe};

    #[test]
    fn control_characters_become_visible_symbols() {
        assert_eq!(terminal_safe("a\u{1b}[31mb\0c\u{7f}\u{9b}d\n\té"), "a␛[31mb␀c␡<U+009B>d\n\té");
        assert_eq!(terminal_safe("plain text\r\n"), "plain text\r\n");
        assert_eq!(csv_text("=1+1\u{1b}[2J"), "'=1+1␛[2J");
    }
}
