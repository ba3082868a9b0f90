//! Getting an engine up for one attempt — a llama-server host process, or a container (Ollama or
//! llama-server) created through the Docker API — and taking it down again.
//!
//! A failed container is kept until Debug has looked at it (its state and logs are evidence);
//! every container carries labels naming the cycle and the model so a crashed run's leftovers
//! are found and removed.

use crate::settings::Settings;
use host::docker::{ContainerSpec, DockerError, DockerRuntime};
use host::engine::{EngineError, GenRequest, Generation};
use host::engine_log::engine_memory;
use host::launch::{self as build, ContainerBase, LlamaServerArgs};
use host::ollama::OllamaClient;
use host::openai::OpenAiClient;
use host::process::{
    EngineProcess, ProcessError, find_llama_server, find_ollama, free_port, llama_server_version, offloaded_layers,
};
use protocol::CycleId;
use protocol::events::Step;
use protocol::launch::{Launch, shell_word};
use protocol::plan::{EngineKind, GpuRequest, Plan, PromptSpec, Runtime, expand_path};
use protocol::results::{EngineMemory, Evidence, FailureClass, is_host_device};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A failure as the Writer saw it.
#[derive(Debug, Clone)]
pub struct Failure {
    /// What kind it looks like.
    pub class: FailureClass,
    /// In words.
    pub message: String,
    /// What the Writer already holds.
    pub evidence: Evidence,
    /// Where Debug can look: `process:<pid>` or `container:<id>`.
    pub target: Option<String>,
}

impl Failure {
    fn new(class: FailureClass, message: impl Into<String>) -> Self {
        Failure { class, message: message.into(), evidence: Evidence::default(), target: None }
    }
}

/// The client for the deployed engine.
pub enum Api {
    /// llama-server's OpenAI-compatible API.
    OpenAi(OpenAiClient),
    /// Ollama's API.
    Ollama(OllamaClient),
}

/// Where the engine runs.
pub enum Place {
    /// A host process.
    Process(EngineProcess),
    /// A container.
    Container {
        /// The engine.
        docker: DockerRuntime,
        /// Container id.
        id: String,
    },
    /// An engine already running (the endpoint runtime): never started or stopped here.
    Endpoint {
        /// Its URL.
        url: String,
        /// Its process on this machine, when found (sampled while measuring).
        pid: Option<u32>,
        /// Why its process is not sampled, when it is not.
        note: Option<String>,
    },
}

/// A deployed, answering engine.
pub struct Deployed {
    /// Its API.
    pub api: Api,
    /// Where it runs.
    pub place: Place,
    /// Engine start → answering, ms (a pull not included). For llama-server this is the model's
    /// load; Ollama loads on the first request (the warm-up's `load_duration`).
    pub load_ms: f64,
    /// Time the pull took, ms; `None` when the model was already in the store.
    pub pull_ms: Option<f64>,
    /// Engine version.
    pub engine_version: Option<String>,
    /// What the engine calls the model.
    pub model_ref: String,
    /// Quantisation the engine reports.
    pub quantization: Option<String>,
    /// Model digest the engine reports.
    pub digest: Option<String>,
    /// The command line(s) as run, for the deployment guide (`launch`'s, plus the pull).
    pub deployment: Vec<String>,
    /// Exactly how the engine was started (the Writer adds the request options).
    pub launch: Launch,
    /// Keep the container after measuring.
    pub keep: bool,
    /// The decode tokens/s memory bandwidth allows for this model on this host, when predicted
    /// (sizes each request's time budget; set by the Writer after deploying).
    pub decode_ceiling: Option<f64>,
    /// Docker's `oom` events for the container, read from its start to its teardown.
    oom_watch: Option<host::docker::OomWatch>,
    /// Whether `teardown` ran.
    torn_down: bool,
}

impl Drop for Deployed {
    /// An attempt abandoned midway (NATS trouble, shutdown) must not leave its container: a host
    /// process stops through its own Drop; a container is removed in the background.
    fn drop(&mut self) {
        if self.torn_down || self.keep {
            return;
        }
        if let (Place::Container { docker, id }, Ok(rt)) = (&self.place, tokio::runtime::Handle::try_current()) {
            let (docker, id) = (docker.clone(), id.clone());
            rt.spawn(async move {
                let _ = docker.remove(&id).await;
            });
        }
    }
}

/// How long a deployment waits for a Docker engine that does not answer (dockerd restarting).
const DOCKER_PATIENCE: Duration = Duration::from_secs(60);

/// Labels every container of ours carries (the Docker adapter adds `threadcycle.managed`).
pub fn labels(cycle: &CycleId, model: &str, host: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("threadcycle.cycle".into(), cycle.to_string()),
        ("threadcycle.model".into(), model.to_string()),
        ("threadcycle.host".into(), host.to_string()),
    ])
}

/// Removes the containers this host's Writer left (after a crash, or at shutdown). Only
/// containers of cycles this NATS cluster knows (`is_ours`) are touched: another threadcycle on
/// the same Docker engine — a second `up` with its own private NATS — keeps its containers.
pub async fn remove_leftovers(host: &str, is_ours: impl AsyncFn(&str) -> bool) -> u32 {
    let Ok(d) = DockerRuntime::connect().await else { return 0 };
    let Ok(found) = d.list_labeled(&[("threadcycle.host", host)]).await else { return 0 };
    let mut removed = 0;
    for (id, labels) in found {
        let Some(cycle) = labels.get("threadcycle.cycle") else { continue };
        if is_ours(cycle).await && d.remove(&id).await.is_ok() {
            removed += 1;
        }
    }
    removed
}

fn env_lookup(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

fn gib_to_bytes(g: f64) -> u64 {
    (g * (1u64 << 30) as f64) as u64
}

/// One generation request for prompt `prompt` (its text `text`, nonce included) with the
/// attempt's settings. Ollama also gets the model's load-time settings in `options`
/// (`num_ctx`, `num_gpu`, `num_thread`: `host::launch::ollama_options`), so the plan's GPU
/// layers and threads, and a remedy's fewer GPU layers, reach the engine.
pub fn gen_request(
    plan: &Plan,
    s: &Settings,
    engine: EngineKind,
    model_ref: &str,
    prompt: &PromptSpec,
    text: String,
    ceiling_tps: Option<f64>,
) -> GenRequest {
    GenRequest {
        model: model_ref.to_string(),
        system: prompt.system.clone(),
        prompt: text,
        max_tokens: plan.max_tokens_for(prompt),
        temperature: plan.defaults.temperature,
        seed: plan.defaults.seed,
        context: Some(s.effective.context),
        options: match engine {
            EngineKind::Ollama => build::ollama_options(&s.effective),
            EngineKind::LlamaServer | EngineKind::OpenAi => BTreeMap::new(),
        },
        timeout: request_budget(&s.effective, plan.max_tokens_for(prompt), ceiling_tps),
        stall: Some(Duration::from_secs(s.effective.stall_timeout_s)),
    }
}

/// How long one request may take in all: the settings' `request_timeout_s` (the plan's, or a
/// remedy's), or, when the model's
/// predicted decode ceiling (`ceiling_tps`, tokens/s that memory bandwidth allows) says
/// `max_tokens` need longer, the load timeout (the first request may load the model) plus three
/// times the ceiling's decode time (real decode reaches a fraction of the roofline). A 70B model
/// partly in RAM decodes at 1.5–3 tokens/s: 2,048 tokens are 13–23 minutes, over a 900 s limit.
/// A stream that stops producing is caught sooner by the stall limit.
pub fn request_budget(s: &protocol::settings::Settings, max_tokens: u32, ceiling_tps: Option<f64>) -> Duration {
    let planned = s.request_timeout_s as f64;
    let needed = ceiling_tps
        .filter(|t| t.is_finite() && *t > 0.0)
        .map(|t| s.load_timeout_s as f64 + 3.0 * f64::from(max_tokens) / t)
        .unwrap_or(0.0);
    Duration::from_secs_f64(planned.max(needed).min(7.0 * 86_400.0))
}

fn model_file(s: &Settings) -> Result<PathBuf, Failure> {
    let raw = s.model.model_path.as_deref().unwrap_or_default();
    let p = expand_path(raw, &env_lookup)
        .map_err(|e| Failure::new(FailureClass::ModelNotFound, format!("model_path `{raw}`: {e}")))?;
    if !Path::new(&p).is_file() {
        return Err(Failure::new(
            FailureClass::ModelNotFound,
            format!("model file {p} does not exist (run `make model` for the demo model)"),
        ));
    }
    Ok(PathBuf::from(p))
}

/// Deploys the engine for one attempt and waits until it answers (and, for Ollama, has the model).
pub async fn deploy(
    cycle: &CycleId,
    host: &str,
    s: &Settings,
    run_dir: &Path,
    model_store: Option<&str>,
    on_step: &(dyn Fn(Step) + Sync),
) -> Result<Deployed, Failure> {
    match (s.model.runtime, s.model.engine) {
        (Runtime::Endpoint, _) => crate::endpoint::deploy(s, on_step).await,
        (Runtime::Process, EngineKind::LlamaServer) => deploy_process(cycle, s, run_dir, on_step).await,
        (Runtime::Docker, engine) => deploy_container(cycle, host, s, engine, model_store, on_step).await,
        (Runtime::Process, EngineKind::Ollama) => deploy_ollama_process(cycle, s, run_dir, model_store, on_step).await,
        (Runtime::Process, EngineKind::OpenAi) => {
            Err(Failure::new(FailureClass::Other, "`openai` is an endpoint's API; the plan check refuses it here"))
        }
    }
}

async fn deploy_process(
    cycle: &CycleId,
    s: &Settings,
    run_dir: &Path,
    on_step: &(dyn Fn(Step) + Sync),
) -> Result<Deployed, Failure> {
    let m = &s.model;
    let binary =
        find_llama_server(m.binary.as_deref()).map_err(|e| Failure::new(FailureClass::EngineExited, e.to_string()))?;
    let model_path = model_file(s)?;
    let port = match m.port {
        Some(p) => p,
        None => free_port().map_err(|e| Failure::new(FailureClass::Other, e.to_string()))?,
    };
    let model = model_path.display().to_string();
    let launch = build::llama_server_process(
        &binary.display().to_string(),
        &LlamaServerArgs { model: &model, host: "127.0.0.1", port, settings: &s.effective },
    );
    on_step(Step::EngineStarting { program: binary.display().to_string() });
    let mut process = EngineProcess::launch(&format!("{cycle}-{}", m.name), &launch, run_dir, port)
        .map_err(|e| Failure::new(FailureClass::EngineExited, e.to_string()))?;
    let target = Some(format!("process:{}", process.pid()));
    match process.wait_healthy(Duration::from_secs(s.effective.load_timeout_s)).await {
        Ok(took) => Ok(Deployed {
            api: Api::OpenAi(OpenAiClient::new(&process.base_url())),
            place: Place::Process(process),
            load_ms: took.as_secs_f64() * 1000.0,
            pull_ms: None,
            engine_version: llama_server_version(&binary),
            model_ref: model,
            quantization: None,
            digest: None,
            deployment: vec![launch.command_line()],
            launch,
            keep: false,
            decode_ceiling: None,
            oom_watch: None,
            torn_down: false,
        }),
        Err(e) => {
            let (class, evidence) = match &e {
                ProcessError::Exited { status, log_tail } => (
                    FailureClass::EngineExited,
                    Evidence { exit_status: Some(status.clone()), log_tail: log_tail.clone(), ..Default::default() },
                ),
                ProcessError::NotHealthy { log_tail, .. } => {
                    (FailureClass::EngineUnhealthy, Evidence { log_tail: log_tail.clone(), ..Default::default() })
                }
                _ => (FailureClass::Other, Evidence::default()),
            };
            process.stop();
            Err(Failure { class, message: e.to_string(), evidence, target })
        }
    }
}

/// The Ollama store the container mounts: the plan's `host.model_store`, else an existing store
/// on this host (`$OLLAMA_MODELS`, `~/.ollama/models`, the Linux service's), else a volume.
fn ollama_store(model_store: Option<&str>) -> build::StoreMount {
    let store = match model_store {
        Some(p) => expand_path(p, &env_lookup).ok(),
        None => build::existing_ollama_store(&env_lookup),
    };
    let home = store.as_deref().is_some_and(|p| build::is_ollama_home(Path::new(p)));
    build::ollama_store_mount(store.as_deref(), home)
}

/// The launch for a container: llama-server with its model folder mounted, or Ollama with its
/// store. Returns it with what the engine calls the model.
fn container_launch(
    s: &Settings,
    engine: EngineKind,
    name: &str,
    model_store: Option<&str>,
) -> Result<(Launch, String), Failure> {
    let m = &s.model;
    let base = ContainerBase {
        name,
        image: m.image.as_deref().unwrap_or_default(),
        memory_limit_bytes: s.effective.memory_limit_gb.map(gib_to_bytes),
        gpus: m.gpus.clone().unwrap_or(GpuRequest::None),
        // A Writer running in a container (docker-compose) puts the engine on its own network
        // and reaches it by name: the engine's port published on the host's loopback is out of
        // its reach.
        network: std::env::var("THREADCYCLE_ENGINE_NETWORK").ok().filter(|n| !n.trim().is_empty()),
        host_port: m.port,
    };
    Ok(match engine {
        EngineKind::LlamaServer | EngineKind::OpenAi => {
            let file = model_file(s)?;
            let dir = file.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
            let fname = file.file_name().map(|f| f.to_string_lossy().to_string()).unwrap_or_default();
            let in_container = format!("/models/{fname}");
            let args = LlamaServerArgs { model: &in_container, host: "0.0.0.0", port: 8080, settings: &s.effective };
            (build::llama_server_container(&base, &dir.display().to_string(), &args), file.display().to_string())
        }
        EngineKind::Ollama => (
            build::ollama_container(&base, &ollama_store(model_store), &s.effective),
            m.tag.clone().unwrap_or_default(),
        ),
    })
}

async fn deploy_container(
    cycle: &CycleId,
    host: &str,
    s: &Settings,
    engine: EngineKind,
    model_store: Option<&str>,
    on_step: &(dyn Fn(Step) + Sync),
) -> Result<Deployed, Failure> {
    let m = &s.model;
    // A Docker engine restarting (its socket gone for a few seconds) is waited for.
    let docker = DockerRuntime::connect_waiting(DOCKER_PATIENCE)
        .await
        .map_err(|e| Failure::new(FailureClass::Other, e.to_string()))?;
    let name = format!("tc-{cycle}-{}", m.name);
    let removed = docker
        .remove_labeled(&[("threadcycle.cycle", cycle.as_str()), ("threadcycle.model", m.name.as_str())])
        .await
        .unwrap_or(0);
    if removed > 0 {
        on_step(Step::LeftoversRemoved { containers: removed as u32 });
    }
    let (launch, model_ref) = container_launch(s, engine, &name, model_store)?;
    let Some(mut spec) = ContainerSpec::from_launch(&launch) else {
        return Err(Failure::new(FailureClass::Other, "internal: a container launch without container settings"));
    };
    spec.labels = labels(cycle, &m.name, host);
    ensure_image(&docker, &spec.image, on_step).await?;
    on_step(Step::ContainerCreating { name: name.clone(), image: spec.image.clone() });
    let started = tokio::time::Instant::now();
    let running = docker.run(&spec).await.map_err(|e| container_failure(&e, &name))?;
    // Read from the start: a runner killed while loading counts as much as one killed mid-answer.
    let oom_watch = docker.watch_oom(&running.id);
    let base = match &spec.network {
        Some(_) => format!("http://{}:{}", running.name, spec.container_port),
        None => format!("http://127.0.0.1:{}", running.host_port),
    };
    let target = Some(format!("container:{}", running.id));
    let timeout = Duration::from_secs(s.effective.load_timeout_s);
    let api = match engine {
        EngineKind::LlamaServer | EngineKind::OpenAi => Api::OpenAi(OpenAiClient::new(&base)),
        EngineKind::Ollama => Api::Ollama(OllamaClient::new(&base)),
    };
    if let Err(mut f) = wait_ready(&docker, &running.id, &name, &api, timeout).await {
        f.target = target;
        f.evidence.oom_events = oom_evidence(Some(&oom_watch));
        return Err(f);
    }
    let mut d = Deployed {
        api,
        place: Place::Container { docker: docker.clone(), id: running.id.clone() },
        load_ms: started.elapsed().as_secs_f64() * 1000.0,
        pull_ms: None,
        engine_version: None,
        model_ref,
        quantization: None,
        digest: None,
        deployment: vec![launch.command_line()],
        launch,
        keep: m.keep,
        decode_ceiling: None,
        oom_watch: Some(oom_watch),
        torn_down: false,
    };
    if let Api::Ollama(c) = &d.api {
        let c = c.clone();
        if let Err(e) = ollama_model(&c, &mut d, on_step).await {
            let mut f = engine_failure(&e, "pull");
            f.target = target;
            f.evidence.log_tail = docker.log_tail(&running.id, 20).await.unwrap_or_default();
            f.evidence.oom_events = oom_evidence(d.oom_watch.as_ref());
            return Err(f);
        }
    } else {
        d.engine_version =
            docker.log_tail(&running.id, 200).await.ok().and_then(|l| l.into_iter().find(|x| x.contains("build")));
    }
    Ok(d)
}

/// Ollama's side of a deployment: its version, the model pulled when absent (with progress
/// steps, the pull timed on its own), then its quantisation and digest.
async fn ollama_model(c: &OllamaClient, d: &mut Deployed, on_step: &(dyn Fn(Step) + Sync)) -> Result<(), EngineError> {
    let model_ref = d.model_ref.clone();
    d.engine_version = c.version().await.ok().map(|v| format!("ollama {v}"));
    let present = c.has_model(&model_ref).await.unwrap_or(false);
    if present {
        on_step(Step::ModelPresent { model: model_ref.clone() });
    } else {
        let pulling = |digest, completed, total, rate_bps| Step::Pulling {
            model: model_ref.clone(),
            digest,
            completed,
            total,
            rate_bps,
        };
        on_step(pulling(None, None, None, None));
        let began = std::time::Instant::now();
        let mut last = began;
        let mut finished_layers = 0u64;
        let mut layer: Option<(String, u64)> = None;
        let pulled = c
            .pull(&model_ref, |p| {
                let (Some(t), Some(done)) = (p.total, p.completed) else { return };
                let digest = p.digest.as_deref().map(|d| d.trim_start_matches("sha256:")).unwrap_or("");
                let short = digest[..digest.len().min(12)].to_string();
                // Bytes over the whole pull: layers finished before this one, plus this one's.
                match &layer {
                    Some((d, size)) if *d != short => {
                        finished_layers = finished_layers.saturating_add(*size);
                        layer = Some((short.clone(), t));
                    }
                    None => layer = Some((short.clone(), t)),
                    _ => {}
                }
                if last.elapsed() > Duration::from_secs(5) && t > 0 {
                    last = std::time::Instant::now();
                    let secs = began.elapsed().as_secs_f64();
                    let rate = (secs > 0.0).then(|| finished_layers.saturating_add(done) as f64 / secs);
                    on_step(pulling(Some(short), Some(done), Some(t), rate));
                }
            })
            .await?;
        d.pull_ms = Some(pulled.elapsed.as_secs_f64() * 1000.0);
        on_step(Step::Pulled {
            model: model_ref.clone(),
            bytes: pulled.total_bytes,
            seconds: pulled.elapsed.as_secs_f64(),
        });
    }
    if let Ok(show) = c.show(&model_ref).await {
        d.quantization = show.quantization_level.clone();
    }
    if let Ok(list) = c.list().await {
        d.digest = list.into_iter().find(|t| t.name == model_ref || t.model == model_ref).map(|t| t.digest);
    }
    Ok(())
}

/// `ollama serve` as a host process (users run it natively too): listening on a free loopback
/// port through `OLLAMA_HOST`, its models under the plan's `host.model_store` (as
/// `OLLAMA_MODELS`) unless the model's `env` names a store itself.
async fn deploy_ollama_process(
    cycle: &CycleId,
    s: &Settings,
    run_dir: &Path,
    model_store: Option<&str>,
    on_step: &(dyn Fn(Step) + Sync),
) -> Result<Deployed, Failure> {
    let m = &s.model;
    let binary =
        find_ollama(m.binary.as_deref()).map_err(|e| Failure::new(FailureClass::EngineExited, e.to_string()))?;
    let port = match m.port {
        Some(p) => p,
        None => free_port().map_err(|e| Failure::new(FailureClass::Other, e.to_string()))?,
    };
    let store = model_store.and_then(|p| expand_path(p, &env_lookup).ok());
    let launch = build::ollama_process(&binary.display().to_string(), &s.effective, port, store.as_deref());
    let model_ref = m.tag.clone().unwrap_or_default();
    let deployment = vec![launch.command_line(), format!("ollama pull {}", shell_word(&model_ref))];
    on_step(Step::EngineStarting { program: format!("{} serve on port {port}", binary.display()) });
    let started = tokio::time::Instant::now();
    let mut process = EngineProcess::launch(&format!("{cycle}-{}", m.name), &launch, run_dir, port)
        .map_err(|e| Failure::new(FailureClass::EngineExited, e.to_string()))?;
    let target = Some(format!("process:{}", process.pid()));
    let client = OllamaClient::new(&process.base_url());
    let timeout = Duration::from_secs(s.effective.load_timeout_s);
    loop {
        if let Some(status) = process.exit_status() {
            let log_tail = process.log_tail(20);
            return Err(Failure {
                class: FailureClass::EngineExited,
                message: format!("ollama serve exited ({status}); last log lines: {}", log_tail.join(" | ")),
                evidence: Evidence { exit_status: Some(status), log_tail, ..Default::default() },
                target,
            });
        }
        if client.healthy().await {
            break;
        }
        if started.elapsed() > timeout {
            let log_tail = process.log_tail(20);
            process.stop();
            return Err(Failure {
                class: FailureClass::EngineUnhealthy,
                message: format!(
                    "ollama serve did not answer within {timeout:?}; last log lines: {}",
                    log_tail.join(" | ")
                ),
                evidence: Evidence { log_tail, ..Default::default() },
                target,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut d = Deployed {
        api: Api::Ollama(client.clone()),
        place: Place::Process(process),
        load_ms: started.elapsed().as_secs_f64() * 1000.0,
        pull_ms: None,
        engine_version: None,
        model_ref,
        quantization: None,
        digest: None,
        deployment,
        launch,
        keep: false,
        decode_ceiling: None,
        oom_watch: None,
        torn_down: false,
    };
    if let Err(e) = ollama_model(&client, &mut d, on_step).await {
        let mut f = engine_failure(&e, "pull");
        f.target = target;
        if let Place::Process(p) = &d.place {
            f.evidence.log_tail = p.log_tail(20);
        }
        return Err(f);
    }
    Ok(d)
}

/// Polls the engine's health until it answers; a container that stops meanwhile fails at once
/// with its exit code, OOM flag and log tail.
async fn wait_ready(docker: &DockerRuntime, id: &str, name: &str, api: &Api, timeout: Duration) -> Result<(), Failure> {
    let start = tokio::time::Instant::now();
    loop {
        let ready = match api {
            Api::OpenAi(c) => matches!(c.health().await, Ok(host::openai::Health::Ready)),
            Api::Ollama(c) => c.healthy().await,
        };
        if ready {
            return Ok(());
        }
        if let Ok(st) = docker.state(id).await
            && !st.running
        {
            let log_tail = docker.log_tail(id, 20).await.unwrap_or_default();
            let e = DockerError::Exited {
                container: name.to_string(),
                exit_code: st.exit_code,
                oom_killed: st.oom_killed,
                memory_limit_bytes: st.memory_limit_bytes,
                log_tail,
            };
            return Err(container_failure(&e, name));
        }
        if start.elapsed() > timeout {
            let log_tail = docker.log_tail(id, 20).await.unwrap_or_default();
            return Err(container_failure(
                &DockerError::NotHealthy { container: name.to_string(), after: timeout, log_tail },
                name,
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Pull the engine's image when the host does not have it (what the Reader promised), with
/// progress steps at most every 5 s; a failure names the image and the `docker pull` command.
async fn ensure_image(docker: &DockerRuntime, image: &str, on_step: &(dyn Fn(Step) + Sync)) -> Result<(), Failure> {
    let present = docker.image_present(image).await.map_err(|e| Failure::new(FailureClass::Other, e.to_string()))?;
    if present {
        return Ok(());
    }
    let pulling =
        |completed, total, rate_bps| Step::ImagePulling { image: image.to_string(), completed, total, rate_bps };
    on_step(pulling(None, None, None));
    let mut last = std::time::Instant::now();
    let pulled = docker
        .pull_image(image, |done, total, rate| {
            if last.elapsed() > Duration::from_secs(5) {
                last = std::time::Instant::now();
                on_step(pulling(Some(done), Some(total), Some(rate)));
            }
        })
        .await
        .map_err(|e| Failure::new(FailureClass::Other, e.to_string()))?;
    on_step(Step::ImagePulled { image: image.to_string(), bytes: pulled.bytes, seconds: pulled.seconds });
    Ok(())
}

fn container_failure(e: &DockerError, name: &str) -> Failure {
    match e {
        DockerError::Exited { exit_code, oom_killed, log_tail, .. } => Failure {
            class: if *oom_killed { FailureClass::OomKilled } else { FailureClass::EngineExited },
            message: e.to_string(),
            evidence: Evidence {
                exit_status: exit_code.map(|c| format!("exit status {c}")),
                oom_killed: Some(*oom_killed),
                log_tail: log_tail.clone(),
                ..Default::default()
            },
            target: Some(format!("container:{name}")),
        },
        DockerError::NotHealthy { log_tail, .. } => Failure {
            class: FailureClass::EngineUnhealthy,
            message: e.to_string(),
            evidence: Evidence { log_tail: log_tail.clone(), ..Default::default() },
            target: Some(format!("container:{name}")),
        },
        DockerError::ImageMissing { .. } => Failure::new(FailureClass::Other, e.to_string()),
        other => Failure::new(FailureClass::Other, other.to_string()),
    }
}

/// Turns an engine error into a failure with the engine's own text as evidence.
pub fn engine_failure(e: &EngineError, what: &str) -> Failure {
    let text = e.engine_text().unwrap_or_default().to_lowercase();
    let class = if text.contains("file does not exist") || text.contains("not found") {
        FailureClass::ModelNotFound
    } else if text.contains("context size") || text.contains("exceeds the context") {
        FailureClass::ContextOverflow
    } else {
        FailureClass::RequestFailed
    };
    Failure {
        class,
        message: format!("{what}: {e}"),
        evidence: Evidence { engine_error: e.engine_text().map(str::to_string), ..Default::default() },
        target: None,
    }
}

impl Deployed {
    /// An engine that was found running, not started: no pull, no load, nothing to tear down.
    pub fn found(api: Api, place: Place, model_ref: String, launch: Launch) -> Self {
        Deployed {
            api,
            place,
            load_ms: 0.0,
            pull_ms: None,
            engine_version: None,
            model_ref,
            quantization: None,
            digest: None,
            deployment: Vec::new(),
            launch,
            keep: false,
            decode_ceiling: None,
            oom_watch: None,
            torn_down: false,
        }
    }

    /// The step that ends the model's turn: the engine stopped (or its container kept), or an
    /// endpoint left running as it was found.
    pub fn finished_step(&self) -> Step {
        match &self.place {
            Place::Endpoint { url, .. } => Step::EndpointLeftRunning { url: url.clone() },
            _ => Step::EngineStopped { kept: self.keep },
        }
    }

    /// A generation request for this engine (see [`gen_request`]).
    pub fn request(&self, plan: &Plan, s: &Settings, prompt: &PromptSpec, text: String) -> GenRequest {
        let engine = match self.api {
            Api::OpenAi(_) => EngineKind::LlamaServer,
            Api::Ollama(_) => EngineKind::Ollama,
        };
        gen_request(plan, s, engine, &self.model_ref, prompt, text, self.decode_ceiling)
    }

    /// The launch as it ran, with the `options` object `req` is sent with (Ollama; llama-server
    /// takes none).
    pub fn launch_record(&self, req: &GenRequest) -> Launch {
        let mut launch = self.launch.clone();
        if let Api::Ollama(_) = self.api {
            launch.request_options = host::ollama::request_options(req);
        }
        launch
    }

    /// One streamed generation.
    pub async fn generate(&self, req: &GenRequest) -> Result<Generation, EngineError> {
        match &self.api {
            Api::OpenAi(c) => c.generate_stream(req).await,
            Api::Ollama(c) => c.generate_stream(req).await,
        }
    }

    /// What the telemetry sampler should watch.
    pub fn telemetry_target(&self) -> host::telemetry::EngineTarget {
        match &self.place {
            Place::Process(p) => host::telemetry::EngineTarget::Process { pid: p.pid() },
            Place::Container { docker, id } => {
                host::telemetry::EngineTarget::Container { docker: docker.clone(), id: id.clone() }
            }
            Place::Endpoint { pid: Some(pid), .. } => host::telemetry::EngineTarget::Process { pid: *pid },
            Place::Endpoint { pid: None, .. } => host::telemetry::EngineTarget::None,
        }
    }

    /// The engine as Debug should find it (`process:<pid>` / `container:<id>`).
    pub fn target(&self) -> String {
        match &self.place {
            Place::Process(p) => format!("process:{}", p.pid()),
            Place::Container { id, .. } => format!("container:{id}"),
            Place::Endpoint { url, .. } => format!("endpoint:{url}"),
        }
    }

    /// For a container: the Docker engine's error when the engine does not answer now
    /// (dockerd stopped or restarting: the container went down with it).
    pub async fn docker_unreachable(&self) -> Option<DockerError> {
        let Place::Container { docker, id } = &self.place else { return None };
        docker.state(id).await.err().filter(DockerError::engine_unreachable)
    }

    /// Evidence about the engine's state after a failed request.
    /// After a dropped connection: gives an engine that is going down up to `within` to finish
    /// exiting, so its exit is seen (a closed socket can arrive before the process is reapable).
    /// Returns early when the engine has exited; an engine still running costs the full wait.
    pub async fn settle_exit(&mut self, within: Duration) {
        let start = std::time::Instant::now();
        while start.elapsed() < within {
            let gone = match &mut self.place {
                Place::Process(p) => p.exit_status().is_some(),
                Place::Container { docker, id } => docker.state(id).await.map(|s| !s.running).unwrap_or(true),
                Place::Endpoint { .. } => return,
            };
            if gone {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn evidence(&mut self, engine_error: Option<String>) -> Evidence {
        match &mut self.place {
            Place::Process(p) => {
                Evidence { exit_status: p.exit_status(), log_tail: p.log_tail(20), engine_error, ..Default::default() }
            }
            Place::Container { docker, id } => {
                let st = docker.state(id).await.ok();
                let oom_kills = docker.oom_kills(id).await.ok().flatten();
                // The cgroup counted a kill: give Docker's event stream a moment to deliver it.
                if let Some(w) = self.oom_watch.as_ref().filter(|_| oom_kills.is_some_and(|k| k > 0)) {
                    for _ in 0..10 {
                        if !w.events().is_empty() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                Evidence {
                    exit_status: st
                        .as_ref()
                        .filter(|s| !s.running)
                        .and_then(|s| s.exit_code)
                        .map(|c| format!("exit status {c}")),
                    oom_killed: st.as_ref().map(|s| s.oom_killed),
                    oom_kills,
                    oom_events: oom_evidence(self.oom_watch.as_ref()),
                    log_tail: docker.log_tail(id, 20).await.unwrap_or_default(),
                    engine_error,
                    ..Default::default()
                }
            }
            Place::Endpoint { .. } => Evidence { engine_error, ..Default::default() },
        }
    }

    /// Peak resident memory of a host-process engine (containers: from telemetry).
    pub fn peak_ram(&self) -> Option<u64> {
        match &self.place {
            Place::Process(p) => host::system::process_memory(p.pid()).map(|(_, hwm)| hwm),
            // An endpoint's own peak covers its life before this measurement: telemetry's is used.
            Place::Container { .. } | Place::Endpoint { .. } => None,
        }
    }

    /// The engine's log as far as it can be read: a host process's log file, or a container's
    /// last lines (enough to hold a load; the account is read right after the load). An
    /// endpoint's engine keeps its log to itself.
    async fn engine_log(&self) -> Option<String> {
        match &self.place {
            Place::Process(p) => std::fs::read_to_string(p.log_path()).ok(),
            Place::Container { docker, id } => Some(docker.log_tail(id, 4000).await.ok()?.join("\n")),
            Place::Endpoint { .. } => None,
        }
    }

    /// The engine's own account of the memory it allocated for the model (weights, KV cache and
    /// compute buffers per device, offloaded layers), from its log. llama-server prints it at
    /// load (`-lv 4`); Ollama when the first request loads the model.
    pub async fn engine_memory(&self) -> Option<EngineMemory> {
        let log = self.engine_log().await?;
        let source = match (&self.api, &self.place) {
            (Api::Ollama(_), Place::Container { .. }) => "ollama container log",
            (Api::Ollama(_), _) => "ollama server log",
            (Api::OpenAi(_), Place::Container { .. }) => "llama-server container log (-lv 4)",
            (Api::OpenAi(_), _) => "llama-server log (-lv 4)",
        };
        engine_memory(&log, source)
    }

    /// The weights' quantisation: Ollama's `/api/show` (read at deployment), else llama.cpp's
    /// own `file type` line in the engine's log.
    pub async fn quantization(&self) -> Option<String> {
        match (&self.quantization, &self.api) {
            (Some(q), _) => Some(q.clone()),
            (None, Api::OpenAi(_)) => host::engine_log::file_type(&self.engine_log().await?),
            (None, Api::Ollama(_)) => None,
        }
    }

    /// The GPU/CPU split: the N/M layers the engine logged (`engine`, read after the load), or
    /// for Ollama without such a line, the `/api/ps` share, labelled as a share of bytes.
    pub async fn layers(&self, engine: Option<&EngineMemory>) -> Option<String> {
        if let Some((a, b)) = engine.and_then(|e| e.offloaded_layers) {
            return Some(format!("{a}/{b} layers on GPU"));
        }
        match (&self.api, &self.place) {
            (Api::Ollama(c), _) => {
                let ps = c.ps().await.ok()?;
                ps.into_iter().find(|p| p.name == self.model_ref || p.model == self.model_ref).map(|p| {
                    format!("{} (share of bytes from /api/ps; the engine logged no layer split)", p.processor())
                })
            }
            (Api::OpenAi(_), _) => {
                offloaded_layers(&self.engine_log().await?).map(|(a, b)| format!("{a}/{b} layers on GPU"))
            }
        }
    }

    /// Share of the weights in VRAM (0 to 1): the engine's own account (GPU weight buffers over
    /// all weight buffers) when it logged one, else the offloaded layers over all layers, else
    /// Ollama's `size_vram` over `size`.
    pub async fn gpu_share(&self, engine: Option<&EngineMemory>) -> Option<f64> {
        if let Some(e) = engine.filter(|e| e.weights_bytes() > 0) {
            let on_gpu: u64 = e.weights.iter().filter(|d| !is_host_device(&d.device)).map(|d| d.bytes).sum();
            return Some(on_gpu as f64 / e.weights_bytes() as f64);
        }
        let layers =
            |log: &str| offloaded_layers(log).filter(|(_, b)| *b > 0).map(|(a, b)| f64::from(a.min(b)) / f64::from(b));
        match (&self.api, &self.place) {
            (Api::Ollama(c), _) => {
                let ps = c.ps().await.ok()?;
                let p = ps.into_iter().find(|p| p.name == self.model_ref || p.model == self.model_ref)?;
                (p.size > 0).then(|| p.size_vram.min(p.size) as f64 / p.size as f64)
            }
            (Api::OpenAi(_), _) => layers(&self.engine_log().await?),
        }
    }

    /// VRAM the engine holds, from Ollama's `/api/ps` (`size_vram`).
    pub async fn vram(&self) -> Option<u64> {
        match &self.api {
            Api::Ollama(c) => c
                .ps()
                .await
                .ok()?
                .into_iter()
                .find(|p| p.name == self.model_ref || p.model == self.model_ref)
                .map(|p| p.size_vram),
            Api::OpenAi(_) => None,
        }
    }

    /// Stops the engine; a container is removed unless the plan keeps it.
    pub async fn teardown(&mut self) {
        self.torn_down = true;
        match &mut self.place {
            Place::Process(p) => p.stop(),
            Place::Container { docker, id } => {
                if !self.keep
                    && let Err(error) = docker.remove(id).await
                {
                    tracing::warn!(message = "Container not removed.", %error, %id);
                }
            }
            // Found running, left running: threadcycle never stops an endpoint's engine.
            Place::Endpoint { .. } => {}
        }
    }
}

/// Docker's `oom` events seen so far, in words (none when nothing watched).
fn oom_evidence(watch: Option<&host::docker::OomWatch>) -> Vec<String> {
    watch.map(|w| w.events().iter().map(host::docker::OomEvent::describe).collect()).unwrap_or_default()
}

/// Removes a container kept for Debug's inspection.
pub async fn remove_failed(target: Option<&str>) {
    if let Some(id) = target.and_then(|t| t.strip_prefix("container:"))
        && let Ok(d) = DockerRuntime::connect().await
    {
        let _ = d.remove(id).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::plan::Plan;
    use serde_json::json;
    use testkit::fake_http::{FakeServer, Route};

    fn ollama_plan() -> Plan {
        Plan::from_toml(
            "name='t'\n[defaults]\ncontext=8192\nseed=7\n[[models]]\nname='llama3-70b'\nengine='ollama'\nruntime='docker'\n\
             image='ollama/ollama:0.12.6'\ntag='llama3.1:70b'\nmemory_limit_gb=30\ngpus='all'\ngpu_layers=30\nthreads=8\n\
             env={OLLAMA_KV_CACHE_TYPE='q8_0'}\n[[prompts]]\nid='p'\ntext='x'\nmax_tokens=64\n",
        )
        .unwrap()
    }

    #[tokio::test]
    async fn plan_settings_and_remedies_reach_ollama_in_the_request_options() {
        let plan = ollama_plan();
        let mut s = Settings::planned(&plan, &plan.models[0]);
        let final_chunk = json!({"model": "llama3.1:70b", "message": {"role": "assistant", "content": "hi"}, "done": true,
            "done_reason": "stop", "total_duration": 900_000_000u64, "load_duration": 800_000_000u64, "eval_count": 1, "eval_duration": 1_000_000});
        let route = Route::ndjson("POST", "/api/chat", vec![(Duration::from_millis(1), final_chunk)]);
        let server = FakeServer::start(vec![route]).await.unwrap();
        let client = OllamaClient::new(&server.url());
        let req = gen_request(&plan, &s, EngineKind::Ollama, "llama3.1:70b", &plan.prompts[0], "x".into(), None);
        let g = client.generate_stream(&req).await.unwrap();
        assert_eq!(g.engine_load_ms, Some(800.0));
        // Debug's "fewer GPU layers" remedy.
        s.apply(&protocol::settings::Setting::GpuLayers(22)).unwrap();
        let req = gen_request(&plan, &s, EngineKind::Ollama, "llama3.1:70b", &plan.prompts[0], "x".into(), None);
        client.generate_stream(&req).await.unwrap();
        let bodies: Vec<_> = server.requests_to("POST", "/api/chat").iter().map(|r| r.json().unwrap()).collect();
        let options = |n: u32| json!({"num_ctx": 8192, "num_gpu": n, "num_thread": 8, "num_predict": 64, "seed": 7, "temperature": 0.0});
        assert_eq!(bodies[0]["options"], options(30));
        assert_eq!(bodies[1]["options"], options(22));
        // The record of what was sent is the client's own view of the request.
        assert_eq!(serde_json::to_value(host::ollama::request_options(&req)).unwrap(), options(22));
        // Once the answer streams, silence is judged by the plan's stall limit.
        assert_eq!(req.stall, Some(Duration::from_secs(120)));
        // llama-server takes these on its command line instead.
        let req = gen_request(&plan, &s, EngineKind::LlamaServer, "m", &plan.prompts[0], "x".into(), None);
        assert!(req.options.is_empty());
    }

    #[test]
    fn a_slow_model_gets_the_time_its_decode_ceiling_needs() {
        let plan = ollama_plan();
        let mut s = Settings::planned(&plan, &plan.models[0]).effective;
        s.load_timeout_s = 300;
        let planned = Duration::from_secs(plan.defaults.request_timeout_s);
        assert_eq!(request_budget(&s, 2048, None), planned);
        assert_eq!(request_budget(&s, 2048, Some(100.0)), planned);
        // A 70B model partly in RAM at a 2 tokens/s ceiling: 2,048 tokens take 1,024 s at the
        // ceiling; the budget is the load timeout plus three times that.
        assert_eq!(request_budget(&s, 2048, Some(2.0)), Duration::from_secs(300 + 3 * 1024));
        // A remedy that raises the request limit raises the budget.
        s.apply(&protocol::settings::Setting::RequestTimeoutS(7200)).unwrap();
        assert_eq!(request_budget(&s, 2048, Some(2.0)), Duration::from_secs(7200));
    }

    #[test]
    fn the_ollama_container_reuses_an_existing_store_and_runs_as_recorded() {
        let plan = ollama_plan();
        let s = Settings::planned(&plan, &plan.models[0]);
        let (launch, model_ref) =
            container_launch(&s, EngineKind::Ollama, "tc-c-llama3-70b", Some("/srv/ollama/models")).unwrap();
        assert_eq!(model_ref, "llama3.1:70b");
        assert_eq!(
            launch.command_line(),
            "docker run -d --name tc-c-llama3-70b --memory=30720m --memory-swap=30720m --gpus=all -p 127.0.0.1::11434 \
             -v /srv/ollama/models:/root/.ollama/models -e OLLAMA_KEEP_ALIVE=-1 -e OLLAMA_KV_CACHE_TYPE=q8_0 \
             -e OLLAMA_MODELS=/root/.ollama/models -e OLLAMA_NUM_PARALLEL=1 ollama/ollama:0.12.6"
        );
        // The container the Docker adapter creates is made from that very record.
        let spec = ContainerSpec::from_launch(&launch).unwrap();
        assert_eq!(spec.binds, vec!["/srv/ollama/models:/root/.ollama/models".to_string()]);
        assert_eq!(spec.env.get("OLLAMA_MODELS").map(String::as_str), Some("/root/.ollama/models"));
        assert_eq!(spec.memory_limit_bytes, Some(30 << 30));
        assert_eq!((spec.image.as_str(), spec.container_port, spec.cmd.len()), ("ollama/ollama:0.12.6", 11434, 0));
    }

    /// Ollama (the fake engine as `ollama serve`) loads the model on the first request and logs
    /// its memory account: the layer split shown is the N/M the engine logged, not `/api/ps`'s
    /// share of bytes ("100% CPU").
    #[tokio::test]
    async fn ollamas_layer_split_and_memory_come_from_its_own_log() {
        let dir = std::env::temp_dir().join(format!("tc-deploy-ollama-{}", std::process::id()));
        let store = dir.join("store");
        std::fs::create_dir_all(&store).unwrap();
        let toml = format!(
            "name='t'\n[defaults]\ncontext=1024\n[host]\nmodel_store='{}'\n[[models]]\nname='m'\nengine='ollama'\n\
             runtime='process'\nbinary='{}'\ntag='fake-a:1b'\nenv={{TC_FAKE_TPS='500', TC_FAKE_MODEL_BYTES='10000000', \
             TC_FAKE_PULL_BPS='100000000', TC_FAKE_LOAD_MS='10'}}\n[[prompts]]\nid='p'\ntext='x'\n",
            store.display(),
            testkit::fake_engine().display(),
        );
        let plan = Plan::from_toml(&toml).unwrap();
        let s = Settings::planned(&plan, &plan.models[0]);
        let cycle = CycleId::generate(chrono::Utc::now());
        let store_text = store.display().to_string();
        let mut d = deploy(&cycle, "local", &s, &dir, Some(store_text.as_str()), &|_| {}).await.unwrap();
        // Nothing is loaded yet: no account.
        assert_eq!(d.engine_memory().await, None);
        let req = d.request(&plan, &s, &plan.prompts[0], "Say hello.".into());
        d.generate(&GenRequest { max_tokens: 4, ..req }).await.unwrap();
        let e = d.engine_memory().await.expect("the engine's account after the load");
        assert_eq!(e.source, "ollama server log");
        assert_eq!(e.offloaded_layers, Some((0, 19)));
        // `HumanBytes2` prints one decimal: 10,000,000 bytes are "9.5 MiB".
        assert_eq!(e.weights, vec![protocol::results::DeviceBytes { device: "CPU".into(), bytes: 9_961_472 }]);
        assert_eq!(e.kv_bytes(), 18 << 20);
        assert_eq!(d.layers(Some(&e)).await.as_deref(), Some("0/19 layers on GPU"));
        // Without the engine's line, `/api/ps`'s share is shown and says what it is.
        let fallback = d.layers(None).await.unwrap();
        assert!(fallback.starts_with("100% CPU (share of bytes from /api/ps"), "{fallback}");
        assert_eq!(d.gpu_share(Some(&e)).await, Some(0.0));
        d.teardown().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_llama_server_process_runs_exactly_the_recorded_command() {
        let dir = std::env::temp_dir().join(format!("tc-deploy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let model = dir.join("m.gguf");
        std::fs::write(&model, b"GGUF").unwrap();
        let toml = format!(
            "name='t'\n[defaults]\ncontext=1024\nparallel=2\n[[models]]\nname='m'\nengine='llama-server'\nruntime='process'\n\
             binary='{}'\nmodel_path='{}'\nthreads=3\ngpu_layers=0\nargs=['--seed-extra', 'a b']\nenv={{TC_FAKE_TPS='500'}}\n\
             [[prompts]]\nid='p'\ntext='x'\n",
            testkit::fake_engine().display(),
            model.display()
        );
        let plan = Plan::from_toml(&toml).unwrap();
        let s = Settings::planned(&plan, &plan.models[0]);
        let cycle = CycleId::generate(chrono::Utc::now());
        let mut d = deploy(&cycle, "local", &s, &dir, None, &|_| {}).await.unwrap();
        let Place::Process(p) = &d.place else { panic!("not a process") };
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", p.pid())).unwrap();
        let argv: Vec<String> =
            cmdline.split(|b| *b == 0).filter(|w| !w.is_empty()).map(|w| String::from_utf8_lossy(w).into()).collect();
        let mut recorded = vec![d.launch.program.clone()];
        recorded.extend(d.launch.args.iter().cloned());
        assert_eq!(argv, recorded);
        let environ = std::fs::read_to_string(format!("/proc/{}/environ", p.pid())).unwrap();
        assert!(environ.split('\0').any(|kv| kv == "TC_FAKE_TPS=500"));
        let port = p.base_url().rsplit(':').next().unwrap().to_string();
        assert_eq!(
            d.launch.args.join(" "),
            format!(
                "--model {} --host 127.0.0.1 --port {port} -c 2048 -np 2 --metrics --no-webui -lv 4 -t 3 -ngl 0 --seed-extra a b",
                model.display()
            )
        );
        // The line the guide prints is the record's, and so is the older `deployment` field.
        assert_eq!(d.deployment, vec![d.launch.command_line()]);
        assert!(d.launch.command_line().starts_with("TC_FAKE_TPS=500 "));
        assert!(d.launch.command_line().ends_with(" --seed-extra 'a b'"));
        d.teardown().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
