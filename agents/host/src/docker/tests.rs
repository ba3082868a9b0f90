//! Tests of the Docker adapter. Most need a real engine and the local test images; they fail
//! (never skip) when either is missing: run `scripts/start-dockerd.sh` and
//! `scripts/build-test-images.sh`.

use bollard::models::ContainerCreateBody;
use bollard::query_parameters::CreateContainerOptionsBuilder;
use futures::StreamExt;
use protocol::plan::GpuRequest;

use super::error::fmt_bytes;
use super::*;

const CRASHER: &str = "threadcycle/crasher:test";
const MIB: u64 = 1 << 20;

/// Connect, or fail the test telling how to start the engine.
async fn engine() -> DockerRuntime {
    match DockerRuntime::connect().await {
        Ok(d) => d,
        Err(e) => panic!("these tests need a running Docker engine: {e}\n  run `scripts/start-dockerd.sh` first"),
    }
}

/// Connect and check the crasher image exists, or fail telling how to build it.
async fn engine_with_crasher() -> DockerRuntime {
    let docker = engine().await;
    assert!(
        docker.image_present(CRASHER).await.unwrap(),
        "image {CRASHER} is missing: run `scripts/build-test-images.sh crasher` first"
    );
    docker
}

/// A unique container name for this test run.
fn unique(what: &str) -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("tc-test-{what}-{}-{nanos}", std::process::id())
}

/// Removes the named containers when dropped, even when the test panics.
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let names = std::mem::take(&mut self.0);
        // Drop cannot await: remove from a thread with its own runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                if let Ok(d) = DockerRuntime::connect().await {
                    for n in &names {
                        let _ = d.remove(n).await;
                    }
                }
            });
        })
        .join();
    }
}

/// A crasher-image spec running `cmd` (empty: the crashing default).
fn crasher_spec(name: &str, cmd: &[&str]) -> ContainerSpec {
    let mut spec = ContainerSpec::new(name, CRASHER, 8080);
    spec.cmd = cmd.iter().map(|s| s.to_string()).collect();
    spec.labels.insert("threadcycle.test".to_string(), "docker-rs".to_string());
    spec
}

/// A probe that never succeeds.
async fn never() -> bool {
    false
}

#[tokio::test]
async fn engine_info_and_images() {
    let docker = engine_with_crasher().await;
    let info = docker.engine_info().await.unwrap();
    assert!(!info.version.is_empty(), "{info:?}");
    assert!(!info.api_version.is_empty(), "{info:?}");
    assert!(info.runtimes.iter().any(|r| r == "runc"), "{info:?}");
    assert!(matches!(info.cgroup_version, Some(1 | 2)), "{info:?}");
    assert!(info.mem_total.unwrap_or(0) > 0, "{info:?}");
    assert!(!docker.image_present("threadcycle/no-such:image").await.unwrap());
}

#[tokio::test]
async fn crasher_exits_with_its_code_and_logs() {
    let docker = engine_with_crasher().await;
    let name = unique("crash");
    let _cleanup = Cleanup(vec![name.clone()]);
    let running = docker.run(&crasher_spec(&name, &[])).await.unwrap();
    assert_ne!(running.host_port, 0);
    let err = docker.wait_healthy(&running.id, never, Duration::from_secs(30)).await.unwrap_err();
    let DockerError::Exited { container, exit_code, oom_killed, log_tail, .. } = &err else {
        panic!("expected Exited, got {err:?}");
    };
    assert_eq!(container, &name);
    assert_eq!(*exit_code, Some(3));
    assert!(!oom_killed);
    for line in [
        "crasher: starting up",
        "crasher: loading model /models/none.gguf",
        "crasher: error: failed to load model",
        "crasher: exiting with code 3",
    ] {
        assert!(log_tail.iter().any(|l| l == line), "{line:?} not in {log_tail:?}");
    }
    let msg = err.to_string();
    assert!(msg.contains(&format!("container `{name}` stopped (exit 3)")), "{msg}");
    assert!(msg.contains("crasher: exiting with code 3"), "{msg}");
    let state = docker.state(&name).await.unwrap();
    assert!(!state.running);
    assert_eq!(state.exit_code, Some(3));
    assert_eq!(state.status, "exited");
}

#[tokio::test]
async fn instant_exit_is_reported_by_run_or_wait() {
    let docker = engine_with_crasher().await;
    let name = unique("instant");
    let _cleanup = Cleanup(vec![name.clone()]);
    let spec = crasher_spec(&name, &["sh", "-c", "echo boom >&2; exit 4"]);
    let err = match docker.run(&spec).await {
        Ok(r) => docker.wait_healthy(&r.id, never, Duration::from_secs(30)).await.unwrap_err(),
        Err(e) => e,
    };
    match &err {
        DockerError::Exited { exit_code: Some(4), log_tail, .. } => assert_eq!(log_tail, &vec!["boom".to_string()]),
        other => panic!("expected Exited with code 4, got {other:?}"),
    }
}

#[tokio::test]
async fn healthy_http_server_is_reached_on_its_published_port() {
    let docker = engine_with_crasher().await;
    let name = unique("httpd");
    let _cleanup = Cleanup(vec![name.clone()]);
    let running = docker.run(&crasher_spec(&name, &["httpd", "-f", "-p", "8080", "-h", "/"])).await.unwrap();
    let port = running.host_port;
    let took = docker
        .wait_healthy(
            &running.id,
            async || tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok(),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert!(took < Duration::from_secs(30));
    assert!(docker.state(&running.id).await.unwrap().running);
}

#[tokio::test]
async fn never_answering_container_is_not_healthy_after_timeout() {
    let docker = engine_with_crasher().await;
    let name = unique("mute");
    let _cleanup = Cleanup(vec![name.clone()]);
    let running = docker.run(&crasher_spec(&name, &["sh", "-c", "echo waiting; sleep 300"])).await.unwrap();
    let err = docker.wait_healthy(&running.id, never, Duration::from_secs(1)).await.unwrap_err();
    match &err {
        DockerError::NotHealthy { container, after, log_tail } => {
            assert_eq!(container, &name);
            assert!(*after >= Duration::from_secs(1), "{after:?}");
            assert!(*after < Duration::from_secs(5), "{after:?}");
            assert_eq!(log_tail, &vec!["waiting".to_string()]);
        }
        other => panic!("expected NotHealthy, got {other:?}"),
    }
    assert!(err.to_string().contains("last log line: waiting"), "{err}");
}

#[tokio::test]
async fn memory_limited_container_stats_stay_within_the_limit() {
    let docker = engine_with_crasher().await;
    let name = unique("stats");
    let _cleanup = Cleanup(vec![name.clone()]);
    let mut spec = crasher_spec(&name, &["sleep", "300"]);
    spec.memory_limit_bytes = Some(64 * MIB);
    spec.cpuset = Some("0".to_string());
    spec.env.insert("TC_TEST".to_string(), "1".to_string());
    let running = docker.run(&spec).await.unwrap();
    let s = docker.stats_stream(&running.id).next().await.unwrap().unwrap();
    assert_eq!(s.mem_limit, 64 * MIB, "{s:?}");
    assert!(s.mem_usage > 0, "{s:?}");
    assert!(s.mem_usage <= s.mem_limit, "{s:?}");
    assert!(s.mem_working_set <= s.mem_usage, "{s:?}");
    assert!(s.cpu_percent >= 0.0 && s.cpu_percent <= 100.0, "{s:?}");
    let samples: Vec<_> = docker.stats_stream(&running.id).take(2).collect().await;
    assert_eq!(samples.len(), 2);
    for s in samples {
        let s = s.unwrap();
        assert!(s.mem_usage > 0 && s.mem_usage <= 64 * MIB, "{s:?}");
    }
    let state = docker.state(&running.id).await.unwrap();
    assert!(state.running);
    assert_eq!(state.exit_code, None);
    assert_eq!(state.memory_limit_bytes, Some(64 * MIB));
}

#[tokio::test]
async fn allocating_past_the_limit_is_oom_killed() {
    let docker = engine_with_crasher().await;
    let name = unique("oom");
    let _cleanup = Cleanup(vec![name.clone()]);
    // busybox dd reads /dev/zero into one 256 MiB buffer: every page gets touched.
    let mut spec =
        crasher_spec(&name, &["sh", "-c", "echo allocating; sleep 1; dd if=/dev/zero of=/dev/null bs=256M count=1"]);
    spec.memory_limit_bytes = Some(32 * MIB);
    let running = docker.run(&spec).await.unwrap();
    let err = docker.wait_healthy(&running.id, never, Duration::from_secs(60)).await.unwrap_err();
    match &err {
        DockerError::Exited { oom_killed: true, memory_limit_bytes: Some(limit), .. } => {
            assert_eq!(*limit, 32 * MIB)
        }
        other => panic!("expected an OOM kill, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("was killed by the OOM killer"), "{msg}");
    assert!(msg.contains("at its 32 MiB limit"), "{msg}");
    let state = docker.state(&running.id).await.unwrap();
    assert!(state.oom_killed, "{state:?}");
    assert!(!state.running);
    // sh is PID 1 and dd its child: either sh exits with 128+9 or dd's kill is reported.
    assert!(state.exit_code.is_some_and(|c| c != 0), "{state:?}");
    assert_eq!(docker.wait_exit(&running.id, Duration::from_secs(5)).await.unwrap(), state.exit_code);
}

#[tokio::test]
async fn leftover_of_ours_with_the_same_name_is_replaced() {
    let docker = engine_with_crasher().await;
    let name = unique("dup");
    let _cleanup = Cleanup(vec![name.clone()]);
    let spec = crasher_spec(&name, &["sleep", "300"]);
    let first = docker.run(&spec).await.unwrap();
    let second = docker.run(&spec).await.unwrap();
    assert_ne!(first.id, second.id);
    assert!(matches!(docker.state(&first.id).await, Err(DockerError::NotFound { .. })));
    assert!(docker.state(&second.id).await.unwrap().running);
}

#[tokio::test]
async fn foreign_container_with_the_same_name_is_left_alone() {
    let docker = engine_with_crasher().await;
    let name = unique("foreign");
    let _cleanup = Cleanup(vec![name.clone()]);
    // Created directly, without our label.
    let body = ContainerCreateBody {
        image: Some(CRASHER.to_string()),
        cmd: Some(vec!["sleep".to_string(), "300".to_string()]),
        ..Default::default()
    };
    docker
        .docker
        .create_container(Some(CreateContainerOptionsBuilder::default().name(&name).build()), body)
        .await
        .unwrap();
    let err = docker.run(&crasher_spec(&name, &["sleep", "300"])).await.unwrap_err();
    assert!(matches!(err, DockerError::NameTaken { .. }), "{err:?}");
    assert!(docker.state(&name).await.is_ok());
}

#[tokio::test]
async fn missing_image_is_named() {
    let docker = engine().await;
    let name = unique("noimage");
    let _cleanup = Cleanup(vec![name.clone()]);
    let spec = ContainerSpec::new(&name, "threadcycle/no-such:image", 8080);
    let err = docker.run(&spec).await.unwrap_err();
    assert!(matches!(err, DockerError::ImageMissing { .. }), "{err:?}");
    assert!(err.to_string().contains("threadcycle/no-such:image"), "{err}");
}

#[tokio::test]
async fn labelled_cleanup_leaves_no_container_behind() {
    let docker = engine_with_crasher().await;
    let cycle = unique("cycle");
    let names = vec![format!("{cycle}-a"), format!("{cycle}-b")];
    let _cleanup = Cleanup(names.clone());
    for (i, name) in names.iter().enumerate() {
        let mut spec = crasher_spec(name, &["sleep", "300"]);
        spec.labels.insert("threadcycle.cycle".to_string(), cycle.clone());
        spec.labels.insert("threadcycle.model".to_string(), format!("m{i}"));
        docker.run(&spec).await.unwrap();
    }
    // Only the model filter: removes one.
    let removed = docker.remove_labeled(&[("threadcycle.cycle", &cycle), ("threadcycle.model", "m0")]).await.unwrap();
    assert_eq!(removed, 1);
    assert_eq!(docker.remove_labeled(&[("threadcycle.cycle", &cycle)]).await.unwrap(), 1);
    assert_eq!(docker.remove_labeled(&[("threadcycle.cycle", &cycle)]).await.unwrap(), 0);
    for name in &names {
        assert!(matches!(docker.state(name).await, Err(DockerError::NotFound { .. })));
    }
    // Removing what is already gone is fine.
    docker.remove(&names[0]).await.unwrap();
}

const LLAMA_SERVER: &str = "threadcycle/llama-server:test";
const DEMO_MODEL: &str = testkit::DEMO_MODEL_FILE;

/// Connect and check the llama-server image and the demo model exist, or fail saying how.
async fn engine_with_llama_server() -> DockerRuntime {
    let docker = engine().await;
    assert!(
        docker.image_present(LLAMA_SERVER).await.unwrap(),
        "image {LLAMA_SERVER} is missing: run `scripts/build-test-images.sh llama-server` \
         (needs the llama-server binary: $LLAMA_SERVER, PATH or .venv/bin)"
    );
    testkit::demo_model();
    docker
}

/// A llama-server spec serving the demo model, mounted read-only, with extra flags.
fn llama_spec(name: &str, extra: &[&str]) -> ContainerSpec {
    let mut spec = ContainerSpec::new(name, LLAMA_SERVER, 8080);
    spec.cmd = ["--host", "0.0.0.0", "--port", "8080", "-c", "512", "-t", "2", "-m"]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("/models/{DEMO_MODEL}")])
        .chain(extra.iter().map(|s| s.to_string()))
        .collect();
    spec.binds.push(format!("{}:/models:ro", testkit::demo_model_dir().display()));
    spec.labels.insert("threadcycle.test".to_string(), "docker-rs".to_string());
    spec
}

#[tokio::test]
async fn llama_server_answers_health_and_stays_within_its_limit() {
    let docker = engine_with_llama_server().await;
    let name = unique("llama");
    let _cleanup = Cleanup(vec![name.clone()]);
    let mut spec = llama_spec(&name, &[]);
    spec.memory_limit_bytes = Some(1 << 30);
    let running = docker.run(&spec).await.unwrap();
    let url = format!("http://127.0.0.1:{}/health", running.host_port);
    let client = reqwest::Client::new();
    docker
        .wait_healthy(
            &running.id,
            async || client.get(&url).send().await.is_ok_and(|r| r.status().is_success()),
            Duration::from_secs(120),
        )
        .await
        .unwrap();
    let s = docker.stats_stream(&running.id).next().await.unwrap().unwrap();
    assert_eq!(s.mem_limit, 1 << 30, "{s:?}");
    assert!(s.mem_usage > 0 && s.mem_usage <= s.mem_limit, "{s:?}");
    let logs = docker.log_tail(&running.id, 200).await.unwrap();
    assert!(logs.iter().any(|l| l.contains("listening on")), "{logs:?}");
}

#[tokio::test]
async fn llama_server_loading_without_mmap_is_oom_killed_at_64_mib() {
    let docker = engine_with_llama_server().await;
    let name = unique("llama-oom");
    let _cleanup = Cleanup(vec![name.clone()]);
    // `--load-mode none` (this llama.cpp's `--no-mmap`) reads the weights into anonymous memory.
    let mut spec = llama_spec(&name, &["--load-mode", "none"]);
    spec.memory_limit_bytes = Some(64 * MIB);
    let err = match docker.run(&spec).await {
        Ok(r) => docker.wait_healthy(&r.id, never, Duration::from_secs(120)).await.unwrap_err(),
        Err(e) => e,
    };
    match &err {
        DockerError::Exited { exit_code: Some(137), oom_killed: true, log_tail, .. } => {
            assert!(log_tail.iter().any(|l| l.contains("loading model")), "{log_tail:?}")
        }
        other => panic!("expected an OOM kill with exit 137, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        format!("container `{name}` was killed by the OOM killer (exit 137) at its 64 MiB limit")
    );
    let state = docker.state(&name).await.unwrap();
    assert!(state.oom_killed && !state.running, "{state:?}");
}

#[test]
fn spec_maps_to_the_engine_api() {
    let mut spec = ContainerSpec::new("tc-x", "img", 11434);
    spec.memory_limit_bytes = Some(512 * MIB);
    spec.gpus = GpuRequest::Indices(vec![0, 2]);
    spec.binds.push("/models:/models:ro".to_string());
    let body = spec.to_create_body();
    let hc = body.host_config.as_ref().unwrap();
    assert_eq!(hc.memory, Some(512 * MIB as i64));
    assert_eq!(hc.memory_swap, Some(512 * MIB as i64), "no swap by default");
    let dr = &hc.device_requests.as_ref().unwrap()[0];
    assert_eq!(dr.device_ids, Some(vec!["0".to_string(), "2".to_string()]));
    assert_eq!(dr.capabilities, Some(vec![vec!["gpu".to_string()]]));
    let pb = &hc.port_bindings.as_ref().unwrap()["11434/tcp"].as_ref().unwrap()[0];
    assert_eq!(pb.host_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(pb.host_port.as_deref(), Some("0"));
    assert_eq!(body.labels.as_ref().unwrap()[MANAGED_LABEL], "true");
    spec.gpus = GpuRequest::All;
    let dr = spec.to_create_body().host_config.unwrap().device_requests.unwrap();
    assert_eq!(dr[0].count, Some(-1));
    spec.gpus = GpuRequest::None;
    assert!(spec.to_create_body().host_config.unwrap().device_requests.is_none());
}

#[test]
fn byte_counts_read_naturally() {
    assert_eq!(fmt_bytes(512 * MIB), "512 MiB");
    assert_eq!(fmt_bytes(8 << 30), "8 GiB");
    assert_eq!(fmt_bytes(1536 * MIB), "1536 MiB");
    assert_eq!(fmt_bytes(MIB + MIB / 2), "1.5 MiB");
    assert_eq!(fmt_bytes(1000), "1000 bytes");
}

#[test]
fn oom_message_names_the_limit() {
    let err = DockerError::Exited {
        container: "tc-x".to_string(),
        exit_code: Some(137),
        oom_killed: true,
        memory_limit_bytes: Some(512 * MIB),
        log_tail: vec![],
    };
    assert_eq!(err.to_string(), "container `tc-x` was killed by the OOM killer (exit 137) at its 512 MiB limit");
}

#[tokio::test]
async fn a_child_killed_at_the_limit_is_counted_while_the_container_lives() {
    let docker = engine_with_crasher().await;
    let name = unique("oom-child");
    let _cleanup = Cleanup(vec![name.clone()]);
    // sh (PID 1) survives; its dd child touches 256 MiB under a 32 MiB limit and is killed.
    let mut spec =
        crasher_spec(&name, &["sh", "-c", "dd if=/dev/zero of=/dev/null bs=256M count=1; echo child gone; sleep 300"]);
    spec.memory_limit_bytes = Some(32 * MIB);
    let running = docker.run(&spec).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let kills = loop {
        let kills = docker.oom_kills(&running.id).await.unwrap();
        if kills.is_some_and(|k| k >= 1) || std::time::Instant::now() > deadline {
            break kills;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(kills.is_some_and(|k| k >= 1), "oom_kill count {kills:?}");
    let state = docker.state(&running.id).await.unwrap();
    assert!(state.running, "PID 1 must live on: {state:?}");
    assert!(!state.oom_killed, "Docker's flag misses a child's kill: {state:?}");
}

#[tokio::test]
async fn a_pull_from_an_unreachable_registry_is_classed_and_names_the_command() {
    let docker = engine().await;
    // Port 1 on loopback: nothing listens, so the engine's dial is refused at once.
    let image = "127.0.0.1:1/threadcycle/no-such:image";
    let err = docker.pull_image(image, |_, _, _| {}).await.unwrap_err();
    match &err {
        DockerError::PullFailed { image: i, kind, .. } => {
            assert_eq!(i, image);
            assert_eq!(*kind, PullFailure::NoNetwork, "{err}");
        }
        other => panic!("expected a classed pull failure, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(&format!("`docker pull {image}`")), "{msg}");
    assert!(msg.contains("could not be reached"), "{msg}");
}

#[test]
fn pull_failures_are_classed_from_the_engines_words() {
    let c = PullFailure::classify;
    assert_eq!(
        c("manifest for ollama/ollama:9.9.9 not found: manifest unknown: manifest unknown"),
        PullFailure::NotFound
    );
    assert_eq!(
        c("Get \"https://registry-1.docker.io/v2/\": dial tcp: lookup registry-1.docker.io: no such host"),
        PullFailure::NoNetwork
    );
    assert_eq!(c("Head \"https://ghcr.io/v2/x/manifests/1\": unauthorized"), PullFailure::Auth);
    assert_eq!(c("something else"), PullFailure::Other);
}

#[test]
fn pull_progress_folds_the_layers_the_engine_reports() {
    use bollard::models::{CreateImageInfo, ProgressDetail};
    let item = |id: &str, status: &str, cur: Option<i64>, total: Option<i64>| CreateImageInfo {
        id: Some(id.to_string()),
        status: Some(status.to_string()),
        progress_detail: Some(ProgressDetail { current: cur, total }),
        ..Default::default()
    };
    // Hand-written in the shape of `POST /images/create?fromImage=ollama/ollama&tag=0.12.6` messages
    // (layer ids and sizes made up; not a recording).
    let recorded = [
        CreateImageInfo {
            status: Some("Pulling from ollama/ollama".into()),
            id: Some("0.12.6".into()),
            ..Default::default()
        },
        item("a1b2", "Already exists", None, None),
        item("c3d4", "Pulling fs layer", None, None),
        item("e5f6", "Pulling fs layer", None, None),
        item("c3d4", "Downloading", Some(1_000), Some(4_000)),
        item("e5f6", "Downloading", Some(500), Some(1_000)),
        item("e5f6", "Download complete", None, None),
        item("c3d4", "Downloading", Some(3_000), Some(4_000)),
        item("c3d4", "Pull complete", None, None),
        item("e5f6", "Extracting", Some(1_000), Some(1_000)),
    ];
    let mut fold = PullProgress::default();
    let seen: Vec<(u64, u64)> = recorded.iter().filter_map(|i| fold.fold(i)).collect();
    assert_eq!(seen, vec![(1_000, 4_000), (1_500, 5_000), (2_000, 5_000), (4_000, 5_000), (5_000, 5_000)]);
    assert_eq!(fold.totals(), (5_000, 5_000));
    let step = protocol::events::Step::ImagePulling {
        image: "ollama/ollama:0.12.6".into(),
        completed: Some(4_000_000_000),
        total: Some(5_000_000_000),
        rate_bps: Some(50e6),
    };
    assert_eq!(step.text(), "pulling image ollama/ollama:0.12.6: 4.0 GB of 5.0 GB (80%), 50.0 MB/s, 20s left");
}

#[tokio::test]
async fn a_child_killed_at_the_limit_raises_an_oom_event_while_the_container_lives() {
    let docker = engine_with_crasher().await;
    let name = unique("oom-event");
    let _cleanup = Cleanup(vec![name.clone()]);
    // Start the container idle, watch it, then have a child touch 256 MiB under a 32 MiB limit.
    let mut spec =
        crasher_spec(&name, &["sh", "-c", "sleep 2; dd if=/dev/zero of=/dev/null bs=256M count=1; sleep 300"]);
    spec.memory_limit_bytes = Some(32 * MIB);
    let running = docker.run(&spec).await.unwrap();
    let watch = docker.watch_oom(&running.id);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while watch.events().is_empty() && watch.failure().is_none() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let events = watch.events();
    assert_eq!(watch.failure(), None);
    assert!(!events.is_empty(), "no oom event within 30 s");
    assert_eq!(events[0].container, name);
    assert!(events[0].describe().contains(&name), "{}", events[0].describe());
    let state = docker.state(&running.id).await.unwrap();
    assert!(state.running && !state.oom_killed, "PID 1 lives on, Docker's flag stays false: {state:?}");
    // A watch on a container with no OOM sees none.
    let quiet = unique("no-oom");
    let _c2 = Cleanup(vec![quiet.clone()]);
    let calm = docker.run(&crasher_spec(&quiet, &["sh", "-c", "sleep 300"])).await.unwrap();
    let w2 = docker.watch_oom(&calm.id);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(w2.events().is_empty(), "{:?}", w2.events());
}

#[tokio::test]
async fn the_gpu_probe_names_a_missing_nvidia_runtime_and_an_unpullable_image_with_their_fix() {
    let docker = engine_with_crasher().await;
    // Docker registers its NVIDIA device driver when the toolkit's hook is on its PATH.
    let hook = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("nvidia-container-runtime-hook").is_file()));
    let probe = docker.probe_gpu(CRASHER).await;
    if hook {
        assert!(!matches!(probe, GpuProbe::NoRuntime(_)), "{probe:?}");
    } else {
        // The engine's own refusal, quoted, and what to install.
        assert!(matches!(probe, GpuProbe::NoRuntime(_)), "{probe:?}");
        assert!(
            probe.reason().contains(r#"could not select device driver "" with capabilities: [[gpu]]"#),
            "{probe:?}"
        );
        assert!(probe.reason().contains("no NVIDIA runtime"), "{probe:?}");
        assert!(probe.fix().contains("nvidia-ctk runtime configure --runtime=docker"), "{probe:?}");
    }
    let left = docker.list_labeled(&[("threadcycle.purpose", GPU_PROBE_PURPOSE)]).await.unwrap();
    assert!(left.is_empty(), "probe containers left behind: {left:?}");
    // An image that is neither here nor pullable: the pull is tried, and the fix is the command.
    let missing = "threadcycle/no-such-probe-image:never";
    let probe = docker.probe_gpu(missing).await;
    assert!(matches!(&probe, GpuProbe::ImageUnavailable { image, .. } if image == missing), "{probe:?}");
    assert!(probe.reason().contains("docker pull threadcycle/no-such-probe-image:never"), "{probe:?}");
    assert!(probe.fix().contains("`docker pull threadcycle/no-such-probe-image:never`"), "{probe:?}");
}
