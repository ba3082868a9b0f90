//! Connecting to NATS.

use crate::BusError;
use std::path::PathBuf;
use std::time::Duration;

/// How to reach NATS. Built from flags and environment by the binary.
#[derive(Debug, Clone, Default)]
pub struct ConnectConfig {
    /// Server URL(s), comma-separated.
    pub url: String,
    /// User name.
    pub user: Option<String>,
    /// Password (never logged).
    pub password: Option<String>,
    /// Token (never logged).
    pub token: Option<String>,
    /// Credentials file (JWT + nkey seed).
    pub creds_file: Option<PathBuf>,
    /// CA certificate for TLS.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate for mutual TLS.
    pub tls_cert: Option<PathBuf>,
    /// Client key for mutual TLS.
    pub tls_key: Option<PathBuf>,
    /// Refuse plain-text connections.
    pub require_tls: bool,
    /// Connection name shown by the server.
    pub name: String,
    /// Keep retrying the first connection (agents) instead of failing fast (CLI).
    pub retry_initial: bool,
}

/// The inbox prefix a client logged in as `user` uses: `_INBOX.<user>` when the user name is a
/// plain subject token (every threadcycle user is: the role's name), so the server can let only
/// that user read its replies; the shared `_INBOX` otherwise.
pub fn inbox_prefix_for(user: Option<&str>) -> String {
    match user {
        Some(u) if !u.is_empty() && u.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') => {
            protocol::subjects::inbox_prefix(u)
        }
        _ => "_INBOX".to_string(),
    }
}

/// Connects with reconnect and exponential backoff (100 ms doubling, at most 5 s). Replies
/// arrive under the user's own inbox prefix ([`inbox_prefix_for`]).
pub async fn connect(cfg: &ConnectConfig) -> Result<async_nats::Client, BusError> {
    let mut opts = async_nats::ConnectOptions::new()
        .name(&cfg.name)
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(Duration::from_secs(10)))
        .ping_interval(Duration::from_secs(10))
        .max_reconnects(None)
        .custom_inbox_prefix(inbox_prefix_for(cfg.user.as_deref()))
        .reconnect_delay_callback(|attempt| {
            let ms = 100u64.saturating_mul(1u64 << attempt.min(6) as u32);
            Duration::from_millis(ms.min(5_000))
        })
        .event_callback(|ev| async move {
            match ev {
                async_nats::Event::Connected => tracing::info!(message = "Connected to NATS."),
                async_nats::Event::Disconnected => tracing::warn!(message = "Disconnected from NATS; reconnecting."),
                other => tracing::debug!(message = "NATS event.", event = %other),
            }
        });
    if cfg.retry_initial {
        opts = opts.retry_on_initial_connect();
    }
    if let (Some(u), Some(p)) = (&cfg.user, &cfg.password) {
        opts = opts.user_and_password(u.clone(), p.clone());
    }
    if let Some(t) = &cfg.token {
        opts = opts.token(t.clone());
    }
    if let Some(c) = &cfg.creds_file {
        opts = opts.credentials_file(c).await.map_err(|e| BusError::Connect {
            url: cfg.url.clone(),
            reason: format!("cannot read credentials file {}: {e}", c.display()),
        })?;
    }
    if let Some(ca) = &cfg.tls_ca {
        opts = opts.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&cfg.tls_cert, &cfg.tls_key) {
        opts = opts.add_client_certificate(cert.clone(), key.clone());
    }
    if cfg.require_tls {
        opts = opts.require_tls(true);
    }
    opts.connect(cfg.url.as_str()).await.map_err(|e| BusError::Connect { url: cfg.url.clone(), reason: e.to_string() })
}
