//! Mutation fuzzing with counts for GGUF headers, the Reader's one hostile binary input: small
//! llama-shaped files built here and the head of the real demo model, mutated, parsed with the
//! file length they claim. Prints `FUZZ class=gguf-header …`; `bench/fuzz.sh` runs 10,000.

use testkit::mutate::{cases, run};

fn string(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u64).to_le_bytes());
    b.extend_from_slice(s.as_bytes());
}

fn kv_u32(b: &mut Vec<u8>, key: &str, v: u32) {
    string(b, key);
    b.extend_from_slice(&4u32.to_le_bytes());
    b.extend_from_slice(&v.to_le_bytes());
}

fn kv_str(b: &mut Vec<u8>, key: &str, v: &str) {
    string(b, key);
    b.extend_from_slice(&8u32.to_le_bytes());
    string(b, v);
}

/// A llama-shaped GGUF v3 header with `layers` blocks of Q4_0 tensors, and its claimed length.
fn llama_like(layers: u32, embd: u64) -> (Vec<u8>, u64) {
    let mut tensors: Vec<(String, Vec<u64>)> = vec![("token_embd.weight".into(), vec![embd, 32000])];
    for i in 0..layers {
        for t in ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_up", "ffn_down", "ffn_gate"] {
            tensors.push((format!("blk.{i}.{t}.weight"), vec![embd, embd]));
        }
    }
    tensors.push(("output.weight".into(), vec![embd, 32000]));
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    b.extend_from_slice(&8u64.to_le_bytes());
    kv_str(&mut b, "general.architecture", "llama");
    kv_str(&mut b, "general.name", "fuzz");
    kv_u32(&mut b, "llama.block_count", layers);
    kv_u32(&mut b, "llama.context_length", 4096);
    kv_u32(&mut b, "llama.embedding_length", embd as u32);
    kv_u32(&mut b, "llama.attention.head_count", 32);
    kv_u32(&mut b, "llama.attention.head_count_kv", 8);
    kv_u32(&mut b, "general.file_type", 2);
    let mut offset = 0u64;
    for (name, dims) in &tensors {
        string(&mut b, name);
        b.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in dims {
            b.extend_from_slice(&d.to_le_bytes());
        }
        b.extend_from_slice(&2u32.to_le_bytes()); // Q4_0: 18 bytes per 32 values
        b.extend_from_slice(&offset.to_le_bytes());
        offset += dims.iter().product::<u64>() / 32 * 18;
        offset = offset.div_ceil(32) * 32;
    }
    let len = (b.len() as u64).div_ceil(32) * 32 + offset;
    (b, len)
}

#[test]
fn fuzz_gguf_headers() {
    let (small, small_len) = llama_like(2, 256);
    let (wide, wide_len) = llama_like(4, 4096);
    // The head of the real demo model: its key/value section, cut where a mutation may land.
    let mut real = std::fs::read(testkit::demo_model()).expect("the demo model");
    let real_len = real.len() as u64;
    real.truncate(256 << 10);
    let samples = vec![small, wide, real];
    let lens = [small_len, wide_len, real_len];
    assert!(threadcycle_reader::gguf::parse_from(&samples[0][..], lens[0]).is_ok(), "the built sample must parse");
    let t = run("gguf-header", &samples, cases(300), |input| {
        // Claim each sample's own length, or the input's, or a huge one.
        let claimed = match input.len() % 3 {
            0 => lens[input.len() % lens.len()],
            1 => input.len() as u64,
            _ => u64::MAX / 2,
        };
        threadcycle_reader::gguf::parse_from(input, claimed).is_ok()
    });
    t.report();
}
