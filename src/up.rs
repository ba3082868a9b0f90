//! `threadcycle up <plan>`: the whole cycle on one machine — a private nats-server (unless
//! `--nats` is given), the five agents as child processes, the cycle started, progress shown,
//! escalations answered from the terminal, and a clean stop on Ctrl-C.
//!
//! The agents are supervised (`crate::supervise`): one that crashes is restarted and the cycle
//! goes on. However `up` ends, it stops every engine its Writers recorded and every container
//! labelled with its cycle; when the cycle did not complete, the NATS store and the logs are kept
//! under [`state_root`] in a folder named after the cycle.

use crate::client::request;
use crate::display::print_escalation;
use crate::exit;
use crate::nats_args::NatsArgs;
use crate::plan_file::{read_plan, start_request};
use crate::progress::Progress;
use crate::supervise::{AgentSpec, Notice, RestartPolicy, Supervisor};
use anyhow::{Context, Result};
use futures::StreamExt;
use handoffs::security::{self, Credential};
use handoffs::server::NatsServer;
use protocol::events::{Event, EventBody};
use protocol::operator::{CycleState, OperatorReply, OperatorRequest};
use protocol::plan::Runtime;
use protocol::{Role, results::EscalationRecord};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncBufReadExt;

/// The agents of one `up`: one Main, Debug and Documentation; one Reader and one Writer per host
/// (each Reader with its host's profile, if one is given). Returns their specs and the Writers'
/// engine folders (where each Writer records the pid of every engine it starts).
fn agent_specs(
    nats_url: &str,
    hosts: &[String],
    profiles: &[(String, PathBuf)],
    out: &Path,
    log_dir: &Path,
    creds: Option<&[Credential]>,
    log_json: bool,
) -> Result<(Vec<AgentSpec>, Vec<PathBuf>)> {
    let exe = std::env::current_exe().context("cannot find the threadcycle binary")?;
    std::fs::create_dir_all(log_dir).with_context(|| format!("cannot create {}", log_dir.display()))?;
    let several = hosts.len() > 1;
    let mut instances: Vec<(Role, &str)> = Vec::new();
    for role in Role::AGENTS {
        if role.host_bound() {
            instances.extend(hosts.iter().map(|h| (role, h.as_str())));
        } else {
            instances.push((role, hosts.first().map(String::as_str).unwrap_or("local")));
        }
    }
    let mut specs = Vec::new();
    let mut run_dirs = Vec::new();
    for (role, host) in instances {
        // With several hosts each Reader/Writer gets its own log and engine folder.
        let tag = if several && role.host_bound() { format!("{role}-{host}") } else { role.to_string() };
        // Each agent connects as its own least-privilege user; the password travels in the
        // environment, never on the command line.
        let mut env: Vec<(String, Option<String>)> = match creds
            .and_then(|cs| cs.iter().find(|c| c.user() == role.as_str()))
        {
            Some(c) => {
                vec![("NATS_USER".into(), Some(c.user().into())), ("NATS_PASSWORD".into(), Some(c.password().into()))]
            }
            None => vec![("NATS_USER".into(), None), ("NATS_PASSWORD".into(), None)],
        };
        env.extend([("THREADCYCLE_HOST_PROFILE".into(), None), ("THREADCYCLE_HOST".into(), None)]);
        let engines = if several { log_dir.join(format!("engines-{host}")) } else { log_dir.join("engines") };
        env.push(("THREADCYCLE_RUN_DIR".into(), Some(engines.display().to_string())));
        if role == Role::Writer {
            run_dirs.push(engines);
        }
        let mut args: Vec<OsString> = ["agent", role.as_str(), "--nats", nats_url, "--host", host, "--out"]
            .into_iter()
            .map(OsString::from)
            .collect();
        args.push(out.as_os_str().to_owned());
        if let Some((_, p)) = profiles.iter().find(|(h, _)| role == Role::Reader && h == host) {
            args.extend([OsString::from("--host-profile"), p.as_os_str().to_owned()]);
        }
        // `up --log-json`: the agents' logs too (THREADCYCLE_LOG_FORMAT is inherited anyway).
        if log_json {
            args.push("--log-json".into());
        }
        specs.push(AgentSpec { log: log_dir.join(format!("{tag}.log")), tag, program: exe.clone(), args, env });
    }
    Ok((specs, run_dirs))
}

/// A supervision notice in the operator's words; for an agent given up on, the reason the cycle
/// fails.
fn describe(notice: &Notice, log_dir: &Path) -> (String, Option<String>) {
    let tail = |tag: &str, lines: &[String]| {
        let mut s = format!("last lines of its log ({}):", log_dir.join(format!("{tag}.log")).display());
        for l in lines {
            s.push_str("\n  | ");
            s.push_str(l);
        }
        s
    };
    match notice {
        Notice::Crashed { tag, status, log_tail, crashes, restart_in } => (
            format!(
                "the {tag} agent crashed ({status}); restarting it in {} s (crash {crashes} in the last {} min); {}",
                restart_in.as_secs().max(1),
                RestartPolicy::default().window.as_secs() / 60,
                tail(tag, log_tail)
            ),
            None,
        ),
        Notice::Restarted { tag, pid } => {
            (format!("the {tag} agent restarted (pid {})", pid.map(|p| p.to_string()).unwrap_or_default()), None)
        }
        Notice::GaveUp { tag, status, crashes, window, log_tail } => {
            let reason = format!(
                "the {tag} agent crashed {crashes} times within {} min (the last: {status}); not restarting it again",
                window.as_secs() / 60
            );
            (format!("{reason}; {}", tail(tag, log_tail)), Some(reason))
        }
    }
}

/// Shows what supervision did; returns the failure reason when an agent was given up on.
fn report_notices(notices: Vec<Notice>, log_dir: &Path, show: impl Fn(&str)) -> Option<String> {
    let mut failed = None;
    for n in &notices {
        let (line, reason) = describe(n, log_dir);
        show(&line);
        failed = failed.or(reason);
    }
    failed
}

/// Stops every engine a Writer of this `up` recorded (the agents are stopped by now, so any
/// engine still running is a leftover: a Writer killed mid-benchmark, or one that did not stop
/// in time) and removes the Docker containers labelled with this cycle.
async fn reap_engines(run_dirs: &[PathBuf], cycle: Option<&str>, uses_docker: bool) {
    let stopped: usize = run_dirs.iter().map(|d| host::process::reap_stale(d)).sum();
    if stopped > 0 {
        eprintln!("stopped {stopped} engine process(es) left running");
    }
    if let (Some(cycle), true) = (cycle, uses_docker)
        && let Ok(docker) = host::docker::DockerRuntime::connect().await
    {
        match docker.remove_labeled(&[("threadcycle.cycle", cycle)]).await {
            Ok(0) => {}
            Ok(n) => eprintln!("removed {n} container(s) of cycle {cycle} left behind"),
            Err(e) => eprintln!("warning: cannot remove the containers of cycle {cycle}: {e}"),
        }
    }
}

/// Where `up` keeps a cycle's private NATS store and agent logs while it runs, and afterwards
/// when the cycle did not complete: `$XDG_STATE_HOME/threadcycle/up` (by default
/// `~/.local/state/threadcycle/up`).
pub fn state_root() -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("threadcycle/up")
}

/// The machine-wide lock `up` holds while it runs: an advisory file lock (released by the
/// kernel however the process ends, so a killed `up` leaves nothing to clean), the holder's
/// pid and plan written inside for the next operator's message.
pub struct MachineLock(#[allow(dead_code)] std::fs::File);

impl MachineLock {
    /// The lock file: `$THREADCYCLE_LOCK` when set, else one per machine in the temp folder
    /// (shared by every user, as the GPU is).
    pub fn path() -> PathBuf {
        std::env::var_os("THREADCYCLE_LOCK")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("threadcycle-up.lock"))
    }

    /// Takes the lock for a cycle of `plan`, or says who holds it.
    pub fn take(plan: &Path) -> Result<MachineLock, String> {
        use std::io::{Read as _, Seek as _, Write as _};
        let path = Self::path();
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| format!("cannot open the machine lock {}: {e}", path.display()))?;
        match f.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = f.read_to_string(&mut holder);
                let holder = crate::display::clean(holder.trim());
                return Err(format!(
                    "another `threadcycle up` is running a cycle on this machine ({}); wait for it to finish or stop it — two cycles at once would share the GPU and measure each other (lock: {})",
                    if holder.is_empty() { "holder unknown".to_string() } else { holder },
                    path.display()
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(format!("cannot lock {}: {e}", path.display())),
        }
        let note = format!(
            "pid {}, plan {}, since {}",
            std::process::id(),
            plan.display(),
            chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC")
        );
        let _ = f.set_len(0).and_then(|()| f.rewind()).and_then(|()| f.write_all(note.as_bytes()));
        Ok(MachineLock(f))
    }
}

/// How a cycle under `up` ended.
enum Outcome {
    /// Interrupted with `--on-interrupt keep`: left running in the kept store, to resume.
    Interrupted,
    /// Its reports are in this folder.
    Completed(String),
    /// It failed, for this reason.
    Failed(String),
    /// Main refused the plan (code, message).
    Refused(String, String),
    /// Main never answered the start request.
    NoAnswer,
    /// The operator canceled it.
    Canceled,
    /// The operator canceled it, and the partial report is in this folder.
    CanceledWithReport(String),
}

/// What an interrupt (Ctrl-C, SIGTERM) does to the cycle `up` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnInterrupt {
    /// Cancel, and write a partial report of what was measured.
    Report,
    /// Cancel without a report.
    Stop,
    /// Leave the cycle resumable: stop the engine and the agents without canceling it; `threadcycle
    /// up --resume <cycle>` continues it from its last completed run.
    Keep,
}

/// What `up` runs: a new cycle from a plan file, or a kept cycle resumed.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// A plan file.
    Plan(&'a Path),
    /// The id of a cycle that did not complete.
    Resume(&'a str),
}

/// The folder `up` works in: a fresh one, renamed after the cycle when it is kept, or a kept
/// cycle's folder (`--resume`).
enum Work {
    Fresh(tempfile::TempDir),
    Kept(PathBuf),
}

impl Work {
    fn path(&self) -> &Path {
        match self {
            Work::Fresh(t) => t.path(),
            Work::Kept(p) => p,
        }
    }
}

/// The command that resumes `cycle` (with `--nats` when the server is not `up`'s own).
pub fn resume_command(nats: &NatsArgs, cycle: &str) -> String {
    match &nats.url {
        Some(u) => format!("threadcycle up --resume {cycle} --nats {u}"),
        None => format!("threadcycle up --resume {cycle}"),
    }
}

/// How `up` runs beside its plan: what Ctrl-C does, JSON output, the metrics address.
#[derive(Debug, Clone, Copy)]
pub struct UpOptions {
    /// What an interrupt does.
    pub on_interrupt: OnInterrupt,
    /// One JSON object per line instead of text.
    pub json: bool,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics: Option<std::net::SocketAddr>,
    /// The agents log one JSON object per line (`--log-json`).
    pub log_json: bool,
}

/// Runs a whole cycle on this machine.
pub async fn run(
    nats: &NatsArgs,
    hosts: &[String],
    profiles: &[(String, PathBuf)],
    target: Target<'_>,
    out: &Path,
    opts: UpOptions,
) -> Result<u8> {
    let UpOptions { on_interrupt, json, metrics, log_json } = opts;
    let root = state_root();
    let (ask, kept) = match target {
        Target::Plan(plan_path) => match read_plan(plan_path) {
            Ok((text, plan)) => {
                let ask = Ask::Start {
                    request: start_request(text, plan_path.display().to_string(), hosts),
                    plan: plan.name.clone(),
                    total: plan.measured_requests(),
                    docker: plan.models.iter().any(|m| m.runtime == Runtime::Docker),
                };
                (ask, None)
            }
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(exit::BAD_INPUT);
            }
        },
        Target::Resume(cycle) => match kept_folder(&root, cycle, server_was_private(nats)) {
            Ok(k) => (Ask::Resume(cycle.to_string(), hosts.to_vec()), k),
            Err(why) => {
                eprintln!("error: {why}");
                return Ok(exit::BAD_INPUT);
            }
        },
    };
    let lock_note = match target {
        Target::Plan(p) => p.to_path_buf(),
        Target::Resume(c) => PathBuf::from(format!("--resume {c}")),
    };
    // One `up` per machine: a second operator's cycle would share the first one's GPU and
    // measure its engine. Held until this function returns (the lock goes with the process).
    let _machine = match MachineLock::take(&lock_note) {
        Ok(l) => l,
        Err(why) => {
            eprintln!("error (host_busy): {why}");
            return Ok(exit::BUSY);
        }
    };
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let work = match kept {
        Some(k) => Work::Kept(k),
        None => Work::Fresh(
            tempfile::Builder::new()
                .prefix("starting-")
                .tempdir_in(&root)
                .with_context(|| format!("cannot create a work folder in {}", root.display()))?,
        ),
    };
    // The private server is locked down like a production one: one user per agent with only
    // the subjects it needs, and this command as the operator.
    let (server, url, creds) = match &nats.url {
        Some(u) => (None, u.clone(), None),
        None => {
            let creds: Vec<Credential> =
                security::USERS.iter().map(|r| Credential::generate(*r)).collect::<Result<_, _>>()?;
            // Through `exec-with-parent`, so the server stops should `up` be killed.
            let launcher = match std::env::current_exe() {
                Ok(exe) => vec![
                    exe.into_os_string(),
                    "exec-with-parent".into(),
                    "--parent".into(),
                    std::process::id().to_string().into(),
                    "--".into(),
                ],
                Err(_) => Vec::new(),
            };
            match NatsServer::start_in_via(&work.path().join("nats"), &security::server_config(&creds, None), launcher)
            {
                Ok(s) => {
                    let u = s.url();
                    (Some(s), u, Some(creds))
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    return Ok(exit::UNREACHABLE);
                }
            }
        }
    };
    let out_abs = std::path::absolute(out).unwrap_or_else(|_| out.to_path_buf());
    let log_dir = work.path().join("logs");
    let (specs, run_dirs) = agent_specs(&url, hosts, profiles, &out_abs, &log_dir, creds.as_deref(), log_json)?;
    let mut agents = Supervisor::start(specs, RestartPolicy::default())?;
    // A resumed cycle's plan is Main's: its containers are looked for by label anyway.
    let uses_docker = match &ask {
        Ask::Start { docker, .. } => *docker,
        Ask::Resume(..) => true,
    };
    let operator = creds.as_ref().and_then(|cs| cs.iter().find(|c| c.user() == Role::Operator.as_str()));
    let client_config = match operator {
        Some(c) => c.connect_config(&url, None),
        None => nats.config(&url, "threadcycle-up", false),
    };
    let mut interrupted = interrupt_signal()?;
    let (cycle, outcome) = match handoffs::connect(&client_config).await {
        Ok(client) => {
            // The exporter lives as long as this connection; a busy port costs the metrics,
            // not the cycle.
            let _exporter = match metrics {
                Some(addr) => match crate::exporter::start(client.clone(), addr, Duration::from_secs(2)).await {
                    Ok((bound, task)) => {
                        eprintln!("Prometheus metrics at http://{bound}/metrics");
                        Some(AbortOnDrop(task))
                    }
                    Err(e) => {
                        eprintln!("warning: no metrics: cannot serve them on {addr}: {e} (--metrics-listen)");
                        None
                    }
                },
                None => None,
            };
            let (cycle, outcome) =
                follow_cycle(&client, &mut agents, &mut interrupted, on_interrupt, ask, nats, &log_dir, json).await;
            agents.stop().await;
            // Close our own connection before the server goes, so it does not report a disconnect.
            close(client).await;
            (cycle, outcome)
        }
        Err(e) => {
            agents.stop().await;
            (None, Err(anyhow::Error::from(e)))
        }
    };
    reap_engines(&run_dirs, cycle.as_deref(), uses_docker).await;
    drop(server);
    // A refused plan measured nothing; a completed cycle's results are in its reports. A kept
    // cycle's folder goes only once the cycle completed.
    let done = matches!((&outcome, &work), (Ok(Outcome::Completed(_)), _) | (Ok(Outcome::Refused(..)), Work::Fresh(_)));
    if done {
        let removed = match work {
            Work::Fresh(t) => t.close(),
            Work::Kept(p) => std::fs::remove_dir_all(p),
        };
        if let Err(e) = removed {
            tracing::warn!(message = "Cannot remove the work folder.", error = %e);
        }
    } else {
        // Nothing measured is thrown away: the store (with every handoff and result so far) and
        // the logs stay, under the cycle's name.
        let dir = match work {
            Work::Kept(p) => p,
            Work::Fresh(t) => {
                let kept = t.keep();
                let named =
                    cycle.as_ref().map(|c| root.join(c)).filter(|n| !n.exists() && std::fs::rename(&kept, n).is_ok());
                named.unwrap_or(kept)
            }
        };
        if server_was_private(nats) {
            eprintln!("the cycle's NATS store and agent logs are kept in {}", dir.display());
        } else {
            eprintln!("agent logs kept in {}", dir.join("logs").display());
        }
    }
    let cycle = cycle.unwrap_or_default();
    let outcome = outcome?;
    if json {
        let (word, detail) = match &outcome {
            Outcome::Completed(dir) => ("completed", serde_json::json!({ "reports": dir })),
            Outcome::Failed(reason) => ("failed", serde_json::json!({ "reason": reason })),
            Outcome::Refused(code, message) => ("refused", serde_json::json!({ "code": code, "message": message })),
            Outcome::NoAnswer => ("no_answer", serde_json::json!({ "logs": log_dir })),
            Outcome::Canceled => ("canceled", serde_json::json!({ "resume": resume_command(nats, &cycle) })),
            Outcome::Interrupted => ("interrupted", serde_json::json!({ "resume": resume_command(nats, &cycle) })),
            Outcome::CanceledWithReport(dir) => {
                ("canceled", serde_json::json!({ "partial_reports": dir, "resume": resume_command(nats, &cycle) }))
            }
        };
        let mut v = serde_json::json!({ "up": word, "cycle": (!cycle.is_empty()).then_some(&cycle) });
        if let (Some(o), Some(d)) = (v.as_object_mut(), detail.as_object()) {
            o.extend(d.clone());
        }
        println!("{v}");
    }
    Ok(match outcome {
        Outcome::Completed(_) if json => 0,
        Outcome::Completed(dir) => {
            println!("{}", Path::new(&dir).join("README.md").display());
            0
        }
        Outcome::Failed(reason) => {
            eprintln!("cycle {cycle} failed: {}", crate::display::clean(&reason));
            exit::FAILED
        }
        Outcome::Refused(code, message) => {
            eprintln!("error ({code}): {message}");
            match code.as_str() {
                "bad_plan" | "not_found" | "already_complete" | "not_resumable" | "wrong_hosts" => exit::BAD_INPUT,
                "host_busy" => exit::BUSY,
                _ => exit::FAILED,
            }
        }
        Outcome::NoAnswer => {
            eprintln!("error: Main did not answer within 30 s; logs in {}", log_dir.display());
            exit::FAILED
        }
        Outcome::CanceledWithReport(_) if json => exit::CANCELED,
        Outcome::CanceledWithReport(dir) => {
            eprintln!(
                "cycle {cycle} canceled; the partial report of what was measured is in {dir}; to measure the rest: {}",
                resume_command(nats, &cycle)
            );
            println!("{}", Path::new(&dir).join("README.md").display());
            exit::CANCELED
        }
        Outcome::Canceled if cycle.is_empty() => {
            eprintln!("canceled before the cycle started");
            exit::CANCELED
        }
        Outcome::Canceled => {
            eprintln!("cycle {cycle} canceled; to measure the rest: {}", resume_command(nats, &cycle));
            exit::CANCELED
        }
        Outcome::Interrupted => {
            eprintln!("cycle {cycle} interrupted, not canceled; to continue it: {}", resume_command(nats, &cycle));
            exit::CANCELED
        }
    })
}

/// A task stopped when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What `up` asks Main for.
enum Ask {
    /// A new cycle.
    Start {
        /// The start request.
        request: OperatorRequest,
        /// The plan's name.
        plan: String,
        /// Requests it measures.
        total: u64,
        /// Whether a model runs in Docker.
        docker: bool,
    },
    /// A kept cycle goes on.
    Resume(String, Vec<String>),
}

/// The folder a cycle that did not complete was kept in, for `--resume`; `None` with a server of
/// the operator's own (`--nats`), which holds the cycle's store itself.
fn kept_folder(root: &Path, cycle: &str, private: bool) -> Result<Option<PathBuf>, String> {
    if protocol::CycleId::parse(cycle).is_err() {
        return Err(format!("`{cycle}` is not a cycle id (like 20261130-213500-a1b2c3)"));
    }
    // Renamed after the cycle, or (`up` was killed before it could rename it) a `starting-…`
    // folder that names the cycle inside.
    let named = root.join(cycle);
    let dir = if named.is_dir() {
        named
    } else {
        std::fs::read_dir(root)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|p| std::fs::read_to_string(p.join("cycle")).is_ok_and(|c| c.trim() == cycle))
            .unwrap_or(named)
    };
    if !private {
        return Ok(dir.is_dir().then_some(dir));
    }
    if !dir.join("nats/jetstream").is_dir() {
        return Err(format!(
            "no kept cycle {cycle}: {} holds no NATS store (`up` keeps a cycle's store there when the cycle does not complete, and removes it once it completes; `ls {}` lists the kept ones)",
            dir.display(),
            root.display()
        ));
    }
    Ok(Some(dir))
}

fn server_was_private(nats: &NatsArgs) -> bool {
    nats.url.is_none()
}

/// Resolves when the operator presses Ctrl-C or `up` is sent SIGTERM.
fn interrupt_signal() -> Result<impl std::future::Future<Output = ()> + Unpin> {
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(Box::pin(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }))
}

/// Drains the connection and waits until it is closed (drain only starts it), so that stopping
/// the server afterwards does not log a disconnect.
async fn close(client: async_nats::Client) {
    let _ = client.drain().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < deadline && client.flush().await.is_ok() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts the cycle and follows it to its end, keeping the agents running; returns the cycle's
/// id (once Main gave one) and how it ended.
#[allow(clippy::too_many_arguments)]
async fn follow_cycle(
    client: &async_nats::Client,
    agents: &mut Supervisor,
    interrupted: &mut (impl std::future::Future<Output = ()> + Unpin),
    on_interrupt: OnInterrupt,
    ask: Ask,
    nats: &NatsArgs,
    log_dir: &Path,
    json: bool,
) -> (Option<String>, Result<Outcome>) {
    let mut events = match client.subscribe(protocol::subjects::EVENT_WILDCARD).await {
        Ok(e) => e,
        Err(e) => return (None, Err(e.into())),
    };
    let start = match &ask {
        Ask::Start { request, .. } => request.clone(),
        Ask::Resume(cycle, hosts) => OperatorRequest::Resume { cycle: cycle.clone(), hosts: hosts.clone() },
    };
    let mut cycle = None;
    for _ in 0..120 {
        let reply = tokio::select! {
            r = request(client, &start, Duration::from_secs(10)) => r,
            _ = &mut *interrupted => return (None, Ok(Outcome::Canceled)),
        };
        match reply {
            Ok(OperatorReply::Started { cycle: c } | OperatorReply::Resumed { cycle: c, .. }) => {
                cycle = Some(c);
                break;
            }
            Ok(OperatorReply::Error { code, message }) => return (None, Ok(Outcome::Refused(code, message))),
            Ok(other) => return (None, Err(anyhow::anyhow!("unexpected answer from Main: {other:?}"))),
            Err(_) => {
                if let Some(reason) =
                    report_notices(agents.check(), log_dir, |l| eprintln!("{}", crate::display::clean(l)))
                {
                    return (None, Ok(Outcome::Failed(reason)));
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
    let Some(cycle) = cycle else { return (None, Ok(Outcome::NoAnswer)) };
    // Named inside too: a work folder left by an `up` that was killed is found by `--resume`.
    if let Some(work) = log_dir.parent() {
        let _ = std::fs::write(work.join("cycle"), &cycle);
    }
    let progress = match &ask {
        Ask::Start { plan, total, .. } => {
            let progress = Progress::new(*total, json);
            progress.println(&format!("cycle {cycle} started (plan `{plan}`; agent logs in {})", log_dir.display()));
            progress
        }
        Ask::Resume(..) => {
            // The record says how far the cycle got.
            let ask = OperatorRequest::Status { cycle: Some(cycle.clone()) };
            let rec = match request(client, &ask, Duration::from_secs(10)).await {
                Ok(OperatorReply::Status { cycles, .. }) => cycles.into_iter().next(),
                _ => None,
            };
            let (plan, total, done) = rec
                .map_or((String::new(), 0, 0), |r| (r.plan, r.requests_total, r.requests_done.min(r.requests_total)));
            let progress = Progress::new(u64::from(total), json);
            if let Some(bar) = progress.bar() {
                bar.set_position(u64::from(done));
            }
            progress.println(&format!(
                "cycle {cycle} resumed (plan `{plan}`, {done} of {total} requests measured before; agent logs in {})",
                log_dir.display()
            ));
            progress
        }
    };
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    let mut waiting: Vec<String> = Vec::new();
    let mut poll = tokio::time::interval(Duration::from_secs(2));
    let mut supervise = tokio::time::interval(Duration::from_millis(250));
    let outcome = loop {
        tokio::select! {
            msg = events.next() => {
                let Some(msg) = msg else { break Outcome::Failed("lost the connection to NATS".into()) };
                let Ok(ev) = serde_json::from_slice::<Event>(&msg.payload) else { continue };
                if ev.cycle.as_str() != cycle {
                    continue;
                }
                progress.event(&ev);
                match &ev.body {
                    EventBody::EscalationOpened { id, awaiting_operator: true, .. } => {
                        waiting.push(id.clone());
                        if let Ok(OperatorReply::Escalations { items }) = request(client, &OperatorRequest::Escalations { all: false }, Duration::from_secs(10)).await {
                            for e in items.iter().filter(|e| &e.id == id) {
                                progress.println("");
                                show_escalation(&progress, e);
                            }
                        }
                    }
                    EventBody::EscalationDecided { id, .. } => waiting.retain(|w| w != id),
                    EventBody::CycleCompleted { dir } => break Outcome::Completed(dir.clone()),
                    EventBody::CycleFailed { reason } => break Outcome::Failed(reason.clone()),
                    EventBody::CycleCanceled => break Outcome::Canceled,
                    _ => {}
                }
            }
            line = stdin.next_line(), if stdin_open => {
                match line {
                    Ok(Some(l)) => answer_from_terminal(client, &progress, &waiting, l.trim()).await,
                    _ => stdin_open = false,
                }
            }
            _ = supervise.tick() => {
                if let Some(reason) = report_notices(agents.check(), log_dir, |l| progress.println(l)) {
                    break Outcome::Failed(reason);
                }
            }
            _ = poll.tick() => {
                // A missed event must not leave us waiting: ask Main for the record too.
                if let Ok(OperatorReply::Status { cycles, .. }) = request(client, &OperatorRequest::Status { cycle: Some(cycle.clone()) }, Duration::from_secs(10)).await
                    && let Some(c) = cycles.first() {
                        match &c.state {
                            CycleState::Completed => break Outcome::Completed(c.report_dir.clone().unwrap_or_default()),
                            CycleState::Failed { reason } => break Outcome::Failed(reason.clone()),
                            CycleState::Canceled => break Outcome::Canceled,
                            CycleState::Running { .. } => {}
                        }
                    }
            }
            _ = &mut *interrupted => {
                let resume = resume_command(nats, &cycle);
                if on_interrupt == OnInterrupt::Keep {
                    progress.println(&format!(
                        "interrupted: stopping the engine and the agents; the cycle is not canceled and stays resumable: {resume}"
                    ));
                    break Outcome::Interrupted;
                }
                let report = on_interrupt == OnInterrupt::Report;
                progress.println(&if report {
                    format!("canceling: the run in progress finishes, then the reports of what was measured are written (partial); Ctrl-C again stops without them. `{resume}` measures the rest later (`--on-interrupt keep` leaves a cycle resumable without canceling it)…")
                } else {
                    format!("canceling: stopping the engine and the agents; `{resume}` measures the rest later…")
                });
                let cancel = OperatorRequest::Cancel { cycle: cycle.clone(), report, tuning: false };
                let _ = request(client, &cancel, Duration::from_secs(10)).await;
                if report && let Some(dir) = partial_report(client, agents, &progress, log_dir, &cycle).await {
                    break Outcome::CanceledWithReport(dir);
                }
                break Outcome::Canceled;
            }
        }
    };
    progress.finish();
    (Some(cycle), Ok(outcome))
}

/// Waits for the partial report of a cycle canceled with `report`: its folder, or `None` when
/// the operator presses Ctrl-C again or it does not come within the longest a run may take.
async fn partial_report(
    client: &async_nats::Client,
    agents: &mut Supervisor,
    progress: &Progress,
    log_dir: &Path,
    cycle: &str,
) -> Option<String> {
    let Ok(mut again) = interrupt_signal() else { return None };
    let deadline = tokio::time::sleep(Duration::from_secs(30 * 60));
    tokio::pin!(deadline);
    let mut poll = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = &mut again => return None,
            _ = &mut deadline => return None,
            _ = poll.tick() => {
                // An agent that crashed is still restarted: a Writer restarted after the cancel
                // hands on what is stored.
                if report_notices(agents.check(), log_dir, |l| progress.println(l)).is_some() {
                    return None;
                }
                let ask = OperatorRequest::Status { cycle: Some(cycle.to_string()) };
                if let Ok(OperatorReply::Status { cycles, .. }) = request(client, &ask, Duration::from_secs(10)).await
                    && let Some(dir) = cycles.first().and_then(|c| c.report_dir.clone())
                {
                    return Some(dir);
                }
            }
        }
    }
}

fn show_escalation(progress: &Progress, e: &EscalationRecord) {
    match progress.bar() {
        Some(bar) => bar.suspend(|| {
            print_escalation(e);
            println!("  type a number here to answer it");
        }),
        // With --json the event line already carries it; the human prompt goes to stderr.
        None if progress.json() => eprintln!("escalation {} waiting: threadcycle escalations", e.id),
        None => {
            print_escalation(e);
            println!("  type a number (and Enter) to answer it");
        }
    }
}

/// A line typed while `up` runs: `<option>` answers the latest waiting escalation, `<id> <option>` a given one.
async fn answer_from_terminal(client: &async_nats::Client, progress: &Progress, waiting: &[String], line: &str) {
    if line.is_empty() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (id, opt) = match (parts.next(), parts.next()) {
        (Some(a), None) => (waiting.last().cloned(), a),
        (Some(a), Some(b)) => (Some(a.to_string()), b),
        _ => return,
    };
    let Some(id) = id else {
        progress.println("no escalation is waiting for an answer");
        return;
    };
    let Ok(option) = opt.parse::<u32>() else {
        progress.println(&format!("`{opt}` is not an option number"));
        return;
    };
    let by = std::env::var("USER").unwrap_or_else(|_| "operator".into());
    let req = OperatorRequest::Resolve { id: id.clone(), option: Some(option), action: None, by };
    match request(client, &req, Duration::from_secs(10)).await {
        Ok(OperatorReply::Resolved { .. }) => progress.println(&format!("escalation {id}: option {option} sent")),
        Ok(OperatorReply::Error { message, .. }) => progress.println(&format!("error: {message}")),
        Ok(_) => {}
        Err(e) => progress.println(&format!("error: {e}")),
    }
}
