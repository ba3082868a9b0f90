//! Two operators at once on one host: a second `up` on the machine is refused by name before it
//! starts anything, and on a shared NATS server Main refuses a second cycle on a host that is
//! running one (named, with how to wait or cancel) — never two cycles interleaved on one GPU.

use super::cycle_crash::{Cluster, crash_plan};
use super::support::*;
use protocol::operator::{CycleState, OperatorReply};
use std::io::Write as _;

#[test]
fn a_second_up_on_the_machine_is_refused_by_name_before_it_starts() {
    let mut s = Scenario::new("a_second_up_on_the_machine_is_refused_by_name_before_it_starts");
    let tmp = tempfile::tempdir().expect("tmp");
    let lock = tmp.path().join("up.lock");
    let mut held = std::fs::File::create(&lock).expect("lock file");
    held.lock().expect("hold the lock as another `up` would");
    held.write_all(b"pid 4242, plan plans/other.toml, since 2026-11-30 18:00:00 UTC").expect("note");
    let plan = write_plan(tmp.path(), "second", "", "", "");
    let out = tmp.path().join("out");
    let o = threadcycle()
        .args(["up"])
        .arg(&plan)
        .arg("--out")
        .arg(&out)
        .env("THREADCYCLE_LOCK", &lock)
        .output()
        .expect("run up");
    let err = String::from_utf8_lossy(&o.stderr);
    s.fault();
    s.refused = Some(u64::from(o.status.code() == Some(4)));
    assert_eq!(o.status.code(), Some(4), "{}", show(&o));
    assert!(err.contains("another `threadcycle up`") && err.contains("pid 4242, plan plans/other.toml"), "{err}");
    assert!(!out.exists(), "nothing was started or written: {}", show(&o));
    // Released (the other `up` ended): the lock is free again for the next one.
    drop(held);
    let f = std::fs::OpenOptions::new().write(true).open(&lock).expect("lock file");
    assert!(f.try_lock().is_ok(), "a finished `up` leaves the lock free");
}

#[test]
fn main_refuses_a_second_cycle_on_a_busy_host_and_accepts_one_after_it_ends() {
    require_parts();
    let _serial = serial();
    let mut s = Scenario::new("main_refuses_a_second_cycle_on_a_busy_host_and_accepts_one_after_it_ends");
    let tmp = tempfile::tempdir().expect("tmp");
    let c = Cluster::start(tmp.path());
    let plan = crash_plan(tmp.path());
    let first = c.start_cycle(&plan);
    let o = threadcycle()
        .args(["start", &plan.display().to_string(), "--json", "--nats", &c.nats.url()])
        .output()
        .expect("run start");
    s.fault();
    s.refused = Some(u64::from(o.status.code() == Some(4)));
    assert_eq!(o.status.code(), Some(4), "a busy host exits 4: {}", show(&o));
    let second: OperatorReply = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(&o)));
    match &second {
        OperatorReply::Error { code, message } => {
            assert_eq!(code, "host_busy", "{message}");
            assert!(message.contains(&first) && message.contains("threadcycle cancel"), "{message}");
        }
        other => panic!("a second cycle on the busy host was accepted: {other:?}"),
    }
    // Only the first cycle exists: nothing of the refused one was recorded or sent.
    let all = c.cli(&["status"]).expect("status");
    let OperatorReply::Status { cycles, .. } = all else { panic!("{all:?}") };
    s.note("cycles_recorded", cycles.len());
    assert_eq!(cycles.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), [first.as_str()]);
    // Canceled, the host is free: the next operator's cycle starts.
    assert!(matches!(c.cli(&["cancel", &first]), Some(OperatorReply::Canceled { .. })), "cancel");
    c.wait_for(&first, "the cancel", 120, |r| r.state == CycleState::Canceled);
    let third = c.start_cycle(&plan);
    assert_ne!(third, first);
    c.wait_for(&third, "the next cycle", 600, |r| r.state.is_final());
}
