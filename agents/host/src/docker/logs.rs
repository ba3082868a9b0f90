//! What a container says while it runs: its log tail and its `docker stats` figures.

use bollard::errors::Error as BollardError;
use bollard::query_parameters::{LogsOptionsBuilder, StatsOptionsBuilder};
use futures::{Stream, StreamExt};

use super::error::container_error;
use super::{ContainerStats, DockerError, DockerRuntime};

impl DockerRuntime {
    /// The last `lines` lines of the container's stdout and stderr, oldest first.
    pub async fn log_tail(&self, id: &str, lines: usize) -> Result<Vec<String>, DockerError> {
        let tail = lines.to_string();
        let options = LogsOptionsBuilder::default().stdout(true).stderr(true).follow(false).tail(&tail).build();
        let mut stream = self.docker.logs(id, Some(options));
        let mut out = Vec::new();
        while let Some(item) = stream.next().await {
            let chunk = item.map_err(|e| container_error("read the logs of container", id, e))?;
            let text = String::from_utf8_lossy(&chunk.into_bytes()).into_owned();
            let text = text.strip_suffix('\n').unwrap_or(&text);
            out.extend(text.split('\n').map(|l| l.trim_end_matches('\r').to_string()));
        }
        if out.len() > lines {
            out.drain(..out.len() - lines);
        }
        Ok(out)
    }

    /// A stats sample about every second until the container stops (the first has no CPU figure).
    pub fn stats_stream(&self, id: &str) -> impl Stream<Item = Result<ContainerStats, DockerError>> + Send + 'static {
        let options = StatsOptionsBuilder::default().stream(true).build();
        let id = id.to_string();
        self.docker
            .stats(&id, Some(options))
            .map(move |item| item.map(|r| ContainerStats::from_response(&r)).map_err(|e| stats_error(&id, e)))
    }
}

/// A stats error: 404 is "no such container".
fn stats_error(id: &str, e: BollardError) -> DockerError {
    container_error("read the stats of container", id, e)
}
