//! A built-in table of the large-model plan's models, for predicting fit before anything is
//! downloaded.
//!
//! These figures are **built in, not measured**: architecture numbers are the upstream
//! `config.json` values and weight sizes the Ollama library sizes, both recalled in
//! `reference/engine-api-facts.md` §4 (llama3.1:8b is not in that table; its figures are the
//! Llama 3.1 8B config and the ~4.9 GB Q4_K_M download, also recalled). Every [`ModelMeta`] from
//! here says so in its `source`; prefer the GGUF header or `/api/show` once the model is pulled.

use crate::gguf::{MetaSource, ModelMeta};

/// One model's recalled figures.
struct Entry {
    tag: &'static str,
    /// Ollama's explicit tag for the same blob, which plans may name instead.
    full_tag: &'static str,
    layers: u32,
    embedding: u32,
    heads: u32,
    kv_heads: u32,
    ffn: u32,
    vocab: u32,
    context: u32,
    file_type: u32,
    quant: &'static str,
    /// Weights (≈ GGUF size) in MiB: §3.4's GiB figures, or the download size.
    weights_mib: u64,
}

const ENTRIES: [Entry; 6] = [
    Entry {
        tag: "deepseek-coder:33b",
        full_tag: "deepseek-coder:33b-instruct-q4_0",
        layers: 62,
        embedding: 7168,
        heads: 56,
        kv_heads: 8,
        ffn: 19200,
        vocab: 32256,
        context: 16384,
        file_type: 2,
        quant: "Q4_0",
        weights_mib: 17_920, // 17.5 GiB (18.8 GB)
    },
    Entry {
        tag: "deepseek-coder:6.7b",
        full_tag: "deepseek-coder:6.7b-instruct-q4_0",
        layers: 32,
        embedding: 4096,
        heads: 32,
        kv_heads: 32,
        ffn: 11008,
        vocab: 32256,
        context: 16384,
        file_type: 2,
        quant: "Q4_0",
        weights_mib: 3_686, // 3.6 GiB (3.8 GB)
    },
    Entry {
        tag: "codellama:34b",
        full_tag: "codellama:34b-instruct-q4_0",
        layers: 48,
        embedding: 8192,
        heads: 64,
        kv_heads: 8,
        ffn: 22016,
        vocab: 32000,
        context: 16384,
        file_type: 2,
        quant: "Q4_0",
        weights_mib: 18_125, // 17.7 GiB (19.0 GB)
    },
    Entry {
        tag: "codellama:7b",
        full_tag: "codellama:7b-instruct-q4_0",
        layers: 32,
        embedding: 4096,
        heads: 32,
        kv_heads: 32,
        ffn: 11008,
        vocab: 32016,
        context: 16384,
        file_type: 2,
        quant: "Q4_0",
        weights_mib: 3_686, // 3.6 GiB (3.8 GB)
    },
    Entry {
        tag: "llama3.1:70b",
        full_tag: "llama3.1:70b-instruct-q4_K_M",
        layers: 80,
        embedding: 8192,
        heads: 64,
        kv_heads: 8,
        ffn: 28672,
        vocab: 128256,
        context: 131072,
        file_type: 15,
        quant: "Q4_K_M",
        weights_mib: 40_960, // 40.0 GiB (43.0 GB)
    },
    Entry {
        tag: "llama3.1:8b",
        full_tag: "llama3.1:8b-instruct-q4_K_M",
        layers: 32,
        embedding: 4096,
        heads: 32,
        kv_heads: 8,
        ffn: 14336,
        vocab: 128256,
        context: 131072,
        file_type: 15,
        quant: "Q4_K_M",
        weights_mib: 4_693, // 4.92 GB
    },
];

/// The built-in figures for an Ollama tag (`codellama:34b`, its explicit `-instruct-q4_0` form,
/// or with a `registry.ollama.ai/library/` prefix); None for models not in the table.
pub fn lookup(tag: &str) -> Option<ModelMeta> {
    let t = tag.trim();
    let t = t.strip_prefix("registry.ollama.ai/").unwrap_or(t);
    let t = t.strip_prefix("library/").unwrap_or(t);
    ENTRIES.iter().find(|e| e.tag.eq_ignore_ascii_case(t) || e.full_tag.eq_ignore_ascii_case(t)).map(meta)
}

fn meta(e: &Entry) -> ModelMeta {
    let (l, emb, v) = (u64::from(e.layers), u64::from(e.embedding), u64::from(e.vocab));
    let head_dim = u64::from(e.embedding / e.heads);
    let attention = emb * head_dim * u64::from(e.heads) * 2 + 2 * emb * u64::from(e.kv_heads) * head_dim;
    let layer_params = attention + 3 * emb * u64::from(e.ffn) + 2 * emb;
    let parameter_count = l * layer_params + 2 * v * emb + emb;

    // llama.cpp quantises the input embeddings with the base 4.5-bit type (Q4_0 / Q4_K) and the
    // output matrix as Q6_K (210 bytes per 256) in both Q4_0 and Q4_K_M files.
    let token_embd_bytes = v * emb * 18 / 32;
    let output_bytes = v * emb * 210 / 256 + 4 * emb;
    let weights_bytes = e.weights_mib << 20;
    let per_layer = weights_bytes.saturating_sub(token_embd_bytes + output_bytes) / l;

    ModelMeta {
        source: MetaSource::BuiltIn,
        architecture: "llama".into(),
        name: Some(e.tag.into()),
        block_count: e.layers,
        head_count: e.heads,
        head_count_kv: e.kv_heads,
        embedding_length: e.embedding,
        key_length: None,
        value_length: None,
        feed_forward_length: Some(e.ffn),
        context_length: e.context,
        sliding_window: None,
        vocab_size: Some(e.vocab),
        file_type: Some(e.file_type),
        quantization: e.quant.into(),
        parameter_count,
        weights_bytes,
        layer_bytes: vec![per_layer; e.layers as usize],
        output_bytes,
        token_embd_bytes,
        other_bytes: 0,
        output_tied: false,
        file_bytes: Some(weights_bytes),
        chat_template: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn every_plan_model_is_known_and_marked_built_in() {
        let tags: Vec<_> = ENTRIES.iter().map(|e| e.tag).collect();
        assert_eq!(tags.len(), 6);
        for tag in tags {
            let m = lookup(tag).expect("known");
            assert_eq!(m.source, MetaSource::BuiltIn);
            assert!(m.source.to_string().contains("not measured"));
            assert_eq!(m.layer_bytes.len(), m.block_count as usize);
        }
        assert!(lookup("mistral:7b").is_none());
    }

    #[test]
    fn aliases_resolve() {
        assert_eq!(lookup("registry.ollama.ai/library/codellama:34b"), lookup("codellama:34b"));
        assert_eq!(lookup("llama3.1:70b-instruct-q4_K_M").map(|m| m.block_count), Some(80));
    }

    #[test]
    fn per_layer_sizes_match_section_4() {
        // §4: 33b ≈ 285 MiB, 34b ≈ 371 MiB, 70b ≈ 495 MiB, 7B ≈ 109 MiB per layer.
        for (tag, mib) in
            [("deepseek-coder:33b", 285), ("codellama:34b", 371), ("llama3.1:70b", 495), ("codellama:7b", 109)]
        {
            let m = lookup(tag).expect("known");
            let got = m.layer_bytes[0] / MIB;
            assert!(got.abs_diff(mib) <= 2, "{tag}: {got} MiB per layer, §4 says {mib}");
        }
    }

    #[test]
    fn parameter_counts_match_the_model_names() {
        for (tag, billions) in [
            ("deepseek-coder:33b", 33.3),
            ("codellama:34b", 33.7),
            ("llama3.1:70b", 70.6),
            ("llama3.1:8b", 8.03),
            ("codellama:7b", 6.74),
        ] {
            let m = lookup(tag).expect("known");
            let got = m.parameter_count as f64 / 1e9;
            assert!((got - billions).abs() / billions < 0.02, "{tag}: {got:.2}B");
        }
    }
}
