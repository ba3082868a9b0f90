//! HTTP plumbing shared by every Ollama call: status checks that keep the engine's error
//! text, capped reads, JSON decoding with the bad text quoted, and NDJSON line streams.

use std::collections::VecDeque;
use std::pin::Pin;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde_json::Value;
use tokio::time::Instant;

use crate::engine::{EngineError, LineSplitter};

/// Most bytes of an error body read back.
pub(super) const MAX_ERROR_BODY: usize = 64 << 10;
/// Most characters of a bad line quoted in a [`EngineError::Protocol`] message.
const MAX_QUOTED_LINE: usize = 200;

/// The text of an `error` value: a string as is, anything else as JSON.
pub(super) fn error_text(err: &Value) -> String {
    match err {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub(super) fn quote(line: &str) -> String {
    if line.chars().count() <= MAX_QUOTED_LINE {
        line.to_string()
    } else {
        let cut: String = line.chars().take(MAX_QUOTED_LINE).collect();
        format!("{cut}… ({} bytes)", line.len())
    }
}

pub(super) fn bad_line(endpoint: &str, line: &str, err: &serde_json::Error) -> EngineError {
    EngineError::Protocol(format!("unparseable line from {endpoint} ({err}): {}", quote(line)))
}

pub(super) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let piece = s.to_string();
        if !text.contains(&piece) {
            text.push_str(": ");
            text.push_str(&piece);
        }
        source = s.source();
    }
    text
}

/// Passes a 2xx answer through; turns any other into [`EngineError::Http`] with the
/// `error` field's text (or the body text when it is not `{"error": ...}`).
pub(super) async fn check_status(resp: reqwest::Response) -> Result<reqwest::Response, EngineError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = read_capped(resp, MAX_ERROR_BODY).await.unwrap_or_default();
    let message = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v.get("error").map(error_text))
        .unwrap_or_else(|| body.trim().to_string());
    Err(EngineError::Http { status: status.as_u16(), message })
}

pub(super) async fn read_capped(resp: reqwest::Response, cap: usize) -> Result<String, EngineError> {
    let mut stream = resp.bytes_stream();
    let mut buf = Vec::new();
    while let Some(piece) = stream.next().await {
        let piece =
            piece.map_err(|e| EngineError::Protocol(format!("reading the answer failed: {}", error_chain(&e))))?;
        buf.extend_from_slice(&piece);
        if buf.len() >= cap {
            buf.truncate(cap);
            break;
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

pub(super) async fn decode_json<T: serde::de::DeserializeOwned>(
    resp: reqwest::Response,
    endpoint: &str,
) -> Result<T, EngineError> {
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| EngineError::Protocol(format!("reading the {endpoint} answer failed: {}", error_chain(&e))))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        EngineError::Protocol(format!(
            "unparseable {endpoint} answer ({e}): {}",
            quote(&String::from_utf8_lossy(&bytes))
        ))
    })
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// Non-empty NDJSON lines of a response, each with the arrival time of its chunk.
pub(super) struct NdjsonLines {
    body: ByteStream,
    splitter: LineSplitter,
    pending: VecDeque<(String, Instant)>,
    ended: bool,
}

impl NdjsonLines {
    pub(super) fn new(resp: reqwest::Response) -> NdjsonLines {
        NdjsonLines {
            body: Box::pin(resp.bytes_stream()),
            splitter: LineSplitter::default(),
            pending: VecDeque::new(),
            ended: false,
        }
    }

    pub(super) async fn next_line(&mut self) -> Result<Option<(String, Instant)>, EngineError> {
        loop {
            if let Some(line) = self.pending.pop_front() {
                return Ok(Some(line));
            }
            if self.ended {
                return Ok(None);
            }
            match self.body.next().await {
                Some(Ok(bytes)) => {
                    let at = Instant::now();
                    for line in self.splitter.push(&bytes)? {
                        if !line.trim().is_empty() {
                            self.pending.push_back((line, at));
                        }
                    }
                }
                Some(Err(e)) => {
                    return Err(EngineError::Protocol(format!("the response stream broke off: {}", error_chain(&e))));
                }
                None => {
                    self.ended = true;
                    if let Some(rest) = self.splitter.finish().filter(|l| !l.trim().is_empty()) {
                        self.pending.push_back((rest, Instant::now()));
                    }
                }
            }
        }
    }
}
