//! Progress events: published once, read by `status --watch`, `up`, the logs and the reports'
//! timeline.

use crate::ids::{CycleId, Role};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Phases of a cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Main accepted the plan.
    Planned,
    /// Reader verifies the host.
    Verifying,
    /// Writer deploys and measures.
    Benchmarking,
    /// Documentation writes reports.
    Documenting,
    /// Done.
    Complete,
}

/// The telemetry sampler's latest figures, carried live (the full series is in the results).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LiveSample {
    /// Temperature of the hottest GPU, °C.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_temp_c: Option<f64>,
    /// GPU utilisation, mean over GPUs, %.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_util_pct: Option<f64>,
    /// Power of all GPUs, W.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_power_w: Option<f64>,
    /// VRAM used on all GPUs, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vram_used_bytes: Option<u64>,
    /// Engine memory (process RSS or container working set), bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_mem_bytes: Option<u64>,
    /// Engine CPU, % of one core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_cpu_pct: Option<f64>,
    /// Host memory available, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_mem_available_bytes: Option<u64>,
}

/// Something that happened in a cycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Cycle.
    pub cycle: CycleId,
    /// Who saw it.
    pub from: Role,
    /// When.
    pub at: DateTime<Utc>,
    /// The host of a Reader or Writer on a named host (several-host cycles), so progress shows
    /// per host; None for the default host and for the other roles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// What.
    #[serde(flatten)]
    pub body: EventBody,
}

/// A step inside a model's turn, typed so that `status`, the metrics and the tests read its
/// figures instead of matching words.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Step {
    /// An engine process is being started.
    EngineStarting {
        /// The binary and, for Ollama, `serve` with its port.
        program: String,
    },
    /// Containers an earlier attempt left were removed.
    LeftoversRemoved {
        /// How many.
        containers: u32,
    },
    /// The engine's container is being created.
    ContainerCreating {
        /// Container name.
        name: String,
        /// Image.
        image: String,
    },
    /// The engine's image is being pulled from its registry; without figures at its start.
    ImagePulling {
        /// The image reference.
        image: String,
        /// Bytes of all layers seen so far that are downloaded.
        #[serde(default)]
        completed: Option<u64>,
        /// Bytes of all layers seen so far.
        #[serde(default)]
        total: Option<u64>,
        /// Bytes per second since the pull began.
        #[serde(default)]
        rate_bps: Option<f64>,
    },
    /// The engine's image was pulled.
    ImagePulled {
        /// The image reference.
        image: String,
        /// Bytes downloaded (layers already on the host not counted).
        bytes: u64,
        /// How long it took, seconds.
        seconds: f64,
    },
    /// The model is already in the engine's store.
    ModelPresent {
        /// The model's tag.
        model: String,
    },
    /// A model pull is under way; without figures at its start.
    Pulling {
        /// The model's tag.
        model: String,
        /// The layer being fetched (short digest), when known.
        #[serde(default)]
        digest: Option<String>,
        /// Bytes of that layer done.
        #[serde(default)]
        completed: Option<u64>,
        /// Bytes of that layer in all.
        #[serde(default)]
        total: Option<u64>,
        /// Bytes per second since the pull began.
        #[serde(default)]
        rate_bps: Option<f64>,
    },
    /// The pull finished.
    Pulled {
        /// The model's tag.
        model: String,
        /// Bytes in all.
        bytes: u64,
        /// How long it took, seconds.
        seconds: f64,
    },
    /// The next model is pulled while this one is measured.
    PullAhead {
        /// The model pulled.
        model: String,
        /// The model measured meanwhile.
        measuring: String,
    },
    /// The pull-ahead finished.
    PullAheadDone {
        /// The model pulled.
        model: String,
        /// Bytes in all.
        bytes: u64,
        /// How long it took, seconds.
        seconds: f64,
        /// The model measured meanwhile.
        measuring: String,
    },
    /// The pull-ahead failed; the model's own deployment pulls it.
    PullAheadFailed {
        /// The model.
        model: String,
        /// The engine's error.
        error: String,
    },
    /// The engine answers and has the model.
    EngineReady {
        /// Seconds from start to ready.
        seconds: f64,
    },
    /// The warm-up request finished (it is left out of the results).
    WarmupDone,
    /// Where the engine put the model's weights, once loaded: the share in VRAM (0 on a host
    /// without a GPU), for `status`'s GPU/CPU column and the metrics.
    WeightsPlaced {
        /// Share of the weights in VRAM, 0 to 1.
        gpu_share: f64,
    },
    /// Measuring finished; the pull-ahead is still running.
    WaitingForPullAhead,
    /// The model's turn is over: the engine stopped, or its container kept as the plan asks.
    EngineStopped {
        /// Whether the container was kept.
        kept: bool,
    },
    /// A retry keeps the runs earlier attempts measured under the same engine setup and
    /// measures only the rest.
    RunsKept {
        /// How many runs were kept.
        runs: u32,
    },
    /// An endpoint's engine was found already running with the model (nothing was started).
    EndpointFound {
        /// The engine's URL.
        url: String,
        /// The model as the engine lists it.
        model: String,
        /// The engine's process on this machine, sampled while measuring; `None` when not found.
        pid: Option<u32>,
    },
    /// The model's turn at an endpoint is over; its engine was left running, as it was found.
    EndpointLeftRunning {
        /// The engine's URL.
        url: String,
    },
    /// A remedy waits for the GPU to cool.
    CoolingDown {
        /// Seconds.
        seconds: u64,
    },
    /// The concurrent phase began.
    ConcurrentStarted,
    /// A tuning trial began: the engine restarted with the candidate's settings.
    TuneTrial {
        /// The trial's number in the search.
        number: u32,
        /// The plan's `tune.max_trials` (measured trials at most, the baseline included).
        max_trials: u32,
        /// The stage that proposed it (`baseline`, `threads`, `batch`…).
        stage: String,
        /// The candidate's settings, in words.
        config: String,
    },
    /// A tuning trial ended.
    TuneTrialDone {
        /// The trial's number.
        number: u32,
        /// Its verdict (`measured`, `over limit`, `failed`, `canceled`).
        verdict: String,
        /// Mean client decode tokens/s of its runs.
        decode_tps: Option<f64>,
        /// Mean time to first token of its runs, ms.
        ttft_ms: Option<f64>,
    },
    /// One concurrency level of the concurrent phase measured against one model.
    ConcurrentLevel {
        /// The model.
        model: String,
        /// Requests in flight at once.
        level: u32,
        /// Requests that finished.
        requests: u32,
        /// Requests that failed.
        failed: u32,
        /// Mean end-to-end latency, ms.
        mean_e2e_ms: f64,
        /// Mean e2e over the same model's with one request in flight.
        degradation: Option<f64>,
    },
    /// The tuning search ended.
    TuneDone {
        /// Its outcome in words (the winner against the baseline, or why it stopped).
        outcome: String,
    },
}

impl Step {
    /// The step in words.
    pub fn text(&self) -> String {
        match self {
            Step::EngineStarting { program } => format!("starting {program}"),
            Step::LeftoversRemoved { containers } => {
                format!("removed {containers} container(s) left by an earlier attempt")
            }
            Step::ContainerCreating { name, image } => format!("creating container {name} from {image}"),
            Step::ImagePulling { image, completed, total, rate_bps } => {
                format!("pulling image {image}{}", pull_figures(*completed, *total, *rate_bps))
            }
            Step::ImagePulled { image, bytes, seconds } => {
                format!("pulled image {image}: {:.1} GB in {seconds:.1} s", *bytes as f64 / 1e9)
            }
            Step::ModelPresent { model } => format!("{model} already present: pull skipped"),
            Step::Pulling { model, digest, completed, total, rate_bps } => format!(
                "pulling {model}{}{}",
                digest.as_deref().map(|d| format!(" (layer {d})")).unwrap_or_default(),
                pull_figures(*completed, *total, *rate_bps)
            ),
            Step::Pulled { model, bytes, seconds } => {
                format!("pulled {model}: {:.1} GB in {seconds:.1} s", *bytes as f64 / 1e9)
            }
            Step::PullAhead { model, measuring } => {
                format!("pull-ahead: pulling {model} while {measuring} is measured")
            }
            Step::PullAheadDone { model, bytes, seconds, measuring } => format!(
                "pull-ahead: {model} pulled ({:.1} GB in {seconds:.1} s) while {measuring} was measured",
                *bytes as f64 / 1e9
            ),
            Step::PullAheadFailed { model, error } => {
                format!("pull-ahead: pulling {model} failed ({error}); its own deployment will pull it")
            }
            Step::EngineReady { seconds } => format!("engine ready after {seconds:.1} s"),
            Step::WarmupDone => "warm-up done (excluded from results)".into(),
            Step::WeightsPlaced { gpu_share } => format!("weights placed: {}", processor(*gpu_share)),
            Step::WaitingForPullAhead => "measured; waiting for the pull-ahead to finish".into(),
            Step::EngineStopped { kept: true } => "measured; container kept as the plan asks".into(),
            Step::EngineStopped { kept: false } => "engine stopped".into(),
            Step::RunsKept { runs } => {
                format!("kept {runs} run(s) measured before the failure; measuring the rest")
            }
            Step::EndpointFound { url, model, pid: Some(pid) } => {
                format!("{model} found at {url}, already running (process {pid}); nothing started")
            }
            Step::EndpointFound { url, model, pid: None } => {
                format!("{model} found at {url}, already running (its process not visible); nothing started")
            }
            Step::EndpointLeftRunning { url } => format!("measured; the engine at {url} left running as found"),
            Step::CoolingDown { seconds } => format!("cooling down for {seconds} s"),
            Step::ConcurrentStarted => "concurrent phase started".into(),
            Step::TuneTrial { number, max_trials, stage, config } => {
                format!("tuning: trial {number} ({stage}; at most {max_trials} measured): {config}")
            }
            Step::TuneTrialDone { number, verdict, decode_tps, ttft_ms } => {
                let figures: Vec<String> = decode_tps
                    .map(|t| format!("{t:.1} tok/s decode"))
                    .into_iter()
                    .chain(ttft_ms.map(|t| format!("TTFT {t:.0} ms")))
                    .collect();
                let figures = if figures.is_empty() { String::new() } else { format!(": {}", figures.join(", ")) };
                format!("tuning: trial {number} {verdict}{figures}")
            }
            Step::TuneDone { outcome } => format!("tuning done: {outcome}"),
            Step::ConcurrentLevel { model, level, requests, failed, mean_e2e_ms, degradation } => format!(
                "{model} with {level} request(s) in flight: {requests} answered{}, mean {mean_e2e_ms:.0} ms end to end{}",
                if *failed > 0 { format!(", {failed} failed") } else { String::new() },
                degradation.map(|d| format!(" ({d:.2}× alone)")).unwrap_or_default()
            ),
        }
    }
}

/// The typed event bodies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventBody {
    /// The cycle started.
    CycleStarted {
        /// Plan name.
        plan: String,
        /// Models in the plan.
        models: u32,
        /// Measured requests in total (models × prompts × repetitions).
        requests: u32,
    },
    /// A phase began.
    PhaseStarted {
        /// Which.
        phase: Phase,
    },
    /// A host check finished.
    CheckDone {
        /// Check name.
        name: String,
        /// pass / warn / fail / unavailable.
        status: String,
        /// Measured value.
        measured: String,
    },
    /// A model's turn began.
    ModelStarted {
        /// Model name.
        model: String,
        /// Position from 1.
        index: u32,
        /// Models in the plan.
        of: u32,
        /// Attempt from 1.
        attempt: u32,
    },
    /// A step inside a model's turn (engine start, pull, warm-up…).
    Step {
        /// Model name (`concurrent` for the concurrent phase).
        model: String,
        /// What happened.
        step: Step,
    },
    /// One measured request finished.
    RunMeasured {
        /// Model.
        model: String,
        /// Prompt id.
        prompt: String,
        /// Repetition from 1.
        repetition: u32,
        /// TTFT, ms.
        ttft_ms: f64,
        /// Output tokens.
        tokens: u32,
        /// Client decode tokens/s.
        decode_tps: Option<f64>,
        /// End-to-end latency, ms (client side); None from an older Writer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        e2e_ms: Option<f64>,
        /// Time per output token after the first, ms (the mean inter-token gap).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tpot_ms: Option<f64>,
        /// Prompt tokens, when the engine said.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prompt_tokens: Option<u32>,
        /// Prefill tokens/s the engine reports.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prefill_tps: Option<f64>,
        /// The sampler's latest figures when the run ended (GPU, engine process or container,
        /// host), for the live metrics.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sample: Option<LiveSample>,
    },
    /// A model's turn ended.
    ModelFinished {
        /// Model.
        model: String,
        /// measured / failed / skipped.
        outcome: String,
    },
    /// Debug opened an escalation.
    EscalationOpened {
        /// Escalation id.
        id: String,
        /// Model.
        model: String,
        /// Diagnosis in words.
        diagnosis: String,
        /// Whether the operator is asked.
        awaiting_operator: bool,
    },
    /// An escalation was decided.
    EscalationDecided {
        /// Escalation id.
        id: String,
        /// The change, in words.
        decision: String,
        /// Who decided.
        by: String,
    },
    /// A package could not be processed and was set aside.
    DeadLetter {
        /// Subject it came on.
        subject: String,
        /// Why.
        reason: String,
    },
    /// A package was delivered again and ignored.
    DuplicateIgnored {
        /// Package id.
        id: String,
    },
    /// Reports written.
    ReportsWritten {
        /// Directory.
        dir: String,
    },
    /// The cycle completed.
    CycleCompleted {
        /// Report directory.
        dir: String,
    },
    /// The cycle failed.
    CycleFailed {
        /// Why.
        reason: String,
    },
    /// The operator canceled the cycle.
    CycleCanceled,
    /// An agent the cycle waits on has sent no heartbeat for a while (Main's watchdog).
    AgentSilent {
        /// The agent (`writer-<host>`, `debug`, …).
        agent: String,
        /// Seconds since its last heartbeat (or since the cycle started, if it never beat).
        silent_s: u64,
        /// When Main fails the cycle, seconds of silence (0 = never).
        limit_s: u64,
    },
    /// Main placed a model on a host (several-host cycles).
    ModelPlaced {
        /// Model.
        model: String,
        /// The host whose Writer runs it.
        host: String,
        /// Why there, in words.
        reason: String,
    },
}

/// Bytes as `ollama pull` and `docker pull` show them: decimal units, `512 B`, `12.3 MB`, `4.1 GB`.
pub fn bytes_text(b: u64) -> String {
    let b = b as f64;
    match b {
        _ if b >= 1e9 => format!("{:.1} GB", b / 1e9),
        _ if b >= 1e6 => format!("{:.1} MB", b / 1e6),
        _ if b >= 1e3 => format!("{:.1} KB", b / 1e3),
        _ => format!("{b:.0} B"),
    }
}

/// Seconds as a short duration: `45s`, `3m05s`, `1h02m`.
pub fn duration_text(s: f64) -> String {
    let s = if s.is_finite() { s.max(0.0).round() as u64 } else { 0 };
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// The rate and time left of a pull: `35.2 MB/s, 1m22s left`; empty without a rate.
pub fn pull_rate_text(completed: Option<u64>, total: Option<u64>, rate_bps: Option<f64>) -> String {
    let Some(r) = rate_bps.filter(|r| r.is_finite() && *r > 0.0) else { return String::new() };
    let mut s = format!("{}/s", bytes_text(r as u64));
    if let (Some(done), Some(t)) = (completed, total)
        && t > 0
    {
        s.push_str(&format!(", {} left", duration_text(t.saturating_sub(done) as f64 / r)));
    }
    s
}

/// `: 1.2 GB of 4.1 GB (29%), 35.2 MB/s, 1m22s left`, as far as the figures are known.
fn pull_figures(completed: Option<u64>, total: Option<u64>, rate_bps: Option<f64>) -> String {
    let (Some(done), Some(t)) = (completed, total) else { return String::new() };
    if t == 0 {
        return String::new();
    }
    let mut s = format!(": {} of {} ({}%)", bytes_text(done), bytes_text(t), done.min(t).saturating_mul(100) / t);
    let rate = pull_rate_text(completed, total, rate_bps);
    if !rate.is_empty() {
        s.push_str(", ");
        s.push_str(&rate);
    }
    s
}

/// Where a model's weights are, the way `ollama ps` says it: `100% GPU`, `100% CPU`, or
/// `48%/52% CPU/GPU` (ollama's `cmd/cmd.go` ListRunningHandler prints the same three forms).
pub fn processor(gpu_share: f64) -> String {
    let g = (gpu_share.clamp(0.0, 1.0) * 100.0).round() as u32;
    match g {
        100 => "100% GPU".into(),
        0 => "100% CPU".into(),
        g => format!("{}%/{g}% CPU/GPU", 100 - g),
    }
}

impl Event {
    /// A new event stamped now.
    pub fn new(cycle: CycleId, from: Role, body: EventBody) -> Self {
        Self { cycle, from, at: Utc::now(), host: None, body }
    }

    /// One line for logs and piped output.
    pub fn line(&self) -> String {
        let b = &self.body;
        let text = match b {
            EventBody::CycleStarted { plan, models, requests } => {
                format!("cycle started: plan `{plan}`, {models} model(s), {requests} measured request(s)")
            }
            EventBody::PhaseStarted { phase } => format!("phase: {phase:?}"),
            EventBody::CheckDone { name, status, measured } => format!("check {name}: {status} ({measured})"),
            EventBody::ModelStarted { model, index, of, attempt } => {
                format!("model {index}/{of} {model}: attempt {attempt}")
            }
            EventBody::Step { model, step } => format!("{model}: {}", step.text()),
            EventBody::RunMeasured { model, prompt, repetition, ttft_ms, tokens, decode_tps, .. } => format!(
                "{model} {prompt} #{repetition}: TTFT {ttft_ms:.0} ms, {tokens} tokens{}",
                decode_tps.map(|t| format!(", {t:.1} tok/s")).unwrap_or_default()
            ),
            EventBody::ModelFinished { model, outcome } => format!("{model}: {outcome}"),
            EventBody::EscalationOpened { id, model, diagnosis, awaiting_operator } => format!(
                "escalation {id} ({model}): {diagnosis}{}",
                if *awaiting_operator { " — waiting for the operator: threadcycle escalations" } else { "" }
            ),
            EventBody::EscalationDecided { id, decision, by } => format!("escalation {id}: {decision} (by {by})"),
            EventBody::DeadLetter { subject, reason } => format!("dead letter on {subject}: {reason}"),
            EventBody::DuplicateIgnored { id } => format!("duplicate package {id} ignored"),
            EventBody::AgentSilent { agent, silent_s, limit_s } => format!(
                "no heartbeat from {agent} for {silent_s} s (stopped, or cut off from NATS){}",
                if *limit_s > 0 {
                    format!("; the cycle fails at {limit_s} s unless it comes back")
                } else {
                    String::new()
                }
            ),
            EventBody::ReportsWritten { dir } => format!("reports written to {dir}"),
            EventBody::CycleCompleted { dir } => format!("cycle complete: {dir}"),
            EventBody::CycleFailed { reason } => format!("cycle failed: {reason}"),
            EventBody::CycleCanceled => "cycle canceled".into(),
            EventBody::ModelPlaced { model, host, reason } => format!("{model} placed on host {host}: {reason}"),
        };
        match &self.host {
            Some(h) => format!("[{}] {}@{} {}", self.cycle, self.from, h, text),
            None => format!("[{}] {} {}", self.cycle, self.from, text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pulls_read_with_bytes_rate_and_time_left() {
        let s = Step::Pulling {
            model: "llama3.1:70b".into(),
            digest: Some("6a0746a1ec1a".into()),
            completed: Some(1_200_000_000),
            total: Some(4_100_000_000),
            rate_bps: Some(35_200_000.0),
        };
        assert_eq!(
            s.text(),
            "pulling llama3.1:70b (layer 6a0746a1ec1a): 1.2 GB of 4.1 GB (29%), 35.2 MB/s, 1m22s left"
        );
        let s = Step::ImagePulling { image: "ollama/ollama".into(), completed: None, total: None, rate_bps: None };
        assert_eq!(s.text(), "pulling image ollama/ollama");
        let s =
            Step::ImagePulling { image: "i".into(), completed: Some(512), total: Some(2_000_000), rate_bps: Some(0.0) };
        assert_eq!(s.text(), "pulling image i: 512 B of 2.0 MB (0%)");
        assert_eq!(duration_text(7322.0), "2h02m");
        assert_eq!(pull_rate_text(Some(5), Some(10), Some(f64::NAN)), "");
    }
}
