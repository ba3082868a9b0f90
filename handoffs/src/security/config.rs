//! The server's configuration and the credentials files: one password per user, the
//! `authorization` block made from the permission table, `nats.conf` and the `<user>.env`
//! files, all written mode 0600.

use super::certs::{TlsFiles, make_certificates};
use super::permissions::{USERS, permissions};
use super::{SecurityError, io, write_private};
use crate::ConnectConfig;
use protocol::Role;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

/// A user name (the role's name) and its password. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// Which role (the NATS user name is `role.as_str()`).
    pub role: Role,
    password: String,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential").field("user", &self.role.as_str()).field("password", &"<redacted>").finish()
    }
}

impl Credential {
    /// A credential with a given password.
    pub fn new(role: Role, password: impl Into<String>) -> Credential {
        Credential { role, password: password.into() }
    }

    /// A credential with a fresh random password.
    pub fn generate(role: Role) -> Result<Credential, SecurityError> {
        Ok(Credential { role, password: random_password()? })
    }

    /// The NATS user name.
    pub fn user(&self) -> &'static str {
        self.role.as_str()
    }

    /// The password (for connecting; never log it).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// A connection config for this user.
    pub fn connect_config(&self, url: &str, tls_ca: Option<&Path>) -> ConnectConfig {
        ConnectConfig {
            url: url.into(),
            user: Some(self.user().into()),
            password: Some(self.password.clone()),
            tls_ca: tls_ca.map(Path::to_path_buf),
            name: format!("threadcycle-{}", self.user()),
            ..Default::default()
        }
    }
}

/// 32 random bytes from `/dev/urandom`, hex-encoded (64 characters).
pub fn random_password() -> Result<String, SecurityError> {
    let path = Path::new("/dev/urandom");
    let mut f = std::fs::File::open(path).map_err(|e| io("open", path, e))?;
    let mut buf = [0u8; 32];
    f.read_exact(&mut buf).map_err(|e| io("read", path, e))?;
    Ok(hex::encode(buf))
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

fn list(items: &[String]) -> String {
    format!("[{}]", items.iter().map(|s| quote(s)).collect::<Vec<_>>().join(", "))
}

/// The `authorization { users = [...] }` block and, with `tls`, the `tls { ... }` block, ready to
/// append to a server config (`NatsServer::start_in(dir, &server_config(..))` in tests).
/// No `no_auth_user` and no `accounts` block: an unauthenticated client is refused.
pub fn server_config(users: &[Credential], tls: Option<&TlsFiles>) -> String {
    let mut out = String::from("authorization {\n  users = [\n");
    for c in users {
        let p = permissions(c.role);
        let mut publish = format!("allow: {}", list(&p.publish_allow));
        if !p.publish_deny.is_empty() {
            publish.push_str(&format!(", deny: {}", list(&p.publish_deny)));
        }
        let responses = if p.allow_responses { ", allow_responses: true" } else { "" };
        out.push_str(&format!(
            "    {{ user: {}, password: {}, permissions: {{ publish: {{ {publish} }}, subscribe: {{ allow: {} }}{responses} }} }}\n",
            quote(c.user()),
            quote(&c.password),
            list(&p.subscribe_allow),
        ));
    }
    out.push_str("  ]\n}\n");
    if let Some(t) = tls {
        out.push_str(&format!(
            "tls {{\n  cert_file: {}\n  key_file: {}\n  ca_file: {}\n  verify: {}\n  timeout: 2\n}}\n",
            quote(&t.cert_file.display().to_string()),
            quote(&t.key_file.display().to_string()),
            quote(&t.ca_file.display().to_string()),
            t.verify
        ));
    }
    out
}

/// How [`generate_with`] lays out the server config.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// Make a CA and a server certificate and require TLS.
    pub tls: bool,
    /// `listen` address (default `0.0.0.0:4222`, what docker-compose.yml publishes).
    pub listen: String,
    /// `server_name`.
    pub server_name: String,
    /// JetStream `store_dir` (default `/data/jetstream`, the compose volume).
    pub store_dir: String,
    /// Monitoring listener (`/healthz` for the compose healthcheck); `None` for none.
    pub http: Option<String>,
    /// Where `dir` is seen by the server (for the TLS file paths in the config), e.g.
    /// `/etc/nats` when the folder is mounted there; default: `dir` itself, made absolute.
    pub server_dir: Option<PathBuf>,
    /// Where `dir` is seen by the agents and the CLI (for `NATS_CA` in the env files), e.g.
    /// `/etc/threadcycle/nats` inside the agents' containers; default: `dir`, made absolute.
    pub client_dir: Option<PathBuf>,
    /// Names and addresses the server certificate is valid for.
    pub tls_names: Vec<String>,
    /// Nodes of a cluster (docker-compose.yml's `cluster` profile): 0 or 1 for one server;
    /// 3 or 5 for `nats.conf` (service `nats`) plus `nats-<i>.conf` (services `nats-<i>`),
    /// joined by password-authenticated routes on port 6222, and `cluster.env`.
    pub cluster: usize,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            tls: false,
            listen: "0.0.0.0:4222".into(),
            server_name: "threadcycle".into(),
            store_dir: "/data/jetstream".into(),
            http: Some("0.0.0.0:8222".into()),
            server_dir: None,
            client_dir: None,
            tls_names: vec!["localhost".into(), "nats".into(), "127.0.0.1".into()],
            cluster: 0,
        }
    }
}

/// What [`generate`] wrote.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The server configuration (node 1's in a cluster).
    pub config: PathBuf,
    /// The other nodes' configurations (`nats-2.conf`, …); empty for one server.
    pub node_configs: Vec<PathBuf>,
    /// With a cluster, the compose variables that select it (`cluster.env`).
    pub cluster_env: Option<PathBuf>,
    /// One credentials file per user.
    pub env_files: Vec<(Role, PathBuf)>,
    /// The TLS files, as this machine sees them.
    pub tls: Option<TlsFiles>,
    /// The users and their passwords (redacted in `Debug`).
    pub credentials: Vec<Credential>,
}

impl Generated {
    /// The credential of one user.
    pub fn credential(&self, role: Role) -> Option<&Credential> {
        self.credentials.iter().find(|c| c.role == role)
    }

    /// A summary safe to print (no secret).
    pub fn summary(&self) -> String {
        let mut s = format!("wrote {}\n", self.config.display());
        for c in &self.node_configs {
            s.push_str(&format!("wrote {}\n", c.display()));
        }
        if let Some(c) = &self.cluster_env {
            s.push_str(&format!(
                "wrote {} (the compose profile `cluster`: `cat {} >> .env`, then `docker compose up -d`)\n",
                c.display(),
                c.display()
            ));
        }
        for (role, path) in &self.env_files {
            s.push_str(&format!("wrote {} (credentials of the `{}` user, mode 0600)\n", path.display(), role.as_str()));
        }
        if let Some(t) = &self.tls {
            s.push_str(&format!("wrote {} (give it to clients as --nats-ca / NATS_CA)\n", t.ca_file.display()));
            s.push_str(&format!("wrote {} and its key\n", t.cert_file.display()));
        }
        s
    }
}

fn env_text(c: &Credential, ca: Option<&Path>) -> String {
    let mut s = format!(
        "# threadcycle: NATS credentials of the `{}` user. Keep private (mode 0600); never paste it into an issue or a log.\nNATS_USER={}\nNATS_PASSWORD={}\n",
        c.user(),
        c.user(),
        c.password
    );
    if let Some(ca) = ca {
        s.push_str(&format!("NATS_CA={}\n", ca.display()));
    }
    s
}

/// Reads a credentials file written by [`generate`].
pub fn read_env_file(path: &Path) -> Result<Credential, SecurityError> {
    let text = std::fs::read_to_string(path).map_err(|e| io("read", path, e))?;
    let bad = |reason: &str| SecurityError::BadEnvFile { path: path.to_path_buf(), reason: reason.into() };
    let get =
        |key: &str| text.lines().find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')).map(str::trim));
    let user = get("NATS_USER").ok_or_else(|| bad("no NATS_USER line"))?;
    let password = get("NATS_PASSWORD").ok_or_else(|| bad("no NATS_PASSWORD line"))?;
    let role: Role = user.parse().map_err(|_| bad("NATS_USER is not a threadcycle role"))?;
    Ok(Credential::new(role, password))
}

/// [`generate_with`] with the defaults docker-compose.yml runs (listen `0.0.0.0:4222`,
/// store `/data/jetstream`, monitoring on 8222); `cluster` nodes (0: one server).
pub fn generate(dir: &Path, tls: bool, cluster: usize) -> Result<Generated, SecurityError> {
    generate_with(dir, &GenerateOptions { tls, cluster, ..Default::default() })
}

/// Writes `nats.conf`, one `<user>.env` per user and, with TLS, the CA and server certificate.
/// Refuses to overwrite an existing `nats.conf`.
pub fn generate_with(dir: &Path, opts: &GenerateOptions) -> Result<Generated, SecurityError> {
    std::fs::create_dir_all(dir).map_err(|e| io("create", dir, e))?;
    let dir = std::path::absolute(dir).map_err(|e| io("resolve", dir, e))?;
    let config = dir.join("nats.conf");
    if config.exists() {
        return Err(SecurityError::Exists(config));
    }
    let nodes = match opts.cluster {
        0 | 1 => 1,
        n @ (3 | 5) => n,
        n => {
            return Err(SecurityError::BadCluster(format!(
                "{n} nodes: a cluster has 3 or 5 (an odd count, so a majority survives losing a node)"
            )));
        }
    };
    let credentials = USERS.iter().map(|r| Credential::generate(*r)).collect::<Result<Vec<_>, _>>()?;
    let mut tls_names = opts.tls_names.clone();
    tls_names.extend((2..=nodes).map(node_host));
    let tls = if opts.tls { Some(make_certificates(&dir.join("tls"), &tls_names)?) } else { None };
    // The paths the server sees.
    let seen_from = |base: &Option<PathBuf>, p: &Path| match base {
        Some(b) => b.join(p.strip_prefix(&dir).unwrap_or(p)),
        None => p.to_path_buf(),
    };
    let server_tls = tls.as_ref().map(|t| TlsFiles {
        ca_file: seen_from(&opts.server_dir, &t.ca_file),
        cert_file: seen_from(&opts.server_dir, &t.cert_file),
        key_file: seen_from(&opts.server_dir, &t.key_file),
        verify: t.verify,
    });
    let client_ca = tls.as_ref().map(|t| seen_from(&opts.client_dir, &t.ca_file));
    let authorization = server_config(&credentials, server_tls.as_ref());
    let route_password = if nodes > 1 { Some(random_password()?) } else { None };
    let mut node_configs = Vec::new();
    for i in 1..=nodes {
        let text = node_config(opts, i, nodes, route_password.as_deref(), &authorization);
        if i == 1 {
            write_private(&config, &text)?;
        } else {
            let path = dir.join(format!("nats-{i}.conf"));
            write_private(&path, &text)?;
            node_configs.push(path);
        }
    }
    let cluster_env = if nodes > 1 {
        let path = dir.join("cluster.env");
        let urls = (1..=nodes).map(|i| format!("nats://{}:4222", node_host(i))).collect::<Vec<_>>().join(",");
        write_private(
            &path,
            &format!(
                "# threadcycle: docker-compose.yml's `cluster` profile ({nodes} NATS nodes; the compose file\n\
                 # runs 3). Add these lines to the .env beside docker-compose.yml:\n\
                 #   cat {} >> .env\n\
                 COMPOSE_PROFILES=cluster\nTHREADCYCLE_NATS_URL={urls}\nTHREADCYCLE_NATS_REPLICAS=3\n",
                path.display()
            ),
        )?;
        Some(path)
    } else {
        None
    };
    let mut env_files = Vec::new();
    for c in &credentials {
        let path = dir.join(format!("{}.env", c.user()));
        write_private(&path, &env_text(c, client_ca.as_deref()))?;
        env_files.push((c.role, path));
    }
    Ok(Generated { config, node_configs, cluster_env, env_files, tls, credentials })
}

/// The compose service (and host name) of cluster node `i`: `nats`, `nats-2`, `nats-3`, …
fn node_host(i: usize) -> String {
    if i == 1 { "nats".into() } else { format!("nats-{i}") }
}

/// One server's configuration: node `i` of `nodes` (1 of 1: one server).
fn node_config(opts: &GenerateOptions, i: usize, nodes: usize, route_password: Option<&str>, auth: &str) -> String {
    let name = if nodes > 1 { format!("{}-{i}", opts.server_name) } else { opts.server_name.clone() };
    let mut text = format!(
        "# NATS for threadcycle, generated by `threadcycle nats-config`. Holds passwords: keep it private (mode 0600).\n\
         # One user per agent role and one for the operator; permissions are least-privilege (see\n\
         # handoffs::security::permissions). Unauthenticated clients are refused.\n\n\
         server_name: {}\nlisten: {}\n",
        quote(&name),
        quote(&opts.listen)
    );
    if let Some(h) = &opts.http {
        text.push_str(&format!("http: {}\n", quote(h)));
    }
    text.push_str(&format!(
        "\njetstream {{\n  store_dir: {}\n  sync_interval: always\n  max_file_store: 20GB\n  max_memory_store: 256MB\n}}\n\n",
        quote(&opts.store_dir)
    ));
    if let Some(pw) = route_password {
        // Routes inside the compose network, authenticated with their own password; clients
        // are told only the URLs they were given (`no_advertise`: the containers' addresses
        // mean nothing on the host).
        let routes = (1..=nodes)
            .map(|j| quote(&format!("nats-route://route:{pw}@{}:6222", node_host(j))))
            .collect::<Vec<_>>()
            .join(", ");
        text.push_str(&format!(
            "# Node {i} of {nodes}: streams and buckets are replicated 3 times (THREADCYCLE_NATS_REPLICAS=3).\n\
             cluster {{\n  name: \"threadcycle\"\n  listen: \"0.0.0.0:6222\"\n  no_advertise: true\n  \
             authorization {{ user: \"route\", password: {} }}\n  routes: [{routes}]\n}}\n\n",
            quote(pw)
        ));
    }
    text.push_str(auth);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_quotes_subjects_and_hides_nothing_it_should_not() {
        let c = Credential::new(Role::Main, "s3cret");
        let text = server_config(std::slice::from_ref(&c), None);
        assert!(text.contains("\"$JS.API.INFO\""));
        assert!(text.contains("allow_responses: true"));
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
