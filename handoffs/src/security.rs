//! Least-privilege NATS: one user per agent role and one for the operator, each allowed to
//! publish and subscribe only where its real work takes it; optional TLS with a self-signed CA.
//!
//! `threadcycle nats-config --dir D [--tls]` calls [`generate`], which writes:
//!
//! - `D/nats.conf` (mode 0600: it holds the passwords): `listen`, `jetstream { store_dir,
//!   sync_interval: always }`, the `authorization { users = [...] }` block from
//!   [`server_config`] and, with TLS, a `tls { ... }` block;
//! - `D/<user>.env` (mode 0600) for `main`, `reader`, `writer`, `debug`, `documentation` and
//!   `operator`: `NATS_USER`, `NATS_PASSWORD` and, with TLS, `NATS_CA` — the variables the
//!   binary's NATS flags already read;
//! - with TLS: `D/tls/ca.pem`, `D/tls/ca-key.pem` (0600), `D/tls/server.pem`,
//!   `D/tls/server-key.pem` (0600). They are made by shelling out to the `openssl` command
//!   (OpenSSL 3; Debian's `openssl` package): an EC P-256 CA valid ten years and a server
//!   certificate signed by it for `localhost`, `nats` (the compose service) and `127.0.0.1`,
//!   valid 825 days. No Rust crypto crate is involved.
//!
//! Passwords are 32 bytes from `/dev/urandom`, hex-encoded. They never reach a log line: the
//! [`Credential`] `Debug` output is redacted and nothing in this module logs them.
//!
//! The permission table is [`permissions`]; the reasoning behind each rule is written next to
//! it. [`probe`] connects as every user against a running server and counts how many forbidden
//! publishes and subscriptions the server refuses (figures for `docs/RELIABILITY.md`).

use crate::ConnectConfig;
use protocol::Role;
use protocol::subjects as subj;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// What went wrong generating or probing a secured configuration.
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
    /// The `openssl` command failed or is missing.
    #[error("openssl: {0}")]
    Openssl(String),
    /// An env file is not one this module wrote.
    #[error("{path} is not a threadcycle NATS credentials file: {reason}")]
    BadEnvFile {
        /// Which file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A probe connection failed.
    #[error("cannot connect to NATS at {url} as `{user}`: {reason}")]
    Connect {
        /// Server URL.
        url: String,
        /// User name.
        user: String,
        /// Why.
        reason: String,
    },
}

fn io(op: &'static str, path: &Path, e: impl fmt::Display) -> SecurityError {
    SecurityError::Io { op, path: path.to_path_buf(), reason: e.to_string() }
}

/// Every user the generated configuration defines: the five agents, then the operator.
pub const USERS: [Role; 6] = [Role::Main, Role::Reader, Role::Writer, Role::Debug, Role::Documentation, Role::Operator];

/// Publish and subscribe rules of one NATS user. Deny wins over allow (server semantics).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Permissions {
    /// Subjects the user may publish to.
    pub publish_allow: Vec<String>,
    /// Carve-outs from `publish_allow`.
    pub publish_deny: Vec<String>,
    /// Subjects the user may subscribe to.
    pub subscribe_allow: Vec<String>,
    /// May publish one reply to the reply subject of each request it received
    /// (`allow_responses`): Main answering the operator, without a blanket `_INBOX.>` publish.
    pub allow_responses: bool,
}

impl Permissions {
    /// Whether the server would let this user publish to `subject` (responses aside).
    pub fn may_publish(&self, subject: &str) -> bool {
        self.publish_allow.iter().any(|p| subject_matches(p, subject))
            && !self.publish_deny.iter().any(|p| subject_matches(p, subject))
    }

    /// Whether the server would let this user subscribe to `subject` (a literal subject).
    pub fn may_subscribe(&self, subject: &str) -> bool {
        self.subscribe_allow.iter().any(|p| subject_matches(p, subject))
    }
}

/// NATS subject matching: `*` is one token, `>` one or more trailing tokens.
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Streams behind the KV buckets and the object store.
fn bucket_streams() -> Vec<String> {
    let mut v: Vec<String> = [
        subj::LEDGER_BUCKET,
        subj::CYCLES_BUCKET,
        subj::ESCALATIONS_BUCKET,
        subj::RESULTS_BUCKET,
        subj::HEARTBEATS_BUCKET,
    ]
    .iter()
    .map(|b| format!("KV_{b}"))
    .collect();
    v.push(format!("OBJ_{}", subj::BLOB_BUCKET));
    v
}

/// Consumer names of the roles that are not bound to a host (exact tokens), plus Main's
/// event follower. Host-bound roles (`reader-<host>`, `writer-<host>`) cannot be named by a
/// whole-token wildcard, so those roles get `*` with these names carved out.
const FIXED_CONSUMERS: [&str; 4] = ["main", "main-events", "debug", "documentation"];

/// Who hands packages to whom (sender, receiver): each pair lets the sender publish on
/// `tc.handoff.<receiver>.<sender>.>`.
pub const HANDOFF_EDGES: &[(Role, Role)] = &[
    (Role::Main, Role::Reader),
    (Role::Main, Role::Debug),
    (Role::Reader, Role::Writer),
    (Role::Writer, Role::Debug),
    (Role::Writer, Role::Documentation),
    (Role::Debug, Role::Documentation),
    (Role::Documentation, Role::Main),
    // Several hosts: each Reader's verification goes to Main, which places the models and hands
    // each Writer its share.
    (Role::Reader, Role::Main),
    (Role::Main, Role::Writer),
];

/// The permission table.
///
/// Every agent (what `Bus::open`, `consume`, KV and the object store really send):
/// - JetStream API, narrowed per stream instead of `$JS.API.>`: `$JS.API.INFO` (account
///   query before creating a bucket); `STREAM.INFO` and `STREAM.CREATE` of the three streams and
///   the six bucket streams only (any agent may start first and create them; CREATE of an
///   existing stream with another config fails, and `STREAM.UPDATE`/`DELETE` are allowed to
///   nobody, so no agent can re-route or drop a stream); reads of the buckets (`DIRECT.GET`,
///   `STREAM.MSG.GET`), ordered consumers on the buckets (`CONSUMER.CREATE`/`DELETE` of those
///   streams, `$JS.FC.<stream>.>` flow-control replies); `CONSUMER.INFO` (read-only).
/// - Its own handoff consumer: `CONSUMER.CREATE.TC_HANDOFFS.<name>.tc.handoff.<role>.>` — the
///   filter is part of the subject (the server checks it against the body), so an agent cannot
///   open a consumer on another role's packages; `CONSUMER.MSG.NEXT` and `$JS.ACK` of its own
///   consumer name.
/// - Its own events `tc.evt.*.<role>`, its own dead letters `tc.dlq.<role>`, its own heartbeat
///   key and its own ledger keys (`<consumer>.<package id>`).
/// - The object store: publishing chunks and metadata (`$O.tc_blobs.>`): any publisher may
///   offload a large package. `STREAM.PURGE.OBJ_tc_blobs` (which deleting an object, or
///   overwriting one, sends to drop its chunks) is allowed to nobody: `Bus::put_blob` never
///   overwrites (a different body for an existing key goes under a new key), so the store is
///   append-only and no agent can purge another's blobs.
/// - Subscribe only its own inbox `_INBOX.<role>.>` (API replies, publish acks, pull and
///   ordered-consumer delivery; `connect` sets the prefix from the user name), so no agent can
///   read another user's replies.
///
/// Per role, the handoff edges of the cycle ([`HANDOFF_EDGES`]) and the buckets it writes. A
/// handoff subject names receiver and sender (`tc.handoff.<to>.<from>.…`), and each user may
/// publish only with its own sender token, so the sender of every stored package is
/// authenticated; `consume` refuses an envelope whose `from` is not the subject's sender or
/// whose kind that sender may not send (`subjects::senders_of`: only Main sends cycle plans and
/// operator decisions, …).
/// - Main → `tc.handoff.reader.main.>` (cycle plan), `tc.handoff.debug.main.>` (operator
///   decision); writes `tc_cycles`; its event follower (`main-events` on `TC_EVENTS`);
///   subscribes `tc.svc.main.operator` and answers with `allow_responses`.
/// - Reader → `tc.handoff.writer.reader.>` (verification report).
/// - Writer → `tc.handoff.debug.writer.>` (escalation), `tc.handoff.documentation.writer.>`
///   (benchmark results); writes `tc_results`.
/// - Debug → `tc.handoff.documentation.debug.>` (troubleshooting log); writes `tc_escalations`.
/// - Documentation → `tc.handoff.main.documentation.>` (reports published); writes `tc_results`.
///
/// Operator (the CLI): publish `tc.svc.main.operator` only; subscribe `_INBOX.operator.>`
/// (replies) and `tc.evt.>` (`threadcycle up` follows events). No JetStream access: everything
/// else goes through Main.
///
/// Known limits, stated rather than hidden: Reader and Writer share the `*` consumer-name token,
/// so a compromised Reader could pull from `writer-<host>`; object metadata subjects are not
/// per owner, so an agent could write a deletion marker over another's blob (its chunks stay,
/// since nobody may purge, and the reader gets an error from the SHA-256 check or the missing
/// object, never other bytes).
pub fn permissions(role: Role) -> Permissions {
    let mut p = Permissions::default();
    let pub_ = |p: &mut Permissions, s: String| p.publish_allow.push(s);
    let inbox = format!("{}.>", subj::inbox_prefix(role.as_str()));
    if role == Role::Operator {
        pub_(&mut p, subj::OPERATOR_SUBJECT.into());
        p.subscribe_allow = vec![inbox, subj::EVENT_WILDCARD.into()];
        return p;
    }
    let r = role.as_str();
    // JetStream API, per stream.
    pub_(&mut p, "$JS.API.INFO".into());
    let mut streams: Vec<String> =
        [subj::HANDOFF_STREAM, subj::EVENT_STREAM, subj::DEAD_LETTER_STREAM].iter().map(|s| s.to_string()).collect();
    streams.extend(bucket_streams());
    for s in &streams {
        pub_(&mut p, format!("$JS.API.STREAM.INFO.{s}"));
        pub_(&mut p, format!("$JS.API.STREAM.CREATE.{s}"));
    }
    for s in bucket_streams() {
        pub_(&mut p, format!("$JS.API.DIRECT.GET.{s}"));
        pub_(&mut p, format!("$JS.API.DIRECT.GET.{s}.>"));
        pub_(&mut p, format!("$JS.API.STREAM.MSG.GET.{s}"));
        pub_(&mut p, format!("$JS.API.CONSUMER.CREATE.{s}"));
        pub_(&mut p, format!("$JS.API.CONSUMER.CREATE.{s}.>"));
        pub_(&mut p, format!("$JS.API.CONSUMER.DELETE.{s}.*"));
        pub_(&mut p, format!("$JS.FC.{s}.>"));
    }
    pub_(&mut p, "$JS.API.CONSUMER.INFO.>".into());
    // Its own handoff consumer and ledger/heartbeat keys.
    let name = if role.host_bound() { "*".to_string() } else { r.to_string() };
    pub_(&mut p, format!("$JS.API.CONSUMER.CREATE.{}.{name}.tc.handoff.{r}.>", subj::HANDOFF_STREAM));
    pub_(&mut p, format!("$JS.API.CONSUMER.MSG.NEXT.{}.{name}", subj::HANDOFF_STREAM));
    pub_(&mut p, format!("$JS.ACK.{}.{name}.>", subj::HANDOFF_STREAM));
    pub_(&mut p, format!("$KV.{}.{name}.>", subj::LEDGER_BUCKET));
    pub_(&mut p, format!("$KV.{}.{name}", subj::HEARTBEATS_BUCKET));
    if role.host_bound() {
        for n in FIXED_CONSUMERS {
            p.publish_deny.push(format!("$JS.API.CONSUMER.CREATE.{}.{n}.>", subj::HANDOFF_STREAM));
            p.publish_deny.push(format!("$JS.API.CONSUMER.MSG.NEXT.{}.{n}", subj::HANDOFF_STREAM));
            p.publish_deny.push(format!("$JS.ACK.{}.{n}.>", subj::HANDOFF_STREAM));
            p.publish_deny.push(format!("$KV.{}.{n}.>", subj::LEDGER_BUCKET));
            p.publish_deny.push(format!("$KV.{}.{n}", subj::HEARTBEATS_BUCKET));
        }
    }
    // Own events and dead letters; the object store.
    pub_(&mut p, format!("tc.evt.*.{r}"));
    pub_(&mut p, subj::dead_letter(role));
    pub_(&mut p, format!("$O.{}.>", subj::BLOB_BUCKET));
    p.subscribe_allow.push(inbox);
    // The edges of the cycle, with this role's own sender token.
    for (from, to) in HANDOFF_EDGES {
        if *from == role {
            pub_(&mut p, format!("tc.handoff.{}.{r}.>", to.as_str()));
        }
    }
    match role {
        Role::Main => {
            // Several hosts: Main keeps the hosts' reports and the placement in the results
            // bucket.
            pub_(&mut p, format!("$KV.{}.>", subj::RESULTS_BUCKET));
            pub_(&mut p, format!("$KV.{}.>", subj::CYCLES_BUCKET));
            pub_(&mut p, format!("$JS.API.CONSUMER.CREATE.{}.main-events", subj::EVENT_STREAM));
            pub_(&mut p, format!("$JS.API.CONSUMER.MSG.NEXT.{}.main-events", subj::EVENT_STREAM));
            pub_(&mut p, format!("$JS.ACK.{}.main-events.>", subj::EVENT_STREAM));
            p.subscribe_allow.push(subj::OPERATOR_SUBJECT.into());
            p.allow_responses = true;
        }
        Role::Reader => {}
        Role::Writer => {
            pub_(&mut p, format!("$KV.{}.>", subj::RESULTS_BUCKET));
        }
        Role::Debug => {
            pub_(&mut p, format!("$KV.{}.>", subj::ESCALATIONS_BUCKET));
        }
        Role::Documentation => {
            pub_(&mut p, format!("$KV.{}.>", subj::RESULTS_BUCKET));
        }
        Role::Operator => {}
    }
    p
}

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

/// TLS files of the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificate (clients pass it as `--nats-ca` / `NATS_CA`).
    pub ca_file: PathBuf,
    /// Server certificate.
    pub cert_file: PathBuf,
    /// Server private key.
    pub key_file: PathBuf,
    /// Require client certificates signed by the CA (mutual TLS).
    pub verify: bool,
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
        }
    }
}

/// What [`generate`] wrote.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The server configuration.
    pub config: PathBuf,
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
/// store `/data/jetstream`, monitoring on 8222).
pub fn generate(dir: &Path, tls: bool) -> Result<Generated, SecurityError> {
    generate_with(dir, &GenerateOptions { tls, ..Default::default() })
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
    let credentials = USERS.iter().map(|r| Credential::generate(*r)).collect::<Result<Vec<_>, _>>()?;
    let tls = if opts.tls { Some(make_certificates(&dir.join("tls"), &opts.tls_names)?) } else { None };
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
    let mut text = format!(
        "# NATS for threadcycle, generated by `threadcycle nats-config`. Holds passwords: keep it private (mode 0600).\n\
         # One user per agent role and one for the operator; permissions are least-privilege (see\n\
         # handoffs::security::permissions). Unauthenticated clients are refused.\n\n\
         server_name: {}\nlisten: {}\n",
        quote(&opts.server_name),
        quote(&opts.listen)
    );
    if let Some(h) = &opts.http {
        text.push_str(&format!("http: {}\n", quote(h)));
    }
    text.push_str(&format!(
        "\njetstream {{\n  store_dir: {}\n  sync_interval: always\n  max_file_store: 20GB\n  max_memory_store: 256MB\n}}\n\n",
        quote(&opts.store_dir)
    ));
    text.push_str(&server_config(&credentials, server_tls.as_ref()));
    write_private(&config, &text)?;
    let mut env_files = Vec::new();
    for c in &credentials {
        let path = dir.join(format!("{}.env", c.user()));
        write_private(&path, &env_text(c, client_ca.as_deref()))?;
        env_files.push((c.role, path));
    }
    Ok(Generated { config, env_files, tls, credentials })
}

fn openssl(args: &[&str], cwd: &Path) -> Result<(), SecurityError> {
    let out = Command::new("openssl").args(args).current_dir(cwd).stdin(std::process::Stdio::null()).output().map_err(
        |e| {
            SecurityError::Openssl(format!(
                "cannot run `openssl` ({e}); install it (Debian: apt-get install openssl) or generate without --tls"
            ))
        },
    )?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(SecurityError::Openssl(format!(
            "`openssl {}` failed: {}",
            args.first().copied().unwrap_or(""),
            err.trim()
        )));
    }
    Ok(())
}

#[cfg(unix)]
fn chmod_private(path: &Path) -> Result<(), SecurityError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| io("chmod", path, e))
}

#[cfg(not(unix))]
fn chmod_private(_path: &Path) -> Result<(), SecurityError> {
    Ok(())
}

/// Makes a self-signed CA and a server certificate for `names` (DNS names and IP addresses)
/// in `dir` with the `openssl` command. Keys are mode 0600.
pub fn make_certificates(dir: &Path, names: &[String]) -> Result<TlsFiles, SecurityError> {
    std::fs::create_dir_all(dir).map_err(|e| io("create", dir, e))?;
    let san = names
        .iter()
        .map(|n| if n.parse::<std::net::IpAddr>().is_ok() { format!("IP:{n}") } else { format!("DNS:{n}") })
        .collect::<Vec<_>>()
        .join(",");
    let cnf = dir.join("openssl.cnf");
    std::fs::write(
        &cnf,
        format!(
            "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = threadcycle\n\
             [ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\nsubjectKeyIdentifier = hash\n\
             [server]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage = serverAuth\nsubjectAltName = {san}\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n"
        ),
    )
    .map_err(|e| io("write", &cnf, e))?;
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    let mut ca = vec![
        "req",
        "-x509",
        "-config",
        "openssl.cnf",
        "-extensions",
        "ca",
        "-subj",
        "/CN=threadcycle NATS CA",
        "-days",
        "3650",
    ];
    ca.extend(ec);
    ca.extend(["-keyout", "ca-key.pem", "-out", "ca.pem"]);
    openssl(&ca, dir)?;
    let mut csr = vec!["req", "-new", "-config", "openssl.cnf", "-subj", "/CN=threadcycle NATS server"];
    csr.extend(ec);
    csr.extend(["-keyout", "server-key.pem", "-out", "server.csr"]);
    openssl(&csr, dir)?;
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-days",
            "825",
            "-extfile",
            "openssl.cnf",
            "-extensions",
            "server",
            "-out",
            "server.pem",
        ],
        dir,
    )?;
    for f in ["ca-key.pem", "server-key.pem"] {
        chmod_private(&dir.join(f))?;
    }
    for f in ["server.csr", "ca.srl"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    Ok(TlsFiles {
        ca_file: dir.join("ca.pem"),
        cert_file: dir.join("server.pem"),
        key_file: dir.join("server-key.pem"),
        verify: false,
    })
}

/// Concrete subjects `role` must NOT be able to publish to (handoffs meant for others' senders,
/// other roles' events, dead letters, ledger and heartbeat keys, other buckets, the operator
/// service, stream management). Destructive API probes name a stream that does not exist, so
/// a hole found by [`probe`] cannot destroy anything.
pub fn forbidden_publishes(role: Role) -> Vec<String> {
    let cycle = "probe";
    let host = "local";
    let mut v = Vec::new();
    // Every receiver with every sender token: another role's token is a forgery.
    for to in Role::AGENTS {
        for from in USERS {
            let s = if to.host_bound() {
                format!("tc.handoff.{}.{}.{host}.{cycle}", to.as_str(), from.as_str())
            } else {
                format!("tc.handoff.{}.{}.{cycle}", to.as_str(), from.as_str())
            };
            v.push(s);
        }
    }
    // Purging the blob store (a hole would find an invalid request body, not purge).
    v.push(format!("$JS.API.STREAM.PURGE.OBJ_{}", subj::BLOB_BUCKET));
    v.push(format!("$JS.API.STREAM.MSG.DELETE.OBJ_{}", subj::BLOB_BUCKET));
    for other in USERS {
        if other != role {
            v.push(format!("tc.evt.{cycle}.{}", other.as_str()));
            v.push(format!("tc.dlq.{}", other.as_str()));
            v.push(format!("$KV.{}.{}.probe", subj::LEDGER_BUCKET, other.as_str()));
            v.push(format!("$KV.{}.{}", subj::HEARTBEATS_BUCKET, other.as_str()));
        }
    }
    for b in [subj::CYCLES_BUCKET, subj::ESCALATIONS_BUCKET, subj::RESULTS_BUCKET] {
        v.push(format!("$KV.{b}.probe"));
    }
    v.push(subj::OPERATOR_SUBJECT.into());
    v.push(format!("_INBOX.probe.{}", role.as_str()));
    for api in ["STREAM.DELETE", "STREAM.UPDATE", "STREAM.PURGE", "STREAM.MSG.DELETE", "CONSUMER.DURABLE.CREATE"] {
        v.push(format!("$JS.API.{api}.TC_PROBE_NONEXISTENT"));
    }
    v.push("$JS.API.STREAM.CREATE.TC_PROBE_NONEXISTENT".into());
    for to in Role::AGENTS {
        if to != role {
            v.push(format!("$JS.API.CONSUMER.CREATE.{}.probe.tc.handoff.{}.>", subj::HANDOFF_STREAM, to.as_str()));
        }
    }
    v.push(format!("$JS.API.CONSUMER.CREATE.{}", subj::HANDOFF_STREAM));
    let p = permissions(role);
    v.retain(|s| !p.may_publish(s));
    v
}

/// Concrete subjects `role` must NOT be able to subscribe to.
pub fn forbidden_subscriptions(role: Role) -> Vec<String> {
    let mut v = vec![
        subj::OPERATOR_SUBJECT.to_string(),
        subj::HANDOFF_WILDCARD.into(),
        "tc.handoff.main.probe".into(),
        "$JS.ACK.>".into(),
        ">".into(),
        "_INBOX.>".into(),
    ];
    // Other users' replies.
    for other in USERS {
        if other != role {
            v.push(format!("{}.>", subj::inbox_prefix(other.as_str())));
        }
    }
    if role != Role::Operator {
        v.push(subj::EVENT_WILDCARD.into());
    }
    let p = permissions(role);
    v.retain(|s| !p.may_subscribe(s));
    v
}

/// What [`probe`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeReport {
    /// Forbidden publishes attempted.
    pub publishes_attempted: u32,
    /// Of those, refused by the server.
    pub publishes_refused: u32,
    /// Forbidden subscriptions attempted.
    pub subscriptions_attempted: u32,
    /// Of those, refused by the server.
    pub subscriptions_refused: u32,
    /// Connections without credentials or with a wrong password attempted.
    pub bad_logins_attempted: u32,
    /// Of those, refused.
    pub bad_logins_refused: u32,
    /// `user: subject` for every forbidden action the server did NOT refuse.
    pub holes: Vec<String>,
}

impl ProbeReport {
    /// One line per figure, for `docs/RELIABILITY.md`.
    pub fn lines(&self) -> String {
        format!(
            "forbidden publishes refused: {}/{}\nforbidden subscriptions refused: {}/{}\nbad logins refused: {}/{}\nholes: {}\n",
            self.publishes_refused,
            self.publishes_attempted,
            self.subscriptions_refused,
            self.subscriptions_attempted,
            self.bad_logins_refused,
            self.bad_logins_attempted,
            if self.holes.is_empty() { "none".to_string() } else { self.holes.join(", ") }
        )
    }
}

fn probe_options(tls_ca: Option<&Path>) -> async_nats::ConnectOptions {
    let mut o = async_nats::ConnectOptions::new().connection_timeout(Duration::from_secs(5)).max_reconnects(Some(0));
    if let Some(ca) = tls_ca {
        o = o.add_root_certificates(ca.to_path_buf()).require_tls(true);
    }
    o
}

/// Connects as `cred` with an event channel that carries the server's error lines
/// (`Permissions Violation for Publish to "…"`), for tests and [`probe`].
pub async fn connect_watching_errors(
    url: &str,
    cred: &Credential,
    tls_ca: Option<&Path>,
) -> Result<(async_nats::Client, tokio::sync::mpsc::UnboundedReceiver<String>), SecurityError> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let client = probe_options(tls_ca)
        .custom_inbox_prefix(crate::inbox_prefix_for(Some(cred.user())))
        .user_and_password(cred.user().into(), cred.password.clone())
        .name(format!("threadcycle-probe-{}", cred.user()))
        .event_callback(move |ev| {
            let tx = tx.clone();
            async move {
                if let async_nats::Event::ServerError(e) = ev {
                    let _ = tx.send(e.to_string());
                }
            }
        })
        .connect(url)
        .await
        .map_err(|e| SecurityError::Connect { url: url.into(), user: cred.user().into(), reason: e.to_string() })?;
    Ok((client, rx))
}

/// Waits up to `within` for a server error line containing `needle` (case-insensitive).
pub async fn refused(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>, needle: &str, within: Duration) -> bool {
    let needle = needle.to_lowercase();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(line)) if line.to_lowercase().contains(&needle) => return true,
            Ok(Some(_)) => continue,
            _ => return false,
        }
    }
}

/// Connects as every user in `creds` and tries every forbidden publish and subscription of
/// its role, then tries to log in with no credentials and with a wrong password; counts what the
/// server refused. A forbidden publish carries a payload that is not a package, so even a hole
/// would only produce a dead letter. Each refusal arrives within milliseconds; a hole costs
/// `wait` before it is counted.
pub async fn probe(
    url: &str,
    creds: &[Credential],
    tls_ca: Option<&Path>,
    wait: Duration,
) -> Result<ProbeReport, SecurityError> {
    let mut r = ProbeReport::default();
    for cred in creds {
        let (client, mut errors) = connect_watching_errors(url, cred, tls_ca).await?;
        for subject in forbidden_publishes(cred.role) {
            r.publishes_attempted += 1;
            let sent = client.publish(subject.clone(), "threadcycle-permission-probe".into()).await.is_ok();
            let _ = client.flush().await;
            if sent && refused(&mut errors, &format!("Permissions Violation for Publish to \"{subject}\""), wait).await
            {
                r.publishes_refused += 1;
            } else {
                r.holes.push(format!("{} publish {subject}", cred.user()));
            }
        }
        for subject in forbidden_subscriptions(cred.role) {
            r.subscriptions_attempted += 1;
            let sub = client.subscribe(subject.clone()).await;
            let _ = client.flush().await;
            if sub.is_ok()
                && refused(&mut errors, &format!("Permissions Violation for Subscription to \"{subject}\""), wait).await
            {
                r.subscriptions_refused += 1;
            } else {
                r.holes.push(format!("{} subscribe {subject}", cred.user()));
            }
        }
        drop(client);
    }
    // Strangers.
    let attempts: Vec<Option<(String, String)>> = vec![
        None,
        Some(("main".into(), "not-the-password".into())),
        Some(("operator".into(), String::new())),
        Some(("nobody".into(), "x".into())),
    ];
    for a in attempts {
        r.bad_logins_attempted += 1;
        let mut o = probe_options(tls_ca);
        if let Some((u, p)) = &a {
            o = o.user_and_password(u.clone(), p.clone());
        }
        let outcome = tokio::time::timeout(Duration::from_secs(10), async {
            let c = o.connect(url).await?;
            // Some servers admit the socket and refuse at the first round trip.
            c.flush().await.map_err(|e| std::io::Error::other(e.to_string()))?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(c)
        })
        .await;
        match outcome {
            Ok(Ok(_)) => r.holes.push(format!("login as {}", a.map(|(u, _)| u).unwrap_or_else(|| "anonymous".into()))),
            _ => r.bad_logins_refused += 1,
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{CycleId, HostId};

    #[test]
    fn wildcards_match_like_the_server() {
        assert!(subject_matches("tc.handoff.main.>", "tc.handoff.main.c1"));
        assert!(subject_matches("tc.handoff.writer.*.local.>", "tc.handoff.writer.reader.local.c1"));
        assert!(!subject_matches("tc.handoff.main.>", "tc.handoff.main"));
        assert!(subject_matches("tc.evt.*.reader", "tc.evt.c1.reader"));
        assert!(!subject_matches("tc.evt.*.reader", "tc.evt.c1.writer"));
        assert!(subject_matches("$JS.API.INFO", "$JS.API.INFO"));
        assert!(!subject_matches("$JS.API.INFO", "$JS.API.INFO.x"));
    }

    /// The table lets each role do what its code does.
    #[test]
    fn every_role_may_do_its_real_work() {
        let c = CycleId::parse("c1").expect("id");
        let h = HostId::local();
        let edges = HANDOFF_EDGES;
        for (from, to) in edges {
            assert!(permissions(*from).may_publish(&subj::handoff(*from, *to, &h, &c)), "{from} → {to}");
        }
        for from in Role::AGENTS {
            for to in Role::AGENTS {
                if !edges.contains(&(from, to)) {
                    assert!(
                        !permissions(from).may_publish(&subj::handoff(from, to, &h, &c)),
                        "{from} must not send to {to}"
                    );
                }
                // Nobody may use another role's sender token.
                for forged in USERS {
                    if forged != from {
                        assert!(
                            !permissions(from).may_publish(&subj::handoff(forged, to, &h, &c)),
                            "{from} may pose as {forged} towards {to}"
                        );
                    }
                }
            }
            let p = permissions(from);
            assert!(p.may_publish(&subj::event(&c, from)));
            assert!(p.may_publish(&subj::dead_letter(from)));
            let name = subj::consumer_name(from, &h);
            assert!(p.may_publish(&format!(
                "$JS.API.CONSUMER.CREATE.TC_HANDOFFS.{name}.{}",
                subj::handoff_filter(from, &h)
            )));
            assert!(p.may_publish(&format!("$JS.API.CONSUMER.MSG.NEXT.TC_HANDOFFS.{name}")));
            assert!(p.may_publish(&format!("$KV.tc_ledger.{name}.0190")));
            assert!(p.may_subscribe(&format!("_INBOX.{}.abc.1", from.as_str())));
            assert!(!p.may_subscribe("_INBOX.abc.1"));
            assert!(!p.may_publish("$JS.API.STREAM.PURGE.OBJ_tc_blobs"));
            assert!(!p.may_subscribe(subj::OPERATOR_SUBJECT) || from == Role::Main);
            assert!(!p.may_publish(subj::OPERATOR_SUBJECT));
        }
        let op = permissions(Role::Operator);
        assert!(op.may_publish(subj::OPERATOR_SUBJECT));
        assert!(op.may_subscribe("tc.evt.c1.main"));
        assert!(!op.may_publish("$JS.API.INFO"));
        assert!(permissions(Role::Main).may_subscribe(subj::OPERATOR_SUBJECT));
        // Host-bound roles cannot take over the fixed consumers.
        let r = permissions(Role::Reader);
        assert!(!r.may_publish("$JS.API.CONSUMER.MSG.NEXT.TC_HANDOFFS.main"));
        assert!(!r.may_publish("$JS.API.CONSUMER.CREATE.TC_HANDOFFS.main.tc.handoff.reader.local.>"));
        assert!(!r.may_publish("$KV.tc_heartbeats.documentation"));
        assert!(r.may_publish("$KV.tc_heartbeats.reader-local"));
    }

    #[test]
    fn every_role_has_forbidden_probes_and_they_are_forbidden() {
        for role in USERS {
            let f = forbidden_publishes(role);
            assert!(f.len() >= 20, "{role}: {}", f.len());
            assert!(!forbidden_subscriptions(role).is_empty());
        }
        assert!(
            forbidden_publishes(Role::Documentation)
                .contains(&"tc.handoff.reader.documentation.local.probe".to_string())
        );
        assert!(forbidden_publishes(Role::Reader).contains(&"tc.handoff.debug.reader.probe".to_string()));
        assert!(forbidden_publishes(Role::Writer).contains(&"tc.handoff.debug.main.probe".to_string()));
        assert!(forbidden_subscriptions(Role::Writer).contains(&"_INBOX.main.>".to_string()));
    }

    #[test]
    fn config_quotes_subjects_and_hides_nothing_it_should_not() {
        let c = Credential::new(Role::Main, "s3cret");
        let text = server_config(std::slice::from_ref(&c), None);
        assert!(text.contains("\"$JS.API.INFO\""));
        assert!(text.contains("allow_responses: true"));
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
