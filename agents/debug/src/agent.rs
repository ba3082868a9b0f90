//! Debug's phase: each escalation becomes a record (evidence, diagnosis, ranked options), then a
//! decision by policy, by the operator, or by the ask timeout; the troubleshooting log entry
//! goes on to Documentation.
//!
//! Records live in the escalations bucket, so an escalation waiting for the operator survives a
//! restart of Debug or Main; pending asks are rebuilt from the bucket at start.

use crate::catalogue::{Diagnosis, auto_choice, diagnose};
use handoffs::{Bus, BusError, ConsumeStats, HandleError, Handled, Handler, consume};
use protocol::events::{Event, EventBody};
use protocol::ids::derive_id;
use protocol::messages::{Escalation, OperatorDecision, TroubleshootingLog};
use protocol::plan::{FailedChecks, PolicyAction};
use protocol::results::{Decision, EscalationRecord, Evidence, FailureClass, RemedyAction};
use protocol::{CycleId, Envelope, Payload, Role};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use uuid::Uuid;

/// Runs Debug until `shutdown` turns true.
pub async fn run(bus: Bus, shutdown: watch::Receiver<bool>, stats: Arc<ConsumeStats>) -> Result<(), BusError> {
    let debug = Debug { bus: bus.clone() };
    let timer = {
        let d = Debug { bus: bus.clone() };
        let mut sd = shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = sd.changed() => break,
                }
                if let Err(error) = d.expire_asks().await {
                    tracing::warn!(message = "Could not check waiting escalations.", %error);
                }
            }
        })
    };
    let r = consume(&bus, shutdown, stats, &debug).await;
    timer.abort();
    r
}

struct Debug {
    bus: Bus,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Describes an action for events and logs.
pub fn describe(a: &RemedyAction) -> String {
    match a {
        RemedyAction::Retry { set } => {
            format!("retry with {}", set.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))
        }
        RemedyAction::CoolDown { seconds } => format!("cool down {seconds} s, then retry"),
        RemedyAction::Skip => "skip the model".into(),
        RemedyAction::Abort => "abort the cycle".into(),
        RemedyAction::Continue => "continue despite the failed checks".into(),
        RemedyAction::Reverify => "re-verify the host".into(),
    }
}

/// Evidence Debug reads itself — the container's state and logs, host memory and the GPU —
/// beside what the Writer sent.
async fn gather(mut ev: Evidence, attempt: u32, target: Option<&str>) -> Evidence {
    ev.attempts = attempt.saturating_sub(1);
    if let Some(id) = target.and_then(|t| t.strip_prefix("container:"))
        && let Ok(docker) = host::docker::DockerRuntime::connect().await
    {
        if let Ok(st) = docker.state(id).await {
            ev.oom_killed = Some(st.oom_killed || ev.oom_killed == Some(true));
            if !st.running {
                ev.exit_status = st.exit_code.map(|c| format!("exit status {c}")).or(ev.exit_status);
            }
        }
        // A runner killed inside a live container leaves Docker's flag false; the cgroup counts it.
        if let Ok(Some(kills)) = docker.oom_kills(id).await {
            ev.oom_kills = Some(kills.max(ev.oom_kills.unwrap_or(0)));
        }
        if let Ok(lines) = docker.log_tail(id, 30).await
            && !lines.is_empty()
        {
            ev.log_tail = lines;
        }
    }
    if let Ok(m) = host::system::meminfo() {
        ev.host_ram_available = Some(m.available);
    }
    let gpu = tokio::task::spawn_blocking(|| host::gpu::Gpus::probe().sample().ok()).await.ok().flatten();
    if let Some(s) = gpu.and_then(|v| v.into_iter().next()) {
        ev.gpu_free = Some(s.mem_free);
        ev.gpu_temp_c = s.temp_c;
    }
    ev
}

impl Handler for Debug {
    async fn handle(&self, env: Envelope) -> Handled {
        let Envelope { id, cycle, payload, .. } = env;
        match payload {
            Payload::Escalation(e) => self.escalation(id, &cycle, *e).await,
            Payload::OperatorDecision(d) => self.operator(&cycle, d).await,
            Payload::TuneRequest(r) => self.tune(id, &cycle, &r).await,
            other => Err(HandleError::Reject(format!("debug does not take `{}` packages", other.kind()))),
        }
    }
}

impl Debug {
    /// A tuning round: the planner's proposal, kept as `tune.<request id>` in the escalations
    /// bucket (create-if-absent: a redelivered request finds it and changes nothing), where the
    /// Writer polls for it.
    async fn tune(&self, id: Uuid, cycle: &CycleId, req: &protocol::tune::TuneRequest) -> Handled {
        let key = format!("tune.{id}");
        if self.bus.escalations.get::<protocol::tune::TuneProposal>(&key).await.map_err(HandleError::from)?.is_some() {
            return Ok(());
        }
        let p = crate::tune::propose(req);
        match (&p.next, &p.conclusion) {
            (Some(t), _) => {
                tracing::info!(message = "Tuning: next candidate.", model = %req.model, trial = t.number, stage = %t.stage, config = %t.config.describe())
            }
            (None, Some(c)) => tracing::info!(message = "Tuning concluded.", model = %req.model, outcome = %c.outcome),
            (None, None) => {}
        }
        let proposal = protocol::tune::TuneProposal {
            request: id.to_string(),
            cycle: cycle.to_string(),
            model: req.model.clone(),
            next: p.next,
            skipped: p.skipped,
            notes: p.notes,
            conclusion: p.conclusion,
            decided_at: now(),
        };
        self.bus.escalations.create(&key, &proposal).await.map_err(HandleError::from)?;
        Ok(())
    }

    async fn escalation(&self, id: Uuid, cycle: &CycleId, e: Escalation) -> Handled {
        let key = id.to_string();
        if let Some(existing) = self.bus.escalations.get::<EscalationRecord>(&key).await.map_err(HandleError::from)? {
            // Redelivered: the record is the truth; make sure its log went on.
            if existing.decision.is_some() {
                self.hand_on(cycle, &existing).await.map_err(HandleError::from)?;
            }
            return Ok(());
        }
        let evidence = gather(e.evidence.clone(), e.attempt, e.target.as_deref()).await;
        let d: Diagnosis = diagnose(&e, &evidence);
        let policy = e.policy.action_for(d.class);
        let decision = match (d.class, policy) {
            // Failed host checks follow `policy.failed_checks`.
            (FailureClass::HostCheck, _) => match e.policy.failed_checks {
                FailedChecks::Ask => None,
                FailedChecks::Continue => Some((RemedyAction::Continue, "continue")),
                FailedChecks::Abort => Some((RemedyAction::Abort, "abort")),
            }
            .map(|(action, name)| {
                let option = d.options.iter().find(|o| o.action == action).map(|o| o.number);
                Decision { option, action, by: format!("policy:failed_checks={name}"), at: now() }
            }),
            (_, policy) => match policy {
                PolicyAction::Auto => {
                    let o = auto_choice(&d, e.attempt, e.max_attempts);
                    Some(Decision {
                        option: Some(o.number),
                        action: o.action.clone(),
                        by: "policy:auto".into(),
                        at: now(),
                    })
                }
                PolicyAction::Skip => {
                    Some(Decision { option: None, action: RemedyAction::Skip, by: "policy:skip".into(), at: now() })
                }
                PolicyAction::Ask => None,
            },
        };
        let rec = EscalationRecord {
            id: key.clone(),
            cycle: cycle.to_string(),
            model: e.model.clone(),
            attempt: e.attempt,
            failure: e.failure.clone(),
            class: d.class,
            diagnosis: d.text.clone(),
            confidence: d.confidence,
            evidence,
            options: d.options.clone(),
            decision,
            opened_at: now(),
        };
        self.bus.escalations.create(&key, &rec).await.map_err(HandleError::from)?;
        // The ask timeout is counted from the record's creation; keep it beside the record.
        let ask_key = format!("ask.{key}");
        if rec.decision.is_none() {
            let deadline =
                chrono::Utc::now() + chrono::Duration::seconds(e.policy.ask_timeout_s.min(30 * 86_400) as i64);
            let auto = auto_choice(&d, e.attempt, e.max_attempts);
            let pending =
                PendingAsk { id: key.clone(), cycle: cycle.to_string(), deadline, default_option: auto.number };
            self.bus.escalations.put(&ask_key, &pending).await.map_err(HandleError::from)?;
        }
        self.bus
            .event_best_effort(Event::new(
                cycle.clone(),
                Role::Debug,
                EventBody::EscalationOpened {
                    id: key.clone(),
                    model: e.model.clone(),
                    diagnosis: d.text.clone(),
                    awaiting_operator: rec.decision.is_none(),
                },
            ))
            .await;
        if rec.decision.is_some() {
            self.decided(cycle, &rec).await.map_err(HandleError::from)?;
        }
        Ok(())
    }

    async fn operator(&self, cycle: &CycleId, d: OperatorDecision) -> Handled {
        let Some(rec) = self.bus.escalations.get::<EscalationRecord>(&d.escalation).await.map_err(HandleError::from)?
        else {
            return Err(HandleError::Reject(format!("no escalation `{}`", d.escalation)));
        };
        if rec.decision.is_some() {
            tracing::info!(message = "Escalation already decided; operator decision ignored.", id = %d.escalation);
            return Ok(());
        }
        let action = match (d.option, d.action) {
            (_, Some(a)) => a,
            (Some(n), None) => match rec.options.iter().find(|o| o.number == n) {
                Some(o) => o.action.clone(),
                None => return Err(HandleError::Reject(format!("escalation `{}` has no option {n}", d.escalation))),
            },
            (None, None) => {
                return Err(HandleError::Reject("an operator decision names neither an option nor an action".into()));
            }
        };
        self.decide(
            cycle,
            &d.escalation,
            Decision { option: d.option, action, by: format!("operator:{}", d.by), at: now() },
        )
        .await
        .map_err(HandleError::from)
    }

    /// Records a decision if none was made yet (compare-and-set), then hands the log on.
    async fn decide(&self, cycle: &CycleId, id: &str, decision: Decision) -> Result<(), BusError> {
        let mut applied = false;
        let rec = self
            .bus
            .escalations
            .update::<EscalationRecord, _>(id, |r| {
                applied = false;
                if r.decision.is_none() {
                    r.decision = Some(decision.clone());
                    applied = true;
                }
            })
            .await?;
        let _ = self.bus.escalations.store_delete(&format!("ask.{id}")).await;
        if let (true, Some(rec)) = (applied, rec) {
            self.decided(cycle, &rec).await?;
        }
        Ok(())
    }

    async fn decided(&self, cycle: &CycleId, rec: &EscalationRecord) -> Result<(), BusError> {
        if let Some(d) = &rec.decision {
            self.bus
                .event_best_effort(Event::new(
                    cycle.clone(),
                    Role::Debug,
                    EventBody::EscalationDecided {
                        id: rec.id.clone(),
                        decision: describe(&d.action),
                        by: d.by.clone(),
                    },
                ))
                .await;
        }
        self.hand_on(cycle, rec).await
    }

    async fn hand_on(&self, cycle: &CycleId, rec: &EscalationRecord) -> Result<(), BusError> {
        let parent = Uuid::parse_str(&rec.id).unwrap_or_else(|_| Uuid::now_v7());
        let env = Envelope {
            id: derive_id(parent, "troubleshooting-log", 0),
            ..Envelope::new(
                cycle.clone(),
                Role::Debug,
                Role::Documentation,
                Some(parent),
                Payload::TroubleshootingLog(Box::new(TroubleshootingLog { entry: rec.clone() })),
            )
        };
        self.bus.publish(&env).await.map(|_| ())
    }

    /// Applies the default to asks whose operator did not answer in time.
    async fn expire_asks(&self) -> Result<(), BusError> {
        let now_t = chrono::Utc::now();
        for key in self.bus.escalations.keys().await? {
            if !key.starts_with("ask.") {
                continue;
            }
            let Some(p) = self.bus.escalations.get::<PendingAsk>(&key).await? else { continue };
            if p.deadline > now_t {
                continue;
            }
            let Some(rec) = self.bus.escalations.get::<EscalationRecord>(&p.id).await? else { continue };
            let action = rec
                .options
                .iter()
                .find(|o| o.number == p.default_option)
                .map(|o| o.action.clone())
                .unwrap_or(RemedyAction::Skip);
            let cycle = CycleId::parse(&p.cycle).unwrap_or_else(|_| CycleId::generate(now_t));
            self.decide(
                &cycle,
                &p.id,
                Decision { option: Some(p.default_option), action, by: "timeout-default".into(), at: now() },
            )
            .await?;
        }
        Ok(())
    }
}

/// An escalation waiting for the operator, with its deadline and the default it falls back to.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct PendingAsk {
    id: String,
    cycle: String,
    deadline: chrono::DateTime<chrono::Utc>,
    default_option: u32,
}
