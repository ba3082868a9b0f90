//! Operator commands sent to Main by request/reply, the cycle record Main keeps, and replies.

use crate::events::Phase;
use crate::results::{EscalationRecord, RemedyAction};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

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
        /// Stop only the tuning: the search under way concludes from its trials so far, later
        /// models are not tuned, the cycle goes on.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        tuning: bool,
    },
    /// Where a cycle's reports are.
    Reports {
        /// Cycle.
        cycle: String,
    },
    /// Continue a canceled, failed or interrupted cycle from its last completed run: Main
    /// reopens it and publishes its plan again (ids derived from the first one, so asking twice
    /// publishes nothing new); the Writer measures only what is not stored yet.
    Resume {
        /// Cycle.
        cycle: String,
        /// The hosts the asking `up` runs agents for (empty: not checked, agents run elsewhere).
        /// A several-host cycle needs a Reader and a Writer for each of its hosts.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        hosts: Vec<String>,
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
    /// Models finished (each counted once: a model cut short by a cancel and measured on after
    /// a resume finishes twice).
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
    /// The models being measured now, one per host (folded from events by Main).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub running: Vec<RunningModel>,
    /// Output tokens of the runs measured so far.
    #[serde(default)]
    pub tokens_done: u64,
    /// Sum of the client decode tokens/s of the runs measured so far (with `decode_runs`, the
    /// mean so far).
    #[serde(default)]
    pub decode_tps_sum: f64,
    /// Runs with a decode tokens/s figure.
    #[serde(default)]
    pub decode_runs: u32,
    /// The plan's `policy.agent_timeout_s`: how long Main lets an agent the cycle waits on stay
    /// silent before it fails the cycle (0 = for ever).
    #[serde(default = "default_agent_timeout_s")]
    pub agent_timeout_s: u64,
    /// Canceled with a partial report asked for: the Writer hands on what it measured.
    #[serde(default)]
    pub partial_report: bool,
    /// The operator stopped the tuning (`cancel --tuning`): the search under way ends with the
    /// best found so far after its current trial, and later models are not tuned.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tuning_stopped: bool,
    /// The runs counted in `requests_done` (`model/prompt#repetition`): a run measured again
    /// (a retry under changed settings) counts once.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub runs_counted: BTreeSet<String>,
    /// The models counted in `models_done`.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub finished: BTreeSet<String>,
    /// How many times the operator reopened the cycle (`resume`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub resumes: u32,
    /// When the operator last resumed it: Main's watchdog counts an agent's silence from then
    /// at the earliest (its last heartbeat may be from before an interrupted `up`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_at: Option<DateTime<Utc>>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn default_agent_timeout_s() -> u64 {
    600
}

/// A model whose turn is under way (`status`'s rows, like `ollama ps`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunningModel {
    /// Model name from the plan.
    pub model: String,
    /// The host it runs on.
    pub host: String,
    /// Position from 1, of `of`.
    pub index: u32,
    /// Models in the plan.
    pub of: u32,
    /// Attempt from 1.
    pub attempt: u32,
    /// When its turn began.
    pub since: DateTime<Utc>,
    /// Share of its weights in VRAM, once the engine loaded it.
    #[serde(default)]
    pub gpu_share: Option<f64>,
    /// Runs measured in this turn.
    #[serde(default)]
    pub runs: u32,
    /// Mean client decode tokens/s of those runs.
    #[serde(default)]
    pub decode_tps: Option<f64>,
    /// The pull under way for it (`Pulling` or `ImagePulling`, with bytes, rate), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull: Option<crate::events::Step>,
    /// Its tuning search, while one runs: the latest trial begun or ended (`TuneTrial`,
    /// `TuneTrialDone`), and how many trials ended so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tuning: Option<crate::events::Step>,
    /// Tuning trials ended so far.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub trials_done: u32,
}

impl CycleRecord {
    /// Mean client decode tokens/s over the runs measured so far.
    pub fn decode_tps_mean(&self) -> Option<f64> {
        (self.decode_runs > 0).then(|| self.decode_tps_sum / f64::from(self.decode_runs))
    }

    /// Seconds left, estimated from the pace so far (time per measured request, engine start-ups
    /// included); None before the first request or once nothing is left.
    pub fn seconds_left(&self, now: DateTime<Utc>) -> Option<f64> {
        if self.state.is_final() || self.requests_done == 0 || self.requests_done >= self.requests_total {
            return None;
        }
        let elapsed = (now - self.started_at).num_milliseconds() as f64 / 1000.0;
        (elapsed > 0.0)
            .then(|| elapsed / f64::from(self.requests_done) * f64::from(self.requests_total - self.requests_done))
    }

    /// Folds one event into the record (phase, progress, what runs where, tokens/s so far).
    /// Returns false for an event that changes nothing.
    pub fn apply(&mut self, ev: &crate::events::Event) -> bool {
        use crate::events::{EventBody, Step};
        let host = ev.host.clone().unwrap_or_else(|| self.host.clone());
        match &ev.body {
            EventBody::PhaseStarted { phase } if !self.state.is_final() => {
                self.state = CycleState::Running { phase: *phase };
            }
            EventBody::ModelStarted { model, index, of, attempt } => {
                self.running.retain(|r| r.host != host && &r.model != model);
                self.running.push(RunningModel {
                    model: model.clone(),
                    host,
                    index: *index,
                    of: *of,
                    attempt: *attempt,
                    since: ev.at,
                    gpu_share: None,
                    runs: 0,
                    decode_tps: None,
                    pull: None,
                    tuning: None,
                    trials_done: 0,
                });
            }
            EventBody::Step { model, step: step @ (Step::Pulling { .. } | Step::ImagePulling { .. }) } => {
                let Some(r) = self.running.iter_mut().find(|r| &r.model == model) else { return false };
                r.pull = Some(step.clone());
            }
            EventBody::Step {
                model,
                step:
                    Step::Pulled { .. } | Step::ImagePulled { .. } | Step::ModelPresent { .. } | Step::EngineReady { .. },
            } => {
                let Some(r) = self.running.iter_mut().find(|r| &r.model == model) else { return false };
                r.pull = None;
            }
            EventBody::Step { model, step: step @ (Step::TuneTrial { .. } | Step::TuneTrialDone { .. }) } => {
                let Some(r) = self.running.iter_mut().find(|r| &r.model == model) else { return false };
                if matches!(step, Step::TuneTrialDone { .. }) {
                    r.trials_done += 1;
                }
                r.tuning = Some(step.clone());
            }
            EventBody::Step { model, step: Step::TuneDone { .. } } => {
                let Some(r) = self.running.iter_mut().find(|r| &r.model == model) else { return false };
                r.tuning = None;
            }
            EventBody::Step { model, step: Step::WeightsPlaced { gpu_share } } => {
                let Some(r) = self.running.iter_mut().find(|r| &r.model == model) else { return false };
                r.gpu_share = Some(*gpu_share);
            }
            EventBody::ModelFinished { model, .. } => {
                if self.finished.insert(model.clone()) {
                    self.models_done += 1;
                    if let Some(h) = self.placement.get(model) {
                        *self.host_done.entry(h.clone()).or_insert(0) += 1;
                    }
                }
                self.running.retain(|r| &r.model != model);
            }
            EventBody::RunMeasured { model, prompt, repetition, tokens, decode_tps, .. } => {
                if !self.runs_counted.insert(format!("{model}/{prompt}#{repetition}")) {
                    return false;
                }
                self.requests_done += 1;
                self.tokens_done += u64::from(*tokens);
                if let Some(t) = decode_tps.filter(|t| t.is_finite()) {
                    self.decode_tps_sum += t;
                    self.decode_runs += 1;
                }
                if let Some(r) = self.running.iter_mut().find(|r| &r.model == model) {
                    if let Some(t) = decode_tps.filter(|t| t.is_finite()) {
                        let n = f64::from(r.runs);
                        r.decode_tps = Some((r.decode_tps.unwrap_or(0.0) * n + t) / (n + 1.0));
                    }
                    r.runs += 1;
                }
            }
            EventBody::CycleCompleted { .. } | EventBody::CycleFailed { .. } | EventBody::CycleCanceled => {
                self.running.clear();
            }
            _ => return false,
        }
        self.updated_at = ev.at;
        true
    }
}

/// Handoff packages stored on one edge of the cycle (sender → receiver), counted by the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoffCount {
    /// The sending agent's role.
    pub from: String,
    /// The receiving agent's role.
    pub to: String,
    /// Packages on the handoff stream for this edge.
    pub packages: u64,
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
        /// Handoff packages kept on the stream, per edge (Main's count; empty from an older Main).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        handoffs: Vec<HandoffCount>,
    },
    /// The cycle is canceled (or already final).
    Canceled {
        /// Final state.
        state: CycleState,
    },
    /// The tuning is stopped; the cycle goes on (`cancel --tuning`).
    TuningStopped {
        /// The cycle.
        cycle: String,
        /// The models whose search was under way (they conclude after their current trial).
        tuning: Vec<String>,
    },
    /// The cycle goes on (`resume`).
    Resumed {
        /// Its id.
        cycle: String,
        /// How many times it was reopened so far (0: it was still running, interrupted; what was
        /// in flight is redelivered from the store).
        resumes: u32,
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
