//! A cycle on several hosts: each host's Reader sends its verification report to Main; once
//! every host's is in, Main places the models (`placement::place`) and sends each Writer its
//! share.
//!
//! Crash safety: each report is kept in `tc_results` as `verify.<cycle>.<host>` (with its package
//! id; `.r<n>` after the n-th resume) and the placement as `placement.<cycle>`, both
//! create-if-absent, so a restarted Main loses nothing; the shares' ids are derived from each
//! host's report package, so placing again after a redelivery publishes the same packages, which
//! the Writers' ledgers absorb. A resume keeps the first placement: no model moves host.

use crate::placement::place;
use handoffs::{Bus, HandleError, Handled};
use protocol::events::{Event, EventBody};
use protocol::ids::derive_id;
use protocol::messages::{Placement, VerificationReport};
use protocol::operator::CycleRecord;
use protocol::results::Fit;
use protocol::{CycleId, Envelope, HostId, Payload, Role};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One host's report as Main keeps it until every host has answered.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredReport {
    /// The `verification_report` package it came in.
    pub package: Uuid,
    /// The report.
    pub report: VerificationReport,
}

/// Where a host's report is kept: one per round (0 at the start, then one per resume).
pub fn report_key(cycle: &CycleId, host: &str, round: u32) -> String {
    if round == 0 { format!("verify.{cycle}.{host}") } else { format!("verify.{cycle}.{host}.r{round}") }
}

/// Where the placement is kept.
pub fn placement_key(cycle: &CycleId) -> String {
    format!("placement.{cycle}")
}

/// Takes one host's verification report; places and hands out the shares once all are in.
pub async fn take_report(bus: &Bus, pkg: Uuid, cycle: &CycleId, report: VerificationReport) -> Handled {
    let Some(rec) = bus.cycles.get::<CycleRecord>(cycle.as_str()).await.map_err(HandleError::from)? else {
        return Err(HandleError::Reject(format!("verification report for unknown cycle `{cycle}`")));
    };
    // A cycle failed by the watchdog goes on when the silent host's Reader is back.
    if rec.state.stops_work() {
        return Ok(());
    }
    let host = report.host.host_id.clone();
    if !rec.hosts.contains(&host) {
        return Err(HandleError::Reject(format!(
            "verification report from host `{host}`, which cycle `{cycle}` does not run on (hosts: {})",
            rec.hosts.join(", ")
        )));
    }
    // A resumed cycle's Readers verify again: each round's reports are kept apart, and the
    // shares of the round go out once every host's report of it is in.
    let round = rec.resumes;
    let stored = StoredReport { package: pkg, report };
    if !bus.results.create(&report_key(cycle, &host, round), &stored).await.map_err(HandleError::from)? {
        tracing::info!(message = "This host's report was already kept; keeping the first.", %cycle, %host);
    }
    let mut reports = Vec::new();
    for h in &rec.hosts {
        match bus.results.get::<StoredReport>(&report_key(cycle, h, round)).await.map_err(HandleError::from)? {
            Some(r) => reports.push((h.clone(), r)),
            None => {
                tracing::info!(message = "Waiting for the other hosts' reports.", %cycle, waiting_for = %h);
                return Ok(());
            }
        }
    }
    let key = placement_key(cycle);
    let placement = match bus.results.get::<Placement>(&key).await.map_err(HandleError::from)? {
        Some(p) => p,
        None => {
            let plain: Vec<(String, VerificationReport)> =
                reports.iter().map(|(h, r)| (h.clone(), r.report.clone())).collect();
            let p = place(&rec_plan(&reports), &plain);
            if bus.results.create(&key, &p).await.map_err(HandleError::from)? {
                for m in &p.models {
                    bus.event_best_effort(Event::new(
                        cycle.clone(),
                        Role::Main,
                        EventBody::ModelPlaced {
                            model: m.model.clone(),
                            host: m.host.clone(),
                            reason: m.reason.clone(),
                        },
                    ))
                    .await;
                }
            }
            bus.results.get::<Placement>(&key).await.map_err(HandleError::from)?.unwrap_or(p)
        }
    };
    bus.cycles
        .update::<CycleRecord, _>(cycle.as_str(), |r| {
            r.placement = placement.models.iter().map(|m| (m.model.clone(), m.host.clone())).collect();
            for h in &placement.hosts {
                r.host_done.entry(h.clone()).or_insert(0);
            }
        })
        .await
        .map_err(HandleError::from)?;
    for (h, stored) in &reports {
        let host_id = HostId::parse(h).map_err(|e| HandleError::Reject(format!("host `{h}`: {e}")))?;
        let env = Envelope {
            id: derive_id(stored.package, "placed-share", 0),
            ..Envelope::new(
                cycle.clone(),
                Role::Main,
                Role::Writer,
                Some(stored.package),
                Payload::VerificationReport(Box::new(share(&stored.report, &Placement { round, ..placement.clone() }))),
            )
        };
        bus.publish_to(&env, &host_id).await.map_err(HandleError::from)?;
    }
    Ok(())
}

/// The plan all hosts verified (the same plan went to every Reader).
fn rec_plan(reports: &[(String, StoredReport)]) -> protocol::plan::Plan {
    reports[0].1.report.plan.clone()
}

/// One host's share: its own facts, checks and verdicts, with the placement; a model placed
/// here that fits on no host carries the reasons of every host.
pub fn share(report: &VerificationReport, placement: &Placement) -> VerificationReport {
    let mut out = report.clone();
    for m in &placement.models {
        if m.host == report.host.host_id
            && m.fit == Fit::NoGo
            && let Some(v) = out.verdicts.get_mut(m.index as usize)
        {
            v.reason = m.reason.clone();
        }
    }
    out.placement = Some(placement.clone());
    out
}
