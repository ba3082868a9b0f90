//! What to change when a model does not fit: the smallest step that turns a no-go into a go,
//! from fewer slots to a smaller quantisation.

use protocol::results::Fit;

use super::{CONTAINER_HEADROOM, FitInputs, GIB, HostCapacity, KvType, Prediction, human, kv_bytes, predict};
use crate::gguf::ModelMeta;

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
        // Ollama counts a quantised cache only with flash attention on (o:llm/memory.go:202-208).
        let q8 = FitInputs { kv_type: KvType::Q8_0, flash_attention: Some(true), ..inputs.clone() };
        if fits(meta, host, &q8) {
            return format!(
                "use a q8_0 KV cache (OLLAMA_KV_CACHE_TYPE=q8_0 with flash attention on): KV {} instead of {}",
                human(predict(meta, host, &q8).kv_bytes),
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
