//! Failed host checks gate the cycle on real parts: a plan whose disk minimum this machine
//! cannot meet makes the Reader escalate before anything is deployed, and each answer —
//! re-verify, skip, continue, abort — does what it says, recorded in the reports.

use super::support::*;
use handoffs::server::NatsServer;
use protocol::events::Phase;
use protocol::operator::{CycleState, OperatorReply};
use protocol::results::{EscalationRecord, FailureClass, ModelStatus, RemedyAction};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// The demo model with a disk minimum no machine here meets (a million GB free under the store).
fn unmeetable(dir: &Path, name: &str, policy: &str) -> std::path::PathBuf {
    let store = model().parent().expect("model folder").display().to_string();
    write_plan(
        dir,
        name,
        "",
        "",
        &format!(
            "[host]\nmodel_store = \"{store}\"\nmin_disk_free_gb = 1000000\n\n[policy]\nask_timeout_s = 600\n{policy}\n"
        ),
    )
}

fn up(url: &str, plan: &Path, out: &Path) -> Child {
    threadcycle()
        .args(["up", "--nats", url])
        .arg(plan)
        .arg("--out")
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn up")
}

/// The escalations waiting for the operator, once Main answers.
fn waiting(url: &str) -> Vec<EscalationRecord> {
    ask_main(url, &["escalations"]).map(|r| escalation_items(&r).to_vec()).unwrap_or_default()
}

/// Waits for the `n`th host-check escalation (counting decided ones) to wait for the operator.
fn host_check_escalation(url: &str, n: usize) -> EscalationRecord {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        assert!(Instant::now() < deadline, "no host-check escalation #{n} waited for the operator");
        let all = ask_main(url, &["escalations", "--all"]).map(|r| escalation_items(&r).to_vec()).unwrap_or_default();
        if all.len() >= n
            && let Some(e) = waiting(url).into_iter().next()
        {
            assert_eq!(e.class, FailureClass::HostCheck, "{e:?}");
            assert!(e.failure.contains("disk.free") && e.failure.contains("≥ 1000000 GB"), "{e:?}");
            let summaries: Vec<&str> = e.options.iter().map(|o| o.summary.as_str()).collect();
            assert_eq!(
                summaries,
                [
                    "continue anyway",
                    "fix the host, then re-verify",
                    "skip the affected models (gemma)",
                    "abort the cycle"
                ],
                "{e:?}"
            );
            return e;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// While the escalation waits, nothing is deployed: the cycle is still verifying, no request
/// was made, no model finished.
fn nothing_deployed(url: &str) {
    std::thread::sleep(Duration::from_secs(3));
    let status = ask_main(url, &["status"]).expect("Main answers");
    let c = first_cycle(&status).expect("a cycle");
    assert_eq!(c.state, CycleState::Running { phase: Phase::Verifying }, "{c:?}");
    assert_eq!((c.requests_done, c.models_done), (0, 0), "{c:?}");
}

fn resolve(url: &str, id: &str, option: &str) {
    let o = threadcycle().args(["resolve", id, option, "--by", "tester", "--nats", url]).output().expect("run");
    assert!(o.status.success(), "{}", show(&o));
    assert!(matches!(reply(&o), None | Some(OperatorReply::Resolved { .. })), "{}", show(&o));
}

fn finished(up: Child, out: &Path) -> std::path::PathBuf {
    let o = up.wait_with_output().expect("up");
    assert!(o.status.success(), "{}", show(&o));
    cycle_dir(out)
}

#[test]
fn a_failed_disk_check_waits_for_the_operator_then_re_verifies_and_skips() {
    require_parts();
    let _serial = serial();
    let nats = NatsServer::start().expect("nats-server (make nats)");
    let url = nats.url();
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("out");
    let up = up(&url, &unmeetable(tmp.path(), "gate-skip", ""), &out);
    let first = host_check_escalation(&url, 1);
    nothing_deployed(&url);
    // Fix and re-verify: the Reader measures again, the disk is still short, it asks again.
    resolve(&url, &first.id, "--reverify");
    let second = host_check_escalation(&url, 2);
    assert_ne!(second.id, first.id);
    nothing_deployed(&url);
    resolve(&url, &second.id, "3");
    let dir = finished(up, &out);
    let r = results(&dir);
    let m = first_model(&r);
    assert!(
        matches!(&m.status, ModelStatus::Skipped { reason } if reason.contains("skipped by operator:tester after failed host checks: disk.free")),
        "{m:?}"
    );
    assert!(m.runs.is_empty(), "{m:?}");
    let gate = r.verification.gate.as_ref().expect("the gate's decision in the report");
    assert_eq!(gate.action, RemedyAction::Skip);
    assert_eq!(gate.escalations, [first.id.clone(), second.id.clone()]);
    let trouble = std::fs::read_to_string(dir.join("troubleshooting.md")).expect("troubleshooting.md");
    assert!(trouble.contains("re-verify the host") && trouble.contains("operator:tester"), "{trouble}");
}

#[test]
fn an_operator_who_continues_anyway_gets_the_model_measured() {
    require_parts();
    let _serial = serial();
    let nats = NatsServer::start().expect("nats-server (make nats)");
    let url = nats.url();
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("out");
    let up = up(&url, &unmeetable(tmp.path(), "gate-continue", ""), &out);
    let e = host_check_escalation(&url, 1);
    nothing_deployed(&url);
    resolve(&url, &e.id, "--continue");
    let dir = finished(up, &out);
    let r = results(&dir);
    assert_eq!(first_model(&r).status, ModelStatus::Measured, "{:?}", first_model(&r));
    let gate = r.verification.gate.as_ref().expect("gate");
    assert_eq!((gate.action.clone(), gate.by.as_str()), (RemedyAction::Continue, "operator:tester"));
    let disk = r.verification.checks.iter().find(|c| c.name == "disk.free").expect("disk.free");
    assert_eq!(disk.status, protocol::results::CheckStatus::Fail, "the report keeps the failure: {disk:?}");
    let trouble = std::fs::read_to_string(dir.join("troubleshooting.md")).expect("troubleshooting.md");
    assert!(trouble.contains("continue despite the failed checks"), "{trouble}");
}

#[test]
fn a_plan_that_aborts_on_failed_checks_deploys_nothing() {
    require_parts();
    let _serial = serial();
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("out");
    let plan = unmeetable(tmp.path(), "gate-abort", "failed_checks = 'abort'");
    let o = threadcycle().args(["up"]).arg(&plan).arg("--out").arg(&out).stdin(Stdio::null()).output().expect("run");
    // An aborted cycle is a failed one (exit 1), its reports written all the same.
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("after failed host checks: disk.free"), "{}", show(&o));
    let dir = cycle_dir(&out);
    let r = results(&dir);
    let m = first_model(&r);
    assert!(
        matches!(&m.status, ModelStatus::Skipped { reason } if reason.starts_with("cycle aborted by policy:failed_checks=abort after failed host checks: disk.free")),
        "{m:?}"
    );
    assert!(m.runs.is_empty() && m.attempts.is_empty(), "nothing was deployed: {m:?}");
    assert!(r.aborted.as_deref().is_some_and(|a| a.contains("disk.free")), "{:?}", r.aborted);
    let trouble = std::fs::read_to_string(dir.join("troubleshooting.md")).expect("troubleshooting.md");
    // Markdown escapes the underscore.
    assert!(trouble.contains("abort the cycle") && trouble.contains(r"policy:failed\_checks=abort"), "{trouble}");
}
