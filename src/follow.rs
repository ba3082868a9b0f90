//! `threadcycle events -f [CYCLE]`: a cycle's typed events as they happen, one line each (text,
//! or with `--json` one compact JSON object per line, NDJSON), like `docker events`.
//!
//! The operator's NATS user may subscribe to `tc.evt.>` and nothing in JetStream, so this
//! follows the live events; the past ones are in the reports' timeline.

use crate::exit;
use crate::nats_args::NatsArgs;
use anyhow::Result;
use futures::StreamExt;
use protocol::events::{Event, EventBody};
use protocol::subjects;

/// Whether this event ends the cycle (nothing follows it).
pub fn ends_cycle(body: &EventBody) -> bool {
    matches!(body, EventBody::CycleCompleted { .. } | EventBody::CycleFailed { .. } | EventBody::CycleCanceled)
}

/// One event as printed: compact JSON, or the event's line made safe for a terminal.
pub fn render(ev: &Event, json: bool) -> String {
    if json { serde_json::to_string(ev).unwrap_or_default() } else { crate::display::clean(&ev.line()) }
}

/// Follows events until Ctrl-C or, when a cycle is named, until its last event.
pub async fn run(nats: &NatsArgs, cycle: Option<String>, follow: bool, json: bool) -> Result<u8> {
    if !follow {
        eprintln!(
            "error: only live events can be shown: add -f to follow them (past events are in the cycle's report timeline)"
        );
        return Ok(exit::BAD_INPUT);
    }
    let subject = match &cycle {
        Some(c) => match protocol::CycleId::parse(c) {
            Ok(id) => subjects::events_of(&id),
            Err(e) => {
                eprintln!("error: cycle `{}`: {e}", crate::display::clean(c));
                return Ok(exit::BAD_INPUT);
            }
        },
        None => subjects::EVENT_WILDCARD.to_string(),
    };
    let client = match crate::client::connect_cli(nats).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(exit::UNREACHABLE);
        }
    };
    let mut sub = match client.subscribe(subject.clone()).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot subscribe to {subject}: {e}");
            return Ok(exit::UNREACHABLE);
        }
    };
    // The server has the subscription once a flush returns: from here no event is missed.
    if let Err(e) = client.flush().await {
        eprintln!("error: cannot subscribe to {subject}: {e}");
        return Ok(exit::UNREACHABLE);
    }
    eprintln!("following events on {subject} (Ctrl-C to stop)");
    loop {
        let msg = tokio::select! {
            m = sub.next() => m,
            _ = tokio::signal::ctrl_c() => return Ok(0),
        };
        let Some(msg) = msg else {
            eprintln!("error: lost the connection to NATS");
            return Ok(exit::UNREACHABLE);
        };
        match serde_json::from_slice::<Event>(&msg.payload) {
            Ok(ev) => {
                println!("{}", render(&ev, json));
                if cycle.is_some() && ends_cycle(&ev.body) {
                    return Ok(0);
                }
            }
            // Someone published something that is not an event: say so, keep following.
            Err(e) => eprintln!("warning: a message on {} is not an event ({e}); skipped", msg.subject),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::events::Step;
    use protocol::{CycleId, Role};

    #[test]
    fn json_lines_are_one_compact_object_that_reads_back() {
        let ev = Event::new(
            CycleId::parse("c1").expect("id"),
            Role::Writer,
            EventBody::Step {
                model: "m\nx".into(),
                step: Step::Pulling {
                    model: "m".into(),
                    digest: None,
                    completed: Some(5),
                    total: Some(10),
                    rate_bps: Some(1.0),
                },
            },
        );
        let line = render(&ev, true);
        assert!(!line.contains('\n'), "{line}");
        let back: Event = serde_json::from_str(&line).expect("parses");
        assert_eq!(back, ev);
        assert_eq!(serde_json::from_str::<serde_json::Value>(&line).expect("json")["event"], "step");
        assert!(
            render(&ev, false).contains("m\nx: pulling m: 5 B of 10 B (50%), 1 B/s, 5s left"),
            "{}",
            render(&ev, false)
        );
        assert!(ends_cycle(&EventBody::CycleCanceled));
        assert!(!ends_cycle(&EventBody::PhaseStarted { phase: protocol::events::Phase::Complete }));
    }
}
