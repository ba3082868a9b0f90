//! What a parsed header says about the model: architecture figures, quantisation, parameter
//! count and the bytes of each block, the output layer and the embeddings.

use std::collections::BTreeMap;

use super::header::{GgufHeader, Value};
use super::{GgufError, MAX_BLOCKS, MetaSource, ModelMeta, file_type_name, ggml_type};

impl GgufHeader {
    fn arch_key(&self, arch: &str, suffix: &str) -> Option<&Value> {
        self.values.get(&format!("{arch}.{suffix}"))
    }

    fn required_u32(&self, arch: &str, suffix: &str) -> Result<u32, GgufError> {
        let key = format!("{arch}.{suffix}");
        self.values
            .get(&key)
            .and_then(Value::max_u64)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or(GgufError::MissingKey { key })
    }

    fn optional_u32(&self, arch: &str, suffix: &str) -> Option<u32> {
        self.arch_key(arch, suffix).and_then(Value::max_u64).and_then(|v| u32::try_from(v).ok())
    }

    /// Derives [`ModelMeta`] from the metadata and the tensor table.
    pub fn model_meta(&self) -> Result<ModelMeta, GgufError> {
        let architecture = self
            .values
            .get("general.architecture")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or(GgufError::MissingKey { key: "general.architecture".into() })?;
        let arch = architecture.as_str();

        let block_count = self.required_u32(arch, "block_count")?;
        if u64::from(block_count) > MAX_BLOCKS {
            return Err(GgufError::Invalid {
                offset: 0,
                what: format!("metadata key `{arch}.block_count`"),
                detail: format!("{block_count} blocks is more than any real model has ({MAX_BLOCKS})"),
            });
        }
        let head_count = self.required_u32(arch, "attention.head_count")?;
        // The GGUF specification says a missing head_count_kv means no grouped-query attention.
        let head_count_kv = self.optional_u32(arch, "attention.head_count_kv").unwrap_or(head_count);
        let embedding_length = self.required_u32(arch, "embedding_length")?;
        let context_length = self.required_u32(arch, "context_length")?;

        let mut layer_bytes = vec![0u64; block_count as usize];
        let (mut weights, mut params, mut other) = (0u64, 0u64, 0u64);
        let (mut output, mut output_norm, mut token_embd) = (None::<u64>, 0u64, 0u64);
        let mut embd_rows = None;
        let mut bytes_by_type: BTreeMap<u32, u64> = BTreeMap::new();
        for t in &self.tensors {
            weights = weights.saturating_add(t.bytes);
            params = params.saturating_add(t.elements);
            if let Some(i) = block_index(&t.name).filter(|&i| i < u64::from(block_count)) {
                if let Some(slot) = usize::try_from(i).ok().and_then(|i| layer_bytes.get_mut(i)) {
                    *slot = slot.saturating_add(t.bytes);
                }
                let by_type = bytes_by_type.entry(t.ggml_type).or_default();
                *by_type = by_type.saturating_add(t.bytes);
                continue;
            }
            match t.name.as_str() {
                "output.weight" => output = Some(output.unwrap_or(0).saturating_add(t.bytes)),
                "output.bias" => output = Some(output.unwrap_or(0).saturating_add(t.bytes)),
                "output_norm.weight" | "output_norm.bias" => output_norm = output_norm.saturating_add(t.bytes),
                "token_embd.weight" => {
                    token_embd = token_embd.saturating_add(t.bytes);
                    embd_rows = t.dims.get(1).copied();
                }
                _ => other = other.saturating_add(t.bytes),
            }
        }
        let output_tied = output.is_none();
        let output_bytes = output_norm.saturating_add(output.unwrap_or(token_embd));

        let vocab_size = self
            .optional_u32(arch, "vocab_size")
            .or_else(|| match self.values.get("tokenizer.ggml.tokens") {
                Some(Value::Array { len, .. }) => u32::try_from(*len).ok(),
                _ => None,
            })
            .or_else(|| embd_rows.and_then(|r| u32::try_from(r).ok()));

        let file_type = self
            .values
            .get("general.file_type")
            .and_then(Value::as_u64)
            .and_then(|v| u32::try_from(v).ok())
            // Bit 10 marks a file type llama.cpp guessed from the tensors; the name is the same.
            .map(|v| v & !1024);
        let quantization = match file_type.and_then(file_type_name) {
            Some(name) => name.to_string(),
            None => bytes_by_type
                .iter()
                .max_by_key(|(_, b)| **b)
                .and_then(|(t, _)| ggml_type(*t))
                .map_or_else(|| "unknown".to_string(), |t| t.name.to_string()),
        };

        Ok(ModelMeta {
            source: MetaSource::Gguf(None),
            architecture: architecture.clone(),
            name: self.values.get("general.name").and_then(Value::as_str).map(str::to_string),
            block_count,
            head_count,
            head_count_kv,
            embedding_length,
            key_length: self.optional_u32(arch, "attention.key_length"),
            value_length: self.optional_u32(arch, "attention.value_length"),
            feed_forward_length: self.optional_u32(arch, "feed_forward_length"),
            context_length,
            sliding_window: self.optional_u32(arch, "attention.sliding_window").filter(|w| *w > 0),
            vocab_size,
            file_type,
            quantization,
            parameter_count: params,
            weights_bytes: weights,
            layer_bytes,
            output_bytes,
            token_embd_bytes: token_embd,
            other_bytes: other,
            output_tied,
            file_bytes: None,
            chat_template: Some(match self.values.get("tokenizer.chat_template") {
                Some(Value::Str(t)) => !t.trim().is_empty(),
                Some(Value::LongStr(n)) => *n > 0,
                _ => false,
            }),
        })
    }
}

/// The block index of a `blk.N.` tensor name.
fn block_index(name: &str) -> Option<u64> {
    let rest = name.strip_prefix("blk.")?;
    let (n, _) = rest.split_once('.')?;
    n.parse().ok()
}
