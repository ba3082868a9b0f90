//! Memory prediction: how much VRAM and RAM a model needs at a given context, how many of its
//! layers go on the GPU, and whether it fits the host at all. The layout rules depend on the
//! engine ([`FitEngine`]).
//!
//! **Ollama models** follow Ollama 0.12.6's own estimate, line by line ([`ollama`]:
//! `estimateGPULayers`, `o:llm/memory.go:144-428`, and `GraphSize`, `o:fs/ggml/ggml.go:550-798`):
//! KV per block at Ollama's rounding (f16 2 bytes, q8_0 1, q4_0 ½, the quantised types only with
//! flash attention), the per-architecture graph formulas with the `(heads / KV heads) × KV / 6`
//! fallback, the partial graph on more than one GPU, a GPU used only if
//! `free ≥ overhead + max(graphs) + 457 MiB + 2 × layer` (`:268`), blocks placed from the last one
//! down while `free > overhead + used + max(graphs) + layer` (`:306-337`), the output layer last
//! (`:342-362`), the full graph only when every layer is on the GPUs, and the fewest GPUs that
//! hold everything (`:17-63`). Held to real `msg=offload` log lines in `ollama_tests.rs`. The
//! architectures Ollama 0.12.6 runs on its new engine (`o:fs/ggml/ggml.go:241-253`) are laid out
//! by measuring at load (`o:llm/server.go:662-995`); their verdict says so.
//!
//! **llama-server models** use llama.cpp's real sizes:
//!
//! - KV cache = context × slots × layers × KV heads × (key dim + value dim) × bytes per element
//!   (ggml blocks: q8_0 34/32, q4_0 18/32), where a sliding-window layer (Gemma 2/3, Cohere 2,
//!   gpt-oss) holds only its window plus one micro-batch ([`kv_bytes_at`]);
//! - on the CPU, the compute buffers held to llama-server's own log ([`cpu_graph_bytes`],
//!   `tests/it/fit_oracle.rs`); on a GPU, Ollama's llama graph formula ([`graph_bytes`]) and
//!   placement (457 MiB minimum, one layer held back, output layer last).
//!
//! llama.cpp's `--fit` keeps a 1 GiB margin per GPU instead; pass that margin as
//! [`FitInputs::gpu_overhead`] to model it.

pub mod ollama;
mod suggest;

#[cfg(test)]
mod ollama_tests;
#[cfg(test)]
mod tests;

pub use suggest::suggest;

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

/// Which engine's layout rules the prediction follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FitEngine {
    /// llama.cpp's `llama-server`: ggml's real KV block sizes and the CPU compute buffers held to
    /// llama-server's own log (`tests/it/fit_oracle.rs`).
    #[default]
    LlamaServer,
    /// Ollama 0.12.6: its own estimate ([`ollama`], `o:llm/memory.go`) decides the GPU layers.
    Ollama,
}

/// How the model will be run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FitInputs {
    /// Whose layout rules to follow.
    pub engine: FitEngine,
    /// `OLLAMA_FLASH_ATTENTION` when the plan sets it (Ollama only; None: the engine's default).
    pub flash_attention: Option<bool>,
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
            engine: FitEngine::LlamaServer,
            flash_attention: None,
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
    /// Compute buffers the engine allocates where it runs: the CPU estimate when no layer is on
    /// a GPU, else the graph (full or partial) on each GPU used.
    pub compute_bytes: u64,
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

/// Of every `n` layers, the last is full attention and the others slide, per architecture, as
/// llama.cpp's `set_swa_pattern(n)` lays them out (`o:llama/llama.cpp/src/llama-hparams.cpp:6-16`):
/// Gemma 2 every 2nd (`o:llama/llama.cpp/src/llama-model.cpp:1147-1154`), Gemma 3 every 6th
/// (`:1171-1179`), Cohere 2 every 4th (`:1358-1363`), gpt-oss every 2nd (`:2001-2008`).
fn swa_pattern(architecture: &str) -> Option<u32> {
    match architecture {
        "gemma2" | "gpt-oss" => Some(2),
        "gemma3" => Some(6),
        "cohere2" => Some(4),
        _ => None,
    }
}

/// Layers whose KV cache holds only the sliding window (0 without one).
pub fn swa_layers(meta: &ModelMeta) -> u32 {
    match (meta.sliding_window, swa_pattern(&meta.architecture)) {
        (Some(_), Some(n)) => (0..meta.block_count).filter(|il| il % n < n - 1).count() as u32,
        _ => 0,
    }
}

/// KV cells of one slot's sliding-window cache: the window plus one micro-batch, padded to 256
/// and never more than the slot's context (upstream llama.cpp `src/llama-kv-cache-iswa.cpp`,
/// `size_swa`; `o:llama/llama.cpp/src/llama-kv-cache-iswa.cpp:48` pads the same way). Observed
/// with llama-server 11434 and Gemma 3 (window 512): 512 cells at context 512, 1024 at 8192.
pub fn swa_cells(meta: &ModelMeta, context: u32, ubatch: u32) -> u32 {
    let window = meta.sliding_window.unwrap_or(context);
    window.saturating_add(ubatch).min(context).div_ceil(256).saturating_mul(256).min(context.max(1))
}

/// KV cache bytes for `context` tokens in each of `parallel` slots (the default micro-batch).
pub fn kv_bytes(meta: &ModelMeta, context: u32, parallel: u32, kv_type: KvType) -> u64 {
    kv_bytes_at(meta, context, parallel, kv_type, DEFAULT_BATCH)
}

/// KV cache bytes for `context` tokens in each of `parallel` slots at micro-batch `ubatch`:
/// full-attention layers hold the whole context, sliding-window layers (Gemma 2/3, Cohere 2,
/// gpt-oss) only [`swa_cells`] per slot (one stream per slot: threadcycle always passes `-np`).
pub fn kv_bytes_at(meta: &ModelMeta, context: u32, parallel: u32, kv_type: KvType, ubatch: u32) -> u64 {
    let slots = u128::from(parallel.max(1));
    let swa = u128::from(swa_layers(meta));
    let full = u128::from(meta.block_count) - swa;
    let cells = full * u128::from(context) + swa * u128::from(swa_cells(meta, context, ubatch));
    let elements = cells
        * slots
        * u128::from(meta.head_count_kv)
        * (u128::from(meta.head_dim_k()) + u128::from(meta.head_dim_v()));
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

/// Compute buffers of a CPU-only llama.cpp engine (llama-server's defaults: flash attention
/// `auto`, so no `context × batch × heads` score matrix), held to llama-server's own
/// `compute buffer` and `output buffer` lines (`tests/it/fit_oracle.rs`):
///
/// - one micro-batch's activations of one layer, all live at once: 4 × embedding (input, norm,
///   attention out, residual) + 2 × feed-forward (gate, up) + 2 × heads × head dim (queries,
///   attention) + KV heads × (key + value dim), as f32;
/// - the attention masks, f16, context cells × batch: one for the full-attention layers, one for
///   the sliding-window cache when the model has one;
/// - the logits of one token, f32 (`output buffer`).
///
/// Unlike Ollama's Era-A formula (§3.1) it has no `batch × vocab` term: llama.cpp computes logits
/// only for the tokens it outputs — for Gemma 3 270M (vocab 262,144) that term alone would
/// predict 538 MB the engine never allocates.
pub fn cpu_graph_bytes(meta: &ModelMeta, context: u32, parallel: u32, batch: u32) -> u64 {
    let e = u128::from(meta.embedding_length);
    let ff = u128::from(meta.feed_forward_length.unwrap_or(meta.embedding_length.saturating_mul(4)));
    let h = u128::from(meta.head_count);
    let hkv = u128::from(meta.head_count_kv);
    let (hdk, hdv) = (u128::from(meta.head_dim_k()), u128::from(meta.head_dim_v()));
    let b = u128::from(batch.max(1).min(context.max(1)));
    let slots = u128::from(parallel.max(1));
    let activations = 4 * b * (4 * e + 2 * ff + 2 * h * hdk + hkv * (hdk + hdv));
    let swa = if swa_layers(meta) > 0 { u128::from(swa_cells(meta, context, batch)) } else { 0 };
    let masks = 2 * b * (u128::from(context) + swa) * slots;
    let v = u128::from(meta.vocab_size.unwrap_or(0));
    to_u64(activations + masks + 4 * v)
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
    let kv_total = kv_bytes_at(meta, context, parallel, inputs.kv_type, inputs.batch.max(1));
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
        compute_bytes: 0,
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
        p.compute_bytes = cpu_graph_bytes(meta, context, parallel, inputs.batch);
        p.ram_bytes = meta
            .weights_bytes
            .saturating_add(kv_total)
            .saturating_add(p.compute_bytes)
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

    let (place, engine_note, engine_ram) = match inputs.engine {
        FitEngine::LlamaServer => (place_layers(meta, host, inputs, kv_total, graph, requested), String::new(), 0),
        FitEngine::Ollama => {
            let (place, est) = place_ollama(meta, host, inputs, context);
            p.kv_bytes = est.kv;
            p.kv_per_token = est.kv / (u64::from(context) * u64::from(parallel)).max(1);
            p.graph = est.graph;
            // Ollama refuses to load when TotalSize − VRAMSize exceeds free RAM + swap
            // (o:llm/server.go:537-541).
            (place, ollama_note(meta, &est), est.total.saturating_sub(est.vram))
        }
    };
    p.layers_on_gpu = place.layers;
    p.layers_per_gpu = place.per_gpu.clone();
    p.weights_on_gpu = place.weights_on_gpu;
    p.weights_in_ram = meta.weights_bytes.saturating_sub(place.weights_on_gpu);
    p.vram_bytes = place.vram;
    p.compute_bytes = place.graph;
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
        .saturating_add(RAM_ENGINE_OVERHEAD)
        .max(engine_ram);
    let free_vram: u64 = host.gpus_free_vram.iter().sum();

    if let Some(n) = requested.filter(|n| *n > place.layers && place.layers < layers_total) {
        p.fit = Fit::NoGo;
        p.reason = format!(
            "{n} GPU layers were requested but only {} of {layers_total} fit in {} of free VRAM: the engine would run out of GPU memory{capped}",
            place.layers,
            human(free_vram)
        );
        p.reason.push_str(&engine_note);
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
    p.reason.push_str(&engine_note);
    p
}

/// Ollama 0.12.6's estimate ([`ollama::schedule`]) as a [`Placement`].
fn place_ollama(
    meta: &ModelMeta,
    host: &HostCapacity,
    inputs: &FitInputs,
    context: u32,
) -> (Placement, ollama::Estimate) {
    let settings = ollama::Settings {
        context,
        batch: inputs.batch,
        parallel: inputs.parallel.max(1),
        kv_type: inputs.kv_type,
        flash_attention: ollama::flash_attention(meta, inputs.flash_attention),
        num_gpu: inputs.gpu_layers_override.unwrap_or(-1),
        overhead: inputs.gpu_overhead,
    };
    let (gpus, est) = ollama::schedule(meta, &host.gpus_free_vram, &settings);
    let mut per_gpu = vec![0u32; host.gpus_free_vram.len()];
    for (n, g) in est.split.iter().zip(&gpus) {
        per_gpu[*g] = *n;
    }
    let used = est.split.iter().filter(|n| **n > 0).count() as u64;
    let output_on_gpu = est.output_on_gpu;
    let place = Placement {
        layers: est.layers,
        per_gpu,
        output_on_gpu,
        weights_on_gpu: est.weights_on_gpu.saturating_add(if output_on_gpu { est.weights_output } else { 0 }),
        overflow: est.overflow_blocks,
        vram: est.vram,
        graph: est.graph_used.saturating_mul(used),
    };
    (place, est)
}

/// What the verdict says about Ollama's own figures and which of its engines runs the model.
fn ollama_note(meta: &ModelMeta, est: &ollama::Estimate) -> String {
    let figures = format!(
        "; Ollama 0.12.6's estimate (llm/memory.go): {} layers, required {} of VRAM, {} in all, graph {}",
        est.layers,
        human(est.vram),
        human(est.total),
        human(est.graph_used)
    );
    if ollama::new_engine(&meta.architecture) {
        format!(
            "{figures}; Ollama 0.12.6 runs `{}` on its new engine, which measures the layout at load (fit, alloc, commit; llm/server.go:662-995), so the split it picks can differ from this estimate",
            meta.architecture
        )
    } else {
        format!("{figures}; `{}` runs on Ollama's llama engine, which loads this estimate", meta.architecture)
    }
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
    /// Compute graph on all GPUs used.
    graph: u64,
}

/// Ollama's `estimateGPULayers` as documented in §3.1 (v0.11.10 and earlier), used for llama-server on a GPU.
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
    let used = per_gpu.iter().filter(|n| **n > 0).count() as u64;
    let vram = alloc
        .iter()
        .zip(&per_gpu)
        .filter(|(_, n)| **n > 0)
        .fold(0u64, |acc, (a, _)| acc.saturating_add(*a).saturating_add(graph_used));
    Placement { layers, per_gpu, output_on_gpu, weights_on_gpu, overflow, vram, graph: graph_used.saturating_mul(used) }
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
        compute_bytes: (p.fit != Fit::Unknown).then_some(p.compute_bytes),
        vram_bytes: (p.fit != Fit::Unknown).then_some(p.vram_bytes),
        ram_bytes: (p.fit != Fit::Unknown).then_some(p.ram_bytes),
        gpu_layers: (p.fit != Fit::Unknown).then_some((p.layers_on_gpu, p.layers_total)),
        reason: p.reason,
        suggestion,
    }
}
