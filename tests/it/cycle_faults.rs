//! Faults the cycle had not met before: the engine hangs mid-answer (SIGSTOP) and the stall limit
//! fires, named by Debug; NATS is unreachable when the operator starts a cycle.

use super::cycle_crash::{Cluster, no_engine_left};
use super::support::*;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use protocol::operator::CycleState;
use std::path::Path;
use std::time::{Duration, Instant};

/// The process groups of the engines running for the agents of `run_dir` (from their pid files).
fn engine_groups(run_dir: &Path) -> Vec<Pid> {
    std::fs::read_dir(run_dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "pid"))
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .filter_map(|t| t.lines().next().and_then(|l| l.trim().parse::<i32>().ok()))
                .filter(|p| *p > 1)
                .map(Pid::from_raw)
                .collect()
        })
        .unwrap_or_default()
}

/// Sends `sig` to every engine group in `groups` (gone ones are skipped).
fn signal_all(groups: &[Pid], sig: Signal) {
    for g in groups {
        let _ = killpg(*g, sig);
    }
}

/// Resumes the engines it froze, whatever happens to the test, so none is left stopped.
struct Thaw(Vec<Pid>);

impl Drop for Thaw {
    fn drop(&mut self) {
        signal_all(&self.0, Signal::SIGCONT);
    }
}

/// The engine freezes (SIGSTOP of its process group) in the middle of a streamed answer. The
/// Writer's stall limit (`defaults.stall_timeout_s = 3`) cuts the request, Debug diagnoses a
/// stalled answer and offers a longer stall limit; the engine is resumed, the operator takes
/// that option, and the cycle completes with every result once and no engine left.
#[test]
fn an_engine_that_hangs_mid_answer_is_cut_by_the_stall_limit_and_named_by_debug() {
    require_parts();
    let _serial = serial();
    let mut s = Scenario::new("an_engine_that_hangs_mid_answer_is_cut_by_the_stall_limit_and_named_by_debug");
    let tmp = tempfile::tempdir().expect("tmp");
    let c = Cluster::start(tmp.path());
    let prompts = ["hello", "long"];
    let plan = write_plan(
        tmp.path(),
        "engine-hang",
        "stall_timeout_s = 3\nrequest_timeout_s = 600",
        "",
        "[[prompts]]\nid = \"long\"\ntext = \"Write a long story about a lighthouse keeper, in many paragraphs.\"\n\n\
         [policy]\ndefault = 'ask'\nmax_attempts = 3\nask_timeout_s = 900\n",
    );
    let text = std::fs::read_to_string(&plan).expect("plan").replace("max_tokens = 12", "max_tokens = 400");
    std::fs::write(&plan, text).expect("write plan");
    let cycle = c.start_cycle(&plan);
    // The first answer is measured; the long one streams next. Freeze the engine; if it had
    // not streamed a chunk yet (the stall limit counts from the first one), let it go on a
    // moment and freeze it again, until the stall limit fires.
    c.wait_for(&cycle, "the first measured request", 180, |r| r.requests_done >= 1);
    let frozen = engine_groups(&c.run_dir);
    assert!(!frozen.is_empty(), "no engine runs for the cycle; logs in {}", c.logs.display());
    let _thaw = Thaw(frozen.clone());
    let deadline = Instant::now() + Duration::from_secs(240);
    let esc = 'found: loop {
        std::thread::sleep(Duration::from_millis(800));
        signal_all(&frozen, Signal::SIGSTOP);
        s.fault();
        let until = Instant::now() + Duration::from_secs(12);
        while Instant::now() < until {
            if let Some(v) = c.cli(&["escalations"])
                && let Some(e) = escalation_items(&v).first()
            {
                break 'found e.clone();
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        assert!(Instant::now() < deadline, "the stall limit never fired; logs in {}", c.logs.display());
        signal_all(&frozen, Signal::SIGCONT);
    };
    signal_all(&frozen, Signal::SIGCONT);
    s.note("escalations", 1);
    let said = format!("{} | {} | {:?}", esc.failure, esc.diagnosis, esc.options);
    assert!(esc.failure.contains("stalled") && esc.failure.contains("nothing for 3s"), "{said}");
    assert!(
        esc.diagnosis.contains("stall") || esc.diagnosis.contains("time limit"),
        "Debug did not name the stall: {said}"
    );
    assert!(
        esc.options.iter().any(|o| o.summary.contains("stall limit")),
        "Debug offered no longer stall limit: {said}"
    );
    let o = threadcycle()
        .args(["resolve", &esc.id, "--set", "stall_timeout_s=120", "--nats", &c.nats.url()])
        .output()
        .expect("resolve");
    assert!(o.status.success(), "{}", show(&o));
    c.wait_for(&cycle, "completion after the stall", 400, |r| r.state == CycleState::Completed);
    s.check_exactly_once(&c.out, &cycle, &prompts, 1);
    no_engine_left(&c.run_dir);
    std::thread::sleep(Duration::from_secs(1));
    let left: Vec<_> = frozen.iter().filter(|g| killpg(**g, None).is_ok()).collect();
    s.note("engines_left", left.len());
    assert!(left.is_empty(), "the frozen engine still runs: {left:?}");
}

/// `threadcycle start` against a port where no NATS listens: a clear error naming the URL, a
/// non-zero exit, and no hang.
#[test]
fn start_with_nats_unreachable_names_the_url_and_exits_non_zero() {
    let mut s = Scenario::new("start_with_nats_unreachable_names_the_url_and_exits_non_zero");
    let tmp = tempfile::tempdir().expect("tmp");
    let plan = write_plan(tmp.path(), "no-nats", "", "", "");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let url = format!("nats://127.0.0.1:{port}");
    s.fault();
    let started = Instant::now();
    let mut child = threadcycle()
        .args(["start"])
        .arg(&plan)
        .args(["--nats", &url])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run");
    let limit = Duration::from_secs(60);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`threadcycle start` still hangs after {limit:?} with NATS unreachable at {url}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let o = child.wait_with_output().expect("output");
    let secs = started.elapsed().as_secs_f64();
    s.note("secs", format!("{secs:.1}"));
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    s.refused = Some(u64::from(!status.success() && err.contains(&url)));
    assert!(!status.success(), "exit {status:?}: {err}");
    assert!(err.contains(&url), "the error does not name {url}: {err}");
    println!("nats unreachable: exit {:?} after {secs:.1} s: {}", status.code(), err.trim());
}
