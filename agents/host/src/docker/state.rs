//! A container's state (from inspect) and its memory and CPU figures (from stats), as the
//! engine reports them.

use bollard::models::{ContainerInspectResponse, ContainerStatsResponse};

/// A container's state as the engine reports it (evidence for Debug).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerState {
    /// Whether it is running now.
    pub running: bool,
    /// Its exit code once stopped (`None` while it has not stopped yet).
    pub exit_code: Option<i64>,
    /// Whether the kernel's OOM killer stopped it.
    pub oom_killed: bool,
    /// The engine's status word (`created`, `running`, `exited`, `dead`, …).
    pub status: String,
    /// The engine's error text, if any (e.g. a failed start).
    pub error: Option<String>,
    /// How many times the engine restarted it.
    pub restart_count: i64,
    /// Its memory limit, if it has one.
    pub memory_limit_bytes: Option<u64>,
}

impl ContainerState {
    /// The state from an inspect response.
    pub(super) fn from_inspect(insp: &ContainerInspectResponse) -> Self {
        let st = insp.state.as_ref();
        let running = st.and_then(|s| s.running).unwrap_or(false);
        let status = st.and_then(|s| s.status).map(|s| s.to_string()).unwrap_or_default();
        let exit_code = if running || status == "created" { None } else { st.and_then(|s| s.exit_code) };
        Self {
            running,
            exit_code,
            oom_killed: st.and_then(|s| s.oom_killed).unwrap_or(false),
            status,
            error: st.and_then(|s| s.error.clone()).filter(|e| !e.trim().is_empty()),
            restart_count: insp.restart_count.unwrap_or(0),
            memory_limit_bytes: insp
                .host_config
                .as_ref()
                .and_then(|h| h.memory)
                .and_then(|m| u64::try_from(m).ok())
                .filter(|&m| m > 0),
        }
    }
}

/// One sample of a container's memory and CPU use (the `docker stats` figures).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ContainerStats {
    /// Memory charged to the container's cgroup, page cache included, in bytes.
    pub mem_usage: u64,
    /// Its memory limit in bytes (the host's memory when it has none).
    pub mem_limit: u64,
    /// Reclaimable page cache: `inactive_file` (cgroup v2) or `total_inactive_file` (v1).
    pub mem_cache: u64,
    /// `mem_usage - mem_cache`: what `docker stats` shows as used.
    pub mem_working_set: u64,
    /// CPU use in percent of one core (100 = one core busy), as `docker stats` computes it.
    pub cpu_percent: f64,
}

impl ContainerStats {
    /// The figures from an engine stats sample.
    pub fn from_response(r: &ContainerStatsResponse) -> Self {
        let mem = r.memory_stats.as_ref();
        let mem_usage = mem.and_then(|m| m.usage).unwrap_or(0);
        let mem_limit = mem.and_then(|m| m.limit).unwrap_or(0);
        let mem_cache = mem
            .and_then(|m| m.stats.as_ref())
            .and_then(|s| s.get("total_inactive_file").or_else(|| s.get("inactive_file")).copied())
            .filter(|&c| c < mem_usage)
            .unwrap_or(0);
        Self {
            mem_usage,
            mem_limit,
            mem_cache,
            mem_working_set: mem_usage.saturating_sub(mem_cache),
            cpu_percent: cpu_percent(r),
        }
    }
}

/// `(Δ container CPU / Δ system CPU) × online CPUs × 100`, Δ against `precpu_stats`.
fn cpu_percent(r: &ContainerStatsResponse) -> f64 {
    let (Some(cpu), Some(pre)) = (r.cpu_stats.as_ref(), r.precpu_stats.as_ref()) else {
        return 0.0;
    };
    let total = |s: &bollard::models::ContainerCpuStats| s.cpu_usage.as_ref().and_then(|u| u.total_usage).unwrap_or(0);
    let cpu_delta = total(cpu).saturating_sub(total(pre));
    let system_delta = cpu.system_cpu_usage.unwrap_or(0).saturating_sub(pre.system_cpu_usage.unwrap_or(0));
    let online = cpu
        .online_cpus
        .filter(|&n| n > 0)
        .map(f64::from)
        .or_else(|| cpu.cpu_usage.as_ref().and_then(|u| u.percpu_usage.as_ref()).map(|p| p.len() as f64))
        .unwrap_or(1.0);
    if cpu_delta == 0 || system_delta == 0 {
        return 0.0;
    }
    cpu_delta as f64 / system_delta as f64 * online * 100.0
}
