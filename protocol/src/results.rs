//! Measurements and findings carried between agents: host facts, checks, fit verdicts,
//! benchmark runs, escalations.

use serde::{Deserialize, Serialize};

/// A reference to a payload kept in the JetStream object store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    /// Object name in the bucket.
    pub key: String,
    /// Hex SHA-256 of the content.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// Outcome of one verification check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    /// Within the threshold.
    Pass,
    /// Usable, with a caveat.
    Warn,
    /// Below the threshold.
    Fail,
    /// Could not be measured here (e.g. no NVIDIA GPU).
    Unavailable,
}

/// One host check: what was measured and what it was held to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// Stable name, e.g. `ram.available`.
    pub name: String,
    /// Result.
    pub status: CheckStatus,
    /// The measured value, in words and units.
    pub measured: String,
    /// The threshold it was held to, if any.
    pub threshold: Option<String>,
    /// Detail for the operator.
    pub detail: String,
}

/// One GPU as NVML reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuInfo {
    /// Index.
    pub index: u32,
    /// Product name.
    pub name: String,
    /// VRAM total, bytes.
    pub vram_total: u64,
    /// VRAM used, bytes.
    pub vram_used: u64,
    /// Temperature, °C.
    pub temperature_c: Option<u32>,
    /// Power draw, W.
    pub power_w: Option<f64>,
    /// Driver version.
    pub driver: String,
    /// Peak memory bandwidth, decimal GB/s: bus width × maximum memory clock × 2 (double data
    /// rate), as NVML reports them; None when NVML does not say.
    #[serde(default)]
    pub memory_bandwidth_gbs: Option<f64>,
}

/// What the Reader measured about the host.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct HostFacts {
    /// Host name.
    pub hostname: String,
    /// Host id (subject token).
    pub host_id: String,
    /// Kernel release.
    pub kernel: String,
    /// CPU model.
    pub cpu_model: String,
    /// Logical CPUs.
    pub cpus: u32,
    /// RAM total, bytes.
    pub ram_total: u64,
    /// RAM available, bytes.
    pub ram_available: u64,
    /// Swap total, bytes.
    pub swap_total: u64,
    /// Swap free, bytes.
    pub swap_free: u64,
    /// The memory limit of the cgroup we run in, bytes (None = unlimited).
    pub cgroup_memory_limit: Option<u64>,
    /// Model store path.
    pub model_store: String,
    /// Free disk under the model store, bytes.
    pub disk_free: u64,
    /// GPUs (empty when there is none or no NVML).
    pub gpus: Vec<GpuInfo>,
    /// Why there are no GPU figures, when there are none.
    pub gpu_note: Option<String>,
    /// Docker engine version, when reachable.
    pub docker_version: Option<String>,
    /// Docker runtimes configured (e.g. `nvidia`).
    pub docker_runtimes: Vec<String>,
    /// Why Docker is not usable, when it is not.
    pub docker_note: Option<String>,
    /// Host memory bandwidth, decimal GB/s (for the decode roofline).
    #[serde(default)]
    pub ram_bandwidth_gbs: Option<f64>,
    /// How `ram_bandwidth_gbs` was obtained (measured copy, or a host profile).
    #[serde(default)]
    pub ram_bandwidth_source: Option<String>,
}

/// The Reader's verdict on one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fit {
    /// Fits wholly where it will run.
    Go,
    /// Fits with some layers on the CPU.
    GoPartialOffload,
    /// Will not fit.
    NoGo,
    /// Not enough is known to predict.
    Unknown,
}

/// Predicted memory need and verdict for one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitVerdict {
    /// Model name from the plan.
    pub model: String,
    /// The verdict.
    pub fit: Fit,
    /// Where the metadata came from (GGUF header, /api/show, built-in table, file size).
    pub source: String,
    /// Predicted weights, bytes.
    pub weights_bytes: Option<u64>,
    /// Predicted KV cache, bytes.
    pub kv_bytes: Option<u64>,
    /// Predicted compute buffers (scratch for the graph and the logits), bytes.
    #[serde(default)]
    pub compute_bytes: Option<u64>,
    /// Predicted VRAM, bytes.
    pub vram_bytes: Option<u64>,
    /// Predicted RAM, bytes.
    pub ram_bytes: Option<u64>,
    /// Layers on the GPU out of the total.
    pub gpu_layers: Option<(u32, u32)>,
    /// Why.
    pub reason: String,
    /// The smallest change that would make it fit, when it does not.
    pub suggestion: Option<String>,
}

/// The most answer text kept from one request; more is cut (hostile or runaway output).
/// Why the models not measured in a cycle canceled with a partial report were skipped (the
/// `aborted` reason of its results).
pub const PARTIAL_REPORT: &str = "cycle canceled by the operator: a partial report of what was measured";

/// The start of the reason of a model whose runs were cut short by a cancel with a partial
/// report (its measured runs kept).
pub const CANCELED_AFTER: &str = "canceled by the operator after ";

pub const MAX_ANSWER_BYTES: usize = 4 << 20;

/// Decode tokens/s that memory bandwidth allows: each generated token reads every weight once,
/// so the time per token is at least GPU bytes / GPU bandwidth + RAM bytes / RAM bandwidth
/// (bandwidths in decimal GB/s). This is the roofline a memory-bound decode cannot beat.
///
/// None when nothing is read or a bandwidth needed for the bytes is unknown or not positive.
pub fn roofline_decode_tps(
    weights_on_gpu_bytes: u64,
    weights_in_ram_bytes: u64,
    gpu_bw_gbs: Option<f64>,
    ram_bw_gbs: Option<f64>,
) -> Option<f64> {
    let part = |bytes: u64, bw: Option<f64>| -> Option<f64> {
        match bw {
            _ if bytes == 0 => Some(0.0),
            Some(bw) if bw.is_finite() && bw > 0.0 => Some(bytes as f64 / (bw * 1e9)),
            _ => None,
        }
    };
    let secs = part(weights_on_gpu_bytes, gpu_bw_gbs)? + part(weights_in_ram_bytes, ram_bw_gbs)?;
    (secs > 0.0).then(|| 1.0 / secs)
}

/// Weights in VRAM and in RAM, bytes, when a share `gpu_share` (0 to 1) of `weights` is on the GPU.
pub fn weights_split(weights: u64, gpu_share: f64) -> (u64, u64) {
    let on_gpu = ((weights as f64 * gpu_share.clamp(0.0, 1.0)).round() as u64).min(weights);
    (on_gpu, weights - on_gpu)
}

/// The name of the Reader's check that a model's GGUF carries a chat template; a `Warn` check of
/// this name means the model has none (a base model), and its answers' quality is not assessed.
pub fn chat_template_check(model: &str) -> String {
    format!("template.{model}")
}

impl FitVerdict {
    /// A verdict that predicts nothing: `source` says where figures would have come from,
    /// `reason` why there are none.
    pub fn unknown(model: &str, source: &str, reason: String) -> FitVerdict {
        FitVerdict {
            model: model.into(),
            fit: Fit::Unknown,
            source: source.into(),
            weights_bytes: None,
            kv_bytes: None,
            compute_bytes: None,
            vram_bytes: None,
            ram_bytes: None,
            gpu_layers: None,
            reason,
            suggestion: None,
        }
    }

    /// The share of the layers the Reader predicted on the GPU (0 to 1), when it predicted a split.
    pub fn predicted_gpu_share(&self) -> Option<f64> {
        self.gpu_layers.filter(|(_, t)| *t > 0).map(|(g, t)| f64::from(g.min(t)) / f64::from(t))
    }
}

impl HostFacts {
    /// GPU and RAM bandwidth, decimal GB/s, where known (the first GPU NVML gave one for).
    pub fn bandwidths(&self) -> (Option<f64>, Option<f64>) {
        (
            self.gpus.iter().find_map(|g| g.memory_bandwidth_gbs),
            self.ram_bandwidth_gbs.filter(|b| b.is_finite() && *b > 0.0),
        )
    }
}

/// Mean, spread and sample count of one figure over repetitions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    /// Samples.
    pub n: u32,
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation (0 for one sample).
    pub stddev: f64,
    /// Minimum.
    pub min: f64,
    /// Maximum.
    pub max: f64,
    /// Coefficient of variation above the plan's flag.
    pub unstable: bool,
}

impl Stat {
    /// Mean, sample standard deviation and spread flag of `xs`; None when empty or not finite.
    pub fn of(xs: &[f64], cv_flag: f64) -> Option<Stat> {
        if xs.is_empty() || xs.iter().any(|x| !x.is_finite()) {
            return None;
        }
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let var = if xs.len() > 1 { xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
        let stddev = var.sqrt();
        let cv = if mean.abs() > f64::EPSILON { stddev / mean.abs() } else { 0.0 };
        Some(Stat {
            n: xs.len() as u32,
            mean,
            stddev,
            min: xs.iter().copied().fold(f64::INFINITY, f64::min),
            max: xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            unstable: xs.len() > 1 && cv > cv_flag,
        })
    }
}

/// p50 / p90 / p99 of a distribution (nearest-rank).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of `xs`; None when empty.
    pub fn of(xs: &[f64]) -> Option<Percentiles> {
        let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let idx = ((p / 100.0) * v.len() as f64).ceil() as usize;
            v[idx.clamp(1, v.len()) - 1]
        };
        Some(Percentiles { p50: rank(50.0), p90: rank(90.0), p99: rank(99.0) })
    }
}

/// Structure of one answer, read with a markdown parser.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AnswerAnalysis {
    /// Words of prose and code.
    pub words: u32,
    /// Headings.
    pub headings: u32,
    /// Fenced or indented code blocks.
    pub code_blocks: u32,
    /// List items.
    pub list_items: u32,
    /// Tables.
    pub tables: u32,
    /// Required topics the answer mentions.
    pub topics_covered: Vec<String>,
    /// Required topics it does not.
    pub topics_missing: Vec<String>,
}

/// One measured request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// Prompt id.
    pub prompt_id: String,
    /// Repetition, from 1.
    pub repetition: u32,
    /// The nonce that kept the prompt cache from flattering prefill.
    pub nonce: String,
    /// Time to first token, ms (client side).
    pub ttft_ms: f64,
    /// End-to-end latency, ms (client side).
    pub e2e_ms: f64,
    /// Time per output token after the first, ms: (e2e − TTFT) / (tokens − 1).
    pub tpot_ms: Option<f64>,
    /// Inter-token gaps, ms.
    pub itl_ms: Option<Percentiles>,
    /// Output tokens.
    pub output_tokens: u32,
    /// Prompt tokens.
    pub prompt_tokens: Option<u32>,
    /// Decode tokens/s measured by the client: (tokens − 1) / (e2e − TTFT).
    pub client_decode_tps: Option<f64>,
    /// Decode tokens/s the engine reports.
    pub engine_decode_tps: Option<f64>,
    /// Prefill tokens/s the engine reports.
    pub engine_prefill_tps: Option<f64>,
    /// Prefill time the engine reports, ms.
    pub engine_prompt_ms: Option<f64>,
    /// Why generation stopped (`stop`, `length`).
    pub finish_reason: Option<String>,
    /// Structure of the answer.
    pub analysis: AnswerAnalysis,
    /// The full answer in the object store.
    pub answer: Option<BlobRef>,
    /// The first characters of the answer (untrusted text: escape when rendering).
    pub excerpt: String,
}

/// Figures over the repetitions of one prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptSummary {
    /// Prompt id.
    pub prompt_id: String,
    /// TTFT, ms.
    pub ttft_ms: Option<Stat>,
    /// End-to-end, ms.
    pub e2e_ms: Option<Stat>,
    /// Client decode tokens/s.
    pub client_decode_tps: Option<Stat>,
    /// Engine decode tokens/s.
    pub engine_decode_tps: Option<Stat>,
    /// Engine prefill tokens/s.
    pub engine_prefill_tps: Option<Stat>,
    /// Output tokens.
    pub output_tokens: Option<Stat>,
    /// Words.
    pub words: Option<Stat>,
}

/// Everything needed to reproduce a measurement.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Manifest {
    /// Host name.
    pub host: String,
    /// CPU model.
    pub cpu: String,
    /// GPU names, or a note that there is none.
    pub gpu: String,
    /// NVIDIA driver, when known.
    pub driver: Option<String>,
    /// Engine and its version.
    pub engine: String,
    /// Engine version string.
    pub engine_version: Option<String>,
    /// Model reference (tag or file).
    pub model: String,
    /// Model digest or file SHA-256, when known.
    pub model_digest: Option<String>,
    /// Quantisation, when known.
    pub quantization: Option<String>,
    /// Context window.
    pub context: u32,
    /// Layers on the GPU, when known.
    pub gpu_layers: Option<String>,
    /// Share of the weights the engine placed in VRAM (0 to 1), from its load log or `/api/ps`;
    /// None when the engine did not say, or the host has no GPU (the report then says so).
    #[serde(default)]
    pub gpu_weight_share: Option<f64>,
    /// CPU threads.
    pub threads: Option<u32>,
    /// Sampling seed.
    pub seed: u64,
    /// Temperature.
    pub temperature: f64,
    /// SHA-256 of the plan file.
    pub plan_hash: String,
    /// threadcycle's version.
    pub threadcycle_version: String,
}

/// How one attempt at a model ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// From 1.
    pub number: u32,
    /// Settings changed for this attempt (from a remediation), in order.
    pub changes: Vec<crate::settings::Setting>,
    /// The settings the attempt ran with (the plan's with every change applied), as the Writer
    /// applied them; the reports print this record.
    #[serde(default)]
    pub settings: Option<crate::settings::Settings>,
    /// `ok`, or the failure.
    pub outcome: String,
    /// The escalation raised, if it failed.
    pub escalation: Option<String>,
}

/// Final state of a model in the cycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ModelStatus {
    /// Measured.
    Measured,
    /// Failed after the attempts allowed.
    Failed {
        /// Why.
        reason: String,
    },
    /// Not run.
    Skipped {
        /// Why.
        reason: String,
    },
}

/// Peak, mean and minimum of one sampled figure.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MetricSummary {
    /// Highest sample.
    pub peak: f64,
    /// Mean of the samples.
    pub mean: f64,
    /// Lowest sample.
    pub min: f64,
    /// Samples.
    pub samples: u32,
}

/// A pause the thermal guard made between requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThermalPause {
    /// Seconds into the run.
    pub at_s: f64,
    /// Temperature that triggered it, °C.
    pub temp_c: f64,
    /// How long it waited, s.
    pub waited_s: f64,
    /// Whether the GPU cooled below the resume threshold in time.
    pub recovered: bool,
}

/// The metrics of a telemetry series, in CSV column order (after `t_s,samples`; each metric has
/// a mean column `<name>` and a peak column `<name>_max`). The sampler writes this format and the
/// reports read it.
pub const TELEMETRY_COLUMNS: [&str; 13] = [
    "gpu_util_pct",
    "gpu_temp_c",
    "gpu_power_w",
    "vram_used_bytes",
    "vram_total_bytes",
    "sm_clock_mhz",
    "mem_clock_mhz",
    "gpu_process_mem_bytes",
    "engine_mem_bytes",
    "engine_cache_bytes",
    "engine_cpu_pct",
    "host_mem_available_bytes",
    "host_swap_used_bytes",
];

/// What the sampler saw during one model's measured runs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TelemetrySummary {
    /// Samples per second.
    pub sample_hz: f64,
    /// Samples taken.
    pub samples: u32,
    /// Seconds sampled.
    pub duration_s: f64,
    /// GPU utilisation, % (first GPU, or the mean over GPUs).
    pub gpu_util_pct: Option<MetricSummary>,
    /// GPU temperature, °C (hottest GPU).
    pub gpu_temp_c: Option<MetricSummary>,
    /// GPU power, W (all GPUs).
    pub gpu_power_w: Option<MetricSummary>,
    /// VRAM used, bytes (all GPUs).
    pub vram_used_bytes: Option<MetricSummary>,
    /// GPU SM clock, MHz.
    pub sm_clock_mhz: Option<MetricSummary>,
    /// GPU energy over the run, J.
    pub gpu_energy_j: Option<f64>,
    /// Where the energy figure came from (`nvml energy counter`, `power integral`).
    pub energy_source: Option<String>,
    /// Energy per generated token, J.
    pub joules_per_token: Option<f64>,
    /// Throttle reasons seen at least once.
    pub throttle_reasons: Vec<String>,
    /// Engine memory: container working set (usage − page cache) or process RSS, bytes.
    pub engine_mem_bytes: Option<MetricSummary>,
    /// Container page cache, bytes.
    pub engine_cache_bytes: Option<MetricSummary>,
    /// The engine's memory limit, bytes.
    pub engine_mem_limit: Option<u64>,
    /// Engine CPU, % of one core.
    pub engine_cpu_pct: Option<MetricSummary>,
    /// Host memory available, bytes.
    pub host_mem_available_bytes: Option<MetricSummary>,
    /// Host swap used, bytes.
    pub host_swap_used_bytes: Option<MetricSummary>,
    /// Pauses made by the thermal guard.
    pub thermal_pauses: Vec<ThermalPause>,
    /// GPU memory NVML lists for the engine's processes, bytes: the engine's pid when it ran as
    /// a host process, every process on the GPUs when it ran in a container (NVML lists host
    /// pids, which a container's are not mapped to). `gpu_process_scope` says which.
    #[serde(default)]
    pub gpu_process_mem_bytes: Option<MetricSummary>,
    /// Whose memory `gpu_process_mem_bytes` is (`engine pid 1234`, `every process on the GPUs`).
    #[serde(default)]
    pub gpu_process_scope: Option<String>,
    /// Temperature of the hottest GPU at the first sample, °C (the start of a thermal rise).
    #[serde(default)]
    pub gpu_temp_first_c: Option<f64>,
    /// Seconds of the sampled window during which NVML named a throttle reason (sampling
    /// intervals with one, idle left out).
    #[serde(default)]
    pub throttled_s: Option<f64>,
    /// CPU package energy over the run, J, from the RAPL counters (wraps handled).
    #[serde(default)]
    pub cpu_energy_j: Option<f64>,
    /// Which RAPL domains the CPU energy came from (`intel-rapl:0 (package-0)`, …).
    #[serde(default)]
    pub cpu_energy_source: Option<String>,
    /// CPU package energy per generated token, J.
    #[serde(default)]
    pub cpu_joules_per_token: Option<f64>,
    /// The (downsampled) time series, CSV, in the object store.
    pub series: Option<BlobRef>,
    /// Why some figures are missing (e.g. no NVIDIA GPU).
    pub notes: Vec<String>,
}

/// Bytes an engine allocated on one device (`CUDA0`, `CPU`, `CPU_Mapped`, `CUDA_Host`, …).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DeviceBytes {
    /// The buffer's device as the engine names it.
    pub device: String,
    /// Bytes.
    pub bytes: u64,
}

/// The engine's own account of the memory it allocated when it loaded the model, read from its
/// log: weights, KV cache and compute buffers per device, and the layers it offloaded. What the
/// Reader's fit prediction is held to.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct EngineMemory {
    /// Where the account was read (`llama-server log`, `ollama log (new engine)`, …).
    pub source: String,
    /// Model-weight buffers.
    pub weights: Vec<DeviceBytes>,
    /// KV-cache buffers.
    pub kv: Vec<DeviceBytes>,
    /// Compute-graph buffers (llama.cpp's logits output buffer included).
    pub compute: Vec<DeviceBytes>,
    /// Layers offloaded to the GPU out of the total, as the engine logged them.
    pub offloaded_layers: Option<(u32, u32)>,
}

/// Whether a buffer device is host memory: `CPU`, `CPU_Mapped`, `CPU_REPACK`, `CUDA_Host` (pinned
/// host memory). Anything else (`CUDA0`, `ROCm0`, `Vulkan0`, …) is a GPU's.
pub fn is_host_device(device: &str) -> bool {
    device.starts_with("CPU") || device.ends_with("_Host")
}

/// Prediction error in percent: (predicted − engine) / engine × 100; None when the engine's
/// figure is 0.
pub fn error_pct(predicted: u64, engine: u64) -> Option<f64> {
    (engine > 0).then(|| (predicted as f64 - engine as f64) / engine as f64 * 100.0)
}

impl EngineMemory {
    fn sum(list: &[DeviceBytes], keep: impl Fn(&str) -> bool) -> u64 {
        list.iter().filter(|d| keep(&d.device)).map(|d| d.bytes).sum()
    }

    /// Model weights, all devices.
    pub fn weights_bytes(&self) -> u64 {
        Self::sum(&self.weights, |_| true)
    }

    /// KV cache, all devices.
    pub fn kv_bytes(&self) -> u64 {
        Self::sum(&self.kv, |_| true)
    }

    /// Compute buffers, all devices.
    pub fn compute_bytes(&self) -> u64 {
        Self::sum(&self.compute, |_| true)
    }

    /// Everything on GPUs: weights, KV and compute on non-host devices.
    pub fn vram_bytes(&self) -> u64 {
        let gpu = |d: &str| !is_host_device(d);
        Self::sum(&self.weights, gpu) + Self::sum(&self.kv, gpu) + Self::sum(&self.compute, gpu)
    }

    /// Everything in host memory: weights, KV and compute on host devices.
    pub fn ram_bytes(&self) -> u64 {
        Self::sum(&self.weights, is_host_device)
            + Self::sum(&self.kv, is_host_device)
            + Self::sum(&self.compute, is_host_device)
    }

    /// Whether the account holds anything.
    pub fn is_empty(&self) -> bool {
        self.weights.is_empty() && self.kv.is_empty() && self.compute.is_empty() && self.offloaded_layers.is_none()
    }
}

/// Everything the Writer measured for one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelResult {
    /// Position in the plan.
    pub index: u32,
    /// Model name from the plan.
    pub model: String,
    /// How it ended.
    pub status: ModelStatus,
    /// Attempts in order.
    pub attempts: Vec<Attempt>,
    /// The model's load time, ms: for Ollama the engine's `load_duration` on the warm-up (the
    /// first request loads the model); for llama-server, engine start → healthy (it loads the
    /// model before `/health` answers). Never includes a pull.
    pub load_ms: Option<f64>,
    /// Time spent pulling the model into the engine's store, ms; `None` when it was already there.
    #[serde(default)]
    pub pull_ms: Option<f64>,
    /// Measured requests.
    pub runs: Vec<RunResult>,
    /// Per-prompt figures.
    pub prompts: Vec<PromptSummary>,
    /// Peak resident memory of the engine, bytes (process RSS or container usage).
    pub peak_ram_bytes: Option<u64>,
    /// Peak VRAM NVML measured, bytes: the engine's processes when the driver listed them
    /// (`telemetry.gpu_process_scope`), else the whole device's VRAM in use. Never an engine's
    /// own figure (see `engine_vram_bytes`).
    pub peak_vram_bytes: Option<u64>,
    /// VRAM the engine itself reported holding, bytes: Ollama's `/api/ps` `size_vram`. An
    /// engine-reported figure, not a measurement; llama.cpp's own account is `engine_memory`.
    #[serde(default)]
    pub engine_vram_bytes: Option<u64>,
    /// The engine's own account of what it allocated at load (from its log), when it gave one.
    #[serde(default)]
    pub engine_memory: Option<EngineMemory>,
    /// llama-bench's standard test (`pp512` / `tg128`) on the same engine, when the plan ran it.
    #[serde(default)]
    pub standard: Option<StandardResult>,
    /// Reproducibility manifest.
    pub manifest: Manifest,
    /// Telemetry sampled while measuring.
    #[serde(default)]
    pub telemetry: Option<TelemetrySummary>,
    /// The container or process settings the engine ran with (`docker run` / command line).
    #[serde(default)]
    pub deployment: Vec<String>,
    /// Exactly how the engine was started and asked (argv, `docker run`, request options):
    /// what the deployment guide prints.
    #[serde(default)]
    pub launch: Option<crate::launch::Launch>,
    /// When measuring started and ended (RFC 3339).
    pub started_at: String,
    /// End time.
    pub finished_at: String,
    /// The tuning phase's trials and winner, when the plan has `[tune]` (absent in older records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tune: Option<crate::tune::TuneResult>,
}

/// One test of the standard row (`pp512` or `tg128`), repeated: tokens/s per repetition from the
/// engine's own counters, as `llama-bench` prints its `t/s` column (mean ± standard deviation).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct StandardRun {
    /// The test's name as llama-bench prints it (`pp512`, `tg128`).
    pub test: String,
    /// Tokens the engine counted in the timed part (when it differs from the test's nominal
    /// count, e.g. a model that stopped early on Ollama, the report says so).
    pub tokens: u32,
    /// Tokens/s of each repetition.
    pub tps: Vec<f64>,
}

/// The standard test of one model: what ran, where the figures come from, and why a test is
/// missing when one is.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct StandardResult {
    /// The counters the figures come from (`llama-server /completion timings`, …).
    pub source: String,
    /// The tests that ran.
    pub runs: Vec<StandardRun>,
    /// Why the standard test (or part of it) did not run, in the operator's words.
    pub note: Option<String>,
}

/// Failure classes Debug knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// The engine never answered its health check.
    EngineUnhealthy,
    /// The engine process or container exited.
    EngineExited,
    /// Killed by the OOM killer.
    OomKilled,
    /// The GPU ran out of memory.
    GpuOutOfMemory,
    /// The engine refused to load: the model needs more system memory than is available.
    HostOutOfMemory,
    /// The model tag or file does not exist.
    ModelNotFound,
    /// A request failed or timed out.
    RequestFailed,
    /// The prompt exceeded the context.
    ContextOverflow,
    /// The GPU stayed too hot.
    Thermal,
    /// A host check failed.
    HostCheck,
    /// Anything else.
    Other,
}

impl FailureClass {
    /// Name used in plans' `policy.per_class`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::EngineUnhealthy => "engine_unhealthy",
            FailureClass::EngineExited => "engine_exited",
            FailureClass::OomKilled => "oom_killed",
            FailureClass::GpuOutOfMemory => "gpu_out_of_memory",
            FailureClass::HostOutOfMemory => "host_out_of_memory",
            FailureClass::ModelNotFound => "model_not_found",
            FailureClass::RequestFailed => "request_failed",
            FailureClass::ContextOverflow => "context_overflow",
            FailureClass::Thermal => "thermal",
            FailureClass::HostCheck => "host_check",
            FailureClass::Other => "other",
        }
    }
}

/// A concrete change Debug proposes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum RemedyAction {
    /// Retry with these settings changed.
    Retry {
        /// The changes, applied in order.
        set: Vec<crate::settings::Setting>,
    },
    /// Wait, then retry unchanged.
    CoolDown {
        /// Seconds.
        seconds: u64,
    },
    /// Skip this model and go on.
    Skip,
    /// Abort the whole cycle.
    Abort,
    /// Failed host checks: go on as if they had passed.
    Continue,
    /// Failed host checks: the Reader runs its checks again (after the operator's fix).
    Reverify,
}

/// One ranked remediation option.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemedyOption {
    /// 1-based rank shown to the operator.
    pub number: u32,
    /// What it does, in words.
    pub summary: String,
    /// Why it should help.
    pub rationale: String,
    /// Whether `auto` may apply it.
    pub safe: bool,
    /// The change.
    pub action: RemedyAction,
}

/// Evidence Debug gathered itself.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Evidence {
    /// Exit status of the engine process or container.
    pub exit_status: Option<String>,
    /// Whether the kernel OOM killer was involved.
    pub oom_killed: Option<bool>,
    /// OOM kills the container's memory cgroup counted (`oom_kill` in cgroup v2's
    /// `memory.events`, v1's `memory.oom_control`); counts a runner killed while PID 1 lives on,
    /// which Docker's `OOMKilled` misses.
    #[serde(default)]
    pub oom_kills: Option<u64>,
    /// Docker's `oom` events for the container seen while the engine was measured, in words
    /// (`Docker event “oom” for container tc-… at …`); the engine raises one whenever the
    /// container's cgroup hits its limit, whichever process the kernel kills.
    #[serde(default)]
    pub oom_events: Vec<String>,
    /// Last log lines of the engine (untrusted text).
    pub log_tail: Vec<String>,
    /// The engine's error text.
    pub engine_error: Option<String>,
    /// Host RAM available, bytes.
    pub host_ram_available: Option<u64>,
    /// GPU memory free, bytes.
    pub gpu_free: Option<u64>,
    /// GPU temperature, °C.
    pub gpu_temp_c: Option<u32>,
    /// Earlier attempts at this model.
    pub attempts: u32,
}

/// How an escalation was decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The option chosen (its number), or None for a custom change.
    pub option: Option<u32>,
    /// The change applied.
    pub action: RemedyAction,
    /// `policy:auto`, `policy:skip`, `timeout-default`, or `operator:<name>`.
    pub by: String,
    /// When (RFC 3339).
    pub at: String,
}

/// An escalation as Debug records it: failure, evidence, diagnosis, options, decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EscalationRecord {
    /// Escalation id (the package id of the escalation).
    pub id: String,
    /// Cycle id.
    pub cycle: String,
    /// Model name.
    pub model: String,
    /// Attempt that failed.
    pub attempt: u32,
    /// What the escalating agent reported.
    pub failure: String,
    /// Class after diagnosis.
    pub class: FailureClass,
    /// Diagnosis in words.
    pub diagnosis: String,
    /// How sure (0–1).
    pub confidence: f64,
    /// The evidence quoted.
    pub evidence: Evidence,
    /// Ranked options.
    pub options: Vec<RemedyOption>,
    /// The decision, once made.
    pub decision: Option<Decision>,
    /// When opened (RFC 3339).
    pub opened_at: String,
}

/// One concurrency level against one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelResult {
    /// Model name.
    pub model: String,
    /// Requests in flight at once.
    pub level: u32,
    /// Requests that finished.
    pub requests: u32,
    /// Requests that failed.
    pub failed: u32,
    /// Mean end-to-end latency, ms.
    pub mean_e2e_ms: f64,
    /// Mean TTFT, ms.
    pub mean_ttft_ms: f64,
    /// Mean client decode tokens/s per request.
    pub mean_decode_tps: Option<f64>,
    /// Output tokens/s of all requests together (sum of tokens / wall time).
    pub aggregate_tps: f64,
    /// Mean e2e at this level over mean e2e at level 1.
    pub degradation: Option<f64>,
}

/// One model's request while the other concurrent models ran too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TogetherResult {
    /// Model name.
    pub model: String,
    /// End-to-end latency with the others running, ms.
    pub e2e_ms: f64,
    /// The same model alone (level 1), ms.
    pub alone_e2e_ms: Option<f64>,
    /// Together over alone.
    pub degradation: Option<f64>,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// GPU memory one engine held while the concurrent models ran together.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct EngineGpuMemory {
    /// Model name.
    pub model: String,
    /// The engine's host pid, when it ran as a host process.
    pub pid: Option<u32>,
    /// GPU memory NVML listed for that pid, bytes (measured).
    pub nvml_bytes: Option<u64>,
    /// VRAM the engine reported holding, bytes (llama.cpp's GPU buffers from its log, or
    /// Ollama's `/api/ps` `size_vram`): the engine's own account, not a measurement.
    pub engine_reported_bytes: Option<u64>,
    /// Where `engine_reported_bytes` came from.
    pub engine_source: Option<String>,
}

/// The plan's concurrent phase.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ConcurrentResult {
    /// Concurrency levels per model.
    pub levels: Vec<LevelResult>,
    /// All concurrent models deployed at once.
    pub together: Vec<TogetherResult>,
    /// Telemetry sampled over the whole concurrent phase (levels and models together).
    #[serde(default)]
    pub telemetry: Option<TelemetrySummary>,
    /// GPU memory of each engine while the models ran together.
    #[serde(default)]
    pub engines: Vec<EngineGpuMemory>,
    /// What could not be done, and why.
    pub notes: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_from_before_the_engine_account_still_parse() {
        // A verdict without `compute_bytes`, as Readers before it wrote them.
        let v: FitVerdict = serde_json::from_str(
            r#"{"model":"m","fit":"go","source":"GGUF header","weights_bytes":1,"kv_bytes":2,"vram_bytes":0,
                "ram_bytes":3,"gpu_layers":[0,19],"reason":"r","suggestion":null}"#,
        )
        .unwrap();
        assert_eq!((v.compute_bytes, v.gpu_layers), (None, Some((0, 19))));
        // An account with fields missing takes their defaults.
        let e: EngineMemory = serde_json::from_str(r#"{"weights":[{"device":"CUDA0","bytes":10}]}"#).unwrap();
        assert_eq!((e.vram_bytes(), e.ram_bytes(), e.offloaded_layers), (10, 0, None));
    }

    #[test]
    fn host_and_gpu_buffers_are_told_apart() {
        for d in ["CPU", "CPU_Mapped", "CPU_REPACK", "CUDA_Host"] {
            assert!(is_host_device(d), "{d}");
        }
        for d in ["CUDA0", "CUDA1", "ROCm0", "Vulkan0"] {
            assert!(!is_host_device(d), "{d}");
        }
        let e = EngineMemory {
            weights: vec![
                DeviceBytes { device: "CUDA0".into(), bytes: 100 },
                DeviceBytes { device: "CPU".into(), bytes: 50 },
            ],
            kv: vec![DeviceBytes { device: "CUDA0".into(), bytes: 10 }],
            compute: vec![DeviceBytes { device: "CUDA_Host".into(), bytes: 5 }],
            ..Default::default()
        };
        assert_eq!((e.vram_bytes(), e.ram_bytes(), e.weights_bytes()), (110, 55, 150));
        assert!(error_pct(110, 100).is_some_and(|e| (e - 10.0).abs() < 1e-9));
        assert!(error_pct(90, 100).is_some_and(|e| (e + 10.0).abs() < 1e-9));
        assert_eq!(error_pct(1, 0), None);
    }
}
