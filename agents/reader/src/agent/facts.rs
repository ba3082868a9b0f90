//! Measuring the host: RAM and its bandwidth, the cgroup limit, disk free under the model
//! store and the downloads still needed, GPUs through NVML, the Docker engine and the engine
//! binaries, each held to the plan's thresholds as a [`Check`].

use super::allocation::allocation_check;
use super::{GIB, check, env_lookup, gib};
use crate::builtin;
use protocol::plan::{Criteria, CriterionKind, EngineKind, Plan, Runtime, expand_path};
use protocol::results::{Check, CheckStatus, HostFacts};
use std::path::{Path, PathBuf};

/// Where the plan keeps its models: the plan's `host.model_store`, else Ollama's store when the
/// plan has Ollama models, else the folder of the first local model file, else the home directory.
pub fn model_store(plan: &Plan) -> PathBuf {
    if let Some(s) = &plan.host.model_store
        && let Ok(p) = expand_path(s, &env_lookup)
    {
        return PathBuf::from(p);
    }
    if plan.models.iter().any(|m| m.engine == EngineKind::Ollama) {
        return ollama_store(plan);
    }
    plan.models
        .iter()
        .filter_map(|m| m.model_path.as_deref())
        .filter_map(|p| expand_path(p, &env_lookup).ok())
        .filter_map(|p| Path::new(&p).parent().map(Path::to_path_buf))
        .next()
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/".into())))
}

/// Measures the host. Blocking parts (NVML, statvfs, Docker) run off the async threads.
pub async fn host_facts(plan: &Plan, host_id: &str, probe_allocation: bool) -> (HostFacts, Vec<Check>) {
    let mut f = HostFacts {
        hostname: host::system::hostname(),
        host_id: host_id.into(),
        kernel: host::system::kernel(),
        cpu_model: host::system::cpu_model(),
        cpus: host::system::cpus(),
        ..Default::default()
    };
    let mut checks = Vec::new();
    ram_checks(plan, &mut f, &mut checks);
    bandwidth_check(&mut f, &mut checks).await;
    cgroup_check(&mut f, &mut checks);
    disk_checks(plan, &mut f, &mut checks).await;
    gpu_checks(plan, &mut f, &mut checks).await;
    docker_checks(plan, &mut f, probe_allocation, &mut checks).await;
    engine_checks(plan, &mut checks).await;
    (f, checks)
}

/// Pass when `value` bytes reach the plan's minimum of `min_gb` GB (none: always), with the
/// threshold as the check shows it.
fn at_least(value: u64, min_gb: Option<f64>) -> (CheckStatus, Option<String>) {
    match min_gb {
        Some(min) if (value as f64) < min * GIB => (CheckStatus::Fail, Some(format!("≥ {min} GB"))),
        Some(min) => (CheckStatus::Pass, Some(format!("≥ {min} GB"))),
        None => (CheckStatus::Pass, None),
    }
}

/// Total and available RAM against the plan's minimum.
fn ram_checks(plan: &Plan, f: &mut HostFacts, checks: &mut Vec<Check>) {
    match host::system::meminfo() {
        Ok(m) => {
            f.ram_total = m.total;
            f.ram_available = m.available;
            f.swap_total = m.swap_total;
            f.swap_free = m.swap_free;
            let (st, thr) = at_least(m.total, plan.host.min_ram_gb);
            checks.push(check("ram.total", st, gib(m.total), thr, "total RAM".into()));
            checks.push(check(
                "ram.available",
                CheckStatus::Pass,
                gib(m.available),
                None,
                format!("swap {} of {} free", gib(m.swap_free), gib(m.swap_total)),
            ));
        }
        Err(e) => checks.push(check("ram.total", CheckStatus::Fail, "unreadable".into(), None, e.to_string())),
    }
}

/// RAM bandwidth, measured by a parallel copy.
async fn bandwidth_check(f: &mut HostFacts, checks: &mut Vec<Check>) {
    // Memory bandwidth, for the decode roofline: a parallel copy over buffers far larger than
    // any CPU cache, an eighth of the available RAM at most.
    let bw_bytes = (512usize << 20).min((f.ram_available / 8) as usize);
    let threads = f.cpus.clamp(1, 16) as usize;
    match tokio::task::spawn_blocking(move || host::system::measure_ram_bandwidth(bw_bytes, threads, 4)).await {
        Ok(Some(bw)) => {
            f.ram_bandwidth_gbs = Some(bw.gbs);
            f.ram_bandwidth_source = Some(bw.describe());
            checks.push(check("ram.bandwidth", CheckStatus::Pass, format!("{:.1} GB/s", bw.gbs), None, bw.describe()));
        }
        _ => checks.push(check(
            "ram.bandwidth",
            CheckStatus::Unavailable,
            "not measured".into(),
            None,
            "the copy test did not run; the report has no CPU roofline".into(),
        )),
    }
}

/// The memory limit of the agents' own cgroup.
fn cgroup_check(f: &mut HostFacts, checks: &mut Vec<Check>) {
    f.cgroup_memory_limit = host::system::cgroup_memory_limit();
    checks.push(check(
        "cgroup.memory_limit",
        if f.cgroup_memory_limit.is_some_and(|l| l < f.ram_total) { CheckStatus::Warn } else { CheckStatus::Pass },
        f.cgroup_memory_limit.map(gib).unwrap_or_else(|| "unlimited".into()),
        None,
        "memory limit of the cgroup the agents (and a process-runtime engine) run in".into(),
    ));
}

/// Free space under the model store, and whether the downloads still needed fit in it.
async fn disk_checks(plan: &Plan, f: &mut HostFacts, checks: &mut Vec<Check>) {
    let store = model_store(plan);
    f.model_store = store.display().to_string();
    match tokio::task::spawn_blocking(move || host::system::disk_free(&store)).await {
        Ok(Ok((free, at))) => {
            f.disk_free = free;
            let (st, thr) = at_least(free, plan.host.min_disk_free_gb);
            checks.push(check(
                "disk.free",
                st,
                gib(free),
                thr,
                format!("free under {} (measured at {}{})", f.model_store, at.display(), filesystem_note(&at)),
            ));
            checks.extend(downloads_check(plan, free));
        }
        Ok(Err(e)) => checks.push(check("disk.free", CheckStatus::Fail, "unreadable".into(), None, e.to_string())),
        Err(e) => checks.push(check("disk.free", CheckStatus::Fail, "unreadable".into(), None, e.to_string())),
    }
}

/// Each GPU's free VRAM, memory bandwidth and idle temperature, or why there is no GPU.
async fn gpu_checks(plan: &Plan, f: &mut HostFacts, checks: &mut Vec<Check>) {
    let gpus = tokio::task::spawn_blocking(|| {
        let g = host::gpu::Gpus::probe();
        (g.inventory(), g.note().map(str::to_string))
    })
    .await;
    match gpus {
        Ok((Ok(mut list), note)) if !list.is_empty() => {
            let baseline = idle_temperatures().await;
            for g in &mut list {
                if let Some(t) = baseline.get(g.index as usize).filter(|t| **t > 0) {
                    g.temperature_c = Some(*t);
                }
            }
            for g in &list {
                let temp = g.temperature_c.map(|t| format!("{t} °C")).unwrap_or_else(|| "n/a".into());
                checks.push(check(
                    &format!("gpu{}.vram", g.index),
                    CheckStatus::Pass,
                    format!("{} free of {}", gib(g.vram_total.saturating_sub(g.vram_used)), gib(g.vram_total)),
                    None,
                    format!("{} (driver {})", g.name, g.driver),
                ));
                checks.push(check(
                    &format!("gpu{}.bandwidth", g.index),
                    if g.memory_bandwidth_gbs.is_some() { CheckStatus::Pass } else { CheckStatus::Unavailable },
                    g.memory_bandwidth_gbs.map(|b| format!("{b:.0} GB/s")).unwrap_or_else(|| "unknown".into()),
                    None,
                    "peak memory bandwidth from NVML (bus width × maximum memory clock × 2), for the decode roofline"
                        .into(),
                ));
                // The same rule as the report's criteria table (`Criteria::judge`).
                let kind = CriterionKind::IdleTemperature;
                let thr = plan.criteria.limit(kind).map(|max| format!("{} {max} °C", Criteria::rule(kind).symbol()));
                let st = match (
                    plan.criteria.judge(kind, g.temperature_c.map(f64::from).unwrap_or(f64::NAN)),
                    g.temperature_c,
                ) {
                    (None, _) => CheckStatus::Pass,
                    (Some(_), None) => CheckStatus::Unavailable,
                    (Some(true), Some(_)) => CheckStatus::Pass,
                    (Some(false), Some(_)) => CheckStatus::Fail,
                };
                checks.push(check(
                    &format!("gpu{}.idle_temperature", g.index),
                    st,
                    temp,
                    thr,
                    "idle temperature before the cycle: the hottest of 3 readings 1 s apart".into(),
                ));
            }
            f.gpus = list;
            f.gpu_note = note;
        }
        Ok((Ok(_), note)) => {
            let note = note.unwrap_or_else(|| "no NVIDIA GPU (NVML found no device)".into());
            checks.push(check("gpu", CheckStatus::Unavailable, note.clone(), None, "models run on the CPU".into()));
            f.gpu_note = Some(note);
        }
        Ok((Err(e), _)) => {
            let note = format!("NVML error: {e}");
            checks.push(check(
                "gpu",
                CheckStatus::Fail,
                note.clone(),
                None,
                "NVML loaded but could not list GPUs".into(),
            ));
            f.gpu_note = Some(note);
        }
        Err(e) => f.gpu_note = Some(format!("GPU probe failed: {e}")),
    }
}

/// Each GPU's idle temperature by index, °C (0: no reading): the hottest of three readings a
/// second apart, not one glance.
async fn idle_temperatures() -> Vec<u32> {
    tokio::task::spawn_blocking(|| {
        let g = host::gpu::Gpus::probe();
        let mut hottest: Vec<u32> = Vec::new();
        for i in 0..3 {
            if i > 0 {
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
            for s in g.sample().unwrap_or_default() {
                let idx = s.index as usize;
                if hottest.len() <= idx {
                    hottest.resize(idx + 1, 0);
                }
                hottest[idx] = hottest[idx].max(s.temp_c.unwrap_or(0));
            }
        }
        hottest
    })
    .await
    .unwrap_or_default()
}

/// The Docker engine, its GPU runtime, the allocation test and the images the plan runs.
async fn docker_checks(plan: &Plan, f: &mut HostFacts, probe_allocation: bool, checks: &mut Vec<Check>) {
    let wants_docker = plan.models.iter().any(|m| m.runtime == Runtime::Docker);
    let engine = match host::docker::DockerRuntime::connect().await {
        Ok(d) => d.engine_info().await.map(|info| (d, info)).map_err(|e| (e, "error")),
        Err(e) => Err((e, "not reachable")),
    };
    match engine {
        Ok((d, info)) => {
            f.docker_version = Some(info.version.clone());
            f.docker_runtimes = info.runtimes.clone();
            let wants_gpu = plan.models.iter().any(|m| {
                m.runtime == Runtime::Docker && m.gpus.as_ref().is_some_and(|g| *g != protocol::plan::GpuRequest::None)
            });
            checks.push(check(
                "docker.engine",
                CheckStatus::Pass,
                format!("Docker {} (API {})", info.version, info.api_version),
                None,
                format!("runtimes: {}", info.runtimes.join(", ")),
            ));
            if wants_gpu {
                checks.push(gpu_in_container_check(&d, plan, !f.gpus.is_empty()).await);
            }
            if let Some(gb) = plan.host.allocatable_gb.filter(|_| probe_allocation) {
                checks.push(allocation_check(&d, plan, gb).await);
            }
            for m in plan.models.iter().filter(|m| m.runtime == Runtime::Docker) {
                if let Some(img) = &m.image {
                    let present = d.image_present(img).await.unwrap_or(false);
                    checks.push(check(
                        &format!("image.{}", m.name),
                        if present { CheckStatus::Pass } else { CheckStatus::Warn },
                        if present { format!("{img} present") } else { format!("{img} not present locally") },
                        None,
                        if present {
                            "image found in the local store".into()
                        } else {
                            "it will be pulled at deployment (needs a registry)".into()
                        },
                    ));
                }
            }
        }
        Err((e, measured)) => {
            f.docker_note = Some(e.to_string());
            checks.push(check(
                "docker.engine",
                if wants_docker { CheckStatus::Fail } else { CheckStatus::Unavailable },
                measured.into(),
                None,
                e.to_string(),
            ));
        }
    }
}

/// The seed's `docker run --rm --gpus all <cuda image> nvidia-smi`: what a container that asks
/// for every GPU sees, or why it sees none with the fix. With no GPU on the host (NVML lists
/// none) a failure is `unavailable`, not `fail`: there was nothing to give the container.
async fn gpu_in_container_check(d: &host::docker::DockerRuntime, plan: &Plan, host_has_gpu: bool) -> Check {
    let image = plan.host.gpu_check_image();
    let probe = d.probe_gpu(image).await;
    gpu_probe_check(&probe, image, host_has_gpu)
}

/// The check a GPU probe's outcome makes (see [`gpu_in_container_check`]).
pub fn gpu_probe_check(probe: &host::docker::GpuProbe, image: &str, host_has_gpu: bool) -> Check {
    use host::docker::GpuProbe;
    let threshold = Some("a container that requests every GPU sees it".to_string());
    let name = "docker.gpu";
    match probe {
        GpuProbe::Seen(gpus) => {
            let seen: Vec<String> = gpus
                .iter()
                .map(|g| format!("{} (driver {}, {:.1} GB)", g.name, g.driver, g.memory_mib as f64 * 1_048_576.0 / GIB))
                .collect();
            check(
                name,
                CheckStatus::Pass,
                seen.join("; "),
                threshold,
                format!(
                    "`nvidia-smi --query-gpu=name,driver_version,memory.total` in {image} with every GPU requested"
                ),
            )
        }
        // The image could not be had: the check did not run, which proves nothing either way.
        GpuProbe::ImageUnavailable { .. } => check(
            name,
            CheckStatus::Warn,
            "not tested".into(),
            threshold,
            format!("{}; fix: {}", probe.reason(), probe.fix()),
        ),
        _ if !host_has_gpu => check(
            name,
            CheckStatus::Unavailable,
            probe.reason(),
            threshold,
            format!(
                "NVML lists no GPU on this host, so there was none to give the container; for a GPU host: {}",
                probe.fix()
            ),
        ),
        _ => check(name, CheckStatus::Fail, probe.reason(), threshold, format!("fix: {}", probe.fix())),
    }
}

/// The engine binary of each host-process model (`llama-server` or `ollama`).
async fn engine_checks(plan: &Plan, checks: &mut Vec<Check>) {
    for m in plan.models.iter().filter(|m| m.runtime == Runtime::Process) {
        if m.engine == protocol::plan::EngineKind::Ollama {
            // `ollama serve` as a host process: its version is asked over HTTP once it runs.
            checks.push(match host::process::find_ollama(m.binary.as_deref()) {
                Ok(bin) => check(
                    &format!("engine.{}", m.name),
                    CheckStatus::Pass,
                    "found".into(),
                    None,
                    format!("ollama at {}", bin.display()),
                ),
                Err(e) => {
                    check(&format!("engine.{}", m.name), CheckStatus::Fail, "not found".into(), None, e.to_string())
                }
            });
            continue;
        }
        match host::process::find_llama_server(m.binary.as_deref()) {
            Ok(bin) => {
                let version = tokio::task::spawn_blocking({
                    let bin = bin.clone();
                    move || host::process::llama_server_version(&bin)
                })
                .await
                .ok()
                .flatten();
                checks.push(check(
                    &format!("engine.{}", m.name),
                    CheckStatus::Pass,
                    version.unwrap_or_else(|| "version unknown".into()),
                    None,
                    format!("llama-server at {}", bin.display()),
                ));
            }
            Err(e) => checks.push(check(
                &format!("engine.{}", m.name),
                CheckStatus::Fail,
                "not found".into(),
                None,
                e.to_string(),
            )),
        }
    }
}

/// The Ollama model store the plan's Ollama models come from: the plan's `host.model_store`,
/// else Ollama's own default (`$OLLAMA_MODELS`, `~/.ollama/models`, the Linux service's store).
pub fn ollama_store(plan: &Plan) -> PathBuf {
    plan.host
        .model_store
        .as_deref()
        .and_then(|s| expand_path(s, &env_lookup).ok())
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::store::default_store(&env_lookup))
}

/// What the plan still has to download into the store, by model: `(name, Some(bytes))` for a
/// model not stored yet whose size is known (built-in figures), `(name, None)` when unknown.
/// Models already in the store, and local GGUF files, need nothing.
pub(super) fn downloads_needed(plan: &Plan) -> Vec<(String, Option<u64>)> {
    let store = ollama_store(plan);
    let mut seen = std::collections::BTreeSet::new();
    let concurrent = plan.concurrent.iter().flat_map(|c| c.models.iter());
    plan.models
        .iter()
        .chain(concurrent)
        .filter(|m| m.engine == EngineKind::Ollama && m.runtime != Runtime::Endpoint)
        .filter_map(|m| m.tag.as_deref())
        .filter(|tag| seen.insert(tag.to_string()))
        .filter(|tag| !matches!(crate::store::find(&store, tag), Ok(Some(_))))
        .map(|tag| (tag.to_string(), builtin::lookup(tag).map(|meta| meta.weights_bytes)))
        .collect()
}

/// `, on zfs tank/models` — the file system (and for ZFS the dataset) holding `path`.
fn filesystem_note(path: &Path) -> String {
    match host::system::filesystem_of(path) {
        Some(fs) => format!(", on {} {} mounted at {}", fs.fstype, fs.source, fs.mount_point.display()),
        None => String::new(),
    }
}

/// The store's free space against the downloads still needed.
pub(super) fn downloads_check(plan: &Plan, free: u64) -> Option<Check> {
    let needed = downloads_needed(plan);
    if needed.is_empty() {
        return None;
    }
    let known: u64 = needed.iter().filter_map(|(_, b)| *b).sum();
    let unknown: Vec<&str> = needed.iter().filter(|(_, b)| b.is_none()).map(|(n, _)| n.as_str()).collect();
    let names = needed.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ");
    let status = if known > free {
        CheckStatus::Fail
    } else if unknown.is_empty() {
        CheckStatus::Pass
    } else {
        CheckStatus::Warn
    };
    let mut detail = format!("not in the store yet: {names}; {} free", gib(free));
    if !unknown.is_empty() {
        detail.push_str(&format!("; size unknown before the pull: {}", unknown.join(", ")));
    }
    Some(check(
        "disk.downloads",
        status,
        format!("{} to download", gib(known)),
        Some(format!("≤ {} free", gib(free))),
        detail,
    ))
}
