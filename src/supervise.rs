//! `up`'s agents, supervised the way a service manager does it: an agent that exits while the
//! cycle runs (a panic, the OOM killer, SIGKILL) is restarted with the same arguments and
//! environment, its log appended to, after a backoff that doubles with each crash; one that
//! crashes more than `max_crashes` times within `window` is given up on, by name.
//!
//! Restarting is safe because the agents are built for it: durable consumers redeliver what a
//! dead agent had not acknowledged, the ledger keeps a package from being applied twice, and a
//! restarted Writer stops the engines its predecessor left (pid files in its run dir).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// The environment variable through which an agent learns that `up` supervises it: the value is
/// `up`'s pid, and the agent asks the kernel to SIGTERM it should that process die.
pub const SUPERVISOR_ENV: &str = "THREADCYCLE_SUPERVISOR_PID";

/// How one agent process is started; the same every time it is restarted.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    /// Its name in messages and its log file's stem (`writer`, `reader-gpu2`).
    pub tag: String,
    /// The program (the `threadcycle` binary itself).
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Environment variables set (`Some`) or removed (`None`).
    pub env: Vec<(String, Option<String>)>,
    /// Its log (stdout and stderr), appended to across restarts.
    pub log: PathBuf,
}

/// When to restart an agent and when to give up on it.
#[derive(Debug, Clone, Copy)]
pub struct RestartPolicy {
    /// Crashes tolerated within `window`; one more and the agent is given up on.
    pub max_crashes: usize,
    /// The window crashes are counted in.
    pub window: Duration,
    /// The wait before the first restart; it doubles with each crash in the window.
    pub first_backoff: Duration,
    /// The longest wait before a restart.
    pub max_backoff: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            max_crashes: 5,
            window: Duration::from_secs(600),
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
        }
    }
}

impl RestartPolicy {
    /// The wait before restarting after the `n`th crash in the window (n ≥ 1).
    fn backoff(&self, n: usize) -> Duration {
        let doublings = u32::try_from(n.saturating_sub(1)).unwrap_or(u32::MAX).min(16);
        self.first_backoff.saturating_mul(1 << doublings).min(self.max_backoff)
    }
}

/// Something supervision did, to be shown to the operator.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// An agent exited; it will be restarted after `restart_in`.
    Crashed {
        /// The agent.
        tag: String,
        /// How it exited (`signal: 9 (SIGKILL)`, `exit status: 101`).
        status: String,
        /// The last lines of its log.
        log_tail: Vec<String>,
        /// Crashes within the window so far, this one included.
        crashes: usize,
        /// The wait before its restart.
        restart_in: Duration,
    },
    /// An agent was started again.
    Restarted {
        /// The agent.
        tag: String,
        /// Its new pid.
        pid: Option<u32>,
    },
    /// An agent crashed once too often within the window: it stays down.
    GaveUp {
        /// The agent.
        tag: String,
        /// How it exited the last time.
        status: String,
        /// Crashes within the window.
        crashes: usize,
        /// The window.
        window: Duration,
        /// The last lines of its log.
        log_tail: Vec<String>,
    },
}

/// An agent could not be started at all.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the {tag} agent: {reason}")]
pub struct StartError {
    /// The agent.
    pub tag: String,
    /// Why.
    pub reason: String,
}

/// Lines of an agent's log shown with its crash.
const LOG_TAIL_LINES: usize = 12;

/// One agent and its history.
struct Supervised {
    spec: AgentSpec,
    child: Option<Child>,
    crashes: VecDeque<Instant>,
    restart_at: Option<Instant>,
    given_up: bool,
}

/// The agents `up` runs, restarted when they crash.
pub struct Supervisor {
    agents: Vec<Supervised>,
    policy: RestartPolicy,
}

impl Supervisor {
    /// Starts every agent.
    pub fn start(specs: Vec<AgentSpec>, policy: RestartPolicy) -> Result<Supervisor, StartError> {
        let mut agents = Vec::with_capacity(specs.len());
        for spec in specs {
            let child = spawn(&spec)?;
            agents.push(Supervised {
                spec,
                child: Some(child),
                crashes: VecDeque::new(),
                restart_at: None,
                given_up: false,
            });
        }
        Ok(Supervisor { agents, policy })
    }

    /// Notes the agents that exited since the last call and restarts those whose backoff is
    /// over. Call it often: an agent is down from its crash until the call after its backoff.
    pub fn check(&mut self) -> Vec<Notice> {
        let now = Instant::now();
        let mut notices = Vec::new();
        for a in &mut self.agents {
            if a.given_up {
                continue;
            }
            if let Some(child) = a.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                a.child = None;
                while a.crashes.front().is_some_and(|t| now.duration_since(*t) > self.policy.window) {
                    a.crashes.pop_front();
                }
                a.crashes.push_back(now);
                let crashes = a.crashes.len();
                let log_tail = log_tail(&a.spec);
                let status = status.to_string();
                if crashes > self.policy.max_crashes {
                    a.given_up = true;
                    notices.push(Notice::GaveUp {
                        tag: a.spec.tag.clone(),
                        status,
                        crashes,
                        window: self.policy.window,
                        log_tail,
                    });
                    continue;
                }
                let restart_in = self.policy.backoff(crashes);
                a.restart_at = Some(now + restart_in);
                notices.push(Notice::Crashed { tag: a.spec.tag.clone(), status, log_tail, crashes, restart_in });
            }
            if a.child.is_none() && a.restart_at.is_some_and(|t| t <= now) {
                a.restart_at = None;
                mark_log(&a.spec, "restarted by `threadcycle up` after a crash");
                match spawn(&a.spec) {
                    Ok(child) => {
                        notices.push(Notice::Restarted { tag: a.spec.tag.clone(), pid: child.id() });
                        a.child = Some(child);
                    }
                    Err(e) => {
                        // Not starting is a crash too: it counts, and the next try waits longer.
                        a.crashes.push_back(now);
                        let crashes = a.crashes.len();
                        if crashes > self.policy.max_crashes {
                            a.given_up = true;
                            notices.push(Notice::GaveUp {
                                tag: a.spec.tag.clone(),
                                status: e.reason,
                                crashes,
                                window: self.policy.window,
                                log_tail: Vec::new(),
                            });
                        } else {
                            let restart_in = self.policy.backoff(crashes);
                            a.restart_at = Some(now + restart_in);
                            notices.push(Notice::Crashed {
                                tag: a.spec.tag.clone(),
                                status: e.reason,
                                log_tail: Vec::new(),
                                crashes,
                                restart_in,
                            });
                        }
                    }
                }
            }
        }
        notices
    }

    /// The pid of each running agent, by name.
    #[cfg(test)]
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.agents.iter().filter_map(|a| Some((a.spec.tag.clone(), a.child.as_ref()?.id()?))).collect()
    }

    /// Stops every agent: SIGTERM, then SIGKILL for one still running after 15 s. Nothing is
    /// restarted afterwards.
    pub async fn stop(&mut self) {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        for a in &mut self.agents {
            a.restart_at = None;
            a.given_up = true;
            if let Some(pid) = a.child.as_ref().and_then(Child::id).and_then(|p| i32::try_from(p).ok()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
        }
        for a in &mut self.agents {
            if let Some(c) = a.child.as_mut()
                && tokio::time::timeout(Duration::from_secs(15), c.wait()).await.is_err()
            {
                tracing::warn!(message = "Agent did not stop in time; killing it.", agent = %a.spec.tag);
                let _ = c.kill().await;
            }
            a.child = None;
        }
    }
}

/// Starts one agent: its own process group (so a Ctrl-C on the terminal reaches `up`, which
/// decides what the agents do), its log appended to, and killed if `up` drops it.
fn spawn(spec: &AgentSpec) -> Result<Child, StartError> {
    let fail = |reason: String| StartError { tag: spec.tag.clone(), reason };
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)
        .map_err(|e| fail(format!("cannot open its log {}: {e}", spec.log.display())))?;
    let err = log.try_clone().map_err(|e| fail(e.to_string()))?;
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args);
    for (k, v) in &spec.env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.env(SUPERVISOR_ENV, std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(err))
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| fail(e.to_string()))
}

/// The last lines of an agent's log, without the colours its log lines are written with.
fn log_tail(spec: &AgentSpec) -> Vec<String> {
    host::process::tail_file(&spec.log, LOG_TAIL_LINES).iter().map(|l| strip_ansi(l)).collect()
}

/// `text` without ANSI escape sequences (`ESC [ … letter`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A line in an agent's log that says what supervision did, so the log reads in order.
fn mark_log(spec: &AgentSpec, what: &str) {
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(&spec.log) {
        let _ = writeln!(f, "--- {} {what} ---", chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ"));
    }
}

/// Called by an agent at start: when `up` supervises it, the kernel sends it SIGTERM should
/// `up` die (even by SIGKILL), so it stops its engine rather than living on as an orphan.
/// Returns false when `up` is already gone.
pub fn follow_supervisor() -> bool {
    let Some(pid) = std::env::var(SUPERVISOR_ENV).ok().and_then(|p| p.parse::<i32>().ok()) else { return true };
    if let Err(error) = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM) {
        tracing::warn!(message = "Cannot ask to be stopped with `threadcycle up`.", %error);
    }
    // The parent may have died before the request was made.
    nix::unistd::getppid().as_raw() == pid
}

/// `threadcycle exec-with-parent --parent PID -- CMD…`: becomes `CMD…` (exec), asking the
/// kernel first for SIGTERM should `PID`, its parent, die. This is how `up` ties its nats-server
/// to its own life without unsafe code between fork and exec. Returns only on failure.
pub fn exec_with_parent(parent: i32, command: &[OsString]) -> u8 {
    use std::os::unix::process::CommandExt;
    let Some((program, args)) = command.split_first() else { return crate::exit::BAD_INPUT };
    if let Err(e) = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM) {
        eprintln!("error: cannot ask to be stopped with my parent: {e}");
        return crate::exit::FAILED;
    }
    if nix::unistd::getppid().as_raw() != parent {
        eprintln!("error: the parent {parent} is gone");
        return crate::exit::FAILED;
    }
    let e = std::process::Command::new(program).args(args).exec();
    eprintln!("error: cannot run {}: {e}", program.to_string_lossy());
    crate::exit::FAILED
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(dir: &std::path::Path, tag: &str, script: &str) -> AgentSpec {
        AgentSpec {
            tag: tag.into(),
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: vec![("TC_WORD".into(), Some("again".into())), ("TC_GONE".into(), None)],
            log: dir.join(format!("{tag}.log")),
        }
    }

    fn quick(max_crashes: usize) -> RestartPolicy {
        RestartPolicy {
            max_crashes,
            window: Duration::from_secs(60),
            first_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(80),
        }
    }

    /// Runs `check` until `done` says so (at most 20 s); returns every notice.
    async fn watch(s: &mut Supervisor, done: impl Fn(&[Notice]) -> bool) -> Vec<Notice> {
        let mut all = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done(&all) {
            assert!(Instant::now() < deadline, "supervision stalled: {all:?}");
            all.extend(s.check());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        all
    }

    #[test]
    fn log_tails_lose_their_colours() {
        let line = "\u{1b}[2m2026-11-30T13:12:46Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m Agent started. \u{1b}[3mrole\u{1b}[0m\u{1b}[2m=\u{1b}[0mwriter";
        assert_eq!(strip_ansi(line), "2026-11-30T13:12:46Z  INFO Agent started. role=writer");
        assert_eq!(strip_ansi("plain [text]"), "plain [text]");
    }

    #[test]
    fn backoff_doubles_up_to_its_ceiling() {
        let p = RestartPolicy::default();
        let secs: Vec<u64> = (1..=7).map(|n| p.backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30]);
    }

    #[tokio::test]
    async fn a_crashing_agent_is_restarted_the_same_way_then_given_up_on_by_name() {
        let dir = tempfile::tempdir().expect("tmp");
        let spec = sh(dir.path(), "writer", "echo \"run $TC_WORD ${TC_GONE:-unset}\"; exit 3");
        let log = spec.log.clone();
        let mut s = Supervisor::start(vec![spec], quick(2)).expect("start");
        let all = watch(&mut s, |n| n.iter().any(|x| matches!(x, Notice::GaveUp { .. }))).await;
        let crashed = all.iter().filter(|n| matches!(n, Notice::Crashed { .. })).count();
        let restarted = all.iter().filter(|n| matches!(n, Notice::Restarted { .. })).count();
        assert_eq!((crashed, restarted), (2, 2), "{all:?}");
        let Some(Notice::GaveUp { tag, status, crashes, log_tail, .. }) = all.last() else { panic!("{all:?}") };
        assert_eq!((tag.as_str(), status.as_str(), *crashes), ("writer", "exit status: 3", 3));
        assert_eq!(log_tail.last().map(String::as_str), Some("run again unset"));
        // Same command and environment each time, one log appended to.
        let text = std::fs::read_to_string(log).expect("log");
        assert_eq!(text.matches("run again unset").count(), 3, "{text}");
        assert_eq!(text.matches("restarted by `threadcycle up`").count(), 2, "{text}");
        // Given up means given up: nothing more happens.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(s.check().is_empty());
        assert!(s.pids().is_empty());
    }

    #[tokio::test]
    async fn a_killed_agent_comes_back_and_the_others_are_left_alone() {
        let dir = tempfile::tempdir().expect("tmp");
        let specs = vec![sh(dir.path(), "main", "exec sleep 30"), sh(dir.path(), "writer", "exec sleep 30")];
        let mut s = Supervisor::start(specs, quick(5)).expect("start");
        let before = s.pids();
        let writer = before.iter().find(|(t, _)| t == "writer").map(|(_, p)| *p).expect("writer pid");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(writer).expect("pid"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("kill");
        let all = watch(&mut s, |n| n.iter().any(|x| matches!(x, Notice::Restarted { .. }))).await;
        assert!(
            matches!(&all[0], Notice::Crashed { tag, status, crashes: 1, .. } if tag == "writer" && status == "signal: 9 (SIGKILL)"),
            "{all:?}"
        );
        let after = s.pids();
        assert_eq!(after.len(), 2);
        assert_eq!(after.iter().find(|(t, _)| t == "main"), before.iter().find(|(t, _)| t == "main"));
        assert_ne!(after.iter().find(|(t, _)| t == "writer").map(|(_, p)| *p), Some(writer));
        s.stop().await;
        assert!(s.pids().is_empty());
    }
}
