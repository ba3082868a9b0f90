//! The coordination runtime on NATS JetStream.
//!
//! - [`connect`]: one way to reach NATS (URL, user/password, token, credentials file, TLS,
//!   reconnect with backoff).
//! - [`Bus`]: streams, buckets and publishing for one agent role; large payloads travel through
//!   the object store as key + SHA-256.
//! - [`consume`]: a role's durable consumer loop — decode, refuse bad packages to the dead-letter
//!   stream, skip packages already applied (KV ledger), run the handler, record, then ack.
//! - [`routes`]: the one table of who sends which package to whom, which both the server's
//!   permissions and `consume` are made from.
//! - [`security`]: least-privilege users, the server configuration and TLS certificates.
//! - [`server`]: a private `nats-server` on a free loopback port (for `threadcycle up` and tests),
//!   and `NatsCluster`, several joined by routes into one JetStream cluster.
//!
//! Architecture invariant: only this crate knows how packages map to JetStream; agents see
//! typed envelopes and KV records. The NATS client and the JetStream context are private to
//! [`Bus`]: what an agent does on NATS is a `Bus` method.

mod bus;
mod connect;
mod consume;
mod error;
pub mod routes;
pub mod security;
pub mod server;

pub use bus::{Bus, EventFeed, FollowedEvent, Kv, OperatorCall, OperatorCalls, PublishOutcome, wait_for_room};
pub use connect::{ConnectConfig, connect, inbox_prefix_for, server_addrs};
pub use consume::{ConsumeStats, HandleError, Handled, Handler, consume};
pub use error::BusError;
