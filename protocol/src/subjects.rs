//! NATS names: subjects, streams, consumers, buckets.
//!
//! Architecture invariant: stream subjects (`tc.handoff.>`, `tc.evt.>`, `tc.dlq.>`) and
//! request/reply subjects (`tc.svc.>`) never overlap, so a request is never answered by a
//! stream's PubAck.

use crate::ids::{CycleId, HostId, Role};

/// Stream holding handoff packages.
pub const HANDOFF_STREAM: &str = "TC_HANDOFFS";
/// Stream holding progress events.
pub const EVENT_STREAM: &str = "TC_EVENTS";
/// Stream holding packages that could not be processed.
pub const DEAD_LETTER_STREAM: &str = "TC_DEAD_LETTERS";
/// KV bucket: which packages each role has applied.
pub const LEDGER_BUCKET: &str = "tc_ledger";
/// KV bucket: cycle records.
pub const CYCLES_BUCKET: &str = "tc_cycles";
/// KV bucket: escalation records.
pub const ESCALATIONS_BUCKET: &str = "tc_escalations";
/// KV bucket: per-model results kept as they are measured.
pub const RESULTS_BUCKET: &str = "tc_results";
/// KV bucket: agent heartbeats.
pub const HEARTBEATS_BUCKET: &str = "tc_heartbeats";

/// The key of an agent's heartbeat in [`HEARTBEATS_BUCKET`]: `<role>-<host>` for the host-bound
/// Reader and Writer, `<role>` for the others.
pub fn heartbeat_key(role: Role, host: &str) -> String {
    if role.host_bound() { format!("{role}-{host}") } else { role.to_string() }
}
/// Object store bucket for large payloads and answers.
pub const BLOB_BUCKET: &str = "tc_blobs";

/// Subjects of the handoff stream.
pub const HANDOFF_WILDCARD: &str = "tc.handoff.>";
/// Subjects of the event stream.
pub const EVENT_WILDCARD: &str = "tc.evt.>";
/// Subjects of the dead-letter stream.
pub const DEAD_LETTER_WILDCARD: &str = "tc.dlq.>";

/// The subject a package from `from` to `to` in `cycle` is published on:
/// `tc.handoff.<to>.<from>.<host>.<cycle>` when `to` is host-bound (Reader, Writer),
/// `tc.handoff.<to>.<from>.<cycle>` otherwise.
///
/// The sender's role is part of the subject so the server can hold each user to its own
/// sender token (`handoffs::security::permissions`) and `consume` can refuse an envelope whose
/// `from` is not the subject's sender (who sends which package to whom: `handoffs::routes`).
pub fn handoff(from: Role, to: Role, host: &HostId, cycle: &CycleId) -> String {
    if to.host_bound() {
        format!("tc.handoff.{}.{}.{}.{}", to.as_str(), from.as_str(), host, cycle)
    } else {
        format!("tc.handoff.{}.{}.{}", to.as_str(), from.as_str(), cycle)
    }
}

/// What a handoff subject says: receiver and sender (`None` when it is not a handoff subject
/// of this shape or names a role that does not exist).
pub fn handoff_parties(subject: &str) -> Option<(Role, Role)> {
    let mut t = subject.split('.');
    if t.next() != Some("tc") || t.next() != Some("handoff") {
        return None;
    }
    let to = role_named(t.next()?)?;
    let from = role_named(t.next()?)?;
    Some((to, from))
}

fn role_named(s: &str) -> Option<Role> {
    Role::AGENTS.into_iter().chain([Role::Operator]).find(|r| r.as_str() == s)
}

/// Every handoff to `to`, from any sender, host and cycle: `tc.handoff.<to>.>`.
pub fn handoffs_to(to: Role) -> String {
    format!("tc.handoff.{}.>", to.as_str())
}

/// Every handoff `from` sends to `to`, on any host and in any cycle: `tc.handoff.<to>.<from>.>`.
pub fn handoffs_between(from: Role, to: Role) -> String {
    format!("tc.handoff.{}.{}.>", to.as_str(), from.as_str())
}

/// The filter of a role's durable consumer: every sender, and for host-bound roles only its host.
pub fn handoff_filter(role: Role, host: &HostId) -> String {
    if role.host_bound() { format!("tc.handoff.{}.*.{}.>", role.as_str(), host) } else { handoffs_to(role) }
}

/// The inbox prefix of a NATS user (`_INBOX.<user>`): replies to its requests, publish acks and
/// pull deliveries arrive under it, and the server lets only that user subscribe there.
pub fn inbox_prefix(user: &str) -> String {
    format!("_INBOX.{user}")
}

/// The durable consumer name of a role.
pub fn consumer_name(role: Role, host: &HostId) -> String {
    if role.host_bound() { format!("{}-{}", role.as_str(), host) } else { role.as_str().to_string() }
}

/// The subject events of a cycle are published on.
pub fn event(cycle: &CycleId, from: Role) -> String {
    format!("tc.evt.{}.{}", cycle, from.as_str())
}

/// Every event `from` publishes, in any cycle: `tc.evt.*.<from>`.
pub fn events_from(from: Role) -> String {
    format!("tc.evt.*.{}", from.as_str())
}

/// Subject filter for all events of one cycle.
pub fn events_of(cycle: &CycleId) -> String {
    format!("tc.evt.{cycle}.>")
}

/// Dead-letter subject for a role.
pub fn dead_letter(role: Role) -> String {
    format!("tc.dlq.{}", role.as_str())
}

/// Main's operator request subject.
pub const OPERATOR_SUBJECT: &str = "tc.svc.main.operator";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_and_service_subjects_never_overlap() {
        let c = CycleId::parse("c").expect("valid");
        let h = HostId::local();
        for r in Role::AGENTS {
            assert!(handoff(Role::Main, r, &h, &c).starts_with("tc.handoff."));
            assert!(event(&c, r).starts_with("tc.evt."));
        }
        assert!(OPERATOR_SUBJECT.starts_with("tc.svc."));
        for s in [HANDOFF_WILDCARD, EVENT_WILDCARD, DEAD_LETTER_WILDCARD] {
            assert!(!s.starts_with("tc.svc"));
        }
    }

    #[test]
    fn host_bound_roles_carry_the_host() {
        let c = CycleId::parse("c").expect("valid");
        let h = HostId::parse("gpu2").expect("valid");
        assert_eq!(handoff(Role::Reader, Role::Writer, &h, &c), "tc.handoff.writer.reader.gpu2.c");
        assert_eq!(handoff_filter(Role::Writer, &h), "tc.handoff.writer.*.gpu2.>");
        assert_eq!(handoff(Role::Writer, Role::Debug, &h, &c), "tc.handoff.debug.writer.c");
        assert_eq!(handoffs_between(Role::Reader, Role::Writer), "tc.handoff.writer.reader.>");
        assert_eq!(handoff_filter(Role::Debug, &h), handoffs_to(Role::Debug));
        assert_eq!(events_from(Role::Reader), "tc.evt.*.reader");
    }

    #[test]
    fn the_subject_names_receiver_and_sender() {
        let c = CycleId::parse("c").expect("valid");
        let h = HostId::local();
        for to in Role::AGENTS {
            for from in Role::AGENTS {
                assert_eq!(handoff_parties(&handoff(from, to, &h, &c)), Some((to, from)));
            }
        }
        assert_eq!(handoff_parties("tc.handoff.debug.mallory.c"), None);
        assert_eq!(handoff_parties("tc.evt.c.main"), None);
        assert_eq!(handoff_parties("tc.handoff.debug"), None);
    }
}
