//! What container to run and how, and its translation into the engine API's create body.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{ContainerCreateBody, DeviceRequest, HostConfig, PortBinding};
use protocol::plan::GpuRequest;

use super::MANAGED_LABEL;

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
    pub(super) fn to_create_body(&self) -> ContainerCreateBody {
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
