//! Failed host checks gate the cycle: before the report goes on (and so before anything is
//! deployed), every check that failed is escalated to Debug under the plan's
//! `policy.failed_checks`, and the Reader waits for the answer: continue anyway, fix and
//! re-verify (the checks run again), skip the models the failures affect, or abort. A check that
//! only warns, or could not be measured, never gates.

use super::facts::downloads_needed;
use handoffs::{Bus, BusError};
use protocol::messages::Escalation;
use protocol::plan::{GpuRequest, ModelSpec, Plan, Runtime};
use protocol::results::{Check, CheckStatus, Decision, EscalationRecord, Evidence, FailureClass, RemedyAction};
use protocol::settings::Settings;
use protocol::{CycleId, operator::CycleRecord};
use std::time::Duration;

/// The checks that stop the cycle until answered: those that failed.
pub fn failed(checks: &[Check]) -> Vec<&Check> {
    checks.iter().filter(|c| c.status == CheckStatus::Fail).collect()
}

/// Plan indices of the models a failed check affects: a model's own engine or image check, the
/// models that use a GPU for the GPU checks, the Docker models for the Docker engine and the
/// allocation test, the models still to download for the disk checks; every model for the rest
/// (RAM), and for any check whose own models the plan does not have.
pub fn affected(plan: &Plan, check: &str) -> Vec<usize> {
    let pick = |f: &dyn Fn(&ModelSpec) -> bool| -> Vec<usize> {
        plan.models.iter().enumerate().filter(|(_, m)| f(m)).map(|(i, _)| i).collect()
    };
    let docker = |m: &ModelSpec| m.runtime == Runtime::Docker;
    let gpu_container = |m: &ModelSpec| docker(m) && m.gpus.as_ref().is_some_and(|g| *g != GpuRequest::None);
    let picked = if let Some(name) = check.strip_prefix("engine.").or_else(|| check.strip_prefix("image.")) {
        pick(&|m| m.name == name)
    } else if check == "docker.gpu" {
        pick(&gpu_container)
    } else if check == "gpu" || check.starts_with("gpu") {
        // A host-process engine uses the host's GPU as it finds it.
        pick(&|m| gpu_container(m) || m.runtime == Runtime::Process)
    } else if check == "docker.engine" || check == "memory.allocatable" {
        pick(&docker)
    } else if check.starts_with("disk.") {
        let needed: Vec<String> = downloads_needed(plan).into_iter().map(|(tag, _)| tag).collect();
        pick(&|m| m.runtime != Runtime::Endpoint && m.tag.as_ref().is_some_and(|t| needed.contains(t)))
    } else {
        Vec::new()
    };
    if picked.is_empty() { (0..plan.models.len()).collect() } else { picked }
}

/// Every model the failed checks affect, in plan order, each once.
pub fn affected_by(plan: &Plan, failed: &[&Check]) -> Vec<usize> {
    let mut out: Vec<usize> = failed.iter().flat_map(|c| affected(plan, &c.name)).collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// One failed check in words: `disk.free: 45.3 GB (needs ≥ 100000 GB): free under …`.
pub fn describe(c: &Check) -> String {
    let needs = c.threshold.as_ref().map(|t| format!(" (needs {t})")).unwrap_or_default();
    let detail = if c.detail.is_empty() { String::new() } else { format!(": {}", c.detail) };
    format!("{}: {}{needs}{detail}", c.name, c.measured)
}

/// The escalation that asks what to do about `failed` on `host` (named when the cycle runs on
/// several), affecting the models at `affected`.
pub fn escalation(plan: &Plan, host: Option<&str>, failed: &[&Check], affected: &[usize], round: u32) -> Escalation {
    let names: Vec<&str> = affected.iter().filter_map(|i| plan.models.get(*i)).map(|m| m.name.as_str()).collect();
    let on = host.map(|h| format!("on host {h}: ")).unwrap_or_default();
    let failure = format!("{on}{}", failed.iter().map(|c| describe(c)).collect::<Vec<_>>().join("; "));
    let first = affected.first().and_then(|i| plan.models.get(*i)).or(plan.models.first());
    Escalation {
        model: names.join(", "),
        attempt: round,
        failure,
        suspected: FailureClass::HostCheck,
        evidence: Evidence::default(),
        target: None,
        engine: first.map(|m| m.engine).unwrap_or(protocol::plan::EngineKind::LlamaServer),
        settings: first.map(|m| Settings::planned(plan, m)).unwrap_or_else(|| Settings::planned(plan, &plan.models[0])),
        max_attempts: plan.policy.max_attempts,
        policy: plan.policy.clone(),
        endpoint: None,
    }
}

/// What the Reader does with a decision on failed checks.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Run the checks again (after `wait`, for a cool-down).
    Reverify(Duration),
    /// Hand the report on with this decision.
    HandOn,
}

/// The Reader's step for a decision: re-verify for `Reverify` (and for a retry or cool-down an
/// operator named, which for a host means looking again), else hand the report on.
pub fn next(action: &RemedyAction) -> Next {
    match action {
        RemedyAction::Reverify | RemedyAction::Retry { .. } => Next::Reverify(Duration::ZERO),
        RemedyAction::CoolDown { seconds } => Next::Reverify(Duration::from_secs((*seconds).min(3600))),
        RemedyAction::Continue | RemedyAction::Skip | RemedyAction::Abort => Next::HandOn,
    }
}

/// Waits for the decision on escalation `id`; `Ok(None)` when the cycle was canceled meanwhile.
/// Debug decides by policy, operator or ask timeout; if Debug says nothing long after that, the
/// affected models are skipped rather than deployed unchecked.
pub async fn await_decision(bus: &Bus, cycle: &CycleId, id: &str, plan: &Plan) -> Result<Option<Decision>, BusError> {
    let limit = Duration::from_secs(plan.policy.ask_timeout_s.saturating_add(600));
    let start = tokio::time::Instant::now();
    loop {
        if let Some(rec) = bus.escalations.get::<EscalationRecord>(id).await?
            && let Some(d) = rec.decision
        {
            return Ok(Some(d));
        }
        let rec: Option<CycleRecord> = bus.cycles.get(cycle.as_str()).await?;
        if rec.is_some_and(|r| r.state.stops_work()) {
            return Ok(None);
        }
        if start.elapsed() > limit {
            return Ok(Some(Decision {
                option: None,
                action: RemedyAction::Skip,
                by: "reader (no decision from Debug in time)".into(),
                at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            }));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan::from_toml(
            "name = 'g'\n\
             [[models]]\nname = 'gpu-box'\nengine = 'ollama'\nruntime = 'docker'\nimage = 'ollama/ollama:0.12.6'\ntag = 'llama3.1:70b'\ngpus = 'all'\n\
             [[models]]\nname = 'cpu-box'\nengine = 'llama-server'\nruntime = 'docker'\nimage = 'x/llama:1'\nmodel_path = '/m/a.gguf'\n\
             [[models]]\nname = 'local'\nengine = 'llama-server'\nruntime = 'process'\nmodel_path = '/m/b.gguf'\n\
             [[prompts]]\nid = 'p'\ntext = 't'\n",
        )
        .expect("plan")
    }

    fn fail(name: &str) -> Check {
        Check {
            name: name.into(),
            status: CheckStatus::Fail,
            measured: "3.0 GB".into(),
            threshold: Some("≥ 100 GB".into()),
            detail: "free under /m".into(),
        }
    }

    #[test]
    fn each_failed_check_affects_the_models_it_concerns() {
        let p = plan();
        assert_eq!(affected(&p, "image.cpu-box"), [1]);
        assert_eq!(affected(&p, "engine.local"), [2]);
        assert_eq!(affected(&p, "docker.gpu"), [0]);
        assert_eq!(affected(&p, "gpu0.idle_temperature"), [0, 2]);
        assert_eq!(affected(&p, "memory.allocatable"), [0, 1]);
        assert_eq!(affected(&p, "ram.total"), [0, 1, 2]);
        // A check naming a model the plan does not have: every model.
        assert_eq!(affected(&p, "engine.gone"), [0, 1, 2]);
        assert_eq!(affected_by(&p, &[&fail("image.cpu-box"), &fail("engine.local"), &fail("image.cpu-box")]), [1, 2]);
    }

    #[test]
    fn only_failed_checks_gate_and_the_escalation_names_them() {
        let mut warn = fail("image.x");
        warn.status = CheckStatus::Warn;
        let mut unavailable = fail("docker.gpu");
        unavailable.status = CheckStatus::Unavailable;
        let checks = [warn, unavailable, fail("disk.free")];
        let failed = failed(&checks);
        assert_eq!(failed.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["disk.free"]);
        let p = plan();
        let e = escalation(&p, Some("gpu2"), &failed, &[0, 2], 1);
        assert_eq!(e.model, "gpu-box, local");
        assert_eq!(e.failure, "on host gpu2: disk.free: 3.0 GB (needs ≥ 100 GB): free under /m");
        assert_eq!(e.suspected, FailureClass::HostCheck);
        assert_eq!(next(&RemedyAction::Reverify), Next::Reverify(Duration::ZERO));
        assert_eq!(next(&RemedyAction::CoolDown { seconds: 5 }), Next::Reverify(Duration::from_secs(5)));
        for hand_on in [RemedyAction::Continue, RemedyAction::Skip, RemedyAction::Abort] {
            assert_eq!(next(&hand_on), Next::HandOn);
        }
    }
}
