//! Crashes mid-cycle: an agent killed with SIGKILL and restarted, the NATS server killed and
//! restarted on its store, Main killed while an escalation waits — the cycle completes and every
//! result appears exactly once.

use super::support::*;
use handoffs::server::NatsServer;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// The five agents run by hand against one NATS server, so the test can kill them.
struct Cluster {
    nats: NatsServer,
    agents: BTreeMap<&'static str, Child>,
    out: PathBuf,
    logs: PathBuf,
    run_dir: PathBuf,
}

const ROLES: [&str; 5] = ["main", "reader", "writer", "debug", "documentation"];

impl Cluster {
    fn start(dir: &Path) -> Cluster {
        let nats = NatsServer::start_in(&dir.join("nats"), "").expect("nats-server (make nats)");
        let mut c = Cluster {
            nats,
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

    fn spawn(&mut self, role: &'static str) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.join(format!("{role}.log")))
            .expect("log");
        let child = threadcycle()
            .args(["agent", role, "--nats", &self.nats.url(), "--out"])
            .arg(&self.out)
            .env("THREADCYCLE_RUN_DIR", &self.run_dir)
            .env("THREADCYCLE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn agent");
        self.agents.insert(role, child);
    }

    fn kill(&mut self, role: &'static str) {
        if let Some(mut c) = self.agents.remove(role) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn cli(&self, args: &[&str]) -> Option<serde_json::Value> {
        let o = threadcycle().args(args).args(["--json", "--nats", &self.nats.url()]).output().expect("run cli");
        o.status.success().then(|| serde_json::from_slice(&o.stdout).ok()).flatten()
    }

    fn start_cycle(&self, plan: &Path) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(v) = self.cli(&["start", &plan.display().to_string()]) {
                return v["cycle"].as_str().expect("cycle id").to_string();
            }
            assert!(Instant::now() < deadline, "Main never accepted the plan");
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Waits until the cycle's record satisfies `pred`; returns it.
    fn wait_for(
        &self,
        cycle: &str,
        what: &str,
        secs: u64,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = self.cli(&["status", cycle]) {
                let rec = &v["cycles"][0];
                if pred(rec) {
                    return rec.clone();
                }
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; logs in {}", self.logs.display());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn logs_text(&self) -> String {
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

fn crash_plan(dir: &Path) -> PathBuf {
    let p = write_plan(dir, "crash", "", "", "");
    let text = std::fs::read_to_string(&p)
        .expect("plan")
        .replace("repetitions = 1", "repetitions = 2")
        .replace("max_tokens = 12", "max_tokens = 32")
        + "\n[[prompts]]\nid = \"second\"\ntext = \"Name two uses of a GPU.\"\n\n[[prompts]]\nid = \"third\"\ntext = \"What is a container?\"\n";
    std::fs::write(&p, text).expect("write");
    p
}

/// Every prompt × repetition appears exactly once.
fn assert_exactly_once(out: &Path, cycle: &str) {
    let r = results(&out.join(cycle));
    let runs = r["models"][0]["runs"].as_array().expect("runs").clone();
    let mut seen = BTreeMap::new();
    for x in &runs {
        *seen
            .entry((x["prompt_id"].as_str().unwrap_or("").to_string(), x["repetition"].as_u64().unwrap_or(0)))
            .or_insert(0) += 1;
    }
    let expected: Vec<(String, u64)> =
        ["hello", "second", "third"].iter().flat_map(|p| (1..=2).map(move |r| (p.to_string(), r))).collect();
    assert_eq!(seen.keys().cloned().collect::<Vec<_>>(), expected, "missing or extra results: {seen:?}");
    assert!(seen.values().all(|n| *n == 1), "duplicated results: {seen:?}");
    let csv = std::fs::read_to_string(out.join(cycle).join("data/results.csv")).expect("csv");
    assert_eq!(csv_records(&csv), 1 + expected.len(), "results.csv records:\n{csv}");
}

/// Records in CSV text (quoted fields may hold newlines).
fn csv_records(text: &str) -> usize {
    let mut quoted = false;
    let mut records = 0;
    let mut in_record = false;
    for ch in text.chars() {
        match ch {
            '"' => quoted = !quoted,
            '\n' if !quoted => {
                if in_record {
                    records += 1;
                }
                in_record = false;
                continue;
            }
            _ => {}
        }
        in_record = true;
    }
    records + usize::from(in_record)
}

fn no_engine_left(run_dir: &Path) {
    let pids: Vec<_> = std::fs::read_dir(run_dir)
        .map(|d| d.flatten().filter(|e| e.path().extension().is_some_and(|x| x == "pid")).collect())
        .unwrap_or_default();
    assert!(pids.is_empty(), "engine pid files left: {pids:?}");
}

#[test]
fn the_writer_killed_mid_benchmark_and_restarted_completes_the_cycle_without_duplicates() {
    require_parts();
    let _serial = serial();
    let tmp = tempfile::tempdir().expect("tmp");
    let mut c = Cluster::start(tmp.path());
    let cycle = c.start_cycle(&crash_plan(tmp.path()));
    c.wait_for(&cycle, "the first measured request", 180, |r| r["requests_done"].as_u64().unwrap_or(0) >= 2);
    c.kill("writer");
    // The engine the dead Writer started is an orphan now; the new Writer stops it.
    c.spawn("writer");
    let rec = c.wait_for(&cycle, "completion after the Writer's restart", 300, |r| r["state"]["state"] == "completed");
    assert_exactly_once(&c.out, &cycle);
    assert!(rec["report_dir"].as_str().is_some());
    assert!(c.logs_text().contains("Stopping an engine left by an earlier run"), "the orphan engine was not reaped");
    no_engine_left(&c.run_dir);
}

#[test]
fn the_nats_server_killed_mid_cycle_and_restarted_on_its_store_completes_the_cycle() {
    require_parts();
    let _serial = serial();
    let tmp = tempfile::tempdir().expect("tmp");
    let mut c = Cluster::start(tmp.path());
    let cycle = c.start_cycle(&crash_plan(tmp.path()));
    c.wait_for(&cycle, "the first measured request", 180, |r| r["requests_done"].as_u64().unwrap_or(0) >= 1);
    c.nats.kill();
    std::thread::sleep(Duration::from_secs(2));
    c.nats.restart().expect("restart nats");
    c.wait_for(&cycle, "completion after the NATS restart", 300, |r| r["state"]["state"] == "completed");
    assert_exactly_once(&c.out, &cycle);
    no_engine_left(&c.run_dir);
}

#[test]
fn main_killed_while_an_escalation_waits_still_lets_the_operator_resolve_it() {
    require_parts();
    let _serial = serial();
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
            && let Some(id) = v["items"][0]["id"].as_str()
        {
            break id.to_string();
        }
        assert!(Instant::now() < deadline, "no escalation opened");
        std::thread::sleep(Duration::from_millis(300));
    };
    c.kill("main");
    c.spawn("main");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = c.cli(&["escalations"])
            && v["items"][0]["id"] == id.as_str()
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
    c.wait_for(&cycle, "completion after the operator's answer", 180, |r| r["state"]["state"] == "completed");
    let m = &results(&c.out.join(&cycle))["models"][0];
    assert_eq!(m["status"]["state"], "measured", "{m}");
}
