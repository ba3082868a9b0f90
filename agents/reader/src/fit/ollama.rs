//! Ollama 0.12.6's own estimate for its llama engine (`estimateGPULayers`, `o:llm/memory.go:144-428`,
//! with `GraphSize`, `o:fs/ggml/ggml.go:550-798`), followed line by line so that a verdict for an
//! Ollama model names the layer split Ollama itself will choose.
//!
//! Ollama 0.12.6 runs a model on its llama engine (vendored llama.cpp) unless the architecture is
//! one its new engine requires (`o:fs/ggml/ggml.go:241-253`, `o:llm/server.go:153-170`): the
//! plan's `llama` models (deepseek-coder, codellama, llama3.1) take this path. For the new-engine
//! architectures Ollama lays the model out by measuring it at load (fit → alloc → commit,
//! `o:llm/server.go:662-995`); nothing before the load predicts that, so the verdict says so and
//! gives this estimate.

use super::{GraphEstimate, KvType};
use crate::gguf::ModelMeta;

/// VRAM Ollama keeps free on every CUDA/ROCm GPU (`o:discover/gpu.go:67-69`).
pub const MINIMUM_MEMORY: u64 = 457 << 20;

/// Architectures Ollama 0.12.6 runs on its new engine (`o:fs/ggml/ggml.go:241-253`).
pub fn new_engine(architecture: &str) -> bool {
    matches!(
        architecture,
        "gemma3"
            | "gemma3n"
            | "mistral3"
            | "qwen3"
            | "qwen3moe"
            | "llama4"
            | "mllama"
            | "qwen25vl"
            | "gptoss"
            | "gpt-oss"
    )
}

/// Whether flash attention is on: `OLLAMA_FLASH_ATTENTION` when set, else on by default only for
/// gemma3, gpt-oss, qwen3 and qwen3moe (`o:fs/ggml/ggml.go:894-901`); never for embedding models,
/// gemma2, or key and value heads of different sizes (`:877-891`; `o:llm/memory.go:198-200`).
pub fn flash_attention(meta: &ModelMeta, setting: Option<bool>) -> bool {
    let default = matches!(meta.architecture.as_str(), "gemma3" | "gptoss" | "gpt-oss" | "qwen3" | "qwen3moe");
    let (k, v) = (meta.head_dim_k(), meta.head_dim_v());
    setting.unwrap_or(default) && meta.architecture != "gemma2" && k != 0 && k == v
}

/// Bytes per KV element as Ollama rounds them (`o:fs/ggml/ggml.go:904-915`); the requested type
/// counts only with flash attention on (`o:llm/memory.go:202-208`).
fn bytes_per_element(kv_type: KvType, flash_attention: bool) -> f64 {
    match (flash_attention, kv_type) {
        (true, KvType::Q8_0) => 1.0,
        (true, KvType::Q4_0) => 0.5,
        _ => 2.0,
    }
}

/// KV cache per block (`o:fs/ggml/ggml.go:578-610`), with the sliding-window rules of gemma3
/// (`:696-706`) and gpt-oss (`:779-789`). `context` is per slot; Ollama multiplies by the slots
/// (`:551`).
pub fn kv_layers(meta: &ModelMeta, context: u64, batch: u64, parallel: u64, bytes: f64) -> Vec<u64> {
    let ctx = context * parallel;
    let per_cell = u64::from(meta.head_dim_k() + meta.head_dim_v()) * u64::from(meta.head_count_kv);
    let cells = |n: u64| (n.saturating_mul(per_cell) as f64 * bytes) as u64;
    (0..u64::from(meta.block_count))
        .map(|i| match meta.architecture.as_str() {
            "gemma3" if (i + 1) % 6 != 0 => cells(parallel * u64::from(meta.sliding_window.unwrap_or(0)) + batch),
            "gptoss" | "gpt-oss" if i % 2 == 0 => cells(parallel * 4096 + batch),
            _ => cells(ctx),
        })
        .collect()
}

/// `GraphSize` (`o:fs/ggml/ggml.go:613-795`) for the architectures whose formula needs only the
/// header's sizes, then the fallback `(heads / KV heads) × KV / 6` when it gives none
/// (`o:llm/memory.go:221-231`). Not followed: the mixtral variants of `llama` (`:626-641`, they
/// need the expert tensors' shapes), chatglm's bias term (`:756-778`) and mllama's cross
/// attention (`:642-675`); those get the base formula or the fallback.
pub fn graph_size(meta: &ModelMeta, context: u64, batch: u64, parallel: u64, kv_total: u64, fa: bool) -> GraphEstimate {
    let c = u128::from(context * parallel);
    let b = u128::from(batch);
    let e = u128::from(meta.embedding_length);
    let h = u128::from(meta.head_count);
    let hkv = u128::from(meta.head_count_kv);
    let v = u128::from(meta.vocab_size.unwrap_or(0));
    // EmbeddingHeadCountMax is embedding / heads (`o:fs/ggml/ggml.go:118-124`); K may differ (`:126-128`).
    let eh = e.checked_div(h).unwrap_or(0);
    let ehk = u128::from(meta.head_dim_k());
    let (full, partial) = match meta.architecture.as_str() {
        "llama" | "llama4" => (
            (4 * b * (1 + 4 * e + c * (1 + h))).max(4 * b * (e + v)),
            4 * b * e
                + (4 * b * (1 + e + c.max(e)) + e * e * 9 / 16 + 4 * c * (b * h + eh * hkv))
                    .max(4 * b * (e + v) + e * v * 105 / 128),
        ),
        "gemma" | "gemma2" | "gemma3" | "gemma3n" => {
            let full = (4 * b * (e + v)).max(4 * b * (2 + c + c * h + 2 * e + 2 * ehk * h));
            let partial = (4 * e * b + e * v * 105 / 128 + 4 * v * b)
                .max(4 * b * (2 * e + 1 + 2 * ehk * h + c + c * h) + 4 * ehk * c * 8 + e * ehk * h * 9 / 16);
            let m = if meta.architecture == "gemma3n" { 4 } else { 1 };
            (full * m, partial * m)
        }
        "command-r" => (
            (4 * b * (e + v)).max(4 * b * (2 + 4 * e + c * (1 + h))),
            (4 * b * (e + v) + e * v * 105 / 128).max(4 * b * (1 + 2 * e + c * (1 + h)) + 4 * e * c + e * e * 9 / 16),
        ),
        "qwen2" => (
            (4 * b * (e + v)).max(4 * b * (1 + 2 * e + c + c * h)),
            (4 * b * (e + v) + e * v * 105 / 128).max(4 * (b * (1 + 2 * e + c * (1 + h)) + e * (1 + c))),
        ),
        "phi2" => (
            (4 * b * (e + v)).max(4 * b * (1 + 4 * e + c + c * h)),
            (4 * b * (2 * e + v) + e * v * 105 / 128).max(4 * b * (2 + 3 * e + c + c * h)),
        ),
        "stablelm" => {
            let full = 4 * b * (c * (1 + h) + 3 * e + 2);
            (full, (4 * b * (v + 2 * e)).max(full))
        }
        "deepseek2" => (
            (4 * b * (3 * e + v)).max(4 * b * (3 * e + 2 + c * (1 + hkv) + 2 * ehk * hkv)),
            (4 * b * (3 * e + v) + e * v * 105 / 128)
                .max(4 * b * (2 * e + 1 + 2 * ehk * hkv + c + c * hkv) + 4 * ehk * c * hkv + e * ehk * hkv * 9 / 16),
        ),
        "chatglm" => (4 * b * (e + v), 4 * b * (e + v) + e * v * 105 / 128),
        "gptoss" | "gpt-oss" => {
            // Uses the full-context KV total before the sliding-window rule (`:790`).
            let full_kv =
                u128::from(meta.block_count) * c * u128::from(meta.head_dim_k() + meta.head_dim_v()) * hkv * 2;
            let partial =
                if fa { (4 * u128::from(parallel) + (c >> 10) + 110) << 20 } else { 2 * h / hkv.max(1) * full_kv / 6 };
            (0, partial)
        }
        _ => (0, 0),
    };
    let mut partial = to_u64(partial);
    let mut full = to_u64(full);
    if partial == 0 {
        partial = to_u64(h / hkv.max(1) * u128::from(kv_total) / 6);
    }
    if full == 0 {
        full = partial;
    }
    GraphEstimate { full, partial }
}

fn to_u64(x: u128) -> u64 {
    u64::try_from(x).unwrap_or(u64::MAX)
}

/// What [`estimate`] works out, in Ollama's own terms (the `msg=offload` log line,
/// `o:llm/memory.go:430-488`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Estimate {
    /// `layers.offload`: blocks plus the output layer placed on GPUs.
    pub layers: u32,
    /// `layers.split`: layers per GPU, in the order of the GPUs given.
    pub split: Vec<u32>,
    /// `memory.required.allocations`: bytes per GPU.
    pub allocations: Vec<u64>,
    /// `memory.required.partial` (VRAMSize): 0 when no layer fits (`o:llm/memory.go:417-419`).
    pub vram: u64,
    /// `memory.required.full` (TotalSize): all allocations plus what overflows (`:386`).
    pub total: u64,
    /// `memory.required.kv`.
    pub kv: u64,
    /// `memory.graph.full` / `memory.graph.partial`, after the multi-GPU rule (`:233-239`).
    pub graph: GraphEstimate,
    /// The graph added to each GPU used (full when everything is on the GPUs, `:364-379`).
    pub graph_used: u64,
    /// `memory.weights.repeating`: all blocks' weights (`:311`).
    pub weights_repeating: u64,
    /// `memory.weights.nonrepeating`: `output_norm` + `output` (or `token_embd`) (`:241-249`).
    pub weights_output: u64,
    /// Block weights placed on GPUs.
    pub weights_on_gpu: u64,
    /// Whether the output layer went on a GPU.
    pub output_on_gpu: bool,
    /// Weights and KV of the blocks left on the CPU.
    pub overflow_blocks: u64,
}

/// How the model is run, as `estimateGPULayers` reads it.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// `num_ctx` per slot (already capped at the training context, `o:llm/server.go:171-176`).
    pub context: u32,
    /// `num_batch`.
    pub batch: u32,
    /// `OLLAMA_NUM_PARALLEL`.
    pub parallel: u32,
    /// `OLLAMA_KV_CACHE_TYPE`.
    pub kv_type: KvType,
    /// Whether flash attention is on ([`flash_attention`]).
    pub flash_attention: bool,
    /// `num_gpu`; negative lets Ollama pick.
    pub num_gpu: i32,
    /// `OLLAMA_GPU_OVERHEAD`.
    pub overhead: u64,
}

/// The GPUs Ollama gives `estimateGPULayers` and its estimate on them: the fewest GPUs, largest
/// free first, on which every layer fits (`o:llm/memory.go:17-63,84-106`), else all of them
/// (`:66-70`, one library).
pub fn schedule(meta: &ModelMeta, gpus_free: &[u64], s: &Settings) -> (Vec<usize>, Estimate) {
    let mut order: Vec<usize> = (0..gpus_free.len()).collect();
    order.sort_by_key(|g| std::cmp::Reverse(gpus_free[*g]));
    for n in 1..=order.len() {
        let subset: Vec<u64> = order[..n].iter().map(|g| gpus_free[*g]).collect();
        let e = estimate(meta, &subset, s);
        let wanted = if s.num_gpu < 0 { meta.block_count + 1 } else { s.num_gpu as u32 };
        if e.layers > 0 && e.layers >= wanted {
            return (order[..n].to_vec(), e);
        }
    }
    ((0..gpus_free.len()).collect(), estimate(meta, gpus_free, s))
}

/// `estimateGPULayers` (`o:llm/memory.go:144-428`) on GPUs of one library with `gpus_free` bytes
/// free each; no projector (`:183-188` adds one only for vision models).
pub fn estimate(meta: &ModelMeta, gpus_free: &[u64], s: &Settings) -> Estimate {
    let context = u64::from(s.context);
    let batch = u64::from(s.context.min(s.batch)); // `:210`
    let parallel = u64::from(s.parallel.max(1));
    let bytes = bytes_per_element(s.kv_type, s.flash_attention);
    let kv = kv_layers(meta, context, batch, parallel, bytes);
    let kv_total: u64 = kv.iter().sum();
    let mut graph = graph_size(meta, context, batch, parallel, kv_total, s.flash_attention);
    if gpus_free.len() > 1 {
        graph.full = graph.partial; // multi-GPU always uses the partial graph (`:236-239`)
    }
    let graph_max = graph.full.max(graph.partial);
    let blk = |i: usize| meta.layer_bytes.get(i).copied().unwrap_or(0);
    let kv_at = |i: usize| kv.get(i).copied().unwrap_or(0);
    let output = meta.output_bytes;
    let overhead = s.overhead;

    // One layer's worth held back as a buffer: blk.0 plus its KV (`:190-214`).
    let buffer = blk(0).saturating_add(kv_at(0));
    let mut alloc = vec![0u64; gpus_free.len()];
    let mut split = vec![0u32; gpus_free.len()];
    let mut with_space: Vec<usize> = Vec::new();
    for (g, free) in gpus_free.iter().enumerate() {
        // `:267-268`: the graph, the minimum, the buffer and at least one more layer.
        let floor = overhead.saturating_add(graph_max).saturating_add(MINIMUM_MEMORY).saturating_add(2 * buffer);
        if *free < floor {
            continue;
        }
        with_space.push(g);
        alloc[g] = MINIMUM_MEMORY.saturating_add(buffer); // `:294`
    }

    let blocks = meta.block_count as usize;
    let (mut layers, mut overflow, mut weights, mut on_gpu) = (0u32, 0u64, 0u64, 0u64);
    for i in (0..blocks).rev() {
        // `:306-337`: from the last block down.
        let size = blk(i).saturating_add(kv_at(i));
        weights = weights.saturating_add(blk(i));
        if s.num_gpu >= 0 && i64::from(layers) >= i64::from(s.num_gpu) {
            overflow = overflow.saturating_add(size);
            continue;
        }
        let mut j = with_space.len();
        while j > 0 {
            let g = with_space[i % j];
            if gpus_free[g] > overhead.saturating_add(alloc[g]).saturating_add(graph_max).saturating_add(size) {
                alloc[g] = alloc[g].saturating_add(size);
                split[g] += 1;
                layers += 1;
                on_gpu = on_gpu.saturating_add(blk(i));
                break;
            }
            with_space.remove(i % j);
            j -= 1;
        }
        if with_space.is_empty() {
            overflow = overflow.saturating_add(size);
        }
    }
    let overflow_blocks = overflow;
    let mut fully = layers >= meta.block_count;

    // The output layer, on the next GPU in turn if it has room (`:342-362`).
    let mut output_on_gpu = false;
    if output > 0 {
        if s.num_gpu < 0 || i64::from(layers) < i64::from(s.num_gpu) {
            let mut j = with_space.len();
            while j > 0 {
                let g = with_space[layers as usize % j];
                if gpus_free[g] > overhead.saturating_add(alloc[g]).saturating_add(graph_max).saturating_add(output) {
                    alloc[g] = alloc[g].saturating_add(output);
                    split[g] += 1;
                    layers += 1;
                    output_on_gpu = true;
                    break;
                }
                j -= 1;
            }
        }
        if layers < meta.block_count + 1 {
            fully = false;
            overflow = overflow.saturating_add(output);
        }
    }

    let graph_used = if fully { graph.full } else { graph.partial };
    for (a, n) in alloc.iter_mut().zip(&split) {
        if *n > 0 {
            *a = a.saturating_add(graph_used); // `:364-374`
        }
    }
    let partial: u64 = alloc.iter().sum();
    Estimate {
        layers,
        split,
        allocations: alloc,
        vram: if layers == 0 { 0 } else { partial },
        total: partial.saturating_add(overflow),
        kv: kv_total,
        graph,
        graph_used,
        weights_repeating: weights,
        weights_output: output,
        weights_on_gpu: on_gpu,
        output_on_gpu,
        overflow_blocks,
    }
}
