//! Handoff latency over JetStream with file storage: publish → durable consumer → handler →
//! ledger record → double ack, against a private `nats-server` on loopback (`sync_interval:
//! always`, so every stored message, KV write and ack is fsync'd).
//!
//! ```text
//! PATH=$PWD/.venv/bin:$PATH cargo bench -p threadcycle-handoffs --bench handoff_latency
//! HANDOFF_BENCH_N=5000 cargo bench -p threadcycle-handoffs --bench handoff_latency
//! HANDOFF_BENCH_STORE=/dev/shm cargo bench -p threadcycle-handoffs --bench handoff_latency   # no disk
//! HANDOFF_BENCH_CLUSTER=0 cargo bench -p threadcycle-handoffs --bench handoff_latency   # one server only
//! ```
//!
//! Each run is done twice in one invocation: on one server, then on a three-node cluster on
//! loopback (routes between three `nats-server` processes, each with its own store and
//! `sync_interval: always`; streams and buckets replicated 3 times, `--nats-replicas 3`), the
//! publisher and Main's consumer given all three URLs. On the cluster a package is stored once
//! a majority (2 of 3) has written it, so the difference is the replication's cost.
//!
//! Three runs, each with its own packages (Documentation → Main, ~230 bytes of JSON):
//!
//! 1. **spaced** — one package at a time, 5 ms idle after each (handoffs in a real cycle are
//!    seconds apart, so the previous package's ledger write and ack are finished). Per package:
//!    publish → stored (JetStream's PubAck), publish → handler saw it (*the handoff latency*), and
//!    their difference, stored → handler (the consumer's delivery alone; 0 when the delivery
//!    overtook the PubAck on its way back to the publisher).
//! 2. **back-to-back** — the next package is published as soon as the handler saw the previous
//!    one; Main's consumer takes one package at a time (`max_ack_pending = 1`), so each sample
//!    also waits for the previous package's ledger record and double ack.
//! 3. **throughput** — all packages published at once (64 in flight); packages/s from the first
//!    publish to the last one recorded in the ledger.
//!
//! The first 20 packages of each run are a warm-up and are not counted.

use handoffs::server::{NatsCluster, NatsServer};
use handoffs::{Bus, ConnectConfig, ConsumeStats, Handled, Handler, connect, consume};
use protocol::messages::ReportsPublished;
use protocol::{CycleId, Envelope, HostId, Payload, Role};
use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::{mpsc, watch};

type Res<T> = Result<T, Box<dyn Error>>;

const WARMUP: usize = 20;

/// Records when each package reached the handler.
struct Stamp(mpsc::UnboundedSender<(String, Instant)>);

impl Handler for Stamp {
    async fn handle(&self, env: Envelope) -> Handled {
        let _ = self.0.send((env.id.to_string(), Instant::now()));
        Ok(())
    }
}

fn package(cycle: &CycleId, i: usize) -> Envelope {
    Envelope::new(
        cycle.clone(),
        Role::Documentation,
        Role::Main,
        None,
        Payload::ReportsPublished(ReportsPublished {
            dir: format!("docs-out/{cycle}"),
            files: vec![format!("report-{i}.md")],
            measured: 1,
            not_measured: 0,
            aborted: None,
        }),
    )
}

/// A bus for `role` on the servers `urls`; retried while a cluster elects its leaders.
async fn bus(urls: &str, role: Role, replicas: Option<usize>) -> Res<Bus> {
    let client =
        connect(&ConnectConfig { url: urls.into(), name: format!("bench-{role}"), ..Default::default() }).await?;
    let t = Instant::now();
    loop {
        match Bus::open_replicated(client.clone(), role, HostId::local(), replicas).await {
            Ok(b) => return Ok(b),
            Err(e) if t.elapsed() < Duration::from_secs(60) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(format!("JetStream not ready after 60 s: {e}").into()),
        }
    }
}

/// Percentiles of a sample, ms.
struct Dist {
    n: usize,
    mean: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

impl Dist {
    fn of(xs: &[Duration]) -> Dist {
        let mut ms: Vec<f64> = xs.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| {
            if ms.is_empty() {
                return f64::NAN;
            }
            // Nearest rank.
            let rank = ((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len());
            ms[rank - 1]
        };
        Dist {
            n: ms.len(),
            mean: ms.iter().sum::<f64>() / ms.len().max(1) as f64,
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: ms.last().copied().unwrap_or(f64::NAN),
        }
    }

    fn row(&self, what: &str) {
        println!(
            "| {what} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
            self.n, self.p50, self.p90, self.p99, self.max, self.mean
        );
    }
}

/// Waits for the handler's stamp of package `id`.
async fn receipt(rx: &mut mpsc::UnboundedReceiver<(String, Instant)>, id: &str) -> Res<Instant> {
    loop {
        let got =
            tokio::time::timeout(Duration::from_secs(30), rx.recv()).await.map_err(|_| "no delivery within 30 s")?;
        let (gid, at) = got.ok_or("the consumer stopped")?;
        if gid == id {
            return Ok(at);
        }
    }
}

async fn wait_applied(stats: &ConsumeStats, n: u64, limit: Duration) -> Res<Duration> {
    let t = Instant::now();
    while stats.applied.load(Ordering::Relaxed) < n {
        if t.elapsed() > limit {
            return Err(format!(
                "only {} of {n} packages applied after {limit:?}",
                stats.applied.load(Ordering::Relaxed)
            )
            .into());
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    Ok(t.elapsed())
}

fn nats_version() -> String {
    handoffs::server::find_binary()
        .ok()
        .and_then(|b| std::process::Command::new(b).arg("--version").output().ok())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

async fn run() -> Res<()> {
    let n: usize = std::env::var("HANDOFF_BENCH_N").ok().and_then(|s| s.parse().ok()).unwrap_or(2000);
    // HANDOFF_BENCH_STORE puts the store elsewhere, e.g. on tmpfs (/dev/shm), where fsync costs
    // nothing: the difference to the default run is what the disk adds.
    let store = std::env::var("HANDOFF_BENCH_STORE").ok().filter(|s| !s.is_empty());
    let cluster = std::env::var("HANDOFF_BENCH_CLUSTER").map_or(true, |v| v != "0");
    let dir = match &store {
        Some(base) => tempfile::Builder::new().prefix("threadcycle-bench-").tempdir_in(base)?,
        None => tempfile::Builder::new().prefix("threadcycle-bench-").tempdir()?,
    };
    println!("# Handoff latency");
    println!();
    println!(
        "nats-server {} (JetStream file storage under {}, `sync_interval: always`: fsync on every write); {} CPUs; {n} packages per run, first {WARMUP} not counted",
        nats_version(),
        dir.path().display(),
        std::thread::available_parallelism().map(|p| p.get()).unwrap_or(0),
    );
    let mut goals = Vec::new();
    {
        let server = NatsServer::start_in(&dir.path().join("one"), "")?;
        println!();
        println!("## One server ({})", server.url());
        goals.extend(measure("one server", &server.url(), None, n).await?);
    }
    if cluster {
        let nodes = NatsCluster::start_in(&dir.path().join("cluster"), 3, "")?;
        println!();
        println!("## Three-node cluster, streams and buckets replicated 3 times ({})", nodes.urls());
        goals.extend(measure("3-node cluster, R3", &nodes.urls(), Some(3), n).await?);
    }
    println!();
    for g in goals {
        println!("{g}");
    }
    Ok(())
}

/// The three runs on the servers `urls`; returns the goal lines.
async fn measure(target: &str, urls: &str, replicas: Option<usize>, n: usize) -> Res<Vec<String>> {
    let docs = bus(urls, Role::Documentation, replicas).await?;
    let main = bus(urls, Role::Main, replicas).await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let stats = Arc::new(ConsumeStats::default());
    let (stop, shutdown) = watch::channel(false);
    let consumer = {
        let stats = stats.clone();
        tokio::spawn(async move { consume(&main, shutdown, stats, &Stamp(tx)).await })
    };
    let mut applied = 0u64;

    // 1 and 2: one package at a time.
    let mut table: Vec<(String, Dist)> = Vec::new();
    for (name, gap) in [("spaced (5 ms idle between packages)", Some(Duration::from_millis(5))), ("back-to-back", None)]
    {
        let cycle = CycleId::parse(if gap.is_some() { "bench-spaced" } else { "bench-b2b" })?;
        let (mut stored, mut seen, mut hop) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        let mut not_done = 0usize;
        let t_run = Instant::now();
        for i in 0..n {
            let env = package(&cycle, i);
            let id = env.id.to_string();
            let t0 = Instant::now();
            docs.publish(&env).await?;
            let t_stored = t0.elapsed();
            let at = receipt(&mut rx, &id).await?;
            applied += 1;
            if i >= WARMUP {
                stored.push(t_stored);
                seen.push(at.saturating_duration_since(t0));
                hop.push(at.saturating_duration_since(t0 + t_stored));
            }
            if let Some(g) = gap {
                tokio::time::sleep(g).await;
                if stats.applied.load(Ordering::Relaxed) < applied {
                    not_done += 1;
                }
            }
        }
        wait_applied(&stats, applied, Duration::from_secs(30)).await?;
        let wall = t_run.elapsed();
        println!();
        println!(
            "### {name}: {n} packages in {:.2} s ({:.0} packages/s)",
            wall.as_secs_f64(),
            n as f64 / wall.as_secs_f64()
        );
        if gap.is_some() {
            println!("(ledger record not yet written 5 ms after receipt: {not_done} times)");
        }
        println!();
        println!("| latency | n | p50 ms | p90 ms | p99 ms | max ms | mean ms |");
        println!("|---|---|---|---|---|---|---|");
        let d_stored = Dist::of(&stored);
        let d_seen = Dist::of(&seen);
        d_stored.row("publish → stored (PubAck)");
        d_seen.row("publish → handler saw it");
        Dist::of(&hop).row("stored → handler saw it (delivery only)");
        table.push((name.to_string(), d_seen));
    }

    // 3: throughput.
    let cycle = CycleId::parse("bench-throughput")?;
    let envs: Vec<Envelope> = (0..n).map(|i| package(&cycle, i)).collect();
    let t0 = Instant::now();
    let published: Vec<_> =
        futures::stream::iter(envs.iter().map(|e| docs.publish(e))).buffer_unordered(64).collect().await;
    let t_pub = t0.elapsed();
    for p in published {
        p?;
    }
    applied += n as u64;
    wait_applied(&stats, applied, Duration::from_secs(600)).await?;
    let t_all = t0.elapsed();
    while rx.try_recv().is_ok() {}
    println!();
    println!("### throughput: {n} packages published 64 at a time");
    println!();
    println!(
        "- all stored (PubAck) after {:.2} s: {:.0} packages/s published",
        t_pub.as_secs_f64(),
        n as f64 / t_pub.as_secs_f64()
    );
    println!(
        "- all handled and recorded in the ledger after {:.2} s: {:.0} packages/s end to end ({:.3} ms per package through Main's consumer)",
        t_all.as_secs_f64(),
        n as f64 / t_all.as_secs_f64(),
        t_all.as_secs_f64() * 1000.0 / n as f64
    );
    println!(
        "- consumer counters: applied {} (expected {}), duplicates {}, dead letters {}, retries {}",
        stats.applied.load(Ordering::Relaxed),
        applied,
        stats.duplicates.load(Ordering::Relaxed),
        stats.dead_letters.load(Ordering::Relaxed),
        stats.retries.load(Ordering::Relaxed),
    );
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), consumer).await;

    Ok(table
        .iter()
        .map(|(name, d)| {
            let verdict = if d.p99 < 5.0 { "MET" } else { "MISSED" };
            format!("goal p99 < 5 ms ({target}, {name}): p99 = {:.3} ms → {verdict}", d.p99)
        })
        .collect())
}

fn main() -> Res<()> {
    // `cargo bench` passes `--bench`; nothing to parse.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(run())
}
