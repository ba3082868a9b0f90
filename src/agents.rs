//! `threadcycle agent <role>`: one agent process — connect, open the bus, heartbeat, run the
//! role's phase until SIGTERM or Ctrl-C.

use crate::nats_args::NatsArgs;
use anyhow::{Context, Result};
use handoffs::{Bus, ConsumeStats, connect};
use protocol::{HostId, Role};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The default folder for engine pid and log files.
pub fn default_run_dir() -> PathBuf {
    std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir).join("threadcycle")
}

/// Resolves to `true` when SIGTERM or SIGINT arrives.
pub fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(error) => {
                tracing::warn!(message = "SIGTERM handler unavailable.", %error);
                let _ = tokio::signal::ctrl_c().await;
                let _ = tx.send(true);
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!(message = "Shutting down.");
        let _ = tx.send(true);
    });
    rx
}

/// How long an agent may take to stop once told to.
const STOP_DEADLINE: Duration = Duration::from_secs(20);

/// Past [`STOP_DEADLINE`] after the stop signal, exits, a Writer first stopping the engines it
/// recorded in `engines`: a stop must never hang, e.g. on a NATS server that went away at the
/// same moment (when `up` is killed, the kernel stops its agents and its server together).
fn exit_if_stop_hangs(mut shutdown: watch::Receiver<bool>, engines: Option<PathBuf>) {
    tokio::spawn(async move {
        if shutdown.wait_for(|stop| *stop).await.is_err() {
            return;
        }
        tokio::time::sleep(STOP_DEADLINE).await;
        tracing::warn!(message = "Did not stop in time; exiting.", after_s = STOP_DEADLINE.as_secs());
        if let Some(dir) = engines {
            host::process::reap_stale(&dir);
        }
        std::process::exit(1);
    });
}

/// Runs one agent until it is told to stop.
pub async fn run(
    nats: &NatsArgs,
    host: &str,
    role: Role,
    out: PathBuf,
    run_dir: Option<PathBuf>,
    host_profile: Option<PathBuf>,
) -> Result<u8> {
    let host = HostId::parse(host).context("--host")?;
    let profile = match (&host_profile, role) {
        (None, _) => None,
        (Some(p), Role::Reader) => Some(agent_reader::profile::load(p).context("--host-profile")?),
        (Some(_), _) => anyhow::bail!("--host-profile is for the reader, which predicts fit; `{role}` does not use it"),
    };
    let url = nats.url_or_default();
    let shutdown = shutdown_signal();
    exit_if_stop_hangs(
        shutdown.clone(),
        (role == Role::Writer).then(|| run_dir.clone().unwrap_or_else(default_run_dir)),
    );
    if !crate::supervise::follow_supervisor() {
        tracing::warn!(message = "`threadcycle up`, which started this agent, is gone; not starting.");
        return Ok(0);
    }
    let client = connect(&nats.config(&url, &format!("threadcycle-{role}"), true)).await?;
    let bus = loop {
        match Bus::open_replicated(client.clone(), role, host.clone(), nats.replicas.map(usize::from)).await {
            Ok(b) => break b,
            Err(error) => {
                tracing::warn!(message = "JetStream not ready; retrying.", %error);
                if *shutdown.borrow() {
                    return Ok(0);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let heartbeat = bus.spawn_heartbeat(Duration::from_secs(5));
    tracing::info!(message = "Agent started.", %role, %host, nats = %url);
    let stats = Arc::new(ConsumeStats::default());
    let r = match role {
        Role::Main => agent_main::agent::run(bus, shutdown, stats).await,
        Role::Reader => agent_reader::agent::run_with_profile(bus, profile, shutdown, stats).await,
        Role::Writer => {
            let cfg = agent_writer::agent::WriterConfig { run_dir: run_dir.unwrap_or_else(default_run_dir) };
            agent_writer::agent::run(bus, cfg, shutdown, stats).await
        }
        Role::Debug => agent_debug::agent::run(bus, shutdown, stats).await,
        Role::Documentation => {
            agent_documentation::agent::run(
                bus,
                agent_documentation::agent::DocsConfig { out_root: out },
                shutdown,
                stats,
            )
            .await
        }
        Role::Operator => anyhow::bail!("`operator` is not an agent: use main, reader, writer, debug or documentation"),
    };
    heartbeat.abort();
    // Bounded: the server may have gone at the same moment (`up` killed takes both).
    let _ = tokio::time::timeout(Duration::from_secs(5), client.flush()).await;
    r?;
    Ok(0)
}
