//! Test support: connect as a user while watching the server's error lines, and probe a
//! running server with every action each user must NOT be allowed (forbidden publishes and
//! subscriptions, strangers, wrong passwords), counting what it refuses (the figures in
//! `docs/RELIABILITY.md`). Not part of the product: it lives with the tests.

use handoffs::security::{self, Credential, USERS};
use protocol::subjects as subj;
use protocol::{CycleId, HostId, Role};
use std::path::Path;
use std::time::Duration;

/// Concrete subjects `role` must NOT be able to publish to (handoffs meant for others' senders,
/// other roles' events, dead letters, ledger and heartbeat keys, other buckets, the operator
/// service, stream management). Destructive API probes name a stream that does not exist, so
/// a hole found by [`probe`] cannot destroy anything.
pub(crate) fn forbidden_publishes(role: Role) -> Vec<String> {
    let cycle = CycleId::parse("probe").expect("a valid cycle id");
    let host = HostId::local();
    let mut v = Vec::new();
    // Every receiver with every sender token: another role's token is a forgery.
    for to in Role::AGENTS {
        for from in USERS {
            v.push(subj::handoff(from, to, &host, &cycle));
        }
    }
    // Purging the blob store (a hole would find an invalid request body, not purge).
    v.push(format!("$JS.API.STREAM.PURGE.OBJ_{}", subj::BLOB_BUCKET));
    v.push(format!("$JS.API.STREAM.MSG.DELETE.OBJ_{}", subj::BLOB_BUCKET));
    for other in USERS {
        if other != role {
            v.push(subj::event(&cycle, other));
            v.push(subj::dead_letter(other));
            v.push(format!("$KV.{}.{}.probe", subj::LEDGER_BUCKET, other.as_str()));
            v.push(format!("$KV.{}.{}", subj::HEARTBEATS_BUCKET, other.as_str()));
        }
    }
    for b in [subj::CYCLES_BUCKET, subj::ESCALATIONS_BUCKET, subj::RESULTS_BUCKET] {
        v.push(format!("$KV.{b}.probe"));
    }
    v.push(subj::OPERATOR_SUBJECT.into());
    v.push(format!("_INBOX.probe.{}", role.as_str()));
    for api in ["STREAM.DELETE", "STREAM.UPDATE", "STREAM.PURGE", "STREAM.MSG.DELETE", "CONSUMER.DURABLE.CREATE"] {
        v.push(format!("$JS.API.{api}.TC_PROBE_NONEXISTENT"));
    }
    v.push("$JS.API.STREAM.CREATE.TC_PROBE_NONEXISTENT".into());
    for to in Role::AGENTS {
        if to != role {
            v.push(format!("$JS.API.CONSUMER.CREATE.{}.probe.{}", subj::HANDOFF_STREAM, subj::handoffs_to(to)));
        }
    }
    v.push(format!("$JS.API.CONSUMER.CREATE.{}", subj::HANDOFF_STREAM));
    let p = security::permissions(role);
    v.retain(|s| !p.may_publish(s));
    v
}

/// Concrete subjects `role` must NOT be able to subscribe to.
pub(crate) fn forbidden_subscriptions(role: Role) -> Vec<String> {
    let mut v = vec![
        subj::OPERATOR_SUBJECT.to_string(),
        subj::HANDOFF_WILDCARD.into(),
        "tc.handoff.main.probe".into(),
        "$JS.ACK.>".into(),
        ">".into(),
        "_INBOX.>".into(),
    ];
    // Other users' replies.
    for other in USERS {
        if other != role {
            v.push(format!("{}.>", subj::inbox_prefix(other.as_str())));
        }
    }
    if role != Role::Operator {
        v.push(subj::EVENT_WILDCARD.into());
    }
    let p = security::permissions(role);
    v.retain(|s| !p.may_subscribe(s));
    v
}

/// What [`probe`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ProbeReport {
    /// Forbidden publishes attempted.
    pub publishes_attempted: u32,
    /// Of those, refused by the server.
    pub publishes_refused: u32,
    /// Forbidden subscriptions attempted.
    pub subscriptions_attempted: u32,
    /// Of those, refused by the server.
    pub subscriptions_refused: u32,
    /// Connections without credentials or with a wrong password attempted.
    pub bad_logins_attempted: u32,
    /// Of those, refused.
    pub bad_logins_refused: u32,
    /// `user: subject` for every forbidden action the server did NOT refuse.
    pub holes: Vec<String>,
}

impl ProbeReport {
    /// One line per figure, for `docs/RELIABILITY.md`.
    pub(crate) fn lines(&self) -> String {
        format!(
            "forbidden publishes refused: {}/{}\nforbidden subscriptions refused: {}/{}\nbad logins refused: {}/{}\nholes: {}\n",
            self.publishes_refused,
            self.publishes_attempted,
            self.subscriptions_refused,
            self.subscriptions_attempted,
            self.bad_logins_refused,
            self.bad_logins_attempted,
            if self.holes.is_empty() { "none".to_string() } else { self.holes.join(", ") }
        )
    }
}

fn probe_options(tls_ca: Option<&Path>) -> async_nats::ConnectOptions {
    let mut o = async_nats::ConnectOptions::new().connection_timeout(Duration::from_secs(5)).max_reconnects(Some(0));
    if let Some(ca) = tls_ca {
        o = o.add_root_certificates(ca.to_path_buf()).require_tls(true);
    }
    o
}

/// Connects as `cred` with an event channel that carries the server's error lines
/// (`Permissions Violation for Publish to "…"`), for tests and [`probe`].
pub(crate) async fn connect_watching_errors(
    url: &str,
    cred: &Credential,
    tls_ca: Option<&Path>,
) -> Result<(async_nats::Client, tokio::sync::mpsc::UnboundedReceiver<String>), String> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let client = probe_options(tls_ca)
        .custom_inbox_prefix(handoffs::inbox_prefix_for(Some(cred.user())))
        .user_and_password(cred.user().into(), cred.password().to_string())
        .name(format!("threadcycle-probe-{}", cred.user()))
        .event_callback(move |ev| {
            let tx = tx.clone();
            async move {
                if let async_nats::Event::ServerError(e) = ev {
                    let _ = tx.send(e.to_string());
                }
            }
        })
        .connect(url)
        .await
        .map_err(|e| format!("cannot connect to NATS at {url} as `{}`: {e}", cred.user()))?;
    Ok((client, rx))
}

/// Waits up to `within` for a server error line containing `needle` (case-insensitive).
pub(crate) async fn refused(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    needle: &str,
    within: Duration,
) -> bool {
    let needle = needle.to_lowercase();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(line)) if line.to_lowercase().contains(&needle) => return true,
            Ok(Some(_)) => continue,
            _ => return false,
        }
    }
}

/// Connects as every user in `creds` and tries every forbidden publish and subscription of
/// its role, then tries to log in with no credentials and with a wrong password; counts what the
/// server refused. A forbidden publish carries a payload that is not a package, so even a hole
/// would only produce a dead letter. Each refusal arrives within milliseconds; a hole costs
/// `wait` before it is counted.
pub(crate) async fn probe(
    url: &str,
    creds: &[Credential],
    tls_ca: Option<&Path>,
    wait: Duration,
) -> Result<ProbeReport, String> {
    let mut r = ProbeReport::default();
    for cred in creds {
        let (client, mut errors) = connect_watching_errors(url, cred, tls_ca).await?;
        for subject in forbidden_publishes(cred.role) {
            r.publishes_attempted += 1;
            let sent = client.publish(subject.clone(), "threadcycle-permission-probe".into()).await.is_ok();
            let _ = client.flush().await;
            if sent && refused(&mut errors, &format!("Permissions Violation for Publish to \"{subject}\""), wait).await
            {
                r.publishes_refused += 1;
            } else {
                r.holes.push(format!("{} publish {subject}", cred.user()));
            }
        }
        for subject in forbidden_subscriptions(cred.role) {
            r.subscriptions_attempted += 1;
            let sub = client.subscribe(subject.clone()).await;
            let _ = client.flush().await;
            if sub.is_ok()
                && refused(&mut errors, &format!("Permissions Violation for Subscription to \"{subject}\""), wait).await
            {
                r.subscriptions_refused += 1;
            } else {
                r.holes.push(format!("{} subscribe {subject}", cred.user()));
            }
        }
        drop(client);
    }
    // Strangers.
    let attempts: Vec<Option<(String, String)>> = vec![
        None,
        Some(("main".into(), "not-the-password".into())),
        Some(("operator".into(), String::new())),
        Some(("nobody".into(), "x".into())),
    ];
    for a in attempts {
        r.bad_logins_attempted += 1;
        let mut o = probe_options(tls_ca);
        if let Some((u, p)) = &a {
            o = o.user_and_password(u.clone(), p.clone());
        }
        let outcome = tokio::time::timeout(Duration::from_secs(10), async {
            let c = o.connect(url).await?;
            // Some servers admit the socket and refuse at the first round trip.
            c.flush().await.map_err(|e| std::io::Error::other(e.to_string()))?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(c)
        })
        .await;
        match outcome {
            Ok(Ok(_)) => r.holes.push(format!("login as {}", a.map(|(u, _)| u).unwrap_or_else(|| "anonymous".into()))),
            _ => r.bad_logins_refused += 1,
        }
    }
    Ok(r)
}

#[test]
fn every_role_has_forbidden_probes_and_they_are_forbidden() {
    for role in USERS {
        let f = forbidden_publishes(role);
        assert!(f.len() >= 20, "{role}: {}", f.len());
        assert!(!forbidden_subscriptions(role).is_empty());
    }
    assert!(
        forbidden_publishes(Role::Documentation).contains(&"tc.handoff.reader.documentation.local.probe".to_string())
    );
    assert!(forbidden_publishes(Role::Reader).contains(&"tc.handoff.documentation.reader.probe".to_string()));
    assert!(forbidden_publishes(Role::Writer).contains(&"tc.handoff.debug.main.probe".to_string()));
    assert!(forbidden_subscriptions(Role::Writer).contains(&"_INBOX.main.>".to_string()));
}
