//! Memory prediction: how much VRAM and RAM a model needs at a given context, how many of its
//! layers go on the GPU, and whether it fits the host at all.
//!
//! The arithmetic follows Ollama's layer estimator (`llm/memory.go`, v0.11.10 and earlier), the
//! one whose formulas are documented and checked against real logs in
//! `reference/engine-api-facts.md` §3.1 and §3.4:
//!
//! - KV cache = context × slots × layers × KV heads × (key dim + value dim) × bytes per element;
//! - compute graph = the Era A `GraphSize` formula for llama-like models (§3.1), used for every
//!   architecture because it is the only one documented; when the vocabulary or head counts are
//!   unknown it falls back to Ollama's generic `(H / Hkv) × KV / 6`;
//! - placement: 457 MiB minimum per CUDA GPU plus one layer held back as a buffer; layers are
//!   assigned from the last block down while `free > overhead + used + graph + layer`; the output
//!   layer counts as layer L+1; the full graph is added when every layer fits, else the partial.
//!
//! Newer engines (llama.cpp's `--fit`, Ollama ≥ v0.30) keep a 1 GiB margin per GPU instead, and
//! land a few layers lower; pass that margin as [`FitInputs::gpu_overhead`] to model them.

use protocol::results::{Fit, FitVerdict};
use serde::{Deserialize, Serialize};

use crate::gguf::ModelMeta;

/// One mebibyte.
pub const MIB: u64 = 1 << 20;
/// One gibibyte.
pub const GIB: u64 = 1 << 30;
/// VRAM Ollama keeps free on every CUDA/ROCm GPU (`ml/device.go MinimumMemory`).
pub const CUDA_MINIMUM_MEMORY: u64 = 457 * MIB;
/// Host memory the engine needs beyond weights and KV: process, CPU compute buffer, tokenizer
/// (the "few hundred MiB" of §3.4).
pub const RAM_ENGINE_OVERHEAD: u64 = 512 * MIB;
/// Host memory of a CPU-only llama-server beyond weights, KV and compute buffers (runtime,
/// threads, repacked tensors): measured at 60–70 MiB for Gemma 3 270M on llama.cpp b0.6.
pub const CPU_ENGINE_OVERHEAD: u64 = 64 * MIB;
/// Headroom above the CPU share when sizing a container limit (§7 row 5: CPU share + 4 GiB).
pub const CONTAINER_HEADROOM: u64 = 4 * GIB;
/// Ollama's default `num_batch`.
pub const DEFAULT_BATCH: u32 = 512;
/// Below this much spare RAM a fit is called tight: page cache and other processes need room.
const TIGHT_RAM: u64 = 2 * GIB;

/// Element type of the KV cache (`OLLAMA_KV_CACHE_TYPE`, llama.cpp `-ctk/-ctv`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvType {
    /// 16-bit floats, the default.
    #[default]
    F16,
    /// 8-bit blocks; needs flash attention.
    Q8_0,
    /// 4-bit blocks; needs flash attention.
    Q4_0,
}

impl KvType {
    /// Name as the engines spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            KvType::F16 => "f16",
            KvType::Q8_0 => "q8_0",
            KvType::Q4_0 => "q4_0",
        }
    }

    /// Parses `f16`, `q8_0` or `q4_0` (case-insensitive).
    pub fn parse(s: &str) -> Option<KvType> {
        match s.to_ascii_lowercase().as_str() {
            "f16" => Some(KvType::F16),
            "q8_0" => Some(KvType::Q8_0),
            "q4_0" => Some(KvType::Q4_0),
            _ => None,
        }
    }

    /// Bytes per block and elements per block, as ggml stores them.
    ///
    /// Ollama's estimator rounds q8_0 to 1 byte and q4_0 to ½ byte per element; the real ggml
    /// blocks carry a scale too (34/32 and 18/32), which is what llama.cpp allocates.
    fn block(self) -> (u64, u64) {
        match self {
            KvType::F16 => (2, 1),
            KvType::Q8_0 => (34, 32),
            KvType::Q4_0 => (18, 32),
        }
    }
}

/// What the host offers: free VRAM per GPU and the RAM the engine may use.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HostCapacity {
    /// Free VRAM of each GPU, bytes (empty: no GPU).
    pub gpus_free_vram: Vec<u64>,
    /// RAM available to new processes (MemAvailable, plus free swap if the operator allows it).
    pub ram_available: u64,
    /// Memory limit of the engine's container, bytes.
    pub container_limit: Option<u64>,
}

impl HostCapacity {
    /// RAM the engine may really use: the smaller of what is available and the container limit.
    pub fn ram_limit(&self) -> u64 {
        self.container_limit.map_or(self.ram_available, |l| l.min(self.ram_available))
    }
}

/// How the model will be run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FitInputs {
    /// Context per slot (`num_ctx`); capped at the model's training context, as Ollama does.
    pub context: u32,
    /// Parallel slots (`OLLAMA_NUM_PARALLEL`); the KV cache holds context × slots.
    pub parallel: u32,
    /// KV cache element type.
    pub kv_type: KvType,
    /// `num_gpu` / `-ngl`: Some(n ≥ 0) asks for n layers, None or negative lets the engine pick.
    pub gpu_layers_override: Option<i32>,
    /// VRAM to leave free on each GPU beyond the engine minimum (`OLLAMA_GPU_OVERHEAD`, or
    /// llama.cpp's 1 GiB `--fit-target`).
    pub gpu_overhead: u64,
    /// Batch size (`num_batch`).
    pub batch: u32,
}

impl Default for FitInputs {
    fn default() -> Self {
        FitInputs {
            context: 4096,
            parallel: 1,
            kv_type: KvType::F16,
            gpu_layers_override: None,
            gpu_overhead: 0,
            batch: DEFAULT_BATCH,
        }
    }
}

/// Compute-graph (scratch buffer) estimates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GraphEstimate {
    /// When every layer is on the GPU.
    pub full: u64,
    /// When some layers are on the CPU.
    pub partial: u64,
}

/// Everything the predictor worked out for one model on one host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// The verdict.
    pub fit: Fit,
    /// Why, in words.
    pub reason: String,
    /// Context per slot actually used (after capping at the training context).
    pub context: u32,
    /// KV bytes per token of context.
    pub kv_per_token: u64,
    /// KV bytes for context × slots.
    pub kv_bytes: u64,
    /// Compute graph estimates.
    pub graph: GraphEstimate,
    /// Layers counted as Ollama does: blocks plus the output layer.
    pub layers_total: u32,
    /// Layers placed on GPUs.
    pub layers_on_gpu: u32,
    /// Layers placed on each GPU.
    pub layers_per_gpu: Vec<u32>,
    /// Weights bytes on GPUs.
    pub weights_on_gpu: u64,
    /// Weights bytes in host memory.
    pub weights_in_ram: u64,
    /// VRAM needed, all GPUs together.
    pub vram_bytes: u64,
    /// Host RAM needed.
    pub ram_bytes: u64,
    /// Host RAM the engine may use.
    pub ram_limit: u64,
}

/// KV cache bytes per token of context: layers × KV heads × (key dim + value dim) × element size.
pub fn kv_bytes_per_token(meta: &ModelMeta, kv_type: KvType) -> u64 {
    let elements = u128::from(meta.block_count)
        * u128::from(meta.head_count_kv)
        * (u128::from(meta.head_dim_k()) + u128::from(meta.head_dim_v()));
    let (bytes, per) = kv_type.block();
    to_u64((elements * u128::from(bytes)).div_ceil(u128::from(per)))
}

/// KV cache bytes for `context` tokens in each of `parallel` slots.
pub fn kv_bytes(meta: &ModelMeta, context: u32, parallel: u32, kv_type: KvType) -> u64 {
    let tokens = u128::from(context) * u128::from(parallel.max(1));
    let elements = u128::from(meta.block_count)
        * u128::from(meta.head_count_kv)
        * (u128::from(meta.head_dim_k()) + u128::from(meta.head_dim_v()))
        * tokens;
    let (bytes, per) = kv_type.block();
    to_u64((elements * u128::from(bytes)).div_ceil(u128::from(per)))
}

/// Compute graph for `context_total` tokens (context × slots) at `batch`, per §3.1.
pub fn graph_bytes(meta: &ModelMeta, context_total: u64, batch: u64, kv_total: u64) -> GraphEstimate {
    let e = u128::from(meta.embedding_length);
    let h = u128::from(meta.head_count);
    let hkv = u128::from(meta.head_count_kv);
    let hd = u128::from(meta.head_dim_k());
    let c = u128::from(context_total);
    let b = u128::from(batch);
    match meta.vocab_size.map(u128::from) {
        Some(v) if e > 0 && h > 0 => {
            let full = (4 * b * (1 + 4 * e + c * (1 + h))).max(4 * b * (e + v));
            let partial = 4 * b * e
                + (4 * b * (1 + e + c.max(e)) + e * e * 9 / 16 + 4 * c * (b * h + hd * hkv))
                    .max(4 * b * (e + v) + e * v * 105 / 128);
            GraphEstimate { full: to_u64(full), partial: to_u64(partial) }
        }
        _ => {
            let gqa = h / hkv.max(1);
            let partial = to_u64(gqa * u128::from(kv_total) / 6);
            GraphEstimate { full: partial, partial }
        }
    }
}

/// Compute buffers of a CPU-only llama.cpp engine: the attention scratch of one batch plus the
/// output buffer for one token's logits. Unlike Ollama's Era-A formula (§3.1) it has no
/// `batch × vocab` term, because llama.cpp computes logits only for the tokens it outputs — for
/// Gemma 3 270M (vocab 262,144) that term alone would predict 538 MB the engine never allocates.
pub fn cpu_graph_bytes(meta: &ModelMeta, context_total: u64, batch: u64) -> u64 {
    let e = u128::from(meta.embedding_length);
    let h = u128::from(meta.head_count);
    let c = u128::from(context_total);
    let b = u128::from(batch);
    let v = u128::from(meta.vocab_size.unwrap_or(0));
    to_u64(4 * b * (1 + 4 * e + c * (1 + h)) + 4 * v)
}

fn to_u64(x: u128) -> u64 {
    u64::try_from(x).unwrap_or(u64::MAX)
}

/// Bytes as the operator reads them: GiB with one decimal, MiB below 1 GiB.
pub fn human(bytes: u64) -> String {
    if bytes >= GIB {
        format!("{:.1} GiB", bytes as f64 / GIB as f64)
    } else {
        format!("{:.0} MiB", bytes as f64 / MIB as f64)
    }
}

/// Predicts where the model goes and whether it fits.
pub fn predict(meta: &ModelMeta, host: &HostCapacity, inputs: &FitInputs) -> Prediction {
    let layers_total = meta.block_count.saturating_add(u32::from(meta.output_bytes > 0));
    let context = if meta.context_length > 0 { inputs.context.min(meta.context_length) } else { inputs.context };
    let parallel = inputs.parallel.max(1);
    let kv_per_token = kv_bytes_per_token(meta, inputs.kv_type);
    let kv_total = kv_bytes(meta, context, parallel, inputs.kv_type);
    let batch = u64::from(inputs.batch.max(1).min(context.max(1)));
    let graph = graph_bytes(meta, u64::from(context) * u64::from(parallel), batch, kv_total);
    let ram_limit = host.ram_limit();
    let mut p = Prediction {
        fit: Fit::Unknown,
        reason: String::new(),
        context,
        kv_per_token,
        kv_bytes: kv_total,
        graph,
        layers_total,
        layers_on_gpu: 0,
        layers_per_gpu: vec![0; host.gpus_free_vram.len()],
        weights_on_gpu: 0,
        weights_in_ram: meta.weights_bytes,
        vram_bytes: 0,
        ram_bytes: 0,
        ram_limit,
    };

    if meta.block_count == 0 || meta.head_count == 0 || meta.embedding_length == 0 || meta.layer_bytes.is_empty() {
        p.reason = "the metadata gives no layers, heads or embedding size, so memory cannot be predicted".into();
        return p;
    }
    let capped = if context < inputs.context {
        format!(" (context capped at the model's training context {context})")
    } else {
        String::new()
    };

    let requested = inputs.gpu_layers_override.and_then(|n| u32::try_from(n).ok());
    let no_gpu = host.gpus_free_vram.iter().all(|v| *v == 0);
    if no_gpu || requested == Some(0) {
        p.ram_bytes = meta
            .weights_bytes
            .saturating_add(kv_total)
            .saturating_add(cpu_graph_bytes(meta, u64::from(context) * u64::from(parallel), u64::from(inputs.batch)))
            .saturating_add(CPU_ENGINE_OVERHEAD);
        let why = if no_gpu { "no GPU: runs on CPU" } else { "0 GPU layers requested: runs on CPU" };
        if p.ram_bytes <= ram_limit {
            p.fit = Fit::Go;
            p.reason = format!(
                "{why}; needs {} of RAM, {} available{capped}{}",
                human(p.ram_bytes),
                human(ram_limit),
                tight(p.ram_bytes, ram_limit)
            );
        } else {
            p.fit = Fit::NoGo;
            p.reason = format!(
                "{why}; needs {} of RAM (weights {}, KV {}) but only {} is available{}{capped}",
                human(p.ram_bytes),
                human(meta.weights_bytes),
                human(kv_total),
                human(ram_limit),
                limit_note(host)
            );
        }
        return p;
    }

    let place = place_layers(meta, host, inputs, kv_total, graph, requested);
    p.layers_on_gpu = place.layers;
    p.layers_per_gpu = place.per_gpu.clone();
    p.weights_on_gpu = place.weights_on_gpu;
    p.weights_in_ram = meta.weights_bytes.saturating_sub(place.weights_on_gpu);
    p.vram_bytes = place.vram;
    // llama.cpp keeps the input embeddings in host memory even when every layer is offloaded.
    let output_in_ram = if place.output_on_gpu {
        0
    } else if meta.output_tied {
        meta.output_bytes.saturating_sub(meta.token_embd_bytes)
    } else {
        meta.output_bytes
    };
    p.ram_bytes = place
        .overflow
        .saturating_add(output_in_ram)
        .saturating_add(meta.token_embd_bytes)
        .saturating_add(meta.other_bytes)
        .saturating_add(RAM_ENGINE_OVERHEAD);
    let free_vram: u64 = host.gpus_free_vram.iter().sum();

    if let Some(n) = requested.filter(|n| *n > place.layers && place.layers < layers_total) {
        p.fit = Fit::NoGo;
        p.reason = format!(
            "{n} GPU layers were requested but only {} of {layers_total} fit in {} of free VRAM: the engine would run out of GPU memory{capped}",
            place.layers,
            human(free_vram)
        );
        return p;
    }

    let ram_ok = p.ram_bytes <= ram_limit;
    let on_gpu = format!(
        "{}/{layers_total} layers on the GPU ({} of {} free VRAM)",
        place.layers,
        human(p.vram_bytes),
        human(free_vram)
    );
    if !ram_ok {
        p.fit = Fit::NoGo;
        p.reason = format!(
            "{on_gpu}; the rest needs {} of RAM but only {} is available{}{capped}",
            human(p.ram_bytes),
            human(ram_limit),
            limit_note(host)
        );
    } else if place.layers >= layers_total {
        p.fit = Fit::Go;
        p.reason = format!(
            "fits wholly on the GPU: {on_gpu}; RAM {}{capped}{}",
            human(p.ram_bytes),
            tight(p.ram_bytes, ram_limit)
        );
    } else if place.layers == 0 {
        p.fit = Fit::GoPartialOffload;
        p.reason = format!(
            "not one layer fits in {} of free VRAM: runs on the CPU with {} of RAM ({} available){capped}{}",
            human(free_vram),
            human(p.ram_bytes),
            human(ram_limit),
            tight(p.ram_bytes, ram_limit)
        );
    } else {
        p.fit = Fit::GoPartialOffload;
        p.reason = format!(
            "partial offload: {on_gpu}; the other {} layers need {} of RAM ({} available){capped}{}",
            layers_total - place.layers,
            human(p.ram_bytes),
            human(ram_limit),
            tight(p.ram_bytes, ram_limit)
        );
    }
    p
}

fn tight(need: u64, limit: u64) -> String {
    let spare = limit.saturating_sub(need);
    if spare < TIGHT_RAM { format!("; tight: only {} of RAM to spare", human(spare)) } else { String::new() }
}

fn limit_note(host: &HostCapacity) -> String {
    match host.container_limit {
        Some(l) if l < host.ram_available => {
            format!(" (the container limit {}; the host has {})", human(l), human(host.ram_available))
        }
        _ => String::new(),
    }
}

/// Result of assigning layers to GPUs.
struct Placement {
    layers: u32,
    per_gpu: Vec<u32>,
    output_on_gpu: bool,
    weights_on_gpu: u64,
    /// Weights and KV of blocks left on the CPU.
    overflow: u64,
    vram: u64,
}

/// Ollama's `estimateGPULayers` (Era A), §3.1.
fn place_layers(
    meta: &ModelMeta,
    host: &HostCapacity,
    inputs: &FitInputs,
    kv_total: u64,
    graph: GraphEstimate,
    requested: Option<u32>,
) -> Placement {
    let blocks = meta.block_count as usize;
    let kv_layer = kv_total / u64::from(meta.block_count.max(1));
    let layer_size = |i: usize| meta.layer_bytes.get(i).copied().unwrap_or(0).saturating_add(kv_layer);
    let graph_max = graph.full.max(graph.partial);
    let overhead = inputs.gpu_overhead;
    let layer0 = layer_size(0);

    let gpus = &host.gpus_free_vram;
    let mut alloc = vec![0u64; gpus.len()];
    let mut per_gpu = vec![0u32; gpus.len()];
    let mut with_space: Vec<usize> = Vec::new();
    for (g, free) in gpus.iter().enumerate() {
        let floor = overhead
            .saturating_add(graph_max)
            .saturating_add(CUDA_MINIMUM_MEMORY)
            .saturating_add(layer0.saturating_mul(2));
        if *free < floor {
            continue;
        }
        with_space.push(g);
        // One layer is held back as a buffer; the graph is added once full vs partial is known.
        alloc[g] = CUDA_MINIMUM_MEMORY.saturating_add(layer0);
    }

    let cap = requested.unwrap_or(u32::MAX);
    let (mut layers, mut weights_on_gpu, mut overflow) = (0u32, 0u64, 0u64);
    for i in (0..blocks).rev() {
        let size = layer_size(i);
        let weights = meta.layer_bytes.get(i).copied().unwrap_or(0);
        if layers >= cap || with_space.is_empty() {
            overflow = overflow.saturating_add(size);
            continue;
        }
        let mut placed = false;
        let mut j = with_space.len();
        while j > 0 {
            let slot = i % j;
            let g = with_space[slot];
            if gpus[g] > overhead.saturating_add(alloc[g]).saturating_add(graph_max).saturating_add(size) {
                alloc[g] = alloc[g].saturating_add(size);
                per_gpu[g] += 1;
                layers += 1;
                weights_on_gpu = weights_on_gpu.saturating_add(weights);
                placed = true;
                break;
            }
            with_space.remove(slot);
            j -= 1;
        }
        if !placed {
            overflow = overflow.saturating_add(size);
        }
    }

    let mut output_on_gpu = false;
    if meta.output_bytes > 0 && layers < cap && layers >= meta.block_count {
        let j = with_space.len();
        if j > 0 {
            let g = with_space[layers as usize % j];
            if gpus[g] > overhead.saturating_add(alloc[g]).saturating_add(graph_max).saturating_add(meta.output_bytes) {
                alloc[g] = alloc[g].saturating_add(meta.output_bytes);
                per_gpu[g] += 1;
                layers += 1;
                weights_on_gpu = weights_on_gpu.saturating_add(meta.output_bytes);
                output_on_gpu = true;
            }
        }
    }

    let fully = layers >= meta.block_count && (output_on_gpu || meta.output_bytes == 0);
    let graph_used = if fully { graph.full } else { graph.partial };
    let vram = alloc
        .iter()
        .zip(&per_gpu)
        .filter(|(_, n)| **n > 0)
        .fold(0u64, |acc, (a, _)| acc.saturating_add(*a).saturating_add(graph_used));
    Placement { layers, per_gpu, output_on_gpu, weights_on_gpu, overflow, vram }
}

/// Predicts and turns the result into the verdict the Reader publishes.
pub fn verdict(model: &str, meta: &ModelMeta, host: &HostCapacity, inputs: &FitInputs) -> FitVerdict {
    let p = predict(meta, host, inputs);
    let suggestion = if p.fit == Fit::NoGo { Some(suggest(meta, host, inputs, &p)) } else { None };
    FitVerdict {
        model: model.to_string(),
        fit: p.fit,
        source: meta.source.to_string(),
        weights_bytes: Some(meta.weights_bytes),
        kv_bytes: (p.fit != Fit::Unknown).then_some(p.kv_bytes),
        vram_bytes: (p.fit != Fit::Unknown).then_some(p.vram_bytes),
        ram_bytes: (p.fit != Fit::Unknown).then_some(p.ram_bytes),
        gpu_layers: (p.fit != Fit::Unknown).then_some((p.layers_on_gpu, p.layers_total)),
        reason: p.reason,
        suggestion,
    }
}

/// Quantisations to suggest, largest first, with their approximate bits per weight
/// (llama.cpp's `quantize` listing for llama models).
const SMALLER_QUANTS: [(&str, f64); 8] = [
    ("Q5_K_M", 5.69),
    ("Q4_K_M", 4.89),
    ("Q4_K_S", 4.58),
    ("Q3_K_L", 4.27),
    ("Q3_K_M", 3.91),
    ("Q3_K_S", 3.50),
    ("Q2_K", 3.35),
    ("IQ2_XS", 2.31),
];

/// The smallest change that turns a no-go into a go, tried in order of how little it costs the
/// benchmark: fewer slots, a larger container limit (no quality cost), a q8_0 KV cache (tiny
/// quality cost), a shorter context (changes the workload), a smaller quantisation (quality).
pub fn suggest(meta: &ModelMeta, host: &HostCapacity, inputs: &FitInputs, p: &Prediction) -> String {
    let fits = |m: &ModelMeta, h: &HostCapacity, i: &FitInputs| predict(m, h, i).fit != Fit::NoGo;

    if let Some(n) = inputs.gpu_layers_override.and_then(|n| u32::try_from(n).ok()).filter(|n| *n > p.layers_on_gpu) {
        let auto = FitInputs { gpu_layers_override: None, ..inputs.clone() };
        if fits(meta, host, &auto) {
            return format!(
                "ask for at most {} GPU layers instead of {n}, or let the engine choose (num_gpu -1)",
                p.layers_on_gpu
            );
        }
    }
    if inputs.parallel > 1 {
        let one = FitInputs { parallel: 1, ..inputs.clone() };
        if fits(meta, host, &one) {
            return format!(
                "run 1 parallel slot instead of {} (OLLAMA_NUM_PARALLEL=1): the KV cache shrinks to {}",
                inputs.parallel,
                human(kv_bytes(meta, p.context, 1, inputs.kv_type))
            );
        }
    }
    if let Some(limit) = host.container_limit.filter(|l| *l < host.ram_available) {
        let unlimited = HostCapacity { container_limit: None, ..host.clone() };
        let q = predict(meta, &unlimited, inputs);
        if q.fit != Fit::NoGo {
            let want = q
                .ram_bytes
                .saturating_add(CONTAINER_HEADROOM)
                .div_ceil(GIB)
                .saturating_mul(GIB)
                .min(host.ram_available);
            return format!(
                "raise the container memory limit from {} to {} (the model's {} in RAM plus headroom; the host has {})",
                human(limit),
                human(want),
                human(q.ram_bytes),
                human(host.ram_available)
            );
        }
    }
    if inputs.kv_type == KvType::F16 {
        let q8 = FitInputs { kv_type: KvType::Q8_0, ..inputs.clone() };
        if fits(meta, host, &q8) {
            return format!(
                "use a q8_0 KV cache (OLLAMA_KV_CACHE_TYPE=q8_0 with flash attention on): KV {} instead of {}",
                human(kv_bytes(meta, p.context, inputs.parallel, KvType::Q8_0)),
                human(p.kv_bytes)
            );
        }
    }
    let mut ctx = p.context / 2;
    while ctx >= 1024 {
        let shorter = FitInputs { context: ctx, ..inputs.clone() };
        if fits(meta, host, &shorter) {
            return format!("lower the context to {ctx} tokens (num_ctx={ctx}) instead of {}", p.context);
        }
        ctx /= 2;
    }
    if meta.parameter_count > 0 {
        let bpw = meta.weights_bytes as f64 * 8.0 / meta.parameter_count as f64;
        for (name, target) in SMALLER_QUANTS.iter().filter(|(_, b)| *b < bpw - 0.1) {
            let smaller = scaled(meta, target / bpw, name);
            if fits(&smaller, host, inputs) {
                return format!(
                    "use a smaller quantisation: {name} (about {} of weights instead of {} at {})",
                    human(smaller.weights_bytes),
                    human(meta.weights_bytes),
                    meta.quantization
                );
            }
        }
    }
    let short = p.ram_bytes.saturating_sub(p.ram_limit);
    format!(
        "no single change makes it fit: it needs {} more RAM than the {} available; use a smaller model or a host with more memory",
        human(short),
        human(p.ram_limit)
    )
}

/// The model's figures if its weights were requantised by `factor`.
fn scaled(meta: &ModelMeta, factor: f64, quant: &str) -> ModelMeta {
    let s = |b: u64| (b as f64 * factor) as u64;
    ModelMeta {
        quantization: quant.to_string(),
        weights_bytes: s(meta.weights_bytes),
        layer_bytes: meta.layer_bytes.iter().map(|b| s(*b)).collect(),
        output_bytes: s(meta.output_bytes),
        token_embd_bytes: s(meta.token_embd_bytes),
        other_bytes: s(meta.other_bytes),
        ..meta.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin;
    use crate::gguf::MetaSource;
    use crate::profile;

    fn gib(x: f64) -> u64 {
        (x * GIB as f64) as u64
    }

    fn as_gib(b: u64) -> f64 {
        b as f64 / GIB as f64
    }

    /// Llama 3 8B from `/api/show` (§1.7): 32 blocks, 32 heads, 8 KV heads, 4096 embedding.
    fn llama3_8b() -> ModelMeta {
        let mut m = builtin::lookup("llama3.1:8b").expect("built in");
        m.context_length = 8192;
        m
    }

    fn profile_16gb() -> HostCapacity {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../hosts/rtx5070ti-32gb.toml");
        profile::load(&path).expect("the 16 GB host profile loads").capacity()
    }

    fn plan_inputs() -> FitInputs {
        FitInputs { context: 4096, parallel: 1, kv_type: KvType::F16, ..FitInputs::default() }
    }

    #[test]
    fn kv_per_token_matches_the_hand_computed_llama3_8b_figure() {
        // §1.7/§3.4: 2 × 32 blocks × 8 KV heads × (4096/32) × 2 bytes = 131072 bytes = 128 KiB.
        let m = llama3_8b();
        assert_eq!(kv_bytes_per_token(&m, KvType::F16), 2 * 32 * 8 * 128 * 2);
        assert_eq!(kv_bytes_per_token(&m, KvType::F16), 128 * 1024);
        assert_eq!(kv_bytes(&m, 8192, 1, KvType::F16), GIB);
        // Slots multiply the cache (§2 OLLAMA_NUM_PARALLEL).
        assert_eq!(kv_bytes(&m, 4096, 2, KvType::F16), kv_bytes(&m, 8192, 1, KvType::F16));
        // q8_0 and q4_0 are ggml blocks of 32 with a 2-byte scale.
        assert_eq!(kv_bytes_per_token(&m, KvType::Q8_0), 2 * 32 * 8 * 128 * 34 / 32);
        assert_eq!(kv_bytes_per_token(&m, KvType::Q4_0), 2 * 32 * 8 * 128 * 18 / 32);
    }

    #[test]
    fn kv_figures_of_section_4_are_reproduced() {
        let cases = [
            ("deepseek-coder:33b", 248, 0.97, 3.88),
            ("codellama:34b", 192, 0.75, 3.0),
            ("llama3.1:70b", 320, 1.25, 5.0),
            ("deepseek-coder:6.7b", 512, 2.0, 8.0),
            ("codellama:7b", 512, 2.0, 8.0),
        ];
        for (tag, kib_per_token, at_4k, at_16k) in cases {
            let m = builtin::lookup(tag).expect("built in");
            assert_eq!(kv_bytes_per_token(&m, KvType::F16), kib_per_token * 1024, "{tag}");
            assert!((as_gib(kv_bytes(&m, 4096, 1, KvType::F16)) - at_4k).abs() < 0.01, "{tag}");
            assert!((as_gib(kv_bytes(&m, 16384, 1, KvType::F16)) - at_16k).abs() < 0.01, "{tag}");
        }
    }

    #[test]
    fn graph_matches_section_3_4() {
        // deepseek-coder:33b at 4096: partial graph 534 MiB; llama3.1:70b at 4096: 1.1 GiB.
        let m = builtin::lookup("deepseek-coder:33b").expect("built in");
        let g = graph_bytes(&m, 4096, 512, kv_bytes(&m, 4096, 1, KvType::F16));
        assert_eq!(g.partial / MIB, 533);
        let m = builtin::lookup("llama3.1:70b").expect("built in");
        let g = graph_bytes(&m, 4096, 512, kv_bytes(&m, 4096, 1, KvType::F16));
        assert!((as_gib(g.partial) - 1.1).abs() < 0.05, "{}", human(g.partial));
    }

    /// The large-model plan on the 16 GB VRAM / 32 GB RAM box (§3.4 table, 4096 context).
    #[test]
    fn large_model_plan_on_16gb_vram_32gb_ram() {
        let host = profile_16gb();
        let inputs = plan_inputs();
        let mut seen = Vec::new();
        for (tag, expect_layers, expect_total, ram_lo, ram_hi) in [
            ("deepseek-coder:33b", 48, 63, 3.5, 5.5),
            ("codellama:34b", 37, 49, 3.5, 5.5),
            ("llama3.1:70b", 27, 81, 26.0, 30.0),
        ] {
            let m = builtin::lookup(tag).expect("built in");
            let v = verdict(tag, &m, &host, &inputs);
            seen.push(format!(
                "{tag}: {:?} {:?} vram {:?} ram {:?} — {}",
                v.fit,
                v.gpu_layers,
                v.vram_bytes.map(human),
                v.ram_bytes.map(human),
                v.reason
            ));
            assert_eq!(v.fit, Fit::GoPartialOffload, "{tag}: {}", v.reason);
            let (on, total) = v.gpu_layers.expect("layers");
            assert_eq!(total, expect_total, "{tag}");
            // §8: the Era A re-implementation and llama.cpp's fit differ by a few layers.
            assert!(on.abs_diff(expect_layers) <= 2, "{tag}: {on}/{total} vs {expect_layers}: {}", v.reason);
            let vram = as_gib(v.vram_bytes.expect("vram"));
            assert!((14.5..=15.6).contains(&vram), "{tag}: VRAM {vram:.2} GiB");
            let ram = as_gib(v.ram_bytes.expect("ram"));
            assert!((ram_lo..=ram_hi).contains(&ram), "{tag}: RAM {ram:.2} GiB");
            assert!(v.suggestion.is_none());
            assert!(v.source.contains("built-in"), "{}", v.source);
            if tag == "llama3.1:70b" {
                // §3.4/§7: ~27 GiB of RAM for the CPU part; the 32 GB box has ~30 GiB to give.
                assert!(v.reason.contains("tight"), "{}", v.reason);
            }
        }
        println!("{}", seen.join("\n"));
    }

    #[test]
    fn seventy_b_needs_more_than_a_24gb_container() {
        // §7 row 5: a container limit below the CPU share is an OOM kill waiting to happen.
        let host = HostCapacity { container_limit: Some(24 * GIB), ..profile_16gb() };
        let m = builtin::lookup("llama3.1:70b").expect("built in");
        let v = verdict("llama3.1:70b", &m, &host, &plan_inputs());
        assert_eq!(v.fit, Fit::NoGo, "{}", v.reason);
        assert!(v.reason.contains("container limit"), "{}", v.reason);
        let s = v.suggestion.expect("a suggestion");
        assert!(s.contains("raise the container memory limit"), "{s}");
    }

    #[test]
    fn seventy_b_on_a_16gb_ram_box_cannot_be_fixed_by_one_setting_short_of_requantising() {
        let host = HostCapacity { gpus_free_vram: vec![gib(15.6)], ram_available: 14 * GIB, container_limit: None };
        let m = builtin::lookup("llama3.1:70b").expect("built in");
        let v = verdict("llama3.1:70b", &m, &host, &plan_inputs());
        assert_eq!(v.fit, Fit::NoGo, "{}", v.reason);
        let s = v.suggestion.expect("a suggestion");
        assert!(s.contains("quantisation") || s.contains("no single change"), "{s}");
    }

    #[test]
    fn small_models_fit_wholly_on_16gb() {
        let host = profile_16gb();
        for tag in ["deepseek-coder:6.7b", "codellama:7b", "llama3.1:8b"] {
            let m = builtin::lookup(tag).expect("built in");
            let v = verdict(tag, &m, &host, &plan_inputs());
            assert_eq!(v.fit, Fit::Go, "{tag}: {}", v.reason);
            let (on, total) = v.gpu_layers.expect("layers");
            assert_eq!(on, total, "{tag}");
        }
        // §3.4: a 7B at 4096 uses ~6.4 GiB of VRAM.
        let m = builtin::lookup("codellama:7b").expect("built in");
        let p = predict(&m, &host, &plan_inputs());
        assert!((as_gib(p.vram_bytes) - 6.4).abs() < 0.5, "{}", human(p.vram_bytes));
    }

    #[test]
    fn no_gpu_runs_on_cpu_when_ram_suffices() {
        let m = builtin::lookup("codellama:7b").expect("built in");
        let host = HostCapacity { gpus_free_vram: vec![], ram_available: 32 * GIB, container_limit: None };
        let v = verdict("codellama:7b", &m, &host, &plan_inputs());
        assert_eq!(v.fit, Fit::Go, "{}", v.reason);
        assert!(v.reason.contains("no GPU: runs on CPU"), "{}", v.reason);
        assert_eq!(v.vram_bytes, Some(0));
        assert_eq!(v.gpu_layers, Some((0, 33)));

        let small = HostCapacity { ram_available: 4 * GIB, ..host };
        let v = verdict("codellama:7b", &m, &small, &plan_inputs());
        assert_eq!(v.fit, Fit::NoGo, "{}", v.reason);
        assert!(v.suggestion.is_some());
    }

    #[test]
    fn too_many_requested_gpu_layers_is_a_no_go() {
        let m = builtin::lookup("codellama:34b").expect("built in");
        let inputs = FitInputs { gpu_layers_override: Some(49), ..plan_inputs() };
        let v = verdict("codellama:34b", &m, &profile_16gb(), &inputs);
        assert_eq!(v.fit, Fit::NoGo, "{}", v.reason);
        assert!(v.suggestion.expect("suggestion").contains("num_gpu -1"));
        let inputs = FitInputs { gpu_layers_override: Some(20), ..plan_inputs() };
        let p = predict(&m, &profile_16gb(), &inputs);
        assert_eq!((p.fit, p.layers_on_gpu), (Fit::GoPartialOffload, 20));
    }

    #[test]
    fn q8_kv_is_suggested_when_only_the_cache_is_too_big() {
        // A 7B at 16k: 8 GiB of f16 KV on a box whose RAM is short by less than half of that.
        let m = builtin::lookup("codellama:7b").expect("built in");
        let host = HostCapacity { gpus_free_vram: vec![], ram_available: 11 * GIB, container_limit: None };
        let inputs = FitInputs { context: 16384, ..plan_inputs() };
        let v = verdict("codellama:7b", &m, &host, &inputs);
        assert_eq!(v.fit, Fit::NoGo, "{}", v.reason);
        assert!(v.suggestion.expect("suggestion").contains("q8_0"));
    }

    #[test]
    fn context_is_capped_at_the_training_context() {
        let m = builtin::lookup("codellama:34b").expect("built in");
        let p = predict(&m, &profile_16gb(), &FitInputs { context: 100_000, ..plan_inputs() });
        assert_eq!(p.context, 16384);
        assert!(p.reason.contains("capped"), "{}", p.reason);
    }

    #[test]
    fn unknown_without_architecture_figures() {
        let mut m = builtin::lookup("codellama:7b").expect("built in");
        m.head_count = 0;
        let v = verdict("x", &m, &profile_16gb(), &plan_inputs());
        assert_eq!(v.fit, Fit::Unknown);
        assert_eq!(v.gpu_layers, None);
    }

    #[test]
    fn two_gpus_share_the_layers() {
        let m = builtin::lookup("llama3.1:70b").expect("built in");
        let host =
            HostCapacity { gpus_free_vram: vec![gib(23.4), gib(23.4)], ram_available: 60 * GIB, container_limit: None };
        let p = predict(&m, &host, &plan_inputs());
        assert_eq!(p.layers_per_gpu.iter().sum::<u32>(), p.layers_on_gpu);
        assert!(p.layers_per_gpu.iter().all(|n| *n > 20), "{:?}", p.layers_per_gpu);
    }

    #[test]
    fn demo_model_fits_anywhere() {
        let path = testkit::demo_model();
        let m = crate::gguf::read_metadata(&path).expect("parses");
        assert!(matches!(m.source, MetaSource::Gguf(Some(_))));
        let v = verdict("gemma3-270m", &m, &profile_16gb(), &plan_inputs());
        assert_eq!(v.fit, Fit::Go, "{}", v.reason);
        let cpu = HostCapacity { gpus_free_vram: vec![], ram_available: 4 * GIB, container_limit: None };
        let v = verdict("gemma3-270m", &m, &cpu, &plan_inputs());
        assert_eq!(v.fit, Fit::Go, "{}", v.reason);
        println!("demo on CPU: {} (RAM {:?})", v.reason, v.ram_bytes.map(human));
    }
}
