//! `threadcycle up <plan>`: the whole cycle on one machine — a private nats-server (unless
//! `--nats` is given), the five agents as child processes, the cycle started, progress shown,
//! escalations answered from the terminal, and a clean stop on Ctrl-C.

use crate::cli::{NatsArgs, read_plan};
use crate::client::request;
use crate::display::print_escalation;
use crate::exit;
use anyhow::{Context, Result};
use futures::StreamExt;
use handoffs::security::{self, Credential};
use handoffs::server::NatsServer;
use indicatif::{ProgressBar, ProgressStyle};
use protocol::events::{Event, EventBody};
use protocol::operator::{CycleState, OperatorReply, OperatorRequest};
use protocol::{Role, results::EscalationRecord};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};

/// The agent children, stopped (SIGTERM, then SIGKILL) when dropped or on `stop`.
struct Agents {
    /// Each agent with its name (`reader-<host>` when there are several hosts).
    children: Vec<(String, Child)>,
    log_dir: PathBuf,
}

impl Agents {
    /// One Main, Debug and Documentation; one Reader and one Writer per host (each Reader with
    /// its host's profile, if one is given).
    fn spawn(
        nats_url: &str,
        hosts: &[String],
        profiles: &[(String, PathBuf)],
        out: &Path,
        log_dir: &Path,
        creds: Option<&[Credential]>,
    ) -> Result<Agents> {
        let exe = std::env::current_exe().context("cannot find the threadcycle binary")?;
        std::fs::create_dir_all(log_dir).with_context(|| format!("cannot create {}", log_dir.display()))?;
        let several = hosts.len() > 1;
        let mut children = Vec::new();
        let mut instances: Vec<(Role, &str)> = Vec::new();
        for role in Role::AGENTS {
            if role.host_bound() {
                instances.extend(hosts.iter().map(|h| (role, h.as_str())));
            } else {
                instances.push((role, hosts.first().map(String::as_str).unwrap_or("local")));
            }
        }
        for (role, host) in instances {
            // With several hosts each Reader/Writer gets its own log and engine folder.
            let tag = if several && role.host_bound() { format!("{role}-{host}") } else { role.to_string() };
            let log = std::fs::File::create(log_dir.join(format!("{tag}.log")))?;
            let err = log.try_clone()?;
            let mut cmd = Command::new(&exe);
            // Each agent connects as its own least-privilege user; the password travels in the
            // environment, never on the command line.
            if let Some(c) = creds.and_then(|cs| cs.iter().find(|c| c.user() == role.as_str())) {
                cmd.env("NATS_USER", c.user()).env("NATS_PASSWORD", c.password());
            } else {
                cmd.env_remove("NATS_USER").env_remove("NATS_PASSWORD");
            }
            cmd.env_remove("THREADCYCLE_HOST_PROFILE").env_remove("THREADCYCLE_HOST");
            let engines = if several { log_dir.join(format!("engines-{host}")) } else { log_dir.join("engines") };
            let child = cmd
                .args(["agent", role.as_str(), "--nats", nats_url, "--host", host, "--out"])
                .arg(out)
                .args(match profiles.iter().find(|(h, _)| role == Role::Reader && h == host) {
                    Some((_, p)) => vec![std::ffi::OsStr::new("--host-profile"), p.as_os_str()],
                    None => Vec::new(),
                })
                .env("THREADCYCLE_RUN_DIR", engines)
                .stdin(Stdio::null())
                .stdout(Stdio::from(log))
                .stderr(Stdio::from(err))
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("cannot start the {role} agent"))?;
            children.push((tag, child));
        }
        Ok(Agents { children, log_dir: log_dir.to_path_buf() })
    }

    /// An agent that exited on its own, if any.
    fn exited(&mut self) -> Option<(String, String)> {
        self.children.iter_mut().find_map(|(r, c)| c.try_wait().ok().flatten().map(|s| (r.clone(), s.to_string())))
    }

    async fn stop(&mut self) {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        for (_, c) in &self.children {
            if let Some(pid) = c.id() {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            }
        }
        for (role, c) in &mut self.children {
            if tokio::time::timeout(Duration::from_secs(15), c.wait()).await.is_err() {
                tracing::warn!(message = "Agent did not stop in time; killing it.", %role);
                let _ = c.kill().await;
            }
        }
    }
}

/// How progress is shown: a bar on a terminal, plain lines when piped.
struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    fn new(total: u64) -> Self {
        if !std::io::stderr().is_terminal() {
            return Progress { bar: None };
        }
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} requests  {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress { bar: Some(bar) }
    }

    fn event(&self, ev: &Event) {
        let line = crate::display::clean(&ev.line());
        match &self.bar {
            Some(bar) => {
                if matches!(ev.body, EventBody::RunMeasured { .. }) {
                    bar.inc(1);
                }
                bar.set_message(line.clone());
                if matches!(
                    ev.body,
                    EventBody::ModelFinished { .. }
                        | EventBody::EscalationOpened { .. }
                        | EventBody::EscalationDecided { .. }
                        | EventBody::CycleStarted { .. }
                ) {
                    bar.println(line);
                }
            }
            None => println!("{line}"),
        }
    }

    fn println(&self, s: &str) {
        let s = crate::display::clean(s);
        match &self.bar {
            Some(bar) => bar.suspend(|| println!("{s}")),
            None => println!("{s}"),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

enum Outcome {
    Completed(String),
    Failed(String),
    Canceled,
}

/// Runs a whole cycle on this machine.
pub async fn run(
    nats: &NatsArgs,
    hosts: &[String],
    profiles: &[(String, PathBuf)],
    plan_path: &Path,
    out: &Path,
) -> Result<u8> {
    let (plan_text, plan) = match read_plan(plan_path) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(exit::BAD_INPUT);
        }
    };
    let work = tempfile::Builder::new().prefix("threadcycle-up-").tempdir().context("cannot create a work folder")?;
    // The private server is locked down like a production one: one user per agent with only
    // the subjects it needs, and this command as the operator.
    let (server, url, creds) = match &nats.url {
        Some(u) => (None, u.clone(), None),
        None => {
            let creds: Vec<Credential> =
                security::USERS.iter().map(|r| Credential::generate(*r)).collect::<Result<_, _>>()?;
            match NatsServer::start_in(&work.path().join("nats"), &security::server_config(&creds, None)) {
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
    let mut agents = Agents::spawn(&url, hosts, profiles, &out_abs, &log_dir, creds.as_deref())?;
    let operator = creds.as_ref().and_then(|cs| cs.iter().find(|c| c.user() == Role::Operator.as_str()));
    let client_config = match operator {
        Some(c) => c.connect_config(&url, None),
        None => nats.config(&url, "threadcycle-up", false),
    };
    let client = handoffs::connect(&client_config).await?;
    let mut events = client.subscribe("tc.evt.>").await?;
    let plan_source = plan_path.display().to_string();
    let start = crate::cli::start_request(plan_text, plan_source, hosts);
    let mut cycle = None;
    for _ in 0..120 {
        match request(&client, &start, Duration::from_secs(10)).await {
            Ok(OperatorReply::Started { cycle: c }) => {
                cycle = Some(c);
                break;
            }
            Ok(OperatorReply::Error { code, message }) => {
                eprintln!("error ({code}): {message}");
                agents.stop().await;
                return Ok(if code == "bad_plan" { exit::BAD_INPUT } else { exit::FAILED });
            }
            Ok(other) => anyhow::bail!("unexpected answer from Main: {other:?}"),
            Err(_) => {
                if let Some((role, status)) = agents.exited() {
                    eprintln!(
                        "error: the {role} agent exited at start ({status}); its log: {}",
                        log_dir.join(format!("{role}.log")).display()
                    );
                    return Ok(exit::FAILED);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
    let Some(cycle) = cycle else {
        agents.stop().await;
        eprintln!("error: Main did not answer within 30 s; logs in {}", log_dir.display());
        return Ok(exit::FAILED);
    };
    let total = plan.models.len() as u64 * plan.prompts.len() as u64 * u64::from(plan.defaults.repetitions);
    let progress = Progress::new(total);
    progress.println(&format!("cycle {cycle} started (plan `{}`; agent logs in {})", plan.name, log_dir.display()));
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    let mut waiting: Vec<String> = Vec::new();
    let mut poll = tokio::time::interval(Duration::from_secs(2));
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
                        if let Ok(OperatorReply::Escalations { items }) = request(&client, &OperatorRequest::Escalations { all: false }, Duration::from_secs(10)).await {
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
                    Ok(Some(l)) => answer_from_terminal(&client, &progress, &waiting, l.trim()).await,
                    _ => stdin_open = false,
                }
            }
            _ = poll.tick() => {
                // A missed event must not leave us waiting: ask Main for the record too.
                if let Ok(OperatorReply::Status { cycles, .. }) = request(&client, &OperatorRequest::Status { cycle: Some(cycle.clone()) }, Duration::from_secs(10)).await
                    && let Some(c) = cycles.first() {
                        match &c.state {
                            CycleState::Completed => break Outcome::Completed(c.report_dir.clone().unwrap_or_default()),
                            CycleState::Failed { reason } => break Outcome::Failed(reason.clone()),
                            CycleState::Canceled => break Outcome::Canceled,
                            CycleState::Running { .. } => {}
                        }
                    }
                if let Some((role, status)) = agents.exited() {
                    break Outcome::Failed(format!("the {role} agent exited ({status}); its log: {}", log_dir.join(format!("{role}.log")).display()));
                }
            }
            _ = tokio::signal::ctrl_c() => {
                progress.println("canceling: stopping the engine and the agents…");
                let _ = request(&client, &OperatorRequest::Cancel { cycle: cycle.clone() }, Duration::from_secs(10)).await;
                break Outcome::Canceled;
            }
        }
    };
    progress.finish();
    agents.stop().await;
    // Close our own connection before the server goes, so it does not report a disconnect.
    drop(events);
    let _ = client.drain().await;
    drop(server);
    let keep_logs = !matches!(outcome, Outcome::Completed(_));
    if keep_logs {
        let kept = std::env::temp_dir().join(format!("threadcycle-logs-{cycle}"));
        let _ = std::fs::rename(&agents.log_dir, &kept);
        eprintln!("agent logs kept in {}", kept.display());
    }
    Ok(match outcome {
        Outcome::Completed(dir) => {
            println!("{}", Path::new(&dir).join("README.md").display());
            0
        }
        Outcome::Failed(reason) => {
            eprintln!("cycle {cycle} failed: {}", crate::display::clean(&reason));
            exit::FAILED
        }
        Outcome::Canceled => {
            eprintln!("cycle {cycle} canceled");
            exit::CANCELED
        }
    })
}

fn show_escalation(progress: &Progress, e: &EscalationRecord) {
    match &progress.bar {
        Some(bar) => bar.suspend(|| {
            print_escalation(e);
            println!("  type a number here to answer it");
        }),
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
