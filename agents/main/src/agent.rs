//! Main's processes: the operator service, the event follower that keeps cycle records current,
//! and the handoff consumer that closes cycles when the reports are published.

use crate::operator::answer;
use handoffs::{Bus, BusError, ConsumeStats, HandleError, Handled, Handler, consume};
use protocol::events::{Event, EventBody, Phase};
use protocol::operator::{CycleRecord, CycleState, OperatorReply};
use protocol::{Envelope, Payload, Role};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Runs Main until `shutdown` turns true.
pub async fn run(bus: Bus, shutdown: watch::Receiver<bool>, stats: Arc<ConsumeStats>) -> Result<(), BusError> {
    let service = tokio::spawn(serve_operator(bus.clone(), shutdown.clone()));
    let follower = tokio::spawn(follow_events(bus.clone(), shutdown.clone()));
    let watchdog = tokio::spawn(crate::watchdog::run(bus.clone(), Duration::from_secs(5), shutdown.clone()));
    let main = MainAgent { bus: bus.clone() };
    let r = consume(&bus, shutdown, stats, &main).await;
    service.abort();
    follower.abort();
    watchdog.abort();
    r
}

/// Answers operator requests (a queue group, so several Mains could share the load).
async fn serve_operator(bus: Bus, mut shutdown: watch::Receiver<bool>) {
    loop {
        let mut calls = match bus.operator_calls().await {
            Ok(c) => c,
            Err(error) => {
                tracing::warn!(message = "Operator service unavailable; retrying.", %error);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        loop {
            let call = tokio::select! {
                c = calls.next() => c,
                _ = shutdown.changed() => return,
            };
            let Some(call) = call else { break };
            let bus = bus.clone();
            tokio::spawn(async move {
                let reply = match call.request() {
                    Ok(req) => answer(&bus, req).await,
                    Err(e) => OperatorReply::Error {
                        code: "bad_request".into(),
                        message: format!("not an operator request: {e}"),
                    },
                };
                if let Err(error) = bus.answer(&call, &reply).await {
                    tracing::warn!(message = "Operator reply not sent.", %error);
                }
            });
        }
    }
}

/// Folds events into cycle records (phase, models done, requests measured), each event once.
async fn follow_events(bus: Bus, mut shutdown: watch::Receiver<bool>) {
    loop {
        let mut feed = match bus.follow_events().await {
            Ok(f) => f,
            Err(error) => {
                tracing::warn!(message = "Event follower unavailable; retrying.", %error);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = shutdown.changed() => return,
                }
            }
        };
        loop {
            let next = tokio::select! {
                m = feed.next() => m,
                _ = shutdown.changed() => return,
            };
            let Some(Ok(delivered)) = next else { break };
            let seq = delivered.seq;
            if let Some(ev) = &delivered.event {
                let applied = bus
                    .cycles
                    .update::<CycleRecord, _>(ev.cycle.as_str(), |r| {
                        if seq <= r.last_event_seq {
                            return;
                        }
                        r.last_event_seq = seq;
                        r.apply(ev);
                    })
                    .await;
                if let Err(error) = applied {
                    tracing::warn!(message = "Cycle record not updated; event will be redelivered.", %error);
                    continue;
                }
            }
            let _ = delivered.ack().await;
        }
    }
}

struct MainAgent {
    bus: Bus,
}

impl Handler for MainAgent {
    async fn handle(&self, env: Envelope) -> Handled {
        let Envelope { id, cycle, payload, .. } = env;
        match payload {
            Payload::VerificationReport(r) => crate::multihost::take_report(&self.bus, id, &cycle, *r).await,
            Payload::ReportsPublished(r) => {
                let state = match &r.aborted {
                    Some(reason) => CycleState::Failed { reason: reason.clone() },
                    None => CycleState::Completed,
                };
                let mut first = false;
                let mut stale = false;
                let updated = self
                    .bus
                    .cycles
                    .update::<CycleRecord, _>(cycle.as_str(), |rec| {
                        // The partial report of a cancel, landing after the operator resumed the
                        // cycle: the resumed run writes the full one; the cycle goes on.
                        stale = rec.resumes > 0
                            && !rec.state.is_final()
                            && r.aborted.as_deref() == Some(protocol::results::PARTIAL_REPORT);
                        if stale {
                            return;
                        }
                        first = !rec.state.is_final() || rec.report_dir.is_none();
                        if !matches!(rec.state, CycleState::Canceled) {
                            rec.state = state.clone();
                        }
                        rec.report_dir = Some(r.dir.clone());
                        rec.report_files = r.files.clone();
                        rec.updated_at = chrono::Utc::now();
                    })
                    .await
                    .map_err(HandleError::from)?;
                if updated.is_none() {
                    return Err(HandleError::Reject(format!("reports published for unknown cycle `{cycle}`")));
                }
                if stale {
                    tracing::info!(message = "Partial report of a resumed cycle; the cycle goes on.", %cycle);
                    return Ok(());
                }
                if first {
                    let body = match &r.aborted {
                        Some(reason) => EventBody::CycleFailed { reason: format!("{reason} (reports in {})", r.dir) },
                        None => EventBody::CycleCompleted { dir: r.dir.clone() },
                    };
                    self.bus
                        .event_best_effort(Event::new(
                            cycle.clone(),
                            Role::Main,
                            EventBody::PhaseStarted { phase: Phase::Complete },
                        ))
                        .await;
                    self.bus.event_best_effort(Event::new(cycle, Role::Main, body)).await;
                }
                Ok(())
            }
            other => Err(HandleError::Reject(format!("main does not take `{}` packages", other.kind()))),
        }
    }
}
