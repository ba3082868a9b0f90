//! Main's watchdog: a cycle waits on the agents of its current phase (the Readers while hosts are
//! verified, the Writers and Debug while models are measured, Documentation while reports are
//! written). Each agent writes a heartbeat every 5 s; one that stays silent is named in an event,
//! and past the plan's `policy.agent_timeout_s` the cycle is marked failed with its name, instead
//! of waiting for ever on a host that was switched off. Nothing is thrown away: if the agent comes
//! back, its work still lands (the stored packages wait for it) and a later completion replaces
//! the failure.

use handoffs::{Bus, BusError};
use protocol::events::{Event, EventBody, Phase};
use protocol::operator::{AgentLiveness, CycleRecord, CycleState};
use protocol::subjects::heartbeat_key;
use protocol::{CycleId, Role};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::watch;

/// Silence (seconds) after which an agent is reported in an event: six missed heartbeats.
pub const SILENT_AFTER_S: u64 = 30;

/// The heartbeat keys of the agents a cycle waits on in its current state.
pub fn awaited_agents(rec: &CycleRecord) -> Vec<String> {
    let CycleState::Running { phase } = rec.state else { return Vec::new() };
    let hosts: Vec<&str> =
        if rec.hosts.is_empty() { vec![rec.host.as_str()] } else { rec.hosts.iter().map(String::as_str).collect() };
    let roles: &[Role] = match phase {
        Phase::Planned | Phase::Verifying => &[Role::Reader],
        Phase::Benchmarking => &[Role::Writer, Role::Debug],
        Phase::Documenting => &[Role::Documentation],
        Phase::Complete => &[],
    };
    let mut keys: Vec<String> = Vec::new();
    for &role in roles {
        for h in &hosts {
            let key = heartbeat_key(role, h);
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
    }
    keys
}

/// Each awaited agent that has been silent for at least [`SILENT_AFTER_S`], with the seconds of
/// silence: since its last heartbeat, or since the cycle last changed if it never beat.
pub fn silent_agents(
    rec: &CycleRecord,
    beats: &BTreeMap<String, AgentLiveness>,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<(String, u64)> {
    awaited_agents(rec)
        .into_iter()
        .filter_map(|agent| {
            let floor = rec.resumed_at.unwrap_or(rec.started_at).max(rec.started_at);
            let since = beats.get(&agent).map(|b| b.last_seen.max(floor)).unwrap_or(rec.updated_at);
            let silent = (now - since).num_seconds().max(0) as u64;
            (silent >= SILENT_AFTER_S).then_some((agent, silent))
        })
        .collect()
}

/// Runs the watchdog every `every` until `shutdown` turns true.
pub async fn run(bus: Bus, every: Duration, mut shutdown: watch::Receiver<bool>) {
    // Which agents were already reported silent, per cycle, so each silence is one event.
    let mut reported: BTreeMap<String, Vec<String>> = BTreeMap::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        if let Err(error) = check(&bus, &mut reported).await {
            tracing::debug!(message = "Watchdog round skipped.", %error);
        }
    }
}

async fn check(bus: &Bus, reported: &mut BTreeMap<String, Vec<String>>) -> Result<(), BusError> {
    let mut beats = BTreeMap::new();
    for k in bus.heartbeats.keys().await? {
        if let Some(b) = bus.heartbeats.get::<AgentLiveness>(&k).await? {
            beats.insert(k, b);
        }
    }
    let now = chrono::Utc::now();
    let mut active = Vec::new();
    for key in bus.cycles.keys().await? {
        let Some(rec) = bus.cycles.get::<CycleRecord>(&key).await? else { continue };
        let Ok(cycle) = CycleId::parse(&rec.id) else { continue };
        if rec.state.is_final() {
            continue;
        }
        active.push(rec.id.clone());
        let silent = silent_agents(&rec, &beats, now);
        let seen = reported.entry(rec.id.clone()).or_default();
        // An agent that beats again may be reported again if it falls silent later.
        seen.retain(|a| silent.iter().any(|(s, _)| s == a));
        for (agent, secs) in &silent {
            if !seen.contains(agent) {
                seen.push(agent.clone());
                let body =
                    EventBody::AgentSilent { agent: agent.clone(), silent_s: *secs, limit_s: rec.agent_timeout_s };
                bus.event_best_effort(Event::new(cycle.clone(), Role::Main, body)).await;
            }
        }
        let limit = rec.agent_timeout_s;
        let Some((agent, secs)) = silent.iter().find(|(_, s)| limit > 0 && *s >= limit) else { continue };
        let reason = format!(
            "no heartbeat from {agent} for {secs} s (policy.agent_timeout_s = {limit}): the agent stopped or lost NATS. \
             Its packages wait in NATS: restart it and the cycle's results still land"
        );
        let mut failed = false;
        bus.cycles
            .update::<CycleRecord, _>(&key, |r| {
                failed = false;
                if !r.state.is_final() {
                    r.state = CycleState::Failed { reason: reason.clone() };
                    r.updated_at = chrono::Utc::now();
                    failed = true;
                }
            })
            .await?;
        if failed {
            tracing::warn!(message = "Cycle failed: an agent it waits on is silent.", cycle = %rec.id, %agent, secs);
            bus.event_best_effort(Event::new(cycle, Role::Main, EventBody::CycleFailed { reason })).await;
        }
    }
    reported.retain(|id, _| active.contains(id));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration as D, Utc};

    fn rec(phase: Phase, hosts: &[&str]) -> CycleRecord {
        let t0 = Utc::now() - D::seconds(1000);
        CycleRecord {
            partial_report: false,
            resumes: 0,
            finished: Default::default(),
            tuning_stopped: false,
            runs_counted: Default::default(),
            resumed_at: None,
            id: "c".into(),
            plan: "p".into(),
            plan_source: "p.toml".into(),
            plan_hash: String::new(),
            host: "local".into(),
            state: CycleState::Running { phase },
            started_at: t0,
            updated_at: t0,
            models_total: 1,
            models_done: 0,
            requests_done: 0,
            requests_total: 1,
            report_dir: None,
            report_files: Vec::new(),
            last_event_seq: 0,
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            placement: Default::default(),
            host_done: Default::default(),
            agent_timeout_s: 600,
            running: Vec::new(),
            tokens_done: 0,
            decode_tps_sum: 0.0,
            decode_runs: 0,
        }
    }

    fn beat(agent: &str, ago_s: i64) -> (String, AgentLiveness) {
        (
            agent.into(),
            AgentLiveness { agent: agent.into(), last_seen: Utc::now() - D::seconds(ago_s), age_s: 0.0, pid: 1 },
        )
    }

    #[test]
    fn each_phase_waits_on_its_own_agents() {
        assert_eq!(awaited_agents(&rec(Phase::Verifying, &[])), ["reader-local"]);
        assert_eq!(awaited_agents(&rec(Phase::Benchmarking, &["a", "b"])), ["writer-a", "writer-b", "debug"]);
        assert_eq!(awaited_agents(&rec(Phase::Documenting, &[])), ["documentation"]);
        let mut done = rec(Phase::Benchmarking, &[]);
        done.state = CycleState::Completed;
        assert!(awaited_agents(&done).is_empty());
    }

    #[test]
    fn a_silent_or_missing_agent_is_named_and_a_beating_one_is_not() {
        let r = rec(Phase::Benchmarking, &["a", "b"]);
        let beats: BTreeMap<_, _> = [beat("writer-a", 2), beat("writer-b", 700), beat("reader-a", 900)].into();
        let silent = silent_agents(&r, &beats, Utc::now());
        let names: Vec<&str> = silent.iter().map(|(a, _)| a.as_str()).collect();
        // writer-b stopped 700 s ago; debug never beat since the cycle last changed (1000 s ago).
        assert_eq!(names, ["writer-b", "debug"]);
        assert!(silent[0].1 >= 700 && silent[0].1 < 710, "{silent:?}");
        assert!(silent[1].1 >= 1000, "{silent:?}");
    }

    #[test]
    fn a_heartbeat_older_than_the_cycle_counts_from_the_start() {
        let mut r = rec(Phase::Verifying, &[]);
        r.started_at = Utc::now() - D::seconds(10);
        r.updated_at = r.started_at;
        // The Reader last beat an hour ago, but the cycle is 10 s old: not yet silent.
        let beats: BTreeMap<_, _> = [beat("reader-local", 3600)].into();
        assert!(silent_agents(&r, &beats, Utc::now()).is_empty());
    }
}
