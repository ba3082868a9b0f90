//! Reads what a GGUF file says about its model — header, key/value metadata and the tensor
//! table, never the tensor data — so the Reader can predict memory before anything is loaded.
//!
//! The file is outside input and may be hostile or truncated: every count and length is checked
//! against what the rest of the file could hold before anything is allocated or skipped, big
//! arrays (the tokenizer's vocabulary) are skipped without being stored, and every failure is a
//! [`GgufError`] that names what was being read and at which byte.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

/// The four bytes every GGUF file starts with.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";

/// Longest key the GGUF specification allows.
const MAX_KEY_LEN: u64 = 65_535;
/// Longest string value kept in memory; longer ones (chat templates, licences) are skipped.
const MAX_KEPT_STRING: u64 = 4096;
/// Longest tensor name accepted (ggml itself allows 64; leave room for forks).
const MAX_TENSOR_NAME: u64 = 1024;
/// ggml tensors have at most four dimensions (`GGML_MAX_DIMS`).
const MAX_DIMS: u32 = 4;
/// Arrays of arrays are legal but no real model nests them; the cap keeps recursion shallow.
const MAX_ARRAY_DEPTH: u32 = 4;
/// Real models have a few thousand tensors at most (MoE experts are merged per layer); the cap
/// bounds the tensor table in memory to a few MiB whatever the file claims.
const MAX_TENSORS: u64 = 65_536;
/// No real model has anywhere near this many blocks; a bigger figure is corruption.
const MAX_BLOCKS: u64 = 4096;
/// Integer arrays up to this length are kept (per-layer head counts); longer ones only counted.
const MAX_KEPT_ARRAY: u64 = 4096;
/// Only so many keys are remembered, so a file of millions of tiny keys cannot exhaust memory.
const MAX_KEPT_KEYS: usize = 4096;
/// Smallest encoding of one key/value pair: key length, type, one-byte value.
const MIN_KV_BYTES: u64 = 8 + 4 + 1;
/// Smallest encoding of one tensor info: name length, dimension count, type, offset.
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 4 + 8;
/// The buffer for reading the header; metadata is read in small pieces.
const READ_BUFFER: usize = 64 * 1024;

/// Why a GGUF file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened or its size read.
    #[error("cannot open GGUF file {}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// A problem in a named file (wraps the others with the path).
    #[error("{}: {error}", path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        error: Box<GgufError>,
    },
    /// Reading failed for a reason other than the end of the data.
    #[error("I/O error at byte {offset} while reading {what}: {source}")]
    Io {
        /// Byte offset.
        offset: u64,
        /// What was being read.
        what: String,
        /// The operating system's error.
        source: io::Error,
    },
    /// The first four bytes are not `GGUF`.
    #[error("not a GGUF file: it starts with {found:02x?} instead of \"GGUF\" (47 47 55 46)")]
    BadMagic {
        /// The first bytes found.
        found: [u8; 4],
    },
    /// A GGUF version this parser does not read.
    #[error("GGUF version {version} is not supported: only versions 2 and 3 are{hint}")]
    UnsupportedVersion {
        /// The version field as read (little endian).
        version: u32,
        /// Extra explanation (e.g. the file looks big-endian).
        hint: String,
    },
    /// The data ended before the structure did.
    #[error("the file ends at byte {offset} while reading {what}: it is truncated or not a complete GGUF file")]
    Truncated {
        /// Where the data ended.
        offset: u64,
        /// What was being read.
        what: String,
    },
    /// A length or count asks for more bytes than the rest of the file holds.
    #[error("{what} at byte {offset} is {value}, needing {needed} bytes, but only {left} bytes remain in the file")]
    PastEnd {
        /// Where the length or count was read.
        offset: u64,
        /// What it counts.
        what: String,
        /// The value read.
        value: u64,
        /// Bytes it would need (saturated at `u64::MAX`).
        needed: u64,
        /// Bytes left in the file.
        left: u64,
    },
    /// A field holds a value that no valid file has.
    #[error("{what} at byte {offset} is invalid: {detail}")]
    Invalid {
        /// Where the field was read.
        offset: u64,
        /// Which field.
        what: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The metadata lacks a key needed to predict memory.
    #[error("GGUF metadata lacks `{key}` (or it is not a non-negative integer), which memory prediction needs")]
    MissingKey {
        /// The key.
        key: String,
    },
}

/// Where a [`ModelMeta`] came from; shown to the operator next to every prediction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaSource {
    /// Read from a GGUF file's header (path when known).
    Gguf(Option<PathBuf>),
    /// Ollama's `/api/show` `model_info`.
    ApiShow,
    /// threadcycle's built-in table: recalled figures, not measured.
    BuiltIn,
}

impl fmt::Display for MetaSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetaSource::Gguf(Some(p)) => write!(f, "GGUF header of {}", p.display()),
            MetaSource::Gguf(None) => f.write_str("GGUF header"),
            MetaSource::ApiShow => f.write_str("Ollama /api/show model_info"),
            MetaSource::BuiltIn => f.write_str("built-in table (recalled figures, not measured)"),
        }
    }
}

/// What memory prediction needs to know about a model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelMeta {
    /// Where these figures came from.
    pub source: MetaSource,
    /// `general.architecture`, e.g. `llama`, `gemma3`.
    pub architecture: String,
    /// `general.name`, when present.
    pub name: Option<String>,
    /// Transformer blocks (`<arch>.block_count`).
    pub block_count: u32,
    /// Attention heads (largest per-layer value when given per layer).
    pub head_count: u32,
    /// Key/value heads (largest per-layer value; equals `head_count` without GQA).
    pub head_count_kv: u32,
    /// Hidden size (`<arch>.embedding_length`).
    pub embedding_length: u32,
    /// Key head dimension, when the file gives it apart from embedding/heads.
    pub key_length: Option<u32>,
    /// Value head dimension, when the file gives it apart from embedding/heads.
    pub value_length: Option<u32>,
    /// Feed-forward size (largest per-layer value), when present.
    pub feed_forward_length: Option<u32>,
    /// Training context length (`<arch>.context_length`).
    pub context_length: u32,
    /// Vocabulary size, when it can be learned.
    pub vocab_size: Option<u32>,
    /// `general.file_type` as stored (the "guessed" flag removed).
    pub file_type: Option<u32>,
    /// Quantisation name, e.g. `Q4_K_M`.
    pub quantization: String,
    /// Parameters: the sum of tensor elements.
    pub parameter_count: u64,
    /// Bytes of all tensors.
    pub weights_bytes: u64,
    /// Bytes of each block's tensors (`blk.N.`), indexed by block.
    pub layer_bytes: Vec<u64>,
    /// Bytes of the output layer as Ollama counts it: `output_norm` + `output`, or `token_embd`
    /// when the output reuses the embeddings.
    pub output_bytes: u64,
    /// Bytes of `token_embd` (kept in host memory by llama.cpp even when layers are offloaded).
    pub token_embd_bytes: u64,
    /// Bytes of tensors that are neither blocks, output nor embeddings (rope factors, …).
    pub other_bytes: u64,
    /// Whether the output reuses `token_embd` (no `output` tensor).
    pub output_tied: bool,
    /// Size of the GGUF file, when read from one.
    pub file_bytes: Option<u64>,
    /// Whether the GGUF carries a chat template (`tokenizer.chat_template`, the prompt format
    /// the engine applies); None when the figures did not come from a GGUF header.
    pub chat_template: Option<bool>,
}

impl ModelMeta {
    /// Key head dimension: `key_length`, else embedding / heads.
    pub fn head_dim_k(&self) -> u32 {
        self.key_length.unwrap_or_else(|| self.embedding_length.checked_div(self.head_count).unwrap_or(0))
    }

    /// Value head dimension: `value_length`, else embedding / heads.
    pub fn head_dim_v(&self) -> u32 {
        self.value_length.unwrap_or_else(|| self.embedding_length.checked_div(self.head_count).unwrap_or(0))
    }
}

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

/// Reads a GGUF file's header and returns what memory prediction needs.
pub fn read_metadata(path: &Path) -> Result<ModelMeta, GgufError> {
    let open_err = |source| GgufError::Open { path: path.to_path_buf(), source };
    let file = File::open(path).map_err(open_err)?;
    let len = file.metadata().map_err(open_err)?.len();
    let reader = BufReader::with_capacity(READ_BUFFER, file);
    let mut meta =
        parse_from(reader, len).map_err(|e| GgufError::InFile { path: path.to_path_buf(), error: Box::new(e) })?;
    meta.source = MetaSource::Gguf(Some(path.to_path_buf()));
    Ok(meta)
}

/// Parses GGUF data from `reader`, which holds `file_len` bytes in all.
pub fn parse_from(reader: impl Read, file_len: u64) -> Result<ModelMeta, GgufError> {
    let header = parse_header(reader, file_len)?;
    let mut meta = header.model_meta()?;
    meta.file_bytes = Some(file_len);
    Ok(meta)
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
    fn max_u64(&self) -> Option<u64> {
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

/// Size facts of one ggml tensor type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GgmlType {
    /// Name as llama.cpp prints it.
    pub name: &'static str,
    /// Elements per block.
    pub block_elements: u64,
    /// Bytes per block.
    pub block_bytes: u64,
}

/// Size facts of ggml type `id`, from ggml's type traits; None for unknown or removed types.
pub fn ggml_type(id: u32) -> Option<GgmlType> {
    let (name, block_elements, block_bytes) = match id {
        0 => ("F32", 1, 4),
        1 => ("F16", 1, 2),
        2 => ("Q4_0", 32, 18),
        3 => ("Q4_1", 32, 20),
        6 => ("Q5_0", 32, 22),
        7 => ("Q5_1", 32, 24),
        8 => ("Q8_0", 32, 34),
        9 => ("Q8_1", 32, 36),
        10 => ("Q2_K", 256, 84),
        11 => ("Q3_K", 256, 110),
        12 => ("Q4_K", 256, 144),
        13 => ("Q5_K", 256, 176),
        14 => ("Q6_K", 256, 210),
        15 => ("Q8_K", 256, 292),
        16 => ("IQ2_XXS", 256, 66),
        17 => ("IQ2_XS", 256, 74),
        18 => ("IQ3_XXS", 256, 98),
        19 => ("IQ1_S", 256, 50),
        20 => ("IQ4_NL", 32, 18),
        21 => ("IQ3_S", 256, 110),
        22 => ("IQ2_S", 256, 82),
        23 => ("IQ4_XS", 256, 136),
        24 => ("I8", 1, 1),
        25 => ("I16", 1, 2),
        26 => ("I32", 1, 4),
        27 => ("I64", 1, 8),
        28 => ("F64", 1, 8),
        29 => ("IQ1_M", 256, 56),
        30 => ("BF16", 1, 2),
        34 => ("TQ1_0", 256, 54),
        35 => ("TQ2_0", 256, 66),
        39 => ("MXFP4", 32, 17),
        _ => return None,
    };
    Some(GgmlType { name, block_elements, block_bytes })
}

/// llama.cpp's name for `general.file_type` (`llama_ftype`), as Ollama shows it.
pub fn file_type_name(file_type: u32) -> Option<&'static str> {
    Some(match file_type {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        38 => "MXFP4_MOE",
        _ => return None,
    })
}

/// GGUF metadata value type ids.
mod vt {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;

    /// Bytes of one element of a fixed-size type.
    pub fn fixed_size(t: u32) -> Option<u64> {
        match t {
            U8 | I8 | BOOL => Some(1),
            U16 | I16 => Some(2),
            U32 | I32 | F32 => Some(4),
            U64 | I64 | F64 => Some(8),
            _ => None,
        }
    }
}

/// A reader that knows its position and how much of the file is left.
struct Source<R> {
    inner: R,
    pos: u64,
    len: u64,
}

impl<R: Read> Source<R> {
    fn left(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let mut buf = [0u8; N];
        self.fill(&mut buf, what)?;
        Ok(buf)
    }

    fn fill(&mut self, buf: &mut [u8], what: &str) -> Result<(), GgufError> {
        let n = buf.len() as u64;
        if n > self.left() {
            return Err(GgufError::Truncated { offset: self.len, what: what.to_string() });
        }
        match self.inner.read_exact(buf) {
            Ok(()) => {
                self.pos += n;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                Err(GgufError::Truncated { offset: self.pos, what: what.to_string() })
            }
            Err(source) => Err(GgufError::Io { offset: self.pos, what: what.to_string(), source }),
        }
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Fails unless `count` items of at least `min_each` bytes fit in the rest of the file.
    fn check_count(&self, at: u64, what: &str, count: u64, min_each: u64) -> Result<(), GgufError> {
        let needed = count.saturating_mul(min_each);
        if needed > self.left() {
            return Err(GgufError::PastEnd {
                offset: at,
                what: what.to_string(),
                value: count,
                needed,
                left: self.left(),
            });
        }
        Ok(())
    }

    fn skip(&mut self, n: u64, what: &str) -> Result<(), GgufError> {
        if n > self.left() {
            return Err(GgufError::Truncated { offset: self.len, what: what.to_string() });
        }
        let copied = io::copy(&mut (&mut self.inner).take(n), &mut io::sink()).map_err(|source| GgufError::Io {
            offset: self.pos,
            what: what.to_string(),
            source,
        })?;
        self.pos += copied;
        if copied < n {
            return Err(GgufError::Truncated { offset: self.pos, what: what.to_string() });
        }
        Ok(())
    }

    /// Reads a length-prefixed string of at most `max` bytes, which must fit in the file.
    fn string(&mut self, what: &str, max: u64) -> Result<String, GgufError> {
        match self.string_or_len(what, max, true)? {
            Ok(s) => Ok(s),
            // Unreachable in practice: `reject_long` turns long strings into errors.
            Err(len) => Err(GgufError::Invalid {
                offset: self.pos,
                what: what.to_string(),
                detail: format!("{len} bytes long"),
            }),
        }
    }

    /// Reads a string, or skips it and returns its length when it is longer than `max`.
    fn string_or_len(&mut self, what: &str, max: u64, reject_long: bool) -> Result<Result<String, u64>, GgufError> {
        let at = self.pos;
        let len = self.u64(&format!("the length of {what}"))?;
        if len > self.left() {
            return Err(GgufError::PastEnd {
                offset: at,
                what: format!("the length of {what}"),
                value: len,
                needed: len,
                left: self.left(),
            });
        }
        if len > max {
            if reject_long {
                return Err(GgufError::Invalid {
                    offset: at,
                    what: format!("the length of {what}"),
                    detail: format!("{len} bytes is longer than the {max} allowed"),
                });
            }
            self.skip(len, what)?;
            return Ok(Err(len));
        }
        // `len <= max` and `len <= left`: the allocation is small and backed by the file.
        let mut buf = vec![0u8; len as usize];
        self.fill(&mut buf, what)?;
        Ok(Ok(String::from_utf8_lossy(&buf).into_owned()))
    }

    fn scalar(&mut self, t: u32, what: &str) -> Result<Value, GgufError> {
        Ok(match t {
            vt::U8 => Value::UInt(u64::from(u8::from_le_bytes(self.array(what)?))),
            vt::I8 => Value::Int(i64::from(i8::from_le_bytes(self.array(what)?))),
            vt::U16 => Value::UInt(u64::from(u16::from_le_bytes(self.array(what)?))),
            vt::I16 => Value::Int(i64::from(i16::from_le_bytes(self.array(what)?))),
            vt::U32 => Value::UInt(u64::from(u32::from_le_bytes(self.array(what)?))),
            vt::I32 => Value::Int(i64::from(i32::from_le_bytes(self.array(what)?))),
            vt::F32 => Value::Float(f64::from(f32::from_le_bytes(self.array(what)?))),
            vt::BOOL => Value::Bool(u8::from_le_bytes(self.array(what)?) != 0),
            vt::U64 => Value::UInt(u64::from_le_bytes(self.array(what)?)),
            vt::I64 => Value::Int(i64::from_le_bytes(self.array(what)?)),
            vt::F64 => Value::Float(f64::from_le_bytes(self.array(what)?)),
            _ => {
                return Err(GgufError::Invalid {
                    offset: self.pos,
                    what: what.to_string(),
                    detail: format!("{t} is not a fixed-size value type"),
                });
            }
        })
    }

    fn value(&mut self, t: u32, type_at: u64, key: &str, depth: u32) -> Result<Value, GgufError> {
        let what = format!("the value of key `{key}`");
        match t {
            vt::STRING => Ok(match self.string_or_len(&what, MAX_KEPT_STRING, false)? {
                Ok(s) => Value::Str(s),
                Err(len) => Value::LongStr(len),
            }),
            vt::ARRAY => self.array_value(key, depth),
            t if vt::fixed_size(t).is_some() => self.scalar(t, &what),
            _ => Err(GgufError::Invalid {
                offset: type_at,
                what: format!("the value type of key `{key}`"),
                detail: format!("{t} is not a GGUF value type (0–12)"),
            }),
        }
    }

    fn array_value(&mut self, key: &str, depth: u32) -> Result<Value, GgufError> {
        let type_at = self.pos;
        let elem_type = self.u32(&format!("the element type of array `{key}`"))?;
        let len_at = self.pos;
        let what_len = format!("the length of array `{key}`");
        let len = self.u64(&what_len)?;
        if let Some(size) = vt::fixed_size(elem_type) {
            self.check_count(len_at, &what_len, len, size)?;
            let integer = !matches!(elem_type, vt::F32 | vt::F64 | vt::BOOL);
            if integer && len <= MAX_KEPT_ARRAY {
                let mut ints = Vec::with_capacity(len as usize);
                for _ in 0..len {
                    match self.scalar(elem_type, &format!("an element of array `{key}`"))? {
                        Value::UInt(v) => ints.push(i64::try_from(v).unwrap_or(i64::MAX)),
                        Value::Int(v) => ints.push(v),
                        _ => {}
                    }
                }
                return Ok(Value::Array { elem_type, len, ints: Some(ints) });
            }
            self.skip(len * size, &format!("the elements of array `{key}`"))?;
            return Ok(Value::Array { elem_type, len, ints: None });
        }
        match elem_type {
            vt::STRING => {
                // Each element is at least its 8-byte length; this bounds the loop by the file.
                self.check_count(len_at, &what_len, len, 8)?;
                for i in 0..len {
                    // Vocabulary entries are only skipped: their count is all the Reader needs.
                    let _skipped = self.string_or_len(&format!("element {i} of array `{key}`"), 0, false)?;
                }
            }
            vt::ARRAY => {
                if depth + 1 >= MAX_ARRAY_DEPTH {
                    return Err(GgufError::Invalid {
                        offset: type_at,
                        what: format!("array `{key}`"),
                        detail: format!("arrays nested more than {MAX_ARRAY_DEPTH} deep"),
                    });
                }
                self.check_count(len_at, &what_len, len, 12)?;
                for _ in 0..len {
                    self.array_value(key, depth + 1)?;
                }
            }
            _ => {
                return Err(GgufError::Invalid {
                    offset: type_at,
                    what: format!("the element type of array `{key}`"),
                    detail: format!("{elem_type} is not a GGUF value type (0–12)"),
                });
            }
        }
        Ok(Value::Array { elem_type, len, ints: None })
    }

    fn tensor_info(&mut self, index: u64) -> Result<TensorInfo, GgufError> {
        let name = self.string(&format!("the name of tensor {index}"), MAX_TENSOR_NAME)?;
        let dims_at = self.pos;
        let n_dims = self.u32(&format!("the dimension count of tensor `{name}`"))?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(GgufError::Invalid {
                offset: dims_at,
                what: format!("the dimension count of tensor `{name}`"),
                detail: format!("{n_dims} is not between 1 and {MAX_DIMS}"),
            });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            dims.push(self.u64(&format!("dimension {d} of tensor `{name}`"))?);
        }
        let type_at = self.pos;
        let ggml_type_id = self.u32(&format!("the type of tensor `{name}`"))?;
        let offset = self.u64(&format!("the data offset of tensor `{name}`"))?;

        let ty = ggml_type(ggml_type_id).ok_or_else(|| GgufError::Invalid {
            offset: type_at,
            what: format!("the type of tensor `{name}`"),
            detail: format!("{ggml_type_id} is not a ggml type this reader knows"),
        })?;
        let invalid = |detail: String| GgufError::Invalid {
            offset: dims_at,
            what: format!("the shape of tensor `{name}`"),
            detail,
        };
        let elements = dims
            .iter()
            .try_fold(1u64, |acc, d| acc.checked_mul(*d))
            .ok_or_else(|| invalid(format!("{dims:?} has more elements than fit in 64 bits")))?;
        let ne0 = dims.first().copied().unwrap_or(0);
        if ne0 % ty.block_elements != 0 {
            return Err(invalid(format!(
                "the first dimension {ne0} is not a multiple of the {}-element blocks of {}",
                ty.block_elements, ty.name
            )));
        }
        let rows = dims.iter().skip(1).try_fold(1u64, |acc, d| acc.checked_mul(*d));
        let bytes = rows
            .and_then(|r| (ne0 / ty.block_elements).checked_mul(ty.block_bytes)?.checked_mul(r))
            .ok_or_else(|| invalid(format!("{dims:?} of {} needs more bytes than fit in 64 bits", ty.name)))?;
        Ok(TensorInfo { name, dims, ggml_type: ggml_type_id, offset, elements, bytes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Builds small GGUF files in memory.
    #[derive(Default)]
    struct Builder {
        kvs: Vec<u8>,
        kv_count: u64,
        infos: Vec<u8>,
        tensor_count: u64,
        data: Vec<u8>,
    }

    fn put_str(buf: &mut Vec<u8>, s: &str) {
        buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
        buf.extend_from_slice(s.as_bytes());
    }

    impl Builder {
        fn kv_u32(mut self, key: &str, v: u32) -> Self {
            put_str(&mut self.kvs, key);
            self.kvs.extend_from_slice(&vt::U32.to_le_bytes());
            self.kvs.extend_from_slice(&v.to_le_bytes());
            self.kv_count += 1;
            self
        }

        fn kv_str(mut self, key: &str, v: &str) -> Self {
            put_str(&mut self.kvs, key);
            self.kvs.extend_from_slice(&vt::STRING.to_le_bytes());
            put_str(&mut self.kvs, v);
            self.kv_count += 1;
            self
        }

        fn kv_str_array(mut self, key: &str, items: &[&str]) -> Self {
            put_str(&mut self.kvs, key);
            self.kvs.extend_from_slice(&vt::ARRAY.to_le_bytes());
            self.kvs.extend_from_slice(&vt::STRING.to_le_bytes());
            self.kvs.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for s in items {
                put_str(&mut self.kvs, s);
            }
            self.kv_count += 1;
            self
        }

        fn kv_f32_array(mut self, key: &str, items: &[f32]) -> Self {
            put_str(&mut self.kvs, key);
            self.kvs.extend_from_slice(&vt::ARRAY.to_le_bytes());
            self.kvs.extend_from_slice(&vt::F32.to_le_bytes());
            self.kvs.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for x in items {
                self.kvs.extend_from_slice(&x.to_le_bytes());
            }
            self.kv_count += 1;
            self
        }

        /// Adds an F32 tensor (ggml type 0) with its data, aligned to 32 bytes.
        fn tensor(mut self, name: &str, dims: &[u64], ggml: u32, bytes: usize) -> Self {
            while !self.data.len().is_multiple_of(32) {
                self.data.push(0);
            }
            put_str(&mut self.infos, name);
            self.infos.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                self.infos.extend_from_slice(&d.to_le_bytes());
            }
            self.infos.extend_from_slice(&ggml.to_le_bytes());
            self.infos.extend_from_slice(&(self.data.len() as u64).to_le_bytes());
            self.data.extend(std::iter::repeat_n(0xAB, bytes));
            self.tensor_count += 1;
            self
        }

        fn build(&self) -> Vec<u8> {
            let mut f = Vec::new();
            f.extend_from_slice(b"GGUF");
            f.extend_from_slice(&3u32.to_le_bytes());
            f.extend_from_slice(&self.tensor_count.to_le_bytes());
            f.extend_from_slice(&self.kv_count.to_le_bytes());
            f.extend_from_slice(&self.kvs);
            f.extend_from_slice(&self.infos);
            while !f.len().is_multiple_of(32) {
                f.push(0);
            }
            f.extend_from_slice(&self.data);
            f
        }
    }

    /// A tiny two-block "llama" with every kind of tensor the meta derivation looks at.
    fn synthetic_builder() -> Builder {
        Builder::default()
            .kv_str("general.architecture", "llama")
            .kv_str("general.name", "tiny")
            .kv_u32("general.file_type", 15)
            .kv_u32("llama.block_count", 2)
            .kv_u32("llama.context_length", 2048)
            .kv_u32("llama.embedding_length", 64)
            .kv_u32("llama.attention.head_count", 4)
            .kv_u32("llama.attention.head_count_kv", 2)
            .kv_str_array("tokenizer.ggml.tokens", &["<s>", "</s>", "a", "b"])
            .kv_f32_array("tokenizer.ggml.scores", &[0.0, 0.0, -1.0, -2.0])
            .tensor("token_embd.weight", &[64, 4], 0, 64 * 4 * 4)
            .tensor("blk.0.attn_q.weight", &[256, 2], 12, 2 * 144)
            .tensor("blk.0.ffn_down.weight", &[32, 2], 8, 2 * 34)
            .tensor("blk.1.attn_q.weight", &[256, 2], 12, 2 * 144)
            .tensor("output_norm.weight", &[64], 0, 256)
            .tensor("output.weight", &[256, 4], 14, 4 * 210)
    }

    fn synthetic() -> Vec<u8> {
        synthetic_builder().build()
    }

    fn parse(bytes: &[u8]) -> Result<ModelMeta, GgufError> {
        parse_from(bytes, bytes.len() as u64)
    }

    #[test]
    fn the_chat_template_is_seen_or_missed() {
        let none = parse(&synthetic()).expect("valid");
        assert_eq!(none.chat_template, Some(false), "a base model's GGUF has no template");
        let with =
            parse(&synthetic_builder().kv_str("tokenizer.chat_template", "{{ messages }}").build()).expect("valid");
        assert_eq!(with.chat_template, Some(true));
        let empty = parse(&synthetic_builder().kv_str("tokenizer.chat_template", " ").build()).expect("valid");
        assert_eq!(empty.chat_template, Some(false), "an empty template is none");
    }

    #[test]
    fn synthetic_file_yields_its_figures() {
        let m = parse(&synthetic()).expect("valid synthetic file");
        assert_eq!(m.architecture, "llama");
        assert_eq!(m.name.as_deref(), Some("tiny"));
        assert_eq!((m.block_count, m.head_count, m.head_count_kv, m.embedding_length), (2, 4, 2, 64));
        assert_eq!(m.context_length, 2048);
        assert_eq!(m.vocab_size, Some(4));
        assert_eq!(m.quantization, "Q4_K_M");
        assert_eq!(m.layer_bytes, vec![2 * 144 + 2 * 34, 2 * 144]);
        assert_eq!(m.token_embd_bytes, 1024);
        assert_eq!(m.output_bytes, 256 + 840);
        assert!(!m.output_tied);
        assert_eq!(m.weights_bytes, 1024 + 288 + 68 + 288 + 256 + 840);
        assert_eq!(m.parameter_count, 256 + 512 + 64 + 512 + 64 + 1024);
        assert_eq!(m.head_dim_k(), 16);
    }

    #[test]
    fn every_truncation_of_a_valid_file_is_an_error() {
        let full = synthetic();
        let b = synthetic_builder();
        let tables_end = 24 + b.kvs.len() + b.infos.len();
        for cut in 0..full.len() {
            let honest = parse_from(&full[..cut], cut as u64);
            assert!(honest.is_err(), "a file cut at {cut} of {} bytes parsed", full.len());
            // A stream that ends before its claimed length: tensor data is never read, so only
            // cuts inside the header and tables can be noticed.
            if cut < tables_end {
                let lying = parse_from(&full[..cut], full.len() as u64);
                assert!(matches!(lying, Err(GgufError::Truncated { .. })), "a stream cut at {cut}: {lying:?}");
            }
        }
    }

    #[test]
    fn bad_magic_is_named() {
        let mut f = synthetic();
        f[..4].copy_from_slice(b"GGML");
        let e = parse(&f).expect_err("must be refused");
        assert!(matches!(e, GgufError::BadMagic { .. }), "{e}");
        assert!(e.to_string().contains("not a GGUF file"), "{e}");
    }

    #[test]
    fn unsupported_versions_are_refused() {
        for (v, hint) in [(1u32, "version 1"), (4, ""), (3u32.swap_bytes(), "big-endian")] {
            let mut f = synthetic();
            f[4..8].copy_from_slice(&v.to_le_bytes());
            let e = parse(&f).expect_err("must be refused");
            assert!(matches!(e, GgufError::UnsupportedVersion { version, .. } if version == v), "{e}");
            assert!(e.to_string().contains(hint), "{e}");
        }
    }

    #[test]
    fn absurd_tensor_count_is_refused_before_allocating() {
        let mut f = synthetic();
        f[8..16].copy_from_slice(&(1u64 << 60).to_le_bytes());
        let e = parse(&f).expect_err("must be refused");
        assert!(matches!(e, GgufError::PastEnd { offset: 8, value, .. } if value == 1 << 60), "{e}");
        assert!(e.to_string().contains("tensor count"), "{e}");
    }

    #[test]
    fn tensor_count_beyond_any_real_model_is_refused_even_when_the_file_is_big_enough() {
        let mut f = synthetic();
        f.resize(4 << 20, 0);
        f[8..16].copy_from_slice(&100_000u64.to_le_bytes());
        let e = parse(&f).expect_err("must be refused");
        assert!(matches!(e, GgufError::Invalid { offset: 8, .. }), "{e}");
    }

    #[test]
    fn absurd_kv_count_is_refused() {
        let mut f = synthetic();
        f[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        let e = parse(&f).expect_err("must be refused");
        assert!(matches!(e, GgufError::PastEnd { offset: 16, .. }), "{e}");
    }

    #[test]
    fn huge_string_length_is_refused() {
        let mut f = synthetic();
        // The first key's length sits right after the 24-byte header.
        f[24..32].copy_from_slice(&(1u64 << 40).to_le_bytes());
        let e = parse(&f).expect_err("must be refused");
        assert!(matches!(e, GgufError::PastEnd { offset: 24, value, .. } if value == 1 << 40), "{e}");
        assert!(e.to_string().contains("byte 24"), "{e}");
    }

    #[test]
    fn long_key_is_refused_even_when_the_file_holds_it() {
        let key = "k".repeat(70_000);
        let f = Builder::default().kv_u32(&key, 1).build();
        let e = parse(&f).expect_err("must be refused");
        assert!(matches!(e, GgufError::Invalid { offset: 24, .. }), "{e}");
    }

    #[test]
    fn long_string_values_are_skipped_not_kept() {
        let template = "x".repeat(100_000);
        let f = Builder::default()
            .kv_str("tokenizer.chat_template", &template)
            .kv_str("general.architecture", "llama")
            .kv_u32("llama.block_count", 1)
            .kv_u32("llama.context_length", 16)
            .kv_u32("llama.embedding_length", 8)
            .kv_u32("llama.attention.head_count", 1)
            .tensor("blk.0.w", &[8], 0, 32)
            .build();
        let h = parse_header(&f[..], f.len() as u64).expect("valid");
        assert_eq!(h.values.get("tokenizer.chat_template"), Some(&Value::LongStr(100_000)));
        let m = h.model_meta().expect("meta");
        assert_eq!(m.chat_template, Some(true), "a long template is still a template");
        assert_eq!(m.head_count_kv, 1, "missing head_count_kv defaults to head_count");
        assert!(m.output_tied);
        assert_eq!(m.quantization, "F32", "without file_type the dominant tensor type names it");
    }

    #[test]
    fn unknown_value_type_and_deep_nesting_are_refused() {
        let mut f = Builder::default().kv_u32("a", 1).build();
        // The value type of the only key follows its 8-byte length and 1-byte name.
        f[33..37].copy_from_slice(&13u32.to_le_bytes());
        let e = parse(&f).expect_err("must be refused");
        assert!(e.to_string().contains("not a GGUF value type"), "{e}");

        let mut b = Builder::default();
        put_str(&mut b.kvs, "nested");
        b.kvs.extend_from_slice(&vt::ARRAY.to_le_bytes());
        for _ in 0..10 {
            b.kvs.extend_from_slice(&vt::ARRAY.to_le_bytes());
            b.kvs.extend_from_slice(&1u64.to_le_bytes());
        }
        b.kvs.extend_from_slice(&[0u8; 64]);
        b.kv_count = 1;
        let e = parse(&b.build()).expect_err("must be refused");
        assert!(e.to_string().contains("nested"), "{e}");
    }

    #[test]
    fn tensor_shape_problems_are_refused() {
        let base = |dims: &[u64], ty: u32| {
            Builder::default().kv_str("general.architecture", "llama").tensor("blk.0.w", dims, ty, 64).build()
        };
        let e = parse(&base(&[u64::MAX, u64::MAX], 0)).expect_err("must be refused");
        assert!(e.to_string().contains("64 bits"), "{e}");
        let e = parse(&base(&[100], 12)).expect_err("must be refused");
        assert!(e.to_string().contains("not a multiple"), "{e}");
        let e = parse(&base(&[16], 4)).expect_err("must be refused");
        assert!(e.to_string().contains("not a ggml type"), "{e}");
        let e = parse(&base(&[1, 1, 1, 1, 1], 0)).expect_err("must be refused");
        assert!(e.to_string().contains("dimension count"), "{e}");
        // 4096 F32 elements need 16 KiB; the file holds 64 bytes of data.
        let e = parse(&base(&[4096], 0)).expect_err("must be refused");
        assert!(matches!(e, GgufError::PastEnd { .. }), "{e}");
    }

    #[test]
    fn missing_keys_are_named() {
        let f = Builder::default().kv_str("general.architecture", "llama").build();
        let e = parse(&f).expect_err("must be refused");
        assert!(e.to_string().contains("llama.block_count"), "{e}");
        let f = Builder::default().kv_u32("llama.block_count", 2).build();
        assert!(parse(&f).expect_err("must be refused").to_string().contains("general.architecture"));
    }

    #[test]
    fn absurd_block_count_is_refused() {
        let f = Builder::default()
            .kv_str("general.architecture", "llama")
            .kv_u32("llama.block_count", u32::MAX)
            .kv_u32("llama.context_length", 16)
            .kv_u32("llama.embedding_length", 8)
            .kv_u32("llama.attention.head_count", 1)
            .build();
        assert!(parse(&f).expect_err("must be refused").to_string().contains("more than any real model"));
    }

    #[test]
    fn missing_file_names_the_path() {
        let e = read_metadata(Path::new("/nonexistent/model.gguf")).expect_err("must be refused");
        assert!(e.to_string().contains("/nonexistent/model.gguf"), "{e}");
    }

    #[test]
    fn demo_model_header_is_read() {
        let path = testkit::demo_model();
        let m = read_metadata(&path).expect("the demo model's header parses");
        println!(
            "demo model: arch={} name={:?} blocks={} heads={} kv_heads={} embd={} key_len={:?} value_len={:?} \
             ctx={} vocab={:?} file_type={:?} quant={} params={} weights={} output={} token_embd={} other={} tied={} \
             layer0={} file={:?}",
            m.architecture,
            m.name,
            m.block_count,
            m.head_count,
            m.head_count_kv,
            m.embedding_length,
            m.key_length,
            m.value_length,
            m.context_length,
            m.vocab_size,
            m.file_type,
            m.quantization,
            m.parameter_count,
            m.weights_bytes,
            m.output_bytes,
            m.token_embd_bytes,
            m.other_bytes,
            m.output_tied,
            m.layer_bytes[0],
            m.file_bytes,
        );
        // Values read from the file once (Gemma 3 270M Q4_K_M) and pinned here.
        assert_eq!(m.architecture, "gemma3");
        assert_eq!(m.name.as_deref(), Some("Gemma 3 270m"));
        assert_eq!(m.block_count, 18);
        assert_eq!((m.head_count, m.head_count_kv), (4, 1));
        assert_eq!(m.embedding_length, 640);
        assert_eq!((m.key_length, m.value_length), (Some(256), Some(256)));
        assert_eq!(m.context_length, 32768);
        assert_eq!(m.vocab_size, Some(262_144));
        assert_eq!(m.file_type, Some(15));
        assert_eq!(m.quantization, "Q4_K_M");
        assert_eq!(m.parameter_count, 268_098_176);
        assert_eq!(m.weights_bytes, 246_587_904);
        assert!(m.output_tied, "Gemma ties its output to the embeddings");
        assert_eq!(m.token_embd_bytes, 178_257_920);
        assert!(m.weights_bytes <= m.file_bytes.unwrap_or(0));
        assert_eq!(m.layer_bytes.len(), m.block_count as usize);
        assert!(m.layer_bytes.iter().all(|b| *b > 0));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), claimed in 0u64..4096) {
            let _ = parse_from(&bytes[..], claimed);
            let _ = parse_from(&bytes[..], bytes.len() as u64);
        }

        #[test]
        fn random_bytes_after_a_valid_start_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut f = b"GGUF".to_vec();
            f.extend_from_slice(&3u32.to_le_bytes());
            f.extend_from_slice(&tail);
            let _ = parse(&f);
        }

        #[test]
        fn corrupting_one_byte_of_a_valid_file_never_panics(at in 0usize..1000, byte in any::<u8>()) {
            let mut f = synthetic();
            let i = at % f.len();
            f[i] = byte;
            let _ = parse(&f);
        }
    }
}
