//! Tests of the GGUF reader: synthetic files built in memory, every truncation and corruption
//! the parser must refuse, and the demo model's real header.

use super::source::vt;
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
    let with = parse(&synthetic_builder().kv_str("tokenizer.chat_template", "{{ messages }}").build()).expect("valid");
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
