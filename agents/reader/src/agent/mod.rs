//! The Reader's phase: measure the host, hold each figure to the plan's threshold, predict every
//! model's fit, and hand the verification report to the Writer.

mod allocation;
mod facts;
pub mod gate;
mod verdicts;

#[cfg(test)]
mod tests;

use crate::profile::HostProfile;
use handoffs::{Bus, BusError, ConsumeStats, HandleError, Handled, Handler, consume};
use protocol::events::{Event, EventBody, Phase};
use protocol::ids::derive_id;
use protocol::messages::{CheckGate, CyclePlan, VerificationReport};
use protocol::operator::CycleRecord;
use protocol::results::{Check, CheckStatus, HostFacts, RemedyAction};
use protocol::{CycleId, Envelope, Payload, Role};
use std::sync::Arc;
use tokio::sync::watch;
use uuid::Uuid;

pub use facts::{gpu_probe_check, host_facts, model_store, ollama_store};
pub use verdicts::{
    EndpointFigures, ask_endpoints, concurrent_fit, measured_capacity, plan_verdicts, plan_verdicts_with, verdicts,
};

/// Runs the Reader until `shutdown` turns true.
pub async fn run(bus: Bus, shutdown: watch::Receiver<bool>, stats: Arc<ConsumeStats>) -> Result<(), BusError> {
    run_with_profile(bus, None, shutdown, stats).await
}

/// Runs the Reader with fit predicted for a host profile instead of the measured capacity
/// (`threadcycle agent reader --host-profile hosts/….toml`); the host is still measured and
/// checked.
pub async fn run_with_profile(
    bus: Bus,
    profile: Option<HostProfile>,
    shutdown: watch::Receiver<bool>,
    stats: Arc<ConsumeStats>,
) -> Result<(), BusError> {
    let reader = Reader { bus: bus.clone(), profile };
    consume(&bus, shutdown, stats, &reader).await
}

struct Reader {
    bus: Bus,
    profile: Option<HostProfile>,
}

const GIB: f64 = (1u64 << 30) as f64;

fn gib(b: u64) -> String {
    format!("{:.1} GB", b as f64 / GIB)
}

fn check(name: &str, status: CheckStatus, measured: String, threshold: Option<String>, detail: String) -> Check {
    Check { name: name.into(), status, measured, threshold, detail }
}

fn env_lookup(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

impl Handler for Reader {
    async fn handle(&self, env: Envelope) -> Handled {
        let Envelope { id, cycle, payload, .. } = env;
        match payload {
            Payload::CyclePlan(p) => self.verify(id, &cycle, *p).await,
            other => Err(HandleError::Reject(format!("the reader does not take `{}` packages", other.kind()))),
        }
    }
}

impl Reader {
    async fn check_event(&self, cycle: &CycleId, c: &Check) {
        self.bus
            .event_best_effort(Event::new(
                cycle.clone(),
                Role::Reader,
                EventBody::CheckDone {
                    name: c.name.clone(),
                    status: format!("{:?}", c.status).to_lowercase(),
                    measured: c.measured.clone(),
                },
            ))
            .await;
    }

    /// Measures the host until no check fails or failed checks are answered: each round whose
    /// checks fail raises an escalation (id derived from the plan package and the round, so a
    /// redelivered plan finds its earlier answers) and waits for its decision. `None` when the
    /// cycle was canceled meanwhile.
    async fn verified(
        &self,
        pkg: Uuid,
        cycle: &CycleId,
        p: &CyclePlan,
        several: bool,
    ) -> Result<Option<(HostFacts, Vec<Check>, Option<CheckGate>)>, HandleError> {
        let mut escalations: Vec<String> = Vec::new();
        for round in 1u32.. {
            let (facts, checks) = host_facts(&p.plan, &p.host, true).await;
            for c in &checks {
                self.check_event(cycle, c).await;
            }
            let failed = gate::failed(&checks);
            if failed.is_empty() {
                // Passing after a re-verification: the escalations stay in the report's log.
                let g = (!escalations.is_empty()).then(|| CheckGate {
                    escalations: escalations.clone(),
                    failed: Vec::new(),
                    action: RemedyAction::Reverify,
                    by: "re-verification".into(),
                    affected: Vec::new(),
                });
                return Ok(Some((facts, checks, g)));
            }
            let affected = gate::affected_by(&p.plan, &failed);
            let esc = derive_id(pkg, "failed-checks", round);
            let e = gate::escalation(&p.plan, several.then_some(p.host.as_str()), &failed, &affected, round);
            let env = Envelope {
                id: esc,
                ..Envelope::new(cycle.clone(), Role::Reader, Role::Debug, Some(pkg), Payload::Escalation(Box::new(e)))
            };
            self.bus.publish(&env).await.map_err(HandleError::from)?;
            escalations.push(esc.to_string());
            let Some(d) = gate::await_decision(&self.bus, cycle, &esc.to_string(), &p.plan).await? else {
                return Ok(None);
            };
            match gate::next(&d.action) {
                gate::Next::Reverify(wait) => tokio::time::sleep(wait).await,
                gate::Next::HandOn => {
                    let g = CheckGate {
                        escalations,
                        failed: failed.iter().map(|c| c.name.clone()).collect(),
                        action: d.action,
                        by: d.by,
                        affected: affected.iter().map(|i| *i as u32).collect(),
                    };
                    return Ok(Some((facts, checks, Some(g))));
                }
            }
        }
        Ok(None)
    }

    async fn verify(&self, pkg: Uuid, cycle: &CycleId, p: CyclePlan) -> Handled {
        let rec: Option<CycleRecord> = self.bus.cycles.get(cycle.as_str()).await.map_err(HandleError::from)?;
        if rec.is_some_and(|r| r.state.stops_work()) {
            return Ok(());
        }
        self.bus
            .event_best_effort(Event::new(
                cycle.clone(),
                Role::Reader,
                EventBody::PhaseStarted { phase: Phase::Verifying },
            ))
            .await;
        // Several hosts: the report goes to Main, which places the models.
        let several = p.hosts.len() > 1;
        let Some((facts, mut checks, gate)) = self.verified(pkg, cycle, &p, several).await? else {
            return Ok(());
        };
        let capacity = match &self.profile {
            Some(prof) => {
                checks.push(check(
                    "host.profile",
                    CheckStatus::Pass,
                    format!("fit predicted for host profile `{}`", prof.name),
                    None,
                    format!(
                        "{} GiB VRAM, {} GiB RAM{}: the predictions below use the profile, not this machine's free memory",
                        prof.vram_gb,
                        prof.ram_gb,
                        prof.container_limit_gb.map(|l| format!(", container limit {l} GiB")).unwrap_or_default()
                    ),
                ));
                if let Some(c) = checks.last() {
                    self.check_event(cycle, c).await;
                }
                prof.capacity()
            }
            None => measured_capacity(&facts),
        };
        let shown = ask_endpoints(&p.plan).await;
        let (verdicts, model_checks) = plan_verdicts_with(&p.plan, &capacity, &shown);
        for c in &model_checks {
            self.check_event(cycle, c).await;
        }
        checks.extend(model_checks);
        let report = VerificationReport {
            plan: p.plan.clone(),
            plan_hash: p.plan_hash,
            plan_source: p.plan_source,
            host: facts,
            checks,
            verdicts,
            placement: None,
            concurrent_fit: if several { concurrent_fit(&p.plan, &capacity) } else { None },
            gate,
        };
        let env = Envelope {
            id: derive_id(pkg, "verification-report", 0),
            ..Envelope::new(
                cycle.clone(),
                Role::Reader,
                if several { Role::Main } else { Role::Writer },
                Some(pkg),
                Payload::VerificationReport(Box::new(report)),
            )
        };
        self.bus.publish(&env).await.map_err(HandleError::from)?;
        Ok(())
    }
}
