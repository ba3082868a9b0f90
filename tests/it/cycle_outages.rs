//! Outages of what the cycle stands on: the Docker engine restarts mid-benchmark (a private
//! dockerd of the test's own, never the machine's), and the JetStream store fills (a small
//! `max_file_store`) then gets room again. Each cycle completes with every result once.

use super::cycle_crash::{CRASH_PROMPTS, Cluster, ROLES, containers_of, crash_plan, no_engine_left};
use super::support::*;
use protocol::operator::CycleState;
use protocol::results::ModelStatus;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The test image the container deployments run (built on the machine's engine by
/// `scripts/build-test-images.sh`, copied into the private one).
const IMAGE: &str = "threadcycle/llama-server:test";

/// A dockerd of the test's own beside the machine's: its own socket, data root, exec root (so
/// its own containerd), pid file, cgroup parent and bridge (`tcd<pid>`, made by the test: the
/// machine's `docker0` stays the machine engine's), no iptables rules. The machine's engine and
/// the containers other people run on it are never touched. Stopped (SIGTERM) and its bridge
/// removed when dropped.
struct PrivateDocker {
    root: PathBuf,
    bridge: String,
    child: Option<Child>,
}

impl PrivateDocker {
    fn start(root: &Path) -> PrivateDocker {
        std::fs::create_dir_all(root).expect("docker root");
        let n = std::process::id();
        let bridge = format!("tcd{}", n % 1_000_000);
        let _ = Command::new("ip").args(["link", "del", &bridge]).output();
        let ip = |args: &[&str]| {
            let o = Command::new("ip").args(args).output().expect("run ip (iproute2)");
            assert!(o.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        };
        ip(&["link", "add", &bridge, "type", "bridge"]);
        let mut d = PrivateDocker { root: root.to_path_buf(), bridge: bridge.clone(), child: None };
        // A /24 of 10.213.0.0/16 chosen by pid: the machine engine's is 172.17.0.0/16.
        ip(&["addr", "add", &format!("10.213.{}.1/24", n % 250 + 2), "dev", &bridge]);
        ip(&["link", "set", &bridge, "up"]);
        d.spawn();
        d
    }

    fn sock(&self) -> PathBuf {
        self.root.join("docker.sock")
    }

    /// `DOCKER_HOST` for this engine.
    fn host(&self) -> String {
        format!("unix://{}", self.sock().display())
    }

    /// Starts dockerd on the data root (again, after [`PrivateDocker::stop`]) and waits until it answers.
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join("dockerd.log"))
            .expect("dockerd log");
        let r = |p: &str| self.root.join(p).display().to_string();
        let child = Command::new("dockerd")
            .args([
                "-H",
                &self.host(),
                "--data-root",
                &r("data"),
                "--exec-root",
                &r("exec"),
                "--pidfile",
                &r("docker.pid"),
            ])
            .args(["--bridge", &self.bridge, "--iptables=false", "--ip-masq=false", "--ip-forward=false"])
            .args(["--cgroup-parent", &format!("/{}", self.bridge), "--containerd-namespace", &self.bridge])
            .args(["--containerd-plugins-namespace", &format!("{}-plugins", self.bridge)])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start dockerd (install docker.io)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.docker(&["info"]).status.success() {
                return;
            }
            if let Some(st) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("the private dockerd exited at start ({st}); its log:\n{}", self.log_tail());
            }
            assert!(Instant::now() < deadline, "the private dockerd did not answer in 60 s:\n{}", self.log_tail());
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.root.join("dockerd.log")).unwrap_or_default();
        text.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Stops dockerd the way a service manager does (SIGTERM: it stops its containers and
    /// exits); returns how long it took.
    fn stop(&mut self) -> Duration {
        let started = Instant::now();
        let Some(mut c) = self.child.take() else { return Duration::ZERO };
        let pid = nix::unistd::Pid::from_raw(i32::try_from(c.id()).expect("pid"));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(90);
        while c.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        started.elapsed()
    }

    /// `docker -H <this engine> <args>`.
    fn docker(&self, args: &[&str]) -> std::process::Output {
        Command::new("docker").arg("-H").arg(self.host()).args(args).output().expect("run docker")
    }

    /// Copies `image` from the machine's engine into this one (`docker save | docker load`).
    fn load_image(&self, image: &str) {
        let mut save = Command::new("docker")
            .args(["save", image])
            .stdout(Stdio::piped())
            .spawn()
            .expect("docker save on the machine's engine");
        let load = Command::new("docker")
            .arg("-H")
            .arg(self.host())
            .arg("load")
            .stdin(Stdio::from(save.stdout.take().expect("save's stdout")))
            .output()
            .expect("docker load");
        assert!(save.wait().expect("docker save").success(), "docker save {image} failed");
        assert!(load.status.success(), "docker load: {}", show(&load));
    }

    /// Our containers (label `threadcycle.managed`), running or not, on this engine.
    fn managed(&self) -> Vec<String> {
        let o = self.docker(&["ps", "-a", "-q", "--filter", "label=threadcycle.managed=true"]);
        assert!(o.status.success(), "docker ps on the private engine: {}", show(&o));
        String::from_utf8_lossy(&o.stdout).split_whitespace().map(str::to_string).collect()
    }
}

impl Drop for PrivateDocker {
    fn drop(&mut self) {
        if self.child.is_some() {
            for id in self.managed_quiet() {
                let _ = self.docker(&["rm", "-f", &id]);
            }
        }
        self.stop();
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).output();
    }
}

impl PrivateDocker {
    fn managed_quiet(&self) -> Vec<String> {
        let o = self.docker(&["ps", "-a", "-q", "--filter", "label=threadcycle.managed=true"]);
        String::from_utf8_lossy(&o.stdout).split_whitespace().map(str::to_string).collect()
    }
}

/// The Docker engine the Writer deploys into is stopped (SIGTERM, as `systemctl restart docker`
/// does) while the model is being measured, kept down a few seconds, and started again on the
/// same data root. Its shutdown stops the engine's container mid-request: the attempt fails, the
/// failure is escalated, Debug's remedy (`policy.default = 'auto'`) retries, and the Writer
/// reaches the engine again. The cycle completes with every result once and no container of ours
/// is left on the engine (nor any made on the machine's).
#[test]
fn the_docker_engine_restarted_mid_benchmark_is_survived_and_the_cycle_completes_exactly_once() {
    require_parts();
    let host_ok = |args: &[&str]| Command::new("docker").args(args).output().is_ok_and(|o| o.status.success());
    assert!(host_ok(&["info"]), "no Docker engine answers: run `scripts/start-dockerd.sh` (make test does)");
    assert!(host_ok(&["image", "inspect", IMAGE]), "image {IMAGE} is missing: run `scripts/build-test-images.sh`");
    let _serial = serial();
    let mut s =
        Scenario::new("the_docker_engine_restarted_mid_benchmark_is_survived_and_the_cycle_completes_exactly_once");
    let tmp = tempfile::tempdir().expect("tmp");
    let mut docker = PrivateDocker::start(&tmp.path().join("d"));
    docker.load_image(IMAGE);
    let c = Cluster::start_with_env(tmp.path(), &[("DOCKER_HOST", &docker.host())]);
    let plan = crash_plan(tmp.path());
    let text = std::fs::read_to_string(&plan)
        .expect("plan")
        .replace("runtime = \"process\"", "runtime = \"docker\"")
        .replace("threads = 2", &format!("threads = 2\nimage = \"{IMAGE}\"\nmemory_limit_gb = 1"))
        .replace("[defaults]", "[defaults]\nload_timeout_s = 120")
        + "\n[policy]\ndefault = 'auto'\nmax_attempts = 3\n";
    std::fs::write(&plan, text).expect("write plan");
    let cycle = c.start_cycle(&plan);
    c.wait_for(&cycle, "the first measured request", 300, |r| r.requests_done >= 1);
    let before = docker.managed();
    assert!(!before.is_empty(), "no container of ours runs on the private engine; logs in {}", c.logs.display());
    let took = docker.stop();
    s.fault();
    s.note("stop_secs", format!("{:.1}", took.as_secs_f64()));
    std::thread::sleep(Duration::from_secs(3));
    docker.spawn();
    c.wait_for(&cycle, "completion after the Docker engine's restart", 600, |r| r.state == CycleState::Completed);
    s.check_exactly_once(&c.out, &cycle, &CRASH_PROMPTS, 2);
    let r = results(&c.out.join(&cycle));
    let m = first_model(&r);
    s.note("attempts", m.attempts.len());
    s.note("escalations", r.escalations.len());
    let left = docker.managed();
    s.note("containers_left", left.len());
    let on_machine = containers_of(&cycle);
    s.note("containers_on_the_machine_engine", on_machine.len());
    assert_eq!(m.status, ModelStatus::Measured, "{m:?}");
    let said: Vec<&str> = m.attempts.iter().map(|a| a.outcome.as_str()).collect();
    assert!(m.attempts.len() >= 2, "the restart was not noticed as a failed attempt: {said:?}");
    let first = &m.attempts[0].outcome;
    assert!(
        first.contains("Docker engine") && first.contains(&docker.host()),
        "the failure does not name the Docker engine: {first}"
    );
    assert!(!r.escalations.is_empty(), "no escalation: {said:?}");
    assert!(left.is_empty(), "containers left on the private engine: {left:?} (before the restart: {before:?})");
    assert!(on_machine.is_empty(), "the cycle made containers on the machine's engine: {on_machine:?}");
    no_engine_left(&c.run_dir);
    assert!(!c.logs_text().contains("panicked"), "an agent panicked; logs in {}", c.logs.display());
}

/// JetStream's file storage in use on the server at `url`, bytes.
fn store_used(url: &str) -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let client = async_nats::connect(url).await.expect("connect to the test's NATS");
        async_nats::jetstream::new(client).query_account().await.expect("JetStream account info").storage
    })
}

/// The JetStream store fills mid-benchmark: the server is restarted on its store with a
/// `max_file_store` a few KiB above what it holds (nats-server lowers the limit only at a
/// start), so it soon refuses new messages with `insufficient resources` as when its disk
/// fills. The Writer says in operator terms that the store is full and what to do, holds its
/// measured runs and keeps its engine; no agent dies. Room returns while the server runs (a
/// higher limit, reloaded): the cycle resumes and completes with every result once, in its
/// first attempt.
#[test]
fn a_full_jetstream_store_is_named_and_the_cycle_resumes_when_room_returns() {
    require_parts();
    let _serial = serial();
    let mut s = Scenario::new("a_full_jetstream_store_is_named_and_the_cycle_resumes_when_room_returns");
    let tmp = tempfile::tempdir().expect("tmp");
    let mut c = Cluster::start(tmp.path());
    let cycle = c.start_cycle(&crash_plan(tmp.path()));
    c.wait_for(&cycle, "the first measured request", 180, |r| r.requests_done >= 1);
    let used = store_used(&c.nats.url());
    let limit = used + 2 * 1024;
    // nats-server lowers the limit only at a start: restarted on its store with it.
    c.nats.set_max_file_store(Some(limit)).expect("set max_file_store");
    c.nats.restart().expect("restart nats-server with the limit");
    s.fault();
    s.note("limit_bytes", limit);
    let said = "the NATS JetStream store is full";
    let deadline = Instant::now() + Duration::from_secs(120);
    while !c.logs_text().contains(said) {
        let rec = c.cli(&["status", &cycle]).as_ref().and_then(first_cycle).cloned();
        assert!(
            !rec.as_ref().is_some_and(|r| r.state == CycleState::Completed),
            "the cycle completed before the store filled ({used} bytes used, limit {limit}); logs in {}",
            c.logs.display()
        );
        assert!(Instant::now() < deadline, "no agent said `{said}` in 120 s; logs in {}", c.logs.display());
        std::thread::sleep(Duration::from_millis(500));
    }
    // Full for a while: every agent lives through it.
    std::thread::sleep(Duration::from_secs(10));
    let dead: Vec<&str> = ROLES.iter().copied().filter(|r| !c.alive(r)).collect();
    s.note("agents_died", dead.len());
    let logs = c.logs_text();
    let line = logs.lines().find(|l| l.contains(said)).unwrap_or_default().to_string();
    println!("store full: {line}");
    assert!(dead.is_empty(), "agents died while the store was full: {dead:?}; logs in {}", c.logs.display());
    assert!(line.contains("max_file_store"), "the error does not name the store limit: {line}");
    // Room returns while the server runs: a higher limit, reloaded (no restart).
    c.nats.set_max_file_store(Some(64 << 30)).expect("raise max_file_store");
    c.nats.reload().expect("reload nats-server");
    c.wait_for(&cycle, "completion once the store has room", 400, |r| r.state == CycleState::Completed);
    s.check_exactly_once(&c.out, &cycle, &CRASH_PROMPTS, 2);
    let r = results(&c.out.join(&cycle));
    let m = first_model(&r);
    s.note("attempts", m.attempts.len());
    assert_eq!(m.status, ModelStatus::Measured, "{m:?}");
    assert_eq!(m.attempts.len(), 1, "the full store cost an attempt: {:?}", m.attempts);
    no_engine_left(&c.run_dir);
    assert!(!c.logs_text().contains("panicked"), "an agent panicked; logs in {}", c.logs.display());
}
