//! A model's figures from Ollama's `/api/show` instead of its file: the GGUF key/value map
//! (`model_info`) and the tensor table (`tensors`: name, ggml type name, shape) are put back into
//! a [`GgufHeader`], so the same derivation as for a file applies.
//!
//! What Ollama 0.12.6 sends (`reference/engine-source-facts.md` A4): `model_info` is the file's
//! key/value map without `general.name` and `tokenizer.chat_template`, with every array longer
//! than five elements emptied unless `verbose` (`o:server/routes.go:1131-1133,1164-1170`); the
//! tensor table comes with or without `verbose` (`:1135-1139`). An emptied array is left out
//! here: it says nothing about its length (the vocabulary then comes from `token_embd`'s shape).

use std::collections::BTreeMap;

use host::ollama::ShowInfo;
use serde_json::Value as Json;

use super::{GgufError, GgufHeader, MetaSource, ModelMeta, TensorInfo, Value, ggml_type};

/// GGUF value type ids used for arrays rebuilt from JSON (`GGUF_TYPE_INT64`, `GGUF_TYPE_STRING`).
const GGUF_INT64: u32 = 11;
const GGUF_STRING: u32 = 8;

/// The ggml type id whose name (as llama.cpp and Ollama print it) is `name`.
fn ggml_type_id(name: &str) -> Option<u32> {
    (0..64).find(|id| ggml_type(*id).is_some_and(|t| t.name.eq_ignore_ascii_case(name)))
}

fn value(v: &Json) -> Option<Value> {
    Some(match v {
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => Value::UInt(u),
            (_, Some(i), _) => Value::Int(i),
            (_, _, Some(f)) => Value::Float(f),
            _ => return None,
        },
        Json::String(s) => Value::Str(s.clone()),
        Json::Array(a) if a.is_empty() => return None,
        Json::Array(a) => {
            let ints: Option<Vec<i64>> = a.iter().map(Json::as_i64).collect();
            let elem_type = if ints.is_some() { GGUF_INT64 } else { GGUF_STRING };
            Value::Array { elem_type, len: a.len() as u64, ints }
        }
        Json::Null | Json::Object(_) => return None,
    })
}

/// The model's figures from an `/api/show` answer; `what` names it in errors (`codellama:7b at
/// http://…`).
pub fn meta_from_show(show: &ShowInfo, what: &str) -> Result<ModelMeta, GgufError> {
    let invalid = |detail: String| GgufError::ApiShow { what: what.to_string(), detail };
    if show.tensors.is_empty() {
        return Err(invalid("the answer lists no tensors, so the weights' size is unknown".into()));
    }
    let values: BTreeMap<String, Value> =
        show.model_info.iter().filter_map(|(k, v)| value(v).map(|v| (k.clone(), v))).collect();
    let mut tensors = Vec::with_capacity(show.tensors.len());
    for t in &show.tensors {
        let id = ggml_type_id(&t.ggml_type)
            .ok_or_else(|| invalid(format!("tensor `{}` has the unknown type `{}`", t.name, t.ggml_type)))?;
        let ty = ggml_type(id).ok_or_else(|| invalid(format!("no size for type `{}`", t.ggml_type)))?;
        let elements = t.shape.iter().try_fold(1u64, |a, d| a.checked_mul(*d));
        let Some(elements) = elements.filter(|e| ty.block_elements > 0 && e % ty.block_elements == 0) else {
            return Err(invalid(format!("tensor `{}` has a shape {:?} its type cannot hold", t.name, t.shape)));
        };
        let bytes = (elements / ty.block_elements)
            .checked_mul(ty.block_bytes)
            .ok_or_else(|| invalid(format!("tensor `{}` is too large", t.name)))?;
        tensors.push(TensorInfo {
            name: t.name.clone(),
            dims: t.shape.clone(),
            ggml_type: id,
            offset: 0,
            elements,
            bytes,
        });
    }
    let header = GgufHeader { version: 3, kv_count: values.len() as u64, values, tensors, data_offset: 0 };
    let mut meta = header.model_meta()?;
    meta.source = MetaSource::ApiShow;
    // Ollama drops `tokenizer.chat_template` from `model_info`; it applies its own TEMPLATE.
    meta.chat_template = None;
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use host::ollama::ShowTensor;
    use serde_json::json;

    fn tensor(name: &str, ty: &str, shape: &[u64]) -> ShowTensor {
        ShowTensor { name: name.into(), ggml_type: ty.into(), shape: shape.to_vec() }
    }

    /// A two-block llama in the shape Ollama 0.12.6 answers (arrays over five emptied).
    fn show() -> ShowInfo {
        let mut tensors = vec![
            tensor("token_embd.weight", "Q4_K", &[256, 1000]),
            tensor("output_norm.weight", "F32", &[256]),
            tensor("output.weight", "Q6_K", &[256, 1000]),
        ];
        for b in 0..2 {
            tensors.push(tensor(&format!("blk.{b}.attn_q.weight"), "Q4_K", &[256, 256]));
            tensors.push(tensor(&format!("blk.{b}.attn_norm.weight"), "F32", &[256]));
        }
        ShowInfo {
            model_info: serde_json::from_value(json!({
                "general.architecture": "llama", "general.file_type": 15, "general.parameter_count": 600_000u64,
                "llama.block_count": 2, "llama.context_length": 4096, "llama.embedding_length": 256,
                "llama.attention.head_count": 4, "llama.attention.head_count_kv": 2,
                "tokenizer.ggml.tokens": [], "tokenizer.ggml.merges": [],
                "llama.rope.freq_base": 500000.0,
            }))
            .unwrap(),
            tensors,
            ..Default::default()
        }
    }

    #[test]
    fn the_answer_gives_the_same_figures_as_a_header() {
        let m = meta_from_show(&show(), "m at http://127.0.0.1:11434").unwrap();
        assert_eq!(m.source, MetaSource::ApiShow);
        assert_eq!((m.architecture.as_str(), m.block_count, m.head_count, m.head_count_kv), ("llama", 2, 4, 2));
        assert_eq!((m.embedding_length, m.context_length), (256, 4096));
        assert_eq!(m.quantization, "Q4_K_M");
        // Emptied `tokenizer.ggml.tokens`: the vocabulary comes from token_embd's 1000 rows.
        assert_eq!(m.vocab_size, Some(1000));
        // Q4_K: 144 bytes per 256; Q6_K: 210 per 256; F32: 4 each.
        let embd = 1000 * 144;
        let output = 1000 * 210 + 256 * 4;
        let block = 256 * 144 + 256 * 4;
        assert_eq!(m.token_embd_bytes, embd);
        assert_eq!(m.output_bytes, output);
        assert_eq!(m.layer_bytes, vec![block, block]);
        assert_eq!(m.weights_bytes, embd + output + 2 * block);
        assert!(!m.output_tied);
    }

    #[test]
    fn an_answer_without_what_the_estimate_needs_is_named() {
        let mut s = show();
        s.tensors.clear();
        let e = meta_from_show(&s, "m at http://h:11434").unwrap_err().to_string();
        assert!(e.contains("m at http://h:11434") && e.contains("no tensors"), "{e}");
        let mut s = show();
        s.tensors[0].ggml_type = "Q9_Z".into();
        assert!(meta_from_show(&s, "m").unwrap_err().to_string().contains("unknown type `Q9_Z`"));
        let mut s = show();
        s.tensors[0].shape = vec![100, 3];
        assert!(meta_from_show(&s, "m").unwrap_err().to_string().contains("cannot hold"));
        let mut s = show();
        s.model_info.remove("llama.block_count");
        assert!(meta_from_show(&s, "m").unwrap_err().to_string().contains("llama.block_count"));
    }
}
