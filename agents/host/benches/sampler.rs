//! What the telemetry sampler costs: wall time per sample and the share of one core it uses, at
//! 1 Hz and 10 Hz, for a host-process target and a container target (Docker stats stream).
//!
//! ```text
//! cargo bench -p threadcycle-host --bench sampler            # 10 s per case
//! SAMPLER_BENCH_SECS=30 cargo bench -p threadcycle-host --bench sampler
//! ```
//!
//! The container case needs a Docker engine (`scripts/start-dockerd.sh`) and the local image
//! `threadcycle/crasher:test` (`scripts/build-test-images.sh crasher`); without them it says so
//! and measures the process case only. The GPU path is whatever `Gpus::probe()` finds here.

use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, Instant};

use host::docker::{ContainerSpec, DockerRuntime};
use host::gpu::Gpus;
use host::system;
use host::telemetry::{EngineTarget, Sampler};
use nix::sys::resource::{UsageWho, getrusage};

/// The image the container case runs `sleep` in.
const IMAGE: &str = "threadcycle/crasher:test";

/// CPU time (user + system) of this process so far, s.
fn cpu_time_s() -> Result<f64, Box<dyn Error>> {
    let u = getrusage(UsageWho::RUSAGE_SELF)?;
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Ok(secs(u.user_time()) + secs(u.system_time()))
}

/// CPU ticks of the Docker daemon (to see what the stats stream costs it), if it can be found.
fn dockerd_ticks() -> Option<u64> {
    let pid = std::fs::read_to_string("/var/run/docker.pid").ok()?;
    system::process_cpu_ticks(pid.trim().parse().ok()?)
}

/// One measured case.
struct Row {
    case: String,
    hz: f64,
    samples: u64,
    mean_ms: f64,
    max_ms: f64,
    core_pct: f64,
    dockerd_pct: Option<f64>,
}

/// Samples `target` at `hz` for `secs` seconds and measures what it cost.
async fn measure(case: &str, target: EngineTarget, hz: f64, secs: f64, gpus: Arc<Gpus>) -> Result<Row, Box<dyn Error>> {
    let (cpu0, wall0, d0) = (cpu_time_s()?, Instant::now(), dockerd_ticks());
    let sampler = Sampler::start(target, hz, gpus);
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let cost = sampler.cost();
    let (summary, _csv) = sampler.finish(0).await;
    let wall = wall0.elapsed().as_secs_f64();
    let cpu = cpu_time_s()? - cpu0;
    // Ticks are 1/100 s (CLK_TCK on Linux): ticks / wall = % of one core.
    let dockerd_pct = d0.zip(dockerd_ticks()).map(|(a, b)| (b - a) as f64 / wall);
    if !summary.notes.is_empty() {
        println!("  notes ({case} @ {hz} Hz): {}", summary.notes.join("; "));
    }
    Ok(Row {
        case: case.to_string(),
        hz,
        samples: cost.ticks,
        mean_ms: cost.mean_ms,
        max_ms: cost.max_ms,
        core_pct: cpu / wall * 100.0,
        dockerd_pct,
    })
}

/// Starts a 64 MiB container that sleeps, or says why the container case is skipped.
async fn start_container() -> Result<(DockerRuntime, String), String> {
    let docker = DockerRuntime::connect().await.map_err(|e| format!("{e} (run scripts/start-dockerd.sh)"))?;
    if !docker.image_present(IMAGE).await.unwrap_or(false) {
        return Err(format!("image {IMAGE} missing (run scripts/build-test-images.sh crasher)"));
    }
    let mut spec = ContainerSpec::new(format!("tc-bench-sampler-{}", std::process::id()), IMAGE, 8080);
    spec.cmd = vec!["sh".into(), "-c".into(), "sleep 3600; true".into()];
    spec.memory_limit_bytes = Some(64 << 20);
    spec.labels.insert("threadcycle.test".into(), "sampler-bench".into());
    let running = docker.run(&spec).await.map_err(|e| e.to_string())?;
    Ok((docker, running.id))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let secs: f64 = std::env::var("SAMPLER_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(10.0);
    let gpus = Arc::new(Gpus::probe());
    println!(
        "telemetry sampler cost: {} CPUs ({}), GPU: {}, {secs} s per case",
        system::cpus(),
        system::cpu_model(),
        gpus.note().unwrap_or("NVML present")
    );
    let mut rows = Vec::new();
    let me = std::process::id();
    for hz in [1.0, 10.0] {
        rows.push(measure("process + host", EngineTarget::Process { pid: me }, hz, secs, gpus.clone()).await?);
    }
    match start_container().await {
        Ok((docker, id)) => {
            for hz in [1.0, 10.0] {
                let target = EngineTarget::Container { docker: docker.clone(), id: id.clone() };
                rows.push(measure("container + host", target, hz, secs, gpus.clone()).await?);
            }
            docker.remove(&id).await?;
        }
        Err(why) => println!("  container case skipped: {why}"),
    }
    println!();
    println!(
        "| target | rate | samples | time per sample (mean / max) | share of one core (sampler process) | dockerd, % of one core |"
    );
    println!("|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} Hz | {} | {:.3} ms / {:.3} ms | {:.3} % | {} |",
            r.case,
            r.hz,
            r.samples,
            r.mean_ms,
            r.max_ms,
            r.core_pct,
            r.dockerd_pct.map_or("n/a".to_string(), |p| format!("{p:.1} %")),
        );
    }
    Ok(())
}
