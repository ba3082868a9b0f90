//! The shapes of the Ollama API's answers: the public views (pull progress, tags, `show`, `ps`)
//! and the wire bodies they are read from.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};

/// One progress line of a pull.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PullProgress {
    /// `pulling manifest`, `pulling <12 hex>`, `verifying sha256 digest`, `writing manifest`, `success`, …
    pub status: String,
    /// The layer's digest (`sha256:…`), on layer lines.
    #[serde(default)]
    pub digest: Option<String>,
    /// The layer's size in bytes; missing when zero or unknown.
    #[serde(default)]
    pub total: Option<u64>,
    /// Bytes of the layer downloaded so far; missing when zero.
    #[serde(default)]
    pub completed: Option<u64>,
}

/// What a finished pull reported.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PullOutcome {
    /// Layer digests seen, in first-seen order.
    pub digests: Vec<String>,
    /// Sum of the layers' `total` sizes, bytes.
    pub total_bytes: u64,
    /// Progress lines received (including `success`).
    pub lines: usize,
    /// Request sent → `success`.
    pub elapsed: Duration,
}

/// `details` of a model as `/api/tags`, `/api/ps` and `/api/show` give them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default)]
pub struct ModelDetails {
    /// Parent model, usually empty.
    pub parent_model: Option<String>,
    /// File format, e.g. `gguf`.
    pub format: Option<String>,
    /// Family, e.g. `llama`.
    pub family: Option<String>,
    /// All families.
    pub families: Option<Vec<String>>,
    /// Parameter size, e.g. `33B`, `7.2B`.
    pub parameter_size: Option<String>,
    /// Quantisation, e.g. `Q4_0`, `Q4_K_M`.
    pub quantization_level: Option<String>,
    /// Training context, when the server gives it here.
    pub context_length: Option<u64>,
    /// Embedding length, when the server gives it here.
    pub embedding_length: Option<u64>,
}

/// One installed model from `/api/tags`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default)]
pub struct TagModel {
    /// Name, e.g. `deepseek-coder:33b`.
    pub name: String,
    /// Model name (same as `name` in current versions).
    pub model: String,
    /// Last modification time as the server wrote it.
    pub modified_at: Option<String>,
    /// Download size, bytes.
    pub size: u64,
    /// Manifest digest.
    pub digest: String,
    /// Format, family, size and quantisation.
    pub details: ModelDetails,
}

/// What `/api/show` says about a model.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ShowInfo {
    /// Parameter size, e.g. `33B`.
    pub parameter_size: Option<String>,
    /// Quantisation, e.g. `Q4_0`.
    pub quantization_level: Option<String>,
    /// Family, e.g. `llama`.
    pub family: Option<String>,
    /// File format, e.g. `gguf`.
    pub format: Option<String>,
    /// Training context length (`details.context_length` or `<arch>.context_length`).
    pub context_length: Option<u64>,
    /// GGUF key/value metadata (`general.architecture`, `<arch>.block_count`, …).
    pub model_info: Map<String, Value>,
    /// Capabilities, e.g. `completion`, `tools`, `vision`.
    pub capabilities: Vec<String>,
    /// The Modelfile's `parameters` text (e.g. `num_ctx 16384`), if any.
    pub parameters: Option<String>,
    /// The GGUF tensor table: name, ggml type name and shape of each tensor (Ollama 0.12.6 sends
    /// it with or without `verbose`: `o:server/routes.go:1135-1139`, `o:api/types.go:703-707`).
    pub tensors: Vec<ShowTensor>,
}

/// One tensor as `/api/show` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default)]
pub struct ShowTensor {
    /// Tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// ggml type name, e.g. `Q4_K`, `F32`.
    #[serde(rename = "type")]
    pub ggml_type: String,
    /// Dimensions, innermost first.
    pub shape: Vec<u64>,
}

impl ShowInfo {
    /// `general.architecture`, e.g. `llama`.
    pub fn architecture(&self) -> Option<&str> {
        self.model_info.get("general.architecture").and_then(Value::as_str)
    }

    /// A numeric `<arch>.<key>` value, e.g. `arch_u64("block_count")`.
    pub fn arch_u64(&self, key: &str) -> Option<u64> {
        let arch = self.architecture()?;
        self.model_info.get(&format!("{arch}.{key}")).and_then(as_u64)
    }

    /// `general.parameter_count`.
    pub fn parameter_count(&self) -> Option<u64> {
        self.model_info.get("general.parameter_count").and_then(as_u64)
    }

    /// f16 KV-cache bytes per token of context:
    /// `Σ_layers head_count_kv × (key_length + value_length) × 2`, where the head dims default
    /// to `embedding_length / head_count` and a per-layer `head_count_kv` array is summed.
    pub fn kv_bytes_per_token_f16(&self) -> Option<u64> {
        let arch = self.architecture()?;
        let layers = self.arch_u64("block_count")?;
        let heads = self.arch_u64("attention.head_count").filter(|h| *h > 0);
        let embedding = self.arch_u64("embedding_length");
        let default_dim = match (embedding, heads) {
            (Some(e), Some(h)) => Some(e / h),
            _ => None,
        };
        let key_dim = self.arch_u64("attention.key_length").or(default_dim)?;
        let value_dim = self.arch_u64("attention.value_length").or(default_dim)?;
        let kv_heads_total = match self.model_info.get(&format!("{arch}.attention.head_count_kv")) {
            Some(Value::Array(per_layer)) => {
                let counts: Option<Vec<u64>> = per_layer.iter().map(as_u64).collect();
                let counts = counts?;
                if counts.len() as u64 == layers {
                    counts.iter().sum()
                } else {
                    counts.iter().copied().min()?.checked_mul(layers)?
                }
            }
            Some(v) => as_u64(v)?.checked_mul(layers)?,
            // No GQA key: as many KV heads as query heads.
            None => heads?.checked_mul(layers)?,
        };
        kv_heads_total.checked_mul(key_dim + value_dim)?.checked_mul(2)
    }
}

/// One model loaded in memory, from `/api/ps`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default)]
pub struct PsModel {
    /// Name, e.g. `mistral:latest`.
    pub name: String,
    /// Model name.
    pub model: String,
    /// Bytes the loaded model uses (weights + KV + graph).
    pub size: u64,
    /// The part of `size` on the GPU, bytes.
    pub size_vram: u64,
    /// Manifest digest.
    pub digest: String,
    /// Effective `num_ctx` of the runner (Ollama ≥ 0.9.7).
    pub context_length: Option<u64>,
    /// When it will be unloaded, as the server wrote it (RFC 3339).
    pub expires_at: Option<String>,
    /// Format, family, size and quantisation.
    pub details: ModelDetails,
}

impl PsModel {
    /// The `PROCESSOR` column of `ollama ps`: `100% GPU`, `100% CPU` or `48%/52% CPU/GPU`.
    pub fn processor(&self) -> String {
        if self.size_vram == 0 {
            "100% CPU".to_string()
        } else if self.size_vram == self.size {
            "100% GPU".to_string()
        } else if self.size_vram > self.size || self.size == 0 {
            "Unknown".to_string()
        } else {
            let cpu = ((self.size - self.size_vram) as f64 / self.size as f64 * 100.0).round() as u64;
            format!("{cpu}%/{}% CPU/GPU", 100 - cpu)
        }
    }
}

#[derive(Deserialize)]
pub(super) struct VersionBody {
    pub(super) version: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct ModelsBody<T> {
    #[serde(default = "Vec::new")]
    pub(super) models: Vec<T>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct ShowBody {
    pub(super) details: ModelDetails,
    pub(super) model_info: Option<Map<String, Value>>,
    pub(super) capabilities: Option<Vec<String>>,
    pub(super) parameters: Option<String>,
    pub(super) tensors: Option<Vec<ShowTensor>>,
}

#[derive(Deserialize)]
pub(super) struct PullLine {
    pub(super) status: Option<String>,
    pub(super) digest: Option<String>,
    pub(super) total: Option<u64>,
    pub(super) completed: Option<u64>,
    pub(super) error: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct ChatMessage {
    pub(super) content: Option<String>,
    pub(super) thinking: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct ChatChunk {
    pub(super) message: Option<ChatMessage>,
    /// `/api/generate` puts the text here.
    pub(super) response: Option<String>,
    pub(super) done: bool,
    pub(super) done_reason: Option<String>,
    pub(super) load_duration: Option<u64>,
    pub(super) prompt_eval_count: Option<u64>,
    pub(super) prompt_eval_duration: Option<u64>,
    pub(super) eval_count: Option<u64>,
    pub(super) eval_duration: Option<u64>,
    pub(super) error: Option<Value>,
}

pub(super) fn as_u64(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_f64().filter(|f| *f >= 0.0 && f.fract() == 0.0).map(|f| f as u64))
}
