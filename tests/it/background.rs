//! A `threadcycle` command running in the background, its output going to files, for the tests
//! that act on a cycle while it runs (kill an agent, Ctrl-C, resume): wait for runs measured or
//! a log line, signal it, wait for it to end, read its cycle id.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The command, with its stdout and stderr in files; killed when dropped.
pub struct Background {
    pub child: Child,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Background {
    /// Starts `cmd` with its output in `<files>.stdout` and `<files>.stderr`, `XDG_STATE_HOME`
    /// set to `state` (where `up` keeps its cycles).
    pub fn spawn(mut cmd: Command, state: &Path, files: &Path) -> Background {
        let (stdout, stderr) = (files.with_extension("stdout"), files.with_extension("stderr"));
        let child = cmd
            .env("XDG_STATE_HOME", state)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("run threadcycle");
        Background { child, stdout, stderr }
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn output(&self) -> String {
        format!("--- stdout\n{}\n--- stderr\n{}", self.stdout(), self.stderr())
    }

    /// Runs measured so far, from the plain progress lines (each says `TTFT`).
    pub fn measured(&self) -> usize {
        self.stdout().matches(" TTFT ").count()
    }

    /// Waits until `n` runs were measured; fails if the command ends first or `secs` pass.
    pub fn wait_measured(&mut self, n: usize, secs: u64) {
        self.wait_until(&format!("{n} run(s) measured"), secs, |b| b.measured() >= n);
    }

    /// Waits until `done` holds; fails if the command ends first or `secs` pass.
    pub fn wait_until(&mut self, what: &str, secs: u64, done: impl Fn(&Background) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !done(self) {
            assert!(self.child.try_wait().expect("wait").is_none(), "ended before {what}:\n{}", self.output());
            assert!(Instant::now() < deadline, "no {what} within {secs} s:\n{}", self.output());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends `sig` to the command itself.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        signal(self.child.id(), sig);
    }

    /// Waits for the command to exit; its exit code. Fails (after killing it) past `secs`.
    pub fn wait(&mut self, secs: u64) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("it did not end within {secs} s:\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The cycle's id, from the `cycle … started` (or `resumed`) line.
    pub fn cycle(&self) -> String {
        self.stdout()
            .lines()
            .find_map(|l| l.strip_prefix("cycle ")?.split_whitespace().next())
            .unwrap_or_else(|| panic!("no cycle id in the output:\n{}", self.output()))
            .to_string()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `sig` to process `pid`.
pub fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid"));
    nix::sys::signal::kill(pid, sig).expect("signal");
}

/// The agents' logs of `up`'s cycles kept under `state` (every restart appends to its file).
pub fn agent_log(state: &Path, role: &str) -> String {
    std::fs::read_dir(state.join("threadcycle/up"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|d| std::fs::read_to_string(d.path().join(format!("logs/{role}.log"))).unwrap_or_default())
        .collect()
}
