//! Least-privilege NATS: one user per agent role and one for the operator, each allowed to
//! publish and subscribe only where its real work takes it; optional TLS with a self-signed CA.
//!
//! - [`permissions`](mod@permissions): the permission table, pure data. Its handoff edges come
//!   from the one table of who sends which package to whom (`routes`), the same one `consume`
//!   checks each package against.
//! - [`config`]: `threadcycle nats-config --dir D [--tls]` calls [`generate`], which writes
//!   `D/nats.conf` (mode 0600: it holds the passwords: `listen`, `jetstream { store_dir,
//!   sync_interval: always }`, the `authorization { users = [...] }` block from
//!   [`server_config`] and, with TLS, a `tls { ... }` block) and `D/<user>.env` (mode 0600) for
//!   `main`, `reader`, `writer`, `debug`, `documentation` and `operator`: `NATS_USER`,
//!   `NATS_PASSWORD` and, with TLS, `NATS_CA` — the variables the binary's NATS flags already
//!   read. With `--cluster 3`: also `D/nats-2.conf`, `D/nats-3.conf` (the same users, each
//!   node with a `cluster` block routing to `nats`, `nats-2`, `nats-3` on port 6222 with a random
//!   route password) and `D/cluster.env` (docker-compose.yml's `cluster` profile: all three
//!   URLs, `THREADCYCLE_NATS_REPLICAS=3`). Passwords are 32 bytes from `/dev/urandom`, hex-encoded. They never reach a log line:
//!   the [`Credential`] `Debug` output is redacted and nothing here logs them.
//! - [`certs`]: with TLS, `D/tls/ca.pem`, `D/tls/ca-key.pem` (0600), `D/tls/server.pem`,
//!   `D/tls/server-key.pem` (0600), made in-process with `rcgen`: an EC P-256 CA valid ten years
//!   and a server certificate signed by it for `localhost`, `nats` (the compose service) and
//!   `127.0.0.1`, valid 825 days.
//!
//! The probe that counts how many forbidden publishes and subscriptions a running server refuses
//! is test support and lives with the tests (`handoffs/tests/it/probe.rs`).

pub mod certs;
pub mod config;
pub mod permissions;

pub use certs::{TlsFiles, make_certificates};
pub use config::{
    Credential, GenerateOptions, Generated, generate, generate_with, random_password, read_env_file, server_config,
};
pub use permissions::{Permissions, USERS, permissions, subject_matches};

use std::fmt;
use std::path::{Path, PathBuf};

/// What went wrong generating a secured configuration.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// A file could not be read or written.
    #[error("cannot {op} {path}: {reason}")]
    Io {
        /// What we were doing.
        op: &'static str,
        /// Which file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The target directory already holds a configuration (regenerating would change every
    /// password under a running deployment).
    #[error("{0} already exists: remove it (and the .env files beside it) or choose another --dir")]
    Exists(PathBuf),
    /// A key or certificate could not be made.
    #[error("cannot make the TLS certificates: {0}")]
    Certificate(String),
    /// A cluster size that cannot keep a majority after losing a node.
    #[error("cannot lay out a NATS cluster of {0}")]
    BadCluster(String),
    /// An env file is not one this module wrote.
    #[error("{path} is not a threadcycle NATS credentials file: {reason}")]
    BadEnvFile {
        /// Which file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

fn io(op: &'static str, path: &Path, e: impl fmt::Display) -> SecurityError {
    SecurityError::Io { op, path: path.to_path_buf(), reason: e.to_string() }
}

/// Writes `path` with mode 0600 (created fresh; an existing file is replaced).
pub fn write_private(path: &Path, text: &str) -> Result<(), SecurityError> {
    use std::io::Write;
    let _ = std::fs::remove_file(path);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| io("create", path, e))?;
    f.write_all(text.as_bytes()).map_err(|e| io("write", path, e))
}
