//! Reads what a GGUF file says about its model — header, key/value metadata and the tensor
//! table, never the tensor data — so the Reader can predict memory before anything is loaded.
//!
//! The file is outside input and may be hostile or truncated: every count and length is checked
//! against what the rest of the file could hold before anything is allocated or skipped, big
//! arrays (the tokenizer's vocabulary) are skipped without being stored, and every failure is a
//! [`GgufError`] that names what was being read and at which byte.

mod api_show;
mod ggml;
mod header;
mod meta;
mod source;

#[cfg(test)]
mod tests;

use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

pub use api_show::meta_from_show;
pub use ggml::{GgmlType, file_type_name, ggml_type};
pub use header::{GgufHeader, TensorInfo, Value, parse_header};

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
    /// Ollama's `/api/show` answer lacks what the estimate needs or holds what no file has.
    #[error("the /api/show answer for {what}: {detail}")]
    ApiShow {
        /// The model and where it was asked (`codellama:7b at http://…`).
        what: String,
        /// What is wrong.
        detail: String,
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
    /// Sliding-window attention width (`<arch>.attention.sliding_window`), when the model has one.
    pub sliding_window: Option<u32>,
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
