//! `threadcycle agent <role>`: one agent process — connect, open the bus, heartbeat, run the
//! role's phase until SIGTERM or Ctrl-C.

use crate::cli::NatsArgs;
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
    if !crate::supervise::follow_supervisor() {
        tracing::warn!(message = "`threadcycle up`, which started this agent, is gone; not starting.");
        return Ok(0);
    }
    let client = connect(&nats.config(&url, &format!("threadcycle-{role}"), true)).await?;
    let bus = loop {
        match Bus::open(client.clone(), role, host.clone()).await {
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
    let _ = client.flush().await;
    r?;
    Ok(0)
}
