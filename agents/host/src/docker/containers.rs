//! Container lifecycle: create and start, wait until the engine inside answers or the
//! container stops, read its state, and remove it (by name or by label).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::errors::Error as BollardError;
use bollard::models::ContainerInspectResponse;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use futures::StreamExt;

use super::error::{container_error, engine_message, is_conflict, is_not_found};
use super::{
    ContainerSpec, ContainerState, DockerError, DockerRuntime, ERROR_LOG_LINES, MANAGED_LABEL, POLL_INTERVAL,
    RunningContainer,
};

impl DockerRuntime {
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
    pub(super) async fn create(&self, spec: &ContainerSpec) -> Result<String, DockerError> {
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
    pub(super) async fn inspect(&self, id: &str) -> Result<ContainerInspectResponse, DockerError> {
        self.docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .map_err(|e| container_error("inspect container", id, e))
    }

    /// The container's state: running, exit code, OOM kill, status, error, restarts.
    pub async fn state(&self, id: &str) -> Result<ContainerState, DockerError> {
        Ok(ContainerState::from_inspect(&self.inspect(id).await?))
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
            Ok(Some(Err(e))) => Err(container_error("wait for container", id, e)),
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
}
