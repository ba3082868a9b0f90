//! Docker's `oom` events for one container, read while the engine in it is measured.
//!
//! The engine emits `oom` (type `container`) whenever the container's memory cgroup hits its
//! limit and the kernel's OOM killer acts — also when the process killed is a child (an engine's
//! model runner) and PID 1 lives on, where the container's `OOMKilled` flag stays false. The
//! watch is opened with `since` a second before it was asked for, so an event raised while the
//! stream was still connecting is replayed, not lost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bollard::models::EventMessage;
use bollard::query_parameters::EventsOptionsBuilder;
use futures::StreamExt;

use super::DockerRuntime;

/// One `oom` event the engine reported for a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OomEvent {
    /// The container's name (or its id when the event carries no name).
    pub container: String,
    /// When, in seconds since the Unix epoch (the engine's clock).
    pub time: i64,
}

impl OomEvent {
    /// The event in words, for evidence: `Docker event "oom" for container tc-x at 2026-…Z`.
    pub fn describe(&self) -> String {
        let at = chrono::DateTime::from_timestamp(self.time, 0)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_else(|| format!("unix time {}", self.time));
        format!("Docker event \u{201c}oom\u{201d} for container {} at {at}", self.container)
    }

    /// The `oom` event in an engine event message; `None` for any other message.
    pub fn from_message(m: &EventMessage) -> Option<OomEvent> {
        if m.action.as_deref() != Some("oom") {
            return None;
        }
        let actor = m.actor.as_ref();
        let name = actor.and_then(|a| a.attributes.as_ref()).and_then(|a| a.get("name")).cloned();
        let container = name.or_else(|| actor.and_then(|a| a.id.clone())).unwrap_or_else(|| "?".into());
        Some(OomEvent { container, time: m.time.unwrap_or(0) })
    }
}

/// A running subscription to one container's `oom` events; stops when dropped.
#[derive(Debug)]
pub struct OomWatch {
    seen: Arc<Mutex<Vec<OomEvent>>>,
    failed: Arc<Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl OomWatch {
    /// The events seen so far.
    pub fn events(&self) -> Vec<OomEvent> {
        self.seen.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Why the stream ended early, when it did (the engine went away, the API refused).
    pub fn failure(&self) -> Option<String> {
        self.failed.lock().ok().and_then(|f| f.clone())
    }
}

impl Drop for OomWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DockerRuntime {
    /// Starts reading the engine's `oom` events for container `id` (name or id) in the
    /// background: `GET /events?since=…&filters={"type":["container"],"container":[id],"event":["oom"]}`.
    /// Must be called inside a Tokio runtime.
    pub fn watch_oom(&self, id: &str) -> OomWatch {
        let since = (chrono::Utc::now().timestamp() - 1).to_string();
        let filters: HashMap<&str, Vec<&str>> =
            HashMap::from([("type", vec!["container"]), ("container", vec![id]), ("event", vec!["oom"])]);
        let opts = EventsOptionsBuilder::new().since(&since).filters(&filters).build();
        let mut stream = self.docker.events(Some(opts));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(Mutex::new(None));
        let (s, f) = (seen.clone(), failed.clone());
        let task = tokio::spawn(async move {
            while let Some(item) = stream.next().await {
                match item {
                    Ok(m) => {
                        if let (Some(ev), Ok(mut v)) = (OomEvent::from_message(&m), s.lock()) {
                            v.push(ev);
                        }
                    }
                    Err(e) => {
                        if let Ok(mut slot) = f.lock() {
                            *slot = Some(format!("Docker's event stream failed: {e}"));
                        }
                        break;
                    }
                }
            }
        });
        OomWatch { seen, failed, task }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::EventActor;

    #[test]
    fn only_oom_messages_become_events_named_by_the_container() {
        let msg = |action: &str, name: Option<&str>| EventMessage {
            action: Some(action.into()),
            actor: Some(EventActor {
                id: Some("e8bbc18e3283".into()),
                attributes: name.map(|n| HashMap::from([("name".to_string(), n.to_string())])),
            }),
            time: Some(1_796_063_476),
            ..Default::default()
        };
        let ev = OomEvent::from_message(&msg("oom", Some("tc-c1-m"))).unwrap();
        assert_eq!(ev, OomEvent { container: "tc-c1-m".into(), time: 1_796_063_476 });
        assert_eq!(ev.describe(), "Docker event \u{201c}oom\u{201d} for container tc-c1-m at 2026-11-30T18:31:16Z");
        assert_eq!(OomEvent::from_message(&msg("oom", None)).unwrap().container, "e8bbc18e3283");
        assert_eq!(OomEvent::from_message(&msg("die", Some("tc-c1-m"))), None);
    }
}
