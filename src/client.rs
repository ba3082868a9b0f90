//! Operator commands: request/reply with Main.

use crate::display;
use crate::exit;
use crate::nats_args::NatsArgs;
use anyhow::Result;
use protocol::operator::{OperatorReply, OperatorRequest};
use protocol::subjects::OPERATOR_SUBJECT;
use std::time::Duration;

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// NATS could not be reached.
    #[error("{0}")]
    Unreachable(String),
    /// Nobody answered.
    #[error(
        "Main is not answering on {OPERATOR_SUBJECT}: is `threadcycle agent main` (or `threadcycle up`) running? ({0})"
    )]
    NoMain(String),
    /// The answer was not understood.
    #[error("Main's answer was not understood: {0}")]
    Garbled(String),
}

/// Sends one request to Main and waits for its answer.
pub async fn request(
    client: &async_nats::Client,
    req: &OperatorRequest,
    timeout: Duration,
) -> Result<OperatorReply, RequestError> {
    let bytes = serde_json::to_vec(req).map_err(|e| RequestError::Garbled(e.to_string()))?;
    let r = async_nats::Request::new().payload(bytes.into()).timeout(Some(timeout));
    let msg = client.send_request(OPERATOR_SUBJECT, r).await.map_err(|e| RequestError::NoMain(e.to_string()))?;
    serde_json::from_slice(&msg.payload).map_err(|e| RequestError::Garbled(e.to_string()))
}

/// Connects for a short CLI call (no retries: an unreachable server is reported at once).
pub async fn connect_cli(nats: &NatsArgs) -> Result<async_nats::Client, RequestError> {
    handoffs::connect(&nats.config(&nats.url_or_default(), "threadcycle-cli", false))
        .await
        .map_err(|e| RequestError::Unreachable(e.to_string()))
}

/// Sends one request, prints the answer, and returns the exit code.
pub async fn one_shot(nats: &NatsArgs, req: OperatorRequest, json: bool) -> Result<u8> {
    let client = match connect_cli(nats).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(exit::UNREACHABLE);
        }
    };
    match request(&client, &req, Duration::from_secs(15)).await {
        Ok(reply) => {
            display::print_reply(&reply, json);
            let req = &req;
            Ok(match reply {
                OperatorReply::Error { code, .. }
                    if ["bad_plan", "bad_decision", "unknown_option", "already_complete", "not_resumable"]
                        .contains(&code.as_str())
                        || (code == "not_found" && matches!(req, OperatorRequest::Resume { .. })) =>
                {
                    exit::BAD_INPUT
                }
                OperatorReply::Error { code, .. } if code == "host_busy" => exit::BUSY,
                OperatorReply::Error { .. } => exit::FAILED,
                _ => 0,
            })
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(exit::UNREACHABLE)
        }
    }
}

/// Repeats a request every two seconds until Ctrl-C.
pub async fn watch(nats: &NatsArgs, req: OperatorRequest, json: bool) -> Result<u8> {
    let client = match connect_cli(nats).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(exit::UNREACHABLE);
        }
    };
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    loop {
        match request(&client, &req, Duration::from_secs(10)).await {
            Ok(reply) => {
                if tty && !json {
                    print!("\x1b[2J\x1b[H");
                }
                display::print_reply(&reply, json);
            }
            Err(e) => eprintln!("error: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(0),
        }
    }
}
