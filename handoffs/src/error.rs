//! Errors of the coordination runtime.

/// Something went wrong talking to NATS.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// Could not connect.
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect {
        /// Server URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// A JetStream call failed.
    #[error("JetStream {op} failed: {reason}")]
    JetStream {
        /// What we were doing.
        op: String,
        /// Why.
        reason: String,
    },
    /// A stored blob did not match its reference.
    #[error("blob `{key}` is corrupt: expected sha256 {expected}, got {actual}")]
    BlobMismatch {
        /// Object key.
        key: String,
        /// From the reference.
        expected: String,
        /// Computed.
        actual: String,
    },
    /// A stored record could not be decoded.
    #[error("record `{key}` in `{bucket}` is not valid: {reason}")]
    BadRecord {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// Why.
        reason: String,
    },
    /// Starting a private nats-server failed.
    #[error("{0}")]
    Server(String),
}

impl BusError {
    pub(crate) fn js(op: impl Into<String>, e: impl std::fmt::Display) -> Self {
        BusError::JetStream { op: op.into(), reason: e.to_string() }
    }
}
