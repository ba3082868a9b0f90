//! How every command reaches NATS: the connection flags shared by the agents, `up` and the
//! operator's commands.

use clap::Args;
use handoffs::ConnectConfig;
use std::path::PathBuf;

/// NATS connection flags (flags override the environment).
#[derive(Debug, Args, Clone)]
pub struct NatsArgs {
    /// NATS server URL. `up` starts a private server when this is not given.
    #[arg(long = "nats", global = true, env = "NATS_URL")]
    pub url: Option<String>,
    /// NATS user.
    #[arg(long = "nats-user", global = true, env = "NATS_USER")]
    pub user: Option<String>,
    /// NATS password.
    #[arg(long = "nats-password", global = true, env = "NATS_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// NATS token.
    #[arg(long = "nats-token", global = true, env = "NATS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// NATS credentials file.
    #[arg(long = "nats-creds", global = true, env = "NATS_CREDS")]
    pub creds: Option<PathBuf>,
    /// CA certificate for TLS.
    #[arg(long = "nats-ca", global = true, env = "NATS_CA")]
    pub ca: Option<PathBuf>,
    /// Client certificate for mutual TLS.
    #[arg(long = "nats-cert", global = true, env = "NATS_CERT")]
    pub cert: Option<PathBuf>,
    /// Client key for mutual TLS.
    #[arg(long = "nats-key", global = true, env = "NATS_KEY")]
    pub key: Option<PathBuf>,
    /// Copies JetStream keeps of each stream and bucket an agent creates: 3 on a three-node
    /// cluster (`nats-config --cluster 3`), so losing one node loses nothing. Unset: detected,
    /// 1 on one server, 3 on a cluster that can hold them.
    #[arg(long = "nats-replicas", global = true, env = "THREADCYCLE_NATS_REPLICAS",
          value_parser = clap::value_parser!(u8).range(1..=5))]
    pub replicas: Option<u8>,
}

impl NatsArgs {
    /// The connection settings for `url`.
    pub fn config(&self, url: &str, name: &str, retry_initial: bool) -> ConnectConfig {
        ConnectConfig {
            url: url.into(),
            user: self.user.clone(),
            password: self.password.clone(),
            token: self.token.clone(),
            creds_file: self.creds.clone(),
            tls_ca: self.ca.clone(),
            tls_cert: self.cert.clone(),
            tls_key: self.key.clone(),
            require_tls: false,
            name: name.into(),
            retry_initial,
        }
    }

    /// The URL to use when none is given.
    pub fn url_or_default(&self) -> String {
        self.url.clone().unwrap_or_else(|| "nats://127.0.0.1:4222".into())
    }
}
