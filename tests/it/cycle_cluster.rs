//! A NATS cluster for users who outgrow one server: three `nats-server` nodes on loopback joined
//! by routes (each with its own store and `sync_interval: always`), the agents given all three
//! URLs and `THREADCYCLE_NATS_REPLICAS=3`. Mid-benchmark the node leading the handoff stream is
//! SIGKILLed and stays down: the cycle completes on the other two with every result exactly
//! once, in the reports and in the replicated `tc_results` bucket.

use super::cycle_crash::{Cluster, crash_plan, no_engine_left};
use super::support::*;
use handoffs::server::NatsCluster;
use protocol::operator::CycleState;
use protocol::results::ModelResult;
use protocol::subjects as subj;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A stream as the cluster reports it.
#[derive(Debug, Clone)]
struct StreamState {
    name: String,
    /// Configured copies.
    replicas: usize,
    /// The server leading it, if one is elected.
    leader: Option<String>,
    /// Peers besides the leader that are current.
    current_peers: usize,
}

/// Every stream and bucket the agents create.
fn stream_names() -> Vec<String> {
    let mut v: Vec<String> =
        [subj::HANDOFF_STREAM, subj::EVENT_STREAM, subj::DEAD_LETTER_STREAM].iter().map(|s| s.to_string()).collect();
    for b in [
        subj::LEDGER_BUCKET,
        subj::CYCLES_BUCKET,
        subj::ESCALATIONS_BUCKET,
        subj::RESULTS_BUCKET,
        subj::HEARTBEATS_BUCKET,
    ] {
        v.push(format!("KV_{b}"));
    }
    v.push(format!("OBJ_{}", subj::BLOB_BUCKET));
    v
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(f)
}

async fn jetstream(urls: &str) -> async_nats::jetstream::Context {
    let cfg = handoffs::ConnectConfig { url: urls.into(), name: "cycle-cluster-test".into(), ..Default::default() };
    async_nats::jetstream::new(handoffs::connect(&cfg).await.expect("connect to the cluster"))
}

/// What the cluster says about every stream (retried while a leader is being elected).
fn streams(urls: &str) -> Vec<StreamState> {
    block_on(async {
        let js = jetstream(urls).await;
        let mut out = Vec::new();
        for name in stream_names() {
            let deadline = Instant::now() + Duration::from_secs(30);
            let info = loop {
                let got = match js.get_stream(&name).await {
                    Ok(mut s) => s.info().await.cloned().map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                match got {
                    Ok(i) => break i,
                    Err(e) => {
                        assert!(Instant::now() < deadline, "stream {name} unreadable on the cluster: {e}");
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                }
            };
            let cluster = info.cluster.clone().unwrap_or_default();
            out.push(StreamState {
                name,
                replicas: info.config.num_replicas,
                leader: cluster.leader.clone(),
                current_peers: cluster.replicas.iter().filter(|p| p.current && !p.offline).count(),
            });
        }
        out
    })
}

/// The cycle's measured runs as stored in the replicated `tc_results` bucket (key `<cycle>.0`),
/// counted per prompt × repetition.
fn stored_runs(urls: &str, cycle: &str) -> BTreeMap<(String, u32), u64> {
    block_on(async {
        let js = jetstream(urls).await;
        let kv = js.get_key_value(subj::RESULTS_BUCKET).await.expect("tc_results bucket");
        let entry = kv.get(format!("{cycle}.0")).await.expect("read tc_results").expect("the model's result is stored");
        let m: ModelResult = serde_json::from_slice(&entry).expect("a ModelResult");
        let mut seen = BTreeMap::new();
        for r in &m.runs {
            *seen.entry((r.prompt_id.clone(), r.repetition)).or_insert(0) += 1;
        }
        seen
    })
}

#[test]
fn the_handoff_stream_leader_killed_mid_cycle_on_a_three_node_cluster_loses_nothing() {
    require_parts();
    let _serial = serial();
    let mut s = Scenario::new("the_handoff_stream_leader_killed_mid_cycle_on_a_three_node_cluster_loses_nothing");
    let started = Instant::now();
    let tmp = tempfile::tempdir().expect("tmp");
    let mut nodes = NatsCluster::start_in(&tmp.path().join("nats"), 3, "").expect("three nats-servers (make nats)");
    let urls = nodes.urls();
    let names: Vec<String> = nodes.nodes.iter().map(|n| n.server_name()).collect();
    let mut c = Cluster::start_on(tmp.path(), std::mem::take(&mut nodes.nodes), &[("THREADCYCLE_NATS_REPLICAS", "3")]);
    let cycle = c.start_cycle(&crash_plan(tmp.path()));

    // Every stream and bucket the agents created holds three copies.
    for st in streams(&urls) {
        assert_eq!(st.replicas, 3, "{st:?}");
        assert!(st.leader.as_ref().is_some_and(|l| names.contains(l)), "{st:?} has no leader among {names:?}");
    }
    c.wait_for(&cycle, "the first measured requests", 180, |r| r.requests_done >= 2);
    let before = streams(&urls);
    // All three copies are current before the kill (a leader and two peers in step).
    for st in &before {
        assert_eq!(st.current_peers, 2, "{st:?}");
    }
    let handoffs = before.iter().find(|st| st.name == subj::HANDOFF_STREAM).expect("handoff stream");
    let leader = handoffs.leader.clone().expect("a handoff stream leader");
    let victim = names.iter().position(|n| *n == leader).expect("the leader is a node");
    let led: Vec<&str> =
        before.iter().filter(|st| st.leader.as_deref() == Some(leader.as_str())).map(|st| st.name.as_str()).collect();
    c.node_mut(victim).kill();
    s.fault();
    s.note("nodes", names.len());
    s.note("leaderships_lost", led.len());

    let rec = c.wait_for(&cycle, "completion with one node down", 300, |r| r.state == CycleState::Completed);
    assert!(rec.report_dir.is_some(), "{rec:?}");
    s.check_exactly_once(&c.out, &cycle, &["hello", "second", "third"], 2);
    // The replicated bucket, read from the two nodes left: every run once.
    let stored = stored_runs(&urls, &cycle);
    let expected: Vec<(String, u32)> =
        ["hello", "second", "third"].iter().flat_map(|p| (1..=2u32).map(move |r| (p.to_string(), r))).collect();
    let twice: Vec<_> = stored.iter().filter(|(_, n)| **n > 1).collect();
    let missing: Vec<_> = expected.iter().filter(|k| !stored.contains_key(*k)).collect();
    assert!(twice.is_empty() && missing.is_empty(), "tc_results: twice {twice:?}, missing {missing:?}");
    assert_eq!(stored.len(), expected.len(), "tc_results holds runs the plan never asked for: {stored:?}");
    // Every stream the dead node led has a new leader on a live node.
    let after = streams(&urls);
    for st in &after {
        assert!(st.leader.as_ref().is_some_and(|l| *l != leader && names.contains(l)), "{st:?} (killed {leader})");
    }
    no_engine_left(&c.run_dir);
    println!(
        "cluster kill: nodes {}, killed the handoff stream leader {leader} (leading {} of {} streams: {}), tc_results runs {} of {}, cycles completed 1, {:.0} s",
        names.len(),
        led.len(),
        before.len(),
        led.join(" "),
        stored.len(),
        expected.len(),
        started.elapsed().as_secs_f64()
    );
    s.note("secs", format!("{:.0}", started.elapsed().as_secs_f64()));
}
