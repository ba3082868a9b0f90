//! The tuning phase of one model, the Writer's side: ask Debug for a candidate (`tune_request`),
//! wait for its proposal in the escalations bucket (`tune.<request id>`, polled as decisions
//! are), measure the candidate on short runs with the engine restarted under its settings, and
//! ask again with the result, until Debug concludes; then restore the winner and measure it once
//! more. The Writer never chooses a candidate itself. A cancel stops the search and keeps every
//! trial measured so far in the result.

use super::{Writer, short_nonce};
use crate::deploy::deploy;
use crate::measure::{run_result, summarise, with_nonce};
use crate::settings::Settings;
use handoffs::HandleError;
use host::engine::GenRequest;
use host::telemetry::Sampler;
use protocol::events::{EventBody, Step};
use protocol::ids::derive_id;
use protocol::launch::Launch;
use protocol::messages::VerificationReport;
use protocol::operator::CycleRecord;
use protocol::plan::{ModelSpec, TuneSpec};
use protocol::results::{AnswerAnalysis, ModelResult, RunResult};
use protocol::tune::{Trial, TrialVerdict, TuneEvidence, TuneProposal, TuneRequest, TuneResult};
use protocol::{CycleId, Envelope, Payload, Role};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How long the Writer waits for Debug's proposal before it stops the search.
const PROPOSAL_WAIT: Duration = Duration::from_secs(120);

const GIB: f64 = (1u64 << 30) as f64;

/// What the Reader and the model's measurement tell Debug.
fn evidence(report: &VerificationReport, spec: &TuneSpec, s: &Settings, measured: &ModelResult) -> TuneEvidence {
    let v = report.verdicts.iter().find(|v| v.model == s.model.name);
    let gpu = report.host.gpus.first();
    let limit_gb = spec.memory_limit_gb.or(s.effective.memory_limit_gb);
    TuneEvidence {
        planned: protocol::tune::TuneConfig {
            gpu_layers: s.effective.gpu_layers,
            threads: s.effective.threads,
            batch: s.effective.batch,
            kv_type: s.effective.kv_cache_type,
        },
        context: s.effective.context,
        cpus: report.host.cpus,
        gpus: report.host.gpus.len() as u32,
        vram_free_bytes: gpu.map(|g| g.vram_total.saturating_sub(g.vram_used)),
        layers_total: v.and_then(|v| v.gpu_layers).map(|(_, total)| total),
        predicted_gpu_layers: v.and_then(|v| v.gpu_layers).map(|(on, _)| on),
        weights_bytes: v.and_then(|v| v.weights_bytes),
        kv_bytes: v.and_then(|v| v.kv_bytes),
        compute_bytes: v.and_then(|v| v.compute_bytes),
        predicted_ram_bytes: v.and_then(|v| v.ram_bytes),
        measured_ram_bytes: measured.peak_ram_bytes,
        memory_limit_bytes: limit_gb.map(|gb| (gb * GIB) as u64),
        max_temp_c: report.plan.tune_max_temp_c(),
    }
}

/// The search so far, stored in the results bucket under `<cycle>.<i>.tune` after every round:
/// a restarted Writer goes on from the next round with every trial measured so far, instead of
/// searching again. A round's request id is derived from the round, so the proposal Debug
/// already answered for a round is read back, not asked again.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct TuneProgress {
    /// Rounds completed.
    round: u32,
    /// Seconds the search had run (its `max_minutes` counts them).
    elapsed_s: f64,
    /// Trials, notes and the conclusion so far.
    result: TuneResult,
    /// The baseline's launch (the guide's command if no winner is restored).
    winner_launch: Option<Launch>,
}

fn progress_key(cycle: &CycleId, i: usize) -> String {
    format!("{cycle}.{i}.tune")
}

/// The event of a trial's start, for `status` and the progress lines.
fn trial_started(t: &Trial, max_trials: u32) -> Step {
    Step::TuneTrial { number: t.number, max_trials, stage: t.stage.clone(), config: t.config.describe() }
}

/// The event of a trial's end, for `status` and the progress lines.
fn trial_done(t: &Trial) -> Step {
    Step::TuneTrialDone {
        number: t.number,
        verdict: t.verdict.as_str().to_string(),
        decode_tps: t.decode_tps.as_ref().map(|s| s.mean),
        ttft_ms: t.ttft_ms.as_ref().map(|s| s.mean),
    }
}

/// A measured trial: its figures, and the launch it ran with.
struct Measured {
    trial: Trial,
    launch: Option<Launch>,
}

impl Writer {
    /// Tunes model `i` after its measurement `measured`. `Ok(None)` when the plan does not tune
    /// it. Each trial's start and end, and the search's end, are events (`status` shows them).
    pub(super) async fn tune(
        &self,
        pkg: Uuid,
        cycle: &CycleId,
        report: &VerificationReport,
        i: usize,
        m: &ModelSpec,
        measured: &ModelResult,
    ) -> Result<Option<TuneResult>, HandleError> {
        let out = self.search(pkg, cycle, report, i, m, measured).await?;
        if let Some(t) = &out {
            let outcome = match (&t.stopped, &t.conclusion) {
                (Some(why), _) => why.clone(),
                (None, Some(c)) => c.outcome.clone(),
                (None, None) => format!("ended after {} trial(s) without a conclusion", t.trials.len()),
            };
            self.step(cycle, m, Step::TuneDone { outcome }).await;
        }
        Ok(out)
    }

    /// The search itself: Debug's proposals measured until it concludes, then the winner restored.
    async fn search(
        &self,
        pkg: Uuid,
        cycle: &CycleId,
        report: &VerificationReport,
        i: usize,
        m: &ModelSpec,
        measured: &ModelResult,
    ) -> Result<Option<TuneResult>, HandleError> {
        let plan = &report.plan;
        let Some(spec) = plan.tune.as_ref().filter(|t| t.tunes(plan, &m.name)) else { return Ok(None) };
        let Some(prompt) =
            spec.prompt.as_ref().and_then(|id| plan.prompts.iter().find(|p| &p.id == id)).or(plan.prompts.first())
        else {
            return Ok(None);
        };
        let planned = Settings::planned(plan, m);
        let ev = evidence(report, spec, &planned, measured);
        let key = progress_key(cycle, i);
        let kept = self.bus.results.get::<TuneProgress>(&key).await.map_err(HandleError::from)?;
        let rec: Option<CycleRecord> = self.bus.cycles.get(cycle.as_str()).await.map_err(HandleError::from)?;
        if kept.is_none() && rec.is_some_and(|r| r.tuning_stopped) {
            return Ok(Some(TuneResult {
                goal: spec.goal,
                prompt: prompt.id.clone(),
                repetitions: spec.repetitions,
                stopped: Some(
                    "not tuned: the operator stopped the tuning (`cancel --tuning`) before this model's search".into(),
                ),
                ..Default::default()
            }));
        }
        if let Some(k) = &kept {
            tracing::info!(
                message = "Tuning resumed from the stored search.",
                model = %m.name,
                rounds = k.round,
                trials_kept = k.result.trials.len()
            );
        }
        let TuneProgress { round: done_rounds, elapsed_s, result, mut winner_launch } =
            kept.unwrap_or_else(|| TuneProgress {
                result: TuneResult {
                    goal: spec.goal,
                    prompt: prompt.id.clone(),
                    repetitions: spec.repetitions,
                    ..Default::default()
                },
                ..Default::default()
            });
        let mut out = result;
        let now = Instant::now();
        let started = Duration::try_from_secs_f64(elapsed_s).ok().and_then(|d| now.checked_sub(d)).unwrap_or(now);
        let save = |round: u32, out: &TuneResult, winner_launch: &Option<Launch>| {
            let p = TuneProgress {
                round,
                elapsed_s: started.elapsed().as_secs_f64(),
                result: out.clone(),
                winner_launch: winner_launch.clone(),
            };
            let key = key.clone();
            async move {
                handoffs::wait_for_room("the tuning search so far", || self.bus.results.put(&key, &p))
                    .await
                    .map_err(HandleError::from)
            }
        };
        // Each round measures at most one candidate; skipped ones are bounded by the stages.
        let last_round = spec.max_trials.saturating_mul(4).saturating_add(16);
        let first_round = if out.conclusion.is_some() { last_round + 1 } else { done_rounds + 1 };
        for round in first_round..=last_round {
            let rec: Option<CycleRecord> = self.bus.cycles.get(cycle.as_str()).await.map_err(HandleError::from)?;
            if rec.as_ref().is_some_and(|r| r.state.stops_work()) {
                out.stopped = Some(format!(
                    "canceled by the operator after {} trial(s); the trials measured are kept",
                    out.trials.len()
                ));
                return Ok(Some(out));
            }
            let id = derive_id(pkg, &format!("tune-{i}"), round);
            let req = TuneRequest {
                model: m.name.clone(),
                index: i as u32,
                round,
                spec: spec.clone(),
                evidence: ev.clone(),
                trials: out.trials.clone(),
                elapsed_s: started.elapsed().as_secs_f64(),
                stop: rec.as_ref().filter(|r| r.tuning_stopped).map(|_| {
                    let n = out.trials.iter().filter(|t| t.verdict != TrialVerdict::Skipped).count();
                    format!("stopped by the operator (`cancel --tuning`) after {n} trial(s) measured")
                }),
            };
            let env = Envelope {
                id,
                ..Envelope::new(
                    cycle.clone(),
                    Role::Writer,
                    Role::Debug,
                    Some(pkg),
                    Payload::TuneRequest(Box::new(req)),
                )
            };
            self.bus.publish(&env).await.map_err(HandleError::from)?;
            let Some(proposal) = self.await_proposal(cycle, &id.to_string()).await? else {
                out.stopped = Some(format!(
                    "stopped after {} trial(s): canceled by the operator, or no proposal from Debug within {} s; the trials measured are kept",
                    out.trials.len(),
                    PROPOSAL_WAIT.as_secs()
                ));
                return Ok(Some(out));
            };
            for n in proposal.notes {
                if !out.notes.contains(&n) {
                    out.notes.push(n);
                }
            }
            out.trials.extend(proposal.skipped);
            if let Some(c) = proposal.conclusion {
                out.conclusion = Some(c);
                save(round, &out, &winner_launch).await?;
                break;
            }
            let Some(next) = proposal.next else { break };
            tracing::info!(message = "Tuning trial.", model = %m.name, trial = next.number, config = %next.config.describe());
            self.step(cycle, m, trial_started(&next, spec.max_trials)).await;
            let done = self.trial(cycle, report, m, spec, prompt, next, &ev).await?;
            self.step(cycle, m, trial_done(&done.trial)).await;
            let canceled = done.trial.verdict == TrialVerdict::Canceled;
            if done.trial.stage == "baseline" {
                winner_launch = done.launch.clone();
            }
            out.trials.push(done.trial);
            if canceled {
                out.stopped = Some(format!(
                    "canceled by the operator during trial {}; the trials measured are kept",
                    out.trials.len()
                ));
                return Ok(Some(out));
            }
            save(round, &out, &winner_launch).await?;
        }
        // Restore the winner: the engine started once more with its settings and measured again;
        // that launch is the deployment guide's command.
        let winner = out.conclusion.as_ref().and_then(|c| c.winner).and_then(|n| out.trial(n)).cloned();
        if let Some(w) = winner {
            let mut again = w.clone();
            again.stage = "confirmation".into();
            again.why = format!("trial {} restored at the end of the search and measured again", w.number);
            self.step(cycle, m, trial_started(&again, spec.max_trials)).await;
            let done = self.trial(cycle, report, m, spec, prompt, again, &ev).await?;
            self.step(cycle, m, trial_done(&done.trial)).await;
            out.launch = done.launch.or(winner_launch);
            out.confirmation = Some(done.trial);
        }
        Ok(Some(out))
    }

    async fn step(&self, cycle: &CycleId, m: &ModelSpec, step: Step) {
        self.event(cycle, EventBody::Step { model: m.name.clone(), step }).await;
    }

    /// Waits for Debug's proposal. `Ok(None)` when the cycle was canceled or Debug did not answer.
    async fn await_proposal(&self, cycle: &CycleId, request: &str) -> Result<Option<TuneProposal>, HandleError> {
        let key = format!("tune.{request}");
        let start = Instant::now();
        loop {
            if let Some(p) = self.bus.escalations.get::<TuneProposal>(&key).await.map_err(HandleError::from)? {
                return Ok(Some(p));
            }
            if start.elapsed() > PROPOSAL_WAIT || self.canceled(cycle).await.map_err(HandleError::from)? {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// One trial: the engine started with the candidate's settings, one warm-up, the tuning
    /// prompt `spec.repetitions` times with fresh nonces while the sampler runs, the engine
    /// stopped. A failure is the trial's verdict, never an error of the cycle.
    #[allow(clippy::too_many_arguments)]
    async fn trial(
        &self,
        cycle: &CycleId,
        report: &VerificationReport,
        m: &ModelSpec,
        spec: &TuneSpec,
        prompt: &protocol::plan::PromptSpec,
        mut t: Trial,
        ev: &TuneEvidence,
    ) -> Result<Measured, HandleError> {
        let plan = &report.plan;
        let started = Instant::now();
        let fail = |mut t: Trial, note: String, started: Instant| {
            t.verdict = TrialVerdict::Failed;
            t.note = note;
            t.seconds = started.elapsed().as_secs_f64();
            Ok(Measured { trial: t, launch: None })
        };
        let mut s = Settings::planned(plan, m);
        for change in t.config.changes() {
            if let Err(e) = s.apply(&change) {
                return fail(t, format!("the candidate's settings could not be applied: {e}"), started);
            }
        }
        let no_steps = |_: protocol::events::Step| {};
        let mut dep = match deploy(
            cycle,
            self.bus.host.as_str(),
            &s,
            &self.cfg.run_dir,
            plan.host.model_store.as_deref(),
            &no_steps,
        )
        .await
        {
            Ok(d) => d,
            Err(f) => return fail(t, format!("the engine did not start: {}", f.message), started),
        };
        let request = |text: String| GenRequest {
            max_tokens: spec.max_tokens.unwrap_or(plan.max_tokens_for(prompt)),
            ..dep.request(plan, &s, prompt, text)
        };
        let warm = GenRequest { max_tokens: 16, ..request(with_nonce("Say hello.", &short_nonce())) };
        if let Err(e) = dep.generate(&warm).await {
            let ev = dep.evidence(e.engine_text().map(str::to_string)).await;
            dep.teardown().await;
            let oom = if ev.oom_killed == Some(true) { " (killed for memory)" } else { "" };
            return fail(t, format!("the warm-up failed{oom}: {e}"), started);
        }
        let launch = dep.launch_record(&request(prompt.text.clone()));
        let sampler = Sampler::start(dep.telemetry_target(), plan.defaults.sample_hz, self.gpus.clone());
        let mut runs: Vec<RunResult> = Vec::new();
        let mut tokens = 0u64;
        for rep in 1..=spec.repetitions {
            if self.canceled(cycle).await.map_err(HandleError::from)? {
                dep.teardown().await;
                t.verdict = TrialVerdict::Canceled;
                t.note = format!("canceled after {} of {} run(s)", runs.len(), spec.repetitions);
                t.seconds = started.elapsed().as_secs_f64();
                return Ok(Measured { trial: t, launch: None });
            }
            let nonce = short_nonce();
            match dep.generate(&request(with_nonce(&prompt.text, &nonce))).await {
                Ok(g) => {
                    let r = run_result(&prompt.id, rep, &nonce, &g, AnswerAnalysis::default(), None);
                    tokens += u64::from(r.output_tokens);
                    runs.push(r);
                }
                Err(e) => {
                    let ev = dep.evidence(e.engine_text().map(str::to_string)).await;
                    dep.teardown().await;
                    let how = match (&ev.exit_status, ev.oom_killed) {
                        (_, Some(true)) => " (killed for memory)".to_string(),
                        (Some(st), _) => format!(" (the engine died: {st})"),
                        _ => String::new(),
                    };
                    return fail(t, format!("run {rep} failed{how}: {e}"), started);
                }
            }
        }
        let (telemetry, _) = sampler.finish(tokens).await;
        let sampled_ram = telemetry.engine_mem_bytes.as_ref().map(|m| m.peak as u64);
        t.peak_ram_bytes = dep.peak_ram().max(sampled_ram);
        t.peak_vram_bytes = dep.vram().await.or(telemetry.vram_used_bytes.as_ref().map(|m| m.peak as u64));
        t.peak_temp_c = telemetry.gpu_temp_c.as_ref().map(|m| m.peak);
        dep.teardown().await;
        let summary = summarise(&runs, plan.defaults.cv_flag).into_iter().next();
        t.decode_tps = summary.as_ref().and_then(|p| p.client_decode_tps);
        t.prefill_tps = summary.as_ref().and_then(|p| p.engine_prefill_tps);
        t.ttft_ms = summary.as_ref().and_then(|p| p.ttft_ms);
        t.verdict = TrialVerdict::Measured;
        if let (Some(peak), Some(limit)) = (t.peak_ram_bytes, ev.memory_limit_bytes)
            && peak > limit
        {
            t.verdict = TrialVerdict::OverLimit;
            t.note = format!(
                "measured {:.2} GiB of engine memory, above the limit of {:.2} GiB",
                peak as f64 / GIB,
                limit as f64 / GIB
            );
        }
        if let (Some(temp), Some(max)) = (t.peak_temp_c, ev.max_temp_c)
            && temp > max
        {
            t.verdict = TrialVerdict::OverLimit;
            t.note = format!("the GPU reached {temp:.0} °C, above the limit of {max:.0} °C");
        }
        if t.figure(spec.goal).is_none() && t.verdict == TrialVerdict::Measured {
            t.verdict = TrialVerdict::Failed;
            t.note = "no figure for the goal: the answers were too short to time".into();
        }
        t.seconds = started.elapsed().as_secs_f64();
        Ok(Measured { trial: t, launch: Some(launch) })
    }
}
