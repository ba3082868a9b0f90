//! Cycle plans: what to test, on which engine, and what counts as success.
//!
//! A plan is TOML. Parsing rejects unknown fields (a typo is an error, not a silent default)
//! and every semantic check names the field and what was expected.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A plan could not be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlanError {
    /// The TOML did not parse or a field had the wrong type.
    #[error("{0}")]
    Syntax(String),
    /// A field parsed but its value cannot be used.
    #[error("field `{field}`: {problem}")]
    Invalid {
        /// Dotted path of the field, e.g. `models[1].memory_limit_gb`.
        field: String,
        /// What was wrong and what was expected.
        problem: String,
    },
}

/// The whole plan for one testing cycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// A short name shown in reports.
    pub name: String,
    /// What this plan is for.
    #[serde(default)]
    pub description: String,
    /// Settings that apply to every model unless the model overrides them.
    #[serde(default)]
    pub defaults: Defaults,
    /// What the host must offer.
    #[serde(default)]
    pub host: HostRequirements,
    /// The models to test, in order.
    pub models: Vec<ModelSpec>,
    /// The prompts every model answers.
    pub prompts: Vec<PromptSpec>,
    /// Several models at once, and concurrent requests to one.
    #[serde(default)]
    pub concurrent: Option<ConcurrentPhase>,
    /// The success criteria held against the measurements.
    #[serde(default)]
    pub criteria: Criteria,
    /// What Debug does with each class of failure.
    #[serde(default)]
    pub policy: Policy,
    /// Inputs for the business case.
    #[serde(default)]
    pub cost: Option<CostInputs>,
    /// llama-bench's standard test per model (`pp512` / `tg128`).
    #[serde(default)]
    pub standard: StandardTest,
    /// Claims the plan's source document makes, each checked against a measurement in the
    /// reports' claims ledger (the models' `projected` figures are claims too).
    #[serde(default)]
    pub claims: Vec<Claim>,
    /// A search for each model's best settings after its measurement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tune: Option<TuneSpec>,
}

/// Measurement settings shared by all models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Defaults {
    /// Measured repetitions of each prompt (the warm-up is extra).
    pub repetitions: u32,
    /// Send one excluded request before measuring.
    pub warmup: bool,
    /// Output token cap per request.
    pub max_tokens: u32,
    /// Sampling temperature (0 for repeatability).
    pub temperature: f64,
    /// Fixed sampling seed.
    pub seed: u64,
    /// Context window in tokens.
    pub context: u32,
    /// Parallel request slots in the engine.
    pub parallel: u32,
    /// Per-request limit in seconds; raised for a model whose predicted decode ceiling needs
    /// longer for `max_tokens` (a slow stream that is still producing is not cut).
    pub request_timeout_s: u64,
    /// Longest silence, in seconds, once an answer has started streaming: a stream that sends
    /// nothing for this long has stalled and fails.
    pub stall_timeout_s: u64,
    /// How long the engine may take to answer its health check, in seconds.
    pub load_timeout_s: u64,
    /// Telemetry samples per second.
    pub sample_hz: f64,
    /// Coefficient of variation above which a figure is flagged as unstable.
    pub cv_flag: f64,
    /// Pull the next model (Ollama) while the current one is measured. Saves cycle time but
    /// the download competes with the measurement, so it is off by default and the reports say
    /// when it was on.
    pub pull_ahead: bool,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            repetitions: 3,
            warmup: true,
            max_tokens: 256,
            temperature: 0.0,
            seed: 42,
            context: 4096,
            parallel: 1,
            request_timeout_s: 600,
            stall_timeout_s: 120,
            load_timeout_s: 300,
            sample_hz: 1.0,
            cv_flag: 0.10,
            pull_ahead: false,
        }
    }
}

/// What the host must offer before the cycle runs models.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostRequirements {
    /// Where model files live (disk free is measured here). `~` and `${VAR}` expand.
    pub model_store: Option<String>,
    /// Minimum free disk under the model store, GB.
    pub min_disk_free_gb: Option<f64>,
    /// Memory a container must really be able to allocate, GB (tested under the plan's largest
    /// container limit).
    pub allocatable_gb: Option<f64>,
    /// An image with `dd` for the allocation test (default `busybox:latest`, used only if present).
    pub allocation_image: Option<String>,
    /// Minimum total RAM, GB.
    pub min_ram_gb: Option<f64>,
    /// The CUDA image the GPU-in-container check runs `nvidia-smi` in (pulled when absent;
    /// default [`DEFAULT_GPU_CHECK_IMAGE`]). The check runs when a Docker model asks for GPUs.
    pub gpu_check_image: Option<String>,
}

/// Which inference engine serves a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EngineKind {
    /// Ollama's REST API.
    Ollama,
    /// llama.cpp's `llama-server` (OpenAI-compatible API).
    LlamaServer,
    /// Any OpenAI-compatible API (vLLM, LM Studio, llama-server…) at an already running
    /// endpoint; only with `runtime = "endpoint"`.
    #[serde(rename = "openai")]
    OpenAi,
}

impl EngineKind {
    /// Whether the engine speaks Ollama's own API (`/api/…`) rather than OpenAI's (`/v1/…`).
    pub fn speaks_ollama(self) -> bool {
        self == EngineKind::Ollama
    }
}

/// Where the engine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Runtime {
    /// A container created through the Docker API.
    Docker,
    /// A host process started and stopped by the Writer.
    Process,
    /// An engine already running at the model's `url`, which threadcycle never starts, stops,
    /// pulls into or reconfigures: it only measures.
    Endpoint,
}

/// A closed or half-open range of projected figures, e.g. `{ min = 13, max = 15 }`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bounds {
    /// Lower bound, if any.
    #[serde(default)]
    pub min: Option<f64>,
    /// Upper bound, if any.
    #[serde(default)]
    pub max: Option<f64>,
}

impl Bounds {
    /// Whether `v` lies within the bounds.
    pub fn contains(&self, v: f64) -> bool {
        self.min.is_none_or(|m| v >= m) && self.max.is_none_or(|m| v <= m)
    }
}

impl std::fmt::Display for Bounds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.min, self.max) {
            (Some(a), Some(b)) if a == b => write!(f, "{a}"),
            (Some(a), Some(b)) => write!(f, "{a}–{b}"),
            (Some(a), None) => write!(f, "{a}+"),
            (None, Some(b)) => write!(f, "≤ {b}"),
            (None, None) => write!(f, "—"),
        }
    }
}

/// The figures the plan expects for a model (from the seed's validation matrix).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Projected {
    /// RAM used, GB.
    pub ram_gb: Option<Bounds>,
    /// VRAM used, GB.
    pub vram_gb: Option<Bounds>,
    /// Response time per prompt, seconds.
    pub response_time_s: Option<Bounds>,
    /// Words per answer.
    pub words: Option<Bounds>,
}

/// GPUs requested for a container.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GpuRequest {
    /// `--gpus all`.
    All,
    /// No GPU.
    #[default]
    None,
    /// The GPUs with these indices.
    Indices(Vec<u32>),
}

/// One model to deploy and measure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// A short label, unique in the plan (e.g. `deepseek-coder-33b`).
    pub name: String,
    /// Which engine serves it.
    pub engine: EngineKind,
    /// Where the engine runs.
    pub runtime: Runtime,
    /// The Ollama tag (`deepseek-coder:33b`), for the Ollama engine; for an endpoint, the
    /// model's name as the engine lists it (`/api/tags`, `/v1/models`).
    #[serde(default)]
    pub tag: Option<String>,
    /// The base URL of an engine already running (`http://127.0.0.1:11434`), for the endpoint
    /// runtime only.
    #[serde(default)]
    pub url: Option<String>,
    /// The GGUF file, for llama-server. `~` and `${VAR}` / `${VAR:-default}` expand.
    #[serde(default)]
    pub model_path: Option<String>,
    /// Container image, for the Docker runtime.
    #[serde(default)]
    pub image: Option<String>,
    /// The engine binary, for the process runtime (default: `llama-server` on PATH or `$LLAMA_SERVER`;
    /// for the Ollama engine, `ollama` on PATH, run as `ollama serve`).
    #[serde(default)]
    pub binary: Option<String>,
    /// Container memory limit, GB.
    #[serde(default)]
    pub memory_limit_gb: Option<f64>,
    /// GPUs for the container.
    #[serde(default)]
    pub gpus: Option<GpuRequest>,
    /// Host port for the engine (a free one when absent).
    #[serde(default)]
    pub port: Option<u16>,
    /// Context window override.
    #[serde(default)]
    pub context: Option<u32>,
    /// Layers to put on the GPU (engine default when absent).
    #[serde(default)]
    pub gpu_layers: Option<i32>,
    /// CPU threads for the engine.
    #[serde(default)]
    pub threads: Option<u32>,
    /// Batch size for prompt processing (llama-server `-b`/`-ub`, Ollama `num_batch`).
    #[serde(default)]
    pub batch: Option<u32>,
    /// KV cache type, `f16`, `q8_0` or `q4_0` (llama-server `-ctk/-ctv`, Ollama
    /// `OLLAMA_KV_CACHE_TYPE`; the quantized types need flash attention).
    #[serde(default)]
    pub kv_cache_type: Option<crate::settings::KvCacheType>,
    /// Flash attention, `on`, `off` or `auto` (llama-server `-fa`, Ollama `OLLAMA_FLASH_ATTENTION`).
    #[serde(default)]
    pub flash_attention: Option<crate::settings::FlashAttention>,
    /// A chat template for llama-server to format prompts with (`--chat-template`, one of its
    /// built-in names such as `gemma`, `llama3`, `chatml`), for a GGUF that carries none or a
    /// wrong one. Ollama takes its template from the model's own `TEMPLATE` layer instead.
    #[serde(default)]
    pub chat_template: Option<String>,
    /// The model is a base model (not trained to follow instructions): it continues text, so the
    /// reports measure its speed and memory but do not assess its answers' quality.
    #[serde(default)]
    pub base_model: bool,
    /// Environment for the engine (e.g. `OLLAMA_KV_CACHE_TYPE`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Extra engine arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Parameter count in billions, when known (for reports).
    #[serde(default)]
    pub params_b: Option<f64>,
    /// The figures the plan expects.
    #[serde(default)]
    pub projected: Projected,
    /// Keep the container after measuring.
    #[serde(default)]
    pub keep: bool,
    /// Run the model even when the Reader predicts it does not fit (the operator's override).
    #[serde(default)]
    pub ignore_fit: bool,
    /// Measured repetitions of each prompt for this model (`defaults.repetitions` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repetitions: Option<u32>,
    /// The model is a baseline the larger models are compared with (a `[concurrent]` model
    /// answering the plan's prompts alone, added when the phase has `baseline = true`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub baseline: bool,
}

impl ModelSpec {
    /// What identifies the model to the engine (tag or file).
    pub fn model_ref(&self) -> &str {
        self.tag.as_deref().or(self.model_path.as_deref()).unwrap_or(&self.name)
    }
}

/// One prompt every model answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptSpec {
    /// Short id used in tables (e.g. `lab-architecture`).
    pub id: String,
    /// A human title.
    #[serde(default)]
    pub title: String,
    /// Optional system message.
    #[serde(default)]
    pub system: Option<String>,
    /// The prompt text.
    pub text: String,
    /// Topics a complete answer covers (rubric).
    #[serde(default)]
    pub required_topics: Vec<String>,
    /// Output token cap for this prompt.
    #[serde(default)]
    pub max_tokens: Option<u32>,
}

/// The concurrent phase.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConcurrentPhase {
    /// Models deployed together.
    pub models: Vec<ModelSpec>,
    /// Concurrency levels for one model (e.g. 1, 2, 4).
    pub levels: Vec<u32>,
    /// Each of these models also answers the plan's prompts once, alone, before the larger
    /// models are compared with it (the quality page's baseline, the baseline claim).
    pub baseline: bool,
}

/// Success criteria.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Criteria {
    /// Minimum GPU utilisation while generating, %.
    pub min_gpu_util_pct: Option<f64>,
    /// Maximum sustained GPU temperature, °C.
    pub max_temp_c: Option<f64>,
    /// Temperature at which a paused run resumes, °C.
    pub resume_temp_c: Option<f64>,
    /// Maximum idle GPU temperature, °C.
    pub max_idle_temp_c: Option<f64>,
    /// Memory must stay within container limits.
    pub memory_within_limits: Option<bool>,
    /// Minimum decode tokens/s.
    pub min_decode_tps: Option<f64>,
}

/// A figure a claim is about: what the claims ledger measures to check it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ClaimMetric {
    /// Peak engine RAM of a model (container working set or process RSS), GB.
    RamGb,
    /// Peak VRAM while a model ran, GB.
    VramGb,
    /// Mean end-to-end response time of a model's answers, seconds.
    ResponseTimeS,
    /// Mean words per answer.
    Words,
    /// Mean decode speed, tokens/s.
    DecodeTps,
    /// Mean GPU utilisation while a model generated, %.
    GpuUtilPct,
    /// Peak GPU temperature while a model generated, °C.
    GpuTempC,
    /// Memory a container could really allocate (the Reader's allocation test), GB.
    AllocatableGb,
    /// Free disk under the model store at host verification, GB.
    DiskFreeGb,
    /// This box's cost per million output tokens (the business case's total), USD.
    UsdPerMtok,
    /// A price quoted for another service (a cloud API, another local setup), USD per million
    /// tokens: an input the box cannot measure.
    ReferenceUsdPerMtok,
    /// An improvement over a baseline model's answers (needs the baseline answering alone).
    BaselineImprovement,
}

impl ClaimMetric {
    /// Every metric, in the order the ledger lists them.
    pub const ALL: [ClaimMetric; 12] = [
        ClaimMetric::RamGb,
        ClaimMetric::VramGb,
        ClaimMetric::ResponseTimeS,
        ClaimMetric::Words,
        ClaimMetric::DecodeTps,
        ClaimMetric::GpuUtilPct,
        ClaimMetric::GpuTempC,
        ClaimMetric::AllocatableGb,
        ClaimMetric::DiskFreeGb,
        ClaimMetric::UsdPerMtok,
        ClaimMetric::ReferenceUsdPerMtok,
        ClaimMetric::BaselineImprovement,
    ];

    /// The name plans use (`metric = "ram_gb"`).
    pub fn name(self) -> &'static str {
        match self {
            ClaimMetric::RamGb => "ram_gb",
            ClaimMetric::VramGb => "vram_gb",
            ClaimMetric::ResponseTimeS => "response_time_s",
            ClaimMetric::Words => "words",
            ClaimMetric::DecodeTps => "decode_tps",
            ClaimMetric::GpuUtilPct => "gpu_util_pct",
            ClaimMetric::GpuTempC => "gpu_temp_c",
            ClaimMetric::AllocatableGb => "allocatable_gb",
            ClaimMetric::DiskFreeGb => "disk_free_gb",
            ClaimMetric::UsdPerMtok => "usd_per_mtok",
            ClaimMetric::ReferenceUsdPerMtok => "reference_usd_per_mtok",
            ClaimMetric::BaselineImprovement => "baseline_improvement",
        }
    }

    /// The metric a plan names, if it is one.
    pub fn from_name(name: &str) -> Option<ClaimMetric> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Whether the figure belongs to one model (else to the host, or to no measurement).
    pub fn per_model(self) -> bool {
        !matches!(self, ClaimMetric::AllocatableGb | ClaimMetric::DiskFreeGb | ClaimMetric::ReferenceUsdPerMtok)
    }

    /// The unit the figure is written in.
    pub fn unit(self) -> &'static str {
        match self {
            ClaimMetric::RamGb | ClaimMetric::VramGb | ClaimMetric::AllocatableGb | ClaimMetric::DiskFreeGb => "GB",
            ClaimMetric::ResponseTimeS => "s",
            ClaimMetric::Words => "words",
            ClaimMetric::DecodeTps => "tok/s",
            ClaimMetric::GpuUtilPct => "%",
            ClaimMetric::GpuTempC => "°C",
            ClaimMetric::UsdPerMtok | ClaimMetric::ReferenceUsdPerMtok => "USD per million tokens",
            ClaimMetric::BaselineImprovement => "",
        }
    }
}

/// A claim from the plan's source document, as data: its words, the figure it is about and the
/// range it claims.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claim {
    /// The claim as the document words it (the ledger quotes it).
    pub text: String,
    /// What it is about: one of [`ClaimMetric`]'s names (`ram_gb`, `gpu_temp_c`, …).
    pub metric: String,
    /// The range it claims, e.g. `{ min = 80 }` for "80%+".
    #[serde(default)]
    pub expected: Bounds,
    /// The model it is about (a name from `models` or `concurrent.models`); absent: every
    /// model of the plan, for a per-model figure.
    #[serde(default)]
    pub model: Option<String>,
    /// The prompt whose answers it is about (for words and response time); absent: all.
    #[serde(default)]
    pub prompt: Option<String>,
}

impl Claim {
    /// The metric, once the plan has been validated.
    pub fn metric(&self) -> Option<ClaimMetric> {
        ClaimMetric::from_name(&self.metric)
    }
}

/// What Debug does with a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyAction {
    /// Apply the first safe remediation, up to `max_attempts`.
    Auto,
    /// Wait for the operator up to `ask_timeout_s`, then fall back to `auto`'s choice.
    Ask,
    /// Skip the model.
    Skip,
}

/// Debug's policy per failure class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// The action for classes not listed in `per_class`.
    pub default: PolicyAction,
    /// Per failure class (`oom_killed`, `engine_unhealthy`, `model_not_found`, …); a name
    /// that is not a failure class is an error in the plan.
    pub per_class: BTreeMap<crate::results::FailureClass, PolicyAction>,
    /// Attempts per model, the first included.
    pub max_attempts: u32,
    /// How long an `ask` waits for the operator, seconds.
    pub ask_timeout_s: u64,
    /// How long Main lets an agent the cycle waits on go without a heartbeat (it beats every
    /// 5 s) before it fails the cycle with that agent's name, seconds; 0 = wait for ever.
    pub agent_timeout_s: u64,
    /// What a failed host check does before anything is deployed: `ask` (default),
    /// `continue` or `abort`.
    pub failed_checks: FailedChecks,
}

impl Policy {
    /// The action for a failure class: its own, else the default.
    pub fn action_for(&self, class: crate::results::FailureClass) -> PolicyAction {
        self.per_class.get(&class).copied().unwrap_or(self.default)
    }
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            default: PolicyAction::Auto,
            per_class: BTreeMap::new(),
            max_attempts: 3,
            ask_timeout_s: 900,
            agent_timeout_s: 600,
            failed_checks: FailedChecks::Ask,
        }
    }
}

impl Plan {
    /// Parses and validates a plan from TOML text.
    pub fn from_toml(text: &str) -> Result<Plan, PlanError> {
        let mut plan: Plan = toml::from_str(text).map_err(|e| PlanError::Syntax(e.to_string()))?;
        plan.add_baselines();
        plan.validate()?;
        Ok(plan)
    }

    /// Checks every value that parsed but may still be unusable.
    pub fn validate(&self) -> Result<(), PlanError> {
        let bad = |field: String, problem: String| Err(PlanError::Invalid { field, problem });
        if self.name.trim().is_empty() {
            return bad("name".into(), "must not be empty".into());
        }
        if self.models.is_empty() {
            return bad("models".into(), "the plan lists no model: add at least one [[models]] table".into());
        }
        if self.prompts.is_empty() {
            return bad("prompts".into(), "the plan lists no prompt: add at least one [[prompts]] table".into());
        }
        let d = &self.defaults;
        if !(1..=1000).contains(&d.repetitions) {
            return bad("defaults.repetitions".into(), format!("expected 1 to 1000, got {}", d.repetitions));
        }
        if !(1..=1_000_000).contains(&d.max_tokens) {
            return bad("defaults.max_tokens".into(), format!("expected 1 to 1000000, got {}", d.max_tokens));
        }
        if !(0.0..=2.0).contains(&d.temperature) {
            return bad("defaults.temperature".into(), format!("expected 0.0 to 2.0, got {}", d.temperature));
        }
        if !(128..=10_000_000).contains(&d.context) {
            return bad("defaults.context".into(), format!("expected 128 to 10000000 tokens, got {}", d.context));
        }
        if !(1..=256).contains(&d.parallel) {
            return bad("defaults.parallel".into(), format!("expected 1 to 256, got {}", d.parallel));
        }
        if !(1..=86_400).contains(&d.request_timeout_s) {
            return bad(
                "defaults.request_timeout_s".into(),
                format!("expected 1 to 86400, got {}", d.request_timeout_s),
            );
        }
        if !(1..=86_400).contains(&d.stall_timeout_s) {
            return bad("defaults.stall_timeout_s".into(), format!("expected 1 to 86400, got {}", d.stall_timeout_s));
        }
        if !(1..=86_400).contains(&d.load_timeout_s) {
            return bad("defaults.load_timeout_s".into(), format!("expected 1 to 86400, got {}", d.load_timeout_s));
        }
        if !(d.sample_hz > 0.0 && d.sample_hz <= 10.0) {
            return bad(
                "defaults.sample_hz".into(),
                format!("expected more than 0 and at most 10, got {}", d.sample_hz),
            );
        }
        if !(d.cv_flag > 0.0 && d.cv_flag.is_finite()) {
            return bad("defaults.cv_flag".into(), format!("expected a positive number, got {}", d.cv_flag));
        }
        if d.pull_ahead && !self.models.iter().any(|m| m.engine == EngineKind::Ollama && m.runtime != Runtime::Endpoint)
        {
            return bad(
                "defaults.pull_ahead".into(),
                "only Ollama models threadcycle starts are pulled (never an endpoint's), and this plan has none: remove it or set it to false".into(),
            );
        }
        for (field, v) in [
            ("host.min_disk_free_gb", self.host.min_disk_free_gb),
            ("host.allocatable_gb", self.host.allocatable_gb),
            ("host.min_ram_gb", self.host.min_ram_gb),
        ] {
            if let Some(v) = v
                && !(v.is_finite() && (0.0..=1_000_000.0).contains(&v))
            {
                return bad(field.into(), format!("expected 0 to 1000000 GB, got {v}"));
            }
        }
        if let Some(problem) = self.host.gpu_check_image.as_deref().and_then(image_reference_problem) {
            return bad("host.gpu_check_image".into(), problem);
        }
        let mut names = std::collections::BTreeSet::new();
        let all_models = self.models.iter().enumerate().map(|(i, m)| (format!("models[{i}]"), m)).chain(
            self.concurrent
                .iter()
                .flat_map(|c| c.models.iter().enumerate().map(|(i, m)| (format!("concurrent.models[{i}]"), m))),
        );
        for (at, m) in all_models {
            validate_model(&at, m)?;
            if !at.starts_with("concurrent") && !names.insert(m.name.clone()) {
                return bad(
                    format!("{at}.name"),
                    format!("`{}` is used by an earlier model: names must be unique", m.name),
                );
            }
        }
        if let Some(c) = &self.concurrent
            && let Some(l) = c.levels.iter().find(|l| !(1..=256).contains(*l))
        {
            return bad("concurrent.levels".into(), format!("expected levels from 1 to 256, got {l}"));
        }
        let mut ids = std::collections::BTreeSet::new();
        for (i, p) in self.prompts.iter().enumerate() {
            if !valid_label(&p.id) {
                return bad(
                    format!("prompts[{i}].id"),
                    format!("`{}` is not a usable id: use 1 to 64 of A-Z a-z 0-9 - _", p.id),
                );
            }
            if !ids.insert(p.id.clone()) {
                return bad(format!("prompts[{i}].id"), format!("`{}` is used by an earlier prompt", p.id));
            }
            if p.text.trim().is_empty() {
                return bad(format!("prompts[{i}].text"), "must not be empty".into());
            }
            if let Some(0) = p.max_tokens {
                return bad(format!("prompts[{i}].max_tokens"), "expected at least 1".into());
            }
        }
        let t = self.policy.agent_timeout_s;
        if t != 0 && !(15..=7 * 86_400).contains(&t) {
            return bad(
                "policy.agent_timeout_s".into(),
                format!("expected 0 (wait for ever) or 15 to 604800 seconds (agents beat every 5 s), got {t}"),
            );
        }
        if !(1..=100).contains(&self.policy.max_attempts) {
            return bad("policy.max_attempts".into(), format!("expected 1 to 100, got {}", self.policy.max_attempts));
        }
        if let Some(c) = &self.cost {
            c.validate()?;
        }
        self.validate_standard()?;
        self.validate_tune()?;
        self.validate_claims()
    }

    fn validate_claims(&self) -> Result<(), PlanError> {
        let bad = |field: String, problem: String| Err(PlanError::Invalid { field, problem });
        for (i, c) in self.claims.iter().enumerate() {
            if c.text.trim().is_empty() {
                return bad(format!("claims[{i}].text"), "must not be empty: quote the claim".into());
            }
            let Some(metric) = c.metric() else {
                let names: Vec<&str> = ClaimMetric::ALL.iter().map(|m| m.name()).collect();
                return bad(
                    format!("claims[{i}].metric"),
                    format!("`{}` is not a metric the ledger knows: expected one of {}", c.metric, names.join(", ")),
                );
            };
            let (min, max) = (c.expected.min, c.expected.max);
            if metric != ClaimMetric::BaselineImprovement && min.is_none() && max.is_none() {
                return bad(
                    format!("claims[{i}].expected"),
                    "give the claimed figure as `{ min = … }`, `{ max = … }` or both".into(),
                );
            }
            if let Some(v) = [min, max].into_iter().flatten().find(|v| !v.is_finite()) {
                return bad(format!("claims[{i}].expected"), format!("expected a finite number, got {v}"));
            }
            if let (Some(a), Some(b)) = (min, max)
                && a > b
            {
                return bad(format!("claims[{i}].expected"), format!("min {a} is above max {b}"));
            }
            if let Some(m) = &c.model {
                if !metric.per_model() {
                    return bad(
                        format!("claims[{i}].model"),
                        format!("`{}` is not a figure of one model: remove `model`", metric.name()),
                    );
                }
                let known = self
                    .models
                    .iter()
                    .chain(self.concurrent.iter().flat_map(|c| c.models.iter()))
                    .any(|s| &s.name == m);
                if !known {
                    return bad(format!("claims[{i}].model"), format!("`{m}` is not a model of this plan"));
                }
            }
            if let Some(p) = &c.prompt {
                if !matches!(metric, ClaimMetric::Words | ClaimMetric::ResponseTimeS) {
                    return bad(
                        format!("claims[{i}].prompt"),
                        format!("only words and response_time_s are per prompt, not `{}`", metric.name()),
                    );
                }
                if !self.prompts.iter().any(|x| &x.id == p) {
                    return bad(format!("claims[{i}].prompt"), format!("`{p}` is not a prompt of this plan"));
                }
            }
        }
        Ok(())
    }

    /// The context window for a model.
    pub fn context_for(&self, m: &ModelSpec) -> u32 {
        m.context.unwrap_or(self.defaults.context)
    }

    /// The output token cap for a prompt.
    pub fn max_tokens_for(&self, p: &PromptSpec) -> u32 {
        p.max_tokens.unwrap_or(self.defaults.max_tokens)
    }
}

fn valid_label(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn validate_model(at: &str, m: &ModelSpec) -> Result<(), PlanError> {
    let bad = |field: &str, problem: String| Err(PlanError::Invalid { field: format!("{at}.{field}"), problem });
    if !valid_label(&m.name) {
        return bad("name", format!("`{}` is not a usable name: use 1 to 64 of A-Z a-z 0-9 - _", m.name));
    }
    if let Some(r) = m.repetitions.filter(|r| !(1..=1000).contains(r)) {
        return bad("repetitions", format!("expected 1 to 1000, got {r}"));
    }
    if m.runtime == Runtime::Endpoint {
        endpoint::validate_endpoint(at, m)?;
    } else if m.url.is_some() {
        return bad(
            "url",
            "only an endpoint model has a url: set `runtime = \"endpoint\"` or remove it (threadcycle starts this engine itself)"
                .into(),
        );
    }
    match (m.engine, m.runtime) {
        (_, Runtime::Endpoint) => {}
        (EngineKind::OpenAi, _) => {
            return bad(
                "engine",
                "`openai` names an API, not an engine threadcycle can start: use it with `runtime = \"endpoint\"` and a url"
                    .into(),
            );
        }
        (EngineKind::Ollama, _) if m.tag.as_deref().is_none_or(|t| t.trim().is_empty()) => {
            return bad("tag", "the ollama engine needs the model's tag, e.g. `deepseek-coder:33b`".into());
        }
        (EngineKind::LlamaServer, _) if m.model_path.as_deref().is_none_or(|t| t.trim().is_empty()) => {
            return bad("model_path", "the llama-server engine needs the GGUF file's path".into());
        }
        _ => {}
    }
    if m.runtime == Runtime::Docker && m.image.as_deref().is_none_or(|t| t.trim().is_empty()) {
        return bad("image", "the docker runtime needs an image, e.g. `ollama/ollama:0.12.6`".into());
    }
    if let Some(l) = m.memory_limit_gb
        && !(l.is_finite() && (0.0625..=100_000.0).contains(&l))
    {
        return bad("memory_limit_gb", format!("expected 0.0625 to 100000 GB, got {l}"));
    }
    if let Some(c) = m.context
        && !(128..=10_000_000).contains(&c)
    {
        return bad("context", format!("expected 128 to 10000000 tokens, got {c}"));
    }
    if let Some(t) = m.threads
        && !(1..=1024).contains(&t)
    {
        return bad("threads", format!("expected 1 to 1024, got {t}"));
    }
    if let Some(l) = m.gpu_layers
        && l < -1
    {
        return bad("gpu_layers", format!("expected -1 (engine decides) or a layer count, got {l}"));
    }
    if let Some(t) = &m.chat_template {
        if m.engine == EngineKind::Ollama {
            return bad(
                "chat_template",
                "Ollama formats prompts with the model's own TEMPLATE layer; set a template in a Modelfile (`ollama create`) instead".into(),
            );
        }
        if t.is_empty() || t.len() > 64 || !t.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            return bad(
                "chat_template",
                format!("`{t}` is not a llama.cpp built-in template name (e.g. `gemma`, `llama3`, `chatml`)"),
            );
        }
    }
    for k in m.env.keys() {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return bad("env", format!("`{k}` is not a usable environment variable name"));
        }
    }
    Ok(())
}

/// Expands `~`, `$VAR`, `${VAR}` and `${VAR:-default}` in a path from a plan.
///
/// `lookup` supplies the environment (so the caller decides where it comes from). Hand-written
/// rather than `shellexpand`'s, which differs where a plan's mistakes must be errors: it leaves
/// an unclosed `${` and a `~` without HOME as they are, and does not expand a default
/// (`${MODELS:-~/models}`).
pub fn expand_path(raw: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = raw;
    if let Some(r) = rest.strip_prefix('~')
        && (r.is_empty() || r.starts_with('/'))
    {
        out.push_str(&lookup("HOME").ok_or("`~` used but HOME is not set")?);
        rest = r;
    }
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(inner) = after.strip_prefix('{') {
            let end = inner.find('}').ok_or_else(|| format!("unclosed `${{` in `{raw}`"))?;
            let body = &inner[..end];
            let (name, default) = match body.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (body, None),
            };
            match (lookup(name).filter(|v| !v.is_empty()), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(&expand_path(d, lookup)?),
                (None, None) => return Err(format!("environment variable {name} is not set (used in `{raw}`)")),
            }
            rest = &inner[end + 1..];
        } else {
            let len = after.bytes().take_while(|b| b.is_ascii_alphanumeric() || *b == b'_').count();
            if len == 0 {
                out.push('$');
                rest = after;
                continue;
            }
            let name = &after[..len];
            out.push_str(
                &lookup(name).ok_or_else(|| format!("environment variable {name} is not set (used in `{raw}`)"))?,
            );
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

mod endpoint;

mod baseline;

mod standard;
pub use standard::StandardTest;

mod criteria;
pub use criteria::{CriterionKind, Rule};

mod cost;
pub use cost::{CloudPrice, CostInputs};

mod tune;
pub use tune::{TuneGoal, TuneKnob, TuneSpec};

mod gate;
pub use gate::{DEFAULT_GPU_CHECK_IMAGE, FailedChecks, image_reference_problem};

#[cfg(test)]
mod shipped_plans;

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
name = "t"
[[models]]
name = "m"
engine = "llama-server"
runtime = "process"
model_path = "/m.gguf"
[[prompts]]
id = "p"
text = "hi"
"#;

    #[test]
    fn a_chat_template_is_a_llama_server_setting_with_a_plain_name() {
        let plan = |engine: &str, extra: &str, t: &str| {
            Plan::from_toml(&format!(
                "name='t'\n[[models]]\nname='m'\nengine='{engine}'\nruntime='process'\n{extra}\nchat_template='{t}'\n[[prompts]]\nid='p'\ntext='x'\n"
            ))
        };
        let ok = plan("llama-server", "model_path='/m.gguf'", "gemma").expect("a named template");
        assert_eq!(ok.models[0].chat_template.as_deref(), Some("gemma"));
        let e = plan("ollama", "tag='llama3.1:70b'", "llama3").unwrap_err().to_string();
        assert!(e.contains("models[0].chat_template") && e.contains("TEMPLATE layer"), "{e}");
        let e = plan("llama-server", "model_path='/m.gguf'", "{{ bad }}").unwrap_err().to_string();
        assert!(e.contains("not a llama.cpp built-in template name"), "{e}");
    }

    #[test]
    fn minimal_plan_parses_with_defaults() {
        let p = Plan::from_toml(MIN).expect("valid");
        assert_eq!(p.defaults.repetitions, 3);
        assert_eq!(p.models[0].engine, EngineKind::LlamaServer);
    }

    #[test]
    fn unknown_field_is_named() {
        let e = Plan::from_toml(&MIN.replace("text = \"hi\"", "text = \"hi\"\ntxet = 1")).unwrap_err();
        assert!(e.to_string().contains("txet"), "{e}");
    }

    #[test]
    fn wrong_type_is_named_with_line() {
        let e = Plan::from_toml(&MIN.replace("name = \"t\"", "name = \"t\"\n[defaults]\nrepetitions = \"three\""))
            .unwrap_err();
        let s = e.to_string();
        assert!(s.contains("repetitions") && s.contains("line"), "{s}");
    }

    #[test]
    fn semantic_error_names_field() {
        let e = Plan::from_toml(&MIN.replace("runtime = \"process\"", "runtime = \"process\"\nmemory_limit_gb = -3"))
            .unwrap_err();
        assert_eq!(
            e,
            PlanError::Invalid {
                field: "models[0].memory_limit_gb".into(),
                problem: "expected 0.0625 to 100000 GB, got -3".into()
            }
        );
    }

    const OLLAMA: &str = r#"
name = "t"
[defaults]
pull_ahead = true
[[models]]
name = "a"
engine = "ollama"
runtime = "process"
tag = "llama3.1:8b"
[[prompts]]
id = "p"
text = "hi"
"#;

    #[test]
    fn pull_ahead_is_off_by_default_and_needs_an_ollama_model() {
        assert!(!Plan::from_toml(MIN).expect("valid").defaults.pull_ahead);
        let p = Plan::from_toml(OLLAMA).expect("ollama as a host process with pull-ahead is valid");
        assert!(p.defaults.pull_ahead);
        assert_eq!(p.models[0].runtime, Runtime::Process);
        let e =
            Plan::from_toml(&MIN.replace("name = \"t\"", "name = \"t\"\n[defaults]\npull_ahead = true")).unwrap_err();
        match e {
            PlanError::Invalid { field, problem } => {
                assert_eq!(field, "defaults.pull_ahead");
                assert!(problem.contains("Ollama"), "{problem}");
            }
            other => panic!("unexpected {other}"),
        }
        let e = Plan::from_toml(&OLLAMA.replace("pull_ahead = true", "pull_ahead = \"yes\"")).unwrap_err();
        assert!(e.to_string().contains("pull_ahead"), "{e}");
    }

    #[test]
    fn agent_timeout_is_ten_minutes_by_default_zero_or_at_least_three_heartbeats() {
        assert_eq!(Plan::from_toml(MIN).expect("valid").policy.agent_timeout_s, 600);
        let with = |t: &str| Plan::from_toml(&format!("{MIN}\n[policy]\nagent_timeout_s = {t}\n"));
        assert_eq!(with("0").expect("0 = wait for ever").policy.agent_timeout_s, 0);
        assert_eq!(with("15").expect("15 s").policy.agent_timeout_s, 15);
        for bad in ["5", "700000"] {
            match with(bad).unwrap_err() {
                PlanError::Invalid { field, problem } => {
                    assert_eq!(field, "policy.agent_timeout_s");
                    assert!(problem.contains(bad), "{problem}");
                }
                other => panic!("unexpected {other}"),
            }
        }
        assert!(with("-1").unwrap_err().to_string().contains("agent_timeout_s"));
    }

    #[test]
    fn expands_variables_and_defaults() {
        let env = |k: &str| match k {
            "HOME" => Some("/root".to_string()),
            "A" => Some("x".to_string()),
            _ => None,
        };
        assert_eq!(expand_path("~/m", &env).unwrap(), "/root/m");
        assert_eq!(expand_path("${A}/b/$A", &env).unwrap(), "x/b/x");
        assert_eq!(expand_path("${B:-~/d}/f", &env).unwrap(), "/root/d/f");
        assert!(expand_path("${B}/f", &env).unwrap_err().contains("B is not set"));
        assert_eq!(expand_path("a$", &env).unwrap(), "a$");
    }

    const CLAIM: &str =
        "\n[[claims]]\ntext = \"GPU utilization 80%+\"\nmetric = \"gpu_util_pct\"\nexpected = { min = 80 }\n";

    fn invalid(text: &str) -> (String, String) {
        match Plan::from_toml(text) {
            Err(PlanError::Invalid { field, problem }) => (field, problem),
            other => panic!("expected a semantic error, got {other:?}"),
        }
    }

    #[test]
    fn claims_parse_with_their_metric_range_model_and_prompt() {
        let p = Plan::from_toml(&format!(
            "{MIN}{CLAIM}\n[[claims]]\ntext = \"500-1000 words\"\nmetric = \"words\"\nmodel = \"m\"\nprompt = \"p\"\nexpected = {{ min = 500, max = 1000 }}\n"
        ))
        .expect("valid");
        assert_eq!(p.claims.len(), 2);
        assert_eq!(p.claims[0].metric(), Some(ClaimMetric::GpuUtilPct));
        assert_eq!(p.claims[0].expected, Bounds { min: Some(80.0), max: None });
        assert_eq!((p.claims[1].model.as_deref(), p.claims[1].prompt.as_deref()), (Some("m"), Some("p")));
        assert!(Plan::from_toml(MIN).expect("valid").claims.is_empty(), "claims are optional");
        for m in ClaimMetric::ALL {
            assert_eq!(ClaimMetric::from_name(m.name()), Some(m));
        }
    }

    #[test]
    fn a_claim_with_an_unknown_metric_or_field_is_named() {
        let (field, problem) = invalid(&format!("{MIN}{}", CLAIM.replace("gpu_util_pct", "gpu_happiness")));
        assert_eq!(field, "claims[0].metric");
        assert!(problem.contains("gpu_happiness") && problem.contains("gpu_util_pct"), "{problem}");
        let e = Plan::from_toml(&format!("{MIN}{}", CLAIM.replace("expected", "expectd"))).unwrap_err();
        assert!(e.to_string().contains("expectd"), "{e}");
    }

    #[test]
    fn a_claim_must_be_usable() {
        let cases = [
            (CLAIM.replace("GPU utilization 80%+", " "), "claims[0].text"),
            (CLAIM.replace("expected = { min = 80 }", ""), "claims[0].expected"),
            (CLAIM.replace("min = 80", "min = 90, max = 80"), "claims[0].expected"),
            (CLAIM.replace("min = 80", "min = inf"), "claims[0].expected"),
            (format!("{CLAIM}model = \"nope\"\n"), "claims[0].model"),
            (format!("{CLAIM}prompt = \"p\"\n"), "claims[0].prompt"),
            (
                CLAIM.replace("gpu_util_pct", "disk_free_gb").replace("min = 80", "min = 100") + "model = \"m\"\n",
                "claims[0].model",
            ),
            (CLAIM.replace("gpu_util_pct", "words") + "prompt = \"nope\"\n", "claims[0].prompt"),
        ];
        for (claim, want) in cases {
            let (field, problem) = invalid(&format!("{MIN}{claim}"));
            assert_eq!(field, want, "{claim}: {problem}");
        }
        let ok = CLAIM.replace("gpu_util_pct", "baseline_improvement").replace("expected = { min = 80 }", "");
        assert!(Plan::from_toml(&format!("{MIN}{ok}")).is_ok(), "an improvement claim needs no figure");
    }

    proptest::proptest! {
        #[test]
        fn random_text_never_panics(text in "\\PC{0,400}") {
            let _ = Plan::from_toml(&text);
        }

        #[test]
        fn absurd_numbers_are_refused_by_field_name(
            field in proptest::sample::select(vec!["repetitions", "max_tokens", "context", "parallel", "request_timeout_s", "load_timeout_s", "temperature", "sample_hz"]),
            value in proptest::num::i64::ANY,
        ) {
            let text = MIN.replace("name = \"t\"", &format!("name = \"t\"\n[defaults]\n{field} = {value}"));
            match Plan::from_toml(&text) {
                Ok(p) => proptest::prop_assert!(p.validate().is_ok()),
                Err(e) => proptest::prop_assert!(e.to_string().contains(field), "{} does not name {}", e, field),
            }
        }

        #[test]
        fn models_with_random_limits_never_panic(limit in proptest::num::f64::ANY, ctx in proptest::num::u32::ANY, layers in proptest::num::i32::ANY) {
            let text = MIN.replace(
                "runtime = \"process\"",
                &format!("runtime = \"process\"\nmemory_limit_gb = {limit:?}\ncontext = {ctx}\ngpu_layers = {layers}"),
            );
            if let Err(e) = Plan::from_toml(&text) {
                proptest::prop_assert!(e.to_string().contains("models[0]") || e.to_string().contains("line"), "{}", e);
            }
        }
    }
}
