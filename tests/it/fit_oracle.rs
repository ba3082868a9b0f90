//! The Reader's fit prediction held to the engine's own account: a real llama-server (CPU) loads
//! the demo model at several contexts, with and without memory mapping, and the buffers it logs
//! (model weights, KV cache, compute) are compared with what the Reader predicted for the same
//! plan. The engine is started from the Writer's own launch record (`-lv 4` included), and its
//! log is read with the parser the Writer uses.
//!
//! Each case prints one `FIT …` line; BENCHMARKS.md's prediction-error table is copied from them
//! (`cargo test --test it fit_oracle -- --nocapture`).

use super::support::*;
use host::launch::{LlamaServerArgs, llama_server_process};
use host::process::{EngineProcess, find_llama_server, free_port};
use protocol::results::{EngineMemory, FitVerdict, error_pct};
use std::time::Duration;

/// Largest error allowed on the weights, the KV cache, the compute buffers and the host total,
/// percent. With memory mapping the engine's weights include `CPU_REPACK`, a second copy of the
/// tensors it repacks for the CPU (12.66 MiB of 247.82 here), which the Reader does not predict.
const TOLERANCE_PCT: f64 = 10.0;

fn plan(context: u32, mmap: bool) -> protocol::plan::Plan {
    let args = if mmap { "" } else { "args = ['--load-mode', 'none']\n" };
    let text = format!(
        "name = 'fit-oracle'\n[defaults]\ncontext = {context}\nparallel = 1\n\
         [[models]]\nname = 'gemma3-270m'\nengine = 'llama-server'\nruntime = 'process'\nmodel_path = '{}'\n{args}\
         [[prompts]]\nid = 'p'\ntext = 't'\n",
        model().display()
    );
    protocol::plan::Plan::from_toml(&text).expect("valid plan")
}

/// The engine's account when it loads the plan's model as the Writer would start it.
fn engine_account(plan: &protocol::plan::Plan, run_dir: &std::path::Path) -> EngineMemory {
    let m = &plan.models[0];
    let settings = protocol::settings::Settings::planned(plan, m);
    let binary = find_llama_server(None).expect("llama-server on PATH");
    let port = free_port().expect("port");
    let path = m.model_path.clone().expect("model path");
    let launch = llama_server_process(
        &binary.display().to_string(),
        &LlamaServerArgs { model: &path, host: "127.0.0.1", port, settings: &settings },
    );
    assert!(launch.args.windows(2).any(|w| w == ["-lv", "4"]), "the Writer's launch asks for -lv 4: {launch:?}");
    let mut p = EngineProcess::launch("fit-oracle", &launch, run_dir, port).expect("start llama-server");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let healthy = rt.block_on(p.wait_healthy(Duration::from_secs(120)));
    let log = std::fs::read_to_string(p.log_path()).unwrap_or_default();
    p.stop();
    healthy.unwrap_or_else(|e| panic!("llama-server did not come up: {e}"));
    host::engine_log::engine_memory(&log, "llama-server log (-lv 4)")
        .unwrap_or_else(|| panic!("no memory account in the llama-server log:\n{log}"))
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

fn pct(x: Option<f64>) -> String {
    x.map_or("–".into(), |e| format!("{e:+.1}"))
}

#[test]
fn the_fit_prediction_matches_llama_servers_own_buffers() {
    require_parts();
    let _serial = serial();
    let run_dir = tempfile::tempdir().expect("tmp");
    let cpu_only =
        agent_reader::fit::HostCapacity { gpus_free_vram: vec![], ram_available: 64 << 30, container_limit: None };
    let mut failures = Vec::new();
    for context in [512u32, 2048, 8192] {
        for mmap in [true, false] {
            let plan = plan(context, mmap);
            let (verdicts, _) = agent_reader::agent::plan_verdicts(&plan, &cpu_only);
            let v: &FitVerdict = &verdicts[0];
            let e = engine_account(&plan, run_dir.path());
            // Every buffer is host memory on this CPU-only build, and no layer split is logged.
            assert_eq!(e.vram_bytes(), 0, "{e:?}");
            assert!(e.weights.iter().any(|d| d.device == if mmap { "CPU_Mapped" } else { "CPU" }), "{e:?}");
            let predicted = |x: Option<u64>| x.unwrap_or_else(|| panic!("the Reader predicted nothing: {v:?}"));
            let (pw, pk, pc) = (predicted(v.weights_bytes), predicted(v.kv_bytes), predicted(v.compute_bytes));
            // The Reader's RAM adds the engine's runtime overhead, which no buffer line reports.
            let pr = predicted(v.ram_bytes) - agent_reader::fit::CPU_ENGINE_OVERHEAD;
            let (ew, ek, ec, er) = (e.weights_bytes(), e.kv_bytes(), e.compute_bytes(), e.ram_bytes());
            let (w, k, c, r) = (error_pct(pw, ew), error_pct(pk, ek), error_pct(pc, ec), error_pct(pr, er));
            println!(
                "FIT model=gemma3-270m ctx={context} mmap={} predicted_weights={:.2}MiB engine_weights={:.2}MiB err={}% \
                 predicted_kv={:.2}MiB engine_kv={:.2}MiB err={}% predicted_compute={:.2}MiB engine_compute={:.2}MiB err={}% \
                 predicted_ram={:.2}MiB engine_ram={:.2}MiB err={}%",
                if mmap { "on" } else { "off" },
                mib(pw),
                mib(ew),
                pct(w),
                mib(pk),
                mib(ek),
                pct(k),
                mib(pc),
                mib(ec),
                pct(c),
                mib(pr),
                mib(er),
                pct(r),
            );
            for (what, err) in [("weights", w), ("kv", k), ("compute", c), ("ram", r)] {
                match err {
                    Some(e) if e.abs() <= TOLERANCE_PCT => {}
                    _ => failures.push(format!(
                        "ctx={context} mmap={mmap}: {what} off by {} % (limit {TOLERANCE_PCT} %)",
                        pct(err)
                    )),
                }
            }
        }
    }
    assert!(failures.is_empty(), "the prediction is off:\n{}", failures.join("\n"));
}
