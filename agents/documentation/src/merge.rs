//! A several-host cycle's results: one `benchmark_results` per host, merged into the one set the
//! reports are rendered from (a pure function, so a redelivery merges the same way). The
//! benchmark report's sections that only such a cycle has (every host's facts and checks, where
//! each model was placed and why) are in `render/host.rs`.

use protocol::messages::{BenchmarkResults, HostVerification, Placement};

/// Why the hosts' results could not be merged.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MergeError {
    /// No parts at all.
    #[error("no host's results to merge")]
    Empty,
    /// A part from a host the placement does not name.
    #[error("results from host `{0}`, which the placement does not name")]
    UnknownHost(String),
}

/// Merges each host's results (in any order) into one set: the models of every host in plan
/// order (each once; the first copy is kept), the verdict of the host each model was placed on,
/// every host's facts and checks in `hosts`, the concurrent phase from the host that ran it, and
/// an abort named by its host.
pub fn merge(placement: &Placement, mut parts: Vec<BenchmarkResults>) -> Result<BenchmarkResults, MergeError> {
    let pos = |p: &BenchmarkResults| placement.hosts.iter().position(|h| *h == p.verification.host.host_id);
    if let Some(p) = parts.iter().find(|p| pos(p).is_none()) {
        return Err(MergeError::UnknownHost(p.verification.host.host_id.clone()));
    }
    parts.sort_by_key(|p| pos(p));
    let first = parts.first().ok_or(MergeError::Empty)?;
    let mut verification = first.verification.clone();
    verification.placement = Some(placement.clone());
    for m in &placement.models {
        let placed = parts.iter().find(|p| p.verification.host.host_id == m.host);
        if let (Some(p), Some(slot)) = (placed, verification.verdicts.get_mut(m.index as usize))
            && let Some(v) = p.verification.verdicts.get(m.index as usize)
        {
            *slot = v.clone();
        }
    }
    let mut models = Vec::new();
    let mut escalations = Vec::new();
    let mut aborted = None;
    let mut concurrent = None;
    let mut hosts = Vec::new();
    for p in &parts {
        let host = &p.verification.host.host_id;
        for m in &p.models {
            if !models.iter().any(|x: &protocol::results::ModelResult| x.index == m.index) {
                models.push(m.clone());
            }
        }
        escalations.extend(p.escalations.iter().cloned());
        if aborted.is_none()
            && let Some(a) = &p.aborted
        {
            aborted = Some(format!("host {host}: {a}"));
        }
        if placement.concurrent.as_deref() == Some(host.as_str()) {
            concurrent = p.concurrent.clone();
        }
        hosts.push(HostVerification {
            host: p.verification.host.clone(),
            checks: p.verification.checks.clone(),
            verdicts: p.verification.verdicts.clone(),
        });
    }
    models.sort_by_key(|m| m.index);
    escalations.dedup();
    Ok(BenchmarkResults { verification, models, escalations, aborted, concurrent, hosts })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::report as fixture;
    use protocol::messages::{HostVerdict, ModelPlacement};
    use protocol::results::Fit;

    /// The fixture's four models split over two hosts: 0 and 2 on `a`, 1 and 3 on `b`.
    fn parts() -> (Placement, Vec<BenchmarkResults>) {
        let whole = fixture().results;
        let hosts = vec!["a".to_string(), "b".to_string()];
        let placement = Placement {
            hosts: hosts.clone(),
            models: whole
                .models
                .iter()
                .map(|m| ModelPlacement {
                    index: m.index,
                    model: m.model.clone(),
                    host: hosts[(m.index % 2) as usize].clone(),
                    fit: Fit::Go,
                    reason: "test".into(),
                    verdicts: vec![HostVerdict { host: "a".into(), fit: Fit::Go, reason: "ok".into() }],
                })
                .collect(),
            concurrent: None,
            concurrent_reason: String::new(),
            round: 0,
        };
        let part = |h: &str| {
            let mut p = whole.clone();
            p.verification.host.host_id = h.into();
            p.verification.placement = Some(placement.clone());
            p.models.retain(|m| placement.host_of(m.index as usize) == Some(h));
            for v in &mut p.verification.verdicts {
                v.reason = format!("{h}'s verdict");
            }
            p.escalations.retain(|_| h == "b");
            p
        };
        let parts = vec![part("b"), part("a")];
        (placement, parts)
    }

    #[test]
    fn every_model_appears_once_in_plan_order_with_its_hosts_verdict() {
        let (placement, parts) = parts();
        let n = fixture().results.models.len();
        let m = merge(&placement, parts).expect("merge");
        assert_eq!(m.models.iter().map(|x| x.index).collect::<Vec<_>>(), (0..n as u32).collect::<Vec<_>>());
        assert_eq!(m.hosts.iter().map(|h| h.host.host_id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        let expected: Vec<String> =
            (0..m.verification.verdicts.len()).map(|i| format!("{}'s verdict", ["a", "b"][i % 2])).collect();
        assert_eq!(m.verdicts_reasons(), expected);
        assert_eq!(m.escalations.len(), 1);
    }

    #[test]
    fn a_repeated_model_is_kept_once_and_a_stranger_host_is_refused() {
        let (placement, mut parts) = parts();
        let dup = parts[0].clone();
        parts.push(dup);
        let m = merge(&placement, parts.clone()).expect("merge");
        assert_eq!(m.models.len(), fixture().results.models.len());
        parts[0].verification.host.host_id = "c".into();
        assert_eq!(merge(&placement, parts), Err(MergeError::UnknownHost("c".into())));
        assert_eq!(merge(&placement, Vec::new()), Err(MergeError::Empty));
    }

    #[test]
    fn the_report_names_each_models_host_and_shows_every_host_and_the_placement() {
        let (placement, parts) = parts();
        let input = crate::render::ReportInput { results: merge(&placement, parts).expect("merge"), ..fixture() };
        let files = crate::render::render_reports(&input);
        let page = |name: &str| {
            let f = files.iter().find(|f| f.path == name).expect("page");
            String::from_utf8(f.bytes.clone()).expect("utf-8")
        };
        let report = page("benchmark-report.md");
        assert!(report.contains("| Model | Host | Outcome |"), "no host column:\n{report}");
        assert!(report.contains("### Host a\n") && report.contains("### Host b\n"), "{report}");
        assert!(report.contains("## Placement") && report.contains("| Model | Host | Why | a | b |"), "{report}");
        let first = &input.results.models[0].model;
        assert!(report.contains(&format!("{first} (host a)")), "{report}");
        let guide = page("deployment-guide.md");
        assert!(guide.contains(&format!("## {first} (host a)")), "{guide}");
        assert!(crate::checks::check_reports(&files).is_empty(), "{:?}", crate::checks::check_reports(&files));
    }

    trait Reasons {
        fn verdicts_reasons(&self) -> Vec<String>;
    }

    impl Reasons for BenchmarkResults {
        fn verdicts_reasons(&self) -> Vec<String> {
            self.verification.verdicts.iter().map(|v| v.reason.clone()).collect()
        }
    }
}
