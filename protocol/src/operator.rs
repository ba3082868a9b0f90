//! Operator commands sent to Main by request/reply, the cycle record Main keeps, and replies.

use crate::events::Phase;
use crate::results::{EscalationRecord, RemedyAction};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A command from the CLI to Main.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum OperatorRequest {
    /// Start a cycle from this plan text.
    Start {
        /// TOML text of the plan.
        plan_toml: String,
        /// Where it was read from.
        plan_source: String,
        /// Host to run on.
        host: String,
        /// Several hosts to place the models on (empty: only `host`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        hosts: Vec<String>,
    },
    /// One cycle's record, or all of them.
    Status {
        /// Cycle, or None for all.
        cycle: Option<String>,
    },
    /// Cancel a cycle.
    Cancel {
        /// Cycle.
        cycle: String,
        /// Write a partial report of what was measured (the Writer hands on every run so far).
        #[serde(default)]
        report: bool,
    },
    /// Where a cycle's reports are.
    Reports {
        /// Cycle.
        cycle: String,
    },
    /// Open (or all) escalations.
    Escalations {
        /// Include decided ones.
        all: bool,
    },
    /// Answer an escalation.
    Resolve {
        /// Escalation id.
        id: String,
        /// Option number.
        option: Option<u32>,
        /// Or a custom action.
        action: Option<RemedyAction>,
        /// Who answers.
        by: String,
    },
}

/// State of a cycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum CycleState {
    /// In progress.
    Running {
        /// Current phase.
        phase: Phase,
    },
    /// Finished with reports.
    Completed,
    /// Stopped by an error.
    Failed {
        /// Why.
        reason: String,
    },
    /// Stopped by the operator.
    Canceled,
}

impl CycleState {
    /// Whether nothing more will happen.
    pub fn is_final(&self) -> bool {
        !matches!(self, CycleState::Running { .. })
    }

    /// Whether the agents stop working on the cycle: canceled or complete. A cycle failed by
    /// Main's watchdog (a silent agent) goes on, so a late agent's results still land.
    pub fn stops_work(&self) -> bool {
        matches!(self, CycleState::Canceled | CycleState::Completed)
    }
}

/// Main's record of a cycle (kept in KV).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CycleRecord {
    /// Cycle id.
    pub id: String,
    /// Plan name.
    pub plan: String,
    /// Plan source.
    pub plan_source: String,
    /// Plan hash.
    pub plan_hash: String,
    /// Host.
    pub host: String,
    /// State.
    pub state: CycleState,
    /// Started.
    pub started_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Models in the plan.
    pub models_total: u32,
    /// Models finished.
    pub models_done: u32,
    /// Requests measured so far.
    pub requests_done: u32,
    /// Requests planned.
    pub requests_total: u32,
    /// Report directory once written.
    pub report_dir: Option<String>,
    /// Files in it.
    pub report_files: Vec<String>,
    /// Last event-stream sequence folded into this record (so a redelivered event counts once).
    #[serde(default)]
    pub last_event_seq: u64,
    /// Every host of a several-host cycle (empty: only `host`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Model → host, once Main has placed them (several-host cycles).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub placement: BTreeMap<String, String>,
    /// Models finished per host (several-host cycles).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub host_done: BTreeMap<String, u32>,
    /// The plan's `policy.agent_timeout_s`: how long Main lets an agent the cycle waits on stay
    /// silent before it fails the cycle (0 = for ever).
    #[serde(default = "default_agent_timeout_s")]
    pub agent_timeout_s: u64,
    /// Canceled with a partial report asked for: the Writer hands on what it measured.
    #[serde(default)]
    pub partial_report: bool,
}

fn default_agent_timeout_s() -> u64 {
    600
}

/// An agent's liveness as Main sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentLiveness {
    /// Role (and host).
    pub agent: String,
    /// Last heartbeat.
    pub last_seen: DateTime<Utc>,
    /// Seconds since.
    pub age_s: f64,
    /// Process id.
    pub pid: u32,
}

/// Main's answer to an operator command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum OperatorReply {
    /// A cycle started.
    Started {
        /// Its id.
        cycle: String,
    },
    /// Cycle records and agent liveness.
    Status {
        /// Cycles.
        cycles: Vec<CycleRecord>,
        /// Agents.
        agents: Vec<AgentLiveness>,
    },
    /// The cycle is canceled (or already final).
    Canceled {
        /// Final state.
        state: CycleState,
    },
    /// Report location.
    Reports {
        /// Directory, None if not yet written.
        dir: Option<String>,
        /// Files.
        files: Vec<String>,
    },
    /// Escalations.
    Escalations {
        /// Records.
        items: Vec<EscalationRecord>,
    },
    /// The decision was accepted.
    Resolved {
        /// Escalation.
        id: String,
    },
    /// The command failed.
    Error {
        /// Machine-readable code (`bad_plan`, `not_found`, `already_resolved`, …).
        code: String,
        /// For the operator.
        message: String,
    },
}
