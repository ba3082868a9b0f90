//! Answers to operator commands.

use handoffs::{Bus, BusError};
use protocol::events::{Event, EventBody, Phase};
use protocol::messages::{CyclePlan, OperatorDecision};
use protocol::operator::{AgentLiveness, CycleRecord, CycleState, OperatorReply, OperatorRequest};
use protocol::plan::Plan;
use protocol::results::EscalationRecord;
use protocol::{CycleId, Envelope, HostId, Payload, Role};
use sha2::{Digest, Sha256};

fn error(code: &str, message: impl Into<String>) -> OperatorReply {
    OperatorReply::Error { code: code.into(), message: message.into() }
}

/// Answers one request; NATS trouble becomes an `unavailable` error reply.
pub async fn answer(bus: &Bus, req: OperatorRequest) -> OperatorReply {
    match answer_inner(bus, req).await {
        Ok(r) => r,
        Err(e) => error("unavailable", e.to_string()),
    }
}

async fn answer_inner(bus: &Bus, req: OperatorRequest) -> Result<OperatorReply, BusError> {
    Ok(match req {
        OperatorRequest::Start { plan_toml, plan_source, host, hosts } => {
            start(bus, &plan_toml, &plan_source, &host, &hosts).await?
        }
        OperatorRequest::Status { cycle } => status(bus, cycle.as_deref()).await?,
        OperatorRequest::Cancel { cycle, tuning: true, .. } => stop_tuning(bus, &cycle).await?,
        OperatorRequest::Cancel { cycle, report, tuning: false } => cancel(bus, &cycle, report).await?,
        OperatorRequest::Resume { cycle, hosts } => crate::resume::resume(bus, &cycle, &hosts).await?,
        OperatorRequest::Reports { cycle } => match bus.cycles.get::<CycleRecord>(&cycle).await? {
            Some(r) => OperatorReply::Reports { dir: r.report_dir, files: r.report_files },
            None => error("not_found", format!("no cycle `{cycle}`")),
        },
        OperatorRequest::Escalations { all } => {
            let mut items = bus.escalation_records().await?;
            if !all {
                items.retain(|r| r.decision.is_none());
            }
            OperatorReply::Escalations { items }
        }
        OperatorRequest::Resolve { id, option, action, by } => resolve(bus, &id, option, action, &by).await?,
    })
}

/// The cycle's hosts: `hosts` when the operator named several, else `host` alone; each checked,
/// no repeats.
fn cycle_hosts(host: &str, hosts: &[String]) -> Result<Vec<HostId>, String> {
    let names: Vec<&str> = if hosts.is_empty() { vec![host] } else { hosts.iter().map(String::as_str).collect() };
    let mut out: Vec<HostId> = Vec::new();
    for n in names {
        let h = HostId::parse(n).map_err(|e| format!("host `{n}`: {e}"))?;
        if out.contains(&h) {
            return Err(format!("host `{n}` is named twice"));
        }
        out.push(h);
    }
    Ok(out)
}

async fn start(
    bus: &Bus,
    plan_toml: &str,
    source: &str,
    host: &str,
    hosts: &[String],
) -> Result<OperatorReply, BusError> {
    let plan = match Plan::from_toml(plan_toml) {
        Ok(p) => p,
        Err(e) => return Ok(error("bad_plan", format!("{source}: {e}"))),
    };
    let host_ids = match cycle_hosts(host, hosts) {
        Ok(h) => h,
        Err(e) => return Ok(error("bad_host", e)),
    };
    let host_id = host_ids[0].clone();
    let several: Vec<String> =
        if host_ids.len() > 1 { host_ids.iter().map(ToString::to_string).collect() } else { Vec::new() };
    let now = chrono::Utc::now();
    let cycle = CycleId::generate(now);
    // One cycle at a time on a host: a second operator's cycle would measure the first one's
    // engine (and share its GPU). Refused by name, before anything is recorded or sent.
    for h in &host_ids {
        if let Some(busy) = take_host(bus, h, &cycle, source).await? {
            for taken in host_ids.iter().take_while(|x| *x != h) {
                release_host(bus, taken, &cycle).await;
            }
            return Ok(error("host_busy", format!("host `{h}` {busy}")));
        }
    }
    let requests = u32::try_from(plan.measured_requests()).unwrap_or(u32::MAX);
    let record = CycleRecord {
        partial_report: false,
        id: cycle.to_string(),
        plan: plan.name.clone(),
        plan_source: source.into(),
        plan_hash: hex::encode(Sha256::digest(plan_toml.as_bytes())),
        host: host_id.to_string(),
        state: CycleState::Running { phase: Phase::Planned },
        started_at: now,
        updated_at: now,
        models_total: plan.models.len() as u32,
        models_done: 0,
        requests_done: 0,
        requests_total: requests,
        report_dir: None,
        report_files: Vec::new(),
        last_event_seq: 0,
        resumes: 0,
        finished: Default::default(),
        tuning_stopped: false,
        runs_counted: Default::default(),
        resumed_at: None,
        hosts: several.clone(),
        placement: Default::default(),
        host_done: Default::default(),
        agent_timeout_s: plan.policy.agent_timeout_s,
        running: Vec::new(),
        tokens_done: 0,
        decode_tps_sum: 0.0,
        decode_runs: 0,
    };
    // What a resume needs to publish the plan again, kept before the cycle exists.
    let started = crate::resume::StartedPlan {
        plan_toml: plan_toml.into(),
        plan_source: source.into(),
        hosts: host_ids.iter().map(ToString::to_string).collect(),
        package: uuid::Uuid::now_v7(),
    };
    started.keep(bus, &cycle).await?;
    bus.cycles.create(cycle.as_str(), &record).await?;
    bus.event_best_effort(Event::new(
        cycle.clone(),
        Role::Main,
        EventBody::CycleStarted { plan: plan.name.clone(), models: plan.models.len() as u32, requests },
    ))
    .await;
    publish_plans(bus, &cycle, &plan, &record.plan_hash, &started, 0).await?;
    Ok(OperatorReply::Started { cycle: cycle.to_string() })
}

/// Sends the plan to each host's Reader (with several, each Reader reports to Main, which places
/// the models). The ids derive from the cycle's first plan package and `resumes`, so publishing
/// again for the same count is recognised (JetStream's dedup window, then the Reader's ledger).
pub(crate) async fn publish_plans(
    bus: &Bus,
    cycle: &CycleId,
    plan: &Plan,
    plan_hash: &str,
    started: &crate::resume::StartedPlan,
    resumes: u32,
) -> Result<(), BusError> {
    let several: Vec<String> = if started.hosts.len() > 1 { started.hosts.clone() } else { Vec::new() };
    for h in &started.hosts {
        let host = HostId::parse(h).map_err(|e| BusError::BadRecord {
            bucket: protocol::subjects::LEDGER_BUCKET.into(),
            key: crate::resume::plan_key(cycle.as_str()),
            reason: format!("host `{h}`: {e}"),
        })?;
        let env = Envelope {
            id: protocol::ids::derive_id(started.package, &format!("cycle-plan-{h}"), resumes),
            ..Envelope::new(
                cycle.clone(),
                Role::Main,
                Role::Reader,
                None,
                Payload::CyclePlan(Box::new(CyclePlan {
                    plan: plan.clone(),
                    plan_hash: plan_hash.into(),
                    plan_source: started.plan_source.clone(),
                    host: h.clone(),
                    hosts: several.clone(),
                })),
            )
        };
        bus.publish_to(&env, &host).await?;
    }
    Ok(())
}

/// Who holds a host: the cycle running on it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct HostHold {
    cycle: String,
    plan_source: String,
    taken_at: chrono::DateTime<chrono::Utc>,
}

/// How long a hold whose cycle has no record yet counts as a cycle starting.
const STARTING_S: i64 = 60;

/// The ledger key of a host's hold (Main's own ledger keys, which only Main may write).
fn hold_key(h: &HostId) -> String {
    format!("main.host-busy.{h}")
}

/// Takes `h` for `cycle`, compare-and-set so two operators starting at once never both win: the
/// hold is free when absent, when its cycle has ended, or when its cycle never got a record
/// (a start that failed half-way, after [`STARTING_S`]). `Some(why)` says what runs there.
pub(crate) async fn take_host(
    bus: &Bus,
    h: &HostId,
    cycle: &CycleId,
    source: &str,
) -> Result<Option<String>, BusError> {
    let key = hold_key(h);
    let mine = HostHold { cycle: cycle.to_string(), plan_source: source.into(), taken_at: chrono::Utc::now() };
    for _ in 0..16 {
        if bus.ledger.create(&key, &mine).await? {
            return Ok(None);
        }
        let Some((held, rev)) = bus.ledger.get_rev::<HostHold>(&key).await? else { continue };
        let busy = match bus.cycles.get::<CycleRecord>(&held.cycle).await? {
            Some(r) if !r.state.is_final() => Some(format!(
                "is running cycle {id} (plan `{}` from {}, started {}); wait for it to finish (`threadcycle status {id}`) or cancel it (`threadcycle cancel {id}`)",
                r.plan,
                r.plan_source,
                r.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
                id = r.id,
            )),
            None if (chrono::Utc::now() - held.taken_at).num_seconds() < STARTING_S => Some(format!(
                "is starting cycle {} (plan from {}); try again in a minute",
                held.cycle, held.plan_source
            )),
            _ => None,
        };
        if busy.is_some() {
            return Ok(busy);
        }
        if bus.ledger.replace(&key, &mine, rev).await? {
            return Ok(None);
        }
    }
    Ok(Some("is being claimed by several operators at once; try again".into()))
}

/// Gives back a hold taken for a cycle that did not start (best effort: a hold whose cycle has
/// no record is free anyway).
pub(crate) async fn release_host(bus: &Bus, h: &HostId, cycle: &CycleId) {
    let key = hold_key(h);
    if let Ok(Some((held, _))) = bus.ledger.get_rev::<HostHold>(&key).await
        && held.cycle == cycle.as_str()
    {
        let _ = bus.ledger.store_delete(&key).await;
    }
}

async fn status(bus: &Bus, cycle: Option<&str>) -> Result<OperatorReply, BusError> {
    let mut cycles = Vec::new();
    match cycle {
        Some(c) => match bus.cycles.get::<CycleRecord>(c).await? {
            Some(r) => cycles.push(r),
            None => return Ok(error("not_found", format!("no cycle `{c}`"))),
        },
        None => {
            for k in bus.cycles.keys().await? {
                if let Some(r) = bus.cycles.get::<CycleRecord>(&k).await? {
                    cycles.push(r);
                }
            }
        }
    }
    cycles.sort_by_key(|a| a.started_at);
    let now = chrono::Utc::now();
    let mut agents = Vec::new();
    for k in bus.heartbeats.keys().await? {
        if let Some(mut a) = bus.heartbeats.get::<AgentLiveness>(&k).await? {
            a.age_s = (now - a.last_seen).num_milliseconds() as f64 / 1000.0;
            agents.push(a);
        }
    }
    agents.sort_by(|a, b| a.agent.cmp(&b.agent));
    // The counts are a view for the exporter: a stream that cannot be read leaves them out
    // rather than failing the status.
    let handoffs = bus.handoff_counts().await.unwrap_or_else(|e| {
        tracing::warn!(message = "Handoff counts not read.", error = %e);
        Vec::new()
    });
    Ok(OperatorReply::Status { cycles, agents, handoffs })
}

/// Cancels a cycle; with `report`, the Writer hands on every run measured so far and the
/// reports are written, marked partial.
async fn cancel(bus: &Bus, cycle: &str, report: bool) -> Result<OperatorReply, BusError> {
    let mut changed = false;
    let rec = bus
        .cycles
        .update::<CycleRecord, _>(cycle, |r| {
            changed = false;
            if !r.state.is_final() {
                r.state = CycleState::Canceled;
                r.partial_report = report;
                r.updated_at = chrono::Utc::now();
                changed = true;
            }
        })
        .await?;
    let Some(rec) = rec else { return Ok(error("not_found", format!("no cycle `{cycle}`"))) };
    if changed && let Ok(id) = CycleId::parse(cycle) {
        bus.event_best_effort(Event::new(id, Role::Main, EventBody::CycleCanceled)).await;
    }
    Ok(OperatorReply::Canceled { state: rec.state })
}

/// Stops the tuning of a running cycle (`cancel --tuning`): the Writer reads the flag before
/// each round of a search and asks Debug to conclude; later models are not tuned.
async fn stop_tuning(bus: &Bus, cycle: &str) -> Result<OperatorReply, BusError> {
    let mut final_state = None;
    let rec = bus
        .cycles
        .update::<CycleRecord, _>(cycle, |r| {
            final_state = None;
            if r.state.is_final() {
                final_state = Some(r.state.clone());
            } else {
                r.tuning_stopped = true;
                r.updated_at = chrono::Utc::now();
            }
        })
        .await?;
    let Some(rec) = rec else { return Ok(error("not_found", format!("no cycle `{cycle}`"))) };
    if let Some(state) = final_state {
        return Ok(error("not_running", format!("cycle `{cycle}` is already {state:?}: nothing is tuning")));
    }
    let tuning = rec.running.iter().filter(|r| r.tuning.is_some()).map(|r| r.model.clone()).collect();
    Ok(OperatorReply::TuningStopped { cycle: cycle.to_string(), tuning })
}

async fn resolve(
    bus: &Bus,
    id: &str,
    option: Option<u32>,
    action: Option<protocol::results::RemedyAction>,
    by: &str,
) -> Result<OperatorReply, BusError> {
    let Some(rec) = bus.escalations.get::<EscalationRecord>(id).await? else {
        return Ok(error("not_found", format!("no escalation `{id}`: `threadcycle escalations --all` lists them")));
    };
    if let Some(d) = &rec.decision {
        return Ok(error("already_resolved", format!("escalation `{id}` was already decided by {} at {}", d.by, d.at)));
    }
    if option.is_none() && action.is_none() {
        return Ok(error("bad_decision", "name an option number, --set key=value, --skip or --abort"));
    }
    if matches!(action, Some(protocol::results::RemedyAction::Continue | protocol::results::RemedyAction::Reverify))
        && rec.class != protocol::results::FailureClass::HostCheck
    {
        return Ok(error(
            "bad_decision",
            format!("--continue and --reverify answer failed host checks; escalation `{id}` is about {}", rec.model),
        ));
    }
    if let Some(n) = option
        && !rec.options.iter().any(|o| o.number == n)
    {
        return Ok(error(
            "unknown_option",
            format!("escalation `{id}` has options 1 to {}; {n} is not one of them", rec.options.len()),
        ));
    }
    let cycle = match CycleId::parse(&rec.cycle) {
        Ok(c) => c,
        Err(e) => return Ok(error("bad_record", e.to_string())),
    };
    let env = Envelope::new(
        cycle,
        Role::Main,
        Role::Debug,
        None,
        Payload::OperatorDecision(OperatorDecision { escalation: id.into(), option, action, by: by.into() }),
    );
    bus.publish(&env).await?;
    Ok(OperatorReply::Resolved { id: id.into() })
}
