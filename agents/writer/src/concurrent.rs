//! The plan's concurrent phase: 1/2/4… requests in flight against one model, and several models
//! deployed at once — response-time degradation against the same model alone. The telemetry
//! sampler runs through the whole phase (GPU memory, temperature, throttling, energy), and while
//! the models run together each engine's GPU memory is read: NVML's per-process figure for its
//! pid beside the engine's own report.

use crate::deploy::{Deployed, deploy};
use crate::measure::with_nonce;
use crate::settings::Settings;
use futures::future::join_all;
use handoffs::{Bus, HandleError, wait_for_room};
use host::engine::GenRequest;
use host::gpu::Gpus;
use host::telemetry::{EngineTarget, Sampler, process_gpu_memory};
use protocol::events::{Event, EventBody, Step};
use protocol::messages::VerificationReport;
use protocol::plan::{ModelSpec, Runtime};
use protocol::results::{ConcurrentResult, EngineGpuMemory, LevelResult, TogetherResult};
use protocol::{CycleId, Role};
use std::path::Path;
use std::sync::Arc;

fn request(report: &VerificationReport, dep: &Deployed, s: &Settings) -> GenRequest {
    let plan = &report.plan;
    let p = &plan.prompts[0];
    let nonce = uuid::Uuid::now_v7().simple().to_string()[20..].to_string();
    dep.request(plan, s, p, with_nonce(&p.text, &nonce))
}

fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() { 0.0 } else { xs.iter().sum::<f64>() / xs.len() as f64 }
}

/// Runs `level` requests at once and summarises them, with the output tokens they produced.
async fn level(
    report: &VerificationReport,
    dep: &Deployed,
    s: &Settings,
    model: &str,
    level: u32,
) -> (LevelResult, u64) {
    let reqs: Vec<GenRequest> = (0..level).map(|_| request(report, dep, s)).collect();
    let start = tokio::time::Instant::now();
    let out = join_all(reqs.iter().map(|r| dep.generate(r))).await;
    let wall = start.elapsed().as_secs_f64();
    let ok: Vec<_> = out.iter().filter_map(|r| r.as_ref().ok()).collect();
    let e2e: Vec<f64> = ok.iter().map(|g| g.e2e.as_secs_f64() * 1000.0).collect();
    let ttft: Vec<f64> = ok.iter().map(|g| g.ttft.as_secs_f64() * 1000.0).collect();
    let tokens: Vec<u32> = ok.iter().map(|g| g.output_tokens.unwrap_or(g.chunk_times.len() as u32)).collect();
    let decode: Vec<f64> = ok
        .iter()
        .zip(&tokens)
        .filter_map(|(g, t)| {
            let d = (g.e2e - g.ttft).as_secs_f64();
            (*t > 1 && d > 0.0).then(|| f64::from(t - 1) / d)
        })
        .collect();
    let result = LevelResult {
        model: model.into(),
        level,
        requests: ok.len() as u32,
        failed: (out.len() - ok.len()) as u32,
        mean_e2e_ms: mean(&e2e),
        mean_ttft_ms: mean(&ttft),
        mean_decode_tps: (!decode.is_empty()).then(|| mean(&decode)),
        aggregate_tps: if wall > 0.0 { f64::from(tokens.iter().sum::<u32>()) / wall } else { 0.0 },
        degradation: None,
    };
    (result, tokens.iter().map(|t| u64::from(*t)).sum())
}

/// What the concurrency figures of an endpoint model mean: threadcycle did not set how many
/// requests the engine serves at once, so requests beyond its slots wait in its queue.
fn endpoint_note(m: &ModelSpec, max_level: u32) -> String {
    let url = m.url.as_deref().unwrap_or_default();
    let slots =
        if m.engine.speaks_ollama() { "OLLAMA_NUM_PARALLEL" } else { "the server's slots (llama-server `-np`)" };
    format!(
        "{}: measured as found at {url}; up to {max_level} requests were sent at once, but how many it serves in parallel          is its own setting ({slots}), not threadcycle's: requests beyond that wait in its queue",
        m.name
    )
}

/// One engine's GPU memory while the models run together: NVML's figure for its pid (measured)
/// beside the engine's own account (reported).
async fn engine_gpu_memory(name: &str, dep: &Deployed, gpus: &Arc<Gpus>) -> EngineGpuMemory {
    let pid = match dep.telemetry_target() {
        EngineTarget::Process { pid } => Some(pid),
        _ => None,
    };
    let nvml_bytes = match pid {
        Some(p) => {
            let g = gpus.clone();
            // NVML calls block: off the runtime's threads.
            tokio::task::spawn_blocking(move || process_gpu_memory(&g, p)).await.ok().flatten()
        }
        None => None,
    };
    let (engine_reported_bytes, engine_source) = match dep.vram().await {
        Some(b) => (Some(b), Some("Ollama /api/ps size_vram".to_string())),
        None => match dep.engine_memory().await.filter(|e| !e.is_empty()) {
            Some(e) => (Some(e.vram_bytes()), Some(format!("GPU buffers in the {}", e.source))),
            None => (None, None),
        },
    };
    EngineGpuMemory { model: name.into(), pid, nvml_bytes, engine_reported_bytes, engine_source }
}

/// One model's levels, stored in `tc_results` as soon as they are measured
/// (`<cycle>.concurrent.<j>`): a Writer restarted during the phase keeps them and measures only
/// the models still missing.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct KeptLevels {
    levels: Vec<LevelResult>,
    notes: Vec<String>,
}

/// Where the phase runs: the cycle, the host, the bus its progress and kept levels go to.
pub struct Where<'a> {
    /// The cycle.
    pub cycle: &'a CycleId,
    /// This Writer's host.
    pub host: &'a str,
    /// The Writer's bus.
    pub bus: &'a Bus,
    /// Where engines keep their logs.
    pub run_dir: &'a Path,
}

impl Where<'_> {
    async fn step(&self, step: Step) {
        let body = EventBody::Step { model: "concurrent".into(), step };
        self.bus.event_best_effort(Event::new(self.cycle.clone(), Role::Writer, body)).await;
    }
}

/// Runs the concurrent phase with the telemetry sampler running through it; what cannot be done
/// is noted, never faked.
pub async fn run(
    at: &Where<'_>,
    report: &VerificationReport,
    gpus: Arc<Gpus>,
) -> Result<ConcurrentResult, HandleError> {
    let plan = &report.plan;
    let Some(c) = &plan.concurrent else { return Ok(ConcurrentResult::default()) };
    // Every engine of the phase at once: NVML's process memory counts every process on the GPUs.
    let sampler = Sampler::start(EngineTarget::None, plan.defaults.sample_hz, gpus.clone());
    let mut tokens = 0;
    let out = phase(at, report, c, &gpus, &mut tokens).await;
    let (telemetry, _series) = sampler.finish(tokens).await;
    let mut out = out?;
    out.telemetry = Some(telemetry);
    Ok(out)
}

/// The levels against each model, then the models together.
async fn phase(
    at: &Where<'_>,
    report: &VerificationReport,
    c: &protocol::plan::ConcurrentPhase,
    gpus: &Arc<Gpus>,
    tokens: &mut u64,
) -> Result<ConcurrentResult, HandleError> {
    let (cycle, host, run_dir) = (at.cycle, at.host, at.run_dir);
    let plan = &report.plan;
    let mut out = ConcurrentResult::default();
    let mut kept = Vec::new();
    let models: Vec<ModelSpec> =
        if c.models.is_empty() { plan.models.iter().take(1).cloned().collect() } else { c.models.clone() };
    let mut levels: Vec<u32> = c.levels.clone();
    levels.push(1);
    levels.sort_unstable();
    levels.dedup();
    let max_level = levels.last().copied().unwrap_or(1);
    let quiet = |_: protocol::events::Step| {};
    for (j, m) in models.iter().enumerate() {
        let key = format!("{cycle}.concurrent.{j}");
        if let Some(k) = at.bus.results.get::<KeptLevels>(&key).await? {
            out.levels.extend(k.levels);
            out.notes.extend(k.notes);
            kept.push(m.name.clone());
            continue;
        }
        let mut this = KeptLevels::default();
        let mut s = Settings::planned(plan, m);
        if m.runtime == Runtime::Endpoint {
            // Its parallel slots are the running engine's own: measured as found.
            this.notes.push(endpoint_note(m, max_level));
        } else {
            s.effective.slots = max_level;
        }
        match deploy(cycle, host, &s, run_dir, plan.host.model_store.as_deref(), &quiet).await {
            Ok(mut dep) => {
                // Warm-up, excluded like in the main phase.
                let _ = dep.generate(&GenRequest { max_tokens: 8, ..request(report, &dep, &s) }).await;
                let mut alone = None;
                for l in &levels {
                    let (mut r, t) = level(report, &dep, &s, &m.name, *l).await;
                    *tokens += t;
                    if *l == 1 {
                        alone = (r.requests > 0).then_some(r.mean_e2e_ms);
                    }
                    r.degradation = alone.filter(|a| *a > 0.0 && r.requests > 0).map(|a| r.mean_e2e_ms / a);
                    at.step(Step::ConcurrentLevel {
                        model: m.name.clone(),
                        level: r.level,
                        requests: r.requests,
                        failed: r.failed,
                        mean_e2e_ms: r.mean_e2e_ms,
                        degradation: r.degradation,
                    })
                    .await;
                    this.levels.push(r);
                }
                dep.teardown().await;
            }
            Err(f) => {
                this.notes.push(format!("{}: could not be deployed for the concurrency levels: {}", m.name, f.message))
            }
        }
        wait_for_room("a model's concurrency levels", || at.bus.results.create(&key, &this)).await?;
        out.levels.extend(this.levels);
        out.notes.extend(this.notes);
    }
    if !kept.is_empty() {
        out.notes.push(format!(
            "the Writer restarted during this phase: the levels of {} were measured before and kept; the telemetry covers what ran after",
            kept.join(", ")
        ));
    }
    if models.len() < 2 {
        return Ok(out);
    }
    let mut deployed = Vec::new();
    for m in &models {
        let s = Settings::planned(plan, m);
        match deploy(cycle, host, &s, run_dir, plan.host.model_store.as_deref(), &quiet).await {
            Ok(d) => deployed.push((m.name.clone(), s, d)),
            Err(f) => out.notes.push(format!("{}: could not be deployed beside the others: {}", m.name, f.message)),
        }
    }
    if deployed.len() >= 2 {
        let reqs: Vec<GenRequest> = deployed.iter().map(|(_, s, d)| request(report, d, s)).collect();
        let results = join_all(deployed.iter().zip(&reqs).map(|((_, _, d), r)| d.generate(r))).await;
        // Still loaded: what each engine holds on the GPU beside the others.
        for (name, _, d) in &deployed {
            out.engines.push(engine_gpu_memory(name, d, gpus).await);
        }
        for ((name, _, _), r) in deployed.iter().zip(results) {
            let alone =
                out.levels.iter().find(|l| &l.model == name && l.level == 1 && l.requests > 0).map(|l| l.mean_e2e_ms);
            out.together.push(match r {
                Ok(g) => {
                    *tokens += u64::from(g.output_tokens.unwrap_or(g.chunk_times.len() as u32));
                    let e2e = g.e2e.as_secs_f64() * 1000.0;
                    TogetherResult {
                        model: name.clone(),
                        e2e_ms: e2e,
                        alone_e2e_ms: alone,
                        degradation: alone.map(|a| e2e / a),
                        error: None,
                    }
                }
                Err(e) => TogetherResult {
                    model: name.clone(),
                    e2e_ms: 0.0,
                    alone_e2e_ms: alone,
                    degradation: None,
                    error: Some(e.to_string()),
                },
            });
        }
    } else {
        out.notes.push("fewer than two concurrent models could be deployed: nothing ran together".into());
    }
    for (_, _, d) in &mut deployed {
        d.teardown().await;
    }
    Ok(out)
}
