//! One agent's handle on NATS: streams, buckets, publishing, blobs, heartbeats.

use crate::BusError;
use async_nats::jetstream::{self, consumer::pull, kv, object_store, stream};
use futures::StreamExt;
use protocol::events::Event;
use protocol::messages::Offloaded;
use protocol::operator::{AgentLiveness, HandoffCount, OperatorReply, OperatorRequest};
use protocol::results::{BlobRef, EscalationRecord};
use protocol::subjects as subj;
use protocol::{Envelope, HostId, Payload, Role};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// The durable consumer Main follows every event with ([`Bus::follow_events`]).
pub(crate) const EVENT_FOLLOWER: &str = "main-events";
/// The queue group Main's operator service answers in (several Mains could share the load).
const OPERATOR_QUEUE: &str = "main";

/// Packages larger than this go through the object store (NATS refuses 1 MiB by default).
pub const DEFAULT_BLOB_THRESHOLD: usize = 256 * 1024;
const DAY: Duration = Duration::from_secs(86_400);

/// A KV bucket holding JSON records.
#[derive(Clone)]
pub struct Kv {
    name: &'static str,
    store: kv::Store,
}

impl Kv {
    /// The record under `key`, if any.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, BusError> {
        Ok(self.get_rev(key).await?.map(|(v, _)| v))
    }

    /// The record and its revision.
    pub async fn get_rev<T: DeserializeOwned>(&self, key: &str) -> Result<Option<(T, u64)>, BusError> {
        let entry = self.store.entry(key).await.map_err(|e| BusError::js(format!("read {}/{key}", self.name), e))?;
        match entry {
            Some(e) if e.operation == kv::Operation::Put => {
                let v = serde_json::from_slice(&e.value).map_err(|err| BusError::BadRecord {
                    bucket: self.name.into(),
                    key: key.into(),
                    reason: err.to_string(),
                })?;
                Ok(Some((v, e.revision)))
            }
            _ => Ok(None),
        }
    }

    /// Writes the record unconditionally.
    pub async fn put<T: Serialize>(&self, key: &str, value: &T) -> Result<u64, BusError> {
        let bytes = serde_json::to_vec(value).map_err(|e| BusError::js("encode", e))?;
        self.store.put(key, bytes.into()).await.map_err(|e| BusError::js(format!("write {}/{key}", self.name), e))
    }

    /// Writes the record only if the key is absent; `Ok(false)` when it existed.
    pub async fn create<T: Serialize>(&self, key: &str, value: &T) -> Result<bool, BusError> {
        let bytes = serde_json::to_vec(value).map_err(|e| BusError::js("encode", e))?;
        match self.store.create(key, bytes.into()).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(BusError::js(format!("create {}/{key}", self.name), e)),
        }
    }

    /// Writes the record only if the key is still at `revision` (compare-and-set); `Ok(false)`
    /// when another writer changed it first.
    pub async fn replace<T: Serialize>(&self, key: &str, value: &T, revision: u64) -> Result<bool, BusError> {
        let bytes = serde_json::to_vec(value).map_err(|e| BusError::js("encode", e))?;
        match self.store.update(key, bytes.into(), revision).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
            Err(e) => Err(BusError::js(format!("update {}/{key}", self.name), e)),
        }
    }

    /// Read-modify-write with compare-and-set, retried on conflicting writers.
    pub async fn update<T, F>(&self, key: &str, mut f: F) -> Result<Option<T>, BusError>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(&mut T),
    {
        for _ in 0..32 {
            let Some((mut v, rev)) = self.get_rev::<T>(key).await? else { return Ok(None) };
            f(&mut v);
            let bytes = serde_json::to_vec(&v).map_err(|e| BusError::js("encode", e))?;
            match self.store.update(key, bytes.into(), rev).await {
                Ok(_) => return Ok(Some(v)),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => return Err(BusError::js(format!("update {}/{key}", self.name), e)),
            }
        }
        Err(BusError::js(format!("update {}/{key}", self.name), "too many concurrent writers"))
    }

    /// Every key (for listings).
    pub async fn keys(&self) -> Result<Vec<String>, BusError> {
        use futures::TryStreamExt;
        let keys = self.store.keys().await.map_err(|e| BusError::js(format!("list {}", self.name), e))?;
        keys.try_collect().await.map_err(|e| BusError::js(format!("list {}", self.name), e))
    }

    /// Deletes a key (absent keys are fine).
    pub async fn store_delete(&self, key: &str) -> Result<(), BusError> {
        self.store.delete(key).await.map_err(|e| BusError::js(format!("delete {}/{key}", self.name), e))
    }

    /// Watches one key for changes (current value first).
    pub async fn watch(&self, key: &str) -> Result<kv::Watch, BusError> {
        self.store.watch_with_history(key).await.map_err(|e| BusError::js(format!("watch {}/{key}", self.name), e))
    }
}

/// Runs `op` until it succeeds or fails for another reason than a full JetStream store
/// ([`BusError::StoreFull`]): while the store is full, it waits (1 s, doubling to 15 s) and
/// tries again, saying so in the log at once and then every minute. What the caller holds (a
/// measured run, a result) stays in memory meanwhile instead of being dropped and measured again.
pub async fn wait_for_room<T, F, Fut>(what: &str, mut op: F) -> Result<T, BusError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, BusError>>,
{
    let mut pause = Duration::from_secs(1);
    let mut told: Option<std::time::Instant> = None;
    loop {
        match op().await {
            Err(error) if error.is_store_full() => {
                if told.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                    tracing::warn!(message = "JetStream store full; holding the data and waiting for room.", %what, %error);
                    told = Some(std::time::Instant::now());
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(15));
            }
            other => {
                if told.is_some() && other.is_ok() {
                    tracing::info!(message = "JetStream store has room again; stored.", %what);
                }
                return other;
            }
        }
    }
}

/// What happened to a published package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishOutcome {
    /// Stream sequence.
    pub sequence: u64,
    /// JetStream saw the same message id within its dedup window.
    pub duplicate: bool,
    /// The payload went through the object store.
    pub offloaded: bool,
}

/// An agent's connection to the streams and buckets.
#[derive(Clone)]
pub struct Bus {
    /// The raw client: only this crate publishes and subscribes with it.
    client: async_nats::Client,
    /// JetStream: only this crate (the bus and `consume`) opens streams and consumers.
    pub(crate) js: jetstream::Context,
    /// Which agent this is.
    pub role: Role,
    /// Which host it serves.
    pub host: HostId,
    /// Applied packages per role.
    pub ledger: Kv,
    /// Cycle records.
    pub cycles: Kv,
    /// Escalation records.
    pub escalations: Kv,
    /// Per-model results as they are measured.
    pub results: Kv,
    /// Agent heartbeats.
    pub heartbeats: Kv,
    blobs: object_store::ObjectStore,
    blob_threshold: usize,
}

/// How many copies JetStream keeps of every stream and bucket, from `--nats-replicas` /
/// `THREADCYCLE_NATS_REPLICAS`: `None` (the default) is detected ([`detect_replicas`]: one
/// copy on a single server, three on a cluster of three or more); `Some(3)` on a three-node
/// cluster creates them replicated three times, so losing any one node loses nothing and the
/// cycle goes on.
///
/// The count applies when a stream or bucket is created. One that already exists keeps the
/// count it has: agents may not send `STREAM.UPDATE` (see `security::permissions`), so a
/// differing count is logged as a warning naming the stream, and the NATS administrator changes
/// it (`nats stream edit <stream> --replicas 3`).
fn replicas_or_one(replicas: Option<usize>) -> usize {
    replicas.unwrap_or(1).max(1)
}

/// The replica count when none is configured: one on a single server; on a cluster, the count
/// the handoff stream already has, or three for a new one (the caller falls back to one when
/// the cluster cannot hold three). A cluster is known from the server's INFO (`cluster`).
async fn detect_replicas(client: &async_nats::Client, js: &jetstream::Context) -> Option<usize> {
    let cluster = client.server_info().cluster.filter(|c| !c.is_empty())?;
    let n = match js.get_stream(subj::HANDOFF_STREAM).await {
        Ok(s) => s.cached_info().config.num_replicas.max(1),
        Err(_) => 3,
    };
    tracing::info!(message = "NATS cluster found; streams and buckets are replicated.", cluster, replicas = n);
    Some(n)
}

/// Warns when an existing stream's replica count differs from the configured one.
fn check_replicas(stream: &str, have: usize, wanted: Option<usize>) {
    if let Some(want) = wanted
        && want != have.max(1)
    {
        tracing::warn!(
            message = "An existing stream keeps its replica count; change it as the NATS administrator.",
            stream,
            replicas = have.max(1),
            configured = want,
            fix = %format!("nats stream edit {stream} --replicas {want}"),
        );
    }
}

async fn ensure_stream(
    js: &jetstream::Context,
    mut cfg: stream::Config,
    replicas: Option<usize>,
) -> Result<(), BusError> {
    let name = cfg.name.clone();
    cfg.num_replicas = replicas_or_one(replicas);
    let s = js.get_or_create_stream(cfg).await.map_err(|e| BusError::js(format!("create stream {name}"), e))?;
    check_replicas(&name, s.cached_info().config.num_replicas, replicas);
    Ok(())
}

/// The replica count of an existing bucket's stream (`KV_<bucket>`, `OBJ_<bucket>`), checked
/// only when a count is configured.
async fn check_bucket_replicas(
    js: &jetstream::Context,
    stream: String,
    replicas: Option<usize>,
) -> Result<(), BusError> {
    if replicas.is_none() {
        return Ok(());
    }
    let s = js.get_stream(&stream).await.map_err(|e| BusError::js(format!("read stream {stream}"), e))?;
    check_replicas(&stream, s.cached_info().config.num_replicas, replicas);
    Ok(())
}

async fn ensure_kv(
    js: &jetstream::Context,
    name: &'static str,
    history: i64,
    max_age: Duration,
    replicas: Option<usize>,
) -> Result<Kv, BusError> {
    let store = match js.get_key_value(name).await {
        Ok(s) => {
            check_bucket_replicas(js, format!("KV_{name}"), replicas).await?;
            s
        }
        Err(_) => js
            .create_key_value(kv::Config {
                bucket: name.into(),
                history,
                max_age,
                storage: jetstream::stream::StorageType::File,
                num_replicas: replicas_or_one(replicas),
                ..Default::default()
            })
            .await
            .map_err(|e| BusError::js(format!("create bucket {name}"), e))?,
    };
    Ok(Kv { name, store })
}

impl Bus {
    /// Creates or verifies the streams and buckets (one copy each on one server, three on a
    /// cluster), and returns the handle for `role` on `host`.
    pub async fn open(client: async_nats::Client, role: Role, host: HostId) -> Result<Bus, BusError> {
        Bus::open_replicated(client, role, host, None).await
    }

    /// [`Bus::open`], creating missing streams and buckets with `replicas` copies each (on a
    /// cluster; an existing one keeps its count, with a warning when it differs); `None`: one
    /// copy on a single server, three on a cluster that can hold them (detected).
    pub async fn open_replicated(
        client: async_nats::Client,
        role: Role,
        host: HostId,
        replicas: Option<usize>,
    ) -> Result<Bus, BusError> {
        let js = jetstream::new(client.clone());
        let (replicas, detected) = match replicas {
            Some(n) => (Some(n), false),
            None => match detect_replicas(&client, &js).await {
                Some(n) => (Some(n), true),
                None => (None, false),
            },
        };
        let handoff_stream = stream::Config {
            name: subj::HANDOFF_STREAM.into(),
            subjects: vec![subj::HANDOFF_WILDCARD.into()],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::New,
            duplicate_window: Duration::from_secs(120),
            max_age: 30 * DAY,
            max_bytes: 4 << 30,
            max_message_size: 1 << 20,
            ..Default::default()
        };
        // A detected count is tried on the first stream; a cluster too small for it (fewer than
        // three JetStream servers) refuses, and every stream and bucket gets one copy.
        let replicas = match ensure_stream(&js, handoff_stream.clone(), replicas).await {
            Err(e) if detected && replicas.is_some_and(|n| n > 1) => {
                tracing::warn!(
                    message = "The NATS cluster could not hold three copies; streams and buckets get one (set --nats-replicas to choose).",
                    error = %e,
                );
                ensure_stream(&js, handoff_stream, Some(1)).await?;
                Some(1)
            }
            other => {
                other?;
                replicas
            }
        };
        ensure_stream(
            &js,
            stream::Config {
                name: subj::EVENT_STREAM.into(),
                subjects: vec![subj::EVENT_WILDCARD.into()],
                storage: stream::StorageType::File,
                discard: stream::DiscardPolicy::Old,
                max_age: 30 * DAY,
                max_bytes: 1 << 30,
                ..Default::default()
            },
            replicas,
        )
        .await?;
        ensure_stream(
            &js,
            stream::Config {
                name: subj::DEAD_LETTER_STREAM.into(),
                subjects: vec![subj::DEAD_LETTER_WILDCARD.into()],
                storage: stream::StorageType::File,
                discard: stream::DiscardPolicy::Old,
                max_age: 30 * DAY,
                max_bytes: 256 << 20,
                ..Default::default()
            },
            replicas,
        )
        .await?;
        let ledger = ensure_kv(&js, subj::LEDGER_BUCKET, 1, 60 * DAY, replicas).await?;
        let cycles = ensure_kv(&js, subj::CYCLES_BUCKET, 5, Duration::ZERO, replicas).await?;
        let escalations = ensure_kv(&js, subj::ESCALATIONS_BUCKET, 5, Duration::ZERO, replicas).await?;
        let results = ensure_kv(&js, subj::RESULTS_BUCKET, 1, 90 * DAY, replicas).await?;
        let heartbeats = ensure_kv(&js, subj::HEARTBEATS_BUCKET, 1, DAY, replicas).await?;
        let blobs = match js.get_object_store(subj::BLOB_BUCKET).await {
            Ok(o) => {
                check_bucket_replicas(&js, format!("OBJ_{}", subj::BLOB_BUCKET), replicas).await?;
                o
            }
            Err(_) => js
                .create_object_store(object_store::Config {
                    bucket: subj::BLOB_BUCKET.into(),
                    storage: stream::StorageType::File,
                    num_replicas: replicas_or_one(replicas),
                    ..Default::default()
                })
                .await
                .map_err(|e| BusError::js("create object store", e))?,
        };
        Ok(Bus {
            client,
            js,
            role,
            host,
            ledger,
            cycles,
            escalations,
            results,
            heartbeats,
            blobs,
            blob_threshold: DEFAULT_BLOB_THRESHOLD,
        })
    }

    /// Lowers the size above which packages are offloaded (tests).
    pub fn with_blob_threshold(mut self, bytes: usize) -> Self {
        self.blob_threshold = bytes;
        self
    }

    /// Publishes a package to its receiver on this bus's host.
    pub async fn publish(&self, env: &Envelope) -> Result<PublishOutcome, BusError> {
        let host = self.host.clone();
        self.publish_to(env, &host).await
    }

    /// Publishes a package to its receiver on `host`, waiting until JetStream has stored it.
    pub async fn publish_to(&self, env: &Envelope, host: &HostId) -> Result<PublishOutcome, BusError> {
        let subject = subj::handoff(env.from, env.to, host, &env.cycle);
        let mut bytes = env.to_bytes();
        let mut offloaded = false;
        if bytes.len() > self.blob_threshold {
            let blob = self.put_blob(&format!("pkg/{}/{}", env.cycle, env.id), &bytes).await?;
            let mut small = env.clone();
            small.payload = Payload::Offloaded(Offloaded { inner_kind: env.payload.kind().into(), blob });
            bytes = small.to_bytes();
            offloaded = true;
        }
        let ack = self
            .js
            .send_publish(
                subject.clone(),
                jetstream::message::PublishMessage::build().payload(bytes.into()).message_id(env.id.to_string()),
            )
            .await
            .map_err(|e| BusError::js(format!("publish to {subject}"), e))?
            .await
            .map_err(|e| BusError::js(format!("publish to {subject}"), e))?;
        tracing::debug!(message = "Package published.", kind = env.payload.kind(), id = %env.id, %subject, duplicate = ack.duplicate);
        Ok(PublishOutcome { sequence: ack.sequence, duplicate: ack.duplicate, offloaded })
    }

    /// Replaces an offloaded package by the one it points to, checking its digest.
    pub async fn resolve(&self, env: Envelope) -> Result<Envelope, BusError> {
        let Payload::Offloaded(off) = &env.payload else { return Ok(env) };
        let bytes = self.get_blob(&off.blob).await?;
        let inner = Envelope::from_bytes(&bytes).map_err(|e| BusError::BadRecord {
            bucket: subj::BLOB_BUCKET.into(),
            key: off.blob.key.clone(),
            reason: e.to_string(),
        })?;
        if inner.id != env.id || inner.payload.kind() != off.inner_kind {
            return Err(BusError::BadRecord {
                bucket: subj::BLOB_BUCKET.into(),
                key: off.blob.key.clone(),
                reason: "the stored package does not match its reference".into(),
            });
        }
        Ok(inner)
    }

    /// Publishes a progress event and logs it.
    pub async fn event(&self, ev: &Event) -> Result<(), BusError> {
        // A Reader or Writer on a named host says which, so several hosts' progress can be told apart.
        let stamped;
        let ev = if ev.host.is_none() && self.role.host_bound() && self.host != HostId::local() {
            stamped = Event { host: Some(self.host.to_string()), ..ev.clone() };
            &stamped
        } else {
            ev
        };
        tracing::info!(message = %ev.line());
        let subject = subj::event(&ev.cycle, ev.from);
        let bytes = serde_json::to_vec(ev).map_err(|e| BusError::js("encode event", e))?;
        self.js
            .publish(subject.clone(), bytes.into())
            .await
            .map_err(|e| BusError::js(format!("publish to {subject}"), e))?
            .await
            .map_err(|e| BusError::js(format!("publish to {subject}"), e))?;
        Ok(())
    }

    /// Publishes an event, logging instead of failing when NATS is unavailable.
    pub async fn event_best_effort(&self, ev: Event) {
        if let Err(error) = self.event(&ev).await {
            tracing::warn!(message = "Event not published.", %error);
        }
    }

    /// Sets a package aside on the dead-letter stream with the reason.
    pub async fn dead_letter(&self, subject: &str, payload: &[u8], reason: &str) -> Result<(), BusError> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Tc-Original-Subject", subject);
        headers.insert("Tc-Reason", reason.chars().take(1000).collect::<String>().replace(['\r', '\n'], " ").as_str());
        let body: Vec<u8> = payload.iter().take(900 * 1024).copied().collect();
        let dlq = subj::dead_letter(self.role);
        self.js
            .publish_with_headers(dlq.clone(), headers, body.into())
            .await
            .map_err(|e| BusError::js(format!("publish to {dlq}"), e))?
            .await
            .map_err(|e| BusError::js(format!("publish to {dlq}"), e))?;
        Ok(())
    }

    /// Stores bytes in the object store and returns their reference.
    ///
    /// The store is append-only: overwriting an object makes the client purge its old chunks,
    /// which no agent may do (`security::permissions`). So when `key` is taken (by an earlier
    /// run of the same handler, say), the bytes go under `<key>~<sha256>` instead, and the same
    /// bytes stored twice there are stored once. Readers follow the returned reference.
    pub async fn put_blob(&self, key: &str, bytes: &[u8]) -> Result<BlobRef, BusError> {
        use async_nats::jetstream::object_store::InfoErrorKind;
        let sha256 = hex::encode(Sha256::digest(bytes));
        let exists = |k: String| async move {
            match self.blobs.info(&k).await {
                Ok(info) => Ok(Some(info.deleted)),
                Err(e) if e.kind() == InfoErrorKind::NotFound => Ok(None),
                Err(e) => Err(BusError::js(format!("look up blob {k}"), e)),
            }
        };
        let mut name = key.to_string();
        if exists(name.clone()).await?.is_some() {
            name = format!("{key}~{sha256}");
            match exists(name.clone()).await? {
                Some(false) => return Ok(BlobRef { key: name, sha256, size: bytes.len() as u64 }),
                Some(true) => {
                    return Err(BusError::BadRecord {
                        bucket: subj::BLOB_BUCKET.into(),
                        key: name,
                        reason: "a deletion marker stands where these bytes belong; the blob store is append-only"
                            .into(),
                    });
                }
                None => {}
            }
        }
        let mut reader = bytes;
        self.blobs.put(name.as_str(), &mut reader).await.map_err(|e| BusError::js(format!("store blob {name}"), e))?;
        Ok(BlobRef { key: name, sha256, size: bytes.len() as u64 })
    }

    /// Reads a blob and checks its SHA-256.
    pub async fn get_blob(&self, r: &BlobRef) -> Result<Vec<u8>, BusError> {
        let mut obj = self.blobs.get(&r.key).await.map_err(|e| BusError::js(format!("read blob {}", r.key), e))?;
        let mut buf = Vec::with_capacity(r.size.min(64 << 20) as usize);
        obj.read_to_end(&mut buf).await.map_err(|e| BusError::js(format!("read blob {}", r.key), e))?;
        let actual = hex::encode(Sha256::digest(&buf));
        if actual != r.sha256 {
            return Err(BusError::BlobMismatch { key: r.key.clone(), expected: r.sha256.clone(), actual });
        }
        Ok(buf)
    }

    /// Every escalation record (not the pending asks kept beside them), oldest first.
    pub async fn escalation_records(&self) -> Result<Vec<EscalationRecord>, BusError> {
        let mut out = Vec::new();
        for k in self.escalations.keys().await? {
            if k.starts_with("ask.") || k.starts_with("tune.") {
                continue;
            }
            if let Some(r) = self.escalations.get::<EscalationRecord>(&k).await? {
                out.push(r);
            }
        }
        out.sort_by(|a, b| a.opened_at.cmp(&b.opened_at));
        Ok(out)
    }

    /// Handoff packages on the stream per edge (`tc.handoff.<to>.<from>.…`), counted by the server
    /// (`STREAM.INFO` with a subject filter), sorted by sender then receiver.
    pub async fn handoff_counts(&self) -> Result<Vec<HandoffCount>, BusError> {
        let stream = self
            .js
            .get_stream(subj::HANDOFF_STREAM)
            .await
            .map_err(|e| BusError::js(format!("stream {}", subj::HANDOFF_STREAM), e))?;
        let mut subjects = stream
            .info_with_subjects(subj::HANDOFF_WILDCARD)
            .await
            .map_err(|e| BusError::js(format!("count the subjects of {}", subj::HANDOFF_STREAM), e))?;
        let mut counts: std::collections::BTreeMap<(String, String), u64> = std::collections::BTreeMap::new();
        while let Some(item) = subjects.next().await {
            let (subject, n) =
                item.map_err(|e| BusError::js(format!("count the subjects of {}", subj::HANDOFF_STREAM), e))?;
            let mut parts = subject.split('.').skip(2);
            if let (Some(to), Some(from)) = (parts.next(), parts.next()) {
                *counts.entry((from.to_string(), to.to_string())).or_default() += n as u64;
            }
        }
        Ok(counts.into_iter().map(|((from, to), packages)| HandoffCount { from, to, packages }).collect())
    }

    /// Main's side of the operator service: the requests sent to `subjects::OPERATOR_SUBJECT`,
    /// as they arrive (a queue group, so several Mains could share the load). Answer each with
    /// [`Bus::answer`].
    pub async fn operator_calls(&self) -> Result<OperatorCalls, BusError> {
        let sub = self
            .client
            .queue_subscribe(subj::OPERATOR_SUBJECT, OPERATOR_QUEUE.into())
            .await
            .map_err(|e| BusError::js(format!("subscribe to {}", subj::OPERATOR_SUBJECT), e))?;
        Ok(OperatorCalls { sub })
    }

    /// Sends `reply` to whoever made `call` (nothing when the caller asked for no answer).
    pub async fn answer(&self, call: &OperatorCall, reply: &OperatorReply) -> Result<(), BusError> {
        let Some(to) = &call.reply else { return Ok(()) };
        let bytes = serde_json::to_vec(reply).map_err(|e| BusError::js("encode operator reply", e))?;
        self.client.publish(to.clone(), bytes.into()).await.map_err(|e| BusError::js("send operator reply", e))
    }

    /// Main's durable follower of every event of every cycle (consumer `main-events` on the
    /// event stream): each event is delivered until it is acked ([`FollowedEvent::ack`]), also
    /// across restarts.
    pub async fn follow_events(&self) -> Result<EventFeed, BusError> {
        let stream = self
            .js
            .get_stream(subj::EVENT_STREAM)
            .await
            .map_err(|e| BusError::js(format!("open stream {}", subj::EVENT_STREAM), e))?;
        let consumer: jetstream::consumer::PullConsumer = stream
            .get_or_create_consumer(
                EVENT_FOLLOWER,
                pull::Config {
                    durable_name: Some(EVENT_FOLLOWER.into()),
                    ack_wait: Duration::from_secs(30),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| BusError::js(format!("create consumer {EVENT_FOLLOWER}"), e))?;
        let messages =
            consumer.messages().await.map_err(|e| BusError::js(format!("read consumer {EVENT_FOLLOWER}"), e))?;
        Ok(EventFeed { messages })
    }

    /// The key this agent's heartbeat is kept under.
    pub fn agent_key(&self) -> String {
        subj::heartbeat_key(self.role, self.host.as_str())
    }

    /// Writes a heartbeat every `every` until the task is dropped or aborted.
    pub fn spawn_heartbeat(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let bus = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let beat = AgentLiveness {
                    agent: bus.agent_key(),
                    last_seen: chrono::Utc::now(),
                    age_s: 0.0,
                    pid: std::process::id(),
                };
                if let Err(error) = bus.heartbeats.put(&bus.agent_key(), &beat).await {
                    tracing::debug!(message = "Heartbeat not written.", %error);
                }
            }
        })
    }
}

/// Operator requests arriving at Main ([`Bus::operator_calls`]).
pub struct OperatorCalls {
    sub: async_nats::Subscriber,
}

impl OperatorCalls {
    /// The next request; `None` once the subscription has ended.
    pub async fn next(&mut self) -> Option<OperatorCall> {
        let msg = self.sub.next().await?;
        Some(OperatorCall { payload: msg.payload, reply: msg.reply })
    }
}

/// One operator request and where its answer goes ([`Bus::answer`]).
#[derive(Debug, Clone)]
pub struct OperatorCall {
    payload: bytes::Bytes,
    reply: Option<async_nats::Subject>,
}

impl OperatorCall {
    /// The request, or why its bytes are not one.
    pub fn request(&self) -> Result<OperatorRequest, serde_json::Error> {
        serde_json::from_slice(&self.payload)
    }
}

/// Every event, in stream order, for Main's follower ([`Bus::follow_events`]).
pub struct EventFeed {
    messages: pull::Stream,
}

impl EventFeed {
    /// The next event; `None` or an error when the feed must be reopened.
    pub async fn next(&mut self) -> Option<Result<FollowedEvent, BusError>> {
        let msg = self.messages.next().await?;
        Some(
            msg.map(|msg| {
                let seq = msg.info().map(|i| i.stream_sequence).unwrap_or(0);
                let event = serde_json::from_slice::<Event>(&msg.payload).ok();
                FollowedEvent { seq, event, msg }
            })
            .map_err(|e| BusError::js(format!("read consumer {EVENT_FOLLOWER}"), e)),
        )
    }
}

/// One delivered event: redelivered until [`FollowedEvent::ack`].
pub struct FollowedEvent {
    /// Its sequence in the event stream (0 when the server did not say).
    pub seq: u64,
    /// The event; `None` when the bytes are not one.
    pub event: Option<Event>,
    msg: jetstream::Message,
}

impl FollowedEvent {
    /// Marks it done (fire-and-forget: a lost ack means one redelivery, which the sequence
    /// number lets the follower recognise).
    pub async fn ack(&self) -> Result<(), BusError> {
        self.msg.ack().await.map_err(|e| BusError::js(format!("ack on {EVENT_FOLLOWER}"), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn wait_for_room_retries_while_the_store_is_full_and_no_longer() {
        let mut calls = 0;
        let r = wait_for_room("a result", || {
            calls += 1;
            let n = calls;
            async move {
                if n < 3 {
                    Err(BusError::js("publish to x", "insufficient resources (code 503, error code 10023)"))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(r.ok(), Some(3));
        let mut calls = 0;
        let r: Result<(), BusError> = wait_for_room("a result", || {
            calls += 1;
            async { Err(BusError::js("publish to x", "timed out")) }
        })
        .await;
        assert!(r.is_err_and(|e| !e.is_store_full()));
        assert_eq!(calls, 1, "an error other than a full store is returned at once");
    }
}
