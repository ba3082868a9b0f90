//! Every message threadcycle's five agents exchange, and the plan they execute.
//!
//! Architecture invariant: this crate does no I/O. It turns bytes into typed values and back,
//! validates them, and names the NATS subjects; it never opens a file, a socket or a process.

pub mod envelope;
pub mod events;
pub mod ids;
pub mod launch;
pub mod messages;
pub mod operator;
pub mod plan;
pub mod results;
pub mod settings;
pub mod subjects;
pub mod text;
pub mod tune;

pub use envelope::{Envelope, EnvelopeError, Payload, SCHEMA_VERSION};
pub use ids::{CycleId, HostId, IdError, Role};
