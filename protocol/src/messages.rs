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
    /// Settings in force (`key=value`), so Debug can propose changes.
    pub settings: Vec<(String, String)>,
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
