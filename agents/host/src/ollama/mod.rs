//! Ollama REST API client, held to the shapes in `reference/engine-api-facts.md` §1.
//!
//! - Streaming endpoints (`/api/pull`, `/api/chat`) answer NDJSON. An error after the stream
//!   started arrives as one more `{"error": "..."}` line inside an HTTP 200 answer; it becomes
//!   [`EngineError::InStream`] with the engine's exact text. An error before the stream is a
//!   non-2xx status with `{"error": "..."}`; it becomes [`EngineError::Http`].
//! - Durations are nanoseconds. The final chunk's counters are `omitempty`, so an absent
//!   counter means zero.
//! - Error texts are kept verbatim; classifying them is the Debug agent's job.

mod chat;
mod http;
mod types;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

pub use chat::request_options;
pub use types::{ModelDetails, PsModel, PullOutcome, PullProgress, ShowInfo, ShowTensor, TagModel};

use crate::engine::{self, EngineError};
use http::{
    MAX_ERROR_BODY, NdjsonLines, bad_line, check_status, decode_json, error_chain, error_text, quote, read_capped,
};
use types::{ModelsBody, PullLine, ShowBody, VersionBody};

/// Default limit for one metadata call (`/api/version`, `/api/tags`, `/api/ps`, `/api/show`).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Default longest silence tolerated in a pull stream (Ollama reports progress every ~60 ms).
pub const DEFAULT_PULL_STALL: Duration = Duration::from_secs(300);

/// The disk read rate assumed while Ollama verifies the blobs it downloaded: conservative (a
/// spinning disk, or SHA-256 on one slow core), so a healthy verification is never cut.
pub const DEFAULT_VERIFY_BPS: f64 = 100e6;
/// The status line after which Ollama hashes every downloaded blob without a word
/// (`o:server/images.go:668-687`, `verifyBlob` at `:894-911`), until `writing manifest` (`:689`).
const VERIFYING: &str = "verifying sha256 digest";

/// A client for one Ollama server.
#[derive(Debug, Clone)]
pub struct OllamaClient {
    base: String,
    http: reqwest::Client,
    call_timeout: Duration,
    pull_stall: Duration,
    verify_bps: f64,
}

impl OllamaClient {
    /// A client for the server at `base_url` (e.g. `http://127.0.0.1:11434`).
    pub fn new(base_url: &str) -> OllamaClient {
        OllamaClient::with_http(base_url, engine::http_client())
    }

    /// A client using a given `reqwest` client.
    pub fn with_http(base_url: &str, http: reqwest::Client) -> OllamaClient {
        OllamaClient {
            base: base_url.trim_end_matches('/').to_string(),
            http,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            pull_stall: DEFAULT_PULL_STALL,
            verify_bps: DEFAULT_VERIFY_BPS,
        }
    }

    /// Sets the longest silence tolerated in a pull stream (tests shorten it).
    #[cfg(test)]
    pub(crate) fn with_pull_stall(mut self, stall: Duration) -> OllamaClient {
        self.pull_stall = stall;
        self
    }

    /// Sets the disk read rate assumed while Ollama verifies digests (tests lower it).
    #[cfg(test)]
    pub(crate) fn with_verify_rate(mut self, bytes_per_second: f64) -> OllamaClient {
        self.verify_bps = bytes_per_second;
        self
    }

    /// The longest silence tolerated after a pull line with `status`: the stall limit, plus, once
    /// Ollama is verifying, the time to read `bytes` at the assumed disk rate.
    fn pull_wait(&self, status: &str, bytes: u64) -> Duration {
        if status == VERIFYING && self.verify_bps > 0.0 {
            self.pull_stall + Duration::from_secs_f64(bytes as f64 / self.verify_bps)
        } else {
            self.pull_stall
        }
    }

    /// The base URL (no trailing slash).
    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub(super) fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// `GET /`: Ok when the server answers `Ollama is running`.
    pub async fn probe(&self) -> Result<(), EngineError> {
        let resp = self.send(self.http.get(self.url("/")).timeout(self.call_timeout), self.call_timeout).await?;
        let resp = check_status(resp).await?;
        let text = read_capped(resp, MAX_ERROR_BODY).await?;
        if text.trim() == "Ollama is running" {
            Ok(())
        } else {
            Err(EngineError::Protocol(format!("GET / answered {:?}, not \"Ollama is running\"", quote(&text))))
        }
    }

    /// Whether the server answers `GET /` with `Ollama is running`.
    pub async fn healthy(&self) -> bool {
        self.probe().await.is_ok()
    }

    /// `GET /api/version`: the server's version, e.g. `0.5.1`.
    pub async fn version(&self) -> Result<String, EngineError> {
        let body: VersionBody = self.get_json("/api/version").await?;
        body.version.ok_or_else(|| EngineError::Protocol("/api/version answered without \"version\"".into()))
    }

    /// `GET /api/tags`: the installed models.
    pub async fn list(&self) -> Result<Vec<TagModel>, EngineError> {
        let body: ModelsBody<TagModel> = self.get_json("/api/tags").await?;
        Ok(body.models)
    }

    /// Whether `tag` is installed (`llama3` matches `llama3:latest`).
    pub async fn has_model(&self, tag: &str) -> Result<bool, EngineError> {
        let wanted = normalize_tag(tag);
        Ok(self.list().await?.iter().any(|m| {
            normalize_tag(&m.name).eq_ignore_ascii_case(&wanted)
                || normalize_tag(&m.model).eq_ignore_ascii_case(&wanted)
        }))
    }

    /// `POST /api/show`: details, GGUF metadata and capabilities of `tag`.
    pub async fn show(&self, tag: &str) -> Result<ShowInfo, EngineError> {
        let req = self.http.post(self.url("/api/show")).json(&json!({"model": tag})).timeout(self.call_timeout);
        let resp = check_status(self.send(req, self.call_timeout).await?).await?;
        let body: ShowBody = decode_json(resp, "/api/show").await?;
        let model_info = body.model_info.unwrap_or_default();
        let mut info = ShowInfo {
            parameter_size: body.details.parameter_size,
            quantization_level: body.details.quantization_level,
            family: body.details.family,
            format: body.details.format,
            context_length: body.details.context_length,
            model_info,
            capabilities: body.capabilities.unwrap_or_default(),
            parameters: body.parameters.filter(|p| !p.is_empty()),
            tensors: body.tensors.unwrap_or_default(),
        };
        if info.context_length.is_none() {
            info.context_length = info.arch_u64("context_length");
        }
        Ok(info)
    }

    /// `GET /api/ps`: the models loaded now.
    pub async fn ps(&self) -> Result<Vec<PsModel>, EngineError> {
        let body: ModelsBody<PsModel> = self.get_json("/api/ps").await?;
        Ok(body.models)
    }

    /// `POST /api/pull` streaming: calls `on_progress` for every status line until `success`.
    ///
    /// An `{"error": ...}` line (e.g. `pull model manifest: file does not exist`) gives
    /// [`EngineError::InStream`] with that text; silence longer than the stall limit gives
    /// [`EngineError::Timeout`].
    pub async fn pull(&self, tag: &str, mut on_progress: impl FnMut(PullProgress)) -> Result<PullOutcome, EngineError> {
        let start = Instant::now();
        let req = self.http.post(self.url("/api/pull")).json(&json!({"model": tag, "stream": true}));
        let resp = tokio::time::timeout(self.pull_stall, self.send(req, self.pull_stall))
            .await
            .map_err(|_| EngineError::Timeout(self.pull_stall))??;
        let resp = check_status(resp).await?;
        let mut lines = NdjsonLines::new(resp);
        let mut outcome = PullOutcome::default();
        let mut layer_totals: Vec<(String, u64)> = Vec::new();
        let mut wait = self.pull_stall;
        loop {
            let next =
                tokio::time::timeout(wait, lines.next_line()).await.map_err(|_| EngineError::Timeout(wait))??;
            let Some((line, _)) = next else {
                return Err(EngineError::Protocol(format!(
                    "the /api/pull stream for {tag} ended without \"success\" after {} lines",
                    outcome.lines
                )));
            };
            let parsed: PullLine = serde_json::from_str(&line).map_err(|e| bad_line("/api/pull", &line, &e))?;
            if let Some(err) = parsed.error {
                return Err(EngineError::InStream { message: error_text(&err) });
            }
            let Some(status) = parsed.status else {
                return Err(EngineError::Protocol(format!(
                    "/api/pull sent a line with neither status nor error: {}",
                    quote(&line)
                )));
            };
            outcome.lines += 1;
            if let Some(digest) = &parsed.digest {
                if !outcome.digests.contains(digest) {
                    outcome.digests.push(digest.clone());
                }
                if let Some(total) = parsed.total {
                    match layer_totals.iter_mut().find(|(d, _)| d == digest) {
                        Some(entry) => entry.1 = entry.1.max(total),
                        None => layer_totals.push((digest.clone(), total)),
                    }
                }
            }
            let done = status == "success";
            // Every layer's size counts: a cached layer is skipped by the verification, so the
            // limit errs long, never short.
            wait = self.pull_wait(&status, layer_totals.iter().map(|(_, t)| *t).fold(0, u64::saturating_add));
            on_progress(PullProgress {
                status,
                digest: parsed.digest,
                total: parsed.total,
                completed: parsed.completed,
            });
            if done {
                outcome.total_bytes = layer_totals.iter().map(|(_, t)| *t).fold(0, u64::saturating_add);
                outcome.elapsed = start.elapsed();
                return Ok(outcome);
            }
        }
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, EngineError> {
        let req = self.http.get(self.url(path)).timeout(self.call_timeout);
        let resp = check_status(self.send(req, self.call_timeout).await?).await?;
        decode_json(resp, path).await
    }

    pub(super) async fn send(
        &self,
        req: reqwest::RequestBuilder,
        limit: Duration,
    ) -> Result<reqwest::Response, EngineError> {
        req.send().await.map_err(|e| {
            if e.is_timeout() {
                EngineError::Timeout(limit)
            } else {
                EngineError::Unreachable { url: self.base.clone(), reason: error_chain(&e) }
            }
        })
    }
}

/// `name` → `name:latest` when it has no tag.
fn normalize_tag(tag: &str) -> String {
    let last = tag.rsplit('/').next().unwrap_or(tag);
    if last.contains(':') { tag.to_string() } else { format!("{tag}:latest") }
}
