//! What every inference engine client offers the Writer: one streamed generation, timed.

use std::collections::BTreeMap;
use std::time::Duration;

pub use protocol::results::MAX_ANSWER_BYTES;

/// One generation request.
#[derive(Debug, Clone, PartialEq)]
pub struct GenRequest {
    /// Model name as the engine knows it (Ollama tag; ignored by llama-server).
    pub model: String,
    /// Optional system message.
    pub system: Option<String>,
    /// The user prompt.
    pub prompt: String,
    /// Output token cap.
    pub max_tokens: u32,
    /// Temperature.
    pub temperature: f64,
    /// Seed.
    pub seed: u64,
    /// Context window (Ollama `num_ctx`), when set.
    pub context: Option<u32>,
    /// Extra engine options (Ollama `options`, e.g. `num_gpu`).
    pub options: BTreeMap<String, serde_json::Value>,
    /// Limit for the whole request.
    pub timeout: Duration,
    /// Longest wait for the next streamed chunk once the answer has started (the wait for the
    /// first one, which may include loading the model, is bounded by `timeout` only); `None`:
    /// only `timeout` applies.
    pub stall: Option<Duration>,
}

/// A finished streamed generation with client- and engine-side timings.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Generation {
    /// The answer (untrusted text), at most [`MAX_ANSWER_BYTES`].
    pub text: String,
    /// Whether the answer was cut at [`MAX_ANSWER_BYTES`].
    pub truncated: bool,
    /// Request sent → first content chunk.
    pub ttft: Duration,
    /// Request sent → stream end.
    pub e2e: Duration,
    /// Arrival time of each content chunk, from the request's start.
    pub chunk_times: Vec<Duration>,
    /// Output tokens as the engine counts them.
    pub output_tokens: Option<u32>,
    /// Prompt tokens as the engine counts them.
    pub prompt_tokens: Option<u32>,
    /// Decode tokens/s the engine reports.
    pub engine_decode_tps: Option<f64>,
    /// Prefill tokens/s the engine reports.
    pub engine_prefill_tps: Option<f64>,
    /// Prefill time the engine reports, ms.
    pub engine_prompt_ms: Option<f64>,
    /// Model load time the engine reports, ms.
    pub engine_load_ms: Option<f64>,
    /// Why generation stopped.
    pub finish_reason: Option<String>,
}

/// An engine request failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum EngineError {
    /// Nothing answered.
    #[error("engine at {url} is unreachable: {reason}")]
    Unreachable {
        /// Base URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The engine answered with an error status.
    #[error("engine answered HTTP {status}: {message}")]
    Http {
        /// HTTP status.
        status: u16,
        /// The engine's error text.
        message: String,
    },
    /// The engine reported an error inside a streaming response.
    #[error("engine reported an error mid-stream: {message}")]
    InStream {
        /// The engine's error text.
        message: String,
    },
    /// The request took longer than allowed.
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    /// The answer had started streaming, then nothing came for too long.
    #[error("the engine's answer stalled: nothing for {after:?} after {chunks} streamed chunk(s)")]
    Stalled {
        /// The silence allowed.
        after: Duration,
        /// Content chunks received before it stalled.
        chunks: usize,
    },
    /// The response did not have the expected shape.
    #[error("unexpected response from the engine: {0}")]
    Protocol(String),
}

impl EngineError {
    /// The engine's own error text, if it gave one.
    pub fn engine_text(&self) -> Option<&str> {
        match self {
            EngineError::Http { message, .. } | EngineError::InStream { message } => Some(message),
            _ => None,
        }
    }
}

/// Splits a byte stream into lines across chunk boundaries (NDJSON and SSE both need it).
#[derive(Debug, Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
}

impl LineSplitter {
    /// Longest line accepted; a longer one is an error (a hostile or broken stream).
    pub const MAX_LINE: usize = 8 << 20;

    /// Feeds a chunk; returns the complete lines it finished (without `\n` or `\r\n`).
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<String>, EngineError> {
        self.buf.extend_from_slice(chunk);
        let mut lines = Vec::new();
        while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
            let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            lines.push(String::from_utf8_lossy(&line).into_owned());
        }
        if self.buf.len() > Self::MAX_LINE {
            return Err(EngineError::Protocol(format!("a streamed line exceeded {} bytes", Self::MAX_LINE)));
        }
        Ok(lines)
    }

    /// The unterminated rest at stream end, if any.
    pub fn finish(&mut self) -> Option<String> {
        if self.buf.is_empty() {
            None
        } else {
            let rest = String::from_utf8_lossy(&self.buf).trim_end_matches('\r').to_string();
            self.buf.clear();
            Some(rest)
        }
    }
}

/// Appends `piece` to `text` up to [`MAX_ANSWER_BYTES`] (on a char boundary); true if cut.
pub fn append_capped(text: &mut String, piece: &str) -> bool {
    let room = MAX_ANSWER_BYTES.saturating_sub(text.len());
    if piece.len() <= room {
        text.push_str(piece);
        return false;
    }
    let mut end = room;
    while end > 0 && !piece.is_char_boundary(end) {
        end -= 1;
    }
    text.push_str(&piece[..end]);
    true
}

/// A shared HTTP client for engines: connect timeout, no total timeout (streams are long).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .no_proxy()
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_across_chunks() {
        let mut s = LineSplitter::default();
        assert!(s.push(b"{\"a\":").unwrap().is_empty());
        assert_eq!(s.push(b"1}\r\n{\"b\"").unwrap(), vec!["{\"a\":1}"]);
        assert_eq!(s.push(b":2}\n\n").unwrap(), vec!["{\"b\":2}", ""]);
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn answers_are_capped_on_char_boundaries() {
        let mut t = "x".repeat(MAX_ANSWER_BYTES - 1);
        assert!(append_capped(&mut t, "éé"));
        assert_eq!(t.len(), MAX_ANSWER_BYTES - 1);
        assert!(t.is_char_boundary(t.len()));
    }
}
