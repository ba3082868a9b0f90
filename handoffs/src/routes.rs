//! Who sends which package to whom: the one table ([`route`]) that both the server's
//! permissions (`security::permissions` opens exactly these edges) and `consume`'s sender check
//! ([`check_sender`]) are made from.
//!
//! The table is a `match` over [`PackageKind`] with no wildcard arm, and [`PackageKind::of`] is
//! a `match` over every `Payload` variant: a new kind of package does not compile until the
//! table says who may send it.

use protocol::{Payload, Role};

/// The kinds of handoff package, one per `Payload` variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PackageKind {
    /// `cycle_plan`.
    CyclePlan,
    /// `verification_report`.
    VerificationReport,
    /// `benchmark_results`.
    BenchmarkResults,
    /// `escalation`.
    Escalation,
    /// `operator_decision`.
    OperatorDecision,
    /// `troubleshooting_log`.
    TroubleshootingLog,
    /// `reports_published`.
    ReportsPublished,
    /// `offloaded`: a reference to a package kept in the object store.
    Offloaded,
    /// `tune_request`.
    TuneRequest,
}

impl PackageKind {
    /// Every kind (a test checks it against `Payload::KINDS`).
    pub const ALL: [PackageKind; 9] = [
        PackageKind::CyclePlan,
        PackageKind::VerificationReport,
        PackageKind::BenchmarkResults,
        PackageKind::Escalation,
        PackageKind::OperatorDecision,
        PackageKind::TroubleshootingLog,
        PackageKind::ReportsPublished,
        PackageKind::Offloaded,
        PackageKind::TuneRequest,
    ];

    /// The kind of a payload.
    pub fn of(payload: &Payload) -> PackageKind {
        match payload {
            Payload::CyclePlan(_) => PackageKind::CyclePlan,
            Payload::VerificationReport(_) => PackageKind::VerificationReport,
            Payload::BenchmarkResults(_) => PackageKind::BenchmarkResults,
            Payload::Escalation(_) => PackageKind::Escalation,
            Payload::OperatorDecision(_) => PackageKind::OperatorDecision,
            Payload::TroubleshootingLog(_) => PackageKind::TroubleshootingLog,
            Payload::ReportsPublished(_) => PackageKind::ReportsPublished,
            Payload::Offloaded(_) => PackageKind::Offloaded,
            Payload::TuneRequest(_) => PackageKind::TuneRequest,
        }
    }

    /// The kind as written on the wire (`Payload::kind`).
    pub fn as_str(self) -> &'static str {
        match self {
            PackageKind::CyclePlan => "cycle_plan",
            PackageKind::VerificationReport => "verification_report",
            PackageKind::BenchmarkResults => "benchmark_results",
            PackageKind::Escalation => "escalation",
            PackageKind::OperatorDecision => "operator_decision",
            PackageKind::TroubleshootingLog => "troubleshooting_log",
            PackageKind::ReportsPublished => "reports_published",
            PackageKind::Offloaded => "offloaded",
            PackageKind::TuneRequest => "tune_request",
        }
    }
}

impl std::fmt::Display for PackageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One handoff: (sender, receiver).
pub type Edge = (Role, Role);

/// Along which edges a kind of package travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Only along these (sender, receiver) edges.
    Edges(&'static [Edge]),
    /// Along any edge some other kind travels: an offloaded reference, whose inner package is
    /// checked against the table again once it is fetched.
    AnyEdge,
}

/// The table: who sends each kind of package to whom.
pub fn route(kind: PackageKind) -> Route {
    use Role as R;
    match kind {
        PackageKind::CyclePlan => Route::Edges(&[(R::Main, R::Reader)]),
        // Several hosts: each Reader's verification goes to Main, which places the models and
        // hands each Writer its share.
        PackageKind::VerificationReport => {
            Route::Edges(&[(R::Reader, R::Writer), (R::Reader, R::Main), (R::Main, R::Writer)])
        }
        PackageKind::BenchmarkResults => Route::Edges(&[(R::Writer, R::Documentation)]),
        // The Reader escalates failed host checks before anything is deployed.
        PackageKind::Escalation => Route::Edges(&[(R::Writer, R::Debug), (R::Reader, R::Debug)]),
        PackageKind::OperatorDecision => Route::Edges(&[(R::Main, R::Debug)]),
        PackageKind::TroubleshootingLog => Route::Edges(&[(R::Debug, R::Documentation)]),
        PackageKind::ReportsPublished => Route::Edges(&[(R::Documentation, R::Main)]),
        PackageKind::Offloaded => Route::AnyEdge,
        // The Writer asks Debug for the next tuning candidate; Debug's proposal is a record in
        // the escalations bucket, as its decisions are.
        PackageKind::TuneRequest => Route::Edges(&[(R::Writer, R::Debug)]),
    }
}

/// Every edge of the cycle (each once, in table order): the handoff subjects the server lets
/// each sender publish on.
pub fn handoff_edges() -> Vec<Edge> {
    let mut out: Vec<Edge> = Vec::new();
    for kind in PackageKind::ALL {
        if let Route::Edges(edges) = route(kind) {
            for e in edges {
                if !out.contains(e) {
                    out.push(*e);
                }
            }
        }
    }
    out
}

/// The edges `kind` may travel.
pub fn edges_of(kind: PackageKind) -> Vec<Edge> {
    match route(kind) {
        Route::Edges(edges) => edges.to_vec(),
        Route::AnyEdge => handoff_edges(),
    }
}

/// The roles that may send `kind` (each once).
pub fn senders_of(kind: PackageKind) -> Vec<Role> {
    let mut out = Vec::new();
    for (from, _) in edges_of(kind) {
        if !out.contains(&from) {
            out.push(from);
        }
    }
    out
}

/// Whether `from` may send `kind` packages at all (`consume`'s check; the server's permissions
/// hold each sender to the edges it travels); the reason in words when not.
pub fn check_sender(kind: PackageKind, from: Role) -> Result<(), String> {
    let senders = senders_of(kind);
    if senders.contains(&from) {
        return Ok(());
    }
    let names: Vec<&str> = senders.iter().map(|r| r.as_str()).collect();
    Err(format!("{from} may not send {kind} packages (only {})", names.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_listed_once_under_its_wire_name() {
        let names: Vec<&str> = PackageKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names, Payload::KINDS.to_vec());
    }

    #[test]
    fn every_kind_has_a_sender_and_every_edge_joins_two_agents() {
        for kind in PackageKind::ALL {
            assert!(!senders_of(kind).is_empty(), "nobody may send {kind}");
            for (from, to) in edges_of(kind) {
                assert!(Role::AGENTS.contains(&from) && Role::AGENTS.contains(&to), "{kind}: {from} → {to}");
                assert_ne!(from, to, "{kind}");
                assert_eq!(check_sender(kind, from), Ok(()));
            }
        }
    }

    #[test]
    fn the_wrong_sender_is_named() {
        assert_eq!(
            check_sender(PackageKind::ReportsPublished, Role::Writer),
            Err("writer may not send reports_published packages (only documentation)".into())
        );
        assert_eq!(senders_of(PackageKind::VerificationReport), vec![Role::Reader, Role::Main]);
        assert!(check_sender(PackageKind::OperatorDecision, Role::Operator).is_err());
        // An offloaded reference may come from any agent that sends packages; its inner package
        // is checked once fetched.
        for agent in Role::AGENTS {
            assert_eq!(check_sender(PackageKind::Offloaded, agent), Ok(()));
        }
        assert!(check_sender(PackageKind::Offloaded, Role::Operator).is_err());
    }
}
