//! Tests of the memory prediction against hand-computed figures and the reference's worked
//! examples.

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

#[test]
fn gemma3_sliding_window_layers_hold_only_the_window() {
    let m = crate::gguf::read_metadata(&testkit::demo_model()).expect("parses");
    assert_eq!((m.architecture.as_str(), m.sliding_window, m.block_count), ("gemma3", Some(512), 18));
    // Every 6th layer attends to the whole context: 3 of 18.
    assert_eq!(swa_layers(&m), 15);
    // Window + micro-batch, padded to 256, never over the context (llama-server 11434 logged
    // 512 cells at context 512 and 1024 at 8192).
    assert_eq!(swa_cells(&m, 512, 512), 512);
    assert_eq!(swa_cells(&m, 8192, 512), 1024);
    assert_eq!(swa_cells(&m, 8192, 100), 768);
    // 1 KV head × (256 + 256) × 2 bytes per layer and cell: 3 × 8192 + 15 × 1024 cells = 39 MiB,
    // the two `KV buffer size` lines llama-server printed (24.00 + 15.00 MiB).
    assert_eq!(kv_bytes_at(&m, 8192, 1, KvType::F16, 512), 39 * MIB);
    // Two slots: two streams of each cache.
    assert_eq!(kv_bytes_at(&m, 8192, 2, KvType::F16, 512), 78 * MIB);
    // A model without a window keeps every layer's full context.
    let l = llama3_8b();
    assert_eq!(swa_layers(&l), 0);
    assert_eq!(kv_bytes_at(&l, 8192, 1, KvType::F16, 512), GIB);
}
