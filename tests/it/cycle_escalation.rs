//! Failures on real parts: diagnosed by Debug, remedied by policy or by the operator, and
//! recorded in the reports.

use super::support::*;
use handoffs::server::NatsServer;
use protocol::operator::OperatorReply;
use protocol::results::{EscalationRecord, FailureClass, ModelStatus};
use std::process::Stdio;
use std::time::{Duration, Instant};

#[test]
fn a_never_healthy_engine_is_diagnosed_and_retried_with_a_longer_load_timeout() {
    require_parts();
    let _serial = serial();
    let mut s = Scenario::new("a_never_healthy_engine_is_diagnosed_and_retried_with_a_longer_load_timeout");
    let tmp = tempfile::tempdir().expect("tmp");
    let plan =
        write_plan(tmp.path(), "slow-load", "load_timeout_s = 1", "", "[policy]\ndefault = 'auto'\nmax_attempts = 4\n");
    let out = tmp.path().join("out");
    let dir = up_ok(&plan, &out);
    let r = results(&dir);
    let m = first_model(&r);
    s.faults = m.attempts.iter().filter(|a| a.outcome != "ok").count() as u64;
    s.note("escalations", r.escalations.len());
    s.check_dir(&dir, &["hello"], 1);
    assert_eq!(m.status, ModelStatus::Measured, "{m:?}");
    let attempts = &m.attempts;
    assert!(attempts.len() >= 2, "{m:?}");
    assert!(attempts[0].outcome.contains("did not become healthy within 1s"), "{m:?}");
    assert_eq!(attempt_changes(m, 1).first().map(String::as_str), Some("load_timeout_s=3"), "{m:?}");
    assert_eq!(attempts.last().map(|a| a.outcome.as_str()), Some("ok"));
    assert_eq!(r.escalations.len(), attempts.len() - 1);
    let trouble = std::fs::read_to_string(dir.join("troubleshooting.md")).expect("troubleshooting.md");
    assert!(trouble.contains("did not finish loading in time"), "{trouble}");
    assert!(trouble.contains("policy:auto"), "{trouble}");
}

#[test]
fn a_missing_model_is_diagnosed_skipped_and_the_cycle_still_completes() {
    require_parts();
    let _serial = serial();
    let mut s = Scenario::new("a_missing_model_is_diagnosed_skipped_and_the_cycle_still_completes");
    s.fault();
    let tmp = tempfile::tempdir().expect("tmp");
    let plan = write_plan(tmp.path(), "missing", "", "", "");
    let text = std::fs::read_to_string(&plan).expect("plan").replace("gemma-3-270m-q4_k_m.gguf", "no-such-model.gguf");
    std::fs::write(&plan, text).expect("write");
    let out = tmp.path().join("out");
    let dir = up_ok(&plan, &out);
    let r = results(&dir);
    let m = first_model(&r);
    s.note("escalations", r.escalations.len());
    s.check_dir(&dir, &[], 1);
    assert!(matches!(m.status, ModelStatus::Skipped { .. }), "{m:?}");
    let trouble = std::fs::read_to_string(dir.join("troubleshooting.md")).expect("troubleshooting.md");
    assert!(trouble.contains("does not exist"), "{trouble}");
    assert!(
        trouble.contains("model_not_found") || trouble.contains("does not exist under that tag or path"),
        "{trouble}"
    );
}

/// Main's list of escalations; None while Main is not answering yet.
fn escalations(url: &str, all: bool) -> Option<Vec<EscalationRecord>> {
    let mut args = vec!["escalations", "--json", "--nats", url];
    if all {
        args.push("--all");
    }
    let o = threadcycle().args(&args).output().expect("run");
    if o.status.code() == Some(3) {
        return None;
    }
    assert!(o.status.success(), "{}", show(&o));
    let reply: OperatorReply = serde_json::from_slice(&o.stdout).expect("Main's reply as JSON");
    Some(escalation_items(&reply).to_vec())
}

#[test]
fn an_ask_escalation_is_answered_through_the_cli_and_the_cycle_goes_on() {
    require_parts();
    let _serial = serial();
    let nats = NatsServer::start().expect("nats-server (make nats)");
    let url = nats.url();
    let tmp = tempfile::tempdir().expect("tmp");
    let plan = write_plan(
        tmp.path(),
        "ask",
        "load_timeout_s = 1",
        "",
        "[policy]\ndefault = 'auto'\nmax_attempts = 3\nask_timeout_s = 300\n[policy.per_class]\nengine_unhealthy = 'ask'\n",
    );
    let out = tmp.path().join("out");
    let up = threadcycle()
        .args(["up", "--nats", &url])
        .arg(&plan)
        .arg("--out")
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn up");
    let deadline = Instant::now() + Duration::from_secs(120);
    let id = loop {
        assert!(Instant::now() < deadline, "no escalation waited for the operator");
        let items = escalations(&url, false).unwrap_or_default();
        if let Some(e) = items.first() {
            assert!(e.decision.is_none(), "{e:?}");
            assert_eq!(e.class, FailureClass::EngineUnhealthy);
            break e.id.clone();
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let bad = threadcycle().args(["resolve", &id, "99", "--nats", &url]).output().expect("run");
    assert_eq!(bad.status.code(), Some(2), "{}", show(&bad));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not one of them"), "{}", show(&bad));
    let ok = threadcycle()
        .args(["resolve", &id, "--set", "load_timeout_s=120", "--by", "tester", "--nats", &url])
        .output()
        .expect("run");
    assert!(ok.status.success(), "{}", show(&ok));
    // Debug records the decision; a second answer is then refused by name.
    loop {
        assert!(Instant::now() < deadline, "the decision was never recorded");
        let all = escalations(&url, true).expect("Main answers while the cycle runs");
        if let Some(decision) = all.first().and_then(|e| e.decision.as_ref()) {
            assert_eq!(decision.by, "operator:tester");
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let again = threadcycle().args(["resolve", &id, "1", "--nats", &url]).output().expect("run");
    assert_eq!(again.status.code(), Some(1), "{}", show(&again));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already decided by operator:tester"), "{}", show(&again));
    let o = up.wait_with_output().expect("up");
    assert!(o.status.success(), "{}", show(&o));
    let r = results(&cycle_dir(&out));
    let m = first_model(&r);
    assert_eq!(m.status, ModelStatus::Measured, "{m:?}");
    assert_eq!(attempt_changes(m, 1).first().map(String::as_str), Some("load_timeout_s=120"), "{m:?}");
}

#[test]
fn an_unanswered_ask_takes_the_default_after_its_timeout() {
    require_parts();
    let _serial = serial();
    let tmp = tempfile::tempdir().expect("tmp");
    let plan = write_plan(
        tmp.path(),
        "ask-timeout",
        "load_timeout_s = 1",
        "",
        "[policy]\ndefault = 'ask'\nmax_attempts = 4\nask_timeout_s = 2\n",
    );
    let out = tmp.path().join("out");
    let o = threadcycle().args(["up"]).arg(&plan).arg("--out").arg(&out).stdin(Stdio::null()).output().expect("run");
    assert!(o.status.success(), "{}", show(&o));
    let dir = cycle_dir(&out);
    let r = results(&dir);
    let m = first_model(&r);
    assert_eq!(m.status, ModelStatus::Measured, "{m:?}");
    let trouble = std::fs::read_to_string(dir.join("troubleshooting.md")).expect("troubleshooting.md");
    assert!(trouble.contains("timeout-default"), "{trouble}");
}
