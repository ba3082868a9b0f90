//! Mutation fuzzing with counts for the inputs `protocol` decodes: plan files and handoff
//! envelopes. Each class prints `FUZZ class=… inputs=… accepted=… refused=… panics=0`;
//! `bench/fuzz.sh` runs them at 10,000 inputs each (`FUZZ_CASES`), `cargo test` at a few hundred.

use protocol::envelope::{Envelope, Payload};
use protocol::messages::{CyclePlan, OperatorDecision, ReportsPublished};
use protocol::plan::Plan;
use protocol::{CycleId, Role};
use testkit::mutate::{cases, run};

/// Every plan the project ships, as text.
fn plan_texts() -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../plans");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| (p.display().to_string(), std::fs::read_to_string(&p).expect("plan text")))
        .collect();
    out.sort();
    assert!(out.len() >= 2, "expected the shipped plans under {}", dir.display());
    out
}

#[test]
fn fuzz_plan_files() {
    let samples: Vec<Vec<u8>> = plan_texts().into_iter().map(|(_, t)| t.into_bytes()).collect();
    let t = run("plan-toml", &samples, cases(300), |input| {
        let text = String::from_utf8_lossy(input);
        match Plan::from_toml(&text) {
            Ok(_) => true,
            Err(e) => {
                // A refusal names what is wrong.
                assert!(!e.to_string().is_empty(), "an empty error for {text:?}");
                false
            }
        }
    });
    t.report();
}

#[test]
fn fuzz_handoff_envelopes() {
    let cycle = CycleId::generate(chrono::Utc::now());
    let mut samples: Vec<Vec<u8>> = plan_texts()
        .into_iter()
        .map(|(source, text)| {
            let plan = Plan::from_toml(&text).expect("shipped plans are valid");
            let payload = Payload::CyclePlan(Box::new(CyclePlan {
                plan,
                plan_hash: "0".repeat(64),
                plan_source: source,
                host: "local".into(),
                hosts: vec!["local".into(), "gpu2".into()],
            }));
            Envelope::new(cycle.clone(), Role::Main, Role::Reader, None, payload).to_bytes()
        })
        .collect();
    let decision = OperatorDecision { escalation: "e-1".into(), option: Some(2), action: None, by: "op".into() };
    samples.push(
        Envelope::new(cycle.clone(), Role::Main, Role::Debug, None, Payload::OperatorDecision(decision)).to_bytes(),
    );
    let published = ReportsPublished {
        dir: "docs-out/x".into(),
        files: vec!["README.md".into()],
        measured: 9,
        not_measured: 1,
        aborted: None,
    };
    samples.push(
        Envelope::new(cycle, Role::Documentation, Role::Main, None, Payload::ReportsPublished(published)).to_bytes(),
    );
    let t = run("envelope-json", &samples, cases(300), |input| match Envelope::from_bytes(input) {
        Ok(e) => {
            // What decodes re-encodes and decodes to the same envelope.
            assert_eq!(Envelope::from_bytes(&e.to_bytes()).ok().as_ref(), Some(&e));
            true
        }
        Err(_) => false,
    });
    t.report();
}
