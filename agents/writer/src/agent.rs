//! The Writer's phase: for every model of the verification report, deploy → warm up → measure →
//! tear down; failures go to Debug and come back as remedies.
//!
//! Crash safety: each model's result is stored in the results bucket (create-if-absent) as soon
//! as it is final, so a redelivered report resumes after the last finished model; every package
//! the Writer publishes has an id derived from the report's id, so a repeat is recognised.

use crate::analysis::analyse;
use crate::deploy::{Deployed, Failure, deploy, engine_failure, remove_failed};
use crate::measure::{run_result, summarise, with_nonce};
use crate::settings::Settings;
use crate::thermal::ThermalGuard;
use handoffs::{Bus, BusError, ConsumeStats, HandleError, Handled, Handler, consume, wait_for_room};
use host::engine::{EngineError, GenRequest};
use host::telemetry::Sampler;
use protocol::events::{Event, EventBody, Phase, Step};
use protocol::ids::derive_id;
use protocol::messages::{BenchmarkResults, Escalation, VerificationReport};
use protocol::operator::CycleRecord;
use protocol::plan::{EngineKind, ModelSpec, Plan};
use protocol::results::{
    Attempt, Decision, EscalationRecord, FailureClass, Fit, Manifest, ModelResult, ModelStatus, RemedyAction, RunResult,
};
use protocol::{CycleId, Envelope, Payload, Role};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use uuid::Uuid;

mod tune;

/// Where the Writer keeps engine pid and log files.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Runtime directory for engine processes.
    pub run_dir: PathBuf,
}

/// Runs the Writer until `shutdown` turns true.
pub async fn run(
    bus: Bus,
    cfg: WriterConfig,
    shutdown: watch::Receiver<bool>,
    stats: Arc<ConsumeStats>,
) -> Result<(), BusError> {
    let reaped = host::process::reap_stale(&cfg.run_dir);
    if reaped > 0 {
        tracing::warn!(message = "Stopped engines left by an earlier Writer.", count = reaped);
    }
    let ours = async |cycle: &str| matches!(bus.cycles.get::<CycleRecord>(cycle).await, Ok(Some(_)));
    let removed = crate::deploy::remove_leftovers(bus.host.as_str(), ours).await;
    if removed > 0 {
        tracing::warn!(message = "Removed containers left by an earlier Writer.", count = removed);
    }
    let gpus = Arc::new(
        tokio::task::spawn_blocking(host::gpu::Gpus::probe)
            .await
            .unwrap_or_else(|e| host::gpu::Gpus::Unavailable(format!("GPU probe failed: {e}"))),
    );
    if let Some(note) = gpus.note() {
        tracing::info!(message = "Telemetry without GPU figures.", %note);
    }
    let writer = Writer { bus: bus.clone(), cfg, gpus };
    let r = consume(&bus, shutdown, stats, &writer).await;
    // A measurement interrupted by shutdown leaves its container: remove it now, not on restart.
    crate::deploy::remove_leftovers(bus.host.as_str(), ours).await;
    r
}

struct Writer {
    bus: Bus,
    cfg: WriterConfig,
    gpus: Arc<host::gpu::Gpus>,
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

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
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

    /// Whether the cycle was canceled or is already complete. A cycle Main marked failed
    /// because an agent went silent goes on: when the agent is back, its results still land.
    async fn canceled(&self, cycle: &CycleId) -> Result<bool, BusError> {
        let rec: Option<CycleRecord> = self.bus.cycles.get(cycle.as_str()).await?;
        Ok(rec.is_some_and(|r| r.state.stops_work()))
    }

    /// The reason, when an escalation of this cycle was decided with `abort` (on any host).
    async fn aborted_elsewhere(&self, cycle: &CycleId) -> Result<Option<String>, BusError> {
        aborted_in(&self.bus, cycle).await
    }

    async fn run_cycle(&self, pkg: Uuid, cycle: &CycleId, report: VerificationReport) -> Handled {
        // Failed host checks were settled before the report came: an abort deploys nothing.
        let mut aborted: Option<String> = report.gate.as_ref().and_then(protocol::messages::CheckGate::aborted);
        if self.canceled(cycle).await.map_err(HandleError::from)? {
            // Canceled with a partial report asked for (this Writer restarted after the cancel):
            // what is stored is handed on, the rest is skipped.
            if !self.partial_report_asked(cycle).await? {
                tracing::info!(message = "Cycle already final; report ignored.", %cycle);
                return Ok(());
            }
            aborted = Some(PARTIAL.into());
        }
        self.event(cycle, EventBody::PhaseStarted { phase: Phase::Benchmarking }).await;
        let mut results = Vec::new();
        for (i, m) in report.plan.models.iter().enumerate() {
            // Several hosts: Main placed this model on another host's Writer.
            if !report.runs_here(self.bus.host.as_str(), i) {
                continue;
            }
            let key = format!("{cycle}.{i}");
            let stored = self.bus.results.get::<ModelResult>(&key).await.map_err(HandleError::from)?;
            // A model cut short by a cancel with a partial report is measured on when the cycle
            // was resumed (its runs are kept); the partial result is then replaced.
            let cut_short = stored.as_ref().is_some_and(|d| aborted.is_none() && is_cut_short(d));
            if let Some(done) = stored.filter(|_| !cut_short) {
                if let ModelStatus::Skipped { reason } = &done.status
                    && (reason.starts_with("cycle aborted") || reason == PARTIAL)
                {
                    aborted.get_or_insert_with(|| reason.clone());
                }
                results.push(done);
                continue;
            }
            // Several hosts: an abort the operator chose for another host's model stops this
            // host's share too, at the next model.
            if aborted.is_none() && report.placement.is_some() {
                aborted = self.aborted_elsewhere(cycle).await.map_err(HandleError::from)?;
            }
            let mut result = match &aborted {
                Some(reason) => skipped(i, m, &report, reason.clone()),
                None => match self.model(pkg, cycle, &report, i, m, &mut aborted).await? {
                    Some(r) => r,
                    None => return Ok(()),
                },
            };
            // `[tune]`: after the model's measurement, Debug's search for its best settings.
            if result.status == ModelStatus::Measured {
                result.tune = self.tune(pkg, cycle, &report, i, m, &result).await?;
            }
            // A full store holds the measured result here until there is room (not re-measured).
            if cut_short && !is_cut_short(&result) {
                wait_for_room("a model's result", || self.bus.results.put(&key, &result))
                    .await
                    .map_err(HandleError::from)?;
            } else if !wait_for_room("a model's result", || self.bus.results.create(&key, &result))
                .await
                .map_err(HandleError::from)?
            {
                tracing::warn!(message = "A result for this model was already stored; keeping the first.", %key);
            }
            let outcome = match &result.status {
                ModelStatus::Measured => "measured".to_string(),
                ModelStatus::Failed { reason } => format!("failed: {reason}"),
                ModelStatus::Skipped { reason } => format!("skipped: {reason}"),
            };
            self.event(cycle, EventBody::ModelFinished { model: m.name.clone(), outcome }).await;
            let stored = self.bus.results.get::<ModelResult>(&key).await.map_err(HandleError::from)?.unwrap_or(result);
            results.push(stored);
        }
        let gate_escalations = report.gate.iter().flat_map(|g| g.escalations.iter().cloned());
        let escalations = gate_escalations
            .chain(results.iter().flat_map(|r| r.attempts.iter().filter_map(|a| a.escalation.clone())))
            .collect();
        let concurrent = if report.plan.concurrent.is_some()
            && aborted.is_none()
            && report.concurrent_here(self.bus.host.as_str())
        {
            let key = format!("{cycle}.concurrent");
            match self.bus.results.get::<protocol::results::ConcurrentResult>(&key).await.map_err(HandleError::from)? {
                Some(done) => Some(done),
                None => {
                    if self.canceled(cycle).await.map_err(HandleError::from)? {
                        return Ok(());
                    }
                    self.event(cycle, EventBody::Step { model: "concurrent".into(), step: Step::ConcurrentStarted })
                        .await;
                    let at = crate::concurrent::Where {
                        cycle,
                        host: self.bus.host.as_str(),
                        bus: &self.bus,
                        run_dir: &self.cfg.run_dir,
                    };
                    let r = crate::concurrent::run(&at, &report, self.gpus.clone()).await?;
                    wait_for_room("the concurrent phase's result", || self.bus.results.create(&key, &r))
                        .await
                        .map_err(HandleError::from)?;
                    Some(r)
                }
            }
        } else {
            None
        };
        let out = Envelope {
            id: derive_id(pkg, "benchmark-results", 0),
            ..Envelope::new(
                cycle.clone(),
                Role::Writer,
                Role::Documentation,
                Some(pkg),
                Payload::BenchmarkResults(Box::new(BenchmarkResults {
                    verification: report,
                    models: results,
                    escalations,
                    aborted,
                    concurrent,
                    hosts: Vec::new(),
                })),
            )
        };
        wait_for_room("the benchmark results", || self.bus.publish(&out)).await.map_err(HandleError::from)?;
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
        if let Some(why) = report.gate.as_ref().and_then(|g| g.skips(i)) {
            return Ok(Some(skipped(i, m, report, why)));
        }
        if let Some(v) = report.verdicts.get(i).filter(|v| v.fit == Fit::NoGo && !m.ignore_fit) {
            return Ok(Some(skipped(i, m, report, format!("the Reader predicted it does not fit: {}", v.reason))));
        }
        // An engine already running is checked before anything is measured: bad input (wrong
        // URL, not an engine, the other API, a model it lacks) fails this model alone, by name.
        if m.runtime == protocol::plan::Runtime::Endpoint
            && let Err(e) = crate::endpoint::check(m).await
        {
            return Ok(Some(failed(i, m, report, e.to_string())));
        }
        let mut settings = Settings::planned(plan, m);
        let mut attempts: Vec<Attempt> = Vec::new();
        // Runs measured by failed attempts, and the settings they ran under: a retry measures
        // only what is missing, unless the remedy changed how the engine runs.
        let mut kept: Vec<RunResult> = Vec::new();
        let mut kept_under = settings.effective.clone();
        // Runs stored before a cancel, a crash or an interrupted `up`.
        if let Some(k) = self.bus.results.get::<KeptRuns>(&kept_key(cycle, i)).await.map_err(HandleError::from)?
            && measures_alike(&k.settings, &settings.effective)
        {
            kept = k.runs;
        }
        let max = plan.policy.max_attempts.max(1);
        for number in 1..=max {
            self.event(
                cycle,
                EventBody::ModelStarted {
                    model: m.name.clone(),
                    // Position within this host's share (the whole plan on one host).
                    index: share_position(report, self.bus.host.as_str(), i).0,
                    of: share_position(report, self.bus.host.as_str(), i).1,
                    attempt: number,
                },
            )
            .await;
            let started = now();
            if !measures_alike(&kept_under, &settings.effective) {
                kept.clear();
                kept_under = settings.effective.clone();
            }
            if !kept.is_empty() {
                let step = Step::RunsKept { runs: kept.len() as u32 };
                self.event(cycle, EventBody::Step { model: m.name.clone(), step }).await;
            }
            let next = pull_ahead_target(report, self.bus.host.as_str(), i);
            match self.attempt(cycle, report, &settings, next, &mut kept, &kept_key(cycle, i)).await {
                Ok((runs, dep_info)) => {
                    attempts.push(Attempt {
                        number,
                        changes: settings.changes.clone(),
                        settings: Some(settings.effective.clone()),
                        outcome: "ok".into(),
                        escalation: None,
                    });
                    return Ok(Some(measured(i, m, report, &settings, runs, dep_info, attempts, started)));
                }
                Err(AttemptError::Canceled) => {
                    return self.canceled_result(cycle, i, m, report, &kept, attempts, aborted).await;
                }
                Err(AttemptError::Bus(e)) => return Err(e.into()),
                Err(AttemptError::Failed(f)) => {
                    let failed_target = f.target.clone();
                    let esc = derive_id(pkg, &format!("escalation-{i}"), number);
                    attempts.push(Attempt {
                        number,
                        changes: settings.changes.clone(),
                        settings: Some(settings.effective.clone()),
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
                            Payload::Escalation(Box::new(Escalation {
                                model: m.name.clone(),
                                attempt: number,
                                failure: f.message.clone(),
                                suspected: f.class,
                                evidence: f.evidence,
                                target: f.target,
                                endpoint: (m.runtime == protocol::plan::Runtime::Endpoint)
                                    .then(|| m.url.clone())
                                    .flatten(),
                                engine: m.engine,
                                settings: settings.effective.clone(),
                                max_attempts: max,
                                policy: plan.policy.clone(),
                            })),
                        )
                    };
                    wait_for_room("an escalation", || self.bus.publish(&out)).await.map_err(HandleError::from)?;
                    let decision = self.await_decision(cycle, &esc.to_string(), plan).await;
                    remove_failed(failed_target.as_deref()).await;
                    let Some(decision) = decision? else {
                        return self.canceled_result(cycle, i, m, report, &kept, attempts, aborted).await;
                    };
                    match decision.action {
                        RemedyAction::Retry { set } => {
                            for change in &set {
                                if let Err(e) = settings.apply(change) {
                                    let mut r = failed(i, m, report, format!("the remedy could not be applied: {e}"));
                                    r.attempts = attempts;
                                    return Ok(Some(r));
                                }
                            }
                        }
                        RemedyAction::CoolDown { seconds } => {
                            self.event(
                                cycle,
                                EventBody::Step { model: m.name.clone(), step: Step::CoolingDown { seconds } },
                            )
                            .await;
                            tokio::time::sleep(Duration::from_secs(seconds.min(3600))).await;
                        }
                        RemedyAction::Skip => {
                            let mut r =
                                skipped(i, m, report, format!("skipped by {} after: {}", decision.by, f.message));
                            r.attempts = attempts;
                            return Ok(Some(r));
                        }
                        // Answers to failed host checks: for a model, a plain retry.
                        RemedyAction::Continue | RemedyAction::Reverify => {}
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

    /// Whether the operator canceled the cycle asking for a partial report.
    async fn partial_report_asked(&self, cycle: &CycleId) -> Result<bool, HandleError> {
        let rec: Option<CycleRecord> = self.bus.cycles.get(cycle.as_str()).await.map_err(HandleError::from)?;
        Ok(rec.is_some_and(|r| r.partial_report))
    }

    /// The model in progress when the cycle was canceled: `Ok(None)` (nothing handed on) unless
    /// the operator asked for a partial report; then every run measured so far is kept in a
    /// result that says how far it got, and `aborted` makes the rest of the cycle skipped, so
    /// the reports are written — partial, saying what is missing.
    #[allow(clippy::too_many_arguments)]
    async fn canceled_result(
        &self,
        cycle: &CycleId,
        i: usize,
        m: &ModelSpec,
        report: &VerificationReport,
        kept: &[RunResult],
        attempts: Vec<Attempt>,
        aborted: &mut Option<String>,
    ) -> Result<Option<ModelResult>, HandleError> {
        if !self.partial_report_asked(cycle).await? {
            return Ok(None);
        }
        let plan = &report.plan;
        let planned = plan.prompts.len() as u64 * u64::from(plan.repetitions_for(m));
        *aborted = Some(PARTIAL.into());
        let mut r = skipped(
            i,
            m,
            report,
            format!(
                "{}{} of {planned} measured run(s); the runs measured are kept",
                protocol::results::CANCELED_AFTER,
                kept.len()
            ),
        );
        r.runs = kept.to_vec();
        r.attempts = attempts;
        Ok(Some(r))
    }

    /// Waits for Debug's decision on an escalation. `Ok(None)` when the cycle was canceled.
    async fn await_decision(&self, cycle: &CycleId, esc: &str, plan: &Plan) -> Result<Option<Decision>, HandleError> {
        let limit = Duration::from_secs(plan.policy.ask_timeout_s.saturating_add(600));
        let start = tokio::time::Instant::now();
        loop {
            if let Some(rec) = self.bus.escalations.get::<EscalationRecord>(esc).await.map_err(HandleError::from)?
                && let Some(d) = rec.decision
            {
                return Ok(Some(d));
            }
            if self.canceled(cycle).await.map_err(HandleError::from)? {
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

    /// Starts pulling `next`'s tag through the engine being measured (pull-ahead): a step
    /// event now, another when the pull ends, both under `next`'s name.
    async fn start_pull_ahead(
        &self,
        cycle: &CycleId,
        client: host::ollama::OllamaClient,
        current: &str,
        next: &ModelSpec,
    ) -> PullAhead {
        let tag = next.tag.clone().unwrap_or_default();
        let name = next.name.clone();
        let step = move |step: Step| EventBody::Step { model: name.clone(), step };
        self.event(cycle, step(Step::PullAhead { model: tag.clone(), measuring: current.to_string() })).await;
        let (bus, cycle, current) = (self.bus.clone(), cycle.clone(), current.to_string());
        let task = tokio::spawn(async move {
            let what = match client.pull(&tag, |_| {}).await {
                Ok(p) => Step::PullAheadDone {
                    model: tag,
                    bytes: p.total_bytes,
                    seconds: p.elapsed.as_secs_f64(),
                    measuring: current,
                },
                Err(e) => Step::PullAheadFailed { model: tag, error: e.to_string() },
            };
            bus.event_best_effort(Event::new(cycle, Role::Writer, step(what))).await;
        });
        PullAhead(task)
    }

    /// One attempt: deploy, warm up, measure every prompt not yet in `kept`, tear down. Each run
    /// is added to `kept` as it is measured, so a later failure loses none of them; success
    /// returns them all. With `next` (pull-ahead), that model is pulled through this engine while
    /// this one is measured.
    async fn attempt(
        &self,
        cycle: &CycleId,
        report: &VerificationReport,
        s: &Settings,
        next: Option<&ModelSpec>,
        kept: &mut Vec<RunResult>,
        kept_at: &str,
    ) -> Result<(Vec<RunResult>, DeployInfo), AttemptError> {
        let plan = &report.plan;
        let m = &s.model;
        // Steps (container created, pull progress…) become events while the deployment runs.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Step>();
        let on_step = move |what: Step| {
            let _ = tx.send(what);
        };
        let deploying = async move {
            let r =
                deploy(cycle, self.bus.host.as_str(), s, &self.cfg.run_dir, plan.host.model_store.as_deref(), &on_step)
                    .await;
            drop(on_step);
            r
        };
        let step = |step: Step| EventBody::Step { model: m.name.clone(), step };
        let forwarding = async {
            while let Some(what) = rx.recv().await {
                self.event(cycle, step(what)).await;
            }
        };
        let (deployed, ()) = tokio::join!(deploying, forwarding);
        let mut dep = deployed.map_err(AttemptError::Failed)?;
        dep.decode_ceiling = predicted_ceiling(report, &m.name);
        self.event(cycle, step(Step::EngineReady { seconds: dep.load_ms / 1000.0 })).await;
        let pull_ahead = match (next, &dep.api) {
            (Some(n), crate::deploy::Api::Ollama(c)) => Some(self.start_pull_ahead(cycle, c.clone(), &m.name, n).await),
            _ => None,
        };
        let guard =
            ThermalGuard::from_criteria(&plan.criteria, Duration::from_secs(plan.policy.ask_timeout_s.clamp(60, 1800)));
        let base_req = |prompt: &protocol::plan::PromptSpec, text: String| dep.request(plan, s, prompt, text);
        // Ollama loads the model on the first request: the warm-up's `load_duration` is the
        // model's load time (a pull is timed on its own).
        let mut engine_load_ms = None;
        if plan.defaults.warmup {
            let p = &plan.prompts[0];
            let req = GenRequest { max_tokens: 16, ..base_req(p, with_nonce("Say hello.", &short_nonce())) };
            match dep.generate(&req).await {
                Ok(g) => engine_load_ms = g.engine_load_ms.filter(|ms| *ms > 0.0),
                Err(e) => return Err(request_failure(&mut dep, "warm-up", e).await),
            }
            self.event(cycle, step(Step::WarmupDone)).await;
        }
        // The engine's memory account is read right after the load (llama-server: at start;
        // Ollama: the warm-up's request), before the request lines pile up in its log.
        let mut engine_memory = dep.engine_memory().await;
        // Loaded by now (Ollama loads on the first request): where the weights went, for
        // `status` and the metrics.
        let placed = if report.host.gpus.is_empty() { Some(0.0) } else { dep.gpu_share(engine_memory.as_ref()).await };
        if let Some(gpu_share) = placed {
            self.event(cycle, step(Step::WeightsPlaced { gpu_share })).await;
        }
        let launch = dep.launch_record(&base_req(&plan.prompts[0], plan.prompts[0].text.clone()));
        // Sampling starts after the warm-up: its tokens are not counted, so neither are its
        // joules, its utilisation or its heat.
        let sampler = Sampler::start(dep.telemetry_target(), plan.defaults.sample_hz, self.gpus.clone());
        if guard.is_some() {
            sampler.first_sample(Duration::from_secs(2)).await;
        }
        // Tokens of this attempt's runs: the telemetry window covers only them.
        let mut tokens: u64 = 0;
        for p in &plan.prompts {
            for rep in 1..=plan.repetitions_for(m) {
                if kept.iter().any(|r| r.prompt_id == p.id && r.repetition == rep) {
                    continue;
                }
                if self.canceled(cycle).await.map_err(AttemptError::Bus)? {
                    dep.teardown().await;
                    return Err(AttemptError::Canceled);
                }
                if let Some(g) = &guard {
                    let paused = g
                        .wait_until_cool(&sampler, |t| {
                            tracing::warn!(message = "GPU too hot; pausing between requests.", temp_c = t)
                        })
                        .await;
                    if let Err(pause) = paused {
                        let evidence = dep.evidence(None).await;
                        dep.teardown().await;
                        return Err(AttemptError::Failed(Failure {
                            class: FailureClass::Thermal,
                            message: format!(
                                "the GPU stayed at {:.0} °C (limit {:.0} °C) for {:.0} s without cooling below {:.0} °C",
                                pause.temp_c, g.max_c, pause.waited_s, g.resume_c
                            ),
                            evidence: protocol::results::Evidence { gpu_temp_c: Some(pause.temp_c as u32), ..evidence },
                            target: Some(dep.target()),
                        }));
                    }
                }
                let nonce = short_nonce();
                let req = base_req(p, with_nonce(&p.text, &nonce));
                let g = match dep.generate(&req).await {
                    Ok(g) => {
                        engine_load_ms = engine_load_ms.or(g.engine_load_ms.filter(|ms| *ms > 0.0));
                        g
                    }
                    Err(e) => return Err(request_failure(&mut dep, &p.id, e).await),
                };
                let key = format!("answers/{cycle}/{}/{}/{rep}", m.name, p.id);
                // A full store holds the measured run (and the engine) until there is room.
                let store = || self.bus.put_blob(&key, g.text.as_bytes());
                let blob = wait_for_room("a measured answer", store).await.map_err(AttemptError::Bus)?;
                let r = run_result(&p.id, rep, &nonce, &g, analyse(&g.text, &p.required_topics), Some(blob));
                // Stored before it is announced: a run the operator saw measured is not measured
                // again after a restart or a resume. Best effort: should the store refuse it (a
                // very long model's runs past the message size), the run is only measured again
                // after a restart, never lost from this attempt.
                let mut stored = KeptRuns { settings: s.effective.clone(), runs: kept.clone() };
                stored.runs.push(r.clone());
                if let Err(error) = self.bus.results.put(kept_at, &stored).await {
                    tracing::warn!(message = "Runs so far not stored; a restart measures them again.", %error);
                }
                self.event(
                    cycle,
                    EventBody::RunMeasured {
                        model: m.name.clone(),
                        prompt: p.id.clone(),
                        repetition: rep,
                        ttft_ms: r.ttft_ms,
                        tokens: r.output_tokens,
                        decode_tps: r.client_decode_tps,
                        e2e_ms: Some(r.e2e_ms),
                        tpot_ms: r.tpot_ms,
                        prompt_tokens: r.prompt_tokens,
                        prefill_tps: r.engine_prefill_tps,
                        sample: Some(live_sample(&sampler.latest())),
                    },
                )
                .await;
                tokens += u64::from(r.output_tokens);
                kept.push(r);
            }
        }
        let runs = kept.clone();
        let (mut telemetry, series) = sampler.finish(tokens).await;
        // After the sampler: the standard test's tokens and joules are not the runs'.
        let standard =
            crate::standard::run(&dep, m.engine, s.effective.context, plan, &base_req(&plan.prompts[0], String::new()))
                .await;
        if let Some(p) = pull_ahead {
            // The engine serves the download: keep it up until the next model is in the store.
            if !p.0.is_finished() {
                self.event(cycle, step(Step::WaitingForPullAhead)).await;
            }
            p.finish().await;
        }
        let key = format!("telemetry/{cycle}/{}/attempt-{}", m.name, s.changes.len() + 1);
        match wait_for_room("the telemetry series", || self.bus.put_blob(&key, series.as_bytes())).await {
            Ok(blob) => telemetry.series = Some(blob),
            Err(error) => tracing::warn!(message = "Telemetry series not stored.", %error),
        }
        let sampled_ram = telemetry.engine_mem_bytes.map(|m| m.peak as u64);
        // NVML's measurement: the engine's processes where the driver lists them, else the
        // whole device. The engine's own figure (`/api/ps`) is kept apart, never called measured.
        let sampled_vram =
            telemetry.gpu_process_mem_bytes.or(telemetry.vram_used_bytes).map(|m| m.peak.max(0.0) as u64);
        if engine_memory.is_none() {
            // No warm-up: Ollama loaded the model on the first measured request.
            engine_memory = dep.engine_memory().await;
        }
        let ollama = matches!(dep.api, crate::deploy::Api::Ollama(_));
        let info = DeployInfo {
            load_ms: if ollama { engine_load_ms.unwrap_or(dep.load_ms) } else { dep.load_ms },
            pull_ms: dep.pull_ms,
            launch: Some(launch),
            engine_version: dep.engine_version.clone(),
            peak_ram: dep.peak_ram().max(sampled_ram),
            peak_vram: sampled_vram,
            engine_vram: dep.vram().await,
            telemetry: Some(telemetry),
            layers: dep.layers(engine_memory.as_ref()).await,
            gpu_share: if report.host.gpus.is_empty() { None } else { dep.gpu_share(engine_memory.as_ref()).await },
            engine_memory,
            quantization: dep.quantization().await,
            standard,
            digest: dep.digest.clone(),
            deployment: dep.deployment.clone(),
        };
        dep.teardown().await;
        self.event(cycle, step(dep.finished_step())).await;
        Ok((runs, info))
    }
}

/// A pull-ahead download running in the background; aborted if dropped (a failed or canceled
/// attempt tears its engine down, and the next model's deployment pulls what is missing).
struct PullAhead(tokio::task::JoinHandle<()>);

impl PullAhead {
    async fn finish(mut self) {
        let _ = (&mut self.0).await;
    }
}

impl Drop for PullAhead {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The model to pull while model `i` is measured, when the plan asks for pull-ahead: the next
/// model, if it and model `i` are Ollama models on the same runtime and store, and the Reader
/// did not rule it out.
fn pull_ahead_target<'a>(report: &'a VerificationReport, host: &str, i: usize) -> Option<&'a ModelSpec> {
    let plan = &report.plan;
    if !plan.defaults.pull_ahead {
        return None;
    }
    // The next model this host runs (on several hosts, Main placed some elsewhere).
    let j = (i + 1..plan.models.len()).find(|&j| report.runs_here(host, j))?;
    let (cur, next) = (plan.models.get(i)?, plan.models.get(j)?);
    let store = |m: &ModelSpec| m.env.get("OLLAMA_MODELS").cloned();
    let ruled_out = report.verdicts.get(j).is_some_and(|v| v.fit == Fit::NoGo && !next.ignore_fit);
    (cur.engine == EngineKind::Ollama
        && next.engine == EngineKind::Ollama
        && cur.runtime == next.runtime
        // Never pull into an engine threadcycle did not start.
        && cur.runtime != protocol::plan::Runtime::Endpoint
        && store(cur) == store(next)
        && next.tag.is_some()
        && !ruled_out)
        .then_some(next)
}

/// Whether runs measured under `a` and `b` may stand together in one result: the same engine
/// setup, differing at most in the client's time limits (load, request, stall), which cut a
/// run short but never change how a finished one was measured. Any other change (context, GPU
/// layers, KV cache, memory limit, …) starts the measurement over.
fn measures_alike(a: &protocol::settings::Settings, b: &protocol::settings::Settings) -> bool {
    let setup = |s: &protocol::settings::Settings| protocol::settings::Settings {
        load_timeout_s: 0,
        request_timeout_s: 0,
        stall_timeout_s: 0,
        ..s.clone()
    };
    setup(a) == setup(b)
}

/// The reason, when an escalation of `cycle` was decided with `abort` (on any host).
async fn aborted_in(bus: &Bus, cycle: &CycleId) -> Result<Option<String>, BusError> {
    Ok(bus.escalation_records().await?.into_iter().find_map(|rec| {
        let d = rec.decision.filter(|d| d.action == RemedyAction::Abort && rec.cycle == cycle.as_str())?;
        Some(format!("cycle aborted by {} after {}: {}", d.by, rec.model, rec.failure))
    }))
}

/// Model `i`'s position from 1 among the models this host runs, and how many those are.
fn share_position(report: &VerificationReport, host: &str, i: usize) -> (u32, u32) {
    let mine: Vec<usize> = (0..report.plan.models.len()).filter(|&j| report.runs_here(host, j)).collect();
    let at = mine.iter().position(|&j| j == i).map_or(i as u32 + 1, |p| p as u32 + 1);
    (at, mine.len().max(at as usize) as u32)
}

/// The decode tokens/s memory bandwidth allows for `model` on this host: the Reader's predicted
/// weights and GPU share against the host's measured bandwidths (a host with GPUs and no
/// predicted split is taken as all on the GPU). Sizes each request's time budget.
fn predicted_ceiling(report: &VerificationReport, model: &str) -> Option<f64> {
    let v = report.verdicts.iter().find(|v| v.model == model)?;
    let share = v.predicted_gpu_share().unwrap_or(if report.host.gpus.is_empty() { 0.0 } else { 1.0 });
    let (on_gpu, in_ram) = protocol::results::weights_split(v.weights_bytes?, share);
    let (gpu_bw, ram_bw) = report.host.bandwidths();
    protocol::results::roofline_decode_tps(on_gpu, in_ram, gpu_bw, ram_bw)
}

/// What the deployment told us, for the result.
struct DeployInfo {
    telemetry: Option<protocol::results::TelemetrySummary>,
    load_ms: f64,
    pull_ms: Option<f64>,
    launch: Option<protocol::launch::Launch>,
    engine_version: Option<String>,
    peak_ram: Option<u64>,
    peak_vram: Option<u64>,
    engine_vram: Option<u64>,
    layers: Option<String>,
    gpu_share: Option<f64>,
    engine_memory: Option<protocol::results::EngineMemory>,
    quantization: Option<String>,
    standard: Option<protocol::results::StandardResult>,
    digest: Option<String>,
    deployment: Vec<String>,
}

async fn request_failure(dep: &mut Deployed, what: &str, e: EngineError) -> AttemptError {
    let mut f = engine_failure(&e, what);
    if matches!(e, EngineError::Unreachable { .. }) {
        dep.settle_exit(Duration::from_secs(2)).await;
    }
    f.evidence = dep.evidence(e.engine_text().map(str::to_string)).await;
    if let Some(gone) = dep.docker_unreachable().await {
        // dockerd stopped or is restarting: the container stopped with it.
        f.class = FailureClass::EngineExited;
        f.message = format!("{what}: the engine's container went down with its Docker engine ({e}): {gone}");
    } else if let Some(st) = f.evidence.exit_status.clone() {
        f.class =
            if f.evidence.oom_killed == Some(true) { FailureClass::OomKilled } else { FailureClass::EngineExited };
        f.message = format!("{what}: the engine died ({st}) during the request: {e}");
    } else if f.evidence.oom_kills.is_some_and(|k| k > 0) || !f.evidence.oom_events.is_empty() {
        // A process inside the container (Ollama's runner) was OOM-killed while PID 1 lived on.
        f.class = FailureClass::OomKilled;
        f.message =
            format!("{what}: the OOM killer killed a process in the engine's container during the request: {e}");
    }
    f.target = Some(dep.target());
    dep.teardown().await;
    AttemptError::Failed(f)
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
            EngineKind::OpenAi => "openai".into(),
        },
        engine_version: info.and_then(|i| i.engine_version.clone()),
        model: m.model_ref().to_string(),
        model_digest: info.and_then(|i| i.digest.clone()),
        quantization: info.and_then(|i| i.quantization.clone()),
        context: s.effective.context,
        gpu_layers: info.and_then(|i| i.layers.clone()),
        gpu_weight_share: info.and_then(|i| i.gpu_share),
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
        peak_vram_bytes: info.peak_vram,
        engine_vram_bytes: info.engine_vram,
        engine_memory: info.engine_memory.clone(),
        standard: info.standard.clone(),
        manifest: manifest(report, s, &s.model, Some(&info)),
        telemetry: info.telemetry.clone(),
        deployment: info.deployment.clone(),
        launch: info.launch.clone(),
        pull_ms: info.pull_ms,
        started_at,
        finished_at: now(),
        tune: None,
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
        engine_vram_bytes: None,
        engine_memory: None,
        standard: None,
        manifest: manifest(report, &s, m, None),
        telemetry: None,
        deployment: Vec::new(),
        launch: None,
        pull_ms: None,
        started_at: now(),
        finished_at: now(),
        tune: None,
    }
}

/// Why the rest of a cycle canceled with a partial report was not measured.
const PARTIAL: &str = protocol::results::PARTIAL_REPORT;

/// Whether a stored result is a cancel's placeholder: a model skipped for a partial report, or
/// one whose runs were cut short by the cancel.
fn is_cut_short(r: &ModelResult) -> bool {
    matches!(&r.status, ModelStatus::Skipped { reason }
        if reason == PARTIAL || reason.starts_with(protocol::results::CANCELED_AFTER))
}

/// The runs of model `i` measured so far (across attempts, engine restarts and Writer
/// restarts), with the settings they ran under: kept in the results bucket as each is measured,
/// so a resumed or redelivered cycle measures only what is missing.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct KeptRuns {
    settings: protocol::settings::Settings,
    runs: Vec<RunResult>,
}

fn kept_key(cycle: &CycleId, i: usize) -> String {
    format!("{cycle}.{i}.runs")
}

fn skipped(i: usize, m: &ModelSpec, report: &VerificationReport, reason: String) -> ModelResult {
    not_measured(i, m, report, ModelStatus::Skipped { reason })
}

fn failed(i: usize, m: &ModelSpec, report: &VerificationReport, reason: String) -> ModelResult {
    not_measured(i, m, report, ModelStatus::Failed { reason })
}

/// The sampler's latest figures as the event carries them.
fn live_sample(s: &host::telemetry::Snapshot) -> protocol::events::LiveSample {
    protocol::events::LiveSample {
        gpu_temp_c: s.gpu_temp_c,
        gpu_util_pct: s.gpu_util_pct,
        gpu_power_w: s.gpu_power_w,
        vram_used_bytes: s.vram_used_bytes,
        engine_mem_bytes: s.engine_mem_bytes,
        engine_cpu_pct: s.engine_cpu_pct,
        host_mem_available_bytes: s.host_mem_available_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::results::{FitVerdict, HostFacts};

    fn report(pull_ahead: bool, second_fit: Fit) -> VerificationReport {
        let plan = Plan::from_toml(&format!(
            r#"
name = "t"
[defaults]
pull_ahead = {pull_ahead}
[[models]]
name = "a"
engine = "ollama"
runtime = "process"
tag = "a:1b"
[[models]]
name = "b"
engine = "ollama"
runtime = "process"
tag = "b:1b"
[[models]]
name = "c"
engine = "llama-server"
runtime = "process"
model_path = "/c.gguf"
[[prompts]]
id = "p"
text = "hi"
"#
        ))
        .expect("valid plan");
        let verdict = |model: &str, fit| FitVerdict { fit, ..FitVerdict::unknown(model, "", "r".into()) };
        VerificationReport {
            verdicts: vec![verdict("a", Fit::Go), verdict("b", second_fit), verdict("c", Fit::Go)],
            plan,
            plan_hash: String::new(),
            plan_source: String::new(),
            host: HostFacts::default(),
            checks: Vec::new(),
            placement: None,
            concurrent_fit: None,
            gate: None,
        }
    }

    #[tokio::test]
    async fn an_abort_decided_for_any_host_of_the_cycle_is_found() {
        let server = handoffs::server::NatsServer::start().expect("nats-server (make nats)");
        let cfg = handoffs::ConnectConfig { url: server.url(), name: "writer-test".into(), ..Default::default() };
        let client = handoffs::connect(&cfg).await.expect("connect");
        let bus = Bus::open(client, Role::Writer, protocol::HostId::parse("b").expect("host")).await.expect("bus");
        let cycle = CycleId::parse("c1").expect("cycle");
        let rec = |id: &str, cycle: &str, action: Option<RemedyAction>| EscalationRecord {
            id: id.into(),
            cycle: cycle.into(),
            model: "big-model".into(),
            attempt: 1,
            failure: "out of memory".into(),
            class: protocol::results::FailureClass::OomKilled,
            diagnosis: String::new(),
            confidence: 1.0,
            evidence: Default::default(),
            options: Vec::new(),
            decision: action.map(|action| protocol::results::Decision {
                option: None,
                action,
                by: "operator".into(),
                at: String::new(),
            }),
            opened_at: String::new(),
        };
        bus.escalations.put("e1", &rec("e1", "c1", None)).await.expect("put");
        bus.escalations.put("e2", &rec("e2", "other", Some(RemedyAction::Abort))).await.expect("put");
        assert_eq!(aborted_in(&bus, &cycle).await.expect("read"), None, "undecided here, aborted elsewhere");
        bus.escalations.put("e3", &rec("e3", "c1", Some(RemedyAction::Abort))).await.expect("put");
        let reason = aborted_in(&bus, &cycle).await.expect("read").expect("aborted");
        assert!(reason.starts_with("cycle aborted by operator after big-model"), "{reason}");
    }

    #[test]
    fn a_model_is_counted_within_its_hosts_share() {
        let mut r = report(true, Fit::Go);
        assert_eq!(share_position(&r, "local", 1), (2, 3), "one host: the whole plan");
        let place = |host: &str| protocol::messages::ModelPlacement {
            index: 0,
            model: String::new(),
            host: host.into(),
            fit: Fit::Go,
            reason: String::new(),
            verdicts: Vec::new(),
        };
        r.placement = Some(protocol::messages::Placement {
            hosts: vec!["a".into(), "b".into()],
            models: vec![place("a"), place("b"), place("b")],
            concurrent: None,
            concurrent_reason: String::new(),
            round: 0,
        });
        assert_eq!(share_position(&r, "b", 1), (1, 2));
        assert_eq!(share_position(&r, "b", 2), (2, 2));
        assert_eq!(share_position(&r, "a", 0), (1, 1));
    }

    #[test]
    fn pull_ahead_targets_only_the_next_ollama_model_that_will_run() {
        let r = report(true, Fit::Go);
        assert_eq!(pull_ahead_target(&r, "local", 0).map(|m| m.name.as_str()), Some("b"));
        assert!(pull_ahead_target(&r, "local", 1).is_none(), "c is not an Ollama model");
        assert!(pull_ahead_target(&r, "local", 2).is_none(), "nothing after the last model");
        assert!(pull_ahead_target(&report(false, Fit::Go), "local", 0).is_none(), "off by default");
        assert!(pull_ahead_target(&report(true, Fit::NoGo), "local", 0).is_none(), "b will be skipped as a no-go");
        let mut other_store = report(true, Fit::Go);
        other_store.plan.models[1].env.insert("OLLAMA_MODELS".into(), "/elsewhere".into());
        assert!(pull_ahead_target(&other_store, "local", 0).is_none(), "b lives in another store");
    }
}
