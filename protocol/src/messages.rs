//! The handoff packages: what one agent hands the next.

use crate::plan::Plan;
use crate::results::{
    BlobRef, Check, EscalationRecord, Evidence, FailureClass, FitVerdict, HostFacts, ModelResult, RemedyAction,
};
use serde::{Deserialize, Serialize};

/// Main → Reader: run this plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CyclePlan {
    /// The validated plan.
    pub plan: Plan,
    /// SHA-256 of the plan text.
    pub plan_hash: String,
    /// Where the plan came from (for reports).
    pub plan_source: String,
    /// The host the cycle runs on.
    pub host: String,
    /// Every host of a cycle that runs on several: when there is more than one, the Reader hands
    /// its report to Main for placement instead of to its Writer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

/// Reader → Writer: the host as measured, and a verdict per model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerificationReport {
    /// The plan being run.
    pub plan: Plan,
    /// SHA-256 of the plan text.
    pub plan_hash: String,
    /// Where the plan came from.
    pub plan_source: String,
    /// What the Reader measured.
    pub host: HostFacts,
    /// Each check with its threshold.
    pub checks: Vec<Check>,
    /// A verdict per plan model, in plan order.
    pub verdicts: Vec<FitVerdict>,
    /// Main's placement when the cycle runs on several hosts: the Writer runs only the models
    /// placed on its host (and the concurrent phase only when it is placed there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
    /// Whether the concurrent phase's models fit on this host together (several-host cycles
    /// with a concurrent phase; the Reader predicts it so Main can place the phase).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent_fit: Option<FitVerdict>,
    /// How failed host checks were settled before anything was deployed (none failed: `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<CheckGate>,
}

/// The answer to failed host checks, decided (by the operator or the plan's
/// `policy.failed_checks`) before the report went on: the Writer deploys nothing it rules out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckGate {
    /// Every escalation the failed checks raised, one per verification round (their records,
    /// with the decision, are in the escalation log).
    pub escalations: Vec<String>,
    /// The checks that failed in the last round.
    pub failed: Vec<String>,
    /// What was decided: `Continue`, `Skip` (the affected models) or `Abort`.
    pub action: RemedyAction,
    /// Who decided (`operator:…`, `policy:failed_checks=…`, `timeout-default`).
    pub by: String,
    /// Plan indices of the models the failed checks affect (skipped when the action is `Skip`).
    pub affected: Vec<u32>,
}

impl CheckGate {
    /// Why the cycle stops before deploying, when the decision was to abort.
    pub fn aborted(&self) -> Option<String> {
        (self.action == RemedyAction::Abort)
            .then(|| format!("cycle aborted by {} after failed host checks: {}", self.by, self.failed.join(", ")))
    }

    /// Why the model at plan index `i` is not deployed, when the decision skips it.
    pub fn skips(&self, i: usize) -> Option<String> {
        (self.action == RemedyAction::Skip && self.affected.contains(&(i as u32)))
            .then(|| format!("skipped by {} after failed host checks: {}", self.by, self.failed.join(", ")))
    }
}

impl VerificationReport {
    /// Whether the Writer on `host` runs the model at plan index `i`.
    pub fn runs_here(&self, host: &str, i: usize) -> bool {
        self.placement.as_ref().is_none_or(|p| p.models.get(i).is_some_and(|m| m.host == host))
    }

    /// Whether the Writer on `host` runs the plan's concurrent phase.
    pub fn concurrent_here(&self, host: &str) -> bool {
        self.placement.as_ref().is_none_or(|p| p.concurrent.as_deref() == Some(host))
    }
}

/// Main's decision of where each model of a several-host cycle runs, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    /// Every host of the cycle, in the operator's order.
    pub hosts: Vec<String>,
    /// One entry per plan model, in plan order.
    pub models: Vec<ModelPlacement>,
    /// The host that runs the concurrent phase; None when the plan has none or no host holds
    /// its models together.
    pub concurrent: Option<String>,
    /// Why the concurrent phase runs there, or why it runs nowhere (empty without a phase).
    #[serde(default)]
    pub concurrent_reason: String,
    /// The cycle's round when this share was handed out: 0 at its start, then the number of
    /// times it was resumed. Documentation gathers each round's results apart, so a resumed
    /// cycle's reports are the merge of its latest round.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub round: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Placement {
    /// The host a model (by plan index) was placed on.
    pub fn host_of(&self, i: usize) -> Option<&str> {
        self.models.get(i).map(|m| m.host.as_str())
    }
}

/// Where one model runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelPlacement {
    /// Plan index.
    pub index: u32,
    /// Model name.
    pub model: String,
    /// The host whose Writer takes it (for a model that fits nowhere: the one that reports it
    /// as not run).
    pub host: String,
    /// The verdict on that host.
    pub fit: crate::results::Fit,
    /// Why this host, in words.
    pub reason: String,
    /// Every host's verdict, in host order.
    pub verdicts: Vec<HostVerdict>,
}

/// One host's verdict on one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostVerdict {
    /// The host.
    pub host: String,
    /// Its verdict.
    pub fit: crate::results::Fit,
    /// The Reader's reason.
    pub reason: String,
}

/// One host's verification, as kept in a several-host cycle's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostVerification {
    /// What the Reader measured (its `host_id` names the host).
    pub host: HostFacts,
    /// Each check with its threshold.
    pub checks: Vec<Check>,
    /// A verdict per plan model on this host.
    pub verdicts: Vec<FitVerdict>,
}

/// Writer → Documentation: every model's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchmarkResults {
    /// The verification the Writer worked from.
    pub verification: VerificationReport,
    /// Results in plan order.
    pub models: Vec<ModelResult>,
    /// Escalations raised during the cycle (ids); their records come from Debug's log.
    pub escalations: Vec<String>,
    /// Why the cycle stopped early, if it did (an operator's abort).
    pub aborted: Option<String>,
    /// The concurrent phase, when the plan has one.
    #[serde(default)]
    pub concurrent: Option<crate::results::ConcurrentResult>,
    /// Every host's verification when the cycle ran on several (merged by Documentation).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<HostVerification>,
}

/// Writer (or any agent) → Debug: something failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Escalation {
    /// Model name.
    pub model: String,
    /// Attempt that failed, from 1.
    pub attempt: u32,
    /// The failure as the escalating agent saw it.
    pub failure: String,
    /// The class it suspects.
    pub suspected: FailureClass,
    /// Evidence it already holds (Debug gathers more).
    pub evidence: Evidence,
    /// Where to look: `process:<pid>` or `container:<id>`.
    pub target: Option<String>,
    /// The engine's url when the model is measured at an endpoint (an engine threadcycle did not
    /// start and cannot reconfigure or restart): Debug then proposes only changes it can make.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The engine, so Debug names its own way of doing a change.
    pub engine: crate::plan::EngineKind,
    /// Settings in force, so Debug can propose changes.
    pub settings: crate::settings::Settings,
    /// Attempts allowed for this model (the plan's `policy.max_attempts`).
    pub max_attempts: u32,
    /// The plan's policy for each failure class.
    pub policy: crate::plan::Policy,
}

/// Main → Debug: the operator's answer to an escalation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatorDecision {
    /// The escalation.
    pub escalation: String,
    /// The option number chosen, if one was.
    pub option: Option<u32>,
    /// The action (for `--set`, `--skip`, `--abort`).
    pub action: Option<RemedyAction>,
    /// Who answered.
    pub by: String,
}

/// Debug → Documentation: the troubleshooting log entry for one escalation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TroubleshootingLog {
    /// The record.
    pub entry: EscalationRecord,
}

/// Documentation → Main: reports are on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportsPublished {
    /// Directory holding the reports.
    pub dir: String,
    /// Files written, relative to `dir`.
    pub files: Vec<String>,
    /// Models measured.
    pub measured: u32,
    /// Models failed or skipped.
    pub not_measured: u32,
    /// Why the cycle stopped early, if it did.
    pub aborted: Option<String>,
}

/// A payload too big for one NATS message, kept in the object store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Offloaded {
    /// The kind of the payload inside.
    pub inner_kind: String,
    /// Where it is.
    pub blob: BlobRef,
}
