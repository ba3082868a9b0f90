//! The command line: the argument definitions and the dispatch to the modules that do the work.
//! Nothing but `main.rs` imports from here; what the commands share lives in `nats_args` and
//! `plan_file`.

use crate::exit;
use crate::nats_args::NatsArgs;
use crate::plan_file::{read_plan, start_request};
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use protocol::Role;
use protocol::results::RemedyAction;
use protocol::settings::Setting;
use std::path::PathBuf;

/// threadcycle runs a large-model testing cycle on a GPU host: verify the host, deploy and
/// benchmark every planned model with telemetry, troubleshoot failures with you in the loop,
/// and write the reports — five agents over NATS.
///
/// Quick start on one machine: `threadcycle up plans/demo.toml`.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
pub struct Cli {
    /// How to reach NATS.
    #[command(flatten)]
    pub nats: NatsArgs,
    /// The GPU host this Reader/Writer serves, or that a cycle runs on. `start` and `up` take
    /// several (`--host a --host b`, or `a,b`): Main then places each model on a host where it
    /// fits.
    #[arg(long, global = true, env = "THREADCYCLE_HOST", default_value = "local", value_delimiter = ',')]
    pub host: Vec<String>,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Write logs as one JSON object per line (also `THREADCYCLE_LOG_FORMAT=json`).
    #[arg(long, global = true)]
    pub log_json: bool,
    /// What to do.
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run the whole cycle on this machine: a private NATS, the five agents, progress, reports.
    ///
    /// A cycle that does not complete (Ctrl-C, a failure, `up` killed) keeps its NATS store and
    /// logs under `$XDG_STATE_HOME/threadcycle/up/<cycle>`; `threadcycle up --resume <cycle>`
    /// continues it from its last completed run and writes the full report.
    Up {
        /// The plan file (not with --resume).
        #[arg(required_unless_present = "resume")]
        plan: Option<PathBuf>,
        /// Continue a canceled, failed or interrupted cycle from its last completed run, on the
        /// NATS store `up` kept for it (the plan is the one it started with).
        #[arg(long, value_name = "CYCLE", conflicts_with = "plan")]
        resume: Option<String>,
        /// Where reports go.
        #[arg(long, env = "THREADCYCLE_OUT", default_value = "docs-out")]
        out: PathBuf,
        /// A host's profile for its Reader's fit predictions, as HOST=PATH (repeatable; e.g.
        /// `--host-profile gpu2=hosts/rtx5070ti-32gb.toml`).
        #[arg(long = "host-profile", value_name = "HOST=PATH")]
        host_profiles: Vec<String>,
        /// What Ctrl-C (or SIGTERM) does: `report` cancels the cycle and writes a partial report
        /// of everything measured so far (a second Ctrl-C stops without it); `stop` cancels
        /// without a report; `keep` stops without canceling, leaving the cycle resumable. The
        /// NATS store and logs are kept in each case, and `up --resume <cycle>` measures the rest.
        #[arg(long, value_enum, default_value = "report")]
        on_interrupt: crate::up::OnInterrupt,
        /// Serve Prometheus metrics on this address while the cycle runs (`off`: none).
        #[arg(long, env = "THREADCYCLE_METRICS_LISTEN", default_value = "127.0.0.1:9464")]
        metrics_listen: String,
    },
    /// Serve Prometheus metrics at /metrics, fed from NATS (events and Main's status).
    Metrics {
        /// Address to listen on (port 0: any free port; the address is printed).
        #[arg(long, env = "THREADCYCLE_METRICS_LISTEN", default_value = "0.0.0.0:9464")]
        listen: std::net::SocketAddr,
    },
    /// Run a command that is sent SIGTERM when this command's parent dies (used by `up` for
    /// its nats-server).
    #[command(hide = true)]
    ExecWithParent {
        /// The pid of the parent to follow.
        #[arg(long)]
        parent: i32,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<std::ffi::OsString>,
    },
    /// Run one agent process.
    Agent {
        /// main, reader, writer, debug or documentation.
        role: Role,
        /// Where reports go (documentation).
        #[arg(long, env = "THREADCYCLE_OUT", default_value = "docs-out")]
        out: PathBuf,
        /// Where engine pid and log files go (writer).
        #[arg(long, env = "THREADCYCLE_RUN_DIR")]
        run_dir: Option<PathBuf>,
        /// Predict fit for this host profile instead of the measured free memory (reader).
        #[arg(long, env = "THREADCYCLE_HOST_PROFILE")]
        host_profile: Option<PathBuf>,
    },
    /// Start a cycle from a plan (Main must be running), or resume one.
    Start {
        /// The plan file (not with --resume).
        #[arg(required_unless_present = "resume")]
        plan: Option<PathBuf>,
        /// Continue a canceled, failed or interrupted cycle from its last completed run.
        #[arg(long, value_name = "CYCLE", conflicts_with = "plan")]
        resume: Option<String>,
    },
    /// Show cycles and agents.
    Status {
        /// One cycle.
        cycle: Option<String>,
        /// Refresh every two seconds.
        #[arg(long)]
        watch: bool,
    },
    /// Follow events as they happen: one line each, or NDJSON with --json (one object per line).
    /// With a cycle, stops after that cycle's last event.
    Events {
        /// Only this cycle's events.
        cycle: Option<String>,
        /// Follow (required: the operator's NATS user sees live events only).
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// Cancel a cycle: the engine is stopped, nothing more is measured.
    Cancel {
        /// The cycle.
        cycle: String,
        /// Write a partial report of what was measured so far (marked partial, saying what is
        /// missing) instead of stopping without one.
        #[arg(long)]
        report: bool,
        /// Stop only the tuning: the search under way ends after its current trial with the best
        /// found so far (restored and measured again), later models are not tuned, and the cycle
        /// goes on.
        #[arg(long, conflicts_with = "report")]
        tuning: bool,
    },
    /// Where a cycle's reports are.
    Reports {
        /// The cycle.
        cycle: String,
    },
    /// List escalations waiting for you (or all of them).
    Escalations {
        /// Include decided ones.
        #[arg(long)]
        all: bool,
        /// Refresh every two seconds.
        #[arg(long)]
        watch: bool,
    },
    /// Answer an escalation: an option number, or --set / --skip / --abort.
    Resolve {
        /// Escalation id (from `threadcycle escalations`).
        id: String,
        /// The option number to apply.
        option: Option<u32>,
        /// Retry with these settings instead (key=value; repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Skip the model (for failed host checks: the models they affect).
        #[arg(long, conflicts_with_all = ["abort", "set"])]
        skip: bool,
        /// Abort the cycle.
        #[arg(long, conflicts_with = "set")]
        abort: bool,
        /// Failed host checks: go on as if they had passed.
        #[arg(long = "continue", conflicts_with_all = ["skip", "abort", "set", "reverify"])]
        continue_anyway: bool,
        /// Failed host checks: run the Reader's checks again (after your fix).
        #[arg(long, conflicts_with_all = ["skip", "abort", "set"])]
        reverify: bool,
        /// Your name, recorded with the decision.
        #[arg(long, env = "USER", default_value = "operator")]
        by: String,
    },
    /// Plans: check one without running anything.
    Plan {
        /// What to do with it.
        #[command(subcommand)]
        cmd: PlanCmd,
    },
    /// Write a least-privilege NATS server config: one user per agent plus the operator, each with
    /// only the subjects it needs, JetStream with `sync_interval: always`, optional TLS with a
    /// self-signed CA. Each process then reads its role's `<role>.env`.
    NatsConfig {
        /// Where to write nats.conf, the .env files and tls/.
        #[arg(long)]
        dir: PathBuf,
        /// Also make a self-signed CA and a server certificate (EC P-256, made in-process).
        #[arg(long)]
        tls: bool,
        /// A cluster of N nodes (3 or 5) for docker-compose.yml's `cluster` profile: nats.conf,
        /// nats-2.conf, nats-3.conf… joined by routes, and cluster.env (streams and buckets
        /// replicated 3 times).
        #[arg(long, value_name = "N")]
        cluster: Option<usize>,
    },
    /// Compare two cycles' results (markdown, regressions flagged).
    Compare {
        /// The earlier cycle.
        a: String,
        /// The later cycle.
        b: String,
        /// Where the reports are.
        #[arg(long, default_value = "docs-out")]
        out: PathBuf,
        /// Change (%) that counts as a regression.
        #[arg(long, default_value_t = 5.0)]
        threshold: f64,
    },
    /// Print a shell completion script (e.g. `threadcycle completions bash >
    /// /etc/bash_completion.d/threadcycle`).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page, as roff (e.g. `threadcycle man > threadcycle.1`).
    Man,
}

/// Plan subcommands.
#[derive(Debug, Subcommand)]
pub enum PlanCmd {
    /// Validate a plan and print each model's predicted fit.
    Check {
        /// The plan file.
        plan: PathBuf,
        /// Describe the target machine instead of measuring this one (e.g. hosts/rtx5070ti-32gb.toml).
        #[arg(long)]
        host_profile: Option<PathBuf>,
    },
}

/// `HOST=PATH` pairs, each naming one of `hosts`, each host at most once.
fn parse_host_profiles(pairs: &[String], hosts: &[String]) -> Result<Vec<(String, PathBuf)>, String> {
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for p in pairs {
        let (h, path) = p.split_once('=').ok_or_else(|| format!("--host-profile `{p}`: expected HOST=PATH"))?;
        let h = h.trim();
        if !hosts.iter().any(|x| x == h) {
            return Err(format!("--host-profile `{p}`: `{h}` is not one of the hosts ({})", hosts.join(", ")));
        }
        if out.iter().any(|(x, _)| x == h) {
            return Err(format!("--host-profile: host `{h}` has two profiles"));
        }
        out.push((h.to_string(), PathBuf::from(path.trim())));
    }
    Ok(out)
}

/// The operator's `--set KEY=VALUE` changes, each checked by `protocol::settings`.
fn parse_set(pairs: &[String]) -> Result<Vec<Setting>, String> {
    pairs.iter().map(|p| Setting::parse_pair(p).map_err(|e| format!("--set `{p}`: {e}"))).collect()
}

/// Dispatches a parsed command; returns the exit code.
pub async fn run(cli: Cli) -> Result<u8> {
    match cli.cmd {
        Cmd::Agent { role, out, run_dir, host_profile } => {
            let [host] = cli.host.as_slice() else {
                eprintln!("error: an agent serves one host; --host was given {} times", cli.host.len());
                return Ok(exit::BAD_INPUT);
            };
            crate::agents::run(&cli.nats, host, role, out, run_dir, host_profile).await
        }
        Cmd::ExecWithParent { parent, command } => Ok(crate::supervise::exec_with_parent(parent, &command)),
        Cmd::Metrics { listen } => crate::exporter::run(&cli.nats, listen, cli.json).await,
        Cmd::Up { plan, resume, out, host_profiles, on_interrupt, metrics_listen } => {
            let metrics = match metrics_listen.as_str() {
                "off" => None,
                a => match a.parse::<std::net::SocketAddr>() {
                    Ok(a) => Some(a),
                    Err(e) => {
                        eprintln!("error: --metrics-listen `{a}`: {e} (an address like 127.0.0.1:9464, or off)");
                        return Ok(exit::BAD_INPUT);
                    }
                },
            };
            let profiles = match parse_host_profiles(&host_profiles, &cli.host) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("error: {e}");
                    return Ok(exit::BAD_INPUT);
                }
            };
            let opts = crate::up::UpOptions { on_interrupt, json: cli.json, metrics, log_json: cli.log_json };
            let target = match (&resume, &plan) {
                (Some(c), _) => crate::up::Target::Resume(c),
                (None, Some(p)) => crate::up::Target::Plan(p),
                (None, None) => {
                    eprintln!("error: name a plan file, or --resume <cycle>");
                    return Ok(exit::BAD_INPUT);
                }
            };
            crate::up::run(&cli.nats, &cli.host, &profiles, target, &out, opts).await
        }
        Cmd::Plan { cmd: PlanCmd::Check { plan, host_profile } } => {
            crate::display::plan_check(&plan, host_profile.as_deref(), cli.json).await
        }
        Cmd::NatsConfig { dir, tls, cluster } => match handoffs::security::generate(&dir, tls, cluster.unwrap_or(0)) {
            Ok(g) if cli.json => {
                let tls = g.tls.as_ref().map(|t| {
                    serde_json::json!({ "ca": t.ca_file, "cert": t.cert_file, "key": t.key_file, "verify": t.verify })
                });
                let env: serde_json::Map<String, serde_json::Value> =
                    g.env_files.iter().map(|(r, p)| (r.as_str().to_string(), serde_json::json!(p))).collect();
                println!(
                    "{}",
                    serde_json::json!({ "config": g.config, "node_configs": g.node_configs, "cluster_env": g.cluster_env, "env_files": env, "tls": tls })
                );
                Ok(0)
            }
            Ok(g) => {
                print!("{}", g.summary());
                Ok(0)
            }
            Err(
                e @ (handoffs::security::SecurityError::Exists(_) | handoffs::security::SecurityError::BadCluster(_)),
            ) => {
                eprintln!("error: {e}");
                Ok(exit::BAD_INPUT)
            }
            Err(e) => {
                eprintln!("error: {e}");
                Ok(exit::FAILED)
            }
        },
        Cmd::Completions { shell } => {
            print!("{}", crate::amenities::completions(shell));
            Ok(0)
        }
        Cmd::Man => {
            use std::io::Write;
            let page = crate::amenities::man_page()?;
            std::io::stdout().write_all(&page).context("writing the man page")?;
            Ok(0)
        }
        Cmd::Compare { a, b, out, threshold } => crate::display::compare(&out, &a, &b, threshold, cli.json),
        Cmd::Start { resume: Some(cycle), .. } => {
            let req = protocol::operator::OperatorRequest::Resume { cycle, hosts: Vec::new() };
            crate::client::one_shot(&cli.nats, req, cli.json).await
        }
        Cmd::Start { plan, .. } => {
            let Some(plan) = plan else {
                eprintln!("error: name a plan file, or --resume <cycle>");
                return Ok(exit::BAD_INPUT);
            };
            let (text, _) = match read_plan(&plan) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("error: {e}");
                    return Ok(exit::BAD_INPUT);
                }
            };
            let req = start_request(text, plan.display().to_string(), &cli.host);
            crate::client::one_shot(&cli.nats, req, cli.json).await
        }
        Cmd::Status { cycle, watch } => {
            let req = protocol::operator::OperatorRequest::Status { cycle };
            if watch {
                crate::client::watch(&cli.nats, req, cli.json).await
            } else {
                crate::client::one_shot(&cli.nats, req, cli.json).await
            }
        }
        Cmd::Events { cycle, follow } => crate::follow::run(&cli.nats, cycle, follow, cli.json).await,
        Cmd::Cancel { cycle, report, tuning } => {
            let req = protocol::operator::OperatorRequest::Cancel { cycle, report, tuning };
            crate::client::one_shot(&cli.nats, req, cli.json).await
        }
        Cmd::Reports { cycle } => {
            crate::client::one_shot(&cli.nats, protocol::operator::OperatorRequest::Reports { cycle }, cli.json).await
        }
        Cmd::Escalations { all, watch } => {
            let req = protocol::operator::OperatorRequest::Escalations { all };
            if watch {
                crate::client::watch(&cli.nats, req, cli.json).await
            } else {
                crate::client::one_shot(&cli.nats, req, cli.json).await
            }
        }
        Cmd::Resolve { id, option, set, skip, abort, continue_anyway, reverify, by } => {
            let action = if continue_anyway {
                Some(RemedyAction::Continue)
            } else if reverify {
                Some(RemedyAction::Reverify)
            } else if skip {
                Some(RemedyAction::Skip)
            } else if abort {
                Some(RemedyAction::Abort)
            } else if !set.is_empty() {
                match parse_set(&set) {
                    Ok(set) => Some(RemedyAction::Retry { set }),
                    Err(e) => {
                        eprintln!("error: {e}");
                        return Ok(exit::BAD_INPUT);
                    }
                }
            } else {
                None
            };
            if action.is_none() && option.is_none() {
                eprintln!(
                    "error: name an option number, or --set KEY=VALUE, --skip, --abort, --continue or --reverify"
                );
                return Ok(exit::BAD_INPUT);
            }
            let req = protocol::operator::OperatorRequest::Resolve { id, option, action, by };
            crate::client::one_shot(&cli.nats, req, cli.json).await.context("resolve")
        }
    }
}
