//! Ollama's own estimate ([`super::ollama`]) held to real `msg="offload …"` log lines that users
//! posted in public GitHub issues: the model figures a line states (layers, weights, KV, free
//! VRAM, context) go in, and the layers, graph and memory Ollama printed must come out.
//!
//! The logs come from Ollama 0.2.8–0.5.11. The parts of `llm/memory.go` they exercise are the
//! same in 0.12.6: `GraphSize`'s formulas (`o:fs/ggml/ggml.go:613-741`), KV = context × KV heads ×
//! (K + V dims) × 2 bytes, the GPU floor `overhead + graph + 457 MiB + 2 × layer`
//! (`o:llm/memory.go:268`), the buffer layer (`:294`), the `free > overhead + used + layer` test
//! (`:324`), the output layer last (`:342-362`), the multi-GPU partial graph (`:236-239`) and
//! TotalSize (`:386`). What changed since: 0.12.6 places blocks from the last one down (the
//! old code from the first up; the same for uniform blocks) and its `memory.weights.*` no longer
//! include the KV cache — these older lines print `weights.total` = Σ(block + KV per block)
//! without the output (`o@v0.4.7:llm/memory.go:204-207,375-377`), which is how the block size
//! is recovered from them below.
//!
//! Every logged figure is rounded by Ollama's `HumanBytes2` (one decimal), so the inputs carry
//! up to ±0.05 GiB; memory is asserted within 0.1 GiB, the graph within 0.05 MiB (it depends
//! only on the model's shape), the layer count exactly.

use super::ollama::{Estimate, Settings, estimate, schedule};
use super::*;
use crate::builtin;

fn gib(x: f64) -> u64 {
    (x * GIB as f64).round() as u64
}

fn mib(x: f64) -> u64 {
    (x * MIB as f64).round() as u64
}

/// A model as the log line states it: `blocks` = `layers.model` − 1, block bytes recovered from
/// `weights.total` less the KV, the output from `weights.nonrepeating`. The shape (embedding,
/// heads, KV heads, vocabulary) is not in the line: it comes from the named model's header.
fn from_log(base: &str, arch: &str, vocab: u32, blocks: u32, weights_total: u64, kv: u64, output: u64) -> ModelMeta {
    let mut m = builtin::lookup(base).expect("built in");
    m.architecture = arch.into();
    m.vocab_size = Some(vocab);
    m.block_count = blocks;
    m.context_length = 131_072;
    let per_block = weights_total.saturating_sub(kv) / u64::from(blocks);
    m.layer_bytes = vec![per_block; blocks as usize];
    m.output_bytes = output;
    m
}

fn settings(context: u32) -> Settings {
    Settings {
        context,
        batch: 512,
        parallel: 1,
        kv_type: KvType::F16,
        flash_attention: false,
        num_gpu: -1,
        overhead: 0,
    }
}

fn close(got: u64, want: u64, tol: u64, what: &str) {
    let d = got.abs_diff(want);
    assert!(
        d <= tol,
        "{what}: predicted {got} B ({:.3} GiB), Ollama logged {want} B ({:.3} GiB)",
        got as f64 / GIB as f64,
        want as f64 / GIB as f64
    );
}

fn print(name: &str, e: &Estimate) {
    eprintln!(
        "{name}: layers.offload={} split={:?} required.full={:.2} GiB required.partial={:.2} GiB kv={:.1} MiB graph.full={:.1} MiB graph.partial={:.1} MiB allocations={:?}",
        e.layers,
        e.split,
        e.total as f64 / GIB as f64,
        e.vram as f64 / GIB as f64,
        e.kv as f64 / MIB as f64,
        e.graph.full as f64 / MIB as f64,
        e.graph.partial as f64 / MIB as f64,
        e.allocations.iter().map(|a| format!("{:.2} GiB", *a as f64 / GIB as f64)).collect::<Vec<_>>()
    );
}

#[test]
fn codellama_34b_on_one_cuda_gpu_matches_ollama_issue_8143() {
    // ollama/ollama#8143 (Ollama 0.4.7, CUDA, codellama:34b q4_0, num_ctx 2048):
    // layers.model=49 layers.offload=26 memory.available="[10.8 GiB]" memory.required.full="19.1 GiB"
    // memory.required.partial="10.8 GiB" memory.required.kv="384.0 MiB" memory.weights.total="17.8 GiB"
    // memory.weights.nonrepeating="205.1 MiB" memory.graph.full="324.0 MiB" memory.graph.partial="348.0 MiB"
    let m = from_log("codellama:34b", "llama", 32_000, 48, gib(17.8), mib(384.0), mib(205.1));
    let e = estimate(&m, &[gib(10.8)], &settings(2048));
    print("codellama:34b #8143", &e);
    assert_eq!(e.kv, mib(384.0), "KV");
    close(e.graph.full, mib(324.0), mib(0.05), "graph.full");
    close(e.graph.partial, mib(348.0), mib(0.05), "graph.partial");
    assert_eq!(e.layers, 26, "layers.offload");
    close(e.vram, gib(10.8), gib(0.1), "required.partial");
    close(e.total, gib(19.1), gib(0.1), "required.full");
    assert!(!e.output_on_gpu);
}

#[test]
fn qwen2_72b_on_one_rocm_gpu_matches_ollama_issue_5913() {
    // ollama/ollama#5913 (Ollama of July 2024, ROCm, dolphin-qwen2:72b-v2.9.2-q4_k_s,
    // --ctx-size 2048 --batch-size 512 --parallel 1): layers.model=81 layers.offload=43
    // memory.available="[24.0 GiB]" memory.required.full="43.1 GiB" memory.required.partial="23.7 GiB"
    // memory.required.kv="640.0 MiB" memory.weights.total="39.9 GiB" memory.weights.nonrepeating="974.6 MiB"
    // memory.graph.full="313.0 MiB" memory.graph.partial="1.3 GiB".
    // Qwen2-72B's shape: 8192 embedding, 64 heads, 8 KV heads, vocabulary 152064 (not in the line;
    // graph.full = 4 × 512 × (8192 + 152064) bytes is what the line shows).
    let m = from_log("llama3.1:70b", "qwen2", 152_064, 80, gib(39.9), mib(640.0), mib(974.6));
    let e = estimate(&m, &[gib(24.0)], &settings(2048));
    print("qwen2:72b #5913", &e);
    assert_eq!(e.kv, mib(640.0), "KV");
    close(e.graph.full, mib(313.0), mib(0.05), "graph.full");
    close(e.graph.partial, gib(1.3), gib(0.05), "graph.partial");
    assert_eq!(e.layers, 43, "layers.offload");
    close(e.vram, gib(23.7), gib(0.1), "required.partial");
    close(e.total, gib(43.1), gib(0.1), "required.full");
}

#[test]
fn llama_70b_on_four_cuda_gpus_matches_ollama_issue_9181() {
    // ollama/ollama#9181 (Ollama of February 2025, CUDA, a llama 70B, num_ctx 64000):
    // layers.model=81 layers.offload=44 layers.split=11,11,11,11
    // memory.available="[22.0 GiB 22.0 GiB 22.0 GiB 22.0 GiB]" memory.required.full="127.4 GiB"
    // memory.required.partial="87.1 GiB" memory.required.kv="19.5 GiB"
    // memory.required.allocations="[21.8 GiB 21.8 GiB 21.8 GiB 21.8 GiB]" memory.weights.total="87.3 GiB"
    // memory.weights.nonrepeating="1.0 GiB" memory.graph.full="8.2 GiB" memory.graph.partial="8.2 GiB".
    // The line does not name the model; its KV (64000 × 80 × 8 × 256 × 2 B = 19.5 GiB) and graph
    // fit Llama 3 70B's shape (8192 embedding, 64 heads, 8 KV heads, vocabulary 128256).
    let m = from_log("llama3.1:70b", "llama", 128_256, 80, gib(87.3), 64_000 * 80 * 8 * 256 * 2, gib(1.0));
    let free = [gib(22.0); 4];
    let e = estimate(&m, &free, &settings(64_000));
    print("llama 70b #9181", &e);
    close(e.kv, gib(19.5), gib(0.05), "KV");
    // More than one GPU: the full graph is the partial one.
    assert_eq!(e.graph.full, e.graph.partial);
    close(e.graph.partial, gib(8.2), gib(0.05), "graph.partial");
    assert_eq!(e.split, vec![11, 11, 11, 11], "layers.split");
    assert_eq!(e.layers, 44, "layers.offload");
    for a in &e.allocations {
        close(*a, gib(21.8), gib(0.1), "allocation");
    }
    close(e.vram, gib(87.1), gib(0.2), "required.partial");
    close(e.total, gib(127.4), gib(0.2), "required.full");
    // No subset of the GPUs holds every layer, so Ollama schedules all four.
    let (gpus, s) = schedule(&m, &free, &settings(64_000));
    assert_eq!(gpus, vec![0, 1, 2, 3]);
    assert_eq!(s, e);
}

#[test]
fn the_ollama_verdict_takes_ollamas_layers_and_names_its_engine() {
    let host = HostCapacity { gpus_free_vram: vec![gib(10.8)], ram_available: gib(64.0), container_limit: None };
    let m = from_log("codellama:34b", "llama", 32_000, 48, gib(17.8), mib(384.0), mib(205.1));
    let inputs = FitInputs { engine: FitEngine::Ollama, context: 2048, ..FitInputs::default() };
    let p = predict(&m, &host, &inputs);
    assert_eq!(p.layers_on_gpu, 26);
    assert_eq!(p.vram_bytes, estimate(&m, &host.gpus_free_vram, &settings(2048)).vram);
    assert!(p.reason.contains("llama engine"), "{}", p.reason);
    // The llama-server path keeps its own rules (ggml's KV blocks, no output layer rule change).
    let ls = predict(&m, &host, &FitInputs { engine: FitEngine::LlamaServer, ..inputs.clone() });
    assert!(!ls.reason.contains("Ollama 0.12.6"), "{}", ls.reason);

    let mut g = m.clone();
    g.architecture = "gemma3".into();
    g.sliding_window = Some(1024);
    let p = predict(&g, &host, &inputs);
    assert!(p.reason.contains("new engine") && p.reason.contains("measures the layout at load"), "{}", p.reason);
}

#[test]
fn a_quantised_kv_cache_counts_only_with_flash_attention_as_ollama_rounds_it() {
    let m = from_log("codellama:34b", "llama", 32_000, 48, gib(17.8), mib(384.0), mib(205.1));
    let q8 = Settings { kv_type: KvType::Q8_0, ..settings(2048) };
    // llama is not in Ollama's flash-attention-by-default list: the cache stays f16.
    assert!(!ollama::flash_attention(&m, None));
    assert_eq!(estimate(&m, &[gib(10.8)], &q8).kv, mib(384.0));
    // With OLLAMA_FLASH_ATTENTION=1, q8_0 is 1 byte an element (o:fs/ggml/ggml.go:904-915).
    assert!(ollama::flash_attention(&m, Some(true)));
    assert_eq!(estimate(&m, &[gib(10.8)], &Settings { flash_attention: true, ..q8 }).kv, mib(192.0));
}
