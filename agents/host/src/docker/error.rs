//! What can go wrong talking to the Docker engine, worded in the user's terms, and the helpers
//! that classify the engine's refusals.

use std::time::Duration;

use bollard::errors::Error as BollardError;

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
    /// Pulling the image from its registry failed.
    #[error("could not pull image `{image}`: {} (engine: {message}); to try by hand: `docker pull {image}`", .kind.advice())]
    PullFailed {
        /// The image reference.
        image: String,
        /// Why, as far as the engine's message tells.
        kind: super::image::PullFailure,
        /// The engine's message.
        message: String,
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
    /// Whether the Docker engine itself did not answer (no engine, or dockerd stopped or
    /// restarting mid-call), as opposed to an engine that answered with a refusal.
    pub fn engine_unreachable(&self) -> bool {
        match self {
            DockerError::NoEngine { .. } => true,
            DockerError::Api { source, .. } => is_unreachable(source),
            _ => false,
        }
    }

    /// The container's last log lines, when this error carries them.
    pub fn log_tail(&self) -> &[String] {
        match self {
            DockerError::Exited { log_tail, .. } | DockerError::NotHealthy { log_tail, .. } => log_tail,
            _ => &[],
        }
    }
}

/// The engine's own message for an API error, without bollard's wrapping; when the engine
/// did not answer at all, that, naming where it was looked for.
pub(super) fn engine_message(e: &BollardError) -> String {
    match e {
        BollardError::DockerResponseServerError { status_code, message } => {
            format!("{} (HTTP {status_code})", message.trim())
        }
        other if is_unreachable(other) => format!(
            "the Docker engine at {} did not answer: dockerd stopped or is restarting (its containers stop with it unless live-restore is on; check `systemctl status docker`) ({other})",
            engine_address()
        ),
        other => other.to_string(),
    }
}

/// Where the engine is reached: `DOCKER_HOST`, else the local socket.
pub(super) fn engine_address() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .unwrap_or_else(|| format!("unix://{}", super::DEFAULT_SOCKET))
}

/// Whether a bollard error means the engine did not answer (socket gone, connection refused or
/// cut, no response in time) rather than an answer from it.
pub(super) fn is_unreachable(e: &BollardError) -> bool {
    matches!(
        e,
        BollardError::IOError { .. }
            | BollardError::HyperResponseError { .. }
            | BollardError::HyperLegacyError { .. }
            | BollardError::SocketNotFoundError(_)
            | BollardError::RequestTimeoutError
    )
}

/// `"512 MiB"` / `"8 GiB"` rendering of a byte count.
pub(super) fn fmt_bytes(bytes: u64) -> String {
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
pub(super) fn fmt_duration(d: Duration) -> String {
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
pub(super) fn is_not_found(e: &BollardError) -> bool {
    matches!(e, BollardError::DockerResponseServerError { status_code: 404, .. })
}

/// Whether a bollard error is the engine's "409 conflict".
pub(super) fn is_conflict(e: &BollardError) -> bool {
    matches!(e, BollardError::DockerResponseServerError { status_code: 409, .. })
}

/// An engine error about one container: 404 is [`DockerError::NotFound`], anything else an
/// [`DockerError::Api`] error while doing `action`.
pub(super) fn container_error(action: &'static str, id: &str, e: BollardError) -> DockerError {
    if is_not_found(&e) {
        DockerError::NotFound { container: id.to_string() }
    } else {
        DockerError::Api { action, target: id.to_string(), source: e }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_engine_that_does_not_answer_is_named_and_told_from_a_refusal() {
        let gone = DockerError::Api {
            action: "inspect container",
            target: "c1".into(),
            source: BollardError::SocketNotFoundError("/run/d.sock".into()),
        };
        assert!(gone.engine_unreachable());
        let text = gone.to_string();
        assert!(text.contains("the Docker engine at ") && text.contains("dockerd stopped or is restarting"), "{text}");
        assert!(text.contains(&engine_address()), "{text}");
        let refused = DockerError::Api {
            action: "inspect container",
            target: "c1".into(),
            source: BollardError::DockerResponseServerError { status_code: 500, message: "boom".into() },
        };
        assert!(!refused.engine_unreachable());
        assert!(!refused.to_string().contains("did not answer"), "{refused}");
        assert!(DockerError::NoEngine { socket: "unix:///x".into(), detail: "gone".into() }.engine_unreachable());
    }
}
