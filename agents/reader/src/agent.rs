//! The Reader's phase: measure the host, hold each figure to the plan's threshold, predict every
//! model's fit, and hand the verification report to the Writer.

use crate::fit::{FitInputs, HostCapacity, KvType, verdict};
use crate::profile::HostProfile;
use crate::{builtin, gguf};
use handoffs::{Bus, BusError, ConsumeStats, HandleError, Handled, Handler, consume};
use protocol::events::{Event, EventBody, Phase};
use protocol::ids::derive_id;
use protocol::messages::{CyclePlan, VerificationReport};
use protocol::operator::CycleRecord;
use protocol::plan::{EngineKind, ModelSpec, Plan, Runtime, expand_path};
use protocol::results::{Check, CheckStatus, Fit, FitVerdict, HostFacts};
use protocol::{CycleId, Envelope, Payload, Role};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use uuid::Uuid;

/// Runs the Reader until `shutdown` turns true.
pub async fn run(bus: Bus, shutdown: watch::Receiver<bool>, stats: Arc<ConsumeStats>) -> Result<(), BusError> {
    run_with_profile(bus, None, shutdown, stats).await
}

/// Runs the Reader with fit predicted for a host profile instead of the measured capacity
/// (`threadcycle agent reader --host-profile hosts/….toml`); the host is still measured and
/// checked.
pub async fn run_with_profile(
    bus: Bus,
    profile: Option<HostProfile>,
    shutdown: watch::Receiver<bool>,
    stats: Arc<ConsumeStats>,
) -> Result<(), BusError> {
    let reader = Reader { bus: bus.clone(), profile };
    consume(&bus, shutdown, stats, &reader).await
}

struct Reader {
    bus: Bus,
    profile: Option<HostProfile>,
}

const GIB: f64 = (1u64 << 30) as f64;

fn gib(b: u64) -> String {
    format!("{:.1} GB", b as f64 / GIB)
}

fn check(name: &str, status: CheckStatus, measured: String, threshold: Option<String>, detail: String) -> Check {
    Check { name: name.into(), status, measured, threshold, detail }
}

fn env_lookup(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

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
    let mut checks = Vec::new();
    let mut f = HostFacts {
        hostname: host::system::hostname(),
        host_id: host_id.into(),
        kernel: host::system::kernel(),
        cpu_model: host::system::cpu_model(),
        cpus: host::system::cpus(),
        ..Default::default()
    };
    match host::system::meminfo() {
        Ok(m) => {
            f.ram_total = m.total;
            f.ram_available = m.available;
            f.swap_total = m.swap_total;
            f.swap_free = m.swap_free;
            let (st, thr) = match plan.host.min_ram_gb {
                Some(min) if (m.total as f64) < min * GIB => (CheckStatus::Fail, Some(format!("≥ {min} GB"))),
                Some(min) => (CheckStatus::Pass, Some(format!("≥ {min} GB"))),
                None => (CheckStatus::Pass, None),
            };
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
    f.cgroup_memory_limit = host::system::cgroup_memory_limit();
    checks.push(check(
        "cgroup.memory_limit",
        if f.cgroup_memory_limit.is_some_and(|l| l < f.ram_total) { CheckStatus::Warn } else { CheckStatus::Pass },
        f.cgroup_memory_limit.map(gib).unwrap_or_else(|| "unlimited".into()),
        None,
        "memory limit of the cgroup the agents (and a process-runtime engine) run in".into(),
    ));
    let store = model_store(plan);
    f.model_store = store.display().to_string();
    match tokio::task::spawn_blocking(move || host::system::disk_free(&store)).await {
        Ok(Ok((free, at))) => {
            f.disk_free = free;
            let (st, thr) = match plan.host.min_disk_free_gb {
                Some(min) if (free as f64) < min * GIB => (CheckStatus::Fail, Some(format!("≥ {min} GB"))),
                Some(min) => (CheckStatus::Pass, Some(format!("≥ {min} GB"))),
                None => (CheckStatus::Pass, None),
            };
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
    let gpus = tokio::task::spawn_blocking(|| {
        let g = host::gpu::Gpus::probe();
        (g.inventory(), g.note().map(str::to_string))
    })
    .await;
    match gpus {
        Ok((Ok(mut list), note)) if !list.is_empty() => {
            // An idle baseline is the hottest of a few readings a second apart, not one glance.
            let baseline = tokio::task::spawn_blocking(|| {
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
            .unwrap_or_default();
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
                let (st, thr) = match (plan.criteria.max_idle_temp_c, g.temperature_c) {
                    (Some(max), Some(t)) if f64::from(t) >= max => (CheckStatus::Fail, Some(format!("< {max} °C"))),
                    (Some(max), Some(_)) => (CheckStatus::Pass, Some(format!("< {max} °C"))),
                    (Some(max), None) => (CheckStatus::Unavailable, Some(format!("< {max} °C"))),
                    (None, _) => (CheckStatus::Pass, None),
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
    let wants_docker = plan.models.iter().any(|m| m.runtime == Runtime::Docker);
    match host::docker::DockerRuntime::connect().await {
        Ok(d) => match d.engine_info().await {
            Ok(info) => {
                f.docker_version = Some(info.version.clone());
                f.docker_runtimes = info.runtimes.clone();
                let wants_gpu = plan.models.iter().any(|m| {
                    m.runtime == Runtime::Docker
                        && m.gpus.as_ref().is_some_and(|g| *g != protocol::plan::GpuRequest::None)
                });
                let nvidia = info.runtimes.iter().any(|r| r == "nvidia");
                checks.push(check(
                    "docker.engine",
                    CheckStatus::Pass,
                    format!("Docker {} (API {})", info.version, info.api_version),
                    None,
                    format!("runtimes: {}", info.runtimes.join(", ")),
                ));
                if wants_gpu {
                    checks.push(check(
                        "docker.gpu_runtime",
                        if nvidia { CheckStatus::Pass } else { CheckStatus::Warn },
                        if nvidia { "nvidia runtime configured".into() } else { "no nvidia runtime".into() },
                        Some("nvidia runtime for GPU containers".into()),
                        "install nvidia-container-toolkit and run `nvidia-ctk runtime configure --runtime=docker`"
                            .into(),
                    ));
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
            Err(e) => {
                f.docker_note = Some(e.to_string());
                checks.push(check(
                    "docker.engine",
                    if wants_docker { CheckStatus::Fail } else { CheckStatus::Unavailable },
                    "error".into(),
                    None,
                    e.to_string(),
                ));
            }
        },
        Err(e) => {
            f.docker_note = Some(e.to_string());
            checks.push(check(
                "docker.engine",
                if wants_docker { CheckStatus::Fail } else { CheckStatus::Unavailable },
                "not reachable".into(),
                None,
                e.to_string(),
            ));
        }
    }
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
    (f, checks)
}

/// Whether a container under the plan's largest memory limit can really allocate `gb`: a
/// short-lived container has `dd` read that much from /dev/zero into one buffer with
/// `iflag=fullblock` (one `read()` returns at most about 2 GiB on Linux, so without it a 25 GB
/// block is only 2 GiB touched), then prints its cgroup's peak memory. The check passes only when
/// dd reports the whole block read and the cgroup's peak is at least the amount.
async fn allocation_check(d: &host::docker::DockerRuntime, plan: &Plan, gb: f64) -> Check {
    let image = plan.host.allocation_image.clone().unwrap_or_else(|| "busybox:latest".into());
    let threshold = Some(format!("{gb} GB allocatable"));
    if !d.image_present(&image).await.unwrap_or(false) {
        return check(
            "memory.allocatable",
            CheckStatus::Unavailable,
            "not tested".into(),
            threshold,
            format!(
                "the allocation test needs an image with `sh`, `dd` and `cat` present locally ({image}); set host.allocation_image"
            ),
        );
    }
    let planned = plan
        .models
        .iter()
        .filter(|m| m.runtime == Runtime::Docker)
        .filter_map(|m| m.memory_limit_gb)
        .fold(0.0_f64, f64::max);
    // The planned limit is what must hold the test amount; with no planned limit, a little over it.
    let limit_gb = if planned > 0.0 { planned } else { gb + 0.25 };
    let mib = (gb * 1024.0).round() as u64;
    let mut spec = host::docker::ContainerSpec::new(format!("tc-alloc-{}", std::process::id()), &image, 9);
    spec.cmd = vec!["sh".into(), "-c".into(), allocation_script(mib)];
    spec.memory_limit_bytes = Some((limit_gb * GIB) as u64);
    spec.labels.insert("threadcycle.purpose".into(), "allocation-test".into());
    let ran = match d.run(&spec).await {
        Ok(c) => {
            let code = d.wait_exit(&c.id, Duration::from_secs(600)).await;
            let oom = d.state(&c.id).await.map(|s| s.oom_killed).unwrap_or(false);
            let log = d.log_tail(&c.id, 20).await.unwrap_or_default();
            let _ = d.remove(&c.id).await;
            code.map(|code| (code, oom, log)).map_err(|e| e.to_string())
        }
        // It finished before it could be inspected: the error carries its exit and its log.
        Err(host::docker::DockerError::Exited { exit_code, oom_killed, log_tail, .. }) => {
            let _ = d.remove_labeled(&[("threadcycle.purpose", "allocation-test")]).await;
            Ok((exit_code, oom_killed, log_tail))
        }
        Err(e) => {
            let _ = d.remove_labeled(&[("threadcycle.purpose", "allocation-test")]).await;
            Err(e.to_string())
        }
    };
    match ran.and_then(|(code, oom, log)| allocation_outcome(code, oom, &log, mib)) {
        Ok(peak) => check(
            "memory.allocatable",
            CheckStatus::Pass,
            format!("{gb} GB allocated in a container limited to {limit_gb} GB"),
            threshold,
            format!(
                "dd read one {mib} MiB block in full in {image}; the container's cgroup peaked at {:.2} GiB",
                peak as f64 / GIB
            ),
        ),
        Err(why) => check(
            "memory.allocatable",
            CheckStatus::Fail,
            format!("could not allocate {gb} GB under a {limit_gb} GB limit"),
            threshold,
            why,
        ),
    }
}

/// The allocation container's command: fill one `mib` MiB buffer, then print the cgroup's peak
/// (cgroup v2 `memory.peak`, else v1 `memory.max_usage_in_bytes`) after a marker.
fn allocation_script(mib: u64) -> String {
    format!(
        "dd if=/dev/zero of=/dev/null bs={mib}M count=1 iflag=fullblock 2>&1 && \
         echo \"{ALLOC_PEAK} $(cat /sys/fs/cgroup/memory.peak 2>/dev/null || cat /sys/fs/cgroup/memory/memory.max_usage_in_bytes 2>/dev/null)\""
    )
}

/// The marker before the peak in the allocation container's output.
const ALLOC_PEAK: &str = "tc-alloc-peak";

/// Judges the allocation container from its exit, OOM flag and output: the cgroup's peak in bytes
/// when dd read its whole block and the peak covers it, else why not.
fn allocation_outcome(code: Option<i64>, oom: bool, log: &[String], mib: u64) -> Result<u64, String> {
    let tail = || log.iter().rev().take(3).rev().cloned().collect::<Vec<_>>().join(" | ");
    if oom || code == Some(137) {
        return Err(format!(
            "the container was killed by the OOM killer (exit {code:?}) before {mib} MiB were touched"
        ));
    }
    if code != Some(0) {
        return Err(format!("the container exited ({code:?}): {}", tail()));
    }
    // dd counts full and partial blocks as `full+partial records in`.
    let full = log.iter().any(|l| l.trim() == "1+0 records in");
    if !full {
        return Err(format!("dd did not read its {mib} MiB block in full: {}", tail()));
    }
    let peak = log
        .iter()
        .find_map(|l| l.trim().strip_prefix(ALLOC_PEAK))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or_else(|| format!("the container did not report its cgroup's peak memory: {}", tail()))?;
    if peak < mib << 20 {
        return Err(format!(
            "the container's cgroup peaked at {peak} bytes, under the {} bytes dd should have touched",
            mib << 20
        ));
    }
    Ok(peak)
}

/// Predicts every model's fit on the measured host.
pub fn verdicts(plan: &Plan, facts: &HostFacts) -> (Vec<FitVerdict>, Vec<Check>) {
    plan_verdicts(plan, &measured_capacity(facts))
}

/// What the measured host offers an engine.
pub fn measured_capacity(facts: &HostFacts) -> HostCapacity {
    HostCapacity {
        gpus_free_vram: facts.gpus.iter().map(|g| g.vram_total.saturating_sub(g.vram_used)).collect(),
        ram_available: facts.ram_available,
        container_limit: facts.cgroup_memory_limit,
    }
}

/// Whether the plan's concurrent-phase models fit on a host with `base` capacity all at once:
/// each must fit alone, and their predicted RAM and VRAM added up must fit too. None when the
/// plan has no concurrent phase.
pub fn concurrent_fit(plan: &Plan, base: &HostCapacity) -> Option<FitVerdict> {
    let phase = plan.concurrent.as_ref()?;
    let alone = Plan { models: phase.models.clone(), ..plan.clone() };
    let (vs, _) = plan_verdicts(&alone, base);
    let names: Vec<&str> = phase.models.iter().map(|m| m.name.as_str()).collect();
    let sum = |f: fn(&FitVerdict) -> Option<u64>| vs.iter().filter_map(f).fold(0u64, u64::saturating_add);
    let (ram, vram) = (sum(|v| v.ram_bytes), sum(|v| v.vram_bytes));
    let ram_cap = base.ram_limit();
    let vram_cap = base.gpus_free_vram.iter().copied().fold(0u64, u64::saturating_add);
    let need = format!(
        "together they need {} of RAM and {} of VRAM; {} of RAM and {} of VRAM are free",
        gib(ram),
        gib(vram),
        gib(ram_cap),
        gib(vram_cap)
    );
    let (fit, reason) = if let Some(v) = vs.iter().find(|v| v.fit == Fit::NoGo) {
        (Fit::NoGo, format!("{} does not fit even alone: {}", v.model, v.reason))
    } else if ram > ram_cap || vram > vram_cap {
        (Fit::NoGo, need)
    } else if vs.iter().any(|v| v.fit == Fit::Unknown) {
        (Fit::Unknown, format!("{need}; not every model's need is known"))
    } else if vs.iter().any(|v| v.fit == Fit::GoPartialOffload) {
        (Fit::GoPartialOffload, format!("{need}; some layers stay on the CPU"))
    } else {
        (Fit::Go, need)
    };
    Some(FitVerdict {
        model: names.join(" + "),
        fit,
        source: "sum of the models' predictions".into(),
        weights_bytes: None,
        kv_bytes: None,
        vram_bytes: Some(vram),
        ram_bytes: Some(ram),
        gpu_layers: None,
        reason,
        suggestion: None,
    })
}

/// Predicts every model's fit on a host with `base` capacity (measured, or a host profile);
/// a Docker model's own memory limit replaces the base container limit.
pub fn plan_verdicts(plan: &Plan, base: &HostCapacity) -> (Vec<FitVerdict>, Vec<Check>) {
    let mut checks = Vec::new();
    let mut out = Vec::new();
    for m in &plan.models {
        let (v, file_checks) = model_verdict(plan, m, base);
        checks.extend(file_checks);
        out.push(v);
    }
    (out, checks)
}

/// The recalled figures for an Ollama tag that is not in the store yet.
fn builtin_meta(tag: &str) -> Result<gguf::ModelMeta, String> {
    builtin::lookup(tag).ok_or_else(|| {
        format!("no metadata for `{tag}` yet: not in the Ollama store nor the built-in table; it is read from /api/show after the pull")
    })
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
fn downloads_needed(plan: &Plan) -> Vec<(String, Option<u64>)> {
    let store = ollama_store(plan);
    let mut seen = std::collections::BTreeSet::new();
    let concurrent = plan.concurrent.iter().flat_map(|c| c.models.iter());
    plan.models
        .iter()
        .chain(concurrent)
        .filter(|m| m.engine == EngineKind::Ollama)
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
fn downloads_check(plan: &Plan, free: u64) -> Option<Check> {
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

/// A warning when the GGUF has no chat template: the engine then formats the prompt in a way the
/// model was not trained on.
fn template_check(model: &str, meta: &gguf::ModelMeta) -> Option<Check> {
    (meta.chat_template == Some(false)).then(|| {
        check(
            &protocol::results::chat_template_check(model),
            CheckStatus::Warn,
            "no chat template".into(),
            None,
            "the GGUF has no `tokenizer.chat_template`: llama-server falls back to ChatML, which a model not trained on it (a base model) reads as plain text, so its answers may echo the prompt and run to the token cap; their quality is not assessed".into(),
        )
    })
}

/// A model file's header was read: what it is, and where it was read.
fn header_check(model: &str, meta: &gguf::ModelMeta, from: String) -> Check {
    let what = format!("{} {} ({} layers)", meta.architecture, meta.quantization, meta.block_count);
    check(&format!("model.{model}"), CheckStatus::Pass, what, None, from)
}

fn model_verdict(plan: &Plan, m: &ModelSpec, base: &HostCapacity) -> (FitVerdict, Vec<Check>) {
    let mut file_checks = Vec::new();
    let meta = match (m.engine, &m.model_path, &m.tag) {
        (EngineKind::LlamaServer, Some(raw), _) => match expand_path(raw, &env_lookup) {
            Ok(p) => match gguf::read_metadata(Path::new(&p)) {
                Ok(meta) => {
                    file_checks.push(header_check(&m.name, &meta, format!("GGUF header read from {p}")));
                    file_checks.extend(template_check(&m.name, &meta));
                    Ok(meta)
                }
                Err(e) => {
                    file_checks.push(check(
                        &format!("model.{}", m.name),
                        CheckStatus::Fail,
                        "unreadable".into(),
                        None,
                        format!("{p}: {e}"),
                    ));
                    Err(format!("cannot read the model file: {e}"))
                }
            },
            Err(e) => Err(format!("model_path: {e}")),
        },
        (EngineKind::Ollama, _, Some(tag)) => {
            // Already pulled: the GGUF header itself, not recalled figures.
            let stored = match crate::store::find(&ollama_store(plan), tag) {
                Ok(Some(crate::store::Stored { model_blob: Some(blob), .. })) => match gguf::read_metadata(&blob) {
                    Ok(meta) => Ok(Some((blob, meta))),
                    Err(e) => Err(format!("{}: {e}", blob.display())),
                },
                Ok(_) => Ok(None),
                Err(e) => Err(e),
            };
            match stored {
                Ok(Some((blob, meta))) => {
                    let from = format!("GGUF header of `{tag}` read from the Ollama store ({})", blob.display());
                    file_checks.push(header_check(&m.name, &meta, from));
                    Ok(meta)
                }
                Ok(None) => builtin_meta(tag),
                Err(why) => {
                    let detail = format!("{why}; using the built-in figures");
                    let name = format!("model.{}", m.name);
                    file_checks.push(check(&name, CheckStatus::Warn, "unreadable in the store".into(), None, detail));
                    builtin_meta(tag)
                }
            }
        }
        (_, _, Some(tag)) => builtin_meta(tag),
        _ => Err("the plan gives neither a model file nor a tag".into()),
    };
    let v = match meta {
        Ok(meta) => {
            let host = HostCapacity {
                container_limit: match (m.runtime, m.memory_limit_gb) {
                    (Runtime::Docker, Some(g)) => Some((g * GIB) as u64),
                    _ => base.container_limit,
                },
                ..base.clone()
            };
            let kv_type = m.env.get("OLLAMA_KV_CACHE_TYPE").and_then(|t| KvType::parse(t)).unwrap_or(KvType::F16);
            let inputs = FitInputs {
                context: plan.context_for(m),
                parallel: plan.defaults.parallel,
                kv_type,
                gpu_layers_override: m.gpu_layers,
                ..FitInputs::default()
            };
            verdict(&m.name, &meta, &host, &inputs)
        }
        Err(reason) => FitVerdict {
            model: m.name.clone(),
            fit: Fit::Unknown,
            source: "none".into(),
            weights_bytes: None,
            kv_bytes: None,
            vram_bytes: None,
            ram_bytes: None,
            gpu_layers: None,
            reason,
            suggestion: None,
        },
    };
    (v, file_checks)
}

impl Handler for Reader {
    async fn handle(&self, env: Envelope) -> Handled {
        let Envelope { id, cycle, payload, .. } = env;
        match payload {
            Payload::CyclePlan(p) => self.verify(id, &cycle, *p).await,
            other => Err(HandleError::Reject(format!("the reader does not take `{}` packages", other.kind()))),
        }
    }
}

impl Reader {
    async fn verify(&self, pkg: Uuid, cycle: &CycleId, p: CyclePlan) -> Handled {
        let rec: Option<CycleRecord> = self.bus.cycles.get(cycle.as_str()).await.map_err(HandleError::from)?;
        if rec.is_some_and(|r| r.state.stops_work()) {
            return Ok(());
        }
        self.bus
            .event_best_effort(Event::new(
                cycle.clone(),
                Role::Reader,
                EventBody::PhaseStarted { phase: Phase::Verifying },
            ))
            .await;
        let (facts, mut checks) = host_facts(&p.plan, &p.host, true).await;
        let capacity = match &self.profile {
            Some(prof) => {
                checks.push(check(
                    "host.profile",
                    CheckStatus::Pass,
                    format!("fit predicted for host profile `{}`", prof.name),
                    None,
                    format!(
                        "{} GiB VRAM, {} GiB RAM{}: the predictions below use the profile, not this machine's free memory",
                        prof.vram_gb,
                        prof.ram_gb,
                        prof.container_limit_gb.map(|l| format!(", container limit {l} GiB")).unwrap_or_default()
                    ),
                ));
                prof.capacity()
            }
            None => measured_capacity(&facts),
        };
        let (verdicts, model_checks) = plan_verdicts(&p.plan, &capacity);
        checks.extend(model_checks);
        // Several hosts: the report goes to Main, which places the models.
        let several = p.hosts.len() > 1;
        for c in &checks {
            self.bus
                .event_best_effort(Event::new(
                    cycle.clone(),
                    Role::Reader,
                    EventBody::CheckDone {
                        name: c.name.clone(),
                        status: format!("{:?}", c.status).to_lowercase(),
                        measured: c.measured.clone(),
                    },
                ))
                .await;
        }
        let report = VerificationReport {
            plan: p.plan.clone(),
            plan_hash: p.plan_hash,
            plan_source: p.plan_source,
            host: facts,
            checks,
            verdicts,
            placement: None,
            concurrent_fit: if several { concurrent_fit(&p.plan, &capacity) } else { None },
        };
        let env = Envelope {
            id: derive_id(pkg, "verification-report", 0),
            ..Envelope::new(
                cycle.clone(),
                Role::Reader,
                if several { Role::Main } else { Role::Writer },
                Some(pkg),
                Payload::VerificationReport(Box::new(report)),
            )
        };
        self.bus.publish(&env).await.map_err(HandleError::from)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|l| l.to_string()).collect()
    }

    #[test]
    fn the_allocation_passes_only_when_dd_read_its_whole_block_and_the_cgroup_held_it() {
        let full = lines(&["1+0 records in", "1+0 records out", "tc-alloc-peak 3223322624"]);
        assert_eq!(allocation_outcome(Some(0), false, &full, 3072), Ok(3_223_322_624));
        // What `dd bs=3000M count=1` does without iflag=fullblock: one short read of about 2 GiB.
        let short = lines(&["0+1 records in", "0+1 records out", "tc-alloc-peak 2149580800"]);
        let e = allocation_outcome(Some(0), false, &short, 3000).unwrap_err();
        assert!(e.contains("did not read its 3000 MiB block in full"), "{e}");
        // A peak under the amount: the pages did not stay in the container's memory.
        let low = lines(&["1+0 records in", "1+0 records out", "tc-alloc-peak 1048576"]);
        assert!(allocation_outcome(Some(0), false, &low, 3072).unwrap_err().contains("peaked at 1048576 bytes"));
        let no_peak = lines(&["1+0 records in", "1+0 records out", "tc-alloc-peak "]);
        assert!(allocation_outcome(Some(0), false, &no_peak, 1).unwrap_err().contains("did not report"));
        assert!(allocation_outcome(Some(137), false, &[], 3072).unwrap_err().contains("OOM killer"));
        assert!(allocation_outcome(Some(0), true, &full, 3072).unwrap_err().contains("OOM killer"));
        let bad = lines(&["dd: invalid argument 'iflag=fullblock'"]);
        assert!(allocation_outcome(Some(1), false, &bad, 3072).unwrap_err().contains("invalid argument"));
    }

    /// A store under `dir` holding `tag` whose model layer is `gguf` (linked, not copied).
    fn store_with(dir: &Path, tag: &str, gguf: &Path) {
        let digest = "ab".repeat(32);
        let manifest = crate::store::manifest_path(dir, tag).expect("a valid name");
        std::fs::create_dir_all(manifest.parent().expect("parent")).expect("mkdir");
        std::fs::create_dir_all(dir.join("blobs")).expect("mkdir");
        std::os::unix::fs::symlink(gguf, dir.join(format!("blobs/sha256-{digest}"))).expect("link");
        let size = std::fs::metadata(gguf).expect("model").len();
        std::fs::write(
            manifest,
            format!(r#"{{"layers":[{{"mediaType":"application/vnd.ollama.image.model","digest":"sha256:{digest}","size":{size}}}]}}"#),
        )
        .expect("manifest");
    }

    fn ollama_plan(store: &Path, tags: &[&str]) -> Plan {
        let models: String = tags
            .iter()
            .enumerate()
            .map(|(i, t)| format!("[[models]]\nname = \"m{i}\"\nengine = \"ollama\"\nruntime = \"docker\"\ntag = \"{t}\"\nimage = \"ollama/ollama:0.12.6\"\n"))
            .collect();
        let text = format!(
            "name = \"p\"\n[host]\nmodel_store = \"{}\"\n{models}[[prompts]]\nid = \"a\"\ntext = \"hi\"\n",
            store.display()
        );
        Plan::from_toml(&text).expect("valid plan")
    }

    #[test]
    fn the_demo_model_in_an_ollama_store_is_read_from_its_gguf_and_needs_no_download() {
        let dir = tempfile::tempdir().expect("temp dir");
        store_with(dir.path(), "gemma3:270m", &testkit::demo_model());
        let plan = ollama_plan(dir.path(), &["gemma3:270m", "codellama:34b", "someone/unknown:1b"]);
        let (verdicts, checks) = plan_verdicts(&plan, &HostCapacity::default());
        let c = checks.iter().find(|c| c.name == "model.m0").expect("a model check for the stored model");
        assert_eq!(c.status, CheckStatus::Pass, "{c:?}");
        assert!(c.detail.contains("read from the Ollama store") && c.measured.starts_with("gemma3"), "{c:?}");
        assert_eq!(verdicts.len(), 3);
        let needed = downloads_needed(&plan);
        assert_eq!(needed.len(), 2, "{needed:?}");
        assert!(needed[0].0 == "codellama:34b" && needed[0].1.is_some_and(|b| b > 15 << 30), "{needed:?}");
        assert_eq!(needed[1], ("someone/unknown:1b".to_string(), None));
        // 1 GiB free: codellama alone does not fit.
        let c = downloads_check(&plan, 1 << 30).expect("a downloads check");
        assert_eq!(c.status, CheckStatus::Fail, "{c:?}");
        assert!(c.detail.contains("codellama:34b, someone/unknown:1b") && c.detail.contains("size unknown"), "{c:?}");
        // Plenty free, one size unknown: a warning, not a pass.
        assert_eq!(downloads_check(&plan, 1 << 40).expect("check").status, CheckStatus::Warn);
        // Everything stored: nothing to check.
        assert_eq!(downloads_check(&ollama_plan(dir.path(), &["gemma3:270m"]), 0), None);
    }

    #[test]
    fn the_allocation_script_reads_one_full_block_and_prints_the_peak() {
        let s = allocation_script(25600);
        assert!(s.starts_with("dd if=/dev/zero of=/dev/null bs=25600M count=1 iflag=fullblock"), "{s}");
        assert!(s.contains("memory.peak") && s.contains("memory.max_usage_in_bytes") && s.contains(ALLOC_PEAK), "{s}");
    }

    fn plan_with_pair() -> Plan {
        let model = |name: &str| {
            format!(
                "[[concurrent.models]]\nname = \"{name}\"\nengine = \"ollama\"\nruntime = \"docker\"\ntag = \"llama3.1:8b\"\nimage = \"ollama/ollama:0.12.6\"\n"
            )
        };
        let text = format!(
            "name = \"p\"\n[[models]]\nname = \"m\"\nengine = \"ollama\"\nruntime = \"docker\"\ntag = \"llama3.1:8b\"\nimage = \"ollama/ollama:0.12.6\"\n[[prompts]]\nid = \"a\"\ntext = \"hi\"\n[concurrent]\nlevels = [1]\n{}{}",
            model("x"),
            model("y")
        );
        Plan::from_toml(&text).expect("valid plan")
    }

    fn cpu_only(ram: u64) -> HostCapacity {
        HostCapacity { gpus_free_vram: Vec::new(), ram_available: ram, container_limit: None }
    }

    #[test]
    fn the_concurrent_pair_fits_where_both_fit_at_once_and_not_where_only_one_does() {
        let plan = plan_with_pair();
        let roomy = concurrent_fit(&plan, &cpu_only(256 << 30)).expect("a concurrent phase");
        assert_eq!(roomy.fit, Fit::Go, "{roomy:?}");
        assert_eq!(roomy.model, "x + y");
        let one = roomy.ram_bytes.expect("predicted RAM") / 2;
        // Room for one and a half: each fits alone, the two together do not.
        let tight = concurrent_fit(&plan, &cpu_only(one * 3 / 2)).expect("a concurrent phase");
        assert_eq!(tight.fit, Fit::NoGo, "{tight:?}");
        assert!(tight.reason.starts_with("together they need"), "{tight:?}");
        let (alone, _) = plan_verdicts(
            &Plan { models: plan.concurrent.clone().expect("phase").models, ..plan.clone() },
            &cpu_only(one * 3 / 2),
        );
        assert!(alone.iter().all(|v| v.fit == Fit::Go), "{alone:?}");
        // Too small for either: named as such.
        let none = concurrent_fit(&plan, &cpu_only(one / 2)).expect("a concurrent phase");
        assert_eq!(none.fit, Fit::NoGo);
        assert!(none.reason.contains("does not fit even alone"), "{none:?}");
        assert_eq!(concurrent_fit(&Plan { concurrent: None, ..plan }, &cpu_only(1 << 40)), None);
    }
}
