//! The Writer's phase: for every model of the verification report, deploy → warm up → measure →
//! tear down; failures go to Debug and come back as remedies.
//!
//! Crash safety: each model's result is stored in the results bucket (create-if-absent) as soon
//! as it is final, so a redelivered report resumes after the last finished model; every package
//! the Writer publishes has an id derived from the report's id, so a repeat is recognised.

use crate::analysis::analyse;
use crate::measure::{run_result, summarise, with_nonce};
use crate::settings::Settings;
use handoffs::{Bus, BusError, ConsumeStats, HandleError, Handled, Handler, consume};
use host::engine::{EngineError, GenRequest, Generation};
use host::openai::OpenAiClient;
use host::process::{EngineProcess, ProcessError, ProcessSpec, find_llama_server, llama_server_version, offloaded_layers};
use protocol::events::{Event, EventBody, Phase};
use protocol::ids::derive_id;
use protocol::messages::{BenchmarkResults, Escalation, VerificationReport};
use protocol::operator::CycleRecord;
use protocol::plan::{EngineKind, ModelSpec, Plan, Runtime, expand_path};
use protocol::results::{
    Attempt, Decision, EscalationRecord, Evidence, FailureClass, Fit, Manifest, ModelResult, ModelStatus, RemedyAction,
    RunResult,
};
use protocol::{CycleId, Envelope, Payload, Role};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use uuid::Uuid;

/// Where the Writer keeps engine pid and log files.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Runtime directory for engine processes.
    pub run_dir: PathBuf,
}

/// Runs the Writer until `shutdown` turns true.
pub async fn run(bus: Bus, cfg: WriterConfig, shutdown: watch::Receiver<bool>, stats: Arc<ConsumeStats>) -> Result<(), BusError> {
    let reaped = host::process::reap_stale(&cfg.run_dir);
    if reaped > 0 {
        tracing::warn!(message = "Stopped engines left by an earlier Writer.", count = reaped);
    }
    let writer = Writer { bus: bus.clone(), cfg };
    consume(&bus, shutdown, stats, &writer).await
}

struct Writer {
    bus: Bus,
    cfg: WriterConfig,
}

/// Why an attempt at a model did not produce results.
enum AttemptError {
    /// The cycle was canceled.
    Canceled,
    /// The attempt failed; Debug should look at it.
    Failed(Failure),
    /// NATS trouble: retry the whole package later.
    Bus(BusError),
}

/// A failure as the Writer saw it.
struct Failure {
    class: FailureClass,
    message: String,
    evidence: Evidence,
    target: Option<String>,
}

fn retry(e: BusError) -> HandleError {
    HandleError::Retry { reason: e.to_string(), after: Duration::from_secs(2) }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// An engine that is deployed and answering.
struct Deployed {
    client: OpenAiClient,
    process: EngineProcess,
    load_ms: f64,
    engine_version: Option<String>,
}

impl Deployed {
    fn evidence(&mut self, engine_error: Option<String>) -> Evidence {
        Evidence {
            exit_status: self.process.exit_status(),
            oom_killed: None,
            log_tail: self.process.log_tail(20),
            engine_error,
            ..Default::default()
        }
    }

    fn peak_ram(&self) -> Option<u64> {
        host::system::process_memory(self.process.pid()).map(|(_, hwm)| hwm)
    }

    fn layers(&self) -> Option<String> {
        let log = std::fs::read_to_string(self.process.log_path()).ok()?;
        offloaded_layers(&log).map(|(a, b)| format!("{a}/{b}"))
    }

    async fn generate(&self, req: &GenRequest) -> Result<Generation, EngineError> {
        self.client.generate_stream(req).await
    }
}

impl Handler for Writer {
    async fn handle(&self, env: Envelope) -> Handled {
        let Envelope { id, cycle, payload, .. } = env;
        match payload {
            Payload::VerificationReport(report) => self.run_cycle(id, &cycle, *report).await,
            other => Err(HandleError::Reject(format!("the writer does not take `{}` packages", other.kind()))),
        }
    }
}

impl Writer {
    async fn event(&self, cycle: &CycleId, body: EventBody) {
        self.bus.event_best_effort(Event::new(cycle.clone(), Role::Writer, body)).await;
    }

    async fn canceled(&self, cycle: &CycleId) -> Result<bool, BusError> {
        let rec: Option<CycleRecord> = self.bus.cycles.get(cycle.as_str()).await?;
        Ok(rec.is_some_and(|r| r.state.is_final()))
    }

    async fn run_cycle(&self, pkg: Uuid, cycle: &CycleId, report: VerificationReport) -> Handled {
        if self.canceled(cycle).await.map_err(retry)? {
            tracing::info!(message = "Cycle already final; report ignored.", %cycle);
            return Ok(());
        }
        self.event(cycle, EventBody::PhaseStarted { phase: Phase::Benchmarking }).await;
        let mut aborted: Option<String> = None;
        let mut results = Vec::new();
        for (i, m) in report.plan.models.iter().enumerate() {
            let key = format!("{cycle}.{i}");
            if let Some(done) = self.bus.results.get::<ModelResult>(&key).await.map_err(retry)? {
                if let ModelStatus::Skipped { reason } = &done.status
                    && reason.starts_with("cycle aborted") {
                        aborted.get_or_insert_with(|| reason.clone());
                    }
                results.push(done);
                continue;
            }
            let result = match &aborted {
                Some(reason) => skipped(i, m, &report, reason.clone()),
                None => match self.model(pkg, cycle, &report, i, m, &mut aborted).await? {
                    Some(r) => r,
                    None => return Ok(()),
                },
            };
            if !self.bus.results.create(&key, &result).await.map_err(retry)? {
                tracing::warn!(message = "A result for this model was already stored; keeping the first.", %key);
            }
            let outcome = match &result.status {
                ModelStatus::Measured => "measured".to_string(),
                ModelStatus::Failed { reason } => format!("failed: {reason}"),
                ModelStatus::Skipped { reason } => format!("skipped: {reason}"),
            };
            self.event(cycle, EventBody::ModelFinished { model: m.name.clone(), outcome }).await;
            let stored = self.bus.results.get::<ModelResult>(&key).await.map_err(retry)?.unwrap_or(result);
            results.push(stored);
        }
        let escalations = results.iter().flat_map(|r| r.attempts.iter().filter_map(|a| a.escalation.clone())).collect();
        let out = Envelope {
            id: derive_id(pkg, "benchmark-results", 0),
            ..Envelope::new(
                cycle.clone(),
                Role::Writer,
                Role::Documentation,
                Some(pkg),
                Payload::BenchmarkResults(Box::new(BenchmarkResults { verification: report, models: results, escalations, aborted })),
            )
        };
        self.bus.publish(&out).await.map_err(retry)?;
        self.event(cycle, EventBody::PhaseStarted { phase: Phase::Documenting }).await;
        Ok(())
    }

    /// All attempts at one model. `Ok(None)` when the cycle was canceled.
    async fn model(
        &self,
        pkg: Uuid,
        cycle: &CycleId,
        report: &VerificationReport,
        i: usize,
        m: &ModelSpec,
        aborted: &mut Option<String>,
    ) -> Result<Option<ModelResult>, HandleError> {
        let plan = &report.plan;
        if let Some(v) = report.verdicts.get(i).filter(|v| v.fit == Fit::NoGo) {
            return Ok(Some(skipped(i, m, report, format!("the Reader predicted it does not fit: {}", v.reason))));
        }
        let mut settings = Settings::planned(plan, m);
        let mut attempts: Vec<Attempt> = Vec::new();
        let max = plan.policy.max_attempts.max(1);
        for number in 1..=max {
            self.event(
                cycle,
                EventBody::ModelStarted { model: m.name.clone(), index: i as u32 + 1, of: plan.models.len() as u32, attempt: number },
            )
            .await;
            let started = now();
            match self.attempt(cycle, report, &settings).await {
                Ok((runs, dep_info)) => {
                    attempts.push(Attempt { number, changes: settings.changes.clone(), outcome: "ok".into(), escalation: None });
                    return Ok(Some(measured(i, m, report, &settings, runs, dep_info, attempts, started)));
                }
                Err(AttemptError::Canceled) => return Ok(None),
                Err(AttemptError::Bus(e)) => return Err(retry(e)),
                Err(AttemptError::Failed(f)) => {
                    let esc = derive_id(pkg, &format!("escalation-{i}"), number);
                    attempts.push(Attempt {
                        number,
                        changes: settings.changes.clone(),
                        outcome: f.message.clone(),
                        escalation: Some(esc.to_string()),
                    });
                    let out = Envelope {
                        id: esc,
                        ..Envelope::new(
                            cycle.clone(),
                            Role::Writer,
                            Role::Debug,
                            Some(pkg),
                            Payload::Escalation(Escalation {
                                model: m.name.clone(),
                                attempt: number,
                                failure: f.message.clone(),
                                suspected: f.class,
                                evidence: f.evidence,
                                target: f.target,
                                settings: settings.pairs(),
                                max_attempts: max,
                                policy: plan.policy.clone(),
                            }),
                        )
                    };
                    self.bus.publish(&out).await.map_err(retry)?;
                    let Some(decision) = self.await_decision(cycle, &esc.to_string(), plan).await? else { return Ok(None) };
                    match decision.action {
                        RemedyAction::Retry { set } => {
                            for (k, v) in &set {
                                if let Err(e) = settings.apply(k, v) {
                                    let mut r = failed(i, m, report, format!("the remedy could not be applied: {e}"));
                                    r.attempts = attempts;
                                    return Ok(Some(r));
                                }
                            }
                        }
                        RemedyAction::CoolDown { seconds } => {
                            self.event(cycle, EventBody::Step { model: m.name.clone(), what: format!("cooling down for {seconds} s") }).await;
                            tokio::time::sleep(Duration::from_secs(seconds.min(3600))).await;
                        }
                        RemedyAction::Skip => {
                            let mut r = skipped(i, m, report, format!("skipped by {} after: {}", decision.by, f.message));
                            r.attempts = attempts;
                            return Ok(Some(r));
                        }
                        RemedyAction::Abort => {
                            let reason = format!("cycle aborted by {} after {}: {}", decision.by, m.name, f.message);
                            *aborted = Some(reason.clone());
                            let mut r = skipped(i, m, report, reason);
                            r.attempts = attempts;
                            return Ok(Some(r));
                        }
                    }
                }
            }
        }
        let last = attempts.last().map(|a| a.outcome.clone()).unwrap_or_default();
        let mut r = failed(i, m, report, format!("failed after {max} attempt(s): {last}"));
        r.attempts = attempts;
        Ok(Some(r))
    }

    /// Waits for Debug's decision on an escalation. `Ok(None)` when the cycle was canceled.
    async fn await_decision(&self, cycle: &CycleId, esc: &str, plan: &Plan) -> Result<Option<Decision>, HandleError> {
        let limit = Duration::from_secs(plan.policy.ask_timeout_s.saturating_add(600));
        let start = tokio::time::Instant::now();
        loop {
            if let Some(rec) = self.bus.escalations.get::<EscalationRecord>(esc).await.map_err(retry)?
                && let Some(d) = rec.decision {
                    return Ok(Some(d));
                }
            if self.canceled(cycle).await.map_err(retry)? {
                return Ok(None);
            }
            if start.elapsed() > limit {
                return Ok(Some(Decision {
                    option: None,
                    action: RemedyAction::Skip,
                    by: "writer (no decision from Debug in time)".into(),
                    at: now(),
                }));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// One attempt: deploy, warm up, measure every prompt, tear down.
    async fn attempt(
        &self,
        cycle: &CycleId,
        report: &VerificationReport,
        s: &Settings,
    ) -> Result<(Vec<RunResult>, DeployInfo), AttemptError> {
        let plan = &report.plan;
        let m = &s.model;
        let mut dep = self.deploy(cycle, s).await?;
        let info_base = DeployInfo {
            load_ms: dep.load_ms,
            engine_version: dep.engine_version.clone(),
            peak_ram: None,
            layers: None,
        };
        let step = |what: String| EventBody::Step { model: m.name.clone(), what };
        self.event(cycle, step(format!("engine healthy after {:.1} s", dep.load_ms / 1000.0))).await;
        let base_req = |prompt: &protocol::plan::PromptSpec, text: String| GenRequest {
            model: m.model_ref().to_string(),
            system: prompt.system.clone(),
            prompt: text,
            max_tokens: plan.max_tokens_for(prompt),
            temperature: plan.defaults.temperature,
            seed: plan.defaults.seed,
            context: Some(s.context),
            options: Default::default(),
            timeout: Duration::from_secs(plan.defaults.request_timeout_s),
        };
        if plan.defaults.warmup {
            let p = &plan.prompts[0];
            let req = GenRequest { max_tokens: 16, ..base_req(p, with_nonce("Say hello.", &short_nonce())) };
            if let Err(e) = dep.generate(&req).await {
                return Err(request_failure(&mut dep, "warm-up", e));
            }
            self.event(cycle, step("warm-up done (excluded from results)".into())).await;
        }
        let mut runs = Vec::new();
        for p in &plan.prompts {
            for rep in 1..=plan.defaults.repetitions {
                if self.canceled(cycle).await.map_err(AttemptError::Bus)? {
                    return Err(AttemptError::Canceled);
                }
                let nonce = short_nonce();
                let req = base_req(p, with_nonce(&p.text, &nonce));
                let g = match dep.generate(&req).await {
                    Ok(g) => g,
                    Err(e) => return Err(request_failure(&mut dep, &p.id, e)),
                };
                let key = format!("answers/{cycle}/{}/{}/{rep}", m.name, p.id);
                let blob = self.bus.put_blob(&key, g.text.as_bytes()).await.map_err(AttemptError::Bus)?;
                let r = run_result(&p.id, rep, &nonce, &g, analyse(&g.text, &p.required_topics), Some(blob));
                self.event(
                    cycle,
                    EventBody::RunMeasured {
                        model: m.name.clone(),
                        prompt: p.id.clone(),
                        repetition: rep,
                        ttft_ms: r.ttft_ms,
                        tokens: r.output_tokens,
                        decode_tps: r.client_decode_tps,
                    },
                )
                .await;
                runs.push(r);
            }
        }
        let info = DeployInfo { peak_ram: dep.peak_ram(), layers: dep.layers(), ..info_base };
        dep.process.stop();
        self.event(cycle, step("engine stopped".into())).await;
        Ok((runs, info))
    }

    async fn deploy(&self, cycle: &CycleId, s: &Settings) -> Result<Deployed, AttemptError> {
        let m = &s.model;
        match (m.runtime, m.engine) {
            (Runtime::Process, EngineKind::LlamaServer) => self.deploy_process(cycle, s).await,
            (runtime, engine) => Err(AttemptError::Failed(Failure {
                class: FailureClass::Other,
                message: format!(
                    "this Writer cannot deploy engine {engine:?} on runtime {runtime:?} yet; use engine = \"llama-server\" with runtime = \"process\""
                ),
                evidence: Evidence::default(),
                target: None,
            })),
        }
    }

    async fn deploy_process(&self, cycle: &CycleId, s: &Settings) -> Result<Deployed, AttemptError> {
        let m = &s.model;
        let fail = |class, message: String, evidence: Evidence| AttemptError::Failed(Failure { class, message, evidence, target: None });
        let binary = find_llama_server(m.binary.as_deref())
            .map_err(|e| fail(FailureClass::EngineExited, e.to_string(), Evidence::default()))?;
        let raw = m.model_path.as_deref().unwrap_or_default();
        let model_path = expand_path(raw, &|k| std::env::var(k).ok())
            .map_err(|e| fail(FailureClass::ModelNotFound, format!("model_path `{raw}`: {e}"), Evidence::default()))?;
        if !std::path::Path::new(&model_path).is_file() {
            return Err(fail(
                FailureClass::ModelNotFound,
                format!("model file {model_path} does not exist (run `make model` for the demo model)"),
                Evidence::default(),
            ));
        }
        let spec = ProcessSpec {
            name: format!("{cycle}-{}", m.name),
            binary: binary.clone(),
            model_path: model_path.into(),
            port: m.port,
            context: s.context,
            parallel: 1,
            threads: m.threads,
            gpu_layers: m.gpu_layers,
            args: m.args.clone(),
            env: m.env.clone(),
            run_dir: self.cfg.run_dir.clone(),
        };
        self.event(cycle, EventBody::Step { model: m.name.clone(), what: format!("starting {}", binary.display()) }).await;
        let mut process = EngineProcess::start(&spec).map_err(|e| fail(FailureClass::EngineExited, e.to_string(), Evidence::default()))?;
        let target = Some(format!("process:{}", process.pid()));
        match process.wait_healthy(Duration::from_secs(s.load_timeout_s)).await {
            Ok(took) => Ok(Deployed {
                client: OpenAiClient::new(&process.base_url()),
                process,
                load_ms: took.as_secs_f64() * 1000.0,
                engine_version: llama_server_version(&binary),
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
                Err(AttemptError::Failed(Failure { class, message: e.to_string(), evidence, target }))
            }
        }
    }
}

/// What the deployment told us, for the result.
struct DeployInfo {
    load_ms: f64,
    engine_version: Option<String>,
    peak_ram: Option<u64>,
    layers: Option<String>,
}

fn request_failure(dep: &mut Deployed, what: &str, e: EngineError) -> AttemptError {
    let evidence = dep.evidence(e.engine_text().map(str::to_string));
    let died = evidence.exit_status.is_some();
    let text = e.engine_text().unwrap_or_default().to_lowercase();
    let class = if died {
        FailureClass::EngineExited
    } else if text.contains("context size") || text.contains("exceeds the context") {
        FailureClass::ContextOverflow
    } else {
        FailureClass::RequestFailed
    };
    let message = match &evidence.exit_status {
        Some(st) => format!("{what}: the engine died ({st}) during the request: {e}"),
        None => format!("{what}: {e}"),
    };
    dep.process.stop();
    AttemptError::Failed(Failure { class, message, evidence, target: Some(format!("process:{}", dep.process.pid())) })
}

fn short_nonce() -> String {
    Uuid::now_v7().simple().to_string()[20..].to_string()
}

fn manifest(report: &VerificationReport, s: &Settings, m: &ModelSpec, info: Option<&DeployInfo>) -> Manifest {
    let h = &report.host;
    Manifest {
        host: h.hostname.clone(),
        cpu: format!("{} ({} logical CPUs)", h.cpu_model, h.cpus),
        gpu: if h.gpus.is_empty() {
            h.gpu_note.clone().unwrap_or_else(|| "no GPU".into())
        } else {
            h.gpus.iter().map(|g| g.name.clone()).collect::<Vec<_>>().join(", ")
        },
        driver: h.gpus.first().map(|g| g.driver.clone()),
        engine: match m.engine {
            EngineKind::LlamaServer => "llama-server".into(),
            EngineKind::Ollama => "ollama".into(),
        },
        engine_version: info.and_then(|i| i.engine_version.clone()),
        model: m.model_ref().to_string(),
        model_digest: None,
        quantization: report.verdicts.iter().find(|v| v.model == m.name).and_then(|v| {
            v.source.split_once("quantisation ").map(|(_, q)| q.split([',', ')']).next().unwrap_or(q).to_string())
        }),
        context: s.context,
        gpu_layers: info.and_then(|i| i.layers.clone()),
        threads: m.threads,
        seed: report.plan.defaults.seed,
        temperature: report.plan.defaults.temperature,
        plan_hash: report.plan_hash.clone(),
        threadcycle_version: env!("CARGO_PKG_VERSION").into(),
    }
}

#[allow(clippy::too_many_arguments)]
fn measured(
    i: usize,
    m: &ModelSpec,
    report: &VerificationReport,
    s: &Settings,
    runs: Vec<RunResult>,
    info: DeployInfo,
    attempts: Vec<Attempt>,
    started_at: String,
) -> ModelResult {
    ModelResult {
        index: i as u32,
        model: m.name.clone(),
        status: ModelStatus::Measured,
        attempts,
        load_ms: Some(info.load_ms),
        prompts: summarise(&runs, report.plan.defaults.cv_flag),
        runs,
        peak_ram_bytes: info.peak_ram,
        peak_vram_bytes: None,
        manifest: manifest(report, s, &s.model, Some(&info)),
        telemetry: None,
        deployment: Vec::new(),
        started_at,
        finished_at: now(),
    }
}

fn not_measured(i: usize, m: &ModelSpec, report: &VerificationReport, status: ModelStatus) -> ModelResult {
    let s = Settings::planned(&report.plan, m);
    ModelResult {
        index: i as u32,
        model: m.name.clone(),
        status,
        attempts: Vec::new(),
        load_ms: None,
        runs: Vec::new(),
        prompts: Vec::new(),
        peak_ram_bytes: None,
        peak_vram_bytes: None,
        manifest: manifest(report, &s, m, None),
        telemetry: None,
        deployment: Vec::new(),
        started_at: now(),
        finished_at: now(),
    }
}

fn skipped(i: usize, m: &ModelSpec, report: &VerificationReport, reason: String) -> ModelResult {
    not_measured(i, m, report, ModelStatus::Skipped { reason })
}

fn failed(i: usize, m: &ModelSpec, report: &VerificationReport, reason: String) -> ModelResult {
    not_measured(i, m, report, ModelStatus::Failed { reason })
}
