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
    let servers = server_addrs(&cfg.url)?;
    opts.connect(servers).await.map_err(|e| BusError::Connect { url: cfg.url.clone(), reason: e.to_string() })
}

/// The servers of a comma-separated URL list (`nats://a:4222,nats://b:4222,…`, the nodes of a
/// cluster): the client connects to one and fails over to the others. An empty entry or one
/// that is not a NATS URL is refused by name.
pub fn server_addrs(urls: &str) -> Result<Vec<async_nats::ServerAddr>, BusError> {
    let bad = |reason: String| BusError::Connect { url: urls.to_string(), reason };
    let addrs = urls
        .split(',')
        .map(str::trim)
        .map(|u| {
            if u.is_empty() {
                return Err(bad("an empty server URL in the comma-separated list".into()));
            }
            u.parse::<async_nats::ServerAddr>().map_err(|e| bad(format!("`{u}`: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_list_names_every_server_and_a_bad_entry_is_refused_by_name() {
        let a = server_addrs("nats://127.0.0.1:4222, nats://127.0.0.1:4223,nats-3:4224").expect("three");
        let ports: Vec<u16> = a.iter().map(|s| s.port()).collect();
        assert_eq!(ports, [4222, 4223, 4224]);
        assert_eq!(server_addrs("nats://127.0.0.1:4222").expect("one").len(), 1);
        let e = server_addrs("nats://a:4222,,nats://b:4222").expect_err("empty entry").to_string();
        assert!(e.contains("empty server URL"), "{e}");
        let e = server_addrs("nats://a:4222,http://b:4222").expect_err("bad scheme").to_string();
        assert!(e.contains("`http://b:4222`"), "{e}");
    }
}
