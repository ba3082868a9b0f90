//! A role's durable consumer loop: each package is applied once, or set aside with a reason.

use crate::routes::{self, PackageKind};
use crate::{Bus, BusError};
use async_nats::jetstream::{AckKind, consumer::pull};
use futures::StreamExt;
use protocol::Envelope;
use protocol::events::{Event, EventBody};
use protocol::subjects as subj;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// Why a handler did not finish a package.
#[derive(Debug)]
pub enum HandleError {
    /// Try again later (the package stays in the stream).
    Retry {
        /// Why.
        reason: String,
        /// When.
        after: Duration,
    },
    /// The package can never be applied: set it aside.
    Reject(String),
}

impl From<BusError> for HandleError {
    /// NATS trouble while handling a package is transient: leave it in the stream and retry
    /// (a full store later than a lost connection: room comes back when the operator acts).
    fn from(e: BusError) -> Self {
        let after = Duration::from_secs(if e.is_store_full() { 10 } else { 2 });
        HandleError::Retry { reason: e.to_string(), after }
    }
}

/// A handler finished; nothing else to say.
pub type Handled = Result<(), HandleError>;

/// What an agent does with each package addressed to it.
pub trait Handler: Send + Sync {
    /// Applies one package. Publishing done here must use ids derived from `env.id`.
    fn handle(&self, env: Envelope) -> impl std::future::Future<Output = Handled> + Send;
}

/// Counters kept by a consumer loop (shared, for tests and status).
#[derive(Debug, Default)]
pub struct ConsumeStats {
    /// Packages applied.
    pub applied: AtomicU64,
    /// Redelivered packages recognised and skipped.
    pub duplicates: AtomicU64,
    /// Packages set aside.
    pub dead_letters: AtomicU64,
    /// Retries requested.
    pub retries: AtomicU64,
}

/// How long the server waits for an ack before redelivering; progress acks extend it.
const ACK_WAIT: Duration = Duration::from_secs(30);

/// Runs `handler` on every package addressed to this bus's role until `shutdown` turns true.
///
/// Order of effects: decode → already in the ledger? (ack, skip) → handler → ledger record →
/// acknowledged ack. A crash anywhere before the ledger record means redelivery and a second
/// run of the handler, so handlers publish with ids derived from the package they handle.
pub async fn consume<H: Handler>(
    bus: &Bus,
    mut shutdown: watch::Receiver<bool>,
    stats: Arc<ConsumeStats>,
    handler: &H,
) -> Result<(), BusError> {
    let name = subj::consumer_name(bus.role, &bus.host);
    let filter = subj::handoff_filter(bus.role, &bus.host);
    while !*shutdown.borrow() {
        let messages = async {
            let stream =
                bus.js.get_stream(subj::HANDOFF_STREAM).await.map_err(|e| BusError::js("open handoff stream", e))?;
            let config = pull::Config {
                durable_name: Some(name.clone()),
                filter_subject: filter.clone(),
                ack_wait: ACK_WAIT,
                max_deliver: -1,
                max_ack_pending: 1,
                ..Default::default()
            };
            let mut consumer: async_nats::jetstream::consumer::PullConsumer = stream
                .get_or_create_consumer(&name, config.clone())
                .await
                .map_err(|e| BusError::js(format!("create consumer {name}"), e))?;
            if consumer.cached_info().config.filter_subject != filter {
                // A consumer made before the sender joined the subject: move it to today's filter
                // (its position and unacked packages are kept).
                tracing::info!(message = "Updating the handoff consumer's filter.", consumer = %name, %filter);
                consumer = stream
                    .update_consumer(config)
                    .await
                    .map_err(|e| BusError::js(format!("update consumer {name}"), e))?;
            }
            consumer.messages().await.map_err(|e| BusError::js(format!("read consumer {name}"), e))
        }
        .await;
        let mut messages = match messages {
            Ok(m) => m,
            Err(error) => {
                tracing::warn!(message = "Consumer unavailable; retrying.", %error);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = shutdown.changed() => break,
                }
            }
        };
        loop {
            let next = tokio::select! {
                m = messages.next() => m,
                _ = shutdown.changed() => return Ok(()),
            };
            let msg = match next {
                Some(Ok(m)) => m,
                Some(Err(error)) => {
                    tracing::warn!(message = "Consumer stream error; reopening.", %error);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    break;
                }
                None => break,
            };
            // Dropping the handler on shutdown drops what it holds (an engine process is stopped by
            // its Drop); the unacked package is redelivered to the next run.
            tokio::select! {
                _ = process_one(bus, &stats, handler, msg) => {}
                _ = shutdown.changed() => return Ok(()),
            }
        }
    }
    Ok(())
}

async fn process_one<H: Handler>(bus: &Bus, stats: &ConsumeStats, handler: &H, msg: async_nats::jetstream::Message) {
    let subject = msg.subject.to_string();
    let env = match Envelope::from_bytes(&msg.payload) {
        Ok(env) => env,
        Err(e) => return reject(bus, stats, &msg, &subject, &e.to_string(), None).await,
    };
    if env.to != bus.role {
        let reason = format!("package addressed to {} arrived at {}", env.to, bus.role);
        return reject(bus, stats, &msg, &subject, &reason, Some(&env)).await;
    }
    if let Err(reason) = check_sender(&subject, &env) {
        return reject(bus, stats, &msg, &subject, &reason, Some(&env)).await;
    }
    let claimed = env.from;
    let env = match bus.resolve(env).await {
        Ok(env) => env,
        Err(e) => return reject(bus, stats, &msg, &subject, &e.to_string(), None).await,
    };
    if env.from != claimed {
        let reason = format!("offloaded package claims {} as sender, its reference {claimed}", env.from);
        return reject(bus, stats, &msg, &subject, &reason, Some(&env)).await;
    }
    if let Err(reason) = check_sender(&subject, &env) {
        return reject(bus, stats, &msg, &subject, &reason, Some(&env)).await;
    }
    let key = format!("{}.{}", subj::consumer_name(bus.role, &bus.host), env.id);
    match bus.ledger.get::<serde_json::Value>(&key).await {
        Ok(Some(_)) => {
            stats.duplicates.fetch_add(1, Ordering::Relaxed);
            let _ = msg.double_ack().await;
            bus.event_best_effort(Event::new(
                env.cycle.clone(),
                bus.role,
                EventBody::DuplicateIgnored { id: env.id.to_string() },
            ))
            .await;
            return;
        }
        Ok(None) => {}
        Err(error) => {
            tracing::warn!(message = "Ledger unavailable; will retry the package.", %error);
            let _ = msg.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))).await;
            return;
        }
    }
    // Keep the package ours while a long handler runs (a model benchmark can take an hour).
    let keepalive = {
        let msg = msg.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(ACK_WAIT / 3).await;
                let _ = msg.ack_with(AckKind::Progress).await;
            }
        })
    };
    let kind = env.payload.kind();
    let id = env.id;
    let cycle = env.cycle.clone();
    let outcome = handler.handle(env).await;
    keepalive.abort();
    match outcome {
        Ok(()) => {
            let record = serde_json::json!({ "kind": kind, "cycle": cycle.as_str(), "applied_at": chrono::Utc::now() });
            // A full store holds the record back until there is room: the package was applied,
            // and a redelivery would run the handler again.
            if let Err(error) = crate::wait_for_room("the ledger record", || bus.ledger.create(&key, &record)).await {
                // Not recorded: leave it unacked so it is redelivered and recognised by its effects' ids.
                tracing::warn!(message = "Could not record an applied package.", %error, %id);
                return;
            }
            stats.applied.fetch_add(1, Ordering::Relaxed);
            if let Err(error) = msg.double_ack().await {
                tracing::warn!(message = "Ack not confirmed; the ledger will absorb the redelivery.", %error, %id);
            }
        }
        Err(HandleError::Retry { reason, after }) => {
            stats.retries.fetch_add(1, Ordering::Relaxed);
            tracing::info!(message = "Package will be retried.", %id, %reason);
            let _ = msg.ack_with(AckKind::Nak(Some(after))).await;
        }
        Err(HandleError::Reject(reason)) => {
            let _ = reject(bus, stats, &msg, &subject, &reason, None).await;
        }
    }
}

/// The sender is authenticated by the subject (the server lets each user publish only with its
/// own sender token): the envelope's `from` must be the subject's sender, and the sender must be
/// one that may send this kind of package (`routes::check_sender`, from the table the server's
/// permissions are made from).
pub(crate) fn check_sender(subject: &str, env: &Envelope) -> Result<(), String> {
    let Some((_, sender)) = subj::handoff_parties(subject) else {
        return Err(format!("subject {subject} names no known sender"));
    };
    if env.from != sender {
        return Err(format!(
            "package claims to be from {} but was published on {sender}'s subject {subject}",
            env.from
        ));
    }
    routes::check_sender(PackageKind::of(&env.payload), sender)
}

async fn reject(
    bus: &Bus,
    stats: &ConsumeStats,
    msg: &async_nats::jetstream::Message,
    subject: &str,
    reason: &str,
    env: Option<&Envelope>,
) {
    stats.dead_letters.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(message = "Package set aside.", %subject, %reason);
    if let Err(error) = bus.dead_letter(subject, &msg.payload, reason).await {
        tracing::warn!(message = "Dead letter not stored; leaving the package for redelivery.", %error);
        return;
    }
    let cycle = env
        .map(|e| e.cycle.clone())
        .or_else(|| subject.rsplit('.').next().and_then(|c| protocol::CycleId::parse(c).ok()));
    if let Some(cycle) = cycle {
        bus.event_best_effort(Event::new(
            cycle,
            bus.role,
            EventBody::DeadLetter { subject: subject.into(), reason: reason.into() },
        ))
        .await;
    }
    let _ = msg.ack_with(AckKind::Term).await;
}
