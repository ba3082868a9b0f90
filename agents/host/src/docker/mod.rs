//! Docker engine adapter: deploy an inference container, wait until its engine answers, read
//! its state, logs and memory/CPU figures, and tear it down (bollard 0.21).
//!
//! Every container made here carries the label `threadcycle.managed=true` plus the caller's
//! labels (the Writer adds `threadcycle.cycle` and `threadcycle.model`), so containers left
//! behind by a crashed run can be found and removed by label.

mod cgroup;
mod containers;
mod error;
mod events;
mod gpu_probe;
mod image;
mod logs;
mod spec;
mod state;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;

use std::time::Duration;

use bollard::Docker;

pub use error::DockerError;
pub use events::{OomEvent, OomWatch};
pub use gpu_probe::{ContainerGpu, GPU_PROBE_PURPOSE, GPU_QUERY, GpuProbe};
pub use image::{ImagePull, PullFailure, PullProgress};
pub use spec::{ContainerSpec, RunningContainer};
pub use state::{ContainerState, ContainerStats};

use error::{fmt_duration, is_not_found};

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

/// The Docker engine, reached through its API.
#[derive(Debug, Clone)]
pub struct DockerRuntime {
    docker: Docker,
}

impl DockerRuntime {
    /// Connect to the local engine (or `DOCKER_HOST`) and check that it answers a ping.
    pub async fn connect() -> Result<Self, DockerError> {
        let host = std::env::var("DOCKER_HOST").ok().filter(|h| !h.trim().is_empty());
        let socket = error::engine_address();
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

    /// [`DockerRuntime::connect`], waiting up to `patience` for an engine that does not answer
    /// (dockerd restarting: its socket is gone or refuses for a few seconds), retrying after
    /// 0.5 s, doubling to 5 s. The last error when it never answers.
    pub async fn connect_waiting(patience: Duration) -> Result<Self, DockerError> {
        let start = std::time::Instant::now();
        let mut pause = Duration::from_millis(500);
        loop {
            match Self::connect().await {
                Err(e) if start.elapsed() + pause < patience => {
                    if pause == Duration::from_millis(500) {
                        tracing::warn!(message = "Docker engine not answering; waiting for it.", error = %e, patience_s = patience.as_secs());
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                other => return other,
            }
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
}
