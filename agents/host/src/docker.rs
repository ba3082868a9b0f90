//! Docker engine adapter: deploy an inference container, wait until its engine answers, read
//! its state, logs and memory/CPU figures, and tear it down (bollard 0.21).
//!
//! Every container made here carries the label `threadcycle.managed=true` plus the caller's
//! labels (the Writer adds `threadcycle.cycle` and `threadcycle.model`), so containers left
//! behind by a crashed run can be found and removed by label.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStatsResponse, DeviceRequest, HostConfig, PortBinding,
};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateContainerOptionsBuilder, InspectContainerOptions, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, StatsOptionsBuilder, WaitContainerOptionsBuilder,
};
use futures::{Stream, StreamExt};
use protocol::plan::GpuRequest;

/// The label every container made by threadcycle carries (value `true`).
pub const MANAGED_LABEL: &str = "threadcycle.managed";

/// Where the engine's socket is when `DOCKER_HOST` is not set.
const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// How long `connect` waits for the engine to answer its ping.
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// How often `wait_healthy` polls the container and the probe.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// How many log lines errors about a container carry.
const ERROR_LOG_LINES: usize = 40;

/// How many build-output lines a failed build's error carries.
const BUILD_LOG_LINES: usize = 30;

/// What went wrong talking to the Docker engine, in the user's terms.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// No engine listens where we looked.
    #[error("no Docker engine at {socket}: install docker.io and start dockerd ({detail})")]
    NoEngine {
        /// The socket or host address tried.
        socket: String,
        /// What the connection attempt said.
        detail: String,
    },
    /// The image to run is not on this host (no registry is used).
    #[error("image `{image}` is not present on this host: build or load it first")]
    ImageMissing {
        /// The image reference.
        image: String,
    },
    /// A container of that name exists and was not made by threadcycle.
    #[error(
        "a container named `{name}` already exists and is not threadcycle's (no `threadcycle.managed` label): remove it or choose another name"
    )]
    NameTaken {
        /// The container name.
        name: String,
    },
    /// No container with that id or name exists.
    #[error("container `{container}` does not exist")]
    NotFound {
        /// The id or name asked for.
        container: String,
    },
    /// The container stopped (before answering, or while being watched).
    #[error("{}", describe_exit(.container, *.exit_code, *.oom_killed, *.memory_limit_bytes, .log_tail))]
    Exited {
        /// The container's name (or id).
        container: String,
        /// Its exit code, when the engine knows it.
        exit_code: Option<i64>,
        /// Whether the kernel's OOM killer stopped it.
        oom_killed: bool,
        /// Its memory limit, if it had one.
        memory_limit_bytes: Option<u64>,
        /// The last lines of its stdout and stderr.
        log_tail: Vec<String>,
    },
    /// The container kept running but its engine never answered the probe in time.
    #[error("container `{container}` was still not answering after {}{}", fmt_duration(*.after), last_line(.log_tail))]
    NotHealthy {
        /// The container's name (or id).
        container: String,
        /// How long we waited.
        after: Duration,
        /// The last lines of its stdout and stderr.
        log_tail: Vec<String>,
    },
    /// The engine did not publish the container's port on the host.
    #[error("container `{container}` has no host port published for {container_port}/tcp")]
    NoHostPort {
        /// The container's name (or id).
        container: String,
        /// The port inside the container.
        container_port: u16,
    },
    /// Building an image failed.
    #[error("building image `{tag}` failed: {message}")]
    Build {
        /// The tag being built.
        tag: String,
        /// The builder's error text.
        message: String,
        /// The last lines of the build output.
        log_tail: Vec<String>,
    },
    /// The build context could not be read or packed.
    #[error("cannot pack the build context {}: {source}", .path.display())]
    Context {
        /// The context directory.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Any other refusal or failure of the engine API.
    #[error("Docker could not {action} `{target}`: {}", engine_message(.source))]
    Api {
        /// What we were doing, as a verb phrase ("start container").
        action: &'static str,
        /// The container or image concerned.
        target: String,
        /// bollard's error.
        #[source]
        source: BollardError,
    },
}

impl DockerError {
    /// The container's last log lines, when this error carries them.
    pub fn log_tail(&self) -> &[String] {
        match self {
            DockerError::Exited { log_tail, .. }
            | DockerError::NotHealthy { log_tail, .. }
            | DockerError::Build { log_tail, .. } => log_tail,
            _ => &[],
        }
    }
}

/// The engine's own message for an API error, without bollard's wrapping.
fn engine_message(e: &BollardError) -> String {
    match e {
        BollardError::DockerResponseServerError { status_code, message } => {
            format!("{} (HTTP {status_code})", message.trim())
        }
        other => other.to_string(),
    }
}

/// `"512 MiB"` / `"8 GiB"` rendering of a byte count.
fn fmt_bytes(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    if bytes >= GIB && bytes.is_multiple_of(GIB) {
        format!("{} GiB", bytes / GIB)
    } else if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= MIB {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    } else {
        format!("{bytes} bytes")
    }
}

/// `"1.5 s"` style rendering of a duration.
fn fmt_duration(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// `"; last log line: …"`, or nothing when there are no logs.
fn last_line(log_tail: &[String]) -> String {
    match log_tail.iter().rev().find(|l| !l.trim().is_empty()) {
        Some(line) => format!("; last log line: {}", line.trim()),
        None => "; it printed no logs".to_string(),
    }
}

/// The `Exited` message: OOM kill, or exit code with the last log line.
fn describe_exit(
    container: &str,
    exit_code: Option<i64>,
    oom_killed: bool,
    memory_limit_bytes: Option<u64>,
    log_tail: &[String],
) -> String {
    let code = exit_code.map_or_else(|| "exit code unknown".to_string(), |c| format!("exit {c}"));
    if oom_killed {
        let limit = memory_limit_bytes.map_or_else(
            || " (no container memory limit: the host ran out of memory)".to_string(),
            |l| format!(" at its {} limit", fmt_bytes(l)),
        );
        format!("container `{container}` was killed by the OOM killer ({code}){limit}")
    } else if exit_code == Some(137) {
        format!(
            "container `{container}` was killed (exit 137, SIGKILL) but not by the OOM killer{}",
            last_line(log_tail)
        )
    } else {
        format!("container `{container}` stopped ({code}){}", last_line(log_tail))
    }
}

/// Whether a bollard error is the engine's "404 no such …".
fn is_not_found(e: &BollardError) -> bool {
    matches!(e, BollardError::DockerResponseServerError { status_code: 404, .. })
}

/// Whether a bollard error is the engine's "409 conflict".
fn is_conflict(e: &BollardError) -> bool {
    matches!(e, BollardError::DockerResponseServerError { status_code: 409, .. })
}

/// The Docker engine's identity and capabilities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineInfo {
    /// The engine version (`20.10.24+dfsg1`).
    pub version: String,
    /// The engine's API version (`1.41`).
    pub api_version: String,
    /// The OCI runtimes it knows (`runc`, `nvidia`, …), sorted.
    pub runtimes: Vec<String>,
    /// The runtime containers get by default.
    pub default_runtime: Option<String>,
    /// The cgroup version containers run under (1 or 2).
    pub cgroup_version: Option<u8>,
    /// The memory the engine sees, in bytes.
    pub mem_total: Option<u64>,
}

impl EngineInfo {
    /// Whether the NVIDIA container runtime is registered with the engine.
    pub fn has_nvidia_runtime(&self) -> bool {
        self.runtimes.iter().any(|r| r == "nvidia")
    }
}

/// What container to run and how.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSpec {
    /// The container name (`tc-<cycle>-<model>`).
    pub name: String,
    /// The image reference (must be present locally).
    pub image: String,
    /// The command (arguments after the image's entrypoint); empty keeps the image's `CMD`.
    pub cmd: Vec<String>,
    /// Environment variables.
    pub env: BTreeMap<String, String>,
    /// The memory limit in bytes (`--memory`).
    pub memory_limit_bytes: Option<u64>,
    /// Memory plus swap in bytes (`--memory-swap`); `None` means the same as the limit (no swap), -1 unlimited.
    pub memory_swap_bytes: Option<i64>,
    /// The CPUs it may run on (`--cpuset-cpus`, e.g. `0-3`).
    pub cpuset: Option<String>,
    /// The GPUs it gets.
    pub gpus: GpuRequest,
    /// The TCP port its engine listens on inside the container.
    pub container_port: u16,
    /// The host port to publish on 127.0.0.1; `None` lets the engine choose a free one.
    pub host_port: Option<u16>,
    /// Bind mounts (`/models:/models:ro`).
    pub binds: Vec<String>,
    /// Labels, added to `threadcycle.managed=true`.
    pub labels: BTreeMap<String, String>,
    /// A user-defined network to attach it to (`--network`), so a Writer running in a container
    /// on that network reaches the engine by container name; `None` = Docker's default bridge.
    pub network: Option<String>,
}

impl ContainerSpec {
    /// A spec with no limits, no GPU, no mounts and an engine-chosen host port.
    pub fn new(name: impl Into<String>, image: impl Into<String>, container_port: u16) -> Self {
        Self {
            name: name.into(),
            image: image.into(),
            cmd: Vec::new(),
            env: BTreeMap::new(),
            memory_limit_bytes: None,
            memory_swap_bytes: None,
            cpuset: None,
            gpus: GpuRequest::None,
            container_port,
            host_port: None,
            binds: Vec::new(),
            labels: BTreeMap::new(),
            network: None,
        }
    }

    /// The spec a containerised [`protocol::launch::Launch`] describes, word for word (its image,
    /// command, environment and `docker run` settings); `None` for a host-process launch.
    pub fn from_launch(launch: &protocol::launch::Launch) -> Option<Self> {
        let c = launch.container.as_ref()?;
        Some(Self {
            name: c.name.clone(),
            image: launch.program.clone(),
            cmd: launch.args.clone(),
            env: launch.env.clone(),
            memory_limit_bytes: c.memory_limit_bytes,
            memory_swap_bytes: c.memory_swap_bytes,
            cpuset: c.cpuset.clone(),
            gpus: c.gpus.clone(),
            container_port: c.container_port,
            host_port: c.host_port,
            binds: c.binds.clone(),
            labels: BTreeMap::new(),
            network: c.network.clone(),
        })
    }

    /// The engine API's create body for this spec.
    fn to_create_body(&self) -> ContainerCreateBody {
        let port_key = format!("{}/tcp", self.container_port);
        let binding = PortBinding {
            host_ip: Some("127.0.0.1".to_string()),
            host_port: Some(self.host_port.unwrap_or(0).to_string()),
        };
        let memory = self.memory_limit_bytes.map(|b| i64::try_from(b).unwrap_or(i64::MAX));
        let memory_swap = match (self.memory_swap_bytes, memory) {
            (Some(s), _) => Some(s),
            (None, Some(m)) => Some(m),
            (None, None) => None,
        };
        let device_requests = match &self.gpus {
            GpuRequest::None => None,
            GpuRequest::All => Some(vec![DeviceRequest {
                driver: Some(String::new()),
                count: Some(-1),
                capabilities: Some(vec![vec!["gpu".to_string()]]),
                ..Default::default()
            }]),
            GpuRequest::Indices(ids) => Some(vec![DeviceRequest {
                driver: Some(String::new()),
                device_ids: Some(ids.iter().map(u32::to_string).collect()),
                capabilities: Some(vec![vec!["gpu".to_string()]]),
                ..Default::default()
            }]),
        };
        let host_config = HostConfig {
            memory,
            memory_swap,
            cpuset_cpus: self.cpuset.clone(),
            device_requests,
            port_bindings: Some(HashMap::from([(port_key.clone(), Some(vec![binding]))])),
            binds: (!self.binds.is_empty()).then(|| self.binds.clone()),
            network_mode: self.network.clone(),
            ..Default::default()
        };
        let mut labels: HashMap<String, String> = self.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        labels.insert(MANAGED_LABEL.to_string(), "true".to_string());
        ContainerCreateBody {
            image: Some(self.image.clone()),
            cmd: (!self.cmd.is_empty()).then(|| self.cmd.clone()),
            env: (!self.env.is_empty()).then(|| self.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            exposed_ports: Some(vec![port_key]),
            labels: Some(labels),
            host_config: Some(host_config),
            ..Default::default()
        }
    }
}

/// A started container and where its engine can be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningContainer {
    /// The engine's container id.
    pub id: String,
    /// The container name.
    pub name: String,
    /// The port on 127.0.0.1 that reaches the container's port.
    pub host_port: u16,
}

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
    fn from_inspect(insp: &ContainerInspectResponse) -> Self {
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

/// The Docker engine, reached through its API.
#[derive(Debug, Clone)]
pub struct DockerRuntime {
    docker: Docker,
}

impl DockerRuntime {
    /// Connect to the local engine (or `DOCKER_HOST`) and check that it answers a ping.
    pub async fn connect() -> Result<Self, DockerError> {
        let host = std::env::var("DOCKER_HOST").ok().filter(|h| !h.trim().is_empty());
        let socket = host.clone().unwrap_or_else(|| DEFAULT_SOCKET.to_string());
        let no_engine = |detail: String| DockerError::NoEngine { socket: socket.clone(), detail };
        let docker = match &host {
            Some(_) => Docker::connect_with_defaults(),
            None => Docker::connect_with_local_defaults(),
        }
        .map_err(|e| no_engine(e.to_string()))?;
        match tokio::time::timeout(PING_TIMEOUT, docker.ping()).await {
            Ok(Ok(_)) => Ok(Self { docker }),
            Ok(Err(e)) => Err(no_engine(e.to_string())),
            Err(_) => Err(no_engine(format!("no answer to a ping within {}", fmt_duration(PING_TIMEOUT)))),
        }
    }

    /// The engine's version, runtimes, cgroup version and memory.
    pub async fn engine_info(&self) -> Result<EngineInfo, DockerError> {
        let api = |action, source| DockerError::Api { action, target: "engine".to_string(), source };
        let version = self.docker.version().await.map_err(|e| api("read the version of the", e))?;
        let info = self.docker.info().await.map_err(|e| api("read the info of the", e))?;
        let mut runtimes: Vec<String> = info.runtimes.map(|r| r.into_keys().collect()).unwrap_or_default();
        runtimes.sort();
        Ok(EngineInfo {
            version: version.version.unwrap_or_default(),
            api_version: version.api_version.unwrap_or_default(),
            runtimes,
            default_runtime: info.default_runtime,
            cgroup_version: info.cgroup_version.and_then(|v| v.to_string().parse().ok()),
            mem_total: info.mem_total.and_then(|m| u64::try_from(m).ok()),
        })
    }

    /// Whether the image is present on this host.
    pub async fn image_present(&self, image: &str) -> Result<bool, DockerError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(source) => Err(DockerError::Api { action: "inspect image", target: image.to_string(), source }),
        }
    }

    /// Create and start a container, and find the host port its engine is published on.
    ///
    /// A leftover container of ours with the same name is removed first. If the container
    /// stops before its port can be read, this returns [`DockerError::Exited`] and leaves the
    /// container for inspection (remove it by name or by label).
    pub async fn run(&self, spec: &ContainerSpec) -> Result<RunningContainer, DockerError> {
        let id = self.create(spec).await?;
        if let Err(source) = self.docker.start_container(&id, None).await {
            // It never ran: nothing to inspect, so do not leave it behind.
            let _ = self.remove(&id).await;
            return Err(DockerError::Api { action: "start container", target: spec.name.clone(), source });
        }
        let insp = self.inspect(&id).await?;
        let port_key = format!("{}/tcp", spec.container_port);
        let host_port = insp
            .network_settings
            .as_ref()
            .and_then(|n| n.ports.as_ref())
            .and_then(|p| p.get(&port_key).cloned().flatten())
            .and_then(|bindings| {
                bindings.iter().find_map(|b| b.host_port.as_deref().and_then(|p| p.parse::<u16>().ok()))
            })
            .filter(|&p| p != 0);
        match host_port {
            Some(host_port) => Ok(RunningContainer { id, name: spec.name.clone(), host_port }),
            None => {
                let state = ContainerState::from_inspect(&insp);
                if state.running {
                    Err(DockerError::NoHostPort { container: spec.name.clone(), container_port: spec.container_port })
                } else {
                    Err(self.exited_error(&spec.name, &id, &state).await)
                }
            }
        }
    }

    /// Create the container, replacing a leftover one of ours with the same name once.
    async fn create(&self, spec: &ContainerSpec) -> Result<String, DockerError> {
        let body = spec.to_create_body();
        let options = || Some(CreateContainerOptionsBuilder::default().name(&spec.name).build());
        match self.docker.create_container(options(), body.clone()).await {
            Ok(r) => return Ok(r.id),
            Err(e) if is_conflict(&e) => {}
            Err(e) => return Err(self.create_error(spec, e)),
        }
        // Name conflict: replace it only if it is one of ours.
        let existing = self.inspect(&spec.name).await?;
        let ours = existing
            .config
            .as_ref()
            .and_then(|c| c.labels.as_ref())
            .and_then(|l| l.get(MANAGED_LABEL))
            .is_some_and(|v| v == "true");
        if !ours {
            return Err(DockerError::NameTaken { name: spec.name.clone() });
        }
        tracing::info!(container = %spec.name, "removing a leftover container of ours with the same name");
        self.remove(&spec.name).await?;
        self.docker.create_container(options(), body).await.map(|r| r.id).map_err(|e| self.create_error(spec, e))
    }

    /// The error for a refused create: a missing image gets its own variant.
    fn create_error(&self, spec: &ContainerSpec, e: BollardError) -> DockerError {
        if is_not_found(&e) {
            DockerError::ImageMissing { image: spec.image.clone() }
        } else {
            DockerError::Api { action: "create container", target: spec.name.clone(), source: e }
        }
    }

    /// Inspect a container; 404 becomes [`DockerError::NotFound`].
    async fn inspect(&self, id: &str) -> Result<ContainerInspectResponse, DockerError> {
        self.docker.inspect_container(id, None::<InspectContainerOptions>).await.map_err(|e| {
            if is_not_found(&e) {
                DockerError::NotFound { container: id.to_string() }
            } else {
                DockerError::Api { action: "inspect container", target: id.to_string(), source: e }
            }
        })
    }

    /// The container's state: running, exit code, OOM kill, status, error, restarts.
    pub async fn state(&self, id: &str) -> Result<ContainerState, DockerError> {
        Ok(ContainerState::from_inspect(&self.inspect(id).await?))
    }

    /// The last `lines` lines of the container's stdout and stderr, oldest first.
    pub async fn log_tail(&self, id: &str, lines: usize) -> Result<Vec<String>, DockerError> {
        let tail = lines.to_string();
        let options = LogsOptionsBuilder::default().stdout(true).stderr(true).follow(false).tail(&tail).build();
        let mut stream = self.docker.logs(id, Some(options));
        let mut out = Vec::new();
        while let Some(item) = stream.next().await {
            let chunk = item.map_err(|e| {
                if is_not_found(&e) {
                    DockerError::NotFound { container: id.to_string() }
                } else {
                    DockerError::Api { action: "read the logs of container", target: id.to_string(), source: e }
                }
            })?;
            let text = String::from_utf8_lossy(&chunk.into_bytes()).into_owned();
            let text = text.strip_suffix('\n').unwrap_or(&text);
            out.extend(text.split('\n').map(|l| l.trim_end_matches('\r').to_string()));
        }
        if out.len() > lines {
            out.drain(..out.len() - lines);
        }
        Ok(out)
    }

    /// One stats sample; takes about a second because the engine measures a CPU interval.
    pub async fn stats_once(&self, id: &str) -> Result<ContainerStats, DockerError> {
        let options = StatsOptionsBuilder::default().stream(false).one_shot(false).build();
        let mut stream = self.docker.stats(id, Some(options));
        match stream.next().await {
            Some(Ok(r)) => Ok(ContainerStats::from_response(&r)),
            Some(Err(e)) => Err(stats_error(id, e)),
            None => Err(DockerError::NotFound { container: id.to_string() }),
        }
    }

    /// A stats sample about every second until the container stops (the first has no CPU figure).
    pub fn stats_stream(&self, id: &str) -> impl Stream<Item = Result<ContainerStats, DockerError>> + Send + 'static {
        let options = StatsOptionsBuilder::default().stream(true).build();
        let id = id.to_string();
        self.docker
            .stats(&id, Some(options))
            .map(move |item| item.map(|r| ContainerStats::from_response(&r)).map_err(|e| stats_error(&id, e)))
    }

    /// Poll `probe` every 250 ms until it says the engine answers; returns how long that took.
    ///
    /// Fails with [`DockerError::Exited`] as soon as the container stops, and with
    /// [`DockerError::NotHealthy`] after `timeout`; both carry the container's log tail.
    pub async fn wait_healthy(
        &self,
        id: &str,
        mut probe: impl AsyncFnMut() -> bool,
        timeout: Duration,
    ) -> Result<Duration, DockerError> {
        let start = Instant::now();
        loop {
            let insp = self.inspect(id).await?;
            let state = ContainerState::from_inspect(&insp);
            let name =
                insp.name.as_deref().map(|n| n.trim_start_matches('/').to_string()).unwrap_or_else(|| id.to_string());
            if !state.running {
                return Err(self.exited_error(&name, id, &state).await);
            }
            let remaining = timeout.saturating_sub(start.elapsed());
            let answered = tokio::time::timeout(remaining.max(POLL_INTERVAL), probe()).await.unwrap_or(false);
            if answered {
                return Ok(start.elapsed());
            }
            if start.elapsed() >= timeout {
                // One last look: a container dying right now is the more useful error.
                let state = self.state(id).await?;
                if !state.running {
                    return Err(self.exited_error(&name, id, &state).await);
                }
                return Err(DockerError::NotHealthy {
                    container: name,
                    after: start.elapsed(),
                    log_tail: self.log_tail(id, ERROR_LOG_LINES).await.unwrap_or_default(),
                });
            }
            tokio::time::sleep(POLL_INTERVAL.min(timeout.saturating_sub(start.elapsed()))).await;
        }
    }

    /// Wait until the container stops and return its exit code (`None` on timeout).
    pub async fn wait_exit(&self, id: &str, timeout: Duration) -> Result<Option<i64>, DockerError> {
        let options = WaitContainerOptionsBuilder::default().condition("not-running").build();
        let mut stream = self.docker.wait_container(id, Some(options));
        match tokio::time::timeout(timeout, stream.next()).await {
            Err(_) => Ok(None),
            Ok(Some(Ok(r))) => Ok(Some(r.status_code)),
            // bollard reports a non-zero exit as an error.
            Ok(Some(Err(BollardError::DockerContainerWaitError { code, .. }))) => Ok(Some(code)),
            Ok(Some(Err(e))) if is_not_found(&e) => Err(DockerError::NotFound { container: id.to_string() }),
            Ok(Some(Err(source))) => {
                Err(DockerError::Api { action: "wait for container", target: id.to_string(), source })
            }
            Ok(None) => Ok(self.state(id).await?.exit_code),
        }
    }

    /// The `Exited` error for a stopped container, with its log tail.
    async fn exited_error(&self, name: &str, id: &str, state: &ContainerState) -> DockerError {
        DockerError::Exited {
            container: name.to_string(),
            exit_code: state.exit_code,
            oom_killed: state.oom_killed,
            memory_limit_bytes: state.memory_limit_bytes,
            log_tail: self.log_tail(id, ERROR_LOG_LINES).await.unwrap_or_default(),
        }
    }

    /// Remove the container (forcefully, with its anonymous volumes); a missing one is fine.
    pub async fn remove(&self, id: &str) -> Result<(), DockerError> {
        let options = RemoveContainerOptionsBuilder::default().force(true).v(true).build();
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            // "removal of container … is already in progress"
            Err(e) if is_conflict(&e) && engine_message(&e).contains("already in progress") => Ok(()),
            Err(source) => Err(DockerError::Api { action: "remove container", target: id.to_string(), source }),
        }
    }

    /// Our containers (all states) carrying these labels, as (id, labels).
    pub async fn list_labeled(
        &self,
        filters: &[(&str, &str)],
    ) -> Result<Vec<(String, HashMap<String, String>)>, DockerError> {
        let mut labels = vec![format!("{MANAGED_LABEL}=true")];
        labels.extend(filters.iter().map(|(k, v)| format!("{k}={v}")));
        let target = labels.join(",");
        let options =
            ListContainersOptionsBuilder::default().all(true).filters(&HashMap::from([("label", labels)])).build();
        let found = self.docker.list_containers(Some(options)).await.map_err(|source| DockerError::Api {
            action: "list containers labelled",
            target,
            source,
        })?;
        Ok(found.into_iter().filter_map(|c| Some((c.id?, c.labels.unwrap_or_default()))).collect())
    }

    /// Removes our containers carrying these labels; returns how many.
    pub async fn remove_labeled(&self, filters: &[(&str, &str)]) -> Result<u32, DockerError> {
        let mut removed = 0;
        for (id, _) in self.list_labeled(filters).await? {
            tracing::info!(container = %id, ?filters, "removing a leftover container");
            self.remove(&id).await?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Build an image from a directory holding a `Dockerfile`; returns the image id.
    ///
    /// The directory is packed into a tar in memory; build output goes to `tracing` (debug)
    /// and the last lines come back in [`DockerError::Build`] on failure.
    pub async fn build_image(&self, tag: &str, context_dir: &Path) -> Result<String, DockerError> {
        let dir = context_dir.to_path_buf();
        let context = tokio::task::spawn_blocking(move || pack_context(&dir))
            .await
            .map_err(|e| DockerError::Context {
                path: context_dir.to_path_buf(),
                source: std::io::Error::other(e.to_string()),
            })?
            .map_err(|source| DockerError::Context { path: context_dir.to_path_buf(), source })?;
        let options =
            BuildImageOptionsBuilder::default().dockerfile("Dockerfile").t(tag).rm(true).forcerm(true).build();
        let mut stream = self.docker.build_image(options, None, Some(bollard::body_full(context.into())));
        let mut log: Vec<String> = Vec::new();
        let mut image_id = None;
        let fail = |message: String, log: &[String]| DockerError::Build {
            tag: tag.to_string(),
            message,
            log_tail: log[log.len().saturating_sub(BUILD_LOG_LINES)..].to_vec(),
        };
        while let Some(item) = stream.next().await {
            let info = match item {
                Ok(info) => info,
                Err(BollardError::DockerStreamError { error }) => {
                    return Err(fail(error.trim().to_string(), &log));
                }
                Err(e) => return Err(fail(engine_message(&e), &log)),
            };
            if let Some(text) = info.stream.as_deref().or(info.status.as_deref()) {
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    tracing::debug!(image = %tag, "{line}");
                    log.push(line.to_string());
                }
                if log.len() > 4 * BUILD_LOG_LINES {
                    log.drain(..log.len() - BUILD_LOG_LINES);
                }
            }
            if let Some(detail) = info.error_detail {
                let message = detail.message.unwrap_or_else(|| "unknown error".to_string());
                return Err(fail(message.trim().to_string(), &log));
            }
            if let Some(id) = info.aux.and_then(|a| a.id) {
                image_id = Some(id);
            }
        }
        Ok(image_id.unwrap_or_else(|| tag.to_string()))
    }
}

/// A stats error: 404 is "no such container".
fn stats_error(id: &str, e: BollardError) -> DockerError {
    if is_not_found(&e) {
        DockerError::NotFound { container: id.to_string() }
    } else {
        DockerError::Api { action: "read the stats of container", target: id.to_string(), source: e }
    }
}

/// Tar the directory's contents (paths relative to it) into memory.
fn pack_context(dir: &Path) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    builder.append_dir_all(".", dir)?;
    builder.into_inner()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    //! These tests need a real engine and the local test images; they fail (never skip) when
    //! either is missing: run `scripts/start-dockerd.sh` and `scripts/build-test-images.sh`.

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
        let s = docker.stats_once(&running.id).await.unwrap();
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
        let mut spec = crasher_spec(
            &name,
            &["sh", "-c", "echo allocating; sleep 1; dd if=/dev/zero of=/dev/null bs=256M count=1"],
        );
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
        let removed =
            docker.remove_labeled(&[("threadcycle.cycle", &cycle), ("threadcycle.model", "m0")]).await.unwrap();
        assert_eq!(removed, 1);
        assert_eq!(docker.remove_labeled(&[("threadcycle.cycle", &cycle)]).await.unwrap(), 1);
        assert_eq!(docker.remove_labeled(&[("threadcycle.cycle", &cycle)]).await.unwrap(), 0);
        for name in &names {
            assert!(matches!(docker.state(name).await, Err(DockerError::NotFound { .. })));
        }
        // Removing what is already gone is fine.
        docker.remove(&names[0]).await.unwrap();
    }

    #[tokio::test]
    async fn build_image_from_a_directory_and_report_failures() {
        let docker = engine_with_crasher().await;
        let dir = std::env::temp_dir().join(unique("build"));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/hello.txt"), "hello\n").unwrap();
        let tag = format!("threadcycle/build-test:{}", std::process::id());
        std::fs::write(
            dir.join("Dockerfile"),
            format!("FROM {CRASHER}\nCOPY sub/hello.txt /hello.txt\nCMD [\"cat\", \"/hello.txt\"]\n"),
        )
        .unwrap();
        let built = docker.build_image(&tag, &dir).await;
        std::fs::write(dir.join("Dockerfile"), format!("FROM {CRASHER}\nRUN echo about to fail && exit 7\n")).unwrap();
        let failed = docker.build_image(&format!("{tag}-bad"), &dir).await;
        let _ = std::fs::remove_dir_all(&dir);
        let _ = docker.docker.remove_image(&tag, None::<bollard::query_parameters::RemoveImageOptions>, None).await;
        assert!(built.unwrap().starts_with("sha256:"));
        match failed {
            Err(DockerError::Build { message, log_tail, .. }) => {
                assert!(message.contains("returned a non-zero code: 7"), "{message}");
                assert!(log_tail.iter().any(|l| l.contains("about to fail")), "{log_tail:?}");
            }
            other => panic!("expected a Build error, got {other:?}"),
        }
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
        let s = docker.stats_once(&running.id).await.unwrap();
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
}
