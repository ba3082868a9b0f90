//! The Docker runtime on a real dockerd: the demo model in a local `FROM scratch` llama-server
//! image, an OOM kill remedied by a larger limit, a container that dies at start.

use super::support::*;
use protocol::results::ModelStatus;

/// Checks dockerd answers and the local test images exist.
fn require_docker() {
    let ok = std::process::Command::new("docker").args(["info"]).output().map(|o| o.status.success()).unwrap_or(false);
    assert!(ok, "no Docker engine answers: run `scripts/start-dockerd.sh` (make test does)");
    for img in ["threadcycle/llama-server:test", "threadcycle/crasher:test"] {
        let ok = std::process::Command::new("docker")
            .args(["image", "inspect", img])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(ok, "image {img} is missing: run `scripts/build-test-images.sh` (make test does)");
    }
}

fn managed_containers() -> String {
    let o = std::process::Command::new("docker")
        .args(["ps", "-a", "--filter", "label=threadcycle.managed=true", "--format", "{{.Names}}"])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn docker_model(limit_gb: &str, extra: &str) -> String {
    format!("image = \"threadcycle/llama-server:test\"\nmemory_limit_gb = {limit_gb}\n{extra}")
}

fn docker_plan(dir: &std::path::Path, name: &str, model_extra: &str, rest: &str) -> std::path::PathBuf {
    let p = write_plan(dir, name, "load_timeout_s = 120", model_extra, rest);
    let text = std::fs::read_to_string(&p).expect("plan").replace("runtime = \"process\"", "runtime = \"docker\"");
    std::fs::write(&p, text).expect("write");
    p
}

#[test]
fn a_model_in_a_container_is_deployed_benchmarked_and_torn_down() {
    require_parts();
    require_docker();
    let _serial = serial();
    let tmp = tempfile::tempdir().expect("tmp");
    let plan = docker_plan(tmp.path(), "docker-ok", &docker_model("1", ""), "");
    let out = tmp.path().join("out");
    let dir = up_ok(&plan, &out);
    let r = results(&dir);
    let m = first_model(&r);
    assert_eq!(m.status, ModelStatus::Measured, "{m:?}");
    assert!(m.runs.first().and_then(|x| x.engine_decode_tps).is_some_and(|t| t > 0.0), "{m:?}");
    let line = m.deployment.first().expect("deployment line");
    assert!(
        line.starts_with("docker run -d --name tc-")
            && line.contains("--memory=1024m")
            && line.contains("threadcycle/llama-server:test"),
        "{line}"
    );
    assert_eq!(managed_containers(), "", "containers left behind");
    let guide = std::fs::read_to_string(dir.join("deployment-guide.md")).expect("guide");
    assert!(guide.contains("--memory"), "{guide}");
}

#[test]
fn an_oom_killed_container_is_diagnosed_and_auto_raises_its_memory_limit() {
    require_parts();
    require_docker();
    let _serial = serial();
    let mut s = Scenario::new("an_oom_killed_container_is_diagnosed_and_auto_raises_its_memory_limit");
    let tmp = tempfile::tempdir().expect("tmp");
    // Without mmap the weights are read into the container's memory: 64 MiB cannot hold them.
    let plan = docker_plan(
        tmp.path(),
        "docker-oom",
        &docker_model("0.0625", "ignore_fit = true\nargs = [\"--load-mode\", \"none\"]"),
        "[policy]\ndefault = 'auto'\nmax_attempts = 3\n",
    );
    let out = tmp.path().join("out");
    let dir = up_ok(&plan, &out);
    let r = results(&dir);
    let m = first_model(&r);
    s.faults = m.attempts.iter().filter(|a| a.outcome.contains("OOM killer")).count() as u64;
    s.check_dir(&dir, &["hello"], 1);
    assert_eq!(m.status, ModelStatus::Measured, "{m:?}");
    assert!(m.attempts.first().is_some_and(|a| a.outcome.contains("OOM killer")), "{m:?}");
    assert_eq!(attempt_changes(m, 1).first().map(String::as_str), Some("memory_limit_gb=3"), "{m:?}");
    let trouble = std::fs::read_to_string(dir.join("troubleshooting.md")).expect("troubleshooting");
    assert!(trouble.contains("OOM killer"), "{trouble}");
    assert!(trouble.contains("oom_killed") || trouble.contains("OOMKilled"), "{trouble}");
    assert_eq!(managed_containers(), "", "containers left behind");
}

#[test]
fn a_container_that_dies_at_start_gives_an_escalation_carrying_its_last_log_lines() {
    require_parts();
    require_docker();
    let _serial = serial();
    let mut s = Scenario::new("a_container_that_dies_at_start_gives_an_escalation_carrying_its_last_log_lines");
    s.fault();
    let tmp = tempfile::tempdir().expect("tmp");
    // A file that is not a GGUF model: llama-server starts, cannot load it, and exits.
    let bad = tmp.path().join("models").join("broken.gguf");
    std::fs::create_dir_all(bad.parent().expect("parent")).expect("mkdir");
    std::fs::write(&bad, b"this is not a gguf file").expect("write");
    let plan = docker_plan(
        tmp.path(),
        "docker-crash",
        &docker_model("1", "ignore_fit = true"),
        "[policy]\ndefault = 'skip'\n",
    );
    let text = std::fs::read_to_string(&plan)
        .expect("plan")
        .replace(&model().display().to_string(), &bad.display().to_string());
    std::fs::write(&plan, text).expect("write");
    let out = tmp.path().join("out");
    let dir = up_ok(&plan, &out);
    let r = results(&dir);
    let m = first_model(&r);
    s.note("escalations", r.escalations.len());
    s.check_dir(&dir, &[], 1);
    assert!(matches!(m.status, ModelStatus::Skipped { .. }), "{m:?}");
    let trouble = std::fs::read_to_string(dir.join("troubleshooting.md")).expect("troubleshooting");
    assert!(trouble.contains("failed to load model"), "{trouble}");
    assert!(trouble.contains("could not load the model file"), "{trouble}");
    assert_eq!(managed_containers(), "", "containers left behind");
}

#[test]
fn the_readers_ram_prediction_is_within_15_percent_of_the_containers_measured_peak() {
    require_parts();
    require_docker();
    let _serial = serial();
    let tmp = tempfile::tempdir().expect("tmp");
    // Without mmap the weights live in the container's own memory, so its peak is comparable
    // with the prediction (mapped pages already cached by the host are charged elsewhere).
    let plan = docker_plan(tmp.path(), "docker-ram", &docker_model("1", "args = [\"--load-mode\", \"none\"]"), "");
    // Docker's stats stream reports about once a second: measure long enough for several samples.
    let text = std::fs::read_to_string(&plan)
        .expect("plan")
        .replace("repetitions = 1", "repetitions = 4")
        .replace("max_tokens = 12", "max_tokens = 48");
    std::fs::write(&plan, text).expect("write");
    let out = tmp.path().join("out");
    let r = results(&up_ok(&plan, &out));
    let predicted = r.verification.verdicts.first().and_then(|v| v.ram_bytes).expect("predicted RAM") as f64;
    let measured =
        first_model(&r).telemetry.as_ref().and_then(|t| t.engine_mem_bytes).map(|s| s.peak).expect("measured peak");
    let err = (predicted - measured).abs() / measured;
    assert!(
        err < 0.15,
        "predicted {:.0} MiB, measured {:.0} MiB: off by {:.0} %",
        predicted / 1048576.0,
        measured / 1048576.0,
        err * 100.0
    );
}
