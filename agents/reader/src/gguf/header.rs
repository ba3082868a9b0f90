//! The GGUF header: version, key/value metadata and the tensor table, parsed and checked
//! against the file's length.

use std::collections::BTreeMap;
use std::io::Read;

use super::source::Source;
use super::{GGUF_MAGIC, GgufError, MAX_KEPT_KEYS, MAX_KEY_LEN, MAX_TENSORS, MIN_KV_BYTES, MIN_TENSOR_INFO_BYTES};

/// One tensor as the tensor table describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions, innermost first.
    pub dims: Vec<u64>,
    /// ggml type id.
    pub ggml_type: u32,
    /// Offset of its data from the start of the data section.
    pub offset: u64,
    /// Elements.
    pub elements: u64,
    /// Bytes of data.
    pub bytes: u64,
}

/// The parsed header: kept metadata values and the tensor table.
#[derive(Debug, Clone)]
pub struct GgufHeader {
    /// GGUF version (2 or 3).
    pub version: u32,
    /// Key/value pairs the file declares (some may not be kept, see `values`).
    pub kv_count: u64,
    /// Kept metadata values by key (long strings and arrays are summarised).
    pub values: BTreeMap<String, Value>,
    /// The tensor table.
    pub tensors: Vec<TensorInfo>,
    /// Byte offset where tensor data begins.
    pub data_offset: u64,
}

/// A metadata value as kept by the parser.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Any unsigned integer type.
    UInt(u64),
    /// Any signed integer type.
    Int(i64),
    /// `f32` or `f64`.
    Float(f64),
    /// Boolean.
    Bool(bool),
    /// A string short enough to keep.
    Str(String),
    /// A string too long to keep: only its length.
    LongStr(u64),
    /// An array: element type id, length, and its integers when short and of an integer type.
    Array {
        /// GGUF value type id of the elements.
        elem_type: u32,
        /// Number of elements.
        len: u64,
        /// The elements, when they are integers and there are few enough.
        ints: Option<Vec<i64>>,
    },
}

impl Value {
    /// The value as a non-negative integer, when it is one.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::UInt(v) => Some(v),
            Value::Int(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a string, when it is a kept string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The largest of a per-layer integer array, or the integer itself.
    pub(super) fn max_u64(&self) -> Option<u64> {
        match self {
            Value::Array { ints: Some(v), .. } => v.iter().filter_map(|x| u64::try_from(*x).ok()).max(),
            other => other.as_u64(),
        }
    }
}

/// Parses the header, metadata and tensor table, and checks the tensors lie within the file.
pub fn parse_header(reader: impl Read, file_len: u64) -> Result<GgufHeader, GgufError> {
    let mut src = Source { inner: reader, pos: 0, len: file_len };

    let magic: [u8; 4] = src.array("the GGUF magic")?;
    if magic != GGUF_MAGIC {
        return Err(GgufError::BadMagic { found: magic });
    }
    let version = src.u32("the GGUF version")?;
    if version != 2 && version != 3 {
        let hint = if version.swap_bytes() == 2 || version.swap_bytes() == 3 {
            " (this file looks big-endian; only little-endian files are read)".to_string()
        } else if version == 1 {
            " (version 1 is the 2023 draft format; convert the model again)".to_string()
        } else {
            String::new()
        };
        return Err(GgufError::UnsupportedVersion { version, hint });
    }

    let at = src.pos;
    let tensor_count = src.u64("the tensor count")?;
    src.check_count(at, "the tensor count", tensor_count, MIN_TENSOR_INFO_BYTES)?;
    if tensor_count > MAX_TENSORS {
        return Err(GgufError::Invalid {
            offset: at,
            what: "the tensor count".into(),
            detail: format!("{tensor_count} tensors is more than any real model has ({MAX_TENSORS})"),
        });
    }
    let at = src.pos;
    let kv_count = src.u64("the metadata key/value count")?;
    src.check_count(at, "the metadata key/value count", kv_count, MIN_KV_BYTES)?;

    let mut values = BTreeMap::new();
    for i in 0..kv_count {
        let key_at = src.pos;
        let key = src.string(&format!("the key of metadata entry {i}"), MAX_KEY_LEN)?;
        let what = format!("the value type of key `{key}`");
        let type_at = src.pos;
        let value_type = src.u32(&what)?;
        let value = src.value(value_type, type_at, &key, 0)?;
        // Keys are remembered only up to a cap; a real file has a few dozen.
        if values.len() < MAX_KEPT_KEYS && values.insert(key.clone(), value).is_some() {
            return Err(GgufError::Invalid {
                offset: key_at,
                what: format!("metadata key `{key}`"),
                detail: "the key appears twice".into(),
            });
        }
    }

    let alignment = match values.get("general.alignment") {
        None => 32,
        Some(v) => match v.as_u64() {
            Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a,
            _ => {
                return Err(GgufError::Invalid {
                    offset: 0,
                    what: "metadata key `general.alignment`".into(),
                    detail: format!("{v:?} is not a power of two up to 1 MiB"),
                });
            }
        },
    };

    // The tensor table is bounded by the file size already (check_count above), so this
    // allocation is at most a small fraction of the file.
    let mut tensors = Vec::new();
    for i in 0..tensor_count {
        tensors.push(src.tensor_info(i)?);
    }

    let data_offset = src.pos.div_ceil(alignment).saturating_mul(alignment);
    let data_len = file_len.saturating_sub(data_offset);
    for t in &tensors {
        let end = t.offset.checked_add(t.bytes);
        if end.is_none_or(|end| end > data_len) {
            return Err(GgufError::PastEnd {
                offset: data_offset.saturating_add(t.offset),
                what: format!("the data of tensor `{}` ({} bytes)", t.name, t.bytes),
                value: t.bytes,
                needed: t.bytes,
                left: data_len.saturating_sub(t.offset),
            });
        }
    }

    Ok(GgufHeader { version, kv_count, values, tensors, data_offset })
}
