//! The coordination runtime on NATS JetStream.
//!
//! - [`connect`]: one way to reach NATS (URL, user/password, token, credentials file, TLS,
//!   reconnect with backoff).
//! - [`Bus`]: streams, buckets and publishing for one agent role; large payloads travel through
//!   the object store as key + SHA-256.
//! - [`consume`]: a role's durable consumer loop — decode, refuse bad packages to the dead-letter
//!   stream, skip packages already applied (KV ledger), run the handler, record, then ack.
//! - [`server`]: a private `nats-server` on a free loopback port (for `threadcycle up` and tests).
//!
//! Architecture invariant: only this crate knows how packages map to JetStream; agents see
//! typed envelopes and KV records.

mod bus;
mod connect;
mod consume;
mod error;
pub mod security;
pub mod server;

pub use bus::{Bus, Kv, PublishOutcome};
pub use connect::{ConnectConfig, connect, inbox_prefix_for};
pub use consume::{ConsumeStats, HandleError, Handled, Handler, consume};
pub use error::BusError;
