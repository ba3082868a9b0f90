//! `resume`: a canceled, failed or interrupted cycle goes on from its last completed run.
//!
//! Main keeps what it needs to publish a cycle's plan again (the plan text, its hosts, the id
//! the first plan package was derived from) in its ledger keys when the cycle starts. A resume
//! moves a canceled or failed record back to running (compare-and-set: one of two operators
//! asking at once reopens it) and publishes the plan with ids derived from that first id and
//! the resume count: asking again publishes the same ids, which JetStream's dedup window or the
//! Reader's ledger absorbs. A cycle still recorded as running (its `up` was interrupted, or the
//! agents stopped) is not reopened: its unacked package is redelivered from the store, and the
//! plan published again for the current count is recognised as a repeat. The Writer skips every
//! model already stored and re-measures only the runs it has not stored.
//!
//! A several-host cycle resumes the same way: each Reader verifies again, Main keeps the first
//! placement (no model moves to another host) and hands each Writer its share for the new
//! round (`multihost`), and Documentation merges the round's results from every host.

use crate::operator::{publish_plans, release_host, take_host};
use handoffs::{Bus, BusError};
use protocol::events::{Event, EventBody, Phase};
use protocol::operator::{CycleRecord, CycleState, OperatorReply};
use protocol::plan::Plan;
use protocol::{CycleId, HostId, Role};
use serde::{Deserialize, Serialize};

/// What Main keeps of a cycle's start to publish its plan again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartedPlan {
    /// The plan's TOML text.
    pub plan_toml: String,
    /// Where it was read from.
    pub plan_source: String,
    /// The cycle's hosts (one, or several).
    pub hosts: Vec<String>,
    /// The id every plan package of the cycle derives from.
    pub package: uuid::Uuid,
}

/// The ledger key of a cycle's kept plan (Main's own ledger keys).
pub fn plan_key(cycle: &str) -> String {
    format!("main.plan.{cycle}")
}

impl StartedPlan {
    /// Keeps it for `cycle`.
    pub async fn keep(&self, bus: &Bus, cycle: &CycleId) -> Result<(), BusError> {
        bus.ledger.put(&plan_key(cycle.as_str()), self).await.map(|_| ())
    }
}

fn error(code: &str, message: impl Into<String>) -> OperatorReply {
    OperatorReply::Error { code: code.into(), message: message.into() }
}

fn complete(rec: &CycleRecord) -> OperatorReply {
    error(
        "already_complete",
        format!(
            "cycle {} is complete; nothing to resume (reports in {})",
            rec.id,
            rec.report_dir.as_deref().unwrap_or("its report folder")
        ),
    )
}

/// Answers `resume <cycle>`.
/// `asked_hosts`: the hosts the asking `up` runs agents for (empty when not known).
pub async fn resume(bus: &Bus, cycle: &str, asked_hosts: &[String]) -> Result<OperatorReply, BusError> {
    let Some(rec) = bus.cycles.get::<CycleRecord>(cycle).await? else {
        return Ok(error("not_found", format!("no cycle `{cycle}` (`threadcycle status` lists the cycles)")));
    };
    if rec.state == CycleState::Completed {
        return Ok(complete(&rec));
    }
    let Some(started) = bus.ledger.get::<StartedPlan>(&plan_key(cycle)).await? else {
        return Ok(error(
            "not_resumable",
            format!("cycle {cycle} was started by a threadcycle that did not keep its plan; start the plan again"),
        ));
    };
    if !asked_hosts.is_empty() && asked_hosts != started.hosts.as_slice() {
        let flags: Vec<String> = started.hosts.iter().map(|h| format!("--host {h}")).collect();
        return Ok(error(
            "wrong_hosts",
            format!(
                "cycle {cycle} runs on host(s) {}, not {}: resume it with the same hosts (`threadcycle up --resume {cycle} {}`, with the same --host-profile for each)",
                started.hosts.join(", "),
                asked_hosts.join(", "),
                flags.join(" ")
            ),
        ));
    }
    let plan = match Plan::from_toml(&started.plan_toml) {
        Ok(p) => p,
        Err(e) => return Ok(error("bad_plan", format!("the plan of cycle {cycle} ({}): {e}", started.plan_source))),
    };
    let id = match CycleId::parse(cycle) {
        Ok(c) => c,
        Err(e) => return Ok(error("bad_record", e.to_string())),
    };
    let mut hosts = Vec::new();
    for h in &started.hosts {
        match HostId::parse(h) {
            Ok(h) => hosts.push(h),
            Err(e) => return Ok(error("bad_record", format!("cycle {cycle}: host `{h}`: {e}"))),
        }
    }
    // A cycle that ended gave its host back: another may run there now.
    if rec.state.is_final() {
        for h in &hosts {
            if let Some(busy) = take_host(bus, h, &id, &started.plan_source).await? {
                for taken in hosts.iter().take_while(|x| *x != h) {
                    release_host(bus, taken, &id).await;
                }
                return Ok(error("host_busy", format!("host `{h}` {busy}")));
            }
        }
    }
    let mut reopened = false;
    let rec = bus
        .cycles
        .update::<CycleRecord, _>(cycle, |r| {
            reopened = false;
            if r.state != CycleState::Completed {
                r.resumed_at = Some(chrono::Utc::now());
            }
            if r.state.is_final() && r.state != CycleState::Completed {
                r.state = CycleState::Running { phase: Phase::Planned };
                r.resumes += 1;
                r.partial_report = false;
                r.running.clear();
                // The partial report (if any) stays on disk until the full one replaces it.
                r.report_dir = None;
                r.report_files.clear();
                r.updated_at = chrono::Utc::now();
                reopened = true;
            }
        })
        .await?;
    let Some(rec) = rec else { return Ok(error("not_found", format!("no cycle `{cycle}`"))) };
    if rec.state == CycleState::Completed {
        return Ok(complete(&rec));
    }
    if reopened {
        bus.event_best_effort(Event::new(id.clone(), Role::Main, EventBody::PhaseStarted { phase: Phase::Planned }))
            .await;
    }
    publish_plans(bus, &id, &plan, &rec.plan_hash, &started, rec.resumes).await?;
    Ok(OperatorReply::Resumed { cycle: cycle.into(), resumes: rec.resumes })
}
