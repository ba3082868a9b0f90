//! `threadcycle`: one binary for the five agent processes and the operator's commands.

mod agents;
mod amenities;
mod cli;
mod client;
mod display;
mod exporter;
mod follow;
mod nats_args;
mod plan_file;
mod progress;
mod status;
mod supervise;
mod up;

use clap::Parser;
use std::process::ExitCode;

/// Exit codes that mean something to scripts.
pub mod exit {
    /// The command or cycle failed.
    pub const FAILED: u8 = 1;
    /// Bad input: a plan, an argument.
    pub const BAD_INPUT: u8 = 2;
    /// NATS or Main could not be reached.
    pub const UNREACHABLE: u8 = 3;
    /// The host is running another cycle (another operator's `up`, or a cycle Main holds it for).
    pub const BUSY: u8 = 4;
    /// Canceled by the operator (Ctrl-C).
    pub const CANCELED: u8 = 130;
}

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("THREADCYCLE_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(if matches!(args.cmd, cli::Cmd::Agent { .. }) { "info" } else { "warn" })
    });
    let format =
        match amenities::LogFormat::choose(args.log_json, std::env::var("THREADCYCLE_LOG_FORMAT").ok().as_deref()) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(exit::BAD_INPUT);
            }
        };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    match format {
        // One object per line: timestamp, level, fields (with message), the current span.
        amenities::LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).init(),
        // Colours only on a terminal: agent logs are files, and `up`'s output may be piped.
        amenities::LogFormat::Text => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    match rt.block_on(cli::run(args)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::FAILED)
        }
    }
}
