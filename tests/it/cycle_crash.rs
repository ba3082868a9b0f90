//! Crashes mid-cycle: every agent killed with SIGKILL and restarted in every phase (and the
//! Writer in a Docker deployment), the NATS server killed and restarted on its store, Main
//! killed while an escalation waits — the cycle completes, every result appears exactly once and
//! no engine or container is left behind.

use super::support::*;
use handoffs::server::NatsServer;
use protocol::events::{Event, EventBody, Phase};
use protocol::operator::{CycleRecord, CycleState, OperatorReply};
use protocol::results::ModelStatus;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// The five agents run by hand against one NATS server (or the nodes of a NATS cluster), so the
/// test can kill them.
pub(super) struct Cluster {
    pub(super) nats: NatsServer,
    /// The other nodes when the agents run on a NATS cluster (`cycle_cluster`); empty: one server.
    pub(super) peers: Vec<NatsServer>,
    /// What the agents and the CLI are given as `--nats`: every node's URL.
    url: String,
    /// Environment every agent is started with, restarted ones included (`DOCKER_HOST` of a
    /// private Docker engine…).
    env: Vec<(String, String)>,
    agents: BTreeMap<&'static str, Child>,
    pub(super) out: PathBuf,
    pub(super) logs: PathBuf,
    pub(super) run_dir: PathBuf,
}

pub(super) const ROLES: [&str; 5] = ["main", "reader", "writer", "debug", "documentation"];

impl Cluster {
    pub(super) fn start(dir: &Path) -> Cluster {
        Self::start_with_env(dir, &[])
    }

    /// [`Cluster::start`] with `env` set for every agent, restarted ones included.
    pub(super) fn start_with_env(dir: &Path, env: &[(&str, &str)]) -> Cluster {
        let nats = NatsServer::start_in(&dir.join("nats"), "").expect("nats-server (make nats)");
        Cluster::start_on(dir, vec![nats], env)
    }

    /// The agents on the NATS servers `nodes` (all given to them as a URL list), with `env`.
    pub(super) fn start_on(dir: &Path, nodes: Vec<NatsServer>, env: &[(&str, &str)]) -> Cluster {
        let url = nodes.iter().map(NatsServer::url).collect::<Vec<_>>().join(",");
        let mut nodes = nodes.into_iter();
        let nats = nodes.next().expect("one NATS server at least");
        let mut c = Cluster {
            nats,
            peers: nodes.collect(),
            url,
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            agents: BTreeMap::new(),
            out: dir.join("out"),
            logs: dir.join("logs"),
            run_dir: dir.join("run"),
        };
        std::fs::create_dir_all(&c.logs).expect("logs");
        for r in ROLES {
            c.spawn(r);
        }
        c
    }

    pub(super) fn spawn(&mut self, role: &'static str) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.join(format!("{role}.log")))
            .expect("log");
        let child = threadcycle()
            .args(["agent", role, "--nats", &self.url, "--out"])
            .arg(&self.out)
            .env("THREADCYCLE_RUN_DIR", &self.run_dir)
            .env("THREADCYCLE_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn agent");
        self.agents.insert(role, child);
    }

    /// Freezes an agent (SIGSTOP) so the phase it is working on holds still.
    fn freeze(&self, role: &'static str) {
        let pid = self.agents.get(role).map(|c| c.id()).expect("agent running");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP");
    }

    /// Whether the agent started for `role` still runs (false once it exited, crashed included).
    pub(super) fn alive(&mut self, role: &'static str) -> bool {
        self.agents.get_mut(role).is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub(super) fn kill(&mut self, role: &'static str) {
        if let Some(mut c) = self.agents.remove(role) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub(super) fn cli(&self, args: &[&str]) -> Option<OperatorReply> {
        ask_main(&self.url, args)
    }

    /// Node `i` of the NATS servers (0: `nats`, then the peers).
    pub(super) fn node_mut(&mut self, i: usize) -> &mut NatsServer {
        if i == 0 { &mut self.nats } else { &mut self.peers[i - 1] }
    }

    pub(super) fn start_cycle(&self, plan: &Path) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(v) = self.cli(&["start", &plan.display().to_string()]) {
                return started_cycle(&v).unwrap_or_else(|| panic!("`start` answered {v:?}")).to_string();
            }
            assert!(Instant::now() < deadline, "Main never accepted the plan");
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Waits until the cycle's record satisfies `pred`; returns it.
    pub(super) fn wait_for(
        &self,
        cycle: &str,
        what: &str,
        secs: u64,
        pred: impl Fn(&CycleRecord) -> bool,
    ) -> CycleRecord {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(rec) = self.cli(&["status", cycle]).as_ref().and_then(first_cycle)
                && pred(rec)
            {
                return rec.clone();
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; logs in {}", self.logs.display());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub(super) fn logs_text(&self) -> String {
        ROLES
            .iter()
            .map(|r| std::fs::read_to_string(self.logs.join(format!("{r}.log"))).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for r in ROLES {
            self.kill(r);
        }
    }
}

pub(super) fn crash_plan(dir: &Path) -> PathBuf {
    let p = write_plan(dir, "crash", "", "", "");
    let text = std::fs::read_to_string(&p)
        .expect("plan")
        .replace("repetitions = 1", "repetitions = 2")
        .replace("max_tokens = 12", "max_tokens = 32")
        + "\n[[prompts]]\nid = \"second\"\ntext = \"Name two uses of a GPU.\"\n\n[[prompts]]\nid = \"third\"\ntext = \"What is a container?\"\n";
    std::fs::write(&p, text).expect("write");
    p
}

/// The crash plan's prompts: three, each twice.
pub(super) const CRASH_PROMPTS: [&str; 3] = ["hello", "second", "third"];

pub(super) fn no_engine_left(run_dir: &Path) {
    let pids: Vec<_> = std::fs::read_dir(run_dir)
        .map(|d| d.flatten().filter(|e| e.path().extension().is_some_and(|x| x == "pid")).collect())
        .unwrap_or_default();
    assert!(pids.is_empty(), "engine pid files left: {pids:?}");
}

#[test]
fn the_writer_killed_mid_benchmark_and_restarted_completes_the_cycle_without_duplicates() {
    require_parts();
    let _serial = serial();
    let mut s = Scenario::new("the_writer_killed_mid_benchmark_and_restarted_completes_the_cycle_without_duplicates");
    let tmp = tempfile::tempdir().expect("tmp");
    let mut c = Cluster::start(tmp.path());
    let cycle = c.start_cycle(&crash_plan(tmp.path()));
    c.wait_for(&cycle, "the first measured request", 180, |r| r.requests_done >= 2);
    c.kill("writer");
    s.fault();
    // The engine the dead Writer started is an orphan now; the new Writer stops it.
    c.spawn("writer");
    let rec = c.wait_for(&cycle, "completion after the Writer's restart", 300, |r| r.state == CycleState::Completed);
    s.check_exactly_once(&c.out, &cycle, &CRASH_PROMPTS, 2);
    assert!(rec.report_dir.is_some(), "{rec:?}");
    assert!(c.logs_text().contains("Stopping an engine left by an earlier run"), "the orphan engine was not reaped");
    no_engine_left(&c.run_dir);
}

#[test]
fn a_writer_that_stays_silent_fails_the_cycle_by_name_and_its_late_results_still_land() {
    require_parts();
    let _serial = serial();
    let mut s = Scenario::new("a_writer_that_stays_silent_fails_the_cycle_by_name_and_its_late_results_still_land");
    let tmp = tempfile::tempdir().expect("tmp");
    let mut c = Cluster::start(tmp.path());
    let plan = crash_plan(tmp.path());
    let text = std::fs::read_to_string(&plan).expect("plan") + "\n[policy]\nagent_timeout_s = 15\n";
    std::fs::write(&plan, text).expect("plan");
    let cycle = c.start_cycle(&plan);
    c.wait_for(&cycle, "the first measured request", 180, |r| r.requests_done >= 1);
    // The Writer dies and nobody restarts it: Main's watchdog names it instead of waiting for ever.
    c.kill("writer");
    s.fault();
    let rec =
        c.wait_for(&cycle, "the watchdog to fail the cycle", 90, |r| matches!(r.state, CycleState::Failed { .. }));
    let CycleState::Failed { reason } = &rec.state else { panic!("the cycle is not failed: {:?}", rec.state) };
    assert!(reason.contains("no heartbeat from writer-local") && reason.contains("agent_timeout_s = 15"), "{reason}");
    // Back an hour later, say: the packages waited in NATS, the cycle completes, nothing twice.
    c.spawn("writer");
    c.wait_for(&cycle, "completion after the Writer came back", 300, |r| r.state == CycleState::Completed);
    s.check_exactly_once(&c.out, &cycle, &CRASH_PROMPTS, 2);
    no_engine_left(&c.run_dir);
}

#[test]
fn the_nats_server_killed_mid_cycle_and_restarted_on_its_store_completes_the_cycle() {
    require_parts();
    let _serial = serial();
    let mut s = Scenario::new("the_nats_server_killed_mid_cycle_and_restarted_on_its_store_completes_the_cycle");
    let tmp = tempfile::tempdir().expect("tmp");
    let mut c = Cluster::start(tmp.path());
    let cycle = c.start_cycle(&crash_plan(tmp.path()));
    c.wait_for(&cycle, "the first measured request", 180, |r| r.requests_done >= 1);
    c.nats.kill();
    s.fault();
    std::thread::sleep(Duration::from_secs(2));
    c.nats.restart().expect("restart nats");
    c.wait_for(&cycle, "completion after the NATS restart", 300, |r| r.state == CycleState::Completed);
    s.check_exactly_once(&c.out, &cycle, &CRASH_PROMPTS, 2);
    no_engine_left(&c.run_dir);
}

#[test]
fn main_killed_while_an_escalation_waits_still_lets_the_operator_resolve_it() {
    require_parts();
    let _serial = serial();
    let mut s = Scenario::new("main_killed_while_an_escalation_waits_still_lets_the_operator_resolve_it");
    let tmp = tempfile::tempdir().expect("tmp");
    let mut c = Cluster::start(tmp.path());
    let plan = write_plan(
        tmp.path(),
        "ask-crash",
        "load_timeout_s = 1",
        "",
        "[policy]\ndefault = 'ask'\nmax_attempts = 3\nask_timeout_s = 600\n",
    );
    let cycle = c.start_cycle(&plan);
    let deadline = Instant::now() + Duration::from_secs(120);
    let id = loop {
        if let Some(v) = c.cli(&["escalations"])
            && let Some(e) = escalation_items(&v).first()
        {
            break e.id.clone();
        }
        assert!(Instant::now() < deadline, "no escalation opened");
        std::thread::sleep(Duration::from_millis(300));
    };
    c.kill("main");
    s.fault();
    c.spawn("main");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = c.cli(&["escalations"])
            && escalation_items(&v).first().is_some_and(|e| e.id == id)
        {
            break;
        }
        assert!(Instant::now() < deadline, "the escalation was lost with Main");
        std::thread::sleep(Duration::from_millis(300));
    }
    let o = threadcycle()
        .args(["resolve", &id, "--set", "load_timeout_s=120", "--nats", &c.nats.url()])
        .output()
        .expect("resolve");
    assert!(o.status.success(), "{}", show(&o));
    c.wait_for(&cycle, "completion after the operator's answer", 180, |r| r.state == CycleState::Completed);
    s.check_exactly_once(&c.out, &cycle, &["hello"], 1);
    let r = results(&c.out.join(&cycle));
    let m = first_model(&r);
    assert_eq!(m.status, ModelStatus::Measured, "{m:?}");
}

/// Follows every event on the server (core subscription) from a thread of its own.
fn follow_events(url: &str) -> std::sync::mpsc::Receiver<Event> {
    use futures::StreamExt;
    let (tx, rx) = std::sync::mpsc::channel();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let url = url.to_string();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            let client = async_nats::ConnectOptions::new()
                .max_reconnects(Some(5))
                .connect(url.as_str())
                .await
                .expect("event follower connects");
            let mut sub = client.subscribe("tc.evt.>").await.expect("subscribe events");
            client.flush().await.expect("flush");
            let _ = ready_tx.send(());
            while let Some(m) = sub.next().await {
                if let Ok(ev) = serde_json::from_slice::<Event>(&m.payload)
                    && tx.send(ev).is_err()
                {
                    break;
                }
            }
        });
    });
    ready_rx.recv_timeout(Duration::from_secs(20)).expect("event follower ready");
    rx
}

/// A phase of the cycle, the event that shows it has begun, and the agent doing its work.
struct PhaseHold {
    phase: &'static str,
    worker: &'static str,
    starts: fn(&Event) -> bool,
}

const PHASES: [PhaseHold; 5] = [
    PhaseHold {
        phase: "verify",
        worker: "reader",
        starts: |e| matches!(e.body, EventBody::PhaseStarted { phase: Phase::Verifying }),
    },
    PhaseHold { phase: "deploy", worker: "writer", starts: |e| matches!(e.body, EventBody::ModelStarted { .. }) },
    PhaseHold {
        phase: "troubleshoot",
        worker: "debug",
        starts: |e| matches!(e.body, EventBody::EscalationOpened { awaiting_operator: true, .. }),
    },
    PhaseHold { phase: "benchmark", worker: "writer", starts: |e| matches!(e.body, EventBody::RunMeasured { .. }) },
    PhaseHold {
        phase: "document",
        worker: "documentation",
        starts: |e| matches!(e.body, EventBody::PhaseStarted { phase: Phase::Documenting }),
    },
];

/// Every agent SIGKILLed and restarted once in every phase of one cycle: verify, deploy (a first
/// attempt that fails: a 1 s load timeout), troubleshoot (an escalation waiting for the
/// operator, answered after the kills), benchmark and document. The moment a phase's first event
/// arrives its worker is frozen (SIGSTOP) so the phase holds still; each of the four others is
/// killed and restarted; then the worker itself is killed mid-work and restarted. The cycle
/// completes, each prompt × repetition is in the report exactly once, the orphaned engine is
/// reaped and none is left.
#[test]
fn every_agent_killed_in_every_phase_and_restarted_completes_the_cycle_exactly_once() {
    require_parts();
    let _serial = serial();
    let mut s = Scenario::new("every_agent_killed_in_every_phase_and_restarted_completes_the_cycle_exactly_once");
    let started = Instant::now();
    let tmp = tempfile::tempdir().expect("tmp");
    let mut c = Cluster::start(tmp.path());
    let events = follow_events(&c.nats.url());
    let plan = write_plan(
        tmp.path(),
        "kill-matrix",
        "load_timeout_s = 1",
        "",
        "[[prompts]]\nid = \"second\"\ntext = \"Name two uses of a GPU.\"\n\n\
         [policy]\ndefault = 'ask'\nmax_attempts = 3\nask_timeout_s = 900\n",
    );
    let cycle = c.start_cycle(&plan);
    let mut faults: Vec<(&str, &str)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(900);
    for hold in &PHASES {
        let ev = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ev = events
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("the {} phase never began; logs in {}", hold.phase, c.logs.display()));
            if ev.cycle.as_str() == cycle && (hold.starts)(&ev) {
                break ev;
            }
        };
        c.freeze(hold.worker);
        for r in ROLES.iter().copied().filter(|r| *r != hold.worker) {
            c.kill(r);
            c.spawn(r);
            faults.push((r, hold.phase));
            s.fault();
        }
        c.kill(hold.worker);
        c.spawn(hold.worker);
        faults.push((hold.worker, hold.phase));
        s.fault();
        let agents: std::collections::BTreeSet<&str> = faults.iter().map(|f| f.0).collect();
        let phases: std::collections::BTreeSet<&str> = faults.iter().map(|f| f.1).collect();
        s.note("agents", agents.len());
        s.note("phases", phases.len());
        if let EventBody::EscalationOpened { id, .. } = &ev.body {
            // The operator answers after the kills: the escalation survived all five.
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let o = threadcycle()
                    .args(["resolve", id, "--set", "load_timeout_s=120", "--nats", &c.nats.url()])
                    .output()
                    .expect("resolve");
                if o.status.success() {
                    break;
                }
                assert!(Instant::now() < deadline, "the escalation could not be resolved: {}", show(&o));
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
    let rec = c.wait_for(&cycle, "completion after every kill", 600, |r| r.state == CycleState::Completed);
    s.note("secs", format!("{:.0}", started.elapsed().as_secs_f64()));
    assert!(rec.report_dir.is_some(), "{rec:?}");
    s.check_exactly_once(&c.out, &cycle, &["hello", "second"], 1);
    let r = results(&c.out.join(&cycle));
    let m = first_model(&r);
    assert_eq!(m.status, ModelStatus::Measured, "{m:?}");
    no_engine_left(&c.run_dir);
    assert!(c.logs_text().contains("Stopping an engine left by an earlier run"), "the orphan engine was not reaped");
    let phases: std::collections::BTreeSet<&str> = faults.iter().map(|f| f.1).collect();
    let agents: std::collections::BTreeSet<&str> = faults.iter().map(|f| f.0).collect();
    assert_eq!(faults.len(), 25, "{faults:?}");
    assert_eq!((agents.len(), phases.len()), (5, 5));
    println!(
        "kill matrix: faults {} (agents {} x phases {}), cycles completed 1, results lost 0, duplicates 0, {:.0} s",
        faults.len(),
        agents.len(),
        phases.len(),
        started.elapsed().as_secs_f64()
    );
}

/// Containers (running or not) labelled with this cycle.
pub(super) fn containers_of(cycle: &str) -> Vec<String> {
    let o = std::process::Command::new("docker")
        .args(["ps", "-a", "-q", "--filter", &format!("label=threadcycle.cycle={cycle}")])
        .output()
        .expect("docker ps (is dockerd running? scripts/start-dockerd.sh)");
    assert!(o.status.success(), "docker ps failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).split_whitespace().map(str::to_string).collect()
}

/// The Docker runtime: the Writer SIGKILLed while its container is being deployed, then again
/// mid-benchmark, restarted each time. The containers the dead Writers left are removed (found
/// by their labels), the cycle completes with every result once, and no container of the cycle
/// is left behind.
#[test]
fn the_writer_killed_with_a_container_up_leaves_no_container_behind() {
    require_parts();
    let docker_ok =
        std::process::Command::new("docker").args(["info"]).output().map(|o| o.status.success()).unwrap_or(false);
    assert!(docker_ok, "no Docker engine answers: run `scripts/start-dockerd.sh` (make test does)");
    let image_ok = std::process::Command::new("docker")
        .args(["image", "inspect", "threadcycle/llama-server:test"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(image_ok, "image threadcycle/llama-server:test is missing: run `scripts/build-test-images.sh`");
    let _serial = serial();
    let mut s = Scenario::new("the_writer_killed_with_a_container_up_leaves_no_container_behind");
    let tmp = tempfile::tempdir().expect("tmp");
    let mut c = Cluster::start(tmp.path());
    let events = follow_events(&c.nats.url());
    let plan = write_plan(
        tmp.path(),
        "docker-kill",
        "load_timeout_s = 120",
        "image = \"threadcycle/llama-server:test\"\nmemory_limit_gb = 1\n",
        "[[prompts]]\nid = \"second\"\ntext = \"Name two uses of a GPU.\"\n",
    );
    let text = std::fs::read_to_string(&plan).expect("plan").replace("runtime = \"process\"", "runtime = \"docker\"");
    std::fs::write(&plan, text).expect("write plan");
    let cycle = c.start_cycle(&plan);
    let mut left_by_the_dead = Vec::new();
    // Deploy: as soon as the cycle's container exists, the Writer dies.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let found = containers_of(&cycle);
        if !found.is_empty() {
            c.kill("writer");
            s.fault();
            left_by_the_dead.extend(found);
            c.spawn("writer");
            break;
        }
        assert!(Instant::now() < deadline, "no container was deployed; logs in {}", c.logs.display());
        std::thread::sleep(Duration::from_millis(100));
    }
    // Benchmark: at the first measured request after the restart, the Writer dies again.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ev =
            events.recv_timeout(left).unwrap_or_else(|_| panic!("no request measured; logs in {}", c.logs.display()));
        if ev.cycle.as_str() == cycle && matches!(ev.body, EventBody::RunMeasured { .. }) {
            c.kill("writer");
            s.fault();
            let found = containers_of(&cycle);
            assert!(!found.is_empty(), "the Writer died mid-benchmark but no container of the cycle runs");
            left_by_the_dead.extend(found);
            c.spawn("writer");
            break;
        }
    }
    c.wait_for(&cycle, "completion after the Writer's restarts", 400, |r| r.state == CycleState::Completed);
    s.note("containers_reaped", left_by_the_dead.len());
    s.check_exactly_once(&c.out, &cycle, &["hello", "second"], 1);
    let r = results(&c.out.join(&cycle));
    let m = first_model(&r);
    assert_eq!(m.status, ModelStatus::Measured, "{m:?}");
    let remaining = containers_of(&cycle);
    s.note("containers_left", remaining.len());
    assert!(remaining.is_empty(), "containers left behind: {remaining:?} (the dead Writers left {left_by_the_dead:?})");
    println!(
        "docker kill: faults 2 (writer x deploy, benchmark), containers left by dead writers {}, left behind 0",
        left_by_the_dead.len()
    );
}
