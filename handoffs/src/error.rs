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
    /// The JetStream store is full: the server refused to store a message (`insufficient
    /// resources`, error 10023) because its `jetstream.max_file_store` limit or its disk is
    /// reached. Nothing stored is lost; what was refused can be tried again once there is room.
    #[error(
        "the NATS JetStream store is full: {op} was refused ({reason}); the server's `jetstream {{ max_file_store }}` limit or the disk under its store_dir is reached: free disk space or raise max_file_store (nothing stored is lost; the work waits and retries)"
    )]
    StoreFull {
        /// What we were doing.
        op: String,
        /// The server's words.
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
        let reason = e.to_string();
        if store_full(&reason) {
            BusError::StoreFull { op: op.into(), reason }
        } else {
            BusError::JetStream { op: op.into(), reason }
        }
    }

    /// Whether the JetStream store is full (see [`BusError::StoreFull`]).
    pub fn is_store_full(&self) -> bool {
        matches!(self, BusError::StoreFull { .. })
    }
}

/// Whether a JetStream error says the store has no room: `insufficient resources` (10023, a
/// message refused at the `max_file_store` limit), `insufficient storage resources` (10047, a
/// stream or bucket that no longer fits) or the disk itself full.
fn store_full(reason: &str) -> bool {
    let r = reason.to_ascii_lowercase();
    r.contains("insufficient resources") || r.contains("insufficient storage") || r.contains("no space left on device")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_for_want_of_space_is_store_full_and_names_the_limit() {
        for said in [
            "publish to tc.h.x: jetstream error: insufficient resources (code 503, error code 10023)",
            "insufficient storage resources available (10047)",
            "write /data/jetstream/x.blk: no space left on device",
        ] {
            let e = BusError::js("publish to tc.h.x", said);
            assert!(e.is_store_full(), "{said}");
            let text = e.to_string();
            assert!(text.contains("store is full") && text.contains("max_file_store"), "{text}");
        }
        let other = BusError::js("publish to tc.h.x", "timed out");
        assert!(!other.is_store_full() && !other.to_string().contains("full"), "{other}");
    }
}
