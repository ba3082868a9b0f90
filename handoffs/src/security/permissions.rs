//! The permission table: which subjects each NATS user (one per agent role, one for the
//! operator) may publish and subscribe to. Pure data, no I/O: `config` writes it into the
//! server's configuration, and the handoff edges come from the one table of who sends which
//! package to whom (`routes`).

use crate::bus::EVENT_FOLLOWER;
use crate::routes;
use protocol::Role;
use protocol::subjects as subj;

/// Every user the generated configuration defines: the five agents, then the operator.
pub const USERS: [Role; 6] = [Role::Main, Role::Reader, Role::Writer, Role::Debug, Role::Documentation, Role::Operator];

/// Publish and subscribe rules of one NATS user. Deny wins over allow (server semantics).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Permissions {
    /// Subjects the user may publish to.
    pub publish_allow: Vec<String>,
    /// Carve-outs from `publish_allow`.
    pub publish_deny: Vec<String>,
    /// Subjects the user may subscribe to.
    pub subscribe_allow: Vec<String>,
    /// May publish one reply to the reply subject of each request it received
    /// (`allow_responses`): Main answering the operator, without a blanket `_INBOX.>` publish.
    pub allow_responses: bool,
}

impl Permissions {
    /// Whether the server would let this user publish to `subject` (responses aside).
    pub fn may_publish(&self, subject: &str) -> bool {
        self.publish_allow.iter().any(|p| subject_matches(p, subject))
            && !self.publish_deny.iter().any(|p| subject_matches(p, subject))
    }

    /// Whether the server would let this user subscribe to `subject` (a literal subject).
    pub fn may_subscribe(&self, subject: &str) -> bool {
        self.subscribe_allow.iter().any(|p| subject_matches(p, subject))
    }
}

/// NATS subject matching: `*` is one token, `>` one or more trailing tokens.
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Streams behind the KV buckets and the object store.
fn bucket_streams() -> Vec<String> {
    let mut v: Vec<String> = [
        subj::LEDGER_BUCKET,
        subj::CYCLES_BUCKET,
        subj::ESCALATIONS_BUCKET,
        subj::RESULTS_BUCKET,
        subj::HEARTBEATS_BUCKET,
    ]
    .iter()
    .map(|b| format!("KV_{b}"))
    .collect();
    v.push(format!("OBJ_{}", subj::BLOB_BUCKET));
    v
}

/// Consumer names of the roles that are not bound to a host (exact tokens), plus Main's
/// event follower. Host-bound roles (`reader-<host>`, `writer-<host>`) cannot be named by a
/// whole-token wildcard, so those roles get `*` with these names carved out.
const FIXED_CONSUMERS: [&str; 4] = ["main", crate::bus::EVENT_FOLLOWER, "debug", "documentation"];

/// The permission table.
///
/// Every agent (what `Bus::open`, `consume`, KV and the object store really send):
/// - JetStream API, narrowed per stream instead of `$JS.API.>`: `$JS.API.INFO` (account
///   query before creating a bucket); `STREAM.INFO` and `STREAM.CREATE` of the three streams and
///   the six bucket streams only (any agent may start first and create them; CREATE of an
///   existing stream with another config fails, and `STREAM.UPDATE`/`DELETE` are allowed to
///   nobody, so no agent can re-route or drop a stream); reads of the buckets (`DIRECT.GET`,
///   `STREAM.MSG.GET`), ordered consumers on the buckets (`CONSUMER.CREATE`/`DELETE` of those
///   streams, `$JS.FC.<stream>.>` flow-control replies); `CONSUMER.INFO` (read-only).
/// - Its own handoff consumer: `CONSUMER.CREATE.TC_HANDOFFS.<name>.tc.handoff.<role>.>` — the
///   filter is part of the subject (the server checks it against the body), so an agent cannot
///   open a consumer on another role's packages; `CONSUMER.MSG.NEXT` and `$JS.ACK` of its own
///   consumer name.
/// - Its own events `tc.evt.*.<role>`, its own dead letters `tc.dlq.<role>`, its own heartbeat
///   key and its own ledger keys (`<consumer>.<package id>`).
/// - The object store: publishing chunks and metadata (`$O.tc_blobs.>`): any publisher may
///   offload a large package. `STREAM.PURGE.OBJ_tc_blobs` (which deleting an object, or
///   overwriting one, sends to drop its chunks) is allowed to nobody: `Bus::put_blob` never
///   overwrites (a different body for an existing key goes under a new key), so the store is
///   append-only and no agent can purge another's blobs.
/// - Subscribe only its own inbox `_INBOX.<role>.>` (API replies, publish acks, pull and
///   ordered-consumer delivery; `connect` sets the prefix from the user name), so no agent can
///   read another user's replies.
///
/// Per role, the handoff edges of the cycle (`routes::handoff_edges`, from the one table of who
/// sends which package to whom) and the buckets it writes. A handoff subject names receiver and
/// sender (`tc.handoff.<to>.<from>.…`), and each user may publish only with its own sender token,
/// so the sender of every stored package is authenticated; `consume` refuses an envelope whose
/// `from` is not the subject's sender or whose kind may not travel that edge (`routes::check`,
/// the same table: only Main sends cycle plans and operator decisions, …).
/// - Main → `tc.handoff.reader.main.>` (cycle plan), `tc.handoff.debug.main.>` (operator
///   decision); writes `tc_cycles`; its event follower (`main-events` on `TC_EVENTS`);
///   subscribes `tc.svc.main.operator` and answers with `allow_responses`.
/// - Reader → `tc.handoff.writer.reader.>` (verification report).
/// - Writer → `tc.handoff.debug.writer.>` (escalation), `tc.handoff.documentation.writer.>`
///   (benchmark results); writes `tc_results`.
/// - Debug → `tc.handoff.documentation.debug.>` (troubleshooting log); writes `tc_escalations`.
/// - Documentation → `tc.handoff.main.documentation.>` (reports published); writes `tc_results`.
///
/// Operator (the CLI): publish `tc.svc.main.operator` only; subscribe `_INBOX.operator.>`
/// (replies) and `tc.evt.>` (`threadcycle up` follows events). No JetStream access: everything
/// else goes through Main.
///
/// Known limits, stated rather than hidden: Reader and Writer share the `*` consumer-name token,
/// so a compromised Reader could pull from `writer-<host>`; object metadata subjects are not
/// per owner, so an agent could write a deletion marker over another's blob (its chunks stay,
/// since nobody may purge, and the reader gets an error from the SHA-256 check or the missing
/// object, never other bytes).
pub fn permissions(role: Role) -> Permissions {
    let mut p = Permissions::default();
    let pub_ = |p: &mut Permissions, s: String| p.publish_allow.push(s);
    let inbox = format!("{}.>", subj::inbox_prefix(role.as_str()));
    if role == Role::Operator {
        pub_(&mut p, subj::OPERATOR_SUBJECT.into());
        p.subscribe_allow = vec![inbox, subj::EVENT_WILDCARD.into()];
        return p;
    }
    let r = role.as_str();
    // JetStream API, per stream.
    pub_(&mut p, "$JS.API.INFO".into());
    let mut streams: Vec<String> =
        [subj::HANDOFF_STREAM, subj::EVENT_STREAM, subj::DEAD_LETTER_STREAM].iter().map(|s| s.to_string()).collect();
    streams.extend(bucket_streams());
    for s in &streams {
        pub_(&mut p, format!("$JS.API.STREAM.INFO.{s}"));
        pub_(&mut p, format!("$JS.API.STREAM.CREATE.{s}"));
    }
    for s in bucket_streams() {
        pub_(&mut p, format!("$JS.API.DIRECT.GET.{s}"));
        pub_(&mut p, format!("$JS.API.DIRECT.GET.{s}.>"));
        pub_(&mut p, format!("$JS.API.STREAM.MSG.GET.{s}"));
        pub_(&mut p, format!("$JS.API.CONSUMER.CREATE.{s}"));
        pub_(&mut p, format!("$JS.API.CONSUMER.CREATE.{s}.>"));
        pub_(&mut p, format!("$JS.API.CONSUMER.DELETE.{s}.*"));
        pub_(&mut p, format!("$JS.FC.{s}.>"));
    }
    pub_(&mut p, "$JS.API.CONSUMER.INFO.>".into());
    // Its own handoff consumer and ledger/heartbeat keys.
    let name = if role.host_bound() { "*".to_string() } else { r.to_string() };
    pub_(&mut p, format!("$JS.API.CONSUMER.CREATE.{}.{name}.{}", subj::HANDOFF_STREAM, subj::handoffs_to(role)));
    pub_(&mut p, format!("$JS.API.CONSUMER.MSG.NEXT.{}.{name}", subj::HANDOFF_STREAM));
    pub_(&mut p, format!("$JS.ACK.{}.{name}.>", subj::HANDOFF_STREAM));
    pub_(&mut p, format!("$KV.{}.{name}.>", subj::LEDGER_BUCKET));
    pub_(&mut p, format!("$KV.{}.{name}", subj::HEARTBEATS_BUCKET));
    if role.host_bound() {
        for n in FIXED_CONSUMERS {
            p.publish_deny.push(format!("$JS.API.CONSUMER.CREATE.{}.{n}.>", subj::HANDOFF_STREAM));
            p.publish_deny.push(format!("$JS.API.CONSUMER.MSG.NEXT.{}.{n}", subj::HANDOFF_STREAM));
            p.publish_deny.push(format!("$JS.ACK.{}.{n}.>", subj::HANDOFF_STREAM));
            p.publish_deny.push(format!("$KV.{}.{n}.>", subj::LEDGER_BUCKET));
            p.publish_deny.push(format!("$KV.{}.{n}", subj::HEARTBEATS_BUCKET));
        }
    }
    // Own events and dead letters; the object store.
    pub_(&mut p, subj::events_from(role));
    pub_(&mut p, subj::dead_letter(role));
    pub_(&mut p, format!("$O.{}.>", subj::BLOB_BUCKET));
    p.subscribe_allow.push(inbox);
    // The edges of the cycle, with this role's own sender token.
    for (from, to) in routes::handoff_edges() {
        if from == role {
            pub_(&mut p, subj::handoffs_between(from, to));
        }
    }
    match role {
        Role::Main => {
            // Several hosts: Main keeps the hosts' reports and the placement in the results
            // bucket.
            pub_(&mut p, format!("$KV.{}.>", subj::RESULTS_BUCKET));
            pub_(&mut p, format!("$KV.{}.>", subj::CYCLES_BUCKET));
            pub_(&mut p, format!("$JS.API.CONSUMER.CREATE.{}.{EVENT_FOLLOWER}", subj::EVENT_STREAM));
            pub_(&mut p, format!("$JS.API.CONSUMER.MSG.NEXT.{}.{EVENT_FOLLOWER}", subj::EVENT_STREAM));
            pub_(&mut p, format!("$JS.ACK.{}.{EVENT_FOLLOWER}.>", subj::EVENT_STREAM));
            p.subscribe_allow.push(subj::OPERATOR_SUBJECT.into());
            p.allow_responses = true;
        }
        Role::Reader => {}
        Role::Writer => {
            pub_(&mut p, format!("$KV.{}.>", subj::RESULTS_BUCKET));
        }
        Role::Debug => {
            pub_(&mut p, format!("$KV.{}.>", subj::ESCALATIONS_BUCKET));
        }
        Role::Documentation => {
            pub_(&mut p, format!("$KV.{}.>", subj::RESULTS_BUCKET));
        }
        Role::Operator => {}
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consume::check_sender;
    use crate::routes::PackageKind;
    use protocol::messages::ReportsPublished;
    use protocol::{CycleId, Envelope, HostId, Payload};

    #[test]
    fn wildcards_match_like_the_server() {
        assert!(subject_matches("tc.handoff.main.>", "tc.handoff.main.c1"));
        assert!(subject_matches("tc.handoff.writer.*.local.>", "tc.handoff.writer.reader.local.c1"));
        assert!(!subject_matches("tc.handoff.main.>", "tc.handoff.main"));
        assert!(subject_matches("tc.evt.*.reader", "tc.evt.c1.reader"));
        assert!(!subject_matches("tc.evt.*.reader", "tc.evt.c1.writer"));
        assert!(subject_matches("$JS.API.INFO", "$JS.API.INFO"));
        assert!(!subject_matches("$JS.API.INFO", "$JS.API.INFO.x"));
    }

    /// The table lets each role do what its code does.
    #[test]
    fn every_role_may_do_its_real_work() {
        let c = CycleId::parse("c1").expect("id");
        let h = HostId::local();
        let edges = routes::handoff_edges();
        for (from, to) in &edges {
            assert!(permissions(*from).may_publish(&subj::handoff(*from, *to, &h, &c)), "{from} → {to}");
        }
        for from in Role::AGENTS {
            for to in Role::AGENTS {
                if !edges.contains(&(from, to)) {
                    assert!(
                        !permissions(from).may_publish(&subj::handoff(from, to, &h, &c)),
                        "{from} must not send to {to}"
                    );
                }
                // Nobody may use another role's sender token.
                for forged in USERS {
                    if forged != from {
                        assert!(
                            !permissions(from).may_publish(&subj::handoff(forged, to, &h, &c)),
                            "{from} may pose as {forged} towards {to}"
                        );
                    }
                }
            }
            let p = permissions(from);
            assert!(p.may_publish(&subj::event(&c, from)));
            assert!(p.may_publish(&subj::dead_letter(from)));
            let name = subj::consumer_name(from, &h);
            assert!(p.may_publish(&format!(
                "$JS.API.CONSUMER.CREATE.TC_HANDOFFS.{name}.{}",
                subj::handoff_filter(from, &h)
            )));
            assert!(p.may_publish(&format!("$JS.API.CONSUMER.MSG.NEXT.TC_HANDOFFS.{name}")));
            assert!(p.may_publish(&format!("$KV.tc_ledger.{name}.0190")));
            assert!(p.may_subscribe(&format!("_INBOX.{}.abc.1", from.as_str())));
            assert!(!p.may_subscribe("_INBOX.abc.1"));
            assert!(!p.may_publish("$JS.API.STREAM.PURGE.OBJ_tc_blobs"));
            assert!(!p.may_subscribe(subj::OPERATOR_SUBJECT) || from == Role::Main);
            assert!(!p.may_publish(subj::OPERATOR_SUBJECT));
        }
        let op = permissions(Role::Operator);
        assert!(op.may_publish(subj::OPERATOR_SUBJECT));
        assert!(op.may_subscribe("tc.evt.c1.main"));
        assert!(!op.may_publish("$JS.API.INFO"));
        assert!(permissions(Role::Main).may_subscribe(subj::OPERATOR_SUBJECT));
        // Host-bound roles cannot take over the fixed consumers.
        let r = permissions(Role::Reader);
        assert!(!r.may_publish("$JS.API.CONSUMER.MSG.NEXT.TC_HANDOFFS.main"));
        assert!(!r.may_publish("$JS.API.CONSUMER.CREATE.TC_HANDOFFS.main.tc.handoff.reader.local.>"));
        assert!(!r.may_publish("$KV.tc_heartbeats.documentation"));
        assert!(r.may_publish("$KV.tc_heartbeats.reader-local"));
    }

    /// The server's permissions and `consume`'s check come from the same table: the server
    /// opens a handoff subject exactly when some kind travels that edge, and `consume` accepts a
    /// kind from exactly the senders the server lets publish it somewhere.
    #[test]
    fn permissions_and_consume_agree() {
        let c = CycleId::parse("c1").expect("id");
        let h = HostId::local();
        for from in USERS {
            for to in Role::AGENTS {
                let allowed = permissions(from).may_publish(&subj::handoff(from, to, &h, &c));
                let travelled: Vec<PackageKind> =
                    PackageKind::ALL.into_iter().filter(|k| routes::edges_of(*k).contains(&(from, to))).collect();
                assert_eq!(allowed, !travelled.is_empty(), "{from} → {to}: server {allowed}, table {travelled:?}");
            }
            for kind in PackageKind::ALL {
                let publishable = routes::edges_of(kind)
                    .iter()
                    .any(|(f, to)| *f == from && permissions(from).may_publish(&subj::handoff(from, *to, &h, &c)));
                assert_eq!(routes::check_sender(kind, from).is_ok(), publishable, "{from} sends {kind}");
            }
            // `consume`'s check on a real envelope says what the table says.
            let env = Envelope::new(
                c.clone(),
                from,
                Role::Main,
                None,
                Payload::ReportsPublished(ReportsPublished {
                    dir: "d".into(),
                    files: vec![],
                    measured: 0,
                    not_measured: 0,
                    aborted: None,
                }),
            );
            assert_eq!(
                check_sender(&subj::handoff(from, Role::Main, &h, &c), &env).is_ok(),
                routes::check_sender(PackageKind::ReportsPublished, from).is_ok(),
                "{from}"
            );
        }
    }
}
