//! The Reader's host checks on the real machine: the allocation test in a real container, above
//! the 2 GiB a single `read()` returns.

use super::support::*;

fn plan(limit_gb: &str, allocatable_gb: &str) -> protocol::plan::Plan {
    let text = format!(
        "name = 'alloc'\n[host]\nallocatable_gb = {allocatable_gb}\nallocation_image = 'threadcycle/crasher:test'\n\
         [[models]]\nname = 'm'\nengine = 'llama-server'\nruntime = 'docker'\nimage = 'threadcycle/llama-server:test'\n\
         model_path = '{}'\nmemory_limit_gb = {limit_gb}\n[[prompts]]\nid = 'p'\ntext = 't'\n",
        model().display()
    );
    protocol::plan::Plan::from_toml(&text).expect("valid plan")
}

fn allocation(p: &protocol::plan::Plan) -> protocol::results::Check {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let (_, checks) = rt.block_on(agent_reader::agent::host_facts(p, "local", true));
    checks.into_iter().find(|c| c.name == "memory.allocatable").expect("an allocation check")
}

#[test]
fn a_container_really_allocates_the_plans_test_amount_under_its_planned_limit() {
    let ok = std::process::Command::new("docker").args(["info"]).output().map(|o| o.status.success()).unwrap_or(false);
    assert!(ok, "no Docker engine answers: run `scripts/start-dockerd.sh` (make test does)");
    let _serial = serial();
    // Over 2 GiB, where one read() stops short: 3 GB are really touched under a 4 GB limit, and
    // the container's cgroup says so.
    let pass = allocation(&plan("4", "3"));
    assert_eq!(pass.status, protocol::results::CheckStatus::Pass, "{pass:?}");
    assert!(pass.measured.contains("3 GB allocated in a container limited to 4 GB"), "{pass:?}");
    assert!(pass.detail.contains("read one 3072 MiB block in full"), "{pass:?}");
    let peak: f64 = pass
        .detail
        .split("peaked at ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|g| g.parse().ok())
        .unwrap_or_else(|| panic!("no peak in {pass:?}"));
    assert!((3.0..4.0).contains(&peak), "the cgroup's peak should be 3 to 4 GiB: {pass:?}");
    // A planned limit smaller than the test amount cannot be granted: the container is OOM-killed.
    let fail = allocation(&plan("2", "3"));
    assert_eq!(fail.status, protocol::results::CheckStatus::Fail, "{fail:?}");
    assert!(fail.detail.contains("OOM") || fail.detail.contains("137"), "{fail:?}");
    let left = std::process::Command::new("docker")
        .args(["ps", "-a", "--filter", "label=threadcycle.purpose=allocation-test", "--format", "{{.Names}}"])
        .output()
        .expect("docker ps");
    assert!(String::from_utf8_lossy(&left.stdout).trim().is_empty(), "allocation containers left behind");
}

/// A plan whose Docker model asks for every GPU, its GPU check run in `image`.
fn gpu_plan(image: &str) -> protocol::plan::Plan {
    let text = format!(
        "name = 'gpu'\n[host]\ngpu_check_image = '{image}'\n\
         [[models]]\nname = 'm'\nengine = 'llama-server'\nruntime = 'docker'\nimage = 'threadcycle/llama-server:test'\n\
         model_path = '{}'\ngpus = 'all'\n[[prompts]]\nid = 'p'\ntext = 't'\n",
        model().display()
    );
    protocol::plan::Plan::from_toml(&text).expect("valid plan")
}

#[test]
fn the_gpu_check_puts_a_container_on_the_gpu_and_names_why_it_cannot() {
    use protocol::results::CheckStatus;
    let ok = std::process::Command::new("docker").args(["info"]).output().map(|o| o.status.success()).unwrap_or(false);
    assert!(ok, "no Docker engine answers: run `scripts/start-dockerd.sh` (make test does)");
    let info =
        std::process::Command::new("docker").args(["info", "--format", "{{json .Runtimes}}"]).output().expect("info");
    if String::from_utf8_lossy(&info.stdout).contains("nvidia") {
        eprintln!("this engine has the NVIDIA runtime: `bench/gpu-check.sh` covers the GPU path");
    }
    let _serial = serial();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    // The Reader's own run: this engine has no NVIDIA runtime and NVML lists no GPU here, so the
    // check is `unavailable` (nothing to give), with the engine's refusal and the fix.
    let (facts, checks) =
        rt.block_on(agent_reader::agent::host_facts(&gpu_plan("threadcycle/crasher:test"), "local", false));
    let gpu =
        checks.iter().find(|c| c.name == "docker.gpu").unwrap_or_else(|| panic!("no docker.gpu check: {checks:?}"));
    if facts.gpus.is_empty() && !String::from_utf8_lossy(&info.stdout).contains("nvidia") {
        assert_eq!(gpu.status, CheckStatus::Unavailable, "{gpu:?}");
        assert!(gpu.measured.contains("no NVIDIA runtime"), "{gpu:?}");
        assert!(gpu.measured.contains(r#"could not select device driver "" with capabilities: [[gpu]]"#), "{gpu:?}");
        assert!(gpu.detail.contains("nvidia-ctk runtime configure --runtime=docker"), "{gpu:?}");
        // The same refusal on a host whose NVML does list a GPU is a failed check.
        let probe = rt.block_on(async {
            host::docker::DockerRuntime::connect().await.expect("engine").probe_gpu("threadcycle/crasher:test").await
        });
        let failed = agent_reader::agent::gpu_probe_check(&probe, "threadcycle/crasher:test", true);
        assert_eq!(failed.status, CheckStatus::Fail, "{failed:?}");
        assert!(failed.measured.contains("no NVIDIA runtime") && failed.detail.contains("nvidia-container-toolkit"));
    }
    // A probe image neither here nor pullable: not tested, with the exact pull command.
    let (_, checks) =
        rt.block_on(agent_reader::agent::host_facts(&gpu_plan("threadcycle/no-such-cuda:never"), "local", false));
    let gpu =
        checks.iter().find(|c| c.name == "docker.gpu").unwrap_or_else(|| panic!("no docker.gpu check: {checks:?}"));
    assert_eq!(gpu.status, CheckStatus::Warn, "{gpu:?}");
    assert!(gpu.detail.contains("`docker pull threadcycle/no-such-cuda:never`"), "{gpu:?}");
    // A plan that asks for no GPU runs no probe.
    let (_, checks) = rt.block_on(agent_reader::agent::host_facts(&plan("4", "1"), "local", false));
    assert!(checks.iter().all(|c| c.name != "docker.gpu"), "{checks:?}");
}
