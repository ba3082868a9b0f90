//! Identifiers: cycles, hosts, agent roles, package ids.

use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

/// An identifier was not usable as part of a NATS subject or key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{what} `{value}` is not valid: use 1 to 64 characters from A-Z, a-z, 0-9, `-` and `_`")]
pub struct IdError {
    /// Which kind of identifier.
    pub what: &'static str,
    /// The rejected value.
    pub value: String,
}

fn check_token(what: &'static str, value: &str) -> Result<(), IdError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok { Ok(()) } else { Err(IdError { what, value: value.chars().take(80).collect() }) }
}

macro_rules! token_id {
    ($name:ident, $what:literal, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Checks that the value is safe inside a subject or KV key.
            pub fn parse(value: &str) -> Result<Self, IdError> {
                check_token($what, value)?;
                Ok(Self(value.to_string()))
            }
            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }
    };
}

token_id!(CycleId, "cycle id", "The id of one testing cycle, e.g. `20261126-0615-7f3a2c`.");
token_id!(HostId, "host id", "The id of a GPU host that runs its own Reader and Writer.");

impl CycleId {
    /// A new, time-ordered, human-readable cycle id built from a UUID v7.
    pub fn generate(now: chrono::DateTime<chrono::Utc>) -> Self {
        let u = Uuid::now_v7().simple().to_string();
        Self(format!("{}-{}", now.format("%Y%m%d-%H%M%S"), &u[u.len() - 6..]))
    }
}

impl HostId {
    /// The host id used when the operator names none.
    pub fn local() -> Self {
        Self("local".into())
    }
}

/// One of the five agents, or the operator at Main's door.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Owns the cycle's life and the operator's door.
    Main,
    /// Verifies the host and predicts fit.
    Reader,
    /// Deploys and benchmarks.
    Writer,
    /// Diagnoses failures and remediates.
    Debug,
    /// Writes the reports.
    Documentation,
    /// A person, through the CLI.
    Operator,
}

impl Role {
    /// All agent roles (the operator excluded).
    pub const AGENTS: [Role; 5] = [Role::Main, Role::Reader, Role::Writer, Role::Debug, Role::Documentation];

    /// The lower-case name used in subjects, consumer names and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Main => "main",
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Debug => "debug",
            Role::Documentation => "documentation",
            Role::Operator => "operator",
        }
    }

    /// Whether this role is bound to one GPU host (its subjects carry the host id).
    pub fn host_bound(self) -> bool {
        matches!(self, Role::Reader | Role::Writer)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Role::AGENTS
            .into_iter()
            .chain([Role::Operator])
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role `{s}`: expected main, reader, writer, debug or documentation"))
    }
}

/// Derives the id of the `n`-th package caused by `parent`, deterministically.
///
/// Why: an agent that crashes after publishing but before recording its work publishes again
/// on redelivery; the same derived id lets JetStream's dedup window and the receiver's ledger
/// recognise the copy. The result keeps the UUID v7 layout (version and variant bits) and the
/// parent's timestamp.
pub fn derive_id(parent: Uuid, salt: &str, n: u32) -> Uuid {
    // FNV-1a over the salt and index, folded into the random part of the parent id.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in salt.bytes().chain(n.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut bytes = *parent.as_bytes();
    for (i, b) in h.to_le_bytes().iter().enumerate() {
        bytes[8 + i] ^= b;
    }
    // Restore the version (7) and RFC 4122 variant bits.
    bytes[6] = (bytes[6] & 0x0f) | 0x70;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    Uuid::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_reject_subject_metacharacters() {
        for bad in ["", "a.b", "a b", "a*", "a>", &"x".repeat(65)] {
            assert!(CycleId::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(CycleId::parse("20261126-061502-ab12cd").is_ok());
    }

    #[test]
    fn derived_ids_are_stable_v7_and_distinct() {
        let p = Uuid::now_v7();
        let a = derive_id(p, "writer", 0);
        assert_eq!(a, derive_id(p, "writer", 0));
        assert_ne!(a, derive_id(p, "writer", 1));
        assert_ne!(a, derive_id(p, "reader", 0));
        assert_eq!(a.get_version_num(), 7);
        assert_eq!(a.get_timestamp(), p.get_timestamp());
    }

    #[test]
    fn generated_cycle_ids_parse() {
        let id = CycleId::generate(chrono::Utc::now());
        assert!(CycleId::parse(id.as_str()).is_ok(), "{id}");
    }
}
